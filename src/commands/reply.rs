//! Direct replies for the hot read paths: the value is written from the entry's own buffer,
//! without building a `RedisValue` (which would copy it).

use std::os::raw::c_char;

use redis_module::{raw, Context};

use crate::core::xfetch::Status;

pub fn bulk(ctx: &Context, v: &[u8]) {
    // SAFETY: the buffer is live for the call; Redis copies it into the reply.
    unsafe {
        raw::RedisModule_ReplyWithStringBuffer.unwrap()(
            ctx.ctx,
            v.as_ptr().cast::<c_char>(),
            v.len(),
        )
    };
}

pub fn null(ctx: &Context) {
    unsafe { raw::RedisModule_ReplyWithNull.unwrap()(ctx.ctx) };
}

pub fn bulk_or_null(ctx: &Context, v: Option<&[u8]>) {
    match v {
        Some(v) => bulk(ctx, v),
        None => null(ctx),
    }
}

/// The 3-element reply of GETX and LOCKGET: `[value or nil, status, token or nil]`.
pub fn triple(ctx: &Context, value: Option<&[u8]>, status: Status, token: Option<u64>) {
    unsafe {
        raw::RedisModule_ReplyWithArray.unwrap()(ctx.ctx, 3);
    }
    bulk_or_null(ctx, value);
    // The status word goes out as a bulk string: the module API's simple-string reply copies
    // and sanitizes its argument on every call, 60% dearer; clients read both as a string.
    bulk(ctx, status.word().as_bytes());
    match token {
        Some(t) => unsafe {
            raw::RedisModule_ReplyWithLongLong.unwrap()(ctx.ctx, t as i64);
        },
        None => null(ctx),
    }
}

//! Direct replies for the hot read paths: the value is written from the entry's own buffer,
//! without building a `RedisValue` (which would copy it). Used by the commands and by the
//! callbacks that answer parked callers (`wrapper::blocked`).

pub mod read;

use std::cell::Cell;
use std::os::raw::c_char;
use std::sync::OnceLock;

use redis_module::{raw, Context};

use crate::core::xfetch::Status;

/// Every status, in declaration order: `STATUSES[status as usize] == status`.
const STATUSES: [Status; 6] = [
    Status::Hit,
    Status::Refresh,
    Status::Stale,
    Status::Miss,
    Status::Locked,
    Status::Timeout,
];

/// The status words as ready-made replies: `RedisModule_ReplyWithCallReply` appends their
/// protocol in one step, where building a bulk string appends three pieces (length, bytes,
/// CRLF), each through the server's full reply path. On a GETX hit that is a tenth of the
/// command's cost. Made once at load with `ECHO`; held for the life of the module.
struct Prebuilt([*mut raw::RedisModuleCallReply; 6]);

// SAFETY: the replies are created once and then only read, on the main thread.
unsafe impl Send for Prebuilt {}
// SAFETY: as for Send: never written after creation, read on the main thread only.
unsafe impl Sync for Prebuilt {}

static PREBUILT: OnceLock<Prebuilt> = OnceLock::new();

thread_local! {
    /// Whether the running command has begun its direct reply (see `begun`).
    static BEGUN: Cell<bool> = const { Cell::new(false) };
}

/// Whether a direct reply was begun since the last call (which resets it). A command whose
/// handler panics after it began replying must not add an error reply to the stream: handlers
/// make every decision and write before they reply, so nothing is left half-done but the
/// reply, and the panic is in the log.
pub fn begun() -> bool {
    BEGUN.replace(false)
}

fn begin() {
    BEGUN.set(true);
}

/// Builds the status replies; without them (if `ECHO` cannot be called) statuses are sent as
/// bulk strings built each time, the same bytes on the wire.
pub fn prepare(ctx: &Context) {
    let mut replies = [std::ptr::null_mut(); 6];
    for (slot, status) in replies.iter_mut().zip(STATUSES) {
        let word = status.word();
        // SAFETY: a module context during load; "b" takes a buffer and its length.
        let reply = unsafe {
            raw::RedisModule_Call.unwrap()(
                ctx.ctx,
                c"ECHO".as_ptr(),
                c"b".as_ptr(),
                word.as_ptr().cast::<c_char>(),
                word.len(),
            )
        };
        let is_bulk = !reply.is_null()
            // SAFETY: a live call reply, just checked non-null.
            && unsafe { raw::RedisModule_CallReplyType.unwrap()(reply) }
                == raw::REDISMODULE_REPLY_STRING as i32;
        if !is_bulk {
            return;
        }
        *slot = reply;
    }
    let _ = PREBUILT.set(Prebuilt(replies));
}

#[cfg(test)]
#[test]
fn statuses_are_listed_in_declaration_order() {
    for (i, s) in STATUSES.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
}

fn status_word(ctx: &Context, status: Status) {
    let index = status as usize;
    match PREBUILT.get() {
        // SAFETY: a reply made by `prepare`, never freed.
        Some(p) => unsafe {
            raw::RedisModule_ReplyWithCallReply.unwrap()(ctx.ctx, p.0[index]);
        },
        None => bulk(ctx, status.word().as_bytes()),
    }
}

pub fn bulk(ctx: &Context, v: &[u8]) {
    begin();
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
    begin();
    // SAFETY: a live context of a command or a blocked client's reply callback.
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
    begin();
    // SAFETY: a live context; the three elements follow.
    unsafe {
        raw::RedisModule_ReplyWithArray.unwrap()(ctx.ctx, 3);
    }
    bulk_or_null(ctx, value);
    // The status word goes out as a bulk string: the module API's simple-string reply copies
    // and sanitizes its argument on every call; clients read both as a string.
    status_word(ctx, status);
    match token {
        // SAFETY: a live context.
        Some(t) => unsafe {
            raw::RedisModule_ReplyWithLongLong.unwrap()(ctx.ctx, t as i64);
        },
        None => null(ctx),
    }
}

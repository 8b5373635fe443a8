//! Replication of effects: what a command changed, as a deterministic record with absolute
//! times, sent to replicas and the AOF. Decisions (XFetch elections, lease grants, relative
//! TTLs) are never replayed.
//!
//! The record is `CACHE.APPLY key header [value]`, the same encoding as RDB (`core::codec`).
//! The key and value go out as the command's own argument strings (format `s`): no copy.

use std::os::raw::c_char;

use redis_module::{raw, Context};

use super::arg::Arg;
use crate::core::codec;
use crate::core::entry::Entry;

fn apply(ctx: &Context, key: &Arg, header: &[u8], value: Option<&Arg>) {
    let (h, hlen) = (header.as_ptr().cast::<c_char>(), header.len());
    // SAFETY: format letters match the arguments: s = RedisModuleString*, b = (char*, size_t).
    unsafe {
        let replicate = raw::RedisModule_Replicate.unwrap();
        match value {
            Some(v) => replicate(
                ctx.ctx,
                c"CACHE.APPLY".as_ptr(),
                c"sbs".as_ptr(),
                key.raw(),
                h,
                hlen,
                v.raw(),
            ),
            None => replicate(
                ctx.ctx,
                c"CACHE.APPLY".as_ptr(),
                c"sb".as_ptr(),
                key.raw(),
                h,
                hlen,
            ),
        };
    }
}

/// The entry as now stored at `key`; `value` is the argument its value was written from
/// (`None` for an entry without a value).
pub fn entry_written(ctx: &Context, key: &Arg, entry: &Entry, value: Option<&Arg>) {
    debug_assert_eq!(entry.value.is_some(), value.is_some());
    apply(ctx, key, &codec::encode_header(entry, false), value);
}

/// The entry's metadata changed (a lease granted) but not its value: the record says
/// "keep the value you have", so a lease grant never re-sends a large value.
pub fn metadata_changed(ctx: &Context, key: &Arg, entry: &Entry) {
    apply(ctx, key, &codec::encode_header(entry, true), None);
}

/// The entry got a fresh version where Redis put it (`COPY`, `RENAME`, `MOVE`, `RESTORE`):
/// the record keeps the value and the TTL Redis gave the key (it may differ from the entry's).
pub fn version_changed(ctx: &Context, key: &Arg, entry: &Entry) {
    apply(ctx, key, &codec::encode_metadata_keep_ttl(entry), None);
}

/// Keys deleted by a command, as a plain `DEL` of those keys.
pub fn deleted(ctx: &Context, keys: &[&Arg]) {
    let raw_keys: Vec<*mut raw::RedisModuleString> = keys.iter().map(|k| k.raw()).collect();
    // SAFETY: `v` takes an array of RedisModuleString* and its length.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx.ctx,
            c"DEL".as_ptr(),
            c"v".as_ptr(),
            raw_keys.as_ptr(),
            raw_keys.len(),
        );
    }
}

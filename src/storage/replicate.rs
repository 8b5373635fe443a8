//! Replication of effects: what a command changed, as a deterministic record with absolute
//! times, sent to replicas and the AOF. Decisions (XFetch elections, lease grants, relative
//! TTLs) are never replayed.
//!
//! The record is `CACHE.APPLY key header [value]`, the same encoding as RDB (`core::codec`).

use redis_module::{Context, RedisString};

use crate::core::codec;
use crate::core::entry::Entry;

pub const APPLY: &str = "CACHE.APPLY";

/// The entry as now stored at `key`, value included.
pub fn entry_written(ctx: &Context, key: &RedisString, entry: &Entry) {
    let header = codec::encode_header(entry, false);
    match &entry.value {
        Some(v) => ctx.replicate(APPLY, &[key.as_slice(), &header, v]),
        None => ctx.replicate(APPLY, &[key.as_slice(), &header]),
    }
}

/// The entry's metadata changed (a lease granted) but not its value: the record says
/// "keep the value you have", so a lease grant never re-sends a large value.
pub fn metadata_changed(ctx: &Context, key: &RedisString, entry: &Entry) {
    let header = codec::encode_header(entry, true);
    ctx.replicate(APPLY, &[key.as_slice(), &header]);
}

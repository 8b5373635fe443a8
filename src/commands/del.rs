//! `CACHE.DEL key [key ...]`: removes entries, revoking their leases. Reply: how many
//! existed. A key of another type is an error and nothing is deleted.

use redis_module::{Context, RedisResult, RedisString, RedisValue};

use super::{open_entry, open_entry_writable};
use crate::error::CacheError;
use crate::stats;
use crate::storage::ids;

pub fn run(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() < 2 {
        return Err(CacheError::Arity("cache.del").into());
    }
    let names = &args[1..];
    // Check every key first: a WRONGTYPE must leave all of them untouched.
    for name in names {
        open_entry(ctx, name)?;
    }
    let now = ids::now_ms();
    let mut deleted: Vec<&RedisString> = Vec::new();
    for name in names {
        let (key, exists) = open_entry_writable(ctx, name)?;
        if !exists {
            continue;
        }
        if key.entry().is_some_and(|e| e.active_lease(now).is_some()) {
            stats::LEASES_REVOKED.incr();
        }
        key.delete();
        deleted.push(name);
    }
    if !deleted.is_empty() {
        stats::DELETES.add(deleted.len() as u64);
        ctx.replicate("DEL", deleted.as_slice());
    }
    Ok(RedisValue::Integer(deleted.len() as i64))
}

//! `CACHE.DEL key [key ...]`: removes entries, revoking their leases. Reply: how many
//! existed. A key of another type is an error and nothing is deleted.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::{parse_some, ArgBytes};
use crate::error::CacheError;
use crate::stats;
use crate::storage::arg::Arg;
use crate::storage::key::{open_entry, open_entry_writable};
use crate::storage::{handover, ids, notify, replicate};

/// `CACHE.DEL`'s arguments (argv, the command name first): the keys, at least one.
pub fn parse<A: ArgBytes>(args: &[A]) -> Result<&[A], CacheError> {
    parse_some(args, "cache.del")
}

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let names = parse(args)?;
    // Check every key first: a WRONGTYPE must leave all of them untouched.
    for name in names {
        open_entry(ctx, name)?;
    }
    let mut deleted: Vec<&Arg> = Vec::new();
    for name in names {
        let mut key = open_entry_writable(ctx, name)?;
        if !key.holds_entry() {
            continue;
        }
        key.delete();
        drop(key);
        notify::del(ctx, name);
        deleted.push(name);
    }
    if !deleted.is_empty() {
        stats::DELETES.add(deleted.len() as u64);
        replicate::deleted(ctx, &deleted);
        // The leases went with the keys: callers parked on them get the next one.
        let now = ids::now_ms();
        for name in deleted.iter().filter(|n| handover::is_waited(ctx, n)) {
            if let Ok(mut key) = open_entry_writable(ctx, name) {
                handover::hand_over(ctx, &mut key, name, now);
            }
        }
    }
    Ok(RedisValue::Integer(deleted.len() as i64))
}

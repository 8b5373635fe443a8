//! `CACHE.GET key`: the value while the entry has one (fresh or in grace), else nil.
//! No early refresh, no lease.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::parse_one;
use crate::core::entry::Freshness;
use crate::reply;
use crate::stats;
use crate::storage::arg::Arg;
use crate::storage::ids::now_ms;
use crate::storage::key::open_entry;

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let name = parse_one(args, "cache.get")?;
    let key = open_entry(ctx, name)?;
    let entry = key.as_ref().map(|k| k.entry());
    let now = now_ms();
    let value = match entry {
        Some(e) => match e.freshness(now) {
            Freshness::Fresh => {
                stats::HITS.incr();
                e.value.as_deref()
            }
            Freshness::Stale => {
                stats::STALE_HITS.incr();
                e.value.as_deref()
            }
            Freshness::Absent => None,
        },
        None => None,
    };
    if value.is_none() {
        stats::MISSES.incr();
    }
    reply::bulk_or_null(ctx, value);
    Ok(RedisValue::NoReply)
}

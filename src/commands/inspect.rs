//! `CACHE.INSPECT key` (companion command): an entry's metadata as a flat field/value array,
//! like `HGETALL`, for debugging and tests. Nil when the key does not exist.
//!
//! Fields: `has-value` (0/1), `value-length`, `fresh-until-ms` (-1: never stale), `grace-ms`,
//! `delta-ms`, `version`, `lease-token`, `lease-granted-ms`, `lease-expires-ms` (nil without a
//! lease, including an expired one still recorded), `tags` (array).

use redis_module::{Context, RedisResult, RedisValue};

use super::args::parse_one;
use crate::core::entry::NEVER;
use crate::storage::arg::Arg;
use crate::storage::ids;
use crate::storage::key::open_entry;

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let name = parse_one(args, "cache.inspect")?;
    let key = open_entry(ctx, name)?;
    let Some(e) = key.as_ref().map(|k| k.entry()) else {
        return Ok(RedisValue::Null);
    };
    let now = ids::now_ms();
    let int = |n: i64| RedisValue::Integer(n);
    let lease = e.active_lease(now);
    let opt = |v: Option<i64>| v.map_or(RedisValue::Null, RedisValue::Integer);
    let fields = vec![
        ("has-value", int(e.value.is_some() as i64)),
        (
            "value-length",
            int(e.value.as_ref().map_or(0, |v| v.len()) as i64),
        ),
        (
            "fresh-until-ms",
            int(if e.fresh_until_ms == NEVER {
                -1
            } else {
                e.fresh_until_ms
            }),
        ),
        ("grace-ms", int(e.grace_ms())),
        ("delta-ms", int(e.delta_ms())),
        ("version", int(e.version as i64)),
        ("lease-token", opt(lease.map(|l| l.token as i64))),
        ("lease-granted-ms", opt(lease.map(|l| l.granted_ms))),
        ("lease-expires-ms", opt(lease.map(|l| l.expires_ms))),
        (
            "tags",
            RedisValue::Array(
                e.tags()
                    .map(|t| RedisValue::StringBuffer(t.to_vec()))
                    .collect(),
            ),
        ),
    ];
    Ok(RedisValue::Array(
        fields
            .into_iter()
            .flat_map(|(k, v)| [RedisValue::SimpleStringStatic(k), v])
            .collect(),
    ))
}

//! `CACHE.RELEASE key token`: gives a lease up without filling it. Reply 1 when it was the
//! current lease, else 0 (and nothing changes). A caller parked in `LOCKGET ... WAIT` on the
//! key is handed the lease.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::{parse_token, Arg};
use super::open_entry_writable;
use crate::error::CacheError;
use crate::storage::{handover, ids};

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, name, token] = args else {
        return Err(CacheError::Arity("cache.release").into());
    };
    let token = parse_token(token.as_slice())?;
    let now = ids::now_ms();
    let (key, exists) = open_entry_writable(ctx, name)?;
    let released = exists && handover::release_and_hand_over(ctx, &key, name, token, now);
    Ok(RedisValue::Integer(released as i64))
}

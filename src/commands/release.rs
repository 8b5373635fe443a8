//! `CACHE.RELEASE key token`: gives a lease up without filling it. Reply 1 when it was the
//! current lease, else 0 (and nothing changes). A caller parked in `LOCKGET ... WAIT` on the
//! key is handed the lease.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::{parse_token, Arg};
use super::open_entry_writable;
use crate::core::entry;
use crate::error::CacheError;
use crate::stats;
use crate::storage::{ids, notify, replicate, waiters};

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, name, token] = args else {
        return Err(CacheError::Arity("cache.release").into());
    };
    let token = parse_token(token.as_slice())?;
    let now = ids::now_ms();
    let (key, exists) = open_entry_writable(ctx, name)?;
    let Some(e) = (if exists { key.entry() } else { None }) else {
        return Ok(RedisValue::Integer(0));
    };
    if !entry::release(e, token, now) {
        return Ok(RedisValue::Integer(0));
    }
    stats::LEASES_RELEASED.incr();
    notify::release(ctx, name);
    if e.value.is_some() {
        key.set_expiry(e.key_expires_at());
        replicate::metadata_changed(ctx, name, e);
    } else {
        // A pending entry without its lease holds nothing: the key goes.
        key.delete();
        replicate::deleted(ctx, &[name]);
    }
    let exists = !key.is_empty();
    waiters::hand_over(ctx, &key, exists, name, now);
    Ok(RedisValue::Integer(1))
}

//! `CACHE.RELEASE key token`: gives a lease up without filling it. Reply 1 when it was the
//! current lease, else 0 (and nothing changes). A caller parked in `LOCKGET ... WAIT` on the
//! key is handed the lease.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::{parse_token, ArgBytes};
use crate::error::CacheError;
use crate::storage::arg::Arg;
use crate::storage::key::open_entry_writable;
use crate::storage::{handover, ids};

/// A parsed `CACHE.RELEASE`.
#[derive(Debug, PartialEq)]
pub struct ReleaseRequest<'a, A> {
    pub name: &'a A,
    pub token: u64,
}

/// `CACHE.RELEASE`'s arguments (argv, the command name first).
pub fn parse<A: ArgBytes>(args: &[A]) -> Result<ReleaseRequest<'_, A>, CacheError> {
    let [_, name, token] = args else {
        return Err(CacheError::Arity("cache.release"));
    };
    let token = parse_token(token.bytes())?;
    Ok(ReleaseRequest { name, token })
}

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let ReleaseRequest { name, token } = parse(args)?;
    let now = ids::now_ms();
    let mut key = open_entry_writable(ctx, name)?;
    let released =
        key.holds_entry() && handover::release_and_hand_over(ctx, &mut key, name, token, now);
    Ok(RedisValue::Integer(released as i64))
}

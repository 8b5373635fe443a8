//! `CACHE.LOCKGET key [PX ms] [WAIT ms]`
//!
//! Mutex-style read-through. A fresh value: `HIT`. A stale value: `STALE`, with the lease
//! token when no lease was out (it never waits while a stale value can be served). No value:
//! `MISS` with the fill lease (for `PX` ms) when nobody holds it; otherwise `LOCKED` at once,
//! or with `WAIT`, parked in the server until a fill (`HIT`), a lease handed over (`MISS`),
//! or the wait running out (`TIMEOUT`). Inside MULTI/EXEC or a script `WAIT` does not block.

use redis_module::{Context, ContextFlags, RedisResult, RedisValue};

use super::args::{parse_positive_ms, ArgBytes, OptionName, Options};
use super::read;
use crate::config;
use crate::core::entry::Entry;
use crate::core::lock;
use crate::core::xfetch::Status;
use crate::error::CacheError;
use crate::reply;
use crate::storage::arg::Arg;
use crate::storage::key::{open_entry, open_entry_writable};
use crate::storage::{handover, ids};
use crate::wrapper::blocked;

#[derive(Clone, Copy)]
enum LockgetOption {
    Px,
    Wait,
}

impl OptionName for LockgetOption {
    const ALL: &'static [Self] = &[Self::Px, Self::Wait];
    fn word(self) -> &'static str {
        match self {
            Self::Px => "PX",
            Self::Wait => "WAIT",
        }
    }
}

/// A parsed `CACHE.LOCKGET`: the key, and the options resolved at `now` (the config's lease
/// time when `PX` is not given).
#[derive(Debug, PartialEq)]
pub struct LockgetRequest<'a, A> {
    pub name: &'a A,
    pub lease_ms: i64,
    pub lease_until: i64,
    pub wait_ms: Option<i64>,
}

/// `CACHE.LOCKGET`'s arguments (argv, the command name first) at `now`.
pub fn parse<A: ArgBytes>(args: &[A], now: i64) -> Result<LockgetRequest<'_, A>, CacheError> {
    let [_, name, opts @ ..] = args else {
        return Err(CacheError::Arity("cache.lockget"));
    };
    let mut lease_ms = None;
    let mut wait_ms = None;
    let mut it = Options::new(opts);
    while let Some((opt, v)) = it.next_option::<LockgetOption>()? {
        match opt {
            LockgetOption::Px => lease_ms = Some(parse_positive_ms(v, "PX")?),
            LockgetOption::Wait => wait_ms = Some(parse_positive_ms(v, "WAIT")?),
        }
    }
    let lease_ms = lease_ms.unwrap_or_else(config::lease_ms);
    let lease_until = now
        .checked_add(lease_ms)
        .ok_or(CacheError::InvalidTime("PX"))?;
    if let Some(w) = wait_ms {
        now.checked_add(w).ok_or(CacheError::InvalidTime("WAIT"))?;
    }
    Ok(LockgetRequest {
        name,
        lease_ms,
        lease_until,
        wait_ms,
    })
}

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let now = ids::now_ms();
    let LockgetRequest {
        name,
        lease_ms,
        lease_until,
        wait_ms,
    } = parse(args, now)?;
    // Inside MULTI/EXEC or a script nothing may block: WAIT answers as without it.
    let wait_ms = wait_ms.filter(|_| !ctx.get_flags().contains(ContextFlags::DENY_BLOCKING));

    let decision = {
        let key = open_entry(ctx, name)?;
        let entry = key.as_ref().map(|k| k.entry());
        let decision = lock::decide(entry, now);
        if !decision.grant {
            if decision.status == Status::Locked {
                if let Some(wait) = wait_ms {
                    let ends = lease_end(entry, now);
                    drop(key);
                    blocked::park(ctx, name, lease_ms, wait, ends);
                    return Ok(RedisValue::NoReply);
                }
            }
            reply::read::answer(ctx, entry, decision.status, now);
            return Ok(RedisValue::NoReply);
        }
        decision
    };

    let mut key = open_entry_writable(ctx, name)?;
    // Callers already parked on the key come first: the longest-waiting one gets the lease.
    if decision.status == Status::Miss && handover::hand_over(ctx, &mut key, name, now) {
        let ends = lease_end(key.entry().as_deref(), now);
        drop(key);
        match wait_ms {
            Some(wait) => blocked::park(ctx, name, lease_ms, wait, ends),
            None => reply::read::answer(ctx, None, Status::Locked, now),
        }
        return Ok(RedisValue::NoReply);
    }
    read::grant_and_answer(ctx, &mut key, name, decision.status, now, lease_until)?;
    Ok(RedisValue::NoReply)
}

/// When the key's current lease ends: when callers parked behind it must next be looked at.
fn lease_end(entry: Option<&Entry>, now: i64) -> i64 {
    entry
        .and_then(|e| e.active_lease(now))
        .map_or(now, |l| l.expires_ms)
}

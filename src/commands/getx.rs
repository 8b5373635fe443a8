//! `CACHE.GETX key [BETA beta] [LEASE ms]`
//!
//! Read with XFetch early expiration decided in the server, at most one recompute in flight
//! per key. Reply `[value or nil, status, token or nil]`. Never blocks. A read that grants no
//! lease changes nothing and replicates nothing; a lease grant replicates the lease.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redis_module::{Context, RedisResult, RedisValue};

use super::args::{parse_beta, parse_positive_ms, Arg, Options};
use super::{open_entry, open_entry_writable, reply};
use crate::config;
use crate::core::entry::{Entry, Lease};
use crate::core::xfetch::{decide, Decision, Status};
use crate::error::CacheError;
use crate::stats;
use crate::storage::{ids, replicate};

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, name, opts @ ..] = args else {
        return Err(CacheError::Arity("cache.getx").into());
    };
    let mut beta = None;
    let mut lease_ms = None;
    let mut it = Options::new(opts);
    while let Some((opt, v)) = it.next(&["BETA", "LEASE"])? {
        match opt {
            "BETA" => beta = Some(parse_beta(v)?),
            _ => lease_ms = Some(parse_positive_ms(v, "LEASE")?),
        }
    }
    let now = ids::now_ms();
    let lease_ms = lease_ms.unwrap_or_else(config::lease_ms);
    let lease_until = now
        .checked_add(lease_ms)
        .ok_or(CacheError::InvalidTime("LEASE"))?;
    let beta = beta.unwrap_or_else(config::beta);

    // Decide on a read-only handle: a hit touches nothing (no WATCH invalidation, no
    // replication).
    let decision = {
        let key = open_entry(ctx, name)?;
        let entry = key.as_ref().and_then(|k| k.entry());
        let decision = decide(entry.as_deref(), now, beta, uniform_open0_closed1);
        if !decision.grant {
            count(decision);
            reply::triple(
                ctx,
                entry.and_then(|e| e.usable_value(now)),
                decision.status,
                None,
            );
            return Ok(RedisValue::NoReply);
        }
        decision
    };

    let (key, exists) = open_entry_writable(ctx, name)?;
    let token = ids::next_id(now);
    let lease = Lease {
        token,
        granted_ms: now,
        expires_ms: lease_until,
    };
    count(decision);
    stats::LEASES_GRANTED.incr();
    match if exists { key.entry() } else { None } {
        Some(e) => {
            if e.lease.as_ref().is_some_and(|l| !l.is_active(now)) {
                stats::LEASES_EXPIRED.incr();
            }
            e.lease = Some(lease);
            key.set_expiry(e.key_expires_at());
            replicate::metadata_changed(ctx, name, e);
            reply::triple(ctx, e.usable_value(now), decision.status, Some(token));
        }
        None => {
            let e = Entry::pending(lease);
            replicate::entry_written(ctx, name, &e, None);
            key.store(e, false, true);
            reply::triple(ctx, None, decision.status, Some(token));
        }
    }
    Ok(RedisValue::NoReply)
}

fn count(d: Decision) {
    match d.status {
        Status::Hit => stats::HITS.incr(),
        Status::Refresh => {
            stats::HITS.incr();
            stats::EARLY_REFRESHES.incr();
        }
        Status::Stale => stats::STALE_HITS.incr(),
        Status::Miss => stats::MISSES.incr(),
        Status::Locked => stats::LOCKED.incr(),
        Status::Timeout => stats::LOCKGET_TIMEOUTS.incr(),
    }
}

thread_local! {
    /// A fast generator for the XFetch draw, seeded once from the OS-seeded thread RNG.
    static RNG: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// U uniform in (0, 1], as XFetch needs (ln U must be finite).
fn uniform_open0_closed1() -> f64 {
    1.0 - RNG.with(|r| r.borrow_mut().random::<f64>())
}

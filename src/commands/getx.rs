//! `CACHE.GETX key [BETA beta] [LEASE ms]`
//!
//! Read with early refresh decided in the server (`cache.refresh`: a window before expiry, or
//! XFetch), at most one recompute in flight per key. Reply
//! `[value or nil, status, token or nil]`. Never blocks. A read that grants no lease changes
//! nothing and replicates nothing; a lease grant replicates the lease.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redis_module::{Context, RedisResult, RedisValue};

use super::args::{parse_beta, parse_positive_ms, ArgBytes, OptionName, Options};
use super::read;
use crate::config;
use crate::core::xfetch::{decide, Status};
use crate::error::CacheError;
use crate::reply;
use crate::storage::arg::Arg;
use crate::storage::key::{open_entry, open_entry_writable};
use crate::storage::{handover, ids};

#[derive(Clone, Copy)]
enum GetxOption {
    Beta,
    Lease,
}

impl OptionName for GetxOption {
    const ALL: &'static [Self] = &[Self::Beta, Self::Lease];
    fn word(self) -> &'static str {
        match self {
            Self::Beta => "BETA",
            Self::Lease => "LEASE",
        }
    }
}

/// A parsed `CACHE.GETX`: the key, and the options resolved at `now` (config defaults for
/// those not given).
#[derive(Debug, PartialEq)]
pub struct GetxRequest<'a, A> {
    pub name: &'a A,
    pub beta: f64,
    pub lease_until: i64,
}

/// `CACHE.GETX`'s arguments (argv, the command name first) at `now`.
pub fn parse<A: ArgBytes>(args: &[A], now: i64) -> Result<GetxRequest<'_, A>, CacheError> {
    let [_, name, opts @ ..] = args else {
        return Err(CacheError::Arity("cache.getx"));
    };
    let mut beta = None;
    let mut lease_ms = None;
    let mut it = Options::new(opts);
    while let Some((opt, v)) = it.next_option::<GetxOption>()? {
        match opt {
            GetxOption::Beta => beta = Some(parse_beta(v)?),
            GetxOption::Lease => lease_ms = Some(parse_positive_ms(v, "LEASE")?),
        }
    }
    let lease_ms = lease_ms.unwrap_or_else(config::lease_ms);
    let lease_until = now
        .checked_add(lease_ms)
        .ok_or(CacheError::InvalidTime("LEASE"))?;
    let beta = beta.unwrap_or_else(config::beta);
    Ok(GetxRequest {
        name,
        beta,
        lease_until,
    })
}

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let now = ids::now_ms();
    let GetxRequest {
        name,
        beta,
        lease_until,
    } = parse(args, now)?;

    // Decide on a read-only handle: a hit touches nothing (no WATCH invalidation, no
    // replication).
    let decision = {
        let key = open_entry(ctx, name)?;
        let entry = key.as_ref().map(|k| k.entry());
        let decision = decide(entry, now, beta, config::refresh(), uniform_open0_closed1);
        if !decision.grant {
            reply::read::answer(ctx, entry, decision.status, now);
            return Ok(RedisValue::NoReply);
        }
        decision
    };

    let mut key = open_entry_writable(ctx, name)?;
    // A LOCKGET caller parked on this key is first in line for the lease.
    if decision.status == Status::Miss && handover::hand_over(ctx, &mut key, name, now) {
        reply::read::answer(ctx, None, Status::Locked, now);
        return Ok(RedisValue::NoReply);
    }
    read::grant_and_answer(ctx, &mut key, name, decision.status, now, lease_until)?;
    Ok(RedisValue::NoReply)
}

thread_local! {
    /// A fast generator for the XFetch draw, seeded once from the OS-seeded thread RNG.
    static RNG: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// U uniform in (0, 1], as XFetch needs (ln U must be finite).
fn uniform_open0_closed1() -> f64 {
    1.0 - RNG.with(|r| r.borrow_mut().random::<f64>())
}

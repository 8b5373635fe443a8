//! `CACHE.SET key value (EX s | PX ms) [GRACE ms] [DELTA ms] [TOKEN token]`
//!
//! Stores the value, fresh for the TTL, then stale-but-served for GRACE. With TOKEN the write
//! is a fill, stored only while that lease is current; without, it is authoritative and
//! revokes any outstanding lease. Reply: the new version, or nil when a fill is refused.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::{
    parse_ex, parse_positive_ms, parse_span_ms, parse_token, ArgBytes, OptionName, Options,
};
use crate::config;
use crate::core::entry::{copy_value, decide_write, LeaseEffect, Write, NEVER};
use crate::error::CacheError;
use crate::stats;
use crate::storage::arg::Arg;
use crate::storage::key::{open_entry_writable, Ttl};
use crate::storage::{handover, ids, notify, replicate, server, tagindex};

/// The options every value-writing command shares.
#[derive(Clone, Copy)]
enum WriteOption {
    Ex,
    Px,
    Grace,
    Delta,
    Token,
}

impl OptionName for WriteOption {
    const ALL: &'static [Self] = &[Self::Ex, Self::Px, Self::Grace, Self::Delta, Self::Token];
    fn word(self) -> &'static str {
        match self {
            Self::Ex => "EX",
            Self::Px => "PX",
            Self::Grace => "GRACE",
            Self::Delta => "DELTA",
            Self::Token => "TOKEN",
        }
    }
    fn group(self) -> &'static str {
        match self {
            Self::Ex | Self::Px => "EX/PX",
            other => other.word(),
        }
    }
}

/// Parses the write options every value-writing command shares,
/// `(EX s | PX ms) [GRACE ms] [DELTA ms] [TOKEN token]`; `ttl_required` for CACHE.SET.
pub fn parse_write_options<A: ArgBytes>(
    opts: &[A],
    ttl_required: bool,
    now: i64,
) -> Result<Write, CacheError> {
    let mut ttl_ms = None;
    let mut grace_ms = None;
    let mut delta_ms = None;
    let mut token = None;
    let mut ex_given = false;
    let mut it = Options::new(opts);
    while let Some((opt, v)) = it.next_option::<WriteOption>()? {
        match opt {
            WriteOption::Ex => {
                ttl_ms = Some(parse_ex(v)?);
                ex_given = true;
            }
            WriteOption::Px => ttl_ms = Some(parse_positive_ms(v, "PX")?),
            WriteOption::Grace => grace_ms = Some(parse_span_ms(v, "GRACE")?),
            WriteOption::Delta => delta_ms = Some(parse_span_ms(v, "DELTA")?),
            WriteOption::Token => token = Some(parse_token(v)?),
        }
    }
    if ttl_required && ttl_ms.is_none() {
        return Err(CacheError::Missing("EX or PX"));
    }
    let grace_ms = grace_ms.unwrap_or_else(config::grace_ms);
    // fresh_until + grace must stay a real instant, below the "never" marker.
    if let Some(ttl) = ttl_ms {
        let ttl_opt = if ex_given { "EX" } else { "PX" };
        let fresh_until = now
            .checked_add(ttl)
            .ok_or(CacheError::InvalidTime(ttl_opt))?;
        match fresh_until.checked_add(grace_ms) {
            Some(end) if end != NEVER => {}
            _ => return Err(CacheError::InvalidTime("GRACE")),
        }
    }
    Ok(Write {
        ttl_ms,
        grace_ms,
        delta_ms,
        token,
    })
}

/// A parsed `CACHE.SET`: the key and value as given, the write its options make at `now`.
#[derive(Debug, PartialEq)]
pub struct SetRequest<'a, A> {
    pub name: &'a A,
    pub value: &'a A,
    pub write: Write,
}

/// `CACHE.SET`'s arguments (argv, the command name first) at `now`.
pub fn parse<A: ArgBytes>(args: &[A], now: i64) -> Result<SetRequest<'_, A>, CacheError> {
    let [_, name, value, opts @ ..] = args else {
        return Err(CacheError::Arity("cache.set"));
    };
    let write = parse_write_options(opts, true, now)?;
    Ok(SetRequest { name, value, write })
}

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    let now = ids::now_ms();
    let SetRequest { name, value, write } = parse(args, now)?;
    match store(ctx, name, value, &write, Tags::Keep, now, None)? {
        Some(version) => Ok(RedisValue::Integer(version as i64)),
        None => Ok(RedisValue::Null),
    }
}

/// What a write does with the tags of the entry it overwrites.
pub enum Tags {
    /// `CACHE.SET`: the entry keeps its tags (a refresh stays reachable by them).
    Keep,
    /// `CACHE.TAGSET`: the entry carries exactly these from now on.
    Replace(Vec<Vec<u8>>),
}

/// Something to do once a write's version is known and before anything is written (the
/// write-behind event, which must carry the version); an error there writes nothing.
pub type BeforeWrite<'a> = &'a mut dyn FnMut(u64) -> Result<(), CacheError>;

/// Stores a write at `name` and replicates it; `None` when a TOKEN fill is refused.
/// Shared by every command that writes a value.
pub fn store(
    ctx: &Context,
    name: &Arg,
    value: &Arg,
    write: &Write,
    tags: Tags,
    now: i64,
    before_write: Option<BeforeWrite>,
) -> Result<Option<u64>, CacheError> {
    let mut key = open_entry_writable(ctx, name)?;
    let existing = key.entry();
    let plan = match decide_write(existing.as_deref(), write, now, config::default_delta_ms()) {
        Ok(plan) => plan,
        Err(_) => {
            stats::FILLS_REFUSED.incr();
            return Ok(None);
        }
    };
    // A fill may not bring back a tag invalidated after its lease was granted (the value it
    // carries was read before the invalidation).
    if let (Some(token), Tags::Replace(tags)) = (write.token, &tags) {
        let db = server::selected_db(ctx);
        if !tagindex::with(|ix| ix.fill_allowed(db, tags, token)) {
            stats::FILLS_REFUSED.incr();
            return Ok(None);
        }
    }
    // Before anything is counted or written: a write the clock cannot version is refused.
    let version = ids::next_id(now)?;
    if let Some(hook) = before_write {
        hook(version)?;
    }
    match plan.lease_effect {
        LeaseEffect::Filled => stats::LEASES_FILLED.incr(),
        LeaseEffect::Revoked => stats::LEASES_REVOKED.incr(),
        // A lease that ran out unfilled, dropped now by this write.
        LeaseEffect::None if existing.as_ref().is_some_and(|e| e.has_lease()) => {
            stats::LEASES_EXPIRED.incr()
        }
        LeaseEffect::None => {}
    }
    let bytes = value.as_slice();
    match existing {
        Some(e) => {
            e.overwrite(plan, bytes, version)
                .map_err(|_| CacheError::Internal)?;
            if let Tags::Replace(t) = tags {
                tagindex::retag(e, server::selected_db(ctx), &t);
            }
            replicate::entry_written(ctx, name, e, Some(value));
            let expires = e.key_expires_at();
            key.set_expiry(expires);
        }
        None => {
            let owned = copy_value(bytes).map_err(|_| CacheError::Internal)?;
            let tags = match tags {
                Tags::Replace(t) => t,
                Tags::Keep => Vec::new(),
            };
            let entry = plan.into_entry(owned, version, &tags);
            replicate::entry_written(ctx, name, &entry, Some(value));
            key.store(entry, Ttl::FromEntry);
        }
    }
    drop(key);
    notify::set(ctx, name);
    // Callers parked in LOCKGET ... WAIT on this key get the value now.
    handover::signal(ctx, name);
    stats::WRITES.incr();
    Ok(Some(version))
}

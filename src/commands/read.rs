//! What GETX and LOCKGET share: counting a read, answering it, and granting its lease.

use redis_module::Context;

use super::args::Arg;
use super::reply;
use crate::core::entry::Entry;
use crate::core::xfetch::Status;
use crate::stats;
use crate::storage::key::Key;
use crate::storage::lease;

/// Counts a read's outcome in INFO.
pub fn count(status: Status) {
    match status {
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

/// Answers a read that takes no lease: the value while usable, the status, no token.
pub fn answer(ctx: &Context, entry: Option<&Entry>, status: Status, now: i64) {
    count(status);
    reply::triple(ctx, entry.and_then(|e| e.usable_value(now)), status, None);
}

/// Grants this caller the lease on `name` (open for writing as `key`) and answers with it.
pub fn grant_and_answer(
    ctx: &Context,
    (key, exists): (&Key, bool),
    name: &Arg,
    status: Status,
    now: i64,
    lease_until: i64,
) {
    count(status);
    let token = lease::grant(ctx, key, exists, name, now, lease_until);
    let value = if exists { key.entry() } else { None }.and_then(|e| e.usable_value(now));
    reply::triple(ctx, value, status, Some(token));
}

//! Answering a read (GETX, LOCKGET, a woken LOCKGET caller): counting its outcome and sending
//! the `[value, status, token]` triple.

use redis_module::Context;

use crate::core::entry::Entry;
use crate::core::xfetch::Status;
use crate::stats;

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
    super::triple(ctx, entry.and_then(|e| e.usable_value(now)), status, None);
}

//! The `CACHE.LOCKGET` decisions: mutex-style read-through, and what a parked caller gets
//! when its key is signalled.

use super::entry::{Entry, Freshness};
use super::xfetch::{self, Decision, Status};

/// Decides a LOCKGET call on `entry` (None: no key) at `now`: GETX's decision without early
/// refresh. `Locked` means another caller holds the lease: the caller waits (with `WAIT`) or
/// is told so; a stale value is served and never makes the caller wait.
pub fn decide(entry: Option<&Entry>, now: i64) -> Decision {
    xfetch::decide_read(entry, now, |_| false)
}

/// What a parked caller does when its key is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A value is there (a fill landed): reply with it.
    Value(Status),
    /// The lease was handed to this caller: reply `MISS` with the token.
    Granted(u64),
    /// Somebody else holds the lease (or was handed it): keep waiting.
    KeepWaiting,
}

/// `granted` is the token handed to this caller while it waited, if any.
pub fn on_wake(entry: Option<&Entry>, now: i64, granted: Option<u64>) -> Wake {
    let Some(e) = entry else {
        return Wake::KeepWaiting;
    };
    match e.freshness(now) {
        Freshness::Fresh => Wake::Value(Status::Hit),
        Freshness::Stale => Wake::Value(Status::Stale),
        Freshness::Absent => match (e.active_lease(now), granted) {
            (Some(l), Some(t)) if l.token == t => Wake::Granted(t),
            _ => Wake::KeepWaiting,
        },
    }
}

/// Whether the lease of `entry` can be handed to a waiter now: nothing to serve and nobody
/// holding the lease.
pub fn lease_is_free(entry: Option<&Entry>, now: i64) -> bool {
    entry.is_none_or(|e| e.usable_value(now).is_none() && e.active_lease(now).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::Lease;

    fn valued(fresh_until: i64, grace: i64) -> Entry {
        Entry::new(Some(b"v"[..].into()), fresh_until, grace, 0, 1)
    }

    fn lease(token: u64, expires: i64) -> Lease {
        Lease {
            token,
            granted_ms: 0,
            expires_ms: expires,
        }
    }

    #[test]
    fn decisions() {
        let d = |status, grant| Decision { status, grant };
        assert_eq!(decide(None, 0), d(Status::Miss, true));
        assert_eq!(decide(Some(&valued(100, 50)), 10), d(Status::Hit, false));
        assert_eq!(decide(Some(&valued(100, 50)), 120), d(Status::Stale, true));
        let mut stale = valued(100, 50);
        stale.set_lease(Some(lease(3, 200)));
        assert_eq!(decide(Some(&stale), 120), d(Status::Stale, false));
        let pending = Entry::pending(lease(3, 200));
        assert_eq!(decide(Some(&pending), 10), d(Status::Locked, false));
        assert_eq!(decide(Some(&pending), 200), d(Status::Miss, true));
    }

    #[test]
    fn waking() {
        let pending = Entry::pending(lease(3, 200));
        assert_eq!(on_wake(Some(&pending), 10, None), Wake::KeepWaiting);
        assert_eq!(on_wake(Some(&pending), 10, Some(3)), Wake::Granted(3));
        assert_eq!(on_wake(Some(&pending), 10, Some(2)), Wake::KeepWaiting);
        assert_eq!(
            on_wake(Some(&pending), 200, Some(3)),
            Wake::KeepWaiting,
            "expired"
        );
        assert_eq!(
            on_wake(Some(&valued(100, 0)), 10, Some(3)),
            Wake::Value(Status::Hit)
        );
        assert_eq!(
            on_wake(Some(&valued(100, 50)), 120, None),
            Wake::Value(Status::Stale)
        );
        assert_eq!(on_wake(None, 0, None), Wake::KeepWaiting);
    }

    #[test]
    fn free_leases() {
        assert!(lease_is_free(None, 0));
        assert!(!lease_is_free(Some(&Entry::pending(lease(3, 200))), 10));
        assert!(lease_is_free(Some(&Entry::pending(lease(3, 200))), 200));
        assert!(!lease_is_free(Some(&valued(100, 0)), 10));
    }
}

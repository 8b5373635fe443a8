//! Granting a fill lease on a key: the one place that writes a lease, counts it and
//! replicates it (GETX, LOCKGET, and the hand-over to a waiting LOCKGET caller).

use redis_module::Context;

use super::key::Key;
use super::{ids, notify, replicate};
use crate::commands::args::Arg;
use crate::core::entry::{Entry, Lease};
use crate::stats;

/// Grants a new lease on `name`, open for writing as `key` (`exists`: it holds an entry),
/// creating a pending entry when there is none. Returns the token.
pub fn grant(
    ctx: &Context,
    key: &Key,
    exists: bool,
    name: &Arg,
    now: i64,
    lease_until: i64,
) -> u64 {
    let token = ids::next_id(now);
    let lease = Lease {
        token,
        granted_ms: now,
        expires_ms: lease_until,
    };
    stats::LEASES_GRANTED.incr();
    match if exists { key.entry() } else { None } {
        Some(e) => {
            if e.lease.as_ref().is_some_and(|l| !l.is_active(now)) {
                stats::LEASES_EXPIRED.incr();
            }
            e.lease = Some(lease);
            key.set_expiry(e.key_expires_at());
            replicate::metadata_changed(ctx, name, e);
        }
        None => {
            let e = Entry::pending(lease);
            replicate::entry_written(ctx, name, &e, None);
            key.store(e, false, true);
        }
    }
    notify::lease(ctx, name);
    token
}

//! Granting a fill lease on a key: the one place that writes a lease, counts it and
//! replicates it (GETX, LOCKGET, and the hand-over to a waiting LOCKGET caller).

use redis_module::Context;

use super::arg::Arg;
use super::key::{Ttl, WriteKey};
use super::{ids, notify, replicate, tagindex};
use crate::core::entry::{self, Entry, Lease};
use crate::error::CacheError;
use crate::stats;

/// Grants a new lease on `name`, open for writing as `key`, creating a pending entry when
/// there is none. Returns the token; an error, with nothing written, when the id clock has
/// no id left.
pub fn grant(
    ctx: &Context,
    key: &mut WriteKey,
    name: &Arg,
    now: i64,
    lease_until: i64,
) -> Result<u64, CacheError> {
    let token = ids::next_id(now)?;
    tagindex::lease_granted(lease_until);
    let lease = Lease {
        token,
        granted_ms: now,
        expires_ms: lease_until,
    };
    stats::LEASES_GRANTED.incr();
    match key.entry() {
        Some(e) => {
            if e.lease().is_some_and(|l| !l.is_active(now)) {
                stats::LEASES_EXPIRED.incr();
            }
            e.set_lease(Some(lease));
            replicate::metadata_changed(ctx, name, e);
            let expires = e.key_expires_at();
            key.set_expiry(expires);
        }
        None => {
            let e = Entry::pending(lease);
            replicate::entry_written(ctx, name, &e, None);
            key.store(e, Ttl::FromEntry);
        }
    }
    notify::lease(ctx, name);
    Ok(token)
}

/// Gives up the lease `token` on `name` (open for writing as `key`) when it is the current
/// one: the key keeps its value, or goes when it held only the lease. Replicates; returns
/// whether it was released. Parked callers are not handed over here (see `waiters`).
pub fn release(ctx: &Context, key: &mut WriteKey, name: &Arg, token: u64, now: i64) -> bool {
    let Some(e) = key.entry() else {
        return false;
    };
    if !entry::release(e, token, now) {
        return false;
    }
    stats::LEASES_RELEASED.incr();
    notify::release(ctx, name);
    if e.value.is_some() {
        replicate::metadata_changed(ctx, name, e);
        let expires = e.key_expires_at();
        key.set_expiry(expires);
    } else {
        // A pending entry without its lease holds nothing: the key goes.
        key.delete();
        replicate::deleted(ctx, &[name]);
    }
    true
}

//! The cache entry and the rules for writing it: fills, leases, fencing.
//!
//! All times are absolute Unix milliseconds handed in by the caller, so every rule here can be
//! tested without a server and replayed deterministically on a replica.

use super::extras::{Extras, Tags};

/// `fresh_until_ms` of an entry that never goes stale (a write-behind write without a TTL).
pub const NEVER: i64 = i64::MAX;

/// An outstanding fill lease: whoever holds `token` may fill the entry until `expires_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub token: u64,
    pub granted_ms: i64,
    pub expires_ms: i64,
}

impl Lease {
    pub fn is_active(&self, now: i64) -> bool {
        now < self.expires_ms
    }
}

/// The longest `GRACE` or `DELTA` an entry keeps (about 49.7 days): both are stored in 32
/// bits, which keeps the entry at 48 bytes.
pub const MAX_SPAN_MS: i64 = u32::MAX as i64;

/// One cache entry: the value of a key of the module's type.
///
/// Laid out for memory (48 bytes, plus the value's own allocation): a cache's capacity is its
/// hit rate. Grace and delta are 32-bit; the lease and tags live in [`Extras`], which costs
/// nothing when both are absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Fresh before this instant, [`NEVER`] for entries without a TTL.
    pub fresh_until_ms: i64,
    /// Version of the last stored write; strictly increasing per key.
    pub version: u64,
    grace_ms: u32,
    delta_ms: u32,
    /// Absent while the first fill is pending (the key exists only to hold the lease).
    pub value: Option<Box<[u8]>>,
    extras: Extras,
}

/// Where the value stands at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past fresh, inside grace: served, marked stale.
    Stale,
    /// No usable value (never filled, or past its grace).
    Absent,
}

/// A span in ms as the entry stores it: negative ones are refused before they get here, longer
/// ones than [`MAX_SPAN_MS`] are held at it.
fn span(ms: i64) -> u32 {
    ms.clamp(0, MAX_SPAN_MS) as u32
}

impl Entry {
    /// An entry with these fields, no lease and no tags.
    pub fn new(
        value: Option<Box<[u8]>>,
        fresh_until_ms: i64,
        grace_ms: i64,
        delta_ms: i64,
        version: u64,
    ) -> Entry {
        Entry {
            fresh_until_ms,
            version,
            grace_ms: span(grace_ms),
            delta_ms: span(delta_ms),
            value,
            extras: Extras::default(),
        }
    }

    /// An entry holding only a fill lease: the state after a first MISS.
    pub fn pending(lease: Lease) -> Entry {
        let mut e = Entry::new(None, 0, 0, 0, 0);
        e.set_lease(Some(lease));
        e
    }

    /// After `fresh_until_ms`, the value is stale but still served for this long.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms as i64
    }

    /// What recomputing the value costs (ms): the XFetch scale.
    pub fn delta_ms(&self) -> i64 {
        self.delta_ms as i64
    }

    pub fn set_grace_ms(&mut self, ms: i64) {
        self.grace_ms = span(ms);
    }

    pub fn set_delta_ms(&mut self, ms: i64) {
        self.delta_ms = span(ms);
    }

    /// At most one outstanding fill lease. It may have expired: check with `active_lease`.
    pub fn lease(&self) -> Option<Lease> {
        self.extras.lease()
    }

    pub fn has_lease(&self) -> bool {
        self.extras.has_lease()
    }

    pub fn set_lease(&mut self, lease: Option<Lease>) {
        if lease.is_some() || self.extras.has_lease() {
            self.extras.set_lease(lease.as_ref());
        }
    }

    /// Tags the entry carries (used by the tag commands), in the order they were given.
    pub fn tags(&self) -> Tags<'_> {
        self.extras.tags()
    }

    pub fn has_tags(&self) -> bool {
        self.extras.has_tags()
    }

    pub fn set_tags<T: AsRef<[u8]>>(&mut self, tags: &[T]) {
        if !tags.is_empty() || self.extras.has_tags() {
            self.extras.set_tags(tags);
        }
    }

    /// Whether the tag index counts this entry (`storage::tagindex` keeps it true).
    pub fn is_indexed(&self) -> bool {
        self.extras.is_indexed()
    }

    pub fn set_indexed(&mut self, on: bool) {
        self.extras.set_indexed(on);
    }

    /// The tags as owned byte strings (replies, tests).
    pub fn tag_list(&self) -> Vec<Vec<u8>> {
        self.tags().map(<[u8]>::to_vec).collect()
    }

    /// The instant the value stops being served at all.
    pub fn value_until_ms(&self) -> i64 {
        self.fresh_until_ms.saturating_add(self.grace_ms())
    }

    pub fn freshness(&self, now: i64) -> Freshness {
        if self.value.is_none() || now >= self.value_until_ms() {
            Freshness::Absent
        } else if now < self.fresh_until_ms {
            Freshness::Fresh
        } else {
            Freshness::Stale
        }
    }

    /// The value while it may be served (fresh or in grace).
    pub fn usable_value(&self, now: i64) -> Option<&[u8]> {
        match self.freshness(now) {
            Freshness::Absent => None,
            _ => self.value.as_deref(),
        }
    }

    pub fn active_lease(&self, now: i64) -> Option<Lease> {
        self.lease().filter(|l| l.is_active(now))
    }

    /// When the key itself should expire: when neither the value nor the lease is of any use.
    /// `None` means the key does not expire.
    pub fn key_expires_at(&self) -> Option<i64> {
        let value_end = self.value.as_ref().map(|_| self.value_until_ms());
        let lease_end = self.lease().map(|l| l.expires_ms);
        let end = match (value_end, lease_end) {
            (Some(v), Some(l)) => v.max(l),
            (Some(v), None) => v,
            (None, Some(l)) => l,
            (None, None) => return Some(0),
        };
        (end != NEVER).then_some(end)
    }

    /// Bytes this entry holds on the heap, for `MEMORY USAGE` and eviction.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Entry>()
            + self.value.as_ref().map_or(0, |v| v.len())
            + self.extras.heap_size()
    }
}

/// Why a `TOKEN` fill was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key does not exist (deleted, expired, or never leased).
    NoEntry,
    /// The entry has no lease: filled already, released, or revoked by a write.
    NoLease,
    /// A newer lease replaced the one this token names.
    WrongToken,
    /// The token's lease ran out before the fill.
    LeaseExpired,
}

/// What a write (`CACHE.SET` and friends) does to the lease it meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEffect {
    /// There was no active lease.
    None,
    /// The fill presented the current token: the lease is fulfilled.
    Filled,
    /// An authoritative write replaced the value under an active lease: it is revoked.
    Revoked,
}

/// A validated write request. Times are relative; `now` makes them absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub ttl_ms: Option<i64>,
    pub grace_ms: i64,
    pub delta_ms: Option<i64>,
    pub token: Option<u64>,
}

/// Outcome of [`decide_write`]: the fields of the entry to store, or the refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WritePlan {
    pub fresh_until_ms: i64,
    pub grace_ms: i64,
    pub delta_ms: i64,
    pub lease_effect: LeaseEffect,
}

/// Decides whether a write is stored and with which timing fields.
///
/// A `TOKEN` fill is stored only while its lease is the entry's current, unexpired lease.
/// Without `DELTA`, a token fill records the time since its lease was granted; any other
/// write keeps the previous delta, or `default_delta_ms` for a new entry.
pub fn decide_write(
    existing: Option<&Entry>,
    w: &Write,
    now: i64,
    default_delta_ms: i64,
) -> Result<WritePlan, Refusal> {
    let lease_effect = match w.token {
        Some(token) => {
            let entry = existing.ok_or(Refusal::NoEntry)?;
            let lease = entry.lease().ok_or(Refusal::NoLease)?;
            if lease.token != token {
                return Err(Refusal::WrongToken);
            }
            if !lease.is_active(now) {
                return Err(Refusal::LeaseExpired);
            }
            LeaseEffect::Filled
        }
        None => match existing.and_then(|e| e.active_lease(now)) {
            Some(_) => LeaseEffect::Revoked,
            None => LeaseEffect::None,
        },
    };
    let delta_ms = match (w.delta_ms, lease_effect, existing) {
        (Some(d), _, _) => d,
        (None, LeaseEffect::Filled, Some(e)) => {
            let granted = e.lease().map_or(now, |l| l.granted_ms);
            now.saturating_sub(granted).max(0)
        }
        (None, _, Some(e)) if e.value.is_some() => e.delta_ms(),
        (None, _, _) => default_delta_ms,
    };
    let fresh_until_ms = match w.ttl_ms {
        Some(ttl) => now.saturating_add(ttl),
        None => NEVER,
    };
    Ok(WritePlan {
        fresh_until_ms,
        grace_ms: w.grace_ms,
        delta_ms,
        lease_effect,
    })
}

impl WritePlan {
    /// The entry to store, carrying `tags` (those of the entry it replaces, or new ones).
    pub fn into_entry<T: AsRef<[u8]>>(self, value: Box<[u8]>, version: u64, tags: &[T]) -> Entry {
        let mut e = Entry::new(
            Some(value),
            self.fresh_until_ms,
            self.grace_ms,
            self.delta_ms,
            version,
        );
        e.set_tags(tags);
        e
    }
}

impl Entry {
    /// Applies a write in place, reusing the value's buffer when it has the same length (an
    /// overwrite of a hot key with a same-sized value then allocates nothing). Tags are kept;
    /// the lease is gone (filled or revoked).
    pub fn overwrite(
        &mut self,
        plan: WritePlan,
        value: &[u8],
        version: u64,
    ) -> Result<(), std::collections::TryReserveError> {
        match &mut self.value {
            Some(buf) if buf.len() == value.len() => buf.copy_from_slice(value),
            slot => *slot = Some(copy_value(value)?),
        }
        self.fresh_until_ms = plan.fresh_until_ms;
        self.set_grace_ms(plan.grace_ms);
        self.set_delta_ms(plan.delta_ms);
        self.version = version;
        self.set_lease(None);
        Ok(())
    }
}

/// Copies a value into a buffer of exactly its size, failing instead of aborting when memory
/// cannot be had.
pub fn copy_value(value: &[u8]) -> Result<Box<[u8]>, std::collections::TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(value.len())?;
    v.extend_from_slice(value);
    Ok(v.into_boxed_slice())
}

/// `CACHE.RELEASE`: gives the lease up when `token` is the current active lease.
pub fn release(entry: &mut Entry, token: u64, now: i64) -> bool {
    match entry.active_lease(now) {
        Some(l) if l.token == token => {
            entry.set_lease(None);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(token: u64, granted: i64, expires: i64) -> Lease {
        Lease {
            token,
            granted_ms: granted,
            expires_ms: expires,
        }
    }

    fn entry(fresh_until: i64, grace: i64) -> Entry {
        Entry::new(Some(b"v"[..].into()), fresh_until, grace, 7, 1)
    }

    fn write(token: Option<u64>, delta: Option<i64>) -> Write {
        Write {
            ttl_ms: Some(1000),
            grace_ms: 0,
            delta_ms: delta,
            token,
        }
    }

    #[test]
    fn freshness_follows_fresh_until_and_grace() {
        let e = entry(100, 50);
        assert_eq!(e.freshness(99), Freshness::Fresh);
        assert_eq!(e.freshness(100), Freshness::Stale);
        assert_eq!(e.freshness(149), Freshness::Stale);
        assert_eq!(e.freshness(150), Freshness::Absent);
        assert_eq!(e.usable_value(150), None);
        assert_eq!(
            Entry::pending(lease(1, 0, 10)).freshness(0),
            Freshness::Absent
        );
    }

    #[test]
    fn key_expiry_covers_value_and_lease() {
        let mut e = entry(100, 50);
        assert_eq!(e.key_expires_at(), Some(150));
        e.set_lease(Some(lease(1, 140, 200)));
        assert_eq!(e.key_expires_at(), Some(200));
        e.set_lease(Some(lease(1, 0, 120)));
        assert_eq!(e.key_expires_at(), Some(150));
        assert_eq!(Entry::pending(lease(1, 0, 10)).key_expires_at(), Some(10));
        let mut forever = entry(0, 10);
        forever.fresh_until_ms = NEVER;
        assert_eq!(forever.key_expires_at(), None);
    }

    #[test]
    fn token_fill_needs_the_current_active_lease() {
        let mut e = entry(100, 0);
        let w = write(Some(5), None);
        assert_eq!(decide_write(None, &w, 10, 0), Err(Refusal::NoEntry));
        assert_eq!(decide_write(Some(&e), &w, 10, 0), Err(Refusal::NoLease));
        e.set_lease(Some(lease(4, 0, 50)));
        assert_eq!(decide_write(Some(&e), &w, 10, 0), Err(Refusal::WrongToken));
        e.set_lease(Some(lease(5, 0, 50)));
        assert_eq!(
            decide_write(Some(&e), &w, 50, 0),
            Err(Refusal::LeaseExpired)
        );
        let plan = decide_write(Some(&e), &w, 30, 0).unwrap();
        assert_eq!(plan.lease_effect, LeaseEffect::Filled);
        assert_eq!(plan.delta_ms, 30, "delta measured from lease grant to fill");
        assert_eq!(plan.fresh_until_ms, 1030);
    }

    #[test]
    fn authoritative_write_revokes_an_active_lease() {
        let mut e = entry(100, 0);
        e.set_lease(Some(lease(5, 0, 50)));
        let plan = decide_write(Some(&e), &write(None, None), 10, 99).unwrap();
        assert_eq!(plan.lease_effect, LeaseEffect::Revoked);
        assert_eq!(plan.delta_ms, 7, "previous delta kept");
        let plan = decide_write(Some(&e), &write(None, None), 60, 99).unwrap();
        assert_eq!(
            plan.lease_effect,
            LeaseEffect::None,
            "expired lease is not revoked"
        );
    }

    #[test]
    fn delta_defaults() {
        assert_eq!(
            decide_write(None, &write(None, None), 0, 99)
                .unwrap()
                .delta_ms,
            99
        );
        assert_eq!(
            decide_write(None, &write(None, Some(3)), 0, 99)
                .unwrap()
                .delta_ms,
            3
        );
        let pending = Entry::pending(lease(1, 0, 100));
        let plan = decide_write(Some(&pending), &write(None, None), 5, 99).unwrap();
        assert_eq!(plan.delta_ms, 99, "a pending entry has no delta of its own");
        let never = decide_write(
            None,
            &Write {
                ttl_ms: None,
                ..write(None, None)
            },
            5,
            0,
        );
        assert_eq!(never.unwrap().fresh_until_ms, NEVER);
    }

    #[test]
    fn overwrite_in_place_keeps_tags_and_drops_the_lease() {
        let mut e = entry(100, 0);
        e.set_tags(&[b"t"]);
        e.set_lease(Some(lease(5, 0, 50)));
        let plan = decide_write(Some(&e), &write(Some(5), None), 10, 0).unwrap();
        e.overwrite(plan, b"new", 77).unwrap();
        assert_eq!(e.value.as_deref(), Some(&b"new"[..]));
        assert_eq!((e.version, e.delta_ms(), e.fresh_until_ms), (77, 10, 1010));
        assert_eq!(e.tag_list(), vec![b"t".to_vec()]);
        assert!(!e.has_lease());
        let big = vec![7u8; 10_000];
        let plan = decide_write(Some(&e), &write(None, None), 10, 0).unwrap();
        e.overwrite(plan.clone(), &big, 78).unwrap();
        e.overwrite(plan, b"x", 79).unwrap();
        assert_eq!(e.value.as_deref(), Some(&b"x"[..]), "no larger buffer kept");
    }

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn spans_are_held_in_32_bits() {
        let mut e = entry(0, MAX_SPAN_MS + 5);
        assert_eq!(e.grace_ms(), MAX_SPAN_MS);
        e.set_delta_ms(-3);
        assert_eq!(e.delta_ms(), 0);
    }

    #[test]
    fn release_only_the_current_lease() {
        let mut e = entry(100, 0);
        e.set_lease(Some(lease(5, 0, 50)));
        assert!(!release(&mut e, 4, 10));
        assert!(!release(&mut e, 5, 50), "expired lease is not current");
        assert!(release(&mut e, 5, 10));
        assert!(!e.has_lease());
        assert!(!release(&mut e, 5, 10));
    }
}

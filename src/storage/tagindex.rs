//! The server's one tag index (`core::tags`), kept true on every path by which an entry
//! appears, changes its tags or goes:
//!
//! - the module's own writes (`CACHE.SET`, `CACHE.TAGSET`, `CACHE.APPLY`, lease grants) through
//!   `key::WriteKey`, which re-indexes whatever it stores;
//! - every removal Redis makes (DEL, UNLINK, expiry, eviction, an overwrite by another type,
//!   the source of RENAME and MOVE) through the type's `unlink` callback;
//! - entries Redis puts on a name (COPY, RENAME, MOVE, RESTORE) through their notifications;
//! - FLUSHDB/FLUSHALL and SWAPDB through their server events;
//! - loading (RDB, AOF, full sync): cleared when it starts, rebuilt from the keyspace when it
//!   ends (`wrapper::rebuild`).
//!
//! Each entry counted carries a mark (`Entry::is_indexed`), so that counting it twice or
//! forgetting it twice is harmless: a path may see an entry again (a landing after a store, a
//! delete after a replace) without the counts drifting.
//!
//! A leaf of the storage layer (it imports only the core), so that the type's callbacks can
//! call it without an import circle.
//!
//! Main thread only: every path above runs there. (`free` may run on the lazy-free thread and
//! never touches the index; a flush clears it from its event instead.)

use std::cell::{Cell, RefCell};

use crate::core::entry::Entry;
use crate::core::tags::TagIndex;

thread_local! {
    static INDEX: RefCell<TagIndex> = RefCell::new(TagIndex::new());
    /// The latest end of any lease granted so far: an invalidation is kept until then, so
    /// that no lease granted before it can bring its tags back.
    static LEASE_HIGH_WATER: Cell<i64> = const { Cell::new(0) };
}

/// A lease was granted (or loaded) that ends at `expires_ms`.
pub fn lease_granted(expires_ms: i64) {
    LEASE_HIGH_WATER.set(LEASE_HIGH_WATER.get().max(expires_ms));
}

/// When every lease granted so far has ended.
pub fn leases_end_by() -> i64 {
    LEASE_HIGH_WATER.get()
}

/// Whether `entry` (in the database `db` gives) is invalidated by a tag: it reads as absent
/// and is removed. Untagged entries never are, and cost no lookup.
pub fn invalidated(db: impl FnOnce() -> i32, entry: &Entry) -> bool {
    if !entry.has_tags() {
        return false;
    }
    with(|ix| ix.has_tombs() && ix.is_invalidated(db(), entry.tags(), entry.version))
}

pub fn with<T>(f: impl FnOnce(&mut TagIndex) -> T) -> T {
    INDEX.with(|ix| f(&mut ix.borrow_mut()))
}

/// `entry` is in the keyspace of `db` with its tags (stored, landed on a name, found by a
/// rebuild): counted, once. One found invalidated is counted as pending removal instead.
pub fn indexed(entry: &mut Entry, db: i32) {
    if !entry.has_tags() || entry.is_indexed() {
        return;
    }
    entry.set_indexed(true);
    with(|ix| {
        if ix.is_invalidated(db, entry.tags(), entry.version) {
            ix.found_invalidated(db);
        } else {
            ix.add(db, entry.tags());
        }
    });
}

/// `entry` leaves the keyspace of `db` (or is about to change its tags): no longer counted.
pub fn forget(entry: &mut Entry, db: i32) {
    if !entry.is_indexed() {
        return;
    }
    entry.set_indexed(false);
    with(|ix| {
        if ix.is_invalidated(db, entry.tags(), entry.version) {
            ix.invalidated_gone(db);
        } else {
            ix.remove(db, entry.tags());
        }
    });
}

/// `entry`, in `db`, carries `tags` from now on (`CACHE.TAGSET` over an entry).
pub fn retag(entry: &mut Entry, db: i32, tags: &[Vec<u8>]) {
    // The common overwrite: the same tags again. Nothing changes, nothing is counted anew.
    if entry.tags().eq(tags.iter().map(|t| &t[..])) {
        return;
    }
    forget(entry, db);
    entry.set_tags(tags);
    indexed(entry, db);
}

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
//! A leaf of the storage layer (it imports only the core), so that the type's callbacks can
//! call it without an import circle.
//!
//! Main thread only: every path above runs there. (`free` may run on the lazy-free thread and
//! never touches the index; a flush clears it from its event instead.)

use std::cell::{Cell, RefCell};

use crate::core::entry::Entry;
use crate::core::tags::{EntryId, TagIndex};

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

/// The id the index knows an entry by: its address, stable while Redis holds the value.
pub fn id_of(entry: *const Entry) -> EntryId {
    entry as usize
}

/// The entry at `entry`, stored at `key` in `db`, carries its tags now.
pub fn indexed(entry: &Entry, db: i32, key: &[u8]) {
    let id = id_of(entry);
    // An untagged entry may have carried tags before this write: take it out.
    if !entry.has_tags() {
        with(|ix| ix.remove(id));
    } else {
        with(|ix| ix.set(id, db, key, entry.tags()));
    }
}

/// The entry at `entry` leaves the keyspace (or Redis is about to free it).
pub fn forget(entry: *const Entry) {
    with(|ix| ix.remove(id_of(entry)));
}

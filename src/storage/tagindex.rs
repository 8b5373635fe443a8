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

use std::cell::RefCell;

use crate::core::entry::Entry;
use crate::core::tags::{EntryId, TagIndex};

thread_local! {
    static INDEX: RefCell<TagIndex> = RefCell::new(TagIndex::new());
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
    if entry.tags.is_empty() {
        with(|ix| ix.remove(id));
    } else {
        with(|ix| ix.set(id, db, key, &entry.tags));
    }
}

/// The entry at `entry` leaves the keyspace (or Redis is about to free it).
pub fn forget(entry: *const Entry) {
    with(|ix| ix.remove(id_of(entry)));
}

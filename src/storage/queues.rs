//! The write-behind queues of a cluster node (`<cache.wb-queue>:{<tag>}`, one per slot), known
//! without walking the keyspace, so that `INFO` reads their backlog with a lookup per queue.
//!
//! A queue comes to a node by an `XADD` to it (the module's own appends raise the event, and
//! so do those replicated to a replica), by `RESTORE` (a slot migrating in), `RENAME`, `COPY`
//! or `MOVE`, or by a load (RDB, AOF, full sync), after which the keyspace is scanned for
//! them once. Names are noticed from those events; one that no longer holds a stream (its
//! slot migrated away, a flush) is forgotten when `INFO` next looks.
//!
//! A leaf of the storage layer; main thread only.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::config;

thread_local! {
    static NAMES: RefCell<BTreeSet<Vec<u8>>> = const { RefCell::new(BTreeSet::new()) };
}

/// Whether `name` is a slot queue of the current `cache.wb-queue` (not its dead letters).
fn is_slot_queue(name: &[u8]) -> bool {
    let base = config::wb_queue();
    name.strip_prefix(base.as_slice())
        .and_then(|rest| rest.strip_prefix(b":{"))
        .is_some_and(|tag| tag.ends_with(b"}") && !tag[..tag.len() - 1].contains(&b'}'))
}

/// A key event on `name`: remembered if it is a slot queue.
pub fn noticed(name: &[u8]) {
    if is_slot_queue(name) {
        NAMES.with_borrow_mut(|n| {
            if !n.contains(name) {
                n.insert(name.to_vec());
            }
        });
    }
}

/// The slot queues noticed, of the current `cache.wb-queue`.
pub fn known() -> Vec<Vec<u8>> {
    NAMES.with_borrow(|n| n.iter().filter(|q| is_slot_queue(q)).cloned().collect())
}

/// A load replaces the keyspace: what it brings is looked for when it ends.
pub fn clear() {
    NAMES.with_borrow_mut(|n| n.clear());
}

/// `name` holds no queue any more.
pub fn forget(name: &[u8]) {
    NAMES.with_borrow_mut(|n| n.remove(name));
}

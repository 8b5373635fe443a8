//! `RENAME` and `MOVE` delete the source key, and Redis calls the type's `unlink` for it,
//! which counts its live lease as revoked (or lapsed); the lease moved with the entry, so the
//! `rename_from` / `move_from` notification that follows takes that count back. A leaf (it
//! imports only the counters), so that `unlink` can call it without an import circle.

use std::cell::RefCell;

use crate::stats;

/// What `unlink` counted for the key it saw last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Nothing,
    Revoked,
    Expired,
}

thread_local! {
    /// The last key `unlink` saw and what it counted; the buffer is reused.
    static LAST_UNLINK: RefCell<(Vec<u8>, Counted)> = const { RefCell::new((Vec::new(), Counted::Nothing)) };
}

/// `unlink` saw `name` leave the keyspace and counted `counted` for its lease.
pub fn unlinked(name: &[u8], counted: Counted) {
    LAST_UNLINK.with(|l| {
        let mut l = l.borrow_mut();
        l.0.clear();
        l.0.extend_from_slice(name);
        l.1 = counted;
    });
}

/// `name` was renamed or moved away: its entry (and lease) live on under the new name, so the
/// lease `unlink` counted as revoked or expired just before is taken back.
pub fn moved_away(name: &[u8]) {
    LAST_UNLINK.with(|l| {
        let mut l = l.borrow_mut();
        if l.0 != name {
            return;
        }
        match l.1 {
            Counted::Revoked => stats::LEASES_REVOKED.take_back(),
            Counted::Expired => stats::LEASES_EXPIRED.take_back(),
            Counted::Nothing => {}
        }
        l.1 = Counted::Nothing;
    });
}

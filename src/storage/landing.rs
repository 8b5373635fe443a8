//! Entries that Redis's own commands put on a key name: `COPY`, `RENAME`, `MOVE`, `RESTORE`.
//!
//! Versions are strictly increasing per key, also across deletes. An entry that lands on a
//! name carries the version it had elsewhere (or in the payload), which may be lower than the
//! one the name had: so it gets a fresh version from the clock, replicated (and written to the
//! AOF) as a `CACHE.APPLY` that keeps the value and the key's TTL. Loading (RDB, AOF, a full
//! sync) keeps versions exactly, and a replica takes the primary's fresh version from the
//! stream, so both only record landings on a primary that is not loading.
//!
//! Redis 7.0 forbids writing to the keyspace from a keyspace notification (post-notification
//! jobs came with 7.2), so the notification only records the landing. The fresh version is
//! given before the next command of this module runs in that database (so none of them ever
//! sees the old one), or else by a timer in the same event-loop turn.
//!
//! Here too: `RENAME` and `MOVE` delete the source key, and Redis calls the type's `unlink`
//! for it, which counts its live lease as revoked; the lease moved with the entry, so the
//! `rename_from` / `move_from` notification that follows takes that count back.

use std::cell::RefCell;

use redis_module::{raw, Context, ContextFlags};

use super::arg::Arg;
use super::key::{open_entry, open_entry_writable};
use super::{ids, replicate, server};
use crate::core::waiters::LineKey;
use crate::stats;

/// What `unlink` counted for the key it saw last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Nothing,
    Revoked,
    Expired,
}

thread_local! {
    /// Landed entries still waiting for their fresh version (main thread only).
    static PENDING: RefCell<Vec<LineKey>> = const { RefCell::new(Vec::new()) };
    /// The last key `unlink` saw and what it counted; the buffer is reused.
    static LAST_UNLINK: RefCell<(Vec<u8>, Counted)> = const { RefCell::new((Vec::new(), Counted::Nothing)) };
}

pub fn has_pending() -> bool {
    PENDING.with(|p| !p.borrow().is_empty())
}

/// The selected database of `ctx`.
fn db_of(ctx: &Context) -> i32 {
    // SAFETY: a live context; the call only reads its client's database.
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }
}

/// A notification that an entry may have landed on `name` (in `ctx`'s database). Returns
/// whether a landing was recorded (the caller then makes sure a timer runs).
pub fn landed(ctx: &Context, name: &Arg) -> bool {
    let not_ours = ContextFlags::SLAVE | ContextFlags::LOADING | ContextFlags::ASYNC_LOADING;
    if ctx.get_flags().intersects(not_ours) {
        return false;
    }
    if !matches!(open_entry(ctx, name), Ok(Some(_))) {
        return false;
    }
    let key = LineKey {
        db: db_of(ctx),
        key: name.as_slice().to_vec(),
    };
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if !p.contains(&key) {
            p.push(key);
        }
    });
    true
}

/// Takes the landings still pending in database `db`, or in every database.
pub fn take(db: Option<i32>) -> Vec<LineKey> {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match db {
            None => std::mem::take(&mut *p),
            Some(db) => {
                let (mine, rest) = p.drain(..).partition(|k| k.db == db);
                *p = rest;
                mine
            }
        }
    })
}

/// Gives the entry at `name` a fresh version and replicates it. Nothing when the key no
/// longer holds an entry, or when the clock has no id left (the entry keeps its version).
pub fn refresh(ctx: &Context, name: &Arg) {
    let Ok(mut key) = open_entry_writable(ctx, name) else {
        return;
    };
    let Some(entry) = key.entry() else {
        return;
    };
    let Ok(version) = ids::next_id(ids::now_ms()) else {
        return;
    };
    entry.version = version;
    replicate::version_changed(ctx, name, entry);
}

/// Before a command of this module runs: the landings in its database get their versions,
/// when the server takes writes now (otherwise the timer does it later). Not from a script,
/// whose effects Redis may be told to keep to itself.
pub fn refresh_before_command(ctx: &Context) {
    if ctx.get_flags().contains(ContextFlags::LUA) || !server::accepts_unprompted_writes(ctx) {
        return;
    }
    for k in take(Some(db_of(ctx))) {
        // SAFETY: a live context; the string lives until freed below and `refresh` cannot
        // keep it.
        unsafe {
            let name =
                raw::RedisModule_CreateString.unwrap()(ctx.ctx, k.key.as_ptr().cast(), k.key.len());
            refresh(ctx, &Arg::from_raw(name));
            raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        }
    }
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

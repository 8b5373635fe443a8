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

use std::cell::RefCell;

use redis_module::{Context, ContextFlags};

use super::arg::{with_name, Arg};
use super::key::open_entry_writable;
use super::{ids, replicate, server};
use crate::core::waiters::LineKey;

thread_local! {
    /// Landed entries still waiting for their fresh version (main thread only).
    static PENDING: RefCell<Vec<LineKey>> = const { RefCell::new(Vec::new()) };
}

pub fn has_pending() -> bool {
    PENDING.with(|p| !p.borrow().is_empty())
}

/// An entry landed on `name` (in `ctx`'s database; the caller found it there). Returns
/// whether the landing was recorded (the caller then makes sure a timer runs).
pub fn landed(ctx: &Context, name: &Arg) -> bool {
    let not_ours = ContextFlags::SLAVE | ContextFlags::LOADING | ContextFlags::ASYNC_LOADING;
    if ctx.get_flags().intersects(not_ours) {
        return false;
    }
    let key = LineKey {
        db: server::selected_db(ctx),
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
    for k in take(Some(server::selected_db(ctx))) {
        with_name(ctx, &k.key, |name| refresh(ctx, name));
    }
}

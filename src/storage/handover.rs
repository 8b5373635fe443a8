//! Handing a lease to the callers parked by `CACHE.LOCKGET ... WAIT`, beside `lease.rs`: the
//! registry of their lines (`core::waiters`), and the policy that the longest-waiting caller
//! of a key is handed a new lease as soon as the key's lease ends without a fill.
//!
//! The blocked clients themselves, the timer and the keyspace-event callback that call in here
//! are in `wrapper::blocked`. Everything runs on Redis's main thread.

use std::cell::RefCell;

use redis_module::{raw, Context};

use super::arg::Arg;
use super::key::{open_entry, open_entry_writable, WriteKey};
use super::lease;
use crate::core::lock;
use crate::core::waiters::{LineKey, Registry};
use crate::stats;

/// Longest a line goes unlooked-at while callers wait, whatever its deadline says: a safety net
/// for a change no event told us of.
pub const RECHECK_MS: i64 = 1_000;

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::new());
}

/// Runs `f` on the registry of parked callers.
pub fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    REGISTRY.with(|r| f(&mut r.borrow_mut()))
}

/// Callers parked right now (INFO).
pub fn parked() -> usize {
    with(|r| r.parked())
}

pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: a live context.
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }
}

/// The line of key `name` in the context's selected database.
pub fn line_of(ctx: &Context, name: &[u8]) -> LineKey {
    LineKey {
        db: selected_db(ctx),
        key: name.to_vec(),
    }
}

/// Whether callers are parked on `name` (in the selected db).
pub fn is_waited(ctx: &Context, name: &Arg) -> bool {
    with(|r| !r.is_empty() && r.is_waited(&line_of(ctx, name.as_slice())))
}

/// Tells Redis the key changed: parked callers on it get to look.
pub fn signal(ctx: &Context, name: &Arg) {
    // SAFETY: a live context and key name; Redis returns at once when nobody waits.
    unsafe { raw::RedisModule_SignalKeyAsReady.unwrap()(ctx.ctx, name.raw()) };
}

/// If callers are parked on `name` and its lease is free, hands a new lease to the
/// longest-waiting one and signals the key. `key` is `name` open for writing. Returns
/// whether a lease was handed over (the current caller must then not take one).
pub fn hand_over(ctx: &Context, key: &mut WriteKey, name: &Arg, now: i64) -> bool {
    let line = line_of(ctx, name.as_slice());
    let Some(front) = with(|r| r.front(&line)) else {
        return false;
    };
    if !lock::lease_is_free(key.entry().as_deref(), now) {
        return false;
    }
    let ends = now.saturating_add(front.lease_ms);
    // With no id left the caller keeps waiting (and times out): nothing to hand over.
    let Ok(token) = lease::grant(ctx, key, name, now, ends) else {
        return false;
    };
    with(|r| {
        r.hand(&line, front.ticket, token);
        // Until that caller is served, and then for the next in line, the key matters again
        // when this lease ends.
        look_again(r, &line, ends, now);
    });
    stats::LOCKGET_HANDOVERS.incr();
    signal(ctx, name);
    true
}

/// Releases lease `token` on `name` (open for writing as `key`) when it is current, and
/// hands the key to the next caller in line. Whether it was released.
pub fn release_and_hand_over(
    ctx: &Context,
    key: &mut WriteKey,
    name: &Arg,
    token: u64,
    now: i64,
) -> bool {
    if !lease::release(ctx, key, name, token, now) {
        return false;
    }
    hand_over(ctx, key, name, now);
    true
}

/// A lease handed to a caller that left before hearing of it: release it for the next one.
pub fn release_orphan(ctx: &Context, name: &Arg, token: u64, now: i64) {
    if let Ok(mut key) = open_entry_writable(ctx, name) {
        release_and_hand_over(ctx, &mut key, name, token, now);
    }
}

/// Has `line` looked at `at`, and no later than `RECHECK_MS` from now.
fn look_again(r: &mut Registry, line: &LineKey, at: i64, now: i64) {
    r.check_at(line, at.min(now.saturating_add(RECHECK_MS)));
}

/// Looks at a waited key: a usable value wakes its callers, a free lease goes to the first in
/// line, a held one is looked at again when it ends.
pub fn check_line(ctx: &Context, name: &Arg, now: i64) {
    let line = line_of(ctx, name.as_slice());
    // Look first without writing: a key whose lease is held stays untouched.
    let (has_value, lease_ends) = match open_entry(ctx, name) {
        Ok(key) => {
            let entry = key.as_ref().map(|k| k.entry());
            let has_value = entry
                .as_ref()
                .is_some_and(|e| e.usable_value(now).is_some());
            let ends = entry
                .as_ref()
                .and_then(|e| e.active_lease(now))
                .map(|l| l.expires_ms);
            (has_value, ends)
        }
        // Another type took the key: the callers run to their timeout.
        Err(_) => (false, Some(now.saturating_add(RECHECK_MS))),
    };
    let next = match lease_ends {
        Some(ends) => ends,
        None if has_value => now.saturating_add(RECHECK_MS),
        None => {
            if let Ok(mut key) = open_entry_writable(ctx, name) {
                hand_over(ctx, &mut key, name, now);
            }
            return;
        }
    };
    with(|r| look_again(r, &line, next, now));
    if has_value {
        signal(ctx, name);
    }
}

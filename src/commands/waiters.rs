//! Callers parked by `CACHE.LOCKGET ... WAIT`: blocked inside Redis on their key (no polling),
//! woken by a fill, handed the lease one at a time when a lease ends unfilled.
//!
//! - A parked caller is a client blocked with `RedisModule_BlockClientOnKeys`. Whatever
//!   changes the key signals it (`RedisModule_SignalKeyAsReady`), and Redis calls
//!   `on_ready` for each client blocked on it, longest-waiting first.
//! - A fill wakes everyone with the value. A lease that ends without a fill (expiry,
//!   `CACHE.RELEASE`, a delete) is handed to the longest-waiting caller: `hand_over` grants
//!   it a lease, records the token on its ticket and signals the key; `on_ready` then answers
//!   that caller `MISS` with the token while the others see a held lease and keep waiting.
//! - Lease expiry and deletes by plain `DEL`/`UNLINK`/eviction are noticed by a timer that
//!   runs every `TICK_MS` while anybody waits, so a dead holder never strands the waiters.
//! - Redis forgets a client that disconnects or times out and frees its ticket
//!   (`free_ticket`), which takes it out of the line. A caller whose wait runs out just as it
//!   is handed the lease is answered `MISS` with it; one that disconnects first leaves an
//!   orphaned lease, which the timer releases and hands to the next in line.
//!
//! All of this runs on Redis's main thread.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context};

use super::args::Arg;
use super::{open_entry, open_entry_writable, read, reply};
use crate::core::lock::{self, Wake};
use crate::core::xfetch::Status;
use crate::stats;
use crate::storage::key::Key;
use crate::storage::{ids, lease, server};

/// How often lease expiry is checked while callers wait.
pub const TICK_MS: i64 = 10;

/// One parked caller, in its key's line.
struct Slot {
    ticket: u64,
    lease_ms: i64,
    /// The token of a lease handed to this caller, not yet answered.
    granted: Option<u64>,
}

#[derive(Default)]
struct Registry {
    next_ticket: u64,
    /// (db, key) -> callers in the order they parked.
    lines: HashMap<(i32, Vec<u8>), VecDeque<Slot>>,
    timer_armed: bool,
    parked: usize,
    /// Leases handed to callers that went away before being told: (db, key, token).
    orphans: Vec<(i32, Vec<u8>, u64)>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    REGISTRY.with(|r| f(&mut r.borrow_mut()))
}

impl Registry {
    /// The slot of caller `ticket` in the line of `(db, key)`.
    fn slot(&mut self, db: i32, key: &[u8], ticket: u64) -> Option<&mut Slot> {
        self.lines
            .get_mut(&(db, key.to_vec()))
            .and_then(|l| l.iter_mut().find(|s| s.ticket == ticket))
    }
}

/// What Redis keeps for a parked client (its private data).
struct Ticket {
    id: u64,
    db: i32,
    key: Vec<u8>,
}

/// Callers parked right now (INFO).
pub fn parked() -> usize {
    with(|r| r.parked)
}

pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: a live context.
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }
}

/// Whether callers are parked on `name` (in the selected db).
pub fn is_waited(ctx: &Context, name: &Arg) -> bool {
    let line_key = (selected_db(ctx), name.as_slice().to_vec());
    with(|r| r.lines.contains_key(&line_key))
}

/// Tells Redis the key changed: parked callers on it get to look.
pub fn signal(ctx: &Context, name: &Arg) {
    // SAFETY: a live context and key name; Redis returns at once when nobody waits.
    unsafe { raw::RedisModule_SignalKeyAsReady.unwrap()(ctx.ctx, name.raw()) };
}

/// Parks the caller on `name` for at most `wait_ms`. It will be answered by `on_ready`
/// (value or handed lease) or `on_timeout`.
pub fn park(ctx: &Context, name: &Arg, lease_ms: i64, wait_ms: i64) {
    let db = selected_db(ctx);
    let key = name.as_slice().to_vec();
    let id = with(|r| {
        r.next_ticket += 1;
        let id = r.next_ticket;
        r.lines
            .entry((db, key.clone()))
            .or_default()
            .push_back(Slot {
                ticket: id,
                lease_ms,
                granted: None,
            });
        r.parked += 1;
        id
    });
    let ticket = Box::into_raw(Box::new(Ticket { id, db, key }));
    let mut keys = [name.raw()];
    // SAFETY: callbacks match Redis's signatures; the ticket is freed by `free_ticket`.
    unsafe {
        raw::RedisModule_BlockClientOnKeys.unwrap()(
            ctx.ctx,
            Some(on_ready),
            Some(on_timeout),
            Some(free_ticket),
            wait_ms,
            keys.as_mut_ptr(),
            1,
            ticket.cast::<c_void>(),
        );
    }
    stats::LOCKGET_WAITS.incr();
    arm_timer(ctx);
}

/// If callers are parked on `name` and its lease is free, hands a new lease to the
/// longest-waiting one and signals the key. `key` is `name` open for writing. Returns
/// whether a lease was handed over (the current caller must then not take one).
pub fn hand_over(ctx: &Context, key: &Key, exists: bool, name: &Arg, now: i64) -> bool {
    let db = selected_db(ctx);
    let line_key = (db, name.as_slice().to_vec());
    let Some((ticket, lease_ms)) = with(|r| {
        r.lines
            .get(&line_key)
            .and_then(|l| l.front())
            .map(|s| (s.ticket, s.lease_ms))
    }) else {
        return false;
    };
    let entry = if exists { key.entry() } else { None };
    if !lock::lease_is_free(entry.as_deref(), now) {
        return false;
    }
    let token = lease::grant(ctx, key, exists, name, now, now.saturating_add(lease_ms));
    with(|r| {
        if let Some(slot) = r.slot(db, &line_key.1, ticket) {
            slot.granted = Some(token);
        }
    });
    stats::LOCKGET_HANDOVERS.incr();
    signal(ctx, name);
    true
}

fn granted_to(ticket: &Ticket) -> Option<u64> {
    with(|r| {
        r.slot(ticket.db, &ticket.key, ticket.id)
            .and_then(|s| s.granted)
    })
}

/// Answers a caller `MISS` with the lease it was handed. Once told, its lease is no longer
/// one for `free_ticket` to treat as orphaned.
fn answer_granted(ctx: &Context, ticket: &Ticket, token: u64) -> c_int {
    with(|r| {
        if let Some(slot) = r.slot(ticket.db, &ticket.key, ticket.id) {
            slot.granted = None;
        }
    });
    read::count(Status::Miss);
    reply::triple(ctx, None, Status::Miss, Some(token));
    raw::REDISMODULE_OK as c_int
}

fn ticket_of(ctx: &Context) -> Option<&Ticket> {
    // SAFETY: the private data of a client parked by `park` is its ticket, alive until
    // `free_ticket`.
    unsafe {
        raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx.ctx)
            .cast::<Ticket>()
            .as_ref()
    }
}

fn guarded(ctx: *mut raw::RedisModuleCtx, f: impl FnOnce(&Context) -> c_int) -> c_int {
    let context = Context::new(ctx);
    catch_unwind(AssertUnwindSafe(|| f(&context))).unwrap_or_else(|_| {
        context.reply_error_string("ERR internal error in the cache module");
        raw::REDISMODULE_OK as c_int
    })
}

/// The key of a parked caller was signalled: answer it, or keep it waiting.
extern "C" fn on_ready(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, |ctx| {
        // SAFETY: the arguments of the original LOCKGET call, kept by Redis while blocked.
        let args = unsafe { Arg::slice(argv, argc.max(0) as usize) };
        let (Some(name), Some(ticket)) = (args.get(1), ticket_of(ctx)) else {
            return raw::REDISMODULE_ERR as c_int;
        };
        let now = ids::now_ms();
        let Ok(key) = open_entry(ctx, name) else {
            return raw::REDISMODULE_ERR as c_int;
        };
        let entry = key.as_ref().and_then(|k| k.entry());
        match lock::on_wake(entry.as_deref(), now, granted_to(ticket)) {
            Wake::Value(status) => {
                stats::LOCKGET_WAKEUPS.incr();
                read::answer(ctx, entry.as_deref(), status, now);
                raw::REDISMODULE_OK as c_int
            }
            Wake::Granted(token) => answer_granted(ctx, ticket, token),
            Wake::KeepWaiting => raw::REDISMODULE_ERR as c_int,
        }
    })
}

/// `WAIT` ran out. A caller handed the lease just before (its key signalled but not yet
/// served) is answered `MISS` with it rather than leaving the lease to nobody.
extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    guarded(ctx, |ctx| {
        // SAFETY: the arguments of the original LOCKGET call.
        let args = unsafe { Arg::slice(argv, argc.max(0) as usize) };
        if let (Some(name), Some(ticket)) = (args.get(1), ticket_of(ctx)) {
            if let Some(token) = granted_to(ticket) {
                let now = ids::now_ms();
                let key = open_entry(ctx, name).ok().flatten();
                let entry = key.as_ref().and_then(|k| k.entry());
                if lock::on_wake(entry.as_deref(), now, Some(token)) == Wake::Granted(token) {
                    return answer_granted(ctx, ticket, token);
                }
            }
        }
        stats::LOCKGET_TIMEOUTS.incr();
        reply::triple(ctx, None, Status::Timeout, None);
        raw::REDISMODULE_OK as c_int
    })
}

/// Redis is done with a parked client (answered, timed out, disconnected): out of the line.
extern "C" fn free_ticket(ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if privdata.is_null() {
            return;
        }
        // SAFETY: made by `park` with Box::into_raw; Redis frees each ticket once.
        let ticket = unsafe { Box::from_raw(privdata.cast::<Ticket>()) };
        let orphaned = with(|r| {
            let line_key = (ticket.db, ticket.key);
            let mut orphaned = false;
            if let Some(line) = r.lines.get_mut(&line_key) {
                if let Some(token) = line
                    .iter()
                    .find(|s| s.ticket == ticket.id)
                    .and_then(|s| s.granted)
                {
                    r.orphans.push((line_key.0, line_key.1.clone(), token));
                    orphaned = true;
                }
                line.retain(|s| s.ticket != ticket.id);
                if line.is_empty() {
                    r.lines.remove(&line_key);
                }
            }
            r.parked = r.parked.saturating_sub(1);
            orphaned
        });
        if orphaned && !ctx.is_null() {
            arm_timer(&Context::new(ctx));
        }
    }));
}

fn arm_timer(ctx: &Context) {
    if with(|r| std::mem::replace(&mut r.timer_armed, true)) {
        return;
    }
    // SAFETY: a live context; the callback takes no data.
    unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx.ctx, TICK_MS, Some(tick), std::ptr::null_mut());
    }
}

/// While callers wait: hand over leases that ended without a fill (expired, or the key was
/// removed by a path that does not pass through the module's commands).
///
/// A hand-over writes (a new lease, maybe a new key), and a timer is not a command that Redis
/// has checked: while the server takes no writes (clients paused, a failover, a replica,
/// loading, OOM) the tick does nothing but come back later. Parked callers still get their
/// `TIMEOUT` from Redis at their deadline; the others are handed the lease after the pause.
extern "C" fn tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let ctx = Context::new(ctx);
        with(|r| r.timer_armed = false);
        if !server::accepts_unprompted_writes(&ctx) {
            if with(|r| !r.lines.is_empty() || !r.orphans.is_empty()) {
                arm_timer(&ctx);
            }
            return;
        }
        for (db, key, token) in with(|r| std::mem::take(&mut r.orphans)) {
            on_key(&ctx, db, &key, |ctx, name| release_orphan(ctx, name, token));
        }
        let lines: Vec<(i32, Vec<u8>)> = with(|r| r.lines.keys().cloned().collect());
        for (db, key) in lines {
            on_key(&ctx, db, &key, check_line);
        }
        if with(|r| !r.lines.is_empty()) {
            arm_timer(&ctx);
        }
    }));
}

/// Runs `f` on key `key` of database `db` from the timer's context.
fn on_key(ctx: &Context, db: i32, key: &[u8], f: impl FnOnce(&Context, &Arg)) {
    // SAFETY: a timer context has a client whose db can be selected; the string lives until
    // freed below.
    unsafe {
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db);
        let name = raw::RedisModule_CreateString.unwrap()(
            ctx.ctx,
            key.as_ptr().cast::<c_char>(),
            key.len(),
        );
        f(ctx, &Arg::from_raw(name));
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
    }
}

/// Releases lease `token` on `name` (open for writing as `key`) when it is current, and
/// hands the key to the next caller in line. Whether it was released.
pub fn release_and_hand_over(ctx: &Context, key: &Key, name: &Arg, token: u64, now: i64) -> bool {
    if !lease::release(ctx, key, name, token, now) {
        return false;
    }
    hand_over(ctx, key, !key.is_empty(), name, now);
    true
}

/// A lease handed to a caller that left before hearing of it: release it for the next one.
fn release_orphan(ctx: &Context, name: &Arg, token: u64) {
    if let Ok((key, true)) = open_entry_writable(ctx, name) {
        release_and_hand_over(ctx, &key, name, token, ids::now_ms());
    }
}

fn check_line(ctx: &Context, name: &Arg) {
    let now = ids::now_ms();
    // Look first without writing: a key whose lease is held stays untouched.
    let (has_value, free) = match open_entry(ctx, name) {
        Ok(key) => {
            let entry = key.as_ref().and_then(|k| k.entry());
            let has_value = entry
                .as_ref()
                .is_some_and(|e| e.usable_value(now).is_some());
            (has_value, lock::lease_is_free(entry.as_deref(), now))
        }
        Err(_) => return, // Another type took the key: the callers run to their timeout.
    };
    if has_value {
        signal(ctx, name);
    } else if free {
        if let Ok((key, exists)) = open_entry_writable(ctx, name) {
            hand_over(ctx, &key, exists, name, now);
        }
    }
}

//! Callers parked by `CACHE.LOCKGET ... WAIT`, on Redis's side: the blocked clients and the
//! `extern "C"` callbacks Redis calls for them, the timer that wakes up when a waited lease
//! ends, and the keyspace-event callback that notices a waited key deleted by a plain command.
//!
//! - A parked caller is a client blocked with `RedisModule_BlockClientOnKeys`. Whatever
//!   changes the key signals it (`RedisModule_SignalKeyAsReady`), and Redis calls `on_ready`
//!   for each client blocked on it, longest-waiting first.
//! - A fill wakes everyone with the value. A lease that ends without a fill (expiry,
//!   `CACHE.RELEASE`, a delete) is handed to the longest-waiting caller
//!   (`storage::handover`): it is granted a lease, its ticket records the token and the key
//!   is signalled; `on_ready` then answers that caller `MISS` with the token while the others
//!   see a held lease and keep waiting.
//! - Nothing polls: each line of callers has a deadline (when its lease ends), and one timer
//!   is armed for the earliest. A plain `DEL`/`UNLINK`, expiry, eviction or overwrite of a
//!   waited key fires a keyspace event that makes its line due at once; a flush or `SWAPDB`
//!   makes every line due. A line is looked at no later than `handover::RECHECK_MS` anyway.
//! - Redis forgets a client that disconnects or times out and frees its ticket
//!   (`free_ticket`), which takes it out of the line. A caller whose wait runs out just as it
//!   is handed the lease is answered `MISS` with it; one that disconnects first leaves an
//!   orphaned lease, which the timer releases and hands to the next in line.
//!
//! All of this runs on Redis's main thread.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};

use redis_module::{raw, Context};

use crate::core::lock::{self, Wake};
use crate::core::waiters::{LineKey, TicketId};
use crate::core::xfetch::Status;
use crate::guard;
use crate::reply::{self, read};
use crate::stats;
use crate::storage::arg::Arg;
use crate::storage::key::open_entry;
use crate::storage::{handover, ids, server};

use super::on_key;

/// How soon the timer tries again while the server takes no writes.
const RETRY_MS: i64 = 10;

/// The armed timer and the instant it fires at.
#[derive(Clone, Copy)]
struct Armed {
    id: raw::RedisModuleTimerID,
    at_ms: i64,
}

thread_local! {
    static TIMER: Cell<Option<Armed>> = const { Cell::new(None) };
}

/// What Redis keeps for a parked client (its private data).
struct Ticket {
    id: TicketId,
    line: LineKey,
}

/// Parks the caller on `name` for at most `wait_ms`, in line behind those already there; the
/// key's current lease ends at `lease_ends_ms`. It will be answered by `on_ready` (value or
/// handed lease) or `on_timeout`.
pub fn park(ctx: &Context, name: &Arg, lease_ms: i64, wait_ms: i64, lease_ends_ms: i64) {
    let line = handover::line_of(ctx, name.as_slice());
    let id = handover::with(|r| r.park(line.clone(), lease_ms, lease_ends_ms));
    let ticket = Box::into_raw(Box::new(Ticket { id, line }));
    let mut keys = [name.raw()];
    // SAFETY: a live command context that may block (the caller checked DENY_BLOCKING); the
    // callbacks have Redis's signatures; the ticket is freed once, by `free_ticket`.
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
    arm(ctx, lease_ends_ms);
}

/// Makes sure the timer fires no later than `at_ms`.
fn arm(ctx: &Context, at_ms: i64) {
    if let Some(armed) = TIMER.get() {
        if armed.at_ms <= at_ms {
            return;
        }
        // SAFETY: a live context; the id is of a timer of ours that has not fired (it clears
        // TIMER when it does). Its data is null, so nothing is to be freed.
        unsafe {
            raw::RedisModule_StopTimer.unwrap()(ctx.ctx, armed.id, std::ptr::null_mut());
        }
    }
    let now = ids::now_ms();
    let delay = at_ms.saturating_sub(now).clamp(1, handover::RECHECK_MS);
    // SAFETY: a live context; the callback takes no data.
    let id = unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx.ctx, delay, Some(tick), std::ptr::null_mut())
    };
    TIMER.set(Some(Armed {
        id,
        at_ms: now.saturating_add(delay),
    }));
}

/// Re-arms for the earliest due line, if anybody waits.
fn rearm(ctx: &Context) {
    if let Some(at) = handover::with(|r| r.next_due()) {
        arm(ctx, at);
    }
}

fn granted_to(ticket: &Ticket) -> Option<u64> {
    handover::with(|r| r.granted(&ticket.line, ticket.id))
}

/// Answers a caller `MISS` with the lease it was handed. Once told, its lease is no longer
/// one for `free_ticket` to treat as orphaned.
fn answer_granted(ctx: &Context, ticket: &Ticket, token: u64) -> c_int {
    handover::with(|r| r.told(&ticket.line, ticket.id));
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

/// A reply callback's guard: a panic answers an error instead of unwinding into Redis.
fn answering(ctx: *mut raw::RedisModuleCtx, f: impl FnOnce(&Context) -> c_int) -> c_int {
    let context = Context::new(ctx);
    guard::catch(
        || f(&context),
        || {
            context.reply_error_string("ERR internal error in the cache module");
            raw::REDISMODULE_OK as c_int
        },
    )
}

/// The key of a parked caller was signalled: answer it, or keep it waiting.
extern "C" fn on_ready(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    answering(ctx, |ctx| {
        // SAFETY: the arguments of the original LOCKGET call, kept by Redis while blocked.
        let args = unsafe { Arg::slice(argv, argc.max(0) as usize) };
        let (Some(name), Some(ticket)) = (args.get(1), ticket_of(ctx)) else {
            return raw::REDISMODULE_ERR as c_int;
        };
        let now = ids::now_ms();
        let Ok(key) = open_entry(ctx, name) else {
            return raw::REDISMODULE_ERR as c_int;
        };
        let entry = key.as_ref().map(|k| k.entry());
        match lock::on_wake(entry, now, granted_to(ticket)) {
            Wake::Value(status) => {
                stats::LOCKGET_WAKEUPS.incr();
                read::answer(ctx, entry, status, now);
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
    answering(ctx, |ctx| {
        // SAFETY: the arguments of the original LOCKGET call.
        let args = unsafe { Arg::slice(argv, argc.max(0) as usize) };
        if let (Some(name), Some(ticket)) = (args.get(1), ticket_of(ctx)) {
            if let Some(token) = granted_to(ticket) {
                let now = ids::now_ms();
                let key = open_entry(ctx, name).ok().flatten();
                let entry = key.as_ref().map(|k| k.entry());
                if lock::on_wake(entry, now, Some(token)) == Wake::Granted(token) {
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
    guard::catch(
        || {
            if privdata.is_null() {
                return;
            }
            // SAFETY: made by `park` with Box::into_raw; Redis frees each ticket once.
            let ticket = unsafe { Box::from_raw(privdata.cast::<Ticket>()) };
            let orphaned = handover::with(|r| r.leave(&ticket.line, ticket.id)).is_some();
            if orphaned && !ctx.is_null() {
                arm(&Context::new(ctx), i64::MIN);
            }
        },
        || (),
    )
}

/// A waited line is due: its lease ended, or something may have ended it. Hands over leases
/// that ended without a fill, releases orphans, and re-arms for the next due line.
///
/// A hand-over writes (a new lease, maybe a new key), and a timer is not a command that Redis
/// has checked: while the server takes no writes (clients paused, a failover, a replica,
/// loading, OOM) the tick does nothing but come back later. Parked callers still get their
/// `TIMEOUT` from Redis at their deadline; the others are handed the lease after the pause.
extern "C" fn tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            TIMER.set(None);
            if handover::with(|r| r.is_empty()) {
                return;
            }
            if !server::accepts_unprompted_writes(&ctx) {
                arm(&ctx, ids::now_ms().saturating_add(RETRY_MS));
                return;
            }
            let now = ids::now_ms();
            for (line, token) in handover::with(|r| r.take_orphans()) {
                on_key(&ctx, &line, |ctx, name| {
                    handover::release_orphan(ctx, name, token, now)
                });
            }
            for line in handover::with(|r| r.due(now)) {
                on_key(&ctx, &line, |ctx, name| {
                    handover::check_line(ctx, name, now)
                });
            }
            rearm(&ctx);
        },
        || (),
    )
}

/// A generic, expiry or eviction event on `name`: one on a waited key (a plain `DEL`, expiry,
/// eviction, a rename away) may have ended its lease, so its line is due now (after a
/// `CACHE.DEL`, which has handed over already, the look finds the new lease held and changes
/// nothing). Nothing is written here (7.0 forbids it in a notification); the timer does the
/// work.
pub fn on_key_event(ctx: &Context, name: &Arg) {
    if handover::with(|r| r.is_empty()) {
        return;
    }
    let line = handover::line_of(ctx, name.as_slice());
    if handover::with(|r| {
        let waited = r.is_waited(&line);
        if waited {
            r.check_now(&line);
        }
        waited
    }) {
        arm(ctx, i64::MIN);
    }
}

/// A flush, `SWAPDB` or a tag invalidation changes keys without a keyspace event each: every
/// line is due (a parked caller on an invalidated key is handed it at once, as after a delete,
/// not when the removal's walk comes by).
pub fn every_line_due(ctx: &Context) {
    if handover::with(|r| {
        r.check_all_now();
        !r.is_empty()
    }) {
        arm(ctx, i64::MIN);
    }
}

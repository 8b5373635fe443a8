//! Cluster-wide `CACHE.TAGINVALIDATE` on Redis's side: the cluster bus receiver, the caller
//! blocked until every other primary confirms, and the timer that resends to the silent ones
//! and answers the caller when its wait runs out. The pure part (messages, the record of what
//! is confirmed, what was applied) is `core::spread`.
//!
//! - The node a client asks applies the invalidation itself, sends it to every other primary
//!   and blocks the caller (`RedisModule_BlockClient`, no Redis timeout: the timer here ends
//!   the wait, so `CLIENT UNBLOCK` cannot cut it short with a wrong answer).
//! - A primary that receives it applies it once (by the invalidation's id: origin node and
//!   its id clock), replicates what it applied, and confirms with its count; a resend or a
//!   duplicate is confirmed with the same count and applies nothing.
//! - Once every primary has confirmed, the caller gets the cluster total. At
//!   `cache.tag-timeout-ms` it gets `-TIMEOUT` naming the primaries that did not, and the
//!   invalidation stays here, resent every `RESEND_MS` until they confirm or stop being
//!   primaries. The record follows failovers: a replica promoted meanwhile is sent it too.
//! - Inside MULTI or a script nothing may block: the call answers this node's count and the
//!   others are confirmed in the background the same way.
//!
//! The records live on this node only: if it restarts, nobody resends an unconfirmed
//! invalidation (the caller was told `-TIMEOUT`; calling again is safe).
//!
//! All of this runs on Redis's main thread.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::raw::{c_char, c_int, c_void};

use redis_module::{raw, Context, ContextFlags, RedisResult, RedisValue};

use crate::config;
use crate::core::spread::{Applied, Message, Outstanding, Progress, SpreadId};
use crate::error::CacheError;
use crate::guard;
use crate::stats;
use crate::storage::bus::{self, NodeId};
use crate::storage::{ids, server};

use super::invalidation;

/// How often an unconfirmed invalidation is sent again.
pub const RESEND_MS: i64 = 100;
/// Unconfirmed invalidations kept for resending, at most (the oldest without a waiting
/// caller go first): a primary gone for good must not grow this without bound.
const MAX_RECORDS: usize = 10_000;
/// Invalidations from other primaries remembered, so that a resend applies nothing.
const APPLIED_CAPACITY: usize = 100_000;
/// How often the cluster bus links are looked at for Nagle's algorithm
/// (`bus::no_delay_on_bus_links`) while invalidations flow: links are made again after a
/// node restarts or a link drops.
const NO_DELAY_EVERY_MS: i64 = 60_000;
/// A confirmation slower than this makes the links be looked at again sooner (at most once a
/// second): a loopback or LAN round trip is well under it, a delayed ACK well over.
const SLOW_CONFIRM_MS: i64 = 20;

/// A caller waiting for the cluster's confirmations.
struct Caller {
    client: *mut raw::RedisModuleBlockedClient,
    deadline_ms: i64,
}

/// An invalidation this node started, until every primary confirmed.
struct Record {
    message: Vec<u8>,
    outstanding: Outstanding,
    caller: Option<Caller>,
}

/// What a blocked caller is answered (its private data once unblocked).
enum Answer {
    Total(u64),
    Timeout(CacheError),
}

struct State {
    records: BTreeMap<u64, Record>,
    applied: Applied,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        records: BTreeMap::new(),
        applied: Applied::new(APPLIED_CAPACITY),
    });
    /// The armed timer and when it fires.
    static TIMER: Cell<Option<(raw::RedisModuleTimerID, i64)>> = const { Cell::new(None) };
    /// When the cluster bus links were last looked at for Nagle's algorithm.
    static NO_DELAY_AT: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Turns Nagle's algorithm off on the links to the other nodes, unless that was done within
/// `every_ms` (see `bus::no_delay_on_bus_links` for why).
fn no_delay_on_links(ctx: &Context, now: i64, every_ms: i64) {
    if NO_DELAY_AT.get().is_some_and(|at| now - at < every_ms) {
        return;
    }
    NO_DELAY_AT.set(Some(now));
    let n = bus::no_delay_on_bus_links(ctx);
    if n > 0 {
        ctx.log_notice(&format!(
            "TCP_NODELAY set on {n} cluster bus link(s) this node opened, so that cluster-wide invalidations are not held by Nagle's algorithm"
        ));
    }
}

/// Listens for the other primaries' messages (a no-op outside cluster mode).
pub fn listen(ctx: &Context) {
    bus::listen(ctx, on_message);
}

/// How many invalidations started here are not yet confirmed by every primary.
pub fn unconfirmed() -> usize {
    STATE.with_borrow(|s| s.records.len())
}

/// A replica (or the AOF) applied invalidation `id` of another primary's with `count`.
pub fn remember(id: &SpreadId, count: u64) {
    STATE.with_borrow_mut(|s| s.applied.record(id, count));
}

/// After `CACHE.TAGINVALIDATE` applied its invalidation `seq` here (counting `local`
/// entries): sends it to every other primary and answers once they confirmed. Outside
/// cluster mode, or with no other primary, the answer is `local` at once.
pub fn spread(ctx: &Context, db: i32, tags: &[&[u8]], seq: u64, local: u64) -> RedisResult {
    let (true, Some(me)) = (bus::in_cluster(ctx), bus::my_id()) else {
        return Ok(RedisValue::Integer(local as i64));
    };
    let others: Vec<Vec<u8>> = bus::other_primaries(ctx)
        .iter()
        .map(|n| n.bytes().to_vec())
        .collect();
    if others.is_empty() {
        return Ok(RedisValue::Integer(local as i64));
    }
    let message = Message::Invalidate {
        id: SpreadId {
            origin: me.bytes().to_vec(),
            seq,
        },
        db,
        tags: tags.iter().map(|t| t.to_vec()).collect(),
    }
    .encode();
    let now = ids::now_ms();
    no_delay_on_links(ctx, now, NO_DELAY_EVERY_MS);
    for n in &others {
        send(ctx, n, &message);
    }
    stats::TAG_SPREAD_STARTED.incr();
    let may_block = !ctx.get_flags().contains(ContextFlags::DENY_BLOCKING);
    let caller = may_block.then(|| Caller {
        // SAFETY: a live command context that may block (checked just above); the reply
        // callback and the free function have Redis's signatures; no Redis timeout (0), the
        // timer ends the wait; each handle is unblocked exactly once (`finish`).
        client: unsafe {
            raw::RedisModule_BlockClient.unwrap()(
                ctx.ctx,
                Some(on_reply),
                None,
                Some(free_answer),
                0,
            )
        },
        deadline_ms: now.saturating_add(config::tag_timeout_ms()),
    });
    let answer_now = caller.is_none();
    let record = Record {
        message,
        outstanding: Outstanding::new(local, &others, now, RESEND_MS),
        caller,
    };
    STATE.with_borrow_mut(|s| {
        s.records.insert(seq, record);
        trim(&mut s.records);
    });
    arm(ctx);
    if answer_now {
        Ok(RedisValue::Integer(local as i64))
    } else {
        Ok(RedisValue::NoReply)
    }
}

fn send(ctx: &Context, to: &[u8], message: &[u8]) {
    if let Some(id) = NodeId::from_bytes(to) {
        bus::send(ctx, &id, message);
    }
}

/// Drops the oldest records nobody waits for, past `MAX_RECORDS`.
fn trim(records: &mut BTreeMap<u64, Record>) {
    while records.len() > MAX_RECORDS {
        let Some(seq) = records
            .iter()
            .find(|(_, r)| r.caller.is_none())
            .map(|(s, _)| *s)
        else {
            return;
        };
        records.remove(&seq);
    }
}

/// Whether this node applies what other primaries send now. A replica gets invalidations
/// from its primary; while loading or while writes are paused (a failover under way) it is
/// not the time; the sender resends.
fn may_apply(ctx: &Context) -> bool {
    // SAFETY: a plain query of server state, valid on the main thread at any time.
    let paused = unsafe { raw::RedisModule_AvoidReplicaTraffic.map_or(0, |f| f()) } != 0;
    let refused = ContextFlags::SLAVE | ContextFlags::LOADING | ContextFlags::ASYNC_LOADING;
    !paused && !ctx.get_flags().intersects(refused)
}

/// A message from another node of the cluster.
///
/// # Safety
/// Called by Redis with its receiver's arguments: the sender's 40-byte id and `len` bytes.
unsafe extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender: *const c_char,
    _kind: u8,
    payload: *const u8,
    len: u32,
) {
    // SAFETY: Redis's promise, above.
    let (sender, payload) = unsafe {
        (
            bus::sender(sender),
            std::slice::from_raw_parts(payload, len as usize),
        )
    };
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            match Message::decode(payload) {
                Some(Message::Invalidate { id, db, tags }) => {
                    on_invalidate(&ctx, &sender, &id, db, &tags)
                }
                Some(Message::Confirm { id, count }) => on_confirm(&ctx, &sender, &id, count),
                None => ctx.log_warning("cache: an undecodable cluster message was dropped"),
            }
        },
        || (),
    );
}

fn on_invalidate(ctx: &Context, sender: &NodeId, id: &SpreadId, db: i32, tags: &[Vec<u8>]) {
    if !may_apply(ctx) {
        return;
    }
    // The confirmation leaves on a link this node opened.
    no_delay_on_links(ctx, ids::now_ms(), NO_DELAY_EVERY_MS);
    let count = match STATE.with_borrow(|s| s.applied.get(id)) {
        Some(count) => count,
        None => {
            if !server::select_db(ctx, db) {
                return;
            }
            let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
            let Ok((_, n)) = invalidation::apply_new(ctx, db, &tags, Some(id)) else {
                return;
            };
            stats::TAG_SPREAD_APPLIED.incr();
            remember(id, n as u64);
            n as u64
        }
    };
    let confirm = Message::Confirm {
        id: id.clone(),
        count,
    };
    bus::send(ctx, sender, &confirm.encode());
}

fn on_confirm(ctx: &Context, sender: &NodeId, id: &SpreadId, count: u64) {
    if bus::my_id().is_none_or(|me| me.bytes() != id.origin.as_slice()) {
        return;
    }
    let done = STATE.with_borrow_mut(|s| {
        let r = s.records.get_mut(&id.seq)?;
        r.outstanding.confirm(sender.bytes(), count);
        let now = ids::now_ms();
        if now - r.outstanding.started_ms() > SLOW_CONFIRM_MS {
            no_delay_on_links(ctx, now, 1_000);
        }
        let Progress::Done(total) = r.outstanding.progress() else {
            return None;
        };
        let r = s.records.remove(&id.seq)?;
        Some((r.caller, total))
    });
    if let Some((Some(caller), total)) = done {
        finish(caller, Answer::Total(total));
    }
}

/// Ends a caller's wait with `answer` (also when the client is gone: Redis then frees the
/// handle without calling back).
fn finish(caller: Caller, answer: Answer) {
    let data = Box::into_raw(Box::new(answer));
    // SAFETY: a handle from RedisModule_BlockClient not unblocked before (the record gave it
    // up); the data is freed by `free_answer`.
    unsafe { raw::RedisModule_UnblockClient.unwrap()(caller.client, data.cast::<c_void>()) };
}

/// Makes sure the timer fires by the earliest resend or caller deadline.
fn arm(ctx: &Context) {
    let Some(at) = STATE.with_borrow(|s| {
        s.records
            .values()
            .map(|r| {
                let deadline = r.caller.as_ref().map_or(i64::MAX, |c| c.deadline_ms);
                r.outstanding.next_send_ms().min(deadline)
            })
            .min()
    }) else {
        return;
    };
    if let Some((id, armed_at)) = TIMER.get() {
        if armed_at <= at {
            return;
        }
        // SAFETY: a timer of ours that has not fired (it clears TIMER when it does); its data
        // is null, so nothing is to be freed.
        unsafe { raw::RedisModule_StopTimer.unwrap()(ctx.ctx, id, std::ptr::null_mut()) };
    }
    let now = ids::now_ms();
    let delay = at.saturating_sub(now).clamp(1, RESEND_MS);
    // SAFETY: a live context; the callback takes no data.
    let id = unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx.ctx, delay, Some(tick), std::ptr::null_mut())
    };
    TIMER.set(Some((id, now.saturating_add(delay))));
}

extern "C" fn tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            TIMER.set(None);
            resend_and_answer(&ctx);
            arm(&ctx);
        },
        || (),
    );
}

/// Follows the primaries, resends what is due, and answers callers whose cluster has
/// confirmed or whose wait has run out.
fn resend_and_answer(ctx: &Context) {
    let now = ids::now_ms();
    let primaries: Vec<Vec<u8>> = bus::other_primaries(ctx)
        .iter()
        .map(|n| n.bytes().to_vec())
        .collect();
    let mut sends: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut done: Vec<(Caller, u64)> = Vec::new();
    let mut late: Vec<(Caller, Vec<Vec<u8>>, usize)> = Vec::new();
    STATE.with_borrow_mut(|s| {
        for r in s.records.values_mut() {
            let mut to = r.outstanding.follow_primaries(&primaries);
            for n in r.outstanding.due_resends(now) {
                if !to.contains(&n) {
                    to.push(n);
                }
            }
            sends.extend(to.into_iter().map(|n| (n, r.message.clone())));
            match r.outstanding.progress() {
                Progress::Done(total) => {
                    if let Some(c) = r.caller.take() {
                        done.push((c, total));
                    }
                }
                Progress::Waiting(silent) => {
                    if r.caller.as_ref().is_some_and(|c| c.deadline_ms <= now) {
                        let of = r.outstanding.primaries();
                        late.extend(r.caller.take().map(|c| (c, silent, of)));
                    }
                }
            }
        }
        s.records
            .retain(|_, r| !matches!(r.outstanding.progress(), Progress::Done(_)));
    });
    for (to, message) in sends {
        send(ctx, &to, &message);
    }
    for (caller, total) in done {
        finish(caller, Answer::Total(total));
    }
    for (caller, silent, of) in late {
        stats::TAG_SPREAD_TIMEOUTS.incr();
        let silent: Vec<String> = silent
            .iter()
            .filter_map(|n| NodeId::from_bytes(n))
            .map(|n| bus::label(ctx, &n))
            .collect();
        let error = CacheError::SpreadTimeout {
            ms: config::tag_timeout_ms(),
            silent,
            of,
        };
        finish(caller, Answer::Timeout(error));
    }
}

/// Answers an unblocked caller.
extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    guard::catch(
        || {
            // SAFETY: the private data of an unblocked caller is its Answer (`finish`), alive
            // until `free_answer`.
            let answer = unsafe {
                raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx)
                    .cast::<Answer>()
                    .as_ref()
            };
            match answer {
                Some(Answer::Total(n)) => context.reply(Ok(RedisValue::Integer(*n as i64))),
                Some(Answer::Timeout(e)) => context.reply_error_string(&e.to_string()),
                None => context.reply_error_string(&CacheError::Internal.to_string()),
            };
        },
        || {
            context.reply_error_string(&CacheError::Internal.to_string());
        },
    );
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_answer(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: made by Box::into_raw in `finish`, freed once, here.
        drop(unsafe { Box::from_raw(data.cast::<Answer>()) });
    }
}

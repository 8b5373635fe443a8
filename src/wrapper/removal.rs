//! Removing entries that `CACHE.TAGINVALIDATE` invalidated, in bounded slices from a timer:
//! the invalidation is visible at once (reads find the entries absent), the physical work
//! never stalls the server whatever the tag's size. Each removal is a delete like any other:
//! replicated as `DEL`, seen by `CLIENT TRACKING`, handing the key to parked `LOCKGET` callers.
//!
//! The queue is per server and rebuilt from the keyspace after a load, so a restart or a
//! promoted replica finishes what was left. A replica keeps its queue and waits: its
//! primary's `DEL`s do the work, and should it be promoted, its own timer does.

use std::cell::Cell;
use std::os::raw::c_void;

use redis_module::{raw, Context};

use super::{arm_once, on_key};
use crate::core::waiters::LineKey;
use crate::guard;
use crate::storage::key::open_entry_writable;
use crate::storage::{handover, ids, server, tagindex};

/// Entries removed per tick: about a millisecond of work.
const SLICE: usize = 1000;
/// How long the timer waits before trying again while the server takes no writes.
const RETRY_MS: i64 = 100;
/// The longest wait between two looks at invalidations left to drop.
const MAX_WAIT_MS: i64 = 1000;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Makes sure the removal timer runs soon (after an invalidation, or a load that left
/// invalidated entries).
pub fn arm(ctx: &Context) {
    arm_in(ctx, 0);
}

fn arm_in(ctx: &Context, delay_ms: i64) {
    arm_once(&ARMED, ctx, delay_ms, tick);
}

extern "C" fn tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            ARMED.set(false);
            let (pending, tombs) = tagindex::with(|ix| (ix.pending_removal(), ix.has_tombs()));
            if pending == 0 && !tombs {
                return;
            }
            if !server::accepts_unprompted_writes(&ctx) {
                arm_in(&ctx, RETRY_MS);
                return;
            }
            let now = ids::now_ms();
            for (db, key) in tagindex::with(|ix| ix.take_pending(SLICE)) {
                let line = LineKey {
                    db,
                    key: key.into_vec(),
                };
                on_key(&ctx, &line, |ctx, name| {
                    // Opening it for writing removes it when it is still invalidated (an
                    // entry written since is left alone).
                    let Ok(mut key) = open_entry_writable(ctx, name) else {
                        return;
                    };
                    if handover::is_waited(ctx, name) {
                        handover::hand_over(ctx, &mut key, name, now);
                    }
                });
            }
            match tagindex::with(|ix| (ix.pending_removal(), ix.drop_tombs(now))) {
                (0, None) => {}
                (0, Some(at)) => arm_in(&ctx, (at - now).clamp(1, MAX_WAIT_MS)),
                // More to remove: the next slice after the clients have been served.
                _ => arm_in(&ctx, 0),
            }
        },
        || (),
    )
}

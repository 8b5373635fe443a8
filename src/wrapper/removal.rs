//! Removing entries that `CACHE.TAGINVALIDATE` invalidated, in bounded slices from a timer:
//! the invalidation is visible at once (reads find the entries absent), the physical work
//! never stalls the server whatever the tag's size. Each removal is a delete like any other:
//! replicated as `DEL`, seen by `CLIENT TRACKING`, handing the key to parked `LOCKGET` callers.
//!
//! The tag index keeps no list of an invalidation's entries (it counts; see `core::tags`), so
//! the removal finds them by walking the databases that have invalidations in force, a slice
//! of keys per tick, as Redis's own active expiry walks for expired keys. One walk serves every
//! invalidation made before it began; an invalidation is dropped once such a walk has ended
//! and its leases have run out. A restart or a promoted replica walks again (the rebuild after
//! a load asks for it). A replica does not walk: its primary's `DEL`s do the work, and should
//! it be promoted, its own timer does.

use std::cell::{Cell, RefCell};
use std::os::raw::c_void;
use std::time::{Duration, Instant};

use redis_module::{raw, Context};

use super::walk::{self, Cursor};
use super::{arm_once, on_key};
use crate::core::waiters::LineKey;
use crate::guard;
use crate::storage::key::open_entry_writable;
use crate::storage::{handover, ids, server, tagindex};

/// How long one tick works: removals (each a delete, replicated, notified, seen by `CLIENT
/// TRACKING`) and the walk that finds them share it, and other clients are served between.
const TICK_BUDGET: Duration = Duration::from_micros(1500);
/// Keys one step of the walk looks at before the budget is checked again.
const KEYS_PER_STEP: usize = 500;
/// How long the timer waits before trying again while the server takes no writes.
const RETRY_MS: i64 = 100;
/// The longest wait between two looks at invalidations left to drop.
const MAX_WAIT_MS: i64 = 1000;

/// A walk in progress: its number, the databases it visits, where it is, and the invalidated
/// entries it found and has not removed yet.
struct Walk {
    number: u64,
    dbs: Vec<i32>,
    at: usize,
    cursor: Cursor,
    found: Vec<LineKey>,
}

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static WALK: RefCell<Option<Walk>> = const { RefCell::new(None) };
}

/// Makes sure the removal timer runs soon (after an invalidation, or a load that left
/// invalidated entries).
pub fn arm(ctx: &Context) {
    // Not 0: a timer due now runs before the reply of the command that armed it is written.
    arm_in(ctx, 1);
}

fn arm_in(ctx: &Context, delay_ms: i64) {
    arm_once(&ARMED, ctx, delay_ms, tick);
}

extern "C" fn tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            ARMED.set(false);
            let now = ids::now_ms();
            let walking = WALK.with(|w| w.borrow().is_some());
            if !walking && !tagindex::with(|ix| ix.walk_needed()) {
                if let Some(at) = tagindex::with(|ix| ix.drop_tombs(now)) {
                    arm_in(&ctx, (at - now).clamp(1, MAX_WAIT_MS));
                }
                return;
            }
            if !server::accepts_unprompted_writes(&ctx) {
                arm_in(&ctx, RETRY_MS);
                return;
            }
            let mut current = WALK
                .with(|w| w.borrow_mut().take())
                .unwrap_or_else(|| Walk {
                    number: tagindex::with(|ix| ix.walk_begins()),
                    dbs: tagindex::with(|ix| ix.tombed_dbs()),
                    at: 0,
                    cursor: Cursor::new(),
                    found: Vec::new(),
                });
            let started = Instant::now();
            while started.elapsed() < TICK_BUDGET {
                match current.found.pop() {
                    Some(line) => remove(&ctx, &line, now),
                    None if current.at < current.dbs.len() => walk_step(&ctx, &mut current),
                    None => break,
                }
            }
            if current.at >= current.dbs.len() && current.found.is_empty() {
                tagindex::with(|ix| ix.walk_ended(current.number));
            } else {
                WALK.with(|w| *w.borrow_mut() = Some(current));
            }
            // Go on (or drop what the walk made droppable) after the clients have been served.
            arm_in(&ctx, 0);
        },
        || (),
    )
}

/// Removes the entry `line` names if it is still invalidated (an entry written since is left
/// alone), handing the key to callers parked on it.
fn remove(ctx: &Context, line: &LineKey, now: i64) {
    on_key(ctx, line, |ctx, name| {
        // Opening it for writing removes it when it is still invalidated.
        let Ok(mut key) = open_entry_writable(ctx, name) else {
            return;
        };
        if handover::is_waited(ctx, name) {
            handover::hand_over(ctx, &mut key, name, now);
        }
    });
}

/// Walks a step on from where `walk` is, keeping the invalidated entries it meets.
fn walk_step(ctx: &Context, walk: &mut Walk) {
    let mut seen = 0;
    while seen < KEYS_PER_STEP && walk.at < walk.dbs.len() {
        let db = walk.dbs[walk.at];
        let found = &mut walk.found;
        let more = server::select_db(ctx, db) && {
            let mut each = |name: &[u8], entry: &mut crate::core::entry::Entry| {
                if tagindex::invalidated(|| db, entry) {
                    found.push(LineKey {
                        db,
                        key: name.to_vec(),
                    });
                }
            };
            let (keys, more) = walk::step(ctx, &walk.cursor, &mut each);
            seen += keys.max(1);
            more
        };
        if !more {
            walk.at += 1;
            walk.cursor = Cursor::new();
        }
    }
}

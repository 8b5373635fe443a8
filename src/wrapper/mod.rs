//! `extern "C"` callbacks Redis calls outside a command's own handler, apart from the logic
//! they call into: the blocked clients of `CACHE.LOCKGET ... WAIT`, their timer, and the
//! keyspace and server events (which feed the waiters and the landings of `COPY`, `RENAME`,
//! `MOVE` and `RESTORE`).

pub mod blocked;
pub mod invalidation;
pub mod keyspace;
pub mod rebuild;
pub mod removal;
pub mod spread;
pub mod walk;

use std::cell::Cell;
use std::os::raw::c_void;
use std::thread::LocalKey;

use redis_module::{raw, Context};

use crate::core::waiters::LineKey;
use crate::storage::arg::{with_name, Arg};
use crate::storage::server;

/// Runs `f` on the key `line` names, from a timer's context (whose database it selects).
fn on_key(ctx: &Context, line: &LineKey, f: impl FnOnce(&Context, &Arg)) {
    server::select_db(ctx, line.db);
    with_name(ctx, &line.key, |name| f(ctx, name));
}

/// Arms the one-shot timer `tick` in `delay_ms` unless `armed` says it is armed already;
/// `tick` clears `armed` when it runs.
fn arm_once(
    armed: &'static LocalKey<Cell<bool>>,
    ctx: &Context,
    delay_ms: i64,
    tick: extern "C" fn(*mut raw::RedisModuleCtx, *mut c_void),
) {
    if armed.get() {
        return;
    }
    // SAFETY: a live context; the callback takes no data.
    unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx.ctx, delay_ms, Some(tick), std::ptr::null_mut());
    }
    armed.set(true);
}

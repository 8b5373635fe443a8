//! `extern "C"` callbacks Redis calls outside a command's own handler, apart from the logic
//! they call into: the blocked clients of `CACHE.LOCKGET ... WAIT`, their timer, and the
//! keyspace and server events (which feed the waiters and the landings of `COPY`, `RENAME`,
//! `MOVE` and `RESTORE`).

pub mod blocked;
pub mod keyspace;
pub mod rebuild;
pub mod removal;

use std::os::raw::c_char;

use redis_module::{raw, Context};

use crate::core::waiters::LineKey;
use crate::storage::arg::Arg;

/// Runs `f` on the key `line` names, from a timer's context (whose database it selects).
fn on_key(ctx: &Context, line: &LineKey, f: impl FnOnce(&Context, &Arg)) {
    // SAFETY: a timer context has a client whose db can be selected; the string lives until
    // freed below and `f` cannot keep it.
    unsafe {
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, line.db);
        let name = raw::RedisModule_CreateString.unwrap()(
            ctx.ctx,
            line.key.as_ptr().cast::<c_char>(),
            line.key.len(),
        );
        f(ctx, &Arg::from_raw(name));
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
    }
}

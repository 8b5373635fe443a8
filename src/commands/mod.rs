//! Command handlers: parse arguments into a typed request, make one decision in the core,
//! store and replicate its effect, reply. Each file reads like its section of docs/commands.md.
//!
//! Every command is one row of `table.rs` (flags, key specs, docs), registered by
//! `register.rs` with the raw API rather than through `redis_module!`: its dispatcher copies
//! argv into a `Vec` of reference-counted strings on every call, which costs the read paths a
//! measurable share of native `GET` speed. Each row's entry point calls `dispatch` directly.

pub mod apply;
pub mod args;
#[cfg(any(test, feature = "fuzzing"))]
pub mod check;
pub mod del;
pub mod get;
pub mod getx;
pub mod inspect;
pub mod lockget;
#[cfg(test)]
mod props;
pub mod read;
pub mod register;
pub mod release;
pub mod set;
pub mod spec;
pub mod tags;
pub mod writebehind;

use std::os::raw::c_int;

use redis_module::{raw, Context, RedisResult, RedisValue, Status};

use crate::error::CacheError;
use crate::storage::arg::Arg;
use crate::storage::landing;
use crate::{guard, reply};

pub type Handler = fn(&Context, &[Arg]) -> RedisResult;

/// Runs a handler and sends its reply. A panic must never unwind into Redis: it becomes an
/// error reply, unless the handler had already begun its own reply (then nothing is added).
pub(crate) fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: Redis hands us argc live strings for the duration of the call.
    let args = unsafe { Arg::slice(argv, argc.max(0) as usize) };
    reply::begun();
    let result = guard::catch(
        || {
            // An entry COPY, RENAME, MOVE or RESTORE put here gets its fresh version before
            // any command of ours can see the old one.
            if landing::has_pending() {
                landing::refresh_before_command(&context);
            }
            handler(&context, args)
        },
        || match reply::begun() {
            true => Ok(RedisValue::NoReply),
            false => Err(CacheError::Internal.into()),
        },
    );
    context.reply(result) as c_int
}

/// The `extern "C"` entry point of a handler: a function of its own that calls `dispatch`.
/// Usable in a const (the rows of `table::COMMANDS`).
macro_rules! entry_point {
    ($handler:path) => {{
        extern "C" fn entry(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::os::raw::c_int,
        ) -> std::os::raw::c_int {
            $crate::commands::dispatch(ctx, argv, argc, $handler)
        }
        entry as $crate::commands::spec::EntryPoint
    }};
}

pub mod table;

/// Registers every command of the table; called from the module's init.
pub fn register(ctx: &Context) -> Status {
    register::register(ctx, table::COMMANDS)
}

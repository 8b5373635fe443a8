//! Command handlers: parse arguments into a typed request, make one decision in the core,
//! store and replicate its effect, reply. Each file reads like its section of COMMANDS.md.
//!
//! Commands are registered here with `RedisModule_CreateCommand` directly rather than through
//! `redis_module!`: its dispatcher copies argv into a `Vec` of reference-counted strings on
//! every call, which costs the read paths a measurable share of native `GET` speed.

pub mod apply;
pub mod args;
pub mod del;
pub mod get;
pub mod getx;
pub mod inspect;
pub mod lockget;
pub mod read;
pub mod release;
pub mod reply;
pub mod set;
pub mod waiters;

use std::ffi::CStr;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context, RedisResult, Status};

use crate::error::CacheError;
pub(crate) use crate::storage::key::{open_entry, open_entry_writable};
use args::Arg;

pub type Handler = fn(&Context, &[Arg]) -> RedisResult;

/// Runs a handler and sends its reply. A panic becomes an error reply: it must never unwind
/// into Redis.
fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: Redis hands us argc live strings for the duration of the call.
    let args = unsafe { Arg::slice(argv, argc.max(0) as usize) };
    let result = catch_unwind(AssertUnwindSafe(|| handler(&context, args)))
        .unwrap_or_else(|_| Err(CacheError::Internal.into()));
    context.reply(result) as c_int
}

/// One `extern "C"` entry point per command, each calling `dispatch` with its handler.
macro_rules! entry_points {
    ($($name:ident => $handler:path),* $(,)?) => {
        $(
            extern "C" fn $name(
                ctx: *mut raw::RedisModuleCtx,
                argv: *mut *mut raw::RedisModuleString,
                argc: c_int,
            ) -> c_int {
                dispatch(ctx, argv, argc, $handler)
            }
        )*
    };
}

entry_points! {
    cache_set => set::run,
    cache_get => get::run,
    cache_getx => getx::run,
    cache_del => del::run,
    cache_apply => apply::run,
    cache_inspect => inspect::run,
    cache_lockget => lockget::run,
    cache_release => release::run,
}

type EntryPoint =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// name, entry point, flags, first key, last key, key step.
const COMMANDS: &[(&CStr, EntryPoint, &CStr, c_int, c_int, c_int)] = &[
    (c"cache.set", cache_set, c"write deny-oom", 1, 1, 1),
    (c"cache.get", cache_get, c"readonly fast", 1, 1, 1),
    (c"cache.getx", cache_getx, c"write deny-oom fast", 1, 1, 1),
    (c"cache.del", cache_del, c"write", 1, -1, 1),
    (c"cache.apply", cache_apply, c"write deny-oom", 1, 1, 1),
    (c"cache.inspect", cache_inspect, c"readonly", 1, 1, 1),
    (c"cache.lockget", cache_lockget, c"write deny-oom", 1, 1, 1),
    (c"cache.release", cache_release, c"write", 1, 1, 1),
];

/// Registers every command; called from the module's init.
pub fn register(ctx: &Context) -> Status {
    for (name, entry, flags, first, last, step) in COMMANDS {
        // SAFETY: called during module load with a valid context; strings are 'static.
        let status = unsafe {
            raw::RedisModule_CreateCommand.unwrap()(
                ctx.ctx,
                name.as_ptr(),
                Some(*entry),
                flags.as_ptr(),
                *first,
                *last,
                *step,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            ctx.log_warning(&format!("cannot register {}", name.to_string_lossy()));
            return Status::Err;
        }
    }
    Status::Ok
}

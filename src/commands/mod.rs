//! Command handlers: parse arguments into a typed request, make one decision in the core,
//! store and replicate its effect, reply. Each file reads like its section of COMMANDS.md.

pub mod apply;
pub mod args;
pub mod del;
pub mod get;
pub mod getx;
pub mod inspect;
pub mod reply;
pub mod set;

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{Context, RedisResult, RedisString};

use crate::error::CacheError;
use crate::storage::key::{Key, Kind};

type Handler = fn(&Context, Vec<RedisString>) -> RedisResult;

/// Runs a handler, turning a panic into an error reply: a panic must never reach Redis.
fn guard(ctx: &Context, args: Vec<RedisString>, handler: Handler) -> RedisResult {
    catch_unwind(AssertUnwindSafe(|| handler(ctx, args)))
        .unwrap_or_else(|_| Err(CacheError::Internal.into()))
}

macro_rules! guarded {
    ($($name:ident => $handler:path),* $(,)?) => {
        $(
            pub fn $name(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
                guard(ctx, args, $handler)
            }
        )*
    };
}

guarded! {
    cache_set => set::run,
    cache_get => get::run,
    cache_getx => getx::run,
    cache_del => del::run,
    cache_apply => apply::run,
    cache_inspect => inspect::run,
}

/// Opens a key to read an entry: `None` when the key does not exist, `WRONGTYPE` when it
/// holds something else.
pub(crate) fn open_entry(ctx: &Context, name: &RedisString) -> Result<Option<Key>, CacheError> {
    let Some(key) = Key::open(ctx, name, false) else {
        return Ok(None);
    };
    match key.kind() {
        Kind::Empty => Ok(None),
        Kind::Entry => Ok(Some(key)),
        Kind::Other => Err(CacheError::WrongType),
    }
}

/// Opens a key to write an entry; the flag says whether an entry is already there.
pub(crate) fn open_entry_writable(
    ctx: &Context,
    name: &RedisString,
) -> Result<(Key, bool), CacheError> {
    let key = Key::open(ctx, name, true).ok_or(CacheError::Internal)?;
    match key.kind() {
        Kind::Empty => Ok((key, false)),
        Kind::Entry => Ok((key, true)),
        Kind::Other => Err(CacheError::WrongType),
    }
}

//! Keyspace notifications for what the module writes, so `notify-keyspace-events` users see
//! entries change like any key: class `d` (module) events `cache.set`, `cache.lease`,
//! `cache.release`, `cache.apply`, and the generic `del` for `CACHE.DEL` (class `g`).
//! Redis returns at once when notifications are off.

use std::ffi::CStr;

use redis_module::{raw, Context};

use super::arg::Arg;

fn emit(ctx: &Context, class: i32, event: &CStr, key: &Arg) {
    // SAFETY: live context and key; the event name is a static C string.
    unsafe {
        raw::RedisModule_NotifyKeyspaceEvent.unwrap()(ctx.ctx, class, event.as_ptr(), key.raw());
    }
}

/// A value was stored.
pub fn set(ctx: &Context, key: &Arg) {
    emit(ctx, raw::REDISMODULE_NOTIFY_MODULE, c"cache.set", key);
}

/// A fill lease was granted.
pub fn lease(ctx: &Context, key: &Arg) {
    emit(ctx, raw::REDISMODULE_NOTIFY_MODULE, c"cache.lease", key);
}

/// A lease was given up.
pub fn release(ctx: &Context, key: &Arg) {
    emit(ctx, raw::REDISMODULE_NOTIFY_MODULE, c"cache.release", key);
}

/// A replicated or loaded entry record was applied.
pub fn apply(ctx: &Context, key: &Arg) {
    emit(ctx, raw::REDISMODULE_NOTIFY_MODULE, c"cache.apply", key);
}

/// An entry was deleted by CACHE.DEL.
pub fn del(ctx: &Context, key: &Arg) {
    emit(ctx, raw::REDISMODULE_NOTIFY_GENERIC, c"del", key);
}

//! The server's one id clock (versions and lease tokens), and the server's time.

use std::sync::Mutex;

use redis_module::raw;

use crate::core::version::{self, IdClock};
use crate::error::CacheError;

static IDS: Mutex<IdClock> = Mutex::new(IdClock::new());

fn clock() -> std::sync::MutexGuard<'static, IdClock> {
    // A poisoned lock only means a panic happened while holding it; the clock inside is a
    // plain integer and still valid.
    IDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh version or token, larger than every id issued or seen so far. An error when none
/// is left below the limit: the write must then be refused before it changes anything.
pub fn next_id(now_ms: i64) -> Result<u64, CacheError> {
    clock().next(now_ms).map_err(|_| CacheError::IdsExhausted)
}

/// Whether a client's `RESTORE` payload may carry `id` now (see `version::MAX_AHEAD_MS`).
pub fn is_plausible(id: u64) -> bool {
    version::is_plausible_id(id, now_ms())
}

/// Records an id that came from RDB, AOF, RESTORE or the primary.
pub fn observe(id: u64) {
    clock().observe(id)
}

/// The last id issued or observed (for INFO).
pub fn last_id() -> u64 {
    clock().last()
}

/// The server's wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    // SAFETY: the function pointer is set by RedisModule_Init before any command runs.
    unsafe { raw::RedisModule_Milliseconds.map_or(0, |f| f()) }
}

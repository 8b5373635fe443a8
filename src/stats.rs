//! Counters for `INFO cache` (section `cache_stats`). Every counter here is written only on
//! Redis's main thread (commands, timers, keyspace callbacks), so an increment is a plain
//! load and store rather than a locked read-modify-write; atomics keep reads from INFO sound.
//! (The live entry count, decremented by `free` on the lazy-free thread, lives in datatype.rs
//! with a real atomic add.)

//!
//! A leaf: it imports nothing of the crate, so any layer may count without an import circle.
//! The INFO handler that reads these lives in `info.rs`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn incr(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        // Single writer (the main thread): no lost updates without a locked add.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    /// Undoes one `incr` of an event that turned out not to have happened.
    pub fn take_back(&self) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub static HITS: Counter = Counter::new();
pub static MISSES: Counter = Counter::new();
pub static STALE_HITS: Counter = Counter::new();
pub static LOCKED: Counter = Counter::new();
pub static EARLY_REFRESHES: Counter = Counter::new();
pub static LEASES_GRANTED: Counter = Counter::new();
pub static LEASES_FILLED: Counter = Counter::new();
pub static LEASES_EXPIRED: Counter = Counter::new();
pub static LEASES_RELEASED: Counter = Counter::new();
pub static LEASES_REVOKED: Counter = Counter::new();
pub static FILLS_REFUSED: Counter = Counter::new();
pub static WRITES: Counter = Counter::new();
pub static DELETES: Counter = Counter::new();
pub static LOCKGET_WAITS: Counter = Counter::new();
pub static LOCKGET_WAKEUPS: Counter = Counter::new();
pub static LOCKGET_HANDOVERS: Counter = Counter::new();
pub static LOCKGET_TIMEOUTS: Counter = Counter::new();
pub static TAG_INVALIDATIONS: Counter = Counter::new();
pub static TAG_ENTRIES_INVALIDATED: Counter = Counter::new();
/// Invalidated entries removed from the keyspace (by a slice, or by the next write to them).
pub static TAG_REMOVED: Counter = Counter::new();
/// Cluster-wide invalidations started here (sent to the other primaries), those whose caller
/// was answered `-TIMEOUT`, and those other primaries sent here that were applied.
pub static TAG_SPREAD_STARTED: Counter = Counter::new();
pub static TAG_SPREAD_TIMEOUTS: Counter = Counter::new();
pub static TAG_SPREAD_APPLIED: Counter = Counter::new();
/// Write-behind events appended: `CACHE.WBQUEUE` (`set`) and `CACHE.WBDEL` (`del`).
pub static WB_SETS: Counter = Counter::new();
pub static WB_DELS: Counter = Counter::new();
/// Write-behind commands refused, by reason: the queue full, an eviction policy that could
/// drop it, over maxmemory, the caller's ACL.
pub static WB_REFUSED_FULL: Counter = Counter::new();
pub static WB_REFUSED_POLICY: Counter = Counter::new();
pub static WB_REFUSED_OOM: Counter = Counter::new();
pub static WB_REFUSED_ACL: Counter = Counter::new();

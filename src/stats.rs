//! Counters for `INFO cache` (section `cache_stats`). Every counter here is written only on
//! Redis's main thread (commands, timers, keyspace callbacks), so an increment is a plain
//! load and store rather than a locked read-modify-write; atomics keep reads from INFO sound.
//! (The live entry count, decremented by `free` on the lazy-free thread, lives in datatype.rs
//! with a real atomic add.)

use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::{InfoContext, RedisResult};

use crate::commands::waiters;
use crate::storage::{datatype, ids};

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
pub static ENTRIES_INVALIDATED: Counter = Counter::new();
pub static WB_QUEUED: Counter = Counter::new();
pub static WB_REFUSED: Counter = Counter::new();

/// The INFO handler: `INFO cache` or `INFO everything`.
pub fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let fields: &[(&str, u64)] = &[
        ("hits", HITS.get()),
        ("misses", MISSES.get()),
        ("stale_hits", STALE_HITS.get()),
        ("locked", LOCKED.get()),
        ("early_refreshes", EARLY_REFRESHES.get()),
        ("leases_granted", LEASES_GRANTED.get()),
        ("leases_filled", LEASES_FILLED.get()),
        ("leases_expired", LEASES_EXPIRED.get()),
        ("leases_released", LEASES_RELEASED.get()),
        ("leases_revoked", LEASES_REVOKED.get()),
        ("fills_refused", FILLS_REFUSED.get()),
        ("writes", WRITES.get()),
        ("deletes", DELETES.get()),
        ("lockget_waits", LOCKGET_WAITS.get()),
        ("lockget_wakeups", LOCKGET_WAKEUPS.get()),
        ("lockget_handovers", LOCKGET_HANDOVERS.get()),
        ("lockget_timeouts", LOCKGET_TIMEOUTS.get()),
        ("tag_invalidations", TAG_INVALIDATIONS.get()),
        ("entries_invalidated", ENTRIES_INVALIDATED.get()),
        ("wb_events_queued", WB_QUEUED.get()),
        ("wb_events_refused", WB_REFUSED.get()),
    ];
    let mut section = ctx.builder().add_section("stats");
    for (name, value) in fields {
        section = section.field(name, *value)?;
    }
    section
        .build_section()?
        .add_section("keyspace")
        .field("entries", datatype::live_entries())?
        .field("tags", 0i64)?
        .field("lockget_parked", waiters::parked() as i64)?
        .field("last_id", ids::last_id())?
        .build_section()?
        .build_info()?;
    Ok(())
}

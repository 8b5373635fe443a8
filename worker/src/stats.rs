//! Counters shared by the queue threads, and the progress line made from them.

use crate::stream::Lag;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Events stored (coalesced-away ones included) and acknowledged.
    pub drained: AtomicU64,
    /// Committed database transactions.
    pub batches: AtomicU64,
    /// Failed attempts: database writes and Redis commands.
    pub failures: AtomicU64,
    /// Events moved to a dead-letter stream.
    pub dead: AtomicU64,
}

/// One reading of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub drained: u64,
    pub batches: u64,
    pub failures: u64,
    pub dead: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            drained: self.drained.load(Relaxed),
            batches: self.batches.load(Relaxed),
            failures: self.failures.load(Relaxed),
            dead: self.dead.load(Relaxed),
        }
    }
}

/// The progress line: totals, the rate since the previous line, and the backlog summed over the
/// queues (`None` when a server could not be asked).
pub fn progress_line(now: Snapshot, before: Snapshot, secs: f64, lag: Option<Lag>) -> String {
    let rate = if secs > 0.0 {
        (now.drained - before.drained) as f64 / secs
    } else {
        0.0
    };
    let lag = match lag {
        Some(l) => format!(
            "queued={} pending={} oldest={}ms",
            l.queued, l.pending, l.oldest_ms
        ),
        None => "queued=? pending=? oldest=?".to_string(),
    };
    format!(
        "progress: drained={} batches={} rate={:.0}/s {} failures={} dead={}",
        now.drained, now.batches, rate, lag, now.failures, now.dead
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line() {
        let before = Snapshot {
            drained: 1000,
            ..Snapshot::default()
        };
        let now = Snapshot {
            drained: 6000,
            batches: 12,
            failures: 1,
            dead: 2,
        };
        let lag = Lag {
            queued: 40,
            pending: 3,
            oldest_ms: 250,
        };
        assert_eq!(
            progress_line(now, before, 5.0, Some(lag)),
            "progress: drained=6000 batches=12 rate=1000/s queued=40 pending=3 oldest=250ms \
             failures=1 dead=2"
        );
        assert_eq!(
            progress_line(now, now, 0.0, None),
            "progress: drained=6000 batches=12 rate=0/s queued=? pending=? oldest=? failures=1 \
             dead=2"
        );
    }
}

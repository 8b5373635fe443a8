//! When to try again and when to give up: the backoff schedule between attempts, the point at
//! which a failing batch is split into one transaction per key, and the attempt count after
//! which an event goes to the dead-letter stream.

use std::collections::HashMap;
use std::time::Duration;

/// Exponential backoff: `base`, doubling per failure, never above `cap`. A database or Redis
/// that is down is retried at most every `cap`, so the worker is back within seconds of it.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// The schedule of this worker: 50 ms, 100 ms, ... capped at 3.2 s.
    pub fn standard() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_millis(3200))
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        // 2^20 * base is already far above any sensible cap: stop doubling there.
        let factor = 1u32 << self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How often a whole batch the database rejected is tried again before it is split into one
/// transaction per key to find the poison one. A rejection (a constraint, a bad value) is
/// deterministic, so one retry is enough to rule out a passing cause such as a trigger that
/// depends on time.
pub const BATCH_TRIES_BEFORE_SPLIT: u32 = 2;

/// What to do with a batch after its `rejections`-th rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchVerdict {
    Retry,
    Split,
}

pub fn batch_verdict(rejections: u32) -> BatchVerdict {
    if rejections >= BATCH_TRIES_BEFORE_SPLIT {
        BatchVerdict::Split
    } else {
        BatchVerdict::Retry
    }
}

/// What to do with an event whose own transaction the database rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    DeadLetter { attempts: u32 },
}

/// Rejections per stream id. Only rejections count: a database that is unreachable says
/// nothing about the event, and retrying it is the only right thing to do.
#[derive(Debug)]
pub struct Attempts {
    max: u32,
    counts: HashMap<String, u32>,
}

impl Attempts {
    pub fn new(max: u32) -> Self {
        Attempts {
            max: max.max(1),
            counts: HashMap::new(),
        }
    }

    /// Counts one rejection of `id`; at `max` rejections it is dead-lettered.
    pub fn rejected(&mut self, id: &str) -> Verdict {
        let count = self.counts.entry(id.to_string()).or_insert(0);
        *count += 1;
        if *count >= self.max {
            let attempts = *count;
            self.counts.remove(id);
            Verdict::DeadLetter { attempts }
        } else {
            Verdict::Retry
        }
    }

    /// The event is done with (stored or dead-lettered): its count goes.
    pub fn forget(&mut self, id: &str) {
        self.counts.remove(id);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::standard();
        let ms: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 3200, 3200, 3200]);
        assert_eq!(b.failures, 10);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }

    #[test]
    fn backoff_does_not_overflow_after_many_failures() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
    }

    #[test]
    fn a_batch_is_split_after_its_second_rejection() {
        assert_eq!(batch_verdict(1), BatchVerdict::Retry);
        assert_eq!(batch_verdict(2), BatchVerdict::Split);
        assert_eq!(batch_verdict(9), BatchVerdict::Split);
    }

    #[test]
    fn an_event_is_dead_lettered_at_max_attempts() {
        let mut a = Attempts::new(3);
        assert_eq!(a.rejected("1-0"), Verdict::Retry);
        assert_eq!(a.rejected("2-0"), Verdict::Retry);
        assert_eq!(a.rejected("1-0"), Verdict::Retry);
        assert_eq!(a.rejected("1-0"), Verdict::DeadLetter { attempts: 3 });
        // Dead-lettered ids are not tracked any more; others still are.
        assert_eq!(a.tracked(), 1);
        a.forget("2-0");
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn max_attempts_of_zero_still_tries_once() {
        let mut a = Attempts::new(0);
        assert_eq!(a.rejected("1-0"), Verdict::DeadLetter { attempts: 1 });
    }
}

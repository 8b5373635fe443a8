//! Versions and lease tokens: one hybrid logical clock per server.
//!
//! Each id is `max(last + 1, now_ms << 10)`: strictly increasing while the server runs, and
//! ahead of every id issued before a restart as long as the wall clock moved forward (1024 ids
//! per millisecond is more than one Redis thread can issue of these commands for long).
//!
//! Ids stay below 2^53 (today about 2^51, until about the year 2245): exact as doubles, so Lua
//! scripts and JavaScript clients carry tokens and versions without rounding. Every id the server sees in data it loads or
//! receives from its primary is fed to `observe`, so a restarted server or a promoted replica
//! never issues an id it has already seen, whatever its clock says.

/// How far the millisecond clock is shifted: leaves 1024 ids per millisecond.
pub const CLOCK_SHIFT: u32 = 10;

/// The largest id: keeps ids positive as signed 64-bit integers (RESP integers).
pub const MAX_ID: u64 = i64::MAX as u64;

/// Ids from outside (RDB, RESTORE, the primary) must be below this: 2^53 is two centuries of
/// clock ahead of today's ids, the largest integer a double holds exactly, and far enough
/// below `MAX_ID` that a crafted id can never pin the clock at its maximum.
pub const ID_LIMIT: u64 = 1 << 53;

/// Whether an id from outside is one this clock could have issued.
pub fn is_valid_id(id: u64) -> bool {
    id < ID_LIMIT
}

#[derive(Debug, Default, Clone)]
pub struct IdClock {
    last: u64,
}

impl IdClock {
    pub const fn new() -> IdClock {
        IdClock { last: 0 }
    }

    /// The next id, greater than every id issued or observed so far.
    pub fn next(&mut self, now_ms: i64) -> u64 {
        let from_clock = (now_ms.max(0) as u64)
            .checked_shl(CLOCK_SHIFT)
            .unwrap_or(MAX_ID);
        let id = self.last.saturating_add(1).max(from_clock).min(MAX_ID);
        self.last = id;
        id
    }

    /// Records an id issued elsewhere (loaded from RDB/AOF, replicated from a primary).
    /// Ids at or above `ID_LIMIT` are refused by the codec and ignored here.
    pub fn observe(&mut self, id: u64) {
        if is_valid_id(id) {
            self.last = self.last.max(id);
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_clock_stalls_or_goes_back() {
        let mut c = IdClock::new();
        let a = c.next(1_000);
        let b = c.next(1_000);
        let d = c.next(500);
        assert!(a < b && b < d);
        assert_eq!(a, 1_000 << CLOCK_SHIFT);
    }

    #[test]
    fn observed_ids_are_never_reissued() {
        let mut c = IdClock::new();
        c.observe(5_000 << CLOCK_SHIFT);
        assert!(c.next(1_000) > 5_000 << CLOCK_SHIFT);
        c.observe(3);
        assert!(c.next(1_000) > 5_000 << CLOCK_SHIFT);
    }

    #[test]
    fn a_restart_later_issues_larger_ids_without_state() {
        let mut before = IdClock::new();
        let old = (0..1000)
            .map(|_| before.next(1_700_000_000_000))
            .max()
            .unwrap();
        let mut after = IdClock::new();
        assert!(after.next(1_700_000_000_001) > old);
    }

    #[test]
    fn ids_fit_in_a_signed_integer() {
        let mut c = IdClock::new();
        assert!(c.next(i64::MAX) <= MAX_ID);
    }

    #[test]
    fn out_of_range_ids_cannot_pin_the_clock() {
        let mut c = IdClock::new();
        c.observe(u64::MAX);
        c.observe(MAX_ID);
        c.observe(ID_LIMIT);
        let a = c.next(1_000);
        assert!(c.next(1_000) > a);
        c.observe(ID_LIMIT - 1);
        let b = c.next(0);
        assert!(c.next(0) > b && b < MAX_ID);
    }

    // 2026 in ms, shifted: about 2^50.7, a fifth of the limit; 2245 still fits.
    const _: () = assert!(1_800_000_000_000u64 << CLOCK_SHIFT < ID_LIMIT / 4);
    const _: () = assert!(8_700_000_000_000u64 << CLOCK_SHIFT < ID_LIMIT);
}

//! Versions and lease tokens: one hybrid logical clock per server.
//!
//! Each id is `max(last + 1, now_ms << 10)`: strictly increasing while the server runs, and
//! ahead of every id issued before a restart as long as the wall clock moved forward (1024 ids
//! per millisecond is more than one Redis thread can issue of these commands for long).
//!
//! Ids stay below 2^53 (today about 2^51, until about the year 2245): exact as doubles, so Lua
//! scripts and JavaScript clients carry tokens and versions without rounding. Every id the
//! server sees in data it loads or receives from its primary is fed to `observe`, so a
//! restarted server or a promoted replica never issues an id it has already seen, whatever its
//! clock says.

/// How far the millisecond clock is shifted: leaves 1024 ids per millisecond.
pub const CLOCK_SHIFT: u32 = 10;

/// Every id is below this, issued here or taken in from outside (RDB, AOF, RESTORE, the
/// primary): 2^53 is about two centuries of clock ahead of today's ids and the largest integer
/// a double holds exactly. One limit for issuing and decoding, so a server can always load
/// what it saved.
pub const ID_LIMIT: u64 = 1 << 53;

/// How far ahead of this server's wall clock the ids of a `RESTORE` payload may be: clocks of
/// servers that exchange data differ by seconds, not by a day. Ids further ahead could only
/// come from a forged payload, which would push this clock towards its limit.
pub const MAX_AHEAD_MS: i64 = 24 * 3_600_000;

/// Whether an id from outside is one this clock could have issued.
pub fn is_valid_id(id: u64) -> bool {
    id < ID_LIMIT
}

/// Whether an id from a client's payload is plausible at `now_ms`: no further ahead of the
/// wall clock than `MAX_AHEAD_MS`.
pub fn is_plausible_id(id: u64, now_ms: i64) -> bool {
    let bound = (now_ms.max(0) as u64)
        .saturating_add(MAX_AHEAD_MS as u64)
        .saturating_mul(1 << CLOCK_SHIFT);
    is_valid_id(id) && id <= bound
}

/// The clock cannot issue an id below `ID_LIMIT`: an id taken in from outside was at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

#[derive(Debug, Default, Clone)]
pub struct IdClock {
    last: u64,
}

impl IdClock {
    pub const fn new() -> IdClock {
        IdClock { last: 0 }
    }

    /// The next id, greater than every id issued or observed so far; `Exhausted` (and the
    /// clock unchanged) when that id would not be below `ID_LIMIT`: refusing is better than
    /// issuing an id no server can load, or one issued before.
    pub fn next(&mut self, now_ms: i64) -> Result<u64, Exhausted> {
        let from_clock = (now_ms.max(0) as u64).saturating_mul(1 << CLOCK_SHIFT);
        let id = self.last.saturating_add(1).max(from_clock);
        if !is_valid_id(id) {
            return Err(Exhausted);
        }
        self.last = id;
        Ok(id)
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

    fn next(c: &mut IdClock, now_ms: i64) -> u64 {
        c.next(now_ms).expect("an id below the limit")
    }

    #[test]
    fn strictly_increasing_even_when_clock_stalls_or_goes_back() {
        let mut c = IdClock::new();
        let a = next(&mut c, 1_000);
        let b = next(&mut c, 1_000);
        let d = next(&mut c, 500);
        assert!(a < b && b < d);
        assert_eq!(a, 1_000 << CLOCK_SHIFT);
    }

    #[test]
    fn observed_ids_are_never_reissued() {
        let mut c = IdClock::new();
        c.observe(5_000 << CLOCK_SHIFT);
        assert!(next(&mut c, 1_000) > 5_000 << CLOCK_SHIFT);
        c.observe(3);
        assert!(next(&mut c, 1_000) > 5_000 << CLOCK_SHIFT);
    }

    #[test]
    fn a_restart_later_issues_larger_ids_without_state() {
        let mut before = IdClock::new();
        let old = (0..1000)
            .map(|_| next(&mut before, 1_700_000_000_000))
            .max()
            .unwrap();
        let mut after = IdClock::new();
        assert!(next(&mut after, 1_700_000_000_001) > old);
    }

    #[test]
    fn every_issued_id_is_one_the_codec_loads() {
        // The last id below the limit is issued; the one after it is refused, and the clock
        // stays where it was (no id repeated, none at or past the limit).
        let mut c = IdClock::new();
        c.observe(ID_LIMIT - 2);
        assert_eq!(c.next(0), Ok(ID_LIMIT - 1));
        assert!(is_valid_id(ID_LIMIT - 1));
        assert_eq!(c.next(0), Err(Exhausted));
        assert_eq!(c.next(1_000), Err(Exhausted));
        assert_eq!(c.last(), ID_LIMIT - 1);
        // A wall clock beyond the limit (a server in the year 2250, or i64::MAX) refuses too.
        let mut c = IdClock::new();
        assert_eq!(c.next(i64::MAX), Err(Exhausted));
        assert_eq!(c.next((ID_LIMIT >> CLOCK_SHIFT) as i64), Err(Exhausted));
        assert_eq!(c.last(), 0);
        let just_below = ((ID_LIMIT >> CLOCK_SHIFT) - 1) as i64;
        assert_eq!(c.next(just_below), Ok(ID_LIMIT - (1 << CLOCK_SHIFT)));
    }

    #[test]
    fn out_of_range_ids_cannot_pin_the_clock() {
        let mut c = IdClock::new();
        c.observe(u64::MAX);
        c.observe(i64::MAX as u64);
        c.observe(ID_LIMIT);
        let a = next(&mut c, 1_000);
        assert!(next(&mut c, 1_000) > a);
        assert!(
            a < 2_000 << CLOCK_SHIFT,
            "the clock took in a refused id: {a}"
        );
    }

    #[test]
    fn ids_far_ahead_of_the_wall_clock_are_implausible() {
        let now = 1_800_000_000_000;
        let now_id = (now as u64) << CLOCK_SHIFT;
        assert!(is_plausible_id(now_id, now));
        assert!(is_plausible_id(1, now));
        let bound = ((now + MAX_AHEAD_MS) as u64) << CLOCK_SHIFT;
        assert!(is_plausible_id(bound, now));
        assert!(!is_plausible_id(bound + 1, now));
        assert!(!is_plausible_id(ID_LIMIT - 1, now));
        assert!(!is_plausible_id(ID_LIMIT, i64::MAX));
        assert!(is_plausible_id(ID_LIMIT - 1, i64::MAX));
    }

    // 2026 in ms, shifted: about 2^50.7, a fifth of the limit; 2245 still fits.
    const _: () = assert!(1_800_000_000_000u64 << CLOCK_SHIFT < ID_LIMIT / 4);
    const _: () = assert!(8_700_000_000_000u64 << CLOCK_SHIFT < ID_LIMIT);
}

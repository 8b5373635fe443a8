//! The `CACHE.GETX` decision: who recomputes a value before it expires, with at most one
//! recompute in flight per key (the lease). Two elections (`cache.refresh`):
//!
//! - **window** (the default): the first reader within `(1 + beta) * delta` of expiry is
//!   elected. The recompute (about `delta`) then lands about `beta * delta` before expiry, so
//!   no reader finds the value expired, and a hot key is recomputed about once per TTL
//!   (`TTL / (TTL - beta * delta)`) however many read it. A key read rarely is refreshed when a
//!   read falls in the window, as with XFetch when it is read near expiry.
//! - **xfetch** (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
//!   Prevention", VLDB 2015): a caller is elected when `now - delta * beta * ln(U) >=
//!   fresh_until`, U uniform in (0, 1]. Made for clients that cannot coordinate, it elects
//!   earlier the more often a key is read: at `r` reads/s, around
//!   `delta * beta * ln(r * delta * beta)` before expiry (0.69 s for 10k reads/s and delta
//!   100 ms), about 1.4 recomputes per TTL of 2 s. In the server the lease already makes the refresh exclusive, so the window
//!   does not need the randomness.

use super::entry::{Entry, Freshness};

/// The status word of a GETX/LOCKGET reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Hit,
    Refresh,
    Stale,
    Miss,
    Locked,
    Timeout,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Refresh => "REFRESH",
            Status::Stale => "STALE",
            Status::Miss => "MISS",
            Status::Locked => "LOCKED",
            Status::Timeout => "TIMEOUT",
        }
    }
}

/// What a GETX caller gets: a status, and whether a new lease is granted to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub status: Status,
    pub grant: bool,
}

/// How GETX elects the caller that refreshes a fresh value early (`cache.refresh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Election {
    Window,
    Xfetch,
}

/// True when the window elects: `fresh_until - now <= (1 + beta) * delta`. A value with no
/// recompute cost (delta 0) is never refreshed early.
pub fn window_elects(now: i64, fresh_until: i64, delta_ms: i64, beta: f64) -> bool {
    if delta_ms <= 0 {
        return now >= fresh_until;
    }
    let gap = (fresh_until as f64) - (now as f64);
    gap <= (1.0 + beta) * (delta_ms as f64)
}

/// True when XFetch elects this caller: `now - delta * beta * ln(u) >= fresh_until`.
/// `u` must be in (0, 1]; `ln(u) <= 0`, so the term pushes `now` forward.
pub fn xfetch_elects(now: i64, fresh_until: i64, delta_ms: i64, beta: f64, u: f64) -> bool {
    if delta_ms <= 0 {
        return now >= fresh_until;
    }
    let gap = (fresh_until as f64) - (now as f64);
    -(delta_ms as f64) * beta * u.ln() >= gap
}

/// `-ln(u)` never exceeds this for a 53-bit uniform `u` in (0, 1] (`-ln(2^-53)` = 36.7).
const MAX_NEG_LN_U: f64 = 37.0;

/// True when no draw of `u` could elect a caller now: the draw (and its logarithm) is
/// skipped on the common path, far from expiry.
pub fn election_impossible(now: i64, fresh_until: i64, delta_ms: i64, beta: f64) -> bool {
    let gap = (fresh_until as f64) - (now as f64);
    gap > (delta_ms.max(0) as f64) * beta * MAX_NEG_LN_U
}

/// Decides a GETX read of `entry` (None: the key does not exist) at `now`. `draw` gives U,
/// uniform in (0, 1], for XFetch; it is called only when an early refresh is possible.
pub fn decide(
    entry: Option<&Entry>,
    now: i64,
    beta: f64,
    election: Election,
    draw: impl FnOnce() -> f64,
) -> Decision {
    decide_read(entry, now, |e| {
        let (until, delta) = (e.fresh_until_ms, e.delta_ms());
        match election {
            Election::Window => window_elects(now, until, delta, beta),
            Election::Xfetch => {
                !election_impossible(now, until, delta, beta)
                    && xfetch_elects(now, until, delta, beta, draw())
            }
        }
    })
}

/// The read decision GETX and LOCKGET share: at most one lease per key, a stale value always
/// served. `refresh_early` says whether the caller of a fresh entry with no lease out is
/// chosen to recompute it now (XFetch for GETX; never for LOCKGET).
pub fn decide_read(
    entry: Option<&Entry>,
    now: i64,
    refresh_early: impl FnOnce(&Entry) -> bool,
) -> Decision {
    let d = |status, grant| Decision { status, grant };
    let Some(e) = entry else {
        return d(Status::Miss, true);
    };
    let leased = e.active_lease(now).is_some();
    match e.freshness(now) {
        Freshness::Absent if leased => d(Status::Locked, false),
        Freshness::Absent => d(Status::Miss, true),
        Freshness::Stale => d(Status::Stale, !leased),
        Freshness::Fresh if !leased && refresh_early(e) => d(Status::Refresh, true),
        Freshness::Fresh => d(Status::Hit, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::Lease;

    const X: Election = Election::Xfetch;
    const W: Election = Election::Window;

    fn entry(fresh_until: i64, grace: i64, delta: i64) -> Entry {
        Entry::new(Some(b"v"[..].into()), fresh_until, grace, delta, 1)
    }

    fn leased(mut e: Entry, expires: i64) -> Entry {
        e.set_lease(Some(Lease {
            token: 9,
            granted_ms: 0,
            expires_ms: expires,
        }));
        e
    }

    const fn d(status: Status, grant: bool) -> Decision {
        Decision { status, grant }
    }

    #[test]
    fn every_status_path() {
        let fresh = entry(1000, 500, 0);
        assert_eq!(decide(None, 0, 1.0, X, || 0.5), d(Status::Miss, true));
        assert_eq!(
            decide(Some(&fresh), 10, 1.0, X, || 0.5),
            d(Status::Hit, false)
        );
        assert_eq!(
            decide(Some(&fresh), 1200, 1.0, X, || 0.5),
            d(Status::Stale, true)
        );
        assert_eq!(
            decide(Some(&leased(fresh.clone(), 2000)), 1200, 1.0, X, || 0.5),
            d(Status::Stale, false)
        );
        assert_eq!(
            decide(Some(&fresh), 1500, 1.0, X, || 0.5),
            d(Status::Miss, true)
        );
        assert_eq!(
            decide(Some(&leased(fresh.clone(), 2000)), 1500, 1.0, X, || 0.5),
            d(Status::Locked, false)
        );
        let pending = Entry::pending(Lease {
            token: 1,
            granted_ms: 0,
            expires_ms: 100,
        });
        assert_eq!(
            decide(Some(&pending), 50, 1.0, X, || 0.5),
            d(Status::Locked, false)
        );
        assert_eq!(
            decide(Some(&pending), 100, 1.0, X, || 0.5),
            d(Status::Miss, true),
            "lease ran out"
        );
    }

    #[test]
    fn early_refresh_near_expiry_only_without_a_lease() {
        let e = entry(1000, 0, 100);
        // 10 ms before expiry, delta 100: -100 * ln(0.5) = 69 >= 10 -> elected.
        assert_eq!(
            decide(Some(&e), 990, 1.0, X, || 0.5),
            d(Status::Refresh, true)
        );
        // Far from expiry: not elected even with a small u.
        assert_eq!(decide(Some(&e), 0, 1.0, X, || 0.5), d(Status::Hit, false));
        // u = 1 never elects before expiry.
        assert_eq!(decide(Some(&e), 999, 1.0, X, || 1.0), d(Status::Hit, false));
        assert_eq!(
            decide(Some(&leased(e, 2000)), 990, 1.0, X, || 0.5),
            d(Status::Hit, false)
        );
    }

    #[test]
    fn beta_scales_eagerness() {
        // gap 100, delta 100, u = 0.5: -ln(0.5) = 0.693 -> needs beta >= 1.443.
        assert!(!xfetch_elects(900, 1000, 100, 1.0, 0.5));
        assert!(xfetch_elects(900, 1000, 100, 2.0, 0.5));
        assert!(
            !xfetch_elects(0, 1000, 0, 100.0, 0.000_001),
            "delta 0 never refreshes early"
        );
    }

    #[test]
    fn the_draw_is_skipped_only_when_no_draw_could_elect() {
        let e = entry(1_000_000, 0, 100);
        assert_eq!(
            decide(Some(&e), 0, 1.0, X, || panic!("no draw needed")),
            d(Status::Hit, false)
        );
        // Just inside the bound, the smallest u elects.
        let now = 1_000_000 - 3_600;
        assert!(!election_impossible(now, 1_000_000, 100, 1.0));
        assert!(xfetch_elects(now, 1_000_000, 100, 1.0, f64::EPSILON / 2.0));
        assert!(election_impossible(1_000_000 - 3_701, 1_000_000, 100, 1.0));
    }

    #[test]
    fn election_rate_matches_xfetch() {
        // P(elected) = P(-ln U >= gap / (delta*beta)) = exp(-gap / (delta*beta)).
        let (gap, delta) = (100i64, 100i64);
        let n = 100_000;
        let hits = (1..=n)
            .filter(|i| xfetch_elects(1000 - gap, 1000, delta, 1.0, *i as f64 / n as f64))
            .count();
        let expected = (-1.0f64).exp() * n as f64;
        assert!(
            (hits as f64 - expected).abs() < n as f64 * 0.01,
            "{hits} vs {expected}"
        );
    }

    #[test]
    fn the_window_elects_the_first_reader_within_one_plus_beta_deltas() {
        let e = entry(1000, 0, 100);
        let no_draw = || panic!("the window draws nothing");
        assert_eq!(
            decide(Some(&e), 799, 1.0, W, no_draw),
            d(Status::Hit, false)
        );
        assert_eq!(
            decide(Some(&e), 800, 1.0, W, no_draw),
            d(Status::Refresh, true)
        );
        assert_eq!(
            decide(Some(&e), 999, 1.0, W, no_draw),
            d(Status::Refresh, true)
        );
        // A larger beta opens it earlier; one lease at a time.
        assert_eq!(
            decide(Some(&e), 700, 2.0, W, no_draw),
            d(Status::Refresh, true)
        );
        assert_eq!(
            decide(Some(&leased(e, 2000)), 900, 1.0, W, no_draw),
            d(Status::Hit, false)
        );
        // No recompute cost: never early.
        let free = entry(1000, 0, 0);
        assert_eq!(
            decide(Some(&free), 999, 1e9, W, no_draw),
            d(Status::Hit, false)
        );
        // Everything else as XFetch: stale, miss, locked.
        let fresh = entry(1000, 500, 0);
        assert_eq!(
            decide(Some(&fresh), 1200, 1.0, W, no_draw),
            d(Status::Stale, true)
        );
        assert_eq!(decide(None, 0, 1.0, W, no_draw), d(Status::Miss, true));
    }

    /// A hot key read every millisecond; an elected reader's fill lands `delta` later with a TTL
    /// of `ttl`: recomputes per TTL over `cycles` TTLs (no reader may find the value gone).
    fn recomputes_per_ttl(election: Election, ttl: i64, delta: i64, cycles: i64) -> f64 {
        let mut e = entry(ttl, 0, delta);
        let mut landing: Option<i64> = None;
        let mut recomputes = 0;
        let mut u = 0.0f64;
        for now in 0..ttl * cycles {
            if landing == Some(now) {
                e = entry(now + ttl, 0, delta);
                landing = None;
            }
            // A deterministic spread of draws in (0, 1].
            u = (u + 0.618_033_988_749_895).fract();
            let r = decide(Some(&e), now, 1.0, election, || u.max(1e-12));
            assert_ne!(r.status, Status::Locked, "a reader found no value at {now}");
            assert_ne!(r.status, Status::Miss, "a reader found no value at {now}");
            if r.grant {
                recomputes += 1;
                landing = Some(now + delta);
                e = leased(e, now + 5_000);
            }
        }
        recomputes as f64 / cycles as f64
    }

    #[test]
    fn the_window_recomputes_a_hot_key_about_once_per_ttl() {
        let window = recomputes_per_ttl(W, 2_000, 100, 50);
        let xfetch = recomputes_per_ttl(X, 2_000, 100, 50);
        assert!((1.0..=1.1).contains(&window), "window: {window}");
        assert!(xfetch > 1.2, "xfetch elects early at this rate: {xfetch}");
    }
}

//! The README's recipes, as a client would run them against a real server.
//!
//! Negative caching: a key the database does not have is cached as an empty value for a short
//! TTL, so that a flood of reads of a missing row asks the database once per TTL, not once per
//! read. GETX and LOCKGET treat the empty value as any value: a `HIT` with `""`, and parked
//! LOCKGET callers are woken with it.

mod support;

use std::time::Duration;

use support::commands::*;
use support::server::Server;

#[test]
fn negative_caching_with_an_empty_value() {
    let s = Server::start();
    let mut c = s.conn();

    // The first reader misses and holds the lease; the database has no such row.
    let (v, status, token) = getx(&mut c, "user:404", &[]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    let token = token.expect("the fill lease").to_string();
    // Cache the absence: an empty value for a short TTL, filled under the lease.
    let stored = set(&mut c, "user:404", b"", &["PX", "1500", "TOKEN", &token]);
    assert!(stored.is_some(), "the empty fill is stored");

    // Every reader now gets the absence from the cache: a HIT with "", no lease, no recompute.
    for _ in 0..100 {
        let (v, status, token) = getx(&mut c, "user:404", &[]);
        assert_eq!(
            (v.as_deref(), status.as_str(), token),
            (Some(&b""[..]), "HIT", None)
        );
        let (v, status, _) = lockget(&mut c, "user:404", &[]);
        assert_eq!((v.as_deref(), status.as_str()), (Some(&b""[..]), "HIT"));
    }
    assert_eq!(cache_get(&mut c, "user:404").as_deref(), Some(&b""[..]));

    // When the short TTL runs out, the next reader asks the database again.
    let until = server_ms(&mut c) + 1_500;
    wait_past(&mut c, until, Duration::from_secs(5));
    let (v, status, token) = getx(&mut c, "user:404", &[]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    assert!(token.is_some());
}

#[test]
fn parked_lockget_callers_are_woken_with_the_cached_absence() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, status, token) = lockget(&mut c, "order:0", &["PX", "10000"]);
    assert_eq!(status, "MISS");
    let token = token.unwrap().to_string();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let mut w = s.conn();
            std::thread::spawn(move || lockget(&mut w, "order:0", &["WAIT", "10000"]))
        })
        .collect();
    wait_parked(&mut c, 5, Duration::from_secs(10), "the readers park");
    assert!(set(&mut c, "order:0", b"", &["PX", "5000", "TOKEN", &token]).is_some());
    for w in waiters {
        let (v, status, token) = w.join().unwrap();
        assert_eq!(
            (v.as_deref(), status.as_str(), token),
            (Some(&b""[..]), "HIT", None)
        );
    }
}

//! CACHE.GETX against a real redis-server: every status path, the BETA and LEASE options,
//! fencing of TOKEN fills, DELTA measurement, version and token monotonicity (restarts
//! included), no writes on plain hits, and the INFO counters.

mod support;
use support::commands::*;
use support::records;
use support::server::{repl_offset, slow, wait_until, Server};

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use redis::Connection;

/// A BETA so large that a fresh entry with a non-zero DELTA is elected with probability
/// `1 - gap / (delta * beta)`, i.e. certainly for the gaps used here.
const HUGE_BETA: &str = "1000000000000";

/// How long a condition may take to come true on a slow machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A lease that lapses during a test: 100 ms on a server at full speed, `slow()` times that
/// under valgrind, so that it is still out when the next command of the test looks at it.
fn short_lease() -> String {
    (100 * slow()).to_string()
}

// ---------------------------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------------------------

/// Waits (with a deadline) until the entry at `key` is past its fresh time, without reading
/// it through GETX (which could elect an early refresh).
fn wait_until_stale(c: &mut Connection, key: &str) {
    let fresh_until = inspect_int(c, key, "fresh-until-ms").expect("entry exists");
    wait_past(c, fresh_until, PATIENCE);
}

/// Asserts that a TOKEN fill with `token` is refused: nil reply, the key's value and version
/// unchanged, and `fills_refused` up by exactly one.
fn assert_fill_refused(c: &mut Connection, key: &str, token: u64) {
    let value_before = cache_get(c, key);
    let version_before = version_of(c, key);
    let existed = exists(c, key);
    let refused_before = counter(c, "fills_refused");
    assert_eq!(
        fill(c, key, b"late fill", token),
        None,
        "fill of {key} with token {token} must be refused"
    );
    assert_eq!(cache_get(c, key), value_before, "value of {key} unchanged");
    assert_eq!(version_of(c, key), version_before, "version unchanged");
    assert_eq!(exists(c, key), existed, "a refused fill creates no key");
    assert_eq!(counter(c, "fills_refused"), refused_before + 1);
}

/// Runs `n` concurrent GETX calls on `key`, each on its own connection, released together.
fn concurrent_getx(s: &Server, key: &str, extra: &[&str], n: usize) -> Vec<Triple> {
    let conns: Vec<Connection> = (0..n).map(|_| s.conn()).collect();
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let barrier = Arc::clone(&barrier);
            let key = key.to_string();
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            std::thread::spawn(move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                barrier.wait();
                getx(&mut conn, &key, &extra)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn assert_strictly_increasing(ids: &[u64], what: &str) {
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "{what} not strictly increasing: {ids:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Status paths.
// ---------------------------------------------------------------------------------------------

#[test]
fn hit_on_a_fresh_entry() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"v\0x", &["EX", "3600"]).unwrap();
    for _ in 0..20 {
        assert_eq!(
            getx(&mut c, "k", &[]),
            (Some(b"v\0x".to_vec()), "HIT".into(), None)
        );
    }
    assert_eq!(lease_token_of(&mut c, "k"), None, "a hit grants no lease");
}

#[test]
fn refresh_goes_to_exactly_one_of_many_concurrent_callers() {
    let s = Server::start();
    let mut c = s.conn();
    // Gap to expiry <= 10 s, delta 10 000 s: each caller is elected with p >= 0.999, so early
    // refresh is all but certain; the lease must make it exclusive.
    set(&mut c, "k", b"value", &["PX", "10000", "DELTA", "10000000"]).unwrap();
    let results = concurrent_getx(&s, "k", &[], 50);
    for r in &results {
        assert_eq!(r.0.as_deref(), Some(&b"value"[..]), "value to all: {r:?}");
    }
    let refreshes: Vec<&Triple> = results.iter().filter(|r| r.1 == "REFRESH").collect();
    assert_eq!(refreshes.len(), 1, "exactly one REFRESH: {results:?}");
    let token = refreshes[0].2.expect("REFRESH carries a token");
    for r in results.iter().filter(|r| r.1 != "REFRESH") {
        assert_eq!((r.1.as_str(), r.2), ("HIT", None), "{results:?}");
    }
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
    assert_eq!(counter(&mut c, "early_refreshes"), 1);
}

#[test]
fn stale_serves_the_value_and_one_token() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"old", &["PX", "100", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "k");
    let (v, status, token) = getx(&mut c, "k", &[]);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"old"[..]), "STALE")
    );
    let token = token.expect("first STALE caller gets the token");
    for r in concurrent_getx(&s, "k", &[], 20) {
        assert_eq!(r, (Some(b"old".to_vec()), "STALE".into(), None));
    }
    assert_eq!(getx(&mut c, "k", &[]).2, None);
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
}

#[test]
fn concurrent_stale_callers_get_exactly_one_token() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"old", &["PX", "100", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "k");
    let results = concurrent_getx(&s, "k", &[], 30);
    for r in &results {
        assert_eq!((r.0.as_deref(), r.1.as_str()), (Some(&b"old"[..]), "STALE"));
    }
    let tokens: Vec<u64> = results.iter().filter_map(|r| r.2).collect();
    assert_eq!(tokens.len(), 1, "one token among {results:?}");
    assert_eq!(lease_token_of(&mut c, "k"), Some(tokens[0]));
}

#[test]
fn miss_gives_the_lease_then_locked_for_everyone_else() {
    let s = Server::start();
    let mut c = s.conn();
    let (v, status, token) = getx(&mut c, "k", &[]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    let token = token.expect("MISS carries a token");
    assert!(token > 0);
    for r in concurrent_getx(&s, "k", &[], 10) {
        assert_eq!(r, (None, "LOCKED".into(), None));
    }
    // The lease holder asking again is just another caller.
    assert_eq!(getx(&mut c, "k", &[]), (None, "LOCKED".into(), None));
    assert_eq!(cache_get(&mut c, "k"), None);
    assert_eq!(inspect_int(&mut c, "k", "has-value"), Some(0));
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
}

#[test]
fn concurrent_misses_grant_exactly_one_lease() {
    let s = Server::start();
    let mut c = s.conn();
    let results = concurrent_getx(&s, "k", &[], 40);
    let misses: Vec<&Triple> = results.iter().filter(|r| r.1 == "MISS").collect();
    assert_eq!(misses.len(), 1, "{results:?}");
    let token = misses[0].2.expect("MISS carries a token");
    for r in results.iter().filter(|r| r.1 != "MISS") {
        assert_eq!(r, &(None, "LOCKED".into(), None));
    }
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
}

#[test]
fn after_lease_expiry_the_next_caller_gets_miss_with_a_larger_token() {
    let s = Server::start();
    let mut c = s.conn();
    let before = server_ms(&mut c);
    let (_, status, t1) = getx(&mut c, "k", &["LEASE", &short_lease()]);
    assert_eq!(status, "MISS");
    let t1 = t1.unwrap();
    let mut last = None;
    let done = wait_until(PATIENCE, || {
        let r = getx(&mut c, "k", &["LEASE", &short_lease()]);
        assert!(r.1 == "LOCKED" || r.1 == "MISS", "{r:?}");
        let done = r.1 == "MISS";
        last = Some(r);
        done
    });
    assert!(done, "the lease never expired");
    let (v, _, t2) = last.unwrap();
    assert_eq!(v, None);
    let t2 = t2.expect("new MISS carries a token");
    assert!(t2 > t1, "new token {t2} must exceed {t1}");
    assert!(
        server_ms(&mut c) - before >= 100,
        "new lease granted before the old one ran out"
    );
    assert_eq!(lease_token_of(&mut c, "k"), Some(t2));
}

#[test]
fn after_stale_lease_expiry_the_next_caller_gets_a_new_token() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"old", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "k");
    let (_, status, t1) = getx(&mut c, "k", &["LEASE", &short_lease()]);
    assert_eq!(status, "STALE");
    let t1 = t1.unwrap();
    let expires = inspect_int(&mut c, "k", "lease-expires-ms").unwrap();
    wait_past(&mut c, expires, PATIENCE);
    let (v, status, t2) = getx(&mut c, "k", &[]);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"old"[..]), "STALE")
    );
    let t2 = t2.expect("expired lease: a new token");
    assert!(t2 > t1);
}

// ---------------------------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------------------------

#[test]
fn lease_option_sets_the_lease_expiry() {
    let s = Server::start();
    let mut c = s.conn();

    let before = server_ms(&mut c);
    let (_, status, token) = getx(&mut c, "k", &["LEASE", "30000"]);
    let after = server_ms(&mut c);
    assert_eq!(status, "MISS");
    assert_eq!(lease_token_of(&mut c, "k"), token);
    let granted = inspect_int(&mut c, "k", "lease-granted-ms").unwrap();
    let expires = inspect_int(&mut c, "k", "lease-expires-ms").unwrap();
    assert!(
        (before..=after).contains(&granted),
        "{before} {granted} {after}"
    );
    assert!(
        (before + 30_000..=after + 30_000).contains(&expires),
        "lease-expires-ms {expires} not now+30000 ({before}..{after})"
    );
    let pttl: i64 = redis::cmd("PTTL").arg("k").query(&mut c).unwrap();
    assert!(
        pttl > 20_000,
        "pending key lives as long as its lease: {pttl}"
    );

    // Without LEASE: cache.lease-ms.
    let default_lease = config_i64(&mut c, "cache.lease-ms");
    let before = server_ms(&mut c);
    getx(&mut c, "k2", &[]);
    let after = server_ms(&mut c);
    let expires = inspect_int(&mut c, "k2", "lease-expires-ms").unwrap();
    assert!(
        (before + default_lease..=after + default_lease).contains(&expires),
        "default lease {default_lease}: expires {expires} ({before}..{after})"
    );

    // LEASE on an early refresh: the lease is set, the entry's own lifetime is not shortened.
    set(&mut c, "k3", b"v", &["EX", "3600", "DELTA", "1000"]).unwrap();
    let before = server_ms(&mut c);
    let (v, status, token) = getx(&mut c, "k3", &["BETA", HUGE_BETA, "LEASE", "20000"]);
    let after = server_ms(&mut c);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"v"[..]), "REFRESH")
    );
    assert_eq!(lease_token_of(&mut c, "k3"), token);
    let expires = inspect_int(&mut c, "k3", "lease-expires-ms").unwrap();
    assert!((before + 20_000..=after + 20_000).contains(&expires));
    let pttl: i64 = redis::cmd("PTTL").arg("k3").query(&mut c).unwrap();
    assert!(pttl > 3_500_000, "entry TTL kept: {pttl}");
}

#[test]
fn huge_beta_elects_a_refresh_on_a_fresh_entry() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"v", &["EX", "3600", "DELTA", "1000"]).unwrap();
    // Default beta (1): gap 3 600 000 ms, delta 1 000 ms -> p = e^-3600, never.
    for _ in 0..50 {
        assert_eq!(getx(&mut c, "k", &[]).1, "HIT");
    }
    assert_eq!(getx(&mut c, "k", &["BETA", "0.001"]).1, "HIT");
    let (v, status, token) = getx(&mut c, "k", &["BETA", HUGE_BETA]);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"v"[..]), "REFRESH")
    );
    let token = token.expect("REFRESH carries a token");
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
    // One recompute in flight: even a huge BETA is now a plain HIT.
    assert_eq!(
        getx(&mut c, "k", &["BETA", HUGE_BETA]),
        (Some(b"v".to_vec()), "HIT".into(), None)
    );
    // The refresh fill lands and is served.
    let version = fill(&mut c, "k", b"v2", token).expect("refresh fill stored");
    assert_eq!(version_of(&mut c, "k"), Some(version));
    assert_eq!(getx(&mut c, "k", &[]).0, Some(b"v2".to_vec()));
}

/// `cache.refresh window` (the default): HIT until `(1 + beta) * delta` before expiry, then
/// the first reader is elected; `xfetch` draws instead (here, a huge beta elects at once).
#[test]
fn the_window_elects_the_first_reader_near_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    // Fresh for 6 s, delta 1 s: the window opens 2 s before expiry (beta 1).
    set(&mut c, "k", b"v", &["PX", "6000", "DELTA", "1000"]).unwrap();
    let until = server_ms(&mut c) + 6_000;
    while server_ms(&mut c) < until - 2_500 {
        assert_eq!(getx(&mut c, "k", &[]).1, "HIT", "outside the window");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    while server_ms(&mut c) < until - 1_900 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (v, status, token) = getx(&mut c, "k", &[]);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"v"[..]), "REFRESH")
    );
    assert!(token.is_some());
    assert_eq!(getx(&mut c, "k", &[]).1, "HIT", "one lease at a time");
    // BETA widens the window: 3 s before expiry with BETA 2.
    set(&mut c, "w", b"v", &["PX", "2800", "DELTA", "1000"]).unwrap();
    assert_eq!(getx(&mut c, "w", &["BETA", "0.5"]).1, "HIT");
    assert_eq!(getx(&mut c, "w", &["BETA", "2"]).1, "REFRESH");
    // XFetch behind the config.
    config_set(&mut c, "cache.refresh", "xfetch").unwrap();
    set(&mut c, "x", b"v", &["PX", "3600000", "DELTA", "1000"]).unwrap();
    assert_eq!(getx(&mut c, "x", &[]).1, "HIT");
    assert_eq!(getx(&mut c, "x", &["BETA", HUGE_BETA]).1, "REFRESH");
}

// ---------------------------------------------------------------------------------------------
// Fencing.
// ---------------------------------------------------------------------------------------------

#[test]
fn fill_refused_after_the_lease_expired() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, token) = getx(&mut c, "k", &["LEASE", &short_lease()]);
    let token = token.unwrap();
    let expires = inspect_int(&mut c, "k", "lease-expires-ms").unwrap();
    wait_past(&mut c, expires, PATIENCE);
    assert_fill_refused(&mut c, "k", token);
    assert!(!exists(&mut c, "k"));
}

#[test]
fn fill_refused_after_the_lease_on_a_stale_value_expired() {
    let s = Server::start();
    let mut c = s.conn();
    let v1 = set(&mut c, "k", b"old", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "k");
    let (_, status, token) = getx(&mut c, "k", &["LEASE", &short_lease()]);
    assert_eq!(status, "STALE");
    let expires = inspect_int(&mut c, "k", "lease-expires-ms").unwrap();
    wait_past(&mut c, expires, PATIENCE);
    assert_fill_refused(&mut c, "k", token.unwrap());
    assert_eq!(cache_get(&mut c, "k"), Some(b"old".to_vec()));
    assert_eq!(version_of(&mut c, "k"), Some(v1));
}

#[test]
fn fill_refused_after_cache_del() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, token) = getx(&mut c, "k", &[]);
    let n: i64 = redis::cmd("CACHE.DEL").arg("k").query(&mut c).unwrap();
    assert_eq!(n, 1);
    assert_fill_refused(&mut c, "k", token.unwrap());
    assert!(!exists(&mut c, "k"));

    // Same on an entry with a value and a refresh lease.
    set(&mut c, "r", b"v", &["EX", "3600", "DELTA", "1000"]).unwrap();
    let (_, status, token) = getx(&mut c, "r", &["BETA", HUGE_BETA]);
    assert_eq!(status, "REFRESH");
    let n: i64 = redis::cmd("CACHE.DEL").arg("r").query(&mut c).unwrap();
    assert_eq!(n, 1);
    assert_fill_refused(&mut c, "r", token.unwrap());
    assert!(!exists(&mut c, "r"));
}

#[test]
fn fill_refused_after_plain_del() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, token) = getx(&mut c, "k", &[]);
    let n: i64 = redis::cmd("DEL").arg("k").query(&mut c).unwrap();
    assert_eq!(n, 1);
    assert_fill_refused(&mut c, "k", token.unwrap());
    assert!(!exists(&mut c, "k"));

    set(&mut c, "r", b"v", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "r");
    let (_, status, token) = getx(&mut c, "r", &[]);
    assert_eq!(status, "STALE");
    let n: i64 = redis::cmd("DEL").arg("r").query(&mut c).unwrap();
    assert_eq!(n, 1);
    assert_fill_refused(&mut c, "r", token.unwrap());
    assert!(!exists(&mut c, "r"));
}

#[test]
fn fill_refused_after_unlink() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, token) = getx(&mut c, "k", &[]);
    let n: i64 = redis::cmd("UNLINK").arg("k").query(&mut c).unwrap();
    assert_eq!(n, 1);
    assert_fill_refused(&mut c, "k", token.unwrap());
    assert!(!exists(&mut c, "k"));
}

#[test]
fn fill_refused_after_an_authoritative_set() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, token) = getx(&mut c, "k", &[]);
    let token = token.unwrap();
    let revoked = counter(&mut c, "leases_revoked");
    let v = set(&mut c, "k", b"authoritative", &["EX", "3600"]).unwrap();
    assert_eq!(counter(&mut c, "leases_revoked"), revoked + 1);
    assert_eq!(
        lease_token_of(&mut c, "k"),
        None,
        "the write revoked the lease"
    );
    assert_fill_refused(&mut c, "k", token);
    assert_eq!(cache_get(&mut c, "k"), Some(b"authoritative".to_vec()));
    assert_eq!(version_of(&mut c, "k"), Some(v));
}

#[test]
fn fill_refused_with_the_old_token_after_a_newer_lease() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t1) = getx(&mut c, "k", &["LEASE", &short_lease()]);
    let t1 = t1.unwrap();
    let expires = inspect_int(&mut c, "k", "lease-expires-ms").unwrap();
    wait_past(&mut c, expires, PATIENCE);
    let (_, status, t2) = getx(&mut c, "k", &["LEASE", "600000"]);
    assert_eq!(status, "MISS");
    let t2 = t2.unwrap();
    assert!(t2 > t1);
    assert_fill_refused(&mut c, "k", t1);
    assert_eq!(
        lease_token_of(&mut c, "k"),
        Some(t2),
        "the new lease survives"
    );
    let v = fill(&mut c, "k", b"fresh", t2).expect("current token fills");
    assert_eq!(cache_get(&mut c, "k"), Some(b"fresh".to_vec()));
    assert_eq!(version_of(&mut c, "k"), Some(v));
}

#[test]
fn fill_with_the_current_token_is_stored_and_answers_a_version() {
    let s = Server::start();
    let mut c = s.conn();
    // MISS lease.
    let (_, _, token) = getx(&mut c, "k", &[]);
    let token = token.unwrap();
    let filled = counter(&mut c, "leases_filled");
    let v1 = fill(&mut c, "k", b"one", token).expect("stored");
    assert_eq!(version_of(&mut c, "k"), Some(v1));
    assert_eq!(lease_token_of(&mut c, "k"), None, "the lease is fulfilled");
    assert_eq!(counter(&mut c, "leases_filled"), filled + 1);
    assert_eq!(
        getx(&mut c, "k", &[]),
        (Some(b"one".to_vec()), "HIT".into(), None)
    );
    let pttl: i64 = redis::cmd("PTTL").arg("k").query(&mut c).unwrap();
    assert!(pttl > 3_500_000, "the fill's TTL applies: {pttl}");

    // STALE lease.
    set(&mut c, "s", b"old", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "s");
    let (_, _, token) = getx(&mut c, "s", &[]);
    let v2 = fill(&mut c, "s", b"new", token.unwrap()).expect("stored");
    assert!(v2 > v1);
    assert_eq!(
        getx(&mut c, "s", &[]),
        (Some(b"new".to_vec()), "HIT".into(), None)
    );
}

// ---------------------------------------------------------------------------------------------
// DELTA.
// ---------------------------------------------------------------------------------------------

#[test]
fn delta_is_measured_from_lease_grant_to_fill() {
    let s = Server::start();
    let mut c = s.conn();
    // MISS lease.
    let (_, _, token) = getx(&mut c, "k", &[]);
    let granted = inspect_int(&mut c, "k", "lease-granted-ms").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    fill(&mut c, "k", b"v", token.unwrap()).expect("stored");
    let upper = server_ms(&mut c) - granted;
    let delta = inspect_int(&mut c, "k", "delta-ms").unwrap();
    assert!(
        (150..=upper).contains(&delta),
        "measured delta {delta} not in [150, {upper}]"
    );

    // REFRESH lease on an entry whose stated delta was very different.
    set(&mut c, "r", b"v", &["EX", "3600", "DELTA", "50000"]).unwrap();
    let (_, status, token) = getx(&mut c, "r", &["BETA", HUGE_BETA]);
    assert_eq!(status, "REFRESH");
    let granted = inspect_int(&mut c, "r", "lease-granted-ms").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    fill(&mut c, "r", b"v2", token.unwrap()).expect("stored");
    let upper = server_ms(&mut c) - granted;
    let delta = inspect_int(&mut c, "r", "delta-ms").unwrap();
    assert!(
        (150..=upper).contains(&delta),
        "measured delta {delta} not in [150, {upper}]"
    );
}

#[test]
fn delta_given_explicitly_is_stored() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, token) = getx(&mut c, "k", &[]);
    std::thread::sleep(Duration::from_millis(20));
    let t = token.unwrap().to_string();
    set(
        &mut c,
        "k",
        b"v",
        &["EX", "3600", "TOKEN", &t, "DELTA", "1234"],
    )
    .unwrap();
    assert_eq!(inspect_int(&mut c, "k", "delta-ms"), Some(1234));
    set(&mut c, "k", b"v", &["EX", "3600", "DELTA", "777"]).unwrap();
    assert_eq!(inspect_int(&mut c, "k", "delta-ms"), Some(777));
    set(&mut c, "k", b"v", &["EX", "3600", "DELTA", "0"]).unwrap();
    assert_eq!(inspect_int(&mut c, "k", "delta-ms"), Some(0));
}

#[test]
fn authoritative_set_without_delta_keeps_the_previous_delta() {
    let s = Server::start();
    let mut c = s.conn();
    let default_delta = config_i64(&mut c, "cache.default-delta-ms");
    set(&mut c, "k", b"v", &["EX", "3600"]).unwrap();
    assert_eq!(
        inspect_int(&mut c, "k", "delta-ms"),
        Some(default_delta),
        "new entry without DELTA"
    );
    set(&mut c, "k", b"v", &["EX", "3600", "DELTA", "4321"]).unwrap();
    set(&mut c, "k", b"v2", &["EX", "3600"]).unwrap();
    assert_eq!(inspect_int(&mut c, "k", "delta-ms"), Some(4321));
    set(&mut c, "k", b"v3", &["PX", "100000", "GRACE", "10"]).unwrap();
    assert_eq!(inspect_int(&mut c, "k", "delta-ms"), Some(4321));

    // A measured delta is kept too, and revoking a lease does not measure anything.
    let (_, _, token) = getx(&mut c, "m", &[]);
    std::thread::sleep(Duration::from_millis(60));
    fill(&mut c, "m", b"v", token.unwrap()).unwrap();
    let measured = inspect_int(&mut c, "m", "delta-ms").unwrap();
    assert!(measured >= 60);
    set(&mut c, "m", b"v2", &["EX", "3600", "DELTA", "1000"]).unwrap();
    let (_, status, _) = getx(&mut c, "m", &["BETA", HUGE_BETA]);
    assert_eq!(status, "REFRESH");
    std::thread::sleep(Duration::from_millis(30));
    set(&mut c, "m", b"v3", &["EX", "3600"]).unwrap();
    assert_eq!(inspect_int(&mut c, "m", "delta-ms"), Some(1000));
}

// ---------------------------------------------------------------------------------------------
// Versions and tokens.
// ---------------------------------------------------------------------------------------------

#[test]
fn versions_strictly_increase_across_overwrites_and_deletes() {
    let s = Server::start();
    let mut c = s.conn();
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(set(&mut c, "k", format!("v{i}").as_bytes(), &["EX", "3600"]).unwrap());
    }
    let n: i64 = redis::cmd("CACHE.DEL").arg("k").query(&mut c).unwrap();
    assert_eq!(n, 1);
    versions.push(set(&mut c, "k", b"a", &["EX", "3600"]).unwrap());
    let _: i64 = redis::cmd("DEL").arg("k").query(&mut c).unwrap();
    versions.push(set(&mut c, "k", b"b", &["EX", "3600"]).unwrap());
    let _: i64 = redis::cmd("UNLINK").arg("k").query(&mut c).unwrap();
    // Recreated through a fill.
    let (_, _, token) = getx(&mut c, "k", &[]);
    versions.push(fill(&mut c, "k", b"c", token.unwrap()).unwrap());
    // Recreated after the key expired on its own.
    versions.push(set(&mut c, "k", b"d", &["PX", "1", "GRACE", "0"]).unwrap());
    assert!(
        wait_until(PATIENCE, || !exists(&mut c, "k")),
        "key did not expire"
    );
    versions.push(set(&mut c, "k", b"e", &["EX", "3600"]).unwrap());
    assert_eq!(version_of(&mut c, "k"), versions.last().copied());
    assert_strictly_increasing(&versions, "versions");
}

#[test]
fn tokens_are_never_reused_across_delete_and_recreate() {
    let s = Server::start();
    let mut c = s.conn();
    // Per key: the tokens issued for it, and the versions it was written with.
    let mut tokens: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
    for i in 0..60 {
        let key = if i % 2 == 0 { "k" } else { "j" };
        let (_, status, token) = getx(&mut c, key, &[]);
        assert_eq!(status, "MISS", "cycle {i}");
        let token = token.unwrap();
        tokens.entry(key).or_default().push(token);
        match i % 5 {
            0 => {
                let v = fill(&mut c, key, b"v", token).unwrap();
                versions.entry(key).or_default().push(v);
                let _: i64 = redis::cmd("CACHE.DEL").arg(key).query(&mut c).unwrap();
            }
            1 => {
                let _: i64 = redis::cmd("CACHE.DEL").arg(key).query(&mut c).unwrap();
            }
            2 => {
                let _: i64 = redis::cmd("DEL").arg(key).query(&mut c).unwrap();
            }
            3 => {
                let _: i64 = redis::cmd("UNLINK").arg(key).query(&mut c).unwrap();
            }
            _ => {
                // Authoritative write, then an early refresh lease, then delete.
                let v = set(&mut c, key, b"a", &["EX", "3600", "DELTA", "1000"]).unwrap();
                versions.entry(key).or_default().push(v);
                let (_, status, t) = getx(&mut c, key, &["BETA", HUGE_BETA]);
                assert_eq!(status, "REFRESH");
                tokens.entry(key).or_default().push(t.unwrap());
                let _: i64 = redis::cmd("DEL").arg(key).query(&mut c).unwrap();
            }
        }
    }
    for (key, ts) in &tokens {
        assert_eq!(ts.len(), 36, "{key}: {ts:?}");
        assert_strictly_increasing(ts, &format!("tokens of {key}"));
    }
    for (key, vs) in &versions {
        assert_strictly_increasing(vs, &format!("versions of {key}"));
    }
}

#[test]
fn ids_after_a_restart_with_rdb_are_larger() {
    let mut s = Server::start();
    let mut c = s.conn();
    let mut before = Vec::new();
    for i in 0..200 {
        before.push(set(&mut c, format!("k{i}"), b"v", &["EX", "3600"]).unwrap());
    }
    let (_, _, t) = getx(&mut c, "pending", &["LEASE", "600000"]);
    before.push(t.unwrap());
    set(&mut c, "r", b"v", &["EX", "3600", "DELTA", "1000"]).unwrap();
    // A lease long enough to outlive the save, the restart and the load on any server (under
    // valgrind these take seconds).
    let (_, _, t) = getx(&mut c, "r", &["BETA", HUGE_BETA, "LEASE", "600000"]);
    before.push(t.unwrap());
    let max_before = *before.iter().max().unwrap();
    let k0_version = version_of(&mut c, "k0").unwrap();
    drop(c);

    s.restart(true);
    let mut c = s.conn();
    assert_eq!(version_of(&mut c, "k0"), Some(k0_version), "RDB was loaded");
    let v = set(&mut c, "k0", b"v2", &["EX", "3600"]).unwrap();
    assert!(v > max_before, "version {v} after restart <= {max_before}");
    let (_, status, t) = getx(&mut c, "new", &[]);
    assert_eq!(status, "MISS");
    assert!(t.unwrap() > max_before);
    let (_, status, t) = getx(&mut c, "r", &["BETA", HUGE_BETA]);
    assert_eq!(
        status, "HIT",
        "the refresh lease survived the restart: {t:?}"
    );
}

#[test]
fn ids_after_a_restart_without_persistence_are_larger() {
    let mut s = Server::start_with(&["--save", ""]);
    let mut c = s.conn();
    let mut before = Vec::new();
    for i in 0..200 {
        before.push(set(&mut c, format!("k{i}"), b"v", &["EX", "3600"]).unwrap());
        let (_, _, t) = getx(&mut c, format!("p{i}"), &[]);
        before.push(t.unwrap());
    }
    let max_before = *before.iter().max().unwrap();
    drop(c);

    s.restart(false);
    let mut c = s.conn();
    assert!(!exists(&mut c, "k0"), "nothing persisted");
    let v = set(&mut c, "k0", b"v2", &["EX", "3600"]).unwrap();
    assert!(v > max_before, "version {v} after restart <= {max_before}");
    let (_, status, t) = getx(&mut c, "p0", &[]);
    assert_eq!(status, "MISS");
    assert!(t.unwrap() > max_before);
}

/// A version or token loaded from the RDB is never issued again for its key, even when it is
/// ahead of this server's clock (data written by a node whose clock ran ahead). The entries
/// are planted with RESTORE of crafted payloads, an hour ahead (a client's RESTORE may bring
/// ids up to a day ahead).
#[test]
fn ids_loaded_from_rdb_are_never_reissued_even_ahead_of_the_clock() {
    let mut s = Server::start();
    let mut c = s.conn();
    let now = server_ms(&mut c);
    let clock = (info_cache(&mut c)["last_id"] as u64).max((now as u64) << 10);
    let future_version: u64 = clock + (3_600_000 << 10);
    let future_token = future_version + 5;
    // RESTORE gives the entry a fresh version where it lands: above every id seen, so above
    // the planted one too. What the test follows is the version the key has then.
    let plant = |c: &mut Connection, key: &str, lease: Option<(u64, i64, i64)>| -> u64 {
        let mut r = records::Record::valued(now + 3_600_000, 0, 100, future_version);
        if let Some((token, granted, expires)) = lease {
            r = r.with_lease(token, granted, expires);
        }
        records::restore(c, key, &r, Some(b"v")).unwrap();
        let v = version_of(c, key).expect("restored");
        assert!(
            v > future_version,
            "version {v} after RESTORE of {future_version}"
        );
        v
    };
    plant(&mut c, "a", None);
    plant(&mut c, "b", Some((future_token, now, now + 3_600_000)));
    assert_eq!(lease_token_of(&mut c, "b"), Some(future_token));
    // Observed on RESTORE.
    let v = set(&mut c, "a", b"v2", &["EX", "3600"]).unwrap();
    assert!(
        v > future_token,
        "version {v} after RESTORE of {future_version} and token {future_token}"
    );

    // Observed on RDB load.
    let loaded = plant(&mut c, "a", None);
    drop(c);
    s.restart(true);
    let mut c = s.conn();
    assert_eq!(version_of(&mut c, "a"), Some(loaded), "RDB loaded");
    assert_eq!(
        lease_token_of(&mut c, "b"),
        Some(future_token),
        "RDB loaded"
    );
    let v = set(&mut c, "a", b"v2", &["EX", "3600"]).unwrap();
    assert!(v > loaded, "version {v} <= loaded {loaded}");
    // Revoke b's loaded lease, then have a new one granted: its token must be new.
    let vb = set(&mut c, "b", b"v2", &["EX", "3600", "DELTA", "1000"]).unwrap();
    assert!(vb > loaded);
    let (_, status, t) = getx(&mut c, "b", &["BETA", HUGE_BETA]);
    assert_eq!(status, "REFRESH");
    let t = t.unwrap();
    assert!(t > future_token, "token {t} <= loaded token {future_token}");
}

// ---------------------------------------------------------------------------------------------
// Writes and replication.
// ---------------------------------------------------------------------------------------------

/// A primary (no periodic PING during the test) and a replica in sync with it.
fn primary_and_replica() -> (Server, Server) {
    let primary = Server::start_with(&["--repl-ping-replica-period", "60"]);
    let port = primary.port.to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut r = replica.conn();
    assert!(
        wait_until(PATIENCE, || {
            info_field(&mut r, "replication", "master_link_status").as_deref() == Some("up")
        }),
        "replica never linked:\n{}",
        replica.log()
    );
    (primary, replica)
}

fn wait_replica_caught_up(primary: &Server, replica: &Server) {
    let mut p = primary.conn();
    let mut r = replica.conn();
    let target = repl_offset(&mut p);
    assert!(
        wait_until(PATIENCE, || {
            info_field(&mut r, "replication", "slave_repl_offset")
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|o| o >= target)
        }),
        "replica did not catch up to {target}"
    );
}

#[test]
fn getx_without_a_grant_never_writes_or_replicates() {
    let (primary, replica) = primary_and_replica();
    let mut p = primary.conn();
    set(&mut p, "k", b"v", &["EX", "3600"]).unwrap();
    getx(&mut p, "pending", &["LEASE", "600000"]);
    set(&mut p, "stale", b"old", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut p, "stale");
    assert!(getx(&mut p, "stale", &[]).2.is_some());
    wait_replica_caught_up(&primary, &replica);

    let before = repl_offset(&mut p);
    for _ in 0..100 {
        assert_eq!(getx(&mut p, "k", &[]).1, "HIT");
    }
    for _ in 0..20 {
        assert_eq!(getx(&mut p, "pending", &[]).1, "LOCKED");
        assert_eq!(
            getx(&mut p, "stale", &[]),
            (Some(b"old".to_vec()), "STALE".into(), None)
        );
    }
    assert_eq!(
        repl_offset(&mut p),
        before,
        "HIT/LOCKED/STALE-without-token replies must replicate nothing"
    );
}

#[test]
fn getx_that_grants_a_lease_replicates_it() {
    let (primary, replica) = primary_and_replica();
    let mut p = primary.conn();
    set(&mut p, "k", b"v", &["EX", "3600", "DELTA", "1000"]).unwrap();
    wait_replica_caught_up(&primary, &replica);
    let mut r = replica.conn();

    let before = repl_offset(&mut p);
    let (_, status, token) = getx(&mut p, "m", &[]);
    assert_eq!(status, "MISS");
    let after_miss = repl_offset(&mut p);
    assert!(after_miss > before, "a MISS grant must replicate");
    assert!(
        wait_until(PATIENCE, || lease_token_of(&mut r, "m") == token),
        "replica never saw the MISS lease"
    );

    let (_, status, token) = getx(&mut p, "k", &["BETA", HUGE_BETA]);
    assert_eq!(status, "REFRESH");
    assert!(
        repl_offset(&mut p) > after_miss,
        "a REFRESH grant must replicate"
    );
    assert!(
        wait_until(PATIENCE, || lease_token_of(&mut r, "k") == token),
        "replica never saw the REFRESH lease"
    );
    assert_eq!(cache_get(&mut r, "k"), Some(b"v".to_vec()), "value kept");
}

// ---------------------------------------------------------------------------------------------
// INFO counters.
// ---------------------------------------------------------------------------------------------

fn assert_counters(c: &mut Connection, step: &str, expected: &[(&str, i64)]) {
    let info = info_cache(c);
    for (name, want) in expected {
        assert_eq!(
            info.get(*name).copied(),
            Some(*want),
            "after {step}: cache_{name}"
        );
    }
}

#[test]
fn info_counters_follow_a_scripted_sequence() {
    let s = Server::start();
    let mut c = s.conn();
    let mut exp: HashMap<&str, i64> = [
        "hits",
        "misses",
        "stale_hits",
        "early_refreshes",
        "leases_granted",
        "leases_filled",
        "leases_revoked",
        "fills_refused",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    let mut check = |c: &mut Connection, step: &str, changes: &[(&'static str, i64)]| {
        for (k, d) in changes {
            *exp.get_mut(k).unwrap() += d;
        }
        let expected: Vec<(&str, i64)> = exp.iter().map(|(k, v)| (*k, *v)).collect();
        assert_counters(c, step, &expected);
    };
    check(&mut c, "start", &[]);

    let (_, _, ta) = getx(&mut c, "a", &[]);
    check(&mut c, "MISS", &[("misses", 1), ("leases_granted", 1)]);
    assert_eq!(getx(&mut c, "a", &[]).1, "LOCKED");
    check(&mut c, "LOCKED", &[]);
    fill(&mut c, "a", b"v", ta.unwrap()).unwrap();
    check(&mut c, "fill", &[("leases_filled", 1)]);
    assert_eq!(getx(&mut c, "a", &[]).1, "HIT");
    check(&mut c, "HIT", &[("hits", 1)]);
    assert_eq!(fill(&mut c, "a", b"v", ta.unwrap()), None);
    check(&mut c, "used-up token", &[("fills_refused", 1)]);

    set(&mut c, "b", b"v", &["EX", "3600", "DELTA", "1000"]).unwrap();
    check(&mut c, "authoritative set without lease", &[]);
    assert_eq!(getx(&mut c, "b", &["BETA", HUGE_BETA]).1, "REFRESH");
    // A REFRESH serves a fresh value: it counts as a hit and as an early refresh.
    check(
        &mut c,
        "REFRESH",
        &[("hits", 1), ("early_refreshes", 1), ("leases_granted", 1)],
    );
    assert_eq!(getx(&mut c, "b", &["BETA", HUGE_BETA]).1, "HIT");
    check(&mut c, "HIT under lease", &[("hits", 1)]);
    set(&mut c, "b", b"auth", &["EX", "3600"]).unwrap();
    check(
        &mut c,
        "authoritative set over lease",
        &[("leases_revoked", 1)],
    );

    set(&mut c, "c", b"old", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "c");
    let (_, _, tc) = getx(&mut c, "c", &[]);
    check(
        &mut c,
        "STALE+token",
        &[("stale_hits", 1), ("leases_granted", 1)],
    );
    assert_eq!(getx(&mut c, "c", &[]).2, None);
    check(&mut c, "STALE", &[("stale_hits", 1)]);
    fill(&mut c, "c", b"new", tc.unwrap()).unwrap();
    check(&mut c, "stale fill", &[("leases_filled", 1)]);

    let (_, _, td) = getx(&mut c, "d", &[]);
    check(&mut c, "MISS d", &[("misses", 1), ("leases_granted", 1)]);
    let _: i64 = redis::cmd("CACHE.DEL").arg("d").query(&mut c).unwrap();
    check(&mut c, "CACHE.DEL under lease", &[("leases_revoked", 1)]);
    assert_eq!(fill(&mut c, "d", b"v", td.unwrap()), None);
    check(&mut c, "fill after CACHE.DEL", &[("fills_refused", 1)]);
    let _: i64 = redis::cmd("CACHE.DEL").arg("a").query(&mut c).unwrap();
    check(&mut c, "CACHE.DEL without lease", &[]);
}

/// INFO reports leases expired (the INFO section of the README). A lease that runs out unfilled
/// is an expired lease whether or not the entry had a value.
#[test]
fn info_counts_expired_leases() {
    let s = Server::start();
    let mut c = s.conn();
    let start = Instant::now();

    // On a stale value: the lease runs out, the next caller is handed a new one.
    set(&mut c, "s", b"old", &["PX", "50", "GRACE", "600000"]).unwrap();
    wait_until_stale(&mut c, "s");
    getx(&mut c, "s", &["LEASE", &short_lease()]);
    let expires = inspect_int(&mut c, "s", "lease-expires-ms").unwrap();
    wait_past(&mut c, expires, PATIENCE);
    assert!(getx(&mut c, "s", &[]).2.is_some());
    assert_eq!(counter(&mut c, "leases_expired"), 1, "stale entry's lease");

    // On a pending entry (first fill never came): the next caller gets MISS with a new lease.
    getx(&mut c, "p", &["LEASE", &short_lease()]);
    let expires = inspect_int(&mut c, "p", "lease-expires-ms").unwrap();
    wait_past(&mut c, expires, PATIENCE);
    let (_, status, _) = getx(&mut c, "p", &[]);
    assert_eq!(status, "MISS");
    assert_eq!(
        counter(&mut c, "leases_expired"),
        2,
        "pending entry's lease expired unfilled ({:?} in)",
        start.elapsed()
    );
}

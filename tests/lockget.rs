//! `CACHE.LOCKGET` and `CACHE.RELEASE` against a real redis-server: the statuses, callers
//! parked with `WAIT` (woken by a fill, handed the lease one at a time when a lease ends
//! unfilled by expiry, RELEASE or a delete, timed out), a herd of 200 callers woken by one fill
//! (latencies printed), disconnecting waiters, MULTI/EXEC and scripts, replication of the
//! effects, and bad input.
//!
//! Timing: every wait is a deadline wait on an observable state; bounds are generous. Tests
//! that measure latency take `TIMING` exclusively so that no other test of this file competes
//! for the CPU while they measure; the others share it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Barrier, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use support::commands::*;
use support::server::{slow, start_replica, wait_until, Server};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

static TIMING: RwLock<()> = RwLock::new(());

/// For tests that only need the server to answer in reasonable time.
fn shared() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|e| e.into_inner())
}

/// For tests that measure latencies: nothing else of this file runs meanwhile.
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(|e| e.into_inner())
}

const LONG: Duration = Duration::from_secs(10);

/// What one waiter thread reports: its index, its reply, and when it received the reply.
type Report = (usize, Triple, Instant);

/// Starts a thread that sends `CACHE.LOCKGET key opts` on its own connection and reports its
/// reply on `tx`.
fn spawn_lockget(
    url: &str,
    key: &str,
    opts: &[&str],
    idx: usize,
    tx: mpsc::Sender<Report>,
) -> JoinHandle<()> {
    let url = url.to_string();
    let key = key.to_string();
    let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    let mut c = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(LONG)
        .expect("connect");
    std::thread::spawn(move || {
        let r: Triple = redis::cmd("CACHE.LOCKGET")
            .arg(&key)
            .arg(&opts)
            .query(&mut c)
            .unwrap();
        let at = Instant::now();
        let _ = tx.send((idx, r, at));
    })
}

/// Parks `n` callers `CACHE.LOCKGET key opts` one after the other (each is parked before the
/// next one is sent, so index 0 is the longest-waiting). `already` callers were parked before.
fn park_in_order(
    s: &Server,
    c: &mut Connection,
    key: &str,
    opts: &[&str],
    n: usize,
    already: i64,
) -> (Receiver<Report>, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(spawn_lockget(&s.url(), key, opts, i, tx.clone()));
        wait_parked(
            c,
            already + i as i64 + 1,
            LONG,
            &format!("parking caller {i}"),
        );
    }
    (rx, handles)
}

fn recv(rx: &Receiver<Report>, what: &str) -> Report {
    rx.recv_timeout(LONG)
        .unwrap_or_else(|e| panic!("{what}: no reply from a parked caller ({e:?})"))
}

/// No parked caller has answered.
fn assert_silent(rx: &Receiver<Report>, what: &str) {
    match rx.recv_timeout(Duration::from_millis(50)) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(r) => panic!("{what}: a caller answered unexpectedly: {r:?}"),
        Err(e) => panic!("{what}: {e:?}"),
    }
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.join().expect("waiter thread");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Statuses without waiting
// ---------------------------------------------------------------------------------------------

#[test]
fn hit_on_a_fresh_value() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"v\0al", &["EX", "60"]).unwrap();
    let before = counter(&mut c, "leases_granted");
    assert_eq!(
        lockget(&mut c, "k", &[]),
        (Some(b"v\0al".to_vec()), "HIT".into(), None)
    );
    assert_eq!(
        lockget(&mut c, "k", &["PX", "100", "WAIT", "5000"]),
        (Some(b"v\0al".to_vec()), "HIT".into(), None)
    );
    assert_eq!(counter(&mut c, "leases_granted"), before);
    assert_eq!(lease_token_of(&mut c, "k"), None);
}

#[test]
fn miss_grants_the_lease_then_locked_without_wait() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (v, status, token) = lockget(&mut c, "k", &[]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    let token = token.expect("MISS carries a token");
    assert!(token > 0);
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
    assert_eq!(counter(&mut c, "leases_granted"), 1);

    let d = digest(&mut c);
    let t0 = Instant::now();
    assert_eq!(lockget(&mut c, "k", &[]), (None, "LOCKED".into(), None));
    assert_eq!(
        lockget(&mut c, "k", &["PX", "99999"]),
        (None, "LOCKED".into(), None)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "LOCKED answers at once"
    );
    assert_eq!(digest(&mut c), d, "LOCKED changes nothing");
    assert_eq!(lease_token_of(&mut c, "k"), Some(token));
    assert_eq!(counter(&mut c, "leases_granted"), 1);
    assert_eq!(counter(&mut c, "lockget_waits"), 0);

    // The fill lands; everyone gets HIT.
    assert!(fill(&mut c, "k", b"val", token).is_some());
    assert_eq!(
        lockget(&mut c, "k", &[]),
        (Some(b"val".to_vec()), "HIT".into(), None)
    );
}

#[test]
fn default_lease_length_is_cache_lease_ms_and_px_sets_it() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let default = config_i64(&mut c, "cache.lease-ms");
    let (_, status, token) = lockget(&mut c, "d", &[]);
    assert_eq!(status, "MISS");
    let i = inspect(&mut c, "d").unwrap();
    assert_eq!(i.int("lease-token"), Some(token.unwrap() as i64));
    assert_eq!(
        i.int("lease-expires-ms").unwrap() - i.int("lease-granted-ms").unwrap(),
        default
    );

    let (_, status, token) = lockget(&mut c, "p", &["PX", "12345"]);
    assert_eq!(status, "MISS");
    let i = inspect(&mut c, "p").unwrap();
    assert_eq!(i.int("lease-token"), Some(token.unwrap() as i64));
    assert_eq!(
        i.int("lease-expires-ms").unwrap() - i.int("lease-granted-ms").unwrap(),
        12345
    );
    // Options are case-insensitive, in any order.
    let (_, status, _) = lockget(&mut c, "q", &["wait", "10", "px", "777"]);
    assert_eq!(status, "MISS");
    let i = inspect(&mut c, "q").unwrap();
    assert_eq!(
        i.int("lease-expires-ms").unwrap() - i.int("lease-granted-ms").unwrap(),
        777
    );
}

#[test]
fn stale_value_is_served_with_one_token_and_never_waits() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "s", b"old", &["PX", "1", "GRACE", "60000"]).unwrap();
    let fresh_until = inspect(&mut c, "s").unwrap().int("fresh-until-ms").unwrap();
    wait_past(&mut c, fresh_until, LONG);

    // No lease out: STALE with the token, at once even with WAIT; PX sets its length.
    let t0 = Instant::now();
    let (v, status, token) = lockget(&mut c, "s", &["PX", "4321", "WAIT", "5000"]);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"old"[..]), "STALE")
    );
    let token = token.expect("first STALE caller gets the lease");
    let i = inspect(&mut c, "s").unwrap();
    assert_eq!(i.int("lease-token"), Some(token as i64));
    assert_eq!(
        i.int("lease-expires-ms").unwrap() - i.int("lease-granted-ms").unwrap(),
        4321
    );

    // A lease is out: STALE without a token, still at once with WAIT.
    let d = digest(&mut c);
    assert_eq!(
        lockget(&mut c, "s", &["WAIT", "5000"]),
        (Some(b"old".to_vec()), "STALE".into(), None)
    );
    assert_eq!(
        lockget(&mut c, "s", &[]),
        (Some(b"old".to_vec()), "STALE".into(), None)
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "LOCKGET on a stale value must not wait: {took:?}"
    );
    assert_eq!(digest(&mut c), d);
    assert_eq!(counter(&mut c, "lockget_waits"), 0);
    assert_eq!(parked(&mut c), 0);

    // The stale-lease holder fills: HIT.
    assert!(fill(&mut c, "s", b"new", token).is_some());
    assert_eq!(
        lockget(&mut c, "s", &["WAIT", "5000"]),
        (Some(b"new".to_vec()), "HIT".into(), None)
    );
}

// ---------------------------------------------------------------------------------------------
// A herd of 200 woken by one fill
// ---------------------------------------------------------------------------------------------

#[test]
fn herd_of_200_one_miss_all_others_woken_by_the_fill() {
    const N: usize = 200;
    let _g = exclusive();
    let s = Server::start();
    let mut c = s.conn();
    let barrier = Arc::new(Barrier::new(N));
    let (tx, rx) = mpsc::channel::<Report>();
    let mut handles = Vec::new();
    for i in 0..N {
        let mut w = s.conn();
        let barrier = barrier.clone();
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let r: Triple = redis::cmd("CACHE.LOCKGET")
                .arg("herd")
                .arg("PX")
                .arg(5000)
                .arg("WAIT")
                .arg(5000)
                .query(&mut w)
                .unwrap();
            let at = Instant::now();
            tx.send((i, r, at)).unwrap();
        }));
    }
    drop(tx);

    // Exactly one caller gets the lease; nobody else answers before the fill.
    let (winner, (v, status, token), _) = recv(&rx, "the lease holder");
    assert_eq!((v, status.as_str()), (None, "MISS"), "caller {winner}");
    let token = token.expect("MISS carries a token");
    wait_parked(&mut c, (N - 1) as i64, LONG, "the herd parks");
    assert_silent(&rx, "before the fill");
    assert_eq!(counter(&mut c, "leases_granted"), 1);

    let fill_at = Instant::now();
    assert!(fill(&mut c, "herd", b"the value", token).is_some());
    let fill_rtt = fill_at.elapsed();

    let mut latencies = Vec::new();
    for _ in 0..N - 1 {
        let (i, r, at) = recv(&rx, "after the fill");
        assert_eq!(
            r,
            (Some(b"the value".to_vec()), "HIT".to_string(), None),
            "caller {i}"
        );
        latencies.push(at.saturating_duration_since(fill_at));
    }
    join_all(handles);
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p).div_ceil(100) - 1];
    let (p50, p99, max) = (pct(50), pct(99), *latencies.last().unwrap());
    eprintln!(
        "LOCKGET herd: {} waiters woken by one fill: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         after the fill was sent (fill round trip {:.2} ms)",
        N - 1,
        ms(p50),
        ms(p99),
        ms(max),
        ms(fill_rtt)
    );
    // 50 ms on a server at full speed; `slow()` times that under valgrind.
    let bound = Duration::from_millis(50) * slow();
    assert!(
        max <= bound,
        "every waiter must get the value within {bound:?} of the fill: p50 {p50:?} p99 {p99:?} max {max:?}"
    );
    let info = info_cache(&mut c);
    assert_eq!(info["lockget_parked"], 0);
    assert_eq!(info["lockget_waits"], (N - 1) as i64);
    assert_eq!(info["lockget_wakeups"], (N - 1) as i64);
    assert_eq!(info["lockget_timeouts"], 0);
    assert_eq!(info["leases_granted"], 1);
}

// ---------------------------------------------------------------------------------------------
// Hand-over when the lease ends unfilled
// ---------------------------------------------------------------------------------------------

#[test]
fn holder_never_fills_the_longest_waiter_gets_the_lease_at_expiry() {
    const N: usize = 4;
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, status, t0) = lockget(&mut c, "k", &["PX", "300"]);
    assert_eq!(status, "MISS");
    let t0 = t0.unwrap();
    let first = inspect(&mut c, "k").unwrap();
    let expires0 = first.int("lease-expires-ms").unwrap();
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "5000"], N, 0);
    let handovers = counter(&mut c, "lockget_handovers");

    // The lease runs out: caller 0 (longest waiting) gets MISS with a new, larger token.
    let (i, (v, status, t1), _) = recv(&rx, "hand-over at expiry");
    assert_eq!(
        (i, v, status.as_str()),
        (0, None, "MISS"),
        "the longest-waiting caller is handed the lease"
    );
    let t1 = t1.expect("handed-over MISS carries a token");
    assert!(t1 > t0, "new token {t1} must be larger than {t0}");
    let now = inspect(&mut c, "k").unwrap();
    assert_eq!(now.int("lease-token"), Some(t1 as i64));
    let granted1 = now.int("lease-granted-ms").unwrap();
    assert!(
        granted1 >= expires0,
        "handed over at {granted1}, before the lease ended at {expires0}"
    );
    assert!(
        granted1 - expires0 <= 500,
        "hand-over {} ms after the lease ended",
        granted1 - expires0
    );
    assert_eq!(
        now.int("lease-expires-ms").unwrap() - granted1,
        60000,
        "the waiter's own PX"
    );
    // The others keep waiting.
    wait_parked(&mut c, (N - 1) as i64, LONG, "the others keep waiting");
    assert_silent(&rx, "after the hand-over");
    assert_eq!(counter(&mut c, "lockget_handovers"), handovers + 1);

    // The dead holder's late fill is refused and changes nothing.
    let d = digest(&mut c);
    assert_eq!(fill(&mut c, "k", b"late", t0), None);
    assert_eq!(digest(&mut c), d);
    assert_eq!(lease_token_of(&mut c, "k"), Some(t1));
    assert_silent(&rx, "after the refused fill");

    // The new holder fills: the others get HIT.
    assert!(fill(&mut c, "k", b"fresh", t1).is_some());
    for _ in 1..N {
        let (i, r, _) = recv(&rx, "after the fill");
        assert_eq!(
            r,
            (Some(b"fresh".to_vec()), "HIT".into(), None),
            "caller {i}"
        );
    }
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
    assert_eq!(fill(&mut c, "k", b"later", t0), None, "still refused");
}

#[test]
fn handed_over_lease_that_also_lapses_goes_to_the_next_waiter() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    // Leases short enough to lapse during the test, long enough (scaled to the server's
    // speed) for the three callers to park before the first one lapses.
    let px = |ms: u32| (ms * slow()).to_string();
    let (_, status, t0) = lockget(&mut c, "k", &["PX", &px(100)]);
    assert_eq!(status, "MISS");
    let opts = ["PX", &px(200), "WAIT", &px(5000)];
    let (rx, handles) = park_in_order(&s, &mut c, "k", &opts, 3, 0);
    let (i, (_, status, t1), _) = recv(&rx, "first hand-over");
    assert_eq!((i, status.as_str()), (0, "MISS"));
    let (i, (_, status, t2), _) = recv(&rx, "second hand-over");
    assert_eq!((i, status.as_str()), (1, "MISS"));
    let (t0, t1, t2) = (t0.unwrap(), t1.unwrap(), t2.unwrap());
    assert!(t0 < t1 && t1 < t2, "tokens {t0} {t1} {t2}");
    assert_eq!(fill(&mut c, "k", b"x", t1), None, "lapsed lease");
    assert!(fill(&mut c, "k", b"v", t2).is_some());
    let (i, r, _) = recv(&rx, "woken by the fill");
    assert_eq!((i, r), (2, (Some(b"v".to_vec()), "HIT".into(), None)));
    join_all(handles);
}

#[test]
fn release_hands_the_lease_over_at_once() {
    const N: usize = 3;
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, status, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    assert_eq!(status, "MISS");
    let t0 = t0.unwrap();
    let expires0 = inspect(&mut c, "k")
        .unwrap()
        .int("lease-expires-ms")
        .unwrap();
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "20000"], N, 0);

    // A wrong token: 0, nothing changes, nobody moves.
    let d = digest(&mut c);
    let before = inspect(&mut c, "k");
    assert_eq!(release(&mut c, "k", t0 + 1), 0);
    assert_eq!(release(&mut c, "k", 1), 0);
    assert_eq!(digest(&mut c), d);
    assert_eq!(inspect(&mut c, "k"), before);
    assert_silent(&rx, "after a wrong RELEASE");
    assert_eq!(parked(&mut c), N as i64);

    let released_at = Instant::now();
    assert_eq!(release(&mut c, "k", t0), 1);
    let (i, (v, status, t1), at) = recv(&rx, "hand-over by RELEASE");
    let took = at.saturating_duration_since(released_at);
    assert_eq!((i, v, status.as_str()), (0, None, "MISS"));
    let t1 = t1.unwrap();
    assert!(t1 > t0);
    assert!(
        took < Duration::from_millis(500),
        "RELEASE hands over at once, took {took:?}"
    );
    let granted1 = inspect(&mut c, "k")
        .unwrap()
        .int("lease-granted-ms")
        .unwrap();
    assert!(
        granted1 < expires0 - 50_000,
        "handed over at {granted1}, long before the original lease end {expires0}"
    );
    eprintln!(
        "RELEASE hand-over: the waiter had MISS {:.2} ms after RELEASE was sent",
        ms(took)
    );
    wait_parked(&mut c, (N - 1) as i64, LONG, "the others keep waiting");
    assert_silent(&rx, "after the hand-over");
    assert_eq!(counter(&mut c, "leases_released"), 1);

    // The old token is dead: releasing or filling with it does nothing.
    let d = digest(&mut c);
    assert_eq!(release(&mut c, "k", t0), 0);
    assert_eq!(fill(&mut c, "k", b"late", t0), None);
    assert_eq!(digest(&mut c), d);
    assert_eq!(lease_token_of(&mut c, "k"), Some(t1));

    // The new holder releases too: the next waiter.
    assert_eq!(release(&mut c, "k", t1), 1);
    let (i, (_, status, t2), _) = recv(&rx, "second hand-over by RELEASE");
    assert_eq!((i, status.as_str()), (1, "MISS"));
    let t2 = t2.unwrap();
    assert!(t2 > t1);
    assert!(fill(&mut c, "k", b"v", t2).is_some());
    let (i, r, _) = recv(&rx, "woken by the fill");
    assert_eq!((i, r), (2, (Some(b"v".to_vec()), "HIT".into(), None)));
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
}

#[test]
fn release_without_waiters_and_on_values() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    // A missing key.
    let d = digest(&mut c);
    assert_eq!(release(&mut c, "nokey", 12345), 0);
    assert_eq!(digest(&mut c), d);
    assert_eq!(
        redis::cmd("EXISTS")
            .arg("nokey")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );

    // A pending entry with nobody waiting: 1, and the next caller gets MISS.
    let (_, _, t0) = lockget(&mut c, "p", &["PX", "60000"]);
    let t0 = t0.unwrap();
    assert_eq!(release(&mut c, "p", t0), 1);
    assert_eq!(release(&mut c, "p", t0), 0, "already released");
    let (_, status, t1) = lockget(&mut c, "p", &[]);
    assert_eq!(status, "MISS");
    assert!(t1.unwrap() > t0);
    assert_eq!(fill(&mut c, "p", b"x", t0), None);

    // A stale value's lease (STALE token): 1, the value stays, the lease is free again.
    set(&mut c, "s", b"old", &["PX", "1", "GRACE", "60000"]).unwrap();
    let fresh_until = inspect(&mut c, "s").unwrap().int("fresh-until-ms").unwrap();
    wait_past(&mut c, fresh_until, LONG);
    let (_, status, ts) = lockget(&mut c, "s", &[]);
    assert_eq!(status, "STALE");
    let ts = ts.unwrap();
    let version = inspect(&mut c, "s").unwrap().int("version");
    assert_eq!(release(&mut c, "s", ts + 1), 0);
    assert_eq!(lease_token_of(&mut c, "s"), Some(ts));
    assert_eq!(release(&mut c, "s", ts), 1);
    let i = inspect(&mut c, "s").unwrap();
    assert_eq!(i.int("lease-token"), None);
    assert_eq!(i.int("has-value"), Some(1));
    assert_eq!(i.int("version"), version);
    assert_eq!(cache_get(&mut c, "s"), Some(b"old".to_vec()));
    assert_eq!(fill(&mut c, "s", b"x", ts), None, "released token");
    let (v, status, ts2) = lockget(&mut c, "s", &[]);
    assert_eq!(
        (v.as_deref(), status.as_str()),
        (Some(&b"old"[..]), "STALE")
    );
    assert!(ts2.expect("lease free again") > ts);

    // A fresh value without a lease: 0.
    set(&mut c, "f", b"v", &["EX", "60"]).unwrap();
    let d = digest(&mut c);
    assert_eq!(release(&mut c, "f", ts2.unwrap()), 0);
    assert_eq!(digest(&mut c), d);
    assert_eq!(counter(&mut c, "leases_released"), 2);
}

// ---------------------------------------------------------------------------------------------
// Deletes with parked callers
// ---------------------------------------------------------------------------------------------

fn delete_hands_over(cmd: &str, bound: Duration) {
    const N: usize = 3;
    let s = Server::start();
    let mut c = s.conn();
    let (_, status, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    assert_eq!(status, "MISS");
    let t0 = t0.unwrap();
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "20000"], N, 0);
    let deleted_at = Instant::now();
    let n: i64 = redis::cmd(cmd).arg("k").query(&mut c).unwrap();
    assert_eq!(n, 1, "{cmd} k");
    let (i, (v, status, t1), at) = recv(&rx, &format!("hand-over after {cmd}"));
    let took = at.saturating_duration_since(deleted_at);
    eprintln!(
        "{cmd} hand-over: the waiter had MISS {:.2} ms after {cmd}",
        ms(took)
    );
    assert_eq!((i, v, status.as_str()), (0, None, "MISS"), "after {cmd}");
    let t1 = t1.unwrap();
    assert!(t1 > t0);
    assert!(
        took <= bound,
        "{cmd}: hand-over took {took:?} (bound {bound:?})"
    );
    assert_eq!(lease_token_of(&mut c, "k"), Some(t1));
    wait_parked(&mut c, (N - 1) as i64, LONG, "the others keep waiting");
    assert_silent(&rx, "after the hand-over");
    assert_eq!(fill(&mut c, "k", b"late", t0), None, "revoked by {cmd}");
    assert!(fill(&mut c, "k", b"v", t1).is_some());
    for _ in 1..N {
        let (i, r, _) = recv(&rx, "woken by the fill");
        assert_eq!(r, (Some(b"v".to_vec()), "HIT".into(), None), "caller {i}");
    }
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
}

#[test]
fn cache_del_hands_the_lease_to_the_longest_waiter_at_once() {
    let _g = shared();
    delete_hands_over("CACHE.DEL", Duration::from_millis(500));
}

#[test]
fn plain_del_hands_the_lease_over_via_the_timer() {
    let _g = shared();
    delete_hands_over("DEL", Duration::from_secs(1));
}

#[test]
fn unlink_hands_the_lease_over_via_the_timer() {
    let _g = shared();
    delete_hands_over("UNLINK", Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// WAIT runs out
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_runs_out_with_timeout_and_no_lease() {
    let _g = exclusive();
    let s = Server::start();
    let mut c = s.conn();
    let (_, status, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    assert_eq!(status, "MISS");
    let t0 = t0.unwrap();
    let before = inspect(&mut c, "k");
    let d = digest(&mut c);
    let granted = counter(&mut c, "leases_granted");

    let waits = [100u64, 250, 400];
    let handles: Vec<JoinHandle<(u64, Triple, Duration)>> = waits
        .iter()
        .map(|&w| {
            let mut wc = s.conn();
            std::thread::spawn(move || {
                let start = Instant::now();
                let r: Triple = redis::cmd("CACHE.LOCKGET")
                    .arg("k")
                    .arg("WAIT")
                    .arg(w)
                    .query(&mut wc)
                    .unwrap();
                (w, r, start.elapsed())
            })
        })
        .collect();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for h in handles {
        let (w, r, took) = h.join().unwrap();
        assert_eq!(r, (None, "TIMEOUT".into(), None), "WAIT {w}");
        let err = ms(took) - w as f64;
        report.push(format!("WAIT {w}: {:.1} ms ({err:+.1})", ms(took)));
        if !(-5.0..=150.0).contains(&err) {
            failures.push(format!("WAIT {w} answered after {took:?}"));
        }
    }
    eprintln!("TIMEOUT precision: {}", report.join(", "));
    assert!(failures.is_empty(), "{failures:?}");
    let info = info_cache(&mut c);
    assert_eq!(info["lockget_timeouts"], 3);
    assert_eq!(info["lockget_parked"], 0);
    assert_eq!(
        info["leases_granted"], granted,
        "no lease for a timed-out caller"
    );
    assert_eq!(info["lockget_handovers"], 0);
    assert_eq!(inspect(&mut c, "k"), before);
    assert_eq!(digest(&mut c), d);
    assert_eq!(lease_token_of(&mut c, "k"), Some(t0));
    // The holder's lease is intact.
    assert!(fill(&mut c, "k", b"v", t0).is_some());
}

// ---------------------------------------------------------------------------------------------
// Disconnecting waiters
// ---------------------------------------------------------------------------------------------

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let owned: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    support::records::aof_command(&owned)
}

/// A raw connection: sends `CLIENT ID`, reads the id, then sends the LOCKGET and leaves its
/// reply unread.
fn raw_waiter(s: &Server, key: &[u8]) -> (TcpStream, i64) {
    let mut t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    t.set_read_timeout(Some(LONG)).unwrap();
    t.write_all(&resp(&[b"CLIENT", b"ID"])).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        t.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let id: i64 = std::str::from_utf8(&buf[1..buf.len() - 2])
        .unwrap()
        .parse()
        .unwrap();
    t.write_all(&resp(&[b"CACHE.LOCKGET", key, b"WAIT", b"60000"]))
        .unwrap();
    (t, id)
}

#[test]
fn disconnected_waiters_leak_nothing() {
    const N: usize = 50;
    const ROUNDS: usize = 3;
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    // A long key: every parked caller keeps a copy, so a leak would show in used_memory.
    let key = format!("big:{}", "k".repeat(64 * 1024));
    let (_, status, t0) = lockget(&mut c, &key, &["PX", "60000"]);
    assert_eq!(status, "MISS");
    let t0 = t0.unwrap();
    let baseline = used_memory(&mut c);
    let d = digest(&mut c);

    // A leak of what a parked caller holds would be about 50 x 64 KiB = 3.2 MB per round.
    let mut after_rounds = Vec::new();
    for round in 0..ROUNDS {
        let mut conns: Vec<(TcpStream, i64)> =
            (0..N).map(|_| raw_waiter(&s, key.as_bytes())).collect();
        wait_parked(&mut c, N as i64, LONG, "raw callers park");
        let peak = used_memory(&mut c);
        // Half hang up, half are killed from another connection.
        let killed = conns.split_off(N / 2);
        drop(conns);
        for (_, id) in &killed {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query(&mut c)
                .unwrap();
            assert_eq!(n, 1, "CLIENT KILL ID {id}");
        }
        drop(killed);
        wait_parked(&mut c, 0, LONG, "disconnected callers leave the line");
        let mut now = 0;
        let back = wait_until(LONG, || {
            now = used_memory(&mut c);
            now <= baseline + 512 * 1024
        });
        eprintln!(
            "disconnect round {round}: used_memory baseline {baseline}, with {N} parked {peak}, \
             after they left {now}"
        );
        assert!(
            back,
            "round {round}: used_memory did not come back near the baseline: baseline \
             {baseline}, with parked callers {peak}, after they left {now}"
        );
        after_rounds.push(now);
    }
    // Whatever the first round left (client buffers, allocator caches), later rounds add
    // nothing.
    let (first, last) = (after_rounds[0], *after_rounds.last().unwrap());
    assert!(
        last <= first + 512 * 1024,
        "used_memory grows round after round: {after_rounds:?}"
    );
    let info = info_cache(&mut c);
    assert_eq!(info["lockget_waits"], (ROUNDS * N) as i64);
    assert_eq!(info["lockget_wakeups"], 0);
    assert_eq!(info["lockget_timeouts"], 0);
    assert_eq!(info["lockget_handovers"], 0);
    assert_eq!(digest(&mut c), d, "nothing changed");
    assert_eq!(lease_token_of(&mut c, &key), Some(t0));

    // The line still works: a hand-over by RELEASE, then a fill wakes the next caller.
    let (rx, handles) = park_in_order(&s, &mut c, &key, &["WAIT", "10000"], 2, 0);
    assert_eq!(release(&mut c, &key, t0), 1);
    let (i, (_, status, t1), _) = recv(&rx, "hand-over after the disconnects");
    assert_eq!((i, status.as_str()), (0, "MISS"));
    assert!(fill(&mut c, &key, b"v", t1.unwrap()).is_some());
    let (i, r, _) = recv(&rx, "fill after the disconnects");
    assert_eq!((i, r), (1, (Some(b"v".to_vec()), "HIT".into(), None)));
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
}

#[test]
fn a_waiter_that_hangs_up_loses_its_place_in_line() {
    // Callers 0 and 1 park; caller 0 hangs up; the hand-over goes to caller 1.
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let (gone, _) = raw_waiter(&s, b"k");
    wait_parked(&mut c, 1, LONG, "raw caller parks");
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["WAIT", "10000"], 1, 1);
    drop(gone);
    wait_parked(&mut c, 1, LONG, "the raw caller left");
    assert_eq!(release(&mut c, "k", t0.unwrap()), 1);
    let (i, (_, status, t1), _) = recv(&rx, "hand-over");
    assert_eq!((i, status.as_str()), (0, "MISS"));
    assert_eq!(lease_token_of(&mut c, "k"), t1);
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
}

// ---------------------------------------------------------------------------------------------
// Other ways a parked caller is answered
// ---------------------------------------------------------------------------------------------

#[test]
fn authoritative_set_wakes_every_waiter_with_the_value() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let t0 = t0.unwrap();
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["WAIT", "10000"], 3, 0);
    set(&mut c, "k", b"auth", &["EX", "60"]).unwrap();
    for _ in 0..3 {
        let (i, r, _) = recv(&rx, "woken by CACHE.SET");
        assert_eq!(
            r,
            (Some(b"auth".to_vec()), "HIT".into(), None),
            "caller {i}"
        );
    }
    join_all(handles);
    assert_eq!(fill(&mut c, "k", b"late", t0), None, "revoked by the write");
    let info = info_cache(&mut c);
    assert_eq!(info["lockget_parked"], 0);
    assert_eq!(info["lockget_wakeups"], 3);
}

#[test]
fn a_fill_already_past_fresh_wakes_waiters_with_the_value() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["WAIT", "10000"], 2, 0);
    // A value fresh for 1 ms, then in grace for a minute: by the time the callers look, it may
    // be fresh or stale; either way they get the value and no token.
    let t = t0.unwrap().to_string();
    set(
        &mut c,
        "k",
        b"v",
        &["PX", "1", "GRACE", "60000", "TOKEN", &t],
    )
    .unwrap();
    for _ in 0..2 {
        let (i, (v, status, token), _) = recv(&rx, "woken by the fill");
        assert_eq!(v.as_deref(), Some(&b"v"[..]), "caller {i}");
        assert!(status == "HIT" || status == "STALE", "caller {i}: {status}");
        assert_eq!(token, None, "a woken caller is never given a token");
    }
    join_all(handles);
}

#[test]
fn a_value_renamed_onto_the_key_wakes_the_waiters() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["WAIT", "10000"], 2, 0);
    set(&mut c, "other", b"renamed", &["EX", "60"]).unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("other")
        .arg("k")
        .query(&mut c)
        .unwrap();
    for _ in 0..2 {
        let (i, r, _) = recv(&rx, "woken by RENAME");
        assert_eq!(
            r,
            (Some(b"renamed".to_vec()), "HIT".into(), None),
            "caller {i}"
        );
    }
    join_all(handles);
    assert_eq!(fill(&mut c, "k", b"late", t0.unwrap()), None);
    assert_eq!(parked(&mut c), 0);
}

#[test]
fn flushall_hands_the_lease_over_via_the_timer() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["WAIT", "10000"], 2, 0);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let (i, (_, status, t1), _) = recv(&rx, "hand-over after FLUSHALL");
    assert_eq!((i, status.as_str()), (0, "MISS"));
    assert!(t1.unwrap() > t0.unwrap());
    assert_eq!(lease_token_of(&mut c, "k"), t1);
    assert!(fill(&mut c, "k", b"v", t1.unwrap()).is_some());
    let (i, r, _) = recv(&rx, "woken by the fill");
    assert_eq!((i, r), (1, (Some(b"v".to_vec()), "HIT".into(), None)));
    join_all(handles);
}

/// A caller parked on `key` in database `db`.
fn spawn_in_db(s: &Server, db: i64, key: &str, opts: &[&str], tx: mpsc::Sender<Report>) {
    let mut w = s.conn();
    let _: () = redis::cmd("SELECT").arg(db).query(&mut w).unwrap();
    let key = key.to_string();
    let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let r: Triple = redis::cmd("CACHE.LOCKGET")
            .arg(&key)
            .arg(&opts)
            .query(&mut w)
            .unwrap();
        let _ = tx.send((db as usize, r, Instant::now()));
    });
}

#[test]
fn lines_are_per_database() {
    let _g = shared();
    let s = Server::start();
    let mut c0 = s.conn();
    let mut c1 = s.conn();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c1).unwrap();
    let (_, _, t0) = lockget(&mut c0, "k", &["PX", "60000"]);
    let (_, _, t1) = lockget(&mut c1, "k", &["PX", "300"]);
    let (tx, rx) = mpsc::channel();
    spawn_in_db(&s, 0, "k", &["WAIT", "10000"], tx.clone());
    wait_parked(&mut c0, 1, LONG, "db 0 caller");
    spawn_in_db(&s, 1, "k", &["WAIT", "10000"], tx.clone());
    wait_parked(&mut c0, 2, LONG, "db 1 caller");

    // db 1's lease lapses: its caller (not db 0's) is handed a lease in db 1.
    let (db, (_, status, t2), _) = recv(&rx, "hand-over in db 1");
    assert_eq!((db, status.as_str()), (1, "MISS"));
    let t2 = t2.unwrap();
    assert!(t2 > t1.unwrap());
    assert_eq!(lease_token_of(&mut c1, "k"), Some(t2));
    assert_eq!(lease_token_of(&mut c0, "k"), t0, "db 0 untouched");
    assert_silent(&rx, "db 0 keeps waiting");

    // A fill in db 1 wakes nobody in db 0; the fill in db 0 does.
    assert!(fill(&mut c1, "k", b"one", t2).is_some());
    assert_silent(&rx, "db 0 after the fill in db 1");
    assert!(fill(&mut c0, "k", b"zero", t0.unwrap()).is_some());
    let (db, r, _) = recv(&rx, "db 0 woken");
    assert_eq!((db, r), (0, (Some(b"zero".to_vec()), "HIT".into(), None)));
    assert_eq!(parked(&mut c0), 0);
}

#[test]
fn client_unblock_answers_timeout() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let (tx, rx) = mpsc::channel();
    let mut w = s.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut w).unwrap();
    let h = std::thread::spawn(move || {
        let r: redis::RedisResult<Triple> = redis::cmd("CACHE.LOCKGET")
            .arg("k")
            .arg("WAIT")
            .arg(30000)
            .query(&mut w);
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    wait_parked(&mut c, 1, LONG, "the caller parks");
    let granted = counter(&mut c, "leases_granted");
    let n: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1, "CLIENT UNBLOCK {id}");
    let r = rx
        .recv_timeout(LONG)
        .expect("an answer after CLIENT UNBLOCK");
    assert_eq!(r, Ok((None, "TIMEOUT".to_string(), None)));
    h.join().unwrap();
    assert_eq!(parked(&mut c), 0);
    assert_eq!(counter(&mut c, "leases_granted"), granted);
    assert_eq!(lease_token_of(&mut c, "k"), t0);
}

#[test]
fn key_replaced_by_another_type_leaves_callers_to_their_timeout() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    lockget(&mut c, "k", &["PX", "60000"]);
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["WAIT", "400"], 1, 0);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("string")
        .query(&mut c)
        .unwrap();
    let (_, r, _) = recv(&rx, "the caller after SET");
    assert_eq!(r, (None, "TIMEOUT".into(), None));
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "string", "the string is left alone");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

/// What became of a lease handed to caller A, which was not answered with it: either A got
/// MISS with the current token, or A holds nothing and caller B (next in line) is handed the
/// lease promptly. A lease recorded for a caller that never learns its token strands the line
/// until that lease runs out.
fn assert_nobody_stranded(
    c: &mut Connection,
    a: Option<Triple>,
    rx_b: &Receiver<Report>,
    since: Instant,
    what: &str,
) {
    let a_token = match &a {
        Some((None, status, Some(t))) if status == "MISS" => Some(*t),
        Some((None, status, None)) if status == "TIMEOUT" => None,
        None => None,
        other => panic!("{what}: caller A answered {other:?}"),
    };
    if let Some(t) = a_token {
        assert_eq!(
            lease_token_of(c, "k"),
            Some(t),
            "{what}: A's token is the lease"
        );
        return;
    }
    let held = inspect(c, "k").and_then(|i| i.int("lease-token"));
    let b = rx_b.recv_timeout(Duration::from_secs(3));
    let took = since.elapsed();
    match b {
        Ok((_, (None, status, Some(t)), _))
            if status == "MISS" && took < Duration::from_secs(1) =>
        {
            assert_eq!(lease_token_of(c, "k"), Some(t));
        }
        other => panic!(
            "{what}: caller A answered {a:?} (no lease for it), yet the lease {held:?} it was \
             handed stays out; caller B (WAIT 2000) got {other:?} after {took:?} instead of \
             MISS at once; INSPECT now {:?}",
            inspect(c, "k")
        ),
    }
}

#[test]
fn a_waiter_timing_out_as_it_is_handed_the_lease_strands_nobody() {
    // Holder's lease (PX 300) and caller A's WAIT (400) both run out while the server sleeps:
    // the timer hands the lease to A in the same event-loop turn as A's timeout is due.
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "300"]);
    assert!(t0.is_some());
    let (rx_a, ha) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "400"], 1, 0);
    let (rx_b, hb) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "2000"], 1, 1);
    let _: () = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg("0.6")
        .query(&mut c)
        .unwrap();
    let since = Instant::now();
    let (_, a, _) = recv(&rx_a, "caller A");
    assert_nobody_stranded(
        &mut c,
        Some(a),
        &rx_b,
        since,
        "WAIT ran out at the hand-over",
    );
    join_all(ha);
    join_all(hb);
}

#[test]
fn a_waiter_killed_as_it_is_handed_the_lease_strands_nobody() {
    // RELEASE hands the lease to caller A, and A is killed before it is answered (one EXEC).
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let (a_conn, a_id) = raw_waiter(&s, b"k");
    wait_parked(&mut c, 1, LONG, "caller A parks");
    let (rx_b, hb) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "2000"], 1, 1);
    let (released, killed): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("CACHE.RELEASE")
        .arg("k")
        .arg(t0.unwrap())
        .cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(a_id)
        .query(&mut c)
        .unwrap();
    assert_eq!((released, killed), (1, 1));
    let since = Instant::now();
    assert_nobody_stranded(&mut c, None, &rx_b, since, "A killed after the hand-over");
    drop(a_conn);
    join_all(hb);
}

// ---------------------------------------------------------------------------------------------
// No blocking inside MULTI/EXEC or scripts
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_does_not_block_inside_multi_or_scripts() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let t0 = t0.unwrap();
    let d = digest(&mut c);

    let start = Instant::now();
    let r: (Triple, Triple) = redis::pipe()
        .atomic()
        .cmd("CACHE.LOCKGET")
        .arg("k")
        .arg("WAIT")
        .arg(1000)
        .cmd("CACHE.LOCKGET")
        .arg("k")
        .arg("PX")
        .arg(10)
        .arg("WAIT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(r.0, (None, "LOCKED".into(), None), "in MULTI");
    assert_eq!(r.1, (None, "LOCKED".into(), None), "in MULTI");

    let script = "return redis.call('CACHE.LOCKGET', KEYS[1], 'WAIT', '1000')";
    let r: Triple = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, (None, "LOCKED".into(), None), "in EVAL");
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "WAIT must not block in MULTI/EVAL: {took:?}"
    );
    assert_eq!(digest(&mut c), d);
    let info = info_cache(&mut c);
    assert_eq!(info["lockget_waits"], 0);
    assert_eq!(info["lockget_parked"], 0);
    assert_eq!(info["lockget_timeouts"], 0);

    // On a missing key, as without WAIT: MISS with a token.
    let r: Triple = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg("m")
        .query(&mut c)
        .unwrap();
    assert_eq!((r.0.as_deref(), r.1.as_str()), (None, "MISS"));
    // Lua holds numbers as doubles: tokens stay below 2^53, so they come out of EVAL exact.
    assert_eq!(r.2, lease_token_of(&mut c, "m"));
    assert!(r.2.is_some_and(|t| t < 1 << 53));
    let (r,): (Triple,) = redis::pipe()
        .atomic()
        .cmd("CACHE.LOCKGET")
        .arg("m2")
        .arg("WAIT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(r.1, "MISS");
    assert_eq!(lease_token_of(&mut c, "m2"), r.2);
    assert!(fill(&mut c, "k", b"v", t0).is_some());
}

// ---------------------------------------------------------------------------------------------
// A parked caller goes before GETX / LOCKGET that would take a free lease
// ---------------------------------------------------------------------------------------------

/// Runs, inside one MULTI/EXEC (no timer can run in between): INSPECT (the holder's lease
/// still current), DEBUG SLEEP past the lease's end, `cmd`, INSPECT. Returns the reply of
/// `cmd` and the lease tokens before and after.
fn after_lapse_in_exec(
    c: &mut Connection,
    key: &str,
    sleep_s: &str,
    cmd: &str,
) -> (Option<Inspect>, Triple, Option<Inspect>) {
    let (before, _, r, after): (Value, Value, Triple, Value) = redis::pipe()
        .atomic()
        .cmd("CACHE.INSPECT")
        .arg(key)
        .cmd("DEBUG")
        .arg("SLEEP")
        .arg(sleep_s)
        .cmd(cmd)
        .arg(key)
        .cmd("CACHE.INSPECT")
        .arg(key)
        .query(c)
        .unwrap();
    let to_inspect = |v: Value| -> Option<Inspect> {
        match v {
            Value::Nil => None,
            Value::Array(items) => Some(Inspect(
                items
                    .chunks(2)
                    .map(|p| {
                        let name = match &p[0] {
                            Value::SimpleString(s) => s.clone(),
                            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            other => panic!("field name {other:?}"),
                        };
                        (name, p[1].clone())
                    })
                    .collect(),
            )),
            other => panic!("CACHE.INSPECT reply {other:?}"),
        }
    };
    (to_inspect(before), r, to_inspect(after))
}

fn parked_caller_goes_first(cmd: &str) {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, t0) = lockget(&mut c, "k", &["PX", "600"]);
    let t0 = t0.unwrap();
    let (rx, handles) = park_in_order(&s, &mut c, "k", &["PX", "60000", "WAIT", "10000"], 1, 0);
    let (before, r, after) = after_lapse_in_exec(&mut c, "k", "0.7", cmd);
    let before_token = before.and_then(|i| i.int("lease-token"));
    assert_eq!(
        before_token,
        Some(t0 as i64),
        "the holder's lease must still be current when EXEC starts (slow machine?)"
    );
    assert_eq!(
        r,
        (None, "LOCKED".into(), None),
        "{cmd} after the lease lapsed, with a caller parked"
    );
    let handed = after
        .and_then(|i| i.int("lease-token"))
        .expect("the parked caller holds a lease") as u64;
    assert!(handed > t0);
    let (i, (_, status, t1), _) = recv(&rx, "the parked caller");
    assert_eq!((i, status.as_str(), t1), (0, "MISS", Some(handed)));
    join_all(handles);
    assert_eq!(parked(&mut c), 0);
}

#[test]
fn getx_lets_a_parked_lockget_caller_go_first() {
    let _g = shared();
    parked_caller_goes_first("CACHE.GETX");
}

#[test]
fn lockget_without_wait_lets_a_parked_caller_go_first() {
    let _g = shared();
    parked_caller_goes_first("CACHE.LOCKGET");
}

// ---------------------------------------------------------------------------------------------
// Replication
// ---------------------------------------------------------------------------------------------

fn assert_replica_same(p: &mut Connection, r: &mut Connection, key: &str, what: &str) {
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(p).unwrap();
    assert_eq!(acked, 1, "{what}: WAIT 1 5000");
    assert_eq!(
        inspect(p, key),
        inspect(r, key),
        "{what}: CACHE.INSPECT {key}"
    );
    assert_eq!(digest(p), digest(r), "{what}: DEBUG DIGEST");
}

#[test]
fn replica_follows_grants_hand_overs_and_fills() {
    let _g = shared();
    let p = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let replica = start_replica(&p, &[]);
    let mut c = p.conn();
    let mut rc = replica.conn();

    let (_, _, t0) = lockget(&mut c, "k", &["PX", "60000"]);
    let t0 = t0.unwrap();
    assert_replica_same(&mut c, &mut rc, "k", "grant");
    assert_eq!(lease_token_of(&mut rc, "k"), Some(t0));

    let (rx, handles) = park_in_order(&p, &mut c, "k", &["PX", "300", "WAIT", "10000"], 3, 0);
    // Hand-over by RELEASE.
    assert_eq!(release(&mut c, "k", t0), 1);
    let (i, (_, status, t1), _) = recv(&rx, "hand-over by RELEASE");
    assert_eq!((i, status.as_str()), (0, "MISS"));
    let t1 = t1.unwrap();
    assert_replica_same(&mut c, &mut rc, "k", "hand-over by RELEASE");
    assert_eq!(lease_token_of(&mut rc, "k"), Some(t1));

    // Hand-over by the timer when caller 0's lease (PX 300) lapses.
    let (i, (_, status, t2), _) = recv(&rx, "hand-over at expiry");
    assert_eq!((i, status.as_str()), (1, "MISS"));
    let t2 = t2.unwrap();
    assert!(t2 > t1);
    assert_replica_same(&mut c, &mut rc, "k", "hand-over at expiry");
    assert_eq!(lease_token_of(&mut rc, "k"), Some(t2));

    // The fill wakes caller 2 and reaches the replica.
    assert!(fill(&mut c, "k", b"value", t2).is_some());
    let (i, r, _) = recv(&rx, "woken by the fill");
    assert_eq!((i, r), (2, (Some(b"value".to_vec()), "HIT".into(), None)));
    assert_replica_same(&mut c, &mut rc, "k", "fill");
    assert_eq!(cache_get(&mut rc, "k"), Some(b"value".to_vec()));
    join_all(handles);

    // A hand-over after CACHE.DEL reaches the replica too.
    let (_, _, _t3) = lockget(&mut c, "d", &["PX", "60000"]);
    let (rx, handles) = park_in_order(&p, &mut c, "d", &["PX", "60000", "WAIT", "10000"], 1, 0);
    let n: i64 = redis::cmd("CACHE.DEL").arg("d").query(&mut c).unwrap();
    assert_eq!(n, 1);
    let (_, (_, status, t4), _) = recv(&rx, "hand-over after CACHE.DEL");
    assert_eq!(status, "MISS");
    assert_replica_same(&mut c, &mut rc, "d", "hand-over after CACHE.DEL");
    assert_eq!(lease_token_of(&mut rc, "d"), t4);
    join_all(handles);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct State {
    digest: String,
    counters: Vec<(&'static str, i64)>,
    inspect: Vec<Option<Inspect>>,
}

fn state(c: &mut Connection) -> State {
    let info = info_cache(c);
    State {
        digest: digest(c),
        counters: [
            "leases_granted",
            "leases_released",
            "lockget_waits",
            "lockget_parked",
            "hits",
            "misses",
            "stale_hits",
            "locked",
            "entries",
        ]
        .iter()
        .map(|&k| (k, info[k]))
        .collect(),
        inspect: ["pending", "val", "stale"]
            .iter()
            .map(|k| inspect(c, k))
            .collect(),
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let _g = shared();
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, tp) = lockget(&mut c, "pending", &["PX", "3600000"]);
    let tp = tp.unwrap().to_string();
    set(&mut c, "val", b"v", &["EX", "3600"]).unwrap();
    set(&mut c, "stale", b"s", &["PX", "1", "GRACE", "3600000"]).unwrap();
    let fresh_until = inspect(&mut c, "stale")
        .unwrap()
        .int("fresh-until-ms")
        .unwrap();
    wait_past(&mut c, fresh_until, LONG);
    let (_, status, ts) = lockget(&mut c, "stale", &["PX", "3600000"]);
    assert_eq!(status, "STALE");
    let ts = ts.unwrap().to_string();
    let _: () = redis::cmd("SET").arg("str").arg("x").query(&mut c).unwrap();

    const ARITY: &str = "ERR wrong number of arguments";
    const SYNTAX: &str = "ERR syntax error";
    const NOTINT: &str = "ERR value is not an integer or out of range";
    const PX: &str = "ERR invalid PX time";
    const WAIT: &str = "ERR invalid WAIT time";
    const TOKEN: &str = "ERR TOKEN must be a positive 64-bit integer";
    const WRONGTYPE: &str = "WRONGTYPE";
    let max = i64::MAX.to_string();
    let over = "9223372036854775808";
    let huge = "99999999999999999999";
    let rows: Vec<(Vec<&str>, &str)> = vec![
        (vec!["CACHE.LOCKGET"], ARITY),
        (vec!["CACHE.LOCKGET", "new", "PX"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "WAIT"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "PX", "100", "WAIT"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "FOO", "1"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "LEASE", "100"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "EX", "100"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "100"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "PX", "0"], PX),
        (vec!["CACHE.LOCKGET", "new", "PX", "-1"], PX),
        (vec!["CACHE.LOCKGET", "new", "PX", "abc"], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", "1.5"], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", "+5"], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", "0100"], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "WAIT", "-0"], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", ""], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", huge], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", over], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "PX", &max], PX),
        (vec!["CACHE.LOCKGET", "new", "WAIT", "0"], WAIT),
        (vec!["CACHE.LOCKGET", "new", "WAIT", "-5"], WAIT),
        (vec!["CACHE.LOCKGET", "new", "WAIT", "x"], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "WAIT", huge], NOTINT),
        (vec!["CACHE.LOCKGET", "new", "WAIT", &max], WAIT),
        (vec!["CACHE.LOCKGET", "pending", "WAIT", &max], WAIT),
        (vec!["CACHE.LOCKGET", "pending", "WAIT", "0"], WAIT),
        (
            vec!["CACHE.LOCKGET", "pending", "PX", "0", "WAIT", "100"],
            PX,
        ),
        (vec!["CACHE.LOCKGET", "new", "PX", "1", "PX", "2"], SYNTAX),
        (vec!["CACHE.LOCKGET", "new", "px", "1", "PX", "2"], SYNTAX),
        (
            vec!["CACHE.LOCKGET", "new", "WAIT", "1", "WAIT", "2"],
            SYNTAX,
        ),
        (
            vec!["CACHE.LOCKGET", "pending", "WAIT", "1", "wait", "2"],
            SYNTAX,
        ),
        (
            vec!["CACHE.LOCKGET", "new", "PX", "100", "WAIT", "1", "PX", "1"],
            SYNTAX,
        ),
        (vec!["CACHE.LOCKGET", "str"], WRONGTYPE),
        (
            vec!["CACHE.LOCKGET", "str", "PX", "100", "WAIT", "100"],
            WRONGTYPE,
        ),
        (vec!["CACHE.RELEASE"], ARITY),
        (vec!["CACHE.RELEASE", "pending"], ARITY),
        (vec!["CACHE.RELEASE", "pending", &tp, "extra"], ARITY),
        (vec!["CACHE.RELEASE", "pending", "0"], TOKEN),
        (vec!["CACHE.RELEASE", "pending", "-1"], TOKEN),
        (vec!["CACHE.RELEASE", "pending", "abc"], TOKEN),
        (vec!["CACHE.RELEASE", "pending", ""], TOKEN),
        (vec!["CACHE.RELEASE", "pending", "1.5"], TOKEN),
        (vec!["CACHE.RELEASE", "pending", huge], TOKEN),
        (vec!["CACHE.RELEASE", "pending", over], TOKEN),
        (vec!["CACHE.RELEASE", "stale", "0"], TOKEN),
        (vec!["CACHE.RELEASE", "new", "abc"], TOKEN),
        (vec!["CACHE.RELEASE", "str", "1"], WRONGTYPE),
        (vec!["CACHE.RELEASE", "str", &tp], WRONGTYPE),
    ];
    let mut failures = Vec::new();
    for (args, expect) in &rows {
        let before = state(&mut c);
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let start = Instant::now();
        let reply: redis::RedisResult<Value> = cmd.query(&mut c);
        let took = start.elapsed();
        match &reply {
            Err(e) if e.is_io_error() => panic!("{args:?}: connection lost: {e}"),
            Err(e) => {
                let msg = match (e.code(), e.detail()) {
                    (Some(code), Some(detail)) => format!("{code} {detail}"),
                    (Some(code), None) => code.to_string(),
                    _ => e.to_string(),
                };
                if !msg.starts_with(expect) {
                    failures.push(format!("{args:?}: got {msg:?}, expected {expect:?}"));
                }
            }
            Ok(v) => failures.push(format!("{args:?}: got reply {v:?}, expected {expect:?}")),
        }
        if took > Duration::from_millis(500) {
            failures.push(format!("{args:?}: took {took:?}"));
        }
        let after = state(&mut c);
        if before != after {
            failures.push(format!(
                "{args:?}: changed the server\n    before {before:?}\n    after  {after:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // The leases are intact.
    assert_eq!(release(&mut c, "pending", tp.parse().unwrap()), 1);
    assert_eq!(release(&mut c, "stale", ts.parse().unwrap()), 1);
    assert_eq!(cache_get(&mut c, "val"), Some(b"v".to_vec()));
}

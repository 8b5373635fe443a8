//! A lease that ends while the server takes no writes (`CLIENT PAUSE WRITE`, `CLIENT PAUSE
//! ALL`, a `FAILOVER` in progress), with callers parked in `CACHE.LOCKGET ... WAIT`.
//!
//! While writes are paused Redis does not delete expired keys; a module that hands the lease
//! over from its timer then writes onto a key that looks empty but is still in the keyspace,
//! and redis-server aborts (`db.c: 'de != NULL'`). Here the server must stay up, the caller
//! whose WAIT runs out during the pause gets `TIMEOUT` at its deadline, the longest-waiting
//! caller is handed the lease once writes are accepted again, and nobody stays parked.

mod support;

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::commands::*;
use support::server::{server_binary, wait_until, Server};

const LONG: Duration = Duration::from_secs(20);
/// The lease that runs out during the refusal.
const LEASE_MS: i64 = 1_500;
/// How long writes are refused: well past the lease's end.
const REFUSAL: Duration = Duration::from_millis(4_000);
/// The caller whose wait ends during the refusal, after the lease has run out.
const SHORT_WAIT_MS: i64 = 2_500;
/// The caller that outlasts the refusal and is handed the lease after it.
const LONG_WAIT_MS: i64 = 15_000;

/// `CACHE.LOCKGET key WAIT wait_ms` on its own connection, in a thread: its reply and when it
/// arrived.
fn spawn_waiter(
    s: &Server,
    key: &str,
    wait_ms: i64,
) -> (Receiver<(Triple, Instant)>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let mut c = s.conn();
    let key = key.to_string();
    let handle = std::thread::spawn(move || {
        let r: Triple = redis::cmd("CACHE.LOCKGET")
            .arg(&key)
            .arg("WAIT")
            .arg(wait_ms)
            .query(&mut c)
            .expect("the parked caller gets a reply, not a dropped connection");
        let _ = tx.send((r, Instant::now()));
    });
    (rx, handle)
}

/// Grants a lease of `LEASE_MS` on `key`, parks a long and a short waiter behind it, then has
/// `refuse` make the server refuse writes for `REFUSAL` and checks how everyone is answered. Returns false when the set-up
/// was too slow to start the refusal before the lease ended (the caller retries).
fn lease_ends_while_writes_are_refused(
    s: &mut Server,
    key: &str,
    refuse: &mut dyn FnMut(&mut Server) -> i64,
) -> bool {
    let mut c = s.conn();
    let (_, status, t0) = redis::cmd("CACHE.LOCKGET")
        .arg(key)
        .arg("PX")
        .arg(LEASE_MS)
        .query::<Triple>(&mut c)
        .unwrap();
    assert_eq!(status, "MISS");
    let expires = inspect(&mut c, key)
        .and_then(|i| i.int("lease-expires-ms"))
        .expect("the lease is recorded");
    let before = parked(&mut c);
    let (long_rx, long_h) = spawn_waiter(s, key, LONG_WAIT_MS);
    wait_parked(&mut c, before + 1, LONG, "the long waiter");
    let (short_rx, short_h) = spawn_waiter(s, key, SHORT_WAIT_MS);
    wait_parked(&mut c, before + 2, LONG, "the short waiter");

    let started = Instant::now();
    let refusing_at = refuse(s);
    if refusing_at + 300 > expires {
        // Too slow to be sure the lease ended inside the refusal: let this round finish and
        // tell the caller to try again.
        long_h.join().unwrap();
        short_h.join().unwrap();
        return false;
    }

    let (short, short_at) = short_rx
        .recv_timeout(LONG)
        .expect("the short waiter is answered");
    assert_eq!(
        short,
        (None, "TIMEOUT".to_string(), None),
        "the short waiter's WAIT ran out during the refusal"
    );
    assert!(
        short_at < started + REFUSAL,
        "TIMEOUT came at its deadline, inside the refusal: {:?} after it started",
        short_at - started
    );

    let ((value, status, token), long_at) = long_rx
        .recv_timeout(LONG)
        .expect("the long waiter is answered");
    assert_eq!((value, status.as_str()), (None, "MISS"), "handed the lease");
    let token = token.expect("a MISS carries a token");
    assert!(token > t0.unwrap(), "a new lease, not the lapsed one");
    // The server ends the pause by its own clock, which it reads once per event-loop turn
    // (Valkey caches it longer): the end may come a few ms before `started + REFUSAL` by the
    // test's clock, never a lease's length before it.
    assert!(
        long_at + Duration::from_millis(50) >= started + REFUSAL,
        "the lease was handed over only once writes were accepted again ({:?} after the \
         refusal started)",
        long_at - started
    );
    assert!(s.is_alive(), "{} died:\n{}", server_binary(), s.log());
    let mut c = s.conn();
    assert_eq!(
        inspect(&mut c, key).and_then(|i| i.int("lease-token")),
        Some(token as i64),
        "the handed-over lease is the key's lease"
    );
    wait_parked(&mut c, 0, LONG, "after the hand-over");
    long_h.join().unwrap();
    short_h.join().unwrap();
    true
}

fn with_retries(s: &mut Server, refuse: &mut dyn FnMut(&mut Server) -> i64) {
    for attempt in 0..3 {
        if lease_ends_while_writes_are_refused(s, &format!("paused:{attempt}"), refuse) {
            return;
        }
    }
    panic!("three times too slow to start the refusal before the lease ended");
}

/// `refuse` returns the server's time just before writes were refused (under `CLIENT PAUSE
/// ALL` not even `TIME` is answered afterwards).
fn client_pause(s: &mut Server, mode: &str) -> i64 {
    let mut c = s.conn();
    let before = server_ms(&mut c);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(REFUSAL.as_millis() as u64)
        .arg(mode)
        .query(&mut c)
        .unwrap();
    before
}

#[test]
fn lease_ends_during_client_pause_write() {
    let mut s = Server::start();
    with_retries(&mut s, &mut |s| client_pause(s, "WRITE"));
}

#[test]
fn lease_ends_during_client_pause_all() {
    let mut s = Server::start();
    with_retries(&mut s, &mut |s| client_pause(s, "ALL"));
}

/// `FAILOVER` pauses writes on the primary until its replica has caught up; a replica busy in
/// `DEBUG SLEEP` never does, so the failover stays in progress until its `TIMEOUT` aborts it.
#[test]
fn lease_ends_during_a_failover_in_progress() {
    let mut primary = Server::start();
    let port = primary.port.to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut pc = primary.conn();
    let online = wait_until(LONG, || {
        info_field(&mut pc, "replication", "slave0").is_some_and(|s| s.contains("state=online"))
    });
    assert!(online, "the replica never came online:\n{}", replica.log());

    let mut sleepers = Vec::new();
    with_retries(&mut primary, &mut |p| {
        // Connected first: a new connection's handshake would itself wait out the sleep.
        let mut rc = replica.conn();
        let mut probe = replica.conn();
        // Long enough that a PING unanswered means asleep, not a busy machine being slow
        // (at 200 ms, a loaded CI machine once took slow for asleep, and the failover went
        // through before the replica slept).
        probe
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        // The replica sleeps well past the failover's timeout.
        let sleep_s = (REFUSAL.as_secs() + 5).to_string();
        sleepers.push(std::thread::spawn(move || {
            let _: redis::RedisResult<()> =
                redis::cmd("DEBUG").arg("SLEEP").arg(sleep_s).query(&mut rc);
        }));
        // Asleep: a PING on the other connection gets no answer.
        let asleep = wait_until(LONG, || {
            redis::cmd("PING").query::<String>(&mut probe).is_err()
        });
        assert!(asleep, "the replica never went to sleep");
        let mut c = p.conn();
        // A write the sleeping replica cannot have acknowledged: without it, when nothing
        // had been written since the replica's last REPLCONF ACK, the offsets already match
        // and the failover goes through at once instead of waiting for the replica.
        let _: () = redis::cmd("SET")
            .arg("failover:nudge")
            .arg(1)
            .query(&mut c)
            .unwrap();
        let before = server_ms(&mut c);
        let _: () = redis::cmd("FAILOVER")
            .arg("TIMEOUT")
            .arg(REFUSAL.as_millis() as u64)
            .query(&mut c)
            .unwrap();
        assert_eq!(
            info_field(&mut c, "replication", "master_failover_state").as_deref(),
            Some("waiting-for-sync"),
            "the failover is in progress, writes paused"
        );
        before
    });
    for h in sleepers {
        h.join().unwrap();
    }
    let mut pc = primary.conn();
    assert_eq!(
        info_field(&mut pc, "replication", "role").as_deref(),
        Some("master"),
        "the failover timed out and the primary stayed primary"
    );
}

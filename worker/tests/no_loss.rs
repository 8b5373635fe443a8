//! No loss: a writer adds 100k events over 1k keys (versions increasing per key) to a queue on
//! a redis-server with `appendonly yes` and `appendfsync always`, while the worker drains it.
//! Midway, redis-server is killed with -9 and restarted, or the worker is killed with -9 and
//! another one takes over, or two workers share the queue throughout. At the end every XADD
//! that redis acknowledged is in the database at (at least) the latest acknowledged version of
//! its key, with the value of that version, and the queue is empty.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::*;

const EVENTS: u64 = 100_000;
const KEYS: u64 = 1000;
const CHUNK: u64 = 500;

fn key(v: u64) -> String {
    format!("k{}", v % KEYS)
}

/// The writer: pipelines of XADDs, a short pause between them so the worker drains while it
/// writes. It rides out a restart of redis-server by reconnecting. It returns, per key, the
/// highest version whose XADD redis acknowledged; `acked` counts acknowledged events.
fn writer(url: String, acked: Arc<AtomicU64>) -> JoinHandle<HashMap<String, u64>> {
    std::thread::spawn(move || {
        let mut latest: HashMap<String, u64> = HashMap::new();
        let mut con: Option<redis::Connection> = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut next = 1;
        while next <= EVENTS {
            assert!(Instant::now() < deadline, "writer did not finish");
            let Some(c) = con.as_mut() else {
                con = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                    .ok();
                if con.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            };
            let end = (next + CHUNK).min(EVENTS + 1);
            let mut pipe = redis::pipe();
            for v in next..end {
                xadd_set(&mut pipe, &key(v), v);
            }
            // A failed pipeline may have added some of its events: they are just not counted
            // as acknowledged. The next ones still have higher versions.
            match pipe.query::<()>(c) {
                Ok(()) => {
                    for v in next..end {
                        latest.insert(key(v), v);
                    }
                    acked.fetch_add(end - next, Ordering::SeqCst);
                }
                Err(_) => con = None,
            }
            next = end;
            std::thread::sleep(Duration::from_millis(5));
        }
        latest
    })
}

fn check_everything_acknowledged_is_stored(
    redis: &Redis,
    db: &Db,
    latest: &HashMap<String, u64>,
    logs: &dyn Fn() -> String,
) {
    let mut con = redis.con();
    wait_until(Duration::from_secs(90), "the queue to be drained", || {
        xlen(&mut con, QUEUE) == 0 && pending(&mut con) == 0
    });
    let rows = db.rows();
    assert_eq!(latest.len() as u64, KEYS);
    for (k, &acked) in latest {
        let row = rows
            .get(k.as_bytes())
            .unwrap_or_else(|| panic!("{k} missing; logs:\n{}", logs()));
        let version = row.version as u64;
        assert!(
            version >= acked,
            "{k}: stored {version} < acknowledged {acked}"
        );
        assert_eq!(row.value.as_deref(), Some(value_of(k, version).as_bytes()));
    }
}

fn start_queue(redis: &Redis) -> (Arc<AtomicU64>, JoinHandle<HashMap<String, u64>>) {
    create_group(&mut redis.con());
    let acked = Arc::new(AtomicU64::new(0));
    let w = writer(redis.url(), Arc::clone(&acked));
    (acked, w)
}

/// Waits until the writer is halfway and the worker has stored something: the moment to break
/// something.
fn halfway(acked: &AtomicU64, db: &Db) {
    wait_until(Duration::from_secs(60), "the writer to get halfway", || {
        acked.load(Ordering::SeqCst) >= EVENTS / 2
    });
    wait_until(
        Duration::from_secs(60),
        "the worker to store something",
        || !db.rows().is_empty(),
    );
}

fn redis_killed_and_restarted(db: Db) {
    let mut redis = Redis::start_with(true, "always");
    let (acked, writer) = start_queue(&redis);
    let worker = Worker::start(&redis, &db, &["--consumer", "w"]);
    halfway(&acked, &db);
    redis.kill9();
    std::thread::sleep(Duration::from_millis(300)); // a real outage, seen by both clients
    redis.restart();
    let latest = writer.join().unwrap();
    check_everything_acknowledged_is_stored(&redis, &db, &latest, &|| worker.log());
    assert!(worker.log().contains("reconnecting"), "{}", worker.log());
}

on_both_databases!(redis_killed_and_restarted: sqlite_redis_killed_and_restarted, postgres_redis_killed_and_restarted);

/// The worker is killed with -9 mid-batch; another one, under another consumer name, claims
/// what the dead one had pending (after --claim-idle-ms) and drains the rest.
fn worker_killed_and_replaced(db: Db) {
    let redis = Redis::start_with(true, "always");
    let (acked, writer) = start_queue(&redis);
    let mut first = Worker::start(&redis, &db, &["--consumer", "first"]);
    halfway(&acked, &db);
    first.kill9();
    let second = Worker::start(
        &redis,
        &db,
        &["--consumer", "second", "--claim-idle-ms", "500"],
    );
    let latest = writer.join().unwrap();
    check_everything_acknowledged_is_stored(&redis, &db, &latest, &|| {
        format!("first:\n{}\nsecond:\n{}", first.log(), second.log())
    });
}

on_both_databases!(worker_killed_and_replaced: sqlite_worker_killed_and_replaced, postgres_worker_killed_and_replaced);

fn two_workers_share_the_queue(db: Db) {
    let redis = Redis::start_with(true, "always");
    let (_, writer) = start_queue(&redis);
    let mut workers: Vec<Worker> = ["a", "b"]
        .iter()
        .map(|c| Worker::start(&redis, &db, &["--consumer", c, "--batch", "200"]))
        .collect();
    let latest = writer.join().unwrap();
    let logs = || {
        workers
            .iter()
            .map(Worker::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    check_everything_acknowledged_is_stored(&redis, &db, &latest, &logs);
    for w in &mut workers {
        w.sigterm();
        assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
    }
    let drained: Vec<u64> = workers.iter().map(|w| w.last_drained().unwrap()).collect();
    assert!(drained.iter().all(|&d| d > 0), "both drained: {drained:?}");
}

on_both_databases!(two_workers_share_the_queue: sqlite_two_workers_share_the_queue, postgres_two_workers_share_the_queue);

//! The no-loss scenarios, whoever writes the events: a writer adds 100k events over 1k keys to
//! the queue of a redis-server with `appendonly yes` and `appendfsync always` while workers
//! drain it, something is broken midway, and at the end every write that redis acknowledged
//! is in the database at (at least) the latest acknowledged version of its key, with the value
//! of that write, and the queue is empty. `no_loss.rs` writes raw `XADD`s (versions chosen by
//! the writer), `no_loss_module.rs` the module's `CACHE.WBQUEUE` (versions issued by the
//! server).

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const EVENTS: u64 = 100_000;
const KEYS: u64 = 1000;
const CHUNK: u64 = 500;

/// The key of the writer's `seq`th write: any of the keys until the writer sees an outage,
/// then only the first half. The last acknowledged writes of the other half are then the ones
/// made just before the outage, some still queued when it hit: later writes do not overwrite
/// them, so the final check sees whether they survived it.
fn key(seq: u64, outage_seen: bool) -> String {
    let keys = if outage_seen { KEYS / 2 } else { KEYS };
    format!("k{}", seq % keys)
}

/// Where the events come from.
#[derive(Clone, Copy, Debug)]
pub enum Writes {
    /// `XADD`s in the contract's fields, version = the writer's sequence number.
    Xadd,
    /// `CACHE.WBQUEUE key value` on a server that loads the module: the server issues the
    /// version, stores the entry and appends the event atomically.
    Module,
}

impl Writes {
    /// A redis-server that persists every acknowledged write before replying.
    pub fn redis(self) -> Redis {
        match self {
            Writes::Xadd => Redis::start_with(true, "always"),
            Writes::Module => Redis::with_module(true, "always"),
        }
    }

    /// The writer's `seq`th write. Its value is `value_of(key, seq)` both ways, so a row's
    /// value says which write it came from.
    fn push(self, pipe: &mut redis::Pipeline, key: &str, seq: u64) {
        match self {
            Writes::Xadd => xadd_set(pipe, key, seq),
            Writes::Module => {
                pipe.cmd("CACHE.WBQUEUE").arg(key).arg(value_of(key, seq));
            }
        }
    }

    /// Sends the pipeline of writes `seqs`; the version of each, in order, once all are
    /// acknowledged.
    fn send(
        self,
        pipe: &redis::Pipeline,
        con: &mut redis::Connection,
        seqs: std::ops::Range<u64>,
    ) -> redis::RedisResult<Vec<u64>> {
        match self {
            Writes::Xadd => pipe.query::<()>(con).map(|()| seqs.collect()),
            Writes::Module => {
                let replies: Vec<(u64, String)> = pipe.query(con)?;
                assert_eq!(replies.len() as u64, seqs.end - seqs.start);
                Ok(replies.into_iter().map(|(version, _id)| version).collect())
            }
        }
    }

    /// The write a stored version must come from, when it is known without having been
    /// acknowledged: XADD's versions are the writer's sequence numbers.
    fn seq_of(self, version: u64) -> Option<u64> {
        match self {
            Writes::Xadd => Some(version),
            Writes::Module => None,
        }
    }
}

/// Per key, the latest write redis acknowledged: its version and its sequence number.
type Acked = HashMap<String, (u64, u64)>;

/// What the writer did.
struct Written {
    latest: Acked,
    /// Whether a pipeline failed (redis-server went away) at some point.
    outage_seen: bool,
}

/// The writer: pipelines of writes, a short pause between them so the worker drains while it
/// writes. It rides out a restart of redis-server by reconnecting. `acked` counts
/// acknowledged writes. It checks that the acknowledged versions strictly increase, across a
/// restart too: the database keeps the highest version of a key, so a version going back
/// would lose the writes after it.
fn writer(writes: Writes, url: String, acked: Arc<AtomicU64>) -> JoinHandle<Written> {
    std::thread::spawn(move || {
        let mut latest = Acked::new();
        let mut last_version = 0;
        let mut outage_seen = false;
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
            let keys: Vec<String> = (next..end).map(|seq| key(seq, outage_seen)).collect();
            let mut pipe = redis::pipe();
            for (seq, k) in (next..end).zip(&keys) {
                writes.push(&mut pipe, k, seq);
            }
            // A failed pipeline may have applied some of its writes: they are just not
            // counted as acknowledged. The next ones still get higher versions.
            match writes.send(&pipe, c, next..end) {
                Ok(versions) => {
                    for ((seq, version), k) in (next..end).zip(versions).zip(keys) {
                        assert!(
                            version > last_version,
                            "write {seq}: version {version} after {last_version}"
                        );
                        last_version = version;
                        latest.insert(k, (version, seq));
                    }
                    acked.fetch_add(end - next, Ordering::SeqCst);
                }
                Err(_) => {
                    con = None;
                    outage_seen = true;
                }
            }
            next = end;
            std::thread::sleep(Duration::from_millis(5));
        }
        Written {
            latest,
            outage_seen,
        }
    })
}

/// Waits for the queue to be drained, then checks each key's row against its latest
/// acknowledged write: the same version and that write's value, or a higher version (a write
/// of a failed pipeline, applied but not acknowledged) with the value of a later write of
/// that key.
fn check_everything_acknowledged_is_stored(
    writes: Writes,
    redis: &Redis,
    db: &Db,
    latest: &Acked,
    logs: &dyn Fn() -> String,
) {
    let mut con = redis.con();
    wait_until(Duration::from_secs(90), "the queue to be drained", || {
        xlen(&mut con, QUEUE) == 0 && pending(&mut con) == 0
    });
    let rows = db.rows();
    assert_eq!(latest.len() as u64, KEYS);
    assert_eq!(rows.len() as u64, KEYS, "one row per key written");
    for (k, &(version, seq)) in latest {
        let row = rows
            .get(k.as_bytes())
            .unwrap_or_else(|| panic!("{k} missing; logs:\n{}", logs()));
        let stored = row.version as u64;
        assert!(
            stored >= version,
            "{k}: stored {stored} < acknowledged {version}"
        );
        let value = String::from_utf8_lossy(row.value.as_deref().unwrap_or_default());
        if stored == version {
            assert_eq!(value, value_of(k, seq), "{k}: value of version {version}");
        } else if let Some(s) = writes.seq_of(stored) {
            assert_eq!(value, value_of(k, s), "{k}: value of version {stored}");
        } else {
            let later = value
                .strip_prefix(&format!("{k}@"))
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s > seq);
            assert!(later, "{k}: version {stored} > {version} holds {value:?}");
        }
    }
}

/// Starts the writer, and returns once redis acknowledged its first writes: the queue exists
/// (CACHE.WBQUEUE creates it and its group), so a worker started now finds it.
fn start_queue(writes: Writes, redis: &Redis) -> (Arc<AtomicU64>, JoinHandle<Written>) {
    if let Writes::Xadd = writes {
        create_group(&mut redis.con());
    }
    let acked = Arc::new(AtomicU64::new(0));
    let w = writer(writes, redis.url(), Arc::clone(&acked));
    wait_until(Duration::from_secs(30), "the first writes", || {
        acked.load(Ordering::SeqCst) > 0
    });
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

/// redis-server is killed with -9 midway and restarted on the same directory and port, from
/// its AOF; the writer reconnects and the worker rides it out.
pub fn redis_killed_and_restarted(writes: Writes, db: Db) {
    let mut redis = writes.redis();
    let (acked, writer) = start_queue(writes, &redis);
    let worker = Worker::start(&redis, &db, &["--consumer", "w"]);
    halfway(&acked, &db);
    // The worker is held while a backlog builds up, so that the outage hits writes that are
    // acknowledged and not stored yet, the last ones of half the keys among them (see `key`):
    // a worker that keeps up would leave the AOF nothing to prove.
    worker.signal("STOP");
    let mut con = redis.con();
    wait_until(Duration::from_secs(30), "a backlog", || {
        xlen(&mut con, QUEUE) >= 2 * KEYS
    });
    redis.kill9();
    std::thread::sleep(Duration::from_millis(300)); // a real outage, seen by both clients
    redis.restart();
    worker.signal("CONT");
    let written = writer.join().unwrap();
    assert!(written.outage_seen, "the writer saw redis-server go");
    check_everything_acknowledged_is_stored(writes, &redis, &db, &written.latest, &|| worker.log());
    assert!(worker.log().contains("reconnecting"), "{}", worker.log());
}

/// The worker is killed with -9 mid-batch; another one, under another consumer name, claims
/// what the dead one had pending (after --claim-idle-ms) and drains the rest.
pub fn worker_killed_and_replaced(writes: Writes, db: Db) {
    let redis = writes.redis();
    let (acked, writer) = start_queue(writes, &redis);
    let mut first = Worker::start(&redis, &db, &["--consumer", "first"]);
    halfway(&acked, &db);
    first.kill9();
    let second = Worker::start(
        &redis,
        &db,
        &["--consumer", "second", "--claim-idle-ms", "500"],
    );
    let latest = writer.join().unwrap().latest;
    check_everything_acknowledged_is_stored(writes, &redis, &db, &latest, &|| {
        format!("first:\n{}\nsecond:\n{}", first.log(), second.log())
    });
}

/// Two workers share the queue throughout; both drain part of it.
pub fn two_workers_share_the_queue(writes: Writes, db: Db) {
    let redis = writes.redis();
    let (_, writer) = start_queue(writes, &redis);
    let mut workers: Vec<Worker> = ["a", "b"]
        .iter()
        .map(|c| Worker::start(&redis, &db, &["--consumer", c, "--batch", "200"]))
        .collect();
    let latest = writer.join().unwrap().latest;
    let logs = || {
        workers
            .iter()
            .map(Worker::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    check_everything_acknowledged_is_stored(writes, &redis, &db, &latest, &logs);
    for w in &mut workers {
        w.sigterm();
        assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
    }
    let drained: Vec<u64> = workers.iter().map(|w| w.last_drained().unwrap()).collect();
    assert!(drained.iter().all(|&d| d > 0), "both drained: {drained:?}");
}

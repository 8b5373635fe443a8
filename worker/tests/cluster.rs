//! The worker on a real six-node Redis Cluster (three primaries, a replica each, the module on
//! every node) with `--cluster` and one seed: it finds every primary's queues, drains them all,
//! follows a failover (a primary killed with -9, its replica promoted) and resharding (slots
//! and their queues moved while it drains, and while it holds read but unacknowledged
//! entries), with one drain loop per queue, and leaves nothing pending or unread.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redis::cluster::ClusterConnection;
use redis::cluster_routing::get_slot;
use support::cluster::Cluster;
use support::*;

/// Per key, the last write that counts as acknowledged: its version and value.
type Acked = HashMap<String, (u64, String)>;

/// `CACHE.WBQUEUE key value` through the cluster client: the version.
fn wbqueue(con: &mut ClusterConnection, key: &str, value: &str) -> redis::RedisResult<u64> {
    let (version, _id): (u64, String) =
        redis::cmd("CACHE.WBQUEUE").arg(key).arg(value).query(con)?;
    Ok(version)
}

/// One key per slot for `count` slots of `slots`: keys whose slots hold nothing else, so a
/// slot's cache entry and queue move together in one `MIGRATE` of a reshard.
fn keys_in(slots: std::ops::Range<u16>, count: usize, prefix: &str) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| slots.contains(&get_slot(k.as_bytes())) && taken.insert(get_slot(k.as_bytes())))
        .take(count)
        .collect()
}

/// The worker in cluster mode on one seed node.
fn cluster_worker(seed: &Redis, db: &Db, extra: &[&str]) -> Worker {
    let mut args = vec!["--cluster".to_string(), "--redis".into(), seed.url()];
    args.extend(db.args());
    args.extend(extra.iter().map(|a| a.to_string()));
    Worker::start_args(&args)
}

/// Whether the table holds exactly the acknowledged writes: one row per key, its version and
/// value those of the key's last acknowledged write.
fn table_is(db: &Db, acked: &Acked) -> Result<(), String> {
    let rows = db.rows();
    if rows.len() != acked.len() {
        return Err(format!("{} rows for {} keys", rows.len(), acked.len()));
    }
    for (key, (version, value)) in acked {
        let Some(row) = rows.get(key.as_bytes()) else {
            return Err(format!("{key}: no row"));
        };
        let got = (row.version as u64, row.value.as_deref(), row.deleted);
        if got != (*version, Some(value.as_bytes()), false) {
            return Err(format!(
                "{key}: row {row:?}, acknowledged {version} {value}"
            ));
        }
    }
    Ok(())
}

/// Waits (40 s at most) until `check` passes, failing with its last complaint and the
/// worker's log.
fn settle(worker: &Worker, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while let Err(e) = check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{e}\nworker log:\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether no queue on any running primary has unread or pending entries.
fn no_backlog(cluster: &Cluster) -> Result<(), String> {
    match cluster.backlog() {
        (0, 0) => Ok(()),
        b => Err(format!("backlog (unread, pending) {b:?}")),
    }
}

/// Writes `rounds` values to each key; every write is acknowledged (a failed one is retried).
fn write_rounds(con: &mut ClusterConnection, keys: &[String], rounds: usize) -> Acked {
    let mut acked = Acked::new();
    for round in 0..rounds {
        for key in keys {
            let value = format!("{key}#{round}");
            let version = wbqueue(con, key, &value).expect("CACHE.WBQUEUE");
            acked.insert(key.clone(), (version, value));
        }
    }
    acked
}

/// Writes over 400 keys in as many slots, all nodes holding queues; one worker given a
/// replica as its only seed drains every primary's queues with `--once` and exits 0; the
/// table is the last value of each key, and no queue has anything unread or pending. Given a
/// cluster node without `--cluster`, the worker warns that it drains only that node.
fn drains_every_primary(db: Db) {
    let cluster = Cluster::start(false);
    let keys = keys_in(0..16384, 400, "user");
    let acked = write_rounds(&mut cluster.client(), &keys, 3);
    let queues = cluster.queues();
    assert_eq!(queues.len(), 3, "three primaries");
    assert!(
        queues.iter().all(|(_, q)| q.len() > 50),
        "every primary holds many queues: {:?}",
        queues.iter().map(|(i, q)| (i, q.len())).collect::<Vec<_>>()
    );
    let (unread, _) = cluster.backlog();
    assert_eq!(unread, 1200, "every write queued");

    let seed = &cluster.nodes[3];
    assert!(!cluster.primaries().contains(&3), "the seed is a replica");
    let log = finish(cluster_worker(seed, &db, &["--once", "--block-ms", "100"]));
    table_is(&db, &acked).unwrap_or_else(|e| panic!("{e}\nworker log:\n{log}"));
    assert_eq!(cluster.backlog(), (0, 0), "{log}");
    // Without --cluster, given a cluster node, the worker says what it does not do.
    let plain = finish(Worker::start(&cluster.nodes[0], &db, &["--once"]));
    assert!(
        plain.contains("is a cluster node: without --cluster"),
        "{plain}"
    );
}

on_both_databases!(drains_every_primary: drains_a_cluster_sqlite, drains_a_cluster_postgres);

/// A producer thread writing round-robin over `keys` until stopped. Each write is retried
/// until it is answered; with `wait`, answered writes count as acknowledged only once a
/// `WAIT 1` (sent to every primary) confirms a replica has them, else at once.
struct Producer {
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
    thread: JoinHandle<(Acked, u64)>,
}

impl Producer {
    fn start(cluster: &Cluster, keys: Vec<String>, wait: bool) -> Producer {
        let connect = cluster.connector();
        let mut con = connect().expect("cluster connection");
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicU64::new(0));
        let (stop2, count2) = (Arc::clone(&stop), Arc::clone(&acked_count));
        let thread = std::thread::spawn(move || {
            let (mut acked, mut unconfirmed, mut errors) = (Acked::new(), Vec::new(), 0u64);
            let mut n = 0u64;
            while !stop2.load(Ordering::SeqCst) || !unconfirmed.is_empty() {
                let key = &keys[n as usize % keys.len()];
                let value = format!("{key}#{n}");
                match wbqueue(&mut con, key, &value) {
                    Ok(version) => {
                        unconfirmed.push((key.clone(), version, value));
                        n += 1;
                    }
                    Err(_) => {
                        // Not acknowledged: retried, on a new cluster connection, which reads
                        // the slots afresh (a failover, a migrating slot pass).
                        errors += 1;
                        std::thread::sleep(Duration::from_millis(50));
                        if let Ok(fresh) = connect() {
                            con = fresh;
                        }
                        continue;
                    }
                }
                if wait && unconfirmed.len() < 20 && !stop2.load(Ordering::SeqCst) {
                    continue;
                }
                let confirmed = !wait
                    || redis::cmd("WAIT")
                        .arg(1)
                        .arg(2000)
                        .query::<i64>(&mut con)
                        .is_ok_and(|replicas| replicas >= 1);
                if !confirmed {
                    errors += 1;
                    if let Ok(fresh) = connect() {
                        con = fresh;
                    }
                }
                for (key, version, value) in unconfirmed.drain(..) {
                    if confirmed {
                        count2.fetch_add(1, Ordering::SeqCst);
                        let e = acked.entry(key).or_insert((0, String::new()));
                        if version > e.0 {
                            *e = (version, value);
                        }
                    }
                }
            }
            (acked, errors)
        });
        Producer {
            stop,
            acked_count,
            thread,
        }
    }

    fn acked(&self) -> u64 {
        self.acked_count.load(Ordering::SeqCst)
    }

    /// Waits until `more` further writes are acknowledged.
    fn wait_for(&self, more: u64, what: &str) {
        let target = self.acked() + more;
        wait_until(Duration::from_secs(30), what, || self.acked() >= target);
    }

    fn finish(self) -> (Acked, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("producer")
    }
}

/// A durable cluster (`appendfsync always`); the worker's seed is the primary that is then
/// killed with -9 while writes go on. Its replica takes over; the worker follows (reading the
/// slots from the primaries it knows, the seed being dead), drains the promoted node's queues
/// to the end, and every write a `WAIT 1` confirmed is in the table: the key's row holds that
/// version or a later one the producer wrote. The old primary then comes back as a replica, so
/// that `WAIT 1` can confirm writes on the promoted node too.
#[test]
fn follows_a_failover() {
    let mut cluster = Cluster::start(true);
    let db = Db::sqlite();
    let replica = cluster.replica_of(0);
    let keys = keys_in(0..16384, 300, "user");
    let on_killed = keys
        .iter()
        .filter(|k| get_slot(k.as_bytes()) <= 5460)
        .count();
    assert!(
        on_killed > 50,
        "node 0 serves slots 0-5460: {on_killed} keys"
    );
    let producer = Producer::start(&cluster, keys, true);
    // Started once every key's queue exists, so its first listing finds them all.
    producer.wait_for(300, "a write to every key");
    let worker = cluster_worker(
        &cluster.nodes[0],
        &db,
        &["--block-ms", "200", "--progress-secs", "1"],
    );
    producer.wait_for(1500, "writes before the kill");
    wait_until(Duration::from_secs(30), "the worker draining", || {
        db.rows().len() > 100
    });

    cluster.nodes[0].kill9();
    wait_until(Duration::from_secs(30), "the replica promoted", || {
        cluster.primaries().contains(&replica)
    });
    cluster.wait_ok(Duration::from_secs(30));
    // The promoted node has no replica, so `WAIT 1` confirms nothing until the old primary is
    // back, which rejoins as its replica.
    cluster.nodes[0].restart();
    wait_until(
        Duration::from_secs(30),
        "the old primary back as a replica",
        || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut cluster.nodes[0].con())
                .unwrap();
            info.contains("role:slave") && info.contains("master_link_status:up")
        },
    );
    producer.wait_for(1500, "writes after the failover");
    let (acked, _errors) = producer.finish();

    let promoted = format!("127.0.0.1:{}", cluster.nodes[replica].port);
    let check = || -> Result<(), String> {
        let rows = db.rows();
        for (key, (version, value)) in &acked {
            let row = rows.get(key.as_bytes()).ok_or(format!("{key}: no row"))?;
            let v = row.version as u64;
            if v < *version || (v == *version && row.value.as_deref() != Some(value.as_bytes())) {
                return Err(format!("{key}: row {row:?}, confirmed {version} {value}"));
            }
        }
        no_backlog(&cluster)
    };
    settle(&worker, check);
    assert_eq!(acked.len(), 300, "every key confirmed at least once");
    let log = worker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cluster primaries:") && l.contains(&promoted)),
        "the worker saw the promoted replica {promoted}:\n{log}"
    );
    assert!(
        cluster
            .queues()
            .iter()
            .any(|(i, q)| *i == replica && !q.is_empty()),
        "the promoted node holds queues"
    );
    let started = loops_started(&log);
    assert_eq!(started.len(), 300, "a loop per queue:\n{log}");
    assert!(
        started.values().all(|&n| n == 1),
        "one loop per queue:\n{log}"
    );
}

/// While a producer writes and the worker drains, 300 slots (each with a key and its queue)
/// move from the first primary to the second with `redis-cli --cluster reshard`. The worker
/// follows each queue to its new node (`MOVED`), with the one loop each queue has, so
/// afterwards the table holds the last acknowledged value of every key, and no queue on any
/// node has unread or pending entries.
#[test]
fn follows_resharding() {
    let cluster = Cluster::start(false);
    let db = Db::sqlite();
    let (from, to) = (0, 1);
    // Slots 0-299 are what `reshard` takes from node 0 (which serves 0-5460) first.
    let mut keys = keys_in(0..300, 300, "moved");
    keys.extend(keys_in(5461..16384, 100, "stays"));
    let producer = Producer::start(&cluster, keys.clone(), false);
    producer.wait_for(400, "a write to every key");
    let worker = cluster_worker(
        &cluster.nodes[2],
        &db,
        &["--block-ms", "200", "--progress-secs", "1"],
    );
    producer.wait_for(1000, "writes before the reshard");
    wait_until(Duration::from_secs(30), "the worker draining", || {
        db.rows().len() > 100
    });

    cluster.reshard(from, to, 300);
    producer.wait_for(1000, "writes after the reshard");
    let (acked, _errors) = producer.finish();
    assert_eq!(acked.len(), keys.len());

    // The queues did move: the target lists those of slots 0-299, the source none of them.
    let slots_of = |node: usize| -> Vec<u16> {
        let queues = cluster.queues();
        let (_, names) = queues.iter().find(|(i, _)| *i == node).expect("a primary");
        names.iter().map(|q| get_slot(q.as_bytes())).collect()
    };
    assert!(slots_of(to).iter().filter(|&&s| s < 300).count() >= 300);
    assert!(slots_of(from).iter().all(|&s| s >= 300));

    settle(&worker, || {
        table_is(&db, &acked)?;
        no_backlog(&cluster)
    });
    let log = worker.log();
    assert!(
        log.contains("following the queue to") || log.contains(" is now on "),
        "the worker followed moved queues:\n{log}"
    );
    let started = loops_started(&log);
    assert_eq!(started.len(), keys.len(), "a loop per queue:\n{log}");
    assert!(
        started.values().all(|&n| n == 1),
        "one loop per queue:\n{log}"
    );
    let last = log.lines().rev().find(|l| l.contains("progress:"));
    assert!(
        last.is_some_and(|l| l.contains(" dead=0")),
        "nothing dead-lettered:\n{log}"
    );
}

/// The queues a worker log says it started a drain loop for, each with how many times.
fn loops_started(log: &str) -> HashMap<String, usize> {
    let mut started = HashMap::new();
    for line in log.lines() {
        if let Some(rest) = line.split("draining ").nth(1) {
            let queue = rest.split(" on ").next().unwrap_or(rest).to_string();
            *started.entry(queue).or_insert(0) += 1;
        }
    }
    started
}

/// The worker has read every event of 50 slots' queues and is storing them, but SQLite is
/// locked, so none is acknowledged; the slots then move to another primary, the pending
/// entries with their streams. Once the database is free the worker commits, its `XACK` on
/// the old node answers `MOVED`, and on the new node it reads its own pending entries again
/// from id 0 and acknowledges them there: the table is complete, nothing is left pending
/// anywhere, and each queue had exactly one drain loop all along.
#[test]
fn pending_entries_are_finished_on_the_new_node() {
    let cluster = Cluster::start(false);
    let db = Db::sqlite();
    let (from, to) = (0, 1);
    let keys = keys_in(0..50, 50, "held");
    let acked = write_rounds(&mut cluster.client(), &keys, 2);
    let queues: Vec<String> = cluster
        .queues()
        .into_iter()
        .find(|(i, _)| *i == from)
        .expect("the first primary")
        .1
        .into_iter()
        .filter(|q| get_slot(q.as_bytes()) < 50)
        .collect();
    assert_eq!(queues.len(), 50);
    let pending_on = |node: usize| -> u64 {
        let mut con = cluster.nodes[node].con();
        queues
            .iter()
            .map(
                |q| match redis::cmd("XPENDING").arg(q).arg(GROUP).query(&mut con) {
                    Ok(redis::Value::Array(a)) => redis::from_redis_value(&a[0]).unwrap_or(0),
                    _ => 0, // not on this node
                },
            )
            .sum()
    };

    // A writer holding SQLite's write lock: the worker's transactions wait and are retried.
    let lock = rusqlite::Connection::open(db.sqlite_path()).unwrap();
    lock.pragma_update(None, "journal_mode", "WAL").unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let worker = cluster_worker(
        &cluster.nodes[2],
        &db,
        &["--block-ms", "200", "--progress-secs", "1"],
    );
    wait_until(
        Duration::from_secs(30),
        "every event read, none stored",
        || pending_on(from) == 100,
    );

    cluster.reshard(from, to, 50);
    assert_eq!(
        pending_on(to),
        100,
        "the pending entries moved with the streams"
    );
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);

    settle(&worker, || {
        table_is(&db, &acked)?;
        no_backlog(&cluster)
    });
    let log = worker.log();
    assert!(
        log.contains("Moved: ") && log.contains("following the queue to"),
        "told MOVED after the move, and followed:\n{log}"
    );
    let started = loops_started(&log);
    for q in &queues {
        assert_eq!(started.get(q), Some(&1), "one loop for {q}:\n{log}");
    }
}

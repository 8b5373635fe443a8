//! The database going away and coming back, and a worker on several servers and queues.

mod support;

use std::time::Duration;
use support::*;

fn fill(con: &mut redis::Connection, versions: std::ops::RangeInclusive<u64>) {
    let mut pipe = redis::pipe();
    for v in versions {
        xadd_set(&mut pipe, &format!("k{}", v % 200), v);
    }
    pipe.query::<()>(con).unwrap();
}

/// PostgreSQL stopped mid-drain (connections cut) and started again: the worker retries with
/// backoff, dead-letters nothing (an outage is not the events' fault) and stores everything.
#[test]
fn postgres_outage_is_retried_not_dead_lettered() {
    let (redis, mut con) = queue_server();
    let mut db = Db::postgres();
    fill(&mut con, 1..=10_000);
    let worker = Worker::start(
        &redis,
        &db,
        &["--max-attempts", "1", "--progress-secs", "1"],
    );
    wait_until(Duration::from_secs(30), "the first batches", || {
        xlen(&mut con, QUEUE) < 10_000
    });
    db.pg().stop();
    fill(&mut con, 10_001..=20_000);
    wait_until(
        Duration::from_secs(30),
        "the worker to see the outage",
        || worker.log().contains("database unavailable"),
    );
    db.pg().start_again();
    wait_until(Duration::from_secs(60), "the queue to be drained", || {
        xlen(&mut con, QUEUE) == 0 && pending(&mut con) == 0
    });
    let rows = db.rows();
    assert_eq!(rows.len(), 200);
    for k in 0..200u64 {
        let top = 19_800 + if k == 0 { 200 } else { k };
        assert_eq!(rows[format!("k{k}").as_bytes()].version, top as i64, "k{k}");
    }
    assert_eq!(
        xlen(&mut con, &format!("{QUEUE}:dead")),
        0,
        "{}",
        worker.log()
    );
}

/// One worker, two servers, two named queues on each: all four drained; a bad entry in one
/// queue goes to that queue's own dead-letter stream on that server.
#[test]
fn several_servers_and_queues() {
    let servers = [Redis::start(), Redis::start()];
    let db = Db::sqlite();
    for (s, server) in servers.iter().enumerate() {
        let mut con = server.con();
        let mut pipe = redis::pipe();
        for q in ["qa", "qb"] {
            create_group_of(&mut con, q);
            for v in 1..=50 {
                xadd_set_to(&mut pipe, q, &format!("{q}-s{s}-{}", v % 10), v);
            }
        }
        pipe.cmd("XADD")
            .arg("qb")
            .arg("*")
            .arg("op")
            .arg("nonsense")
            .ignore();
        pipe.query::<()>(&mut con).unwrap();
    }
    let mut args: Vec<String> = Vec::new();
    for server in &servers {
        args.extend(["--redis".into(), server.url()]);
    }
    args.extend(db.args());
    args.extend(["--queue", "qa", "--queue", "qb", "--once"].map(String::from));
    let log = finish(Worker::start_args(&args));
    let rows = db.rows();
    assert_eq!(rows.len(), 40, "{log}");
    assert!(rows.values().all(|r| r.version >= 41));
    for server in &servers {
        let mut con = server.con();
        for q in ["qa", "qb"] {
            assert_eq!((xlen(&mut con, q), pending_of(&mut con, q)), (0, 0));
        }
        assert_eq!(xlen(&mut con, "qa:dead"), 0);
        assert_eq!(xlen(&mut con, "qb:dead"), 1);
    }
}

/// SIGTERM while the database is down: the worker cannot finish its batch, so it exits 0
/// leaving the batch pending, acknowledged nowhere; the next run stores it.
#[test]
fn sigterm_while_the_database_is_down_leaves_the_batch_pending() {
    let (redis, mut con) = queue_server();
    let mut db = Db::postgres();
    db.pg().stop();
    fill(&mut con, 1..=1000);
    let mut worker = Worker::start(&redis, &db, &["--consumer", "w"]);
    wait_until(
        Duration::from_secs(30),
        "the worker to see the outage",
        || worker.log().contains("database unavailable"),
    );
    worker.sigterm();
    assert_eq!(worker.wait(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(xlen(&mut con, QUEUE), 1000, "nothing acknowledged");
    assert!(pending(&mut con) > 0, "the batch it held is still pending");
    db.pg().start_again();
    drain_once(&redis, &db, &["--consumer", "w"]);
    assert_eq!(db.rows().len(), 200);
    assert_eq!((xlen(&mut con, QUEUE), pending(&mut con)), (0, 0));
}

//! SIGTERM: the batch in flight is committed and acknowledged, then the worker exits 0. The
//! progress line shows what was drained and the backlog.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::*;

const KEYS: u64 = 1000;

fn fill(con: &mut redis::Connection, events: u64) {
    for chunk in (1..=events).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &v in chunk {
            xadd_set(&mut pipe, &format!("k{}", v % KEYS), v);
        }
        pipe.query::<()>(con).unwrap();
    }
}

#[test]
fn sigterm_mid_drain_finishes_the_batch_and_exits_0() {
    let (redis, mut con) = queue_server();
    let db = Db::sqlite();
    let total = 100_000;
    fill(&mut con, total);
    let mut worker = Worker::start(&redis, &db, &["--consumer", "w", "--progress-secs", "1"]);
    wait_until(
        Duration::from_secs(60),
        "the worker to start draining",
        || xlen(&mut con, QUEUE) < total,
    );
    worker.sigterm();
    let status = worker.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());

    // Nothing half done: no entry left delivered and unacknowledged...
    assert_eq!(pending(&mut con), 0, "log:\n{}", worker.log());
    // ...and every acknowledged (deleted) event is in the database.
    let left: Vec<u64> = entries(&mut con, QUEUE)
        .iter()
        .map(|e| e["version"].parse().unwrap())
        .collect();
    let mut left_per_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for v in &left {
        left_per_key.entry(v % KEYS).or_default().push(*v);
    }
    let rows = db.rows();
    let mut acked = 0;
    for v in 1..=total {
        if left_per_key
            .get(&(v % KEYS))
            .is_some_and(|l| l.contains(&v))
        {
            continue;
        }
        acked += 1;
        let key = format!("k{}", v % KEYS);
        let row = rows
            .get(key.as_bytes())
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            row.version >= v as i64,
            "{key}: {} < acked {v}",
            row.version
        );
    }
    assert!(acked > 0 && (left.len() as u64) + acked == total);
    let log = worker.log();
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn progress_lines_show_drained_and_backlog() {
    let (redis, mut con) = queue_server();
    let db = Db::postgres();
    let mut worker = Worker::start(&redis, &db, &["--progress-secs", "1"]);
    fill(&mut con, 1000);
    wait_until(
        Duration::from_secs(30),
        "a progress line with everything",
        || {
            worker.log().lines().any(|l| {
                l.contains("progress: drained=1000 ")
                    && l.contains(" queued=0 pending=0 oldest=0ms failures=0 dead=0")
            })
        },
    );
    assert!(worker.log().contains("/s "));
    worker.sigterm();
    assert_eq!(worker.wait(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(worker.last_drained(), Some(1000));
}

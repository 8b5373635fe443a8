//! End to end with the module: `CACHE.WBQUEUE` / `CACHE.WBDEL` on a redis-server that loads
//! it, the worker finding the queue with `CACHE.WBQUEUES` and draining it into SQLite and
//! PostgreSQL; and a replica, promoted after its primary died, holding every event acknowledged
//! with `WAIT`, which the worker then drains.

mod support;

use std::collections::HashMap;

use support::*;

/// `CACHE.WBQUEUE key value`: the version.
fn wbqueue(con: &mut redis::Connection, key: &str, value: &str) -> u64 {
    let (version, _id): (u64, String) = redis::cmd("CACHE.WBQUEUE")
        .arg(key)
        .arg(value)
        .query(con)
        .expect("CACHE.WBQUEUE");
    version
}

fn wbdel(con: &mut redis::Connection, key: &str) -> u64 {
    let (version, _id): (u64, String) = redis::cmd("CACHE.WBDEL")
        .arg(key)
        .query(con)
        .expect("CACHE.WBDEL");
    version
}

/// What the database must hold: per key, the last acknowledged write (value or delete) and
/// its version.
type Expected = HashMap<String, (Option<String>, u64)>;

fn check_rows(db: &Db, want: &Expected) {
    let rows = db.rows();
    assert_eq!(rows.len(), want.len(), "one row per key written");
    for (key, (value, version)) in want {
        let row = &rows[key.as_bytes()];
        assert_eq!(row.version as u64, *version, "{key}: version");
        assert_eq!(row.deleted, value.is_none(), "{key}: tombstone");
        assert_eq!(
            row.value.as_deref(),
            value.as_deref().map(str::as_bytes),
            "{key}: value"
        );
    }
}

/// Writes `n` events over 50 keys (every seventh a delete), recording what was acknowledged.
fn write_events(con: &mut redis::Connection, n: usize, want: &mut Expected) {
    for i in 0..n {
        let key = format!("user:{}", i % 50);
        if i % 7 == 6 {
            let v = wbdel(con, &key);
            want.insert(key, (None, v));
        } else {
            let value = format!("{key}={i}");
            let v = wbqueue(con, &key, &value);
            want.insert(key, (Some(value), v));
        }
    }
}

fn module_to_database(db: Db) {
    let redis = Redis::with_module(false, "everysec");
    let mut con = redis.con();
    let mut want = Expected::new();
    write_events(&mut con, 1_000, &mut want);
    // No --queue: the worker asks CACHE.WBQUEUES.
    drain_once(&redis, &db, &[]);
    check_rows(&db, &want);
    // Stored events are gone from the stream: the module's INFO says the backlog is empty.
    assert_eq!(xlen(&mut con, QUEUE), 0);
    let info: String = redis::cmd("INFO").arg("cache").query(&mut con).unwrap();
    assert!(info.contains("cache_wb_queue_length:0"), "{info}");
    assert!(info.contains("cache_wb_sets_queued:858"), "{info}");
    // The queue's cap counts only what is not stored: writes go on after the drain.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("cache.wb-max-len")
        .arg("10")
        .query::<()>(&mut con)
        .unwrap();
    write_events(&mut con, 10, &mut want);
    drain_once(&redis, &db, &[]);
    check_rows(&db, &want);
}

on_both_databases!(module_to_database: module_to_sqlite, module_to_postgres);

#[test]
fn a_promoted_replica_holds_every_acknowledged_event() {
    let mut primary = Redis::with_module(false, "everysec");
    let replica = Redis::replica_of(&primary);
    let mut pc = primary.con();
    let mut rc = replica.con();
    wait_until(
        std::time::Duration::from_secs(20),
        "the replica to sync",
        || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut rc)
                .unwrap();
            info.contains("master_link_status:up")
        },
    );
    let mut want = Expected::new();
    for _ in 0..10 {
        write_events(&mut pc, 100, &mut want);
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut pc).unwrap();
        assert_eq!(acked, 1, "the replica acknowledged");
    }
    // The primary dies before any worker ran; the replica takes over.
    primary.kill9();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut rc)
        .unwrap();
    assert_eq!(
        xlen(&mut rc, QUEUE),
        1_000,
        "every acknowledged event, once"
    );
    let db = Db::sqlite();
    drain_once(&replica, &db, &[]);
    check_rows(&db, &want);
}

//! Enqueue, drain with `--once`: the latest value of each key with its version; a delete leaves
//! a tombstone that a later-delivered older `set` does not bring back.

mod support;

use support::*;

fn latest_value_per_key_and_tombstones(db: Db) {
    let (redis, mut con) = queue_server();
    let mut pipe = redis::pipe();
    // 50 keys, versions 1..=10 each, added out of order within a key for half of them.
    for key in 0..50 {
        let name = format!("k{key}");
        let versions: Vec<u64> = if key % 2 == 0 {
            (1..=10).collect()
        } else {
            (1..=10).rev().collect()
        };
        for v in versions {
            xadd_set(&mut pipe, &name, v);
        }
    }
    // k0 and k1 deleted at version 11.
    xadd_del(&mut pipe, "k0", 11);
    xadd_del(&mut pipe, "k1", 11);
    // Binary-safe keys and values.
    xadd_fields(
        &mut pipe,
        QUEUE,
        &[
            ("op", b"set"),
            ("key", b"bin\0\xff"),
            ("value", b"\0\x01\xfe"),
            ("version", b"3"),
            ("ms", b"5"),
        ],
    );
    pipe.query::<()>(&mut con).unwrap();

    drain_once(&redis, &db, &[]);
    let rows = db.rows();
    assert_eq!(rows.len(), 51);
    for key in 2..50 {
        let name = format!("k{key}");
        let row = &rows[name.as_bytes()];
        assert_eq!(
            (row.value.as_deref(), row.version, row.deleted),
            (Some(value_of(&name, 10).as_bytes()), 10, false),
            "{name}"
        );
    }
    for name in ["k0", "k1"] {
        let row = &rows[name.as_bytes()];
        assert_eq!((&row.value, row.version, row.deleted), (&None, 11, true));
    }
    let bin = &rows[&b"bin\0\xff"[..]];
    assert_eq!(bin.value.as_deref(), Some(&b"\0\x01\xfe"[..]));
    assert_eq!((xlen(&mut con, QUEUE), pending(&mut con)), (0, 0));

    // Late, older events, delivered after the delete and after the newer sets: no change.
    let mut pipe = redis::pipe();
    xadd_set(&mut pipe, "k0", 9);
    xadd_set(&mut pipe, "k2", 4);
    xadd_del(&mut pipe, "k3", 7);
    // A newer set after a delete does bring the key back.
    xadd_set(&mut pipe, "k1", 12);
    pipe.query::<()>(&mut con).unwrap();
    drain_once(&redis, &db, &[]);
    let after = db.rows();
    for name in ["k0", "k2", "k3"] {
        assert_eq!(after[name.as_bytes()], rows[name.as_bytes()], "{name}");
    }
    let k1 = &after[&b"k1"[..]];
    assert_eq!(
        (k1.value.as_deref(), k1.version, k1.deleted),
        (Some(value_of("k1", 12).as_bytes()), 12, false)
    );
    assert_eq!((xlen(&mut con, QUEUE), pending(&mut con)), (0, 0));
}

on_both_databases!(latest_value_per_key_and_tombstones:
    sqlite_latest_value_per_key_and_tombstones, postgres_latest_value_per_key_and_tombstones);

/// Entries this group delivered to a consumer that died before acknowledging are drained by
/// `--once`, as are the dead consumer's own: nothing queued is left behind.
#[test]
fn once_drains_the_groups_pending_entries() {
    let (redis, mut con) = queue_server();
    let db = Db::sqlite();
    let mut pipe = redis::pipe();
    for v in 1..=20 {
        xadd_set(&mut pipe, &format!("p{}", v % 5), v);
    }
    pipe.query::<()>(&mut con).unwrap();
    // A consumer that read everything and vanished.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("gone")
        .arg("STREAMS")
        .arg(QUEUE)
        .arg(">")
        .query(&mut con)
        .unwrap();
    assert_eq!(pending(&mut con), 20);
    drain_once(&redis, &db, &[]);
    let rows = db.rows();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[&b"p0"[..]].version, 20);
    assert_eq!((xlen(&mut con, QUEUE), pending(&mut con)), (0, 0));
}

//! A poison event (one the database rejects) goes to `<queue>:dead` with the error after
//! `--max-attempts`, as does one that is not a valid event; everything else is stored and the
//! queue is left with nothing pending.

mod support;

use std::collections::HashMap;
use support::*;

fn poison_goes_to_the_dead_letter_stream(db: Db, reject: &str, error_text: &str) {
    let redis = Redis::start();
    db.execute(reject);
    let mut con = redis.con();
    create_group(&mut con);
    let mut pipe = redis::pipe();
    for v in 1..=300 {
        xadd_set(&mut pipe, &format!("ok{}", v % 100), v);
    }
    xadd_set(&mut pipe, "poison", 77);
    for v in 301..=400 {
        xadd_set(&mut pipe, &format!("ok{}", v % 100), v);
    }
    // Not an event: no version.
    xadd_fields(
        &mut pipe,
        QUEUE,
        &[
            ("op", b"set"),
            ("key", b"noversion"),
            ("value", b"x"),
            ("ms", b"1"),
        ],
    );
    pipe.query::<()>(&mut con).unwrap();

    let log = drain_once(&redis, &db, &["--max-attempts", "3", "--batch", "150"]);

    let rows = db.rows();
    assert_eq!(rows.len(), 100, "every other key stored; log:\n{log}");
    for k in 0..100 {
        let name = format!("ok{k}");
        let top = if k == 0 { 400 } else { 300 + k };
        assert_eq!(rows[name.as_bytes()].version, top as i64, "{name}");
    }
    assert!(!rows.contains_key(&b"poison"[..]));

    let dead = entries(&mut con, &format!("{QUEUE}:dead"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let by_key: HashMap<&str, &HashMap<String, String>> =
        dead.iter().map(|e| (e["key"].as_str(), e)).collect();
    let poison = by_key["poison"];
    // Its original fields, then the error and the attempts.
    assert_eq!(poison["op"], "set");
    assert_eq!(poison["value"], value_of("poison", 77));
    assert_eq!(poison["version"], "77");
    assert_eq!(poison["attempts"], "3");
    assert!(poison["error"].contains(error_text), "{poison:?}");
    let bad = by_key["noversion"];
    assert_eq!(bad["attempts"], "1");
    assert!(bad["error"].contains("version"), "{bad:?}");

    assert_eq!((xlen(&mut con, QUEUE), pending(&mut con)), (0, 0));
    assert!(log.contains("dead=2"), "{log}");
}

#[test]
fn postgres_check_constraint_poison() {
    poison_goes_to_the_dead_letter_stream(
        Db::postgres(),
        "CREATE TABLE cache_wb (key bytea PRIMARY KEY, value bytea, version bigint NOT NULL, \
         updated_ms bigint NOT NULL, deleted boolean NOT NULL, \
         CONSTRAINT no_poison CHECK (key <> 'poison'::bytea))",
        "no_poison",
    );
}

#[test]
fn sqlite_trigger_poison() {
    poison_goes_to_the_dead_letter_stream(
        Db::sqlite(),
        "CREATE TABLE cache_wb (key BLOB PRIMARY KEY NOT NULL, value BLOB, \
         version INTEGER NOT NULL, updated_ms INTEGER NOT NULL, deleted BOOLEAN NOT NULL); \
         CREATE TRIGGER no_poison BEFORE INSERT ON cache_wb WHEN NEW.key = CAST('poison' AS BLOB) \
         BEGIN SELECT RAISE(ABORT, 'poison key refused'); END;",
        "poison key refused",
    );
}

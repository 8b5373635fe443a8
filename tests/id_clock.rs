//! The id clock against a real server: ids stay below 2^53 whatever the server is given, a
//! client's `RESTORE` cannot push the clock far ahead, a server whose clock reached the limit
//! refuses writes with an error (and changes nothing) instead of issuing an id it could not
//! load, and such a server still saves, reloads and restarts from its own RDB.

mod support;
use support::commands::*;
use support::records::{aof_load_errors, restore, write_aof, Record, HAS_LEASE, HOUR_MS};
use support::server::Server;

use redis::Value;

const ID_LIMIT: u64 = 1 << 53;
const DAY_MS: i64 = 24 * HOUR_MS;
const EXHAUSTED: &str =
    "ERR the id clock has reached its limit (2^53): no version or token can be issued";

fn error_of<T: std::fmt::Debug>(r: redis::RedisResult<T>) -> String {
    match r {
        Err(e) => {
            let code = e.code().unwrap_or("").to_string();
            let detail = e.detail().unwrap_or("").to_string();
            format!("{code} {detail}").trim().to_string()
        }
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// The ids a payload carries are checked against the wall clock: up to a day ahead is taken
/// (servers' clocks differ), further is refused like any bad payload and changes nothing.
#[test]
fn restore_refuses_ids_more_than_a_day_ahead_of_the_clock() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "k", b"v", &["EX", "3600"]).unwrap();
    let now = server_ms(&mut c);
    let ahead = |ms: i64| ((now + ms) as u64) << 10;
    // Ids far ahead: a version, a lease token, each alone.
    let far = ahead(DAY_MS + 10 * 60_000);
    let mut far_version = Record::valued(now + HOUR_MS, 0, 5, far);
    let far_token = Record::valued(now + HOUR_MS, 0, 5, 7).with_lease(far, now, now + HOUR_MS);
    let near_limit = Record::valued(now + HOUR_MS, 0, 5, ID_LIMIT - 1);
    let digest_before = digest(&mut c);
    let clock_before = last_id(&mut c);
    for (what, r) in [
        ("version a day and 10 min ahead", &far_version),
        ("token a day and 10 min ahead", &far_token),
        ("version 2^53 - 1", &near_limit),
    ] {
        for key in ["k", "new"] {
            let e = error_of(restore(&mut c, key, r, Some(b"x")));
            assert!(e.contains("Bad data format"), "{what} on {key}: {e}");
        }
    }
    assert_eq!(
        digest(&mut c),
        digest_before,
        "a refused RESTORE changed data"
    );
    assert_eq!(
        last_id(&mut c),
        clock_before,
        "a refused RESTORE moved the clock"
    );

    // Within the day: taken, and every later id is larger.
    let plausible = ahead(DAY_MS - 10 * 60_000);
    far_version.version = plausible;
    restore(&mut c, "new", &far_version, Some(b"x")).unwrap();
    // The entry gets a fresh version where it lands, above the one it brought.
    assert!(version_of(&mut c, "new").unwrap() > plausible);
    let v = set(&mut c, "k", b"v2", &["EX", "3600"]).unwrap();
    assert!(
        v > plausible,
        "version {v} not above the restored {plausible}"
    );
}

/// A server whose clock was pushed to the limit (only data it loads can do that: its AOF,
/// RDB or primary) refuses every write that needs an id, with an error and nothing written;
/// reads go on, and it saves, reloads and restarts from its own RDB.
#[test]
fn at_the_id_limit_writes_are_refused_and_the_server_still_reloads() {
    let mut s = Server::start();
    let now = server_ms(&mut s.conn());
    // A value at the last id, and a lease at the one before it.
    let top = Record::valued(now + HOUR_MS, 0, 5, ID_LIMIT - 1);
    let leased = Record::new(now, HAS_LEASE, &[]).with_lease(ID_LIMIT - 2, now, now + HOUR_MS);
    s.shutdown(false);
    write_aof(
        s.dir.path(),
        &[
            ["CACHE.APPLY", "top"]
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .chain([top.encode(), b"at the top".to_vec()])
                .collect(),
            ["CACHE.APPLY", "leased"]
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .chain([leased.encode()])
                .collect(),
        ],
    );
    s.restart_with(false, &["--appendonly", "yes"]);
    assert_eq!(aof_load_errors(&s.log()), Vec::<String>::new());
    let mut c = s.conn();
    assert_eq!(last_id(&mut c), ID_LIMIT - 1);
    assert_eq!(version_of(&mut c, "top"), Some(ID_LIMIT - 1));

    let digest_before = digest(&mut c);
    let writes_before = info_cache(&mut c)["writes"];
    let granted_before = info_cache(&mut c)["leases_granted"];
    let refused: Vec<(&str, redis::RedisResult<Value>)> = vec![
        (
            "SET over an entry",
            redis::cmd("CACHE.SET")
                .arg("top")
                .arg("v")
                .arg("EX")
                .arg(60)
                .query(&mut c),
        ),
        (
            "SET of a new key",
            redis::cmd("CACHE.SET")
                .arg("fresh")
                .arg("v")
                .arg("EX")
                .arg(60)
                .query(&mut c),
        ),
        (
            "a fill with the lease token",
            redis::cmd("CACHE.SET")
                .arg("leased")
                .arg("v")
                .arg("EX")
                .arg(60)
                .arg("TOKEN")
                .arg(ID_LIMIT - 2)
                .query(&mut c),
        ),
        (
            "GETX miss (a lease)",
            redis::cmd("CACHE.GETX").arg("missing").query(&mut c),
        ),
        (
            "LOCKGET miss (a lease)",
            redis::cmd("CACHE.LOCKGET").arg("missing").query(&mut c),
        ),
    ];
    for (what, r) in refused {
        assert_eq!(error_of(r), EXHAUSTED, "{what}");
    }
    assert_eq!(
        digest(&mut c),
        digest_before,
        "a refused write changed data"
    );
    assert_eq!(last_id(&mut c), ID_LIMIT - 1, "an id at or past the limit");
    assert_eq!(info_cache(&mut c)["writes"], writes_before);
    assert_eq!(info_cache(&mut c)["leases_granted"], granted_before);
    // Reads and deletes need no id.
    let v: Option<Vec<u8>> = redis::cmd("CACHE.GET").arg("top").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some(&b"at the top"[..]));

    // It reloads and restarts from what it saved.
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_eq!(digest(&mut c), digest_before, "after DEBUG RELOAD");
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    drop(c);
    s.restart_with(true, &["--appendonly", "no"]);
    let mut c = s.conn();
    assert_eq!(
        digest(&mut c),
        digest_before,
        "after a restart from the RDB"
    );
    assert_eq!(last_id(&mut c), ID_LIMIT - 1);
    let _: i64 = redis::cmd("CACHE.DEL").arg("top").query(&mut c).unwrap();
    assert!(s.is_alive());
}

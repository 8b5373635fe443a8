//! Versions are strictly increasing per key on every path, also where Redis's own commands put
//! an entry on a name (`COPY`, `RENAME`, `MOVE`, `RESTORE`): the entry gets a fresh version
//! there, replicas and the AOF get the same one, and loading keeps versions exactly. And a
//! lease that moves with its entry (`RENAME`, `MOVE`) is not counted as revoked.

mod support;

use std::time::Duration;

use redis::Connection;

use support::commands::*;
use support::server::{repl_offset, start_replica, wait_caught_up, wait_until, Server};

/// `old` at `dst` (a later write than `src`'s, so a higher version), then `op` puts `src`'s
/// entry on `dst`: the version there must be above `old`'s, and the value `src`'s.
fn lands_with_a_fresh_version(c: &mut Connection, op: &[&str], dst_db: Option<&str>) {
    set(c, "src", b"from src", &["EX", "3600"]).unwrap();
    let src_version = version_of(c, "src").expect("a version");
    if let Some(db) = dst_db {
        let _: () = q(c, &["SELECT", db]);
    }
    let old = set(c, "dst", b"old at dst", &["EX", "3600"]).unwrap();
    if dst_db.is_some() {
        // MOVE needs the name free in the other database: the old entry is deleted, and the
        // promise holds across deletes.
        let _: i64 = q(c, &["DEL", "dst"]);
        let _: () = q(c, &["SELECT", "0"]);
    }
    assert!(old > src_version);
    let _: redis::Value = q(c, op);
    if let Some(db) = dst_db {
        let _: () = q(c, &["SELECT", db]);
    }
    let landed = if dst_db.is_some() { "src" } else { "dst" };
    let v = version_of(c, landed).expect("a version");
    assert!(
        v > old,
        "{}: version {v} not above {old}, the one the name had",
        op.join(" ")
    );
    assert_eq!(cache_get(c, landed).as_deref(), Some(&b"from src"[..]));
    let later = set(c, landed, b"later", &["EX", "3600"]).unwrap();
    assert!(later > v);
    let _: i64 = q(c, &["DEL", "src", "dst"]);
    let _: () = q(c, &["SELECT", "0"]);
    let _: i64 = q(c, &["DEL", "src", "dst"]);
}

#[test]
fn copy_rename_move_and_restore_give_a_fresh_version() {
    let s = Server::start();
    let mut c = s.conn();
    lands_with_a_fresh_version(&mut c, &["COPY", "src", "dst", "REPLACE"], None);
    lands_with_a_fresh_version(&mut c, &["RENAME", "src", "dst"], None);
    lands_with_a_fresh_version(&mut c, &["MOVE", "src", "1"], Some("1"));
    // RESTORE ... REPLACE of an older DUMP.
    set(&mut c, "src", b"from src", &["EX", "3600"]).unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut c).unwrap();
    let old = set(&mut c, "dst", b"old at dst", &["EX", "3600"]).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("dst")
        .arg(0)
        .arg(&dump)
        .arg("REPLACE")
        .query(&mut c)
        .unwrap();
    let v = version_of(&mut c, "dst").expect("a version");
    assert!(v > old, "RESTORE REPLACE: version {v} not above {old}");
    // COPY into another database.
    let _: () = q(&mut c, &["SELECT", "2"]);
    let old = set(&mut c, "dst", b"old in db 2", &["EX", "3600"]).unwrap();
    let _: () = q(&mut c, &["SELECT", "0"]);
    let _: i64 = q(&mut c, &["COPY", "src", "dst", "DB", "2", "REPLACE"]);
    let _: () = q(&mut c, &["SELECT", "2"]);
    let v = version_of(&mut c, "dst").expect("a version");
    assert!(v > old, "COPY ... DB 2: version {v} not above {old}");
}

/// The fresh version is there for the very next command, also in the same MULTI or pipeline.
#[test]
fn the_next_command_sees_the_fresh_version() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "src", b"a", &["EX", "3600"]).unwrap();
    let old = set(&mut c, "dst", b"b", &["EX", "3600"]).unwrap();
    let (_, fields): (i64, Vec<redis::Value>) = redis::pipe()
        .atomic()
        .cmd("COPY")
        .arg("src")
        .arg("dst")
        .arg("REPLACE")
        .cmd("CACHE.INSPECT")
        .arg("dst")
        .query(&mut c)
        .unwrap();
    let at = fields
        .iter()
        .position(|f| f == &redis::Value::SimpleString("version".into()));
    let v: u64 = redis::from_redis_value(&fields[at.expect("a version field") + 1]).unwrap();
    assert!(v > old, "in MULTI: version {v} not above {old}");
    assert_eq!(
        version_of(&mut c, "dst").expect("a version"),
        v,
        "a second fresh version"
    );
}

/// The replica and the AOF get the primary's fresh versions: the same digest, the same
/// versions; a restart from the AOF and `DEBUG RELOAD` keep them exactly.
#[test]
fn replicas_and_the_aof_get_the_same_fresh_versions() {
    let mut p = Server::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let r = start_replica(&p, &[]);
    let (mut pc, mut rc) = (p.conn(), r.conn());
    set(&mut pc, "a", b"a", &["EX", "3600"]).unwrap();
    set(&mut pc, "b", b"b", &["EX", "3600", "GRACE", "1000"]).unwrap();
    let old_c = set(&mut pc, "c", b"c", &["EX", "3600"]).unwrap();
    let old_b = version_of(&mut pc, "b").expect("a version");
    // A TTL of the key's own, different from the entry's: a fresh version must not reset it.
    let _: i64 = q(&mut pc, &["PEXPIRE", "a", "7200000"]);
    let _: i64 = q(&mut pc, &["COPY", "a", "b", "REPLACE"]);
    let _: () = q(&mut pc, &["RENAME", "c", "d"]);
    let dump: Vec<u8> = redis::cmd("DUMP").arg("b").query(&mut pc).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("e")
        .arg(0)
        .arg(&dump)
        .query(&mut pc)
        .unwrap();
    let _: i64 = q(&mut pc, &["MOVE", "e", "3"]);
    // The timer gives the fresh versions when no command of ours comes first.
    let fresh = wait_until(Duration::from_secs(10), || {
        let before = repl_offset(&mut pc);
        std::thread::sleep(Duration::from_millis(20));
        before == repl_offset(&mut pc)
    });
    assert!(fresh);
    wait_caught_up(&mut pc, &mut rc);
    assert!(
        version_of(&mut pc, "b").expect("a version") > old_b,
        "COPY: no fresh version"
    );
    assert!(
        version_of(&mut pc, "d").expect("a version") > old_c,
        "RENAME: no fresh version"
    );
    let pd = digest(&mut pc);
    assert_eq!(pd, digest(&mut rc), "replica digest");
    for key in ["a", "b", "d"] {
        assert_eq!(
            version_of(&mut pc, key).expect("a version"),
            version_of(&mut rc, key).expect("a version"),
            "{key}"
        );
    }
    let ttl_a: i64 = q(&mut pc, &["PTTL", "b"]);
    assert!(
        ttl_a > 3_600_000,
        "COPY kept the source key's own TTL: {ttl_a}"
    );
    let _: () = q(&mut pc, &["DEBUG", "RELOAD"]);
    assert_eq!(digest(&mut pc), pd, "after DEBUG RELOAD");
    drop(pc);
    p.restart(false);
    let mut pc = p.conn();
    assert_eq!(digest(&mut pc), pd, "after a restart from the AOF");
}

/// A lease moves with its entry under `RENAME` and `MOVE`: it is not counted as revoked, and
/// its token still fills the entry under the new name. A lease on the key `RENAME` overwrites
/// is revoked, and counted.
#[test]
fn rename_and_move_keep_the_lease_and_do_not_count_it_revoked() {
    let s = Server::start();
    let mut c = s.conn();
    let revoked = |c: &mut Connection| info_cache(c)["leases_revoked"];
    let (_, status, token) = getx(&mut c, "a", &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    let token = token.unwrap();
    let before = revoked(&mut c);
    let _: () = q(&mut c, &["RENAME", "a", "b"]);
    assert_eq!(
        revoked(&mut c),
        before,
        "RENAME counted the lease as revoked"
    );
    let _: i64 = q(&mut c, &["MOVE", "b", "1"]);
    assert_eq!(revoked(&mut c), before, "MOVE counted the lease as revoked");
    let _: () = q(&mut c, &["SELECT", "1"]);
    let filled = set(
        &mut c,
        "b",
        b"filled",
        &["EX", "3600", "TOKEN", &token.to_string()],
    );
    assert!(filled.is_some(), "the moved lease no longer fills");
    // RENAME onto a key with a live lease: that lease is revoked.
    let (_, _, t2) = getx(&mut c, "x", &["LEASE", "3600000"]);
    let before = revoked(&mut c);
    let _: () = q(&mut c, &["RENAME", "b", "x"]);
    assert_eq!(revoked(&mut c), before + 1, "the overwritten lease");
    let refused = set(
        &mut c,
        "x",
        b"late",
        &["EX", "3600", "TOKEN", &t2.unwrap().to_string()],
    );
    assert_eq!(refused, None);
    // DEL of a leased key still counts.
    let (_, _, _) = getx(&mut c, "y", &["LEASE", "3600000"]);
    let _: i64 = q(&mut c, &["DEL", "y"]);
    assert_eq!(revoked(&mut c), before + 2);
}

/// A client that runs `MOVE` stays in its own database (Valkey 8.1 left it in the destination
/// one once a module subscribed to generic keyspace events; the module puts it back).
#[test]
fn move_leaves_the_client_in_its_database() {
    let s = Server::start();
    let mut c = s.conn();
    for (i, kind) in ["entry", "string"].iter().enumerate() {
        let key = format!("k{i}");
        match *kind {
            "entry" => {
                set(&mut c, &key, b"v", &["EX", "3600"]).unwrap();
            }
            _ => {
                let _: () = q(&mut c, &["SET", &key, "v"]);
            }
        }
        let moved: i64 = q(&mut c, &["MOVE", &key, "4"]);
        assert_eq!(moved, 1);
        let _: () = q(&mut c, &["SET", "here", kind]);
        let info: String = q(&mut c, &["CLIENT", "INFO"]);
        assert!(info.contains(" db=0 "), "after MOVE of a {kind}: {info}");
        let _: () = q(&mut c, &["SELECT", "4"]);
        let exists: i64 = q(&mut c, &["EXISTS", &key, "here"]);
        assert_eq!(exists, 1, "{kind}: moved, and nothing else written in db 4");
        let _: () = q(&mut c, &["SELECT", "0"]);
    }
}

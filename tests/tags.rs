//! Tags against a real server: `CACHE.TAGSET`, `CACHE.TAGS`, `CACHE.TAGCOUNT`, `CACHE.TAGSCAN`,
//! and the tag index kept true on every path by which an entry appears, changes its tags or
//! goes (one test per path), rebuilt after loads, and back to nothing when the tagged entries
//! are gone.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Connection;

use support::commands::*;
use support::server::{slow, start_replica, wait_caught_up, wait_until, Server};

fn err(c: &mut Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(c) {
        Err(e) => format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
            .trim()
            .to_string(),
        Ok(v) => panic!("{}: expected an error, got {v:?}", args.join(" ")),
    }
}

fn keys(v: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

const HOUR: &[&str] = &["EX", "3600"];

#[test]
fn tagset_sets_exactly_its_tags_and_set_keeps_them() {
    let s = Server::start();
    let mut c = s.conn();
    let v1 = tagset(&mut c, "a", b"one", HOUR, &["t1", "t2", "t1"]).unwrap();
    assert_eq!(
        tags_of(&mut c, "a"),
        ["t1", "t2"],
        "repeated tags count once"
    );
    assert_eq!(cache_get(&mut c, "a").as_deref(), Some(&b"one"[..]));
    // TAGSET over it: exactly the new tags.
    let v2 = tagset(&mut c, "a", b"two", HOUR, &["t3"]).unwrap();
    assert!(v2 > v1);
    assert_eq!(tags_of(&mut c, "a"), ["t3"]);
    assert_eq!((tagcount(&mut c, "t1"), tagcount(&mut c, "t3")), (0, 1));
    // A plain SET (a refresh) keeps them: the value stays reachable by its tags.
    set(&mut c, "a", b"three", HOUR).unwrap();
    assert_eq!(tags_of(&mut c, "a"), ["t3"]);
    assert_eq!(tagcount(&mut c, "t3"), 1);
    // Binary and empty tags.
    redis::cmd("CACHE.TAGSET")
        .arg("b")
        .arg("v")
        .arg("PX")
        .arg(60_000)
        .arg("TAGS")
        .arg(&b"\0bin\xff"[..])
        .arg("")
        .query::<u64>(&mut c)
        .unwrap();
    let t: Vec<Vec<u8>> = redis::cmd("CACHE.TAGS").arg("b").query(&mut c).unwrap();
    assert_eq!(t, [b"\0bin\xff".to_vec(), Vec::new()]);
    let n: i64 = redis::cmd("CACHE.TAGCOUNT")
        .arg(&b"\0bin\xff"[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    // No entry, or an untagged one: an empty array; another type: WRONGTYPE.
    assert!(tags_of(&mut c, "nothing").is_empty());
    set(&mut c, "plain", b"v", HOUR).unwrap();
    assert!(tags_of(&mut c, "plain").is_empty());
    let _: () = q(&mut c, &["SET", "str", "x"]);
    assert!(err(&mut c, &["CACHE.TAGS", "str"]).starts_with("WRONGTYPE"));
    // A fill with TOKEN through TAGSET carries the tags too.
    let (_, status, token) = getx(&mut c, "filled", &[]);
    assert_eq!(status, "MISS");
    let token = token.unwrap().to_string();
    tagset(
        &mut c,
        "filled",
        b"f",
        &["EX", "60", "TOKEN", &token],
        &["t3"],
    )
    .unwrap();
    assert_eq!(tagcount(&mut c, "t3"), 2);
    let (tags, tagged, _) = tag_index(&mut c);
    assert_eq!(
        (tags, tagged),
        (3, 3),
        "t3, \\0bin\\xff and the empty tag; a, b, filled"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    tagset(&mut c, "a", b"v", HOUR, &["t"]).unwrap();
    let before = (digest(&mut c), tag_index(&mut c), last_id(&mut c));
    for (args, want) in [
        (
            &["CACHE.TAGSET", "a", "v", "EX", "10"][..],
            "ERR wrong number of arguments for 'cache.tagset' command",
        ),
        (
            &["CACHE.TAGSET", "a", "v", "EX", "10", "GRACE", "5"],
            "ERR syntax error, TAGS is required",
        ),
        (
            &["CACHE.TAGSET", "a", "v", "EX", "10", "TAGS"],
            "ERR syntax error, a tag after TAGS is required",
        ),
        (
            &["CACHE.TAGSET", "a", "v", "EX", "10", "x", "TAGS"],
            "ERR syntax error, a tag after TAGS is required",
        ),
        (
            &["CACHE.TAGSET", "a", "v", "TAGS", "t", "u"],
            "ERR syntax error, EX or PX is required",
        ),
        (
            &["CACHE.TAGSET", "a", "v", "EX", "0", "TAGS", "t"],
            "ERR invalid EX time",
        ),
        (
            &[
                "CACHE.TAGSET",
                "a",
                "v",
                "EX",
                "10",
                "BOGUS",
                "1",
                "TAGS",
                "t",
            ],
            "ERR syntax error",
        ),
        (&["CACHE.TAGSET", "a", "v"], "ERR wrong number of arguments"),
        (&["CACHE.TAGS"], "ERR wrong number of arguments"),
        (&["CACHE.TAGS", "a", "b"], "ERR wrong number of arguments"),
        (&["CACHE.TAGCOUNT"], "ERR wrong number of arguments"),
        (
            &["CACHE.TAGCOUNT", "t", "u"],
            "ERR wrong number of arguments",
        ),
        (&["CACHE.TAGSCAN", "t"], "ERR wrong number of arguments"),
        (&["CACHE.TAGSCAN", "t", "x"], "ERR invalid cursor"),
        (&["CACHE.TAGSCAN", "t", "-1"], "ERR invalid cursor"),
        (&["CACHE.TAGSCAN", "t", "0", "COUNT"], "ERR syntax error"),
        (
            &["CACHE.TAGSCAN", "t", "0", "COUNT", "0"],
            "ERR syntax error",
        ),
        (
            &["CACHE.TAGSCAN", "t", "0", "COUNT", "x"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["CACHE.TAGSCAN", "t", "0", "MATCH", "x"],
            "ERR syntax error",
        ),
        (&["CACHE.TAGINVALIDATE"], "ERR wrong number of arguments"),
        (
            &["CACHE.TAGAPPLY", "1", "2", "t"],
            "ERR CACHE.TAGAPPLY is internal",
        ),
        (
            &["CACHE.TAGAPPLY", "x", "y", "t"],
            "ERR CACHE.TAGAPPLY is internal",
        ),
    ] {
        let e = err(&mut c, args);
        assert!(
            e.starts_with(want),
            "{}: {e:?}, want {want:?}",
            args.join(" ")
        );
    }
    let _: () = q(&mut c, &["SET", "str", "x"]);
    assert!(err(
        &mut c,
        &["CACHE.TAGSET", "str", "v", "EX", "10", "TAGS", "t"]
    )
    .starts_with("WRONGTYPE"));
    let _: i64 = q(&mut c, &["DEL", "str"]);
    assert_eq!((digest(&mut c), tag_index(&mut c), last_id(&mut c)), before);
}

#[test]
fn tagscan_returns_every_member_across_changes() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..250 {
        tagset(
            &mut c,
            &format!("k{i}"),
            b"v",
            HOUR,
            &["t", &format!("own{i}")],
        )
        .unwrap();
    }
    tagset(&mut c, "other", b"v", HOUR, &["u"]).unwrap();
    assert_eq!(tagcount(&mut c, "t"), 250);
    assert_eq!(tagscan_all(&mut c, "t").len(), 250);
    assert_eq!(tagscan_all(&mut c, "nope"), Vec::<String>::new());
    assert_eq!(tagscan(&mut c, "nope", 0, 10), (0, vec![]));

    // Pages of 7 while entries come and go: every key that has the tag from start to end
    // is returned (at least once); removed ones may or may not be.
    let mut returned = BTreeSet::new();
    let mut cursor = 0;
    let mut round = 0;
    loop {
        let (next, keys) = tagscan(&mut c, "t", cursor, 7);
        // COUNT is a hint, as for SCAN: a call walks about ten times as many keys.
        assert!(keys.len() <= 100, "a page of {}", keys.len());
        returned.extend(keys);
        // Changes in between pages: delete some, add some, retag some away and back.
        let _: i64 = q(&mut c, &["DEL", &format!("k{}", 200 + round % 50)]);
        tagset(&mut c, &format!("new{round}"), b"v", HOUR, &["t"]).unwrap();
        if round % 3 == 0 {
            tagset(
                &mut c,
                &format!("k{}", round % 100),
                b"v",
                HOUR,
                &["t", "x"],
            )
            .unwrap();
        }
        round += 1;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for i in 0..200 {
        assert!(
            returned.contains(&format!("k{i}")),
            "k{i} was never returned"
        );
    }
    assert!(!returned.contains("other"));
    // COUNT defaults to 10 (a hint, as for SCAN: the same page as with COUNT 10, and at
    // least 10 keys when nearly every key carries the tag).
    let (_, page): (String, Vec<String>) = redis::cmd("CACHE.TAGSCAN")
        .arg("t")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let (_, ten) = tagscan(&mut c, "t", 0, 10);
    assert_eq!(page, ten);
    assert!(page.len() >= 10, "{} keys", page.len());
}

/// Each path by which an entry goes, or lands elsewhere, keeps the index true.
#[test]
fn every_removal_path_keeps_the_index_true() {
    let s = Server::start_with(&["--lazyfree-lazy-user-flush", "no"]);
    let mut c = s.conn();
    let fresh = |c: &mut Connection, key: &str| {
        tagset(c, key, b"v", HOUR, &["t"]).unwrap();
    };
    for (what, setup, op, want) in [
        ("CACHE.DEL", &["a"][..], &["CACHE.DEL", "a"][..], &[][..]),
        ("DEL", &["a"], &["DEL", "a"], &[]),
        ("UNLINK", &["a"], &["UNLINK", "a"], &[]),
        ("SET over it", &["a"], &["SET", "a", "string now"], &[]),
        ("RENAME", &["a"], &["RENAME", "a", "b"], &["b"]),
        (
            "RENAME over another",
            &["a", "b"],
            &["RENAME", "a", "b"],
            &["b"],
        ),
        ("COPY", &["a"], &["COPY", "a", "b"], &["a", "b"]),
        (
            "COPY REPLACE",
            &["a", "b"],
            &["COPY", "a", "b", "REPLACE"],
            &["a", "b"],
        ),
        ("MOVE", &["a"], &["MOVE", "a", "5"], &[]),
        ("FLUSHDB", &["a", "b"], &["FLUSHDB"], &[]),
        ("FLUSHDB ASYNC", &["a", "b"], &["FLUSHDB", "ASYNC"], &[]),
        ("FLUSHALL", &["a", "b"], &["FLUSHALL"], &[]),
        ("FLUSHALL ASYNC", &["a", "b"], &["FLUSHALL", "ASYNC"], &[]),
    ] {
        let _: () = q(&mut c, &["FLUSHALL"]);
        for k in setup {
            fresh(&mut c, k);
        }
        let _: redis::Value = q(&mut c, op);
        assert_eq!(tagscan_all(&mut c, "t"), keys(want), "{what}");
        assert_eq!(tagcount(&mut c, "t"), want.len() as i64, "{what}");
    }
    // MOVE: the entry is indexed in its new database.
    let _: () = q(&mut c, &["SELECT", "5"]);
    assert_eq!(
        tagscan_all(&mut c, "t"),
        Vec::<String>::new(),
        "FLUSHALL emptied db 5"
    );
    let _: () = q(&mut c, &["SELECT", "0"]);
    fresh(&mut c, "m");
    let _: i64 = q(&mut c, &["MOVE", "m", "5"]);
    let _: () = q(&mut c, &["SELECT", "5"]);
    assert_eq!(tagscan_all(&mut c, "t"), ["m"]);
    // SWAPDB: db 5's entry is now in db 0, and db 0's (none) in db 5.
    let _: () = q(&mut c, &["SWAPDB", "0", "5"]);
    assert_eq!(tagcount(&mut c, "t"), 0);
    let _: () = q(&mut c, &["SELECT", "0"]);
    assert_eq!(tagscan_all(&mut c, "t"), ["m"]);
    // RESTORE REPLACE with the payload of another entry: its tags.
    tagset(&mut c, "src", b"v", HOUR, &["u"]).unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut c).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("m")
        .arg(0)
        .arg(dump)
        .arg("REPLACE")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        tagscan_all(&mut c, "t"),
        Vec::<String>::new(),
        "RESTORE REPLACE"
    );
    assert_eq!(tagscan_all(&mut c, "u"), ["m", "src"]);
    // Expiry.
    tagset(&mut c, "short", b"v", &["PX", "50"], &["e"]).unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        // Reading it expires it if the active cycle has not yet.
        let _ = cache_get(&mut c, "short");
        tagcount(&mut c, "e") == 0
    });
    assert!(gone, "an expired entry stayed in the index");
    // A lease grant on a tagged entry (a stale read) keeps it indexed.
    tagset(&mut c, "g", b"v", &["PX", "1", "GRACE", "60000"], &["g"]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let (_, status, _) = getx(&mut c, "g", &[]);
    assert_eq!(status, "STALE");
    assert_eq!(tagscan_all(&mut c, "g"), ["g"]);
}

#[test]
fn eviction_keeps_the_index_true() {
    let s = Server::start_with(&["--maxmemory-policy", "allkeys-random"]);
    let mut c = s.conn();
    // What the index costs per entry without eviction: the reference for after it. Each
    // entry has a tag of its own, so that the index holds something for each.
    for i in 0..1_000 {
        tagset(
            &mut c,
            &format!("r{i:05}"),
            b"v",
            HOUR,
            &["t", &format!("r{i:05}")],
        )
        .unwrap();
    }
    let (_, tagged, bytes) = tag_index(&mut c);
    let per_entry = bytes as f64 / tagged as f64;
    let baseline = used_memory(&mut c);
    let _: () = q(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            &(baseline + 4_000_000).to_string(),
        ],
    );
    let value = vec![b'x'; 1000];
    for i in 0..20_000 {
        // Writes near the limit evict others; a write refused for memory is fine too.
        let _ = redis::cmd("CACHE.TAGSET")
            .arg(format!("k{i:05}"))
            .arg(&value)
            .arg("EX")
            .arg(3600)
            .arg("TAGS")
            .arg("t")
            .arg(format!("k{i:05}"))
            .query::<redis::Value>(&mut c);
    }
    let evicted = info_int(&mut c, "stats", "evicted_keys");
    assert!(evicted > 0, "nothing was evicted");
    // Over the limit, Redis evicts before every command, reads too: lift the limit so that
    // the counts below are of one keyspace.
    let _: () = q(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    let live = dbsize(&mut c);
    assert_eq!(
        tagcount(&mut c, "t"),
        live,
        "the index counts only live entries"
    );
    assert_eq!(tagscan_all(&mut c, "t").len() as i64, live);
    // Nothing of the evicted entries stays in the index: its memory is that of the live ones.
    let (tags, tagged, bytes) = tag_index(&mut c);
    assert_eq!((tags, tagged), (1 + live, live));
    let after = bytes as f64 / tagged as f64;
    assert!(
        (after - per_entry).abs() <= 0.1 * per_entry,
        "index bytes per live entry {after:.1} after eviction, {per_entry:.1} before"
    );
}

/// 100k tagged entries with a 1 s TTL: once they have expired the index is empty and its
/// memory back to where it started.
#[test]
fn the_index_returns_to_baseline_when_tagged_entries_expire() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, _, baseline) = tag_index(&mut c);
    assert_eq!(baseline, 0);
    // 100,000 entries living 5 s (long enough for the writes to end on a loaded machine
    // before most expire); under valgrind (`slow()` > 1) fewer, living longer.
    let n = 100_000 / i64::from(slow());
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("CACHE.TAGSET")
            .arg(format!("k{i}"))
            .arg("v")
            .arg("PX")
            .arg(5000 * slow())
            .arg("TAGS")
            .arg(format!("tenant:{}", i % 100))
            .arg("all")
            // A tag of its own: the index holds something for every entry.
            .arg(format!("own:{i}"))
            .ignore();
        if i % 5_000 == 4_999 {
            let _: () = pipe.query(&mut c).unwrap();
            pipe = redis::pipe();
        }
    }
    let (tags, tagged, bytes) = tag_index(&mut c);
    assert!(tagged > n * 9 / 10, "{tagged} tagged");
    assert!(tags >= 100, "{tags} tags");
    assert!(bytes > n * 40, "{bytes} bytes for the index");
    let emptied = wait_until(Duration::from_secs(30), || {
        // Redis's active expiry removes them in its own cycles; a SCAN-like read helps it on.
        tag_index(&mut c) == (0, 0, 0)
    });
    assert!(
        emptied,
        "the index still holds {:?} after 30 s (dbsize {})",
        tag_index(&mut c),
        dbsize(&mut c)
    );
}

/// Loads replace the keyspace and the index is rebuilt: DEBUG RELOAD, a restart from the RDB
/// and from the AOF, a replica's full sync; and the replica follows the primary's writes.
#[test]
fn the_index_is_rebuilt_after_loads_and_followed_by_replicas() {
    let mut s = Server::start_with(&["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]);
    let mut c = s.conn();
    for i in 0..50 {
        tagset(
            &mut c,
            &format!("k{i}"),
            b"v",
            HOUR,
            &["t", &format!("g{}", i % 5)],
        )
        .unwrap();
    }
    let _: () = q(&mut c, &["SELECT", "3"]);
    tagset(&mut c, "in3", b"v", HOUR, &["t"]).unwrap();
    let _: () = q(&mut c, &["SELECT", "0"]);
    let expect = |c: &mut Connection, what: &str| {
        assert_eq!(tagcount(c, "t"), 50, "{what}");
        assert_eq!(tagscan_all(c, "g3").len(), 10, "{what}");
        let _: () = q(c, &["SELECT", "3"]);
        assert_eq!(tagscan_all(c, "t"), ["in3"], "{what}: db 3");
        let _: () = q(c, &["SELECT", "0"]);
        assert_eq!(tag_index(c).1, 51, "{what}: tagged entries");
    };
    expect(&mut c, "written");
    let _: () = q(&mut c, &["DEBUG", "RELOAD"]);
    expect(&mut c, "DEBUG RELOAD");
    drop(c);
    s.restart(false);
    let mut c = s.conn();
    expect(&mut c, "restart from the AOF");
    let _: () = q(&mut c, &["CONFIG", "SET", "appendonly", "no"]);
    let _: () = q(&mut c, &["SAVE"]);
    drop(c);
    s.restart_with(true, &["--appendonly", "no"]);
    let mut c = s.conn();
    expect(&mut c, "restart from the RDB");

    let r = start_replica(&s, &[]);
    let mut rc = r.conn();
    wait_caught_up(&mut c, &mut rc);
    expect(&mut rc, "replica after the full sync");
    // The replica follows: retag, delete, rename on the primary.
    tagset(&mut c, "k0", b"v", HOUR, &["z"]).unwrap();
    let _: i64 = q(&mut c, &["DEL", "k1"]);
    let _: () = q(&mut c, &["RENAME", "k2", "renamed"]);
    wait_caught_up(&mut c, &mut rc);
    for conn in [&mut c, &mut rc] {
        assert_eq!(tagcount(conn, "t"), 48);
        assert_eq!(tagscan_all(conn, "z"), ["k0"]);
        assert!(tagscan_all(conn, "g2").contains(&"renamed".to_string()));
    }
    assert_eq!(digest(&mut c), digest(&mut rc));
}

/// A rare tag in a large database: each call walks a bounded part of the keyspace (some
/// answer no key and a cursor to go on from), and the iteration still finds every entry.
#[test]
fn tagscan_of_a_rare_tag_walks_in_bounded_calls() {
    let s = Server::start();
    let mut c = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..5_000 {
        pipe.cmd("SET").arg(format!("plain{i}")).arg("v").ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    for key in ["r1", "r2", "r3"] {
        tagset(&mut c, key, b"v", HOUR, &["rare"]).unwrap();
    }
    let (mut cursor, mut calls, mut empty_pages) = (0, 0, 0);
    let mut found = BTreeSet::new();
    loop {
        let (next, keys) = tagscan(&mut c, "rare", cursor, 1);
        calls += 1;
        if keys.is_empty() && next != 0 {
            empty_pages += 1;
        }
        found.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
        assert!(calls < 10_000, "the iteration does not end");
    }
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["r1", "r2", "r3"]);
    assert!(
        calls > 10,
        "{calls} calls: each walks about 10 keys for COUNT 1"
    );
    assert!(empty_pages > 0, "no call came back empty-handed");
}

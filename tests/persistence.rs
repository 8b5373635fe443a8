//! Entries survive every way Redis persists and moves keys: DEBUG RELOAD, RDB restart, AOF
//! (rewrite output and incremental records, with and without the RDB preamble, clean shutdown
//! and kill -9), DUMP/RESTORE, RENAME, COPY; and they take part in MEMORY USAGE, expiry,
//! eviction and FLUSHALL like any key.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::Connection;

use support::commands::*;
use support::fixtures::*;
use support::records::{seal, Record, HOUR_MS};
use support::server::{slow, wait_until, Server};

const AOF_NO_PREAMBLE: &[&str] = &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"];

/// After a reload: the live leases are still honoured (once), the ended ones refused, and every
/// id issued now is larger than every id the server had issued or seen before (`last_before`).
fn check_leases_and_ids(c: &mut Connection, f: &Fixture, last_before: u64) {
    assert!(
        last_id(c) >= f.future_id,
        "the loaded ids were observed: last_id {} < {}",
        last_id(c),
        f.future_id
    );
    for (key, token) in &f.dead {
        assert_eq!(
            fill(c, key, b"late", *token),
            None,
            "{key:?}: a fill with the ended lease {token} was accepted"
        );
    }
    for (key, token) in &f.live {
        let v = fill(c, key, b"filled after reload", *token)
            .unwrap_or_else(|| panic!("{key:?}: fill with live lease {token} refused"));
        assert!(
            v > last_before,
            "{key:?}: version {v} issued after reload is not above {last_before}"
        );
        assert_eq!(
            cache_get(c, key).as_deref(),
            Some(&b"filled after reload"[..])
        );
        assert_eq!(
            fill(c, key, b"again", *token),
            None,
            "{key:?}: token reused"
        );
    }
    let p = &f.prefix;
    let v = set(c, format!("{p}new-after-reload"), b"n", &["EX", "60"]).unwrap();
    assert!(v > last_before, "new version {v} <= {last_before}");
    let (_, status, token) = getx(c, format!("{p}new-pending-after-reload"), &[]);
    assert_eq!(status, "MISS");
    assert!(token.unwrap() > v, "new token not above the new version");
}

fn all_keys(f: &Fixture) -> Vec<String> {
    f.keys.clone()
}

#[test]
fn debug_reload_keeps_every_entry() {
    let s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "r:");
    let before = snapshot(&mut c, &all_keys(&f));
    let entries = live_entries(&mut c);
    assert_eq!(entries, f.keys.len() as i64);
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    let after = snapshot(&mut c, &all_keys(&f));
    assert_same("DEBUG RELOAD", &before, &after);
    assert_eq!(live_entries(&mut c), entries, "entry count after reload");
    let last = last_id(&mut c);
    check_leases_and_ids(&mut c, &f, last);
}

#[test]
fn rdb_restart_keeps_entries_leases_and_id_order() {
    let mut s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "rdb:");
    let before = snapshot(&mut c, &all_keys(&f));
    let last_before = last_id(&mut c);
    drop(c);
    s.restart(true);
    let mut c = s.conn();
    let after = snapshot(&mut c, &all_keys(&f));
    assert_same("RDB restart", &before, &after);
    assert_eq!(live_entries(&mut c), f.keys.len() as i64);
    check_leases_and_ids(&mut c, &f, last_before);
}

fn aof_dir(s: &Server) -> PathBuf {
    s.dir.path().join("appendonlydir")
}

/// The AOF files whose names end with `suffix`, concatenated.
fn aof_bytes(dir: &Path, suffix: &str) -> Vec<u8> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if n.to_string_lossy().ends_with(suffix) {
            out.extend(std::fs::read(&n).unwrap_or_default());
        }
    }
    out
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    if hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Counts a command name as it appears in AOF records (`$len\r\nNAME\r\n`), any case.
fn count_cmd(aof: &[u8], name: &str) -> usize {
    let lower: Vec<u8> = aof.to_ascii_lowercase();
    let needle = format!("\r\n${}\r\n{}\r\n", name.len(), name.to_ascii_lowercase());
    count(&lower, needle.as_bytes())
}

fn bgrewriteaof(c: &mut Connection) {
    let before = info_int(c, "persistence", "aof_rewrites");
    let _: String = redis::cmd("BGREWRITEAOF").query(c).unwrap();
    let done = wait_until(Duration::from_secs(30), || {
        info_int(c, "persistence", "aof_rewrites") > before
            && info_int(c, "persistence", "aof_rewrite_in_progress") == 0
    });
    assert!(done, "BGREWRITEAOF did not finish");
    assert_eq!(
        info_field(c, "persistence", "aof_last_bgrewrite_status").as_deref(),
        Some("ok")
    );
}

/// Changes made after a rewrite, on top of entries that are in the rewrite output: they reach
/// the server again only through incremental AOF records.
fn modify_after_rewrite(c: &mut Connection, f: &mut Fixture, p: &str) {
    let k = |n: &str| format!("{p}{n}");
    let n: i64 = redis::cmd("CACHE.DEL").arg(k("empty")).query(c).unwrap();
    assert_eq!(n, 1);
    f.forget_key(&k("empty"));
    let n: i64 = redis::cmd("DEL").arg(k("big")).query(c).unwrap();
    assert_eq!(n, 1);
    f.forget_key(&k("big"));
    set(c, k("plain"), b"hello again", &["EX", "7200"]).unwrap();
    // Authoritative write over the pending entry: its lease is revoked.
    set(c, k("pending"), b"authoritative", &["EX", "3600"]).unwrap();
    f.kill_tokens(&k("pending"));
    // A new lease on a value that came from the rewrite: a "keep the value" record.
    let t = refresh_grant(c, &k("lapsed"), HOUR_MS);
    f.live.push((k("lapsed"), t));
}

/// Fixture, optional rewrite and changes after it, restart (clean or kill -9) with the same
/// arguments, everything equal.
fn aof_round_trip(args: &[&str], preamble: bool, rewrite: bool, kill: bool) {
    let mut s = Server::start_with(args);
    let mut c = s.conn();
    wait_rewrite_idle(&mut c, Duration::from_secs(30));
    let mut f = fill_fixture(&mut c, "a:");
    if rewrite {
        bgrewriteaof(&mut c);
        if !preamble {
            // The rewrite output holds one CACHE.APPLY per entry (aof_rewrite ran).
            let base = aof_bytes(&aof_dir(&s), ".base.aof");
            assert_eq!(
                count_cmd(&base, "CACHE.APPLY"),
                f.keys.len(),
                "CACHE.APPLY records in the rewritten base file"
            );
        }
        modify_after_rewrite(&mut c, &mut f, "a:");
    }
    let g = fill_fixture(&mut c, "b:");
    let mut keys = all_keys(&f);
    keys.extend(all_keys(&g));
    let before = snapshot(&mut c, &keys);
    let last_before = last_id(&mut c);
    let entries = live_entries(&mut c);
    drop(c);
    if kill {
        s.kill();
    }
    s.restart(false);
    let mut c = s.conn();
    let after = snapshot(&mut c, &keys);
    assert_same("AOF restart", &before, &after);
    assert_eq!(live_entries(&mut c), entries);
    if rewrite {
        assert!(
            !exists(&mut c, "a:empty"),
            "CACHE.DEL after the rewrite undone"
        );
        assert!(!exists(&mut c, "a:big"), "DEL after the rewrite undone");
    }
    check_leases_and_ids(&mut c, &f, last_before);
    check_leases_and_ids(&mut c, &g, last_before);
}

#[test]
fn aof_without_preamble_rewrite_and_increments_survive_restart() {
    aof_round_trip(AOF_NO_PREAMBLE, false, true, false);
}

#[test]
fn aof_without_preamble_survives_kill_9() {
    let mut args = AOF_NO_PREAMBLE.to_vec();
    args.extend(["--appendfsync", "always"]);
    aof_round_trip(&args, false, true, true);
}

#[test]
fn aof_incremental_only_survives_restart() {
    aof_round_trip(AOF_NO_PREAMBLE, false, false, false);
}

#[test]
fn aof_with_rdb_preamble_survives_restart() {
    aof_round_trip(
        &["--appendonly", "yes", "--aof-use-rdb-preamble", "yes"],
        true,
        true,
        false,
    );
}

/// Every write reaches the AOF exactly once, as its effect (`CACHE.APPLY`, or `DEL`), and reads
/// reach it not at all.
#[test]
fn every_write_reaches_the_aof_once() {
    let mut args = AOF_NO_PREAMBLE.to_vec();
    args.extend(["--appendfsync", "always"]);
    let s = Server::start_with(&args);
    let mut c = s.conn();
    wait_rewrite_idle(&mut c, Duration::from_secs(30));
    let dir = aof_dir(&s);
    let incr = || aof_bytes(&dir, ".incr.aof");
    assert_eq!(count_cmd(&incr(), "CACHE.APPLY"), 0);

    let mut applies = 0;
    // 20 writes on 10 keys (each key twice).
    for round in 0..2 {
        for i in 0..10 {
            let v = format!("v{round}-{i}");
            set(
                &mut c,
                format!("k{i}"),
                v.as_bytes(),
                &["EX", "3600", "DELTA", "0"],
            )
            .unwrap();
            applies += 1;
        }
    }
    // Reads that change nothing.
    for i in 0..10 {
        let k = format!("k{i}");
        let (_, status, token) = getx(&mut c, &k, &[]);
        assert_eq!((status.as_str(), token), ("HIT", None));
        assert!(cache_get(&mut c, &k).is_some());
        assert!(inspect(&mut c, &k).is_some());
    }
    assert_eq!(cache_get(&mut c, "missing"), None);
    // Three lease grants, then readers that are told LOCKED.
    let mut tokens = Vec::new();
    for i in 0..3 {
        let (_, status, token) = getx(&mut c, format!("p{i}"), &["LEASE", "3600000"]);
        assert_eq!(status, "MISS");
        tokens.push(token.unwrap());
        applies += 1;
    }
    for i in 0..3 {
        let (_, status, _) = getx(&mut c, format!("p{i}"), &[]);
        assert_eq!(status, "LOCKED");
    }
    // One fill, one refused fill.
    assert!(fill(&mut c, "p0", b"filled", tokens[0]).is_some());
    applies += 1;
    // A grant on an entry with a value (a "keep the value" record), then an authoritative
    // write that revokes it.
    set(&mut c, "r", b"r", &["EX", "3600", "DELTA", "1000000000"]).unwrap();
    applies += 1;
    refresh_grant(&mut c, "r", HOUR_MS);
    applies += 1;
    set(&mut c, "r", b"r2", &["EX", "3600"]).unwrap();
    applies += 1;
    assert!(fill(&mut c, "p0", b"refused", tokens[0]).is_none());
    // One CACHE.DEL of two existing keys and a missing one; one of only missing keys.
    let n: i64 = redis::cmd("CACHE.DEL")
        .arg("k0")
        .arg("k1")
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("CACHE.DEL").arg("nope").query(&mut c).unwrap();
    assert_eq!(n, 0);

    let reached = wait_until(Duration::from_secs(10), || {
        let aof = incr();
        count_cmd(&aof, "CACHE.APPLY") >= applies && count_cmd(&aof, "DEL") >= 1
    });
    std::thread::sleep(Duration::from_millis(200));
    let aof = incr();
    assert!(reached, "the AOF did not get the writes");
    assert_eq!(
        count_cmd(&aof, "CACHE.APPLY"),
        applies,
        "CACHE.APPLY records"
    );
    assert_eq!(count_cmd(&aof, "DEL"), 1, "DEL records");
    for name in [
        "CACHE.SET",
        "CACHE.GET",
        "CACHE.GETX",
        "CACHE.DEL",
        "CACHE.INSPECT",
        "MULTI",
    ] {
        assert_eq!(count_cmd(&aof, name), 0, "{name} records in the AOF");
    }
}

#[test]
fn dump_restore_round_trip() {
    let s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "d:");
    let mut keys = all_keys(&f);
    keys.extend(f.others.iter().cloned());
    let before = snapshot(&mut c, &all_keys(&f));

    // Into another server, with the absolute expiry: everything equal but the version, fresh
    // where the entry lands (MIGRATE does this).
    let t = Server::start();
    let mut d = t.conn();
    for key in &keys {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut c).unwrap();
        let at = pexpiretime(&mut c, key);
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(at.max(0))
            .arg(payload)
            .arg("ABSTTL")
            .query(&mut d)
            .unwrap();
    }
    let after = snapshot(&mut d, &all_keys(&f));
    assert_all_landed("DUMP/RESTORE to another server", &before, &after);
    assert_eq!(live_entries(&mut d), f.keys.len() as i64);
    // The target took in the ids: its own ids are above the source's.
    let last_source = last_id(&mut c);
    check_leases_and_ids(&mut d, &f, last_source);

    // On the same server under a new name and with REPLACE over an existing entry.
    for key in &f.keys {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut c).unwrap();
        let at = pexpiretime(&mut c, key);
        let copy = format!("{key}:restored");
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(at.max(0))
            .arg(&payload)
            .arg("ABSTTL")
            .query(&mut c)
            .unwrap();
        let a = key_state(&mut c, key);
        let b = key_state(&mut c, &copy);
        assert_landed("RESTORE under a new name", key, &a, &b, 0);
        // REPLACE over an existing entry.
        let overwritten = set(&mut c, &copy, b"something else", &["EX", "10"]).unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(at.max(0))
            .arg(&payload)
            .arg("ABSTTL")
            .arg("REPLACE")
            .query(&mut c)
            .unwrap();
        let replaced = key_state(&mut c, &copy);
        assert_landed(
            "RESTORE REPLACE",
            key,
            &key_state(&mut c, key),
            &replaced,
            0,
        );
        assert!(
            replaced.version() > Some(overwritten as i64),
            "RESTORE REPLACE: version went back"
        );
        // As documented for RESTORE: TTL 0 means the key does not expire.
        let _: () = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .arg("REPLACE")
            .query(&mut c)
            .unwrap();
        assert_eq!(pexpiretime(&mut c, &copy), -1);
        assert_eq!(
            inspect(&mut c, key).map(|i| i.without_version()),
            inspect(&mut c, &copy).map(|i| i.without_version())
        );
    }
    assert_eq!(live_entries(&mut c), 2 * f.keys.len() as i64);
}

#[test]
fn migrate_moves_entries_with_their_leases() {
    let s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "g:");
    let before = snapshot(&mut c, &all_keys(&f));
    let last_source = last_id(&mut c);
    let t = Server::start();
    let mut d = t.conn();
    let mut cmd = redis::cmd("MIGRATE");
    cmd.arg("127.0.0.1")
        .arg(t.port)
        .arg("")
        .arg(0)
        // Under valgrind both servers are many times slower (`slow()`).
        .arg(10_000 * slow())
        .arg("KEYS");
    for k in f.keys.iter().chain(&f.others) {
        cmd.arg(k);
    }
    let _: () = cmd.query(&mut c).unwrap();
    assert_eq!(dbsize(&mut c), 0, "MIGRATE left keys behind");
    assert_eq!(live_entries(&mut c), 0);
    let after = snapshot(&mut d, &all_keys(&f));
    assert_all_landed("MIGRATE", &before, &after);
    check_leases_and_ids(&mut d, &f, last_source);
}

/// A truncated or corrupt entry in a payload with a valid checksum is refused with an error,
/// never a crash, and creates no key.
#[test]
fn restore_refuses_corrupt_payloads() {
    // Uncompressed, so that the entry header can be found and edited in the payload.
    let mut s = Server::start_with(&["--rdbcompression", "no"]);
    let mut c = s.conn();
    set(
        &mut c,
        "k",
        b"v",
        &["EX", "3600", "GRACE", "7", "DELTA", "9"],
    )
    .unwrap();
    let i = inspect(&mut c, "k").unwrap();
    let header = Record::valued(
        i.int("fresh-until-ms").unwrap(),
        7,
        9,
        i.int("version").unwrap() as u64,
    )
    .encode();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("k").query(&mut c).unwrap();
    let (obj, tail) = payload.split_at(payload.len() - 10);
    let rdb_version = [tail[0], tail[1]];
    let at = count(obj, &header);
    assert_eq!(at, 1, "the entry header appears once in the payload");
    let pos = obj.windows(header.len()).position(|w| w == header).unwrap();
    assert_eq!(obj[pos - 1] as usize, header.len(), "6-bit length prefix");
    // After the header: opcode STRING (5), length 1, "v", then opcode EOF (0).
    assert_eq!(&obj[pos + header.len()..], &[5, 1, b'v', 0]);

    // Sanity: the unchanged object reframed restores.
    let _: () = redis::cmd("RESTORE")
        .arg("ok")
        .arg(0)
        .arg(seal(obj, rdb_version))
        .query(&mut c)
        .unwrap();
    assert_eq!(cache_get(&mut c, "ok").as_deref(), Some(&b"v"[..]));

    let with_header = |h: &[u8], value: &[u8]| {
        let mut o = obj[..pos - 1].to_vec();
        o.push(h.len() as u8);
        o.extend_from_slice(h);
        o.extend_from_slice(value);
        o.push(0);
        o
    };
    let value = [5u8, 1, b'v'];
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for n in [0, 1, 2, 10, 33, header.len() - 1] {
        cases.push(("truncated header", with_header(&header[..n], &value)));
    }
    let mut h = header.clone();
    h[0] = 9;
    cases.push(("unknown format", with_header(&h, &value)));
    let mut h = header.clone();
    h[1] = 0x80 | 1;
    cases.push(("unknown flag", with_header(&h, &value)));
    let mut h = header.clone();
    h[1] = 4;
    cases.push(("keep-the-value flag in a payload", with_header(&h, &[])));
    let mut h = header.clone();
    h[10..18].copy_from_slice(&(-1i64).to_le_bytes());
    cases.push(("negative grace", with_header(&h, &value)));
    let mut h = header.clone();
    let n = h.len();
    h[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("huge tag count", with_header(&h, &value)));
    let mut h = header.clone();
    h.push(0);
    cases.push(("trailing byte", with_header(&h, &value)));
    cases.push(("value missing", with_header(&header, &[])));
    cases.push((
        "value length past the end",
        with_header(&header, &[5, 50, b'v']),
    ));
    let mut h = header.clone();
    h[1] = 0;
    cases.push(("value not announced", with_header(&h, &value)));

    for (what, o) in cases {
        let r: redis::RedisResult<redis::Value> = redis::cmd("RESTORE")
            .arg("bad")
            .arg(0)
            .arg(seal(&o, rdb_version))
            .query(&mut c);
        assert!(r.is_err(), "{what}: RESTORE accepted it: {r:?}");
        assert!(s.is_alive(), "{what}: the server died:\n{}", s.log());
        assert!(!exists(&mut c, "bad"), "{what}: a key was created");
    }
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(live_entries(&mut c), 2);
}

#[test]
fn rename_moves_the_entry() {
    let s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "n:");
    for key in &f.keys {
        let before = key_state(&mut c, key);
        let to = format!("{key}:renamed");
        let _: () = redis::cmd("RENAME")
            .arg(key)
            .arg(&to)
            .query(&mut c)
            .unwrap();
        assert!(!exists(&mut c, key));
        let after = key_state(&mut c, &to);
        assert_landed("RENAME", key, &before, &after, 0);
    }
    assert_eq!(live_entries(&mut c), f.keys.len() as i64);
    // RENAME over an existing entry replaces it (and frees it).
    set(&mut c, "x", b"x", &["EX", "60"]).unwrap();
    set(&mut c, "y", b"y", &["EX", "60"]).unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("x")
        .arg("y")
        .query(&mut c)
        .unwrap();
    assert_eq!(cache_get(&mut c, "y").as_deref(), Some(&b"x"[..]));
    assert_eq!(live_entries(&mut c), f.keys.len() as i64 + 1);
}

#[test]
fn copy_has_the_value_but_not_the_lease() {
    let s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "c:");
    for key in &f.keys {
        let src = key_state(&mut c, key);
        let to = format!("{key}:copy");
        let n: i64 = redis::cmd("COPY").arg(key).arg(&to).query(&mut c).unwrap();
        assert_eq!(n, 1);
        let copy = key_state(&mut c, &to);
        assert!(copy.version() > src.version(), "{key:?}: no fresh version");
        assert_eq!(
            copy.inspect.as_ref().map(|i| i.without_version()),
            src.inspect
                .as_ref()
                .map(|i| i.without_lease().without_version()),
            "{key:?}: the copy is the entry without its lease"
        );
        assert_eq!(copy.value, src.value, "{key:?}: value of the copy");
        assert_eq!(
            copy.pexpiretime, src.pexpiretime,
            "{key:?}: expiry of the copy"
        );
        // The source is untouched.
        assert_eq!(
            key_state(&mut c, key),
            src,
            "{key:?}: COPY changed the source"
        );
    }
    assert_eq!(live_entries(&mut c), 2 * f.keys.len() as i64);
    // The lease stays with the source: a fill of the copy with it is refused, the source's
    // fill is accepted.
    for (key, token) in &f.live {
        let to = format!("{key}:copy");
        assert_eq!(fill(&mut c, &to, b"x", *token), None, "{key:?} copy filled");
        assert!(
            fill(&mut c, key, b"x", *token).is_some(),
            "{key:?} fill refused"
        );
    }
    // The copy of a pending entry holds no lease: the next reader is handed one.
    let (v, status, token) = getx(&mut c, "c:pending:copy", &[]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    assert!(token.is_some());
}

#[test]
fn memory_usage_grows_with_value_size() {
    let s = Server::start();
    let mut c = s.conn();
    let mut last = 0i64;
    for size in [10usize, 1_000, 100_000, 1_000_000] {
        let key = format!("m{size}");
        set(&mut c, &key, &vec![b'x'; size], &["EX", "60"]).unwrap();
        let usage: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query(&mut c)
            .unwrap();
        assert!(
            usage >= size as i64,
            "MEMORY USAGE {key} = {usage} < {size}"
        );
        assert!(
            usage > last,
            "MEMORY USAGE did not grow: {usage} after {last}"
        );
        last = usage;
    }
}

#[test]
fn px_entry_expires_and_is_freed() {
    let s = Server::start();
    let mut c = s.conn();
    // The key lives through the grace.
    set(&mut c, "graced", b"v", &["PX", "500", "GRACE", "1500"]).unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("graced").query(&mut c).unwrap();
    assert!(pttl > 500 && pttl <= 2000, "PTTL covers the grace: {pttl}");
    set(&mut c, "short", b"v", &["PX", "100", "GRACE", "0"]).unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("short").query(&mut c).unwrap();
    assert!(pttl <= 100 && pttl != -1, "PTTL {pttl}");
    let (_, status, _) = getx(&mut c, "pending", &["LEASE", "100"]);
    assert_eq!(status, "MISS");
    set(&mut c, "long", b"v", &["EX", "3600"]).unwrap();
    // Active expiry (no reads) frees them.
    let freed = wait_until(Duration::from_secs(10), || live_entries(&mut c) == 1);
    assert!(freed, "entries left: {}", live_entries(&mut c));
    for k in ["short", "pending", "graced"] {
        assert!(!exists(&mut c, k), "{k} still exists");
        assert_eq!(cache_get(&mut c, k), None);
    }
    assert!(exists(&mut c, "long"));
    assert_eq!(dbsize(&mut c), 1);
}

#[test]
fn eviction_under_maxmemory_keeps_the_server_up() {
    let mut s = Server::start_with(&["--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut c = s.conn();
    let value = vec![b'e'; 100_000];
    let mut refused = Vec::new();
    for i in 0..500 {
        let r: redis::RedisResult<Option<u64>> = redis::cmd("CACHE.SET")
            .arg(format!("e{i}"))
            .arg(&value)
            .arg("EX")
            .arg(3600)
            .query(&mut c);
        if let Err(e) = r {
            refused.push(format!("e{i}: {e}"));
        }
    }
    assert!(s.is_alive(), "server died:\n{}", s.log());
    let evicted = info_int(&mut c, "stats", "evicted_keys");
    assert!(evicted > 0, "nothing evicted");
    assert!(
        refused.is_empty(),
        "{} writes refused although every key is evictable: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    let used = info_int(&mut c, "memory", "used_memory");
    assert!(used < 25 << 20, "used_memory {used} well above maxmemory");
    // The entry count follows evictions (free ran for each). Over the limit Redis evicts
    // before every command, reads too: lift it so that both counts are of one keyspace.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let keys = dbsize(&mut c);
    assert!(keys > 0 && keys < 500, "{keys} keys");
    assert_eq!(live_entries(&mut c), keys);
    assert!(
        cache_get(&mut c, "e499").is_some(),
        "the last write is there"
    );
}

#[test]
fn flushall_drops_every_entry() {
    let s = Server::start();
    let mut c = s.conn();
    let f = fill_fixture(&mut c, "f:");
    for i in 0..100 {
        set(&mut c, format!("x{i}"), b"v", &["EX", "3600"]).unwrap();
    }
    assert_eq!(live_entries(&mut c), f.keys.len() as i64 + 100);
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(dbsize(&mut c), 0);
    assert!(wait_until(Duration::from_secs(10), || live_entries(&mut c) == 0));
    // And asynchronously.
    for i in 0..100 {
        set(&mut c, format!("x{i}"), b"v", &["EX", "3600"]).unwrap();
    }
    let _: () = redis::cmd("FLUSHALL").arg("ASYNC").query(&mut c).unwrap();
    assert_eq!(dbsize(&mut c), 0);
    assert!(
        wait_until(Duration::from_secs(10), || live_entries(&mut c) == 0),
        "entries after FLUSHALL ASYNC: {}",
        live_entries(&mut c)
    );
    // Leases went with them.
    for (key, token) in &f.live {
        assert_eq!(fill(&mut c, key, b"x", *token), None);
    }
}

/// TTL commands work on an entry's key as on any key, and what they set survives a restart
/// like the entry does: PERSIST (no expiry any more) and PEXPIREAT (a later expiry).
fn user_ttl_changes_survive(args: &[&str], rewrite: bool, save: bool) {
    let mut s = Server::start_with(args);
    let mut c = s.conn();
    wait_rewrite_idle(&mut c, Duration::from_secs(30));
    set(&mut c, "persisted", b"p", &["EX", "3600"]).unwrap();
    let n: i64 = redis::cmd("PERSIST")
        .arg("persisted")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    set(&mut c, "extended", b"e", &["EX", "3600"]).unwrap();
    let later = server_ms(&mut c) + 10 * HOUR_MS;
    let n: i64 = redis::cmd("PEXPIREAT")
        .arg("extended")
        .arg(later)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let (_, status, _) = getx(&mut c, "pending", &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    let n: i64 = redis::cmd("PERSIST").arg("pending").query(&mut c).unwrap();
    assert_eq!(n, 1);
    if rewrite {
        bgrewriteaof(&mut c);
    }
    let keys: Vec<String> = ["persisted", "extended", "pending"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let before = snapshot(&mut c, &keys);
    assert_eq!(before.keys["persisted"].pexpiretime, -1);
    assert_eq!(before.keys["pending"].pexpiretime, -1);
    assert_eq!(before.keys["extended"].pexpiretime, later);
    drop(c);
    s.restart(save);
    let mut c = s.conn();
    let after = snapshot(&mut c, &keys);
    assert_same("restart after PERSIST/PEXPIREAT", &before, &after);
}

#[test]
fn user_ttl_changes_survive_rdb_restart() {
    user_ttl_changes_survive(&[], false, true);
}

#[test]
fn user_ttl_changes_survive_aof_with_rdb_preamble() {
    user_ttl_changes_survive(
        &["--appendonly", "yes", "--aof-use-rdb-preamble", "yes"],
        true,
        false,
    );
}

#[test]
fn user_ttl_changes_survive_aof_incremental() {
    user_ttl_changes_survive(AOF_NO_PREAMBLE, false, false);
}

#[test]
fn user_ttl_changes_survive_aof_rewrite() {
    user_ttl_changes_survive(AOF_NO_PREAMBLE, true, false);
}

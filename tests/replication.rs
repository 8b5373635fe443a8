//! A replica holds the same entries as its primary (values, versions, leases, times), reads
//! replicate nothing, a promoted replica fences leases revoked on the old primary and honours
//! the others, and full syncs (disk and diskless, swapdb) carry everything.

mod support;

use std::time::Duration;

use redis::Connection;

use support::commands::*;
use support::fixtures::*;
use support::records::{restore, Record, HOUR_MS};
use support::server::{
    repl_offset, start_replica, wait_caught_up, wait_link_up, wait_online, wait_replicas,
    wait_until, Server,
};

/// Fast full syncs: no diskless delay.
const PRIMARY: &[&str] = &["--repl-diskless-sync-delay", "0"];

/// Writes of every kind on the primary: the fixture, then CACHE.DEL, DEL and UNLINK of
/// entries with and without leases, overwrites, fills.
fn write_mix(c: &mut Connection, p: &str) -> (Fixture, Vec<String>) {
    let mut f = fill_fixture(c, p);
    let k = |n: &str| format!("{p}{n}");
    let mut gone = Vec::new();
    // CACHE.DEL of an entry with a lease and of one without.
    let n: i64 = redis::cmd("CACHE.DEL")
        .arg(k("pending"))
        .arg(k("empty"))
        .query(c)
        .unwrap();
    assert_eq!(n, 2);
    for key in ["pending", "empty"] {
        f.forget_key(&k(key));
        gone.push(k(key));
    }
    // DEL and UNLINK.
    let n: i64 = redis::cmd("DEL").arg(k("big")).query(c).unwrap();
    assert_eq!(n, 1);
    f.forget_key(&k("big"));
    gone.push(k("big"));
    let n: i64 = redis::cmd("UNLINK").arg(k("stale")).query(c).unwrap();
    assert_eq!(n, 1);
    f.forget_key(&k("stale"));
    gone.push(k("stale"));
    // An overwrite, a fill over a new grant, a grant then a refused fill.
    set(
        c,
        k("plain"),
        b"overwritten",
        &["PX", "7200000", "GRACE", "5"],
    )
    .unwrap();
    let (_, status, t) = getx(c, k("mix-fill"), &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    fill(c, &k("mix-fill"), b"filled", t.unwrap()).unwrap();
    f.keys.push(k("mix-fill"));
    let (_, status, t) = getx(c, k("mix-leased"), &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    assert_eq!(fill(c, &k("mix-leased"), b"x", t.unwrap() + 1), None);
    f.live.push((k("mix-leased"), t.unwrap()));
    f.keys.push(k("mix-leased"));
    (f, gone)
}

fn assert_replica_same(p: &mut Connection, r: &mut Connection, f: &Fixture, gone: &[String]) {
    let a = snapshot(p, &f.keys);
    let b = snapshot(r, &f.keys);
    // Replicated with absolute times: even the key expiries are exactly equal.
    for (key, sa) in &a.keys {
        assert_same_key("replica", key, sa, &b.keys[key], 0);
    }
    assert_same("replica", &a, &b);
    for key in gone {
        assert!(
            !exists(r, key),
            "{key:?} deleted on the primary, exists on the replica"
        );
    }
    assert_eq!(live_entries(p), live_entries(r), "entries");
    assert_eq!(dbsize(p), dbsize(r), "dbsize");
}

#[test]
fn replica_holds_the_same_entries() {
    let p = Server::start_with(PRIMARY);
    let r = start_replica(&p, &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    let (f, gone) = write_mix(&mut pc, "m:");
    wait_replicas(&mut pc, 1);
    assert_eq!(digest(&mut pc), digest(&mut rc), "DEBUG DIGEST");
    assert_replica_same(&mut pc, &mut rc, &f, &gone);
    for key in &f.keys {
        let want = cache_get(&mut pc, key);
        assert_eq!(
            cache_get(&mut rc, key),
            want,
            "CACHE.GET {key:?} on the replica"
        );
    }
    assert!(
        last_id(&mut rc) >= last_id(&mut pc),
        "the replica observed every id: {} < {}",
        last_id(&mut rc),
        last_id(&mut pc)
    );

    // Fills of live leases and new grants on the primary reach the replica too.
    for (key, token) in &f.live {
        assert!(fill(&mut pc, key, b"filled on the primary", *token).is_some());
    }
    let (_, status, _) = getx(&mut pc, "m:late-grant", &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    let mut keys = f.keys.clone();
    keys.push("m:late-grant".into());
    wait_replicas(&mut pc, 1);
    assert_same(
        "replica after fills",
        &snapshot(&mut pc, &keys),
        &snapshot(&mut rc, &keys),
    );
}

#[test]
fn expiry_on_the_primary_reaches_the_replica() {
    let p = Server::start_with(PRIMARY);
    let r = start_replica(&p, &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    set(&mut pc, "short", b"v", &["PX", "1000", "GRACE", "0"]).unwrap();
    let (_, status, _) = getx(&mut pc, "pending", &["LEASE", "1000"]);
    assert_eq!(status, "MISS");
    set(&mut pc, "long", b"v", &["EX", "3600"]).unwrap();
    wait_replicas(&mut pc, 1);
    assert_eq!(live_entries(&mut rc), 3);
    // The primary expires them by itself and sends DELs; the replica frees them.
    let gone = wait_until(Duration::from_secs(10), || {
        live_entries(&mut pc) == 1 && live_entries(&mut rc) == 1
    });
    assert!(
        gone,
        "entries: primary {} replica {}",
        live_entries(&mut pc),
        live_entries(&mut rc)
    );
    assert_eq!(dbsize(&mut rc), 1);
    assert_eq!(digest(&mut pc), digest(&mut rc));
}

#[test]
fn reads_do_not_move_the_replication_offset() {
    let mut args = PRIMARY.to_vec();
    args.extend(["--repl-ping-replica-period", "60"]);
    let p = Server::start_with(&args);
    let r = start_replica(&p, &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    for i in 0..10 {
        set(
            &mut pc,
            format!("k{i}"),
            b"v",
            &["EX", "3600", "DELTA", "1"],
        )
        .unwrap();
    }
    let (_, status, _) = getx(&mut pc, "pending", &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    set(&mut pc, "stale", b"s", &["PX", "1", "GRACE", "3600000"]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (_, status, token) = getx(&mut pc, "stale", &["LEASE", "3600000"]);
    assert_eq!((status.as_str(), token.is_some()), ("STALE", true));
    wait_caught_up(&mut pc, &mut rc);

    let before = repl_offset(&mut pc);
    for i in 0..100 {
        let k = format!("k{}", i % 10);
        let (v, status, token) = getx(&mut pc, &k, &[]);
        assert_eq!(
            (v.as_deref(), status.as_str(), token),
            (Some(&b"v"[..]), "HIT", None)
        );
        assert_eq!(cache_get(&mut pc, &k).as_deref(), Some(&b"v"[..]));
    }
    for _ in 0..10 {
        assert_eq!(getx(&mut pc, "pending", &[]).1, "LOCKED");
        let (v, status, token) = getx(&mut pc, "stale", &[]);
        assert_eq!((v.is_some(), status.as_str(), token), (true, "STALE", None));
        assert_eq!(cache_get(&mut pc, "stale").as_deref(), Some(&b"s"[..]));
        assert_eq!(cache_get(&mut pc, "missing"), None);
        assert!(inspect(&mut pc, "k0").is_some());
        // A refused fill changes nothing either.
        assert_eq!(fill(&mut pc, "pending", b"x", 12345), None);
    }
    assert_eq!(
        repl_offset(&mut pc),
        before,
        "reads moved master_repl_offset"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        repl_offset(&mut pc),
        before,
        "reads moved master_repl_offset"
    );

    // A grant is a write.
    let (_, status, _) = getx(&mut pc, "new", &[]);
    assert_eq!(status, "MISS");
    let moved = wait_until(Duration::from_secs(5), || repl_offset(&mut pc) > before);
    assert!(moved, "a lease grant did not reach the replication stream");
    wait_caught_up(&mut pc, &mut rc);
    assert_eq!(inspect(&mut pc, "new"), inspect(&mut rc, "new"));
}

#[test]
fn failover_fences_revoked_leases_and_honours_live_ones() {
    let mut p = Server::start_with(PRIMARY);
    let r = start_replica(&p, &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    let lease = &["LEASE", "600000"];

    // Leases granted on the primary.
    let (_, status, revoked) = getx(&mut pc, "k", lease);
    assert_eq!(status, "MISS");
    let revoked = revoked.unwrap();
    let (_, status, live) = getx(&mut pc, "live", lease);
    assert_eq!(status, "MISS");
    let live = live.unwrap();
    set(
        &mut pc,
        "valued",
        b"v",
        &["EX", "3600", "DELTA", "1000000000"],
    )
    .unwrap();
    let live_refresh = refresh_grant(&mut pc, "valued", 600_000);
    let (_, _, deleted) = getx(&mut pc, "deleted", lease);
    let deleted = deleted.unwrap();
    let (_, _, cdeleted) = getx(&mut pc, "cdeleted", lease);
    let cdeleted = cdeleted.unwrap();
    wait_replicas(&mut pc, 1);
    // The replica knows the lease.
    assert_eq!(inspect(&mut rc, "k"), inspect(&mut pc, "k"));
    assert_eq!(
        inspect(&mut rc, "k").unwrap().int("lease-token"),
        Some(revoked as i64)
    );

    // Revocations on the primary: an authoritative write and deletes.
    set(&mut pc, "k", b"authoritative", &["PX", "10000"]).unwrap();
    let _: i64 = redis::cmd("DEL").arg("deleted").query(&mut pc).unwrap();
    let _: i64 = redis::cmd("CACHE.DEL")
        .arg("cdeleted")
        .query(&mut pc)
        .unwrap();
    // A clock a day ahead somewhere upstream: its id reaches the replica with the write.
    let now = server_ms(&mut pc);
    let future = future_id(&mut pc);
    restore(
        &mut pc,
        "future",
        &Record::valued(now + HOUR_MS, 0, 1, future),
        Some(b"f"),
    )
    .unwrap();
    wait_replicas(&mut pc, 1);
    assert_eq!(digest(&mut pc), digest(&mut rc));
    let issued_by_primary = last_id(&mut pc);
    assert!(issued_by_primary >= future);

    // The primary dies; the replica is promoted.
    drop(pc);
    p.kill();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut rc)
        .unwrap();
    assert_eq!(
        info_field(&mut rc, "replication", "role").as_deref(),
        Some("master")
    );

    // Revoked on the old primary: refused.
    for (key, token) in [("k", revoked), ("deleted", deleted), ("cdeleted", cdeleted)] {
        let t = token.to_string();
        assert_eq!(
            set(&mut rc, key, b"v", &["PX", "10000", "TOKEN", &t]),
            None,
            "{key}: fill with a lease revoked on the old primary was accepted"
        );
    }
    assert_eq!(
        cache_get(&mut rc, "k").as_deref(),
        Some(&b"authoritative"[..])
    );
    // Still outstanding on the old primary: honoured, with versions above every old id.
    assert_eq!(
        getx(&mut rc, "live", &[]).1,
        "LOCKED",
        "the lease is in force"
    );
    for (key, token) in [("live", live), ("valued", live_refresh)] {
        let t = token.to_string();
        let v = set(
            &mut rc,
            key,
            b"filled after failover",
            &["PX", "10000", "TOKEN", &t],
        )
        .unwrap_or_else(|| panic!("{key}: fill with a live lease refused after failover"));
        assert!(
            v > issued_by_primary,
            "{key}: version {v} not above the old primary's {issued_by_primary}"
        );
        assert_eq!(
            fill(&mut rc, key, b"again", token),
            None,
            "{key}: token reused"
        );
    }
    let v = set(&mut rc, "k", b"new", &["PX", "10000"]).unwrap();
    assert!(v > issued_by_primary, "version {v} <= {issued_by_primary}");
    for key in ["fresh-key", "deleted"] {
        let (_, status, token) = getx(&mut rc, key, &[]);
        assert_eq!(status, "MISS");
        let token = token.unwrap();
        assert!(
            token > issued_by_primary,
            "{key}: token {token} not above the old primary's {issued_by_primary}"
        );
        assert_ne!(token, deleted);
    }
}

/// Data first, replica second: the full sync carries every entry, and the replica's own
/// earlier entries are replaced (and freed).
fn full_sync(primary_args: &[&str], replica_args: &[&str]) {
    let p = Server::start_with(primary_args);
    let mut pc = p.conn();
    let (f, gone) = write_mix(&mut pc, "s:");
    for i in 0..200 {
        set(
            &mut pc,
            format!("bulk{i}"),
            &vec![b'b'; i * 10],
            &["EX", "3600"],
        )
        .unwrap();
    }
    // The replica-to-be holds entries of its own.
    let mut r = Server::start_with(replica_args);
    let mut rc = r.conn();
    // (Its own ids come from its clock only, so that the check of observed ids below means
    // something.)
    let mut mine = Vec::new();
    for i in 0..20 {
        let key = format!("mine:{i}");
        set(&mut rc, &key, b"mine", &["EX", "3600"]).unwrap();
        mine.push(key);
    }
    let (_, status, _) = getx(&mut rc, "mine:pending", &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    mine.push("mine:pending".into());
    assert_eq!(live_entries(&mut rc), mine.len() as i64);
    assert!(last_id(&mut rc) < f.future_id);
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(p.port)
        .query(&mut rc)
        .unwrap();
    wait_link_up(&r);
    wait_online(&p);
    wait_replicas(&mut pc, 1);
    assert_eq!(
        digest(&mut pc),
        digest(&mut rc),
        "DEBUG DIGEST after full sync"
    );
    assert_replica_same(&mut pc, &mut rc, &f, &gone);
    for key in &mine {
        assert!(
            !exists(&mut rc, key),
            "{key:?}: the replica's own entry survived"
        );
    }
    let freed = wait_until(Duration::from_secs(10), || {
        live_entries(&mut rc) == live_entries(&mut pc)
    });
    assert!(
        freed,
        "entries: replica {} primary {}",
        live_entries(&mut rc),
        live_entries(&mut pc)
    );
    assert!(
        last_id(&mut rc) >= f.future_id,
        "the synced ids were observed"
    );
    // And the stream after the sync.
    set(&mut pc, "after-sync", b"a", &["EX", "60"]).unwrap();
    wait_replicas(&mut pc, 1);
    assert_eq!(
        digest(&mut pc),
        digest(&mut rc),
        "DEBUG DIGEST after the sync"
    );
    assert!(r.is_alive());
}

#[test]
fn full_sync_over_disk() {
    full_sync(
        &["--repl-diskless-sync", "no"],
        &["--repl-diskless-load", "disabled"],
    );
}

#[test]
fn full_sync_diskless_swapdb() {
    let pair = [
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
        "--repl-diskless-load",
        "swapdb",
    ];
    full_sync(&pair, &pair);
}

/// `CACHE.APPLY` is what the primary sends: the replica applies it from the replication
/// stream, and refuses it from its own clients (even on a writable replica), changing nothing.
#[test]
fn a_replica_applies_records_from_its_primary_only() {
    let p = Server::start();
    let r = start_replica(&p, &["--replica-read-only", "no"]);
    let (mut pc, mut rc) = (p.conn(), r.conn());
    set(&mut pc, "k", b"from the primary", &["EX", "3600"]).unwrap();
    wait_caught_up(&mut pc, &mut rc);
    assert_eq!(
        cache_get(&mut rc, "k").as_deref(),
        Some(&b"from the primary"[..])
    );
    let before = (digest(&mut rc), last_id(&mut rc));
    let now = server_ms(&mut rc);
    let forged = Record::valued(now + HOUR_MS, 0, 1, 1 << 52);
    for key in ["k", "new"] {
        let r: redis::RedisResult<redis::Value> = redis::cmd("CACHE.APPLY")
            .arg(key)
            .arg(forged.encode())
            .arg("forged")
            .query(&mut rc);
        let e = r.expect_err("CACHE.APPLY from a replica's client");
        assert!(
            e.to_string().contains("CACHE.APPLY is internal"),
            "{key}: {e}"
        );
    }
    assert_eq!((digest(&mut rc), last_id(&mut rc)), before);
    assert_eq!(digest(&mut pc), digest(&mut rc));
}

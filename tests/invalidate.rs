//! `CACHE.TAGINVALIDATE` against a real server: from its reply on every affected entry reads
//! as absent and no fill from before it can bring a value back; removal runs in slices and
//! survives DEBUG RELOAD, restarts (RDB, AOF with and without preamble) and replicas.

mod support;

use std::time::{Duration, Instant};

use redis::{Connection, Value};

use support::commands::*;
use support::server::{slow, start_replica, wait_caught_up, wait_until, Server};

const HOUR: &[&str] = &["EX", "3600"];

fn invalidate(c: &mut Connection, tags: &[&str]) -> i64 {
    redis::cmd("CACHE.TAGINVALIDATE")
        .arg(tags)
        .query(c)
        .unwrap()
}

fn pending(c: &mut Connection) -> i64 {
    info_cache(c)["tag_pending_removal"]
}

/// Fills `n` entries tagged `tag` (and `all`), pipelined.
fn fill_tag(c: &mut Connection, prefix: &str, tag: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("CACHE.TAGSET")
            .arg(format!("{prefix}{i}"))
            .arg("value")
            .arg("EX")
            .arg(3600)
            .arg("TAGS")
            .arg(tag)
            .arg("all")
            .ignore();
        if i % 5000 == 4999 {
            let _: () = pipe.query(c).unwrap();
            pipe = redis::pipe();
        }
    }
    let _: () = pipe.query(c).unwrap();
}

#[test]
fn invalidated_entries_read_as_absent_at_once_and_others_stay() {
    let s = Server::start();
    let mut c = s.conn();
    tagset(&mut c, "a", b"A", HOUR, &["t1", "t2"]).unwrap();
    tagset(&mut c, "b", b"B", HOUR, &["t1"]).unwrap();
    tagset(&mut c, "c", b"C", HOUR, &["t3"]).unwrap();
    set(&mut c, "plain", b"P", HOUR).unwrap();
    // a and b carry t1; a again through t2: counted once.
    assert_eq!(invalidate(&mut c, &["t1", "t2"]), 2);
    for key in ["a", "b"] {
        assert_eq!(cache_get(&mut c, key), None, "GET {key}");
        assert_eq!(inspect(&mut c, key), None, "INSPECT {key}");
        assert!(tags_of(&mut c, key).is_empty(), "TAGS {key}");
        let (v, status, token) = getx(&mut c, key, &[]);
        assert_eq!((v, status.as_str()), (None, "MISS"), "GETX {key}");
        assert!(token.is_some());
    }
    assert_eq!(tagcount(&mut c, "t1"), 0);
    // Under their other tags too, at once: no longer counted, no longer listed.
    tagset(&mut c, "d", b"D", HOUR, &["t3", "t4"]).unwrap();
    tagset(&mut c, "e", b"E", HOUR, &["t4"]).unwrap();
    assert_eq!(invalidate(&mut c, &["t3"]), 2);
    assert_eq!(tagcount(&mut c, "t4"), 1);
    assert_eq!(tagscan_all(&mut c, "t4"), vec!["e".to_string()]);
    // An entry invalidated already counts no more.
    assert_eq!(invalidate(&mut c, &["t3", "t4"]), 1);
    tagset(&mut c, "c", b"C", HOUR, &["t3"]).unwrap();
    assert_eq!(cache_get(&mut c, "c").as_deref(), Some(&b"C"[..]));
    assert_eq!(cache_get(&mut c, "plain").as_deref(), Some(&b"P"[..]));
    assert_eq!(invalidate(&mut c, &["nothing"]), 0);
    // Written again after the invalidation: visible, tag and all.
    tagset(&mut c, "b", b"B2", HOUR, &["t1"]).unwrap();
    assert_eq!(cache_get(&mut c, "b").as_deref(), Some(&b"B2"[..]));
    assert_eq!(tagcount(&mut c, "t1"), 1);
    let i = info_cache(&mut c);
    assert_eq!(i["tag_invalidations"], 4);
    assert_eq!(i["tag_entries_invalidated"], 5);
}

#[test]
fn fills_from_before_the_invalidation_are_refused() {
    let s = Server::start();
    let mut c = s.conn();
    // A stale tagged value with a lease out: the refresh read the old data.
    tagset(
        &mut c,
        "k",
        b"old",
        &["PX", "1", "GRACE", "600000"],
        &["p7"],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let (_, status, token) = getx(&mut c, "k", &[]);
    assert_eq!(status, "STALE");
    let token = token.unwrap().to_string();
    // A first fill still pending (no value, no tags yet): its lease predates the invalidation.
    let (_, status, pending_token) = getx(&mut c, "fresh", &[]);
    assert_eq!(status, "MISS");
    let pending_token = pending_token.unwrap().to_string();
    assert_eq!(invalidate(&mut c, &["p7"]), 1);
    let refused_before = info_cache(&mut c)["fills_refused"];
    assert_eq!(
        tagset(
            &mut c,
            "k",
            b"stale",
            &["EX", "60", "TOKEN", &token],
            &["p7"]
        ),
        None,
        "a fill of the invalidated entry"
    );
    assert_eq!(
        set(&mut c, "k", b"stale", &["EX", "60", "TOKEN", &token]),
        None,
        "the same with CACHE.SET"
    );
    assert_eq!(
        tagset(
            &mut c,
            "fresh",
            b"stale",
            &["EX", "60", "TOKEN", &pending_token],
            &["other", "p7"]
        ),
        None,
        "a first fill bringing the invalidated tag"
    );
    assert_eq!(info_cache(&mut c)["fills_refused"], refused_before + 3);
    assert_eq!(cache_get(&mut c, "k"), None);
    assert_eq!(cache_get(&mut c, "fresh"), None);
    // The pending entry's lease is still good for a fill without that tag.
    let ok = tagset(
        &mut c,
        "fresh",
        b"new",
        &["EX", "60", "TOKEN", &pending_token],
        &["other"],
    );
    assert!(ok.is_some());
    // A lease granted after the invalidation fills with the tag.
    let (_, status, t2) = getx(&mut c, "k2", &[]);
    assert_eq!(status, "MISS");
    let t2 = t2.unwrap().to_string();
    assert!(tagset(&mut c, "k2", b"new", &["EX", "60", "TOKEN", &t2], &["p7"]).is_some());
    assert_eq!(cache_get(&mut c, "k2").as_deref(), Some(&b"new"[..]));
}

/// 200k entries in one tag: the call answers at once, other clients are served while the
/// removal runs in slices, and the keyspace, the index and the queue end empty.
#[test]
fn a_big_tag_is_removed_in_slices_without_stalling() {
    let s = Server::start();
    let mut c = s.conn();
    fill_tag(&mut c, "k", "big", 200_000);
    set(&mut c, "other", b"o", HOUR).unwrap();
    let mut probe = s.conn();
    let started = Instant::now();
    assert_eq!(invalidate(&mut c, &["big"]), 200_000);
    let call = started.elapsed();
    assert_eq!(cache_get(&mut c, "k123"), None, "absent at once");
    let mut worst = Duration::ZERO;
    let mut saw_pending = false;
    let done = wait_until(Duration::from_secs(60), || {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query(&mut probe).unwrap();
        worst = worst.max(t.elapsed());
        let p = pending(&mut probe);
        saw_pending |= p > 0;
        p == 0 && dbsize(&mut probe) == 1
    });
    assert!(done, "removal did not finish: {} pending", pending(&mut c));
    assert!(saw_pending, "the removal was not spread over slices");
    eprintln!("TAGINVALIDATE of 200k: call {call:?}, worst PING while removing {worst:?}");
    assert!(worst < Duration::from_secs(1), "a PING waited {worst:?}");
    assert_eq!(tag_index(&mut c), (0, 0, 0));
    assert_eq!(cache_get(&mut c, "other").as_deref(), Some(&b"o"[..]));
    assert_eq!(info_cache(&mut c)["tag_entries_removed"], 200_000);
}

/// No invalidated value comes back after DEBUG RELOAD or a restart, whether the removal had
/// finished or not; what is left is removed after the load.
#[test]
fn invalidations_survive_reload_and_restarts() {
    for (what, args) in [
        ("RDB", &["--appendonly", "no"][..]),
        ("AOF with RDB preamble", &["--appendonly", "yes"]),
        (
            "AOF without preamble",
            &["--appendonly", "yes", "--aof-use-rdb-preamble", "no"],
        ),
    ] {
        let mut s = Server::start_with(args);
        let mut c = s.conn();
        fill_tag(&mut c, "k", "gone", 20_000);
        fill_tag(&mut c, "keep", "kept", 100);
        // The invalidation and a save in one read: the save sees all of it pending.
        let save = if args[1] == "no" {
            "SAVE"
        } else {
            "BGREWRITEAOF"
        };
        let _: Value = redis::pipe()
            .cmd("CACHE.TAGINVALIDATE")
            .arg("gone")
            .cmd(save)
            .query(&mut c)
            .unwrap();
        let _: Value = redis::cmd("DEBUG")
            .arg("RELOAD")
            .query(&mut c)
            .unwrap_or(Value::Nil);
        assert_eq!(cache_get(&mut c, "k7"), None, "{what}: after DEBUG RELOAD");
        wait_rewrite_idle(&mut c, Duration::from_secs(30));
        drop(c);
        s.kill();
        s.spawn();
        let mut c = s.conn();
        assert_eq!(cache_get(&mut c, "k7"), None, "{what}: after a restart");
        assert_eq!(tagcount(&mut c, "gone"), 0, "{what}");
        assert_eq!(tagcount(&mut c, "kept"), 100, "{what}");
        let done = wait_until(Duration::from_secs(30), || dbsize(&mut c) == 100);
        assert!(done, "{what}: {} keys left", dbsize(&mut c));
    }
}

/// The replica gets the invalidation with the write: after WAIT nothing invalidated reads on
/// it, its digest equals the primary's once removal is done, and a fill refused on the
/// primary is refused on a promoted replica too.
#[test]
fn replicas_follow_and_a_promoted_replica_finishes() {
    let p = Server::start();
    let r = start_replica(&p, &[]);
    let (mut pc, mut rc) = (p.conn(), r.conn());
    fill_tag(&mut pc, "k", "t", 5_000);
    wait_caught_up(&mut pc, &mut rc);
    assert_eq!(invalidate(&mut pc, &["t"]), 5_000);
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut pc).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(cache_get(&mut rc, "k42"), None, "on the replica after WAIT");
    assert_eq!(tagcount(&mut rc, "t"), 0);
    let done = wait_until(Duration::from_secs(30), || pending(&mut pc) == 0);
    assert!(done);
    wait_caught_up(&mut pc, &mut rc);
    assert_eq!(digest(&mut pc), digest(&mut rc));
    assert_eq!(dbsize(&mut rc), 0);
    // CACHE.TAGAPPLY from a client is refused.
    let e: redis::RedisResult<Value> = redis::cmd("CACHE.TAGAPPLY")
        .arg(1)
        .arg(1)
        .arg("t")
        .query(&mut pc);
    assert!(e.unwrap_err().to_string().contains("is internal"));
}

/// A promoted replica whose primary died in the middle of a removal finishes it.
#[test]
fn a_replica_promoted_mid_removal_finishes_it() {
    let mut p = Server::start();
    let r = start_replica(&p, &[]);
    let (mut pc, mut rc) = (p.conn(), r.conn());
    fill_tag(&mut pc, "k", "t", 100_000);
    wait_caught_up(&mut pc, &mut rc);
    // The invalidation and a pause of writes in one read: the primary's removal timer finds
    // writes paused (it takes no writes of its own then), so only the invalidation reaches the
    // replica before the primary dies.
    let _: Value = redis::pipe()
        .cmd("CACHE.TAGINVALIDATE")
        .arg("t")
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut pc)
        .unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut pc).unwrap();
    assert_eq!(cache_get(&mut rc, "k1"), None, "invalidated on the replica");
    assert_eq!(dbsize(&mut rc), 100_000, "nothing removed yet");
    drop(pc);
    p.kill();
    assert_eq!(cache_get(&mut rc, "k1"), None);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut rc)
        .unwrap();
    let done = wait_until(Duration::from_secs(60), || dbsize(&mut rc) == 0);
    assert!(
        done,
        "{} keys left on the promoted replica",
        dbsize(&mut rc)
    );
    assert_eq!(pending(&mut rc), 0);
}

/// Near caches: a client tracking the keys (`CLIENT TRACKING ... BCAST`) gets an invalidation
/// message for every invalidated key once its slice removes it.
#[test]
fn tracking_clients_get_a_message_for_every_invalidated_key() {
    let s = Server::start();
    let mut c = s.conn();
    fill_tag(&mut c, "k", "t", 3_000);
    tagset(&mut c, "untouched", b"u", HOUR, &["other"]).unwrap();
    let mut sub = s.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut sub).unwrap();
    let mut ps = sub.as_pubsub();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ps.subscribe("__redis__:invalidate").unwrap();
    let mut tracked = s.conn();
    let _: () = redis::cmd("CLIENT")
        .arg(&["TRACKING", "ON", "BCAST", "REDIRECT", &id.to_string()])
        .query(&mut tracked)
        .unwrap();
    assert_eq!(invalidate(&mut tracked, &["t"]), 3_000);
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3_000 && Instant::now() < deadline {
        let msg = ps.get_message().expect("an invalidation message");
        let keys: Vec<String> = msg.get_payload().unwrap_or_default();
        seen.extend(keys);
    }
    assert_eq!(
        seen.len(),
        3_000,
        "messages for {} of 3000 keys",
        seen.len()
    );
    assert!(!seen.contains("untouched"));
}

/// A caller parked in `CACHE.LOCKGET ... WAIT` behind the lease of an invalidated entry is
/// treated as on a delete: it is handed the key (MISS with a new token).
#[test]
fn a_parked_lockget_caller_is_handed_the_invalidated_key() {
    let s = Server::start();
    let mut c = s.conn();
    // A tagged entry with a refresh lease out (a huge BETA elects it), whose value then runs
    // out: the lease keeps the key, and a LOCKGET caller has nothing to be served.
    // The value's life is scaled to the server's speed: the GETX must come before it ends.
    let life_ms = 50 * u64::from(slow());
    let px = life_ms.to_string();
    tagset(&mut c, "k", b"old", &["PX", &px, "GRACE", "0"], &["t"]).unwrap();
    let (_, status, holder) = getx(&mut c, "k", &["BETA", "1e300", "LEASE", "600000"]);
    assert_eq!(status, "REFRESH");
    let holder = holder.unwrap();
    std::thread::sleep(Duration::from_millis(2 * life_ms));
    let mut w = s.conn();
    let waiter = std::thread::spawn(move || lockget(&mut w, "k", &["WAIT", "20000"]));
    let parked = wait_until(Duration::from_secs(10), || {
        info_cache(&mut c)["lockget_parked"] == 1
    });
    assert!(parked, "the waiter parks");
    assert_eq!(invalidate(&mut c, &["t"]), 1);
    let (value, status, token) = waiter.join().unwrap();
    assert_eq!((value, status.as_str()), (None, "MISS"));
    assert!(token.unwrap() > holder, "a new lease for the parked caller");
    // The old holder's fill is refused.
    let t = holder.to_string();
    assert_eq!(set(&mut c, "k", b"late", &["EX", "60", "TOKEN", &t]), None);
}

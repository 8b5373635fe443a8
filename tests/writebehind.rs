//! Write-behind: `CACHE.WBQUEUE` / `CACHE.WBDEL` store and enqueue atomically, refuse without
//! writing anything, and their effects reach replicas and the AOF exactly once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use redis::{Connection, Value};
use support::commands::*;
use support::server::{start_replica, wait_caught_up, wait_until, Server};

const QUEUE: &str = "cache:wb";

/// `CACHE.WBQUEUE key value [opts...]`: (version, stream id), or the error's text.
fn wbqueue(
    c: &mut Connection,
    key: &str,
    value: &str,
    opts: &[&str],
) -> Result<(u64, String), String> {
    redis::cmd("CACHE.WBQUEUE")
        .arg(key)
        .arg(value)
        .arg(opts)
        .query(c)
        .map_err(|e| e.to_string())
}

fn wbdel(c: &mut Connection, key: &str) -> Result<(u64, String), String> {
    redis::cmd("CACHE.WBDEL")
        .arg(key)
        .query(c)
        .map_err(|e| e.to_string())
}

/// Every event of `queue`: (stream id, fields).
fn events(c: &mut Connection, queue: &str) -> Vec<(String, HashMap<String, String>)> {
    let v: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(queue)
        .arg("-")
        .arg("+")
        .query(c)
        .unwrap();
    v.into_iter()
        .map(|(id, kv)| {
            let map = kv.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            (id, map)
        })
        .collect()
}

fn xlen(c: &mut Connection, queue: &str) -> i64 {
    q(c, &["XLEN", queue])
}

#[test]
fn wbqueue_stores_like_set_and_enqueues_the_event() {
    let s = Server::start();
    let mut c = s.conn();
    let before = server_ms(&mut c);
    let (v1, id1) = wbqueue(&mut c, "user:1", "{\"a\":1}", &["TAGS", "tenant:1"]).unwrap();
    // Stored as CACHE.SET would, without a TTL: the entry does not expire.
    assert_eq!(
        cache_get(&mut c, "user:1").as_deref(),
        Some(&b"{\"a\":1}"[..])
    );
    assert_eq!(version_of(&mut c, "user:1"), Some(v1));
    assert_eq!(q::<i64>(&mut c, &["PTTL", "user:1"]), -1);
    assert_eq!(tags_of(&mut c, "user:1"), ["tenant:1"]);
    // With a TTL and GRACE, as CACHE.SET; the tags are kept when not given.
    let (v2, id2) = wbqueue(&mut c, "user:1", "two", &["PX", "60000", "GRACE", "1000"]).unwrap();
    assert!(v2 > v1);
    assert!(q::<i64>(&mut c, &["PTTL", "user:1"]) > 59_000);
    assert_eq!(tags_of(&mut c, "user:1"), ["tenant:1"]);
    // The queue: a stream with its group, events in order with the contract's fields.
    let ev = events(&mut c, QUEUE);
    assert_eq!(ev.len(), 2);
    assert_eq!(
        (ev[0].0.as_str(), ev[1].0.as_str()),
        (id1.as_str(), id2.as_str())
    );
    let e = &ev[0].1;
    assert_eq!(e["op"], "set");
    assert_eq!(e["key"], "user:1");
    assert_eq!(e["value"], "{\"a\":1}");
    assert_eq!(e["version"], v1.to_string());
    let ms: i64 = e["ms"].parse().unwrap();
    assert!(ms >= before && ms <= server_ms(&mut c), "ms {ms}");
    assert_eq!(ev[1].1["value"], "two");
    let groups: Vec<Value> = q(&mut c, &["XINFO", "GROUPS", QUEUE]);
    assert_eq!(groups.len(), 1);
    let group: HashMap<String, Value> = redis::from_redis_value(&groups[0]).unwrap();
    assert_eq!(group["name"], Value::BulkString(b"cache-wb".to_vec()));

    // WBDEL: the entry goes (as CACHE.DEL), the event carries a new, higher version.
    let (v3, _) = wbdel(&mut c, "user:1").unwrap();
    assert!(v3 > v2);
    assert!(!exists(&mut c, "user:1"));
    assert_eq!(tagcount(&mut c, "tenant:1"), 0);
    // Also for a key the cache does not hold: the database may.
    let (v4, _) = wbdel(&mut c, "user:2").unwrap();
    assert!(v4 > v3);
    let ev = events(&mut c, QUEUE);
    assert_eq!(ev.len(), 4);
    for (e, (key, version)) in ev[2..].iter().zip([("user:1", v3), ("user:2", v4)]) {
        assert_eq!(e.1["op"], "del");
        assert_eq!(e.1["key"], key);
        assert_eq!(e.1["version"], version.to_string());
        assert!(!e.1.contains_key("value"));
    }
    let queues: Vec<String> = q(&mut c, &["CACHE.WBQUEUES"]);
    assert_eq!(queues, [QUEUE]);
    let i = info_cache(&mut c);
    assert_eq!((i["wb_sets_queued"], i["wb_deletes_queued"]), (2, 2));
    assert_eq!(i["wb_queue_length"], 4);
    assert!(i["wb_oldest_event_age_ms"] >= 0);
}

#[test]
fn queue_and_group_names_follow_the_configs() {
    let s = Server::start_with(&["wb-queue", "app:queue", "wb-group", "db-writers"]);
    let mut c = s.conn();
    let queues: Vec<String> = q(&mut c, &["CACHE.WBQUEUES"]);
    assert!(queues.is_empty(), "no queue before the first event");
    wbqueue(&mut c, "k", "v", &[]).unwrap();
    assert_eq!(xlen(&mut c, "app:queue"), 1);
    let queues: Vec<String> = q(&mut c, &["CACHE.WBQUEUES"]);
    assert_eq!(queues, ["app:queue"]);
    let groups: Vec<Value> = q(&mut c, &["XINFO", "GROUPS", "app:queue"]);
    let group: HashMap<String, Value> = redis::from_redis_value(&groups[0]).unwrap();
    assert_eq!(group["name"], Value::BulkString(b"db-writers".to_vec()));
    for bad in ["", "two words", "tab\there", "hash{tag}"] {
        assert!(
            config_set(&mut c, "cache.wb-queue", bad).is_err(),
            "{bad:?} taken"
        );
    }
    assert_eq!(config_get(&mut c, "cache.wb-queue"), "app:queue");
}

/// Each refusal: a clear error, nothing written (digest, queue, counters), and counted.
#[test]
fn refusals_write_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    wbqueue(&mut c, "seed", "v", &[]).unwrap();
    let check = |what: &str, r: Result<(u64, String), String>, want: &str| {
        let e = r.expect_err(what);
        assert!(e.contains(want), "{what}: {e}");
    };
    let snapshot = |c: &mut Connection| (digest(c), xlen(c, QUEUE), last_id(c));
    let before = snapshot(&mut c);

    // Syntax: the contract's options only.
    check(
        "TOKEN",
        wbqueue(&mut c, "k", "v", &["TOKEN", "5"]),
        "syntax error",
    );
    check(
        "DELTA",
        wbqueue(&mut c, "k", "v", &["DELTA", "5"]),
        "syntax error",
    );
    check(
        "TAGS alone",
        wbqueue(&mut c, "k", "v", &["TAGS"]),
        "a tag after TAGS",
    );
    let _: () = q(&mut c, &["SET", "str", "x"]);
    let with_str = snapshot(&mut c);
    check("WRONGTYPE", wbqueue(&mut c, "str", "v", &[]), "WRONGTYPE");
    check("WRONGTYPE del", wbdel(&mut c, "str"), "WRONGTYPE");
    assert_eq!(snapshot(&mut c), with_str);
    let _: i64 = q(&mut c, &["DEL", "str"]);
    assert_eq!(snapshot(&mut c), before);

    // Backpressure: at cache.wb-max-len nothing is trimmed and nothing written.
    config_set(&mut c, "cache.wb-max-len", "1").unwrap();
    check(
        "full",
        wbqueue(&mut c, "k", "v", &[]),
        "cache.wb-max-len (1)",
    );
    check("full del", wbdel(&mut c, "seed"), "cache.wb-max-len (1)");
    assert_eq!(snapshot(&mut c), before);
    config_set(&mut c, "cache.wb-max-len", "1000000").unwrap();

    // An eviction policy that could drop the queue.
    config_set(&mut c, "maxmemory", "1gb").unwrap();
    config_set(&mut c, "maxmemory-policy", "allkeys-lru").unwrap();
    check(
        "allkeys",
        wbqueue(&mut c, "k", "v", &[]),
        "maxmemory-policy allkeys-lru",
    );
    assert_eq!(snapshot(&mut c), before);
    config_set(&mut c, "maxmemory-policy", "volatile-lru").unwrap();
    // Over maxmemory (with a policy that cannot evict the queue).
    config_set(&mut c, "maxmemory", "1").unwrap();
    check("OOM", wbqueue(&mut c, "k", "v", &[]), "OOM");
    check("OOM del", wbdel(&mut c, "seed"), "OOM");
    config_set(&mut c, "maxmemory", "0").unwrap();
    assert_eq!(snapshot(&mut c), before);

    // A user who may write the key but not the queue.
    let _: () = q(
        &mut c,
        &["ACL", "SETUSER", "app", "on", ">pw", "~user:*", "+@all"],
    );
    let mut app = s.conn();
    let _: () = q(&mut app, &["AUTH", "app", "pw"]);
    check("ACL", wbqueue(&mut app, "user:1", "v", &[]), "NOPERM");
    check("ACL del", wbdel(&mut app, "user:1"), "NOPERM");
    assert_eq!(snapshot(&mut c), before);
    let _: () = q(&mut c, &["ACL", "SETUSER", "app", &format!("~{QUEUE}")]);
    wbqueue(&mut app, "user:1", "v", &[]).expect("allowed once the queue key is");

    let i = info_cache(&mut c);
    assert_eq!(
        (
            i["wb_refused_full"],
            i["wb_refused_policy"],
            i["wb_refused_oom"],
            i["wb_refused_acl"]
        ),
        (2, 1, 2, 2)
    );
}

/// Entry and event reach the replica together and once: after `WAIT`, the promoted replica
/// holds every acknowledged event and every entry, as the primary had them.
#[test]
fn replicas_get_entry_and_event_exactly_once() {
    let p = Server::start();
    let r = start_replica(&p, &[]);
    let mut pc = p.conn();
    let mut rc = r.conn();
    let mut acked = Vec::new();
    for i in 0..200 {
        let key = format!("k{}", i % 20);
        let (version, id) = if i % 7 == 6 {
            wbdel(&mut pc, &key).unwrap()
        } else {
            wbqueue(&mut pc, &key, &format!("v{i}"), &["EX", "3600"]).unwrap()
        };
        acked.push((id, version));
    }
    let n: i64 = q(&mut pc, &["WAIT", "1", "5000"]);
    assert_eq!(n, 1);
    wait_caught_up(&mut pc, &mut rc);
    assert_eq!(digest(&mut rc), digest(&mut pc));
    let on_replica = events(&mut rc, QUEUE);
    assert_eq!(
        on_replica,
        events(&mut pc, QUEUE),
        "the same events, ids and all"
    );
    assert_eq!(on_replica.len(), acked.len(), "each event once");
    for ((id, version), (rid, e)) in acked.iter().zip(&on_replica) {
        assert_eq!((id, version.to_string()), (rid, e["version"].clone()));
    }
    // Promoted, it has them all, and its own writes go on after them.
    let _: () = q(&mut rc, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(xlen(&mut rc, QUEUE), acked.len() as i64);
    let (v, id) = wbqueue(&mut rc, "after", "x", &[]).unwrap();
    assert!(v > acked.iter().map(|a| a.1).max().unwrap());
    assert!(
        id.as_str() > acked.last().unwrap().0.as_str() || id.len() > acked.last().unwrap().0.len()
    );
}

/// After a restart from the AOF, with and without its RDB preamble, the queue and the
/// entries are as they were: each event once, with the same ids.
#[test]
fn the_aof_replays_entry_and_event_exactly_once() {
    for preamble in ["yes", "no"] {
        let mut s = Server::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            preamble,
        ]);
        let mut c = s.conn();
        for i in 0..50 {
            wbqueue(&mut c, &format!("k{}", i % 10), &format!("v{i}"), &[]).unwrap();
        }
        wbdel(&mut c, "k3").unwrap();
        if preamble == "yes" {
            let _: () = q(&mut c, &["BGREWRITEAOF"]);
            wait_rewrite_idle(&mut c, Duration::from_secs(20));
            wbqueue(&mut c, "k1", "after rewrite", &[]).unwrap();
        }
        let before = (digest(&mut c), events(&mut c, QUEUE));
        drop(c);
        s.kill();
        s.spawn();
        let mut c = s.conn();
        let loaded = wait_until(Duration::from_secs(20), || {
            q::<i64>(&mut c, &["DBSIZE"]) > 0
        });
        assert!(loaded, "nothing loaded");
        assert_eq!(
            (digest(&mut c), events(&mut c, QUEUE)),
            before,
            "preamble {preamble}"
        );
    }
}

/// In a cluster the queue is per slot, named into the slot of the command's key, so it lives
/// on the key's node (here a one-node cluster that serves every slot).
#[test]
fn in_a_cluster_the_queue_is_in_the_slot_of_the_key() {
    let s = Server::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]);
    let mut c = s.conn();
    let _: () = q(&mut c, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    let ok = wait_until(Duration::from_secs(20), || {
        info_section(&mut c, "cluster")
            .get("cluster_enabled")
            .map(String::as_str)
            == Some("1")
            && q::<String>(&mut c, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
    });
    assert!(ok, "the cluster never came up");
    for key in ["user:1", "user:{42}:profile", "x"] {
        wbqueue(&mut c, key, "v", &[]).unwrap();
    }
    let streams: Vec<String> = {
        let (_, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("TYPE")
            .arg("stream")
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .unwrap();
        keys
    };
    assert_eq!(streams.len(), 3, "one queue per slot: {streams:?}");
    let mut listed: Vec<String> = q(&mut c, &["CACHE.WBQUEUES"]);
    listed.sort();
    let mut want = streams.clone();
    want.sort();
    assert_eq!(listed, want, "CACHE.WBQUEUES lists the node's queues");
    for key in ["user:1", "user:{42}:profile", "x"] {
        let slot: i64 = q(&mut c, &["CLUSTER", "KEYSLOT", key]);
        let queue = streams
            .iter()
            .find(|name| {
                name.starts_with("cache:wb:{")
                    && q::<i64>(&mut s.conn(), &["CLUSTER", "KEYSLOT", name]) == slot
            })
            .unwrap_or_else(|| panic!("no queue in the slot of {key}: {streams:?}"));
        let ev = events(&mut c, queue);
        assert_eq!(ev.len(), 1, "{queue}");
        assert_eq!(ev[0].1["key"], key);
    }
}

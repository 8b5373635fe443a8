//! The module on a real Redis Cluster (three primaries, a replica each): every keyed command
//! through the `redis` crate's cluster client, redirection from the wrong node, key specs as
//! cluster clients read them, hash tags, per-node tag counts, and write-behind queues in the
//! slot of their key.

mod support;

use std::collections::HashMap;

use redis::{Commands, Value};
use std::time::Duration;
use support::cluster::{key_slot as slot, Cluster};
use support::commands::counter;
use support::server::wait_until;

const HOUR: &str = "3600000";

#[test]
fn commands_work_on_a_cluster() {
    let cluster = Cluster::start();
    let mut cc = cluster.client();
    let keys: Vec<String> = (0..12).map(|i| format!("user:{i}")).collect();
    let mut any = cluster.nodes[0].conn();
    let slots: Vec<i64> = keys.iter().map(|k| slot(&mut any, k)).collect();
    assert!(
        slots
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 3,
        "the keys spread over the slots"
    );

    // Every keyed command, each routed by the client to the key's node.
    for (i, key) in keys.iter().enumerate() {
        let v: u64 = redis::cmd("CACHE.SET")
            .arg(key)
            .arg(format!("v{i}"))
            .arg("PX")
            .arg(HOUR)
            .query(&mut cc)
            .unwrap();
        assert!(v > 0);
        let got: Option<String> = redis::cmd("CACHE.GET").arg(key).query(&mut cc).unwrap();
        assert_eq!(got.as_deref(), Some(format!("v{i}").as_str()));
        let (value, status, _): (Option<String>, String, Option<u64>) =
            redis::cmd("CACHE.GETX").arg(key).query(&mut cc).unwrap();
        assert_eq!(
            (value.as_deref(), status.as_str()),
            (Some(format!("v{i}").as_str()), "HIT")
        );
        let inspect: Vec<Value> = redis::cmd("CACHE.INSPECT").arg(key).query(&mut cc).unwrap();
        assert!(!inspect.is_empty());
        let _: u64 = redis::cmd("CACHE.TAGSET")
            .arg(key)
            .arg("t")
            .arg("PX")
            .arg(HOUR)
            .arg("TAGS")
            .arg("tenant:1")
            .query(&mut cc)
            .unwrap();
        let tags: Vec<String> = redis::cmd("CACHE.TAGS").arg(key).query(&mut cc).unwrap();
        assert_eq!(tags, ["tenant:1"]);
    }
    let fresh = "lease:0";
    let (_, status, token): (Option<String>, String, Option<u64>) = redis::cmd("CACHE.LOCKGET")
        .arg(fresh)
        .query(&mut cc)
        .unwrap();
    assert_eq!(status, "MISS");
    let released: i64 = redis::cmd("CACHE.RELEASE")
        .arg(fresh)
        .arg(token.unwrap())
        .query(&mut cc)
        .unwrap();
    assert_eq!(released, 1);

    // Tag counts are per node: the primaries' counts add up to the tagged entries.
    let total: i64 = cluster
        .primaries()
        .iter()
        .map(|n| {
            let mut c = n.conn();
            redis::cmd("CACHE.TAGCOUNT")
                .arg("tenant:1")
                .query::<i64>(&mut c)
                .unwrap()
        })
        .sum();
    assert_eq!(total, keys.len() as i64);

    // Sent to a node that does not serve the key: redirected, as core commands are.
    let key = &keys[0];
    let owner_port = cluster.owner_of(key).port;
    for n in cluster.primaries().iter().filter(|n| n.port != owner_port) {
        let mut c = n.conn();
        let e = redis::cmd("CACHE.GET")
            .arg(key)
            .query::<Option<String>>(&mut c)
            .unwrap_err();
        assert_eq!(e.kind(), redis::ErrorKind::Moved, "{e}");
        let e = redis::cmd("CACHE.SET")
            .arg(key)
            .arg("x")
            .arg("PX")
            .arg(HOUR)
            .query::<u64>(&mut c)
            .unwrap_err();
        assert_eq!(e.kind(), redis::ErrorKind::Moved, "{e}");
    }

    // Key specs, as cluster clients read them.
    for cmd in [
        vec!["CACHE.SET", "k1", "v", "PX", "1"],
        vec!["CACHE.GET", "k1"],
        vec!["CACHE.GETX", "k1"],
        vec!["CACHE.LOCKGET", "k1"],
        vec!["CACHE.TAGSET", "k1", "v", "PX", "1", "TAGS", "t"],
        vec!["CACHE.WBQUEUE", "k1", "v"],
        vec!["CACHE.WBDEL", "k1"],
        vec!["CACHE.INSPECT", "k1"],
    ] {
        let keys: Vec<String> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(&cmd)
            .query(&mut any)
            .unwrap();
        assert_eq!(keys, ["k1"], "{}", cmd[0]);
    }

    // Hash tags group keys as in core Redis: one slot, so one multi-key command; keys of
    // different slots in one command are refused.
    for key in ["user:{42}:a", "user:{42}:b"] {
        let _: u64 = redis::cmd("CACHE.SET")
            .arg(key)
            .arg("v")
            .arg("PX")
            .arg(HOUR)
            .query(&mut cc)
            .unwrap();
    }
    let deleted: i64 = redis::cmd("CACHE.DEL")
        .arg("user:{42}:a")
        .arg("user:{42}:b")
        .query(&mut cc)
        .unwrap();
    assert_eq!(deleted, 2);
    let mut owner = cluster.owner_of(&keys[0]).conn();
    let e = redis::cmd("CACHE.DEL")
        .arg(&keys[0])
        .arg(&keys[1])
        .query::<i64>(&mut owner)
        .unwrap_err();
    assert_ne!(
        slots[0], slots[1],
        "user:0 and user:1 hash to different slots"
    );
    assert!(e.to_string().to_uppercase().contains("CROSSSLOT"), "{e}");

    // Write-behind: each event in the queue of its key's slot, on the key's node.
    for key in &keys {
        let (_, _id): (u64, String) = redis::cmd("CACHE.WBQUEUE")
            .arg(key)
            .arg("wb")
            .query(&mut cc)
            .unwrap();
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut queued_in_info = 0;
    for n in cluster.primaries() {
        let mut c = n.conn();
        // INFO counts the events of every slot queue on the node.
        let in_info = counter(&mut c, "wb_queue_length");
        assert!(in_info > 0, "events on {}", n.port);
        queued_in_info += in_info;
        assert!(counter(&mut c, "wb_oldest_event_age_ms") < 60_000);
        let queues: Vec<String> = redis::cmd("CACHE.WBQUEUES").query(&mut c).unwrap();
        for q in queues {
            let entries: Vec<(String, Vec<String>)> = c.xrange_all(&q).unwrap();
            for (_, fields) in entries {
                let key = fields[fields.iter().position(|f| f == "key").unwrap() + 1].clone();
                assert_eq!(slot(&mut c, &q), slot(&mut c, &key), "{q} holds {key}");
                seen.insert(key, q.clone());
            }
        }
    }
    let mut all: Vec<&String> = seen.keys().collect();
    all.sort();
    let mut want: Vec<&String> = keys.iter().collect();
    want.sort();
    assert_eq!(all, want, "every event, on the node of its key");
    assert_eq!(
        queued_in_info,
        keys.len() as i64,
        "INFO's queue lengths add up"
    );

    // Replicas hold the queues too, and count them: their events came replicated.
    let primary_ports: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    let on_replicas = || -> i64 {
        cluster
            .nodes
            .iter()
            .filter(|n| !primary_ports.contains(&n.port))
            .map(|n| counter(&mut n.conn(), "wb_queue_length"))
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(10), || on_replicas()
            == keys.len() as i64),
        "the replicas count {} events",
        on_replicas()
    );

    // After a load (here DEBUG RELOAD: save, flush, load the RDB), the queues are found again.
    let p = cluster.owner_of(&keys[0]);
    let mut c = p.conn();
    let before = counter(&mut c, "wb_queue_length");
    assert!(before > 0);
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_eq!(
        counter(&mut c, "wb_queue_length"),
        before,
        "after DEBUG RELOAD"
    );
}

//! Nothing acknowledged is lost when a real cluster (three primaries, a replica each) moves
//! slots or loses a primary:
//! - resharding half of one primary's slots with `redis-cli --cluster reshard` while client
//!   threads write and read through the `redis` crate's cluster client: every acknowledged
//!   write reads back, tag counts add up, tag invalidation reaches moved entries, and every
//!   acknowledged write-behind event is in its slot's queue exactly once, in order, with its
//!   consumer group and pending entries (a few crowded slots make `MIGRATE` move a slot in many
//!   batches, so entries and their queue are apart for a while: without the module's
//!   `TRYAGAIN` for a queue that is not on the node mid-move, the CLI's `MIGRATE` of the queue
//!   failed with "Target key exists" in one to two runs of three), and the refusal itself,
//!   deterministically, on a slot put in `MIGRATING` / `IMPORTING` by hand;
//! - a primary killed with -9 after `WAIT 1` acknowledged its writes: its promoted replica
//!   serves every entry and event, and honours and fences the leases it had granted.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster::ClusterConnection;
use redis::{Commands, Connection, Value};
use support::cluster::{key_slot as slot, node_id, Cluster};
use support::commands::{fill, lockget, version_of};
use support::server::{wait_until, Server};

const HOUR: &str = "3600000";
const GROUP: &str = "cache-wb";
const THREADS: usize = 4;
const KEYS_PER_THREAD: usize = 300;
/// Plain entries added to each crowded slot.
const FILLERS_PER_SLOT: usize = 500;

/// What one load thread knows of one of its keys.
#[derive(Default, Clone)]
struct KeyState {
    /// The last value a write of it was acknowledged with.
    last: Option<String>,
    /// Values of writes after `last` that failed: the server may or may not have stored them.
    maybe: Vec<String>,
    /// Whether a `CACHE.TAGSET` was acknowledged (later `SET`s and `WBQUEUE`s keep the tag).
    tagged: bool,
    /// Whether a `CACHE.TAGSET` failed: the tag may or may not be on the entry.
    tag_unsure: bool,
    /// The stream ids of the acknowledged `CACHE.WBQUEUE`s, in the order of their replies.
    events: Vec<String>,
}

/// What a load thread did.
#[derive(Default)]
struct Load {
    keys: Vec<(String, KeyState)>,
    acks: usize,
    errors: Vec<String>,
}

/// Half the keys of a thread are in a few crowded slots (hash tags of `groups`), the others
/// anywhere.
fn key_name(thread: usize, j: usize, groups: &[String]) -> String {
    if j.is_multiple_of(2) {
        format!("{{{}}}:t{thread}:{j}", groups[(j / 2) % groups.len()])
    } else {
        format!("t{thread}:{j}")
    }
}

fn tag_of(thread: usize) -> String {
    format!("tag:{thread}")
}

/// One load thread: its own keys (so it knows their last value), written once each before
/// `ready` is counted, then a random mix of SET / TAGSET / WBQUEUE / GETX until `stop`. A GETX
/// of a key it wrote must see the last acknowledged value (read-your-writes through every
/// redirection).
fn load(
    mut cc: ClusterConnection,
    thread: usize,
    groups: Arc<Vec<String>>,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Load {
    let mut out = Load {
        keys: (0..KEYS_PER_THREAD)
            .map(|j| (key_name(thread, j, &groups), KeyState::default()))
            .collect(),
        ..Load::default()
    };
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (thread as u64 + 1);
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let tag = tag_of(thread);
    let mut seq = 0u64;
    let mut step = |out: &mut Load, j: usize, op: usize| {
        seq += 1;
        let (key, st) = &mut out.keys[j];
        let value = format!("{key}#{seq}");
        let res: redis::RedisResult<()> = match op {
            0 => redis::cmd("CACHE.SET")
                .arg(&*key)
                .arg(&value)
                .arg("PX")
                .arg(HOUR)
                .query::<u64>(&mut cc)
                .map(|_| ()),
            1 => redis::cmd("CACHE.TAGSET")
                .arg(&*key)
                .arg(&value)
                .arg("PX")
                .arg(HOUR)
                .arg("TAGS")
                .arg(&tag)
                .query::<u64>(&mut cc)
                .map(|_| st.tagged = true)
                .inspect_err(|_| st.tag_unsure = true),
            2 => redis::cmd("CACHE.WBQUEUE")
                .arg(&*key)
                .arg(&value)
                .query::<(u64, String)>(&mut cc)
                .map(|(_, id)| st.events.push(id)),
            _ => {
                let Some(last) = st.last.clone().filter(|_| st.maybe.is_empty()) else {
                    return;
                };
                match redis::cmd("CACHE.GETX")
                    .arg(&*key)
                    .query::<(Option<String>, String, Option<u64>)>(&mut cc)
                {
                    Ok((got, status, _)) => assert_eq!(
                        got.as_deref(),
                        Some(last.as_str()),
                        "GETX {key} ({status}) during the reshard"
                    ),
                    Err(e) => out.errors.push(format!("GETX {key}: {e}")),
                }
                return;
            }
        };
        match res {
            Ok(()) => {
                st.last = Some(value);
                st.maybe.clear();
                out.acks += 1;
            }
            Err(e) => {
                st.maybe.push(value);
                out.errors.push(format!("op {op} on {key}: {e}"));
            }
        }
    };
    // Every key written once: half of them with an event (so that most slots have a queue
    // before the move), the others without (their first event may come mid-move).
    for j in 0..KEYS_PER_THREAD {
        step(&mut out, j, if j.is_multiple_of(2) { 2 } else { 1 });
    }
    ready.fetch_add(1, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        // Paced (not a wait for anything): on 2 cores an unpaced load starves the CLI and the
        // servers, and the reshard takes minutes instead of seconds.
        std::thread::sleep(Duration::from_micros(500));
        let j = rand(KEYS_PER_THREAD);
        let op = rand(4);
        step(&mut out, j, op);
    }
    out
}

/// Where an event was found: (node port, queue, position in the queue).
type Place = (u16, String, usize);

/// The fields of a stream entry as a map.
fn fields_of(fields: &[String]) -> HashMap<&str, &str> {
    fields
        .chunks(2)
        .map(|kv| (kv[0].as_str(), kv[1].as_str()))
        .collect()
}

/// The queue (on `c`'s node) of `key`'s slot, among those `CACHE.WBQUEUES` lists.
fn queue_of(c: &mut Connection, key: &str) -> Option<String> {
    let want = slot(c, key);
    let queues: Vec<String> = redis::cmd("CACHE.WBQUEUES").query(c).unwrap();
    queues.into_iter().find(|q| slot(c, q) == want)
}

/// The ids `XPENDING` lists for the group on `queue`.
fn pending_ids(c: &mut Connection, queue: &str) -> Vec<String> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(queue)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query(c)
        .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

/// Whether `queue` on `c`'s node has the write-behind consumer group.
fn has_group(c: &mut Connection, queue: &str) -> bool {
    let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(queue)
        .query(c)
        .unwrap();
    groups.iter().any(|g| {
        matches!(g.get("name"), Some(Value::BulkString(n)) if n == GROUP.as_bytes())
            || matches!(g.get("name"), Some(Value::SimpleString(n)) if n == GROUP)
    })
}

#[test]
fn reshard_under_load_loses_nothing_acknowledged() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let before = cluster.slot_map();
    let from = cluster.primaries()[0];
    let to = *cluster
        .primaries()
        .iter()
        .find(|p| p.port != from.port)
        .unwrap();
    let from_slots = before.iter().filter(|&&p| p == from.port as i64).count();
    let mut any = from.conn();

    // Pending entries before the move: one event on each of a dozen slots spread over the
    // source's range, read by a consumer and not acknowledged.
    let mut pending: Vec<(String, String)> = Vec::new(); // (key, id)
    let mut i = 0;
    while pending.len() < 12 {
        let key = format!("pending:{i}");
        i += 1;
        let s = slot(&mut any, &key) as usize;
        let nth = before[..s]
            .iter()
            .filter(|&&p| p == from.port as i64)
            .count();
        let wanted = pending.len() * from_slots / 12;
        if before[s] != from.port as i64 || nth < wanted || nth >= wanted + from_slots / 12 {
            continue;
        }
        let mut c = from.conn();
        let (_, id): (u64, String) = redis::cmd("CACHE.WBQUEUE")
            .arg(&key)
            .arg("p")
            .query(&mut c)
            .unwrap();
        let q = queue_of(&mut c, &key).expect("the queue of the pending key");
        let _: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("tester")
            .arg("COUNT")
            .arg(1000)
            .arg("STREAMS")
            .arg(&q)
            .arg(">")
            .query(&mut c)
            .unwrap();
        assert!(pending_ids(&mut c, &q).contains(&id), "{id} pending on {q}");
        pending.push((key, id));
    }

    // Crowded slots: hash tags, most of them in the half of the source's slots the CLI moves
    // (the lowest: it takes a source's slots in order), each slot filled with enough plain
    // entries that `MIGRATE` moves it in many batches (10 keys each), so the entries and the
    // queue of a slot are on different nodes for a while.
    let half = from_slots / 2;
    let lower: HashSet<usize> = (0..16384)
        .filter(|&s| before[s] == from.port as i64)
        .take(half)
        .collect();
    let (mut moving, mut staying) = (Vec::new(), Vec::new());
    for n in 0.. {
        let tag = format!("g{n}");
        let s = slot(&mut any, &tag) as usize;
        if lower.contains(&s) && moving.len() < 16 {
            moving.push(tag);
        } else if !lower.contains(&s) && staying.len() < 4 {
            staying.push(tag);
        }
        if moving.len() == 16 && staying.len() == 4 {
            break;
        }
    }
    let groups: Vec<String> = moving.into_iter().chain(staying).collect();
    for g in &groups {
        let mut owner = cluster.owner_of(g).conn();
        let mut pipe = redis::pipe();
        for i in 0..FILLERS_PER_SLOT {
            pipe.cmd("CACHE.SET")
                .arg(format!("{{{g}}}:filler:{i}"))
                .arg("f")
                .arg("PX")
                .arg(HOUR)
                .ignore();
        }
        let _: () = pipe.query(&mut owner).unwrap();
    }
    let groups = Arc::new(groups);

    // The load, then the reshard while it runs.
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cc, ready, stop) = (cluster.patient_client(), ready.clone(), stop.clone());
            let groups = groups.clone();
            std::thread::spawn(move || load(cc, t, groups, ready, stop))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || ready.load(Ordering::SeqCst)
            == THREADS),
        "the load threads did not write their keys"
    );
    let took = cluster.reshard(from, to, half);
    stop.store(true, Ordering::SeqCst);
    let loads: Vec<Load> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let after = cluster.slot_map();
    let moved: HashSet<usize> = (0..16384).filter(|&s| before[s] != after[s]).collect();
    assert_eq!(moved.len(), half, "the slots the reshard moved");
    assert!(moved
        .iter()
        .all(|&s| before[s] == from.port as i64 && after[s] == to.port as i64));
    let acks: usize = loads.iter().map(|l| l.acks).sum();
    let errors: Vec<&String> = loads.iter().flat_map(|l| &l.errors).collect();
    eprintln!(
        "reshard of {half} slots took {took:?}; {acks} writes acknowledged, {} errors {:?}",
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );

    let mut cc = cluster.patient_client();
    // Every acknowledged write reads back with its last value (or, after a failed write, a
    // value that write may have stored); and some of them live in moved slots.
    let mut keys_moved = 0;
    for l in &loads {
        for (key, st) in &l.keys {
            let got: Option<String> = redis::cmd("CACHE.GET").arg(key).query(&mut cc).unwrap();
            // Never acknowledged: absent is fine too.
            let allowed: Vec<&String> = st.last.iter().chain(&st.maybe).collect();
            assert!(
                got.as_ref().is_some_and(|g| allowed.contains(&g))
                    || (st.last.is_none() && got.is_none()),
                "{key}: read {got:?}, acknowledged {:?} (then tried {:?})",
                st.last,
                st.maybe
            );
            if moved.contains(&(slot(&mut any, key) as usize)) {
                keys_moved += 1;
            }
        }
    }
    assert!(
        keys_moved > 50,
        "only {keys_moved} keys were in moved slots"
    );

    // Tag counts, summed over the primaries, equal the entries that carry the tag: exactly the
    // model's when no TAGSET of the thread failed, and always what CACHE.TAGS says.
    let tag_sum = |tag: &str| -> i64 {
        cluster
            .primaries()
            .iter()
            .map(|p| {
                redis::cmd("CACHE.TAGCOUNT")
                    .arg(tag)
                    .query::<i64>(&mut p.conn())
                    .unwrap()
            })
            .sum()
    };
    for (t, l) in loads.iter().enumerate() {
        let tag = tag_of(t);
        let carrying = l
            .keys
            .iter()
            .filter(|(k, _)| {
                let tags: Vec<String> = redis::cmd("CACHE.TAGS").arg(k).query(&mut cc).unwrap();
                tags.contains(&tag)
            })
            .count() as i64;
        assert_eq!(tag_sum(&tag), carrying, "TAGCOUNT {tag} over the primaries");
        if l.keys.iter().all(|(_, st)| !st.tag_unsure) {
            let model = l.keys.iter().filter(|(_, st)| st.tagged).count() as i64;
            assert_eq!(carrying, model, "entries acknowledged with {tag}");
        }
    }

    // Every acknowledged event exactly once over all the primaries' queues, in the queue of
    // its key's slot on the node that serves the key, in order per key; every queue has its
    // consumer group.
    let mut found: HashMap<(String, String), Vec<Place>> = HashMap::new();
    for p in cluster.primaries() {
        let mut c = p.conn();
        let queues: Vec<String> = redis::cmd("CACHE.WBQUEUES").query(&mut c).unwrap();
        for q in queues {
            assert!(
                has_group(&mut c, &q),
                "{q} on :{} has group {GROUP}",
                p.port
            );
            let entries: Vec<(String, Vec<String>)> = c.xrange_all(&q).unwrap();
            for (pos, (id, fields)) in entries.iter().enumerate() {
                let key = fields_of(fields)["key"].to_string();
                found
                    .entry((key, id.clone()))
                    .or_default()
                    .push((p.port, q.clone(), pos));
            }
        }
    }
    let mut events = 0;
    let mut events_moved = 0;
    for l in &loads {
        for (key, st) in &l.keys {
            let key_slot = slot(&mut any, key) as usize;
            let mut last_pos = None;
            for id in &st.events {
                let at = found
                    .get(&(key.clone(), id.clone()))
                    .unwrap_or_else(|| panic!("event {id} of {key} is in no queue"));
                assert_eq!(at.len(), 1, "event {id} of {key} found {at:?}");
                let (port, q, pos) = &at[0];
                assert_eq!(
                    *port as i64, after[key_slot],
                    "{key}'s event {id} on its node"
                );
                assert_eq!(slot(&mut any, q) as usize, key_slot, "{q} holds {key}");
                assert!(last_pos < Some(*pos), "{key}'s events out of order in {q}");
                last_pos = Some(*pos);
                events += 1;
                events_moved += moved.contains(&key_slot) as usize;
            }
        }
    }
    assert!(events_moved > 0, "no acknowledged event in a moved slot");
    eprintln!("{events} acknowledged events checked, {events_moved} in moved slots");

    // Pending entries moved with their queue: still pending at the new node.
    let mut pending_moved = 0;
    for (key, id) in &pending {
        let s = slot(&mut any, key) as usize;
        let owner = cluster.owner_of(key);
        let mut c = owner.conn();
        let q = queue_of(&mut c, key).unwrap_or_else(|| panic!("{key}'s queue"));
        assert!(
            pending_ids(&mut c, &q).contains(id),
            "{id} of {key} still pending in {q} at :{}",
            owner.port
        );
        pending_moved += moved.contains(&s) as usize;
    }
    assert!(pending_moved > 0, "no pending entry was in a moved slot");

    // An invalidation of a tag, sent to one primary, removes its entries on every primary,
    // moved ones too; the other tags' entries stay.
    let tag = tag_of(0);
    let gone: Vec<&String> = loads[0]
        .keys
        .iter()
        .filter(|(k, _)| {
            let tags: Vec<String> = redis::cmd("CACHE.TAGS").arg(k).query(&mut cc).unwrap();
            tags.contains(&tag)
        })
        .map(|(k, _)| k)
        .collect();
    assert!(
        gone.iter()
            .any(|k| moved.contains(&(slot(&mut any, k) as usize))),
        "no entry of {tag} was in a moved slot"
    );
    let before = tag_sum(&tag);
    let n: i64 = redis::cmd("CACHE.TAGINVALIDATE")
        .arg(&tag)
        .query(&mut cluster.primaries()[0].conn())
        .unwrap();
    assert_eq!(n, before, "one call, every primary: the cluster's total");
    for k in &gone {
        let got: Option<String> = redis::cmd("CACHE.GET").arg(*k).query(&mut cc).unwrap();
        assert_eq!(got, None, "{k} after TAGINVALIDATE {tag}");
    }
    assert_eq!(tag_sum(&tag), 0, "TAGCOUNT {tag} after TAGINVALIDATE");
    let other = &loads[1].keys;
    let kept = other.iter().filter(|(_, st)| st.last.is_some()).count();
    let read = other
        .iter()
        .filter(|(k, _)| {
            redis::cmd("CACHE.GET")
                .arg(k)
                .query::<Option<String>>(&mut cc)
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(read, kept, "entries of another tag stay");
    eprintln!("whole test: {:?}", started.elapsed());
}

/// For a slot moved by hand: the primary that serves `key`, another primary, and the slot.
fn source_and_target<'a>(cluster: &'a Cluster, key: &str) -> (&'a Server, &'a Server, i64) {
    let src = cluster.owner_of(key);
    let dst = *cluster
        .primaries()
        .iter()
        .find(|p| p.port != src.port)
        .unwrap();
    let s = slot(&mut src.conn(), key);
    (src, dst, s)
}

/// `CACHE.WBQUEUE` / `CACHE.WBDEL` on a node whose slot is moving and that lacks the slot's
/// queue: `TRYAGAIN`, nothing written, no queue made. With the queue there, they run.
#[test]
fn write_behind_mid_move_without_the_queue_is_tryagain() {
    let cluster = Cluster::start();
    let (key, fresh) = ("{mv}:a", "{mv}:b");
    let (src, dst, s) = source_and_target(&cluster, key);
    let (mut a, mut b) = (src.conn(), dst.conn());
    let _: u64 = redis::cmd("CACHE.SET")
        .arg(key)
        .arg("before")
        .arg("PX")
        .arg(HOUR)
        .query(&mut a)
        .unwrap();
    assert_eq!(queue_of(&mut a, key), None, "no queue in the slot yet");
    let setslot = |c: &mut Connection, how: &str, id: &str| {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(s)
            .arg(how)
            .arg(id)
            .query(c)
            .unwrap();
    };
    setslot(&mut b, "IMPORTING", &node_id(src));
    setslot(&mut a, "MIGRATING", &node_id(dst));
    let tryagain = |e: redis::RedisError, what: &str| {
        assert_eq!(e.kind(), redis::ErrorKind::TryAgain, "{what}: {e}");
    };

    // Migrating, the entry here, the queue not: refused.
    let e = redis::cmd("CACHE.WBQUEUE")
        .arg(key)
        .arg("after")
        .query::<Value>(&mut a)
        .unwrap_err();
    tryagain(e, "WBQUEUE on the migrating node");
    let e = redis::cmd("CACHE.WBDEL")
        .arg(key)
        .query::<Value>(&mut a)
        .unwrap_err();
    tryagain(e, "WBDEL on the migrating node");
    let got: Option<String> = redis::cmd("CACHE.GET").arg(key).query(&mut a).unwrap();
    assert_eq!(got.as_deref(), Some("before"), "nothing written");
    // Importing (sent with ASKING, as after an ASK redirection), the queue not here: refused.
    for cmd in [
        redis::cmd("CACHE.WBQUEUE").arg(fresh).arg("v").clone(),
        redis::cmd("CACHE.WBDEL").arg(fresh).clone(),
    ] {
        let _: () = redis::cmd("ASKING").query(&mut b).unwrap();
        tryagain(
            cmd.query::<Value>(&mut b).unwrap_err(),
            "on the importing node",
        );
    }
    for c in [&mut a, &mut b] {
        assert_eq!(queue_of(c, key), None, "no queue made");
    }
    let n: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(s)
        .query(&mut b)
        .unwrap();
    assert_eq!(n, 0, "nothing written on the importing node");

    // With the queue here, the hot path: written as usual, mid-move too.
    for c in [&mut a, &mut b] {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(s)
            .arg("STABLE")
            .query(c)
            .unwrap();
    }
    let _: (u64, String) = redis::cmd("CACHE.WBQUEUE")
        .arg(key)
        .arg("queued")
        .query(&mut a)
        .unwrap();
    setslot(&mut b, "IMPORTING", &node_id(src));
    setslot(&mut a, "MIGRATING", &node_id(dst));
    let _: (u64, String) = redis::cmd("CACHE.WBQUEUE")
        .arg(key)
        .arg("mid-move")
        .query(&mut a)
        .unwrap();
    let q = queue_of(&mut a, key).expect("the queue");
    let len: i64 = a.xlen(&q).unwrap();
    assert_eq!(len, 2);
}

#[test]
fn failover_keeps_what_wait_acknowledged() {
    let mut cluster = Cluster::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let primary = cluster
        .nodes
        .iter()
        .position(|n| n.port == cluster.owner_of("{fo}").port)
        .unwrap();
    let replica = cluster.replica_of(primary);
    let mut c = cluster.nodes[primary].conn();
    let wait = |c: &mut Connection| {
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(c).unwrap();
        assert_eq!(acked, 1, "WAIT 1: the replica acknowledged");
    };

    // Entries and events, acknowledged by the replica.
    let mut entries = Vec::new();
    let mut events = Vec::new();
    let mut highest = 0u64;
    for i in 0..40 {
        let key = format!("{{fo}}:e:{i}");
        let v: u64 = redis::cmd("CACHE.SET")
            .arg(&key)
            .arg(format!("v{i}"))
            .arg("PX")
            .arg(HOUR)
            .query(&mut c)
            .unwrap();
        entries.push((key, format!("v{i}")));
        let key = format!("{{fo}}:w:{i}");
        let (w, id): (u64, String) = redis::cmd("CACHE.WBQUEUE")
            .arg(&key)
            .arg(format!("w{i}"))
            .query(&mut c)
            .unwrap();
        entries.push((key.clone(), format!("w{i}")));
        events.push((key, id));
        highest = highest.max(v).max(w);
        if i % 10 == 9 {
            wait(&mut c);
        }
    }
    let queue = queue_of(&mut c, "{fo}").expect("the queue of {fo}'s slot");
    // A lease held, and one revoked by a delete.
    let lease = "{fo}:lease";
    let (_, status, token) = lockget(&mut c, lease, &["PX", "600000"]);
    assert_eq!(status, "MISS");
    let token = token.unwrap();
    let revoked = "{fo}:revoked";
    let old = lockget(&mut c, revoked, &["PX", "600000"])
        .2
        .expect("a lease on the second key");
    let _: i64 = redis::cmd("CACHE.DEL").arg(revoked).query(&mut c).unwrap();
    wait(&mut c);

    cluster.kill(primary);
    let start = Instant::now();
    cluster.wait_promoted(replica, Duration::from_secs(60));
    eprintln!("replica promoted after {:?}", start.elapsed());
    let mut r = cluster.nodes[replica].conn();

    for (key, value) in &entries {
        let got: Option<String> = redis::cmd("CACHE.GET").arg(key).query(&mut r).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_str()), "{key} after failover");
    }
    assert!(has_group(&mut r, &queue), "{queue} has group {GROUP}");
    let stream: Vec<(String, Vec<String>)> = r.xrange_all(&queue).unwrap();
    for (key, id) in &events {
        let n = stream
            .iter()
            .filter(|(sid, f)| sid == id && fields_of(f)["key"] == key.as_str())
            .count();
        assert_eq!(n, 1, "event {id} of {key} in {queue} after failover");
    }

    // The lease is honoured: another caller finds it held...
    let (value, status, t) = lockget(&mut r, lease, &[]);
    assert_eq!(
        (value, status.as_str(), t),
        (None, "LOCKED", None),
        "the lease granted before the failover"
    );
    // ...its token fills once, with a version above every earlier one...
    let filled = fill(&mut r, lease, b"filled", token)
        .expect("the old primary's token fills on the promoted replica");
    assert!(
        filled > highest,
        "versions go on growing after the failover"
    );
    assert_eq!(
        fill(&mut r, lease, b"late", token),
        None,
        "a spent token is refused"
    );
    // ...and a token whose lease the old primary revoked is refused.
    assert_eq!(
        fill(&mut r, revoked, b"stale", old),
        None,
        "a token revoked before the failover"
    );
    let got: Option<String> = redis::cmd("CACHE.GET").arg(lease).query(&mut r).unwrap();
    assert_eq!(got.as_deref(), Some("filled"));

    // The cluster client finds the new primary by itself.
    let mut cc = cluster.patient_client();
    let got: Option<String> = redis::cmd("CACHE.GET")
        .arg(&entries[0].0)
        .query(&mut cc)
        .unwrap();
    assert_eq!(got.as_deref(), Some(entries[0].1.as_str()));
}

/// One slot moved by hand (`SETSLOT` + `MIGRATE`, what `--cluster reshard` does per slot): its
/// entries keep their value, tags and leases on the new node (their versions are renewed,
/// higher, as for any entry that lands on a name), the tag index follows on both nodes, a
/// lease granted before the move fills once on the new node, and the slot's queue moves with
/// its events.
#[test]
fn a_moved_entry_keeps_its_tags_and_lease() {
    let cluster = Cluster::start();
    let (tagged, pending) = ("{lm}:tagged", "{lm}:pending");
    let (src, dst, s) = source_and_target(&cluster, tagged);
    let (mut a, mut b) = (src.conn(), dst.conn());
    let before: u64 = redis::cmd("CACHE.TAGSET")
        .arg(tagged)
        .arg("v1")
        .arg("PX")
        .arg(HOUR)
        .arg("TAGS")
        .arg("lm:t")
        .query(&mut a)
        .unwrap();
    // A refresh lease on the tagged entry, a fill lease on a key with no value yet.
    let (_, status, refresh): (Option<String>, String, Option<u64>) = redis::cmd("CACHE.GETX")
        .arg(tagged)
        .arg("BETA")
        .arg("1000000000000")
        .query(&mut a)
        .unwrap();
    assert_eq!(status, "REFRESH");
    let (_, status, fill): (Option<String>, String, Option<u64>) = redis::cmd("CACHE.LOCKGET")
        .arg(pending)
        .arg("PX")
        .arg(HOUR)
        .query(&mut a)
        .unwrap();
    assert_eq!(status, "MISS");
    let (refresh, fill) = (refresh.unwrap(), fill.unwrap());
    let (_, event): (u64, String) = redis::cmd("CACHE.WBQUEUE")
        .arg("{lm}:queued")
        .arg("q")
        .query(&mut a)
        .unwrap();
    let tagcount =
        |c: &mut Connection| -> i64 { redis::cmd("CACHE.TAGCOUNT").arg("lm:t").query(c).unwrap() };
    assert_eq!((tagcount(&mut a), tagcount(&mut b)), (1, 0));

    // The move, as the CLI makes it.
    for (c, how, id) in [
        (&mut b, "IMPORTING", node_id(src)),
        (&mut a, "MIGRATING", node_id(dst)),
    ] {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(s)
            .arg(how)
            .arg(id)
            .query(c)
            .unwrap();
    }
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(s)
        .arg(100)
        .query(&mut a)
        .unwrap();
    assert_eq!(
        keys.len(),
        4,
        "two entries, one more, and the slot's queue: {keys:?}"
    );
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(dst.port)
        .arg("")
        .arg(0)
        .arg(10_000)
        .arg("KEYS")
        .arg(&keys)
        .query(&mut a)
        .unwrap();
    for n in cluster.primaries() {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(s)
            .arg("NODE")
            .arg(node_id(dst))
            .query(&mut n.conn())
            .unwrap();
    }

    // On the new node: value, tags, a higher version; the index true on both.
    let got: Option<String> = redis::cmd("CACHE.GET").arg(tagged).query(&mut b).unwrap();
    assert_eq!(got.as_deref(), Some("v1"));
    let tags: Vec<String> = redis::cmd("CACHE.TAGS").arg(tagged).query(&mut b).unwrap();
    assert_eq!(tags, ["lm:t"]);
    assert_eq!((tagcount(&mut a), tagcount(&mut b)), (0, 1));
    assert!(
        version_of(&mut b, tagged).is_some_and(|v| v > before),
        "renewed, higher"
    );
    // The leases came along: held against others, each fills once with its token.
    let (_, status, _): (Option<String>, String, Option<u64>) = redis::cmd("CACHE.LOCKGET")
        .arg(pending)
        .query(&mut b)
        .unwrap();
    assert_eq!(status, "LOCKED", "the fill lease is held on the new node");
    for (k, token, value) in [(pending, fill, "filled"), (tagged, refresh, "v2")] {
        let stored: Option<u64> = redis::cmd("CACHE.SET")
            .arg(k)
            .arg(value)
            .arg("PX")
            .arg(HOUR)
            .arg("TOKEN")
            .arg(token)
            .query(&mut b)
            .unwrap();
        assert!(stored.is_some(), "{k}: the lease of before the move fills");
        let again: Option<u64> = redis::cmd("CACHE.SET")
            .arg(k)
            .arg("late")
            .arg("PX")
            .arg(HOUR)
            .arg("TOKEN")
            .arg(token)
            .query(&mut b)
            .unwrap();
        assert_eq!(again, None, "{k}: once");
    }
    // The queue moved with its event, under its group.
    let q = queue_of(&mut b, "{lm}:queued").expect("the queue on the new node");
    let ids: Vec<(String, Vec<String>)> = b.xrange_all(&q).unwrap();
    assert_eq!(
        ids.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [event.as_str()]
    );
    let groups: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&q)
        .query(&mut b)
        .unwrap();
    assert_eq!(groups.len(), 1);
}

//! `CACHE.TAGINVALIDATE` on a real cluster (three primaries, a replica each): one call on any
//! primary invalidates on all of them and their replicas and answers the cluster's total; a
//! primary that cannot answer (SIGSTOP) makes the call answer `-TIMEOUT` naming it within
//! `cache.tag-timeout-ms` + 100 ms, and it applies the invalidation once resumed.

mod support;

use std::time::{Duration, Instant};

use redis::cluster::ClusterConnection;
use redis::Connection;
use support::cluster::Cluster;
use support::commands::{counter, info_field};
use support::server::{wait_caught_up, wait_until, Server};

const HOUR: &str = "3600000";

fn tagset(cc: &mut ClusterConnection, key: &str, tags: &[&str]) {
    let _: u64 = redis::cmd("CACHE.TAGSET")
        .arg(key)
        .arg("v")
        .arg("PX")
        .arg(HOUR)
        .arg("TAGS")
        .arg(tags)
        .query(cc)
        .unwrap();
}

fn tagcount(c: &mut Connection, tag: &str) -> i64 {
    redis::cmd("CACHE.TAGCOUNT").arg(tag).query(c).unwrap()
}

/// Every replica has processed everything its primary sent. (WAIT would not do: it waits
/// for the writes of its own connection, and these came through the cluster client's.)
fn wait_replicas(cluster: &Cluster) {
    for r in replicas(cluster) {
        let mut rc = r.conn();
        let port = info_field(&mut rc, "replication", "master_port").expect("a replica");
        let primary = cluster
            .nodes
            .iter()
            .find(|n| n.port.to_string() == port)
            .expect("its primary");
        wait_caught_up(&mut primary.conn(), &mut rc);
    }
}

fn replicas(cluster: &Cluster) -> Vec<&Server> {
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    cluster
        .nodes
        .iter()
        .filter(|n| !primaries.contains(&n.port))
        .collect()
}

fn sum_counts(nodes: &[&Server], tag: &str) -> i64 {
    nodes.iter().map(|n| tagcount(&mut n.conn(), tag)).sum()
}

#[test]
fn one_call_invalidates_on_every_primary_and_replica() {
    let cluster = Cluster::start();
    let mut cc = cluster.client();
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let replicas = replicas(&cluster);
    for (o, origin) in primaries.iter().enumerate() {
        let tag = format!("wave:{o}");
        let keys: Vec<String> = (0..30).map(|i| format!("w{o}:{i}")).collect();
        for k in &keys {
            tagset(&mut cc, k, &[&tag, "other"]);
        }
        tagset(&mut cc, &format!("kept:{o}"), &["other"]);
        wait_replicas(&cluster);
        // The keys spread over every primary, so every primary has work to do.
        for p in &primaries {
            assert!(tagcount(&mut p.conn(), &tag) > 0, "{tag} on {}", p.port);
        }
        assert_eq!(sum_counts(&replicas, &tag), 30);
        let received_before: Vec<i64> = primaries
            .iter()
            .map(|p| counter(&mut p.conn(), "tag_invalidations_received"))
            .collect();

        let n: i64 = redis::cmd("CACHE.TAGINVALIDATE")
            .arg(&tag)
            .query(&mut origin.conn())
            .unwrap();
        assert_eq!(n, 30, "the cluster's total, from {}", origin.port);

        // From the reply on, no primary serves any of them.
        for k in &keys {
            let got: Option<String> = redis::cmd("CACHE.GET").arg(k).query(&mut cc).unwrap();
            assert_eq!(got, None, "{k}");
        }
        let kept: Option<String> = redis::cmd("CACHE.GET")
            .arg(format!("kept:{o}"))
            .query(&mut cc)
            .unwrap();
        assert_eq!(kept.as_deref(), Some("v"), "an entry without the tag stays");
        assert_eq!(sum_counts(&primaries, &tag), 0);
        // Each other primary applied it once; the origin was not sent its own.
        for (i, p) in primaries.iter().enumerate() {
            let received = counter(&mut p.conn(), "tag_invalidations_received");
            let expected = received_before[i] + i64::from(i != o);
            assert_eq!(received, expected, "invalidations received by {}", p.port);
        }
        assert_eq!(
            counter(&mut origin.conn(), "tag_invalidations_unconfirmed"),
            0
        );
        // Each primary took Nagle's algorithm off the bus links it opened (Redis leaves it
        // on, and a confirmation could wait for a delayed ACK).
        for p in &primaries {
            assert!(
                p.log().contains("TCP_NODELAY set on"),
                "no TCP_NODELAY on the links of {}",
                p.port
            );
        }
        // Each primary replicated what it applied.
        wait_replicas(&cluster);
        assert_eq!(sum_counts(&replicas, &tag), 0, "on the replicas too");
        for r in &replicas {
            let mut c = r.conn();
            let _: () = redis::cmd("READONLY").query(&mut c).unwrap();
            for k in &keys {
                match redis::cmd("CACHE.GET")
                    .arg(k)
                    .query::<Option<String>>(&mut c)
                {
                    Ok(got) => assert_eq!(got, None, "{k} on replica {}", r.port),
                    Err(e) => assert_eq!(e.kind(), redis::ErrorKind::Moved, "{e}"),
                }
            }
        }
    }
    // Inside MULTI nothing waits: the reply is this node's count, and the other primaries
    // are sent it all the same.
    let keys: Vec<String> = (0..30).map(|i| format!("m:{i}")).collect();
    for k in &keys {
        tagset(&mut cc, k, &["multi"]);
    }
    let here = tagcount(&mut primaries[0].conn(), "multi");
    let mut c = primaries[0].conn();
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("CACHE.TAGINVALIDATE")
        .arg("multi")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, here, "this node's count");
    assert!(wait_until(Duration::from_secs(10), || sum_counts(
        &primaries, "multi"
    ) == 0));
    assert!(wait_until(Duration::from_secs(10), || counter(
        &mut c,
        "tag_invalidations_unconfirmed"
    ) == 0));

    // A tag nobody carries: 0 from everyone, at once.
    let n: i64 = redis::cmd("CACHE.TAGINVALIDATE")
        .arg("nobody")
        .query(&mut primaries[1].conn())
        .unwrap();
    assert_eq!(n, 0);
}

/// Resumes a stopped server when dropped, so that a failing test still lets the cluster stop.
struct Resume<'a>(&'a Server);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.signal("CONT");
    }
}

#[test]
fn a_stopped_primary_times_out_then_catches_up() {
    let cluster = Cluster::start();
    let mut cc = cluster.client();
    let primaries = cluster.primaries();
    let (origin, victim) = (primaries[0], primaries[2]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("cache.tag-timeout-ms")
        .arg(500)
        .query(&mut origin.conn())
        .unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("f:{i}")).collect();
    for k in &keys {
        tagset(&mut cc, k, &["frozen"]);
    }
    let on_victim = tagcount(&mut victim.conn(), "frozen");
    assert!(on_victim > 0);
    let mut victim_conn = victim.conn();
    let mut origin_conn = origin.conn();

    victim.signal("STOP");
    let resume = Resume(victim);
    let started = Instant::now();
    let e = redis::cmd("CACHE.TAGINVALIDATE")
        .arg("frozen")
        .query::<i64>(&mut origin_conn)
        .unwrap_err();
    let took = started.elapsed();
    let text = e.to_string();
    assert!(text.starts_with("TIMEOUT"), "{text}");
    assert!(
        text.contains(&format!(":{})", victim.port)),
        "names the node: {text}"
    );
    assert!(text.contains("1 of the 2"), "{text}");
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_millis(600),
        "answered after {took:?}"
    );
    // The primaries that answered applied it.
    for p in &primaries[..2] {
        assert_eq!(tagcount(&mut p.conn(), "frozen"), 0, "on {}", p.port);
    }
    assert_eq!(counter(&mut origin_conn, "tag_invalidation_timeouts"), 1);
    assert_eq!(
        counter(&mut origin_conn, "tag_invalidations_unconfirmed"),
        1
    );

    drop(resume);
    // Once resumed, the resend reaches it: its count catches up, it serves none of them,
    // and the origin holds nothing unconfirmed.
    assert!(
        wait_until(Duration::from_secs(10), || tagcount(
            &mut victim_conn,
            "frozen"
        ) == 0),
        "the resumed primary applied the invalidation"
    );
    for k in &keys {
        let got: Option<String> = redis::cmd("CACHE.GET").arg(k).query(&mut cc).unwrap();
        assert_eq!(got, None, "{k}");
    }
    assert!(wait_until(Duration::from_secs(10), || counter(
        &mut origin_conn,
        "tag_invalidations_unconfirmed"
    ) == 0));
    assert_eq!(
        counter(&mut victim_conn, "tag_invalidations_received"),
        1,
        "applied once, however many resends it got"
    );
    assert_eq!(
        counter(&mut victim_conn, "tag_entries_invalidated"),
        on_victim
    );
}

/// The replica of `primary` in the cluster.
fn replica_of<'a>(cluster: &'a Cluster, primary: &Server) -> &'a Server {
    let id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut primary.conn())
        .unwrap();
    cluster
        .nodes
        .iter()
        .find(|n| {
            let info: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut n.conn())
                .unwrap();
            info.lines()
                .any(|l| l.contains("myself") && l.contains("slave") && l.contains(&id))
        })
        .expect("a replica")
}

#[test]
fn a_replica_promoted_in_place_of_a_silent_primary_is_sent_the_invalidation() {
    let cluster = Cluster::start();
    let mut cc = cluster.client();
    let primaries = cluster.primaries();
    let (origin, victim) = (primaries[0], primaries[1]);
    let heir = replica_of(&cluster, victim);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("cache.tag-timeout-ms")
        .arg(300)
        .query(&mut origin.conn())
        .unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("p:{i}")).collect();
    for k in &keys {
        tagset(&mut cc, k, &["gone"]);
    }
    wait_replicas(&cluster);
    let on_heir = tagcount(&mut heir.conn(), "gone");
    assert!(on_heir > 0);

    victim.signal("STOP");
    let resume = Resume(victim);
    let e = redis::cmd("CACHE.TAGINVALIDATE")
        .arg("gone")
        .query::<i64>(&mut origin.conn())
        .unwrap_err();
    assert!(e.to_string().starts_with("TIMEOUT"), "{e}");
    // The replica takes over without its stopped primary's consent.
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .arg("TAKEOVER")
        .query(&mut heir.conn())
        .unwrap();
    // The origin follows: the new primary is sent the invalidation and confirms it.
    let mut origin_conn = origin.conn();
    assert!(
        wait_until(Duration::from_secs(20), || counter(
            &mut origin_conn,
            "tag_invalidations_unconfirmed"
        ) == 0),
        "the promoted replica confirmed"
    );
    assert_eq!(tagcount(&mut heir.conn(), "gone"), 0);
    assert_eq!(counter(&mut heir.conn(), "tag_invalidations_received"), 1);
    // The old primary, resumed, learns it was replaced and follows the new one.
    drop(resume);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut victim.conn())
                .unwrap();
            info.contains("role:slave") && info.contains("master_link_status:up")
        }),
        "the old primary became a replica"
    );
    assert!(wait_until(Duration::from_secs(10), || tagcount(
        &mut victim.conn(),
        "gone"
    ) == 0));
    let mut cc = cluster.client();
    for k in &keys {
        let got: Option<String> = redis::cmd("CACHE.GET").arg(k).query(&mut cc).unwrap();
        assert_eq!(got, None, "{k}");
    }
}

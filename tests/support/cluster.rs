//! A real Redis Cluster for the tests: six server processes with the module (three primaries,
//! a replica each) on loopback, joined with `redis-cli --cluster create`, all stopped when the
//! `Cluster` is dropped (also when a test panics); resharding with `redis-cli --cluster
//! reshard`, killing a node and waiting for its replica to take over, a manual failover.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::Connection;

use super::server::{server_binary, wait_until, Server};

pub struct Cluster {
    /// The primaries first, then their replicas, as `--cluster create` was given them.
    pub nodes: Vec<Server>,
}

/// The CLI that creates the cluster: `valkey-cli` beside a valkey-server, else `redis-cli`.
fn cli() -> String {
    let server = server_binary();
    let dir = Path::new(&server).parent();
    match dir.map(|d| d.join("valkey-cli")) {
        Some(p) if p.exists() => p.display().to_string(),
        _ => "redis-cli".to_string(),
    }
}

impl Cluster {
    /// Three primaries with a replica each; returns once every node sees the cluster ok.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// As `start`, each server given the extra `--option value` arguments too (persistence,
    /// for a failover test).
    pub fn start_with(extra: &[&str]) -> Cluster {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "3000",
        ];
        args.extend_from_slice(extra);
        let nodes: Vec<Server> = (0..6).map(|_| Server::start_with(&args)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(cli())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (make deps installs redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        let ok = wait_until(Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let mut c = n.conn();
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
            }) && cluster.replicas_in_sync()
        });
        assert!(ok, "the cluster did not come up");
        cluster
    }

    /// The nodes that answer (all but those killed), with a connection to each.
    fn live(&self) -> Vec<(&Server, Connection)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let c = redis::Client::open(n.url())
                    .ok()?
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .ok()?;
                Some((n, c))
            })
            .collect()
    }

    /// Whether every live replica has its primary's link up.
    fn replicas_in_sync(&self) -> bool {
        self.live().into_iter().all(|(_, mut c)| {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
            !info.contains("role:slave") || info.contains("master_link_status:up")
        })
    }

    /// A cluster connection (the `redis` crate's client, following MOVED and ASK).
    pub fn client(&self) -> ClusterConnection {
        self.client_with(ClusterClient::builder(self.urls()))
    }

    /// A cluster connection that retries `TRYAGAIN` and redirections for as long as a
    /// reshard may need (40 tries, 5 to 200 ms apart, about 8 s in all), where the default
    /// waits more than a second before its first retry.
    pub fn patient_client(&self) -> ClusterConnection {
        self.client_with(
            ClusterClient::builder(self.urls())
                .retries(40)
                .min_retry_wait(5)
                .max_retry_wait(200),
        )
    }

    fn client_with(&self, builder: redis::cluster::ClusterClientBuilder) -> ClusterConnection {
        builder
            .build()
            .expect("cluster client")
            .get_connection()
            .expect("cluster connection")
    }

    fn urls(&self) -> Vec<String> {
        self.live().iter().map(|(n, _)| n.url()).collect()
    }

    /// The live nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&Server> {
        self.live()
            .into_iter()
            .filter_map(|(n, mut c)| (role(&mut c) == "master").then_some(n))
            .collect()
    }

    /// The index in `nodes` of the replica of the primary `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let want = format!("master_port:{}", self.nodes[primary].port);
        let port = self
            .live()
            .into_iter()
            .find_map(|(n, mut c)| {
                let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
                info.lines().any(|l| l.trim() == want).then_some(n.port)
            })
            .unwrap_or_else(|| panic!("no replica of node {primary}"));
        self.nodes.iter().position(|n| n.port == port).unwrap()
    }

    /// kill -9 of node `i` (it stays dead; `live` and `primaries` leave it out).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Waits until node `i` is a primary and every live node sees the cluster ok (the
    /// failover of a killed primary: node timeout, election, new config everywhere).
    pub fn wait_promoted(&self, i: usize, timeout: Duration) {
        let ok = wait_until(timeout, || {
            let mut c = self.nodes[i].conn();
            role(&mut c) == "master" && self.all_ok()
        });
        assert!(
            ok,
            "node {i} was not promoted in {timeout:?}:\n{}",
            self.nodes[i].log()
        );
    }

    /// A manual failover: `CLUSTER FAILOVER` sent to the replica of primary node `primary`
    /// (the primary pauses its clients until the replica has caught up, then the replica
    /// takes its slots over and the old primary becomes its replica). Waits until both have
    /// their new roles, every replica's link is up and every live node agrees on the slots.
    /// Returns the index of the new primary and how long it took.
    pub fn failover(&self, primary: usize) -> (usize, Duration) {
        let r = self.replica_of(primary);
        let start = Instant::now();
        let mut c = self.nodes[r].conn();
        let reply: redis::RedisResult<()> = redis::cmd("CLUSTER").arg("FAILOVER").query(&mut c);
        if let Err(e) = reply {
            panic!("CLUSTER FAILOVER on node {r}: {e}");
        }
        let done = wait_until(Duration::from_secs(30), || {
            role(&mut self.nodes[r].conn()) == "master"
                && role(&mut self.nodes[primary].conn()) == "slave"
                && self.replicas_in_sync()
                && self.agree()
        });
        assert!(
            done,
            "node {r} did not take over from node {primary}:\n{}",
            self.nodes[r].log()
        );
        (r, start.elapsed())
    }

    /// Whether every live node says `cluster_state:ok`.
    pub fn all_ok(&self) -> bool {
        self.live().into_iter().all(|(_, mut c)| {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut c)
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Moves `slots` slots from primary `from` to primary `to` with the CLI's `--cluster
    /// reshard` (the keys a batch at a time with `MIGRATE`), then waits until every live node
    /// agrees on the new owners. Returns how long the CLI ran.
    pub fn reshard(&self, from: &Server, to: &Server, slots: usize) -> Duration {
        let (from_id, to_id) = (node_id(from), node_id(to));
        let start = Instant::now();
        let out = Command::new(cli())
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", from.port)])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli");
        let took = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The CLI exits 0 after some failures it only prints ("[ERR] ..."), so both count.
        assert!(
            out.status.success() && !stdout.contains("[ERR]"),
            "reshard failed:\n{}\n{}",
            tail(&stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let agreed = wait_until(Duration::from_secs(30), || self.agree());
        assert!(
            agreed,
            "the nodes do not agree on the slots after the reshard"
        );
        took
    }

    /// Whether every live node gives the same slot owners in `CLUSTER SLOTS` and is ok.
    fn agree(&self) -> bool {
        let views: Vec<Vec<(i64, i64, i64)>> = self
            .live()
            .into_iter()
            .map(|(_, mut c)| slot_owners(&mut c))
            .collect();
        views.windows(2).all(|w| w[0] == w[1]) && self.all_ok()
    }

    /// For every slot, the port of the primary that serves it (as a live node sees it; -1
    /// for a slot nobody serves).
    pub fn slot_map(&self) -> Vec<i64> {
        let mut any = self.live().into_iter().next().expect("a live node").1;
        let mut map = vec![-1; 16384];
        for (lo, hi, port) in slot_owners(&mut any) {
            map[lo as usize..=hi as usize].fill(port);
        }
        map
    }

    /// The primary that serves `key`'s slot.
    pub fn owner_of(&self, key: &str) -> &Server {
        let mut any = self.live().into_iter().next().expect("a live node").1;
        self.owner_of_slot(key_slot(&mut any, key))
    }

    /// The primary that serves `slot`.
    pub fn owner_of_slot(&self, slot: i64) -> &Server {
        for n in self.primaries() {
            if serves(&mut n.conn(), slot) {
                return n;
            }
        }
        panic!("no primary serves slot {slot}");
    }
}

/// The last lines of a long CLI output, for a failure message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `role:` of `INFO replication`: "master" or "slave".
fn role(c: &mut Connection) -> String {
    let info: String = redis::cmd("INFO").arg("replication").query(c).unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("role:"))
        .unwrap_or("")
        .to_string()
}

/// `CLUSTER KEYSLOT key`, asked of `c`'s node.
pub fn key_slot(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(c)
        .unwrap()
}

/// The node's cluster id (`CLUSTER MYID`).
pub fn node_id(n: &Server) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut n.conn())
        .unwrap()
}

/// `CLUSTER SLOTS` as (first, last, primary port), sorted.
fn slot_owners(c: &mut Connection) -> Vec<(i64, i64, i64)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(c).unwrap();
    let mut owners: Vec<(i64, i64, i64)> = slots.iter().filter_map(range_owner).collect();
    owners.sort();
    owners
}

/// One range of `CLUSTER SLOTS`: (first, last, primary port).
fn range_owner(range: &redis::Value) -> Option<(i64, i64, i64)> {
    let redis::Value::Array(parts) = range else {
        return None;
    };
    let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi))) = (parts.first(), parts.get(1))
    else {
        return None;
    };
    let port = match parts.get(2) {
        Some(redis::Value::Array(node)) => match node.get(1) {
            Some(redis::Value::Int(p)) => *p,
            _ => -1,
        },
        _ => -1,
    };
    Some((*lo, *hi, port))
}

/// Whether the node of `c` serves `slot` (from `CLUSTER SLOTS` and its own port).
fn serves(c: &mut Connection, slot: i64) -> bool {
    let port: i64 = {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("port")
            .query(c)
            .unwrap();
        v[1].parse().unwrap()
    };
    slot_owners(c)
        .into_iter()
        .any(|(lo, hi, p)| lo <= slot && slot <= hi && p == port)
}

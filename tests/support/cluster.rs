//! A real Redis Cluster for the tests: six server processes with the module (three primaries,
//! a replica each) on loopback, joined with `redis-cli --cluster create`, all stopped when the
//! `Cluster` is dropped (also when a test panics).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
        let nodes: Vec<Server> = (0..6)
            .map(|_| {
                Server::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "3000",
                ])
            })
            .collect();
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

    /// Whether every replica has its primary's link up.
    fn replicas_in_sync(&self) -> bool {
        self.nodes.iter().all(|n| {
            let mut c = n.conn();
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
            !info.contains("role:slave") || info.contains("master_link_status:up")
        })
    }

    /// A cluster connection (the `redis` crate's client, following MOVED and ASK).
    pub fn client(&self) -> ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        ClusterClient::new(urls)
            .expect("cluster client")
            .get_connection()
            .expect("cluster connection")
    }

    /// The nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&Server> {
        self.nodes
            .iter()
            .filter(|n| {
                let mut c = n.conn();
                let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
                info.contains("role:master")
            })
            .collect()
    }

    /// The primary that serves `key`'s slot.
    pub fn owner_of(&self, key: &str) -> &Server {
        let mut any = self.nodes[0].conn();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut any)
            .unwrap();
        for n in self.primaries() {
            if serves(&mut n.conn(), slot) {
                return n;
            }
        }
        panic!("no primary serves slot {slot}");
    }
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
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(c).unwrap();
    slots.iter().any(|range| {
        let redis::Value::Array(parts) = range else {
            return false;
        };
        let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi))) =
            (parts.first(), parts.get(1))
        else {
            return false;
        };
        let primary_port = match parts.get(2) {
            Some(redis::Value::Array(node)) => match node.get(1) {
                Some(redis::Value::Int(p)) => *p,
                _ => -1,
            },
            _ => -1,
        };
        *lo <= slot && slot <= *hi && primary_port == port
    })
}

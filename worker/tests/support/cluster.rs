//! A real Redis Cluster for the worker's tests, as the module's tests/support/cluster.rs
//! makes one: six redis-server processes with the module (three primaries, a replica each) on
//! free loopback ports, joined with `redis-cli --cluster create`, all killed when the
//! `Cluster` is dropped (a failing test included); and what the tests ask of it.

use super::{pending_of, wait_until, xlen, Redis};
use redis::cluster::{ClusterClientBuilder, ClusterConnection};
use std::process::Command;
use std::time::Duration;

pub struct Cluster {
    /// The primaries first, then their replicas, as `--cluster create` was given them.
    pub nodes: Vec<Redis>,
}

/// `redis-cli` with these arguments; it must succeed. Returns its output.
pub fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli (make deps installs redis-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "redis-cli {args:?}:\n{text}");
    text
}

fn cluster_info(node: &Redis) -> Option<String> {
    let mut con = redis::Client::open(node.url())
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    redis::cmd("CLUSTER").arg("INFO").query(&mut con).ok()
}

impl Cluster {
    /// Six nodes, `appendonly` with `appendfsync always` when `durable`; returns once every
    /// node sees all six and the cluster ok, and every replica is in sync.
    pub fn start(durable: bool) -> Cluster {
        let nodes: Vec<Redis> = (0..6)
            .map(|_| Redis::cluster_node(durable, "always"))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        redis_cli(&args);
        let cluster = Cluster { nodes };
        cluster.wait_ok(Duration::from_secs(30));
        wait_until(Duration::from_secs(30), "replicas in sync", || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut n.con())
                    .unwrap();
                !info.contains("role:slave") || info.contains("master_link_status:up")
            })
        });
        cluster
    }

    /// Waits until every running node sees the cluster ok and knows every slot's owner.
    pub fn wait_ok(&self, limit: Duration) {
        wait_until(limit, "cluster_state:ok on every running node", || {
            self.nodes.iter().filter(|n| n.running()).all(|n| {
                cluster_info(n).is_some_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                })
            })
        });
    }

    /// A cluster connection (the `redis` crate's client: it follows MOVED and ASK, retries
    /// TRYAGAIN), started from the running nodes.
    pub fn client(&self) -> ClusterConnection {
        self.connector()().expect("cluster connection")
    }

    /// Makes cluster connections from the nodes running now: after a failover, a fresh one
    /// finds the promoted replica whatever the old one still believes.
    pub fn connector(&self) -> impl Fn() -> redis::RedisResult<ClusterConnection> + Send {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(Redis::url)
            .collect();
        move || {
            ClusterClientBuilder::new(urls.clone())
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(5))
                .retries(3)
                .build()?
                .get_connection()
        }
    }

    /// The indices of the running nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].running() && {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut self.nodes[i].con())
                        .unwrap();
                    info.contains("role:master")
                }
            })
            .collect()
    }

    /// `CLUSTER MYID` of node `i`.
    pub fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[i].con())
            .unwrap()
    }

    /// The index of the replica of primary `i`.
    pub fn replica_of(&self, i: usize) -> usize {
        let id = self.id(i);
        (0..self.nodes.len())
            .find(|&r| {
                r != i && self.nodes[r].running() && {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut self.nodes[r].con())
                        .unwrap();
                    let port = format!("master_port:{}", self.nodes[i].port);
                    info.contains("role:slave") && info.contains(&port)
                }
            })
            .unwrap_or_else(|| panic!("no replica of node {i} ({id})"))
    }

    /// The write-behind queues each running primary lists (`CACHE.WBQUEUES`), by node index.
    pub fn queues(&self) -> Vec<(usize, Vec<String>)> {
        self.primaries()
            .into_iter()
            .map(|i| {
                let names: Vec<String> = redis::cmd("CACHE.WBQUEUES")
                    .query(&mut self.nodes[i].con())
                    .unwrap();
                (i, names)
            })
            .collect()
    }

    /// Entries not yet stored (`XLEN`: stored ones are deleted) and entries delivered but not
    /// acknowledged (`XPENDING`), summed over every queue of every running primary.
    pub fn backlog(&self) -> (u64, u64) {
        let mut total = (0, 0);
        for (i, names) in self.queues() {
            let mut con = self.nodes[i].con();
            for q in names {
                total.0 += xlen(&mut con, &q);
                total.1 += pending_of(&mut con, &q);
            }
        }
        total
    }

    /// `redis-cli --cluster reshard`: `slots` slots from primary `from` to primary `to`.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) -> String {
        let (from, to) = (self.id(from), self.id(to));
        let any = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a node runs");
        let at = format!("127.0.0.1:{}", any.port);
        // `reshard` refuses to start while the nodes' views of the slots still differ (gossip
        // settles within moments of a change, slower under load).
        wait_until(
            Duration::from_secs(20),
            "the nodes to agree on the slots",
            || {
                let out = Command::new("redis-cli")
                    .args(["--cluster", "check", &at])
                    .output()
                    .expect("redis-cli");
                let text = String::from_utf8_lossy(&out.stdout);
                text.contains("[OK] All nodes agree about slots configuration.")
                    && text.contains("[OK] All 16384 slots covered.")
                    && !text.contains("[WARNING]")
            },
        );
        let slots = slots.to_string();
        redis_cli(&[
            "--cluster",
            "reshard",
            &at,
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
        ])
    }
}

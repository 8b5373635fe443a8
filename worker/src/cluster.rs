//! Where a queue is. Standalone, a queue is on the server it was found on. In a Redis Cluster
//! it is on the primary serving its name's hash slot, which changes with a failover (a replica
//! takes over) and with resharding (the slot moves, and `MIGRATE` takes the stream with it,
//! consumer group and pending entries included). Each queue's drain loop connects through a
//! `Route`, which the main thread points at the slot's owner after every look at the topology
//! (`CLUSTER SLOTS`), and which a `MOVED` reply points at the new owner at once.

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::stream::RedisResult;

/// A server to connect to, and the name it is logged under.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub info: ConnectionInfo,
}

impl Node {
    /// A server given on the command line, named by its URL.
    pub fn from_url(url: &str) -> RedisResult<Node> {
        Ok(Node {
            name: url.to_string(),
            info: url.into_connection_info()?,
        })
    }

    /// The node at `host:port` with this node's credentials and TLS settings: the addresses a
    /// cluster hands out (`CLUSTER SLOTS`, `MOVED`) are bare.
    pub fn at(&self, host: &str, port: u16) -> Node {
        let mut info = self.info.clone();
        info.addr = match &self.info.addr {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        Node {
            name: format!("{host}:{port}"),
            info,
        }
    }

    /// The host this node is reached at (`None` for a Unix socket).
    pub fn host(&self) -> Option<&str> {
        match &self.info.addr {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => Some(host),
            ConnectionAddr::Unix(_) => None,
        }
    }

    /// `host:port`, what a cluster calls a node by.
    pub fn addr(&self) -> Option<String> {
        match &self.info.addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some(format!("{host}:{port}"))
            }
            ConnectionAddr::Unix(_) => None,
        }
    }
}

/// The hash slot of a queue's name (its `{tag}`), which says which primary holds it.
pub fn slot_of(queue: &str) -> u16 {
    redis::cluster_routing::get_slot(queue.as_bytes())
}

/// A range of slots and the primary serving it, as `CLUSTER SLOTS` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub host: String,
    pub port: u16,
}

/// Which primary serves which slots, as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    pub ranges: Vec<SlotRange>,
}

impl Topology {
    /// The primaries, each once, as `(host, port)`, sorted.
    pub fn primaries(&self) -> Vec<(String, u16)> {
        let mut all: Vec<(String, u16)> = self
            .ranges
            .iter()
            .map(|r| (r.host.clone(), r.port))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The primary serving `slot`; `None` while no node does (a failover not yet done).
    pub fn owner(&self, slot: u16) -> Option<(&str, u16)> {
        self.ranges
            .iter()
            .find(|r| r.first <= slot && slot <= r.last)
            .map(|r| (r.host.as_str(), r.port))
    }
}

fn protocol(what: &str) -> RedisError {
    RedisError::from((
        ErrorKind::TypeError,
        "unexpected CLUSTER SLOTS reply",
        what.to_string(),
    ))
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// `CLUSTER SLOTS`'s reply: `[[first, last, [host, port, id, ...], replicas...], ...]`. A
/// host that is empty or `?` (the node does not know its own address) is `asked_host`, the
/// host of the node that answered.
pub fn parse_slots(v: &Value, asked_host: &str) -> RedisResult<Topology> {
    let Value::Array(ranges) = v else {
        return Err(protocol("not an array"));
    };
    let mut topology = Topology::default();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(protocol("a range is not an array"));
        };
        let (Some(first), Some(last), Some(Value::Array(primary))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(protocol("a range without its primary"));
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(protocol("a primary without a host")),
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.to_string()
        } else {
            host
        };
        let slot = |v: &Value| int(v).and_then(|i| u16::try_from(i).ok());
        let (Some(first), Some(last), Some(port)) = (
            slot(first),
            slot(last),
            primary
                .get(1)
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok()),
        ) else {
            return Err(protocol("a slot or port is not a number"));
        };
        topology.ranges.push(SlotRange {
            first,
            last,
            host,
            port,
        });
    }
    Ok(topology)
}

/// Asks the node of `con` (reached at `asked_host`) for the cluster's slots.
pub fn topology(con: &mut redis::Connection, asked_host: &str) -> RedisResult<Topology> {
    let v: Value = redis::cmd("CLUSTER").arg("SLOTS").query(con)?;
    parse_slots(&v, asked_host)
}

/// Where one queue's drain loop connects. Changes bump a generation, so a loop waiting to
/// retry can stop waiting when its queue has moved.
pub struct Route {
    node: Mutex<Node>,
    generation: AtomicU64,
    /// Cluster mode: raised to have the main thread look at the topology again.
    refresh: Option<Arc<AtomicBool>>,
}

impl Route {
    /// A queue that stays on the server it was found on.
    pub fn fixed(node: Node) -> Route {
        Route {
            node: Mutex::new(node),
            generation: AtomicU64::new(0),
            refresh: None,
        }
    }

    /// A queue of a cluster, which follows its slot; `refresh` is the main thread's flag.
    pub fn following(node: Node, refresh: Arc<AtomicBool>) -> Route {
        Route {
            refresh: Some(refresh),
            ..Route::fixed(node)
        }
    }

    pub fn node(&self) -> Node {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Node> {
        // A panic elsewhere while holding it cannot leave a Node half written: assignment is
        // the only change, so the value is usable even if the lock is poisoned.
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Points the route at `to`; true when that is another node than before.
    pub fn set(&self, to: &Node) -> bool {
        let mut node = self.lock();
        if node.name == to.name {
            return false;
        }
        *node = to.clone();
        self.generation.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// A session on this route failed with `e`. In a cluster, `MOVED` names the slot's new
    /// owner, and the route goes there at once (true); any error may be the topology's (a dead
    /// primary, a demoted one answering `READONLY` or redirecting, `CLUSTERDOWN`, `ASK` while
    /// the slot migrates), so the main thread is asked to look again either way.
    pub fn failed(&self, e: &RedisError) -> bool {
        let Some(refresh) = &self.refresh else {
            return false;
        };
        refresh.store(true, Ordering::SeqCst);
        if e.kind() != ErrorKind::Moved {
            return false;
        }
        let Some((addr, _slot)) = e.redirect_node() else {
            return false;
        };
        let Some((host, port)) = addr.rsplit_once(':') else {
            return false;
        };
        let Ok(port) = port.parse::<u16>() else {
            return false;
        };
        let current = self.node();
        let host = if host.is_empty() {
            current.host().unwrap_or("127.0.0.1").to_string()
        } else {
            host.to_string()
        };
        self.set(&current.at(&host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn range(first: i64, last: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk("10.0.0.9"), Value::Int(7005), bulk("replica")]),
        ])
    }

    #[test]
    fn slots_owners_and_primaries() {
        let reply = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "", 7001),
            range(10923, 16000, "10.0.0.1", 7000),
        ]);
        let t = parse_slots(&reply, "10.0.0.2").unwrap();
        assert_eq!(t.owner(0), Some(("10.0.0.1", 7000)));
        assert_eq!(t.owner(5461), Some(("10.0.0.2", 7001)));
        assert_eq!(t.owner(16000), Some(("10.0.0.1", 7000)));
        assert_eq!(t.owner(16001), None, "an uncovered slot has no owner");
        assert_eq!(
            t.primaries(),
            vec![("10.0.0.1".into(), 7000), ("10.0.0.2".into(), 7001)]
        );
    }

    #[test]
    fn malformed_slots_are_errors_not_panics() {
        for bad in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
            Value::Array(vec![range(0, 70_000, "h", 1)]),
            Value::Array(vec![range(0, 1, "h", -1)]),
        ] {
            assert!(parse_slots(&bad, "h").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queue_slots_follow_the_hash_tag() {
        // The module names the queue of `user:1` `cache:wb:{3759}` (docs/commands.md): only
        // the tag counts. `foo` is 12182 in the CLUSTER KEYSLOT documentation.
        assert_eq!(slot_of("cache:wb:{3759}"), slot_of("user:1"));
        assert_eq!(slot_of("cache:wb:{foo}"), 12182);
    }

    #[test]
    fn a_node_elsewhere_keeps_the_credentials() {
        let seed = Node::from_url("redis://app:secret@10.0.0.1:7000/0").unwrap();
        let other = seed.at("10.0.0.2", 7001);
        assert_eq!(other.name, "10.0.0.2:7001");
        assert_eq!(other.addr().as_deref(), Some("10.0.0.2:7001"));
        assert_eq!(other.info.redis.password.as_deref(), Some("secret"));
        assert_eq!(other.info.redis.username.as_deref(), Some("app"));
    }

    fn moved(detail: &str) -> RedisError {
        RedisError::from((
            ErrorKind::Moved,
            "An error was signalled by the server",
            detail.into(),
        ))
    }

    #[test]
    fn moved_points_a_cluster_route_at_the_new_owner() {
        let flag = Arc::new(AtomicBool::new(false));
        let route = Route::following(
            Node::from_url("redis://10.0.0.1:7000").unwrap(),
            Arc::clone(&flag),
        );
        let before = route.generation();
        assert!(route.failed(&moved("3999 10.0.0.3:7002")));
        assert_eq!(route.node().name, "10.0.0.3:7002");
        assert!(route.generation() > before);
        assert!(
            flag.load(Ordering::SeqCst),
            "the topology is looked at again"
        );
        // The same redirect again is no change.
        assert!(!route.failed(&moved("3999 10.0.0.3:7002")));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        flag.store(false, Ordering::SeqCst);
        assert!(!route.failed(&io));
        assert!(flag.load(Ordering::SeqCst));

        let fixed = Route::fixed(Node::from_url("redis://10.0.0.1:7000").unwrap());
        assert!(!fixed.failed(&moved("3999 10.0.0.3:7002")));
        assert_eq!(fixed.node().name, "redis://10.0.0.1:7000");
    }
}

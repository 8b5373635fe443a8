//! What the module reads of `CLUSTER NODES`: which primaries a cluster-wide invalidation waits
//! for, and the other nodes' cluster bus ports.
//!
//! Every primary but this node, with one exception: a primary that is failed and serves no
//! slot. That is one whose replica took its place; it holds nothing anybody reads, and when it
//! comes back it becomes a replica of its successor and copies its data, invalidation
//! included. A failed primary that still serves slots is waited for: it was not replaced, and
//! back, it would serve its entries again.
//!
//! Each line of `CLUSTER NODES` is
//! `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...`.

/// The ids of the primaries to wait for, from the text of `CLUSTER NODES` on this node.
pub fn primaries_to_wait_for(nodes: &str) -> Vec<Vec<u8>> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, flags) = (fields.first()?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let has = |f: &str| flags.contains(&f);
            let serves_slots = fields.len() > 8;
            let replaced = has("fail") && !serves_slots;
            (has("master") && !has("myself") && !has("noaddr") && !has("handshake") && !replaced)
                .then(|| id.as_bytes().to_vec())
        })
        .collect()
}

/// The cluster bus ports of the other nodes (the `@cport` of their address).
pub fn bus_ports(nodes: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(2)?.split(',').any(|f| f == "myself") {
                return None;
            }
            let addr = fields.get(1)?.split(',').next()?;
            addr.split_once('@')?.1.parse().ok().filter(|p| *p != 0)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_every_other_primary_but_a_replaced_one() {
        let nodes = "\
aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
bbb 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
ccc 127.0.0.1:7002@17002 master,fail - 1 1 3 disconnected
ddd 127.0.0.1:7003@17003 master - 0 1 7 connected 10923-16383
eee 127.0.0.1:7004@17004 slave bbb 0 1 2 connected
fff 127.0.0.1:7005@17005 master,fail - 1 1 4 disconnected 100 [101->-bbb]
ggg 127.0.0.1:7006@17006 master - 0 1 8 connected
hhh :0@0 master,noaddr - 1 1 9 disconnected
";
        let got: Vec<String> = primaries_to_wait_for(nodes)
            .into_iter()
            .map(|id| String::from_utf8(id).unwrap())
            .collect();
        // Not: myself, the replica, the failed primary without slots, the one without address.
        // Yes: the failed one that still serves a slot, and an empty primary (it confirms 0).
        assert_eq!(got, ["bbb", "ddd", "fff", "ggg"]);
        assert!(primaries_to_wait_for("").is_empty());
        assert!(primaries_to_wait_for("garbage\n\n x y\n").is_empty());
    }

    #[test]
    fn bus_ports_of_the_other_nodes() {
        let nodes = "\
aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
bbb 127.0.0.1:7001@17001,host-b master - 0 1 2 connected 5461-10922
ccc 127.0.0.1:7002@17001 slave bbb 0 1 2 connected
ddd :0@0 master,noaddr - 1 1 9 disconnected
eee 10.0.0.5:6379@x master - 0 1 2 connected
";
        assert_eq!(bus_ports(nodes), [17001]);
        assert!(bus_ports("").is_empty());
    }
}

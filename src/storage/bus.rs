//! The cluster bus, through the raw module API (redis-module 2.0.8 has no safe wrapper): this
//! node's id, the other primaries (from `CLUSTER NODES`), a node's address for messages to
//! people, and sending.
//!
//! Node ids are 40 bytes. Redis hands them out without a terminating NUL, but looks them up
//! with `strlen` (`RM_GetClusterNodeInfo`, `RM_SendClusterMessage` in 7.0), so every id given
//! back to Redis goes through `NodeId::c_str`, which adds one.

use std::os::raw::{c_char, c_int};

use redis_module::{raw, Context, ContextFlags, RedisValue};

use super::scan;
use crate::core::topology;

/// The length of a cluster node id.
pub const NODE_ID_LEN: usize = 40;

/// The one message type the module sends; the payload says what it is (`core::spread`).
pub const MESSAGE_TYPE: u8 = 0x43;

/// A cluster node's id, with the NUL Redis's lookups need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeId([u8; NODE_ID_LEN + 1]);

impl NodeId {
    /// The id in the first 40 bytes of `bytes`; `None` if they are fewer.
    pub fn from_bytes(bytes: &[u8]) -> Option<NodeId> {
        let mut id = [0u8; NODE_ID_LEN + 1];
        id[..NODE_ID_LEN].copy_from_slice(bytes.get(..NODE_ID_LEN)?);
        Some(NodeId(id))
    }

    /// # Safety
    /// `p` must point to at least `NODE_ID_LEN` readable bytes.
    unsafe fn from_ptr(p: *const c_char) -> NodeId {
        // SAFETY: the caller's promise.
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), NODE_ID_LEN) };
        let mut id = [0u8; NODE_ID_LEN + 1];
        id[..NODE_ID_LEN].copy_from_slice(bytes);
        NodeId(id)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0[..NODE_ID_LEN]
    }

    fn c_str(&self) -> *const c_char {
        self.0.as_ptr().cast::<c_char>()
    }
}

/// Whether the server runs in cluster mode.
pub fn in_cluster(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::CLUSTER)
}

/// This node's id, in cluster mode.
pub fn my_id() -> Option<NodeId> {
    // SAFETY: a plain query; in cluster mode it points at the node's 40-byte name, else it
    // is null.
    let p = unsafe { raw::RedisModule_GetMyClusterID.map(|f| f())? };
    // SAFETY: non-null: the 40 bytes of this node's name.
    (!p.is_null()).then(|| unsafe { NodeId::from_ptr(p) })
}

/// What the cluster says of a node: its address and port.
struct NodeInfo {
    ip: String,
    port: c_int,
}

fn info(ctx: &Context, id: &NodeId) -> Option<NodeInfo> {
    // One byte more than Redis copies (NET_IP_STR_LEN = 46, with strncpy: maybe no NUL).
    let mut ip = [0u8; 47];
    let mut port: c_int = 0;
    // SAFETY: a NUL-terminated id; `ip` holds the 46 bytes Redis writes at most; the master id
    // and the flags are not asked for (null).
    let ok = unsafe {
        raw::RedisModule_GetClusterNodeInfo.unwrap()(
            ctx.ctx,
            id.c_str(),
            ip.as_mut_ptr().cast::<c_char>(),
            std::ptr::null_mut(),
            &mut port,
            std::ptr::null_mut(),
        )
    } == raw::REDISMODULE_OK as c_int;
    let len = ip.iter().position(|b| *b == 0).unwrap_or(ip.len());
    ok.then(|| NodeInfo {
        ip: String::from_utf8_lossy(&ip[..len]).into_owned(),
        port,
    })
}

/// The primaries of the cluster other than this node that an invalidation waits for
/// (`core::topology`), as this node sees them now.
pub fn other_primaries(ctx: &Context) -> Vec<NodeId> {
    // `CLUSTER NODES` rather than RM_GetClusterNodesList + RM_GetClusterNodeInfo: only it
    // tells which primaries still serve slots (a failed one that was replaced does not).
    let Some(text) = cluster_nodes(ctx) else {
        return Vec::new();
    };
    topology::primaries_to_wait_for(&text)
        .iter()
        .filter_map(|id| NodeId::from_bytes(id))
        .collect()
}

/// The text of `CLUSTER NODES` on this node.
pub fn cluster_nodes(ctx: &Context) -> Option<String> {
    let text = match ctx.call("CLUSTER", &["NODES"][..]).ok()? {
        RedisValue::BulkString(s) => s.into_bytes(),
        RedisValue::BulkRedisString(s) => s.as_slice().to_vec(),
        other => scan::bytes_of(&other)?,
    };
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// A node as an operator would name it: `<id> (<ip>:<port>)`.
pub fn label(ctx: &Context, id: &NodeId) -> String {
    let name = String::from_utf8_lossy(id.bytes()).into_owned();
    match info(ctx, id) {
        Some(i) => format!("{name} ({}:{})", i.ip, i.port),
        None => name,
    }
}

/// Sends `payload` to node `to`; false if it could not be handed to its link (unknown node,
/// link down), in which case the caller's resend tries again.
pub fn send(ctx: &Context, to: &NodeId, payload: &[u8]) -> bool {
    let Ok(len) = u32::try_from(payload.len()) else {
        return false;
    };
    // SAFETY: a live context, a NUL-terminated id, and `len` readable bytes.
    unsafe {
        raw::RedisModule_SendClusterMessage.unwrap()(
            ctx.ctx,
            to.c_str(),
            MESSAGE_TYPE,
            payload.as_ptr().cast::<c_char>(),
            len,
        ) == raw::REDISMODULE_OK as c_int
    }
}

/// The receiver's signature, as `RedisModuleClusterMessageReceiver`.
pub type Receiver =
    unsafe extern "C" fn(*mut raw::RedisModuleCtx, *const c_char, u8, *const u8, u32);

/// Registers `receiver` for the module's messages; a no-op outside cluster mode.
pub fn listen(ctx: &Context, receiver: Receiver) {
    // SAFETY: a live context at load time; the callback has Redis's signature.
    unsafe {
        raw::RedisModule_RegisterClusterMessageReceiver.unwrap()(
            ctx.ctx,
            MESSAGE_TYPE,
            Some(receiver),
        )
    };
}

/// The sender of a received message.
///
/// # Safety
/// `sender` must be the id pointer Redis passed to the receiver.
pub unsafe fn sender(sender: *const c_char) -> NodeId {
    // SAFETY: Redis passes the sender's 40-byte name.
    unsafe { NodeId::from_ptr(sender) }
}

/// Turns Nagle's algorithm off on this server's connections to the other nodes' cluster bus
/// ports; how many it changed.
///
/// Redis 7.0 to 7.4 and Valkey 8.1 set `TCP_NODELAY` on the cluster bus connections they
/// accept, not on those they open, and a node sends on the ones it opened. The peer answers on
/// its own connection, so what a node sends is acknowledged only by the peer's delayed ACK:
/// a message that follows the cluster's own ping on a link within that window waits for it,
/// about 30-40 ms on Linux. Measured: 3 to 6 % of cluster-wide invalidations took that long,
/// against 0.3 ms for the others. The sockets are the server's own, in this process; the
/// option changes nothing but when small writes leave.
///
/// It walks the process's descriptors (`/proc/self/fd`), a few microseconds each, so callers
/// run it rarely (`wrapper::spread`). Elsewhere than Linux it does nothing.
pub fn no_delay_on_bus_links(ctx: &Context) -> usize {
    let Some(nodes) = cluster_nodes(ctx) else {
        return 0;
    };
    let ports = topology::bus_ports(&nodes);
    if ports.is_empty() || !cfg!(target_os = "linux") {
        return 0;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut changed = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Only sockets: the descriptor's link reads `socket:[inode]`.
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
        if is_socket && set_no_delay_if_bus(fd, &ports) {
            changed += 1;
        }
    }
    changed
}

/// Sets `TCP_NODELAY` on the socket `fd` if it is connected to one of `ports` and does not
/// have it yet.
fn set_no_delay_if_bus(fd: i32, ports: &[u16]) -> bool {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `fd` is an open socket of this process (just listed); the TcpStream only borrows
    // it: `into_raw_fd` below gives it back without closing it, and nothing in between can
    // panic past it (every call returns a Result). Redis's other threads do not close cluster
    // bus sockets; were `fd` closed and reused meanwhile, the calls fail or touch a socket the
    // server owns, where TCP_NODELAY is harmless.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let bus = stream.peer_addr().is_ok_and(|a| ports.contains(&a.port()));
    let changed = bus && stream.nodelay().is_ok_and(|on| !on) && stream.set_nodelay(true).is_ok();
    let _ = stream.into_raw_fd();
    changed
}

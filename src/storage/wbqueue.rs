//! The write-behind queue: a Redis Stream (`cache.wb-queue`, in the database of the command)
//! whose consumer group (`cache.wb-group`) the worker reads. Events are appended with `XADD`
//! through `RedisModule_Call`, replicated as the command Redis rewrote (with its stream id), in
//! the same `MULTI` as the entry's own effect, so a replica or the AOF holds both or neither.
//!
//! Everything that could make the append fail is checked first, while nothing is written yet
//! (`check`): the caller's ACL on the queue key (not in argv, so Redis does not check it),
//! an eviction policy that could drop the queue, memory, the queue's length and type.

use redis_module::{raw, CallOptionsBuilder, CallResult, Context};
use redis_module::{RedisString, RedisValue};

use super::arg::Arg;
use super::server::{self, origin, Origin};
use super::{bus, queues, scan};
use crate::config;
use crate::core::slots;
use crate::error::CacheError;
use crate::stats;

/// The queue a command appends to: its name, checked and ready.
pub struct Queue {
    name: Vec<u8>,
    /// The name as a Redis string, made once for the checks and the append.
    key: *mut raw::RedisModuleString,
    ctx: *mut raw::RedisModuleCtx,
    /// Whether the stream exists (else `append` creates it with its group).
    exists: bool,
}

impl Queue {
    fn new(ctx: &Context, name: Vec<u8>) -> Queue {
        // SAFETY: a live context and a buffer with its length; freed on drop.
        let key = unsafe {
            raw::RedisModule_CreateString.unwrap()(ctx.ctx, name.as_ptr().cast(), name.len())
        };
        Queue {
            name,
            key,
            ctx: ctx.ctx,
            exists: false,
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: made in `new` with this context, which outlives the command's `Queue`.
        unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, self.key) };
    }
}

/// The queue of a write to `key`. On a standalone server it is the one queue,
/// `cache.wb-queue`; in a cluster, the queue of the key's slot, `<cache.wb-queue>:{<tag>}`
/// with a tag that hashes to that slot, so that it lives on the key's node.
pub fn queue_for(ctx: &Context, key: &Arg) -> Vec<u8> {
    let base = config::wb_queue();
    if bus::in_cluster(ctx) {
        slots::name_in_slot_of(&base, key.as_slice())
    } else {
        base
    }
}

/// Checks that an event can be appended to `name` now, counting a refusal by its reason.
pub fn check(ctx: &Context, name: Vec<u8>) -> Result<Queue, CacheError> {
    let mut queue = Queue::new(ctx, name);
    let shown = || String::from_utf8_lossy(&queue.name).into_owned();
    if origin(ctx) == Origin::Client && !may_write(ctx, queue.key) {
        stats::WB_REFUSED_ACL.incr();
        return Err(CacheError::QueueNoPerm(shown()));
    }
    if let Some(policy) = evicting_policy(ctx) {
        stats::WB_REFUSED_POLICY.incr();
        return Err(CacheError::QueueEvictable(policy));
    }
    // SAFETY: no preconditions; 0 when no maxmemory is set.
    if unsafe { raw::RedisModule_GetUsedMemoryRatio.unwrap()() } > 1.0 {
        stats::WB_REFUSED_OOM.incr();
        return Err(CacheError::OutOfMemory);
    }
    let (exists, len) = with_key(ctx, queue.key, stream_length)
        .ok_or_else(|| CacheError::QueueWrongType(shown()))?;
    let max = config::wb_max_len();
    if len >= max as u64 {
        stats::WB_REFUSED_FULL.incr();
        return Err(CacheError::QueueFull {
            queue: shown(),
            max,
        });
    }
    if !exists {
        refuse_mid_move(ctx, &queue.name)?;
    }
    queue.exists = exists;
    Ok(queue)
}

/// In a cluster, refuses to create a queue while its slot moves: Redis routed the command by
/// the entry key alone, and the queue may be on the other node for now (`MIGRATE` moves keys a
/// batch at a time). A queue made here would split the slot's events over two streams, or
/// make the later `MIGRATE` of the queue fail with `BUSYKEY`. Asked only when the queue is
/// missing (`CLUSTER NODES` is a walk of the cluster's nodes), never on the hot path.
fn refuse_mid_move(ctx: &Context, name: &[u8]) -> Result<(), CacheError> {
    if !bus::in_cluster(ctx) {
        return Ok(());
    }
    let slot = slots::key_slot(name);
    let Some(nodes) = ctx
        .call("CLUSTER", &["NODES"][..])
        .ok()
        .and_then(|v| scan::bytes_of(&v))
    else {
        return Ok(());
    };
    match slots::slot_move(&nodes, slot) {
        None => Ok(()),
        Some(m) => Err(CacheError::SlotMoving {
            slot,
            importing: m == slots::SlotMove::Importing,
        }),
    }
}

/// Whether the caller's user may add to the queue key.
fn may_write(ctx: &Context, key: *mut raw::RedisModuleString) -> bool {
    // SAFETY: a live client context (the caller checked the origin), so it has a user; the
    // name and the user handle are freed before returning.
    unsafe {
        let name = raw::RedisModule_GetCurrentUserName.unwrap()(ctx.ctx);
        if name.is_null() {
            return false;
        }
        let user = raw::RedisModule_GetModuleUserFromUserName.unwrap()(name);
        let ok = !user.is_null()
            && raw::RedisModule_ACLCheckKeyPermissions.unwrap()(
                user,
                key,
                raw::REDISMODULE_CMD_KEY_INSERT as i32,
            ) == raw::REDISMODULE_OK as i32;
        if !user.is_null() {
            raw::RedisModule_FreeModuleUser.unwrap()(user);
        }
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        ok
    }
}

/// The eviction policy when it may evict the queue (an `allkeys-*` policy with `maxmemory`
/// set): the queue has no TTL, so `volatile-*` policies never pick it.
fn evicting_policy(ctx: &Context) -> Option<String> {
    // SAFETY: a live context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_EVICT == 0 {
        return None;
    }
    let reply = ctx.call("CONFIG", &["GET", "maxmemory-policy"][..]).ok()?;
    let RedisValue::Array(kv) = reply else {
        return None;
    };
    let policy = String::from_utf8_lossy(&scan::bytes_of(kv.get(1)?)?).into_owned();
    policy.starts_with("allkeys-").then_some(policy)
}

/// Runs `f` on the queue key `name` opened for reading.
fn with_name<T>(ctx: &Context, name: &[u8], f: impl FnOnce(*mut raw::RedisModuleKey) -> T) -> T {
    super::arg::with_name(ctx, name, |name| with_key(ctx, name.raw(), f))
}

/// Runs `f` on the key `name` opened for reading (null when it does not exist).
fn with_key<T>(
    ctx: &Context,
    name: *mut raw::RedisModuleString,
    f: impl FnOnce(*mut raw::RedisModuleKey) -> T,
) -> T {
    // SAFETY: ctx and name are live; the key is closed before returning.
    unsafe {
        let key = raw::RedisModule_OpenKey.unwrap()(ctx.ctx, name, raw::REDISMODULE_READ as i32)
            .cast::<raw::RedisModuleKey>();
        let out = f(key);
        if !key.is_null() {
            raw::RedisModule_CloseKey.unwrap()(key);
        }
        out
    }
}

/// Whether the stream exists and its length; `None` when the key holds another type.
fn stream_length(key: *mut raw::RedisModuleKey) -> Option<(bool, u64)> {
    if key.is_null() {
        return Some((false, 0));
    }
    // SAFETY: an open key handle.
    unsafe {
        match raw::RedisModule_KeyType.unwrap()(key) as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => Some((false, 0)),
            raw::REDISMODULE_KEYTYPE_STREAM => {
                Some((true, raw::RedisModule_ValueLength.unwrap()(key) as u64))
            }
            _ => None,
        }
    }
}

/// A field name or value of an event: a command argument as it is, or bytes made here.
pub enum Field<'a> {
    Arg(&'a Arg),
    /// A field name or fixed value: made once, kept for the life of the module.
    Name(&'static Name),
    /// A number (a version, a time), as its decimal text.
    Int(i64),
}

/// The most fields (names and values) an event has.
const MAX_FIELDS: usize = 10;

/// A string an event always carries ("op", "set", "key"...), made once.
pub struct Name {
    text: &'static [u8],
    made: std::sync::OnceLock<usize>,
}

impl Name {
    pub const fn new(text: &'static [u8]) -> Name {
        Name {
            text,
            made: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> *mut raw::RedisModuleString {
        *self.made.get_or_init(|| {
            // SAFETY: no context: the module owns the string, kept for its whole life (Redis
            // takes its own reference when it replicates it).
            unsafe {
                raw::RedisModule_CreateString.unwrap()(
                    std::ptr::null_mut(),
                    self.text.as_ptr().cast(),
                    self.text.len(),
                ) as usize
            }
        }) as *mut raw::RedisModuleString
    }
}

pub static OP: Name = Name::new(b"op");
pub static SET: Name = Name::new(b"set");
pub static DEL: Name = Name::new(b"del");
pub static KEY: Name = Name::new(b"key");
pub static VALUE: Name = Name::new(b"value");
pub static VERSION: Name = Name::new(b"version");
pub static MS: Name = Name::new(b"ms");

/// Appends one event (field, value pairs) to a checked queue; its stream id. The queue and
/// its group are created when missing (`XGROUP CREATE ... MKSTREAM`, replicated as it ran).
/// The entry goes in with the stream API rather than `XADD` through `RedisModule_Call` (which
/// took a third of the command's time), and is replicated as the `XADD` with its id, with the
/// `xadd` event a real `XADD` raises; closing the key signals it modified (`CLIENT TRACKING`)
/// and wakes a worker blocked in `XREADGROUP`.
pub fn append(ctx: &Context, queue: &Queue, fields: &[Field]) -> Result<RedisString, CacheError> {
    if !queue.exists {
        let opts = CallOptionsBuilder::new()
            .replicate()
            .errors_as_replies()
            .build();
        let group = config::wb_group();
        let args: [&[u8]; 5] = [b"CREATE", &queue.name, &group, b"0", b"MKSTREAM"];
        let res: CallResult = ctx.call_ext("XGROUP", &opts, &args[..]);
        // Checked before anything was written (the key was empty), so this is a bug.
        res.map_err(|_| CacheError::Internal)?;
    }
    // At most `MAX_FIELDS` strings made here and freed below: no heap for the bookkeeping.
    let mut made = [std::ptr::null_mut::<raw::RedisModuleString>(); MAX_FIELDS];
    let mut n_made = 0;
    // [queue, id, fields...]: the XADD as it is replicated; the id is filled in below.
    let mut xadd = [std::ptr::null_mut::<raw::RedisModuleString>(); MAX_FIELDS + 2];
    if fields.len() > MAX_FIELDS || !fields.len().is_multiple_of(2) {
        return Err(CacheError::Internal);
    }
    xadd[0] = queue.key;
    for (slot, f) in xadd[2..].iter_mut().zip(fields) {
        *slot = match f {
            Field::Arg(a) => a.raw(),
            Field::Name(n) => n.get(),
            Field::Int(v) => {
                // SAFETY: a live context; freed below.
                let s = unsafe { raw::RedisModule_CreateStringFromLongLong.unwrap()(ctx.ctx, *v) };
                made[n_made] = s;
                n_made += 1;
                s
            }
        };
    }
    let argc = 2 + fields.len();
    let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
    // SAFETY: a live context and key name; the key is closed before the strings are freed;
    // the fields are `xadd[2..argc]`, an even number of live strings.
    let added = unsafe {
        let key = raw::RedisModule_OpenKey.unwrap()(
            ctx.ctx,
            queue.key,
            (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as i32,
        )
        .cast::<raw::RedisModuleKey>();
        let added = !key.is_null()
            && raw::RedisModule_StreamAdd.unwrap()(
                key,
                raw::REDISMODULE_STREAM_ADD_AUTOID as i32,
                &mut id,
                xadd.as_mut_ptr().add(2),
                (fields.len() / 2) as i64,
            ) == raw::REDISMODULE_OK as i32;
        if !key.is_null() {
            raw::RedisModule_CloseKey.unwrap()(key);
        }
        added
    };
    let id_text = if added {
        // SAFETY: a live context and the id just added; owned by the `RedisString` below.
        let text = unsafe { raw::RedisModule_CreateStringFromStreamID.unwrap()(ctx.ctx, &id) };
        xadd[1] = text;
        // SAFETY: `v` takes an array of RedisModuleString* and its length; all `argc` are
        // live; the event name is a C string.
        unsafe {
            raw::RedisModule_Replicate.unwrap()(
                ctx.ctx,
                c"XADD".as_ptr(),
                c"v".as_ptr(),
                xadd.as_ptr(),
                argc,
            );
            raw::RedisModule_NotifyKeyspaceEvent.unwrap()(
                ctx.ctx,
                raw::REDISMODULE_NOTIFY_STREAM,
                c"xadd".as_ptr(),
                queue.key,
            );
        }
        Some(RedisString::from_redis_module_string(ctx.ctx, text))
    } else {
        None
    };
    for s in &made[..n_made] {
        // SAFETY: made above with this context, freed once.
        unsafe { raw::RedisModule_FreeString.unwrap()(ctx.ctx, *s) };
    }
    // Checked before anything was written (a stream, or nothing), so a failure is a bug.
    id_text.ok_or(CacheError::Internal)
}

/// The queues that exist in `ctx`'s database: the one queue of a standalone server; in a
/// cluster, the per-slot queues on this node, found with `SCAN ... MATCH <queue>:{* TYPE
/// stream` (a walk of the node's keys: the command is for workers looking for work, not for
/// a hot path).
pub fn existing(ctx: &Context) -> Vec<Vec<u8>> {
    let name = config::wb_queue();
    if !bus::in_cluster(ctx) {
        return match with_name(ctx, &name, stream_length) {
            Some((true, _)) => vec![name],
            _ => Vec::new(),
        };
    }
    let mut pattern = Vec::with_capacity(name.len() + 3);
    for &b in &name {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
    pattern.extend_from_slice(b":{*");
    let mut found = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let args: [&[u8]; 7] = [
            &cursor, b"MATCH", &pattern, b"TYPE", b"stream", b"COUNT", b"1000",
        ];
        let Some(page) = scan::page(ctx, &args) else {
            return found;
        };
        let last = page.is_last();
        found.extend(page.keys);
        if last {
            found.sort();
            found.dedup();
            return found;
        }
        cursor = page.cursor;
    }
}

/// For INFO: the queues' length and the age of their oldest event (ms; 0 when empty), summed
/// and maxed over the databases, as seen from `ctx`. In a cluster, over the slot queues the
/// node holds (`storage::queues`: a key lookup per queue, no walk of the keyspace).
pub fn backlog(ctx: &Context, now_ms: i64) -> (u64, i64) {
    let in_cluster = bus::in_cluster(ctx);
    let names = if in_cluster {
        queues::known()
    } else {
        vec![config::wb_queue()]
    };
    let mut held = vec![false; names.len()];
    let (mut len, mut oldest) = (0u64, 0i64);
    let original = server::selected_db(ctx);
    let mut db = 0;
    while server::select_db(ctx, db) {
        for (name, held) in names.iter().zip(held.iter_mut()) {
            with_name(ctx, name, |key| {
                if let Some((true, n)) = stream_length(key) {
                    *held = true;
                    len += n;
                    if let Some(ms) = first_id_ms(key) {
                        oldest = oldest.max(now_ms.saturating_sub(ms));
                    }
                }
            });
        }
        db += 1;
    }
    if in_cluster {
        for (name, _) in names.iter().zip(&held).filter(|(_, held)| !**held) {
            queues::forget(name);
        }
    }
    server::select_db(ctx, original);
    (len, oldest)
}

/// The millisecond part of the stream's first id, if it has an entry.
fn first_id_ms(key: *mut raw::RedisModuleKey) -> Option<i64> {
    // SAFETY: an open stream key; the iterator is stopped before the key is closed.
    unsafe {
        if raw::RedisModule_StreamIteratorStart.unwrap()(
            key,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ) != raw::REDISMODULE_OK as i32
        {
            return None;
        }
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut fields: std::os::raw::c_long = 0;
        let found = raw::RedisModule_StreamIteratorNextID.unwrap()(key, &mut id, &mut fields)
            == raw::REDISMODULE_OK as i32;
        raw::RedisModule_StreamIteratorStop.unwrap()(key);
        found.then_some(id.ms as i64)
    }
}

/// A context of the module's own for `INFO`, whose callback gets none (made at load).
struct InfoContext(*mut raw::RedisModuleCtx);

// SAFETY: used only on Redis's main thread, from the INFO callback, which runs holding the
// server lock; never from another thread.
unsafe impl Send for InfoContext {}
// SAFETY: as above.
unsafe impl Sync for InfoContext {}

static INFO_CONTEXT: std::sync::OnceLock<InfoContext> = std::sync::OnceLock::new();

/// Makes the context `INFO` reads the queues with; called from the module's init.
pub fn prepare(ctx: &Context) {
    // SAFETY: the module's init context; a detached context lives as long as the module.
    let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx.ctx) };
    if !detached.is_null() {
        let _ = INFO_CONTEXT.set(InfoContext(detached));
    }
}

/// `backlog` for the INFO callback, with the module's own context.
pub fn backlog_for_info(now_ms: i64) -> (u64, i64) {
    match INFO_CONTEXT.get() {
        Some(c) => backlog(&Context::new(c.0), now_ms),
        None => (0, 0),
    }
}

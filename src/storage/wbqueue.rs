//! The write-behind queue: a Redis Stream (`cache.wb-queue`, in the database of the command)
//! whose consumer group (`cache.wb-group`) the worker reads. Events are appended with `XADD`
//! through `RedisModule_Call`, replicated as the command Redis rewrote (with its stream id), in
//! the same `MULTI` as the entry's own effect, so a replica or the AOF holds both or neither.
//!
//! Everything that could make the append fail is checked first, while nothing is written yet
//! (`check`): the caller's ACL on the queue key (not in argv, so Redis does not check it),
//! an eviction policy that could drop the queue, memory, the queue's length and type.

use redis_module::{raw, AclPermissions, CallOptionsBuilder, CallResult, Context};
use redis_module::{RedisString, RedisValue};

use super::arg::Arg;
use super::server::{origin, Origin};
use crate::config;
use crate::error::CacheError;
use crate::stats;

/// The queue a command of `ctx` appends to: its name, checked and ready.
pub struct Queue {
    name: Vec<u8>,
    /// Whether the stream exists (else `append` creates it with its group).
    exists: bool,
}

impl Queue {
    pub fn name(&self) -> &[u8] {
        &self.name
    }
}

/// The queue of a write to `_key`. On a standalone server it is the one queue,
/// `cache.wb-queue`; in a cluster it will be the queue of the key's slot.
pub fn queue_for(_key: &Arg) -> Vec<u8> {
    config::wb_queue()
}

/// Checks that an event can be appended to `name` now, counting a refusal by its reason.
pub fn check(ctx: &Context, name: Vec<u8>) -> Result<Queue, CacheError> {
    let shown = || String::from_utf8_lossy(&name).into_owned();
    if origin(ctx) == Origin::Client && !may_write(ctx, &name) {
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
    let (exists, len) = with_name(ctx, &name, |key| stream_length(ctx, key))
        .ok_or_else(|| CacheError::QueueWrongType(shown()))?;
    let max = config::wb_max_len();
    if len >= max as u64 {
        stats::WB_REFUSED_FULL.incr();
        return Err(CacheError::QueueFull {
            queue: shown(),
            max,
        });
    }
    Ok(Queue { name, exists })
}

/// Whether the caller's user may add to the queue key.
fn may_write(ctx: &Context, name: &[u8]) -> bool {
    let user = ctx.get_current_user();
    let key = RedisString::create_from_slice(ctx.ctx, name);
    ctx.acl_check_key_permission(&user, &key, &AclPermissions::INSERT)
        .is_ok()
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
    let policy = match kv.get(1)? {
        RedisValue::SimpleString(s) => s.clone(),
        RedisValue::StringBuffer(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    policy.starts_with("allkeys-").then_some(policy)
}

/// Runs `f` on the queue key `name` opened for reading.
fn with_name<T>(ctx: &Context, name: &[u8], f: impl FnOnce(*mut raw::RedisModuleKey) -> T) -> T {
    super::arg::with_name(ctx, name, |name| {
        // SAFETY: ctx and name are live; the key is closed before `with_name` returns.
        unsafe {
            let key = raw::RedisModule_OpenKey.unwrap()(
                ctx.ctx,
                name.raw(),
                raw::REDISMODULE_READ as i32,
            )
            .cast::<raw::RedisModuleKey>();
            let out = f(key);
            if !key.is_null() {
                raw::RedisModule_CloseKey.unwrap()(key);
            }
            out
        }
    })
}

/// Whether the stream exists and its length; `None` when the key holds another type.
fn stream_length(_ctx: &Context, key: *mut raw::RedisModuleKey) -> Option<(bool, u64)> {
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

/// Appends one event (field, value pairs) to a checked queue; its stream id. The queue and
/// its group are created when missing. Both replicate as the commands Redis ran.
pub fn append(ctx: &Context, queue: &Queue, fields: &[&[u8]]) -> Result<String, CacheError> {
    let opts = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    if !queue.exists {
        let group = config::wb_group();
        let args: [&[u8]; 5] = [b"CREATE", &queue.name, &group, b"0", b"MKSTREAM"];
        call(ctx, &opts, "XGROUP", &args)?;
    }
    let mut args: Vec<&[u8]> = Vec::with_capacity(2 + fields.len());
    args.push(&queue.name);
    args.push(b"*");
    args.extend_from_slice(fields);
    match call(ctx, &opts, "XADD", &args)? {
        RedisValue::SimpleString(id) => Ok(id),
        RedisValue::StringBuffer(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        _ => Err(CacheError::Internal),
    }
}

fn call(
    ctx: &Context,
    opts: &redis_module::CallOptions,
    cmd: &str,
    args: &[&[u8]],
) -> Result<RedisValue, CacheError> {
    let res: CallResult = ctx.call_ext(cmd, opts, args);
    match res {
        Ok(reply) => Ok((&reply).into()),
        // Checked before anything was written, so this is a bug or a server we do not know.
        Err(_) => Err(CacheError::Internal),
    }
}

/// The queues that exist in `ctx`'s database: the one queue of a standalone server.
pub fn existing(ctx: &Context) -> Vec<Vec<u8>> {
    let name = config::wb_queue();
    match with_name(ctx, &name, |key| stream_length(ctx, key)) {
        Some((true, _)) => vec![name],
        _ => Vec::new(),
    }
}

/// For INFO: the queue's length and the age of its oldest event (ms; 0 when empty), summed
/// and maxed over the databases, as seen from `ctx`.
pub fn backlog(ctx: &Context, now_ms: i64) -> (u64, i64) {
    let name = config::wb_queue();
    let (mut len, mut oldest) = (0u64, 0i64);
    // SAFETY: a live context (main thread); the database is selected back below.
    let original = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
    let mut db = 0;
    // SAFETY: as above; SelectDb fails past the last database.
    while unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) } == raw::REDISMODULE_OK as i32 {
        with_name(ctx, &name, |key| {
            if let Some((true, n)) = stream_length(ctx, key) {
                len += n;
                if let Some(ms) = first_id_ms(key) {
                    oldest = oldest.max(now_ms.saturating_sub(ms));
                }
            }
        });
        db += 1;
    }
    // SAFETY: as above.
    unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, original) };
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

//! What the server allows right now, for work the module does on its own (timers, callbacks)
//! rather than inside a client's command.
//!
//! A command runs only when Redis has decided it may: a write command is held back while
//! clients are paused, refused on a read-only replica, over `maxmemory` (deny-oom) and while
//! loading. A timer gets no such check, and writing anyway is not just wrong but fatal: while
//! writes are paused (`CLIENT PAUSE WRITE|ALL`, `FAILOVER`) Redis stops deleting expired keys,
//! so an expired key looks empty to the module yet is still in the dictionary, and storing a
//! new value there trips Redis's `dbAdd` assertion (`de != NULL`) and aborts the server.

use redis_module::{raw, Context, ContextFlags};

/// Whether the module may write to the keyspace from a timer or callback now. When not, the
/// work waits for a later tick: nothing is lost by deferring a hand-over.
pub fn accepts_unprompted_writes(ctx: &Context) -> bool {
    // SAFETY: a plain query of server state, valid on the main thread at any time after load.
    // It is true while clients are paused for writes (CLIENT PAUSE WRITE or ALL, FAILOVER, a
    // cluster manual failover): exactly when Redis neither expires keys nor wants new writes.
    let paused = unsafe { raw::RedisModule_AvoidReplicaTraffic.map_or(0, |f| f()) } != 0;
    if paused {
        return false;
    }
    let refused = ContextFlags::SLAVE
        | ContextFlags::LOADING
        | ContextFlags::ASYNC_LOADING
        | ContextFlags::OOM;
    !ctx.get_flags().intersects(refused)
}

/// Where the command being run comes from, as far as the module must tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client connection (also inside MULTI or a script).
    Client,
    /// The replication stream from this server's primary.
    Primary,
    /// The AOF being loaded at start-up (or an RDB load of any kind).
    Loading,
}

/// The origin of the command running in `ctx`.
pub fn origin(ctx: &Context) -> Origin {
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::LOADING) {
        Origin::Loading
    } else if flags.contains(ContextFlags::REPLICATED) {
        Origin::Primary
    } else {
        Origin::Client
    }
}

/// Why an entry is being decoded in an `rdb_load` callback, which gets no command context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadSource {
    /// An RDB file, a full sync, `DEBUG RELOAD`, or a command replayed from the AOF: data
    /// this server or its primary wrote, kept exactly.
    Persisted,
    /// `RESTORE` on a replica: the primary ran it first and checked it there.
    Replicated,
    /// `RESTORE` from a client of this server: a payload anyone may have crafted.
    Restore,
}

/// The source of the payload an `rdb_load` callback is decoding now.
pub fn load_source() -> LoadSource {
    // SAFETY: RM_GetContextFlags accepts a NULL context and then reports server-wide flags
    // only (loading, role), which is all that is asked here; it only reads server state.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(std::ptr::null_mut())) };
    let has = |f: u32| flags & f as std::os::raw::c_int != 0;
    if has(raw::REDISMODULE_CTX_FLAGS_LOADING) || has(raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING) {
        LoadSource::Persisted
    } else if has(raw::REDISMODULE_CTX_FLAGS_SLAVE) {
        LoadSource::Replicated
    } else {
        LoadSource::Restore
    }
}

/// The database `ctx`'s client has selected (for a keyspace event: the event's database).
pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: a live context; the call only reads its client's database.
    unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }
}

/// Selects database `db` on `ctx`'s client; false when there is no such database.
pub fn select_db(ctx: &Context, db: i32) -> bool {
    // SAFETY: a live context whose client can select a database.
    unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) == raw::REDISMODULE_OK as i32 }
}

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

//! The keyspace and server events the module subscribes to, and the timer that gives landed
//! entries their fresh versions (`storage::landing`).

use std::cell::Cell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

use redis_module::{raw, Context};

use super::{arm_once, blocked, on_key, rebuild};
use crate::guard;
use crate::storage::arg::Arg;
use crate::storage::key::{index_landed, open_entry};
use crate::storage::{bus, landing, queues, server, tagindex, unlinked, wbqueue};

/// How long the landing timer waits before it tries again while the server takes no writes.
const RETRY_MS: i64 = 100;

thread_local! {
    /// Whether the landing timer is armed (main thread only).
    static LANDING_TIMER: Cell<bool> = const { Cell::new(false) };
    /// The database of the last `move_from` event: the database of the client running `MOVE`.
    static MOVED_FROM_DB: Cell<Option<i32>> = const { Cell::new(None) };
}

/// A generic, expiry, eviction or stream event on `key`.
extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    class: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            // SAFETY: Redis passes the event's name (a C string) and key, alive for the call.
            let (event, name) = unsafe { (CStr::from_ptr(event).to_bytes(), Arg::from_raw(key)) };
            if class & raw::REDISMODULE_NOTIFY_STREAM as c_int != 0 {
                // An `XADD` may have made a write-behind queue (the module's own append raises
                // it too, on the primary and, replicated, on its replicas). Nothing else here
                // is about streams.
                if event == b"xadd" {
                    queues::noticed(name.as_slice());
                }
                return 0;
            }
            match event {
                b"copy_to" | b"rename_to" | b"move_to" | b"restore" => {
                    // On every server, replicas and loads included: the index follows.
                    index_landed(&ctx, &name);
                    queues::noticed(name.as_slice());
                    if matches!(open_entry(&ctx, &name), Ok(Some(_)))
                        && landing::landed(&ctx, &name)
                    {
                        arm_landing(&ctx, 0);
                    }
                }
                b"rename_from" | b"move_from" => unlinked::moved_away(name.as_slice()),
                _ => {}
            }
            blocked::on_key_event(&ctx, &name);
            match event {
                b"move_from" => MOVED_FROM_DB.set(Some(server::selected_db(&ctx))),
                // Valkey 8.1 runs this callback on the client that runs `MOVE`, selects the
                // destination database on it for the event and leaves it there (fixed upstream
                // in valkey-io/valkey#4024): the client would go on in the wrong database. Put
                // it back in its own, the one of `move_from`. On Redis the context has a client
                // of its own, and selecting on it changes nothing for anybody.
                b"move_to" => {
                    if let Some(db) = MOVED_FROM_DB.take() {
                        // SAFETY: a live context; the database existed a moment ago.
                        unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) };
                    }
                }
                _ => {}
            }
            0
        },
        || 0,
    )
}

/// The write-behind queues a load brought: looked for once in the keyspace.
fn notice_loaded_queues(ctx: &Context) {
    if bus::in_cluster(ctx) {
        for name in wbqueue::existing(ctx) {
            queues::noticed(&name);
        }
    }
}

/// A flush, `SWAPDB`, or a load: the waiters all look again, and the tag index follows.
extern "C" fn on_server_event(
    ctx: *mut raw::RedisModuleCtx,
    event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            match event.id {
                raw::REDISMODULE_EVENT_FLUSHDB => {
                    if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START {
                        // SAFETY: Redis passes a RedisModuleFlushInfo with this event.
                        let db = unsafe { (*data.cast::<raw::RedisModuleFlushInfo>()).dbnum };
                        tagindex::with(|ix| if db < 0 { ix.clear() } else { ix.flush_db(db) });
                    }
                    blocked::every_line_due(&ctx);
                }
                raw::REDISMODULE_EVENT_SWAPDB => {
                    // SAFETY: Redis passes a RedisModuleSwapDbInfo with this event.
                    let (a, b) = unsafe {
                        let si = &*data.cast::<raw::RedisModuleSwapDbInfo>();
                        (si.dbnum_first, si.dbnum_second)
                    };
                    tagindex::with(|ix| ix.swap_db(a, b));
                    blocked::every_line_due(&ctx);
                }
                raw::REDISMODULE_EVENT_LOADING => match subevent {
                    raw::REDISMODULE_SUBEVENT_LOADING_ENDED
                    | raw::REDISMODULE_SUBEVENT_LOADING_FAILED => {
                        rebuild::rebuild(&ctx);
                        notice_loaded_queues(&ctx);
                    }
                    // RDB, AOF or full sync starting: what it loads replaces the keyspace.
                    _ => {
                        tagindex::with(|ix| ix.clear());
                        queues::clear();
                    }
                },
                raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD
                    if subevent == raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED =>
                {
                    rebuild::rebuild(&ctx);
                    notice_loaded_queues(&ctx);
                }
                _ => {}
            }
        },
        || (),
    )
}

fn arm_landing(ctx: &Context, delay_ms: i64) {
    arm_once(&LANDING_TIMER, ctx, delay_ms, landing_tick);
}

/// Gives every landed entry still pending its fresh version; while the server takes no
/// writes (paused clients, loading, a replica now, OOM), it comes back later.
extern "C" fn landing_tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch(
        || {
            let ctx = Context::new(ctx);
            LANDING_TIMER.set(false);
            if !landing::has_pending() {
                return;
            }
            if !server::accepts_unprompted_writes(&ctx) {
                arm_landing(&ctx, RETRY_MS);
                return;
            }
            for key in landing::take(None) {
                on_key(&ctx, &key, landing::refresh);
            }
        },
        || (),
    )
}

/// Subscribes the callbacks above; called from the module's init.
pub fn subscribe(ctx: &Context) -> Result<(), &'static str> {
    let ok = raw::REDISMODULE_OK as c_int;
    // SAFETY: the module's init context; the callbacks have Redis's signatures and live for
    // the life of the module.
    unsafe {
        if raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(
            ctx.ctx,
            // DEL, UNLINK, RENAME, MOVE, COPY, RESTORE (generic), expiry and eviction: what
            // can end a lease or put an entry on a name without a command of ours. Not the
            // per-type classes: a key taken by another type leaves its callers to their
            // timeout anyway, and the hot write paths of strings, hashes and the rest stay
            // free of this callback. Streams for the write-behind queues (`storage::queues`).
            (raw::REDISMODULE_NOTIFY_GENERIC
                | raw::REDISMODULE_NOTIFY_EXPIRED
                | raw::REDISMODULE_NOTIFY_EVICTED
                | raw::REDISMODULE_NOTIFY_STREAM) as c_int,
            Some(on_keyspace_event),
        ) != ok
        {
            return Err("cannot subscribe to keyspace events");
        }
        for id in [
            raw::REDISMODULE_EVENT_FLUSHDB,
            raw::REDISMODULE_EVENT_SWAPDB,
            raw::REDISMODULE_EVENT_LOADING,
            raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD,
        ] {
            let event = raw::RedisModuleEvent { id, dataver: 1 };
            if raw::RedisModule_SubscribeToServerEvent.unwrap()(
                ctx.ctx,
                event,
                Some(on_server_event),
            ) != ok
            {
                return Err("cannot subscribe to flush, swapdb and loading events");
            }
        }
    }
    Ok(())
}

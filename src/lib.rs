//! redis-cache: application caching done inside Redis, atomically.
//!
//! This file only registers things: the data type, the commands, the configs and the INFO
//! handler. The logic lives in `core` (pure, unit-tested), `storage` (the data type and its
//! persistence and replication) and `commands` (one file per command).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod commands;
pub mod config;
pub mod core;
pub mod error;
pub mod guard;
pub mod info;
pub mod reply;
pub mod stats;
pub mod storage;
pub mod wrapper;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{redis_module, Context, InfoContext, RedisResult, RedisString, Status};

use crate::storage::datatype::CACHE_TYPE;

/// Unit tests and the fuzz targets (feature `fuzzing`) run without Redis: they must not
/// use the Redis allocator.
#[cfg(any(test, feature = "fuzzing"))]
type Allocator = std::alloc::System;
#[cfg(any(test, feature = "fuzzing"))]
const ALLOCATOR: Allocator = std::alloc::System;
#[cfg(not(any(test, feature = "fuzzing")))]
type Allocator = redis_module::alloc::RedisAlloc;
#[cfg(not(any(test, feature = "fuzzing")))]
const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // A short read in RDB loading (diskless sync, a crafted RESTORE) must reach our rdb_load
    // as an error to check, not abort the server.
    ctx.set_module_options(redis_module::ModuleOptions::HANDLE_IO_ERRORS);
    guard::install_panic_hook();
    reply::prepare(ctx);
    storage::wbqueue::prepare(ctx);
    wrapper::spread::listen(ctx);
    if let Err(why) = wrapper::keyspace::subscribe(ctx) {
        ctx.log_warning(why);
        return Status::Err;
    }
    commands::register(ctx)
}

fn info(ctx: &InfoContext, for_crash_report: bool) {
    // An INFO that cannot be built is not worth failing anything for.
    let _ = info::info(ctx, for_crash_report);
}

redis_module! {
    name: "cache",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [CACHE_TYPE],
    init: init,
    info: info,
    configurations: [
        i64: [
            ["lease-ms", &config::LEASE_MS, config::DEFAULT_LEASE_MS, 1, config::MAX_TIME_MS, ConfigurationFlags::DEFAULT, None],
            ["grace-ms", &config::GRACE_MS, config::DEFAULT_GRACE_MS, 0, config::MAX_SPAN_MS, ConfigurationFlags::DEFAULT, None],
            ["default-delta-ms", &config::DEFAULT_DELTA, config::DEFAULT_DELTA_MS, 0, config::MAX_SPAN_MS, ConfigurationFlags::DEFAULT, None],
            ["tag-timeout-ms", &config::TAG_TIMEOUT_MS, config::DEFAULT_TAG_TIMEOUT_MS, 1, config::MAX_TIME_MS, ConfigurationFlags::DEFAULT, None],
            ["wb-max-len", &config::WB_MAX_LEN, config::DEFAULT_WB_MAX_LEN, 1, i64::MAX, ConfigurationFlags::DEFAULT, None],
        ],
        string: [
            ["beta", &config::BETA, config::DEFAULT_BETA, ConfigurationFlags::DEFAULT, None],
            ["wb-queue", &config::WB_QUEUE, config::DEFAULT_WB_QUEUE, ConfigurationFlags::DEFAULT, None],
            ["wb-group", &config::WB_GROUP, config::DEFAULT_WB_GROUP, ConfigurationFlags::DEFAULT, None],
        ],
        bool: [],
        enum: [
            ["refresh", &config::REFRESH, config::RefreshMode::window, ConfigurationFlags::DEFAULT, None],
        ],
        module_args_as_configuration: true,
    ]
}

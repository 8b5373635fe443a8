//! Module configuration: `cache.<name>`, settable as `loadmodule` arguments
//! (`loadmodule libredis_cache.so lease-ms 3000`), in redis.conf after the `loadmodule` line
//! (`cache.lease-ms 3000`) and with `CONFIG SET/GET`.

use std::os::raw::c_char;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use redis_module::configuration::ConfigurationContext;
use redis_module::{enum_configuration, raw, ConfigurationValue, RedisError, RedisString};

use crate::core::number;
use crate::core::xfetch::Election;
use crate::error::CacheError;

pub const DEFAULT_BETA: &str = "1";
pub const DEFAULT_LEASE_MS: i64 = 5_000;
pub const DEFAULT_GRACE_MS: i64 = 0;
pub const DEFAULT_DELTA_MS: i64 = 100;
/// Upper bound of every time config: about 30 years, far from overflow when added to now.
pub const MAX_TIME_MS: i64 = 1_000_000_000_000;
/// The most `cache.grace-ms` and `cache.default-delta-ms` take: what an entry stores.
pub const MAX_SPAN_MS: i64 = crate::core::entry::MAX_SPAN_MS;

/// `cache.lease-ms`: how long a fill lease lasts when the caller gives no `LEASE`/`PX`.
pub static LEASE_MS: AtomicI64 = AtomicI64::new(DEFAULT_LEASE_MS);
/// `cache.grace-ms`: stale-but-served time after fresh when a write gives no `GRACE`.
pub static GRACE_MS: AtomicI64 = AtomicI64::new(DEFAULT_GRACE_MS);
/// `cache.default-delta-ms`: recompute cost assumed until a fill measures or states one.
pub static DEFAULT_DELTA: AtomicI64 = AtomicI64::new(DEFAULT_DELTA_MS);
/// `cache.beta`: XFetch eagerness when GETX gives no `BETA`.
pub static BETA: BetaConfig = BetaConfig::new(1.0);

enum_configuration! {
    /// `cache.refresh`'s values, as `CONFIG GET` shows them (`core::xfetch::Election`).
    #[allow(non_camel_case_types)]
    #[derive(Debug, PartialEq, Eq)]
    pub enum RefreshMode {
        window = 0,
        xfetch = 1,
    }
}

/// `cache.refresh`: how GETX elects the caller that refreshes a value before it expires.
pub static REFRESH: RefreshConfig = RefreshConfig(AtomicI32::new(RefreshMode::window as i32));

/// An enum config read on every GETX: an atomic, not a lock.
pub struct RefreshConfig(AtomicI32);

impl ConfigurationValue<RefreshMode> for RefreshConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RefreshMode {
        RefreshMode::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(RefreshMode::window)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RefreshMode) -> Result<(), RedisError> {
        self.0.store(val as i32, Ordering::Relaxed);
        Ok(())
    }
}

pub fn refresh() -> Election {
    match REFRESH.0.load(Ordering::Relaxed) {
        x if x == RefreshMode::xfetch as i32 => Election::Xfetch,
        _ => Election::Window,
    }
}

pub const DEFAULT_TAG_TIMEOUT_MS: i64 = 2_000;
/// `cache.tag-timeout-ms`: how long `CACHE.TAGINVALIDATE` waits in a cluster for the other
/// primaries to confirm before it answers `-TIMEOUT` (it keeps resending after).
pub static TAG_TIMEOUT_MS: AtomicI64 = AtomicI64::new(DEFAULT_TAG_TIMEOUT_MS);

pub const DEFAULT_WB_QUEUE: &str = "cache:wb";
pub const DEFAULT_WB_GROUP: &str = "cache-wb";
pub const DEFAULT_WB_MAX_LEN: i64 = 1_000_000;
/// `cache.wb-queue`: the write-behind queue's key (a stream).
pub static WB_QUEUE: NameConfig = NameConfig::new();
/// `cache.wb-group`: the consumer group created with the queue, which workers read with.
pub static WB_GROUP: NameConfig = NameConfig::new();
/// `cache.wb-max-len`: the queue length at which write-behind commands refuse (backpressure).
pub static WB_MAX_LEN: AtomicI64 = AtomicI64::new(DEFAULT_WB_MAX_LEN);

pub fn lease_ms() -> i64 {
    LEASE_MS.load(Ordering::Relaxed)
}
pub fn grace_ms() -> i64 {
    GRACE_MS.load(Ordering::Relaxed)
}
pub fn default_delta_ms() -> i64 {
    DEFAULT_DELTA.load(Ordering::Relaxed)
}
pub fn beta() -> f64 {
    BETA.value()
}
pub fn tag_timeout_ms() -> i64 {
    TAG_TIMEOUT_MS.load(Ordering::Relaxed)
}
pub fn wb_queue() -> Vec<u8> {
    WB_QUEUE.value()
}
pub fn wb_group() -> Vec<u8> {
    WB_GROUP.value()
}
pub fn wb_max_len() -> i64 {
    WB_MAX_LEN.load(Ordering::Relaxed)
}

/// A finite positive float stored as a string config, validated on every set.
///
/// Redis does not free the string a module's config getter returns: the module keeps it. So
/// the text of the current value is made once and kept (until the next set), and `get` hands
/// out that same string; a new string per `CONFIG GET` would leak one each time.
pub struct BetaConfig {
    bits: AtomicU64,
    text: Mutex<Option<OwnedString>>,
}

impl BetaConfig {
    const fn new(value: f64) -> BetaConfig {
        BetaConfig {
            bits: AtomicU64::new(value.to_bits()),
            text: Mutex::new(None),
        }
    }

    fn value(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

/// A Redis string the module owns, freed on drop.
struct OwnedString(*mut raw::RedisModuleString);

// SAFETY: config callbacks run on Redis's main thread; the Mutex serialises them anyway.
unsafe impl Send for OwnedString {}

impl Drop for OwnedString {
    fn drop(&mut self) {
        // SAFETY: made by RedisModule_CreateString with no context, freed once, here.
        unsafe { raw::RedisModule_FreeString.unwrap()(std::ptr::null_mut(), self.0) };
    }
}

impl ConfigurationValue<RedisString> for BetaConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let mut text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        let owned = text.get_or_insert_with(|| {
            let s = self.value().to_string();
            // SAFETY: a buffer and its length; no context, so the module owns the string.
            OwnedString(unsafe {
                raw::RedisModule_CreateString.unwrap()(
                    std::ptr::null_mut(),
                    s.as_ptr().cast::<c_char>(),
                    s.len(),
                )
            })
        });
        // Not retained: the crate hands this pointer to Redis without freeing it, and Redis
        // only reads it; `text` keeps owning it.
        RedisString::from_redis_module_string(std::ptr::null_mut(), owned.0)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let beta = number::parse_beta(val.as_slice())
            .ok_or_else(|| RedisError::String(CacheError::InvalidBeta.to_string()))?;
        self.bits.store(beta.to_bits(), Ordering::Relaxed);
        *self.text.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

/// A key or group name as a string config: 1 to 1024 bytes, no spaces or control characters
/// (it appears in `INFO` and log lines), and no braces: a queue's name gets a hash tag of its
/// own in a cluster (`core::slots::name_in_slot_of`), which one in the name would override. Kept, like `BetaConfig`'s text, as the string
/// `CONFIG GET` hands out.
pub struct NameConfig {
    text: Mutex<Option<(Vec<u8>, OwnedString)>>,
}

/// The longest name `NameConfig` takes.
const MAX_NAME: usize = 1024;

impl NameConfig {
    const fn new() -> NameConfig {
        NameConfig {
            text: Mutex::new(None),
        }
    }

    fn value(&self) -> Vec<u8> {
        let text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        text.as_ref().map(|(v, _)| v.clone()).unwrap_or_default()
    }
}

impl ConfigurationValue<RedisString> for NameConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        let raw = text.as_ref().map_or(std::ptr::null_mut(), |(_, s)| s.0);
        // Not retained: `text` keeps owning it (see `BetaConfig::get`). Redis sets every
        // config at load (the default, at least), so it is never null when asked for.
        RedisString::from_redis_module_string(std::ptr::null_mut(), raw)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let v = val.as_slice();
        let bad =
            |b: &u8| b.is_ascii_whitespace() || b.is_ascii_control() || *b == b'{' || *b == b'}';
        if v.is_empty() || v.len() > MAX_NAME || v.iter().any(bad) {
            return Err(RedisError::String(CacheError::BadName.to_string()));
        }
        // SAFETY: a buffer and its length; no context, so the module owns the string.
        let owned = OwnedString(unsafe {
            raw::RedisModule_CreateString.unwrap()(
                std::ptr::null_mut(),
                v.as_ptr().cast::<c_char>(),
                v.len(),
            )
        });
        *self.text.lock().unwrap_or_else(|p| p.into_inner()) = Some((v.to_vec(), owned));
        Ok(())
    }
}

//! Module configuration: `cache.<name>`, settable as `loadmodule` arguments
//! (`loadmodule libredis_cache.so lease-ms 3000`), in redis.conf after the `loadmodule` line
//! (`cache.lease-ms 3000`) and with `CONFIG SET/GET`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use redis_module::configuration::ConfigurationContext;
use redis_module::{ConfigurationValue, RedisError, RedisString};

use crate::commands::args::parse_beta;

pub const DEFAULT_BETA: &str = "1";
pub const DEFAULT_LEASE_MS: i64 = 5_000;
pub const DEFAULT_GRACE_MS: i64 = 0;
pub const DEFAULT_DELTA_MS: i64 = 100;
/// Upper bound of every time config: about 30 years, far from overflow when added to now.
pub const MAX_TIME_MS: i64 = 1_000_000_000_000;

/// `cache.lease-ms`: how long a fill lease lasts when the caller gives no `LEASE`/`PX`.
pub static LEASE_MS: AtomicI64 = AtomicI64::new(DEFAULT_LEASE_MS);
/// `cache.grace-ms`: stale-but-served time after fresh when a write gives no `GRACE`.
pub static GRACE_MS: AtomicI64 = AtomicI64::new(DEFAULT_GRACE_MS);
/// `cache.default-delta-ms`: recompute cost assumed until a fill measures or states one.
pub static DEFAULT_DELTA: AtomicI64 = AtomicI64::new(DEFAULT_DELTA_MS);
/// `cache.beta`: XFetch eagerness when GETX gives no `BETA`.
pub static BETA: BetaConfig = BetaConfig(AtomicU64::new(0x3FF0_0000_0000_0000)); // 1.0

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
    f64::from_bits(BETA.0.load(Ordering::Relaxed))
}

/// A finite positive float stored as a string config, validated on every set.
pub struct BetaConfig(AtomicU64);

impl ConfigurationValue<RedisString> for BetaConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(
            None,
            f64::from_bits(self.0.load(Ordering::Relaxed)).to_string(),
        )
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let beta = parse_beta(val.as_slice()).map_err(|e| RedisError::String(e.to_string()))?;
        self.0.store(beta.to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

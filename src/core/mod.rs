//! The pure core: no `redis_module` imports, no clock, no randomness of its own.
//! Everything here is tested with plain unit tests (`cargo test --lib`).

pub mod codec;
pub mod entry;
pub mod extras;
pub mod lock;
pub mod number;
pub mod slots;
#[cfg(test)]
pub mod spoil;
pub mod spread;
pub mod tags;
pub mod topology;
pub mod version;
pub mod waiters;
pub mod xfetch;

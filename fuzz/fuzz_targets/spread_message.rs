//! The cluster bus messages of tag invalidation on any bytes: refused, or exactly what their
//! encoding sends (`core::spread::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_cache::core::spread::check;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = check::decode(data) {
        panic!("{why}");
    }
});

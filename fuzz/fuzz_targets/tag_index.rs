//! The tag index under any sequence of operations (decoded from the bytes, three a piece),
//! held to the model of `core::tags::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_cache::core::tags::check;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = check::run(&check::ops_from_bytes(data)) {
        panic!("{why}");
    }
});

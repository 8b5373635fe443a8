//! The entry codec (RDB, DUMP/RESTORE, AOF and replication headers) on any bytes: refused, or
//! decoded to a header that encodes back to the same bytes (`core::codec::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_cache::core::codec::check;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = check::decode(data) {
        panic!("{why}");
    }
});

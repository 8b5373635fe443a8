//! Every command's parser on any argument vector (`commands::check::parse_any`): a request
//! that keeps the command's promises, or a parse error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_cache::commands::check::parse_any;
use redis_cache_fuzz::argv_from_bytes;

/// A real instant, so that the overflow checks near `i64::MAX` are reached.
const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let argv = argv_from_bytes(data);
    if let Some(Err(why)) = parse_any(&argv, NOW) {
        panic!("{why}");
    }
});

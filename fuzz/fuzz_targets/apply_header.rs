//! `CACHE.APPLY key header [value]` with any header: the command's parser refuses it or takes
//! exactly what the codec decodes, with and without a value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_cache::commands::check::parse_any;

fuzz_target!(|data: &[u8]| {
    let name: &[u8] = b"cache.apply";
    let (key, value): (&[u8], &[u8]) = (b"key", b"value");
    for argv in [&[name, key, data][..], &[name, key, data, value][..]] {
        if let Some(Err(why)) = parse_any(argv, 0) {
            panic!("{why}");
        }
    }
});

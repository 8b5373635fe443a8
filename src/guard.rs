//! The one panic guard for everything Redis calls (commands, type callbacks, blocked-client
//! callbacks, timers, events), and a panic hook that puts the panic in the Redis log. A panic
//! is a bug; unwinding into redis-server would abort it, so each entry point catches it and
//! answers or does nothing instead.

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use redis_module::raw;

/// Runs `f`; if it panics, runs `fallback` instead (after the hook has logged the panic).
pub fn catch<T>(f: impl FnOnce() -> T, fallback: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fallback())
}

/// Installs the hook once: the message and place of a panic go to the Redis log (level
/// warning) as well as to stderr, so an operator sees what the error reply only hints at.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = format!("<cache> panic (a bug; the server goes on): {info}");
            // Interior NULs would cut the C string: replace them.
            let text = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
            // SAFETY: RedisModule_Log accepts a null context (no module prefix) and a printf
            // format; the message goes in as an argument, never as the format.
            unsafe {
                if let Some(log) = raw::RedisModule_Log {
                    log(
                        std::ptr::null_mut(),
                        c"warning".as_ptr(),
                        c"%s".as_ptr(),
                        text.as_ptr(),
                    );
                }
            }
            previous(info);
        }));
    });
}

//! A Redis string argument (a key name, a value) borrowed from the command's argv.

use std::os::raw::c_char;

use redis_module::{raw, Context};

/// A command argument, borrowed from Redis's argv for the duration of the command (no copy,
/// no reference counting: the hot paths read a key and a few options per call).
#[repr(transparent)]
pub struct Arg(*mut raw::RedisModuleString);

impl Arg {
    /// Views Redis's argv as arguments.
    ///
    /// # Safety
    /// `argv` must point to `argc` live strings that outlive the returned slice.
    pub unsafe fn slice<'a>(argv: *mut *mut raw::RedisModuleString, argc: usize) -> &'a [Arg] {
        if argv.is_null() || argc == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `argc` live strings at `argv`; `Arg` is a
        // transparent wrapper of the pointer.
        unsafe { std::slice::from_raw_parts(argv.cast::<Arg>(), argc) }
    }

    /// Wraps a string the caller owns and keeps alive while the `Arg` is used.
    ///
    /// # Safety
    /// `s` must be a live RedisModuleString.
    pub unsafe fn from_raw(s: *mut raw::RedisModuleString) -> Arg {
        Arg(s)
    }

    pub fn as_slice(&self) -> &[u8] {
        let mut len = 0;
        // SAFETY: the string is live for the command; Redis returns its buffer and length.
        unsafe {
            let p: *const c_char = raw::RedisModule_StringPtrLen.unwrap()(self.0, &mut len);
            if p.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        }
    }

    pub fn raw(&self) -> *mut raw::RedisModuleString {
        self.0
    }
}

/// Runs `f` with `bytes` (a key name the module kept) as a temporary Redis string.
pub fn with_name<T>(ctx: &Context, bytes: &[u8], f: impl FnOnce(&Arg) -> T) -> T {
    // SAFETY: a live context; the string lives until freed below, and `f` only borrows it.
    unsafe {
        let name =
            raw::RedisModule_CreateString.unwrap()(ctx.ctx, bytes.as_ptr().cast(), bytes.len());
        let out = f(&Arg::from_raw(name));
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        out
    }
}

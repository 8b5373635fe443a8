//! A thin owner of a raw `RedisModuleKey`: open, look at the entry, store, expire, delete,
//! and close on drop. The crate's safe key types lack absolute expiry and a cheap type check.

use std::os::raw::c_void;
use std::ptr::NonNull;

use redis_module::{raw, Context};

use super::arg::Arg;
use super::datatype::{self, CACHE_TYPE};
use crate::core::entry::Entry;
use crate::error::CacheError;

pub enum Kind {
    Empty,
    Entry,
    Other,
}

pub struct Key {
    inner: NonNull<raw::RedisModuleKey>,
}

impl Key {
    /// Opens `name` for reading, or reading and writing. `None` only when Redis returns no
    /// handle (a read of a missing key).
    pub fn open(ctx: &Context, name: &Arg, write: bool) -> Option<Key> {
        let mode = if write {
            raw::KeyMode::READ | raw::KeyMode::WRITE
        } else {
            raw::KeyMode::READ
        };
        // SAFETY: ctx and name are live for the duration of the command.
        let ptr = unsafe { raw::RedisModule_OpenKey.unwrap()(ctx.ctx, name.raw(), mode.bits()) };
        NonNull::new(ptr.cast::<raw::RedisModuleKey>()).map(|inner| Key { inner })
    }

    fn raw(&self) -> *mut raw::RedisModuleKey {
        self.inner.as_ptr()
    }

    pub fn kind(&self) -> Kind {
        // SAFETY: the key handle is open. GetType answers null for an empty key and for keys
        // that are not module values, so the common case (our entry) takes one call.
        unsafe {
            let mt = raw::RedisModule_ModuleTypeGetType.unwrap()(self.raw());
            if !mt.is_null() && mt == *CACHE_TYPE.raw_type.borrow() {
                Kind::Entry
            } else if raw::RedisModule_KeyType.unwrap()(self.raw())
                == raw::REDISMODULE_KEYTYPE_EMPTY as i32
            {
                Kind::Empty
            } else {
                Kind::Other
            }
        }
    }

    /// The entry stored at this key. Call only after `kind()` said `Entry`.
    #[allow(clippy::mut_from_ref)]
    pub fn entry(&self) -> Option<&mut Entry> {
        // SAFETY: values of our module type are always `Box<Entry>` pointers.
        unsafe {
            let p = raw::RedisModule_ModuleTypeGetValue.unwrap()(self.raw()).cast::<Entry>();
            p.as_mut()
        }
    }

    /// Stores `entry` and, with `set_ttl`, sets the key's expiry from it. `replace` says the
    /// key already holds an entry: it is swapped in place (the old one freed here), which
    /// Redis does not treat as a delete of the key (no unlink callback, no lease counted as
    /// revoked).
    pub fn store(&self, entry: Entry, replace: bool, set_ttl: bool) {
        let expires = entry.key_expires_at();
        let ptr = datatype::into_raw(entry).cast::<c_void>();
        let mt = *CACHE_TYPE.raw_type.borrow();
        // SAFETY: the key is open for writing; it is empty (set) or holds our type (replace),
        // as the callers checked with `kind()`.
        unsafe {
            if replace {
                let mut old: *mut c_void = std::ptr::null_mut();
                raw::RedisModule_ModuleTypeReplaceValue.unwrap()(self.raw(), mt, ptr, &mut old);
                if !old.is_null() {
                    datatype::free_entry(old.cast::<Entry>());
                }
            } else {
                raw::RedisModule_ModuleTypeSetValue.unwrap()(self.raw(), mt, ptr);
            }
        }
        if set_ttl {
            self.set_expiry(expires);
        }
    }

    /// Sets the key's absolute expiry, or removes it.
    pub fn set_expiry(&self, at_ms: Option<i64>) {
        // SAFETY: the key is open for writing and holds a value.
        unsafe {
            match at_ms {
                Some(at) => raw::RedisModule_SetAbsExpire.unwrap()(self.raw(), at.max(1)),
                None => raw::RedisModule_SetExpire.unwrap()(
                    self.raw(),
                    raw::REDISMODULE_NO_EXPIRE.into(),
                ),
            };
        }
    }

    /// Whether the key holds nothing (never existed, or was just deleted).
    pub fn is_empty(&self) -> bool {
        matches!(self.kind(), Kind::Empty)
    }

    pub fn delete(&self) {
        // SAFETY: the key is open for writing.
        unsafe { raw::RedisModule_DeleteKey.unwrap()(self.raw()) };
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: opened by RedisModule_OpenKey and closed exactly once here.
        unsafe { raw::RedisModule_CloseKey.unwrap()(self.raw()) };
    }
}

/// Opens a key to read an entry: `None` when the key does not exist, `WRONGTYPE` when it
/// holds something else.
pub fn open_entry(ctx: &Context, name: &Arg) -> Result<Option<Key>, CacheError> {
    let Some(key) = Key::open(ctx, name, false) else {
        return Ok(None);
    };
    match key.kind() {
        Kind::Empty => Ok(None),
        Kind::Entry => Ok(Some(key)),
        Kind::Other => Err(CacheError::WrongType),
    }
}

/// Opens a key to write an entry; the flag says whether an entry is already there.
pub fn open_entry_writable(ctx: &Context, name: &Arg) -> Result<(Key, bool), CacheError> {
    let key = Key::open(ctx, name, true).ok_or(CacheError::Internal)?;
    match key.kind() {
        Kind::Empty => Ok((key, false)),
        Kind::Entry => Ok((key, true)),
        Kind::Other => Err(CacheError::WrongType),
    }
}

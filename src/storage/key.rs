//! Typed handles over a raw `RedisModuleKey`: `ReadKey` (holds an entry, read it) and
//! `WriteKey` (empty or holding an entry: change it, store, expire, delete), closed on drop.
//! The crate's safe key types lack absolute expiry and a cheap type check.

use std::os::raw::c_void;
use std::ptr::NonNull;

use redis_module::{raw, Context};

use super::arg::Arg;
use super::datatype::{self, CACHE_TYPE};
use super::{notify, replicate, server, tagindex};
use crate::core::entry::Entry;
use crate::error::CacheError;
use crate::stats;

enum Kind {
    Empty,
    Entry,
    Other,
}

/// Whether `store` sets the key's expiry from the entry or leaves the key's TTL as it is (an
/// AOF-rewrite record, whose TTL Redis writes after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    FromEntry,
    Keep,
}

/// A raw key handle, closed on drop. Only the typed handles below hand it out.
struct Key {
    inner: NonNull<raw::RedisModuleKey>,
}

impl Key {
    /// Opens `name` for reading, or reading and writing. `None` only when Redis returns no
    /// handle (a read of a missing key).
    fn open(ctx: &Context, name: &Arg, mode: raw::KeyMode) -> Option<Key> {
        // SAFETY: ctx and name are live for the duration of the command.
        let ptr = unsafe { raw::RedisModule_OpenKey.unwrap()(ctx.ctx, name.raw(), mode.bits()) };
        NonNull::new(ptr.cast::<raw::RedisModuleKey>()).map(|inner| Key { inner })
    }

    fn raw(&self) -> *mut raw::RedisModuleKey {
        self.inner.as_ptr()
    }

    fn kind(&self) -> Kind {
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

    /// The entry the key holds; null unless `kind()` is `Entry`.
    fn value(&self) -> *mut Entry {
        // SAFETY: the key handle is open; values of our module type are always the
        // `Box<Entry>` pointers `datatype::into_raw` made.
        unsafe { raw::RedisModule_ModuleTypeGetValue.unwrap()(self.raw()).cast::<Entry>() }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: opened by RedisModule_OpenKey and closed exactly once here.
        unsafe { raw::RedisModule_CloseKey.unwrap()(self.raw()) };
    }
}

/// A key open for reading that holds an entry.
pub struct ReadKey {
    key: Key,
}

impl ReadKey {
    pub fn entry(&self) -> &Entry {
        // SAFETY: `open_entry` checked the key holds our type, so the value is a live
        // `Box<Entry>`; a read handle cannot replace it, and the borrow ends before the
        // handle is closed.
        unsafe { self.key.value().as_ref() }.expect("a key of the cache type holds an entry")
    }
}

/// A key open for writing: empty, or holding an entry (never another type). It knows its
/// database, so that whatever it stores is counted by the tag index.
pub struct WriteKey {
    key: Key,
    db: i32,
}

impl WriteKey {
    /// Whether the key holds an entry now.
    pub fn holds_entry(&self) -> bool {
        matches!(self.key.kind(), Kind::Entry)
    }

    /// The entry the key holds now, to read or change in place.
    pub fn entry(&mut self) -> Option<&mut Entry> {
        if !self.holds_entry() {
            return None;
        }
        // SAFETY: the key holds our type (checked just above), so the value is a live
        // `Box<Entry>` owned by Redis; the `&mut self` borrow makes this the only reference
        // through this handle until it ends.
        unsafe { self.key.value().as_mut() }
    }

    /// Stores `entry`, replacing the entry the key holds (in place: Redis does not treat it
    /// as a delete of the key, so no unlink callback and no lease counted as revoked) or
    /// setting it on the empty key; `ttl` says whether the key's expiry follows the entry.
    pub fn store(&mut self, entry: Entry, ttl: Ttl) {
        let expires = entry.key_expires_at();
        let replace = self.holds_entry();
        let raw_entry = datatype::into_raw(entry);
        let ptr = raw_entry.cast::<c_void>();
        let mt = *CACHE_TYPE.raw_type.borrow();
        // SAFETY: the key is open for writing; it holds our type (replace) or nothing (set),
        // as `holds_entry` and `open_entry_writable` established. The old value Redis hands
        // back is ours to free.
        unsafe {
            if replace {
                let mut old: *mut c_void = std::ptr::null_mut();
                raw::RedisModule_ModuleTypeReplaceValue.unwrap()(self.key.raw(), mt, ptr, &mut old);
                if let Some(old) = old.cast::<Entry>().as_mut() {
                    tagindex::forget(old, self.db);
                    datatype::free_entry(old);
                }
            } else {
                raw::RedisModule_ModuleTypeSetValue.unwrap()(self.key.raw(), mt, ptr);
            }
            // The key now holds `raw_entry`, alive while Redis keeps it, and nothing else
            // refers to it yet.
            tagindex::indexed(&mut *raw_entry, self.db);
        }
        if ttl == Ttl::FromEntry {
            self.set_expiry(expires);
        }
    }

    /// Sets the key's absolute expiry, or removes it.
    pub fn set_expiry(&mut self, at_ms: Option<i64>) {
        // SAFETY: the key is open for writing and holds a value.
        unsafe {
            match at_ms {
                Some(at) => raw::RedisModule_SetAbsExpire.unwrap()(self.key.raw(), at.max(1)),
                None => raw::RedisModule_SetExpire.unwrap()(
                    self.key.raw(),
                    raw::REDISMODULE_NO_EXPIRE.into(),
                ),
            };
        }
    }

    pub fn delete(&mut self) {
        // SAFETY: the key is open for writing.
        unsafe { raw::RedisModule_DeleteKey.unwrap()(self.key.raw()) };
    }
}

/// Opens a key to read an entry: `None` when the key does not exist, `WRONGTYPE` when it
/// holds something else.
pub fn open_entry(ctx: &Context, name: &Arg) -> Result<Option<ReadKey>, CacheError> {
    let Some(key) = Key::open(ctx, name, raw::KeyMode::READ) else {
        return Ok(None);
    };
    match key.kind() {
        Kind::Empty => Ok(None),
        Kind::Entry => {
            let key = ReadKey { key };
            // An entry invalidated by a tag reads as absent until the removal walk takes it out.
            if tagindex::invalidated(|| server::selected_db(ctx), key.entry()) {
                return Ok(None);
            }
            Ok(Some(key))
        }
        Kind::Other => Err(CacheError::WrongType),
    }
}

/// An entry landed on `name` (`COPY`, `RENAME`, `MOVE`, `RESTORE`): the tag index counts it,
/// invalidated or not. Changes no data, so it may run inside a keyspace notification.
pub fn index_landed(ctx: &Context, name: &Arg) {
    let Some(key) = Key::open(ctx, name, raw::KeyMode::READ) else {
        return;
    };
    if !matches!(key.kind(), Kind::Entry) {
        return;
    }
    // SAFETY: the key holds our type, so the value is a live `Box<Entry>` that Redis owns;
    // nothing else refers to it during this call (main thread), and only the entry's index
    // mark changes, which Redis never reads.
    if let Some(entry) = unsafe { key.value().as_mut() } {
        tagindex::indexed(entry, server::selected_db(ctx));
    }
}

/// Opens a key to write an entry: empty or holding one; `WRONGTYPE` when it holds something
/// else.
pub fn open_entry_writable(ctx: &Context, name: &Arg) -> Result<WriteKey, CacheError> {
    let key = Key::open(ctx, name, raw::KeyMode::READ | raw::KeyMode::WRITE)
        .ok_or(CacheError::Internal)?;
    let mut key = match key.kind() {
        Kind::Empty | Kind::Entry => WriteKey {
            key,
            db: server::selected_db(ctx),
        },
        Kind::Other => return Err(CacheError::WrongType),
    };
    // An entry invalidated by a tag is gone for every command: whatever is written now
    // starts from an empty key. Its removal is an effect like any delete.
    let db = key.db;
    if key.entry().is_some_and(|e| tagindex::invalidated(|| db, e)) {
        key.delete();
        replicate::deleted(ctx, &[name]);
        notify::del(ctx, name);
        stats::TAG_REMOVED.incr();
    }
    Ok(key)
}

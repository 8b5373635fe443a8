//! The `cache-ent` module data type: RDB save/load, AOF rewrite, free, copy, memory usage and
//! digest. RDB, DUMP/RESTORE and replication all use the one codec in `core::codec`.
//!
//! Every callback catches panics: an unwinding panic must never cross into redis-server.

use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};

use redis_module::native_types::RedisType;
use redis_module::raw;

use super::arg::Arg;
use super::ids;
use super::server::{self, LoadSource};
use super::tagindex;
use super::unlinked::{self, Counted};
use crate::core::codec::{self, ValueSlot};
use crate::core::entry::Entry;
use crate::core::tags::Tomb;
use crate::core::version::is_valid_id;
use crate::guard;
use crate::stats;

/// RDB encoding version of the type (the codec format inside is versioned as well).
pub const ENCODING_VERSION: i32 = 1;

/// Live entries in this server (all databases): counted at creation, uncounted in `free`.
static LIVE_ENTRIES: AtomicI64 = AtomicI64::new(0);

pub fn live_entries() -> i64 {
    LIVE_ENTRIES.load(Ordering::Relaxed)
}

pub static CACHE_TYPE: RedisType = RedisType::new(
    "cache-ent",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        free: Some(free),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save2: None,
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: Some(copy),
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        // The variant that says which database the key leaves, for the tag index.
        unlink2: Some(unlink),
    },
);

/// Boxes an entry for Redis to own; paired with `free`.
pub fn into_raw(entry: Entry) -> *mut Entry {
    LIVE_ENTRIES.fetch_add(1, Ordering::Relaxed);
    Box::into_raw(Box::new(entry))
}

/// Whether the ids an entry carries are no further ahead of the clock than a client's payload
/// may bring (see `core::version::MAX_AHEAD_MS`).
fn ids_are_plausible(entry: &Entry) -> bool {
    ids::is_plausible(entry.version) && entry.lease().is_none_or(|l| ids::is_plausible(l.token))
}

/// Records the ids an entry carries so this server never issues them again.
pub fn observe_ids(entry: &Entry) {
    ids::observe(entry.version);
    if let Some(l) = entry.lease() {
        ids::observe(l.token);
        // An invalidation must outlive this lease too (see `tagindex::lease_granted`).
        tagindex::lease_granted(l.expires_ms);
    }
}

fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    guard::catch(f, || fallback)
}

/// Reads one string from the RDB stream; `None` on an I/O error (short read, bad payload).
///
/// # Safety
/// `rdb` must be the I/O handle Redis passed to the `rdb_load` callback running now.
unsafe fn load_bytes(rdb: *mut raw::RedisModuleIO) -> Option<Vec<u8>> {
    let mut len: usize = 0;
    // SAFETY: `rdb` is live for the callback (the caller's contract); Redis returns a buffer
    // it allocated (or null on an I/O error) and its length.
    let p = unsafe { raw::RedisModule_LoadStringBuffer.unwrap()(rdb, &mut len) };
    // SAFETY: as above; a plain query of the handle's error flag.
    if unsafe { raw::RedisModule_IsIOError.unwrap()(rdb) } != 0 {
        if !p.is_null() {
            // SAFETY: `p` came from RedisModule_LoadStringBuffer and is freed once, here.
            unsafe { raw::RedisModule_Free.unwrap()(p.cast::<c_void>()) };
        }
        return None;
    }
    if p.is_null() {
        return (len == 0).then(Vec::new);
    }
    let mut out = Vec::new();
    let ok = out.try_reserve_exact(len).is_ok();
    if ok {
        // SAFETY: Redis returned `len` readable bytes at `p`, alive until freed below.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) });
    }
    // SAFETY: `p` came from RedisModule_LoadStringBuffer and is freed once, here.
    unsafe { raw::RedisModule_Free.unwrap()(p.cast::<c_void>()) };
    ok.then_some(out)
}

/// Redis hands every callback below a value pointer it got from `into_raw` (or from `rdb_load`
/// and `copy`, which return `into_raw` pointers): a live `Box<Entry>` that Redis owns and that
/// no other reference touches while the callback runs (Redis runs them on its main thread,
/// and `free` only once the value is unreachable).
///
/// # Safety
/// `value` must be such a pointer, alive for `'a`.
unsafe fn entry_at<'a>(value: *const c_void) -> &'a Entry {
    // SAFETY: the caller's contract above.
    unsafe { &*value.cast::<Entry>() }
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        if encver != ENCODING_VERSION {
            return ptr::null_mut();
        }
        // SAFETY: `rdb` is the handle of this rdb_load call.
        let Some(header) = (unsafe { load_bytes(rdb) }) else {
            return ptr::null_mut();
        };
        let Ok(codec::Header {
            mut entry,
            value: slot,
            keep_ttl,
        }) = codec::decode_header(&header)
        else {
            return ptr::null_mut();
        };
        if keep_ttl {
            // An AOF-only marker: never part of a saved value.
            return ptr::null_mut();
        }
        match slot {
            ValueSlot::None => {}
            // SAFETY: `rdb` is the handle of this rdb_load call.
            ValueSlot::Present => match unsafe { load_bytes(rdb) } {
                Some(v) => entry.value = Some(v.into_boxed_slice()),
                None => return ptr::null_mut(),
            },
            // "keep the value" only makes sense as a replicated effect, never in a payload.
            ValueSlot::Keep => return ptr::null_mut(),
        }
        // A client's RESTORE must not move this server's clock far ahead (towards the id
        // limit): ids are time-based, so ids far ahead of the clock can only be forged. Data
        // this server or its primary wrote loads exactly.
        if server::load_source() == LoadSource::Restore && !ids_are_plausible(&entry) {
            return ptr::null_mut();
        }
        observe_ids(&entry);
        into_raw(entry).cast::<c_void>()
    })
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    guarded((), || {
        // SAFETY: Redis passes the value of the key being saved (see `entry_at`).
        let entry = unsafe { entry_at(value) };
        raw::save_slice(rdb, &codec::encode_header(entry, false));
        if let Some(v) = &entry.value {
            raw::save_slice(rdb, v);
        }
    })
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    guarded((), || {
        // SAFETY: Redis passes the value of the key being rewritten (see `entry_at`).
        let entry = unsafe { entry_at(value) };
        // SAFETY: `aof` is the handle of this callback.
        let db = unsafe { raw::RedisModule_GetDbIdFromIO.unwrap()(aof) };
        // SAFETY: as above.
        unsafe { emit_invalidations(aof, db) };
        if tagindex::invalidated(|| db, entry) {
            // Invalidated and not removed yet: the rewritten AOF does not bring it back.
            return;
        }
        let header = codec::encode_aof_header(entry);
        let cmd = c"CACHE.APPLY".as_ptr();
        // SAFETY: the API pointers are set once by RedisModule_Init and only read after;
        // `aof` and `key` are live for the callback; the format letters match the arguments
        // (s = RedisModuleString*, b = a buffer and its length), and the buffers outlive the
        // call, which copies them.
        unsafe {
            let emit = raw::RedisModule_EmitAOF.unwrap();
            match &entry.value {
                Some(v) => emit(
                    aof,
                    cmd,
                    c"sbb".as_ptr(),
                    key,
                    header.as_ptr().cast::<c_char>(),
                    header.len(),
                    v.as_ptr().cast::<c_char>(),
                    v.len(),
                ),
                None => emit(
                    aof,
                    cmd,
                    c"sb".as_ptr(),
                    key,
                    header.as_ptr().cast::<c_char>(),
                    header.len(),
                ),
            }
        }
    })
}

thread_local! {
    /// The databases whose invalidations this AOF rewrite has written. The rewrite runs in a
    /// forked child, which starts from the parent's empty list each time.
    static INVALIDATIONS_WRITTEN: std::cell::RefCell<Vec<c_int>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes the invalidations in force in `db` into the AOF being rewritten, once per database,
/// before its first entry: replaying the rewritten file restores them (as `CACHE.TAGAPPLY`).
///
/// # Safety
/// `aof` must be the handle of the `aof_rewrite` callback running now.
unsafe fn emit_invalidations(aof: *mut raw::RedisModuleIO, db: c_int) {
    let first = INVALIDATIONS_WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        let first = !w.contains(&db);
        if first {
            w.push(db);
        }
        first
    });
    if !first {
        return;
    }
    for (tomb_db, tag, tomb) in tagindex::with(|ix| ix.tombs()) {
        if tomb_db != db {
            continue;
        }
        // SAFETY: `aof` is live (the caller's contract); l = long long, b = a buffer and its
        // length, which outlives the call.
        unsafe {
            raw::RedisModule_EmitAOF.unwrap()(
                aof,
                c"CACHE.TAGAPPLY".as_ptr(),
                c"llb".as_ptr(),
                tomb.id as std::os::raw::c_longlong,
                tomb.until_ms as std::os::raw::c_longlong,
                tag.as_ptr().cast::<c_char>(),
                tag.len(),
            );
        }
    }
}

/// The version of the aux data (the invalidations in force) saved before the keys of an RDB.
const AUX_VERSION: u64 = 1;

/// Saves the invalidations in force, so that an RDB (a restart, `DEBUG RELOAD`, a full sync,
/// an AOF with an RDB preamble) keeps invalidated entries absent until removed.
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    guarded((), || {
        if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
            return;
        }
        let tombs = tagindex::with(|ix| ix.tombs());
        // SAFETY: `rdb` is the handle of this callback; the API pointers are set at load.
        unsafe {
            raw::RedisModule_SaveUnsigned.unwrap()(rdb, AUX_VERSION);
            raw::RedisModule_SaveUnsigned.unwrap()(rdb, tombs.len() as u64);
            for (db, tag, tomb) in &tombs {
                raw::RedisModule_SaveSigned.unwrap()(rdb, i64::from(*db));
                raw::save_slice(rdb, tag);
                raw::RedisModule_SaveUnsigned.unwrap()(rdb, tomb.id);
                raw::RedisModule_SaveSigned.unwrap()(rdb, tomb.until_ms);
            }
        }
    })
}

/// Loads what `aux_save` wrote; an I/O error or an unknown version fails the load.
unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int {
    let ok = raw::REDISMODULE_OK as c_int;
    let err = raw::REDISMODULE_ERR as c_int;
    guarded(err, || {
        if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
            return ok;
        }
        if encver != ENCODING_VERSION {
            return err;
        }
        // SAFETY: `rdb` is the handle of this callback; every read is checked for an I/O
        // error before its value is used.
        unsafe {
            let io_error = || raw::RedisModule_IsIOError.unwrap()(rdb) != 0;
            let version = raw::RedisModule_LoadUnsigned.unwrap()(rdb);
            let count = raw::RedisModule_LoadUnsigned.unwrap()(rdb);
            if io_error() || version != AUX_VERSION {
                return err;
            }
            for _ in 0..count {
                let db = raw::RedisModule_LoadSigned.unwrap()(rdb);
                let Some(tag) = load_bytes(rdb) else {
                    return err;
                };
                let id = raw::RedisModule_LoadUnsigned.unwrap()(rdb);
                let until_ms = raw::RedisModule_LoadSigned.unwrap()(rdb);
                if io_error() || !is_valid_id(id) {
                    return err;
                }
                let Ok(db) = i32::try_from(db) else {
                    return err;
                };
                ids::observe(id);
                tagindex::lease_granted(until_ms);
                tagindex::with(|ix| ix.invalidate(db, &[&tag], Tomb { id, until_ms }));
            }
        }
        ok
    })
}

/// Frees an entry that Redis no longer holds (one replaced through `ReplaceValue`).
pub fn free_entry(value: *mut Entry) {
    // SAFETY: `value` came from `into_raw` and Redis gave up its pointer to it.
    unsafe { free(value.cast::<c_void>()) }
}

/// A key leaves the keyspace (DEL, UNLINK, expiry, eviction, overwrite by another command):
/// its outstanding lease is revoked, or had already run out unfilled. Counted here because
/// these paths never pass through a CACHE command.
/// `RENAME` and `MOVE` unlink the source key too; `unlinked` takes the count back when its
/// notification says the entry moved.
unsafe extern "C" fn unlink(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    guarded((), || {
        // SAFETY: Redis passes the value of the key leaving the keyspace, a live `into_raw`
        // box that nothing else refers to during the callback (main thread); Redis made it
        // from our `*mut` and only the index mark changes, which Redis never reads. `ctx` is
        // the callback's live option context.
        let (entry, db, key) = unsafe {
            (
                &mut *value.cast_mut().cast::<Entry>(),
                raw::RedisModule_GetDbIdFromOptCtx.unwrap()(ctx),
                raw::RedisModule_GetKeyNameFromOptCtx.unwrap()(ctx).cast_mut(),
            )
        };
        tagindex::forget(entry, db);
        let counted = match entry.lease() {
            Some(lease) if lease.is_active(ids::now_ms()) => {
                stats::LEASES_REVOKED.incr();
                Counted::Revoked
            }
            Some(_) => {
                stats::LEASES_EXPIRED.incr();
                Counted::Expired
            }
            None => Counted::Nothing,
        };
        if !key.is_null() {
            // SAFETY: a non-null key name Redis passes is live for the callback.
            let name = unsafe { Arg::from_raw(key) };
            unlinked::unlinked(name.as_slice(), counted);
        }
    })
}

unsafe extern "C" fn free(value: *mut c_void) {
    guarded((), || {
        if !value.is_null() {
            // SAFETY: Redis frees each value once, when nothing references it any more; it
            // is an `into_raw` box (see `entry_at`), so it is ours to drop.
            drop(unsafe { Box::from_raw(value.cast::<Entry>()) });
            LIVE_ENTRIES.fetch_sub(1, Ordering::Relaxed);
        }
    })
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    // SAFETY: Redis passes the value of the key it measures (see `entry_at`).
    guarded(0, || unsafe { entry_at(value) }.heap_size())
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    guarded((), || {
        // SAFETY: Redis passes the value of the key it digests (see `entry_at`).
        let entry = unsafe { entry_at(value) };
        let header = codec::encode_header(entry, false);
        // SAFETY: the API pointers are set once by RedisModule_Init and only read after; `md`
        // is live for the callback; the buffers are read during each call only (the API
        // takes `*mut` but does not write through it).
        unsafe {
            let add = raw::RedisModule_DigestAddStringBuffer.unwrap();
            add(
                md,
                header.as_ptr().cast::<c_char>().cast_mut(),
                header.len(),
            );
            if let Some(v) = &entry.value {
                add(md, v.as_ptr().cast::<c_char>().cast_mut(), v.len());
            }
            raw::RedisModule_DigestEndSequence.unwrap()(md);
        }
    })
}

/// `COPY`: the copy gets the value and its history, not the lease (the lease belongs to
/// whoever is filling the original key).
unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        // SAFETY: Redis passes the value of the key being copied (see `entry_at`).
        let mut entry = unsafe { entry_at(value) }.clone();
        entry.set_lease(None);
        // The copy is counted when it lands (`copy_to`), in its own database.
        entry.set_indexed(false);
        into_raw(entry).cast::<c_void>()
    })
}

//! Rebuilding the tag index from the keyspace after a load (RDB, AOF, full sync): a scan of
//! every database for entries that carry tags.

use std::os::raw::c_void;

use redis_module::{raw, Context};

use crate::core::entry::Entry;
use crate::guard;
use crate::storage::datatype::CACHE_TYPE;
use crate::storage::tagindex::{self, id_of};

use super::removal;

/// Rebuilds the index from the keyspace (after a load): every database, every key of the
/// module's type that carries tags.
pub fn rebuild(ctx: &Context) {
    // The invalidations came with the load (RDB aux data, AOF records): keep them.
    tagindex::with(|ix| ix.clear_entries());
    // SAFETY: a live context of a server event (main thread); the cursor is freed below and
    // the callback only reads the keys Redis hands it.
    unsafe {
        let original = raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx);
        let mut db = 0;
        while raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) == raw::REDISMODULE_OK as i32 {
            let cursor = raw::RedisModule_ScanCursorCreate.unwrap()();
            let mut at_db = db;
            while raw::RedisModule_Scan.unwrap()(
                ctx.ctx,
                cursor,
                Some(index_scanned),
                (&mut at_db as *mut i32).cast::<c_void>(),
            ) != 0
            {}
            raw::RedisModule_ScanCursorDestroy.unwrap()(cursor);
            db += 1;
        }
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, original);
    }
    if tagindex::with(|ix| ix.pending_removal()) > 0 {
        removal::arm(ctx);
    }
}

/// One key of the rebuild's scan.
extern "C" fn index_scanned(
    _ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    data: *mut c_void,
) {
    guard::catch(
        || {
            if key.is_null() {
                return;
            }
            // SAFETY: Redis hands the scan callback an open key and its name for the call;
            // `data` is the database number `rebuild` passed; a value of our type is a live
            // `Box<Entry>` (see `datatype`).
            unsafe {
                let mt = raw::RedisModule_ModuleTypeGetType.unwrap()(key);
                if mt.is_null() || mt != *CACHE_TYPE.raw_type.borrow() {
                    return;
                }
                let entry = raw::RedisModule_ModuleTypeGetValue.unwrap()(key).cast::<Entry>();
                let Some(entry) = entry.as_ref() else {
                    return;
                };
                if !entry.has_tags() {
                    return;
                }
                let mut len = 0;
                let p = raw::RedisModule_StringPtrLen.unwrap()(name, &mut len);
                let key_name = std::slice::from_raw_parts(p.cast::<u8>(), len);
                let db = *data.cast::<i32>();
                tagindex::with(|ix| {
                    // Invalidated before the save and not yet removed: removal goes on.
                    if ix.is_invalidated(db, entry.tags(), entry.version) {
                        ix.queue_removal(db, key_name);
                    } else {
                        ix.set(id_of(entry), db, key_name, entry.tags());
                    }
                });
            }
        },
        || (),
    )
}

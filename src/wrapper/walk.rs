//! Walking a database's entries with `RedisModule_Scan`, a step at a time: the rebuild of the
//! tag index after a load, and the removal of invalidated entries (`removal`). A walk keeps
//! SCAN's promise: every key there from its start to its end is visited at least once, however
//! the keyspace changes between steps.

use std::os::raw::c_void;
use std::ptr::NonNull;

use redis_module::{raw, Context};

use crate::core::entry::Entry;
use crate::guard;
use crate::storage::datatype::CACHE_TYPE;

/// A scan cursor, destroyed on drop.
pub struct Cursor(NonNull<raw::RedisModuleScanCursor>);

impl Cursor {
    pub fn new() -> Cursor {
        // SAFETY: creating a cursor has no preconditions; it is destroyed once, on drop.
        let p = unsafe { raw::RedisModule_ScanCursorCreate.unwrap()() };
        Cursor(NonNull::new(p).expect("RedisModule_ScanCursorCreate returned null"))
    }
}

impl Default for Cursor {
    fn default() -> Cursor {
        Cursor::new()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // SAFETY: made by RedisModule_ScanCursorCreate, destroyed exactly once here.
        unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.0.as_ptr()) };
    }
}

/// What one step hands its callback: the entries seen, and how many keys of any type.
struct Step<'a> {
    each: &'a mut dyn FnMut(&[u8], &mut Entry),
    keys: usize,
}

/// One step of the walk of `ctx`'s selected database: `each` gets the name and entry of every
/// key of the module's type in the next part of the keyspace. Returns how many keys the step
/// saw (of any type) and whether the walk goes on.
pub fn step(
    ctx: &Context,
    cursor: &Cursor,
    each: &mut dyn FnMut(&[u8], &mut Entry),
) -> (usize, bool) {
    let mut state = Step { each, keys: 0 };
    // SAFETY: a live context and cursor; `state` outlives the call, and the callback only
    // runs during it.
    let more = unsafe {
        raw::RedisModule_Scan.unwrap()(
            ctx.ctx,
            cursor.0.as_ptr(),
            Some(scanned),
            (&mut state as *mut Step).cast::<c_void>(),
        )
    };
    (state.keys, more != 0)
}

extern "C" fn scanned(
    _ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    data: *mut c_void,
) {
    guard::catch(
        || {
            // SAFETY: `data` is the `Step` of the `step` call running now.
            let state = unsafe { &mut *data.cast::<Step>() };
            state.keys += 1;
            if key.is_null() {
                return;
            }
            // SAFETY: Redis hands the callback an open key and its name for the call; a
            // value of our type is a live `Box<Entry>` (see `datatype`) that nothing else
            // refers to during the call (main thread).
            unsafe {
                let mt = raw::RedisModule_ModuleTypeGetType.unwrap()(key);
                if mt.is_null() || mt != *CACHE_TYPE.raw_type.borrow() {
                    return;
                }
                let entry = raw::RedisModule_ModuleTypeGetValue.unwrap()(key).cast::<Entry>();
                let Some(entry) = entry.as_mut() else {
                    return;
                };
                let mut len = 0;
                let p = raw::RedisModule_StringPtrLen.unwrap()(name, &mut len);
                (state.each)(std::slice::from_raw_parts(p.cast::<u8>(), len), entry);
            }
        },
        || (),
    )
}

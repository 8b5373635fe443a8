//! Rebuilding the tag index from the keyspace after a load (RDB, AOF, full sync): a walk of
//! every database, counting each entry that carries tags (or, invalidated by an invalidation
//! that came with the load, counting it as pending removal).

use redis_module::Context;

use super::removal;
use super::walk::{self, Cursor};
use crate::storage::{server, tagindex};

/// Rebuilds the index from the keyspace (after a load).
pub fn rebuild(ctx: &Context) {
    // The invalidations came with the load (RDB aux data, AOF records): keep them.
    tagindex::with(|ix| ix.clear_entries());
    let original = server::selected_db(ctx);
    let mut db = 0;
    while server::select_db(ctx, db) {
        let cursor = Cursor::new();
        let mut each = move |_: &[u8], entry: &mut crate::core::entry::Entry| {
            // Entries stored while loading were counted then; the count starts again.
            entry.set_indexed(false);
            tagindex::indexed(entry, db);
        };
        while walk::step(ctx, &cursor, &mut each).1 {}
        db += 1;
    }
    server::select_db(ctx, original);
    if tagindex::with(|ix| ix.walk_needed()) {
        removal::arm(ctx);
    }
}

//! One tag invalidation applied on this node, whoever asked for it (a client's
//! `CACHE.TAGINVALIDATE`, another primary over the cluster bus): the tomb at a new id, the
//! index told, the removal walk armed, parked `LOCKGET` callers looked at again, the counters,
//! and the effect replicated as `CACHE.TAGAPPLY`, so replicas and the AOF apply the same tomb.

use redis_module::{raw, Context, RedisString};

use crate::core::spread::SpreadId;
use crate::core::tags::Tomb;
use crate::error::CacheError;
use crate::stats;
use crate::storage::{ids, tagindex};

use super::{blocked, removal};

/// Invalidates `tags` in database `db` now: the invalidation's id and how many entries it
/// invalidated. `from` is the
/// cluster-wide invalidation this applies for another primary, if it is one: replicas then
/// record its id too, so that one promoted later confirms a resend without applying it again.
pub fn apply_new(
    ctx: &Context,
    db: i32,
    tags: &[&[u8]],
    from: Option<&SpreadId>,
) -> Result<(u64, usize), CacheError> {
    let now = ids::now_ms();
    let tomb = Tomb {
        id: ids::next_id(now)?,
        // Every lease granted so far ends by then: after it, no fill from before this
        // invalidation can come.
        until_ms: tagindex::leases_end_by().max(now),
    };
    let n = apply(ctx, db, tags, tomb);
    stats::TAG_INVALIDATIONS.incr();
    stats::TAG_ENTRIES_INVALIDATED.add(n as u64);
    replicate(ctx, tomb, tags, from);
    Ok((tomb.id, n))
}

/// Applies an invalidation with a given tomb (a new one, or one replicated or loaded); the
/// number of entries it invalidated.
pub fn apply(ctx: &Context, db: i32, tags: &[&[u8]], tomb: Tomb) -> usize {
    let n = tagindex::with(|ix| ix.invalidate(db, tags, tomb));
    removal::arm(ctx);
    if n > 0 {
        blocked::every_line_due(ctx);
    }
    n
}

/// The effect: `CACHE.TAGAPPLY [SPREAD origin seq] id until-ms tag [tag ...]`, in the
/// database it was applied in (a timer's or bus message's context selects it first).
fn replicate(ctx: &Context, tomb: Tomb, tags: &[&[u8]], from: Option<&SpreadId>) {
    let mut args: Vec<RedisString> = Vec::with_capacity(tags.len() + 5);
    let mut push = |bytes: &[u8]| args.push(RedisString::create_from_slice(ctx.ctx, bytes));
    if let Some(from) = from {
        push(b"SPREAD");
        push(&from.origin);
        push(from.seq.to_string().as_bytes());
    }
    push(tomb.id.to_string().as_bytes());
    push(tomb.until_ms.to_string().as_bytes());
    for t in tags {
        push(t);
    }
    let raw_args: Vec<*mut raw::RedisModuleString> = args.iter().map(|a| a.inner).collect();
    // SAFETY: the format letter matches the arguments: v = an array of RedisModuleString* and
    // its length; the strings live in `args` until after the call (Redis copies them).
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx.ctx,
            c"CACHE.TAGAPPLY".as_ptr(),
            c"v".as_ptr(),
            raw_args.as_ptr(),
            raw_args.len(),
        );
    }
}

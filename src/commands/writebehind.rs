//! The write-behind commands:
//!
//! - `CACHE.WBQUEUE key value [EX s | PX ms] [GRACE ms] [TAGS tag [tag ...]]`: stores the value
//!   as `CACHE.SET` would (no TTL: the entry does not expire) and appends a `set` event to the
//!   key's queue, atomically. Reply: `[version, stream-id]`.
//! - `CACHE.WBDEL key`: removes the entry as `CACHE.DEL` does and appends a `del` event with a
//!   new version. Reply: `[version, stream-id]`.
//! - `CACHE.WBQUEUES`: the queues that exist on this node.
//!
//! Both writers check everything that could refuse first (`wbqueue::check`), so a refusal
//! writes nothing; the event is appended once the version is known and before the entry
//! changes.

use redis_module::{Context, RedisResult, RedisString, RedisValue};

use super::args::{parse_one, ArgBytes};
use super::set::{parse_write_options, store, Tags};
use super::tags::{split_tags, TagList};
use crate::core::entry::Write;
use crate::error::CacheError;
use crate::stats;
use crate::storage::arg::Arg;
use crate::storage::key::{open_entry, open_entry_writable};
use crate::storage::wbqueue::{self, Field, DEL, KEY, MS, OP, SET, VALUE, VERSION};
use crate::storage::{handover, ids, notify, replicate};

/// A parsed `CACHE.WBQUEUE`: the key and value as given, the write at `now`, the tags if
/// `TAGS` was given (each once, in the order given).
#[derive(Debug, PartialEq)]
pub struct WbqueueRequest<'a, A> {
    pub name: &'a A,
    pub value: &'a A,
    pub write: Write,
    pub tags: Option<TagList>,
}

/// `CACHE.WBQUEUE`'s arguments (argv, the command name first) at `now`.
pub fn parse_wbqueue<A: ArgBytes>(
    args: &[A],
    now: i64,
) -> Result<WbqueueRequest<'_, A>, CacheError> {
    let [_, name, value, rest @ ..] = args else {
        return Err(CacheError::Arity("cache.wbqueue"));
    };
    let (opts, tags) = split_tags(rest)?;
    let write = parse_write_options(opts, false, now)?;
    // The contract's options only: a write-behind write is authoritative, and its cost is
    // the database's, not a recompute's.
    if write.token.is_some() || write.delta_ms.is_some() {
        return Err(CacheError::Syntax);
    }
    Ok(WbqueueRequest {
        name,
        value,
        write,
        tags,
    })
}

/// `CACHE.WBQUEUES` takes no arguments (argv: the command name only).
pub fn parse_wbqueues<A: ArgBytes>(args: &[A]) -> Result<(), CacheError> {
    match args.len() {
        1 => Ok(()),
        _ => Err(CacheError::Arity("cache.wbqueues")),
    }
}

pub fn wbqueue(ctx: &Context, args: &[Arg]) -> RedisResult {
    let now = ids::now_ms();
    let WbqueueRequest {
        name,
        value,
        write,
        tags,
    } = parse_wbqueue(args, now)?;
    // A key of another type is refused by `store` before anything is written.
    let queue = wbqueue::check(ctx, wbqueue::queue_for(ctx, name))?;
    let mut id = None;
    let mut enqueue = |version: u64| {
        let fields = [
            Field::Name(&OP),
            Field::Name(&SET),
            Field::Name(&KEY),
            Field::Arg(name),
            Field::Name(&VALUE),
            Field::Arg(value),
            Field::Name(&VERSION),
            Field::Int(version as i64),
            Field::Name(&MS),
            Field::Int(now),
        ];
        id = Some(wbqueue::append(ctx, &queue, &fields)?);
        Ok(())
    };
    let tags = match tags {
        Some(t) => Tags::Replace(t),
        None => Tags::Keep,
    };
    let version = store(ctx, name, value, &write, tags, now, Some(&mut enqueue))?
        .ok_or(CacheError::Internal)?;
    stats::WB_SETS.incr();
    Ok(reply(version, id))
}

pub fn wbdel(ctx: &Context, args: &[Arg]) -> RedisResult {
    let name = parse_one(args, "cache.wbdel")?;
    // WRONGTYPE before anything else, as `CACHE.DEL`.
    open_entry(ctx, name)?;
    let queue = wbqueue::check(ctx, wbqueue::queue_for(ctx, name))?;
    let now = ids::now_ms();
    let version = ids::next_id(now)?;
    let fields = [
        Field::Name(&OP),
        Field::Name(&DEL),
        Field::Name(&KEY),
        Field::Arg(name),
        Field::Name(&VERSION),
        Field::Int(version as i64),
        Field::Name(&MS),
        Field::Int(now),
    ];
    let id = wbqueue::append(ctx, &queue, &fields)?;
    let mut key = open_entry_writable(ctx, name)?;
    if key.holds_entry() {
        key.delete();
        drop(key);
        notify::del(ctx, name);
        replicate::deleted(ctx, &[name]);
        stats::DELETES.incr();
        // The lease went with the key: callers parked on it get the next one.
        if handover::is_waited(ctx, name) {
            if let Ok(mut key) = open_entry_writable(ctx, name) {
                handover::hand_over(ctx, &mut key, name, now);
            }
        }
    }
    stats::WB_DELS.incr();
    Ok(reply(version, Some(id)))
}

pub fn wbqueues(ctx: &Context, args: &[Arg]) -> RedisResult {
    parse_wbqueues(args)?;
    Ok(RedisValue::Array(
        wbqueue::existing(ctx)
            .into_iter()
            .map(RedisValue::StringBuffer)
            .collect(),
    ))
}

fn reply(version: u64, id: Option<RedisString>) -> RedisValue {
    RedisValue::Array(vec![
        RedisValue::Integer(version as i64),
        id.map_or(RedisValue::Null, RedisValue::BulkRedisString),
    ])
}

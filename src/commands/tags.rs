//! The tag commands:
//!
//! - `CACHE.TAGSET key value (EX s | PX ms) [GRACE ms] [DELTA ms] [TOKEN token] TAGS tag [tag ...]`:
//!   as `CACHE.SET`, and the entry carries exactly these tags from now on.
//! - `CACHE.TAGS key`: the entry's tags, or an empty array.
//! - `CACHE.TAGCOUNT tag`: how many live entries of the database carry the tag.
//! - `CACHE.TAGSCAN tag cursor [COUNT n]`: their keys, SCAN-style (a `SCAN` of the database
//!   that keeps the entries with the tag: the index counts, it keeps no lists of keys).
//! - `CACHE.TAGINVALIDATE tag [tag ...]`: every entry that carries one of the tags reads as
//!   absent from the reply on, and is removed in slices (`wrapper::removal`).
//!   In a cluster it is applied on every primary (`wrapper::spread`) and answers the total.
//! - `CACHE.TAGAPPLY [SPREAD origin seq] id until-ms tag [tag ...]` (internal): an invalidation
//!   as replicated and written to the AOF, with the id it was made at (and, for one another
//!   primary started, that invalidation's id).

use redis_module::{Context, RedisResult, RedisValue};

use super::set::{parse_write_options, store, Tags};
use crate::core::number::parse_i64;
use crate::core::spread::SpreadId;
use crate::core::tags::Tomb;
use crate::core::version::is_valid_id;
use crate::error::CacheError;
use crate::storage::arg::{with_name, Arg};
use crate::storage::key::open_entry;
use crate::storage::server::{origin, Origin};
use crate::storage::{ids, scan, server, tagindex};
use crate::wrapper::{invalidation, spread};

/// `TAGSCAN`'s page size when `COUNT` is not given, as for `SCAN`.
const DEFAULT_COUNT: usize = 10;

pub fn tagset(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, name, value, rest @ ..] = args else {
        return Err(CacheError::Arity("cache.tagset").into());
    };
    let (opts, tags) = split_tags(rest)?;
    let owned = tags.ok_or(CacheError::Missing("TAGS"))?;
    let now = ids::now_ms();
    let write = parse_write_options(opts, true, now)?;
    match store(ctx, name, value, &write, Tags::Replace(owned), now, None)? {
        Some(version) => Ok(RedisValue::Integer(version as i64)),
        None => Ok(RedisValue::Null),
    }
}

/// The tags a write gives, each once.
pub type TagList = Vec<Vec<u8>>;

/// Splits a write's arguments at `TAGS`: the options before it, and the tags after it (each
/// once, in the order given), if `TAGS` is there. Option values are numbers, so the first
/// `TAGS` is the keyword.
pub fn split_tags(rest: &[Arg]) -> Result<(&[Arg], Option<TagList>), CacheError> {
    let Some(at) = rest
        .iter()
        .position(|a| a.as_slice().eq_ignore_ascii_case(b"TAGS"))
    else {
        return Ok((rest, None));
    };
    let tags = &rest[at + 1..];
    if tags.is_empty() {
        return Err(CacheError::Missing("a tag after TAGS"));
    }
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.as_slice();
        if !owned.iter().any(|o| o == t) {
            owned.push(t.to_vec());
        }
    }
    Ok((&rest[..at], Some(owned)))
}

pub fn tags(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, name] = args else {
        return Err(CacheError::Arity("cache.tags").into());
    };
    let tags = match open_entry(ctx, name)? {
        Some(key) => key
            .entry()
            .tags()
            .map(|t| RedisValue::StringBuffer(t.to_vec()))
            .collect(),
        None => Vec::new(),
    };
    Ok(RedisValue::Array(tags))
}

pub fn tagcount(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, tag] = args else {
        return Err(CacheError::Arity("cache.tagcount").into());
    };
    let db = server::selected_db(ctx);
    let n = tagindex::with(|ix| ix.count(db, tag.as_slice()));
    Ok(RedisValue::Integer(n as i64))
}

pub fn tagscan(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, tag, cursor, rest @ ..] = args else {
        return Err(CacheError::Arity("cache.tagscan").into());
    };
    let cursor = std::str::from_utf8(cursor.as_slice())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CacheError::InvalidCursor)?;
    let count = match rest {
        [] => DEFAULT_COUNT,
        [opt, n] if opt.as_slice().eq_ignore_ascii_case(b"COUNT") => {
            match parse_i64(n.as_slice()) {
                Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
                Some(_) => return Err(CacheError::Syntax.into()),
                None => return Err(CacheError::NotInteger.into()),
            }
        }
        _ => return Err(CacheError::Syntax.into()),
    };
    let (next, keys) = scan_for_tag(ctx, tag.as_slice(), cursor, count)?;
    Ok(RedisValue::Array(vec![
        RedisValue::StringBuffer(next.into_bytes()),
        RedisValue::Array(keys.into_iter().map(RedisValue::StringBuffer).collect()),
    ]))
}

/// How many keys one `TAGSCAN` call walks at most, per key it is asked for: the work of a call
/// stays bounded however rare the tag is (the call then answers fewer keys, as `SCAN` with
/// `MATCH` does).
const WALK_PER_KEY: usize = 10;

/// `SCAN` of the selected database from `cursor`, keeping the keys of live entries that carry
/// `tag`, until about `count` are found, the walk has seen `WALK_PER_KEY` times as many keys,
/// or the iteration ends. The cursor is `SCAN`'s, so the promise is `SCAN`'s.
fn scan_for_tag(
    ctx: &Context,
    tag: &[u8],
    cursor: u64,
    count: usize,
) -> Result<(String, Vec<Vec<u8>>), redis_module::RedisError> {
    // No live entry carries the tag: none is owed, and the walk ends at once.
    if tagindex::with(|ix| ix.count(server::selected_db(ctx), tag)) == 0 {
        return Ok(("0".to_string(), Vec::new()));
    }
    let budget = count.saturating_mul(WALK_PER_KEY);
    let step = count.to_string();
    let mut cursor = cursor.to_string().into_bytes();
    let mut keys = Vec::new();
    let mut walked = 0usize;
    loop {
        let page =
            scan::page(ctx, &[&cursor, b"COUNT", step.as_bytes()]).ok_or(CacheError::Internal)?;
        let last = page.is_last();
        walked += page.keys.len();
        keys.extend(page.keys.into_iter().filter(|k| carries(ctx, k, tag)));
        cursor = page.cursor;
        if last || keys.len() >= count || walked >= budget {
            return Ok((String::from_utf8_lossy(&cursor).into_owned(), keys));
        }
    }
}

/// Whether the key `name` holds a live entry that carries `tag`.
fn carries(ctx: &Context, name: &[u8], tag: &[u8]) -> bool {
    with_name(ctx, name, |name| match open_entry(ctx, name) {
        Ok(Some(key)) => key.entry().tags().any(|t| t == tag),
        _ => false,
    })
}

pub fn taginvalidate(ctx: &Context, args: &[Arg]) -> RedisResult {
    let [_, tags @ ..] = args else {
        return Err(CacheError::Arity("cache.taginvalidate").into());
    };
    if tags.is_empty() {
        return Err(CacheError::Arity("cache.taginvalidate").into());
    }
    let db = server::selected_db(ctx);
    let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
    let (seq, n) = invalidation::apply_new(ctx, db, &tags, None)?;
    // In a cluster, the other primaries too; the answer is then the cluster's total.
    spread::spread(ctx, db, &tags, seq, n as u64)
}

pub fn tagapply(ctx: &Context, args: &[Arg]) -> RedisResult {
    if origin(ctx) == Origin::Client {
        return Err(CacheError::InternalOnly("CACHE.TAGAPPLY").into());
    }
    // `SPREAD origin seq` first: another primary's cluster-wide invalidation, applied by our
    // primary (ids are numbers, so the word cannot be mistaken for one).
    let (from, rest) = match args {
        [_, word, origin, seq, rest @ ..] if word.as_slice().eq_ignore_ascii_case(b"SPREAD") => {
            let seq = parse_i64(seq.as_slice())
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| CacheError::BadRecord("invalid invalidation sequence".into()))?;
            let id = SpreadId {
                origin: origin.as_slice().to_vec(),
                seq,
            };
            (Some(id), rest)
        }
        [_, rest @ ..] => (None, rest),
        [] => return Err(CacheError::Arity("cache.tagapply").into()),
    };
    let [id, until, tags @ ..] = rest else {
        return Err(CacheError::Arity("cache.tagapply").into());
    };
    if tags.is_empty() {
        return Err(CacheError::Arity("cache.tagapply").into());
    }
    let id = parse_i64(id.as_slice())
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0 && is_valid_id(*v))
        .ok_or_else(|| CacheError::BadRecord("invalid invalidation id".into()))?;
    let until_ms = parse_i64(until.as_slice())
        .ok_or_else(|| CacheError::BadRecord("invalid invalidation end".into()))?;
    ids::observe(id);
    tagindex::lease_granted(until_ms);
    let tomb = Tomb { id, until_ms };
    let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
    let n = invalidation::apply(ctx, server::selected_db(ctx), &tags, tomb);
    if let Some(from) = from {
        spread::remember(&from, n as u64);
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

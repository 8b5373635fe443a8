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

use super::args::{parse_one, parse_some, ArgBytes};
use super::set::{parse_write_options, store, Tags};
use crate::core::entry::Write;
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

/// A parsed `CACHE.TAGSET`: as `CACHE.SET`'s, and the tags (each once, in the order given).
#[derive(Debug, PartialEq)]
pub struct TagsetRequest<'a, A> {
    pub name: &'a A,
    pub value: &'a A,
    pub write: Write,
    pub tags: TagList,
}

/// `CACHE.TAGSET`'s arguments (argv, the command name first) at `now`.
pub fn parse_tagset<A: ArgBytes>(args: &[A], now: i64) -> Result<TagsetRequest<'_, A>, CacheError> {
    let [_, name, value, rest @ ..] = args else {
        return Err(CacheError::Arity("cache.tagset"));
    };
    let (opts, tags) = split_tags(rest)?;
    let tags = tags.ok_or(CacheError::Missing("TAGS"))?;
    let write = parse_write_options(opts, true, now)?;
    Ok(TagsetRequest {
        name,
        value,
        write,
        tags,
    })
}

pub fn tagset(ctx: &Context, args: &[Arg]) -> RedisResult {
    let now = ids::now_ms();
    let TagsetRequest {
        name,
        value,
        write,
        tags,
    } = parse_tagset(args, now)?;
    match store(ctx, name, value, &write, Tags::Replace(tags), now, None)? {
        Some(version) => Ok(RedisValue::Integer(version as i64)),
        None => Ok(RedisValue::Null),
    }
}

/// The tags a write gives, each once.
pub type TagList = Vec<Vec<u8>>;

/// Splits a write's arguments at `TAGS`: the options before it, and the tags after it (each
/// once, in the order given), if `TAGS` is there. Option values are numbers, so the first
/// `TAGS` is the keyword.
pub fn split_tags<A: ArgBytes>(rest: &[A]) -> Result<(&[A], Option<TagList>), CacheError> {
    let Some(at) = rest
        .iter()
        .position(|a| a.bytes().eq_ignore_ascii_case(b"TAGS"))
    else {
        return Ok((rest, None));
    };
    let tags = &rest[at + 1..];
    if tags.is_empty() {
        return Err(CacheError::Missing("a tag after TAGS"));
    }
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.bytes();
        if !owned.iter().any(|o| o == t) {
            owned.push(t.to_vec());
        }
    }
    Ok((&rest[..at], Some(owned)))
}

pub fn tags(ctx: &Context, args: &[Arg]) -> RedisResult {
    let name = parse_one(args, "cache.tags")?;
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
    let tag = parse_one(args, "cache.tagcount")?;
    let db = server::selected_db(ctx);
    let n = tagindex::with(|ix| ix.count(db, tag.as_slice()));
    Ok(RedisValue::Integer(n as i64))
}

/// A parsed `CACHE.TAGSCAN`.
#[derive(Debug, PartialEq)]
pub struct TagscanRequest<'a, A> {
    pub tag: &'a A,
    pub cursor: u64,
    pub count: usize,
}

/// `CACHE.TAGSCAN`'s arguments (argv, the command name first).
pub fn parse_tagscan<A: ArgBytes>(args: &[A]) -> Result<TagscanRequest<'_, A>, CacheError> {
    let [_, tag, cursor, rest @ ..] = args else {
        return Err(CacheError::Arity("cache.tagscan"));
    };
    let cursor = std::str::from_utf8(cursor.bytes())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CacheError::InvalidCursor)?;
    let count = match rest {
        [] => DEFAULT_COUNT,
        [opt, n] if opt.bytes().eq_ignore_ascii_case(b"COUNT") => match parse_i64(n.bytes()) {
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => return Err(CacheError::Syntax),
            None => return Err(CacheError::NotInteger),
        },
        _ => return Err(CacheError::Syntax),
    };
    Ok(TagscanRequest { tag, cursor, count })
}

pub fn tagscan(ctx: &Context, args: &[Arg]) -> RedisResult {
    let TagscanRequest { tag, cursor, count } = parse_tagscan(args)?;
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

/// `CACHE.TAGINVALIDATE`'s arguments (argv, the command name first): the tags, at least one.
pub fn parse_taginvalidate<A: ArgBytes>(args: &[A]) -> Result<&[A], CacheError> {
    parse_some(args, "cache.taginvalidate")
}

pub fn taginvalidate(ctx: &Context, args: &[Arg]) -> RedisResult {
    let tags = parse_taginvalidate(args)?;
    let db = server::selected_db(ctx);
    let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
    let (seq, n) = invalidation::apply_new(ctx, db, &tags, None)?;
    // In a cluster, the other primaries too; the answer is then the cluster's total.
    spread::spread(ctx, db, &tags, seq, n as u64)
}

/// A parsed `CACHE.TAGAPPLY`.
#[derive(Debug, PartialEq)]
pub struct TagapplyRequest<'a, A> {
    /// `SPREAD origin seq`: another primary's cluster-wide invalidation.
    pub from: Option<SpreadId>,
    pub tomb: Tomb,
    pub tags: &'a [A],
}

/// `CACHE.TAGAPPLY`'s arguments (argv, the command name first).
pub fn parse_tagapply<A: ArgBytes>(args: &[A]) -> Result<TagapplyRequest<'_, A>, CacheError> {
    // `SPREAD origin seq` first: another primary's cluster-wide invalidation, applied by our
    // primary (ids are numbers, so the word cannot be mistaken for one).
    let (from, rest) = match args {
        [_, word, origin, seq, rest @ ..] if word.bytes().eq_ignore_ascii_case(b"SPREAD") => {
            let seq = parse_i64(seq.bytes())
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| CacheError::BadRecord("invalid invalidation sequence".into()))?;
            let id = SpreadId {
                origin: origin.bytes().to_vec(),
                seq,
            };
            (Some(id), rest)
        }
        [_, rest @ ..] => (None, rest),
        [] => return Err(CacheError::Arity("cache.tagapply")),
    };
    let [id, until, tags @ ..] = rest else {
        return Err(CacheError::Arity("cache.tagapply"));
    };
    if tags.is_empty() {
        return Err(CacheError::Arity("cache.tagapply"));
    }
    let id = parse_i64(id.bytes())
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0 && is_valid_id(*v))
        .ok_or_else(|| CacheError::BadRecord("invalid invalidation id".into()))?;
    let until_ms = parse_i64(until.bytes())
        .ok_or_else(|| CacheError::BadRecord("invalid invalidation end".into()))?;
    Ok(TagapplyRequest {
        from,
        tomb: Tomb { id, until_ms },
        tags,
    })
}

pub fn tagapply(ctx: &Context, args: &[Arg]) -> RedisResult {
    if origin(ctx) == Origin::Client {
        return Err(CacheError::InternalOnly("CACHE.TAGAPPLY").into());
    }
    let TagapplyRequest { from, tomb, tags } = parse_tagapply(args)?;
    ids::observe(tomb.id);
    tagindex::lease_granted(tomb.until_ms);
    let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
    let n = invalidation::apply(ctx, server::selected_db(ctx), &tags, tomb);
    if let Some(from) = from {
        spread::remember(&from, n as u64);
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

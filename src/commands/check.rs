//! What the property tests and the fuzz targets (`fuzz/`) check of every command's parser:
//! any argument vector is parsed to a request that keeps the command's promises, or refused
//! with one of the parse errors (an `ERR` reply), never a panic.

use super::args::ArgBytes;
use super::{apply, del, getx, lockget, release, set, tags, writebehind};
use crate::core::codec;
use crate::core::entry::{Write, MAX_SPAN_MS, NEVER};
use crate::core::version::is_valid_id;
use crate::error::CacheError;

/// The commands whose whole parsing is "exactly one argument" (the key or the tag).
const ONE_ARGUMENT: &[&str] = &[
    "cache.get",
    "cache.inspect",
    "cache.tags",
    "cache.tagcount",
    "cache.wbdel",
];

/// Runs the parser of the command `argv[0]` names (case-insensitively, as the server matches
/// it) on `argv` at `now`, and checks its answer. `None` for a name that is not a command of
/// the module; `Some(Err(why))` when the parser broke a promise.
pub fn parse_any<A: ArgBytes>(argv: &[A], now: i64) -> Option<Result<(), String>> {
    let name = String::from_utf8_lossy(argv.first()?.bytes()).to_ascii_lowercase();
    let checked = match name.as_str() {
        "cache.set" => set::parse(argv, now).map(|r| write(&r.write, true, now)),
        "cache.tagset" => tags::parse_tagset(argv, now)
            .map(|r| write(&r.write, true, now).and(tag_list(&r.tags, argv))),
        "cache.wbqueue" => writebehind::parse_wbqueue(argv, now).map(|r| {
            let tagged = r.tags.as_ref().map_or(Ok(()), |t| tag_list(t, argv));
            let contract = match (r.write.token, r.write.delta_ms) {
                (None, None) => Ok(()),
                _ => Err("a write-behind write with TOKEN or DELTA".to_string()),
            };
            write(&r.write, false, now).and(tagged).and(contract)
        }),
        "cache.getx" => getx::parse(argv, now).map(|r| {
            promise(
                r.beta.is_finite() && r.beta > 0.0 && r.lease_until > now,
                "a BETA or LEASE out of range",
            )
        }),
        "cache.lockget" => lockget::parse(argv, now).map(|r| {
            promise(
                r.lease_ms > 0
                    && now.checked_add(r.lease_ms) == Some(r.lease_until)
                    && r.wait_ms
                        .is_none_or(|w| w > 0 && now.checked_add(w).is_some()),
                "a PX or WAIT out of range",
            )
        }),
        "cache.release" => release::parse(argv).map(|r| promise(r.token > 0, "TOKEN 0")),
        "cache.del" => del::parse(argv).map(|keys| promise(!keys.is_empty(), "no key")),
        "cache.taginvalidate" => {
            tags::parse_taginvalidate(argv).map(|t| promise(!t.is_empty(), "no tag"))
        }
        "cache.tagscan" => tags::parse_tagscan(argv).map(|r| promise(r.count >= 1, "COUNT 0")),
        "cache.tagapply" => tags::parse_tagapply(argv).map(|r| {
            promise(
                !r.tags.is_empty() && r.tomb.id > 0 && is_valid_id(r.tomb.id),
                "an invalidation id out of range, or no tag",
            )
        }),
        "cache.apply" => apply::parse(argv).map(|r| {
            let header = argv[2].bytes();
            match codec::check::decode(header) {
                Ok(Some(h)) if h == r.header => Ok(()),
                Ok(_) => Err("the header parsed differs from the header decoded".to_string()),
                Err(why) => Err(why),
            }
        }),
        "cache.wbqueues" => writebehind::parse_wbqueues(argv).map(Ok),
        one if ONE_ARGUMENT.contains(&one) => super::args::parse_one(argv, "").map(|_| Ok(())),
        _ => return None,
    };
    Some(match checked {
        Ok(promises) => promises,
        Err(e) => refusal(&e),
    })
}

fn promise(kept: bool, broken: &str) -> Result<(), String> {
    match kept {
        true => Ok(()),
        false => Err(format!("parsed to {broken}")),
    }
}

/// A write's options as `parse_write_options` promises them: a TTL when required, every time
/// in range, and the entry's last instant a real one (below `NEVER`).
fn write(w: &Write, ttl_required: bool, now: i64) -> Result<(), String> {
    let span = |ms: i64| (0..=MAX_SPAN_MS).contains(&ms);
    let end = w
        .ttl_ms
        .map(|ttl| now.checked_add(ttl).and_then(|t| t.checked_add(w.grace_ms)));
    promise(
        (!ttl_required || w.ttl_ms.is_some())
            && w.ttl_ms.is_none_or(|t| t > 0)
            && span(w.grace_ms)
            && w.delta_ms.is_none_or(span)
            && w.token.is_none_or(|t| t > 0)
            && end.is_none_or(|e| e.is_some_and(|e| e != NEVER)),
        "a write out of range",
    )
}

/// Tags as `split_tags` promises them: at least one, each once, each one given after `TAGS`.
fn tag_list<A: ArgBytes>(tags: &[Vec<u8>], argv: &[A]) -> Result<(), String> {
    let Some(at) = argv
        .iter()
        .skip(3)
        .position(|a| a.bytes().eq_ignore_ascii_case(b"TAGS"))
    else {
        return Err("tags without TAGS".into());
    };
    let given = &argv[3 + at + 1..];
    let distinct = tags.iter().enumerate().all(|(i, t)| !tags[..i].contains(t));
    let all = given.iter().all(|g| tags.iter().any(|t| t == g.bytes()));
    let only = tags.iter().all(|t| given.iter().any(|g| g.bytes() == t));
    promise(
        !tags.is_empty() && distinct && all && only,
        "tags other than those given",
    )
}

/// A parser refuses with a parse error (an `ERR` reply), never with one that only a server
/// could cause (a key's type, the id clock, a queue) or a caught panic.
fn refusal(e: &CacheError) -> Result<(), String> {
    let parse_error = matches!(
        e,
        CacheError::Arity(_)
            | CacheError::Syntax
            | CacheError::Repeated(_)
            | CacheError::Missing(_)
            | CacheError::NotInteger
            | CacheError::InvalidTime(_)
            | CacheError::SpanTooLong(_)
            | CacheError::InvalidBeta
            | CacheError::InvalidToken
            | CacheError::InvalidCursor
            | CacheError::BadRecord(_)
    );
    promise(
        parse_error && e.to_string().starts_with("ERR "),
        &format!("the refusal {e:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::table::COMMANDS;

    #[test]
    fn every_command_of_the_table_is_checked() {
        for spec in COMMANDS {
            let name = spec.name.to_str().unwrap().as_bytes().to_vec();
            assert!(
                parse_any(&[name], 0).is_some(),
                "{:?} has no parser in check::parse_any",
                spec.name
            );
        }
        assert!(parse_any(&[b"cache.nope".to_vec()], 0).is_none());
    }
}

//! `CACHE.APPLY key header [value]` (internal): stores an entry exactly as recorded. This is
//! the effect that writes replicate and that AOF rewrite emits; it carries absolute times and
//! the ids issued, so replaying it is deterministic. Not meant for applications, and refused
//! from them: a crafted record could install any version or lease token. It is taken only from
//! the replication stream and while the AOF loads, and checked before anything is parsed.
//!
//! A record from AOF rewrite leaves the key's TTL alone: Redis writes the key's own expiry
//! after it, so a `PERSIST` or `PEXPIRE` the user made survives the rewrite.

use redis_module::{Context, RedisResult, RedisValue};

use super::args::ArgBytes;
use crate::core::codec::{decode_header, Header, ValueSlot};
use crate::error::CacheError;
use crate::storage::arg::Arg;
use crate::storage::datatype::observe_ids;
use crate::storage::key::{open_entry_writable, Ttl};
use crate::storage::server::{origin, Origin};
use crate::storage::{handover, notify};

/// A parsed `CACHE.APPLY`: the key, the decoded header, and the value if one was given.
#[derive(Debug, PartialEq)]
pub struct ApplyRequest<'a, A> {
    pub name: &'a A,
    pub header: Header,
    pub value: Option<&'a A>,
}

/// `CACHE.APPLY`'s arguments (argv, the command name first). Whether the value matches the
/// header's slot is checked once the key is open (a `Keep` takes the stored value).
pub fn parse<A: ArgBytes>(args: &[A]) -> Result<ApplyRequest<'_, A>, CacheError> {
    let (name, header, value) = match args {
        [_, name, header] => (name, header, None),
        [_, name, header, value] => (name, header, Some(value)),
        _ => return Err(CacheError::Arity("cache.apply")),
    };
    let header = decode_header(header.bytes()).map_err(|e| CacheError::BadRecord(e.to_string()))?;
    Ok(ApplyRequest {
        name,
        header,
        value,
    })
}

pub fn run(ctx: &Context, args: &[Arg]) -> RedisResult {
    if origin(ctx) == Origin::Client {
        return Err(CacheError::InternalOnly("CACHE.APPLY").into());
    }
    let ApplyRequest {
        name,
        header:
            Header {
                mut entry,
                value: slot,
                keep_ttl,
            },
        value,
    } = parse(args)?;
    let mut key = open_entry_writable(ctx, name)?;
    entry.value = match (slot, value) {
        (ValueSlot::Present, Some(v)) => Some(v.as_slice().into()),
        (ValueSlot::None, None) => None,
        (ValueSlot::Keep, None) => key.entry().and_then(|e| e.value.take()),
        _ => return Err(CacheError::BadRecord("value does not match the header".into()).into()),
    };
    observe_ids(&entry);
    key.store(entry, if keep_ttl { Ttl::Keep } else { Ttl::FromEntry });
    drop(key);
    notify::apply(ctx, name);
    // A record that brings a value wakes callers parked on the key, as any fill does.
    handover::signal(ctx, name);
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

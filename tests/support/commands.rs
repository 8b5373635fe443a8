//! One helper per command: the module's commands (`CACHE.SET`, `CACHE.GETX`, `CACHE.LOCKGET`,
//! `CACHE.INSPECT`...) and the server's (`CONFIG`, `INFO`, `DEBUG DIGEST`, `EXISTS`, `TIME`...),
//! each sending the command and reading its reply into a Rust type. Test files call these
//! rather than their own copies. Keys are anything `redis::ToRedisArgs` takes (`&str`,
//! `&String`, binary `&[u8]`) where a test needs binary keys.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::Duration;

use redis::{Connection, ToRedisArgs, Value};

use super::server::wait_until;

// ---------------------------------------------------------------------------------------------
// The module's commands
// ---------------------------------------------------------------------------------------------

/// A GETX/LOCKGET reply: (value, status, token).
pub type Triple = (Option<Vec<u8>>, String, Option<u64>);

/// `CACHE.SET key value opts...`: the version, or None when refused.
pub fn set<K: ToRedisArgs>(c: &mut Connection, key: K, value: &[u8], opts: &[&str]) -> Option<u64> {
    redis::cmd("CACHE.SET")
        .arg(key)
        .arg(value)
        .arg(opts)
        .query(c)
        .unwrap()
}

/// A TOKEN fill, `CACHE.SET key value PX 3600000 TOKEN t`: the version, or None when refused.
pub fn fill(c: &mut Connection, key: &str, value: &[u8], token: u64) -> Option<u64> {
    let t = token.to_string();
    set(c, key, value, &["PX", "3600000", "TOKEN", &t])
}

/// `CACHE.GETX key extra...`.
pub fn getx<K: ToRedisArgs>(c: &mut Connection, key: K, extra: &[&str]) -> Triple {
    redis::cmd("CACHE.GETX")
        .arg(key)
        .arg(extra)
        .query(c)
        .unwrap()
}

/// `CACHE.LOCKGET key opts...` (a `WAIT` blocks this connection until the reply).
pub fn lockget(c: &mut Connection, key: &str, opts: &[&str]) -> Triple {
    redis::cmd("CACHE.LOCKGET")
        .arg(key)
        .arg(opts)
        .query(c)
        .unwrap_or_else(|e| panic!("CACHE.LOCKGET {key} {opts:?}: {e}"))
}

/// `CACHE.RELEASE key token`: 1 when the lease was released.
pub fn release(c: &mut Connection, key: &str, token: u64) -> i64 {
    redis::cmd("CACHE.RELEASE")
        .arg(key)
        .arg(token)
        .query(c)
        .unwrap()
}

/// `CACHE.GET key`: the value, or None.
pub fn cache_get<K: ToRedisArgs>(c: &mut Connection, key: K) -> Option<Vec<u8>> {
    redis::cmd("CACHE.GET").arg(key).query(c).unwrap()
}

/// `CACHE.INSPECT key` as (field, value) pairs, in reply order.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspect(pub Vec<(String, Value)>);

impl Inspect {
    pub fn get(&self, field: &str) -> &Value {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no field {field} in {self:?}"))
    }

    /// An integer field; `None` when nil.
    pub fn int(&self, field: &str) -> Option<i64> {
        match self.get(field) {
            Value::Int(n) => Some(*n),
            Value::Nil => None,
            other => panic!("field {field} is not an integer: {other:?}"),
        }
    }

    /// The same fields with the version forced to nil (to compare an entry with where
    /// `COPY`, `RENAME`, `RESTORE` or `MIGRATE` put it, with a fresh version).
    pub fn without_version(&self) -> Inspect {
        Inspect(
            self.0
                .iter()
                .map(|(f, v)| {
                    let v = if f == "version" {
                        Value::Nil
                    } else {
                        v.clone()
                    };
                    (f.clone(), v)
                })
                .collect(),
        )
    }

    /// The same fields with the lease fields forced to nil (what a lease-less copy shows).
    pub fn without_lease(&self) -> Inspect {
        Inspect(
            self.0
                .iter()
                .map(|(f, v)| {
                    let v = if f.starts_with("lease-") {
                        Value::Nil
                    } else {
                        v.clone()
                    };
                    (f.clone(), v)
                })
                .collect(),
        )
    }
}

/// `CACHE.INSPECT key`; `None` when the key holds no entry.
pub fn inspect<K: ToRedisArgs + Debug>(c: &mut Connection, key: K) -> Option<Inspect> {
    let v: Value = redis::cmd("CACHE.INSPECT").arg(&key).query(c).unwrap();
    let items = match v {
        Value::Nil => return None,
        Value::Array(items) => items,
        other => panic!("CACHE.INSPECT {key:?}: unexpected reply {other:?}"),
    };
    assert!(items.len() % 2 == 0, "odd CACHE.INSPECT reply {items:?}");
    let mut pairs = Vec::new();
    for pair in items.chunks(2) {
        let name = match &pair[0] {
            Value::SimpleString(s) => s.clone(),
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("CACHE.INSPECT field name {other:?}"),
        };
        pairs.push((name, pair[1].clone()));
    }
    Some(Inspect(pairs))
}

/// One field of `CACHE.INSPECT key`; `None` when the key holds no entry (panics when the entry
/// has no such field).
pub fn inspect_field<K: ToRedisArgs + Debug>(
    c: &mut Connection,
    key: K,
    field: &str,
) -> Option<Value> {
    inspect(c, key).map(|i| i.get(field).clone())
}

/// One integer field of `CACHE.INSPECT key` (`version`, `lease-token`, `fresh-until-ms`...);
/// `None` when the key holds no entry or the field is nil.
pub fn inspect_int<K: ToRedisArgs + Debug>(c: &mut Connection, key: K, field: &str) -> Option<i64> {
    inspect(c, key)?.int(field)
}

/// The entry's version; `None` when the key holds no entry.
pub fn version_of(c: &mut Connection, key: &str) -> Option<u64> {
    inspect_int(c, key, "version").map(|v| v as u64)
}

/// The token of the entry's lease; `None` when the key holds no entry or the entry no lease.
pub fn lease_token_of(c: &mut Connection, key: &str) -> Option<u64> {
    inspect_int(c, key, "lease-token").map(|v| v as u64)
}

// ---------------------------------------------------------------------------------------------
// The server's commands
// ---------------------------------------------------------------------------------------------

pub fn exists(c: &mut Connection, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS").arg(key).query(c).unwrap();
    n == 1
}

pub fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

pub fn pexpiretime(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap()
}

/// `DEBUG DIGEST`: a digest of the whole dataset.
pub fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

/// `DEBUG DIGEST-VALUE key`: a digest of one key's value (and whether it has an expiry).
pub fn digest_value(c: &mut Connection, key: &str) -> String {
    let v: Vec<String> = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(c)
        .unwrap();
    v.into_iter().next().unwrap_or_default()
}

/// Server time in Unix ms (from `TIME`).
pub fn server_ms(c: &mut Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(c).unwrap();
    s * 1000 + us / 1000
}

/// Waits (at most `timeout`) until the server's clock is past `at_ms`.
pub fn wait_past(c: &mut Connection, at_ms: i64, timeout: Duration) {
    assert!(
        wait_until(timeout, || server_ms(c) > at_ms),
        "server clock never passed {at_ms}"
    );
}

/// `CONFIG GET name`: the value.
pub fn config_get(c: &mut Connection, name: &str) -> String {
    let (_, v): (String, String) = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
    v
}

/// `CONFIG SET name value`.
pub fn config_set(c: &mut Connection, name: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
}

/// `CONFIG GET name` of an integer config.
pub fn config_i64(c: &mut Connection, name: &str) -> i64 {
    config_get(c, name).parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// INFO
// ---------------------------------------------------------------------------------------------

/// `INFO <section>` as field -> value text.
pub fn info_section(c: &mut Connection, section: &str) -> BTreeMap<String, String> {
    try_info_section(c, section).unwrap_or_else(|e| panic!("INFO {section}: {e}"))
}

/// `INFO <section>` as field -> value text, or the error of a server that did not answer
/// (for failure reports, which must not panic on the server they describe).
pub fn try_info_section(
    c: &mut Connection,
    section: &str,
) -> Result<BTreeMap<String, String>, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(c)
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// One field of `INFO <section>`, as text.
pub fn info_field(c: &mut Connection, section: &str, field: &str) -> Option<String> {
    info_section(c, section).remove(field)
}

/// One integer field of `INFO <section>`; panics when there is none.
pub fn info_int(c: &mut Connection, section: &str, field: &str) -> i64 {
    info_field(c, section, field)
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .parse()
        .unwrap_or_else(|e| panic!("INFO {section} {field}: {e}"))
}

/// `INFO cache` as (field, value) pairs, without the `cache_` prefix.
pub fn info_cache(c: &mut Connection) -> HashMap<String, i64> {
    let text: String = redis::cmd("INFO").arg("cache").query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("cache_")?.to_string(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// One counter of `INFO cache`, named without the `cache_` prefix.
pub fn counter(c: &mut Connection, name: &str) -> i64 {
    *info_cache(c)
        .get(name)
        .unwrap_or_else(|| panic!("INFO cache has no {name}"))
}

/// `cache_lockget_parked`: callers parked in `CACHE.LOCKGET ... WAIT`.
pub fn parked(c: &mut Connection) -> i64 {
    info_cache(c)["lockget_parked"]
}

/// Waits (at most `timeout`) until `n` callers are parked; `what` names the step on failure.
pub fn wait_parked(c: &mut Connection, n: i64, timeout: Duration, what: &str) {
    let mut last = -1;
    let ok = wait_until(timeout, || {
        last = parked(c);
        last == n
    });
    assert!(ok, "{what}: lockget_parked stayed {last}, expected {n}");
}

/// Waits (at most `timeout`) until no AOF rewrite is in progress or scheduled.
pub fn wait_rewrite_idle(c: &mut Connection, timeout: Duration) {
    let idle = wait_until(timeout, || {
        info_int(c, "persistence", "aof_rewrite_in_progress") == 0
            && info_int(c, "persistence", "aof_rewrite_scheduled") == 0
    });
    assert!(idle, "AOF rewrite did not finish");
}

/// `cache_last_id`: the largest id the server has issued or seen.
pub fn last_id(c: &mut Connection) -> u64 {
    info_int(c, "cache", "cache_last_id") as u64
}

/// `cache_entries`: the entries the server holds.
pub fn live_entries(c: &mut Connection) -> i64 {
    info_int(c, "cache", "cache_entries")
}

/// `used_memory` of `INFO memory`.
pub fn used_memory(c: &mut Connection) -> i64 {
    info_int(c, "memory", "used_memory")
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// `CACHE.TAGSET key value <opts...> TAGS <tags...>`: the new version, or `None` (refused fill).
pub fn tagset(
    c: &mut Connection,
    key: &str,
    value: &[u8],
    opts: &[&str],
    tags: &[&str],
) -> Option<u64> {
    redis::cmd("CACHE.TAGSET")
        .arg(key)
        .arg(value)
        .arg(opts)
        .arg("TAGS")
        .arg(tags)
        .query(c)
        .unwrap()
}

/// `CACHE.TAGS key`, sorted.
pub fn tags_of(c: &mut Connection, key: &str) -> Vec<String> {
    let mut t: Vec<String> = redis::cmd("CACHE.TAGS").arg(key).query(c).unwrap();
    t.sort();
    t
}

/// `CACHE.TAGCOUNT tag`.
pub fn tagcount(c: &mut Connection, tag: &str) -> i64 {
    redis::cmd("CACHE.TAGCOUNT").arg(tag).query(c).unwrap()
}

/// One `CACHE.TAGSCAN tag cursor COUNT count` call: the next cursor and the keys.
pub fn tagscan(c: &mut Connection, tag: &str, cursor: u64, count: usize) -> (u64, Vec<String>) {
    let (next, keys): (String, Vec<String>) = redis::cmd("CACHE.TAGSCAN")
        .arg(tag)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(c)
        .unwrap();
    (next.parse().expect("a numeric cursor"), keys)
}

/// Every key `CACHE.TAGSCAN` returns for `tag`, from cursor 0 to 0, sorted and deduplicated.
pub fn tagscan_all(c: &mut Connection, tag: &str) -> Vec<String> {
    let mut all = std::collections::BTreeSet::new();
    let mut cursor = 0;
    loop {
        let (next, keys) = tagscan(c, tag, cursor, 100);
        all.extend(keys);
        if next == 0 {
            return all.into_iter().collect();
        }
        cursor = next;
    }
}

/// `INFO cache`'s tag index figures: (tags, tagged entries, index bytes).
pub fn tag_index(c: &mut Connection) -> (i64, i64, i64) {
    let i = info_cache(c);
    (i["tags"], i["tagged_entries"], i["tag_index_bytes"])
}

/// Any command given as words; panics (naming the command) on an error reply.
pub fn q<T: redis::FromRedisValue>(c: &mut Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

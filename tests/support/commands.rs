//! One helper per command: the module's commands (`CACHE.SET`, `CACHE.GETX`, `CACHE.INSPECT`...)
//! and the server's (`CONFIG`, `INFO`, `DEBUG DIGEST`, `EXISTS`, `TIME`...), each sending the
//! command and reading its reply into a Rust type. Test files call these rather than their own
//! copies.
#![allow(dead_code)]

use redis::{Connection, Value};

/// `INFO cache` as (field, value) pairs, without the `cache_` prefix.
pub fn info_cache(c: &mut Connection) -> std::collections::HashMap<String, i64> {
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

/// Server time in Unix ms (from `TIME`).
pub fn server_ms(c: &mut Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(c).unwrap();
    s * 1000 + us / 1000
}

/// A GETX/LOCKGET reply: (value, status, token).
pub type Triple = (Option<Vec<u8>>, String, Option<u64>);

pub fn getx(c: &mut Connection, key: &str, extra: &[&str]) -> Triple {
    redis::cmd("CACHE.GETX")
        .arg(key)
        .arg(extra)
        .query(c)
        .unwrap()
}

/// `CACHE.SET` returning the version, or None when refused.
pub fn set(c: &mut Connection, key: &str, value: &[u8], opts: &[&str]) -> Option<u64> {
    redis::cmd("CACHE.SET")
        .arg(key)
        .arg(value)
        .arg(opts)
        .query(c)
        .unwrap()
}

pub fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

/// One field of `CACHE.INSPECT key`; `None` when the key holds no entry.
pub fn inspect_field(c: &mut Connection, key: &str, field: &str) -> Option<redis::Value> {
    let fields: Vec<redis::Value> = redis::cmd("CACHE.INSPECT").arg(key).query(c).unwrap();
    let at = fields
        .iter()
        .position(|f| redis::from_redis_value::<String>(f).ok().as_deref() == Some(field));
    if fields.is_empty() {
        return None;
    }
    let at = at.unwrap_or_else(|| panic!("CACHE.INSPECT has no field {field}: {fields:?}"));
    Some(fields[at + 1].clone())
}

/// One integer field of `CACHE.INSPECT key` (`version`, `lease-token`...); `None` when the key
/// holds no entry or the field is nil.
pub fn inspect_int(c: &mut Connection, key: &str, field: &str) -> Option<u64> {
    redis::from_redis_value(&inspect_field(c, key, field)?).ok()
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

pub fn inspect(c: &mut Connection, key: &str) -> Option<Inspect> {
    let v: Value = redis::cmd("CACHE.INSPECT").arg(key).query(c).unwrap();
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

pub fn pexpiretime(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap()
}

pub fn cache_get(c: &mut Connection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("CACHE.GET").arg(key).query(c).unwrap()
}

pub fn digest_value(c: &mut Connection, key: &str) -> String {
    let v: Vec<String> = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(c)
        .unwrap();
    v.into_iter().next().unwrap_or_default()
}

pub fn exists(c: &mut Connection, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS").arg(key).query(c).unwrap();
    n == 1
}

pub fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

/// `CACHE.SET ... TOKEN t`: the version, or None when refused.
pub fn fill(c: &mut Connection, key: &str, value: &[u8], token: u64) -> Option<u64> {
    let t = token.to_string();
    set(c, key, value, &["PX", "3600000", "TOKEN", &t])
}

/// One field of `INFO <section>`, as text.
pub fn info_field(c: &mut Connection, section: &str, field: &str) -> Option<String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v.trim().to_string())
}

pub fn info_int(c: &mut Connection, section: &str, field: &str) -> i64 {
    info_field(c, section, field)
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .parse()
        .unwrap_or_else(|e| panic!("INFO {section} {field}: {e}"))
}

/// `cache_last_id`: the largest id the server has issued or seen.
pub fn last_id(c: &mut Connection) -> u64 {
    info_int(c, "cache", "cache_last_id") as u64
}

pub fn live_entries(c: &mut Connection) -> i64 {
    info_int(c, "cache", "cache_entries")
}

//! The Redis side of a queue: the consumer group, reading (own pending entries, entries
//! claimed from dead consumers, new entries), acknowledging, dead-lettering and the numbers
//! of the progress line. Replies are parsed from `redis::Value` by pure functions.

use crate::event::StreamEntry;
use redis::{Connection, RedisError, Value};

pub type RedisResult<T> = Result<T, RedisError>;

/// What one read returned: entries to process, and ids still pending whose entries are gone
/// from the stream (deleted or trimmed), which have nothing to store and are just acknowledged.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    pub entries: Vec<StreamEntry>,
    pub gone: Vec<String>,
}

impl Read {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.gone.is_empty()
    }

    /// The highest id read, entries and gone ids together (each list is in id order, but the
    /// two interleave).
    pub fn last_id(&self) -> Option<&str> {
        let entry = self.entries.last().map(|e| e.id.as_str());
        let gone = self.gone.last().map(String::as_str);
        match (entry, gone) {
            (Some(a), Some(b)) => Some(if id_order(a) >= id_order(b) { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// A stream id as the pair of numbers it is ordered by (`<ms>-<seq>`).
fn id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn protocol(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::TypeError,
        "unexpected reply",
        what.to_string(),
    ))
}

fn text(v: &Value) -> RedisResult<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| protocol("non-UTF-8 id")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(protocol("expected a string")),
    }
}

fn bytes(v: &Value) -> RedisResult<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b.clone()),
        Value::SimpleString(s) => Ok(s.clone().into_bytes()),
        _ => Err(protocol("expected a field")),
    }
}

fn items(v: &Value) -> RedisResult<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        _ => Err(protocol("expected an array")),
    }
}

/// Entries as XRANGE, XREADGROUP and XAUTOCLAIM give them: `[[id, [field, value, ...]], ...]`,
/// where the fields of a pending entry that was deleted are nil.
pub fn parse_entries(v: &Value, read: &mut Read) -> RedisResult<()> {
    for item in items(v)? {
        let pair = items(item)?;
        let [id, fields] = pair else {
            return Err(protocol("entry is not [id, fields]"));
        };
        let id = text(id)?;
        let flat: Vec<&Value> = match fields {
            Value::Nil => {
                read.gone.push(id);
                continue;
            }
            Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
            other => items(other)?.iter().collect(),
        };
        if !flat.len().is_multiple_of(2) {
            return Err(protocol("odd number of field items"));
        }
        let fields = flat
            .chunks(2)
            .map(|kv| Ok((bytes(kv[0])?, bytes(kv[1])?)))
            .collect::<RedisResult<_>>()?;
        read.entries.push(StreamEntry { id, fields });
    }
    Ok(())
}

/// XREADGROUP's reply for one stream: nil on timeout, else `[[stream, entries]]` (RESP2) or
/// `{stream: entries}` (RESP3).
pub fn parse_readgroup(v: &Value) -> RedisResult<Read> {
    let mut read = Read::default();
    match v {
        Value::Nil => {}
        Value::Map(m) => {
            for (_, entries) in m {
                parse_entries(entries, &mut read)?;
            }
        }
        other => {
            for stream in items(other)? {
                let [_, entries] = items(stream)? else {
                    return Err(protocol("stream is not [name, entries]"));
                };
                parse_entries(entries, &mut read)?;
            }
        }
    }
    Ok(read)
}

/// XAUTOCLAIM's reply: `[next cursor, entries]`, plus on Redis 7 the ids that were pending but
/// are deleted (already removed from the pending list by XAUTOCLAIM itself).
pub fn parse_autoclaim(v: &Value) -> RedisResult<(String, Read)> {
    let parts = items(v)?;
    if parts.len() < 2 {
        return Err(protocol("XAUTOCLAIM reply too short"));
    }
    let mut read = Read::default();
    parse_entries(&parts[1], &mut read)?;
    Ok((text(&parts[0])?, read))
}

/// The milliseconds part of a stream id (`<ms>-<seq>`).
pub fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

pub fn ensure_group(con: &mut Connection, queue: &str, group: &str) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// XREADGROUP: `from` is `>` for new entries, or an id for this consumer's own pending entries
/// after it. `block` is only for new entries.
pub fn read_group(
    con: &mut Connection,
    queue: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block_ms: Option<u64>,
    from: &str,
) -> RedisResult<Read> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(queue).arg(from);
    parse_readgroup(&cmd.query::<Value>(con)?)
}

#[allow(clippy::too_many_arguments)]
pub fn autoclaim(
    con: &mut Connection,
    queue: &str,
    group: &str,
    consumer: &str,
    min_idle_ms: u64,
    cursor: &str,
    count: usize,
) -> RedisResult<(String, Read)> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(queue)
        .arg(group)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(con)?;
    parse_autoclaim(&reply)
}

/// Acknowledges stored entries and deletes them from the stream in one MULTI, so the queue's
/// length is its unflushed backlog: what `cache.wb-max-len` bounds, and the lag shown.
pub fn ack(con: &mut Connection, queue: &str, group: &str, ids: &[&str]) -> RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XACK").arg(queue).arg(group).arg(ids).ignore();
    pipe.cmd("XDEL").arg(queue).arg(ids).ignore();
    pipe.query(con)
}

/// The dead-letter stream of a queue: same hash tag, so same slot.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}:dead")
}

/// Moves a poison entry to `<queue>:dead` with its original fields plus `error` and
/// `attempts`, and acknowledges it, in one MULTI: it is never both lost and acknowledged.
pub fn dead_letter(
    con: &mut Connection,
    queue: &str,
    group: &str,
    entry: &StreamEntry,
    error: &str,
    attempts: u32,
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let xadd = pipe.cmd("XADD").arg(dead_letter_queue(queue)).arg("*");
    for (field, value) in &entry.fields {
        xadd.arg(field).arg(value);
    }
    xadd.arg("error")
        .arg(error)
        .arg("attempts")
        .arg(attempts)
        .ignore();
    pipe.cmd("XACK")
        .arg(queue)
        .arg(group)
        .arg(&entry.id)
        .ignore();
    pipe.cmd("XDEL").arg(queue).arg(&entry.id).ignore();
    pipe.query(con)
}

/// The queues this server has (`CACHE.WBQUEUES`), or `None` when the module does not have that
/// command (an older module, or none loaded).
pub fn discover(con: &mut Connection) -> RedisResult<Option<Vec<String>>> {
    match redis::cmd("CACHE.WBQUEUES").query::<Value>(con) {
        Ok(v) => parse_queue_names(&v).map(Some),
        Err(e)
            if e.to_string()
                .to_ascii_lowercase()
                .contains("unknown command") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// CACHE.WBQUEUES's reply: an array (RESP3: possibly a set) of names.
pub fn parse_queue_names(v: &Value) -> RedisResult<Vec<String>> {
    items(v)?.iter().map(text).collect()
}

/// A queue's backlog for the progress line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Entries in the stream: not yet stored (acknowledged entries are deleted).
    pub queued: u64,
    /// Entries delivered to a consumer of the group and not acknowledged yet.
    pub pending: u64,
    /// Age of the oldest entry not yet stored, by the server's clock (0 when none).
    pub oldest_ms: u64,
}

impl Lag {
    /// The backlog of two queues together: the counts add up, the oldest is the older.
    pub fn merge(self, other: Lag) -> Lag {
        Lag {
            queued: self.queued + other.queued,
            pending: self.pending + other.pending,
            oldest_ms: self.oldest_ms.max(other.oldest_ms),
        }
    }
}

pub fn lag(con: &mut Connection, queue: &str, group: &str) -> RedisResult<Lag> {
    let (queued, pending, head, time): (u64, Value, Value, (String, String)) = redis::pipe()
        .cmd("XLEN")
        .arg(queue)
        .cmd("XPENDING")
        .arg(queue)
        .arg(group)
        .cmd("XRANGE")
        .arg(queue)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("TIME")
        .query(con)?;
    let pending = match &pending {
        Value::Array(summary) if !summary.is_empty() => text(&summary[0])?.parse().unwrap_or(0),
        _ => 0,
    };
    let mut first = Read::default();
    parse_entries(&head, &mut first)?;
    let now_ms =
        time.0.parse::<u64>().unwrap_or(0) * 1000 + time.1.parse::<u64>().unwrap_or(0) / 1000;
    let oldest_ms = first
        .entries
        .first()
        .and_then(|e| id_ms(&e.id))
        .map_or(0, |ms| now_ms.saturating_sub(ms));
    Ok(Lag {
        queued,
        pending,
        oldest_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn readgroup_reply_in_resp2_and_resp3() {
        let entries = Value::Array(vec![
            entry("1-1", &["op", "set", "key", "k"]),
            Value::Array(vec![bulk("1-2"), Value::Nil]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("q"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("q"), entries)]);
        for reply in [resp2, resp3] {
            let read = parse_readgroup(&reply).unwrap();
            assert_eq!(read.entries.len(), 1);
            assert_eq!(read.entries[0].id, "1-1");
            assert_eq!(
                read.entries[0].fields,
                vec![
                    (b"op".to_vec(), b"set".to_vec()),
                    (b"key".to_vec(), b"k".to_vec())
                ]
            );
            assert_eq!(read.gone, vec!["1-2".to_string()]);
        }
        assert!(parse_readgroup(&Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn autoclaim_reply_of_redis_6_and_7() {
        let entries = Value::Array(vec![entry("5-0", &["op", "del"])]);
        let seven = Value::Array(vec![bulk("0-0"), entries.clone(), Value::Array(vec![])]);
        let six = Value::Array(vec![bulk("7-3"), entries]);
        let (cursor, read) = parse_autoclaim(&seven).unwrap();
        assert_eq!((cursor.as_str(), read.entries.len()), ("0-0", 1));
        let (cursor, _) = parse_autoclaim(&six).unwrap();
        assert_eq!(cursor, "7-3");
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            Value::Int(3),
            Value::Array(vec![Value::Array(vec![bulk("q")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("q"),
                Value::Array(vec![entry("1-0", &["odd"])]),
            ])]),
        ] {
            assert!(parse_readgroup(&bad).is_err(), "{bad:?}");
        }
        assert!(parse_autoclaim(&Value::Array(vec![bulk("0-0")])).is_err());
    }

    #[test]
    fn the_last_id_of_a_read_orders_ids_as_numbers() {
        let mut read = Read::default();
        assert_eq!(read.last_id(), None);
        read.gone.push("10-0".into());
        assert_eq!(read.last_id(), Some("10-0"));
        read.entries.push(crate::event::entry("9-5", &[]));
        assert_eq!(read.last_id(), Some("10-0"));
        read.entries.push(crate::event::entry("10-1", &[]));
        assert_eq!(read.last_id(), Some("10-1"));
        read.gone.push("100-0".into());
        assert_eq!(read.last_id(), Some("100-0"));
    }

    #[test]
    fn queue_names() {
        let names = Value::Array(vec![bulk("cache:wb:{a}"), bulk("cache:wb:{b}")]);
        assert_eq!(
            parse_queue_names(&names).unwrap(),
            vec!["cache:wb:{a}".to_string(), "cache:wb:{b}".to_string()]
        );
        assert_eq!(
            parse_queue_names(&Value::Set(vec![bulk("q")])).unwrap(),
            vec!["q".to_string()]
        );
        assert!(parse_queue_names(&Value::Array(vec![])).unwrap().is_empty());
        assert!(parse_queue_names(&Value::Int(1)).is_err());
    }

    #[test]
    fn ids_and_dead_letter_names() {
        assert_eq!(id_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(id_ms("x"), None);
        assert_eq!(dead_letter_queue("cache:wb:{ab}"), "cache:wb:{ab}:dead");
    }
}

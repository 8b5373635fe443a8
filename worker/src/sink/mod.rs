//! Where the events go: a table with one row per key, changed only by a higher version. Each
//! sink writes a slice of events in one transaction and reports whether a failure is the
//! database's (retry the same writes) or the events' (count it against them).

mod pool;
mod postgres;
mod sqlite;

pub use self::pool::SinkPool;
pub use self::postgres::PostgresSink;
pub use self::sqlite::SqliteSink;

use crate::event::Event;
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database could not be reached or could not take the transaction now (connection
    /// lost, locked, out of disk, serialization failure): nothing is wrong with the events.
    Unavailable,
    /// The database refused the data (a constraint, a trigger, a value it cannot store): the
    /// same events would fail again.
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkError {
    pub failure: Failure,
    pub message: String,
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub trait Sink: Send {
    /// Writes every event with the version-guarded upsert in one transaction and commits. The
    /// events have distinct keys (the batch is coalesced). Only an `Ok` means committed.
    fn write(&mut self, events: &[&Event]) -> Result<(), SinkError>;
}

/// What a database offers the worker; `Sink` is built on it the same way for each: connect (a
/// failure there is never the events'), write, and classify what went wrong.
pub trait Database: Send {
    type Error: fmt::Display;
    const NAME: &'static str;
    /// Connects and creates the table, unless already done.
    fn connect(&mut self) -> Result<(), Self::Error>;
    /// The transaction, on a connected database.
    fn try_write(&mut self, events: &[&Event]) -> Result<(), Self::Error>;
    fn failure(e: &Self::Error) -> Failure;
    /// Forgets the connection, so the next write connects again.
    fn disconnect(&mut self);
    fn describe(e: &Self::Error) -> String {
        e.to_string()
    }
}

impl<D: Database> Sink for D {
    fn write(&mut self, events: &[&Event]) -> Result<(), SinkError> {
        // Failing to connect or to create the table says nothing about the events (two
        // workers racing CREATE TABLE can even see a unique violation there).
        self.connect().map_err(|e| SinkError {
            failure: Failure::Unavailable,
            message: format!("{}: connect: {}", D::NAME, D::describe(&e)),
        })?;
        self.try_write(events).map_err(|e| {
            let failure = D::failure(&e);
            if failure == Failure::Unavailable {
                // After a lost connection or an I/O error the handle may be unusable.
                self.disconnect();
            }
            SinkError {
                failure,
                message: format!("{}: {}", D::NAME, D::describe(&e)),
            }
        })
    }
}

/// Which database, as given on the command line; each queue's thread opens its own sink.
#[derive(Clone, Debug)]
pub enum SinkConfig {
    Sqlite(PathBuf),
    Postgres(String),
}

impl SinkConfig {
    pub fn open(&self, table: &str) -> Box<dyn Sink> {
        match self {
            SinkConfig::Sqlite(path) => Box::new(SqliteSink::new(path.clone(), table)),
            SinkConfig::Postgres(params) => Box::new(PostgresSink::new(params.clone(), table)),
        }
    }
}

/// Whether `name` is a table name the worker accepts: an identifier, optionally qualified by a
/// schema (`schema.table`), of ASCII letters, digits and underscores. It is spliced into SQL,
/// quoted, so nothing else may pass.
pub fn valid_table(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

/// The table's DDL, in the database's names for bytes, 64-bit integers and booleans.
pub fn create_table(table: &str, bytes: &str, int64: &str, boolean: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (key {bytes} PRIMARY KEY NOT NULL, value {bytes}, \
         version {int64} NOT NULL, updated_ms {int64} NOT NULL, deleted {boolean} NOT NULL)"
    )
}

/// The version guard, the same in both databases: a row changes only for a higher version, so
/// redelivered, reordered and concurrent batches cannot move it back, and a delete's tombstone
/// keeps an older `set` out. The insert names the table `old`.
const ON_CONFLICT: &str = "ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
    version = excluded.version, updated_ms = excluded.updated_ms, deleted = excluded.deleted \
    WHERE excluded.version > old.version";

/// The upsert of rows that `source` (VALUES or a SELECT) gives, in the column order of the
/// table, with the version guard.
pub fn upsert(table: &str, source: &str) -> String {
    format!(
        "INSERT INTO {table} AS old (key, value, version, updated_ms, deleted) {source} \
         {ON_CONFLICT}"
    )
}

/// The table name quoted for SQL (`"schema"."table"`); it has passed `valid_table`.
pub fn quoted(table: &str) -> String {
    table
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["cache_wb", "_t", "T1", "public.cache_wb"] {
            assert!(valid_table(ok), "{ok}");
        }
        for bad in [
            "",
            "1t",
            "a-b",
            "a.b.c",
            "a.",
            "x\"y",
            "t; drop table x",
            "é",
        ] {
            assert!(!valid_table(bad), "{bad}");
        }
        assert_eq!(quoted("public.cache_wb"), "\"public\".\"cache_wb\"");
    }
}

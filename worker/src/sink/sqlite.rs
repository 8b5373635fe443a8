//! SQLite sink (bundled SQLite, so no system library is needed). WAL with `synchronous=FULL`:
//! a commit is on disk before the worker acknowledges the events in Redis.

use super::{create_table, quoted, upsert, Database, Failure};
use crate::event::Event;
use rusqlite::{ffi::ErrorCode, params, Connection, TransactionBehavior};
use std::path::PathBuf;
use std::time::Duration;

pub struct SqliteSink {
    path: PathBuf,
    table: String,
    upsert: String,
    conn: Option<Connection>,
}

impl SqliteSink {
    pub fn new(path: PathBuf, table: &str) -> Self {
        let t = quoted(table);
        SqliteSink {
            path,
            table: t.clone(),
            upsert: upsert(&t, "VALUES (?1, ?2, ?3, ?4, ?5)"),
            conn: None,
        }
    }
}

impl Database for SqliteSink {
    type Error = rusqlite::Error;
    const NAME: &'static str = "sqlite";

    fn connect(&mut self) -> Result<(), rusqlite::Error> {
        if self.conn.is_none() {
            let conn = Connection::open(&self.path)?;
            // Several worker threads (one per queue) and processes may share the file: wait
            // for the write lock rather than fail.
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(&create_table(&self.table, "BLOB", "INTEGER", "BOOLEAN"))?;
            self.conn = Some(conn);
        }
        Ok(())
    }

    fn try_write(&mut self, events: &[&Event]) -> Result<(), rusqlite::Error> {
        let upsert = self.upsert.clone();
        let conn = self.conn.as_mut().expect("write connects first");
        // IMMEDIATE takes the write lock at BEGIN, where busy_timeout waits for it; a deferred
        // transaction that upgrades later can fail with SQLITE_BUSY at once.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(&upsert)?;
            for e in events {
                stmt.execute(params![
                    e.key,
                    e.value,
                    e.version as i64,
                    e.ms as i64,
                    e.deleted()
                ])?;
            }
        }
        tx.commit()
    }

    /// A constraint (CHECK, trigger RAISE, NOT NULL), a value too big or of the wrong type is
    /// the data's fault; everything else (busy, locked, I/O, full disk, cannot open) is the
    /// database's.
    fn failure(e: &rusqlite::Error) -> Failure {
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
                Failure::Rejected
            }
            _ => Failure::Unavailable,
        }
    }

    fn disconnect(&mut self) {
        self.conn = None;
    }
}

//! PostgreSQL sink: a batch is one `INSERT ... SELECT FROM UNNEST(arrays)` statement, one round
//! trip however many keys it holds, in a transaction committed with the server's default
//! `synchronous_commit`, so durable before the worker acknowledges in Redis.

use super::{create_table, quoted, upsert, Database, Failure};
use crate::event::Event;
use postgres::{Client, NoTls};

pub struct PostgresSink {
    params: String,
    table: String,
    upsert: String,
    client: Option<Client>,
}

impl PostgresSink {
    pub fn new(params: String, table: &str) -> Self {
        let t = quoted(table);
        PostgresSink {
            params,
            table: t.clone(),
            upsert: upsert(
                &t,
                "SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::int8[], $4::int8[], \
                 $5::bool[])",
            ),
            client: None,
        }
    }
}

impl Database for PostgresSink {
    type Error = postgres::Error;
    const NAME: &'static str = "postgres";

    fn connect(&mut self) -> Result<(), postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = Client::connect(&self.params, NoTls)?;
            client.batch_execute(&create_table(&self.table, "bytea", "bigint", "boolean"))?;
            self.client = Some(client);
        }
        Ok(())
    }

    fn try_write(&mut self, events: &[&Event]) -> Result<(), postgres::Error> {
        let keys: Vec<&[u8]> = events.iter().map(|e| e.key.as_slice()).collect();
        let values: Vec<Option<&[u8]>> = events.iter().map(|e| e.value.as_deref()).collect();
        let versions: Vec<i64> = events.iter().map(|e| e.version as i64).collect();
        let ms: Vec<i64> = events.iter().map(|e| e.ms as i64).collect();
        let deleted: Vec<bool> = events.iter().map(|e| e.deleted()).collect();
        let upsert = self.upsert.clone();
        let client = self.client.as_mut().expect("write connects first");
        let mut tx = client.transaction()?;
        tx.execute(&upsert, &[&keys, &values, &versions, &ms, &deleted])?;
        tx.commit()
    }

    /// SQLSTATE classes that blame the data: 22 data exception, 23 integrity constraint, 54 program
    /// limit (an index row too large for a huge key), P0 a trigger's RAISE EXCEPTION. Everything
    /// else (connection, serialization and deadlock, resources, shutdown, a dropped table) is the
    /// database's, and retrying is right.
    fn failure(e: &postgres::Error) -> Failure {
        match e.as_db_error().map(|db| db.code().code()) {
            Some(code) if ["22", "23", "54", "P0"].iter().any(|c| code.starts_with(c)) => {
                Failure::Rejected
            }
            _ => Failure::Unavailable,
        }
    }

    fn disconnect(&mut self) {
        self.client = None;
    }

    /// A db error's Display is only "db error"; its message and SQLSTATE say what happened.
    fn describe(e: &postgres::Error) -> String {
        match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        }
    }
}

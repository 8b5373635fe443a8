//! One queue on one server, drained by one thread: re-read this consumer's pending entries,
//! claim the entries of dead consumers, read new ones; store each batch in one transaction and
//! acknowledge it after the commit. Redis errors end the session and a new one starts after a
//! backoff; nothing is lost, since unacknowledged entries stay pending and are read again.

use crate::cluster::Route;
use crate::coalesce::{coalesce, KeyWrite};
use crate::event::{Event, StreamEntry};
use crate::retry::{batch_verdict, Attempts, Backoff, BatchVerdict, Verdict};
use crate::sink::{Failure, Sink, SinkError};
use crate::stats::Stats;
use crate::stream::{self, Read, RedisResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every queue thread is told by the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub group: String,
    pub consumer: String,
    pub batch: usize,
    pub block_ms: u64,
    pub max_attempts: u32,
    pub claim_idle_ms: u64,
    pub once: bool,
}

/// How often to look for entries of dead consumers to claim.
const CLAIM_EVERY: Duration = Duration::from_secs(1);

pub struct QueueDrain {
    pub route: Arc<Route>,
    /// The node of the current session, for the log.
    at: String,
    pub queue: String,
    pub settings: Arc<Settings>,
    pub sink: Box<dyn Sink>,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    attempts: Attempts,
}

fn log(msg: &str) {
    eprintln!("redis-cache-worker: {msg}");
}

/// Sleeps `total` in short steps, returning early (true) when asked to stop.
pub fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    pause(stop, total, || false)
}

/// The least a retry waits even when its queue has moved, so two nodes that disagree for a
/// moment about a slot (each redirecting to the other) do not make a loop spin.
const MIN_RETRY: Duration = Duration::from_millis(20);

/// Sleeps `total` in short steps: true when asked to stop; false at the end, or once `wake`
/// holds (after at least `MIN_RETRY`).
fn pause(stop: &AtomicBool, total: Duration, wake: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    let until = start + total;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || (start.elapsed() >= MIN_RETRY && wake()) {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
    true
}

impl QueueDrain {
    pub fn new(
        route: Arc<Route>,
        queue: String,
        settings: Arc<Settings>,
        sink: Box<dyn Sink>,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let attempts = Attempts::new(settings.max_attempts);
        QueueDrain {
            at: route.node().name,
            route,
            queue,
            settings,
            sink,
            stats,
            stop,
            attempts,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Runs sessions until stopped (or, with `--once`, until the queue is drained).
    pub fn run(mut self) {
        let mut backoff = Backoff::standard();
        loop {
            if self.stopping() {
                return;
            }
            let seen = self.route.generation();
            match self.session(&mut backoff) {
                Ok(()) => return,
                Err(e) => {
                    Stats::add(&self.stats.failures, 1);
                    let delay = backoff.next_delay();
                    let moved = self.route.failed(&e);
                    let next = if moved {
                        format!("following the queue to {}", self.route.node().name)
                    } else {
                        format!("reconnecting in {} ms", delay.as_millis())
                    };
                    log(&format!("{} {}: redis: {e}; {next}", self.at, self.queue));
                    // A queue that moved (MOVED, or the main thread saw a failover or a
                    // reshard) is looked for on its new node without waiting out the backoff.
                    let route = Arc::clone(&self.route);
                    if pause(&self.stop, delay, || route.generation() != seen) {
                        return;
                    }
                }
            }
        }
    }

    fn connect(&mut self) -> RedisResult<redis::Connection> {
        let node = self.route.node();
        self.at = node.name;
        let client = redis::Client::open(node.info)?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        // A blocked XREADGROUP answers within block-ms; anything much later is a dead peer.
        let timeout = Duration::from_millis(self.settings.block_ms) + Duration::from_secs(10);
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        Ok(con)
    }

    /// One connection's life. `Ok` when asked to stop or, with `--once`, when nothing is left;
    /// a Redis error ends it early, and `run` starts another.
    fn session(&mut self, backoff: &mut Backoff) -> RedisResult<()> {
        let mut con = self.connect()?;
        let s = self.settings.clone();
        stream::ensure_group(&mut con, &self.queue, &s.group)?;
        backoff.reset();

        // What this consumer was handed before (a previous run, or before a reconnect) and
        // has not acknowledged: read again from id 0, in id order.
        let mut after = "0".to_string();
        loop {
            let read = self.read(&mut con, None, &after)?;
            let Some(last) = read.last_id().map(str::to_string) else {
                break;
            };
            self.process(&mut con, read)?;
            after = last;
            if self.stopping() {
                return Ok(());
            }
        }

        let mut last_claim: Option<Instant> = None;
        loop {
            if self.stopping() {
                return Ok(());
            }
            if last_claim.is_none_or(|t| t.elapsed() >= CLAIM_EVERY) {
                self.claim(&mut con)?;
                last_claim = Some(Instant::now());
            }
            // `--once` does not wait for events that are not there yet.
            let block = (!s.once).then_some(s.block_ms);
            let read = self.read(&mut con, block, ">")?;
            if read.is_empty() {
                if s.once {
                    return Ok(());
                }
                continue;
            }
            self.process(&mut con, read)?;
        }
    }

    fn read(
        &self,
        con: &mut redis::Connection,
        block_ms: Option<u64>,
        from: &str,
    ) -> RedisResult<Read> {
        let s = &self.settings;
        stream::read_group(
            con,
            &self.queue,
            &s.group,
            &s.consumer,
            s.batch,
            block_ms,
            from,
        )
    }

    /// Takes over entries other consumers left pending longer than `--claim-idle-ms` (with
    /// `--once`, every pending entry of the group, since the point is to drain it all).
    fn claim(&mut self, con: &mut redis::Connection) -> RedisResult<()> {
        let s = self.settings.clone();
        let min_idle = if s.once { 0 } else { s.claim_idle_ms };
        let mut cursor = "0-0".to_string();
        loop {
            let (next, read) = stream::autoclaim(
                con,
                &self.queue,
                &s.group,
                &s.consumer,
                min_idle,
                &cursor,
                s.batch,
            )?;
            if !read.is_empty() {
                self.process(con, read)?;
            }
            if next == "0-0" || self.stopping() {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Stores one read and acknowledges it. Returns only Redis errors: database failures are
    /// retried here until they pass, or end in the dead-letter stream.
    fn process(&mut self, con: &mut redis::Connection, read: Read) -> RedisResult<()> {
        let gone: Vec<&str> = read.gone.iter().map(String::as_str).collect();
        stream::ack(con, &self.queue, &self.settings.group, &gone)?;
        let entries = read.entries;
        let mut events: Vec<(usize, Event)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            match entry.parse() {
                Ok(e) => events.push((i, e)),
                // Malformed: no attempt can store it.
                Err(e) => self.bury(con, entry, &e.to_string(), 1)?,
            }
        }
        let writes = coalesce(events);
        if writes.is_empty() {
            return Ok(());
        }
        match self.store_batch(&writes) {
            // Stopped while the database was unavailable: the entries stay pending.
            None => Ok(()),
            Some(Stored::All) => {
                let ids: Vec<&str> = writes
                    .iter()
                    .flat_map(|w| w.members.iter().map(|&i| entries[i].id.as_str()))
                    .collect();
                self.ack_stored(con, &ids)
            }
            Some(Stored::Split) => self.store_each(con, &entries, &writes),
        }
    }

    /// Writes the whole batch in one transaction, retrying while the database is unavailable.
    /// `None`: asked to stop before it could be written.
    fn store_batch(&mut self, writes: &[KeyWrite]) -> Option<Stored> {
        let events: Vec<&Event> = writes.iter().map(|w| &w.event).collect();
        let mut backoff = Backoff::standard();
        let mut rejections = 0;
        loop {
            let err = match self.sink.write(&events) {
                Ok(()) => {
                    Stats::add(&self.stats.batches, 1);
                    return Some(Stored::All);
                }
                Err(e) => e,
            };
            self.failed(&err, writes.len());
            if err.failure == Failure::Rejected {
                rejections += 1;
                if batch_verdict(rejections) == BatchVerdict::Split {
                    return Some(Stored::Split);
                }
            }
            if sleep_unless_stopped(&self.stop, backoff.next_delay()) {
                return None;
            }
        }
    }

    /// One transaction per key, to store all but the poison keys; a key rejected
    /// `--max-attempts` times is dead-lettered with all of its events of this batch.
    fn store_each(
        &mut self,
        con: &mut redis::Connection,
        entries: &[StreamEntry],
        writes: &[KeyWrite],
    ) -> RedisResult<()> {
        let mut stored: Vec<&str> = Vec::new();
        for write in writes {
            // Rejections are counted against the event whose write failed: the key's winner.
            let winner = &entries[write.winner].id;
            let mut backoff = Backoff::standard();
            loop {
                let err = match self.sink.write(&[&write.event]) {
                    Ok(()) => {
                        Stats::add(&self.stats.batches, 1);
                        self.attempts.forget(winner);
                        stored.extend(write.members.iter().map(|&i| entries[i].id.as_str()));
                        break;
                    }
                    Err(e) => e,
                };
                self.failed(&err, 1);
                if err.failure == Failure::Rejected {
                    if let Verdict::DeadLetter { attempts } = self.attempts.rejected(winner) {
                        for &i in &write.members {
                            self.bury(con, &entries[i], &err.message, attempts)?;
                        }
                        break;
                    }
                }
                if sleep_unless_stopped(&self.stop, backoff.next_delay()) {
                    // Acknowledge what is committed; the rest stays pending.
                    return self.ack_stored(con, &stored);
                }
            }
        }
        self.ack_stored(con, &stored)
    }

    /// Acknowledges entries whose transaction has committed (never before).
    fn ack_stored(&self, con: &mut redis::Connection, ids: &[&str]) -> RedisResult<()> {
        stream::ack(con, &self.queue, &self.settings.group, ids)?;
        Stats::add(&self.stats.drained, ids.len() as u64);
        Ok(())
    }

    fn failed(&self, err: &SinkError, keys: usize) {
        Stats::add(&self.stats.failures, 1);
        let what = match err.failure {
            Failure::Unavailable => "database unavailable",
            Failure::Rejected => "database rejected",
        };
        log(&format!(
            "{} {}: {what} ({keys} keys): {err}",
            self.at, self.queue
        ));
    }

    /// Moves an entry to the dead-letter stream (and acknowledges it there, atomically).
    fn bury(
        &self,
        con: &mut redis::Connection,
        entry: &StreamEntry,
        error: &str,
        attempts: u32,
    ) -> RedisResult<()> {
        stream::dead_letter(
            con,
            &self.queue,
            &self.settings.group,
            entry,
            error,
            attempts,
        )?;
        Stats::add(&self.stats.dead, 1);
        log(&format!(
            "{} {}: entry {} moved to {} after {attempts} attempt(s): {error}",
            self.at,
            self.queue,
            entry.id,
            stream::dead_letter_queue(&self.queue)
        ));
        Ok(())
    }
}

/// How `store_batch` ended: the batch committed whole, or the database rejected it and it is
/// to be split into one transaction per key.
enum Stored {
    All,
    Split,
}

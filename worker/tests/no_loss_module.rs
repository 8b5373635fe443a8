//! No loss with the module: the events come from `CACHE.WBQUEUE key value` on a redis-server
//! that loads the module, with `appendonly yes` and `appendfsync always`. The server issues
//! the versions, stores the entry and appends the event (op=set, key, value, version, ms) to
//! `cache:wb`, creating the queue and its group `cache-wb`, all atomically. A writer sends
//! 100k of them over 1k keys while the worker (finding the queue with CACHE.WBQUEUES) drains
//! it. Midway redis-server is killed with -9 and restarted from its AOF, or the worker is
//! killed with -9 and another one claims what it had pending. At the end every write that
//! redis acknowledged is in the database at (at least) its key's latest acknowledged version,
//! with that write's value, and the queue is empty. The scenarios are in
//! `support/no_loss.rs`, shared with `no_loss.rs`, where raw `XADD`s write the events.

mod support;

use support::no_loss::{self, Writes};
use support::*;

on_both_databases!(no_loss::redis_killed_and_restarted(Writes::Module): sqlite_redis_killed_and_restarted, postgres_redis_killed_and_restarted);

on_both_databases!(no_loss::worker_killed_and_replaced(Writes::Module): sqlite_worker_killed_and_replaced, postgres_worker_killed_and_replaced);

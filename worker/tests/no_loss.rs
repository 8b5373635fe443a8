//! No loss with raw `XADD`s: a writer adds 100k events over 1k keys (versions increasing per
//! key, chosen by the writer) to a queue on a redis-server with `appendonly yes` and
//! `appendfsync always`, while the worker drains it. Midway, redis-server is killed with -9
//! and restarted, or the worker is killed with -9 and another one takes over, or two workers
//! share the queue throughout. At the end every XADD that redis acknowledged is in the
//! database at (at least) the latest acknowledged version of its key, with the value of that
//! version, and the queue is empty. The scenarios are in `support/no_loss.rs`, shared with
//! `no_loss_module.rs`, where the module's `CACHE.WBQUEUE` writes the events.

mod support;

use support::no_loss::{self, Writes};
use support::*;

on_both_databases!(no_loss::redis_killed_and_restarted(Writes::Xadd): sqlite_redis_killed_and_restarted, postgres_redis_killed_and_restarted);

on_both_databases!(no_loss::worker_killed_and_replaced(Writes::Xadd): sqlite_worker_killed_and_replaced, postgres_worker_killed_and_replaced);

on_both_databases!(no_loss::two_workers_share_the_queue(Writes::Xadd): sqlite_two_workers_share_the_queue, postgres_two_workers_share_the_queue);

//! The drain rate, measured on demand (ignored in `make test`):
//! `cargo test --release -p redis-cache-worker --test drain_rate -- --ignored --nocapture`.
//! 1M events over 1k hot keys are queued first, then one `--once --batch 500` run drains them;
//! the rate is events over that run's wall time. `WB_EVENTS` changes the count.

mod support;

use std::time::{Duration, Instant};
use support::*;

const KEYS: u64 = 1000;

fn events() -> u64 {
    std::env::var("WB_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn drain_rate(db: Db, name: &str) {
    let (redis, mut con) = queue_server();
    let total = events();
    let filled = Instant::now();
    for start in (1..=total).step_by(10_000) {
        let mut pipe = redis::pipe();
        for v in start..(start + 10_000).min(total + 1) {
            xadd_set(&mut pipe, &format!("k{}", v % KEYS), v);
        }
        pipe.query::<()>(&mut con).unwrap();
    }
    let fill = filled.elapsed();
    let started = Instant::now();
    let mut w = Worker::start(
        &redis,
        &db,
        &["--once", "--batch", "500", "--progress-secs", "0"],
    );
    assert!(w.wait(Duration::from_secs(600)).success(), "{}", w.log());
    let secs = started.elapsed().as_secs_f64();
    assert_eq!((xlen(&mut con, QUEUE), pending(&mut con)), (0, 0));
    assert_eq!(db.rows().len() as u64, KEYS);
    println!(
        "drain rate {name}: {total} events over {KEYS} keys, batch 500: {secs:.2} s, {:.0} events/s \
         (queued in {:.1} s)",
        total as f64 / secs,
        fill.as_secs_f64()
    );
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn sqlite_drain_rate() {
    drain_rate(Db::sqlite(), "sqlite");
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn postgres_drain_rate() {
    drain_rate(Db::postgres(), "postgres");
}

//! redis-cache-worker: drains the write-behind queues of redis-cache (Redis Streams written by
//! `CACHE.WBQUEUE` and `CACHE.WBDEL`) into SQLite or PostgreSQL, acknowledging each event only
//! after the transaction that stored it has committed.

mod coalesce;
mod drain;
mod event;
mod retry;
mod sink;
mod stats;
mod stream;

use clap::Parser;
use drain::{QueueDrain, Settings};
use retry::Backoff;
use sink::SinkConfig;
use stats::Stats;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The queue a standalone server's module writes by default, used when a server has no
/// `CACHE.WBQUEUES` command.
const DEFAULT_QUEUE: &str = "cache:wb";

/// How often the queues are looked for again, so queues created after the start are drained.
const DISCOVER_EVERY: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Drains redis-cache write-behind queues into SQLite or PostgreSQL",
    long_about = "Drains redis-cache write-behind queues (the streams CACHE.WBQUEUE and \
                  CACHE.WBDEL write) into a table of SQLite or PostgreSQL. Each batch is \
                  coalesced per key, written in one transaction with a version-guarded upsert, \
                  and acknowledged after the commit."
)]
struct Cli {
    /// A Redis server (primary) to drain; repeat for several.
    #[arg(
        long = "redis",
        value_name = "URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: Vec<String>,
    /// SQLite database file (the default sink, ./cache.db).
    #[arg(long, value_name = "PATH", conflicts_with = "postgres")]
    sqlite: Option<PathBuf>,
    /// PostgreSQL connection string, e.g. "host=127.0.0.1 port=5432 user=app dbname=app".
    #[arg(long, value_name = "PARAMS")]
    postgres: Option<String>,
    /// Table to write (created if missing), `name` or `schema.name`.
    #[arg(long, default_value = "cache_wb", value_parser = table_name)]
    table: String,
    /// A queue (stream) to drain; repeat for several. Default: the queues CACHE.WBQUEUES
    /// names on each server, or cache:wb where the server has no such command.
    #[arg(long = "queue", value_name = "NAME")]
    queues: Vec<String>,
    /// Consumer group.
    #[arg(long, default_value = "cache-wb")]
    group: String,
    /// Consumer name within the group; default <hostname>-<pid>. Keep it across restarts to
    /// resume this worker's pending entries at once (others are claimed after
    /// --claim-idle-ms).
    #[arg(long)]
    consumer: Option<String>,
    /// Most events read (and written in one transaction) at a time.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// How long one read waits for new events, in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    block_ms: u64,
    /// Rejections by the database after which an event goes to <queue>:dead.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Entries pending this long at another consumer (a dead worker) are claimed, in ms.
    #[arg(long, default_value_t = 30_000)]
    claim_idle_ms: u64,
    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Drain what is queued (the group's pending entries included), then exit.
    #[arg(long)]
    once: bool,
}

fn table_name(s: &str) -> Result<String, String> {
    if sink::valid_table(s) {
        Ok(s.to_string())
    } else {
        Err("a table is an identifier (letters, digits, _), optionally schema.table".into())
    }
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let name = std::fs::read_to_string(p).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .unwrap_or_else(|| "worker".to_string())
}

fn log(msg: &str) {
    eprintln!("redis-cache-worker: {msg}");
}

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// The main thread's view of one server: its queues once known, and a connection for
/// discovery and the progress line.
struct Server {
    url: String,
    queues: Option<Vec<String>>,
    con: Option<redis::Connection>,
}

impl Server {
    fn con(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.con.is_none() {
            self.con = Some(connect(&self.url)?);
        }
        Ok(self.con.as_mut().expect("connected above"))
    }

    fn discover(&mut self, given: &[String]) -> redis::RedisResult<Vec<String>> {
        if !given.is_empty() {
            return Ok(given.to_vec());
        }
        let found = stream::discover(self.con()?).inspect_err(|_| self.con = None)?;
        Ok(found.unwrap_or_else(|| vec![DEFAULT_QUEUE.to_string()]))
    }

    fn lag(&mut self, group: &str) -> Option<stream::Lag> {
        let queues = self.queues.clone()?;
        let con = self.con().ok()?;
        let mut total = stream::Lag::default();
        for q in &queues {
            match stream::lag(con, q, group) {
                Ok(l) => total = total.merge(l),
                Err(_) => {
                    self.con = None;
                    return None;
                }
            }
        }
        Some(total)
    }
}

fn main() {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The first signal asks for a clean stop; a second one, while the batch in flight is
        // still being finished (a database that does not answer), exits at once. That is safe
        // too: nothing is acknowledged before its commit. The order of the two registrations
        // is what makes the second signal the one that exits.
        let registered =
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)));
        if let Err(e) = registered {
            log(&format!("cannot handle signal {signal}: {e}"));
            std::process::exit(1);
        }
    }
    for url in &cli.redis {
        if let Err(e) = redis::Client::open(url.as_str()) {
            log(&format!("--redis {url}: {e}"));
            std::process::exit(2);
        }
    }
    let sink = match (&cli.sqlite, &cli.postgres) {
        (_, Some(params)) => SinkConfig::Postgres(params.clone()),
        (Some(path), None) => SinkConfig::Sqlite(path.clone()),
        (None, None) => SinkConfig::Sqlite(PathBuf::from("./cache.db")),
    };
    let settings = Arc::new(Settings {
        group: cli.group.clone(),
        consumer: cli
            .consumer
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        batch: cli.batch as usize,
        block_ms: cli.block_ms,
        max_attempts: cli.max_attempts,
        claim_idle_ms: cli.claim_idle_ms,
        once: cli.once,
    });
    let sink_name = match &sink {
        SinkConfig::Sqlite(p) => format!("sqlite {}", p.display()),
        // The connection string may hold a password: only say which kind.
        SinkConfig::Postgres(_) => "postgres".to_string(),
    };
    log(&format!(
        "consumer {} of group {}, table {} in {sink_name}, servers {}",
        settings.consumer,
        settings.group,
        cli.table,
        cli.redis.join(" ")
    ));

    let stats = Arc::new(Stats::default());
    let mut servers: Vec<Server> = cli
        .redis
        .iter()
        .map(|url| Server {
            url: url.clone(),
            queues: None,
            con: None,
        })
        .collect();
    let mut started: HashSet<(String, String)> = HashSet::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut discover_backoff = Backoff::standard();
    let mut next_discovery = Instant::now();
    let progress = Duration::from_secs(cli.progress_secs);
    let mut last_progress = (Instant::now(), stats.snapshot());

    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // With --once, each server's queues are found once; otherwise again and again.
        let due = Instant::now() >= next_discovery;
        let wanted = servers
            .iter()
            .any(|s| s.queues.is_none() || (!cli.once && cli.queues.is_empty() && due));
        if wanted && due {
            let mut failed = false;
            for server in &mut servers {
                if cli.once && server.queues.is_some() {
                    continue;
                }
                match server.discover(&cli.queues) {
                    Ok(queues) => {
                        for q in &queues {
                            if started.insert((server.url.clone(), q.clone())) {
                                log(&format!("draining {} on {}", q, server.url));
                                let drain = QueueDrain::new(
                                    server.url.clone(),
                                    q.clone(),
                                    Arc::clone(&settings),
                                    sink.open(&cli.table),
                                    Arc::clone(&stats),
                                    Arc::clone(&stop),
                                );
                                threads.push(std::thread::spawn(move || drain.run()));
                            }
                        }
                        server.queues = Some(queues);
                    }
                    Err(e) => {
                        failed = true;
                        Stats::add(&stats.failures, 1);
                        log(&format!("{}: cannot list queues: {e}", server.url));
                    }
                }
            }
            next_discovery = Instant::now()
                + if failed {
                    discover_backoff.next_delay()
                } else {
                    discover_backoff.reset();
                    DISCOVER_EVERY
                };
        }
        if cli.once {
            if servers.iter().all(|s| s.queues.is_some())
                && threads.iter().all(JoinHandle::is_finished)
            {
                break;
            }
        } else if threads.iter().any(JoinHandle::is_finished) && !stop.load(Ordering::SeqCst) {
            // Without --once a queue thread only returns when asked to stop: this one
            // panicked. Exit non-zero so a supervisor restarts the worker, instead of going
            // on with a queue nobody drains.
            log("a queue thread panicked; exiting");
            std::process::exit(1);
        }
        if !progress.is_zero() && last_progress.0.elapsed() >= progress {
            print_progress(&mut servers, &settings.group, &stats, &mut last_progress);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGTERM: each thread finishes the batch it holds (commit and acknowledgement) first.
    for t in threads {
        if t.join().is_err() {
            log("a queue thread panicked");
            std::process::exit(1);
        }
    }
    print_progress(&mut servers, &settings.group, &stats, &mut last_progress);
    log(if cli.once {
        "drained, exiting"
    } else {
        "stopped"
    });
}

fn print_progress(
    servers: &mut [Server],
    group: &str,
    stats: &Stats,
    last: &mut (Instant, stats::Snapshot),
) {
    let mut lag = Some(stream::Lag::default());
    for server in servers.iter_mut() {
        lag = match (lag, server.lag(group)) {
            (Some(total), Some(l)) => Some(total.merge(l)),
            _ => None,
        };
    }
    let now = stats.snapshot();
    let secs = last.0.elapsed().as_secs_f64();
    log(&stats::progress_line(now, last.1, secs, lag));
    *last = (Instant::now(), now);
}

//! redis-cache-worker: drains the write-behind queues of redis-cache (Redis Streams written by
//! `CACHE.WBQUEUE` and `CACHE.WBDEL`) into SQLite or PostgreSQL, acknowledging each event only
//! after the transaction that stored it has committed.

mod cluster;
mod coalesce;
mod drain;
mod event;
mod retry;
mod sink;
mod stats;
mod stream;

use clap::Parser;
use cluster::{Node, Route, Topology};
use drain::{QueueDrain, Settings};
use retry::Backoff;
use sink::{SinkConfig, SinkPool};
use stats::Stats;
use std::collections::{BTreeSet, HashMap, HashSet};
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

/// How soon a cluster's slots are read again when a drain loop asks (after a Redis error): a
/// failover is followed within about this, and a dead node is not asked in a tight loop.
const RELOOK_AT_MOST_EVERY: Duration = Duration::from_millis(200);

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
    /// A Redis server (primary) to drain; repeat for several. With --cluster: a node of the
    /// cluster to learn the topology from (any node; give a few in case one is down).
    #[arg(
        long = "redis",
        value_name = "URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: Vec<String>,
    /// Redis Cluster: find the primaries from the --redis nodes (CLUSTER SLOTS), drain the
    /// queues CACHE.WBQUEUES lists on each, and follow failovers and resharding (a queue is
    /// drained on the primary serving its slot; the slots are read again every 10 s and after
    /// any Redis error, and a MOVED reply is followed at once).
    #[arg(long)]
    cluster: bool,
    /// SQLite database file (the default sink, ./cache.db).
    #[arg(long, value_name = "PATH", conflicts_with = "postgres")]
    sqlite: Option<PathBuf>,
    /// PostgreSQL connection string, e.g. "host=127.0.0.1 port=5432 user=app dbname=app".
    #[arg(long, value_name = "PARAMS")]
    postgres: Option<String>,
    /// Database connections, shared by the queues' drain loops (a cluster has a queue per
    /// slot written: many more queues than connections).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    db_connections: u64,
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

/// The main thread's connections: short timeouts, so a dead node holds up neither discovery
/// nor the progress line for long.
fn connect(node: &Node) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(node.info.clone())?
        .get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// The main thread's view of one server (standalone, or a primary of a cluster): its queues
/// once known, and a connection for discovery and the progress line.
struct Server {
    node: Node,
    queues: Option<Vec<String>>,
    con: Option<redis::Connection>,
}

impl Server {
    fn new(node: Node) -> Server {
        Server {
            node,
            queues: None,
            con: None,
        }
    }

    fn con(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.con.is_none() {
            self.con = Some(connect(&self.node)?);
        }
        Ok(self.con.as_mut().expect("connected above"))
    }

    /// `CACHE.WBQUEUES` (`None`: no such command); a failed connection is dropped.
    fn list(&mut self) -> redis::RedisResult<Option<Vec<String>>> {
        stream::discover(self.con()?).inspect_err(|_| self.con = None)
    }

    /// Whether the server says it is a node of a cluster (`INFO cluster`).
    fn in_cluster(&mut self) -> bool {
        let Ok(con) = self.con() else {
            return false;
        };
        redis::cmd("INFO")
            .arg("cluster")
            .query::<String>(con)
            .is_ok_and(|info| info.contains("cluster_enabled:1"))
    }

    /// A standalone server's queues: the given ones, else what it lists, else the default.
    fn discover(&mut self, given: &[String]) -> redis::RedisResult<Vec<String>> {
        if !given.is_empty() {
            return Ok(given.to_vec());
        }
        Ok(self
            .list()?
            .unwrap_or_else(|| vec![DEFAULT_QUEUE.to_string()]))
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

/// The drain loops, one thread per queue, and what each is started with.
struct Drains {
    threads: Vec<JoinHandle<()>>,
    settings: Arc<Settings>,
    sinks: Arc<SinkPool>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Drains {
    fn spawn(&mut self, route: Arc<Route>, queue: &str) {
        log(&format!("draining {queue} on {}", route.node().name));
        let drain = QueueDrain::new(
            route,
            queue.to_string(),
            Arc::clone(&self.settings),
            self.sinks.handle(),
            Arc::clone(&self.stats),
            Arc::clone(&self.stop),
        );
        self.threads.push(std::thread::spawn(move || drain.run()));
    }

    fn all_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn any_finished(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    fn failed(&self) {
        Stats::add(&self.stats.failures, 1);
    }
}

/// Standalone servers, each given with --redis: their queues are drained where found.
struct Standalone {
    servers: Vec<Server>,
    started: HashSet<(String, String)>,
}

impl Standalone {
    /// Looks for every server's queues (with --once only once per server); false when some
    /// server did not answer.
    fn look(&mut self, cli: &Cli, drains: &mut Drains) -> bool {
        let mut ok = true;
        for server in &mut self.servers {
            if cli.once && server.queues.is_some() {
                continue;
            }
            if server.queues.is_none() && server.in_cluster() {
                log(&format!(
                    "{} is a cluster node: without --cluster only the servers given are drained, \
                     and failovers and resharding are not followed",
                    server.node.name
                ));
            }
            match server.discover(&cli.queues) {
                Ok(queues) => {
                    for q in &queues {
                        if self.started.insert((server.node.name.clone(), q.clone())) {
                            drains.spawn(Arc::new(Route::fixed(server.node.clone())), q);
                        }
                    }
                    server.queues = Some(queues);
                }
                Err(e) => {
                    ok = false;
                    drains.failed();
                    log(&format!("{}: cannot list queues: {e}", server.node.name));
                }
            }
        }
        ok
    }
}

/// A Redis Cluster: the primaries as the slots say, and one route per queue, so each queue has
/// exactly one drain loop however often it moves between nodes.
struct ClusterView {
    seeds: Vec<Node>,
    primaries: Vec<Server>,
    routes: HashMap<String, Arc<Route>>,
    /// Raised by a drain loop after a Redis error: the slots are to be read again.
    asked: Arc<AtomicBool>,
    /// Some look has heard every primary's queues.
    listed: bool,
}

impl ClusterView {
    fn new(seeds: Vec<Node>) -> ClusterView {
        ClusterView {
            seeds,
            primaries: Vec::new(),
            routes: HashMap::new(),
            asked: Arc::new(AtomicBool::new(false)),
            listed: false,
        }
    }

    /// The slots, from the first node that answers: the primaries known (connected already),
    /// then the seeds, so a dead seed or a dead primary is only skipped.
    fn topology(&mut self) -> Result<Topology, String> {
        let mut errors = Vec::new();
        for server in &mut self.primaries {
            let host = server.node.host().unwrap_or_default().to_string();
            match server
                .con()
                .and_then(|c| cluster::topology(c, &host))
                .inspect_err(|_| server.con = None)
            {
                Ok(t) if !t.ranges.is_empty() => return Ok(t),
                Ok(_) => errors.push(format!("{}: no slots", server.node.name)),
                Err(e) => errors.push(format!("{}: {e}", server.node.name)),
            }
        }
        for seed in &self.seeds {
            let host = seed.host().unwrap_or_default();
            match connect(seed).and_then(|mut c| cluster::topology(&mut c, host)) {
                Ok(t) if !t.ranges.is_empty() => return Ok(t),
                Ok(_) => errors.push(format!("{}: no slots", seed.name)),
                Err(e) => errors.push(format!("{}: {e}", seed.name)),
            }
        }
        Err(errors.join("; "))
    }

    /// Reads the slots and points every queue's route at the primary serving it; with `list`,
    /// also asks every primary for its queues (`CACHE.WBQUEUES`) and, with `spawn`, starts a
    /// drain loop for each queue new to it. False when some node did not answer.
    fn look(&mut self, cli: &Cli, drains: &mut Drains, list: bool, spawn: bool) -> bool {
        self.asked.store(false, Ordering::SeqCst);
        let topology = match self.topology() {
            Ok(t) => t,
            Err(e) => {
                drains.failed();
                log(&format!("cannot read the cluster's slots: {e}"));
                return false;
            }
        };
        let mut known: HashMap<String, Server> = self
            .primaries
            .drain(..)
            .map(|s| (s.node.name.clone(), s))
            .collect();
        let base = &self.seeds[0];
        let mut changed = false;
        self.primaries = topology
            .primaries()
            .iter()
            .map(|(host, port)| {
                let node = base.at(host, *port);
                known.remove(&node.name).unwrap_or_else(|| {
                    changed = true;
                    Server::new(node)
                })
            })
            .collect();
        if changed || !known.is_empty() {
            let names: Vec<&str> = self
                .primaries
                .iter()
                .map(|s| s.node.name.as_str())
                .collect();
            log(&format!("cluster primaries: {}", names.join(" ")));
        }

        let mut complete = true;
        let mut names: BTreeSet<String> = self.routes.keys().cloned().collect();
        names.extend(cli.queues.iter().cloned());
        if list && cli.queues.is_empty() {
            for server in &mut self.primaries {
                match server.list() {
                    Ok(Some(queues)) => names.extend(queues),
                    Ok(None) => {
                        complete = false;
                        log(&format!(
                            "{}: no CACHE.WBQUEUES: is the module loaded?",
                            server.node.name
                        ));
                    }
                    Err(e) => {
                        complete = false;
                        drains.failed();
                        log(&format!("{}: cannot list queues: {e}", server.node.name));
                    }
                }
            }
        }

        let mut owned: HashMap<String, Vec<String>> = HashMap::new();
        for name in names {
            let Some((host, port)) = topology.owner(cluster::slot_of(&name)) else {
                // No primary serves the slot yet (a failover under way): look again later.
                complete = false;
                continue;
            };
            let owner = base.at(host, port);
            owned
                .entry(owner.name.clone())
                .or_default()
                .push(name.clone());
            match self.routes.get(&name) {
                Some(route) if route.set(&owner) => {
                    log(&format!("{name} is now on {}", owner.name));
                }
                Some(_) => {}
                None if spawn => {
                    let route = Arc::new(Route::following(owner, Arc::clone(&self.asked)));
                    drains.spawn(Arc::clone(&route), &name);
                    self.routes.insert(name, route);
                }
                None => {}
            }
        }
        for server in &mut self.primaries {
            server.queues = Some(owned.remove(&server.node.name).unwrap_or_default());
        }
        if list && complete {
            self.listed = true;
        }
        complete
    }
}

/// What the main thread watches: standalone servers, or a cluster.
enum Watch {
    Standalone(Standalone),
    Cluster(ClusterView),
}

impl Watch {
    /// One look for queues (`periodic`: the regular one; otherwise one a drain loop asked
    /// for). False when some server did not answer.
    fn look(&mut self, cli: &Cli, drains: &mut Drains, periodic: bool) -> bool {
        match self {
            Watch::Standalone(s) => s.look(cli, drains),
            Watch::Cluster(c) => {
                // --once drains what the first complete listing found; later looks only
                // follow those queues when they move.
                let spawn = !cli.once || !c.listed;
                c.look(cli, drains, periodic, spawn)
            }
        }
    }

    /// Every server's queues have been found (what --once waits for before it can finish).
    fn found_all(&self) -> bool {
        match self {
            Watch::Standalone(s) => s.servers.iter().all(|s| s.queues.is_some()),
            Watch::Cluster(c) => c.listed,
        }
    }

    /// A drain loop asked for a look at the cluster's slots.
    fn asked(&self) -> bool {
        match self {
            Watch::Standalone(_) => false,
            Watch::Cluster(c) => c.asked.load(Ordering::SeqCst),
        }
    }

    fn servers(&mut self) -> &mut [Server] {
        match self {
            Watch::Standalone(s) => &mut s.servers,
            Watch::Cluster(c) => &mut c.primaries,
        }
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
    let mut nodes = Vec::new();
    for url in &cli.redis {
        match Node::from_url(url) {
            // A cluster names its nodes host:port; a Unix socket cannot lead to the others.
            Ok(node) if cli.cluster && node.addr().is_none() => {
                log(&format!(
                    "--redis {url}: a cluster node is reached over TCP"
                ));
                std::process::exit(2);
            }
            Ok(node) => nodes.push(node),
            Err(e) => {
                log(&format!("--redis {url}: {e}"));
                std::process::exit(2);
            }
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
        "consumer {} of group {}, table {} in {sink_name}, {} {}",
        settings.consumer,
        settings.group,
        cli.table,
        if cli.cluster {
            "cluster seeds"
        } else {
            "servers"
        },
        cli.redis.join(" ")
    ));

    let stats = Arc::new(Stats::default());
    let mut watch = if cli.cluster {
        Watch::Cluster(ClusterView::new(nodes))
    } else {
        Watch::Standalone(Standalone {
            servers: nodes.into_iter().map(Server::new).collect(),
            started: HashSet::new(),
        })
    };
    let mut drains = Drains {
        threads: Vec::new(),
        settings: Arc::clone(&settings),
        sinks: SinkPool::new(
            (0..cli.db_connections)
                .map(|_| sink.open(&cli.table))
                .collect(),
        ),
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
    };
    let mut discover_backoff = Backoff::standard();
    let mut next_discovery = Instant::now();
    let mut last_look: Option<Instant> = None;
    let progress = Duration::from_secs(cli.progress_secs);
    let mut last_progress = (Instant::now(), stats.snapshot());

    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // With --once, each server's queues are found once; otherwise again and again.
        let periodic = Instant::now() >= next_discovery && !(cli.once && watch.found_all());
        let asked = watch.asked() && last_look.is_none_or(|t| t.elapsed() >= RELOOK_AT_MOST_EVERY);
        if periodic || asked {
            let ok = watch.look(&cli, &mut drains, periodic);
            last_look = Some(Instant::now());
            if periodic {
                next_discovery = Instant::now()
                    + if ok {
                        discover_backoff.reset();
                        DISCOVER_EVERY
                    } else {
                        discover_backoff.next_delay()
                    };
            }
        }
        if cli.once {
            if watch.found_all() && drains.all_finished() {
                break;
            }
        } else if drains.any_finished() && !stop.load(Ordering::SeqCst) {
            // Without --once a queue thread only returns when asked to stop: this one
            // panicked. Exit non-zero so a supervisor restarts the worker, instead of going
            // on with a queue nobody drains.
            log("a queue thread panicked; exiting");
            std::process::exit(1);
        }
        if !progress.is_zero() && last_progress.0.elapsed() >= progress {
            print_progress(watch.servers(), &settings.group, &stats, &mut last_progress);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGTERM: each thread finishes the batch it holds (commit and acknowledgement) first.
    for t in drains.threads {
        if t.join().is_err() {
            log("a queue thread panicked");
            std::process::exit(1);
        }
    }
    print_progress(watch.servers(), &settings.group, &stats, &mut last_progress);
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

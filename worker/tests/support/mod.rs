//! Real servers for the worker's tests: redis-server (Debian's, on PATH) and PostgreSQL
//! (Debian's `postgresql`, binaries under /usr/lib/postgresql/*/bin), each on a free loopback
//! port in a temporary directory and killed on drop, a failing test included; the worker binary
//! as a subprocess; contract-shaped events; reading the tables back.
#![allow(dead_code)] // each test binary uses a part of the harness

use redis::Value;
use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub mod cluster;
pub mod no_loss;

pub const QUEUE: &str = "cache:wb";
pub const GROUP: &str = "cache-wb";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `check` until it holds, failing the test with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {}", child.id());
}

// ---------------------------------------------------------------------------------------------
// Redis

pub struct Redis {
    pub dir: TempDir,
    pub port: u16,
    appendonly: bool,
    fsync: &'static str,
    /// Further arguments: the module, a primary to replicate.
    extra: Vec<String>,
    child: Option<Child>,
}

/// The module the write-behind commands come from: the release build of the workspace's
/// module crate (`make test` builds it before the worker's tests run).
pub fn module_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/libredis_cache.so");
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release` first (make test does)",
        path.display()
    );
    path
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(false, "everysec")
    }

    /// `appendonly yes` with the given `appendfsync` when `appendonly`.
    pub fn start_with(appendonly: bool, fsync: &'static str) -> Redis {
        Redis::start_args(appendonly, fsync, Vec::new())
    }

    /// A redis-server with the module loaded: `CACHE.WBQUEUE` and friends fill the queue.
    pub fn with_module(appendonly: bool, fsync: &'static str) -> Redis {
        let module = module_path().display().to_string();
        Redis::start_args(appendonly, fsync, vec!["--loadmodule".into(), module])
    }

    /// A replica of `primary`, with the module loaded.
    pub fn replica_of(primary: &Redis) -> Redis {
        let module = module_path().display().to_string();
        let args = vec![
            "--loadmodule".into(),
            module,
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ];
        Redis::start_args(false, "everysec", args)
    }

    /// A node for a Redis Cluster (`cluster::Cluster` joins them), with the module loaded.
    /// The node timeout is short, so a killed primary's replica takes over within seconds.
    pub fn cluster_node(appendonly: bool, fsync: &'static str) -> Redis {
        let mut args = vec![
            "--loadmodule".to_string(),
            module_path().display().to_string(),
        ];
        for (name, value) in [
            ("cluster-enabled", "yes"),
            ("cluster-config-file", "nodes.conf"),
            ("cluster-node-timeout", "3000"),
        ] {
            args.extend([format!("--{name}"), value.to_string()]);
        }
        Redis::start_args(appendonly, fsync, args)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn start_args(appendonly: bool, fsync: &'static str, extra: Vec<String>) -> Redis {
        let mut r = Redis {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            appendonly,
            fsync,
            extra,
            child: None,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("log file");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(["--save", ""])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", self.fsync])
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("redis-server on PATH"));
        let url = self.url();
        wait_until(
            Duration::from_secs(20),
            "redis-server to answer PING",
            || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn con(&self) -> redis::Connection {
        let con = redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis");
        con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        con
    }

    /// `kill -9`: no shutdown, no final fsync.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    /// Starts again on the same directory and port, from what it had persisted.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A redis-server (no AOF) with the queue and its group, and a connection to it.
pub fn queue_server() -> (Redis, redis::Connection) {
    let redis = Redis::start();
    let mut con = redis.con();
    create_group(&mut con);
    (redis, con)
}

/// Creates the queue and its group the way the module does.
pub fn create_group(con: &mut redis::Connection) {
    create_group_of(con, QUEUE);
}

pub fn create_group_of(con: &mut redis::Connection, queue: &str) {
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(con)
        .expect("XGROUP CREATE");
}

/// The value every `set` of these tests carries: it names its version, so a row's value and
/// version can be checked to belong together.
pub fn value_of(key: &str, version: u64) -> String {
    format!("{key}@{version}")
}

/// Adds a `set` event as CACHE.WBQUEUE writes it.
pub fn xadd_set(pipe: &mut redis::Pipeline, key: &str, version: u64) {
    xadd_set_to(pipe, QUEUE, key, version);
}

/// Adds a `set` event to the queue `queue`.
pub fn xadd_set_to(pipe: &mut redis::Pipeline, queue: &str, key: &str, version: u64) {
    xadd_event(pipe, queue, key, Some(&value_of(key, version)), version);
}

/// Adds a `del` event as CACHE.WBDEL writes it.
pub fn xadd_del(pipe: &mut redis::Pipeline, key: &str, version: u64) {
    xadd_event(pipe, QUEUE, key, None, version);
}

/// An event in the contract's fields; without a value it is a `del`. Its `ms` follows its
/// version.
fn xadd_event(
    pipe: &mut redis::Pipeline,
    queue: &str,
    key: &str,
    value: Option<&str>,
    version: u64,
) {
    let (version, ms) = (
        version.to_string(),
        (1_700_000_000_000u64 + version).to_string(),
    );
    let mut fields: Vec<(&str, &[u8])> = vec![("key", key.as_bytes())];
    if let Some(v) = value {
        fields.push(("value", v.as_bytes()));
    }
    fields.push(("version", version.as_bytes()));
    fields.push(("ms", ms.as_bytes()));
    fields.push(("op", if value.is_some() { b"set" } else { b"del" }));
    xadd_fields(pipe, queue, &fields);
}

/// Adds an entry with exactly these fields (an event, or something that is not one).
pub fn xadd_fields(pipe: &mut redis::Pipeline, queue: &str, fields: &[(&str, &[u8])]) {
    let cmd = pipe.cmd("XADD").arg(queue).arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd.ignore();
}

pub fn xlen(con: &mut redis::Connection, stream: &str) -> u64 {
    redis::cmd("XLEN").arg(stream).query(con).unwrap()
}

/// The number of entries the group has delivered and not seen acknowledged.
pub fn pending(con: &mut redis::Connection) -> u64 {
    pending_of(con, QUEUE)
}

pub fn pending_of(con: &mut redis::Connection, queue: &str) -> u64 {
    let v: Value = redis::cmd("XPENDING")
        .arg(queue)
        .arg(GROUP)
        .query(con)
        .unwrap();
    match v {
        Value::Array(a) => redis::from_redis_value(&a[0]).unwrap(),
        other => panic!("XPENDING: {other:?}"),
    }
}

/// The entries of a stream, fields as a map.
pub fn entries(con: &mut redis::Connection, stream: &str) -> Vec<HashMap<String, String>> {
    let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    v.into_iter()
        .map(|(_, f)| f.into_iter().collect())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed (make deps: Debian's postgresql)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("a /usr/lib/postgresql/*/bin with initdb")
        .join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` system user when we are root (initdb refuses root), as us
/// otherwise.
fn as_pg_user(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

pub struct Postgres {
    dir: TempDir,
    pub port: u16,
    running: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("wbpg")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "chown to postgres");
        }
        let data = dir.path().join("data");
        let out = as_pg_user(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            port: free_port(),
            running: false,
        };
        pg.start_again();
        pg
    }

    fn pg_ctl(&self) -> Command {
        let mut c = as_pg_user(&pg_bin("pg_ctl"));
        c.arg("-D").arg(self.dir.path().join("data"));
        c.stdin(Stdio::null());
        c
    }

    /// Starts the server (again) on its data directory and port.
    pub fn start_again(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .pg_ctl()
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl runs");
        self.running = true;
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (`-m immediate`: connections are cut, as in a crash).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self
                .pg_ctl()
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }

    pub fn params(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.params(), postgres::NoTls).expect("connect to postgres")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The database, whichever it is

/// One row of the table: value (None for a tombstone), version, deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub value: Option<Vec<u8>>,
    pub version: i64,
    pub deleted: bool,
}

pub enum Db {
    Sqlite(TempDir),
    Postgres(Postgres),
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    pub fn postgres() -> Db {
        Db::Postgres(Postgres::start())
    }

    pub fn pg(&mut self) -> &mut Postgres {
        match self {
            Db::Postgres(pg) => pg,
            Db::Sqlite(_) => panic!("not postgres"),
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        match self {
            Db::Sqlite(dir) => dir.path().join("cache.db"),
            Db::Postgres(_) => panic!("not sqlite"),
        }
    }

    /// The worker's arguments for this database.
    pub fn args(&self) -> Vec<String> {
        match self {
            Db::Sqlite(_) => vec!["--sqlite".into(), self.sqlite_path().display().to_string()],
            Db::Postgres(pg) => vec!["--postgres".into(), pg.params()],
        }
    }

    /// Runs SQL before the worker starts (a pre-created table, a trigger).
    pub fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite(_) => rusqlite::Connection::open(self.sqlite_path())
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Db::Postgres(pg) => pg.client().batch_execute(sql).unwrap(),
        }
    }

    pub fn rows(&self) -> HashMap<Vec<u8>, Row> {
        let sql = "SELECT key, value, version, deleted FROM cache_wb";
        match self {
            Db::Sqlite(_) => {
                let path = self.sqlite_path();
                if !path.exists() {
                    return HashMap::new();
                }
                let con = rusqlite::Connection::open(path).unwrap();
                let Ok(mut stmt) = con.prepare(sql) else {
                    return HashMap::new(); // no table yet
                };
                stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        Row {
                            value: r.get(1)?,
                            version: r.get(2)?,
                            deleted: r.get(3)?,
                        },
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Db::Postgres(pg) => match pg.client().query(sql, &[]) {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, Vec<u8>>(0),
                            Row {
                                value: r.get(1),
                                version: r.get(2),
                                deleted: r.get(3),
                            },
                        )
                    })
                    .collect(),
                Err(_) => HashMap::new(), // no table yet
            },
        }
    }
}

/// Two tests running one scenario, one on SQLite and one on PostgreSQL. The scenario is a
/// function taking the database last: `scenario: sqlite_test, postgres_test`, or, with
/// arguments before the database, `path::scenario(args): sqlite_test, postgres_test`.
#[macro_export]
macro_rules! on_both_databases {
    ($scenario:ident: $sqlite:ident, $postgres:ident) => {
        on_both_databases!($scenario(): $sqlite, $postgres);
    };
    ($($scenario:ident)::+ ($($arg:expr),*): $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            $($scenario)::+($($arg,)* Db::sqlite());
        }

        #[test]
        fn $postgres() {
            $($scenario)::+($($arg,)* Db::postgres());
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The worker

pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Worker {
    /// Starts the worker on `redis` and `db` with `extra` arguments; stderr goes to a file.
    pub fn start(redis: &Redis, db: &Db, extra: &[&str]) -> Worker {
        let mut args = vec!["--redis".to_string(), redis.url()];
        args.extend(db.args());
        args.extend(extra.iter().map(|a| a.to_string()));
        Worker::start_args(&args)
    }

    /// Starts the worker with exactly these arguments.
    pub fn start_args(args: &[String]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let child = Command::new(env!("CARGO_BIN_EXE_redis-cache-worker"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("worker binary");
        Worker {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the worker to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "worker still running after {limit:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (TERM, STOP, CONT...).
    pub fn signal(&self, name: &str) {
        signal(self.child.as_ref().expect("running"), name);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    /// The `drained=` count of the worker's last progress line.
    pub fn last_drained(&self) -> Option<u64> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("progress:"))?;
        let n = line.split("drained=").nth(1)?.split(' ').next()?;
        n.parse().ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `--once` to completion and returns its log; it must exit 0.
pub fn drain_once(redis: &Redis, db: &Db, extra: &[&str]) -> String {
    let mut args = vec!["--once"];
    args.extend_from_slice(extra);
    finish(Worker::start(redis, db, &args))
}

/// Waits for a `--once` worker to exit 0 and returns its log.
pub fn finish(mut w: Worker) -> String {
    let status = w.wait(Duration::from_secs(60));
    let log = w.log();
    assert!(status.success(), "worker --once: {status}; log:\n{log}");
    log
}

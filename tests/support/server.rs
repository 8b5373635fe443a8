//! Server processes (redis-server, or valkey-server through `$CACHE_SERVER`) with the module
//! loaded, on free loopback ports, each in its own temporary directory, stopped when dropped
//! (also when a test panics); what a server is; waiting; replicas of a primary.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use redis::Connection;

use super::commands::{info_field, info_int};

/// Path of the module under test: `$CACHE_MODULE`, else the release build of this crate.
pub fn module_path() -> PathBuf {
    let path = std::env::var_os("CACHE_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/libredis_cache.so")
        });
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release` first (make test does)",
        path.display()
    );
    path
}

/// The server binary the tests run: `$CACHE_SERVER` (the path of a redis-server or a
/// valkey-server), else `redis-server` on PATH.
pub fn server_binary() -> String {
    std::env::var("CACHE_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".to_string())
}

/// Which server a connection talks to, from `INFO server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Redis,
    Valkey,
}

/// What a server says it is: its flavor, its own version (`valkey_version` on Valkey,
/// `redis_version` on Redis) and the Redis version it is compatible with (`redis_version`:
/// Valkey 8 reports 7.2.4 there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerKind {
    pub flavor: Flavor,
    pub version: (u32, u32, u32),
    pub redis_compat: (u32, u32, u32),
}

impl ServerKind {
    pub fn is_valkey(&self) -> bool {
        self.flavor == Flavor::Valkey
    }
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.trim().split('.').map(|p| {
        p.parse::<u32>()
            .unwrap_or_else(|e| panic!("version {v:?}: {e}"))
    });
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// Asks the server what it is.
pub fn server_kind(c: &mut Connection) -> ServerKind {
    let info: String = redis::cmd("INFO").arg("server").query(c).unwrap();
    let field = |name: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| parse_version(v))
    };
    let redis_compat = field("redis_version").expect("redis_version in INFO server");
    match field("valkey_version") {
        Some(version) => ServerKind {
            flavor: Flavor::Valkey,
            version,
            redis_compat,
        },
        None => ServerKind {
            flavor: Flavor::Redis,
            version: redis_compat,
            redis_compat,
        },
    }
}

/// What `server_binary() --version` says: "Redis server v=7.0.15 ..." or
/// "Valkey server v=8.1.8 ...", as (flavor, version).
pub fn binary_version() -> (Flavor, (u32, u32, u32)) {
    let bin = server_binary();
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} --version: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flavor = if text.starts_with("Valkey server") {
        Flavor::Valkey
    } else if text.starts_with("Redis server") {
        Flavor::Redis
    } else {
        panic!("{bin} --version: unexpected {text:?}")
    };
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or_else(|| panic!("{bin} --version: no v= in {text:?}"));
    (flavor, parse_version(v))
}

/// A loopback port nobody listens on. Ports are spread by process id so that test binaries
/// running side by side do not race for the same ones.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Below Linux's ephemeral range (32768 and up), where the kernel picks the source ports
    // of outgoing connections: a port found free there can be taken by a client before the
    // server binds it. Each process starts in its own stripe.
    let base = 10_000 + (std::process::id() % 70) as u16 * 300;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 300;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// How many times slower than usual the servers are: `$CACHE_TEST_SLOW` (a whole number,
/// `make memcheck` sets it for servers under valgrind), default 1. Every wait in the harness
/// (`wait_until`, starting, connecting, stopping, WAIT) is that many times longer.
pub fn slow() -> u32 {
    std::env::var("CACHE_TEST_SLOW")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `d` stretched by `slow()`.
pub fn scaled(d: Duration) -> Duration {
    d * slow()
}

/// Polls `cond` until it holds or `timeout` (times `slow()`) passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// A server with the module loaded, no persistence, DEBUG enabled.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// As `start`, with extra `--option value` arguments (they override the defaults).
    pub fn start_with(extra: &[&str]) -> Server {
        let mut s = Server {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        // Another process may take the port between the check and the bind: on the first
        // start (nothing knows the port yet) a bind failure moves on to another port.
        for _ in 0..5 {
            if s.try_spawn() {
                return s;
            }
            s.kill();
            if !s.log().contains("Address already in use") {
                break;
            }
            s.port = free_port();
        }
        s.spawn();
        s
    }

    /// Starts the process and waits until it answers; whether it did.
    fn try_spawn(&mut self) -> bool {
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--logfile".into(),
            "redis.log".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--enable-debug-command".into(),
            "yes".into(),
            "--loadmodule".into(),
            module_path().display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let bin = server_binary();
        let child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            // A Rust panic message goes to stderr: keep it for `log`.
            .stdout(self.output("stdout.log"))
            .stderr(self.output("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {bin} ($CACHE_SERVER, default redis-server on PATH; \
                     make deps installs redis-server and valkey-server): {e}"
                )
            });
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), || {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        })
    }

    /// Starts the process (again, after `shutdown` or `kill`) on the same port and directory.
    pub fn spawn(&mut self) {
        let up = self.try_spawn();
        assert!(
            up,
            "{} did not start on {}:\n{}",
            server_binary(),
            self.port,
            self.log()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(scaled(Duration::from_secs(10)))
            .expect("connect")
    }

    fn output(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .expect("output file in the server's directory")
    }

    /// The server's log, then its stdout and stderr, for failure messages.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "{}--- stdout/stderr ---\n{}{}",
            read("redis.log"),
            read("stdout.log"),
            read("stderr.log")
        )
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server: `SHUTDOWN SAVE` or `SHUTDOWN NOSAVE`, then waits for the process.
    /// Returns whether it exited by itself within 20 s times `slow()` (otherwise it is killed).
    pub fn shutdown(&mut self, save: bool) -> bool {
        if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
            // A stopped (SIGSTOP) server would otherwise hold the SHUTDOWN reply forever.
            let _ = c.set_read_timeout(Some(scaled(Duration::from_secs(20))));
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
                .arg(if save { "SAVE" } else { "NOSAVE" })
                .query(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + scaled(Duration::from_secs(20));
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        true
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the server's process.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} failed");
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (it loads what it saved).
    /// `extra` replaces the extra arguments given at start when not empty.
    pub fn restart(&mut self, save: bool) {
        self.shutdown(save);
        self.spawn();
    }

    pub fn restart_with(&mut self, save: bool, extra: &[&str]) {
        self.shutdown(save);
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }
}

impl Drop for Server {
    /// Kills the server; when servers are slow (`make memcheck`), shuts it down instead, so that
    /// valgrind writes its leak report (a killed process writes none).
    fn drop(&mut self) {
        if slow() > 1 && self.is_alive() {
            self.shutdown(false);
        }
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------------------

/// A replica of `primary`, its link up and counted online by the primary.
pub fn start_replica(primary: &Server, extra: &[&str]) -> Server {
    let port = primary.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", &port];
    args.extend_from_slice(extra);
    let r = Server::start_with(&args);
    wait_link_up(&r);
    wait_online(primary);
    r
}

/// The primary counts the replica as online (after a diskless sync, only from its first ACK:
/// until then WAIT does not count it).
pub fn wait_online(primary: &Server) {
    let mut c = primary.conn();
    let online = wait_until(Duration::from_secs(30), || {
        info_field(&mut c, "replication", "slave0").is_some_and(|s| s.contains("state=online"))
    });
    assert!(online, "the primary never saw its replica online");
}

pub fn wait_link_up(r: &Server) {
    let mut c = r.conn();
    let up = wait_until(Duration::from_secs(30), || {
        info_field(&mut c, "replication", "master_link_status").as_deref() == Some("up")
    });
    assert!(up, "replica never got its link up:\n{}", r.log());
}

pub fn wait_replicas(c: &mut Connection, n: i64) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(n)
        .arg(5000 * u64::from(slow()))
        .query(c)
        .unwrap();
    assert_eq!(acked, n, "WAIT: replicas that acknowledged");
}

pub fn repl_offset(c: &mut Connection) -> i64 {
    info_int(c, "replication", "master_repl_offset")
}

/// Waits until the replica has processed everything the primary has sent (without WAIT,
/// which itself writes REPLCONF GETACK into the stream).
pub fn wait_caught_up(p: &mut Connection, r: &mut Connection) {
    let ok = wait_until(Duration::from_secs(10), || {
        let want = repl_offset(p);
        info_int(r, "replication", "slave_repl_offset") == want && repl_offset(p) == want
    });
    assert!(ok, "replica did not catch up");
}

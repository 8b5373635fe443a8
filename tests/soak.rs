//! Soak: a primary (AOF on) with a replica, driven by several client threads sending a long
//! random sequence of commands on a small set of keys (binary ones and the empty key included):
//! CACHE.SET/GET/GETX/LOCKGET (with and without WAIT)/RELEASE/DEL/INSPECT, the tag commands
//! (TAGSET, TAGS, TAGCOUNT, TAGSCAN, TAGINVALIDATE), the write-behind ones (WBQUEUE, WBDEL,
//! WBQUEUES), the internal APPLY/TAGAPPLY (refused), DEL, UNLINK, EXPIRE, PEXPIRE, PERSIST,
//! RENAME, COPY, plain strings, reads on the replica, MULTI/EXEC blocks, EVAL scripts, callers
//! that hang up while parked, random options in valid ranges and ~10% bad input, and writes to
//! a ledger (below); meanwhile one admin thread runs DEBUG RELOAD, BGREWRITEAOF, BGSAVE, CONFIG
//! SET of the module's configs, checkpoints, and on a schedule scaled to the run (one per 150 s
//! and one per 200 s, at least one of each) restarts of the primary from its AOF and failovers;
//! the clients follow. Of each kind, every other one (the first among them) runs with the
//! clients sending commands throughout (a failover then is FAILOVER: writes paused until the
//! replica caught up, then the roles swapped; commands in flight see their connection drop,
//! READONLY, or UNBLOCKED for a parked LOCKGET, and wait for the new topology), the others
//! with the clients paused (a failover then is REPLICAOF NO ONE on the replica, the old
//! primary made its replica). It checks:
//!
//! - on every reply: never the module's caught-panic error; every error is WRONGTYPE (or an
//!   expected one) for valid input, and bad input always gets an error; GETX/LOCKGET replies
//!   have their shape (3 elements, a known status, value and token present exactly when the
//!   status says so, TIMEOUT only for LOCKGET WAIT outside MULTI/scripts); a fill or a release
//!   with a token never granted is refused; in a script, the fill or release of a lease granted
//!   just before succeeds, and a read right after a write sees it;
//! - ids: every id (version, token) issued to a connection is larger than the previous one it
//!   was issued, and than every id any connection had been issued or shown before it sent the
//!   command (so, per key, a new version exceeds every version and token seen on it before),
//!   across restarts and failovers too;
//! - at checkpoints (clients paused, the primary's active expiry off) and at the end: nobody is
//!   parked, the replica's DEBUG DIGEST equals the primary's, `cache_entries` equals the number
//!   of keys of type cache-ent (SCAN + TYPE) and is the same on the replica, and after a
//!   consumer (as a worker would: XREADGROUP with the module's group, XACK, XDEL) drained the
//!   write-behind queue, `cache_wb_queue_length` equals its XLEN;
//! - nothing acknowledged is lost: each client writes unique values to ledger keys only it
//!   writes (CACHE.SET, TAGSET, WBQUEUE, a day's TTL) and follows each with `WAIT 1`; the writes
//!   WAIT confirmed read back on both servers, and their write-behind events were delivered to
//!   the consumer with their key and version, at every checkpoint, after every restart and
//!   failover, and at the end;
//! - counters: INFO's cache counters (all but the gauges) and `cache_last_id` never go down
//!   on one server process (sampled on the primary at every admin step);
//! - RSS: the primary's VmRSS, sampled at every admin step; after a warm-up (the first 20% of
//!   the run) within 10% of the warm-up level, on runs of 2 minutes or more (always reported;
//!   the 10 s after a restart or a failover, a new primary process warming up, left out);
//! - at the end, after adding entries in every state (`support::fixtures::fill_fixture`): the
//!   primary restarted from its AOF (as the run left it, then freshly rewritten) has the same
//!   digest and entries, issues larger ids, and the replica synced with it has the same digest
//!   again, and holds the ledger; no log or stderr (where a Rust panic message goes) mentions a
//!   panic or an internal error, and both servers are alive.
//!
//! The seed is printed; `SOAK_SEED=<n>` replays its choices (`SOAK_SEED=random` picks one; the
//! interleaving of the threads is not replayed), `SOAK_MS=<ms>` sets how long the clients run
//! (default 6000; `make soak DURATION=30m` sets it). The servers are started with
//! `support::server::Server`, whose stderr lands in a file the test reads.

mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::{Connection, ConnectionLike, Value};

use support::commands::{digest, info_int, info_section, try_info_section, wait_rewrite_idle};
use support::server::{wait_link_up, wait_online, wait_until, Server};

const DEFAULT_SEED: u64 = 0x50a4_5eed;
const DEFAULT_RUN_MS: u64 = 6000;
const CLIENTS: usize = 4;
/// A key whose PTTL is below this is "short-lived": the end of the run waits for it to go, so
/// that nothing expires during the end checks (a few seconds). Long-lived keys get 60 s or more.
const SHORT_MS: i64 = 15_000;
/// How long a reply may take before the test calls the server stalled (longer than the
/// 20 s `WAIT` of the checkpoints: on 2 shared cores a replica's ACK can be late).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A connection with read and write timeouts: a stalled server fails the test.
fn conn(s: &Server) -> Connection {
    try_connect(s.port).unwrap_or_else(|e| panic!("{e}"))
}

/// A connection to a port on loopback (with the timeouts), or why not.
fn try_connect(port: u16) -> Result<Connection, String> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(REPLY_TIMEOUT)
        .map_err(|e| format!("connect to :{port}: {e}"))?;
    c.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
    Ok(c)
}

/// Sends a command and returns its raw reply, error replies included (as `Value::ServerError`,
/// also nested in EXEC and script replies). `Err` only for connection failures.
fn call(c: &mut impl ConnectionLike, args: &[Vec<u8>]) -> Result<Value, String> {
    let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(&a[..]);
    }
    c.req_command(&cmd)
        .map_err(|e| format!("{} failed at the connection: {e}", show_args(args)))
}

/// Sends a command that must succeed; its reply.
fn must(c: &mut Connection, args: &[&[u8]]) -> Value {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    let v = call(c, &args).unwrap_or_else(|e| panic!("{e}"));
    if let Some(e) = error_of(&v) {
        panic!("{}: {e}", show_args(&args));
    }
    v
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("not an integer: {}", show(other)),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Okay => "OK".into(),
        other => panic!("not a string: {}", show(other)),
    }
}

fn scan_all(c: &mut Connection) -> Vec<Vec<u8>> {
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    loop {
        let v = must(c, &[b"SCAN", &cursor, b"COUNT", b"1000"]);
        let Value::Array(parts) = v else {
            panic!("SCAN reply {}", show(&v))
        };
        let Value::BulkString(next) = &parts[0] else {
            panic!("SCAN cursor {}", show(&parts[0]))
        };
        if let Value::Array(found) = &parts[1] {
            for k in found {
                if let Value::BulkString(k) = k {
                    keys.push(k.clone());
                }
            }
        }
        cursor = next.clone();
        if cursor == b"0" {
            keys.sort();
            keys.dedup();
            return keys;
        }
    }
}

fn logs_clean(name: &str, p: &Server) -> Result<(), String> {
    let logs = p.log().to_lowercase();
    for bad in ["panic", "internal error"] {
        if logs.contains(bad) {
            return Err(format!("{name}'s output mentions {bad:?}:\n{}", p.log()));
        }
    }
    Ok(())
}

fn assert_alive(name: &str, p: &mut Server) {
    assert!(p.is_alive(), "{name} died:\n{}", p.log());
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, seedable, good enough to pick commands.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// How long the clients run: `SOAK_MS`, default `DEFAULT_RUN_MS`.
fn run_ms() -> u64 {
    std::env::var("SOAK_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_RUN_MS)
}

fn seed() -> u64 {
    match std::env::var("SOAK_SEED") {
        Err(_) => DEFAULT_SEED,
        Ok(s) if s == "random" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        Ok(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .unwrap_or_else(|e| panic!("SOAK_SEED={s:?}: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and what their replies must look like
// ---------------------------------------------------------------------------------------------

/// The keys every command works on, binary ones and the empty key included.
fn key_set() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..14).map(|i| format!("soak:{i}").into_bytes()).collect();
    keys.extend([
        b"\0".to_vec(),
        b"bin\0key".to_vec(),
        b"\0\xff\r\n$3\r\n".to_vec(),
        b"soak:\0:nul\0".to_vec(),
        b"\xfe\xff".to_vec(),
        Vec::new(),
    ]);
    keys
}

/// The tags the tag commands pick from.
const TAG_POOL: &[&[u8]] = &[b"t0", b"t1", b"t2", b"t3", b"t:\0bin"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fill {
    /// No TOKEN: an authoritative write, never refused.
    No,
    /// A token this test was granted at some point: stored or refused.
    Known,
    /// A token never granted: must be refused.
    Never,
}

#[derive(Clone, Debug)]
enum Expect {
    /// CACHE.SET: a new version, or nil for a refused fill.
    Version(Fill),
    /// CACHE.GET: a value or nil.
    Value,
    /// CACHE.GETX / CACHE.LOCKGET: the triple; `may_time_out` for LOCKGET WAIT outside
    /// MULTI/scripts.
    Triple { lockget: bool, may_time_out: bool },
    /// CACHE.RELEASE: 1 or 0; 0 for a token never granted.
    Release { never_granted: bool },
    /// An integer in 0..=max (DEL, UNLINK, CACHE.DEL, EXPIRE, PERSIST, COPY).
    Count(i64),
    /// +OK.
    Okay,
    /// RENAME: +OK, or the error for a missing source.
    Rename,
    /// CACHE.INSPECT: nil or field/value pairs.
    Inspect,
    /// Bad input: an error reply.
    Bad,
    /// BGREWRITEAOF: started, scheduled, or already running.
    Rewrite,
    /// The read-through script: [GETX triple, fill version or nil]; a granted lease is filled.
    ScriptFill,
    /// [LOCKGET triple, RELEASE reply or nil]; a granted lease is released (1).
    ScriptRelease,
    /// [CACHE.SET version, CACHE.DEL count, CACHE.GET value, CACHE.INSPECT].
    ScriptMixed { value: Vec<u8>, same_key: bool },
    /// An array of strings (CACHE.TAGS, CACHE.WBQUEUES).
    Strings,
    /// CACHE.TAGSCAN: [cursor, [key ...]].
    Scan,
    /// CACHE.WBQUEUE / CACHE.WBDEL: [new version, stream id].
    WbEvent,
    /// BGSAVE SCHEDULE: started or scheduled, or one already running.
    Save,
}

#[derive(Clone, Debug)]
struct Req {
    args: Vec<Vec<u8>>,
    expect: Expect,
    /// The key (index in the key set) a granted token belongs to.
    key: usize,
}

/// What a reply told us: ids the server issued for this request (in order), ids it showed us
/// (CACHE.INSPECT), and the statuses of triples.
#[derive(Default)]
struct Outcome {
    issued: Vec<u64>,
    observed: Vec<u64>,
    granted: Vec<u64>,
    statuses: Vec<String>,
    wrongtype: bool,
}

/// The text of an error reply (`CODE detail`), or None.
fn error_of(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_string(),
        }),
        _ => None,
    }
}

/// The caught-panic error anywhere in a reply.
fn find_internal(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items.iter().find_map(find_internal),
        _ => error_of(v).filter(|e| e.contains("internal error")),
    }
}

fn show_bytes(b: &[u8]) -> String {
    if b.len() > 40 {
        format!("\"{}\"..<{} bytes>", b[..24].escape_ascii(), b.len())
    } else {
        format!("\"{}\"", b.escape_ascii())
    }
}

fn show_args(args: &[Vec<u8>]) -> String {
    let mut out = String::from_utf8_lossy(&args[0]).into_owned();
    for a in &args[1..] {
        out.push(' ');
        out.push_str(&show_bytes(a));
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(n) => n.to_string(),
        Value::BulkString(b) => show_bytes(b),
        Value::SimpleString(s) => format!("+{s}"),
        Value::Okay => "+OK".into(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Value::ServerError(_) => format!("-{}", error_of(v).unwrap_or_default()),
        other => format!("{other:?}"),
    }
}

/// Checks a reply against what its request may get. `Err` says what is wrong.
fn check(v: &Value, e: &Expect, out: &mut Outcome) -> Result<(), String> {
    if let Some(err) = find_internal(v) {
        return Err(format!("caught panic in the module: {err}"));
    }
    if let Some(err) = error_of(v) {
        return match e {
            Expect::Bad => Ok(()),
            Expect::Rename if err == "ERR no such key" => Ok(()),
            Expect::Rewrite | Expect::Save if err.contains("already in progress") => Ok(()),
            // Scripts report the error of the command that failed, prefixed or not.
            _ if err.starts_with("WRONGTYPE") || err.contains("WRONGTYPE Operation") => {
                out.wrongtype = true;
                Ok(())
            }
            _ => Err(format!("unexpected error {err:?}")),
        };
    }
    match (e, v) {
        (Expect::Bad, _) => Err("bad input was accepted".into()),
        (Expect::Version(fill), Value::Int(n)) => {
            if *n <= 0 {
                return Err(format!("version {n} is not positive"));
            }
            if *fill == Fill::Never {
                return Err("a fill with a token never granted was stored".into());
            }
            out.issued.push(*n as u64);
            Ok(())
        }
        (Expect::Version(Fill::No), Value::Nil) => Err("an authoritative write was refused".into()),
        (Expect::Version(_), Value::Nil) => Ok(()),
        (Expect::Value, Value::Nil | Value::BulkString(_)) => Ok(()),
        (
            Expect::Triple {
                lockget,
                may_time_out,
            },
            _,
        ) => check_triple(v, *lockget, *may_time_out, out).map(|_| ()),
        (Expect::Release { never_granted }, Value::Int(n)) => match n {
            0 => Ok(()),
            1 if !never_granted => Ok(()),
            _ => Err(format!("RELEASE answered {n}")),
        },
        (Expect::Count(max), Value::Int(n)) if (0..=*max).contains(n) => Ok(()),
        (Expect::Okay | Expect::Rename, Value::Okay) => Ok(()),
        (Expect::Rewrite, Value::SimpleString(s)) if s.starts_with("Background append only") => {
            Ok(())
        }
        (Expect::Save, Value::SimpleString(s)) if s.starts_with("Background saving") => Ok(()),
        (Expect::Inspect, _) => check_inspect(v, out),
        (Expect::Strings, Value::Array(items))
            if items.iter().all(|i| matches!(i, Value::BulkString(_))) =>
        {
            Ok(())
        }
        (Expect::Scan, Value::Array(parts)) => match &parts[..] {
            [Value::BulkString(cursor), Value::Array(keys)]
                if std::str::from_utf8(cursor).is_ok_and(|c| c.parse::<u64>().is_ok())
                    && keys.iter().all(|k| matches!(k, Value::BulkString(_))) =>
            {
                Ok(())
            }
            _ => Err("not [cursor, [key ...]]".into()),
        },
        (Expect::WbEvent, Value::Array(parts)) => match &parts[..] {
            [Value::Int(version), Value::BulkString(id)] if *version > 0 && !id.is_empty() => {
                out.issued.push(*version as u64);
                Ok(())
            }
            _ => Err("not [version, stream id]".into()),
        },
        (Expect::ScriptFill, Value::Array(items)) if items.len() == 2 => {
            let token = check_triple(&items[0], false, false, out)?;
            match (token, &items[1]) {
                (None, Value::Nil) => Ok(()),
                (Some(_), Value::Int(n)) if *n > 0 => {
                    out.issued.push(*n as u64);
                    Ok(())
                }
                (Some(t), other) => Err(format!(
                    "the fill of lease {t} granted in the same script answered {}",
                    show(other)
                )),
                (None, other) => Err(format!("no token, yet a fill reply {}", show(other))),
            }
        }
        (Expect::ScriptRelease, Value::Array(items)) if items.len() == 2 => {
            let token = check_triple(&items[0], true, false, out)?;
            match (token, &items[1]) {
                (None, Value::Nil) | (Some(_), Value::Int(1)) => Ok(()),
                (t, other) => Err(format!(
                    "token {t:?}, and the RELEASE in the same script answered {}",
                    show(other)
                )),
            }
        }
        (Expect::ScriptMixed { value, same_key }, Value::Array(items)) if items.len() == 4 => {
            let Value::Int(version) = items[0] else {
                return Err("CACHE.SET in the script gave no version".into());
            };
            out.issued.push(version as u64);
            if !matches!(items[1], Value::Int(0 | 1)) {
                return Err("CACHE.DEL in the script did not answer 0 or 1".into());
            }
            let got = match &items[2] {
                Value::BulkString(b) => Some(b),
                _ => None,
            };
            let want = (!same_key).then_some(value);
            if got != want {
                return Err(format!(
                    "CACHE.GET right after CACHE.SET (and CACHE.DEL of {} key) gave {}",
                    if *same_key { "the same" } else { "another" },
                    show(&items[2])
                ));
            }
            let mut shown = Outcome::default();
            check_inspect(&items[3], &mut shown)?;
            out.observed.extend(&shown.observed);
            // INSPECT lists the version first. After CACHE.DEL of the key itself: no entry, or
            // the pending entry of a lease handed over to a caller parked on the key
            // (version 0).
            let deleted_ok = matches!(items[3], Value::Nil) || shown.observed.first() == Some(&0);
            let written_ok = shown.observed.first() == Some(&(version as u64));
            if (*same_key && !deleted_ok) || (!same_key && !written_ok) {
                return Err(format!(
                    "CACHE.INSPECT in the script gave {}",
                    show(&items[3])
                ));
            }
            Ok(())
        }
        _ => Err("unexpected reply".into()),
    }
}

/// A GETX/LOCKGET reply: its shape, and the token when one is granted.
fn check_triple(
    v: &Value,
    lockget: bool,
    may_time_out: bool,
    out: &mut Outcome,
) -> Result<Option<u64>, String> {
    let Value::Array(items) = v else {
        return Err("not an array".into());
    };
    let [value, status, token] = &items[..] else {
        return Err(format!("{} elements, not 3", items.len()));
    };
    let has_value = match value {
        Value::Nil => false,
        Value::BulkString(_) => true,
        _ => return Err("the value is neither nil nor a string".into()),
    };
    let status = match status {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => return Err("the status is not a string".into()),
    };
    let token = match token {
        Value::Nil => None,
        Value::Int(t) if *t > 0 => Some(*t as u64),
        _ => return Err("the token is neither nil nor a positive integer".into()),
    };
    let (value_ok, token_ok) = match status.as_str() {
        "HIT" => (has_value, token.is_none()),
        "REFRESH" if !lockget => (has_value, token.is_some()),
        "STALE" => (has_value, true),
        "MISS" => (!has_value, token.is_some()),
        "LOCKED" => (!has_value, token.is_none()),
        "TIMEOUT" if may_time_out => (!has_value, token.is_none()),
        _ => return Err(format!("status {status:?} is not possible here")),
    };
    if !value_ok {
        return Err(format!("{status} with value present = {has_value}"));
    }
    if !token_ok {
        return Err(format!("{status} with token {token:?}"));
    }
    if let Some(t) = token {
        out.issued.push(t);
        out.granted.push(t);
    }
    out.statuses.push(status);
    Ok(token)
}

fn check_inspect(v: &Value, out: &mut Outcome) -> Result<(), String> {
    let items = match v {
        Value::Nil => return Ok(()),
        Value::Array(items) if items.len() % 2 == 0 => items,
        _ => return Err("CACHE.INSPECT: neither nil nor pairs".into()),
    };
    let mut version = None;
    let mut has_value = None;
    for pair in items.chunks(2) {
        let name = match &pair[0] {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            other => return Err(format!("CACHE.INSPECT field name {}", show(other))),
        };
        match (name.as_str(), &pair[1]) {
            ("version", Value::Int(n)) if *n >= 0 => {
                version = Some(*n);
                out.observed.push(*n as u64)
            }
            ("lease-token", Value::Int(n)) if *n > 0 => out.observed.push(*n as u64),
            ("lease-token", Value::Nil) => {}
            ("has-value", Value::Int(b @ (0 | 1))) => has_value = Some(*b == 1),
            ("version" | "lease-token" | "has-value", other) => {
                return Err(format!("CACHE.INSPECT {name} = {}", show(other)))
            }
            _ => {}
        }
    }
    match (version, has_value) {
        // A pending entry (a lease, no value yet) has had no write: version 0.
        (Some(0), Some(true)) => Err("CACHE.INSPECT: a value with version 0".into()),
        (Some(_), Some(_)) => Ok(()),
        _ => Err("CACHE.INSPECT without version or has-value".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------------

/// GETX, and a fill with the token when one is granted (it must be stored: nothing can come
/// between them). Lua numbers are doubles: ids are below 2^53, `%.0f` writes them exactly.
const SCRIPT_FILL: &str = r#"
local r = redis.call('CACHE.GETX', KEYS[1], 'BETA', ARGV[4], 'LEASE', ARGV[1])
local f = false
if r[3] then
  f = redis.call('CACHE.SET', KEYS[1], ARGV[2], 'PX', ARGV[3], 'TOKEN', string.format('%.0f', r[3]))
end
return {r, f}
"#;

/// LOCKGET with WAIT (which must not block in a script), and a release of a granted lease.
const SCRIPT_RELEASE: &str = r#"
local r = redis.call('CACHE.LOCKGET', KEYS[1], 'PX', ARGV[1], 'WAIT', ARGV[2])
local rel = false
if r[3] then
  rel = redis.call('CACHE.RELEASE', KEYS[1], string.format('%.0f', r[3]))
end
return {r, rel}
"#;

const SCRIPT_MIXED: &str = r#"
local v = redis.call('CACHE.SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GRACE', ARGV[3])
local d = redis.call('CACHE.DEL', KEYS[2])
local g = redis.call('CACHE.GET', KEYS[1])
local i = redis.call('CACHE.INSPECT', KEYS[1])
return {v, d, g, i}
"#;

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

struct Shared {
    /// The largest id any connection has been issued or shown so far.
    max_id: AtomicU64,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    deadline: Instant,
    /// Clients hold it (shared) for each operation; a checkpoint takes it exclusively, so that
    /// it compares the servers while no client has a command in flight.
    gate: RwLock<()>,
    /// Where the primary and the replica are; the admin changes it (gate held) on a restart
    /// or a failover, and the clients reconnect when its generation moves.
    topology: Mutex<Topology>,
    /// Acknowledged writes to keys only one client writes.
    ledger: Mutex<Ledger>,
    /// Set while the admin restarts the primary or fails over with the clients running: a
    /// client may then see its connection drop or the errors of a server changing role
    /// (`transient_reply`), and waits for the new topology.
    event_in_flight: AtomicBool,
}

#[derive(Clone, Copy, Debug)]
struct Topology {
    primary: u16,
    replica: u16,
    generation: u64,
}

/// What must survive everything: the last write of each ledger key that the primary
/// acknowledged and `WAIT 1` confirmed reached the replica, and the write-behind events
/// acknowledged so.
#[derive(Default)]
struct Ledger {
    /// Key -> its last confirmed value, or None when its last write was not confirmed (the
    /// server may hold that write or the one before: not checked until the next confirmed).
    values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Confirmed `CACHE.WBQUEUE`s not yet found in the queue: (stream id, key, version).
    events: Vec<QueuedEvent>,
    confirmed: u64,
    unconfirmed: u64,
    /// Checks of a ledger value that found it (summed over the verifications).
    values_verified: u64,
    /// Confirmed events found delivered to the consumer group with their key and version.
    events_verified: u64,
}

/// Ledger keys per client: each is rewritten over the run (the data set stays the same size).
const LEDGER_KEYS: u64 = 24;
/// A day: ledger keys never expire during a run.
const LEDGER_TTL_MS: &str = "86400000";

impl Shared {
    fn fail(&self, msg: String) {
        self.failures.lock().unwrap().push(msg);
        self.stop.store(true, Ordering::SeqCst);
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && Instant::now() < self.deadline
    }
}

#[derive(Default)]
struct Tally {
    ops: u64,
    by_cmd: BTreeMap<String, u64>,
    statuses: BTreeMap<String, u64>,
    wrongtype: u64,
    fills_stored: u64,
    fills_refused: u64,
    /// Errors seen during restarts and failovers with the clients running, by kind.
    transient: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        for (k, n) in &other.transient {
            *self.transient.entry(k.clone()).or_default() += n;
        }
        self.ops += other.ops;
        self.wrongtype += other.wrongtype;
        self.fills_stored += other.fills_stored;
        self.fills_refused += other.fills_refused;
        for (k, n) in &other.by_cmd {
            *self.by_cmd.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.statuses {
            *self.statuses.entry(k.clone()).or_default() += n;
        }
    }
}

enum Op {
    One(Req),
    Multi(Vec<Req>),
    /// A read on the replica.
    Replica(Req),
    /// A write to one of this client's ledger keys, then `WAIT 1`.
    Ledger(Req),
    /// A caller that sends LOCKGET ... WAIT on a connection of its own and hangs up after
    /// `ms` without reading the reply (it may be parked, or handed a lease, when it goes).
    HangUp {
        args: Vec<Vec<u8>>,
        ms: u64,
    },
}

struct Client {
    id: usize,
    rng: Rng,
    keys: Vec<Vec<u8>>,
    primary: Connection,
    primary_port: u16,
    replica: Connection,
    /// The topology generation the connections were opened for.
    generation: u64,
    /// Writes to the ledger so far (their values are unique).
    ledger_seq: u64,
    shared: Arc<Shared>,
    /// The last id this connection was issued.
    last_id: u64,
    /// Tokens granted to this client: (key, token).
    tokens: VecDeque<(usize, u64)>,
    /// Requests to send next (the fill or release of a lease just granted).
    follow_up: VecDeque<Req>,
    log: VecDeque<String>,
    tally: Tally,
    /// Since when this client has been riding out a restart or failover in flight.
    trouble_since: Option<Instant>,
}

/// How an error of a client's step starts when it may come from a restart or a failover with
/// the clients running: a connection that failed, or a `transient_reply`.
const TRANSIENT: &str = "transient: ";

/// The error a server changing role gives a command in flight, anywhere in a reply: READONLY
/// (a write reaching a primary just made a replica, also inside EXEC and scripts), UNBLOCKED
/// (a parked LOCKGET ... WAIT when its server became a replica), LOADING (a server still
/// loading its data).
fn transient_reply(v: &Value) -> Option<&'static str> {
    match v {
        Value::Array(items) => items.iter().find_map(transient_reply),
        _ => {
            let e = error_of(v)?;
            ["READONLY", "UNBLOCKED", "LOADING"]
                .into_iter()
                .find(|k| e.contains(k))
        }
    }
}

/// `call`, with the errors a restart or failover in flight may cause marked `TRANSIENT`.
fn call_marked(c: &mut Connection, args: &[Vec<u8>]) -> Result<Value, String> {
    let v = call(c, args).map_err(|e| format!("{TRANSIENT}{e}"))?;
    match transient_reply(&v) {
        Some(kind) => Err(format!(
            "{TRANSIENT}{kind}: {} -> {}",
            show_args(args),
            show(&v)
        )),
        None => Ok(v),
    }
}

fn a(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn n(x: i64) -> Vec<u8> {
    x.to_string().into_bytes()
}

impl Client {
    fn key(&mut self) -> (usize, Vec<u8>) {
        let i = self.rng.below(self.keys.len() as u64) as usize;
        (i, self.keys[i].clone())
    }

    fn value(&mut self) -> Vec<u8> {
        let len = match self.rng.below(20) {
            0 => self.rng.range(1000, 5000),
            1..=5 => self.rng.range(16, 200),
            _ => self.rng.range(0, 16),
        };
        self.rng.bytes(len as usize)
    }

    /// `EX s | PX ms`: short-lived (gone before the end checks; some stale at once) or
    /// long-lived.
    fn ttl(&mut self, args: &mut Vec<Vec<u8>>) {
        match self.rng.below(5) {
            0 if self.rng.chance(40) => args.extend([a("PX"), n(self.rng.range(1, 30))]),
            0 => args.extend([a("PX"), n(self.rng.range(20, 1500))]),
            1 => args.extend([a("EX"), a("1")]),
            2 | 3 => args.extend([a("EX"), n(self.rng.range(60, 3600))]),
            _ => args.extend([a("PX"), n(self.rng.range(60_000, 3_600_000))]),
        }
    }

    /// A token never granted: far below the clock (ids are ms << 10), or far ahead of it.
    fn never_granted_token(&mut self) -> u64 {
        if self.rng.chance(50) {
            1 + self.rng.below(1 << 40)
        } else {
            self.shared.max_id.load(Ordering::SeqCst) + (1 << 44) + self.rng.below(1 << 20)
        }
    }

    fn set_req(&mut self, ki: usize, key: Vec<u8>, token: Option<(u64, Fill)>) -> Req {
        let mut args = vec![a("CACHE.SET"), key, self.value()];
        // Options in random order.
        let mut opts: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut ttl = Vec::new();
        self.ttl(&mut ttl);
        opts.push(ttl);
        if self.rng.chance(70) {
            opts.push(vec![a("GRACE"), n(self.rng.range(0, 1000))]);
        }
        if self.rng.chance(50) {
            let d = *self.rng.pick(&[0, 5, 100, 2000, 1_000_000]);
            opts.push(vec![a("DELTA"), n(d)]);
        }
        let fill = match token {
            Some((t, fill)) => {
                opts.push(vec![a("TOKEN"), n(t as i64)]);
                fill
            }
            None => Fill::No,
        };
        while !opts.is_empty() {
            let i = self.rng.below(opts.len() as u64) as usize;
            args.extend(opts.swap_remove(i));
        }
        Req {
            args,
            expect: Expect::Version(fill),
            key: ki,
        }
    }

    fn known_token(&mut self, ki: usize) -> Option<u64> {
        let same: Vec<u64> = self
            .tokens
            .iter()
            .filter(|(k, _)| *k == ki)
            .map(|(_, t)| *t)
            .collect();
        if !same.is_empty() && self.rng.chance(80) {
            return Some(*self.rng.pick(&same));
        }
        let all: Vec<u64> = self.tokens.iter().map(|(_, t)| *t).collect();
        (!all.is_empty()).then(|| *self.rng.pick(&all))
    }

    fn getx_req(&mut self, ki: usize, key: Vec<u8>) -> Req {
        let mut args = vec![a("CACHE.GETX"), key];
        if self.rng.chance(60) {
            let beta = *self
                .rng
                .pick(&["0.001", "0.5", "1", "2", "10", "100", "1e3", "3.5"]);
            args.extend([a("BETA"), a(beta)]);
        }
        if self.rng.chance(80) {
            args.extend([a("LEASE"), n(self.rng.range(5, 500))]);
        }
        if args.len() == 6 && self.rng.chance(50) {
            args.swap(2, 4);
            args.swap(3, 5);
        }
        Req {
            args,
            expect: Expect::Triple {
                lockget: false,
                may_time_out: false,
            },
            key: ki,
        }
    }

    fn lockget_req(&mut self, ki: usize, key: Vec<u8>, in_tx: bool) -> Req {
        let mut args = vec![a("CACHE.LOCKGET"), key];
        if self.rng.chance(80) {
            args.extend([a("PX"), n(self.rng.range(5, 500))]);
        }
        let wait = self.rng.chance(50);
        if wait {
            args.extend([a("WAIT"), n(self.rng.range(1, 50))]);
        }
        Req {
            args,
            expect: Expect::Triple {
                lockget: true,
                may_time_out: wait && !in_tx,
            },
            key: ki,
        }
    }

    /// One to three tags of a small pool (a binary one included).
    fn tags(&mut self) -> Vec<Vec<u8>> {
        (0..self.rng.range(1, 3))
            .map(|_| self.rng.pick(TAG_POOL).to_vec())
            .collect()
    }

    /// The tag and write-behind commands.
    fn tag_or_wb_req(&mut self, ki: usize, key: Vec<u8>) -> Req {
        let req = |args: Vec<Vec<u8>>, expect: Expect| Req {
            args,
            expect,
            key: ki,
        };
        let many = Expect::Count(1_000_000);
        match self.rng.below(12) {
            0..=2 => {
                let token = match self.rng.below(10) {
                    0..=2 => self.known_token(ki).map(|t| (t, Fill::Known)),
                    _ => None,
                };
                let mut r = self.set_req(ki, key, token);
                r.args[0] = a("CACHE.TAGSET");
                r.args.push(a("TAGS"));
                r.args.extend(self.tags());
                r
            }
            3 => req(vec![a("CACHE.TAGS"), key], Expect::Strings),
            4 => req(vec![a("CACHE.TAGCOUNT"), self.tags().remove(0)], many),
            5 => {
                let mut args = vec![a("CACHE.TAGSCAN"), self.tags().remove(0), a("0")];
                if self.rng.chance(50) {
                    args.extend([a("COUNT"), n(self.rng.range(1, 50))]);
                }
                req(args, Expect::Scan)
            }
            6 => {
                let mut args = vec![a("CACHE.TAGINVALIDATE")];
                args.extend(self.tags());
                req(args, many)
            }
            7..=9 => {
                let mut args = vec![a("CACHE.WBQUEUE"), key, self.value()];
                if self.rng.chance(70) {
                    self.ttl(&mut args);
                }
                if self.rng.chance(30) {
                    args.extend([a("GRACE"), n(self.rng.range(0, 1000))]);
                }
                if self.rng.chance(30) {
                    args.push(a("TAGS"));
                    args.extend(self.tags());
                }
                req(args, Expect::WbEvent)
            }
            10 => req(vec![a("CACHE.WBDEL"), key], Expect::WbEvent),
            _ => req(vec![a("CACHE.WBQUEUES")], Expect::Strings),
        }
    }

    /// A valid request of any single-command kind.
    fn valid_req(&mut self, in_tx: bool) -> Req {
        let (ki, key) = self.key();
        let pick = self.rng.below(112);
        let req = |args: Vec<Vec<u8>>, expect: Expect| Req {
            args,
            expect,
            key: ki,
        };
        match pick {
            0..=19 => {
                let token = match self.rng.below(10) {
                    0..=2 => self.known_token(ki).map(|t| (t, Fill::Known)),
                    3 => Some((self.never_granted_token(), Fill::Never)),
                    _ => None,
                };
                self.set_req(ki, key, token)
            }
            20..=28 => req(vec![a("CACHE.GET"), key], Expect::Value),
            29..=44 => self.getx_req(ki, key),
            45..=59 => self.lockget_req(ki, key, in_tx),
            60..=64 => {
                let (token, never) = match self.known_token(ki) {
                    Some(t) if self.rng.chance(85) => (t, false),
                    _ => (self.never_granted_token(), true),
                };
                req(
                    vec![a("CACHE.RELEASE"), key, n(token as i64)],
                    Expect::Release {
                        never_granted: never,
                    },
                )
            }
            65..=68 => {
                let mut args = vec![a("CACHE.DEL"), key];
                for _ in 0..self.rng.below(3) {
                    args.push(self.key().1);
                }
                let max = args.len() as i64 - 1;
                req(args, Expect::Count(max))
            }
            69..=71 => {
                let cmd = if self.rng.chance(50) { "DEL" } else { "UNLINK" };
                let mut args = vec![a(cmd), key];
                for _ in 0..self.rng.below(2) {
                    args.push(self.key().1);
                }
                let max = args.len() as i64 - 1;
                req(args, Expect::Count(max))
            }
            72..=76 => {
                let args = match self.rng.below(8) {
                    0 => vec![a("EXPIRE"), key, n(self.rng.range(1, 2))],
                    1..=3 => vec![a("PEXPIRE"), key, n(self.rng.range(20, 2000))],
                    4..=6 => vec![a("PEXPIRE"), key, n(self.rng.range(60_000, 3_600_000))],
                    _ => vec![a("PERSIST"), key],
                };
                req(args, Expect::Count(1))
            }
            77..=79 => {
                let (_, dst) = self.key();
                req(vec![a("RENAME"), key, dst], Expect::Rename)
            }
            80..=82 => {
                let (mut di, mut dst) = self.key();
                if di == ki {
                    di = (ki + 1) % self.keys.len();
                    dst = self.keys[di].clone();
                }
                let mut args = vec![a("COPY"), key, dst];
                if self.rng.chance(50) {
                    args.push(a("REPLACE"));
                }
                req(args, Expect::Count(1))
            }
            83..=88 => req(vec![a("CACHE.INSPECT"), key], Expect::Inspect),
            100..=111 => self.tag_or_wb_req(ki, key),
            // A plain string now and then (WRONGTYPE for the cache commands).
            89 if self.rng.chance(30) => {
                let v = self.value();
                req(
                    vec![a("SET"), key, v, a("PX"), n(self.rng.range(50, 800))],
                    Expect::Okay,
                )
            }
            _ => self.bad_req(),
        }
    }

    /// Input the module must refuse with an error, whatever the key holds.
    fn bad_req(&mut self) -> Req {
        let (ki, key) = self.key();
        let v = self.value();
        let set = |opts: &[&str]| {
            let mut args = vec![a("CACHE.SET"), key.clone(), v.clone()];
            args.extend(opts.iter().map(|o| a(o)));
            args
        };
        let k = key.clone();
        let args = match self.rng.below(44) {
            0 => set(&[]),
            1 => set(&["EX", "0"]),
            2 => set(&["PX", "-5"]),
            3 => set(&["PX", "10", "EX", "1"]),
            4 => set(&["PX", "10", "px", "10"]),
            5 => set(&["PX", "abc"]),
            6 => set(&["PX", "9223372036854775807"]),
            7 => set(&["PX", "100", "GRACE", "-1"]),
            8 => set(&["PX", "100", "GRACE", "9223372036854775000"]),
            9 => set(&["PX", "100", "TOKEN", "0"]),
            10 => set(&["PX", "100", "TOKEN", "-3"]),
            11 => set(&["PX", "100", "TOKEN", "abc"]),
            12 => set(&["PX", "100", "BOGUS", "1"]),
            13 => set(&["PX", "100", "DELTA"]),
            14 => set(&["EX", "1.5"]),
            15 => vec![a("CACHE.SET"), k],
            16 => vec![a("CACHE.GET")],
            17 => vec![a("CACHE.GET"), k, a("extra")],
            18 => vec![a("CACHE.GETX"), k, a("BETA"), a("0")],
            19 => vec![a("CACHE.GETX"), k, a("BETA"), a("-1")],
            20 => vec![a("CACHE.GETX"), k, a("BETA"), a("nan")],
            21 => vec![a("CACHE.GETX"), k, a("BETA"), a("inf")],
            22 => vec![a("CACHE.GETX"), k, a("LEASE"), a("0")],
            23 => vec![a("CACHE.GETX"), k, a("BETA"), a("1"), a("beta"), a("1")],
            24 => vec![a("CACHE.GETX")],
            25 => vec![a("CACHE.LOCKGET"), k, a("WAIT"), a("0")],
            26 => vec![a("CACHE.LOCKGET"), k, a("PX"), a("9223372036854775807")],
            27 => vec![a("CACHE.LOCKGET"), k, a("WAIT"), a("9223372036854775807")],
            28 => vec![a("CACHE.LOCKGET"), k, a("NOPE"), a("1")],
            29 => vec![a("CACHE.RELEASE"), k],
            30 => vec![a("CACHE.RELEASE"), k, a("0")],
            31 => vec![a("CACHE.RELEASE"), k, a("x1")],
            32 => vec![a("CACHE.DEL")],
            33 => vec![a("CACHE.INSPECT"), k, a("more")],
            34 => vec![a("CACHE.TAGSET"), k, v, a("PX"), a("100"), a("TAGS")],
            35 => vec![
                a("CACHE.TAGSET"),
                k,
                v,
                a("PX"),
                a("100"),
                a("NOTAGS"),
                a("t"),
            ],
            36 => vec![a("CACHE.TAGSCAN"), a("t0"), a("abc")],
            37 => vec![a("CACHE.TAGCOUNT")],
            38 => vec![a("CACHE.TAGINVALIDATE")],
            39 => vec![
                a("CACHE.WBQUEUE"),
                k,
                v,
                a("PX"),
                a("100"),
                a("TOKEN"),
                a("5"),
            ],
            40 => vec![a("CACHE.WBQUEUE"), k, v, a("DELTA"), a("5")],
            41 => vec![a("CACHE.WBDEL"), k, a("extra")],
            // The internal records are refused from clients.
            42 => vec![a("CACHE.APPLY"), k, a("x"), a("y")],
            _ => vec![a("CACHE.TAGAPPLY"), a("1"), a("99999999999"), a("t0")],
        };
        Req {
            args,
            expect: Expect::Bad,
            key: ki,
        }
    }

    fn script_req(&mut self) -> Req {
        let (ki, key) = self.key();
        let (args, expect) = match self.rng.below(3) {
            0 => {
                let beta = *self.rng.pick(&["1", "100"]);
                let v = self.value();
                (
                    vec![
                        a("EVAL"),
                        a(SCRIPT_FILL),
                        a("1"),
                        key,
                        n(self.rng.range(1000, 2000)),
                        v,
                        n(self.rng.range(20, 1500)),
                        a(beta),
                    ],
                    Expect::ScriptFill,
                )
            }
            1 => (
                vec![
                    a("EVAL"),
                    a(SCRIPT_RELEASE),
                    a("1"),
                    key,
                    n(self.rng.range(1000, 2000)),
                    n(self.rng.range(1, 50)),
                ],
                Expect::ScriptRelease,
            ),
            _ => {
                let (k2, key2) = self.key();
                let v = self.value();
                (
                    vec![
                        a("EVAL"),
                        a(SCRIPT_MIXED),
                        a("2"),
                        key,
                        key2,
                        v.clone(),
                        n(self.rng.range(1000, 2000)),
                        n(self.rng.range(0, 500)),
                    ],
                    Expect::ScriptMixed {
                        value: v,
                        same_key: k2 == ki,
                    },
                )
            }
        };
        Req {
            args,
            expect,
            key: ki,
        }
    }

    fn next_op(&mut self) -> Op {
        if let Some(r) = self.follow_up.pop_front() {
            return Op::One(r);
        }
        match self.rng.below(100) {
            0..=5 => {
                let n = self.rng.range(2, 5);
                Op::Multi((0..n).map(|_| self.valid_req(true)).collect())
            }
            6..=11 => Op::One(self.script_req()),
            12 => {
                let (_, key) = self.key();
                let px = n(self.rng.range(5, 300));
                Op::HangUp {
                    args: vec![a("CACHE.LOCKGET"), key, a("PX"), px, a("WAIT"), a("1000")],
                    ms: self.rng.range(0, 5) as u64,
                }
            }
            13..=14 => {
                let (ki, key) = self.key();
                let cmd = if self.rng.chance(50) {
                    "CACHE.GET"
                } else {
                    "CACHE.INSPECT"
                };
                let expect = if cmd == "CACHE.GET" {
                    Expect::Value
                } else {
                    Expect::Inspect
                };
                Op::Replica(Req {
                    args: vec![a(cmd), key],
                    expect,
                    key: ki,
                })
            }
            15..=24 => Op::One(self.bad_req()),
            25..=27 => Op::Ledger(self.ledger_req()),
            _ => Op::One(self.valid_req(false)),
        }
    }

    /// A long-lived write (CACHE.SET, TAGSET with a tag nothing invalidates, or WBQUEUE) of
    /// a unique value to one of this client's ledger keys.
    fn ledger_req(&mut self) -> Req {
        self.ledger_seq += 1;
        let key = format!("ledger:{}:{}", self.id, self.rng.below(LEDGER_KEYS)).into_bytes();
        let mut value = format!("c{}#{}:", self.id, self.ledger_seq).into_bytes();
        let extra = self.value();
        value.extend(extra);
        let ttl = [a("PX"), a(LEDGER_TTL_MS)];
        let (args, expect) = match self.rng.below(3) {
            0 => (
                [vec![a("CACHE.SET"), key, value], ttl.to_vec()].concat(),
                Expect::Version(Fill::No),
            ),
            1 => {
                let tag = format!("ledger-tag:{}", self.id);
                let tags = vec![a("TAGS"), a(&tag)];
                let args = [vec![a("CACHE.TAGSET"), key, value], ttl.to_vec(), tags].concat();
                (args, Expect::Version(Fill::No))
            }
            _ => (
                [vec![a("CACHE.WBQUEUE"), key, value], ttl.to_vec()].concat(),
                Expect::WbEvent,
            ),
        };
        Req {
            args,
            expect,
            key: usize::MAX,
        }
    }

    /// Reconnects when the admin restarted the primary or failed over since the last step.
    fn follow_topology(&mut self) -> Result<(), String> {
        let t = *self.shared.topology.lock().unwrap();
        if t.generation == self.generation {
            return Ok(());
        }
        let marked = |e: String| format!("{TRANSIENT}{e}");
        self.primary = try_connect(t.primary).map_err(marked)?;
        self.replica = try_connect(t.replica).map_err(marked)?;
        self.primary_port = t.primary;
        self.generation = t.generation;
        self.note(format!(
            "(now primary :{}, replica :{})",
            t.primary, t.replica
        ));
        Ok(())
    }

    fn note(&mut self, line: String) {
        if self.log.len() == 40 {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// Checks the reply of `req` and the ids it issued; remembers granted tokens.
    fn judge(&mut self, req: &Req, v: &Value, floor: u64, replica: bool) -> Result<(), String> {
        let mut out = Outcome::default();
        let verdict = check(v, &req.expect, &mut out);
        self.note(format!(
            "{}{} -> {}",
            if replica { "(replica) " } else { "" },
            show_args(&req.args),
            show(v)
        ));
        verdict?;
        for id in &out.issued {
            if *id <= self.last_id {
                return Err(format!(
                    "id {id} issued after id {} on this connection",
                    self.last_id
                ));
            }
            if *id <= floor {
                return Err(format!(
                    "id {id} issued after id {floor} had been seen (sent after it was received)"
                ));
            }
            self.last_id = *id;
        }
        let max = out.issued.iter().chain(&out.observed).max().copied();
        if let Some(m) = max {
            self.shared.max_id.fetch_max(m, Ordering::SeqCst);
        }
        let cmd = String::from_utf8_lossy(&req.args[0]).to_uppercase();
        *self.tally.by_cmd.entry(cmd).or_default() += 1;
        for s in out.statuses {
            *self.tally.statuses.entry(s).or_default() += 1;
        }
        self.tally.wrongtype += out.wrongtype as u64;
        if let Expect::Version(Fill::Known) = req.expect {
            match v {
                Value::Int(_) => self.tally.fills_stored += 1,
                _ => self.tally.fills_refused += 1,
            }
        }
        for t in out.granted {
            if self.tokens.len() == 16 {
                self.tokens.pop_front();
            }
            self.tokens.push_back((req.key, t));
            if !replica && matches!(req.expect, Expect::Triple { .. }) {
                // Usually fill it at once, sometimes give it up, else let it lapse.
                let key = self.keys[req.key].clone();
                match self.rng.below(100) {
                    0..=59 => {
                        let r = self.set_req(req.key, key, Some((t, Fill::Known)));
                        self.follow_up.push_back(r);
                    }
                    60..=74 => self.follow_up.push_back(Req {
                        args: vec![a("CACHE.RELEASE"), key, n(t as i64)],
                        expect: Expect::Release {
                            never_granted: false,
                        },
                        key: req.key,
                    }),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A ledger write and the `WAIT 1` after it: their replies.
    fn ledger_write(&mut self, req: &Req, floor: u64) -> Result<(Value, Value), String> {
        let v = call_marked(&mut self.primary, &req.args)?;
        self.judge(req, &v, floor, false)?;
        let acked = call_marked(&mut self.primary, &[a("WAIT"), a("1"), a("5000")])?;
        Ok((v, acked))
    }

    fn step(&mut self) -> Result<(), String> {
        self.follow_topology()?;
        let op = self.next_op();
        self.tally.ops += 1;
        let floor = self.shared.max_id.load(Ordering::SeqCst);
        match op {
            Op::One(req) => {
                let v = call_marked(&mut self.primary, &req.args)?;
                self.judge(&req, &v, floor, false)
            }
            Op::Replica(req) => {
                let v = call_marked(&mut self.replica, &req.args)?;
                self.judge(&req, &v, floor, true)
            }
            Op::Ledger(req) => {
                let (key, value) = (req.args[1].clone(), req.args[2].clone());
                let (v, acked) = match self.ledger_write(&req, floor) {
                    Ok(replies) => replies,
                    Err(e) => {
                        // The write may or may not be on the servers (its connection may drop
                        // before the reply, in a restart with the clients running).
                        let mut ledger = self.shared.ledger.lock().unwrap();
                        ledger.unconfirmed += 1;
                        ledger.values.insert(key, None);
                        return Err(e);
                    }
                };
                self.note(format!("WAIT 1 5000 -> {}", show(&acked)));
                let mut ledger = self.shared.ledger.lock().unwrap();
                if acked == Value::Int(1) {
                    ledger.confirmed += 1;
                    ledger.values.insert(key.clone(), Some(value));
                    if let Value::Array(parts) = &v {
                        if let [Value::Int(version), Value::BulkString(id)] = &parts[..] {
                            ledger.events.push((id.clone(), key, *version));
                        }
                    }
                } else {
                    ledger.unconfirmed += 1;
                    ledger.values.insert(key, None);
                }
                Ok(())
            }
            Op::HangUp { args, ms } => {
                self.note(format!("(hangs up after {ms} ms) {}", show_args(&args)));
                let mut resp = format!("*{}\r\n", args.len()).into_bytes();
                for arg in &args {
                    resp.extend(format!("${}\r\n", arg.len()).into_bytes());
                    resp.extend(arg);
                    resp.extend(b"\r\n");
                }
                let mut sock = TcpStream::connect(("127.0.0.1", self.primary_port))
                    .map_err(|e| format!("{TRANSIENT}connect: {e}"))?;
                sock.write_all(&resp)
                    .map_err(|e| format!("{TRANSIENT}write: {e}"))?;
                std::thread::sleep(Duration::from_millis(ms));
                *self
                    .tally
                    .by_cmd
                    .entry("hung-up LOCKGET".into())
                    .or_default() += 1;
                Ok(())
            }
            Op::Multi(reqs) => {
                let v = call_marked(&mut self.primary, &[a("MULTI")])?;
                self.note("MULTI".into());
                if v != Value::Okay {
                    return Err(format!("MULTI -> {}", show(&v)));
                }
                // A wrong number of arguments is refused when queued, as for core commands,
                // and then EXEC discards the whole transaction.
                let mut refused_at_queue = false;
                for r in &reqs {
                    let q = call_marked(&mut self.primary, &r.args)?;
                    if q != Value::SimpleString("QUEUED".into()) {
                        self.note(format!("  {} -> {}", show_args(&r.args), show(&q)));
                        let arity = error_of(&q)
                            .is_some_and(|e| e.starts_with("ERR wrong number of arguments"));
                        if !(arity && matches!(r.expect, Expect::Bad)) {
                            return Err(format!("not queued: {}", show(&q)));
                        }
                        refused_at_queue = true;
                    }
                }
                let v = call_marked(&mut self.primary, &[a("EXEC")])?;
                if refused_at_queue {
                    self.note(format!("EXEC -> {}", show(&v)));
                    return match error_of(&v) {
                        Some(e) if e.starts_with("EXECABORT") => Ok(()),
                        _ => Err(format!("EXEC after a refused command -> {}", show(&v))),
                    };
                }
                let Value::Array(items) = &v else {
                    self.note(format!("EXEC -> {}", show(&v)));
                    return Err(format!("EXEC -> {}", show(&v)));
                };
                if items.len() != reqs.len() {
                    return Err(format!("EXEC -> {} replies", items.len()));
                }
                self.note(format!("EXEC ({} commands):", reqs.len()));
                for (r, item) in reqs.iter().zip(items) {
                    self.judge(r, item, floor, false)?;
                }
                Ok(())
            }
        }
    }

    /// Whether a restart or failover with the clients running is under way, or has moved the
    /// servers since this client last connected.
    fn in_event(&self) -> bool {
        self.shared.event_in_flight.load(Ordering::SeqCst)
            || self.shared.topology.lock().unwrap().generation != self.generation
    }

    /// After an error `in_event` explains: counts it, then waits for the admin to publish the
    /// new topology (`step` reconnects). An error for longer than a minute is a failure.
    fn ride_out(&mut self, e: String) -> Result<(), String> {
        let kind = e[TRANSIENT.len()..]
            .split(':')
            .next()
            .filter(|k| ["READONLY", "UNBLOCKED", "LOADING"].contains(k))
            .unwrap_or("connection");
        *self.tally.transient.entry(kind.to_string()).or_default() += 1;
        self.note(format!("(rides out) {e}"));
        let since = *self.trouble_since.get_or_insert_with(Instant::now);
        while self.shared.running()
            && self.shared.topology.lock().unwrap().generation == self.generation
        {
            if since.elapsed() > Duration::from_secs(60) {
                return Err(format!("still failing after 60 s: {e}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if since.elapsed() > Duration::from_secs(60) {
            return Err(format!("still failing after 60 s: {e}"));
        }
        // The new servers may need a moment before they take connections (a reconnect that
        // failed is retried from here).
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    fn run(mut self) -> Tally {
        while self.shared.running() {
            let shared = self.shared.clone();
            let gate = shared.gate.read().unwrap_or_else(|e| e.into_inner());
            let result = self.step();
            drop(gate);
            let result = match result {
                Err(e) if e.starts_with(TRANSIENT) && self.in_event() => self.ride_out(e),
                Ok(()) => {
                    self.trouble_since = None;
                    Ok(())
                }
                other => other,
            };
            if let Err(e) = result {
                let log: Vec<String> = self.log.iter().map(|l| format!("    {l}")).collect();
                self.shared.fail(format!(
                    "client {} after {} ops: {e}\n  its last commands (the last one failed):\n{}",
                    self.id,
                    self.tally.ops,
                    log.join("\n")
                ));
                break;
            }
        }
        self.tally
    }
}

// ---------------------------------------------------------------------------------------------
// Admin thread
// ---------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct AdminTally {
    reloads: u64,
    rewrites: u64,
    saves: u64,
    configs: u64,
    checkpoints: u64,
    restarts: u64,
    failovers: u64,
    /// Restarts and failovers with the clients running.
    in_flight: u64,
    /// Time the clients spent paused by checkpoints, restarts and failovers.
    paused_ms: u128,
    /// The primary's VmRSS over the run: (ms since the start, kB).
    rss: Vec<(u64, u64)>,
    /// When restarts and failovers ended (ms since the start): a new primary process.
    new_primary_ms: Vec<u64>,
    /// INFO samples whose counters were checked against the previous one of the same process.
    counter_samples: u64,
}

/// The primary and the replica; `p` is the index of the primary.
struct Pair {
    servers: Vec<Server>,
    p: usize,
}

impl Pair {
    fn primary(&self) -> &Server {
        &self.servers[self.p]
    }

    fn replica(&self) -> &Server {
        &self.servers[1 - self.p]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum EventKind {
    /// The primary shut down (SHUTDOWN: its AOF flushed) and started again from its AOF.
    Restart,
    /// With the clients paused: the replica promoted with REPLICAOF NO ONE, the old primary
    /// made its replica. With the clients running: FAILOVER (the primary pauses writes, lets
    /// the replica catch up, then swaps roles with it).
    Failover,
}

/// Whether the clients keep sending commands through an event.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Clients {
    /// Paused (the gate held): nothing is in flight when the servers change.
    Paused,
    /// Running: commands in flight see connections drop, READONLY, UNBLOCKED.
    Running,
}

#[derive(Clone, Copy, Debug)]
struct Event {
    kind: EventKind,
    clients: Clients,
}

/// Restarts and failovers spread evenly over the run, alternating (at least one of each):
/// one restart per 150 s and one failover per 200 s of run; of each kind the first, third...
/// with the clients running, the others with the clients paused.
fn schedule(run_ms: u64) -> Vec<(u64, Event)> {
    let restarts = (run_ms / 150_000).max(1);
    let failovers = (run_ms / 200_000).max(1);
    let total = restarts + failovers;
    let (mut r, mut f) = (0, 0);
    (0..total)
        .map(|k| {
            // Whichever kind is further behind its share goes next.
            let (kind, nth) = if f * restarts < r * failovers || r == restarts {
                f += 1;
                (EventKind::Failover, f)
            } else {
                r += 1;
                (EventKind::Restart, r)
            };
            let clients = if nth % 2 == 1 {
                Clients::Running
            } else {
                Clients::Paused
            };
            (run_ms * (k + 1) / (total + 1), Event { kind, clients })
        })
        .collect()
}

/// INFO fields of the cache section that are gauges; every other one is a counter, and
/// `cache_last_id` only grows too.
const GAUGES: &[&str] = &[
    "cache_entries",
    "cache_lockget_parked",
    "cache_tags",
    "cache_tagged_entries",
    "cache_tag_index_bytes",
    "cache_tag_invalidations_in_force",
    "cache_tag_pending_removal",
    "cache_tag_invalidations_unconfirmed",
    "cache_wb_queue_length",
    "cache_wb_oldest_event_age_ms",
];

/// The kB of VmRSS in /proc/<pid>/status.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Admin {
    shared: Arc<Shared>,
    checker: Checker,
    pair: Pair,
    rng: Rng,
    t: AdminTally,
    log: Vec<String>,
    started: Instant,
    /// The last counters seen of each server process (by run_id).
    counters: HashMap<String, BTreeMap<String, i64>>,
}

impl Admin {
    /// The primary's RSS, and its counters checked against its previous sample.
    fn sample(&mut self) -> Result<(), String> {
        if let Some(kb) = rss_kb(self.pair.primary().pid()) {
            let ms = self.started.elapsed().as_millis() as u64;
            self.t.rss.push((ms, kb));
        }
        let pc = &mut self.checker.pc;
        let run_id = info_section(pc, "server")
            .remove("run_id")
            .unwrap_or_default();
        let now: BTreeMap<String, i64> = info_section(pc, "cache")
            .into_iter()
            .filter(|(k, _)| !GAUGES.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        if let Some(before) = self.counters.get(&run_id) {
            for (k, v) in &now {
                let b = before.get(k).copied().unwrap_or(0);
                if *v < b {
                    return Err(format!("INFO {k} went from {b} to {v} on the same process"));
                }
            }
            self.t.counter_samples += 1;
        }
        self.counters.insert(run_id, now);
        Ok(())
    }

    /// Settings the run gives every primary (a restarted server starts with the defaults).
    fn configure_primary(&mut self) {
        must(
            &mut self.checker.pc,
            &[b"CONFIG", b"SET", b"cache.lease-ms", b"300"],
        );
    }

    /// Tells the clients to reconnect (the gate is held).
    fn moved(&mut self) {
        let mut t = self.shared.topology.lock().unwrap();
        t.primary = self.pair.primary().port;
        t.replica = self.pair.replica().port;
        t.generation += 1;
    }

    /// The primary shut down (its AOF flushed) and started again from its AOF; the replica
    /// syncs with it again; the ledger holds. With the clients running, their connections
    /// drop meanwhile.
    fn restart(&mut self) -> Result<(), String> {
        wait_replica(&mut self.checker.pc, &mut self.checker.rc)?;
        let p = self.pair.p;
        if !self.pair.servers[p].shutdown(false) {
            return Err(format!(
                "the primary did not shut down:\n{}",
                self.pair.servers[p].log()
            ));
        }
        self.pair.servers[p].spawn();
        wait_link_up(self.pair.replica());
        wait_online(self.pair.primary());
        self.checker.pc = conn(self.pair.primary());
        self.checker.dropped += info_int(
            &mut self.checker.pc,
            "persistence",
            "rdb_last_load_keys_expired",
        );
        self.configure_primary();
        self.moved();
        self.t.restarts += 1;
        Ok(())
    }

    /// With the clients paused, after WAIT: the replica promoted (REPLICAOF NO ONE), the old
    /// primary made its replica; the clients follow the new primary.
    fn failover(&mut self) -> Result<(), String> {
        wait_replica(&mut self.checker.pc, &mut self.checker.rc)?;
        must(&mut self.checker.rc, &[b"REPLICAOF", b"NO", b"ONE"]);
        let port = self.pair.replica().port.to_string();
        must(
            &mut self.checker.pc,
            &[b"REPLICAOF", b"127.0.0.1", port.as_bytes()],
        );
        self.roles_swapped();
        Ok(())
    }

    /// After a failover: the pair and the admin's connections follow the swapped roles, the
    /// new primary is configured and the clients told.
    fn roles_swapped(&mut self) {
        self.pair.p = 1 - self.pair.p;
        std::mem::swap(&mut self.checker.pc, &mut self.checker.rc);
        wait_link_up(self.pair.replica());
        wait_online(self.pair.primary());
        self.configure_primary();
        self.moved();
        self.t.failovers += 1;
    }

    /// FAILOVER with the clients running: the primary pauses writes, waits for the replica
    /// to catch up and hands it the role; commands in flight on the old primary get READONLY
    /// or UNBLOCKED (a parked LOCKGET). The clients follow the new primary.
    fn failover_in_flight(&mut self) -> Result<(), String> {
        wait_replica(&mut self.checker.pc, &mut self.checker.rc)?;
        must(&mut self.checker.pc, &[b"FAILOVER", b"TIMEOUT", b"20000"]);
        let (pc, rc) = (&mut self.checker.pc, &mut self.checker.rc);
        let mut roles = (String::new(), String::new(), String::new());
        let done = wait_until(Duration::from_secs(40), || {
            let old = info_section(pc, "replication");
            let new = info_section(rc, "replication");
            let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
            roles = (
                get(&new, "role"),
                get(&old, "role"),
                get(&old, "master_failover_state"),
            );
            roles.0 == "master" && roles.1 == "slave" && roles.2 == "no-failover"
        });
        if !done {
            return Err(format!(
                "FAILOVER: after 40 s the replica is {}, the primary {} ({})",
                roles.0, roles.1, roles.2
            ));
        }
        self.roles_swapped();
        Ok(())
    }

    /// A restart or a failover, with the clients paused or running; then the ledger verified
    /// (clients paused) and a checkpoint.
    fn event(&mut self, event: Event) -> Result<(), String> {
        let shared = self.shared.clone();
        let mut paused = Instant::now();
        match event.clients {
            Clients::Paused => {
                let _gate = shared.gate.write().unwrap_or_else(|e| e.into_inner());
                match event.kind {
                    EventKind::Restart => self.restart()?,
                    EventKind::Failover => self.failover()?,
                }
                self.checker.verify_ledger(&shared)?;
            }
            Clients::Running => {
                shared.event_in_flight.store(true, Ordering::SeqCst);
                let result = match event.kind {
                    EventKind::Restart => self.restart(),
                    EventKind::Failover => self.failover_in_flight(),
                };
                shared.event_in_flight.store(false, Ordering::SeqCst);
                result?;
                self.t.in_flight += 1;
                paused = Instant::now();
                let _gate = shared.gate.write().unwrap_or_else(|e| e.into_inner());
                self.checker.verify_ledger(&shared)?;
            }
        }
        self.t.paused_ms += paused.elapsed().as_millis();
        (self.t.new_primary_ms).push(self.started.elapsed().as_millis() as u64);
        self.checkpoint()
    }

    fn checkpoint(&mut self) -> Result<(), String> {
        let paused = Instant::now();
        let result = self.checker.checkpoint(&self.shared);
        self.t.paused_ms += paused.elapsed().as_millis();
        self.log.push(format!("checkpoint: {result:?}"));
        result?;
        self.t.checkpoints += 1;
        Ok(())
    }

    /// DEBUG RELOAD, BGREWRITEAOF, BGSAVE, CONFIG SET or a checkpoint, at random.
    fn random_step(&mut self) -> Result<(), String> {
        let rng = &mut self.rng;
        let (args, expect) = match rng.below(10) {
            0..=1 => (vec![a("DEBUG"), a("RELOAD")], Expect::Okay),
            2..=3 => (vec![a("BGREWRITEAOF")], Expect::Rewrite),
            4 => (vec![a("BGSAVE"), a("SCHEDULE")], Expect::Save),
            5..=6 => {
                let (name, value) = match rng.below(3) {
                    0 => ("cache.lease-ms", rng.range(50, 500).to_string()),
                    1 => ("cache.grace-ms", rng.range(0, 500).to_string()),
                    _ => ("cache.beta", rng.pick(&["0.5", "1", "4"]).to_string()),
                };
                (
                    vec![a("CONFIG"), a("SET"), a(name), a(&value)],
                    Expect::Okay,
                )
            }
            _ => return self.checkpoint(),
        };
        let v = call(&mut self.checker.pc, &args)?;
        self.log
            .push(format!("{} -> {}", show_args(&args), show(&v)));
        check(&v, &expect, &mut Outcome::default())?;
        match &args[0][..] {
            b"DEBUG" => {
                self.t.reloads += 1;
                self.checker.dropped += info_int(
                    &mut self.checker.pc,
                    "persistence",
                    "rdb_last_load_keys_expired",
                );
            }
            b"BGREWRITEAOF" => self.t.rewrites += 1,
            b"BGSAVE" => self.t.saves += 1,
            _ => self.t.configs += 1,
        }
        Ok(())
    }

    /// Runs an admin step; a panic in it (a `must` that failed, a harness wait that timed out)
    /// becomes its error, so that `fail` can still show the servers' logs.
    fn guarded(
        &mut self,
        step: impl FnOnce(&mut Admin) -> Result<(), String>,
    ) -> Result<(), String> {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        caught.unwrap_or_else(|panic| {
            let text = (panic.downcast_ref::<String>().cloned())
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("panicked: {}", text.unwrap_or_default()))
        })
    }

    /// Records the failure with the admin's last steps and the end of both servers' logs.
    fn fail(&self, e: String) {
        let tail = |s: &Server| {
            let log = s.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        self.shared.fail(format!(
            "admin: {e}\n  {}\n--- primary :{} (last lines)\n{}\n--- replica :{} (last lines)\n{}",
            self.log.join("\n  "),
            self.pair.primary().port,
            tail(self.pair.primary()),
            self.pair.replica().port,
            tail(self.pair.replica())
        ));
    }

    /// Until the run ends: the scheduled restarts and failovers when their time comes, and
    /// random admin steps between them, sampling the primary's RSS and counters each time.
    fn run(mut self, run_ms: u64) -> (AdminTally, Checker, Pair) {
        let mut events: VecDeque<(u64, Event)> = schedule(run_ms).into();
        while self.shared.running() {
            std::thread::sleep(Duration::from_millis(self.rng.range(150, 500) as u64));
            if !self.shared.running() {
                break;
            }
            let elapsed = self.started.elapsed().as_millis() as u64;
            let result = self.guarded(|me| {
                me.sample().and_then(|_| match events.front() {
                    Some(&(at, event)) if elapsed >= at => {
                        events.pop_front();
                        me.log.push(format!("{event:?} at {elapsed} ms"));
                        me.event(event)
                            .map_err(|e| format!("{event:?} at {elapsed} ms: {e}"))
                    }
                    _ => me.random_step(),
                })
            });
            if let Err(e) = result {
                self.fail(e);
                break;
            }
            if self.log.len() > 60 {
                self.log.drain(..20);
            }
        }
        // Events the run ended before (a slow restart pushes the next ones late) still run.
        while let Some((_, event)) = events.pop_front() {
            if !self.shared.failures.lock().unwrap().is_empty() {
                break;
            }
            if let Err(e) = self.guarded(|me| me.event(event)) {
                self.fail(format!("{event:?} after the run: {e}"));
            }
        }
        (self.t, self.checker, self.pair)
    }
}

struct RssReport {
    text: String,
    failure: Option<String>,
}

/// How long after a restart or a failover the new primary's RSS is left out of the check (a
/// fresh process, or a replica until now, warming up).
const REWARM_MS: u64 = 10_000;

/// RSS over the run: the warm-up level (the median of the samples taken between 10% and 20% of
/// the run), then the min, max and last of the samples after 20% (but those of the
/// `REWARM_MS` after each restart and failover); on runs of 2 minutes or more, every one of
/// those must be within 10% of the warm-up level. The text has the range of each tenth of the
/// run too (all samples).
fn rss_report(samples: &[(u64, u64)], new_primary_ms: &[u64], run_ms: u64) -> RssReport {
    let mut warm: Vec<u64> = (samples.iter())
        .filter(|(t, _)| (run_ms / 10..run_ms / 5).contains(t))
        .map(|(_, kb)| *kb)
        .collect();
    warm.sort();
    let rewarming = |t: u64| {
        new_primary_ms
            .iter()
            .any(|e| (*e..e + REWARM_MS).contains(&t))
    };
    let after: Vec<u64> = (samples.iter())
        .filter(|(t, _)| *t >= run_ms / 5 && !rewarming(*t))
        .map(|(_, kb)| *kb)
        .collect();
    let (Some(&level), Some(&last)) = (warm.get(warm.len() / 2), after.last()) else {
        return RssReport {
            text: format!("{} samples, too few to judge", samples.len()),
            failure: None,
        };
    };
    let (min, max) = (*after.iter().min().unwrap(), *after.iter().max().unwrap());
    let pct = |kb: u64| (kb as f64 / level as f64 - 1.0) * 100.0;
    let checked = run_ms >= 120_000;
    let tenths: Vec<String> = (0..10)
        .filter_map(|d| {
            let span = run_ms * d / 10..run_ms * (d + 1) / 10;
            let kbs = samples
                .iter()
                .filter(|(t, _)| span.contains(t))
                .map(|(_, kb)| *kb);
            let (lo, hi) = (kbs.clone().min()?, kbs.max()?);
            Some(format!("{}-{}", lo / 1024, hi / 1024))
        })
        .collect();
    let text = format!(
        "{} samples; warm-up {level} kB, then min {min} kB ({:+.1}%), max {max} kB ({:+.1}%), \
         last {last} kB ({:+.1}%){}; MB per tenth of the run [{}]",
        samples.len(),
        pct(min),
        pct(max),
        pct(last),
        if checked {
            ", bound ±10%"
        } else {
            " (not checked: run under 2 min)"
        },
        tenths.join(" ")
    );
    let out = pct(min) < -10.0 || pct(max) > 10.0;
    RssReport {
        failure: (checked && out).then(|| format!("RSS not within 10% of warm-up: {text}")),
        text,
    }
}

// ---------------------------------------------------------------------------------------------
// End checks
// ---------------------------------------------------------------------------------------------

/// Waits until every key left is long-lived (no expiry, or more than `SHORT_MS` to go), so that
/// nothing expires during the comparisons that follow. PTTL also removes expired keys.
fn drain_short_lived(c: &mut Connection) {
    let mut short = Vec::new();
    let drained = wait_until(Duration::from_millis(SHORT_MS as u64 + 5000), || {
        short.clear();
        for k in scan_all(c) {
            let ttl = int(&must(c, &[b"PTTL", &k]));
            if (0..SHORT_MS).contains(&ttl) {
                short.push((k, ttl));
            }
        }
        short.is_empty()
    });
    assert!(drained, "short-lived keys never went: {short:?}");
}

/// Compares the replica with the primary while nothing else writes.
struct Checker {
    pc: Connection,
    rc: Connection,
    keys: Vec<Vec<u8>>,
    /// Keys DEBUG RELOAD found already expired and dropped (`rdb_last_load_keys_expired`).
    dropped: i64,
    /// Of those, the ones deleted from the replica by `reconcile`.
    reconciled: i64,
    /// Write-behind events the consumer read from the queue: stream id -> (key, version).
    delivered: HashMap<Vec<u8>, (Vec<u8>, i64)>,
}

impl Checker {
    /// DEBUG RELOAD drops keys that have expired but were not yet removed, without telling
    /// replicas (a property of redis-server's RDB loading, not of the module): the replica
    /// keeps them, logically expired, and they count in its DEBUG DIGEST. Deletes those through
    /// the primary (a write to the key and a DEL, replicated). Only keys the replica itself
    /// considers expired are touched, and no more than DEBUG RELOAD reported dropping.
    fn reconcile(&mut self) -> Result<(), String> {
        // EXISTS also removes an expired key from the primary, and from the replica once it
        // has processed the DEL that follows.
        let on_primary: Vec<bool> = (self.keys.iter())
            .map(|k| int(&must(&mut self.pc, &[b"EXISTS", k])) == 1)
            .collect();
        wait_replica(&mut self.pc, &mut self.rc)?;
        let (pc, rc) = (&mut self.pc, &mut self.rc);
        for (k, on_primary) in self.keys.iter().zip(on_primary) {
            let on_replica = error_of(&call(rc, &[a("DEBUG"), a("OBJECT"), k.clone()])?).is_none();
            if on_primary || !on_replica {
                continue;
            }
            let ttl = int(&must(rc, &[b"PTTL", k]));
            if ttl != -2 {
                return Err(format!(
                    "{} is on the replica (PTTL {ttl}), not on the primary",
                    show_bytes(k)
                ));
            }
            must(pc, &[b"MULTI"]);
            must(pc, &[b"SET", k, b"reconcile"]);
            must(pc, &[b"DEL", k]);
            must(pc, &[b"EXEC"]);
            self.reconciled += 1;
        }
        if self.reconciled > self.dropped {
            return Err(format!(
                "{} keys were missing on the primary and expired on the replica, but DEBUG \
                 RELOAD dropped only {}",
                self.reconciled, self.dropped
            ));
        }
        Ok(())
    }

    /// No caller parked; the replica's digest equal to the primary's; `cache_entries` equal
    /// to the number of cache-ent keys, on both. Returns (digest, entries, keys).
    fn compare(&mut self) -> Result<(String, i64, usize), String> {
        wait_zero(
            &mut self.pc,
            "cache_lockget_parked",
            2,
            "with no client waiting",
        )?;
        // The module removes invalidated entries itself, from a timer, a slice at a time: a
        // removal between counting the keys and reading INFO would look like a miscount, one
        // between reading the two digests like a difference. Nothing is invalidated while the
        // clients are paused; the removal must finish.
        wait_zero(
            &mut self.pc,
            "cache_tag_pending_removal",
            10,
            "with nothing invalidated",
        )?;
        wait_replica(&mut self.pc, &mut self.rc)?;
        self.reconcile()?;
        wait_replica(&mut self.pc, &mut self.rc)?;
        let (pd, rd) = (digest(&mut self.pc), digest(&mut self.rc));
        if pd != rd {
            return Err(format!(
                "DEBUG DIGEST primary {pd} replica {rd}:\n{}",
                key_report(&mut self.pc, &mut self.rc, &self.keys)
            ));
        }
        // SCAN and TYPE remove expired keys from the primary: count, then compare again.
        let (entries, count) = entries_and_count(&mut self.pc);
        if entries != count {
            return Err(format!(
                "primary: cache_entries {entries}, keys of type cache-ent {count}"
            ));
        }
        // The replica holds the same keys (digests equal, and the DELs of what SCAN removed
        // have reached it); it counts the same entries. (Its own SCAN would hide keys whose
        // time has passed since: only the primary expires keys.)
        wait_replica(&mut self.pc, &mut self.rc)?;
        let r_entries = info_int(&mut self.rc, "cache", "cache_entries");
        if r_entries != entries {
            return Err(format!(
                "replica: cache_entries {r_entries}, primary {entries}"
            ));
        }
        let (pd, rd) = (digest(&mut self.pc), digest(&mut self.rc));
        if pd != rd {
            return Err(format!(
                "after SCAN: DEBUG DIGEST primary {pd} replica {rd}:\n{}",
                key_report(&mut self.pc, &mut self.rc, &self.keys)
            ));
        }
        let keys = scan_all(&mut self.pc).len();
        Ok((pd, entries, keys))
    }

    /// `compare` with the clients paused and the primary's active expiry off (so that nothing
    /// changes between reading one server and the other), after the consumer drained the
    /// write-behind queue; then the ledger verified.
    fn checkpoint(&mut self, shared: &Shared) -> Result<(String, i64, usize), String> {
        let _gate = shared.gate.write().unwrap_or_else(|e| e.into_inner());
        must(&mut self.pc, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"0"]);
        let result = self.consume().and_then(|_| self.compare());
        must(&mut self.pc, &[b"DEBUG", b"SET-ACTIVE-EXPIRE", b"1"]);
        let result = result?;
        self.verify_ledger(shared)?;
        Ok(result)
    }

    /// A write-behind worker's loop, once: reads every new event of the queue with the
    /// module's consumer group, acknowledges and deletes them (so the queue stays short), and
    /// remembers what each carried. `cache_wb_queue_length` must then be the queue's length.
    fn consume(&mut self) -> Result<(), String> {
        let pc = &mut self.pc;
        if int(&must(pc, &[b"EXISTS", WB_QUEUE])) == 1 {
            for (id, key, version) in drain_queue(pc, WB_QUEUE)? {
                self.delivered.insert(id, (key, version));
            }
        }
        let len = int(&must(pc, &[b"XLEN", WB_QUEUE]));
        let shown = info_int(pc, "cache", "cache_wb_queue_length");
        if shown != len {
            return Err(format!("cache_wb_queue_length {shown}, XLEN {len}"));
        }
        Ok(())
    }

    /// Every confirmed ledger value reads back on the primary and the replica; every confirmed
    /// event was delivered to the consumer with its key and version.
    fn verify_ledger(&mut self, shared: &Shared) -> Result<(), String> {
        wait_replica(&mut self.pc, &mut self.rc)?;
        let mut ledger = shared.ledger.lock().unwrap();
        let mut verified = 0;
        for (key, value) in &ledger.values {
            let Some(value) = value else { continue };
            for (name, c) in [("primary", &mut self.pc), ("replica", &mut self.rc)] {
                let got = must(c, &[b"CACHE.GET", key]);
                if got != Value::BulkString(value.clone()) {
                    return Err(format!(
                        "ledger: {name} has {} = {}, acknowledged (WAIT 1) {}",
                        show_bytes(key),
                        show(&got),
                        show_bytes(value)
                    ));
                }
            }
            verified += 1;
        }
        ledger.values_verified += verified;
        self.consume()?;
        for (id, key, version) in std::mem::take(&mut ledger.events) {
            match self.delivered.get(&id) {
                Some((k, v)) if *k == key && *v == version => ledger.events_verified += 1,
                other => {
                    return Err(format!(
                        "ledger: event {} ({} version {version}) acknowledged (WAIT 1), the \
                         consumer read {other:?}",
                        show_bytes(&id),
                        show_bytes(&key)
                    ))
                }
            }
        }
        Ok(())
    }
}

const WB_QUEUE: &[u8] = b"cache:wb";
const WB_GROUP: &[u8] = b"cache-wb";

/// A write-behind event: (stream id, key, version).
type QueuedEvent = (Vec<u8>, Vec<u8>, i64);

/// Reads every new event of `queue` with the module's consumer group, acknowledges and deletes
/// them, as a write-behind worker does: their (id, key, version).
fn drain_queue(c: &mut Connection, queue: &[u8]) -> Result<Vec<QueuedEvent>, String> {
    let mut out = Vec::new();
    loop {
        let read: &[&[u8]] = &[
            b"XREADGROUP",
            b"GROUP",
            WB_GROUP,
            b"soak",
            b"COUNT",
            b"500",
            b"STREAMS",
            queue,
            b">",
        ];
        let entries = stream_entries(&must(c, read))?;
        if entries.is_empty() {
            return Ok(out);
        }
        let ids: Vec<&[u8]> = entries.iter().map(|(id, _)| &id[..]).collect();
        must(c, &[&[b"XACK", queue, WB_GROUP][..], &ids].concat());
        must(c, &[&[b"XDEL", queue][..], &ids].concat());
        for (id, fields) in entries {
            let field = |name: &[u8]| {
                let found = fields.iter().find(|(f, _)| f == name);
                found
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("event {} without {name:?}", show_bytes(&id)))
            };
            let key = field(b"key")?;
            let version = String::from_utf8_lossy(&field(b"version")?).parse::<i64>();
            let version = version.map_err(|e| format!("event version: {e}"))?;
            out.push((id, key, version));
        }
    }
}

/// The entries of an XREADGROUP reply on one stream: (id, [(field, value)]).
type StreamEntry = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

fn stream_entries(v: &Value) -> Result<Vec<StreamEntry>, String> {
    let bad = || format!("XREADGROUP reply {}", show(v));
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(parts) = stream else {
            return Err(bad());
        };
        let [_, Value::Array(entries)] = &parts[..] else {
            return Err(bad());
        };
        for e in entries {
            let Value::Array(e) = e else {
                return Err(bad());
            };
            let [Value::BulkString(id), Value::Array(fields)] = &e[..] else {
                return Err(bad());
            };
            let mut pairs = Vec::new();
            for kv in fields.chunks(2) {
                if let [Value::BulkString(k), Value::BulkString(v)] = kv {
                    pairs.push((k.clone(), v.clone()));
                }
            }
            out.push((id.clone(), pairs));
        }
    }
    Ok(out)
}

/// Waits (at most `secs`) until the INFO cache field is 0; `why` says why it should be.
fn wait_zero(c: &mut Connection, field: &str, secs: u64, why: &str) -> Result<(), String> {
    let mut n = -1;
    if wait_until(Duration::from_secs(secs), || {
        n = info_int(c, "cache", field);
        n == 0
    }) {
        return Ok(());
    }
    Err(format!("{field} still {n} after {secs} s {why}"))
}

fn wait_replica(pc: &mut Connection, rc: &mut Connection) -> Result<(), String> {
    match int(&must(pc, &[b"WAIT", b"1", b"20000"])) {
        1 => Ok(()),
        // What each side knows of the link (the primary: its replica's state, acknowledged
        // offset and lag; the replica: its link, offset and whether it answers at all) tells
        // a replica that stalled from an acknowledgement that went missing.
        n => {
            let show = |c: &mut Connection, keys: &[&str]| match try_info_section(c, "replication")
            {
                Ok(info) => (keys.iter())
                    .map(|k| format!("{k}={}", info.get(*k).map_or("-", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("no answer: {e}"),
            };
            Err(format!(
                "WAIT 1 20000: {n} replicas acknowledged; the primary's INFO replication: {}; \
                 the replica's: {}",
                show(
                    pc,
                    &["role", "connected_slaves", "slave0", "master_repl_offset"]
                ),
                show(
                    rc,
                    &[
                        "role",
                        "master_link_status",
                        "master_last_io_seconds_ago",
                        "slave_repl_offset"
                    ]
                )
            ))
        }
    }
}

/// Per-key differences between two servers, for a failure message.
fn key_report(pc: &mut Connection, rc: &mut Connection, keys: &[Vec<u8>]) -> String {
    let mut out = String::new();
    let state = |c: &mut Connection, k: &[u8]| {
        let dv = call(c, &[a("DEBUG"), a("DIGEST-VALUE"), k.to_vec()]).unwrap();
        let ttl = call(c, &[a("PTTL"), k.to_vec()]).unwrap();
        let obj = call(c, &[a("DEBUG"), a("OBJECT"), k.to_vec()]).unwrap();
        let ins = call(c, &[a("CACHE.INSPECT"), k.to_vec()]).unwrap();
        format!(
            "digest {} pttl {} present {} inspect {}",
            show(&dv),
            show(&ttl),
            error_of(&obj).is_none(),
            show(&ins)
        )
    };
    for k in keys {
        let p = state(pc, k);
        let r = state(rc, k);
        if p != r {
            out.push_str(&format!(
                "  {}:\n    primary {p}\n    replica {r}\n",
                show_bytes(k)
            ));
        }
    }
    out
}

/// `cache_entries` and the number of keys of type cache-ent (SCAN + TYPE).
fn entries_and_count(c: &mut Connection) -> (i64, i64) {
    let count = scan_all(c)
        .iter()
        .filter(|k| text(&must(c, &[b"TYPE", k])) == "cache-ent")
        .count() as i64;
    (info_int(c, "cache", "cache_entries"), count)
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn soak_primary_and_replica_under_random_load() {
    let started = Instant::now();
    let seed = seed();
    let run_ms = run_ms();
    let mut rng = Rng::new(seed);
    let preamble = if rng.chance(50) { "yes" } else { "no" };
    println!(
        "soak: seed {seed} (replay: SOAK_SEED={seed}), {CLIENTS} clients for {run_ms} ms, \
         aof-use-rdb-preamble {preamble}"
    );

    // Both with the same settings (AOF on), the replica made one with REPLICAOF: a failover
    // swaps their roles, and either restarts as a primary from its AOF.
    let args = [
        "--appendonly",
        "yes",
        "--aof-use-rdb-preamble",
        preamble,
        "--appendfsync",
        "everysec",
        "--repl-diskless-sync-delay",
        "0",
    ];
    let primary = Server::start_with(&args);
    let replica = Server::start_with(&args);
    let primary_port = primary.port.to_string();
    must(
        &mut conn(&replica),
        &[b"REPLICAOF", b"127.0.0.1", primary_port.as_bytes()],
    );
    wait_link_up(&replica);
    wait_online(&primary);
    let mut checker = Checker {
        pc: conn(&primary),
        rc: conn(&replica),
        keys: key_set(),
        dropped: 0,
        reconciled: 0,
        delivered: HashMap::new(),
    };
    // Short default leases, so that leases taken without LEASE/PX lapse during the run too.
    must(
        &mut checker.pc,
        &[b"CONFIG", b"SET", b"cache.lease-ms", b"300"],
    );
    let topology = Topology {
        primary: primary.port,
        replica: replica.port,
        generation: 0,
    };

    let shared = Arc::new(Shared {
        max_id: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        deadline: Instant::now() + Duration::from_millis(run_ms),
        gate: RwLock::new(()),
        topology: Mutex::new(topology),
        ledger: Mutex::new(Ledger::default()),
        event_in_flight: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = Client {
                id: i,
                rng: Rng::new(seed ^ (0x1000 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                keys: checker.keys.clone(),
                primary: conn(&primary),
                primary_port: primary.port,
                replica: conn(&replica),
                generation: 0,
                ledger_seq: 0,
                shared: shared.clone(),
                last_id: 0,
                tokens: VecDeque::new(),
                follow_up: VecDeque::new(),
                log: VecDeque::new(),
                tally: Tally::default(),
                trouble_since: None,
            };
            std::thread::spawn(move || client.run())
        })
        .collect();
    let admin_thread = {
        let admin = Admin {
            shared: shared.clone(),
            checker,
            pair: Pair {
                servers: vec![primary, replica],
                p: 0,
            },
            rng: Rng::new(seed ^ 0xad31),
            t: AdminTally::default(),
            log: Vec::new(),
            started: Instant::now(),
            counters: HashMap::new(),
        };
        std::thread::spawn(move || admin.run(run_ms))
    };
    let mut tally = Tally::default();
    for h in clients {
        tally.add(&h.join().expect("client thread panicked"));
    }
    let (admin_tally, mut checker, mut pair) = admin_thread.join().expect("admin thread panicked");
    let run_time = started.elapsed();
    let mut replica = pair.servers.remove(1 - pair.p);
    let mut primary = pair.servers.remove(0);

    // The invariants checked on every reply and at the checkpoints.
    let failures = shared.failures.lock().unwrap().clone();
    if !failures.is_empty() {
        let alive = (primary.is_alive(), replica.is_alive());
        panic!(
            "soak seed {seed}: {} failure(s):\n{}\nprimary alive {}, replica alive {}\n{}\n{}",
            failures.len(),
            failures.join("\n"),
            alive.0,
            alive.1,
            primary.log(),
            replica.log()
        );
    }
    assert_alive("primary", &mut primary);
    assert_alive("replica", &mut replica);
    println!(
        "soak: {} ops in {:.1} s ({} WRONGTYPE), fills with a known token stored {} refused {}",
        tally.ops,
        run_time.as_secs_f64(),
        tally.wrongtype,
        tally.fills_stored,
        tally.fills_refused
    );
    println!("soak: statuses {:?}", tally.statuses);
    println!("soak: commands {:?}", tally.by_cmd);
    let t = &admin_tally;
    println!(
        "soak: admin: {} checkpoints, {} DEBUG RELOAD, {} BGREWRITEAOF, {} BGSAVE, {} CONFIG \
         SET, {} restarts from the AOF, {} failovers ({} of those with the clients running: \
         errors ridden out {:?}), clients paused {} ms; {} counter samples monotonic; DEBUG \
         RELOAD dropped {} expired key(s)",
        t.checkpoints,
        t.reloads,
        t.rewrites,
        t.saves,
        t.configs,
        t.restarts,
        t.failovers,
        t.in_flight,
        tally.transient,
        t.paused_ms,
        t.counter_samples,
        checker.dropped
    );
    let rss = rss_report(&t.rss, &t.new_primary_ms, run_ms);
    println!("soak: RSS of the primary: {}", rss.text);
    let stats: Vec<String> = info_section(&mut checker.pc, "cache")
        .into_iter()
        .filter(|(_, v)| v != "0")
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("cache_")))
        .collect();
    println!("soak: INFO cache {}", stats.join(" "));
    assert!(tally.ops > 1000, "only {} operations ran", tally.ops);
    if let Some(e) = rss.failure {
        panic!("soak seed {seed}: {e}");
    }

    // Only long-lived keys left (nothing expires from here on); the replica equal to the
    // primary.
    drain_short_lived(&mut checker.pc);
    // Entries in every state an entry can be in (leases active, lapsed, pending, tags, ids
    // from a clock ahead...), long-lived, for the comparisons and restarts below.
    support::fixtures::fill_fixture(&mut checker.pc, "fixture:");
    let (end_digest, entries, nkeys) = checker
        .compare()
        .unwrap_or_else(|e| panic!("soak seed {seed}, at the end: {e}"));
    println!(
        "soak: end state: {nkeys} keys, {entries} entries, digest {end_digest}, {} key(s) \
         dropped by DEBUG RELOAD removed from the replica",
        checker.reconciled
    );
    for (name, p) in [("primary", &primary), ("replica", &replica)] {
        if let Err(e) = logs_clean(name, p) {
            panic!("soak seed {seed}: {e}");
        }
    }

    // The primary restarted from its AOF holds the same data: first from the AOF as the run
    // left it (its last rewrite and the commands since), then from a fresh rewrite.
    must(
        &mut checker.pc,
        &[b"CONFIG", b"SET", b"appendfsync", b"always"],
    );
    for round in ["as left by the run", "just rewritten"] {
        let pc = &mut checker.pc;
        wait_rewrite_idle(pc, Duration::from_secs(15));
        if round == "just rewritten" {
            must(pc, &[b"BGREWRITEAOF"]);
            wait_rewrite_idle(pc, Duration::from_secs(15));
        }
        let before = digest(pc);
        // SHUTDOWN NOSAVE: the AOF is flushed and fsynced all the same.
        assert!(
            primary.shutdown(false),
            "primary did not shut down:\n{}",
            primary.log()
        );
        primary.spawn();
        checker.pc = conn(&primary);
        let pc = &mut checker.pc;
        // Keys DEBUG RELOAD dropped silently are still in the AOF, expired: let them go.
        for k in scan_all(pc) {
            must(pc, &[b"PTTL", &k]);
        }
        let after = digest(pc);
        assert!(
            before == after,
            "soak seed {seed}: DEBUG DIGEST before the restart {before}, after loading the AOF \
             ({round}) {after}\n{}",
            primary.log()
        );
        let (entries_after, count_after) = entries_and_count(pc);
        assert_eq!(
            (entries_after, count_after),
            (entries, entries),
            "after the restart from the AOF {round}: cache_entries and cache-ent keys"
        );
    }
    let pc = &mut checker.pc;
    let max_before = shared.max_id.load(Ordering::SeqCst);
    // Ids keep growing across the restart.
    let v = must(
        pc,
        &[b"CACHE.SET", b"soak:after-restart", b"v", b"EX", b"3600"],
    );
    assert!(
        int(&v) as u64 > max_before,
        "version {} after the restart, ids up to {max_before} issued before",
        int(&v)
    );
    // The replica syncs with the restarted primary and holds the same again.
    wait_link_up(&replica);
    wait_online(&primary);
    checker
        .compare()
        .unwrap_or_else(|e| panic!("soak seed {seed}, after the restart: {e}"));
    checker
        .verify_ledger(&shared)
        .unwrap_or_else(|e| panic!("soak seed {seed}, after the restart: {e}"));
    let ledger = shared.ledger.lock().unwrap();
    println!(
        "soak: ledger: {} writes confirmed by WAIT 1 ({} not), {} keys, {} value checks and {} \
         write-behind events verified, {} events consumed",
        ledger.confirmed,
        ledger.unconfirmed,
        ledger.values.len(),
        ledger.values_verified,
        ledger.events_verified,
        checker.delivered.len()
    );
    assert!(
        ledger.values_verified > 0 && ledger.events_verified > 0,
        "the ledger was never verified"
    );
    drop(ledger);
    assert_alive("primary", &mut primary);
    assert_alive("replica", &mut replica);
    for (name, p) in [("primary", &primary), ("replica", &replica)] {
        if let Err(e) = logs_clean(name, p) {
            panic!("soak seed {seed}: {e}");
        }
    }
    println!(
        "soak: seed {seed} passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// The cluster part
// ---------------------------------------------------------------------------------------------

/// Keys of its own each cluster load thread writes (and so knows).
const CLUSTER_KEYS: usize = 150;
const CLUSTER_THREADS: usize = 3;

/// What a cluster load thread knows of one of its keys.
#[derive(Clone, Debug)]
struct Known {
    /// The value the last write left (None: deleted, or never written), when that write was
    /// acknowledged; after a failed write, unknown until the next acknowledged one.
    value: Option<Option<Vec<u8>>>,
    /// Whether the entry carries the thread's tag; None when a failed write left it unsure.
    tagged: Option<bool>,
}

#[derive(Default)]
struct ClusterLoad {
    keys: Vec<(Vec<u8>, Known)>,
    /// Acknowledged write-behind events: (key, stream id, version).
    events: Vec<(Vec<u8>, Vec<u8>, i64)>,
    by_cmd: BTreeMap<String, u64>,
    ops: u64,
    /// Errors a reshard may cause (redirections, TRYAGAIN retried out, a moving slot).
    transient: Vec<String>,
    /// Keys read back while the load ran, after each reshard.
    verified: u64,
}

/// A third of a thread's keys in a few crowded slots (hash tags of `groups`, in the slots the
/// reshards move), so that every reshard moves slots with many keys and their queue; the
/// others anywhere.
fn cluster_key(thread: usize, j: usize, groups: &[String]) -> Vec<u8> {
    match j % 3 {
        0 => format!("{{{}}}:c{thread}:{j}", groups[j / 3 % groups.len()]),
        _ => format!("c{thread}:{j}"),
    }
    .into_bytes()
}

/// Slots each reshard moves.
const RESHARD_SLOTS: usize = 300;

/// Errors a client of a cluster that moves slots may see, and retry later.
fn transient(e: &str) -> bool {
    [
        "TRYAGAIN",
        "MOVED",
        "ASK",
        "CLUSTERDOWN",
        "connection",
        "Connection",
        "timed out",
        "IO",
    ]
    .iter()
    .any(|m| e.contains(m))
}

/// One cluster load thread: its own keys (SET / TAGSET / WBQUEUE / WBDEL / DEL / GET / GETX /
/// INSPECT / TAGS on them, reads checked against the last acknowledged write), LOCKGET, fills
/// and releases on scratch keys, TAGSET + TAGINVALIDATE (cluster-wide) of scratch tags,
/// TAGCOUNT, TAGSCAN, WBQUEUES; after each reshard (`epoch` moves) it reads all its keys back.
fn cluster_load(
    mut cc: redis::cluster::ClusterConnection,
    thread: usize,
    groups: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
) -> Result<ClusterLoad, String> {
    let mut rng = Rng::new(seed);
    let tag = format!("ctag:{thread}").into_bytes();
    let mut out = ClusterLoad {
        keys: (0..CLUSTER_KEYS)
            .map(|j| {
                let known = Known {
                    value: Some(None),
                    tagged: Some(false),
                };
                (cluster_key(thread, j, &groups), known)
            })
            .collect(),
        ..ClusterLoad::default()
    };
    let mut seen_epoch = 0;
    let mut seq = 0u64;
    let hour = a("3600000");
    while !stop.load(Ordering::SeqCst) {
        // Paced (not a wait for anything): unpaced, the load starves the CLI on 2 cores.
        std::thread::sleep(Duration::from_micros(700));
        let e = epoch.load(Ordering::SeqCst);
        if e != seen_epoch {
            seen_epoch = e;
            for j in 0..CLUSTER_KEYS {
                check_known(&mut cc, &out.keys[j], "after a reshard", &mut out.transient)?;
                out.verified += 1;
            }
        }
        seq += 1;
        out.ops += 1;
        let j = rng.below(CLUSTER_KEYS as u64) as usize;
        let key = out.keys[j].0.clone();
        let value = format!("c{thread}#{seq}").into_bytes();
        let scratch = format!("cscratch:{thread}:{}", rng.below(20)).into_bytes();
        let junk = format!("cjunk:{}", rng.below(4)).into_bytes();
        // (request, what an acknowledged reply does to the key's state).
        enum Effect {
            Write { tags: Option<bool> },
            Delete,
            Event,
            DeleteEvent,
            Read,
            Lease,
            None,
        }
        let (args, effect) = match rng.below(17) {
            0..=2 => (
                vec![a("CACHE.SET"), key, value, a("PX"), hour.clone()],
                Effect::Write { tags: None },
            ),
            3 => (
                vec![
                    a("CACHE.TAGSET"),
                    key,
                    value,
                    a("PX"),
                    hour.clone(),
                    a("TAGS"),
                    tag.clone(),
                ],
                Effect::Write { tags: Some(true) },
            ),
            4..=5 => (
                vec![a("CACHE.WBQUEUE"), key, value, a("PX"), hour.clone()],
                Effect::Event,
            ),
            6 => (vec![a("CACHE.WBDEL"), key], Effect::DeleteEvent),
            7 => (vec![a("CACHE.DEL"), key], Effect::Delete),
            8..=9 => (vec![a("CACHE.GET"), key], Effect::Read),
            10 => (vec![a("CACHE.GETX"), key], Effect::Read),
            11 => (
                vec![a("CACHE.LOCKGET"), scratch, a("PX"), a("200")],
                Effect::Lease,
            ),
            12 => (
                vec![
                    a("CACHE.TAGSET"),
                    scratch,
                    value,
                    a("PX"),
                    a("60000"),
                    a("TAGS"),
                    junk,
                ],
                Effect::None,
            ),
            13 => (vec![a("CACHE.TAGINVALIDATE"), junk], Effect::None),
            14 => (
                {
                    let cmd = if rng.chance(50) {
                        "CACHE.INSPECT"
                    } else {
                        "CACHE.TAGS"
                    };
                    vec![a(cmd), key]
                },
                Effect::None,
            ),
            15 => (vec![a("CACHE.TAGCOUNT"), tag.clone()], Effect::None),
            _ => match rng.below(2) {
                0 => (vec![a("CACHE.WBQUEUES")], Effect::None),
                _ => (
                    vec![a("CACHE.TAGSCAN"), tag.clone(), a("0"), a("COUNT"), a("20")],
                    Effect::None,
                ),
            },
        };
        let cmd = String::from_utf8_lossy(&args[0]).to_uppercase();
        *out.by_cmd.entry(cmd).or_default() += 1;
        let v = call(&mut cc, &args);
        let err = match &v {
            Err(e) => Some(e.clone()),
            Ok(v) => error_of(v),
        };
        let known = &mut out.keys[j].1;
        if let Some(e) = err {
            if e.contains("internal error") || !transient(&e) {
                return Err(format!("{}: {e}", show_args(&args)));
            }
            out.transient.push(format!("{}: {e}", show_args(&args)));
            // The write may or may not have happened.
            if !matches!(effect, Effect::Read | Effect::Lease | Effect::None) {
                known.value = None;
                known.tagged = None;
            }
            continue;
        }
        let v = v.unwrap();
        let event = |v: &Value| match v {
            Value::Array(p) => match &p[..] {
                [Value::Int(version), Value::BulkString(id)] => Ok((id.clone(), *version)),
                _ => Err(format!("{} -> {}", show_args(&args), show(v))),
            },
            _ => Err(format!("{} -> {}", show_args(&args), show(v))),
        };
        match effect {
            Effect::Write { tags } => {
                known.value = Some(Some(args[2].clone()));
                if let Some(t) = tags {
                    known.tagged = Some(t);
                }
            }
            Effect::Delete => {
                known.value = Some(None);
                known.tagged = Some(false);
            }
            Effect::Event => {
                known.value = Some(Some(args[2].clone()));
                let (id, version) = event(&v)?;
                out.events.push((args[1].clone(), id, version));
            }
            Effect::DeleteEvent => {
                known.value = Some(None);
                known.tagged = Some(false);
                let (id, version) = event(&v)?;
                out.events.push((args[1].clone(), id, version));
            }
            Effect::Read => {
                let got = match &args[0][..] {
                    b"CACHE.GETX" => match &v {
                        Value::Array(t) if t.len() == 3 => t[0].clone(),
                        _ => return Err(format!("{} -> {}", show_args(&args), show(&v))),
                    },
                    _ => v.clone(),
                };
                if let Some(want) = &known.value {
                    let want = want.clone().map_or(Value::Nil, Value::BulkString);
                    if got != want {
                        return Err(format!(
                            "{} -> {}, the last acknowledged write left {}",
                            show_args(&args),
                            show(&got),
                            show(&want)
                        ));
                    }
                }
            }
            Effect::Lease => {
                // A granted lease on a scratch key: filled or released at once.
                if let Value::Array(t) = &v {
                    if let Some(Value::Int(token)) = t.get(2) {
                        let follow = if rng.chance(70) {
                            vec![
                                a("CACHE.SET"),
                                args[1].clone(),
                                a("filled"),
                                a("PX"),
                                a("5000"),
                                a("TOKEN"),
                                n(*token),
                            ]
                        } else {
                            vec![a("CACHE.RELEASE"), args[1].clone(), n(*token)]
                        };
                        let cmd = String::from_utf8_lossy(&follow[0]).to_uppercase();
                        *out.by_cmd.entry(cmd).or_default() += 1;
                        match call(&mut cc, &follow) {
                            Ok(r) if error_of(&r).is_none() => {}
                            Ok(r) => {
                                out.transient
                                    .push(format!("{}: {}", show_args(&follow), show(&r)))
                            }
                            Err(e) => out.transient.push(e),
                        }
                    }
                }
            }
            Effect::None => {}
        }
    }
    Ok(out)
}

/// Reads a key back through the cluster client: its value must be the last acknowledged one.
fn check_known(
    cc: &mut redis::cluster::ClusterConnection,
    (key, known): &(Vec<u8>, Known),
    when: &str,
    transient_errors: &mut Vec<String>,
) -> Result<(), String> {
    let Some(want) = &known.value else {
        return Ok(());
    };
    let got = match call(cc, &[a("CACHE.GET"), key.clone()]) {
        Ok(v) => v,
        Err(e) if transient(&e) => {
            transient_errors.push(e);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let want = want.clone().map_or(Value::Nil, Value::BulkString);
    if got != want {
        return Err(format!(
            "{when}: CACHE.GET {} -> {}, acknowledged {}",
            show_bytes(key),
            show(&got),
            show(&want)
        ));
    }
    Ok(())
}

/// A write-behind worker's pass over every queue of every primary (not during a reshard): new
/// events read with the module's group, acknowledged, deleted; each (key, id) must come once.
fn drain_cluster_queues(
    cluster: &support::cluster::Cluster,
    delivered: &mut HashMap<(Vec<u8>, Vec<u8>), i64>,
) -> Result<(), String> {
    for p in cluster.primaries() {
        let mut c = conn(p);
        let Value::Array(queues) = must(&mut c, &[b"CACHE.WBQUEUES"]) else {
            return Err("CACHE.WBQUEUES: not an array".into());
        };
        for q in queues {
            let Value::BulkString(q) = q else { continue };
            for (id, key, version) in drain_queue(&mut c, &q)? {
                if delivered
                    .insert((key.clone(), id.clone()), version)
                    .is_some()
                {
                    return Err(format!(
                        "event {} of {} delivered twice",
                        show_bytes(&id),
                        show_bytes(&key)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A real cluster (three primaries, a replica each) under the cluster load for `SOAK_MS`, with
/// reshards of 300 slots (one per 4 minutes of run, at least one; from the primary that holds
/// them to the next one in turn) and manual failovers of the primary that holds them (one per
/// 5 minutes, at least one: `CLUSTER FAILOVER` on its replica) while it runs, and the queues
/// drained by a worker's pass every few seconds between them. Checks: every read of a thread's key gives its last acknowledged write, also all of
/// them after each reshard and at the end; each acknowledged write-behind event delivered
/// exactly once with its version; per tag, TAGCOUNT summed over the primaries equals the keys
/// CACHE.TAGS shows with it, and the model's count; per primary, cache_entries equals its
/// cache-ent keys, and its replica's DEBUG DIGEST equals its own; no node mentions a panic.
#[test]
fn soak_cluster_reshard_under_load() {
    let started = Instant::now();
    let seed = seed();
    let run_ms = run_ms();
    let cluster = support::cluster::Cluster::start();
    let reshards = (run_ms / 240_000).max(1);
    let failovers = (run_ms / 300_000).max(1);
    // Reshard k at (k + 1) / (reshards + 1) of the run, failover j at (j + 1/2) / (failovers + 1).
    let mut events: Vec<(u64, ClusterEvent)> = (0..reshards)
        .map(|k| (run_ms * (k + 1) / (reshards + 1), ClusterEvent::Reshard))
        .chain((0..failovers).map(|j| {
            let at = run_ms * (2 * j + 1) / (2 * (failovers + 1));
            (at, ClusterEvent::Failover)
        }))
        .collect();
    events.sort_by_key(|(at, _)| *at);
    let mut events: VecDeque<(u64, ClusterEvent)> = events.into();
    // `--cluster reshard` moves the source's lowest slots: the first reshard moves the first
    // primary's lowest 300 slots to the second, the next one the same slots (now the second's
    // lowest) to the third, and so on around. The crowded slots are among them.
    let map = cluster.slot_map();
    let first = cluster.primaries()[0].port as i64;
    let moving: std::collections::HashSet<i64> = (0..16384)
        .filter(|&s| map[s as usize] == first)
        .take(RESHARD_SLOTS)
        .collect();
    let mut any = conn(cluster.primaries()[0]);
    let groups: Vec<String> = (0..)
        .map(|g| format!("cg{g}"))
        .filter(|g| moving.contains(&support::cluster::key_slot(&mut any, g)))
        .take(5)
        .collect();
    let key_slots: Vec<i64> = (0..CLUSTER_THREADS)
        .flat_map(|t| (0..CLUSTER_KEYS).map(move |j| (t, j)))
        .map(|(t, j)| {
            let key = String::from_utf8(cluster_key(t, j, &groups)).unwrap();
            support::cluster::key_slot(&mut any, &key)
        })
        .collect();
    let first_moving = *moving.iter().min().unwrap();
    println!(
        "soak cluster: seed {seed}, {CLUSTER_THREADS} clients for {run_ms} ms, {reshards} \
         reshard(s), {failovers} failover(s)"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..CLUSTER_THREADS)
        .map(|t| {
            let (cc, stop, epoch) = (cluster.patient_client(), stop.clone(), epoch.clone());
            let seed = seed ^ (0x7000 + t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let groups = groups.clone();
            std::thread::spawn(move || {
                let result = cluster_load(cc, t, groups, seed, stop.clone(), epoch);
                // One thread failing stops the run.
                stop.store(true, Ordering::SeqCst);
                result
            })
        })
        .collect();
    let load_started = Instant::now();
    let mut delivered = HashMap::new();
    let mut ev = ClusterEvents::default();
    let mut last_drain = Instant::now();
    let mut failure = None;
    while !stop.load(Ordering::SeqCst) && load_started.elapsed() < Duration::from_millis(run_ms) {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = load_started.elapsed().as_millis() as u64;
        if let Some(&(at, event)) = events.front().filter(|(at, _)| elapsed >= *at) {
            events.pop_front();
            println!("soak cluster: {event:?} at {at} ms");
            ev.run(&cluster, event, first_moving, &key_slots);
            epoch.fetch_add(1, Ordering::SeqCst);
        } else if last_drain.elapsed() > Duration::from_secs(3) {
            if let Err(e) = drain_cluster_queues(&cluster, &mut delivered) {
                failure = Some(e);
                break;
            }
            last_drain = Instant::now();
        }
    }
    // A short run may end before its events: they still run, under the load.
    while failure.is_none() && !stop.load(Ordering::SeqCst) {
        let Some((_, event)) = events.pop_front() else {
            break;
        };
        ev.run(&cluster, event, first_moving, &key_slots);
        epoch.fetch_add(1, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    let mut loads = Vec::new();
    let mut errors = Vec::new();
    for t in threads {
        match t.join().expect("cluster load thread panicked") {
            Ok(l) => loads.push(l),
            Err(e) => errors.push(e),
        }
    }
    if let Some(e) = failure {
        errors.push(e);
    }
    let logs = || {
        (cluster.nodes.iter())
            .map(|n| format!("--- :{}\n{}", n.port, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        errors.is_empty(),
        "soak cluster seed {seed}: {}\n{}",
        errors.join("\n"),
        logs()
    );
    assert_eq!(ev.reshards, reshards, "reshards run");
    assert_eq!(ev.failovers, failovers, "failovers run");

    // The end: every key, every event, tag counts, entries, replicas.
    let mut cc = cluster.patient_client();
    let mut keys_verified = 0;
    let mut end_errors = Vec::new();
    for l in &loads {
        for k in &l.keys {
            check_known(&mut cc, k, "at the end", &mut end_errors)
                .unwrap_or_else(|e| panic!("soak cluster seed {seed}: {e}"));
            keys_verified += k.1.value.is_some() as u64;
        }
    }
    assert!(
        end_errors.is_empty(),
        "at the end, with nothing moving: {end_errors:?}"
    );
    drain_cluster_queues(&cluster, &mut delivered)
        .unwrap_or_else(|e| panic!("soak cluster seed {seed}: {e}"));
    let mut events = 0;
    for l in &loads {
        for (key, id, version) in &l.events {
            let got = delivered.get(&(key.clone(), id.clone()));
            assert_eq!(
                got,
                Some(version),
                "soak cluster seed {seed}: event {} of {} (version {version}) acknowledged",
                show_bytes(id),
                show_bytes(key)
            );
            events += 1;
        }
    }
    let primaries = cluster.primaries();
    for (t, l) in loads.iter().enumerate() {
        let tag = format!("ctag:{t}");
        let count: i64 = (primaries.iter())
            .map(|p| int(&must(&mut conn(p), &[b"CACHE.TAGCOUNT", tag.as_bytes()])))
            .sum();
        let mut carrying = 0;
        for (key, _) in &l.keys {
            let Value::Array(tags) = must(&mut cc_conn(&cluster, key), &[b"CACHE.TAGS", key])
            else {
                panic!("CACHE.TAGS reply")
            };
            carrying += tags.contains(&Value::BulkString(tag.clone().into_bytes())) as i64;
        }
        assert_eq!(
            count, carrying,
            "TAGCOUNT {tag} over the primaries, and CACHE.TAGS"
        );
        if l.keys.iter().all(|(_, k)| k.tagged.is_some()) {
            let model = l
                .keys
                .iter()
                .filter(|(_, k)| k.tagged == Some(true))
                .count() as i64;
            assert_eq!(carrying, model, "entries acknowledged with {tag}");
        }
    }
    for (i, p) in cluster.nodes.iter().enumerate().take(6) {
        let mut pc = conn(p);
        if info_section(&mut pc, "replication")
            .get("role")
            .map(String::as_str)
            != Some("master")
        {
            continue;
        }
        // Scratch entries expire meanwhile: the counts and digests are compared until they
        // agree, within a deadline.
        let mut last = String::new();
        let agreed = wait_until(Duration::from_secs(20), || {
            let (entries, count) = entries_and_count(&mut pc);
            let r = cluster.replica_of(i);
            let mut rc = conn(&cluster.nodes[r]);
            let _ = call(&mut pc, &[a("WAIT"), a("1"), a("5000")]);
            let (pd, rd) = (digest(&mut pc), digest(&mut rc));
            last = format!(
                "cache_entries {entries}, cache-ent keys {count}, digest {pd} replica {rd}"
            );
            entries == count && pd == rd
        });
        assert!(agreed, "primary :{}: {last}", p.port);
    }
    for n in &cluster.nodes {
        logs_clean(&format!("node :{}", n.port), n).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut by_cmd: BTreeMap<String, u64> = BTreeMap::new();
    for l in &loads {
        for (k, v) in &l.by_cmd {
            *by_cmd.entry(k.clone()).or_default() += v;
        }
    }
    let ops: u64 = loads.iter().map(|l| l.ops).sum();
    let transient: Vec<&String> = loads.iter().flat_map(|l| &l.transient).collect();
    let verified: u64 = loads.iter().map(|l| l.verified).sum();
    println!("soak cluster: commands {by_cmd:?}");
    println!(
        "soak cluster: {ops} ops, {} reshard(s) of {RESHARD_SLOTS} slots with {} of the \
         clients' keys in {:.1} s of CLI time, {} failover(s) in {:.1} s, \
         {verified} key reads after reshards and failovers, {keys_verified} keys and {events} \
         write-behind events verified at the end ({} consumed), {} transient error(s) {:?}",
        ev.reshards,
        ev.keys_moved,
        ev.reshard_time.as_secs_f64(),
        ev.failovers,
        ev.failover_time.as_secs_f64(),
        delivered.len(),
        transient.len(),
        transient.iter().take(3).collect::<Vec<_>>()
    );
    println!(
        "soak cluster: seed {seed} passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[derive(Clone, Copy, Debug)]
enum ClusterEvent {
    Reshard,
    Failover,
}

/// The cluster events run so far.
#[derive(Default)]
struct ClusterEvents {
    reshards: u64,
    keys_moved: usize,
    reshard_time: Duration,
    failovers: u64,
    failover_time: Duration,
}

impl ClusterEvents {
    /// Runs `event` on the moving slots (`first` among them).
    fn run(
        &mut self,
        cluster: &support::cluster::Cluster,
        event: ClusterEvent,
        first: i64,
        key_slots: &[i64],
    ) {
        match event {
            ClusterEvent::Reshard => {
                let (took, keys) = reshard_next(cluster, self.reshards, first, key_slots);
                self.reshard_time += took;
                self.keys_moved += keys;
                self.reshards += 1;
            }
            ClusterEvent::Failover => {
                self.failover_time += failover_holder(cluster, first);
                self.failovers += 1;
            }
        }
    }
}

/// Reshard number `done + 1`: the moving slots (the lowest ones, `first` among them), from the
/// primary that holds them to the next primary; checked to have moved exactly `RESHARD_SLOTS`
/// slots. How long the CLI took, and how many of the clients' keys (their slots in
/// `key_slots`) moved.
fn reshard_next(
    cluster: &support::cluster::Cluster,
    done: u64,
    first: i64,
    key_slots: &[i64],
) -> (Duration, usize) {
    let before = cluster.slot_map();
    let primaries = cluster.primaries();
    let holder = cluster.owner_of_slot(first).port;
    let at = (primaries.iter().position(|p| p.port == holder)).expect("the holder is a primary");
    let (from, to) = (primaries[at], primaries[(at + 1) % primaries.len()]);
    let took = cluster.reshard(from, to, RESHARD_SLOTS);
    let after = cluster.slot_map();
    let moved = (0..16384).filter(|&s| before[s] != after[s]).count();
    assert_eq!(moved, RESHARD_SLOTS, "slots reshard {} moved", done + 1);
    let keys = (key_slots.iter())
        .filter(|&&s| before[s as usize] != after[s as usize])
        .count();
    // The crowded slots (a third of the keys) move every time.
    assert!(
        keys >= key_slots.len() / 3,
        "reshard {} moved only {keys} of the clients' keys",
        done + 1
    );
    (took, keys)
}

/// A manual failover of the primary that holds slot `first` (the moving slots, the crowded
/// ones among them) under the load; how long it took.
fn failover_holder(cluster: &support::cluster::Cluster, first: i64) -> Duration {
    let holder = cluster.owner_of_slot(first).port;
    let i = (cluster.nodes.iter().position(|n| n.port == holder)).unwrap();
    let (new, took) = cluster.failover(i);
    assert_eq!(
        cluster.owner_of_slot(first).port,
        cluster.nodes[new].port,
        "slot {first} after the failover"
    );
    took
}

/// A direct connection to the primary that serves `key`.
fn cc_conn(cluster: &support::cluster::Cluster, key: &[u8]) -> Connection {
    conn(cluster.owner_of(std::str::from_utf8(key).unwrap()))
}

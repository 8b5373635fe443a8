//! Helpers shared by `persistence.rs` and `replication.rs`: a fixture of entries in every state
//! an entry can be in, snapshots of their observable state (CACHE.INSPECT, PEXPIRETIME,
//! CACHE.GET, DEBUG DIGEST-VALUE, DEBUG DIGEST) and their comparison, crafted records
//! (`support::records`), and INFO parsing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use crate::support::records::{restore, Record, HOUR_MS};
use crate::support::{getx, server_ms, set, wait_until, Connection, Server};

/// `CACHE.INSPECT key` as (field, value) pairs, in reply order.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspect(pub Vec<(String, Value)>);

impl Inspect {
    pub fn get(&self, field: &str) -> &Value {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no field {field} in {self:?}"))
    }

    /// An integer field; `None` when nil.
    pub fn int(&self, field: &str) -> Option<i64> {
        match self.get(field) {
            Value::Int(n) => Some(*n),
            Value::Nil => None,
            other => panic!("field {field} is not an integer: {other:?}"),
        }
    }

    /// The same fields with the version forced to nil (to compare an entry with where
    /// `COPY`, `RENAME`, `RESTORE` or `MIGRATE` put it, with a fresh version).
    pub fn without_version(&self) -> Inspect {
        Inspect(
            self.0
                .iter()
                .map(|(f, v)| {
                    let v = if f == "version" {
                        Value::Nil
                    } else {
                        v.clone()
                    };
                    (f.clone(), v)
                })
                .collect(),
        )
    }

    /// The same fields with the lease fields forced to nil (what a lease-less copy shows).
    pub fn without_lease(&self) -> Inspect {
        Inspect(
            self.0
                .iter()
                .map(|(f, v)| {
                    let v = if f.starts_with("lease-") {
                        Value::Nil
                    } else {
                        v.clone()
                    };
                    (f.clone(), v)
                })
                .collect(),
        )
    }
}

pub fn inspect(c: &mut Connection, key: &str) -> Option<Inspect> {
    let v: Value = redis::cmd("CACHE.INSPECT").arg(key).query(c).unwrap();
    let items = match v {
        Value::Nil => return None,
        Value::Array(items) => items,
        other => panic!("CACHE.INSPECT {key:?}: unexpected reply {other:?}"),
    };
    assert!(items.len() % 2 == 0, "odd CACHE.INSPECT reply {items:?}");
    let mut pairs = Vec::new();
    for pair in items.chunks(2) {
        let name = match &pair[0] {
            Value::SimpleString(s) => s.clone(),
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("CACHE.INSPECT field name {other:?}"),
        };
        pairs.push((name, pair[1].clone()));
    }
    Some(Inspect(pairs))
}

pub fn pexpiretime(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap()
}

pub fn cache_get(c: &mut Connection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("CACHE.GET").arg(key).query(c).unwrap()
}

pub fn digest_value(c: &mut Connection, key: &str) -> String {
    let v: Vec<String> = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(c)
        .unwrap();
    v.into_iter().next().unwrap_or_default()
}

pub fn exists(c: &mut Connection, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS").arg(key).query(c).unwrap();
    n == 1
}

pub fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

/// `CACHE.SET ... TOKEN t`: the version, or None when refused.
pub fn fill(c: &mut Connection, key: &str, value: &[u8], token: u64) -> Option<u64> {
    let t = token.to_string();
    set(c, key, value, &["PX", "3600000", "TOKEN", &t])
}

/// One field of `INFO <section>`, as text.
pub fn info_field(c: &mut Connection, section: &str, field: &str) -> Option<String> {
    let text: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v.trim().to_string())
}

pub fn info_int(c: &mut Connection, section: &str, field: &str) -> i64 {
    info_field(c, section, field)
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .parse()
        .unwrap_or_else(|e| panic!("INFO {section} {field}: {e}"))
}

/// `cache_last_id`: the largest id the server has issued or seen.
pub fn last_id(c: &mut Connection) -> u64 {
    info_int(c, "cache", "cache_last_id") as u64
}

pub fn live_entries(c: &mut Connection) -> i64 {
    info_int(c, "cache", "cache_entries")
}

/// An id an hour ahead of this server's clock, as if issued by a server whose clock runs
/// ahead: still one a client's RESTORE may bring (up to a day ahead is taken).
pub fn future_id(c: &mut Connection) -> u64 {
    let now_id = (server_ms(c) as u64) << 10;
    last_id(c).max(now_id) + ((HOUR_MS as u64) << 10)
}

/// Entries in every state an entry can be in, made through the public commands (and two
/// crafted records for what the public commands cannot make yet: tags, and an id from a clock
/// an hour ahead).
#[derive(Clone, Debug, Default)]
pub struct Fixture {
    /// The prefix of every key in the fixture.
    pub prefix: String,
    /// Keys of the module's type.
    pub keys: Vec<String>,
    /// Other keys (a plain string) that share the database.
    pub others: Vec<String>,
    /// Outstanding leases: (key, token). A fill with the token must be accepted.
    pub live: Vec<(String, u64)>,
    /// Leases that ended (filled, revoked, lapsed): a fill with the token must be refused.
    pub dead: Vec<(String, u64)>,
    /// The version of the entry carrying an id an hour ahead of the clock.
    pub future_id: u64,
}

impl Fixture {
    pub fn forget_key(&mut self, key: &str) {
        self.keys.retain(|k| k != key);
        self.kill_tokens(key);
    }

    /// The key's outstanding lease ended (an authoritative write or a delete).
    pub fn kill_tokens(&mut self, key: &str) {
        let (gone, keep): (Vec<_>, Vec<_>) = self.live.drain(..).partition(|(k, _)| k == key);
        self.live = keep;
        self.dead.extend(gone);
    }
}

/// A value with NUL bytes and every byte value.
pub fn binary_value() -> Vec<u8> {
    let mut v = b"\0start\0".to_vec();
    v.extend((0..=255u8).rev());
    v.extend_from_slice(b"\0\r\n$3\r\nend\0");
    v
}

/// A 1 MiB value with a pattern (not all one byte, so a mixed-up copy shows).
pub fn big_value() -> Vec<u8> {
    (0..1 << 20).map(|i: u32| (i % 251) as u8).collect()
}

/// GETX with a huge BETA on an entry with a huge DELTA until XFetch elects this caller
/// (`REFRESH` with a token); panics if it never does.
pub fn refresh_grant(c: &mut Connection, key: &str, lease_ms: i64) -> u64 {
    let lease = lease_ms.to_string();
    for _ in 0..100 {
        let (v, status, token) = getx(c, key, &["BETA", "100", "LEASE", &lease]);
        if status == "REFRESH" {
            assert!(v.is_some(), "REFRESH carries the value");
            return token.expect("REFRESH carries a token");
        }
        assert_eq!(status, "HIT", "GETX {key:?} on a fresh unleased entry");
    }
    panic!("XFetch never elected a refresher for {key:?}");
}

/// Fills a database with entries in every state, keys prefixed with `p`.
pub fn fill_fixture(c: &mut Connection, p: &str) -> Fixture {
    let mut f = Fixture {
        prefix: p.to_string(),
        ..Fixture::default()
    };
    let k = |name: &str| format!("{p}{name}");
    let long = HOUR_MS.to_string();

    // A plain value.
    set(c, &k("plain"), b"hello", &["EX", "3600"]).unwrap();
    f.keys.push(k("plain"));
    // Binary value under a binary key.
    let bin_key = k("bin\0key\u{ff}");
    set(c, &bin_key, &binary_value(), &["PX", &long, "GRACE", "0"]).unwrap();
    f.keys.push(bin_key);
    // The empty value.
    set(c, &k("empty"), b"", &["EX", "3600"]).unwrap();
    f.keys.push(k("empty"));
    // GRACE and DELTA.
    set(
        c,
        &k("graced"),
        b"g",
        &["PX", &long, "GRACE", "30000", "DELTA", "250"],
    )
    .unwrap();
    f.keys.push(k("graced"));
    // A large value.
    set(c, &k("big"), &big_value(), &["EX", "3600"]).unwrap();
    f.keys.push(k("big"));

    // Pending: a lease and no value.
    let (v, status, token) = getx(c, &k("pending"), &["LEASE", &long]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    f.live.push((k("pending"), token.unwrap()));
    f.keys.push(k("pending"));

    // A fresh value with an outstanding early-refresh lease.
    set(
        c,
        &k("refresh"),
        b"r",
        &["EX", "3600", "DELTA", "1000000000"],
    )
    .unwrap();
    let t = refresh_grant(c, &k("refresh"), HOUR_MS);
    f.live.push((k("refresh"), t));
    f.keys.push(k("refresh"));

    // A stale value (in grace) with an outstanding lease.
    set(c, &k("stale"), b"s", &["PX", "1", "GRACE", &long]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (v, status, token) = getx(c, &k("stale"), &["LEASE", &long]);
    assert_eq!((v.as_deref(), status.as_str()), (Some(&b"s"[..]), "STALE"));
    f.live.push((
        k("stale"),
        token.expect("first STALE reader gets the lease"),
    ));
    f.keys.push(k("stale"));

    // Filled through its lease (delta measured, no lease left).
    let (_, status, token) = getx(c, &k("filled"), &["LEASE", &long]);
    assert_eq!(status, "MISS");
    let token = token.unwrap();
    fill(c, &k("filled"), b"f", token).expect("fill with the current lease");
    f.dead.push((k("filled"), token));
    f.keys.push(k("filled"));

    // Lease revoked by an authoritative write.
    let (_, status, token) = getx(c, &k("revoked"), &["LEASE", &long]);
    assert_eq!(status, "MISS");
    set(c, &k("revoked"), b"authoritative", &["EX", "3600"]).unwrap();
    f.dead.push((k("revoked"), token.unwrap()));
    f.keys.push(k("revoked"));

    // A value whose lease lapsed: still recorded in the entry, no longer active.
    set(
        c,
        &k("lapsed"),
        b"l",
        &["EX", "3600", "DELTA", "1000000000"],
    )
    .unwrap();
    let t = refresh_grant(c, &k("lapsed"), 1);
    std::thread::sleep(Duration::from_millis(10));
    f.dead.push((k("lapsed"), t));
    f.keys.push(k("lapsed"));

    // Tags (binary, empty) and a lease, as a crafted record.
    let now = server_ms(c);
    let base = last_id(c);
    let tagged_token = base + 0x5eed;
    let mut h = Record::valued(now + HOUR_MS, 1_000, 42, base + 0x7a9).with_lease(
        tagged_token,
        now,
        now + HOUR_MS,
    );
    h.tags = vec![b"user:1".to_vec(), b"\0bin\xff".to_vec(), Vec::new()];
    restore(c, &k("tagged"), &h, Some(b"tagged value")).unwrap();
    f.live.push((k("tagged"), tagged_token));
    f.keys.push(k("tagged"));

    // An id from a clock an hour ahead (a primary or an earlier life of this server whose clock
    // was ahead): everything issued from now on must still be larger.
    let future = future_id(c);
    restore(
        c,
        &k("future"),
        &Record::valued(now + HOUR_MS, 0, 5, future),
        Some(b"from the future"),
    )
    .unwrap();
    f.future_id = future;
    f.keys.push(k("future"));

    // A key of another type in the same database.
    let _: () = redis::cmd("SET")
        .arg(k("string"))
        .arg("plain redis string")
        .arg("EX")
        .arg(3600)
        .query(c)
        .unwrap();
    f.others.push(k("string"));
    f
}

/// What can be observed of one key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyState {
    pub inspect: Option<Inspect>,
    pub pexpiretime: i64,
    pub value: Option<Vec<u8>>,
    pub digest: String,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub digest: String,
    pub keys: BTreeMap<String, KeyState>,
}

pub fn key_state(c: &mut Connection, key: &str) -> KeyState {
    KeyState {
        inspect: inspect(c, key),
        pexpiretime: pexpiretime(c, key),
        value: cache_get(c, key),
        digest: digest_value(c, key),
    }
}

pub fn snapshot(c: &mut Connection, keys: &[String]) -> Snapshot {
    let keys = keys.iter().map(|k| (k.clone(), key_state(c, k))).collect();
    let digest: String = redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap();
    Snapshot { digest, keys }
}

/// Shortened for failure messages (a 1 MiB value is not worth printing).
fn short(v: &Option<Vec<u8>>) -> String {
    match v {
        None => "nil".into(),
        Some(v) if v.len() > 64 => format!("<{} bytes>", v.len()),
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
    }
}

/// What differs between two states of a key (PEXPIRETIME within `slack_ms`).
pub fn key_diffs(a: &KeyState, b: &KeyState, slack_ms: i64) -> Vec<String> {
    let mut diffs = Vec::new();
    if a.inspect != b.inspect {
        diffs.push(format!(
            "CACHE.INSPECT: {:?} vs {:?}",
            a.inspect.as_ref().map(|i| &i.0),
            b.inspect.as_ref().map(|i| &i.0)
        ));
    }
    if a.value != b.value {
        diffs.push(format!(
            "CACHE.GET: {} vs {}",
            short(&a.value),
            short(&b.value)
        ));
    }
    if (a.pexpiretime == -1) != (b.pexpiretime == -1)
        || (a.pexpiretime - b.pexpiretime).abs() > slack_ms
    {
        diffs.push(format!(
            "PEXPIRETIME: {} vs {}",
            a.pexpiretime, b.pexpiretime
        ));
    }
    if a.digest != b.digest {
        diffs.push(format!(
            "DEBUG DIGEST-VALUE (covers whether the key has an expiry): {} vs {}",
            a.digest, b.digest
        ));
    }
    diffs
}

/// Everything equal, PEXPIRETIME within `slack_ms`; a failure lists every difference.
pub fn assert_same_key(what: &str, key: &str, a: &KeyState, b: &KeyState, slack_ms: i64) {
    let diffs = key_diffs(a, b, slack_ms);
    assert!(
        diffs.is_empty(),
        "{what}: {key:?} differs:\n  {}",
        diffs.join("\n  ")
    );
}

impl KeyState {
    /// The state but the version (the digest covers the version, so it goes too).
    pub fn without_version(&self) -> KeyState {
        KeyState {
            inspect: self.inspect.as_ref().map(Inspect::without_version),
            pexpiretime: self.pexpiretime,
            value: self.value.clone(),
            digest: String::new(),
        }
    }

    pub fn version(&self) -> Option<i64> {
        self.inspect.as_ref().and_then(|i| i.int("version"))
    }
}

/// `after` is `before` where Redis put it (`COPY`, `RENAME`, `RESTORE`, `MIGRATE`): the same
/// entry with a fresh version, higher than the one it had.
pub fn assert_landed(what: &str, key: &str, before: &KeyState, after: &KeyState, slack_ms: i64) {
    let (v0, v1) = (before.version(), after.version());
    assert!(
        v1 > v0,
        "{what}: {key:?} has version {v1:?}, not above {v0:?}"
    );
    assert_same_key(
        what,
        key,
        &before.without_version(),
        &after.without_version(),
        slack_ms,
    );
}

/// Every key of `a` landed in `b` (see `assert_landed`).
pub fn assert_all_landed(what: &str, a: &Snapshot, b: &Snapshot) {
    assert_eq!(
        a.keys.keys().collect::<Vec<_>>(),
        b.keys.keys().collect::<Vec<_>>(),
        "{what}: different keys"
    );
    for (key, sa) in &a.keys {
        assert_landed(what, key, sa, &b.keys[key], 50);
    }
}

pub fn assert_same(what: &str, a: &Snapshot, b: &Snapshot) {
    assert_eq!(
        a.keys.keys().collect::<Vec<_>>(),
        b.keys.keys().collect::<Vec<_>>(),
        "{what}: different keys"
    );
    let mut report = Vec::new();
    for (key, sa) in &a.keys {
        assert!(sa.inspect.is_some(), "{what}: {key:?} missing before");
        let diffs = key_diffs(sa, &b.keys[key], 50);
        if !diffs.is_empty() {
            report.push(format!("{key:?} differs:\n    {}", diffs.join("\n    ")));
        }
    }
    assert!(report.is_empty(), "{what}:\n  {}", report.join("\n  "));
    assert_eq!(a.digest, b.digest, "{what}: DEBUG DIGEST differs");
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
    let acked: i64 = redis::cmd("WAIT").arg(n).arg(5000).query(c).unwrap();
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

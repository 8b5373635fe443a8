//! A fixture of entries in every state an entry can be in, snapshots of their observable state
//! (CACHE.INSPECT, PEXPIRETIME, CACHE.GET, DEBUG DIGEST-VALUE, DEBUG DIGEST) and their
//! comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Connection;

use super::commands::*;
use super::records::{restore, Record, HOUR_MS};

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
    set(c, k("plain"), b"hello", &["EX", "3600"]).unwrap();
    f.keys.push(k("plain"));
    // Binary value under a binary key.
    let bin_key = k("bin\0key\u{ff}");
    set(c, &bin_key, &binary_value(), &["PX", &long, "GRACE", "0"]).unwrap();
    f.keys.push(bin_key);
    // The empty value.
    set(c, k("empty"), b"", &["EX", "3600"]).unwrap();
    f.keys.push(k("empty"));
    // GRACE and DELTA.
    set(
        c,
        k("graced"),
        b"g",
        &["PX", &long, "GRACE", "30000", "DELTA", "250"],
    )
    .unwrap();
    f.keys.push(k("graced"));
    // A large value.
    set(c, k("big"), &big_value(), &["EX", "3600"]).unwrap();
    f.keys.push(k("big"));

    // Pending: a lease and no value.
    let (v, status, token) = getx(c, k("pending"), &["LEASE", &long]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    f.live.push((k("pending"), token.unwrap()));
    f.keys.push(k("pending"));

    // A fresh value with an outstanding early-refresh lease.
    set(
        c,
        k("refresh"),
        b"r",
        &["EX", "3600", "DELTA", "1000000000"],
    )
    .unwrap();
    let t = refresh_grant(c, &k("refresh"), HOUR_MS);
    f.live.push((k("refresh"), t));
    f.keys.push(k("refresh"));

    // A stale value (in grace) with an outstanding lease.
    set(c, k("stale"), b"s", &["PX", "1", "GRACE", &long]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (v, status, token) = getx(c, k("stale"), &["LEASE", &long]);
    assert_eq!((v.as_deref(), status.as_str()), (Some(&b"s"[..]), "STALE"));
    f.live.push((
        k("stale"),
        token.expect("first STALE reader gets the lease"),
    ));
    f.keys.push(k("stale"));

    // Filled through its lease (delta measured, no lease left).
    let (_, status, token) = getx(c, k("filled"), &["LEASE", &long]);
    assert_eq!(status, "MISS");
    let token = token.unwrap();
    fill(c, &k("filled"), b"f", token).expect("fill with the current lease");
    f.dead.push((k("filled"), token));
    f.keys.push(k("filled"));

    // Lease revoked by an authoritative write.
    let (_, status, token) = getx(c, k("revoked"), &["LEASE", &long]);
    assert_eq!(status, "MISS");
    set(c, k("revoked"), b"authoritative", &["EX", "3600"]).unwrap();
    f.dead.push((k("revoked"), token.unwrap()));
    f.keys.push(k("revoked"));

    // A value whose lease lapsed: still recorded in the entry, no longer active.
    set(c, k("lapsed"), b"l", &["EX", "3600", "DELTA", "1000000000"]).unwrap();
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
    // MIGRATE and RESTORE carry a relative TTL: the expiry moves by the time in transit, up to
    // 50 ms on a server at full speed, `slow()` times that under valgrind.
    let slack_ms = 50 * i64::from(super::server::slow());
    for (key, sa) in &a.keys {
        assert_landed(what, key, sa, &b.keys[key], slack_ms);
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

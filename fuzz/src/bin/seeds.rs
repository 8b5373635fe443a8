//! Writes the seed corpus of every target into `corpus/<target>/` (run from `fuzz/`:
//! `cargo run --bin seeds`): real entry headers in every state an entry is stored in, the
//! records replication and the AOF carry, bus messages, argument vectors of every command
//! (valid ones, and the refusals the integration tests send), and tag index operations.

use std::fs;
use std::path::Path;

use redis_cache::core::codec::{encode_aof_header, encode_header, encode_metadata_keep_ttl};
use redis_cache::core::entry::{Entry, Lease, MAX_SPAN_MS, NEVER};
use redis_cache::core::spread::{Message, SpreadId};
use redis_cache_fuzz::argv_to_bytes;

const NOW: i64 = 1_700_000_000_000;
/// Ids as the id clock issues them: milliseconds shifted, a counter below.
const VERSION: u64 = (NOW as u64 - 1_600_000_000_000) << 10;

fn lease(from: i64) -> Lease {
    Lease {
        token: VERSION + 7,
        granted_ms: from,
        expires_ms: from + 5_000,
    }
}

/// Entries in every state the module stores.
fn entries() -> Vec<(&'static str, Entry)> {
    let value = || Some(b"the value"[..].into());
    let fresh = Entry::new(value(), NOW + 60_000, 0, 100, VERSION);
    let in_grace = Entry::new(value(), NOW - 1_000, 30_000, 250, VERSION);
    let pending = Entry::pending(lease(NOW));
    let mut refreshing = in_grace.clone();
    refreshing.set_lease(Some(lease(NOW - 500)));
    let mut tagged = fresh.clone();
    tagged.set_tags(&[&b"tenant:42"[..], b"products", b""]);
    let mut tagged_leased = tagged.clone();
    tagged_leased.set_lease(Some(lease(NOW)));
    let mut expired_lease = Entry::pending(lease(NOW - 10_000));
    expired_lease.set_tags(&[b"user:1"]);
    let never = Entry::new(value(), NEVER, 0, 0, VERSION);
    let spans = Entry::new(value(), NOW, MAX_SPAN_MS, MAX_SPAN_MS, VERSION);
    let mut many_tags = fresh.clone();
    let tags: Vec<Vec<u8>> = (0..40).map(|i| format!("tag:{i}").into_bytes()).collect();
    many_tags.set_tags(&tags);
    vec![
        ("fresh", fresh),
        ("stale-in-grace", in_grace),
        ("pending-leased", pending),
        ("stale-leased", refreshing),
        ("tagged", tagged),
        ("tagged-leased", tagged_leased),
        ("pending-expired-lease-tagged", expired_lease),
        ("never-stale", never),
        ("longest-spans", spans),
        ("forty-tags", many_tags),
    ]
}

/// Every header a record carries: RDB/DUMP and replicated writes, a lease grant that keeps
/// the value, AOF rewrite, a metadata-only effect.
fn headers() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, e) in entries() {
        out.push((name.to_string(), encode_header(&e, false)));
        out.push((format!("{name}-keep-value"), encode_header(&e, true)));
        out.push((format!("{name}-aof"), encode_aof_header(&e)));
        out.push((format!("{name}-keep-ttl"), encode_metadata_keep_ttl(&e)));
    }
    // A span above what an entry keeps, as older versions of the module stored it.
    let mut old = encode_header(&Entry::new(None, NOW, 0, 0, VERSION), false);
    old[10..18].copy_from_slice(&(MAX_SPAN_MS * 4).to_le_bytes());
    out.push(("grace-64-bit".into(), old));
    out
}

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let id = SpreadId {
        origin: b"07c37dfeb235213a872192d90877d0cd55635b91".to_vec(),
        seq: 12,
    };
    let one = Message::Invalidate {
        id: id.clone(),
        db: 0,
        tags: vec![b"tenant:42".to_vec()],
    };
    let many = Message::Invalidate {
        id: id.clone(),
        db: 3,
        tags: vec![b"a".to_vec(), b"".to_vec(), b"\0\xff".to_vec()],
    };
    let confirm = Message::Confirm { id, count: 1_234 };
    vec![
        ("invalidate", one.encode()),
        ("invalidate-three-tags", many.encode()),
        ("confirm", confirm.encode()),
    ]
}

/// Argument vectors of every command, as clients and the replication stream send them.
fn argvs() -> Vec<Vec<Vec<u8>>> {
    let words = |s: &str| -> Vec<Vec<u8>> { s.split(' ').map(|w| w.as_bytes().to_vec()).collect() };
    let mut out: Vec<Vec<Vec<u8>>> = [
        "CACHE.SET user:1 v EX 60",
        "CACHE.SET user:1 v PX 30000 GRACE 10000 DELTA 250",
        "CACHE.SET user:1 v PX 5000 TOKEN 1234567890",
        "CACHE.SET user:1 v EX 9223372036854775807",
        "CACHE.SET user:1 v PX 1 GRACE 4294967296",
        "CACHE.SET user:1 v ex 1 px 1",
        "CACHE.SET user:1 v GRACE 5",
        "CACHE.TAGSET p:1 v EX 60 TAGS tenant:42 products",
        "CACHE.TAGSET p:1 v PX 100 GRACE 50 TOKEN 99 TAGS a a b",
        "CACHE.TAGSET p:1 v PX 100 TAGS",
        "CACHE.GET user:1",
        "CACHE.GETX user:1",
        "CACHE.GETX user:1 BETA 1.5 LEASE 3000",
        "CACHE.GETX user:1 BETA inf",
        "CACHE.GETX user:1 LEASE 0",
        "CACHE.LOCKGET user:1 PX 5000 WAIT 2000",
        "CACHE.LOCKGET user:1 WAIT 9223372036854775807",
        "CACHE.RELEASE user:1 1234567890",
        "CACHE.RELEASE user:1 -1",
        "CACHE.DEL a b c",
        "CACHE.INSPECT user:1",
        "CACHE.TAGS p:1",
        "CACHE.TAGCOUNT tenant:42",
        "CACHE.TAGSCAN tenant:42 0",
        "CACHE.TAGSCAN tenant:42 18446744073709551615 COUNT 100",
        "CACHE.TAGSCAN tenant:42 0 COUNT 0",
        "CACHE.TAGINVALIDATE tenant:42 products",
        "CACHE.TAGAPPLY 1740000000 1700000005000 tenant:42",
        "CACHE.TAGAPPLY SPREAD 07c37dfeb235213a872192d90877d0cd55635b91 12 1740000000 1700000005000 a b",
        "CACHE.WBQUEUE user:1 v",
        "CACHE.WBQUEUE user:1 v EX 60 GRACE 1000 TAGS t",
        "CACHE.WBQUEUE user:1 v TOKEN 5",
        "CACHE.WBDEL user:1",
        "CACHE.WBQUEUES",
    ]
    .iter()
    .map(|s| words(s))
    .collect();
    for (_, h) in headers() {
        out.push(vec![
            b"CACHE.APPLY".to_vec(),
            b"user:1".to_vec(),
            h.clone(),
            b"v".to_vec(),
        ]);
        out.push(vec![b"CACHE.APPLY".to_vec(), b"user:1".to_vec(), h]);
    }
    out
}

/// Tag index operations, three bytes each (`core::tags::check::ops_from_bytes`): kind, db or
/// index, tags as bits.
fn tag_ops() -> Vec<(&'static str, Vec<u8>)> {
    let add = |db: u8, bits: u8| [0, db, bits];
    let invalidate = |db: u8, bits: u8| [5, db, bits];
    let (begin, end) = ([9, 0, 0], [9, 0, 1]);
    vec![
        ("add-remove", [add(0, 3), add(0, 1), [3, 0, 0]].concat()),
        (
            "invalidate-walk-tick",
            [
                add(0, 3),
                add(1, 2),
                invalidate(0, 1),
                begin,
                end,
                [11, 0, 200],
            ]
            .concat(),
        ),
        (
            "replace-swap-flush",
            [add(0, 5), add(2, 6), [4, 0, 9], [7, 0, 2], [6, 2, 0]].concat(),
        ),
        (
            "rebuild",
            [
                add(0, 1),
                invalidate(0, 1),
                add(0, 1),
                [8, 0, 1],
                [10, 0, 0],
                begin,
                end,
            ]
            .concat(),
        ),
        (
            "query",
            [add(1, 4), invalidate(1, 4), [12, 1, 4], [8, 0, 0]].concat(),
        ),
    ]
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("corpus directory");
    fs::write(d.join(name), bytes).expect("seed file");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, h) in headers() {
        write(&dir, "codec", &name, &h);
        write(&dir, "apply_header", &name, &h);
    }
    for (name, m) in messages() {
        write(&dir, "spread_message", name, &m);
    }
    for (i, argv) in argvs().iter().enumerate() {
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        write(
            &dir,
            "args",
            &format!("{i:03}-{name}"),
            &argv_to_bytes(&refs),
        );
    }
    for (name, ops) in tag_ops() {
        write(&dir, "tag_index", name, &ops);
    }
    println!("seeds written to {}", dir.display());
}

//! Bad input gets an error reply, changes nothing and never takes the server down: a table of
//! wrong calls per command, corrupted `RESTORE` payloads (with a valid checksum, so that they
//! reach the module's loader), and binary, empty and maximum-size values and keys.

mod support;
use support::commands::*;
use support::records::*;
use support::server::{wait_until, Server};

use std::time::Duration;

use redis::{Connection, Value};

// ---------------------------------------------------------------------------------------------
// Calling with raw (binary) arguments
// ---------------------------------------------------------------------------------------------

/// Sends one command; `Err` holds the server's error text (`"ERR ..."`, `"WRONGTYPE ..."`).
/// A transport error (the server went away) is `Err` too, marked `IO:`.
fn call(c: &mut Connection, args: &[Vec<u8>]) -> Result<Value, String> {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(a.as_slice());
    }
    cmd.query::<Value>(c)
        .map_err(|e| match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            (Some(code), None) => code.to_string(),
            _ => format!("IO: {e}"),
        })
}

/// Arguments as Rust would print them, binary escaped, long ones shortened.
fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            let s = a.escape_ascii().to_string();
            if s.len() > 80 {
                format!("\"{}...\"({} bytes)", &s[..80], a.len())
            } else {
                format!("\"{s}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `vec![Vec<u8>, ...]` from any mix of `&str`, `String`, `&[u8; N]`, `&[u8]` and `Vec<u8>`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(Vec::<u8>::from($a)),*] };
}

/// As `args!`, as an array: one command to send.
macro_rules! cmd {
    ($($a:expr),* $(,)?) => { [$(Vec::<u8>::from($a)),*] };
}

// ---------------------------------------------------------------------------------------------
// Part 1: a table of bad calls per command
// ---------------------------------------------------------------------------------------------

/// One bad call and the error it must get. `expect` is a prefix of the error text;
/// alternatives are separated by `|`; a trailing `$` asks for the whole text.
struct Row {
    args: Vec<Vec<u8>>,
    expect: &'static str,
}

macro_rules! row {
    ([$($a:expr),* $(,)?], $expect:expr) => {
        Row { args: args![$($a),*], expect: $expect }
    };
}

fn error_matches(msg: &str, expect: &str) -> bool {
    expect.split('|').any(|alt| match alt.strip_suffix('$') {
        Some(exact) => msg == exact,
        None => msg.starts_with(alt),
    })
}

const SYNTAX: &str = "ERR syntax error$";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const BETA: &str = "ERR BETA must be a positive finite number";
const TOKEN: &str = "ERR TOKEN must be a positive 64-bit integer";
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const TTL_REQUIRED: &str = "ERR syntax error, EX or PX is required";
const REPEATED_TTL: &str = "ERR syntax error, EX/PX given more than once";
const BAD_RECORD: &str = "ERR bad entry record";
const I64_MAX: &str = "9223372036854775807";

/// What must not change when a call is refused.
#[derive(Debug, PartialEq)]
struct State {
    digest: String,
    dbsize: i64,
    counters: Vec<(&'static str, Option<i64>)>,
}

const WATCHED: &[&str] = &[
    "writes",
    "leases_granted",
    "leases_filled",
    "leases_revoked",
    "fills_refused",
    "deletes",
    "entries",
    "last_id",
];

fn state(c: &mut Connection) -> State {
    let info = info_cache(c);
    State {
        digest: digest(c),
        dbsize: redis::cmd("DBSIZE").query(c).unwrap(),
        counters: WATCHED.iter().map(|&k| (k, info.get(k).copied())).collect(),
    }
}

/// A server holding a few entries and keys of other types:
/// `e1` (value), `e2` (binary value, grace, delta), `e3` (value and an outstanding lease),
/// `pending` (lease, no value), `str` (a string), `list` (a list). Nothing expires for an hour.
fn fixture() -> (Server, Connection) {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, "e1", b"value one", &["EX", "3600"]).expect("e1 stored");
    set(
        &mut c,
        "e2",
        b"v\0two",
        &["PX", "3600000", "GRACE", "60000", "DELTA", "250"],
    )
    .expect("e2 stored");
    set(&mut c, "e3", b"three", &["EX", "3600", "DELTA", "1000"]).expect("e3 stored");
    // A huge beta makes the early refresh certain: e3 gets a value and a lease.
    let (_, status, token) = getx(&mut c, "e3", &["BETA", "1e300", "LEASE", "3600000"]);
    assert_eq!((status.as_str(), token.is_some()), ("REFRESH", true));
    let (_, status, token) = getx(&mut c, "pending", &["LEASE", "3600000"]);
    assert_eq!((status.as_str(), token.is_some()), ("MISS", true));
    let _: () = redis::cmd("SET")
        .arg("str")
        .arg("plain")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("list")
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    (s, c)
}

/// Runs every row on the fixture; each must answer its error and change nothing. All failing
/// rows are reported together.
fn check_table(c: &mut Connection, rows: &[Row]) {
    assert!(!rows.is_empty());
    let mut failures = Vec::new();
    for row in rows {
        let shown = show(&row.args);
        let before = state(c);
        assert!(
            before.counters.iter().all(|(_, v)| v.is_some()),
            "INFO cache lacks a watched field: {before:?}"
        );
        let reply = call(c, &row.args);
        let after = state(c);
        match &reply {
            Err(msg) if msg.starts_with("IO:") => panic!("{shown}: connection lost: {msg}"),
            Err(msg) if error_matches(msg, row.expect) => {}
            Err(msg) => failures.push(format!(
                "{shown}\n    got error {msg:?}\n    expected  {:?}",
                row.expect
            )),
            Ok(v) => failures.push(format!(
                "{shown}\n    got reply {v:?}\n    expected error {:?}",
                row.expect
            )),
        }
        if before != after {
            failures.push(format!(
                "{shown}\n    changed the server:\n    before {before:?}\n    after  {after:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-input rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// The fixture's entries read back as stored (the table did not disturb them).
fn fixture_intact(c: &mut Connection) {
    let get = |c: &mut Connection, k: &str| -> Option<Vec<u8>> {
        redis::cmd("CACHE.GET").arg(k).query(c).unwrap()
    };
    assert_eq!(get(c, "e1"), Some(b"value one".to_vec()));
    assert_eq!(get(c, "e2"), Some(b"v\0two".to_vec()));
    assert_eq!(get(c, "e3"), Some(b"three".to_vec()));
    let t: String = redis::cmd("TYPE").arg("pending").query(c).unwrap();
    assert_eq!(t, "cache-ent");
}

/// The table check itself: a call that succeeds, changes the server or answers another error
/// is reported, with its row.
#[test]
fn the_table_check_reports_every_kind_of_failure() {
    let (_s, mut c) = fixture();
    for (row, must_say) in [
        (
            row!(["CACHE.SET", "e1", "v", "EX", "10"], SYNTAX),
            &["got reply", "changed the server", "\"CACHE.SET\" \"e1\""][..],
        ),
        (
            row!(["CACHE.GETX", "new"], SYNTAX),
            &["got reply", "changed the server"][..],
        ),
        (row!(["CACHE.GET"], SYNTAX), &["got error", "expected"][..]),
        (
            row!(
                ["CACHE.SET", "e1", "v", "EX", "10", "NX"],
                "ERR syntax error, "
            ),
            &["got error"][..],
        ),
    ] {
        let shown = show(&row.args);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_table(&mut c, &[row]);
        }));
        let msg = match result {
            Ok(()) => panic!("{shown}: not reported"),
            Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        for word in must_say {
            assert!(msg.contains(word), "{shown}: report lacks {word:?}:\n{msg}");
        }
    }
}

#[test]
fn cache_set_bad_input() {
    let (_s, mut c) = fixture();
    const ARITY: &str = "ERR wrong number of arguments for 'cache.set' command";
    let now = server_ms(&mut c);
    // PX below i64::MAX by far less than now: now + PX overflows.
    let px_near_max = (i64::MAX - 1_000_000).to_string();
    // GRACE that overflows only once added to now + PX.
    let grace_overflowing = (i64::MAX - now - 1_000).to_string();
    let rows = vec![
        // Arity.
        row!(["CACHE.SET"], ARITY),
        row!(["CACHE.SET", "e1"], ARITY),
        row!(["cache.set", "new"], ARITY),
        // EX or PX is required.
        row!(["CACHE.SET", "new", "v"], TTL_REQUIRED),
        row!(["CACHE.SET", "e1", "v", "GRACE", "10"], TTL_REQUIRED),
        row!(
            ["CACHE.SET", "e1", "v", "DELTA", "10", "GRACE", "5"],
            TTL_REQUIRED
        ),
        // Not numbers.
        row!(["CACHE.SET", "e1", "v", "EX", "abc"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", ""], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", "1.5"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", " 10"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", "10 "], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", "+10"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", "0x10"], NOT_INT),
        // Leading zeros and "-0", refused as core SET refuses them.
        row!(["CACHE.SET", "new", "v", "PX", "0100"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", "010"], NOT_INT),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "100", "GRACE", "00"],
            NOT_INT
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "100", "DELTA", "-0"],
            NOT_INT
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "100", "TOKEN", "01"],
            "ERR TOKEN must be a positive 64-bit integer"
        ),
        row!(["CACHE.SET", "e1", "v", "EX", "1e3"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", b"1\x000"], NOT_INT),
        row!(["CACHE.SET", "e1", "v", "EX", b"\xff"], NOT_INT),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "99999999999999999999"],
            NOT_INT
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "9223372036854775808"],
            NOT_INT
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "-9223372036854775809"],
            NOT_INT
        ),
        row!(["CACHE.SET", "e1", "v", "PX", "10ms"], NOT_INT),
        row!(["CACHE.SET", "new", "v", "PX", "abc"], NOT_INT),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "GRACE", "abc"],
            NOT_INT
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "GRACE", "1.0"],
            NOT_INT
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "DELTA", "abc"],
            NOT_INT
        ),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "DELTA", ""], NOT_INT),
        // Zero and negative times.
        row!(["CACHE.SET", "e1", "v", "EX", "0"], "ERR invalid EX time"),
        row!(["CACHE.SET", "e1", "v", "EX", "-1"], "ERR invalid EX time"),
        row!(["CACHE.SET", "new", "v", "EX", "-1"], "ERR invalid EX time"),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "-9223372036854775808"],
            "ERR invalid EX time"
        ),
        row!(["CACHE.SET", "e1", "v", "PX", "0"], "ERR invalid PX time"),
        row!(["CACHE.SET", "e1", "v", "PX", "-1"], "ERR invalid PX time"),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "-9223372036854775808"],
            "ERR invalid PX time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "GRACE", "-1"],
            "ERR invalid GRACE time"
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "EX",
                "10",
                "GRACE",
                "-9223372036854775808"
            ],
            "ERR invalid GRACE time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "DELTA", "-1"],
            "ERR invalid DELTA time"
        ),
        row!(
            ["CACHE.SET", "new", "v", "PX", "10", "DELTA", "-5"],
            "ERR invalid DELTA time"
        ),
        // Overflow: of EX in ms, and of a time added to now.
        row!(
            ["CACHE.SET", "e1", "v", "EX", I64_MAX],
            "ERR invalid EX time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "9223372036854776"],
            "ERR invalid EX time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "9223372036854775"],
            "ERR invalid EX time|ERR invalid EX/PX time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", I64_MAX],
            "ERR invalid PX time|ERR invalid EX/PX time"
        ),
        row!(
            ["CACHE.SET", "new", "v", "PX", I64_MAX],
            "ERR invalid PX time|ERR invalid EX/PX time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", px_near_max.as_str()],
            "ERR invalid PX time|ERR invalid EX/PX time"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "1000", "GRACE", I64_MAX],
            "ERR invalid GRACE time"
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "EX",
                "1",
                "GRACE",
                "9223372036854775000"
            ],
            "ERR invalid GRACE time"
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "PX",
                "1000000",
                "GRACE",
                grace_overflowing.as_str()
            ],
            "ERR invalid GRACE time"
        ),
        // GRACE and DELTA are stored in 32 bits.
        row!(
            ["CACHE.SET", "e1", "v", "PX", "100", "GRACE", "4294967296"],
            "ERR invalid GRACE time: at most 4294967295 ms (about 49.7 days)"
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "100", "DELTA", "4294967296"],
            "ERR invalid DELTA time: at most 4294967295 ms (about 49.7 days)"
        ),
        // Unknown options.
        row!(["CACHE.SET", "e1", "v", "EX", "10", "NX"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "XX"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "KEEPTTL"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "GET"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "FOO", "1"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "FOO", "1", "EX", "10"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "TAGS", "t"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "LEASE", "10"], SYNTAX),
        row!(["CACHE.SET", "new", "v", "EXAT", "99999999999"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "10", "EX"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", ""], SYNTAX),
        // Options without their value.
        row!(["CACHE.SET", "e1", "v", "EX"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "PX"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "GRACE"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "DELTA"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "TOKEN"], SYNTAX),
        row!(["CACHE.SET", "e1", "v", "EX", "10", "EX"], SYNTAX),
        // Repeated options, and EX with PX.
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "EX", "20"],
            REPEATED_TTL
        ),
        row!(
            ["CACHE.SET", "e1", "v", "ex", "10", "Ex", "10"],
            REPEATED_TTL
        ),
        row!(
            ["CACHE.SET", "e1", "v", "PX", "10", "PX", "20"],
            REPEATED_TTL
        ),
        row!(
            ["CACHE.SET", "e1", "v", "EX", "10", "PX", "20"],
            REPEATED_TTL
        ),
        row!(
            ["CACHE.SET", "new", "v", "PX", "10", "EX", "20"],
            REPEATED_TTL
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "EX",
                "10",
                "GRACE",
                "1",
                "GRACE",
                "2"
            ],
            "ERR syntax error, GRACE given more than once"
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "GRACE",
                "1",
                "EX",
                "10",
                "grace",
                "1"
            ],
            "ERR syntax error, GRACE given more than once"
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "EX",
                "10",
                "DELTA",
                "1",
                "DELTA",
                "2"
            ],
            "ERR syntax error, DELTA given more than once"
        ),
        row!(
            [
                "CACHE.SET",
                "e3",
                "v",
                "EX",
                "10",
                "TOKEN",
                "5",
                "TOKEN",
                "5"
            ],
            "ERR syntax error, TOKEN given more than once"
        ),
        // Bad tokens.
        row!(["CACHE.SET", "e3", "v", "EX", "10", "TOKEN", "0"], TOKEN),
        row!(["CACHE.SET", "e3", "v", "EX", "10", "TOKEN", "-1"], TOKEN),
        row!(
            ["CACHE.SET", "pending", "v", "EX", "10", "TOKEN", "abc"],
            TOKEN
        ),
        row!(["CACHE.SET", "e3", "v", "EX", "10", "TOKEN", ""], TOKEN),
        row!(["CACHE.SET", "e3", "v", "EX", "10", "TOKEN", "1.5"], TOKEN),
        row!(
            [
                "CACHE.SET",
                "e3",
                "v",
                "EX",
                "10",
                "TOKEN",
                "-9223372036854775808"
            ],
            TOKEN
        ),
        row!(
            [
                "CACHE.SET",
                "e3",
                "v",
                "EX",
                "10",
                "TOKEN",
                "99999999999999999999"
            ],
            TOKEN
        ),
        // Keys of another type.
        row!(["CACHE.SET", "str", "v", "EX", "10"], WRONGTYPE),
        row!(
            ["CACHE.SET", "list", "v", "PX", "10", "GRACE", "5"],
            WRONGTYPE
        ),
        row!(
            ["CACHE.SET", "str", "v", "EX", "10", "TOKEN", "5"],
            WRONGTYPE
        ),
        row!(
            ["CACHE.SET", "list", "", "EX", "10", "DELTA", "0"],
            WRONGTYPE
        ),
    ];
    check_table(&mut c, &rows);
    fixture_intact(&mut c);
}

/// A time that overflows is blamed on the option that overflows: `PX 9223372036854775807`
/// is a bad PX, also when a grace period (given or configured) is added after it.
#[test]
fn cache_set_overflow_error_names_the_ttl() {
    let (_s, mut c) = fixture();
    const TTL_OVERFLOW: &str = "ERR invalid PX time|ERR invalid EX/PX time";
    // A configured grace period must not change which option is blamed.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("cache.grace-ms")
        .arg("1000")
        .query(&mut c)
        .unwrap();
    let rows = vec![
        row!(
            ["CACHE.SET", "e1", "v", "PX", I64_MAX, "GRACE", "5"],
            TTL_OVERFLOW
        ),
        row!(
            [
                "CACHE.SET",
                "e1",
                "v",
                "EX",
                "9223372036854775",
                "GRACE",
                "5"
            ],
            "ERR invalid EX time|ERR invalid EX/PX time"
        ),
        row!(["CACHE.SET", "e1", "v", "PX", I64_MAX], TTL_OVERFLOW),
        row!(["CACHE.SET", "new", "v", "PX", I64_MAX], TTL_OVERFLOW),
    ];
    check_table(&mut c, &rows);
}

#[test]
fn cache_get_bad_input() {
    let (_s, mut c) = fixture();
    const ARITY: &str = "ERR wrong number of arguments for 'cache.get' command";
    let rows = vec![
        row!(["CACHE.GET"], ARITY),
        row!(["CACHE.GET", "e1", "e2"], ARITY),
        row!(["cache.get", "new", "new"], ARITY),
        row!(["CACHE.GET", "str"], WRONGTYPE),
        row!(["CACHE.GET", "list"], WRONGTYPE),
    ];
    check_table(&mut c, &rows);
    fixture_intact(&mut c);
}

#[test]
fn cache_getx_bad_input() {
    let (_s, mut c) = fixture();
    const ARITY: &str = "ERR wrong number of arguments for 'cache.getx' command";
    const LEASE: &str = "ERR invalid LEASE time";
    let lease_near_max = (i64::MAX - 1_000_000).to_string();
    let mut rows = vec![
        row!(["CACHE.GETX"], ARITY),
        // Options without their value; unknown options (a second key reads as one).
        row!(["CACHE.GETX", "e1", "BETA"], SYNTAX),
        row!(["CACHE.GETX", "e1", "LEASE"], SYNTAX),
        row!(["CACHE.GETX", "new", "LEASE"], SYNTAX),
        row!(["CACHE.GETX", "e1", "BETA", "1", "LEASE"], SYNTAX),
        row!(["CACHE.GETX", "e1", "FOO", "1"], SYNTAX),
        row!(["CACHE.GETX", "e1", "PX", "100"], SYNTAX),
        row!(["CACHE.GETX", "e1", "WAIT", "100"], SYNTAX),
        row!(["CACHE.GETX", "e1", "e2"], SYNTAX),
        row!(["CACHE.GETX", "new", "e2"], SYNTAX),
        row!(
            ["CACHE.GETX", "e1", "BETA", "1", "LEASE", "100", "EXTRA"],
            SYNTAX
        ),
        // LEASE: a positive integer that does not overflow when added to now.
        row!(["CACHE.GETX", "e1", "LEASE", "0"], LEASE),
        row!(["CACHE.GETX", "new", "LEASE", "0"], LEASE),
        row!(["CACHE.GETX", "pending", "LEASE", "-1"], LEASE),
        row!(["CACHE.GETX", "e1", "LEASE", "-9223372036854775808"], LEASE),
        row!(["CACHE.GETX", "new", "LEASE", I64_MAX], LEASE),
        row!(
            ["CACHE.GETX", "e1", "LEASE", I64_MAX, "BETA", "1e300"],
            LEASE
        ),
        row!(
            ["CACHE.GETX", "new", "LEASE", lease_near_max.as_str()],
            LEASE
        ),
        row!(["CACHE.GETX", "e1", "LEASE", "abc"], NOT_INT),
        row!(["CACHE.GETX", "new", "LEASE", "1.5"], NOT_INT),
        row!(["CACHE.GETX", "new", "LEASE", ""], NOT_INT),
        row!(["CACHE.GETX", "new", "LEASE", "0100"], NOT_INT),
        row!(
            ["CACHE.GETX", "new", "LEASE", "99999999999999999999"],
            NOT_INT
        ),
        // Repeated options.
        row!(
            ["CACHE.GETX", "e1", "BETA", "1", "BETA", "2"],
            "ERR syntax error, BETA given more than once"
        ),
        row!(
            ["CACHE.GETX", "new", "LEASE", "100", "lease", "100"],
            "ERR syntax error, LEASE given more than once"
        ),
        row!(
            [
                "CACHE.GETX",
                "e1",
                "LEASE",
                "100",
                "BETA",
                "1",
                "LEASE",
                "200"
            ],
            "ERR syntax error, LEASE given more than once"
        ),
        // Keys of another type.
        row!(["CACHE.GETX", "str"], WRONGTYPE),
        row!(["CACHE.GETX", "list"], WRONGTYPE),
        row!(
            ["CACHE.GETX", "str", "BETA", "1e300", "LEASE", "100"],
            WRONGTYPE
        ),
    ];
    // BETA: a positive finite decimal.
    for beta in [
        "0", "-0", "0.0", "-1", "-0.5", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "+inf",
        "1e999", "-1e999", "1e-400", "abc", "", " 1", "1 ", "1,5", "0x1p3",
    ] {
        for key in ["e1", "new", "pending"] {
            rows.push(Row {
                args: args!["CACHE.GETX", key, "BETA", beta],
                expect: BETA,
            });
        }
    }
    rows.push(row!(["CACHE.GETX", "e1", "BETA", b"1\x00"], BETA));
    rows.push(row!(["CACHE.GETX", "e1", "BETA", b"\xff"], BETA));
    check_table(&mut c, &rows);
    fixture_intact(&mut c);
}

#[test]
fn cache_del_bad_input() {
    let (_s, mut c) = fixture();
    const ARITY: &str = "ERR wrong number of arguments for 'cache.del' command";
    let rows = vec![
        row!(["CACHE.DEL"], ARITY),
        row!(["CACHE.DEL", "str"], WRONGTYPE),
        row!(["CACHE.DEL", "list"], WRONGTYPE),
        // A key of another type anywhere: nothing at all is deleted.
        row!(["CACHE.DEL", "e1", "str"], WRONGTYPE),
        row!(["CACHE.DEL", "e1", "str", "e2"], WRONGTYPE),
        row!(["CACHE.DEL", "list", "e1"], WRONGTYPE),
        row!(
            ["CACHE.DEL", "e1", "e2", "e3", "pending", "list"],
            WRONGTYPE
        ),
        row!(["CACHE.DEL", "missing", "str"], WRONGTYPE),
        row!(["CACHE.DEL", "e3", "e3", "str", "e3"], WRONGTYPE),
        row!(
            ["cache.del", "pending", "missing", "e2", "list", "str"],
            WRONGTYPE
        ),
    ];
    check_table(&mut c, &rows);
    fixture_intact(&mut c);
}

const APPLY_ARITY: &str = "ERR wrong number of arguments for 'cache.apply' command";
const INTERNAL_ONLY: &str = "ERR CACHE.APPLY is internal: it is accepted only from the \
                             replication stream and while loading the AOF$";

/// `CACHE.APPLY` records that must be refused, each with its error, for keys of the fixture
/// (`e1` and `pending` entries, `str` and `list` keys of other types, `new` absent).
fn bad_apply_rows(now: i64) -> Vec<Row> {
    const ARITY: &str = APPLY_ARITY;
    const MISMATCH: &str = "ERR bad entry record: value does not match the header";
    let tags: &[&[u8]] = &[b"user:1", b"\0bin", b""];
    let full = Record::new(now, HAS_VALUE | HAS_LEASE, tags).encode();
    let valued = Record::new(now, HAS_VALUE, &[]).encode();
    let pending = Record::new(now, HAS_LEASE, &[]).encode();
    let keep = Record::new(now, KEEP_VALUE | HAS_LEASE, &[]).encode();
    let with = |f: &dyn Fn(&mut Record)| {
        let mut h = Record::new(now, HAS_VALUE, tags);
        f(&mut h);
        h.encode()
    };
    let mut rows = vec![
        row!(["CACHE.APPLY"], ARITY),
        row!(["CACHE.APPLY", "new"], ARITY),
        row!(["CACHE.APPLY", "e1"], ARITY),
        row!(["CACHE.APPLY", "new", full.clone(), "v", "extra"], ARITY),
        row!(["CACHE.APPLY", "e1", valued.clone(), "v", "v", "v"], ARITY),
        // Garbage headers.
        row!(["CACHE.APPLY", "new", ""], BAD_RECORD),
        row!(["CACHE.APPLY", "e1", "", "v"], BAD_RECORD),
        row!(["CACHE.APPLY", "e1", "garbage", "v"], BAD_RECORD),
        row!(["CACHE.APPLY", "e1", b"\x01"], BAD_RECORD),
        row!(["CACHE.APPLY", "e1", b"\x01\x01", "v"], BAD_RECORD),
        row!(["CACHE.APPLY", "e1", vec![0u8; 64], "v"], BAD_RECORD),
        row!(["CACHE.APPLY", "e1", vec![0xffu8; 64], "v"], BAD_RECORD),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.format = 0), "v"],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.format = 2), "v"],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.format = 255), "v"],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.flags = 8), "v"],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.flags = 0x81), "v"],
            BAD_RECORD
        ),
        row!(
            [
                "CACHE.APPLY",
                "e1",
                with(&|h| h.flags = HAS_VALUE | KEEP_VALUE),
                "v"
            ],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.grace_ms = -1), "v"],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.delta_ms = -1), "v"],
            BAD_RECORD
        ),
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.grace_ms = i64::MIN), "v"],
            BAD_RECORD
        ),
        // The lease flag without the lease's bytes, and lease bytes without the flag.
        row!(
            ["CACHE.APPLY", "e1", with(&|h| h.flags |= HAS_LEASE), "v"],
            BAD_RECORD
        ),
        row!(
            [
                "CACHE.APPLY",
                "e1",
                with(&|h| h.lease = Some((1, now, now + 1000))),
                "v"
            ],
            BAD_RECORD
        ),
        // One byte too many.
        row!(
            ["CACHE.APPLY", "e1", [full.clone(), vec![0]].concat(), "v"],
            BAD_RECORD
        ),
    ];
    // A tag count or a tag length larger than the bytes there.
    let mut huge_count = Record::new(now, HAS_VALUE, &[]).encode();
    let n = huge_count.len();
    huge_count[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    rows.push(row!(["CACHE.APPLY", "e1", huge_count, "v"], BAD_RECORD));
    let mut count_plus_one = Record::new(now, HAS_VALUE, tags).encode();
    let at = 2 + 32;
    count_plus_one[at..at + 4].copy_from_slice(&(tags.len() as u32 + 1).to_le_bytes());
    rows.push(row!(["CACHE.APPLY", "e1", count_plus_one, "v"], BAD_RECORD));
    let mut long_tag = Record::new(now, HAS_VALUE, &[b"abc"]).encode();
    long_tag[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    rows.push(row!(["CACHE.APPLY", "e1", long_tag, "v"], BAD_RECORD));
    // Every truncation of a full header.
    for len in 0..full.len() {
        rows.push(Row {
            args: args!["CACHE.APPLY", "e1", &full[..len], "v"],
            expect: BAD_RECORD,
        });
    }
    // A header that does not match the value argument.
    rows.extend([
        row!(["CACHE.APPLY", "new", full.clone()], MISMATCH),
        row!(["CACHE.APPLY", "e1", valued.clone()], MISMATCH),
        row!(["CACHE.APPLY", "new", pending.clone(), "v"], MISMATCH),
        row!(["CACHE.APPLY", "pending", pending.clone(), ""], MISMATCH),
        row!(["CACHE.APPLY", "e1", keep.clone(), "v"], MISMATCH),
        // Keys of another type.
        row!(["CACHE.APPLY", "str", full.clone(), "v"], WRONGTYPE),
        row!(["CACHE.APPLY", "list", valued.clone(), "v"], WRONGTYPE),
        row!(["CACHE.APPLY", "str", pending.clone()], WRONGTYPE),
        row!(["CACHE.APPLY", "list", keep.clone()], WRONGTYPE),
    ]);
    rows
}

/// Well-formed `CACHE.APPLY` records a primary could send, for keys of the fixture.
fn good_apply_rows(now: i64) -> Vec<Vec<Vec<u8>>> {
    let tags: &[&[u8]] = &[b"user:1", b"\0bin", b""];
    let full = Record::new(now, HAS_VALUE | HAS_LEASE, tags).encode();
    let keep = Record::new(now, KEEP_VALUE | HAS_LEASE, &[]).encode();
    vec![
        args!["CACHE.APPLY", "new", full.clone(), "v"],
        args!["CACHE.APPLY", "e1", full, "v"],
        args!["CACHE.APPLY", "e1", keep.clone()],
        args!["CACHE.APPLY", "pending", keep],
    ]
}

/// From a client, `CACHE.APPLY` is refused before anything is parsed, whatever the record,
/// and changes nothing: not the keyspace, not the id clock (`last_id` is watched).
#[test]
fn cache_apply_from_a_client_is_refused() {
    let (_s, mut c) = fixture();
    let now = server_ms(&mut c);
    let mut rows: Vec<Row> = bad_apply_rows(now)
        .into_iter()
        // Redis itself answers a call with too few arguments (arity -3), before the module.
        .map(|r| Row {
            expect: if r.args.len() < 3 {
                APPLY_ARITY
            } else {
                INTERNAL_ONLY
            },
            args: r.args,
        })
        .collect();
    let good = good_apply_rows(now);
    rows.extend(good.iter().map(|a| Row {
        args: a.clone(),
        expect: INTERNAL_ONLY,
    }));
    // A record with ids far ahead of the clock, as a forger would send.
    let mut ahead = Record::new(now, HAS_VALUE, &[]).with_lease((1 << 53) - 2, now, now + HOUR_MS);
    ahead.version = (1 << 53) - 1;
    rows.push(row!(
        ["CACHE.APPLY", "e1", ahead.encode(), "v"],
        INTERNAL_ONLY
    ));
    check_table(&mut c, &rows);

    // Inside MULTI and from a script: the same.
    let before = state(&mut c);
    let (apply, record) = (&good[0][0], &good[0][2]);
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("CACHE.APPLY")
        .arg("new")
        .arg(record)
        .arg("v")
        .query(&mut c)
        .unwrap_or_else(|e| vec![Value::SimpleString(format!("{e}"))]);
    assert!(
        matches!(&replies[..], [Value::SimpleString(e)] if e.contains("is internal")),
        "MULTI: {replies:?}"
    );
    let eval = args![
        "EVAL",
        "return redis.call(KEYS[1], KEYS[2], ARGV[1], ARGV[2])",
        "2",
        apply.clone(),
        "new",
        record.clone(),
        "v"
    ];
    let r = call(&mut c, &eval);
    assert!(
        matches!(&r, Err(e) if e.contains("is internal")),
        "EVAL: {r:?}"
    );
    assert_eq!(before, state(&mut c), "MULTI or EVAL changed something");
    fixture_intact(&mut c);
}

/// The fixture as an AOF: what `fixture()` makes, as `CACHE.APPLY` records and plain commands.
fn fixture_aof(now: i64) -> Vec<Vec<Vec<u8>>> {
    let valued = Record::new(now, HAS_VALUE, &[]).encode();
    let pending = Record::new(now, HAS_LEASE, &[]).encode();
    vec![
        args!["CACHE.APPLY", "e1", valued, "value one"],
        args!["CACHE.APPLY", "pending", pending],
        args!["SET", "str", "plain"],
        args!["RPUSH", "list", "a", "b"],
    ]
}

/// Where `CACHE.APPLY` is accepted (replaying the AOF), a bad record answers its error (the
/// server logs it) and changes nothing: the server loads the rest, and ends up as a server
/// that loaded only the good records. The records that decode are applied.
#[test]
fn cache_apply_bad_records_in_the_aof_are_refused() {
    let mut reference = Server::start();
    let mut s = Server::start();
    let now = server_ms(&mut s.conn());
    // Only calls of the right arity: an AOF never holds others, and Valkey refuses to load
    // one that does (Redis 7.0 passes it on to the command, which answers its arity error).
    let bad: Vec<Row> = bad_apply_rows(now)
        .into_iter()
        .filter(|r| (3..=4).contains(&r.args.len()))
        .collect();
    let good = good_apply_rows(now);
    // After each bad record, a marker whose error is like no other: the log then tells which
    // record answered which error, and a record that answered none.
    let marker = args!["CACHE.SET", "marker", "v"];
    const MARKER: &str = "ERR syntax error, EX or PX is required";
    let mut with_bad = fixture_aof(now);
    for r in &bad {
        with_bad.extend([r.args.clone(), marker.clone()]);
    }
    with_bad.extend(good.iter().cloned());
    let mut clean = fixture_aof(now);
    clean.extend(good.iter().cloned());
    for (server, aof) in [(&mut s, &with_bad), (&mut reference, &clean)] {
        server.shutdown(false);
        write_aof(server.dir.path(), aof);
        server.restart_with(false, &["--appendonly", "yes"]);
    }
    let errors = aof_load_errors(&s.log());
    let answers: Vec<&[String]> = errors.split(|e| e == MARKER).collect();
    assert_eq!(answers.len(), bad.len() + 1, "markers in {errors:#?}");
    let mut failures = Vec::new();
    for (row, got) in bad.iter().zip(&answers) {
        match got {
            [e] if error_matches(e, row.expect) => {}
            _ => failures.push(format!(
                "{}\n    got errors {got:?}\n    expected  {:?}",
                show(&row.args),
                row.expect
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(aof_load_errors(&reference.log()), Vec::<String>::new());
    let (mut c, mut rc) = (s.conn(), reference.conn());
    assert_eq!(
        state(&mut c),
        state(&mut rc),
        "bad records changed something"
    );
    // The good records took effect: `new` has the record's tags and lease.
    let tags: Vec<Vec<u8>> =
        redis::from_redis_value(&inspect_field(&mut c, "new", "tags").unwrap()).unwrap();
    assert_eq!(tags, [&b"user:1"[..], b"\0bin", b""]);
}

#[test]
fn cache_inspect_bad_input() {
    let (_s, mut c) = fixture();
    const ARITY: &str = "ERR wrong number of arguments for 'cache.inspect' command";
    let rows = vec![
        row!(["CACHE.INSPECT"], ARITY),
        row!(["CACHE.INSPECT", "e1", "e2"], ARITY),
        row!(["cache.inspect", "new", "x", "y"], ARITY),
        row!(["CACHE.INSPECT", "str"], WRONGTYPE),
        row!(["CACHE.INSPECT", "list"], WRONGTYPE),
    ];
    check_table(&mut c, &rows);
    fixture_intact(&mut c);
}

// ---------------------------------------------------------------------------------------------
// Part 2: RESTORE of truncated and corrupted payloads with a valid checksum
// ---------------------------------------------------------------------------------------------

/// A DUMP payload: `<rdb bytes> <2-byte RDB version LE> <8-byte CRC64 LE>`.
struct Dump {
    body: Vec<u8>,
    rdb_version: [u8; 2],
}

impl Dump {
    fn parse(payload: &[u8]) -> Dump {
        assert!(payload.len() > 10, "short DUMP payload");
        let n = payload.len();
        let dump = Dump {
            body: payload[..n - 10].to_vec(),
            rdb_version: [payload[n - 10], payload[n - 9]],
        };
        // The recomputed trailer must be the one the server wrote.
        assert_eq!(
            seal(&dump.body, dump.rdb_version),
            payload,
            "recomputed DUMP checksum differs from the server's"
        );
        dump
    }

    fn seal(&self, body: &[u8]) -> Vec<u8> {
        seal(body, self.rdb_version)
    }
}

/// An RDB length at `pos`: `Ok(len)`, or `Err(enc)` for a special encoding, and its size.
fn rdb_len(buf: &[u8], pos: usize) -> Option<(Result<u64, u8>, usize)> {
    let b = *buf.get(pos)?;
    Some(match b >> 6 {
        0 => (Ok(u64::from(b & 0x3f)), 1),
        1 => (
            Ok((u64::from(b & 0x3f) << 8) | u64::from(*buf.get(pos + 1)?)),
            2,
        ),
        2 if b == 0x80 => {
            let v = buf.get(pos + 1..pos + 5)?;
            (Ok(u64::from(u32::from_be_bytes(v.try_into().ok()?))), 5)
        }
        2 if b == 0x81 => {
            let v = buf.get(pos + 1..pos + 9)?;
            (Ok(u64::from_be_bytes(v.try_into().ok()?)), 9)
        }
        2 => return None,
        _ => (Err(b & 0x3f), 1),
    })
}

/// Where a length lives in the body: `body[start..end]`, and its value.
#[derive(Clone, Copy, Debug)]
struct LenField {
    start: usize,
    end: usize,
    value: u64,
}

/// A module value string in a DUMP body.
#[derive(Debug)]
enum StrField {
    /// A plain string: its length, then `len` bytes at `data`.
    Raw { len: LenField, data: usize },
    /// LZF: compressed and uncompressed lengths.
    Lzf { clen: LenField, ulen: LenField },
    /// An integer-encoded string.
    Int,
}

/// The module strings (opcode `5`) of a `RDB_TYPE_MODULE_2` body, up to the EOF opcode.
fn module_strings(body: &[u8]) -> Vec<StrField> {
    assert_eq!(body[0], 7, "RDB_TYPE_MODULE_2");
    assert_eq!(body[1], 0x81, "64-bit module id");
    let mut pos = 10;
    let mut out = Vec::new();
    loop {
        let (opcode, n) = rdb_len(body, pos).expect("opcode");
        pos += n;
        match opcode {
            Ok(0) => break,
            Ok(5) => {}
            other => panic!("unexpected module opcode {other:?}"),
        }
        let field = |pos: usize| {
            let (v, n) = rdb_len(body, pos).expect("length");
            LenField {
                start: pos,
                end: pos + n,
                value: v.expect("a plain length"),
            }
        };
        match rdb_len(body, pos).expect("string") {
            (Ok(len), n) => {
                let len = LenField {
                    start: pos,
                    end: pos + n,
                    value: len,
                };
                out.push(StrField::Raw { len, data: len.end });
                pos = len.end + len.value as usize;
            }
            (Err(3), _) => {
                let clen = field(pos + 1);
                let ulen = field(clen.end);
                out.push(StrField::Lzf { clen, ulen });
                pos = ulen.end + clen.value as usize;
            }
            (Err(enc), _) => {
                out.push(StrField::Int);
                pos += 1 + [1, 2, 4][enc as usize];
            }
        }
    }
    assert_eq!(pos, body.len(), "module value ends the body");
    out
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Outcome counts of a fuzz run.
#[derive(Default, Debug)]
struct Tally {
    refused: usize,
    accepted: usize,
    /// Accepted variants by kind (the description without its numbers).
    accepted_kinds: std::collections::BTreeMap<String, usize>,
}

/// Fails the test when the server stopped answering, with the end of its log.
fn server_lost(s: &mut Server, what: &str, msg: &str) -> ! {
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    panic!(
        "{what}: server lost ({msg}), process alive: {}\nend of the server log:\n{tail}",
        s.is_alive()
    )
}

/// RESTOREs `payload` into a scratch key. The reply must be an error or OK, and the server
/// must still answer. An accepted payload must then be usable: reads answer without an
/// internal error, and its own DUMP restores again.
fn restore_variant(
    s: &mut Server,
    c: &mut Connection,
    what: &str,
    payload: &[u8],
    t: &mut Tally,
) -> bool {
    let reply = call(c, &cmd!["RESTORE", "fuzz", "0", payload, "REPLACE"]);
    match &reply {
        Err(msg) if msg.starts_with("IO:") => server_lost(s, what, msg),
        Err(msg) => {
            assert!(msg.starts_with("ERR"), "{what}: unexpected error {msg:?}");
            t.refused += 1;
        }
        Ok(v) => {
            assert_eq!(*v, Value::Okay, "{what}: RESTORE replied {v:?}");
            t.accepted += 1;
            let kind: String = what
                .split_once(": ")
                .map_or(what, |(_, k)| k)
                .chars()
                .filter(|ch| !ch.is_ascii_digit())
                .collect();
            *t.accepted_kinds.entry(kind).or_default() += 1;
            for probe in [
                args!["CACHE.INSPECT", "fuzz"],
                args!["CACHE.GET", "fuzz"],
                args!["CACHE.GETX", "fuzz", "LEASE", "100"],
                args!["CACHE.GETX", "fuzz", "BETA", "1e300"],
                args!["PTTL", "fuzz"],
                args!["MEMORY", "USAGE", "fuzz"],
            ] {
                match call(c, &probe) {
                    Err(msg) if msg.starts_with("IO:") => server_lost(s, what, &msg),
                    Err(msg) => assert!(
                        !msg.contains("internal error"),
                        "{what}: {} answered {msg:?}",
                        show(&probe)
                    ),
                    Ok(_) => {}
                }
            }
            if let Ok(Value::BulkString(again)) = call(c, &cmd!["DUMP", "fuzz"]) {
                let r = call(c, &cmd!["RESTORE", "fuzz2", "0", again, "REPLACE"]);
                assert_eq!(r, Ok(Value::Okay), "{what}: its own DUMP does not restore");
            }
            let _ = call(c, &cmd!["DEL", "fuzz", "fuzz2"]);
        }
    }
    match call(c, &cmd!["PING"]) {
        Ok(Value::SimpleString(p)) if p == "PONG" => {}
        other => server_lost(s, what, &format!("PING answered {other:?}")),
    }
    reply.is_ok()
}

/// DUMPs of entries of every shape: with and without value, lease and tags; with a value that
/// is empty, integer-like, or long enough to be compressed; with RDB compression on and off.
fn sample_dumps(c: &mut Connection) -> Vec<(String, Dump)> {
    let now = server_ms(c);
    set(c, "plain", b"hello world, a cached value", &["EX", "3600"]).unwrap();
    set(c, "int", b"12345", &["EX", "3600"]).unwrap();
    set(c, "empty", b"", &["EX", "3600", "GRACE", "1000"]).unwrap();
    set(c, "long", &[b'x'; 300], &["EX", "3600"]).unwrap();
    let (_, status, _) = getx(c, "pending", &["LEASE", "3600000"]);
    assert_eq!(status, "MISS");
    set(
        c,
        "leased",
        b"leased value",
        &["EX", "3600", "DELTA", "1000"],
    )
    .unwrap();
    let (_, status, _) = getx(c, "leased", &["BETA", "1e300", "LEASE", "3600000"]);
    assert_eq!(status, "REFRESH");
    let tags: &[&[u8]] = &[b"user:1", b"\0bin", b""];
    for (key, flags, value) in [
        ("tagged", HAS_VALUE, Some(&b"tagged value"[..])),
        ("tagged-leased", HAS_VALUE | HAS_LEASE, Some(&b"v"[..])),
        ("tagged-pending", HAS_LEASE, None),
    ] {
        restore(c, key, &Record::new(now, flags, tags), value).unwrap();
    }
    let keys = [
        "plain",
        "int",
        "empty",
        "long",
        "pending",
        "leased",
        "tagged",
        "tagged-leased",
        "tagged-pending",
    ];
    let mut out = Vec::new();
    for compression in ["yes", "no"] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("rdbcompression")
            .arg(compression)
            .query(c)
            .unwrap();
        for key in keys {
            let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(c).unwrap();
            let dump = Dump::parse(&payload);
            if out
                .iter()
                .all(|(_, d): &(String, Dump)| d.body != dump.body)
            {
                out.push((format!("{key} (rdbcompression {compression})"), dump));
            }
        }
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdbcompression")
        .arg("yes")
        .query(c)
        .unwrap();
    out
}

/// A spoiled payload: what was done, the payload, and whether it can never be valid.
struct Variant {
    what: String,
    payload: Vec<u8>,
    must_refuse: bool,
}

/// Every way to spoil a DUMP body that this test tries.
///
/// Truncations and flips may happen to be valid: RESTORE reads the payload up to the
/// checksum, so a body cut short can take its last bytes from the trailer, and a flip inside
/// the value or a time is still an entry. Trailing bytes after the EOF marker are ignored by
/// Redis. A wrong encoding version, the old module serialization and lengths far beyond the
/// payload can never be valid.
fn spoiled(name: &str, dump: &Dump) -> Vec<Variant> {
    let body = &dump.body;
    let mut out = Vec::new();
    let mut push = |what: String, b: &[u8], must_refuse: bool| {
        out.push(Variant {
            what: format!("{name}: {what}"),
            payload: dump.seal(b),
            must_refuse,
        })
    };
    // Truncated at every length past the type byte.
    for len in 1..body.len() {
        push(format!("truncated to {len}"), &body[..len], false);
    }
    // Flipped bits and bytes everywhere past the type byte (module id, opcodes, lengths,
    // entry header, value, EOF marker).
    for pos in 1..body.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = body.clone();
            b[pos] ^= mask;
            push(format!("byte {pos} ^= {mask:#04x}"), &b, false);
        }
    }
    // The module type's encoding version (low 10 bits of the module id).
    for encver in [0u16, 2, 3, 512, 1023] {
        let mut b = body.clone();
        b[8] = (b[8] & !3) | (encver >> 8) as u8;
        b[9] = encver as u8;
        push(format!("encoding version {encver}"), &b, true);
    }
    // The older module serialization (no opcodes).
    let mut b = body.clone();
    b[0] = 6;
    push("RDB_TYPE_MODULE".into(), &b, true);
    // Bytes after the EOF marker.
    push("trailing byte".into(), &[&body[..], &[0]].concat(), false);
    push(
        "trailing string".into(),
        &[&body[..], &[5, 1, b'x', 0]].concat(),
        false,
    );
    // Lengths far larger than the payload, in every width, and lengths a little off.
    let huge: Vec<Vec<u8>> = vec![
        vec![0x7f, 0xff],
        [&[0x80][..], &u32::MAX.to_be_bytes()].concat(),
        [&[0x80][..], &0x8000_0000u32.to_be_bytes()].concat(),
        [&[0x81][..], &u64::MAX.to_be_bytes()].concat(),
        [&[0x81][..], &(1u64 << 40).to_be_bytes()].concat(),
        [&[0x81][..], &(i64::MAX as u64).to_be_bytes()].concat(),
    ];
    let mut replace_len = |what: &str, f: LenField| {
        let near = [f.value + 1, f.value.saturating_sub(1), 0]
            .into_iter()
            .filter(|&v| v < 64 && v != f.value && f.end - f.start == 1)
            .map(|v| (vec![v as u8], false));
        for (l, must_refuse) in huge.iter().map(|l| (l.clone(), true)).chain(near) {
            let b = [&body[..f.start], &l[..], &body[f.end..]].concat();
            push(
                format!("{what} length {} -> {l:02x?}", f.value),
                &b,
                must_refuse,
            );
        }
    };
    for (i, field) in module_strings(body).into_iter().enumerate() {
        match field {
            StrField::Raw { len, .. } => replace_len(&format!("string {i}"), len),
            StrField::Lzf { clen, ulen } => {
                replace_len(&format!("string {i} compressed"), clen);
                replace_len(&format!("string {i} uncompressed"), ulen);
            }
            StrField::Int => {}
        }
    }
    out
}

/// Offset of the entry header's first byte in an uncompressed DUMP body.
fn raw_header_at(body: &[u8]) -> usize {
    match module_strings(body).first() {
        Some(StrField::Raw { data, .. }) => *data,
        other => panic!("entry header is not a plain string: {other:?}"),
    }
}

#[test]
fn restore_of_spoiled_payloads_is_refused_and_the_server_stays_up() {
    let mut s = Server::start();
    let mut c = s.conn();
    let dumps = sample_dumps(&mut c);
    assert!(dumps.len() >= 12, "{} distinct dumps", dumps.len());
    let mut tally = Tally::default();
    let mut total = 0;
    let mut wrongly_accepted = Vec::new();
    for (name, dump) in &dumps {
        // The unmodified payload restores.
        let r = call(&mut c, &cmd!["RESTORE", "fuzz", "0", dump.seal(&dump.body)]);
        assert_eq!(r, Ok(Value::Okay), "{name}: the original does not restore");
        let _ = call(&mut c, &cmd!["DEL", "fuzz"]);
        for v in spoiled(name, dump) {
            let accepted = restore_variant(&mut s, &mut c, &v.what, &v.payload, &mut tally);
            if accepted && v.must_refuse {
                wrongly_accepted.push(v.what.clone());
            }
            total += 1;
            if total % 500 == 0 {
                assert!(s.is_alive(), "server died by {}", v.what);
            }
        }
    }
    assert!(s.is_alive(), "server process died:\n{}", s.log());
    assert!(total > 1000, "only {total} variants");
    assert!(
        wrongly_accepted.is_empty(),
        "RESTORE accepted payloads that cannot be valid:\n{}",
        wrongly_accepted.join("\n")
    );
    assert!(tally.refused > total / 3, "{tally:?} of {total}");
    eprintln!("{total} spoiled payloads: {tally:?}");
}

#[test]
fn restore_of_spoiled_entry_headers_is_refused() {
    // Field by field, on an uncompressed header: what the codec must refuse.
    let mut s = Server::start_with(&["--rdbcompression", "no"]);
    let mut c = s.conn();
    let now = server_ms(&mut c);
    let tags: &[&[u8]] = &[b"user:1", b"\0bin", b""];
    let mut tally = Tally::default();
    for (flags, value) in [
        (HAS_VALUE | HAS_LEASE, Some(&b"v"[..])),
        (HAS_VALUE, Some(&b"value"[..])),
        (HAS_LEASE, None),
    ] {
        let mut record = Record::new(now, flags, tags);
        restore(&mut c, "src", &record, value).unwrap();
        let payload: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut c).unwrap();
        let dump = Dump::parse(&payload);
        // The tests' crafted payloads are what DUMP gives (the RDB version aside), with the
        // fresh version the entry got where RESTORE put it.
        let fresh = version_of(&mut c, "src").expect("a version");
        assert!(fresh > record.version, "RESTORE gave no fresh version");
        record.version = fresh;
        let crafted = dump_payload(&record.encode(), value);
        assert_eq!(
            dump.body,
            crafted[..crafted.len() - 10],
            "crafted DUMP body"
        );
        let Some(StrField::Raw { len, data: at }) = module_strings(&dump.body).into_iter().next()
        else {
            panic!("entry header is not a plain string");
        };
        let header_len = len.value as usize;
        assert_eq!(header_len, Record::new(now, flags, tags).encode().len());
        let with_header = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut h = dump.body[at..at + header_len].to_vec();
            f(&mut h);
            let mut b = dump.body[..len.start].to_vec();
            b.extend_from_slice(&rdb_len_encode(h.len()));
            b.extend_from_slice(&h);
            b.extend_from_slice(&dump.body[at + header_len..]);
            dump.seal(&b)
        };
        let mut must_refuse: Vec<(String, Vec<u8>)> = vec![
            ("format 0".into(), with_header(&|h| h[0] = 0)),
            ("format 2".into(), with_header(&|h| h[0] = 2)),
            ("flags 8".into(), with_header(&|h| h[1] |= 8)),
            ("flags 0x80".into(), with_header(&|h| h[1] |= 0x80)),
            (
                "keep-value flag".into(),
                with_header(&|h| h[1] |= KEEP_VALUE),
            ),
            (
                "negative grace".into(),
                with_header(&|h| h[10..18].copy_from_slice(&(-1i64).to_le_bytes())),
            ),
            (
                "negative delta".into(),
                with_header(&|h| h[18..26].copy_from_slice(&i64::MIN.to_le_bytes())),
            ),
            ("trailing byte".into(), with_header(&|h| h.push(0))),
            (
                "tag count u32::MAX".into(),
                with_header(&|h| {
                    let at = h.len() - 4 - tags.iter().map(|t| 4 + t.len()).sum::<usize>();
                    h[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                }),
            ),
            (
                "tag length u32::MAX".into(),
                with_header(&|h| {
                    let at = h.len() - tags.iter().map(|t| 4 + t.len()).sum::<usize>();
                    h[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                }),
            ),
            (
                "lease flag flipped".into(),
                with_header(&|h| h[1] ^= HAS_LEASE),
            ),
            (
                "value flag flipped".into(),
                with_header(&|h| h[1] ^= HAS_VALUE),
            ),
        ];
        for n in 0..header_len {
            must_refuse.push((
                format!("header cut to {n}"),
                with_header(&|h| h.truncate(n)),
            ));
        }
        for (what, payload) in must_refuse {
            let what = format!("flags {flags}: {what}");
            let before = tally.accepted;
            restore_variant(&mut s, &mut c, &what, &payload, &mut tally);
            assert_eq!(before, tally.accepted, "{what}: RESTORE accepted it");
        }
    }
    assert!(s.is_alive());
}

#[test]
fn restore_of_random_garbage_with_a_valid_checksum() {
    let mut s = Server::start();
    let mut c = s.conn();
    set(&mut c, "src", b"v", &["EX", "3600"]).unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut c).unwrap();
    let dump = Dump::parse(&payload);
    let module_id = dump.body[..10].to_vec();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut tally = Tally::default();
    // The module's type and id, then anything.
    for i in 0..400 {
        let n = rng.below(160) as usize;
        let body = [&module_id[..], &rng.bytes(n)].concat();
        restore_variant(
            &mut s,
            &mut c,
            &format!("garbage {i}"),
            &dump.seal(&body),
            &mut tally,
        );
    }
    // Well-formed module strings around a random entry header: reaches the codec.
    for i in 0..400 {
        let n = rng.below(100) as usize;
        let mut header = rng.bytes(n);
        if n >= 2 && rng.below(4) != 0 {
            header[0] = 1;
            header[1] = rng.below(8) as u8;
        }
        let mut body = module_id.clone();
        body.push(5);
        body.extend_from_slice(&rdb_len_encode(n));
        body.extend_from_slice(&header);
        if rng.below(2) == 0 {
            let n = rng.below(40) as usize;
            let v = rng.bytes(n);
            body.extend_from_slice(&[5, v.len() as u8]);
            body.extend_from_slice(&v);
        }
        body.push(0);
        let what = format!("random header {i}");
        restore_variant(&mut s, &mut c, &what, &dump.seal(&body), &mut tally);
    }
    // Well-formed headers with random field values: the ones accepted must stay usable.
    let now = server_ms(&mut c);
    for i in 0..300 {
        let flags = [0, HAS_VALUE, HAS_LEASE, HAS_VALUE | HAS_LEASE][rng.below(4) as usize];
        let mut h = Record::new(now, flags, &[]);
        let pick = |rng: &mut Rng| -> i64 {
            [
                0,
                -1,
                1,
                i64::MAX,
                i64::MIN,
                now,
                now + 1000,
                rng.next() as i64,
            ][rng.below(8) as usize]
        };
        h.fresh_until_ms = pick(&mut rng);
        h.grace_ms = pick(&mut rng).max(0);
        h.delta_ms = pick(&mut rng).max(0);
        h.version = rng.next() >> 11; // valid ids are below 2^53
        if let Some(l) = h.lease.as_mut() {
            *l = (rng.next() >> 11, pick(&mut rng), pick(&mut rng));
        }
        let header = h.encode();
        let mut body = module_id.clone();
        body.push(5);
        body.extend_from_slice(&rdb_len_encode(header.len()));
        body.extend_from_slice(&header);
        if flags & HAS_VALUE != 0 {
            body.extend_from_slice(&[5, 3, b'a', 0, b'c']);
        }
        body.push(0);
        let what = format!("random fields {i}");
        restore_variant(&mut s, &mut c, &what, &dump.seal(&body), &mut tally);
    }
    assert!(s.is_alive(), "server process died:\n{}", s.log());
    assert!(tally.refused > 0 && tally.accepted > 0, "{tally:?}");
    eprintln!(
        "random payloads: {} refused, {} accepted",
        tally.refused, tally.accepted
    );
}

#[test]
fn restore_of_random_payloads_of_any_type_with_sanitizing() {
    // Fully random bodies reach Redis's own loaders too: those are only safe with
    // sanitize-dump-payload; the module's type must not make things worse.
    let mut s = Server::start_with(&["--sanitize-dump-payload", "yes"]);
    let mut c = s.conn();
    set(&mut c, "src", b"v", &["EX", "3600"]).unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut c).unwrap();
    let dump = Dump::parse(&payload);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tally = Tally::default();
    for i in 0..300 {
        let n = 1 + rng.below(120) as usize;
        let mut body = rng.bytes(n);
        if i % 2 == 0 {
            body[0] = [6, 7][rng.below(2) as usize];
        }
        let what = format!("random payload {i}");
        restore_variant(&mut s, &mut c, &what, &dump.seal(&body), &mut tally);
    }
    assert!(s.is_alive(), "server process died:\n{}", s.log());
}

/// How many mutated payloads `restore_of_mutated_payloads_leaves_the_digest_unchanged` sends:
/// `$RESTORE_FUZZ_N`, default 10,000 (`make fuzz-restore` sends 100,000).
fn restore_fuzz_n() -> usize {
    std::env::var("RESTORE_FUZZ_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

/// One to eight stacked mutations of a real DUMP body (a fuzzer's "havoc" stage): bit flips,
/// interesting bytes and words, insertions, deletions, duplicated ranges, splices with another
/// real body, and a length field replaced. The type byte and the module id are kept nine times
/// in ten, so that most payloads reach the module's loader rather than Redis's.
fn mutate(rng: &mut Rng, body: &[u8], other: &[u8]) -> (Vec<u8>, String) {
    const BYTES: [u8; 10] = [0, 1, 5, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0xc0, 0xff];
    const WORDS: [u64; 8] = [
        0,
        1,
        0x7f,
        0xffff,
        u32::MAX as u64,
        1 << 53,
        i64::MAX as u64,
        u64::MAX,
    ];
    let mut b = body.to_vec();
    let keep = if rng.below(10) == 0 { 1 } else { 10 };
    let mut ops = Vec::new();
    for _ in 0..1 + rng.below(8) {
        let room = b.len().saturating_sub(keep).max(1) as u64;
        let at = (keep + rng.below(room) as usize).min(b.len());
        match rng.below(9) {
            0 if at < b.len() => {
                b[at] ^= 1 << rng.below(8);
                ops.push("flip");
            }
            1 if at < b.len() => {
                b[at] = BYTES[rng.below(10) as usize];
                ops.push("byte");
            }
            2 => {
                let w = WORDS[rng.below(8) as usize].to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4) as usize];
                let end = (at + n).min(b.len());
                b.splice(at..end, w[..n].iter().copied());
                ops.push("word");
            }
            3 => {
                let n = 1 + rng.below(8) as usize;
                b.splice(at..at, rng.bytes(n));
                ops.push("insert");
            }
            4 if at < b.len() => {
                let n = 1 + rng.below(16) as usize;
                b.drain(at..(at + n).min(b.len()));
                ops.push("delete");
            }
            5 if at < b.len() => {
                let n = 1 + rng.below(16) as usize;
                let piece = b[at..(at + n).min(b.len())].to_vec();
                let to = (keep + rng.below(room) as usize).min(b.len());
                b.splice(to..to, piece);
                ops.push("duplicate");
            }
            6 if other.len() > keep => {
                let from = keep + rng.below((other.len() - keep) as u64) as usize;
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
                ops.push("splice");
            }
            7 => {
                // An RDB length of any width where a length may stand.
                let l = rdb_len_encode(rng.below(1 << 20) as usize);
                let end = (at + 1).min(b.len());
                b.splice(at..end, l);
                ops.push("length");
            }
            _ => {
                b.truncate(at);
                ops.push("truncate");
            }
        }
    }
    (b, ops.join("+"))
}

/// The live RESTORE fuzzer: mutated real DUMP payloads, resealed with a valid checksum, sent to
/// a server holding every sample entry. Each reply is OK or an error; a refused payload leaves
/// the whole keyspace's digest as it was; an accepted one is usable (probed as in
/// `restore_variant`) and, once deleted, leaves the digest and the tag index as they were.
#[test]
fn restore_of_mutated_payloads_leaves_the_digest_unchanged() {
    let n = restore_fuzz_n();
    let mut s = Server::start();
    let mut c = s.conn();
    let dumps = sample_dumps(&mut c);
    let baseline = digest(&mut c);
    let index = tag_index(&mut c);
    let seed = 0x5eed_f00d_u64 ^ n as u64;
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    for i in 0..n {
        let (name, dump) = &dumps[rng.below(dumps.len() as u64) as usize];
        let other = &dumps[rng.below(dumps.len() as u64) as usize].1.body;
        let (body, ops) = mutate(&mut rng, &dump.body, other);
        let what = format!("mutation {i} of {name}: {ops}");
        let accepted = restore_variant(&mut s, &mut c, &what, &dump.seal(&body), &mut tally);
        let after = digest(&mut c);
        assert_eq!(
            after,
            baseline,
            "{what} ({}): the keyspace changed",
            if accepted {
                "accepted, then deleted"
            } else {
                "refused"
            }
        );
        if i % 1000 == 999 {
            assert_eq!(tag_index(&mut c), index, "{what}: the tag index changed");
            eprintln!(
                "restore fuzz: {} of {n}, {} refused, {} accepted, {:.0} s",
                i + 1,
                tally.refused,
                tally.accepted,
                started.elapsed().as_secs_f64()
            );
        }
    }
    assert_eq!(tag_index(&mut c), index, "the tag index changed");
    assert!(s.is_alive(), "server process died:\n{}", s.log());
    let log = s.log();
    assert!(
        !log.contains("panic") && !log.contains("internal error"),
        "the server log mentions a panic or an internal error"
    );
    assert!(
        tally.refused > n / 4 && tally.accepted > 0,
        "{tally:?} of {n}"
    );
    eprintln!(
        "restore fuzz: {n} mutated payloads (seed {seed:#x}) in {:.0} s: {} refused with the \
         digest unchanged, {} accepted (usable, and the digest as before once deleted), 0 crashes",
        started.elapsed().as_secs_f64(),
        tally.refused,
        tally.accepted
    );
}

/// After an entry carrying version `u64::MAX` came in (a corrupted payload with a valid
/// checksum, or a crafted `CACHE.APPLY`), later ids must still strictly increase and stay
/// positive: the lease fencing depends on tokens never being reused.
fn ids_still_increase(
    c: &mut Connection,
    how: &str,
    reply: &Result<Value, String>,
) -> Option<String> {
    let v1 = set(c, "k", b"1", &["EX", "3600"]).expect("stored");
    let v2 = set(c, "k", b"2", &["EX", "3600"]).expect("stored");
    let (_, _, t1) = getx(c, "fresh", &[]);
    let _: i64 = redis::cmd("CACHE.DEL").arg("fresh").query(c).unwrap();
    let (_, _, t2) = getx(c, "fresh", &[]);
    let (t1, t2) = (t1.expect("MISS token"), t2.expect("MISS token"));
    let ok = (v1 as i64) > 0 && v1 < v2 && v2 < t1 && t1 < t2;
    (!ok).then(|| {
        format!(
            "{how} (reply {reply:?}): versions {v1} then {v2}, then lease tokens {t1} and \
             {t2} (after a delete)"
        )
    })
}

#[test]
fn an_out_of_range_version_does_not_stall_ids() {
    let mut failures = Vec::new();
    {
        // RESTORE of a DUMP whose version field was spoiled.
        let s = Server::start_with(&["--rdbcompression", "no"]);
        let mut c = s.conn();
        set(&mut c, "src", b"v", &["EX", "3600"]).unwrap();
        let payload: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut c).unwrap();
        let dump = Dump::parse(&payload);
        let at = raw_header_at(&dump.body) + 26;
        let mut body = dump.body.clone();
        body[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let reply = call(&mut c, &cmd!["RESTORE", "odd", "0", dump.seal(&body)]);
        failures.extend(ids_still_increase(
            &mut c,
            "RESTORE of version u64::MAX",
            &reply,
        ));
    }
    {
        // A CACHE.APPLY record carrying it, replayed from the AOF (the only place a client's
        // bytes could reach CACHE.APPLY).
        let mut s = Server::start();
        let mut h = Record::new(server_ms(&mut s.conn()), HAS_VALUE, &[]);
        h.version = u64::MAX;
        s.shutdown(false);
        write_aof(
            s.dir.path(),
            &[args!["CACHE.APPLY", "odd", h.encode(), "v"]],
        );
        s.restart_with(false, &["--appendonly", "yes"]);
        let mut c = s.conn();
        let reply = match aof_load_errors(&s.log()).pop() {
            Some(e) => Err(e),
            None => Ok(Value::Okay),
        };
        assert!(
            matches!(&reply, Err(e) if e.starts_with(BAD_RECORD)),
            "replayed: {reply:?}"
        );
        failures.extend(ids_still_increase(
            &mut c,
            "CACHE.APPLY of version u64::MAX",
            &reply,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Part 3: binary, empty and huge values; binary keys
// ---------------------------------------------------------------------------------------------

#[test]
fn every_byte_value_round_trips() {
    let s = Server::start();
    let mut c = s.conn();
    let all: Vec<u8> = (0..=255u8).collect();
    let mut values: Vec<Vec<u8>> = vec![
        b"\0".to_vec(),
        b"\0\0\0".to_vec(),
        b"a\0b".to_vec(),
        b"\0trailing\0".to_vec(),
        b"\r\n$3\r\nfoo\r\n".to_vec(),
        b"-ERR not an error\r\n".to_vec(),
        all.clone(),
        all.iter().rev().copied().collect(),
        all.repeat(64),
    ];
    values.extend((0..=255u8).map(|b| vec![b]));
    for (i, value) in values.iter().enumerate() {
        let key = format!("v{i}");
        set(&mut c, key.as_bytes(), value, &["EX", "3600"]).expect("stored");
        assert_eq!(
            cache_get(&mut c, key.as_bytes()).as_ref(),
            Some(value),
            "CACHE.GET of value {i}"
        );
        assert_eq!(
            getx(&mut c, key.as_bytes(), &[]),
            (Some(value.clone()), "HIT".into(), None),
            "CACHE.GETX of value {i}"
        );
        assert_eq!(
            inspect_int(&mut c, key.as_bytes(), "value-length"),
            Some(value.len() as i64)
        );
    }
}

#[test]
fn empty_value_round_trips_and_is_not_nil() {
    let s = Server::start();
    let mut c = s.conn();
    set(&mut c, b"e", b"", &["EX", "3600"]).expect("stored");
    assert_eq!(cache_get(&mut c, b"e"), Some(vec![]));
    assert_eq!(getx(&mut c, b"e", &[]), (Some(vec![]), "HIT".into(), None));
    assert_eq!(inspect_int(&mut c, b"e", "value-length"), Some(0));
    // Over a value, and filling a lease with it.
    set(&mut c, b"f", b"something", &["EX", "3600"]).expect("stored");
    set(&mut c, b"f", b"", &["EX", "3600"]).expect("stored");
    assert_eq!(cache_get(&mut c, b"f"), Some(vec![]));
    let (_, status, token) = getx(&mut c, "g", &[]);
    assert_eq!(status, "MISS");
    let t = token.unwrap().to_string();
    assert!(set(&mut c, "g", b"", &["EX", "60", "TOKEN", &t]).is_some());
    assert_eq!(getx(&mut c, b"g", &[]), (Some(vec![]), "HIT".into(), None));
}

#[test]
fn binary_keys_work() {
    let s = Server::start();
    let mut c = s.conn();
    let all: Vec<u8> = (0..=255u8).collect();
    let keys: Vec<Vec<u8>> = vec![
        b"a\0b".to_vec(),
        b"\0".to_vec(),
        b"\0\0".to_vec(),
        b"\xff\xfe\x00\x01".to_vec(),
        b"key with spaces\r\n".to_vec(),
        all.clone(),
        all.iter().rev().copied().collect(),
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value of key {i}").into_bytes();
        set(&mut c, key, &value, &["EX", "3600"]).expect("stored");
        let t: String = redis::cmd("TYPE").arg(&key[..]).query(&mut c).unwrap();
        assert_eq!(t, "cache-ent", "key {i}");
    }
    // All distinct (NUL does not end a key), and readable by every command.
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, keys.len());
    let exists: i64 = redis::cmd("EXISTS").arg("a").query(&mut c).unwrap();
    assert_eq!(exists, 0, "a\\0b must not be stored as a");
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value of key {i}").into_bytes();
        assert_eq!(cache_get(&mut c, key), Some(value.clone()), "key {i}");
        assert_eq!(
            getx(&mut c, key, &[]),
            (Some(value.clone()), "HIT".into(), None),
            "key {i}"
        );
        assert_eq!(
            inspect_int(&mut c, key, "value-length"),
            Some(value.len() as i64),
            "key {i}"
        );
    }
    // A lease and its fill on a binary key.
    let key = b"lease\0key";
    let (_, status, token) = getx(&mut c, key, &[]);
    assert_eq!(status, "MISS");
    let filled: Option<u64> = redis::cmd("CACHE.SET")
        .arg(&key[..])
        .arg("filled")
        .arg("EX")
        .arg(60)
        .arg("TOKEN")
        .arg(token.unwrap())
        .query(&mut c)
        .unwrap();
    assert!(filled.is_some());
    assert_eq!(cache_get(&mut c, key), Some(b"filled".to_vec()));
    // CACHE.DEL of all of them at once.
    let mut del = redis::cmd("CACHE.DEL");
    for k in &keys {
        del.arg(&k[..]);
    }
    del.arg(&key[..]);
    let n: i64 = del.query(&mut c).unwrap();
    assert_eq!(n, keys.len() as i64 + 1);
    for key in &keys {
        assert_eq!(cache_get(&mut c, key), None);
    }
}

#[test]
fn value_of_512_mb_round_trips() {
    const N: usize = 512 * 1024 * 1024; // proto-max-bulk-len
    let s = Server::start();
    let mut c = s.conn();
    let mut value = vec![0u8; N];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for chunk in value.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    let version: Option<u64> = redis::cmd("CACHE.SET")
        .arg("big")
        .arg(&value[..])
        .arg("EX")
        .arg(3600)
        .query(&mut c)
        .unwrap();
    assert!(version.is_some(), "512 MB value not stored");
    assert_eq!(inspect_int(&mut c, b"big", "value-length"), Some(N as i64));
    {
        let got: Option<Vec<u8>> = redis::cmd("CACHE.GET").arg("big").query(&mut c).unwrap();
        let got = got.expect("value");
        assert_eq!(got.len(), N, "length");
        for at in [0, 1, N / 2 - 3, N - 4096] {
            assert!(got[at..at + 4096.min(N - at)] == value[at..at + 4096.min(N - at)]);
        }
        assert!(got == value, "512 MB value differs");
    }
    drop(value);
    // The server holds the value once (the module's copy), and frees it with the key.
    let slack = 64 << 20;
    let mut used = 0;
    let once = wait_until(Duration::from_secs(5), || {
        used = used_memory(&mut c);
        used < (N + slack) as i64
    });
    assert!(once, "used_memory {used} with one 512 MB value");
    let n: i64 = redis::cmd("CACHE.DEL").arg("big").query(&mut c).unwrap();
    assert_eq!(n, 1);
    let freed = wait_until(Duration::from_secs(5), || {
        used = used_memory(&mut c);
        used < slack as i64
    });
    assert!(
        freed,
        "used_memory {used} after CACHE.DEL of the 512 MB value"
    );
}

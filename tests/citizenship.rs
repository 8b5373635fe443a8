//! The module's commands behave as core commands towards the server's own machinery: key
//! specs (`COMMAND INFO`, `COMMAND GETKEYS`, ACL key permissions), `COMMAND DOCS`, ACL command
//! rules and, where the server has them (Redis 7.2+, Valkey), ACL categories.

mod support;
use redis::{Connection, Value};
use support::commands::*;
use support::server::{server_kind, Server};

/// Every command with an example call: (name, argv after the name, key spec flags, arity).
const COMMANDS: &[(&str, &[&str], &[&str], i64)] = &[
    (
        "cache.set",
        &["k", "v", "PX", "1000"],
        &["RW", "update"],
        -3,
    ),
    ("cache.get", &["k"], &["RO", "access"], 2),
    (
        "cache.getx",
        &["k", "BETA", "1"],
        &["RW", "access", "update"],
        -2,
    ),
    (
        "cache.lockget",
        &["k", "PX", "100"],
        &["RW", "access", "update"],
        -2,
    ),
    ("cache.release", &["k", "1"], &["RW", "update"], 3),
    ("cache.del", &["k", "k2", "k3"], &["RM", "delete"], -2),
    ("cache.inspect", &["k"], &["RO", "access"], 2),
    ("cache.apply", &["k", "header"], &["RW", "update"], -3),
    (
        "cache.tagset",
        &["k", "v", "PX", "1000", "TAGS", "t"],
        &["RW", "update"],
        -6,
    ),
    ("cache.tags", &["k"], &["RO", "access"], 2),
];

/// The keyless commands: (name, arity, whether it writes).
const KEYLESS: &[(&str, i64, bool)] = &[
    ("cache.tagcount", 2, false),
    ("cache.tagscan", -3, false),
    ("cache.taginvalidate", -2, true),
];

/// Keyless commands declare no keys (cluster clients send them anywhere, ACL key patterns do
/// not apply), say whether they write, and have docs.
#[test]
fn keyless_commands_declare_no_keys() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, arity, writes) in KEYLESS {
        let reply: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(*name)
            .query(&mut c)
            .unwrap();
        let info = items(&items(&reply)[0]);
        assert_eq!(text(&info[1]), arity.to_string(), "{name} arity");
        let flag = if *writes { "write" } else { "readonly" };
        assert!(strings(&info[2]).contains(&flag.to_string()), "{name}");
        assert_eq!(
            (text(&info[3]), text(&info[4]), text(&info[5])),
            ("0".into(), "0".into(), "0".into()),
            "{name}: first, last, step"
        );
        assert!(items(&info[8]).is_empty(), "{name}: no key specs");
        let r: redis::RedisResult<Vec<String>> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(*name)
            .arg("t")
            .arg("0")
            .query(&mut c);
        assert!(r.is_err(), "{name}: GETKEYS finds keys: {r:?}");
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(*name)
            .query(&mut c)
            .unwrap();
        let doc = &items(&reply)[1];
        assert!(!text(field(doc, "summary").unwrap()).is_empty(), "{name}");
        let args = items(field(doc, "arguments").unwrap());
        assert_eq!(text(field(&args[0], "name").unwrap()), "tag", "{name}");
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A RESP2 flat field/value array as pairs.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    items(v)
        .chunks(2)
        .find(|p| text(&p[0]) == name)
        .map(|p| &p[1])
}

fn strings(v: &Value) -> Vec<String> {
    items(v).iter().map(text).collect()
}

#[test]
fn command_info_declares_arity_flags_and_key_specs() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, _, key_flags, arity) in COMMANDS {
        let reply: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(*name)
            .query(&mut c)
            .unwrap();
        let info = &items(&reply)[0];
        let info = items(info);
        assert_eq!(text(&info[0]), *name);
        assert_eq!(text(&info[1]), arity.to_string(), "{name} arity");
        let flags = strings(&info[2]);
        let writes = !key_flags.contains(&"RO");
        assert_eq!(
            flags.contains(&"write".to_string()),
            writes,
            "{name}: {flags:?}"
        );
        assert_eq!(
            flags.contains(&"readonly".to_string()),
            !writes,
            "{name}: {flags:?}"
        );
        assert!(flags.contains(&"module".to_string()), "{name}: {flags:?}");
        let specs = items(&info[8]);
        assert_eq!(specs.len(), 1, "{name}: one key spec");
        let spec_flags = strings(field(&specs[0], "flags").unwrap());
        assert_eq!(&spec_flags, key_flags, "{name} key spec flags");
    }
    // The read-only ones are what a replica and a %R~ user may run.
    let reply: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("cache.get")
        .query(&mut c)
        .unwrap();
    let flags = strings(&items(&items(&reply)[0])[2]);
    assert!(flags.contains(&"fast".to_string()), "{flags:?}");
}

#[test]
fn command_getkeys_finds_every_key() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, argv, _, _) in COMMANDS {
        let keys: Vec<String> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(*name)
            .arg(*argv)
            .query(&mut c)
            .unwrap();
        let expected: Vec<String> = if *name == "cache.del" {
            argv.iter().map(|s| s.to_string()).collect()
        } else {
            vec![argv[0].to_string()]
        };
        assert_eq!(keys, expected, "{name}");
    }
}

#[test]
fn command_docs_give_summary_complexity_group_and_arguments() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, _, _, _) in COMMANDS {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(*name)
            .query(&mut c)
            .unwrap();
        let pairs = items(&reply);
        assert_eq!(text(&pairs[0]), *name);
        let doc = &pairs[1];
        for f in ["summary", "complexity", "since"] {
            let v = text(field(doc, f).unwrap_or_else(|| panic!("{name} has no {f}")));
            assert!(!v.is_empty(), "{name} {f}");
        }
        assert_eq!(text(field(doc, "group").unwrap()), "module");
        let args = items(field(doc, "arguments").expect("arguments"));
        assert_eq!(text(field(&args[0], "type").unwrap()), "key", "{name}");
        assert_eq!(text(field(&args[0], "key_spec_index").unwrap()), "0");
    }
    // The options of GETX, with their keywords and as optional.
    let reply: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("cache.getx")
        .query(&mut c)
        .unwrap();
    let args = items(field(&items(&reply)[1], "arguments").unwrap());
    let beta = &args[1];
    assert_eq!(text(field(beta, "token").unwrap()), "BETA");
    assert_eq!(text(field(beta, "type").unwrap()), "double");
    assert_eq!(strings(field(beta, "flags").unwrap()), ["optional"]);
    // CACHE.SET's TTL is one of EX or PX.
    let reply: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("cache.set")
        .query(&mut c)
        .unwrap();
    let args = items(field(&items(&reply)[1], "arguments").unwrap());
    assert_eq!(text(field(&args[2], "type").unwrap()), "oneof");
    let ttl: Vec<String> = items(field(&args[2], "arguments").unwrap())
        .iter()
        .map(|a| text(field(a, "token").unwrap()))
        .collect();
    assert_eq!(ttl, ["EX", "PX"]);
}

/// A connection authenticated as `user` (password `pw`).
fn conn_as(s: &Server, user: &str) -> Connection {
    let url = format!("redis://{user}:pw@127.0.0.1:{}/", s.port);
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn is_noperm(r: redis::RedisResult<Value>) -> bool {
    match r {
        Err(e) => e.to_string().contains("NOPERM"),
        Ok(_) => false,
    }
}

/// Every keyed command that writes, on `key` (a fill token that does not matter).
fn writes_on(key: &str) -> Vec<(&'static str, redis::Cmd)> {
    let mut out = Vec::new();
    let mut cmd = |name: &'static str, rest: &[&str]| {
        let mut c = redis::cmd(name);
        c.arg(key).arg(rest);
        out.push((name, c));
    };
    cmd("CACHE.SET", &["v", "PX", "100000"]);
    cmd("CACHE.GETX", &[]);
    cmd("CACHE.LOCKGET", &[]);
    cmd("CACHE.RELEASE", &["1"]);
    cmd("CACHE.DEL", &[]);
    cmd("CACHE.TAGSET", &["v", "PX", "100000", "TAGS", "t"]);
    out
}

#[test]
fn read_only_key_permission_may_read_and_not_write() {
    let s = Server::start();
    let mut admin = s.conn();
    set(&mut admin, "k", b"v", &["PX", "100000"]).unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "%R~*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let before = digest(&mut admin);
    let mut r = conn_as(&s, "reader");
    let v: Option<Vec<u8>> = redis::cmd("CACHE.GET").arg("k").query(&mut r).unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    let inspect: Value = redis::cmd("CACHE.INSPECT").arg("k").query(&mut r).unwrap();
    assert!(matches!(inspect, Value::Array(_)), "{inspect:?}");
    for key in ["k", "absent"] {
        for (name, cmd) in writes_on(key) {
            assert!(
                is_noperm(cmd.query(&mut r)),
                "{name} {key} by a read-only user"
            );
        }
    }
    assert_eq!(digest(&mut admin), before, "refused commands wrote nothing");
}

#[test]
fn key_pattern_permission_refuses_other_keys() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">pw", "~allowed:*", "+@all"])
        .query(&mut admin)
        .unwrap();
    set(&mut admin, "other:1", b"v", &["PX", "100000"]).unwrap();
    let before = digest(&mut admin);
    let mut app = conn_as(&s, "app");
    for (name, cmd) in writes_on("other:1") {
        assert!(is_noperm(cmd.query(&mut app)), "{name} on another key");
    }
    for name in ["CACHE.GET", "CACHE.INSPECT", "CACHE.TAGS"] {
        let r = redis::cmd(name).arg("other:1").query(&mut app);
        assert!(is_noperm(r), "{name} on another key");
    }
    // One allowed key among others is not enough for CACHE.DEL.
    let r = redis::cmd("CACHE.DEL")
        .arg(&["allowed:1", "other:1"])
        .query(&mut app);
    assert!(is_noperm(r));
    assert_eq!(digest(&mut admin), before, "refused commands wrote nothing");
    // Its own keys work.
    let v = set(&mut app, "allowed:1", b"mine", &["PX", "100000"]);
    assert!(v.is_some());
    let got: Option<Vec<u8>> = redis::cmd("CACHE.GET")
        .arg("allowed:1")
        .query(&mut app)
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"mine"[..]));
}

#[test]
fn command_rules_hold_for_module_commands() {
    let s = Server::start();
    let mut admin = s.conn();
    set(&mut admin, "k", b"v", &["PX", "100000"]).unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "getter",
            "on",
            ">pw",
            "~*",
            "-@all",
            "+cache.get",
        ])
        .query(&mut admin)
        .unwrap();
    let before = digest(&mut admin);
    let mut g = conn_as(&s, "getter");
    let v: Option<Vec<u8>> = redis::cmd("CACHE.GET").arg("k").query(&mut g).unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    for (name, cmd) in writes_on("k") {
        assert!(is_noperm(cmd.query(&mut g)), "{name} without the command");
    }
    let r = redis::cmd("CACHE.INSPECT").arg("k").query(&mut g);
    assert!(is_noperm(r));
    assert_eq!(digest(&mut admin), before);
}

/// Redis 7.2+ (and Valkey, which reports 7.2.4) let a module put its commands in ACL
/// categories; 7.0 has no way to, and the README says so.
#[test]
fn acl_categories_where_the_server_has_them() {
    let s = Server::start();
    let mut admin = s.conn();
    let cat = |c: &mut Connection, name: &str| -> Vec<String> {
        let all: Vec<String> = redis::cmd("ACL").arg("CAT").arg(name).query(c).unwrap();
        let mut ours: Vec<String> = all
            .into_iter()
            .filter(|n| n.starts_with("cache."))
            .collect();
        ours.sort();
        ours
    };
    let kind = server_kind(&mut admin);
    if !kind.is_valkey() && kind.version < (7, 2, 0) {
        for name in ["read", "write", "dangerous"] {
            assert!(
                cat(&mut admin, name).is_empty(),
                "7.0 has no module categories"
            );
        }
        return;
    }
    assert_eq!(
        cat(&mut admin, "read"),
        [
            "cache.get",
            "cache.inspect",
            "cache.tagcount",
            "cache.tags",
            "cache.tagscan",
            "cache.wbqueues"
        ]
    );
    assert_eq!(
        cat(&mut admin, "write"),
        [
            "cache.apply",
            "cache.del",
            "cache.getx",
            "cache.lockget",
            "cache.release",
            "cache.set",
            "cache.tagapply",
            "cache.taginvalidate",
            "cache.tagset",
            "cache.wbdel",
            "cache.wbqueue"
        ]
    );
    assert_eq!(
        cat(&mut admin, "dangerous"),
        ["cache.apply", "cache.tagapply"]
    );
    assert_eq!(cat(&mut admin, "blocking"), ["cache.lockget"]);
    assert_eq!(
        cat(&mut admin, "fast"),
        [
            "cache.get",
            "cache.getx",
            "cache.release",
            "cache.tagcount",
            "cache.tags"
        ]
    );

    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "rw", "on", ">pw", "~*", "+@read", "+@write"])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "safe", "on", ">pw", "~*", "+@all", "-@dangerous"])
        .query(&mut admin)
        .unwrap();
    let mut rw = conn_as(&s, "rw");
    assert!(set(&mut rw, "k", b"v", &["PX", "100000"]).is_some());
    let v: Option<Vec<u8>> = redis::cmd("CACHE.GET").arg("k").query(&mut rw).unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    let before = digest(&mut admin);
    let mut safe = conn_as(&s, "safe");
    let r = redis::cmd("CACHE.APPLY").arg(&["k", "x"]).query(&mut safe);
    assert!(is_noperm(r), "-@dangerous takes CACHE.APPLY away");
    assert_eq!(digest(&mut admin), before);
}

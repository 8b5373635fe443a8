//! The module loads, and the basic round trip works against a real server (redis-server, or
//! the one `$CACHE_SERVER` names).

mod support;
use support::commands::*;
use support::server::{binary_version, server_binary, server_kind, wait_until, Flavor, Server};

/// The tests run against the binary `$CACHE_SERVER` names, and `server_kind` (what tests that
/// depend on the server ask) reads that server right.
#[test]
fn the_server_under_test_is_the_one_named() {
    let s = Server::start();
    let mut c = s.conn();
    let (flavor, version) = binary_version();
    let kind = server_kind(&mut c);
    assert_eq!(
        (kind.flavor, kind.version),
        (flavor, version),
        "{} --version against INFO server",
        server_binary()
    );
    match flavor {
        Flavor::Redis => assert_eq!(kind.redis_compat, kind.version),
        // Valkey reports the Redis version it is compatible with in redis_version.
        Flavor::Valkey => assert!(kind.redis_compat >= (7, 2, 0), "{kind:?}"),
    }
    let modules: redis::Value = redis::cmd("MODULE").arg("LIST").query(&mut c).unwrap();
    assert!(
        format!("{modules:?}").contains("cache"),
        "the module is loaded: {modules:?}"
    );
}

#[test]
fn set_get_roundtrip_with_binary_value() {
    let s = Server::start();
    let mut c = s.conn();
    let value = b"a\0b\xffc".to_vec();
    let v1 = set(&mut c, "k", &value, &["EX", "100"]).expect("stored");
    let got: Option<Vec<u8>> = redis::cmd("CACHE.GET").arg("k").query(&mut c).unwrap();
    assert_eq!(got, Some(value.clone()));
    let v2 = set(&mut c, "k", b"x", &["PX", "100000"]).expect("stored");
    assert!(v2 > v1, "versions increase: {v1} then {v2}");
    let t: String = redis::cmd("TYPE").arg("k").query(&mut c).unwrap();
    assert_eq!(t, "cache-ent");
    let pttl: i64 = redis::cmd("PTTL").arg("k").query(&mut c).unwrap();
    assert!(pttl > 99_000 && pttl <= 100_000, "pttl {pttl}");
}

#[test]
fn getx_miss_fill_hit() {
    let s = Server::start();
    let mut c = s.conn();
    let (v, status, token) = getx(&mut c, "k", &[]);
    assert_eq!((v, status.as_str()), (None, "MISS"));
    let token = token.expect("MISS carries a token");
    let (_, status, other) = getx(&mut c, "k", &[]);
    assert_eq!((status.as_str(), other), ("LOCKED", None));
    let t = token.to_string();
    assert!(set(&mut c, "k", b"v", &["EX", "60", "TOKEN", &t]).is_some());
    assert_eq!(
        getx(&mut c, "k", &[]),
        (Some(b"v".to_vec()), "HIT".into(), None)
    );
    assert_eq!(
        set(&mut c, "k", b"late", &["EX", "60", "TOKEN", &t]),
        None,
        "token used up"
    );
    let info = info_cache(&mut c);
    assert_eq!(info["leases_granted"], 1);
    assert_eq!(info["leases_filled"], 1);
    assert_eq!(info["fills_refused"], 1);
    assert_eq!(info["entries"], 1);
}

#[test]
fn lockget_waiter_is_woken_by_the_fill() {
    let s = Server::start();
    let mut c = s.conn();
    let (_, status, token): Triple = redis::cmd("CACHE.LOCKGET").arg("k").query(&mut c).unwrap();
    assert_eq!(status, "MISS");
    let url = s.url();
    let waiter = std::thread::spawn(move || {
        let mut w = redis::Client::open(url).unwrap().get_connection().unwrap();
        let r: Triple = redis::cmd("CACHE.LOCKGET")
            .arg("k")
            .arg("WAIT")
            .arg(5000)
            .query(&mut w)
            .unwrap();
        r
    });
    assert!(
        wait_until(std::time::Duration::from_secs(5), || info_cache(&mut c)
            ["lockget_parked"]
            == 1),
        "the waiter parks"
    );
    let t = token.unwrap().to_string();
    assert!(set(&mut c, "k", b"v", &["EX", "60", "TOKEN", &t]).is_some());
    assert_eq!(
        waiter.join().unwrap(),
        (Some(b"v".to_vec()), "HIT".to_string(), None)
    );
}

#[test]
fn writes_raise_keyspace_notifications() {
    let s = Server::start_with(&["--notify-keyspace-events", "KEA"]);
    let mut sub = s.conn();
    let mut c = s.conn();
    let mut ps = sub.as_pubsub();
    ps.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    ps.psubscribe("__keyevent@0__:*").unwrap();
    let (_, _, token) = getx(&mut c, "k", &[]);
    let t = token.unwrap().to_string();
    set(&mut c, "k", b"v", &["EX", "10", "TOKEN", &t]).unwrap();
    let _: i64 = redis::cmd("CACHE.DEL").arg("k").query(&mut c).unwrap();
    let events: Vec<String> = (0..3)
        .map(|_| ps.get_message().unwrap().get_channel_name().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "__keyevent@0__:cache.lease",
            "__keyevent@0__:cache.set",
            "__keyevent@0__:del"
        ]
    );
}

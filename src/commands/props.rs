//! Property tests of every command's parser, on byte strings (no server): arbitrary argument
//! vectors are parsed or refused as `check::parse_any` demands (never a panic, never an error
//! other than a parse error), and a valid request built here parses to what was built.

use proptest::prelude::*;
use proptest::{collection, option};

use super::check::parse_any;
use super::{apply, del, getx, lockget, release, set, tags, writebehind};
use crate::config;
use crate::core::codec::{
    decode_header, encode_aof_header, encode_header, encode_metadata_keep_ttl,
};
use crate::core::entry::{Entry, Write, MAX_SPAN_MS};
use crate::core::spoil::any_record;
use crate::core::spread::SpreadId;
use crate::core::tags::Tomb;
use crate::core::version::ID_LIMIT;

type Argv = Vec<Vec<u8>>;

/// Every command's `now`: a real instant, so that overflow checks bite near `i64::MAX`.
const NOW: i64 = 1_700_000_000_000;

/// Every word an option or a marker of some command is.
const WORDS: &[&str] = &[
    "EX", "PX", "GRACE", "DELTA", "TOKEN", "TAGS", "BETA", "LEASE", "WAIT", "COUNT", "SPREAD",
];

/// Numbers at the edges of what the parsers read (and a few they must refuse).
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "01",
    "+1",
    " 1",
    "1 ",
    "1.5",
    "-1.5",
    "0.0",
    "1e3",
    "1E-300",
    "inf",
    "-inf",
    "nan",
    "4294967295",
    "4294967296",
    "9007199254740991",
    "9007199254740992",
    "9223372036854775",
    "9223372036854776",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
];

/// `word` with each letter upper or lower case by the bits of `bits`.
fn mixed_case(word: &str, bits: u64) -> Vec<u8> {
    word.bytes()
        .enumerate()
        .map(|(i, b)| match bits >> (i % 64) & 1 {
            1 => b.to_ascii_uppercase(),
            _ => b.to_ascii_lowercase(),
        })
        .collect()
}

fn any_case(word: &'static str) -> impl Strategy<Value = Vec<u8>> {
    any::<u64>().prop_map(move |bits| mixed_case(word, bits))
}

/// One argument of an arbitrary vector.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (proptest::sample::select(WORDS), any::<u64>()).prop_map(|(w, b)| mixed_case(w, b)),
        3 => proptest::sample::select(EDGE_NUMBERS).prop_map(|n| n.as_bytes().to_vec()),
        2 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        2 => collection::vec(any::<u8>(), 0..12),
        1 => Just(Vec::new()),
        1 => prop_oneof![Just(vec![b'9'; 400]), Just(vec![b'a'; 70_000])],
        1 => any_record().prop_map(|(e, kv, kt)| header(&e, kv, kt)),
    ]
}

/// Any command of the module by name, in any case, and arguments drawn from `token`.
fn any_argv() -> impl Strategy<Value = Argv> {
    let names: Vec<&'static str> = super::table::COMMANDS
        .iter()
        .map(|c| c.name.to_str().expect("ASCII names"))
        .collect();
    (
        proptest::sample::select(names),
        any::<u64>(),
        collection::vec(token(), 0..12),
    )
        .prop_map(|(name, bits, rest)| {
            let mut argv = vec![mixed_case(name, bits)];
            argv.extend(rest);
            argv
        })
}

/// The header of a record with the flags given (value kept, TTL kept).
fn header(e: &Entry, keep_value: bool, keep_ttl: bool) -> Vec<u8> {
    match (keep_value, keep_ttl) {
        (kv, false) => encode_header(e, kv),
        (false, true) => encode_aof_header(e),
        (true, true) => encode_metadata_keep_ttl(e),
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        collection::vec(any::<u8>(), 0..24),
        proptest::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
    ]
}

/// `OPTION value` pairs in a random order, the names in random case.
fn options(pairs: Vec<(&'static str, String)>) -> impl Strategy<Value = Argv> {
    let n = pairs.len();
    (Just(pairs).prop_shuffle(), collection::vec(any::<u64>(), n)).prop_map(|(pairs, cases)| {
        pairs
            .into_iter()
            .zip(cases)
            .flat_map(|((name, v), c)| [mixed_case(name, c), v.into_bytes()])
            .collect()
    })
}

/// A valid write's options and the `Write` they make at `NOW`: a TTL (`EX` or `PX`) when
/// `ttl_required` or by chance, `GRACE` by chance, and `DELTA` and `TOKEN` by chance when
/// `fills` (not for write-behind).
fn write_options(ttl_required: bool, fills: bool) -> impl Strategy<Value = (Argv, Write)> {
    let max_ttl = i64::MAX - NOW - MAX_SPAN_MS - 1;
    let ttl = prop_oneof![
        (1..=max_ttl / 1000).prop_map(|s| ("EX", s, s * 1000)),
        (1..=max_ttl).prop_map(|ms| ("PX", ms, ms)),
        Just(("PX", max_ttl, max_ttl)),
    ];
    let ttl = match ttl_required {
        true => ttl.prop_map(Some).boxed(),
        false => option::of(ttl).boxed(),
    };
    let fill = match fills {
        true => (option::of(0..=MAX_SPAN_MS), option::of(1..=i64::MAX as u64)).boxed(),
        false => Just((None, None)).boxed(),
    };
    (ttl, option::of(0..=MAX_SPAN_MS), fill).prop_flat_map(|(ttl, grace, (delta, token))| {
        let mut pairs = Vec::new();
        if let Some((word, n, _)) = ttl {
            pairs.push((word, n.to_string()));
        }
        pairs.extend(grace.map(|g| ("GRACE", g.to_string())));
        pairs.extend(delta.map(|d| ("DELTA", d.to_string())));
        pairs.extend(token.map(|t| ("TOKEN", t.to_string())));
        let write = Write {
            ttl_ms: ttl.map(|t| t.2),
            grace_ms: grace.unwrap_or_else(config::grace_ms),
            delta_ms: delta,
            token,
        };
        (options(pairs), Just(write))
    })
}

/// Tags as given (repeats likely), and as a write keeps them: each once, in order.
fn tag_list() -> impl Strategy<Value = (Argv, Argv)> {
    let tag = prop_oneof![
        proptest::sample::select(vec!["a", "b", "tags", "TAGS"]).prop_map(|t| t.into()),
        collection::vec(any::<u8>(), 0..12),
    ];
    collection::vec(tag, 1..6).prop_map(|given| {
        let mut kept: Argv = Vec::new();
        for t in &given {
            if !kept.contains(t) {
                kept.push(t.clone());
            }
        }
        (given, kept)
    })
}

/// A positive finite `BETA`.
fn any_beta() -> impl Strategy<Value = f64> {
    proptest::num::f64::POSITIVE.prop_filter("finite", |b| b.is_finite() && *b > 0.0)
}

type TwoValues<A, B> = (
    Option<<A as Strategy>::Value>,
    Option<<B as Strategy>::Value>,
);

/// Two options, each given or not, in a random order: their values and the arguments.
fn two_options<A, B>(
    a: (&'static str, A),
    b: (&'static str, B),
) -> impl Strategy<Value = (TwoValues<A, B>, Argv)>
where
    A: Strategy,
    B: Strategy,
    A::Value: ToString + Clone,
    B::Value: ToString + Clone,
{
    let ((na, a), (nb, b)) = (a, b);
    (option::of(a), option::of(b)).prop_flat_map(move |(va, vb)| {
        let mut pairs = Vec::new();
        pairs.extend(va.clone().map(|v| (na, v.to_string())));
        pairs.extend(vb.clone().map(|v| (nb, v.to_string())));
        (Just((va, vb)), options(pairs))
    })
}

fn argv(name: &str, parts: &[&[Vec<u8>]]) -> Argv {
    let mut v = vec![name.as_bytes().to_vec()];
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any command, any arguments: parsed to a request that keeps the command's promises, or
    /// refused with a parse error.
    #[test]
    fn any_argv_is_parsed_or_refused(argv in any_argv()) {
        let checked = parse_any(&argv, NOW).expect("a command of the table");
        prop_assert!(checked.is_ok(), "{:?}", checked);
    }

    #[test]
    fn set_round_trips(name in bytes(), value in bytes(), (opts, w) in write_options(true, true)) {
        let argv = argv("CACHE.SET", &[&[name.clone(), value.clone()], &opts]);
        let r = set::parse(&argv, NOW).unwrap();
        prop_assert_eq!((r.name, r.value, r.write), (&name, &value, w));
    }

    #[test]
    fn tagset_round_trips(
        name in bytes(),
        value in bytes(),
        (opts, w) in write_options(true, true),
        (given, kept) in tag_list(),
        tags_word in any_case("TAGS"),
    ) {
        let argv = argv("cache.tagset", &[&[name.clone(), value.clone()], &opts, &[tags_word], &given]);
        let r = tags::parse_tagset(&argv, NOW).unwrap();
        prop_assert_eq!((r.name, r.value, r.write, r.tags), (&name, &value, w, kept));
    }

    #[test]
    fn wbqueue_round_trips(
        name in bytes(),
        value in bytes(),
        (opts, w) in write_options(false, false),
        tagged in option::of((tag_list(), any_case("TAGS"))),
    ) {
        let (tail, kept) = match tagged {
            Some(((given, kept), word)) => ([vec![word], given].concat(), Some(kept)),
            None => (Vec::new(), None),
        };
        let argv = argv("cache.wbqueue", &[&[name.clone(), value.clone()], &opts, &tail]);
        let r = writebehind::parse_wbqueue(&argv, NOW).unwrap();
        prop_assert_eq!((r.name, r.value, r.write, r.tags), (&name, &value, w, kept));
    }

    #[test]
    fn getx_round_trips(name in bytes(), ((beta, lease), opts) in two_options(("BETA", any_beta()), ("LEASE", 1..=i64::MAX - NOW))) {
        let argv = argv("cache.getx", &[std::slice::from_ref(&name), &opts]);
        let r = getx::parse(&argv, NOW).unwrap();
        let want_beta = beta.unwrap_or_else(config::beta);
        let want_until = NOW + lease.unwrap_or_else(config::lease_ms);
        prop_assert_eq!((r.name, r.beta, r.lease_until), (&name, want_beta, want_until));
    }

    #[test]
    fn lockget_round_trips(name in bytes(), ((px, wait), opts) in two_options(("PX", 1..=i64::MAX - NOW), ("WAIT", 1..=i64::MAX - NOW))) {
        let argv = argv("cache.lockget", &[std::slice::from_ref(&name), &opts]);
        let r = lockget::parse(&argv, NOW).unwrap();
        let lease_ms = px.unwrap_or_else(config::lease_ms);
        prop_assert_eq!(
            (r.name, r.lease_ms, r.lease_until, r.wait_ms),
            (&name, lease_ms, NOW + lease_ms, wait)
        );
    }

    #[test]
    fn release_round_trips(name in bytes(), token in 1..=i64::MAX as u64) {
        let argv = argv("cache.release", &[&[name.clone(), token.to_string().into()]]);
        let r = release::parse(&argv).unwrap();
        prop_assert_eq!((r.name, r.token), (&name, token));
    }

    #[test]
    fn del_and_taginvalidate_round_trip(names in collection::vec(bytes(), 1..6)) {
        let d = argv("cache.del", &[&names]);
        prop_assert_eq!(del::parse(&d).unwrap(), &names[..]);
        let t = argv("cache.taginvalidate", &[&names]);
        prop_assert_eq!(tags::parse_taginvalidate(&t).unwrap(), &names[..]);
    }

    #[test]
    fn tagscan_round_trips(
        tag in bytes(),
        cursor in any::<u64>(),
        count in option::of((1..=i64::MAX, any_case("COUNT"))),
    ) {
        let tail: Argv = count.iter().flat_map(|(n, w)| [w.clone(), n.to_string().into()]).collect();
        let argv = argv("cache.tagscan", &[&[tag.clone(), cursor.to_string().into()], &tail]);
        let r = tags::parse_tagscan(&argv).unwrap();
        let want = count.map_or(10, |(n, _)| n as usize);
        prop_assert_eq!((r.tag, r.cursor, r.count), (&tag, cursor, want));
    }

    #[test]
    fn tagapply_round_trips(
        spread in option::of((any_case("SPREAD"), collection::vec(any::<u8>(), 0..40), 0..=i64::MAX as u64)),
        id in 1..ID_LIMIT,
        until_ms in any::<i64>(),
        (given, _) in tag_list(),
    ) {
        let head: Argv = spread
            .iter()
            .flat_map(|(w, o, s)| [w.clone(), o.clone(), s.to_string().into()])
            .collect();
        let argv = argv("cache.tagapply", &[&head, &[id.to_string().into(), until_ms.to_string().into()], &given]);
        let r = tags::parse_tagapply(&argv).unwrap();
        let from = spread.map(|(_, origin, seq)| SpreadId { origin, seq });
        prop_assert_eq!((r.from, r.tomb, r.tags), (from, Tomb { id, until_ms }, &given[..]));
    }

    #[test]
    fn apply_round_trips(name in bytes(), (e, kv, kt) in any_record(), value in bytes()) {
        let h = header(&e, kv, kt);
        let decoded = decode_header(&h).unwrap();
        let with_value = argv("cache.apply", &[&[name.clone(), h.clone(), value.clone()]]);
        let without = argv("cache.apply", &[&[name.clone(), h]]);
        for (argv, v) in [(&with_value, Some(&value)), (&without, None)] {
            let r = apply::parse(argv).unwrap();
            prop_assert_eq!((r.name, &r.header, r.value), (&name, &decoded, v));
        }
    }

    #[test]
    fn one_argument_commands_round_trip(arg in bytes()) {
        for name in ["cache.get", "cache.inspect", "cache.tags", "cache.tagcount", "cache.wbdel"] {
            let argv = argv(name, &[std::slice::from_ref(&arg)]);
            prop_assert_eq!(super::args::parse_one(&argv, name).unwrap(), &arg);
            prop_assert_eq!(parse_any(&argv, NOW), Some(Ok(())));
        }
    }
}

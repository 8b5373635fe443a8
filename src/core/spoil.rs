//! Test support for the property tests of every decoder: entries in every state, and the ways
//! a payload gets spoiled (a crafted RESTORE, a broken replication stream, a corrupted bus
//! message).

use proptest::prelude::*;

use crate::core::entry::{Entry, Lease, MAX_SPAN_MS, NEVER};
use crate::core::version::ID_LIMIT;

/// An entry in any state a server stores (pending, fresh, in grace, never stale; leased or
/// not; tagged or not) with the flags of any record that carries it.
pub fn any_record() -> impl Strategy<Value = (Entry, bool, bool)> {
    let time = prop_oneof![
        Just(0i64),
        Just(NEVER),
        Just(i64::MIN),
        1_600_000_000_000i64..1_800_000_000_000,
        any::<i64>(),
    ];
    let span = prop_oneof![Just(0i64), Just(MAX_SPAN_MS), 0..=MAX_SPAN_MS];
    let id = prop_oneof![Just(0u64), Just(ID_LIMIT - 1), 0..ID_LIMIT];
    let lease = proptest::option::of((1..ID_LIMIT, time.clone(), time.clone()));
    let tag = proptest::collection::vec(any::<u8>(), 0..24);
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        (time, span.clone(), span, id),
        lease,
        proptest::collection::vec(tag, 0..5),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(value, (fresh, grace, delta, version), lease, tags, (kv, kt))| {
                let mut e = Entry::new(
                    value.map(Vec::into_boxed_slice),
                    fresh,
                    grace,
                    delta,
                    version,
                );
                e.set_lease(lease.map(|(token, granted_ms, expires_ms)| Lease {
                    token,
                    granted_ms,
                    expires_ms,
                }));
                e.set_tags(&tags);
                (e, kv, kt)
            },
        )
}

/// One way of spoiling a payload: what a crafted RESTORE or a broken replication stream
/// could bring.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    /// The head of this payload, then the tail of another from this offset.
    Splice(usize, usize),
    /// A little-endian u32 or u64 (a count, a length, a time) written at an offset.
    Word(usize, u64, bool),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        at.prop_map(Mutation::Truncate),
        (at, any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (at, at).prop_map(|(a, b)| Mutation::Splice(a, b)),
        (
            at,
            prop_oneof![
                Just(0u64),
                Just(u32::MAX as u64),
                Just(u64::MAX),
                any::<u64>()
            ],
            any::<bool>()
        )
            .prop_map(|(a, w, wide)| Mutation::Word(a, w, wide)),
    ]
}

pub fn spoil(mut buf: Vec<u8>, m: &Mutation, other: &[u8]) -> Vec<u8> {
    let at = |a: usize, len: usize| if len == 0 { 0 } else { a % len };
    match m {
        Mutation::Flip(a, bit) => {
            if !buf.is_empty() {
                let i = at(*a, buf.len());
                buf[i] ^= 1 << bit;
            }
        }
        Mutation::Truncate(n) => buf.truncate(at(*n, buf.len())),
        Mutation::Insert(a, b) => buf.insert(at(*a, buf.len() + 1), *b),
        Mutation::Splice(a, b) => {
            buf.truncate(at(*a, buf.len() + 1));
            buf.extend_from_slice(&other[at(*b, other.len() + 1)..]);
        }
        Mutation::Word(a, w, wide) => {
            let bytes = if *wide {
                w.to_le_bytes().to_vec()
            } else {
                (*w as u32).to_le_bytes().to_vec()
            };
            if buf.len() >= bytes.len() {
                let i = at(*a, buf.len() - bytes.len() + 1);
                buf[i..i + bytes.len()].copy_from_slice(&bytes);
            }
        }
    }
    buf
}

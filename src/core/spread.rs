//! Cluster-wide tag invalidation, the part that needs no server: the messages primaries send
//! each other over the cluster bus, the record a node keeps of an invalidation it started
//! (which primaries have confirmed, what they counted, when to send again), and the record of
//! invalidations a node has applied (so that a resend or a duplicate changes nothing and is
//! confirmed with the same count).
//!
//! Messages are small and self-describing (little-endian):
//! ```text
//! u8 kind (1 = invalidate, 2 = confirm)
//! u8 origin length, origin node id bytes, u64 sequence        (the invalidation's id)
//! invalidate: i32 db, u32 tag count, then per tag u32 length and bytes
//! confirm:    u64 count
//! ```
//! Decoding checks every length against the bytes there, as the entry codec does.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// An invalidation's id: the node that started it and its sequence number there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpreadId {
    pub origin: Vec<u8>,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Invalidate these tags in `db`, and confirm with how many entries it invalidated.
    Invalidate {
        id: SpreadId,
        db: i32,
        tags: Vec<Vec<u8>>,
    },
    /// The node applied invalidation `id`, invalidating `count` entries.
    Confirm { id: SpreadId, count: u64 },
}

const INVALIDATE: u8 = 1;
const CONFIRM: u8 = 2;

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let id = match self {
            Message::Invalidate { id, .. } => {
                out.push(INVALIDATE);
                id
            }
            Message::Confirm { id, .. } => {
                out.push(CONFIRM);
                id
            }
        };
        let origin = &id.origin[..id.origin.len().min(255)];
        out.push(origin.len() as u8);
        out.extend_from_slice(origin);
        out.extend_from_slice(&id.seq.to_le_bytes());
        match self {
            Message::Invalidate { db, tags, .. } => {
                out.extend_from_slice(&db.to_le_bytes());
                out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
                for t in tags {
                    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                    out.extend_from_slice(t);
                }
            }
            Message::Confirm { count, .. } => out.extend_from_slice(&count.to_le_bytes()),
        }
        out
    }

    /// The message in `buf`; `None` for anything truncated, unknown or with bytes left over.
    pub fn decode(buf: &[u8]) -> Option<Message> {
        let mut r = buf;
        let mut take = |n: usize| -> Option<&[u8]> {
            if r.len() < n {
                return None;
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Some(head)
        };
        let kind = take(1)?[0];
        let len = take(1)?[0] as usize;
        let origin = take(len)?.to_vec();
        let seq = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let id = SpreadId { origin, seq };
        let msg = match kind {
            INVALIDATE => {
                let db = i32::from_le_bytes(take(4)?.try_into().ok()?);
                let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                let mut tags = Vec::new();
                for _ in 0..n {
                    let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                    tags.push(take(len)?.to_vec());
                }
                if tags.is_empty() {
                    return None;
                }
                Message::Invalidate { id, db, tags }
            }
            CONFIRM => Message::Confirm {
                id,
                count: u64::from_le_bytes(take(8)?.try_into().ok()?),
            },
            _ => return None,
        };
        r.is_empty().then_some(msg)
    }
}

/// An invalidation this node started: the primaries it waits for, what each confirmed.
#[derive(Clone, Debug)]
pub struct Outstanding {
    pub local_count: u64,
    started_ms: i64,
    next_send_ms: i64,
    resend_every_ms: i64,
    /// Node id -> its count, once it confirmed.
    nodes: BTreeMap<Vec<u8>, Option<u64>>,
}

/// Where an outstanding invalidation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every primary confirmed: the cluster total.
    Done(u64),
    /// Still waiting for these nodes.
    Waiting(Vec<Vec<u8>>),
}

impl Outstanding {
    pub fn new(local_count: u64, others: &[Vec<u8>], now_ms: i64, resend_every_ms: i64) -> Self {
        Outstanding {
            local_count,
            started_ms: now_ms,
            next_send_ms: now_ms.saturating_add(resend_every_ms),
            resend_every_ms: resend_every_ms.max(1),
            nodes: others.iter().map(|n| (n.clone(), None)).collect(),
        }
    }

    /// `node` confirmed with `count`. A confirmation from a node not waited for, or a
    /// repeated one, changes nothing.
    pub fn confirm(&mut self, node: &[u8], count: u64) {
        if let Some(slot) = self.nodes.get_mut(node) {
            slot.get_or_insert(count);
        }
    }

    pub fn progress(&self) -> Progress {
        let missing: Vec<Vec<u8>> = self
            .nodes
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        if missing.is_empty() {
            Progress::Done(self.local_count + self.nodes.values().flatten().sum::<u64>())
        } else {
            Progress::Waiting(missing)
        }
    }

    /// When the invalidation was first sent.
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// Follows the cluster's primaries as they are now: a node waited for that is no longer a
    /// primary (it failed over and came back as a replica, or left) is no longer waited for,
    /// and a new primary (a promoted replica, whose primary may have died before applying)
    /// is. Confirmed nodes keep their counts. Returns the nodes added, to send to at once.
    pub fn follow_primaries(&mut self, primaries: &[Vec<u8>]) -> Vec<Vec<u8>> {
        self.nodes
            .retain(|n, count| count.is_some() || primaries.contains(n));
        let added: Vec<Vec<u8>> = primaries
            .iter()
            .filter(|p| !self.nodes.contains_key(*p))
            .cloned()
            .collect();
        for p in &added {
            self.nodes.insert(p.clone(), None);
        }
        added
    }

    /// How many other primaries this invalidation is for (confirmed or not).
    pub fn primaries(&self) -> usize {
        self.nodes.len()
    }

    /// When the next resend is due.
    pub fn next_send_ms(&self) -> i64 {
        self.next_send_ms
    }

    /// The nodes to send the invalidation to again at `now_ms` (those that have not
    /// confirmed, once every `resend_every_ms`).
    pub fn due_resends(&mut self, now_ms: i64) -> Vec<Vec<u8>> {
        if now_ms < self.next_send_ms {
            return Vec::new();
        }
        self.next_send_ms = now_ms.saturating_add(self.resend_every_ms);
        match self.progress() {
            Progress::Done(_) => Vec::new(),
            Progress::Waiting(nodes) => nodes,
        }
    }
}

/// The invalidations this node applied for others, with what each counted, so that a resend
/// is confirmed with the same count and applied once. Bounded: the oldest are forgotten past
/// `capacity` (a resend that old is applied again, which invalidates nothing new that was
/// written before it, and counts only entries written since: harmless).
#[derive(Clone, Debug)]
pub struct Applied {
    counts: HashMap<SpreadId, u64>,
    order: VecDeque<SpreadId>,
    capacity: usize,
}

impl Applied {
    pub fn new(capacity: usize) -> Applied {
        Applied {
            counts: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The count `id` was applied with, if it was.
    pub fn get(&self, id: &SpreadId) -> Option<u64> {
        self.counts.get(id).copied()
    }

    /// `id` was applied, invalidating `count` entries. A second record of the same id keeps
    /// the first count.
    pub fn record(&mut self, id: &SpreadId, count: u64) {
        if self.counts.contains_key(id) {
            return;
        }
        self.counts.insert(id.clone(), count);
        self.order.push_back(id.clone());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.counts.remove(&old);
            }
        }
    }
}

/// What the property tests and the fuzz targets (`fuzz/`) check of any bytes received.
#[cfg(any(test, feature = "fuzzing"))]
pub mod check {
    use super::*;

    /// A message received either is refused or is exactly what its encoding sends, with a
    /// tag to invalidate.
    pub fn decode(buf: &[u8]) -> Result<Option<Message>, String> {
        let Some(m) = Message::decode(buf) else {
            return Ok(None);
        };
        if let Message::Invalidate { tags, .. } = &m {
            if tags.is_empty() {
                return Err("an invalidation of no tags decoded".into());
            }
        }
        match m.encode() == buf {
            true => Ok(Some(m)),
            false => Err(format!("{m:?} encodes to other bytes than {buf:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::spoil::{mutation, spoil};
    use proptest::prelude::*;

    fn id(seq: u64) -> SpreadId {
        SpreadId {
            origin: b"a1b2c3".to_vec(),
            seq,
        }
    }

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let inv = Message::Invalidate {
            id: id(7),
            db: 3,
            tags: vec![b"tenant:1".to_vec(), vec![], b"\0\xff".to_vec()],
        };
        let conf = Message::Confirm {
            id: id(7),
            count: 12,
        };
        for m in [&inv, &conf] {
            let buf = m.encode();
            assert_eq!(Message::decode(&buf).as_ref(), Some(m));
            for n in 0..buf.len() {
                assert_eq!(Message::decode(&buf[..n]), None, "prefix of {n}");
            }
            let mut long = buf.clone();
            long.push(0);
            assert_eq!(Message::decode(&long), None);
        }
        let mut unknown = conf.encode();
        unknown[0] = 9;
        assert_eq!(Message::decode(&unknown), None);
        let no_tags = Message::Invalidate {
            id: id(1),
            db: 0,
            tags: vec![],
        };
        assert_eq!(Message::decode(&no_tags.encode()), None);
    }

    #[test]
    fn outstanding_waits_for_every_primary_and_resends_to_the_silent() {
        let nodes = vec![b"n2".to_vec(), b"n3".to_vec()];
        let mut o = Outstanding::new(5, &nodes, 1_000, 100);
        assert_eq!(o.progress(), Progress::Waiting(nodes.clone()));
        assert!(o.due_resends(1_050).is_empty(), "not yet");
        o.confirm(b"n2", 7);
        o.confirm(b"n2", 99);
        o.confirm(b"stranger", 1);
        assert_eq!(o.due_resends(1_100), vec![b"n3".to_vec()]);
        assert!(o.due_resends(1_150).is_empty());
        assert_eq!(o.started_ms(), 1_000);
        o.confirm(b"n3", 0);
        assert_eq!(o.progress(), Progress::Done(12));
        assert!(o.due_resends(5_000).is_empty());
        assert_eq!(
            Outstanding::new(4, &[], 0, 100).progress(),
            Progress::Done(4)
        );
    }

    #[test]
    fn applied_once_per_id_and_bounded() {
        let mut a = Applied::new(2);
        assert_eq!(a.get(&id(1)), None);
        a.record(&id(1), 10);
        a.record(&id(1), 99);
        assert_eq!(a.get(&id(1)), Some(10), "a resend: the first count");
        a.record(&id(2), 2);
        a.record(&id(3), 3);
        assert_eq!(a.get(&id(1)), None, "forgotten past the capacity");
        assert_eq!((a.get(&id(2)), a.get(&id(3))), (Some(2), Some(3)));
    }

    #[test]
    fn outstanding_follows_failover() {
        let (a, b, c, c2) = (b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"c2".to_vec());
        let mut o = Outstanding::new(1, &[a.clone(), b.clone(), c.clone()], 0, 100);
        o.confirm(&b, 4);
        // b confirmed then became a replica; c died and its replica c2 took over.
        assert_eq!(
            o.follow_primaries(&[a.clone(), c2.clone()]),
            vec![c2.clone()]
        );
        assert_eq!(o.progress(), Progress::Waiting(vec![a.clone(), c2.clone()]));
        assert!(o.follow_primaries(&[a.clone(), c2.clone()]).is_empty());
        o.confirm(&a, 2);
        o.confirm(&c2, 3);
        assert_eq!(o.progress(), Progress::Done(1 + 4 + 2 + 3));
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let id = (
            proptest::collection::vec(any::<u8>(), 0..=255),
            any::<u64>(),
        )
            .prop_map(|(origin, seq)| SpreadId { origin, seq });
        let tags = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5);
        prop_oneof![
            (id.clone(), any::<i32>(), tags).prop_map(|(id, db, tags)| Message::Invalidate {
                id,
                db,
                tags
            }),
            (id, any::<u64>()).prop_map(|(id, count)| Message::Confirm { id, count }),
        ]
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(m) = Message::decode(&buf) {
                prop_assert_eq!(m.encode(), buf);
            }
        }

        #[test]
        fn messages_round_trip(m in any_message()) {
            prop_assert_eq!(Message::decode(&m.encode()), Some(m.clone()));
            prop_assert_eq!(check::decode(&m.encode()), Ok(Some(m)));
        }

        #[test]
        fn spoiled_messages_are_refused_or_decode_consistently(
            m in any_message(),
            other in any_message(),
            ms in proptest::collection::vec(mutation(), 1..4),
        ) {
            let other = other.encode();
            let buf = ms.iter().fold(m.encode(), |b, m| spoil(b, m, &other));
            let checked = check::decode(&buf);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }
    }
}

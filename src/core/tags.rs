//! The tag index: which live entries carry which tag, per database. Derived state: the
//! entries hold their tags, and this index is kept true on every path by which an entry
//! appears, changes its tags or goes, and rebuilt from the keyspace after a load.
//!
//! An entry is known by an opaque [`EntryId`] (the storage layer uses the entry's address,
//! which Redis keeps while the value lives), so that a path that only sees the value (Redis's
//! `unlink` callback) can take it out. Each membership has a sequence number from one counter:
//! `scan` walks a tag's members in that order, so a cursor is just the next number to look at,
//! and an entry that carries the tag for a whole iteration is returned at least once however
//! the index changes meanwhile (a member added later gets a larger number).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Identifies a live entry (the storage layer's choice: its address).
pub type EntryId = usize;

/// A (database, tag) pair, interned: memberships hold this instead of the tag's bytes.
type TagId = u32;

/// One (database, tag): its name and its members in sequence order.
#[derive(Debug, Clone)]
struct TagSet {
    db: i32,
    name: Box<[u8]>,
    members: BTreeMap<u64, EntryId>,
}

/// What one indexed entry is: where it lives, and its memberships (tag, sequence number).
#[derive(Debug, Clone)]
struct Member {
    db: i32,
    key: Box<[u8]>,
    tags: Box<[(TagId, u64)]>,
}

/// Approximate bytes beyond the strings: an entry (its map slot and boxes), a membership (a
/// B-tree slot and its pair), a tag (its set and lookup slots).
const PER_ENTRY: usize = 64;
const PER_MEMBERSHIP: usize = 40;
const PER_TAG: usize = 112;

#[derive(Debug, Default, Clone)]
pub struct TagIndex {
    /// tag -> the databases it is used in, with their ids.
    ids: HashMap<Box<[u8]>, Vec<(i32, TagId)>>,
    /// TagId -> its set; `None` for a free slot (listed in `free`).
    sets: Vec<Option<TagSet>>,
    free: Vec<TagId>,
    entries: HashMap<EntryId, Member>,
    next_seq: u64,
    bytes: usize,
    /// tag -> per database, the invalidation in force (see `Tomb`).
    tombs: HashMap<Box<[u8]>, Vec<(i32, Tomb)>>,
    /// Invalidated entries still in the keyspace, to be removed in slices.
    pending: VecDeque<(i32, Pending)>,
    /// How many entries `pending` holds.
    pending_len: usize,
}

/// Entries to remove: a whole tag's members as the invalidation took them (moved, not
/// copied: the call is O(1) in the tag's size), or one key found by a rebuild.
#[derive(Debug, Clone)]
enum Pending {
    Members(BTreeMap<u64, EntryId>),
    Key(Box<[u8]>),
}

impl Pending {
    fn len(&self) -> usize {
        match self {
            Pending::Members(m) => m.len(),
            Pending::Key(_) => 1,
        }
    }
}

/// A tag's invalidation: every entry of the database that carries the tag and has a version
/// below `id` is invalidated (reads as absent, then removed), and a fill whose lease token is
/// below `id` may not bring the tag back. Kept until the removal is done and `until_ms` (when
/// every lease granted before the invalidation has ended) has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tomb {
    pub id: u64,
    pub until_ms: i64,
}

impl TagIndex {
    pub fn new() -> TagIndex {
        TagIndex::default()
    }

    fn lookup(&self, db: i32, tag: &[u8]) -> Option<&TagSet> {
        let (_, id) = self.ids.get(tag)?.iter().find(|(d, _)| *d == db)?;
        self.sets[*id as usize].as_ref()
    }

    /// The id of (db, tag), made when it is new.
    fn intern(&mut self, db: i32, tag: &[u8]) -> TagId {
        if let Some((_, id)) = self
            .ids
            .get(tag)
            .and_then(|v| v.iter().find(|(d, _)| *d == db))
        {
            return *id;
        }
        let set = TagSet {
            db,
            name: tag.into(),
            members: BTreeMap::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.sets[id as usize] = Some(set);
                id
            }
            None => {
                self.sets.push(Some(set));
                (self.sets.len() - 1) as TagId
            }
        };
        self.ids.entry(tag.into()).or_default().push((db, id));
        self.bytes += PER_TAG + 2 * tag.len();
        id
    }

    /// Frees (db, tag) once it has no members.
    fn release(&mut self, id: TagId) {
        let Some(set) = self.sets[id as usize].take() else {
            return;
        };
        self.bytes -= PER_TAG + 2 * set.name.len();
        if let Some(v) = self.ids.get_mut(&set.name) {
            v.retain(|(_, i)| *i != id);
            if v.is_empty() {
                self.ids.remove(&set.name);
            }
        }
        self.free.push(id);
    }

    /// The entry `id`, at `key` in `db`, carries exactly `tags` now (none: it leaves the
    /// index). Repeated tags count once.
    pub fn set<I>(&mut self, id: EntryId, db: i32, key: &[u8], tags: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.remove(id);
        let mut memberships: Vec<(TagId, u64)> = Vec::new();
        for tag in tags {
            let tid = self.intern(db, tag.as_ref());
            if memberships.iter().any(|(t, _)| *t == tid) {
                continue;
            }
            self.next_seq += 1;
            let seq = self.next_seq;
            if let Some(set) = self.sets[tid as usize].as_mut() {
                set.members.insert(seq, id);
            }
            memberships.push((tid, seq));
        }
        if memberships.is_empty() {
            return;
        }
        self.bytes += PER_ENTRY + key.len() + memberships.len() * PER_MEMBERSHIP;
        self.entries.insert(
            id,
            Member {
                db,
                key: key.into(),
                tags: memberships.into_boxed_slice(),
            },
        );
    }

    /// The entry `id` is gone (or carries no tags any more). Whether it was indexed.
    pub fn remove(&mut self, id: EntryId) -> bool {
        let Some(member) = self.entries.remove(&id) else {
            return false;
        };
        self.bytes -= PER_ENTRY + member.key.len() + member.tags.len() * PER_MEMBERSHIP;
        for &(tid, seq) in member.tags.iter() {
            let empty = match self.sets[tid as usize].as_mut() {
                Some(set) => {
                    set.members.remove(&seq);
                    set.members.is_empty()
                }
                None => false,
            };
            if empty {
                self.release(tid);
            }
        }
        true
    }

    /// `FLUSHDB` of `db`.
    pub fn flush_db(&mut self, db: i32) {
        let ids: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(_, m)| m.db == db)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id);
        }
        for v in self.tombs.values_mut() {
            v.retain(|(d, _)| *d != db);
        }
        self.tombs.retain(|_, v| !v.is_empty());
        self.pending.retain(|(d, _)| *d != db);
        self.pending_len = self.pending.iter().map(|(_, p)| p.len()).sum();
    }

    /// `FLUSHALL`, or a load that replaces the keyspace.
    pub fn clear(&mut self) {
        let next_seq = self.next_seq;
        *self = TagIndex::new();
        self.next_seq = next_seq;
    }

    /// Drops the entries of the index but keeps the invalidations and their queue (a rebuild
    /// from the keyspace after a load that brought the invalidations with it).
    pub fn clear_entries(&mut self) {
        let tombs = std::mem::take(&mut self.tombs);
        self.clear();
        self.tombs = tombs;
    }

    /// `SWAPDB a b`: the entries of each database now live in the other.
    pub fn swap_db(&mut self, a: i32, b: i32) {
        if a == b {
            return;
        }
        let swap = |db: i32| match db {
            x if x == a => b,
            x if x == b => a,
            x => x,
        };
        for m in self.entries.values_mut() {
            m.db = swap(m.db);
        }
        for set in self.sets.iter_mut().flatten() {
            set.db = swap(set.db);
        }
        for v in self.ids.values_mut() {
            for (db, _) in v.iter_mut() {
                *db = swap(*db);
            }
        }
        for v in self.tombs.values_mut() {
            for (db, _) in v.iter_mut() {
                *db = swap(*db);
            }
        }
        for (db, _) in self.pending.iter_mut() {
            *db = swap(*db);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Invalidation
    // -----------------------------------------------------------------------------------------

    /// Invalidates `tags` in `db` as of `tomb.id`: their members queue for removal, moved out
    /// of the tags' sets in O(1) per tag (the entries keep their other memberships until their
    /// slice removes them). Returns how many entries it invalidated, each counted once: the
    /// members of the second and later tags are checked against the earlier ones.
    pub fn invalidate(&mut self, db: i32, tags: &[&[u8]], tomb: Tomb) -> usize {
        let mut taken: Vec<TagId> = Vec::new();
        let mut n = 0;
        for tag in tags {
            let v = self.tombs.entry((*tag).into()).or_default();
            match v.iter_mut().find(|(d, _)| *d == db) {
                Some((_, t)) => {
                    t.id = t.id.max(tomb.id);
                    t.until_ms = t.until_ms.max(tomb.until_ms);
                }
                None => v.push((db, tomb)),
            }
            let Some((_, tid)) = self
                .ids
                .get(*tag)
                .and_then(|v| v.iter().find(|(d, _)| *d == db))
                .copied()
            else {
                continue;
            };
            let Some(set) = self.sets[tid as usize].as_mut() else {
                continue;
            };
            let members = std::mem::take(&mut set.members);
            n += if taken.is_empty() {
                members.len()
            } else {
                members
                    .values()
                    .filter(|id| {
                        !self
                            .entries
                            .get(*id)
                            .is_some_and(|m| m.tags.iter().any(|(t, _)| taken.contains(t)))
                    })
                    .count()
            };
            self.release(tid);
            taken.push(tid);
            self.pending_len += members.len();
            self.pending.push_back((db, Pending::Members(members)));
        }
        n
    }

    /// The invalidation of `tag` in `db`, if one is in force.
    pub fn tomb(&self, db: i32, tag: &[u8]) -> Option<Tomb> {
        self.tombs
            .get(tag)?
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, t)| *t)
    }

    pub fn has_tombs(&self) -> bool {
        !self.tombs.is_empty()
    }

    /// Whether an entry of `db` with these tags and this version is invalidated.
    pub fn is_invalidated<I>(&self, db: i32, tags: I, version: u64) -> bool
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.has_tombs()
            && tags.into_iter().any(|t| {
                self.tomb(db, t.as_ref())
                    .is_some_and(|tomb| version < tomb.id)
            })
    }

    /// Whether a fill with lease `token` may carry these tags in `db`: not when one of them
    /// was invalidated after the lease was granted.
    pub fn fill_allowed<I>(&self, db: i32, tags: I, token: u64) -> bool
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        !self.is_invalidated(db, tags, token)
    }

    /// Every invalidation in force: (db, tag, tomb), for saving.
    pub fn tombs(&self) -> Vec<(i32, Vec<u8>, Tomb)> {
        self.tombs
            .iter()
            .flat_map(|(tag, v)| v.iter().map(move |(db, t)| (*db, tag.to_vec(), *t)))
            .collect()
    }

    /// Queues the entry at `key` in `db` for removal (found invalidated by a rebuild).
    pub fn queue_removal(&mut self, db: i32, key: &[u8]) {
        self.pending.push_back((db, Pending::Key(key.into())));
        self.pending_len += 1;
    }

    /// Up to `n` entries to remove next: (db, key). An entry gone meanwhile is skipped; one
    /// whose address a new entry took is returned under the new key, which the caller leaves
    /// alone unless it too is invalidated.
    pub fn take_pending(&mut self, n: usize) -> Vec<(i32, Box<[u8]>)> {
        let mut out = Vec::new();
        let mut taken = 0;
        while taken < n {
            let Some((db, p)) = self.pending.front_mut() else {
                break;
            };
            let db = *db;
            match p {
                Pending::Key(_) => {
                    if let Some((_, Pending::Key(k))) = self.pending.pop_front() {
                        out.push((db, k));
                    }
                    taken += 1;
                }
                Pending::Members(m) => {
                    while taken < n {
                        let Some((_, id)) = m.pop_first() else {
                            break;
                        };
                        taken += 1;
                        if let Some(member) = self.entries.get(&id) {
                            out.push((member.db, member.key.clone()));
                        }
                    }
                    if m.is_empty() {
                        self.pending.pop_front();
                    }
                }
            }
        }
        self.pending_len -= taken;
        out
    }

    pub fn pending_removal(&self) -> usize {
        self.pending_len
    }

    /// With nothing left to remove, drops the invalidations whose leases have all ended by
    /// `now_ms`. Returns when the next one may be dropped, if any remains.
    pub fn drop_tombs(&mut self, now_ms: i64) -> Option<i64> {
        if !self.pending.is_empty() {
            return None;
        }
        for v in self.tombs.values_mut() {
            v.retain(|(_, t)| t.until_ms >= now_ms);
        }
        self.tombs.retain(|_, v| !v.is_empty());
        self.tombs
            .values()
            .flat_map(|v| v.iter().map(|(_, t)| t.until_ms))
            .min()
    }

    /// How many entries of `db` carry `tag`.
    pub fn count(&self, db: i32, tag: &[u8]) -> usize {
        self.lookup(db, tag).map_or(0, |s| s.members.len())
    }

    /// Up to `count` keys of `db` carrying `tag`, from `cursor` on (0 starts), and the cursor
    /// to go on from (0 when the walk is done).
    pub fn scan(&self, db: i32, tag: &[u8], cursor: u64, count: usize) -> (u64, Vec<Vec<u8>>) {
        let Some(set) = self.lookup(db, tag) else {
            return (0, Vec::new());
        };
        let mut keys = Vec::new();
        for (seq, id) in set.members.range(cursor..) {
            keys.push(self.entries[id].key.to_vec());
            if keys.len() >= count.max(1) {
                let next = seq + 1;
                let more = set.members.range(next..).next().is_some();
                return (if more { next } else { 0 }, keys);
            }
        }
        (0, keys)
    }

    /// Distinct (database, tag) pairs.
    pub fn tag_count(&self) -> usize {
        self.sets.len() - self.free.len()
    }

    /// Entries that carry at least one tag.
    pub fn tagged_entries(&self) -> usize {
        self.entries.len()
    }

    /// An estimate of the index's heap bytes (0 when empty).
    pub fn heap_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn t(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn set_replaces_tags_and_remove_forgets() {
        let mut ix = TagIndex::new();
        ix.set(1, 0, b"a", &[t("x"), t("y"), t("x")]);
        ix.set(2, 0, b"b", &[t("x")]);
        assert_eq!((ix.count(0, b"x"), ix.count(0, b"y")), (2, 1));
        ix.set(1, 0, b"a", &[t("z")]);
        assert_eq!(
            (ix.count(0, b"x"), ix.count(0, b"y"), ix.count(0, b"z")),
            (1, 0, 1)
        );
        assert!(ix.remove(2));
        assert!(!ix.remove(2));
        ix.set(1, 0, b"a", &[] as &[Vec<u8>]);
        assert_eq!(
            (ix.tag_count(), ix.tagged_entries(), ix.heap_bytes()),
            (0, 0, 0)
        );
    }

    #[test]
    fn databases_are_apart_and_swap() {
        let mut ix = TagIndex::new();
        ix.set(1, 0, b"a", &[t("x")]);
        ix.set(2, 3, b"a", &[t("x")]);
        ix.set(3, 3, b"b", &[t("x")]);
        assert_eq!((ix.count(0, b"x"), ix.count(3, b"x")), (1, 2));
        ix.swap_db(0, 3);
        assert_eq!((ix.count(0, b"x"), ix.count(3, b"x")), (2, 1));
        ix.flush_db(0);
        assert_eq!((ix.count(0, b"x"), ix.count(3, b"x")), (0, 1));
        assert_eq!(ix.scan(3, b"x", 0, 10), (0, vec![t("a")]));
        ix.clear();
        assert_eq!(ix.heap_bytes(), 0);
    }

    #[test]
    fn scan_walks_in_pages_and_ends_at_zero() {
        let mut ix = TagIndex::new();
        for i in 0..25usize {
            ix.set(i, 0, format!("k{i}").as_bytes(), &[t("x")]);
        }
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, keys) = ix.scan(0, b"x", cursor, 10);
            assert!(keys.len() <= 10);
            seen.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(seen.len(), 25);
        assert_eq!(ix.scan(0, b"nope", 0, 10), (0, vec![]));
    }

    #[test]
    fn invalidation_takes_members_out_and_fences_older_versions_and_leases() {
        let mut ix = TagIndex::new();
        ix.set(1, 0, b"a", &[t("x"), t("y")]);
        ix.set(2, 0, b"b", &[t("x")]);
        ix.set(3, 0, b"c", &[t("y")]);
        ix.set(4, 1, b"a", &[t("x")]);
        let tomb = Tomb {
            id: 100,
            until_ms: 5_000,
        };
        // One call, two tags: `a` carries both and counts once.
        assert_eq!(ix.invalidate(0, &[b"x", b"y"], tomb), 3);
        assert_eq!(
            (ix.count(0, b"x"), ix.count(0, b"y"), ix.count(1, b"x")),
            (0, 0, 1)
        );
        assert_eq!(ix.pending_removal(), 4, "a is queued under both tags");
        assert!(ix.is_invalidated(0, &[t("x")], 99));
        assert!(!ix.is_invalidated(0, &[t("x")], 100));
        assert!(
            !ix.is_invalidated(1, &[t("x")], 99),
            "other databases are apart"
        );
        assert!(!ix.fill_allowed(0, &[t("z"), t("y")], 50));
        assert!(ix.fill_allowed(0, &[t("z")], 50));
        assert!(ix.fill_allowed(0, &[t("y")], 101));
        // Tombs stay while removal is pending, then until their leases have ended.
        assert_eq!(ix.drop_tombs(10_000), None);
        assert_eq!(ix.tombs().len(), 2);
        let first = ix.take_pending(2);
        assert_eq!(first.len(), 2);
        // The storage layer removes what it was given: the index forgets those entries.
        for id in [1, 2, 3] {
            ix.remove(id);
        }
        assert_eq!(ix.take_pending(5).len(), 0, "gone meanwhile: skipped");
        assert_eq!(ix.pending_removal(), 0);
        assert_eq!(ix.drop_tombs(1_000), Some(5_000));
        assert_eq!(ix.drop_tombs(5_001), None);
        assert!(!ix.has_tombs());
        assert!(!ix.is_invalidated(0, &[t("x")], 1));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, i32, u8, Vec<u8>),
        Remove(usize),
        FlushDb(i32),
        Swap(i32, i32),
        ScanStep(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..12, 0i32..3, 0u8..8, proptest::collection::vec(0u8..4, 0..4))
                .prop_map(|(id, db, k, tags)| Op::Set(id, db, k, tags)),
            2 => (0usize..12).prop_map(Op::Remove),
            1 => (0i32..3).prop_map(Op::FlushDb),
            1 => (0i32..3, 0i32..3).prop_map(|(a, b)| Op::Swap(a, b)),
            3 => (1usize..4).prop_map(Op::ScanStep),
        ]
    }

    proptest! {
        /// Against a plain model: counts agree after any sequence of changes, the index's
        /// memory returns to 0 when it is empty, and a scan of tag 0 in db 0, run through the
        /// changes, returns every entry that carried the tag there from its start to its end.
        #[test]
        fn agrees_with_a_model(ops in proptest::collection::vec(op(), 1..80)) {
            let mut ix = TagIndex::new();
            // id -> (db, key, tags)
            let mut model: HashMap<usize, (i32, Vec<u8>, BTreeSet<u8>)> = HashMap::new();
            let tag = |n: u8| vec![b't', n];
            let members = |m: &HashMap<usize, (i32, Vec<u8>, BTreeSet<u8>)>| -> BTreeSet<usize> {
                m.iter().filter(|(_, (db, _, ts))| *db == 0 && ts.contains(&0)).map(|(id, _)| *id).collect()
            };
            let mut cursor = 0u64;
            let mut scanning = false;
            let mut whole_time = members(&model);
            let mut returned: BTreeSet<Vec<u8>> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Set(id, db, k, ts) => {
                        let key = vec![b'k', k];
                        let tags: Vec<Vec<u8>> = ts.iter().map(|&n| tag(n)).collect();
                        ix.set(id, db, &key, &tags);
                        let set: BTreeSet<u8> = ts.into_iter().collect();
                        if set.is_empty() { model.remove(&id); } else { model.insert(id, (db, key, set)); }
                    }
                    Op::Remove(id) => {
                        prop_assert_eq!(ix.remove(id), model.remove(&id).is_some());
                    }
                    Op::FlushDb(db) => {
                        ix.flush_db(db);
                        model.retain(|_, (d, _, _)| *d != db);
                    }
                    Op::Swap(a, b) => {
                        ix.swap_db(a, b);
                        for (d, _, _) in model.values_mut() {
                            if *d == a { *d = b } else if *d == b { *d = a }
                        }
                    }
                    Op::ScanStep(count) => {
                        if !scanning {
                            scanning = true;
                            cursor = 0;
                            returned.clear();
                            whole_time = members(&model);
                        }
                        let (next, keys) = ix.scan(0, &tag(0), cursor, count);
                        returned.extend(keys);
                        cursor = next;
                        if next == 0 {
                            // Every entry that carried the tag (at the same key) throughout.
                            for id in &whole_time {
                                if let Some((0, key, ts)) = model.get(id) {
                                    if ts.contains(&0) {
                                        prop_assert!(returned.contains(key), "{:?} not returned", key);
                                    }
                                }
                            }
                            scanning = false;
                        }
                    }
                }
                // Entries that changed key or lost the tag since the scan began are not owed.
                whole_time.retain(|id| members(&model).contains(id));
                for db in 0..3 {
                    for n in 0..4u8 {
                        let want = model.values().filter(|(d, _, ts)| *d == db && ts.contains(&n)).count();
                        prop_assert_eq!(ix.count(db, &tag(n)), want);
                    }
                }
                prop_assert_eq!(ix.tagged_entries(), model.len());
            }
            for id in 0..12 {
                ix.remove(id);
            }
            prop_assert_eq!(ix.heap_bytes(), 0);
            prop_assert_eq!(ix.tag_count(), 0);
        }
    }
}

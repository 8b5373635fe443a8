//! The tag index: how many live entries of each database carry each tag, and the
//! invalidations in force. Derived state: the entries hold their tags, and the storage layer
//! tells the index about every entry that appears with tags or goes, and rebuilds it from
//! the keyspace after a load.
//!
//! The index keeps nothing per entry. Entries of one database that carry the same tags form a
//! *group*, held once with a count: an application's entries share a few tag sets ("tenant
//! 42, products"), so the index costs per distinct tag set, not per entry, and a tagged entry
//! costs hardly more than an untagged one. A tag knows its groups, so that invalidating it
//! counts its entries once (an entry is in one group, and a group is taken out at the first
//! of the invalidated tags it carries) in work that grows with the number of its groups, not
//! of its entries.
//!
//! What the index cannot do without per-entry records (list a tag's keys, find the entries an
//! invalidation hit) the storage layer does by walking the keyspace: `CACHE.TAGSCAN` and the
//! removal of invalidated entries (`wrapper::removal`). The walks the removal needs are counted
//! here, so that an invalidation is kept until a walk that began after it has ended.

use std::collections::HashMap;

/// A (database, tag) pair, interned.
type TagId = u32;
/// A (database, tag list) group.
type GroupId = u32;

/// A vector of slots with free-list reuse, so that ids stay small and stable.
#[derive(Debug, Clone)]
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, value: T) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(value);
                id
            }
            None => {
                self.slots.push(Some(value));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The id the next `insert` returns.
    fn next_id(&self) -> u32 {
        self.free.last().copied().unwrap_or(self.slots.len() as u32)
    }

    fn take(&mut self, id: u32) -> Option<T> {
        let v = self.slots.get_mut(id as usize)?.take();
        if v.is_some() {
            self.free.push(id);
        }
        v
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| (i as u32, v)))
    }
}

#[derive(Debug, Clone)]
struct Tag {
    db: i32,
    name: Box<[u8]>,
    /// Live entries that carry the tag.
    live: u64,
    /// The groups that carry it.
    groups: Vec<GroupId>,
}

#[derive(Debug, Clone)]
struct Group {
    db: i32,
    /// Its key in `group_ids`.
    key: Box<[u8]>,
    count: u64,
    /// Its tags, each with the group's position in that tag's `groups`.
    tags: Box<[(TagId, u32)]>,
}

/// Approximate heap bytes beyond the strings: a tag (its slot and map entry), a group (its
/// slot, map entry and tag list), a group's place in a tag's list.
const PER_TAG: usize = 96;
const PER_GROUP: usize = 96;
const PER_MEMBERSHIP: usize = 12;

/// A tag's invalidation: every entry of the database that carries the tag and has a version
/// below `id` is invalidated (reads as absent, then removed), and a fill whose lease token is
/// below `id` may not bring the tag back. Kept until a walk of the keyspace that began after
/// it has removed its entries, and until `until_ms` (when every lease granted before the
/// invalidation has ended) has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tomb {
    pub id: u64,
    pub until_ms: i64,
}

/// A tomb and the removal walk that must end before it may go (0: none needed).
#[derive(Debug, Clone, Copy)]
struct Kept {
    tomb: Tomb,
    walk: u64,
}

#[derive(Debug, Default, Clone)]
pub struct TagIndex {
    /// db and tag name -> its id.
    tag_ids: HashMap<Box<[u8]>, TagId>,
    tags: Slab<Tag>,
    /// db and encoded tag list -> its group.
    group_ids: HashMap<Box<[u8]>, GroupId>,
    groups: Slab<Group>,
    /// Live tagged entries.
    entries: u64,
    bytes: usize,
    /// tag -> per database, the invalidation in force.
    tombs: HashMap<Box<[u8]>, Vec<(i32, Kept)>>,
    /// Invalidated entries still in the keyspace, per database.
    pending: HashMap<i32, u64>,
    /// Removal walks: the number the next one gets, and the last one that ended.
    next_walk: u64,
    walk_done: u64,
}

/// `db` and a name, as the key of `tag_ids`.
fn tag_key(db: i32, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + name.len());
    k.extend_from_slice(&db.to_le_bytes());
    k.extend_from_slice(name);
    k
}

/// `db` and a tag list, as the key of `group_ids`: each tag with its length before it.
fn group_key<I>(db: i32, tags: I) -> Vec<u8>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut k = db.to_le_bytes().to_vec();
    for t in tags {
        let t = t.as_ref();
        k.extend_from_slice(&(t.len() as u32).to_le_bytes());
        k.extend_from_slice(t);
    }
    k
}

impl TagIndex {
    pub fn new() -> TagIndex {
        TagIndex::default()
    }

    fn tag_id(&self, db: i32, name: &[u8]) -> Option<TagId> {
        self.tag_ids.get(&tag_key(db, name)[..]).copied()
    }

    fn intern(&mut self, db: i32, name: &[u8]) -> TagId {
        let key = tag_key(db, name);
        if let Some(id) = self.tag_ids.get(&key[..]) {
            return *id;
        }
        let id = self.tags.insert(Tag {
            db,
            name: name.into(),
            live: 0,
            groups: Vec::new(),
        });
        self.bytes += PER_TAG + key.len() + name.len();
        self.tag_ids.insert(key.into_boxed_slice(), id);
        id
    }

    /// Frees a tag once no group carries it.
    fn release_if_unused(&mut self, id: TagId) {
        if self.tags.get(id).is_none_or(|t| !t.groups.is_empty()) {
            return;
        }
        if let Some(tag) = self.tags.take(id) {
            let key = tag_key(tag.db, &tag.name);
            self.bytes -= PER_TAG + key.len() + tag.name.len();
            self.tag_ids.remove(&key[..]);
        }
    }

    /// An entry of `db` with these tags is live now (stored, landed, or found by a rebuild).
    /// Repeated tags count once.
    pub fn add<I>(&mut self, db: i32, tags: I)
    where
        I: IntoIterator + Clone,
        I::Item: AsRef<[u8]>,
    {
        let key = group_key(db, tags.clone());
        let gid = match self.group_ids.get(&key[..]) {
            Some(g) => *g,
            None => {
                let mut ids: Vec<TagId> = Vec::new();
                for t in tags {
                    let id = self.intern(db, t.as_ref());
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                if ids.is_empty() {
                    return;
                }
                let gid = self.groups.next_id();
                let mut members = Vec::with_capacity(ids.len());
                for id in ids {
                    let tag = self.tags.get_mut(id).expect("interned just now");
                    members.push((id, tag.groups.len() as u32));
                    tag.groups.push(gid);
                }
                self.bytes += PER_GROUP + 2 * key.len() + members.len() * PER_MEMBERSHIP;
                let key: Box<[u8]> = key.into_boxed_slice();
                self.groups.insert(Group {
                    db,
                    key: key.clone(),
                    count: 0,
                    tags: members.into_boxed_slice(),
                });
                self.group_ids.insert(key, gid);
                gid
            }
        };
        let Some(group) = self.groups.get_mut(gid) else {
            return;
        };
        group.count += 1;
        for (tid, _) in group.tags.iter() {
            if let Some(t) = self.tags.slots[*tid as usize].as_mut() {
                t.live += 1;
            }
        }
        self.entries += 1;
    }

    /// A live entry of `db` with these tags goes. Whether the index had it.
    pub fn remove<I>(&mut self, db: i32, tags: I) -> bool
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let key = group_key(db, tags);
        let Some(&gid) = self.group_ids.get(&key[..]) else {
            return false;
        };
        let Some(group) = self.groups.get_mut(gid) else {
            return false;
        };
        group.count -= 1;
        let empty = group.count == 0;
        for (tid, _) in group.tags.iter() {
            if let Some(t) = self.tags.slots[*tid as usize].as_mut() {
                t.live -= 1;
            }
        }
        self.entries -= 1;
        if empty {
            self.drop_group(gid, None);
        }
        true
    }

    /// Takes a group out (emptied, or invalidated with all its entries): out of the lists of
    /// its tags (but `except`, whose list the caller has taken), freeing the tags left unused.
    /// Returns its count.
    fn drop_group(&mut self, gid: GroupId, except: Option<TagId>) -> u64 {
        let Some(group) = self.groups.take(gid) else {
            return 0;
        };
        self.group_ids.remove(&group.key);
        self.bytes -= PER_GROUP + 2 * group.key.len() + group.tags.len() * PER_MEMBERSHIP;
        for &(tid, pos) in group.tags.iter() {
            let Some(tag) = self.tags.get_mut(tid) else {
                continue;
            };
            tag.live -= group.count;
            if Some(tid) == except {
                continue;
            }
            // Swap-remove, and tell the group moved into the hole where it now is.
            let pos = pos as usize;
            tag.groups.swap_remove(pos);
            if let Some(&moved) = tag.groups.get(pos) {
                if let Some(m) = self.groups.get_mut(moved) {
                    if let Some(slot) = m.tags.iter_mut().find(|(t, _)| *t == tid) {
                        slot.1 = pos as u32;
                    }
                }
            }
            self.release_if_unused(tid);
        }
        self.entries -= group.count;
        group.count
    }

    /// `FLUSHDB` of `db`.
    pub fn flush_db(&mut self, db: i32) {
        let groups: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.db == db)
            .map(|(id, _)| id)
            .collect();
        for gid in groups {
            self.drop_group(gid, None);
        }
        for v in self.tombs.values_mut() {
            v.retain(|(d, _)| *d != db);
        }
        self.tombs.retain(|_, v| !v.is_empty());
        self.pending.remove(&db);
    }

    /// `FLUSHALL`, or a load that replaces the keyspace.
    pub fn clear(&mut self) {
        let (next_walk, walk_done) = (self.next_walk, self.walk_done);
        *self = TagIndex::new();
        self.next_walk = next_walk;
        self.walk_done = walk_done;
    }

    /// Drops the entries of the index but keeps the invalidations (a rebuild from the
    /// keyspace after a load that brought them with it): the rebuild counts again what they
    /// left to remove, and the removal walks the keyspace again.
    pub fn clear_entries(&mut self) {
        let mut tombs = std::mem::take(&mut self.tombs);
        self.clear();
        let walk = self.upcoming_walk();
        for v in tombs.values_mut() {
            for (_, kept) in v.iter_mut() {
                kept.walk = walk;
            }
        }
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
        // The map keys carry the database: made again (SWAPDB is rare; this is O(index)).
        self.tag_ids.clear();
        for (id, tag) in self.tags.slots.iter_mut().enumerate() {
            if let Some(tag) = tag {
                tag.db = swap(tag.db);
                self.tag_ids
                    .insert(tag_key(tag.db, &tag.name).into_boxed_slice(), id as TagId);
            }
        }
        self.group_ids.clear();
        for (id, group) in self.groups.slots.iter_mut().enumerate() {
            if let Some(group) = group {
                group.db = swap(group.db);
                let mut key = group.key.to_vec();
                key[..4].copy_from_slice(&group.db.to_le_bytes());
                group.key = key.into_boxed_slice();
                self.group_ids.insert(group.key.clone(), id as GroupId);
            }
        }
        for v in self.tombs.values_mut() {
            for (db, _) in v.iter_mut() {
                *db = swap(*db);
            }
        }
        self.pending = self.pending.drain().map(|(d, n)| (swap(d), n)).collect();
    }

    // -----------------------------------------------------------------------------------------
    // Invalidation
    // -----------------------------------------------------------------------------------------

    /// Invalidates `tags` in `db` as of `tomb.id`. Returns how many live entries it
    /// invalidated, each counted once; they are pending removal from now on.
    pub fn invalidate(&mut self, db: i32, tags: &[&[u8]], tomb: Tomb) -> usize {
        let mut n = 0;
        for tag in tags {
            if let Some(tid) = self.tag_id(db, tag) {
                let groups = self
                    .tags
                    .get_mut(tid)
                    .map(|t| std::mem::take(&mut t.groups))
                    .unwrap_or_default();
                for gid in groups {
                    n += self.drop_group(gid, Some(tid));
                }
                self.release_if_unused(tid);
            }
        }
        // Entries were hit: a walk must find and remove them before the tombs may go.
        let walk = if n > 0 { self.upcoming_walk() } else { 0 };
        for tag in tags {
            let v = self.tombs.entry((*tag).into()).or_default();
            match v.iter_mut().find(|(d, _)| *d == db) {
                Some((_, kept)) => {
                    kept.tomb.id = kept.tomb.id.max(tomb.id);
                    kept.tomb.until_ms = kept.tomb.until_ms.max(tomb.until_ms);
                    kept.walk = kept.walk.max(walk);
                }
                None => v.push((db, Kept { tomb, walk })),
            }
        }
        *self.pending.entry(db).or_default() += n;
        n as usize
    }

    /// The invalidation of `tag` in `db`, if one is in force.
    pub fn tomb(&self, db: i32, tag: &[u8]) -> Option<Tomb> {
        self.tombs
            .get(tag)?
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, k)| k.tomb)
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
            .flat_map(|(tag, v)| v.iter().map(move |(db, k)| (*db, tag.to_vec(), k.tomb)))
            .collect()
    }

    /// An invalidated entry of `db` is in the keyspace that the index did not count (found by
    /// a rebuild, or landed on a name): it is pending removal.
    pub fn found_invalidated(&mut self, db: i32) {
        *self.pending.entry(db).or_default() += 1;
        let walk = self.upcoming_walk();
        for v in self.tombs.values_mut() {
            for (d, kept) in v.iter_mut() {
                if *d == db {
                    kept.walk = kept.walk.max(walk);
                }
            }
        }
    }

    /// An invalidated entry of `db` left the keyspace.
    pub fn invalidated_gone(&mut self, db: i32) {
        if let Some(n) = self.pending.get_mut(&db) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(&db);
            }
        }
    }

    pub fn pending_removal(&self) -> usize {
        self.pending.values().sum::<u64>() as usize
    }

    /// Whether an invalidation waits for a removal walk that has not ended yet.
    pub fn walk_needed(&self) -> bool {
        self.tombs
            .values()
            .flatten()
            .any(|(_, k)| k.walk > self.walk_done)
    }

    /// The databases with invalidations in force, which a walk visits.
    pub fn tombed_dbs(&self) -> Vec<i32> {
        let mut dbs: Vec<i32> = self.tombs.values().flatten().map(|(d, _)| *d).collect();
        dbs.sort_unstable();
        dbs.dedup();
        dbs
    }

    /// The number of the next walk to begin: the first that finds what is invalidated now.
    fn upcoming_walk(&self) -> u64 {
        self.next_walk.max(self.walk_done + 1)
    }

    /// A removal walk begins: its number.
    pub fn walk_begins(&mut self) -> u64 {
        let walk = self.upcoming_walk();
        self.next_walk = walk + 1;
        walk
    }

    /// Walk `walk` ended: every entry invalidated before it began is gone.
    pub fn walk_ended(&mut self, walk: u64) {
        self.walk_done = self.walk_done.max(walk);
        if !self.walk_needed() {
            // Nothing invalidated is left: whatever the count says.
            self.pending.clear();
        }
    }

    /// Drops the invalidations whose walk has ended and whose leases have all ended by
    /// `now_ms`. Returns when the next one may be dropped, if any remains that only waits
    /// for time.
    pub fn drop_tombs(&mut self, now_ms: i64) -> Option<i64> {
        let done = self.walk_done;
        for v in self.tombs.values_mut() {
            v.retain(|(_, k)| k.walk > done || k.tomb.until_ms > now_ms);
        }
        self.tombs.retain(|_, v| !v.is_empty());
        self.tombs
            .values()
            .flatten()
            .filter(|(_, k)| k.walk <= done)
            .map(|(_, k)| k.tomb.until_ms)
            .min()
    }

    /// How many live entries of `db` carry `tag`.
    pub fn count(&self, db: i32, tag: &[u8]) -> u64 {
        self.tag_id(db, tag)
            .and_then(|id| self.tags.get(id))
            .map_or(0, |t| t.live)
    }

    /// Distinct (database, tag) pairs.
    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }

    /// Live entries that carry at least one tag.
    pub fn tagged_entries(&self) -> u64 {
        self.entries
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

    const TOMB: Tomb = Tomb {
        id: 100,
        until_ms: 5_000,
    };

    #[test]
    fn counts_per_tag_and_database() {
        let mut ix = TagIndex::new();
        ix.add(0, &[t("x"), t("y"), t("x")]);
        ix.add(0, &[t("x")]);
        ix.add(0, &[t("x")]);
        ix.add(3, &[t("x")]);
        assert_eq!((ix.count(0, b"x"), ix.count(0, b"y")), (3, 1));
        assert_eq!((ix.count(3, b"x"), ix.tagged_entries()), (1, 4));
        assert!(ix.remove(0, &[t("x")]));
        assert!(!ix.remove(1, &[t("x")]), "not in that database");
        ix.swap_db(0, 3);
        assert_eq!((ix.count(0, b"x"), ix.count(3, b"x")), (1, 2));
        ix.flush_db(3);
        assert_eq!((ix.count(3, b"x"), ix.count(3, b"y")), (0, 0));
        assert!(ix.remove(0, &[t("x")]));
        assert_eq!(
            (ix.tag_count(), ix.tagged_entries(), ix.heap_bytes()),
            (0, 0, 0)
        );
    }

    #[test]
    fn invalidation_counts_each_entry_once_and_fences_older_versions_and_leases() {
        let mut ix = TagIndex::new();
        ix.add(0, &[t("x"), t("y")]);
        ix.add(0, &[t("x")]);
        ix.add(0, &[t("y")]);
        ix.add(0, &[t("y"), t("z")]);
        ix.add(1, &[t("x")]);
        // One call, two tags: the entry with both counts once.
        assert_eq!(ix.invalidate(0, &[b"x", b"y"], TOMB), 4);
        assert_eq!(
            (ix.count(0, b"x"), ix.count(0, b"y"), ix.count(0, b"z")),
            (0, 0, 0),
            "the entry with y and z is invalidated: z no longer counts it"
        );
        assert_eq!((ix.count(1, b"x"), ix.tagged_entries()), (1, 1));
        assert_eq!(ix.pending_removal(), 4);
        assert!(ix.is_invalidated(0, &[t("x")], 99));
        assert!(!ix.is_invalidated(0, &[t("x")], 100));
        assert!(!ix.is_invalidated(1, &[t("x")], 99), "databases are apart");
        assert!(!ix.fill_allowed(0, &[t("z"), t("y")], 50));
        assert!(ix.fill_allowed(0, &[t("z")], 50));
        assert!(ix.fill_allowed(0, &[t("y")], 101));
        // Again: nothing left to count.
        assert_eq!(ix.invalidate(0, &[b"x"], TOMB), 0);
        // Tombs stay until a walk that began after them ends, then until their leases end.
        assert!(ix.walk_needed());
        assert_eq!(ix.drop_tombs(10_000), None);
        assert_eq!(ix.tombs().len(), 2);
        let walk = ix.walk_begins();
        for _ in 0..4 {
            ix.invalidated_gone(0);
        }
        assert_eq!(ix.pending_removal(), 0);
        ix.walk_ended(walk);
        assert!(!ix.walk_needed());
        assert_eq!(ix.drop_tombs(1_000), Some(5_000));
        assert_eq!(ix.drop_tombs(5_001), None);
        assert!(!ix.has_tombs());
        assert!(!ix.is_invalidated(0, &[t("x")], 1));
        // The entry of db 1 is still counted; a new one with the same tags in db 0 too.
        ix.add(0, &[t("x"), t("y")]);
        assert_eq!((ix.count(0, b"x"), ix.count(1, b"x")), (1, 1));
    }

    #[test]
    fn an_invalidation_during_a_walk_waits_for_the_next() {
        let mut ix = TagIndex::new();
        ix.add(0, &[t("x")]);
        ix.add(0, &[t("y")]);
        let first = ix.walk_begins();
        ix.invalidate(0, &[b"x"], TOMB);
        ix.walk_ended(first);
        assert!(ix.walk_needed(), "the walk began before the invalidation");
        let second = ix.walk_begins();
        ix.walk_ended(second);
        assert!(!ix.walk_needed());
        assert_eq!(ix.pending_removal(), 0);
        // An invalidation that hit nothing needs no walk, only time.
        ix.invalidate(0, &[b"none"], TOMB);
        assert!(!ix.walk_needed());
        assert_eq!(ix.drop_tombs(0), Some(5_000));
    }

    #[test]
    fn a_rebuild_keeps_tombs_and_needs_a_walk_again() {
        let mut ix = TagIndex::new();
        ix.add(0, &[t("x")]);
        ix.invalidate(0, &[b"x"], TOMB);
        let w = ix.walk_begins();
        ix.walk_ended(w);
        ix.clear_entries();
        ix.found_invalidated(0);
        assert!(ix.walk_needed());
        assert_eq!((ix.pending_removal(), ix.tombs().len()), (1, 1));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(i32, Vec<u8>),
        Remove(usize),
        Invalidate(i32, Vec<u8>),
        FlushDb(i32),
        Swap(i32, i32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0i32..3, proptest::collection::vec(0u8..5, 1..4)).prop_map(|(db, t)| Op::Add(db, t)),
            3 => (0usize..20).prop_map(Op::Remove),
            2 => (0i32..3, proptest::collection::vec(0u8..5, 1..3)).prop_map(|(db, t)| Op::Invalidate(db, t)),
            1 => (0i32..3).prop_map(Op::FlushDb),
            1 => (0i32..3, 0i32..3).prop_map(|(a, b)| Op::Swap(a, b)),
        ]
    }

    proptest! {
        /// Against a plain model (a list of live entries): counts and invalidation results
        /// agree after any sequence of changes, and the index's memory returns to 0 when the
        /// entries are gone.
        #[test]
        fn agrees_with_a_model(ops in proptest::collection::vec(op(), 1..80)) {
            let mut ix = TagIndex::new();
            let mut live: Vec<(i32, Vec<Vec<u8>>)> = Vec::new();
            let tag = |n: u8| vec![b't', n];
            for op in ops {
                match op {
                    Op::Add(db, ts) => {
                        let tags: Vec<Vec<u8>> = ts.iter().map(|&n| tag(n)).collect();
                        ix.add(db, &tags);
                        live.push((db, tags));
                    }
                    Op::Remove(i) => {
                        if i < live.len() {
                            let (db, tags) = live.swap_remove(i);
                            prop_assert!(ix.remove(db, &tags));
                        }
                    }
                    Op::Invalidate(db, ts) => {
                        let tags: Vec<Vec<u8>> = ts.iter().map(|&n| tag(n)).collect();
                        let refs: Vec<&[u8]> = tags.iter().map(|t| &t[..]).collect();
                        let before = live.len();
                        live.retain(|(d, et)| *d != db || !et.iter().any(|t| tags.contains(t)));
                        prop_assert_eq!(ix.invalidate(db, &refs, TOMB), before - live.len());
                    }
                    Op::FlushDb(db) => {
                        ix.flush_db(db);
                        live.retain(|(d, _)| *d != db);
                    }
                    Op::Swap(a, b) => {
                        ix.swap_db(a, b);
                        for (d, _) in live.iter_mut() {
                            if *d == a { *d = b } else if *d == b { *d = a }
                        }
                    }
                }
                for db in 0..3 {
                    for n in 0..5u8 {
                        let want = live.iter().filter(|(d, ts)| *d == db && ts.contains(&tag(n))).count();
                        prop_assert_eq!(ix.count(db, &tag(n)), want as u64);
                    }
                }
                prop_assert_eq!(ix.tagged_entries(), live.len() as u64);
            }
            for (db, tags) in live.drain(..) {
                prop_assert!(ix.remove(db, &tags));
            }
            prop_assert_eq!(ix.heap_bytes(), 0);
            prop_assert_eq!(ix.tag_count(), 0);
            let tags: BTreeSet<usize> = ix.tags.iter().map(|(i, _)| i as usize).collect();
            prop_assert!(tags.is_empty());
        }
    }
}

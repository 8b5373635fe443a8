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

/// The model the property tests and the fuzz targets (`fuzz/`) hold the index to: every
/// operation the storage layer makes, checked after each against plain lists of entries and
/// maps of invalidations, and the index's own structure checked for consistency.
#[cfg(any(test, feature = "fuzzing"))]
pub mod check {
    use super::*;
    use std::collections::BTreeMap;

    /// Databases and tags are drawn from small sets, so that operations meet.
    pub const DBS: i32 = 3;
    pub const TAGS: u8 = 5;

    #[derive(Debug, Clone)]
    pub enum Op {
        /// An entry with these tags (by number, repeats possible) is written.
        Add(i32, Vec<u8>),
        /// The live entry at this index (modulo their number) goes: deleted, expired, evicted,
        /// overwritten without tags.
        Remove(usize),
        /// The live entry at this index is overwritten with these tags (`CACHE.TAGSET`).
        Replace(usize, Vec<u8>),
        /// `CACHE.TAGINVALIDATE`, its tomb lasting this long after the clock.
        Invalidate(i32, Vec<u8>, i64),
        FlushDb(i32),
        Swap(i32, i32),
        /// `FLUSHALL`, or a load that replaces the keyspace.
        Clear,
        /// A load that brought the invalidations with it: the index is rebuilt from the live
        /// entries (and the invalidated ones still in the keyspace).
        Rebuild,
        /// A removal walk of the keyspace begins; it ends at the next `WalkEnds`.
        WalkBegins,
        /// The walk in progress ends, having removed every invalidated entry it saw.
        WalkEnds,
        /// The invalidated entry at this index leaves the keyspace (a removal, an expiry).
        InvalidatedGone(usize),
        /// The clock moves on this far, and tombs are dropped.
        Tick(i64),
        /// Whether an entry of the db with these tags and a version this far back from the
        /// clock is invalidated (and a fill with such a token allowed).
        Query(i32, Vec<u8>, u64),
    }

    /// Operations from bytes (the fuzz targets): each op takes a few bytes, the last one those
    /// that are left.
    pub fn ops_from_bytes(mut b: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut next = |n: usize| -> Option<Vec<u8>> {
            let (head, rest) = b.split_at_checked(n)?;
            b = rest;
            Some(head.to_vec())
        };
        let tags = |bits: u8| -> Vec<u8> {
            let t: Vec<u8> = (0..TAGS).filter(|t| bits >> t & 1 == 1).collect();
            if t.is_empty() {
                vec![bits % TAGS]
            } else {
                t
            }
        };
        while let Some(h) = next(3) {
            let (kind, x, y) = (h[0], h[1], h[2]);
            let db = i32::from(x % DBS as u8);
            ops.push(match kind % 13 {
                0..=2 => Op::Add(db, tags(y)),
                3 => Op::Remove(usize::from(y)),
                4 => Op::Replace(usize::from(x), tags(y)),
                5 => Op::Invalidate(db, tags(y), i64::from(x) * 10),
                6 => Op::FlushDb(db),
                7 => Op::Swap(db, i32::from(y % DBS as u8)),
                8 => match y % 4 {
                    0 => Op::Clear,
                    _ => Op::Rebuild,
                },
                9 => match y % 2 {
                    0 => Op::WalkBegins,
                    _ => Op::WalkEnds,
                },
                10 => Op::InvalidatedGone(usize::from(y)),
                11 => Op::Tick(i64::from(y)),
                _ => Op::Query(db, tags(y), u64::from(x % 8)),
            });
        }
        ops
    }

    #[derive(Debug, Clone)]
    struct Stored {
        db: i32,
        tags: Vec<Vec<u8>>,
        version: u64,
    }

    fn tag(n: u8) -> Vec<u8> {
        vec![b't', n]
    }

    /// Runs `ops` on a fresh index and on the model; `Err` says where they first disagree.
    pub fn run(ops: &[Op]) -> Result<(), String> {
        let mut ix = TagIndex::new();
        let mut live: Vec<Stored> = Vec::new();
        // Invalidated entries still in the keyspace, with the walk that will remove them
        // (the first to begin after their invalidation).
        let mut dead: Vec<(Stored, u64)> = Vec::new();
        // (db, tag) -> (tomb, the walk that must end before it may go).
        let mut tombs: BTreeMap<(i32, Vec<u8>), (Tomb, u64)> = BTreeMap::new();
        let (mut clock, mut now) = (1u64, 0i64);
        let (mut next_walk, mut walk_done, mut walking) = (1u64, 0u64, None::<u64>);
        for (step, op) in ops.iter().enumerate() {
            let upcoming = next_walk.max(walk_done + 1);
            let fail = |what: String| Err(format!("step {step} {op:?}: {what}"));
            match op {
                Op::Add(db, ts) => {
                    let tags: Vec<Vec<u8>> = ts.iter().map(|&n| tag(n)).collect();
                    ix.add(*db, &tags);
                    live.push(Stored {
                        db: *db,
                        tags,
                        version: clock,
                    });
                    clock += 1;
                }
                Op::Remove(i) if !live.is_empty() => {
                    let e = live.swap_remove(i % live.len());
                    if !ix.remove(e.db, &e.tags) {
                        return fail("the index did not have a live entry".into());
                    }
                }
                Op::Replace(i, ts) if !live.is_empty() => {
                    let i = i % live.len();
                    let e = &mut live[i];
                    if !ix.remove(e.db, &e.tags) {
                        return fail("the index did not have a live entry".into());
                    }
                    e.tags = ts.iter().map(|&n| tag(n)).collect();
                    e.version = clock;
                    clock += 1;
                    ix.add(e.db, &e.tags);
                }
                Op::Remove(_) | Op::Replace(..) => {}
                Op::Invalidate(db, ts, lasts) => {
                    let tags: Vec<Vec<u8>> = ts.iter().map(|&n| tag(n)).collect();
                    let refs: Vec<&[u8]> = tags.iter().map(|t| &t[..]).collect();
                    let tomb = Tomb {
                        id: clock,
                        until_ms: now + lasts,
                    };
                    clock += 1;
                    let (hit, kept): (Vec<Stored>, Vec<Stored>) = live
                        .drain(..)
                        .partition(|e| e.db == *db && e.tags.iter().any(|t| tags.contains(t)));
                    live = kept;
                    let n = hit.len();
                    dead.extend(hit.into_iter().map(|e| (e, upcoming)));
                    let got = ix.invalidate(*db, &refs, tomb);
                    if got != n {
                        return fail(format!("invalidated {got}, the model {n}"));
                    }
                    let walk = if n > 0 { upcoming } else { 0 };
                    for t in tags {
                        let kept = tombs.entry((*db, t)).or_insert((tomb, walk));
                        kept.0.id = kept.0.id.max(tomb.id);
                        kept.0.until_ms = kept.0.until_ms.max(tomb.until_ms);
                        kept.1 = kept.1.max(walk);
                    }
                }
                Op::FlushDb(db) => {
                    ix.flush_db(*db);
                    live.retain(|e| e.db != *db);
                    dead.retain(|(e, _)| e.db != *db);
                    tombs.retain(|(d, _), _| d != db);
                }
                Op::Swap(a, b) => {
                    ix.swap_db(*a, *b);
                    let swap = |d: i32| {
                        if d == *a {
                            *b
                        } else if d == *b {
                            *a
                        } else {
                            d
                        }
                    };
                    for e in live.iter_mut().chain(dead.iter_mut().map(|(e, _)| e)) {
                        e.db = swap(e.db);
                    }
                    tombs = tombs
                        .into_iter()
                        .map(|((d, t), v)| ((swap(d), t), v))
                        .collect();
                }
                Op::Clear => {
                    ix.clear();
                    live.clear();
                    dead.clear();
                    tombs.clear();
                }
                Op::Rebuild => {
                    // What `storage::tagindex` does after a load: entries first, the
                    // invalidated ones found as such; a removal walk is needed again.
                    ix.clear_entries();
                    for (_, walk) in tombs.values_mut() {
                        *walk = upcoming;
                    }
                    for e in &live {
                        if ix.is_invalidated(e.db, &e.tags, e.version) {
                            return fail(format!("a live entry reads as invalidated: {e:?}"));
                        }
                        ix.add(e.db, &e.tags);
                    }
                    for (e, walk) in dead.iter_mut() {
                        if !ix.is_invalidated(e.db, &e.tags, e.version) {
                            return fail(format!("an invalidated entry reads as live: {e:?}"));
                        }
                        ix.found_invalidated(e.db);
                        *walk = upcoming;
                        for ((d, _), (_, w)) in tombs.iter_mut() {
                            if *d == e.db {
                                *w = (*w).max(upcoming);
                            }
                        }
                    }
                }
                Op::WalkBegins => {
                    if walking.is_none() {
                        let w = ix.walk_begins();
                        if w != upcoming {
                            return fail(format!("walk {w}, the model {upcoming}"));
                        }
                        next_walk = w + 1;
                        walking = Some(w);
                    }
                }
                Op::WalkEnds => {
                    if let Some(w) = walking.take() {
                        // The walk removes what was invalidated before it began.
                        for (e, _) in dead.iter().filter(|(_, due)| *due <= w) {
                            ix.invalidated_gone(e.db);
                        }
                        dead.retain(|(_, due)| *due > w);
                        ix.walk_ended(w);
                        walk_done = walk_done.max(w);
                    }
                }
                Op::InvalidatedGone(i) if !dead.is_empty() => {
                    let (e, _) = dead.swap_remove(i % dead.len());
                    ix.invalidated_gone(e.db);
                }
                Op::InvalidatedGone(_) => {}
                Op::Tick(ms) => {
                    now += ms;
                    let next = ix.drop_tombs(now);
                    tombs.retain(|_, (t, walk)| *walk > walk_done || t.until_ms > now);
                    let want = tombs
                        .values()
                        .filter(|(_, walk)| *walk <= walk_done)
                        .map(|(t, _)| t.until_ms)
                        .min();
                    if next != want {
                        return fail(format!("next drop at {next:?}, the model {want:?}"));
                    }
                }
                Op::Query(db, ts, back) => {
                    let tags: Vec<Vec<u8>> = ts.iter().map(|&n| tag(n)).collect();
                    let version = clock.saturating_sub(*back);
                    let want = tags.iter().any(|t| {
                        tombs
                            .get(&(*db, t.clone()))
                            .is_some_and(|(tomb, _)| version < tomb.id)
                    });
                    if ix.is_invalidated(*db, &tags, version) != want
                        || ix.fill_allowed(*db, &tags, version) == want
                    {
                        return fail(format!("invalidated: the model says {want}"));
                    }
                }
            }
            agree(&ix, &live, &dead, &tombs, walk_done).or_else(fail)?;
        }
        for e in live.drain(..) {
            if !ix.remove(e.db, &e.tags) {
                return Err("the index did not have a live entry at the end".into());
            }
        }
        match (ix.heap_bytes(), ix.tag_count(), ix.tagged_entries()) {
            (0, 0, 0) => Ok(()),
            left => Err(format!(
                "the index holds (bytes, tags, entries) {left:?} when empty"
            )),
        }
    }

    /// The index and the model agree, and the index is consistent with itself.
    fn agree(
        ix: &TagIndex,
        live: &[Stored],
        dead: &[(Stored, u64)],
        tombs: &BTreeMap<(i32, Vec<u8>), (Tomb, u64)>,
        walk_done: u64,
    ) -> Result<(), String> {
        let mut pairs = std::collections::BTreeSet::new();
        for db in 0..DBS {
            for n in 0..TAGS {
                let want = live
                    .iter()
                    .filter(|e| e.db == db && e.tags.contains(&tag(n)))
                    .count();
                if ix.count(db, &tag(n)) != want as u64 {
                    return Err(format!(
                        "count of {n} in db {db}: {} not {want}",
                        ix.count(db, &tag(n))
                    ));
                }
                if want > 0 {
                    pairs.insert((db, n));
                }
            }
        }
        if ix.tagged_entries() != live.len() as u64 || ix.tag_count() != pairs.len() {
            return Err(format!(
                "{} entries and {} tags, not {} and {}",
                ix.tagged_entries(),
                ix.tag_count(),
                live.len(),
                pairs.len()
            ));
        }
        let mut got: Vec<(i32, Vec<u8>, Tomb)> = ix.tombs();
        got.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let want: Vec<(i32, Vec<u8>, Tomb)> = tombs
            .iter()
            .map(|((d, t), (tomb, _))| (*d, t.clone(), *tomb))
            .collect();
        if got != want {
            return Err(format!("tombs {got:?}, the model {want:?}"));
        }
        let needed = tombs.values().any(|(_, walk)| *walk > walk_done);
        if ix.walk_needed() != needed || ix.has_tombs() == tombs.is_empty() {
            return Err(format!("walk needed: the model says {needed}"));
        }
        // The index counts the invalidated entries left; after a walk that left no
        // invalidation waiting, it knows none is (those it did not count are then gone too).
        if ix.pending_removal() > dead.len() {
            return Err(format!(
                "{} pending removal, {} in the keyspace",
                ix.pending_removal(),
                dead.len()
            ));
        }
        let mut dbs: Vec<i32> = tombs.keys().map(|(d, _)| *d).collect();
        dbs.dedup();
        if ix.tombed_dbs() != dbs {
            return Err(format!(
                "tombed dbs {:?}, the model {dbs:?}",
                ix.tombed_dbs()
            ));
        }
        ix.consistent()
    }
}

impl TagIndex {
    /// The index's structure agrees with itself: every group in the lists of its tags at the
    /// positions it records, counts summing up, the maps naming what the slabs hold.
    #[cfg(any(test, feature = "fuzzing"))]
    fn consistent(&self) -> Result<(), String> {
        let mut entries = 0;
        for (gid, g) in self.groups.iter() {
            entries += g.count;
            if g.count == 0 || self.group_ids.get(&g.key) != Some(&gid) {
                return Err(format!("group {gid} empty or not in the map"));
            }
            for &(tid, pos) in g.tags.iter() {
                let t = self
                    .tags
                    .get(tid)
                    .ok_or(format!("group {gid} has a freed tag"))?;
                if t.groups.get(pos as usize) != Some(&gid) || t.db != g.db {
                    return Err(format!("group {gid} is not at {pos} in tag {tid}'s list"));
                }
            }
        }
        for (tid, t) in self.tags.iter() {
            let live: u64 = t
                .groups
                .iter()
                .filter_map(|g| self.groups.get(*g))
                .map(|g| g.count)
                .sum();
            if t.groups.is_empty()
                || t.live != live
                || self.tag_ids.get(&tag_key(t.db, &t.name)[..]) != Some(&tid)
            {
                return Err(format!("tag {tid} unused, miscounted or not in the map"));
            }
        }
        match (
            entries == self.entries,
            self.tag_ids.len() == self.tags.len(),
            self.group_ids.len() == self.groups.len(),
        ) {
            (true, true, true) => Ok(()),
            _ => Err("totals or maps disagree with the slabs".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check::Op;
    use super::*;
    use proptest::prelude::*;

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

    fn tags() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..check::TAGS, 1..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        let db = 0i32..check::DBS;
        prop_oneof![
            5 => (db.clone(), tags()).prop_map(|(db, t)| Op::Add(db, t)),
            3 => any::<usize>().prop_map(Op::Remove),
            2 => (any::<usize>(), tags()).prop_map(|(i, t)| Op::Replace(i, t)),
            2 => (db.clone(), tags(), 0i64..3_000).prop_map(|(db, t, ms)| Op::Invalidate(db, t, ms)),
            1 => db.clone().prop_map(Op::FlushDb),
            1 => (db.clone(), db.clone()).prop_map(|(a, b)| Op::Swap(a, b)),
            1 => Just(Op::Clear),
            1 => Just(Op::Rebuild),
            2 => Just(Op::WalkBegins),
            2 => Just(Op::WalkEnds),
            2 => any::<usize>().prop_map(Op::InvalidatedGone),
            2 => (0i64..2_000).prop_map(Op::Tick),
            2 => (db, tags(), 0u64..8).prop_map(|(db, t, back)| Op::Query(db, t, back)),
        ]
    }

    proptest! {
        /// Against a plain model (lists of live and invalidated entries, a map of
        /// invalidations): counts, invalidation results, tombs, walks and queries agree after
        /// any sequence of every operation, the index's structure stays consistent, and its
        /// memory returns to 0 when the entries are gone.
        #[test]
        fn agrees_with_a_model(ops in proptest::collection::vec(op(), 1..120)) {
            let checked = check::run(&ops);
            prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
        }

        /// The fuzz target's decoding of bytes into operations, on any bytes.
        #[test]
        fn agrees_with_a_model_on_ops_from_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let checked = check::run(&check::ops_from_bytes(&b));
            prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
        }
    }
}

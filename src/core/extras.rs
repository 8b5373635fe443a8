//! The parts of an entry most entries do without: the fill lease and the tags, packed into
//! one allocation behind a thin pointer.
//!
//! A cache's capacity is its hit rate, so the entry is kept small: an untagged entry without a
//! lease pays 8 bytes here and allocates nothing; a tagged one pays one small allocation
//! instead of a slice of vectors (3 short tags: 32 bytes instead of 128).
//!
//! Layout of the bytes: `u8 flags`, then the lease's 24 bytes (token, granted, expires; little
//! endian) when flag `LEASE` is set, then each tag as a LEB128 length and its bytes.

use thin_vec::ThinVec;

use super::entry::Lease;

const LEASE: u8 = 1;
/// The tag index counts the entry (see `storage::tagindex`): never saved, never copied.
const INDEXED: u8 = 2;
const LEASE_BYTES: usize = 24;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras(ThinVec<u8>);

impl Extras {
    fn flags(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }

    /// Where the tags start.
    fn tags_at(&self) -> usize {
        match (self.0.is_empty(), self.flags() & LEASE != 0) {
            (true, _) => 0,
            (false, true) => 1 + LEASE_BYTES,
            (false, false) => 1,
        }
    }

    pub fn lease(&self) -> Option<Lease> {
        if self.flags() & LEASE == 0 {
            return None;
        }
        let word = |i: usize| {
            let at = 1 + 8 * i;
            u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
        };
        Some(Lease {
            token: word(0),
            granted_ms: word(1) as i64,
            expires_ms: word(2) as i64,
        })
    }

    pub fn has_lease(&self) -> bool {
        self.flags() & LEASE != 0
    }

    pub fn tags(&self) -> Tags<'_> {
        Tags {
            rest: &self.0[self.tags_at()..],
        }
    }

    pub fn has_tags(&self) -> bool {
        self.0.len() > self.tags_at()
    }

    /// Rebuilds the bytes from a lease and encoded tags (both rarely change, so a rebuild is
    /// cheaper in memory than room kept for them).
    fn build(lease: Option<&Lease>, tag_bytes: &[u8], indexed: bool) -> Extras {
        if lease.is_none() && tag_bytes.is_empty() {
            return Extras::default();
        }
        let mut v = ThinVec::with_capacity(1 + LEASE_BYTES + tag_bytes.len());
        let indexed = if indexed { INDEXED } else { 0 };
        match lease {
            Some(l) => {
                v.push(LEASE | indexed);
                for w in [l.token, l.granted_ms as u64, l.expires_ms as u64] {
                    v.extend_from_slice(&w.to_le_bytes());
                }
            }
            None => v.push(indexed),
        }
        v.extend_from_slice(tag_bytes);
        v.shrink_to_fit();
        Extras(v)
    }

    pub fn set_lease(&mut self, lease: Option<&Lease>) {
        let tags = self.0.get(self.tags_at()..).unwrap_or(&[]).to_vec();
        *self = Extras::build(lease, &tags, self.is_indexed());
    }

    pub fn set_tags<T: AsRef<[u8]>>(&mut self, tags: &[T]) {
        let mut bytes = Vec::new();
        for t in tags {
            let t = t.as_ref();
            let mut n = t.len();
            loop {
                let low = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    bytes.push(low);
                    break;
                }
                bytes.push(low | 0x80);
            }
            bytes.extend_from_slice(t);
        }
        *self = Extras::build(self.lease().as_ref(), &bytes, self.is_indexed());
    }

    pub fn is_indexed(&self) -> bool {
        self.flags() & INDEXED != 0
    }

    /// Marks the entry as counted by the tag index, or not. Only an entry with tags or a lease
    /// has the byte to keep it in; the index counts only entries with tags.
    pub fn set_indexed(&mut self, on: bool) {
        if let Some(f) = self.0.first_mut() {
            *f = if on { *f | INDEXED } else { *f & !INDEXED };
        }
    }

    /// Heap bytes held (allocator rounding aside).
    pub fn heap_size(&self) -> usize {
        if self.0.capacity() == 0 {
            0
        } else {
            16 + self.0.capacity()
        }
    }
}

/// The tags, in the order they were given.
#[derive(Clone)]
pub struct Tags<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tags<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 0;
        loop {
            // Only `set_tags` writes these bytes, so the length is always whole.
            let b = self.rest[i];
            i += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let (tag, rest) = self.rest[i..].split_at(len);
        self.rest = rest;
        Some(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lease(token: u64) -> Lease {
        Lease {
            token,
            granted_ms: -5,
            expires_ms: i64::MAX,
        }
    }

    #[test]
    fn empty_allocates_nothing() {
        let mut x = Extras::default();
        assert_eq!((x.lease(), x.has_tags(), x.heap_size()), (None, false, 0));
        x.set_tags::<&[u8]>(&[]);
        x.set_lease(None);
        assert_eq!(x.heap_size(), 0);
        assert_eq!(std::mem::size_of::<Extras>(), 8);
    }

    #[test]
    fn lease_and_tags_are_independent() {
        let mut x = Extras::default();
        x.set_tags(&[&b"a"[..], b"", &[7u8; 300]]);
        x.set_lease(Some(&lease(9)));
        assert_eq!(x.lease(), Some(lease(9)));
        let tags: Vec<&[u8]> = x.tags().collect();
        assert_eq!(tags, vec![&b"a"[..], b"", &[7u8; 300][..]]);
        x.set_indexed(true);
        x.set_lease(None);
        assert_eq!(x.lease(), None);
        assert_eq!(x.tags().count(), 3);
        assert!(x.is_indexed(), "kept across a change of the lease");
        x.set_indexed(false);
        assert!(!x.is_indexed());
        x.set_tags::<&[u8]>(&[]);
        assert_eq!(x.heap_size(), 0);
    }

    proptest! {
        #[test]
        fn round_trips(tags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
                       token in proptest::option::of(1u64..1 << 53)) {
            let mut x = Extras::default();
            x.set_lease(token.map(lease).as_ref());
            x.set_tags(&tags);
            prop_assert_eq!(x.lease(), token.map(lease));
            let back: Vec<Vec<u8>> = x.tags().map(|t| t.to_vec()).collect();
            prop_assert_eq!(&back, &tags);
            prop_assert_eq!(x.has_tags(), !tags.is_empty());
        }
    }
}

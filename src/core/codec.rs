//! The one encoding of an entry's metadata, shared by RDB, DUMP/RESTORE, AOF rewrite and
//! replication. The value travels beside it as its own string so that saving a large value
//! never copies it.
//!
//! Layout (little-endian), format 1:
//! ```text
//! u8  format (1)
//! u8  flags: 1 = has value, 2 = has lease, 4 = keep the value already stored (effects only),
//!            8 = leave the key's TTL alone (AOF rewrite: Redis writes the key's own expiry next)
//! i64 fresh_until_ms   i64 grace_ms   i64 delta_ms   u64 version
//! [u64 token  i64 granted_ms  i64 expires_ms]          if has lease
//! u32 tag count, then per tag: u32 length, bytes
//! ```
//! Decoding checks every length against the bytes actually there, so a truncated or crafted
//! payload is an error, never an over-allocation or a panic.

use super::entry::{Entry, Lease};
use super::version::is_valid_id;

pub const FORMAT: u8 = 1;
const HAS_VALUE: u8 = 1;
const HAS_LEASE: u8 = 2;
const KEEP_VALUE: u8 = 4;
const KEEP_TTL: u8 = 8;
const KNOWN_FLAGS: u8 = HAS_VALUE | HAS_LEASE | KEEP_VALUE | KEEP_TTL;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    Truncated,
    UnknownFormat(u8),
    UnknownFlags(u8),
    TrailingBytes,
    Invalid(&'static str),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Truncated => write!(f, "truncated entry header"),
            CodecError::UnknownFormat(v) => write!(f, "unknown entry format {v}"),
            CodecError::UnknownFlags(v) => write!(f, "unknown entry flags {v}"),
            CodecError::TrailingBytes => write!(f, "trailing bytes after entry header"),
            CodecError::Invalid(why) => write!(f, "invalid entry: {why}"),
        }
    }
}

/// What a decoded header says about the value that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSlot {
    /// No value (pending entry).
    None,
    /// The value follows as its own string.
    Present,
    /// Effects only: keep the value the target already holds (a lease grant on a valued entry).
    Keep,
}

/// Encodes the entry's metadata; `keep_value` marks an effect that leaves the value alone.
pub fn encode_header(e: &Entry, keep_value: bool) -> Vec<u8> {
    encode(e, keep_value, false)
}

/// The header of an AOF rewrite record: replaying it must not set the key's TTL, because the
/// rewrite follows it with the key's own expiry (`PEXPIREAT`), or with nothing when the user
/// removed it (`PERSIST`).
pub fn encode_aof_header(e: &Entry) -> Vec<u8> {
    encode(e, false, true)
}

/// The header of an effect that changed only the entry's metadata under a key whose TTL Redis
/// set on its own (a fresh version after `COPY` or `RENAME`): keep the value and the TTL.
pub fn encode_metadata_keep_ttl(e: &Entry) -> Vec<u8> {
    encode(e, true, true)
}

fn encode(e: &Entry, keep_value: bool, keep_ttl: bool) -> Vec<u8> {
    let tag_bytes: usize = e.tags().map(|t| 4 + t.len()).sum();
    let mut out = Vec::with_capacity(2 + 32 + 24 + 4 + tag_bytes);
    let mut flags = 0;
    if e.value.is_some() {
        flags |= if keep_value { KEEP_VALUE } else { HAS_VALUE };
    }
    if e.has_lease() {
        flags |= HAS_LEASE;
    }
    if keep_ttl {
        flags |= KEEP_TTL;
    }
    out.push(FORMAT);
    out.push(flags);
    out.extend_from_slice(&e.fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&e.grace_ms().to_le_bytes());
    out.extend_from_slice(&e.delta_ms().to_le_bytes());
    out.extend_from_slice(&e.version.to_le_bytes());
    if let Some(l) = e.lease() {
        out.extend_from_slice(&l.token.to_le_bytes());
        out.extend_from_slice(&l.granted_ms.to_le_bytes());
        out.extend_from_slice(&l.expires_ms.to_le_bytes());
    }
    out.extend_from_slice(&(e.tags().count() as u32).to_le_bytes());
    for t in e.tags() {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t);
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(self.u64()? as i64)
    }
}

/// A decoded header: the entry without its value, where the value comes from, and whether the
/// key's TTL is to be left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub entry: Entry,
    pub value: ValueSlot,
    pub keep_ttl: bool,
}

/// Decodes a header into an entry without its value, and says where the value comes from.
pub fn decode_header(buf: &[u8]) -> Result<Header, CodecError> {
    let mut r = Reader { buf };
    let format = r.u8()?;
    if format != FORMAT {
        return Err(CodecError::UnknownFormat(format));
    }
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 || flags & (HAS_VALUE | KEEP_VALUE) == HAS_VALUE | KEEP_VALUE {
        return Err(CodecError::UnknownFlags(flags));
    }
    let fresh_until_ms = r.i64()?;
    let grace_ms = r.i64()?;
    let delta_ms = r.i64()?;
    let version = r.u64()?;
    if grace_ms < 0 || delta_ms < 0 {
        return Err(CodecError::Invalid("negative grace or delta"));
    }
    if !is_valid_id(version) {
        return Err(CodecError::Invalid("version out of range"));
    }
    let lease = if flags & HAS_LEASE != 0 {
        let lease = Lease {
            token: r.u64()?,
            granted_ms: r.i64()?,
            expires_ms: r.i64()?,
        };
        if lease.token == 0 || !is_valid_id(lease.token) {
            return Err(CodecError::Invalid("lease token out of range"));
        }
        Some(lease)
    } else {
        None
    };
    let count = r.u32()? as usize;
    // Each tag takes at least 4 bytes: a count larger than that is a lie, refuse it before
    // allocating anything sized by it.
    if count > r.buf.len() / 4 {
        return Err(CodecError::Truncated);
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u32()? as usize;
        tags.push(r.take(len)?.to_vec());
    }
    if !r.buf.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    let slot = if flags & HAS_VALUE != 0 {
        ValueSlot::Present
    } else if flags & KEEP_VALUE != 0 {
        ValueSlot::Keep
    } else {
        ValueSlot::None
    };
    // Grace and delta above `MAX_SPAN_MS` (49.7 days) are held at it: older versions of the
    // module stored 64 bits, and a load must not fail over a span nobody could wait out.
    let mut entry = Entry::new(None, fresh_until_ms, grace_ms, delta_ms, version);
    entry.set_lease(lease);
    entry.set_tags(&tags);
    Ok(Header {
        entry,
        value: slot,
        keep_ttl: flags & KEEP_TTL != 0,
    })
}

/// What the property tests and the fuzz targets (`fuzz/`) check of any bytes given to the
/// decoder. `Err` says what broke.
#[cfg(any(test, feature = "fuzzing"))]
pub mod check {
    use super::*;
    use crate::core::entry::MAX_SPAN_MS;

    /// Encodes a decoded header again, with the flags it was decoded with.
    pub fn reencode(h: &Header) -> Vec<u8> {
        let mut e = h.entry.clone();
        e.value = match h.value {
            ValueSlot::None => None,
            ValueSlot::Present | ValueSlot::Keep => Some(Box::default()),
        };
        encode(&e, h.value == ValueSlot::Keep, h.keep_ttl)
    }

    /// Decoding `buf` either refuses it or yields a header that encodes back to `buf` (to the
    /// same header when a span above `MAX_SPAN_MS` was held at it), with ids in range.
    pub fn decode(buf: &[u8]) -> Result<Option<Header>, String> {
        let Ok(h) = decode_header(buf) else {
            return Ok(None);
        };
        let e = &h.entry;
        if !is_valid_id(e.version)
            || e.lease()
                .is_some_and(|l| l.token == 0 || !is_valid_id(l.token))
        {
            return Err(format!("id out of range decoded: {e:?}"));
        }
        if e.value.is_some() {
            return Err("a header decoded with a value".into());
        }
        let again = reencode(&h);
        let clamped = [10..18, 18..26]
            .into_iter()
            .any(|r| i64::from_le_bytes(buf[r].try_into().expect("8 bytes")) > MAX_SPAN_MS);
        if !clamped && again != buf {
            return Err(format!("re-encodes differently: {buf:?} -> {again:?}"));
        }
        match decode_header(&again) {
            Ok(back) if back == h => Ok(Some(h)),
            other => Err(format!(
                "re-encoding decodes differently: {h:?} -> {other:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::spoil::{any_record, mutation, spoil};
    use proptest::prelude::*;

    fn sample() -> Entry {
        let mut e = Entry::new(
            Some(b"va\0lue"[..].into()),
            1_700_000_000_000,
            5_000,
            120,
            42 << 20,
        );
        e.set_tags(&[&b"user:1"[..], b"\0bin", b""]);
        e.set_lease(Some(Lease {
            token: 43 << 20,
            granted_ms: 1_699_999_999_000,
            expires_ms: 1_700_000_001_000,
        }));
        e
    }

    fn plain() -> Entry {
        let mut e = sample();
        e.set_lease(None);
        e.set_tags::<&[u8]>(&[]);
        e
    }

    #[test]
    fn round_trips_every_field() {
        let e = sample();
        let h = decode_header(&encode_header(&e, false)).unwrap();
        assert_eq!((h.value, h.keep_ttl), (ValueSlot::Present, false));
        let mut back = h.entry;
        back.value = e.value.clone();
        assert_eq!(back, e);

        let mut pending = plain();
        pending.value = None;
        let h = decode_header(&encode_header(&pending, false)).unwrap();
        assert_eq!(h.value, ValueSlot::None);
        assert_eq!(h.entry, pending);

        assert_eq!(
            decode_header(&encode_header(&e, true)).unwrap().value,
            ValueSlot::Keep
        );
        let h = decode_header(&encode_aof_header(&e)).unwrap();
        assert_eq!((h.value, h.keep_ttl), (ValueSlot::Present, true));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let buf = encode_header(&sample(), false);
        for n in 0..buf.len() {
            assert!(
                decode_header(&buf[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(decode_header(&long), Err(CodecError::TrailingBytes));
    }

    #[test]
    fn crafted_headers_are_refused() {
        let mut buf = encode_header(&sample(), false);
        buf[0] = 9;
        assert_eq!(decode_header(&buf), Err(CodecError::UnknownFormat(9)));
        let mut buf = encode_header(&sample(), false);
        buf[1] = 0x80;
        assert!(decode_header(&buf).is_err());
        buf[1] = HAS_VALUE | KEEP_VALUE;
        assert!(decode_header(&buf).is_err());
        // A huge tag count with no bytes behind it must not allocate.
        let plain = plain();
        let mut buf = encode_header(&plain, false);
        let n = buf.len();
        buf[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&buf), Err(CodecError::Truncated));
        // Ids out of range would pin the id clock.
        let mut buf = encode_header(&plain, false);
        buf[26..34].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            decode_header(&buf),
            Err(CodecError::Invalid("version out of range"))
        );
        let mut leased = sample();
        leased.set_lease(leased.lease().map(|l| Lease {
            token: 1 << 53,
            ..l
        }));
        assert!(decode_header(&encode_header(&leased, false)).is_err());
        // Negative grace.
        let mut buf = encode_header(&plain, false);
        buf[10..18].copy_from_slice(&(-1i64).to_le_bytes());
        assert!(decode_header(&buf).is_err());
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode_header(&buf);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_record_round_trips((e, kv, kt) in any_record()) {
            let buf = encode(&e, kv, kt);
            let h = decode_header(&buf).unwrap();
            let slot = match (&e.value, kv) {
                (None, _) => ValueSlot::None,
                (Some(_), false) => ValueSlot::Present,
                (Some(_), true) => ValueSlot::Keep,
            };
            prop_assert_eq!((h.value, h.keep_ttl), (slot, kt));
            let mut back = h.entry.clone();
            back.value = e.value.clone();
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(check::decode(&buf), Ok(Some(h)));
        }

        #[test]
        fn spoiled_records_are_refused_or_decode_consistently(
            (e, kv, kt) in any_record(),
            (other, okv, okt) in any_record(),
            ms in proptest::collection::vec(mutation(), 1..4),
        ) {
            let other = encode(&other, okv, okt);
            let buf = ms.iter().fold(encode(&e, kv, kt), |b, m| spoil(b, m, &other));
            let checked = check::decode(&buf);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }

        #[test]
        fn garbage_is_refused_or_decodes_consistently(
            head in proptest::sample::select(vec![vec![], vec![FORMAT], vec![FORMAT, HAS_LEASE], vec![FORMAT, KNOWN_FLAGS]]),
            tail in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let buf = [head, tail].concat();
            let checked = check::decode(&buf);
            prop_assert!(checked.is_ok(), "{:?}", checked);
        }
    }
}

//! Crafted entry records, and the two ways a test gets them into a server now that clients may
//! not send `CACHE.APPLY`: a `RESTORE` payload (what `DUMP` of such an entry gives), and an AOF
//! file the server replays at start-up (where `CACHE.APPLY` records are accepted).
//!
//! The layouts are the module's: `core::codec` (format 1) for the record, Redis's DUMP format
//! (RDB module value, RDB version, CRC64) around it.

#![allow(dead_code)]

use std::path::Path;

use redis::Connection;

pub const HAS_VALUE: u8 = 1;
pub const HAS_LEASE: u8 = 2;
pub const KEEP_VALUE: u8 = 4;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// An entry record as `core::codec` lays it out (format 1).
#[derive(Clone, Debug)]
pub struct Record {
    pub format: u8,
    pub flags: u8,
    pub fresh_until_ms: i64,
    pub grace_ms: i64,
    pub delta_ms: i64,
    pub version: u64,
    /// token, granted, expires
    pub lease: Option<(u64, i64, i64)>,
    pub tags: Vec<Vec<u8>>,
}

impl Record {
    /// A valid record: fresh for an hour from `now`, with a lease (for an hour) when `flags`
    /// asks for one, and tags. Its ids are small, far behind any server's clock.
    pub fn new(now: i64, flags: u8, tags: &[&[u8]]) -> Record {
        Record {
            format: 1,
            flags,
            fresh_until_ms: now + HOUR_MS,
            grace_ms: 5_000,
            delta_ms: 120,
            version: 7 << 20,
            lease: (flags & HAS_LEASE != 0).then_some((8 << 20, now, now + HOUR_MS)),
            tags: tags.iter().map(|t| t.to_vec()).collect(),
        }
    }

    /// A valued record without lease or tags.
    pub fn valued(fresh_until_ms: i64, grace_ms: i64, delta_ms: i64, version: u64) -> Record {
        Record {
            format: 1,
            flags: HAS_VALUE,
            fresh_until_ms,
            grace_ms,
            delta_ms,
            version,
            lease: None,
            tags: Vec::new(),
        }
    }

    /// The same record with a lease (and the flag that says so).
    pub fn with_lease(mut self, token: u64, granted_ms: i64, expires_ms: i64) -> Record {
        self.flags |= HAS_LEASE;
        self.lease = Some((token, granted_ms, expires_ms));
        self
    }

    /// The record's bytes, exactly as the fields say (a test may set a flag without its
    /// fields, or fields without their flag).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.format, self.flags];
        out.extend_from_slice(&self.fresh_until_ms.to_le_bytes());
        out.extend_from_slice(&self.grace_ms.to_le_bytes());
        out.extend_from_slice(&self.delta_ms.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        if let Some((token, granted, expires)) = self.lease {
            out.extend_from_slice(&token.to_le_bytes());
            out.extend_from_slice(&granted.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
        }
        out.extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
        for t in &self.tags {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// DUMP payloads
// ---------------------------------------------------------------------------------------------

pub const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// The RDB version written in crafted payloads: Redis 7.0's, which every supported server reads.
pub const RDB_VERSION: [u8; 2] = [10, 0];

/// `body` with a DUMP trailer (RDB version, CRC64) whose checksum is valid.
pub fn seal(body: &[u8], rdb_version: [u8; 2]) -> Vec<u8> {
    let mut p = body.to_vec();
    p.extend_from_slice(&rdb_version);
    let crc = CRC64.checksum(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

/// An RDB length encoding of `n`.
pub fn rdb_len_encode(n: usize) -> Vec<u8> {
    match n {
        0..=63 => vec![n as u8],
        64..=16383 => vec![0x40 | (n >> 8) as u8, n as u8],
        _ => [&[0x80][..], &(n as u32).to_be_bytes()].concat(),
    }
}

/// The 64-bit id Redis gives the module type `cache-ent`, encoding version 1: nine 6-bit
/// symbols of the name, then ten bits of version.
pub fn module_type_id() -> u64 {
    const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = 0u64;
    for ch in b"cache-ent" {
        let pos = SYMBOLS.iter().position(|s| s == ch).unwrap() as u64;
        id = (id << 6) | pos;
    }
    (id << 10) | 1
}

/// The start of a DUMP body of the module type: `RDB_TYPE_MODULE_2` and the type's id.
pub fn module_value_prefix() -> Vec<u8> {
    let mut body = vec![7u8, 0x81];
    body.extend_from_slice(&module_type_id().to_be_bytes());
    body
}

/// The DUMP payload of an entry holding `record` (and `value` when the record has one), as
/// `DUMP` of such an entry gives it.
pub fn dump_payload(record: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut body = module_value_prefix();
    for s in std::iter::once(record).chain(value) {
        body.push(5); // RDB_MODULE_OPCODE_STRING
        body.extend_from_slice(&rdb_len_encode(s.len()));
        body.extend_from_slice(s);
    }
    body.push(0); // RDB_MODULE_OPCODE_EOF
    seal(&body, RDB_VERSION)
}

/// `RESTORE key 0 <payload> REPLACE` of a crafted record: how a test plants an entry the
/// public commands cannot make (tags, chosen ids), as a client could.
pub fn restore(
    c: &mut Connection,
    key: &str,
    record: &Record,
    value: Option<&[u8]>,
) -> redis::RedisResult<()> {
    redis::cmd("RESTORE")
        .arg(key)
        .arg(0)
        .arg(dump_payload(&record.encode(), value))
        .arg("REPLACE")
        .query(c)
}

// ---------------------------------------------------------------------------------------------
// AOF files
// ---------------------------------------------------------------------------------------------

/// One command in RESP, the form of the AOF and of the wire protocol.
pub fn aof_command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Writes `commands` as an old-style `appendonly.aof` in `dir`: a server started there with
/// `--appendonly yes` replays them at start-up (and migrates the file into its AOF directory).
pub fn write_aof(dir: &Path, commands: &[Vec<Vec<u8>>]) {
    let mut aof = aof_command(&[b"SELECT".to_vec(), b"0".to_vec()]);
    for c in commands {
        aof.extend(aof_command(c));
    }
    std::fs::write(dir.join("appendonly.aof"), aof).expect("write appendonly.aof");
}

/// The errors the server logged while loading its AOF, in order (Redis logs each error a
/// replayed command answers: "... sending an error to its AOF-loading-client: '-ERR ...'").
pub fn aof_load_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("AOF-loading-client: '-")?;
            let end = rest.rfind("' after processing")?;
            Some(rest[..end].to_string())
        })
        .collect()
}

//! Redis Cluster's key slots, computed as the server does (`RedisModule_ClusterKeySlot` is
//! 7.4+): CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384; and for every slot a
//! short tag that hashes to it, so that a key the module derives (a write-behind queue) can be
//! named into the slot of the command's key.

use std::sync::LazyLock;

/// Slots in a cluster.
pub const SLOTS: u16 = 16384;

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The part of `key` that decides its slot: the hash tag (between the first `{` and the first
/// `}` after it) when it is not empty, else the whole key.
pub fn hash_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key`, as `CLUSTER KEYSLOT` answers.
pub fn key_slot(key: &[u8]) -> u16 {
    CRC16.checksum(hash_part(key)) & (SLOTS - 1)
}

/// For every slot, the shortest decimal number (as text) whose slot it is: found once by
/// trying 0, 1, 2, ... until every slot has one (about 180,000 checksums, a few ms).
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags: Vec<Option<String>> = vec![None; SLOTS as usize];
    let mut missing = SLOTS as usize;
    let mut n: u64 = 0;
    while missing > 0 {
        let text = n.to_string();
        let slot = key_slot(text.as_bytes()) as usize;
        if tags[slot].is_none() {
            tags[slot] = Some(text);
            missing -= 1;
        }
        n += 1;
    }
    tags.into_iter().map(|t| t.unwrap_or_default()).collect()
});

/// A hash tag for `slot`: `{tag}` in a key puts the key in that slot.
pub fn tag_for_slot(slot: u16) -> &'static str {
    &TAGS[(slot & (SLOTS - 1)) as usize]
}

/// `base` named into the slot of `key`: `<base>:{<tag>}`.
pub fn name_in_slot_of(base: &[u8], key: &[u8]) -> Vec<u8> {
    let tag = tag_for_slot(key_slot(key));
    let mut name = Vec::with_capacity(base.len() + tag.len() + 3);
    name.extend_from_slice(base);
    name.extend_from_slice(b":{");
    name.extend_from_slice(tag.as_bytes());
    name.push(b'}');
    name
}

/// A slot of this node on its way to or from another node, as `CLUSTER NODES` shows it on the
/// `myself` line: `[<slot>->-<node-id>]` (migrating away) or `[<slot>-<-<node-id>]` (importing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotMove {
    Migrating,
    Importing,
}

/// Whether `slot` is migrating or importing on this node, from the text of `CLUSTER NODES`
/// (the line whose flags include `myself`). `None` when it is not moving, or when no line is
/// this node's (not in cluster mode): the caller then writes as usual.
pub fn slot_move(nodes: &[u8], slot: u16) -> Option<SlotMove> {
    let myself = nodes.split(|&b| b == b'\n').map(fields).find(|f| {
        f.get(2)
            .is_some_and(|flags| flags.split(|&b| b == b',').any(|f| f == b"myself"))
    })?;
    // Fields 0-7 are id, address, flags, primary, ping, pong, epoch, link; slots follow.
    myself
        .into_iter()
        .skip(8)
        .filter_map(|field| field.strip_prefix(b"[")?.strip_suffix(b"]"))
        .find_map(|moving| {
            let (num, kind) = if let Some(at) = find(moving, b"->-") {
                (&moving[..at], SlotMove::Migrating)
            } else {
                (&moving[..find(moving, b"-<-")?], SlotMove::Importing)
            };
            let n: u16 = std::str::from_utf8(num).ok()?.parse().ok()?;
            (n == slot).then_some(kind)
        })
}

/// The space-separated fields of a line (a trailing CR is not part of the last one).
fn fields(line: &[u8]) -> Vec<&[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .collect()
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_are_those_redis_computes() {
        // CLUSTER KEYSLOT on a real server, and the CRC16 check value of the Redis spec.
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"user:{42}:profile"), key_slot(b"42"));
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tags_follow_the_cluster_rules() {
        assert_eq!(hash_part(b"a{b}c"), b"b");
        assert_eq!(
            hash_part(b"a{}c"),
            b"a{}c",
            "an empty tag hashes the whole key"
        );
        assert_eq!(hash_part(b"a{b"), b"a{b", "no closing brace");
        assert_eq!(hash_part(b"a}b{c}"), b"c");
        assert_eq!(hash_part(b"{{x}}"), b"{x", "up to the first closing brace");
        assert_eq!(hash_part(b""), b"");
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for slot in 0..SLOTS {
            let tag = tag_for_slot(slot);
            assert!(!tag.is_empty() && tag.len() <= 6, "slot {slot}: {tag:?}");
            assert_eq!(key_slot(tag.as_bytes()), slot);
        }
    }

    /// `CLUSTER NODES` of a node that migrates slot 100 away and imports slot 5800 (the
    /// format of Redis 7.0 and Valkey 8.1; Valkey may add `,hostname` to the address).
    const NODES: &[u8] = b"\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,host-a myself,master - 0 0 1 connected 0-5460 [100->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1] [5800-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
292f8b365bb7edb5e285caf0b7e6ddc7265e2bdc 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [7->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
";

    #[test]
    fn slot_moves_are_read_from_the_myself_line() {
        assert_eq!(slot_move(NODES, 100), Some(SlotMove::Migrating));
        assert_eq!(slot_move(NODES, 5800), Some(SlotMove::Importing));
        assert_eq!(slot_move(NODES, 0), None, "owned, not moving");
        assert_eq!(slot_move(NODES, 10), None, "slot numbers match exactly");
        assert_eq!(slot_move(NODES, 7), None, "another node's move is not ours");
        assert_eq!(slot_move(b"", 100), None);
        // A replica's `myself` line carries no slots.
        let replica = b"07c3 127.0.0.1:30004@31004 myself,slave e7d1 0 0 4 connected\n";
        assert_eq!(slot_move(replica, 100), None);
        // CRLF, extra spaces and a garbled bracket do not confuse it.
        let odd = b"e7d1 127.0.0.1:1@2 myself,master - 0 0 1 connected [x->-y]  [9->-z]\r\n";
        assert_eq!(slot_move(odd, 9), Some(SlotMove::Migrating));
        assert_eq!(slot_move(odd, 0), None);
    }

    proptest! {
        #[test]
        fn a_derived_name_is_in_the_slot_of_its_key(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            base in proptest::collection::vec(any::<u8>(), 1..20),
        ) {
            // A base with braces of its own could carry a tag that wins: the base of a derived
            // name is a config value, which the module keeps free of braces.
            prop_assume!(!base.contains(&b'{') && !base.contains(&b'}'));
            let name = name_in_slot_of(&base, &key);
            prop_assert_eq!(key_slot(&name), key_slot(&key));
        }
    }
}

//! Every command of the module, one row each: what `register.rs` declares to the server
//! (flags, ACL categories, arity, key specs) and what `COMMAND DOCS` shows. Adding a command is
//! adding a row here and its handler file. docs/commands.md is the same, for people.

use super::spec::ArgKind::{Double, Integer, Key, OneOf, String};
use super::spec::{ArgSpec, CommandSpec, KeyAccess, Keys};
use super::{apply, del, get, getx, inspect, lockget, release, set};

const SINCE: &std::ffi::CStr = c"0.1.0";

/// `(EX seconds | PX milliseconds)`: the TTL of a write.
const TTL: &[ArgSpec] = &[
    ArgSpec::keyword(c"EX", c"seconds", Integer),
    ArgSpec::keyword(c"PX", c"milliseconds", Integer),
];

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: c"cache.set",
        entry: entry_point!(set::run),
        flags: c"write deny-oom",
        acl_categories: c"write slow",
        arity: -3,
        keys: Keys::First(KeyAccess::Update),
        summary: c"Stores a value with a TTL and grace; with TOKEN, a fill stored only while that lease is current.",
        complexity: c"O(1), plus O(N) for N callers parked in CACHE.LOCKGET on the key",
        since: SINCE,
        args: &[
            ArgSpec::required(c"key", Key),
            ArgSpec::required(c"value", String),
            ArgSpec::required(c"expiration", OneOf(TTL)),
            ArgSpec::option(c"GRACE", c"grace-ms", Integer),
            ArgSpec::option(c"DELTA", c"delta-ms", Integer),
            ArgSpec::option(c"TOKEN", c"token", Integer),
        ],
    },
    CommandSpec {
        name: c"cache.get",
        entry: entry_point!(get::run),
        flags: c"readonly fast",
        acl_categories: c"read fast",
        arity: 2,
        keys: Keys::First(KeyAccess::Read),
        summary: c"Returns the value while the entry has one (fresh or in grace), else nil.",
        complexity: c"O(1)",
        since: SINCE,
        args: &[ArgSpec::required(c"key", Key)],
    },
    CommandSpec {
        name: c"cache.getx",
        entry: entry_point!(getx::run),
        flags: c"write deny-oom fast",
        acl_categories: c"write fast",
        arity: -2,
        keys: Keys::First(KeyAccess::ReadUpdate),
        summary: c"Reads with early refresh decided in the server (XFetch), at most one recompute in flight: [value, status, token].",
        complexity: c"O(1)",
        since: SINCE,
        args: &[
            ArgSpec::required(c"key", Key),
            ArgSpec::option(c"BETA", c"beta", Double),
            ArgSpec::option(c"LEASE", c"lease-ms", Integer),
        ],
    },
    CommandSpec {
        name: c"cache.lockget",
        entry: entry_point!(lockget::run),
        flags: c"write deny-oom blocking",
        acl_categories: c"write slow blocking",
        arity: -2,
        keys: Keys::First(KeyAccess::ReadUpdate),
        summary: c"Mutex-style read-through: the value, or the fill lease, or (with WAIT) parks until a fill: [value, status, token].",
        complexity: c"O(1)",
        since: SINCE,
        args: &[
            ArgSpec::required(c"key", Key),
            ArgSpec::option(c"PX", c"lease-ms", Integer),
            ArgSpec::option(c"WAIT", c"wait-ms", Integer),
        ],
    },
    CommandSpec {
        name: c"cache.release",
        entry: entry_point!(release::run),
        flags: c"write fast",
        acl_categories: c"write fast",
        arity: 3,
        keys: Keys::First(KeyAccess::Update),
        summary: c"Gives a fill lease up without filling it; a parked CACHE.LOCKGET caller is handed the lease.",
        complexity: c"O(1)",
        since: SINCE,
        args: &[
            ArgSpec::required(c"key", Key),
            ArgSpec::required(c"token", Integer),
        ],
    },
    CommandSpec {
        name: c"cache.del",
        entry: entry_point!(del::run),
        flags: c"write",
        acl_categories: c"write slow",
        arity: -2,
        keys: Keys::AllFromFirst(KeyAccess::Remove),
        summary: c"Removes entries and revokes their leases; reply: how many existed.",
        complexity: c"O(N) for N keys",
        since: SINCE,
        args: &[ArgSpec::multiple(c"key", Key)],
    },
    CommandSpec {
        name: c"cache.inspect",
        entry: entry_point!(inspect::run),
        flags: c"readonly",
        acl_categories: c"read slow",
        arity: 2,
        keys: Keys::First(KeyAccess::Read),
        summary: c"An entry's metadata (freshness, version, lease, tags) as field/value pairs, for debugging.",
        complexity: c"O(1)",
        since: SINCE,
        args: &[ArgSpec::required(c"key", Key)],
    },
    CommandSpec {
        name: c"cache.apply",
        entry: entry_point!(apply::run),
        flags: c"write deny-oom",
        acl_categories: c"write slow dangerous",
        arity: -3,
        keys: Keys::First(KeyAccess::Update),
        summary: c"Internal: the record of an effect, as replication and the AOF carry it; refused from clients.",
        complexity: c"O(1)",
        since: SINCE,
        args: &[
            ArgSpec::required(c"key", Key),
            ArgSpec::required(c"header", String),
            ArgSpec::optional(c"value", String),
        ],
    },
];

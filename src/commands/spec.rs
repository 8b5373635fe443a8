//! What a command declares to the server: flags, ACL categories, arity, keys, and the docs
//! `COMMAND DOCS` shows. Plain data, one value per command in `table.rs`; `register.rs`
//! turns it into the server's structures.

use std::ffi::CStr;
use std::os::raw::c_int;

use redis_module::raw;

/// A command's `extern "C"` entry point, as `RedisModule_CreateCommand` takes it.
pub type EntryPoint =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

pub struct CommandSpec {
    pub name: &'static CStr,
    pub entry: EntryPoint,
    /// Command flags (`write deny-oom`, `readonly fast`, ...), as `CreateCommand` takes them.
    pub flags: &'static CStr,
    /// ACL categories, set where the server can (Redis 7.2+, Valkey); see `register.rs`.
    pub acl_categories: &'static CStr,
    /// Redis arity: N exactly, or -N for at least N (the command name counts).
    pub arity: c_int,
    pub keys: Keys,
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    /// The module version that added the command.
    pub since: &'static CStr,
    pub args: &'static [ArgSpec],
}

/// Where a command's keys are in its arguments, and what it does with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// No keys (cluster clients route such a command anywhere).
    None,
    /// One key, `argv[1]`.
    First(KeyAccess),
    /// Every argument from `argv[1]` on is a key.
    AllFromFirst(KeyAccess),
}

/// What the command does with a key, in the terms of Redis's key-spec flags, chosen as core
/// Redis chooses them for its own commands (`GET` is `RO ACCESS`, `DEL` is `RM DELETE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAccess {
    /// Reads and returns the value; never writes (`RO ACCESS`).
    Read,
    /// Returns the value and may change the entry, a lease grant (`RW ACCESS UPDATE`).
    ReadUpdate,
    /// Changes the entry, depending on what it held, without returning it (`RW UPDATE`).
    Update,
    /// Deletes the key (`RM DELETE`).
    Remove,
}

impl KeyAccess {
    pub fn flags(self) -> u64 {
        let bits = match self {
            KeyAccess::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
            KeyAccess::ReadUpdate => {
                raw::REDISMODULE_CMD_KEY_RW
                    | raw::REDISMODULE_CMD_KEY_ACCESS
                    | raw::REDISMODULE_CMD_KEY_UPDATE
            }
            KeyAccess::Update => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE,
            KeyAccess::Remove => raw::REDISMODULE_CMD_KEY_RM | raw::REDISMODULE_CMD_KEY_DELETE,
        };
        u64::from(bits)
    }
}

impl Keys {
    /// The legacy first key, last key and step `CreateCommand` takes (the key spec refines it).
    pub fn range(self) -> (c_int, c_int, c_int) {
        match self {
            Keys::None => (0, 0, 0),
            Keys::First(_) => (1, 1, 1),
            Keys::AllFromFirst(_) => (1, -1, 1),
        }
    }
}

/// One argument as `COMMAND DOCS` lists it.
pub struct ArgSpec {
    pub name: &'static CStr,
    pub kind: ArgKind,
    /// The keyword before the value (`EX`, `TOKEN`), if any.
    pub token: Option<&'static CStr>,
    pub presence: Presence,
}

#[derive(Clone, Copy)]
pub enum ArgKind {
    /// A key; the index of its key spec is implied (every command has at most one).
    Key,
    String,
    Integer,
    Double,
    /// Exactly one of these.
    OneOf(&'static [ArgSpec]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
    /// One or more.
    Multiple,
    /// `[TOKEN name [name ...]]`.
    OptionalMultiple,
}

impl ArgSpec {
    const fn new(
        name: &'static CStr,
        kind: ArgKind,
        token: Option<&'static CStr>,
        presence: Presence,
    ) -> ArgSpec {
        ArgSpec {
            name,
            kind,
            token,
            presence,
        }
    }

    pub const fn required(name: &'static CStr, kind: ArgKind) -> ArgSpec {
        ArgSpec::new(name, kind, None, Presence::Required)
    }

    /// `TOKEN value`, required.
    pub const fn keyword(token: &'static CStr, name: &'static CStr, kind: ArgKind) -> ArgSpec {
        ArgSpec::new(name, kind, Some(token), Presence::Required)
    }

    /// `[TOKEN value]`.
    pub const fn option(token: &'static CStr, name: &'static CStr, kind: ArgKind) -> ArgSpec {
        ArgSpec::new(name, kind, Some(token), Presence::Optional)
    }

    /// `[name]`: an optional positional argument.
    pub const fn optional(name: &'static CStr, kind: ArgKind) -> ArgSpec {
        ArgSpec::new(name, kind, None, Presence::Optional)
    }

    /// `TOKEN name [name ...]`.
    pub const fn keyword_multiple(
        token: &'static CStr,
        name: &'static CStr,
        kind: ArgKind,
    ) -> ArgSpec {
        ArgSpec::new(name, kind, Some(token), Presence::Multiple)
    }

    /// `[TOKEN name [name ...]]`.
    pub const fn optional_keyword_multiple(
        token: &'static CStr,
        name: &'static CStr,
        kind: ArgKind,
    ) -> ArgSpec {
        ArgSpec::new(name, kind, Some(token), Presence::OptionalMultiple)
    }

    /// `name [name ...]`.
    pub const fn multiple(name: &'static CStr, kind: ArgKind) -> ArgSpec {
        ArgSpec::new(name, kind, None, Presence::Multiple)
    }
}

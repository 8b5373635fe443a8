//! Declares the commands of `table.rs` to the server: `RedisModule_CreateCommand` for the entry
//! point, `RedisModule_SetCommandInfo` for arity, key specs and docs (Redis 7.0+), and
//! `RedisModule_SetCommandACLCategories` where the server has it (7.2+, Valkey; looked up at
//! load, so 7.0 still loads the module, its commands then in no ACL category).
//!
//! The raw API is used rather than the crate's `#[command]` macro: that macro requires the
//! ACL-categories call and so cannot load on 7.0. Redis copies everything `SetCommandInfo`
//! is given, so the structures built here live only for the call.

use std::ffi::CStr;
use std::mem::size_of;
use std::os::raw::c_int;
use std::ptr;

use redis_module::{raw, Context, Status};

use super::spec::{ArgKind, ArgSpec, CommandSpec, Keys, Presence};

static INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
};

/// Registers every command of the table; called from the module's init.
pub fn register(ctx: &Context, commands: &[CommandSpec]) -> Status {
    for spec in commands {
        if let Err(why) = register_one(ctx, spec) {
            ctx.log_warning(&format!(
                "cannot register {}: {why}",
                spec.name.to_string_lossy()
            ));
            return Status::Err;
        }
    }
    Status::Ok
}

fn register_one(ctx: &Context, spec: &CommandSpec) -> Result<(), &'static str> {
    let ok = raw::REDISMODULE_OK as c_int;
    let (first, last, step) = spec.keys.range();
    // SAFETY: called from the module's init with its live context; the name and flags are
    // 'static C strings and the entry point is an `extern "C"` fn of the expected signature.
    let created = unsafe {
        raw::RedisModule_CreateCommand.ok_or("no CreateCommand")?(
            ctx.ctx,
            spec.name.as_ptr(),
            Some(spec.entry),
            spec.flags.as_ptr(),
            first,
            last,
            step,
        )
    };
    if created != ok {
        return Err("CreateCommand refused it");
    }
    // SAFETY: as above; the command was just created under this name.
    let command =
        unsafe { raw::RedisModule_GetCommand.ok_or("no GetCommand")?(ctx.ctx, spec.name.as_ptr()) };
    if command.is_null() {
        return Err("GetCommand found nothing");
    }

    // SAFETY: `command` is the live command just created; the category string is 'static.
    // The function pointer is None on Redis 7.0, which has no categories for module commands.
    if let Some(set_categories) = unsafe { raw::RedisModule_SetCommandACLCategories } {
        // SAFETY: as above: a live command and a 'static C string.
        if unsafe { set_categories(command, spec.acl_categories.as_ptr()) } != ok {
            return Err("SetCommandACLCategories refused the categories");
        }
    }

    let mut key_specs = key_specs(spec.keys);
    let mut args = args(spec.args);
    let mut info = raw::RedisModuleCommandInfo {
        version: &INFO_VERSION,
        summary: spec.summary.as_ptr(),
        complexity: spec.complexity.as_ptr(),
        since: spec.since.as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity: spec.arity,
        key_specs: if key_specs.len() > 1 {
            key_specs.as_mut_ptr()
        } else {
            ptr::null_mut()
        },
        args: args.as_mut_ptr(),
    };
    // SAFETY: every pointer in `info` points into `key_specs`, `args` (and their sub-arrays
    // in `args`' owner) or 'static strings, all alive for the call; Redis validates the
    // structure and copies what it keeps. Both arrays end with a zeroed element as required.
    let set =
        unsafe { raw::RedisModule_SetCommandInfo.ok_or("no SetCommandInfo")?(command, &mut info) };
    drop(args);
    if set != ok {
        return Err("SetCommandInfo refused the info");
    }
    Ok(())
}

/// The key specs of a command, ending with the zeroed terminator.
fn key_specs(keys: Keys) -> Vec<raw::RedisModuleCommandKeySpec> {
    let mut specs = Vec::new();
    let (access, lastkey) = match keys {
        Keys::None => (None, 0),
        Keys::First(a) => (Some(a), 0),
        Keys::AllFromFirst(a) => (Some(a), -1),
    };
    if let Some(access) = access {
        specs.push(raw::RedisModuleCommandKeySpec {
            notes: ptr::null(),
            flags: access.flags(),
            begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
            bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
            },
            find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
            fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                    lastkey,
                    keystep: 1,
                    limit: 0,
                },
            },
        });
    }
    specs.push(zeroed_key_spec());
    specs
}

fn zeroed_key_spec() -> raw::RedisModuleCommandKeySpec {
    // SAFETY: a plain C struct of integers, pointers and unions of those: all-zero is valid
    // and is the array terminator Redis looks for.
    unsafe { std::mem::zeroed() }
}

/// An argument array with its sub-arrays: the raw arrays point into `subargs`, which must
/// live as long as `top`.
struct Args {
    top: Vec<raw::RedisModuleCommandArg>,
    _subargs: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl Args {
    fn as_mut_ptr(&mut self) -> *mut raw::RedisModuleCommandArg {
        self.top.as_mut_ptr()
    }
}

fn args(specs: &[ArgSpec]) -> Args {
    let mut subargs = Vec::new();
    let top = arg_array(specs, &mut subargs);
    Args {
        top,
        _subargs: subargs,
    }
}

/// The raw array for `specs`, ending with the zeroed terminator; the arrays of `OneOf`
/// arguments go to `keep` (moving a Vec does not move its heap buffer, so the pointers hold).
fn arg_array(
    specs: &[ArgSpec],
    keep: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> Vec<raw::RedisModuleCommandArg> {
    let mut out: Vec<raw::RedisModuleCommandArg> = specs
        .iter()
        .map(|a| {
            let (type_, subargs) = match a.kind {
                ArgKind::Key => (
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                    None,
                ),
                ArgKind::String => (
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                    None,
                ),
                ArgKind::Integer => (
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                    None,
                ),
                ArgKind::Double => (
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_DOUBLE,
                    None,
                ),
                ArgKind::OneOf(alternatives) => {
                    let mut sub = arg_array(alternatives, keep);
                    let p = sub.as_mut_ptr();
                    keep.push(sub);
                    (
                        raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
                        Some(p),
                    )
                }
            };
            let flags = match a.presence {
                Presence::Required => raw::REDISMODULE_CMD_ARG_NONE,
                Presence::Optional => raw::REDISMODULE_CMD_ARG_OPTIONAL,
                Presence::Multiple => raw::REDISMODULE_CMD_ARG_MULTIPLE,
                Presence::OptionalMultiple => {
                    raw::REDISMODULE_CMD_ARG_OPTIONAL | raw::REDISMODULE_CMD_ARG_MULTIPLE
                }
            };
            raw::RedisModuleCommandArg {
                name: a.name.as_ptr(),
                type_,
                // Every command has at most one key spec, index 0.
                key_spec_index: if matches!(a.kind, ArgKind::Key) {
                    0
                } else {
                    -1
                },
                token: a.token.map_or(ptr::null(), CStr::as_ptr),
                summary: ptr::null(),
                since: ptr::null(),
                flags: flags as c_int,
                deprecated_since: ptr::null(),
                subargs: subargs.unwrap_or(ptr::null_mut()),
                display_text: ptr::null(),
            }
        })
        .collect();
    // SAFETY: all-zero is a valid RedisModuleCommandArg (null pointers, zero integers) and is
    // the terminator Redis looks for.
    out.push(unsafe { std::mem::zeroed() });
    out
}

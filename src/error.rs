//! Every error reply the module sends, in one place. Messages follow Redis's own: an upper-case
//! code first (`ERR`, `WRONGTYPE`), then a sentence.

use redis_module::RedisError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// Wrong number of arguments for the named command.
    Arity(&'static str),
    /// Unknown option, or an option without its value.
    Syntax,
    /// The same option given twice (or two that exclude each other, like EX and PX).
    Repeated(&'static str),
    /// A required option is missing.
    Missing(&'static str),
    /// Not a decimal integer, or out of the 64-bit range.
    NotInteger,
    /// A time that must be positive was zero or negative, or overflows when added to now.
    InvalidTime(&'static str),
    /// `GRACE` or `DELTA` longer than an entry stores (`core::entry::MAX_SPAN_MS`).
    SpanTooLong(&'static str),
    /// `BETA` that is not a positive finite number.
    InvalidBeta,
    /// `TOKEN` that is not a positive 64-bit integer.
    InvalidToken,
    /// A scan cursor that is not an unsigned 64-bit integer.
    InvalidCursor,
    /// The key holds a value of another type.
    WrongType,
    /// A replicated or loaded entry record that does not decode.
    BadRecord(String),
    /// An internal command sent by a client; it is taken only from a primary or the AOF.
    InternalOnly(&'static str),
    /// The id clock cannot issue an id below the limit every id must stay under.
    IdsExhausted,
    /// A name config (`cache.wb-queue`, `cache.wb-group`) that is empty, too long or spaced.
    BadName,
    /// The write-behind queue holds `cache.wb-max-len` events or more.
    QueueFull { queue: String, max: i64 },
    /// `maxmemory-policy` may evict the write-behind queue (`allkeys-*`).
    QueueEvictable(String),
    /// Over `maxmemory`: a write-behind command writes nothing.
    OutOfMemory,
    /// The caller's ACL user may not write the write-behind queue's key.
    QueueNoPerm(String),
    /// The write-behind queue's key holds something other than a stream.
    QueueWrongType(String),
    /// In a cluster, other primaries did not confirm a tag invalidation in time.
    SpreadTimeout {
        ms: i64,
        silent: Vec<String>,
        of: usize,
    },
    /// In a cluster, the queue of the key's slot is not on this node while the slot moves
    /// (migrating: it went ahead of the key; importing: it has not come yet). Core Redis gives
    /// multi-key commands `TRYAGAIN` in the same spot; clients retry it.
    SlotMoving { slot: u16, importing: bool },
    /// A panic was caught: a bug, reported instead of crashing the server.
    Internal,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Arity(cmd) => {
                write!(f, "ERR wrong number of arguments for '{cmd}' command")
            }
            CacheError::Syntax => write!(f, "ERR syntax error"),
            CacheError::Repeated(opt) => write!(f, "ERR syntax error, {opt} given more than once"),
            CacheError::Missing(what) => write!(f, "ERR syntax error, {what} is required"),
            CacheError::NotInteger => write!(f, "ERR value is not an integer or out of range"),
            CacheError::InvalidTime(opt) => {
                write!(
                    f,
                    "ERR invalid {opt} time: must be positive and not overflow"
                )
            }
            CacheError::SpanTooLong(opt) => write!(
                f,
                "ERR invalid {opt} time: at most 4294967295 ms (about 49.7 days)"
            ),
            CacheError::InvalidBeta => write!(f, "ERR BETA must be a positive finite number"),
            CacheError::InvalidToken => write!(f, "ERR TOKEN must be a positive 64-bit integer"),
            CacheError::InvalidCursor => write!(f, "ERR invalid cursor"),
            CacheError::WrongType => write!(
                f,
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            CacheError::BadRecord(why) => write!(f, "ERR bad entry record: {why}"),
            CacheError::InternalOnly(cmd) => write!(
                f,
                "ERR {cmd} is internal: it is accepted only from the replication stream and while loading the AOF"
            ),
            CacheError::IdsExhausted => write!(
                f,
                "ERR the id clock has reached its limit (2^53): no version or token can be issued"
            ),
            CacheError::BadName => write!(
                f,
                "ERR a name must be 1 to 1024 bytes without spaces, braces or control characters"
            ),
            CacheError::QueueFull { queue, max } => write!(
                f,
                "ERR write-behind queue '{queue}' holds cache.wb-max-len ({max}) events or more: nothing written (let the worker drain it)"
            ),
            CacheError::QueueEvictable(policy) => write!(
                f,
                "ERR maxmemory-policy {policy} may evict the write-behind queue: nothing written (use a volatile-* policy or noeviction)"
            ),
            CacheError::OutOfMemory => write!(
                f,
                "OOM command not allowed when used memory > 'maxmemory'."
            ),
            CacheError::QueueNoPerm(queue) => write!(
                f,
                "NOPERM this user has no permissions to write the write-behind queue '{queue}'"
            ),
            CacheError::QueueWrongType(queue) => write!(
                f,
                "WRONGTYPE write-behind queue '{queue}' holds a key that is not a stream"
            ),
            CacheError::SpreadTimeout { ms, silent, of } => write!(
                f,
                "TIMEOUT tag invalidation not confirmed within {ms} ms by {} of the {of} other primaries: {}; it is in force on the others and is resent until these confirm",
                silent.len(),
                silent.join(", ")
            ),
            CacheError::SlotMoving { slot, importing } => write!(
                f,
                "TRYAGAIN slot {slot} is {} and its write-behind queue is not on this node yet: nothing written, try again",
                if *importing { "importing" } else { "migrating" }
            ),
            CacheError::Internal => write!(f, "ERR internal error in the cache module"),
        }
    }
}

impl From<CacheError> for RedisError {
    fn from(e: CacheError) -> RedisError {
        RedisError::String(e.to_string())
    }
}

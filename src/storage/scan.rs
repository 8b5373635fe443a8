//! One page of `SCAN`, run through `RedisModule_Call`: for the commands that walk the keyspace
//! with a cursor a client holds (`CACHE.TAGSCAN`) or that look for keys by pattern
//! (`CACHE.WBQUEUES` in a cluster). `RedisModule_Scan`'s cursor cannot be handed to a client.

use redis_module::{Context, RedisValue};

/// A page of `SCAN`: the cursor to go on from (`0` when the walk is over) and the keys.
pub struct Page {
    pub cursor: Vec<u8>,
    pub keys: Vec<Vec<u8>>,
}

impl Page {
    pub fn is_last(&self) -> bool {
        self.cursor == b"0"
    }
}

/// `SCAN <args...>` (the cursor first); `None` when the reply is not a `SCAN` reply.
pub fn page(ctx: &Context, args: &[&[u8]]) -> Option<Page> {
    let RedisValue::Array(parts) = ctx.call("SCAN", args).ok()? else {
        return None;
    };
    let [next, RedisValue::Array(batch)] = &parts[..] else {
        return None;
    };
    Some(Page {
        cursor: bytes_of(next)?,
        keys: batch.iter().filter_map(bytes_of).collect(),
    })
}

/// The bytes of a string reply of `RedisModule_Call` (text or binary).
pub fn bytes_of(v: &RedisValue) -> Option<Vec<u8>> {
    match v {
        RedisValue::SimpleString(s) => Some(s.as_bytes().to_vec()),
        RedisValue::StringBuffer(b) => Some(b.clone()),
        _ => None,
    }
}

//! What GETX and LOCKGET share beyond answering (`reply::read`): granting the caller's lease.

use redis_module::Context;

use crate::core::xfetch::Status;
use crate::error::CacheError;
use crate::reply::{self, read};
use crate::storage::arg::Arg;
use crate::storage::key::WriteKey;
use crate::storage::lease;

/// Grants this caller the lease on `name` (open for writing as `key`) and answers with it;
/// an error, answered by the caller, when no lease can be granted.
pub fn grant_and_answer(
    ctx: &Context,
    key: &mut WriteKey,
    name: &Arg,
    status: Status,
    now: i64,
    lease_until: i64,
) -> Result<(), CacheError> {
    let token = lease::grant(ctx, key, name, now, lease_until)?;
    read::count(status);
    let value = key.entry().and_then(|e| e.usable_value(now));
    reply::triple(ctx, value, status, Some(token));
    Ok(())
}

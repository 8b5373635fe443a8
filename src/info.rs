//! The INFO handler: `INFO cache` (or `INFO everything`) shows sections `cache_stats` (the
//! counters of `stats`) and `cache_keyspace` (what is in memory now).

use redis_module::{InfoContext, RedisResult};

use crate::stats::{self, Counter};
use crate::storage::handover;
use crate::storage::{datatype, ids, tagindex, wbqueue};
use crate::wrapper::spread;

pub fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let fields: &[(&str, &Counter)] = &[
        ("hits", &stats::HITS),
        ("misses", &stats::MISSES),
        ("stale_hits", &stats::STALE_HITS),
        ("locked", &stats::LOCKED),
        ("early_refreshes", &stats::EARLY_REFRESHES),
        ("leases_granted", &stats::LEASES_GRANTED),
        ("leases_filled", &stats::LEASES_FILLED),
        ("leases_expired", &stats::LEASES_EXPIRED),
        ("leases_released", &stats::LEASES_RELEASED),
        ("leases_revoked", &stats::LEASES_REVOKED),
        ("fills_refused", &stats::FILLS_REFUSED),
        ("writes", &stats::WRITES),
        ("deletes", &stats::DELETES),
        ("lockget_waits", &stats::LOCKGET_WAITS),
        ("lockget_wakeups", &stats::LOCKGET_WAKEUPS),
        ("lockget_handovers", &stats::LOCKGET_HANDOVERS),
        ("lockget_timeouts", &stats::LOCKGET_TIMEOUTS),
        ("tag_invalidations", &stats::TAG_INVALIDATIONS),
        ("tag_entries_invalidated", &stats::TAG_ENTRIES_INVALIDATED),
        ("tag_entries_removed", &stats::TAG_REMOVED),
        ("tag_invalidations_sent", &stats::TAG_SPREAD_STARTED),
        ("tag_invalidation_timeouts", &stats::TAG_SPREAD_TIMEOUTS),
        ("tag_invalidations_received", &stats::TAG_SPREAD_APPLIED),
        ("wb_sets_queued", &stats::WB_SETS),
        ("wb_deletes_queued", &stats::WB_DELS),
        ("wb_refused_full", &stats::WB_REFUSED_FULL),
        ("wb_refused_policy", &stats::WB_REFUSED_POLICY),
        ("wb_refused_oom", &stats::WB_REFUSED_OOM),
        ("wb_refused_acl", &stats::WB_REFUSED_ACL),
    ];
    let (wb_len, wb_oldest) = wbqueue::backlog_for_info(ids::now_ms());
    let (tags, tagged, index_bytes, tombs, pending) = tagindex::with(|ix| {
        (
            ix.tag_count(),
            ix.tagged_entries(),
            ix.heap_bytes(),
            ix.tombs().len(),
            ix.pending_removal(),
        )
    });
    let mut section = ctx.builder().add_section("stats");
    for (name, counter) in fields {
        section = section.field(name, counter.get())?;
    }
    section
        .build_section()?
        .add_section("keyspace")
        .field("entries", datatype::live_entries())?
        .field("lockget_parked", handover::parked() as i64)?
        .field("last_id", ids::last_id())?
        .field("tags", tags as i64)?
        .field("tagged_entries", tagged as i64)?
        .field("tag_index_bytes", index_bytes as i64)?
        .field("tag_invalidations_in_force", tombs as i64)?
        .field("tag_pending_removal", pending as i64)?
        .field(
            "tag_invalidations_unconfirmed",
            spread::unconfirmed() as i64,
        )?
        .field("wb_queue_length", wb_len as i64)?
        .field("wb_oldest_event_age_ms", wb_oldest)?
        .build_section()?
        .build_info()?;
    Ok(())
}

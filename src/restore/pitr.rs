//! Point-in-time recovery of PostgreSQL from a base backup and the WAL
//! archive (`strata restore SOURCE --target-dir DIR --to-…`): which base
//! backup reaches the target, and whether the archived WAL can carry
//! replay there.

use crate::error::{Error, Result};

/// Refuses (exit 2) a recovery the archived WAL cannot deliver: a gap
/// between the base backup's start and the target (for `--to-lsn`) or the
/// newest archived segment (otherwise: replay would stop early at the gap
/// and the restore would silently miss data), or a `--to-lsn` after the
/// newest archived WAL. Returns where the newest segment recovery can
/// reach starts (what a restore to the end of the archive must get to).
pub fn check_wal(
    listing: &crate::sources::postgres::wal::archive::WalListing,
    chosen: &crate::sources::postgres::base::Candidate,
    target: &crate::sources::postgres::base::RecoveryTarget,
    timeline: crate::sources::postgres::base::TimelineTarget,
) -> Result<Option<crate::sources::postgres::wal::Lsn>> {
    use crate::sources::postgres::base::{RecoveryTarget, TimelineTarget};
    use crate::sources::postgres::wal::{Lsn, SegmentSize, Timeline, continuity::continuity};
    let (Ok(start), Some(size)) = (
        chosen.base.start_lsn.parse::<Lsn>(),
        SegmentSize::new(chosen.base.wal_segment_size),
    ) else {
        return Ok(None);
    };
    let segments = &listing.segments;
    let mut switches = listing.switches.clone();
    match timeline {
        TimelineTarget::Current => switches.clear(),
        TimelineTarget::Latest => {}
        TimelineTarget::Number(n) => switches.retain(|s| s.timeline.0 <= n),
    }
    let c = continuity(
        segments,
        &switches,
        Timeline(chosen.base.timeline),
        start,
        size,
    );
    let backup = chosen.entry.summary().id.to_string();
    let gap = match target {
        RecoveryTarget::Lsn(l) => c.gaps.iter().find(|(from, _)| from <= l),
        _ => c.gaps.first(),
    };
    if let Some((_, g)) = gap {
        return Err(Error::usage(format!(
            "cannot recover to {} from base backup {backup}: {}; replay would stop at {}",
            target.describe(),
            g.describe(),
            g.from
        ))
        .hint(format!(
            "choose a target before the gap with --to-lsn (before {}), or archive segment {} again",
            g.from,
            g.missing.first().map(String::as_str).unwrap_or("?")
        )));
    }
    if let RecoveryTarget::Lsn(l) = target
        && *l >= c.reachable
    {
        let newest = c
            .newest
            .map(|n| format!("segment {n}, up to LSN {}", c.reachable))
            .unwrap_or_else(|| format!("nothing from LSN {start} on"));
        return Err(Error::usage(format!(
            "LSN {l} is after the newest archived WAL ({newest})"
        ))
        .hint("choose an earlier --to-lsn, or wait until the WAL holding it is archived"));
    }
    Ok(c.newest.map(|n| n.start_lsn(size)))
}

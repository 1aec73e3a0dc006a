//! Point-in-time recovery of PostgreSQL from a base backup and the WAL
//! archive (`strata restore SOURCE --target-dir DIR --to-…`): which base
//! backup reaches the target, whether the archived WAL can carry replay
//! there, and the `restore_command` through which the restored server
//! fetches that WAL.

use std::path::PathBuf;

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

/// The `restore_command` the restored server runs: this strata binary,
/// with absolute paths (the server runs it from its data directory);
/// `identity`: one given on the command line or in the environment (the
/// config's the command reads itself).
pub fn restore_command(
    config: &std::path::Path,
    identity: Option<&std::path::Path>,
    source: &str,
) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the strata executable: {e}")))?;
    let mut cmd = format!(
        "{} --config {}",
        shell_word(&exe.display().to_string()),
        shell_word(&absolute(config)?.display().to_string())
    );
    if let Some(id) = identity {
        cmd.push_str(&format!(
            " --identity {}",
            shell_word(&absolute(id)?.display().to_string())
        ));
    }
    cmd.push_str(&format!(" wal fetch --source {} %f %p", shell_word(source)));
    Ok(cmd)
}

/// `p` made absolute (a usage error when it cannot be).
pub fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::usage(format!("{}: {e}", p.display())))
}

/// Quotes a word for the shell that runs restore_command, when needed.
fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

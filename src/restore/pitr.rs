//! Point-in-time recovery of PostgreSQL from a base backup and the WAL
//! archive (`strata restore SOURCE --target-dir DIR --to-…`): which base
//! backup reaches the target, whether the archived WAL can carry replay
//! there, and the `restore_command` through which the restored server
//! fetches that WAL, and how it starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::catalog::Repository;
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::sources::postgres::Target;
use crate::sources::postgres::pitr::{self, Candidate, RecoveryTarget, TimelineTarget};
use crate::sources::postgres::server::StartOptions;
use crate::sources::postgres::wal::Lsn;

/// The base backup a point-in-time restore starts from, and where the
/// newest WAL segment it can replay starts.
pub struct BasePlan {
    pub chosen: Candidate,
    /// See [`check_wal`]: what a restore to the end of the archive must
    /// reach.
    pub newest_start: Option<Lsn>,
}

/// Chooses the base backup of `source` recovery to `target` starts from
/// (`backup`: an id, or `latest`: the newest that ends before the
/// target), and refuses — before anything is read — a target the
/// repository cannot reach: a restore point `--to-name` names that strata
/// did not record (unless `unrecorded_name`), a gap in the archived WAL,
/// a timeline that is not live, a `--to-time` after the newest archived
/// WAL.
pub async fn choose_base(
    repo: &Repository,
    source: &str,
    backup: &str,
    target: &RecoveryTarget,
    unrecorded_name: bool,
    timeline: TimelineTarget,
    identities: &Arc<Vec<Identity>>,
) -> Result<BasePlan> {
    // A restore point strata recorded is checked before anything starts
    // (a wrong name used to replay the whole archive, then fail), and its
    // LSN chooses the base backup, as --to-lsn would.
    let choice = match target {
        RecoveryTarget::Name(n) => match repo.point_lsn(source, n, unrecorded_name).await? {
            Some(lsn) => RecoveryTarget::Lsn(lsn),
            None => target.clone(),
        },
        _ => target.clone(),
    };
    let named = backup != "latest";
    let (entries, unreadable) = if named {
        (vec![repo.find(source, backup).await?], Vec::new())
    } else {
        repo.backups(Some(source)).await?
    };
    let cands = pitr::candidates(&entries, identities)?;
    if cands.is_empty() {
        crate::catalog::refuse_unreadable(source, "base", &unreadable, None, None)?;
        return Err(Error::usage(format!(
            "{} has no base backup{}",
            source,
            if named {
                format!(" with id {}", backup)
            } else {
                String::new()
            }
        ))
        .hint(format!(
            "take one with `strata backup {} --kind base`",
            source
        )));
    }
    let archive = crate::sources::postgres::wal::archive::WalArchive::new(repo, source);
    let listing = archive.listing(Some(identities.clone())).await?;
    let chosen = pitr::choose(cands, &choice, timeline, &listing.switches);
    // (a named backup reads no other manifest: `unreadable` is empty)
    let upto = match target {
        RecoveryTarget::Time(t) => Some(*t),
        _ => None,
    };
    let id = chosen.as_ref().ok().map(|c| &c.entry.summary().id);
    crate::catalog::refuse_unreadable(source, "base", &unreadable, id, upto)?;
    let mut chosen = chosen?;
    // an incremental: its chain opened and checked before anything is read
    crate::sources::postgres::base::chain::resolve(repo, &mut chosen, identities).await?;
    pitr::check_live_timelines(&chosen, timeline, &listing)?;
    let newest_start = check_wal(&listing, &chosen, &choice, timeline)?;
    if let RecoveryTarget::Time(t) = target
        && let (Some(until), Some((newest, _))) =
            (archive.archived_until(&listing).await?, listing.newest)
        && *t > until
    {
        // PostgreSQL would replay everything archived, never meet a commit
        // after T, and stop with "recovery ended before configured
        // recovery target was reached"
        let at = |d: &chrono::DateTime<chrono::Utc>| {
            d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        return Err(Error::usage(format!(
            "--to-time {} is after the newest archived WAL: segment {newest} was archived at {}, and the WAL written since is not in the archive",
            at(t),
            at(&until)
        ))
        .hint(format!(
            "if the server still runs, `SELECT pg_switch_wal()` on it archives the segment being written (then try again); \
             else choose an earlier time, or --latest to replay everything archived (up to about {})",
            at(&until)
        )));
    }
    Ok(BasePlan {
        chosen,
        newest_start,
    })
}

/// How a restored server starts: on 127.0.0.1:`port`, connected to as
/// the source's URL says otherwise.
pub fn start_options(url: &Url, port: u16, pg_ctl: PathBuf) -> StartOptions {
    let mut url = url.clone();
    let _ = url.set_host(Some("127.0.0.1"));
    let _ = url.set_port(Some(port));
    StartOptions {
        port,
        pg_ctl,
        connect: Target::new(&crate::sources::postgres::tls::loopback_url(&url)),
        timeout: Duration::from_secs(3600),
    }
}

/// Refuses (exit 2) a recovery the archived WAL cannot deliver: a gap
/// between the base backup's start and the target (for `--to-lsn`) or the
/// newest archived segment (otherwise: replay would stop early at the gap
/// and the restore would silently miss data), or a `--to-lsn` after the
/// newest archived WAL. Returns where the newest segment recovery can
/// reach starts (what a restore to the end of the archive must get to).
pub fn check_wal(
    listing: &crate::sources::postgres::wal::archive::WalListing,
    chosen: &crate::sources::postgres::pitr::Candidate,
    target: &crate::sources::postgres::pitr::RecoveryTarget,
    timeline: crate::sources::postgres::pitr::TimelineTarget,
) -> Result<Option<crate::sources::postgres::wal::Lsn>> {
    use crate::sources::postgres::pitr::{RecoveryTarget, TimelineTarget};
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

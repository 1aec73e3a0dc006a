//! Base backups read from a streaming standby (`[sources.X] backup_from`),
//! so that the primary carries no read load (issue 18 item 4).
//!
//! The primary (`url`) still archives the WAL and answers the checks a
//! base backup makes (archive mode, tablespaces, verify queries); the
//! standby only serves pg_basebackup. Before it does, it must be a standby
//! (in recovery, replay not paused) of the same cluster (its system
//! identifier is the primary's: a standby of another cluster would store a
//! backup that no WAL of this source can recover), and replay no further
//! behind the primary than `backup_from_max_lag`: a backup of a lagging
//! standby is an older backup than the operator thinks. After the backup,
//! the primary switches its WAL segment, so that the segment holding the
//! backup's end reaches the archive now, not when it fills.

use tokio_postgres::Client;

use super::super::{Target, pg_error_text};
use crate::config::Source;
use crate::error::{Error, Result};
use crate::util::human_bytes;

/// `backup_from_max_lag` when not set.
pub const DEFAULT_MAX_LAG: u64 = 64 << 20;

/// The standby of `source` to read from, checked; `primary` is connected
/// to the source's `url`, whose cluster is `system_identifier`.
pub async fn connect(
    source: &Source,
    primary: &Client,
    system_identifier: &str,
) -> Result<Option<(Target, Client)>> {
    let Some(url) = &source.backup_from else {
        return Ok(None);
    };
    let standby = Target::new(url);
    let shown = standby.display();
    let client = standby.connect().await.map_err(|e| {
        e.context(format!(
            "{}: connecting to backup_from {shown}",
            source.name
        ))
    })?;
    let q = |e: tokio_postgres::Error| {
        Error::source(format!(
            "{}: backup_from {shown}: {}",
            source.name,
            pg_error_text(&e)
        ))
    };
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
             (SELECT system_identifier::text FROM pg_control_system()), \
             CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
            &[],
        )
        .await
        .map_err(q)?;
    let (in_recovery, sysid, paused): (bool, String, bool) = (row.get(0), row.get(1), row.get(2));
    if !in_recovery {
        return Err(Error::usage(format!(
            "{}: backup_from {shown} is not a standby (it is not in recovery)",
            source.name
        ))
        .hint("point backup_from at a streaming replica of the source, or remove it to back up from url"));
    }
    if sysid != system_identifier {
        return Err(Error::usage(format!(
            "{}: backup_from {shown} is not a standby of the source's cluster: its system identifier is {sysid}, the primary's ({}) is {system_identifier}",
            source.name,
            Target::new(&source.url).display()
        ))
        .hint("point backup_from at a replica of the source's primary (pg_controldata shows a cluster's system identifier)"));
    }
    // the primary's position first: the lag measured is at least the real one
    let primary_lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| Error::source(format!("{}: {}", source.name, pg_error_text(&e))))?
        .get(0);
    let lag: Option<i64> = client
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::bigint",
            &[&primary_lsn],
        )
        .await
        .map_err(q)?
        .get(0);
    let lag = lag.unwrap_or(i64::MAX).max(0) as u64;
    if lag > source.backup_from_max_lag {
        return Err(Error::source(format!(
            "{}: backup_from {shown} replays {} behind the primary (backup_from_max_lag is {})",
            source.name,
            human_bytes(lag),
            human_bytes(source.backup_from_max_lag)
        ))
        .hint("wait for the standby to catch up (pg_stat_replication on the primary shows its lag), or raise backup_from_max_lag")
        .retryable());
    }
    if paused {
        return Err(Error::source(format!(
            "{}: backup_from {shown}: WAL replay is paused on the standby, so its backup would be as old as the pause",
            source.name
        ))
        .hint("resume it with SELECT pg_wal_replay_resume() on the standby, then back up again")
        .retryable());
    }
    Ok(Some((standby, client)))
}

/// After a standby's backup: the primary closes its WAL segment, so the
/// one holding the backup's end is archived now.
pub async fn switch_primary_wal(source: &Source, primary: &Client) -> Result<()> {
    primary
        .query_one("SELECT pg_switch_wal()::text", &[])
        .await
        .map_err(|e| {
            Error::source(format!(
                "{}: pg_switch_wal() on the primary: {}",
                source.name,
                pg_error_text(&e)
            ))
            .hint("the backup user needs EXECUTE on pg_switch_wal() (superusers have it)")
        })?;
    Ok(())
}

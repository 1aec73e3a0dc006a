//! Physical base backups (`pg_basebackup`, one tar of the whole cluster,
//! no WAL).
//!
//! A base backup is only usable with the WAL from its start to its stop
//! LSN, which `archive_command = 'strata … wal push %p'` stores in the
//! same repository. So the manifest — the commit point — is written only
//! once every segment of that range is in the WAL archive: a listed base
//! backup is always restorable up to its stop point.
//!
//! The rest of a base backup's life is beside this file: `base/tar.rs`
//! stores the stream and reads `backup_label` and `backup_manifest` out of
//! it as it passes, [`super::pitr`] picks the base backup for a recovery
//! target, `base/restore.rs` unpacks one and configures recovery, and
//! [`super::server`] starts the restored copy and waits for it to promote.
//! Their items are re-exported here (`base::restore`,
//! `base::RecoveryTarget`, …).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::wal::archive::WalArchive;
use super::wal::{Lsn, SegmentName, SegmentSize, Timeline, WalFile};
use super::{Target, find_binary, major_of, pg_error_text, server_info};
use crate::catalog::manifest::{BaseInfo, Summary};
use crate::catalog::{BackupId, Manifest, Repository};
use crate::config::Source;
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::sources::backup::{BackupContext, BackupReport};

pub mod apply;
pub mod chain;
mod restore;
mod tar;

pub use restore::{RestoreOptions, RestoreReport, restore, restore_delta};
pub use tar::BASE_OBJECT;
use tar::{parse_manifest_end_lsn, store_basebackup};

/// How long a base backup waits for the archiver to store its WAL.
pub const WAL_WAIT: Duration = Duration::from_secs(60);

/// Takes a physical base backup of `source`.
pub async fn backup(
    ctx: &BackupContext<'_>,
    source: &Source,
    tier: Option<String>,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let target = Target::new(&source.url);
    let client = target.connect().await?;
    let info = server_info(&client).await?;
    super::check_server_version(&target.display(), info.server_version_num)?;
    let q = |e: tokio_postgres::Error| Error::source(pg_error_text(&e));
    let row = client
        .query_one(
            "SELECT current_setting('archive_mode'), \
             (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')::bigint, \
             (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
            &[],
        )
        .await
        .map_err(q)?;
    let archive_mode: String = row.get(0);
    let seg_bytes: i64 = row.get(1);
    let tablespaces: i64 = row.get(2);
    if archive_mode == "off" {
        return Err(Error::usage(format!(
            "{}: archive_mode is off, so the WAL a base backup needs is not archived",
            source.name
        ))
        .hint(format!(
            "set archive_mode = on and archive_command = 'strata --config CONFIG wal push --source {} %p' on the server and restart it",
            source.name
        )));
    }
    if tablespaces > 0 {
        return Err(Error::usage(format!(
            "{}: the cluster has {tablespaces} tablespace(s) besides pg_default and pg_global; \
             strata base backups stream one tar of the data directory and cannot hold tablespaces yet",
            source.name
        ))
        .hint("use `--kind dump` for this source, or move the tables to pg_default"));
    }
    let seg_size = SegmentSize::new(seg_bytes as u64).ok_or_else(|| {
        Error::source(format!(
            "server reports wal_segment_size {seg_bytes}, not a valid segment size"
        ))
    })?;
    let major = major_of(info.server_version_num);
    let pg_basebackup = find_binary(source.bin_dir.as_deref(), "pg_basebackup", major)?;
    let id = BackupId::new(started);
    ctx.reporter.note(format!(
        "base backup {}: {} (PostgreSQL {}) as {id}",
        source.name,
        target.display(),
        info.server_version
    ));

    // verify_queries are recorded as the backup starts: a base backup has
    // no single snapshot to run them in (docs/pgvector.md).
    let verify_results =
        super::verify_queries::run(&client, &source.name, &source.verify_queries).await?;

    let mut cmd = target.command(&pg_basebackup);
    cmd.args([
        "-D",
        "-",
        "-Ft",
        "-X",
        "none",
        "--checkpoint=fast",
        "--no-password",
    ])
    .arg(format!("--dbname={}", target.child_url()));
    let key = Repository::data_key(&source.name, &id, BASE_OBJECT);
    let (record, tap) = store_basebackup(ctx, cmd, &source.name, &key).await?;
    let stop_time = Utc::now();

    let label = tap.label.ok_or_else(|| {
        Error::source(format!(
            "{}: pg_basebackup's output holds no backup_label",
            source.name
        ))
    })?;
    let (start_lsn, timeline) = parse_label(&label)
        .map_err(|e| Error::source(format!("{}: backup_label: {e}", source.name)))?;
    let start_time = parse_label_time(&label).unwrap_or(started);
    let stop_lsn = parse_manifest_end_lsn(&tap.manifest_tail).ok_or_else(|| {
        Error::source(format!(
            "{}: pg_basebackup's output holds no backup_manifest with a WAL range",
            source.name
        ))
        .hint("strata needs pg_basebackup 13 or newer, with backup manifests enabled")
    })?;

    // The commit point waits for the WAL that makes the backup consistent.
    let archive = WalArchive::new(ctx.repo, &source.name);
    let needed = segments_between(timeline, start_lsn, stop_lsn, seg_size);
    ctx.reporter.note(format!(
        "{}: waiting for WAL {} … {} in the archive",
        source.name,
        needed.first().expect("at least one"),
        needed.last().expect("at least one")
    ));
    wait_for_segments(&archive, &needed, WAL_WAIT).await?;
    lock_wal(&archive, &needed, timeline, ctx.reporter).await?;

    let finished = Utc::now();
    let mut manifest = Manifest::new(
        Summary::of(
            &id,
            &source.name,
            source.kind,
            "base",
            tier.clone(),
            started,
            finished,
        ),
        vec![record],
        None,
    );
    manifest.verify_queries = verify_results;
    manifest.base = Some(BaseInfo {
        start_lsn: start_lsn.to_string(),
        stop_lsn: stop_lsn.to_string(),
        timeline: timeline.0,
        start_time,
        stop_time,
        system_identifier: info.system_identifier.clone(),
        server_version: info.server_version.clone(),
        server_version_num: info.server_version_num,
        wal_segment_size: seg_size.bytes(),
        backup_label: label,
        incremental: None,
    });
    manifest.postgres = Some(info);
    ctx.commit(&manifest, clock).await
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and
/// `START TIMELINE: 1`.
fn parse_label(label: &str) -> std::result::Result<(Lsn, Timeline), String> {
    let field = |name: &str| {
        label
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .ok_or_else(|| format!("no {name} line"))
    };
    let lsn: Lsn = field("START WAL LOCATION:")?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()?;
    let tli: u32 = field("START TIMELINE:")?
        .parse()
        .map_err(|_| "START TIMELINE is not a number".to_string())?;
    Ok((lsn, Timeline(tli)))
}

/// `START TIME: 2026-11-23 11:20:31 UTC` (the server's zone).
fn parse_label_time(label: &str) -> Option<DateTime<Utc>> {
    let t = label.lines().find_map(|l| l.strip_prefix("START TIME:"))?;
    crate::timeparse::parse_time(t.trim(), Utc::now()).ok()
}

/// The segments holding WAL from `start` up to (not including) `stop`.
fn segments_between(tli: Timeline, start: Lsn, stop: Lsn, size: SegmentSize) -> Vec<SegmentName> {
    let first = SegmentName::containing(tli, start, size);
    let last = SegmentName::containing(tli, Lsn(stop.0.max(start.0 + 1) - 1), size);
    let mut out = vec![first];
    let mut s = first;
    while s < last {
        s = s.next(size);
        out.push(s);
    }
    out
}

/// Under a tier's object lock, the WAL that makes the backup consistent
/// (and its timeline's history file) is locked as long as the backup: it
/// was archived under the WAL tier's lock (or none), and a backup that
/// cannot be deleted is worthless if its WAL can be.
async fn lock_wal(
    archive: &WalArchive,
    needed: &[SegmentName],
    timeline: Timeline,
    reporter: &Reporter,
) -> Result<()> {
    let storage = archive.repository().storage();
    let mut files: Vec<WalFile> = needed.iter().map(|s| WalFile::Segment(*s)).collect();
    if timeline.0 > 1 {
        files.push(WalFile::History(timeline));
    }
    let mut extended = 0;
    for f in files {
        for key in [archive.object_key(f), archive.record_key(f)] {
            match storage.extend_lock(&key).await {
                Ok(true) => extended += 1,
                Ok(false) => {}
                // a timeline's history file may predate the archive
                Err(crate::storage::StorageError::NotFound { .. })
                    if matches!(f, WalFile::History(_)) => {}
                Err(e) => {
                    return Err(Error::from(e).context(format!(
                        "locking WAL {f}, which the backup needs, as long as the backup"
                    )));
                }
            }
        }
    }
    if extended > 0 {
        reporter.note(format!(
            "{}: object lock of {extended} WAL objects extended to the backup's",
            archive.source()
        ));
    }
    Ok(())
}

/// Waits until every segment is archived (object and record present).
async fn wait_for_segments(
    archive: &WalArchive,
    needed: &[SegmentName],
    timeout: Duration,
) -> Result<()> {
    let storage = archive.repository().storage().clone();
    let deadline = Instant::now() + timeout;
    let mut i = 0;
    while i < needed.len() {
        let f = WalFile::Segment(needed[i]);
        let there = storage.head(&archive.object_key(f)).await?.is_some()
            && storage.head(&archive.record_key(f)).await?.is_some();
        if there {
            i += 1;
            continue;
        }
        if Instant::now() > deadline {
            return Err(Error::source(format!(
                "WAL segment {} (needed by this base backup) is not in the archive after {}s; no backup was recorded",
                needed[i],
                timeout.as_secs()
            ))
            .hint(format!(
                "check the server's archive_command (it must run `strata wal push`) and pg_stat_archiver; key {}",
                archive.object_key(f)
            ))
            .retryable());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-23 11:20:31 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";

    #[test]
    fn label_and_end_point() {
        let (lsn, tli) = parse_label(LABEL).unwrap();
        assert_eq!(lsn.to_string(), "0/2000028");
        assert_eq!(tli, Timeline(1));
        assert_eq!(
            parse_label_time(LABEL).unwrap().to_rfc3339(),
            "2026-11-23T11:20:31+00:00"
        );
    }

    #[test]
    fn segment_range() {
        let s = SegmentSize::DEFAULT;
        let names = |a: &str, b: &str| -> Vec<String> {
            segments_between(Timeline(1), a.parse().unwrap(), b.parse().unwrap(), s)
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(
            names("0/2000028", "0/2000100"),
            ["000000010000000000000002"]
        );
        assert_eq!(
            names("0/2000028", "0/4000000"),
            ["000000010000000000000002", "000000010000000000000003"]
        );
        assert_eq!(names("0/FF000028", "1/1000010").len(), 3);
    }
}

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

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::wal::archive::WalArchive;
use super::wal::{Lsn, SegmentName, SegmentSize, Timeline, WalFile};
use super::{Target, find_binary, major_of, pg_error_text, server_info};
use crate::catalog::manifest::{BaseInfo, Incremental, IncrementalMethod, Summary};
use crate::catalog::{BackupId, Manifest, Repository};
use crate::config::Source;
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::sources::backup::{BackupContext, BackupReport, IncrementalReport};

pub mod apply;
pub mod basis;
pub mod blocks;
pub mod chain;
pub mod combine;
mod fetch;
mod incremental;
mod restore;
mod stall;
mod standby;
mod tar;

use basis::Sizes;
use blocks::BlockStats;
pub use incremental::DEFAULT_MAX_CHAIN;
use incremental::{Choice, Parent};
pub use restore::{RestoreOptions, RestoreReport, restore, restore_delta};
pub use standby::DEFAULT_MAX_LAG;
pub use tar::BASE_OBJECT;
use tar::{BlocksAgainst, Filter, parse_manifest_end_lsn, store_basebackup};

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
    let standby = standby::connect(source, &client, &info.system_identifier).await?;
    ctx.reporter.note(format!(
        "base backup {}: {} (PostgreSQL {}) as {id}{}",
        source.name,
        target.display(),
        info.server_version,
        match &standby {
            Some((t, _)) => format!(", read from the standby {}", t.display()),
            None => String::new(),
        }
    ));

    // verify_queries are recorded as the backup starts: a base backup has
    // no single snapshot to run them in (docs/pgvector.md).
    let verify_results =
        super::verify_queries::run(&client, &source.name, &source.verify_queries).await?;

    // pg_basebackup reads the standby when there is one
    let (reader, reader_client) = match &standby {
        Some((t, c)) => (t, c),
        None => (&target, &client),
    };
    let plan = plan(ctx, source, reader_client, &info, major).await?;
    let key = Repository::data_key(&source.name, &id, BASE_OBJECT);
    let watch = stall::ArchiveWatch {
        client: reader_client,
        wait: source.archive_wait,
        source: &source.name,
        app_name: format!("strata-base-{id}"),
    };
    let how = How {
        pg_basebackup: &pg_basebackup,
        key: &key,
        id: &id,
        may_fetch: standby.is_none() && seg_size.bytes() <= fetch::MAX_SEGMENT,
    };
    let taken = take(ctx, source, reader, &how, plan, &watch).await?;
    let (record, tap) = (taken.record, taken.tap);
    let stop_time = Utc::now();
    if standby.is_some() {
        standby::switch_primary_wal(source, &client).await?;
    }

    let label = tap.label.ok_or_else(|| {
        Error::source(format!(
            "{}: pg_basebackup's output holds no backup_label",
            source.name
        ))
    })?;
    let (start_lsn, timeline) = parse_label(&label)
        .map_err(|e| Error::source(format!("{}: backup_label: {e}", source.name)))?;
    let start_time = parse_label_time(&label).unwrap_or(started);
    let stop_lsn = parse_manifest_end_lsn(&tap.manifest).ok_or_else(|| {
        Error::source(format!(
            "{}: pg_basebackup's output holds no backup_manifest with a WAL range",
            source.name
        ))
        .hint("strata needs pg_basebackup 13 or newer, with backup manifests enabled")
    })?;
    if let Some((p, _)) = &taken.incremental
        && p.timeline != timeline.0
    {
        return Err(Error::source(format!(
            "{}: the server switched from timeline {} to {} while the incremental backup ran; no backup was recorded",
            source.name, p.timeline, timeline.0
        ))
        .hint("take the backup again: it will be incremental on a backup of the new timeline, or full")
        .retryable());
    }
    // The basis goes before the manifest (data first): the next
    // incremental applies on this backup through it.
    let basis = basis::from_manifest(&tap.manifest).map_err(|why| {
        Error::source(format!(
            "{}: pg_basebackup's backup_manifest: {why}",
            source.name
        ))
    })?;
    let basis_sha256 = basis::store(ctx.repo, &source.name, &id, &basis).await?;

    // The commit point waits for the WAL that makes the backup consistent.
    let archive = WalArchive::new(ctx.repo, &source.name);
    let needed = segments_between(timeline, start_lsn, stop_lsn, seg_size);
    ctx.reporter.note(format!(
        "{}: waiting for WAL {} … {} in the archive",
        source.name,
        needed.first().expect("at least one"),
        needed.last().expect("at least one")
    ));
    wait_for_segments(&archive, &needed, source.archive_wait).await?;
    lock_wal(&archive, &needed, timeline, ctx.reporter).await?;
    if let Some((p, _)) = &taken.incremental {
        incremental::lock_chain(ctx.repo, &source.name, &p.members, ctx.reporter).await?;
    }

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
        incremental: taken.incremental.as_ref().map(|(p, method)| Incremental {
            method: *method,
            parent: p.id.to_string(),
            parent_start_lsn: p.start_lsn.to_string(),
            chain: p.chain.clone(),
        }),
        basis_sha256: Some(basis_sha256),
    });
    manifest.postgres = Some(info);
    let mut report = ctx.commit(&manifest, clock).await?;
    report.full_because = taken.full_because;
    report.incremental = taken.incremental.map(|(p, method)| {
        let stats = taken.blocks.lock().unwrap().clone();
        let blocks = method == IncrementalMethod::Blocks;
        Box::new(IncrementalReport {
            method: method.as_str().into(),
            parent: p.id.to_string(),
            chain: p.parent.chain,
            blocks_read: blocks.then_some(stats.blocks_read),
            blocks_stored: blocks.then_some(stats.blocks_kept),
            wal_dropped_bytes: taken.wal_dropped,
        })
    });
    Ok(report)
}

/// What to take: a full backup (and, when an incremental was asked for,
/// why not), or an incremental on a parent by a method.
struct Plan {
    incremental: Option<(Chosen, IncrementalMethod)>,
    full_because: Option<String>,
}

/// The chosen parent and the timeline it was chosen on.
struct Chosen {
    parent: Box<Parent>,
    timeline: u32,
}

impl std::ops::Deref for Chosen {
    type Target = Parent;
    fn deref(&self) -> &Parent {
        &self.parent
    }
}

/// Chooses the parent (`ctx.incremental`) and the method: `server` on
/// PostgreSQL 17+ with `summarize_wal = on`, else `blocks` (8 kB blocks
/// only).
async fn plan(
    ctx: &BackupContext<'_>,
    source: &Source,
    client: &tokio_postgres::Client,
    info: &crate::catalog::manifest::PostgresInfo,
    major: u32,
) -> Result<Plan> {
    let Some(max_chain) = ctx.incremental else {
        return Ok(Plan {
            incremental: None,
            full_because: None,
        });
    };
    let row = client
        .query_one(
            "SELECT (SELECT timeline_id FROM pg_control_checkpoint())::bigint, \
             current_setting('block_size')::bigint, \
             coalesce(current_setting('summarize_wal', true), 'off')",
            &[],
        )
        .await
        .map_err(|e| Error::source(pg_error_text(&e)))?;
    let timeline: i64 = row.get(0);
    let block_size: i64 = row.get(1);
    let summarize: String = row.get(2);
    let full = |why: String| {
        ctx.reporter
            .note(format!("{}: taking a full base backup: {why}", source.name));
        Ok(Plan {
            incremental: None,
            full_because: Some(why),
        })
    };
    let parent = match incremental::choose(
        ctx.repo,
        &source.name,
        &info.system_identifier,
        timeline as u32,
        max_chain,
    )
    .await?
    {
        Choice::Full(why) => return full(why),
        Choice::Incremental(p) => p,
    };
    let method = if major >= 17 && summarize == "on" {
        IncrementalMethod::Server
    } else if block_size as usize == blocks::BLCKSZ {
        IncrementalMethod::Blocks
    } else {
        return full(format!(
            "the server's block_size is {block_size}; strata's own incremental (for servers without summarize_wal) reads 8192-byte blocks only"
        ));
    };
    ctx.reporter.note(format!(
        "{}: incremental on {} (method {}, a chain of {})",
        source.name,
        parent.id,
        method.as_str(),
        parent.chain.len() + 1
    ));
    Ok(Plan {
        incremental: Some((
            Chosen {
                parent,
                timeline: timeline as u32,
            },
            method,
        )),
        full_because: None,
    })
}

/// What [`take`] stored.
struct Taken {
    record: crate::pipeline::ObjectRecord,
    tap: tar::Tapped,
    incremental: Option<(Chosen, IncrementalMethod)>,
    full_because: Option<String>,
    blocks: Arc<Mutex<BlockStats>>,
    /// `-X fetch`: bytes of WAL pg_basebackup sent and strata dropped.
    wal_dropped: Option<u64>,
}

/// What [`take`] runs, into which object, for which backup.
struct How<'a> {
    pg_basebackup: &'a Path,
    key: &'a str,
    id: &'a BackupId,
    /// An incremental of method `server` may be taken with `-X fetch`
    /// (`base/fetch.rs`): from a primary, with WAL segments of at most
    /// [`fetch::MAX_SEGMENT`].
    may_fetch: bool,
}

/// Runs pg_basebackup into `how.key` as planned. The server may refuse an
/// incremental (WAL summaries missing for the range, summarization just
/// turned on): then a full backup is taken, with a notice and the reason
/// in the report; nothing is lost. An incremental of method `server` is
/// taken with `-X fetch` when `how.may_fetch` (`base/fetch.rs`).
async fn take(
    ctx: &BackupContext<'_>,
    source: &Source,
    target: &Target,
    how: &How<'_>,
    plan: Plan,
    watch: &stall::ArchiveWatch<'_>,
) -> Result<Taken> {
    let key = how.key;
    let command = |incremental: Option<&Path>, fetch: bool| {
        let mut cmd = target.command(how.pg_basebackup);
        cmd.args([
            "-D",
            "-",
            "-Ft",
            "-X",
            if fetch { "fetch" } else { "none" },
            "--checkpoint=fast",
            "--no-password",
        ])
        .arg(format!("--dbname={}", target.child_url()))
        .env("PGAPPNAME", &watch.app_name);
        if let Some(f) = incremental {
            cmd.arg(format!("--incremental={}", f.display()));
        }
        cmd
    };
    let stats = Arc::new(Mutex::new(BlockStats::default()));
    let mut full_because = plan.full_because;
    let taken = |(record, tap), incremental, full_because| Taken {
        record,
        tap,
        incremental,
        full_because,
        blocks: stats.clone(),
        wal_dropped: None,
    };
    match plan.incremental {
        None => {}
        Some((p, IncrementalMethod::Blocks)) => {
            let against = BlocksAgainst {
                parent: Sizes::parse(&p.basis).map_err(|why| {
                    Error::integrity(format!("the basis of backup {}: {why}", p.id))
                })?,
                parent_start: p.start_lsn.0,
                stats: stats.clone(),
            };
            let stored = store_basebackup(
                ctx,
                command(None, false),
                &source.name,
                key,
                Filter::Blocks(against),
                watch,
            )
            .await?;
            return Ok(taken(stored, Some((p, IncrementalMethod::Blocks)), None));
        }
        Some((p, IncrementalMethod::Server)) => {
            // the parent's basis in a private temp file (metadata only),
            // removed when dropped
            let temp_failed = |e: std::io::Error| {
                Error::new(crate::error::Kind::Failed, format!("temp file: {e}"))
            };
            let mut file = tempfile::Builder::new()
                .prefix("strata-basis-")
                .suffix(".json")
                .tempfile()
                .map_err(temp_failed)?;
            std::io::Write::write_all(&mut file, &p.basis).map_err(temp_failed)?;
            let slot = match how.may_fetch {
                true => match fetch::reserve(watch.client, how.id).await {
                    Ok(slot) => Some(slot),
                    Err(why) => {
                        ctx.reporter.note(format!(
                            "{}: no temporary replication slot to keep the backup's WAL ({why}); the server waits for the archive itself (-X none), which takes a second longer",
                            source.name
                        ));
                        None
                    }
                },
                false => None,
            };
            let cmd = command(Some(file.path()), slot.is_some());
            let dropped = Arc::new(AtomicU64::new(0));
            let filter = match slot {
                Some(_) => Filter::DropWal(dropped.clone()),
                None => Filter::None,
            };
            let stored = store_basebackup(ctx, cmd, &source.name, key, filter, watch).await;
            if let Some(slot) = &slot {
                fetch::release(watch.client, slot).await;
            }
            match stored {
                Ok(stored) => {
                    let mut t = taken(stored, Some((p, IncrementalMethod::Server)), None);
                    t.wal_dropped = slot.is_some().then(|| dropped.load(Ordering::Relaxed));
                    return Ok(t);
                }
                Err(e) if refused_incremental(&e.message) => {
                    let why = format!(
                        "the server refused an incremental on {}: {}",
                        p.id,
                        e.message.trim()
                    );
                    ctx.reporter
                        .note(format!("{}: taking a full base backup: {why}", source.name));
                    full_because = Some(why);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let stored = store_basebackup(
        ctx,
        command(None, false),
        &source.name,
        key,
        Filter::None,
        watch,
    )
    .await?;
    Ok(taken(stored, None, full_because))
}

/// Whether pg_basebackup failed because the server would not take this
/// incremental (rather than for a reason a full backup would share).
fn refused_incremental(message: &str) -> bool {
    let m = message.to_lowercase();
    ["summar", "incremental", "manifest"]
        .iter()
        .any(|w| m.contains(w))
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
    // the last segment is usually being archived as the backup ends:
    // look again soon, then every 250 ms
    let mut pause = Duration::from_millis(20);
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
                "check the server's archive_command (it must run `strata wal push`) and pg_stat_archiver; key {}; `archive_wait` sets how long a base backup waits",
                archive.object_key(f)
            ))
            .retryable());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
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

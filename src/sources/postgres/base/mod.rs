//! Physical base backups (`pg_basebackup`, one tar of the whole cluster,
//! no WAL) and point-in-time restores from them.
//!
//! A base backup is only usable with the WAL from its start to its stop
//! LSN, which `archive_command = 'strata … wal push %p'` stores in the
//! same repository. So the manifest — the commit point — is written only
//! once every segment of that range is in the WAL archive: a listed base
//! backup is always restorable up to its stop point.
//!
//! A restore unpacks the tar into an empty directory and leaves
//! PostgreSQL to replay WAL through `strata wal fetch` (its
//! `restore_command`) up to the recovery target.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::wal::archive::WalArchive;
use super::wal::continuity::TimelineSwitch;
use super::wal::{Lsn, SegmentName, SegmentSize, Timeline, WalFile};
use super::{Target, find_binary, major_of, pg_error_text, server_info};
use crate::catalog::manifest::{BaseInfo, Summary};
use crate::catalog::{BackupId, Entry, Manifest, Repository};
use crate::config::Source;
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::{ObjectRecord, fetch};
use crate::progress::Reporter;
use crate::sources::backup::{BackupContext, BackupReport, spawn_piped, store_child_output};
use crate::storage::Storage;

/// The one object of a base backup: the cluster as a tar stream.
pub const BASE_OBJECT: &str = "base.tar";
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
    });
    manifest.postgres = Some(info);
    ctx.commit(&manifest, clock).await
}

/// What the tar tap found in pg_basebackup's stream.
#[derive(Debug, Default)]
struct Tapped {
    /// The `backup_label` member.
    label: Option<String>,
    /// The end of the `backup_manifest` member (it ends with the WAL range).
    manifest_tail: Vec<u8>,
}

/// A tar reader that passes every byte on and, as they pass, follows the
/// member headers to keep `backup_label` and the end of `backup_manifest`
/// (pg_basebackup adds the manifest as the last member when it writes a
/// tar to stdout). Memory is bounded whatever the size of the cluster.
struct TarTap<R> {
    inner: R,
    header: Vec<u8>,
    /// Bytes of the current member still to come: data, then padding.
    data_left: u64,
    pad_left: u64,
    capture: Capture,
    /// A GNU long name (`L` member) for the next header.
    long_name: Option<String>,
    long_buf: Vec<u8>,
    end: bool,
    out: Arc<Mutex<Tapped>>,
    label_buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Label,
    Manifest,
    LongName,
}

const MANIFEST_TAIL: usize = 64 * 1024;
const LABEL_MAX: usize = 64 * 1024;

impl<R> TarTap<R> {
    fn new(inner: R, out: Arc<Mutex<Tapped>>) -> TarTap<R> {
        TarTap {
            inner,
            header: Vec::with_capacity(512),
            data_left: 0,
            pad_left: 0,
            capture: Capture::None,
            long_name: None,
            long_buf: Vec::new(),
            end: false,
            out,
            label_buf: Vec::new(),
        }
    }

    fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.end {
            if self.data_left > 0 {
                let n = (self.data_left as usize).min(buf.len());
                self.take_data(&buf[..n]);
                self.data_left -= n as u64;
                buf = &buf[n..];
                if self.data_left == 0 {
                    self.member_done();
                }
            } else if self.pad_left > 0 {
                let n = (self.pad_left as usize).min(buf.len());
                self.pad_left -= n as u64;
                buf = &buf[n..];
            } else {
                let n = (512 - self.header.len()).min(buf.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() == 512 {
                    let h = std::mem::take(&mut self.header);
                    self.start_member(&h);
                }
            }
        }
    }

    fn start_member(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.end = true;
            return;
        }
        let size = tar_number(&h[124..136]);
        let kind = h[156];
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let mut name = cstr(&h[..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(long) = self.long_name.take() {
            name = long;
        }
        let name = name.trim_start_matches("./");
        self.capture = match (kind, name) {
            (b'L', _) => Capture::LongName,
            (b'0' | 0, "backup_label") => Capture::Label,
            (b'0' | 0, "backup_manifest") => Capture::Manifest,
            _ => Capture::None,
        };
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
        if size == 0 {
            self.member_done();
        }
    }

    fn take_data(&mut self, d: &[u8]) {
        match self.capture {
            Capture::None => {}
            Capture::Label => {
                if self.label_buf.len() < LABEL_MAX {
                    self.label_buf.extend_from_slice(d);
                }
            }
            Capture::LongName => self.long_buf.extend_from_slice(&d[..d.len().min(4096)]),
            Capture::Manifest => {
                let mut o = self.out.lock().unwrap();
                o.manifest_tail.extend_from_slice(d);
                let len = o.manifest_tail.len();
                if len > 2 * MANIFEST_TAIL {
                    o.manifest_tail.drain(..len - MANIFEST_TAIL);
                }
            }
        }
    }

    fn member_done(&mut self) {
        match self.capture {
            Capture::Label => {
                let text =
                    String::from_utf8_lossy(&std::mem::take(&mut self.label_buf)).into_owned();
                self.out.lock().unwrap().label = Some(text);
            }
            Capture::LongName => {
                let b = std::mem::take(&mut self.long_buf);
                let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
                self.long_name = Some(String::from_utf8_lossy(&b[..end]).into_owned());
            }
            _ => {}
        }
        self.capture = Capture::None;
    }
}

impl<R: Read> Read for TarTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n]);
        Ok(n)
    }
}

/// A tar header number: octal text, or base-256 when the top bit is set.
fn tar_number(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = (v << 8) | u64::from(*b);
        }
        return v;
    }
    field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .fold(0, |v, b| v * 8 + u64::from(b - b'0'))
}

/// The backup's end: the largest `"End-LSN"` of the manifest's WAL ranges.
fn parse_manifest_end_lsn(tail: &[u8]) -> Option<Lsn> {
    let text = String::from_utf8_lossy(tail);
    let ranges = &text[text.rfind("\"WAL-Ranges\"")?..];
    ranges
        .split("\"End-LSN\"")
        .skip(1)
        .filter_map(|rest| {
            let v = rest.split('"').nth(1)?;
            v.parse::<Lsn>().ok()
        })
        .max()
}

/// Streams pg_basebackup's tar into the object at `key`; returns the
/// record and what the tap found. The object is committed only if
/// pg_basebackup exits 0.
async fn store_basebackup(
    ctx: &BackupContext<'_>,
    cmd: Command,
    source: &str,
    key: &str,
) -> Result<(ObjectRecord, Tapped)> {
    let (mut child, tail) = spawn_piped(cmd, "pg_basebackup")?;
    let tapped = Arc::new(Mutex::new(Tapped::default()));
    let stdout = TarTap::new(child.stdout.take().expect("piped"), tapped.clone());
    let what = format!("{source}: pg_basebackup");
    let rec = store_child_output(ctx, child, tail, stdout, &what, key, BASE_OBJECT).await?;
    let tapped = std::mem::take(&mut *tapped.lock().unwrap());
    Ok((rec, tapped))
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

// ---------------------------------------------------------------------------
// restore

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Name(String),
    /// Up to and including this transaction's commit (or abort).
    Xid(u64),
    /// Replay everything archived.
    Latest,
}

/// Parses `--to-xid`: a transaction id as `txid_current()`, `pg_current_xact_id()`
/// or a server log print it (32-bit, or 64-bit with the epoch).
pub fn parse_xid(s: &str) -> Result<u64> {
    match s.trim().parse::<u64>() {
        // 0-2 are reserved (invalid, bootstrap, frozen): never a commit
        Ok(x) if x >= 3 => Ok(x),
        _ => Err(Error::usage(format!(
            "--to-xid {s:?}: give a transaction id (a number of 3 or more, as `SELECT pg_current_xact_id()` shows)"
        ))),
    }
}

impl RecoveryTarget {
    /// The `recovery_target_*` setting, if any.
    fn setting(&self) -> Option<String> {
        match self {
            RecoveryTarget::Time(t) => Some(format!(
                "recovery_target_time = '{}'",
                t.format("%Y-%m-%d %H:%M:%S%.6f+00")
            )),
            RecoveryTarget::Lsn(l) => Some(format!("recovery_target_lsn = '{l}'")),
            RecoveryTarget::Name(n) => Some(format!("recovery_target_name = {}", conf_quote(n))),
            RecoveryTarget::Xid(x) => Some(format!("recovery_target_xid = '{x}'")),
            RecoveryTarget::Latest => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(t) => format!(
                "time {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            RecoveryTarget::Lsn(l) => format!("LSN {l}"),
            RecoveryTarget::Name(n) => format!("restore point {n:?}"),
            RecoveryTarget::Xid(x) => format!("transaction {x}"),
            RecoveryTarget::Latest => "the end of the archived WAL".into(),
        }
    }
}

/// Quotes a value for postgresql.conf.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A base backup with its opened manifest.
pub struct Candidate {
    pub entry: Entry,
    pub base: BaseInfo,
    pub record: ObjectRecord,
}

/// Opens the manifests of every base backup among `entries` (newest first).
pub fn candidates(entries: &[Entry], identities: &[Identity]) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.summary().kind == "base") {
        let m = e.file.open(&e.manifest_key, identities)?;
        let (Some(base), Some(record)) = (m.base.clone(), m.object(BASE_OBJECT).cloned()) else {
            return Err(Error::integrity(format!(
                "base backup {} has no base information or no {BASE_OBJECT}",
                e.summary().id
            )));
        };
        out.push(Candidate {
            entry: e.clone(),
            base,
            record,
        });
    }
    Ok(out)
}

/// Picks the newest base backup that ends before `target`; refuses a
/// target before the oldest one (exit 2).
/// The timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineTarget {
    /// The base backup's own timeline.
    Current,
    /// The newest timeline, as PostgreSQL finds it: history files counted
    /// upward from the base backup's timeline without a hole.
    Latest,
    Number(u32),
}

impl std::fmt::Display for TimelineTarget {
    /// As `--timeline` and `recovery_target_timeline` spell it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimelineTarget::Current => f.write_str("current"),
            TimelineTarget::Latest => f.write_str("latest"),
            TimelineTarget::Number(n) => write!(f, "{n}"),
        }
    }
}

impl TimelineTarget {
    /// `latest`, `current` or a number (`--timeline`).
    pub fn parse(s: &str) -> Result<TimelineTarget> {
        match s {
            "latest" => Ok(TimelineTarget::Latest),
            "current" => Ok(TimelineTarget::Current),
            n => n.parse().map(TimelineTarget::Number).map_err(|_| {
                Error::usage(format!(
                    "--timeline {s:?}: give a timeline number, `latest` or `current`"
                ))
            }),
        }
    }

    /// The timeline recovery from a base backup on `base` ends on.
    pub fn resolve(self, base: Timeline, switches: &[TimelineSwitch]) -> Timeline {
        match self {
            TimelineTarget::Current => base,
            TimelineTarget::Number(n) => Timeline(n),
            TimelineTarget::Latest => {
                let have: std::collections::BTreeSet<u32> =
                    switches.iter().map(|s| s.timeline.0).collect();
                let mut t = base.0;
                while have.contains(&(t + 1)) {
                    t += 1;
                }
                Timeline(t)
            }
        }
    }
}

/// A parent timeline that kept receiving WAL after a child branched off
/// it: two servers wrote (an old primary that ran on after a failover, a
/// restored copy promoted while production went on). Following the child
/// silently drops what the parent wrote after the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveParent {
    pub child: Timeline,
    pub parent: Timeline,
    /// Where the child branched off.
    pub branch: Lsn,
    /// The parent's newest archived segment, past the branch.
    pub parent_newest: SegmentName,
}

/// The parents on the way from `base` to `target` (each child's direct
/// parent, the last line of its history file) that hold archived
/// segments after the segment their child branched off in. The segment
/// holding the branch point itself proves nothing: an old primary that
/// died may have archived it whole.
pub fn live_parents(
    base: Timeline,
    target: Timeline,
    segments: &[SegmentName],
    switches: &[TimelineSwitch],
    size: SegmentSize,
) -> Vec<LiveParent> {
    let mut out = Vec::new();
    let mut child = target;
    while child > base {
        // the direct parent: the switch of `child` at the highest LSN
        let Some(direct) = switches
            .iter()
            .filter(|s| s.timeline == child)
            .max_by_key(|s| s.switch)
        else {
            break;
        };
        let branch_segno = SegmentName::containing(direct.parent, direct.switch, size).segno(size);
        if let Some(newest) = segments
            .iter()
            .filter(|s| s.timeline == direct.parent && s.segno(size) > branch_segno)
            .max()
        {
            out.push(LiveParent {
                child,
                parent: direct.parent,
                branch: direct.switch,
                parent_newest: *newest,
            });
        }
        child = direct.parent;
    }
    out
}

/// Refuses to follow `--timeline latest` from `chosen` when the path
/// it takes leaves a parent that kept receiving WAL (see [`LiveParent`]).
/// An explicit timeline is the operator's choice and is not checked.
pub fn check_live_timelines(
    chosen: &Candidate,
    timeline: TimelineTarget,
    listing: &super::wal::archive::WalListing,
) -> Result<()> {
    let (TimelineTarget::Latest, Some(size)) =
        (timeline, SegmentSize::new(chosen.base.wal_segment_size))
    else {
        return Ok(());
    };
    let from = Timeline(chosen.base.timeline);
    let to = timeline.resolve(from, &listing.switches);
    refuse_live_parents(&live_parents(
        from,
        to,
        &listing.segments,
        &listing.switches,
        size,
    ))
}

/// The error for the first of `live`, if any.
pub fn refuse_live_parents(live: &[LiveParent]) -> Result<()> {
    let Some(l) = live.first() else {
        return Ok(());
    };
    Err(Error::usage(format!(
        "two timelines are live: timeline {} branched off timeline {} at LSN {}, and timeline {} kept receiving WAL after that (its newest archived segment is {}); --timeline latest would follow timeline {} and miss what timeline {} wrote since",
        l.child.0, l.parent.0, l.branch, l.parent.0, l.parent_newest, l.child.0, l.parent.0
    ))
    .hint(format!(
        "pick one: --timeline {} (or `current` when the base backup is on it) follows the server that kept running on timeline {}; --timeline {} follows the branch (a failover's new primary, or a restored copy that archived); a restored copy archives only with --archive-mode preserve",
        l.parent.0, l.parent.0, l.child.0
    )))
}

/// Whether recovery can follow timeline `target` from the base backup
/// `c`: it is on that timeline, or wholly (start to stop) on an ancestor
/// before the point where `target`'s history leaves it. PostgreSQL refuses
/// anything else ("requested timeline is not a child of this server's
/// history"), or never reaches the backup's end.
pub fn reaches(c: &BaseInfo, target: Timeline, switches: &[TimelineSwitch]) -> bool {
    let base = Timeline(c.timeline);
    if base == target {
        return true;
    }
    let Ok(stop) = c.stop_lsn.parse::<Lsn>() else {
        return false;
    };
    switches
        .iter()
        .any(|s| s.timeline == target && s.parent == base && stop <= s.switch)
}

/// The newest base backup among `cands` from which recovery can reach
/// `target` on the timeline `timeline` names (`switches`: the archive's
/// timeline history).
pub fn choose(
    cands: Vec<Candidate>,
    target: &RecoveryTarget,
    timeline: TimelineTarget,
    switches: &[TimelineSwitch],
) -> Result<Candidate> {
    let oldest = cands
        .iter()
        .min_by_key(|c| c.base.stop_time)
        .map(|c| (c.base.stop_time, c.base.stop_lsn.clone()));
    let Some((oldest_time, oldest_lsn)) = oldest else {
        return Err(Error::integrity("no base backup of this source")
            .hint("take one with `strata backup SOURCE --kind base`"));
    };
    let newest = cands
        .iter()
        .max_by_key(|c| c.base.stop_time)
        .map(|c| {
            let tli = timeline.resolve(Timeline(c.base.timeline), switches);
            format!(
                "the newest, {}, is on timeline {} and ends at LSN {}; timeline {} {}",
                c.entry.summary().id,
                c.base.timeline,
                c.base.stop_lsn,
                tli.0,
                match switches
                    .iter()
                    .find(|s| s.timeline == tli && s.parent == Timeline(c.base.timeline))
                {
                    Some(s) => format!("branched off it at LSN {}", s.switch),
                    None => "does not descend from it".to_string(),
                }
            )
        })
        .unwrap_or_default();
    let on_timeline: Vec<Candidate> = cands
        .into_iter()
        .filter(|c| {
            let tli = timeline.resolve(Timeline(c.base.timeline), switches);
            reaches(&c.base, tli, switches)
        })
        .collect();
    if on_timeline.is_empty() {
        return Err(Error::usage(format!(
            "no base backup lies on the history of the timeline recovery would follow: {newest}"
        ))
        .hint("choose the timeline with --timeline N (or `current`), or take a base backup on the new timeline"));
    }
    let fits = |c: &Candidate| match target {
        RecoveryTarget::Time(t) => c.base.stop_time < *t,
        RecoveryTarget::Lsn(l) => c.base.stop_lsn.parse::<Lsn>().is_ok_and(|s| s <= *l),
        // where a restore point lies is not known before replay
        RecoveryTarget::Name(_) | RecoveryTarget::Xid(_) | RecoveryTarget::Latest => true,
    };
    let mut fitting: Vec<Candidate> = on_timeline.into_iter().filter(fits).collect();
    fitting.sort_by_key(|c| std::cmp::Reverse(c.base.stop_time));
    fitting.into_iter().next().ok_or_else(|| {
        Error::usage(format!(
            "{} is before the oldest base backup: the earliest possible point is {} (LSN {oldest_lsn})",
            target.describe(),
            oldest_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .hint("choose a later target; WAL alone cannot go back before a base backup")
    })
}

/// How to restore a base backup.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target_dir: PathBuf,
    pub target: RecoveryTarget,
    /// `recovery_target_timeline`.
    pub timeline: TimelineTarget,
    pub force: bool,
    /// The `restore_command` PostgreSQL runs.
    pub restore_command: String,
    /// Write `archive_mode = 'off'`: the restored server never archives
    /// (else it keeps the backup's setting and, once promoted, archives
    /// its new timeline).
    pub archive_off: bool,
    /// Start the server and wait for it to promote.
    pub start: Option<StartOptions>,
    /// Give the directory to this OS user (when running as root).
    pub owner: Option<String>,
    /// Write `hot_standby = 'off'`: a copy the operator starts accepts
    /// connections only once recovered and promoted.
    pub hot_standby_off: bool,
    /// With `start`: recovery must end at or after this LSN (the start of
    /// the newest archived segment, for a restore to the end of the
    /// archive). A server that promoted before it (WAL PostgreSQL could
    /// not read, a segment missing) is stopped and the restore fails.
    pub must_reach: Option<Lsn>,
}

#[derive(Debug, Clone)]
pub struct StartOptions {
    pub port: u16,
    pub pg_ctl: PathBuf,
    /// Connect as this (the source's URL, host and port replaced).
    pub connect: Target,
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub source: String,
    pub target_dir: String,
    /// What recovery aims for, e.g. `time 2026-11-23T10:00:00.000000Z`.
    pub recovery_target: String,
    pub backup_stop_lsn: String,
    pub backup_stop_time: DateTime<Utc>,
    pub bytes: u64,
    pub started: bool,
    pub port: Option<u16>,
    /// The server's WAL position after promotion, when started.
    pub promoted_at_lsn: Option<String>,
    pub timeline: Option<u32>,
    pub duration_seconds: f64,
    pub phases: Vec<(String, f64)>,
    /// Where the base backup starts: the oldest point it can reach.
    pub backup_start_lsn: String,
    /// The timeline the base backup was taken on.
    pub backup_timeline: u32,
    /// `--delta`: what was kept, written and removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<super::delta::DeltaStats>,
}

/// Restores `cand` into `opts.target_dir` and configures recovery.
pub async fn restore(
    storage: &Arc<dyn Storage>,
    cand: &Candidate,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    restore_into(storage, cand, identities, opts, false, reporter).await
}

/// [`restore`] over a stopped copy of the cluster in `opts.target_dir`,
/// writing only what differs (`restore --delta`, see
/// [`super::delta`]).
pub async fn restore_delta(
    storage: &Arc<dyn Storage>,
    cand: &Candidate,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    restore_into(storage, cand, identities, opts, true, reporter).await
}

async fn restore_into(
    storage: &Arc<dyn Storage>,
    cand: &Candidate,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    delta: bool,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let dir = &opts.target_dir;
    if delta {
        check_delta_dir(dir)?;
    } else {
        prepare_dir(dir, opts.force)?;
    }
    let mut phases = Vec::new();

    // download + extract: decode into a pipe, untar from the other end
    let t = Instant::now();
    let step = reporter.step(
        format!("extract {}", cand.entry.summary().id),
        Some(cand.record.plain_size),
    );
    let (reader, writer) = std::io::pipe()?;
    crate::util::grow_pipe(&writer);
    let d2 = dir.clone();
    let untar = std::thread::spawn(
        move || -> std::io::Result<Option<super::delta::DeltaStats>> {
            if delta {
                return super::delta::unpack(reader, &d2).map(Some);
            }
            super::delta::unpack_new(std::io::BufReader::with_capacity(1 << 20, reader), &d2)?;
            Ok(None)
        },
    );
    let fetched = fetch(
        storage,
        &cand.record,
        identities,
        writer,
        step.progress.clone(),
    )
    .await;
    // drop the writer (end of stream) before joining the reader
    let fetched = fetched.map(drop);
    let untarred = untar.join().expect("untar thread panicked");
    let delta_stats = match (fetched, untarred) {
        (Ok(()), Ok(stats)) => {
            step.done("verified");
            stats
        }
        (Err(e), _) => {
            step.abandon();
            return Err(e.context(format!("{} is incomplete", dir.display())));
        }
        (Ok(()), Err(e)) => {
            step.abandon();
            return Err(Error::failed(format!(
                "unpacking {} into {}: {e}",
                cand.record.key,
                dir.display()
            )));
        }
    };
    std::fs::create_dir_all(dir.join("pg_wal/archive_status"))?;
    write_recovery_conf(dir, opts)?;
    set_mode(dir, 0o700)?;
    if let Some(user) = &opts.owner {
        chown_recursive(dir, user)?;
    }
    phases.push(("download+extract".to_string(), t.elapsed().as_secs_f64()));

    let mut report = RestoreReport {
        backup: cand.entry.summary().id.to_string(),
        source: cand.entry.summary().source.clone(),
        target_dir: dir.display().to_string(),
        recovery_target: opts.target.describe(),
        backup_stop_lsn: cand.base.stop_lsn.clone(),
        backup_stop_time: cand.base.stop_time,
        bytes: cand.record.plain_size,
        started: false,
        port: None,
        promoted_at_lsn: None,
        timeline: None,
        duration_seconds: 0.0,
        phases: vec![],
        backup_start_lsn: cand.base.start_lsn.clone(),
        backup_timeline: cand.base.timeline,
        delta: delta_stats,
    };
    if let Some(start) = &opts.start {
        let t = Instant::now();
        reporter.note(format!(
            "starting PostgreSQL on 127.0.0.1:{} to replay WAL to {}",
            start.port,
            opts.target.describe()
        ));
        pg_ctl_start(dir, start, opts.owner.as_deref()).await?;
        let client = wait_promoted(dir, start, opts.owner.as_deref()).await?;
        phases.push(("recovery".to_string(), t.elapsed().as_secs_f64()));
        let t = Instant::now();
        let row = client
            .query_one(
                "SELECT 1, pg_current_wal_lsn()::text, \
                 (SELECT timeline_id FROM pg_control_checkpoint())",
                &[],
            )
            .await
            .map_err(|e| {
                Error::source(format!(
                    "checking the restored server: {}",
                    pg_error_text(&e)
                ))
            })?;
        let lsn: String = row.get(1);
        let tli: i32 = row.get(2);
        if let (Some(want), Some(ended)) = (opts.must_reach, replay_end(dir))
            && ended < want
        {
            drop(client);
            let stopped = pg_ctl_stop(dir, start, opts.owner.as_deref()).await;
            return Err(Error::integrity(format!(
                "recovery ended at LSN {ended}, before the end of the archived WAL (the newest segment starts at LSN {want}): the WAL after {ended} could not be replayed, so {} holds a copy that misses everything written after that point{}",
                dir.display(),
                if stopped {
                    "; the server was stopped"
                } else {
                    "; the server could not be stopped and still runs"
                }
            ))
            .hint(format!(
                "`strata verify --read-data {}` checks every archived segment; the server log is {}",
                cand.entry.summary().source,
                server_log(dir).display()
            )));
        }
        phases.push(("checks".to_string(), t.elapsed().as_secs_f64()));
        report.started = true;
        report.port = Some(start.port);
        report.promoted_at_lsn = Some(lsn);
        report.timeline = Some(tli as u32);
    }
    report.duration_seconds = clock.elapsed().as_secs_f64();
    report.phases = phases;
    Ok(report)
}

/// `--delta` needs a stopped data directory (or an empty or missing one):
/// everything the backup does not hold is deleted from it.
fn check_delta_dir(dir: &Path) -> Result<()> {
    let empty = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::usage(format!("--target-dir {}: {e}", dir.display()))),
        Ok(mut it) => it.next().is_none(),
    };
    if empty {
        return Ok(());
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::conflict(format!(
            "{} holds postmaster.pid: a server may be running there",
            dir.display()
        ))
        .hint(
            "stop that server (pg_ctl -D DIR stop) first; --delta never rewrites a running cluster",
        ));
    }
    if !dir.join("PG_VERSION").exists() {
        return Err(Error::usage(format!(
            "{} is not empty and holds no PG_VERSION: not a PostgreSQL data directory",
            dir.display()
        ))
        .hint("--delta rewrites a data directory and deletes everything the backup does not hold; point it at one, or use an empty directory"));
    }
    Ok(())
}

/// Refuses a non-empty directory unless `force` (then empties it, but
/// never one a server may be running in).
fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            return Ok(());
        }
        Err(e) => return Err(Error::usage(format!("--target-dir {}: {e}", dir.display()))),
        Ok(mut it) => {
            if it.next().is_none() {
                return Ok(());
            }
        }
    }
    if !force {
        return Err(Error::conflict(format!("{} is not empty", dir.display()))
            .hint("restore into an empty directory, add --delta to rewrite only the files that differ, or --force to delete what it holds"));
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::conflict(format!(
            "{} holds postmaster.pid: a server may be running there",
            dir.display()
        ))
        .hint(
            "stop that server (pg_ctl -D DIR stop) first; --force never deletes a running cluster",
        ));
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// A cluster that keeps its configuration outside the data directory (as
/// Debian's and Ubuntu's packages do, in /etc/postgresql/VER/NAME) has a
/// base backup without postgresql.conf and pg_hba.conf, and the restored
/// copy would not start: minimal ones are written, and the operator told.
fn write_missing_config(dir: &Path) -> Result<()> {
    let files: [(&str, &str); 3] = [
        (
            "postgresql.conf",
            "# written by strata restore: the backup holds no postgresql.conf (the source keeps
             # its configuration outside the data directory); copy its settings in here
",
        ),
        (
            "pg_hba.conf",
            "# written by strata restore: the backup holds no pg_hba.conf; loopback only
             local all all peer
             host all all 127.0.0.1/32 scram-sha-256
             host all all ::1/128 scram-sha-256
",
        ),
        (
            "pg_ident.conf",
            "# written by strata restore
",
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text)?;
            eprintln!(
                "strata: note: the backup holds no {name} (the source keeps its configuration outside its data directory): wrote a minimal {}",
                path.display()
            );
        }
    }
    Ok(())
}

/// `recovery.signal`, and the restore command and target appended to
/// `postgresql.auto.conf` (later lines win over earlier ones).
fn write_recovery_conf(dir: &Path, opts: &RestoreOptions) -> Result<()> {
    write_missing_config(dir)?;
    std::fs::write(dir.join("recovery.signal"), "")?;
    let mut text = String::from("\n# added by strata restore\n");
    text.push_str(&format!(
        "restore_command = {}\n",
        conf_quote(&opts.restore_command)
    ));
    if let Some(s) = opts.target.setting() {
        text.push_str(&s);
        text.push('\n');
    }
    text.push_str("recovery_target_action = 'promote'\n");
    text.push_str(&format!(
        "recovery_target_timeline = {}\n",
        conf_quote(&opts.timeline.to_string())
    ));
    if opts.archive_off {
        text.push_str("archive_mode = 'off'  # strata restore --archive-mode off\n");
    }
    if opts.hot_standby_off {
        // started by the operator: connections only once recovery reached
        // the target and promoted, so nobody reads a partial past while
        // it replays (`pg_ctl -w` returned while the copy still recovered)
        text.push_str(
            "hot_standby = 'off'  # strata restore: no connections before promotion; remove to watch recovery\n",
        );
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("postgresql.auto.conf"))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn set_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub(crate) fn chown_recursive(dir: &Path, user: &str) -> Result<()> {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(dir)
        .output()
        .map_err(|e| Error::failed(format!("cannot run chown: {e}")))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "chown -R {user}: {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .hint("pass --run-as with an existing OS user"));
    }
    Ok(())
}

/// A server program, as `owner` via runuser when given.
pub(crate) fn as_owner(prog: &Path, owner: Option<&str>) -> Command {
    match owner {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

pub(crate) fn server_log(dir: &Path) -> PathBuf {
    dir.join("strata-restore.log")
}

pub(crate) fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(server_log(dir)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Async, and killed when dropped: a drill interrupted while the server
/// starts (with `-w`, for a recovering server that can be the whole WAL
/// replay) does not wait for pg_ctl to return; the sandbox's teardown
/// stops the server itself.
pub(crate) async fn pg_ctl_start(
    dir: &Path,
    start: &StartOptions,
    owner: Option<&str>,
) -> Result<()> {
    let mut cmd = as_owner(&start.pg_ctl, owner);
    // working in the data directory: a drill's teardown kills every
    // process working inside its sandbox (runuser does not pass the
    // SIGKILL of kill_on_drop on to pg_ctl)
    cmd.current_dir(dir)
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(server_log(dir))
        .arg("-o")
        .arg(format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            start.port,
            dir.display()
        ))
        .args(["-w", "-t", "600", "start"])
        .stdin(Stdio::null());
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        if let Some(e) = fetch_failed(dir) {
            return Err(e);
        }
        return Err(Error::source(format!(
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            log_tail(dir)
        ))
        .hint(format!("the server log is {}", server_log(dir).display())));
    }
    Ok(())
}

/// Where recovery ended in a promoted copy: the switch point its new
/// timeline's history file records (`None` before promotion).
pub fn replay_end(dir: &Path) -> Option<Lsn> {
    let history = std::fs::read_dir(dir.join("pg_wal"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "history"))
        .max()?;
    let text = std::fs::read_to_string(history).ok()?;
    text.lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|lsn| lsn.parse().ok())
}

/// `pg_ctl stop -m fast`; whether it stopped.
async fn pg_ctl_stop(dir: &Path, start: &StartOptions, owner: Option<&str>) -> bool {
    let mut cmd = as_owner(&start.pg_ctl, owner);
    cmd.arg("-D")
        .arg(dir)
        .args(["-m", "fast", "-w", "stop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// What `strata wal fetch` printed into the server log when it failed and
/// stopped recovery (see `commands::wal::FETCH_FAILED`): its error lines
/// and the kind of the failure, when it said.
pub(crate) fn fetch_failures(dir: &Path) -> Option<(Vec<String>, crate::error::Kind)> {
    let log = std::fs::read_to_string(server_log(dir)).ok()?;
    let errors: Vec<String> = log
        .lines()
        .filter(|l| l.contains("strata: error:"))
        .take(3)
        .map(String::from)
        .collect();
    if errors.is_empty() {
        return None;
    }
    let kind = log
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("strata: wal fetch failed with exit code ")?.1;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u8>().ok()
        })
        .map(crate::error::Kind::from_exit_code)
        .next()
        .unwrap_or(crate::error::Kind::Failed);
    Some((errors, kind))
}

/// How the error of a recovery that `wal fetch` stopped begins (the drill
/// turns it into its failed "WAL replayed completely" check).
pub const RECOVERY_STOPPED: &str = "recovery stopped";

/// The error for a server that stopped because `strata wal fetch` could
/// not deliver a file (see [`fetch_failures`]), if that is why.
fn fetch_failed(dir: &Path) -> Option<Error> {
    let (errors, kind) = fetch_failures(dir)?;
    Some(
        Error::new(
            kind,
            format!(
                "{RECOVERY_STOPPED}: `strata wal fetch` could not deliver a WAL file the server needs, so the restore stops here rather than ending short of its target: {}",
                errors.join(" | ")
            ),
        )
        .hint(format!(
            "`strata verify --read-data` checks every archived WAL file; to restore to a point before the damage, use --to-lsn or --to-time before it; the server log is {}",
            server_log(dir).display()
        )),
    )
}

/// Polls until the server has left recovery (promoted at the target).
pub(crate) async fn wait_promoted(
    dir: &Path,
    start: &StartOptions,
    owner: Option<&str>,
) -> Result<tokio_postgres::Client> {
    let deadline = Instant::now() + start.timeout;
    // one connection, asked every 50 ms (the restore's clock stops at the
    // promotion); whether the server still runs is checked once a second
    let mut client: Option<tokio_postgres::Client> = None;
    let mut checked = Instant::now();
    loop {
        if client.is_none() {
            client = start.connect.connect().await.ok();
        }
        if let Some(c) = &client {
            match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                Ok(row) if !row.get::<_, bool>(0) => return Ok(client.take().expect("connected")),
                Ok(_) => {}
                Err(_) => client = None,
            }
        }
        if client.is_none() || checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            let mut status = as_owner(&start.pg_ctl, owner);
            status
                .arg("-D")
                .arg(dir)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let running = tokio::process::Command::from(status)
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success());
            if !running {
                if let Some(e) = fetch_failed(dir) {
                    return Err(e);
                }
                return Err(Error::source(format!(
                    "the restored server stopped during recovery:\n{}",
                    log_tail(dir)
                ))
                .hint("a target before the backup's end or past the archived WAL stops recovery; see the server log"));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::source(format!(
                "the restored server did not finish recovery within {}s:\n{}",
                start.timeout.as_secs(),
                log_tail(dir)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The major version a base backup was taken with.
pub fn backup_major(c: &Candidate) -> u32 {
    major_of(c.base.server_version_num)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
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

    const MANIFEST: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n\
\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\
\"Manifest-Checksum\": \"abc\"}\n";

    #[test]
    fn tap_finds_label_and_manifest_in_a_stream() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("backup_label", LABEL.as_bytes());
        add("base/1/1259", &vec![7u8; 100_001]);
        // a name longer than 100 bytes takes a GNU long-name member
        add(&format!("base/1/{}", "x".repeat(150)), b"backup_label");
        add("global/pg_control", &[1u8; 8192]);
        add("backup_manifest", MANIFEST.as_bytes());
        let bytes = b.into_inner().unwrap();
        let out = Arc::new(Mutex::new(Tapped::default()));
        let mut tap = TarTap::new(&bytes[..], out.clone());
        // odd-sized reads cross every boundary
        let mut buf = [0u8; 333];
        let mut copy = Vec::new();
        loop {
            let n = tap.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            copy.extend_from_slice(&buf[..n]);
        }
        assert_eq!(copy, bytes, "bytes pass through unchanged");
        let got = out.lock().unwrap();
        assert_eq!(got.label.as_deref(), Some(LABEL));
        assert_eq!(
            parse_manifest_end_lsn(&got.manifest_tail)
                .unwrap()
                .to_string(),
            "0/2000100"
        );
    }

    #[test]
    fn tar_numbers() {
        assert_eq!(tar_number(b"00000001750\0"), 1000);
        assert_eq!(tar_number(b"     1750 \0\0"), 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 0x02;
        big[10] = 0x01;
        assert_eq!(tar_number(&big), 0x0102);
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

    /// Issue 15 item 2: a copy restored to look at the past archived
    /// timeline 2 while production went on on timeline 1; `--timeline
    /// latest` followed the copy and silently returned its data.
    #[test]
    fn a_parent_that_kept_receiving_wal_is_live() {
        let size = SegmentSize::DEFAULT;
        let seg = |tli: u32, n: u64| SegmentName::from_segno(Timeline(tli), n, size);
        let switch = |tli: u32, parent: u32, segno: u64| TimelineSwitch {
            timeline: Timeline(tli),
            parent: Timeline(parent),
            switch: Lsn(segno * size.bytes() + 0x100),
        };
        // timeline 2 branched off 1 in segment 5
        let switches = [switch(2, 1, 5)];
        // a failover: the old primary archived the branch's segment whole
        let failover = [seg(1, 4), seg(1, 5), seg(2, 5), seg(2, 6)];
        assert!(live_parents(Timeline(1), Timeline(2), &failover, &switches, size).is_empty());
        // the old primary went on: segments 6 and 7 on timeline 1
        let split = [seg(1, 4), seg(1, 5), seg(1, 6), seg(1, 7), seg(2, 5)];
        let live = live_parents(Timeline(1), Timeline(2), &split, &switches, size);
        assert_eq!(live.len(), 1);
        assert_eq!(
            (live[0].parent, live[0].parent_newest),
            (Timeline(1), seg(1, 7))
        );
        let e = refuse_live_parents(&live).unwrap_err();
        assert!(e.message.contains("two timelines are live"), "{e}");
        assert!(e.hint.unwrap().contains("--timeline 1"));
        // a base backup on timeline 2 does not look at timeline 1
        assert!(live_parents(Timeline(2), Timeline(2), &split, &switches, size).is_empty());
        // timeline 3 off 2 off 1: the grandparent is checked too; only the
        // direct parent (the history file's last line) counts per step
        let switches = [switch(2, 1, 5), switch(3, 1, 5), switch(3, 2, 8)];
        let segs = [seg(1, 5), seg(1, 9), seg(2, 5), seg(2, 8), seg(3, 8)];
        let live = live_parents(Timeline(1), Timeline(3), &segs, &switches, size);
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].child, live[0].parent), (Timeline(2), Timeline(1)));
    }

    #[test]
    fn timelines_a_base_backup_reaches() {
        let sw = |t: u32, p: u32, lsn: &str| TimelineSwitch {
            timeline: Timeline(t),
            parent: Timeline(p),
            switch: lsn.parse().unwrap(),
        };
        // 2 branched off 1 at 0/5000000; 3 off 2 at 0/9000000 (its history
        // names both ancestors)
        let switches = [
            sw(2, 1, "0/5000000"),
            sw(3, 1, "0/5000000"),
            sw(3, 2, "0/9000000"),
        ];
        let base = |tli: u32, stop: &str| BaseInfo {
            start_lsn: "0/1000028".into(),
            stop_lsn: stop.into(),
            timeline: tli,
            start_time: Utc::now(),
            stop_time: Utc::now(),
            system_identifier: "1".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            wal_segment_size: 16 << 20,
            backup_label: String::new(),
        };
        let latest = TimelineTarget::Latest;
        assert_eq!(latest.resolve(Timeline(1), &switches), Timeline(3));
        assert_eq!(latest.resolve(Timeline(4), &switches), Timeline(4));
        assert_eq!(
            TimelineTarget::Current.resolve(Timeline(2), &switches),
            Timeline(2)
        );
        // a hole stops PostgreSQL's probe
        assert_eq!(latest.resolve(Timeline(1), &[sw(3, 1, "0/1")]), Timeline(1));

        let early = base(1, "0/4000000");
        assert!(reaches(&early, Timeline(1), &switches));
        assert!(reaches(&early, Timeline(2), &switches));
        assert!(reaches(&early, Timeline(3), &switches));
        // on timeline 1 after the branch: only timeline 1
        let late = base(1, "0/6000000");
        assert!(reaches(&late, Timeline(1), &switches));
        assert!(!reaches(&late, Timeline(2), &switches));
        assert!(!reaches(&late, Timeline(3), &switches));
        // ends exactly at the branch point: fine
        assert!(reaches(&base(1, "0/5000000"), Timeline(2), &switches));
        // on timeline 2 before 3 branched off; never back to 1
        let on2 = base(2, "0/8000000");
        assert!(reaches(&on2, Timeline(3), &switches));
        assert!(!reaches(&on2, Timeline(1), &switches));
        assert!(!reaches(&base(2, "0/A000000"), Timeline(3), &switches));

        assert_eq!(
            TimelineTarget::parse("7").unwrap(),
            TimelineTarget::Number(7)
        );
        assert!(TimelineTarget::parse("newest").is_err());
    }

    #[test]
    fn target_settings() {
        let t = RecoveryTarget::Time("2026-11-23T10:00:00.5Z".parse().unwrap());
        assert_eq!(
            t.setting().unwrap(),
            "recovery_target_time = '2026-11-23 10:00:00.500000+00'"
        );
        assert_eq!(
            RecoveryTarget::Name("it's".into()).setting().unwrap(),
            "recovery_target_name = 'it''s'"
        );
        assert_eq!(RecoveryTarget::Latest.setting(), None);
        assert_eq!(
            RecoveryTarget::Xid(parse_xid("4711").unwrap())
                .setting()
                .unwrap(),
            "recovery_target_xid = '4711'"
        );
        for bad in ["", "0", "2", "-5", "12x", "0/3000060"] {
            assert!(parse_xid(bad).is_err(), "{bad}");
        }
    }
}

//! The WAL half of `strata copy`, and the record of a secondary `wal push`
//! that failed.
//!
//! [`WalCopier`] copies archived WAL files (each one's plain record
//! first, then its object, the order `wal push` writes them in, so `wal
//! fetch` in the target sees a file only once both are there), skipping
//! what the target holds: a base backup's range before its manifest, then
//! everything from the oldest selected base backup's start on. Files are
//! compared by position (`log`, `seg`), whatever their timeline: a newer
//! timeline's WAL continues the older one's. History files are always
//! copied (they are tiny and a restore across a promotion needs them).
//! `archive.json` (the system identifier, hashed with the repository's
//! id) is not copied: the target's first `wal push` records its own.
//!
//! A `wal push` whose secondary repository (a `wal` tier's `copy_to`)
//! fails records it in the primary as `copies/<repository>/wal-<source>.json`
//! ([`record_push_failure`]): `status`, `metrics` and the webhook show it,
//! and the next `strata copy` that copies that source's WAL whole clears it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::object::{self, Copied, Expect};
use super::{Problem, Target, WalCopy, problem};
use crate::catalog::Repository;
use crate::catalog::manifest::PlainWalRange;
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::sources::postgres::wal::archive::{FileRecord, WalArchive};
use crate::sources::postgres::wal::{Lsn, SegmentName, SegmentSize, Timeline, WalFile};
use crate::storage::{PutMode, Storage};

/// WAL files copied at once (each streams through a bounded buffer).
const WAL_CONCURRENCY: usize = 4;

/// A WAL position (`log`, `seg`), whatever the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(u32, u32);

impl Position {
    /// The segment position holding `lsn` (`X/Y`).
    pub fn of(lsn: &str, segment_size: u64) -> Result<Position> {
        let bad = || Error::integrity(format!("a manifest's WAL range is not readable: {lsn:?}"));
        let lsn: Lsn = lsn.parse().map_err(|_| bad())?;
        let size = SegmentSize::new(segment_size).ok_or_else(bad)?;
        Ok(Self::segment(SegmentName::containing(
            Timeline(1),
            lsn,
            size,
        )))
    }

    fn segment(s: SegmentName) -> Position {
        Position(s.log, s.seg)
    }

    /// A file's position; `None` for history files (always copied).
    fn file(f: WalFile) -> Option<Position> {
        match f {
            WalFile::Segment(s) | WalFile::Partial(s) => Some(Self::segment(s)),
            WalFile::BackupHistory { segment, .. } => Some(Self::segment(segment)),
            WalFile::History(_) => None,
        }
    }
}

/// Copies one source's archived WAL into the target.
pub struct WalCopier {
    from: WalArchive,
    from_store: Arc<dyn Storage>,
    /// The target's store, under the `wal` tier's lock there if any.
    to_store: Arc<dyn Storage>,
    /// Archived files of the source (object and record both there), with
    /// the object's size.
    files: BTreeMap<WalFile, u64>,
    /// Keys the target holds, with sizes.
    there: BTreeMap<String, u64>,
    identities: Option<Arc<Vec<Identity>>>,
    /// Files handled by this run (a base backup's range, then the rest:
    /// each counted once).
    handled: std::collections::BTreeSet<WalFile>,
    stats: WalCopy,
    problems: Vec<Problem>,
}

impl WalCopier {
    pub async fn new(
        from: &Repository,
        to: &Target<'_>,
        source: &str,
        identities: Option<Arc<Vec<Identity>>>,
    ) -> Result<WalCopier> {
        let archive = WalArchive::new(from, source);
        let listed = from.storage().list(&archive.prefix()).await?;
        let sizes: BTreeMap<&str, u64> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        let mut files = BTreeMap::new();
        for (f, _) in archive.archived().await? {
            if let Some(size) = sizes.get(archive.object_key(f).as_str()) {
                files.insert(f, *size);
            }
        }
        let there = to
            .repo
            .storage()
            .list(&archive.prefix())
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let to_store = match crate::tier::wal_lock(to.tiers, source) {
            Some((t, l)) if !files.is_empty() => to
                .repo
                .with_object_lock(l.at(Utc::now()), &t.name)
                .await?
                .storage()
                .clone(),
            _ => to.repo.storage().clone(),
        };
        Ok(WalCopier {
            from_store: from.storage().clone(),
            from: archive,
            to_store,
            files,
            there,
            identities,
            handled: Default::default(),
            stats: WalCopy {
                source: source.to_string(),
                ..Default::default()
            },
            problems: Vec::new(),
        }
        .checked())
    }

    fn checked(mut self) -> WalCopier {
        self.stats.content_checked = self.identities.is_some();
        self
    }

    /// What a base backup needs: its start to its stop segment on its
    /// timeline (each must be in the source: a backup whose WAL is not is
    /// not copied), its backup history file, the history files up to its
    /// timeline. `locked`: the backup's own store when it is locked in the
    /// target: its WAL is locked as long as it (files the target holds
    /// already get their lock extended), as a locked base backup does it.
    /// Returns the problems of these files.
    pub async fn copy_range(
        &mut self,
        range: &PlainWalRange,
        locked: Option<Arc<dyn Storage>>,
    ) -> Result<Vec<Problem>> {
        let bad = || {
            Error::integrity(format!(
                "a manifest's WAL range is not readable: {} … {}",
                range.start_lsn, range.stop_lsn
            ))
        };
        let size = SegmentSize::new(range.wal_segment_size).ok_or_else(bad)?;
        let start: Lsn = range.start_lsn.parse().map_err(|_| bad())?;
        let stop: Lsn = range.stop_lsn.parse().map_err(|_| bad())?;
        let tl = Timeline(range.timeline);
        let first = SegmentName::containing(tl, start, size);
        let last = SegmentName::containing(tl, Lsn(stop.0.max(start.0 + 1) - 1), size);
        let before = self.problems.len();
        let mut want = Vec::new();
        let mut s = first;
        loop {
            if !self.files.contains_key(&WalFile::Segment(s)) {
                let e = Error::integrity(format!(
                    "WAL segment {s}, which the base backup needs, is not in the source repository's archive"
                ));
                return Ok(vec![problem(
                    self.from.source(),
                    format!("WAL file {s}"),
                    &e,
                )]);
            }
            want.push(WalFile::Segment(s));
            if s >= last {
                break;
            }
            s = s.next(size);
        }
        want.extend(self.files.keys().copied().filter(|f| match f {
            WalFile::History(t) => *t <= tl,
            WalFile::BackupHistory { segment, .. } => *segment >= first && *segment <= last,
            _ => false,
        }));
        self.copy_files(want, locked.as_ref()).await?;
        Ok(self.problems[before..].to_vec())
    }

    /// Every file from position `from` on, and every history file.
    pub async fn copy_from(&mut self, from: Position) -> Result<()> {
        if self.stats.from_segment.is_none() {
            self.stats.from_segment = Some(format!("{:08X}{:08X}", from.0, from.1));
        }
        let want: Vec<WalFile> = self
            .files
            .keys()
            .copied()
            .filter(|f| Position::file(*f).is_none_or(|p| p >= from))
            .collect();
        self.copy_files(want, None).await
    }

    /// The restore points strata recorded for the source
    /// (`points/<source>/`), so `restore --to-name` from the copy finds
    /// them: small plain objects, copied when the target lacks them.
    pub async fn copy_points(&mut self, to: &Arc<dyn Storage>) -> Result<()> {
        let prefix = format!("points/{}/", self.from.source());
        let there: std::collections::BTreeSet<String> =
            to.list(&prefix).await?.into_iter().map(|o| o.key).collect();
        for o in self.from_store.list(&prefix).await? {
            if there.contains(&o.key) || !o.key.ends_with(".json") {
                continue;
            }
            let bytes = self.from_store.get_bytes(&o.key).await?;
            let want = bytes.clone();
            match object::put_small(to, &o.key, bytes, |h| h == want.as_ref()).await {
                Ok(Copied::Stored(_)) => self.stats.points_copied += 1,
                Ok(Copied::Present) => {}
                Err(e) if e.kind == Kind::Conflict => {
                    let source = self.from.source().to_string();
                    self.problems.push(problem(&source, o.key.clone(), &e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn finish(self) -> (WalCopy, Vec<Problem>) {
        (self.stats, self.problems)
    }

    /// Files, [`WAL_CONCURRENCY`] at a time: each one's record, then its
    /// object (through `locked`, else the `wal` tier's store). A damaged
    /// or conflicting file is a problem (the rest goes on); a store
    /// failure ends the copy.
    async fn copy_files(
        &mut self,
        files: Vec<WalFile>,
        locked: Option<&Arc<dyn Storage>>,
    ) -> Result<()> {
        use futures::StreamExt;
        let store = locked.unwrap_or(&self.to_store).clone();
        let mut todo = Vec::new();
        for f in files {
            if !self.handled.insert(f) && locked.is_none() {
                continue;
            }
            let key = self.from.object_key(f);
            let record_key = self.from.record_key(f);
            let size = self.files[&f];
            if self.there.get(&key) == Some(&size) && self.there.contains_key(&record_key) {
                if locked.is_some() {
                    // archived there under the wal tier's lock (or none):
                    // held as long as the backup that needs it
                    for k in [&record_key, &key] {
                        store.extend_lock(k).await?;
                    }
                }
                self.stats.files_present += 1;
                continue;
            }
            todo.push((f, key, record_key, size));
        }
        let this = &*self;
        let store = &store;
        let done: Vec<_> = futures::stream::iter(todo)
            .map(|(f, key, record_key, size)| async move {
                let r = this
                    .copy_file_inner(f, &key, &record_key, size, store)
                    .await;
                (f, key, record_key, size, r)
            })
            .buffered(WAL_CONCURRENCY)
            .collect()
            .await;
        for (f, key, record_key, size, r) in done {
            match r {
                Ok(n) => {
                    self.there.insert(key, size);
                    self.there.insert(record_key, 0);
                    match n {
                        Copied::Stored(n) => {
                            self.stats.files_copied += 1;
                            self.stats.bytes_copied += n;
                        }
                        Copied::Present => self.stats.files_present += 1,
                    }
                }
                Err(e) if matches!(e.kind, Kind::Integrity | Kind::Conflict | Kind::Crypto) => {
                    let source = self.from.source().to_string();
                    self.problems
                        .push(problem(&source, format!("WAL file {f}"), &e));
                }
                Err(e) => return Err(e.context(format!("copying WAL file {f}"))),
            }
        }
        Ok(())
    }

    async fn copy_file_inner(
        &self,
        f: WalFile,
        key: &str,
        record_key: &str,
        size: u64,
        store: &Arc<dyn Storage>,
    ) -> Result<Copied> {
        if let Some(ids) = &self.identities {
            self.from.read_back(f, ids).await.map_err(|e| {
                Error::new(
                    e.kind,
                    format!(
                        "WAL file {f} in the source repository fails its check, it was not copied: {}",
                        e.message
                    ),
                )
            })?;
        }
        let bytes = self.from_store.get_bytes(record_key).await?;
        let mine: FileRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::integrity(format!(
                "{record_key} in the source repository is not a WAL record ({e}); not copied"
            ))
        })?;
        // the same file pushed into both repositories has records that
        // differ in their push time (and, for history files, their HMAC
        // key): the same content is the same name, size and digest
        let same = |have: &[u8]| {
            serde_json::from_slice::<FileRecord>(have).is_ok_and(|r| {
                r.name == mine.name
                    && r.plain_size == mine.plain_size
                    && (r.sha256.is_none() || mine.sha256.is_none() || r.sha256 == mine.sha256)
            })
        };
        object::put_small(store, record_key, bytes.clone(), same).await?;
        let expect = Expect {
            size: Some(size),
            sha256: None,
        };
        match self.there.get(key) {
            Some(s) if *s == size => Ok(Copied::Present),
            _ => object::copy(&self.from_store, store, key, &expect).await,
        }
    }
}

/// A secondary `wal push` that failed (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushFailure {
    pub source: String,
    /// The secondary repository's name.
    pub repository: String,
    pub first_failed: DateTime<Utc>,
    pub last_failed: DateTime<Utc>,
    /// The last file that could not be pushed there.
    pub last_file: String,
    pub last_error: String,
    pub failures: u64,
}

const COPIES: &str = "copies/";

fn failure_key(repository: &str, source: &str) -> String {
    format!("{COPIES}{repository}/wal-{source}.json")
}

/// Records in `primary` that pushing `file` of `source` into
/// `repository` failed. Best effort: archiving must not fail over it.
pub async fn record_push_failure(
    primary: &Repository,
    repository: &str,
    source: &str,
    file: &str,
    error: &str,
) -> Result<()> {
    let key = failure_key(repository, source);
    let now = Utc::now();
    let old: Option<PushFailure> = match primary.storage().get_bytes(&key).await {
        Ok(b) => serde_json::from_slice(&b).ok(),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let rec = PushFailure {
        source: source.to_string(),
        repository: repository.to_string(),
        first_failed: old.as_ref().map_or(now, |o| o.first_failed),
        last_failed: now,
        last_file: file.to_string(),
        last_error: error.to_string(),
        failures: old.map_or(0, |o| o.failures) + 1,
    };
    let bytes = serde_json::to_vec_pretty(&rec).expect("serialises");
    primary
        .storage()
        .put_bytes(&key, bytes.into(), PutMode::Overwrite)
        .await?;
    Ok(())
}

/// Every recorded secondary push failure in `primary`.
pub async fn push_failures(primary: &Repository) -> Result<Vec<PushFailure>> {
    let mut out = Vec::new();
    for m in primary.storage().list(COPIES).await? {
        if !m.key.ends_with(".json") {
            continue;
        }
        match primary.storage().get_bytes(&m.key).await {
            Ok(b) => {
                if let Ok(r) = serde_json::from_slice(&b) {
                    out.push(r);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Clears the failure record of `source` → `repository` when its last
/// failure came before `copy_started` (the copy then had every file it
/// missed). Best effort.
pub async fn clear_push_failures(
    primary: &Repository,
    repository: &str,
    source: &str,
    copy_started: DateTime<Utc>,
) {
    let key = failure_key(repository, source);
    let Ok(b) = primary.storage().get_bytes(&key).await else {
        return;
    };
    if let Ok(r) = serde_json::from_slice::<PushFailure>(&b)
        && r.last_failed < copy_started
        && let Err(e) = primary.storage().delete(&key).await
    {
        tracing::warn!("cannot clear {key}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_ignore_the_timeline() {
        let p = Position::of("0/3000028", 16 << 20).unwrap();
        assert_eq!(p, Position(0, 3));
        let seg = |s: &str| Position::file(s.parse().unwrap());
        assert_eq!(seg("000000020000000000000003"), Some(p));
        assert_eq!(seg("000000010000000000000003.00000028.backup"), Some(p));
        assert!(seg("000000010000000100000000") > Some(p));
        assert_eq!(seg("00000002.history"), None);
        assert!(Position::of("nonsense", 16 << 20).is_err());
        assert!(Position::of("0/3000028", 1000).is_err());
    }
}

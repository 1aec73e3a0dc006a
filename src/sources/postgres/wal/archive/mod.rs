//! The WAL archive of one source in the repository: what `strata wal push`
//! (PostgreSQL's `archive_command`) stores and `strata wal fetch`
//! (`restore_command`) reads back.
//!
//! Layout (docs/design.md, "WAL archive"):
//!
//! ```text
//! wal/<source>/archive.json                      the archive's system identifier (hashed + sealed)
//! wal/<source>/<timeline>/<segment>              age(zstd(segment))
//! wal/<source>/<timeline>/<segment>.partial      age(zstd(partial segment))
//! wal/<source>/<timeline>/<seg>.<offset>.backup  age(zstd(backup history file))
//! wal/<source>/history/<timeline>.history        age(zstd(timeline history file))
//! <every object key above>.json                  its record: plain size and digest
//! ```
//!
//! Push writes the record first, create-only: it claims the name for one
//! content. The object follows, create-only too. A second push of the
//! name compares digests: the same content succeeds (and uploads the
//! object if a crashed push left only the record), different content is
//! refused and nothing is overwritten. Fetch treats a name as archived
//! only when both exist.
//!
//! Records are plain so that push, which holds only the recipients, can
//! compare. For segments and partial segments the record holds the plain
//! SHA-256 (as pgBackRest keeps a SHA-1 in its archive file names); it
//! confirms a guess only to someone who already holds the whole 16 MiB
//! segment. History and backup history files are short, guessable text, so
//! their record holds an HMAC-SHA256 keyed by the recipient list instead
//! (plus the SHA-256 sealed to the recipients, for fetch and for comparing
//! after the recipients changed).
//!
//! This file holds the layout, the records and everything that reads the
//! archive (listing it, finding a file, downloading and checking one,
//! reading one back for `verify --read-data`); `archive/push.rs` writes to
//! it.

use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{LONG_HEADER_LEN, LongPageHeader, WalFile};
use crate::catalog::Repository;
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::{self, ObjectRecord};
use crate::progress::Progress;
use crate::storage::StorageError;

mod push;

pub use push::{MacKey, PushContext, PushReport, PushStatus};

/// Top-level prefix of every source's WAL archive.
pub const WAL_PREFIX: &str = "wal/";
const RECORD_FORMAT: u32 = 1;

/// One source's WAL archive.
#[derive(Debug, Clone)]
pub struct WalArchive {
    repo: Repository,
    source: String,
}

/// The plain record stored beside each archived file (`<key>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    pub format: u32,
    pub name: String,
    pub plain_size: u64,
    /// SHA-256 of the plain bytes (segments and partial segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// HMAC-SHA256 of the plain bytes (history and backup history files),
    /// keyed by [`MacKey`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<String>,
    /// Which key the HMAC used ([`MacKey::id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<String>,
    /// The SHA-256, age-encrypted to the recipients (armored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_sha256: Option<String>,
    /// When the file was pushed: the WAL in it was written before then.
    /// Kept in the record (not the object's storage time) so it survives
    /// a copy of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<DateTime<Utc>>,
}

/// What [`WalArchive::listing`] found.
#[derive(Debug, Clone, Default)]
pub struct WalListing {
    pub segments: Vec<super::SegmentName>,
    pub switches: Vec<super::continuity::TimelineSwitch>,
    /// Backup history files (`<segment>.<offset>.backup`): where base
    /// backups started, with the object's modification time.
    pub backup_starts: Vec<(super::SegmentName, u32, Option<DateTime<Utc>>)>,
    /// The newest segment (by name), with its object's modification time.
    pub newest: Option<(super::SegmentName, Option<DateTime<Utc>>)>,
}

/// An archived file, found: what [`WalArchive::download`] needs.
#[derive(Debug, Clone)]
pub struct Located {
    pub file: WalFile,
    pub record: ObjectRecord,
}

impl WalArchive {
    pub fn new(repo: &Repository, source: &str) -> WalArchive {
        WalArchive {
            repo: repo.clone(),
            source: source.to_string(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// `wal/<source>/`
    pub fn prefix(&self) -> String {
        format!("{WAL_PREFIX}{}/", self.source)
    }

    pub fn object_key(&self, f: WalFile) -> String {
        match f {
            WalFile::History(_) => format!("{}history/{f}", self.prefix()),
            _ => format!("{}{}/{f}", self.prefix(), f.timeline()),
        }
    }

    pub fn record_key(&self, f: WalFile) -> String {
        format!("{}.json", self.object_key(f))
    }

    pub async fn read_record(&self, name: WalFile) -> Result<Option<FileRecord>> {
        let key = self.record_key(name);
        match self.repo.storage().get_bytes(&key).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::integrity(format!("{key} is not a strata WAL record: {e}"))),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What the archive holds, from the object listing alone: every
    /// segment whose object and record both exist, and the timelines that
    /// have a history file. With `identities`, the history files are read
    /// too (their switch points are sealed).
    pub async fn listing(&self, identities: Option<Arc<Vec<Identity>>>) -> Result<WalListing> {
        let mut segments = Vec::new();
        let mut histories = Vec::new();
        let mut backup_starts = Vec::new();
        let mut newest: Option<(super::SegmentName, Option<DateTime<Utc>>)> = None;
        for (f, modified) in self.archived().await? {
            match f {
                WalFile::Segment(s) => {
                    if newest.is_none_or(|(n, _)| s > n) {
                        newest = Some((s, modified));
                    }
                    segments.push(s)
                }
                WalFile::History(t) => histories.push(t),
                WalFile::BackupHistory { segment, offset } => {
                    backup_starts.push((segment, offset, modified));
                }
                WalFile::Partial(_) => {}
            }
        }
        let mut switches = Vec::new();
        if let Some(ids) = identities {
            for t in histories {
                let Some(found) = self.locate(WalFile::History(t), &ids).await? else {
                    continue;
                };
                let text = pipeline::fetch(
                    self.repo.storage(),
                    &found.record,
                    ids.clone(),
                    Vec::new(),
                    Progress::hidden(),
                )
                .await?;
                let text = String::from_utf8_lossy(&text);
                switches.extend(super::continuity::parse_history(t, &text).map_err(|why| {
                    Error::integrity(format!("archived history file {t}.history: {why}"))
                })?);
            }
        }
        segments.sort();
        Ok(WalListing {
            segments,
            switches,
            backup_starts,
            newest,
        })
    }

    /// Every archived file, by the object listing alone: those whose
    /// object and record both exist under the key their name gives, with
    /// the object's storage time.
    pub async fn archived(&self) -> Result<Vec<(WalFile, Option<DateTime<Utc>>)>> {
        let listed = self.repo.storage().list(&self.prefix()).await?;
        let keys: std::collections::HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        Ok(listed
            .iter()
            .filter(|o| {
                !o.key.ends_with(".json") && keys.contains(format!("{}.json", o.key).as_str())
            })
            .filter_map(|o| {
                let f = o.key.rsplit('/').next()?.parse::<WalFile>().ok()?;
                (self.object_key(f) == o.key).then_some((f, o.modified))
            })
            .collect())
    }

    /// Reads an archived file back and checks it against its record
    /// (digest and size, and for segments that the object holds the
    /// segment its name says), keeping nothing; returns its plain size.
    /// `verify --read-data`: a flipped bit, or a record whose digest was
    /// edited, fails here rather than stopping a restore short.
    pub async fn read_back(&self, name: WalFile, identities: &Arc<Vec<Identity>>) -> Result<u64> {
        let Some(found) = self.locate(name, identities).await? else {
            return Err(Error::integrity(
                "its object or record vanished while it was read",
            ));
        };
        let head = pipeline::fetch(
            self.repo.storage(),
            &found.record,
            identities.clone(),
            FirstBytes(Vec::new()),
            Progress::hidden(),
        )
        .await?;
        check_header(name, &found.record.key, &head.0)?;
        Ok(found.record.plain_size)
    }

    /// When the newest archived segment was pushed (its record's time; the
    /// object's storage time for records written before strata kept it):
    /// WAL up to about then can be replayed, none after it. `None` when
    /// nothing is archived.
    pub async fn archived_until(&self, listing: &WalListing) -> Result<Option<DateTime<Utc>>> {
        let Some((segment, stored)) = listing.newest else {
            return Ok(None);
        };
        Ok(self
            .read_record(WalFile::Segment(segment))
            .await?
            .and_then(|r| r.pushed)
            .or(stored))
    }

    /// Finds an archived file: `None` when it is not archived (or its
    /// upload has not finished).
    pub async fn locate(&self, name: WalFile, identities: &[Identity]) -> Result<Option<Located>> {
        let key = self.object_key(name);
        let (record, head) = tokio::join!(self.read_record(name), self.repo.storage().head(&key));
        let (Some(record), Some(head)) = (record?, head?) else {
            return Ok(None);
        };
        let sha = match (&record.sha256, &record.sealed_sha256) {
            (Some(s), _) => s.clone(),
            (None, Some(sealed)) => {
                let plain = pipeline::unseal(&format!("record of {name}"), identities, sealed)?;
                String::from_utf8(plain).map_err(|_| {
                    Error::integrity(format!("the sealed digest of {name} is not text"))
                })?
            }
            (None, None) => {
                return Err(Error::integrity(format!(
                    "{} holds no digest",
                    self.record_key(name)
                )));
            }
        };
        Ok(Some(Located {
            file: name,
            record: ObjectRecord {
                name: name.to_string(),
                key,
                plain_size: record.plain_size,
                stored_size: head.size,
                plain_sha256: sha,
                stored_sha256: None,
            },
        }))
    }

    /// Decrypts, decompresses and verifies an archived file into `dest`
    /// through `tmp` (renamed over `dest` only once every check passed).
    /// Segments are also checked to start at their name's LSN. With `sync`
    /// the file is fsynced before the rename.
    pub async fn download(
        &self,
        found: &Located,
        dest: &Path,
        tmp: &Path,
        identities: Arc<Vec<Identity>>,
        sync: bool,
    ) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", tmp.display())))?;
        let result = async {
            let file = pipeline::fetch(
                self.repo.storage(),
                &found.record,
                identities,
                io::BufWriter::with_capacity(1 << 20, file),
                Progress::hidden(),
            )
            .await?;
            let (name, tmp_owned, dest_owned) = (found.file, tmp.to_path_buf(), dest.to_path_buf());
            let key = found.record.key.clone();
            tokio::task::spawn_blocking(move || {
                finish_download(file, name, &key, &tmp_owned, &dest_owned, sync)
            })
            .await
            .expect("download task panicked")
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        result
    }
}

fn finish_download(
    file: io::BufWriter<std::fs::File>,
    name: WalFile,
    key: &str,
    tmp: &Path,
    dest: &Path,
    sync: bool,
) -> Result<()> {
    let write_err = |e: io::Error| Error::failed(format!("writing {}: {e}", tmp.display()));
    let mut file = file.into_inner().map_err(|e| write_err(e.into_error()))?;
    if name.segment_data().is_some() {
        file.rewind().map_err(write_err)?;
        let mut first = [0u8; LONG_HEADER_LEN];
        file.read_exact(&mut first).map_err(write_err)?;
        check_header(name, key, &first)?;
    }
    file.flush().map_err(write_err)?;
    if sync {
        file.sync_all().map_err(write_err)?;
    }
    drop(file);
    std::fs::rename(tmp, dest).map_err(|e| {
        Error::failed(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            dest.display()
        ))
    })
}

/// For a segment (or partial segment) `name`, that `first` (its first
/// bytes) is the long page header of that very segment: an object moved
/// or replaced in the store is never used for recovery.
fn check_header(name: WalFile, key: &str, first: &[u8]) -> Result<()> {
    let Some(seg) = name.segment_data() else {
        return Ok(());
    };
    LongPageHeader::parse(first)
        .and_then(|h| h.check_name(seg))
        .map_err(|why| {
            Error::integrity(format!(
                "archived object {key} does not hold segment {name}: {why}"
            ))
            .hint("the object was moved or replaced in the store; do not use it for recovery")
        })
}

/// Keeps the first bytes written (a segment's long page header) and
/// discards the rest: reading WAL back needs no disk and no memory.
struct FirstBytes(Vec<u8>);

impl Write for FirstBytes {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = LONG_HEADER_LEN.saturating_sub(self.0.len());
        self.0.extend_from_slice(&data[..room.min(data.len())]);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `DEST.tmp`, beside DEST.
pub fn tmp_beside(dest: &Path, suffix: &str) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_omits_unused_digests() {
        let r = FileRecord {
            format: 1,
            name: "000000010000000000000003".into(),
            plain_size: 16 << 20,
            sha256: Some("ab".into()),
            hmac_sha256: None,
            hmac_key: None,
            sealed_sha256: None,
            pushed: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains("hmac") && !s.contains("sealed"), "{s}");
        assert_eq!(serde_json::from_str::<FileRecord>(&s).unwrap(), r);
    }
}

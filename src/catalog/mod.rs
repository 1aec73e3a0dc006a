//! The repository: its format marker, where each kind of object lives, and
//! the catalog of backups (their manifests).
//!
//! Layout (see docs/design.md):
//! ```text
//! strata-repository.json               format marker (plain JSON)
//! backups/<source>/<backup-id>/<name>  data objects (age of zstd)
//! manifests/<source>/<backup-id>.json  manifests, written last
//! locks/<name>.json                    who is writing (see [`lock`])
//! wal/<source>/…                       WAL archive (sources::postgres::wal::archive)
//! recipients.json                      the recipients every write must use
//! points/<source>/<name>.json          restore points strata created ([`points`])
//! uploads/<hash>.json                  S3 multipart uploads under way (storage::s3)
//! ```
//! Write order is the crash-safety invariant: all data objects first, the
//! manifest last. Readers start from manifests, so a backup that crashed
//! before its manifest is invisible to list, restore and verify; its data
//! objects are leftovers, reported by `verify` and removed by `cleanup`.
//! Deletion runs in reverse: manifest first, then data.

pub mod id;
pub mod lock;
pub mod manifest;
pub mod pick;
pub mod points;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use id::BackupId;
pub use manifest::{Manifest, ManifestFile, Pin, Summary};

use crate::error::{Error, Kind, Result};
use crate::keys::Recipient;
use crate::storage::{IncompleteUpload, ObjectMeta, PutMode, Storage, StorageError};

pub const MARKER_KEY: &str = "strata-repository.json";
/// The repository format this strata writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The recipients every object in the repository is encrypted to, as
/// recorded by `init` (or the first write of an older repository) and
/// changed only by `strata key recipients --set`.
pub const RECIPIENTS_KEY: &str = "recipients.json";
const MANIFESTS: &str = "manifests/";
const BACKUPS: &str = "backups/";

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: String,
    version: u32,
    created: DateTime<Utc>,
    repository_id: String,
}

/// An opened repository: only obtainable through [`Repository::open`] or
/// [`Repository::init`], so nothing writes into a location whose format
/// was not checked.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn Storage>,
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordedRecipients {
    format: u32,
    recorded: DateTime<Utc>,
    recipients: Vec<String>,
}

/// Recipients as a set: trimmed, sorted, without repeats.
fn recipient_set(recipients: &[String]) -> Vec<String> {
    let mut v: Vec<String> = recipients.iter().map(|r| r.trim().to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// A manifest that exists but could not be read: damaged, of a newer
/// format, sealed to another key, or its read failed (a store outage).
#[derive(Debug)]
pub struct Unreadable {
    pub key: String,
    pub error: Error,
}

impl Unreadable {
    /// The backup id its key names (`manifests/<source>/<id>.json`), when
    /// the key has that shape.
    pub fn id(&self) -> Option<BackupId> {
        let name = self.key.rsplit('/').next()?.strip_suffix(".json")?;
        name.parse().ok()
    }
}

/// Refuses a choice strata makes on the operator's behalf (`latest`, the
/// newest backup at or before `--at`, the base backup for a point in
/// time) while a manifest that could have been the right choice cannot be
/// read: restoring the previous backup instead, with no word, is how a
/// damaged manifest or a store outage silently turns into lost data.
/// `chosen` is the backup that would be used; `upto` the time the choice
/// is bounded by (a backup started after it could not have been chosen).
/// A manifest whose id is from an earlier second than `chosen`, or
/// started after `upto`, changes nothing. A backup the operator names (`--backup ID`) is never
/// refused: this is only called for automatic choices.
pub fn refuse_unreadable(
    source: &str,
    what: &str,
    unreadable: &[Unreadable],
    chosen: Option<&BackupId>,
    upto: Option<DateTime<Utc>>,
) -> Result<()> {
    let relevant = unreadable.iter().find(|u| match u.id() {
        None => true,
        // ids carry whole seconds: one from the chosen backup's second may
        // be newer than it whatever its random suffix says
        Some(id) => {
            chosen.is_none_or(|c| id.time() >= c.time()) && upto.is_none_or(|t| id.time() <= t)
        }
    });
    let Some(u) = relevant else {
        return Ok(());
    };
    let instead = match chosen {
        Some(c) => format!("; strata will not fall back to the older backup {c}"),
        None => String::new(),
    };
    let store_failed = u.error.kind == Kind::Storage;
    let mut err = Error::new(
        u.error.kind,
        format!(
            "cannot choose the {what} backup of {source}: manifest {} cannot be read, and it may be the one to use{instead}: {}",
            u.key, u.error.message
        ),
    )
    .hint(format!(
        "{}to restore anyway, name the backup with --backup ID (`strata list {source}` shows the readable ones){}",
        if store_failed {
            "the store failed: try again once it answers; "
        } else {
            ""
        },
        if store_failed {
            ""
        } else {
            "; `strata verify` reports the damaged manifest"
        }
    ));
    err.retryable = u.error.retryable;
    Err(err)
}

/// A backup known to the catalog (its manifest exists).
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest_key: String,
    pub file: Arc<ManifestFile>,
}

impl Entry {
    pub fn summary(&self) -> &Summary {
        &self.file.summary
    }
}

/// Objects of a backup that never got its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    pub source: String,
    pub backup_id: String,
    pub objects: Vec<String>,
    pub bytes: u64,
    pub newest: Option<DateTime<Utc>>,
}

impl Repository {
    /// Creates a repository at an empty location.
    pub async fn init(storage: Arc<dyn Storage>) -> Result<Repository> {
        let loc = storage.location();
        if storage.head(MARKER_KEY).await?.is_some() {
            return Err(
                Error::conflict(format!("{loc} is already a strata repository"))
                    .hint("nothing was changed; use it as it is"),
            );
        }
        if let Some(o) = storage.list("").await?.first() {
            return Err(Error::conflict(format!(
                "{loc} is not empty (it holds {}) and is not a strata repository",
                o.key
            ))
            .hint("choose an empty directory or prefix for the repository"));
        }
        let marker = Marker {
            format: "strata".into(),
            version: FORMAT_VERSION,
            created: Utc::now(),
            repository_id: hex::encode(rand::random::<[u8; 16]>()),
        };
        let bytes = serde_json::to_vec_pretty(&marker).expect("marker serialises");
        match storage
            .put_bytes(MARKER_KEY, bytes.into(), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                return Err(Error::conflict(format!(
                    "{loc} is already a strata repository"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Repository {
            storage,
            id: marker.repository_id,
        })
    }

    /// Opens an existing repository, refusing anything else.
    pub async fn open(storage: Arc<dyn Storage>) -> Result<Repository> {
        let loc = storage.location();
        let bytes = match storage.get_bytes(MARKER_KEY).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(Error::new(
                    Kind::Repository,
                    format!("{loc} is not a strata repository (no {MARKER_KEY})"),
                )
                .hint(
                    "check [repository] url in the config, or create one there with `strata init`",
                ));
            }
            Err(e) => return Err(Error::from(e).context(format!("opening repository {loc}"))),
        };
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                Kind::Repository,
                format!("{loc}: {MARKER_KEY} is not a strata format marker: {e}"),
            )
        })?;
        if marker.format != "strata" {
            return Err(Error::new(
                Kind::Repository,
                format!(
                    "{loc} is not a strata repository (format {:?})",
                    marker.format
                ),
            ));
        }
        if marker.version != FORMAT_VERSION {
            return Err(Error::new(
                Kind::Repository,
                format!(
                    "{loc} has repository format version {}, this strata {} knows only version {FORMAT_VERSION}",
                    marker.version,
                    crate::VERSION
                ),
            )
            .hint("use a strata release that supports this format"));
        }
        Ok(Repository {
            storage,
            id: marker.repository_id,
        })
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The same repository, writing every new object (locks excepted)
    /// under S3 Object Lock retention. Checks that the store can lock and
    /// that the bucket has Object Lock enabled, so a misconfiguration
    /// fails before a backup starts rather than on its first upload.
    pub async fn with_object_lock(
        &self,
        lock: crate::storage::ObjectLock,
        tier: &str,
    ) -> Result<Repository> {
        let loc = self.storage.location();
        let Some(storage) = self.storage.with_object_lock(lock) else {
            return Err(Error::usage(format!(
                "tier {tier} sets object_lock = \"{}\", but object lock needs an S3 repository and {loc} is not one",
                lock.mode.as_str()
            ))
            .hint(format!("remove object_lock from [tiers.{tier}], or use an s3:// repository")));
        };
        if !self.storage.object_lock_enabled().await? {
            return Err(Error::usage(format!(
                "tier {tier} sets object_lock = \"{}\", but the bucket of {loc} does not have S3 Object Lock enabled",
                lock.mode.as_str()
            ))
            .hint("Object Lock can only be enabled on a bucket with versioning: create the bucket with Object Lock enabled (aws s3api create-bucket --object-lock-enabled-for-bucket) or enable it (aws s3api put-object-lock-configuration), or remove object_lock from the tier"));
        }
        Ok(Repository {
            storage,
            id: self.id.clone(),
        })
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// The recipients recorded for this repository; `None` for a
    /// repository created before strata recorded them.
    pub async fn recorded_recipients(&self) -> Result<Option<Vec<String>>> {
        let bytes = match self.storage.get_bytes(RECIPIENTS_KEY).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::from(e).context(format!("reading {RECIPIENTS_KEY}"))),
        };
        let r: RecordedRecipients = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                Kind::Repository,
                format!("{}: {RECIPIENTS_KEY} is damaged: {e}", self.location()),
            )
            .hint("`strata key recipients --set` records the configured recipients again")
        })?;
        Ok(Some(r.recipients))
    }

    /// Records `recipients` as the repository's; `replace` overwrites a
    /// record (a deliberate change), else an existing one is kept.
    pub async fn record_recipients(&self, recipients: &[String], replace: bool) -> Result<()> {
        let r = RecordedRecipients {
            format: 1,
            recorded: Utc::now(),
            recipients: recipient_set(recipients),
        };
        let bytes = serde_json::to_vec_pretty(&r).expect("recipients serialise");
        let mode = if replace {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        match self
            .storage
            .put_bytes(RECIPIENTS_KEY, bytes.into(), mode)
            .await
        {
            Ok(_) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("recording {RECIPIENTS_KEY}"))),
        }
    }

    /// Refuses to write with recipients other than the repository's: a
    /// backup encrypted to another key shows only when a restore cannot
    /// decrypt it. A repository without a record gets the configured ones
    /// recorded now.
    pub async fn check_recipients(&self, configured: &[String]) -> Result<()> {
        let recorded = match self.recorded_recipients().await? {
            Some(r) => r,
            None => {
                // first write of an older repository: record ours, then
                // compare with what is recorded now (a concurrent first
                // writer with other recipients may have won)
                self.record_recipients(configured, false).await?;
                self.recorded_recipients().await?.unwrap_or_default()
            }
        };
        let configured = recipient_set(configured);
        if configured == recipient_set(&recorded) {
            return Ok(());
        }
        let added: Vec<&str> = configured
            .iter()
            .filter(|r| !recorded.contains(r))
            .map(String::as_str)
            .collect();
        let dropped: Vec<&str> = recorded
            .iter()
            .filter(|r| !configured.contains(r))
            .map(String::as_str)
            .collect();
        let mut what = Vec::new();
        if !added.is_empty() {
            what.push(format!("adds {}", added.join(", ")));
        }
        if !dropped.is_empty() {
            what.push(format!("drops {}", dropped.join(", ")));
        }
        Err(Error::conflict(format!(
            "the configured [encryption] recipients differ from those recorded for repository {}: the configuration {}; nothing was written (what is written now could not be restored with the identities the repository's other backups need)",
            self.location(),
            what.join(" and ")
        ))
        .hint("if the change is deliberate (a new key, a retired one), run `strata key recipients --set` to record the configured recipients for this repository; otherwise put the recorded recipients back in the config (`strata key recipients` shows both)"))
    }

    pub fn data_prefix(source: &str, id: &BackupId) -> String {
        format!("{BACKUPS}{source}/{id}/")
    }

    pub fn data_key(source: &str, id: &BackupId, name: &str) -> String {
        format!("{}{name}", Self::data_prefix(source, id))
    }

    pub fn manifest_key(source: &str, id: &BackupId) -> String {
        format!("{MANIFESTS}{source}/{id}.json")
    }

    /// Stores a manifest: the commit point of a backup.
    pub async fn commit(&self, manifest: &Manifest, recipients: &[Recipient]) -> Result<String> {
        let key = Self::manifest_key(&manifest.summary.source, &manifest.summary.id);
        let bytes = manifest.to_file_bytes(recipients)?;
        self.storage
            .put_bytes(&key, bytes.into(), PutMode::Create)
            .await?;
        Ok(key)
    }

    /// Every backup (of `source`, if given), newest first. Manifests that
    /// cannot be read are returned as problems, not hidden.
    pub async fn backups(&self, source: Option<&str>) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
        let prefix = match source {
            Some(s) => format!("{MANIFESTS}{s}/"),
            None => MANIFESTS.to_string(),
        };
        use futures::StreamExt;
        let keys: Vec<String> = self
            .storage
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|m| m.key.ends_with(".json"))
            .map(|m| m.key)
            .collect();
        // Manifests are small: read several at once so a long history on a
        // high-latency store lists in a few round trips, not one per backup.
        let read: Vec<(String, Result<ManifestFile>)> = futures::stream::iter(keys)
            .map(|key| async move {
                let r = self.read_manifest(&key).await;
                (key, r)
            })
            .buffered(16)
            .collect()
            .await;
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (key, r) in read {
            match r {
                Ok(file) => entries.push(Entry {
                    manifest_key: key,
                    file: Arc::new(file),
                }),
                Err(error) => problems.push(Unreadable { key, error }),
            }
        }
        entries.sort_by(|a, b| {
            (b.summary().started, &b.summary().id).cmp(&(a.summary().started, &a.summary().id))
        });
        Ok((entries, problems))
    }

    async fn read_manifest(&self, key: &str) -> Result<ManifestFile> {
        let bytes = self.storage.get_bytes(key).await?;
        ManifestFile::parse(key, &bytes)
    }

    /// Finds one backup of `source`: `latest`, a backup id, or `label:L`
    /// (its backup of the set labelled L, `strata backup --label`). `latest` is
    /// refused while a manifest that may be newer cannot be read (see
    /// [`refuse_unreadable`]); a named backup is found whatever else is
    /// unreadable.
    pub async fn find(&self, source: &str, which: &str) -> Result<Entry> {
        let (entries, unreadable) = self.backups(Some(source)).await?;
        if which == "latest" {
            refuse_unreadable(
                source,
                "latest",
                &unreadable,
                entries.first().map(|e| &e.summary().id),
                None,
            )?;
            return entries.into_iter().next().ok_or_else(|| {
                Error::new(
                    Kind::Integrity,
                    format!("source {source} has no backup in {}", self.location()),
                )
                .hint(format!(
                    "take one with `strata backup {source}`; `strata list` shows what exists"
                ))
            });
        }
        if let Some(label) = which.strip_prefix("label:") {
            // a label names one backup per source (`strata backup` refuses
            // a second); the newest, should two ever carry it
            return entries
                .into_iter()
                .find(|e| e.summary().label.as_deref() == Some(label))
                .ok_or_else(|| {
                    Error::new(
                        Kind::Integrity,
                        format!("source {source} has no backup labelled {label}"),
                    )
                    .hint(format!(
                        "`strata list --label {label}` shows the set; `strata list {source}` this source's backups"
                    ))
                });
        }
        let id: BackupId = which.parse().map_err(Error::usage)?;
        entries
            .into_iter()
            .find(|e| e.summary().id == id)
            .ok_or_else(|| {
                Error::new(
                    Kind::Integrity,
                    format!("source {source} has no backup {id}"),
                )
                .hint(format!("`strata list {source}` shows its backups"))
            })
    }

    /// Data objects with no manifest (crashed or killed backups) and
    /// uploads that never completed, anywhere in the repository.
    pub async fn leftovers(&self) -> Result<(Vec<Leftover>, Vec<IncompleteUpload>)> {
        let committed: BTreeSet<(String, String)> = self
            .storage
            .list(MANIFESTS)
            .await?
            .into_iter()
            .filter_map(|m| {
                let rest = m.key.strip_prefix(MANIFESTS)?.strip_suffix(".json")?;
                let (s, id) = rest.split_once('/')?;
                Some((s.to_string(), id.to_string()))
            })
            .collect();
        let mut groups: BTreeMap<(String, String), Vec<ObjectMeta>> = BTreeMap::new();
        for m in self.storage.list(BACKUPS).await? {
            let Some(rest) = m.key.strip_prefix(BACKUPS) else {
                continue;
            };
            let mut parts = rest.splitn(3, '/');
            let (Some(s), Some(id)) = (parts.next(), parts.next()) else {
                continue;
            };
            let k = (s.to_string(), id.to_string());
            if !committed.contains(&k) {
                groups.entry(k).or_default().push(m);
            }
        }
        let leftovers = groups
            .into_iter()
            .map(|((source, backup_id), objs)| Leftover {
                source,
                backup_id,
                bytes: objs.iter().map(|o| o.size).sum(),
                newest: objs.iter().filter_map(|o| o.modified).max(),
                objects: objs.into_iter().map(|o| o.key).collect(),
            })
            .collect();
        // the whole repository: killed writes leave temporary uploads
        // beside manifests, locks and WAL too, not only beside data
        let incomplete = self.storage.list_incomplete("").await?;
        Ok((leftovers, incomplete))
    }

    /// Deletes a backup: manifest first (it stops existing), then its data,
    /// so an interrupted delete leaves only removable leftovers. Data the
    /// manifest does not list (a base backup's plain basis) goes too.
    pub async fn delete_backup(&self, entry: &Entry) -> Result<()> {
        self.storage.delete(&entry.manifest_key).await?;
        for o in &entry.summary().objects {
            self.storage.delete(&o.key).await?;
        }
        let s = entry.summary();
        if s.kind == "base" {
            let prefix = Self::data_prefix(&s.source, &s.id);
            for o in self.storage.list(&prefix).await? {
                self.storage.delete(&o.key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable(id: &str) -> Unreadable {
        Unreadable {
            key: format!("manifests/app/{id}.json"),
            error: Error::integrity(format!("manifest manifests/app/{id}.json is unreadable")),
        }
    }

    /// Issue 13 item 2: an automatic choice is refused while a manifest
    /// that could have been chosen is unreadable, never silently made
    /// with the previous backup.
    #[test]
    fn unreadable_manifests_refuse_only_choices_they_could_change() {
        let older: BackupId = "20261206T100000Z-aaaaaa".parse().unwrap();
        let chosen: BackupId = "20261206T110000Z-bbbbbb".parse().unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let newer = [unreadable("20261206T120000Z-cccccc")];
        let e = refuse_unreadable("app", "latest", &newer, Some(&chosen), None).unwrap_err();
        assert_eq!(e.kind, Kind::Integrity);
        assert!(
            e.message
                .contains("manifests/app/20261206T120000Z-cccccc.json"),
            "{e}"
        );
        assert!(e.message.contains(chosen.as_str()), "{e}");
        // nothing readable at all: still refused, naming the manifest
        assert!(refuse_unreadable("app", "latest", &newer, None, None).is_err());
        // an older unreadable manifest could not have been "latest"
        let old = [unreadable(older.as_str())];
        refuse_unreadable("app", "latest", &old, Some(&chosen), None).unwrap();
        // one started after --at could not have been chosen for it
        refuse_unreadable(
            "app",
            "newest",
            &newer,
            Some(&chosen),
            Some(t("2026-12-06T11:30:00Z")),
        )
        .unwrap();
        assert!(
            refuse_unreadable(
                "app",
                "newest",
                &newer,
                Some(&chosen),
                Some(t("2026-12-06T12:30:00Z"))
            )
            .is_err()
        );
        // the same second as the chosen one: it may be the newer
        let same = [unreadable("20261206T110000Z-000000")];
        assert!(refuse_unreadable("app", "latest", &same, Some(&chosen), None).is_err());
        // a key that names no backup id may be anything
        let odd = [Unreadable {
            key: "manifests/app/odd.json".into(),
            error: Error::integrity("x"),
        }];
        assert!(refuse_unreadable("app", "latest", &odd, Some(&chosen), None).is_err());
        // a store failure keeps the store's kind (exit 6) and is retryable
        let outage = [Unreadable {
            key: "manifests/app/20261206T120000Z-cccccc.json".into(),
            error: Error::new(Kind::Storage, "storage: get: timed out").retryable(),
        }];
        let e = refuse_unreadable("app", "latest", &outage, Some(&chosen), None).unwrap_err();
        assert_eq!((e.kind, e.retryable), (Kind::Storage, true));
    }
}

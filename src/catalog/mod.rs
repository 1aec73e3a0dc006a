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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use id::BackupId;
pub use manifest::{Manifest, ManifestFile, Summary};

use crate::error::{Error, Kind, Result};
use crate::keys::Recipient;
use crate::storage::{IncompleteUpload, ObjectMeta, PutMode, Storage, StorageError};

pub const MARKER_KEY: &str = "strata-repository.json";
/// The repository format this strata writes and reads.
pub const FORMAT_VERSION: u32 = 1;
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
    pub async fn backups(&self, source: Option<&str>) -> Result<(Vec<Entry>, Vec<Error>)> {
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
                Err(e) => problems.push(e),
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

    /// Finds one backup of `source`: `latest` or a backup id.
    pub async fn find(&self, source: &str, which: &str) -> Result<Entry> {
        let (entries, _) = self.backups(Some(source)).await?;
        if which == "latest" {
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
    /// uploads that never completed.
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
        let incomplete = self.storage.list_incomplete(BACKUPS).await?;
        Ok((leftovers, incomplete))
    }

    /// Deletes a backup: manifest first (it stops existing), then its data,
    /// so an interrupted delete leaves only removable leftovers.
    pub async fn delete_backup(&self, entry: &Entry) -> Result<()> {
        self.storage.delete(&entry.manifest_key).await?;
        for o in &entry.summary().objects {
            self.storage.delete(&o.key).await?;
        }
        Ok(())
    }
}

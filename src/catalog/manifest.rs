//! The manifest of one backup, written last: a backup exists only once its
//! manifest is stored.
//!
//! A manifest file holds two parts:
//! - `summary`, in plain JSON: what `list`, `verify` (without reading data)
//!   and retention need — id, source, kind, tier, times, object keys and
//!   stored sizes. Backup hosts hold only public keys, yet must list and
//!   prune, so these fields cannot be encrypted. They reveal no content.
//! - `sealed`: the whole manifest, age-encrypted to the repository's
//!   recipients: database names, table names, row estimates, checksums,
//!   server details. Restores read this part and check that the summary
//!   agrees with it, so tampering with the plain part is detected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::id::BackupId;
use crate::error::{Error, Result};
use crate::keys::{Identity, Recipient};
use crate::pipeline::{ObjectRecord, seal, unseal};

/// Version of the manifest layout.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub stored_size: u64,
    /// SHA-256 of the stored bytes (see [`ObjectRecord::stored_sha256`]):
    /// plain, so `strata copy` refuses a damaged object without any
    /// identity. Absent in manifests written before (issue 19 item 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<String>,
}

/// The plain part of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub format: u32,
    pub id: BackupId,
    pub source: String,
    pub source_kind: SourceKind,
    /// What kind of backup: `dump` (logical), `snapshot` (Redis RDB).
    pub kind: String,
    pub tier: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub strata_version: String,
    pub plain_size: u64,
    pub stored_size: u64,
    pub objects: Vec<StoredObject>,
    /// `strata backup --label L`: the label of the set this backup belongs
    /// to (the same on each source's backup of the set), plain so that
    /// `list --label` and `restore --backup label:L` need no identity.
    /// Absent in manifests written before labels (issue 19 item 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `--note`: why the set was taken, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `--keep-for`/`--keep-until`: prune keeps the backup until then,
    /// whatever its tier says, and deletes it after (docs/retention.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_until: Option<DateTime<Utc>>,
}

/// What `strata backup --label` records in each backup of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub label: String,
    pub note: Option<String>,
    pub keep_until: Option<DateTime<Utc>>,
}

impl Summary {
    /// Records `pin` in this summary.
    pub fn pin(&mut self, pin: &Pin) {
        self.label = Some(pin.label.clone());
        self.note = pin.note.clone();
        self.keep_until = pin.keep_until;
    }

    /// The summary of a backup of `source` (`source_kind`) as `id`, taken
    /// from `started` to `finished`; sizes and objects are filled in by
    /// [`Manifest::new`].
    pub fn of(
        id: &BackupId,
        source: &str,
        source_kind: SourceKind,
        kind: &str,
        tier: Option<String>,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    ) -> Summary {
        Summary {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            source: source.to_string(),
            source_kind,
            kind: kind.to_string(),
            tier,
            started,
            finished,
            strata_version: crate::VERSION.into(),
            plain_size: 0,
            stored_size: 0,
            objects: vec![],
            label: None,
            note: None,
            keep_until: None,
        }
    }
}

/// PostgreSQL facts recorded with a logical backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PostgresInfo {
    pub server_version: String,
    pub server_version_num: i32,
    pub system_identifier: String,
    pub database: String,
    /// Whether roles were dumped with their passwords.
    pub globals_with_passwords: bool,
    pub tables: Vec<TableInfo>,
    /// Major version of the `pg_dump`/`pg_dumpall` that wrote the dump
    /// (issue 16 item 3): a restore needs `pg_restore` and `psql` at least
    /// that new, whatever the target server's version (pg_restore 15
    /// cannot read pg_dump 18's archive format; PostgreSQL 17.6+/18's
    /// plain globals script starts with `\restrict`, which older psql
    /// rejects). `None` in manifests written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_tool_major: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// `pg_class.reltuples` at backup time; `None` if never analysed.
    pub row_estimate: Option<i64>,
    pub total_bytes: i64,
    /// Exact `count(*)` in the snapshot the dump was taken from (logical
    /// backups with `count_rows`, the default); `None` when not counted
    /// (base backups, partitioned parents, unpopulated materialized views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
}

/// The whole manifest (the sealed part).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub summary: Summary,
    pub objects: Vec<ObjectRecord>,
    pub postgres: Option<PostgresInfo>,
    /// Physical base backups: where in the WAL they start and stop.
    #[serde(default)]
    pub base: Option<BaseInfo>,
    /// Redis facts, for snapshots of a redis source.
    #[serde(default)]
    pub redis: Option<RedisInfo>,
    /// Chroma facts, for exports of a chroma source.
    #[serde(default)]
    pub chroma: Option<ChromaInfo>,
    /// Results of the source's `verify_queries` at backup time (for a
    /// base backup: at its start), compared after a restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_queries: Vec<QueryResult>,
}

/// Redis facts recorded with a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedisInfo {
    pub redis_version: String,
    /// The RDB format version of the snapshot (from its header).
    pub rdb_version: u32,
    /// Keys per database from `INFO keyspace`, taken just before the
    /// snapshot: writes in between make the snapshot differ slightly.
    pub keyspace: Vec<RedisDb>,
    /// `used_memory` from `INFO memory`, bytes.
    pub used_memory: u64,
    /// How the server sent the snapshot: `disk` (a file it wrote first,
    /// length-prefixed) or `diskless` (streamed, ended by a mark).
    pub transfer: String,
    /// When the server cut the snapshot (forked for the sync), as near as
    /// strata can tell: when it sent the streamed payload's header
    /// (diskless, after `repl-diskless-sync-delay`), else when strata asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<DateTime<Utc>>,
    /// Set for a logical snapshot (`SCAN` + `DUMP`, not an RDB; see
    /// `sources::redis::logical`); absent for a replication snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical: Option<LogicalInfo>,
    /// Set for a backup of a Redis Cluster: one object per shard and the
    /// slot map (`sources::redis::cluster`); absent for a single server
    /// and in manifests written before clusters were backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}

/// What a backup of a Redis Cluster recorded: the slot map at backup time
/// and each master's snapshot. The snapshots are cut concurrently, not at
/// one instant: `skew_ms` is how far apart the first and the last cut were.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    /// How the slot map was read: `CLUSTER SHARDS` or `CLUSTER NODES`.
    pub read_with: String,
    /// Milliseconds between the first and the last shard's cut.
    pub skew_ms: u64,
    /// The masters, ordered by their first slot.
    pub shards: Vec<ClusterShard>,
}

/// One master of a cluster backup and its snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterShard {
    /// The node's cluster id (`CLUSTER MYID`).
    pub node_id: String,
    /// `host:port` as the cluster announced it.
    pub address: String,
    /// Inclusive slot ranges the master served.
    pub slots: Vec<[u16; 2]>,
    /// Keys (and keys with a TTL) at backup time: `INFO keyspace` just
    /// before a replication snapshot, those written for a logical one.
    pub keys: u64,
    pub expires: u64,
    /// The shard's object in the backup (`shard-00.rdb`, `shard-00.rlog`).
    pub object: String,
    pub redis_version: String,
    /// 0 for a logical snapshot.
    pub rdb_version: u32,
    /// `disk`, `diskless` or `logical`.
    pub transfer: String,
    /// When the snapshot was cut (a logical one: when its scan began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical: Option<LogicalInfo>,
}

/// What a logical Redis snapshot recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogicalInfo {
    /// Version of the logical format written.
    pub format_version: u32,
    /// Key records written (keys gone between `SCAN` and `DUMP` are not).
    pub keys: u64,
    /// Bytes of `DUMP` payloads written.
    pub payload_bytes: u64,
    /// When mode `auto` fell back to a logical snapshot: the server's
    /// refusal of the replication protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// One database's key counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedisDb {
    pub db: u32,
    pub keys: u64,
    /// Keys with a time to live.
    pub expires: u64,
}

/// What a physical base backup (`pg_basebackup`) needs to be restored:
/// the WAL range that makes it consistent, and the label PostgreSQL wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseInfo {
    /// `START WAL LOCATION` of the backup label (`X/Y`).
    pub start_lsn: String,
    /// WAL position when the backup ended: replay must reach it.
    pub stop_lsn: String,
    /// Timeline the backup was taken on (`START TIMELINE`).
    pub timeline: u32,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub system_identifier: String,
    pub server_version: String,
    pub server_version_num: i32,
    /// WAL segment size of the cluster, in bytes.
    pub wal_segment_size: u64,
    /// The `backup_label` file as found in the backup.
    pub backup_label: String,
    /// Set for an incremental base backup: what it applies on. Absent for
    /// a full one (and in manifests older than incremental backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// SHA-256 (hex) of the backup's basis object (`basis.json`: its
    /// `backup_manifest` without file checksums, stored in plain so that
    /// the next incremental can be taken on a host with only public keys;
    /// see `sources::postgres::base::basis`). Absent in manifests written
    /// before incremental backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis_sha256: Option<String>,
}

/// How an incremental base backup found the blocks it stores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IncrementalMethod {
    /// PostgreSQL 17+ with `summarize_wal = on`: the server's own
    /// incremental backup (`pg_basebackup --incremental`); relation files
    /// arrive as PostgreSQL's `INCREMENTAL.<name>` members.
    Server,
    /// strata's own, for older servers or summarization off: a full read
    /// of the cluster of which only the blocks whose page LSN is at or
    /// after the parent's start (or that the parent lacks) are stored, as
    /// `STRATA-INCR.<name>.<n>` members (docs/design.md).
    Blocks,
}

impl IncrementalMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            IncrementalMethod::Server => "server",
            IncrementalMethod::Blocks => "blocks",
        }
    }
}

/// An incremental base backup's place in its chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Incremental {
    pub method: IncrementalMethod,
    /// The backup this one applies on (full or incremental).
    pub parent: String,
    /// The parent's `START WAL LOCATION`: blocks unchanged since then
    /// are taken from the parent.
    pub parent_start_lsn: String,
    /// Every backup it needs, oldest (the full) first, ending with the
    /// parent. A backup is only as complete as this chain.
    pub chain: Vec<String>,
}
#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub summary: Summary,
    pub sealed: String,
    /// Base backups: the WAL range they need, in plain text, so that
    /// `strata prune` on a host with only the public key can tell which
    /// archived WAL a kept base backup needs. WAL positions reveal no
    /// content. [`ManifestFile::open`] checks it against the sealed part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<PlainWalRange>,
}

/// The plain copy of a base backup's WAL range (see [`BaseInfo`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlainWalRange {
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub wal_segment_size: u64,
    /// An incremental base backup's chain (the backups it needs, oldest
    /// first), in plain text so that prune on a host with only the public
    /// key never deletes a backup a kept incremental needs. Ids reveal no
    /// content. Empty for a full backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The cluster's system identifier, so that the next incremental finds
    /// its parent among backups of the same cluster without the identity
    /// (a number PostgreSQL draws at initdb; it reveals no content).
    /// Absent in manifests written before incremental backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// How an incremental found its blocks (`list` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<IncrementalMethod>,
}

impl PlainWalRange {
    pub fn of(base: &BaseInfo) -> PlainWalRange {
        PlainWalRange {
            timeline: base.timeline,
            start_lsn: base.start_lsn.clone(),
            stop_lsn: base.stop_lsn.clone(),
            wal_segment_size: base.wal_segment_size,
            chain: base
                .incremental
                .as_ref()
                .map(|i| i.chain.clone())
                .unwrap_or_default(),
            system_identifier: Some(base.system_identifier.clone()),
            method: base.incremental.as_ref().map(|i| i.method),
        }
    }

    /// Whether this plain copy agrees with the sealed `base`. A manifest
    /// written before the plain system identifier lacks it: that is no
    /// alteration.
    pub fn matches(&self, base: Option<&BaseInfo>) -> bool {
        let Some(mut sealed) = base.map(PlainWalRange::of) else {
            return false;
        };
        if self.system_identifier.is_none() {
            sealed.system_identifier = None;
        }
        *self == sealed
    }
}

impl Manifest {
    pub fn new(
        summary_base: Summary,
        objects: Vec<ObjectRecord>,
        postgres: Option<PostgresInfo>,
    ) -> Manifest {
        let mut summary = summary_base;
        summary.plain_size = objects.iter().map(|o| o.plain_size).sum();
        summary.stored_size = objects.iter().map(|o| o.stored_size).sum();
        summary.objects = objects
            .iter()
            .map(|o| StoredObject {
                key: o.key.clone(),
                stored_size: o.stored_size,
                stored_sha256: o.stored_sha256.clone(),
            })
            .collect();
        Manifest {
            summary,
            objects,
            postgres,
            base: None,
            redis: None,
            chroma: None,
            verify_queries: Vec::new(),
        }
    }

    pub fn object(&self, name: &str) -> Option<&ObjectRecord> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// Serialises to the stored form: plain summary plus sealed whole.
    pub fn to_file_bytes(&self, recipients: &[Recipient]) -> Result<Vec<u8>> {
        let whole = serde_json::to_vec(self).expect("manifest serialises");
        let file = ManifestFile {
            summary: self.summary.clone(),
            sealed: seal(recipients, &whole)?,
            wal: self.base.as_ref().map(PlainWalRange::of),
        };
        Ok(serde_json::to_vec_pretty(&file).expect("manifest serialises"))
    }
}

impl ManifestFile {
    pub fn parse(key: &str, bytes: &[u8]) -> Result<ManifestFile> {
        let f: ManifestFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity(format!("manifest {key} is unreadable: {e}")))?;
        if f.summary.format > MANIFEST_FORMAT {
            return Err(Error::new(
                crate::error::Kind::Repository,
                format!(
                    "manifest {key} has format {} (this strata reads up to {MANIFEST_FORMAT})",
                    f.summary.format
                ),
            )
            .hint("upgrade strata"));
        }
        Ok(f)
    }

    /// Decrypts the sealed part and checks the plain summary against it.
    pub fn open(&self, key: &str, identities: &[Identity]) -> Result<Manifest> {
        let plain = unseal(&format!("manifest {key}"), identities, &self.sealed)?;
        let m: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| Error::integrity(format!("manifest {key} is unreadable: {e}")))?;
        if m.summary != self.summary {
            return Err(Error::integrity(format!(
                "manifest {key}: the plain summary does not match the sealed manifest (it was altered)"
            )));
        }
        if let Some(wal) = &self.wal
            && !wal.matches(m.base.as_ref())
        {
            return Err(Error::integrity(format!(
                "manifest {key}: the plain WAL range does not match the sealed manifest (it was altered)"
            )));
        }
        Ok(m)
    }
}

/// What kind of server a source is (recorded in every manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    Redis,
    Chroma,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Redis => "redis",
            SourceKind::Chroma => "chroma",
        }
    }
}

/// Chroma facts recorded with an export (sealed in the manifest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChromaInfo {
    /// What `/api/v2/version` answers: the API version (`1.0.0` for
    /// chromadb 1.5.9), not the package's.
    pub server_version: String,
    pub tenant: String,
    pub database: String,
    pub collections: Vec<CollectionInfo>,
}

// Distances are floats, compared bit for bit here (the manifest's summary
// check needs `Eq`); a NaN never comes from Chroma's distance functions.
impl Eq for ChromaInfo {}

/// One exported collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    /// Its id on the source server.
    pub id: String,
    /// The object holding it (its name in the manifest's objects).
    pub object: String,
    /// Distance function: `l2`, `cosine` or `ip`.
    pub space: String,
    pub dimension: Option<u32>,
    /// Records written to the export.
    pub records: u64,
    /// `count` just before and just after the export (writes in between
    /// are not isolated).
    pub count_before: u64,
    pub count_after: u64,
    /// Nearest-neighbour probes run right after the export.
    pub probes: Vec<Probe>,
}

/// A nearest-neighbour query and what it returned at backup time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// The query vector (base64 of little-endian f32, as in the export):
    /// the embedding of a stored record.
    pub vector: String,
    /// The record whose embedding it is.
    pub from_id: String,
    /// Result ids, nearest first.
    pub ids: Vec<String>,
    pub distances: Vec<f32>,
}

/// The result of one verify query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueryResult {
    pub sql: String,
    pub columns: Vec<String>,
    /// The first [`KEPT_ROWS`](crate::sources::postgres::verify_queries::KEPT_ROWS) rows, as text (`None`: SQL NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// How many rows the query returned.
    pub row_count: u64,
    /// SHA-256 (hex) of the columns line and every row line
    /// ([`canonical_line`](crate::sources::postgres::verify_queries::canonical_line)).
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 17 item 2: the Redis facts of manifests written before
    /// clusters still read (no slot map), and a cluster's round-trip.
    #[test]
    fn redis_facts_without_and_with_a_slot_map() {
        let old = r#"{"redis_version":"7.0.15","rdb_version":10,"keyspace":[{"db":0,"keys":3,"expires":1}],"used_memory":1000,"transfer":"diskless"}"#;
        let r: RedisInfo = serde_json::from_str(old).unwrap();
        assert!(r.cluster.is_none() && r.logical.is_none());
        let mut c = r.clone();
        c.cluster = Some(ClusterInfo {
            read_with: "CLUSTER SHARDS".into(),
            skew_ms: 12,
            shards: vec![ClusterShard {
                node_id: "abc".into(),
                address: "10.0.0.1:7000".into(),
                slots: vec![[0, 16383]],
                keys: 3,
                expires: 1,
                object: "shard-00.rdb".into(),
                redis_version: "7.0.15".into(),
                rdb_version: 10,
                transfer: "diskless".into(),
                captured: None,
                logical: None,
            }],
        });
        let text = serde_json::to_string(&c).unwrap();
        assert!(!serde_json::to_string(&r).unwrap().contains("cluster"));
        assert_eq!(serde_json::from_str::<RedisInfo>(&text).unwrap(), c);
    }

    fn summary() -> Summary {
        let started = "2026-11-20T02:00:00Z".parse().unwrap();
        Summary::of(
            &BackupId::new(started),
            "main",
            SourceKind::Postgres,
            "dump",
            None,
            started,
            started,
        )
    }

    #[test]
    fn labels_are_additive_fields_of_the_plain_summary() {
        // issue 19 item 4: manifests written before labels read as
        // unlabelled, and an unlabelled summary is written as before (the
        // sealed copy, compared on restore, stays byte-compatible)
        let plain = serde_json::to_value(summary()).unwrap();
        for key in ["label", "note", "keep_until"] {
            assert!(plain.get(key).is_none(), "{key} written: {plain}");
        }
        let old: Summary = serde_json::from_value(plain).unwrap();
        assert_eq!((old.label, old.note, old.keep_until), (None, None, None));

        let mut s = summary();
        s.pin(&Pin {
            label: "deploy-v3.2.0".into(),
            note: Some("before the orders migration".into()),
            keep_until: Some("2026-11-27T02:00:00Z".parse().unwrap()),
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["label"], "deploy-v3.2.0");
        assert_eq!(v["note"], "before the orders migration");
        assert_eq!(v["keep_until"], "2026-11-27T02:00:00Z");
        assert_eq!(serde_json::from_value::<Summary>(v).unwrap(), s);
    }

    #[test]
    fn the_plain_system_identifier_is_checked_when_present() {
        let base = BaseInfo {
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            timeline: 1,
            start_time: "2026-11-20T02:00:00Z".parse().unwrap(),
            stop_time: "2026-11-20T02:00:01Z".parse().unwrap(),
            system_identifier: "7716288680875327772".into(),
            server_version: "15.18".into(),
            server_version_num: 150018,
            wal_segment_size: 16 << 20,
            backup_label: String::new(),
            incremental: None,
            basis_sha256: None,
        };
        let plain = PlainWalRange::of(&base);
        assert!(plain.matches(Some(&base)));
        // written before incremental backups: no identifier, no alteration
        let old = PlainWalRange {
            system_identifier: None,
            ..plain.clone()
        };
        assert!(old.matches(Some(&base)));
        assert!(!old.matches(None));
        let other = PlainWalRange {
            system_identifier: Some("1".into()),
            ..plain
        };
        assert!(!other.matches(Some(&base)), "an altered identifier");
    }
}

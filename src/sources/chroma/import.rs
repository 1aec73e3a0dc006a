//! `strata restore SOURCE --into URL` for a chroma source: load exported
//! collections into a running Chroma server, then verify them.
//!
//! Each collection is loaded under a temporary name
//! (`strata-restore-XXXXXXXX-NAME`) while its object streams in (fetch,
//! decrypt, decompress and `add` in batches, all at once, memory bounded
//! by one batch and a few chunks), then checked: its record count must
//! equal the manifest's, and every probe query recorded at backup time
//! must return the same ids in the same order. Only then does it take its
//! name, replacing an existing collection of that name if `--replace` was
//! given. A damaged object, a failed add or a failed check deletes the
//! temporary collection and leaves any existing collection untouched.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use url::Url;

use super::client::Client;
use super::format::{self, Line};
use super::{ChromaInfo, CollectionInfo};
use crate::catalog::Entry;
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::pipeline::fetch;
use crate::progress::Reporter;
use crate::storage::Storage;

/// Records per `add` request (at most the server's `max_batch_size`).
pub const BATCH: usize = 1000;
/// Relative tolerance on probe distances (cosine vectors come back from
/// Chroma with about one f32 ulp of noise; see docs/chroma.md).
pub const DISTANCE_TOLERANCE: f32 = 1e-4;

/// Where and what to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The server to load into (`http://host:port`).
    pub into: Url,
    pub tenant: String,
    pub database: String,
    pub token: Option<String>,
    /// Collections to restore; empty: all of the backup's.
    pub collections: Vec<String>,
    /// Delete and recreate collections that exist on the target.
    pub replace: bool,
}

/// What a restore did, per collection and per phase.
#[derive(Debug, Serialize)]
pub struct ChromaRestoreReport {
    pub backup: String,
    pub source: String,
    /// The target server (no credentials).
    pub into: String,
    pub tenant: String,
    pub database: String,
    pub collections: Vec<CollectionReport>,
    /// Records loaded in all.
    pub records: u64,
    /// Download, decryption, decoding and adding, streamed together.
    pub transfer_seconds: f64,
    /// Of `transfer_seconds`, the time spent in Chroma's add calls.
    pub import_seconds: f64,
    /// Counting and probe queries.
    pub verify_seconds: f64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct CollectionReport {
    pub name: String,
    /// Records loaded (and counted on the target).
    pub records: u64,
    /// Records the manifest says the export holds.
    pub expected: u64,
    /// Whether an existing collection of that name was replaced.
    pub replaced: bool,
    pub probes: usize,
    /// Probes whose recorded neighbours came back in the recorded order at
    /// the recorded distances, compared exactly (a query restricted to
    /// them). All of them, or the restore fails.
    pub probes_matched: usize,
    /// Probes whose unrestricted query, through the rebuilt approximate
    /// (HNSW) index, returned exactly the recorded ids in order.
    pub probes_identical: usize,
    /// Smallest share of recorded neighbours an unrestricted query found
    /// (1.0 when all were identical).
    pub min_recall: f64,
    /// Largest difference between a recorded and a returned distance.
    pub max_distance_delta: f32,
}

/// Restores the backup's collections (all, or `opts.collections`) into
/// `opts.into` and verifies them. See the module documentation.
pub async fn restore_and_verify(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<ChromaRestoreReport> {
    let clock = Instant::now();
    let summary = entry.summary();
    let manifest = entry.file.open(&entry.manifest_key, &identities)?;
    let info: ChromaInfo = manifest.chroma.clone().ok_or_else(|| {
        Error::integrity(format!(
            "backup {} of {} is not a Chroma export (its manifest has no Chroma facts)",
            summary.id, summary.source
        ))
    })?;
    let selected: Vec<&CollectionInfo> = if opts.collections.is_empty() {
        info.collections.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in &opts.collections {
            match info.collections.iter().find(|c| &c.name == name) {
                Some(c) if !v.iter().any(|x: &&CollectionInfo| x.name == c.name) => v.push(c),
                Some(_) => {}
                None => {
                    return Err(Error::usage(format!(
                        "backup {} of {} has no collection {name}",
                        summary.id, summary.source
                    ))
                    .hint(format!(
                        "its collections: {}",
                        if info.collections.is_empty() {
                            "none".to_string()
                        } else {
                            info.collections
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )));
                }
            }
        }
        v
    };
    let client = Client::new(
        &opts.into,
        &opts.tenant,
        &opts.database,
        opts.token.as_deref(),
    )?;
    let version = client.version().await?;
    reporter.note(format!(
        "restore {} of {} ({} collection(s)) into {} (Chroma API {version}, {}/{})",
        summary.id,
        summary.source,
        selected.len(),
        client.display(),
        opts.tenant,
        opts.database
    ));
    let mut warnings = Vec::new();
    if !client.database_exists().await? {
        client.create_database().await?;
        reporter.note(format!(
            "created database {}/{} on {}",
            opts.tenant,
            opts.database,
            client.display()
        ));
    }
    // Refuse before touching anything.
    let mut existing = Vec::new();
    for c in &selected {
        if client.collection(&c.name).await?.is_some() {
            existing.push(c.name.clone());
        }
    }
    if !existing.is_empty() && !opts.replace {
        return Err(Error::conflict(format!(
            "database {}/{} on {} already has collection{} {}",
            opts.tenant,
            opts.database,
            client.display(),
            if existing.len() == 1 { "" } else { "s" },
            existing.join(", ")
        ))
        .hint(
            "pass --replace to delete and recreate them (after the restored copy is verified), restore other collections with --collection NAME, or restore into another server or database",
        ));
    }
    let batch = client
        .max_batch_size()
        .await
        .ok()
        .flatten()
        .map_or(BATCH, |m| m.clamp(1, BATCH));

    // Temporary collections made so far: an interruption (Ctrl-C,
    // SIGTERM) while loading deletes them before strata exits.
    let made: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let loading = async {
        let mut pending: Vec<Pending> = Vec::new();
        let mut transfer = Duration::ZERO;
        let mut import = Duration::ZERO;
        let mut verify = Duration::ZERO;
        let mut warnings = Vec::new();
        for c in selected {
            let rec = manifest
                .object(&c.object)
                .ok_or_else(|| {
                    Error::integrity(format!(
                        "backup {}: the manifest names no object {} for collection {}",
                        summary.id, c.object, c.name
                    ))
                })?
                .clone();
            let tmp = temp_name(&c.name);
            made.lock().unwrap().push(tmp.clone());
            let step = reporter.step(
                format!("collection {} ({} records)", c.name, c.records),
                Some(rec.plain_size),
            );
            let t0 = Instant::now();
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            let sink = ChanWriter { tx };
            let importer = load(client.clone(), tmp.clone(), c.dimension, batch, rx);
            // The sink (the channel's sender) is dropped as soon as the fetch
            // ends, so the importer sees the end of the stream.
            let fetched = async {
                fetch(
                    storage,
                    &rec,
                    identities.clone(),
                    sink,
                    step.progress.clone(),
                )
                .await
                .map(drop)
            };
            let (loaded, fetched) = tokio::join!(importer, fetched);
            transfer += t0.elapsed();
            let loaded = match (loaded, fetched) {
                (Ok(l), Ok(_)) => l,
                (l, f) => {
                    step.abandon();
                    // A damaged object explains an import that ended early; a
                    // failed add explains a decoder whose sink went away.
                    let e = match (l, f) {
                        (_, Err(fe)) if matches!(fe.kind, Kind::Integrity | Kind::Crypto) => fe,
                        (Err(le), _) => le,
                        (Ok(_), Err(fe)) => fe,
                        (Ok(_), Ok(_)) => unreachable!(),
                    };
                    drop_temp(&client, &tmp).await;
                    drop_pending(&client, &pending).await;
                    return Err(e.context(format!(
                        "restore of collection {} failed; nothing was restored, no existing collection was touched",
                        c.name
                    )));
                }
            };
            import += loaded.add_time;
            let t1 = Instant::now();
            let checked = check(&client, &loaded.id, &tmp, c, loaded.records).await;
            verify += t1.elapsed();
            let checked = match checked {
                Ok(v) => v,
                Err(e) => {
                    step.abandon();
                    drop_temp(&client, &tmp).await;
                    drop_pending(&client, &pending).await;
                    return Err(
                        e.context("nothing was restored, no existing collection was touched")
                    );
                }
            };
            warnings.extend(checked.notes.iter().cloned());
            step.done(&format!(
                "{} records, {}/{} probes match",
                loaded.records,
                checked.matched,
                c.probes.len()
            ));
            pending.push(Pending {
                c,
                tmp,
                id: loaded.id,
                records: loaded.records,
                checked,
            });
        }
        Ok::<_, Error>((pending, transfer, import, verify, warnings))
    };
    let outcome = tokio::select! {
        r = loading => Some(r),
        _ = crate::util::interruption() => None,
    };
    let Some(loaded) = outcome else {
        let made = std::mem::take(&mut *made.lock().unwrap());
        // a create request cut off mid-flight may still land on the server
        tokio::time::sleep(Duration::from_millis(500)).await;
        for tmp in &made {
            drop_temp(&client, tmp).await;
        }
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "restore into {} interrupted while loading; its {} temporary collection(s) were deleted, no existing collection was touched",
                client.display(),
                made.len()
            ),
        ));
    };
    let (pending, transfer, import, verify, mut warnings_loaded) = loaded?;
    warnings.append(&mut warnings_loaded);
    let mut reports = Vec::new();

    // Every collection is loaded and verified: only now are existing ones
    // replaced, so a failure above leaves the target as it was.
    for Pending {
        c,
        tmp,
        id,
        records,
        checked,
    } in pending
    {
        let replaced = existing.contains(&c.name);
        if replaced {
            client.delete_collection(&c.name).await.map_err(|e| {
                e.context(format!(
                    "the verified copy of {} is in collection {tmp}; the existing one could not be deleted",
                    c.name
                ))
            })?;
        }
        client
            .rename_collection(&id, &tmp, &c.name)
            .await
            .map_err(|e| {
                e.context(format!(
                    "the verified copy of {} is in collection {tmp}; rename it by hand",
                    c.name
                ))
            })?;
        reports.push(CollectionReport {
            name: c.name.clone(),
            records,
            expected: c.records,
            replaced,
            probes: c.probes.len(),
            probes_matched: checked.matched,
            probes_identical: checked.identical,
            min_recall: checked.min_recall,
            max_distance_delta: checked.max_delta,
        });
    }
    Ok(ChromaRestoreReport {
        backup: summary.id.to_string(),
        source: summary.source.clone(),
        into: client.display().to_string(),
        tenant: opts.tenant.clone(),
        database: opts.database.clone(),
        records: reports.iter().map(|r| r.records).sum(),
        collections: reports,
        transfer_seconds: transfer.as_secs_f64(),
        import_seconds: import.as_secs_f64(),
        verify_seconds: verify.as_secs_f64(),
        duration_seconds: clock.elapsed().as_secs_f64(),
        warnings,
    })
}

/// `strata-restore-1a2b3c4d-NAME`: valid for Chroma (starts and ends
/// alphanumeric) when NAME is.
fn temp_name(name: &str) -> String {
    format!("{TEMP_PREFIX}{:08x}-{name}", rand::random::<u32>())
}

/// What every temporary collection's name starts with (exports skip them).
pub const TEMP_PREFIX: &str = "strata-restore-";

/// A collection loaded under its temporary name and verified, waiting for
/// the others before it takes its real name.
struct Pending<'a> {
    c: &'a CollectionInfo,
    tmp: String,
    id: String,
    records: u64,
    checked: Checked,
}

/// Drops the verified copies of an aborted restore.
async fn drop_pending(client: &Client, pending: &[Pending<'_>]) {
    for p in pending {
        drop_temp(client, &p.tmp).await;
    }
}

async fn drop_temp(client: &Client, tmp: &str) {
    if let Ok(Some(_)) = client.collection(tmp).await
        && let Err(e) = client.delete_collection(tmp).await
    {
        eprintln!(
            "warning: could not delete the partial collection {tmp} on {}: {}; delete it by hand",
            client.display(),
            e.message
        );
    }
}

/// The decoder's sink: hands plain chunks to the importer (bounded).
struct ChanWriter {
    tx: mpsc::Sender<Bytes>,
}

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::other("the Chroma import stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What [`load`] did.
struct Loaded {
    /// The new collection's id.
    id: String,
    records: u64,
    add_time: Duration,
}

/// One add request being filled.
#[derive(Default, Serialize)]
struct AddBatch {
    ids: Vec<String>,
    embeddings: Vec<String>,
    documents: Vec<Option<String>>,
    metadatas: Vec<Option<Box<RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uris: Option<Vec<Option<String>>>,
}

/// Reads export lines from `rx`: creates the collection `name` from the
/// header, adds records in batches, checks the end line.
async fn load(
    client: Client,
    name: String,
    dimension: Option<u32>,
    batch_size: usize,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Loaded> {
    let bad =
        |why: String| Error::integrity(format!("the export of collection is unreadable: {why}"));
    let mut pending: Vec<u8> = Vec::new();
    let mut coll_id: Option<String> = None;
    let mut records = 0u64;
    let mut reader = format::ExportReader::new(dimension);
    let mut batch = AddBatch::default();
    let mut add_time = Duration::ZERO;
    loop {
        let chunk = rx.recv().await;
        let at_end = chunk.is_none();
        if let Some(c) = chunk {
            pending.extend_from_slice(&c);
        }
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + nl];
            start += nl + 1;
            let r = match reader.line(line).map_err(bad)? {
                Line::Header(h) => {
                    let created = client
                        .create_collection(
                            &name,
                            h.collection.metadata.as_deref(),
                            h.collection.configuration.as_deref(),
                        )
                        .await?;
                    coll_id = Some(created.id);
                    continue;
                }
                Line::End(_) => continue,
                Line::Record(r) => r,
            };
            let id = coll_id.as_ref().expect("the header came first");
            batch.ids.push(r.id.into_owned());
            batch.embeddings.push(r.embedding.to_string());
            batch.documents.push(r.document.map(|d| d.into_owned()));
            batch.metadatas.push(r.metadata.map(|m| m.to_owned()));
            if let Some(u) = r.uri {
                let n = batch.ids.len();
                let uris = batch.uris.get_or_insert_with(|| vec![None; n - 1]);
                uris.push(Some(u.into_owned()));
            } else if let Some(uris) = &mut batch.uris {
                uris.push(None);
            }
            if batch.ids.len() >= batch_size {
                let id = id.clone();
                records += flush(&client, &id, &name, &mut batch, &mut add_time).await?;
            }
        }
        pending.drain(..start);
        if at_end {
            break;
        }
    }
    reader.finish(&pending).map_err(bad)?;
    let id = coll_id.expect("finish checked the header");
    records += flush(&client, &id, &name, &mut batch, &mut add_time).await?;
    Ok(Loaded {
        id,
        records,
        add_time,
    })
}

async fn flush(
    client: &Client,
    id: &str,
    name: &str,
    batch: &mut AddBatch,
    add_time: &mut Duration,
) -> Result<u64> {
    let n = batch.ids.len() as u64;
    if n == 0 {
        return Ok(0);
    }
    let body = serde_json::to_vec(&*batch).expect("serialises");
    *batch = AddBatch::default();
    let t = Instant::now();
    client.add(id, name, body).await?;
    *add_time += t.elapsed();
    Ok(n)
}

/// What the checks of one collection found.
struct Checked {
    /// Probes whose recorded neighbours are there at the recorded
    /// distances, in the recorded order (exact comparison).
    matched: usize,
    /// Probes whose unrestricted query returned the recorded ids in the
    /// recorded order.
    identical: usize,
    /// Smallest share of recorded neighbours an unrestricted query found.
    min_recall: f64,
    max_delta: f32,
    notes: Vec<String>,
}

/// Counts and probes the loaded collection `tmp` against the manifest's
/// record of `c`.
///
/// Each probe runs twice. Restricted to the recorded result ids, Chroma
/// compares exactly: the same ids must come back in the same order at the
/// same distances (within [`DISTANCE_TOLERANCE`]), which proves those
/// records and their vectors are intact; otherwise the check fails.
/// Unrestricted, the query goes through the rebuilt HNSW index, which is
/// approximate and built by several threads: on data whose neighbours are
/// nearly equidistant it may return another near neighbour. That is
/// reported (identical or not, recall), not failed.
async fn check(
    client: &Client,
    id: &str,
    tmp: &str,
    c: &CollectionInfo,
    loaded: u64,
) -> Result<Checked> {
    let count = client.count(id, tmp).await?;
    if count != c.records || loaded != c.records {
        return Err(Error::integrity(format!(
            "collection {}: {count} records after the restore, the backup holds {} (loaded {loaded})",
            c.name, c.records
        ))
        .hint("the target was written to during the restore, or the server dropped records; restore again into an idle target"));
    }
    let mut out = Checked {
        matched: 0,
        identical: 0,
        min_recall: 1.0,
        max_delta: 0.0,
        notes: Vec::new(),
    };
    let mut failures = Vec::new();
    for (i, p) in c.probes.iter().enumerate() {
        let v = format::decode_embedding(&p.vector).map_err(|e| {
            Error::integrity(format!(
                "collection {}: probe {i} in the manifest: {e}",
                c.name
            ))
        })?;
        let n = p.ids.len().max(1);
        let (ids, distances) = client.query(id, tmp, &v, n, Some(&p.ids)).await?;
        let (same, delta) = same_answer(&ids, &distances, p);
        if same {
            out.matched += 1;
            out.max_delta = out.max_delta.max(delta);
        } else {
            failures.push(format!(
                "probe {i} (nearest to record {}): expected {:?} at {:?}, got {:?} at {:?}",
                p.from_id, p.ids, p.distances, ids, distances
            ));
            continue;
        }
        let (ids, distances) = client.query(id, tmp, &v, n, None).await?;
        if same_answer(&ids, &distances, p).0 {
            out.identical += 1;
        } else {
            let found = p.ids.iter().filter(|x| ids.contains(x)).count();
            let recall = found as f64 / p.ids.len().max(1) as f64;
            out.min_recall = out.min_recall.min(recall);
            out.notes.push(format!(
                "collection {}: probe {i} (record {}): the rebuilt approximate index returned {found} of the {} recorded neighbours (the recorded ones are all there, at the recorded distances)",
                c.name,
                p.from_id,
                p.ids.len()
            ));
        }
    }
    if !failures.is_empty() {
        return Err(Error::integrity(format!(
            "collection {}: {} of {} probe queries differ from the backup's: {}",
            c.name,
            failures.len(),
            c.probes.len(),
            failures.join("; ")
        ))
        .hint("the restored collection was deleted again; report this with the strata and Chroma versions of both servers"));
    }
    Ok(out)
}

/// Whether a query answer has the probe's ids in its order at its
/// distances (within tolerance; equidistant neighbours may swap), and the
/// largest distance difference.
fn same_answer(ids: &[String], distances: &[f32], p: &super::Probe) -> (bool, f32) {
    if ids.len() != p.ids.len() || distances.len() != p.distances.len() {
        return (false, f32::INFINITY);
    }
    let mut delta = 0f32;
    let mut close = true;
    for (a, b) in distances.iter().zip(&p.distances) {
        let d = (a - b).abs();
        delta = delta.max(d);
        close &= d <= DISTANCE_TOLERANCE * b.abs().max(1.0);
    }
    if !close {
        return (false, delta);
    }
    if ids == p.ids {
        return (true, delta);
    }
    // Swapped neighbours are fine only where their distances tie.
    let tied = ids.iter().zip(&p.ids).enumerate().all(|(k, (a, b))| {
        a == b || {
            let dk = p.distances[k];
            p.ids
                .iter()
                .zip(&p.distances)
                .any(|(x, dx)| x == a && (dx - dk).abs() <= DISTANCE_TOLERANCE * dk.abs().max(1.0))
        }
    });
    (tied && sorted(ids) == sorted(&p.ids), delta)
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut s: Vec<&str> = v.iter().map(String::as_str).collect();
    s.sort_unstable();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::chroma::Probe;

    fn probe(ids: &[&str], d: &[f32]) -> Probe {
        Probe {
            vector: String::new(),
            from_id: "a".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            distances: d.to_vec(),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn probe_answers() {
        let p = probe(&["a", "b", "c"], &[0.0, 0.5, 0.7]);
        // identical, or within float noise
        assert!(same_answer(&ids(&["a", "b", "c"]), &[0.0, 0.5, 0.7], &p).0);
        let (ok, delta) = same_answer(&ids(&["a", "b", "c"]), &[0.0, 0.500_000_06, 0.7], &p);
        assert!(ok && delta > 0.0 && delta < 1e-6);
        // another order at distinct distances, another distance, another id
        assert!(!same_answer(&ids(&["a", "c", "b"]), &[0.0, 0.5, 0.7], &p).0);
        assert!(!same_answer(&ids(&["a", "b", "c"]), &[0.0, 0.5, 0.8], &p).0);
        assert!(!same_answer(&ids(&["a", "b", "x"]), &[0.0, 0.5, 0.7], &p).0);
        assert!(!same_answer(&ids(&["a", "b"]), &[0.0, 0.5], &p).0);
        // a tie may come back in either order
        let t = probe(&["a", "b", "c"], &[0.0, 0.5, 0.5]);
        assert!(same_answer(&ids(&["a", "c", "b"]), &[0.0, 0.5, 0.5], &t).0);
    }

    #[test]
    fn temp_names_are_valid_chroma_names() {
        let n = temp_name("docs-l2");
        assert!(
            n.starts_with("strata-restore-") && n.ends_with("-docs-l2"),
            "{n}"
        );
        assert_eq!(n.len(), "strata-restore-".len() + 8 + 1 + "docs-l2".len());
    }
}

//! `strata backup SOURCE` for a chroma source: every collection of the
//! tenant/database, one object each, in the [`super::format`] layout.
//!
//! Per collection: count, then pages of records (`get` with limit/offset)
//! are turned into lines by an async task and sent through a bounded
//! channel to the pipeline's blocking encoder, so memory holds a few pages
//! whatever the collection's size. The object is committed only when the
//! last page arrived (the `end` line written); a server that goes away
//! leaves no object for that collection and no manifest. Then count again
//! and run the probes. The manifest, written last, makes the backup exist.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;

use super::client::{Client, CollectionDesc};
use super::format::{self, End, EndCount, GetPage, Header, HeaderCollection, RecordOut};
use super::{ChromaInfo, CollectionInfo, PROBE_RESULTS, Probe, object_name};
use crate::catalog::manifest::Summary;
use crate::catalog::{BackupId, Manifest, Repository};
use crate::config::Source;
use crate::error::{Error, Kind, Result};
use crate::sources::backup::{BackupContext, BackupReport};

/// Records asked for per `get` request.
pub const PAGE: usize = 1000;
/// Pages buffered between the HTTP task and the encoder.
const CHANNEL_PAGES: usize = 4;

/// A client for a configured chroma source.
pub fn source_client(source: &Source) -> Result<Client> {
    Client::new(
        &source.url,
        &source.tenant,
        &source.database,
        source.token.as_deref(),
    )
}

/// What the HTTP task saw of one collection.
struct Exported {
    records: u64,
    /// Records picked as probes: id and embedding.
    picked: Vec<(String, Vec<f32>)>,
}

/// Exports one collection into `tx`, line by line, picking the records at
/// `probe_at` (positions in export order) as probes.
async fn export_collection(
    client: Client,
    coll: CollectionDesc,
    page_size: usize,
    probe_at: Vec<u64>,
    tx: mpsc::Sender<std::result::Result<Bytes, String>>,
    complete: Arc<AtomicBool>,
) -> Result<Exported> {
    let header = Header {
        strata_chroma_export: format::FORMAT_VERSION,
        tenant: client.tenant.clone(),
        database: client.database.clone(),
        collection: HeaderCollection {
            name: coll.name.clone(),
            id: coll.id.clone(),
            metadata: coll.metadata.clone(),
            configuration: coll.configuration.clone(),
            schema: coll.schema.clone(),
            dimension: coll.dimension,
        },
    };
    let mut line = serde_json::to_vec(&header).expect("serialises");
    line.push(b'\n');
    let gone = |_| Error::failed("the encoder stopped");
    tx.send(Ok(line.into())).await.map_err(gone)?;
    let mut records = 0u64;
    let mut picked = Vec::new();
    loop {
        let body = match client
            .get_page(&coll.id, &coll.name, records, page_size)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e.message.clone())).await;
                return Err(e);
            }
        };
        let bad = |why: String| {
            Error::source(format!(
                "Chroma at {}: unexpected page of collection {} at record {records}: {why}",
                client.display(),
                coll.name
            ))
        };
        let page: GetPage = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let n = page.ids.len();
        let embeddings = match page.embeddings {
            Some(raw) => format::parse_embeddings(raw.get()).map_err(bad)?,
            None => return Err(bad("no embeddings".into())),
        };
        if embeddings.len() != n {
            return Err(bad(format!(
                "{} ids but {} embeddings",
                n,
                embeddings.len()
            )));
        }
        let mut out = Vec::with_capacity(n * 2600);
        for (i, id) in page.ids.iter().enumerate() {
            let emb = &embeddings[i];
            let rec = RecordOut {
                id,
                embedding: format::encode_embedding(emb),
                document: page
                    .documents
                    .as_ref()
                    .and_then(|d| d.get(i))
                    .and_then(|d| d.as_deref()),
                metadata: page
                    .metadatas
                    .as_ref()
                    .and_then(|m| m.get(i).copied().flatten())
                    .filter(|m| m.get() != "null"),
                uri: page
                    .uris
                    .as_ref()
                    .and_then(|u| u.get(i))
                    .and_then(|u| u.as_deref()),
            };
            serde_json::to_writer(&mut out, &rec).expect("serialises");
            out.push(b'\n');
            let pos = records + i as u64;
            if probe_at.contains(&pos) && !emb.is_empty() {
                picked.push((id.clone(), emb.clone()));
            }
        }
        records += n as u64;
        tx.send(Ok(out.into())).await.map_err(gone)?;
        if n < page_size {
            break;
        }
    }
    let mut end = serde_json::to_vec(&End {
        end: EndCount { records },
    })
    .expect("serialises");
    end.push(b'\n');
    tx.send(Ok(end.into())).await.map_err(gone)?;
    complete.store(true, Ordering::SeqCst);
    Ok(Exported { records, picked })
}

/// Positions of the records used as probes: first, middle, last.
fn probe_positions(count: u64) -> Vec<u64> {
    let mut v = vec![0, count / 2, count.saturating_sub(1)];
    v.dedup();
    if count == 0 {
        v.clear();
    }
    v
}

/// Takes an export of a chroma source.
pub async fn backup(
    ctx: &BackupContext<'_>,
    source: &Source,
    tier: Option<String>,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let client = source_client(source)?;
    let server_version = client.version().await?;
    let page_size = client
        .max_batch_size()
        .await
        .ok()
        .flatten()
        .map_or(PAGE, |m| m.clamp(1, PAGE));
    let (colls, leftovers): (Vec<_>, Vec<_>) = client
        .collections()
        .await?
        .into_iter()
        .partition(|c| !c.name.starts_with(super::import::TEMP_PREFIX));
    for c in &leftovers {
        eprintln!(
            "warning: {} on {}: not exported, it is a restore's temporary collection (an interrupted `strata restore`, or one running now); delete it if no restore runs",
            c.name,
            client.display()
        );
    }
    let id = BackupId::new(started);
    ctx.reporter.note(format!(
        "backup {}: {} (Chroma API {server_version}, {}/{}, {} collection(s)) as {id}",
        source.name,
        client.display(),
        client.tenant,
        client.database,
        colls.len()
    ));
    let mut objects = Vec::new();
    let mut infos = Vec::new();
    for coll in colls {
        let count_before = client.count(&coll.id, &coll.name).await?;
        let name = object_name(&coll.name);
        let key = Repository::data_key(&source.name, &id, &name);
        let (tx, rx) = mpsc::channel(CHANNEL_PAGES);
        let complete = Arc::new(AtomicBool::new(false));
        let mut net = tokio::spawn(export_collection(
            client.clone(),
            coll.clone(),
            page_size,
            probe_positions(count_before),
            tx,
            complete.clone(),
        ));
        let reader = crate::util::ChannelReader::new(rx);
        let step = ctx.reporter.step(
            format!(
                "{}: collection {} ({count_before} records)",
                source.name, coll.name
            ),
            None,
        );
        let cname = coll.name.clone();
        let stored = ctx
            .encoder
            .store(
                ctx.repo.storage().clone(),
                &key,
                &name,
                reader,
                step.progress.clone(),
                move |_| {
                    if complete.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err(Error::source(format!(
                            "the export of collection {cname} ended early"
                        )))
                    }
                },
            )
            .await;
        let rec = match stored {
            Ok(rec) => rec,
            Err(e) => {
                step.abandon();
                // The HTTP task's own failure explains a failed store best.
                let net_err = match tokio::time::timeout(Duration::from_secs(5), &mut net).await {
                    Ok(Ok(Err(n))) if n.kind == Kind::Source => Some(n),
                    Ok(_) => None,
                    Err(_) => {
                        net.abort();
                        None
                    }
                };
                let e = net_err.unwrap_or(e);
                return Err(e.context(format!(
                    "backup of {} failed exporting collection {}; nothing was recorded",
                    source.name, coll.name
                )));
            }
        };
        let exported = net.await.expect("export task panicked")?;
        let count_after = client.count(&coll.id, &coll.name).await?;
        let mut probes = Vec::new();
        let n = PROBE_RESULTS.min(count_after.max(exported.records) as usize);
        for (from_id, v) in &exported.picked {
            let (ids, distances) = client.query(&coll.id, &coll.name, v, n, None).await?;
            probes.push(Probe {
                vector: format::encode_embedding(v),
                from_id: from_id.clone(),
                ids,
                distances,
            });
        }
        let mut detail = format!(
            "{} records, stored {}",
            exported.records,
            crate::util::human_bytes(rec.stored_size)
        );
        if count_before != count_after || count_before != exported.records {
            detail.push_str(&format!(
                " (count {count_before} before, {count_after} after: written to during the export)"
            ));
            eprintln!(
                "warning: collection {} of {} changed during the export (count {count_before} before, {count_after} after, {} exported): Chroma cannot isolate an export from writes; no probe queries recorded for it (they would describe the server, not the export), a restore verifies its count only",
                coll.name, source.name, exported.records
            );
            probes.clear();
        }
        step.done(&detail);
        infos.push(CollectionInfo {
            name: coll.name.clone(),
            id: coll.id.clone(),
            object: name,
            space: coll.space(),
            dimension: coll.dimension,
            records: exported.records,
            count_before,
            count_after,
            probes,
        });
        objects.push(rec);
    }
    let finished = Utc::now();
    let mut manifest = Manifest::new(
        Summary::of(
            &id,
            &source.name,
            source.kind,
            "dump",
            tier.clone(),
            started,
            finished,
        ),
        objects,
        None,
    );
    manifest.chroma = Some(ChromaInfo {
        server_version,
        tenant: client.tenant.clone(),
        database: client.database.clone(),
        collections: infos,
    });
    ctx.commit(&manifest, clock).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_first_middle_last() {
        assert_eq!(probe_positions(0), Vec::<u64>::new());
        assert_eq!(probe_positions(1), vec![0]);
        assert_eq!(probe_positions(2), vec![0, 1]);
        assert_eq!(probe_positions(1000), vec![0, 500, 999]);
    }
}

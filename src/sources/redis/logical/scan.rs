//! Taking a logical snapshot: `SCAN` every database with keys, pipeline
//! `PTTL` + `DUMP` per batch of keys, and write the records (format in
//! [`super`]) into the pipeline as the replies arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    CHANNEL_CHUNKS, CHUNK, SCAN_COUNT, Totals, encode, now_ms, put_header, put_key, put_select,
    put_trailer,
};
use crate::catalog::manifest::RedisDb;
use crate::catalog::{BackupId, Repository};
use crate::error::{Error, Result};
use crate::pipeline::ObjectRecord;
use crate::sources::backup::BackupContext;
use crate::sources::redis::Target;
use crate::sources::redis::client::{Client, Reply, parse_keyspace};
use crate::sources::redis::rdb::crc64;

/// A command the source refused, with the permissions a logical snapshot
/// needs.
fn refused(t: &Target, what: &str, e: &str) -> Error {
    Error::source(format!("redis {}: {what} refused: {e}", t.display())).hint(
        "a logical snapshot needs INFO, SELECT, SCAN, PTTL and DUMP (ACL: +info +select +scan +pttl +dump)",
    )
}

/// Walks every database with keys and writes the records into `tx`.
/// Sets `complete` after the trailer was sent.
async fn scan_all(
    mut client: Client,
    t: Target,
    dbs: Vec<u32>,
    started_ms: u64,
    tx: mpsc::Sender<std::result::Result<Bytes, String>>,
    complete: Arc<AtomicBool>,
) -> Result<Totals> {
    let r = scan_inner(&mut client, &t, dbs, started_ms, &tx).await;
    match &r {
        Ok(_) => complete.store(true, Ordering::SeqCst),
        Err(e) => {
            let _ = tx.send(Err(e.message.clone())).await;
        }
    }
    r
}

async fn scan_inner(
    client: &mut Client,
    t: &Target,
    dbs: Vec<u32>,
    started_ms: u64,
    tx: &mpsc::Sender<std::result::Result<Bytes, String>>,
) -> Result<Totals> {
    let mut out = Vec::with_capacity(CHUNK * 2);
    let mut crc = 0u64;
    let mut totals = Totals {
        started_ms,
        ..Totals::default()
    };
    put_header(&mut out, started_ms);
    let send = |chunk: Vec<u8>| async move {
        tx.send(Ok(Bytes::from(chunk)))
            .await
            .map_err(|_| Error::failed("the upload stopped reading the snapshot"))
    };
    for db in dbs {
        let dbs = db.to_string();
        match client.command(&[b"SELECT", dbs.as_bytes()]).await? {
            Reply::Status(_) => {}
            Reply::Error(e) => return Err(refused(t, &format!("SELECT {db}"), &e)),
            other => return Err(refused(t, &format!("SELECT {db}"), &format!("{other:?}"))),
        }
        put_select(&mut out, db);
        totals.dbs += 1;
        totals.keyspace.push(RedisDb {
            db,
            keys: 0,
            expires: 0,
        });
        let mut cursor = b"0".to_vec();
        loop {
            let reply = client
                .command(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT.as_bytes()])
                .await?;
            let (next, keys) = match reply {
                Reply::Array(Some(mut a)) if a.len() == 2 => {
                    let keys = a.pop().expect("two items");
                    let next = a.pop().expect("two items");
                    match (next, keys) {
                        (Reply::Bulk(Some(c)), Reply::Array(Some(k))) => (c, k),
                        other => {
                            return Err(refused(t, "SCAN", &format!("malformed reply {other:?}")));
                        }
                    }
                }
                Reply::Error(e) => return Err(refused(t, "SCAN", &e)),
                other => return Err(refused(t, "SCAN", &format!("malformed reply {other:?}"))),
            };
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter_map(|k| match k {
                    Reply::Bulk(Some(k)) => Some(k),
                    _ => None,
                })
                .collect();
            if !keys.is_empty() {
                let mut req = Vec::with_capacity(keys.len() * 32);
                for k in &keys {
                    encode(&mut req, &[b"PTTL", k]);
                    encode(&mut req, &[b"DUMP", k]);
                }
                client.send_encoded(req).await?;
                // Read every reply of the batch, even after a refusal, so
                // the error names the first refused command.
                let mut first_err = None;
                for k in &keys {
                    let pttl = client.reply().await?;
                    let dump = client.reply().await?;
                    let read_at = now_ms();
                    let (pttl, payload) = match (pttl, dump) {
                        (Reply::Error(e), _) => {
                            first_err.get_or_insert_with(|| refused(t, "PTTL", &e));
                            continue;
                        }
                        (_, Reply::Error(e)) => {
                            first_err.get_or_insert_with(|| refused(t, "DUMP", &e));
                            continue;
                        }
                        (Reply::Int(p), Reply::Bulk(Some(d))) => (p, d),
                        // gone between SCAN and DUMP
                        (_, Reply::Bulk(None)) => continue,
                        other => {
                            first_err.get_or_insert_with(|| {
                                refused(t, "PTTL/DUMP", &format!("unexpected replies {other:?}"))
                            });
                            continue;
                        }
                    };
                    if pttl == -2 {
                        continue; // deleted right after DUMP
                    }
                    let expire_at = if pttl >= 0 { read_at + pttl as u64 } else { 0 };
                    put_key(&mut out, k, expire_at, &payload);
                    totals.keys += 1;
                    totals.payload_bytes += payload.len() as u64;
                    if let Some(d) = totals.keyspace.last_mut() {
                        d.keys += 1;
                        d.expires += u64::from(expire_at != 0);
                    }
                    if out.len() >= CHUNK {
                        crc = crc64(crc, &out);
                        send(std::mem::replace(&mut out, Vec::with_capacity(CHUNK * 2))).await?;
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    crc = crc64(crc, &out);
    put_trailer(&mut out, &totals, crc);
    send(out).await?;
    Ok(totals)
}

/// What a logical backup hands back to [`crate::sources::redis::snapshot::backup`].
pub struct Taken {
    pub record: ObjectRecord,
    pub totals: Totals,
}

/// Takes a logical snapshot of the server `t` (of source `name`) over a
/// fresh connection and stores it as backup `id`'s object `object`
/// ([`super::LOGICAL_OBJECT`] for a standalone server, one per shard of a cluster).
pub async fn take(
    ctx: &BackupContext<'_>,
    name: &str,
    t: &Target,
    id: &BackupId,
    object: &str,
) -> Result<Taken> {
    let t = t.clone();
    let mut client = Client::connect(&t).await?;
    let keyspace = parse_keyspace(&client.info("keyspace").await?);
    let dbs: Vec<u32> = keyspace.iter().map(|d| d.db).collect();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let complete = Arc::new(AtomicBool::new(false));
    let started_ms = now_ms();
    let mut net = tokio::spawn(scan_all(
        client,
        t.clone(),
        dbs,
        started_ms,
        tx,
        complete.clone(),
    ));
    let key = Repository::data_key(name, id, object);
    let step = ctx
        .reporter
        .step(format!("{name}: logical snapshot of {}", t.display()), None);
    let name = name.to_string();
    let stored = ctx
        .encoder
        .store(
            ctx.repo.storage().clone(),
            &key,
            object,
            crate::util::ChannelReader::new(rx),
            step.progress.clone(),
            move |_| {
                if complete.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(Error::source(format!(
                        "the logical snapshot of {name} ended early"
                    )))
                }
            },
        )
        .await;
    let scanned = match tokio::time::timeout(std::time::Duration::from_secs(5), &mut net).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => Some(Err(Error::failed(format!("the scan task failed: {e}")))),
        Err(_) => {
            net.abort();
            None
        }
    };
    match (stored, scanned) {
        (Ok(record), Some(Ok(totals))) => {
            step.done(&format!(
                "{} keys, stored {}",
                totals.keys,
                crate::util::human_bytes(record.stored_size)
            ));
            Ok(Taken { record, totals })
        }
        // The scan's own failure explains a failed store best.
        (_, Some(Err(e))) | (Err(e), _) => {
            step.abandon();
            Err(e)
        }
        (Ok(_), None) => {
            step.abandon();
            Err(Error::failed("the scan did not end after the upload"))
        }
    }
}

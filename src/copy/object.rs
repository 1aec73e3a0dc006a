//! One object copied from a store to another as it is (no decryption, no
//! identity): streamed get → put through the bounded [`Body`] channel
//! (memory: a few chunks, whatever the object's size), hashed on the way,
//! and refused when the bytes read are not the ones recorded — the upload
//! is then aborted, so a damaged source object is never stored. After the
//! put the new object is read back and its SHA-256 compared with the bytes
//! sent: the copy is verified on arrival, not only on departure.
//!
//! No server-side CopyObject: the bytes must pass through strata to be
//! checked against their recorded digest, and a copy between two S3
//! services (the usual case: another region or account) could not use it.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Kind, Result};
use crate::storage::{BODY_CHUNK, Body, PutMode, Storage, StorageError};

/// What a source object must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Its stored size.
    pub size: Option<u64>,
    /// SHA-256 of its stored bytes, lowercase hex.
    pub sha256: Option<String>,
}

/// What [`copy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// Stored now: its size.
    Stored(u64),
    /// The target already held it (an earlier, interrupted copy, or a
    /// concurrent one), with the same bytes.
    Present,
}

fn damaged(key: &str, why: String) -> Error {
    Error::integrity(format!(
        "object {key} in the source repository is damaged: {why}; it was not copied"
    ))
    .hint("`strata verify` on the source repository reports its damaged backups; the backup it belongs to is not copied (its manifest is not written), the others are")
}

/// SHA-256 and size of an object as stored, read in a stream.
pub async fn digest(store: &Arc<dyn Storage>, key: &str) -> Result<(String, u64)> {
    let mut r = store.get(key).await?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf).await.map_err(|e| {
            Error::new(Kind::Storage, format!("storage: reading {key}: {e}")).retryable()
        })?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Copies `key` from `from` to `to` (create-only), checking what is read
/// against `expect` and what arrived against what was sent.
pub async fn copy(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    key: &str,
    expect: &Expect,
) -> Result<Copied> {
    let mut reader = from.get(key).await?;
    let (tx, body) = Body::channel();
    let feed = async move {
        let mut h = Sha256::new();
        let mut n = 0u64;
        // chunks of at most 1 MiB: the channel then holds a few MiB
        let mut buf = vec![0u8; BODY_CHUNK / 4];
        loop {
            let k = match reader.read(&mut buf).await {
                Ok(k) => k,
                Err(e) => {
                    let msg = format!("storage: reading {key}: {e}");
                    tx.fail(std::io::Error::other(msg.clone())).await;
                    return Err(Error::new(Kind::Storage, msg).retryable());
                }
            };
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
            if !tx.send(Bytes::copy_from_slice(&buf[..k])).await {
                // the put failed and dropped its end: it reports why
                return Ok((String::new(), n));
            }
        }
        let sha = hex::encode(h.finalize());
        let why = match (expect.size, &expect.sha256) {
            (Some(s), _) if s != n => Some(format!("{n} bytes where the manifest records {s}")),
            (_, Some(want)) if *want != sha => Some(format!(
                "its SHA-256 is {sha} where the manifest records {want}"
            )),
            _ => None,
        };
        if let Some(why) = why {
            tx.fail(std::io::Error::other(why.clone())).await;
            return Err(damaged(key, why));
        }
        tx.finish().await;
        Ok((sha, n))
    };
    let (fed, put) = tokio::join!(feed, to.put(key, body, PutMode::Create));
    let (sent_sha, sent) = match (fed, put) {
        (Err(e), _) => return Err(e),
        (Ok(v), Ok(_)) => v,
        (Ok((sha, n)), Err(StorageError::AlreadyExists { .. })) if !sha.is_empty() => {
            // stored by an earlier copy: the same bytes, or a conflict
            let (have, size) = digest(to, key).await?;
            if have == sha && size == n {
                return Ok(Copied::Present);
            }
            return Err(Error::conflict(format!(
                "object {key} already exists in the target repository with other content ({size} bytes, SHA-256 {have}); it was not replaced"
            ))
            .hint("the target holds another object under this name: check that the two repositories are not mixed up (`strata --repo NAME verify`)"));
        }
        (Ok(_), Err(e)) => return Err(Error::from(e).context(format!("copying {key}"))),
    };
    let (arrived, size) = digest(to, key).await?;
    if arrived != sent_sha || size != sent {
        return Err(Error::integrity(format!(
            "object {key} arrived different in the target repository ({size} bytes, SHA-256 {arrived}; sent {sent} bytes, {sent_sha})"
        ))
        .hint("the target store changed the bytes: check it (`strata --repo NAME verify`); run the copy again once it is fixed"));
    }
    Ok(Copied::Stored(sent))
}

/// Stores a small object (a manifest, a WAL record) create-only; when the
/// key exists, `same` decides whether the existing bytes are the same
/// content (then nothing is done) or a conflict.
pub async fn put_small(
    to: &Arc<dyn Storage>,
    key: &str,
    bytes: Bytes,
    same: impl Fn(&[u8]) -> bool,
) -> Result<Copied> {
    let n = bytes.len() as u64;
    match to.put_bytes(key, bytes, PutMode::Create).await {
        Ok(_) => Ok(Copied::Stored(n)),
        Err(StorageError::AlreadyExists { .. }) => {
            let have = to.get_bytes(key).await?;
            if same(&have) {
                Ok(Copied::Present)
            } else {
                Err(Error::conflict(format!(
                    "{key} already exists in the target repository with other content; it was not replaced"
                )))
            }
        }
        Err(e) => Err(Error::from(e).context(format!("copying {key}"))),
    }
}

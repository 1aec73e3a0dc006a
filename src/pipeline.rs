//! The streaming pipeline: source bytes → SHA-256 and size → zstd → age →
//! storage, and its inverse for restores.
//!
//! Each stage wraps the next as a `std::io::Write` (or `Read`) adapter and
//! runs on a blocking thread, connected to async storage by the bounded
//! [`Body`] channel. Nothing holds an artifact whole: memory is bounded by
//! the zstd window and workers plus a few storage chunks, whatever the size
//! of the database. The hash and byte counts of each stage come back as an
//! [`ObjectRecord`] for the manifest.
//!
//! Stored objects are plain age files whose payload is a plain zstd stream,
//! so `age -d -i KEY OBJ | zstd -d` recovers any of them without strata.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;

use crate::error::{Error, Result};
use crate::keys::{Identity, Recipient};
use crate::progress::Progress;
use crate::storage::{Body, BodyWriter, PutMode, Storage, StorageError};

/// Most zstd workers used when `[compression] threads` is 0.
pub const MAX_DEFAULT_THREADS: u32 = 8;

/// Read buffer of the copy loops.
const COPY_BUF: usize = 1 << 20;

/// One stored object as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Logical name inside the backup (`database.pgdump`, `globals.sql`).
    pub name: String,
    /// Storage key.
    pub key: String,
    /// Bytes before compression and encryption.
    pub plain_size: u64,
    /// Bytes as stored (compressed and encrypted).
    pub stored_size: u64,
    /// SHA-256 of the plain bytes, lowercase hex.
    pub plain_sha256: String,
    /// SHA-256 of the stored bytes (the age file), lowercase hex: what
    /// `strata copy` checks an object against without any identity.
    /// `None` for objects stored before strata recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<String>,
}

/// How objects are encoded.
#[derive(Clone)]
pub struct Encoder {
    pub recipients: Arc<Vec<Recipient>>,
    pub level: i32,
    /// zstd worker threads (0: one per core).
    pub threads: u32,
}

/// Counts bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

/// Hashes (SHA-256) and counts the bytes written through it.
struct Hashing<W> {
    inner: W,
    count: u64,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// What a successful encode produced.
#[derive(Debug, Clone, Copy)]
pub struct Encoded {
    pub plain_size: u64,
    pub stored_size: u64,
    pub sha256: [u8; 32],
    /// SHA-256 of the stored (encrypted) bytes.
    pub stored_sha256: [u8; 32],
}

impl Encoder {
    /// zstd workers: as configured, else one per core up to
    /// [`MAX_DEFAULT_THREADS`]. Memory grows with every worker (about 20 MiB
    /// each at level 3) while one `pg_dump` stream is already outrun by 8,
    /// so the default stops there and keeps peak RSS far under 200 MiB.
    fn threads(&self) -> u32 {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() as u32)
                .min(MAX_DEFAULT_THREADS)
        }
    }

    /// Encodes `src` into `out` synchronously: hash, compress, encrypt.
    /// Returns the plain size and hash; `out` is flushed but not finished.
    pub fn encode<R: Read, W: Write>(
        &self,
        mut src: R,
        out: W,
        progress: &Progress,
    ) -> io::Result<(Encoded, W)> {
        let age = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| io::Error::other(format!("age: {e}")))?;
        let counted = Hashing {
            inner: out,
            count: 0,
            hasher: Sha256::new(),
        };
        let encrypted = age.wrap_output(counted)?;
        let mut zstd = zstd::stream::write::Encoder::new(encrypted, self.level)?;
        let threads = self.threads();
        if threads > 1 {
            zstd.multithread(threads)?;
        }
        // the plain SHA-256 on a thread of its own, handed the very
        // buffers read (as `decode_stream` does), so this thread only
        // reads, feeds zstd and encrypts what it returns
        let (plain, sha256, zstd) = std::thread::scope(|scope| {
            let (to_hash, hashed, hasher) = spawn_hasher(scope);
            let mut plain = 0u64;
            let read = (|| -> io::Result<()> {
                loop {
                    let mut buf = spare(&hashed);
                    let n = match src.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    zstd.write_all(&buf[..n])?;
                    plain += n as u64;
                    progress.inc(n as u64);
                    // the hasher reads until this loop stops sending
                    let _ = to_hash.send((buf, n));
                }
            })();
            drop(to_hash);
            let sha = hasher.join().expect("hash thread panicked");
            read.map(|()| (plain, sha, zstd))
        })?;
        let encrypted = zstd.finish()?;
        let mut counted = encrypted.finish()?;
        counted.flush()?;
        Ok((
            Encoded {
                plain_size: plain,
                stored_size: counted.count,
                sha256,
                stored_sha256: counted.hasher.finalize().into(),
            },
            counted.inner,
        ))
    }

    /// Encodes a synchronous reader into a new object at `key` (create-only).
    ///
    /// `finish_check` runs after the source reached EOF and before the
    /// object is committed, given what was encoded (size, SHA-256): it
    /// decides whether the bytes were complete and right (e.g. the child
    /// process exited 0). If it fails, the upload is aborted and nothing is
    /// stored.
    pub async fn store<R, F>(
        &self,
        storage: Arc<dyn Storage>,
        key: &str,
        name: &str,
        src: R,
        progress: Progress,
        finish_check: F,
    ) -> Result<ObjectRecord>
    where
        R: Read + Send + 'static,
        F: FnOnce(&Encoded) -> Result<()> + Send + 'static,
    {
        let (sender, body) = Body::channel();
        let this = self.clone();
        let producer = tokio::task::spawn_blocking(move || -> Result<Encoded> {
            let writer: BodyWriter = sender.into_writer();
            let (enc, writer) = match this.encode(src, writer, &progress) {
                Ok(v) => v,
                Err(e) => {
                    // The writer was consumed by the encoder stack on error;
                    // dropping it unfinished aborts the upload.
                    return Err(Error::failed(format!("encoding failed: {e}")));
                }
            };
            if let Err(e) = finish_check(&enc) {
                writer.fail(io::Error::other(e.message.clone()));
                return Err(e);
            }
            writer
                .finish()
                .map_err(|e| Error::failed(format!("upload ended early: {e}")))?;
            Ok(enc)
        });
        let put = storage.put(key, body, PutMode::Create).await;
        let produced = producer.await.expect("encoder task panicked");
        // Report the first cause: a source failure explains an aborted
        // upload, a storage failure explains a broken pipe in the encoder.
        let enc = match (produced, put) {
            (Ok(enc), Ok(_)) => enc,
            (Err(e), Err(StorageError::Aborted { .. })) | (Err(e), Ok(_)) => return Err(e),
            (_, Err(e)) => return Err(e.into()),
        };
        Ok(ObjectRecord {
            name: name.to_string(),
            key: key.to_string(),
            plain_size: enc.plain_size,
            stored_size: enc.stored_size,
            plain_sha256: hex::encode(enc.sha256),
            stored_sha256: Some(hex::encode(enc.stored_sha256)),
        })
    }
}

/// Keys of the objects this process has decoded and verified in full (age
/// authentication, stored size, plain size and SHA-256 against their
/// record). A drill compares it with the manifest's object list, so an
/// object a restore path skipped fails its "object checksums" check.
static VERIFIED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether [`VERIFIED`] is kept (only a drill needs it; `verify
/// --read-data` over millions of WAL segments must not grow it).
static TRACK_VERIFIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, remember which objects were verified in full.
pub fn track_verified() {
    TRACK_VERIFIED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether this process has decoded and verified the object `key` in full
/// since [`track_verified`].
pub fn verified(key: &str) -> bool {
    VERIFIED.lock().unwrap().contains(key)
}

/// Streams a stored object back to plain bytes into `sink`, checking the
/// stored size, the age authentication, the plain size and the SHA-256
/// against `record`. Runs synchronously: call from a blocking thread.
///
/// age authenticates every 64 KiB chunk, so a damaged object fails before
/// its damaged plaintext reaches `sink`; the SHA-256 then proves the object
/// is the one the manifest names (not another valid object).
pub fn decode<R: Read + Send, W: Write>(
    record: &ObjectRecord,
    src: R,
    identities: &[Identity],
    sink: &mut W,
    progress: &Progress,
) -> Result<()> {
    let mut watched = Watched {
        inner: Counting {
            inner: src,
            count: 0,
        },
        failed: None,
    };
    let result = decode_stream(record, &mut watched, identities, sink, progress);
    // issue 13 item 4: when reading the stored bytes failed (the store
    // went away and its retries were used up), every later stage fails
    // too ("damaged: streaming error") although nothing says the object
    // is damaged. Report the store's failure, not the data's.
    if let (Err(e), Some(read_error)) = (&result, watched.failed.take())
        && e.kind == crate::error::Kind::Integrity
    {
        return Err(Error::new(
            crate::error::Kind::Storage,
            format!("storage: {read_error}: the store failed, not the data"),
        )
        .hint(
            "the store was unreachable or failing for longer than [repository] retries and stall_timeout allow; check the endpoint and network, then run the command again",
        )
        .retryable());
    }
    let (plain, sha) = result?;
    let stored = watched.inner.count;
    let bad = |what: String| damaged(record, what);
    if stored != record.stored_size {
        return Err(bad(format!(
            "stored size {stored} differs from the manifest's {}",
            record.stored_size
        )));
    }
    if plain != record.plain_size || sha != record.plain_sha256 {
        return Err(bad(format!(
            "content differs from the manifest (size {plain} vs {}, sha256 {sha} vs {})",
            record.plain_size, record.plain_sha256
        )));
    }
    sink.flush()
        .map_err(|e| Error::failed(format!("writing restored data of {}: {e}", record.key)))?;
    if TRACK_VERIFIED.load(std::sync::atomic::Ordering::SeqCst) {
        VERIFIED.lock().unwrap().insert(record.key.clone());
    }
    Ok(())
}

fn damaged(record: &ObjectRecord, what: String) -> Error {
    Error::integrity(format!("object {} is damaged: {what}", record.key)).hint(
        "run `strata verify --read-data` to find every damaged object; restore from another backup",
    )
}

/// A reader that remembers the first error its source returned: a failed
/// read of the stored bytes, as opposed to bytes that fail to decode.
struct Watched<R> {
    inner: R,
    failed: Option<String>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                if self.failed.is_none() {
                    self.failed = Some(match crate::storage::retry::StoreReadError::find(&e) {
                        Some(store) => store.to_string(),
                        None => format!("reading the stored object failed: {e}"),
                    });
                }
                Err(e)
            }
            other => other,
        }
    }
}

/// age, then zstd, then hash into `sink`; the plain size and SHA-256.
///
/// The three stages run on three threads (a restore of a large base backup
/// is otherwise bound by one core): age decrypts on one and hands 1 MiB
/// chunks to zstd on this one, which writes each decompressed chunk to
/// `sink` and hands the same buffer to the hasher. Memory: at most about
/// fourteen 1 MiB buffers, whatever the object's size.
fn decode_stream<R: Read + Send, W: Write>(
    record: &ObjectRecord,
    src: &mut R,
    identities: &[Identity],
    sink: &mut W,
    progress: &Progress,
) -> Result<(u64, String)> {
    let bad = |what: String| damaged(record, what);
    let decryptor = age::Decryptor::new_buffered(io::BufReader::with_capacity(COPY_BUF, src))
        .map_err(|e| bad(format!("not an age file: {e}")))?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::crypto(format!(
                "cannot decrypt {}: the identity does not match any recipient of this object",
                record.key
            ))
            .hint("use the identity whose public key was in [encryption] recipients when the backup was made"),
            other => bad(format!("decryption failed: {other}")),
        })?;
    let (mut compressed_out, compressed_in) = crate::util::chunk_pipe(2);
    // whole COPY_BUF buffers and how much of each zstd filled: never
    // shrunk, so a recycled one needs no zeroing
    std::thread::scope(|scope| {
        let (to_hash, hashed, hasher) = spawn_hasher(scope);
        let age = scope.spawn(move || -> io::Result<()> {
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => compressed_out.write_all(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            compressed_out.flush()
        });
        let mut plain = 0u64;
        let decoded = (|| -> Result<()> {
            let mut zstd = zstd::stream::read::Decoder::with_buffer(compressed_in)
                .map_err(|e| bad(format!("zstd: {e}")))?;
            loop {
                let mut buf = spare(&hashed);
                let n = match zstd.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(bad(e.to_string())),
                };
                sink.write_all(&buf[..n]).map_err(|e| {
                    Error::failed(format!("writing restored data of {}: {e}", record.key))
                })?;
                plain += n as u64;
                progress.inc(n as u64);
                // the hasher reads until this loop stops sending
                let _ = to_hash.send((buf, n));
            }
            Ok(())
        })();
        // end the hasher's input, and (with the decoder dropped) unblock
        // the age thread if the decoder stopped early
        drop(to_hash);
        let decrypted = age.join().expect("age thread panicked");
        let sha = hex::encode(hasher.join().expect("hash thread panicked"));
        match (decoded, decrypted) {
            // the decoder stopped first (a bad frame, a failed sink): the
            // age thread only met the closed pipe
            (Err(e), Err(a)) if a.kind() == io::ErrorKind::BrokenPipe => Err(e),
            // a failed decryption (a damaged chunk, a failed read) is the
            // cause of whatever the decoder then met (a frame cut short)
            (Err(e), Err(_)) if e.kind != crate::error::Kind::Integrity => Err(e),
            (_, Err(a)) => Err(bad(a.to_string())),
            (Err(e), Ok(())) => Err(e),
            (Ok(()), Ok(())) => Ok((plain, sha)),
        }
    })
}

/// The SHA-256 of a stream on a thread of its own (encode and decode both
/// use one, else a large object is bound by one core). Send it whole
/// `COPY_BUF` buffers and how much of each is filled, read through
/// [`spare`] the buffers it is done with (never shrunk, so a recycled one
/// needs no zeroing), drop the sender and join for the digest.
#[allow(clippy::type_complexity)]
fn spawn_hasher<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> (
    std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    std::sync::mpsc::Receiver<Vec<u8>>,
    std::thread::ScopedJoinHandle<'scope, [u8; 32]>,
) {
    let (to_hash, hash_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(2);
    let (hashed_tx, hashed) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    let hasher = scope.spawn(move || {
        let mut hasher = Sha256::new();
        for (chunk, n) in hash_rx {
            hasher.update(&chunk[..n]);
            // a full return queue only means the sender has spares
            let _ = hashed_tx.try_send(chunk);
        }
        <[u8; 32]>::from(hasher.finalize())
    });
    (to_hash, hashed, hasher)
}

/// A buffer the hasher is done with, or a new one.
fn spare(hashed: &std::sync::mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    hashed.try_recv().unwrap_or_else(|_| vec![0u8; COPY_BUF])
}

/// Fetches `record` from storage and decodes it into `sink` on a blocking
/// thread; returns the sink.
pub async fn fetch<W: Write + Send + 'static>(
    storage: &Arc<dyn Storage>,
    record: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
    mut sink: W,
    progress: Progress,
) -> Result<W> {
    let reader = storage.get(&record.key).await?;
    let record = record.clone();
    tokio::task::spawn_blocking(move || {
        let bridge = SyncIoBridge::new(reader);
        decode(&record, bridge, &identities, &mut sink, &progress).map(|_| sink)
    })
    .await
    .expect("decoder task panicked")
}

/// Encrypts a small in-memory value (manifests) as ASCII-armored age.
pub fn seal(recipients: &[Recipient], plain: &[u8]) -> Result<String> {
    use age::armor::{ArmoredWriter, Format};
    let enc = age::Encryptor::with_recipients(
        recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| Error::crypto(format!("age: {e}")))?;
    let mut out = Vec::new();
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor)?;
    let mut w = enc.wrap_output(armor)?;
    w.write_all(plain)?;
    w.finish()?.finish()?;
    Ok(String::from_utf8(out).expect("armor is ASCII"))
}

/// Decrypts a value sealed by [`seal`].
pub fn unseal(what: &str, identities: &[Identity], sealed: &str) -> Result<Vec<u8>> {
    use age::armor::ArmoredReader;
    let dec = age::Decryptor::new_buffered(ArmoredReader::new(sealed.as_bytes()))
        .map_err(|e| Error::integrity(format!("{what} is damaged: {e}")))?;
    let mut r = dec
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::crypto(format!(
                "cannot decrypt {what}: the identity does not match any recipient"
            ))
            .hint("use the identity whose public key was in [encryption] recipients when the backup was made"),
            other => Error::integrity(format!("{what} is damaged: {other}")),
        })?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| Error::integrity(format!("{what} is damaged: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Vec<Recipient>, Vec<Identity>) {
        let id = age::x25519::Identity::generate();
        (vec![Box::new(id.to_public())], vec![Box::new(id)])
    }

    #[test]
    fn encode_decode_round_trip_and_tamper() {
        let (r, i) = keys();
        let enc = Encoder {
            recipients: Arc::new(r),
            level: 3,
            threads: 2,
        };
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|x| (x % 251).to_le_bytes())
            .collect();
        let (e, stored) = enc
            .encode(&data[..], Vec::new(), &Progress::hidden())
            .unwrap();
        assert_eq!(e.plain_size, data.len() as u64);
        assert_eq!(e.stored_size, stored.len() as u64);
        let rec = ObjectRecord {
            name: "x".into(),
            key: "k".into(),
            plain_size: e.plain_size,
            stored_size: e.stored_size,
            plain_sha256: hex::encode(e.sha256),
            stored_sha256: Some(hex::encode(e.stored_sha256)),
        };
        let mut out = Vec::new();
        decode(&rec, &stored[..], &i, &mut out, &Progress::hidden()).unwrap();
        assert_eq!(out, data);

        let mut flipped = stored.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        let err = decode(&rec, &flipped[..], &i, &mut Vec::new(), &Progress::hidden()).unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Integrity);
        assert!(err.message.contains("object k"), "{err}");

        let (_, other) = keys();
        let err = decode(
            &rec,
            &stored[..],
            &other,
            &mut Vec::new(),
            &Progress::hidden(),
        )
        .unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Crypto);
    }

    #[test]
    fn a_failed_read_is_the_stores_fault_not_the_objects() {
        // issue 13 item 4: an S3 outage during a restore was reported as
        // "object … is damaged: streaming error" (exit 4, run verify).
        struct CutOff<'a>(&'a [u8]);
        impl Read for CutOff<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other(crate::storage::retry::StoreReadError {
                        key: "k".into(),
                        offset: 1234,
                        message: "connection reset; tried 3 times".into(),
                    }));
                }
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (r, i) = keys();
        let enc = Encoder {
            recipients: Arc::new(r),
            level: 1,
            threads: 1,
        };
        let data: Vec<u8> = (0..500_000u32).flat_map(|x| x.to_le_bytes()).collect();
        let (e, stored) = enc
            .encode(&data[..], Vec::new(), &Progress::hidden())
            .unwrap();
        let rec = ObjectRecord {
            name: "x".into(),
            key: "k".into(),
            plain_size: e.plain_size,
            stored_size: e.stored_size,
            plain_sha256: hex::encode(e.sha256),
            stored_sha256: Some(hex::encode(e.stored_sha256)),
        };
        for cut in [10, stored.len() / 2, stored.len() - 1] {
            let err = decode(
                &rec,
                CutOff(&stored[..cut]),
                &i,
                &mut Vec::new(),
                &Progress::hidden(),
            )
            .unwrap_err();
            assert_eq!(err.kind, crate::error::Kind::Storage, "cut at {cut}: {err}");
            assert_eq!(err.exit_code(), 6);
            assert!(
                err.message.contains("from the store failed at byte 1234"),
                "{err}"
            );
            assert!(!err.message.contains("is damaged"), "{err}");
            assert!(err.retryable);
        }
        // A clean early end (no read error) is still damage.
        let err = decode(
            &rec,
            &stored[..stored.len() / 2],
            &i,
            &mut Vec::new(),
            &Progress::hidden(),
        )
        .unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Integrity, "{err}");
    }

    #[test]
    fn stored_stream_is_plain_age_of_plain_zstd() {
        let (r, i) = keys();
        let enc = Encoder {
            recipients: Arc::new(r),
            level: 1,
            threads: 0,
        };
        let (_, stored) = enc
            .encode(&b"hello strata"[..], Vec::new(), &Progress::hidden())
            .unwrap();
        let dec = age::Decryptor::new(&stored[..]).unwrap();
        let mut z = Vec::new();
        dec.decrypt(i.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut z)
            .unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), b"hello strata");
    }

    #[test]
    fn seal_unseal() {
        let (r, i) = keys();
        let s = seal(&r, b"{\"a\":1}").unwrap();
        assert!(s.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_eq!(unseal("m", &i, &s).unwrap(), b"{\"a\":1}");
    }
}

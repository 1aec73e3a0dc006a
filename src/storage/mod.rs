//! Object storage: one small trait shaped like an object store (not a file
//! system), with semantic errors, and its implementations.
//!
//! Every repository operation goes through [`Storage`]. The local directory
//! store is the embedded default; S3 covers AWS and every S3-compatible
//! service. Both run one conformance suite (`tests/storage_conformance.rs`).
//!
//! Objects are written from a [`Body`]: a bounded channel of chunks fed by
//! the pipeline. A body that ends without [`BodyWriter::finish`] (the producer
//! failed, panicked or was dropped) is an error, never a truncated object:
//! an upload either stores every byte the producer meant to send or nothing.
//!
//! [`location::open`] puts every store behind [`retry::Retrying`]: the one place where
//! calls get their deadlines, retries and backoff, and where an interrupted
//! read resumes at the offset it reached (see docs/design.md, "Deadlines and
//! retries"). The stores themselves stay simple.

pub mod local;
pub mod location;
pub mod retry;
pub mod s3;

use std::fmt;
use std::io;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

/// Size of the chunks a [`BodyWriter`] hands to storage. With
/// [`BODY_CHANNEL_DEPTH`] this bounds the memory a streaming write holds
/// between the pipeline and the store.
pub const BODY_CHUNK: usize = 4 * 1024 * 1024;
/// How many chunks may wait between the producer and the store.
pub const BODY_CHANNEL_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    /// The store refused or failed in a way that retrying will not fix
    /// (access denied, no such bucket, bad credentials, bad request).
    #[error("{op} {key}: {message}")]
    Permanent {
        op: &'static str,
        key: String,
        message: String,
    },
    /// A failure that may succeed if tried again later (network, 5xx,
    /// throttling) after the store's own retries were used up.
    #[error("{op} {key}: {message} (retries exhausted)")]
    Transient {
        op: &'static str,
        key: String,
        message: String,
    },
    /// The producer of an upload failed; nothing was stored.
    #[error("upload of {key} aborted: {source}")]
    Aborted { key: String, source: io::Error },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// What `put` does when the key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace any existing object.
    Overwrite,
    /// Fail with [`StorageError::AlreadyExists`] if the key exists. Atomic
    /// where the store supports conditional writes (see [`Capabilities`]).
    Create,
}

/// S3 Object Lock retention mode (see docs/retention.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete.
    Governance,
    /// Nobody, not even the account root, can delete before the date.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }

    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// The retention every object written through a locked handle gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub retain_until: DateTime<Utc>,
}

/// What a store can promise; callers that need more must say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Create` is atomic (no race between two writers).
    pub atomic_create: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// An upload that was started but never completed (a temporary file in a
/// local store, an open multipart upload on S3): what a crash leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    pub key: String,
    /// Store-specific handle (temporary path, multipart upload id).
    pub handle: String,
    pub started: Option<DateTime<Utc>>,
}

pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// The location as the user wrote it (`file:///…`, `s3://bucket/prefix`).
    fn location(&self) -> String;
    fn capabilities(&self) -> Capabilities;
    /// Stores the body under `key`. Returns once the object is durable.
    async fn put(&self, key: &str, body: Body, mode: PutMode) -> StorageResult<ObjectMeta>;
    /// Streams an object's bytes.
    async fn get(&self, key: &str) -> StorageResult<ObjectReader>;
    /// Streams an object's bytes from byte `offset` on (a ranged GET on
    /// S3, a seek locally): how an interrupted read resumes. An offset at
    /// or past the end yields no bytes.
    async fn get_from(&self, key: &str, offset: u64) -> StorageResult<ObjectReader>;
    /// Size and time of an object, or `None` when it does not exist.
    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Uploads under `prefix` that were started and never completed.
    async fn list_incomplete(&self, prefix: &str) -> StorageResult<Vec<IncompleteUpload>>;
    /// Discards an incomplete upload.
    async fn abort_incomplete(&self, upload: &IncompleteUpload) -> StorageResult<()>;

    /// A handle to the same store that puts every object it creates under
    /// `lock` (S3 Object Lock retention); `None` when the store cannot
    /// lock objects (a local directory).
    fn with_object_lock(&self, _lock: ObjectLock) -> Option<std::sync::Arc<dyn Storage>> {
        None
    }

    /// Whether the store enforces object lock retention (on S3: the
    /// bucket was created with Object Lock enabled).
    async fn object_lock_enabled(&self) -> StorageResult<bool> {
        Ok(false)
    }

    /// Until when an object is under object lock retention (`None`: not
    /// locked, or missing). Deleting it before then fails or, on a
    /// versioned bucket, only hides it.
    async fn locked_until(&self, _key: &str) -> StorageResult<Option<DateTime<Utc>>> {
        Ok(None)
    }

    /// Puts this handle's lock (see [`Storage::with_object_lock`]) on an
    /// object that already exists, when it holds no retention or an
    /// earlier one: WAL archived under a short lock that a base backup
    /// locked for longer needs. A locked object keeps its mode.
    /// Returns whether the retention changed; stores and handles without a
    /// lock do nothing.
    async fn extend_lock(&self, _key: &str) -> StorageResult<bool> {
        Ok(false)
    }

    /// Stores a small in-memory object.
    async fn put_bytes(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<ObjectMeta> {
        let (tx, body) = Body::channel();
        tx.send_final(data).await;
        self.put(key, body, mode).await
    }

    /// Reads a small object whole (markers, manifests; never data objects).
    async fn get_bytes(&self, key: &str) -> StorageResult<Bytes> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.get(key).await?;
        let mut buf = Vec::new();
        reader
            .read_to_end(&mut buf)
            .await
            .map_err(|e| StorageError::Transient {
                op: "read",
                key: key.to_string(),
                message: e.to_string(),
            })?;
        Ok(Bytes::from(buf))
    }
}

enum Chunk {
    Data(Bytes),
    Finished,
    Failed(io::Error),
}

/// The receiving end of an upload: chunks in order, then an explicit end.
pub struct Body {
    source: BodySource,
    done: bool,
}

enum BodySource {
    Channel(mpsc::Receiver<Chunk>),
    /// A handle on a body the retry wrapper holds, so that a put which
    /// failed before taking anything from it can be tried again.
    Shared(std::sync::Arc<SharedBody>),
}

/// A body shared between attempts of one put (see [`retry::Retrying`]).
pub(crate) struct SharedBody {
    rx: tokio::sync::Mutex<mpsc::Receiver<Chunk>>,
    /// Set once any attempt received anything (data, end, failure): from
    /// then on the body cannot be replayed and the put cannot be retried.
    touched: std::sync::atomic::AtomicBool,
}

impl SharedBody {
    /// Takes over `body`'s channel. `None` when the body is itself a
    /// shared handle (a wrapper around a wrapper): then nothing is shared
    /// twice and the caller does not retry.
    pub(crate) fn new(body: Body) -> Result<std::sync::Arc<SharedBody>, Body> {
        match body.source {
            BodySource::Channel(rx) if !body.done => Ok(std::sync::Arc::new(SharedBody {
                rx: tokio::sync::Mutex::new(rx),
                touched: std::sync::atomic::AtomicBool::new(false),
            })),
            source => Err(Body {
                source,
                done: body.done,
            }),
        }
    }

    /// A body for one attempt.
    pub(crate) fn handle(self: &std::sync::Arc<Self>) -> Body {
        Body {
            source: BodySource::Shared(self.clone()),
            done: false,
        }
    }

    /// Whether an attempt took anything from the body.
    pub(crate) fn touched(&self) -> bool {
        self.touched.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Body {
    /// A bounded channel: at most [`BODY_CHANNEL_DEPTH`] chunks in flight.
    pub fn channel() -> (BodySender, Body) {
        let (tx, rx) = mpsc::channel(BODY_CHANNEL_DEPTH);
        (
            BodySender { tx },
            Body {
                source: BodySource::Channel(rx),
                done: false,
            },
        )
    }

    async fn recv(&mut self) -> Option<Chunk> {
        match &mut self.source {
            BodySource::Channel(rx) => rx.recv().await,
            BodySource::Shared(shared) => {
                let got = shared.rx.lock().await.recv().await;
                shared
                    .touched
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                got
            }
        }
    }

    /// The next chunk, `Ok(None)` at a clean end, or an error when the
    /// producer failed or went away without finishing.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        match self.recv().await {
            Some(Chunk::Data(b)) => Ok(Some(b)),
            Some(Chunk::Finished) => {
                self.done = true;
                Ok(None)
            }
            Some(Chunk::Failed(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the producer stopped before finishing the object",
            )),
        }
    }

    /// Reads chunks until at least `want` bytes are gathered or the body
    /// ends; used by stores that upload in parts.
    pub async fn next_block(&mut self, want: usize) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::new();
        while buf.len() < want {
            match self.next_chunk().await? {
                Some(b) if buf.is_empty() && b.len() >= want => return Ok(Some(b)),
                Some(b) => buf.extend_from_slice(&b),
                None => break,
            }
        }
        Ok(if buf.is_empty() && self.done {
            None
        } else {
            Some(buf.freeze())
        })
    }
}

/// The async sending end of a [`Body`].
#[derive(Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Chunk>,
}

impl BodySender {
    pub async fn send(&self, data: Bytes) -> bool {
        self.tx.send(Chunk::Data(data)).await.is_ok()
    }
    pub async fn send_final(self, data: Bytes) {
        if !data.is_empty() {
            let _ = self.tx.send(Chunk::Data(data)).await;
        }
        let _ = self.tx.send(Chunk::Finished).await;
    }
    pub async fn finish(self) {
        let _ = self.tx.send(Chunk::Finished).await;
    }
    pub async fn fail(self, err: io::Error) {
        let _ = self.tx.send(Chunk::Failed(err)).await;
    }
    /// A blocking `std::io::Write` adapter for synchronous producers
    /// (the zstd and age writers run on a blocking thread).
    pub fn into_writer(self) -> BodyWriter {
        BodyWriter {
            tx: self.tx,
            buf: BytesMut::with_capacity(BODY_CHUNK),
        }
    }
}

/// Synchronous writer into a [`Body`]; must be ended with [`finish`](Self::finish)
/// or [`fail`](Self::fail). Dropping it without either aborts the upload.
pub struct BodyWriter {
    tx: mpsc::Sender<Chunk>,
    buf: BytesMut,
}

impl BodyWriter {
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(BODY_CHUNK);
        self.tx
            .blocking_send(Chunk::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "storage upload ended early"))
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.ship()?;
        self.tx
            .blocking_send(Chunk::Finished)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "storage upload ended early"))
    }

    pub fn fail(self, err: io::Error) {
        let _ = self.tx.blocking_send(Chunk::Failed(err));
    }
}

impl io::Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BODY_CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= BODY_CHUNK {
            self.ship()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rejects keys that could escape a local root or confuse a store.
pub fn validate_key(key: &str) -> StorageResult<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(StorageError::Permanent {
            op: "validate",
            key: key.to_string(),
            message: "invalid object key".into(),
        });
    }
    Ok(())
}

//! S3 object storage: the [`Storage`] implementation for AWS S3 and every
//! S3-compatible service (MinIO, Cloudflare R2, Ceph RGW, s3s-fs in tests).
//!
//! Uploads stream: a body is cut into parts and sent as a multipart upload
//! with a few parts in flight, so memory stays bounded by
//! `(MAX_PARTS_IN_FLIGHT + 1) × part size` whatever the object's size. An
//! upload that fails (the producer or the server) is aborted, so a failed
//! backup leaves neither a truncated object nor billable orphan parts.
//!
//! Errors are sorted into what retrying cannot fix (`Permanent`: missing
//! bucket, access denied, bad request) and what it might (`Transient`:
//! network, 5xx, throttling, timeouts).
//!
//! Deadlines and retries ([`Limits`]): the client cuts a connection
//! attempt after `connect_timeout`, a request after `request_timeout` and
//! a transfer that stalls for `stall_timeout` (the SDK's stalled-stream
//! protection, both directions). Retrying is the wrapper's job
//! ([`super::retry`]), so the client itself tries each request once —
//! except the requests of a `put`, which carry bytes already taken from a
//! body the wrapper cannot replay: those the SDK retries itself.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime as AwsDateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::retry::Limits;
use super::{
    Body, Capabilities, IncompleteUpload, LockMode, ObjectLock, ObjectMeta, ObjectReader, PutMode,
    Storage, StorageError, StorageResult, validate_key,
};

/// Size of a multipart part (and the threshold above which an object is
/// uploaded in parts). S3 allows 10 000 parts, so parts grow past the
/// first thousand (see [`part_size`]) to keep very large objects possible.
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts uploading at once. More gains little throughput on one stream and
/// costs a part's worth of memory each.
const MAX_PARTS_IN_FLIGHT: usize = 3;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: i32 = 10_000;
/// The slowest average rate an upload request may move at: a request
/// carrying `n` bytes gets `request_timeout + n / MIN_UPLOAD_RATE` (a
/// 16 MiB part: 128 s more), so a slow link still uploads while a server
/// that took the bytes and never answers is cut. A transfer that stops
/// outright is cut sooner, by the stall timeout.
const MIN_UPLOAD_RATE: u64 = 128 * 1024;

/// Where and how to reach a bucket. Credentials are not here: they come
/// from the standard AWS chain (environment, profile, web identity, IMDS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket; may be empty; no leading or trailing
    /// slash.
    pub prefix: String,
    /// Custom endpoint URL (MinIO, R2, …); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region; otherwise the AWS chain's, otherwise `us-east-1`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`
    /// (needed by most self-hosted servers).
    pub path_style: bool,
}

#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    /// The endpoint as shown in error messages.
    endpoint: String,
    /// Object Lock retention put on every object created (except locks,
    /// see [`S3Storage::lock_for`]).
    lock: Option<ObjectLock>,
    limits: Limits,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl S3Storage {
    /// [`S3Storage::connect_with`] the default limits.
    pub async fn connect(cfg: S3Config) -> Result<S3Storage, StorageError> {
        S3Storage::connect_with(cfg, &Limits::default()).await
    }

    /// Builds a client and checks that the bucket exists and is reachable
    /// with the credentials found, so a wrong bucket name, bad credentials
    /// or an unreachable endpoint are reported before any work starts.
    /// One attempt: retries are the caller's (see [`super::location::open`]).
    pub async fn connect_with(cfg: S3Config, limits: &Limits) -> Result<S3Storage, StorageError> {
        let prefix = cfg.prefix.trim_matches('/').to_string();
        if cfg.bucket.is_empty() || cfg.bucket.contains('/') {
            return Err(StorageError::Permanent {
                op: "connect",
                key: format!("s3://{}", cfg.bucket),
                message: "invalid bucket name".into(),
            });
        }
        let region = RegionProviderChain::first_try(cfg.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        // One attempt per request: the retry wrapper retries whole calls
        // (see the module docs for the put requests, which differ).
        let retry = RetryConfig::standard().with_max_attempts(1);
        // The attempt timeout ends at the answer's headers for a GET (its
        // body streams afterwards, watched by the stall protection), so it
        // is safe for every request but uploads, which get their own.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(limits.connect_timeout)
            .operation_attempt_timeout(limits.request_timeout)
            .build();
        let stall = aws_sdk_s3::config::StalledStreamProtectionConfig::enabled()
            .upload_enabled(true)
            .download_enabled(true)
            .grace_period(limits.stall_timeout)
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(retry)
            .timeout_config(timeouts)
            .stalled_stream_protection(stall)
            .load()
            .await;
        let region_name = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        // The endpoint goes on the S3 client only, not on the shared config:
        // there it would also redirect STS (web identity) to a MinIO.
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.path_style)
            // Checksums only where S3 requires them: the default (a CRC on
            // every request) breaks multipart uploads on several
            // S3-compatible servers; integrity is checked by the repository's
            // own content hashes anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(ep) = &cfg.endpoint {
            s3 = s3.endpoint_url(ep);
        }
        let endpoint = cfg
            .endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| format!("https://s3.{region_name}.amazonaws.com"));
        let storage = S3Storage {
            client: Client::from_conf(s3.build()),
            bucket: cfg.bucket,
            prefix,
            endpoint,
            lock: None,
            limits: *limits,
        };
        storage
            .client
            .head_bucket()
            .bucket(&storage.bucket)
            .send()
            .await
            .map_err(|e| storage.bucket_error(e))?;
        Ok(storage)
    }

    /// Settings for a request inside a `put`: its bytes come from a body
    /// the retry wrapper cannot replay, so the SDK retries it (standard
    /// mode: throttling, 5xx, connection failures and timeouts, with
    /// backoff; never a 4xx). A request carrying `upload` bytes may take
    /// longer than `request_timeout` by what [`MIN_UPLOAD_RATE`] allows.
    fn put_request(&self, upload: u64) -> aws_sdk_s3::config::Builder {
        let l = &self.limits;
        let extra = Duration::from_secs_f64(upload as f64 / MIN_UPLOAD_RATE as f64);
        aws_sdk_s3::config::Builder::default()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(l.retries + 1)
                    .with_initial_backoff(super::retry::INITIAL_BACKOFF)
                    .with_max_backoff(super::retry::MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(l.connect_timeout)
                    .operation_attempt_timeout(l.request_timeout + extra)
                    .build(),
            )
    }

    /// The retention to put on `key`. Repository lock files
    /// (`locks/…`) are never locked: they must be deletable when their
    /// holder finishes.
    fn lock_for(&self, key: &str) -> Option<ObjectLock> {
        // locks and the upload journal are deleted when done: never locked
        self.lock
            .filter(|_| !key.starts_with("locks/") && !key.starts_with(UPLOADS_JOURNAL))
    }

    /// The journal entry of one multipart upload (see [`UPLOADS_JOURNAL`]).
    fn journal_key(upload_id: &str) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(upload_id.as_bytes());
        format!("{UPLOADS_JOURNAL}{}.json", hex::encode(&h[..16]))
    }

    /// Records an upload before its first part, so a writer killed
    /// mid-upload leaves a trace `list_incomplete` finds even on servers
    /// that cannot list multipart uploads.
    async fn journal_start(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        let entry = JournalEntry {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            started: Utc::now(),
        };
        let bytes = serde_json::to_vec(&entry).expect("journal entry serialises");
        self.put_single(
            &Self::journal_key(upload_id),
            bytes.into(),
            PutMode::Overwrite,
        )
        .await
        .map(drop)
    }

    /// Removes an upload's journal entry once it completed or was
    /// aborted; a failure leaves an entry `abort_incomplete` clears later.
    async fn journal_end(&self, upload_id: &str) {
        if let Err(e) = self.delete(&Self::journal_key(upload_id)).await {
            tracing::warn!("could not remove the journal entry of upload {upload_id}: {e}");
        }
    }

    /// The uploads the journal holds under `prefix`.
    async fn journaled(&self, prefix: &str) -> StorageResult<Vec<IncompleteUpload>> {
        let mut out = Vec::new();
        for o in self.list(UPLOADS_JOURNAL).await? {
            let bytes = match self.get_bytes(&o.key).await {
                Ok(b) => b,
                Err(StorageError::NotFound { .. }) => continue, // just ended
                Err(e) => return Err(e),
            };
            let Ok(entry) = serde_json::from_slice::<JournalEntry>(&bytes) else {
                continue;
            };
            if entry.key.starts_with(prefix) {
                out.push(IncompleteUpload {
                    key: entry.key,
                    handle: entry.upload_id,
                    started: Some(entry.started),
                });
            }
        }
        Ok(out)
    }

    /// HEAD of `key`; `None` when it does not exist.
    async fn head_object(
        &self,
        key: &str,
    ) -> StorageResult<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        validate_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) => match self.map_err("head", key, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    /// The key relative to our prefix, or `None` for keys outside it.
    fn relative_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }

    fn aborted(&self, key: &str, source: std::io::Error) -> StorageError {
        StorageError::Aborted {
            key: key.to_string(),
            source,
        }
    }

    /// HeadBucket answers have no body, so 404 and 403 carry no error code.
    fn bucket_error<E>(&self, err: SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let key = format!("s3://{}", self.bucket);
        match status {
            Some(404) => StorageError::Permanent {
                op: "connect",
                key,
                message: format!("bucket {} does not exist at {}", self.bucket, self.endpoint),
            },
            Some(403) => StorageError::Permanent {
                op: "connect",
                key,
                message: format!(
                    "access denied to bucket {} at {}: check credentials and bucket policy",
                    self.bucket, self.endpoint
                ),
            },
            _ => match self.map_err("connect", "", err) {
                StorageError::NotFound { .. } | StorageError::AlreadyExists { .. } => {
                    StorageError::Permanent {
                        op: "connect",
                        key,
                        message: format!(
                            "unexpected answer from {} for bucket {}",
                            self.endpoint, self.bucket
                        ),
                    }
                }
                StorageError::Permanent { message, .. } => StorageError::Permanent {
                    op: "connect",
                    key,
                    message,
                },
                StorageError::Transient { message, .. } => StorageError::Transient {
                    op: "connect",
                    key,
                    message,
                },
                other => other,
            },
        }
    }

    /// Sorts an SDK error into the storage error kinds. `key` is relative.
    fn map_err<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let url = if key.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            self.url(key)
        };
        let permanent = |message: String| StorageError::Permanent {
            op,
            key: url.clone(),
            message,
        };
        let transient = |message: String| StorageError::Transient {
            op,
            key: url.clone(),
            message,
        };
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let detail = se.err().message().unwrap_or("");
                let what = format!("HTTP {status} {code} {detail}").trim().to_string();
                match (status, code) {
                    (_, "NoSuchBucket") => permanent(format!(
                        "bucket {} does not exist at {}",
                        self.bucket, self.endpoint
                    )),
                    (_, "NoSuchKey" | "NotFound" | "NoSuchUpload") | (404, _) => {
                        StorageError::NotFound {
                            key: key.to_string(),
                        }
                    }
                    (_, "PreconditionFailed") | (412, _) => StorageError::AlreadyExists {
                        key: key.to_string(),
                    },
                    (
                        _,
                        "AccessDenied"
                        | "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "ExpiredToken"
                        | "InvalidToken"
                        | "AllAccessDisabled",
                    )
                    | (401 | 403, _) => permanent(format!(
                        "access denied to bucket {} at {} ({what}): check credentials and bucket policy",
                        self.bucket, self.endpoint
                    )),
                    (301, _) | (_, "PermanentRedirect" | "AuthorizationHeaderMalformed") => {
                        let region = se
                            .raw()
                            .headers()
                            .get("x-amz-bucket-region")
                            .unwrap_or("another region");
                        permanent(format!(
                            "bucket {} is in {region}: set the region ({what})",
                            self.bucket
                        ))
                    }
                    (
                        _,
                        "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "ConditionalRequestConflict",
                    )
                    | (408 | 409 | 429, _)
                    | (500..=599, _) => transient(format!("{} answered {what}", self.endpoint)),
                    _ => permanent(format!("{} refused the request: {what}", self.endpoint)),
                }
            }
            SdkError::DispatchFailure(df) => {
                let chain = error_chain(&err);
                if chain.contains("credential") {
                    permanent(format!("no usable AWS credentials: {chain}"))
                } else if df.is_user() {
                    permanent(format!("request to {} failed: {chain}", self.endpoint))
                } else {
                    transient(format!(
                        "cannot reach S3 endpoint {}: {chain}",
                        self.endpoint
                    ))
                }
            }
            SdkError::TimeoutError(_) => transient(format!(
                "timed out talking to S3 endpoint {}: {}",
                self.endpoint,
                error_chain(&err)
            )),
            SdkError::ResponseError(_) => transient(format!(
                "unreadable response from {}: {}",
                self.endpoint,
                error_chain(&err)
            )),
            SdkError::ConstructionFailure(_) => permanent(format!(
                "could not build the request: {}",
                error_chain(&err)
            )),
            _ => transient(error_chain(&err)),
        }
    }

    async fn put_single(&self, key: &str, data: Bytes, mode: PutMode) -> StorageResult<ObjectMeta> {
        let size = data.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(size as i64)
            .body(ByteStream::from(data));
        if mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        if let Some(lock) = self.lock_for(key) {
            // S3 requires an integrity checksum on a PutObject that sets a
            // retention; CRC32 makes the SDK compute one.
            req = req
                .object_lock_mode(lock_mode(lock.mode))
                .object_lock_retain_until_date(AwsDateTime::from_millis(
                    lock.retain_until.timestamp_millis(),
                ))
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
        }
        req.customize()
            .config_override(self.put_request(size))
            .send()
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            modified: None,
        })
    }

    /// Multipart upload of a body whose first two blocks are already read.
    /// Any failure aborts the upload so no parts are left behind.
    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        second: Bytes,
        body: Body,
        mode: PutMode,
    ) -> StorageResult<ObjectMeta> {
        let full = self.full_key(key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full);
        if let Some(lock) = self.lock_for(key) {
            create = create
                .object_lock_mode(lock_mode(lock.mode))
                .object_lock_retain_until_date(AwsDateTime::from_millis(
                    lock.retain_until.timestamp_millis(),
                ))
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
        }
        let created = create
            .customize()
            .config_override(self.put_request(0))
            .send()
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StorageError::Permanent {
                op: "put",
                key: self.url(key),
                message: format!("{} returned no multipart upload id", self.endpoint),
            });
        };
        if let Err(e) = self.journal_start(key, &upload_id).await {
            self.abort_quietly(&full, &upload_id).await;
            return Err(e);
        }
        let result = self
            .put_multipart_parts(key, &full, &upload_id, first, second, body, mode)
            .await;
        // done or aborted: the journal entry goes (a failed abort keeps
        // the upload listed where the server lists them; the rare case of
        // both failing is what `cleanup` on a listing server catches)
        self.journal_end(&upload_id).await;
        result
    }

    /// The parts and the completion of a multipart upload started by
    /// [`put_multipart`](Self::put_multipart); any failure aborts it.
    #[allow(clippy::too_many_arguments)]
    async fn put_multipart_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        first: Bytes,
        second: Bytes,
        body: Body,
        mode: PutMode,
    ) -> StorageResult<ObjectMeta> {
        let (full, upload_id) = (full.to_string(), upload_id.to_string());
        let (parts, size) = match self
            .upload_parts(key, &upload_id, VecDeque::from([first, second]), body)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                self.abort_quietly(&full, &upload_id).await;
                return Err(e);
            }
        };
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        if let Err(e) = req
            .customize()
            .config_override(self.put_request(0))
            .send()
            .await
        {
            // Includes a 412 when another writer created the key meanwhile:
            // the parts are then garbage.
            self.abort_quietly(&full, &upload_id).await;
            return Err(self.map_err("put", key, e));
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            modified: None,
        })
    }

    /// Feeds blocks from the body to part uploads, at most
    /// [`MAX_PARTS_IN_FLIGHT`] at once. Reading the next block overlaps the
    /// uploads in flight, so memory is bounded by (in flight + 1) parts.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        mut ready: VecDeque<Bytes>,
        mut body: Body,
    ) -> StorageResult<(Vec<CompletedPart>, u64)> {
        let mut tasks: JoinSet<StorageResult<CompletedPart>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut number: i32 = 0;
        let mut size: u64 = 0;
        loop {
            // Surface a failed part early instead of reading on.
            while let Some(done) = tasks.try_join_next() {
                parts.push(self.joined(key, done)?);
            }
            let block = match ready.pop_front() {
                Some(b) => b,
                None => match body
                    .next_block(part_size(number + 1))
                    .await
                    .map_err(|e| self.aborted(key, e))?
                {
                    Some(b) if !b.is_empty() => b,
                    _ => break,
                },
            };
            number += 1;
            if number > MAX_PARTS {
                return Err(StorageError::Permanent {
                    op: "put",
                    key: self.url(key),
                    message: format!("object exceeds S3's limit of {MAX_PARTS} parts"),
                });
            }
            size += block.len() as u64;
            while tasks.len() >= MAX_PARTS_IN_FLIGHT {
                let done = tasks.join_next().await.expect("tasks is not empty");
                parts.push(self.joined(key, done)?);
            }
            let this = self.clone();
            let key = key.to_string();
            let upload_id = upload_id.to_string();
            tasks.spawn(async move { this.upload_part(&key, &upload_id, number, block).await });
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(self.joined(key, done)?);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok((parts, size))
    }

    fn joined(
        &self,
        key: &str,
        done: Result<StorageResult<CompletedPart>, tokio::task::JoinError>,
    ) -> StorageResult<CompletedPart> {
        done.map_err(|e| StorageError::Permanent {
            op: "put",
            key: self.url(key),
            message: format!("part upload task failed: {e}"),
        })?
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> StorageResult<CompletedPart> {
        let data_len = data.len() as u64;
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        let locked = self.lock_for(key).is_some();
        if locked {
            // The upload was created with CRC32 checksums (a locked upload
            // needs them): every part carries its own.
            req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
        }
        let out = req
            .customize()
            .config_override(self.put_request(data_len))
            .send()
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        let mut part = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string));
        if locked {
            part = part.set_checksum_crc32(out.checksum_crc32().map(str::to_string));
        }
        Ok(part.build())
    }

    /// Best effort: the upload already failed; a failed abort leaves an
    /// incomplete upload that `list_incomplete` will find later.
    async fn abort_quietly(&self, full_key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .customize()
            .config_override(self.put_request(0))
            .send()
            .await
        {
            tracing::warn!(
                bucket = %self.bucket,
                key = full_key,
                upload_id,
                error = %error_chain(&e),
                "could not abort multipart upload"
            );
        }
    }
}

/// Where multipart uploads are journaled while they run (one small object
/// per upload, removed when it completes or is aborted): servers without
/// ListMultipartUploads (s3s-fs, some S3-compatible stores) would otherwise
/// keep the parts of a killed writer forever, unseen by `verify` and
/// `cleanup`.
pub const UPLOADS_JOURNAL: &str = "uploads/";

#[derive(serde::Serialize, serde::Deserialize)]
struct JournalEntry {
    key: String,
    upload_id: String,
    started: DateTime<Utc>,
}

/// Part size for part `number` (1-based): 16 MiB for the first thousand
/// parts, then one more 16 MiB per thousand, which lifts the maximum
/// object size from 156 GiB to about 860 GiB. Memory grows only for such
/// objects.
fn part_size(number: i32) -> usize {
    PART_SIZE * (1 + (number.max(1) as usize - 1) / 1000)
}

fn lock_mode(m: LockMode) -> aws_sdk_s3::types::ObjectLockMode {
    match m {
        LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
        LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
    }
}

fn to_chrono(t: Option<&AwsDateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

/// An error and its sources, joined: the SDK's top-level messages
/// ("dispatch failure") say nothing; the cause is at the bottom.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn capabilities(&self) -> Capabilities {
        // AWS S3 honours `If-None-Match: *` (since 2024), which would make
        // Create atomic, but several S3-compatible servers (s3s-fs among
        // them, older MinIO) silently ignore the header and there is no
        // reliable way to tell from here. Create is therefore HEAD + the
        // header: correct against a single writer everywhere, atomic only
        // where the server enforces the condition. We promise the weaker.
        Capabilities {
            atomic_create: false,
        }
    }

    async fn put(&self, key: &str, mut body: Body, mode: PutMode) -> StorageResult<ObjectMeta> {
        validate_key(key)?;
        // The HEAD catches an existing key on servers that ignore
        // If-None-Match, before any byte is uploaded.
        if mode == PutMode::Create && self.head(key).await?.is_some() {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let first = body
            .next_block(PART_SIZE)
            .await
            .map_err(|e| self.aborted(key, e))?
            .unwrap_or_default();
        // A short first block means the body ended: one PutObject suffices.
        if first.len() < PART_SIZE {
            return self.put_single(key, first, mode).await;
        }
        match body
            .next_block(PART_SIZE)
            .await
            .map_err(|e| self.aborted(key, e))?
        {
            Some(second) if !second.is_empty() => {
                self.put_multipart(key, first, second, body, mode).await
            }
            _ => self.put_single(key, first, mode).await,
        }
    }

    async fn get(&self, key: &str) -> StorageResult<ObjectReader> {
        self.get_from(key, 0).await
    }

    async fn get_from(&self, key: &str, offset: u64) -> StorageResult<ObjectReader> {
        validate_key(key)?;
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if offset > 0 {
            req = req.range(format!("bytes={offset}-"));
        }
        let out = match req.send().await {
            Ok(out) => out,
            // Resuming exactly at the end: nothing left to read.
            Err(e) if offset > 0 && e.raw_response().map(|r| r.status().as_u16()) == Some(416) => {
                return Ok(Box::new(tokio::io::empty()));
            }
            Err(e) => return Err(self.map_err("get", key, e)),
        };
        Ok(Box::new(out.body.into_async_read()))
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        Ok(self.head_object(key).await?.map(|out| ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: to_chrono(out.last_modified()),
        }))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{}", self.prefix, prefix)
        };
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.map_err("list", prefix, e))?;
            for obj in out.contents() {
                let Some(rel) = obj.key().and_then(|k| self.relative_key(k)) else {
                    continue;
                };
                found.push(ObjectMeta {
                    key: rel.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: to_chrono(obj.last_modified()),
                });
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some servers say 404.
            Err(e) => match self.map_err("delete", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list_incomplete(&self, prefix: &str) -> StorageResult<Vec<IncompleteUpload>> {
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{}", self.prefix, prefix)
        };
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let out = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    // Servers without multipart listing cannot tell us;
                    // bucket lifecycle rules must clean up there.
                    let unsupported = e.raw_response().map(|r| r.status().as_u16()) == Some(501)
                        || e.as_service_error().and_then(|s| s.code()) == Some("NotImplemented");
                    if unsupported {
                        // the journal is all there is to go by
                        let mut found = self.journaled(prefix).await?;
                        found.sort_by(|a, b| a.key.cmp(&b.key).then(a.handle.cmp(&b.handle)));
                        return Ok(found);
                    }
                    return Err(self.map_err("list incomplete", prefix, e));
                }
            };
            for up in out.uploads() {
                let (Some(key), Some(id)) =
                    (up.key().and_then(|k| self.relative_key(k)), up.upload_id())
                else {
                    continue;
                };
                found.push(IncompleteUpload {
                    key: key.to_string(),
                    handle: id.to_string(),
                    started: to_chrono(up.initiated()),
                });
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        // journal entries the server no longer lists (the upload ended, its
        // entry outlived it): listed too, so aborting them clears them
        for j in self.journaled(prefix).await? {
            if !found.iter().any(|f| f.handle == j.handle) {
                found.push(j);
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key).then(a.handle.cmp(&b.handle)));
        Ok(found)
    }

    async fn abort_incomplete(&self, upload: &IncompleteUpload) -> StorageResult<()> {
        validate_key(&upload.key)?;
        let aborted = match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.handle)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already aborted or completed: nothing left to discard.
            Err(e) => match self.map_err("abort upload", &upload.key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        };
        if aborted.is_ok() {
            self.journal_end(&upload.handle).await;
        }
        aborted
    }

    fn with_object_lock(&self, lock: ObjectLock) -> Option<std::sync::Arc<dyn Storage>> {
        let mut locked = self.clone();
        locked.lock = Some(lock);
        Some(std::sync::Arc::new(locked))
    }

    async fn object_lock_enabled(&self) -> StorageResult<bool> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled")),
            Err(e) => {
                if e.as_service_error().and_then(|s| s.code())
                    == Some("ObjectLockConfigurationNotFoundError")
                {
                    return Ok(false);
                }
                Err(self.map_err("get object lock configuration of", "", e))
            }
        }
    }

    async fn locked_until(&self, key: &str) -> StorageResult<Option<DateTime<Utc>>> {
        // HEAD carries the retention (x-amz-object-lock-retain-until-date)
        // on every server that implements Object Lock, and needs only the
        // permission to read the object.
        Ok(self
            .head_object(key)
            .await?
            .and_then(|out| to_chrono(out.object_lock_retain_until_date())))
    }

    async fn extend_lock(&self, key: &str) -> StorageResult<bool> {
        let Some(lock) = self.lock_for(key) else {
            return Ok(false);
        };
        let Some(head) = self.head_object(key).await? else {
            return Err(StorageError::NotFound {
                key: key.to_string(),
            });
        };
        if to_chrono(head.object_lock_retain_until_date()).is_some_and(|t| t >= lock.retain_until) {
            return Ok(false);
        }
        // A locked object keeps its mode: only extending its date needs no
        // more than s3:PutObjectRetention (changing the mode either way needs
        // governance bypass, or is refused).
        let mode = match head.object_lock_mode() {
            Some(aws_sdk_s3::types::ObjectLockMode::Compliance) => LockMode::Compliance,
            Some(aws_sdk_s3::types::ObjectLockMode::Governance) => LockMode::Governance,
            _ => lock.mode,
        };
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(lock_mode(mode).as_str().into())
            .retain_until_date(AwsDateTime::from_millis(
                lock.retain_until.timestamp_millis(),
            ))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .retention(retention)
            .send()
            .await
            .map_err(|e| self.map_err("extend the object lock of", key, e))?;
        Ok(true)
    }
}

//! S3 object storage: the [`Storage`] implementation for AWS S3 and every
//! S3-compatible service (MinIO, Cloudflare R2, Ceph RGW, s3s-fs in tests).
//!
//! Here: the client and its settings, and the trait's calls. Uploads
//! stream as multipart uploads with a bounded number of parts in flight
//! (`upload.rs`); each running multipart upload is journaled so a killed
//! writer's parts are found again (`journal.rs`); the SDK's errors are
//! sorted into what retrying cannot fix and what it might (`errors.rs`).
//!
//! A private CA (an on-premises MinIO): `ca_bundle`, else the
//! `AWS_CA_BUNDLE` variable the AWS CLI and SDKs read, names a PEM file
//! whose certificates are trusted besides the system's roots; the SDK's
//! own HTTPS client (rustls) is then built here with them.
//!
//! Deadlines and retries ([`Limits`]): the client cuts a connection
//! attempt after `connect_timeout`, a request after `request_timeout` and
//! a transfer that stalls for `stall_timeout` (the SDK's stalled-stream
//! protection, both directions). Retrying is the wrapper's job
//! ([`super::retry`]), so the client itself tries each request once —
//! except the requests of a `put`, which carry bytes already taken from a
//! body the wrapper cannot replay: those the SDK retries itself.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime as AwsDateTime;
use chrono::{DateTime, Utc};

mod errors;
mod journal;
mod upload;

pub use journal::UPLOADS_JOURNAL;

use super::retry::Limits;
use super::{
    Body, Capabilities, IncompleteUpload, LockMode, ObjectLock, ObjectMeta, ObjectReader, PutMode,
    Storage, StorageError, StorageResult, validate_key,
};

/// Size of a multipart part (and the threshold above which an object is
/// uploaded in parts). S3 allows 10 000 parts, so parts grow past the
/// first thousand (see `part_size` in `upload.rs`) to keep very large objects possible.
pub const PART_SIZE: usize = 16 * 1024 * 1024;

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
    /// A PEM file of CA certificates trusted besides the system's roots;
    /// `None`: [`CA_BUNDLE_ENV`] when set.
    pub ca_bundle: Option<PathBuf>,
    /// A named profile of the AWS shared config and credentials files
    /// (`~/.aws/config`, `~/.aws/credentials`) whose credentials and
    /// region this bucket is reached with: a second repository in another
    /// account. `None`: the standard chain (`AWS_PROFILE`, environment, …).
    pub profile: Option<String>,
}

/// The environment variable naming a CA bundle, as the AWS CLI reads it.
pub const CA_BUNDLE_ENV: &str = "AWS_CA_BUNDLE";

/// The SDK's default HTTPS client (rustls with aws-lc, proxy settings
/// from the environment, the SDK's connect timeout) trusting the
/// certificates in `path` besides the system's roots. The file is
/// checked here: the SDK would panic on a certificate it cannot parse.
fn https_client(path: &Path) -> Result<aws_sdk_s3::config::SharedHttpClient, String> {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    let bytes = std::fs::read(path)
        .map_err(|e| format!("CA bundle: cannot read {}: {e}", path.display()))?;
    crate::util::ca_certs(&bytes, path).map_err(|why| format!("CA bundle: {why}"))?;
    let ctx = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(bytes))
        .build()
        .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    Ok(
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut b = ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(ctx.clone());
            b.set_connector_settings(settings.cloned());
            if let Some(c) = components {
                b.set_sleep_impl(c.sleep_impl());
            }
            b.set_proxy_config(Some(ProxyConfig::from_env()));
            b.build()
        }),
    )
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
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(retry)
            .timeout_config(timeouts)
            .stalled_stream_protection(stall);
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        let ca_bundle = cfg.ca_bundle.clone().or_else(|| {
            std::env::var_os(CA_BUNDLE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = &ca_bundle {
            // On the shared config: STS and SSO calls go through the same
            // proxy or private CA, as with the AWS CLI.
            loader = loader.http_client(https_client(path).map_err(|message| {
                StorageError::Permanent {
                    op: "connect",
                    key: format!("s3://{}", cfg.bucket),
                    message,
                }
            })?);
        }
        let sdk = loader.load().await;
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

    /// The retention to put on `key`. Repository lock files
    /// (`locks/…`) are never locked: they must be deletable when their
    /// holder finishes.
    fn lock_for(&self, key: &str) -> Option<ObjectLock> {
        // locks and the upload journal are deleted when done: never locked
        self.lock
            .filter(|_| !key.starts_with("locks/") && !key.starts_with(UPLOADS_JOURNAL))
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

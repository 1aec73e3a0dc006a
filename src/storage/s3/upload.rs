//! Uploads to S3. A body is cut into parts and sent as a multipart upload
//! with a few parts in flight, so memory stays bounded by
//! `(MAX_PARTS_IN_FLIGHT + 1) × part size` whatever the object's size. An
//! upload that fails (the producer or the server) is aborted, so a failed
//! backup leaves neither a truncated object nor billable orphan parts.
//!
//! The requests of an upload carry bytes already taken from a body the
//! retry wrapper cannot replay: the SDK retries those itself
//! ([`S3Storage::put_request`]).

use std::collections::VecDeque;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime as AwsDateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::task::JoinSet;

use super::errors::error_chain;
use super::{PART_SIZE, S3Storage, lock_mode};
use crate::storage::{Body, ObjectMeta, PutMode, StorageError, StorageResult};

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

impl S3Storage {
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
                    .with_initial_backoff(crate::storage::retry::INITIAL_BACKOFF)
                    .with_max_backoff(crate::storage::retry::MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(l.connect_timeout)
                    .operation_attempt_timeout(l.request_timeout + extra)
                    .build(),
            )
    }

    pub(super) async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        mode: PutMode,
    ) -> StorageResult<ObjectMeta> {
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
    pub(super) async fn put_multipart(
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

/// Part size for part `number` (1-based): 16 MiB for the first thousand
/// parts, then one more 16 MiB per thousand, which lifts the maximum
/// object size from 156 GiB to about 860 GiB. Memory grows only for such
/// objects.
fn part_size(number: i32) -> usize {
    PART_SIZE * (1 + (number.max(1) as usize - 1) / 1000)
}

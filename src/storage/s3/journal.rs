//! The upload journal: one small object per running multipart upload, so
//! that uploads a killed writer left behind are found (and aborted) even
//! on servers that cannot list multipart uploads.

use chrono::{DateTime, Utc};

use super::S3Storage;
use crate::storage::{IncompleteUpload, PutMode, Storage, StorageError, StorageResult};

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

impl S3Storage {
    /// The journal entry of one multipart upload (see [`UPLOADS_JOURNAL`]).
    fn journal_key(upload_id: &str) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(upload_id.as_bytes());
        format!("{UPLOADS_JOURNAL}{}.json", hex::encode(&h[..16]))
    }

    /// Records an upload before its first part, so a writer killed
    /// mid-upload leaves a trace `list_incomplete` finds even on servers
    /// that cannot list multipart uploads.
    pub(super) async fn journal_start(&self, key: &str, upload_id: &str) -> StorageResult<()> {
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
    pub(super) async fn journal_end(&self, upload_id: &str) {
        if let Err(e) = self.delete(&Self::journal_key(upload_id)).await {
            tracing::warn!("could not remove the journal entry of upload {upload_id}: {e}");
        }
    }

    /// The uploads the journal holds under `prefix`.
    pub(super) async fn journaled(&self, prefix: &str) -> StorageResult<Vec<IncompleteUpload>> {
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
}

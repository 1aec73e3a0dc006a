//! Where a repository lives (a local directory or an S3 bucket and
//! prefix) and [`open`], which turns such a location into a [`Storage`]
//! behind the retry wrapper. The configuration parses `[repository]` into
//! a [`RepositoryLocation`]; storage owns the type so it depends on
//! nothing above it.

use std::path::PathBuf;

use super::{Storage, StorageResult, local, retry, s3};

/// Where the repository lives.
#[derive(Debug, Clone)]
pub enum RepositoryLocation {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        path_style: bool,
        /// `[repository] ca_bundle`: a PEM file of CA certificates the
        /// endpoint's certificate may chain to, besides the system's roots
        /// (else `AWS_CA_BUNDLE`; see [`s3::S3Config::ca_bundle`]).
        ca_bundle: Option<PathBuf>,
        /// `profile`: the AWS shared-config profile whose credentials
        /// reach this bucket (see [`s3::S3Config::profile`]).
        profile: Option<String>,
    },
}

impl RepositoryLocation {
    /// As a URL, for messages.
    pub fn display(&self) -> String {
        match self {
            RepositoryLocation::Local(p) => format!("file://{}", p.display()),
            RepositoryLocation::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => format!(
                "s3://{bucket}/{prefix}{}",
                endpoint
                    .as_ref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Whether two configs name the same repository (local paths compared
    /// once resolved).
    pub fn same_place(&self, other: &RepositoryLocation) -> bool {
        match (self, other) {
            (RepositoryLocation::Local(a), RepositoryLocation::Local(b)) => {
                let resolve = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
                resolve(a) == resolve(b)
            }
            (
                RepositoryLocation::S3 {
                    bucket: b1,
                    prefix: p1,
                    endpoint: e1,
                    ..
                },
                RepositoryLocation::S3 {
                    bucket: b2,
                    prefix: p2,
                    endpoint: e2,
                    ..
                },
            ) => (b1, p1.trim_matches('/'), e1) == (b2, p2.trim_matches('/'), e2),
            _ => false,
        }
    }
}

/// Opens the store a configuration names, behind the retry wrapper: every
/// call it serves gets `limits`' deadlines, retries and backoff.
pub async fn open(
    location: &RepositoryLocation,
    limits: &retry::Limits,
) -> StorageResult<std::sync::Arc<dyn Storage>> {
    let store: std::sync::Arc<dyn Storage> = match location {
        RepositoryLocation::Local(path) => {
            std::sync::Arc::new(local::LocalStorage::new(path.clone()))
        }
        RepositoryLocation::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
            ca_bundle,
            profile,
        } => {
            let cfg = s3::S3Config {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: endpoint.clone(),
                region: region.clone(),
                path_style: *path_style,
                ca_bundle: ca_bundle.clone(),
                profile: profile.clone(),
            };
            // Connecting checks the bucket (one HEAD): it gets the same
            // deadlines and retries as every later call.
            let key = format!("s3://{bucket}");
            std::sync::Arc::new(
                retry::with_retries(limits, "connect", &key, || {
                    s3::S3Storage::connect_with(cfg.clone(), limits)
                })
                .await?,
            )
        }
    };
    Ok(retry::Retrying::wrap(store, *limits))
}

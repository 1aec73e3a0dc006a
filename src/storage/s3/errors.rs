//! How S3's answers become [`StorageError`]s: what retrying cannot fix
//! (`Permanent`: missing bucket, access denied, bad request) and what it
//! might (`Transient`: network, 5xx, throttling, timeouts), with messages
//! that name the bucket and endpoint.

use std::error::Error as StdError;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Storage;
use crate::storage::StorageError;

impl S3Storage {
    /// HeadBucket answers have no body, so 404 and 403 carry no error code.
    pub(super) fn bucket_error<E>(&self, err: SdkError<E, HttpResponse>) -> StorageError
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
    pub(super) fn map_err<E>(
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
                } else if untrusted_certificate(&chain) {
                    // issue 17 item 5: retrying cannot fix a certificate
                    permanent(format!(
                        "the TLS certificate of S3 endpoint {} is not trusted: {chain}",
                        self.endpoint
                    ))
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
}

/// Whether a connection failed because the server's certificate did not
/// verify (an unknown CA, a wrong name, expired): rustls's messages.
pub(super) fn untrusted_certificate(chain: &str) -> bool {
    chain.contains("invalid peer certificate") || chain.contains("UnknownIssuer")
}

/// An error and its sources, joined: the SDK's top-level messages
/// ("dispatch failure") say nothing; the cause is at the bottom.
pub(super) fn error_chain(err: &(dyn StdError + 'static)) -> String {
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

//! Errors an operator can act on: what failed, on which object, key or
//! time, and a hint; each kind maps to a stable exit code (`docs/cli.md`).

use std::fmt;

use crate::storage::StorageError;

/// The class of a failure; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something failed that has no more specific class.
    Failed,
    /// Bad command line or configuration.
    Usage,
    /// The location is not a strata repository, or of another format.
    Repository,
    /// Data does not match its manifest: checksum, size, missing object.
    Integrity,
    /// The database or other source could not be read.
    Source,
    /// The object store failed or refused.
    Storage,
    /// Decryption failed: wrong or missing identity.
    Crypto,
    /// Refused to overwrite or to act on something that exists.
    Conflict,
    /// Interrupted by a signal.
    Interrupted,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::Repository => 3,
            Kind::Integrity => 4,
            Kind::Source => 5,
            Kind::Storage => 6,
            Kind::Crypto => 7,
            Kind::Conflict => 8,
            Kind::Interrupted => 130,
        }
    }

    /// The kind an exit code stands for (`Failed` for unknown codes).
    pub fn from_exit_code(code: u8) -> Kind {
        match code {
            2 => Kind::Usage,
            3 => Kind::Repository,
            4 => Kind::Integrity,
            5 => Kind::Source,
            6 => Kind::Storage,
            7 => Kind::Crypto,
            8 => Kind::Conflict,
            130 => Kind::Interrupted,
            _ => Kind::Failed,
        }
    }
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
    /// Whether running the same command again later may succeed.
    pub retryable: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
            retryable: false,
        }
    }
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Kind::Usage, message)
    }
    pub fn failed(message: impl Into<String>) -> Error {
        Error::new(Kind::Failed, message)
    }
    pub fn integrity(message: impl Into<String>) -> Error {
        Error::new(Kind::Integrity, message)
    }
    pub fn source(message: impl Into<String>) -> Error {
        Error::new(Kind::Source, message)
    }
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, message)
    }
    pub fn crypto(message: impl Into<String>) -> Error {
        Error::new(Kind::Crypto, message)
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }
    pub fn retryable(mut self) -> Error {
        self.retryable = true;
        self
    }
    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }
    /// Adds the full-disk hint to an error without a hint whose message
    /// says the disk is full (many are built from an I/O error's text).
    pub fn with_disk_full_hint(self) -> Error {
        match (&self.hint, disk_full_hint(&self.message)) {
            (None, Some(h)) => self.hint(h),
            _ => self,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        let retryable = matches!(e, StorageError::Transient { .. });
        let kind = match &e {
            StorageError::NotFound { .. } => Kind::Integrity,
            StorageError::AlreadyExists { .. } => Kind::Conflict,
            _ => Kind::Storage,
        };
        let mut err = Error::new(kind, format!("storage: {e}"));
        err.retryable = retryable;
        if let Some(h) = disk_full_hint(&err.message) {
            return err.hint(h);
        }
        if err.message.contains("TLS certificate of S3 endpoint") {
            // issue 17 item 5: a private CA (MinIO on premises)
            return err.hint(
                "if the endpoint's certificate is signed by a private CA, set [repository] ca_bundle (or AWS_CA_BUNDLE) to that CA's PEM file (see docs/configuration.md)",
            );
        }
        if retryable {
            err = err.hint("the store may be unreachable or overloaded; check the endpoint and network, then run the command again");
        }
        err
    }
}

/// Adds context to any error convertible into [`Error`].
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// The hint for a full disk, when `message` is one.
fn disk_full_hint(message: &str) -> Option<&'static str> {
    (message.contains("No space left on device") || message.contains("Disk quota exceeded"))
        .then_some("the disk is full: free space there (or choose a directory on another file system) and run the command again; nothing that was written is used until it is complete")
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::failed(e.to_string()).with_disk_full_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13 item 10: disk-full errors had no hint.
    #[test]
    fn a_full_disk_gets_a_hint() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::from(io);
        assert!(
            e.hint
                .as_deref()
                .is_some_and(|h| h.contains("disk is full")),
            "{e}"
        );
        let e = Error::failed("writing /x: No space left on device (os error 28)")
            .with_disk_full_hint();
        assert!(e.hint.is_some());
        let e = Error::failed("writing /x: Permission denied").with_disk_full_hint();
        assert!(e.hint.is_none());
        for code in 1..=8u8 {
            assert_eq!(Kind::from_exit_code(code).exit_code(), code);
        }
    }
}

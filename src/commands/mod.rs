//! One module per CLI command. Each takes parsed arguments, does the work
//! through the library, prints its result (human text, or JSON with
//! `--json`) and returns the process exit code.

pub mod backup;
pub mod cleanup;
pub mod drill;
pub mod init;
pub mod key;
pub mod list;
pub mod metrics;
pub mod prune;
pub mod restore;
pub mod restore_all;
pub mod restore_chroma;
pub mod restore_redis;
pub mod restore_table;
pub mod schedule;
pub mod status;
pub mod unlock;
pub mod verify;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::Repository;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{self, Identity};
use crate::pipeline::Encoder;

/// Options every command shares.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    pub config: Option<PathBuf>,
    /// Identity file overriding `[encryption] identity_file`.
    pub identity: Option<PathBuf>,
}

impl Globals {
    pub fn config(&self) -> Result<Config> {
        Config::load(&Config::locate(self.config.as_deref()))
    }

    /// The identities for reading data: `--identity`, `$STRATA_IDENTITY_FILE`,
    /// else the config's `identity_file`.
    pub fn identities(&self, cfg: &Config) -> Result<Arc<Vec<Identity>>> {
        let path = self
            .identity
            .clone()
            .or_else(|| std::env::var_os("STRATA_IDENTITY_FILE").map(PathBuf::from))
            .or_else(|| cfg.identity_file.clone())
            .ok_or_else(|| {
                Error::crypto("no identity to decrypt with")
                    .hint("set [encryption] identity_file, $STRATA_IDENTITY_FILE or pass --identity FILE; backup hosts normally hold only the public key")
            })?;
        Ok(Arc::new(keys::load_identities(&path)?))
    }
}

/// Opens the configured repository, refusing anything that is not one.
pub async fn open_repository(cfg: &Config) -> Result<Repository> {
    let storage = crate::storage::open(&cfg.repository, &cfg.store_limits).await?;
    Repository::open(storage).await
}

pub fn encoder(cfg: &Config) -> Result<Encoder> {
    Ok(Encoder {
        recipients: Arc::new(keys::parse_recipients(&cfg.recipients)?),
        level: cfg.compression.level,
        threads: cfg.compression.threads,
    })
}

/// Prints a value as pretty JSON on stdout.
///
/// A closed stdout (`strata list --json | head`) is not an error worth a
/// panic; SIGPIPE stays ignored so a dead pg_restore is an error, not a kill.
pub fn print_json<T: serde::Serialize>(v: &T) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(v).expect("serialisable");
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// For messages: the config path as given.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

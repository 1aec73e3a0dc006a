//! One module per CLI command. Each takes parsed arguments, does the work
//! through the library, prints its result (human text, or JSON with
//! `--json`) and returns the process exit code.

pub mod backup;
pub mod cleanup;
pub mod copy;
pub mod drill;
pub mod init;
pub mod key;
pub mod list;
pub mod metrics;
pub mod prune;
pub mod restore;
pub mod restore_all;
pub mod restore_chroma;
pub mod restore_into;
pub mod restore_redis;
pub mod restore_table;
pub mod schedule;
pub mod status;
pub mod unlock;
pub mod verify;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{self, Identity};

pub use crate::context::{encoder, open_repository};

/// Options every command shares.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    pub config: Option<PathBuf>,
    /// Identity file overriding `[encryption] identity_file`.
    pub identity: Option<PathBuf>,
    /// `--repo NAME`: the repository to work on (else the default).
    pub repo: Option<String>,
}

impl Globals {
    /// The configuration, as seen from the `--repo` repository (an unknown
    /// name is a usage error naming the configured ones).
    pub fn config(&self) -> Result<Config> {
        Config::load(&Config::locate(self.config.as_deref()))?.select(self.repo.as_deref())
    }

    /// The identities for reading data: `--identity`, `$STRATA_IDENTITY_FILE`,
    /// else the config's `identity_file`.
    pub fn identities(&self, cfg: &Config) -> Result<Arc<Vec<Identity>>> {
        let path = self.identity_path(cfg).ok_or_else(|| {
                Error::crypto("no identity to decrypt with")
                    .hint("set [encryption] identity_file, $STRATA_IDENTITY_FILE or pass --identity FILE; backup hosts normally hold only the public key")
            })?;
        Ok(Arc::new(keys::load_identities(&path)?))
    }

    /// The identity given on the command line or in the environment
    /// (`--identity`, `$STRATA_IDENTITY_FILE`), which a restored server's
    /// `restore_command` must be told about (the config's it reads itself).
    pub fn explicit_identity(&self) -> Option<PathBuf> {
        self.identity
            .clone()
            .or_else(|| std::env::var_os("STRATA_IDENTITY_FILE").map(PathBuf::from))
    }

    /// Where the identity is read from: [`explicit_identity`](Self::explicit_identity),
    /// else the config's `identity_file`.
    pub fn identity_path(&self, cfg: &Config) -> Option<PathBuf> {
        self.explicit_identity()
            .or_else(|| cfg.identity_file.clone())
    }
}

/// The OS user a restored PostgreSQL server runs as: `--run-as`, or
/// `postgres` when strata runs as root (PostgreSQL refuses root); none
/// otherwise (it runs as the caller).
pub fn server_owner(run_as: Option<&str>) -> Result<Option<String>> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match (run_as, root) {
        (Some(u), true) => Ok(Some(u.to_string())),
        (None, true) => Ok(Some("postgres".to_string())),
        (Some(_), false) => Err(Error::usage("--run-as needs strata to run as root").hint(
            "without root, the restored directory belongs to you and the server runs as you",
        )),
        (None, false) => Ok(None),
    }
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

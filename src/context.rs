//! What every operation on the repository starts from, built from the
//! configuration: the open repository and the encoder (compression level
//! and threads, the recipients data is encrypted to). Shared by the CLI's
//! commands, the scheduler daemon and drills, so none of them reaches into
//! another's module for it.

use std::sync::Arc;

use crate::catalog::Repository;
use crate::config::Config;
use crate::error::Result;
use crate::keys;
use crate::pipeline::Encoder;

/// Opens the configured repository, refusing anything that is not one.
pub async fn open_repository(cfg: &Config) -> Result<Repository> {
    let storage = crate::storage::location::open(&cfg.repository, &cfg.store_limits).await?;
    Repository::open(storage).await
}

pub fn encoder(cfg: &Config) -> Result<Encoder> {
    Ok(Encoder {
        recipients: Arc::new(keys::parse_recipients(&cfg.recipients)?),
        level: cfg.compression.level,
        threads: cfg.compression.threads,
    })
}

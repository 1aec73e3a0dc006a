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

/// Opens the selected repository (`--repo`, else the default), refusing
/// anything that is not one.
pub async fn open_repository(cfg: &Config) -> Result<Repository> {
    let storage = crate::storage::location::open(&cfg.repository, &cfg.store_limits).await?;
    Repository::open(storage).await.map_err(|e| {
        if e.message.contains("not a strata repository") && cfg.repositories.len() > 1 {
            let name = &cfg.repo_name;
            e.hint(format!(
                "this is repository {name} ({}); create it with `strata --repo {name} init`, or choose another with --repo (configured: {})",
                cfg.repository.display(),
                cfg.repositories
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            e
        }
    })
}

pub fn encoder(cfg: &Config) -> Result<Encoder> {
    Ok(Encoder {
        recipients: Arc::new(keys::parse_recipients(&cfg.recipients)?),
        level: cfg.compression.level,
        threads: cfg.compression.threads,
    })
}

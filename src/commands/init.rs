//! `strata init`: create the repository named by the config.

use super::Globals;
use crate::catalog::Repository;
use crate::error::Result;

pub async fn run(g: &Globals, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let storage = crate::storage::open(&cfg.repository, &cfg.store_limits).await?;
    let repo = Repository::init(storage).await?;
    // which keys every later write must use (`check_recipients`)
    repo.record_recipients(&cfg.recipients, false).await?;
    if json {
        super::print_json(&serde_json::json!({
            "repository": repo.location(),
            "repository_id": repo.id,
            "format_version": crate::catalog::FORMAT_VERSION,
        }));
    } else {
        println!(
            "created strata repository {} (id {})",
            repo.location(),
            repo.id
        );
    }
    Ok(0)
}

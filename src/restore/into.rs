//! Loading a backup into a running server rather than into files: a
//! Redis snapshot or a Chroma export, verified after the load. `strata
//! restore --all` loads the sources whose `restore_to` is a server this
//! way; `strata restore --into` builds its own options (`--listen`,
//! `--collection`) and shares the token rule.

use crate::config::SourceKind;
use crate::error::{Error, Result};
use crate::progress::Reporter;

/// Loads a Redis snapshot or a Chroma export into `url`, verified as
/// `restore --into` verifies it.
pub async fn load_into(
    repo: &crate::catalog::Repository,
    identities: &std::sync::Arc<Vec<crate::keys::Identity>>,
    src: &crate::config::Source,
    plan: &super::plan::Plan,
    url: &url::Url,
    replace: bool,
    reporter: &Reporter,
) -> Result<()> {
    match src.kind {
        SourceKind::Redis => {
            let opts = crate::sources::redis::load::IntoOptions {
                target: crate::sources::redis::Target::new(url),
                url: url.clone(),
                replace,
                listen: None,
            };
            let r = crate::sources::redis::dispatch::restore_into(
                repo.storage(),
                &plan.entry,
                identities.clone(),
                &opts,
                reporter,
            )
            .await?;
            reporter.note(format!(
                "{}: {} keys loaded into {}",
                src.name,
                r.keyspace.iter().map(|d| d.keys).sum::<u64>(),
                r.target
            ));
        }
        SourceKind::Chroma => {
            let opts = crate::sources::chroma::import::RestoreOptions {
                into: url.clone(),
                tenant: src.tenant.clone(),
                database: src.database.clone(),
                token: into_token(&src.url, url, src.token.as_deref()),
                collections: vec![],
                replace,
            };
            let r = crate::sources::chroma::import::restore_and_verify(
                repo.storage(),
                &plan.entry,
                identities.clone(),
                &opts,
                reporter,
            )
            .await?;
            reporter.note(format!(
                "{}: {} records in {} collection(s) loaded into {} and verified",
                src.name,
                r.records,
                r.collections.len(),
                r.into
            ));
        }
        SourceKind::Postgres => {
            return Err(Error::usage(format!(
                "source {}: a postgres source is restored into a data directory, not a server",
                src.name
            )));
        }
    }
    Ok(())
}

/// The token for the `--into` server: `STRATA_INTO_TOKEN` if set, else the
/// source's own token only when `--into` is the source's server (its token
/// is never sent to another one).
pub fn into_token(source: &url::Url, into: &url::Url, token: Option<&str>) -> Option<String> {
    if let Ok(t) = std::env::var("STRATA_INTO_TOKEN") {
        return Some(t);
    }
    let server = |u: &url::Url| (u.host_str().map(str::to_owned), u.port_or_known_default());
    (server(source) == server(into))
        .then(|| token.map(str::to_owned))
        .flatten()
}

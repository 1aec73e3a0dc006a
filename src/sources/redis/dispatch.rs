//! The entry points of a redis source, whatever stands behind its URL: a
//! single server (replication or logical snapshot: [`super::snapshot`],
//! [`super::load`]) or a Redis Cluster ([`super::cluster`]). A backup asks
//! the server whether it runs in cluster mode; a restore follows the
//! backup (a cluster's has a slot map) and the target (`--into` a node of
//! a cluster sends each key to its slot's master).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::Target;
use super::client::{Client, info_field};
use super::load::{IntoOptions, IntoReport};
use super::snapshot::{RestoreOptions, RestoreReport, redis_manifest};
use crate::catalog::Entry;
use crate::config::Source;
use crate::error::Result;
use crate::keys::Identity;
use crate::progress::Reporter;
use crate::sources::backup::{BackupContext, BackupReport};
use crate::storage::Storage;

/// Takes a snapshot of a redis source: of every master when its URL names
/// a node of a cluster.
pub async fn backup(
    ctx: &BackupContext<'_>,
    source: &Source,
    tier: Option<String>,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let mut client = Client::connect(&Target::new(&source.url)).await?;
    if super::cluster::enabled(&mut client).await? {
        return super::cluster::backup::backup(ctx, source, tier, client, started, clock).await;
    }
    super::snapshot::backup(ctx, source, tier, client, started, clock).await
}

/// Restores a snapshot to a file or directory (and optionally a server
/// started on it); a cluster's as one file per shard, or into one started
/// server.
pub async fn restore(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let manifest = redis_manifest(entry, &identities)?;
    if manifest.redis.as_ref().is_some_and(|r| r.cluster.is_some()) {
        return super::cluster::restore::restore(
            storage, entry, manifest, identities, opts, reporter,
        )
        .await;
    }
    super::snapshot::restore(storage, entry, identities, opts, reporter).await
}

/// Loads a snapshot into the running server `opts.target`: into a cluster
/// by slot (any backup whose keys are all in database 0), a cluster's
/// backup into a standalone server with `RESTORE`, a single server's by
/// replication (or `RESTORE` for a logical snapshot).
pub async fn restore_into(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    identities: Arc<Vec<Identity>>,
    opts: &IntoOptions,
    reporter: &Reporter,
) -> Result<IntoReport> {
    let manifest = redis_manifest(entry, &identities)?;
    let t = &opts.target;
    let mut client = Client::connect(t)
        .await
        .map_err(|e| super::load::retarget(e, t))?;
    if super::cluster::enabled(&mut client).await? {
        // a node cannot replicate from strata in cluster mode: every key
        // goes to its slot's master with RESTORE instead
        if let Some(l) = opts.listen {
            reporter.note(format!(
                "--listen {l} is not used: a cluster is loaded with RESTORE, not by replicating from strata"
            ));
        }
        let server = client.info("server").await?;
        let version = info_field(&server, "redis_version")
            .unwrap_or("unknown")
            .to_string();
        return super::cluster::restore::into_cluster(
            storage,
            &manifest,
            identities,
            &opts.url,
            client,
            version,
            opts.replace,
            reporter,
        )
        .await;
    }
    drop(client);
    if manifest.redis.as_ref().is_some_and(|r| r.cluster.is_some()) {
        let c = super::load::check_target(opts).await?;
        let mut r = super::cluster::restore::into_standalone(
            storage,
            &manifest,
            identities,
            t,
            c.client,
            c.target_version,
            c.replaced_keys,
            reporter,
        )
        .await?;
        let mut warnings = c.warnings;
        warnings.append(&mut r.warnings);
        r.warnings = warnings;
        return Ok(r);
    }
    super::load::restore_into(storage, entry, identities, opts, reporter).await
}

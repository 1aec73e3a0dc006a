//! Backing up one source: the repository, encoder and recipients prepared
//! (a tier with `object_lock` gets a repository that locks every object),
//! the backup taken under the source's lock by the kind of backup asked
//! for, and the outcome posted to `[notify] webhook`; then the tier's
//! `copy_to` copies ([`crate::copy::after_backup`]). `strata backup`
//! (`commands/backup.rs`) and the scheduler daemon (`strata schedule run`)
//! both back up through here.

use crate::catalog::lock::{self, LockKind};
use crate::config::{Config, Source, SourceKind};
use crate::error::{Error, Result};
use crate::notify::Event;
use crate::progress::{Mode, Reporter};
use crate::sources::backup::{BackupContext, BackupReport};
use crate::sources::postgres::base;
use crate::sources::postgres::dump;
use crate::tier::{Tier, TierKind};

/// What every backup needs before it starts: the encoder, the parsed
/// recipients and the open repository. A tier with `object_lock` gets a
/// repository whose every object is written under S3 Object Lock for the
/// tier's retention period, counted from now (refused early on a store
/// that cannot lock).
pub async fn prepare(
    cfg: &Config,
    tier: Option<&Tier>,
) -> Result<(
    crate::pipeline::Encoder,
    Vec<crate::keys::Recipient>,
    crate::catalog::Repository,
)> {
    let encoder = crate::context::encoder(cfg)?;
    let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
    let repo = crate::context::open_repository(cfg).await?;
    repo.check_recipients(&cfg.recipients).await?;
    match tier.and_then(|t| t.object_lock.map(|l| (t, l))) {
        Some((t, l)) => {
            let repo = repo
                .with_object_lock(l.at(chrono::Utc::now()), &t.name)
                .await?;
            Ok((encoder, recipients, repo))
        }
        None => Ok((encoder, recipients, repo)),
    }
}

/// One source of a tier, backed up as `strata backup --tier` does it:
/// prepared, under the source lock, notified; prints nothing (progress
/// off). The scheduler daemon's entry point (`strata schedule run`).
pub async fn tier_source(cfg: &Config, tier: &Tier, source: &str) -> Result<BackupReport> {
    let src = cfg.source(source)?;
    let r = async {
        let (encoder, recipients, repo) = prepare(cfg, Some(tier)).await?;
        let reporter = Reporter::new(Mode::Quiet);
        let ctx = BackupContext {
            repo: &repo,
            encoder,
            recipients: &recipients,
            reporter: &reporter,
            pin: None,
            incremental: (tier.kind == TierKind::Base)
                .then_some(tier.incremental)
                .flatten(),
        };
        backup_locked(&ctx, src, Some(tier.name.clone()), tier.kind).await
    }
    .await;
    notify(cfg, &src.name, Some(&tier.name), r.as_ref().map(|_| ())).await;
    // the tier's copy_to: a failure is notified and logged; the backup
    // stands and the next `strata copy` catches up
    if let Ok(report) = &r {
        for c in crate::copy::after_backup(cfg, tier, source, &report.id).await {
            if let Some(e) = c.error {
                tracing::warn!(
                    "copy of backup {} of {source} to repository {} failed: {e}",
                    report.id,
                    c.repository
                );
            }
        }
    }
    r
}

/// One source's backup under its source lock (two backups of a source
/// never run at once; prune waits for neither, it refuses).
pub async fn backup_locked(
    ctx: &BackupContext<'_>,
    src: &Source,
    tier: Option<String>,
    kind: TierKind,
) -> Result<BackupReport> {
    let what = format!("backup {}", src.name);
    let lock = LockKind::Source(src.name.clone());
    match kind {
        // A Redis source has one kind of backup: the RDB snapshot (a
        // plain `strata backup REDIS` defaults to dump, meaning "the usual").
        TierKind::Dump | TierKind::Snapshot if src.kind == SourceKind::Redis => {
            let snap = crate::sources::redis::dispatch::backup(ctx, src, tier);
            lock::with_lock(ctx.repo, lock, &what, snap).await
        }
        _ if src.kind == SourceKind::Redis => Err(Error::usage(format!(
            "{} is a redis source: its backups are of kind snapshot, not {}",
            src.name,
            kind.as_str()
        ))),
        // A Chroma source has one kind of backup: the export (kind dump).
        TierKind::Dump if src.kind == SourceKind::Chroma => {
            let export = crate::sources::chroma::export::backup(ctx, src, tier);
            lock::with_lock(ctx.repo, lock, &what, export).await
        }
        _ if src.kind == SourceKind::Chroma => Err(Error::usage(format!(
            "{} is a chroma source: its backups are of kind dump (an export), not {}",
            src.name,
            kind.as_str()
        ))),
        TierKind::Base => {
            lock::with_lock(ctx.repo, lock, &what, base::backup(ctx, src, tier)).await
        }
        _ => lock::with_lock(ctx.repo, lock, &what, dump::backup(ctx, src, tier)).await,
    }
}

/// Posts the outcome to `[notify] webhook`, if configured (best effort).
pub async fn notify(cfg: &Config, source: &str, tier: Option<&str>, outcome: Result<(), &Error>) {
    if let Some(n) = &cfg.notify {
        n.send(&Event::backup(source, tier, outcome)).await;
    }
}

//! One prune, start to end: plan every backup by its tier, delete what
//! the plan deletes, then cut the WAL archives to what is left (see the
//! [`super`] module docs for the order and why).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::apply;
use super::tiers::{self, Action, Group};
use super::wal::{self, WalPrune};
use crate::catalog::{Repository, Unreadable};
use crate::config::Config;
use crate::error::{Error, Result};

/// What [`run`] planned and, unless it was a dry run, did.
pub struct Pruned {
    /// Every backup's decision, by tier (see [`tiers::plan`]).
    pub groups: Vec<Group>,
    /// Every PostgreSQL source's WAL archive (empty when [`Self::blocked`]).
    pub wal: Vec<WalPrune>,
    /// Manifests that cannot be read: while there are any, nothing is
    /// deleted.
    pub unreadable: Vec<Unreadable>,
    /// The first deletion that failed, after every deletion was tried.
    pub error: Option<Error>,
}

impl Pruned {
    /// Whether an unreadable manifest kept the prune from deleting (and
    /// from planning WAL).
    pub fn blocked(&self) -> bool {
        !self.unreadable.is_empty()
    }
}

/// Plans retention for every backup and WAL archive in `repo` as of
/// `now` and, unless `dry_run`, deletes what the plan deletes. The
/// caller holds the repository's exclusive lock for a real run.
pub async fn run(
    cfg: &Config,
    repo: &Repository,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Pruned> {
    let (entries, unreadable) = repo.backups(None).await?;
    let mut groups = tiers::plan(&cfg.tiers, &entries, now);
    // An unreadable manifest may be a source's newest backup: delete
    // nothing until `verify` has been looked at.
    let blocked = !unreadable.is_empty();
    let mut error = None;
    let lock_aware = if blocked {
        false
    } else {
        apply::check_object_locks(cfg, repo, &entries, &mut groups).await?
    };
    if !dry_run && !blocked {
        error = apply::apply(repo, &entries, &mut groups).await;
    }
    // WAL after base backups, planned on the base backups really gone.
    let mut wal_plans = Vec::new();
    if !blocked {
        let gone: BTreeSet<usize> = groups
            .iter()
            .flat_map(|g| g.backups.iter())
            .filter(|d| {
                if dry_run {
                    d.action == Action::Delete && d.locked_until.is_none()
                } else {
                    d.deleted
                }
            })
            .map(|d| d.entry)
            .collect();
        wal_plans = wal::plan(cfg, repo, &entries, &gone, now).await?;
        if !dry_run {
            for w in &mut wal_plans {
                if let Some(e) = w.apply(repo, lock_aware).await {
                    error.get_or_insert(e);
                }
            }
        }
    }
    Ok(Pruned {
        groups,
        wal: wal_plans,
        unreadable,
        error,
    })
}

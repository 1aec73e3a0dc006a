//! `strata cleanup`: remove what crashed or killed backups left behind —
//! data objects with no manifest, and uploads that never completed — once
//! they are older than a grace period (a backup still running has no
//! manifest yet either: the grace period protects it). `strata prune`
//! does the same after applying retention.

use chrono::{Duration, Utc};
use serde::Serialize;

use super::Globals;
use crate::catalog::Repository;
use crate::catalog::lock::{self, LockKind};
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct Removed {
    pub key: String,
    pub kind: &'static str,
}

/// What a leftover sweep removed (or would remove) and kept.
#[derive(Debug, Serialize)]
pub struct Sweep {
    pub removed: Vec<Removed>,
    /// Leftovers and uploads younger than the grace period.
    pub kept_within_grace: usize,
}

/// Removes leftovers and incomplete uploads older than `older_than`
/// (measured from the real clock, never a simulated one: a running
/// backup's objects must stay).
pub async fn sweep(repo: &Repository, older_than: Duration, dry_run: bool) -> Result<Sweep> {
    let storage = repo.storage().clone();
    let cutoff = Utc::now() - older_than;
    let (leftovers, incomplete) = repo.leftovers().await?;
    let mut removed = Vec::new();
    let mut kept = 0usize;
    for l in leftovers {
        if l.newest.is_some_and(|t| t > cutoff) {
            kept += 1;
            continue;
        }
        for key in l.objects {
            if !dry_run {
                storage.delete(&key).await?;
            }
            removed.push(Removed {
                key,
                kind: "leftover",
            });
        }
    }
    for u in incomplete {
        if u.started.is_some_and(|t| t > cutoff) {
            kept += 1;
            continue;
        }
        if !dry_run {
            storage.abort_incomplete(&u).await?;
        }
        removed.push(Removed {
            key: u.key,
            kind: "incomplete-upload",
        });
    }
    Ok(Sweep {
        removed,
        kept_within_grace: kept,
    })
}

pub async fn run(g: &Globals, older_than: Duration, dry_run: bool, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let repo = super::open_repository(&cfg).await?;
    // Exclusive, like prune: a running backup's objects have no manifest
    // yet and must not be swept. A dry run only reads.
    let swept = if dry_run {
        sweep(&repo, older_than, dry_run).await?
    } else {
        lock::with_lock(
            &repo,
            LockKind::Exclusive,
            "cleanup",
            sweep(&repo, older_than, dry_run),
        )
        .await?
    };
    let Sweep {
        removed,
        kept_within_grace: kept,
    } = swept;
    if json {
        super::print_json(
            &serde_json::json!({ "dry_run": dry_run, "removed": removed, "kept_within_grace": kept }),
        );
    } else {
        for r in &removed {
            println!(
                "{} {} ({})",
                if dry_run { "would remove" } else { "removed" },
                r.key,
                r.kind
            );
        }
        println!(
            "{} {} objects; {kept} leftovers younger than the grace period kept",
            if dry_run { "would remove" } else { "removed" },
            removed.len()
        );
    }
    Ok(0)
}

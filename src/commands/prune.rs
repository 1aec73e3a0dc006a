//! `strata prune [--dry-run] [--at TIME] [--grace 24h]`: apply each
//! tier's retention policy, then remove leftovers like `strata cleanup`.
//!
//! [`retention::prune::run`] decides and deletes (backups by tier, then WAL;
//! see [`crate::retention`] for the rules); this command takes the
//! repository's exclusive lock for a real run (a dry run only reads, so
//! it never blocks a backup), then sweeps leftovers and prints what was
//! kept, deleted or refused, and why.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::Globals;
use super::cleanup::{Sweep, sweep};
use crate::catalog::Repository;
use crate::catalog::lock::{self, LockKind};
use crate::error::{Kind, Result};
use crate::retention::tiers::{Action, Group};
use crate::retention::{self, wal};

#[derive(Serialize)]
struct Report<'a> {
    dry_run: bool,
    at: DateTime<Utc>,
    groups: &'a [Group],
    deleted: usize,
    kept: usize,
    failed: usize,
    unreadable_manifests: Vec<String>,
    leftovers: Option<&'a Sweep>,
    /// Backups kept because of S3 Object Lock retention.
    locked: usize,
    wal: &'a [wal::WalPrune],
}

pub async fn run(
    g: &Globals,
    dry_run: bool,
    at: Option<DateTime<Utc>>,
    grace: Duration,
    json: bool,
) -> Result<u8> {
    let cfg = g.config()?;
    let repo = super::open_repository(&cfg).await?;
    if dry_run {
        // Reads only: no lock, so a dry run never blocks a backup.
        return run_locked(&cfg, &repo, dry_run, at, grace, json).await;
    }
    // Exclusive: the plan must see a catalog no backup is adding to, and
    // no second prune may delete alongside.
    lock::with_lock(
        &repo,
        LockKind::Exclusive,
        "prune",
        run_locked(&cfg, &repo, dry_run, at, grace, json),
    )
    .await
}

async fn run_locked(
    cfg: &crate::config::Config,
    repo: &Repository,
    dry_run: bool,
    at: Option<DateTime<Utc>>,
    grace: Duration,
    json: bool,
) -> Result<u8> {
    let now = at.unwrap_or_else(Utc::now);
    let pruned = retention::prune::run(cfg, repo, dry_run, now).await?;
    let blocked = pruned.blocked();
    let leftovers = if blocked {
        None
    } else {
        Some(sweep(repo, grace, dry_run).await?)
    };

    let groups = &pruned.groups;
    let all = || groups.iter().flat_map(|g| g.backups.iter());
    let planned = all().filter(|d| d.action == Action::Delete).count();
    let deleted = all().filter(|d| d.deleted).count();
    let failed = all().filter(|d| d.error.is_some()).count();
    let report = Report {
        dry_run,
        at: now,
        groups,
        deleted,
        kept: all().filter(|d| d.action == Action::Keep).count(),
        failed,
        unreadable_manifests: pruned
            .unreadable
            .iter()
            .map(|u| u.error.message.clone())
            .collect(),
        leftovers: leftovers.as_ref(),
        locked: all().filter(|d| d.locked_until.is_some()).count(),
        wal: &pruned.wal,
    };
    if json {
        super::print_json(&report);
    } else {
        print_human(&report, planned, &cfg.path);
    }
    if let Some(e) = pruned.error {
        return Err(
            e.hint("the backups listed as failed are still there; run `strata prune` again")
        );
    }
    if blocked {
        return Ok(Kind::Integrity.exit_code());
    }
    Ok(0)
}

fn print_wal(w: &wal::WalPrune, dry_run: bool) {
    println!(
        "\nWAL of {}{}: {}",
        w.source,
        w.tier
            .as_ref()
            .map_or(String::new(), |t| format!(" (tier {t})")),
        w.rule
    );
    if let Some(warning) = &w.warning {
        println!("  warning: {warning}");
    }
    for r in &w.ranges {
        let verb = match (r.action, dry_run) {
            (crate::retention::wal_cut::WalAction::Keep, _) => "keep",
            (_, true) => "would delete",
            (_, false) => "delete",
        };
        println!("  {verb:<12} {}", r.describe());
    }
    if let Some(t) = w.locked_until {
        println!(
            "  kept: object lock until {} (deleted {} of {} WAL files, oldest first; the rest stay until the lock expires)",
            t.format("%Y-%m-%d %H:%M:%SZ"),
            w.deleted,
            w.to_delete
        );
    }
    if let Some(e) = &w.error {
        println!(
            "  FAILED after deleting {} of {} WAL files (oldest first): {e}",
            w.deleted, w.to_delete
        );
    }
}

fn print_human(r: &Report, planned: usize, config: &std::path::Path) {
    println!(
        "retention as of {}{}",
        r.at.format("%Y-%m-%d %H:%M:%SZ"),
        if r.dry_run {
            " (dry run: nothing is deleted)"
        } else {
            ""
        }
    );
    if r.groups.is_empty() {
        println!("no backups");
    }
    for g in r.groups {
        match &g.tier {
            _ if g.pinned => println!("\n{}", g.rule),
            Some(t) => println!("\ntier {t}: {}", g.rule),
            None => println!(
                "\nwithout a tier: {} backup{} kept (prune never deletes backups without a tier)",
                g.backups.len(),
                if g.backups.len() == 1 { "" } else { "s" }
            ),
        }
        if g.tier.is_none() && !g.pinned {
            continue;
        }
        for d in &g.backups {
            let verb = match (d.action, r.dry_run, d.deleted) {
                (Action::Keep, _, _) => "keep",
                (Action::Delete, _, _) if d.locked_until.is_some() => "kept",
                (Action::Delete, true, _) => "would delete",
                (Action::Delete, false, true) => "deleted",
                (Action::Delete, false, false) => "NOT deleted",
            };
            let why = match (&d.error, d.reasons.is_empty()) {
                _ if d.locked_until.is_some() => format!(
                    "  (object lock until {})",
                    d.locked_until.unwrap().format("%Y-%m-%d %H:%M:%SZ")
                ),
                (Some(e), _) => format!("  ({e})"),
                (None, false) => format!("  ({})", d.reasons.join(", ")),
                (None, true) => String::new(),
            };
            println!("  {verb:<12} {:<12} {}{why}", d.source, d.id);
        }
    }
    for w in r.wal {
        print_wal(w, r.dry_run);
    }
    for p in &r.unreadable_manifests {
        println!("FAILED  {p}");
    }
    if !r.unreadable_manifests.is_empty() {
        println!(
            "nothing deleted: {} manifests cannot be read and one may be a source's newest backup; run `strata verify`",
            r.unreadable_manifests.len()
        );
    }
    if let Some(s) = r.leftovers {
        for x in &s.removed {
            println!(
                "{} {} ({})",
                if r.dry_run { "would remove" } else { "removed" },
                x.key,
                x.kind
            );
        }
    }
    let sweep = r.leftovers.map_or(String::new(), |s| {
        format!(
            "; {} {} leftover objects ({} younger than the grace period kept)",
            if r.dry_run { "would remove" } else { "removed" },
            s.removed.len(),
            s.kept_within_grace
        )
    });
    let planned = planned - r.locked;
    let kept = r.kept + r.locked;
    let wal_total: usize = r.wal.iter().map(|w| w.to_delete).sum();
    let wal_done: usize = r.wal.iter().map(|w| w.deleted).sum();
    let sweep = if r.wal.is_empty() {
        sweep
    } else if r.dry_run {
        format!("{sweep}; would delete {wal_total} WAL files")
    } else {
        format!("{sweep}; deleted {wal_done} of {wal_total} WAL files planned")
    };
    if r.dry_run {
        println!("\nwould delete {planned} backups, keep {kept}{sweep}");
    } else {
        println!(
            "\ndeleted {} backups, kept {}{}{sweep}",
            r.deleted,
            kept,
            if r.failed > 0 {
                format!(", {} failed", r.failed)
            } else {
                String::new()
            }
        );
    }
    if r.groups.iter().any(|g| g.tier.is_some() || g.pinned) || r.groups.is_empty() {
        return;
    }
    eprintln!(
        "HINT: no backup has a tier; record one with `strata backup --tier NAME` and define [tiers.NAME] in {}",
        config.display()
    );
}

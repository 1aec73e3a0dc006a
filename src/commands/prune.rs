//! `strata prune [--dry-run] [--at TIME] [--grace 24h]`: apply each
//! tier's retention policy, then remove leftovers like `strata cleanup`.
//!
//! Plan, then apply. [`plan`] is pure: for each configured tier with a
//! kind prune handles, the backups recorded with that tier
//! (`summary.tier`) go through [`retention::plan`] with the tier's policy
//! and zone, as of the given clock. A backup is deleted only when its
//! tier's policy says so:
//! - backups with no tier, or with a tier the config does not define,
//!   are never deleted (the config says nothing about them);
//! - tiers of kinds prune does not handle yet (see
//!   [`crate::tier::TierKind::prunable`]) are left alone, as are backups
//!   whose kind is not their tier's kind;
//! - the newest backup of each source is never deleted: retention keeps
//!   it, and [`apply`] checks again before every delete.
//!
//! If any manifest cannot be read, nothing is deleted: the unreadable one
//! might be a source's newest backup.
//!
//! Deleting a backup removes its manifest first, then its data (see
//! [`crate::catalog`]): a prune killed halfway leaves leftovers, which the
//! next prune (or `cleanup`) removes, never a manifest without data.
//!
//! Base backups are pruned like dumps; then [`wal`] cuts each source's
//! WAL archive, keeping what the kept base backups and the WAL tier's
//! window need. WAL goes only after the base backups, so an interrupted
//! prune never leaves a listed base backup without its WAL.
//!
//! On an S3 bucket with Object Lock, a backup any of whose objects (its
//! manifest included) is still under retention is kept whole and reported
//! as `kept: object lock until T`: deleting its manifest would strand
//! locked data, and deleting its data would break a listed backup.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::Globals;
use super::cleanup::{Sweep, sweep};
use crate::catalog::lock::{self, LockKind};
use crate::catalog::{Entry, Repository};
use crate::error::{Error, Kind, Result};
use crate::retention::{self, Candidate, wal};
use crate::tier::Tier;

/// What prune decided about one backup.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    pub source: String,
    pub tier: Option<String>,
    pub kind: String,
    pub started: DateTime<Utc>,
    /// `keep` or `delete`.
    pub action: Action,
    /// Why it is kept (empty for deletions).
    pub reasons: Vec<String>,
    /// Set by [`apply`]: whether it was deleted.
    pub deleted: bool,
    /// Set by [`apply`]: why deleting it failed or was refused.
    pub error: Option<String>,
    /// Planned for deletion, but an object of it is under S3 Object Lock
    /// retention until then: kept whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
    /// Index into the entries given to [`plan`].
    #[serde(skip)]
    pub entry: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Delete,
}

/// The plan for one tier, or for a group of backups prune leaves alone.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// The tier's name; `None` for backups recorded without a tier.
    pub tier: Option<String>,
    /// What prune does with this group, for people: the policy, or why
    /// the group is left alone.
    pub rule: String,
    pub backups: Vec<Decision>,
}

/// Plans retention for every backup in `entries` (as
/// [`Repository::backups`] lists them) as of `now`.
pub fn plan(tiers: &BTreeMap<String, Tier>, entries: &[Entry], now: DateTime<Utc>) -> Vec<Group> {
    // Oldest first: retention ranks equal times by input order, later
    // counting as newer, which is how the catalog is ordered.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (entries[a].summary(), entries[b].summary());
        (sa.started, &sa.id).cmp(&(sb.started, &sb.id))
    });
    let mut by_tier: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for &i in &order {
        by_tier
            .entry(entries[i].summary().tier.as_deref())
            .or_default()
            .push(i);
    }

    let keep_all = |indices: &[usize], why: &str| -> Vec<Decision> {
        indices
            .iter()
            .map(|&i| decision(&entries[i], i, Action::Keep, vec![why.to_string()]))
            .collect()
    };
    let mut groups = Vec::new();
    for (tier, indices) in &by_tier {
        let Some(name) = tier else {
            continue; // untiered: listed last
        };
        let Some(def) = tiers.get(*name) else {
            let why = format!("tier {name} is not configured");
            groups.push(Group {
                tier: Some(name.to_string()),
                rule: format!("{why}: kept"),
                backups: keep_all(indices, &why),
            });
            continue;
        };
        if !def.kind.prunable() {
            let why = format!(
                "tier kind {}: pruning not implemented yet",
                def.kind.as_str()
            );
            groups.push(Group {
                tier: Some(name.to_string()),
                rule: format!("{why}: kept"),
                backups: keep_all(indices, &why),
            });
            continue;
        }
        let (same_kind, other_kind): (Vec<usize>, Vec<usize>) = indices
            .iter()
            .partition(|&&i| entries[i].summary().kind == def.kind.as_str());
        let candidates: Vec<Candidate<usize>> = same_kind
            .iter()
            .map(|&i| {
                let c = Candidate::from_summary(entries[i].summary());
                Candidate {
                    item: i,
                    time: c.time,
                    source: c.source,
                }
            })
            .collect();
        let p = retention::plan(&def.policy, def.tz(), candidates, now);
        let mut backups: Vec<Decision> = p
            .keep
            .into_iter()
            .map(|(i, why)| {
                decision(
                    &entries[i],
                    i,
                    Action::Keep,
                    why.iter().map(ToString::to_string).collect(),
                )
            })
            .chain(
                p.delete
                    .into_iter()
                    .map(|i| decision(&entries[i], i, Action::Delete, vec![])),
            )
            .collect();
        for &i in &other_kind {
            backups.push(decision(
                &entries[i],
                i,
                Action::Keep,
                vec![format!(
                    "kind {} is not the tier's kind {}",
                    entries[i].summary().kind,
                    def.kind.as_str()
                )],
            ));
        }
        backups.sort_by_key(|d| d.started);
        groups.push(Group {
            tier: Some(name.to_string()),
            rule: format!("{} (periods in {})", def.policy, def.tz().name()),
            backups,
        });
    }
    if let Some(indices) = by_tier.get(&None) {
        let why = "no tier: prune never deletes backups without a tier";
        groups.push(Group {
            tier: None,
            rule: why.into(),
            backups: keep_all(indices, why),
        });
    }
    groups
}

fn decision(e: &Entry, entry: usize, action: Action, reasons: Vec<String>) -> Decision {
    let s = e.summary();
    Decision {
        id: s.id.to_string(),
        source: s.source.clone(),
        tier: s.tier.clone(),
        kind: s.kind.clone(),
        started: s.started,
        action,
        reasons,
        deleted: false,
        error: None,
        locked_until: None,
        entry,
    }
}

/// The newest backup of each source, by any tier, of each source in each
/// tier, and of each source of each kind (so a source's newest base backup
/// survives even when a newer dump exists): what [`apply`] refuses to
/// delete whatever the plan says.
fn protected(entries: &[Entry]) -> BTreeSet<usize> {
    let mut newest: BTreeMap<(&str, u8, Option<&str>), usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let s = e.summary();
        for key in [
            (s.source.as_str(), 0, None),
            (s.source.as_str(), 1, s.tier.as_deref()),
            (s.source.as_str(), 2, Some(s.kind.as_str())),
        ] {
            let slot = newest.entry(key).or_insert(i);
            let cur = entries[*slot].summary();
            if (s.started, &s.id) > (cur.started, &cur.id) {
                *slot = i;
            }
        }
    }
    newest.into_values().collect()
}

/// Deletes what `groups` plan to delete (oldest first), except the
/// protected newest backups; records the outcome in each decision.
/// Returns the first error met, after trying every deletion.
pub async fn apply(repo: &Repository, entries: &[Entry], groups: &mut [Group]) -> Option<Error> {
    let protected = protected(entries);
    let mut first_error = None;
    let mut order: Vec<&mut Decision> = groups
        .iter_mut()
        .flat_map(|g| g.backups.iter_mut())
        .filter(|d| d.action == Action::Delete)
        .collect();
    order.sort_by_key(|d| d.started);
    for d in order {
        if d.locked_until.is_some() {
            continue; // kept whole: see the module docs
        }
        if protected.contains(&d.entry) {
            // Retention never plans this; if it ever does, keep the backup.
            let msg = format!(
                "refused to delete {} of {}: it is the newest backup of its source (a bug in the retention plan)",
                d.id, d.source
            );
            d.error = Some(msg.clone());
            first_error.get_or_insert(Error::failed(msg));
            continue;
        }
        match repo.delete_backup(&entries[d.entry]).await {
            Ok(()) => d.deleted = true,
            Err(e) => {
                d.error = Some(e.message.clone());
                first_error.get_or_insert(e.context(format!("deleting {} of {}", d.id, d.source)));
            }
        }
    }
    first_error
}

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

/// Marks the planned deletions that S3 Object Lock retention forbids.
/// Returns whether the store enforces object lock at all (then WAL
/// deletions are checked too).
async fn check_object_locks(
    cfg: &crate::config::Config,
    repo: &Repository,
    entries: &[Entry],
    groups: &mut [Group],
) -> Result<bool> {
    let configured = cfg.tiers.values().any(|t| t.object_lock.is_some());
    let enabled = match repo.storage().object_lock_enabled().await {
        Ok(b) => b,
        // Without the permission to read the bucket's lock configuration
        // and with no tier asking for locks, assume there are none.
        Err(_) if !configured => false,
        Err(e) => return Err(Error::from(e).context("checking the bucket's Object Lock")),
    };
    if !enabled {
        return Ok(false);
    }
    // Locks expire on the store's clock, not on `--at`: what matters is
    // whether a delete now would be refused.
    let now = Utc::now();
    for d in groups
        .iter_mut()
        .flat_map(|g| g.backups.iter_mut())
        .filter(|d| d.action == Action::Delete)
    {
        let e = &entries[d.entry];
        let keys =
            std::iter::once(&e.manifest_key).chain(e.summary().objects.iter().map(|o| &o.key));
        for k in keys {
            if let Some(t) = repo.storage().locked_until(k).await?
                && t > now
            {
                d.locked_until = Some(d.locked_until.map_or(t, |u| u.max(t)));
            }
        }
    }
    Ok(true)
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
    let (entries, unreadable) = repo.backups(None).await?;
    let mut groups = plan(&cfg.tiers, &entries, now);
    // An unreadable manifest may be a source's newest backup: delete
    // nothing until `verify` has been looked at.
    let blocked = !unreadable.is_empty();
    let mut error = None;
    let lock_aware = if blocked {
        false
    } else {
        check_object_locks(cfg, repo, &entries, &mut groups).await?
    };
    if !dry_run && !blocked {
        error = apply(repo, &entries, &mut groups).await;
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
    let leftovers = if blocked {
        None
    } else {
        Some(sweep(repo, grace, dry_run).await?)
    };

    let all = || groups.iter().flat_map(|g| g.backups.iter());
    let planned = all().filter(|d| d.action == Action::Delete).count();
    let deleted = all().filter(|d| d.deleted).count();
    let failed = all().filter(|d| d.error.is_some()).count();
    let report = Report {
        dry_run,
        at: now,
        groups: &groups,
        deleted,
        kept: all().filter(|d| d.action == Action::Keep).count(),
        failed,
        unreadable_manifests: unreadable.iter().map(|u| u.error.message.clone()).collect(),
        leftovers: leftovers.as_ref(),
        locked: all().filter(|d| d.locked_until.is_some()).count(),
        wal: &wal_plans,
    };
    if json {
        super::print_json(&report);
    } else {
        print_human(&report, planned, &cfg.path);
    }
    if let Some(e) = error {
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
            Some(t) => println!("\ntier {t}: {}", g.rule),
            None => println!(
                "\nwithout a tier: {} backup{} kept (prune never deletes backups without a tier)",
                g.backups.len(),
                if g.backups.len() == 1 { "" } else { "s" }
            ),
        }
        if g.tier.is_none() {
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
    if r.groups.iter().any(|g| g.tier.is_some()) || r.groups.is_empty() {
        return;
    }
    eprintln!(
        "HINT: no backup has a tier; record one with `strata backup --tier NAME` and define [tiers.NAME] in {}",
        config.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{BackupId, ManifestFile, Summary};
    use crate::config::{Config, SourceKind};
    use std::path::Path;
    use std::sync::Arc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn entry(source: &str, tier: Option<&str>, kind: &str, started: &str) -> Entry {
        let started = at(started);
        let id = BackupId::new(started);
        Entry {
            manifest_key: format!("manifests/{source}/{id}.json"),
            file: Arc::new(ManifestFile {
                summary: Summary {
                    format: 1,
                    id,
                    source: source.into(),
                    source_kind: SourceKind::Postgres,
                    kind: kind.into(),
                    tier: tier.map(Into::into),
                    started,
                    finished: started,
                    strata_version: "test".into(),
                    plain_size: 0,
                    stored_size: 0,
                    objects: vec![],
                },
                sealed: String::new(),
                wal: None,
            }),
        }
    }

    fn tiers(extra: &str) -> BTreeMap<String, Tier> {
        let text = format!(
            "[repository]\nurl = \"file:///r\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
             [sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/app\"\n{extra}"
        );
        Config::parse(Path::new("/t/strata.toml"), &text)
            .unwrap()
            .tiers
    }

    fn actions(groups: &[Group]) -> Vec<(Option<String>, Action, String)> {
        groups
            .iter()
            .flat_map(|g| g.backups.iter())
            .map(|d| {
                (
                    d.tier.clone(),
                    d.action,
                    d.started.format("%dT%H").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn only_configured_prunable_tiers_lose_backups() {
        let entries = vec![
            entry("app", Some("daily"), "dump", "2026-11-20T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-19T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-18T02:00:00Z"),
            entry("app", None, "dump", "2026-11-01T02:00:00Z"),
            entry("app", Some("typo"), "dump", "2026-11-02T02:00:00Z"),
            entry("app", Some("weekly"), "base", "2026-11-03T02:00:00Z"),
            entry("app", Some("weekly"), "base", "2026-11-04T02:00:00Z"),
        ];
        let t = tiers(
            "[tiers.daily]\nkeep_last = 2\n[tiers.weekly]\nkind = \"drill\"\nkeep_last = 1\n",
        );
        let groups = plan(&t, &entries, at("2026-11-21T00:00:00Z"));
        let d = Some("daily".to_string());
        assert_eq!(
            actions(&groups),
            [
                (d.clone(), Action::Delete, "18T02".into()),
                (d.clone(), Action::Keep, "19T02".into()),
                (d.clone(), Action::Keep, "20T02".into()),
                (Some("typo".into()), Action::Keep, "02T02".into()),
                (Some("weekly".into()), Action::Keep, "03T02".into()),
                (Some("weekly".into()), Action::Keep, "04T02".into()),
                (None, Action::Keep, "01T02".into()),
            ]
        );
        assert_eq!(groups[0].rule, "keep_last 2 (periods in UTC)");
        assert_eq!(
            groups[0].backups[2].reasons,
            ["keep_last 2", "newest of source"]
        );
        assert_eq!(groups[1].rule, "tier typo is not configured: kept");
        assert_eq!(
            groups[2].rule,
            "tier kind drill: pruning not implemented yet: kept"
        );
        assert_eq!(
            groups[3].backups[0].reasons,
            ["no tier: prune never deletes backups without a tier"]
        );
    }

    #[test]
    fn clock_and_time_zone_come_from_the_caller_and_the_tier() {
        let entries = vec![
            entry("app", Some("daily"), "dump", "2026-11-19T22:30:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-19T23:30:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-20T12:00:00Z"),
        ];
        // In Berlin 23:30Z is already Nov 20: two backups that day, one kept.
        let t = tiers("[tiers.daily]\ntimezone = \"Europe/Berlin\"\nkeep_daily = 2\n");
        let groups = plan(&t, &entries, at("2026-11-21T00:00:00Z"));
        let acts: Vec<Action> = groups[0].backups.iter().map(|d| d.action).collect();
        assert_eq!(acts, [Action::Keep, Action::Delete, Action::Keep]);
        assert_eq!(groups[0].rule, "keep_daily 2 (periods in Europe/Berlin)");
        // keep_within counts from the given clock.
        let t = tiers("[tiers.daily]\nkeep_within = \"1d\"\n");
        let acts = |now: &str| -> Vec<Action> {
            plan(&t, &entries, at(now))[0]
                .backups
                .iter()
                .map(|d| d.action)
                .collect()
        };
        assert_eq!(acts("2026-11-20T13:00:00Z"), [Action::Keep; 3]);
        assert_eq!(
            acts("2026-11-21T00:00:00Z"),
            [Action::Delete, Action::Delete, Action::Keep]
        );
    }

    #[test]
    fn backups_of_another_kind_are_kept() {
        let entries = vec![
            entry("app", Some("daily"), "base", "2026-11-18T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-19T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-20T02:00:00Z"),
        ];
        let t = tiers("[tiers.daily]\nkeep_last = 1\n");
        let groups = plan(&t, &entries, at("2026-11-21T00:00:00Z"));
        let acts: Vec<Action> = groups[0].backups.iter().map(|d| d.action).collect();
        assert_eq!(acts, [Action::Keep, Action::Delete, Action::Keep]);
        assert_eq!(
            groups[0].backups[0].reasons,
            ["kind base is not the tier's kind dump"]
        );
    }

    #[test]
    fn newest_of_each_source_and_tier_is_protected() {
        let entries = vec![
            entry("app", Some("daily"), "dump", "2026-11-20T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-19T02:00:00Z"),
            entry("app", None, "dump", "2026-11-21T02:00:00Z"),
            entry("crm", Some("daily"), "dump", "2026-11-01T02:00:00Z"),
        ];
        let p = protected(&entries);
        // app overall: #2; app in daily: #0; crm: #3 (both).
        assert_eq!(p.into_iter().collect::<Vec<_>>(), [0, 2, 3]);
    }

    #[test]
    fn newest_base_backup_is_protected_even_behind_newer_dumps() {
        let entries = vec![
            entry("app", None, "base", "2026-11-10T02:00:00Z"),
            entry("app", None, "base", "2026-11-03T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-20T02:00:00Z"),
        ];
        let p = protected(&entries);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), [0, 2]);
        // and a base tier's plan keeps the newest base whatever the policy
        let entries = vec![
            entry("app", Some("weekly"), "base", "2026-11-03T02:00:00Z"),
            entry("app", Some("weekly"), "base", "2026-11-10T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-20T02:00:00Z"),
        ];
        let t = tiers(
            "[tiers.weekly]\nkind = \"base\"\nkeep_within = \"1d\"\n[tiers.daily]\nkeep_last = 1\n",
        );
        let groups = plan(&t, &entries, at("2026-11-21T00:00:00Z"));
        let weekly = groups
            .iter()
            .find(|g| g.tier.as_deref() == Some("weekly"))
            .unwrap();
        let acts: Vec<Action> = weekly.backups.iter().map(|d| d.action).collect();
        assert_eq!(acts, [Action::Delete, Action::Keep]);
        assert_eq!(weekly.backups[1].reasons, ["newest of source"]);
    }
}

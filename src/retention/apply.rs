//! Applying a prune plan: deleting what it deletes, with the checks no
//! plan overrides.
//!
//! Deleting a backup removes its manifest first, then its data (see
//! [`crate::catalog`]): a prune killed halfway leaves leftovers, which the
//! next prune (or `cleanup`) removes, never a manifest without data.
//! [`apply`] refuses to delete the newest backup of each source (by any
//! tier, in its tier, of its kind) whatever the plan says.
//!
//! On an S3 bucket with Object Lock, a backup any of whose objects (its
//! manifest included) is still under retention is kept whole and reported
//! as `kept: object lock until T` ([`check_object_locks`]): deleting its
//! manifest would strand locked data, and deleting its data would break a
//! listed backup.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use super::tiers::{Action, Decision, Group};
use crate::catalog::{Entry, Repository};
use crate::error::{Error, Result};

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

/// Marks the planned deletions that S3 Object Lock retention forbids.
/// Returns whether the store enforces object lock at all (then WAL
/// deletions are checked too).
pub async fn check_object_locks(
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

#[cfg(test)]
mod tests {
    use super::super::tiers::plan;
    use super::super::tiers::tests::{at, entry, tiers};
    use super::*;

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

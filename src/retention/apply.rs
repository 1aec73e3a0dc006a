//! Applying a prune plan: deleting what it deletes, with the checks no
//! plan overrides.
//!
//! Deleting a backup removes its manifest first, then its data (see
//! [`crate::catalog`]): a prune killed halfway leaves leftovers, which the
//! next prune (or `cleanup`) removes, never a manifest without data.
//! [`apply`] refuses to delete the newest backup of each source (by any
//! tier, in its tier, of its kind) whatever the plan says, and a backup
//! that the chain of a backup still there names. Incremental base backups
//! go first, newest first, then the others oldest first (as pgBackRest's
//! expire deletes dependents first): a prune killed halfway never leaves
//! an incremental whose chain it broke.
//!
//! On an S3 bucket with Object Lock, a backup any of whose objects (its
//! manifest included) is still under retention is kept whole and reported
//! as `kept: object lock until T` ([`check_object_locks`]): deleting its
//! manifest would strand locked data, and deleting its data would break a
//! listed backup.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use super::tiers::{Action, Decision, Group, chain_of};
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

/// The order deletions go in: incrementals (a chain) newest first, then
/// the rest oldest first.
fn deletion_order(entries: &[Entry], a: &Decision, b: &Decision) -> std::cmp::Ordering {
    let full = |d: &Decision| chain_of(&entries[d.entry]).is_empty();
    match (full(a), full(b)) {
        (false, false) => b.started.cmp(&a.started),
        (true, true) => a.started.cmp(&b.started),
        (x, y) => x.cmp(&y),
    }
}

/// Deletes what `groups` plan to delete (see the module docs for the
/// order), except the protected newest backups and what a remaining
/// backup's chain needs; records the outcome in each decision. Returns
/// the first error met, after trying every deletion.
pub async fn apply(repo: &Repository, entries: &[Entry], groups: &mut [Group]) -> Option<Error> {
    let protected = protected(entries);
    let mut first_error = None;
    let mut order: Vec<&mut Decision> = groups
        .iter_mut()
        .flat_map(|g| g.backups.iter_mut())
        .filter(|d| d.action == Action::Delete)
        .collect();
    order.sort_by(|a, b| deletion_order(entries, a, b));
    let mut gone = BTreeSet::new();
    for d in order {
        if d.locked_until.is_some() {
            continue; // kept whole: see the module docs
        }
        if let Some(by) = needed_by(entries, &gone, d) {
            // the plan keeps what kept incrementals need; this one's
            // dependent is still there because deleting it failed
            d.error = Some(format!(
                "kept: incremental {by} needs it and is still there"
            ));
            continue;
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
            Ok(()) => {
                d.deleted = true;
                gone.insert(d.entry);
            }
            Err(e) => {
                d.error = Some(e.message.clone());
                first_error.get_or_insert(e.context(format!("deleting {} of {}", d.id, d.source)));
            }
        }
    }
    first_error
}

/// A backup still there (not in `gone`) whose chain names `d`.
fn needed_by<'a>(entries: &'a [Entry], gone: &BTreeSet<usize>, d: &Decision) -> Option<&'a str> {
    entries
        .iter()
        .enumerate()
        .filter(|(i, e)| *i != d.entry && !gone.contains(i) && e.summary().source == d.source)
        .find(|(_, e)| chain_of(e).contains(&d.id))
        .map(|(_, e)| e.summary().id.as_str())
}

/// A locked backup is kept whole, and so must be what its chain needs:
/// the planned deletions of those are marked locked as long.
fn lock_chains(entries: &[Entry], groups: &mut [Group]) {
    let mut locked: BTreeMap<(String, String), chrono::DateTime<Utc>> = BTreeMap::new();
    for d in groups.iter().flat_map(|g| g.backups.iter()) {
        if let Some(t) = d.locked_until {
            for id in chain_of(&entries[d.entry]) {
                let slot = locked.entry((d.source.clone(), id.clone())).or_insert(t);
                *slot = (*slot).max(t);
            }
        }
    }
    for d in groups
        .iter_mut()
        .flat_map(|g| g.backups.iter_mut())
        .filter(|d| d.action == Action::Delete)
    {
        if let Some(t) = locked.get(&(d.source.clone(), d.id.clone())) {
            d.locked_until = Some(d.locked_until.map_or(*t, |u| u.max(*t)));
        }
    }
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
    lock_chains(entries, groups);
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

    /// Issue 18 item 3: incrementals go before what their chain needs,
    /// newest first; what a remaining backup needs is never deleted; a
    /// locked incremental keeps its chain.
    #[test]
    fn chains_are_deleted_dependents_first_and_never_broken() {
        use super::super::tiers::tests::incremental;
        let f1 = entry("app", Some("weekly"), "base", "2026-11-01T02:00:00Z");
        let i1 = incremental(
            entry("app", Some("daily"), "base", "2026-11-02T02:00:00Z"),
            &[&f1],
        );
        let i2 = incremental(
            entry("app", Some("daily"), "base", "2026-11-03T02:00:00Z"),
            &[&f1, &i1],
        );
        let f0 = entry("app", Some("weekly"), "base", "2026-10-25T02:00:00Z");
        let f2 = entry("app", Some("weekly"), "base", "2026-11-08T02:00:00Z");
        let entries = vec![f2, i2, i1, f1, f0];
        let t = tiers(
            "[tiers.weekly]\nkind = \"base\"\nkeep_last = 1\n[tiers.daily]\nkind = \"base\"\nkeep_last = 1\n",
        );
        let mut groups = plan(&t, &entries, at("2026-11-11T00:00:00Z"));
        // as if every backup but F2 were to go
        for d in groups.iter_mut().flat_map(|g| g.backups.iter_mut()) {
            if d.entry != 0 {
                d.action = Action::Delete;
            }
        }
        let mut order: Vec<&Decision> = groups
            .iter()
            .flat_map(|g| g.backups.iter())
            .filter(|d| d.action == Action::Delete)
            .collect();
        order.sort_by(|a, b| deletion_order(&entries, a, b));
        let names: Vec<usize> = order.iter().map(|d| d.entry).collect();
        // I2, I1 (newest first), then the fulls oldest first
        assert_eq!(names, [1, 2, 4, 3]);

        // with I2 still there (its deletion failed), F1 and I1 stay
        fn find(groups: &[Group], i: usize) -> Decision {
            groups
                .iter()
                .flat_map(|g| g.backups.iter())
                .find(|d| d.entry == i)
                .unwrap()
                .clone()
        }
        let d = |i: usize| find(&groups, i);
        let gone = BTreeSet::new();
        assert_eq!(
            needed_by(&entries, &gone, &d(3)),
            Some(entries[1].summary().id.as_str())
        );
        assert_eq!(needed_by(&entries, &gone, &d(4)), None);
        let gone: BTreeSet<usize> = [1, 2].into();
        assert_eq!(needed_by(&entries, &gone, &d(3)), None);

        // a locked I2 locks its chain's deletions as long
        let until = at("2026-12-01T00:00:00Z");
        for g in groups.iter_mut() {
            for d in g.backups.iter_mut().filter(|d| d.entry == 1) {
                d.locked_until = Some(until);
            }
        }
        lock_chains(&entries, &mut groups);
        assert_eq!(find(&groups, 2).locked_until, Some(until));
        assert_eq!(find(&groups, 3).locked_until, Some(until));
        assert_eq!(find(&groups, 4).locked_until, None);
    }
}

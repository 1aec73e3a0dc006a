//! Which backups each tier's policy deletes: the backup half of
//! `strata prune`'s plan, as a pure function of the configured tiers, the
//! catalog and a clock.
//!
//! [`plan`]: for each configured tier with a kind prune handles, the
//! backups recorded with that tier (`summary.tier`) go through
//! [`policy::plan`] with the tier's policy and zone, as of the given
//! clock. A backup is deleted only when its tier's policy says so:
//! - backups with no tier, or with a tier the config does not define,
//!   are never deleted (the config says nothing about them);
//! - tiers of kinds prune does not handle yet (see
//!   [`crate::tier::TierKind::prunable`]) are left alone, as are backups
//!   whose kind is not their tier's kind;
//! - a pinned backup (`strata backup --label L --keep-for D`, or
//!   `--keep-until T`: `summary.keep_until`) is kept until its date
//!   whatever its tier says; after it, one without a tier is deleted (the
//!   reason says whose pin ran out) and one with a tier goes back to its
//!   tier's policy (issue 19 item 4). A labelled backup without a keep
//!   date is like any other: its tier decides, and without one it is kept;
//! - the newest backup of each source is never deleted: retention keeps
//!   it, and [`super::apply::apply`] checks again before every delete;
//! - a backup that a kept incremental base backup needs (its plain
//!   `chain`, readable without the identity) is kept whatever its own
//!   tier says, with the reason "needed by incremental X" (issue 18
//!   item 3): a backup is only as complete as its chain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::policy::{self, Candidate};
use crate::catalog::{BackupId, Entry, Summary};
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
    /// Why it is kept (empty for deletions decided by a tier's policy;
    /// a pinned backup's deletion says whose pin ran out).
    pub reasons: Vec<String>,
    /// Set by [`super::apply::apply`]: whether it was deleted.
    pub deleted: bool,
    /// Set by [`super::apply::apply`]: why deleting it failed or was refused.
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
    /// The group of pinned backups (`strata backup --label … --keep-for`):
    /// kept until their keep date, whatever their tier.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    pub backups: Vec<Decision>,
}

impl Candidate<BackupId> {
    /// A catalog backup, timed by when it started: the moment its data
    /// describes (`pg_dump` takes its snapshot at the start), as restic
    /// times a snapshot.
    pub fn from_summary(summary: &Summary) -> Candidate<BackupId> {
        Candidate {
            item: summary.id.clone(),
            time: summary.started,
            source: summary.source.clone(),
        }
    }
}

/// Plans retention for every backup in `entries` (as
/// [`crate::catalog::Repository::backups`] lists them) as of `now`.
pub fn plan(tiers: &BTreeMap<String, Tier>, entries: &[Entry], now: DateTime<Utc>) -> Vec<Group> {
    // Oldest first: retention ranks equal times by input order, later
    // counting as newer, which is how the catalog is ordered.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (entries[a].summary(), entries[b].summary());
        (sa.started, &sa.id).cmp(&(sb.started, &sb.id))
    });
    let mut by_tier: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    let mut pinned = Vec::new();
    for &i in &order {
        let s = entries[i].summary();
        if let Some(until) = s.keep_until {
            let label = s.label.as_deref().unwrap_or("-");
            let when = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            if now < until {
                let why = format!("pinned by label {label} until {when}");
                pinned.push(decision(&entries[i], i, Action::Keep, vec![why]));
                continue;
            }
            if s.tier.is_none() {
                let why = format!("pin of label {label} expired at {when}");
                pinned.push(decision(&entries[i], i, Action::Delete, vec![why]));
                continue;
            }
            // a tiered backup whose pin ran out: its tier decides again
        }
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
                pinned: false,
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
                pinned: false,
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
        let p = policy::plan(&def.policy, def.tz(), candidates, now);
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
            pinned: false,
        });
    }
    if !pinned.is_empty() {
        pinned.sort_by_key(|d| d.started);
        groups.push(Group {
            tier: None,
            rule: "pinned by a label: kept until the keep date, whatever the tier; then deleted (untiered) or left to the tier".into(),
            backups: pinned,
            pinned: true,
        });
    }
    if let Some(indices) = by_tier.get(&None) {
        let why = "no tier: prune never deletes backups without a tier";
        groups.push(Group {
            tier: None,
            rule: why.into(),
            backups: keep_all(indices, why),
            pinned: false,
        });
    }
    keep_chains(entries, &mut groups);
    groups
}

/// The chain of an incremental base backup (`entries[i]`): the ids of the
/// backups it needs, from its plain manifest part.
pub(crate) fn chain_of(e: &Entry) -> &[String] {
    e.file.wal.as_ref().map_or(&[], |w| w.chain.as_slice())
}

/// Turns the deletion of every backup a kept incremental needs into a
/// keep, saying which incremental needs it (the newest, when several do).
/// One pass suffices: a chain names every ancestor, not only the parent.
fn keep_chains(entries: &[Entry], groups: &mut [Group]) {
    let mut needed: BTreeMap<(&str, &str), (DateTime<Utc>, &str, usize)> = BTreeMap::new();
    let kept = groups
        .iter()
        .flat_map(|g| g.backups.iter())
        .filter(|d| d.action == Action::Keep);
    for d in kept {
        let e = &entries[d.entry];
        for id in chain_of(e) {
            let n = needed
                .entry((e.summary().source.as_str(), id.as_str()))
                .or_insert((d.started, e.summary().id.as_str(), 0));
            if d.started > n.0 {
                (n.0, n.1) = (d.started, e.summary().id.as_str());
            }
            n.2 += 1;
        }
    }
    for d in groups
        .iter_mut()
        .flat_map(|g| g.backups.iter_mut())
        .filter(|d| d.action == Action::Delete)
    {
        if let Some((_, by, count)) = needed.get(&(d.source.as_str(), d.id.as_str())) {
            d.action = Action::Keep;
            d.reasons = vec![match count {
                1 => format!("needed by incremental {by}"),
                n => format!("needed by incremental {by} (and {} more)", n - 1),
            }];
        }
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::{BackupId, ManifestFile, Summary};
    use crate::config::{Config, SourceKind};
    use std::path::Path;
    use std::sync::Arc;

    pub(crate) fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(crate) fn entry(source: &str, tier: Option<&str>, kind: &str, started: &str) -> Entry {
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
                    label: None,
                    note: None,
                    keep_until: None,
                },
                sealed: String::new(),
                wal: None,
            }),
        }
    }

    pub(crate) fn tiers(extra: &str) -> BTreeMap<String, Tier> {
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

    fn pinned(mut e: Entry, tier: Option<&str>, until: &str) -> Entry {
        let mut summary = e.file.summary.clone();
        summary.label = Some("deploy-v3".into());
        summary.keep_until = Some(at(until));
        summary.tier = tier.map(Into::into);
        e.file = Arc::new(ManifestFile {
            summary,
            sealed: String::new(),
            wal: None,
        });
        e
    }

    #[test]
    fn a_pin_keeps_a_backup_until_its_date_then_lets_it_go() {
        // issue 19 item 4: kept until the keep date whatever the tier says,
        // deleted after (untiered) or given back to its tier
        let entries = vec![
            pinned(
                entry("app", None, "dump", "2026-11-10T02:00:00Z"),
                None,
                "2026-11-17T02:00:00Z",
            ),
            pinned(
                entry("app", None, "dump", "2026-11-11T02:00:00Z"),
                Some("daily"),
                "2026-11-18T02:00:00Z",
            ),
            entry("app", Some("daily"), "dump", "2026-11-19T02:00:00Z"),
            entry("app", Some("daily"), "dump", "2026-11-20T02:00:00Z"),
        ];
        let t = tiers("[tiers.daily]\nkeep_last = 1\n");
        let before = plan(&t, &entries, at("2026-11-16T00:00:00Z"));
        let pins = before.iter().find(|g| g.pinned).expect("a pinned group");
        assert_eq!(
            pins.backups
                .iter()
                .map(|d| (d.action, d.reasons.clone()))
                .collect::<Vec<_>>(),
            [
                (
                    Action::Keep,
                    vec!["pinned by label deploy-v3 until 2026-11-17T02:00:00Z".to_string()]
                ),
                (
                    Action::Keep,
                    vec!["pinned by label deploy-v3 until 2026-11-18T02:00:00Z".to_string()]
                ),
            ]
        );
        let after = plan(&t, &entries, at("2026-11-21T00:00:00Z"));
        let pins = after.iter().find(|g| g.pinned).expect("a pinned group");
        assert_eq!(pins.backups.len(), 1);
        assert_eq!(pins.backups[0].action, Action::Delete);
        assert_eq!(
            pins.backups[0].reasons,
            ["pin of label deploy-v3 expired at 2026-11-17T02:00:00Z"]
        );
        // the tiered one is its tier's again: keep_last 1 deletes it
        let daily = after
            .iter()
            .find(|g| g.tier.as_deref() == Some("daily"))
            .unwrap();
        assert_eq!(
            daily
                .backups
                .iter()
                .map(|d| (d.started.format("%d").to_string(), d.action))
                .collect::<Vec<_>>(),
            [
                ("11".into(), Action::Delete),
                ("19".into(), Action::Delete),
                ("20".into(), Action::Keep)
            ]
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

    /// `e` made an incremental base backup on `chain` (oldest first).
    pub(crate) fn incremental(mut e: Entry, chain: &[&Entry]) -> Entry {
        let file = ManifestFile {
            summary: e.file.summary.clone(),
            sealed: String::new(),
            wal: Some(crate::catalog::manifest::PlainWalRange {
                timeline: 1,
                start_lsn: "0/2000028".into(),
                stop_lsn: "0/2000100".into(),
                wal_segment_size: 16 << 20,
                chain: chain.iter().map(|c| c.summary().id.to_string()).collect(),
                system_identifier: None,
                method: None,
            }),
        };
        e.file = Arc::new(file);
        e
    }

    /// Issue 18 item 3: prune never deletes a backup a kept incremental
    /// needs, whatever the backup's own tier says, and says why.
    #[test]
    fn what_a_kept_incremental_needs_is_kept() {
        let f1 = entry("app", Some("weekly"), "base", "2026-11-01T02:00:00Z");
        let i1 = incremental(
            entry("app", Some("daily"), "base", "2026-11-02T02:00:00Z"),
            &[&f1],
        );
        let i2 = incremental(
            entry("app", Some("daily"), "base", "2026-11-03T02:00:00Z"),
            &[&f1, &i1],
        );
        let f2 = entry("app", Some("weekly"), "base", "2026-11-08T02:00:00Z");
        let i3 = incremental(
            entry("app", Some("daily"), "base", "2026-11-09T02:00:00Z"),
            &[&f2],
        );
        let i4 = incremental(
            entry("app", Some("daily"), "base", "2026-11-10T02:00:00Z"),
            &[&f2, &i3],
        );
        let ids: Vec<String> = [&f1, &i1, &i2, &f2, &i3, &i4]
            .iter()
            .map(|e| e.summary().id.to_string())
            .collect();
        let entries = vec![i4, i3, f2, i2, i1, f1];
        let decided = |daily: u32| {
            let t = tiers(&format!(
                "[tiers.weekly]\nkind = \"base\"\nkeep_last = 1\n[tiers.daily]\nkind = \"base\"\nkeep_last = {daily}\n"
            ));
            let groups = plan(&t, &entries, at("2026-11-11T00:00:00Z"));
            let mut out: Vec<(String, Action, Vec<String>)> = groups
                .iter()
                .flat_map(|g| g.backups.iter())
                .map(|d| (d.id.clone(), d.action, d.reasons.clone()))
                .collect();
            out.sort_by_key(|d| ids.iter().position(|i| *i == d.0));
            out
        };
        // the newest chain only: the old chain goes whole
        let acts: Vec<Action> = decided(2).into_iter().map(|d| d.1).collect();
        use Action::{Delete, Keep};
        assert_eq!(acts, [Delete, Delete, Delete, Keep, Keep, Keep]);
        // I2 kept by its tier: the full and I1 before it are kept for it
        let d = decided(3);
        let acts: Vec<Action> = d.iter().map(|d| d.1).collect();
        assert_eq!(acts, [Keep, Keep, Keep, Keep, Keep, Keep]);
        let why = format!("needed by incremental {}", ids[2]);
        assert_eq!(d[0].2, std::slice::from_ref(&why), "the old full");
        assert_eq!(d[1].2, [why], "I1");
        // F2 is kept by its tier (newest) and needed: its tier's reason stays
        assert!(d[3].2.iter().any(|r| r == "keep_last 1"), "{:?}", d[3].2);
    }
}

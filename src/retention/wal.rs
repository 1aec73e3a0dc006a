//! The WAL half of `strata prune`: for every PostgreSQL source with a WAL
//! archive, which archived files the WAL tier's window and the kept base
//! backups still need ([`super::wal_cut`] decides; this module gathers
//! its inputs and applies its plan).
//!
//! Inputs come from plain data only (object listing, manifest summaries
//! and their plain WAL range), so a backup host holding only the public
//! key can prune. Whenever an input is missing the archive is kept whole
//! and the report says why: no WAL tier covers the source, the tier has
//! no `keep_within`, a kept base backup records no WAL range.
//!
//! Applying runs after the base backups were deleted, on the base backups
//! that are really gone (a base whose deletion failed or that an object
//! lock kept still has its WAL). Files go oldest first (in small batches
//! deleted at once), each object before its record (a record without its
//! object is what an interrupted push leaves too, and `wal push`
//! completes it); the first failure or object lock stops the source's
//! deletions, so what remains is always the kept archive and, at worst,
//! part of a batch below it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::catalog::{Entry, Repository};
use crate::config::{Config, SourceKind};
use crate::error::Result;
use crate::retention::wal_cut::{self, Archived, KeptBase, WalAction, WalPlan, WalRange};
use crate::sources::postgres::wal::archive::WalArchive;
use crate::sources::postgres::wal::{Lsn, SegmentSize, Timeline, WalFile};
use crate::tier::TierKind;

/// What prune decided and did about one source's WAL archive.
#[derive(Debug, Clone, Serialize)]
pub struct WalPrune {
    pub source: String,
    /// The WAL tier whose window applies, if any.
    pub tier: Option<String>,
    /// The rule, for people: the window, or why the archive is kept whole.
    pub rule: String,
    /// The base backup a restore to the window's start would use.
    pub anchor: Option<String>,
    /// The earliest time a point-in-time restore can reach once this prune
    /// has run: the window's start, or later when no base backup kept
    /// after it was taken before that start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restorable_from: Option<DateTime<Utc>>,
    /// The tiers keep too few base backups to cover the WAL window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub ranges: Vec<WalRange>,
    pub kept: usize,
    pub to_delete: usize,
    pub deleted: usize,
    /// Deletion stopped at an object under S3 Object Lock until then.
    pub locked_until: Option<DateTime<Utc>>,
    pub error: Option<String>,
    #[serde(skip)]
    plan: WalPlan,
    #[serde(skip)]
    size: SegmentSize,
    /// Keys present for each file (object and/or record).
    #[serde(skip)]
    keys: BTreeMap<WalFile, Vec<String>>,
}

/// Plans every configured PostgreSQL source's WAL archive. `gone` holds
/// the indices (into `entries`) of backups deleted by this prune (or, in
/// a dry run, that it would delete).
pub async fn plan(
    cfg: &Config,
    repo: &Repository,
    entries: &[Entry],
    gone: &BTreeSet<usize>,
    now: DateTime<Utc>,
) -> Result<Vec<WalPrune>> {
    let mut out = Vec::new();
    for src in cfg.sources.values() {
        if src.kind != SourceKind::Postgres {
            continue;
        }
        if let Some(p) = plan_source(cfg, repo, entries, gone, &src.name, now).await? {
            out.push(p);
        }
    }
    Ok(out)
}

async fn plan_source(
    cfg: &Config,
    repo: &Repository,
    entries: &[Entry],
    gone: &BTreeSet<usize>,
    source: &str,
    now: DateTime<Utc>,
) -> Result<Option<WalPrune>> {
    let archive = WalArchive::new(repo, source);
    let mut keys: BTreeMap<WalFile, Vec<String>> = BTreeMap::new();
    let mut modified: BTreeMap<WalFile, DateTime<Utc>> = BTreeMap::new();
    for o in repo.storage().list(&archive.prefix()).await? {
        let Some(name) = o.key.rsplit('/').next() else {
            continue;
        };
        let (name, is_record) = match name.strip_suffix(".json") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let Ok(f) = name.parse::<WalFile>() else {
            continue; // archive.json and anything not ours
        };
        let expected = if is_record {
            archive.record_key(f)
        } else {
            archive.object_key(f)
        };
        if o.key != expected {
            continue;
        }
        if let Some(m) = o.modified {
            let e = modified.entry(f).or_insert(m);
            *e = (*e).max(m);
        }
        keys.entry(f).or_default().push(o.key);
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let files: Vec<Archived> = keys
        .keys()
        .map(|&f| Archived {
            file: f,
            modified: modified.get(&f).copied(),
        })
        .collect();

    let mut result = WalPrune {
        source: source.to_string(),
        tier: None,
        rule: String::new(),
        anchor: None,
        restorable_from: None,
        warning: None,
        ranges: vec![],
        kept: 0,
        to_delete: 0,
        deleted: 0,
        locked_until: None,
        error: None,
        plan: WalPlan::keep_all(&[], ""),
        size: SegmentSize::DEFAULT,
        keys,
    };
    let keep_all = |mut r: WalPrune, why: String| -> Option<WalPrune> {
        r.plan = WalPlan::keep_all(&files, &why);
        r.rule = why;
        r.finish_plan();
        Some(r)
    };

    // The WAL tier(s) covering the source; with several, the longest
    // window wins.
    let tiers: Vec<_> = cfg
        .tiers
        .values()
        .filter(|t| t.kind == TierKind::Wal && t.sources.iter().any(|s| s == source))
        .collect();
    let Some(first) = tiers.first() else {
        return Ok(keep_all(
            result,
            format!("no wal tier covers {source}: its WAL is kept"),
        ));
    };
    let Some((tier, window)) = crate::tier::wal_window(&cfg.tiers, source) else {
        result.tier = Some(first.name.clone());
        return Ok(keep_all(
            result,
            format!(
                "tier {} sets no keep_within (the only rule for WAL): WAL is kept",
                first.name
            ),
        ));
    };
    result.tier = Some(tier.name.clone());
    let window_text = duration_text(window);

    let mut bases = Vec::new();
    let mut size: Option<u64> = None;
    for (i, e) in entries.iter().enumerate() {
        let s = e.summary();
        if s.source != source || s.kind != "base" || gone.contains(&i) {
            continue;
        }
        let Some(w) = &e.file.wal else {
            return Ok(keep_all(
                result,
                format!(
                    "base backup {} records no plain WAL range (taken by an older strata): WAL is kept",
                    s.id
                ),
            ));
        };
        let parsed = (
            w.start_lsn.parse::<Lsn>(),
            w.stop_lsn.parse::<Lsn>(),
            SegmentSize::new(w.wal_segment_size),
        );
        let (Ok(start), Ok(stop), Some(_)) = parsed else {
            return Ok(keep_all(
                result,
                format!(
                    "base backup {} records an unreadable WAL range: WAL is kept",
                    s.id
                ),
            ));
        };
        if size.is_some_and(|z| z != w.wal_segment_size) {
            return Ok(keep_all(
                result,
                "the kept base backups disagree on the WAL segment size: WAL is kept".into(),
            ));
        }
        size = Some(w.wal_segment_size);
        bases.push(KeptBase {
            id: s.id.to_string(),
            timeline: Timeline(w.timeline),
            start,
            stop,
            finished: s.finished,
        });
    }
    let size = size
        .and_then(SegmentSize::new)
        .unwrap_or(SegmentSize::DEFAULT);
    let window_start = now - window;
    let show = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let (from, covered) = restorable_from(&bases, window_start);
    result.restorable_from = Some(from);
    result.rule = format!(
        "keep_within {window_text}: restores to any time from {} on, and every kept base backup, keep their WAL",
        show(from)
    );
    if !covered && !bases.is_empty() {
        result.warning = Some(format!(
            "the WAL window of tier {} starts at {}, but the oldest base backup kept ends at {}: no restore can reach a time between them; keep base backups at least as long as WAL (a base tier's keep_within of {window_text} or more, or more keep_last)",
            tier.name,
            show(window_start),
            show(from)
        ));
    }
    result.size = size;
    result.plan = wal_cut::plan(&files, &bases, window_start, &window_text, size);
    result.anchor = result.plan.anchor.clone();
    result.finish_plan();
    Ok(Some(result))
}

/// What is restorable once `bases` are the base backups left (the ones a
/// prune deletes are not among them): from the window's start when one
/// of them was finished by then, else only from the oldest one's end.
/// The second value says whether the window is covered.
fn restorable_from(bases: &[KeptBase], window_start: DateTime<Utc>) -> (DateTime<Utc>, bool) {
    if bases.iter().any(|b| b.finished <= window_start) {
        return (window_start, true);
    }
    let oldest = bases.iter().map(|b| b.finished).min();
    (oldest.unwrap_or(window_start).max(window_start), false)
}

/// `7d`, `36h`, `30m`, `90s`: the largest unit (up to days) that divides
/// it, as a config would write it.
fn duration_text(d: Duration) -> String {
    let s = d.num_seconds();
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

impl WalPrune {
    fn finish_plan(&mut self) {
        self.ranges = self.plan.ranges();
        self.kept = self.plan.count(WalAction::Keep);
        self.to_delete = self.plan.count(WalAction::Delete);
    }

    /// Deletes what the plan deletes, oldest first, stopping at the first
    /// failure or locked object. Returns the error, if any.
    ///
    /// Files go in batches of `DELETE_BATCH` in position order, the
    /// files of a batch at once (a first prune of a long archive on S3
    /// is otherwise one round trip per object); a batch starts only once
    /// the previous one is wholly deleted. Every file deleted is one the
    /// plan says no restore needs, so an interruption inside a batch
    /// leaves only harmless holes below what is kept.
    pub async fn apply(
        &mut self,
        repo: &Repository,
        lock_aware: bool,
    ) -> Option<crate::error::Error> {
        use futures::future::join_all;
        let storage = repo.storage();
        let deletions = self.plan.deletions(self.size);
        for batch in deletions.chunks(DELETE_BATCH) {
            // Object before record: see the module docs.
            let keys = |records: bool| -> Vec<(WalFile, String)> {
                batch
                    .iter()
                    .flat_map(|f| {
                        self.keys
                            .get(f)
                            .into_iter()
                            .flatten()
                            .filter(move |k| k.ends_with(".json") == records)
                            .map(move |k| (*f, k.clone()))
                    })
                    .collect()
            };
            let (objects, records) = (keys(false), keys(true));
            if lock_aware {
                let heads = join_all(
                    objects
                        .iter()
                        .chain(&records)
                        .map(|(_, k)| storage.locked_until(k)),
                )
                .await;
                let now = Utc::now();
                let mut until: Option<DateTime<Utc>> = None;
                for h in heads {
                    match h {
                        Ok(Some(t)) if t > now => until = Some(until.map_or(t, |u| u.max(t))),
                        Ok(_) => {}
                        Err(e) => {
                            let e = crate::error::Error::from(e);
                            self.error = Some(e.message.clone());
                            return Some(e.context(format!("WAL of {}", self.source)));
                        }
                    }
                }
                if until.is_some() {
                    // Locked files are pushed in order, so everything after
                    // is locked too: stop here, the archive stays contiguous.
                    self.locked_until = until;
                    return None;
                }
            }
            for group in [objects, records] {
                let done = join_all(group.iter().map(|(_, k)| storage.delete(k))).await;
                if let Some((i, e)) = done
                    .into_iter()
                    .enumerate()
                    .find_map(|(i, r)| r.err().map(|e| (i, e)))
                {
                    let e = crate::error::Error::from(e);
                    self.error = Some(e.message.clone());
                    return Some(
                        e.context(format!("deleting WAL {} of {}", group[i].0, self.source)),
                    );
                }
            }
            self.deleted += batch.len();
        }
        None
    }
}

/// WAL files deleted at once (see [`WalPrune::apply`]).
const DELETE_BATCH: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13 item 7: with base `keep_last 2` and WAL `keep_within 3m`
    /// prune announced "restores to any time from <window start> on" and
    /// then deleted the base backups covering that time.
    #[test]
    fn the_stated_window_is_the_one_left_after_the_prune() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let base = |id: &str, finished: &str| KeptBase {
            id: id.into(),
            timeline: Timeline(1),
            start: Lsn(0),
            stop: Lsn(1),
            finished: t(finished),
        };
        let window_start = t("2026-12-06T13:45:17Z");
        // the two kept bases are younger than the window's start
        let kept = [
            base("b3", "2026-12-06T13:46:00Z"),
            base("b4", "2026-12-06T13:47:30Z"),
        ];
        assert_eq!(
            restorable_from(&kept, window_start),
            (t("2026-12-06T13:46:00Z"), false)
        );
        // one kept base finished before the start covers the window
        let kept = [base("b1", "2026-12-06T13:40:00Z"), kept[0].clone()];
        assert_eq!(restorable_from(&kept, window_start), (window_start, true));
    }

    #[test]
    fn window_text_uses_the_largest_whole_unit() {
        assert_eq!(duration_text(Duration::days(7)), "7d");
        assert_eq!(duration_text(Duration::days(30)), "30d");
        assert_eq!(duration_text(Duration::hours(36)), "36h");
        assert_eq!(duration_text(Duration::minutes(30)), "30m");
        assert_eq!(duration_text(Duration::seconds(90)), "90s");
    }
}

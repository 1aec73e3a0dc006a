//! Tiers: named classes of backups. A tier says what kind of backup it
//! takes (`dump`, `base`, `snapshot`, `wal`, `drill`), of which sources,
//! when ([`crate::scheduler::cron`]), and how long they are kept
//! ([`crate::retention`]). Every backup records its tier in its manifest
//! summary; `strata prune` applies each tier's policy to the backups
//! recorded with it, and to no others.
//!
//! This module is the tier model only. Tiers are written as `[tiers.NAME]`
//! tables in the config or in plan files it includes
//! (`include = ["schedules/standard.toml"]`); `config::tiers` parses and
//! checks them once, so later code gets typed tiers.
//!
//! Which sources a tier covers (the rule plans rely on, since a plan file
//! cannot know a deployment's sources):
//! - no `sources` key: every configured source whose kind fits the tier's
//!   kind (see [`TierKind::fits`]), now and as sources are added;
//! - `sources = ["a", "b"]`: exactly those, each of which must exist and
//!   fit; `sources = []` switches the tier off.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::SourceKind;
use crate::retention::Policy;
use crate::scheduler::cron::Schedule;

/// What a tier produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TierKind {
    /// Logical backups: `pg_dump` (later: vector-store exports).
    Dump,
    /// Full physical backups (`pg_basebackup`).
    Base,
    /// Point-in-time snapshots (Redis RDB).
    Snapshot,
    /// Continuous WAL archiving.
    Wal,
    /// Recovery drills: restore and check, keep the report.
    Drill,
}

impl TierKind {
    pub const ALL: [TierKind; 5] = [
        TierKind::Dump,
        TierKind::Base,
        TierKind::Snapshot,
        TierKind::Wal,
        TierKind::Drill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TierKind::Dump => "dump",
            TierKind::Base => "base",
            TierKind::Snapshot => "snapshot",
            TierKind::Wal => "wal",
            TierKind::Drill => "drill",
        }
    }

    /// Whether `strata backup --tier` can run a tier of this kind yet.
    pub fn runnable(self) -> bool {
        matches!(self, TierKind::Dump | TierKind::Base | TierKind::Snapshot)
    }

    /// Whether `strata prune` applies this kind's retention to its
    /// backups: dumps and snapshots stand alone; base backups are pruned
    /// by their tier's policy and the WAL archive is then cut only below
    /// what the kept base backups and the WAL tier's window need
    /// ([`crate::retention::wal`]). A `wal` tier has no backups in the
    /// catalog (its `keep_within` applies to the archive); drills keep
    /// their reports.
    pub fn prunable(self) -> bool {
        matches!(self, TierKind::Dump | TierKind::Snapshot | TierKind::Base)
    }

    /// Whether a tier of this kind backs up a source of kind `source`;
    /// a tier without `sources` covers every source that fits.
    pub fn fits(self, source: SourceKind) -> bool {
        // Matching on the source kind makes a new source kind decide,
        // here, which tiers cover it.
        match source {
            SourceKind::Postgres => matches!(
                self,
                TierKind::Dump | TierKind::Base | TierKind::Wal | TierKind::Drill
            ),
            // A drill restores every kind of source.
            SourceKind::Redis => matches!(self, TierKind::Snapshot | TierKind::Drill),
            // A vector-store export is the daily "dump" of the standard plan.
            SourceKind::Chroma => matches!(self, TierKind::Dump | TierKind::Drill),
        }
    }

    /// The source kinds that fit, for messages.
    pub(crate) fn fitting(self) -> String {
        let kinds: Vec<&str> = [SourceKind::Postgres, SourceKind::Redis, SourceKind::Chroma]
            .into_iter()
            .filter(|k| self.fits(*k))
            .map(SourceKind::as_str)
            .collect();
        if kinds.is_empty() {
            "no source kind strata supports yet".into()
        } else {
            format!("{} sources", kinds.join(" and "))
        }
    }
}

/// A checked tier.
#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub kind: TierKind,
    /// When it runs; `None` for tiers run by hand or continuous (`wal`).
    pub schedule: Option<Schedule>,
    /// The zone its schedule and retention periods are counted in;
    /// `None` means UTC.
    pub timezone: Option<Tz>,
    /// The sources it covers, resolved (see the module docs), in order.
    pub sources: Vec<String>,
    /// Whether `sources` was written, rather than derived from the kind.
    pub sources_listed: bool,
    pub policy: Policy,
    /// The file that defines it (the config or an included plan).
    pub defined_in: PathBuf,
    /// `object_lock`: S3 Object Lock on every object its backups upload.
    pub object_lock: Option<TierLock>,
    /// `copy_to`: repositories (by name) each backup is copied to once
    /// committed; for a `wal` tier, where `wal push` pushes each file too.
    pub copy_to: Vec<String>,
    /// Base tiers with `incremental = true`: `Some(max_chain)`, the most
    /// backups a restore applies (the full and the incrementals on it);
    /// `None`: every backup is full.
    pub incremental: Option<u32>,
}

/// A tier's `object_lock`: the mode, and how long each backup's objects
/// stay locked (the tier's retention period, see [`lock_period`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLock {
    pub mode: crate::storage::LockMode,
    pub period: chrono::Duration,
}

impl TierLock {
    /// The lock for a backup starting at `now`.
    pub fn at(&self, now: chrono::DateTime<chrono::Utc>) -> crate::storage::ObjectLock {
        crate::storage::ObjectLock {
            mode: self.mode,
            // a period too long for the calendar locks as long as there is
            retain_until: now
                .checked_add_signed(self.period)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        }
    }
}

/// How long a policy may keep a backup, the object lock period: the
/// longest of `keep_within` and the GFS horizons (`keep_hourly N`: N hours,
/// `keep_daily N`: N days, `keep_weekly N`: N weeks, `keep_monthly N`:
/// N × 31 days, `keep_yearly N`: N × 366 days). `keep_last` alone has no
/// horizon (it depends on how often backups run): `None`.
/// A horizon too long for a [`chrono::Duration`] (billions of months or
/// years) gives [`chrono::TimeDelta::MAX`] (issue 13: `Duration::days`
/// panicked on it).
pub fn lock_period(p: &Policy) -> Option<chrono::Duration> {
    use chrono::Duration;
    let n = |v: Option<u32>| i64::from(v.unwrap_or(0));
    let days = |d: i64| Duration::try_days(d).unwrap_or(Duration::MAX);
    [
        p.keep_within.unwrap_or(Duration::zero()),
        Duration::try_hours(n(p.keep_hourly)).unwrap_or(Duration::MAX),
        days(n(p.keep_daily)),
        Duration::try_weeks(n(p.keep_weekly)).unwrap_or(Duration::MAX),
        days(31 * n(p.keep_monthly)),
        days(366 * n(p.keep_yearly)),
    ]
    .into_iter()
    .max()
    .filter(|d| *d > Duration::zero())
}

/// The WAL window of `source`: the longest `keep_within` of the `wal`
/// tiers covering it, with its tier (prune deletes WAL only below what a
/// restore to the window's start needs; none: the archive is kept whole).
pub fn wal_window<'a>(
    tiers: &'a BTreeMap<String, Tier>,
    source: &str,
) -> Option<(&'a Tier, chrono::Duration)> {
    tiers
        .values()
        .filter(|t| t.kind == TierKind::Wal && t.sources.iter().any(|s| s == source))
        .filter_map(|t| {
            t.policy
                .keep_within
                .filter(|d| *d > chrono::Duration::zero())
                .map(|d| (t, d))
        })
        .max_by_key(|(_, d)| *d)
}

/// The `object_lock` of the WAL tier covering `source`, if any (with
/// several, the longest lock): `strata wal push` writes its WAL objects
/// under it.
pub fn wal_lock<'a>(
    tiers: &'a BTreeMap<String, Tier>,
    source: &str,
) -> Option<(&'a Tier, TierLock)> {
    tiers
        .values()
        .filter(|t| t.kind == TierKind::Wal && t.sources.iter().any(|s| s == source))
        .filter_map(|t| t.object_lock.map(|l| (t, l)))
        .max_by_key(|(_, l)| l.period)
}

impl Tier {
    pub fn tz(&self) -> Tz {
        self.timezone.unwrap_or(Tz::UTC)
    }
}

//! Tiers: named classes of backups. A tier says what kind of backup it
//! takes (`dump`, `base`, `snapshot`, `wal`, `drill`), of which sources,
//! when ([`crate::schedule`]), and how long they are kept
//! ([`crate::retention`]). Every backup records its tier in its manifest
//! summary; `strata prune` applies each tier's policy to the backups
//! recorded with it, and to no others.
//!
//! Tiers are written as `[tiers.NAME]` tables in the config or in plan
//! files it includes (`include = ["schedules/standard.toml"]`). This
//! module parses and checks them once, so later code gets typed tiers.
//!
//! Which sources a tier covers (the rule plans rely on, since a plan file
//! cannot know a deployment's sources):
//! - no `sources` key: every configured source whose kind fits the tier's
//!   kind (see [`TierKind::fits`]), now and as sources are added;
//! - `sources = ["a", "b"]`: exactly those, each of which must exist and
//!   fit; `sources = []` switches the tier off.
//!
//! A tier defined in the config replaces an included tier of the same
//! name as a whole (no key-by-key merge: what the config says is the
//! whole tier).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{Source, SourceKind};
use crate::error::{Error, Result};
use crate::retention::{Policy, RawPolicy};
use crate::schedule::Schedule;

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
    /// (`commands::prune::wal`). A `wal` tier has no backups in the
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
    fn fitting(self) -> String {
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

/// Refuses `object_lock` on a repository that cannot lock objects.
pub(crate) fn check_object_lock(
    tiers: &BTreeMap<String, Tier>,
    repository: &crate::config::RepositoryLocation,
) -> Result<()> {
    if !matches!(repository, crate::config::RepositoryLocation::Local(_)) {
        return Ok(());
    }
    if let Some(t) = tiers.values().find(|t| t.object_lock.is_some()) {
        return Err(Error::usage(format!(
            "invalid config {}: tiers.{}.object_lock: object lock needs an S3 repository; [repository] url is a local directory",
            t.defined_in.display(),
            t.name
        ))
        .hint("remove object_lock, or store the repository in an S3 bucket created with Object Lock enabled"));
    }
    Ok(())
}

impl Tier {
    pub fn tz(&self) -> Tz {
        self.timezone.unwrap_or(Tz::UTC)
    }
}

/// `[tiers.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    kind: Option<Spanned<TierKind>>,
    schedule: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    sources: Option<Spanned<Vec<Spanned<String>>>>,
    keep_last: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    keep_hourly: Option<Spanned<i64>>,
    keep_daily: Option<Spanned<i64>>,
    keep_weekly: Option<Spanned<i64>>,
    keep_monthly: Option<Spanned<i64>>,
    keep_yearly: Option<Spanned<i64>>,
    object_lock: Option<Spanned<String>>,
}

/// An included plan file: tiers only. The other top-level keys are
/// accepted by the parser only to be refused with a message that says
/// where they belong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    tiers: BTreeMap<String, Spanned<RawTier>>,
    repository: Option<Spanned<toml::Value>>,
    encryption: Option<Spanned<toml::Value>>,
    compression: Option<Spanned<toml::Value>>,
    sources: Option<Spanned<toml::Value>>,
    include: Option<Spanned<toml::Value>>,
}

/// A file's path and text, for error messages that name file and line.
struct FileText {
    path: PathBuf,
    text: String,
}

impl FileText {
    fn bad(&self, span: std::ops::Range<usize>, key: &str, why: impl std::fmt::Display) -> Error {
        Error::usage(format!(
            "invalid config {}, line {}: {key}: {why}",
            self.path.display(),
            crate::config::line_of(&self.text, span.start)
        ))
    }
}

/// The tiers of a config: those of its `include` files, then its own
/// `[tiers.*]`, which replace included tiers of the same name.
pub(crate) fn load(
    config_path: &Path,
    config_text: &str,
    include: Option<Spanned<Vec<Spanned<String>>>>,
    inline: BTreeMap<String, Spanned<RawTier>>,
    sources: &BTreeMap<String, Source>,
) -> Result<BTreeMap<String, Tier>> {
    let mut files = vec![FileText {
        path: config_path.to_path_buf(),
        text: config_text.to_string(),
    }];
    let base_dir = config_path.parent().unwrap_or(Path::new("."));
    // name -> (raw tier, index into `files`)
    let mut raw: BTreeMap<String, (Spanned<RawTier>, usize)> = BTreeMap::new();
    for entry in include.map(Spanned::into_inner).unwrap_or_default() {
        let span = entry.span();
        let path = base_dir.join(entry.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            files[0]
                .bad(
                    span.clone(),
                    "include",
                    format!("cannot read {}: {e}", path.display()),
                )
                .hint("include paths are relative to the config file's directory")
        })?;
        let plan: RawPlan = toml::from_str(&text).map_err(|e| {
            let mut msg = format!("invalid config {}", path.display());
            if let Some(s) = e.span() {
                msg.push_str(&format!(
                    ", line {}",
                    crate::config::line_of(&text, s.start)
                ));
            }
            Error::usage(format!("{msg}: {}", e.message().trim()))
        })?;
        let file = FileText { path, text };
        for (key, v) in [
            ("repository", &plan.repository),
            ("encryption", &plan.encryption),
            ("compression", &plan.compression),
            ("sources", &plan.sources),
            ("include", &plan.include),
        ] {
            if let Some(v) = v {
                return Err(file.bad(
                    v.span(),
                    key,
                    format!(
                        "an included plan may define only [tiers.*]; put {key} in {}",
                        config_path.display()
                    ),
                ));
            }
        }
        let index = files.len();
        for (name, tier) in plan.tiers {
            if let Some((_, other)) = raw.get(&name) {
                return Err(file
                    .bad(
                        tier.span(),
                        &format!("tiers.{name}"),
                        format!("already defined by {}", files[*other].path.display()),
                    )
                    .hint(format!(
                        "define tier {name} in one included plan, or in {} to replace both",
                        config_path.display()
                    )));
            }
            raw.insert(name, (tier, index));
        }
        files.push(file);
    }
    for (name, tier) in inline {
        raw.insert(name, (tier, 0));
    }
    raw.into_iter()
        .map(|(name, (tier, file))| {
            let t = resolve(&files[file], &name, tier, sources)?;
            Ok((name, t))
        })
        .collect()
}

fn resolve(
    file: &FileText,
    name: &str,
    raw: Spanned<RawTier>,
    sources: &BTreeMap<String, Source>,
) -> Result<Tier> {
    let key = |k: &str| format!("tiers.{name}.{k}");
    let table_span = raw.span();
    let raw = raw.into_inner();
    if !crate::config::valid_name(name) {
        return Err(file.bad(
            table_span,
            &format!("tiers.{name}"),
            "a tier name may use only letters, digits, '-' and '_'",
        ));
    }
    let kind = raw.kind.as_ref().map_or(TierKind::Dump, |k| *k.get_ref());
    let schedule = raw
        .schedule
        .as_ref()
        .map(|s| {
            Schedule::parse(s.get_ref()).map_err(|why| file.bad(s.span(), &key("schedule"), why))
        })
        .transpose()?;
    let timezone = raw
        .timezone
        .as_ref()
        .map(|z| {
            z.get_ref().parse::<Tz>().map_err(|_| {
                file.bad(
                    z.span(),
                    &key("timezone"),
                    format!(
                        "{:?} is not a time zone; use an IANA name such as \"Europe/Berlin\" or \"UTC\"",
                        z.get_ref()
                    ),
                )
            })
        })
        .transpose()?;

    let sources_listed = raw.sources.is_some();
    let resolved = match &raw.sources {
        None => sources
            .values()
            .filter(|s| kind.fits(s.kind))
            .map(|s| s.name.clone())
            .collect(),
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for s in list.get_ref() {
                let n = s.get_ref();
                let Some(src) = sources.get(n) else {
                    let known: Vec<&str> = sources.keys().map(String::as_str).collect();
                    return Err(file.bad(
                        s.span(),
                        &key("sources"),
                        format!(
                            "no source named {n:?} ({})",
                            if known.is_empty() {
                                "no source is configured".to_string()
                            } else {
                                format!("configured sources: {}", known.join(", "))
                            }
                        ),
                    ));
                };
                if !kind.fits(src.kind) {
                    return Err(file.bad(
                        s.span(),
                        &key("sources"),
                        format!(
                            "a {} tier backs up {}; {n} is a {} source",
                            kind.as_str(),
                            kind.fitting(),
                            src.kind.as_str()
                        ),
                    ));
                }
                if out.contains(n) {
                    return Err(file.bad(
                        s.span(),
                        &key("sources"),
                        format!("{n} is listed twice"),
                    ));
                }
                out.push(n.clone());
            }
            out
        }
    };

    let count = |v: &Option<Spanned<i64>>| v.as_ref().map(|n| *n.get_ref());
    let policy_raw = RawPolicy {
        keep_last: count(&raw.keep_last),
        keep_within: raw.keep_within.as_ref().map(|s| s.get_ref().clone()),
        keep_hourly: count(&raw.keep_hourly),
        keep_daily: count(&raw.keep_daily),
        keep_weekly: count(&raw.keep_weekly),
        keep_monthly: count(&raw.keep_monthly),
        keep_yearly: count(&raw.keep_yearly),
    };
    let policy = Policy::parse(&policy_raw).map_err(|why| {
        // The message starts with the key it is about (or the first of
        // several): point at that key's line.
        let first = why.split([',', ':']).next().unwrap_or("");
        let span = match first {
            "keep_last" => raw.keep_last.as_ref().map(Spanned::span),
            "keep_within" => raw.keep_within.as_ref().map(Spanned::span),
            "keep_hourly" => raw.keep_hourly.as_ref().map(Spanned::span),
            "keep_daily" => raw.keep_daily.as_ref().map(Spanned::span),
            "keep_weekly" => raw.keep_weekly.as_ref().map(Spanned::span),
            "keep_monthly" => raw.keep_monthly.as_ref().map(Spanned::span),
            "keep_yearly" => raw.keep_yearly.as_ref().map(Spanned::span),
            _ => None,
        };
        let (k, rest) = why.split_once(": ").unwrap_or(("", why.as_str()));
        file.bad(span.unwrap_or(table_span.clone()), &key(k), rest)
    })?;

    let object_lock = match &raw.object_lock {
        None => None,
        Some(v) => {
            let mode = crate::storage::LockMode::parse(v.get_ref()).ok_or_else(|| {
                file.bad(
                    v.span(),
                    &key("object_lock"),
                    format!(
                        "{:?} is not a lock mode; use \"governance\" or \"compliance\"",
                        v.get_ref()
                    ),
                )
            })?;
            let period = lock_period(&policy).ok_or_else(|| {
                file.bad(
                    v.span(),
                    &key("object_lock"),
                    "the lock lasts the tier's retention period, and this tier has none: \
                     add keep_within or a keep_hourly/daily/weekly/monthly/yearly rule",
                )
            })?;
            if period == chrono::TimeDelta::MAX {
                return Err(file.bad(
                    v.span(),
                    &key("object_lock"),
                    "the lock lasts the tier's retention period, and this tier's is too long \
                     to count (billions of months or years): shorten its keep_* rules",
                ));
            }
            Some(TierLock { mode, period })
        }
    };

    Ok(Tier {
        name: name.to_string(),
        kind,
        schedule,
        timezone,
        sources: resolved,
        sources_listed,
        policy,
        defined_in: file.path.clone(),
        object_lock,
    })
}

#[cfg(test)]
mod object_lock_tests {
    use super::*;
    use chrono::Duration;

    fn tiers(extra: &str) -> crate::error::Result<BTreeMap<String, Tier>> {
        let text = format!(
            "[repository]\nurl = \"s3://b/p\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
             [sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/app\"\n{extra}"
        );
        crate::config::Config::parse(Path::new("/t/strata.toml"), &text).map(|c| c.tiers)
    }

    #[test]
    fn lock_period_is_the_longest_retention_horizon() {
        let p = |raw: RawPolicy| lock_period(&Policy::parse(&raw).unwrap());
        assert_eq!(
            p(RawPolicy {
                keep_within: Some("30d".into()),
                ..RawPolicy::default()
            }),
            Some(Duration::days(30))
        );
        assert_eq!(
            p(RawPolicy {
                keep_daily: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(3),
                ..RawPolicy::default()
            }),
            Some(Duration::days(93))
        );
        assert_eq!(
            p(RawPolicy {
                keep_hourly: Some(24),
                keep_yearly: Some(2),
                ..RawPolicy::default()
            }),
            Some(Duration::days(732))
        );
        // keep_last has no horizon
        assert_eq!(
            p(RawPolicy {
                keep_last: Some(3),
                ..RawPolicy::default()
            }),
            None
        );
    }

    /// issue 13 (fuzzing the config): `keep_yearly` or `keep_monthly`
    /// near u32::MAX overflowed chrono in `lock_period` and a huge
    /// `keep_within` overflowed the retain-until date: config parsing (or
    /// the backup) panicked. Too long a lock is a config error naming the
    /// key; a representable one ends at the latest instant there is.
    #[test]
    fn huge_retention_horizons_do_not_panic() {
        for extra in [
            "[tiers.d]\nkeep_yearly = 4000000000\nobject_lock = \"governance\"\n",
            "[tiers.d]\nkeep_monthly = 4294967295\nobject_lock = \"compliance\"\n",
        ] {
            let e = tiers(extra).unwrap_err();
            assert!(
                e.message.contains("tiers.d.object_lock") && e.message.contains("too long"),
                "{extra}: {}",
                e.message
            );
        }
        let t = tiers("[tiers.d]\nkeep_within = \"1000000000w\"\nobject_lock = \"governance\"\n")
            .unwrap();
        let l = t["d"].object_lock.unwrap();
        let now = chrono::Utc::now();
        assert_eq!(
            l.at(now).retain_until,
            chrono::DateTime::<chrono::Utc>::MAX_UTC
        );
        // the largest counts that fit still give a period
        assert!(
            lock_period(&Policy {
                keep_hourly: Some(u32::MAX),
                keep_daily: Some(u32::MAX),
                keep_weekly: Some(u32::MAX),
                ..Policy::default()
            })
            .is_some_and(|d| d == Duration::weeks(i64::from(u32::MAX)))
        );
    }

    #[test]
    fn object_lock_key_parses_and_wal_tiers_lock_their_sources() {
        let t = tiers(
            "[tiers.daily]\nkeep_daily = 7\nobject_lock = \"compliance\"\n\
             [tiers.wal]\nkind = \"wal\"\nkeep_within = \"7d\"\nobject_lock = \"governance\"\n\
             [tiers.plain]\nkeep_last = 2\n",
        )
        .unwrap();
        assert_eq!(
            t["daily"].object_lock,
            Some(TierLock {
                mode: crate::storage::LockMode::Compliance,
                period: Duration::days(7)
            })
        );
        assert_eq!(t["plain"].object_lock, None);
        let (w, l) = wal_lock(&t, "app").unwrap();
        assert_eq!(w.name, "wal");
        assert_eq!(l.mode, crate::storage::LockMode::Governance);
        assert!(wal_lock(&t, "other").is_none());
        let now = chrono::Utc::now();
        assert_eq!(l.at(now).retain_until, now + Duration::days(7));

        let e = tiers("[tiers.d]\nkeep_last = 2\nobject_lock = \"governance\"\n").unwrap_err();
        assert!(e.message.contains("tiers.d.object_lock"), "{}", e.message);
        assert!(e.message.contains("has none"), "{}", e.message);
        let e =
            tiers("[tiers.d]\nkeep_within = \"1d\"\nobject_lock = \"Governance\"\n").unwrap_err();
        assert!(e.message.contains("is not a lock mode"), "{}", e.message);
    }
}

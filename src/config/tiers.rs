//! Parsing `[tiers.*]` tables and the plan files a config includes into
//! typed [`Tier`]s, checked once (names, kinds against sources, schedules,
//! retention keys, object lock against the repository), so later code gets
//! typed tiers. The tier model itself is in [`crate::tier`]; which sources
//! a tier covers is documented there.
//!
//! A tier defined in the config replaces an included tier of the same
//! name as a whole (no key-by-key merge: what the config says is the
//! whole tier).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::error::{Error, Result};
use crate::retention::{Policy, RawPolicy};
use crate::scheduler::cron::Schedule;
use crate::tier::{Tier, TierKind, TierLock, lock_period};

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
    /// Repositories each backup of the tier is copied to once committed
    /// (a `wal` tier: where `wal push` pushes too); checked against
    /// `[repositories.*]` by the config.
    copy_to: Option<Spanned<Vec<Spanned<String>>>>,
    incremental: Option<Spanned<bool>>,
    max_chain: Option<Spanned<i64>>,
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
            super::line_of(&self.text, span.start)
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
                msg.push_str(&format!(", line {}", super::line_of(&text, s.start)));
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
    if !super::valid_name(name) {
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

    let mut copy_to: Vec<String> = Vec::new();
    for r in raw.copy_to.iter().flat_map(|l| l.get_ref()) {
        if copy_to.contains(r.get_ref()) {
            return Err(file.bad(
                r.span(),
                &key("copy_to"),
                format!("{} is listed twice", r.get_ref()),
            ));
        }
        copy_to.push(r.get_ref().clone());
    }
    let incremental = incremental(file, name, kind, &raw)?;

    Ok(Tier {
        copy_to,
        name: name.to_string(),
        kind,
        schedule,
        timezone,
        sources: resolved,
        sources_listed,
        policy,
        defined_in: file.path.clone(),
        object_lock,
        incremental,
    })
}

/// `incremental = true` (base tiers only) and its `max_chain` (2 to
/// 1000, default [`DEFAULT_MAX_CHAIN`](crate::sources::postgres::base::DEFAULT_MAX_CHAIN)).
fn incremental(file: &FileText, name: &str, kind: TierKind, raw: &RawTier) -> Result<Option<u32>> {
    let key = |k: &str| format!("tiers.{name}.{k}");
    let on = raw.incremental.as_ref().is_some_and(|v| *v.get_ref());
    if let Some(v) = &raw.incremental
        && *v.get_ref()
        && kind != TierKind::Base
    {
        return Err(file.bad(
            v.span(),
            &key("incremental"),
            format!(
                "only base backups are incremental; this tier is of kind {}",
                kind.as_str()
            ),
        ));
    }
    let max_chain = match &raw.max_chain {
        None => crate::sources::postgres::base::DEFAULT_MAX_CHAIN,
        Some(m) if !on => {
            return Err(file.bad(
                m.span(),
                &key("max_chain"),
                "max_chain limits chains of incremental backups: set incremental = true too",
            ));
        }
        Some(m) => match u32::try_from(*m.get_ref()) {
            Ok(n) if (2..=1000).contains(&n) => n,
            _ => {
                return Err(file.bad(
                    m.span(),
                    &key("max_chain"),
                    format!(
                        "{} is not between 2 and 1000 (the most backups a restore applies: the full and the incrementals on it)",
                        m.get_ref()
                    ),
                ));
            }
        },
    };
    Ok(on.then_some(max_chain))
}

#[cfg(test)]
mod tier_tests {
    use super::*;
    use crate::config::{Config, RestoreTo, SourceKind};
    use crate::tier::TierKind;
    use chrono::Duration;
    use url::Url;

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    /// A config with two postgres sources, `app` and `crm`, then `extra`.
    fn text(extra: &str) -> String {
        format!(
            "[repository]\nurl = \"file:///var/backups/strata\"\n\n[encryption]\nrecipients = [\"{KEY}\"]\n\n\
             [sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/app\"\n\n\
             [sources.crm]\nkind = \"postgres\"\nurl = \"postgres://u@h/crm\"\n{extra}"
        )
    }

    /// The line `needle` is on, 1-based.
    fn line(text: &str, needle: &str) -> usize {
        text[..text.find(needle).expect(needle)]
            .matches('\n')
            .count()
            + 1
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/strata/strata.toml"), text)
    }

    #[test]
    fn backup_from_a_standby() {
        let c = parse(&text(
            "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\n\
             backup_from = \"postgres://replica:5433/db\"\nbackup_from_max_lag = \"16MB\"\n",
        ))
        .unwrap();
        let db = &c.sources["db"];
        assert_eq!(
            db.backup_from.as_ref().unwrap().as_str(),
            "postgres://replica:5433/db"
        );
        assert_eq!(db.backup_from_max_lag, 16 << 20);
        assert_eq!(
            c.sources["app"].backup_from_max_lag,
            crate::sources::postgres::base::DEFAULT_MAX_LAG
        );
        for (extra, why) in [
            (
                "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nbackup_from = \"redis://r\"\n",
                "sources.db.backup_from: the standby's postgres://",
            ),
            (
                "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nbackup_from_max_lag = \"1MB\"\n",
                "sources.db.backup_from_max_lag: it limits the lag of backup_from, which is not set",
            ),
            (
                "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nbackup_from = \"postgres://r/db\"\nbackup_from_max_lag = \"lots\"\n",
                "sources.db.backup_from_max_lag:",
            ),
            (
                "\n[sources.c]\nkind = \"redis\"\nurl = \"redis://h\"\nbackup_from = \"postgres://r/db\"\n",
                "sources.c.backup_from: base backups from a standby are for postgres sources",
            ),
        ] {
            let e = parse(&text(extra)).unwrap_err();
            assert!(e.message.contains(why), "{}", e.message);
        }
    }

    #[test]
    fn archive_wait() {
        let c = parse(&text(
            "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\narchive_wait = \"5m\"\n",
        ))
        .unwrap();
        assert_eq!(c.sources["db"].archive_wait.as_secs(), 300);
        assert_eq!(
            c.sources["app"].archive_wait,
            crate::config::DEFAULT_ARCHIVE_WAIT
        );
        for (extra, why) in [
            (
                "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\narchive_wait = \"0s\"\n",
                "sources.db.archive_wait: at least 1s",
            ),
            (
                "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\narchive_wait = \"soon\"\n",
                "sources.db.archive_wait:",
            ),
            (
                "\n[sources.c]\nkind = \"redis\"\nurl = \"redis://h\"\narchive_wait = \"1m\"\n",
                "sources.c.archive_wait: archive_wait bounds a base backup's wait",
            ),
        ] {
            let e = parse(&text(extra)).unwrap_err();
            assert!(e.message.contains(why), "{}", e.message);
        }
    }

    #[test]
    fn incremental_base_tiers() {
        let c = parse(&text(
            "\n[tiers.daily]\nkind = \"base\"\nincremental = true\nmax_chain = 4\n\
             [tiers.nightly]\nkind = \"base\"\nincremental = true\n[tiers.weekly]\nkind = \"base\"\n",
        ))
        .unwrap();
        assert_eq!(c.tiers["daily"].incremental, Some(4));
        assert_eq!(
            c.tiers["nightly"].incremental,
            Some(crate::sources::postgres::base::DEFAULT_MAX_CHAIN)
        );
        assert_eq!(c.tiers["weekly"].incremental, None);
        for (extra, needle, why) in [
            (
                "\n[tiers.d]\nkind = \"dump\"\nincremental = true\n",
                "incremental = true",
                "tiers.d.incremental: only base backups are incremental; this tier is of kind dump",
            ),
            (
                "\n[tiers.d]\nkind = \"base\"\nmax_chain = 3\n",
                "max_chain",
                "tiers.d.max_chain: max_chain limits chains of incremental backups",
            ),
            (
                "\n[tiers.d]\nkind = \"base\"\nincremental = true\nmax_chain = 1\n",
                "max_chain",
                "tiers.d.max_chain: 1 is not between 2 and 1000",
            ),
        ] {
            let t = text(extra);
            let e = parse(&t).unwrap_err();
            assert!(e.message.contains(why), "{}", e.message);
            assert!(
                e.message.contains(&format!("line {}", line(&t, needle))),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn tier_with_every_key() {
        let t = text(
            "\n[tiers.daily]\nkind = \"dump\"\nschedule = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n\
             sources = [\"crm\"]\nkeep_within = \"30d\"\nkeep_last = 3\nkeep_daily = 7\n",
        );
        let c = parse(&t).unwrap();
        let d = &c.tiers["daily"];
        assert_eq!(d.kind, TierKind::Dump);
        assert_eq!(d.schedule.as_ref().unwrap().as_str(), "0 2 * * *");
        assert_eq!(d.tz(), chrono_tz::Europe::Berlin);
        assert_eq!(d.sources, ["crm"]);
        assert!(d.sources_listed);
        assert_eq!(d.policy.keep_within, Some(Duration::days(30)));
        assert_eq!(d.policy.keep_last, Some(3));
        assert_eq!(d.policy.keep_daily, Some(7));
        assert_eq!(d.defined_in, Path::new("/etc/strata/strata.toml"));
        assert!(c.tier("daily").is_ok());
        let e = c.tier("weekly").unwrap_err();
        assert!(e.hint.unwrap().contains("configured tiers: daily"));
    }

    #[test]
    fn defaults_dump_utc_and_every_fitting_source() {
        let c = parse(&text("\n[tiers.daily]\nkeep_last = 2\n")).unwrap();
        let d = &c.tiers["daily"];
        assert_eq!(d.kind, TierKind::Dump);
        assert!(d.schedule.is_none());
        assert_eq!(d.tz(), chrono_tz::UTC);
        assert_eq!(d.sources, ["app", "crm"]);
        assert!(!d.sources_listed);
        // Without a Redis source, a snapshot tier covers nothing.
        let c = parse(&text("\n[tiers.hourly]\nkind = \"snapshot\"\n")).unwrap();
        assert!(c.tiers["hourly"].sources.is_empty());
        // An empty list switches a tier off.
        let c = parse(&text("\n[tiers.daily]\nsources = []\n")).unwrap();
        assert!(c.tiers["daily"].sources.is_empty());
        assert!(c.tiers["daily"].policy.is_empty());
    }

    #[test]
    fn every_kind_is_accepted() {
        for k in TierKind::ALL {
            let c = parse(&text(&format!("\n[tiers.t]\nkind = \"{}\"\n", k.as_str()))).unwrap();
            assert_eq!(c.tiers["t"].kind, k);
        }
        let t = text("\n[tiers.t]\nkind = \"incremental\"\n");
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("incremental"), "{e}");
        assert!(
            e.message
                .contains(&format!("line {}", line(&t, "kind = \"incr"))),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        for (extra, needle, key, why) in [
            (
                "\n[tiers.daily]\nschedule = \"0 2 * *\"\n",
                "schedule",
                "tiers.daily.schedule",
                "has 4 fields",
            ),
            (
                "\n[tiers.daily]\nschedule = \"0 2 L * *\"\n",
                "schedule",
                "tiers.daily.schedule",
                "day-of-month",
            ),
            (
                "\n[tiers.daily]\ntimezone = \"Mars/Olympus\"\n",
                "timezone",
                "tiers.daily.timezone",
                "not a time zone",
            ),
            (
                "\n[tiers.daily]\nsources = [\"app\",\n  \"nope\"]\n",
                "\"nope\"",
                "tiers.daily.sources",
                "configured sources: app, crm",
            ),
            (
                "\n[tiers.daily]\nsources = [\"app\", \"app\"]\n",
                "\"app\", \"app\"",
                "tiers.daily.sources",
                "listed twice",
            ),
            (
                "\n[tiers.daily]\nkeep_last = 2\nkeep_daily = -1\n",
                "keep_daily",
                "tiers.daily.keep_daily",
                "whole number",
            ),
            (
                "\n[tiers.daily]\nkeep_within = \"3y\"\n",
                "keep_within",
                "tiers.daily.keep_within",
                "not a duration",
            ),
            (
                "\n[tiers.daily]\nkeep_last = 0\n",
                "keep_last",
                "tiers.daily.keep_last",
                "all zero",
            ),
            (
                "\n[tiers.daily]\nkeep_dayly = 7\n",
                "keep_dayly",
                "keep_dayly",
                "unknown field",
            ),
            (
                "\n[tiers.\"bad name\"]\nkeep_last = 1\n",
                "keep_last",
                "tiers.bad name",
                "letters, digits",
            ),
        ] {
            let t = text(extra);
            let e = parse(&t).unwrap_err();
            let m = &e.message;
            assert!(m.contains("/etc/strata/strata.toml"), "{extra}: {m}");
            assert!(m.contains(key), "{extra}: {m}");
            assert!(m.contains(why), "{extra}: {m}");
            if needle != "keep_last" || !extra.contains("bad name") {
                assert!(
                    m.contains(&format!("line {},", line(&t, needle)))
                        || m.contains(&format!("line {}:", line(&t, needle)))
                        || m.contains(&format!("line {} (", line(&t, needle))),
                    "{extra}: {m}"
                );
            }
        }
    }

    /// Writes `files` (relative path, text) under a temp dir, then parses
    /// `strata.toml` there.
    fn with_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config>) {
        let dir = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let r = Config::load(&dir.path().join("strata.toml"));
        (dir, r)
    }

    fn with_include(includes: &str, extra: &str) -> String {
        // `include` is a top-level key: it must come before any table.
        format!("include = [{includes}]\n{}", text(extra))
    }

    #[test]
    fn include_loads_tiers_relative_to_the_config() {
        let plan = "[tiers.daily]\nkind = \"dump\"\nschedule = \"0 2 * * *\"\nkeep_within = \"30d\"\n\n\
                    [tiers.weekly]\nkind = \"base\"\nschedule = \"0 3 * * 0\"\nkeep_within = \"90d\"\n";
        let (dir, c) = with_files(&[
            ("plans/p.toml", plan),
            ("strata.toml", &with_include("\"plans/p.toml\"", "")),
        ]);
        let c = c.unwrap();
        assert_eq!(c.tiers.len(), 2);
        assert_eq!(c.tiers["daily"].sources, ["app", "crm"]);
        assert_eq!(c.tiers["weekly"].kind, TierKind::Base);
        assert_eq!(
            c.tiers["weekly"].defined_in,
            dir.path().join("plans/p.toml")
        );
    }

    #[test]
    fn inline_tier_replaces_the_included_one() {
        let plan = "[tiers.daily]\nschedule = \"0 2 * * *\"\nkeep_within = \"30d\"\n";
        let (dir, c) = with_files(&[
            ("p.toml", plan),
            (
                "strata.toml",
                &with_include(
                    "\"p.toml\"",
                    "\n[tiers.daily]\nsources = [\"app\"]\nkeep_last = 2\n",
                ),
            ),
        ]);
        let d = &c.unwrap().tiers["daily"];
        assert_eq!(d.sources, ["app"]);
        assert_eq!(d.policy.keep_last, Some(2));
        // Replaced whole: nothing of the plan's tier is left.
        assert!(d.schedule.is_none());
        assert!(d.policy.keep_within.is_none());
        assert_eq!(d.defined_in, dir.path().join("strata.toml"));
    }

    #[test]
    fn included_plan_may_define_only_tiers() {
        for (key, body) in [
            ("repository", "[repository]\nurl = \"file:///x\"\n"),
            ("encryption", "[encryption]\nrecipients = []\n"),
            (
                "sources",
                "[sources.x]\nkind = \"postgres\"\nurl = \"postgres://h/x\"\n",
            ),
            ("include", "include = [\"other.toml\"]\n"),
        ] {
            // `body` starts on line 4; a top-level key must precede tables.
            let plan = format!("# a plan\n\n\n{body}\n[tiers.daily]\nkeep_last = 1\n");
            let (dir, c) = with_files(&[
                ("p.toml", &plan),
                ("strata.toml", &with_include("\"p.toml\"", "")),
            ]);
            let e = c.unwrap_err();
            let m = &e.message;
            assert!(
                m.contains(&dir.path().join("p.toml").display().to_string()),
                "{m}"
            );
            assert!(
                m.contains(&format!("line 4: {key}: an included plan may define only")),
                "{m}"
            );
        }
    }

    #[test]
    fn include_errors() {
        // Missing file: the config's line and key.
        let (_d, c) = with_files(&[("strata.toml", &with_include("\"nope.toml\"", ""))]);
        let e = c.unwrap_err();
        assert!(
            e.message
                .contains("strata.toml, line 1: include: cannot read")
                && e.message.contains("nope.toml"),
            "{e}"
        );
        // A bad key in the plan: the plan's file and line.
        let (_d, c) = with_files(&[
            (
                "p.toml",
                "# plan\n[tiers.daily]\nkeep_last = 1\nschedule = \"0 25 * * *\"\n",
            ),
            ("strata.toml", &with_include("\"p.toml\"", "")),
        ]);
        let e = c.unwrap_err();
        assert!(
            e.message.contains("p.toml, line 4: tiers.daily.schedule"),
            "{e}"
        );
        // A plan naming an unknown source.
        let (_d, c) = with_files(&[
            ("p.toml", "[tiers.daily]\nsources = [\"redis\"]\n"),
            ("strata.toml", &with_include("\"p.toml\"", "")),
        ]);
        let e = c.unwrap_err();
        assert!(
            e.message
                .contains("p.toml, line 2: tiers.daily.sources: no source named \"redis\""),
            "{e}"
        );
        // The same tier in two plans is ambiguous.
        let (_d, c) = with_files(&[
            ("a.toml", "[tiers.daily]\nkeep_last = 1\n"),
            ("b.toml", "\n[tiers.daily]\nkeep_last = 2\n"),
            ("strata.toml", &with_include("\"a.toml\", \"b.toml\"", "")),
        ]);
        let e = c.unwrap_err();
        assert!(
            e.message
                .contains("b.toml, line 2: tiers.daily: already defined by"),
            "{e}"
        );
        assert!(e.message.contains("a.toml"), "{e}");
    }

    #[test]
    fn redis_sources_fit_snapshot_tiers() {
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://:pw@h:6379\"\n\n[tiers.hourly]\nkind = \"snapshot\"\n\n[tiers.daily]\n",
        );
        let c = parse(&t).unwrap();
        assert_eq!(c.sources["cache"].kind, SourceKind::Redis);
        assert_eq!(c.tiers["hourly"].sources, ["cache"]);
        assert_eq!(c.tiers["daily"].sources, ["app", "crm"]);
        let t = text("\n[sources.cache]\nkind = \"redis\"\nurl = \"postgres://h/db\"\n");
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.cache.url: a redis source needs redis://",
                line(&t, "url = \"postgres://h/db")
            )),
            "{e}"
        );
        let t = text("\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h:6379/2\"\n");
        assert!(parse(&t).unwrap_err().message.contains("every database"));
        // issue 17 item 1: rediss:// with its TLS parameters; files by absolute path.
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"rediss://u:p@h:6380?cacert=/etc/ca.pem&sni=db\"\n",
        );
        assert!(parse(&t).unwrap().sources["cache"].url.scheme() == "rediss");
        let t = text("\n[sources.cache]\nkind = \"redis\"\nurl = \"rediss://h?cacert=ca.pem\"\n");
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.cache.url: cacert=ca.pem: give the file by absolute path",
                line(&t, "url = \"rediss://h?cacert=ca.pem")
            )),
            "{e}"
        );
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\n[tiers.d]\nkind = \"dump\"\nsources = [\"cache\"]\n",
        );
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("cache is a redis source"), "{e}");
    }

    #[test]
    fn verify_queries_are_for_postgres_sources() {
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\nverify_queries = [\"SELECT 1\"]\n",
        );
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.cache.verify_queries: verify_queries are SQL",
                line(&t, "verify_queries = ")
            )),
            "{e}"
        );
        let t = text(
            "\n[sources.vec]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nverify_queries = [\"SELECT 1\", \"SELECT 2\"]\n",
        );
        assert_eq!(parse(&t).unwrap().sources["vec"].verify_queries.len(), 2);
    }

    #[test]
    fn restore_to_fits_the_source_kind() {
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\nrestore_to = \"redis://standby:6380\"\n\
             [sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nrestore_to = \"restored/db\"\n",
        );
        let c = parse(&t).unwrap();
        assert_eq!(
            c.sources["cache"].restore_to,
            Some(RestoreTo::Server(
                Url::parse("redis://standby:6380").unwrap()
            ))
        );
        match &c.sources["db"].restore_to {
            Some(RestoreTo::Dir(d)) => {
                assert!(d.ends_with("restored/db") && d.is_absolute(), "{d:?}")
            }
            other => panic!("{other:?}"),
        }
        let t = text(
            "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nrestore_to = \"postgres://other/db\"\n",
        );
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.db.restore_to: a postgres source comes back as a data directory",
                line(&t, "restore_to = ")
            )),
            "{e}"
        );
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\nrestore_to = \"/var/lib/redis\"\n",
        );
        assert!(
            parse(&t)
                .unwrap_err()
                .message
                .contains("sources.cache.restore_to: not a URL")
        );
    }

    #[test]
    fn source_must_fit_the_tier_kind() {
        let t = text("\n[tiers.hourly]\nkind = \"snapshot\"\nsources = [\"app\"]\n");
        let e = parse(&t).unwrap_err();
        assert!(
            e.message
                .contains("tiers.hourly.sources: a snapshot tier backs up redis sources")
                && e.message.contains("app is a postgres source"),
            "{e}"
        );
    }

    #[test]
    fn the_standard_plan_loads() {
        let plan = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schedules/standard.toml"
        ))
        .unwrap();
        let (_d, c) = with_files(&[
            ("schedules/standard.toml", &plan),
            (
                "strata.toml",
                &with_include("\"schedules/standard.toml\"", ""),
            ),
        ]);
        let c = c.unwrap();
        let kinds: Vec<(&str, TierKind)> =
            c.tiers.iter().map(|(n, t)| (n.as_str(), t.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("daily", TierKind::Dump),
                ("drill", TierKind::Drill),
                ("hourly", TierKind::Snapshot),
                ("incremental", TierKind::Base),
                ("wal", TierKind::Wal),
                ("weekly", TierKind::Base),
            ]
        );
        let within = |n: &str| c.tiers[n].policy.keep_within;
        // issue 18 item 3: daily incrementals beside the weekly full
        assert_eq!(
            c.tiers["incremental"].incremental,
            Some(crate::sources::postgres::base::DEFAULT_MAX_CHAIN)
        );
        assert_eq!(within("incremental"), Some(Duration::days(30)));
        assert_eq!(c.tiers["weekly"].incremental, None);
        assert_eq!(within("wal"), Some(Duration::days(7)));
        assert_eq!(within("hourly"), Some(Duration::hours(24)));
        assert_eq!(within("daily"), Some(Duration::days(30)));
        assert_eq!(within("weekly"), Some(Duration::days(90)));
        assert!(c.tiers["wal"].schedule.is_none());
        assert_eq!(c.tiers["daily"].sources, ["app", "crm"]);
        assert!(c.tiers["hourly"].sources.is_empty());
        assert_eq!(
            c.tiers["drill"].schedule.as_ref().unwrap().as_str(),
            "0 4 1 * *"
        );
    }
}

#[cfg(test)]
mod object_lock_tests {
    use super::*;
    use crate::tier::{lock_period, wal_lock};
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

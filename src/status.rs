//! What `strata status` and `strata metrics` report: per source and tier,
//! the last successful backup and whether it is overdue; stored sizes; the
//! WAL archive's newest segment; leftovers.
//!
//! [`summarise`] and [`is_stale`] are pure (the clock is passed in);
//! [`gather`] reads the repository. A backup is *stale* when its tier has a
//! schedule and at least two scheduled runs have come and gone since it
//! started: one missed run may still be running or retrying, two are a
//! problem. A tier with no schedule is run by hand and is never stale.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::catalog::{Repository, Summary};
use crate::config::Config;
use crate::error::Result;
use crate::scheduler::cron::Schedule;
use crate::sources::postgres::wal::archive::WAL_PREFIX;
use crate::sources::postgres::wal::{Lsn, SegmentName, SegmentSize, Timeline};
use crate::tier::Tier;

/// The last successful backup of a source in a tier.
#[derive(Debug, Clone, Serialize)]
pub struct Last {
    pub id: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub age_seconds: i64,
    pub duration_seconds: f64,
    pub stored_bytes: u64,
}

/// One source in one tier (or with no tier: `tier` is `None`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub source: String,
    pub tier: Option<String>,
    /// The tier's schedule, if it is configured with one.
    pub schedule: Option<String>,
    /// Whether the tier is configured and covers this source.
    pub configured: bool,
    pub backups: usize,
    pub last: Option<Last>,
    /// Two scheduled runs have passed since the last backup started.
    pub stale: bool,
    /// A configured tier covers this source but it has no backup in it.
    pub missing: bool,
}

impl Row {
    /// Whether `status --check` should fail because of this row.
    pub fn is_problem(&self) -> bool {
        self.stale || self.missing
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceTotals {
    pub source: String,
    pub backups: usize,
    pub stored_bytes: u64,
}

/// One source's WAL archive.
#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    pub source: String,
    /// The highest archived segment (timeline, then position).
    pub newest_segment: Option<String>,
    /// When that segment was stored (object modification time).
    pub newest_time: Option<DateTime<Utc>>,
    /// `now - newest_time`.
    pub lag_seconds: Option<i64>,
    /// The point-in-time window a restore can reach now, if any.
    pub pitr: Option<PitrWindow>,
}

/// The instants `restore --to-time` can reach now, judged from plain data
/// (object names and the base backups' plain WAL ranges): `earliest` is
/// when the oldest base backup whose WAL is all present up to the newest
/// segment was consistent; `latest` is when the newest segment was stored
/// (the last commit it holds is at or before that). Presence of names, not
/// contents: `strata verify` proves continuity, and a restore re-checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PitrWindow {
    pub earliest: DateTime<Utc>,
    pub latest: DateTime<Utc>,
    /// The base backup a restore to `earliest` would use.
    pub base: String,
}

/// A base backup as [`pitr_window`] needs it.
#[derive(Debug, Clone)]
pub struct WindowBase {
    pub id: String,
    pub finished: DateTime<Utc>,
    pub timeline: Timeline,
    pub start: Lsn,
    pub stop: Lsn,
    pub size: SegmentSize,
}

/// The point-in-time window of one source (pure; see [`PitrWindow`]). A
/// base backup counts when every segment number from its start to the
/// newest archived one is present on its timeline or a later one.
pub fn pitr_window(
    bases: &[WindowBase],
    segments: &[(SegmentName, Option<DateTime<Utc>>)],
) -> Option<PitrWindow> {
    let mut ordered: Vec<&WindowBase> = bases.iter().collect();
    ordered.sort_by_key(|b| b.finished);
    for b in ordered {
        let present: BTreeSet<u64> = segments
            .iter()
            .filter(|(s, _)| s.timeline >= b.timeline && s.fits(b.size))
            .map(|(s, _)| s.segno(b.size))
            .collect();
        let first = b.start.0 / b.size.bytes();
        let stop = b.stop.0 / b.size.bytes();
        let Some(&newest) = present.iter().next_back() else {
            continue;
        };
        if newest < stop || !(first..=newest).all(|n| present.contains(&n)) {
            continue;
        }
        let latest = segments
            .iter()
            .filter(|(s, _)| {
                s.timeline >= b.timeline && s.fits(b.size) && s.segno(b.size) == newest
            })
            .filter_map(|(_, t)| *t)
            .max()?;
        return Some(PitrWindow {
            earliest: b.finished,
            latest: latest.max(b.finished),
            base: b.id.clone(),
        });
    }
    None
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub now: DateTime<Utc>,
    pub rows: Vec<Row>,
    pub sources: Vec<SourceTotals>,
    pub wal: Vec<WalStatus>,
    /// Backups that never got their manifest, plus incomplete uploads.
    pub leftovers: usize,
    /// Repository locks held now (running commands, or abandoned ones).
    pub locks: Vec<crate::catalog::lock::FoundLock>,
    /// Local repository: directories and files not owned by the
    /// repository directory's owner (see `storage::local`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ownership: Vec<String>,
    /// PostgreSQL sources whose WAL a tier archives: what the server's
    /// archiving settings put at risk (asked of the server itself).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archiving: Vec<ArchivingWarning>,
}

/// One finding about a server's archiving settings.
#[derive(Debug, Clone, Serialize)]
pub struct ArchivingWarning {
    pub source: String,
    /// Whether `status --check` fails on it (WAL not reaching this
    /// repository at all), or it is advice (an unbounded RPO).
    pub problem: bool,
    pub message: String,
}

/// The repository an `archive_command` running `strata --config C wal
/// push` archives into: C's `[repository]`. `None` when the command does
/// not run strata or names no config that can be read.
fn archive_repository(
    command: &str,
) -> Option<Result<crate::storage::location::RepositoryLocation, String>> {
    if !command.contains("wal push") {
        return None;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "--config")?;
    let path = words.get(at + 1)?.trim_matches(|c| c == '\'' || c == '"');
    Some(
        crate::config::Config::load(std::path::Path::new(path))
            .map(|c| c.repository)
            .map_err(|e| e.message),
    )
}

/// Asks each PostgreSQL source covered by a `wal` tier for its archiving
/// settings (5 s per server): `archive_mode` off, an `archive_command` that
/// does not archive into this repository, `archive_timeout` unset (a quiet
/// server then leaves its newest WAL unarchived for as long as it stays
/// quiet: the drill's RPO of 95 s came from that).
pub async fn archiving(cfg: &Config) -> Vec<ArchivingWarning> {
    use crate::tier::TierKind;
    let mut out = Vec::new();
    for src in cfg.sources.values() {
        let covered = cfg
            .tiers
            .values()
            .any(|t| t.kind == TierKind::Wal && t.sources.iter().any(|s| s == &src.name));
        if src.kind != crate::config::SourceKind::Postgres || !covered {
            continue;
        }
        let mut warn = |problem: bool, message: String| {
            out.push(ArchivingWarning {
                source: src.name.clone(),
                problem,
                message,
            })
        };
        let target = crate::sources::postgres::Target::new(&src.url);
        let settings = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let client = target.connect().await.map_err(|e| e.message)?;
            let row = client
                .query_one(
                    "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
                     current_setting('archive_timeout')",
                    &[],
                )
                .await
                .map_err(|e| crate::sources::postgres::pg_error_text(&e))?;
            Ok::<_, String>((
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
            ))
        })
        .await;
        let (mode, command, timeout) = match settings {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn(
                    false,
                    format!("cannot ask the server for its archiving settings: {e}"),
                );
                continue;
            }
            Err(_) => {
                warn(
                    false,
                    "cannot ask the server for its archiving settings: no answer within 5 s".into(),
                );
                continue;
            }
        };
        if mode == "off" {
            warn(true, "archive_mode is off: no WAL is archived, so no point-in-time restore past the newest base backup".into());
            continue;
        }
        match archive_repository(&command) {
            None => warn(
                true,
                format!("archive_command does not run `strata --config … wal push`: {command:?}"),
            ),
            Some(Err(e)) => warn(
                true,
                format!(
                    "archive_command's config cannot be read here ({e}): cannot tell where WAL goes"
                ),
            ),
            Some(Ok(loc)) if !cfg.repositories.iter().any(|r| loc.same_place(&r.location)) => warn(
                true,
                format!(
                    "archive_command archives into another repository than this config's: {} (this config: {})",
                    loc.display(),
                    cfg.repository.display()
                ),
            ),
            Some(Ok(_)) => {}
        }
        if timeout == "0" {
            warn(
                false,
                "archive_timeout is 0: on a quiet server the newest WAL stays unarchived for as long as it is quiet (the RPO has no bound); set it, e.g. archive_timeout = 60".into(),
            );
        }
    }
    out
}

/// The directories of a local repository (down to WAL timelines and one
/// source's backups) and files beside them not owned by the repository
/// directory's owner: another user's `archive_command` or backups cannot
/// write there (the trap: `init` or a backup run as root in a repository
/// PostgreSQL's `postgres` user archives into).
pub fn ownership_problems(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::metadata(root) else {
        return Vec::new();
    };
    let name = |uid: u32| -> String {
        // SAFETY: getpwuid returns null or a static entry read at once.
        let pw = unsafe { libc::getpwuid(uid) };
        if pw.is_null() {
            return format!("uid {uid}");
        }
        // SAFETY: non-null, pw_name is a C string.
        unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut out = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            let path = e.path();
            if md.uid() != top.uid() && out.len() < 10 {
                out.push(format!(
                    "{} belongs to {}, the repository {} to {}: commands running as {} cannot write there",
                    path.display(),
                    name(md.uid()),
                    root.display(),
                    name(top.uid()),
                    name(top.uid())
                ));
            }
            if md.is_dir() && depth < 2 {
                dirs.push((path, depth + 1));
            }
        }
    }
    out
}

impl Status {
    pub fn problems(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.is_problem())
    }
}

/// Whether a backup that started at `last` is overdue under `schedule`:
/// the second scheduled run after it is already past.
pub fn is_stale(
    schedule: Option<&Schedule>,
    tz: Tz,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let Some(s) = schedule else {
        return false;
    };
    match s.next_runs(tz, last, 2).get(1) {
        Some(second) => second.with_timezone(&Utc) <= now,
        // The schedule never fires twice more: nothing is expected.
        None => false,
    }
}

/// Rows and per-source totals from the backups' summaries, as of `now`.
pub fn summarise(
    tiers: &BTreeMap<String, Tier>,
    backups: &[&Summary],
    now: DateTime<Utc>,
) -> (Vec<Row>, Vec<SourceTotals>) {
    let mut groups: BTreeMap<(String, Option<String>), Vec<&Summary>> = BTreeMap::new();
    // Only kinds that write manifests are expected to have backups; a
    // `wal` tier's health is the WAL section.
    for t in tiers.values().filter(|t| t.kind.runnable()) {
        for s in &t.sources {
            groups.entry((s.clone(), Some(t.name.clone()))).or_default();
        }
    }
    let mut totals: BTreeMap<String, SourceTotals> = BTreeMap::new();
    for b in backups {
        groups
            .entry((b.source.clone(), b.tier.clone()))
            .or_default()
            .push(b);
        let t = totals
            .entry(b.source.clone())
            .or_insert_with(|| SourceTotals {
                source: b.source.clone(),
                backups: 0,
                stored_bytes: 0,
            });
        t.backups += 1;
        t.stored_bytes += b.stored_size;
    }
    let rows = groups
        .into_iter()
        .map(|((source, tier), list)| {
            let def = tier
                .as_deref()
                .and_then(|t| tiers.get(t))
                .filter(|d| d.kind.runnable() && d.sources.contains(&source));
            let last = list
                .iter()
                .max_by_key(|b| (b.finished, b.started, b.id.to_string()))
                .map(|b| Last {
                    id: b.id.to_string(),
                    started: b.started,
                    finished: b.finished,
                    age_seconds: (now - b.finished).num_seconds(),
                    duration_seconds: (b.finished - b.started).num_milliseconds() as f64 / 1000.0,
                    stored_bytes: b.stored_size,
                });
            let stale = match (&last, def) {
                (Some(l), Some(d)) => is_stale(d.schedule.as_ref(), d.tz(), l.started, now),
                _ => false,
            };
            Row {
                missing: def.is_some() && last.is_none(),
                configured: def.is_some(),
                schedule: def.and_then(|d| d.schedule.as_ref().map(|s| s.to_string())),
                backups: list.len(),
                source,
                tier,
                last,
                stale,
            }
        })
        .collect();
    (rows, totals.into_values().collect())
}

/// The newest archived segment among `keys` (objects under one source's
/// WAL prefix), with its time.
pub fn newest_segment<'a>(
    objects: impl IntoIterator<Item = (&'a str, Option<DateTime<Utc>>)>,
) -> Option<(SegmentName, Option<DateTime<Utc>>)> {
    objects
        .into_iter()
        .filter_map(|(key, t)| {
            let name = key.rsplit('/').next()?;
            name.parse::<SegmentName>().ok().map(|s| (s, t))
        })
        .max_by_key(|(s, _)| *s)
}

/// Reads what status reports from the repository.
pub async fn gather(cfg: &Config, repo: &Repository, now: DateTime<Utc>) -> Result<Status> {
    let (entries, _unreadable) = repo.backups(None).await?;
    let summaries: Vec<&Summary> = entries.iter().map(|e| e.summary()).collect();
    let (rows, sources) = summarise(&cfg.tiers, &summaries, now);
    let mut wal = Vec::new();
    let names: BTreeSet<&String> = cfg.sources.keys().collect();
    for source in names {
        let objects = repo
            .storage()
            .list(&format!("{WAL_PREFIX}{source}/"))
            .await?;
        if objects.is_empty() {
            continue;
        }
        let newest = newest_segment(objects.iter().map(|o| (o.key.as_str(), o.modified)));
        let time = newest.and_then(|(_, t)| t);
        let segments: Vec<(SegmentName, Option<DateTime<Utc>>)> = objects
            .iter()
            .filter_map(|o| {
                let name = o.key.rsplit('/').next()?;
                name.parse::<SegmentName>().ok().map(|s| (s, o.modified))
            })
            .collect();
        let bases: Vec<WindowBase> = entries
            .iter()
            .filter(|e| e.summary().source == *source && e.summary().kind == "base")
            .filter_map(|e| {
                let w = e.file.wal.as_ref()?;
                Some(WindowBase {
                    id: e.summary().id.to_string(),
                    finished: e.summary().finished,
                    timeline: Timeline(w.timeline),
                    start: w.start_lsn.parse().ok()?,
                    stop: w.stop_lsn.parse().ok()?,
                    size: SegmentSize::new(w.wal_segment_size)?,
                })
            })
            .collect();
        wal.push(WalStatus {
            source: source.clone(),
            newest_segment: newest.map(|(s, _)| s.to_string()),
            newest_time: time,
            lag_seconds: time.map(|t| (now - t).num_seconds()),
            pitr: pitr_window(&bases, &segments),
        });
    }
    let (leftovers, incomplete) = repo.leftovers().await?;
    let locks = crate::catalog::lock::list(repo.storage()).await?;
    Ok(Status {
        now,
        rows,
        sources,
        wal,
        leftovers: leftovers.len() + incomplete.len(),
        locks,
        // asked of the servers by `status` only (`metrics` need not
        // connect to every source on each scrape)
        archiving: Vec::new(),
        ownership: match &cfg.repository {
            crate::storage::location::RepositoryLocation::Local(dir) => ownership_problems(dir),
            crate::storage::location::RepositoryLocation::S3 { .. } => Vec::new(),
        },
    })
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The Prometheus text exposition of a status, for node_exporter's
/// textfile collector. Rows with no tier get `tier=""`.
pub fn prometheus(s: &Status) -> String {
    struct Family {
        name: &'static str,
        help: &'static str,
        samples: Vec<(String, String)>,
    }
    let labels = |r: &Row| {
        format!(
            "source=\"{}\",tier=\"{}\"",
            escape_label(&r.source),
            escape_label(r.tier.as_deref().unwrap_or(""))
        )
    };
    let mut fams = vec![
        Family {
            name: "strata_last_success_timestamp_seconds",
            help: "When the last successful backup of the source in the tier finished (Unix time).",
            samples: Vec::new(),
        },
        Family {
            name: "strata_last_backup_duration_seconds",
            help: "How long the last successful backup took.",
            samples: Vec::new(),
        },
        Family {
            name: "strata_last_backup_stored_bytes",
            help: "Bytes stored by the last successful backup (compressed, encrypted).",
            samples: Vec::new(),
        },
        Family {
            name: "strata_backups",
            help: "Backups in the repository.",
            samples: Vec::new(),
        },
        Family {
            name: "strata_stale",
            help: "1 when the tier's schedule has run twice since the last backup, or a configured tier has no backup of the source.",
            samples: Vec::new(),
        },
        Family {
            name: "strata_wal_newest_segment_timestamp_seconds",
            help: "When the newest archived WAL segment was stored (Unix time).",
            samples: Vec::new(),
        },
        Family {
            name: "strata_pitr_earliest_timestamp_seconds",
            help: "The earliest instant a point-in-time restore can reach now (Unix time).",
            samples: Vec::new(),
        },
        Family {
            name: "strata_pitr_latest_timestamp_seconds",
            help: "The latest instant a point-in-time restore can reach now (Unix time).",
            samples: Vec::new(),
        },
    ];
    for r in &s.rows {
        let l = labels(r);
        if let Some(last) = &r.last {
            fams[0]
                .samples
                .push((l.clone(), last.finished.timestamp().to_string()));
            fams[1]
                .samples
                .push((l.clone(), format!("{}", last.duration_seconds)));
            fams[2]
                .samples
                .push((l.clone(), last.stored_bytes.to_string()));
        }
        fams[3].samples.push((l.clone(), r.backups.to_string()));
        fams[4]
            .samples
            .push((l, u8::from(r.is_problem()).to_string()));
    }
    for w in &s.wal {
        let l = format!("source=\"{}\"", escape_label(&w.source));
        if let Some(t) = w.newest_time {
            fams[5].samples.push((l.clone(), t.timestamp().to_string()));
        }
        if let Some(p) = &w.pitr {
            fams[6]
                .samples
                .push((l.clone(), p.earliest.timestamp().to_string()));
            fams[7].samples.push((l, p.latest.timestamp().to_string()));
        }
    }
    let mut out = String::new();
    for f in fams {
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} gauge\n",
            f.name, f.help, f.name
        ));
        for (l, v) in f.samples {
            out.push_str(&format!("{}{{{l}}} {v}\n", f.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BackupId;
    use crate::config::SourceKind;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn summary(source: &str, tier: Option<&str>, started: &str, secs: i64) -> Summary {
        let started = t(started);
        Summary {
            format: 1,
            id: BackupId::new(started),
            source: source.into(),
            source_kind: SourceKind::Postgres,
            kind: "dump".into(),
            tier: tier.map(String::from),
            started,
            finished: started + chrono::Duration::seconds(secs),
            strata_version: "test".into(),
            plain_size: 100,
            stored_size: 40,
            objects: vec![],
            label: None,
            note: None,
            keep_until: None,
        }
    }

    fn tiers(schedule: Option<&str>, sources: &[&str]) -> BTreeMap<String, Tier> {
        let cfg = format!(
            "[repository]\nurl = \"file:///r\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n{}\n[tiers.daily]\nsources = [{}]\n{}",
            sources
                .iter()
                .map(|s| format!(
                    "[sources.{s}]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n"
                ))
                .collect::<String>(),
            sources
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            schedule
                .map(|s| format!("schedule = \"{s}\"\n"))
                .unwrap_or_default()
        );
        Config::parse(std::path::Path::new("/x/strata.toml"), &cfg)
            .unwrap()
            .tiers
    }

    #[test]
    fn stale_after_two_missed_runs() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let last = t("2026-01-01T02:00:05Z");
        // The next run (Jan 2 02:00) may still be running: not stale.
        assert!(!is_stale(
            Some(&s),
            Tz::UTC,
            last,
            t("2026-01-02T03:00:00Z")
        ));
        assert!(!is_stale(
            Some(&s),
            Tz::UTC,
            last,
            t("2026-01-03T01:59:59Z")
        ));
        assert!(is_stale(Some(&s), Tz::UTC, last, t("2026-01-03T02:00:00Z")));
        // No schedule: run by hand, never stale.
        assert!(!is_stale(None, Tz::UTC, last, t("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn rows_per_source_and_tier_with_missing_and_untiered() {
        let tiers = tiers(Some("0 2 * * *"), &["app", "crm"]);
        let b = [
            summary("app", Some("daily"), "2026-01-01T02:00:00Z", 30),
            summary("app", Some("daily"), "2026-01-02T02:00:00Z", 60),
            summary("app", None, "2026-01-02T09:00:00Z", 10),
        ];
        let refs: Vec<&Summary> = b.iter().collect();
        let (rows, totals) = summarise(&tiers, &refs, t("2026-01-02T12:00:00Z"));
        assert_eq!(rows.len(), 3, "{rows:#?}");
        let app_daily = rows
            .iter()
            .find(|r| r.source == "app" && r.tier.as_deref() == Some("daily"))
            .unwrap();
        assert_eq!(app_daily.backups, 2);
        let last = app_daily.last.as_ref().unwrap();
        assert_eq!(last.finished, t("2026-01-02T02:01:00Z"));
        assert_eq!(last.duration_seconds, 60.0);
        assert!(!app_daily.stale && !app_daily.missing);
        let crm = rows.iter().find(|r| r.source == "crm").unwrap();
        assert!(crm.missing && crm.is_problem());
        let untiered = rows.iter().find(|r| r.tier.is_none()).unwrap();
        assert!(!untiered.configured && !untiered.is_problem());
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].backups, 3);
        assert_eq!(totals[0].stored_bytes, 120);

        let (rows, _) = summarise(&tiers, &refs, t("2026-01-04T02:00:00Z"));
        assert!(rows.iter().any(|r| r.source == "app" && r.stale));
    }

    #[test]
    fn wal_tiers_expect_no_backups() {
        let cfg = "[repository]\nurl = \"file:///r\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n[tiers.wal]\nkind = \"wal\"\nkeep_within = \"7d\"\n";
        let tiers = Config::parse(std::path::Path::new("/x/strata.toml"), cfg)
            .unwrap()
            .tiers;
        let (rows, _) = summarise(&tiers, &[], t("2026-01-01T00:00:00Z"));
        assert!(rows.is_empty(), "{rows:#?}");
    }

    #[test]
    fn newest_segment_ignores_records_and_other_files() {
        let objs = [
            (
                "wal/app/00000001/000000010000000000000003",
                Some(t("2026-01-01T00:03:00Z")),
            ),
            (
                "wal/app/00000001/000000010000000000000003.json",
                Some(t("2026-01-01T00:09:00Z")),
            ),
            (
                "wal/app/00000002/000000020000000000000001",
                Some(t("2026-01-01T00:05:00Z")),
            ),
            (
                "wal/app/00000002/000000020000000000000002.partial",
                Some(t("2026-01-01T00:06:00Z")),
            ),
            (
                "wal/app/history/00000002.history",
                Some(t("2026-01-01T00:07:00Z")),
            ),
            ("wal/app/archive.json", None),
        ];
        let (s, time) = newest_segment(objs.iter().map(|(k, t)| (*k, *t))).unwrap();
        assert_eq!(s.to_string(), "000000020000000000000001");
        assert_eq!(time, Some(t("2026-01-01T00:05:00Z")));
    }

    #[test]
    fn prometheus_text() {
        let b = [summary(
            "a\"p\\p\n",
            Some("daily"),
            "2026-01-01T00:00:00Z",
            90,
        )];
        let refs: Vec<&Summary> = b.iter().collect();
        let (rows, sources) = summarise(&BTreeMap::new(), &refs, t("2026-01-01T01:00:00Z"));
        let s = Status {
            now: t("2026-01-01T01:00:00Z"),
            rows,
            sources,
            wal: vec![WalStatus {
                source: "app".into(),
                newest_segment: Some("000000010000000000000001".into()),
                newest_time: Some(t("2026-01-01T00:30:00Z")),
                lag_seconds: Some(1800),
                pitr: None,
            }],
            leftovers: 0,
            ownership: vec![],
            archiving: vec![],
            locks: vec![],
        };
        let text = prometheus(&s);
        let l = r#"{source="a\"p\\p\n",tier="daily"}"#;
        assert!(
            text.contains(&format!(
                "strata_last_success_timestamp_seconds{l} 1767225690\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("strata_last_backup_duration_seconds{l} 90\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("strata_last_backup_stored_bytes{l} 40\n")),
            "{text}"
        );
        assert!(text.contains(&format!("strata_backups{l} 1\n")), "{text}");
        assert!(text.contains(&format!("strata_stale{l} 0\n")), "{text}");
        assert!(
            text.contains(
                "strata_wal_newest_segment_timestamp_seconds{source=\"app\"} 1767227400\n"
            ),
            "{text}"
        );
        for name in [
            "strata_backups",
            "strata_stale",
            "strata_last_backup_stored_bytes",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
        }
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }

    fn base(id: &str, finished: &str, start: u64, stop: u64) -> WindowBase {
        let size = SegmentSize::DEFAULT;
        WindowBase {
            id: id.into(),
            finished: t(finished),
            timeline: Timeline(1),
            start: Lsn(start * size.bytes() + 40),
            stop: Lsn(stop * size.bytes() + 100),
            size,
        }
    }

    fn segs(tl: u32, nums: &[u64], at: &str) -> Vec<(SegmentName, Option<DateTime<Utc>>)> {
        nums.iter()
            .map(|&n| {
                (
                    SegmentName::from_segno(Timeline(tl), n, SegmentSize::DEFAULT),
                    Some(t(at)),
                )
            })
            .collect()
    }

    #[test]
    fn pitr_window_starts_at_the_oldest_base_with_all_its_wal() {
        let bases = [
            base("b1", "2026-01-01T01:00:00Z", 2, 3),
            base("b2", "2026-01-02T01:00:00Z", 6, 7),
        ];
        // 4 is missing: b1 cannot reach the newest segment, b2 can
        let mut s = segs(1, &[2, 3, 5, 6, 7], "2026-01-02T02:00:00Z");
        s.extend(segs(1, &[8], "2026-01-02T03:00:00Z"));
        let w = pitr_window(&bases, &s).unwrap();
        assert_eq!(w.base, "b2");
        assert_eq!(w.earliest, t("2026-01-02T01:00:00Z"));
        assert_eq!(w.latest, t("2026-01-02T03:00:00Z"));
        // with 4 present, b1 opens the window
        s.extend(segs(1, &[4], "2026-01-02T02:00:00Z"));
        assert_eq!(pitr_window(&bases, &s).unwrap().base, "b1");
    }

    #[test]
    fn pitr_window_follows_later_timelines_and_needs_the_stop_segment() {
        let bases = [base("b1", "2026-01-01T01:00:00Z", 2, 4)];
        // the stop segment 4 is not archived yet: no window
        assert_eq!(
            pitr_window(&bases, &segs(1, &[2, 3], "2026-01-01T02:00:00Z")),
            None
        );
        // after a promotion, timeline 2 continues the positions
        let mut s = segs(1, &[2, 3], "2026-01-01T02:00:00Z");
        s.extend(segs(2, &[4, 5], "2026-01-01T04:00:00Z"));
        let w = pitr_window(&bases, &s).unwrap();
        assert_eq!(w.latest, t("2026-01-01T04:00:00Z"));
        // no base backup: no window
        assert_eq!(pitr_window(&[], &s), None);
    }
}

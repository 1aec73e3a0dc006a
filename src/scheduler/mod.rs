//! The scheduler's planner: which tiers are due now, and each tier's
//! upcoming runs (`strata schedule next`).
//!
//! Pure, with the clock passed in, so the daemon and tests see the same
//! plan. Rules, chosen on purpose:
//!
//! - A tier is due when one of its slots falls after its last run and at
//!   or before `now`. After downtime a tier that missed several slots runs
//!   **once**: the run is recorded at `now`, which covers every missed slot.
//! - A tier never run before is counted from `since` (when the daemon
//!   started), so it runs at its next slot rather than at startup; starting
//!   the daemon must not set off every backup at once.
//! - Tiers without a schedule (run by hand) and `wal` tiers (continuous:
//!   PostgreSQL's `archive_command` runs `strata wal push`) are never due.
//!   Every other scheduled tier is planned, whatever its kind; the daemon
//!   says so in its log when it cannot run a kind.
//!
//! The daemon itself (`strata schedule run`) is [`daemon`]; its clock,
//! real or fake for tests, is [`clock`]; its log lines are [`events`];
//! the processes it starts and signals are [`children`].
//! A tier's schedule, the cron expression, is [`cron`]; the crontab that
//! runs the tiers from cron instead of the daemon is [`crontab`].

pub mod children;
pub mod clock;
pub mod cron;
pub mod crontab;
pub mod daemon;
pub mod events;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::tier::{Tier, TierKind};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "schedule-state.json";

/// The state directory when `--state-dir` is not given: systemd's
/// `$STATE_DIRECTORY` (set by `StateDirectory=strata`, i.e.
/// `/var/lib/strata`), else `$XDG_STATE_HOME/strata`, else
/// `~/.local/state/strata`. `None` when none of them is set.
pub fn default_state_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("STATE_DIRECTORY") {
        // systemd joins several directories with ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return Some(PathBuf::from(first));
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Some(PathBuf::from(d).join("strata"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".local/state/strata"))
}

/// Reads the last runs; a missing file means no tier has run yet.
pub fn load_state(path: &Path) -> Result<LastRuns> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage(format!("schedule state {}: {e}", path.display()))
                .hint("fix or delete the file; deleted, each tier runs at its next slot")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LastRuns::new()),
        Err(e) => Err(Error::from(e).context(format!("reading {}", path.display()))),
    }
}

/// Writes the last runs atomically: a temporary file in the same
/// directory, synced, then renamed over the old one, so a crash leaves
/// either the old state or the new, never a torn file.
pub fn save_state(path: &Path, last: &LastRuns) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let json = serde_json::to_vec_pretty(last).map_err(|e| Error::failed(e.to_string()))?;
    tmp.write_all(&json)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| Error::from(e.error).context(format!("writing {}", path.display())))?;
    Ok(())
}

/// When each tier last ran, by tier name (the persisted state).
pub type LastRuns = BTreeMap<String, DateTime<Utc>>;

/// The plan for one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Tiers to run now, in name order.
    pub due: Vec<String>,
    /// The earliest slot after `now` over all scheduled tiers, if any.
    pub next: Option<DateTime<Utc>>,
}

/// Plans the tiers due at `now`. `since` stands in for the last run of a
/// tier that has never run (see the module docs).
pub fn plan<'a>(
    tiers: impl IntoIterator<Item = &'a Tier>,
    last: &LastRuns,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Plan {
    let mut due = Vec::new();
    let mut next: Option<DateTime<Utc>> = None;
    for tier in tiers {
        let Some(schedule) = &tier.schedule else {
            continue;
        };
        if !schedulable(tier) {
            continue;
        }
        let from = last.get(&tier.name).copied().unwrap_or(since);
        let first = schedule
            .next_runs(tier.tz(), from, 1)
            .first()
            .map(|t| t.with_timezone(&Utc));
        if first.is_some_and(|t| t <= now) {
            due.push(tier.name.clone());
        }
        let upcoming = schedule
            .next_runs(tier.tz(), now, 1)
            .first()
            .map(|t| t.with_timezone(&Utc));
        if let Some(t) = upcoming {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    }
    due.sort();
    Plan { due, next }
}

/// Whether the daemon plans this tier at all (see the module docs).
pub fn schedulable(tier: &Tier) -> bool {
    tier.schedule.is_some() && tier.kind != TierKind::Wal
}

/// The slot that makes `tier` due at `now`: its latest slot after `from`
/// and at or before `now` (`None` when there is none).
pub fn due_slot(tier: &Tier, from: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let t = tier
        .schedule
        .as_ref()?
        .previous_run(tier.tz(), now)?
        .with_timezone(&Utc);
    (t > from).then_some(t)
}

/// How many of `tier`'s slots fall after `from` and at or before `now`,
/// counting at most `cap` (a minutely tier down for a year has half a
/// million; the log needs only "many").
pub fn missed_slots(tier: &Tier, from: DateTime<Utc>, now: DateTime<Utc>, cap: usize) -> usize {
    let Some(schedule) = &tier.schedule else {
        return 0;
    };
    let mut n = 0;
    let mut after = from;
    // Walk in batches: next_runs allocates what it returns.
    while n < cap {
        let batch = schedule.next_runs(tier.tz(), after, 64.min(cap - n));
        if batch.is_empty() {
            break;
        }
        for t in &batch {
            let t = t.with_timezone(&Utc);
            if t > now {
                return n;
            }
            n += 1;
            after = t;
        }
    }
    n
}

/// One tier's upcoming runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Upcoming {
    pub tier: String,
    pub kind: &'static str,
    pub schedule: Option<String>,
    pub timezone: String,
    pub runnable: bool,
    pub sources: Vec<String>,
    /// Each run as `(time in the tier's zone, the same instant in UTC)`.
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// RFC 3339 with the zone's offset at that time.
    pub local: String,
    pub utc: DateTime<Utc>,
}

/// The next `count` runs of every tier after `now`, tiers in name order.
/// Tiers with no schedule are listed with no runs.
pub fn upcoming<'a>(
    tiers: impl IntoIterator<Item = &'a Tier>,
    now: DateTime<Utc>,
    count: usize,
) -> Vec<Upcoming> {
    tiers
        .into_iter()
        .map(|t| Upcoming {
            tier: t.name.clone(),
            kind: t.kind.as_str(),
            schedule: t.schedule.as_ref().map(|s| s.to_string()),
            timezone: t.tz().name().to_string(),
            runnable: t.kind.runnable(),
            sources: t.sources.clone(),
            runs: t
                .schedule
                .as_ref()
                .map(|s| s.next_runs(t.tz(), now, count))
                .unwrap_or_default()
                .into_iter()
                .map(|local| Run {
                    local: local.to_rfc3339(),
                    utc: local.with_timezone(&Utc),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::cron::Schedule;
    use super::*;
    use crate::tier::TierKind;
    use chrono_tz::Tz;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tier(name: &str, expr: &str, tz: Option<Tz>) -> Tier {
        Tier {
            name: name.into(),
            kind: TierKind::Dump,
            schedule: Some(Schedule::parse(expr).unwrap()),
            timezone: tz,
            sources: vec![],
            sources_listed: false,
            policy: Default::default(),
            defined_in: Default::default(),
            object_lock: None,
            copy_to: Vec::new(),
            incremental: None,
        }
    }

    fn last(name: &str, t: &str) -> LastRuns {
        LastRuns::from([(name.to_string(), at(t))])
    }

    #[test]
    fn drill_tiers_are_planned_like_backups() {
        let mut drill = tier("drill", "0 5 1 * *", None);
        drill.kind = TierKind::Drill;
        let p = plan(
            &[drill],
            &last("drill", "2026-10-01T05:00:00Z"),
            at("2026-11-01T00:00:00Z"),
            at("2026-11-01T05:00:00Z"),
        );
        assert_eq!(p.due, ["drill"]);
    }

    #[test]
    fn the_due_slot_is_the_latest_one_passed() {
        let hourly = tier("hourly", "0 * * * *", None);
        let from = at("2026-11-20T10:00:00Z");
        assert_eq!(
            due_slot(&hourly, from, at("2026-11-20T12:34:00Z")),
            Some(at("2026-11-20T12:00:00Z"))
        );
        assert_eq!(
            due_slot(&hourly, from, at("2026-11-20T11:00:00Z")),
            Some(at("2026-11-20T11:00:00Z"))
        );
        assert_eq!(due_slot(&hourly, from, at("2026-11-20T10:59:00Z")), None);
        // In the tier's zone: 02:00 Berlin is 01:00Z in winter.
        let berlin = tier("daily", "0 2 * * *", Some(chrono_tz::Europe::Berlin));
        assert_eq!(
            due_slot(&berlin, from, at("2026-11-21T05:00:00Z")),
            Some(at("2026-11-21T01:00:00Z"))
        );
    }

    #[test]
    fn missed_slots_are_counted_and_capped() {
        let hourly = tier("hourly", "0 * * * *", None);
        let from = at("2026-11-20T10:00:00Z");
        assert_eq!(
            missed_slots(&hourly, from, at("2026-11-20T10:59:59Z"), 1000),
            0
        );
        assert_eq!(
            missed_slots(&hourly, from, at("2026-11-20T11:00:00Z"), 1000),
            1
        );
        // Three days down: 72 slots, one run (see the catch-up test).
        assert_eq!(
            missed_slots(&hourly, from, at("2026-11-23T10:00:00Z"), 1000),
            72
        );
        assert_eq!(
            missed_slots(&hourly, from, at("2026-11-23T10:00:00Z"), 10),
            10
        );
        let never = tier("never", "0 0 31 2 *", None);
        assert_eq!(
            missed_slots(&never, from, at("2027-11-23T10:00:00Z"), 1000),
            0
        );
    }

    #[test]
    fn state_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert!(load_state(&path).unwrap().is_empty());
        let ran = last("daily", "2026-11-22T02:00:05Z");
        save_state(&path, &ran).unwrap();
        assert_eq!(load_state(&path).unwrap(), ran);
    }

    #[test]
    fn due_when_a_slot_passed_since_the_last_run() {
        let t = [tier("daily", "0 2 * * *", None)];
        let since = at("2026-11-01T00:00:00Z");
        let ran = last("daily", "2026-11-22T02:00:05Z");
        let p = plan(&t, &ran, since, at("2026-11-23T01:59:00Z"));
        assert!(p.due.is_empty());
        assert_eq!(p.next, Some(at("2026-11-23T02:00:00Z")));
        let p = plan(&t, &ran, since, at("2026-11-23T02:00:00Z"));
        assert_eq!(p.due, ["daily"]);
    }

    #[test]
    fn catch_up_runs_once_after_a_long_downtime() {
        let t = [tier("daily", "0 2 * * *", None)];
        let since = at("2026-11-23T12:00:00Z");
        let now = at("2026-11-23T12:00:00Z");
        // Three missed slots give one due entry, not three.
        let p = plan(&t, &last("daily", "2026-11-20T02:00:00Z"), since, now);
        assert_eq!(p.due, ["daily"]);
        // Recording the run at `now` covers every missed slot.
        let p = plan(&t, &last("daily", "2026-11-23T12:00:00Z"), since, now);
        assert!(p.due.is_empty());
    }

    #[test]
    fn a_tier_never_run_waits_for_its_next_slot() {
        let t = [tier("daily", "0 2 * * *", None)];
        let since = at("2026-11-23T12:00:00Z");
        let p = plan(&t, &LastRuns::new(), since, since);
        assert!(p.due.is_empty());
        assert_eq!(p.next, Some(at("2026-11-24T02:00:00Z")));
        let p = plan(&t, &LastRuns::new(), since, at("2026-11-24T02:00:00Z"));
        assert_eq!(p.due, ["daily"]);
    }

    #[test]
    fn slots_are_counted_in_the_tier_zone() {
        // 02:00 in Berlin is 01:00 UTC in winter.
        let t = [tier("daily", "0 2 * * *", Some(chrono_tz::Europe::Berlin))];
        let ran = last("daily", "2026-11-22T01:00:00Z");
        let since = at("2026-11-01T00:00:00Z");
        assert!(
            plan(&t, &ran, since, at("2026-11-23T00:59:00Z"))
                .due
                .is_empty()
        );
        assert_eq!(
            plan(&t, &ran, since, at("2026-11-23T01:00:00Z")).due,
            ["daily"]
        );
    }

    #[test]
    fn unscheduled_and_wal_tiers_are_never_due() {
        let mut wal = tier("wal", "* * * * *", None);
        wal.kind = TierKind::Wal;
        let mut manual = tier("manual", "* * * * *", None);
        manual.schedule = None;
        let p = plan(
            &[wal, manual],
            &LastRuns::new(),
            at("2026-01-01T00:00:00Z"),
            at("2026-11-23T12:00:00Z"),
        );
        assert_eq!(
            p,
            Plan {
                due: vec![],
                next: None
            }
        );
    }
}

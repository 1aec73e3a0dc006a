//! Retention as a pure function: which backups a policy keeps, and why.
//!
//! [`plan`] takes the policy, the time zone that calendar periods are
//! counted in, the candidate backups and the current time, and returns a
//! [`Plan`]: every kept backup with all the reasons that keep it, and the
//! backups to delete. Nothing here reads a clock or touches storage, so a
//! dry run and the real run see the same plan, and tests can pin `now`.
//! Applying the plan (manifest first, then data; see [`crate::catalog`])
//! is [`super::apply`]'s job.
//!
//! Semantics follow restic's `forget` (see docs), applied to each source
//! independently:
//! - `keep_last N`: the N most recent backups.
//! - `keep_within D`: every backup whose time is at most D before `now`
//!   (a backup exactly D old is kept). restic measures from the newest
//!   snapshot; strata measures from `now`, and the safety rules below
//!   make sure a source that stopped backing up still keeps its newest.
//! - `keep_hourly|daily|weekly|monthly|yearly N`: for the last N periods
//!   that have a backup, the newest backup in each period. Periods are
//!   calendar periods in the given time zone: a day is a local date, so
//!   the 23- and 25-hour days of a DST change are one day each; weeks are
//!   ISO weeks (Monday start, ISO week-numbering year); an hour is a local
//!   wall-clock hour *with its UTC offset*, so the hour repeated when
//!   clocks go back counts as two hours, as it really is.
//!
//! Safety rules, which no policy overrides:
//! - An empty policy (no rule, or only zero rules) keeps everything:
//!   a missing or half-written config must never delete.
//! - The newest backup of each source is always kept.
//! - Backups dated after `now` are kept and left out of the policy:
//!   clock skew must never delete, nor push other backups out of
//!   `keep_last` or a period rule.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, IsoWeek, NaiveDate, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::Deserialize;

/// A retention policy. Counts of `0` and a zero `keep_within` mean the
/// rule is off, as if absent; a policy with no rule on keeps everything
/// (see [`Policy::is_empty`]). Build one from configuration with
/// [`Policy::parse`], which refuses an all-zero policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N most recent backups.
    pub keep_last: Option<u32>,
    /// Keep every backup whose time is at most this long before `now`.
    pub keep_within: Option<Duration>,
    /// Keep the newest backup of each of the last N hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last N years that have one.
    pub keep_yearly: Option<u32>,
}

/// A policy as written in configuration, before validation. Counts are
/// signed so that a negative value gets a message naming its key rather
/// than a deserialiser's type error; `keep_within` is a duration like
/// `30d` (see [`crate::util::parse_duration`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub keep_last: Option<i64>,
    pub keep_within: Option<String>,
    pub keep_hourly: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
}

impl Policy {
    /// Validates a written policy. Errors name the key, e.g.
    /// `keep_daily: must be a whole number from 0 to 4294967295, got -1`;
    /// the config loader adds the file and line.
    ///
    /// No keys at all is the empty policy (keep everything). Keys that are
    /// all zero are refused: their author meant to delete something but
    /// the policy would delete nothing, so it is surely a mistake.
    pub fn parse(raw: &RawPolicy) -> Result<Policy, String> {
        let count = |key: &str, v: Option<i64>| -> Result<Option<u32>, String> {
            v.map(|n| {
                u32::try_from(n).map_err(|_| {
                    format!(
                        "{key}: must be a whole number from 0 to {}, got {n}",
                        u32::MAX
                    )
                })
            })
            .transpose()
        };
        let keep_within = raw
            .keep_within
            .as_deref()
            .map(|s| crate::util::parse_duration(s).map_err(|why| format!("keep_within: {why}")))
            .transpose()?;
        let policy = Policy {
            keep_last: count("keep_last", raw.keep_last)?,
            keep_within,
            keep_hourly: count("keep_hourly", raw.keep_hourly)?,
            keep_daily: count("keep_daily", raw.keep_daily)?,
            keep_weekly: count("keep_weekly", raw.keep_weekly)?,
            keep_monthly: count("keep_monthly", raw.keep_monthly)?,
            keep_yearly: count("keep_yearly", raw.keep_yearly)?,
        };
        let given = policy.keys_given();
        if !given.is_empty() && policy.is_empty() {
            return Err(format!(
                "{}: all zero; a policy needs at least one non-zero keep_* rule \
                 (remove all keep_* keys to keep every backup)",
                given.join(", ")
            ));
        }
        Ok(policy)
    }

    /// True when no rule is on: such a policy keeps every backup.
    pub fn is_empty(&self) -> bool {
        self.active_counts().next().is_none() && self.within().is_none()
    }

    fn within(&self) -> Option<Duration> {
        self.keep_within.filter(|d| *d > Duration::zero())
    }

    /// The period rules that are on, with their counts.
    fn active_counts(&self) -> impl Iterator<Item = (Rule, u32)> {
        [
            (Rule::Last, self.keep_last),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
            (Rule::Yearly, self.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(rule, n)| n.filter(|&n| n > 0).map(|n| (rule, n)))
    }

    fn keys_given(&self) -> Vec<&'static str> {
        [
            ("keep_last", self.keep_last.is_some()),
            ("keep_within", self.keep_within.is_some()),
            ("keep_hourly", self.keep_hourly.is_some()),
            ("keep_daily", self.keep_daily.is_some()),
            ("keep_weekly", self.keep_weekly.is_some()),
            ("keep_monthly", self.keep_monthly.is_some()),
            ("keep_yearly", self.keep_yearly.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, given)| given.then_some(k))
        .collect()
    }
}

/// `keep_last 3, keep_within 30d, keep_daily 7`, or `keep everything`.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("keep everything (no retention rule)");
        }
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last.filter(|&n| n > 0) {
            parts.push(format!("keep_last {n}"));
        }
        if let Some(d) = self.within() {
            parts.push(format!("keep_within {}", DurationText(d)));
        }
        for (rule, n) in self.active_counts().filter(|(r, _)| *r != Rule::Last) {
            parts.push(format!("{} {n}", rule.key()));
        }
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn key(self) -> &'static str {
        match self {
            Rule::Last => "keep_last",
            Rule::Hourly => "keep_hourly",
            Rule::Daily => "keep_daily",
            Rule::Weekly => "keep_weekly",
            Rule::Monthly => "keep_monthly",
            Rule::Yearly => "keep_yearly",
        }
    }

    /// The calendar period `time` falls in, as the reason that names it.
    /// Each period is one contiguous stretch of time (local time only
    /// ever jumps back within a day, by less than a day), which is what
    /// lets [`plan`] find period changes by comparing neighbours.
    fn period(self, time: DateTime<Utc>, tz: Tz) -> Reason {
        let local = time.with_timezone(&tz);
        let date = local.date_naive();
        match self {
            Rule::Last => unreachable!("keep_last has no period"),
            Rule::Hourly => {
                let offset = local.offset().fix();
                let start = date
                    .and_hms_opt(local.hour(), 0, 0)
                    .expect("whole hour is valid");
                let start = offset
                    .from_local_datetime(&start)
                    .single()
                    .expect("a fixed offset maps each local time once");
                Reason::Hourly(start)
            }
            Rule::Daily => Reason::Daily(date),
            Rule::Weekly => Reason::Weekly(date.iso_week()),
            Rule::Monthly => Reason::Monthly {
                year: date.year(),
                month: date.month(),
            },
            Rule::Yearly => Reason::Yearly(date.year()),
        }
    }
}

/// Why a backup is kept. A backup kept by several rules lists them all,
/// in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The policy is empty, so everything is kept.
    NoPolicy,
    /// Dated after `now` (clock skew); never deleted.
    Future,
    /// Among the `keep_last` N most recent.
    Last(u32),
    /// Within `keep_within` of `now`.
    Within(Duration),
    /// Newest of the local hour starting at this time (offset included).
    Hourly(DateTime<FixedOffset>),
    /// Newest of this local date.
    Daily(NaiveDate),
    /// Newest of this ISO week.
    Weekly(IsoWeek),
    /// Newest of this month.
    Monthly { year: i32, month: u32 },
    /// Newest of this year.
    Yearly(i32),
    /// The newest backup of its source, kept whatever the policy says.
    NewestOfSource,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoPolicy => f.write_str("no retention rule (keep everything)"),
            Reason::Future => f.write_str("dated in the future"),
            Reason::Last(n) => write!(f, "keep_last {n}"),
            Reason::Within(d) => write!(f, "keep_within {}", DurationText(*d)),
            Reason::Hourly(start) => {
                write!(f, "keep_hourly ({})", start.format("%Y-%m-%d %H:%M%:z"))
            }
            Reason::Daily(date) => write!(f, "keep_daily ({})", date.format("%Y-%m-%d")),
            Reason::Weekly(w) => write!(f, "keep_weekly ({:04}-W{:02})", w.year(), w.week()),
            Reason::Monthly { year, month } => write!(f, "keep_monthly ({year:04}-{month:02})"),
            Reason::Yearly(year) => write!(f, "keep_yearly ({year:04})"),
            Reason::NewestOfSource => f.write_str("newest of source"),
        }
    }
}

/// A duration in the largest unit that divides it: `30d`, `36h`, `90s`.
struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.num_seconds();
        match s {
            0 => f.write_str("0"),
            s if s % 86400 == 0 => write!(f, "{}d", s / 86400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// One backup offered to [`plan`]: the caller's handle for it, its time
/// and its source (the policy applies to each source on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<T> {
    pub item: T,
    pub time: DateTime<Utc>,
    pub source: String,
}

/// What to keep (with every reason) and what to delete; both in the order
/// the candidates were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<T> {
    pub keep: Vec<(T, Vec<Reason>)>,
    pub delete: Vec<T>,
}

/// Applies `policy` to each source's candidates, counting calendar
/// periods in `tz`, as of `now`.
///
/// Backups are ranked newest first by time. Equal times are ranked by
/// input order, a later candidate counting as newer (the catalog lists
/// oldest first), so `keep_last N` keeps exactly N even with ties and the
/// plan is the same on every run.
pub fn plan<T>(
    policy: &Policy,
    tz: Tz,
    candidates: Vec<Candidate<T>>,
    now: DateTime<Utc>,
) -> Plan<T> {
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); candidates.len()];
    let mut by_source: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        by_source.entry(c.source.as_str()).or_default().push(i);
    }
    for indices in by_source.values() {
        let (future, mut ranked): (Vec<usize>, Vec<usize>) =
            indices.iter().partition(|&&i| candidates[i].time > now);
        for i in future {
            reasons[i].push(Reason::Future);
        }
        ranked.sort_by(|&a, &b| (candidates[b].time, b).cmp(&(candidates[a].time, a)));
        let times: Vec<DateTime<Utc>> = ranked.iter().map(|&i| candidates[i].time).collect();
        for (rank, why) in rank_reasons(policy, tz, &times, now) {
            reasons[ranked[rank]].extend(why);
        }
        if let Some(&newest) = ranked.first() {
            reasons[newest].push(Reason::NewestOfSource);
        }
    }

    let mut plan = Plan {
        keep: Vec::new(),
        delete: Vec::new(),
    };
    for (c, why) in candidates.into_iter().zip(reasons) {
        if why.is_empty() {
            plan.delete.push(c.item);
        } else {
            plan.keep.push((c.item, why));
        }
    }
    plan
}

/// The policy's reasons for one source's backups, given their times
/// newest first (none in the future): `(rank, reasons)` for each rank.
fn rank_reasons(
    policy: &Policy,
    tz: Tz,
    times: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Vec<(usize, Vec<Reason>)> {
    let mut out: Vec<Vec<Reason>> = vec![Vec::new(); times.len()];
    if policy.is_empty() {
        for why in &mut out {
            why.push(Reason::NoPolicy);
        }
    }
    if let Some(n) = policy.keep_last.filter(|&n| n > 0) {
        for why in out.iter_mut().take(n as usize) {
            why.push(Reason::Last(n));
        }
    }
    if let Some(d) = policy.within() {
        // A window reaching before the representable past holds everything.
        let cutoff = now.checked_sub_signed(d);
        for (why, t) in out.iter_mut().zip(times) {
            if cutoff.is_none_or(|c| *t >= c) {
                why.push(Reason::Within(d));
            }
        }
    }
    for (rule, n) in policy.active_counts().filter(|(r, _)| *r != Rule::Last) {
        // Newest first, so the first backup seen in a period is its newest;
        // periods are contiguous, so a new period shows as a change.
        let mut current: Option<Reason> = None;
        let mut periods = 0;
        for (why, t) in out.iter_mut().zip(times) {
            let period = rule.period(*t, tz);
            if current.as_ref() == Some(&period) {
                continue;
            }
            if periods == n {
                break;
            }
            periods += 1;
            why.push(period.clone());
            current = Some(period);
        }
    }
    out.into_iter().enumerate().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn cand(source: &str, time: DateTime<Utc>) -> Candidate<DateTime<Utc>> {
        Candidate {
            item: time,
            time,
            source: source.to_string(),
        }
    }

    /// Hourly backups at minute `min` from `from` (inclusive) for `hours`.
    fn hourly(source: &str, from: &str, hours: i64, min: i64) -> Vec<Candidate<DateTime<Utc>>> {
        let start = at(from) + Duration::minutes(min);
        (0..hours)
            .map(|h| cand(source, start + Duration::hours(h)))
            .collect()
    }

    fn kept_times<T: Clone>(p: &Plan<T>) -> Vec<T> {
        p.keep.iter().map(|(t, _)| t.clone()).collect()
    }

    fn reasons_of(p: &Plan<DateTime<Utc>>, t: DateTime<Utc>) -> Vec<String> {
        p.keep
            .iter()
            .find(|(k, _)| *k == t)
            .unwrap_or_else(|| panic!("{t} not kept"))
            .1
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    fn gfs() -> Policy {
        Policy {
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            keep_yearly: Some(2),
            ..Policy::default()
        }
    }

    #[test]
    fn year_of_hourly_backups_with_gfs() {
        // 2025-11-21 00:30Z .. 2026-11-20 23:30Z: 365 days of hourly backups.
        let cands = hourly("db", "2025-11-21T00:00:00Z", 365 * 24, 30);
        assert_eq!(cands.len(), 8760);
        let now = at("2026-11-21T00:00:00Z");
        let p = plan(&gfs(), UTC, cands, now);

        let mut expected: Vec<DateTime<Utc>> = Vec::new();
        // Hourly: the last 24 hours, 2026-11-20 00:30 .. 23:30.
        expected.extend((0..24).map(|h| at("2026-11-20T00:30:00Z") + Duration::hours(h)));
        // Daily: 7 days, 11-14 .. 11-20 (11-20 already counted above).
        for d in 14..=19 {
            expected.push(at(&format!("2026-11-{d}T23:30:00Z")));
        }
        // Weekly: 2026-11-20 is a Friday of W47; W46 ends Sunday 11-15 (a
        // daily), then W45 and W44 end on Sundays 11-08 and 11-01.
        expected.push(at("2026-11-08T23:30:00Z"));
        expected.push(at("2026-11-01T23:30:00Z"));
        // Monthly: Nov 2026 (kept) back to Dec 2025: last hour of each month.
        for m in [
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            "2026-06-30",
            "2026-05-31",
            "2026-04-30",
            "2026-03-31",
            "2026-02-28",
            "2026-01-31",
            "2025-12-31",
        ] {
            expected.push(at(&format!("{m}T23:30:00Z")));
        }
        // Yearly: 2026 and 2025 are the newest of Nov 20 and Dec 31: kept.
        expected.sort();
        assert_eq!(p.keep.len(), 43);
        assert_eq!(p.delete.len(), 8760 - 43);
        assert_eq!(kept_times(&p), expected);

        assert_eq!(
            reasons_of(&p, at("2026-11-20T23:30:00Z")),
            [
                "keep_hourly (2026-11-20 23:00+00:00)",
                "keep_daily (2026-11-20)",
                "keep_weekly (2026-W47)",
                "keep_monthly (2026-11)",
                "keep_yearly (2026)",
                "newest of source",
            ]
        );
        assert_eq!(
            reasons_of(&p, at("2025-12-31T23:30:00Z")),
            ["keep_monthly (2025-12)", "keep_yearly (2025)"]
        );
        assert_eq!(
            reasons_of(&p, at("2026-11-15T23:30:00Z")),
            ["keep_daily (2026-11-15)", "keep_weekly (2026-W46)"]
        );
        assert_eq!(
            reasons_of(&p, at("2026-11-20T00:30:00Z")),
            ["keep_hourly (2026-11-20 00:00+00:00)"]
        );
        // The oldest month (Nov 2025) is the 13th: gone.
        assert!(p.delete.contains(&at("2025-11-30T23:30:00Z")));
    }

    #[test]
    fn days_are_counted_in_the_time_zone() {
        // 23:30Z on Nov 19 is 00:30 on Nov 20 in Berlin (CET, +01:00).
        let late = at("2026-11-19T23:30:00Z");
        let evening = at("2026-11-19T22:30:00Z");
        let before = at("2026-11-18T12:00:00Z");
        let cands = vec![cand("db", before), cand("db", evening), cand("db", late)];
        let now = at("2026-11-21T00:00:00Z");
        let policy = Policy {
            keep_daily: Some(2),
            ..Policy::default()
        };

        let utc = plan(&policy, UTC, cands.clone(), now);
        assert_eq!(kept_times(&utc), [before, late]);
        assert_eq!(utc.delete, [evening]);
        assert_eq!(reasons_of(&utc, late)[0], "keep_daily (2026-11-19)");

        let berlin = plan(&policy, Berlin, cands, now);
        assert_eq!(kept_times(&berlin), [evening, late]);
        assert_eq!(berlin.delete, [before]);
        assert_eq!(reasons_of(&berlin, late)[0], "keep_daily (2026-11-20)");
        assert_eq!(reasons_of(&berlin, evening), ["keep_daily (2026-11-19)"]);
    }

    #[test]
    fn years_and_iso_weeks_follow_the_time_zone() {
        // 2026-12-31 23:30Z is 2027-01-01 00:30 in Berlin, still ISO week
        // 2026-W53 (the week-numbering year, not the calendar year).
        let new_year = at("2026-12-31T23:30:00Z");
        let tuesday = at("2026-12-29T12:00:00Z");
        let now = at("2027-01-10T00:00:00Z");
        let cands = vec![cand("db", tuesday), cand("db", new_year)];

        let yearly = Policy {
            keep_yearly: Some(5),
            ..Policy::default()
        };
        let p = plan(&yearly, Berlin, cands.clone(), now);
        assert_eq!(reasons_of(&p, new_year)[0], "keep_yearly (2027)");
        assert_eq!(reasons_of(&p, tuesday), ["keep_yearly (2026)"]);
        let p = plan(&yearly, UTC, cands.clone(), now);
        assert_eq!(p.delete, [tuesday]);

        let weekly = Policy {
            keep_weekly: Some(5),
            ..Policy::default()
        };
        let p = plan(&weekly, Berlin, cands, now);
        assert_eq!(reasons_of(&p, new_year)[0], "keep_weekly (2026-W53)");
        assert_eq!(p.delete, [tuesday]);
    }

    #[test]
    fn dst_days_count_as_one_day_each() {
        // Hourly backups on the hour (UTC) around both 2026 changes.
        for (from, short_or_long, hours_that_day) in [
            ("2026-03-26T00:00:00Z", "2026-03-29", 23),
            ("2026-10-22T00:00:00Z", "2026-10-25", 25),
        ] {
            let cands = hourly("db", from, 6 * 24, 0);
            let last = cands.last().unwrap().time;
            let on_day = cands
                .iter()
                .filter(|c| c.time.with_timezone(&Berlin).date_naive().to_string() == short_or_long)
                .count();
            assert_eq!(on_day, hours_that_day, "{short_or_long}");

            let policy = Policy {
                keep_daily: Some(6),
                ..Policy::default()
            };
            let p = plan(&policy, Berlin, cands, last + Duration::hours(1));
            // 6 UTC days span 7 Berlin dates; the 6 newest are kept, one each.
            assert_eq!(p.keep.len(), 6, "{short_or_long}");
            let days: Vec<String> = p
                .keep
                .iter()
                .map(|(t, _)| t.with_timezone(&Berlin).date_naive().to_string())
                .collect();
            let mut unique = days.clone();
            unique.dedup();
            assert_eq!(unique, days);
            assert!(days.contains(&short_or_long.to_string()));
            // Each kept backup is the day's last: 23:00 local time.
            for (t, _) in &p.keep[..5] {
                assert_eq!(t.with_timezone(&Berlin).hour(), 23, "{t}");
            }
        }
        // The newest of the short day is 21:00Z (23:00 CEST), of the long
        // day 22:00Z (23:00 CET).
        let p = plan(
            &Policy {
                keep_daily: Some(1),
                ..Policy::default()
            },
            Berlin,
            hourly("db", "2026-03-28T23:00:00Z", 23, 0),
            at("2026-04-01T00:00:00Z"),
        );
        assert_eq!(kept_times(&p), [at("2026-03-29T21:00:00Z")]);
        assert_eq!(p.delete.len(), 22);
        let p = plan(
            &Policy {
                keep_daily: Some(1),
                ..Policy::default()
            },
            Berlin,
            hourly("db", "2026-10-24T22:00:00Z", 25, 0),
            at("2026-11-01T00:00:00Z"),
        );
        assert_eq!(kept_times(&p), [at("2026-10-25T22:00:00Z")]);
        assert_eq!(p.delete.len(), 24);
    }

    #[test]
    fn repeated_dst_hour_counts_as_two_hours() {
        // On 2026-10-25 Berlin shows 02:00-03:00 twice (+02:00, then +01:00).
        let cands = hourly("db", "2026-10-24T22:00:00Z", 25, 15);
        let last = cands.last().unwrap().time;
        let policy = Policy {
            keep_hourly: Some(25),
            ..Policy::default()
        };
        let p = plan(&policy, Berlin, cands, last);
        assert_eq!(p.keep.len(), 25);
        assert!(p.delete.is_empty());
        assert_eq!(
            reasons_of(&p, at("2026-10-25T00:15:00Z")),
            ["keep_hourly (2026-10-25 02:00+02:00)"]
        );
        assert_eq!(
            reasons_of(&p, at("2026-10-25T01:15:00Z")),
            ["keep_hourly (2026-10-25 02:00+01:00)"]
        );
    }

    #[test]
    fn keep_within_edges() {
        let now = at("2026-11-20T12:00:00Z");
        let edge = now - Duration::days(30);
        let outside = edge - Duration::seconds(1);
        let recent = now - Duration::hours(1);
        let policy = Policy {
            keep_within: Some(Duration::days(30)),
            ..Policy::default()
        };
        let cands = vec![cand("db", outside), cand("db", edge), cand("db", recent)];
        let p = plan(&policy, UTC, cands, now);
        assert_eq!(kept_times(&p), [edge, recent]);
        assert_eq!(p.delete, [outside]);
        assert_eq!(reasons_of(&p, edge), ["keep_within 30d"]);
        assert_eq!(
            reasons_of(&p, recent),
            ["keep_within 30d", "newest of source"]
        );
        // `now` itself is inside the window, not in the future.
        let p = plan(&policy, UTC, vec![cand("db", now)], now);
        assert_eq!(reasons_of(&p, now), ["keep_within 30d", "newest of source"]);
    }

    #[test]
    fn keep_last_with_ties_keeps_exactly_n() {
        let t = at("2026-11-20T12:00:00Z");
        let older = t - Duration::hours(1);
        let cands: Vec<Candidate<&str>> = [("a", t), ("old", older), ("b", t), ("c", t)]
            .into_iter()
            .map(|(item, time)| Candidate {
                item,
                time,
                source: "db".into(),
            })
            .collect();
        let policy = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let p = plan(&policy, UTC, cands, t);
        // Equal times rank by input order, the later one newer: c, b, a.
        assert_eq!(
            p.keep,
            [
                ("b", vec![Reason::Last(2)]),
                ("c", vec![Reason::Last(2), Reason::NewestOfSource]),
            ]
        );
        assert_eq!(p.delete, ["a", "old"]);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let cands = hourly("db", "2020-01-01T00:00:00Z", 100, 0);
        let now = at("2026-01-01T00:00:00Z");
        for policy in [
            Policy::default(),
            Policy {
                keep_last: Some(0),
                keep_within: Some(Duration::zero()),
                ..Policy::default()
            },
        ] {
            assert!(policy.is_empty());
            let p = plan(&policy, UTC, cands.clone(), now);
            assert!(p.delete.is_empty());
            assert_eq!(p.keep.len(), 100);
            assert_eq!(p.keep[0].1, [Reason::NoPolicy]);
            assert_eq!(p.keep[99].1, [Reason::NoPolicy, Reason::NewestOfSource]);
        }
    }

    #[test]
    fn newest_is_always_kept() {
        // Backups stopped two months ago; keep_within 7d alone would
        // delete them all.
        let cands = hourly("db", "2026-09-01T00:00:00Z", 48, 0);
        let newest = cands.last().unwrap().time;
        let policy = Policy {
            keep_within: Some(Duration::days(7)),
            ..Policy::default()
        };
        let p = plan(&policy, UTC, cands, at("2026-11-20T00:00:00Z"));
        assert_eq!(p.keep, [(newest, vec![Reason::NewestOfSource])]);
        assert_eq!(p.delete.len(), 47);
    }

    #[test]
    fn future_backups_are_kept_and_not_counted() {
        let now = at("2026-11-20T12:00:00Z");
        let skewed = now + Duration::hours(3);
        let just_after = now + Duration::seconds(1);
        let mut cands = hourly("db", "2026-11-20T08:00:00Z", 4, 0);
        cands.push(cand("db", skewed));
        cands.push(cand("db", just_after));
        let policy = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let p = plan(&policy, UTC, cands, now);
        assert_eq!(
            kept_times(&p),
            [
                at("2026-11-20T10:00:00Z"),
                at("2026-11-20T11:00:00Z"),
                skewed,
                just_after
            ]
        );
        assert_eq!(reasons_of(&p, skewed), ["dated in the future"]);
        assert_eq!(
            reasons_of(&p, at("2026-11-20T11:00:00Z")),
            ["keep_last 2", "newest of source"]
        );
        assert_eq!(p.delete.len(), 2);

        // All in the future: all kept.
        let p = plan(&policy, UTC, vec![cand("db", skewed)], now);
        assert_eq!(p.keep, [(skewed, vec![Reason::Future])]);
    }

    #[test]
    fn sources_are_independent() {
        let now = at("2026-11-21T00:00:00Z");
        let mut cands = hourly("pg", "2026-11-20T00:00:00Z", 24, 0);
        cands.extend(hourly("redis", "2026-11-10T00:00:00Z", 3, 30));
        cands.sort_by_key(|c| c.time);
        let policy = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let p = plan(&policy, UTC, cands, now);
        assert_eq!(
            kept_times(&p),
            [
                at("2026-11-10T01:30:00Z"),
                at("2026-11-10T02:30:00Z"),
                at("2026-11-20T22:00:00Z"),
                at("2026-11-20T23:00:00Z"),
            ]
        );
        assert_eq!(p.delete.len(), 23);
    }

    #[test]
    fn reasons_display() {
        let r = |r: Reason| r.to_string();
        assert_eq!(
            r(Reason::Daily(
                NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
            )),
            "keep_daily (2026-11-20)"
        );
        assert_eq!(r(Reason::Within(Duration::days(30))), "keep_within 30d");
        assert_eq!(r(Reason::Within(Duration::hours(36))), "keep_within 36h");
        assert_eq!(r(Reason::Last(3)), "keep_last 3");
        assert_eq!(r(Reason::NewestOfSource), "newest of source");
        assert_eq!(
            r(Reason::Monthly {
                year: 2026,
                month: 3
            }),
            "keep_monthly (2026-03)"
        );
        assert_eq!(r(Reason::Yearly(2026)), "keep_yearly (2026)");
        assert_eq!(
            gfs().to_string(),
            "keep_hourly 24, keep_daily 7, keep_weekly 4, keep_monthly 12, keep_yearly 2"
        );
        assert_eq!(
            Policy::default().to_string(),
            "keep everything (no retention rule)"
        );
    }

    #[test]
    fn parse_validates_and_names_keys() {
        let raw: RawPolicy = toml::from_str(
            "keep_last = 3\nkeep_within = \"30d\"\nkeep_daily = 7\nkeep_yearly = 0\n",
        )
        .unwrap();
        let p = Policy::parse(&raw).unwrap();
        assert_eq!(p.keep_last, Some(3));
        assert_eq!(p.keep_within, Some(Duration::days(30)));
        assert_eq!(p.keep_daily, Some(7));
        assert_eq!(p.keep_yearly, Some(0));
        assert_eq!(p.to_string(), "keep_last 3, keep_within 30d, keep_daily 7");

        assert_eq!(
            Policy::parse(&RawPolicy::default()).unwrap(),
            Policy::default()
        );

        let err = Policy::parse(&RawPolicy {
            keep_last: Some(0),
            keep_daily: Some(0),
            keep_within: Some("0".into()),
            ..RawPolicy::default()
        })
        .unwrap_err();
        assert!(
            err.starts_with("keep_last, keep_within, keep_daily: all zero"),
            "{err}"
        );

        let err = Policy::parse(&RawPolicy {
            keep_daily: Some(-1),
            ..RawPolicy::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            "keep_daily: must be a whole number from 0 to 4294967295, got -1"
        );

        let err = Policy::parse(&RawPolicy {
            keep_within: Some("3y".into()),
            ..RawPolicy::default()
        })
        .unwrap_err();
        assert!(err.starts_with("keep_within: "), "{err}");

        assert!(toml::from_str::<RawPolicy>("keep_dayly = 7").is_err());
    }
}

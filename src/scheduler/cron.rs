//! When tiers run: five-field cron expressions evaluated in a tier's time
//! zone. The upcoming runs (`strata schedule next`) are listed by
//! [`super::upcoming`], the equivalent crontab (`strata schedule crontab`)
//! is written by [`super::crontab`].
//!
//! Expressions are parsed by the `croner` crate, restricted to what every
//! cron accepts (digits, month and weekday names, `* , - /`): the crontab
//! strata prints must mean to cron exactly what the schedule means here.
//! Like the computation of upcoming runs, nothing here reads the clock;
//! callers pass `now`.
//!
//! Daylight saving time follows Vixie cron and croner: a job at a fixed
//! time that falls in the hour skipped in spring runs at the first time
//! after the gap; a fixed-time job in the hour repeated in autumn runs
//! once, at the first occurrence; wildcard hours (`0 * * * *`) run in
//! both copies of the repeated hour and not in the skipped one.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A validated five-field cron expression.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    /// Parses `minute hour day-of-month month day-of-week`, e.g.
    /// `0 2 * * *`. Errors say which field is wrong and how.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields; a schedule is five: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\")",
                fields.len()
            ));
        }
        // croner understands extensions (L, W, #, +, ?, @daily) that cron
        // does not: refuse them so the crontab export cannot change meaning.
        for (i, field) in fields.iter().enumerate() {
            for token in field.split([',', '-', '/']) {
                let upper = token.to_ascii_uppercase();
                let ok = token == "*"
                    || (!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()))
                    || (i == 3 && MONTHS.contains(&upper.as_str()))
                    || (i == 4 && DAYS.contains(&upper.as_str()));
                if !ok {
                    return Err(format!(
                        "{text:?}: {} field {field:?}: {}",
                        FIELDS[i],
                        if token.is_empty() {
                            "a list, range or step is missing a value".to_string()
                        } else {
                            format!(
                                "{token:?} is not plain cron (use numbers{}, `*`, `,`, `-` and `/`)",
                                match i {
                                    3 => " or JAN-DEC",
                                    4 => " or SUN-SAT",
                                    _ => "",
                                }
                            )
                        }
                    ));
                }
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Schedule {
            text: fields.join(" "),
            cron,
        })
    }

    /// The expression, fields separated by single spaces.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The next `count` runs strictly after `after`, as wall-clock times
    /// in `tz`. Fewer when the expression never matches again (e.g.
    /// `0 0 31 2 *`).
    pub fn next_runs(&self, tz: Tz, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Tz>> {
        self.cron
            .iter_after(after.with_timezone(&tz))
            .take(count)
            .collect()
    }
}

impl Schedule {
    /// The latest run at or before `at`, as wall-clock time in `tz` (the
    /// slot a scheduler found due; see [`crate::scheduler`]).
    pub fn previous_run(&self, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Tz>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn utc_runs(expr: &str, tz: Tz, after: &str, n: usize) -> Vec<String> {
        Schedule::parse(expr)
            .unwrap()
            .next_runs(tz, at(after), n)
            .into_iter()
            .map(|t| t.with_timezone(&Utc).format("%Y-%m-%dT%H:%MZ").to_string())
            .collect()
    }

    #[test]
    fn daily_in_utc() {
        assert_eq!(
            utc_runs("0 2 * * *", UTC, "2026-11-20T12:00:00Z", 3),
            [
                "2026-11-21T02:00Z",
                "2026-11-22T02:00Z",
                "2026-11-23T02:00Z"
            ]
        );
        // Strictly after: a run at exactly `now` is not upcoming.
        assert_eq!(
            utc_runs("0 2 * * *", UTC, "2026-11-21T02:00:00Z", 1),
            ["2026-11-22T02:00Z"]
        );
    }

    #[test]
    fn weekly_and_monthly() {
        // 2026-11-20 is a Friday; the next Sundays are the 22nd and 29th.
        assert_eq!(
            utc_runs("0 3 * * 0", UTC, "2026-11-20T12:00:00Z", 2),
            ["2026-11-22T03:00Z", "2026-11-29T03:00Z"]
        );
        assert_eq!(
            utc_runs("0 3 * * sun", UTC, "2026-11-20T12:00:00Z", 1),
            ["2026-11-22T03:00Z"]
        );
        assert_eq!(
            utc_runs("0 4 1 * *", UTC, "2026-11-20T12:00:00Z", 2),
            ["2026-12-01T04:00Z", "2027-01-01T04:00Z"]
        );
    }

    #[test]
    fn time_zone_shifts_the_utc_time() {
        // 02:00 in Berlin is 01:00Z in winter (CET, +01:00).
        let runs =
            Schedule::parse("0 2 * * *")
                .unwrap()
                .next_runs(Berlin, at("2026-11-20T12:00:00Z"), 1);
        assert_eq!(runs[0].to_rfc3339(), "2026-11-21T02:00:00+01:00");
        assert_eq!(runs[0].with_timezone(&Utc), at("2026-11-21T01:00:00Z"));
        // ... and 00:00Z in summer (CEST, +02:00).
        assert_eq!(
            utc_runs("0 2 * * *", Berlin, "2026-07-01T12:00:00Z", 1),
            ["2026-07-02T00:00Z"]
        );
    }

    #[test]
    fn spring_forward_runs_once_after_the_gap() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does
        // not exist that day. The job runs at 03:00 CEST (01:00Z), once.
        assert_eq!(
            utc_runs("30 2 * * *", Berlin, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30Z",
                "2026-03-29T01:00Z",
                "2026-03-30T00:30Z"
            ]
        );
        // Hourly: the skipped hour has no run (23 runs that day).
        let day = utc_runs("0 * * * *", Berlin, "2026-03-28T22:59:00Z", 30);
        let on_day: Vec<_> = day
            .iter()
            .filter(|t| at(&format!("{}:00Z", &t[..16])) < at("2026-03-29T22:00:00Z"))
            .collect();
        assert_eq!(on_day.len(), 23);
        // 01:00 CET (00:00Z) is followed by 03:00 CEST (01:00Z).
        assert_eq!(on_day[1..3], ["2026-03-29T00:00Z", "2026-03-29T01:00Z"]);
    }

    #[test]
    fn fall_back_runs_fixed_jobs_once() {
        // 2026-10-25: Berlin shows 02:00-03:00 twice (+02:00, then +01:00).
        // A fixed 02:30 job runs at the first 02:30 only.
        let runs =
            Schedule::parse("30 2 * * *")
                .unwrap()
                .next_runs(Berlin, at("2026-10-24T12:00:00Z"), 2);
        assert_eq!(runs[0].to_rfc3339(), "2026-10-25T02:30:00+02:00");
        assert_eq!(runs[1].to_rfc3339(), "2026-10-26T02:30:00+01:00");
        // An hourly job runs in both copies of the repeated hour.
        let hourly =
            Schedule::parse("0 * * * *")
                .unwrap()
                .next_runs(Berlin, at("2026-10-24T23:30:00Z"), 3);
        let shown: Vec<String> = hourly.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            shown,
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T03:00:00+01:00"
            ]
        );
    }

    #[test]
    fn refuses_what_cron_would_not_read_the_same() {
        for (expr, needle) in [
            ("0 2 * *", "has 4 fields"),
            ("0 0 2 * * *", "has 6 fields"),
            ("@daily", "has 1 fields"),
            ("0 2 L * *", "day-of-month field \"L\""),
            ("0 2 * * 5#2", "\"5#2\" is not plain cron"),
            ("0 2 * * +MON", "day-of-week"),
            ("0 2 15W * *", "\"15W\""),
            ("0 2 ? * *", "\"?\""),
            ("0 2 * MON *", "month field"),
            ("0 2 1, * *", "missing a value"),
            ("61 2 * * *", "\"61 2 * * *\""),
            ("0 24 * * *", "\"0 24 * * *\""),
            ("0/5 2 * * *", "\"0/5 2 * * *\""),
        ] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(e.contains(needle), "{expr}: {e}");
        }
        for ok in [
            "*/15 * * * *",
            "0 2 * * *",
            "0 3 * * 0",
            "0 3 * * 7",
            "0 4 1 * *",
            "0 9-17/2 * JAN-MAR mon-fri",
            "5,35 0-6 1,15 */2 SUN",
        ] {
            Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            Schedule::parse("  0   2 * *  *").unwrap().as_str(),
            "0 2 * * *"
        );
    }

    #[test]
    fn never_matching_expression_has_no_runs() {
        assert!(utc_runs("0 0 31 2 *", UTC, "2026-01-01T00:00:00Z", 2).is_empty());
    }
}

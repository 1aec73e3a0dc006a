//! Recovery target times as operators write them: RFC 3339,
//! `YYYY-MM-DD HH:MM:SS[.frac][±TZ]` (no zone means UTC), and relative
//! times (`15 minutes ago`, `-15m`, `2h ago`). Pure: the clock is passed
//! in, so tests and `--json` output see the same instant.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

/// Parses `text` into an instant; relative forms count back from `now`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Some(d) = relative(t) {
        // issue 13 item 5: `1000000000w ago` overflowed chrono and panicked
        return now.checked_sub_signed(d).ok_or_else(|| {
            format!("{text:?} reaches before the earliest time strata can represent")
        });
    }
    // `2026-11-23 12:00:00[.frac]` with an optional zone (`+01`, `+01:00`,
    // `+0100`, `Z`, ` UTC`), and the same with `T`.
    let s = match t.as_bytes().get(10) {
        Some(b'T') => format!("{} {}", &t[..10], &t[11..]),
        _ => t.to_string(),
    };
    let (body, zone) = split_zone(&s);
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(body.trim(), fmt) {
            return match zone {
                None => Ok(n.and_utc()),
                Some(off) => n
                    .and_local_timezone(off)
                    .single()
                    .map(|d| d.with_timezone(&Utc))
                    .ok_or_else(|| format!("{text:?}: not a valid local time")),
            };
        }
    }
    Err(format!(
        "{text:?} is not a time; write RFC 3339 (2026-11-23T12:00:00Z), \
         `2026-11-23 12:00:00[+01]` (no zone means UTC) or a relative time (`15 minutes ago`, `-15m`)"
    ))
}

/// Splits a trailing zone off `s`: `Z`, `UTC`, `+HH`, `+HH:MM`, `+HHMM`.
fn split_zone(s: &str) -> (&str, Option<FixedOffset>) {
    let trimmed = s.trim_end();
    for suffix in [" UTC", "UTC", "Z"] {
        if let Some(b) = trimmed.strip_suffix(suffix) {
            return (b, FixedOffset::east_opt(0));
        }
    }
    // the sign of a zone comes after the time part (the date has '-')
    let Some(time_start) = trimmed.find(' ') else {
        return (trimmed, None);
    };
    let Some(pos) = trimmed[time_start..]
        .rfind(['+', '-'])
        .map(|p| p + time_start)
    else {
        return (trimmed, None);
    };
    let (body, zone) = trimmed.split_at(pos);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (trimmed, None);
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok(), Some(0)),
        4 => (digits[..2].parse().ok(), digits[2..].parse().ok()),
        _ => (None, None),
    };
    match (h, m) {
        (Some(h), Some(m)) if h <= 15 && m < 60 => {
            (body, FixedOffset::east_opt(sign * (h * 3600 + m * 60)))
        }
        _ => (trimmed, None),
    }
}

/// `15 minutes ago`, `2h ago`, `-15m`, `-1 day`. A count too large for
/// any duration gives [`chrono::TimeDelta::MAX`], which no instant can go
/// back by (so the caller refuses it as out of range, not as nonsense).
fn relative(s: &str) -> Option<chrono::Duration> {
    let body = if let Some(b) = s.strip_suffix("ago") {
        b.trim()
    } else {
        s.strip_prefix('-')?.trim()
    };
    let split = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (n, unit) = body.split_at(split);
    if n.is_empty() {
        return None;
    }
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "week" | "weeks" => 7 * 86400,
        _ => return None,
    };
    Some(
        n.parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(secs))
            .and_then(chrono::Duration::try_seconds)
            .unwrap_or(chrono::TimeDelta::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn p(s: &str) -> String {
        parse_time(s, now())
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn absolute_forms() {
        assert_eq!(p("2026-11-23T10:00:00Z"), "2026-11-23T10:00:00Z");
        assert_eq!(p("2026-11-23T10:00:00+02:00"), "2026-11-23T08:00:00Z");
        assert_eq!(p("2026-11-23 10:00:00"), "2026-11-23T10:00:00Z");
        assert_eq!(p("2026-11-23 10:00:00.25"), "2026-11-23T10:00:00.250Z");
        assert_eq!(p("2026-11-23 10:00:00+01"), "2026-11-23T09:00:00Z");
        assert_eq!(p("2026-11-23 10:00:00-0130"), "2026-11-23T11:30:00Z");
        assert_eq!(p("2026-11-23 10:00:00.5+05:30"), "2026-11-23T04:30:00.500Z");
        assert_eq!(p("2026-11-23 10:00:00 UTC"), "2026-11-23T10:00:00Z");
        assert_eq!(p("2026-11-23 10:00"), "2026-11-23T10:00:00Z");
    }

    #[test]
    fn relative_forms() {
        assert_eq!(p("15 minutes ago"), "2026-11-23T11:45:00Z");
        assert_eq!(p("-15m"), "2026-11-23T11:45:00Z");
        assert_eq!(p("2h ago"), "2026-11-23T10:00:00Z");
        assert_eq!(p("-1 day"), "2026-11-22T12:00:00Z");
        assert_eq!(p("30s ago"), "2026-11-23T11:59:30Z");
    }

    /// issue 13 item 5: relative times beyond chrono's range panicked
    /// (`DateTime - TimeDelta overflowed`), through --to-time, --at,
    /// drills and `restore --all`; they are refused instead.
    #[test]
    fn relative_times_out_of_range_are_refused() {
        for s in [
            "1000000000w ago",
            "-1000000000w",
            "9223372036854775807s ago",
            "15250284452471 seconds ago",
            "-99999999999999 days",
            "99999999999999999999999 weeks ago",
        ] {
            let r = p(s);
            assert!(
                r.starts_with("ERR") && r.contains("earliest time"),
                "{s}: {r}"
            );
        }
        // the largest that fits still works
        assert!(!p("100000w ago").starts_with("ERR"));
    }

    #[test]
    fn nonsense_is_refused() {
        for s in [
            "",
            "yesterday",
            "15 parsecs ago",
            "2026-13-01 00:00:00",
            "-m",
            "12:00",
        ] {
            assert!(p(s).starts_with("ERR"), "{s}: {}", p(s));
        }
    }
}

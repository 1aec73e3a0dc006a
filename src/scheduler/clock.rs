//! The scheduler's clock: the real time, or, for tests, a fake one that
//! starts at a chosen instant and runs N times faster than real time.
//!
//! Test-only knobs (read from the environment by `strata schedule run`,
//! deliberately not command-line flags so they never show in `--help`):
//!
//! - `STRATA_CLOCK_START=2026-01-01T00:59:58Z`: the daemon's "now" when
//!   it starts;
//! - `STRATA_CLOCK_SPEED=3600`: fake seconds per real second (default 1),
//!   so an hourly tier comes due every real second.
//!
//! Only the scheduler's decisions (which slot is due, catch-up, the times
//! in its log lines) use this clock. Backups themselves keep the real
//! time: their ids, manifests and locks must never carry a fake date.

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};

pub const START_VAR: &str = "STRATA_CLOCK_START";
pub const SPEED_VAR: &str = "STRATA_CLOCK_SPEED";

/// Real or fake time, see the module docs.
#[derive(Debug, Clone)]
pub struct Clock {
    /// When the clock was made (real).
    origin: Instant,
    /// The time it showed then.
    start: DateTime<Utc>,
    /// Fake seconds per real second.
    speed: f64,
    fake: bool,
}

impl Clock {
    /// The real clock.
    pub fn real() -> Clock {
        Clock {
            origin: Instant::now(),
            start: Utc::now(),
            speed: 1.0,
            fake: false,
        }
    }

    /// A clock showing `start` now and running `speed` times real time.
    pub fn fake(start: DateTime<Utc>, speed: f64) -> Clock {
        Clock {
            origin: Instant::now(),
            start,
            speed,
            fake: true,
        }
    }

    /// The clock the environment asks for (see the module docs); the real
    /// one when neither variable is set.
    pub fn from_env() -> Result<Clock> {
        let start = std::env::var(START_VAR).ok().filter(|s| !s.is_empty());
        let speed = std::env::var(SPEED_VAR).ok().filter(|s| !s.is_empty());
        Clock::from_settings(start.as_deref(), speed.as_deref())
    }

    fn from_settings(start: Option<&str>, speed: Option<&str>) -> Result<Clock> {
        if start.is_none() && speed.is_none() {
            return Ok(Clock::real());
        }
        let start = match start {
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    Error::usage(format!("{START_VAR}={s:?}: {e}"))
                        .hint("give an RFC 3339 time like 2026-01-01T00:59:58Z, or unset it")
                })?
                .with_timezone(&Utc),
            None => Utc::now(),
        };
        let speed = match speed {
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => v,
                _ => {
                    return Err(Error::usage(format!(
                        "{SPEED_VAR}={s:?} is not a positive number"
                    ))
                    .hint("e.g. 3600 makes an hour pass in a second; unset it for real time"));
                }
            },
            None => 1.0,
        };
        Ok(Clock::fake(start, speed))
    }

    pub fn is_fake(&self) -> bool {
        self.fake
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The current time on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        if !self.fake {
            return Utc::now();
        }
        self.at(self.origin.elapsed())
    }

    /// The time shown `real` after the clock was made.
    fn at(&self, real: StdDuration) -> DateTime<Utc> {
        let fake_nanos = (real.as_nanos() as f64 * self.speed).min(i64::MAX as f64) as i64;
        self.start + Duration::nanoseconds(fake_nanos)
    }

    /// How long to sleep, in real time, until the clock shows `t` (zero
    /// when it already has). Rounded up a little so a wake-up does not land
    /// just before `t`.
    pub fn real_until(&self, t: DateTime<Utc>) -> StdDuration {
        real_wait(t - self.now(), self.speed)
    }
}

/// Real time for `fake` of clock time at `speed`, rounded up to the next
/// millisecond; zero for a time in the past.
fn real_wait(fake: Duration, speed: f64) -> StdDuration {
    let Ok(fake) = fake.to_std() else {
        return StdDuration::ZERO;
    };
    let real = fake.as_secs_f64() / speed;
    StdDuration::from_millis((real * 1000.0).ceil().min(u64::MAX as f64) as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fake_clock_runs_at_its_speed() {
        let c = Clock::fake(at("2026-01-01T00:00:00Z"), 3600.0);
        assert_eq!(c.at(StdDuration::ZERO), at("2026-01-01T00:00:00Z"));
        assert_eq!(c.at(StdDuration::from_secs(2)), at("2026-01-01T02:00:00Z"));
        assert_eq!(
            c.at(StdDuration::from_millis(500)),
            at("2026-01-01T00:30:00Z")
        );
    }

    #[test]
    fn waits_are_scaled_and_never_negative() {
        assert_eq!(
            real_wait(Duration::hours(1), 3600.0),
            StdDuration::from_millis(1001)
        );
        assert_eq!(
            real_wait(Duration::seconds(90), 1.0),
            StdDuration::from_millis(90_001)
        );
        assert_eq!(real_wait(Duration::seconds(-5), 1.0), StdDuration::ZERO);
    }

    #[test]
    fn settings_are_checked() {
        assert!(!Clock::from_settings(None, None).unwrap().is_fake());
        let c = Clock::from_settings(Some("2026-01-01T00:59:58Z"), Some("60")).unwrap();
        assert!(c.is_fake());
        assert_eq!(c.speed(), 60.0);
        let e = Clock::from_settings(Some("yesterday"), None).unwrap_err();
        assert!(e.message.contains(START_VAR), "{e}");
        for bad in ["0", "-2", "fast", "inf"] {
            let e = Clock::from_settings(None, Some(bad)).unwrap_err();
            assert!(e.message.contains(SPEED_VAR), "{bad}: {e}");
        }
    }
}

//! The daemon's log: one line per event on stdout, as `key=value` text
//! (for people and journald) or one JSON object per line (for log
//! shippers). Every line carries the time, a level and the event name;
//! the other fields depend on the event.
//!
//! Events: `daemon_started`, `no_scheduled_tiers`, `tier_scheduled` (one
//! per tier at start), `tier_due`, `catch_up`, `tier_not_run`,
//! `job_waiting`, `job_started`, `job_finished`, `job_failed`,
//! `job_skipped`, `shutdown_requested`, `abandoning_jobs`,
//! `processes_terminated`, `job_abandoned`, `lock_removed`,
//! `lock_not_removed`, `state_not_saved`, `state_in_future`,
//! `sighup_ignored`, `daemon_stopped`.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// One event, built field by field.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub level: &'static str,
    pub name: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl Event {
    pub fn info(time: DateTime<Utc>, name: &'static str) -> Event {
        Event {
            time,
            level: "info",
            name,
            fields: Vec::new(),
        }
    }

    pub fn warn(time: DateTime<Utc>, name: &'static str) -> Event {
        Event {
            level: "warn",
            ..Event::info(time, name)
        }
    }

    pub fn error(time: DateTime<Utc>, name: &'static str) -> Event {
        Event {
            level: "error",
            ..Event::info(time, name)
        }
    }

    /// Adds a field (skipped when `v` is JSON null).
    pub fn with(mut self, key: &'static str, v: impl Into<Value>) -> Event {
        let v = v.into();
        if !v.is_null() {
            self.fields.push((key, v));
        }
        self
    }

    pub fn field(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The line, without its newline.
    pub fn render(&self, format: LogFormat) -> String {
        let ts = self.time.to_rfc3339_opts(SecondsFormat::Millis, true);
        match format {
            LogFormat::Json => {
                // Written field by field so `ts`, `level` and `event` come
                // first, then the fields in the order they were added.
                let mut line = String::from("{");
                let mut put = |k: &str, v: &Value| {
                    if line.len() > 1 {
                        line.push(',');
                    }
                    line.push_str(&Value::String(k.to_string()).to_string());
                    line.push(':');
                    line.push_str(&v.to_string());
                };
                put("ts", &Value::String(ts));
                put("level", &Value::String(self.level.into()));
                put("event", &Value::String(self.name.into()));
                for (k, v) in &self.fields {
                    put(k, v);
                }
                line.push('}');
                line
            }
            LogFormat::Text => {
                let mut s = format!("{ts} {:<5} {}", self.level.to_uppercase(), self.name);
                for (k, v) in &self.fields {
                    s.push(' ');
                    s.push_str(k);
                    s.push('=');
                    s.push_str(&text_value(v));
                }
                s
            }
        }
    }
}

/// A value for `key=value` text: bare when it is a plain word, else quoted
/// like a JSON string (so a line always splits back into its fields).
fn text_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => return other.to_string(),
    };
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@".contains(&b));
    if plain {
        s
    } else {
        Value::String(s).to_string()
    }
}

/// Writes events to stdout, one line each, flushed at once (a daemon's
/// stdout is a pipe to journald or a file: nothing may wait in a buffer).
#[derive(Debug, Clone, Copy)]
pub struct Log {
    pub format: LogFormat,
}

impl Log {
    pub fn emit(&self, e: &Event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", e.render(self.format));
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T02:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn text_lines_split_back_into_fields() {
        let e = Event::error(t(), "job_failed")
            .with("tier", "daily")
            .with("source", "app")
            .with("error", "pg_dump failed (exit status: 1): no \"x\"")
            .with("seconds", 1.5)
            .with("hint", Value::Null);
        assert_eq!(
            e.render(LogFormat::Text),
            r#"2026-11-23T02:00:00.250Z ERROR job_failed tier=daily source=app error="pg_dump failed (exit status: 1): no \"x\"" seconds=1.5"#
        );
    }

    #[test]
    fn json_lines_are_one_object() {
        let e = Event::info(t(), "job_started")
            .with("tier", "daily")
            .with("source", "app");
        let line = e.render(LogFormat::Json);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-11-23T02:00:00.250Z");
        assert_eq!(v["level"], "info");
        assert_eq!(v["event"], "job_started");
        assert_eq!(v["tier"], "daily");
        assert_eq!(v["source"], "app");
        assert!(
            line.starts_with(
                r#"{"ts":"2026-11-23T02:00:00.250Z","level":"info","event":"job_started","tier""#
            ),
            "{line}"
        );
    }
}

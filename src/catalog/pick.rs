//! Choosing a backup for a point in time: `restore --at T` on snapshot
//! sources (Redis, Chroma), and drills that restore "as of" a time.
//!
//! The instant a backup counts for is its `started` time, the one `list`
//! shows and the backup id encodes: strata asks the server for the
//! snapshot right after it. It is in the plain part of the manifest, so
//! choosing needs no identity and no decryption. (A Redis server cuts its
//! RDB when it forks for the sync, a moment after `started`; with diskless
//! sync `repl-diskless-sync-delay` seconds later, so a snapshot chosen
//! for T may hold writes up to that long after its start. Redis manifests
//! record that moment, sealed, as `redis.captured`.)
//!
//! Pure: entries and the time come in, the choice or a clear error goes
//! out.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Entry, Repository};
use crate::error::{Error, Kind, Result};

/// The backup chosen for a time.
#[derive(Debug, Clone)]
pub struct Picked {
    pub entry: Entry,
    /// When the backup was taken (its `started`).
    pub taken: DateTime<Utc>,
    /// The time asked for.
    pub at: DateTime<Utc>,
}

impl Picked {
    /// How long before the asked time the backup was taken (never negative).
    pub fn before(&self) -> chrono::Duration {
        self.at - self.taken
    }

    /// `using snapshot ID taken at X, N min before T` for the operator,
    /// with a warning when a Chroma export was still reading after T (it
    /// has no snapshot: each page is read at its own moment, so changes
    /// made after T may be in it; a PostgreSQL dump reads one snapshot
    /// taken at its start, a Redis RDB is cut at its start).
    pub fn describe(&self) -> String {
        let s = self.entry.summary();
        let mut text = format!(
            "using {} {} taken at {}, {} before {}",
            noun(&s.kind),
            s.id,
            show_time(self.taken),
            human_duration(self.before()),
            show_time(self.at)
        );
        if s.finished > self.at && s.source_kind == crate::config::SourceKind::Chroma {
            text.push_str(&format!(
                "; warning: it read data until {}, after {}: changes made in between may be in it",
                show_time(s.finished),
                show_time(self.at)
            ));
        }
        text
    }
}

fn noun(kind: &str) -> &str {
    match kind {
        "snapshot" => "snapshot",
        "dump" => "dump",
        "base" => "base backup",
        _ => "backup",
    }
}

/// The newest backup of `source` (of `kind`, if given) taken at or before
/// `at`, from `entries` in any order. The error names `at` and the
/// earliest backup there is.
pub fn at_or_before(
    entries: &[Entry],
    source: &str,
    kind: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Picked> {
    let of_kind = entries
        .iter()
        .filter(|e| e.summary().source == source && kind.is_none_or(|k| e.summary().kind == k));
    let what = kind.map_or("backup".to_string(), |k| format!("{} backup", noun(k)));
    let best = of_kind
        .clone()
        .filter(|e| e.summary().started <= at)
        .max_by(|a, b| {
            (a.summary().started, &a.summary().id).cmp(&(b.summary().started, &b.summary().id))
        });
    if let Some(e) = best {
        return Ok(Picked {
            entry: e.clone(),
            taken: e.summary().started,
            at,
        });
    }
    let earliest = of_kind.min_by_key(|e| e.summary().started);
    Err(match earliest {
        None => Error::new(
            Kind::Integrity,
            format!("source {source} has no {what} at all, so none taken at or before {}", show_time(at)),
        )
        .hint(format!(
            "take one with `strata backup {source}`; `strata list {source}` shows what exists"
        )),
        Some(e) => Error::usage(format!(
            "source {source} has no {what} taken at or before {}: the earliest is {} taken at {}, {} later",
            show_time(at),
            e.summary().id,
            show_time(e.summary().started),
            human_duration(e.summary().started - at)
        ))
        .hint(format!(
            "choose a time at or after {} with --at, or a backup with --backup ID (`strata list {source}`)",
            show_time(e.summary().started)
        )),
    })
}

impl Repository {
    /// [`at_or_before`] over this repository's backups of `source`.
    pub async fn pick_at(
        &self,
        source: &str,
        kind: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Picked> {
        let (entries, unreadable) = self.backups(Some(source)).await?;
        let picked = at_or_before(&entries, source, kind, at);
        let chosen = picked.as_ref().ok().map(|p| &p.entry.summary().id);
        super::refuse_unreadable(source, "newest", &unreadable, chosen, Some(at))?;
        picked
    }
}

/// Parses an `--at` argument (RFC 3339, `YYYY-MM-DD HH:MM[:SS][+TZ]`,
/// `15 minutes ago`); a usage error naming the flag otherwise.
pub fn parse_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let t =
        crate::timeparse::parse_time(text, now).map_err(|e| Error::usage(format!("--at: {e}")))?;
    if t > now {
        return Err(
            Error::usage(format!("--at {}: that is in the future", show_time(t)))
                .hint("give a past time; without --at the newest backup is used"),
        );
    }
    Ok(t)
}

/// `2026-11-23T12:00:00Z`.
pub fn show_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `0 s`, `42 s`, `17 min`, `3 h 5 min`, `2 d 4 h`, for messages.
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => match (s / 3600, (s % 3600) / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => match (s / 86400, (s % 86400) / 3600) {
            (d, 0) => format!("{d} d"),
            (d, h) => format!("{d} d {h} h"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::BackupId;
    use crate::catalog::manifest::{MANIFEST_FORMAT, ManifestFile, Summary};
    use crate::config::SourceKind;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn entry(source: &str, kind: &str, started: &str) -> Entry {
        let started = t(started);
        let id = BackupId::new(started);
        let summary = Summary {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            source: source.into(),
            source_kind: SourceKind::Redis,
            kind: kind.into(),
            tier: None,
            started,
            finished: started + chrono::Duration::seconds(30),
            strata_version: "test".into(),
            plain_size: 0,
            stored_size: 0,
            objects: vec![],
            label: None,
            note: None,
            keep_until: None,
        };
        // through serde, so fields others add to ManifestFile default
        let file: ManifestFile =
            serde_json::from_value(serde_json::json!({ "summary": summary, "sealed": "" }))
                .unwrap();
        Entry {
            manifest_key: Repository::manifest_key(source, &id),
            file: Arc::new(file),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            entry("cache", "snapshot", "2026-11-23T10:00:00Z"),
            entry("cache", "snapshot", "2026-11-23T12:00:00Z"),
            entry("cache", "snapshot", "2026-11-23T11:00:00Z"),
            entry("cache", "other", "2026-11-23T11:30:00Z"),
            entry("app", "snapshot", "2026-11-23T11:45:00Z"),
        ]
    }

    #[test]
    fn newest_at_or_before() {
        let e = entries();
        let p = at_or_before(&e, "cache", Some("snapshot"), t("2026-11-23T11:50:00Z")).unwrap();
        assert_eq!(p.taken, t("2026-11-23T11:00:00Z"));
        assert_eq!(p.before(), chrono::Duration::minutes(50));
        assert_eq!(
            p.describe(),
            format!(
                "using snapshot {} taken at 2026-11-23T11:00:00Z, 50 min before 2026-11-23T11:50:00Z",
                p.entry.summary().id
            )
        );
        // any kind: the newer `other` backup counts
        let p = at_or_before(&e, "cache", None, t("2026-11-23T11:50:00Z")).unwrap();
        assert_eq!(p.taken, t("2026-11-23T11:30:00Z"));
        // exactly at T counts
        let p = at_or_before(&e, "cache", Some("snapshot"), t("2026-11-23T12:00:00Z")).unwrap();
        assert_eq!(
            (p.taken, p.before().num_seconds()),
            (t("2026-11-23T12:00:00Z"), 0)
        );
        assert!(p.describe().contains(", 0 s before"));
        // long after the newest
        let p = at_or_before(&e, "cache", Some("snapshot"), t("2026-11-25T15:00:00Z")).unwrap();
        assert_eq!(p.taken, t("2026-11-23T12:00:00Z"));
        assert_eq!(human_duration(p.before()), "2 d 3 h");
    }

    #[test]
    fn nothing_before_names_the_earliest() {
        let e = entries();
        let err =
            at_or_before(&e, "cache", Some("snapshot"), t("2026-11-23T09:30:00Z")).unwrap_err();
        assert_eq!(err.kind, Kind::Usage);
        assert!(
            err.message.contains("2026-11-23T09:30:00Z"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("taken at 2026-11-23T10:00:00Z, 30 min later"),
            "{}",
            err.message
        );
        let err = at_or_before(&e, "nope", None, t("2026-11-23T09:30:00Z")).unwrap_err();
        assert!(err.message.contains("no backup at all"), "{}", err.message);
        let err = at_or_before(&e, "app", Some("dump"), t("2026-11-24T00:00:00Z")).unwrap_err();
        assert!(
            err.message.contains("no dump backup at all"),
            "{}",
            err.message
        );
    }

    #[test]
    fn durations_and_parsing() {
        let d = |s| human_duration(chrono::Duration::seconds(s));
        assert_eq!(
            [
                d(0),
                d(59),
                d(60),
                d(3599),
                d(3600),
                d(3660 + 3600),
                d(86400)
            ],
            ["0 s", "59 s", "1 min", "59 min", "1 h", "2 h 1 min", "1 d"]
        );
        let now = t("2026-11-23T12:00:00Z");
        assert_eq!(
            parse_at("15 minutes ago", now).unwrap(),
            t("2026-11-23T11:45:00Z")
        );
        assert_eq!(
            parse_at("2026-11-23 11:00", now).unwrap(),
            t("2026-11-23T11:00:00Z")
        );
        assert!(
            parse_at("tomorrow", now)
                .unwrap_err()
                .message
                .starts_with("--at:")
        );
        assert!(
            parse_at("2026-11-24T00:00:00Z", now)
                .unwrap_err()
                .message
                .contains("future")
        );
    }
}

//! Drill reports in the repository: `drills/<id>.json`, stored like
//! manifests — a plain summary plus the whole report sealed (age) to the
//! repository's recipients.
//!
//! The summary holds what history, `status` and `metrics` need — times,
//! verdict, per source RTO, RPO, bytes and how many checks failed — and
//! nothing about content: no table, database or key names, no query
//! results, no error texts (those can quote data). So a monitoring host
//! holding only public keys can show the last drill; reading the full
//! report (`strata drill history --id ID`) needs the identity, which
//! drills need anyway.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::report::{DrillReport, Outcome};
use crate::catalog::Repository;
use crate::error::{Error, Result};
use crate::keys::{Identity, Recipient};
use crate::pipeline::{seal, unseal};
use crate::storage::PutMode;

pub const DRILLS: &str = "drills/";

/// The plain part of a stored drill report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillSummary {
    pub id: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub target: String,
    pub target_time: DateTime<Utc>,
    pub tier: Option<String>,
    pub host: String,
    pub strata_version: String,
    pub passed: bool,
    pub rto_seconds: f64,
    pub faults: usize,
    pub sources: Vec<SourceSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceSummary {
    pub source: String,
    pub kind: String,
    pub method: Option<String>,
    pub passed: bool,
    pub skipped: bool,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub rto_target_seconds: Option<f64>,
    pub rpo_target_seconds: Option<f64>,
    pub bytes: u64,
    pub checks: usize,
    pub checks_failed: usize,
}

impl DrillSummary {
    pub fn of(r: &DrillReport) -> DrillSummary {
        DrillSummary {
            id: r.id.clone(),
            started: r.started,
            finished: r.finished,
            target: r.target.clone(),
            target_time: r.target_time,
            tier: r.tier.clone(),
            host: r.host.clone(),
            strata_version: r.strata_version.clone(),
            passed: r.passed,
            rto_seconds: r.rto_seconds,
            faults: r.faults.len(),
            sources: r
                .sources
                .iter()
                .map(|s| SourceSummary {
                    source: s.source.clone(),
                    kind: s.kind.clone(),
                    method: s.method.clone(),
                    passed: s.passed,
                    skipped: s.skipped,
                    rto_seconds: s.rto_seconds,
                    rpo_seconds: s.rpo_seconds,
                    rto_target_seconds: s.rto_target_seconds,
                    rpo_target_seconds: s.rpo_target_seconds,
                    bytes: s.bytes,
                    checks: s.checks.len(),
                    checks_failed: s
                        .checks
                        .iter()
                        .filter(|c| c.outcome == Outcome::Fail)
                        .count(),
                })
                .collect(),
        }
    }

    /// The largest RPO among the sources (the deployment's RPO).
    pub fn rpo_seconds(&self) -> Option<f64> {
        self.sources
            .iter()
            .filter_map(|s| s.rpo_seconds)
            .max_by(|a, b| a.total_cmp(b))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DrillFile {
    summary: DrillSummary,
    sealed: String,
}

pub fn key(id: &str) -> String {
    format!("{DRILLS}{id}.json")
}

/// Stores a report (create-only); returns its key.
pub async fn save(repo: &Repository, r: &DrillReport, recipients: &[Recipient]) -> Result<String> {
    let whole = serde_json::to_vec(r).expect("report serialises");
    let file = DrillFile {
        summary: DrillSummary::of(r),
        sealed: seal(recipients, &whole)?,
    };
    let k = key(&r.id);
    let bytes = serde_json::to_vec_pretty(&file).expect("report serialises");
    repo.storage()
        .put_bytes(&k, bytes.into(), PutMode::Create)
        .await?;
    Ok(k)
}

/// Every stored drill's summary, oldest first. Unreadable files are
/// skipped with a warning (history is informational).
pub async fn history(repo: &Repository) -> Result<Vec<DrillSummary>> {
    let mut out = Vec::new();
    for o in repo.storage().list(DRILLS).await? {
        if !o.key.ends_with(".json") {
            continue;
        }
        let bytes = repo.storage().get_bytes(&o.key).await?;
        match serde_json::from_slice::<DrillFile>(&bytes) {
            Ok(f) => out.push(f.summary),
            Err(e) => eprintln!("warning: drill report {} is unreadable: {e}", o.key),
        }
    }
    out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    Ok(out)
}

/// The whole report of drill `id` (needs the identity).
pub async fn load(repo: &Repository, id: &str, identities: &[Identity]) -> Result<DrillReport> {
    let k = key(id);
    let bytes = repo
        .storage()
        .get_bytes(&k)
        .await
        .map_err(|e| Error::from(e).hint("`strata drill history` lists the stored drills"))?;
    let f: DrillFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::integrity(format!("drill report {k} is unreadable: {e}")))?;
    let plain = unseal(&format!("drill report {k}"), identities, &f.sealed)?;
    let r: DrillReport = serde_json::from_slice(&plain)
        .map_err(|e| Error::integrity(format!("drill report {k} is unreadable: {e}")))?;
    if DrillSummary::of(&r) != f.summary {
        return Err(Error::integrity(format!(
            "drill report {k}: the plain summary does not match the sealed report (it was altered)"
        )));
    }
    Ok(r)
}

/// Prometheus text for the drill history (oldest first): when the last
/// drill ran and whether it passed, when one last passed, and the last
/// drill's RTO and RPO per source.
pub fn prometheus(history: &[DrillSummary]) -> String {
    let Some(last) = history.last() else {
        return String::new();
    };
    let mut o = String::new();
    let mut gauge = |name: &str, help: &str, lines: Vec<(String, f64)>| {
        o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, v) in lines {
            o.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let ts = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
    gauge(
        "strata_drill_last_run_timestamp_seconds",
        "When the last recovery drill finished.",
        vec![(String::new(), ts(last.finished))],
    );
    gauge(
        "strata_drill_last_success",
        "1 if the last recovery drill passed, else 0.",
        vec![(String::new(), if last.passed { 1.0 } else { 0.0 })],
    );
    if let Some(ok) = history.iter().rev().find(|d| d.passed) {
        gauge(
            "strata_drill_last_success_timestamp_seconds",
            "When the last passing recovery drill finished.",
            vec![(String::new(), ts(ok.finished))],
        );
    }
    gauge(
        "strata_drill_rto_seconds",
        "RTO measured by the last drill, per source (sum without a source label).",
        std::iter::once((String::new(), last.rto_seconds))
            .chain(last.sources.iter().filter_map(|s| {
                s.rto_seconds.map(|v| {
                    (
                        format!("{{source=\"{}\"}}", crate::status::escape_label(&s.source)),
                        v,
                    )
                })
            }))
            .collect(),
    );
    gauge(
        "strata_drill_rpo_seconds",
        "RPO measured by the last drill, per source.",
        last.sources
            .iter()
            .filter_map(|s| {
                s.rpo_seconds.map(|v| {
                    (
                        format!("{{source=\"{}\"}}", crate::status::escape_label(&s.source)),
                        v,
                    )
                })
            })
            .collect(),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, passed: bool) -> DrillSummary {
        let t: DateTime<Utc> = "2026-11-01T04:00:00Z".parse().unwrap();
        DrillSummary {
            id: id.into(),
            started: t,
            finished: t + chrono::Duration::seconds(90),
            target: "latest".into(),
            target_time: t,
            tier: Some("drill".into()),
            host: "h".into(),
            strata_version: "t".into(),
            passed,
            rto_seconds: 42.5,
            faults: usize::from(!passed),
            sources: vec![SourceSummary {
                source: "db".into(),
                kind: "postgres".into(),
                method: Some("base+wal".into()),
                passed,
                skipped: false,
                rto_seconds: Some(42.5),
                rpo_seconds: Some(3.0),
                rto_target_seconds: None,
                rpo_target_seconds: None,
                bytes: 1,
                checks: 4,
                checks_failed: usize::from(!passed),
            }],
        }
    }

    #[test]
    fn metrics_of_the_history() {
        assert_eq!(prometheus(&[]), "");
        let text = prometheus(&[summary("a", true), summary("b", false)]);
        assert!(text.contains("strata_drill_last_success 0\n"), "{text}");
        assert!(
            text.contains("strata_drill_last_success_timestamp_seconds 1793505690\n"),
            "{text}"
        );
        assert!(text.contains("strata_drill_rto_seconds 42.5\n"), "{text}");
        assert!(
            text.contains("strata_drill_rpo_seconds{source=\"db\"} 3\n"),
            "{text}"
        );
    }
}

//! What a drill found: the report (JSON for machines) and its verdict.
//!
//! A source passes when it was restored, every check that ran passed, and
//! its RTO and RPO are within their targets. The drill passes when every
//! source does. Checks that could not run (amcheck not installed) are
//! `skipped`, never silently counted as passed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::restore::plan::WalRange;
pub use crate::restore::recover::Phase;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Could not run here (e.g. amcheck not installed): reported, not passed.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            outcome: if ok { Outcome::Pass } else { Outcome::Fail },
            detail: detail.into(),
        }
    }

    pub fn skipped(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            outcome: Outcome::Skipped,
            detail: detail.into(),
        }
    }
}

/// One source in a drill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceReport {
    pub source: String,
    /// `postgres`, `redis`, `chroma`.
    pub kind: String,
    /// `base+wal`, `dump`, `snapshot`, `export`.
    pub method: Option<String>,
    pub backup: Option<String>,
    /// An incremental base backup's chain, the full backup first and
    /// `backup` last (issue 18: the drill report shows the chain used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    pub passed: bool,
    /// Not drilled (a source kind the drill cannot restore yet).
    #[serde(default)]
    pub skipped: bool,
    /// Why the restore failed, when it did.
    pub error: Option<String>,
    pub hint: Option<String>,
    /// Where the sandbox server ran (`127.0.0.1:PORT`) and its directory.
    pub sandbox: Option<String>,
    pub wal: Option<WalRange>,
    /// The newest point the restore brings back (≤ the drill's target).
    pub restorable_point: Option<DateTime<Utc>>,
    /// Target time minus the restorable point.
    pub rpo_seconds: Option<f64>,
    pub rpo_target_seconds: Option<f64>,
    /// From the start of this source's restore until its server answered.
    pub rto_seconds: Option<f64>,
    pub rto_target_seconds: Option<f64>,
    /// Plain bytes restored (backup objects, plus WAL replayed).
    pub bytes: u64,
    pub throughput_bytes_per_second: Option<f64>,
    pub phases: Vec<Phase>,
    pub checks: Vec<Check>,
}

impl SourceReport {
    pub fn new(source: &str, kind: &str) -> SourceReport {
        SourceReport {
            source: source.into(),
            kind: kind.into(),
            method: None,
            backup: None,
            chain: vec![],
            passed: false,
            skipped: false,
            error: None,
            hint: None,
            sandbox: None,
            wal: None,
            restorable_point: None,
            rpo_seconds: None,
            rpo_target_seconds: None,
            rto_seconds: None,
            rto_target_seconds: None,
            bytes: 0,
            throughput_bytes_per_second: None,
            phases: vec![],
            checks: vec![],
        }
    }

    pub fn rto_met(&self) -> Option<bool> {
        Some(self.rto_seconds? <= self.rto_target_seconds?)
    }

    pub fn rpo_met(&self) -> Option<bool> {
        Some(self.rpo_seconds? <= self.rpo_target_seconds?)
    }

    /// Sets `passed` from the error, the checks and the targets.
    pub fn decide(&mut self) {
        self.passed = self.skipped
            || (self.error.is_none()
                && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
                && self.rto_met() != Some(false)
                && self.rpo_met() != Some(false));
    }

    /// One line per fault, naming the source: what an operator reads first.
    pub fn faults(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("{}: {e}", self.source));
        }
        for c in self.checks.iter().filter(|c| c.outcome == Outcome::Fail) {
            out.push(format!("{}: {}: {}", self.source, c.name, c.detail));
        }
        if self.rto_met() == Some(false) {
            out.push(format!(
                "{}: RTO {:.1}s exceeds the target {:.0}s",
                self.source,
                self.rto_seconds.unwrap_or_default(),
                self.rto_target_seconds.unwrap_or_default()
            ));
        }
        if self.rpo_met() == Some(false) {
            out.push(format!(
                "{}: RPO {:.0}s exceeds the target {:.0}s",
                self.source,
                self.rpo_seconds.unwrap_or_default(),
                self.rpo_target_seconds.unwrap_or_default()
            ));
        }
        out
    }
}

/// A whole drill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillReport {
    pub id: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// `latest`, or the time asked for (RFC 3339).
    pub target: String,
    /// The time RPO is measured against (now, for `latest`).
    pub target_time: DateTime<Utc>,
    pub tier: Option<String>,
    pub host: String,
    pub strata_version: String,
    pub dry_run: bool,
    pub passed: bool,
    /// Sum of the sources' RTOs (they are restored one after another).
    pub rto_seconds: f64,
    pub sources: Vec<SourceReport>,
    /// Every failed check, error and missed target, one line each.
    pub faults: Vec<String>,
    /// Where the report files were written (`--report DIR`).
    #[serde(default)]
    pub report_files: Vec<String>,
    /// Where the report is stored in the repository.
    #[serde(default)]
    pub stored_as: Option<String>,
}

impl DrillReport {
    /// Decides every source, then the drill.
    pub fn decide(&mut self) {
        for s in &mut self.sources {
            s.decide();
        }
        self.faults = self.sources.iter().flat_map(|s| s.faults()).collect();
        self.rto_seconds = self
            .sources
            .iter()
            .filter_map(|s| s.rto_seconds)
            .fold(0.0, |a, b| a + b);
        self.passed = !self.dry_run && self.sources.iter().all(|s| s.passed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_checks_decide() {
        let mut s = SourceReport::new("db", "postgres");
        s.rto_seconds = Some(10.0);
        s.rto_target_seconds = Some(60.0);
        s.rpo_seconds = Some(5.0);
        s.checks.push(Check::skipped("amcheck", "not installed"));
        s.decide();
        assert!(s.passed);
        s.rpo_target_seconds = Some(1.0);
        s.decide();
        assert!(!s.passed);
        assert_eq!(s.faults(), ["db: RPO 5s exceeds the target 1s"]);
        s.rpo_target_seconds = None;
        s.checks.push(Check::new("rows", false, "public.t: 3 ≠ 4"));
        s.decide();
        assert!(!s.passed);
        assert_eq!(s.faults(), ["db: rows: public.t: 3 ≠ 4"]);
    }

    #[test]
    fn a_dry_run_never_passes() {
        let mut r = DrillReport {
            id: "x".into(),
            started: Utc::now(),
            finished: Utc::now(),
            target: "latest".into(),
            target_time: Utc::now(),
            tier: None,
            host: "h".into(),
            strata_version: "t".into(),
            dry_run: true,
            passed: true,
            rto_seconds: 0.0,
            sources: vec![],
            faults: vec![],
            report_files: vec![],
            stored_as: None,
        };
        r.decide();
        assert!(!r.passed);
        r.dry_run = false;
        r.decide();
        assert!(r.passed);
    }
}

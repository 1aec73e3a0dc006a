//! `strata drill [--to-time T | --latest] [--source NAME]... [--report DIR]
//! [--dry-run]`: a recovery drill (see [`crate::drill`]); `strata drill
//! history`: the drills stored in the repository.
//!
//! Exit 0 when every source passed, 4 when a check failed or a target was
//! missed, 130 when interrupted (after tearing the sandbox down).

use std::path::PathBuf;

use chrono::Utc;

use super::Globals;
use crate::catalog::BackupId;
use crate::config::{Config, Source};
use crate::drill::report::DrillReport;
use crate::drill::{self, html, store};
use crate::error::{Error, Kind, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::plan::Point;
use crate::restore::sandbox::Sandbox;
use crate::util::human_bytes;

/// What `strata drill` (and the scheduler, for tiers of kind `drill`) asks for.
#[derive(Debug, Clone, Default)]
pub struct DrillArgs {
    /// Recover to this time; `None` means the latest possible.
    pub to_time: Option<String>,
    pub latest: bool,
    /// Only these sources [default: the tier's, else every source].
    pub sources: Vec<String>,
    /// A tier of kind `drill`: its sources, recorded in the report.
    pub tier: Option<String>,
    /// Also write `<id>.json` and `<id>.html` here.
    pub report: Option<PathBuf>,
    pub dry_run: bool,
    /// Where sandboxes are created [default: the system temp dir].
    pub work_dir: Option<PathBuf>,
    pub json: bool,
}

/// Runs a drill; the exit code says whether it passed.
pub async fn run(g: &Globals, a: &DrillArgs) -> Result<u8> {
    let cfg = g.config()?;
    let now = Utc::now();
    let point = match (&a.to_time, a.latest) {
        (Some(_), true) => return Err(Error::usage("give --to-time T or --latest, not both")),
        (Some(t), false) => Point::Time(
            crate::timeparse::parse_time(t, now)
                .map_err(|e| Error::usage(format!("--to-time: {e}")))?,
        ),
        (None, _) => Point::Latest,
    };
    if let Point::Time(t) = point
        && t > now
    {
        return Err(Error::usage(format!(
            "--to-time {}: that is in the future",
            t.to_rfc3339()
        )));
    }
    let sources = chosen_sources(&cfg, a)?;
    let identities = g.identities(&cfg)?;
    let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
    let repo = super::open_repository(&cfg).await?;
    let id = BackupId::new(now).to_string();
    let owner = super::server_owner(None)?;
    let work_dir = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let sandbox = if a.dry_run {
        None
    } else {
        let sb = Sandbox::create(&work_dir, &id)?;
        check_sandbox_path(&sb, &sources, owner.as_deref())?;
        Some(sb)
    };
    let reporter = Reporter::new(Mode::detect(a.json));
    let opts = drill::Options {
        point,
        now,
        sources,
        dry_run: a.dry_run,
        rto_target: cfg.drill.rto_target,
        rpo_target: cfg.drill.rpo_target,
    };
    let config_path = cfg.path.clone();
    let restore_command =
        move |source: &str| super::restore::restore_command(g, &config_path, source);
    let mut results = Vec::new();
    let interrupted = {
        let work = drill::run(
            &repo,
            &identities,
            &restore_command,
            owner,
            &opts,
            sandbox.as_ref(),
            &reporter,
            &mut results,
        );
        tokio::select! {
            _ = work => None,
            s = crate::util::interruption() => Some(s),
        }
    };
    if let Some(sb) = &sandbox {
        sb.teardown();
    }
    if let Some(signal) = interrupted {
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "drill {id} interrupted by {signal}: its servers were stopped and its sandbox removed; no report was stored"
            ),
        ));
    }
    let mut report = DrillReport {
        id: id.clone(),
        started: now,
        finished: Utc::now(),
        target: point.describe(),
        target_time: point.time(now),
        tier: a.tier.clone(),
        host: crate::util::host_name(),
        strata_version: crate::VERSION.into(),
        dry_run: a.dry_run,
        passed: false,
        rto_seconds: 0.0,
        sources: results,
        faults: vec![],
        report_files: vec![],
        stored_as: None,
    };
    report.decide();
    let history = match store::history(&repo).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("warning: cannot read the drill history: {e}");
            vec![]
        }
    };
    if !a.dry_run {
        match store::save(&repo, &report, &recipients).await {
            Ok(k) => report.stored_as = Some(k),
            Err(e) => report.faults.push(format!(
                "the report could not be stored in the repository: {e}"
            )),
        }
    }
    if let Some(dir) = &a.report {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::usage(format!("--report {}: {e}", dir.display())))?;
        let json_path = dir.join(format!("{id}.json"));
        let html_path = dir.join(format!("{id}.html"));
        report.report_files = vec![
            json_path.display().to_string(),
            html_path.display().to_string(),
        ];
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        super::metrics::write_atomic(&json_path, &json)?;
        super::metrics::write_atomic(&html_path, html::render(&report, &history).as_bytes())?;
    }
    // A passed drill is sent only where it resolves something (PagerDuty).
    if !a.dry_run
        && let Some(n) = &cfg.notify
    {
        n.send(&event(&report)).await;
    }
    if a.json {
        super::print_json(&report);
    } else {
        print_human(&report);
    }
    Ok(if report.passed || a.dry_run {
        0
    } else {
        Kind::Integrity.exit_code()
    })
}

/// Refuses, before anything is restored, a sandbox PostgreSQL could not
/// use: one the server's OS user cannot reach, or so deep that the
/// server's socket path (in its data directory) would pass the 107-byte
/// limit of a Unix socket.
fn check_sandbox_path(sb: &Sandbox, sources: &[Source], owner: Option<&str>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let pg: Vec<&Source> = sources
        .iter()
        .filter(|s| s.kind == crate::config::SourceKind::Postgres)
        .collect();
    let Some(longest) = pg.iter().map(|s| s.name.len()).max() else {
        return Ok(());
    };
    let socket = sb.root().display().to_string().len() + 1 + longest + "/.s.PGSQL.65535".len();
    if socket > 107 {
        return Err(Error::usage(format!(
            "the drill sandbox {} is too deep: PostgreSQL's socket path in it would be {socket} bytes (at most 107)",
            sb.root().display()
        ))
        .hint("pass a shorter --work-dir, e.g. /var/tmp"));
    }
    if let Some(user) = owner {
        for a in sb.root().ancestors().skip(1) {
            let mode = std::fs::metadata(a)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o001 == 0 {
                return Err(Error::usage(format!(
                    "the drill sandbox is under {} (mode {:o}), which the {user} OS user running the restored servers cannot enter",
                    a.display(),
                    mode & 0o7777
                ))
                .hint("pass a --work-dir every user can traverse, e.g. /var/tmp"));
            }
        }
    }
    Ok(())
}

/// Which sources: named ones, else the tier's, else all configured.
fn chosen_sources(cfg: &Config, a: &DrillArgs) -> Result<Vec<Source>> {
    let names: Vec<String> = if !a.sources.is_empty() {
        a.sources.clone()
    } else if let Some(t) = &a.tier {
        cfg.tier(t)?.sources.clone()
    } else {
        cfg.sources.keys().cloned().collect()
    };
    if names.is_empty() {
        return Err(
            Error::usage(format!("no source to drill in {}", cfg.path.display()))
                .hint("define sources under [sources.NAME]"),
        );
    }
    names.iter().map(|n| cfg.source(n).cloned()).collect()
}

fn event(r: &DrillReport) -> crate::notify::Event {
    let failed: Vec<&str> = r
        .sources
        .iter()
        .filter(|s| !s.passed)
        .map(|s| s.source.as_str())
        .collect();
    crate::notify::Event {
        event: if r.passed {
            "drill_succeeded"
        } else {
            "drill_failed"
        },
        source: failed.join(","),
        tier: r.tier.clone(),
        error: Some(r.faults.join("; ")),
        hint: Some(format!(
            "drill {}: `strata drill history` lists drills; {}",
            r.id,
            r.report_files
                .last()
                .map(|f| format!("report {f}"))
                .unwrap_or_else(|| "run with --report DIR for the HTML report".into())
        )),
        time: r.finished,
        host: r.host.clone(),
    }
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s >= 7200.0 => format!("{:.1}h", s / 3600.0),
        Some(s) if s >= 120.0 => format!("{:.1}min", s / 60.0),
        Some(s) => format!("{s:.1}s"),
    }
}

fn print_human(r: &DrillReport) {
    for s in &r.sources {
        let verdict = if s.skipped {
            "skipped"
        } else if r.dry_run {
            "planned"
        } else if s.passed {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "{verdict:<7} {} ({}): {} {}; RTO {} (target {}), RPO {} (target {}), {}",
            s.source,
            s.kind,
            s.method.as_deref().unwrap_or("-"),
            crate::util::with_chain(s.backup.as_deref().unwrap_or("-"), &s.chain),
            secs(s.rto_seconds),
            secs(s.rto_target_seconds),
            secs(s.rpo_seconds),
            secs(s.rpo_target_seconds),
            human_bytes(s.bytes)
        );
        if r.dry_run {
            if let Some(w) = &s.wal {
                println!(
                    "        WAL {} … {} ({} segments, {})",
                    w.first,
                    w.last.as_deref().unwrap_or("none"),
                    w.segments,
                    human_bytes(w.bytes)
                );
            }
            if let Some(sb) = &s.sandbox {
                println!("        would run on {sb}");
            }
            if let Some(e) = &s.error {
                println!("        cannot restore: {e}");
            }
        }
        if let Some(h) = s.hint.as_ref().filter(|_| !s.passed || s.skipped) {
            eprintln!("HINT ({}): {h}", s.source);
        }
    }
    for f in &r.faults {
        println!("fault: {f}");
    }
    for f in &r.report_files {
        println!("report: {f}");
    }
    if r.dry_run {
        println!("dry run {}: nothing restored", r.id);
    } else {
        println!(
            "drill {} {}: {} source(s), total RTO {:.1}s{}",
            r.id,
            if r.passed { "PASSED" } else { "FAILED" },
            r.sources.len(),
            r.rto_seconds,
            r.stored_as
                .as_ref()
                .map(|k| format!(", stored as {k}"))
                .unwrap_or_default()
        );
    }
}

/// `strata drill history [--json] [--id ID]`.
pub async fn history(g: &Globals, id: Option<&str>, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let repo = super::open_repository(&cfg).await?;
    if let Some(id) = id {
        let identities = g.identities(&cfg)?;
        let r = store::load(&repo, id, &identities).await?;
        if json {
            super::print_json(&r);
        } else {
            print_human(&r);
        }
        return Ok(0);
    }
    let mut h = store::history(&repo).await?;
    // newest first, in JSON as on the terminal (and as `list` orders)
    h.reverse();
    if json {
        super::print_json(&h);
        return Ok(0);
    }
    if h.is_empty() {
        println!("no drills yet: run `strata drill`");
        return Ok(0);
    }
    println!(
        "{:<24}  {:<6}  {:<20}  {:>9}  {:>9}  SOURCES",
        "DRILL", "RESULT", "TARGET", "RTO", "RPO"
    );
    for d in &h {
        println!(
            "{:<24}  {:<6}  {:<20}  {:>9}  {:>9}  {}",
            d.id,
            if d.passed { "pass" } else { "FAIL" },
            d.target,
            secs(Some(d.rto_seconds)),
            secs(d.rpo_seconds()),
            d.sources
                .iter()
                .map(|s| format!("{}{}", s.source, if s.passed { "" } else { "✗" }))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(0)
}

/// The newest stored drill, for `status` and `metrics`.
pub async fn last(repo: &crate::catalog::Repository) -> Option<store::DrillSummary> {
    store::history(repo).await.ok()?.pop()
}

//! `strata status [--check]`: per source and tier, the last successful
//! backup and whether it is overdue; stored sizes; WAL archive lag;
//! the point-in-time window; leftovers; the last drill. With `--check`,
//! exits 4 when a backup is stale, a source of a configured tier has none,
//! a WAL archive has no point-in-time window (no base backup reaches it),
//! or the last drill failed (for monitoring by exit code).

use chrono::Utc;

use super::Globals;
use crate::error::{Kind, Result};
use crate::status::{self, Status};
use crate::util::{human_bytes, human_duration};

pub async fn run(g: &Globals, check: bool, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let repo = super::open_repository(&cfg).await?;
    let mut s = status::gather(&cfg, &repo, Utc::now()).await?;
    s.archiving = status::archiving(&cfg).await;
    let last_drill = super::drill::last(&repo).await;
    let copies = crate::copy::lag::gather(&cfg).await;
    if json {
        // `last_drill` and the repositories added beside the status fields
        #[derive(serde::Serialize)]
        struct WithDrill<'a> {
            #[serde(flatten)]
            status: &'a Status,
            last_drill: Option<crate::drill::store::DrillSummary>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            repositories: &'a [crate::copy::lag::RepoStatus],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            wal_push_failures: &'a [crate::copy::wal::PushFailure],
        }
        super::print_json(&WithDrill {
            status: &s,
            last_drill: last_drill.clone(),
            repositories: &copies.repositories,
            wal_push_failures: &copies.wal_push_failures,
        });
    } else {
        print_human(&s);
        print_drill(last_drill.as_ref(), s.now);
        print_copies(&copies);
    }
    let mut problems: Vec<String> = Vec::new();
    let stale = s.problems().count();
    if stale > 0 {
        problems.push(format!(
            "{stale} source/tier pair(s) stale or without a backup"
        ));
    }
    for w in s.wal.iter().filter(|w| w.pitr.is_none()) {
        problems.push(format!(
            "wal {}: WAL is archived but no base backup can use it (no point-in-time window)",
            w.source
        ));
    }
    for w in s.archiving.iter().filter(|w| w.problem) {
        problems.push(format!("{}: {}", w.source, w.message));
    }
    if !s.ownership.is_empty() {
        problems.push(format!(
            "{} repository entries belong to another user than the repository (see above)",
            s.ownership.len()
        ));
    }
    for r in copies.repositories.iter().filter(|r| r.error.is_some()) {
        problems.push(format!("repository {} cannot be read", r.name));
    }
    for f in &copies.wal_push_failures {
        problems.push(format!(
            "wal push of {} into repository {} failed {} time(s) since {} (`strata copy --to {}` catches up)",
            f.source, f.repository, f.failures, f.first_failed, f.repository
        ));
    }
    if let Some(d) = last_drill.as_ref().filter(|d| !d.passed) {
        problems.push(format!("the last drill, {}, failed", d.id));
    }
    if check && !problems.is_empty() {
        if !json {
            eprintln!("strata: status --check: {}", problems.join("; "));
        }
        return Ok(Kind::Integrity.exit_code());
    }
    Ok(0)
}

/// Per repository (when there are several): newest backup and WAL of
/// each source, and how far the copies lag.
fn print_copies(c: &crate::copy::lag::CopiesStatus) {
    let t = |v: Option<chrono::DateTime<Utc>>| {
        v.map_or("-".to_string(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    };
    for r in &c.repositories {
        let mark = if r.selected { " (this status)" } else { "" };
        match &r.error {
            Some(e) => println!(
                "repository {} {}{mark}: CANNOT BE READ: {e}",
                r.name, r.location
            ),
            None => println!("repository {} {}{mark}:", r.name, r.location),
        }
        for s in &r.sources {
            let mut line = format!(
                "  {}: newest backup {} ({}), newest WAL {} ({})",
                s.source,
                s.newest_backup.as_deref().unwrap_or("none"),
                t(s.newest_backup_time),
                s.newest_wal.as_deref().unwrap_or("none"),
                t(s.newest_wal_time)
            );
            if !r.selected {
                line.push_str(&format!(
                    "; lags: {} backup(s) missing, backups {}, WAL {}",
                    s.backups_missing,
                    s.backup_lag_seconds
                        .map_or("-".into(), |v| human_duration(chrono::Duration::seconds(v))),
                    s.wal_lag_seconds
                        .map_or("-".into(), |v| human_duration(chrono::Duration::seconds(v)))
                ));
            }
            println!("{line}");
        }
    }
    for f in &c.wal_push_failures {
        println!(
            "wal push of {} into repository {}: {} failure(s) since {}, last {} ({}): {} — `strata copy --to {}` catches up",
            f.source,
            f.repository,
            f.failures,
            t(Some(f.first_failed)),
            t(Some(f.last_failed)),
            f.last_file,
            f.last_error,
            f.repository
        );
    }
}

/// The last recovery drill, one line.
fn print_drill(d: Option<&crate::drill::store::DrillSummary>, now: chrono::DateTime<Utc>) {
    match d {
        None => println!(
            "drill: none yet (`strata drill` restores every source into a sandbox and checks it)"
        ),
        Some(d) => println!(
            "drill: last {} {} ({} ago), target {}, total RTO {:.1}s, worst RPO {}{}",
            d.id,
            if d.passed { "PASSED" } else { "FAILED" },
            human_duration(now - d.finished),
            d.target,
            d.rto_seconds,
            d.rpo_seconds()
                .map_or("-".to_string(), |s| format!("{s:.0}s")),
            if d.passed {
                String::new()
            } else {
                format!(
                    "; failed: {}",
                    d.sources
                        .iter()
                        .filter(|s| !s.passed)
                        .map(|s| s.source.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
    }
}

fn print_human(s: &Status) {
    let mut table = vec![[
        "SOURCE".to_string(),
        "TIER".into(),
        "BACKUPS".into(),
        "LAST FINISHED (UTC)".into(),
        "AGE".into(),
        "STORED".into(),
        "STATE".into(),
    ]];
    for r in &s.rows {
        let (finished, age, stored) = match &r.last {
            Some(l) => (
                l.finished.format("%Y-%m-%d %H:%M").to_string(),
                human_duration(s.now - l.finished),
                human_bytes(l.stored_bytes),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let state = if r.missing {
            "NO BACKUP"
        } else if r.stale {
            "STALE"
        } else if !r.configured {
            "unscheduled"
        } else {
            "ok"
        };
        table.push([
            r.source.clone(),
            r.tier.clone().unwrap_or_else(|| "-".into()),
            r.backups.to_string(),
            finished,
            age,
            stored,
            state.to_string(),
        ]);
    }
    if s.rows.is_empty() {
        println!("no backups and no tiers configured");
    } else {
        for line in table_lines(&table) {
            println!("{line}");
        }
    }
    if !s.sources.is_empty() {
        println!();
        for t in &s.sources {
            println!(
                "{}: {} backup(s), {} stored",
                t.source,
                t.backups,
                human_bytes(t.stored_bytes)
            );
        }
    }
    for w in &s.wal {
        match (&w.newest_segment, w.newest_time) {
            (Some(seg), Some(t)) => println!(
                "wal {}: newest segment {seg} archived {} ({} ago)",
                w.source,
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                human_duration(s.now - t)
            ),
            (Some(seg), None) => println!("wal {}: newest segment {seg}", w.source),
            _ => println!("wal {}: no segment archived", w.source),
        }
        match &w.pitr {
            Some(p) => println!(
                "wal {}: point-in-time window {} .. {} (from base backup {})",
                w.source,
                p.earliest.format("%Y-%m-%d %H:%M:%S UTC"),
                p.latest.format("%Y-%m-%d %H:%M:%S UTC"),
                p.base
            ),
            None => println!(
                "wal {}: no point-in-time window (no base backup with all its WAL up to the newest segment)",
                w.source
            ),
        }
    }
    for l in &s.locks {
        println!("lock {}", l.describe(s.now));
    }
    if s.locks.iter().any(|l| l.is_abandoned(s.now)) {
        println!("abandoned locks block backups and prune: `strata unlock` removes them");
    }
    if s.leftovers > 0 {
        println!(
            "{} leftover(s) of backups that never completed: `strata cleanup` removes them",
            s.leftovers
        );
    }
    for w in &s.archiving {
        println!(
            "archiving {}: {}{}",
            w.source,
            if w.problem { "PROBLEM: " } else { "warning: " },
            w.message
        );
    }
    for o in &s.ownership {
        println!("ownership: {o}");
    }
    if !s.ownership.is_empty() {
        println!(
            "ownership: give them back with `chown -R OWNER: REPOSITORY`; strata run as root then keeps the repository's owner for what it creates (docs/deployment.md)"
        );
    }
}

/// The rows of a table, each column padded to its widest cell.
///
/// Pads by hand: `format!("{c:<w$}")` panics when a width exceeds 65,535
/// (issue 13 item 5: a manifest summary naming a 65,536-character source
/// made `status` exit 101).
fn table_lines<const N: usize>(table: &[[String; N]]) -> Vec<String> {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    table
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_padded() {
        let t = [
            ["A".to_string(), "BB".into(), "C".into()],
            ["ééé".to_string(), "-".into(), "x".into()],
        ];
        assert_eq!(table_lines(&t), vec!["A    BB  C", "ééé  -   x"]);
    }

    /// issue 13 item 5: a 65,536-character name in a manifest summary
    /// panicked (`format!` widths stop at 65,535); the table is printed.
    #[test]
    fn a_name_wider_than_a_format_width_does_not_panic() {
        let long = "s".repeat(65_536);
        let t = [
            ["SOURCE".to_string(), "TIER".into()],
            [long.clone(), "daily".into()],
        ];
        let lines = table_lines(&t);
        assert_eq!(lines[1], format!("{long}  daily"));
        assert_eq!(lines[0].len(), 65_536 + 2 + 4);
    }
}

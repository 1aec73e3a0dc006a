//! `strata restore --all (--to-time T | --latest) [--target-dir DIR]
//! [--replace]`: the one-command incident restore. Every configured source
//! comes back to T, into `DIR/<source>` with --target-dir, else into the
//! source's configured `restore_to`: PostgreSQL with base backups exactly
//! to T (a data directory that replays WAL to T when started; just past
//! the archive's end when the archive stops before T), dump-only
//! PostgreSQL sources, Redis and Chroma as their newest backup taken at or
//! before T — as files in a directory, or loaded into the configured Redis
//! or Chroma server (which must be empty unless --replace; the load is
//! verified as `restore --into` verifies it). Prints each source's skew
//! from T.
//!
//! The work is [`crate::restore::all`]'s; this module reads the
//! arguments and prints a line per source as it finishes. One source's
//! failure does not stop the others; the exit code is non-zero if any
//! failed.

use std::path::PathBuf;

use chrono::Utc;

use super::Globals;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::all::{self, SourceResult};
use crate::restore::plan::Point;
use crate::util::human_bytes;

#[derive(Debug, Clone)]
pub struct AllArgs {
    pub to_time: Option<String>,
    pub latest: bool,
    pub target_dir: Option<PathBuf>,
    /// Loading into configured servers: overwrite what they hold.
    pub replace: bool,
    pub run_as: Option<String>,
    /// `--backup label:L`: each source to its backup of the set labelled
    /// L (issue 19 item 4), instead of --to-time/--latest.
    pub label: Option<String>,
    pub json: bool,
}

pub async fn run(g: &Globals, a: &AllArgs) -> Result<u8> {
    let cfg = g.config()?;
    let now = Utc::now();
    let point = match (&a.to_time, a.latest) {
        // the label chooses each source's backup; the point is unused
        (None, false) if a.label.is_some() => Point::Latest,
        (_, _) if a.label.is_some() => {
            return Err(Error::usage(
                "restore --all --backup label:L restores each source to its labelled backup: drop --to-time/--latest",
            ));
        }
        (Some(t), false) => Point::Time(
            crate::timeparse::parse_time(t, now)
                .map_err(|e| Error::usage(format!("--to-time: {e}")))?,
        ),
        (None, true) => Point::Latest,
        _ => {
            return Err(Error::usage(
                "restore --all needs where to stop: --to-time T, --latest or --backup label:L",
            ));
        }
    };
    let owner = super::server_owner(a.run_as.as_deref())?;
    if cfg.sources.is_empty() {
        return Err(Error::usage(format!(
            "no sources in {}",
            cfg.path.display()
        )));
    }
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let target_dir = a
        .target_dir
        .as_deref()
        .map(crate::restore::pitr::absolute)
        .transpose()?;
    let reporter = Reporter::new(Mode::detect(a.json));
    let at = point.time(now);
    reporter.note(format!(
        "restoring {} source(s) to {} into {}",
        cfg.sources.len(),
        match &a.label {
            Some(l) => format!("their backups labelled {l}"),
            None => point.describe(),
        },
        match &target_dir {
            Some(d) => d.display().to_string(),
            None => "their configured restore_to".into(),
        }
    ));
    let opts = all::Options {
        point,
        now,
        target_dir,
        replace: a.replace,
        owner,
        label: a.label.clone(),
    };
    let restore_command = |source: &str| super::restore::restore_command(g, &cfg.path, source);
    let results = all::restore_all(
        &cfg,
        &repo,
        &identities,
        &restore_command,
        &opts,
        &reporter,
        &mut |r| {
            if !a.json {
                print_line(r, at, a.label.as_deref());
            }
        },
    )
    .await;
    let failed: Vec<&SourceResult> = results.iter().filter(|r| !r.ok).collect();
    let code = all::exit_code(&results);
    if a.json {
        super::print_json(&results);
    } else if !failed.is_empty() {
        eprintln!(
            "strata: restore --all: {} of {} sources failed",
            failed.len(),
            results.len()
        );
    } else if results.iter().any(|r| r.dir.is_some()) {
        println!(
            "PostgreSQL data directories are NOT recovered yet: started (`pg_ctl -D DIR start`), each replays WAL to the target, promotes, and only then accepts connections (hot_standby is off, so nobody reads a partial past while it replays; archive_mode is off until you remove that line from postgresql.auto.conf, so a copy never archives into the repository by accident); Redis: start redis-server with --dir DIR --dbfilename dump.rdb (a cluster's backup: one RDB file per shard, DIR/cluster-slots.json says which master gets which)"
        );
    }
    Ok(code)
}

fn print_line(r: &SourceResult, at: chrono::DateTime<Utc>, label: Option<&str>) {
    if !r.ok {
        println!(
            "{}: FAILED: {}",
            r.source,
            r.error.as_deref().unwrap_or("unknown error")
        );
        if let Some(h) = &r.hint {
            eprintln!("HINT ({}): {h}", r.source);
        }
        return;
    }
    let skew = r.skew_seconds.unwrap_or_default();
    println!(
        "{}{}: {} {} → {} ({}); {}",
        r.source,
        if r.kept {
            " (kept: an earlier run restored it)"
        } else {
            ""
        },
        r.method.as_deref().unwrap_or("-"),
        crate::util::with_chain(r.backup.as_deref().unwrap_or("-"), &r.chain),
        r.dir.as_deref().or(r.into.as_deref()).unwrap_or("-"),
        human_bytes(r.bytes),
        if let Some(l) = label {
            format!(
                "labelled {l}, taken at {}",
                r.restored_to
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            )
        } else if skew == 0.0 {
            format!(
                "exactly at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        } else {
            format!(
                "skew {skew:.0}s: restored to {} ({} before T)",
                r.restored_to
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                crate::util::human_duration(chrono::Duration::milliseconds((skew * 1000.0) as i64))
            )
        }
    );
}

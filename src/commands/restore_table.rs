//! `strata restore SOURCE --to-time T [--table NAME… | --schema S…]
//! --to-database DB`: one table (or schema, or the whole database) back
//! from a point in time, when no dump is recent enough. The cluster is recovered to T in a
//! sandbox (as a drill does: base backup and WAL, a throwaway server on a
//! free loopback port), the table's definition and data are piped from it
//! with `pg_dump` into `pg_restore` on the target database, and the
//! sandbox is removed. An existing table in the target is refused unless
//! `--replace` (then pg_restore drops it first). Without a base backup
//! that reaches T, the newest dump taken at or before T is used, and its
//! distance from T is said.
//!
//! The work is [`crate::restore::table`]'s; this module reads the
//! arguments and prints what was restored.

use std::path::PathBuf;

use url::Url;

use super::Globals;
use crate::config::SourceKind;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::plan::Point;
use crate::restore::table;
use crate::sources::postgres::Target;

#[derive(Debug, Clone)]
pub struct TableAtArgs {
    pub source: String,
    pub to_time: String,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub to_database: String,
    pub create: bool,
    pub target_url: Option<String>,
    pub replace: bool,
    pub no_owner: bool,
    /// Where the sandbox cluster goes [default: $TMPDIR].
    pub scratch_dir: Option<PathBuf>,
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    source: String,
    /// The instant the table was taken from.
    at: chrono::DateTime<chrono::Utc>,
    /// `base+wal` (recovered to exactly `at`) or `dump` (the newest dump
    /// taken at or before it).
    method: &'static str,
    backup: String,
    /// How far before `at` the data is (0 for base+wal).
    skew_seconds: f64,
    tables: Vec<String>,
    schemas: Vec<String>,
    database: String,
    target: String,
    duration_seconds: f64,
}

pub async fn run(g: &Globals, a: &TableAtArgs) -> Result<u8> {
    let clock = std::time::Instant::now();
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    if src.kind != SourceKind::Postgres {
        return Err(Error::usage(format!(
            "--table/--schema with --to-time restores PostgreSQL tables; {} is a {} source",
            src.name,
            src.kind.as_str()
        )));
    }
    let now = chrono::Utc::now();
    let at = crate::timeparse::parse_time(&a.to_time, now)
        .map_err(|e| Error::usage(format!("--to-time: {e}")))?;
    if at > now {
        return Err(Error::usage(format!(
            "--to-time {}: that is in the future",
            at.to_rfc3339()
        )));
    }
    let identities = g.identities(&cfg)?;
    let target = match &a.target_url {
        Some(u) => {
            let url =
                Url::parse(u).map_err(|e| Error::usage(format!("--target-url: not a URL: {e}")))?;
            Target::new(&url)
        }
        None => Target::new(&src.url),
    };
    let target_db = target.with_database(&a.to_database);
    let opts = table::Options {
        to_database: a.to_database.clone(),
        create: a.create,
        tables: a.tables.clone(),
        schemas: a.schemas.clone(),
        replace: a.replace,
        no_owner: a.no_owner,
        scratch_dir: a.scratch_dir.clone(),
        owner: super::server_owner(None)?,
    };
    // the target first: a refusal here costs nothing
    table::check_target(&target, &target_db, &opts).await?;

    let repo = super::open_repository(&cfg).await?;
    let plan = crate::restore::plan::plan(&repo, src, Point::Time(at), &identities, now).await?;
    let reporter = Reporter::new(Mode::detect(a.json));
    let what = table::describe(&a.tables, &a.schemas);
    let restore_command = |source: &str| super::restore::restore_command(g, &cfg.path, source);
    let (method, skew) = table::restore(
        &repo,
        src,
        &plan,
        identities,
        &target,
        &target_db,
        &opts,
        &restore_command,
        &reporter,
    )
    .await?;
    let report = Report {
        source: src.name.clone(),
        at,
        method,
        backup: plan.backup_id(),
        skew_seconds: skew,
        tables: a.tables.clone(),
        schemas: a.schemas.clone(),
        database: a.to_database.clone(),
        target: target.display(),
        duration_seconds: clock.elapsed().as_secs_f64(),
    };
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {what} of {} as of {} ({}, {}) into database {} on {} in {:.1}s",
            report.source,
            report.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            report.backup,
            if method == "dump" {
                format!("dump taken {:.0} s before", skew)
            } else {
                "recovered to that instant".to_string()
            },
            report.database,
            report.target,
            report.duration_seconds
        );
    }
    Ok(0)
}

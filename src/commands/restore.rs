//! `strata restore SOURCE`: restore a logical backup into a database.

use std::path::PathBuf;

use url::Url;

use super::Globals;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::sources::postgres::Target;
use crate::sources::postgres::dump::{self, RestoreOptions};

#[derive(Debug, Clone)]
pub struct Args {
    pub source: String,
    pub backup: String,
    pub to_database: String,
    pub create: bool,
    pub tables: Vec<String>,
    pub jobs: u32,
    pub target_url: Option<String>,
    pub globals: bool,
    pub no_owner: bool,
    pub scratch_dir: Option<PathBuf>,
    pub json: bool,
}

pub async fn run(g: &Globals, a: &Args) -> Result<u8> {
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    let identities = g.identities(&cfg)?;
    let target = match &a.target_url {
        Some(u) => {
            let url =
                Url::parse(u).map_err(|e| Error::usage(format!("--target-url: not a URL: {e}")))?;
            if !matches!(url.scheme(), "postgres" | "postgresql") {
                return Err(Error::usage("--target-url must be a postgres:// URL"));
            }
            Target::new(&url)
        }
        None => Target::new(&src.url),
    };
    if a.jobs == 0 {
        return Err(Error::usage("--jobs must be at least 1"));
    }
    let repo = super::open_repository(&cfg).await?;
    let entry = repo.find(&a.source, &a.backup).await?;
    let reporter = Reporter::new(Mode::detect(a.json));
    reporter.note(format!(
        "restore {} of {} into database {} on {}",
        entry.summary().id,
        a.source,
        a.to_database,
        target.display()
    ));
    let opts = RestoreOptions {
        to_database: a.to_database.clone(),
        create: a.create,
        tables: a.tables.clone(),
        jobs: a.jobs,
        target,
        globals: a.globals,
        no_owner: a.no_owner,
        scratch_dir: a.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    let report = dump::restore(repo.storage(), &entry, identities, &opts, &reporter).await?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {} of {} into database {} in {:.1}s ({} verified)",
            report.backup,
            report.source,
            report.database,
            report.duration_seconds,
            crate::util::human_bytes(report.bytes)
        );
    }
    Ok(0)
}

//! `strata restore REDIS --into redis://[user:pass@]host:port [--replace]
//! [--listen ADDR] [--backup ID | --at T]`: load a snapshot into a running
//! server (see [`crate::sources::redis::load`]).

use super::Globals;
use super::restore_into::IntoArgs;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::plan::{self, Wanted};
use crate::sources::redis::load::IntoOptions;
use crate::sources::redis::snapshot::show_keyspace;
use crate::sources::redis::{Target, check_url};

pub async fn run(g: &Globals, a: &IntoArgs) -> Result<u8> {
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    if !a.collections.is_empty() {
        return Err(Error::usage(format!(
            "--collection is for Chroma sources; {} is a redis source (a snapshot loads whole)",
            src.name
        )));
    }
    let into = url::Url::parse(&a.into)
        .map_err(|e| Error::usage(format!("--into {:?}: not a URL: {e}", a.into)))?;
    check_url(&into).map_err(|m| {
        Error::usage(format!("--into for redis source {}: {m}", src.name))
            .hint("give the target as redis://[user:pass@]host:port")
    })?;
    let listen = match &a.listen {
        None => None,
        Some(l) => Some(l.parse().map_err(|_| {
            Error::usage(format!(
                "--listen {l:?}: give an address and port the target can reach, e.g. 10.0.0.5:16379 (port 0: any free port)"
            ))
        })?),
    };
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let wanted = Wanted::from_flags(&a.backup, a.at.as_deref(), chrono::Utc::now())?;
    let chosen = plan::choose(&repo, src, &wanted).await?;
    // stderr even with --json: which snapshot was chosen matters
    if let Some(note) = &chosen.note {
        eprintln!("{note}");
    }
    let entry = chosen.entry;
    let reporter = Reporter::new(Mode::detect(a.json));
    let opts = IntoOptions {
        target: Target::new(&into),
        url: into.clone(),
        replace: a.replace,
        listen,
    };
    let report = crate::sources::redis::dispatch::restore_into(
        repo.storage(),
        &entry,
        identities,
        &opts,
        &reporter,
    )
    .await?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {} of {} into {} in {:.1}s ({} verified, {}{})",
            report.backup,
            report.source,
            report.target,
            report.duration_seconds,
            crate::util::human_bytes(report.bytes),
            // a logical snapshot has no RDB version
            if report.rdb_version == 0 {
                "logical snapshot, replayed with RESTORE".to_string()
            } else {
                format!("RDB version {}", report.rdb_version)
            },
            if report.replaced_keys > 0 {
                format!(
                    ", {} key{} replaced",
                    report.replaced_keys,
                    if report.replaced_keys == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            }
        );
        for sh in &report.shards {
            println!(
                "shard {} (master {}, slots {}): {} keys loaded (manifest: {})",
                sh.shard,
                sh.address,
                crate::sources::redis::cluster::show_ranges(&sh.slots),
                sh.keys_loaded.unwrap_or(0),
                sh.keys_recorded
            );
        }
        println!(
            "keys: {} (manifest: {})",
            show_keyspace(&report.keyspace),
            show_keyspace(&report.expected)
        );
    }
    Ok(0)
}

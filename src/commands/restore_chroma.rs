//! `strata restore CHROMA --into URL [--collection NAME]... [--replace]
//! [--backup ID | --at T]`: load a Chroma export into a running server
//! and verify it (counts and probe queries).

use super::Globals;
use super::restore_into::IntoArgs;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::plan::{self, Wanted};
use crate::sources::chroma::import::{self, RestoreOptions};

pub async fn run(g: &Globals, a: &IntoArgs) -> Result<u8> {
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    let into = url::Url::parse(&a.into)
        .map_err(|e| Error::usage(format!("--into {:?}: not a URL: {e}", a.into)))?;
    if !matches!(into.scheme(), "http" | "https") {
        return Err(Error::usage(format!(
            "--into for chroma source {} takes the server's http://HOST:PORT",
            src.name
        )));
    }
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let reporter = Reporter::new(Mode::detect(a.json));
    let wanted = Wanted::from_flags(&a.backup, a.at.as_deref(), chrono::Utc::now())?;
    let chosen = plan::choose(&repo, src, &wanted).await?;
    // on stderr even with --json: which backup, how long before T
    if let Some(note) = &chosen.note {
        eprintln!("{note}");
    }
    let entry = chosen.entry;
    let token = crate::restore::into::into_token(&src.url, &into, src.token.as_deref());
    let opts = RestoreOptions {
        into,
        tenant: src.tenant.clone(),
        database: src.database.clone(),
        token,
        collections: a.collections.clone(),
        replace: a.replace,
    };
    let report =
        import::restore_and_verify(repo.storage(), &entry, identities, &opts, &reporter).await?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {} of {} into {} ({}/{}) in {:.1}s: {} collection(s), {} records, counts and {} probe queries verified",
            report.backup,
            report.source,
            report.into,
            report.tenant,
            report.database,
            report.duration_seconds,
            report.collections.len(),
            report.records,
            report
                .collections
                .iter()
                .map(|c| c.probes_matched)
                .sum::<usize>()
        );
        for c in &report.collections {
            println!(
                "  {}: {} records{}, {}/{} probes match (largest distance difference {:e})",
                c.name,
                c.records,
                if c.replaced {
                    ", replaced the existing one"
                } else {
                    ""
                },
                c.probes_matched,
                c.probes,
                c.max_distance_delta
            );
        }
        println!(
            "transfer {:.1}s (of which add calls {:.1}s), verify {:.1}s",
            report.transfer_seconds, report.import_seconds, report.verify_seconds
        );
    }
    Ok(0)
}

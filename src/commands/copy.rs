//! `strata copy --to NAME [--from NAME] [SOURCE…] [--since T]`: copies
//! backups and the WAL they need into another repository (the work is
//! [`crate::copy`]); prints what was copied, what the target already had
//! and every refused object. Exit 0 when everything selected is in the
//! target; else the most telling problem's code (4: a damaged source
//! object, 8: a conflicting one in the target).

use super::Globals;
use crate::error::Result;
use crate::util::human_bytes;

#[derive(Debug, Clone)]
pub struct Args {
    pub to: String,
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub json: bool,
}

pub async fn run(g: &Globals, a: &Args) -> Result<u8> {
    let mut g = g.clone();
    if let Some(f) = &a.from {
        g.repo = Some(f.clone());
    }
    let cfg = g.config()?;
    // the target must be configured before anything is read
    cfg.repository_named(&a.to)?;
    for s in &a.sources {
        cfg.source(s)?;
    }
    // with an identity at hand, WAL is checked against its records
    // before it is copied (data objects never need one)
    let identities = match g.identity_path(&cfg) {
        Some(_) => Some(g.identities(&cfg)?),
        None => None,
    };
    let req = crate::copy::Request {
        sources: a.sources.clone(),
        since: a.since,
        only: None,
    };
    let report = crate::copy::between(&cfg, &a.to, &req, identities).await?;
    if a.json {
        super::print_json(&report);
        return Ok(report.exit_code());
    }
    for b in &report.backups {
        match b.status {
            "present" => {}
            "refused" => println!("{} {} ({}): NOT copied", b.source, b.id, b.kind),
            _ => println!(
                "{} {} ({}): copied {} object(s), {}{}",
                b.source,
                b.id,
                b.kind,
                b.objects_copied,
                human_bytes(b.bytes_copied),
                if b.objects_present > 0 {
                    format!(
                        " ({} already there from an earlier copy)",
                        b.objects_present
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
    for w in &report.wal {
        println!(
            "{} WAL from {}: {} file(s) copied ({}), {} already there{}",
            w.source,
            w.from_segment.as_deref().unwrap_or("-"),
            w.files_copied,
            human_bytes(w.bytes_copied),
            w.files_present,
            if w.content_checked {
                ""
            } else {
                " (sizes checked; pass --identity to check each file's content too)"
            }
        );
    }
    for p in &report.problems {
        eprintln!("strata: {} {}: {}", p.source, p.what, p.message);
    }
    let present = report
        .backups
        .iter()
        .filter(|b| b.status == "present")
        .count();
    println!(
        "copy {} → {}: {} backup(s) copied, {} already there, {} object(s), {}{}",
        report.from,
        report.to,
        report
            .backups
            .iter()
            .filter(|b| b.status == "copied")
            .count(),
        present,
        report.objects_copied,
        human_bytes(report.bytes_copied),
        if report.ok {
            String::new()
        } else {
            format!("; {} problem(s)", report.problems.len())
        }
    );
    Ok(report.exit_code())
}

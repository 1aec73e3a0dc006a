//! `strata list [SOURCE] [--label L]`: backups, newest first, with their
//! labels, notes and keep dates (`strata backup --label`). Reads only the
//! plain manifest summaries, so it works on backup hosts without the
//! identity.

use serde::Serialize;

use super::Globals;
use crate::error::Result;
use crate::util::human_bytes;

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    source: &'a str,
    source_kind: &'a str,
    kind: &'a str,
    tier: Option<&'a str>,
    started: chrono::DateTime<chrono::Utc>,
    finished: chrono::DateTime<chrono::Utc>,
    /// The same names as `backup`'s report.
    plain_bytes: u64,
    stored_bytes: u64,
    /// Older names of the two above, kept for scripts that read them.
    plain_size: u64,
    stored_size: u64,
    /// `strata backup --label`: the set's label, its note, and until when
    /// prune keeps it (null when not labelled / not pinned).
    label: Option<&'a str>,
    note: Option<&'a str>,
    keep_until: Option<chrono::DateTime<chrono::Utc>>,
    /// An incremental base backup: its method and the backup it applies
    /// on (absent for a full one).
    #[serde(skip_serializing_if = "Option::is_none")]
    incremental: Option<Incr<'a>>,
}

#[derive(Serialize)]
struct Incr<'a> {
    method: Option<&'a str>,
    parent: &'a str,
    /// Backups a restore applies, this one included.
    chain_length: usize,
}

pub async fn run(g: &Globals, source: Option<&str>, label: Option<&str>, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    if let Some(s) = source {
        cfg.source(s)?;
    }
    let repo = super::open_repository(&cfg).await?;
    let (entries, problems) = repo.backups(source).await?;
    for p in &problems {
        eprintln!("warning: {}", p.error);
    }
    let rows: Vec<Row> = entries
        .iter()
        .filter(|e| label.is_none() || e.summary().label.as_deref() == label)
        .map(|e| {
            let s = e.summary();
            Row {
                id: s.id.as_str(),
                source: &s.source,
                source_kind: s.source_kind.as_str(),
                kind: &s.kind,
                tier: s.tier.as_deref(),
                started: s.started,
                finished: s.finished,
                plain_bytes: s.plain_size,
                stored_bytes: s.stored_size,
                plain_size: s.plain_size,
                stored_size: s.stored_size,
                label: s.label.as_deref(),
                note: s.note.as_deref(),
                keep_until: s.keep_until,
                incremental: e.file.wal.as_ref().and_then(|w| {
                    Some(Incr {
                        method: w.method.map(|m| m.as_str()),
                        parent: w.chain.last()?,
                        chain_length: w.chain.len() + 1,
                    })
                }),
            }
        })
        .collect();
    if json {
        super::print_json(&rows);
    } else if rows.is_empty() {
        match label {
            Some(l) => println!("no backups labelled {l} in {}", repo.location()),
            None => println!("no backups in {}", repo.location()),
        }
    } else {
        println!(
            "{:<24} {:<12} {:<8} {:<8} {:<20} {:>10} {:>10}",
            "ID", "SOURCE", "KIND", "TIER", "FINISHED (UTC)", "SIZE", "STORED"
        );
        for r in &rows {
            println!(
                "{:<24} {:<12} {:<8} {:<8} {:<20} {:>10} {:>10}",
                r.id,
                r.source,
                r.kind,
                r.tier.unwrap_or("-"),
                r.finished.format("%Y-%m-%d %H:%M:%S"),
                human_bytes(r.plain_size),
                human_bytes(r.stored_size)
            );
            if let Some(i) = &r.incremental {
                println!(
                    "{:<24} incremental ({}) on {}, a chain of {}",
                    "",
                    i.method.unwrap_or("?"),
                    i.parent,
                    i.chain_length
                );
            }
            if let Some(l) = r.label {
                let mut line = format!("{:<24} label {l}", "");
                if let Some(t) = r.keep_until {
                    line.push_str(&format!(", kept until {}", t.format("%Y-%m-%d %H:%M:%S")));
                }
                if let Some(n) = r.note {
                    line.push_str(&format!(": {n}"));
                }
                println!("{line}");
            }
        }
    }
    Ok(if problems.is_empty() {
        0
    } else {
        crate::error::Kind::Integrity.exit_code()
    })
}

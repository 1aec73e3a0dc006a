//! `strata backup SOURCE [--tier NAME]`: take one backup of a source;
//! `strata backup --tier NAME`: back up every source of a tier in turn.
//!
//! With a tier, one source's failure does not stop the others: every
//! source gets its summary line (or its entry in the `--json` array), and
//! the exit code is non-zero if any failed.

use serde::Serialize;

use super::Globals;
use crate::backup::{backup_locked, notify, prepare};
use crate::config::{Config, Source};
use crate::error::{Error, Kind, Result};
use crate::progress::{Mode, Reporter};
use crate::sources::backup::{BackupContext, BackupReport};
use crate::tier::{Tier, TierKind};
use crate::util::human_bytes;

pub async fn run(
    g: &Globals,
    source: Option<&str>,
    tier: Option<String>,
    json: bool,
) -> Result<u8> {
    run_kind(g, source, tier, None, json).await
}

/// [`run`] with an explicit `--kind` (`dump` or `base`); without one, a
/// tier's kind decides, else `dump`.
pub async fn run_kind(
    g: &Globals,
    source: Option<&str>,
    tier: Option<String>,
    kind: Option<TierKind>,
    json: bool,
) -> Result<u8> {
    let cfg = g.config()?;
    let (sources, tier_def): (Vec<&Source>, Option<&Tier>) = match (source, tier.as_deref()) {
        (None, None) => {
            return Err(
                Error::usage("name a SOURCE to back up, or a tier with --tier NAME").hint(format!(
                    "`strata backup SOURCE` or `strata backup --tier NAME`; configured sources: {}",
                    names(cfg.sources.keys())
                )),
            );
        }
        (Some(s), t) => {
            let src = cfg.source(s)?;
            let def = match t {
                Some(t) => match cfg.tiers.get(t) {
                    Some(def) => Some(def),
                    None => {
                        // Not an error: a typo must not cost a backup. But
                        // prune applies only configured tiers' policies.
                        eprintln!(
                            "warning: tier {t:?} is not configured in {}: `strata prune` will keep this backup forever (configured tiers: {})",
                            cfg.path.display(),
                            names(cfg.tiers.keys())
                        );
                        None
                    }
                },
                None => None,
            };
            (vec![src], def)
        }
        (None, Some(t)) => {
            let def = cfg.tier(t)?;
            let sources: Vec<&Source> = def
                .sources
                .iter()
                .map(|s| cfg.source(s))
                .collect::<Result<_>>()?;
            (sources, Some(def))
        }
    };
    // Everything that can fail before a source is read is a failure of
    // every source named, and is notified as such.
    let prepared = async {
        if let Some(def) = tier_def {
            check_runnable(&cfg, def)?;
        }
        prepare(&cfg, tier_def).await
    }
    .await;
    let (encoder, recipients, repo) = match prepared {
        Ok(p) => p,
        Err(e) => {
            for src in &sources {
                notify(&cfg, &src.name, tier.as_deref(), Err(&e)).await;
            }
            return Err(e);
        }
    };
    let kind = backup_kind(kind, tier_def)?;
    let reporter = Reporter::new(Mode::detect(json));
    let ctx = BackupContext {
        repo: &repo,
        encoder,
        recipients: &recipients,
        reporter: &reporter,
    };

    if source.is_some() {
        let src = sources[0];
        let r = backup_locked(&ctx, src, tier.clone(), kind).await;
        notify(&cfg, &src.name, tier.as_deref(), r.as_ref().map(|_| ())).await;
        let report = r?;
        if json {
            super::print_json(&report);
        } else {
            println!("{}", done_line(&report));
        }
        return Ok(0);
    }

    let tier = tier.expect("a tier when no source is named");
    let mut results = Vec::new();
    for src in sources {
        let r = backup_locked(&ctx, src, Some(tier.clone()), kind).await;
        notify(&cfg, &src.name, Some(&tier), r.as_ref().map(|_| ())).await;
        if !json {
            match &r {
                Ok(report) => println!("{}", done_line(report)),
                Err(e) => {
                    println!("backup of {} FAILED: {}", src.name, e.message);
                    if let Some(h) = &e.hint {
                        eprintln!("HINT ({}): {h}", src.name);
                    }
                }
            }
        }
        results.push(SourceResult::new(&src.name, r));
    }
    let failed: Vec<&SourceResult> = results.iter().filter(|r| !r.ok).collect();
    // One failure kind: its exit code; several different ones: 1.
    let code = match failed.first() {
        None => 0,
        Some(first) if failed.iter().all(|f| f.exit_code == first.exit_code) => first.exit_code,
        Some(_) => Kind::Failed.exit_code(),
    };
    if json {
        super::print_json(&results);
    } else if !failed.is_empty() {
        eprintln!(
            "strata: tier {tier}: {} of {} sources failed: {}",
            failed.len(),
            results.len(),
            failed
                .iter()
                .map(|f| f.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(code)
}

/// The kind of backup to take: `--kind`, else the tier's, else `dump`.
fn backup_kind(explicit: Option<TierKind>, tier: Option<&Tier>) -> Result<TierKind> {
    let kind = match (explicit, tier) {
        (Some(k), Some(t)) if k != t.kind => {
            return Err(Error::usage(format!(
                "--kind {} contradicts tier {}, which is of kind {}",
                k.as_str(),
                t.name,
                t.kind.as_str()
            ))
            .hint("drop --kind: a tier's kind decides"));
        }
        (Some(k), _) => k,
        (None, Some(t)) => t.kind,
        (None, None) => TierKind::Dump,
    };
    Ok(kind)
}

/// Refuses tiers whose kind cannot run yet, and tiers covering nothing.
fn check_runnable(cfg: &Config, tier: &Tier) -> Result<()> {
    if tier.kind == TierKind::Drill {
        return Err(Error::usage(format!(
            "tier {} is a recovery drill, not a backup",
            tier.name
        ))
        .hint(format!(
            "run it with `strata drill --tier {}` (see docs/drills.md); `strata schedule crontab` prints that line",
            tier.name
        )));
    }
    if !tier.kind.runnable() {
        return Err(Error::usage(format!(
            "tier {} is of kind {}: it is not backed up by `strata backup` (dump, base and snapshot tiers are)",
            tier.name,
            tier.kind.as_str()
        ))
        .hint(format!(
            "WAL is archived continuously by PostgreSQL's archive_command (`strata wal push`, docs/deployment.md); tier {} is defined in {}",
            tier.name,
            tier.defined_in.display()
        )));
    }
    if tier.sources.is_empty() {
        return Err(Error::usage(format!("tier {} covers no source", tier.name)).hint(
            format!(
                "list them with `sources = [...]` under [tiers.{}] in {} (without `sources`, a {} tier covers every fitting source; configured: {})",
                tier.name,
                cfg.path.display(),
                tier.kind.as_str(),
                names(cfg.sources.keys())
            ),
        ));
    }
    Ok(())
}

fn done_line(r: &BackupReport) -> String {
    format!(
        "backup {} of {} done in {:.1}s: {} read, {} stored ({:.1}:1)",
        r.id,
        r.source,
        r.duration_seconds,
        human_bytes(r.plain_bytes),
        human_bytes(r.stored_bytes),
        r.plain_bytes as f64 / r.stored_bytes.max(1) as f64
    )
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// One source's outcome in `strata backup --tier NAME --json`.
#[derive(Serialize)]
struct SourceResult {
    source: String,
    ok: bool,
    /// The backup, when it succeeded.
    backup: Option<BackupReport>,
    /// Why it failed.
    error: Option<String>,
    hint: Option<String>,
    exit_code: u8,
    retryable: bool,
}

impl SourceResult {
    fn new(source: &str, r: Result<BackupReport>) -> SourceResult {
        match r {
            Ok(b) => SourceResult {
                source: source.to_string(),
                ok: true,
                backup: Some(b),
                error: None,
                hint: None,
                exit_code: 0,
                retryable: false,
            },
            Err(e) => SourceResult {
                source: source.to_string(),
                ok: false,
                backup: None,
                exit_code: e.exit_code(),
                retryable: e.retryable,
                error: Some(e.message),
                hint: e.hint,
            },
        }
    }
}

/// `strata backup SOURCE --kind point --label NAME`: a named restore point
/// (`pg_create_restore_point`), recorded in the repository so that
/// `restore --to-name NAME` is checked before it starts and chooses the
/// right base backup. The WAL segment holding it is switched out, so it
/// reaches the archive now rather than when the segment fills.
pub async fn point(g: &Globals, source: &str, label: &str, json: bool) -> Result<u8> {
    use crate::catalog::points::{RestorePoint, check_label};
    use crate::sources::postgres::{Target, pg_error_text};
    check_label(label)?;
    let cfg = g.config()?;
    let src = cfg.source(source)?;
    if src.kind != crate::config::SourceKind::Postgres {
        return Err(Error::usage(format!(
            "--kind point is for PostgreSQL sources; {source} is a {} source",
            src.kind.as_str()
        )));
    }
    let repo = super::open_repository(&cfg).await?;
    if repo.point(source, label).await?.is_some() {
        return Err(Error::conflict(format!(
            "source {source} already has a restore point named {label}"
        ))
        .hint("choose another --label (restore points are named once)"));
    }
    let client = Target::new(&src.url).connect().await?;
    let row = client
        .query_one(
            "SELECT p::text, pg_walfile_name(p) FROM pg_create_restore_point($1) AS p",
            &[&label],
        )
        .await
        .map_err(|e| {
            Error::source(format!("pg_create_restore_point: {}", pg_error_text(&e))).hint(
                "the backup user needs EXECUTE on pg_create_restore_point(text) and pg_switch_wal() (superusers have it), and the server wal_level replica or higher",
            )
        })?;
    let (lsn, file): (String, String) = (row.get(0), row.get(1));
    // the point's segment goes to the archive now
    client
        .query_one("SELECT pg_switch_wal()::text", &[])
        .await
        .map_err(|e| Error::source(format!("pg_switch_wal: {}", pg_error_text(&e))))?;
    let timeline = u32::from_str_radix(file.get(..8).unwrap_or("1"), 16).unwrap_or(1);
    let p = RestorePoint {
        format: 1,
        source: source.to_string(),
        name: label.to_string(),
        lsn,
        timeline,
        created: chrono::Utc::now(),
    };
    repo.record_point(&p).await?;
    if json {
        super::print_json(&p);
    } else {
        println!(
            "restore point {} of {source} at LSN {} (timeline {}); restore to it with `strata restore {source} --target-dir DIR --to-name {}`",
            p.name, p.lsn, p.timeline, p.name
        );
    }
    Ok(0)
}

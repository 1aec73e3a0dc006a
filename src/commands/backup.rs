//! `strata backup SOURCE [--tier NAME]`: take one backup of a source;
//! `strata backup --tier NAME`: back up every source of a tier in turn.
//!
//! `strata backup [SOURCE…] --label L [--note N] [--keep-for D |
//! --keep-until T]`: a labelled set, one backup of each source named (every
//! source when none is), each recorded with the same label, note and keep
//! date (issue 19 item 4).
//!
//! With a tier or a set, one source's failure does not stop the others:
//! every source gets its summary line (or its entry in the `--json`
//! array), and the exit code is non-zero if any failed; a set's failure
//! names the sources whose labelled backups were taken.

use serde::Serialize;

use super::Globals;
use crate::backup::{backup_locked, notify, prepare};
use crate::catalog::Pin;
use crate::config::{Config, Source, SourceKind};
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
    run_kind(g, source, tier, None, false, json).await
}

/// [`run`] with an explicit `--kind` (`dump` or `base`); without one, a
/// tier's kind decides, else `dump`.
pub async fn run_kind(
    g: &Globals,
    source: Option<&str>,
    tier: Option<String>,
    kind: Option<TierKind>,
    incremental: bool,
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
    let incremental = incremental_of(kind, incremental, tier_def)?;
    let reporter = Reporter::new(Mode::detect(json));
    let ctx = BackupContext {
        repo: &repo,
        encoder,
        recipients: &recipients,
        reporter: &reporter,
        pin: None,
        incremental,
    };

    if source.is_some() {
        let src = sources[0];
        let r = backup_locked(&ctx, src, tier.clone(), kind).await;
        notify(&cfg, &src.name, tier.as_deref(), r.as_ref().map(|_| ())).await;
        let report = r?;
        if !json {
            println!("{}", done_line(&report));
        }
        let copies = match tier_def {
            Some(def) => copy_after(&cfg, def, &report, json).await,
            None => Vec::new(),
        };
        if json && copies.is_empty() {
            super::print_json(&report);
        } else if json {
            let mut v = serde_json::to_value(&report).expect("serialises");
            v["copies"] = serde_json::to_value(&copies).expect("serialises");
            super::print_json(&v);
        }
        return Ok(copies_exit_code(&copies));
    }

    let tier = tier.expect("a tier when no source is named");
    let results = back_up_each(&ctx, &cfg, &sources, Some(&tier), kind, json).await;
    let failed: Vec<&SourceResult> = results.iter().filter(|r| !r.ok).collect();
    let code = exit_code(&results);
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

/// `BackupContext::incremental`: `--incremental` or the tier's
/// `incremental = true`, with the tier's `max_chain`; only for base backups.
fn incremental_of(kind: TierKind, asked: bool, tier: Option<&Tier>) -> Result<Option<u32>> {
    if asked && kind != TierKind::Base {
        return Err(Error::usage(format!(
            "--incremental is for base backups; this backup is of kind {}",
            kind.as_str()
        ))
        .hint("add --kind base, or drop --incremental"));
    }
    Ok(match tier.and_then(|t| t.incremental) {
        Some(max_chain) => Some(max_chain),
        None if asked => Some(crate::sources::postgres::base::DEFAULT_MAX_CHAIN),
        None => None,
    })
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
    let mut line = format!(
        "backup {} of {} done in {:.1}s: {} read, {} stored ({:.1}:1)",
        r.id,
        r.source,
        r.duration_seconds,
        human_bytes(r.plain_bytes),
        human_bytes(r.stored_bytes),
        r.plain_bytes as f64 / r.stored_bytes.max(1) as f64
    );
    if let Some(l) = &r.label {
        line.push_str(&format!(", labelled {l}"));
        if let Some(t) = r.keep_until {
            line.push_str(&format!(
                ", kept until {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
    }
    line
}

/// `strata backup [SOURCE…] --label L`: one backup of each source (every
/// configured source when none is named), all recorded with `pin`. Every
/// check that can refuse the set runs before the first backup starts: the
/// sources exist, the kind fits each, and no source already has a backup
/// with this label (a label names one backup per source, so that
/// `--backup label:L` is never ambiguous).
pub async fn labelled(
    g: &Globals,
    names: &[String],
    tier: Option<String>,
    kind: Option<TierKind>,
    incremental: bool,
    pin: &Pin,
    json: bool,
) -> Result<u8> {
    let cfg = g.config()?;
    let tier_def = match tier.as_deref() {
        Some(t) => {
            let def = cfg.tier(t)?;
            check_runnable(&cfg, def)?;
            Some(def)
        }
        None => None,
    };
    // none named: the tier's sources with --tier, else every source
    let sources: Vec<&Source> = match (names.is_empty(), tier_def) {
        (true, Some(def)) => def
            .sources
            .iter()
            .map(|s| cfg.source(s))
            .collect::<Result<_>>()?,
        (true, None) => cfg.sources.values().collect(),
        (false, _) => names.iter().map(|s| cfg.source(s)).collect::<Result<_>>()?,
    };
    if sources.is_empty() {
        return Err(Error::usage(format!(
            "no sources in {}",
            cfg.path.display()
        )));
    }
    let kind = backup_kind(kind, tier_def)?;
    let incremental = incremental_of(kind, incremental, tier_def)?;
    if kind == TierKind::Base
        && let Some(s) = sources.iter().find(|s| s.kind != SourceKind::Postgres)
    {
        return Err(Error::usage(format!(
            "--kind base is for PostgreSQL sources; {} is a {} source",
            s.name,
            s.kind.as_str()
        ))
        .hint("name only the PostgreSQL sources, or drop --kind base"));
    }
    let prepared = prepare(&cfg, tier_def).await;
    let (encoder, recipients, repo) = match prepared {
        Ok(p) => p,
        Err(e) => {
            for src in &sources {
                notify(&cfg, &src.name, tier.as_deref(), Err(&e)).await;
            }
            return Err(e);
        }
    };
    let (entries, _) = repo.backups(None).await?;
    let taken: Vec<&str> = sources
        .iter()
        .filter(|src| {
            entries.iter().any(|e| {
                let s = e.summary();
                s.source == src.name && s.label.as_deref() == Some(pin.label.as_str())
            })
        })
        .map(|s| s.name.as_str())
        .collect();
    if !taken.is_empty() {
        return Err(Error::usage(format!(
            "label {}: {} already {} a backup with this label; nothing was backed up",
            pin.label,
            taken.join(", "),
            if taken.len() == 1 { "has" } else { "have" }
        ))
        .hint(format!(
            "a label names one backup per source: choose another label (`strata list --label {}` shows the set)",
            pin.label
        )));
    }
    let reporter = Reporter::new(Mode::detect(json));
    let ctx = BackupContext {
        repo: &repo,
        encoder,
        recipients: &recipients,
        reporter: &reporter,
        pin: Some(pin),
        incremental,
    };
    let results = back_up_each(&ctx, &cfg, &sources, tier.as_deref(), kind, json).await;
    let code = exit_code(&results);
    if json {
        super::print_json(&results);
    } else if code != 0 {
        let list = |ok: bool| {
            let v: Vec<&str> = results
                .iter()
                .filter(|r| r.ok == ok)
                .map(|r| r.source.as_str())
                .collect();
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        eprintln!(
            "strata: labelled set {}: failed: {}; backed up with the label: {}",
            pin.label,
            list(false),
            list(true)
        );
        let mut again = format!(
            "strata backup {} --label {}",
            list(false).replace(", ", " "),
            pin.label
        );
        if let Some(n) = &pin.note {
            again.push_str(&format!(" --note {n:?}"));
        }
        if let Some(t) = pin.keep_until {
            again.push_str(&format!(
                " --keep-until {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        eprintln!(
            "HINT: back up the failed sources alone with the same label (`{again}`): the set is whole when each source has its labelled backup"
        );
    }
    Ok(code)
}

/// One failure kind: its exit code; several different ones: 1.
/// Backs up each source in turn (a failure does not stop the rest),
/// notifying and, unless `json`, printing each outcome as it comes.
async fn back_up_each(
    ctx: &BackupContext<'_>,
    cfg: &Config,
    sources: &[&Source],
    tier: Option<&str>,
    kind: TierKind,
    json: bool,
) -> Vec<SourceResult> {
    let mut results = Vec::new();
    for src in sources {
        let r = backup_locked(ctx, src, tier.map(str::to_string), kind).await;
        notify(cfg, &src.name, tier, r.as_ref().map(|_| ())).await;
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
        let copies = match (&r, tier.and_then(|t| cfg.tiers.get(t))) {
            (Ok(report), Some(def)) => copy_after(cfg, def, report, json).await,
            _ => Vec::new(),
        };
        let mut result = SourceResult::new(&src.name, r);
        result.copies = copies;
        results.push(result);
    }
    results
}

/// The tier's `copy_to` after a committed backup (see
/// [`crate::copy::after_backup`]), each outcome printed unless `json`.
async fn copy_after(
    cfg: &Config,
    tier: &Tier,
    report: &BackupReport,
    json: bool,
) -> Vec<crate::copy::CopyOutcome> {
    let copies = crate::copy::after_backup(cfg, tier, &report.source, &report.id).await;
    if !json {
        for c in &copies {
            match &c.error {
                None => println!(
                    "backup {} of {} copied to repository {}: {} object(s), {}",
                    report.id,
                    report.source,
                    c.repository,
                    c.objects_copied,
                    human_bytes(c.bytes_copied)
                ),
                Some(e) => {
                    println!(
                        "copy of backup {} of {} to repository {} FAILED (the backup stands): {e}",
                        report.id, report.source, c.repository
                    );
                    if let Some(h) = &c.hint {
                        eprintln!("HINT ({}): {h}", report.source);
                    }
                }
            }
        }
    }
    copies
}

/// A failed `copy_to` copy's exit code (the first), else 0: the backup
/// stands, but the run is not a success.
fn copies_exit_code(copies: &[crate::copy::CopyOutcome]) -> u8 {
    copies
        .iter()
        .find(|c| !c.ok)
        .map_or(0, |c| c.exit_code.max(1))
}

/// One failure kind: its exit code; several different ones: 1.
fn exit_code(results: &[SourceResult]) -> u8 {
    let failed: Vec<&SourceResult> = results.iter().filter(|r| !r.ok).collect();
    match failed.first() {
        None => results
            .iter()
            .map(|r| copies_exit_code(&r.copies))
            .find(|c| *c != 0)
            .unwrap_or(0),
        Some(first) if failed.iter().all(|f| f.exit_code == first.exit_code) => first.exit_code,
        Some(_) => Kind::Failed.exit_code(),
    }
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
    /// The tier's `copy_to` copies of the backup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    copies: Vec<crate::copy::CopyOutcome>,
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
                copies: Vec::new(),
            },
            Err(e) => SourceResult {
                source: source.to_string(),
                ok: false,
                backup: None,
                exit_code: e.exit_code(),
                retryable: e.retryable,
                error: Some(e.message),
                hint: e.hint,
                copies: Vec::new(),
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

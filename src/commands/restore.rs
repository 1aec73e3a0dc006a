//! `strata restore SOURCE`: restore a logical backup into a database.

use std::path::PathBuf;

use url::Url;

use super::Globals;
pub use super::restore_into::IntoArgs;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::pitr::{self, absolute};
use crate::restore::plan::{self, Wanted};
use crate::sources::postgres::Target;
use crate::sources::postgres::dump::{self, RestoreOptions};

#[derive(Debug, Clone)]
pub struct Args {
    pub source: String,
    pub backup: String,
    /// `--at T`: the newest logical backup taken at or before T.
    pub at: Option<String>,
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
    expect_kind(src, crate::config::SourceKind::Postgres, "--to-database")?;
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
    // `latest` is the newest logical backup: base backups of the same
    // source restore with --target-dir
    let wanted = Wanted::from_flags(&a.backup, a.at.as_deref(), chrono::Utc::now())?;
    let chosen = plan::choose(&repo, src, &wanted).await?;
    if let Some(note) = &chosen.note {
        eprintln!("{note}");
    }
    let entry = chosen.entry;
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
        bin_dir: src.bin_dir.clone(),
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
        if report.verify_queries_checked > 0 {
            println!(
                "{} verify queries give the results recorded at backup time",
                report.verify_queries_checked
            );
        }
    }
    Ok(0)
}

/// `strata restore SOURCE --target-dir DIR (--to-time T | --to-lsn L |
/// --to-name N | --latest)`: point-in-time recovery from a base backup and
/// the WAL archive.
#[derive(Debug, Clone)]
pub struct PhysicalArgs {
    pub source: String,
    /// A backup id, or `latest` (then the newest base backup that ends
    /// before the target).
    pub backup: String,
    pub target_dir: PathBuf,
    pub to_time: Option<String>,
    pub to_lsn: Option<String>,
    pub to_name: Option<String>,
    /// `--to-name` names a point strata did not record.
    pub unrecorded_name: bool,
    pub to_xid: Option<String>,
    pub latest: bool,
    pub timeline: String,
    pub start: bool,
    pub port: u16,
    pub run_as: Option<String>,
    pub force: bool,
    /// `--delta`: rewrite only the files that differ from the backup.
    pub delta: bool,
    /// `--archive-mode off`: the restored server does not archive.
    pub archive_off: bool,
    pub json: bool,
}

pub async fn run_physical(g: &Globals, a: &PhysicalArgs) -> Result<u8> {
    use crate::sources::postgres::base;
    use crate::sources::postgres::pitr::{self as pg_pitr, RecoveryTarget};
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    expect_kind(src, crate::config::SourceKind::Postgres, "--target-dir")?;
    let given = [
        a.to_time.is_some(),
        a.to_lsn.is_some(),
        a.to_name.is_some(),
        a.to_xid.is_some(),
        a.latest,
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Error::usage(
            "say where recovery stops: one of --to-time, --to-lsn, --to-name, --to-xid or --latest",
        ));
    }
    let target = if let Some(t) = &a.to_time {
        RecoveryTarget::Time(
            crate::timeparse::parse_time(t, chrono::Utc::now())
                .map_err(|e| Error::usage(format!("--to-time: {e}")))?,
        )
    } else if let Some(l) = &a.to_lsn {
        RecoveryTarget::Lsn(
            l.parse()
                .map_err(|e| Error::usage(format!("--to-lsn: {e}")))?,
        )
    } else if let Some(n) = &a.to_name {
        RecoveryTarget::Name(n.clone())
    } else if let Some(x) = &a.to_xid {
        RecoveryTarget::Xid(pg_pitr::parse_xid(x)?)
    } else {
        RecoveryTarget::Latest
    };
    let timeline = pg_pitr::TimelineTarget::parse(&a.timeline)?;
    let owner = super::server_owner(a.run_as.as_deref())?;
    let identities = g.identities(&cfg)?;
    let restore_command = restore_command(g, &cfg.path, &a.source)?;
    let target_dir = absolute(&a.target_dir)?;
    // Everything checkable before the first object is read (issue 15:
    // each of these used to show only after the download or the replay).
    use crate::sources::postgres::precheck;
    if let Some(user) = &owner {
        let config = absolute(&cfg.path)?;
        let identity = g.identity_path(&cfg).map(|p| absolute(&p)).transpose()?;
        let mut reads: Vec<(&str, &std::path::Path)> = vec![("the config", &config)];
        if let Some(id) = &identity {
            reads.push(("the identity", id));
        }
        if let crate::config::RepositoryLocation::Local(dir) = &cfg.repository {
            reads.push(("the repository", dir));
        }
        precheck::server_user(user, &target_dir, &reads)?;
    }
    let port = if a.start {
        if !crate::util::port_free(a.port) {
            return Err(Error::conflict(format!(
                "port {} on 127.0.0.1 is in use: the restored server could not start on it",
                a.port
            ))
            .hint("choose a free port with --port N"));
        }
        a.port
    } else {
        // the one asked for (or the default) when free, else any
        if crate::util::port_free(a.port) {
            a.port
        } else {
            crate::util::free_port()?
        }
    };

    let repo = super::open_repository(&cfg).await?;
    let pitr::BasePlan {
        chosen,
        newest_start,
    } = pitr::choose_base(
        &repo,
        &a.source,
        &a.backup,
        &target,
        a.unrecorded_name,
        timeline,
        &identities,
    )
    .await?;
    let reporter = Reporter::new(Mode::detect(a.json));
    reporter.note(format!(
        "restore base backup {} of {} (ends {} at LSN {}) into {}; recovery target: {}",
        crate::util::with_chain(
            chosen.entry.summary().id.as_str(),
            &base::chain::steps(&chosen)
                .into_iter()
                .map(|s| s.backup)
                .collect::<Vec<_>>()
        ),
        a.source,
        chosen
            .base
            .stop_time
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        chosen.base.stop_lsn,
        target_dir.display(),
        target.describe()
    ));
    let start = if a.start {
        let pg_ctl = crate::sources::postgres::find_server_binary(
            src.bin_dir.as_deref(),
            "pg_ctl",
            pg_pitr::backup_major(&chosen),
        )?;
        Some(pitr::start_options(&src.url, a.port, pg_ctl))
    } else {
        None
    };
    let opts = base::RestoreOptions {
        target_dir: target_dir.clone(),
        target: target.clone(),
        timeline,
        force: a.force,
        restore_command,
        archive_off: a.archive_off,
        start,
        owner: owner.clone(),
        hot_standby_off: !a.start,
        // a restore to the end of the archive must get there (other
        // targets: PostgreSQL itself refuses to promote short of them)
        must_reach: match target {
            RecoveryTarget::Latest => newest_start,
            _ => None,
        },
    };
    let mut report = if a.delta {
        base::restore_delta(repo.storage(), &chosen, identities, &opts, &reporter).await?
    } else {
        base::restore(repo.storage(), &chosen, identities, &opts, &reporter).await?
    };
    // the port it runs on, or the one the printed command starts it on
    report.port = Some(port);
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored base backup {} of {} (start LSN {} on timeline {}, end LSN {} at {}) into {} ({} verified)",
            report.backup,
            report.source,
            report.backup_start_lsn,
            report.backup_timeline,
            report.backup_stop_lsn,
            report
                .backup_stop_time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            report.target_dir,
            crate::util::human_bytes(report.bytes),
        );
        if !report.chain.is_empty() {
            let steps: Vec<String> = report
                .chain
                .iter()
                .map(|c| match &c.applied {
                    Some(a) => format!(
                        "{} ({}: {} files patched, {} blocks, {} files written, {} removed)",
                        c.backup,
                        c.method,
                        a.files_patched,
                        a.blocks_written,
                        a.files_written,
                        a.removed
                    ),
                    None => format!("{} ({})", c.backup, c.method),
                })
                .collect();
            println!("chain: {}", steps.join(" → "));
        }
        println!(
            "recovery target: {} (timeline {})",
            report.recovery_target, a.timeline
        );
        println!(
            "{}",
            if a.archive_off {
                "archiving: off in this copy (it pushes nothing into the repository); for a new primary, restore with --archive-mode preserve"
            } else {
                "archiving: as in the backup (--archive-mode preserve): once promoted, this server archives a new timeline into the repository"
            }
        );
        if let Some(d) = &report.delta {
            println!(
                "delta: {} files kept, {} written ({} of {}), {} removed",
                d.files_kept,
                d.files_written,
                crate::util::human_bytes(d.bytes_written),
                crate::util::human_bytes(d.bytes_total),
                d.removed
            );
        }
        if report.started {
            println!(
                "server on 127.0.0.1:{} recovered and promoted at LSN {} on timeline {}",
                report.port.unwrap_or_default(),
                report.promoted_at_lsn.as_deref().unwrap_or("?"),
                report.timeline.unwrap_or_default()
            );
        } else {
            println!(
                "NOT recovered yet: start it with `pg_ctl -D {} -o '-p {port}' start`{} (port {port} is free now; its configuration keeps the source's port, for a new primary): it replays WAL through `strata wal fetch`, then promotes, and accepts connections only then (hot_standby is off until you remove that line from postgresql.auto.conf)",
                report.target_dir,
                owner
                    .as_deref()
                    .map(|u| format!(" as OS user {u}"))
                    .unwrap_or_default()
            );
        }
        let phases: Vec<String> = report
            .phases
            .iter()
            .map(|(p, s)| format!("{p} {s:.1}s"))
            .collect();
        println!(
            "took {:.1}s: {}",
            report.duration_seconds,
            phases.join(", ")
        );
    }
    Ok(0)
}

/// The `restore_command` the restored server runs (see
/// [`crate::restore::pitr::restore_command`]), told about an identity
/// given on the command line or in the environment.
pub(crate) fn restore_command(
    g: &Globals,
    config: &std::path::Path,
    source: &str,
) -> Result<String> {
    let cmd = pitr::restore_command(config, g.explicit_identity().as_deref(), source)?;
    // the restored server fetches WAL from the repository restored from
    Ok(match &g.repo {
        Some(r) => format!("{cmd} --repo {}", r),
        None => cmd,
    })
}

/// Refuses restore flags meant for another kind of source, saying which
/// flags this source takes.
fn expect_kind(
    src: &crate::config::Source,
    want: crate::config::SourceKind,
    flag: &str,
) -> Result<()> {
    use crate::config::SourceKind;
    if src.kind == want {
        return Ok(());
    }
    let hint = match src.kind {
        SourceKind::Postgres => format!(
            "restore {} with --to-database NAME [--create] (logical) or --target-dir DIR (point in time)",
            src.name
        ),
        SourceKind::Redis => format!(
            "restore {} with --to-file PATH, or --to-dir DIR [--start --port N]",
            src.name
        ),
        SourceKind::Chroma => format!(
            "restore {} with --into http://HOST:PORT [--collection NAME] [--replace]",
            src.name
        ),
    };
    Err(Error::usage(format!(
        "{flag} restores a {} source, but {} is a {} source",
        want.as_str(),
        src.name,
        src.kind.as_str()
    ))
    .hint(hint))
}

/// `strata restore REDIS --to-file PATH | --to-dir DIR [--start --port N]`.
#[derive(Debug, Clone)]
pub struct RedisArgs {
    pub source: String,
    pub backup: String,
    /// `--at T`: the newest snapshot taken at or before T.
    pub at: Option<String>,
    pub to_file: Option<PathBuf>,
    pub to_dir: Option<PathBuf>,
    pub start: bool,
    pub port: u16,
    pub force: bool,
    pub json: bool,
}

/// Restores a Redis snapshot to a file, or into a started redis-server.
pub async fn run_redis(g: &Globals, a: &RedisArgs) -> Result<u8> {
    use crate::sources::redis::snapshot::{self, RestoreTo};
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    let flag = if a.to_file.is_some() {
        "--to-file"
    } else {
        "--to-dir"
    };
    expect_kind(src, crate::config::SourceKind::Redis, flag)?;
    let to = match (&a.to_file, &a.to_dir) {
        (Some(_), Some(_)) => {
            return Err(Error::usage("give --to-file or --to-dir, not both"));
        }
        (Some(_), None) if a.start => {
            return Err(Error::usage(
                "--start needs --to-dir DIR (the server's directory), not --to-file",
            )
            .hint("strata restore SOURCE --to-dir DIR --start --port N"));
        }
        (Some(f), None) => RestoreTo::File(f.clone()),
        (None, Some(d)) => RestoreTo::Dir {
            dir: d.clone(),
            start: a.start.then_some(a.port),
        },
        (None, None) => return Err(Error::usage("give --to-file PATH or --to-dir DIR")),
    };
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let reporter = Reporter::new(Mode::detect(a.json));
    let wanted = Wanted::from_flags(&a.backup, a.at.as_deref(), chrono::Utc::now())?;
    let chosen = plan::choose(&repo, src, &wanted).await?;
    // stderr even with --json: which snapshot was chosen matters
    if let Some(note) = &chosen.note {
        eprintln!("{note}");
    }
    let entry = chosen.entry;
    if entry.summary().kind != "snapshot" {
        return Err(Error::usage(format!(
            "backup {} of {} is a {} backup, not a Redis snapshot",
            entry.summary().id,
            a.source,
            entry.summary().kind
        )));
    }
    let opts = snapshot::RestoreOptions {
        to,
        force: a.force,
        bin_dir: src.bin_dir.clone(),
    };
    let report = crate::sources::redis::dispatch::restore(
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
            "restored {} of {} to {} in {:.1}s ({} verified, RDB version {}{})",
            report.backup,
            report.source,
            report.path.display(),
            report.duration_seconds,
            crate::util::human_bytes(report.bytes),
            report.rdb_version,
            match report.shards.len() {
                0 => String::new(),
                n if report.server.is_none() => format!(
                    "; a cluster of {n} shards: one RDB file each, the slot map in {}",
                    crate::sources::redis::cluster::restore::SLOT_MAP_FILE
                ),
                n => format!("; a cluster of {n} shards, all loaded into one server"),
            }
        );
        for sh in &report.shards {
            let slots = crate::sources::redis::cluster::show_ranges(&sh.slots);
            match (&sh.file, sh.keys_loaded) {
                (Some(f), _) => println!(
                    "shard {}: {} ← master {} ({}) with slots {slots}, {} keys",
                    sh.shard,
                    f.display(),
                    sh.address,
                    sh.node_id,
                    sh.keys_recorded
                ),
                (None, Some(k)) => println!(
                    "shard {} (master {}, slots {slots}): {k} keys loaded (manifest: {})",
                    sh.shard, sh.address, sh.keys_recorded
                ),
                (None, None) => {}
            }
        }
        if let Some(s) = &report.server {
            println!(
                "redis-server (pid {}) is serving it on 127.0.0.1:{}: {} (manifest: {}); log {}",
                s.pid,
                s.port,
                snapshot::show_keyspace(&s.keyspace),
                snapshot::show_keyspace(&s.expected),
                s.log.display()
            );
        }
    }
    Ok(0)
}

/// Loads a snapshot into a running server; which kind of server follows
/// from the source's kind.
pub async fn run_into(g: &Globals, a: &IntoArgs) -> Result<u8> {
    use crate::config::SourceKind;
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    match src.kind {
        SourceKind::Redis => super::restore_redis::run(g, a).await,
        SourceKind::Chroma => super::restore_chroma::run(g, a).await,
        SourceKind::Postgres => Err(Error::usage(format!(
            "--into loads a Redis or Chroma snapshot; {} is a postgres source",
            src.name
        ))
        .hint(format!(
            "restore {} with --to-database NAME [--target-url URL] or --target-dir DIR",
            src.name
        ))),
    }
}

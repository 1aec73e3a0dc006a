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
    let entry = if let Some(t) = &a.at {
        if a.backup != "latest" {
            return Err(Error::usage("give --backup ID or --at TIME, not both"));
        }
        let at = crate::catalog::pick::parse_at(t, chrono::Utc::now())?;
        let picked = repo.pick_at(&a.source, Some("dump"), at).await?;
        eprintln!("{}", picked.describe());
        picked.entry
    } else if a.backup == "latest" {
        let (entries, unreadable) = repo.backups(Some(&a.source)).await?;
        let newest = entries.into_iter().find(|e| e.summary().kind == "dump");
        crate::catalog::refuse_unreadable(
            &a.source,
            "latest",
            &unreadable,
            newest.as_ref().map(|e| &e.summary().id),
            None,
        )?;
        newest.ok_or_else(|| {
            Error::new(
                crate::error::Kind::Integrity,
                format!("source {} has no logical (dump) backup", a.source),
            )
            .hint(format!(
                "take one with `strata backup {}`; base backups restore with --target-dir",
                a.source
            ))
        })?
    } else {
        repo.find(&a.source, &a.backup).await?
    };
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

/// Refuses (exit 2) a recovery the archived WAL cannot deliver: a gap
/// between the base backup's start and the target (for `--to-lsn`) or the
/// newest archived segment (otherwise: replay would stop early at the gap
/// and the restore would silently miss data), or a `--to-lsn` after the
/// newest archived WAL. Returns where the newest segment recovery can
/// reach starts (what a restore to the end of the archive must get to).
pub(crate) fn check_wal(
    listing: &crate::sources::postgres::wal::archive::WalListing,
    chosen: &crate::sources::postgres::base::Candidate,
    target: &crate::sources::postgres::base::RecoveryTarget,
    timeline: crate::sources::postgres::base::TimelineTarget,
) -> Result<Option<crate::sources::postgres::wal::Lsn>> {
    use crate::sources::postgres::base::{RecoveryTarget, TimelineTarget};
    use crate::sources::postgres::wal::{Lsn, SegmentSize, Timeline, continuity::continuity};
    let (Ok(start), Some(size)) = (
        chosen.base.start_lsn.parse::<Lsn>(),
        SegmentSize::new(chosen.base.wal_segment_size),
    ) else {
        return Ok(None);
    };
    let segments = &listing.segments;
    let mut switches = listing.switches.clone();
    match timeline {
        TimelineTarget::Current => switches.clear(),
        TimelineTarget::Latest => {}
        TimelineTarget::Number(n) => switches.retain(|s| s.timeline.0 <= n),
    }
    let c = continuity(
        segments,
        &switches,
        Timeline(chosen.base.timeline),
        start,
        size,
    );
    let backup = chosen.entry.summary().id.to_string();
    let gap = match target {
        RecoveryTarget::Lsn(l) => c.gaps.iter().find(|(from, _)| from <= l),
        _ => c.gaps.first(),
    };
    if let Some((_, g)) = gap {
        return Err(Error::usage(format!(
            "cannot recover to {} from base backup {backup}: {}; replay would stop at {}",
            target.describe(),
            g.describe(),
            g.from
        ))
        .hint(format!(
            "choose a target before the gap with --to-lsn (before {}), or archive segment {} again",
            g.from,
            g.missing.first().map(String::as_str).unwrap_or("?")
        )));
    }
    if let RecoveryTarget::Lsn(l) = target
        && *l >= c.reachable
    {
        let newest = c
            .newest
            .map(|n| format!("segment {n}, up to LSN {}", c.reachable))
            .unwrap_or_else(|| format!("nothing from LSN {start} on"));
        return Err(Error::usage(format!(
            "LSN {l} is after the newest archived WAL ({newest})"
        ))
        .hint("choose an earlier --to-lsn, or wait until the WAL holding it is archived"));
    }
    Ok(c.newest.map(|n| n.start_lsn(size)))
}

pub async fn run_physical(g: &Globals, a: &PhysicalArgs) -> Result<u8> {
    use crate::sources::postgres::base::{self, RecoveryTarget, StartOptions};
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
        RecoveryTarget::Xid(base::parse_xid(x)?)
    } else {
        RecoveryTarget::Latest
    };
    let timeline = base::TimelineTarget::parse(&a.timeline)?;
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
    // A restore point strata recorded is checked before anything starts
    // (a wrong name used to replay the whole archive, then fail), and its
    // LSN chooses the base backup, as --to-lsn would.
    let choice = match &target {
        RecoveryTarget::Name(n) => match repo.point_lsn(&a.source, n, a.unrecorded_name).await? {
            Some(lsn) => RecoveryTarget::Lsn(lsn),
            None => target.clone(),
        },
        _ => target.clone(),
    };
    let named = a.backup != "latest";
    let (entries, unreadable) = if named {
        (vec![repo.find(&a.source, &a.backup).await?], Vec::new())
    } else {
        repo.backups(Some(&a.source)).await?
    };
    let cands = base::candidates(&entries, &identities)?;
    if cands.is_empty() {
        crate::catalog::refuse_unreadable(&a.source, "base", &unreadable, None, None)?;
        return Err(Error::usage(format!(
            "{} has no base backup{}",
            a.source,
            if named {
                format!(" with id {}", a.backup)
            } else {
                String::new()
            }
        ))
        .hint(format!(
            "take one with `strata backup {} --kind base`",
            a.source
        )));
    }
    let archive = crate::sources::postgres::wal::archive::WalArchive::new(&repo, &a.source);
    let listing = archive.listing(Some(identities.clone())).await?;
    let chosen = base::choose(cands, &choice, timeline, &listing.switches);
    // (a named backup reads no other manifest: `unreadable` is empty)
    let upto = match &target {
        RecoveryTarget::Time(t) => Some(*t),
        _ => None,
    };
    let id = chosen.as_ref().ok().map(|c| &c.entry.summary().id);
    crate::catalog::refuse_unreadable(&a.source, "base", &unreadable, id, upto)?;
    let chosen = chosen?;
    base::check_live_timelines(&chosen, timeline, &listing)?;
    let newest_start = check_wal(&listing, &chosen, &choice, timeline)?;
    if let RecoveryTarget::Time(t) = &target
        && let (Some(until), Some((newest, _))) =
            (archive.archived_until(&listing).await?, listing.newest)
        && *t > until
    {
        // PostgreSQL would replay everything archived, never meet a commit
        // after T, and stop with "recovery ended before configured
        // recovery target was reached"
        let at = |d: &chrono::DateTime<chrono::Utc>| {
            d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        return Err(Error::usage(format!(
            "--to-time {} is after the newest archived WAL: segment {newest} was archived at {}, and the WAL written since is not in the archive",
            at(t),
            at(&until)
        ))
        .hint(format!(
            "if the server still runs, `SELECT pg_switch_wal()` on it archives the segment being written (then try again); \
             else choose an earlier time, or --latest to replay everything archived (up to about {})",
            at(&until)
        )));
    }
    let reporter = Reporter::new(Mode::detect(a.json));
    reporter.note(format!(
        "restore base backup {} of {} (ends {} at LSN {}) into {}; recovery target: {}",
        chosen.entry.summary().id,
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
        let pg_ctl = crate::sources::postgres::find_binary(
            src.bin_dir.as_deref(),
            "pg_ctl",
            base::backup_major(&chosen),
        )?;
        let mut url = src.url.clone();
        let _ = url.set_host(Some("127.0.0.1"));
        let _ = url.set_port(Some(a.port));
        Some(StartOptions {
            port: a.port,
            pg_ctl,
            connect: Target::new(&crate::sources::postgres::tls::loopback_url(&url)),
            timeout: std::time::Duration::from_secs(3600),
        })
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

/// The `restore_command` the restored server runs: this strata binary,
/// with absolute paths (the server runs it from its data directory).
pub(crate) fn restore_command(
    g: &Globals,
    config: &std::path::Path,
    source: &str,
) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the strata executable: {e}")))?;
    let mut cmd = format!(
        "{} --config {}",
        shell_word(&exe.display().to_string()),
        shell_word(&absolute(config)?.display().to_string())
    );
    if let Some(id) = g.explicit_identity() {
        cmd.push_str(&format!(
            " --identity {}",
            shell_word(&absolute(&id)?.display().to_string())
        ));
    }
    cmd.push_str(&format!(" wal fetch --source {} %f %p", shell_word(source)));
    Ok(cmd)
}

pub(crate) fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::usage(format!("{}: {e}", p.display())))
}

/// Quotes a word for the shell that runs restore_command, when needed.
fn shell_word(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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
    let entry = redis_snapshot(&repo, &a.source, &a.backup, a.at.as_deref()).await?;
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
    let report = snapshot::restore(repo.storage(), &entry, identities, &opts, &reporter).await?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {} of {} to {} in {:.1}s ({} verified, RDB version {})",
            report.backup,
            report.source,
            report.path.display(),
            report.duration_seconds,
            crate::util::human_bytes(report.bytes),
            report.rdb_version
        );
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

/// The Redis snapshot `--backup ID|latest` or `--at T` names; with `--at`,
/// says which one was chosen and how far before T it was taken.
pub(crate) async fn redis_snapshot(
    repo: &crate::catalog::Repository,
    source: &str,
    backup: &str,
    at: Option<&str>,
) -> Result<crate::catalog::Entry> {
    use crate::catalog::pick;
    let Some(at) = at else {
        if backup == "latest" {
            // newest first
            let (entries, unreadable) = repo.backups(Some(source)).await?;
            let newest = entries.into_iter().find(|e| e.summary().kind == "snapshot");
            crate::catalog::refuse_unreadable(
                source,
                "latest",
                &unreadable,
                newest.as_ref().map(|e| &e.summary().id),
                None,
            )?;
            return newest.ok_or_else(|| {
                    Error::new(
                        crate::error::Kind::Integrity,
                        format!("source {source} has no snapshot"),
                    )
                    .hint(format!(
                        "take one with `strata backup {source}`; `strata list {source}` shows what exists"
                    ))
                });
        }
        return repo.find(source, backup).await;
    };
    if backup != "latest" {
        return Err(Error::usage("give --backup ID or --at TIME, not both"));
    }
    let at = pick::parse_at(at, chrono::Utc::now())?;
    let picked = repo.pick_at(source, Some("snapshot"), at).await?;
    // stderr even with --json: which snapshot was chosen matters
    eprintln!("{}", picked.describe());
    Ok(picked.entry)
}

/// `strata restore SOURCE --into URL [--replace] [--collection NAME]...`:
/// load a snapshot into a running server (Redis or Chroma).
#[derive(Debug, Clone)]
pub struct IntoArgs {
    pub source: String,
    pub backup: String,
    /// `--at T`: the newest snapshot taken at or before T (instead of --backup).
    pub at: Option<String>,
    pub into: String,
    pub replace: bool,
    pub collections: Vec<String>,
    /// Redis: the address strata serves the snapshot on (`--listen`).
    pub listen: Option<String>,
    pub json: bool,
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

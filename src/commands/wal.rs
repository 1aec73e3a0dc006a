//! `strata wal push PATH` (PostgreSQL's `archive_command`) and
//! `strata wal fetch NAME DEST` (`restore_command`); `wal push --async`
//! and its background pusher `wal push-worker` (see
//! [`crate::sources::postgres::wal::push_async`]).
//!
//! Both are run by the server, once per file: quiet on success (the server
//! log is their output), a clear message on failure. `fetch` exits 1
//! without a word when the file is not archived: PostgreSQL asks for
//! history files and segments that do not exist as part of normal recovery.
//!
//! This module reads arguments and configuration, opens the repository,
//! starts the background workers and prints; the archive itself is
//! [`crate::sources::postgres::wal::archive`], and the workers' loops are
//! [`pusher::run`] (`wal push-worker`) and [`prefetch::run`]
//! (`wal prefetch-worker`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::Globals;
use crate::config::{Config, Source, SourceKind};
use crate::error::{Error, Result};
use crate::sources::postgres::wal::archive::{
    MacKey, PushContext, PushStatus, WalArchive, tmp_beside,
};
use crate::sources::postgres::wal::prefetch::{self, take_prefetched};
use crate::sources::postgres::wal::pusher;
use crate::sources::postgres::wal::spool::{self, Spool};
use crate::sources::postgres::wal::{SegmentName, SegmentSize, WalFile};

/// Exit code of `wal fetch` when the file is not archived.
pub const NOT_ARCHIVED: u8 = 1;
/// Exit code of `wal fetch` when the file could not be delivered for any
/// other reason: archived but damaged, the store failing, a missing
/// identity, a bad configuration. PostgreSQL takes any exit status up to
/// 125 for "not archived" and ends recovery there, promoting a server
/// that silently misses everything after it; a status above 125 makes it
/// stop recovery with a FATAL error instead (its `restore_command`
/// contract), so a restore fails where it would have come up short.
pub const FETCH_FAILED: u8 = 200;
/// Upper bound of `--prefetch`.
pub const MAX_PREFETCH: u32 = 64;

/// The source named by `--source`, else the only postgres source.
pub fn pick_source<'c>(cfg: &'c Config, flag: Option<&str>) -> Result<&'c Source> {
    if let Some(name) = flag {
        let s = cfg.source(name)?;
        if s.kind != SourceKind::Postgres {
            return Err(Error::usage(format!(
                "source {name:?} is not a postgres source"
            )));
        }
        return Ok(s);
    }
    let pg: Vec<&Source> = cfg
        .sources
        .values()
        .filter(|s| s.kind == SourceKind::Postgres)
        .collect();
    match pg.as_slice() {
        [one] => Ok(one),
        [] => Err(
            Error::usage(format!("no postgres source in {}", cfg.path.display()))
                .hint("define one under [sources.NAME] (kind = \"postgres\")"),
        ),
        many => Err(Error::usage(format!(
            "{} has several postgres sources ({}); which one is this WAL from?",
            cfg.path.display(),
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("pass --source NAME")),
    }
}

fn parse_name(what: &str, name: &str) -> Result<WalFile> {
    name.parse()
        .map_err(|e: String| Error::usage(format!("{what}: {e}")))
}

pub async fn push(g: &Globals, path: &Path, source: Option<&str>, json: bool) -> Result<u8> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::usage(format!("{} names no WAL file", path.display())))?;
    let name = parse_name(&path.display().to_string(), file_name)?;
    let cfg = g.config()?;
    let src = pick_source(&cfg, source)?;
    let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
    let encoder = super::encoder(&cfg)?;
    let repo = archive_repository(&cfg, &src.name).await?;
    repo.check_recipients(&cfg.recipients).await?;
    let archive = WalArchive::new(&repo, &src.name);
    let identities = || g.identities(&cfg);
    let ctx = PushContext {
        encoder,
        recipients: &recipients,
        mac_key: MacKey::derive(&repo.id, &cfg.recipients),
        identities: &identities,
    };
    let report = archive.push(&ctx, path, name).await?;
    match report.status {
        PushStatus::AlreadyArchived => eprintln!(
            "strata: notice: {name} is already archived with the same content ({}); nothing to do",
            report.key
        ),
        PushStatus::Completed => eprintln!(
            "strata: notice: {name} was recorded by an earlier, interrupted push; its data is stored now"
        ),
        PushStatus::Stored => {
            tracing::debug!("archived {name} as {}", report.key)
        }
    }
    if json {
        super::print_json(&report);
    }
    Ok(0)
}

#[derive(Debug, Clone)]
pub struct FetchArgs {
    pub name: String,
    pub dest: PathBuf,
    pub source: Option<String>,
    pub prefetch: u32,
    pub spool: Option<PathBuf>,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct FetchReport {
    name: String,
    source: String,
    /// `spool` (prefetched) or `repository`.
    from: &'static str,
}

/// `strata wal fetch` as PostgreSQL runs it: [`fetch`], with every
/// failure printed and turned into [`FETCH_FAILED`].
pub async fn fetch_cmd(g: &Globals, a: &FetchArgs) -> Result<u8> {
    match fetch(g, a).await {
        Ok(code) => Ok(code),
        Err(e) => {
            if a.json {
                super::print_json(&serde_json::json!({
                    "error": e.message,
                    "hint": e.hint,
                    "exit_code": FETCH_FAILED,
                    "retryable": e.retryable,
                }));
            }
            // the restore that started the server reads these lines back
            // from its log (`server::fetch_failures`)
            eprintln!(
                "strata: error: wal fetch {}: {}\nstrata: wal fetch failed with exit code {} (exiting with {FETCH_FAILED} so that PostgreSQL stops recovery here instead of ending it early)",
                a.name,
                e.to_string().replace('\n', " "),
                e.exit_code()
            );
            Ok(FETCH_FAILED)
        }
    }
}

pub async fn fetch(g: &Globals, a: &FetchArgs) -> Result<u8> {
    let name = parse_name("wal fetch", &a.name)?;
    if a.prefetch > MAX_PREFETCH {
        return Err(Error::usage(format!(
            "--prefetch {} is more than {MAX_PREFETCH}",
            a.prefetch
        )));
    }
    let cfg = g.config()?;
    let src = pick_source(&cfg, a.source.as_deref())?;
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let archive = WalArchive::new(&repo, &src.name);
    let report = |from| {
        if a.json {
            super::print_json(&FetchReport {
                name: name.to_string(),
                source: src.name.clone(),
                from,
            });
        }
    };

    let prefetch = match name {
        WalFile::Segment(seg) if a.prefetch > 0 => Some((spool_of(a, &repo.id, &src.name), seg)),
        _ => None,
    };
    if let Some((sp, seg)) = &prefetch {
        // moves the prefetcher past `seg` before it leaves the spool (else
        // it would see it missing and download it again)
        let spooled = sp.spooled_size(*seg).filter(|_| sp.create().is_ok());
        if let Some(size) = spooled {
            keep_prefetching(g, &cfg, src, a, sp, *seg, size);
        }
        match take_prefetched(sp, *seg, &a.dest).await {
            Ok(true) => {
                tracing::debug!(
                    "{name}: served from the prefetch spool {}",
                    sp.dir().display()
                );
                let size = std::fs::metadata(&a.dest)
                    .ok()
                    .and_then(|m| SegmentSize::new(m.len()));
                if let (None, Some(size)) = (spooled, size) {
                    keep_prefetching(g, &cfg, src, a, sp, *seg, size);
                }
                sp.clean(*seg);
                report("spool");
                return Ok(0);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("prefetch spool {}: {e}", sp.dir().display()),
        }
    }

    let Some(found) = archive.locate(name, &identities).await? else {
        tracing::debug!("{name} is not archived in {}", archive.prefix());
        return Ok(NOT_ARCHIVED);
    };
    if let Some((sp, seg)) = &prefetch
        && let Some(size) = SegmentSize::new(found.record.plain_size)
    {
        match sp.create() {
            // the prefetcher downloads what follows while this one downloads
            Ok(()) => keep_prefetching(g, &cfg, src, a, sp, *seg, size),
            Err(e) => tracing::warn!(
                "prefetch off: cannot use spool directory {}: {e}",
                sp.dir().display()
            ),
        }
    }
    let tmp = tmp_beside(&a.dest, ".tmp");
    archive
        .download(&found, &a.dest, &tmp, identities, false)
        .await?;
    report("repository");
    Ok(0)
}

/// Tells the prefetcher that PostgreSQL has `seg` now, starting one when
/// none runs. Failures are logged: prefetching only ever saves time.
fn keep_prefetching(
    g: &Globals,
    cfg: &Config,
    src: &Source,
    a: &FetchArgs,
    sp: &Spool,
    seg: SegmentName,
    size: SegmentSize,
) {
    if let Err(e) = sp.set_wanted(seg, size) {
        tracing::warn!("prefetch spool {}: {e}", sp.dir().display());
        return;
    }
    if sp.prefetcher_running() {
        return;
    }
    let (root, shared) = spool_root(a);
    let mut args: Vec<std::ffi::OsString> = vec![
        "wal".into(),
        "prefetch-worker".into(),
        "--source".into(),
        src.name.clone().into(),
        "--spool".into(),
        root.into_os_string(),
        "--depth".into(),
        a.prefetch.to_string().into(),
    ];
    if shared {
        args.push("--shared-root".into());
    }
    if let Err(e) = spawn_detached(g, cfg, &sp.log_path(), &args, "WAL prefetcher") {
        tracing::warn!("{e}");
    }
}

fn spool_root(a: &FetchArgs) -> (PathBuf, bool) {
    match &a.spool {
        Some(d) => (std::path::absolute(d).unwrap_or_else(|_| d.clone()), false),
        None => {
            let (root, shared) = spool::default_root(&a.dest);
            (std::path::absolute(&root).unwrap_or(root), shared)
        }
    }
}

fn spool_of(a: &FetchArgs, repo_id: &str, source: &str) -> Spool {
    let (root, shared) = spool_root(a);
    Spool::new(&root, shared, repo_id, source)
}

/// `strata wal prefetch-worker` (started by `wal fetch`, not by hand).
#[derive(Debug, Clone)]
pub struct PrefetchArgs {
    pub source: String,
    /// The spool root, as `wal fetch` chose it.
    pub spool: PathBuf,
    /// The root is shared temp space (its owner is checked).
    pub shared_root: bool,
    /// Segments kept ready after the one PostgreSQL has.
    pub depth: u32,
    /// Exit after this long without a new request from PostgreSQL.
    pub idle_exit: Duration,
}

/// The background prefetcher: keeps the `depth` segments after the one
/// PostgreSQL asked for last downloaded, verified and fsynced in the
/// spool, `depth` downloads at a time. One per spool (a `flock`). Exits
/// when PostgreSQL has asked for nothing new for a while (recovery ended
/// or stalled; the next fetch starts it again) or the spool is deleted.
pub async fn prefetch_worker(g: &Globals, a: &PrefetchArgs) -> Result<u8> {
    let cfg = g.config()?;
    let src = pick_source(&cfg, Some(&a.source))?;
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let sp = Spool::new(&a.spool, a.shared_root, &repo.id, &src.name);
    // (also checks that a shared temp root is ours and closed to others)
    sp.create()
        .map_err(|e| Error::failed(format!("prefetch spool {}: {e}", sp.dir().display())))?;
    let Some(_lock) = sp.try_lock()? else {
        return Ok(0); // another prefetcher runs
    };
    // a fetch waits for a download it sees under way: none of a dead
    // prefetcher's may look like one
    sp.remove_downloads();
    let archive = WalArchive::new(&repo, &src.name);
    let depth = a.depth.clamp(1, MAX_PREFETCH) as usize;
    prefetch::run(&sp, &archive, identities, depth, a.idle_exit, &a.spool).await;
    Ok(0)
}

/// `strata wal push [--async] [--processes N] [--spool DIR] PATH`.
#[derive(Debug, Clone, Default)]
pub struct PushArgs {
    pub path: PathBuf,
    pub source: Option<String>,
    /// `--async` (also `archive_async = true` in the source's config).
    pub asynchronous: bool,
    pub processes: Option<u32>,
    pub spool: Option<PathBuf>,
    pub json: bool,
}

/// `wal push`, synchronous or through the background pusher (see
/// [`crate::sources::postgres::wal::push_async`]).
pub async fn push_cmd(g: &Globals, a: &PushArgs) -> Result<u8> {
    use crate::sources::postgres::wal::push_async::MAX_PROCESSES;
    let cfg = g.config()?;
    let src = pick_source(&cfg, a.source.as_deref())?;
    let mut s = src.archive_push.clone();
    s.enabled |= a.asynchronous;
    if let Some(n) = a.processes {
        if !(1..=MAX_PROCESSES).contains(&n) {
            return Err(Error::usage(format!(
                "--processes {n} is not between 1 and {MAX_PROCESSES}"
            )));
        }
        s.processes = n;
    }
    if let Some(d) = &a.spool {
        s.spool = Some(d.clone());
    }
    let archived = if !s.enabled {
        push(g, &a.path, Some(&src.name), a.json).await? == 0
    } else {
        push_async(g, &cfg, src, a, &s).await?
    };
    // a file dropped by archive_push_queue_max goes nowhere
    if archived {
        push_secondaries(g, &cfg, src, &a.path).await;
    }
    Ok(0)
}

/// How long a secondary push may take before it counts as failed.
const SECONDARY_TIMEOUT: Duration = Duration::from_secs(30);
/// After a secondary push failed, how long pushes skip that repository
/// (each would wait for its deadline while PostgreSQL's archiving waits).
const SECONDARY_BACKOFF: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The repositories the `wal` tiers covering `source` copy to
/// (`copy_to`), but the one pushed into.
fn secondaries(cfg: &Config, source: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in cfg.tiers.values() {
        if t.kind == crate::tier::TierKind::Wal && t.sources.iter().any(|s| s == source) {
            for r in &t.copy_to {
                if *r != cfg.repo_name && !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
    }
    out
}

/// Pushes the archived file at `path` into each secondary repository too.
/// A failure never fails archiving (PostgreSQL has what it needs: the file
/// is in the primary): it is printed, recorded in the primary (`status`,
/// `metrics`), posted to `[notify]` the first time, and caught up by
/// `strata copy`. For [`SECONDARY_BACKOFF`] after a failure that
/// repository is skipped (recorded as failed without waiting).
async fn push_secondaries(g: &Globals, cfg: &Config, src: &Source, path: &Path) {
    use crate::copy::wal::{push_failures, record_push_failure};
    let targets = secondaries(cfg, &src.name);
    if targets.is_empty() {
        return;
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Ok(primary) = super::open_repository(cfg).await else {
        return;
    };
    let recent = push_failures(&primary).await.unwrap_or_default();
    for to in targets {
        let backing_off = recent.iter().any(|f| {
            f.repository == to
                && f.source == src.name
                && chrono::Utc::now() - f.last_failed < SECONDARY_BACKOFF
        });
        let r = if backing_off {
            Err(Error::failed(format!(
                "skipped: an earlier push there failed less than {} minutes ago",
                SECONDARY_BACKOFF.num_minutes()
            )))
        } else {
            let one = async {
                let to_cfg = cfg.select(Some(&to))?;
                let repo = archive_repository(&to_cfg, &src.name).await?;
                repo.check_recipients(&cfg.recipients).await?;
                let archive = WalArchive::new(&repo, &src.name);
                let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
                let identities = || g.identities(cfg);
                let ctx = PushContext {
                    encoder: super::encoder(cfg)?,
                    recipients: &recipients,
                    mac_key: MacKey::derive(&repo.id, &cfg.recipients),
                    identities: &identities,
                };
                let name = parse_name(&path.display().to_string(), name)?;
                archive.push(&ctx, path, name).await
            };
            match tokio::time::timeout(SECONDARY_TIMEOUT, one).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::failed(format!(
                    "no answer within {}s",
                    SECONDARY_TIMEOUT.as_secs()
                ))),
            }
        };
        let Err(e) = r else { continue };
        eprintln!(
            "strata: warning: {name} is archived, but pushing it to repository {to} failed: {}; `strata copy --to {to}` catches up",
            e.message
        );
        let first = !recent
            .iter()
            .any(|f| f.repository == to && f.source == src.name);
        if let Err(re) = record_push_failure(&primary, &to, &src.name, name, &e.message).await {
            eprintln!("strata: warning: cannot record the failure in the primary repository: {re}");
        }
        if first && let Some(n) = &cfg.notify {
            let ev = crate::notify::Event::copy("wal_push_failed", &src.name, None, &to, Some(&e));
            n.send(&ev).await;
        }
    }
}

#[derive(Debug, Serialize)]
struct AsyncPushReport {
    name: String,
    source: String,
    /// `archived` (durable in the repository) or `dropped`
    /// (archive_push_queue_max exceeded).
    status: &'static str,
    spool: String,
}

/// The foreground of an asynchronous push: wait (bounded, see
/// [`pusher::wait`]) for the pusher's result for this file, starting the
/// pusher when none runs. Whether the file was archived (`false`: dropped
/// by `archive_push_queue_max`); PostgreSQL gets exit 0 either way.
async fn push_async(
    g: &Globals,
    cfg: &Config,
    src: &Source,
    a: &PushArgs,
    s: &crate::sources::postgres::wal::push_async::AsyncSettings,
) -> Result<bool> {
    use crate::sources::postgres::wal::push_async::{self as pa, PushSpool};
    let path = &a.path;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::usage(format!("{} names no WAL file", path.display())))?;
    let name = parse_name(&path.display().to_string(), file_name)?.to_string();
    if !pa::is_queued(path) {
        // not from PostgreSQL's archiver (run by hand, or %p outside
        // pg_wal): the pusher could not find it
        tracing::info!("{name}: no archive_status/{name}.ready beside it; pushing synchronously");
        return Ok(push(g, path, Some(&src.name), a.json).await? == 0);
    }
    let pg_wal = std::path::absolute(path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
    let root = s
        .spool
        .clone()
        .unwrap_or_else(|| PushSpool::default_root(&pg_wal));
    let sp = PushSpool::new(&root, &src.name);
    sp.create().map_err(|e| {
        Error::failed(format!(
            "cannot create the WAL push spool {}: {e}",
            sp.dir().display()
        ))
        .hint("set archive_spool_path for the source to a directory the PostgreSQL user can write")
    })?;
    let report = |status| {
        if a.json {
            super::print_json(&AsyncPushReport {
                name: name.clone(),
                source: src.name.clone(),
                status,
                spool: sp.dir().display().to_string(),
            });
        }
    };
    if let Some(max) = s.queue_max
        && !sp.has_result(&name)
    {
        let queued = pa::queue_bytes(&pg_wal).unwrap_or(0);
        if queued > max {
            eprintln!(
                "strata: WARNING: {} of WAL wait in {} for archiving, more than archive_push_queue_max ({}): \
                 {name} is DROPPED, NOT ARCHIVED. The archive has a gap from here on: point-in-time recovery \
                 past it is impossible until the next base backup (strata verify reports the gap).",
                crate::util::human_bytes(queued),
                pg_wal.display(),
                crate::util::human_bytes(max)
            );
            report("dropped");
            return Ok(false);
        }
    }
    pusher::wait(&sp, &name, s.timeout, || {
        spawn_pusher(g, cfg, src, &sp, &root, &pg_wal, s.processes)
    })
    .await?;
    report("archived");
    Ok(true)
}

/// Starts `strata wal push-worker` in its own session (it outlives this
/// `archive_command`), its output appended to the spool's `pusher.log`.
fn spawn_pusher(
    g: &Globals,
    cfg: &Config,
    src: &Source,
    sp: &crate::sources::postgres::wal::push_async::PushSpool,
    root: &Path,
    pg_wal: &Path,
    processes: u32,
) -> Result<()> {
    let root =
        std::path::absolute(root).map_err(|e| Error::usage(format!("{}: {e}", root.display())))?;
    let args: Vec<std::ffi::OsString> = vec![
        "wal".into(),
        "push-worker".into(),
        "--source".into(),
        src.name.clone().into(),
        "--pg-wal".into(),
        pg_wal.into(),
        "--spool".into(),
        root.into(),
        "--processes".into(),
        processes.to_string().into(),
    ];
    spawn_detached(g, cfg, &sp.log_path(), &args, "background WAL pusher")
}

/// Starts `strata ARGS` with this process's config and identity in its
/// own session (it outlives the command PostgreSQL runs, and signals meant
/// for that one's process group do not reach it), its output appended to
/// `log` (kept to one older generation of 16 MiB).
fn spawn_detached(
    g: &Globals,
    cfg: &Config,
    log: &Path,
    args: &[std::ffi::OsString],
    what: &str,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let abs = |p: &Path| {
        std::path::absolute(p).map_err(|e| Error::usage(format!("{}: {e}", p.display())))
    };
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the strata executable: {e}")))?;
    if std::fs::metadata(log).is_ok_and(|m| m.len() > 16 << 20) {
        let _ = std::fs::rename(log, log.with_extension("log.1"));
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::failed(format!("{}: {e}", log.display())))?;
    let mut c = std::process::Command::new(exe);
    c.arg("--config").arg(abs(&cfg.path)?);
    if let Some(id) = &g.identity {
        c.arg("--identity").arg(abs(id)?);
    }
    if let Some(r) = &g.repo {
        c.arg("--repo").arg(r);
    }
    if std::env::var_os("STRATA_LOG").is_none() {
        c.env("STRATA_LOG", "warn,strata=info");
    }
    c.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = c
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start the {what}: {e}")))?;
    tracing::debug!("started the {what} (pid {})", child.id());
    Ok(())
}

/// `strata wal push-worker` (started by `wal push --async`, not by hand).
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    pub source: String,
    pub pg_wal: PathBuf,
    pub spool: PathBuf,
    pub processes: u32,
    /// Exit after this long with nothing to push.
    pub idle_exit: Duration,
}

/// The background pusher: pushes every file PostgreSQL has queued for
/// archiving (`archive_status/*.ready`), `processes` at a time, and writes
/// each one's result into the spool. One per spool (a `flock`).
pub async fn push_worker(g: &Globals, a: &WorkerArgs) -> Result<u8> {
    use crate::sources::postgres::wal::push_async::PushSpool;

    let cfg = g.config()?;
    let src = pick_source(&cfg, Some(&a.source))?;
    let sp = PushSpool::new(&a.spool, &src.name);
    sp.create()?;
    let Some(_lock) = sp.try_lock()? else {
        return Ok(0); // another pusher runs
    };
    sp.sweep(Duration::from_secs(24 * 3600));
    let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
    // one zstd thread per upload: the uploads in flight are the
    // parallelism, and a multithreaded context per 16 MiB file costs more
    // in fresh buffers than it saves
    let mut encoder = super::encoder(&cfg)?;
    encoder.threads = 1;
    let repo = archive_repository(&cfg, &src.name).await?;
    repo.check_recipients(&cfg.recipients).await?;
    let archive = WalArchive::new(&repo, &src.name);
    let identities = || g.identities(&cfg);
    let ctx = PushContext {
        encoder,
        recipients: &recipients,
        mac_key: MacKey::derive(&repo.id, &cfg.recipients),
        identities: &identities,
    };
    pusher::run(&sp, &archive, &ctx, &a.pg_wal, a.processes, a.idle_exit).await;
    Ok(0)
}

/// The repository WAL of `source` is pushed into, with the WAL tier's
/// `object_lock` (counted from now) on every object stored.
async fn archive_repository(
    cfg: &crate::config::Config,
    source: &str,
) -> Result<crate::catalog::Repository> {
    let repo = super::open_repository(cfg).await?;
    match crate::tier::wal_lock(&cfg.tiers, source) {
        Some((t, l)) => {
            repo.with_object_lock(l.at(chrono::Utc::now()), &t.name)
                .await
        }
        None => Ok(repo),
    }
}

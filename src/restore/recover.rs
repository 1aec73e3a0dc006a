//! Carrying out a [`Plan`]: one source brought back to its point, into
//! files (`strata restore --all`), or into a server on a free loopback
//! port in a drill's sandbox (`strata drill`, `strata restore --table
//! --to-time`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use url::Url;

use super::plan::{Method, Plan};
use super::sandbox::Sandbox;
use crate::catalog::Repository;
use crate::config::Source;
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::fetch;
use crate::progress::{Progress, Reporter};
use crate::sources::postgres::server::{self, StartOptions};
use crate::sources::postgres::{Target, dump, find_binary, find_server_binary, major_of};
use crate::sources::postgres::{base, pitr};
use crate::sources::redis::snapshot;

/// One timed phase of a source's restore, as an offset from the start of
/// the source's restore (for the timeline chart).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// `download+decrypt+decompress`, `WAL replay`, `server start`, `checks`.
    pub name: String,
    pub start_seconds: f64,
    pub seconds: f64,
}

/// Where and how a drill serves a restored source.
pub struct Serve<'a> {
    pub sandbox: &'a Sandbox,
    pub port: u16,
}

/// What [`recover`] did.
pub struct Recovered {
    pub dir: PathBuf,
    pub phases: Vec<Phase>,
    /// Until the source answered (server up, promoted, loaded).
    pub answered_after: Duration,
    /// A PostgreSQL server to check, when served.
    pub pg: Option<Target>,
    /// The database a dump was restored into.
    pub database: Option<String>,
    /// A redis-server serving the snapshot, when served.
    pub redis: Option<snapshot::StartedServer>,
    /// A Redis Cluster's backup: each shard's keys, as loaded.
    pub redis_shards: Vec<crate::sources::redis::snapshot::ShardRestored>,
    /// A Chroma export loaded (and verified) into a scratch server.
    pub chroma: Option<crate::sources::chroma::import::ChromaRestoreReport>,
    /// Recorded verify_queries compared by the dump restore.
    pub verify_queries_checked: Option<usize>,
    pub warnings: Vec<String>,
}

/// Everything [`recover`] needs besides the plan.
pub struct Context<'a> {
    pub repo: &'a Repository,
    pub identities: Arc<Vec<Identity>>,
    /// The `restore_command` a recovering server runs.
    pub restore_command: String,
    /// OS user owning PostgreSQL data dirs and running servers (root only).
    pub owner: Option<String>,
    pub reporter: &'a Reporter,
}

/// Carries out `plan` into `dir` (which must not exist or be empty):
/// files only, or, with `serve`, a server answering on `serve.port`.
pub async fn recover(
    ctx: &Context<'_>,
    plan: &Plan,
    dir: &Path,
    serve: Option<&Serve<'_>>,
) -> Result<Recovered> {
    let mut out = Recovered {
        dir: dir.to_path_buf(),
        phases: vec![],
        answered_after: Duration::ZERO,
        pg: None,
        database: None,
        redis: None,
        redis_shards: vec![],
        chroma: None,
        verify_queries_checked: None,
        warnings: vec![],
    };
    let clock = Instant::now();
    let phase = |out: &mut Recovered, name: &str, began: Instant| {
        out.phases.push(Phase {
            name: name.into(),
            start_seconds: (began - clock).as_secs_f64(),
            seconds: began.elapsed().as_secs_f64(),
        })
    };
    let storage = ctx.repo.storage();
    match plan.method {
        Method::BaseWal => {
            let cand = plan.base.as_ref().expect("a base plan has a candidate");
            let target = plan.target.clone().expect("a base plan has a target");
            let t = Instant::now();
            let opts = base::RestoreOptions {
                target_dir: dir.to_path_buf(),
                target,
                timeline: pitr::TimelineTarget::Latest,
                force: false,
                restore_command: ctx.restore_command.clone(),
                // written below, with a note for `restore --all`
                archive_off: false,
                start: None,
                owner: ctx.owner.clone(),
                // the drill starts the server itself and checks the end of
                // replay ("WAL replayed completely")
                must_reach: None,
                // written below for `restore --all`
                hot_standby_off: false,
            };
            base::restore(storage, cand, ctx.identities.clone(), &opts, ctx.reporter).await?;
            phase(&mut out, "download+decrypt+decompress", t);
            // A drill's server, or one started from `restore --all` to
            // look at the past, must never archive into the repository:
            // its promotion would add a timeline that later restores
            // (timeline `latest`) would follow.
            append_conf(
                dir,
                if serve.is_some() {
                    "archive_mode = 'off'\n"
                } else {
                    // started by the operator: no connection before it has
                    // replayed to T and promoted (a read-only connection
                    // during recovery saw a partial past; issue 15 item 3)
                    "archive_mode = 'off'  # strata restore --all: remove once this copy is the new primary\n\
                     hot_standby = 'off'  # strata restore --all: connections only once recovered and promoted\n"
                },
            )?;
            if let Some(s) = serve {
                // The sandbox listens on loopback only and lives as long
                // as the drill: trust lets the checks connect as the
                // cluster's superuser whatever the source's user may do.
                std::fs::write(
                    dir.join("pg_hba.conf"),
                    "# strata drill sandbox\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n",
                )?;
                let pg_ctl = find_server_binary(
                    plan.source.bin_dir.as_deref(),
                    "pg_ctl",
                    pitr::backup_major(cand),
                )?;
                let start = super::pitr::start_options(&plan.source.url, s.port, pg_ctl);
                s.sandbox
                    .register_pg(dir, &start.pg_ctl, ctx.owner.as_deref());
                let t = Instant::now();
                ctx.reporter.note(format!(
                    "{}: replaying WAL on 127.0.0.1:{} to {}",
                    plan.source.name,
                    s.port,
                    plan.target.as_ref().expect("target").describe()
                ));
                server::pg_ctl_start(dir, &start, ctx.owner.as_deref()).await?;
                server::wait_promoted(dir, &start, ctx.owner.as_deref()).await?;
                phase(&mut out, "WAL replay", t);
                out.pg = Some(start.connect);
            }
        }
        Method::Dump | Method::Export if serve.is_none() => {
            let t = Instant::now();
            write_objects(ctx, plan, dir).await?;
            phase(&mut out, "download+decrypt+decompress", t);
        }
        Method::Export => {
            let s = serve.expect("files are handled above");
            let t = Instant::now();
            let url = scratch_chroma(&plan.source, dir, s).await?;
            phase(&mut out, "server start", t);
            let t = Instant::now();
            let opts = crate::sources::chroma::import::RestoreOptions {
                into: url,
                tenant: plan.source.tenant.clone(),
                database: plan.source.database.clone(),
                token: None,
                collections: vec![],
                replace: false,
            };
            let r = crate::sources::chroma::import::restore_and_verify(
                storage,
                &plan.entry,
                ctx.identities.clone(),
                &opts,
                ctx.reporter,
            )
            .await?;
            out.warnings.extend(r.warnings.iter().cloned());
            phase(&mut out, "download+decrypt+decompress+import", t);
            out.chroma = Some(r);
        }
        Method::Dump => {
            let s = serve.expect("files are handled above");
            {
                let m = plan
                    .entry
                    .file
                    .open(&plan.entry.manifest_key, &ctx.identities)?;
                let info = m.postgres.clone().ok_or_else(|| {
                    Error::integrity(format!(
                        "backup {} has no PostgreSQL facts in its manifest",
                        plan.backup_id()
                    ))
                })?;
                let major = major_of(info.server_version_num);
                let t = Instant::now();
                let start = scratch_cluster(ctx, &plan.source, dir, major, s).await?;
                phase(&mut out, "server start", t);
                let t = Instant::now();
                let opts = dump::RestoreOptions {
                    to_database: info.database.clone(),
                    create: info.database != "postgres",
                    tables: vec![],
                    jobs: 1,
                    target: start.clone(),
                    globals: true,
                    no_owner: false,
                    scratch_dir: s.sandbox.root().to_path_buf(),
                    bin_dir: plan.source.bin_dir.clone(),
                };
                let r = dump::restore(
                    storage,
                    &plan.entry,
                    ctx.identities.clone(),
                    &opts,
                    ctx.reporter,
                )
                .await?;
                out.warnings.extend(r.warnings);
                out.verify_queries_checked = Some(r.verify_queries_checked);
                phase(&mut out, "download+decrypt+decompress+pg_restore", t);
                out.pg = Some(start.with_database(&info.database));
                out.database = Some(info.database);
            }
        }
        Method::Snapshot => {
            let t = Instant::now();
            let opts = snapshot::RestoreOptions {
                to: snapshot::RestoreTo::Dir {
                    dir: dir.to_path_buf(),
                    start: serve.map(|s| s.port),
                },
                force: false,
                bin_dir: plan.source.bin_dir.clone(),
            };
            let r = crate::sources::redis::dispatch::restore(
                storage,
                &plan.entry,
                ctx.identities.clone(),
                &opts,
                ctx.reporter,
            )
            .await?;
            if let (Some(s), Some(server)) = (serve, &r.server) {
                s.sandbox.register_pid(server.pid);
            }
            phase(
                &mut out,
                if serve.is_some() {
                    "download+decrypt+decompress+load"
                } else {
                    "download+decrypt+decompress"
                },
                t,
            );
            out.redis = r.server;
            out.redis_shards = r.shards;
        }
    }
    out.answered_after = clock.elapsed();
    Ok(out)
}

fn append_conf(dir: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("postgresql.auto.conf"))?;
    f.write_all(format!("\n# strata drill sandbox\n{text}").as_bytes())?;
    Ok(())
}

/// initdb + start: an empty cluster on 127.0.0.1:`port` for a dump to be
/// restored into, superuser `postgres`, trust authentication (it listens
/// on loopback only, and lives only as long as the drill).
async fn scratch_cluster(
    ctx: &Context<'_>,
    src: &Source,
    dir: &Path,
    major: u32,
    s: &Serve<'_>,
) -> Result<Target> {
    use std::os::unix::fs::PermissionsExt;
    let initdb = find_binary(src.bin_dir.as_deref(), "initdb", major)?;
    // a newer scratch server takes a dump as well; its pg_ctl must be of
    // initdb's version, whatever the dump's
    let made_by = crate::sources::postgres::binary_major(&initdb).unwrap_or(major);
    let pg_ctl = find_server_binary(src.bin_dir.as_deref(), "pg_ctl", made_by)?;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(u) = &ctx.owner {
        server::chown_recursive(dir, u)?;
    }
    s.sandbox.register_pg(dir, &pg_ctl, ctx.owner.as_deref());
    let mut cmd = server::as_owner(&initdb, ctx.owner.as_deref());
    // inside the sandbox: an interrupted drill's teardown kills every
    // process working there (runuser does not pass SIGKILL on to initdb)
    cmd.current_dir(dir)
        .arg("-D")
        .arg(dir)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .stdin(std::process::Stdio::null());
    // async and killed when dropped, so an interrupted drill does not wait
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot run {}: {e}", initdb.display())))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "initdb of the scratch cluster in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    append_conf(dir, "fsync = off\narchive_mode = 'off'\n")?;
    let url = Url::parse(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        s.port
    ))
    .expect("valid URL");
    let start = StartOptions {
        port: s.port,
        pg_ctl,
        connect: Target::new(&crate::sources::postgres::tls::loopback_url(&url)),
        timeout: Duration::from_secs(600),
    };
    server::pg_ctl_start(dir, &start, ctx.owner.as_deref()).await?;
    Ok(start.connect)
}

/// Writes every object of the plan's backup into `dir`, verified, under
/// its name in the manifest (`database.pgdump`, `globals.sql`, a Chroma
/// collection's `.jsonl`).
async fn write_objects(ctx: &Context<'_>, plan: &Plan, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let m = plan
        .entry
        .file
        .open(&plan.entry.manifest_key, &ctx.identities)?;
    for rec in &m.objects {
        let path = dir.join(&rec.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                Error::conflict(format!("{}: {e}", path.display()))
                    .hint("restore into an empty --target-dir")
            })?;
        let f = fetch(
            ctx.repo.storage(),
            rec,
            ctx.identities.clone(),
            file,
            Progress::hidden(),
        )
        .await?;
        f.sync_all()?;
    }
    Ok(())
}

/// How long a scratch Chroma server may take to answer.
const CHROMA_START: Duration = Duration::from_secs(120);

/// Starts `chroma run` on 127.0.0.1:`port` with its data in `dir` (its
/// working directory, so the sandbox teardown finds it) and waits until
/// it answers. The binary: `bin_dir/chroma` of the source, else `chroma`
/// on PATH.
async fn scratch_chroma(src: &Source, dir: &Path, s: &Serve<'_>) -> Result<Url> {
    std::fs::create_dir_all(dir)?;
    let bin = src
        .bin_dir
        .as_ref()
        .map_or_else(|| PathBuf::from("chroma"), |d| d.join("chroma"));
    let log_path = dir.join("chroma.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("run")
        .arg("--path")
        .arg(dir.join("data"))
        .args(["--host", "127.0.0.1", "--port", &s.port.to_string()])
        .env("ANONYMIZED_TELEMETRY", "False")
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        Error::failed(format!("cannot start {}: {e}", bin.display())).hint(format!(
            "install chromadb (`pip install chromadb`) or set bin_dir under [sources.{}] to the directory holding `chroma`",
            src.name
        ))
    })?;
    s.sandbox.register_pid(child.id());
    let url = Url::parse(&format!("http://127.0.0.1:{}", s.port)).expect("valid URL");
    let client =
        crate::sources::chroma::client::Client::new(&url, &src.tenant, &src.database, None)?;
    let began = Instant::now();
    loop {
        if client.version().await.is_ok() {
            return Ok(url);
        }
        let tail = || {
            let t = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(5)..].join(" | ")
        };
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::failed(format!(
                "the scratch Chroma server exited ({st}); log {}: {}",
                log_path.display(),
                tail()
            )));
        }
        if began.elapsed() > CHROMA_START {
            return Err(Error::failed(format!(
                "the scratch Chroma server did not answer within {}s; log {}: {}",
                CHROMA_START.as_secs(),
                log_path.display(),
                tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

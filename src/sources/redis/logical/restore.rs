//! Restoring a logical snapshot ([`super`]) wherever a snapshot
//! is restored: into a running server (`restore --into`, `restore --all`
//! with a server `restore_to`), into a `redis-server` strata starts
//! (`--to-dir DIR --start`, drills), or to an RDB file (`--to-file`,
//! `--to-dir` without `--start`). A logical snapshot is not an RDB file,
//! so for the last two strata loads it into a private `redis-server` on a
//! free loopback port in a temporary directory beside the destination,
//! has it write its RDB (`BGSAVE`), moves that file into place and stops
//! the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::Loaded;
use crate::catalog::Entry;
use crate::catalog::manifest::{RedisDb, RedisInfo};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::ObjectRecord;
use crate::progress::Reporter;
use crate::sources::redis::Target;
use crate::sources::redis::client::{Client, Reply, info_field, parse_keyspace};
use crate::sources::redis::logical;
use crate::sources::redis::snapshot::{
    RDB_OBJECT, RestoreOptions, RestoreReport, RestoreTo, show_keyspace, start_server,
};
use crate::storage::Storage;

/// How long a started server may take to write its RDB.
const SAVE_TIMEOUT: Duration = Duration::from_secs(3600);

fn loopback(port: u16) -> Target {
    Target::new(&url::Url::parse(&format!("redis://127.0.0.1:{port}")).expect("valid URL"))
}

fn counts_match(a: &[RedisDb], b: &[RedisDb]) -> bool {
    a.iter()
        .map(|d| (d.db, d.keys))
        .eq(b.iter().map(|d| (d.db, d.keys)))
}

fn mismatch_warning(loaded: &[RedisDb], recorded: &[RedisDb], l: &Loaded) -> String {
    format!(
        "key counts differ from those the logical snapshot wrote{}: loaded {}, recorded {}",
        if l.expired > 0 {
            format!(
                " ({} keys had expired by the time they were restored)",
                l.expired
            )
        } else {
            " (a key returned twice by SCAN is restored once)".to_string()
        },
        show_keyspace(loaded),
        show_keyspace(recorded)
    )
}

/// Has the server write its RDB (`BGSAVE`) and waits until it is written.
pub(crate) async fn save(c: &mut Client, t: &Target) -> Result<()> {
    match c.command(&[b"BGSAVE"]).await? {
        Reply::Status(_) => {}
        other => {
            return Err(Error::failed(format!(
                "{}: BGSAVE answered {other:?}",
                t.display()
            )));
        }
    }
    let began = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = c.info("persistence").await?;
        if info_field(&p, "rdb_bgsave_in_progress") == Some("0") {
            return match info_field(&p, "rdb_last_bgsave_status") {
                Some("ok") => Ok(()),
                s => Err(Error::failed(format!(
                    "{} could not write its RDB file (rdb_last_bgsave_status {s:?}); see its log",
                    t.display()
                ))),
            };
        }
        if began.elapsed() > SAVE_TIMEOUT {
            return Err(Error::failed(format!(
                "{} did not write its RDB file within {SAVE_TIMEOUT:?}",
                t.display()
            )));
        }
    }
}

/// `snapshot::restore` for a logical snapshot.
pub async fn restore(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    rec: ObjectRecord,
    info: RedisInfo,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let summary = entry.summary();
    let (path, start) = match &opts.to {
        RestoreTo::File(p) => (p.clone(), None),
        RestoreTo::Dir { dir, start } => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::failed(format!("cannot create directory {}: {e}", dir.display()))
            })?;
            (dir.join(RDB_OBJECT), *start)
        }
    };
    if !opts.force && path.exists() {
        return Err(
            Error::conflict(format!("{} already exists", path.display()))
                .hint("choose another path, or pass --force to replace it"),
        );
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // --start: the server runs in the destination directory (its dump.rdb
    // is the restored file); else in a private directory beside it.
    let work = match start {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix(".strata-restore-")
                .tempdir_in(&parent)
                .map_err(|e| {
                    Error::failed(format!(
                        "cannot create a directory in {}: {e}",
                        parent.display()
                    ))
                })?,
        ),
    };
    let server_dir: PathBuf = match &work {
        Some(w) => w.path().to_path_buf(),
        None => {
            // a file left there would be loaded first (--force replaces it)
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| {
                    Error::failed(format!("cannot replace {}: {e}", path.display()))
                })?;
            }
            parent.clone()
        }
    };
    let port = match start {
        Some(p) => p,
        None => std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::failed(format!("no free loopback port: {e}")))?,
    };
    reporter.note(format!(
        "backup {} is a logical snapshot: loading it into a redis-server on 127.0.0.1:{port}",
        summary.id
    ));
    let mut server = start_server(
        &server_dir,
        port,
        opts.bin_dir.as_deref(),
        &info.keyspace,
        reporter,
    )
    .await?;
    let t = loopback(port);
    let stop = |pid: u32| unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    };
    let loaded = async {
        let mut c = Client::connect(&t).await?;
        let l = logical::load::load(&mut c, &t, storage, &rec, identities, reporter).await?;
        save(&mut c, &t).await?;
        let keyspace = parse_keyspace(&c.info("keyspace").await?);
        Ok::<_, Error>((l, keyspace))
    }
    .await;
    let (l, keyspace) = match loaded {
        Ok(v) => v,
        Err(e) => {
            stop(server.pid);
            return Err(e);
        }
    };
    let mut warnings = Vec::new();
    server.counts_match = counts_match(&keyspace, &info.keyspace);
    if !server.counts_match {
        warnings.push(mismatch_warning(&keyspace, &info.keyspace, &l));
    }
    server.keyspace = keyspace;
    let bytes = match &work {
        Some(w) => {
            stop(server.pid);
            let saved = w.path().join(RDB_OBJECT);
            if !opts.force && path.exists() {
                return Err(
                    Error::conflict(format!("{} already exists", path.display()))
                        .hint("choose another path, or pass --force to replace it"),
                );
            }
            std::fs::rename(&saved, &path).map_err(|e| {
                Error::failed(format!(
                    "cannot move {} to {}: {e}",
                    saved.display(),
                    path.display()
                ))
            })?;
            if let Ok(d) = std::fs::File::open(&parent) {
                let _ = d.sync_all();
            }
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        }
        None => std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
    };
    // the RDB version of the file the server wrote (`REDIS0010`)
    let rdb_version = std::fs::File::open(&path)
        .ok()
        .and_then(|mut f| {
            let mut h = [0u8; 9];
            std::io::Read::read_exact(&mut f, &mut h).ok()?;
            std::str::from_utf8(h.strip_prefix(b"REDIS")?)
                .ok()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Ok(RestoreReport {
        backup: summary.id.to_string(),
        source: summary.source.clone(),
        path,
        bytes,
        redis_version: info.redis_version,
        rdb_version,
        server: start.map(|_| server),
        duration_seconds: clock.elapsed().as_secs_f64(),
        warnings,
        shards: Vec::new(),
    })
}

/// What [`restore_into`] loaded, for `load::restore_into`'s report.
pub struct IntoLoaded {
    /// Keys per database after loading.
    pub keyspace: Vec<RedisDb>,
    pub counts_match: bool,
}

/// `load::restore_into` for a logical snapshot, once the target passed
/// its checks (not a cluster, not a replica, empty or `--replace`): with
/// `--replace` the target is emptied first (`FLUSHALL`), so it ends as
/// the snapshot, as a replication restore leaves it. Warnings are added
/// to `warnings`.
#[allow(clippy::too_many_arguments)]
pub async fn restore_into(
    mut client: Client,
    t: &Target,
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    rec: &ObjectRecord,
    info: &RedisInfo,
    identities: Arc<Vec<Identity>>,
    target_version: &str,
    replaced_keys: u64,
    warnings: &mut Vec<String>,
    reporter: &Reporter,
) -> Result<IntoLoaded> {
    let summary = entry.summary();
    reporter.note(format!(
        "restore {} of {} into {} (Redis {target_version}): a logical snapshot, loaded with RESTORE",
        summary.id,
        summary.source,
        t.display()
    ));
    if replaced_keys > 0 {
        match client.command(&[b"FLUSHALL"]).await? {
            Reply::Status(_) => {}
            Reply::Error(e) => {
                return Err(Error::source(format!(
                    "{}: FLUSHALL refused: {e}",
                    t.display()
                ))
                .hint("--replace empties the target first: the user needs FLUSHALL (ACL: +flushall), or empty it by hand"));
            }
            other => {
                return Err(Error::source(format!(
                    "{}: FLUSHALL answered {other:?}",
                    t.display()
                )));
            }
        }
    }
    let began = Instant::now();
    let l = logical::load::load(&mut client, t, storage, rec, identities, reporter).await?;
    reporter.note(format!(
        "{}: {} keys restored in {:.1}s ({})",
        t.display(),
        l.totals.keys,
        began.elapsed().as_secs_f64(),
        logical::rate(l.totals.keys, l.bytes, began)
    ));
    // back on database 0 for whoever reuses the connection
    let _ = client.command(&[b"SELECT", b"0"]).await;
    let keyspace = parse_keyspace(&client.info("keyspace").await?);
    let matched = counts_match(&keyspace, &info.keyspace);
    if !matched {
        warnings.push(mismatch_warning(&keyspace, &info.keyspace, &l));
    }
    Ok(IntoLoaded {
        keyspace,
        counts_match: matched,
    })
}

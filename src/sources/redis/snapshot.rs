//! Redis snapshots: back up the server's RDB through the pipeline, restore
//! it to a file or into a freshly started `redis-server`.
//!
//! Backup: connect, record `INFO` facts, then ask for a full sync like a
//! replica (`SYNC`). The payload streams from the socket through a bounded
//! channel into the pipeline's blocking encoder, checked on the way by
//! [`RdbCheck`]; the object is committed only when the whole payload
//! arrived and its RDB checksum holds, so a cut connection or a damaged
//! snapshot leaves no object and no manifest. The server decides whether
//! it streams (diskless, `repl-diskless-sync yes`, Redis 7's default) or
//! writes a file first; with diskless sync it waits
//! `repl-diskless-sync-delay` seconds (default 5) for more replicas before
//! it starts. strata never changes server settings: lower the delay on
//! the server if those seconds matter (docs/redis.md).
//!
//! Where the server refuses `SYNC` (managed services), `mode = "auto"`
//! (the default) takes a logical snapshot instead ([`super::logical`]),
//! says so, and records why in the manifest; `mode = "replication"`
//! fails naming `SYNC`; `mode = "logical"` never asks for it.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use tokio::sync::mpsc;

use super::client::{Client, info_field, parse_keyspace};
use super::logical::LOGICAL_OBJECT;
use super::rdb::RdbCheck;
use super::{Mode, Target};
use crate::catalog::manifest::{RedisDb, RedisInfo, Summary};
use crate::catalog::{BackupId, Entry, Manifest, Repository};
use crate::config::Source;
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::pipeline::{ObjectRecord, fetch};
use crate::progress::Reporter;
use crate::sources::backup::{BackupContext, BackupReport};
use crate::storage::Storage;

/// The object name of a snapshot.
pub const RDB_OBJECT: &str = "dump.rdb";
/// Chunks buffered between the socket and the encoder (64 KiB each).
const CHANNEL_CHUNKS: usize = 16;
/// How long a started `redis-server` may take to load the snapshot.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A std reader over the chunks the socket task sends, checking the RDB
/// as it passes.
struct ChannelReader {
    rx: mpsc::Receiver<std::result::Result<Bytes, String>>,
    cur: Bytes,
    check: Arc<Mutex<RdbCheck>>,
    /// Why the check refused the stream, for the error report.
    refused: Arc<Mutex<Option<String>>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(m)) => return Err(io::Error::other(m)),
                Some(Ok(b)) => {
                    if let Err(m) = self.check.lock().unwrap().feed(&b) {
                        *self.refused.lock().unwrap() = Some(m.clone());
                        return Err(io::Error::other(m));
                    }
                    self.cur = b;
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Takes a snapshot of a redis source that is a single server (a
/// cluster's is [`super::cluster::backup`]'s, chosen by
/// [`super::dispatch::backup`]).
pub async fn backup(
    ctx: &BackupContext<'_>,
    source: &Source,
    tier: Option<String>,
    client: Client,
    started: chrono::DateTime<Utc>,
    clock: Instant,
) -> Result<BackupReport> {
    let target = Target::new(&source.url);
    let id = BackupId::new(started);
    let node = take_node(
        ctx,
        source,
        &target,
        Some(client),
        &id,
        RDB_OBJECT,
        LOGICAL_OBJECT,
    )
    .await?;
    let finished = Utc::now();
    let mut manifest = Manifest::new(
        Summary::of(
            &id,
            &source.name,
            source.kind,
            "snapshot",
            tier.clone(),
            started,
            finished,
        ),
        vec![node.record],
        None,
    );
    manifest.redis = Some(RedisInfo {
        redis_version: node.redis_version,
        rdb_version: node.rdb_version,
        keyspace: node.keyspace,
        used_memory: node.used_memory,
        transfer: node.transfer,
        captured: node.captured.filter(|_| node.logical.is_none()),
        logical: node.logical,
        cluster: None,
    });
    ctx.commit(&manifest, clock).await
}

/// One server's snapshot, stored as one object of a backup.
pub(crate) struct NodeSnapshot {
    pub record: ObjectRecord,
    pub redis_version: String,
    pub used_memory: u64,
    /// Keys per database: from `INFO keyspace` just before a replication
    /// snapshot; those written for a logical one.
    pub keyspace: Vec<RedisDb>,
    /// 0 for a logical snapshot.
    pub rdb_version: u32,
    /// `disk`, `diskless` or `logical`.
    pub transfer: String,
    /// When the server cut the snapshot (a logical one: when its scan began).
    pub captured: Option<chrono::DateTime<Utc>>,
    pub logical: Option<crate::catalog::manifest::LogicalInfo>,
}

/// Takes the snapshot of the server `target` (of `source`; one master of
/// a cluster, or the server itself) and stores it as `rdb_object` of
/// backup `id` (over `client` when given, connected to it), or as
/// `logical_object` when `source.redis_mode` says so or
/// the server refuses `SYNC` in mode `auto`.
pub(crate) async fn take_node(
    ctx: &BackupContext<'_>,
    source: &Source,
    target: &Target,
    client: Option<Client>,
    id: &BackupId,
    rdb_object: &str,
    logical_object: &str,
) -> Result<NodeSnapshot> {
    let mut client = match client {
        Some(c) => c,
        None => Client::connect(target).await?,
    };
    let server = client.info("server").await?;
    let memory = client.info("memory").await?;
    let keyspace = parse_keyspace(&client.info("keyspace").await?);
    let redis_version = info_field(&server, "redis_version")
        .unwrap_or("unknown")
        .to_string();
    let used_memory = info_field(&memory, "used_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ctx.reporter.note(format!(
        "backup {}: {} (Redis {redis_version}, {} keys) as {id}",
        source.name,
        target.display(),
        keyspace.iter().map(|d| d.keys).sum::<u64>()
    ));

    let mut fallback: Option<String> = None;
    let mut sync_hint: Option<String> = None;
    let asked = Utc::now();
    let framing = if source.redis_mode == Mode::Logical {
        None
    } else {
        match client.start_sync().await {
            Ok(f) => Some(f),
            Err(e) if sync_refused(&e) => {
                if source.redis_mode == Mode::Replication {
                    return Err(Error::source(format!(
                        "{}: the server refuses SYNC, the replication protocol a snapshot uses ({})",
                        source.name, e.message
                    ))
                    .hint(format!(
                        "managed services (ElastiCache, MemoryDB, Azure Cache) disable SYNC/PSYNC: set mode = \"logical\" (or \"auto\") under [sources.{}]",
                        source.name
                    )));
                }
                // Always shown (also with --json, on stderr), as warnings are.
                eprintln!(
                    "notice: {} refuses SYNC ({}): taking a logical snapshot instead (SCAN + DUMP; not a point-in-time image, see docs/redis.md); set mode = \"logical\" to skip the attempt",
                    source.name, e.message
                );
                sync_hint = e.hint;
                fallback = Some(e.message);
                None
            }
            Err(e) => return Err(e),
        }
    };
    let Some(framing) = framing else {
        drop(client);
        let began = Instant::now();
        let scan_started = Utc::now();
        let taken = match super::logical::scan::take(ctx, &source.name, target, id, logical_object)
            .await
        {
            Ok(t) => t,
            // the fallback failed too: say both, so the operator can grant
            // either (a user lacking +sync and +select is told of +sync too)
            Err(mut e) if fallback.is_some() => {
                e.message = format!(
                    "{} (the logical snapshot was taken because SYNC was refused: {})",
                    e.message,
                    fallback.as_deref().unwrap_or_default()
                );
                e.hint = match (e.hint.take(), sync_hint) {
                    (Some(l), Some(r)) => Some(format!("{l}; or, for a replication snapshot: {r}")),
                    (l, r) => l.or(r),
                };
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        ctx.reporter.note(format!(
            "{}: logical snapshot of {} keys ({})",
            source.name,
            taken.totals.keys,
            super::logical::rate(taken.totals.keys, taken.totals.payload_bytes, began)
        ));
        return Ok(NodeSnapshot {
            record: taken.record,
            redis_version,
            used_memory,
            keyspace: taken.totals.keyspace.clone(),
            rdb_version: 0,
            transfer: "logical".into(),
            captured: Some(scan_started),
            logical: Some(super::logical::info_of(&taken.totals, fallback)),
        });
    };
    // A diskless payload starts right after the fork; a disk one only
    // once the file is written, the fork being at the request.
    let captured = match framing {
        super::client::Framing::Mark(_) => Utc::now(),
        super::client::Framing::Length(_) => asked,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let complete = Arc::new(AtomicBool::new(false));
    let mut net = tokio::spawn(client.stream_rdb(framing.clone(), tx, complete.clone()));
    let check = Arc::new(Mutex::new(RdbCheck::new()));
    let refused = Arc::new(Mutex::new(None));
    let reader = ChannelReader {
        rx,
        cur: Bytes::new(),
        check: check.clone(),
        refused: refused.clone(),
    };
    let key = Repository::data_key(&source.name, id, rdb_object);
    let size = match framing {
        super::client::Framing::Length(n) => Some(n),
        super::client::Framing::Mark(_) => None,
    };
    let step = ctx.reporter.step(
        format!("{}: snapshot of {}", source.name, target.display()),
        size,
    );
    let check2 = check.clone();
    let name = source.name.clone();
    let stored = ctx
        .encoder
        .store(
            ctx.repo.storage().clone(),
            &key,
            rdb_object,
            reader,
            step.progress.clone(),
            move |_| {
                if !complete.load(Ordering::SeqCst) {
                    return Err(Error::source(format!("the snapshot of {name} ended early")));
                }
                check2
                    .lock()
                    .unwrap()
                    .finish()
                    .map(|_| ())
                    .map_err(|m| refuse(&name, &m))
            },
        )
        .await;
    // The socket task's own failure explains a failed store best. It has
    // ended by then, unless the store failed first (then it is stopped).
    let net_err = if stored.is_err() {
        match tokio::time::timeout(Duration::from_secs(5), &mut net).await {
            Ok(Ok(Err(e))) if e.kind == Kind::Source => Some(e),
            Ok(_) => None,
            Err(_) => {
                net.abort();
                None
            }
        }
    } else {
        let _ = net.await;
        None
    };
    let rec = match stored {
        Ok(rec) => {
            step.done(&format!(
                "stored {}",
                crate::util::human_bytes(rec.stored_size)
            ));
            rec
        }
        Err(e) => {
            step.abandon();
            // The first cause: the connection, else the RDB check.
            if let Some(n) = net_err {
                return Err(n);
            }
            if let Some(m) = refused.lock().unwrap().take() {
                return Err(refuse(&source.name, &m));
            }
            return Err(e);
        }
    };
    let rdb_version = check.lock().unwrap().version().unwrap_or(0);
    Ok(NodeSnapshot {
        record: rec,
        redis_version,
        used_memory,
        keyspace,
        rdb_version,
        transfer: framing.transfer().into(),
        captured: Some(captured),
        logical: None,
    })
}

/// The RDB object and the Redis facts of the snapshot `entry`, from its
/// manifest.
pub(crate) fn snapshot_of(
    entry: &Entry,
    identities: &[Identity],
) -> Result<(ObjectRecord, RedisInfo)> {
    let id = &entry.summary().id;
    let manifest = entry.file.open(&entry.manifest_key, identities)?;
    let rec = manifest
        .object(RDB_OBJECT)
        .or_else(|| manifest.object(LOGICAL_OBJECT))
        .ok_or_else(|| Error::integrity(format!("backup {id} has no {RDB_OBJECT}")))?
        .clone();
    let info = manifest.redis.ok_or_else(|| {
        Error::integrity(format!(
            "backup {id} is not a Redis snapshot (its manifest has no Redis facts)"
        ))
    })?;
    Ok((rec, info))
}

/// Whether starting a sync failed because the server refuses the
/// replication protocol to this client (a renamed or disabled command, an
/// ACL without it), rather than for a passing reason.
fn sync_refused(e: &Error) -> bool {
    let m = e.message.to_ascii_lowercase();
    e.kind == Kind::Source
        && (m.contains("sync") || m.contains("replconf"))
        && (m.contains("unknown command")
            || m.contains("noperm")
            || m.contains("no permissions")
            || m.contains("not allowed")
            || m.contains("disabled"))
}

fn refuse(source: &str, why: &str) -> Error {
    Error::integrity(format!(
        "the snapshot of {source} is not a valid RDB file, nothing was stored: {why}"
    ))
    .hint("run the backup again; if it keeps failing, check the server with `redis-check-rdb` on its dump file")
}

/// Where to restore a snapshot.
#[derive(Debug, Clone)]
pub enum RestoreTo {
    /// Write the RDB file at this path.
    File(PathBuf),
    /// Write `DIR/dump.rdb`; with a port, start `redis-server` on it.
    Dir { dir: PathBuf, start: Option<u16> },
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub to: RestoreTo,
    /// Replace an existing file.
    pub force: bool,
    /// Directory of `redis-server` [default: `PATH`].
    pub bin_dir: Option<PathBuf>,
}

/// A server started on the restored snapshot.
#[derive(Debug, Serialize)]
pub struct StartedServer {
    pub pid: u32,
    pub port: u16,
    pub log: PathBuf,
    /// Keys per database after loading.
    pub keyspace: Vec<RedisDb>,
    /// Keys per database the manifest recorded.
    pub expected: Vec<RedisDb>,
    /// Whether every database has the recorded number of keys.
    pub counts_match: bool,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub source: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub redis_version: String,
    pub rdb_version: u32,
    pub server: Option<StartedServer>,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
    /// A cluster's backup: each shard, its file or the keys it loaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardRestored>,
}

/// One shard of a restored cluster backup.
#[derive(Debug, Clone, Serialize)]
pub struct ShardRestored {
    pub shard: usize,
    pub node_id: String,
    /// The master's address at backup time.
    pub address: String,
    pub slots: Vec<[u16; 2]>,
    /// Keys the manifest recorded for the shard.
    pub keys_recorded: u64,
    /// Keys the shard's object held (read while loading); `None` for a
    /// file written as is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_loaded: Option<u64>,
    /// The shard's RDB file (`--to-dir` without `--start`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// Checks the RDB while writing it.
struct CheckingWriter<W> {
    inner: W,
    check: RdbCheck,
}

impl<W: Write> Write for CheckingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.check
            .feed(&buf[..n])
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Restores a single server's snapshot to a file, and optionally starts
/// a server on it (a cluster's: [`super::dispatch::restore`]).
pub async fn restore(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let summary = entry.summary();
    let (rec, info) = snapshot_of(entry, &identities)?;
    if info.logical.is_some() {
        return super::logical::restore::restore(
            storage, entry, rec, info, identities, opts, reporter,
        )
        .await;
    }
    let path = match &opts.to {
        RestoreTo::File(p) => p.clone(),
        RestoreTo::Dir { dir, .. } => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::failed(format!("cannot create directory {}: {e}", dir.display()))
            })?;
            dir.join(RDB_OBJECT)
        }
    };
    let rdb_version = write_rdb(
        storage,
        &rec,
        identities,
        &path,
        opts.force,
        &summary.id.to_string(),
        reporter,
    )
    .await?;
    let mut warnings = Vec::new();
    let server = match &opts.to {
        RestoreTo::Dir {
            dir,
            start: Some(port),
        } => {
            let s = start_server(
                dir,
                *port,
                opts.bin_dir.as_deref(),
                &info.keyspace,
                reporter,
            )
            .await?;
            if !s.counts_match {
                warnings.push(format!(
                    "key counts differ from the manifest's (taken by INFO just before the snapshot; keys written or expired in between explain small differences): loaded {}, recorded {}",
                    show_keyspace(&s.keyspace),
                    show_keyspace(&s.expected)
                ));
            }
            Some(s)
        }
        _ => None,
    };
    Ok(RestoreReport {
        backup: summary.id.to_string(),
        source: summary.source.clone(),
        path,
        bytes: rec.plain_size,
        redis_version: info.redis_version,
        rdb_version,
        server,
        duration_seconds: clock.elapsed().as_secs_f64(),
        warnings,
        shards: Vec::new(),
    })
}

/// Writes the RDB object `rec` (of backup `backup`) to `path`, checked
/// as it is written, under a temporary name renamed into place once
/// complete; its RDB version.
pub(crate) async fn write_rdb(
    storage: &Arc<dyn Storage>,
    rec: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
    path: &Path,
    force: bool,
    backup: &str,
    reporter: &Reporter,
) -> Result<u32> {
    let opts_force = force;
    if !opts_force && path.exists() {
        return Err(
            Error::conflict(format!("{} already exists", path.display()))
                .hint("choose another path, or pass --force to replace it"),
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".strata-restore-")
        .suffix(".rdb.tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::failed(format!("cannot create a file in {}: {e}", dir.display())))?;
    let step = reporter.step(format!("restore {}", rec.key), Some(rec.plain_size));
    let file = tmp.reopen()?;
    let sink = CheckingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        check: RdbCheck::new(),
    };
    let sink = match fetch(storage, rec, identities, sink, step.progress.clone()).await {
        Ok(s) => s,
        Err(e) => {
            step.abandon();
            return Err(e);
        }
    };
    let rdb_version = sink.check.finish().map_err(|m| {
        Error::integrity(format!(
            "backup {backup}: {} is not a valid RDB file: {m}",
            rec.name
        ))
    })?;
    let file = sink
        .inner
        .into_inner()
        .map_err(|e| Error::failed(format!("writing {}: {}", path.display(), e.error())))?;
    file.sync_all()?;
    drop(file);
    step.done("verified");
    // Rename into place only once complete: a reader never sees half a
    // file. Without --force the rename refuses an existing name.
    let placed = if opts_force {
        tmp.persist(path).map(|_| ()).map_err(|e| e.error)
    } else {
        tmp.persist_noclobber(path).map(|_| ()).map_err(|e| e.error)
    };
    placed.map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Error::conflict(format!("{} already exists", path.display()))
                .hint("choose another path, or pass --force to replace it")
        } else {
            Error::failed(format!("cannot write {}: {e}", path.display()))
        }
    })?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }

    Ok(rdb_version)
}

/// The manifest of a Redis backup.
pub(crate) fn redis_manifest(entry: &Entry, identities: &[Identity]) -> Result<Manifest> {
    entry.file.open(&entry.manifest_key, identities)
}

/// `db0=3 db2=1` for messages.
pub fn show_keyspace(k: &[RedisDb]) -> String {
    if k.is_empty() {
        return "no keys".into();
    }
    k.iter()
        .map(|d| format!("db{}={}", d.db, d.keys))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `redis-server` on the restored file in `dir`, in the background,
/// persistence off (so it never rewrites the restored file), and waits
/// until it has loaded the snapshot.
pub(super) async fn start_server(
    dir: &Path,
    port: u16,
    bin_dir: Option<&Path>,
    expected: &[RedisDb],
    reporter: &Reporter,
) -> Result<StartedServer> {
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    let bin = bin_dir.map_or_else(|| PathBuf::from("redis-server"), |d| d.join("redis-server"));
    let log = dir.join("redis-server.log");
    let mut cmd = Command::new(&bin);
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(&dir)
        .args(["--dbfilename", RDB_OBJECT])
        // appendonly yes would make Redis load an (empty) AOF and ignore
        // dump.rdb; save '' keeps it from rewriting the restored file.
        .args(["--appendonly", "no", "--save", "", "--daemonize", "no"])
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a Ctrl-C meant for strata does not stop it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Err(Error::conflict(format!(
            "port {port} on 127.0.0.1 is in use; the snapshot was restored to {}",
            dir.join(RDB_OBJECT).display()
        ))
        .hint("pick a free port with --port N"));
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::failed(format!("cannot start {}: {e}", bin.display()))
            .hint("install redis-server, or set bin_dir under the source")
    })?;
    let pid = child.id();
    let step = reporter.step(format!("redis-server on port {port}: loading"), None);
    let target =
        Target::new(&url::Url::parse(&format!("redis://127.0.0.1:{port}")).expect("valid URL"));
    let began = Instant::now();
    let failed = |why: String| {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        Error::failed(format!(
            "redis-server on port {port} {why}; log {}: {}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    };
    let keyspace = loop {
        if let Ok(Some(status)) = child.try_wait() {
            step.abandon();
            return Err(failed(format!("exited ({status})")).hint(
                "is the port in use? pick another with --port; the snapshot file itself was restored",
            ));
        }
        if began.elapsed() > LOAD_TIMEOUT {
            step.abandon();
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("did not load within {LOAD_TIMEOUT:?}")));
        }
        // The server answering must be ours (process_id), not another
        // one already listening on the port.
        if let Ok(mut c) = Client::connect(&target).await
            && let Ok(srv) = c.info("server").await
            && info_field(&srv, "process_id") == Some(pid.to_string().as_str())
            && let Ok(p) = c.info("persistence").await
            && info_field(&p, "loading") == Some("0")
            && let Ok(k) = c.info("keyspace").await
        {
            break parse_keyspace(&k);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Reap it if it ever exits while we run; it outlives strata otherwise.
    drop(child);
    step.done("loaded");
    let counts_match = keyspace
        .iter()
        .map(|d| (d.db, d.keys))
        .eq(expected.iter().map(|d| (d.db, d.keys)));
    Ok(StartedServer {
        pid,
        port,
        log,
        keyspace,
        expected: expected.to_vec(),
        counts_match,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_refuses_a_bad_stream() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"NOTREDIS0010")))
            .unwrap();
        drop(tx);
        let refused = Arc::new(Mutex::new(None));
        let mut r = ChannelReader {
            rx,
            cur: Bytes::new(),
            check: Arc::new(Mutex::new(RdbCheck::new())),
            refused: refused.clone(),
        };
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        assert!(
            refused
                .lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .contains("not an RDB")
        );
    }

    #[test]
    fn checking_writer_refuses_a_partial_file() {
        let mut w = CheckingWriter {
            inner: Vec::new(),
            check: RdbCheck::new(),
        };
        assert!(w.write_all(b"REDIS0010").is_ok());
        assert!(w.check.finish().is_err());
    }
}

//! `restore REDIS --into redis://…`: load a snapshot into a running server
//! that strata cannot reach on disk, by being its master for one full sync.
//!
//! strata listens on a port, tells the target `REPLICAOF strata-host port`,
//! answers the replica handshake (`PING`, `AUTH`, `REPLCONF`, then `PSYNC`
//! with `+FULLRESYNC`) and sends the snapshot as the sync payload
//! (`$<length>` from the manifest, then the RDB bytes as they are decrypted
//! and decompressed: nothing is buffered). The target loads it the way a
//! replica does, replacing what it held, and strata then detaches it
//! (`REPLICAOF NO ONE`) and compares key counts with the manifest.
//!
//! The payload is checked on its way (RDB header and CRC64, size and
//! SHA-256 against the manifest), and its last bytes are held back until
//! every check passed: a replica loads a payload only once all of it
//! arrived, so a damaged backup is cut short and the target keeps what it
//! had. Without `--replace` a target holding any key is refused before
//! anything is sent.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::Target;
use super::client::{Client, Reply, info_field, parse_keyspace};
use super::rdb::RdbCheck;
use super::snapshot::{RDB_OBJECT, show_keyspace};
use crate::catalog::Entry;
use crate::catalog::manifest::RedisDb;
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::pipeline::fetch;
use crate::progress::Reporter;
use crate::storage::Storage;

/// How long the target may take to connect to strata after `REPLICAOF`.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// How long the target may take to load the snapshot once it has it all.
const LOAD_WAIT: Duration = Duration::from_secs(3600);
/// Longest silence from the replica during the handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(60);
/// Chunks between the decoder and the socket.
const CHANNEL_CHUNKS: usize = 16;
/// Longest handshake command accepted from the replica.
const MAX_COMMAND: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct IntoOptions {
    pub target: Target,
    /// The target's URL: a cluster's other nodes are reached with its
    /// credentials and TLS settings.
    pub url: url::Url,
    /// Load even when the target holds keys (they are replaced).
    pub replace: bool,
    /// Where strata listens for the target (`--listen`); default loopback
    /// for a loopback target, else every address.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Serialize)]
pub struct IntoReport {
    pub backup: String,
    pub source: String,
    /// The target, password redacted.
    pub target: String,
    pub target_version: String,
    /// The address the target replicated from.
    pub served_from: String,
    pub bytes: u64,
    pub rdb_version: u32,
    /// Keys per database after loading.
    pub keyspace: Vec<RedisDb>,
    /// Keys per database the manifest recorded.
    pub expected: Vec<RedisDb>,
    pub counts_match: bool,
    /// Keys the target held before (replaced, with --replace).
    pub replaced_keys: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
    /// A cluster's backup: the keys each shard held.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<super::snapshot::ShardRestored>,
}

/// What the decoder hands the socket.
enum Feed {
    Data(Bytes),
    /// Everything was sent and checked.
    Done,
    /// Stop: the payload is bad or could not be read.
    Abort(String),
}

/// A blocking sink for the decoder: checks the RDB, refuses more bytes
/// than announced, and always holds back the latest chunk, so the payload's
/// end goes out only after the decoder verified the whole object.
struct HoldBackSink {
    tx: mpsc::Sender<Feed>,
    held: Vec<u8>,
    check: RdbCheck,
    sent: u64,
    announced: u64,
}

impl Write for HoldBackSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.sent + (self.held.len() + buf.len()) as u64 > self.announced {
            return Err(io::Error::other(format!(
                "the snapshot is longer than the {} bytes its manifest records",
                self.announced
            )));
        }
        self.check
            .feed(buf)
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
        if !self.held.is_empty() {
            let chunk = std::mem::take(&mut self.held);
            self.sent += chunk.len() as u64;
            self.tx
                .blocking_send(Feed::Data(Bytes::from(chunk)))
                .map_err(|_| io::Error::other("the connection to the target closed"))?;
        }
        self.held = buf.to_vec();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A standalone target that passed the checks of a restore into it.
pub(crate) struct Checked {
    pub client: Client,
    pub target_version: String,
    /// Keys it held (to be replaced: `--replace`).
    pub replaced_keys: u64,
    pub warnings: Vec<String>,
}

/// Connects to the standalone server `opts.target` and checks it takes a
/// snapshot: not a replica, empty unless `--replace`.
pub(crate) async fn check_target(opts: &IntoOptions) -> Result<Checked> {
    let t = &opts.target;
    let mut client = Client::connect(t).await.map_err(|e| retarget(e, t))?;
    let server = client.info("server").await.map_err(|e| retarget(e, t))?;
    let target_version = info_field(&server, "redis_version")
        .unwrap_or("unknown")
        .to_string();
    let repl = client.info("replication").await?;
    if info_field(&repl, "role") == Some("slave") {
        return Err(Error::conflict(format!(
            "{} is a replica of {}:{}; loading a snapshot would detach it",
            t.display(),
            info_field(&repl, "master_host").unwrap_or("?"),
            info_field(&repl, "master_port").unwrap_or("?")
        ))
        .hint("restore into its master, or detach it first with REPLICAOF NO ONE"));
    }
    let before = parse_keyspace(&client.info("keyspace").await?);
    let replaced_keys: u64 = before.iter().map(|d| d.keys).sum();
    if replaced_keys > 0 && !opts.replace {
        return Err(Error::conflict(format!(
            "{} is not empty ({}); refusing to load the snapshot over it",
            t.display(),
            show_keyspace(&before)
        ))
        .hint("restore into an empty server, or pass --replace to replace everything it holds"));
    }
    let mut warnings = Vec::new();
    if let Some(n) = info_field(&repl, "connected_slaves").and_then(|v| v.parse::<u32>().ok())
        && n > 0
    {
        warnings.push(format!(
            "{} had {n} replica(s): they resynchronise with the restored data",
            t.display()
        ));
    }
    Ok(Checked {
        client,
        target_version,
        replaced_keys,
        warnings,
    })
}

/// Loads the snapshot of a single server (`entry`) into the running
/// standalone server `opts.target` (a cluster's backup, or a cluster
/// target: [`super::dispatch::restore_into`]).
pub async fn restore_into(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    identities: Arc<Vec<Identity>>,
    opts: &IntoOptions,
    reporter: &Reporter,
) -> Result<IntoReport> {
    let clock = Instant::now();
    let summary = entry.summary();
    let (rec, info) = super::snapshot::snapshot_of(entry, &identities)?;
    let t = &opts.target;
    let Checked {
        mut client,
        target_version,
        replaced_keys,
        mut warnings,
    } = check_target(opts).await?;
    if info.logical.is_some() {
        let mut warnings = warnings;
        let l = super::logical::restore::restore_into(
            client,
            t,
            storage,
            entry,
            &rec,
            &info,
            identities,
            &target_version,
            replaced_keys,
            &mut warnings,
            reporter,
        )
        .await?;
        return Ok(IntoReport {
            backup: summary.id.to_string(),
            source: summary.source.clone(),
            target: t.display().to_string(),
            target_version,
            served_from: "RESTORE commands (logical snapshot)".into(),
            bytes: rec.plain_size,
            rdb_version: 0,
            keyspace: l.keyspace,
            expected: info.keyspace,
            counts_match: l.counts_match,
            replaced_keys,
            duration_seconds: clock.elapsed().as_secs_f64(),
            warnings,
            shards: Vec::new(),
        });
    }

    // Where the target finds strata.
    let bind = match opts.listen {
        Some(a) => a,
        None if is_loopback(&t.host) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        None => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    };
    let listener = TcpListener::bind(bind).await.map_err(|e| {
        Error::usage(format!("cannot listen on {bind}: {e}"))
            .hint("choose another address or port with --listen ADDR:PORT")
    })?;
    let bound = listener.local_addr()?;
    let announce_ip = if bound.ip().is_unspecified() {
        // The address the target sees strata at.
        client.local_addr().map(|a| a.ip())?
    } else {
        bound.ip()
    };
    let announce = SocketAddr::new(announce_ip, bound.port());
    reporter.note(format!(
        "restore {} of {} into {} (Redis {target_version}): serving it on {announce}",
        summary.id,
        summary.source,
        t.display()
    ));

    if t.tls.is_some() {
        // Said, not hidden: TLS covers strata's connection, not the sync.
        reporter.note(format!(
            "{}: TLS covers strata's commands; the target fetches the snapshot from {announce} over plain TCP",
            t.display()
        ));
    }
    let (feed_tx, feed_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (sent_tx, mut sent_rx) = oneshot::channel();
    // Only the target may fetch the (decrypted) snapshot: a connection
    // from any other address is refused. With --listen (NAT, proxies)
    // the operator chose the path, and any peer is accepted.
    let only_from = match opts.listen {
        Some(_) => None,
        None => Some(client.peer_addr()?.ip()),
    };
    let mut serving = tokio::spawn(serve(
        listener,
        only_from,
        rec.plain_size,
        feed_rx,
        sent_tx,
        stop_rx,
    ));

    // From here on, any failure detaches the target again.
    // Ctrl-C or SIGTERM must not leave the target replicating from a
    // strata that is gone: they end the work below, then it is detached.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Whether the target may be replicating from strata: not when it
    // refused REPLICAOF (an ACL without +replicaof), then it is left alone.
    let attached = AtomicBool::new(false);
    let result = {
        let work = async {
            replicaof(
                &mut client,
                &attached,
                t,
                &announce_ip.to_string(),
                &announce.port().to_string(),
            )
            .await?;
            let step = reporter.step(
                format!("{} → {}", rec.key, t.display()),
                Some(rec.plain_size),
            );
            let sink = HoldBackSink {
                tx: feed_tx.clone(),
                held: Vec::new(),
                check: RdbCheck::new(),
                sent: 0,
                announced: rec.plain_size,
            };
            let fetched = {
                let f = fetch(storage, &rec, identities, sink, step.progress.clone());
                tokio::pin!(f);
                // The server task failing (the target never connected, or went
                // away) ends the transfer; its reason explains it best.
                tokio::select! {
                    r = &mut f => r,
                    r = &mut serving => {
                        step.abandon();
                        return Err(served(r).err().unwrap_or_else(|| Error::source(format!("{} stopped reading the snapshot", t.display()))));
                    }
                }
            };
            let mut sink = match fetched {
                Ok(s) => s,
                Err(e) => {
                    step.abandon();
                    let _ = feed_tx.try_send(Feed::Abort(e.message.clone()));
                    return Err(stopped_early(e, &summary.id.to_string(), t));
                }
            };
            let rdb_version = match sink.check.finish() {
                Ok(v) => v,
                Err(m) => {
                    step.abandon();
                    let _ = feed_tx.try_send(Feed::Abort(m.clone()));
                    return Err(stopped_early(
                        Error::integrity(format!(
                            "backup {}: {RDB_OBJECT} is not a valid RDB file: {m}",
                            summary.id
                        )),
                        &summary.id.to_string(),
                        t,
                    ));
                }
            };
            // Everything verified: release the held-back end.
            let tail = std::mem::take(&mut sink.held);
            if feed_tx.send(Feed::Data(Bytes::from(tail))).await.is_err()
                || feed_tx.send(Feed::Done).await.is_err()
            {
                step.abandon();
                return Err(served((&mut serving).await).err().unwrap_or_else(|| {
                    Error::source(format!(
                        "{} closed the connection during the transfer",
                        t.display()
                    ))
                }));
            }
            // Sent: wait until the server task wrote it all, then until the
            // target has loaded it (its link to strata is up).
            tokio::select! {
                _ = &mut sent_rx => {}
                r = &mut serving => {
                    step.abandon();
                    return Err(served(r).err().unwrap_or_else(|| Error::source(format!("{} closed the connection during the transfer", t.display()))));
                }
            }
            step.done("sent, verified");
            let began = Instant::now();
            loop {
                let r = client.info("replication").await?;
                if info_field(&r, "master_link_status") == Some("up")
                    && info_field(&r, "master_sync_in_progress") == Some("0")
                    && info_field(&r, "master_port") == Some(announce.port().to_string().as_str())
                {
                    break;
                }
                if serving.is_finished() {
                    return Err(served((&mut serving).await).err().unwrap_or_else(|| {
                        Error::source(format!(
                            "{} dropped the connection while loading",
                            t.display()
                        ))
                    }));
                }
                if began.elapsed() > LOAD_WAIT {
                    return Err(Error::source(format!(
                        "{} did not finish loading the snapshot within {LOAD_WAIT:?}",
                        t.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            reporter.note(format!(
                "{}: loaded in {:.1}s",
                t.display(),
                began.elapsed().as_secs_f64()
            ));
            Ok(rdb_version)
        };
        tokio::pin!(work);
        let interrupted = || {
            Error::new(
                Kind::Interrupted,
                format!("interrupted while loading into {}", t.display()),
            )
        };
        tokio::select! {
            r = &mut work => r,
            _ = sigint.recv() => Err(interrupted()),
            _ = sigterm.recv() => Err(interrupted()),
        }
    };

    // Detach in every case (after a failure the target must not keep
    // trying to replicate from a strata that is gone), on a connection of
    // its own: the first may be in the middle of a reply.
    let attached = attached.load(Ordering::SeqCst);
    let detached = match attached {
        false => Ok(()),
        true => match Client::connect(t).await {
            Ok(mut c) => detach(&mut c, t).await,
            Err(e) => Err(e),
        },
    };
    let _ = stop_tx.send(());
    if !serving.is_finished() {
        if attached {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut serving).await;
        }
        serving.abort();
    }
    let rdb_version = match (result, detached) {
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(d)) => {
            return Err(e.context(format!(
                "and detaching it failed ({}): run REPLICAOF NO ONE on it",
                d.message
            )));
        }
        (Ok(_), Err(d)) => return Err(d),
        (Ok(v), Ok(())) => v,
    };

    let keyspace = parse_keyspace(&client.info("keyspace").await?);
    let counts_match = keyspace
        .iter()
        .map(|d| (d.db, d.keys))
        .eq(info.keyspace.iter().map(|d| (d.db, d.keys)));
    if !counts_match {
        warnings.push(format!(
            "key counts differ from the manifest's (taken by INFO just before the snapshot; keys written or expired in between explain small differences): loaded {}, recorded {}",
            show_keyspace(&keyspace),
            show_keyspace(&info.keyspace)
        ));
    }
    Ok(IntoReport {
        backup: summary.id.to_string(),
        source: summary.source.clone(),
        target: t.display().to_string(),
        target_version,
        served_from: announce.to_string(),
        bytes: rec.plain_size,
        rdb_version,
        keyspace,
        expected: info.keyspace,
        counts_match,
        replaced_keys,
        duration_seconds: clock.elapsed().as_secs_f64(),
        warnings,
        shards: Vec::new(),
    })
}

/// Errors connecting to the target are about the target, not a source;
/// an error that already says what to do (TLS, ACL) keeps its hint.
pub(crate) fn retarget(e: Error, t: &Target) -> Error {
    if e.kind == Kind::Source && (e.hint.is_none() || e.retryable) {
        let mut e = e;
        e.hint = Some(format!(
            "check that {} is running and reachable, and the user and password in the --into URL",
            t.display()
        ));
        e
    } else {
        e
    }
}

fn stopped_early(e: Error, backup: &str, t: &Target) -> Error {
    e.context(format!(
        "restore of {backup} into {} stopped before the snapshot's last bytes, so the target did not load it and keeps what it held",
        t.display()
    ))
}

/// The server task's outcome as a Result.
fn served(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    match r {
        Ok(r) => r,
        Err(e) => Err(Error::failed(format!("serving the snapshot: {e}"))),
    }
}

/// `REPLICAOF host port`; `attached` says afterwards whether the target
/// may be replicating (it is false only after a refusal).
async fn replicaof(
    client: &mut Client,
    attached: &AtomicBool,
    t: &Target,
    host: &str,
    port: &str,
) -> Result<()> {
    attached.store(true, Ordering::SeqCst);
    let mut reply = client
        .command(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()])
        .await?;
    if matches!(&reply, Reply::Error(e) if e.starts_with("ERR unknown command")) {
        // Redis before 5 knows it as SLAVEOF.
        reply = client
            .command(&[b"SLAVEOF", host.as_bytes(), port.as_bytes()])
            .await?;
    }
    if matches!(reply, Reply::Error(_)) {
        attached.store(false, Ordering::SeqCst);
    }
    match reply {
        Reply::Status(_) => Ok(()),
        Reply::Error(e) if e.starts_with("NOPERM") || e.starts_with("NOAUTH") => {
            Err(client.refused("REPLICAOF", &e, super::client::INTO_ACL))
        }
        Reply::Error(e) => Err(Error::source(format!(
            "{} refused REPLICAOF {host} {port}: {e}",
            t.display()
        ))
        .hint("the --into user needs INFO and REPLICAOF (ACL: +info +replicaof); a renamed or disabled REPLICAOF cannot be used: restore with --to-dir or --to-file instead")),
        other => Err(Error::source(format!(
            "{} answered REPLICAOF with {other:?}",
            t.display()
        ))),
    }
}

async fn detach(client: &mut Client, t: &Target) -> Result<()> {
    let r = client.command(&[b"REPLICAOF", b"NO", b"ONE"]).await;
    let r = match r {
        Ok(Reply::Error(e)) if e.starts_with("ERR unknown command") => {
            client.command(&[b"SLAVEOF", b"NO", b"ONE"]).await
        }
        other => other,
    };
    match r {
        Ok(Reply::Status(_)) => Ok(()),
        Ok(other) => Err(Error::source(format!(
            "{}: REPLICAOF NO ONE answered {other:?}; run it by hand",
            t.display()
        ))),
        Err(e) => Err(e.context(format!(
            "detaching {} (REPLICAOF NO ONE): run it by hand",
            t.display()
        ))),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A command's arguments and how many bytes it took.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// One command from the replica: a RESP array of bulk strings, or an
/// inline command. `Ok(None)` when `buf` does not hold a whole one yet;
/// otherwise the arguments and how many bytes they took.
pub fn parse_command(buf: &[u8]) -> std::result::Result<Option<Parsed>, String> {
    let line_end = |from: usize| -> Option<usize> {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    // Bare newlines between commands are keep-alives.
    let start = buf
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    if start == buf.len() {
        return Ok(None);
    }
    if buf[start] != b'*' {
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[start..start + nl]);
        let args = line
            .split_whitespace()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        return Ok(Some((args, start + nl + 1)));
    }
    let Some(e) = line_end(start) else {
        return Ok(None);
    };
    let n: usize = std::str::from_utf8(&buf[start + 1..e])
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n <= 64)
        .ok_or("malformed command header")?;
    let mut pos = e + 2;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err("malformed command argument".into());
        }
        let Some(e) = line_end(pos) else {
            return Ok(None);
        };
        let len: usize = std::str::from_utf8(&buf[pos + 1..e])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l <= MAX_COMMAND)
            .ok_or("malformed argument length")?;
        let data = e + 2;
        if buf.len() < data + len + 2 {
            return Ok(None);
        }
        args.push(buf[data..data + len].to_vec());
        pos = data + len + 2;
    }
    Ok(Some((args, pos)))
}

/// Whether two addresses are one host (an IPv4 address and its IPv6-mapped
/// form are).
fn same_ip(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Serves one replica: accepts its connection, answers the handshake,
/// sends the payload as it is fed, then keeps the link (pinging it) until
/// told to stop. `sent` fires once the whole payload is written.
async fn serve(
    listener: TcpListener,
    only_from: Option<std::net::IpAddr>,
    len: u64,
    mut feed: mpsc::Receiver<Feed>,
    sent: oneshot::Sender<()>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let accept = async {
        loop {
            let (conn, peer) = listener.accept().await?;
            match only_from {
                Some(ip) if !same_ip(ip, peer.ip()) => {
                    tracing::warn!(
                        "{addr}: refused a connection from {peer}: not the target ({ip})"
                    );
                }
                _ => return Ok::<_, std::io::Error>((conn, peer)),
            }
        }
    };
    let (mut conn, peer) = match tokio::time::timeout(CONNECT_WAIT, accept).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(Error::failed(format!("accepting on {addr}: {e}"))),
        Err(_) => {
            return Err(Error::source(format!(
                "the target did not connect to strata at {addr} within {CONNECT_WAIT:?} after REPLICAOF"
            ))
            .hint("the target must be able to reach that address: give one it can reach with --listen ADDR:PORT (and open the port); without --listen, connections from any address but the target's are refused"));
        }
    };
    drop(listener);
    let _ = conn.set_nodelay(true);
    let fail = |what: String| Error::source(format!("replica {peer}: {what}"));
    // Handshake, up to PSYNC/SYNC.
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let sync = loop {
        let (args, used) = loop {
            // 0x16 opens a TLS record: the target replicates over TLS.
            if buf.first() == Some(&0x16) {
                return Err(fail(
                    "it connects to its master over TLS (tls-replication yes), and strata serves the snapshot over plain TCP".into(),
                )
                .hint("for the restore, turn it off on the target (CONFIG SET tls-replication no; back to yes afterwards), or restore with --to-file and load the file"));
            }
            if let Some(c) = parse_command(&buf).map_err(fail)? {
                break c;
            }
            if buf.len() > MAX_COMMAND * 2 {
                return Err(fail("sent an overlong command".into()));
            }
            let n = match tokio::time::timeout(HANDSHAKE_WAIT, conn.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    return Err(fail("closed the connection during the handshake".into()));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(fail(format!("handshake: {e}"))),
                Err(_) => return Err(fail("went quiet during the handshake".into())),
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..used);
        let name = args
            .first()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .unwrap_or_default();
        let answer: &[u8] = match name.as_str() {
            "PING" => b"+PONG\r\n",
            "AUTH" | "REPLCONF" => b"+OK\r\n",
            "PSYNC" | "SYNC" => break name,
            "" => continue,
            _ => b"-ERR strata serves a snapshot: only the replica handshake is understood\r\n",
        };
        conn.write_all(answer)
            .await
            .map_err(|e| fail(format!("handshake: {e}")))?;
    };
    let io = |e: io::Error| fail(format!("sending the snapshot: {e}"));
    let mut header = String::new();
    if sync == "PSYNC" {
        let replid = hex::encode(rand::random::<[u8; 20]>());
        header.push_str(&format!("+FULLRESYNC {replid} 0\r\n"));
    }
    header.push_str(&format!("${len}\r\n"));
    conn.write_all(header.as_bytes()).await.map_err(io)?;
    loop {
        match feed.recv().await {
            Some(Feed::Data(b)) => conn.write_all(&b).await.map_err(io)?,
            Some(Feed::Done) => break,
            Some(Feed::Abort(why)) => {
                // Cut short: the replica discards a partial payload.
                let _ = conn.shutdown().await;
                return Err(fail(format!("transfer stopped: {why}")));
            }
            None => {
                let _ = conn.shutdown().await;
                return Err(fail("transfer stopped".into()));
            }
        }
    }
    conn.flush().await.map_err(io)?;
    let _ = sent.send(());
    // Keep the link until strata detached the target: answer nothing,
    // discard its acknowledgements, ping it so it never times out.
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    ping.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = ping.tick() => {
                conn.write_all(b"*1\r\n$4\r\nPING\r\n").await.map_err(io)?;
            }
            r = conn.read(&mut chunk) => match r {
                Ok(0) => return Err(fail(
                    "closed the connection after receiving the snapshot: it could not load it (see its log: an RDB format newer than the target supports, not enough memory or disk?)".into(),
                )),
                Ok(_) => {}
                Err(e) => return Err(fail(format!("{e}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_commands() {
        let cmd = b"*3\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n";
        let (args, used) = parse_command(cmd).unwrap().unwrap();
        assert_eq!(
            args,
            vec![b"REPLCONF".to_vec(), b"capa".to_vec(), b"eof".to_vec()]
        );
        assert_eq!(used, cmd.len());
        // incomplete at every cut
        for cut in 0..cmd.len() {
            assert_eq!(parse_command(&cmd[..cut]).unwrap(), None, "cut {cut}");
        }
        // pipelined: one at a time
        let two = b"*1\r\n$4\r\nPING\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n";
        let (a, u) = parse_command(two).unwrap().unwrap();
        assert_eq!((a, u), (vec![b"PING".to_vec()], 14));
        let (a, _) = parse_command(&two[14..]).unwrap().unwrap();
        assert_eq!(a[0], b"PSYNC");
        // inline, after keep-alive newlines
        let (a, u) = parse_command(b"\n\nPING\r\nrest").unwrap().unwrap();
        assert_eq!((a, u), (vec![b"PING".to_vec()], 8));
        assert!(parse_command(b"*x\r\n").is_err());
        assert!(parse_command(b"*1\r\n+PING\r\n").is_err());
    }

    #[test]
    fn hold_back_sink_keeps_the_end_and_refuses_extra_bytes() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut s = HoldBackSink {
            tx,
            held: Vec::new(),
            check: RdbCheck::new(),
            sent: 0,
            announced: 12,
        };
        s.write_all(b"REDIS0011").unwrap();
        assert!(rx.try_recv().is_err(), "the first chunk is held");
        s.write_all(b"ab").unwrap();
        match rx.try_recv() {
            Ok(Feed::Data(b)) => assert_eq!(&b[..], b"REDIS0011"),
            _ => panic!("the held chunk goes out when the next arrives"),
        }
        assert_eq!(s.held, b"ab");
        assert!(s.write_all(b"xyz").is_err(), "more than announced");
        assert!(!is_loopback("10.0.0.1") && is_loopback("127.0.0.2") && is_loopback("::1"));
    }
}

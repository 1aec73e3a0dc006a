//! Just enough of the Redis protocol (RESP2) for snapshots: commands and
//! their replies, `INFO` parsing, and the replica handshake that makes the
//! server send its RDB (`SYNC`, as `redis-cli --rdb` does); over TCP or,
//! for `rediss://`, TLS ([`super::tls`]). Refusals (`WRONGPASS`, `NOPERM`,
//! `NOAUTH`) come back as errors naming the command and the ACL rule.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

use super::Target;
use crate::catalog::manifest::RedisDb;
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence tolerated. The server sends a `\n` every second while
/// it prepares a snapshot, so only a dead connection is this quiet.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Diskless transfers end with a random 40-byte mark.
const EOF_MARK_LEN: usize = 40;
const CHUNK: usize = 64 * 1024;
/// Longest reply line accepted (status lines, bulk headers).
const MAX_LINE: usize = 64 * 1024;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// How the server frames the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `$<len>`: an RDB file the server wrote to its disk first.
    Length(u64),
    /// `$EOF:<mark>`: streamed while produced, ended by the mark.
    Mark(Vec<u8>),
}

impl Framing {
    pub fn transfer(&self) -> &'static str {
        match self {
            Framing::Length(_) => "disk",
            Framing::Mark(_) => "diskless",
        }
    }
}

/// The ACL rules each use of a connection needs, for hints.
pub const SNAPSHOT_ACL: &str = "a snapshot needs +info +replconf +sync";
pub const INTO_ACL: &str = "restore --into needs +info +replicaof";
const INFO_ACL: &str = "a snapshot needs +info +replconf +sync, restore --into +info +replicaof";

/// The connection: TCP, or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub struct Client {
    conn: BufReader<Stream>,
    target: Target,
}

fn source_err(target: &Target, what: impl std::fmt::Display) -> Error {
    Error::source(format!("redis {}: {what}", target.display()))
}

/// An I/O failure while `doing` something: a TLS failure explained (a
/// server refusing the client certificate says so only on the first
/// read), else the error as it is.
fn io_err(target: &Target, doing: &str, e: std::io::Error) -> Error {
    if let Some(s) = &target.tls
        && let Some(err) =
            super::tls::explain(&e, &format!("redis {}", target.display()), s, &target.host)
    {
        return err;
    }
    let err = source_err(target, format!("{doing}: {e}"));
    // A TLS port resets a plain connection at its first command.
    if target.tls.is_none()
        && e.kind() == std::io::ErrorKind::ConnectionReset
        && matches!(doing, "reading a reply" | "sending a command")
    {
        return err.hint("if that port is the server's tls-port, connect with rediss:// (TLS)");
    }
    err
}

impl Client {
    /// Connects (over TLS for `rediss://`) and authenticates (when the URL
    /// has a password; as its ACL user when it names one).
    pub async fn connect(target: &Target) -> Result<Client> {
        // The TLS files are read before connecting: a bad path is a
        // configuration error, whatever the network does.
        let tls = match &target.tls {
            Some(s) => Some((s.connector()?, s.server_name(&target.host)?)),
            None => None,
        };
        let addr = (target.host.as_str(), target.port);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(unreachable(target, e.to_string())),
            Err(_) => {
                return Err(unreachable(
                    target,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(stream),
            Some((connector, name)) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream)).await {
                    Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                    Ok(Err(e)) => return Err(io_err(target, "TLS handshake", e)),
                    Err(_) => {
                        return Err(source_err(
                            target,
                            format!("no TLS handshake within {CONNECT_TIMEOUT:?}"),
                        )
                        .hint("is the port the server's tls-port? a plain port never answers a TLS hello")
                        .retryable());
                    }
                }
            }
        };
        let mut c = Client {
            conn: BufReader::with_capacity(CHUNK, stream),
            target: target.clone(),
        };
        if let Some(pw) = target.password.clone() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &target.user {
                args.push(u.as_bytes());
            }
            args.push(pw.as_bytes());
            match c.command(&args).await? {
                Reply::Status(_) => {}
                Reply::Error(e) => return Err(auth_refused(target, &e)),
                other => return Err(source_err(target, format!("AUTH answered {other:?}"))),
            }
        }
        Ok(c)
    }

    /// The error for an error reply `e` to `command`: `NOPERM` names the
    /// user and the ACL rule to grant (`needs` says what the whole task
    /// needs, e.g. [`SNAPSHOT_ACL`]), `NOAUTH` asks for a password.
    pub fn refused(&self, command: &str, e: &str, needs: &str) -> Error {
        let t = &self.target;
        let user = t.user.as_deref().unwrap_or("default");
        if e.starts_with("NOPERM") {
            source_err(
                t,
                format!("user {user} may not run {command} (ACL refused it: {e})"),
            )
            .hint(format!(
                "grant it on the server: ACL SETUSER {user} {} ({needs})",
                acl_rule(command)
            ))
        } else if e.starts_with("NOAUTH") {
            source_err(
                t,
                format!("{command}: the server requires a password ({e})"),
            )
            .hint("give it in the URL: redis://[user]:password@host:port (rediss:// for TLS)")
        } else {
            source_err(t, format!("{command} refused: {e}"))
        }
    }

    /// This end's address on the connection: the address the server sees
    /// strata at.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.conn
            .get_ref()
            .tcp()
            .local_addr()
            .map_err(|e| Error::failed(format!("local address: {e}")))
    }

    /// The server's address on the connection.
    pub fn peer_addr(&self) -> Result<std::net::SocketAddr> {
        self.conn
            .get_ref()
            .tcp()
            .peer_addr()
            .map_err(|e| Error::failed(format!("peer address: {e}")))
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        let target = self.target.clone();
        idle(self_write(&mut self.conn, req))
            .await
            .map_err(|e| io_err(&target, "sending a command", e))?;
        self.reply().await
    }

    async fn line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let target = self.target.clone();
        let n = match tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut self.conn)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf),
        )
        .await
        {
            Ok(r) => r.map_err(|e| io_err(&target, "reading a reply", e))?,
            Err(_) => {
                return Err(source_err(
                    &target,
                    format!("no reply within {IDLE_TIMEOUT:?}"),
                ));
            }
        };
        if n == 0 {
            let e = source_err(&target, "the server closed the connection");
            return Err(match target.tls {
                None => {
                    e.hint("if that port is the server's tls-port, connect with rediss:// (TLS)")
                }
                Some(_) => e,
            });
        }
        if !buf.ends_with(b"\r\n") {
            return Err(source_err(&target, "malformed reply (not a RESP line)"));
        }
        buf.truncate(buf.len() - 2);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads one reply.
    pub async fn reply(&mut self) -> Result<Reply> {
        let line = self.line().await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = |s: &str| -> Result<i64> {
            s.parse()
                .map_err(|_| source_err(&self.target, format!("malformed reply {line:?}")))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(num(rest)?),
            "$" => {
                let n = num(rest)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut v = vec![0u8; n as usize + 2];
                    let target = self.target.clone();
                    let conn = &mut self.conn;
                    match tokio::time::timeout(IDLE_TIMEOUT, conn.read_exact(&mut v)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(io_err(&target, "reading a reply", e)),
                        Err(_) => return Err(source_err(&target, "reply timed out")),
                    }
                    v.truncate(n as usize);
                    Reply::Bulk(Some(v))
                }
            }
            "*" => {
                let n = num(rest)?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n.min(1024) as usize);
                    for _ in 0..n {
                        items.push(Box::pin(self.reply()).await?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => {
                return Err(source_err(
                    &self.target,
                    format!("malformed reply {line:?}"),
                ));
            }
        })
    }

    /// `INFO section` as text.
    pub async fn info(&mut self, section: &str) -> Result<String> {
        match self.command(&[b"INFO", section.as_bytes()]).await? {
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Error(e) => Err(self.refused(&format!("INFO {section}"), &e, INFO_ACL)),
            other => Err(source_err(
                &self.target,
                format!("INFO {section} answered {other:?}"),
            )),
        }
    }

    /// Asks for a full snapshot, as a replica would; returns its framing.
    /// The connection then carries the RDB: read it with [`stream_rdb`](Self::stream_rdb).
    pub async fn start_sync(&mut self) -> Result<Framing> {
        // `capa eof` lets the server stream without writing a file first;
        // `rdb-only` (Redis 7+) says no replication stream follows. Older
        // servers refuse what they do not know, which is fine.
        for args in [
            &[&b"REPLCONF"[..], b"capa", b"eof", b"capa", b"psync2"][..],
            &[b"REPLCONF", b"rdb-only", b"1"],
        ] {
            if let Reply::Error(e) = self.command(args).await?
                && (e.starts_with("NOAUTH") || e.starts_with("NOPERM"))
            {
                return Err(self.refused("REPLCONF", &e, SNAPSHOT_ACL));
            }
        }
        let target = self.target.clone();
        idle(self_write(&mut self.conn, b"SYNC\r\n".to_vec()))
            .await
            .map_err(|e| io_err(&target, "sending SYNC", e))?;
        // While the server prepares the snapshot it sends bare newlines.
        loop {
            let buf = idle(self.conn.fill_buf())
                .await
                .map_err(|e| io_err(&target, "waiting for the snapshot", e))?;
            match buf.first() {
                None => {
                    return Err(source_err(
                        &target,
                        "the server closed the connection instead of sending a snapshot",
                    )
                    .hint("check the server log; a replica-serving limit (e.g. client-output-buffer-limit replica) may have cut it"));
                }
                Some(b'\n') => self.conn.consume(1),
                Some(_) => break,
            }
        }
        let line = self.line().await?;
        if let Some(e) = line.strip_prefix('-') {
            if e.starts_with("NOPERM") || e.starts_with("NOAUTH") {
                return Err(self.refused("SYNC", e, SNAPSHOT_ACL));
            }
            return Err(source_err(&target, format!("SYNC refused: {e}"))
                .hint("a server in the middle of its own full sync refuses; managed services (ElastiCache, MemoryDB, Azure Cache) disable SYNC for clients"));
        }
        let Some(rest) = line.strip_prefix('$') else {
            return Err(source_err(
                &target,
                format!("unexpected answer to SYNC: {line:?}"),
            ));
        };
        if let Some(mark) = rest.strip_prefix("EOF:") {
            if mark.len() != EOF_MARK_LEN {
                return Err(source_err(
                    &target,
                    format!("malformed snapshot header {line:?}"),
                ));
            }
            return Ok(Framing::Mark(mark.as_bytes().to_vec()));
        }
        rest.parse()
            .map(Framing::Length)
            .map_err(|_| source_err(&target, format!("malformed snapshot header {line:?}")))
    }

    /// Streams the snapshot that follows [`Client::start_sync`] into `tx`,
    /// one chunk at a time (the channel is bounded: a slow upload slows
    /// the read, nothing piles up). Sets `complete` only after the whole
    /// payload arrived; on failure also sends the error to the reader.
    pub async fn stream_rdb(
        mut self,
        framing: Framing,
        tx: mpsc::Sender<std::result::Result<Bytes, String>>,
        complete: Arc<AtomicBool>,
    ) -> Result<u64> {
        let r = self.pump(&framing, &tx).await;
        match &r {
            Ok(_) => complete.store(true, Ordering::SeqCst),
            Err(e) => {
                let _ = tx.send(Err(e.message.clone())).await;
            }
        }
        r
    }

    async fn pump(
        &mut self,
        framing: &Framing,
        tx: &mpsc::Sender<std::result::Result<Bytes, String>>,
    ) -> Result<u64> {
        let target = self.target.clone();
        let closed = || {
            source_err(
                &target,
                "the connection closed in the middle of the snapshot",
            )
        };
        let send = |chunk: Vec<u8>| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Bytes::from(chunk)))
                    .await
                    .map_err(|_| Error::failed("the upload stopped reading the snapshot"))
            }
        };
        let mut total = 0u64;
        match framing {
            Framing::Length(len) => {
                while total < *len {
                    let want = (*len - total).min(CHUNK as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let n = idle(self.conn.read(&mut buf))
                        .await
                        .map_err(|e| io_err(&target, "reading the snapshot", e))?;
                    if n == 0 {
                        return Err(closed());
                    }
                    buf.truncate(n);
                    total += n as u64;
                    send(buf).await?;
                }
            }
            Framing::Mark(mark) => {
                // Hold back the last 40 bytes: they may be the mark.
                let mut pending: Vec<u8> = Vec::with_capacity(CHUNK + EOF_MARK_LEN);
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = idle(self.conn.read(&mut buf))
                        .await
                        .map_err(|e| io_err(&target, "reading the snapshot", e))?;
                    if n == 0 {
                        return Err(closed());
                    }
                    pending.extend_from_slice(&buf[..n]);
                    if pending.ends_with(mark) {
                        pending.truncate(pending.len() - EOF_MARK_LEN);
                        total += pending.len() as u64;
                        if !pending.is_empty() {
                            send(pending).await?;
                        }
                        break;
                    }
                    if pending.len() > EOF_MARK_LEN {
                        let keep = pending.split_off(pending.len() - EOF_MARK_LEN);
                        total += pending.len() as u64;
                        send(std::mem::replace(&mut pending, keep)).await?;
                    }
                }
            }
        }
        Ok(total)
    }
}

/// `fut`, failing after [`IDLE_TIMEOUT`].
async fn idle<T>(fut: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    match tokio::time::timeout(IDLE_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no data for {IDLE_TIMEOUT:?}"),
        )),
    }
}

async fn self_write(conn: &mut BufReader<Stream>, data: Vec<u8>) -> std::io::Result<()> {
    let s = conn.get_mut();
    s.write_all(&data).await?;
    // TLS holds records until flushed.
    s.flush().await
}

/// The ACL rule that allows `command` (`INFO server` → `+info`).
fn acl_rule(command: &str) -> String {
    let name = command.split_whitespace().next().unwrap_or(command);
    format!("+{}", name.to_ascii_lowercase())
}

/// The error for a refused `AUTH`.
fn auth_refused(target: &Target, e: &str) -> Error {
    let user = target.user.as_deref().unwrap_or("default");
    if e.starts_with("WRONGPASS") {
        source_err(
            target,
            format!(
                "authentication failed: wrong password for user {user}, or the user is disabled (WRONGPASS)"
            ),
        )
        .hint("check the user and password in the URL (percent-encode special characters: @ as %40, : as %3A)")
    } else if e.contains("without any password configured") {
        source_err(target, format!("the URL gives a password, but the server has none set ({e})"))
            .hint("remove the password from the URL, or set one on the server (requirepass or ACL SETUSER)")
    } else if target.user.is_some() && e.contains("wrong number of arguments") {
        source_err(
            target,
            format!("the server has no ACL users (Redis before 6): {e}"),
        )
        .hint("give only the password in the URL: redis://:password@host:port")
    } else {
        source_err(target, format!("authentication failed: {e}"))
            .hint("check the user and password in the URL")
    }
}

fn unreachable(target: &Target, why: String) -> Error {
    Error::source(format!(
        "cannot connect to redis at {}: {why}",
        target.display()
    ))
    .hint("check that the server is running and the source URL's host and port")
    .retryable()
}

/// `key:value` lines of an `INFO` reply.
pub fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.trim_end()
            .split_once(':')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// Key counts per database from `INFO keyspace`
/// (`db0:keys=3,expires=1,avg_ttl=0`).
pub fn parse_keyspace(info: &str) -> Vec<RedisDb> {
    let mut dbs: Vec<RedisDb> = info
        .lines()
        .filter_map(|l| {
            let (name, fields) = l.trim_end().split_once(':')?;
            let db = name.strip_prefix("db")?.parse().ok()?;
            let field = |k: &str| {
                fields.split(',').find_map(|f| {
                    f.split_once('=')
                        .filter(|(n, _)| *n == k)
                        .and_then(|(_, v)| v.parse().ok())
                })
            };
            Some(RedisDb {
                db,
                keys: field("keys")?,
                expires: field("expires").unwrap_or(0),
            })
        })
        .collect();
    dbs.sort_by_key(|d| d.db);
    dbs
}

impl Client {
    /// Sends RESP-encoded commands without reading their replies
    /// (pipelining): read them afterwards with [`reply`](Self::reply),
    /// one per command, in order.
    pub async fn send_encoded(&mut self, req: Vec<u8>) -> Result<()> {
        let target = self.target.clone();
        idle(self_write(&mut self.conn, req))
            .await
            .map_err(|e| source_err(&target, format!("sending commands: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parsing() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb12:keys=40,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            parse_keyspace(info),
            vec![
                RedisDb {
                    db: 0,
                    keys: 3,
                    expires: 1
                },
                RedisDb {
                    db: 12,
                    keys: 40,
                    expires: 0
                },
            ]
        );
        assert_eq!(acl_rule("INFO server"), "+info");
        assert_eq!(acl_rule("SYNC"), "+sync");
        let server = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(info_field(server, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(server, "nope"), None);
    }
}

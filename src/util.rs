//! Small shared helpers: byte formatting, URL redaction, child processes.

use std::io::Read;
use std::process::{Child, ChildStderr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use url::Url;

/// A backup id for people, with the chain an incremental base backup
/// restores through: `I2 (chain F → I1 → I2)`.
pub fn with_chain(backup: &str, chain: &[String]) -> String {
    if chain.is_empty() {
        backup.to_string()
    } else {
        format!("{backup} (chain {})", chain.join(" → "))
    }
}

/// `1.5 GiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The URL with any password replaced (also libpq's `password` and
/// `sslpassword` parameters), safe to print and log.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    if let Some(q) = url.query() {
        let redacted: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k == "password" || k == "sslpassword" => format!("{k}=REDACTED"),
                _ => p.to_string(),
            })
            .collect();
        u.set_query(Some(&redacted.join("&")));
    }
    u.to_string()
}

/// The CA certificates in a PEM file (a bundle of one or more
/// `CERTIFICATE` blocks; other blocks are skipped), each checked to be
/// usable as a trust anchor — for `[notify] ca_file` and the S3
/// `ca_bundle`. The error names the file and what is wrong with it.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ca_certs(&bytes, path)
}

/// [`read_ca_file`] of bytes already read from `path`.
pub fn ca_certs(
    bytes: &[u8],
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        roots.add(c.clone()).map_err(|e| {
            format!(
                "{}: certificate {} is not usable as a CA: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(certs)
}

/// Keeps the last `limit` bytes of a child's stderr, read on its own
/// thread so a chatty child never blocks on a full pipe while we read its
/// stdout (the deadlock ripgrep's process module warns about).
pub struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    handle: Option<JoinHandle<()>>,
}

impl StderrTail {
    pub fn spawn(mut stderr: ChildStderr, limit: usize) -> StderrTail {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let handle = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut g = b.lock().unwrap();
                g.extend_from_slice(&chunk[..n]);
                if g.len() > limit {
                    let cut = g.len() - limit;
                    g.drain(..cut);
                }
            }
        });
        StderrTail {
            buf,
            handle: Some(handle),
        }
    }

    /// A view of what the child has said so far, for a watcher while the
    /// tail itself is owned elsewhere.
    pub fn view(&self) -> TailView {
        TailView(self.buf.clone())
    }

    /// Waits for the child's stderr to close and returns what it said.
    pub fn finish(mut self) -> String {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        String::from_utf8_lossy(&self.buf.lock().unwrap())
            .trim()
            .to_string()
    }
}

/// What a child has said on stderr so far (the tail kept by
/// [`StderrTail`]).
#[derive(Clone)]
pub struct TailView(Arc<Mutex<Vec<u8>>>);

impl TailView {
    /// Whether the tail holds `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        let g = self.0.lock().unwrap();
        String::from_utf8_lossy(&g).contains(needle)
    }
}

/// Kills a child and reaps it (used when a pipeline fails mid-stream).
pub fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for SIGINT or SIGTERM and names it (never returns when the
/// handlers cannot be installed). Once waited for, the signal no longer
/// ends the process by itself: the caller decides what happens.
pub async fn interruption() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Whether nothing listens on 127.0.0.1:`port` (a server about to start
/// there could bind it).
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port on 127.0.0.1 that nothing listens on now (the system picks).
pub fn free_port() -> crate::error::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| crate::error::Error::failed(format!("no free port on 127.0.0.1: {e}")))?;
    Ok(l.local_addr()?.port())
}

/// The machine's host name (for notifications and lock owners).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // when the name fits, and we stop at the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let h = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !h.is_empty() {
            return h;
        }
    }
    "unknown-host".into()
}

/// A blocking reader over the chunks an async task sends (a scan, HTTP
/// pages), so the pipeline can read them as a `std::io::Read`; an `Err`
/// chunk ends the stream with that message.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, String>>,
    cur: bytes::Bytes,
}

impl ChannelReader {
    pub fn new(
        rx: tokio::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, String>>,
    ) -> ChannelReader {
        ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(m)) => return Err(std::io::Error::other(m)),
                Some(Ok(b)) => self.cur = b,
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Size of one [`chunk_pipe`] chunk.
const HANDOFF_CHUNK: usize = 1 << 20;

/// An in-process pipe between two threads that hands whole 1 MiB buffers
/// over instead of copying every byte through the kernel twice, as an OS
/// pipe does (a base restore moves the whole cluster through it). At most
/// `depth` chunks wait in it, and used chunks go back to the writer, so
/// memory stays bounded at about `2 × depth` MiB.
///
/// The writer sends what it holds on `flush`, never on drop: a writer
/// dropped on an error leaves the reader at the end of what was flushed,
/// and the caller decides by the writer's result, as with an OS pipe.
pub fn chunk_pipe(depth: usize) -> (ChunkWriter, ChunkReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(depth);
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel(depth + 1);
    (
        ChunkWriter {
            tx,
            free: back_rx,
            buf: Vec::with_capacity(HANDOFF_CHUNK),
        },
        ChunkReader {
            rx,
            back: back_tx,
            cur: Vec::new(),
            pos: 0,
        },
    )
}

/// The writing end of a [`chunk_pipe`].
pub struct ChunkWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let mut next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HANDOFF_CHUNK));
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        self.tx.send(full).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reading end stopped reading",
            )
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(HANDOFF_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == HANDOFF_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// The reading end of a [`chunk_pipe`]: the end of the stream once the
/// writer is dropped.
pub struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl std::io::BufRead for ChunkReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Err(_) => return Ok(&[]),
                Ok(next) => {
                    let used = std::mem::replace(&mut self.cur, next);
                    self.pos = 0;
                    // a full return queue only means the writer has spares
                    if used.capacity() > 0 {
                        let _ = self.back.try_send(used);
                    }
                }
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let have = self.fill_buf()?;
        let n = have.len().min(out.len());
        out[..n].copy_from_slice(&have[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_pipe_hands_over_everything_in_order() {
        use std::io::Write;
        let (mut w, mut r) = chunk_pipe(2);
        let data: Vec<u8> = (0..(5 * HANDOFF_CHUNK + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let d2 = data.clone();
        let writer = std::thread::spawn(move || {
            for part in d2.chunks(70_001) {
                w.write_all(part).unwrap();
            }
            w.flush().unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn chunk_pipe_unflushed_tail_is_not_sent_and_a_gone_reader_breaks_the_writer() {
        use std::io::Write;
        let (mut w, mut r) = chunk_pipe(1);
        w.write_all(b"kept").unwrap();
        w.flush().unwrap();
        w.write_all(b"lost").unwrap();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"kept");

        let (mut w, r) = chunk_pipe(1);
        drop(r);
        w.write_all(b"x").unwrap();
        assert_eq!(
            w.flush().unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn ports() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        assert!(!port_free(port));
        let other = free_port().unwrap();
        assert_ne!(other, port);
        assert!(port_free(other));
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn redaction() {
        let u = Url::parse("postgres://app:s3cret@db:5432/app").unwrap();
        let r = redact_url(&u);
        assert!(!r.contains("s3cret"));
        assert!(r.contains("app:REDACTED@db"));
        let u = Url::parse("postgres://db/app?sslmode=verify-full&sslpassword=k3y&password=pw")
            .unwrap();
        assert_eq!(
            redact_url(&u),
            "postgres://db/app?sslmode=verify-full&sslpassword=REDACTED&password=REDACTED"
        );
    }
}

/// Parses a duration like `30s`, `15m`, `24h`, `7d`, `2w` (or `0`).
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(chrono::Duration::zero());
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 30m, 24h, 7d)"))?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "week" | "weeks" => 7 * 86400,
        _ => return Err(format!("{s:?} is not a duration (like 30m, 24h, 7d)")),
    };
    n.checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap().num_seconds(), 0);
        assert_eq!(parse_duration("90s").unwrap().num_seconds(), 90);
        assert_eq!(parse_duration("15m").unwrap().num_seconds(), 900);
        assert_eq!(parse_duration("24h").unwrap().num_hours(), 24);
        assert_eq!(parse_duration("30d").unwrap().num_days(), 30);
        assert_eq!(parse_duration("2w").unwrap().num_days(), 14);
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }
}

/// A duration for people: `42s`, `5m12s`, `3h05m`, `2d04h` (negative as 0s).
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod human_duration_tests {
    use super::human_duration;
    use chrono::Duration;

    #[test]
    fn human() {
        assert_eq!(human_duration(Duration::seconds(-3)), "0s");
        assert_eq!(human_duration(Duration::seconds(42)), "42s");
        assert_eq!(human_duration(Duration::seconds(312)), "5m12s");
        assert_eq!(human_duration(Duration::seconds(3 * 3600 + 300)), "3h05m");
        assert_eq!(
            human_duration(Duration::seconds(2 * 86400 + 4 * 3600)),
            "2d04h"
        );
    }
}

/// Asks for a 1 MiB pipe buffer (the default 64 KiB makes a 1 MiB write a
/// dozen hand-overs between the threads at the two ends). Best effort:
/// the kernel may cap it (`/proc/sys/fs/pipe-max-size`).
pub fn grow_pipe(end: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor the caller owns; no memory is passed.
    unsafe {
        libc::fcntl(end.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Takes an exclusive `flock` on `path` (created if missing) without
/// waiting: `None` when another process holds it. The lock lives as long
/// as the returned file.
pub fn try_flock(path: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(f));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err)
    }
}

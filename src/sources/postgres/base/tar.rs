//! The one object of a base backup: the tar stream `pg_basebackup -Ft -D -`
//! writes, stored through the pipeline as it passes while a tap follows
//! the tar headers to keep `backup_label` (where the backup starts, on
//! which timeline) and `backup_manifest` (where it stops, and the files it
//! holds: the backup's basis, see `base/basis.rs`). Memory stays bounded
//! by the manifest's size (metadata: about 150 bytes a file; pg_basebackup
//! itself holds it in memory to write it into the tar) whatever the size
//! of the cluster. An incremental of method `blocks` reads the stream
//! through `base/blocks.rs`'s rewriter first; one of method `server`
//! taken with `-X fetch` through `base/fetch.rs`'s, which drops the WAL
//! segments the server sends at the end.

use std::io::Read;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::pipeline::ObjectRecord;
use crate::sources::backup::{BackupContext, spawn_piped, store_child_output};
use crate::sources::postgres::wal::Lsn;

use super::basis::Sizes;
use super::blocks::{BlockFilter, BlockStats};
use super::fetch::DropWal;
use super::stall::ArchiveWatch;

/// What pg_basebackup's stream goes through before it is stored.
pub(super) enum Filter {
    /// Nothing: stored as it comes.
    None,
    /// The `blocks` rewriter.
    Blocks(BlocksAgainst),
    /// `-X fetch`: WAL segments dropped, their bytes counted here
    /// (`base/fetch.rs`).
    DropWal(Arc<AtomicU64>),
}

/// What the `blocks` rewriter compares against: the parent's basis and
/// start LSN; `stats` receives its counts.
pub(super) struct BlocksAgainst {
    pub(super) parent: Sizes,
    pub(super) parent_start: u64,
    pub(super) stats: Arc<Mutex<BlockStats>>,
}

/// The one object of a base backup: the cluster as a tar stream.
pub const BASE_OBJECT: &str = "base.tar";

/// What the tar tap found in pg_basebackup's stream.
#[derive(Debug, Default)]
pub(super) struct Tapped {
    /// The `backup_label` member.
    pub(super) label: Option<String>,
    /// The `backup_manifest` member (it ends with the WAL range).
    pub(super) manifest: Vec<u8>,
}

/// A tar reader that passes every byte on and, as they pass, follows the
/// member headers to keep `backup_label` and `backup_manifest`
/// (pg_basebackup adds the manifest as the last member when it writes a
/// tar to stdout).
struct TarTap<R> {
    inner: R,
    header: Vec<u8>,
    /// Bytes of the current member still to come: data, then padding.
    data_left: u64,
    pad_left: u64,
    capture: Capture,
    /// A GNU long name (`L` member) for the next header.
    long_name: Option<String>,
    long_buf: Vec<u8>,
    end: bool,
    out: Arc<Mutex<Tapped>>,
    label_buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Label,
    Manifest,
    LongName,
}

const LABEL_MAX: usize = 64 * 1024;

impl<R> TarTap<R> {
    fn new(inner: R, out: Arc<Mutex<Tapped>>) -> TarTap<R> {
        TarTap {
            inner,
            header: Vec::with_capacity(512),
            data_left: 0,
            pad_left: 0,
            capture: Capture::None,
            long_name: None,
            long_buf: Vec::new(),
            end: false,
            out,
            label_buf: Vec::new(),
        }
    }

    fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.end {
            if self.data_left > 0 {
                let n = (self.data_left as usize).min(buf.len());
                self.take_data(&buf[..n]);
                self.data_left -= n as u64;
                buf = &buf[n..];
                if self.data_left == 0 {
                    self.member_done();
                }
            } else if self.pad_left > 0 {
                let n = (self.pad_left as usize).min(buf.len());
                self.pad_left -= n as u64;
                buf = &buf[n..];
            } else {
                let n = (512 - self.header.len()).min(buf.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() == 512 {
                    let h = std::mem::take(&mut self.header);
                    self.start_member(&h);
                }
            }
        }
    }

    fn start_member(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.end = true;
            return;
        }
        let size = tar_number(&h[124..136]);
        let kind = h[156];
        let mut name = member_name(h);
        if let Some(long) = self.long_name.take() {
            name = long.trim_start_matches("./").to_string();
        }
        let name = name.as_str();
        self.capture = match (kind, name) {
            (b'L', _) => Capture::LongName,
            (b'0' | 0, "backup_label") => Capture::Label,
            (b'0' | 0, "backup_manifest") => Capture::Manifest,
            _ => Capture::None,
        };
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
        if size == 0 {
            self.member_done();
        }
    }

    fn take_data(&mut self, d: &[u8]) {
        match self.capture {
            Capture::None => {}
            Capture::Label => {
                if self.label_buf.len() < LABEL_MAX {
                    self.label_buf.extend_from_slice(d);
                }
            }
            Capture::LongName => self.long_buf.extend_from_slice(&d[..d.len().min(4096)]),
            Capture::Manifest => self.out.lock().unwrap().manifest.extend_from_slice(d),
        }
    }

    fn member_done(&mut self) {
        match self.capture {
            Capture::Label => {
                let text =
                    String::from_utf8_lossy(&std::mem::take(&mut self.label_buf)).into_owned();
                self.out.lock().unwrap().label = Some(text);
            }
            Capture::LongName => {
                let b = std::mem::take(&mut self.long_buf);
                let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
                self.long_name = Some(String::from_utf8_lossy(&b[..end]).into_owned());
            }
            _ => {}
        }
        self.capture = Capture::None;
    }
}

impl<R: Read> Read for TarTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n]);
        Ok(n)
    }
}

/// A member's path (ustar prefix joined, `./` dropped).
pub(super) fn member_name(h: &[u8]) -> String {
    let cstr = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let mut name = cstr(&h[..100]);
    if &h[257..262] == b"ustar" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    name.trim_start_matches("./").to_string()
}

/// A tar header number: octal text, or base-256 when the top bit is set.
pub(super) fn tar_number(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = (v << 8) | u64::from(*b);
        }
        return v;
    }
    field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .fold(0, |v, b| v * 8 + u64::from(b - b'0'))
}

/// The backup's end: the largest `"End-LSN"` of the manifest's WAL ranges.
pub(super) fn parse_manifest_end_lsn(tail: &[u8]) -> Option<Lsn> {
    let text = String::from_utf8_lossy(tail);
    let ranges = &text[text.rfind("\"WAL-Ranges\"")?..];
    ranges
        .split("\"End-LSN\"")
        .skip(1)
        .filter_map(|rest| {
            let v = rest.split('"').nth(1)?;
            v.parse::<Lsn>().ok()
        })
        .max()
}

/// Streams pg_basebackup's tar into the object at `key`, through the
/// `blocks` rewriter when given one (an incremental of that method);
/// returns the record and what the tap found. The object is committed
/// only if pg_basebackup exits 0.
pub(super) async fn store_basebackup(
    ctx: &BackupContext<'_>,
    cmd: Command,
    source: &str,
    key: &str,
    filter: Filter,
    watch: &ArchiveWatch<'_>,
) -> Result<(ObjectRecord, Tapped)> {
    let (mut child, tail) = spawn_piped(cmd, "pg_basebackup")?;
    let (pid, said) = (child.id(), tail.view());
    let tapped = Arc::new(Mutex::new(Tapped::default()));
    let raw = child.stdout.take().expect("piped");
    let input: Box<dyn Read + Send> = match filter {
        Filter::Blocks(b) => Box::new(BlockFilter::new(raw, b.parent, b.parent_start, b.stats)),
        Filter::DropWal(dropped) => Box::new(DropWal::new(raw, dropped)),
        Filter::None => Box::new(raw),
    };
    let stdout = TarTap::new(input, tapped.clone());
    let what = format!("{source}: pg_basebackup");
    let store = store_child_output(ctx, child, tail, stdout, &what, key, BASE_OBJECT);
    tokio::pin!(store);
    let rec = tokio::select! {
        stored = &mut store => stored?,
        why = watch.watch(pid, said) => {
            // the child was stopped: the upload is aborted, nothing stored
            let _ = store.await;
            watch.end_walsender().await;
            return Err(why);
        }
    };
    let tapped = std::mem::take(&mut *tapped.lock().unwrap());
    Ok((rec, tapped))
}

/// The error of a tar stream that ends inside a member (for the readers
/// that rewrite the stream: `base/blocks.rs`, `base/fetch.rs`).
pub(super) fn truncated() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "pg_basebackup's tar stream ended inside a member",
    )
}

/// Reads the next bytes of a member, at most `left` (which it lowers):
/// an error if the stream ends first.
pub(super) fn read_member(
    r: &mut impl Read,
    buf: &mut [u8],
    left: &mut u64,
) -> std::io::Result<usize> {
    let want = (*left).min(buf.len() as u64) as usize;
    let n = r.read(&mut buf[..want])?;
    if n == 0 {
        return Err(truncated());
    }
    *left -= n as u64;
    Ok(n)
}

/// A member's size with its padding to 512 bytes; an error for a size
/// that overflows.
pub(super) fn padded_size(name: &str, size: u64) -> std::io::Result<u64> {
    size.checked_add((512 - size % 512) % 512).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("tar member {name} claims {size} bytes"),
        )
    })
}

/// Reads until `buf` is full or the stream ends; how many bytes came.
pub(super) fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::super::tests::LABEL;
    use super::*;

    const MANIFEST: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n\
\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\
\"Manifest-Checksum\": \"abc\"}\n";

    #[test]
    fn tap_finds_label_and_manifest_in_a_stream() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("backup_label", LABEL.as_bytes());
        add("base/1/1259", &vec![7u8; 100_001]);
        // a name longer than 100 bytes takes a GNU long-name member
        add(&format!("base/1/{}", "x".repeat(150)), b"backup_label");
        add("global/pg_control", &[1u8; 8192]);
        add("backup_manifest", MANIFEST.as_bytes());
        let bytes = b.into_inner().unwrap();
        let out = Arc::new(Mutex::new(Tapped::default()));
        let mut tap = TarTap::new(&bytes[..], out.clone());
        // odd-sized reads cross every boundary
        let mut buf = [0u8; 333];
        let mut copy = Vec::new();
        loop {
            let n = tap.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            copy.extend_from_slice(&buf[..n]);
        }
        assert_eq!(copy, bytes, "bytes pass through unchanged");
        let got = out.lock().unwrap();
        assert_eq!(got.manifest, MANIFEST.as_bytes());
        assert_eq!(got.label.as_deref(), Some(LABEL));
        assert_eq!(
            parse_manifest_end_lsn(&got.manifest).unwrap().to_string(),
            "0/2000100"
        );
    }

    #[test]
    fn tar_numbers() {
        assert_eq!(tar_number(b"00000001750\0"), 1000);
        assert_eq!(tar_number(b"     1750 \0\0"), 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 0x02;
        big[10] = 0x01;
        assert_eq!(tar_number(&big), 0x0102);
    }
}

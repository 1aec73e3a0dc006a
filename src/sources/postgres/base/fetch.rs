//! Incrementals of method `server` without the server's wait for the
//! archive.
//!
//! With `-X none` the server ends a base backup by waiting until the
//! archiver has stored the backup's last WAL segment, and it looks once a
//! second (`pg_backup_stop`). For a small incremental that second is most
//! of its time. `pg_basebackup -X fetch` asks the server not to wait: it
//! sends the backup's WAL at the end of the tar instead. strata drops
//! those segments as they pass ([`DropWal`]; the archive has them, and
//! the backup waits for them there itself, as every base backup does) and
//! keeps the rest of the stream as it is: the `pg_wal/archive_status/*.done`
//! and timeline history members the server adds with them are listed in
//! its backup manifest.
//!
//! The server only sends WAL it still has. A temporary physical
//! replication slot, made on strata's own connection before pg_basebackup
//! starts and dropped as soon as it ends (or with the connection), keeps
//! it there meanwhile. Where no slot can be made (no free slot), the
//! backup is taken with `-X none`, as a full one is, with a notice: the
//! same backup, a second slower.
//!
//! Only incrementals of method `server` read from a primary with WAL
//! segments of at most 16 MiB (the default) are taken so. They read only
//! changed blocks, so the WAL sent at their end is small: a segment or
//! two. A full backup (or a `blocks` one, which reads every file) can take
//! hours, and the WAL of those hours would be sent and dropped; with 1 GiB
//! segments every incremental would send a gigabyte to save a second; on a
//! standby the server does not wait for the archive in the first place.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::BackupId;

use super::super::pg_error_text;
use super::tar::{member_name, padded_size, read_member, read_some, tar_number, truncated};

/// The largest WAL segment size an incremental is fetched with.
pub(super) const MAX_SEGMENT: u64 = 16 << 20;

/// The temporary slot that keeps the backup's WAL on the server while
/// pg_basebackup runs with `-X fetch`; `Err` says why none was made.
pub(super) async fn reserve(
    client: &tokio_postgres::Client,
    id: &BackupId,
) -> std::result::Result<String, String> {
    let name = slot_name(id);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
    let made = client.execute(
        "SELECT pg_create_physical_replication_slot($1, true, true)",
        &params,
    );
    match tokio::time::timeout(DEADLINE, made).await {
        Ok(Ok(_)) => Ok(name),
        Ok(Err(e)) => Err(pg_error_text(&e)),
        Err(_) => Err(format!("no answer in {} s", DEADLINE.as_secs())),
    }
}

/// Drops the slot [`reserve`] made. A failure is left to the end of the
/// connection, which drops a temporary slot too.
pub(super) async fn release(client: &tokio_postgres::Client, slot: &str) {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&slot];
    let dropped = client.execute("SELECT pg_drop_replication_slot($1)", &params);
    let _ = tokio::time::timeout(DEADLINE, dropped).await;
}

/// How long making or dropping the slot may take.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A slot name from a backup id (`[a-z0-9_]`, under 64 bytes).
fn slot_name(id: &BackupId) -> String {
    let id: String = id
        .to_string()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    format!("strata_{id}")
}

/// Whether a tar member is a WAL segment the server sent with `-X fetch`:
/// `pg_wal/` and a 24-hex-digit segment name.
fn is_segment(name: &str) -> bool {
    name.strip_prefix("pg_wal/")
        .is_some_and(|f| f.len() == 24 && f.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A tar reader that passes every member on but WAL segments, whose bytes
/// it counts in `dropped`.
pub(super) struct DropWal<R> {
    inner: R,
    header: [u8; 512],
    /// Of the header in `header`: bytes still to hand out.
    header_left: usize,
    state: State,
    /// The previous header was a GNU long name or pax extension: the next
    /// member is passed as it is (pg_basebackup writes neither).
    extended: bool,
    dropped: Arc<AtomicU64>,
}

enum State {
    Header,
    /// A member's data and padding to pass on.
    Pass(u64),
    /// A segment's data to read and drop.
    Drop(u64),
    /// After the end-of-archive blocks.
    Trailer,
}

impl<R: Read> DropWal<R> {
    pub(super) fn new(inner: R, dropped: Arc<AtomicU64>) -> DropWal<R> {
        DropWal {
            inner,
            header: [0; 512],
            header_left: 0,
            state: State::Header,
            extended: false,
            dropped,
        }
    }

    /// Reads the next header and decides what to do with its member.
    fn next_header(&mut self) -> io::Result<bool> {
        let got = read_some(&mut self.inner, &mut self.header)?;
        if got == 0 {
            return Ok(false); // a tar without end-of-archive blocks
        }
        if got < 512 {
            return Err(truncated());
        }
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            self.header_left = 512;
            self.state = State::Trailer;
            return Ok(true);
        }
        let size = tar_number(&h[124..136]);
        let kind = h[156];
        let name = member_name(h);
        let padded = padded_size(&name, size)?;
        let extended = std::mem::replace(&mut self.extended, matches!(kind, b'L' | b'x' | b'g'));
        if !extended && matches!(kind, b'0' | 0) && is_segment(&name) {
            self.dropped.fetch_add(512 + padded, Ordering::Relaxed);
            self.state = State::Drop(padded);
        } else {
            self.header_left = 512;
            self.state = State::Pass(padded);
        }
        Ok(true)
    }
}

impl<R: Read> Read for DropWal<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.header_left > 0 {
                let from = 512 - self.header_left;
                let n = self.header_left.min(buf.len());
                buf[..n].copy_from_slice(&self.header[from..from + n]);
                self.header_left -= n;
                return Ok(n);
            }
            match &mut self.state {
                State::Trailer => return self.inner.read(buf),
                State::Pass(0) | State::Drop(0) => self.state = State::Header,
                State::Pass(left) => return read_member(&mut self.inner, buf, left),
                State::Drop(left) => {
                    // read into the caller's buffer, then forget it
                    read_member(&mut self.inner, buf, left)?;
                }
                State::Header => {
                    if !self.next_header()? {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn through(input: &[u8], read_size: usize) -> (Vec<u8>, u64) {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut r = DropWal::new(input, dropped.clone());
        let mut buf = vec![0u8; read_size];
        let mut out = Vec::new();
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (out, dropped.load(Ordering::Relaxed))
    }

    #[test]
    fn segments_are_dropped_and_everything_else_passes() {
        let seg = "000000010000000200000011";
        let kept = [
            ("backup_label", b"START WAL LOCATION".to_vec()),
            ("base/5/16384", vec![3u8; 8192 * 3]),
            // what the server lists in its manifest beside the segments
            (
                "pg_wal/archive_status/000000010000000200000011.done",
                vec![],
            ),
            (
                "pg_wal/00000002.history",
                b"1\t0/3000000\tno recovery target\n".to_vec(),
            ),
            // not segment names
            ("pg_wal/00000001000000020000001", vec![1u8; 700]),
            ("base/1/000000010000000200000011", vec![2u8; 100]),
            ("backup_manifest", b"{}".to_vec()),
        ];
        let mut all = kept[..4].to_vec();
        all.push((
            Box::leak(format!("pg_wal/{seg}").into_boxed_str()),
            vec![9u8; 16 << 10],
        ));
        all.push(("pg_wal/00000001000000020000001A", vec![8u8; 1000]));
        all.extend_from_slice(&kept[4..]);
        let expected = tar_of(&kept);
        for size in [1, 333, 512, 4096, 1 << 20] {
            let (out, dropped) = through(&tar_of(&all), size);
            assert_eq!(out, expected, "read size {size}");
            assert_eq!(dropped, 512 + (16 << 10) + 512 + 1024);
        }
    }

    #[test]
    fn a_stream_cut_inside_a_member_is_an_error() {
        let bytes = tar_of(&[("pg_wal/000000010000000200000011", vec![9u8; 4096])]);
        for cut in [100, 512 + 10, 512 + 4000] {
            let mut r = DropWal::new(&bytes[..cut], Arc::new(AtomicU64::new(0)));
            let mut out = Vec::new();
            let e = r.read_to_end(&mut out).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn slot_names_are_valid() {
        let id: BackupId = "20261207T050415Z-8f218f".parse().unwrap();
        assert_eq!(slot_name(&id), "strata_20261207t050415z_8f218f");
    }
}

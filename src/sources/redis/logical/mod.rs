//! Logical Redis snapshots, for servers that refuse the replication
//! protocol (managed services: ElastiCache, MemoryDB, Azure Cache for
//! Redis disable `SYNC`/`PSYNC`). Every database with keys (`INFO
//! keyspace`) is walked with `SCAN … COUNT`; for each batch of keys strata
//! pipelines `PTTL key` + `DUMP key` and writes one record per key as the
//! replies arrive, through the same pipeline as every backup (hash, zstd,
//! age): bounded memory (one reply at a time, one 64 KiB chunk in flight
//! per channel slot), no temporary disk. Restore replays the records as
//! `RESTORE key ttl payload ABSTTL REPLACE` in pipelined batches.
//!
//! It is **not a point-in-time image**: the scan takes as long as it
//! takes, and a key written, changed or deleted meanwhile may or may not
//! be in it (`SCAN` guarantees only that a key present from start to end
//! is returned, possibly more than once; a duplicate is written twice and
//! restored twice, harmlessly). A key that vanishes between `SCAN` and
//! `DUMP` is left out.
//!
//! # Format, version 1
//!
//! All integers are big-endian and unsigned. The object is:
//!
//! ```text
//! header   "STRATA-REDIS-LOGICAL" (20 bytes ASCII)
//!          version      u8   = 1
//!          started      u64  Unix milliseconds when the scan began
//! records  any number of:
//!   select 'S' (0x53)   db   u32    the database the next keys belong to;
//!                                   strictly increasing, each at most once
//!   key    'K' (0x4B)   key_len u32, key (key_len bytes)
//!                       expire_at u64   absolute Unix milliseconds of the
//!                                       key's expiry (now + PTTL when it
//!                                       was read), 0 = no expiry
//!                       payload_len u64, payload (payload_len bytes): the
//!                                       `DUMP` reply as the server gave it
//!                                       (value, RDB version u16 LE,
//!                                       CRC-64 LE of all before it)
//! trailer  'E' (0x45)   dbs u32     number of select records
//!                       keys u64    number of key records
//!                       payload_bytes u64  sum of all payload_len
//!                       crc u64     CRC-64 (Redis's: Jones polynomial,
//!                                   reflected, as in RDB files) of every
//!                                   byte before the trailer's tag
//! ```
//!
//! Nothing follows the trailer. A reader checks the header, that every key
//! record follows a select record, each payload's CRC-64, and the trailer's
//! counts and CRC against what it read: a cut or damaged object is refused
//! (`verify --read-data`, restore) rather than loaded short. (The
//! pipeline's SHA-256 and age's authentication catch damage to the stored
//! object first; the format's own checks catch a writer or reader that is
//! wrong.)
//!
//! [`scan`] takes a logical snapshot; [`load`] replays one into a server;
//! [`restore`] restores one wherever a snapshot is restored.

pub mod load;
pub mod restore;
pub mod scan;

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::rdb::crc64;
use crate::catalog::manifest::{LogicalInfo, RedisDb};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::{ObjectRecord, fetch};
use crate::progress::Progress;
use crate::storage::Storage;

/// The object name of a logical snapshot.
pub const LOGICAL_OBJECT: &str = "keys.rlog";
/// The format's name, first in every object.
pub const MAGIC: &[u8; 20] = b"STRATA-REDIS-LOGICAL";
/// The format version written (and the newest read).
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1 + 8;
const TAG_SELECT: u8 = b'S';
const TAG_KEY: u8 = b'K';
const TAG_END: u8 = b'E';
/// Longest key Redis accepts (`proto-max-bulk-len`'s ceiling).
const MAX_KEY: u64 = 512 << 20;
/// Longest payload a reader believes (anything longer is damage).
const MAX_PAYLOAD: u64 = 16 << 30;
/// `SCAN … COUNT` hint: keys per batch (each batch is one pipeline).
pub(super) const SCAN_COUNT: &str = "1000";
/// Bytes written before a chunk goes to the encoder.
pub(super) const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the socket and the encoder (or the decoder
/// and the target).
pub(super) const CHANNEL_CHUNKS: usize = 16;
/// A restore batch is sent when it holds this many commands …
pub(super) const BATCH_COMMANDS: usize = 256;
/// … or this many bytes.
pub(super) const BATCH_BYTES: usize = 4 << 20;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Select(u32),
    Key {
        key: Vec<u8>,
        /// Absolute Unix milliseconds; 0 = no expiry.
        expire_at: u64,
        payload: Vec<u8>,
    },
}

/// What a whole object held (its trailer, checked).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Totals {
    pub started_ms: u64,
    pub dbs: u32,
    pub keys: u64,
    pub payload_bytes: u64,
    /// Key records (and those with an expiry) per database.
    pub keyspace: Vec<RedisDb>,
}

/// Appends the header.
pub fn put_header(out: &mut Vec<u8>, started_ms: u64) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&started_ms.to_be_bytes());
}

/// Appends a select record.
pub fn put_select(out: &mut Vec<u8>, db: u32) {
    out.push(TAG_SELECT);
    out.extend_from_slice(&db.to_be_bytes());
}

/// Appends a key record.
pub fn put_key(out: &mut Vec<u8>, key: &[u8], expire_at: u64, payload: &[u8]) {
    out.push(TAG_KEY);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&expire_at.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends the trailer.
/// Appends the trailer; `crc` covers every byte written before it.
pub fn put_trailer(out: &mut Vec<u8>, t: &Totals, crc: u64) {
    out.push(TAG_END);
    out.extend_from_slice(&t.dbs.to_be_bytes());
    out.extend_from_slice(&t.keys.to_be_bytes());
    out.extend_from_slice(&t.payload_bytes.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
}
const TRAILER_LEN: usize = 29;

/// Whether a `DUMP` payload's CRC-64 (its last 8 bytes) holds.
fn payload_ok(p: &[u8]) -> bool {
    // value (at least a type byte), RDB version u16, CRC-64
    if p.len() < 11 {
        return false;
    }
    let (body, crc) = p.split_at(p.len() - 8);
    crc64(0, body) == u64::from_le_bytes(crc.try_into().expect("8 bytes"))
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Header,
    Body,
    Done,
}

/// Reads the format incrementally: [`feed`](Parser::feed) bytes as they
/// come, take records with [`next_event`](Parser::next_event), then
/// [`finish`](Parser::finish). Holds at most one record beyond what was
/// taken.
pub struct Parser {
    buf: Vec<u8>,
    pos: usize,
    state: State,
    totals: Totals,
    /// Select records seen; the current database.
    db: Option<u32>,
    /// Bytes consumed before `buf[0]`, for messages.
    offset: u64,
    /// CRC-64 of every byte taken so far.
    crc: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser {
            buf: Vec::new(),
            pos: 0,
            state: State::Header,
            totals: Totals::default(),
            db: None,
            offset: 0,
            crc: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.offset += self.pos as u64;
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn at(&self) -> u64 {
        self.offset + self.pos as u64
    }

    /// Takes `n` bytes (a whole record) into the CRC.
    fn take(&mut self, n: usize) {
        self.crc = crc64(self.crc, &self.buf[self.pos..self.pos + n]);
        self.pos += n;
    }

    /// The next whole record, `None` until more bytes are fed.
    pub fn next_event(&mut self) -> std::result::Result<Option<Event>, String> {
        let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        let be64 = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        match self.state {
            State::Header => {
                let a = self.avail();
                let n = a.len().min(MAGIC.len());
                if a[..n] != MAGIC[..n] {
                    return Err(
                        "not a strata logical Redis snapshot (no STRATA-REDIS-LOGICAL header)"
                            .into(),
                    );
                }
                if a.len() < HEADER_LEN {
                    return Ok(None);
                }
                let v = a[MAGIC.len()];
                if v == 0 || v > VERSION {
                    return Err(format!(
                        "logical snapshot format version {v}; this strata reads versions 1 to {VERSION}"
                    ));
                }
                self.totals.started_ms = be64(&a[MAGIC.len() + 1..]);
                self.take(HEADER_LEN);
                self.state = State::Body;
                self.next_event()
            }
            State::Done => {
                if self.avail().is_empty() {
                    Ok(None)
                } else {
                    Err(format!("bytes after the trailer at offset {}", self.at()))
                }
            }
            State::Body => {
                let at = self.at();
                let a = self.avail();
                let Some(&tag) = a.first() else {
                    return Ok(None);
                };
                match tag {
                    TAG_SELECT => {
                        if a.len() < 5 {
                            return Ok(None);
                        }
                        let db = be32(&a[1..]);
                        if self.db.is_some_and(|d| db <= d) {
                            return Err(format!(
                                "database {db} selected after database {} at offset {at}",
                                self.db.unwrap_or(0)
                            ));
                        }
                        self.take(5);
                        self.db = Some(db);
                        self.totals.dbs += 1;
                        self.totals.keyspace.push(RedisDb {
                            db,
                            keys: 0,
                            expires: 0,
                        });
                        Ok(Some(Event::Select(db)))
                    }
                    TAG_KEY => {
                        if self.db.is_none() {
                            return Err(format!("a key record before any database at offset {at}"));
                        }
                        if a.len() < 5 {
                            return Ok(None);
                        }
                        let klen = be32(&a[1..]) as u64;
                        if klen > MAX_KEY {
                            return Err(format!("implausible key length {klen} at offset {at}"));
                        }
                        let k = klen as usize;
                        if a.len() < 5 + k + 16 {
                            return Ok(None);
                        }
                        let expire_at = be64(&a[5 + k..]);
                        let plen = be64(&a[13 + k..]);
                        if plen > MAX_PAYLOAD {
                            return Err(format!(
                                "implausible payload length {plen} at offset {at}"
                            ));
                        }
                        let end = 21 + k + plen as usize;
                        if a.len() < end {
                            return Ok(None);
                        }
                        let key = a[5..5 + k].to_vec();
                        let payload = a[21 + k..end].to_vec();
                        if !payload_ok(&payload) {
                            return Err(format!(
                                "the DUMP payload of key {} (offset {at}) fails its CRC-64",
                                show_key(&key)
                            ));
                        }
                        self.take(end);
                        self.totals.keys += 1;
                        self.totals.payload_bytes += plen;
                        if let Some(d) = self.totals.keyspace.last_mut() {
                            d.keys += 1;
                            d.expires += u64::from(expire_at != 0);
                        }
                        Ok(Some(Event::Key {
                            key,
                            expire_at,
                            payload,
                        }))
                    }
                    TAG_END => {
                        if a.len() < TRAILER_LEN {
                            return Ok(None);
                        }
                        let (dbs, keys, bytes) = (be32(&a[1..]), be64(&a[5..]), be64(&a[13..]));
                        if be64(&a[21..]) != self.crc {
                            return Err(format!(
                                "the CRC-64 in the trailer (offset {at}) does not match the records"
                            ));
                        }
                        let t = &self.totals;
                        if (dbs, keys, bytes) != (t.dbs, t.keys, t.payload_bytes) {
                            return Err(format!(
                                "the trailer counts {dbs} databases, {keys} keys, {bytes} payload bytes; the object holds {}, {}, {}",
                                t.dbs, t.keys, t.payload_bytes
                            ));
                        }
                        self.pos += TRAILER_LEN;
                        self.state = State::Done;
                        self.next_event()
                    }
                    other => Err(format!("unknown record type 0x{other:02x} at offset {at}")),
                }
            }
        }
    }

    /// The totals, once the trailer was read and nothing followed it.
    pub fn finish(self) -> std::result::Result<Totals, String> {
        match self.state {
            State::Done if self.avail().is_empty() => Ok(self.totals),
            State::Done => Err("bytes after the trailer".into()),
            _ => Err(format!(
                "the object ends at byte {} without its trailer (cut short)",
                self.at() + self.avail().len() as u64
            )),
        }
    }
}

/// A key for messages: printable, at most 80 characters.
pub(super) fn show_key(k: &[u8]) -> String {
    let s = String::from_utf8_lossy(k);
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    format!("{out:?}")
}

/// A sink that checks the format and drops the records (`verify`).
pub struct CheckingSink {
    parser: Parser,
}

impl CheckingSink {
    pub fn new() -> CheckingSink {
        CheckingSink {
            parser: Parser::new(),
        }
    }
    pub fn finish(self) -> std::result::Result<Totals, String> {
        self.parser.finish()
    }
}

impl Default for CheckingSink {
    fn default() -> Self {
        CheckingSink::new()
    }
}

impl Write for CheckingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.parser.feed(buf);
        while self
            .parser
            .next_event()
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?
            .is_some()
        {}
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads `rec` back and checks its format (`verify --read-data`).
pub async fn check_object(
    storage: &Arc<dyn Storage>,
    rec: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
) -> Result<Totals> {
    let sink = fetch(
        storage,
        rec,
        identities,
        CheckingSink::new(),
        Progress::hidden(),
    )
    .await?;
    sink.finish().map_err(|m| damaged(&rec.key, &m))
}

pub(super) fn damaged(key: &str, why: &str) -> Error {
    Error::integrity(format!(
        "{key} is not a valid logical Redis snapshot: {why}"
    ))
    .hint("take a new backup; restore an older one meanwhile (strata list SOURCE)")
}

/// RESP encoding of one command, appended to `out`.
pub(super) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

pub(super) fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

/// The time a logical load took, for reports.
pub fn rate(keys: u64, bytes: u64, since: Instant) -> String {
    let s = since.elapsed().as_secs_f64().max(1e-6);
    format!(
        "{:.0} keys/s, {}/s",
        keys as f64 / s,
        crate::util::human_bytes((bytes as f64 / s) as u64)
    )
}

/// The manifest's record of a logical snapshot.
pub fn info_of(totals: &Totals, fallback: Option<String>) -> LogicalInfo {
    LogicalInfo {
        format_version: u32::from(VERSION),
        keys: totals.keys,
        payload_bytes: totals.payload_bytes,
        fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DUMP-like payload with a valid CRC-64.
    fn payload(body: &[u8]) -> Vec<u8> {
        let mut p = body.to_vec();
        p.extend_from_slice(&11u16.to_le_bytes());
        let crc = crc64(0, &p);
        p.extend_from_slice(&crc.to_le_bytes());
        p
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, 1_700_000_000_000);
        put_select(&mut out, 0);
        put_key(&mut out, b"a", 0, &payload(b"\x00\x01x"));
        put_key(
            &mut out,
            b"bin\x00key",
            1_800_000_000_000,
            &payload(b"\x00\x02yy"),
        );
        put_select(&mut out, 3);
        put_key(&mut out, b"", 0, &payload(b"\x0e\x05abcde"));
        let t = Totals {
            dbs: 2,
            keys: 3,
            payload_bytes: 13 + 14 + 17,
            ..Totals::default()
        };
        let crc = crc64(0, &out);
        put_trailer(&mut out, &t, crc);
        out
    }

    fn read_all(data: &[u8], step: usize) -> std::result::Result<(Vec<Event>, Totals), String> {
        let mut p = Parser::new();
        let mut evs = Vec::new();
        for c in data.chunks(step.max(1)) {
            p.feed(c);
            while let Some(e) = p.next_event()? {
                evs.push(e);
            }
        }
        Ok((evs, p.finish()?))
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let data = sample();
        for step in [1, 2, 7, 64, data.len()] {
            let (evs, t) = read_all(&data, step).unwrap();
            assert_eq!(evs.len(), 5, "step {step}");
            assert_eq!(evs[0], Event::Select(0));
            assert!(
                matches!(&evs[2], Event::Key { key, expire_at: 1_800_000_000_000, .. } if key == b"bin\x00key")
            );
            assert_eq!((t.dbs, t.keys, t.started_ms), (2, 3, 1_700_000_000_000));
            assert_eq!(
                t.keyspace,
                vec![
                    RedisDb {
                        db: 0,
                        keys: 2,
                        expires: 1
                    },
                    RedisDb {
                        db: 3,
                        keys: 1,
                        expires: 0
                    }
                ]
            );
        }
    }

    /// issue 17 item 3: a truncated logical object is refused, at every cut.
    #[test]
    fn every_cut_is_refused() {
        let data = sample();
        for cut in 0..data.len() {
            assert!(read_all(&data[..cut], 5).is_err(), "cut at {cut}");
        }
        let mut more = data.clone();
        more.push(0);
        assert!(
            read_all(&more, 3)
                .unwrap_err()
                .contains("after the trailer")
        );
    }

    #[test]
    fn damage_is_refused() {
        let data = sample();
        // every single-bit flip is caught (the trailer CRC covers all)
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x10;
            assert!(read_all(&d, 4096).is_err(), "flip at {i}");
        }
        let mut d = data.clone();
        d[MAGIC.len()] = 2;
        assert!(read_all(&d, 64).unwrap_err().contains("version 2"));
        assert!(
            read_all(b"REDIS0011", 64)
                .unwrap_err()
                .contains("STRATA-REDIS-LOGICAL")
        );
    }

    #[test]
    fn trailer_counts_must_match() {
        let mut out = Vec::new();
        put_header(&mut out, 0);
        put_select(&mut out, 0);
        put_key(&mut out, b"k", 0, &payload(b"\x00\x01v"));
        let crc = crc64(0, &out);
        put_trailer(
            &mut out,
            &Totals {
                dbs: 1,
                keys: 2,
                payload_bytes: 13,
                ..Totals::default()
            },
            crc,
        );
        assert!(read_all(&out, 64).unwrap_err().contains("trailer counts"));
    }

    /// The fuzz corpus holds a valid object (so the fuzzer starts inside
    /// the format).
    #[test]
    fn fuzz_seed_is_a_valid_object() {
        // the rdb fuzz target's seed of a logical snapshot: its first byte
        // picks the chunking, the rest is `sample()`
        // (STRATA_WRITE_SEEDS=1 cargo test --lib fuzz_seed writes it)
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/rdb/seed-logical-v1"
        );
        let want = [&[7u8][..], &sample()].concat();
        if std::env::var_os("STRATA_WRITE_SEEDS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let seed = std::fs::read(path).expect("the committed seed");
        assert_eq!(seed, want, "{path} is not sample()'s object");
        let (evs, t) = read_all(&seed[1..], 7).unwrap();
        assert_eq!((evs.len(), t.keys, t.dbs), (5, 3, 2));
    }

    #[test]
    fn resp_encoding() {
        let mut b = Vec::new();
        encode(&mut b, &[b"PTTL", b"k\r\n"]);
        assert_eq!(b, b"*2\r\n$4\r\nPTTL\r\n$3\r\nk\r\n\r\n");
    }
}

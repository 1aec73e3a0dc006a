//! Reads the keys out of an RDB stream, one at a time, as `DUMP` payloads:
//! what restoring a replication snapshot into a Redis Cluster of another
//! shape needs (each key goes to the master owning its slot, with
//! `RESTORE key expire_at payload ABSTTL REPLACE`), and what counting the
//! keys of a shard needs (`verify`).
//!
//! A `DUMP` payload is the RDB encoding of the value — its type byte and
//! the bytes after the key — followed by the RDB version (u16 LE) and a
//! CRC-64 of both (LE), so no value is decoded: the reader only finds
//! where each value ends (lengths, strings, the parts of a stream). Keys
//! are decoded (integer and LZF encodings) since their slot depends on
//! them. Types it cannot frame (modules, Redis 7.4+ hashes with field
//! expiry) are refused, naming the type, rather than skipped.
//!
//! Push-style like [`super::logical::Parser`] (feed bytes, take
//! [`Event`]s), holding at most one record beyond what was taken; a record
//! cut by a chunk boundary is parsed again once the buffer has doubled, so
//! a large value costs a bounded number of attempts. The whole stream's
//! magic, EOF opcode and CRC-64 are checked by [`RdbCheck`] alongside.

use super::logical::{Event, Totals};
use super::rdb::{RdbCheck, crc64};
use crate::catalog::manifest::RedisDb;

const OP_SLOT_INFO: u8 = 0xF4;
const OP_FUNCTION2: u8 = 0xF5;
const OP_FUNCTION_PRE_GA: u8 = 0xF6;
const OP_MODULE_AUX: u8 = 0xF7;
const OP_IDLE: u8 = 0xF8;
const OP_FREQ: u8 = 0xF9;
const OP_AUX: u8 = 0xFA;
const OP_RESIZEDB: u8 = 0xFB;
const OP_EXPIRETIME_MS: u8 = 0xFC;
const OP_EXPIRETIME: u8 = 0xFD;
const OP_SELECTDB: u8 = 0xFE;
const OP_EOF: u8 = 0xFF;

enum Stop {
    /// More bytes are needed.
    More,
    Bad(String),
}

type R<T> = std::result::Result<T, Stop>;

enum Len {
    Plain(u64),
    /// A special string encoding (integers, LZF).
    Enc(u8),
}

/// A cursor over the buffered bytes.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: u64) -> R<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| Stop::Bad(format!("implausible length {n}")))?;
        if self.b.len() - self.p < n {
            return Err(Stop::More);
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn len(&mut self) -> R<Len> {
        let b = self.u8()?;
        Ok(match b >> 6 {
            0 => Len::Plain(u64::from(b & 0x3f)),
            1 => Len::Plain((u64::from(b & 0x3f) << 8) | u64::from(self.u8()?)),
            2 if b == 0x80 => Len::Plain(u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))),
            2 if b == 0x81 => Len::Plain(u64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            3 => Len::Enc(b & 0x3f),
            _ => return Err(Stop::Bad(format!("unknown length encoding 0x{b:02x}"))),
        })
    }
    fn plain_len(&mut self) -> R<u64> {
        match self.len()? {
            Len::Plain(n) => Ok(n),
            Len::Enc(e) => Err(Stop::Bad(format!(
                "a string encoding ({e}) where a length belongs"
            ))),
        }
    }
    /// A string, decoded (keys).
    fn string(&mut self) -> R<Vec<u8>> {
        match self.len()? {
            Len::Plain(n) => Ok(self.take(n)?.to_vec()),
            Len::Enc(0) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Len::Enc(1) => Ok(i16::from_le_bytes(self.take(2)?.try_into().expect("2"))
                .to_string()
                .into_bytes()),
            Len::Enc(2) => Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4"))
                .to_string()
                .into_bytes()),
            Len::Enc(3) => {
                let clen = self.plain_len()?;
                let ulen = self.plain_len()?;
                let c = self.take(clen)?;
                lzf_decompress(c, ulen).map_err(Stop::Bad)
            }
            Len::Enc(e) => Err(Stop::Bad(format!("unknown string encoding {e}"))),
        }
    }
    /// Skips a string (values).
    fn skip_string(&mut self) -> R<()> {
        match self.len()? {
            Len::Plain(n) => self.take(n).map(drop),
            Len::Enc(0) => self.take(1).map(drop),
            Len::Enc(1) => self.take(2).map(drop),
            Len::Enc(2) => self.take(4).map(drop),
            Len::Enc(3) => {
                let clen = self.plain_len()?;
                self.plain_len()?;
                self.take(clen).map(drop)
            }
            Len::Enc(e) => Err(Stop::Bad(format!("unknown string encoding {e}"))),
        }
    }
    fn skip_strings(&mut self, n: u64) -> R<()> {
        for _ in 0..n {
            self.skip_string()?;
        }
        Ok(())
    }
}

/// LZF, as Redis compresses long strings.
fn lzf_decompress(c: &[u8], ulen: u64) -> std::result::Result<Vec<u8>, String> {
    let ulen = usize::try_from(ulen).map_err(|_| "implausible LZF length".to_string())?;
    let bad = || "a damaged LZF string".to_string();
    let mut out: Vec<u8> = Vec::with_capacity(ulen.min(1 << 26));
    let mut i = 0;
    while i < c.len() {
        let ctrl = usize::from(c[i]);
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            out.extend_from_slice(c.get(i..i + n).ok_or_else(bad)?);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += usize::from(*c.get(i).ok_or_else(bad)?);
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + usize::from(*c.get(i).ok_or_else(bad)?) + 1;
            i += 1;
            let from = out.len().checked_sub(back).ok_or_else(bad)?;
            for k in 0..n + 2 {
                let b = out[from + k];
                out.push(b);
            }
        }
        if out.len() > ulen {
            return Err(bad());
        }
    }
    if out.len() != ulen {
        return Err(bad());
    }
    Ok(out)
}

/// Skips the value of type `t` (after its key).
fn skip_value(c: &mut Cur, t: u8) -> R<()> {
    match t {
        // string; encodings kept whole in one string: zipmap, ziplists,
        // intset, listpacks
        0 | 9..=13 | 16 | 17 | 20 => c.skip_string(),
        // list, set; quicklist of ziplists
        1 | 2 | 14 => {
            let n = c.plain_len()?;
            c.skip_strings(n)
        }
        3 => {
            let n = c.plain_len()?;
            for _ in 0..n {
                c.skip_string()?;
                // a double as text: 253/254/255 are nan/+inf/-inf
                let l = c.u8()?;
                if l < 253 {
                    c.take(u64::from(l))?;
                }
            }
            Ok(())
        }
        4 => {
            let n = c.plain_len()?;
            c.skip_strings(n.saturating_mul(2))
        }
        5 => {
            let n = c.plain_len()?;
            for _ in 0..n {
                c.skip_string()?;
                c.take(8)?;
            }
            Ok(())
        }
        18 => {
            let n = c.plain_len()?;
            for _ in 0..n {
                c.plain_len()?;
                c.skip_string()?;
            }
            Ok(())
        }
        15 | 19 | 21 => {
            let n = c.plain_len()?;
            c.skip_strings(n.saturating_mul(2))?;
            // length, last id
            for _ in 0..3 {
                c.plain_len()?;
            }
            if t >= 19 {
                // first id, max deleted id, entries added
                for _ in 0..5 {
                    c.plain_len()?;
                }
            }
            let groups = c.plain_len()?;
            for _ in 0..groups {
                c.skip_string()?;
                c.plain_len()?;
                c.plain_len()?;
                if t >= 19 {
                    c.plain_len()?;
                }
                let pel = c.plain_len()?;
                for _ in 0..pel {
                    c.take(16 + 8)?;
                    c.plain_len()?;
                }
                let consumers = c.plain_len()?;
                for _ in 0..consumers {
                    c.skip_string()?;
                    c.take(if t >= 21 { 16 } else { 8 })?;
                    let pel = c.plain_len()?;
                    c.take(pel.saturating_mul(16))?;
                }
            }
            Ok(())
        }
        6 | 7 => Err(Stop::Bad(
            "a module value (type 6/7): strata cannot split module data into keys".into(),
        )),
        other => Err(Stop::Bad(format!(
            "value type {other} (a newer Redis than strata knows, e.g. 7.4+ hash field expiry): this snapshot cannot be split into keys"
        ))),
    }
}

/// Reads an RDB stream into [`Event`]s: feed bytes, take events with
/// [`next_event`](Self::next_event), call [`end`](Self::end) when the
/// stream ended, drain the events, then [`finish`](Self::finish).
pub struct RdbKeys {
    buf: Vec<u8>,
    pos: usize,
    /// Don't parse again before this many bytes are buffered.
    wait: usize,
    ended: bool,
    st: State,
    check: RdbCheck,
}

/// What the records read so far set.
#[derive(Default)]
struct State {
    version: Option<u16>,
    done: bool,
    db: Option<u32>,
    expire_at: u64,
    totals: Totals,
    /// Function libraries in the stream (not keys: not restored by key).
    functions: u64,
}

impl Default for RdbKeys {
    fn default() -> Self {
        RdbKeys::new()
    }
}

impl RdbKeys {
    pub fn new() -> RdbKeys {
        RdbKeys {
            buf: Vec::new(),
            pos: 0,
            wait: 0,
            ended: false,
            st: State::default(),
            check: RdbCheck::new(),
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> std::result::Result<(), String> {
        self.check.feed(data)?;
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The stream ended: parse what is left.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The next key or database, `None` until more bytes are fed.
    pub fn next_event(&mut self) -> std::result::Result<Option<Event>, String> {
        loop {
            let avail = self.buf.len() - self.pos;
            if self.st.done || (!self.ended && avail < self.wait) {
                return Ok(None);
            }
            let mut c = Cur {
                b: &self.buf[self.pos..],
                p: 0,
            };
            match self.st.step(&mut c) {
                Ok(ev) => {
                    self.pos += c.p;
                    self.wait = 0;
                    if let Some(ev) = ev {
                        return Ok(Some(ev));
                    }
                }
                Err(Stop::More) if self.ended => {
                    return Err(format!(
                        "the RDB stream ends in the middle of a record (after {} keys): cut short",
                        self.st.totals.keys
                    ));
                }
                Err(Stop::More) => {
                    self.wait = avail.saturating_mul(2).max(avail + 1);
                    return Ok(None);
                }
                Err(Stop::Bad(m)) => return Err(m),
            }
        }
    }

    /// The RDB version of the stream, once its header was read.
    pub fn version(&self) -> Option<u16> {
        self.st.version
    }

    /// Function libraries in the stream (not keys: not restored by key).
    pub fn functions(&self) -> u64 {
        self.st.functions
    }

    /// The keys read, once the whole stream was read and its checks hold.
    pub fn finish(self) -> std::result::Result<Totals, String> {
        if !self.st.done {
            return Err("the RDB stream ended without its EOF record (cut short)".into());
        }
        if self.pos != self.buf.len() {
            return Err("bytes after the RDB's checksum".into());
        }
        self.check.finish()?;
        Ok(self.st.totals)
    }
}

impl State {
    /// One record: an event, or `None` for one that is not (AUX, …).
    fn step(&mut self, c: &mut Cur) -> R<Option<Event>> {
        let Some(version) = self.version else {
            let h = c.take(9)?;
            let v = h
                .strip_prefix(b"REDIS")
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.parse::<u16>().ok())
                .ok_or_else(|| Stop::Bad("not an RDB file (no REDIS header)".into()))?;
            self.version = Some(v);
            return Ok(None);
        };
        let op = c.u8()?;
        match op {
            OP_EOF => {
                if version >= 5 {
                    c.take(8)?;
                }
                self.done = true;
                Ok(None)
            }
            OP_AUX => {
                c.skip_string()?;
                c.skip_string()?;
                Ok(None)
            }
            OP_RESIZEDB => {
                c.plain_len()?;
                c.plain_len()?;
                Ok(None)
            }
            OP_SLOT_INFO => {
                for _ in 0..3 {
                    c.plain_len()?;
                }
                Ok(None)
            }
            OP_EXPIRETIME_MS => {
                self.expire_at = u64::from_le_bytes(c.take(8)?.try_into().expect("8"));
                Ok(None)
            }
            OP_EXPIRETIME => {
                self.expire_at =
                    u64::from(u32::from_le_bytes(c.take(4)?.try_into().expect("4"))) * 1000;
                Ok(None)
            }
            OP_FREQ => c.take(1).map(|_| None),
            OP_IDLE => c.plain_len().map(|_| None),
            OP_FUNCTION2 => {
                c.skip_string()?;
                self.functions += 1;
                Ok(None)
            }
            OP_FUNCTION_PRE_GA | OP_MODULE_AUX => Err(Stop::Bad(format!(
                "opcode 0x{op:02x} (module or pre-release function data): this snapshot cannot be split into keys"
            ))),
            OP_SELECTDB => {
                let db = u32::try_from(c.plain_len()?)
                    .map_err(|_| Stop::Bad("implausible database number".into()))?;
                self.select(db);
                Ok(Some(Event::Select(db)))
            }
            t => {
                if self.db.is_none() {
                    // keys before any SELECTDB belong to database 0; the
                    // type byte is read again on the next call
                    c.p -= 1;
                    self.select(0);
                    return Ok(Some(Event::Select(0)));
                }
                let key = c.string()?;
                let start = c.p;
                skip_value(c, t)?;
                let value = &c.b[start..c.p];
                let mut payload = Vec::with_capacity(value.len() + 11);
                payload.push(t);
                payload.extend_from_slice(value);
                payload.extend_from_slice(&version.to_le_bytes());
                let crc = crc64(0, &payload);
                payload.extend_from_slice(&crc.to_le_bytes());
                let expire_at = std::mem::take(&mut self.expire_at);
                self.totals.keys += 1;
                self.totals.payload_bytes += payload.len() as u64;
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
        }
    }

    fn select(&mut self, db: u32) {
        self.db = Some(db);
        self.totals.dbs += 1;
        self.totals.keyspace.push(RedisDb {
            db,
            keys: 0,
            expires: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RDB file: an AUX field, db 0 with a plain string, an
    /// int-encoded key with an expiry, a list (quicklist 2), db 2 with an
    /// LZF-compressed key.
    fn sample() -> Vec<u8> {
        let mut f = b"REDIS0010".to_vec();
        f.extend_from_slice(&[OP_AUX, 3]);
        f.extend_from_slice(b"ver");
        f.extend_from_slice(&[5]);
        f.extend_from_slice(b"7.0.0");
        f.extend_from_slice(&[OP_SELECTDB, 0, OP_RESIZEDB, 3, 1]);
        f.extend_from_slice(&[0, 1, b'a', 2, b'v', b'1']);
        f.push(OP_EXPIRETIME_MS);
        f.extend_from_slice(&1_800_000_000_000u64.to_le_bytes());
        f.extend_from_slice(&[0, 0xc0, 42, 1, b'x']);
        f.extend_from_slice(&[18, 1, b'l', 1, 2, 3, b'z', b'z', b'z']);
        f.extend_from_slice(&[OP_SELECTDB, 2]);
        // key "aaaaaaaa" as LZF: literal "a", back-reference of 7
        f.extend_from_slice(&[0, 0xc3, 4, 8, 0, b'a', 0xa0, 0, 1, b'v']);
        f.push(OP_EOF);
        let crc = crc64(0, &f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    fn read(data: &[u8], step: usize) -> std::result::Result<(Vec<Event>, Totals), String> {
        let mut p = RdbKeys::new();
        let mut evs = Vec::new();
        for ch in data.chunks(step) {
            p.feed(ch)?;
            while let Some(e) = p.next_event()? {
                evs.push(e);
            }
        }
        p.end();
        while let Some(e) = p.next_event()? {
            evs.push(e);
        }
        Ok((evs, p.finish()?))
    }

    #[test]
    fn keys_and_payloads_in_any_chunking() {
        let f = sample();
        for step in [1, 2, 3, 5, 64, f.len()] {
            let (evs, t) = read(&f, step).unwrap();
            assert_eq!(t.keys, 4, "step {step}");
            assert_eq!(evs.len(), 6);
            let Event::Key {
                key,
                expire_at,
                payload,
            } = &evs[2]
            else {
                panic!("key")
            };
            assert_eq!(
                (key.as_slice(), *expire_at),
                (&b"42"[..], 1_800_000_000_000)
            );
            // type, value, version 10 LE, CRC
            assert_eq!(&payload[..5], &[0, 1, b'x', 10, 0]);
            assert_eq!(
                crc64(0, &payload[..5]),
                u64::from_le_bytes(payload[5..].try_into().unwrap())
            );
            assert!(matches!(&evs[5], Event::Key { key, .. } if key == b"aaaaaaaa"));
            assert_eq!(
                t.keyspace
                    .iter()
                    .map(|d| (d.db, d.keys, d.expires))
                    .collect::<Vec<_>>(),
                vec![(0, 3, 1), (2, 1, 0)]
            );
        }
    }

    /// A real Redis 7.0 RDB (the fuzz seed): every type's framing, an
    /// int-encoded and an LZF key, a stream with a consumer group.
    #[test]
    fn a_real_rdb_is_read_key_by_key() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/rdb/seed-types-v10"
        );
        let seed = std::fs::read(path).expect("the committed seed");
        let (evs, t) = read(&seed[1..], 7).unwrap();
        assert_eq!(t.keys, 9);
        let keys: Vec<&[u8]> = evs
            .iter()
            .filter_map(|e| match e {
                Event::Key { key, .. } => Some(key.as_slice()),
                _ => None,
            })
            .collect();
        assert!(keys.contains(&&b"12345"[..]) && keys.contains(&&b"ev"[..]));
        assert!(keys.iter().any(|k| k.starts_with(b"long:")));
    }

    #[test]
    fn cut_or_damaged_streams_are_refused() {
        let f = sample();
        for cut in 0..f.len() {
            assert!(read(&f[..cut], 4).is_err(), "cut at {cut}");
        }
        let mut d = f.clone();
        let n = d.len();
        d[n - 12] ^= 1;
        assert!(read(&d, 7).is_err());
        let mut m = f[..9].to_vec();
        m.extend_from_slice(&[OP_SELECTDB, 0, 7, 1, b'k']);
        assert!(read(&m, 64).unwrap_err().contains("module"));
        // absurd lengths are a cut-short stream, not an overflow
        for t in [4u8, 15, 21] {
            let mut h = f[..9].to_vec();
            h.extend_from_slice(&[OP_SELECTDB, 0, t, 1, b'k', 0x81]);
            h.extend_from_slice(&[0xff; 8]);
            assert!(read(&h, 3).is_err());
        }
    }
}

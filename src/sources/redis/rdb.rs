//! Checks an RDB file as it streams past, without holding it: the
//! `REDIS` magic and 4-digit version at the start, the EOF opcode and the
//! trailing CRC-64 at the end.
//!
//! Redis appends a CRC-64 (the "Jones" variant: reflected, polynomial
//! 0xad93d23594c935a9, initial value 0, no final xor) of every byte before
//! it, little-endian, from RDB version 5 on. A server with
//! `rdbchecksum no` writes zero there, which means "not computed": such a
//! file is accepted on its magic and EOF opcode alone, as Redis itself
//! does when loading it.

/// The RDB "end of file" opcode, just before the checksum.
const OPCODE_EOF: u8 = 0xff;
/// `REDIS` plus four version digits.
const HEADER_LEN: usize = 9;
const CRC_LEN: usize = 8;

/// The reflected form of the Jones polynomial 0xad93d23594c935a9.
const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

const fn make_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Tables for slicing-by-8: `T[k][i]` is the CRC of byte `i` followed by
/// `k` zero bytes.
const fn make_tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    t[0] = make_table();
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

static TABLES: [[u64; 256]; 8] = make_tables();

/// Continues a CRC-64/Jones over `data` (start from 0). Eight bytes per
/// step (slicing-by-8): a snapshot's every byte passes here, and the
/// byte-at-a-time loop cost more CPU than zstd level 1 on the same data.
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    let t = &TABLES;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let x = crc ^ u64::from_le_bytes(w.try_into().expect("8 bytes"));
        crc = t[7][(x & 0xff) as usize]
            ^ t[6][((x >> 8) & 0xff) as usize]
            ^ t[5][((x >> 16) & 0xff) as usize]
            ^ t[4][((x >> 24) & 0xff) as usize]
            ^ t[3][((x >> 32) & 0xff) as usize]
            ^ t[2][((x >> 40) & 0xff) as usize]
            ^ t[1][((x >> 48) & 0xff) as usize]
            ^ t[0][(x >> 56) as usize];
    }
    for &b in words.remainder() {
        crc = t[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Streaming RDB checker: [`RdbCheck::feed`] every byte in order, then
/// [`RdbCheck::finish`].
#[derive(Debug, Default)]
pub struct RdbCheck {
    header: Vec<u8>,
    version: Option<u32>,
    crc: u64,
    /// The last (up to) 8 bytes seen: the checksum once the stream ends,
    /// so they are held back from the CRC.
    held: Vec<u8>,
    /// The last byte that went into the CRC (the EOF opcode at the end).
    last_summed: Option<u8>,
    total: u64,
}

impl RdbCheck {
    pub fn new() -> RdbCheck {
        RdbCheck::default()
    }

    /// The RDB version, once the header was seen.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Takes the next bytes; fails as soon as the header is wrong.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.total += data.len() as u64;
        if self.version.is_none() {
            let want = HEADER_LEN - self.header.len();
            self.header.extend_from_slice(&data[..want.min(data.len())]);
            if self.header.len() == HEADER_LEN {
                self.version = Some(parse_header(&self.header)?);
            } else if !b"REDIS".starts_with(&self.header[..self.header.len().min(5)]) {
                return Err(bad_magic(&self.header));
            }
        }
        if data.len() >= CRC_LEN {
            let cut = data.len() - CRC_LEN;
            let held = std::mem::take(&mut self.held);
            self.sum(&held);
            self.sum(&data[..cut]);
            self.held.extend_from_slice(&data[cut..]);
        } else {
            self.held.extend_from_slice(data);
            let cut = self.held.len().saturating_sub(CRC_LEN);
            let summed: Vec<u8> = self.held.drain(..cut).collect();
            self.sum(&summed);
        }
        Ok(())
    }

    fn sum(&mut self, data: &[u8]) {
        if let Some(&b) = data.last() {
            self.crc = crc64(self.crc, data);
            self.last_summed = Some(b);
        }
    }

    /// Checks the end of the stream: the EOF opcode and, from version 5
    /// on, the checksum unless the server wrote none (zero).
    pub fn finish(&self) -> Result<u32, String> {
        let version = match self.version {
            Some(v) => v,
            None if self.header.is_empty() => return Err("the RDB stream is empty".into()),
            None => return Err(format!("the RDB stream ends after {} bytes", self.total)),
        };
        let min = HEADER_LEN + 1 + if version >= 5 { CRC_LEN } else { 0 };
        if (self.total as usize) < min {
            return Err(format!(
                "the RDB stream is truncated: {} bytes, a version {version} file has at least {min}",
                self.total
            ));
        }
        if version < 5 {
            // No checksum: the held bytes end the data; the last must be EOF.
            if self.held.last() != Some(&OPCODE_EOF) {
                return Err("the RDB stream does not end with the EOF opcode (truncated?)".into());
            }
            return Ok(version);
        }
        if self.last_summed != Some(OPCODE_EOF) {
            return Err("the RDB stream has no EOF opcode before its checksum (truncated?)".into());
        }
        let stored = u64::from_le_bytes(self.held[..].try_into().expect("8 held bytes"));
        if stored != 0 && stored != self.crc {
            return Err(format!(
                "RDB checksum mismatch: the file says {stored:016x}, its content gives {:016x}",
                self.crc
            ));
        }
        Ok(version)
    }
}

fn bad_magic(head: &[u8]) -> String {
    format!(
        "not an RDB file: it starts with {:?}, not \"REDIS\"",
        String::from_utf8_lossy(head)
    )
}

fn parse_header(h: &[u8]) -> Result<u32, String> {
    if &h[..5] != b"REDIS" {
        return Err(bad_magic(h));
    }
    let digits = &h[5..HEADER_LEN];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "not an RDB file: version {:?} is not four digits",
            String::from_utf8_lossy(digits)
        ));
    }
    Ok(std::str::from_utf8(digits)
        .expect("ascii")
        .parse()
        .expect("digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_known_vector() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        // Incremental use gives the same value.
        assert_eq!(crc64(crc64(0, b"1234"), b"56789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn crc64_sliced_equals_bytewise() {
        let table = make_table();
        let bytewise = |mut crc: u64, data: &[u8]| {
            for &b in data {
                crc = table[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
            }
            crc
        };
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..4099)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1000, 4099] {
            assert_eq!(
                crc64(0, &data[..len]),
                bytewise(0, &data[..len]),
                "len {len}"
            );
            // split anywhere, incremental
            let cut = len / 3;
            assert_eq!(
                crc64(crc64(0, &data[..cut]), &data[cut..len]),
                bytewise(0, &data[..len]),
                "len {len} cut {cut}"
            );
        }
    }

    /// A minimal valid RDB: header, one aux field, EOF, checksum.
    fn rdb(version: &str) -> Vec<u8> {
        let mut v = format!("REDIS{version}").into_bytes();
        // AUX "redis-ver" "7.0.15" with 6-bit lengths.
        v.push(0xfa);
        v.push(9);
        v.extend_from_slice(b"redis-ver");
        v.push(6);
        v.extend_from_slice(b"7.0.15");
        // SELECTDB 0, one string key "k" = "v".
        v.extend_from_slice(&[0xfe, 0, 0, 1, b'k', 1, b'v']);
        v.push(OPCODE_EOF);
        let crc = crc64(0, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn check_in_chunks(data: &[u8], chunk: usize) -> Result<u32, String> {
        let mut c = RdbCheck::new();
        for part in data.chunks(chunk) {
            c.feed(part)?;
        }
        c.finish()
    }

    #[test]
    fn valid_file_passes_in_any_chunking() {
        let data = rdb("0010");
        for chunk in [1, 2, 3, 7, 8, 9, 10, 64] {
            assert_eq!(check_in_chunks(&data, chunk), Ok(10), "chunk {chunk}");
        }
    }

    #[test]
    fn flipped_byte_is_rejected() {
        let data = rdb("0010");
        for at in 9..data.len() {
            let mut d = data.clone();
            d[at] ^= 0x20;
            let e = check_in_chunks(&d, 5).unwrap_err();
            assert!(
                e.contains("checksum") || e.contains("EOF opcode"),
                "{at}: {e}"
            );
        }
    }

    #[test]
    fn truncated_file_is_rejected() {
        let data = rdb("0010");
        for len in 0..data.len() {
            assert!(check_in_chunks(&data[..len], 4).is_err(), "len {len}");
        }
    }

    #[test]
    fn bad_header_fails_early() {
        let mut c = RdbCheck::new();
        assert!(c.feed(b"HELLO").unwrap_err().contains("not an RDB file"));
        let mut c = RdbCheck::new();
        assert!(
            c.feed(b"REDIS00x9....")
                .unwrap_err()
                .contains("four digits")
        );
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut data = rdb("0010");
        let n = data.len();
        data[n - 8..].fill(0);
        assert_eq!(check_in_chunks(&data, 3), Ok(10));
    }
}

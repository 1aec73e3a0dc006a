//! PostgreSQL write-ahead log: file names, timelines, LSNs and the long
//! page header that opens every segment; [`archive`] stores and fetches
//! WAL files in the repository (`strata wal push` / `wal fetch`).
//!
//! Names follow PostgreSQL (`src/include/access/xlog_internal.h`):
//!
//! ```text
//! 000000010000000A000000FF           segment: timeline, log, seg (8 hex each)
//! 000000010000000A000000FF.partial   the last, unfinished segment of a timeline
//! 000000010000000A000000FF.00000028.backup   backup history file
//! 00000002.history                   timeline history file
//! ```
//!
//! A segment's number is `log * (2^32 / segment size) + seg`, so turning a
//! name into an LSN (or finding the next name) needs the segment size;
//! parsing a name does not.

pub mod archive;
pub mod continuity;
pub mod prefetch;
pub mod push_async;
pub mod pusher;
pub mod spool;

use std::fmt;
use std::str::FromStr;

/// Default WAL segment size (`initdb --wal-segsize` changes it).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A timeline id (`00000001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl FromStr for Timeline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = hex8(s).ok_or_else(|| format!("{s:?} is not a timeline (8 hex digits)"))?;
        if v == 0 {
            return Err("timeline 0 does not exist".into());
        }
        Ok(Timeline(v))
    }
}

/// A WAL location, written `X/Y` (high and low 32 bits in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an LSN (like 16/B374D848)");
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                u32::from_str_radix(p, 16).ok()
            }
        };
        let (hi, lo) = (part(hi).ok_or_else(bad)?, part(lo).ok_or_else(bad)?);
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A valid WAL segment size: a power of two from 1 MiB to 1 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(u64);

impl SegmentSize {
    pub const DEFAULT: SegmentSize = SegmentSize(DEFAULT_SEGMENT_SIZE);

    pub fn new(bytes: u64) -> Option<SegmentSize> {
        (bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes))
            .then_some(SegmentSize(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per 4 GiB "log" (the middle field of a segment name).
    fn per_log(self) -> u64 {
        0x1_0000_0000 / self.0
    }
}

/// A segment file name: timeline and position (`log`, `seg`) as written.
/// Ordered like the names (timeline, then position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub timeline: Timeline,
    pub log: u32,
    pub seg: u32,
}

impl SegmentName {
    /// The segment with number `segno` (counted from LSN 0).
    pub fn from_segno(timeline: Timeline, segno: u64, size: SegmentSize) -> SegmentName {
        SegmentName {
            timeline,
            log: (segno / size.per_log()) as u32,
            seg: (segno % size.per_log()) as u32,
        }
    }

    /// The segment holding `lsn`.
    pub fn containing(timeline: Timeline, lsn: Lsn, size: SegmentSize) -> SegmentName {
        Self::from_segno(timeline, lsn.0 / size.bytes(), size)
    }

    /// Whether the name is possible with this segment size (`seg` in range).
    pub fn fits(self, size: SegmentSize) -> bool {
        u64::from(self.seg) < size.per_log()
    }

    pub fn segno(self, size: SegmentSize) -> u64 {
        u64::from(self.log) * size.per_log() + u64::from(self.seg)
    }

    /// LSN of the segment's first byte.
    pub fn start_lsn(self, size: SegmentSize) -> Lsn {
        Lsn(self.segno(size) * size.bytes())
    }

    /// The following segment on the same timeline.
    pub fn next(self, size: SegmentSize) -> SegmentName {
        Self::from_segno(self.timeline, self.segno(size) + 1, size)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

impl FromStr for SegmentName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a WAL segment name (24 upper-case hex digits)");
        // ASCII first: slicing at byte 8 or 16 inside a multi-byte
        // character panicked (found by fuzzing, issue 13)
        if s.len() != 24 || !s.is_ascii() {
            return Err(bad());
        }
        let timeline: Timeline = s[..8].parse().map_err(|_| bad())?;
        let log = hex8(&s[8..16]).ok_or_else(bad)?;
        let seg = hex8(&s[16..]).ok_or_else(bad)?;
        Ok(SegmentName { timeline, log, seg })
    }
}

/// Any file PostgreSQL hands to `archive_command` or asks `restore_command`
/// for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    Segment(SegmentName),
    /// The unfinished last segment of a timeline, archived at promotion.
    /// Never a substitute for the complete segment.
    Partial(SegmentName),
    /// `<backup start segment>.<offset>.backup`: a backup's start/stop record.
    BackupHistory {
        segment: SegmentName,
        offset: u32,
    },
    /// `<timeline>.history`: how a timeline branched off its parent.
    History(Timeline),
}

impl WalFile {
    /// The segment whose bytes this file holds (segments and partials:
    /// files that start with a long page header).
    pub fn segment_data(self) -> Option<SegmentName> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => Some(s),
            _ => None,
        }
    }

    pub fn timeline(self) -> Timeline {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => s.timeline,
            WalFile::BackupHistory { segment, .. } => segment.timeline,
            WalFile::History(t) => t,
        }
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFile::Segment(s) => write!(f, "{s}"),
            WalFile::Partial(s) => write!(f, "{s}.partial"),
            WalFile::BackupHistory { segment, offset } => {
                write!(f, "{segment}.{offset:08X}.backup")
            }
            WalFile::History(t) => write!(f, "{t}.history"),
        }
    }
}

impl FromStr for WalFile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a WAL file name (a 24-hex-digit segment, SEGMENT.partial, \
                 SEGMENT.XXXXXXXX.backup or TIMELINE.history)"
            )
        };
        if let Some(t) = s.strip_suffix(".history") {
            return t.parse().map(WalFile::History).map_err(|_| bad());
        }
        if let Some(seg) = s.strip_suffix(".partial") {
            return seg.parse().map(WalFile::Partial).map_err(|_| bad());
        }
        if let Some(rest) = s.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.').ok_or_else(bad)?;
            return Ok(WalFile::BackupHistory {
                segment: seg.parse().map_err(|_| bad())?,
                offset: hex8(off).ok_or_else(bad)?,
            });
        }
        s.parse().map(WalFile::Segment).map_err(|_| bad())
    }
}

/// `XLP_LONG_HEADER`: the page starts with a long header (first page of a
/// segment).
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of `XLogLongPageHeaderData` (with alignment) that we read.
pub const LONG_HEADER_LEN: usize = 40;

/// The long page header at the start of every segment
/// (`XLogLongPageHeaderData`, little-endian on every platform PostgreSQL
/// archives from in practice):
///
/// ```text
/// 0  u16 xlp_magic     2  u16 xlp_info     4  u32 xlp_tli
/// 8  u64 xlp_pageaddr  16 u32 xlp_rem_len  (padding to 24)
/// 24 u64 xlp_sysid     32 u32 xlp_seg_size 36 u32 xlp_xlog_blcksz
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// WAL format magic; changes with every major version.
    pub magic: u16,
    pub timeline: Timeline,
    pub page_addr: Lsn,
    pub system_identifier: u64,
    pub segment_size: SegmentSize,
    pub block_size: u32,
}

impl LongPageHeader {
    pub fn parse(page: &[u8]) -> Result<LongPageHeader, String> {
        if page.len() < LONG_HEADER_LEN {
            return Err(format!(
                "{} bytes is too short for a WAL segment header",
                page.len()
            ));
        }
        let u16_at = |o: usize| u16::from_le_bytes(page[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(page[o..o + 8].try_into().unwrap());
        if u16_at(2) & XLP_LONG_HEADER == 0 {
            return Err("the first page has no long header: not the start of a WAL segment".into());
        }
        let seg_size = u32_at(32);
        let segment_size = SegmentSize::new(u64::from(seg_size))
            .ok_or_else(|| format!("header names an impossible segment size {seg_size}"))?;
        let block_size = u32_at(36);
        if !block_size.is_power_of_two() || !(1024..=32768).contains(&block_size) {
            return Err(format!(
                "header names an impossible block size {block_size}"
            ));
        }
        Ok(LongPageHeader {
            magic: u16_at(0),
            timeline: Timeline(u32_at(4)),
            page_addr: Lsn(u64_at(8)),
            system_identifier: u64_at(24),
            segment_size,
            block_size,
        })
    }

    /// Checks the header against the name it is archived or fetched as:
    /// the first page's address is the segment's start.
    pub fn check_name(&self, name: SegmentName) -> Result<(), String> {
        let size = self.segment_size;
        if !name.fits(size) || name.start_lsn(size) != self.page_addr {
            return Err(format!(
                "its first page is at {} (segment {} with {} MiB segments), not at the start of {name}",
                self.page_addr,
                SegmentName::containing(name.timeline, self.page_addr, size),
                size.bytes() >> 20
            ));
        }
        Ok(())
    }
}

/// Parses exactly 8 upper-case hex digits (PostgreSQL writes `%08X`).
fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S16: SegmentSize = SegmentSize::DEFAULT;

    fn seg(s: &str) -> SegmentName {
        s.parse().unwrap()
    }

    /// issue 13 (fuzzing, fuzz/corpus/wal_name/crash-non-ascii): a
    /// 24-byte name with a multi-byte character across byte 8 panicked
    /// (`byte index 8 is not a char boundary`) instead of being refused.
    #[test]
    fn non_ascii_names_are_refused() {
        let crash = "EEEźEEźEEE\0\0\0\0\0\0E16/\u{4}3";
        assert_eq!(crash.len(), 24);
        for name in [
            crash,
            "0000000é000000000000000",
            "000000010000000é0000000",
            "00000001000000000000000é",
        ] {
            assert!(name.parse::<SegmentName>().is_err(), "{name:?}");
            assert!(name.parse::<WalFile>().is_err(), "{name:?}");
            assert!(format!("{name}.partial").parse::<WalFile>().is_err());
            assert!(
                format!("{name}.00000028.backup")
                    .parse::<WalFile>()
                    .is_err()
            );
        }
    }

    #[test]
    fn lsn_parse_format() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l, Lsn(0x16_B374_D848));
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!("0/3000028".parse::<Lsn>().unwrap(), Lsn(0x300_0028));
        assert_eq!("ffffffff/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
        for bad in ["", "16", "/1", "1/", "1/2/3", "123456789/0", "g/0", "-1/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
        assert!(Lsn(0x1_0000_0000) > Lsn(0xFFFF_FFFF));
    }

    #[test]
    fn timeline_parse_format() {
        assert_eq!("0000000A".parse::<Timeline>().unwrap(), Timeline(10));
        assert_eq!(Timeline(255).to_string(), "000000FF");
        for bad in ["00000000", "0000000a", "1", "000000001"] {
            assert!(bad.parse::<Timeline>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_names() {
        let s = seg("000000010000000A000000FF");
        assert_eq!(
            s,
            SegmentName {
                timeline: Timeline(1),
                log: 10,
                seg: 255
            }
        );
        assert_eq!(s.to_string(), "000000010000000A000000FF");
        for bad in [
            "000000010000000A000000F",
            "000000010000000a000000ff",
            "000000000000000A000000FF",
            "000000010000000A000000FFF",
            "00000001000000 A000000FF",
        ] {
            assert!(bad.parse::<SegmentName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn next_segment_and_lsn_with_16mib_segments() {
        let s = seg("000000010000000000000003");
        assert_eq!(s.start_lsn(S16), "0/3000000".parse().unwrap());
        assert_eq!(s.next(S16).to_string(), "000000010000000000000004");
        // 256 segments of 16 MiB per log: FF is followed by the next log
        let last = seg("0000000200000005000000FF");
        assert_eq!(last.next(S16).to_string(), "000000020000000600000000");
        assert_eq!(last.start_lsn(S16), "5/FF000000".parse().unwrap());
        assert_eq!(last.segno(S16), 5 * 256 + 255);
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let c = SegmentName::containing(Timeline(3), lsn, S16);
        assert_eq!(c.to_string(), "0000000300000016000000B3");
        assert!(c.start_lsn(S16) <= lsn && lsn < c.next(S16).start_lsn(S16));
        assert_eq!(
            SegmentName::from_segno(Timeline(1), c.segno(S16), S16).seg,
            0xB3
        );
        assert!(!seg("000000010000000000000100").fits(S16));
        // 1 GiB segments: four per log
        let g = SegmentSize::new(1 << 30).unwrap();
        assert_eq!(
            seg("000000010000000000000003").next(g).to_string(),
            "000000010000000100000000"
        );
        assert!(SegmentSize::new(3 << 20).is_none());
        assert!(SegmentSize::new(1 << 19).is_none());
    }

    #[test]
    fn ordering_follows_names() {
        let mut v: Vec<SegmentName> = [
            "000000020000000000000001",
            "000000010000000100000000",
            "0000000100000000000000FF",
            "000000010000000000000002",
        ]
        .iter()
        .map(|s| seg(s))
        .collect();
        v.sort();
        let names: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[0], "000000010000000000000002");
        assert_eq!(names[3], "000000020000000000000001");
    }

    #[test]
    fn wal_file_kinds() {
        let cases = [
            (
                "000000010000000000000003",
                WalFile::Segment(seg("000000010000000000000003")),
            ),
            (
                "000000010000000000000003.partial",
                WalFile::Partial(seg("000000010000000000000003")),
            ),
            (
                "000000010000000000000002.00000028.backup",
                WalFile::BackupHistory {
                    segment: seg("000000010000000000000002"),
                    offset: 0x28,
                },
            ),
            ("00000002.history", WalFile::History(Timeline(2))),
        ];
        for (name, want) in cases {
            let got: WalFile = name.parse().unwrap();
            assert_eq!(got, want, "{name}");
            assert_eq!(got.to_string(), name);
        }
        assert_eq!(
            cases[1].1.segment_data(),
            Some(seg("000000010000000000000003"))
        );
        assert_eq!(cases[3].1.segment_data(), None);
        assert_eq!(cases[2].1.timeline(), Timeline(1));
        for bad in [
            "RECOVERYXLOG",
            "00000002.History",
            "0000002.history",
            "000000010000000000000003.partial.partial",
            "000000010000000000000002.28.backup",
            "000000010000000000000002.backup",
            "000000010000000000000003.ready",
            "../000000010000000000000003",
        ] {
            assert!(bad.parse::<WalFile>().is_err(), "{bad}");
        }
    }

    /// The first 40 bytes of a segment written by PostgreSQL 15's initdb
    /// (pg_controldata: system identifier 7711319474953712687).
    const REAL_HEADER: [u8; 40] = [
        0x10, 0xd1, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2f, 0xf4, 0x2a, 0xc6, 0x34, 0x1c,
        0x04, 0x6b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x20, 0x00, 0x00,
    ];

    #[test]
    fn long_page_header() {
        let h = LongPageHeader::parse(&REAL_HEADER).unwrap();
        assert_eq!(h.system_identifier, 7711319474953712687);
        assert_eq!(h.magic, 0xD110);
        assert_eq!(h.timeline, Timeline(1));
        assert_eq!(h.page_addr, "0/1000000".parse().unwrap());
        assert_eq!(h.segment_size, S16);
        assert_eq!(h.block_size, 8192);
        h.check_name(seg("000000010000000000000001")).unwrap();
        let e = h.check_name(seg("000000010000000000000002")).unwrap_err();
        assert!(e.contains("0/1000000"), "{e}");

        assert!(LongPageHeader::parse(&REAL_HEADER[..39]).is_err());
        let mut short = REAL_HEADER;
        short[2] = 0; // a short (continuation) page header
        assert!(
            LongPageHeader::parse(&short)
                .unwrap_err()
                .contains("long header")
        );
        let mut odd = REAL_HEADER;
        odd[34] = 0x03; // segment size 0x01030000
        assert!(LongPageHeader::parse(&odd).is_err());
    }
}

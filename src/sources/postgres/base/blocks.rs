//! strata's own block-level incremental (method `blocks`), for servers
//! older than PostgreSQL 17 or without `summarize_wal`: pg_basebackup
//! reads the whole cluster as for a full backup, and this `Read` adapter,
//! between its stdout and the pipeline, rewrites the tar on the fly so that
//! only changed blocks are stored. Memory stays bounded (one chunk of at
//! most [`CHUNK_BLOCKS`] blocks, 8 MiB) whatever the size of the cluster.
//!
//! A relation file's main fork (`base/<db>/<filenode>[.<seg>]`,
//! `global/<filenode>[.<seg>]`), whose size is a multiple of the block size
//! and which the parent's basis lists, becomes `STRATA-INCR.<name>.<seq>`
//! chunk members in the same directory, holding the blocks that
//! - lie at or past the parent's length of that file, or
//! - carry a page LSN at or after the parent's start LSN, or
//! - are new (`pd_upper` = 0: never initialised, all zeroes).
//!
//! Every other block was last changed before the parent started, so the
//! parent holds it (and what a torn read or a later change would alter,
//! WAL replay from this backup's start repairs with full-page images, as
//! for any base backup). Each chunk is `u32` LE fields: magic
//! [`CHUNK_MAGIC`], version 1, the file's length in blocks
//! (truncation_block_length), the count of blocks, their numbers, then
//! their pages; chunks of a file are consecutive, numbered from 0000, and a
//! file with no changed block still gets one empty chunk (the restore
//! learns it exists and its length).
//!
//! Other forks pass whole, on purpose: the visibility map's bits are
//! cleared without a change of the VM page's LSN, and the free space map
//! is not WAL-logged, so their page LSNs do not tell what changed
//! (PostgreSQL's own incremental backup sends FSM forks whole too). They
//! are small (a VM page covers 256 MiB of heap). Every other member (other
//! files, files the parent lacks, directories, `backup_label`,
//! `backup_manifest`) passes unchanged.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use super::basis::Sizes;
use super::tar::{read_member, read_some, truncated};

/// PostgreSQL's block size; other sizes are refused before the backup.
pub const BLCKSZ: usize = 8192;
/// The most blocks one chunk member holds (8 MiB of pages).
pub const CHUNK_BLOCKS: usize = 1024;
/// First field of a chunk ("SINC" read as a little-endian u32).
pub const CHUNK_MAGIC: u32 = 0x5349_4e43;
/// Chunk format version.
pub const CHUNK_VERSION: u32 = 1;
/// Prefix of chunk member names.
pub const CHUNK_PREFIX: &str = "STRATA-INCR.";

/// What the rewriter did, for the report.
#[derive(Debug, Default, Clone)]
pub struct BlockStats {
    /// Relation files rewritten into chunks.
    pub files: u64,
    /// Their blocks, all of them.
    pub blocks_read: u64,
    /// Those stored.
    pub blocks_kept: u64,
}

/// The tar rewriter (see the module docs).
pub struct BlockFilter<R> {
    inner: R,
    parent: Sizes,
    parent_start: u64,
    /// Output not yet handed out: pieces, the first read from `pos`.
    queue: VecDeque<Vec<u8>>,
    pos: usize,
    state: State,
    /// The previous header was a GNU long name or pax extension: the next
    /// member is passed as it is (pg_basebackup writes neither).
    extended: bool,
    stats: Arc<Mutex<BlockStats>>,
}

enum State {
    Header,
    /// Copying a member's data and padding through.
    Pass(u64),
    Relation(Box<RelFile>),
    /// After the end-of-archive blocks.
    Trailer,
}

struct RelFile {
    /// Directory part of the path, with its trailing '/'.
    dir: String,
    file: String,
    header: [u8; 512],
    blocks: u32,
    next: u32,
    parent_blocks: u64,
    seq: u32,
    nums: Vec<u32>,
    pages: Vec<u8>,
    page: Vec<u8>,
}

impl<R: Read> BlockFilter<R> {
    /// Rewrites `inner` against the parent's basis (`parent`) and start
    /// LSN; `stats` receives the counts.
    pub fn new(
        inner: R,
        parent: Sizes,
        parent_start: u64,
        stats: Arc<Mutex<BlockStats>>,
    ) -> BlockFilter<R> {
        BlockFilter {
            inner,
            parent,
            parent_start,
            queue: VecDeque::new(),
            pos: 0,
            state: State::Header,
            extended: false,
            stats,
        }
    }

    fn header(&mut self, h: [u8; 512]) -> io::Result<()> {
        if h.iter().all(|b| *b == 0) {
            self.queue.push_back(h.to_vec());
            self.state = State::Trailer;
            return Ok(());
        }
        let size = super::tar::tar_number(&h[124..136]);
        let kind = h[156];
        let extended = std::mem::replace(&mut self.extended, matches!(kind, b'L' | b'x' | b'g'));
        let name = super::tar::member_name(&h);
        let parent_size = (!extended && matches!(kind, b'0' | 0))
            .then(|| is_main_fork(&name))
            .filter(|m| *m && size > 0 && size.is_multiple_of(BLCKSZ as u64))
            .and_then(|_| self.parent.get(&name));
        let (Some(parent_size), Ok(blocks)) = (parent_size, u32::try_from(size / BLCKSZ as u64))
        else {
            let padded = super::tar::padded_size(&name, size)?;
            self.queue.push_back(h.to_vec());
            self.state = State::Pass(padded);
            return Ok(());
        };
        let (dir, file) = match name.rfind('/') {
            Some(i) => (name[..=i].to_string(), name[i + 1..].to_string()),
            None => (String::new(), name.clone()),
        };
        self.stats.lock().unwrap().files += 1;
        self.state = State::Relation(Box::new(RelFile {
            dir,
            file,
            header: h,
            blocks,
            next: 0,
            parent_blocks: parent_size / BLCKSZ as u64,
            seq: 0,
            nums: Vec::new(),
            pages: Vec::new(),
            page: vec![0; BLCKSZ],
        }));
        Ok(())
    }

    /// Emits the chunk of `rel`'s collected blocks.
    fn emit(queue: &mut VecDeque<Vec<u8>>, rel: &mut RelFile) -> io::Result<()> {
        let name = format!("{}{CHUNK_PREFIX}{}.{:04}", rel.dir, rel.file, rel.seq);
        rel.seq += 1;
        let n = rel.nums.len();
        let size = 16 + 4 * n + n * BLCKSZ;
        let mut head = Vec::with_capacity(512 + 16 + 4 * n);
        head.extend_from_slice(&chunk_header(&rel.header, &name, size as u64)?);
        for v in [CHUNK_MAGIC, CHUNK_VERSION, rel.blocks, n as u32] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        for b in rel.nums.drain(..) {
            head.extend_from_slice(&b.to_le_bytes());
        }
        queue.push_back(head);
        queue.push_back(std::mem::take(&mut rel.pages));
        let pad = (512 - size % 512) % 512;
        if pad > 0 {
            queue.push_back(vec![0; pad]);
        }
        Ok(())
    }

    /// Reads one block of the relation file; false once its end is reached
    /// (and its last chunk emitted).
    fn relation_step(&mut self) -> io::Result<()> {
        let State::Relation(rel) = &mut self.state else {
            unreachable!("called in the relation state");
        };
        if rel.next == rel.blocks {
            if !rel.nums.is_empty() || rel.seq == 0 {
                Self::emit(&mut self.queue, rel)?;
            }
            self.state = State::Header;
            return Ok(());
        }
        read_full(&mut self.inner, &mut rel.page)?;
        let b = rel.next;
        rel.next += 1;
        let lsn = (u64::from(u32::from_le_bytes(rel.page[0..4].try_into().unwrap())) << 32)
            | u64::from(u32::from_le_bytes(rel.page[4..8].try_into().unwrap()));
        let new = rel.page[14] == 0 && rel.page[15] == 0;
        let changed = u64::from(b) >= rel.parent_blocks || new || lsn >= self.parent_start;
        let mut st = self.stats.lock().unwrap();
        st.blocks_read += 1;
        if changed {
            st.blocks_kept += 1;
            rel.nums.push(b);
            if rel.pages.capacity() == 0 {
                rel.pages.reserve_exact(CHUNK_BLOCKS * BLCKSZ);
            }
            rel.pages.extend_from_slice(&rel.page);
            if rel.nums.len() == CHUNK_BLOCKS {
                Self::emit(&mut self.queue, rel)?;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for BlockFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(front) = self.queue.front() {
                let n = (front.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&front[self.pos..self.pos + n]);
                self.pos += n;
                if self.pos == front.len() {
                    self.queue.pop_front();
                    self.pos = 0;
                }
                if n > 0 {
                    return Ok(n);
                }
                continue;
            }
            match &mut self.state {
                State::Trailer => return self.inner.read(buf),
                State::Pass(0) => self.state = State::Header,
                State::Pass(left) => return read_member(&mut self.inner, buf, left),
                State::Header => {
                    let mut h = [0u8; 512];
                    let got = read_some(&mut self.inner, &mut h)?;
                    if got == 0 {
                        return Ok(0); // a tar without end-of-archive blocks
                    }
                    if got < 512 {
                        return Err(truncated());
                    }
                    self.header(h)?;
                }
                State::Relation(_) => self.relation_step()?,
            }
        }
    }
}

/// Whether a member is a relation file's main fork: `base/<oid>/<node>`
/// or `global/<node>`, with an optional `.<segment>`.
fn is_main_fork(path: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let file = match path.split('/').collect::<Vec<_>>()[..] {
        ["base", db, file] if digits(db) => file,
        ["global", file] => file,
        _ => return false,
    };
    match file.split_once('.') {
        Some((node, seg)) => digits(node) && digits(seg),
        None => digits(file),
    }
}

/// The header of a chunk member: the relation file's (mode, owner, time),
/// renamed and resized, its checksum recomputed.
fn chunk_header(orig: &[u8; 512], name: &str, size: u64) -> io::Result<[u8; 512]> {
    if name.len() >= 100 {
        return Err(io::Error::other(format!(
            "tar member name {name} is too long for a ustar header"
        )));
    }
    let mut h = *orig;
    h[..100].fill(0);
    h[..name.len()].copy_from_slice(name.as_bytes());
    if &h[257..262] == b"ustar" {
        h[345..500].fill(0);
    }
    h[156] = b'0';
    let size = format!("{size:011o}\0");
    h[124..136].copy_from_slice(size.as_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    if read_some(r, buf)? < buf.len() {
        return Err(truncated());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page with LSN `lsn`, initialised (pd_upper set) unless `lsn` is 0
    /// and `fill` is 0, filled with `fill`.
    fn page(lsn: u64, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; BLCKSZ];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        if fill != 0 {
            p[14..16].copy_from_slice(&8000u16.to_le_bytes());
        }
        p
    }

    fn tar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn filter(input: &[u8], parent: Sizes, start: u64) -> (Vec<u8>, BlockStats) {
        let stats = Arc::new(Mutex::new(BlockStats::default()));
        let mut f = BlockFilter::new(input, parent, start, stats.clone());
        // odd-sized reads cross every boundary
        let mut out = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let s = stats.lock().unwrap().clone();
        (out, s)
    }

    /// Members as (name, data), read back with the tar crate.
    fn members(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                (name, d)
            })
            .collect()
    }

    /// Decodes a chunk: (truncation length, block numbers, pages).
    fn chunk(d: &[u8]) -> (u32, Vec<u32>, Vec<u8>) {
        let u = |i: usize| u32::from_le_bytes(d[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!((u(0), u(1)), (CHUNK_MAGIC, CHUNK_VERSION));
        let n = u(3) as usize;
        let nums = (0..n).map(|i| u(4 + i)).collect();
        let pages = d[16 + 4 * n..].to_vec();
        assert_eq!(pages.len(), n * BLCKSZ);
        (u(2), nums, pages)
    }

    const START: u64 = 0x1_0000_0100;

    #[test]
    fn only_changed_new_and_appended_blocks_are_kept() {
        // blocks: 0 old, 1 changed (LSN = start), 2 old, 3 never
        // initialised, 4 past the parent's length (old LSN)
        let rel: Vec<u8> = [
            page(0x100, 1),
            page(START, 2),
            page(START - 1, 3),
            page(0, 0),
            page(5, 4),
        ]
        .concat();
        let input = tar_of(&[
            ("backup_label", b"START WAL LOCATION: 1/100\n".to_vec()),
            ("base/5/16384", rel.clone()),
            ("base/5/16384_vm", page(0x100, 7)),
            ("base/5/16385", page(0x100, 8)), // not in the parent: whole
            ("global/1262", page(0x100, 9)),
            ("global/pg_control", vec![1; 8192]),
            ("backup_manifest", b"{}".to_vec()),
        ]);
        let parent = Sizes::of(&[
            ("base/5/16384", 4 * 8192),
            ("base/5/16384_vm", 8192),
            ("global/1262", 8192),
            ("global/pg_control", 8192),
        ]);
        let (out, stats) = filter(&input, parent, START);
        let got = members(&out);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "backup_label",
                "base/5/STRATA-INCR.16384.0000",
                "base/5/16384_vm",
                "base/5/16385",
                "global/STRATA-INCR.1262.0000",
                "global/pg_control",
                "backup_manifest"
            ]
        );
        let (trunc, nums, pages) = chunk(&got[1].1);
        assert_eq!((trunc, nums), (5, vec![1, 3, 4]));
        assert_eq!(pages, [page(START, 2), page(0, 0), page(5, 4)].concat());
        assert_eq!(got[2].1, page(0x100, 7), "other forks pass whole");
        assert_eq!(got[3].1, page(0x100, 8));
        // no block changed: one empty chunk says the file is there, 1 block long
        let (trunc, nums, pages) = chunk(&got[4].1);
        assert_eq!((trunc, nums.len(), pages.len()), (1, 0, 0));
        assert_eq!(
            (stats.files, stats.blocks_read, stats.blocks_kept),
            (2, 6, 3)
        );
        // the members keep the original's mode and time
        let mut a = tar::Archive::new(&out[..]);
        for e in a.entries().unwrap() {
            let h = e.unwrap().header().clone();
            assert_eq!(
                (h.mode().unwrap(), h.mtime().unwrap()),
                (0o600, 1_700_000_000)
            );
        }
    }

    #[test]
    fn big_files_come_in_consecutive_chunks_of_at_most_1024_blocks() {
        let n = CHUNK_BLOCKS * 2 + 5;
        let mut rel = Vec::with_capacity(n * BLCKSZ);
        for b in 0..n {
            // every other block changed
            rel.extend_from_slice(&page(if b % 2 == 0 { START + 1 } else { 1 }, 1));
        }
        let input = tar_of(&[("base/1/1259.1", rel)]);
        let (out, _) = filter(
            &input,
            Sizes::of(&[("base/1/1259.1", n as u64 * 8192)]),
            START,
        );
        let got = members(&out);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "base/1/STRATA-INCR.1259.1.0000");
        assert_eq!(got[1].0, "base/1/STRATA-INCR.1259.1.0001");
        let (_, first, _) = chunk(&got[0].1);
        let (trunc, second, _) = chunk(&got[1].1);
        assert_eq!(first.len(), CHUNK_BLOCKS);
        assert_eq!(trunc as usize, n);
        assert_eq!(first.len() + second.len(), n.div_ceil(2));
        assert_eq!(*second.last().unwrap() as usize, n - 1);
    }

    #[test]
    fn relation_paths() {
        for p in ["base/1/1259", "base/16384/16385.12", "global/1262"] {
            assert!(is_main_fork(p), "{p}");
        }
        for p in [
            "base/1/1259_vm",
            "base/1/1259_fsm.1",
            "base/1/1259_init",
            "base/1/PG_VERSION",
            "global/pg_control",
            "base/x/1259",
            "pg_tblspc/1/1259",
            "base/1/t3_1234",
            "base/1/1259.",
        ] {
            assert!(!is_main_fork(p), "{p}");
        }
    }

    #[test]
    fn a_member_size_past_u64_is_an_error() {
        // found by thinking like the fuzzer: size + padding overflowed
        let mut input = tar_of(&[("x", vec![1; 10])]);
        input[124..136].copy_from_slice(&[0xff; 12]);
        let mut h = [0u8; 512];
        h.copy_from_slice(&input[..512]);
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        input[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let stats = Arc::new(Mutex::new(BlockStats::default()));
        let mut f = BlockFilter::new(&input[..], Sizes::default(), START, stats);
        let e = f.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let input = tar_of(&[("base/5/1", page(START, 1))]);
        let stats = Arc::new(Mutex::new(BlockStats::default()));
        let mut f = BlockFilter::new(
            &input[..512 + 100],
            Sizes::of(&[("base/5/1", 8192)]),
            START,
            stats,
        );
        let mut out = Vec::new();
        let e = f.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}

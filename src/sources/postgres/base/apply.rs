//! Applying an incremental base backup's tar onto a data directory that
//! holds the prior state of its chain (the full backup unpacked, then each
//! earlier incremental applied), as the tar streams past: no backup of the
//! chain is ever staged on disk, and the directory needs about the
//! cluster's size (issue 18 item 2; docs/design.md "Incremental base
//! backups").
//!
//! Members:
//! - `INCREMENTAL.<name>` (PostgreSQL 17+, `pg_basebackup --incremental`):
//!   u32 LE magic 0xd3ae1f0d, block count n, truncation block length,
//!   n block numbers, then — only when n > 0 — zero padding up to a
//!   multiple of BLCKSZ (as `GetIncrementalHeaderSize` in
//!   basebackup_incremental.c writes it and pg_combinebackup's
//!   reconstruct.c reads it), then n blocks.
//! - `STRATA-INCR.<name>.<seq>` (strata's own, `blocks` method): u32 LE
//!   magic 0x53494e43, version 1, truncation block length, n, n block
//!   numbers, n blocks (no padding). The chunks of one file come in order,
//!   consecutively, from seq 0; a file with no changed block has one
//!   chunk of zero blocks.
//!
//! Both patch `<name>` in place: listed blocks are written at their
//! offset, blocks below the truncation length that are not listed keep
//! the prior state's, and the file is cut (or zero-extended) to
//! max(truncation length, highest listed block + 1) blocks. Every other
//! regular member replaces its file. Whatever the directory holds that
//! the tar does not name (by real name) is removed afterwards: a dropped
//! table, a dropped database. `backup_label` is the newest backup's, with
//! its `INCREMENTAL FROM LSN:` and `INCREMENTAL FROM TLI:` lines removed
//! (PostgreSQL refuses to start from an incremental backup's label, which
//! only pg_combinebackup may consume).
//!
//! Memory: one copy buffer, the block numbers of one member (at most
//! 4 bytes per block of a 1 GiB segment) and the set of the tar's paths.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sources::postgres::delta::{
    AlignedBuf, Member, for_each_member, read_full, remove_unlisted, set_direct,
};

/// PostgreSQL's block size; a cluster built with another is refused.
pub const BLCKSZ: u64 = 8192;
/// PostgreSQL's `INCREMENTAL_MAGIC`.
pub const PG_MAGIC: u32 = 0xd3ae_1f0d;
/// strata's chunk magic ("SINC").
pub const STRATA_MAGIC: u32 = 0x5349_4e43;
/// The version of strata's chunk format.
pub const STRATA_VERSION: u32 = 1;
/// Name prefixes of the two member formats.
pub const PG_PREFIX: &str = "INCREMENTAL.";
pub const STRATA_PREFIX: &str = "STRATA-INCR.";
/// Blocks of a 1 GiB segment: no member lists more.
const MAX_BLOCKS: u32 = 131_072;
/// Consecutive blocks copied per write.
pub(super) const RUN: usize = 128;

/// What one backup of a chain wrote: applied in turn (`--delta`), or
/// newest first ([`super::combine`]).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ApplyStats {
    /// Regular files written whole (new, or changed and not relation
    /// files; newest first: only the newest backup's).
    pub files_written: u64,
    /// Relation files patched block by block (newest first: the files it
    /// supplied blocks to).
    pub files_patched: u64,
    /// Blocks written into patched files.
    pub blocks_written: u64,
    /// Applied in turn: files and directories removed, as not in this
    /// backup. Newest first: files this backup holds that the newest does
    /// not (a dropped table or database), left out.
    pub removed: u64,
}

/// What a member's file name says it is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Plain,
    /// PostgreSQL's `INCREMENTAL.<name>`.
    Pg(String),
    /// strata's `STRATA-INCR.<name>.<seq>`.
    Strata(String, u32),
}

pub(super) fn kind_of(file_name: &str) -> Kind {
    if let Some(name) = file_name.strip_prefix(PG_PREFIX)
        && !name.is_empty()
    {
        return Kind::Pg(name.to_string());
    }
    if let Some(rest) = file_name.strip_prefix(STRATA_PREFIX)
        && let Some((name, seq)) = rest.rsplit_once('.')
        && !name.is_empty()
        && !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && let Ok(seq) = seq.parse()
    {
        return Kind::Strata(name.to_string(), seq);
    }
    Kind::Plain
}

/// What a member is, and the file it writes (its real name).
pub(super) fn classify(rel: &Path, is_file: bool) -> (Kind, PathBuf) {
    let kind = match rel.file_name().and_then(|n| n.to_str()) {
        Some(n) if is_file => kind_of(n),
        _ => Kind::Plain,
    };
    let real = match &kind {
        Kind::Plain => rel.to_path_buf(),
        Kind::Pg(name) | Kind::Strata(name, _) => rel.with_file_name(name),
    };
    (kind, real)
}

/// Records `real` and its ancestors in `seen`, makes its parent
/// directory, and returns its path in `dir`.
pub(super) fn place(dir: &Path, real: &Path, seen: &mut HashSet<PathBuf>) -> io::Result<PathBuf> {
    for a in real.ancestors() {
        if a.as_os_str().is_empty() || !seen.insert(a.to_path_buf()) {
            break;
        }
    }
    let dest = dir.join(real);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(dest)
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A member's header: which blocks it holds, and the file's length.
#[derive(Debug)]
pub(super) struct Header {
    pub(super) truncation: u32,
    pub(super) blocks: Vec<u32>,
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_block_numbers(r: &mut impl Read, n: u32) -> io::Result<Vec<u32>> {
    let mut raw = vec![0u8; n as usize * 4];
    r.read_exact(&mut raw)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

/// Reads an `INCREMENTAL.` header (and its padding) of a member of
/// `size` bytes, checking the size matches.
pub(super) fn pg_header(r: &mut impl Read, size: u64, what: &Path) -> io::Result<Header> {
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            invalid(format!("{}: incremental file cut short", what.display()))
        }
        _ => e,
    };
    let magic = read_u32(r).map_err(short)?;
    if magic != PG_MAGIC {
        return Err(invalid(format!(
            "{}: bad incremental magic number 0x{magic:08x} (not 0x{PG_MAGIC:08x})",
            what.display()
        )));
    }
    let n = read_u32(r).map_err(short)?;
    let truncation = read_u32(r).map_err(short)?;
    check_counts(n, truncation, what)?;
    let mut header = 12 + 4 * n as u64;
    if n > 0 && !header.is_multiple_of(BLCKSZ) {
        header += BLCKSZ - header % BLCKSZ;
    }
    check_size(size, header + n as u64 * BLCKSZ, what)?;
    let blocks = read_block_numbers(r, n).map_err(short)?;
    let pad = header - 12 - 4 * n as u64;
    io::copy(&mut r.take(pad), &mut io::sink())?;
    Ok(Header { truncation, blocks })
}

/// Reads a `STRATA-INCR.` chunk header of a member of `size` bytes.
pub(super) fn strata_header(r: &mut impl Read, size: u64, what: &Path) -> io::Result<Header> {
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!("{}: chunk cut short", what.display())),
        _ => e,
    };
    let magic = read_u32(r).map_err(short)?;
    if magic != STRATA_MAGIC {
        return Err(invalid(format!(
            "{}: bad chunk magic number 0x{magic:08x} (not 0x{STRATA_MAGIC:08x})",
            what.display()
        )));
    }
    let version = read_u32(r).map_err(short)?;
    if version != STRATA_VERSION {
        return Err(invalid(format!(
            "{}: chunk format version {version}, this strata reads version {STRATA_VERSION} (a newer strata wrote it)",
            what.display()
        )));
    }
    let truncation = read_u32(r).map_err(short)?;
    let n = read_u32(r).map_err(short)?;
    check_counts(n, truncation, what)?;
    check_size(size, 16 + 4 * n as u64 + n as u64 * BLCKSZ, what)?;
    let blocks = read_block_numbers(r, n).map_err(short)?;
    Ok(Header { truncation, blocks })
}

fn check_counts(n: u32, truncation: u32, what: &Path) -> io::Result<()> {
    if n > MAX_BLOCKS || truncation > MAX_BLOCKS {
        return Err(invalid(format!(
            "{}: {n} blocks, truncation length {truncation}: more than a 1 GiB segment holds",
            what.display()
        )));
    }
    Ok(())
}

fn check_size(size: u64, want: u64, what: &Path) -> io::Result<()> {
    if size != want {
        return Err(invalid(format!(
            "{}: {size} bytes where its header announces {want} (with {BLCKSZ}-byte blocks; strata supports PostgreSQL's default block size only)",
            what.display()
        )));
    }
    Ok(())
}

/// Whether the member continues the strata chunk sequence before it
/// (`prev`: that file and the chunk due next), checking chunks come in
/// order: from 0, consecutively, one file's not interleaved with
/// another's.
pub(super) fn continues(
    prev: Option<(&Path, u32)>,
    kind: &Kind,
    real: &Path,
    rel: &Path,
) -> io::Result<bool> {
    match (prev, kind) {
        (Some((p, next)), Kind::Strata(_, seq)) if real == p && *seq == next => Ok(true),
        (Some((p, next)), Kind::Strata(_, seq)) if real == p || *seq > 0 => Err(invalid(format!(
            "{}: chunk {seq} where chunk {next} of {} was due",
            rel.display(),
            p.display()
        ))),
        (None, Kind::Strata(_, seq)) if *seq > 0 => Err(invalid(format!(
            "{}: chunk {seq} without chunk 0 before it",
            rel.display()
        ))),
        _ => Ok(false),
    }
}

/// The file a strata chunk sequence is patching.
struct Pending {
    rel: PathBuf,
    file: File,
    next_seq: u32,
    /// The file's length in blocks so far (max of truncation and listed).
    blocks: u64,
}

impl Pending {
    fn finish(self) -> io::Result<()> {
        self.file.set_len(self.blocks * BLCKSZ)
    }
}

/// Opens `dest` for patching: it must exist unless the member needs no
/// block of it (`truncation` 0).
/// A file longer than `truncation` blocks is cut there first: at or
/// above the truncation length only the blocks the member lists belong
/// to the file, the rest are zeros (PostgreSQL's reading, as
/// `pg_combinebackup` reconstructs it), never the prior state's — those
/// were truncated away, and a relation extended since keeps zero pages
/// there that no WAL record names.
fn open_patched(dest: &Path, rel: &Path, truncation: u32) -> io::Result<File> {
    let file = open_patched_buffered(dest, rel, truncation)?;
    if file.metadata()?.len() > truncation as u64 * BLCKSZ {
        file.set_len(truncation as u64 * BLCKSZ)?;
    }
    // whole aligned blocks at aligned offsets: written past the page cache
    // like a new file's (`delta::unpack_new`), where the file system can
    let _ = set_direct(&file, true);
    Ok(file)
}

fn open_patched_buffered(dest: &Path, rel: &Path, truncation: u32) -> io::Result<File> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_file() => OpenOptions::new().write(true).open(dest),
        Ok(_) => Err(invalid(format!(
            "{}: the incremental patches it, but the prior state holds something else than a file there",
            rel.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && truncation == 0 => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dest),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(invalid(format!(
            "{}: the incremental keeps {truncation} blocks of it from the backup before, which does not hold it: the chain is broken",
            rel.display()
        ))),
        Err(e) => Err(e),
    }
}

/// Copies the member's blocks into `file`, those `keep` accepts (it is
/// asked once per listed block, in order); the file's length in blocks
/// they ask for (at least `truncation`).
pub(super) fn write_blocks(
    r: &mut impl Read,
    file: &File,
    h: &Header,
    buf: &mut [u8],
    keep: &mut impl FnMut(u64) -> bool,
) -> io::Result<(u64, u64)> {
    let mut len = h.truncation as u64;
    let mut written = 0;
    let mut i = 0;
    while i < h.blocks.len() {
        let mut j = i + 1;
        while j < h.blocks.len() && j - i < RUN && h.blocks[j] == h.blocks[j - 1].wrapping_add(1) {
            j += 1;
        }
        let bytes = (j - i) * BLCKSZ as usize;
        r.read_exact(&mut buf[..bytes])?;
        written += write_kept(file, &buf[..bytes], h.blocks[i] as u64, keep)?;
        len = len.max(h.blocks[j - 1] as u64 + 1);
        i = j;
    }
    Ok((len, written))
}

/// Writes the blocks of `data` (consecutive, the first being block
/// `first`; the last may be partial) that `keep` accepts, each run of
/// accepted blocks in one positional write; the blocks written.
pub(super) fn write_kept(
    file: &File,
    data: &[u8],
    first: u64,
    keep: &mut impl FnMut(u64) -> bool,
) -> io::Result<u64> {
    let b = BLCKSZ as usize;
    let n = data.len().div_ceil(b);
    let mut written = 0;
    let mut i = 0;
    while i < n {
        if !keep(first + i as u64) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < n && keep(first + j as u64) {
            j += 1;
        }
        write_at(
            file,
            &data[i * b..(j * b).min(data.len())],
            (first + i as u64) * BLCKSZ,
        )?;
        written += (j - i) as u64;
        if j < n {
            // `keep` refused block j: go on after it
            j += 1;
        }
        i = j;
    }
    Ok(written)
}

/// A positional write; where O_DIRECT is refused for it (or a short write
/// left the rest unaligned), the whole of it again, buffered.
fn write_at(file: &File, data: &[u8], at: u64) -> io::Result<()> {
    match file.write_all_at(data, at) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false)?;
            file.write_all_at(data, at)
        }
        other => other,
    }
}

/// Replaces whatever is at `dest` with the member's bytes.
fn write_whole(r: &mut impl Read, dest: &Path, mode: u32, buf: &mut [u8]) -> io::Result<File> {
    crate::sources::postgres::delta::clear_non_file(dest)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)?;
    loop {
        let n = read_full(r, buf)?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Applies the incremental tar from `reader` onto `dir` (see the module
/// docs). Reads `reader` to its end.
pub fn apply<R: Read>(reader: R, dir: &Path) -> io::Result<ApplyStats> {
    let mut stats = ApplyStats::default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut aligned = AlignedBuf::new(RUN * BLCKSZ as usize);
    let buf = aligned.as_mut();
    let mut pending: Option<Pending> = None;
    for_each_member(reader, dir, |entry, m| {
        let Member { rel, dest, mode } = m;
        let header_kind = entry.header().entry_type();
        let (kind, real) = classify(&rel, header_kind.is_file());
        // a chunk of the file being patched continues it; anything else
        // ends it
        let prev = pending.as_ref().map(|p| (p.rel.as_path(), p.next_seq));
        if !continues(prev, &kind, &real, &rel)?
            && let Some(p) = pending.take()
        {
            p.finish()?;
        }
        let real_dest = place(dir, &real, &mut seen)?;
        let size = entry.size();
        match kind {
            Kind::Pg(_) => {
                let h = pg_header(entry, size, &rel)?;
                let file = open_patched(&real_dest, &real, h.truncation)?;
                let (len, n) = write_blocks(entry, &file, &h, buf, &mut |_| true)?;
                stats.blocks_written += n;
                file.set_len(len * BLCKSZ)?;
                file.set_permissions(fs::Permissions::from_mode(mode))?;
                stats.files_patched += 1;
            }
            Kind::Strata(_, seq) => {
                let h = strata_header(entry, size, &rel)?;
                let mut p = match pending.take() {
                    Some(p) => p,
                    None => Pending {
                        file: open_patched(&real_dest, &real, h.truncation)?,
                        rel: real.clone(),
                        next_seq: 0,
                        blocks: 0,
                    },
                };
                let (len, n) = write_blocks(entry, &p.file, &h, buf, &mut |_| true)?;
                stats.blocks_written += n;
                p.blocks = p.blocks.max(len);
                p.next_seq = seq + 1;
                if seq == 0 {
                    p.file.set_permissions(fs::Permissions::from_mode(mode))?;
                    stats.files_patched += 1;
                }
                pending = Some(p);
            }
            Kind::Plain if header_kind.is_file() => {
                let f = write_whole(entry, &real_dest, mode, buf)?;
                if let Ok(t) = entry.header().mtime() {
                    let _ =
                        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
                }
                stats.files_written += 1;
            }
            Kind::Plain if header_kind.is_dir() => {
                if fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                    fs::remove_file(&dest)?;
                }
                fs::create_dir_all(&dest)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
            }
            Kind::Plain => {
                // symlinks and the like: replace whatever is there
                if let Ok(m) = fs::symlink_metadata(&dest) {
                    if m.is_dir() {
                        fs::remove_dir_all(&dest)?;
                    } else {
                        fs::remove_file(&dest)?;
                    }
                }
                entry.unpack_in(dir)?;
            }
        }
        Ok(())
    })?;
    if let Some(p) = pending.take() {
        p.finish()?;
    }
    stats.removed = remove_unlisted(dir, Path::new(""), &seen)?;
    strip_incremental_label(dir)?;
    Ok(stats)
}

/// Removes the lines of `backup_label` that mark an incremental backup:
/// PostgreSQL refuses to recover from such a label ("this is an
/// incremental backup, not a data directory"), and the directory now
/// holds the whole cluster.
pub fn strip_incremental_label(dir: &Path) -> io::Result<()> {
    let path = dir.join("backup_label");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| {
            !l.starts_with("INCREMENTAL FROM LSN:") && !l.starts_with("INCREMENTAL FROM TLI:")
        })
        .collect();
    if kept.len() != text.len() {
        fs::write(&path, kept)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    pub(crate) const B: usize = BLCKSZ as usize;

    /// A file of blocks, each filled with one byte.
    pub(crate) fn blocks(fill: &[u8]) -> Vec<u8> {
        fill.iter().flat_map(|v| vec![*v; B]).collect()
    }

    pub(crate) fn le(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// PostgreSQL's `INCREMENTAL.` file: `listed` (block number, data).
    pub(crate) fn pg_member(truncation: u32, listed: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        le(&mut out, PG_MAGIC);
        le(&mut out, listed.len() as u32);
        le(&mut out, truncation);
        for (b, _) in listed {
            le(&mut out, *b);
        }
        if !listed.is_empty() && out.len() % B != 0 {
            out.resize(out.len() + B - out.len() % B, 0);
        }
        for (_, d) in listed {
            out.extend_from_slice(d);
        }
        out
    }

    /// strata's `STRATA-INCR.` chunk.
    pub(crate) fn strata_chunk(truncation: u32, listed: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        le(&mut out, STRATA_MAGIC);
        le(&mut out, STRATA_VERSION);
        le(&mut out, truncation);
        le(&mut out, listed.len() as u32);
        for (b, _) in listed {
            le(&mut out, *b);
        }
        for (_, d) in listed {
            out.extend_from_slice(d);
        }
        out
    }

    /// A tar of directories (names ending in `/`) and files, in order.
    pub(crate) fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o700);
                h.set_size(0);
            } else {
                h.set_mode(0o600);
                h.set_size(data.len() as u64);
            }
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub(crate) fn m(name: &str, data: Vec<u8>) -> (String, Vec<u8>) {
        (name.to_string(), data)
    }

    pub(crate) fn dir_(name: &str) -> (String, Vec<u8>) {
        (format!("{name}/"), vec![])
    }

    /// Every regular file under `dir`, relative, with its contents.
    pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in fs::read_dir(at).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    out.insert(rel, fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    /// A data directory's files and their contents.
    pub(crate) type State = BTreeMap<String, Vec<u8>>;

    /// How an incremental sends a relation file the backup before holds.
    #[allow(dead_code)]
    pub(crate) enum Send {
        /// Whole, as a regular member.
        Whole,
        /// As an incremental member with this truncation length: the
        /// blocks at or above it, and those that changed below it.
        Truncated(u32),
    }

    /// The tar members of an incremental taking the directory from `prev`
    /// to `next`, in PostgreSQL's format or strata's (two blocks a chunk,
    /// so files span several members); `how` picks how each relation file
    /// (under `base/`, whole blocks) that `prev` holds is sent, given its
    /// name and its old and new lengths in blocks.
    pub(crate) fn members(
        prev: &State,
        next: &State,
        strata: bool,
        how: &mut dyn FnMut(&str, usize, usize) -> Send,
    ) -> Vec<(String, Vec<u8>)> {
        let mut out = vec![];
        let mut dirs = std::collections::BTreeSet::new();
        for (name, data) in next {
            let p = Path::new(name);
            for a in p.ancestors().skip(1) {
                if !a.as_os_str().is_empty() && dirs.insert(a.to_path_buf()) {
                    out.push(dir_(&a.display().to_string()));
                }
            }
            let relation = name.starts_with("base/") && data.len() % B == 0;
            let Some(old) = prev.get(name).filter(|_| relation) else {
                out.push(m(name, data.clone()));
                continue;
            };
            let (n_old, n_new) = (old.len() / B, data.len() / B);
            let truncation = match how(name, n_old, n_new) {
                Send::Whole => {
                    out.push(m(name, data.clone()));
                    continue;
                }
                Send::Truncated(t) => t as usize,
            };
            // a block of zeros at or above the truncation length, before
            // the last, may go unlisted: a hole reads as zeros
            let hole = |b: usize| b + 1 < n_new && data[b * B..][..B].iter().all(|v| *v == 0);
            let listed: Vec<(u32, Vec<u8>)> = (0..n_new)
                .filter(|&b| {
                    if b >= truncation.min(n_old) {
                        !(b >= truncation && hole(b))
                    } else {
                        old[b * B..][..B] != data[b * B..][..B]
                    }
                })
                .map(|b| (b as u32, data[b * B..][..B].to_vec()))
                .collect();
            let file = p.file_name().unwrap().to_str().unwrap();
            let at = |n: String| p.with_file_name(n).display().to_string();
            if strata {
                let mut chunks: Vec<&[(u32, Vec<u8>)]> = listed.chunks(2).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                for (i, c) in chunks.iter().enumerate() {
                    out.push(m(
                        &at(format!("{STRATA_PREFIX}{file}.{i:04}")),
                        strata_chunk(truncation as u32, c),
                    ));
                }
            } else {
                out.push(m(
                    &at(format!("{PG_PREFIX}{file}")),
                    pg_member(truncation as u32, &listed),
                ));
            }
        }
        out
    }

    pub(crate) fn prior(dir: &Path, files: &[(&str, Vec<u8>)]) {
        for (name, data) in files {
            let p = dir.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
    }

    #[test]
    fn member_names() {
        assert_eq!(kind_of("INCREMENTAL.16384"), Kind::Pg("16384".into()));
        assert_eq!(
            kind_of("INCREMENTAL.16384_fsm.2"),
            Kind::Pg("16384_fsm.2".into())
        );
        assert_eq!(
            kind_of("STRATA-INCR.16384.1.0003"),
            Kind::Strata("16384.1".into(), 3)
        );
        assert_eq!(
            kind_of("STRATA-INCR.2619_vm.0000"),
            Kind::Strata("2619_vm".into(), 0)
        );
        for plain in [
            "16384",
            "INCREMENTAL.",
            "STRATA-INCR.x",
            "STRATA-INCR..0001",
            "PG_VERSION",
        ] {
            assert_eq!(kind_of(plain), Kind::Plain, "{plain}");
        }
    }

    /// Issue 18 item 2: a relation that grew, one truncated, one dropped,
    /// one new, a new database and a dropped one, in PostgreSQL's format.
    #[test]
    fn postgres_members_patch_grow_truncate_drop_and_add() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        prior(
            dir,
            &[
                ("PG_VERSION", b"17\n".to_vec()),
                ("backup_label", b"old\n".to_vec()),
                ("base/5/100", blocks(&[1, 2, 3])),
                ("base/5/200", blocks(&[1, 2, 3, 4, 5])),
                ("base/5/300", blocks(&[7])),
                ("base/6/PG_VERSION", b"17\n".to_vec()),
                ("base/6/100", blocks(&[1])),
                ("global/pg_control", vec![1; 100]),
            ],
        );
        let label = "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n\
                     CHECKPOINT LOCATION: 0/5000080\n\
                     INCREMENTAL FROM LSN: 0/3000028\n\
                     INCREMENTAL FROM TLI: 1\n\
                     START TIMELINE: 1\n";
        let t = tar_of(&[
            m("backup_label", label.as_bytes().to_vec()),
            m("PG_VERSION", b"17\n".to_vec()),
            dir_("base"),
            dir_("base/5"),
            // grew: block 1 changed, block 4 new, block 3 a hole (zeros)
            m(
                "base/5/INCREMENTAL.100",
                pg_member(3, &[(1, blocks(&[9])), (4, blocks(&[7]))]),
            ),
            // truncated to 2 blocks, nothing changed
            m("base/5/INCREMENTAL.200", pg_member(2, &[])),
            // 300 dropped; 400 new, sent whole
            m("base/5/400", blocks(&[4, 4])),
            // a new database; base/6 dropped
            dir_("base/7"),
            m("base/7/PG_VERSION", b"17\n".to_vec()),
            m("base/7/100", blocks(&[3])),
            dir_("global"),
            m("global/pg_control", vec![2; 100]),
        ]);
        let s = apply(&t[..], dir).unwrap();
        assert_eq!(s.files_patched, 2, "{s:?}");
        assert_eq!(s.blocks_written, 2, "{s:?}");
        assert_eq!(s.files_written, 6, "{s:?}");
        // base/5/300 and base/6
        assert_eq!(s.removed, 2, "{s:?}");
        let got = snapshot(dir);
        let want: BTreeMap<String, Vec<u8>> = [
            ("PG_VERSION", b"17\n".to_vec()),
            (
                "backup_label",
                "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n\
                 CHECKPOINT LOCATION: 0/5000080\n\
                 START TIMELINE: 1\n"
                    .as_bytes()
                    .to_vec(),
            ),
            ("base/5/100", blocks(&[1, 9, 3, 0, 7])),
            ("base/5/200", blocks(&[1, 2])),
            ("base/5/400", blocks(&[4, 4])),
            ("base/7/PG_VERSION", b"17\n".to_vec()),
            ("base/7/100", blocks(&[3])),
            ("global/pg_control", vec![2; 100]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        assert_eq!(got, want);
    }

    /// The header is padded to a whole block only when blocks follow; a
    /// header of exactly one block gets none, one a few bytes over gets
    /// a whole block more (GetIncrementalHeaderSize).
    #[test]
    fn postgres_header_padding() {
        for n in [1u32, 2045, 2046] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            prior(dir, &[("base/1/1", blocks(&[0; 1]))]);
            let listed: Vec<(u32, Vec<u8>)> = (0..n)
                .map(|b| (b, blocks(&[(b % 251) as u8 + 1])))
                .collect();
            let member = pg_member(1, &listed);
            let header = if n == 2045 {
                B
            } else if n == 2046 {
                2 * B
            } else {
                B
            };
            assert_eq!(member.len(), header + n as usize * B, "n = {n}");
            let t = tar_of(&[m("base/1/INCREMENTAL.1", member)]);
            apply(&t[..], dir).unwrap();
            let want: Vec<u8> = listed.into_iter().flat_map(|(_, d)| d).collect();
            assert!(fs::read(dir.join("base/1/1")).unwrap() == want, "n = {n}");
        }
    }

    /// strata's chunks: one file spread over several members, a file with
    /// a zero-block chunk (unchanged, and cut to its truncation length),
    /// a grown file whose new blocks come after a hole.
    #[test]
    fn strata_chunks_span_members() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        prior(
            dir,
            &[
                ("base/5/100", blocks(&[1, 1, 1, 1, 1, 1])),
                ("base/5/200", blocks(&[2, 2, 2])),
                ("base/5/300", blocks(&[3])),
            ],
        );
        let t = tar_of(&[
            dir_("base"),
            dir_("base/5"),
            m(
                "base/5/STRATA-INCR.100.0000",
                strata_chunk(8, &[(0, blocks(&[5])), (1, blocks(&[6]))]),
            ),
            m(
                "base/5/STRATA-INCR.100.0001",
                strata_chunk(8, &[(4, blocks(&[7]))]),
            ),
            m(
                "base/5/STRATA-INCR.100.0002",
                strata_chunk(8, &[(6, blocks(&[8])), (7, blocks(&[9]))]),
            ),
            m("base/5/STRATA-INCR.200.0000", strata_chunk(2, &[])),
            m(
                "base/5/STRATA-INCR.300.0000",
                strata_chunk(1, &[(3, blocks(&[4]))]),
            ),
        ]);
        let s = apply(&t[..], dir).unwrap();
        assert_eq!((s.files_patched, s.blocks_written), (3, 6), "{s:?}");
        let got = snapshot(dir);
        assert_eq!(got["base/5/100"], blocks(&[5, 6, 1, 1, 7, 1, 8, 9]));
        assert_eq!(got["base/5/200"], blocks(&[2, 2]));
        assert_eq!(got["base/5/300"], blocks(&[3, 0, 0, 4]));
    }

    fn refused(t: &[u8], dir: &Path, says: &str) {
        let e = apply(t, dir).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }

    #[test]
    fn bad_members_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        prior(
            dir,
            &[
                ("base/5/100", blocks(&[1, 1])),
                ("base/5/200", blocks(&[2])),
            ],
        );
        let one = || strata_chunk(2, &[(0, blocks(&[3]))]);
        // a chunk out of order, a chunk without its first, a restart
        refused(
            &tar_of(&[
                m("base/5/STRATA-INCR.100.0000", one()),
                m("base/5/STRATA-INCR.100.0002", one()),
            ]),
            dir,
            "chunk 2 where chunk 1 of base/5/100 was due",
        );
        refused(
            &tar_of(&[m("base/5/STRATA-INCR.100.0001", one())]),
            dir,
            "without chunk 0",
        );
        refused(
            &tar_of(&[
                m("base/5/STRATA-INCR.100.0000", one()),
                m("base/5/STRATA-INCR.100.0000", one()),
            ]),
            dir,
            "chunk 0 where chunk 1",
        );
        // another file's later chunk interleaved
        refused(
            &tar_of(&[
                m("base/5/STRATA-INCR.100.0000", one()),
                m("base/5/STRATA-INCR.200.0001", one()),
            ]),
            dir,
            "chunk 1 where chunk 1 of base/5/100",
        );
        // bad magic, a newer version, a size that does not match
        let mut bad = one();
        bad[0] ^= 1;
        refused(
            &tar_of(&[m("base/5/STRATA-INCR.100.0000", bad)]),
            dir,
            "magic",
        );
        let mut newer = one();
        newer[4] = 2;
        refused(
            &tar_of(&[m("base/5/STRATA-INCR.100.0000", newer)]),
            dir,
            "version 2",
        );
        let mut short = one();
        short.truncate(short.len() - 4096);
        refused(
            &tar_of(&[m("base/5/STRATA-INCR.100.0000", short)]),
            dir,
            "8192-byte blocks",
        );
        let mut pg = pg_member(2, &[(0, blocks(&[3]))]);
        pg[1] ^= 1;
        refused(&tar_of(&[m("base/5/INCREMENTAL.100", pg)]), dir, "magic");
        // a 4 KiB-block cluster's member
        let mut small = Vec::new();
        for v in [PG_MAGIC, 1, 1, 0] {
            le(&mut small, v);
        }
        small.resize(4096 + 4096, 0);
        refused(
            &tar_of(&[m("base/5/INCREMENTAL.100", small)]),
            dir,
            "8192-byte blocks",
        );
        // the prior state lacks a file whose blocks it must supply
        refused(
            &tar_of(&[m(
                "base/5/INCREMENTAL.999",
                pg_member(2, &[(1, blocks(&[1]))]),
            )]),
            dir,
            "the chain is broken",
        );
        // one it need not supply is created
        let t = tar_of(&[m(
            "base/5/INCREMENTAL.998",
            pg_member(0, &[(0, blocks(&[1]))]),
        )]);
        apply(&t[..], dir).unwrap();
        assert_eq!(fs::read(dir.join("base/5/998")).unwrap(), blocks(&[1]));
    }

    /// A cluster's history (files and their contents), its full backup
    /// unpacked, then each incremental applied in turn, in either format:
    /// every state comes out exactly.
    #[test]
    fn a_chain_applied_in_turn_gives_each_state() {
        fn state(files: &[(&str, Vec<u8>)]) -> State {
            files
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        }
        let history = [
            state(&[
                ("PG_VERSION", b"15\n".to_vec()),
                ("base/1/10", blocks(&[1, 2, 3, 4])),
                ("base/1/11", blocks(&[5, 5])),
                ("base/1/12", blocks(&[6; 5])),
                ("base/1/12_fsm", blocks(&[0, 1])),
            ]),
            // 10 grew and changed, 11 dropped, 12 truncated, a new database
            state(&[
                ("PG_VERSION", b"15\n".to_vec()),
                ("base/1/10", blocks(&[1, 9, 3, 4, 5, 6, 7])),
                ("base/1/12", blocks(&[6; 2])),
                ("base/1/12_fsm", blocks(&[0, 1])),
                ("base/2/PG_VERSION", b"15\n".to_vec()),
                ("base/2/10", blocks(&[8, 8, 8])),
            ]),
            // the new database's table grew, 10 unchanged, 12 rewritten
            state(&[
                ("PG_VERSION", b"15\n".to_vec()),
                ("base/1/10", blocks(&[1, 9, 3, 4, 5, 6, 7])),
                ("base/1/12", blocks(&[7; 3])),
                ("base/1/12_fsm", blocks(&[0, 2])),
                ("base/2/PG_VERSION", b"15\n".to_vec()),
                ("base/2/10", blocks(&[8, 8, 8, 1, 2, 3, 4, 5])),
            ]),
            // the first database dropped
            state(&[
                ("PG_VERSION", b"15\n".to_vec()),
                ("base/2/PG_VERSION", b"15\n".to_vec()),
                ("base/2/10", blocks(&[8, 0, 8, 1, 2, 3, 4, 5, 1])),
            ]),
        ];
        for strata in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            let full = tar_of(&members(
                &State::new(),
                &history[0],
                strata,
                &mut |_, _, n| Send::Truncated(n as u32),
            ));
            crate::sources::postgres::delta::unpack_new(&full[..], &dir).unwrap();
            assert_eq!(snapshot(&dir), history[0]);
            for w in history.windows(2) {
                let t = tar_of(&members(&w[0], &w[1], strata, &mut |_, _, n| {
                    Send::Truncated(n as u32)
                }));
                apply(&t[..], &dir).unwrap();
                assert_eq!(snapshot(&dir), w[1], "strata format: {strata}");
            }
            assert!(!dir.join("base/1").exists());
        }
    }

    #[test]
    fn a_regular_member_replaces_a_longer_file_or_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        prior(
            dir,
            &[
                ("postgresql.conf", vec![b'x'; 5000]),
                ("pg_ident.conf/x", vec![1]),
            ],
        );
        let t = tar_of(&[
            m("postgresql.conf", b"short\n".to_vec()),
            m("pg_ident.conf", b"# ident\n".to_vec()),
        ]);
        apply(&t[..], dir).unwrap();
        assert_eq!(fs::read(dir.join("postgresql.conf")).unwrap(), b"short\n");
        assert_eq!(fs::read(dir.join("pg_ident.conf")).unwrap(), b"# ident\n");
    }
}

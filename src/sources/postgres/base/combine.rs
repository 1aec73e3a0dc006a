//! Restoring an incremental chain newest first, writing every block once,
//! as `pg_combinebackup` does — but streaming, with nothing staged.
//!
//! The newest backup is unpacked first: it decides what the restored
//! directory holds (every path it names, and nothing else), its whole
//! files are final, and the blocks its incremental members list are
//! written at their offsets, each file cut or extended to max(truncation
//! length, highest listed block + 1) blocks. A relation file whose
//! member keeps blocks from the backup before (truncation length above 0)
//! stays *open*: the blocks below its *limit* not written yet must come
//! from an older backup.
//!
//! Each older backup then streams past, newest to the full one, and fills
//! only what is still open: from an incremental member the listed blocks
//! below the limit not yet written, after which the limit drops to that
//! member's truncation length; from a whole file every block below the
//! limit not yet written, after which the file is complete. A block at or
//! above a limit stays a hole: zeros, as a newer backup cut the file
//! there (the state the forward [`super::apply`] reaches, block for
//! block; a unit test checks both against every state of random
//! histories). Everything else an older backup holds is read (its digest
//! is checked as it streams) and left out: files a newer backup holds
//! whole, and what the newest no longer has (a dropped table or
//! database).
//!
//! An older backup that lacks a file still open is a broken chain, refused
//! by name, as the forward apply refuses it. `backup_label` is the
//! newest's, without its `INCREMENTAL FROM` lines.
//!
//! Writes: each block of the restored cluster is written at most once
//! (a forward apply writes every incremental's blocks over the full's),
//! with O_DIRECT where the file system takes it. Memory: one 1 MiB
//! buffer, one member's block numbers, the set of the newest backup's
//! paths, and one bit per block below the limit of every open file (at
//! most 16 KiB per 1 GiB segment).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::apply::{
    ApplyStats, BLCKSZ, Header, Kind, RUN, classify, continues, invalid, pg_header, place,
    strata_header, strip_incremental_label, write_blocks, write_kept,
};
use crate::sources::postgres::delta::{
    AlignedBuf, Member, create_new, for_each_member, read_full, write_new,
};

/// A relation file that still takes blocks from older backups.
#[derive(Debug)]
struct Open {
    /// Blocks below it not written yet come from an older backup; blocks
    /// at or above it are zeros.
    limit: u32,
    /// The limit once the backup being read is done: the least
    /// truncation length it gave the file (0 for a whole file).
    next: u32,
    /// Whether the backup being read holds the file.
    seen: bool,
    /// One bit per block below `limit`: written (empty until one is).
    written: Vec<u64>,
}

impl Open {
    fn new(limit: u32) -> Open {
        Open {
            limit,
            next: limit,
            // the newest backup holds it
            seen: true,
            written: Vec::new(),
        }
    }

    /// Whether block `b` is still to be written (and marks it written).
    fn take(&mut self, b: u64) -> bool {
        if b >= self.limit as u64 {
            return false;
        }
        if self.written.is_empty() {
            self.written = vec![0; (self.limit as usize).div_ceil(64)];
        }
        let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
        if self.written[w] & bit != 0 {
            return false;
        }
        self.written[w] |= bit;
        true
    }

    /// Marks block `b` written (the newest backup wrote it).
    fn mark(&mut self, b: u64) {
        let _ = self.take(b);
    }

    /// Whether block `b` is still to be written.
    fn due(&self, b: u64) -> bool {
        let w = (b / 64) as usize;
        b < self.limit as u64 && !(w < self.written.len() && self.written[w] & (1 << (b % 64)) != 0)
    }
}

/// A chain being restored newest first into an empty directory: feed
/// [`Combine::add`] each backup's tar, the newest first and the full one
/// last, then call [`Combine::finish`].
pub struct Combine {
    dir: PathBuf,
    /// Backups read so far.
    level: usize,
    /// Every path the newest backup holds, by real name, with its
    /// ancestors.
    newest: HashSet<PathBuf>,
    /// Relation files still open, by real name.
    open: HashMap<PathBuf, Open>,
    /// Files of the newest backup not created yet, as it lists no block
    /// of them: their length in blocks and mode. Created when an older
    /// backup first writes one (creating a file is the costly part of a
    /// small backup: done there, it overlaps that backup's decoding), or
    /// at the end.
    deferred: HashMap<PathBuf, (u64, u32)>,
    /// O_DIRECT writes, until the file system refuses them.
    direct: bool,
}

impl Combine {
    /// A combine into `dir`, which exists and is empty.
    pub fn new(dir: &Path) -> Combine {
        Combine {
            dir: dir.to_path_buf(),
            level: 0,
            newest: HashSet::new(),
            open: HashMap::new(),
            deferred: HashMap::new(),
            direct: true,
        }
    }

    /// Reads the next backup's tar from `reader` (to its end) and writes
    /// what it supplies: all of the newest one, then what is still open.
    pub fn add<R: Read>(&mut self, reader: R) -> io::Result<ApplyStats> {
        let stats = if self.level == 0 {
            self.add_newest(reader)?
        } else {
            self.add_older(reader)?
        };
        self.level += 1;
        // a file still open that this backup does not hold: the newer one
        // keeps blocks of it from a state the chain never had
        if let Some((path, limit)) = self
            .open
            .iter()
            .filter(|(_, o)| !o.seen && o.limit > 0)
            .map(|(p, o)| (p, o.limit))
            .min()
        {
            return Err(invalid(format!(
                "{}: a newer backup keeps {limit} blocks of it from this one, which does not hold it: the chain is broken",
                path.display()
            )));
        }
        self.open.retain(|_, o| {
            o.limit = o.limit.min(o.next);
            o.next = o.limit;
            o.seen = false;
            if o.limit == 0 {
                return false;
            }
            // every block below the limit written: nothing left to take
            let (words, rest) = (o.limit as usize / 64, o.limit % 64);
            let all = o.written.len() >= (o.limit as usize).div_ceil(64)
                && o.written[..words].iter().all(|w| *w == u64::MAX)
                && (rest == 0 || o.written[words] & ((1u64 << rest) - 1) == (1u64 << rest) - 1);
            !all
        });
        Ok(stats)
    }

    /// After the full backup: refuses a chain that left blocks open (its
    /// first backup held incremental members), and strips the label.
    pub fn finish(self) -> io::Result<()> {
        if let Some(path) = self.open.keys().min() {
            return Err(invalid(format!(
                "{}: still takes blocks from a backup before the chain's full one: the chain is broken",
                path.display()
            )));
        }
        let mut left: Vec<_> = self.deferred.into_iter().collect();
        left.sort();
        for (rel, (blocks, mode)) in left {
            let mut direct = false;
            let f = create_new(&self.dir.join(&rel), &mut direct)?;
            f.set_len(blocks * BLCKSZ)?;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        strip_incremental_label(&self.dir)
    }

    fn add_newest<R: Read>(&mut self, reader: R) -> io::Result<ApplyStats> {
        let mut stats = ApplyStats::default();
        let mut aligned = AlignedBuf::new(RUN * BLCKSZ as usize);
        let mut chunks: Option<Chunks> = None;
        let dir = self.dir.clone();
        let Combine {
            newest,
            open,
            deferred,
            direct,
            ..
        } = self;
        for_each_member(reader, &dir, |entry, m| {
            let Member { rel, dest, mode } = m;
            let header_kind = entry.header().entry_type();
            let (kind, real) = classify(&rel, header_kind.is_file());
            let prev = chunks.as_ref().map(|c| (c.real.as_path(), c.next_seq));
            let more = continues(prev, &kind, &real, &rel)?;
            if !more && let Some(c) = chunks.take() {
                c.finish(deferred)?;
            }
            let real_dest = place(&dir, &real, newest)?;
            let size = entry.size();
            match kind {
                Kind::Pg(_) | Kind::Strata(..) => {
                    let h = header(entry, &kind, size, &rel)?;
                    let mut c = match chunks.take() {
                        Some(c) => c,
                        None => {
                            stats.files_patched += 1;
                            if h.truncation > 0 {
                                open.insert(real.clone(), Open::new(h.truncation));
                            }
                            Chunks {
                                real: real.clone(),
                                next_seq: 0,
                                file: None,
                                blocks: 0,
                                patched: true,
                                mode,
                            }
                        }
                    };
                    if c.file.is_none() && !h.blocks.is_empty() {
                        let f = create_new(&real_dest, direct)?;
                        f.set_permissions(fs::Permissions::from_mode(c.mode))?;
                        c.file = Some(f);
                    }
                    let mut o = open.get_mut(&real);
                    let (len, n) = match &c.file {
                        Some(file) => write_blocks(entry, file, &h, aligned.as_mut(), &mut |b| {
                            if let Some(o) = o.as_deref_mut() {
                                o.mark(b);
                            }
                            true
                        })?,
                        None => (h.truncation as u64, 0),
                    };
                    stats.blocks_written += n;
                    c.blocks = c.blocks.max(len);
                    match kind {
                        Kind::Strata(_, seq) => {
                            c.next_seq = seq + 1;
                            chunks = Some(c);
                        }
                        _ => c.finish(deferred)?,
                    }
                }
                Kind::Plain if header_kind.is_file() => {
                    let mtime = entry.header().mtime().ok();
                    write_new(entry, &real_dest, mode, mtime, &mut aligned, direct)?;
                    stats.files_written += 1;
                }
                Kind::Plain if header_kind.is_dir() => {
                    fs::create_dir_all(&dest)?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
                }
                Kind::Plain => {
                    entry.unpack_in(&dir)?;
                }
            }
            Ok(())
        })?;
        if let Some(c) = chunks {
            c.finish(deferred)?;
        }
        Ok(stats)
    }

    fn add_older<R: Read>(&mut self, reader: R) -> io::Result<ApplyStats> {
        let mut stats = ApplyStats::default();
        let mut aligned = AlignedBuf::new(RUN * BLCKSZ as usize);
        let mut chunks: Option<Chunks> = None;
        let dir = self.dir.clone();
        let Combine {
            newest,
            open,
            deferred,
            direct,
            ..
        } = self;
        for_each_member(reader, &dir, |entry, m| {
            if !entry.header().entry_type().is_file() {
                // the newest backup made the directories and links
                return Ok(());
            }
            let rel = m.rel;
            let (kind, real) = classify(&rel, true);
            let prev = chunks.as_ref().map(|c| (c.real.as_path(), c.next_seq));
            let more = continues(prev, &kind, &real, &rel)?;
            let (mut file, mut patched) = match chunks.take() {
                Some(c) if more => (c.file, c.patched),
                _ => (None, false),
            };
            if !more && !newest.contains(&real) {
                // dropped since: left out
                stats.removed += 1;
            }
            if let Some(o) = open.get_mut(&real) {
                o.seen = true;
                let size = entry.size();
                let mut open_file = || match deferred.remove(&real) {
                    // first written here: created now, at its length
                    Some((blocks, mode)) => {
                        let f = create_new(&dir.join(&real), direct)?;
                        f.set_len(blocks * BLCKSZ)?;
                        f.set_permissions(fs::Permissions::from_mode(mode))?;
                        Ok(f)
                    }
                    None => open_existing(&dir.join(&real), &real, *direct),
                };
                let n = fill(
                    entry,
                    &kind,
                    size,
                    &rel,
                    o,
                    &mut file,
                    &mut open_file,
                    aligned.as_mut(),
                )?;
                stats.blocks_written += n;
                if n > 0 && !patched {
                    stats.files_patched += 1;
                    patched = true;
                }
            }
            if let Kind::Strata(_, seq) = kind {
                chunks = Some(Chunks {
                    real,
                    next_seq: seq + 1,
                    file,
                    blocks: 0,
                    patched,
                    mode: 0,
                });
            }
            Ok(())
        })?;
        Ok(stats)
    }
}

/// The file a strata chunk sequence is writing.
struct Chunks {
    real: PathBuf,
    next_seq: u32,
    /// The file, once this backup writes into it.
    file: Option<File>,
    /// The newest backup: the file's length in blocks so far (max of
    /// truncation and listed).
    blocks: u64,
    /// Whether this backup wrote blocks of it.
    patched: bool,
    /// The newest backup: the file's mode.
    mode: u32,
}

impl Chunks {
    /// The newest backup's file is whole: cut or extend it to its length,
    /// or (no block listed, none written) leave its creation for later.
    fn finish(self, deferred: &mut HashMap<PathBuf, (u64, u32)>) -> io::Result<()> {
        match self.file {
            Some(f) => f.set_len(self.blocks * BLCKSZ),
            None => {
                deferred.insert(self.real, (self.blocks, self.mode));
                Ok(())
            }
        }
    }
}

/// An incremental member's header.
fn header(r: &mut impl Read, kind: &Kind, size: u64, rel: &Path) -> io::Result<Header> {
    match kind {
        Kind::Pg(_) => pg_header(r, size, rel),
        _ => strata_header(r, size, rel),
    }
}

/// Writes what an older backup's member supplies to the open file `o`:
/// the blocks still due; the number written. `file` is opened (with
/// `open_file`) only when one is.
#[allow(clippy::too_many_arguments)]
fn fill(
    r: &mut impl Read,
    kind: &Kind,
    size: u64,
    rel: &Path,
    o: &mut Open,
    file: &mut Option<File>,
    open_file: &mut impl FnMut() -> io::Result<File>,
    buf: &mut [u8],
) -> io::Result<u64> {
    fn opened<'f>(
        file: &'f mut Option<File>,
        open_file: &mut impl FnMut() -> io::Result<File>,
    ) -> io::Result<&'f File> {
        if file.is_none() {
            *file = Some(open_file()?);
        }
        Ok(file.as_ref().expect("just opened"))
    }
    if let Kind::Plain = kind {
        // a whole file: every block below the limit not yet written; then
        // the file is complete
        o.next = 0;
        let want = o.limit as u64 * BLCKSZ;
        let (mut at, mut written) = (0u64, 0);
        while at < want {
            let n = read_full(r, buf)?;
            if n == 0 {
                break;
            }
            let n = n.min((want - at) as usize);
            let first = at / BLCKSZ;
            if (first..first + n.div_ceil(BLCKSZ as usize) as u64).any(|b| o.due(b)) {
                let f = opened(file, open_file)?;
                written += write_kept(f, &buf[..n], first, &mut |b| o.take(b))?;
            }
            at += n as u64;
        }
        return Ok(written);
    }
    let h = header(r, kind, size, rel)?;
    o.next = o.next.min(h.truncation);
    if !h.blocks.iter().any(|b| o.due(*b as u64)) {
        return Ok(0);
    }
    let f = opened(file, open_file)?;
    Ok(write_blocks(r, f, &h, buf, &mut |b| o.take(b))?.1)
}

/// Opens a file the newest backup created, for older blocks.
fn open_existing(dest: &Path, rel: &Path, direct: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    match opts.open(dest) {
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
            open_existing(dest, rel, false)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", rel.display()))),
        ok => ok,
    }
}

#[cfg(test)]
mod tests {
    use super::super::apply::tests::{
        B, Send, State, blocks, dir_, m, members, pg_member, snapshot, tar_of,
    };
    use super::*;

    /// xorshift64*: deterministic, so a failing seed can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }
    }

    /// The next state of a cluster: relation files grow, shrink, change
    /// blocks, disappear and appear (a dropped name may come back), a
    /// database comes or goes, and the small files change.
    fn evolve(prev: &State, rng: &mut Rng, round: usize) -> State {
        let mut next = State::new();
        // now and then a block of zeros (a hole where it may go unlisted)
        let fill = |rng: &mut Rng| {
            if rng.one_in(6) {
                0
            } else {
                (rng.below(250) + 1) as u8
            }
        };
        for (name, data) in prev {
            if !name.starts_with("base/") || name.ends_with("PG_VERSION") {
                let mut d = data.clone();
                if rng.one_in(2) {
                    d = vec![round as u8; 100 + rng.below(50)];
                }
                next.insert(name.clone(), d);
                continue;
            }
            if rng.one_in(8) {
                continue; // dropped
            }
            let n_old = data.len() / B;
            let n_new = match rng.below(6) {
                0 => rng.below(n_old + 1), // truncated
                1 => n_old + rng.below(5), // grew
                _ => n_old,
            };
            let mut d = data.clone();
            d.resize(n_new * B, 0);
            for b in 0..n_new {
                if rng.one_in(4) || b >= n_old {
                    let v = fill(rng);
                    d[b * B..][..B].fill(v);
                }
            }
            next.insert(name.clone(), d);
        }
        for _ in 0..rng.below(3) {
            let db = 1 + rng.below(3);
            let name = format!("base/{db}/{}", 10 + rng.below(8));
            if let std::collections::btree_map::Entry::Vacant(e) = next.entry(name) {
                let n = rng.below(6);
                let d: Vec<u8> = (0..n)
                    .flat_map(|_| vec![(rng.below(250) + 1) as u8; B])
                    .collect();
                e.insert(d);
            }
        }
        // a database dropped whole now and then
        if rng.one_in(5) {
            let db = format!("base/{}/", 1 + rng.below(3));
            next.retain(|k, _| !k.starts_with(&db));
        }
        next
    }

    /// Restores `tars` (the full first) newest first; the stats.
    fn combine(tars: &[Vec<u8>], dir: &Path) -> io::Result<Vec<ApplyStats>> {
        fs::create_dir_all(dir)?;
        let mut c = Combine::new(dir);
        let mut stats = vec![];
        for t in tars.iter().rev() {
            stats.push(c.add(&t[..])?);
        }
        c.finish()?;
        Ok(stats)
    }

    /// Issue 18: a chain restored newest first reaches the very state the
    /// forward apply (and the cluster) had, in both formats, for random
    /// histories and every chain length — and writes no block twice.
    #[test]
    fn newest_first_gives_every_state_of_random_histories() {
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let strata = seed % 2 == 0;
            let mut history = vec![State::from([
                ("PG_VERSION".to_string(), b"18\n".to_vec()),
                ("global/pg_control".to_string(), vec![7; 120]),
                ("base/1/PG_VERSION".to_string(), b"18\n".to_vec()),
                ("base/1/10".to_string(), blocks(&[1, 2, 3, 4])),
                ("base/1/11".to_string(), blocks(&[5; 7])),
                ("base/2/10".to_string(), blocks(&[6, 6])),
            ])];
            for round in 1..6 {
                let next = evolve(history.last().unwrap(), &mut rng, round);
                history.push(next);
            }
            let mut tars = vec![tar_of(&members(
                &State::new(),
                &history[0],
                strata,
                &mut |_, _, n| Send::Truncated(n as u32),
            ))];
            for w in history.windows(2) {
                let mut how = |_: &str, n_old: usize, n_new: usize| match rng.below(8) {
                    0 => Send::Whole,
                    1 => Send::Truncated(rng.below(n_old.min(n_new) + 1) as u32),
                    _ => Send::Truncated(n_new as u32),
                };
                tars.push(tar_of(&members(&w[0], &w[1], strata, &mut how)));
            }
            for k in 1..tars.len() {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("data");
                let stats = combine(&tars[..=k], &dir)
                    .unwrap_or_else(|e| panic!("seed {seed}, chain of {}: {e}", k + 1));
                let got = snapshot(&dir);
                assert!(
                    got == history[k],
                    "seed {seed}, chain of {}: {:?} against {:?}",
                    k + 1,
                    got.keys().collect::<Vec<_>>(),
                    history[k].keys().collect::<Vec<_>>()
                );
                // no block written twice
                let written: u64 = stats.iter().map(|s| s.blocks_written).sum();
                let held: u64 = history[k]
                    .values()
                    .map(|d| d.len().div_ceil(B) as u64)
                    .sum();
                assert!(
                    written <= held,
                    "seed {seed}: {written} blocks written, {held} held"
                );
                // the forward apply agrees
                let fwd = tmp.path().join("forward");
                crate::sources::postgres::delta::unpack_new(&tars[0][..], &fwd).unwrap();
                for t in &tars[1..=k] {
                    super::super::apply::apply(&t[..], &fwd).unwrap();
                }
                assert!(snapshot(&fwd) == got, "seed {seed}, chain of {}", k + 1);
            }
        }
    }

    /// What the newest backup supersedes is never written, and what the
    /// backups before hold of a dropped table is left out.
    #[test]
    fn older_blocks_fill_only_what_is_due() {
        let full = tar_of(&[
            m("PG_VERSION", b"18\n".to_vec()),
            dir_("base"),
            dir_("base/1"),
            m("base/1/10", blocks(&[1, 1, 1, 1])),
            m("base/1/11", blocks(&[2, 2])),
        ]);
        // block 1 changed, the file cut to 3 blocks; 11 dropped
        let i1 = tar_of(&[
            m("PG_VERSION", b"18\n".to_vec()),
            dir_("base"),
            dir_("base/1"),
            m("base/1/INCREMENTAL.10", pg_member(3, &[(1, blocks(&[5]))])),
        ]);
        // block 0 changed
        let i2 = tar_of(&[
            m("PG_VERSION", b"18\n".to_vec()),
            dir_("base"),
            dir_("base/1"),
            m("base/1/INCREMENTAL.10", pg_member(3, &[(0, blocks(&[6]))])),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let stats = combine(&[full, i1, i2], &dir).unwrap();
        assert_eq!(fs::read(dir.join("base/1/10")).unwrap(), blocks(&[6, 5, 1]));
        assert!(!dir.join("base/1/11").exists());
        let blocks_written: Vec<u64> = stats.iter().map(|s| s.blocks_written).collect();
        // newest first: i2 block 0, i1 block 1, the full block 2 only
        assert_eq!(blocks_written, [1, 1, 1]);
        assert_eq!(stats[2].removed, 1, "{stats:?}");
        assert_eq!(stats[2].files_patched, 1, "{stats:?}");
    }

    /// A backup in the middle that lacks a file the newer one keeps blocks
    /// of, and a "full" backup holding an incremental member: refused.
    #[test]
    fn a_broken_chain_is_refused() {
        let full = tar_of(&[dir_("base"), m("base/10", blocks(&[1, 1]))]);
        let lacking = tar_of(&[dir_("base"), m("base/11", blocks(&[1]))]);
        let newest = tar_of(&[
            dir_("base"),
            m("base/INCREMENTAL.10", pg_member(2, &[(0, blocks(&[3]))])),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let e = combine(
            &[full.clone(), lacking, newest.clone()],
            &tmp.path().join("a"),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("base/10") && e.to_string().contains("the chain is broken"),
            "{e}"
        );
        let e = combine(&[newest.clone(), newest], &tmp.path().join("b")).unwrap_err();
        assert!(e.to_string().contains("before the chain's full one"), "{e}");
        combine(
            &[
                full,
                tar_of(&[dir_("base"), m("base/INCREMENTAL.10", pg_member(2, &[]))]),
            ],
            &tmp.path().join("c"),
        )
        .unwrap();
        assert_eq!(
            fs::read(tmp.path().join("c/base/10")).unwrap(),
            blocks(&[1, 1])
        );
    }
}

//! `restore --delta`: unpack a base backup's tar over a data directory
//! that already holds a (stopped) copy of the cluster, writing only what
//! differs — pgBackRest's `--delta`.
//!
//! Each regular file is compared with the tar member as the member streams
//! past, 1 MiB at a time: an identical file is kept untouched; at the first
//! differing chunk the rest of the member is written from that offset on
//! (everything before it is already right) and the file cut to the
//! member's size. Files and directories the backup does not hold are
//! removed — stale WAL in `pg_wal`, a `postmaster.opts`, a leftover
//! `recovery.signal`: recovery must start from exactly the backup. Memory
//! is two buffers and the set of the backup's paths.
//!
//! The caller refuses a directory with `postmaster.pid` (a server may be
//! running) or without `PG_VERSION` (not a data directory: everything in it
//! would be deleted).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

const CHUNK: usize = 1 << 20;

/// What a delta restore did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DeltaStats {
    /// Regular files already identical: not written.
    pub files_kept: u64,
    /// Regular files created or (partly) rewritten.
    pub files_written: u64,
    /// Bytes of the backup's regular files.
    pub bytes_total: u64,
    /// Bytes written into regular files.
    pub bytes_written: u64,
    /// Files and directories removed (not in the backup).
    pub removed: u64,
}

/// The path of a tar member relative to the target, or an error for one
/// that would leave it (absolute, `..`).
fn safe_relative(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tar member {} leaves the target directory", p.display()),
                ));
            }
        }
    }
    Ok(out)
}

/// Reads until `buf` is full or the end; the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Removes whatever is at `dest` unless it is a regular file (a directory
/// or a link where the backup has a file).
pub(crate) fn clear_non_file(dest: &Path) -> io::Result<()> {
    if let Ok(m) = fs::symlink_metadata(dest)
        && !m.is_file()
    {
        if m.is_dir() {
            fs::remove_dir_all(dest)?;
        } else {
            fs::remove_file(dest)?;
        }
    }
    Ok(())
}

/// Makes `dest` hold `size` bytes from `src`: whether it changed, and
/// the bytes written.
fn sync_file(
    src: &mut impl Read,
    dest: &Path,
    size: u64,
    bufs: &mut [Vec<u8>; 2],
) -> io::Result<(bool, u64)> {
    clear_non_file(dest)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dest)?;
    let [want, have] = bufs;
    let mut off = 0u64;
    loop {
        let n = read_full(src, want)?;
        if n == 0 {
            break;
        }
        let m = read_full(&mut f, &mut have[..n])?;
        if m == n && want[..n] == have[..n] {
            off += n as u64;
            continue;
        }
        // first difference in this chunk: write it and everything after
        f.seek(SeekFrom::Start(off))?;
        f.write_all(&want[..n])?;
        let rest = io::copy(src, &mut f)?;
        f.set_len(size)?;
        return Ok((true, n as u64 + rest));
    }
    if f.metadata()?.len() != size {
        // a longer file: cut to size
        f.set_len(size)?;
        return Ok((true, 0));
    }
    Ok((false, 0))
}

/// Unpacks the tar from `reader` over `dir` (see the module docs). Reads
/// `reader` to its end.
pub fn unpack<R: Read>(reader: R, dir: &Path) -> io::Result<DeltaStats> {
    fs::create_dir_all(dir)?;
    let mut stats = DeltaStats::default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut bufs = [vec![0u8; CHUNK], vec![0u8; CHUNK]];
    for_each_member(reader, dir, |entry, m| {
        let Member { rel, dest, mode } = m;
        for a in rel.ancestors() {
            if a.as_os_str().is_empty() || !seen.insert(a.to_path_buf()) {
                break;
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_file() {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            let size = entry.size();
            let existed = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file());
            let (changed, written) = sync_file(entry, &dest, size, &mut bufs)?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
            stats.bytes_total += size;
            if changed || !existed {
                stats.files_written += 1;
                stats.bytes_written += written;
            } else {
                stats.files_kept += 1;
            }
        } else if kind.is_dir() {
            if fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&dest)?;
            }
            fs::create_dir_all(&dest)?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        } else {
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
        Ok(())
    })?;
    stats.removed = remove_unlisted(dir, Path::new(""), &seen)?;
    Ok(stats)
}

/// Where a tar member goes.
pub(crate) struct Member {
    /// Its path relative to the target directory.
    pub(crate) rel: PathBuf,
    /// Its path in the target directory.
    pub(crate) dest: PathBuf,
    /// Its permission bits.
    pub(crate) mode: u32,
}

/// Calls `each` with every member of the tar in `reader` and where it goes
/// in `dir` (refusing one that would leave it), then reads `reader` to its
/// end: the tar padding after the end marker, so the writer never sees a
/// closed pipe.
pub(crate) fn for_each_member<R: Read>(
    reader: R,
    dir: &Path,
    mut each: impl FnMut(&mut tar::Entry<'_, R>, Member) -> io::Result<()>,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = safe_relative(&entry.path()?)?;
        if !rel.as_os_str().is_empty() {
            let member = Member {
                dest: dir.join(&rel),
                mode: entry.header().mode().unwrap_or(0o600) & 0o7777,
                rel,
            };
            each(&mut entry, member)?;
        }
    }
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(())
}

/// Unpacks the tar from `reader` into the empty directory `dir` (a
/// plain restore). Like `tar::Archive::unpack`, but regular files are
/// copied 1 MiB at a time (tar-rs copies 8 KiB per read and write: a
/// 100,000 system calls more per GiB). Reads `reader` to its end.
pub fn unpack_new<R: Read>(reader: R, dir: &Path) -> io::Result<()> {
    unpack_new_with(reader, dir, true)
}

fn unpack_new_with<R: Read>(reader: R, dir: &Path, mut direct: bool) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut buf = AlignedBuf::new(CHUNK);
    for_each_member(reader, dir, |entry, Member { dest, mode, .. }| {
        let kind = entry.header().entry_type();
        if kind.is_file() {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            let mtime = entry.header().mtime().ok();
            write_new(entry, &dest, mode, mtime, &mut buf, &mut direct)?;
        } else if kind.is_dir() {
            fs::create_dir_all(&dest)?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        } else {
            entry.unpack_in(dir)?;
        }
        Ok(())
    })
}

/// Writes the new file `dest` (which must not exist) from `src`: 1 MiB at
/// a time through `buf`, with O_DIRECT while `*direct` holds (see
/// [`create_new`]).
pub(crate) fn write_new(
    src: &mut impl Read,
    dest: &Path,
    mode: u32,
    mtime: Option<u64>,
    buf: &mut AlignedBuf,
    direct: &mut bool,
) -> io::Result<()> {
    let mut f = create_new(dest, direct)?;
    let mut f_direct = *direct;
    loop {
        let n = read_full(src, buf.as_mut())?;
        if n == 0 {
            break;
        }
        if f_direct && n % DIRECT_ALIGN != 0 {
            // the tail of a file that is no multiple of the block size
            set_direct(&f, false)?;
            f_direct = false;
        }
        let mut done = 0;
        while done < n {
            match f.write(&buf.as_mut()[done..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // the file system takes O_DIRECT at open but not these
                // writes (or a short write left the rest unaligned):
                // buffered from here on
                Err(e) if f_direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    set_direct(&f, false)?;
                    f_direct = false;
                    *direct = false;
                }
                Err(e) => return Err(e),
            }
        }
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    if let Some(t) = mtime {
        let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    }
    Ok(())
}

/// Alignment of O_DIRECT buffers, offsets and lengths: the largest logical
/// block size in use (4 KiB), which also satisfies 512-byte devices.
const DIRECT_ALIGN: usize = 4096;

/// Creates `path` (which must not exist) for writing, with O_DIRECT while
/// `*direct` holds: a restore writes the whole cluster once, and buffered
/// writes would copy every byte into the page cache (the largest CPU cost
/// of a restore on a small host) and push everything else out of it. A
/// file system that refuses O_DIRECT turns it off for the rest of the run.
pub(crate) fn create_new(path: &Path, direct: &mut bool) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if *direct {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct = false,
            other => return other,
        }
    }
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Turns O_DIRECT on or off for an open file.
pub(crate) fn set_direct(f: &fs::File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor `f` owns; no memory is passed.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A zeroed heap buffer aligned for O_DIRECT.
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, DIRECT_ALIGN).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` initialised bytes we own.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Removes what under `dir/rel` is not in `keep`; the count removed.
pub(crate) fn remove_unlisted(dir: &Path, rel: &Path, keep: &HashSet<PathBuf>) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir.join(rel))? {
        let e = e?;
        let r = rel.join(e.file_name());
        let t = e.file_type()?;
        if !keep.contains(&r) {
            if t.is_dir() {
                fs::remove_dir_all(e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
            n += 1;
        } else if t.is_dir() {
            n += remove_unlisted(dir, &r, keep)?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o700);
        h.set_size(0);
        b.append_data(&mut h, "base/", &[][..]).unwrap();
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_new_writes_every_size_exactly_direct_or_buffered() {
        let sizes = [0, 1, 4095, 4096, 8193, CHUNK, CHUNK + 4096, 2 * CHUNK + 17];
        let data: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i % 253) as u8 ^ (n % 7) as u8).collect())
            .collect();
        let names: Vec<String> = sizes.iter().map(|n| format!("base/1/{n}")).collect();
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .zip(&data)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let tar = tar_of(&files);
        for direct in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            unpack_new_with(&tar[..], &dir, direct).unwrap();
            for (name, want) in &files {
                assert_eq!(
                    &fs::read(dir.join(name)).unwrap()[..],
                    *want,
                    "{name} direct={direct}"
                );
            }
        }
    }

    #[test]
    fn writes_only_what_differs_and_removes_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let big: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let t = tar_of(&[
            ("PG_VERSION", b"15\n"),
            ("base/1", &big),
            ("base/2", b"two"),
        ]);
        let s = unpack(&t[..], &dir).unwrap();
        assert_eq!((s.files_written, s.files_kept, s.removed), (3, 0, 0));
        assert_eq!(fs::read(dir.join("base/1")).unwrap(), big);

        // identical: nothing written
        let s = unpack(&t[..], &dir).unwrap();
        assert_eq!((s.files_written, s.files_kept, s.bytes_written), (0, 3, 0));

        // damage the last chunk of base/1, lengthen base/2, add strays
        let mut damaged = big.clone();
        let at = 3 * CHUNK + 3;
        damaged[at] ^= 1;
        fs::write(dir.join("base/1"), &damaged).unwrap();
        fs::write(dir.join("base/2"), b"two and more").unwrap();
        fs::write(dir.join("postmaster.opts"), b"x").unwrap();
        fs::create_dir_all(dir.join("pg_wal/old")).unwrap();
        fs::write(dir.join("pg_wal/old/seg"), b"x").unwrap();
        let s = unpack(&t[..], &dir).unwrap();
        assert_eq!(s.files_written, 2, "{s:?}");
        assert_eq!(s.files_kept, 1, "{s:?}");
        assert_eq!(s.bytes_written, 17, "only the last chunk of base/1: {s:?}");
        assert_eq!(s.removed, 2, "{s:?}");
        assert_eq!(fs::read(dir.join("base/1")).unwrap(), big);
        assert_eq!(fs::read(dir.join("base/2")).unwrap(), b"two");
        assert!(!dir.join("postmaster.opts").exists());
        assert!(!dir.join("pg_wal").exists());

        // a removed file comes back
        fs::remove_file(dir.join("PG_VERSION")).unwrap();
        let s = unpack(&t[..], &dir).unwrap();
        assert_eq!((s.files_written, s.bytes_written), (1, 3));
    }

    #[test]
    fn members_outside_the_target_are_refused() {
        assert!(safe_relative(Path::new("../etc/passwd")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert_eq!(
            safe_relative(Path::new("./base/1")).unwrap(),
            PathBuf::from("base/1")
        );
    }
}

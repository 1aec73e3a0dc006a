//! The prefetch spool of `strata wal fetch`: segments fetched ahead of
//! PostgreSQL's requests, already decrypted and verified, so the next
//! `restore_command` call is a rename instead of a round trip.
//!
//! One directory per repository and source (`<root>/<repository id>-<source>/`),
//! so a spool is never served to the wrong archive. Entries are named like
//! the segment; they appear only by rename after verification and fsync,
//! so a present entry is complete. Temporary files start with `.`.
//!
//! The spool is filled by a background prefetcher (`wal prefetch-worker`,
//! one per spool, held by a `flock` on `prefetch.lock`) that keeps the K
//! segments after the one PostgreSQL asked for last (the `wanted` file)
//! downloaded, while PostgreSQL replays: `restore_command` returns as soon
//! as its own segment is in place.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{SegmentName, SegmentSize};

/// Temporary files older than this are leftovers of a killed fetch.
const TMP_MAX_AGE: Duration = Duration::from_secs(600);
/// The last segment handed to PostgreSQL, and the segment size.
const WANTED: &str = "wanted";
/// Held by the background prefetcher.
const LOCK: &str = "prefetch.lock";

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// The root is shared temp space: it must be ours and closed to others.
    shared: bool,
    dir: PathBuf,
}

/// The spool root when none is given: `pg_wal/strata-prefetch` when DEST is
/// in a `pg_wal` directory (PostgreSQL passes `pg_wal/RECOVERYXLOG`), else a
/// per-user directory in the temp dir. The second value says whether the
/// root is shared temp space (then its owner is checked).
pub fn default_root(dest: &Path) -> (PathBuf, bool) {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // by the name as given (pg_wal may be a symlink to another disk), else
    // by the resolved path (DEST given without a directory)
    let in_pg_wal = parent.file_name().is_some_and(|n| n == "pg_wal")
        || parent
            .canonicalize()
            .ok()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "pg_wal"));
    if in_pg_wal {
        (parent.join("strata-prefetch"), false)
    } else {
        let uid = unsafe { libc::geteuid() };
        (
            std::env::temp_dir().join(format!("strata-prefetch-{uid}")),
            true,
        )
    }
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Spool {
    /// The spool of one repository's source under `root`; nothing is
    /// created until [`create`](Self::create).
    pub fn new(root: &Path, shared: bool, repository_id: &str, source: &str) -> Spool {
        Spool {
            root: root.to_path_buf(),
            shared,
            dir: root.join(format!("{repository_id}-{source}")),
        }
    }

    /// Whether the root exists; an error when it is shared temp space that
    /// is not a directory of ours closed to others (then its entries could
    /// have been planted).
    fn check_root(&self) -> io::Result<bool> {
        let md = match fs::symlink_metadata(&self.root) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if self.shared
            && (!md.is_dir() || md.uid() != unsafe { libc::geteuid() } || md.mode() & 0o022 != 0)
        {
            return Err(io::Error::other(format!(
                "{} is not a directory of this user closed to others",
                self.root.display()
            )));
        }
        Ok(true)
    }

    /// Creates the spool directory (mode 0700).
    pub fn create(&self) -> io::Result<()> {
        make_dir(&self.root)?;
        self.check_root()?;
        make_dir(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, seg: SegmentName) -> PathBuf {
        self.dir.join(seg.to_string())
    }

    /// A fresh temporary name for downloading `seg`.
    pub fn tmp_path(&self, seg: SegmentName) -> PathBuf {
        self.dir.join(format!(
            ".{seg}.{}.tmp",
            hex::encode(rand::random::<[u8; 6]>())
        ))
    }

    /// The size of the spooled `seg`, if it is spooled and a valid
    /// segment size.
    pub fn spooled_size(&self, seg: SegmentName) -> Option<SegmentSize> {
        let md = fs::metadata(self.path(seg)).ok()?;
        SegmentSize::new(md.len())
    }

    pub fn contains(&self, seg: SegmentName) -> bool {
        self.path(seg).is_file()
    }

    /// Moves a spooled segment to `dest`; `false` when it is not spooled.
    pub fn take(&self, seg: SegmentName, dest: &Path) -> io::Result<bool> {
        if !self.check_root()? {
            return Ok(false);
        }
        let from = self.path(seg);
        match fs::rename(&from, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            // another file system (a --spool elsewhere): copy, then drop
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let tmp = super::archive::tmp_beside(dest, ".tmp");
                fs::copy(&from, &tmp)?;
                fs::rename(&tmp, dest)?;
                let _ = fs::remove_file(&from);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Records that PostgreSQL was given `seg`: the prefetcher moves on to
    /// the segments after it. Written by rename, so never seen half.
    pub fn set_wanted(&self, seg: SegmentName, size: SegmentSize) -> io::Result<()> {
        let tmp = self.dir.join(format!(
            ".{WANTED}.{}.tmp",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        fs::write(&tmp, format!("{seg} {}\n", size.bytes()))?;
        fs::rename(&tmp, self.dir.join(WANTED))
    }

    /// What [`set_wanted`](Self::set_wanted) recorded last.
    pub fn wanted(&self) -> Option<(SegmentName, SegmentSize)> {
        let text = fs::read_to_string(self.dir.join(WANTED)).ok()?;
        let mut it = text.split_whitespace();
        let seg = it.next()?.parse().ok()?;
        let size = SegmentSize::new(it.next()?.parse().ok()?)?;
        Some((seg, size))
    }

    /// Takes the prefetcher's lock, or `None` when another process holds it.
    pub fn try_lock(&self) -> io::Result<Option<fs::File>> {
        crate::util::try_flock(&self.dir.join(LOCK))
    }

    /// Whether a prefetcher runs for this spool now.
    pub fn prefetcher_running(&self) -> bool {
        self.dir.is_dir() && matches!(self.try_lock(), Ok(None))
    }

    /// Where the prefetcher writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("prefetch.log")
    }

    /// Whether a download of `seg` into the spool is under way (its
    /// temporary file exists).
    pub fn downloading(&self, seg: SegmentName) -> bool {
        let prefix = format!(".{seg}.");
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"))
            })
    }

    /// Removes every download's temporary file: left by a prefetcher that
    /// was killed (only the one holding the lock downloads into the spool,
    /// so at its start none is anyone's download).
    pub fn remove_downloads(&self) {
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let seg = name
                .strip_prefix('.')
                .and_then(|n| n.split('.').next())
                .and_then(|n| n.parse::<SegmentName>().ok());
            if seg.is_some() && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Spooled segments (complete entries only).
    pub fn entries(&self) -> Vec<SegmentName> {
        let mut v: Vec<SegmentName> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        v
    }

    /// After `served` was handed to PostgreSQL: removes entries it will not
    /// ask for (see [`is_stale`]) and old temporary files.
    pub fn clean(&self, served: SegmentName) {
        self.remove_where(|seg| is_stale(seg, served));
    }

    /// When PostgreSQL asks for `wanted` (the prefetcher's side): removes
    /// the entries before it, keeping `wanted` itself, which the `wal
    /// fetch` that asked for it is about to take (removing it made that
    /// fetch download it again: a race seen in tests/wal.rs).
    pub fn clean_before(&self, wanted: SegmentName) {
        self.remove_where(|seg| seg != wanted && is_stale(seg, wanted));
    }

    fn remove_where(&self, stale: impl Fn(SegmentName) -> bool) {
        let now = SystemTime::now();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let remove = match name.parse::<SegmentName>() {
                Ok(seg) => stale(seg),
                Err(_) if name.starts_with('.') && name.ends_with(".tmp") => e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > TMP_MAX_AGE),
                Err(_) => false,
            };
            if remove {
                tracing::debug!("prefetch spool: removing stale {name}");
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Whether a spooled `entry` is useless once `served` was restored:
/// PostgreSQL reads forward, so anything at or before `served` is done
/// with, and once a segment of one timeline was found, recovery follows
/// that timeline (entries of others are from before a switch).
pub fn is_stale(entry: SegmentName, served: SegmentName) -> bool {
    entry.timeline != served.timeline || (entry.log, entry.seg) <= (served.log, served.seg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> SegmentName {
        n.parse().unwrap()
    }

    #[test]
    fn staleness() {
        let served = s("000000020000000100000005");
        assert!(is_stale(s("000000020000000100000005"), served));
        assert!(is_stale(s("000000020000000100000004"), served));
        assert!(is_stale(s("0000000200000000000000FF"), served));
        assert!(!is_stale(s("000000020000000100000006"), served));
        assert!(!is_stale(s("000000020000000200000000"), served));
        assert!(is_stale(s("000000010000000100000006"), served));
        assert!(is_stale(s("000000030000000100000006"), served));
    }

    #[test]
    fn spool_take_and_clean() {
        let root = tempfile::tempdir().unwrap();
        let sp = Spool::new(&root.path().join("spool"), true, "repo", "main");
        let dest = root.path().join("RECOVERYXLOG");
        assert!(!sp.take(s("000000010000000000000004"), &dest).unwrap());
        assert!(!sp.dir().exists(), "nothing is created before a prefetch");
        sp.create().unwrap();
        assert!(sp.dir().ends_with("repo-main"));
        for n in [
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005",
            "000000020000000000000005",
        ] {
            fs::write(sp.path(s(n)), n).unwrap();
        }
        let tmp = sp.tmp_path(s("000000010000000000000006"));
        fs::write(&tmp, "partial download").unwrap();
        fs::write(sp.dir().join("unrelated"), "x").unwrap();

        assert!(sp.take(s("000000010000000000000004"), &dest).unwrap());
        assert_eq!(
            fs::read_to_string(&dest).unwrap(),
            "000000010000000000000004"
        );
        assert!(!sp.take(s("000000010000000000000004"), &dest).unwrap());
        sp.clean(s("000000010000000000000004"));
        assert_eq!(sp.entries(), vec![s("000000010000000000000005")]);
        assert!(tmp.exists(), "a fresh temporary file is someone's download");
        assert!(sp.dir().join("unrelated").exists());

        // a shared root open to others is not trusted
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.path().join("spool"), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(sp.take(s("000000010000000000000005"), &dest).is_err());
    }

    #[test]
    fn wanted_lock_and_downloads() {
        let root = tempfile::tempdir().unwrap();
        let sp = Spool::new(root.path(), false, "repo", "main");
        sp.create().unwrap();
        assert_eq!(sp.wanted(), None);
        let size = SegmentSize::new(16 << 20).unwrap();
        sp.set_wanted(s("000000010000000000000004"), size).unwrap();
        sp.set_wanted(s("000000010000000000000005"), size).unwrap();
        assert_eq!(sp.wanted(), Some((s("000000010000000000000005"), size)));
        assert!(sp.entries().is_empty(), "bookkeeping files are no entries");

        assert!(!sp.prefetcher_running());
        let lock = sp.try_lock().unwrap().expect("free");
        assert!(sp.prefetcher_running());
        assert!(sp.try_lock().unwrap().is_none(), "one prefetcher per spool");
        drop(lock);
        assert!(!sp.prefetcher_running());

        let seg = s("000000010000000000000006");
        assert!(!sp.downloading(seg));
        fs::write(sp.tmp_path(seg), b"half").unwrap();
        assert!(sp.downloading(seg));
        assert!(!sp.downloading(s("000000010000000000000007")));
        sp.remove_downloads();
        assert!(!sp.downloading(seg));
        assert!(sp.wanted().is_some(), "only downloads are removed");
    }

    #[test]
    fn the_prefetcher_keeps_the_segment_a_fetch_is_taking() {
        // the race behind a flaky tests/wal.rs prefetch test: `wal fetch`
        // records `wanted` before it takes that segment from the spool;
        // the prefetcher's clean on seeing it must leave it there
        let root = tempfile::tempdir().unwrap();
        let sp = Spool::new(root.path(), false, "repo", "main");
        sp.create().unwrap();
        for n in [
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
        ] {
            fs::write(sp.path(s(n)), b"x").unwrap();
        }
        sp.clean_before(s("000000010000000000000005"));
        assert_eq!(
            sp.entries(),
            vec![s("000000010000000000000005"), s("000000010000000000000006")]
        );
        sp.clean(s("000000010000000000000005"));
        assert_eq!(sp.entries(), vec![s("000000010000000000000006")]);
    }

    #[test]
    fn default_root_in_pg_wal() {
        let d = tempfile::tempdir().unwrap();
        let pg_wal = d.path().join("pg_wal");
        fs::create_dir(&pg_wal).unwrap();
        let (root, shared) = default_root(&pg_wal.join("RECOVERYXLOG"));
        assert_eq!(root, pg_wal.join("strata-prefetch"));
        assert!(!shared);
        let (root, shared) = default_root(&d.path().join("x"));
        assert!(shared);
        assert!(root.starts_with(std::env::temp_dir()));
    }
}

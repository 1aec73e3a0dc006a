//! Asynchronous archiving (`strata wal push --async`): the pgBackRest
//! model of a local spool and a background pusher.
//!
//! PostgreSQL runs `archive_command` once per file and waits for it, so a
//! synchronous push costs one process start, one repository open and one
//! upload round trip per 16 MiB, one file at a time: under heavy write load
//! the archiver falls behind and `pg_wal` grows. In asynchronous mode:
//!
//! - `archive_command` (the *foreground*) looks in the spool for its file's
//!   result. `NAME.ok`: the file is durable in the repository; exit 0.
//!   `NAME.error`: report the pusher's error and exit non-zero (the result
//!   is removed, so PostgreSQL's retry pushes again). Neither: make sure the
//!   pusher runs and wait (bounded) for one of them.
//! - the *pusher* (`wal push-worker`, one per spool, held by an exclusive
//!   `flock` on `pusher.lock`) reads `pg_wal/archive_status/*.ready` —
//!   PostgreSQL's own queue of files waiting for archiving — and pushes
//!   them from `pg_wal` with N uploads in flight, through the same
//!   [`WalArchive::push`](super::archive::WalArchive::push) as a synchronous
//!   push (system identifier, create-only record, identical re-push is
//!   success, different content is refused). Each result lands in the spool
//!   as `NAME.ok` or `NAME.error`. With nothing left to push for a while it
//!   exits; the next `archive_command` starts it again.
//!
//! Success is still reported only for files that are durable in the
//! repository: `.ok` is written after the push returned, and the push
//! returns after the object and its record are stored. The pusher reads the
//! segment straight from `pg_wal` (no copy): PostgreSQL neither removes nor
//! recycles a segment before `archive_command` reported success for it, and
//! a `.ready` file is created only once the segment is complete.
//!
//! The spool holds no WAL, only small result files: losing it loses
//! nothing (a segment whose `.ok` is gone is pushed again, which is an
//! identical re-push).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::WalFile;
use crate::error::{Error, Kind};

/// Default number of uploads the pusher keeps in flight.
pub const DEFAULT_PROCESSES: u32 = 4;
/// Upper bound of `archive_push_processes`.
pub const MAX_PROCESSES: u32 = 64;
/// How long `archive_command` waits for its file's result by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the spool directory made inside `pg_wal` (not part of base
/// backups: pg_basebackup copies none of `pg_wal`'s contents).
pub const SPOOL_DIR_NAME: &str = "strata-push";

/// `[sources.X] archive_async`, `archive_push_processes`,
/// `archive_push_queue_max`, `archive_spool_path`, `archive_push_timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncSettings {
    /// Push asynchronously even without `--async`.
    pub enabled: bool,
    /// Uploads in flight.
    pub processes: u32,
    /// When the files waiting in `pg_wal` exceed this many bytes, report
    /// success WITHOUT archiving (pgBackRest's `archive-push-queue-max`):
    /// keeps the primary up when the repository is unreachable, at the
    /// price of a gap in the archive. `None`: never.
    pub queue_max: Option<u64>,
    /// Spool directory [default: `pg_wal/strata-push`].
    pub spool: Option<PathBuf>,
    /// How long `archive_command` waits for its result.
    pub timeout: Duration,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        AsyncSettings {
            enabled: false,
            processes: DEFAULT_PROCESSES,
            queue_max: None,
            spool: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `4GiB`, `512MiB`, `1G`, `1000000`: a byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4GiB, 512MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    Ok((n * mult as f64) as u64)
}

/// The spool of one source: result files, the pusher's lock and log.
#[derive(Debug, Clone)]
pub struct PushSpool {
    dir: PathBuf,
}

/// An error the pusher wrote for one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorFile {
    pub exit_code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl ErrorFile {
    pub fn of(e: &Error) -> ErrorFile {
        ErrorFile {
            exit_code: e.exit_code(),
            message: e.message.clone(),
            hint: e.hint.clone(),
        }
    }

    pub fn into_error(self, name: &str, log: &Path) -> Error {
        let kind = Kind::from_exit_code(self.exit_code);
        let e = Error::new(
            kind,
            format!(
                "the background pusher could not archive {name}: {}",
                self.message
            ),
        );
        match self.hint {
            Some(h) => e.hint(format!("{h} (pusher log: {})", log.display())),
            None => e.hint(format!(
                "PostgreSQL retries; the next attempt pushes it again (pusher log: {})",
                log.display()
            )),
        }
    }
}

/// The result of a file, if the pusher wrote one.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Ok,
    Error(ErrorFile),
}

impl PushSpool {
    /// `root/<source>`; `root` defaults to `pg_wal/strata-push` (the
    /// directory of the file PostgreSQL passes as %p).
    pub fn new(root: &Path, source: &str) -> PushSpool {
        PushSpool {
            dir: root.join(source),
        }
    }

    pub fn default_root(pg_wal: &Path) -> PathBuf {
        pg_wal.join(SPOOL_DIR_NAME)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pusher.log")
    }

    fn ok_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ok"))
    }

    fn error_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.error"))
    }

    /// Whether the pusher already has a result for `name`.
    pub fn has_result(&self, name: &str) -> bool {
        self.ok_path(name).exists() || self.error_path(name).exists()
    }

    /// Reads `name`'s result. An error is removed as it is read (it is
    /// reported once; PostgreSQL's retry pushes the file again); a `.ok`
    /// stays until the pusher sees the file leave the queue.
    pub fn take(&self, name: &str) -> io::Result<Option<Outcome>> {
        if self.ok_path(name).exists() {
            return Ok(Some(Outcome::Ok));
        }
        let err = self.error_path(name);
        match fs::read(&err) {
            Ok(bytes) => {
                fs::remove_file(&err)?;
                let e = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorFile {
                    exit_code: 1,
                    message: String::from_utf8_lossy(&bytes).trim().to_string(),
                    hint: None,
                });
                Ok(Some(Outcome::Error(e)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `name`'s result (temporary name, then rename: the
    /// foreground never reads half a file). Not fsynced: a lost `.ok`
    /// only means an identical re-push.
    pub fn write(&self, name: &str, outcome: &Outcome) -> io::Result<()> {
        let (path, body) = match outcome {
            Outcome::Ok => (self.ok_path(name), Vec::new()),
            Outcome::Error(e) => (
                self.error_path(name),
                serde_json::to_vec(e).expect("error file serialises"),
            ),
        };
        let tmp = self.dir.join(format!("{name}.result.tmp"));
        fs::write(&tmp, body)?;
        fs::rename(&tmp, &path)
    }

    /// Removes results older than `age` (of files PostgreSQL never asked
    /// about again, e.g. after a foreground timeout).
    pub fn sweep(&self, age: Duration) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let is_result = p
                .extension()
                .is_some_and(|x| x == "ok" || x == "error" || x == "tmp");
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|a| a > age);
            if is_result && old {
                let _ = fs::remove_file(&p);
            }
        }
    }

    /// Takes the pusher's lock, or `None` when another process holds it.
    /// The lock lives as long as the returned file.
    pub fn try_lock(&self) -> io::Result<Option<File>> {
        let f = self.lock()?;
        if let Some(mut f) = f {
            let _ = f.set_len(0);
            let _ = writeln!(f, "{}", std::process::id());
            return Ok(Some(f));
        }
        Ok(None)
    }

    fn lock(&self) -> io::Result<Option<File>> {
        crate::util::try_flock(&self.dir.join("pusher.lock"))
    }

    /// Whether a pusher holds the lock now.
    pub fn pusher_running(&self) -> bool {
        matches!(self.lock(), Ok(None))
    }

    /// Removes the `.ok` of files no longer in PostgreSQL's queue: the
    /// server has recorded their success. (A `.ok` stays until then, so a
    /// server that asks again after a crash is answered at once.)
    pub fn forget_archived(&self, queued: &std::collections::HashSet<String>) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let n = e.file_name();
            if let Some(stem) = n.to_str().and_then(|n| n.strip_suffix(".ok"))
                && !queued.contains(stem)
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The files PostgreSQL has queued for archiving (`archive_status/*.ready`)
/// in push order: history files first (a new timeline's history must be
/// archived before its segments, as PostgreSQL's archiver does), then by
/// name.
pub fn ready_files(pg_wal: &Path) -> io::Result<Vec<WalFile>> {
    let mut v = Vec::new();
    for e in fs::read_dir(pg_wal.join("archive_status"))? {
        let e = e?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".ready")) else {
            continue;
        };
        if let Ok(f) = stem.parse::<WalFile>() {
            v.push(f);
        }
    }
    order(&mut v);
    Ok(v)
}

/// History files first, then the rest by name.
pub fn order(v: &mut [WalFile]) {
    v.sort_by_key(|f| (!matches!(f, WalFile::History(_)), f.to_string()));
}

/// Bytes of the files waiting in `pg_wal` (for `archive_push_queue_max`).
pub fn queue_bytes(pg_wal: &Path) -> io::Result<u64> {
    Ok(ready_files(pg_wal)?
        .iter()
        .filter_map(|f| fs::metadata(pg_wal.join(f.to_string())).ok())
        .map(|m| m.len())
        .sum())
}

/// Whether `path`'s file is in PostgreSQL's archive queue (its `.ready`
/// exists): only then can the pusher find it.
pub fn is_queued(path: &Path) -> bool {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => dir
            .join("archive_status")
            .join(format!("{name}.ready"))
            .exists(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn config_keys() {
        let key = age::x25519::Identity::generate().to_public().to_string();
        let cfg = |extra: &str| {
            crate::config::Config::parse(
                Path::new("/etc/strata/strata.toml"),
                &format!(
                    "[repository]\nurl = \"file:///r\"\n[encryption]\nrecipients = [\"{key}\"]\n\
                     [sources.main]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n{extra}"
                ),
            )
        };
        let c = cfg("").unwrap();
        assert_eq!(c.sources["main"].archive_push, AsyncSettings::default());
        let c = cfg(
            "archive_async = true\narchive_push_processes = 8\narchive_push_queue_max = \"2GiB\"\n\
             archive_spool_path = \"spool\"\narchive_push_timeout = \"90s\"\n",
        )
        .unwrap();
        let s = &c.sources["main"].archive_push;
        assert!(s.enabled);
        assert_eq!(s.processes, 8);
        assert_eq!(s.queue_max, Some(2 << 30));
        assert_eq!(s.spool.as_deref(), Some(Path::new("/etc/strata/spool")));
        assert_eq!(s.timeout, Duration::from_secs(90));
        let e = cfg("archive_push_processes = 0\n").unwrap_err();
        assert!(
            e.message.contains("archive_push_processes"),
            "{}",
            e.message
        );
        let e = cfg("archive_push_queue_max = \"lots\"\n").unwrap_err();
        assert!(
            e.message.contains("archive_push_queue_max"),
            "{}",
            e.message
        );
    }

    #[test]
    fn history_files_go_first() {
        let mut v: Vec<WalFile> = [
            "000000020000000000000004",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        order(&mut v);
        let names: Vec<String> = v.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            names,
            [
                "00000002.history",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003.partial",
                "000000020000000000000004",
            ]
        );
    }

    #[test]
    fn results_are_reported_once() {
        let tmp = tempfile::tempdir().unwrap();
        let sp = PushSpool::new(tmp.path(), "main");
        sp.create().unwrap();
        let n = "000000010000000000000002";
        assert_eq!(sp.take(n).unwrap(), None);
        sp.write(n, &Outcome::Ok).unwrap();
        assert!(sp.has_result(n));
        assert_eq!(sp.take(n).unwrap(), Some(Outcome::Ok));
        let mut queued = std::collections::HashSet::new();
        queued.insert(n.to_string());
        sp.forget_archived(&queued);
        assert_eq!(sp.take(n).unwrap(), Some(Outcome::Ok), "still queued");
        sp.forget_archived(&Default::default());
        assert_eq!(sp.take(n).unwrap(), None);
        let e = ErrorFile {
            exit_code: 8,
            message: "different content".into(),
            hint: Some("look".into()),
        };
        sp.write(n, &Outcome::Error(e.clone())).unwrap();
        assert_eq!(sp.take(n).unwrap(), Some(Outcome::Error(e)));
        assert!(!sp.has_result(n));
    }

    #[test]
    fn one_pusher_per_spool() {
        let tmp = tempfile::tempdir().unwrap();
        let sp = PushSpool::new(tmp.path(), "main");
        sp.create().unwrap();
        let held = sp.try_lock().unwrap();
        assert!(held.is_some());
        assert!(sp.pusher_running());
        drop(held);
        assert!(!sp.pusher_running());
    }
}

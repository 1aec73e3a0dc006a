//! Crash points: a test hook that kills strata at its Nth durable step.
//!
//! Why: strata's promise is that a crash at any moment (power cut, OOM
//! kill, `kill -9`) leaves a repository in which everything listed
//! verifies, the WAL archive has no gap and the next run completes. That
//! promise is only as good as the test that walks every moment, so every
//! durable step of the local store (after a temporary file is created,
//! fsynced, linked or renamed into place and its directory fsynced; before
//! a file is deleted or a temporary one aborted) calls [`step`], and
//! `tests/crash_points.rs` runs each command once per step with the
//! process killed right there. Every writer goes through the store:
//! backups of every kind, manifests, locks, `wal push` (also its
//! background pusher), `prune` and `cleanup`.
//!
//! Environment (read once per process; children such as the background
//! WAL pusher inherit it and count their own steps):
//! - `STRATA_CRASH_AT=N` (1-based): at the Nth step this process sends
//!   itself SIGKILL — no destructor, no flush, exactly what a crash looks
//!   like to the repository.
//! - `STRATA_CRASH_LOG=PATH`: every step appends `<pid> <n> <what>` to
//!   PATH (one `write` per line, `O_APPEND`), so a test can count a
//!   command's steps and see where each process died.
//!
//! Without either variable a step costs one check of an initialised
//! `OnceLock`: harmless in release builds.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Config {
    at: Option<u64>,
    log: Option<std::path::PathBuf>,
}

static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
static COUNT: AtomicU64 = AtomicU64::new(0);

fn config() -> Option<&'static Config> {
    CONFIG
        .get_or_init(|| {
            parse(
                std::env::var("STRATA_CRASH_AT").ok().as_deref(),
                std::env::var_os("STRATA_CRASH_LOG").as_deref(),
            )
        })
        .as_ref()
}

/// The hook's settings; `None` (inert) unless a step number (1 or more)
/// or a log path is given.
fn parse(at: Option<&str>, log: Option<&std::ffi::OsStr>) -> Option<Config> {
    let at = at
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0);
    let log = log.filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    (at.is_some() || log.is_some()).then_some(Config { at, log })
}

/// One durable step (`what` names it and its key, e.g.
/// `put-linked manifests/app/ID.json`): logged, and the process killed
/// here when this is step `STRATA_CRASH_AT`.
pub fn step(what: impl std::fmt::Display) {
    let Some(cfg) = config() else { return };
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(path) = &cfg.log
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(format!("{} {n} {what}\n", std::process::id()).as_bytes());
    }
    if cfg.at == Some(n) {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // the signal is delivered before kill returns for our own pid;
        // never go on past the crash point
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::ffi::OsStr;

    #[test]
    fn inert_without_a_step_or_a_log() {
        assert!(parse(None, None).is_none());
        assert!(parse(Some("0"), Some(OsStr::new(""))).is_none());
        assert!(parse(Some("soon"), None).is_none());
        let c = parse(Some(" 7 "), None).unwrap();
        assert_eq!((c.at, c.log), (Some(7), None));
        let c = parse(None, Some(OsStr::new("/tmp/x.log"))).unwrap();
        assert_eq!(c.at, None);
        assert_eq!(c.log.as_deref(), Some(std::path::Path::new("/tmp/x.log")));
    }
}

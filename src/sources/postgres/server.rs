//! Running a restored PostgreSQL copy: `pg_ctl start` (as the data
//! directory's OS user when strata runs as root), waiting until the server
//! has left recovery, `pg_ctl stop`, and reading its log for why
//! `strata wal fetch` stopped recovery. `restore --start` and the drill's
//! recoveries share it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Target;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct StartOptions {
    pub port: u16,
    pub pg_ctl: PathBuf,
    /// Connect as this (the source's URL, host and port replaced).
    pub connect: Target,
    pub timeout: Duration,
}

pub(crate) fn chown_recursive(dir: &Path, user: &str) -> Result<()> {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(dir)
        .output()
        .map_err(|e| Error::failed(format!("cannot run chown: {e}")))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "chown -R {user}: {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .hint("pass --run-as with an existing OS user"));
    }
    Ok(())
}

/// A server program, as `owner` via runuser when given.
pub(crate) fn as_owner(prog: &Path, owner: Option<&str>) -> Command {
    match owner {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

pub(crate) fn server_log(dir: &Path) -> PathBuf {
    dir.join("strata-restore.log")
}

pub(crate) fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(server_log(dir)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Async, and killed when dropped: a drill interrupted while the server
/// starts (with `-w`, for a recovering server that can be the whole WAL
/// replay) does not wait for pg_ctl to return; the sandbox's teardown
/// stops the server itself.
pub(crate) async fn pg_ctl_start(
    dir: &Path,
    start: &StartOptions,
    owner: Option<&str>,
) -> Result<()> {
    let mut cmd = as_owner(&start.pg_ctl, owner);
    // working in the data directory: a drill's teardown kills every
    // process working inside its sandbox (runuser does not pass the
    // SIGKILL of kill_on_drop on to pg_ctl)
    cmd.current_dir(dir)
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(server_log(dir))
        .arg("-o")
        .arg(format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            start.port,
            dir.display()
        ))
        .args(["-w", "-t", "600", "start"])
        .stdin(Stdio::null());
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        if let Some(e) = fetch_failed(dir) {
            return Err(e);
        }
        return Err(Error::source(format!(
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            log_tail(dir)
        ))
        .hint(format!("the server log is {}", server_log(dir).display())));
    }
    Ok(())
}

/// `pg_ctl stop -m fast`; whether it stopped.
pub(super) async fn pg_ctl_stop(dir: &Path, start: &StartOptions, owner: Option<&str>) -> bool {
    let mut cmd = as_owner(&start.pg_ctl, owner);
    cmd.arg("-D")
        .arg(dir)
        .args(["-m", "fast", "-w", "stop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// What `strata wal fetch` printed into the server log when it failed and
/// stopped recovery (see `commands::wal::FETCH_FAILED`): its error lines
/// and the kind of the failure, when it said.
pub(crate) fn fetch_failures(dir: &Path) -> Option<(Vec<String>, crate::error::Kind)> {
    let log = std::fs::read_to_string(server_log(dir)).ok()?;
    let errors: Vec<String> = log
        .lines()
        .filter(|l| l.contains("strata: error:"))
        .take(3)
        .map(String::from)
        .collect();
    if errors.is_empty() {
        return None;
    }
    let kind = log
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("strata: wal fetch failed with exit code ")?.1;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u8>().ok()
        })
        .map(crate::error::Kind::from_exit_code)
        .next()
        .unwrap_or(crate::error::Kind::Failed);
    Some((errors, kind))
}

/// How the error of a recovery that `wal fetch` stopped begins (the drill
/// turns it into its failed "WAL replayed completely" check).
pub const RECOVERY_STOPPED: &str = "recovery stopped";

/// The error for a server that stopped because `strata wal fetch` could
/// not deliver a file (see [`fetch_failures`]), if that is why.
fn fetch_failed(dir: &Path) -> Option<Error> {
    let (errors, kind) = fetch_failures(dir)?;
    Some(
        Error::new(
            kind,
            format!(
                "{RECOVERY_STOPPED}: `strata wal fetch` could not deliver a WAL file the server needs, so the restore stops here rather than ending short of its target: {}",
                errors.join(" | ")
            ),
        )
        .hint(format!(
            "`strata verify --read-data` checks every archived WAL file; to restore to a point before the damage, use --to-lsn or --to-time before it; the server log is {}",
            server_log(dir).display()
        )),
    )
}

/// Polls until the server has left recovery (promoted at the target).
pub(crate) async fn wait_promoted(
    dir: &Path,
    start: &StartOptions,
    owner: Option<&str>,
) -> Result<tokio_postgres::Client> {
    let deadline = Instant::now() + start.timeout;
    // one connection, asked every 50 ms (the restore's clock stops at the
    // promotion); whether the server still runs is checked once a second
    let mut client: Option<tokio_postgres::Client> = None;
    let mut checked = Instant::now();
    loop {
        if client.is_none() {
            match start.connect.connect().await {
                Ok(c) => client = Some(c),
                // a refusal no wait can cure (a TLS certificate, a bad
                // key): fail now, not when the timeout (up to an hour) ends
                Err(e) if !e.retryable => return Err(e),
                Err(_) => {}
            }
        }
        if let Some(c) = &client {
            match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                Ok(row) if !row.get::<_, bool>(0) => return Ok(client.take().expect("connected")),
                Ok(_) => {}
                Err(_) => client = None,
            }
        }
        if client.is_none() || checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            let mut status = as_owner(&start.pg_ctl, owner);
            status
                .arg("-D")
                .arg(dir)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let running = tokio::process::Command::from(status)
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success());
            if !running {
                if let Some(e) = fetch_failed(dir) {
                    return Err(e);
                }
                return Err(Error::source(format!(
                    "the restored server stopped during recovery:\n{}",
                    log_tail(dir)
                ))
                .hint("a target before the backup's end or past the archived WAL stops recovery; see the server log"));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::source(format!(
                "the restored server did not finish recovery within {}s:\n{}",
                start.timeout.as_secs(),
                log_tail(dir)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

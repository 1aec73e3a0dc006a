//! The scheduler daemon's child processes: a drill tier runs as a
//! `strata drill` child (it starts servers in a sandbox, and its report
//! must not mix with the daemon's log), and a shutdown that abandons jobs
//! signals every child (the client programs of running backups, drills)
//! found in `/proc`.

use std::path::Path;

use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};

/// Runs `strata drill --tier NAME --json` as a child process: a drill
/// starts servers in a sandbox and tears them down on SIGTERM (which the
/// shutdown sends to children), and its report must not mix with the
/// daemon's log on stdout. Its report when it passed, else an error
/// carrying its failures.
pub async fn drill(cfg: &Config, tier: &str, identity: Option<&Path>) -> Result<Value> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find the strata binary to run a drill: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--config").arg(&cfg.path);
    if let Some(id) = identity {
        cmd.arg("--identity").arg(id);
    }
    cmd.args(["--json", "drill", "--tier", tier])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::failed(format!("cannot start `strata drill`: {e}")))?;
    let report: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(report.unwrap_or(Value::Null));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    tail.reverse();
    let why = match &report {
        // `--json` errors are {"error", "hint", ...}; a failed drill is its report.
        Some(v) if v.get("error").is_some() => v["error"].as_str().unwrap_or("").to_string(),
        Some(v) => {
            let failed: Vec<&str> = v["sources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|s| s["passed"] != true)
                        .filter_map(|s| s["source"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "drill {} FAILED (sources: {}){}",
                v["id"].as_str().unwrap_or("?"),
                failed.join(", "),
                v["faults"]
                    .as_array()
                    .filter(|f| !f.is_empty())
                    .map(|f| format!("; faults: {}", Value::Array(f.clone())))
                    .unwrap_or_default()
            )
        }
        None => format!(
            "`strata drill` exited with {}: {}",
            out.status,
            tail.join(" | ")
        ),
    };
    let kind = match out.status.code() {
        Some(4) => crate::error::Kind::Integrity,
        Some(130) => crate::error::Kind::Interrupted,
        _ => crate::error::Kind::Failed,
    };
    let hint = report
        .as_ref()
        .and_then(|v| v.get("hint"))
        .and_then(|h| h.as_str())
        .map(String::from)
        .unwrap_or_else(|| {
            format!("`strata drill history` lists drills; `strata drill --tier {tier}` runs this one by hand")
        });
    Err(Error::new(kind, why).hint(hint))
}

/// Sends `sig` to this process's children: the client programs of the
/// running jobs (`pg_dump`, `pg_dumpall`, `pg_basebackup`) and drills
/// (`strata drill`). The daemon starts no other processes.
pub fn signal_children(sig: libc::c_int) -> Vec<String> {
    let mut out = Vec::new();
    for pid in child_pids() {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // SAFETY: kill(2) with a pid read from /proc; at worst it is gone.
        unsafe {
            libc::kill(pid, sig);
        }
        out.push(format!("{}[{pid}]", name.trim()));
    }
    out
}

/// Pids whose parent is this process, from /proc.
fn child_pids() -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parent_of(&s))
                == Some(me)
        })
        .collect()
}

/// The parent pid in a `/proc/PID/stat` line: the second field after the
/// command name, which is in parentheses and may itself hold `)` or spaces.
fn parent_of(stat: &str) -> Option<libc::pid_t> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_from_stat() {
        assert_eq!(
            parent_of("4242 (pg_dump) S 17 4242 17 0 -1 4194560 0"),
            Some(17)
        );
        assert_eq!(parent_of("9 (a) b) c) R 3 9 9"), Some(3));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn own_children_are_found() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(child_pids().contains(&(child.id() as libc::pid_t)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

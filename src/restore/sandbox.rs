//! The throwaway place a drill (or `strata restore --table --to-time`)
//! restores into: one directory under the work dir, and the servers
//! started in it.
//!
//! Teardown must happen whatever ends the drill — success, a failed
//! check, an error, Ctrl-C or SIGTERM — and must not depend on knowing
//! every pid (a server may be mid-start when the signal comes). So it
//! works from the directory: PostgreSQL data dirs registered before their
//! server starts are stopped with `pg_ctl stop -m immediate`, known pids
//! are killed, then every process whose working directory lies inside the
//! sandbox (postgres and redis-server both chdir into their data
//! directory; so do the `strata wal fetch` children of a recovering
//! server) is killed, and the directory is removed. Teardown runs again
//! on drop, so an early return cannot skip it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct State {
    /// PostgreSQL data dirs: (dir, pg_ctl, owner).
    pg: Vec<(PathBuf, PathBuf, Option<String>)>,
    pids: Vec<u32>,
    removed: bool,
}

/// A drill's sandbox; clones share it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
    state: Arc<Mutex<State>>,
    _guard: Arc<Guard>,
}

/// Tears down when the last clone is dropped.
#[derive(Debug)]
struct Guard {
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        teardown(&self.root, &self.state, true);
    }
}

impl Sandbox {
    /// Creates `<work_dir>/strata-drill-<id>`. Mode 0711: servers running
    /// as another user (postgres, when strata runs as root) must reach
    /// their directories inside it, but may not list it.
    pub fn create(work_dir: &Path, id: &str) -> Result<Sandbox> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(work_dir)
            .map_err(|e| Error::usage(format!("--work-dir {}: {e}", work_dir.display())))?;
        let root = work_dir
            .canonicalize()
            .map_err(|e| Error::usage(format!("--work-dir {}: {e}", work_dir.display())))?
            .join(format!("strata-drill-{id}"));
        std::fs::create_dir(&root).map_err(|e| {
            Error::failed(format!("cannot create the sandbox {}: {e}", root.display())).hint(
                "--work-dir must be writable and have room for a restored copy of each source",
            )
        })?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))?;
        let state = Arc::new(Mutex::new(State::default()));
        Ok(Sandbox {
            _guard: Arc::new(Guard {
                root: root.clone(),
                state: state.clone(),
            }),
            root,
            state,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new directory for one source (not created).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Records a PostgreSQL data dir before its server starts.
    pub fn register_pg(&self, dir: &Path, pg_ctl: &Path, owner: Option<&str>) {
        self.state.lock().unwrap().pg.push((
            dir.to_path_buf(),
            pg_ctl.to_path_buf(),
            owner.map(String::from),
        ));
    }

    pub fn register_pid(&self, pid: u32) {
        self.state.lock().unwrap().pids.push(pid);
    }

    /// Stops every server started so far (the directory stays): called
    /// after each source's checks, so sources do not pile up.
    pub fn stop_servers(&self) {
        teardown(&self.root, &self.state, false);
    }

    /// Stops every server and removes the directory. Idempotent.
    pub fn teardown(&self) {
        teardown(&self.root, &self.state, true);
    }
}

fn teardown(root: &Path, state: &Mutex<State>, remove: bool) {
    let mut st = match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if st.removed {
        return;
    }
    for (dir, pg_ctl, owner) in std::mem::take(&mut st.pg) {
        if dir.join("postmaster.pid").exists() {
            let _ = crate::sources::postgres::server::as_owner(&pg_ctl, owner.as_deref())
                .arg("-D")
                .arg(&dir)
                .args(["stop", "-m", "immediate", "-w", "-t", "30"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let pids = std::mem::take(&mut st.pids);
    for pid in &pids {
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whatever is left with its working directory in the sandbox.
    for _ in 0..3 {
        let left = processes_in(root);
        if left.is_empty() {
            break;
        }
        for pid in left {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if remove {
        if root.exists()
            && let Err(e) = std::fs::remove_dir_all(root)
        {
            eprintln!(
                "warning: could not remove the drill sandbox {}: {e}",
                root.display()
            );
        }
        st.removed = true;
    }
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids (not ours) whose working directory is inside `root`.
pub fn processes_in(root: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
        (cwd.starts_with(root) && alive(pid)).then_some(pid)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_kills_what_runs_inside_and_removes_the_dir() {
        let work = tempfile::tempdir().unwrap();
        let sb = Sandbox::create(work.path(), "t1").unwrap();
        let d = sb.dir("x");
        std::fs::create_dir(&d).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&d)
            .spawn()
            .unwrap();
        assert_eq!(processes_in(sb.root()), vec![child.id()]);
        let root = sb.root().to_path_buf();
        drop(sb);
        let _ = child.wait();
        assert!(!root.exists());
        assert!(processes_in(&root).is_empty());
    }
}

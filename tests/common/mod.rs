//! Shared test harness: real servers (PostgreSQL, the S3-protocol server,
//! later Redis and Chroma) started once per test binary on loopback, and
//! helpers to run the built `strata` binary against them.
//!
//! Servers are children of the test process; they are registered here and
//! stopped by an `atexit` hook when the test binary exits, so a finished
//! `cargo test` leaves no server behind.
#![allow(dead_code)]

pub mod archiving;
pub mod chroma;
pub mod cli;
pub mod faults;
pub mod https;
pub mod incremental;
pub mod moto;
pub mod pg;
pub mod pki;
pub mod redis;
pub mod s3;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, Once};

static CLEANUPS: Mutex<Vec<Box<dyn FnOnce() + Send>>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

extern "C" fn run_cleanups() {
    let list = match CLEANUPS.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for f in list.into_iter().rev() {
        f();
    }
}

/// Runs `f` when the test binary exits (normally or after failed tests).
pub fn at_exit(f: impl FnOnce() + Send + 'static) {
    HOOK.call_once(|| unsafe {
        libc::atexit(run_cleanups);
    });
    CLEANUPS.lock().unwrap().push(Box::new(f));
}

/// Kills a child process (by pid) at exit.
pub fn kill_at_exit(pid: u32) {
    at_exit(move || unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    });
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768–60999 here): a port the
    // kernel hands out meanwhile — to strata's replication listener on
    // port 0 in a parallel test, or to an outgoing connection — can then
    // never be the one a server we start is about to bind (it happened:
    // a test's Redis client talked to another test's strata listener).
    // Each pick moves on, so parallel tests never get the same port.
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::SeqCst) == u32::MAX {
        // a different start per test binary (they may overlap in time)
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// The `strata` binary cargo built for this test run.
pub fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// `Command::new(strata)`, with the PostgreSQL under test first on its
/// `PATH` when that is not the default one (see [`pg::strata_path`]).
pub fn strata_process() -> Command {
    let mut c = Command::new(strata_bin());
    if let Some(path) = pg::strata_path() {
        c.env("PATH", path);
    }
    c
}

/// True when running as root (then servers run as the `postgres` user).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `strata key generate --out PATH` and returns the public recipient.
pub fn generate_key(path: &std::path::Path) -> String {
    let out = run_ok(
        strata_process()
            .args(["key", "generate", "--out"])
            .arg(path),
    );
    out.split_whitespace()
        .find(|w| w.starts_with("age1"))
        .expect("key generate prints the public key")
        .to_string()
}

/// A command's status and output, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

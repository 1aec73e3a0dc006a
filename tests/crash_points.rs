//! Crash points (issue 13, fault suite): every durable step of the local
//! store (temporary file created, fsynced, linked or renamed into place,
//! directory fsynced, file deleted; see `src/crashpoint.rs`) is a place
//! where strata may die. Each test below runs one command once to count
//! its steps, then again and again with `STRATA_CRASH_AT=i` (SIGKILL at
//! step i, what a power cut or an OOM kill looks like to the repository),
//! and after each death checks the repository's invariants:
//!
//! - `verify --read-data` passes: nothing listed fails to verify (leftovers
//!   of the dead run are reported, not failures), no manifest is unreadable;
//! - for WAL: a `wal fetch` of the segment being pushed either says "not
//!   archived" (exit 1) or returns the identical bytes, never anything else;
//!   once the push is retried (PostgreSQL retries), every pushed segment is
//!   fetched back identical: no gap;
//! - the next normal run of the same command completes;
//! - `cleanup --older-than 0` then leaves nothing: no leftover, no
//!   incomplete upload, no temporary file and no empty directory anywhere
//!   in the repository.
//!
//! `STRATA_CRASH_EVERY=k` walks every k-th step (plus the last one and one
//! past it) — the defaults below keep CI within a few minutes;
//! `scripts/crash_points.sh` walks every step.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::archiving::Repo;
use common::chroma::{ChromaServer, Spec, fill};
use common::cli::{COMMAND_TIMEOUT, Output, Strata, strata_command, wait_output};
use common::pg::{PgCluster, PgOptions, shared_pg};
use common::redis::RedisServer;

/// Where a walk runs: a config, the local repository it names, a scratch
/// directory for crash logs and fetched files, and the environment strata
/// gets.
struct Target {
    dir: PathBuf,
    config: PathBuf,
    repo: PathBuf,
    env: Vec<(String, String)>,
}

impl Target {
    fn of(s: &Strata) -> Target {
        Target {
            dir: s.dir.clone(),
            config: s.config.clone(),
            repo: s.repo_dir().to_path_buf(),
            env: s.env.clone(),
        }
    }

    /// `strata --config CONFIG ARGS…`
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut all: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), self.config.as_os_str()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        strata_command(all, &self.env)
    }
}

/// One line of the crash log: `<pid> <n> <what>`.
#[derive(Debug, Clone)]
struct Step {
    pid: u32,
    n: u64,
    what: String,
}

fn read_log(path: &Path) -> Vec<Step> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut p = l.splitn(3, ' ');
            let pid = p.next().unwrap().parse().unwrap();
            let n = p.next().unwrap().parse().unwrap();
            let what = p.next().unwrap_or("").to_string();
            Step { pid, n, what }
        })
        .collect()
}

fn show(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| format!("  {} {} {}", s.pid, s.n, s.what))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The steps to crash at: every `every`-th of `1..=n` (from
/// `STRATA_CRASH_EVERY` when set, else `default_every`), always the last
/// one, and one past it (the command then completes).
fn points(n: u64, default_every: u64) -> Vec<u64> {
    let every = std::env::var("STRATA_CRASH_EVERY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|k| *k > 0)
        .unwrap_or(default_every);
    let mut p: BTreeSet<u64> = (1..=n).step_by(every as usize).collect();
    p.insert(n);
    p.insert(n + 1);
    p.into_iter().collect()
}

/// Runs `strata --config … ARGS` with `env` added and any crash settings
/// of the test's own environment removed.
fn run_env(s: &Target, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = s.command(args);
    c.env_remove("STRATA_CRASH_AT")
        .env_remove("STRATA_CRASH_LOG");
    let mut cmdline = String::new();
    for (k, v) in env {
        c.env(k, v);
        cmdline += &format!("{k}={v} ");
    }
    cmdline += &format!("strata {}", args.join(" "));
    let started = Instant::now();
    let child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
    wait_output(child, cmdline, started, COMMAND_TIMEOUT)
}

fn run(s: &Target, args: &[&str]) -> Output {
    run_env(s, args, &[])
}

/// Runs the command once with a crash log and returns its steps.
fn count_steps(s: &Target, args: &[&str], log: &Path) -> Vec<Step> {
    let _ = fs::remove_file(log);
    run_env(s, args, &[("STRATA_CRASH_LOG", log.display().to_string())]).ok();
    let steps = read_log(log);
    assert!(!steps.is_empty(), "`{}` logged no step", args.join(" "));
    eprintln!(
        "`{}`: {} steps\n{}",
        args.join(" "),
        steps.len(),
        show(&steps)
    );
    steps
}

/// Runs the command with `STRATA_CRASH_AT=at`: it dies at that step (the
/// log's last step is `at`), or completes when it has fewer steps.
/// Returns whether it died, and the steps it logged.
fn crash_at(s: &Target, args: &[&str], at: u64, log: &Path) -> (bool, Vec<Step>) {
    let _ = fs::remove_file(log);
    let o = run_env(
        s,
        args,
        &[
            ("STRATA_CRASH_AT", at.to_string()),
            ("STRATA_CRASH_LOG", log.display().to_string()),
        ],
    );
    let steps = read_log(log);
    if o.code.is_none() {
        let last = steps.last().map(|st| st.n);
        assert_eq!(
            last,
            Some(at),
            "killed, but not at step {at}\n{o}\n{}",
            show(&steps)
        );
        eprintln!("crashed at {at}: {}", steps.last().unwrap().what);
        (true, steps)
    } else {
        assert!(
            o.code == Some(0) && (steps.len() as u64) < at,
            "crash point {at}: neither killed there nor completed before it\n{o}\n{}",
            show(&steps)
        );
        (false, steps)
    }
}

/// After a crash: everything listed verifies (data read back), no
/// manifest is unreadable, no WAL gap after a base backup. Returns the
/// listed ids.
fn check_repository(s: &Target, ctx: &str) -> Vec<String> {
    let o = run(s, &["--json", "verify", "--read-data"]);
    assert_eq!(o.code, Some(0), "{ctx}: verify failed\n{o}");
    let v = o.json();
    assert_eq!(v["ok"], true, "{ctx}\n{o}");
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "{ctx}\n{o}"
    );
    let verified: BTreeSet<String> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["ok"], true, "{ctx}: backup FAILED\n{o}");
            b["id"].as_str().unwrap().to_string()
        })
        .collect();
    for w in v["wal"].as_array().unwrap() {
        assert_eq!(w["gaps"].as_array().map(Vec::len), Some(0), "{ctx}\n{o}");
    }
    let l = run(s, &["--json", "list"]);
    assert_eq!(l.code, Some(0), "{ctx}: list failed\n{l}");
    assert!(
        !l.stderr.contains("WARNING"),
        "{ctx}: list warns (an unreadable manifest?)\n{l}"
    );
    let ids: Vec<String> = l
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert!(
            verified.contains(id),
            "{ctx}: {id} is listed but was not verified\n{l}\n{o}"
        );
    }
    ids
}

/// `cleanup --older-than 0`, then nothing may be left: verify reports no
/// leftover and no incomplete upload, and the repository directory holds
/// no temporary file and no empty directory.
fn check_clean(s: &Target, ctx: &str) {
    run(s, &["cleanup", "--older-than", "0"]).ok();
    let o = run(s, &["--json", "verify"]);
    assert_eq!(o.code, Some(0), "{ctx}: verify after cleanup\n{o}");
    let v = o.json();
    assert_eq!(
        v["leftovers"].as_array().map(Vec::len),
        Some(0),
        "{ctx}\n{o}"
    );
    assert_eq!(
        v["incomplete_uploads"].as_array().map(Vec::len),
        Some(0),
        "{ctx}\n{o}"
    );
    let mut debris = Vec::new();
    debris_in(&s.repo, &s.repo, &mut debris);
    assert!(
        debris.is_empty(),
        "{ctx}: `cleanup --older-than 0` left debris in the repository:\n{}",
        debris.join("\n")
    );
}

/// Temporary files and empty directories below `dir` (top-level
/// directories excepted: `init` makes some).
fn debris_in(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        entries += 1;
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if e.file_type().unwrap().is_dir() {
            debris_in(root, &p, out);
        } else if rel.contains(".strata-tmp-") {
            out.push(format!("temporary file {rel}"));
        }
    }
    if entries == 0 && dir.parent() != Some(root) && dir != root {
        out.push(format!(
            "empty directory {}/",
            dir.strip_prefix(root).unwrap().display()
        ));
    }
}

fn log_path(s: &Target, name: &str) -> PathBuf {
    s.dir.join(format!("crash-{name}.log"))
}

/// Walks every crash point of `args` (a command that can be repeated: a
/// backup), checking the invariants after each crash and after the next
/// normal run. `prepare` runs before each crashed run (not before the
/// count): to restore what the command consumes.
fn walk(s: &Target, args: &[&str], default_every: u64, mut prepare: impl FnMut(&Target)) {
    let log = log_path(s, "walk");
    prepare(s);
    let n = count_steps(s, args, &log).len() as u64;
    check_repository(s, "after the counting run");
    check_clean(s, "after the counting run");
    for at in points(n, default_every) {
        prepare(s);
        let before = check_repository(s, &format!("before crash point {at}"));
        let (died, steps) = crash_at(s, args, at, &log);
        let what = steps.last().map(|s| s.what.clone()).unwrap_or_default();
        let ctx = format!("`{}` killed at step {at} ({what})", args.join(" "));
        let after = check_repository(s, &ctx);
        // a crash loses nothing that was there before it (prune's
        // deletions aside: checked by its own test)
        if !args.contains(&"prune") {
            for id in &before {
                assert!(after.contains(id), "{ctx}: {id} is no longer listed");
            }
        }
        if died {
            let o = run(s, args);
            assert_eq!(o.code, Some(0), "{ctx}: the next run failed\n{o}");
            check_repository(s, &format!("{ctx}, then a normal run"));
        }
        check_clean(s, &format!("{ctx}, then a normal run and cleanup"));
    }
}

#[test]
fn backup_of_a_postgres_dump_survives_a_crash_at_every_step() {
    let pg = shared_pg();
    pg.create_db("crash_dump");
    pg.psql(
        "crash_dump",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200) g;",
    );
    let strata = Strata::local("crash-dump", &[("app", pg.url("crash_dump"))]);
    strata.init();
    let s = Target::of(&strata);
    walk(&s, &["backup", "app"], 1, |_| {});
}

#[test]
fn backup_of_a_redis_snapshot_survives_a_crash_at_every_step() {
    let redis = RedisServer::start("crash", &[]);
    let mut c = redis.conn();
    for i in 0..100 {
        c.ok(&["SET", &format!("k{i}"), &format!("value {i}")]);
    }
    let strata = Strata::local("crash-redis", &[]);
    let mut cfg = fs::read_to_string(&strata.config).unwrap();
    cfg += &format!(
        "\n[sources.cache]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    fs::write(&strata.config, cfg).unwrap();
    strata.init();
    let s = Target::of(&strata);
    walk(&s, &["backup", "cache"], 1, |_| {});
}

fn tier_ids(s: &Target) -> Vec<String> {
    let o = run(s, &["--json", "list"]).ok();
    o.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tier"] == "daily")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prune_survives_a_crash_at_every_step() {
    let pg = shared_pg();
    pg.create_db("crash_prune");
    pg.psql(
        "crash_prune",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);",
    );
    let strata = Strata::local("crash-prune", &[("app", pg.url("crash_prune"))]);
    let mut cfg = fs::read_to_string(&strata.config).unwrap();
    cfg += "\n[tiers.daily]\nkeep_last = 1\n";
    fs::write(&strata.config, cfg).unwrap();
    strata.init();
    let s = Target::of(&strata);
    // three daily backups before each prune: it deletes the two older ones
    let prepare = |s: &Target| {
        while tier_ids(s).len() < 3 {
            run(s, &["backup", "app", "--tier", "daily"]).ok();
            // ids are per second
            std::thread::sleep(Duration::from_millis(1100));
        }
    };
    let log = log_path(&s, "prune");
    prepare(&s);
    let n = count_steps(&s, &["prune"], &log).len() as u64;
    assert_eq!(tier_ids(&s).len(), 1);
    for at in points(n, 1) {
        prepare(&s);
        let before = tier_ids(&s);
        let newest = before.iter().max().unwrap().clone();
        let (died, steps) = crash_at(&s, &["prune"], at, &log);
        let what = steps.last().map(|s| s.what.clone()).unwrap_or_default();
        let ctx = format!("`prune` killed at step {at} ({what})");
        let after = check_repository(&s, &ctx);
        // the backup retention keeps is never touched
        assert!(after.contains(&newest), "{ctx}: the kept {newest} is gone");
        if died {
            run(&s, &["prune"]).ok();
        }
        assert_eq!(tier_ids(&s), vec![newest.clone()], "{ctx}");
        check_repository(&s, &format!("{ctx}, then a normal prune"));
        check_clean(&s, &format!("{ctx}, then a normal prune and cleanup"));
    }
}

/// Completed WAL segments of the shared cluster, copied out of its pg_wal
/// right after each switch (the copy is what `wal push` gets, as from
/// PostgreSQL's archiver).
fn wal_segments(n: usize, dir: &Path) -> Vec<PathBuf> {
    // one test at a time: a switch by another test between our insert and
    // our switch would leave ours a no-op and the copy an open segment
    static SWITCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SWITCHING.lock().unwrap_or_else(|p| p.into_inner());
    let pg = shared_pg();
    fs::create_dir_all(dir).unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS crash_walgen (i int)",
    );
    (0..n)
        .map(|_| {
            pg.psql(
                "postgres",
                "INSERT INTO crash_walgen SELECT generate_series(1, 100)",
            );
            let name = pg.psql(
                "postgres",
                "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
            );
            pg.psql("postgres", "SELECT pg_switch_wal()");
            let to = dir.join(&name);
            fs::copy(pg.data_dir.join("pg_wal").join(&name), &to).unwrap();
            to
        })
        .collect()
}

/// `wal fetch NAME` into a scratch file: `None` when not archived (exit
/// 1), else the bytes; anything else fails the test.
fn fetch(s: &Target, name: &str, ctx: &str) -> Option<Vec<u8>> {
    let dest = s.dir.join("fetched");
    let _ = fs::remove_file(&dest);
    // --prefetch 0: no background prefetcher outlives the test
    let o = run(
        s,
        &[
            "wal",
            "fetch",
            "--prefetch",
            "0",
            name,
            dest.to_str().unwrap(),
        ],
    );
    match o.code {
        Some(1) => {
            assert!(
                !dest.exists(),
                "{ctx}: not archived, yet {name} was written"
            );
            None
        }
        Some(0) => Some(fs::read(&dest).unwrap()),
        _ => panic!("{ctx}: wal fetch {name}\n{o}"),
    }
}

#[test]
fn wal_push_survives_a_crash_at_every_step() {
    let pg = shared_pg();
    let strata = Strata::local("crash-wal", &[("main", pg.url("postgres"))]);
    strata.init();
    let s = Target::of(&strata);
    let log = log_path(&s, "wal");
    let probe = wal_segments(2, &s.dir.join("segments"));
    // the first push also records the cluster; count the steps of a later one
    run(&s, &["wal", "push", probe[0].to_str().unwrap()]).ok();
    let n = count_steps(&s, &["wal", "push", probe[1].to_str().unwrap()], &log).len() as u64;
    let at_points = points(n, 1);
    let segments = wal_segments(at_points.len(), &s.dir.join("segments"));
    let mut pushed: Vec<PathBuf> = probe;
    for (at, seg) in at_points.into_iter().zip(segments) {
        let name = seg.file_name().unwrap().to_str().unwrap().to_string();
        let args = ["wal", "push", seg.to_str().unwrap()];
        let (died, steps) = crash_at(&s, &args, at, &log);
        let what = steps.last().map(|s| s.what.clone()).unwrap_or_default();
        let ctx = format!("`wal push {name}` killed at step {at} ({what})");
        let want = fs::read(&seg).unwrap();
        if let Some(got) = fetch(&s, &name, &ctx) {
            assert!(got == want, "{ctx}: wal fetch returned other bytes");
        }
        check_repository(&s, &ctx);
        // PostgreSQL retries the same segment until it succeeds
        if died {
            run(&s, &args).ok();
        }
        pushed.push(seg.clone());
        // no gap: every segment pushed so far comes back identical
        for p in [&pushed[0], &seg] {
            let name = p.file_name().unwrap().to_str().unwrap();
            let got = fetch(&s, name, &ctx).unwrap_or_else(|| panic!("{ctx}: {name} missing"));
            assert!(got == fs::read(p).unwrap(), "{ctx}: {name} differs");
        }
        check_clean(&s, &format!("{ctx}, then a retry and cleanup"));
        let _ = fs::remove_file(&seg);
    }
    // every segment is listed by the archive, none missing in between
    let o = run(&s, &["--json", "verify"]).ok();
    assert_eq!(o.json()["ok"], true, "{o}");
}

/// Background pushers (`wal push-worker`) of the spool `spool`: found by
/// their command line, so none is left running by the test.
fn pushers(spool: &Path) -> Vec<i32> {
    let spool = spool.to_str().unwrap();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&&b"push-worker"[..]) && args.contains(&spool.as_bytes()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'
        Ok(st) => st
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILLs every background pusher of `spool` and waits until none runs.
fn kill_pushers(spool: &Path) {
    let began = Instant::now();
    let mut quiet = 0;
    loop {
        let pids = pushers(spool);
        if pids.is_empty() {
            // twice, a moment apart: one forked just before its parent
            // died may not show its new command line yet
            quiet += 1;
            if quiet == 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        quiet = 0;
        for pid in pids {
            // SAFETY: kill(2) of a pusher this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "pushers survive SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wal push --async` of `pg_wal/NAME` (queued like PostgreSQL does, with
/// `archive_status/NAME.ready`), with `env`. When the background pusher
/// dies at crash point `at`, the foreground is killed too (the machine
/// went down) and `None` returned; else the foreground's output.
fn push_async(
    s: &Target,
    pg_wal: &Path,
    spool: &Path,
    name: &str,
    env: &[(&str, String)],
    at: Option<(u64, &Path)>,
) -> Option<Output> {
    let path = pg_wal.join(name);
    let mut c = s.command(&[
        "wal",
        "push",
        "--async",
        "--spool",
        spool.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    c.env_remove("STRATA_CRASH_AT")
        .env_remove("STRATA_CRASH_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let cmdline = format!("{env:?} strata wal push --async {}", path.display());
    let started = Instant::now();
    let mut child = c.spawn().unwrap();
    if let Some((at, log)) = at {
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let died = read_log(log).into_iter().find(|st| st.n == at);
            if let Some(st) = died {
                let began = Instant::now();
                while alive(st.pid as i32) {
                    assert!(
                        began.elapsed() < Duration::from_secs(10),
                        "{cmdline}: pusher lives on"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
                kill_pushers(spool);
                eprintln!("pusher {} crashed at {at}: {}", st.pid, st.what);
                return None;
            }
            assert!(started.elapsed() < COMMAND_TIMEOUT, "{cmdline} hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Some(wait_output(child, cmdline, started, COMMAND_TIMEOUT))
}

#[test]
fn async_wal_push_survives_a_crash_of_its_pusher_at_every_step() {
    let pg = shared_pg();
    let strata = Strata::local("crash-wal-async", &[("main", pg.url("postgres"))]);
    strata.init();
    let s = Target::of(&strata);
    let log = log_path(&s, "wal-async");
    let pg_wal = s.dir.join("pg_wal");
    let spool = s.dir.join("spool");
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let segments = wal_segments(1, &s.dir.join("segments"));
    // queues a copy of `seg` in pg_wal as PostgreSQL's archiver would
    let queue = |seg: &Path| -> String {
        let name = seg.file_name().unwrap().to_str().unwrap().to_string();
        fs::copy(seg, pg_wal.join(&name)).unwrap();
        fs::write(
            pg_wal.join("archive_status").join(format!("{name}.ready")),
            b"",
        )
        .unwrap();
        name
    };
    // what PostgreSQL does once archive_command succeeded
    let archived = |name: &str| {
        let st = pg_wal.join("archive_status");
        fs::rename(
            st.join(format!("{name}.ready")),
            st.join(format!("{name}.done")),
        )
        .unwrap();
        fs::remove_file(pg_wal.join(name)).unwrap();
    };

    // the first push also records the cluster
    let name = queue(&segments[0]);
    push_async(&s, &pg_wal, &spool, &name, &[], None)
        .unwrap()
        .ok();
    archived(&name);
    kill_pushers(&spool);

    let probe = wal_segments(1, &s.dir.join("segments"));
    let name = queue(&probe[0]);
    let _ = fs::remove_file(&log);
    let env = [("STRATA_CRASH_LOG", log.display().to_string())];
    push_async(&s, &pg_wal, &spool, &name, &env, None)
        .unwrap()
        .ok();
    archived(&name);
    kill_pushers(&spool);
    let steps = read_log(&log);
    eprintln!(
        "`wal push --async`: {} steps\n{}",
        steps.len(),
        show(&steps)
    );
    let n = steps.last().expect("the pusher logged no step").n;

    let at_points = points(n, 1);
    let segs = wal_segments(at_points.len(), &s.dir.join("segments"));
    for (at, seg) in at_points.into_iter().zip(segs) {
        let name = queue(&seg);
        let _ = fs::remove_file(&log);
        let env = [
            ("STRATA_CRASH_AT", at.to_string()),
            ("STRATA_CRASH_LOG", log.display().to_string()),
        ];
        let out = push_async(&s, &pg_wal, &spool, &name, &env, Some((at, &log)));
        kill_pushers(&spool);
        let ctx = match &out {
            None => {
                let st = read_log(&log).into_iter().find(|st| st.n == at).unwrap();
                format!(
                    "`wal push --async {name}`: pusher killed at step {at} ({})",
                    st.what
                )
            }
            Some(o) => {
                assert_eq!(o.code, Some(0), "crash point {at} past the last step\n{o}");
                format!("`wal push --async {name}` with crash point {at} (past its steps)")
            }
        };
        let want = fs::read(&seg).unwrap();
        if let Some(got) = fetch(&s, &name, &ctx) {
            assert!(got == want, "{ctx}: wal fetch returned other bytes");
        }
        check_repository(&s, &ctx);
        if out.is_none() {
            // PostgreSQL runs archive_command again for the same file
            let o = push_async(&s, &pg_wal, &spool, &name, &[], None).unwrap();
            assert_eq!(o.code, Some(0), "{ctx}: the retry failed\n{o}");
            kill_pushers(&spool);
        }
        archived(&name);
        for p in [&segments[0], &seg] {
            let name = p.file_name().unwrap().to_str().unwrap();
            let got = fetch(&s, name, &ctx).unwrap_or_else(|| panic!("{ctx}: {name} missing"));
            assert!(got == fs::read(p).unwrap(), "{ctx}: {name} differs");
        }
        check_clean(&s, &format!("{ctx}, then a retry and cleanup"));
        let _ = fs::remove_file(&seg);
    }
    assert!(pushers(&spool).is_empty());
}

#[test]
fn base_backup_survives_a_crash_at_every_step() {
    // the cluster archives through `strata wal push` (its archive_command,
    // never crashed) into the repository the base backups go to
    let repo = Repo::new("crash-base");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "crash-base",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    );
    let s = Target {
        dir: repo.dir.clone(),
        config: repo.cfg.clone(),
        repo: repo.dir.join("repo"),
        env: Vec::new(),
    };
    walk(&s, &["backup", "main", "--kind", "base"], 3, |_| {});
}

#[test]
fn backup_of_chroma_survives_a_crash_at_every_step() {
    let chroma = ChromaServer::start("crash");
    let client = chroma.client();
    for spec in [
        Spec {
            name: "crash-a",
            space: "cosine",
            records: 300,
            dim: 16,
            seed: 7,
        },
        Spec {
            name: "crash-b",
            space: "l2",
            records: 50,
            dim: 8,
            seed: 8,
        },
    ] {
        fill(&client, &spec);
    }
    let strata = Strata::local("crash-chroma", &[]);
    let mut cfg = fs::read_to_string(&strata.config).unwrap();
    cfg += &format!(
        "\n[sources.vectors]\nkind = \"chroma\"\nurl = \"{}\"\n",
        chroma.url()
    );
    fs::write(&strata.config, cfg).unwrap();
    strata.init();
    let s = Target::of(&strata);
    walk(&s, &["backup", "vectors"], 1, |_| {});
}

#[test]
fn cleanup_survives_a_crash_at_every_step() {
    let pg = shared_pg();
    pg.create_db("crash_cleanup");
    pg.psql(
        "crash_cleanup",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
    );
    let strata = Strata::local("crash-cleanup", &[("app", pg.url("crash_cleanup"))]);
    strata.init();
    let s = Target::of(&strata);
    // where a backup dies leaving a temporary data file, and where it dies
    // leaving a whole data object without a manifest
    let log = log_path(&s, "cleanup-backup");
    let steps = count_steps(&s, &["backup", "app"], &log);
    let at = |prefix: &str| {
        steps
            .iter()
            .find(|st| st.what.starts_with(prefix))
            .unwrap_or_else(|| panic!("no step {prefix}…\n{}", show(&steps)))
            .n
    };
    let (tmp_at, leftover_at) = (at("put-synced backups/"), at("put-dir-synced backups/"));
    let prepare = |s: &Target| {
        // the second backup first removes the lock the first one left
        // (one more step)
        for (at, what) in [
            (leftover_at, "put-dir-synced backups/"),
            (tmp_at + 1, "put-synced backups/"),
        ] {
            let (died, st) = crash_at(s, &["backup", "app"], at, &log);
            assert!(
                died && st.last().unwrap().what.starts_with(what),
                "{what}…\n{}",
                show(&st)
            );
        }
    };
    walk(&s, &["cleanup", "--older-than", "0"], 1, prepare);
}

#[test]
fn init_survives_a_crash_at_every_step() {
    let pg = shared_pg();
    pg.create_db("crash_init");
    let strata = Strata::local("crash-init", &[("app", pg.url("crash_init"))]);
    let s = Target::of(&strata);
    let log = log_path(&s, "init");
    let n = count_steps(&s, &["init"], &log).len() as u64;
    for at in points(n, 1) {
        fs::remove_dir_all(&s.repo).unwrap();
        let (died, steps) = crash_at(&s, &["init"], at, &log);
        let what = steps.last().map(|s| s.what.clone()).unwrap_or_default();
        let ctx = format!("`init` killed at step {at} ({what})");
        if died {
            // run again: it makes the repository, or finds it made
            let o = run(&s, &["init"]);
            assert!(
                o.code == Some(0) || (o.code == Some(8) && o.stderr.contains("already")),
                "{ctx}: init again\n{o}"
            );
        }
        check_repository(&s, &ctx);
        // the repository takes backups (the first records the recipients
        // when the crash came before init did)
        run(&s, &["backup", "app"]).ok();
        assert!(
            s.repo.join("recipients.json").is_file(),
            "{ctx}: the repository's recipients are still not recorded after a backup"
        );
        check_repository(&s, &format!("{ctx}, then a backup"));
        check_clean(&s, &format!("{ctx}, then a backup and cleanup"));
    }
}

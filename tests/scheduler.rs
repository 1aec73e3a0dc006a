//! `strata schedule run`, the scheduler daemon, against a real PostgreSQL
//! and a local repository, with the daemon's clock made fast or set back
//! (`STRATA_CLOCK_START`, `STRATA_CLOCK_SPEED`; see src/scheduler/clock.rs):
//! due runs happen, never two jobs on one source, a missed slot runs once
//! after downtime, and SIGTERM mid-job either lets the job finish within
//! the grace period or abandons it without a manifest or a lock left.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::Strata;
use common::pg::{PgCluster, shared_pg};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A setup: a database with a little data, a config with `tiers`, a
/// state directory.
fn setup(name: &str, tiers: &str) -> (Strata, PathBuf) {
    let pg = shared_pg();
    pg.create_db(name);
    pg.psql(
        name,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    );
    let s = Strata::local(name, &[("app", pg.url(name))]);
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push('\n');
    cfg.push_str(tiers);
    std::fs::write(&s.config, cfg).unwrap();
    s.init();
    let state = s.dir.join("state");
    (s, state)
}

fn tier(name: &str, schedule: &str) -> String {
    format!(
        "[tiers.{name}]\nschedule = \"{schedule}\"\nsources = [\"app\"]\nkind = \"dump\"\nkeep_last = 10\n\n"
    )
}

/// A running `strata schedule run --log-format json`, its log lines
/// collected as they come.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(s: &Strata, state: &Path, clock: Option<(&str, &str)>, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "schedule",
            "run",
            "--log-format",
            "json",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut c = s.command(&args);
        if let Some((start, speed)) = clock {
            c.env("STRATA_CLOCK_START", start)
                .env("STRATA_CLOCK_SPEED", speed);
        }
        let mut child = c.spawn().expect("spawn strata schedule run");
        common::kill_at_exit(child.id());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                eprintln!("daemon: {line}");
                l2.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let e2 = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                e2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Daemon {
            child,
            lines,
            stderr,
        }
    }

    /// Every event so far, parsed.
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("log line not JSON ({e}): {l}"))
            })
            .collect()
    }

    fn named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    fn dump(&self) -> String {
        format!(
            "--- log ---\n{}\n--- stderr ---\n{}",
            self.lines.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits until at least `n` events named `name` were logged.
    #[track_caller]
    fn wait_events(&self, name: &str, n: usize) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let got = self.named(name);
            if got.len() >= n {
                return got;
            }
            if t0.elapsed() > TIMEOUT {
                panic!("no {n} {name} events within {TIMEOUT:?}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the daemon to exit; panics after `limit`.
    #[track_caller]
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                panic!("daemon did not exit within {limit:?}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Position of the first event matching `pred` in `events`.
fn pos(events: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no such event in {events:#?}"))
}

fn is(e: &Value, name: &str, tier: &str) -> bool {
    e["event"] == name && e["tier"] == tier
}

fn state_of(state: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(state.join("schedule-state.json")).unwrap()).unwrap()
}

fn lock_files(s: &Strata) -> Vec<String> {
    match std::fs::read_dir(s.repo_dir().join("locks")) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn backups(s: &Strata) -> Vec<Value> {
    s.run(&["--json", "list"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn due_tiers_run_at_their_slots() {
    let (s, state) = setup("sched_due", &tier("hourly", "0 * * * *"));
    // An hour every 2 s; the first slot (01:00) comes after a second (a
    // tier never run waits for a slot after the daemon's start).
    let mut d = Daemon::start(&s, &state, Some(("2026-01-01T00:30:00Z", "1800")), &[]);
    let done = d.wait_events("job_finished", 2);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.dump()
    );

    let ev = d.events();
    assert_eq!(ev[0]["event"], "daemon_started", "{}", d.dump());
    // Each run starts at a slot (hh:00 on the fake clock), one per slot:
    // 01:00 first, then later hours (a slot that comes while the previous
    // run still runs, on a loaded machine, is skipped, not queued).
    let started = d.named("job_started");
    assert!(started.len() >= 2, "{}", d.dump());
    let hours: Vec<u32> = started
        .iter()
        .map(|e| {
            let slot = e["slot"].as_str().unwrap();
            assert!(
                slot.starts_with("2026-01-01T") && slot.ends_with(":00:00.000Z"),
                "not a slot: {slot}\n{}",
                d.dump()
            );
            slot[11..13].parse().unwrap()
        })
        .collect();
    assert_eq!(hours[0], 1, "{}", d.dump());
    assert!(
        hours.windows(2).all(|w| w[0] < w[1]),
        "{hours:?}\n{}",
        d.dump()
    );
    assert!(d.named("job_failed").is_empty(), "{}", d.dump());
    assert_eq!(d.named("daemon_stopped").len(), 1, "{}", d.dump());

    let list = backups(&s);
    let ids: Vec<&str> = done.iter().map(|e| e["backup"].as_str().unwrap()).collect();
    for id in &ids {
        let b = list
            .iter()
            .find(|b| b["id"] == *id)
            .unwrap_or_else(|| panic!("backup {id} not listed: {list:#?}"));
        assert_eq!(b["tier"], "hourly");
        assert_eq!(b["kind"], "dump");
    }
    // The last run is recorded, in the fake clock's time.
    let st = state_of(&state);
    assert!(
        st["hourly"].as_str().unwrap().starts_with("2026-01-01T0"),
        "{st}"
    );
    assert!(lock_files(&s).is_empty(), "{:?}", lock_files(&s));
}

#[test]
fn two_tiers_never_back_up_one_source_at_once() {
    let tiers = tier("alpha", "0 * * * *") + &tier("beta", "0 * * * *");
    let (s, state) = setup("sched_overlap", &tiers);
    // Both due at 01:00, a second away; the next slot is a minute later.
    let mut d = Daemon::start(
        &s,
        &state,
        Some(("2026-01-01T00:59:00Z", "60")),
        &["--max-jobs", "4"],
    );
    d.wait_events("job_finished", 2);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.dump()
    );

    let ev = d.events();
    // alpha (first by name) runs; beta waits for the source, then runs.
    let a_start = pos(&ev, |e| is(e, "job_started", "alpha"));
    let a_end = pos(&ev, |e| is(e, "job_finished", "alpha"));
    let b_wait = pos(&ev, |e| is(e, "job_waiting", "beta"));
    let b_start = pos(&ev, |e| is(e, "job_started", "beta"));
    assert!(
        a_start < b_wait && b_wait < a_end && a_end < b_start,
        "{}",
        d.dump()
    );
    assert!(
        ev[b_wait]["reason"].as_str().unwrap().contains("alpha"),
        "{}",
        d.dump()
    );

    // The backups' own times do not overlap either.
    let list = backups(&s);
    let span = |tier: &str| {
        let b = list.iter().find(|b| b["tier"] == tier).unwrap();
        let t = |k: &str| chrono::DateTime::parse_from_rfc3339(b[k].as_str().unwrap()).unwrap();
        (t("started"), t("finished"))
    };
    let (a0, a1) = span("alpha");
    let (b0, b1) = span("beta");
    assert!(
        a1 <= b0 || b1 <= a0,
        "overlap: alpha {a0}..{a1}, beta {b0}..{b1}"
    );
}

#[test]
fn missed_slots_run_once_after_downtime() {
    let (s, state) = setup("sched_catchup", &tier("hourly", "0 * * * *"));
    // The daemon was down for three days: 72 hourly slots missed.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("schedule-state.json"),
        r#"{ "hourly": "2025-12-29T00:00:00Z" }"#,
    )
    .unwrap();
    // Real speed: the next slot (01:00) is half an hour away.
    let mut d = Daemon::start(&s, &state, Some(("2026-01-01T00:30:00Z", "1")), &[]);
    d.wait_events("job_finished", 1);
    // Nothing else comes due.
    std::thread::sleep(Duration::from_secs(2));
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.dump()
    );

    let catch_up = d.named("catch_up");
    assert_eq!(catch_up.len(), 1, "{}", d.dump());
    assert_eq!(catch_up[0]["missed_slots"], 72, "{}", d.dump());
    assert_eq!(d.named("job_started").len(), 1, "{}", d.dump());
    assert_eq!(backups(&s).len(), 1);
    let st = state_of(&state);
    assert!(
        st["hourly"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T00:30"),
        "{st}"
    );

    // Run again with --once: the slot is covered, nothing is due.
    let mut again = Daemon::start(&s, &state, Some(("2026-01-01T00:40:00Z", "1")), &["--once"]);
    assert!(
        again.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        again.dump()
    );
    assert!(again.named("job_started").is_empty(), "{}", again.dump());
    assert_eq!(backups(&s).len(), 1);
}

/// A session holding a lock in an open transaction, so a backup waits.
struct TableLock {
    psql: Child,
    stdin: Option<ChildStdin>,
}

impl TableLock {
    /// Runs `sql` (which takes an ACCESS EXCLUSIVE lock on `relation`) in
    /// an open transaction and waits until the lock is held.
    fn take(pg: &PgCluster, db: &str, sql: &str, relation: &str) -> TableLock {
        let mut psql = pg
            .psql_cmd(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        common::kill_at_exit(psql.id());
        let mut stdin = psql.stdin.take().unwrap();
        writeln!(stdin, "BEGIN; {sql}").unwrap();
        stdin.flush().unwrap();
        pg.wait_for(
            db,
            &format!(
                "SELECT count(*) FROM pg_locks l WHERE l.relation = '{relation}'::regclass \
                 AND l.mode = 'AccessExclusiveLock' AND l.granted"
            ),
            "1",
            TIMEOUT,
        );
        TableLock {
            psql,
            stdin: Some(stdin),
        }
    }

    /// Ends the transaction (rolled back), releasing the lock.
    fn release(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, "ROLLBACK;");
            drop(s);
        }
        let _ = self.psql.wait();
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.psql.kill();
        let _ = self.psql.wait();
    }
}

/// Waits until a session of `db` waits for a lock (the backup's: the
/// holder's session is idle in its transaction).
fn wait_for_blocked_backup(pg: &PgCluster, db: &str, application: &str) {
    pg.wait_for(
        "postgres",
        &format!(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = '{db}' \
             AND wait_event_type = 'Lock' AND application_name = '{application}'"
        ),
        "t",
        TIMEOUT,
    );
}

/// Starts a daemon whose hourly tier is overdue (so it runs at once, with
/// `--once`) while `sql` holds a lock the backup needs: it hangs, in
/// `application` (`strata`'s own queries, or `pg_dump`).
fn start_blocked(
    name: &str,
    grace: &str,
    sql: &str,
    relation: &str,
    application: &str,
) -> (Strata, PathBuf, TableLock, Daemon) {
    let (s, state) = setup(name, &tier("hourly", "0 * * * *"));
    shared_pg().psql(name, "CREATE SEQUENCE s");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("schedule-state.json"),
        r#"{ "hourly": "2025-12-31T00:00:00Z" }"#,
    )
    .unwrap();
    let lock = TableLock::take(shared_pg(), name, sql, relation);
    let d = Daemon::start(
        &s,
        &state,
        Some(("2026-01-01T00:30:00Z", "1")),
        &["--once", "--shutdown-grace", grace],
    );
    d.wait_events("job_started", 1);
    wait_for_blocked_backup(shared_pg(), name, application);
    (s, state, lock, d)
}

#[test]
fn sigterm_abandons_a_job_that_outlives_the_grace_period() {
    // pg_dump reads the sequence (strata's own queries do not): renaming
    // it in an open transaction makes pg_dump wait for its lock.
    let (s, state, mut lock, mut d) = start_blocked(
        "sched_abandon",
        "2s",
        "ALTER SEQUENCE s RENAME TO s_renamed;",
        "s",
        "pg_dump",
    );
    assert!(lock_files(&s).iter().any(|l| l == "source-app.json"));
    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(30));
    let took = t0.elapsed();
    lock.release();
    assert!(st.success(), "exit {st}\n{}", d.dump());
    // The grace period, then the job winds down at once (pg_dump stopped).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(2 + 10),
        "exited after {took:?}\n{}",
        d.dump()
    );
    let ev = d.events();
    let req = pos(&ev, |e| e["event"] == "shutdown_requested");
    let aband = pos(&ev, |e| e["event"] == "abandoning_jobs");
    let killed = pos(&ev, |e| e["event"] == "processes_terminated");
    let gone = pos(&ev, |e| is(e, "job_abandoned", "hourly"));
    assert!(
        req < aband && aband < killed && killed < gone,
        "{}",
        d.dump()
    );
    assert!(
        ev[killed]["processes"]
            .as_str()
            .unwrap()
            .contains("pg_dump"),
        "{}",
        d.dump()
    );
    // pg_dump's failure ended the job the ordinary way, lock released.
    assert!(d.named("lock_removed").is_empty(), "{}", d.dump());
    assert!(d.named("job_finished").is_empty(), "{}", d.dump());

    // No backup, no manifest, no lock; the tier is not recorded as run, so
    // the next start catches it up.
    assert!(backups(&s).is_empty());
    let manifests = s.repo_dir().join("manifests");
    let n = walk_files(&manifests);
    assert!(n.is_empty(), "manifests left: {n:?}");
    assert!(lock_files(&s).is_empty(), "{:?}", lock_files(&s));
    assert_eq!(state_of(&state)["hourly"], "2025-12-31T00:00:00Z");
    // What is left is a leftover for `strata cleanup`.
    let o = s.run(&["cleanup", "--older-than", "0"]).ok();
    assert!(!o.all().contains("error"), "{o}");
}

#[test]
fn sigterm_lets_a_job_finish_within_the_grace_period() {
    // strata's own catalog query waits for the table.
    let (s, state, mut lock, mut d) = start_blocked(
        "sched_graceful",
        "60s",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE;",
        "t",
        "strata",
    );
    d.signal(libc::SIGTERM);
    d.wait_events("shutdown_requested", 1);
    // The job goes on; let pg_dump through.
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.dump());
    lock.release();
    let st = d.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "exit {st}\n{}", d.dump());

    let ev = d.events();
    let req = pos(&ev, |e| e["event"] == "shutdown_requested");
    let fin = pos(&ev, |e| is(e, "job_finished", "hourly"));
    assert!(req < fin, "{}", d.dump());
    assert!(d.named("job_abandoned").is_empty(), "{}", d.dump());
    assert_eq!(backups(&s).len(), 1);
    assert!(lock_files(&s).is_empty(), "{:?}", lock_files(&s));
    assert_ne!(state_of(&state)["hourly"], "2025-12-31T00:00:00Z");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_and_sighup_is_ignored() {
    let (s, state) = setup("sched_twice", &tier("hourly", "0 * * * *"));
    let mut d = Daemon::start(&s, &state, None, &[]);
    d.wait_events("daemon_started", 1);
    let o = s.run(&["schedule", "run", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(o.code, Some(8), "{o}");
    assert!(o.stderr.contains("another `strata schedule run`"), "{o}");
    // SIGHUP reloads nothing and must not end the daemon.
    d.signal(libc::SIGHUP);
    d.wait_events("sighup_ignored", 1);
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.dump());
    d.signal(libc::SIGINT);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.dump()
    );
}

#[test]
fn sigterm_drops_a_job_blocked_in_its_own_query() {
    // strata's catalog query waits for the table: no child process to stop,
    // so the job is dropped when the grace period ends, and its lock removed.
    let (s, state, mut lock, mut d) = start_blocked(
        "sched_drop",
        "1s",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE;",
        "t",
        "strata",
    );
    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(30));
    let took = t0.elapsed();
    lock.release();
    assert!(st.success(), "exit {st}\n{}", d.dump());
    assert!(
        took < Duration::from_secs(6),
        "exited after {took:?}\n{}",
        d.dump()
    );
    assert_eq!(d.named("job_abandoned").len(), 1, "{}", d.dump());
    let removed = d.named("lock_removed");
    assert_eq!(removed.len(), 1, "{}", d.dump());
    assert_eq!(removed[0]["lock"], "locks/source-app.json");
    assert!(backups(&s).is_empty());
    assert!(lock_files(&s).is_empty(), "{:?}", lock_files(&s));
    assert_eq!(state_of(&state)["hourly"], "2025-12-31T00:00:00Z");
}

#[test]
fn drill_tiers_run_strata_drill() {
    let drill = "[tiers.monthly-drill]\nschedule = \"0 4 1 * *\"\nsources = [\"app\"]\nkind = \"drill\"\n\n";
    let (s, state) = setup("sched_drill", drill);
    s.backup("app");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("schedule-state.json"),
        r#"{ "monthly-drill": "2025-12-01T04:00:00Z" }"#,
    )
    .unwrap();
    let mut d = Daemon::start(&s, &state, Some(("2026-01-02T00:00:00Z", "1")), &["--once"]);
    let st = d.wait_exit(TIMEOUT);
    assert!(st.success(), "exit {st}\n{}", d.dump());
    let done = d.named("job_finished");
    assert_eq!(done.len(), 1, "{}", d.dump());
    assert_eq!(done[0]["tier"], "monthly-drill");
    assert_eq!(done[0]["kind"], "drill");
    assert_eq!(done[0]["passed"], true, "{}", d.dump());
    let id = done[0]["drill"].as_str().unwrap();
    let h = s.run(&["--json", "drill", "history"]).ok();
    assert!(h.stdout.contains(id), "{h}");
}

#[test]
fn a_run_still_going_at_its_next_slot_skips_it() {
    let (s, state) = setup("sched_skip", &tier("hourly", "0 * * * *"));
    // The backup waits for the table; an hour passes every second.
    let mut lock = TableLock::take(
        shared_pg(),
        "sched_skip",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE;",
        "t",
    );
    let mut d = Daemon::start(&s, &state, Some(("2026-01-01T00:30:00Z", "3600")), &[]);
    d.wait_events("job_started", 1);
    let skipped = d.wait_events("job_skipped", 2);
    assert!(
        skipped.iter().all(
            |e| e["tier"] == "hourly" && e["reason"].as_str().unwrap().contains("previous run")
        ),
        "{}",
        d.dump()
    );
    lock.release();
    d.wait_events("job_finished", 1);
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.dump()
    );
    // One run for the slots that passed while it ran, not one per slot.
    let ev = d.events();
    let first_done = pos(&ev, |e| e["event"] == "job_finished");
    let started_before = ev[..first_done]
        .iter()
        .filter(|e| e["event"] == "job_started")
        .count();
    assert_eq!(started_before, 1, "{}", d.dump());
    assert!(lock_files(&s).is_empty(), "{:?}", lock_files(&s));
}

//! Timelines (issue 3): a restore with `--start` promotes onto timeline 2
//! and keeps archiving into the same repository; later restores reach
//! either timeline. Then `restore --delta` over a stopped, changed copy
//! rewrites only what differs.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::pg::{PgCluster, PgOptions, pg_bin_dir, pg_scratch_dir, pg_user};
use common::{at_exit, free_port};

fn now(port: u16) -> String {
    psql(
        port,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

fn psql(port: u16, sql: &str) -> String {
    let out = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-U", "postgres", "-p", &port.to_string(), "-d", "postgres"])
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pg_ctl(dir: &Path, args: &[&str]) -> std::process::Output {
    let bin = pg_bin_dir().join("pg_ctl");
    let mut c = if pg_user().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.arg("-D").arg(dir).args(args).output().unwrap()
}

/// Waits until the server on `port` has archived the segment holding its
/// current insert position.
fn switch_and_wait(port: u16) {
    let last = psql(port, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    psql(port, "SELECT pg_switch_wal()");
    for _ in 0..600 {
        let done = psql(
            port,
            &format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"),
        );
        if done == "t" {
            assert_eq!(psql(port, "SELECT failed_count FROM pg_stat_archiver"), "0");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{last} not archived by the server on port {port}");
}

/// Restores (no --start) into `dir`, starts it with archiving off (so it
/// adds no timeline of its own), returns `tl|ids` of table `ev`.
fn restore_rows(repo: &Repo, dir: &Path, args: &[&str]) -> (PgCluster, String) {
    let dir_s = dir.display().to_string();
    let mut a = vec!["restore", "main", "--target-dir", &dir_s];
    a.extend_from_slice(args);
    let out = repo.strata(&a);
    assert!(out.status.success(), "restore {args:?}: {}", text(&out));
    let pg = PgCluster::start_existing(
        PgOptions {
            extra_conf: vec!["archive_mode = off".into()],
            name: "pitr-tl-check",
            ..Default::default()
        },
        dir,
    );
    pg.wait_until_primary(Duration::from_secs(120));
    let rows = pg.psql(
        "postgres",
        "SELECT string_agg(tl || ':' || id, ',' ORDER BY id) FROM ev",
    );
    (pg, rows)
}

#[test]
fn restore_reaches_either_timeline_and_delta_rewrites_only_what_differs() {
    let repo = Repo::new("pitr-tl");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "pitr-tl",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    pg.psql(
        "postgres",
        "CREATE TABLE ev (id int PRIMARY KEY, tl int); INSERT INTO ev VALUES (1, 1), (2, 1)",
    );
    let out = repo.strata(&["backup", "main", "--kind", "base"]);
    assert!(out.status.success(), "base backup: {}", text(&out));
    pg.psql("postgres", "INSERT INTO ev VALUES (3, 1)");
    std::thread::sleep(Duration::from_millis(300));
    let branch = now(pg.port);
    std::thread::sleep(Duration::from_millis(1100));
    pg.psql("postgres", "INSERT INTO ev VALUES (4, 1)"); // only on timeline 1
    switch_and_wait(pg.port);

    // recover to `branch` and promote: timeline 2, archiving into the same
    // repository (the base backup carries the archive settings)
    let tl2_dir = pg_scratch_dir("pitr-tl2").join("data");
    let tl2_port = free_port();
    let stop = tl2_dir.clone();
    at_exit(move || {
        let _ = pg_ctl(&stop, &["stop", "-m", "immediate"]);
    });
    let (dir_s, port_s) = (tl2_dir.display().to_string(), tl2_port.to_string());
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--to-time",
        &branch,
        "--timeline",
        "current",
        "--start",
        "--port",
        &port_s,
        // a copy archives only when told it is the new primary
        "--archive-mode",
        "preserve",
    ]);
    assert!(
        out.status.success(),
        "restore onto timeline 2: {}",
        text(&out)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("on timeline 1") && summary.contains("on timeline 2"),
        "{summary}"
    );
    assert!(
        summary.contains("took ") && summary.contains("recovery "),
        "{summary}"
    );
    assert_eq!(
        psql(tl2_port, "SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    assert_eq!(
        psql(
            tl2_port,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM ev"
        ),
        "1,2,3"
    );
    psql(tl2_port, "INSERT INTO ev VALUES (10, 2)");
    std::thread::sleep(Duration::from_millis(300));
    let on_tl2 = now(tl2_port);
    std::thread::sleep(Duration::from_millis(1100));
    psql(tl2_port, "INSERT INTO ev VALUES (11, 2)");
    switch_and_wait(tl2_port);
    let _ = pg_ctl(&tl2_dir, &["stop", "-m", "fast"]);
    let history = repo.dir.join("repo/wal/main/history/00000002.history");
    assert!(history.exists(), "timeline 2's history is archived");

    // the archive is continuous on both timelines
    let out = repo.strata(&["verify"]);
    assert!(out.status.success(), "verify: {}", text(&out));

    // a base backup of the old primary, still on timeline 1 past the
    // point where timeline 2 branched off: it cannot reach timeline 2
    let out = repo.strata(&["--json", "backup", "main", "--kind", "base"]);
    assert!(
        out.status.success(),
        "base backup on timeline 1: {}",
        text(&out)
    );
    let late: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let late = late["id"].as_str().unwrap().to_string();
    let d0 = pg_scratch_dir("pitr-tl-check0").join("data");
    let out = repo.strata(&[
        "restore",
        "main",
        "--backup",
        &late,
        "--latest",
        "--target-dir",
        &d0.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("no base backup lies on the history of the timeline")
            && err.contains("timeline 2 branched off it at LSN"),
        "{err}"
    );
    assert!(!d0.join("PG_VERSION").exists(), "nothing restored");

    // timeline 1 to its end: row 4, none of timeline 2
    let d1 = pg_scratch_dir("pitr-tl-check1").join("data");
    let (c1, rows) = restore_rows(&repo, &d1, &["--latest", "--timeline", "1"]);
    assert_eq!(rows, "1:1,1:2,1:3,1:4");
    drop(c1);
    // `--timeline latest` would follow timeline 2, yet timeline 1 kept
    // receiving WAL after the branch: two live timelines, refused (issue
    // 15 item 2: a copy that archived poisoned later `latest` restores)
    let d2 = pg_scratch_dir("pitr-tl-check2").join("data");
    let out = repo.strata(&[
        "restore",
        "main",
        "--latest",
        "--target-dir",
        &d2.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("two timelines are live")
            && err.contains("timeline 2 branched off timeline 1")
            && err.contains("--timeline 1"),
        "{err}"
    );
    assert!(!d2.join("PG_VERSION").exists(), "nothing restored");
    // timeline 2 to its end, named: from the base backup before the
    // branch (the newest one cannot get there)
    let (c2, rows) = restore_rows(&repo, &d2, &["--latest", "--timeline", "2"]);
    assert_eq!(rows, "1:1,1:2,1:3,2:10,2:11");
    drop(c2);
    // a time on timeline 2
    let d3 = pg_scratch_dir("pitr-tl-check3").join("data");
    let (c3, rows) = restore_rows(&repo, &d3, &["--to-time", &on_tl2, "--timeline", "2"]);
    assert_eq!(rows, "1:1,1:2,1:3,2:10");

    // --delta: refused while the server runs
    let d3_s = d3.display().to_string();
    let delta = |extra: &[&str]| {
        let mut a = vec![
            "--json",
            "restore",
            "main",
            "--target-dir",
            &d3_s,
            "--delta",
        ];
        a.extend_from_slice(extra);
        repo.strata(&a)
    };
    let out = delta(&["--latest", "--timeline", "1"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(text(&out).contains("postmaster.pid"), "{}", text(&out));
    c3.stop();
    // damage the stopped copy: a table's file gone, a stray file
    let pg_class_file = {
        // any relation file of database `postgres` will do
        let dbdir = fs::read_dir(d3.join("base"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| fs::read_dir(p).map(|r| r.count()).unwrap_or(0))
            .unwrap();
        fs::read_dir(&dbdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| fs::metadata(p).map(|m| m.len() > 8192).unwrap_or(false))
            .unwrap()
    };
    fs::remove_file(&pg_class_file).unwrap();
    fs::write(d3.join("stray.txt"), "not in the backup").unwrap();
    let out = delta(&["--latest", "--timeline", "1"]);
    assert!(out.status.success(), "delta restore: {}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &report["delta"];
    let (kept, written) = (
        d["files_kept"].as_u64().unwrap(),
        d["files_written"].as_u64().unwrap(),
    );
    let (bw, bt) = (
        d["bytes_written"].as_u64().unwrap(),
        d["bytes_total"].as_u64().unwrap(),
    );
    eprintln!("delta: {d}");
    assert!(kept > written, "{d}");
    assert!(written >= 1 && bw < bt / 2, "{d}");
    assert!(d["removed"].as_u64().unwrap() >= 1, "{d}");
    assert!(pg_class_file.exists() && !d3.join("stray.txt").exists());
    let c3 = PgCluster::start_existing(
        PgOptions {
            extra_conf: vec!["archive_mode = off".into()],
            name: "pitr-tl-delta",
            ..Default::default()
        },
        &d3,
    );
    c3.wait_until_primary(Duration::from_secs(120));
    assert_eq!(
        c3.psql(
            "postgres",
            "SELECT string_agg(tl || ':' || id, ',' ORDER BY id) FROM ev"
        ),
        "1:1,1:2,1:3,1:4"
    );
    // a non-empty directory that is no data directory is refused
    let junk = pg_scratch_dir("pitr-tl-junk");
    fs::write(junk.join("notes"), "x").unwrap();
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &junk.display().to_string(),
        "--delta",
        "--latest",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(junk.join("notes").exists());
}

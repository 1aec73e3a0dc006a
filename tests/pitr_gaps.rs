//! Gaps in the WAL archive: `verify` reports them and `restore` refuses a
//! recovery that would stop early at one.
mod common;

use std::fs;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::pg::{PgCluster, PgOptions, pg_ctl_at as pg_ctl, pg_scratch_dir};

/// Inserts a row, then switches the WAL segment it went into out; returns
/// that segment's name.
fn row_and_switch(pg: &PgCluster) -> String {
    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    let seg = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    seg
}

/// Waits until the server has archived `segment`.
fn wait_archived(pg: &PgCluster, segment: &str) {
    pg.wait_for(
        "postgres",
        &format!("SELECT coalesce(last_archived_wal, '') >= '{segment}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(60),
    );
}

/// `restore main --target-dir DIR ARGS --timeline current --start` on a
/// free port (the server stopped at exit); the output, the port and the
/// server log.
fn restore_started(
    repo: &Repo,
    dir: &std::path::Path,
    args: &[&str],
) -> (std::process::Output, u16, String) {
    let stop_dir = dir.to_path_buf();
    common::at_exit(move || {
        let _ = pg_ctl(&stop_dir, &["stop", "-m", "immediate"]);
    });
    let port = common::free_port();
    let (dir_s, port_s) = (dir.display().to_string(), port.to_string());
    let mut all = vec!["restore", "main", "--target-dir", &dir_s];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--timeline", "current", "--start", "--port", &port_s]);
    let out = repo.strata(&all);
    let log = fs::read_to_string(dir.join("strata-restore.log")).unwrap_or_default();
    (out, port, log)
}

/// A cluster archiving into a fresh repository: a base backup, then rows
/// committed across four switched segments. Returns the repository, the
/// running cluster, the insert LSN before the third segment, the third
/// segment's name and the last archived one's.
fn archive_four_segments(name: &'static str) -> (Repo, PgCluster, String, String, String) {
    let repo = Repo::new(name);
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name,
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    pg.psql("postgres", "CREATE TABLE ev (id serial PRIMARY KEY)");
    let out = repo.strata(&["backup", "main", "--kind", "base"]);
    assert!(out.status.success(), "base backup: {}", text(&out));

    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    pg.psql("postgres", "SELECT pg_switch_wal()");
    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    let before_gap = pg.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let missing = row_and_switch(&pg);
    let last = row_and_switch(&pg);
    wait_archived(&pg, &last);
    (repo, pg, before_gap, missing, last)
}

#[test]
fn a_missing_segment_fails_verify_and_refuses_restore() {
    let (repo, _pg, before_gap, missing, _) = archive_four_segments("pitr-gaps");

    let out = repo.strata(&["verify"]);
    assert!(
        out.status.success(),
        "verify before the gap: {}",
        text(&out)
    );

    let key = repo
        .dir
        .join("repo/wal/main")
        .join(&missing[..8])
        .join(&missing);
    fs::remove_file(&key).unwrap();
    fs::remove_file(format!("{}.json", key.display())).unwrap();
    // segment 0/XX000000 of the missing file: log and seg fields
    let log = u64::from_str_radix(&missing[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&missing[16..], 16).unwrap();
    let from = format!("{:X}/{:X}", log, seg << 24);

    let out = repo.strata(&["verify"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&format!("WAL {from}–")), "{t}");
    assert!(t.contains(&missing), "{t}");
    // with the identity, the start comes from the sealed manifest
    let out = repo.strata(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("WAL {from}–")),
        "{}",
        text(&out)
    );
    let out = repo.strata(&["--json", "verify"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["wal"][0]["gaps"][0]["missing"][0],
        missing.as_str(),
        "{v}"
    );
    assert_eq!(v["wal"][0]["gaps"][0]["from"], from.as_str(), "{v}");

    let dir = pg_scratch_dir("pitr-gaps-restore").join("data");
    let dir_s = dir.display().to_string();
    let out = repo.strata(&["restore", "main", "--target-dir", &dir_s, "--latest"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&missing) && t.contains(&from), "{t}");
    assert!(!dir.exists(), "nothing was written");

    // a target before the gap is still reachable
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--to-lsn",
        &before_gap,
    ]);
    assert!(
        out.status.success(),
        "restore before the gap: {}",
        text(&out)
    );
    // one after the newest archived WAL is refused
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--force",
        "--to-lsn",
        "FF/0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Issue 13 item 1: one flipped byte in a WAL object in the middle of the
/// archive passed `verify --read-data`, and `restore --latest --start`
/// exited 0 with the server promoted before it (the only trace was in the
/// server log). Now verify reads every WAL object against its record,
/// and the restore fails naming the segment, with no server left running.
#[test]
fn a_damaged_segment_fails_verify_and_stops_the_restore() {
    let (repo, pg, _, damaged, last) = archive_four_segments("pitr-damaged");
    let out = repo.strata(&["verify", "--read-data"]);
    assert!(out.status.success(), "verify before: {}", text(&out));
    assert!(
        text(&out).contains("each matches its record"),
        "{}",
        text(&out)
    );
    let rows = pg.psql("postgres", "SELECT count(*) FROM ev");
    assert_eq!(rows, "4");

    let wal = repo.dir.join("repo/wal/main");
    let key = wal.join(&damaged[..8]).join(&damaged);
    let mut bytes = fs::read(&key).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&key, &bytes).unwrap();
    let out = repo.strata(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("FAILED  wal main: WAL file {damaged}")),
        "{}",
        text(&out)
    );
    // without --read-data only the listing is checked: still passes
    let out = repo.strata(&["verify"]);
    assert!(out.status.success(), "{}", text(&out));

    let dir = pg_scratch_dir("pitr-damaged-restore").join("data");
    let (out, _, log) = restore_started(&repo, &dir, &["--latest"]);
    assert_eq!(out.status.code(), Some(4), "{}\n{log}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("recovery stopped") && t.contains(&damaged),
        "{t}\n{log}"
    );
    assert!(
        !pg_ctl(&dir, &["status"]).status.success(),
        "no server may be left running on a copy that stopped short"
    );

    // a record whose digest was edited (the object intact) fails too
    fs::write(&key, {
        bytes[at] ^= 0x01;
        &bytes
    })
    .unwrap();
    let record = wal.join(&last[..8]).join(format!("{last}.json"));
    let mut r: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    r["sha256"] = serde_json::Value::from("00".repeat(32));
    fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
    let out = repo.strata(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("WAL file {last}"))
            && !text(&out).contains(&format!("WAL file {damaged}")),
        "{}",
        text(&out)
    );
}

/// Issue 15 item 12: a wrong restore-point name replayed the whole archive
/// and then dumped PostgreSQL's log. Points strata records (`backup
/// --kind point --label`) are checked before anything starts, and their
/// LSN chooses the base backup.
#[test]
fn recorded_restore_points_are_checked_before_the_restore_starts() {
    let (repo, pg, _, _, _) = archive_four_segments("pitr-points");
    let out = repo.strata(&[
        "backup",
        "main",
        "--kind",
        "point",
        "--label",
        "before-deploy",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("--to-name before-deploy"),
        "{}",
        text(&out)
    );
    // named once; a bad label is refused
    let out = repo.strata(&[
        "backup",
        "main",
        "--kind",
        "point",
        "--label",
        "before-deploy",
    ]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let out = repo.strata(&["backup", "main", "--kind", "point", "--label", "has space"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // after the point: a row, and a newer base backup (which cannot reach
    // back to the point: the restore must choose the older one)
    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    let out = repo.strata(&["backup", "main", "--kind", "base"]);
    assert!(out.status.success(), "{}", text(&out));
    // a switch right after the backup's own is a no-op: write first
    let last = row_and_switch(&pg);
    wait_archived(&pg, &last);

    let dir = pg_scratch_dir("pitr-points-restore").join("data");
    let dir_s = dir.display().to_string();
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--to-name",
        "before-deplyo",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("before-deploy") && text(&out).contains("--unrecorded-name"),
        "{}",
        text(&out)
    );
    assert!(!dir.exists(), "nothing was written");

    let (out, port, log) = restore_started(&repo, &dir, &["--to-name", "before-deploy"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    let rows = common::pg::psql_at(port, "postgres")
        .args(["-c", "SELECT count(*) FROM ev"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "4");
    let _ = pg_ctl(&dir, &["stop", "-m", "fast"]);
}

/// The server ends a base backup by waiting for its WAL to be archived,
/// for ever when `archive_command` fails: strata stops pg_basebackup once
/// the archiver has made no progress for `archive_wait`, stores nothing,
/// exits 5 naming the failing segment, and the next backup (archiving
/// fixed) works.
#[test]
fn a_base_backup_stops_when_archiving_makes_no_progress() {
    let repo = Repo::new("archive-wait");
    let pg = repo.start_archiving("archive-wait", &[]);
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(&repo.cfg).unwrap();
        writeln!(f, "archive_wait = \"3s\"").unwrap();
    }
    pg.psql("postgres", "ALTER SYSTEM SET archive_command = 'false'");
    pg.psql("postgres", "SELECT pg_reload_conf()");

    let started = std::time::Instant::now();
    let mut child = common::strata_process()
        .env_remove("STRATA_LOG")
        .env_remove("STRATA_CONFIG")
        .arg("--config")
        .arg(&repo.cfg)
        .args(["backup", "main", "--kind", "base"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // without the watchdog the backup hangs for ever: give it a deadline
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the base backup still waits after 120s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(
        said.contains("archived nothing in the last 3s")
            && said.contains("failed attempts, the last on 0000000")
            && said.contains("no backup was recorded")
            && said.contains("archive_wait"),
        "{said}"
    );
    let list = repo.strata(&["--json", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        list.as_array().map(|a| a.len()),
        Some(0),
        "nothing was recorded: {list}"
    );
    // the server's side of the backup was ended too, not left waiting
    pg.wait_for(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'",
        "0",
        Duration::from_secs(10),
    );

    pg.psql("postgres", "ALTER SYSTEM RESET archive_command");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let report = repo.base_backup(&[]);
    assert!(report["id"].is_string(), "{report}");
}

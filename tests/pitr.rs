//! Point-in-time recovery end to end: a cluster archives its WAL through
//! `strata wal push`, `strata backup --kind base` takes a base backup,
//! and `strata restore --target-dir … --start` brings back exactly the
//! rows committed before a time, a restore point, or everything archived.
mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::pg::{PgCluster, PgOptions, pg_bin_dir, pg_scratch_dir, pg_user};
use common::{at_exit, free_port};

/// The archiving cluster, one base backup, and the points to recover to.
struct Fixture {
    _pg: PgCluster,
    repo: Repo,
    /// Before the base backup: no restore can reach it.
    before_backup: String,
    /// After row 6 committed, a second before row 7.
    after_row_6: String,
    /// The transaction that inserted row 8.
    xid_of_row_8: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let repo = Repo::new("pitr");
        let pg = PgCluster::start(PgOptions {
            extra_conf: repo.archive_conf(),
            name: "pitr",
            ..Default::default()
        });
        repo.write_config(&pg.url("postgres"));
        pg.psql(
            "postgres",
            "CREATE TABLE ev (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); \
             INSERT INTO ev DEFAULT VALUES; INSERT INTO ev DEFAULT VALUES; INSERT INTO ev DEFAULT VALUES",
        );
        let now = |pg: &PgCluster| {
            pg.psql(
                "postgres",
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            )
        };
        let before_backup = now(&pg);
        std::thread::sleep(Duration::from_millis(1100));

        let out = repo.strata(&["--json", "backup", "main", "--kind", "base"]);
        assert!(out.status.success(), "base backup: {}\n{}", text(&out), pg.log_tail(30));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["kind"], "base", "{report}");

        let mut after_row_6 = String::new();
        let mut xid_of_row_8 = String::new();
        for id in 4..=9 {
            let xid = pg.psql(
                "postgres",
                "INSERT INTO ev DEFAULT VALUES RETURNING pg_current_xact_id()",
            );
            if id == 8 {
                xid_of_row_8 = xid;
            }
            if id == 6 {
                std::thread::sleep(Duration::from_millis(300));
                after_row_6 = now(&pg);
                std::thread::sleep(Duration::from_secs(1));
            }
            if id % 2 == 0 {
                pg.psql("postgres", "SELECT pg_switch_wal()");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES"); // 10
        pg.psql("postgres", "SELECT pg_create_restore_point('before_drop')");
        pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES"); // 11, after the point
        let last = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
        pg.psql("postgres", "SELECT pg_switch_wal()");
        pg.wait_for(
            "postgres",
            &format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"),
            "t",
            Duration::from_secs(60),
        );
        assert_eq!(
            pg.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
            "0",
            "{}",
            pg.log_tail(40)
        );
        Fixture {
            _pg: pg,
            repo,
            before_backup,
            after_row_6,
            xid_of_row_8,
        }
    })
}

/// `pg_ctl` as the data dir's owner.
fn pg_ctl(dir: &Path, args: &[&str]) -> Output {
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

/// Restores into a fresh dir with `--start`; returns `max(id)|count(*)`
/// of `ev` and the restored server's `archive_mode`, then stops it.
fn restore_and_count(name: &str, target: &[&str]) -> String {
    let f = fixture();
    let dir = pg_scratch_dir(name).join("data");
    let port = free_port();
    let stop_dir = dir.clone();
    at_exit(move || {
        let _ = pg_ctl(&stop_dir, &["stop", "-m", "immediate"]);
    });
    let port_s = port.to_string();
    let mut args = vec!["--json", "restore", "main", "--target-dir"];
    let dir_s = dir.display().to_string();
    args.push(&dir_s);
    args.extend_from_slice(target);
    // stay on the backup's timeline: the other tests' restored servers
    // promote and archive new timelines into the same repository
    args.extend_from_slice(&["--timeline", "current", "--start", "--port", &port_s]);
    let out = f.repo.strata(&args);
    let log = fs::read_to_string(dir.join("strata-restore.log")).unwrap_or_default();
    assert!(out.status.success(), "restore: {}\n{log}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["started"], true, "{report}");
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["download+extract", "recovery", "checks"]);
    assert!(log.contains("restored log file"), "{log}");
    let psql = Command::new(pg_bin_dir().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &port_s,
        ])
        .args([
            "-d",
            "postgres",
            "-c",
            "SELECT max(id) || '|' || count(*) || '|' || current_setting('archive_mode') FROM ev",
        ])
        .output()
        .unwrap();
    assert!(psql.status.success(), "{}", text(&psql));
    let _ = pg_ctl(&dir, &["stop", "-m", "fast"]);
    String::from_utf8_lossy(&psql.stdout).trim().to_string()
}

#[test]
fn restore_to_a_time_keeps_exactly_the_rows_before_it() {
    let t = fixture().after_row_6.clone();
    // a copy does not archive unless told it is the new primary (issue 15
    // item 2)
    assert_eq!(
        restore_and_count("pitr-time", &["--to-time", &t]),
        "6|6|off"
    );
}

/// Issue 15 item 4: `--to-xid` was missing.
#[test]
fn restore_to_a_transaction_keeps_it_and_nothing_after() {
    let x = fixture().xid_of_row_8.clone();
    assert_eq!(restore_and_count("pitr-xid", &["--to-xid", &x]), "8|8|off");
}

#[test]
fn restore_to_a_named_restore_point() {
    assert_eq!(
        restore_and_count(
            "pitr-name",
            // made by hand (pg_create_restore_point): strata did not
            // record it, so it is looked for in the WAL on request
            // (no --archive-mode preserve here: a copy archiving timeline 2
            // into this shared repository would make the other tests'
            // `latest` restores follow it; tests/pitr_timeline.rs covers
            // preserve)
            &["--to-name", "before_drop", "--unrecorded-name"]
        ),
        "10|10|off"
    );
}

#[test]
fn restore_latest_replays_everything_archived() {
    // a copy that must not archive (and so add a timeline) into the repository
    assert_eq!(
        restore_and_count("pitr-latest", &["--latest", "--archive-mode", "off"]),
        "11|11|off"
    );
}

/// `restore --to-time TIME` into a fresh dir must exit 2 with nothing
/// written; returns its stderr.
fn time_refused(name: &str, time: &str) -> String {
    let f = fixture();
    let dir = pg_scratch_dir(name).join("data");
    let out = f.repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir.display().to_string(),
        "--to-time",
        time,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!dir.exists(), "nothing was written");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn target_before_the_base_backup_is_refused() {
    let e = time_refused("pitr-early", &fixture().before_backup);
    assert!(e.contains("earliest possible point is"), "{e}");
}

#[test]
fn target_after_the_newest_archived_wal_is_refused() {
    // PostgreSQL would replay everything archived and then stop with
    // "recovery ended before configured recovery target was reached"
    let later = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let e = time_refused("pitr-late", &later);
    assert!(
        e.contains("is after the newest archived WAL: segment") && e.contains("pg_switch_wal()"),
        "{e}"
    );
}

#[test]
fn non_empty_target_dir_is_refused_without_force() {
    let f = fixture();
    let dir = pg_scratch_dir("pitr-busy");
    fs::write(dir.join("something"), "x").unwrap();
    let out = f.repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir.display().to_string(),
        "--latest",
    ]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(dir.join("something").exists());
}

#[test]
fn base_backup_without_wal_archiving_is_refused() {
    let pg = common::pg::shared_pg();
    let repo = Repo::new("pitr-noarchive");
    repo.write_config(&pg.url("postgres"));
    let out = repo.strata(&["backup", "main", "--kind", "base"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("archive_mode is off"),
        "{}",
        text(&out)
    );
    // a tier of kind base takes the same path
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg += "\n[tiers.weekly]\nkind = \"base\"\nkeep_last = 2\n";
    fs::write(&repo.cfg, cfg).unwrap();
    let out = repo.strata(&["backup", "--tier", "weekly"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("archive_mode is off"), "{}", text(&out));
    let out = repo.strata(&["backup", "main", "--tier", "weekly", "--kind", "dump"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("contradicts tier weekly"),
        "{}",
        text(&out)
    );
    let list = repo.strata(&["--json", "list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
}

/// Issue 15 item 5: an unknown `--run-as` user, a target directory the
/// server user cannot enter, an identity it cannot read and a port in use
/// were each reported after the whole base backup was downloaded. Now
/// before anything is read or written.
#[test]
fn what_the_server_would_trip_on_is_refused_before_any_download() {
    if pg_user().is_none() {
        eprintln!("skipped: needs root (the server runs as another user)");
        return;
    }
    let f = fixture();
    let root_only = tempfile::Builder::new()
        .prefix("strata-rootonly-")
        .tempdir()
        .unwrap();
    fs::set_permissions(
        root_only.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let dir = pg_scratch_dir("pitr-precheck").join("data");
    let dir_s = dir.display().to_string();
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "main", "--target-dir", &dir_s, "--latest"];
        args.extend_from_slice(extra);
        f.repo.strata(&args)
    };
    let out = restore(&["--run-as", "no-such-user-strata"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no-such-user-strata"), "{}", text(&out));

    let hidden = root_only.path().join("data");
    let out = f.repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &hidden.display().to_string(),
        "--latest",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot reach"), "{}", text(&out));
    assert!(!hidden.exists());

    let key = root_only.path().join("key.txt");
    fs::copy(f.repo.dir.join("key.txt"), &key).unwrap();
    let out = restore(&["--identity", &key.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot read the identity"),
        "{}",
        text(&out)
    );

    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = restore(&["--start", "--port", &port]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("port {port}")),
        "{}",
        text(&out)
    );
    assert!(!dir.exists(), "nothing was written");

    // issue 15 item 7: without --start the printed command starts the copy
    // on a free port (not the source's, not one in use)
    let out = restore(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let chosen: u16 = said
        .split("-o '-p ")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in: {said}"));
    assert_ne!(chosen, f._pg.port);
    assert!(std::net::TcpListener::bind(("127.0.0.1", chosen)).is_ok());
    // issue 15 item 3: `pg_ctl -w` returned while the copy still
    // recovered, and queries saw a partial past; the copy now accepts
    // connections only once promoted, and the output says it is not done
    let conf = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("hot_standby = 'off'"), "{conf}");
    assert!(said.contains("NOT recovered yet"), "{said}");
}

/// Issue 15 item 10: after a `DROP TABLE` with no recent dump, the table
/// came back only by hand (`pg_dump -t | psql` from a restored copy).
/// `--to-time T --table NAME --to-database DB` recovers the cluster to T
/// in a sandbox and brings that table over; an existing table is refused
/// unless `--replace`. Item 9: one spelling of the time for every kind.
#[test]
fn one_table_back_from_a_point_in_time() {
    let f = fixture();
    let t = f.after_row_6.clone();
    let pg = &f._pg;
    let count = |db: &str| pg.psql(db, "SELECT max(id) || '|' || count(*) FROM ev");
    let out = f.repo.strata(&[
        "restore",
        "main",
        "--to-time",
        &t,
        "--table",
        "ev",
        "--to-database",
        "pitr_table_at",
        "--create",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recovered to that instant"),
        "{}",
        text(&out)
    );
    assert_eq!(count("pitr_table_at"), "6|6");
    // the table exists now: refused before any download, unless --replace
    let again = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "main",
            "--to-time",
            "1 second ago",
            "--table",
            "ev",
            "--to-database",
            "pitr_table_at",
        ];
        args.extend_from_slice(extra);
        f.repo.strata(&args)
    };
    let out = again(&[]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let out = again(&["--replace"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count("pitr_table_at"), "11|11");
    // the whole database as of T, into a new one
    let out = f.repo.strata(&[
        "restore",
        "main",
        "--to-time",
        &t,
        "--to-database",
        "pitr_db_at",
        "--create",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count("pitr_db_at"), "6|6");
    // --at is --to-time with --target-dir
    let dir = pg_scratch_dir("pitr-at-alias").join("data");
    let out = f.repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir.display().to_string(),
        "--at",
        &t,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let conf = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("recovery_target_time"), "{conf}");
}

//! Gaps in the WAL archive: `verify` reports them and `restore` refuses a
//! recovery that would stop early at one.
mod common;

use std::fs;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::pg::{PgCluster, PgOptions, pg_scratch_dir};

#[test]
fn a_missing_segment_fails_verify_and_refuses_restore() {
    let repo = Repo::new("pitr-gaps");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "pitr-gaps",
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
    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    let missing = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    let last = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    pg.wait_for(
        "postgres",
        &format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(60),
    );

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

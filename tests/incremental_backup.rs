//! Incremental base backups, the backup side (issue 18 items 1 and 4), on
//! the PostgreSQL under test (15 by default: strata's own method `blocks`;
//! tests/incremental_server.rs runs PostgreSQL 18's `server` method): every
//! base backup stores its plain basis; `--incremental` stores only the
//! changed blocks of relation files as `STRATA-INCR.*` chunk members, a
//! small fraction of the full; a tier's `max_chain` starts a new full; a
//! base backup can read from a streaming standby, checked to be a standby
//! of the source's cluster that does not lag too far.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::pg::{PgCluster, PgOptions, pg_bin_dir, pg_scratch_dir, pg_user};

/// Issue 18 item 1 (method blocks): the full stores a basis that is a valid
/// manifest without file checksums; the incremental after a small change
/// stores chunks of changed blocks only, new files whole, and is a small
/// fraction of the full.
#[test]
fn blocks_incremental_stores_only_changed_blocks() {
    let repo = Repo::new("incr-blocks");
    let pg = repo.start_archiving("incr-blocks", &[]);
    pg.psql(
        "postgres",
        "CREATE TABLE acc (id int PRIMARY KEY, pad text); \
         INSERT INTO acc SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g",
    );
    // frozen, so that the first reads set no hint bits (issue 18's figures)
    pg.psql("postgres", "VACUUM FREEZE acc");
    let acc = pg.psql("postgres", "SELECT pg_relation_filepath('acc')");

    // no parent yet: full, saying why
    let full = repo.base_backup(&["--incremental"]);
    assert!(full["incremental"].is_null(), "{full}");
    assert!(
        full["full_because"]
            .as_str()
            .unwrap()
            .contains("no base backup yet"),
        "{full}"
    );
    let full_id = full["id"].as_str().unwrap();
    let b = repo.basis(full_id);
    strata::sources::postgres::base::basis::check(&b).unwrap();
    let bt = String::from_utf8(b.clone()).unwrap();
    assert!(
        bt.contains(&format!("\"Path\": \"{acc}\"")),
        "basis lists the table"
    );
    assert!(
        !bt.contains("Checksum-Algorithm"),
        "no file checksums in plain"
    );
    // the stored tar's manifest is PostgreSQL's, its checksum as computed
    let members = repo.stored_members(full_id);
    let manifest = &members
        .iter()
        .find(|(n, _)| n == "backup_manifest")
        .unwrap()
        .1;
    strata::sources::postgres::base::basis::check(manifest).unwrap();
    assert!(String::from_utf8_lossy(manifest).contains("Checksum-Algorithm"));
    assert_eq!(
        strata::sources::postgres::base::basis::from_manifest(manifest).unwrap(),
        b
    );

    pg.psql(
        "postgres",
        "UPDATE acc SET pad = 'changed' WHERE id <= 100; \
         CREATE TABLE fresh AS SELECT g FROM generate_series(1, 1000) g",
    );
    let fresh = pg.psql("postgres", "SELECT pg_relation_filepath('fresh')");
    let inc = repo.base_backup(&["--incremental"]);
    let i = &inc["incremental"];
    assert_eq!(i["method"], "blocks", "{inc}");
    assert_eq!(i["parent"], full_id, "{inc}");
    assert_eq!(i["chain"], serde_json::json!([full_id]), "{inc}");
    let (read, stored) = (
        i["blocks_read"].as_u64().unwrap(),
        i["blocks_stored"].as_u64().unwrap(),
    );
    assert!(stored * 20 < read, "{inc}");
    let (full_size, inc_size) = (
        full["stored_bytes"].as_u64().unwrap(),
        inc["stored_bytes"].as_u64().unwrap(),
    );
    assert!(
        inc_size * 4 < full_size,
        "incremental {inc_size} B, full {full_size} B"
    );

    let members: BTreeMap<String, Vec<u8>> = repo
        .stored_members(inc["id"].as_str().unwrap())
        .into_iter()
        .collect();
    let (dir, node) = acc.rsplit_once('/').unwrap();
    assert!(!members.contains_key(&acc), "the table is not stored whole");
    let chunk = &members[&format!("{dir}/STRATA-INCR.{node}.0000")];
    let u = |i: usize| u32::from_le_bytes(chunk[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((u(0), u(1)), (0x5349_4e43, 1));
    let table_blocks = pg
        .psql("postgres", "SELECT pg_relation_size('acc') / 8192")
        .parse::<u32>()
        .unwrap();
    assert_eq!(u(2), table_blocks, "the chunk carries the file's length");
    let n = u(3) as usize;
    // the new row versions fill free space here and there: a few dozen pages
    assert!(
        n >= 1 && n * 20 < table_blocks as usize,
        "{n} blocks of {table_blocks} stored"
    );
    assert_eq!(chunk.len(), 16 + 4 * n + 8192 * n);
    assert!(members.contains_key(&fresh), "a new table is stored whole");
    for name in ["backup_label", "backup_manifest", "global/pg_control"] {
        assert!(members.contains_key(name), "{name}");
    }
    // every main fork the parent held became chunks (empty files pass)
    let whole_relations: Vec<&String> = members
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(n, _)| n)
        .filter(|n| {
            let f = n.rsplit('/').next().unwrap();
            (n.starts_with("base/") || n.starts_with("global/"))
                && f.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        })
        .filter(|n| bt.contains(&format!("\"Path\": \"{n}\"")))
        .collect();
    assert!(whole_relations.is_empty(), "{whole_relations:?}");

    // list shows it
    let out = repo.strata(&["--json", "list", "main"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["incremental"]["method"], "blocks", "{rows}");
    assert_eq!(rows[0]["incremental"]["parent"], full_id, "{rows}");
    assert!(rows[1]["incremental"].is_null(), "{rows}");
    let out = repo.strata(&["list", "main"]);
    assert!(
        text(&out).contains(&format!("incremental (blocks) on {full_id}, a chain of 2")),
        "{}",
        text(&out)
    );
}

/// A tier with `incremental = true` and `max_chain = 2`: full, then one
/// incremental, then a full again; a plain `--kind base` without
/// `--incremental` is full and stores its basis too.
#[test]
fn tiers_chain_up_to_max_chain() {
    let repo = Repo::new("incr-tier");
    let pg = repo.start_archiving("incr-tier", &[]);
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg += "\n[tiers.nightly]\nkind = \"base\"\nincremental = true\nmax_chain = 2\n";
    fs::write(&repo.cfg, cfg).unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g",
    );
    let tier = |repo: &Repo| {
        let out = repo.strata(&["--json", "backup", "main", "--tier", "nightly"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let plain = repo.base_backup(&[]);
    assert!(plain["incremental"].is_null() && plain["full_because"].is_null());
    assert!(
        Path::new(&repo.dir.join(format!(
            "repo/backups/main/{}/basis.json",
            plain["id"].as_str().unwrap()
        )))
        .is_file()
    );
    let first = tier(&repo);
    assert_eq!(first["incremental"]["parent"], plain["id"], "{first}");
    pg.psql("postgres", "INSERT INTO t VALUES (1)");
    let second = tier(&repo);
    assert!(second["incremental"].is_null(), "{second}");
    assert!(
        second["full_because"]
            .as_str()
            .unwrap()
            .contains("max_chain = 2"),
        "{second}"
    );
    let third = tier(&repo);
    assert_eq!(third["incremental"]["parent"], second["id"], "{third}");

    // an altered basis: verify names it; the next backup is full, saying why
    let third_id = third["id"].as_str().unwrap();
    let path = repo
        .dir
        .join(format!("repo/backups/main/{third_id}/basis.json"));
    let altered = String::from_utf8(fs::read(&path).unwrap())
        .unwrap()
        .replacen("\"Size\": ", "\"Size\": 1", 1);
    fs::write(&path, altered).unwrap();
    let out = repo.strata(&["verify", "--read-data"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("backups/main/{third_id}/basis.json has SHA-256")),
        "{}",
        text(&out)
    );
    let fourth = repo.base_backup(&["--incremental"]);
    assert!(fourth["incremental"].is_null(), "{fourth}");
    assert!(
        fourth["full_because"]
            .as_str()
            .unwrap()
            .contains("is damaged"),
        "{fourth}"
    );

    // --incremental is for base backups
    let out = repo.strata(&["backup", "main", "--incremental"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--incremental is for base backups"),
        "{}",
        text(&out)
    );
}

/// Runs a PostgreSQL program as the data dir's owner (`postgres` when
/// root).
fn as_pg(prog: &str) -> Command {
    let bin = pg_bin_dir().join(prog);
    if pg_user().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn set_backup_from(repo: &Repo, primary: &PgCluster, standby_port: u16, extra: &str) {
    repo.write_config(&primary.url("postgres"));
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg += &format!(
        "backup_from = \"postgres://postgres@127.0.0.1:{standby_port}/postgres\"\n{extra}"
    );
    fs::write(&repo.cfg, cfg).unwrap();
}

/// Issue 18 item 4: a streaming standby on loopback serves the base backup
/// (full and incremental) while the primary archives; a server that is no
/// standby, a standby of another cluster, a standby lagging more than
/// backup_from_max_lag and one whose replay is paused are refused by name.
#[test]
fn base_backups_from_a_standby() {
    let repo = Repo::new("incr-standby");
    let pg = repo.start_archiving("incr-primary", &[]);
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g",
    );
    let dir = pg_scratch_dir("incr-standby").join("data");
    let out = Command::new(pg.bin("pg_basebackup"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg("-D")
        .arg(&dir)
        .args(["-R", "-X", "stream", "--checkpoint=fast"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let standby = PgCluster::start_existing(
        PgOptions {
            name: "incr-standby",
            extra_conf: vec!["hot_standby = on".into()],
            ..Default::default()
        },
        &dir,
    );
    pg.psql("postgres", "INSERT INTO t VALUES (-1)");
    standby.wait_for(
        "postgres",
        "SELECT count(*) FROM t",
        "5001",
        Duration::from_secs(30),
    );
    set_backup_from(&repo, &pg, standby.port, "");
    let full = repo.base_backup(&["--incremental"]);
    let full_id = full["id"].as_str().unwrap();
    let members = repo.stored_members(full_id);
    let label = &members.iter().find(|(n, _)| n == "backup_label").unwrap().1;
    assert!(
        String::from_utf8_lossy(label).contains("BACKUP FROM: standby"),
        "{}",
        String::from_utf8_lossy(label)
    );
    pg.psql("postgres", "INSERT INTO t VALUES (-2)");
    standby.wait_for(
        "postgres",
        "SELECT count(*) FROM t",
        "5002",
        Duration::from_secs(30),
    );
    let inc = repo.base_backup(&["--incremental"]);
    assert_eq!(inc["incremental"]["parent"], full_id, "{inc}");
    // the standby's backups restore exactly. Regression: the standby's
    // standby.signal and primary_conninfo came with its backup, and the
    // copy started as a replica streaming from the primary, never promoted
    let sql = "SELECT count(*) || ':' || sum(g) FROM t";
    let expected = pg.psql("postgres", sql);
    archive_all(&pg);
    let (got, report) = restore_latest(&repo, "incr-standby-restore", "postgres", sql);
    assert_eq!(got, expected, "{report}");

    let refused = |repo: &Repo, code: i32, why: &str| {
        let out = repo.strata(&["backup", "main", "--kind", "base"]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        assert!(text(&out).contains(why), "{}", text(&out));
    };
    // a primary is no standby
    let other = PgCluster::start(PgOptions {
        name: "incr-other",
        ..Default::default()
    });
    set_backup_from(&repo, &pg, other.port, "");
    refused(&repo, 2, "is not a standby (it is not in recovery)");
    // a standby of another cluster (its own initdb): refused by its identifier
    let foreign = pg_scratch_dir("incr-foreign").join("data");
    let out = as_pg("initdb")
        .arg("-D")
        .arg(&foreign)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    fs::write(foreign.join("standby.signal"), "").unwrap();
    let foreign = PgCluster::start_existing(
        PgOptions {
            name: "incr-foreign",
            // a standby's settings must be at least its primary's (initdb's)
            extra_conf: vec!["hot_standby = on".into(), "max_connections = 100".into()],
            ..Default::default()
        },
        &foreign,
    );
    foreign.wait_for(
        "postgres",
        "SELECT pg_is_in_recovery()",
        "t",
        Duration::from_secs(30),
    );
    set_backup_from(&repo, &pg, foreign.port, "");
    refused(
        &repo,
        2,
        "is not a standby of the source's cluster: its system identifier is",
    );

    // lag: replay paused while the primary writes on
    standby.psql("postgres", "SELECT pg_wal_replay_pause()");
    pg.psql(
        "postgres",
        "INSERT INTO t SELECT g FROM generate_series(1, 20000) g",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    set_backup_from(&repo, &pg, standby.port, "backup_from_max_lag = \"64kB\"\n");
    refused(
        &repo,
        5,
        "behind the primary (backup_from_max_lag is 64.0 KiB)",
    );
    set_backup_from(&repo, &pg, standby.port, "backup_from_max_lag = \"1GB\"\n");
    refused(&repo, 5, "WAL replay is paused on the standby");
    standby.psql("postgres", "SELECT pg_wal_replay_resume()");
}

/// What `sql` answers on a restored copy: restores the newest base backup
/// (and its chain) with all archived WAL into a new dir, starts it,
/// queries it, stops it. Returns the query's output and the restore report.
fn restore_latest(repo: &Repo, name: &str, db: &str, sql: &str) -> (String, serde_json::Value) {
    let dir = pg_scratch_dir(name).join("data");
    let port = common::free_port();
    let stop = dir.clone();
    common::at_exit(move || {
        let _ = as_pg("pg_ctl")
            .arg("-D")
            .arg(&stop)
            .args(["stop", "-m", "immediate"])
            .output();
    });
    let (dir_s, port_s) = (dir.display().to_string(), port.to_string());
    let out = repo.strata(&[
        "--json",
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--latest",
        "--archive-mode",
        "off",
        "--start",
        "--port",
        &port_s,
    ]);
    let log = fs::read_to_string(dir.join("strata-restore.log")).unwrap_or_default();
    assert!(out.status.success(), "restore: {}\n{log}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = Command::new(pg_bin_dir().join("psql"))
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
        .args(["-d", db, "-c", sql])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", text(&q));
    let _ = as_pg("pg_ctl")
        .arg("-D")
        .arg(&dir)
        .args(["stop", "-m", "fast"])
        .output();
    (
        String::from_utf8_lossy(&q.stdout).trim().to_string(),
        report,
    )
}

/// Waits until the primary's current WAL is archived.
fn archive_all(pg: &PgCluster) {
    // some WAL in the current segment, or the switch does nothing
    pg.psql("postgres", "SELECT pg_create_restore_point('archive_all')");
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
}

const CONTENT: &str = "SELECT (SELECT count(*) || ':' || md5(string_agg(g::text || v, ',' ORDER BY g)) FROM grow) \
    || '|' || (SELECT count(*) || ':' || sum(g) FROM shrink) \
    || '|' || (SELECT count(*) FROM pg_class WHERE relname = 'dropme') \
    || '|' || (SELECT count(*) FROM pg_database WHERE datname = 'newdb')";

/// Issue 18 (method blocks, end to end with the restore side): a full and
/// three incrementals across a table that grew, one truncated by VACUUM,
/// one dropped and a new database restore to exactly the source's rows.
#[test]
fn a_blocks_chain_restores_exactly() {
    let repo = Repo::new("incr-chain");
    let pg = repo.start_archiving("incr-chain", &[]);
    pg.psql(
        "postgres",
        "CREATE TABLE grow (g int, v text); INSERT INTO grow SELECT g, 'a' FROM generate_series(1, 2000) g; \
         CREATE TABLE shrink AS SELECT g FROM generate_series(1, 50000) g; \
         CREATE TABLE dropme AS SELECT g FROM generate_series(1, 5000) g",
    );
    pg.psql("postgres", "VACUUM FREEZE");
    let full = repo.base_backup(&["--incremental"]);
    pg.psql(
        "postgres",
        "INSERT INTO grow SELECT g, 'b' FROM generate_series(2001, 30000) g; \
         DELETE FROM shrink WHERE g > 100",
    );
    pg.psql("postgres", "VACUUM shrink");
    let one = repo.base_backup(&["--incremental"]);
    pg.psql("postgres", "DROP TABLE dropme");
    pg.psql("postgres", "CREATE DATABASE newdb");
    pg.psql(
        "newdb",
        "CREATE TABLE n AS SELECT g FROM generate_series(1, 777) g",
    );
    let two = repo.base_backup(&["--incremental"]);
    pg.psql("postgres", "UPDATE grow SET v = 'c' WHERE g % 97 = 0");
    let three = repo.base_backup(&["--incremental"]);
    let chain: Vec<&str> = [&full, &one, &two]
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        three["incremental"]["chain"],
        serde_json::json!(chain),
        "{three}"
    );
    assert_eq!(three["incremental"]["method"], "blocks", "{three}");
    let expected = pg.psql("postgres", CONTENT);
    assert!(expected.ends_with("|0|1"), "{expected}");
    archive_all(&pg);
    let (got, report) = restore_latest(&repo, "incr-chain-restore", "postgres", CONTENT);
    assert_eq!(got, expected, "{report}");
    assert_eq!(
        report.to_string().matches("\"method\":\"blocks\"").count(),
        3,
        "{report}"
    );
    let (n, _) = restore_latest(&repo, "incr-chain-newdb", "newdb", "SELECT count(*) FROM n");
    assert_eq!(n, "777");
}

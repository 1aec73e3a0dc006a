//! Incremental base backups of method `server` (issue 18 item 1): on
//! PostgreSQL 18 with `summarize_wal = on`, `--incremental` hands the
//! parent's plain basis to `pg_basebackup --incremental`, and the server
//! sends relation files as `INCREMENTAL.<name>` members. Always runs on
//! PostgreSQL 18 (`use_newest_pg`), whatever the run's PostgreSQL.
mod common;

use std::collections::BTreeMap;

use common::archiving::{Repo, text};
use common::pg::use_newest_pg;

/// The full stores a basis the server accepts; the incremental after a
/// small change is of method server and holds INCREMENTAL members.
#[test]
fn server_incremental_on_postgres_18() {
    use_newest_pg();
    let repo = Repo::new("incr-server");
    let pg = repo.start_archiving("incr-server", &["summarize_wal = on"]);
    pg.psql(
        "postgres",
        "CREATE TABLE acc (id int PRIMARY KEY, pad text); \
         INSERT INTO acc SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g",
    );
    pg.psql("postgres", "VACUUM FREEZE acc");
    let acc = pg.psql("postgres", "SELECT pg_relation_filepath('acc')");
    let full = repo.base_backup(&["--incremental"]);
    assert!(full["incremental"].is_null(), "{full}");
    let full_id = full["id"].as_str().unwrap();

    pg.psql("postgres", "UPDATE acc SET pad = 'changed' WHERE id <= 100");
    let inc = repo.base_backup(&["--incremental"]);
    let i = &inc["incremental"];
    assert_eq!(i["method"], "server", "{inc}");
    assert_eq!(i["parent"], full_id, "{inc}");
    assert!(i["blocks_read"].is_null(), "{inc}");
    // taken with -X fetch: the server sent the backup's WAL (at least one
    // 16 MiB segment), which strata dropped; its temporary slot is gone
    assert!(i["wal_dropped_bytes"].as_u64().unwrap() > 16 << 20, "{inc}");
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    let (full_size, inc_size) = (
        full["stored_bytes"].as_u64().unwrap(),
        inc["stored_bytes"].as_u64().unwrap(),
    );
    assert!(
        inc_size * 4 < full_size,
        "incremental {inc_size} B, full {full_size} B"
    );
    let inc_id = inc["id"].as_str().unwrap();
    let members: BTreeMap<String, Vec<u8>> = repo.stored_members(inc_id).into_iter().collect();
    let (dir, node) = acc.rsplit_once('/').unwrap();
    let m = &members[&format!("{dir}/INCREMENTAL.{node}")];
    assert_eq!(&m[..4], &0xd3ae_1f0du32.to_le_bytes());
    assert!(!members.contains_key(&acc));
    // no WAL segment is stored; what the server's manifest lists beside
    // them (the segments' .done files) is
    let wal: Vec<&String> = members
        .keys()
        .filter(|m| m.starts_with("pg_wal/"))
        .collect();
    assert!(!wal.iter().any(|m| is_segment(m)), "{wal:?}");
    assert!(wal.iter().any(|m| is_done(m)), "{wal:?}");
    let label = String::from_utf8_lossy(&members["backup_label"]).into_owned();
    assert!(label.contains("INCREMENTAL FROM LSN:"), "{label}");
    // its basis names the INCREMENTAL members, for the next incremental
    let basis = String::from_utf8(repo.basis(inc_id)).unwrap();
    assert!(basis.contains(&format!("\"Path\": \"{dir}/INCREMENTAL.{node}\"")));
    let next = repo.base_backup(&["--incremental"]);
    assert_eq!(next["incremental"]["parent"], inc_id, "{next}");
    assert_eq!(
        next["incremental"]["chain"],
        serde_json::json!([full_id, inc_id]),
        "{next}"
    );

    // with every replication slot taken, the server waits for the archive
    // itself (-X none): the same backup, and it says so
    let slots: u32 = pg
        .psql("postgres", "SHOW max_replication_slots")
        .parse()
        .unwrap();
    pg.psql(
        "postgres",
        &format!(
            "SELECT pg_create_physical_replication_slot('taken_' || g) FROM generate_series(1, {slots}) g"
        ),
    );
    let out = repo.strata(&["backup", "main", "--kind", "base", "--incremental"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("no temporary replication slot"), "{said}");
    assert!(said.contains("all replication slots are in use"), "{said}");
    // still an incremental, on the one before
    let next_id = next["id"].as_str().unwrap();
    assert!(
        said.contains(&format!("incremental on {next_id} (method server")),
        "{said}"
    );
    pg.psql(
        "postgres",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots",
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("backup ")?
                    .split_once(" of main done")?
                    .0
                    .to_string(),
            )
        })
        .unwrap_or_else(|| panic!("{said}"));
    let wal: Vec<String> = repo
        .stored_members(&last)
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m.starts_with("pg_wal/"))
        .collect();
    assert!(!wal.iter().any(|m| is_segment(m) || is_done(m)), "{wal:?}");
    assert!(repo.basis(&last).len() > 100);
}

/// `pg_wal/` and a WAL segment's name.
fn is_segment(member: &str) -> bool {
    member
        .strip_prefix("pg_wal/")
        .is_some_and(|f| f.len() == 24 && f.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A segment's `.done` file, which `-X fetch` adds (and lists in the
/// backup manifest).
fn is_done(member: &str) -> bool {
    member.starts_with("pg_wal/archive_status/") && member.ends_with(".done")
}

/// The server refuses an incremental whose range it has no WAL summaries
/// for (summarization turned on after the parent): strata takes a full
/// backup instead, and says why.
#[test]
fn a_refused_server_incremental_is_taken_full() {
    use_newest_pg();
    let repo = Repo::new("incr-refused");
    let pg = repo.start_archiving("incr-refused", &["summarize_wal = off"]);
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let full = repo.base_backup(&[]);
    // the summarizer starts at the newest checkpoint's redo point: later
    // than the full's start
    pg.psql("postgres", "INSERT INTO t VALUES (0)");
    pg.psql("postgres", "SELECT pg_switch_wal()");
    pg.psql("postgres", "CHECKPOINT");
    pg.psql("postgres", "ALTER SYSTEM SET summarize_wal = on");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    pg.psql("postgres", "INSERT INTO t VALUES (1)");
    let out = repo.strata(&[
        "--json",
        "backup",
        "main",
        "--kind",
        "base",
        "--incremental",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["incremental"].is_null(), "{r}");
    let why = r["full_because"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "the server refused an incremental on {}",
            full["id"].as_str().unwrap()
        )),
        "{why}"
    );
    assert!(why.contains("WAL summaries are required"), "{why}");
}

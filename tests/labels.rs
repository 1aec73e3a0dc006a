//! Labelled, pinned backup sets end to end (issue 19 item 4), against a
//! real PostgreSQL cluster and a real Redis server: `strata backup --label
//! L --note N --keep-for 7d` backs up every source as one set; `list
//! --label` and `--json` show it; bad and duplicate labels are refused
//! before any work starts; `restore --backup label:L` (one source, and
//! `restore --all`) brings back exactly the labelled state although newer
//! backups exist; `prune --at` keeps the set before its keep date and
//! deletes it after, saying why.
mod common;

use std::fs;

use chrono::{Duration, Utc};
use common::cli::Strata;
use common::pg::{PgCluster, PgOptions};
use common::redis::{RedisServer, Value};

const LABEL: &str = "deploy-v3.2.0";
const NOTE: &str = "before the orders migration";

fn get(r: &RedisServer, key: &str) -> Option<Vec<u8>> {
    match r.conn().cmd(&["GET", key]) {
        Value::Str(b) => Some(b),
        _ => None,
    }
}

#[test]
fn a_labelled_set_is_listed_restored_by_label_and_pruned_after_its_keep_date() {
    let pg = PgCluster::start(PgOptions {
        name: "labels",
        ..Default::default()
    });
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id int PRIMARY KEY, state text); INSERT INTO orders VALUES (1, 'before')",
    );
    let redis = RedisServer::start("labels", &[]);
    redis.conn().ok(&["SET", "release", "v3.1"]);

    let s = Strata::local("labels", &[("main", pg.url("app"))]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += &format!(
        "\n[sources.cache]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    fs::write(&s.config, cfg).unwrap();
    s.init();

    // bad labels: refused with a clear message, exit 2, nothing backed up
    let too_long = "x".repeat(64);
    for bad in ["deploy v3", too_long.as_str(), "deploy/v3"] {
        let o = s.run(&["backup", "--label", bad]).expect_code(2);
        assert!(
            o.stderr.contains(&format!(
                "label {bad:?}: use 1 to 63 letters, digits, '.', '_' or '-'"
            )),
            "{o}"
        );
    }
    assert!(s.list_ids().is_empty());

    // the set: every source, one label, note and keep date
    let o = s
        .run(&[
            "--json",
            "backup",
            "--label",
            LABEL,
            "--note",
            NOTE,
            "--keep-for",
            "7d",
        ])
        .ok();
    let set = o.json();
    let set = set.as_array().unwrap_or_else(|| panic!("{o}"));
    assert_eq!(set.len(), 2, "{o}");
    let mut labelled = std::collections::BTreeMap::new();
    for r in set {
        assert_eq!(r["ok"], true, "{o}");
        assert_eq!(r["backup"]["label"], LABEL, "{o}");
        assert_eq!(r["backup"]["note"], NOTE, "{o}");
        labelled.insert(
            r["source"].as_str().unwrap().to_string(),
            r["backup"]["id"].as_str().unwrap().to_string(),
        );
    }
    assert_eq!(
        labelled.keys().collect::<Vec<_>>(),
        ["cache", "main"],
        "{o}"
    );

    // the same label again for a source that has it: refused before any work
    let o = s.run(&["backup", "main", "--label", LABEL]).expect_code(2);
    assert!(
        o.stderr.contains(&format!(
            "label {LABEL}: main already has a backup with this label"
        )),
        "{o}"
    );
    assert_eq!(s.list_ids().len(), 2);

    // the deployment changes both; newer, unlabelled backups follow
    pg.psql("app", "UPDATE orders SET state = 'after'");
    redis.conn().ok(&["SET", "release", "v3.2"]);
    s.backup("main");
    s.backup("cache");

    // list --label: the set only, with label, note and keep date
    let o = s.run(&["--json", "list", "--label", LABEL]).ok();
    let rows = o.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{o}");
    for r in rows {
        assert_eq!(r["label"], LABEL);
        assert_eq!(r["note"], NOTE);
        assert!(r["keep_until"].is_string(), "{o}");
        assert_eq!(
            labelled[r["source"].as_str().unwrap()],
            r["id"].as_str().unwrap()
        );
    }
    let o = s.run(&["--json", "list"]).ok();
    assert_eq!(o.json().as_array().unwrap().len(), 4, "{o}");
    let o = s.run(&["list"]).ok();
    assert!(o.stdout.contains(&format!("label {LABEL}")), "{o}");
    assert!(o.stdout.contains(NOTE), "{o}");
    let o = s.run(&["list", "--label", "nope"]).ok();
    assert!(o.stdout.contains("no backups labelled nope"), "{o}");

    // one source by label: the state before the deployment
    s.run(&[
        "restore",
        "main",
        "--backup",
        &format!("label:{LABEL}"),
        "--to-database",
        "app_before",
        "--create",
    ])
    .ok();
    assert_eq!(pg.psql("app_before", "SELECT state FROM orders"), "before");
    let target = RedisServer::start("labels-target", &[]);
    let o = s
        .run(&[
            "--json",
            "restore",
            "cache",
            "--backup",
            &format!("label:{LABEL}"),
            "--into",
            &target.url(),
        ])
        .ok();
    assert_eq!(o.json()["backup"], labelled["cache"].as_str(), "{o}");
    assert_eq!(get(&target, "release").as_deref(), Some(&b"v3.1"[..]));
    let o = s
        .run(&[
            "restore",
            "main",
            "--backup",
            "label:nope",
            "--to-database",
            "x",
        ])
        .expect_code(4);
    assert!(
        o.stderr.contains("source main has no backup labelled nope"),
        "{o}"
    );

    // every source by label
    let dir = s.dir.join("restored");
    let o = s
        .run(&[
            "--json",
            "restore",
            "--all",
            "--backup",
            &format!("label:{LABEL}"),
            "--target-dir",
            dir.to_str().unwrap(),
        ])
        .ok();
    let all = o.json();
    for r in all.as_array().unwrap() {
        let source = r["source"].as_str().unwrap();
        assert_eq!(r["ok"], true, "{o}");
        assert_eq!(r["backup"], labelled[source].as_str(), "{o}");
    }
    assert!(dir.join("main/database.pgdump").exists(), "{o}");
    assert!(dir.join("cache/dump.rdb").exists(), "{o}");

    // prune: kept before the keep date whatever else, deleted after it
    let day = |d: i64| (Utc::now() + Duration::days(d)).to_rfc3339();
    let o = s
        .run(&["--json", "prune", "--at", &day(1), "--allow-future-at"])
        .ok();
    let kept: Vec<serde_json::Value> = o.json()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["backups"].as_array().unwrap().clone())
        .filter(|d| labelled.values().any(|id| d["id"] == id.as_str()))
        .collect();
    assert_eq!(kept.len(), 2, "{o}");
    for d in &kept {
        assert_eq!(d["action"], "keep", "{o}");
        assert!(
            d["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("pinned by label {LABEL} until ")),
            "{o}"
        );
    }
    assert_eq!(s.list_ids().len(), 4);

    let o = s.run(&["prune", "--at", &day(8), "--allow-future-at"]).ok();
    assert!(
        o.stdout
            .contains(&format!("pin of label {LABEL} expired at")),
        "{o}"
    );
    let o = s.run(&["--json", "list", "--label", LABEL]).ok();
    assert_eq!(o.json().as_array().unwrap().len(), 0, "{o}");
    // the newer, unlabelled backups stay
    assert_eq!(s.list_ids().len(), 2);

    // one source failing fails the set: non-zero, naming what succeeded
    let s = Strata::local(
        "labels-partial",
        &[
            ("main", pg.url("app")),
            ("down", "postgres://postgres@127.0.0.1:1/app".into()),
        ],
    );
    s.init();
    let o = s.run(&["backup", "--label", "partial", "--keep-for", "1d"]);
    assert_ne!(o.code, Some(0), "{o}");
    // the hint gives the command that completes the set, keep date included
    assert!(
        o.stderr
            .contains("`strata backup down --label partial --keep-until "),
        "{o}"
    );
    assert!(
        o.stderr
            .contains("labelled set partial: failed: down; backed up with the label: main"),
        "{o}"
    );
    let o = s.run(&["--json", "list", "--label", "partial"]).ok();
    assert_eq!(o.json()[0]["source"], "main", "{o}");
}

/// issue 19 item 4: `restore --all --backup label:L` with a labelled base
/// backup brings the cluster back to the end of that backup (replay stops
/// at its stop LSN), not to the newest WAL archived after it.
#[test]
fn restore_all_by_label_replays_a_base_backup_just_to_its_end() {
    use common::archiving::{Repo, text};
    use std::time::Duration as StdDuration;

    let repo = Repo::new("labels-base");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "labels-base",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    pg.psql(
        "postgres",
        "CREATE TABLE orders (id int PRIMARY KEY, state text); INSERT INTO orders VALUES (1, 'before')",
    );
    let out = repo.strata(&["backup", "main", "--kind", "base", "--label", LABEL]);
    assert!(out.status.success(), "labelled base backup: {}", text(&out));
    pg.psql("postgres", "UPDATE orders SET state = 'after'");
    // archive the WAL holding the update: the restore must stop before it
    let last = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let archived = (0..600).any(|_| {
        let done = pg.psql(
            "postgres",
            &format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"),
        );
        std::thread::sleep(StdDuration::from_millis(100));
        done == "t"
    });
    assert!(archived, "{last} was not archived");

    let dest = common::pg::pg_scratch_dir("labels-base-restore").join("restored");
    let out = repo.strata(&[
        "restore",
        "--all",
        "--backup",
        &format!("label:{LABEL}"),
        "--target-dir",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("main: base+wal") && s.contains(&format!("labelled {LABEL}")),
        "{s}"
    );
    let auto = fs::read_to_string(dest.join("main/postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target_lsn"), "{auto}");
    let copy = PgCluster::start_existing(
        PgOptions {
            extra_conf: vec!["archive_mode = off".into()],
            name: "labels-base-copy",
            ..Default::default()
        },
        dest.join("main"),
    );
    copy.wait_until_primary(StdDuration::from_secs(120));
    assert_eq!(copy.psql("postgres", "SELECT state FROM orders"), "before");
}

//! Issue 18 items 2 and 3, shared by tests/incremental_restore.rs (the
//! run's PostgreSQL, 15 by default: method `blocks`) and
//! tests/incremental_restore_server.rs (PostgreSQL 18: method `server`):
//! restoring from a chain of incremental base backups.
//!
//! A workload commits ledger rows carrying their insert time across a full
//! backup and three incrementals, with a table that grew, one truncated by
//! VACUUM, one dropped and a new database in between. A point-in-time
//! restore to a time inside each incremental's window brings back exactly
//! the ledger rows before it and that incremental's tables, through its
//! chain (which the report shows); a drill restores through the chain too.
//! In a copy of the repository, a backup missing or damaged in the middle
//! of the chain is refused by name (exit 4), and `verify` names it. Prune
//! with a short policy deletes an older chain whole and keeps what the
//! newest chain needs, saying why.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::archiving::{Repo, text};
use super::pg::{PgCluster, PgOptions, pg_ctl_at, pg_major, pg_scratch_dir, psql_at};
use super::{at_exit, free_port};

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn now(pg: &PgCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

/// Commits ledger rows `ids`, one transaction each.
fn ledger(pg: &PgCluster, ids: std::ops::RangeInclusive<u32>) {
    for id in ids {
        pg.psql(
            "postgres",
            &format!("INSERT INTO ledger (id) VALUES ({id})"),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A time strictly between two commits: the ledger rows before it are
/// exactly those committed so far.
fn pause_for_time(pg: &PgCluster) -> String {
    std::thread::sleep(Duration::from_millis(300));
    let t = now(pg);
    std::thread::sleep(Duration::from_millis(300));
    t
}

/// A base backup of `main` under `tier`; its id and report.
fn backup(repo: &Repo, tier: &str) -> (String, serde_json::Value) {
    let out = repo.strata(&["--json", "backup", "main", "--kind", "base", "--tier", tier]);
    assert!(out.status.success(), "backup --tier {tier}: {}", text(&out));
    let r = json(&out);
    (r["id"].as_str().unwrap().to_string(), r)
}

/// Restores `main` to `time` with `--start` (`cfg`: the config to use),
/// runs `sql` on the copy and stops it; the report and the rows.
fn restore_at(
    repo: &Repo,
    name: &str,
    time: &str,
    sql: &[(&str, &str)],
) -> (serde_json::Value, Vec<String>) {
    let dir = pg_scratch_dir(name).join("data");
    let stop = dir.clone();
    at_exit(move || {
        let _ = pg_ctl_at(&stop, &["stop", "-m", "immediate"]);
    });
    restore_into(repo, &dir, time, &[], sql)
}

/// [`restore_at`] into `dir`, with `extra` flags (`--delta`).
fn restore_into(
    repo: &Repo,
    dir: &Path,
    time: &str,
    extra: &[&str],
    sql: &[(&str, &str)],
) -> (serde_json::Value, Vec<String>) {
    let port = free_port();
    let port_s = port.to_string();
    let dir_s = dir.display().to_string();
    let mut args = vec![
        "--json",
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--to-time",
        time,
        "--timeline",
        "current",
        "--start",
        "--port",
        &port_s,
    ];
    args.extend_from_slice(extra);
    let out = repo.strata(&args);
    assert!(out.status.success(), "restore to {time}: {}", text(&out));
    let report = json(&out);
    let rows = sql
        .iter()
        .map(|(db, q)| {
            let o = psql_at(port, db).args(["-c", q]).output().unwrap();
            assert!(o.status.success(), "{q}: {}", text(&o));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
        .collect();
    let _ = pg_ctl_at(dir, &["stop", "-m", "fast"]);
    (report, rows)
}

fn chain_of(report: &serde_json::Value) -> Vec<String> {
    report["chain"]
        .as_array()
        .unwrap_or_else(|| panic!("no chain in {report:#}"))
        .iter()
        .map(|c| c["backup"].as_str().unwrap().to_string())
        .collect()
}

/// A copy of `repo`'s repository with a config of its own.
fn copy_repo(repo: &Repo, name: &str) -> (PathBuf, PathBuf) {
    let root = repo.dir.join(name);
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo.dir.join("repo"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let cfg = repo.dir.join(format!("{name}.toml"));
    let text = fs::read_to_string(&repo.cfg).unwrap().replace(
        &repo.dir.join("repo").display().to_string(),
        &root.display().to_string(),
    );
    fs::write(&cfg, text).unwrap();
    (root, cfg)
}

fn strata_with(repo: &Repo, cfg: &Path, args: &[&str]) -> Output {
    super::strata_process()
        .env_remove("STRATA_LOG")
        .env_remove("STRATA_CONFIG")
        .env_remove("STRATA_IDENTITY_FILE")
        .current_dir(&repo.dir)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

/// The scenario of the module docs, on the PostgreSQL in use.
pub fn chain_scenario() {
    let repo = Repo::new("incr-restore");
    let mut conf = repo.archive_conf();
    let server_method = pg_major() >= 17;
    if server_method {
        conf.push("summarize_wal = on".into());
    }
    let pg = PgCluster::start(PgOptions {
        extra_conf: conf,
        name: "incr-restore",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    let tiers = "\n[tiers.weekly]\nkind = \"base\"\nkeep_last = 1\n\n\
                 [tiers.daily]\nkind = \"base\"\nincremental = true\nkeep_last = 1\n";
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg.push_str(tiers);
    fs::write(&repo.cfg, cfg).unwrap();

    pg.psql(
        "postgres",
        "CREATE TABLE ledger (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         CREATE TABLE grew (id int, pad text); \
         INSERT INTO grew SELECT g, repeat('g', 200) FROM generate_series(1, 5000) g; \
         CREATE TABLE shrank (id int, pad text); \
         INSERT INTO shrank SELECT g, repeat('s', 200) FROM generate_series(1, 20000) g; \
         CREATE TABLE dropped (id int); INSERT INTO dropped SELECT generate_series(1, 1000)",
    );
    // an older chain, which prune deletes whole at the end
    let (f0, _) = backup(&repo, "weekly");
    pg.psql("postgres", "INSERT INTO grew VALUES (0, 'old chain')");
    let (i0, r) = backup(&repo, "daily");
    assert_eq!(r["incremental"]["parent"], f0.as_str(), "{r:#}");
    pg.psql("postgres", "DELETE FROM grew WHERE id = 0");

    let (f, r) = backup(&repo, "weekly");
    assert!(r["incremental"].is_null(), "{r:#}");
    // I1: a table grew, another was cut short by VACUUM
    pg.psql(
        "postgres",
        "INSERT INTO grew SELECT g, repeat('h', 200) FROM generate_series(5001, 10000) g; \
         DELETE FROM shrank WHERE id > 500",
    );
    pg.psql("postgres", "VACUUM shrank");
    let (i1, r) = backup(&repo, "daily");
    let method = if server_method { "server" } else { "blocks" };
    assert_eq!(r["incremental"]["method"], method, "{r:#}");
    assert_eq!(r["incremental"]["parent"], f.as_str(), "{r:#}");
    ledger(&pg, 1..=3);
    let t1 = pause_for_time(&pg);
    ledger(&pg, 4..=4);
    // I2: a table dropped, a database created
    pg.psql("postgres", "DROP TABLE dropped");
    pg.psql("postgres", "CREATE DATABASE fresh");
    pg.psql(
        "fresh",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 777)",
    );
    let (i2, r) = backup(&repo, "daily");
    assert_eq!(
        r["incremental"]["chain"],
        serde_json::json!([f, i1]),
        "{r:#}"
    );
    ledger(&pg, 5..=7);
    let t2 = pause_for_time(&pg);
    ledger(&pg, 8..=8);
    // I3: rows changed in place, the table grew again
    pg.psql(
        "postgres",
        "UPDATE grew SET pad = 'changed' WHERE id <= 100; \
         INSERT INTO grew SELECT g, repeat('i', 200) FROM generate_series(10001, 12000) g",
    );
    let (i3, r) = backup(&repo, "daily");
    assert_eq!(
        r["incremental"]["chain"],
        serde_json::json!([f, i1, i2]),
        "{r:#}"
    );
    let i3_started = r["started"].as_str().unwrap().to_string();
    ledger(&pg, 9..=11);
    let t3 = pause_for_time(&pg);
    ledger(&pg, 12..=12);
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

    let ids = "SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger";
    let grew = "SELECT count(*) || '|' || count(*) FILTER (WHERE pad = 'changed') FROM grew";
    let shrank = "SELECT max(id) FROM shrank";
    let dropped = "SELECT to_regclass('dropped') IS NULL";

    // inside I1's window: F + I1, then WAL
    let (r, rows) = restore_at(
        &repo,
        "incr-t1",
        &t1,
        &[
            ("postgres", ids),
            ("postgres", grew),
            ("postgres", shrank),
            ("postgres", dropped),
        ],
    );
    assert_eq!(chain_of(&r), [f.clone(), i1.clone()], "{r:#}");
    assert_eq!(r["backup"], i1.as_str());
    assert_eq!(r["chain"][0]["method"], "full");
    assert_eq!(r["chain"][1]["method"], method);
    assert!(
        r["chain"][1]["applied"]["files_patched"].as_u64().unwrap() > 0,
        "{r:#}"
    );
    assert_eq!(rows, ["1,2,3", "10000|0", "500", "f"]);

    // inside I2's window: the dropped table is gone, the new database there
    let (r, rows) = restore_at(
        &repo,
        "incr-t2",
        &t2,
        &[
            ("postgres", ids),
            ("postgres", dropped),
            ("fresh", "SELECT count(*) FROM t"),
        ],
    );
    assert_eq!(chain_of(&r), [f.clone(), i1.clone(), i2.clone()], "{r:#}");
    // newest first: the dropped table's files, which I1 still holds,
    // left out; I2 wrote every block it holds and I1 only what I2 lacks
    assert!(
        r["chain"][1]["applied"]["removed"].as_u64().unwrap() > 0,
        "{r:#}"
    );
    assert_eq!(rows, ["1,2,3,4,5,6,7", "t", "777"]);

    // inside I3's window
    let (r, rows) = restore_at(
        &repo,
        "incr-t3",
        &t3,
        &[("postgres", ids), ("postgres", grew), ("postgres", shrank)],
    );
    assert_eq!(
        chain_of(&r),
        [f.clone(), i1.clone(), i2.clone(), i3.clone()],
        "{r:#}"
    );
    assert_eq!(rows, ["1,2,3,4,5,6,7,8,9,10,11", "12000|100", "500"]);

    // --delta over the stopped copy of T1's restore: the full compared
    // with it, the incrementals applied as they are
    let t1_dir = pg_scratch_dir("incr-delta").join("data");
    let stop = t1_dir.clone();
    at_exit(move || {
        let _ = pg_ctl_at(&stop, &["stop", "-m", "immediate"]);
    });
    let (_, rows) = restore_into(&repo, &t1_dir, &t1, &[], &[("postgres", ids)]);
    assert_eq!(rows, ["1,2,3"]);
    let (r, rows) = restore_into(
        &repo,
        &t1_dir,
        &t2,
        &["--delta"],
        &[("postgres", ids), ("postgres", dropped)],
    );
    assert_eq!(chain_of(&r), [f.clone(), i1.clone(), i2.clone()], "{r:#}");
    assert!(r["delta"]["files_kept"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(rows, ["1,2,3,4,5,6,7", "t"]);

    // restore --all: files only, through the chain, which it reports
    let all_dir = pg_scratch_dir("incr-all");
    let out = repo.strata(&[
        "--json",
        "restore",
        "--all",
        "--to-time",
        &t2,
        "--target-dir",
        all_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "restore --all: {}", text(&out));
    let a = json(&out);
    let main = a
        .as_array()
        .unwrap_or_else(|| panic!("{a:#}"))
        .iter()
        .find(|s| s["source"] == "main")
        .unwrap();
    assert_eq!(main["chain"], serde_json::json!([f, i1, i2]), "{a:#}");

    // a drill restores through the chain and shows it
    let work = pg_scratch_dir("incr-drill");
    let out = repo.strata(&["--json", "drill", "--work-dir", work.to_str().unwrap()]);
    assert!(out.status.success(), "drill: {}", text(&out));
    let d = json(&out);
    assert_eq!(
        d["sources"][0]["chain"],
        serde_json::json!([f, i1, i2, i3]),
        "{d:#}"
    );
    assert_eq!(d["sources"][0]["passed"], true, "{d:#}");

    // verify checks the chains
    let out = repo.strata(&["--json", "verify", "--read-data"]);
    assert!(out.status.success(), "verify: {}", text(&out));
    let v = json(&out);
    let of_i3 = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == i3.as_str())
        .unwrap();
    assert_eq!(of_i3["chain"], serde_json::json!([f, i1, i2]), "{v:#}");

    // issues 18 and 19: `copy --since` selecting I3 alone copies its chain
    // with it (nothing copied is unrestorable on its own) and each base
    // backup's basis; a point-in-time restore from the copy goes through it
    let dr = repo.dir.join("dr");
    let mut text_cfg = fs::read_to_string(&repo.cfg).unwrap();
    text_cfg.push_str(&format!(
        "\n[repositories.dr]\nurl = \"file://{}\"\n",
        dr.display()
    ));
    fs::write(&repo.cfg, text_cfg).unwrap();
    let out = repo.strata(&["--repo", "dr", "init"]);
    assert!(out.status.success(), "init dr: {}", text(&out));
    let out = repo.strata(&[
        "--json",
        "copy",
        "--to",
        "dr",
        "main",
        "--since",
        &i3_started,
    ]);
    assert!(out.status.success(), "copy: {}", text(&out));
    let c = json(&out);
    let copied: Vec<&str> = c["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(copied, [&f, &i1, &i2, &i3], "the chain first: {c:#}");
    for id in [&f, &i1, &i2, &i3] {
        assert!(
            dr.join(format!("manifests/main/{id}.json")).exists(),
            "{id}"
        );
        assert!(
            dr.join(format!("backups/main/{id}/basis.json")).exists(),
            "{id}'s basis"
        );
    }
    let dr_dir = pg_scratch_dir("incr-dr").join("data");
    let stop = dr_dir.clone();
    at_exit(move || {
        let _ = pg_ctl_at(&stop, &["stop", "-m", "immediate"]);
    });
    let (r, rows) = restore_into(&repo, &dr_dir, &t3, &["--repo", "dr"], &[("postgres", ids)]);
    assert_eq!(
        chain_of(&r),
        [f.clone(), i1.clone(), i2.clone(), i3.clone()],
        "{r:#}"
    );
    assert_eq!(rows, ["1,2,3,4,5,6,7,8,9,10,11"]);

    // issue 18: a backup missing in the middle of the chain is refused by
    // name, before anything is written; never an older backup instead
    let (root, cfg) = copy_repo(&repo, "broken");
    let manifest = root.join(format!("manifests/main/{i2}.json"));
    let kept = fs::read(&manifest).unwrap();
    fs::remove_file(&manifest).unwrap();
    let target = pg_scratch_dir("incr-broken").join("data");
    let target_s = target.display().to_string();
    let out = strata_with(
        &repo,
        &cfg,
        &[
            "restore",
            "main",
            "--target-dir",
            &target_s,
            "--to-time",
            &t3,
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&format!("backup {i2} of the chain of {i3} is missing")),
        "{err}"
    );
    assert!(
        err.contains(&format!("--backup {i1}")),
        "the hint names the backup before it: {err}"
    );
    assert!(!target.exists(), "nothing written");
    let out = strata_with(&repo, &cfg, &["verify"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "backup {i2} of its chain, which it needs, is missing"
        )),
        "{}",
        text(&out)
    );
    fs::write(&manifest, kept).unwrap();

    // damaged: a flipped byte in I1's stored tar (same size)
    let object = fs::read_dir(root.join(format!("backups/main/{i1}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("base.tar")
        })
        .expect("I1's base.tar");
    let mut data = fs::read(&object).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x40;
    fs::write(&object, data).unwrap();
    let target = pg_scratch_dir("incr-damaged").join("data");
    let target_s = target.display().to_string();
    let out = strata_with(
        &repo,
        &cfg,
        &[
            "restore",
            "main",
            "--target-dir",
            &target_s,
            "--to-time",
            &t3,
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&format!("backup {i1} of the chain of {i3} is damaged")),
        "{err}"
    );

    // prune with a short policy: the old chain goes whole, the newest
    // chain stays whatever its tiers say, with the reason
    let out = repo.strata(&["--json", "prune"]);
    assert!(out.status.success(), "prune: {}", text(&out));
    let p = json(&out);
    let decisions: Vec<&serde_json::Value> = p["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["backups"].as_array().unwrap())
        .collect();
    let of = |id: &str| {
        *decisions
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {p:#}"))
    };
    for gone in [&f0, &i0] {
        assert_eq!(of(gone)["action"], "delete", "{p:#}");
        assert_eq!(of(gone)["deleted"], true, "{p:#}");
    }
    for needed in [&i1, &i2] {
        assert_eq!(of(needed)["action"], "keep", "{p:#}");
        assert_eq!(
            of(needed)["reasons"],
            serde_json::json!([format!("needed by incremental {i3}")]),
            "{p:#}"
        );
    }
    assert_eq!(of(&f)["action"], "keep");
    assert_eq!(of(&i3)["action"], "keep");
    let out = repo.strata(&["verify"]);
    assert!(out.status.success(), "verify after prune: {}", text(&out));
}

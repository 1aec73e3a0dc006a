//! End-to-end retention: tiered backups of a real (tiny) database in a
//! local repository, `strata prune --dry-run` then `strata prune`, checked
//! through `list`, `verify` and the repository's files. Also covers
//! `strata backup --tier NAME` running every source of a tier, one of
//! which fails.

mod common;

use std::fs;
use std::process::Command;

use common::cli::Strata;
use common::pg::shared_pg;
use common::run_ok;

fn ids_with_tier(s: &Strata) -> Vec<(String, Option<String>)> {
    let o = s.run(&["--json", "list"]).ok();
    o.json()
        .as_array()
        .unwrap_or_else(|| panic!("list --json is not an array\n{o}"))
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["tier"].as_str().map(String::from),
            )
        })
        .collect()
}

#[test]
fn prune_keeps_the_newest_of_a_tier_and_never_untiered_backups() {
    let pg = shared_pg();
    pg.create_db("prune_e2e");
    pg.psql(
        "prune_e2e",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g;",
    );
    // `broken` names a database that does not exist: its backups fail.
    let s = Strata::local(
        "prune",
        &[
            ("app", pg.url("prune_e2e")),
            ("broken", pg.url("prune_e2e_missing")),
        ],
    );
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += "\n[tiers.daily]\nkeep_last = 2\n";
    fs::write(&s.config, cfg).unwrap();
    s.init();

    let untiered = s.backup("app")["id"].as_str().unwrap().to_string();

    // The whole tier: app succeeds, broken fails, and the exit code says so.
    let o = s
        .run(&["--json", "backup", "--tier", "daily"])
        .expect_code(5);
    let results = o.json();
    let results = results.as_array().expect("an array of per-source results");
    assert_eq!(results.len(), 2, "{o}");
    assert_eq!(results[0]["source"], "app");
    assert_eq!(results[0]["ok"], true, "{o}");
    assert_eq!(results[0]["backup"]["tier"], "daily", "{o}");
    let oldest_daily = results[0]["backup"]["id"].as_str().unwrap().to_string();
    assert_eq!(results[1]["source"], "broken");
    assert_eq!(results[1]["ok"], false, "{o}");
    assert!(
        results[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("prune_e2e_missing")),
        "{o}"
    );
    // Human output: one line per source, the failure included.
    let o = s.run(&["backup", "--tier", "daily"]).expect_code(5);
    assert!(o.stdout.contains("of app done"), "{o}");
    assert!(o.stdout.contains("backup of broken FAILED"), "{o}");
    let second_daily = ids_with_tier(&s)
        .into_iter()
        .find(|(id, t)| t.as_deref() == Some("daily") && *id != oldest_daily)
        .unwrap()
        .0;

    // SOURCE with --tier still works and records the tier.
    let o = s.run(&["--json", "backup", "app", "--tier", "daily"]).ok();
    let newest_daily = o.json()["id"].as_str().unwrap().to_string();
    assert_eq!(o.json()["tier"], "daily");

    let before = ids_with_tier(&s);
    assert_eq!(before.len(), 4, "{before:?}");

    // A leftover of a backup that never completed, older than the grace.
    let leftover_dir = s.repo_dir().join("backups/app/20200101T000000Z-abcdef");
    fs::create_dir_all(&leftover_dir).unwrap();
    let leftover = leftover_dir.join("database.pgdump");
    fs::write(&leftover, b"partial").unwrap();
    run_ok(
        Command::new("touch")
            .args(["-d", "2020-01-01 00:00:00"])
            .arg(&leftover),
    );

    // Dry run: the plan, and nothing deleted.
    let o = s.run(&["prune", "--dry-run"]).ok();
    assert!(o.stdout.contains("dry run"), "{o}");
    assert!(o.stdout.contains("tier daily: keep_last 2"), "{o}");
    assert!(
        o.stdout
            .contains(&format!("would delete app          {oldest_daily}")),
        "{o}"
    );
    assert!(
        o.stdout.contains(&format!(
            "keep         app          {newest_daily}  (keep_last 2, newest of source)"
        )),
        "{o}"
    );
    assert!(o.stdout.contains("without a tier: 1 backup kept"), "{o}");
    assert!(
        o.stdout
            .contains("would remove backups/app/20200101T000000Z-abcdef/database.pgdump"),
        "{o}"
    );
    assert_eq!(ids_with_tier(&s), before);
    assert!(leftover.exists());

    let o = s.run(&["--json", "prune", "--dry-run"]).ok();
    let plan = o.json();
    assert_eq!(plan["dry_run"], true);
    let decisions: Vec<(String, String)> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["backups"].as_array().unwrap().clone())
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (oldest_daily.clone(), "delete".to_string()),
            (second_daily.clone(), "keep".to_string()),
            (newest_daily.clone(), "keep".to_string()),
            (untiered.clone(), "keep".to_string()),
        ],
        "{o}"
    );

    // The real thing.
    let o = s.run(&["--json", "prune"]).ok();
    assert_eq!(o.json()["deleted"], 1, "{o}");
    let after = ids_with_tier(&s);
    let mut after_ids: Vec<&str> = after.iter().map(|(id, _)| id.as_str()).collect();
    after_ids.sort();
    let mut expected = vec![
        untiered.as_str(),
        second_daily.as_str(),
        newest_daily.as_str(),
    ];
    expected.sort();
    assert_eq!(after_ids, expected);
    assert!(!leftover.exists());
    assert!(
        !s.repo_dir()
            .join(format!("backups/app/{oldest_daily}"))
            .exists()
    );
    assert!(
        !s.repo_dir()
            .join(format!("manifests/app/{oldest_daily}.json"))
            .exists()
    );

    let o = s.run(&["--json", "verify"]).ok();
    let v = o.json();
    assert_eq!(v["ok"], true, "{o}");
    assert_eq!(v["leftovers"].as_array().unwrap().len(), 0, "{o}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 3, "{o}");

    // Nothing more to do; the untiered backup is still there.
    let o = s.run(&["prune"]).ok();
    assert!(o.stdout.contains("deleted 0 backups, kept 3"), "{o}");
    assert!(
        ids_with_tier(&s)
            .iter()
            .any(|(id, t)| *id == untiered && t.is_none())
    );
}

#[test]
fn prune_argument_errors() {
    let s = Strata::local("prune-args", &[]);
    s.init();
    let o = s.run(&["prune", "--at", "yesterday"]).expect_code(2);
    assert!(o.stderr.contains("RFC 3339"), "{o}");
    let o = s.run(&["prune", "--grace", "soon"]).expect_code(2);
    assert!(o.stderr.contains("--grace"), "{o}");
    // No tiers, no backups: nothing to do, and a clock can be given.
    // A future --at deletes for real only when asked to.
    let o = s
        .run(&["prune", "--at", "2030-01-01T00:00:00Z"])
        .expect_code(2);
    assert!(o.stderr.contains("--allow-future-at"), "{o}");
    let o = s
        .run(&["prune", "--allow-future-at", "--at", "2030-01-01T00:00:00Z"])
        .ok();
    assert!(
        o.stdout.contains("retention as of 2030-01-01 00:00:00Z"),
        "{o}"
    );
    let o = s.run(&["backup"]).expect_code(2);
    assert!(o.stderr.contains("name a SOURCE"), "{o}");
    let o = s.run(&["backup", "--tier", "nope"]).expect_code(2);
    assert!(o.stderr.contains("no tier named \"nope\""), "{o}");
}

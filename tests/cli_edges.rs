//! Rough edges of the command line found in the first incident drill
//! (issue 15): usage errors under `--json`, `metrics --textfile -`, one
//! name per field across commands.

mod common;

use common::cli::{Strata, run_strata};
use common::pg::shared_pg;

#[test]
fn usage_errors_under_json_are_json() {
    let o = run_strata(["--json", "restore", "--no-such-flag"], &[]).expect_code(2);
    let v = o.json();
    assert_eq!(v["exit_code"], 2, "{o}");
    assert!(
        v["error"].as_str().unwrap().contains("--no-such-flag"),
        "{o}"
    );
    // help stays text
    let o = run_strata(["--json", "restore", "--help"], &[]).ok();
    assert!(o.stdout.contains("During an incident"), "{o}");
}

#[test]
fn metrics_to_stdout_and_list_names_match_backup() {
    let pg = shared_pg();
    pg.create_db("edges_app");
    pg.psql("edges_app", "CREATE TABLE t AS SELECT 1 AS id");
    let s = Strata::local("edges", &[("app", pg.url("edges_app"))]);
    s.init();
    let b = s.backup("app");
    let o = s.run(&["metrics", "--textfile", "-"]).ok();
    assert!(o.stdout.contains("strata_"), "{o}");
    assert!(
        !std::env::current_dir().unwrap().join("-").exists(),
        "a file named - was written"
    );
    let o = s.run(&["--json", "list"]).ok();
    let row = &o.json()[0];
    assert_eq!(row["plain_bytes"], b["plain_bytes"], "{o}");
    assert_eq!(row["stored_bytes"], b["stored_bytes"], "{o}");
}

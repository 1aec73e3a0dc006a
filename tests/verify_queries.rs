//! `verify_queries` end to end on a real PostgreSQL: results recorded at
//! backup time (in the dump's own snapshot), run again after `restore
//! --to-database` and compared; a restore whose results differ fails with
//! the integrity exit code and says which query and row differ; a query
//! that cannot run stops the backup before anything is committed.
//!
//! No pgvector here: the nearest-neighbour query computes an L2 distance
//! over `float8[]` in plain SQL, which is what pgvector's `<->` does.

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::cli::Strata;
use common::pg::shared_pg;

/// 2,000 deterministic 16-dimensional vectors (no random(): the same on
/// every run) and a text column for a search query.
const ITEMS_SQL: &str = "
CREATE TABLE items (id int PRIMARY KEY, embedding float8[] NOT NULL, body text);
INSERT INTO items
SELECT g,
       ARRAY(SELECT sin(g * 0.37 + d * 1.13) * 10 FROM generate_series(1, 16) d),
       'item ' || g || CASE WHEN g % 3 = 0 THEN ' running dogs' ELSE ' quiet cats' END
FROM generate_series(1, 2000) g;
";

/// Nearest neighbours of a probe vector by L2 distance, ties broken by id.
const NN_QUERY: &str = "SELECT id, sqrt(s) AS distance FROM (\
  SELECT id, (SELECT sum((a - b) ^ 2) FROM unnest(embedding, \
    ARRAY(SELECT cos(d * 0.7) * 10 FROM generate_series(1, 16) d)) AS t(a, b)) AS s \
  FROM items) x ORDER BY s, id LIMIT 5";
const COUNT_QUERY: &str = "SELECT count(*), sum(id), min(body) FROM items";
/// Depends on `default_text_search_config`, a per-database setting.
const SEARCH_QUERY: &str =
    "SELECT id, to_tsvector(body)::text FROM items WHERE id IN (3, 4) ORDER BY id";

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|q| toml::Value::String(q.to_string()).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// A setup for source `app` on database `db` with `queries` declared.
fn setup(name: &str, db: &str, queries: &[&str]) -> Strata {
    let pg = shared_pg();
    let s = Strata::local(name, &[("app", pg.url(db))]);
    // [sources.app] is the config's last section: append to it.
    let mut f = OpenOptions::new().append(true).open(&s.config).unwrap();
    writeln!(f, "verify_queries = {}", toml_list(queries)).unwrap();
    s.init();
    s
}

#[test]
fn recorded_results_are_compared_after_a_restore() {
    let pg = shared_pg();
    pg.create_db("vq_src");
    pg.psql("vq_src", ITEMS_SQL);
    let s = setup("vq", "vq_src", &[NN_QUERY, COUNT_QUERY, SEARCH_QUERY]);
    s.backup("app");
    // Writes after the backup are not in it, nor in its recorded results.
    pg.psql("vq_src", "DELETE FROM items WHERE id = 1");

    let o = s
        .run(&["restore", "app", "--to-database", "vq_copy", "--create"])
        .ok();
    assert!(
        o.stdout
            .contains("3 verify queries give the results recorded at backup time"),
        "{o}"
    );
    let o = s
        .run(&[
            "--json",
            "restore",
            "app",
            "--to-database",
            "vq_copy_json",
            "--create",
        ])
        .ok();
    assert_eq!(o.json()["verify_queries_checked"], 3, "{o}");
    // --at picks the dump by time (restore --at for logical backups).
    let o = s
        .run(&[
            "restore",
            "app",
            "--at",
            "0s ago",
            "--to-database",
            "vq_copy_at",
            "--create",
        ])
        .ok();
    assert!(o.stderr.contains("using dump "), "{o}");
    let o = s
        .run(&[
            "restore",
            "app",
            "--at",
            "2020-01-01 00:00",
            "--to-database",
            "vq_none",
        ])
        .expect_code(2);
    assert!(o.stderr.contains("the earliest is"), "{o}");

    // A target database configured differently from the source (its own
    // text search configuration) gives other results: the restore fails
    // with the integrity code and names the query and the row.
    pg.create_db("vq_bad");
    pg.psql(
        "postgres",
        "ALTER DATABASE vq_bad SET default_text_search_config = 'pg_catalog.simple'",
    );
    let o = s
        .run(&["restore", "app", "--to-database", "vq_bad"])
        .expect_code(4);
    let all = o.all();
    assert!(
        all.contains("1 of 3 verify queries give other results than at backup time"),
        "{o}"
    );
    assert!(
        all.contains("verify query 3 (SELECT id, to_tsvector"),
        "{o}"
    );
    assert!(all.contains("row 1 was"), "{o}");
    assert!(all.contains("'run':"), "{o}");
}

#[test]
fn a_failing_query_stops_the_backup() {
    let pg = shared_pg();
    pg.create_db("vq_fail");
    pg.psql(
        "vq_fail",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let s = setup(
        "vqfail",
        "vq_fail",
        &["SELECT count(*) FROM t", "SELECT * FROM missing_table"],
    );
    let o = s.run(&["backup", "app"]).expect_code(2);
    assert!(
        o.stderr
            .contains("verify query 2 (SELECT * FROM missing_table) failed"),
        "{o}"
    );
    assert!(o.stderr.contains("verify_queries"), "{o}");
    assert!(s.list_ids().is_empty(), "no backup may be committed\n{o}");
}

#[test]
fn several_statements_in_one_query_are_refused_and_change_nothing() {
    let pg = shared_pg();
    pg.create_db("vq_multi");
    pg.psql(
        "vq_multi",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    // the COMMIT would end the read-only transaction and let the DROP run
    let s = setup(
        "vqmulti",
        "vq_multi",
        &["SELECT count(*) FROM t; COMMIT; DROP TABLE t"],
    );
    let o = s.run(&["backup", "app"]).expect_code(2);
    assert!(
        o.stderr.contains("verify query 1") && o.stderr.contains("cannot insert multiple commands"),
        "{o}"
    );
    assert!(s.list_ids().is_empty(), "no backup may be committed\n{o}");
    assert_eq!(pg.psql("vq_multi", "SELECT count(*) FROM t"), "1");
}

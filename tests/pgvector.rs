//! pgvector for real (issue 16 item 4): a table with `vector`, `halfvec`
//! and `sparsevec` columns, two HNSW indexes and an IVFFlat one, on
//! PostgreSQL 18 with the pgvector its install ships (this test binary
//! always runs there, whatever the run's PostgreSQL: `use_newest_pg`).
//!
//! A dump restore, a drill of the dump, a PITR and a drill to a time each
//! bring back the same nearest-neighbour answers:
//! - `verify_queries` ordered by distance (ties by id), which strata
//!   records at backup time and compares exactly after a dump restore and
//!   in a dump's drill (ordered by two keys, they read the table, not an
//!   approximate index: the same answer whatever the index);
//! - the answers through each index (the planner's choice, checked with
//!   EXPLAIN; `hnsw.ef_search` and `ivfflat.probes` wide enough to make
//!   the scan exhaustive on 2,100 rows, so a rebuilt index answers as the
//!   original did), compared by the test before and after.

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::cli::Strata;
use common::free_port;
use common::pg::{PgCluster, PgOptions, pg_ctl_at, pg_scratch_dir, psql_at, use_newest_pg};

const DIM: usize = 16;

/// The probe of every query, a fixed 16-dimensional vector.
fn probe() -> String {
    let v: Vec<String> = (1..=DIM)
        .map(|d| format!("{:.2}", (d as f64 * 0.7).cos() * 10.0))
        .collect();
    format!("[{}]", v.join(","))
}

/// Rows `from..=to`: deterministic vectors (no random()), the sparse
/// column a third zeros.
fn rows_sql(from: u32, to: u32) -> String {
    format!(
        "INSERT INTO items \
         SELECT g, e::vector, e::vector::halfvec, \
                ARRAY(SELECT CASE WHEN (g + d) % 3 = 0 THEN 0 ELSE x END \
                      FROM unnest(e) WITH ORDINALITY AS u(x, d))::vector::sparsevec \
         FROM (SELECT g, ARRAY(SELECT round((sin(g * 0.37 + d * 1.13) * 10)::numeric, 2)::real \
                               FROM generate_series(1, {DIM}) d) AS e \
               FROM generate_series({from}, {to}) g) x"
    )
}

fn fixture_sql() -> String {
    format!(
        "CREATE EXTENSION vector; \
         CREATE TABLE items (id int PRIMARY KEY, v vector({DIM}) NOT NULL, \
                             h halfvec({DIM}) NOT NULL, s sparsevec({DIM}) NOT NULL); \
         {}; \
         CREATE INDEX items_v_hnsw ON items USING hnsw (v vector_l2_ops); \
         CREATE INDEX items_h_ivfflat ON items USING ivfflat (h halfvec_cosine_ops) WITH (lists = 20); \
         CREATE INDEX items_s_hnsw ON items USING hnsw (s sparsevec_l2_ops); \
         ANALYZE items",
        rows_sql(1, 2000)
    )
}

/// `verify_queries`: the ten nearest by each column's distance, exact.
/// `ORDER BY distance, id` alone is not: the planner serves the first key
/// from the approximate index and sorts ties by id on top (incremental
/// sort), and a rebuilt index may find other neighbours. `+ 0` makes an
/// expression no index serves.
fn verify_queries() -> Vec<String> {
    let p = probe();
    vec![
        format!(
            "SELECT id, v <-> '{p}' AS distance FROM items ORDER BY (v <-> '{p}') + 0, id LIMIT 10"
        ),
        format!(
            "SELECT id, h <=> '{p}'::halfvec AS distance FROM items \
             ORDER BY (h <=> '{p}'::halfvec) + 0, id LIMIT 10"
        ),
        format!(
            "SELECT id, s <-> '{p}'::vector::sparsevec AS distance FROM items \
             ORDER BY (s <-> '{p}'::vector::sparsevec) + 0, id LIMIT 10"
        ),
    ]
}

/// `(index, query)`: the ten nearest through each index.
fn index_queries() -> Vec<(&'static str, String)> {
    let p = probe();
    vec![
        (
            "items_v_hnsw",
            format!("SELECT id, v <-> '{p}' FROM items ORDER BY v <-> '{p}' LIMIT 10"),
        ),
        (
            "items_h_ivfflat",
            format!(
                "SELECT id, h <=> '{p}'::halfvec FROM items ORDER BY h <=> '{p}'::halfvec LIMIT 10"
            ),
        ),
        (
            "items_s_hnsw",
            format!(
                "SELECT id, s <-> '{p}'::vector::sparsevec FROM items \
                 ORDER BY s <-> '{p}'::vector::sparsevec LIMIT 10"
            ),
        ),
    ]
}

/// Runs `sql` with psql on 127.0.0.1:`port`; trimmed stdout.
fn psql(port: u16, db: &str, sql: &str) -> String {
    let out = psql_at(port, db).args(["-c", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every answer: the exact queries' and, through each index (the plan
/// checked), the indexed ones; plus the indexes' validity.
fn answers(port: u16, db: &str) -> Vec<String> {
    const SETTINGS: &str =
        "SET hnsw.ef_search = 400; SET ivfflat.probes = 20; SET enable_seqscan = off;";
    let mut out = Vec::new();
    for q in verify_queries() {
        let plan = psql(port, db, &format!("EXPLAIN (COSTS OFF) {q}"));
        assert!(
            !plan.contains("hnsw") && !plan.contains("ivfflat"),
            "{q} uses an index:\n{plan}"
        );
        out.push(psql(port, db, &q));
    }
    for (index, q) in index_queries() {
        let plan = psql(port, db, &format!("{SETTINGS} EXPLAIN (COSTS OFF) {q}"));
        assert!(plan.contains(index), "{q} does not use {index}:\n{plan}");
        out.push(psql(port, db, &format!("{SETTINGS} {q}")));
    }
    out.push(psql(
        port,
        db,
        "SELECT string_agg(c.relname || ':' || am.amname || ':' || i.indisvalid, ',' ORDER BY c.relname) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
         WHERE i.indrelid = 'items'::regclass",
    ));
    out
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|q| toml::Value::String(q.clone()).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The answers on the source are what they should be: ten rows each;
/// through the HNSW index on `vector` the same as the exact scan. (The
/// index's own arithmetic orders IVFFlat's near-equal cosine distances on
/// `halfvec` differently, and HNSW on this `sparsevec` data finds other
/// neighbours than the exact ones even with a wide `ef_search`: those are
/// compared with themselves after each restore.)
fn check_answers_sane(a: &[String]) {
    assert_eq!(a.len(), 7, "{a:?}");
    for answer in &a[..6] {
        assert_eq!(answer.lines().count(), 10, "{answer}");
    }
    assert_eq!(a[0], a[3], "through items_v_hnsw");
    assert_eq!(
        a[6],
        "items_h_ivfflat:ivfflat:true,items_pkey:btree:true,items_s_hnsw:hnsw:true,items_v_hnsw:hnsw:true"
    );
}

#[test]
fn dump_restore_and_drill_bring_back_the_same_neighbours() {
    use_newest_pg();
    let pg = PgCluster::start(PgOptions {
        name: "pgvector-dump",
        ..Default::default()
    });
    pg.create_db("vec");
    pg.psql("vec", &fixture_sql());
    let before = answers(pg.port, "vec");
    check_answers_sane(&before);

    let s = Strata::local("pgvector", &[("app", pg.url("vec"))]);
    // [sources.app] is the config's last section: append to it
    let mut f = fs::OpenOptions::new().append(true).open(&s.config).unwrap();
    writeln!(f, "verify_queries = {}", toml_list(&verify_queries())).unwrap();
    drop(f);
    s.init();
    s.backup("app");
    // after the backup: not in it, nor in its recorded answers
    pg.psql("vec", "DELETE FROM items WHERE id <= 100");

    let o = s
        .run(&["restore", "app", "--to-database", "vec_copy", "--create"])
        .ok();
    assert!(
        o.stdout
            .contains("3 verify queries give the results recorded at backup time"),
        "{o}"
    );
    // every answer but the one through the rebuilt HNSW index on
    // `sparsevec`: approximate (see check_answers_sane), a rebuilt graph
    // may find other neighbours; exhaustive IVFFlat and the `vector` HNSW,
    // exact here, answer as before
    let mut after = answers(pg.port, "vec_copy");
    check_answers_sane(&after);
    let mut before = before;
    before.remove(5);
    after.remove(5);
    assert_eq!(after, before);

    let work = pg_scratch_dir("pgvector-drill");
    let o = s
        .run(&[
            "--json",
            "drill",
            "--source",
            "app",
            "--work-dir",
            work.to_str().unwrap(),
        ])
        .ok();
    let r = o.json();
    assert_eq!(r["passed"], true, "{r:#}");
    let checks = r["sources"][0]["checks"].as_array().unwrap();
    let vq = checks
        .iter()
        .find(|c| c["name"] == "verify queries")
        .unwrap_or_else(|| panic!("no verify queries check: {r:#}"));
    assert_eq!(vq["outcome"], "pass", "{r:#}");
}

#[test]
fn pitr_and_drill_bring_back_the_same_neighbours() {
    use_newest_pg();
    let repo = Repo::new("pgvector-pitr");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "pgvector-pitr",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg += &format!("verify_queries = {}\n", toml_list(&verify_queries()));
    fs::write(&repo.cfg, cfg).unwrap();
    pg.psql("postgres", &fixture_sql());
    let out = repo.strata(&["--json", "backup", "main", "--kind", "base"]);
    assert!(out.status.success(), "base backup: {}", text(&out));
    // after the base backup, in WAL only: new rows, index entries with them
    pg.psql("postgres", &rows_sql(2001, 2100));
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let expected = answers(pg.port, "postgres");
    check_answers_sane(&expected);
    std::thread::sleep(Duration::from_millis(1100));
    let t = pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(300));
    pg.psql("postgres", "DELETE FROM items WHERE id % 2 = 0");
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

    let dir = pg_scratch_dir("pgvector-restored").join("data");
    let port = free_port();
    let stop = dir.clone();
    common::at_exit(move || {
        let _ = pg_ctl_at(&stop, &["stop", "-m", "immediate"]);
    });
    let port_s = port.to_string();
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        dir.to_str().unwrap(),
        "--to-time",
        &t,
        "--timeline",
        "current",
        "--start",
        "--port",
        &port_s,
    ]);
    assert!(out.status.success(), "restore: {}", text(&out));
    let got = answers(port, "postgres");
    let _ = pg_ctl_at(&dir, &["stop", "-m", "fast", "-w"]);
    assert_eq!(got, expected);

    let work = pg_scratch_dir("pgvector-pitr-drill");
    let out = repo.strata(&[
        "--json",
        "drill",
        "--source",
        "main",
        "--to-time",
        &t,
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "drill: {}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let checks: Vec<String> = r["sources"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "verify queries=pass",
        "btree indexes (amcheck, postgres)=pass",
    ] {
        assert!(checks.contains(&want.to_string()), "{want}: {checks:?}");
    }
}

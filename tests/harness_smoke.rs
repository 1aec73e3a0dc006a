//! Smoke test of the test harness itself: PostgreSQL clusters start, take
//! queries and honour extra configuration.
mod common;

use common::pg::{PgCluster, PgOptions, shared_pg};

#[test]
fn shared_cluster_runs_queries() {
    let pg = shared_pg();
    pg.create_db("harness_smoke");
    pg.psql(
        "harness_smoke",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g;",
    );
    assert_eq!(pg.psql("harness_smoke", "SELECT count(*) FROM t"), "100");
    assert_eq!(
        pg.psql("harness_smoke", "SELECT id, v FROM t WHERE id = 7"),
        "7|row 7"
    );
    assert_eq!(pg.psql("postgres", "SHOW wal_level"), "replica");
    assert_eq!(pg.psql("postgres", "SHOW server_encoding"), "UTF8");
    assert!(
        pg.url("harness_smoke")
            .ends_with(&format!(":{}/harness_smoke", pg.port))
    );
    assert!(
        pg.try_psql("harness_smoke", "SELECT * FROM missing")
            .is_err()
    );
}

#[test]
fn cluster_with_extra_conf() {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "archive_mode = on".into(),
            "archive_command = '/bin/true'".into(),
        ],
        name: "archive",
        ..Default::default()
    });
    assert_eq!(pg.psql("postgres", "SHOW archive_mode"), "on");
    assert_eq!(pg.psql("postgres", "SHOW archive_command"), "/bin/true");
    assert_ne!(pg.port, shared_pg().port);

    // the archiver runs: force a segment switch and see it archived
    pg.psql(
        "postgres",
        "CREATE TABLE a AS SELECT generate_series(1, 1000) g",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    pg.wait_for(
        "postgres",
        "SELECT archived_count > 0 FROM pg_stat_archiver",
        "t",
        std::time::Duration::from_secs(30),
    );

    pg.restart();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM a"), "1000");
    pg.stop();
    assert!(!pg.is_running());
    assert!(pg.log().contains("database system is shut down"));
}

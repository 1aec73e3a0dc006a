//! Store faults: the real `strata` binary against the S3 test server seen
//! through a fault-injecting proxy (`common::faults`) that refuses, resets
//! in the middle of a body, freezes (accepts and says nothing, as a
//! `kill -STOP`ped server) or answers 503.
//!
//! Guards issue 13 item 3 (a frozen endpoint hung `backup`, `wal push` and
//! `list` forever) and item 4 (an outage during a restore was reported as
//! a damaged backup, exit 4). The configs set short deadlines; the tests
//! assert that commands end, with which exit code and message — never a
//! timing bound tighter than those deadlines.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::cli::{RepoSpec, Strata, wait_output};
use common::faults::{FaultProxy, Mode};
use common::pg::{PgCluster, shared_pg};
use common::s3::s3_server;

/// Short deadlines so a dead store is reported in seconds: a call gives
/// up after 3 attempts of at most 1 s + 2 s each, plus backoff.
const LIMITS: &str =
    "connect_timeout = \"1s\"\nrequest_timeout = \"2s\"\nstall_timeout = \"2s\"\nretries = 2\n";

/// Far above the configured deadlines: only a hang reaches it.
const HANG: Duration = Duration::from_secs(300);

/// A setup whose S3 repository is reached through a new proxy, with the
/// short [`LIMITS`]; the repository is initialised.
fn through_proxy(name: &str, sources: &[(&str, String)]) -> (Strata, FaultProxy) {
    let server = s3_server();
    let proxy = FaultProxy::start(&server.endpoint);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("faults/{name}-{}-{nanos}", std::process::id());
    let repo = RepoSpec::S3 {
        endpoint: proxy.endpoint.clone(),
        bucket: server.bucket.clone(),
        prefix,
        env: server.env_vars(),
    };
    let s = Strata::with_repo(name, repo, sources);
    let text = fs::read_to_string(&s.config).unwrap();
    let text = text.replacen("[repository]\n", &format!("[repository]\n{LIMITS}"), 1);
    fs::write(&s.config, text).unwrap();
    s.init();
    (s, proxy)
}

/// Runs strata, failing the test only if it hangs (see [`HANG`]).
fn run(s: &Strata, args: &[&str]) -> common::cli::Output {
    let mut c = s.command(args);
    let cmdline = format!("strata {}", args.join(" "));
    let started = Instant::now();
    let child = c.spawn().expect("spawn strata");
    wait_output(child, cmdline, started, HANG)
}

/// A database of `rows` rows of random hex (about 200 bytes each, poorly
/// compressible), so its dump spans several MiB.
fn database(pg: &PgCluster, db: &str, rows: u64) -> String {
    let _ = pg.try_psql("postgres", &format!("DROP DATABASE IF EXISTS {db}"));
    pg.create_db(db);
    pg.psql(
        db,
        &format!(
            "CREATE TABLE t AS SELECT g AS id, \
               md5(random()::text) || md5(random()::text) || md5(random()::text) || \
               md5(random()::text) || md5(random()::text) || md5(random()::text) AS payload \
             FROM generate_series(1, {rows}) g; ALTER TABLE t ADD PRIMARY KEY (id);"
        ),
    );
    pg.url(db)
}

fn digest(pg: &PgCluster, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*) || ':' || md5(string_agg(md5(t::text), '' ORDER BY id)) FROM t",
    )
}

/// The message strata printed names the store, not the data.
#[track_caller]
fn assert_store_failure(o: &common::cli::Output) {
    eprintln!("{o}");
    assert_eq!(o.code, Some(6), "expected the store's exit code 6\n{o}");
    assert!(!o.stderr.contains("is damaged"), "{o}");
    assert!(o.stderr.contains("storage:"), "{o}");
    assert!(o.stderr.contains("HINT"), "{o}");
}

#[test]
fn wal_push_to_a_frozen_endpoint_fails_instead_of_hanging() {
    // issue 13 item 3: with the S3 server stopped (kill -STOP), `wal push`
    // never returned, so PostgreSQL's archiver never counted a failure.
    let (s, proxy) = through_proxy(
        "wal-frozen",
        &[("app", "postgres://postgres@127.0.0.1:1/postgres".into())],
    );
    let file = s.dir.join("00000002.history");
    fs::write(&file, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let path = file.display().to_string();

    proxy.set(Mode::Stall);
    let o = run(&s, &["wal", "push", "--source", "app", &path]);
    assert_store_failure(&o);
    assert!(
        o.stderr.contains(&proxy.endpoint) || o.stderr.contains("no answer"),
        "{o}"
    );

    // The store comes back: the archiver's next try succeeds.
    proxy.set(Mode::Pass);
    run(&s, &["wal", "push", "--source", "app", &path]).ok();
}

#[test]
fn list_against_a_frozen_or_refusing_endpoint_fails_instead_of_hanging() {
    // issue 13 item 3: `list` hung against a frozen endpoint.
    let (s, proxy) = through_proxy("list-frozen", &[]);
    assert!(s.list_ids().is_empty());
    for mode in [Mode::Stall, Mode::Refuse, Mode::Unavailable] {
        proxy.set(mode);
        let o = run(&s, &["list"]);
        assert_store_failure(&o);
    }
    assert!(
        proxy.unavailable_answers() >= 3,
        "every attempt was answered 503"
    );
    proxy.set(Mode::Pass);
    assert!(s.list_ids().is_empty());
}

#[test]
fn backup_to_an_endpoint_that_freezes_fails_instead_of_hanging() {
    // issue 13 item 3: `backup` was still waiting after 150 s with the S3
    // server stopped.
    let pg = shared_pg();
    let url = database(pg, "faults_backup", 20_000);
    let (s, proxy) = through_proxy("backup-frozen", &[("app", url)]);

    // Frozen from the start.
    proxy.set(Mode::Stall);
    let o = run(&s, &["backup", "app"]);
    assert_store_failure(&o);

    // Freezing in the middle of the upload of the dump.
    proxy.set(Mode::StallAfter { after: 256 * 1024 });
    let o = run(&s, &["backup", "app"]);
    assert_store_failure(&o);
    assert_eq!(
        proxy.mode(),
        Mode::Stall,
        "the freeze happened during the run"
    );

    // Nothing half-written is listed. The lock the frozen run could not
    // remove is the operator's to clear (`unlock --force`: its holder is
    // surely gone); then the next backup completes.
    proxy.set(Mode::Pass);
    assert!(s.list_ids().is_empty());
    run(&s, &["unlock", "--force"]).ok();
    s.backup("app");
    assert_eq!(s.list_ids().len(), 1);
}

#[test]
fn restore_survives_a_short_outage_and_fails_cleanly_on_a_long_one() {
    // issue 13 item 4: an S3 outage during a restore was reported as
    // "object … is damaged: streaming error" (exit 4, hint: run verify)
    // although the object was intact.
    let pg = shared_pg();
    let url = database(pg, "faults_restore_src", 20_000);
    let want = digest(pg, "faults_restore_src");
    let (s, proxy) = through_proxy("restore", &[("app", url)]);
    s.backup("app");

    // Short outage: the connection is reset once, 1 MiB into the dump's
    // body (far more than any manifest). The read resumes at the offset
    // reached and the restore completes, every byte verified.
    proxy.set(Mode::Reset {
        after: 1024 * 1024,
        times: 1,
    });
    let o = run(
        &s,
        &[
            "restore",
            "app",
            "--to-database",
            "faults_restored",
            "--create",
        ],
    );
    let o = o.ok();
    assert_eq!(proxy.resets(), 1, "the reset happened\n{o}");
    assert_eq!(digest(pg, "faults_restored"), want);
    let _ = pg.try_psql("postgres", "DROP DATABASE faults_restored");

    // verify --read-data streams every object too, through the same reset.
    proxy.set(Mode::Reset {
        after: 1024 * 1024,
        times: 1,
    });
    run(&s, &["verify", "--read-data"]).ok();
    assert_eq!(proxy.resets(), 2);

    // A slow link is not an outage: the read takes longer than every
    // configured deadline, yet nothing is cut, because the stall timeout
    // counts time without progress, never the total (a 1 TB restore must
    // not be cut either).
    proxy.set(Mode::Slow {
        bytes_per_sec: 256 * 1024,
    });
    let o = run(&s, &["verify", "--read-data"]).ok();
    assert!(
        o.elapsed > Duration::from_secs(4),
        "the slow link made the read outlast request_timeout and stall_timeout\n{o}"
    );

    // Long outage: cut 1 MiB into the body and gone from then on. The
    // store's failure, exit 6 — not a damaged backup (exit 4).
    proxy.set(Mode::CutOff { after: 1024 * 1024 });
    let o = run(
        &s,
        &[
            "restore",
            "app",
            "--to-database",
            "faults_restored2",
            "--create",
        ],
    );
    assert_store_failure(&o);
    assert!(o.stderr.contains("from the store failed at byte"), "{o}");
    let _ = pg.try_psql("postgres", "DROP DATABASE IF EXISTS faults_restored2");

    // The object is intact: with the store back, verify passes.
    proxy.set(Mode::Pass);
    run(&s, &["verify", "--read-data"]).ok();
}

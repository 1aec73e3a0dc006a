//! Asynchronous WAL archiving under load (issue 3): a cluster whose
//! `archive_command` is `strata wal push --async --processes 4` runs
//! `pgbench -c 4` for a minute with small `max_wal_size` (frequent
//! checkpoints, many segments). The archiver never fails, keeps up, the
//! archive is continuous, and a restore of everything archived has every
//! pgbench transaction.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::archiving::{Repo, text};
use common::pg::{PgCluster, PgOptions, pg_bin_dir, pg_scratch_dir, pg_user};
use common::{at_exit, free_port, strata_bin, strata_process};

/// Seconds of `pgbench -c 4` (override: STRATA_PITR_LOAD_SECONDS).
fn load_seconds() -> u64 {
    std::env::var("STRATA_PITR_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

fn async_conf(repo: &Repo) -> Vec<String> {
    vec![
        "archive_mode = on".into(),
        format!(
            "archive_command = '{} --config {} wal push --async --processes 4 %p'",
            strata_bin().display(),
            repo.cfg.display()
        ),
        "archive_timeout = 0".into(),
        // a checkpoint every 2 segments: full-page writes, much WAL
        "max_wal_size = 32MB".into(),
        "min_wal_size = 32MB".into(),
    ]
}

fn pgbench(pg: &PgCluster, args: &[&str]) {
    let out = Command::new(pg_bin_dir().join("pgbench"))
        .env_remove("PGPASSWORD")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(pg.port.to_string())
        .args(args)
        .arg("postgres")
        .output()
        .expect("spawn pgbench");
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}\n{}",
        text(&out),
        pg.log_tail(30)
    );
}

/// `pg_ctl` as the data dir's owner.
fn pg_ctl(dir: &Path, args: &[&str]) -> std::process::Output {
    let bin = pg_bin_dir().join("pg_ctl");
    let mut c = if pg_user().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.arg("-D").arg(dir).args(args).output().unwrap()
}

#[test]
fn async_push_keeps_up_with_pgbench_and_the_archive_is_continuous() {
    let t0 = Instant::now();
    let repo = Repo::new("pitr-load");
    let pg = PgCluster::start(PgOptions {
        extra_conf: async_conf(&repo),
        name: "pitr-load",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    pgbench(&pg, &["-i", "-q", "-s", "5"]);
    let out = repo.strata(&["backup", "main", "--kind", "base"]);
    assert!(
        out.status.success(),
        "base backup: {}\n{}",
        text(&out),
        pg.log_tail(30)
    );
    let secs = load_seconds().to_string();
    let t_load = Instant::now();
    pgbench(&pg, &["-n", "-c", "4", "-j", "2", "-T", &secs]);
    let load = t_load.elapsed();

    let history = pg.psql("postgres", "SELECT count(*) FROM pgbench_history");
    let last = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let t_drain = Instant::now();
    pg.wait_for(
        "postgres",
        &format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(120),
    );
    let drain = t_drain.elapsed();
    let stats = pg.psql(
        "postgres",
        "SELECT failed_count, archived_count, \
         extract(epoch FROM now() - last_archived_time)::int FROM pg_stat_archiver",
    );
    let f: Vec<i64> = stats.split('|').map(|s| s.parse().unwrap()).collect();
    assert_eq!(f[0], 0, "failed_count: {stats}\n{}", pg.log_tail(40));
    assert!(f[1] >= 10, "only {} files archived: {stats}", f[1]);
    assert!(f[2] < 30, "last archived {}s ago: {stats}", f[2]);
    eprintln!(
        "pitr_load: {}s of pgbench, {} transactions, {} files archived, backlog drained in {:.1}s",
        load.as_secs(),
        history,
        f[1],
        drain.as_secs_f64()
    );
    // it really went through the pusher
    let spool = pg.data_dir.join("pg_wal/strata-push/main");
    let log = fs::read_to_string(spool.join("pusher.log")).unwrap_or_default();
    assert!(
        log.contains("pusher"),
        "no pusher log in {}: {log}",
        spool.display()
    );
    // archive_command is quiet when all is well
    assert!(!pg.log().contains("strata:"), "{}", pg.log_tail(40));

    let out = repo.strata(&["verify"]);
    assert!(out.status.success(), "verify: {}", text(&out));

    // restore everything archived; every pgbench transaction is there
    let dir = pg_scratch_dir("pitr-load-restore").join("data");
    let port = free_port();
    let stop_dir = dir.clone();
    at_exit(move || {
        let _ = pg_ctl(&stop_dir, &["stop", "-m", "immediate"]);
    });
    let (dir_s, port_s) = (dir.display().to_string(), port.to_string());
    let t_restore = Instant::now();
    let out = repo.strata(&[
        "restore",
        "main",
        "--target-dir",
        &dir_s,
        "--latest",
        "--start",
        "--port",
        &port_s,
    ]);
    assert!(out.status.success(), "restore: {}", text(&out));
    eprintln!(
        "pitr_load: restore --latest --start took {:.1}s:\n{}",
        t_restore.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout)
    );
    let count = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(&port_s)
        .args(["-c", "SELECT count(*) FROM pgbench_history", "postgres"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        history,
        "{}",
        text(&count)
    );
    let _ = pg_ctl(&dir, &["stop", "-m", "fast"]);

    // the pusher reports a conflicting file like a synchronous push: exit 8,
    // nothing overwritten; the same content again is success
    let fake = pg_scratch_dir("pitr-load-fake").join("pg_wal");
    fs::create_dir_all(fake.join("archive_status")).unwrap();
    let name = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn() - 20000000)",
    );
    let src = fs::read(pg.data_dir.join("pg_wal").join(&name));
    let archived = repo.dir.join("repo/wal/main").join(&name[..8]).join(&name);
    assert!(archived.exists(), "{name} archived");
    let stored = fs::read(&archived).unwrap();
    // the segment may have been recycled already: restore it from the archive
    let bytes = match src {
        Ok(b) => b,
        Err(_) => {
            let tmp = fake.join("fetched");
            let o = repo.strata(&[
                "wal",
                "fetch",
                "--prefetch",
                "0",
                &name,
                &tmp.display().to_string(),
            ]);
            assert!(o.status.success(), "fetch {name}: {}", text(&o));
            let b = fs::read(&tmp).unwrap();
            fs::remove_file(&tmp).unwrap();
            b
        }
    };
    let push = |bytes: &[u8], spool: &str| {
        fs::write(fake.join(&name), bytes).unwrap();
        fs::write(
            fake.join("archive_status").join(format!("{name}.ready")),
            "",
        )
        .unwrap();
        let o = repo.strata(&[
            "wal",
            "push",
            "--async",
            "--spool",
            &fake.join(spool).display().to_string(),
            &fake.join(&name).display().to_string(),
        ]);
        fs::remove_file(fake.join("archive_status").join(format!("{name}.ready"))).unwrap();
        o
    };
    let o = push(&bytes, "spool");
    assert!(o.status.success(), "same content again: {}", text(&o));
    let mut changed = bytes.clone();
    changed[100_000] ^= 0xff;
    // (another cluster's spool: this one still knows the name as archived)
    let o = push(&changed, "spool2");
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let e = text(&o);
    assert!(e.contains(&name) && e.contains("different content"), "{e}");
    assert_eq!(fs::read(&archived).unwrap(), stored, "archive unchanged");

    // not in PostgreSQL's queue (no .ready beside it, e.g. run by hand):
    // pushed synchronously
    let loose = pg_scratch_dir("pitr-load-loose").join(&name);
    fs::write(&loose, &bytes).unwrap();
    let o = repo.strata(&["wal", "push", "--async", &loose.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already archived"), "{}", text(&o));

    // archive_push_queue_max: past it a file is reported archived WITHOUT
    // being archived, loudly
    let cfg = fs::read_to_string(&repo.cfg).unwrap().replace(
        "identity_file = \"key.txt\"",
        &format!("identity_file = \"{}\"", repo.dir.join("key.txt").display()),
    ) + "archive_push_queue_max = \"1MiB\"\n";
    let cfg_path = fake.join("queue-max.toml");
    fs::write(&cfg_path, cfg).unwrap();
    let far = "000000010000000F000000FF";
    fs::write(fake.join(far), vec![0u8; 16 << 20]).unwrap();
    fs::write(fake.join("archive_status").join(format!("{far}.ready")), "").unwrap();
    let o = strata_process()
        .arg("--config")
        .arg(&cfg_path)
        .args(["wal", "push", "--async", "--spool"])
        .arg(fake.join("spool3"))
        .arg(fake.join(far))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("DROPPED"), "{}", text(&o));
    assert!(
        !repo
            .dir
            .join("repo/wal/main/00000001")
            .join(format!("{far}.json"))
            .exists()
    );
    eprintln!("pitr_load: total {:.1}s", t0.elapsed().as_secs_f64());
}

/// The same pusher against an S3 repository (s3s-fs): archive_command in
/// `archive_async = true` mode (the config key, no flag), a base backup
/// that waits for its WAL through the pusher, `verify` continuous.
#[test]
fn async_push_from_the_config_to_s3() {
    use common::pg::chown_to_pg;
    let s3 = common::s3::s3_server();
    let dir = pg_scratch_dir("pitr-load-s3");
    let recipient = common::generate_key(&dir.join("key.txt"));
    let cfg = dir.join("strata.toml");
    let prefix = format!("pitr-load-{}", std::process::id());
    let write = |url: &str| {
        fs::write(
            &cfg,
            format!(
                "[repository]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\npath_style = true\n\n\
                 [encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"key.txt\"\n\n\
                 [sources.main]\nkind = \"postgres\"\nurl = \"{url}\"\n\
                 archive_async = true\narchive_push_processes = 3\n",
                s3.bucket, s3.endpoint
            ),
        )
        .unwrap()
    };
    let strata = |args: &[&str]| {
        strata_process()
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_IDENTITY_FILE")
            .envs(s3.env_vars())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    write("postgres://postgres@127.0.0.1:1/postgres");
    let out = strata(&["init"]);
    assert!(out.status.success(), "init: {}", text(&out));
    chown_to_pg(&dir);
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} --config {} wal push %p'",
                strata_bin().display(),
                cfg.display()
            ),
        ],
        name: "pitr-load-s3",
        env: s3
            .env_vars()
            .into_iter()
            .chain([("STRATA_LOG".to_string(), "warn,strata=debug".to_string())])
            .collect(),
    });
    write(&pg.url("postgres"));
    pg.psql("postgres", "CREATE TABLE t (i int, v text)");
    let out = strata(&["backup", "main", "--kind", "base"]);
    assert!(
        out.status.success(),
        "base backup: {}\n{}",
        text(&out),
        pg.log_tail(30)
    );
    for _ in 0..6 {
        pg.psql(
            "postgres",
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
        );
        pg.psql("postgres", "SELECT pg_switch_wal()");
    }
    // (a switch right after a switch is a no-op: write something first)
    pg.psql("postgres", "INSERT INTO t VALUES (0, 'last')");
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
    assert_eq!(
        pg.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        pg.log_tail(30)
    );
    assert!(
        pg.data_dir
            .join("pg_wal/strata-push/main/pusher.log")
            .exists(),
        "the config key turned the pusher on"
    );
    let out = strata(&["verify"]);
    assert!(out.status.success(), "verify: {}", text(&out));
    // a segment comes back byte for byte
    let name = pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn() - 40000000)",
    );
    if let Ok(orig) = fs::read(pg.data_dir.join("pg_wal").join(&name)) {
        let dest = dir.join("fetched");
        let out = strata(&[
            "wal",
            "fetch",
            "--prefetch",
            "0",
            &name,
            &dest.display().to_string(),
        ]);
        assert!(out.status.success(), "fetch {name}: {}", text(&out));
        assert_eq!(fs::read(&dest).unwrap(), orig);
    }
}

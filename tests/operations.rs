//! End-to-end operations: repository locks (conflicts exit 8 naming the
//! holder, stale locks reported and cleared by `strata unlock`), failure
//! webhooks (`[notify]`), and `strata status` / `strata metrics` against a
//! real database.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::cli::Strata;
use common::pg::shared_pg;

/// Plants a lock object as another host's process would have written it.
fn plant_lock(repo: &Path, name: &str, command: &str, heartbeat_age: chrono::Duration) {
    let now = Utc::now();
    let hb = now - heartbeat_age;
    let (kind, source) = match name.strip_prefix("source-") {
        Some(s) => ("source", serde_json::Value::from(s)),
        None => ("exclusive", serde_json::Value::Null),
    };
    let v = serde_json::json!({
        "kind": kind,
        "source": source,
        "owner": "alice",
        "host": "otherhost",
        "pid": 4242,
        "command": command,
        "created": hb - chrono::Duration::minutes(1),
        "heartbeat": hb,
    });
    fs::create_dir_all(repo.join("locks")).unwrap();
    fs::write(
        repo.join(format!("locks/{name}.json")),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
}

fn locks(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.join("locks"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn locks_conflict_stale_locks_are_reported_and_unlock_clears_them() {
    // The source is never reached: every backup here stops at the lock.
    let s = Strata::local("locks", &[("app", "postgres://u@127.0.0.1:1/app".into())]);
    s.init();
    let repo = s.repo_dir().to_path_buf();

    // A live prune elsewhere: prune, cleanup and backups refuse, exit 8.
    plant_lock(&repo, "exclusive", "prune", chrono::Duration::seconds(5));
    let o = s.run(&["prune"]).expect_code(8);
    assert!(
        o.stderr.contains("`prune` by alice@otherhost (pid 4242)"),
        "{o}"
    );
    assert!(!o.stderr.contains("STALE"), "{o}");
    let o = s.run(&["cleanup"]).expect_code(8);
    assert!(o.stderr.contains("alice@otherhost"), "{o}");
    let o = s.run(&["backup", "app"]).expect_code(8);
    assert!(o.stderr.contains("cannot back up app"), "{o}");
    assert!(o.stderr.contains("alice@otherhost"), "{o}");
    // Dry runs only read: no lock needed.
    s.run(&["prune", "--dry-run"]).ok();
    // The failed backup removed its own source lock again.
    assert_eq!(locks(&repo), ["exclusive.json"]);

    // `unlock` keeps a live lock; `--force` removes it, saying what it was.
    let o = s.run(&["unlock"]).ok();
    assert!(o.stdout.contains("keeping live lock"), "{o}");
    assert_eq!(locks(&repo), ["exclusive.json"]);
    let o = s.run(&["unlock", "--force"]).ok();
    assert!(o.stdout.contains("removing locks/exclusive.json"), "{o}");
    assert!(locks(&repo).is_empty());

    // A backup whose process died an hour ago: reported as stale, with
    // owner, host, pid and the unlock hint; never silently taken over.
    plant_lock(
        &repo,
        "source-app",
        "backup app",
        chrono::Duration::hours(1),
    );
    let o = s.run(&["status"]).ok();
    assert!(o.stdout.contains("lock locks/source-app.json"), "{o}");
    assert!(o.stdout.contains("`strata unlock` removes them"), "{o}");
    let o = s.run(&["prune"]).expect_code(8);
    assert!(o.stderr.contains("STALE"), "{o}");
    assert!(o.stderr.contains("alice@otherhost (pid 4242)"), "{o}");
    assert!(o.stderr.contains("heartbeat 1h00m ago"), "{o}");
    assert!(o.stderr.contains("strata unlock"), "{o}");
    let o = s.run(&["backup", "app"]).expect_code(8);
    assert!(o.stderr.contains("STALE"), "{o}");
    assert_eq!(locks(&repo), ["source-app.json"]);
    let o = s.run(&["--json", "unlock"]).ok();
    let v = o.json();
    assert_eq!(v[0]["key"], "locks/source-app.json", "{o}");
    assert_eq!(v[0]["stale"], true, "{o}");
    assert_eq!(v[0]["removed"], true, "{o}");
    assert!(locks(&repo).is_empty());
    s.run(&["prune"]).ok();

    // Two prunes at once: each succeeds or refuses clearly; none is left
    // holding a lock.
    let spawn = || {
        let mut c = s.command(&["prune"]);
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(8) => assert!(err.contains("`prune` by"), "{err}"),
            other => panic!("prune exited {other:?}: {err}"),
        }
    }
    assert!(locks(&repo).is_empty(), "{:?}", locks(&repo));
}

/// Accepts one HTTP request and answers 200; returns the request text.
fn one_request(listener: TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        // Never hang the test binary when no request comes.
        listener.set_nonblocking(true).unwrap();
        let started = std::time::Instant::now();
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "no webhook request within 120s"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
fn a_failed_backup_is_posted_to_the_webhook_and_a_dead_webhook_changes_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = one_request(listener);
    let s = Strata::local("notify", &[("app", "postgres://u@127.0.0.1:1/app".into())]);
    let base = fs::read_to_string(&s.config).unwrap();
    fs::write(
        &s.config,
        format!("{base}\n[notify]\nwebhook = \"http://127.0.0.1:{port}/hooks/strata\"\n"),
    )
    .unwrap();
    s.init();
    let failed = s.run(&["backup", "app"]);
    let code = failed.code;
    assert_ne!(code, Some(0), "{failed}");
    let req = server.join().unwrap();
    assert!(req.starts_with("POST /hooks/strata HTTP/1.1\r\n"), "{req}");
    let body: serde_json::Value =
        serde_json::from_str(req.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["event"], "backup_failed", "{req}");
    assert_eq!(body["source"], "app", "{req}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{req}"
    );
    assert!(
        body["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{req}"
    );
    assert!(body["time"].is_string(), "{req}");

    // Nobody listens: a warning, and the backup's own exit code.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    fs::write(
        &s.config,
        format!("{base}\n[notify]\nwebhook = \"http://127.0.0.1:{dead_port}/\"\n"),
    )
    .unwrap();
    let o = s.run(&["backup", "app"]);
    assert_eq!(o.code, code, "{o}");
    assert!(o.stderr.contains("warning: notifying"), "{o}");

    // A bad [notify] is refused at load, naming the key.
    fs::write(
        &s.config,
        format!("{base}\n[notify]\nwebhook = \"ftp://hooks.example/\"\n"),
    )
    .unwrap();
    let o = s.run(&["backup", "app"]).expect_code(2);
    assert!(o.stderr.contains("notify.webhook"), "{o}");
}

#[test]
fn status_and_metrics_report_the_last_backup_per_tier() {
    let pg = shared_pg();
    pg.create_db("status_e2e");
    pg.psql(
        "status_e2e",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
    );
    let s = Strata::local(
        "status",
        &[
            ("app", pg.url("status_e2e")),
            ("other", pg.url("status_e2e")),
        ],
    );
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += "\n[tiers.daily]\nschedule = \"0 2 * * *\"\nsources = [\"app\", \"other\"]\nkeep_last = 3\n";
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s.run(&["backup", "app", "--tier", "daily"]).ok();

    // `other` has no backup in its tier: --check fails with 4.
    let o = s.run(&["status", "--check"]).expect_code(4);
    assert!(o.stdout.contains("NO BACKUP"), "{o}");
    assert!(o.stdout.contains("app") && o.stdout.contains("ok"), "{o}");
    let o = s.run(&["--json", "status"]).ok();
    let v = o.json();
    let rows = v["rows"].as_array().unwrap();
    let app = rows
        .iter()
        .find(|r| r["source"] == "app" && r["tier"] == "daily")
        .unwrap_or_else(|| panic!("{o}"));
    assert_eq!(app["backups"], 1, "{o}");
    assert_eq!(app["stale"], false, "{o}");
    assert!(app["last"]["stored_bytes"].as_u64().unwrap() > 0, "{o}");
    let other = rows.iter().find(|r| r["source"] == "other").unwrap();
    assert_eq!(other["missing"], true, "{o}");

    s.run(&["backup", "other", "--tier", "daily"]).ok();
    s.run(&["status", "--check"]).ok();

    let prom = s.dir.join("textfile/strata.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();
    s.run(&["metrics", "--textfile", prom.to_str().unwrap()])
        .ok();
    let text = fs::read_to_string(&prom).unwrap();
    for l in [
        "# TYPE strata_last_success_timestamp_seconds gauge",
        "strata_backups{source=\"app\",tier=\"daily\"} 1",
        "strata_stale{source=\"other\",tier=\"daily\"} 0",
        "strata_last_backup_stored_bytes{source=\"app\",tier=\"daily\"} ",
        "strata_last_backup_duration_seconds{source=\"other\",tier=\"daily\"} ",
    ] {
        assert!(text.contains(l), "missing {l:?} in\n{text}");
    }
    // Only the .prom file: the temporary one was renamed over it.
    assert_eq!(fs::read_dir(prom.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn locks_on_s3_are_taken_and_released() {
    let prefix = format!("operations-locks-{}", std::process::id());
    let s = Strata::with_repo(
        "locks-s3",
        common::cli::RepoSpec::shared_s3(&prefix),
        &[("app", "postgres://u@127.0.0.1:1/app".into())],
    );
    s.init();
    s.run(&["prune"]).ok();
    s.run(&["cleanup"]).ok();
    // A refused backup (the source is unreachable) also leaves no lock.
    let o = s.run(&["backup", "app"]);
    assert_ne!(o.code, Some(0), "{o}");
    assert_ne!(o.code, Some(8), "{o}");
    let o = s.run(&["--json", "unlock"]).ok();
    assert_eq!(o.json(), serde_json::json!([]), "{o}");
}

/// Every entry below `dir` whose owner is not `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().uid() != uid {
                out.push(p.display().to_string());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Issue 15 item 6: `init` and backups run as root created repository
/// files the `postgres` user (its archive_command) could not write. The
/// repository directory's owner owns everything; `status --check` names
/// what is not.
#[test]
fn root_keeps_the_repository_owner_and_status_names_strays() {
    let Some((pg_uid, _)) = common::pg::pg_user() else {
        eprintln!("skipped: needs root and a postgres user");
        return;
    };
    let pg = shared_pg();
    pg.create_db("ops_owner");
    pg.psql("ops_owner", "CREATE TABLE t AS SELECT 1 AS id");
    let s = Strata::local("owner", &[("app", pg.url("ops_owner"))]);
    s.run(&["init", "--owner", "postgres"]).ok();
    s.backup("app");
    s.run(&["unlock"]).ok();
    let repo = s.repo_dir().to_path_buf();
    assert_eq!(not_owned_by(&repo, pg_uid), Vec::<String>::new());
    let o = s.run(&["status"]).ok();
    assert!(!o.stdout.contains("ownership:"), "{o}");

    // a file root made by hand (or an older strata): named by status
    let stray = repo.join("manifests/app/stray.txt");
    fs::write(&stray, "x").unwrap();
    let o = s.run(&["status", "--check"]);
    assert!(
        o.stdout.contains("ownership:") && o.stdout.contains("stray.txt"),
        "{o}"
    );
    assert_eq!(o.code, Some(4), "{o}");
    // --owner is refused for a user that does not exist, before anything
    let t = Strata::local("owner-bad", &[("app", pg.url("ops_owner"))]);
    let o = t
        .run(&["init", "--owner", "no-such-user-strata"])
        .expect_code(2);
    assert!(o.stderr.contains("no such OS user"), "{o}");
    assert!(!t.repo_dir().exists());
}

/// Issue 15 (rough edges): `status` did not warn that `archive_timeout`
/// is unset (the drill's RPO of 95 s came from that) or that WAL goes to
/// another repository than the one configured. It asks the server now.
#[test]
fn status_asks_the_server_where_its_wal_goes() {
    use common::archiving::Repo;
    use common::pg::{PgCluster, PgOptions};
    let repo = Repo::new("ops-archiving");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "ops-archiving",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    let tier = "\n[tiers.wal]\nkind = \"wal\"\nsources = [\"main\"]\nkeep_within = \"7d\"\n";
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg.push_str(tier);
    fs::write(&repo.cfg, &cfg).unwrap();
    let out = repo.strata(&["status"]);
    let t = common::text(&out);
    assert!(
        t.contains("archiving main: warning: archive_timeout is 0"),
        "{t}"
    );
    assert!(!t.contains("PROBLEM"), "{t}");

    // a second config for the same server, with another repository: its
    // status names the repository the server really archives into
    let other = repo.dir.join("other.toml");
    let elsewhere = repo.dir.join("elsewhere");
    fs::write(
        &other,
        cfg.replace(
            &format!("file://{}", repo.dir.join("repo").display()),
            &format!("file://{}", elsewhere.display()),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        common::strata_process()
            .arg("--config")
            .arg(&other)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["init"]).status.success());
    let out = run(&["status", "--check"]);
    let t = common::text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("archives into another repository"), "{t}");
    assert!(
        t.contains(&repo.dir.join("repo").display().to_string()),
        "{t}"
    );
}

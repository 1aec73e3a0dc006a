//! Several repositories end to end (issue 19 items 1-3): a local primary
//! that a real PostgreSQL 15 cluster archives into, a second local one
//! that `wal push` also pushes to (`copy_to` on the wal tier), and two S3
//! buckets on the s3s-fs test server. `strata copy` copies base backups
//! with their WAL, dumps, Redis snapshots and Chroma exports; a PITR and a
//! drill from the S3 copy are exact; a copy killed at a durable step and
//! run again completes without duplicates; a damaged source object is
//! refused (exit 4) and never stored; a snapshot tier's `copy_to` copies
//! each backup as it commits (a copy that fails leaves the backup, exits
//! non-zero, and `copy` catches up); the target's Object Lock applies (moto); WAL pushed while the secondary was down is
//! recorded, shown by `status`, and caught up by `copy`.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::archiving::{Repo, text};
use common::chroma::{ChromaServer, Spec, fill};
use common::pg::{PgCluster, PgOptions, pg_scratch_dir};
use common::redis::RedisServer;
use common::{free_port, is_root, strata_process};

struct Setup {
    repo: Repo,
    env: Vec<(String, String)>,
}

impl Setup {
    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], extra: &[(&str, String)]) -> Output {
        let mut c = strata_process();
        c.env_remove("STRATA_LOG")
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_IDENTITY_FILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.repo.cfg);
        c.args(args).output().expect("spawn strata")
    }

    fn ok(&self, args: &[&str]) -> serde_json::Value {
        let o = self.run(args);
        assert!(o.status.success(), "strata {args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn ids(&self, repo: &str, source: &str) -> BTreeSet<String> {
        let v = self.ok(&["--repo", repo, "--json", "list", source]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn now_utc(pg: &PgCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

fn archived(pg: &PgCluster) {
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
    // a secondary that is down never fails archiving
    assert_eq!(
        pg.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        pg.log_tail(30)
    );
}

/// The body of the first request to `listener` (a webhook), answered 200.
fn one_post(listener: std::net::TcpListener) -> std::thread::JoinHandle<serde_json::Value> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(String::from)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break body.to_string();
                }
            }
        };
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        serde_json::from_str(&body).unwrap()
    })
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

#[test]
fn copies_between_local_and_s3_repositories() {
    let repo = Repo::new("repos");
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "repos",
        ..Default::default()
    });
    let redis = RedisServer::start("repos", &[]);
    let chroma = ChromaServer::start("repos");
    fill(
        &chroma.client(),
        &Spec {
            name: "vec",
            space: "l2",
            records: 200,
            dim: 8,
            seed: 3,
        },
    );
    let s3 = common::s3::s3_server();
    let prefix = format!("repos-{}", std::process::id());
    fs::create_dir_all(s3.root.join("strata-dr2")).unwrap();
    let near = repo.dir.join("near");
    let near2 = repo.dir.join("near2");
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let posted = one_post(hook);
    let crash = pg_scratch_dir("repos-crash");
    let count = pg_scratch_dir("repos-count");
    repo.write_config(&pg.url("postgres"));
    let s3repo = |name: &str, bucket: &str| {
        format!(
            "\n[repositories.{name}]\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\npath_style = true\nregion = \"us-east-1\"\n",
            s3.endpoint
        )
    };
    let mut cfg = fs::read_to_string(&repo.cfg).unwrap();
    cfg += &format!(
        "\n[sources.cache]\nkind = \"redis\"\nurl = \"{}\"\n\n[sources.vectors]\nkind = \"chroma\"\nurl = \"{}\"\nbin_dir = \"{}\"\n\
         {}{}\n[repositories.near]\nurl = \"file://{}\"\n\n[repositories.near2]\nurl = \"file://{}\"\n\n[repositories.crash]\nurl = \"file://{}/repo\"\n\n\
         [repositories.count]\nurl = \"file://{}/repo\"\n\n\
         [tiers.wal]\nkind = \"wal\"\nkeep_within = \"7d\"\ncopy_to = [\"near\", \"near2\"]\n\n\
         [tiers.hourly]\nkind = \"snapshot\"\nkeep_last = 3\ncopy_to = [\"dr\"]\n\n\
         [notify]\nwebhook = \"http://127.0.0.1:{hook_port}/hook\"\n",
        redis.url(),
        chroma.url(),
        common::chroma::chroma_bin().parent().unwrap().display(),
        s3repo("dr", &s3.bucket),
        s3repo("dr2", "strata-dr2"),
        near.display(),
        near2.display(),
        crash.display(),
        count.display()
    );
    fs::write(&repo.cfg, cfg).unwrap();
    let s = Setup {
        repo,
        env: s3.env_vars(),
    };

    // an unknown --repo is a usage error naming the configured ones
    let o = s.run(&["--repo", "west", "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("default, dr, dr2, near, near2, crash, count"),
        "{}",
        text(&o)
    );
    for r in ["dr", "dr2", "crash", "count"] {
        s.ok(&["--repo", r, "init"]);
    }
    // near2 is up from the start: wal push pushes each file there too
    let owner: &[&str] = if is_root() {
        &["--owner", "postgres"]
    } else {
        &[]
    };
    s.ok(&[&["--repo", "near2", "init"][..], owner].concat());

    // WAL archived while the secondary `near` is down (not a repository
    // yet): archiving succeeds, the failure is recorded and shown
    pg.psql(
        "postgres",
        "CREATE TABLE ev (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); \
         INSERT INTO ev DEFAULT VALUES; INSERT INTO ev DEFAULT VALUES",
    );
    let b = s.ok(&["--json", "backup", "main", "--kind", "base"]);
    let base_id = b["id"].as_str().unwrap().to_string();
    s.ok(&["--json", "backup", "main"]);
    for _ in 0..3 {
        pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
        pg.psql("postgres", "SELECT pg_switch_wal()");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = now_utc(&pg);
    std::thread::sleep(Duration::from_millis(300));
    pg.psql("postgres", "INSERT INTO ev DEFAULT VALUES");
    archived(&pg);
    let st = s.ok(&["--json", "status"]);
    let failures = st["wal_push_failures"].as_array().expect("failures shown");
    assert!(
        failures
            .iter()
            .any(|f| f["repository"] == "near" && f["source"] == "main"),
        "{st:#}"
    );
    assert!(
        !failures.iter().any(|f| f["repository"] == "near2"),
        "{st:#}"
    );
    let repo_source = |st: &serde_json::Value, repo: &str, source: &str| {
        st["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == repo)
            .unwrap()["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["source"] == source)
            .cloned()
            .unwrap_or_default()
    };
    let primary_wal = repo_source(&st, "default", "main")["newest_wal"].clone();
    assert!(primary_wal.is_string(), "{st:#}");
    assert_eq!(
        repo_source(&st, "near2", "main")["newest_wal"],
        primary_wal,
        "{st:#}"
    );
    // posted once, by the archive_command that failed first
    let event = posted.join().unwrap();
    assert_eq!(event["event"], "wal_push_failed", "{event:#}");
    assert_eq!(event["source"], "main", "{event:#}");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains("into repository near"),
        "{event:#}"
    );
    let o = s.run(&["status", "--check"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("into repository near"), "{}", text(&o));

    // a snapshot tier's copy_to copies each backup as it commits
    redis.conn().ok(&["SET", "release", "v1"]);
    let r = s.ok(&["--json", "backup", "--tier", "hourly"]);
    let r = &r.as_array().unwrap()[0];
    assert_eq!(r["copies"][0]["repository"], "dr", "{r:#}");
    assert_eq!(r["copies"][0]["ok"], true, "{r:#}");
    let cache_id = r["backup"]["id"].as_str().unwrap().to_string();
    assert!(s.ids("dr", "cache").contains(&cache_id));
    s.ok(&["--json", "backup", "vectors"]);

    // the whole primary into S3: every kind; the snapshot is there already
    let c = s.ok(&["--json", "copy", "--to", "dr"]);
    assert_eq!(c["ok"], true, "{c:#}");
    eprintln!("copy to dr: {c:#}");
    let status_of = |c: &serde_json::Value, id: &str| {
        c["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .map(|b| b["status"].as_str().unwrap().to_string())
    };
    assert_eq!(
        status_of(&c, &cache_id).as_deref(),
        Some("present"),
        "{c:#}"
    );
    assert_eq!(status_of(&c, &base_id).as_deref(), Some("copied"), "{c:#}");
    assert!(c["wal"][0]["files_copied"].as_u64().unwrap() >= 3, "{c:#}");
    for src in ["main", "cache", "vectors"] {
        assert_eq!(s.ids("default", src), s.ids("dr", src), "{src}");
    }
    // s3s-fs keeps each object as a file under ROOT/BUCKET/KEY
    let copied = s3
        .root
        .join(&s3.bucket)
        .join(&prefix)
        .join("backups/main")
        .join(&base_id);
    assert!(!files(&copied).is_empty(), "{}", copied.display());
    // rerun: nothing left to copy
    let again = s.ok(&["--json", "copy", "--to", "dr"]);
    assert_eq!(again["objects_copied"], 0, "{again:#}");
    // the copy reads back whole (every object, every WAL file)
    let v = s.ok(&["--repo", "dr", "--json", "verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v:#}");

    // S3 to S3: the second bucket, from the copy
    let c2 = s.ok(&["--json", "copy", "--from", "dr", "--to", "dr2"]);
    assert_eq!(c2["ok"], true, "{c2:#}");
    assert_eq!(s.ids("dr", "main"), s.ids("dr2", "main"));

    // PITR from the copy: exactly the rows committed before t1
    let want = pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM ev WHERE at < '{t1}'"),
    );
    let dir = pg_scratch_dir("repos-pitr").join("data");
    let port = free_port().to_string();
    let o = s.run(&[
        "--repo",
        "dr",
        "--json",
        "restore",
        "main",
        "--target-dir",
        dir.to_str().unwrap(),
        "--to-time",
        &t1,
        "--archive-mode",
        "off",
        "--start",
        "--port",
        &port,
    ]);
    assert!(o.status.success(), "restore from dr: {}", text(&o));
    let got = common::pg::psql_at(port.parse().unwrap(), "postgres")
        .args(["-c", "SELECT count(*) FROM ev"])
        .output()
        .unwrap();
    let _ = common::pg::pg_ctl_at(&dir, &["stop", "-m", "immediate"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), want);
    // the restored server fetched its WAL from the copy
    let conf = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap_or_default();
    assert!(conf.contains("--repo dr"), "{conf}");

    // a drill of every source from the copy passes, every object read
    // and verified
    let work = pg_scratch_dir("repos-drill");
    let d = s.run(&[
        "--repo",
        "dr",
        "--json",
        "drill",
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    assert!(d.status.success(), "drill from dr: {}", text(&d));
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    assert_eq!(d["passed"], true, "{d:#}");
    let methods: BTreeSet<String> = d["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}={}",
                x["source"].as_str().unwrap(),
                x["method"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        methods,
        ["cache=snapshot", "main=base+wal", "vectors=export"]
            .map(String::from)
            .into(),
        "{d:#}"
    );

    // the secondary comes back; copy catches its WAL up and clears the record
    s.ok(&[&["--repo", "near", "init"][..], owner].concat());
    s.ok(&["--json", "copy", "--to", "near", "main"]);
    let st = s.ok(&["--json", "status"]);
    assert!(st.get("wal_push_failures").is_none(), "{st:#}");
    let near_main = repo_source(&st, "near", "main");
    assert_eq!(near_main["backups_missing"], 0, "{st:#}");
    assert_eq!(near_main["wal_lag_seconds"], 0, "{st:#}");

    // killed at a durable step halfway, then run again: complete, and
    // nothing twice
    let log = count.join("steps.log");
    let o = s.run_env(
        &["copy", "--to", "count"],
        &[("STRATA_CRASH_LOG", log.display().to_string())],
    );
    assert!(o.status.success(), "{}", text(&o));
    let steps = fs::read_to_string(&log).unwrap().lines().count();
    assert!(steps > 20, "{steps} steps");
    eprintln!("{steps} steps");
    let o = s.run_env(
        &["copy", "--to", "crash"],
        &[("STRATA_CRASH_AT", (steps / 2).to_string())],
    );
    assert_eq!(o.status.code(), None, "killed: {}", text(&o));
    let c = s.ok(&["--json", "copy", "--to", "crash"]);
    assert_eq!(c["ok"], true, "{c:#}");
    let stored = |root: &PathBuf| -> BTreeSet<String> {
        files(&root.join("repo"))
            .into_iter()
            // an upload the kill cut short stays as an incomplete upload
            // (`.NAME.strata-tmp-…`, as an S3 multipart upload would) until
            // `cleanup`; which step the kill hits moves with the copy's steps
            .filter(|f| !f.starts_with("locks/") && !f.contains(".tmp") && !f.starts_with('.'))
            .filter(|f| !f.contains(".strata-tmp-"))
            .filter(|f| f != "strata-repository.json" && f != "recipients.json")
            .filter(|f| !f.ends_with("archive.json"))
            .collect()
    };
    assert_eq!(stored(&crash), stored(&count));
    let v = s.ok(&["--repo", "crash", "--json", "verify"]);
    assert!(v["leftovers"].as_array().unwrap().is_empty(), "{v:#}");
    assert!(
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["ok"] == true),
        "{v:#}"
    );

    // a damaged object in the source is refused and never copied
    let dump = s.ok(&["--json", "backup", "main"]);
    let id = dump["id"].as_str().unwrap();
    let obj_dir = s.repo.dir.join("repo/backups/main").join(id);
    let obj = fs::read_dir(&obj_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".pgdump"))
        .or_else(|| {
            fs::read_dir(&obj_dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .next()
        })
        .unwrap();
    let mut bytes = fs::read(&obj).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&obj, bytes).unwrap();
    let o = s.run(&["copy", "--to", "dr", "main"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    eprintln!("damaged: {}", text(&o));
    let name = obj.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&name),
        "{}",
        text(&o)
    );
    assert!(!s.ids("dr", "main").contains(id));
    // the damaged object is not in the bucket (the backup's other objects
    // may be: leftovers without a manifest, which `cleanup` removes)
    let in_s3 = s3
        .root
        .join(&s3.bucket)
        .join(&prefix)
        .join("backups/main")
        .join(id);
    assert!(
        !files(&in_s3).iter().any(|f| f.contains(&name)),
        "{:?}",
        files(&in_s3)
    );
}

/// Issue 19 item 2: the target's own Object Lock settings apply to what is
/// copied into it: a tier's backups copied into a repository with
/// `object_lock = "governance"` and its own retention are locked until
/// the backup's start plus that retention; the local primary locks
/// nothing. A backup without a tier is copied unlocked.
#[test]
fn copies_take_the_targets_object_lock() {
    let m = common::moto::moto();
    m.create_bucket("strata-copy-vault", true);
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let posted = one_post(hook);
    let redis = RedisServer::start("repos-lock", &[]);
    redis.conn().ok(&["SET", "k", "v"]);
    let dir = pg_scratch_dir("repos-lock");
    let key = dir.join("key.txt");
    let recipient = common::generate_key(&key);
    let cfg = dir.join("strata.toml");
    fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"file://{}/repo\"\n\n\
             [repositories.vault]\nurl = \"s3://strata-copy-vault/repo\"\nendpoint = \"{}\"\npath_style = true\n\
             region = \"us-east-1\"\nobject_lock = \"governance\"\n\
             [repositories.vault.retention.hourly]\nkeep_daily = 3\n\n\
             [repositories.later]\nurl = \"file://{}/later\"\n\n\
             [encryption]\nrecipients = [\"{recipient}\"]\n\n\
             [sources.cache]\nkind = \"redis\"\nurl = \"{}\"\n\n\
             [tiers.hourly]\nkind = \"snapshot\"\nkeep_last = 2\ncopy_to = [\"vault\", \"later\"]\n\n\
             [notify]\nwebhook = \"http://127.0.0.1:{hook_port}/hook\"\n",
            dir.display(),
            m.endpoint,
            dir.display(),
            redis.url()
        ),
    )
    .unwrap();
    let s = Setup {
        repo: Repo {
            dir: dir.clone(),
            cfg,
            recipient,
        },
        env: m.env_vars(),
    };
    s.ok(&["init"]);
    s.ok(&["--repo", "vault", "init"]);
    // `later` is no repository yet: its copy fails, the backup stands,
    // the exit code says so (3: not a repository), and `copy` catches up
    let o = s.run(&["--json", "backup", "--tier", "hourly"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = &b.as_array().unwrap()[0];
    assert_eq!(b["ok"], true, "{b:#}");
    assert_eq!(b["copies"][0]["ok"], true, "{b:#}");
    assert_eq!(b["copies"][1]["repository"], "later", "{b:#}");
    assert_eq!(b["copies"][1]["ok"], false, "{b:#}");
    assert!(
        b["copies"][1]["error"]
            .as_str()
            .unwrap()
            .contains("not a strata repository"),
        "{b:#}"
    );
    // the failed copy is posted (the backup and the good copy are not)
    let event = posted.join().unwrap();
    assert_eq!(event["event"], "copy_failed", "{event:#}");
    assert_eq!(event["tier"], "hourly", "{event:#}");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains("into repository later"),
        "{event:#}"
    );
    let id = b["backup"]["id"].as_str().unwrap().to_string();
    let started: chrono::DateTime<chrono::Utc> =
        b["backup"]["started"].as_str().unwrap().parse().unwrap();
    let untiered = s.ok(&["--json", "backup", "cache"]);
    let untiered = untiered["id"].as_str().unwrap().to_string();
    let c = s.ok(&["--json", "copy", "--to", "vault"]);
    assert_eq!(c["ok"], true, "{c:#}");
    let locks = m.locks("strata-copy-vault", "repo/");
    let of = |id: &str| -> Vec<&(String, String, String)> {
        locks.iter().filter(|(k, _, _)| k.contains(id)).collect()
    };
    // the tier's backup: objects and manifest, governance, started + 3 days
    assert!(of(&id).len() >= 2, "{locks:?}");
    for (k, mode, until) in of(&id) {
        assert_eq!(mode, "GOVERNANCE", "{k}");
        let until: chrono::DateTime<chrono::Utc> = until.parse().unwrap();
        let want = started + chrono::Duration::days(3);
        assert!(
            (until - want).num_seconds().abs() < 5,
            "{k}: {until} vs {want}"
        );
    }
    // no tier, no lock
    assert!(!of(&untiered).is_empty(), "{locks:?}");
    for (k, mode, _) in of(&untiered) {
        assert_eq!(mode, "-", "{k}");
    }
    s.ok(&["--repo", "later", "init"]);
    let c = s.ok(&["--json", "copy", "--to", "later"]);
    assert_eq!(c["ok"], true, "{c:#}");
    assert!(s.ids("later", "cache").contains(&id));
}

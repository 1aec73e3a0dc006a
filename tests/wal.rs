//! WAL archiving: a real PostgreSQL server archives through
//! `strata wal push` (its `archive_command`), and `strata wal fetch` gives
//! the segments back byte for byte; duplicates, conflicts, foreign
//! clusters, partial segments, history files and the prefetch spool.
mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::pg::{PgCluster, PgOptions, chown_to_pg, pg_bin_dir, pg_scratch_dir, pg_user};
use common::{run_ok, strata_bin, strata_process};

/// A repository with its config, key and (for local repositories) root.
struct Repo {
    dir: PathBuf,
    cfg: PathBuf,
    /// Root of the stored objects (local directory or the s3s-fs files).
    root: PathBuf,
}

impl Repo {
    /// A local repository inside a scratch dir the `postgres` user can use.
    fn local(name: &str) -> Repo {
        let dir = pg_scratch_dir(name);
        let section = format!("url = \"file://{}\"", dir.join("repo").display());
        Repo::new_in(dir, &section)
    }

    /// Key, config (`repository` is the `[repository]` table body) and a
    /// new repository, in `dir`, all given to the `postgres` user.
    fn new_in(dir: PathBuf, repository: &str) -> Repo {
        fs::create_dir_all(&dir).unwrap();
        let recipient = common::generate_key(&dir.join("key.txt"));
        let cfg = dir.join("strata.toml");
        fs::write(
            &cfg,
            format!(
                "[repository]\n{repository}\n\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"key.txt\"\n\n\
                 [sources.main]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:1/postgres\"\n"
            ),
        )
        .unwrap();
        let repo = Repo {
            root: dir.join("repo"),
            dir,
            cfg,
        };
        let out = repo.strata(&["init"]);
        assert!(out.status.success(), "init: {}", text(&out));
        chown_to_pg(&repo.dir);
        repo
    }

    fn cmd(&self) -> Command {
        let mut c = strata_process();
        c.env_remove("STRATA_LOG")
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_IDENTITY_FILE")
            .arg("--config")
            .arg(&self.cfg);
        c
    }

    fn strata(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn strata")
    }

    fn push(&self, path: &Path) -> Output {
        self.cmd().args(["wal", "push"]).arg(path).output().unwrap()
    }

    fn fetch(&self, name: &str, dest: &Path, extra: &[&str]) -> Output {
        self.cmd()
            .args(["wal", "fetch", name])
            .arg(dest)
            .args(extra)
            .output()
            .unwrap()
    }

    /// The archive_command settings for a cluster archiving here.
    fn archive_conf(&self) -> Vec<String> {
        vec![
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} --config {} wal push %p'",
                strata_bin().display(),
                self.cfg.display()
            ),
            "archive_timeout = 0".into(),
            // keep archived segments in pg_wal to compare with
            "wal_keep_size = '1GB'".into(),
        ]
    }

    fn object(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

use common::text;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn seg_key(name: &str) -> String {
    format!("wal/main/{}/{name}", &name[..8])
}

/// Generates WAL and switches segments `n` times, then waits until the
/// archiver reports `n` more segments archived and no failure.
fn archive_segments(pg: &PgCluster, n: usize) -> Vec<String> {
    let before: i64 = pg
        .psql("postgres", "SELECT archived_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS walgen (i int, v text)",
    );
    let mut names = Vec::new();
    for _ in 0..n {
        pg.psql(
            "postgres",
            "INSERT INTO walgen SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
        );
        names.push(pg.psql(
            "postgres",
            "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
        ));
        pg.psql("postgres", "SELECT pg_switch_wal()");
    }
    pg.wait_for(
        "postgres",
        &format!(
            "SELECT archived_count >= {} FROM pg_stat_archiver",
            before + n as i64
        ),
        "t",
        Duration::from_secs(60),
    );
    assert_eq!(
        pg.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        pg.log_tail(40)
    );
    names
}

/// One cluster archiving into a local repository, with five archived
/// segments, shared by the tests below (they only read it or push things
/// the archive refuses or keeps apart).
struct Fixture {
    pg: PgCluster,
    repo: Repo,
    segments: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let repo = Repo::local("wal-local");
        let pg = PgCluster::start(PgOptions {
            extra_conf: repo.archive_conf(),
            name: "wal",
            ..Default::default()
        });
        let segments = archive_segments(&pg, 5);
        // archive_command is quiet when all is well
        assert!(!pg.log().contains("strata:"), "{}", pg.log_tail(40));
        Fixture { pg, repo, segments }
    })
}

impl Fixture {
    fn pg_wal(&self, name: &str) -> PathBuf {
        self.pg.data_dir.join("pg_wal").join(name)
    }
}

#[test]
fn archive_command_stores_every_segment_and_fetch_returns_it() {
    let f = fixture();
    let repo = &f.repo;
    for name in &f.segments {
        let obj = repo.object(&seg_key(name));
        assert!(obj.is_file(), "{} missing", obj.display());
        assert!(repo.object(&format!("{}.json", seg_key(name))).is_file());
        // encrypted: not the plain segment, and much smaller (zstd)
        let stored = fs::read(&obj).unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1"));
        assert!(stored.len() < 16 << 20);
    }
    assert!(repo.object("wal/main/archive.json").is_file());
    let info = fs::read_to_string(repo.object("wal/main/archive.json")).unwrap();
    let sysid = f.pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    assert!(
        !info.contains(&sysid),
        "the system identifier is stored hashed: {info}"
    );

    let out_dir = pg_scratch_dir("wal-fetch");
    for name in &f.segments {
        let dest = out_dir.join(format!("{name}.restored"));
        let o = repo.fetch(name, &dest, &["--prefetch", "0"]);
        assert!(o.status.success(), "fetch {name}: {}", text(&o));
        assert!(o.stderr.is_empty(), "{}", text(&o));
        assert_eq!(
            fs::read(&dest).unwrap(),
            fs::read(f.pg_wal(name)).unwrap(),
            "{name} differs from pg_wal"
        );
        assert!(!out_dir.join(format!("{name}.restored.tmp")).exists());
    }
}

#[test]
fn fetch_of_what_is_not_archived_exits_1_quietly() {
    let f = fixture();
    let dir = pg_scratch_dir("wal-missing");
    for name in [
        "000000010000000A00000000",
        "00000002.history",
        "000000010000000100000000.partial",
    ] {
        let dest = dir.join("RECOVERYXLOG");
        let o = f.repo.fetch(name, &dest, &[]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(
            o.stderr.is_empty(),
            "{name}: stderr must be empty: {}",
            text(&o)
        );
        assert!(o.stdout.is_empty(), "{}", text(&o));
        assert!(!dest.exists());
    }
    // a name that is no WAL file is a usage error, not "missing"
    let o = f.repo.fetch("RECOVERYHISTORY", &dir.join("x"), &[]);
    assert_eq!(o.status.code(), Some(200), "{}", text(&o));
    assert!(stderr(&o).contains("exit code 2"), "{}", text(&o));
    // fetch needs the identity; a fetch that fails for any reason but
    // "not archived" exits above 125, which makes PostgreSQL stop
    // recovery instead of ending it there (issue 13 item 1)
    let o = f
        .repo
        .cmd()
        .args([
            "--identity",
            "/nonexistent/key.txt",
            "wal",
            "fetch",
            &f.segments[0],
        ])
        .arg(dir.join("y"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(200), "{}", text(&o));
    assert!(stderr(&o).contains("exit code 7"), "{}", text(&o));
}

#[test]
fn pushing_again_same_content_succeeds_different_content_is_refused() {
    let f = fixture();
    let name = &f.segments[1];
    let key = seg_key(name);
    let before = fs::read(f.repo.object(&key)).unwrap();
    let record_before = fs::read(f.repo.object(&format!("{key}.json"))).unwrap();

    // the server's own file again (archive_command retried after a crash)
    let o = f.repo.push(&f.pg_wal(name));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("already archived"), "{}", text(&o));

    // same name, one byte changed past the header
    let dir = pg_scratch_dir("wal-conflict");
    let mut bytes = fs::read(f.pg_wal(name)).unwrap();
    bytes[100_000] ^= 0xff;
    let other = dir.join(name);
    fs::write(&other, &bytes).unwrap();
    let o = f.repo.push(&other);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let e = stderr(&o);
    assert!(
        e.contains(name.as_str()) && e.contains("different content"),
        "{e}"
    );
    assert_eq!(
        fs::read(f.repo.object(&key)).unwrap(),
        before,
        "object changed"
    );
    assert_eq!(
        fs::read(f.repo.object(&format!("{key}.json"))).unwrap(),
        record_before
    );

    // a file renamed to another segment's name is not that segment
    let renamed = dir.join(&f.segments[2]);
    fs::copy(f.pg_wal(name), &renamed).unwrap();
    let o = f.repo.push(&renamed);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(stderr(&o).contains("not at the start of"), "{}", text(&o));

    // a truncated segment is refused before anything is stored
    let next = next_name(&f.segments[4], 3);
    let short = dir.join(&next);
    fs::write(&short, &fs::read(f.pg_wal(name)).unwrap()[..8192]).unwrap();
    let o = f.repo.push(&short);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(!f.repo.object(&format!("{}.json", seg_key(&next))).exists());
}

/// A segment that does not compress (its data pages random) pushed twice:
/// the second push is "already archived", not a conflict. The upload of
/// such a file starts before its digest is known, and the store refuses
/// the existing object at once: the push used to exit 8 there, so a
/// PostgreSQL retrying a segment it has no `.done` for would stall (found
/// on PostgreSQL 18's pgbench WAL in tests/pitr_load.rs).
#[test]
fn an_incompressible_segment_pushed_again_is_already_archived() {
    let f = fixture();
    // a repository of its own: the shared one keeps the real segment
    let repo = Repo::local("wal-dense-repo");
    let name = f.segments[1].clone();
    let mut bytes = fs::read(f.pg_wal(&name)).unwrap();
    // everything past the first page: xorshift noise zstd cannot shrink
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut bytes[8192..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let dir = pg_scratch_dir("wal-dense");
    let path = dir.join(&name);
    fs::write(&path, &bytes).unwrap();
    let o = repo.push(&path);
    assert!(o.status.success(), "first push: {}", text(&o));
    let stored = fs::read(repo.object(&seg_key(&name))).unwrap();
    assert!(stored.len() > 16 << 20, "the object did not compress");

    let o = repo.push(&path);
    assert!(o.status.success(), "second push: {}", text(&o));
    assert!(stderr(&o).contains("already archived"), "{}", text(&o));
    assert_eq!(fs::read(repo.object(&seg_key(&name))).unwrap(), stored);
}

/// The segment `k` after `name` (16 MiB segments).
fn next_name(name: &str, k: u64) -> String {
    let tli = &name[..8];
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..], 16).unwrap();
    let n = log * 256 + seg + k;
    format!("{tli}{:08X}{:08X}", n / 256, n % 256)
}

#[test]
fn segment_of_another_cluster_is_refused() {
    let f = fixture();
    // a second initdb: another system identifier
    let dir = pg_scratch_dir("wal-foreign");
    let data = dir.join("data");
    let mut initdb = Command::new(pg_bin_dir().join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--no-sync", "--no-instructions"])
        .current_dir(&dir);
    if let Some((uid, gid)) = pg_user() {
        initdb.uid(uid).gid(gid);
    }
    run_ok(&mut initdb);
    let foreign = data.join("pg_wal/000000010000000000000001");
    let key = seg_key("000000010000000000000001");
    let before = fs::read(f.repo.object(&key)).ok();
    let o = f.repo.push(&foreign);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(stderr(&o).contains("database system"), "{}", text(&o));
    assert_eq!(fs::read(f.repo.object(&key)).ok(), before);
    // with its own source it archives fine
    let mut text_cfg = fs::read_to_string(&f.repo.cfg).unwrap();
    text_cfg.push_str(
        "\n[sources.other]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:1/other\"\n",
    );
    let cfg2 = dir.join("two-sources.toml");
    fs::write(&cfg2, text_cfg).unwrap();
    fs::copy(f.repo.dir.join("key.txt"), dir.join("key.txt")).unwrap();
    let run = |args: &[&str]| {
        strata_process()
            .env_remove("STRATA_LOG")
            .arg("--config")
            .arg(&cfg2)
            .args(args)
            .arg(&foreign)
            .output()
            .unwrap()
    };
    // two postgres sources: which one must be said
    let o = run(&["wal", "push"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("--source"), "{}", text(&o));
    let o = run(&["wal", "push", "--source", "other"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        f.repo
            .object("wal/other/00000001/000000010000000000000001")
            .is_file()
    );
}

#[test]
fn partial_segment_is_kept_apart_from_the_complete_one() {
    let f = fixture();
    let name = &f.segments[3];
    let dir = pg_scratch_dir("wal-partial");
    let mut bytes = fs::read(f.pg_wal(name)).unwrap();
    for b in &mut bytes[1 << 20..] {
        *b = 0;
    }
    let partial = dir.join(format!("{name}.partial"));
    fs::write(&partial, &bytes).unwrap();
    let o = f.repo.push(&partial);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        f.repo
            .object(&format!("{}.partial", seg_key(name)))
            .is_file()
    );

    let got = dir.join("complete");
    let o = f.repo.fetch(name, &got, &["--prefetch", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&got).unwrap(), fs::read(f.pg_wal(name)).unwrap());
    let got = dir.join("partial");
    let o = f.repo.fetch(&format!("{name}.partial"), &got, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&got).unwrap(), bytes);
}

/// Waits (up to 20 s) until `cond` holds; panics naming `what`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The segments in the spool's one subdirectory under `root`.
fn spooled(root: &Path) -> Vec<String> {
    let Some(sub) = fs::read_dir(root).ok().and_then(|mut d| d.next()) else {
        return Vec::new();
    };
    let mut v: Vec<String> = fs::read_dir(sub.unwrap().path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}

#[test]
fn prefetch_fills_the_spool_and_the_next_fetch_is_served_from_it() {
    let f = fixture();
    let s = &f.segments;
    let dir = pg_scratch_dir("wal-prefetch");
    let spool = dir.join("spool");
    let fetch = |name: &str| {
        let dest = dir.join("RECOVERYXLOG");
        let args = [
            "--json",
            "--prefetch",
            "2",
            "--spool",
            spool.to_str().unwrap(),
        ];
        let o = f.repo.fetch(name, &dest, &args);
        assert!(o.status.success(), "fetch {name}: {}", text(&o));
        assert_eq!(
            fs::read(&dest).unwrap(),
            fs::read(f.pg_wal(name)).unwrap(),
            "{name}"
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["from"].as_str().unwrap().to_string()
    };
    // the background prefetcher keeps the next two ready
    assert_eq!(fetch(&s[0]), "repository");
    eventually("s1 and s2 prefetched", || {
        spooled(&spool) == vec![s[1].clone(), s[2].clone()]
    });
    assert_eq!(fetch(&s[1]), "spool");
    eventually("s3 prefetched, s1 gone", || {
        spooled(&spool) == vec![s[2].clone(), s[3].clone()]
    });

    // an entry of another timeline and one already passed are stale
    let sub = fs::read_dir(&spool)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let other_tli = format!("00000002{}", &s[4][8..]);
    fs::write(sub.join(&other_tli), b"x").unwrap();
    assert_eq!(fetch(&s[3]), "spool");
    // s[2] passed, the other timeline dropped, s[4] prefetched (and s[5]
    // once the fixture's cluster has archived it)
    let after = |n: &str| {
        let v = spooled(&spool);
        v.len() <= 2 && v.iter().all(|e| e.as_str() > n && e[..8] == s[0][..8])
    };
    eventually("s4 first, nothing stale", || {
        after(&s[3]) && spooled(&spool).first() == Some(&s[4])
    });
    assert_eq!(fetch(&s[4]), "spool");
    eventually("nothing at or before s4", || after(&s[4]));
    // the prefetcher exits once the spool is gone
    let _ = fs::remove_dir_all(&spool);
}

#[test]
fn default_spool_is_inside_pg_wal() {
    let f = fixture();
    let data = pg_scratch_dir("wal-datadir");
    let pg_wal = data.join("pg_wal");
    fs::create_dir(&pg_wal).unwrap();
    // as PostgreSQL runs it: cwd = data dir, %p = pg_wal/RECOVERYXLOG
    let o = f
        .repo
        .cmd()
        .current_dir(&data)
        .args(["wal", "fetch", &f.segments[0], "pg_wal/RECOVERYXLOG"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
    assert_eq!(
        fs::read(pg_wal.join("RECOVERYXLOG")).unwrap(),
        fs::read(f.pg_wal(&f.segments[0])).unwrap()
    );
    let root = pg_wal.join("strata-prefetch");
    eventually("s1 prefetched into pg_wal/strata-prefetch", || {
        spooled(&root).contains(&f.segments[1])
    });
    assert!(!pg_wal.join("RECOVERYXLOG.tmp").exists());
    let _ = fs::remove_dir_all(&data);
}

#[test]
fn history_files_round_trip_and_conflict() {
    let repo = Repo::local("wal-history");
    let dir = pg_scratch_dir("wal-history-files");
    let h = dir.join("00000002.history");
    fs::write(&h, "1\t0/3000158\tno recovery target specified\n").unwrap();
    let o = repo.push(&h);
    assert!(o.status.success(), "{}", text(&o));
    let record = fs::read_to_string(repo.object("wal/main/history/00000002.history.json")).unwrap();
    assert!(
        record.contains("hmac_sha256") && !record.contains("\"sha256\""),
        "{record}"
    );

    let o = repo.push(&h);
    assert!(
        o.status.success() && stderr(&o).contains("already archived"),
        "{}",
        text(&o)
    );

    let got = dir.join("got");
    let o = repo.fetch("00000002.history", &got, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&got).unwrap(), fs::read(&h).unwrap());

    fs::create_dir(dir.join("b")).unwrap();
    let h2 = dir.join("b/00000002.history");
    fs::write(&h2, "1\t0/3000160\tno recovery target specified\n").unwrap();
    let o = repo.push(&h2);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(stderr(&o).contains("00000002.history"), "{}", text(&o));
    let o = repo.fetch("00000002.history", &got, &[]);
    assert!(o.status.success());
    assert_eq!(fs::read(&got).unwrap(), fs::read(&h).unwrap());
}

#[test]
fn s3_archive_and_fetch() {
    let s3 = common::s3::s3_server();
    let prefix = format!("wal-{}", std::process::id());
    let section = format!(
        "url = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\npath_style = true",
        s3.bucket, s3.endpoint
    );
    let dir = pg_scratch_dir("wal-s3-cfg");
    let mut repo = Repo::new_in(dir.join("cfg"), &section);
    repo.root = s3.root.join(&s3.bucket).join(&prefix);
    chown_to_pg(&dir);
    let pg = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "wal-s3",
        env: s3.env_vars(),
    });
    let segments = archive_segments(&pg, 3);
    let out = pg_scratch_dir("wal-s3-out");
    for name in &segments {
        let dest = out.join(name);
        let o = repo.fetch(
            name,
            &dest,
            &["--spool", out.join("spool").to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(o.stderr.is_empty(), "{}", text(&o));
        assert_eq!(
            fs::read(&dest).unwrap(),
            fs::read(pg.data_dir.join("pg_wal").join(name)).unwrap()
        );
    }
    let o = repo.fetch("000000010000000A00000000", &out.join("none"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));

    let name = &segments[0];
    let wal = pg.data_dir.join("pg_wal").join(name);
    let o = repo.push(&wal);
    assert!(
        o.status.success() && stderr(&o).contains("already archived"),
        "{}",
        text(&o)
    );
    let key = seg_key(name);
    let before = fs::read(repo.object(&key)).unwrap();
    let mut bytes = fs::read(&wal).unwrap();
    bytes[200_000] ^= 1;
    fs::create_dir(out.join("c")).unwrap();
    fs::write(out.join("c").join(name), &bytes).unwrap();
    let o = repo.push(&out.join("c").join(name));
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert_eq!(fs::read(repo.object(&key)).unwrap(), before);
}

#[test]
fn history_record_after_the_recipients_changed() {
    let repo = Repo::local("wal-rotate");
    let dir = pg_scratch_dir("wal-rotate-files");
    let h = dir.join("00000003.history");
    fs::write(
        &h,
        "1\t0/3000158\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n",
    )
    .unwrap();
    assert!(repo.push(&h).status.success());

    // a second recipient added: the HMAC key changed, so the record is
    // compared through its sealed digest, which needs the identity
    let new_recipient = common::generate_key(&dir.join("new-key.txt"));
    let cfg_text = fs::read_to_string(&repo.cfg).unwrap();
    let rotated = cfg_text.replace(
        "recipients = [\"",
        &format!("recipients = [\"{new_recipient}\", \""),
    );
    assert_ne!(rotated, cfg_text);
    let with_identity = repo.dir.join("rotated.toml");
    fs::write(&with_identity, &rotated).unwrap();
    let without_identity = repo.dir.join("rotated-no-identity.toml");
    fs::write(
        &without_identity,
        rotated.replace("identity_file = \"key.txt\"\n", ""),
    )
    .unwrap();
    // the change is deliberate: record the new recipients (issue 13 item
    // 8: without this every push is refused, see
    // tests/fault_regressions.rs)
    let o = strata_process()
        .arg("--config")
        .arg(&with_identity)
        .args(["key", "recipients", "--set"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let push = |cfg: &Path| {
        strata_process()
            .env_remove("STRATA_LOG")
            .env_remove("STRATA_IDENTITY_FILE")
            .arg("--config")
            .arg(cfg)
            .args(["wal", "push"])
            .arg(&h)
            .output()
            .unwrap()
    };
    let o = push(&without_identity);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(stderr(&o).contains("--identity"), "{}", text(&o));
    let o = push(&with_identity);
    assert!(
        o.status.success() && stderr(&o).contains("already archived"),
        "{}",
        text(&o)
    );
}

#[test]
fn record_without_object_is_completed_by_the_next_push() {
    let f = fixture();
    let repo = Repo::local("wal-complete");
    let name = &f.segments[0];
    let o = repo.push(&f.pg_wal(name));
    assert!(o.status.success(), "{}", text(&o));
    let obj = repo.object(&seg_key(name));
    let stored = fs::read(&obj).unwrap();
    // as if the push had stopped between the record and the object
    fs::remove_file(&obj).unwrap();
    let dest = pg_scratch_dir("wal-complete-out").join("x");
    let o = repo.fetch(name, &dest, &["--prefetch", "0"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "only the record: not archived yet: {}",
        text(&o)
    );
    let o = repo.push(&f.pg_wal(name));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", text(&o));
    assert!(obj.is_file());
    assert_ne!(
        fs::read(&obj).unwrap(),
        stored,
        "age encryption is randomised"
    );
    let o = repo.fetch(name, &dest, &["--prefetch", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&dest).unwrap(), fs::read(f.pg_wal(name)).unwrap());
}

/// The whole loop with PostgreSQL on both ends: a base backup taken
/// without WAL (`pg_basebackup -X none`), the cluster lost, and a new
/// server recovering every committed row through `wal fetch` as its
/// `restore_command`; after promotion it archives the new timeline (its
/// history file, then its segments) into the same archive.
#[test]
fn recovery_through_restore_command() {
    let repo = Repo::local("wal-pitr");
    let a = PgCluster::start(PgOptions {
        extra_conf: repo.archive_conf(),
        name: "wal-pitr-a",
        ..Default::default()
    });
    a.psql(
        "postgres",
        "CREATE TABLE t (i int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
    );
    let base = pg_scratch_dir("wal-pitr-base").join("data");
    run_ok(
        Command::new(a.bin("pg_basebackup"))
            .arg("-D")
            .arg(&base)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &a.port.to_string(),
            ])
            .args(["-X", "none", "-c", "fast"]),
    );
    // written after the backup: only the archive has it
    archive_segments(&a, 3);
    a.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'late' FROM generate_series(1001, 1500) g",
    );
    archive_segments(&a, 1);
    let rows = a.psql("postgres", "SELECT count(*) FROM t");
    assert_eq!(rows, "1500");
    a.stop();

    // the backup history file went through archive_command too
    let tl1 = repo.root.join("wal/main/00000001");
    let backup_files: Vec<String> = fs::read_dir(&tl1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".backup"))
        .collect();
    assert_eq!(backup_files.len(), 1, "{backup_files:?}");

    fs::write(base.join("recovery.signal"), "").unwrap();
    let mut conf = repo.archive_conf();
    conf.push(format!(
        "restore_command = '{} --config {} wal fetch %f %p'",
        strata_bin().display(),
        repo.cfg.display()
    ));
    let b = PgCluster::start_existing(
        PgOptions {
            extra_conf: conf,
            name: "wal-pitr-b",
            ..Default::default()
        },
        &base,
    );
    b.wait_until_primary(Duration::from_secs(120));
    assert_eq!(b.psql("postgres", "SELECT count(*) FROM t"), "1500");
    assert_eq!(
        b.psql("postgres", "SELECT count(*) FROM t WHERE v = 'late'"),
        "500"
    );
    let log = b.log();
    assert!(log.contains("restored log file"), "{}", b.log_tail(60));
    // missing files (history probes, the end of the archive) are silent
    assert!(!log.contains("strata:"), "{}", b.log_tail(60));
    // the prefetcher (spool in pg_wal/strata-prefetch) sees recovery end
    // and leaves with its spool, instead of lingering and re-creating it
    // (issue 13 item 10)
    eventually("the prefetch spool removed after promotion", || {
        !base.join("pg_wal/strata-prefetch").exists()
    });

    // the new timeline is archived, starting with its history file (no
    // .partial here: the archive ended on a segment switch)
    b.wait_for(
        "postgres",
        "SELECT archived_count >= 1 AND failed_count = 0 FROM pg_stat_archiver",
        "t",
        Duration::from_secs(60),
    );
    assert!(repo.object("wal/main/history/00000002.history").is_file());
    b.psql("postgres", "INSERT INTO t VALUES (0, 'timeline 2')");
    let tl2 = archive_segments(&b, 1);
    assert!(tl2[0].starts_with("00000002"), "{tl2:?}");
    assert!(repo.object(&seg_key(&tl2[0])).is_file());
    let h = pg_scratch_dir("wal-pitr-h").join("h");
    let o = repo.fetch("00000002.history", &h, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(&h).unwrap(),
        fs::read(base.join("pg_wal/00000002.history")).unwrap()
    );
}

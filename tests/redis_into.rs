//! `restore REDIS --into redis://…` and `--at T` end to end: a real
//! redis-server filled with every data type, backed up by the built strata
//! binary, loaded into another running server (which replicates from
//! strata for one full sync, then is detached), compared key by key and
//! type by type. Also: a non-empty target is refused unless --replace; a
//! damaged backup is cut short and the target keeps its data; --at picks
//! the newest snapshot taken at or before the time.

mod common;

use std::fs;
use std::time::Duration;

use common::cli::Strata;
use common::redis::{Conn, RedisServer, Value, fill};

/// A local-repository setup with one redis source `cache` at `url`.
fn setup(name: &str, url: &str) -> Strata {
    let s = Strata::local(name, &[]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += &format!("\n[sources.cache]\nkind = \"redis\"\nurl = \"{url}\"\n");
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s
}

fn info(c: &mut Conn, section: &str) -> String {
    match c.ok(&["INFO", section]) {
        Value::Str(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO {section}: {other:?}"),
    }
}

/// A target that needs a password and that would authenticate to its
/// master (so strata's handshake sees AUTH too).
fn target(name: &str) -> (RedisServer, String) {
    let t = RedisServer::start(name, &["--masterauth", "whatever"]);
    // after start: the harness's readiness check does not authenticate
    t.conn().ok(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}", t.port);
    (t, url)
}

fn auth(t: &RedisServer) -> Conn {
    let mut c = t.conn();
    c.ok(&["AUTH", "s3cret"]);
    c
}

#[test]
fn into_a_running_server_round_trip_refusal_and_replace() {
    let src = RedisServer::start("into-src", &[]);
    let mut c = src.conn();
    let counts = fill(&mut c);
    let before = c.dump_all();
    assert_eq!(before.len() as u64, counts.values().sum::<u64>());
    let s = setup("redis-into", &src.url());
    let b = s.backup("cache");
    let id = b["id"].as_str().unwrap();

    let (t, url) = target("into-target");
    let o = s.run(&["--json", "restore", "cache", "--into", &url]).ok();
    let r = o.json();
    assert_eq!(r["backup"], id, "{o}");
    assert_eq!(r["counts_match"], true, "{o}");
    assert_eq!(r["replaced_keys"], 0, "{o}");
    assert!(
        !o.all().contains("s3cret"),
        "the password is never printed\n{o}"
    );
    let mut tc = auth(&t);
    // detached again, and holding exactly what the source held
    assert!(info(&mut tc, "replication").contains("role:master"));
    let after = tc.dump_all();
    assert_eq!(after.len(), before.len());
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "key {k:?} differs");
    }
    assert_eq!(before.values().filter(|v| v.2).count(), 3, "TTLs survive");

    // Not over data, unless asked: the target is left as it was.
    tc.ok(&["SET", "extra", "written after the restore"]);
    let o = s.run(&["restore", "cache", "--into", &url]).expect_code(8);
    assert!(o.stderr.contains("is not empty"), "{o}");
    assert!(o.stderr.contains("--replace"), "{o}");
    assert!(info(&mut tc, "replication").contains("role:master"));
    assert_eq!(
        tc.ok(&["GET", "extra"]),
        Value::Str(b"written after the restore".to_vec())
    );
    let o = s
        .run(&[
            "restore",
            "cache",
            "--into",
            &url,
            "--replace",
            "--listen",
            "127.0.0.1:0",
        ])
        .ok();
    assert!(o.stdout.contains("keys replaced"), "{o}");
    assert!(
        o.stdout.contains(&format!("restored {id} of cache into")),
        "{o}"
    );
    let mut tc = auth(&t);
    assert_eq!(tc.ok(&["GET", "extra"]), Value::Nil);
    assert_eq!(tc.dump_all(), before);

    // A replica is refused: loading would detach it from its master.
    let replica = RedisServer::start("into-replica", &[]);
    replica
        .conn()
        .ok(&["REPLICAOF", "127.0.0.1", &src.port.to_string()]);
    let o = s
        .run(&["restore", "cache", "--into", &replica.url(), "--replace"])
        .expect_code(8);
    assert!(o.stderr.contains("is a replica of 127.0.0.1:"), "{o}");
    assert!(info(&mut replica.conn(), "replication").contains("role:slave"));

    // A wrong password is the target's fault, said so.
    let bad = format!("redis://:wrong@127.0.0.1:{}", t.port);
    let o = s.run(&["restore", "cache", "--into", &bad, "--replace"]);
    assert_ne!(o.code, Some(0), "{o}");
    assert!(o.stderr.contains("authentication failed"), "{o}");
}

#[test]
fn a_damaged_snapshot_is_cut_short_and_the_target_keeps_its_data() {
    let src = RedisServer::start("damaged-src", &[]);
    let mut c = src.conn();
    fill(&mut c);
    let s = setup("redis-damaged", &src.url());
    let id = s.backup("cache")["id"].as_str().unwrap().to_string();
    let obj = s.repo_dir().join(format!("backups/cache/{id}/dump.rdb"));
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() * 3 / 4;
    bytes[mid] ^= 0x55;
    fs::write(&obj, bytes).unwrap();

    let (t, url) = target("damaged-target");
    let mut tc = auth(&t);
    tc.ok(&["SET", "keep", "me"]);
    let o = s
        .run(&["restore", "cache", "--into", &url, "--replace"])
        .expect_code(4);
    assert!(o.stderr.contains("damaged"), "{o}");
    assert!(o.stderr.contains("did not load it"), "{o}");
    // Give a wrongly loading replica the time it would need, then check.
    std::thread::sleep(Duration::from_millis(500));
    let mut tc = auth(&t);
    assert!(info(&mut tc, "replication").contains("role:master"));
    assert_eq!(tc.ok(&["GET", "keep"]), Value::Str(b"me".to_vec()));
    assert_eq!(tc.ok(&["DBSIZE"]), Value::Int(1));
}

#[test]
fn at_picks_the_newest_snapshot_taken_before_the_time() {
    let src = RedisServer::start("at-src", &[]);
    let mut c = src.conn();
    c.ok(&["SET", "generation", "1"]);
    let s = setup("redis-at", &src.url());
    let first = s.backup("cache")["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(1100));
    c.ok(&["SET", "generation", "2"]);
    let second = s.backup("cache")["id"].as_str().unwrap().to_string();

    let (t, url) = target("at-target");
    let o = s
        .run(&["restore", "cache", "--at", &between, "--into", &url])
        .ok();
    assert!(
        o.stderr
            .contains(&format!("using snapshot {first} taken at ")),
        "{o}"
    );
    assert!(o.stderr.contains(" s before "), "{o}");
    assert_eq!(
        auth(&t).ok(&["GET", "generation"]),
        Value::Str(b"1".to_vec())
    );

    // The same choice for a file; and now → the second.
    let f = s.dir.join("at.rdb");
    let o = s
        .run(&[
            "restore",
            "cache",
            "--at",
            "0s ago",
            "--to-file",
            f.to_str().unwrap(),
        ])
        .ok();
    assert!(
        o.stderr.contains(&format!("using snapshot {second} ")),
        "{o}"
    );

    // Before the first: refused, naming the time and the earliest.
    let o = s
        .run(&[
            "restore",
            "cache",
            "--at",
            "2020-01-01 00:00:00",
            "--to-file",
            s.dir.join("none.rdb").to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(o.stderr.contains("2020-01-01T00:00:00Z"), "{o}");
    assert!(
        o.stderr.contains(&format!("the earliest is {first}")),
        "{o}"
    );
    // --at and --backup together make no sense.
    let o = s
        .run(&[
            "restore", "cache", "--at", &between, "--backup", &first, "--into", &url,
        ])
        .expect_code(2);
    assert!(o.stderr.contains("not both"), "{o}");
}

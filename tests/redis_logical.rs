//! Logical Redis snapshots (issue 17 item 3) end to end, against a real
//! redis-server with `SYNC` and `PSYNC` renamed away, standing in for a
//! managed service (ElastiCache, MemoryDB, Azure Cache): `mode = "auto"`
//! falls back with a notice; the round trip is exact (every key, type,
//! value and TTL, across databases) through `restore --into`, `--to-dir
//! --start`, `--to-file` and a drill; damage is found by `verify
//! --read-data`; `mode = "replication"` fails naming SYNC.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::cli::Strata;
use common::free_port;
use common::redis::{Conn, RedisServer, Value, fill, wait_ready};

/// A local-repository setup with one redis source `cache` at `url`, with
/// `extra` lines in its section.
fn setup(name: &str, url: &str, extra: &str) -> Strata {
    let s = Strata::local(name, &[]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += &format!("\n[sources.cache]\nkind = \"redis\"\nurl = \"{url}\"\n{extra}\n");
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s
}

/// PTTL of every key that has one, per (db, key).
fn pttls(c: &mut Conn) -> BTreeMap<(u32, Vec<u8>), i64> {
    let mut out = BTreeMap::new();
    for db in 0..16u32 {
        c.ok(&["SELECT", &db.to_string()]);
        let Value::Arr(keys) = c.ok(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        for k in keys {
            let Value::Str(k) = k else { panic!("key") };
            let Value::Int(p) = c.cmd_bytes(&[b"PTTL", &k]) else {
                panic!("PTTL")
            };
            if p >= 0 {
                out.insert((db, k), p);
            }
        }
    }
    c.ok(&["SELECT", "0"]);
    out
}

/// The data `fill` writes, plus TTLs on several types in several
/// databases.
fn fill_all(c: &mut Conn) -> u64 {
    let counts = fill(c);
    c.ok(&["SELECT", "3"]);
    c.ok(&["EXPIRE", "queue:1", "5000"]);
    c.ok(&["PEXPIRE", "rank:2", "86400123"]);
    c.ok(&["SELECT", "5"]);
    c.ok(&["SET", "db5", "only key here", "PX", "600000"]);
    c.ok(&["SELECT", "0"]);
    counts.values().sum::<u64>() + 1
}

/// `after` holds exactly `before`'s keys, types and values, and every TTL
/// within `tol` ms (time passes between the two reads).
fn assert_same(before: &mut Conn, after: &mut Conn, tol: i64) {
    let (b, a) = (before.dump_all(), after.dump_all());
    assert_eq!(a.len(), b.len(), "key count");
    for (k, v) in &b {
        assert_eq!(a.get(k), Some(v), "key {k:?} differs");
    }
    let (bt, at) = (pttls(before), pttls(after));
    assert_eq!(
        bt.keys().collect::<Vec<_>>(),
        at.keys().collect::<Vec<_>>(),
        "keys with a TTL"
    );
    for (k, p) in &bt {
        let q = at[k];
        assert!(
            (p - q).abs() <= tol,
            "TTL of {k:?}: {p} ms before, {q} ms after"
        );
    }
}

#[test]
fn auto_falls_back_to_logical_and_round_trips_exactly() {
    let src = RedisServer::start_without_sync("lg-src", &[]);
    let mut c = src.conn();
    let n = fill_all(&mut c);
    assert!(
        pttls(&mut c).len() >= 6,
        "TTLs on several types and databases"
    );

    let s = setup("redis-logical", &src.url(), "");
    let o = s.run(&["--json", "backup", "cache"]).ok();
    let b = o.json();
    assert!(
        o.stderr.contains("notice") && o.stderr.contains("refuses SYNC"),
        "{o}"
    );
    assert!(o.stderr.contains("logical snapshot"), "{o}");
    assert_eq!(b["kind"], "snapshot", "{o}");
    let id = b["id"].as_str().unwrap().to_string();
    assert!(
        s.repo_dir()
            .join(format!("backups/cache/{id}/keys.rlog"))
            .is_file()
    );
    s.run(&["verify", "--read-data"]).ok();
    // the manifest records the fallback and what the scan wrote
    let mkey = b["manifest"].as_str().unwrap();
    let bytes = fs::read(s.repo_dir().join(mkey)).unwrap();
    let ids = strata::keys::load_identities(&s.key).unwrap();
    let m = strata::catalog::manifest::ManifestFile::parse(mkey, &bytes)
        .unwrap()
        .open(mkey, &ids)
        .unwrap();
    let r = m.redis.expect("redis facts");
    let l = r.logical.expect("a logical snapshot");
    assert!(l.fallback.unwrap().contains("SYNC"));
    assert_eq!(
        (l.keys, l.format_version, r.transfer.as_str()),
        (n, 1, "logical")
    );
    assert_eq!(r.keyspace.iter().map(|d| d.keys).sum::<u64>(), n);

    // restore --into an empty running server
    let dst = RedisServer::start("lg-dst", &[]);
    let o = s
        .run(&["--json", "restore", "cache", "--into", &dst.url()])
        .ok();
    let r = o.json();
    assert_eq!(r["counts_match"], true, "{o}");
    assert_same(&mut c, &mut dst.conn(), 5_000);
    // not over keys without --replace; with it, exactly the snapshot again
    dst.conn().ok(&["SET", "stray", "x"]);
    s.run(&["restore", "cache", "--into", &dst.url()])
        .expect_code(8);
    s.run(&["restore", "cache", "--into", &dst.url(), "--replace"])
        .ok();
    assert_same(&mut c, &mut dst.conn(), 5_000);

    // --to-dir --start: a sandbox server strata starts and loads
    let port = free_port();
    let dir = s.dir.join("started");
    let o = s
        .run(&[
            "--json",
            "restore",
            "cache",
            "--to-dir",
            dir.to_str().unwrap(),
            "--start",
            "--port",
            &port.to_string(),
        ])
        .ok();
    let r = o.json();
    let pid = r["server"]["pid"].as_u64().expect("pid") as u32;
    common::kill_at_exit(pid);
    assert_eq!(r["server"]["counts_match"], true, "{o}");
    wait_ready(port);
    assert_same(&mut c, &mut Conn::open(port), 5_000);
    assert!(
        dir.join("dump.rdb").is_file(),
        "the started server saved its RDB"
    );
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }

    // --to-file: an RDB file a plain redis-server loads
    let file = s.dir.join("out.rdb");
    s.run(&["restore", "cache", "--to-file", file.to_str().unwrap()])
        .ok();
    assert!(fs::read(&file).unwrap().starts_with(b"REDIS"));
    let placed = s.dir.join("placed");
    fs::create_dir(&placed).unwrap();
    fs::copy(&file, placed.join("dump.rdb")).unwrap();
    let check = RedisServer::start("lg-check", &["--dir", placed.to_str().unwrap()]);
    assert_same(&mut c, &mut check.conn(), 10_000);
    assert_eq!(check.conn().dump_all().len() as u64, n);
    let left: Vec<_> = fs::read_dir(&s.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".strata-restore")
        })
        .collect();
    assert!(left.is_empty(), "no work directory left behind");

    // a drill loads it into its sandbox redis-server and checks key counts
    let work = s.dir.join("drill-work");
    let o = s
        .run(&[
            "--json",
            "drill",
            "--source",
            "cache",
            "--work-dir",
            work.to_str().unwrap(),
        ])
        .ok();
    let r = o.json();
    assert_eq!(r["passed"], true, "{o}");
    let text = o.stdout.clone();
    assert!(text.contains("keys per database"), "{o}");
}

#[test]
fn replication_mode_against_a_server_refusing_sync_fails_clearly() {
    let src = RedisServer::start_without_sync("lg-repl", &[]);
    src.conn().ok(&["SET", "k", "v"]);
    let s = setup("redis-logical-repl", &src.url(), "mode = \"replication\"");
    let o = s.run(&["backup", "cache"]).expect_code(5);
    assert!(o.stderr.contains("SYNC"), "{o}");
    assert!(o.stderr.contains("mode = \"logical\""), "{o}");
    assert!(s.list_ids().is_empty(), "nothing stored");
    // and a mode that does not exist is a config error naming the choices
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg = cfg.replace("mode = \"replication\"", "mode = \"rdb\"");
    fs::write(&s.config, cfg).unwrap();
    let o = s.run(&["list"]).expect_code(2);
    assert!(o.stderr.contains("\"logical\""), "{o}");
}

/// issue 17 item 3: a logical object cut short or damaged is found by
/// verify --read-data (integrity, exit 4), and restore refuses it.
#[test]
fn damaged_or_truncated_logical_object_is_detected() {
    // mode = "logical" on a server that would allow SYNC: no attempt made
    let src = RedisServer::start("lg-dmg", &[]);
    let mut c = src.conn();
    for i in 0..2000 {
        c.ok(&["SET", &format!("k{i}"), &format!("value {i}")]);
    }
    let s = setup("redis-logical-dmg", &src.url(), "mode = \"logical\"");
    let o = s.run(&["--json", "backup", "cache"]).ok();
    assert!(!o.stderr.contains("notice"), "{o}");
    let id = o.json()["id"].as_str().unwrap().to_string();
    s.run(&["verify", "--read-data"]).ok();
    let log = fs::read_to_string(src.dir.join("redis.log")).unwrap();
    assert!(!log.contains("Replica"), "no sync was asked for:\n{log}");

    let obj = s.repo_dir().join(format!("backups/cache/{id}/keys.rlog"));
    let good = fs::read(&obj).unwrap();
    // truncated
    fs::write(&obj, &good[..good.len() - 40]).unwrap();
    s.run(&["verify", "--read-data"]).expect_code(4);
    // damaged in the middle
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    fs::write(&obj, &bad).unwrap();
    s.run(&["verify", "--read-data"]).expect_code(4);
    let dst = RedisServer::start("lg-dmg-dst", &[]);
    s.run(&["restore", "cache", "--into", &dst.url()])
        .expect_code(4);
    fs::write(&obj, &good).unwrap();
    s.run(&["verify", "--read-data"]).ok();
}

/// An ACL user without SYNC (NOPERM) is a refusal too: `auto` falls back.
#[test]
fn auto_falls_back_when_an_acl_refuses_sync() {
    let src = RedisServer::start("lg-acl", &[]);
    let mut c = src.conn();
    c.ok(&["SET", "k", "v"]);
    c.ok(&["SELECT", "2"]);
    c.ok(&["SET", "k2", "v2", "EX", "1000"]);
    c.ok(&[
        "ACL", "SETUSER", "bk", "on", ">pw", "~*", "&*", "+@all", "-sync", "-psync",
    ]);
    let url = format!("redis://bk:pw@127.0.0.1:{}", src.port);
    let s = setup("redis-logical-acl", &url, "");
    let o = s.run(&["--json", "backup", "cache"]).ok();
    assert!(
        o.stderr.contains("notice") && o.stderr.contains("NOPERM"),
        "{o}"
    );
    assert!(!o.all().contains(":pw@"), "password printed\n{o}");
    let dst = RedisServer::start("lg-acl-dst", &[]);
    s.run(&["restore", "cache", "--into", &dst.url()]).ok();
    assert_same(&mut c, &mut dst.conn(), 5_000);
}

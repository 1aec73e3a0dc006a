//! Redis snapshots end to end: a real redis-server filled with every data
//! type, backed up by the built strata binary over the replication
//! protocol, restored into a second server started by strata, compared
//! key by key and type by type.

mod common;

use std::fs;

use common::cli::Strata;
use common::free_port;
use common::redis::{Conn, RedisServer, Value, fill, wait_ready};

/// A local-repository setup with one redis source `cache` at `url`.
fn setup(name: &str, url: &str) -> Strata {
    let s = Strata::local(name, &[]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += &format!("\n[sources.cache]\nkind = \"redis\"\nurl = \"{url}\"\n");
    cfg += "\n[tiers.hourly]\nkind = \"snapshot\"\nkeep_last = 5\n";
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s
}

#[test]
fn snapshot_round_trip_into_a_started_server() {
    let src = RedisServer::start("src", &[]);
    let mut c = src.conn();
    let counts = fill(&mut c);
    let before = c.dump_all();
    assert_eq!(before.len() as u64, counts.values().sum::<u64>());

    let s = setup("redis-rt", &src.url());
    // Redis 7 streams the snapshot (diskless) by default.
    let b = s.backup("cache");
    assert_eq!(b["kind"], "snapshot");
    assert!(b["plain_bytes"].as_u64().unwrap() > 5 * 1024 * 1024, "{b}");
    let list = s.run(&["--json", "list", "cache"]).ok().json();
    assert_eq!(list[0]["id"], b["id"]);
    assert_eq!(list[0]["kind"], "snapshot");
    assert_eq!(list[0]["source_kind"], "redis");

    let port = free_port();
    let dir = s.dir.join("restored");
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
    let server = &r["server"];
    let pid = server["pid"].as_u64().expect("pid") as u32;
    common::kill_at_exit(pid);
    assert_eq!(server["counts_match"], true, "{o}");
    for (db, n) in &counts {
        let got = server["keyspace"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["db"] == *db)
            .unwrap_or_else(|| panic!("db{db} missing\n{o}"));
        assert_eq!(got["keys"], *n, "db{db}\n{o}");
    }
    assert!(dir.join("dump.rdb").is_file());
    wait_ready(port);
    let after = Conn::open(port).dump_all();
    assert_eq!(after.len(), before.len());
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "key {:?} differs", k);
    }
    let ttl_keys = before.values().filter(|v| v.2).count();
    assert_eq!(ttl_keys, 3, "TTL keys survive with a TTL");
    // A port in use (here: the source's) is refused, not shared.
    let o = s
        .run(&[
            "restore",
            "cache",
            "--to-dir",
            s.dir.join("again").to_str().unwrap(),
            "--start",
            "--port",
            &src.port.to_string(),
        ])
        .expect_code(8);
    assert!(o.stderr.contains("in use"), "{o}");
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }

    // Disk-based sync (length-prefixed), restored to a file.
    c.ok(&["CONFIG", "SET", "repl-diskless-sync", "no"]);
    c.ok(&["SET", "after", "the first backup"]);
    // This time through the snapshot tier, which covers redis sources.
    let o = s.run(&["--json", "backup", "--tier", "hourly"]).ok();
    let b2 = o.json()[0]["backup"].clone();
    assert_eq!(b2["tier"], "hourly", "{o}");
    let file = s.dir.join("out.rdb");
    let f = file.to_str().unwrap();
    let id2 = b2["id"].as_str().unwrap();
    s.run(&["restore", "cache", "--backup", id2, "--to-file", f])
        .ok();
    assert!(fs::read(&file).unwrap().starts_with(b"REDIS"));
    // Never over an existing file, unless asked.
    let o = s.run(&["restore", "cache", "--to-file", f]).expect_code(8);
    assert!(o.stderr.contains("--force"), "{o}");
    s.run(&["restore", "cache", "--to-file", f, "--force"]).ok();
    // Placed by hand as dump.rdb (appendonly off), Redis loads it.
    let placed = s.dir.join("placed");
    fs::create_dir(&placed).unwrap();
    fs::copy(&file, placed.join("dump.rdb")).unwrap();
    let check = RedisServer::start("check", &["--dir", placed.to_str().unwrap()]);
    assert_eq!(
        check.conn().ok(&["GET", "after"]),
        Value::Str(b"the first backup".to_vec())
    );
    assert_eq!(check.conn().dump_all().len(), before.len() + 1);
    s.run(&["verify", "--read-data"]).ok();
    // The server streamed the first snapshot and wrote the second to disk.
    let log = fs::read_to_string(src.dir.join("redis.log")).unwrap();
    assert!(log.contains("target: replicas sockets"), "{log}");
    assert!(log.contains("target: disk"), "{log}");
}

#[test]
fn damaged_object_is_refused() {
    let src = RedisServer::start("dmg", &[]);
    let mut c = src.conn();
    c.ok(&["SET", "k", "v"]);
    let s = setup("redis-dmg", &src.url());
    let b = s.backup("cache");
    let id = b["id"].as_str().unwrap();
    let obj = s.repo_dir().join(format!("backups/cache/{id}/dump.rdb"));
    let mut bytes = fs::read(&obj).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    fs::write(&obj, bytes).unwrap();
    let out = s.dir.join("x.rdb");
    let o = s
        .run(&["restore", "cache", "--to-file", out.to_str().unwrap()])
        .expect_code(4);
    assert!(o.stderr.contains("damaged"), "{o}");
    assert!(!out.exists(), "no file from a damaged object");
    s.run(&["verify", "--read-data"]).expect_code(4);
}

#[test]
fn unreachable_redis_fails_with_source_error_and_no_backup() {
    let port = free_port();
    let s = setup("redis-down", &format!("redis://:hunter2@127.0.0.1:{port}"));
    let o = s.run(&["backup", "cache"]).expect_code(5);
    assert!(o.stderr.contains("cannot connect to redis"), "{o}");
    assert!(!o.all().contains("hunter2"), "password printed\n{o}");
    assert!(s.list_ids().is_empty());
}

#[test]
fn wrong_restore_flags_are_usage_errors() {
    let s = setup("redis-flags", "redis://127.0.0.1:1");
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += "\n[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/app\"\n";
    fs::write(&s.config, cfg).unwrap();
    let o = s
        .run(&["restore", "cache", "--to-database", "x"])
        .expect_code(2);
    assert!(o.stderr.contains("--to-file"), "{o}");
    let o = s
        .run(&["restore", "app", "--to-file", "/tmp/x.rdb"])
        .expect_code(2);
    assert!(o.stderr.contains("--to-database"), "{o}");
    let o = s
        .run(&["restore", "cache", "--to-file", "/tmp/x.rdb", "--start"])
        .expect_code(2);
    assert!(o.stderr.contains("--to-dir"), "{o}");
    s.run(&[
        "restore",
        "cache",
        "--to-file",
        "/tmp/a",
        "--to-dir",
        "/tmp/b",
    ])
    .expect_code(2);
}

/// A fake Redis that answers the handshake and then sends `payload` as
/// its snapshot stream (framing included), then closes. Returns its port.
fn fake_redis(payload: Vec<u8>) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let words: Vec<String> = if let Some(n) = line.trim_end().strip_prefix('*') {
                (0..n.parse::<usize>().unwrap())
                    .map(|_| {
                        let mut len = String::new();
                        r.read_line(&mut len).unwrap();
                        let n: usize = len.trim_end()[1..].parse().unwrap();
                        let mut b = vec![0; n + 2];
                        r.read_exact(&mut b).unwrap();
                        String::from_utf8_lossy(&b[..n]).into_owned()
                    })
                    .collect()
            } else {
                line.split_whitespace().map(String::from).collect()
            };
            let w = r.get_mut();
            match words[0].to_uppercase().as_str() {
                "INFO" => {
                    let body = "redis_version:7.9.9\r\nused_memory:1000\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n";
                    write!(w, "${}\r\n{body}\r\n", body.len()).unwrap();
                }
                "REPLCONF" => w.write_all(b"+OK\r\n").unwrap(),
                "SYNC" => {
                    w.write_all(b"\n\n").unwrap();
                    w.write_all(&payload).unwrap();
                    return;
                }
                other => panic!("fake redis got {other}"),
            }
        }
    });
    port
}

/// A tiny valid RDB (version 10): one key, EOF opcode, CRC-64.
fn tiny_rdb() -> Vec<u8> {
    let mut v = b"REDIS0010".to_vec();
    v.extend_from_slice(&[0xfe, 0, 0, 1, b'k', 1, b'v', 0xff]);
    let crc = strata::sources::redis::rdb::crc64(0, &v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

#[test]
fn snapshot_failing_its_checksum_is_not_stored() {
    let mut rdb = tiny_rdb();
    rdb[12] ^= 0x01; // the key's name: still parseable, checksum wrong
    let mut payload = format!("${}\r\n", rdb.len()).into_bytes();
    payload.extend_from_slice(&rdb);
    let port = fake_redis(payload);
    let s = setup("redis-crc", &format!("redis://127.0.0.1:{port}"));
    let o = s.run(&["backup", "cache"]).expect_code(4);
    assert!(o.stderr.contains("checksum mismatch"), "{o}");
    assert!(s.list_ids().is_empty());
    let objects = s.repo_dir().join("backups/cache");
    let left: Vec<_> = walk(&objects);
    assert!(left.is_empty(), "objects left behind: {left:?}");
}

#[test]
fn snapshot_cut_short_is_not_stored() {
    // Diskless framing; the connection closes before the end mark.
    let rdb = tiny_rdb();
    let mut payload = format!("$EOF:{}\r\n", "m".repeat(40)).into_bytes();
    payload.extend_from_slice(&rdb[..10]);
    let port = fake_redis(payload);
    let s = setup("redis-cut", &format!("redis://127.0.0.1:{port}"));
    let o = s.run(&["backup", "cache"]).expect_code(5);
    assert!(o.stderr.contains("in the middle of the snapshot"), "{o}");
    assert!(s.list_ids().is_empty());
    assert!(walk(&s.repo_dir().join("backups/cache")).is_empty());
}

#[test]
fn fake_diskless_snapshot_is_stored() {
    // The mark framing, split from the data only by the server's writes.
    let rdb = tiny_rdb();
    let mark = "0123456789abcdefghij0123456789abcdefghij";
    let mut payload = format!("$EOF:{mark}\r\n").into_bytes();
    payload.extend_from_slice(&rdb);
    payload.extend_from_slice(mark.as_bytes());
    let port = fake_redis(payload);
    let s = setup("redis-mark", &format!("redis://127.0.0.1:{port}"));
    let b = s.backup("cache");
    assert_eq!(b["plain_bytes"], rdb.len() as u64);
    let out = s.dir.join("tiny.rdb");
    s.run(&["restore", "cache", "--to-file", out.to_str().unwrap()])
        .ok();
    assert_eq!(fs::read(&out).unwrap(), rdb);
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

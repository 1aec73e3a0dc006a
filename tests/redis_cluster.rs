//! Redis Cluster sources (issue 17 item 2) end to end, against real
//! clusters on loopback: a three-master cluster (made with `redis-cli
//! --cluster create`) filled with keys of every type, with TTLs, across all
//! slots, is backed up as one backup (a snapshot per master, the slot map
//! and the skew in the manifest); restored into a cluster of another shape
//! (two masters), into one standalone server and as per-shard RDB files
//! (each loaded into a standalone redis-server), with key digests (type,
//! value, TTL) compared exactly; verified; drilled. A backup while a slot
//! is MIGRATING is refused. Logical shards, a single server's backup into
//! a cluster, damage found by verify, and a TLS cluster over `rediss://`.

mod common;

use std::fs;

use common::cli::Strata;
use common::redis::{RedisCluster, RedisServer, TestPki, Value};

fn setup(name: &str, url: &str) -> Strata {
    let s = Strata::local(name, &[]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += &format!("\n[sources.cache]\nkind = \"redis\"\nurl = \"{url}\"\n");
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s
}

/// Keys of every type and encoding the RDB reader must frame: strings
/// (int-encoded and LZF-compressed keys and values, a 1 MB incompressible
/// one), small and large hashes, sets (intset, listpack, hashtable),
/// sorted sets (listpack, skiplist), lists, a stream with a consumer
/// group and pending entries, hash tags, and TTLs on several types.
fn fill(c: &RedisCluster) {
    let ok = |args: &[&str]| {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        c.ok(&a)
    };
    for i in 0..400 {
        ok(&["SET", &format!("str:{i}"), &format!("value {i}")]);
    }
    for i in 0..40 {
        // integer keys are stored int-encoded in the RDB
        ok(&["SET", &(100_000 + i * 7919).to_string(), "int key"]);
        // long compressible keys and values are LZF-compressed
        ok(&[
            "SET",
            &format!("long:{}:{i}", "k".repeat(60)),
            &"v".repeat(300),
        ]);
        ok(&["HSET", &format!("h:{i}"), "a", "1", "b", &i.to_string()]);
        ok(&["SADD", &format!("ints:{i}"), "1", "2", &i.to_string()]);
        ok(&["SADD", &format!("words:{i}"), "a", "b", &format!("w{i}")]);
        ok(&["ZADD", &format!("z:{i}"), "1.5", "x", "-2", "y"]);
        ok(&["RPUSH", &format!("l:{i}"), "a", "b", &i.to_string()]);
        ok(&["SET", &format!("{{user:{i}}}:name"), &format!("n{i}")]);
        ok(&["SET", &format!("{{user:{i}}}:mail"), &format!("m{i}")]);
    }
    let mut big_hash = vec!["HSET".to_string(), "big:hash".to_string()];
    let mut big_set = vec!["SADD".to_string(), "big:set".to_string()];
    let mut big_z = vec!["ZADD".to_string(), "big:zset".to_string()];
    for i in 0..300 {
        big_hash.extend([format!("f{i}"), format!("value {i}")]);
        big_set.push(format!("member {i}"));
        big_z.extend([format!("{i}.25"), format!("m{i}")]);
    }
    for cmd in [&big_hash, &big_set, &big_z] {
        let a: Vec<&str> = cmd.iter().map(String::as_str).collect();
        ok(&a);
    }
    for i in 0..50 {
        ok(&["XADD", "events", "*", "n", &i.to_string()]);
    }
    ok(&["XGROUP", "CREATE", "events", "g1", "0"]);
    ok(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "alice",
        "COUNT",
        "5",
        "STREAMS",
        "events",
        ">",
    ]);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    c.ok(&[b"SET", b"big", &big]);
    ok(&["EXPIRE", "str:1", "3600"]);
    ok(&["PEXPIRE", "h:3", "86400123"]);
    ok(&["EXPIRE", "big:zset", "7200"]);
    ok(&["EXPIRE", "l:7", "5000"]);
    ok(&["SET", "ttl:s", "x", "PX", "600000"]);
}

type Digest = common::redis::KeyDigest;

/// The same keys, types and values, every TTL within `tol` ms.
#[track_caller]
fn assert_same(want: &Digest, got: &Digest, tol: i64) {
    assert_eq!(got.0.len(), want.0.len(), "key count");
    for (k, v) in &want.0 {
        assert_eq!(
            got.0.get(k),
            Some(v),
            "key {:?} differs",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(
        want.1.keys().collect::<Vec<_>>(),
        got.1.keys().collect::<Vec<_>>(),
        "keys with a TTL"
    );
    for (k, p) in &want.1 {
        let q = got.1[k];
        assert!((p - q).abs() <= tol, "TTL of {k:?}: {p} ms, then {q} ms");
    }
}

#[test]
fn cluster_backup_restores_into_another_shape_one_server_and_shard_files() {
    let src = RedisCluster::start("cl-src", 3);
    fill(&src);
    let want = src.digest();
    let n = want.0.len();
    for node in &src.nodes {
        assert!(
            !node.conn().digest_db().0.is_empty(),
            "keys on every master"
        );
    }

    let s = setup("redis-cluster", &src.url());
    let o = s.run(&["--json", "backup", "cache"]).ok();
    let b = o.json();
    // the manifest records the slot map, the keys per shard and the skew
    let mkey = b["manifest"].as_str().unwrap();
    let bytes = fs::read(s.repo_dir().join(mkey)).unwrap();
    let ids = strata::keys::load_identities(&s.key).unwrap();
    let m = strata::catalog::manifest::ManifestFile::parse(mkey, &bytes)
        .unwrap()
        .open(mkey, &ids)
        .unwrap();
    let r = m.redis.expect("redis facts");
    let cl = r.cluster.expect("a cluster backup");
    assert_eq!(cl.shards.len(), 3);
    assert_eq!(m.objects.len(), 3);
    assert_eq!(cl.read_with, "CLUSTER SHARDS");
    let slots: usize = cl
        .shards
        .iter()
        .flat_map(|s| s.slots.iter().map(|[a, b]| usize::from(b - a) + 1))
        .sum();
    assert_eq!(slots, 16384);
    assert_eq!(cl.shards.iter().map(|s| s.keys).sum::<u64>(), n as u64);
    assert!(cl.skew_ms < 10_000, "skew {}", cl.skew_ms);
    // verify reads every shard, counts its keys and checks their slots
    let o = s.run(&["--json", "verify", "--read-data"]).ok();
    let v = o.json();
    let checked = v["backups"][0]["shards"]
        .as_array()
        .expect("shards")
        .clone();
    assert_eq!(checked.len(), 3, "{o}");
    for (c, sh) in checked.iter().zip(&cl.shards) {
        assert_eq!(c["keys_read"].as_u64(), Some(sh.keys), "{o}");
        assert!(c["problems"].as_array().unwrap().is_empty(), "{o}");
    }

    // into a fresh cluster of another shape: each key to its slot's owner
    let dst = RedisCluster::start("cl-dst", 2);
    let o = s
        .run(&["--json", "restore", "cache", "--into", &dst.url()])
        .ok();
    assert_eq!(o.json()["counts_match"], true, "{o}");
    assert_same(&want, &dst.digest(), 10_000);
    // not over keys without --replace
    s.run(&["restore", "cache", "--into", &dst.url()])
        .expect_code(8);

    // into one standalone server: every shard's keys in database 0
    let one = RedisServer::start("cl-one", &[]);
    s.run(&["restore", "cache", "--into", &one.url()]).ok();
    assert_same(&want, &one.conn().digest_db(), 10_000);

    // per-shard RDB files and the slot map; each file loads into a plain
    // redis-server and holds exactly its master's keys
    let dir = s.dir.join("shards");
    let o = s
        .run(&["restore", "cache", "--to-dir", dir.to_str().unwrap()])
        .ok();
    let map: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("cluster-slots.json")).unwrap()).unwrap();
    let shards = map["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "{o}");
    let mut union = Digest::default();
    for sh in shards {
        let file = sh["file"].as_str().unwrap();
        assert!(
            file.starts_with("shard-") && file.contains("slots-"),
            "{file}"
        );
        assert!(o.stdout.contains(file), "{o}");
        let port: u16 = sh["address"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let node = src.nodes.iter().find(|n| n.port == port).unwrap();
        let check = RedisServer::start(
            "cl-file",
            &["--dir", dir.to_str().unwrap(), "--dbfilename", file],
        );
        let got = check.conn().digest_db();
        assert_same(&node.conn().digest_db(), &got, 10_000);
        union.0.extend(got.0);
        union.1.extend(got.1);
    }
    assert_same(&want, &union, 10_000);
    // never over existing files without --force
    let o = s
        .run(&["restore", "cache", "--to-dir", dir.to_str().unwrap()])
        .expect_code(8);
    assert!(o.stderr.contains("already exists"), "{o}");
    s.run(&[
        "restore",
        "cache",
        "--to-dir",
        dir.to_str().unwrap(),
        "--force",
    ])
    .ok();
    // a cluster's backup is not one file
    let o = s
        .run(&[
            "restore",
            "cache",
            "--to-file",
            s.dir.join("x.rdb").to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(o.stderr.contains("--to-dir"), "{o}");

    // a drill restores every shard into its sandbox server and counts keys
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
    assert_eq!(o.json()["passed"], true, "{o}");
    assert!(o.stdout.contains("keys per shard"), "{o}");
    assert!(
        o.stdout
            .contains(&format!("{n} keys loaded of {n} recorded")),
        "{o}"
    );

    // restore --all: a directory restore_to gets the per-shard files
    let all = s.dir.join("all");
    let o = s
        .run(&[
            "restore",
            "--all",
            "--latest",
            "--target-dir",
            all.to_str().unwrap(),
        ])
        .ok();
    let files: Vec<String> = fs::read_dir(all.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f == "cluster-slots.json"),
        "{files:?}\n{o}"
    );
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".rdb")).count(),
        3,
        "{files:?}"
    );
}

/// issue 17 item 2: a backup while a slot is being migrated (resharding)
/// is refused after a few checks, with a hint, and nothing is stored; once
/// the slot is stable again the backup goes through.
#[test]
fn backup_during_a_slot_migration_is_refused() {
    let src = RedisCluster::start("cl-mig", 3);
    for i in 0..100 {
        src.ok(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
    }
    let s = setup("redis-cluster-mig", &src.url());
    let owner = src.owner(b"k1");
    let Value::Int(slot) = src.nodes[0].conn().ok(&["CLUSTER", "KEYSLOT", "k1"]) else {
        panic!("KEYSLOT")
    };
    let other = src.nodes.iter().find(|n| n.port != owner).unwrap();
    let Value::Str(other_id) = other.conn().ok(&["CLUSTER", "MYID"]) else {
        panic!("MYID")
    };
    let other_id = String::from_utf8(other_id).unwrap();
    let mut c = common::redis::Conn::open(owner);
    c.ok(&[
        "CLUSTER",
        "SETSLOT",
        &slot.to_string(),
        "MIGRATING",
        &other_id,
    ]);
    let o = s.run(&["backup", "cache"]).expect_code(5);
    assert!(o.stderr.contains("not settled"), "{o}");
    assert!(o.stderr.contains("migration"), "{o}");
    assert!(o.stderr.contains("HINT:"), "{o}");
    assert!(s.list_ids().is_empty(), "nothing stored");
    c.ok(&["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"]);
    s.run(&["backup", "cache"]).ok();
    assert_eq!(s.list_ids().len(), 1);

    // an ACL user (on every node) that may not run CLUSTER SHARDS: the slot
    // map is read with CLUSTER NODES, the credentials used on every master
    for n in &src.nodes {
        n.conn().ok(&[
            "ACL",
            "SETUSER",
            "bk",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-cluster|shards",
        ]);
    }
    let url = format!("redis://bk:pw@127.0.0.1:{}", src.nodes[2].port);
    let s = setup("redis-cluster-acl", &url);
    let b = s.run(&["--json", "backup", "cache"]).ok().json();
    let mkey = b["manifest"].as_str().unwrap();
    let bytes = fs::read(s.repo_dir().join(mkey)).unwrap();
    let ids = strata::keys::load_identities(&s.key).unwrap();
    let m = strata::catalog::manifest::ManifestFile::parse(mkey, &bytes)
        .unwrap()
        .open(mkey, &ids)
        .unwrap();
    let cl = m.redis.unwrap().cluster.unwrap();
    assert_eq!(cl.read_with, "CLUSTER NODES");
    assert_eq!(cl.shards.iter().map(|s| s.keys).sum::<u64>(), 100);
    // a wrong password is refused naming the cause
    let bad = format!("redis://bk:nope@127.0.0.1:{}", src.nodes[0].port);
    let s = setup("redis-cluster-acl-bad", &bad);
    let o = s.run(&["backup", "cache"]).expect_code(5);
    assert!(o.stderr.contains("WRONGPASS"), "{o}");
}

/// A cluster backed up with `mode = "logical"` (SCAN + DUMP on every
/// master) restores exactly into a cluster of another shape (four
/// masters) and as per-shard RDB files; a single server's backup (keys in
/// database 0) restores into a cluster, each key to its slot's master;
/// `--replace` empties a target cluster first; a damaged shard object is
/// found by verify (exit 4).
#[test]
fn logical_shards_single_server_into_a_cluster_and_damage() {
    let src = RedisCluster::start("cl-lsrc", 3);
    fill(&src);
    let want = src.digest();
    let single = RedisServer::start("cl-single", &[]);
    let mut c = single.conn();
    for i in 0..300 {
        c.ok(&["SET", &format!("one:{i}"), &format!("v{i}")]);
    }
    c.ok(&["HSET", "one:h", "f", "v"]);
    c.ok(&["EXPIRE", "one:h", "3600"]);
    let single_want = c.digest_db();

    let s = setup("redis-cluster-logical", &src.url());
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg = cfg.replace(
        &format!("url = \"{}\"\n", src.url()),
        &format!("url = \"{}\"\nmode = \"logical\"\n", src.url()),
    );
    cfg += &format!(
        "\n[sources.single]\nkind = \"redis\"\nurl = \"{}\"\n",
        single.url()
    );
    fs::write(&s.config, cfg).unwrap();
    let b = s.run(&["--json", "backup", "cache"]).ok().json();
    let id = b["id"].as_str().unwrap().to_string();
    for i in 0..3 {
        assert!(
            s.repo_dir()
                .join(format!("backups/cache/{id}/shard-{i:02}.rlog"))
                .is_file()
        );
    }
    s.run(&["backup", "single"]).ok();
    s.run(&["verify", "--read-data"]).ok();

    let dst = RedisCluster::start("cl-ldst", 4);
    s.run(&["restore", "cache", "--into", &dst.url()]).ok();
    assert_same(&want, &dst.digest(), 10_000);

    // per-shard files made from logical shards load into plain servers
    let dir = s.dir.join("lshards");
    s.run(&["restore", "cache", "--to-dir", dir.to_str().unwrap()])
        .ok();
    let map: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("cluster-slots.json")).unwrap()).unwrap();
    let mut union = Digest::default();
    for sh in map["shards"].as_array().unwrap() {
        let file = sh["file"].as_str().unwrap();
        let check = RedisServer::start(
            "cl-lfile",
            &["--dir", dir.to_str().unwrap(), "--dbfilename", file],
        );
        let got = check.conn().digest_db();
        assert_eq!(got.0.len() as u64, sh["keys"].as_u64().unwrap());
        union.0.extend(got.0);
        union.1.extend(got.1);
    }
    assert_same(&want, &union, 10_000);

    // a single server's RDB split by slot into the four-master cluster,
    // after --replace emptied it
    let o = s
        .run(&["restore", "single", "--into", &dst.url()])
        .expect_code(8);
    assert!(o.stderr.contains("not empty"), "{o}");
    s.run(&["restore", "single", "--into", &dst.url(), "--replace"])
        .ok();
    assert_same(&single_want, &dst.digest(), 10_000);
    for n in &dst.nodes {
        assert!(!n.conn().digest_db().0.is_empty(), "keys on every master");
    }

    // damage in one shard's object
    let obj = s
        .repo_dir()
        .join(format!("backups/cache/{id}/shard-01.rlog"));
    let good = fs::read(&obj).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    fs::write(&obj, &bad).unwrap();
    let o = s.run(&["verify", "--read-data"]).expect_code(4);
    assert!(o.stdout.contains("shard-01"), "{o}");
    fs::write(&obj, &good).unwrap();
}

/// A cluster speaking TLS (`tls-cluster yes`: the nodes announce their
/// TLS ports) backed up over `rediss://` with the URL's `cacert` applied
/// to every node, and restored into a plain cluster.
#[test]
fn tls_cluster_over_rediss() {
    let pki = TestPki::new();
    let src = RedisCluster::start_tls("cl-tls", 3, &pki);
    for i in 0..200 {
        src.ok(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
    }
    src.ok(&[b"HSET", b"h", b"f", b"v"]);
    let want = src.digest();
    let url = src.nodes[1].tls_url("", &format!("?cacert={}", pki.path("ca.crt").display()));
    let s = setup("redis-cluster-tls", &url);
    let b = s.run(&["--json", "backup", "cache"]).ok().json();
    let id = b["id"].as_str().unwrap().to_string();
    for i in 0..3 {
        assert!(
            s.repo_dir()
                .join(format!("backups/cache/{id}/shard-{i:02}.rdb"))
                .is_file()
        );
    }
    let dst = RedisCluster::start("cl-tls-dst", 2);
    s.run(&["restore", "cache", "--into", &dst.url()]).ok();
    assert_same(&want, &dst.digest(), 10_000);
}

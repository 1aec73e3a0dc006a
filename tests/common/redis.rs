//! Redis test servers and a tiny synchronous RESP client.
//!
//! Each server is a private `redis-server` on `127.0.0.1`, a free port and
//! its own temp dir, persistence off and `repl-diskless-sync-delay 0` (the
//! default 5 s would add 5 s to every snapshot). Servers are stopped on
//! drop and, as a safety net, when the test binary exits. A TLS server
//! ([`RedisServer::start_tls`]) also has a `tls-port`, with certificates
//! from a test CA ([`TestPki`], made with the `openssl` CLI).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, kill_at_exit};

/// A running redis-server owned by a test.
pub struct RedisServer {
    /// The plain port (the harness's own connections use it).
    pub port: u16,
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    pub dir: PathBuf,
    child: Child,
    _temp: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server; `extra` are more `--name value` arguments. A
    /// server that dies while starting (its port taken meanwhile) is
    /// started again on another port.
    pub fn start(name: &str, extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(name, extra, false)
    }

    /// Starts a server that also listens with TLS (`tls-port`), its
    /// certificate and key `cert`, trusting client certificates signed by
    /// `ca`; `client_certs`: whether clients must present one
    /// (`tls-auth-clients`). The plain port stays open for the harness.
    pub fn start_tls(
        name: &str,
        cert: &Path,
        key: &Path,
        ca: &Path,
        client_certs: bool,
        extra: &[&str],
    ) -> RedisServer {
        let mut args: Vec<String> = vec![
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.display().to_string(),
            "--tls-auth-clients".into(),
            if client_certs { "yes" } else { "no" }.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_inner(name, &args, true)
    }

    fn start_inner(name: &str, extra: &[&str], tls: bool) -> RedisServer {
        let temp = tempfile::Builder::new()
            .prefix(&format!("strata-redis-{name}-"))
            .tempdir()
            .expect("temp dir");
        let dir = temp.path().to_path_buf();
        for attempt in 1.. {
            let port = free_port();
            let tls_port = tls.then(free_port);
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(
                    tls_port
                        .map(|p| vec!["--tls-port".to_string(), p.to_string()])
                        .unwrap_or_default(),
                )
                .arg("--dir")
                .arg(&dir)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            kill_at_exit(child.id());
            if wait_ready_child(port, &mut child) {
                return RedisServer {
                    port,
                    tls_port,
                    dir,
                    child,
                    _temp: temp,
                };
            }
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            assert!(attempt < 3, "redis-server {name} did not start:\n{log}");
            eprintln!(
                "redis-server {name} on port {port} exited while starting; again on another port"
            );
        }
        unreachable!()
    }

    /// A server standing in for a managed service (ElastiCache, MemoryDB,
    /// Azure Cache): `SYNC` and `PSYNC` renamed away, so the replication
    /// protocol is refused (`ERR unknown command`). `extra` as for
    /// [`start`](Self::start).
    pub fn start_without_sync(name: &str, extra: &[&str]) -> RedisServer {
        let mut args = vec![
            "--rename-command",
            "SYNC",
            "",
            "--rename-command",
            "PSYNC",
            "",
        ];
        args.extend_from_slice(extra);
        RedisServer::start(name, &args)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://[userinfo@]127.0.0.1:TLS_PORT[query]`.
    pub fn tls_url(&self, userinfo: &str, query: &str) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://{userinfo}127.0.0.1:{port}{query}")
    }

    pub fn conn(&self) -> Conn {
        Conn::open(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a server on `port` answers and has loaded its data.
pub fn wait_ready(port: u16) {
    let began = Instant::now();
    while !ready(port) {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "redis on port {port} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_ready`] for a server we started: false as soon as it exited.
fn wait_ready_child(port: u16, child: &mut Child) -> bool {
    let began = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ready(port) {
            // answered by our server, not by another one that took the port
            return child.try_wait().is_ok_and(|st| st.is_none());
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "redis on port {port} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `INFO persistence` probe: answers and has loaded its data. Any
/// I/O error (refused, reset while the server starts) is "not yet".
fn ready(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = BufReader::new(s);
    if r.get_mut()
        .write_all(b"*2\r\n$4\r\nINFO\r\n$11\r\npersistence\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = String::new();
    let Ok(_) = r.read_line(&mut head) else {
        return false;
    };
    let Some(n) = head
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<usize>().ok())
    else {
        return false;
    };
    let mut body = vec![0u8; n + 2];
    r.read_exact(&mut body).is_ok() && String::from_utf8_lossy(&body).contains("loading:0")
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Nil,
    Status(String),
    Err(String),
    Int(i64),
    Str(Vec<u8>),
    Arr(Vec<Value>),
}

/// One connection; every command waits for its reply.
pub struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        Conn::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect to redis"))
    }

    fn from_stream(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    /// Sends a command of binary-safe arguments.
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> Value {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&req).expect("send to redis");
        self.read()
    }

    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd_bytes(&a)
    }

    /// A command that must not fail.
    #[track_caller]
    pub fn ok(&mut self, args: &[&str]) -> Value {
        let v = self.cmd(args);
        if let Value::Err(e) = &v {
            panic!("redis {args:?}: {e}");
        }
        v
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read from redis");
        let line = line.trim_end_matches("\r\n");
        let (t, rest) = line.split_at(1);
        match t {
            "+" => Value::Status(rest.into()),
            "-" => Value::Err(rest.into()),
            ":" => Value::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Value::Nil;
                }
                let mut b = vec![0; n as usize + 2];
                self.r.read_exact(&mut b).unwrap();
                b.truncate(n as usize);
                Value::Str(b)
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Value::Nil;
                }
                Value::Arr((0..n).map(|_| self.read()).collect())
            }
            _ => panic!("bad RESP line {line:?}"),
        }
    }

    /// Every key of every database as `(db, key) → (type, content, has a
    /// TTL)`, read type by type; sets sorted, TTLs reduced to "has one"
    /// (they tick).
    pub fn dump_all(&mut self) -> BTreeMap<(u32, Vec<u8>), (String, Value, bool)> {
        let mut out = BTreeMap::new();
        for db in 0..16u32 {
            self.ok(&["SELECT", &db.to_string()]);
            let Value::Arr(keys) = self.ok(&["KEYS", "*"]) else {
                panic!("KEYS")
            };
            for k in keys {
                let Value::Str(k) = k else { panic!("key") };
                let Value::Status(t) = self.cmd_bytes(&[b"TYPE", &k]) else {
                    panic!("TYPE")
                };
                let content = match t.as_str() {
                    "string" => self.cmd_bytes(&[b"GET", &k]),
                    "hash" => sorted(self.cmd_bytes(&[b"HGETALL", &k]), 2),
                    "set" => sorted(self.cmd_bytes(&[b"SMEMBERS", &k]), 1),
                    "zset" => self.cmd_bytes(&[b"ZRANGE", &k, b"0", b"-1", b"WITHSCORES"]),
                    "list" => self.cmd_bytes(&[b"LRANGE", &k, b"0", b"-1"]),
                    "stream" => self.cmd_bytes(&[b"XRANGE", &k, b"-", b"+"]),
                    other => panic!("unexpected type {other}"),
                };
                let Value::Int(ttl) = self.cmd_bytes(&[b"TTL", &k]) else {
                    panic!("TTL")
                };
                out.insert((db, k), (t, content, ttl > 0));
            }
        }
        self.ok(&["SELECT", "0"]);
        out
    }
}

/// An array sorted in groups of `n` (hash pairs, set members).
fn sorted(v: Value, n: usize) -> Value {
    let Value::Arr(items) = v else { return v };
    let mut groups: Vec<Vec<Value>> = items.chunks(n).map(<[Value]>::to_vec).collect();
    groups.sort();
    Value::Arr(groups.into_iter().flatten().collect())
}

/// Fills a server with every data type across several databases: strings
/// (one of 5 MB), hashes, sets, sorted sets, lists, a stream, keys with
/// TTLs. Returns the expected key count per database.
pub fn fill(c: &mut Conn) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    // db 0: strings, a big value, TTLs.
    c.ok(&["SELECT", "0"]);
    for i in 0..200 {
        c.ok(&["SET", &format!("str:{i}"), &format!("value {i}")]);
    }
    // xorshift: incompressible, so Redis stores it whole (LZF gains nothing).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    c.cmd_bytes(&[b"SET", b"big", &big]);
    c.ok(&["SET", "ttl:a", "expires", "EX", "3600"]);
    c.ok(&["SET", "ttl:b", "expires too", "PX", "7200000"]);
    c.ok(&["SET", "bin\x00key", "\u{1}\u{2}binary"]);
    counts.insert(0, 204);
    // db 1: hashes and sets.
    c.ok(&["SELECT", "1"]);
    for i in 0..50 {
        c.ok(&[
            "HSET",
            &format!("user:{i}"),
            "name",
            &format!("n{i}"),
            "age",
            &i.to_string(),
        ]);
        c.ok(&["SADD", &format!("tags:{i}"), "a", "b", &format!("t{i}")]);
    }
    c.ok(&["HSET", "ttl:hash", "f", "v"]);
    c.ok(&["EXPIRE", "ttl:hash", "3600"]);
    counts.insert(1, 101);
    // db 3: sorted sets, lists, a stream.
    c.ok(&["SELECT", "3"]);
    for i in 0..20 {
        c.ok(&[
            "ZADD",
            &format!("rank:{i}"),
            "1.5",
            "x",
            "-2",
            "y",
            &i.to_string(),
            "z",
        ]);
        c.ok(&[
            "RPUSH",
            &format!("queue:{i}"),
            "first",
            "second",
            &format!("n{i}"),
        ]);
    }
    for i in 0..100 {
        c.ok(&["XADD", "events", "*", "n", &i.to_string(), "kind", "test"]);
    }
    counts.insert(3, 41);
    c.ok(&["SELECT", "0"]);
    counts
}

/// A throwaway PKI made with the `openssl` CLI: a CA strata is told to
/// trust, another it is not, and certificates (P-256 keys, two days):
///
/// - `server`: for `localhost` and `127.0.0.1`, signed by the CA;
/// - `rogue-server`: the same names, signed by the other CA;
/// - `named-server`: only for `db.internal`, signed by the CA;
/// - `client`: a client certificate signed by the CA;
/// - `rogue-client`: one signed by the other CA.
///
/// Files: `NAME.crt` and `NAME.key`; the CAs are `ca.crt`, `rogue-ca.crt`.
pub struct TestPki {
    pub dir: PathBuf,
    _temp: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let temp = tempfile::Builder::new()
            .prefix("strata-pki-")
            .tempdir()
            .expect("temp dir");
        let dir = temp.path().to_path_buf();
        let pki = TestPki { dir, _temp: temp };
        pki.ca("ca", "strata test CA");
        pki.ca("rogue-ca", "some other CA");
        let server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth";
        pki.leaf("server", "ca", "localhost", server);
        pki.leaf("rogue-server", "rogue-ca", "localhost", server);
        pki.leaf(
            "named-server",
            "ca",
            "db.internal",
            "subjectAltName=DNS:db.internal\nextendedKeyUsage=serverAuth",
        );
        let client = "extendedKeyUsage=clientAuth";
        pki.leaf("client", "ca", "strata", client);
        pki.leaf("rogue-client", "rogue-ca", "strata", client);
        pki
    }

    /// `NAME.crt` or `NAME.key` (give the file name).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn ca(&self, name: &str, cn: &str) {
        super::pki::make_ca(&self.dir, name, cn);
    }

    fn leaf(&self, name: &str, ca: &str, cn: &str, ext: &str) {
        super::pki::make_leaf(
            &self.dir,
            name,
            ca,
            cn,
            &format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}\n"),
        );
    }
}

/// A Redis Cluster on loopback: `masters` servers in cluster mode, each on
/// its own port and directory (its own bus port, `cluster-port`), the
/// 16384 slots split evenly. Three or more are joined with `redis-cli
/// --cluster create --cluster-yes`, as an operator would; fewer (which
/// redis-cli refuses) by hand with `CLUSTER ADDSLOTSRANGE` and `CLUSTER
/// MEET`. No replicas. Stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Connections by port, for [`RedisCluster::ok`].
    conns: std::cell::RefCell<BTreeMap<u16, Conn>>,
}

impl RedisCluster {
    pub fn start(name: &str, masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, |i, args| {
            RedisServer::start(&format!("{name}-{i}"), args)
        })
    }

    /// A cluster whose nodes also listen with TLS (`tls-port`, the `server`
    /// certificate of `pki`) and speak TLS among themselves and to clients
    /// by the ports they announce (`tls-cluster yes`), as managed services
    /// with encryption in transit do. Joined by hand.
    pub fn start_tls(name: &str, masters: usize, pki: &TestPki) -> RedisCluster {
        // the bus always checks the connecting node's certificate: nodes
        // connect with the client certificate
        let client = [
            pki.path("client.crt").display().to_string(),
            pki.path("client.key").display().to_string(),
        ];
        RedisCluster::start_with(masters, |i, args| {
            let mut a = args.to_vec();
            a.extend(["--tls-cluster", "yes", "--tls-client-cert-file", &client[0]]);
            a.extend(["--tls-client-key-file", &client[1]]);
            RedisServer::start_tls(
                &format!("{name}-{i}"),
                &pki.path("server.crt"),
                &pki.path("server.key"),
                &pki.path("ca.crt"),
                false,
                &a,
            )
        })
    }

    fn start_with(masters: usize, start: impl Fn(usize, &[&str]) -> RedisServer) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|i| {
                let bus = free_port().to_string();
                start(
                    i,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            })
            .collect();
        let tls = nodes[0].tls_port.is_some();
        if masters >= 3 && !tls {
            let addrs: Vec<String> = nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect();
            let out = Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .expect("redis-cli must be installed");
            assert!(
                out.status.success(),
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            let per = 16384 / masters;
            for (i, n) in nodes.iter().enumerate() {
                let a = i * per;
                let b = if i + 1 == masters { 16383 } else { a + per - 1 };
                n.conn()
                    .ok(&["CLUSTER", "ADDSLOTSRANGE", &a.to_string(), &b.to_string()]);
            }
            let mut first = nodes[0].conn();
            for n in &nodes[1..] {
                let bus = bus_port(&mut n.conn());
                let port = n.tls_port.unwrap_or(n.port).to_string();
                first.ok(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
            }
        }
        let c = RedisCluster {
            nodes,
            conns: Default::default(),
        };
        c.wait_ok();
        c
    }

    /// Waits until every node sees every other, all slots assigned, state ok.
    pub fn wait_ok(&self) {
        let began = Instant::now();
        let n = self.nodes.len();
        loop {
            let ok = self.nodes.iter().all(|node| {
                let Value::Str(info) = node.conn().ok(&["CLUSTER", "INFO"]) else {
                    return false;
                };
                let info = String::from_utf8_lossy(&info).to_string();
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains(&format!("cluster_known_nodes:{n}\r"))
            });
            if ok {
                return;
            }
            if began.elapsed() > Duration::from_secs(30) {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let log =
                            std::fs::read_to_string(n.dir.join("redis.log")).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        format!(
                            "port {}:\n{}",
                            n.port,
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!("the cluster did not become ok:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The port of the node serving `key`'s slot.
    pub fn owner(&self, key: &[u8]) -> u16 {
        let Value::Int(slot) = self.nodes[0]
            .conn()
            .cmd_bytes(&[b"CLUSTER", b"KEYSLOT", key])
        else {
            panic!("KEYSLOT")
        };
        for n in &self.nodes {
            let Value::Str(nodes) = n.conn().ok(&["CLUSTER", "NODES"]) else {
                panic!("NODES")
            };
            let text = String::from_utf8_lossy(&nodes).to_string();
            let me = text.lines().find(|l| l.contains("myself")).unwrap();
            if owns(me, slot as u16) {
                return n.port;
            }
        }
        panic!("no owner of slot {slot}")
    }

    /// Sends a command to the node owning its key (`args[1]`), following
    /// `MOVED`.
    #[track_caller]
    pub fn ok(&self, args: &[&[u8]]) -> Value {
        let mut port = self.nodes[0].port;
        for _ in 0..3 {
            let v = self
                .conns
                .borrow_mut()
                .entry(port)
                .or_insert_with(|| Conn::open(port))
                .cmd_bytes(args);
            match &v {
                Value::Err(e) if e.starts_with("MOVED") => {
                    let to: u16 = e.rsplit(':').next().unwrap().parse().unwrap();
                    // a TLS cluster redirects to TLS ports; the harness
                    // speaks plain
                    port = self
                        .nodes
                        .iter()
                        .find(|n| n.tls_port == Some(to))
                        .map_or(to, |n| n.port);
                }
                Value::Err(e) => panic!("redis {args:?}: {e}"),
                _ => return v,
            }
        }
        panic!("too many redirections")
    }

    /// Every key of every node: `(key) → (type, content, has a TTL)`, and
    /// the PTTL of those with one.
    pub fn digest(&self) -> KeyDigest {
        let mut keys = BTreeMap::new();
        let mut ttls = BTreeMap::new();
        for n in &self.nodes {
            let (k, t) = n.conn().digest_db();
            keys.extend(k);
            ttls.extend(t);
        }
        (keys, ttls)
    }
}

/// Every key as `key → (type, content, has a TTL)`, and the PTTL of those
/// with one.
pub type KeyDigest = (
    BTreeMap<Vec<u8>, (String, Value, bool)>,
    BTreeMap<Vec<u8>, i64>,
);

/// Whether a `CLUSTER NODES` line's slots include `slot`.
fn owns(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|s| {
        if s.starts_with('[') {
            return false;
        }
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&slot)
    })
}

/// The cluster bus port of the node `c` is connected to.
fn bus_port(c: &mut Conn) -> String {
    let Value::Arr(v) = c.ok(&["CONFIG", "GET", "cluster-port"]) else {
        panic!("CONFIG GET")
    };
    let Value::Str(p) = &v[1] else { panic!("port") };
    String::from_utf8_lossy(p).to_string()
}

impl Conn {
    /// The current database's keys (no `SELECT`: a cluster node has only
    /// database 0) as `key → (type, content, has a TTL)`, and the PTTL of
    /// every key with one.
    pub fn digest_db(&mut self) -> KeyDigest {
        let mut out = BTreeMap::new();
        let mut ttls = BTreeMap::new();
        let Value::Arr(keys) = self.ok(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        for k in keys {
            let Value::Str(k) = k else { panic!("key") };
            let Value::Status(t) = self.cmd_bytes(&[b"TYPE", &k]) else {
                panic!("TYPE")
            };
            let content = match t.as_str() {
                "string" => self.cmd_bytes(&[b"GET", &k]),
                "hash" => sorted(self.cmd_bytes(&[b"HGETALL", &k]), 2),
                "set" => sorted(self.cmd_bytes(&[b"SMEMBERS", &k]), 1),
                "zset" => self.cmd_bytes(&[b"ZRANGE", &k, b"0", b"-1", b"WITHSCORES"]),
                "list" => self.cmd_bytes(&[b"LRANGE", &k, b"0", b"-1"]),
                "stream" => Value::Arr(vec![
                    self.cmd_bytes(&[b"XRANGE", &k, b"-", b"+"]),
                    self.cmd_bytes(&[b"XINFO", b"GROUPS", &k]),
                ]),
                other => panic!("unexpected type {other}"),
            };
            let Value::Int(p) = self.cmd_bytes(&[b"PTTL", &k]) else {
                panic!("PTTL")
            };
            if p >= 0 {
                ttls.insert(k.clone(), p);
            }
            out.insert(k, (t, content, p >= 0));
        }
        (out, ttls)
    }
}

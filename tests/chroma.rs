//! ChromaDB exports end to end: a real `chroma run` server holding several
//! collections (cosine, l2, ip; 52,006 records of dimension 384 in all),
//! backed up by the built strata binary, restored into another server or
//! the same one, compared record by record.
//!
//! The source server is filled once per test binary and shared; tests
//! that write start their own target servers.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::chroma::{ChromaServer, SPECS, assert_same, block_on, fill, read_all, records};
use common::cli::Strata;

/// The shared, filled source server.
fn source() -> &'static ChromaServer {
    static SRC: OnceLock<ChromaServer> = OnceLock::new();
    SRC.get_or_init(|| {
        let s = ChromaServer::start("src");
        let c = s.client();
        let t = Instant::now();
        for spec in SPECS {
            fill(&c, spec);
        }
        eprintln!(
            "filled the source Chroma with {} records in {:.1?}",
            SPECS.iter().map(|s| s.records).sum::<usize>(),
            t.elapsed()
        );
        s
    })
}

/// One setup backing up the shared source, with one backup taken (the
/// export is shared by the tests that only read it).
fn shared() -> &'static (Strata, String) {
    static SHARED: OnceLock<(Strata, String)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let s = setup("chroma-shared", &source().url());
        let t = Instant::now();
        let b = s.backup("vectors");
        eprintln!("backup: {:.1?} {b}", t.elapsed());
        assert_eq!(b["kind"], "dump");
        let id = b["id"].as_str().unwrap().to_string();
        (s, id)
    })
}

/// A local-repository setup with one chroma source `vectors` at `url`.
fn setup(name: &str, url: &str) -> Strata {
    let s = Strata::local(name, &[]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += &format!("\n[sources.vectors]\nkind = \"chroma\"\nurl = \"{url}\"\n");
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s
}

fn collection_names(server: &ChromaServer) -> Vec<String> {
    block_on(server.client().collections())
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// The stored object of collection `name` in a local repository.
fn object_path(repo: &Path, name: &str) -> PathBuf {
    fn walk(d: &Path, file: &str) -> Option<PathBuf> {
        for e in fs::read_dir(d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if let Some(f) = walk(&p, file) {
                    return Some(f);
                }
            } else if p.file_name().is_some_and(|n| n == file) {
                return Some(p);
            }
        }
        None
    }
    let file = format!("chroma-{name}.jsonl");
    walk(repo, &file).unwrap_or_else(|| panic!("no object {file} under {}", repo.display()))
}

#[test]
fn export_and_restore_into_another_server() {
    let src = source();
    let (s, id) = shared();
    let list = s.run(&["--json", "list", "vectors"]).ok().json();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["kind"], "dump");
    assert_eq!(list[0]["source_kind"], "chroma");

    let target = ChromaServer::start("rt-target");
    let t = Instant::now();
    let o = s
        .run(&["--json", "restore", "vectors", "--into", &target.url()])
        .ok();
    eprintln!("restore: {:.1?}\n{}", t.elapsed(), o.stdout);
    let r = o.json();
    assert_eq!(r["records"], 52_006, "{o}");
    for c in r["collections"].as_array().unwrap() {
        assert_eq!(c["records"], c["expected"], "{o}");
        assert_eq!(c["replaced"], false);
        // the recorded neighbours, compared exactly
        assert_eq!(c["probes"], c["probes_matched"], "{o}");
        // Through the rebuilt HNSW index the answer is approximate: two
        // builds of the same data may differ (docs/chroma.md), so only the
        // small collection, answered exactly, must be identical there.
        if c["name"] == "tiny.meta" {
            assert_eq!(c["probes"], c["probes_identical"], "{o}");
        }
    }
    let probes: u64 = r["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["probes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        probes,
        5 * 3,
        "first, middle and last record of each non-empty collection\n{o}"
    );

    let mut names = collection_names(&target);
    names.sort();
    let mut want: Vec<String> = SPECS.iter().map(|s| s.name.to_string()).collect();
    want.sort();
    assert_eq!(names, want);

    let (sc, tc) = (src.client(), target.client());
    for spec in SPECS {
        // configuration and metadata came along
        let (a, b) = block_on(async {
            (
                sc.collection(spec.name).await.unwrap().unwrap(),
                tc.collection(spec.name).await.unwrap().unwrap(),
            )
        });
        assert_eq!(b.space(), spec.space, "{}", spec.name);
        let meta = |c: &strata::sources::chroma::client::CollectionDesc| {
            c.metadata
                .as_ref()
                .map(|m| serde_json::from_str::<serde_json::Value>(m.get()).unwrap())
        };
        assert_eq!(meta(&a), meta(&b), "{}: metadata", spec.name);
        assert!(meta(&b).is_some(), "{}: metadata", spec.name);
        let cfg = |c: &strata::sources::chroma::client::CollectionDesc| {
            serde_json::from_str::<serde_json::Value>(c.configuration.as_ref().unwrap().get())
                .unwrap()
        };
        assert_eq!(cfg(&a), cfg(&b), "{}: configuration", spec.name);

        let exported = read_all(&sc, spec.name);
        let restored = read_all(&tc, spec.name);
        let mut generated = records(spec);
        generated.sort_by(|a, b| a.id.cmp(&b.id));
        // l2 and ip: bit for bit. cosine: Chroma hands back vectors that
        // went through its index with about one ulp of noise (docs/chroma.md).
        let ulps = if spec.space == "cosine" { 8 } else { 0 };
        assert_same(
            &format!("{} restored vs source", spec.name),
            &exported,
            &restored,
            ulps,
        );
        // documents, uris and embeddings also equal what was inserted
        // (metadata text is the server's: compared above against the source)
        for (g, r) in generated.iter_mut().zip(&restored) {
            g.metadata = r.metadata.clone();
        }
        assert_same(
            &format!("{} restored vs inserted", spec.name),
            &generated,
            &restored,
            ulps,
        );
    }
}

#[test]
fn one_collection_refused_unless_replace() {
    let src = source();
    let (s, _) = shared();

    // into the same server: the collection exists, so it is refused
    let o = s
        .run(&[
            "restore",
            "vectors",
            "--into",
            &src.url(),
            "--collection",
            "notes-l2",
        ])
        .expect_code(8);
    assert!(
        o.stderr.contains("notes-l2") && o.stderr.contains("--replace"),
        "{o}"
    );

    // an unknown collection is a usage error naming what there is
    let o = s
        .run(&[
            "restore",
            "vectors",
            "--into",
            &src.url(),
            "--collection",
            "nope",
        ])
        .expect_code(2);
    assert!(
        o.stderr.contains("no collection nope") && o.stderr.contains("docs-l2"),
        "{o}"
    );

    let target = ChromaServer::start("one-target");
    let o = s
        .run(&[
            "--json",
            "restore",
            "vectors",
            "--into",
            &target.url(),
            "--collection",
            "notes-l2",
        ])
        .ok();
    assert_eq!(o.json()["records"], 2_000, "{o}");
    assert_eq!(collection_names(&target), vec!["notes-l2".to_string()]);

    // again: refused, nothing changed
    s.run(&[
        "restore",
        "vectors",
        "--into",
        &target.url(),
        "--collection",
        "notes-l2",
    ])
    .expect_code(8);
    // a stray record in the target, then --replace brings the backup back
    let tc = target.client();
    block_on(async {
        let c = tc.collection("notes-l2").await.unwrap().unwrap();
        let body = serde_json::json!({"ids": ["stray"], "embeddings": [vec![0.5f32; 384]]});
        tc.add(&c.id, "notes-l2", serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        assert_eq!(tc.count(&c.id, "notes-l2").await.unwrap(), 2_001);
    });
    let o = s
        .run(&[
            "--json",
            "restore",
            "vectors",
            "--into",
            &target.url(),
            "--collection",
            "notes-l2",
            "--collection",
            "tiny.meta",
            "--replace",
        ])
        .ok();
    let r = o.json();
    assert_eq!(r["records"], 2_006, "{o}");
    let ip = r["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "notes-l2")
        .unwrap();
    assert_eq!(ip["replaced"], true, "{o}");
    let mut names = collection_names(&target);
    names.sort();
    assert_eq!(names, vec!["notes-l2".to_string(), "tiny.meta".to_string()]);
    assert_same(
        "notes-l2 after --replace",
        &read_all(&src.client(), "notes-l2"),
        &read_all(&tc, "notes-l2"),
        0,
    );
    assert_same(
        "tiny.meta",
        &read_all(&src.client(), "tiny.meta"),
        &read_all(&tc, "tiny.meta"),
        0,
    );

    // --at: the newest export at or before the time, and how long before
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let o = s
        .run(&[
            "restore",
            "vectors",
            "--into",
            &target.url(),
            "--collection",
            "tiny.meta",
            "--replace",
            "--at",
            &now,
        ])
        .ok();
    assert!(
        o.stderr.contains("using dump") && o.stderr.contains("before"),
        "{o}"
    );
    let o = s
        .run(&[
            "restore",
            "vectors",
            "--into",
            &target.url(),
            "--collection",
            "tiny.meta",
            "--at",
            "2020-01-01T00:00:00Z",
        ])
        .expect_code(2);
    assert!(o.stderr.contains("the earliest is"), "{o}");
}

#[test]
fn damaged_object_is_refused_and_leaves_nothing() {
    // a copy of the shared repository, with the shared key
    let (shared, _) = shared();
    let s = Strata::local("chroma-flip", &[]);
    let copy = s.dir.join("repo");
    common::run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(shared.repo_dir())
            .arg(&copy),
    );
    let cfg = fs::read_to_string(&shared.config).unwrap().replace(
        &format!("file://{}", shared.repo_dir().display()),
        &format!("file://{}", copy.display()),
    );
    fs::write(&s.config, cfg).unwrap();
    let obj = object_path(&copy, "docs-l2");
    let mut bytes = fs::read(&obj).unwrap();
    // a few age chunks in: some records were added before the damage shows
    let at = bytes.len() / 8;
    bytes[at] ^= 0x01;
    fs::write(&obj, bytes).unwrap();

    let target = ChromaServer::start("flip-target");
    let o = s
        .run(&[
            "restore",
            "vectors",
            "--into",
            &target.url(),
            "--collection",
            "docs-l2",
        ])
        .expect_code(4);
    assert!(
        o.stderr.contains("damaged") && o.stderr.contains("docs-l2"),
        "{o}"
    );
    assert!(
        collection_names(&target).is_empty(),
        "the partial collection was deleted again: {:?}",
        collection_names(&target)
    );
    // the undamaged collections still restore
    s.run(&[
        "restore",
        "vectors",
        "--into",
        &target.url(),
        "--collection",
        "notes-l2",
    ])
    .ok();
}

/// A TCP proxy to `upstream` that cuts every connection, and stops
/// accepting, once `limit` bytes came back from upstream.
struct CuttingProxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: u16, limit: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let cut2 = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if cut2.load(Ordering::SeqCst) {
                    break; // the listener closes: connections are refused
                }
                let up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                conns.lock().unwrap().push(client.try_clone().unwrap());
                conns.lock().unwrap().push(up.try_clone().unwrap());
                let (mut c_r, mut u_w) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut u_w);
                });
                let (mut u_r, mut c_w) = (up, client);
                let (sent, cut, conns) = (sent.clone(), cut2.clone(), conns.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match u_r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent.fetch_add(n, Ordering::SeqCst) + n > limit {
                            cut.store(true, Ordering::SeqCst);
                            for c in conns.lock().unwrap().iter() {
                                let _ = c.shutdown(Shutdown::Both);
                            }
                            // wake the accept loop so it stops
                            let _ = TcpStream::connect(("127.0.0.1", port));
                            break;
                        }
                        if c_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CuttingProxy { port, cut }
    }
}

#[test]
fn chroma_going_away_mid_backup_records_nothing() {
    let src = source();
    // a few MB in: during the first pages of the first collection
    let proxy = CuttingProxy::start(src.port, 6 << 20);
    let s = setup("chroma-cut", &format!("http://127.0.0.1:{}", proxy.port));
    let o = s.run(&["backup", "vectors"]).expect_code(5);
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy never cut\n{o}");
    assert!(
        o.stderr.contains("Chroma at http://127.0.0.1:")
            && o.stderr.contains("collection docs-cosine")
            && o.stderr.contains("nothing was recorded"),
        "{o}"
    );
    assert!(s.list_ids().is_empty(), "no manifest after a failed backup");
}

#[test]
fn interrupted_restore_deletes_its_temporary_collections() {
    let (s, id) = shared();
    let target = ChromaServer::start("int-target");
    let mut child = s
        .command(&[
            "restore",
            "vectors",
            "--backup",
            id,
            "--into",
            &target.url(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // interrupt once the first temporary collection holds some records
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let loading = block_on(target.client().collections())
            .unwrap()
            .into_iter()
            .any(|c| c.name.starts_with("strata-restore-"));
        if loading {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("restore ended before loading anything: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "no temporary collection within 120s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted while loading"), "{err}");
    assert!(
        collection_names(&target).is_empty(),
        "left behind: {:?}",
        collection_names(&target)
    );
}

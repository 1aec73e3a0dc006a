//! Chroma test servers (`chroma run`, from the chromadb Python package in
//! `$STRATA_CHROMA_VENV`, default /var/tmp/strata-chroma-venv, which
//! scripts/test.sh installs) and seeded test data.
//!
//! Each server runs on 127.0.0.1, a free port and its own temp dir; it is
//! stopped on drop and, as a safety net, when the test binary exits. The
//! tests talk to Chroma through strata's own small client
//! (`strata::sources::chroma::client`) on a private Tokio runtime.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::sources::chroma::client::Client;
use strata::sources::chroma::format;

use super::{free_port, kill_at_exit};

/// The `chroma` executable: `$STRATA_CHROMA_VENV/bin/chroma`.
pub fn chroma_bin() -> PathBuf {
    let venv = std::env::var("STRATA_CHROMA_VENV")
        .unwrap_or_else(|_| "/var/tmp/strata-chroma-venv".to_string());
    let bin = PathBuf::from(venv).join("bin/chroma");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/test.sh (it creates the chromadb venv) or set STRATA_CHROMA_VENV",
        bin.display()
    );
    bin
}

/// A running `chroma run` owned by a test.
pub struct ChromaServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    _temp: tempfile::TempDir,
}

impl ChromaServer {
    pub fn start(name: &str) -> ChromaServer {
        let temp = tempfile::Builder::new()
            .prefix(&format!("strata-chroma-{name}-"))
            .tempdir()
            .expect("temp dir");
        let dir = temp.path().to_path_buf();
        let port = free_port();
        let log = std::fs::File::create(dir.join("chroma.log")).unwrap();
        let child = Command::new(chroma_bin())
            .arg("run")
            .arg("--path")
            .arg(dir.join("data"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("ANONYMIZED_TELEMETRY", "False")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chroma");
        kill_at_exit(child.id());
        let s = ChromaServer {
            port,
            dir,
            child,
            _temp: temp,
        };
        s.wait_ready();
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let began = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && block_on(self.client().version()).is_ok()
            {
                return;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "chroma on port {} did not start; log:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("chroma.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client for `default_tenant`/`default_database`.
    pub fn client(&self) -> Client {
        Client::new(
            &self.url().parse().unwrap(),
            "default_tenant",
            "default_database",
            None,
        )
        .unwrap()
    }

    /// Stops the server now (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A test collection: name, distance, size, seed.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub space: &'static str,
    pub records: usize,
    pub dim: usize,
    pub seed: u64,
}

/// The collections of the shared source: 52,006 records of dimension 384
/// in all, over the three distance functions, plus a small one with
/// metadata edge cases and uris, and an empty one.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "docs-cosine",
        space: "cosine",
        records: 20_000,
        dim: 384,
        seed: 1,
    },
    Spec {
        name: "docs-l2",
        space: "l2",
        records: 20_000,
        dim: 384,
        seed: 2,
    },
    Spec {
        name: "docs-ip",
        space: "ip",
        records: 10_000,
        dim: 384,
        seed: 3,
    },
    Spec {
        name: "notes-l2",
        space: "l2",
        records: 2_000,
        dim: 384,
        seed: 6,
    },
    Spec {
        name: "tiny.meta",
        space: "l2",
        records: 6,
        dim: 384,
        seed: 4,
    },
    Spec {
        name: "empty-one",
        space: "cosine",
        records: 0,
        dim: 384,
        seed: 5,
    },
];

/// One record as generated.
#[derive(Debug, Clone)]
pub struct Rec {
    pub id: String,
    pub embedding: Vec<f32>,
    pub document: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub uri: Option<String>,
}

/// Records per cluster of the generated data.
pub const CLUSTER: usize = 10;

/// The records of `spec`, deterministic. Embeddings come in clusters of
/// [`CLUSTER`] (a random centre plus small noise), as real embeddings of
/// near-duplicate texts do: a record's nearest neighbours are its cluster
/// mates, at distinct distances, far from every other record. (Uniform
/// random vectors are the worst case for an approximate index: all
/// neighbours nearly equidistant, so two HNSW builds answer differently.)
pub fn records(spec: &Spec) -> Vec<Rec> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut centre: Vec<f32> = Vec::new();
    (0..spec.records)
        .map(|i| {
            if i % CLUSTER == 0 {
                centre = (0..spec.dim).map(|_| rng.random::<f32>() - 0.5).collect();
            }
            let embedding: Vec<f32> = centre
                .iter()
                .map(|c| c + (rng.random::<f32>() - 0.5) * 0.05)
                .collect();
            let document =
                (i % 5 != 3).then(|| format!("document {i} of {} «ünïcode» \"q\"", spec.name));
            let metadata = match i % 4 {
                0 => None,
                1 => Some(format!(r#"{{"i":{i},"tag":"t{}"}}"#, i % 7)),
                2 => Some(format!(
                    r#"{{"i":{i},"f":{},"flag":true,"tiny":1e-300}}"#,
                    serde_json::to_string(&(i as f64 * 0.1 + 0.30000000000000004)).unwrap()
                )),
                _ => Some(r#"{"s":"x","neg":-7,"big":9007199254740993}"#.to_string()),
            };
            let uri = (spec.name == "tiny.meta" && i % 2 == 0).then(|| format!("s3://b/{i}"));
            Rec {
                id: format!("{}-{i:06}", spec.name),
                embedding,
                document,
                metadata,
                uri,
            }
        })
        .collect()
}

/// Creates the collection of `spec` on `client` and adds its records in
/// batches of 1000 (embeddings base64, so they arrive bit-exact). The HNSW
/// parameters are small (and not the defaults, so the test sees them
/// restored): building the index is what makes adds slow.
pub fn fill(client: &Client, spec: &Spec) {
    block_on(async {
        let conf = serde_json::value::RawValue::from_string(format!(
            r#"{{"hnsw":{{"space":"{}","ef_construction":64,"max_neighbors":12}}}}"#,
            spec.space
        ))
        .unwrap();
        let meta = serde_json::value::RawValue::from_string(format!(
            r#"{{"purpose":"strata test","seed":{}}}"#,
            spec.seed
        ))
        .unwrap();
        let c = client
            .create_collection(spec.name, Some(&meta), Some(&conf))
            .await
            .unwrap();
        let recs = records(spec);
        for chunk in recs.chunks(1000) {
            let body = serde_json::json!({
                "ids": chunk.iter().map(|r| &r.id).collect::<Vec<_>>(),
                "embeddings": chunk.iter().map(|r| format::encode_embedding(&r.embedding)).collect::<Vec<_>>(),
                "documents": chunk.iter().map(|r| &r.document).collect::<Vec<_>>(),
                "metadatas": chunk.iter().map(|r| r.metadata.as_ref().map(|m| serde_json::from_str::<serde_json::Value>(m).unwrap())).collect::<Vec<_>>(),
                "uris": chunk.iter().map(|r| &r.uri).collect::<Vec<_>>(),
            });
            client
                .add(&c.id, spec.name, serde_json::to_vec(&body).unwrap())
                .await
                .unwrap();
        }
    });
}

/// Every record of collection `name` on `client`, as the API returns it
/// (embeddings parsed exactly), sorted by id.
pub fn read_all(client: &Client, name: &str) -> Vec<Rec> {
    block_on(async {
        let c = client
            .collection(name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("collection {name} is missing"));
        let mut out = Vec::new();
        loop {
            let body = client
                .get_page(&c.id, name, out.len() as u64, 1000)
                .await
                .unwrap();
            let page: format::GetPage = serde_json::from_slice(&body).unwrap();
            let n = page.ids.len();
            let embs = format::parse_embeddings(page.embeddings.unwrap().get()).unwrap();
            for (i, id) in page.ids.iter().enumerate() {
                out.push(Rec {
                    id: id.clone(),
                    embedding: embs[i].clone(),
                    document: page.documents.as_ref().and_then(|d| d[i].clone()),
                    metadata: page
                        .metadatas
                        .as_ref()
                        .and_then(|m| m[i])
                        .map(|m| m.get().to_string())
                        .filter(|m| m != "null"),
                    uri: page.uris.as_ref().and_then(|u| u[i].clone()),
                });
            }
            if n < 1000 {
                break;
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    })
}

/// Largest distance in ulps between two equally long vectors.
pub fn max_ulps(a: &[f32], b: &[f32]) -> u32 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            // map the float line onto integers, monotonic, so ulps subtract
            let key = |f: f32| {
                let b = f.to_bits() as i32;
                if b < 0 { i32::MIN - b } else { b }
            };
            (key(*x) as i64 - key(*y) as i64).unsigned_abs() as u32
        })
        .max()
        .unwrap_or(0)
}

/// Compares two collections' records: ids, documents, metadata (as JSON
/// values), uris, and embeddings within `ulps` (0: bit-exact).
pub fn assert_same(what: &str, want: &[Rec], got: &[Rec], ulps: u32) {
    assert_eq!(want.len(), got.len(), "{what}: record counts differ");
    let mut worst = 0;
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w.id, g.id, "{what}: ids differ");
        assert_eq!(w.document, g.document, "{what}: document of {}", w.id);
        assert_eq!(w.uri, g.uri, "{what}: uri of {}", w.id);
        let m = |s: &Option<String>| {
            s.as_ref()
                .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap())
        };
        assert_eq!(
            m(&w.metadata),
            m(&g.metadata),
            "{what}: metadata of {}",
            w.id
        );
        let u = max_ulps(&w.embedding, &g.embedding);
        worst = worst.max(u);
        assert!(
            u <= ulps,
            "{what}: embedding of {} differs by {u} ulps (allowed {ulps})",
            w.id
        );
    }
    eprintln!(
        "{what}: {} records equal, embeddings within {worst} ulps",
        want.len()
    );
}

//! One conformance suite for every `Storage` backend: the local directory
//! store and S3 (against s3s-fs, a real S3-protocol server). Whatever the
//! repository code relies on is checked here for both, through the retry
//! wrapper every store is opened behind (`storage::open`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use strata::storage::local::LocalStorage;
use strata::storage::retry::{Limits, Retrying};
use strata::storage::s3::{S3Config, S3Storage};
use strata::storage::{Body, PutMode, Storage, StorageError};
use tokio::io::AsyncReadExt;

const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random bytes (xorshift): incompressible, and a
/// misplaced part changes the hash.
fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Uploads `data` in `chunk`-sized pieces through a body channel, as the
/// pipeline does.
async fn put_chunked(
    store: &dyn Storage,
    key: &str,
    data: Bytes,
    chunk: usize,
    mode: PutMode,
) -> Result<strata::storage::ObjectMeta, StorageError> {
    let (tx, body) = Body::channel();
    let producer = tokio::spawn(async move {
        let mut off = 0;
        while off < data.len() {
            let end = (off + chunk).min(data.len());
            if !tx.send(data.slice(off..end)).await {
                return;
            }
            off = end;
        }
        tx.finish().await;
    });
    let res = store.put(key, body, mode).await;
    producer.await.unwrap();
    res
}

/// Reads an object by streaming, returning (size, sha256).
async fn get_hash(store: &dyn Storage, key: &str) -> (u64, String) {
    let mut r = store.get(key).await.unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    let mut n = 0u64;
    loop {
        let got = r.read(&mut buf).await.unwrap();
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    (n, hex::encode(h.finalize()))
}

fn keys(list: &[strata::storage::ObjectMeta]) -> Vec<&str> {
    list.iter().map(|m| m.key.as_str()).collect()
}

/// A store under test, and what the suite can observe beside it.
struct Backend {
    store: Arc<dyn Storage>,
    /// Aborting an upload the server no longer knows succeeds (S3 says
    /// NoSuchUpload; s3s-fs says AccessDenied, so not there).
    abort_unknown_ok: bool,
}

impl Backend {
    /// Handles of uploads started and never completed, as far as anyone
    /// can tell.
    async fn open_uploads(&self, prefix: &str) -> Vec<String> {
        let listed = self.store.list_incomplete(prefix).await.unwrap();
        listed.into_iter().map(|u| u.handle).collect()
    }
}

/// The suite. Every case uses its own key prefix so nothing interferes.
async fn conformance(backend: Backend) {
    let s = backend.store.as_ref();
    round_trip_small_and_empty(s).await;
    round_trip_large(s).await;
    create_and_overwrite(s).await;
    create_race(&backend).await;
    missing(s).await;
    listing(s).await;
    deletion(s).await;
    producer_failure_small(s).await;
    producer_failure_large(&backend).await;
    crashed_upload_is_listed_and_abortable(&backend).await;
    invalid_keys(s).await;
}

async fn round_trip_small_and_empty(s: &dyn Storage) {
    let small = Bytes::from_static(b"hello, strata");
    let meta = s
        .put_bytes("rt/small", small.clone(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(meta.key, "rt/small");
    assert_eq!(meta.size, small.len() as u64);
    assert_eq!(s.get_bytes("rt/small").await.unwrap(), small);
    let head = s
        .head("rt/small")
        .await
        .unwrap()
        .expect("head of stored object");
    assert_eq!(head.key, "rt/small");
    assert_eq!(head.size, small.len() as u64);

    // An empty object: a body finished without any chunk.
    let (tx, body) = Body::channel();
    tx.finish().await;
    let meta = s.put("rt/empty", body, PutMode::Create).await.unwrap();
    assert_eq!(meta.size, 0);
    assert_eq!(s.get_bytes("rt/empty").await.unwrap().len(), 0);
    assert_eq!(s.head("rt/empty").await.unwrap().unwrap().size, 0);
}

async fn round_trip_large(s: &dyn Storage) {
    // 40 MiB in 1 MiB chunks: more than two 16 MiB parts on S3.
    let big = data(40 * MIB, 42);
    let want = sha(&big);
    let meta = put_chunked(s, "rt/big", big.clone(), MIB, PutMode::Create)
        .await
        .unwrap();
    assert_eq!(meta.size, big.len() as u64);
    assert_eq!(get_hash(s, "rt/big").await, (big.len() as u64, want));
    assert_eq!(
        s.head("rt/big").await.unwrap().unwrap().size,
        big.len() as u64
    );

    // Exactly one part's worth plus nothing: the boundary between single
    // and multipart upload.
    let edge = data(16 * MIB, 7);
    put_chunked(s, "rt/edge", edge.clone(), 4 * MIB, PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        get_hash(s, "rt/edge").await,
        (edge.len() as u64, sha(&edge))
    );
    let (n, h) = get_hash(s, "rt/big").await;
    assert_eq!(n, big.len() as u64);
    assert_eq!(h, sha(&big));

    // Reading from an offset (how an interrupted read resumes): inside a
    // part, at a part boundary, at the end and past it.
    for offset in [
        1,
        16 * MIB as u64,
        17 * MIB as u64 + 3,
        big.len() as u64,
        big.len() as u64 + 10,
    ] {
        let mut r = s.get_from("rt/big", offset).await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        let want = &big[(offset as usize).min(big.len())..];
        assert_eq!(got.len(), want.len(), "from {offset}");
        assert!(got == want, "bytes from {offset} differ");
    }
    match s.get_from("rt/missing", 5).await {
        Err(e) => assert!(e.is_not_found(), "{e:?}"),
        Ok(_) => panic!("a missing object opened"),
    }
}

async fn create_and_overwrite(s: &dyn Storage) {
    s.put_bytes("cr/obj", Bytes::from_static(b"first"), PutMode::Create)
        .await
        .unwrap();
    let err = s
        .put_bytes("cr/obj", Bytes::from_static(b"second"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists { ref key } if key == "cr/obj"),
        "{err:?}"
    );
    assert_eq!(&s.get_bytes("cr/obj").await.unwrap()[..], b"first");

    // Create of an existing key must also fail for a multipart-sized body.
    let big = data(34 * MIB, 3);
    let err = put_chunked(s, "cr/obj", big, MIB, PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(&s.get_bytes("cr/obj").await.unwrap()[..], b"first");

    s.put_bytes(
        "cr/obj",
        Bytes::from_static(b"replaced"),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    assert_eq!(&s.get_bytes("cr/obj").await.unwrap()[..], b"replaced");
    // Overwrite of a missing key creates it.
    s.put_bytes("cr/new", Bytes::from_static(b"x"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(&s.get_bytes("cr/new").await.unwrap()[..], b"x");
}

/// Create where the key appears after the upload started (another writer
/// won the race): the store's commit must refuse, not replace. On S3 this
/// is the `If-None-Match: *` on CompleteMultipartUpload, answered 412.
async fn create_race(backend: &Backend) {
    let s = backend.store.as_ref();
    let before = backend.open_uploads("race/").await;
    let (tx, body) = Body::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let chunk = data(MIB, 11);
    let producer = tokio::spawn(async move {
        for _ in 0..40 {
            assert!(tx.send(chunk.clone()).await);
        }
        go_rx.await.unwrap();
        tx.finish().await;
    });
    let writer = backend.store.clone();
    let upload = tokio::spawn(async move { writer.put("race/obj", body, PutMode::Create).await });
    // Wait until the slow writer is past its existence check.
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.open_uploads("race/").await.len() <= before.len() {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.put_bytes("race/obj", Bytes::from_static(b"winner"), PutMode::Create)
        .await
        .unwrap();
    go_tx.send(()).unwrap();
    let err = upload.await.unwrap().unwrap_err();
    producer.await.unwrap();
    assert!(
        matches!(err, StorageError::AlreadyExists { ref key } if key == "race/obj"),
        "{err:?}"
    );
    assert_eq!(&s.get_bytes("race/obj").await.unwrap()[..], b"winner");
    assert_eq!(backend.open_uploads("race/").await, before);
}

async fn missing(s: &dyn Storage) {
    let err = s
        .get("miss/nothing")
        .await
        .err()
        .expect("get of a missing key");
    assert!(err.is_not_found(), "{err:?}");
    assert!(
        matches!(err, StorageError::NotFound { ref key } if key == "miss/nothing"),
        "{err:?}"
    );
    assert!(
        s.get_bytes("miss/nothing")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(s.head("miss/nothing").await.unwrap(), None);
    assert!(s.list("miss/").await.unwrap().is_empty());
}

async fn listing(s: &dyn Storage) {
    for (k, v) in [
        ("ls/b/2", "bb"),
        ("ls/a/2", "a2"),
        ("ls/a/1", "a"),
        ("ls/a/10", "a10"),
        ("lsx/1", "x"),
        ("ls/ab", "ab"),
    ] {
        s.put_bytes(k, Bytes::from(v), PutMode::Create)
            .await
            .unwrap();
    }
    let a = s.list("ls/a/").await.unwrap();
    assert_eq!(keys(&a), ["ls/a/1", "ls/a/10", "ls/a/2"]);
    assert_eq!(a.iter().map(|m| m.size).collect::<Vec<_>>(), [1, 3, 2]);
    // A prefix is a string prefix, not a directory.
    assert_eq!(
        keys(&s.list("ls/a").await.unwrap()),
        ["ls/a/1", "ls/a/10", "ls/a/2", "ls/ab"]
    );
    assert_eq!(
        keys(&s.list("ls/").await.unwrap()),
        ["ls/a/1", "ls/a/10", "ls/a/2", "ls/ab", "ls/b/2"]
    );
    assert_eq!(
        keys(&s.list("ls").await.unwrap()),
        ["ls/a/1", "ls/a/10", "ls/a/2", "ls/ab", "ls/b/2", "lsx/1"]
    );
    assert!(s.list("ls/c").await.unwrap().is_empty());
    // The whole store lists sorted, relative keys.
    let all = s.list("").await.unwrap();
    let all_keys = keys(&all);
    let mut sorted = all_keys.clone();
    sorted.sort();
    assert_eq!(all_keys, sorted);
    assert!(all_keys.contains(&"lsx/1"));
    assert!(all_keys.iter().all(|k| !k.starts_with('/')));
}

async fn deletion(s: &dyn Storage) {
    s.put_bytes("del/a", Bytes::from_static(b"a"), PutMode::Create)
        .await
        .unwrap();
    s.put_bytes("del/b", Bytes::from_static(b"b"), PutMode::Create)
        .await
        .unwrap();
    s.delete("del/a").await.unwrap();
    assert_eq!(s.head("del/a").await.unwrap(), None);
    assert!(s.get("del/a").await.err().unwrap().is_not_found());
    // Idempotent: deleting again, or a key that never existed, succeeds.
    s.delete("del/a").await.unwrap();
    s.delete("del/never/was").await.unwrap();
    assert_eq!(keys(&s.list("del/").await.unwrap()), ["del/b"]);
    // A deleted key can be created again.
    s.put_bytes("del/a", Bytes::from_static(b"again"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(&s.get_bytes("del/a").await.unwrap()[..], b"again");
}

async fn producer_failure_small(s: &dyn Storage) {
    // The producer reports an error.
    let (tx, body) = Body::channel();
    let producer = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"partial data")).await;
        tx.fail(std::io::Error::other("source database went away"))
            .await;
    });
    let err = s.put("pf/failed", body, PutMode::Create).await.unwrap_err();
    producer.await.unwrap();
    assert!(matches!(err, StorageError::Aborted { .. }), "{err:?}");
    assert!(
        err.to_string().contains("source database went away"),
        "{err}"
    );
    assert_eq!(s.head("pf/failed").await.unwrap(), None);

    // The producer goes away without finishing (panic, cancellation).
    let (tx, body) = Body::channel();
    let producer = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"partial data")).await;
        drop(tx);
    });
    let err = s
        .put("pf/dropped", body, PutMode::Overwrite)
        .await
        .unwrap_err();
    producer.await.unwrap();
    assert!(matches!(err, StorageError::Aborted { .. }), "{err:?}");
    assert_eq!(s.head("pf/dropped").await.unwrap(), None);

    // A failed overwrite leaves the previous object intact.
    s.put_bytes("pf/kept", Bytes::from_static(b"old"), PutMode::Create)
        .await
        .unwrap();
    let (tx, body) = Body::channel();
    let producer = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"new but incomplete")).await;
        tx.fail(std::io::Error::other("boom")).await;
    });
    assert!(s.put("pf/kept", body, PutMode::Overwrite).await.is_err());
    producer.await.unwrap();
    assert_eq!(&s.get_bytes("pf/kept").await.unwrap()[..], b"old");
    assert!(s.list_incomplete("pf/").await.unwrap().is_empty());
}

async fn producer_failure_large(backend: &Backend) {
    let s = backend.store.as_ref();
    // Fails after 50 MiB: on S3 several parts are already uploaded.
    let chunk = data(MIB, 9);
    for (key, drop_it) in [("pfl/failed", false), ("pfl/dropped", true)] {
        let (tx, body) = Body::channel();
        let c = chunk.clone();
        let producer = tokio::spawn(async move {
            for _ in 0..50 {
                if !tx.send(c.clone()).await {
                    return;
                }
            }
            if drop_it {
                drop(tx);
            } else {
                tx.fail(std::io::Error::other("compressor crashed")).await;
            }
        });
        let err = s.put(key, body, PutMode::Create).await.unwrap_err();
        producer.await.unwrap();
        assert!(
            matches!(err, StorageError::Aborted { .. }),
            "{key}: {err:?}"
        );
        assert_eq!(s.head(key).await.unwrap(), None, "{key}");
        assert!(s.list("pfl/").await.unwrap().is_empty(), "{key}");
        // Aborted, not left dangling.
        let left = backend.open_uploads("pfl/").await;
        assert!(
            left.is_empty(),
            "{key}: dangling incomplete uploads {left:?}"
        );
    }
}

/// A writer that dies mid-upload (the future is dropped, as in a crash or a
/// cancelled task) leaves an incomplete upload, which is listed (where the
/// server can list them) and can be discarded; the key itself stays absent.
async fn crashed_upload_is_listed_and_abortable(backend: &Backend) {
    let store = &backend.store;
    let s = store.as_ref();
    let before = backend.open_uploads("crash/").await;
    let (tx, body) = Body::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let chunk = data(MIB, 5);
    let producer = tokio::spawn(async move {
        // 40 MiB: on S3 the multipart upload has started and a part is up.
        for _ in 0..40 {
            if !tx.send(chunk.clone()).await {
                return;
            }
        }
        let _ = stop_rx.await; // hold the body open, never finish
        drop(tx);
    });
    let writer = store.clone();
    let upload = tokio::spawn(async move { writer.put("crash/obj", body, PutMode::Create).await });

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if backend.open_uploads("crash/").await.len() > before.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the interrupted upload never showed up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The crash: the writer disappears without cleaning up.
    upload.abort();
    let _ = upload.await;
    let _ = stop_tx.send(());
    producer.await.unwrap();
    assert_eq!(s.head("crash/obj").await.unwrap(), None);

    let open: Vec<String> = backend
        .open_uploads("crash/")
        .await
        .into_iter()
        .filter(|h| !before.contains(h))
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    let listed = s.list_incomplete("crash/").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, "crash/obj");
    assert_eq!(listed[0].handle, open[0]);
    assert!(listed[0].started.is_some());
    assert!(s.list_incomplete("other/").await.unwrap().is_empty());
    let upload = listed[0].clone();
    s.abort_incomplete(&upload).await.unwrap();
    assert_eq!(backend.open_uploads("crash/").await, before);
    if backend.abort_unknown_ok {
        // Aborting twice is harmless. (s3s-fs answers AccessDenied for an
        // unknown upload id where S3 says NoSuchUpload, so not there.)
        s.abort_incomplete(&upload).await.unwrap();
    }
    assert_eq!(s.head("crash/obj").await.unwrap(), None);
    assert!(s.list("crash/").await.unwrap().is_empty());
}

async fn invalid_keys(s: &dyn Storage) {
    for bad in [
        "", "/abs", "a/", "a//b", "..", "../x", "a/../b", "./a", "a/.", "a\\b", "a\0b",
    ] {
        let put = s
            .put_bytes(bad, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await;
        assert!(
            matches!(put, Err(StorageError::Permanent { .. })),
            "put {bad:?}: {put:?}"
        );
        assert!(s.get(bad).await.is_err(), "get {bad:?}");
        assert!(s.head(bad).await.is_err(), "head {bad:?}");
        assert!(s.delete(bad).await.is_err(), "delete {bad:?}");
    }
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

fn s3_config(prefix: &str) -> S3Config {
    let srv = common::s3::s3_server();
    S3Config {
        bucket: srv.bucket.clone(),
        prefix: prefix.to_string(),
        endpoint: Some(srv.endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStorage::new(dir.path().join("repo"));
    assert!(store.location().starts_with("file://"));
    conformance(Backend {
        store: Retrying::wrap(Arc::new(store), Limits::default()),
        abort_unknown_ok: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_conformance() {
    let prefix = unique("conformance");
    let store = S3Storage::connect(s3_config(&prefix)).await.unwrap();
    let srv = common::s3::s3_server();
    assert_eq!(store.location(), format!("s3://{}/{prefix}", srv.bucket));
    // s3s-fs cannot list multipart uploads (NotImplemented): strata's
    // upload journal (`uploads/`) lists them instead (issue 13 item 9:
    // the parts of a killed writer stayed forever, unseen by verify and
    // cleanup); the server's own records must agree
    conformance(Backend {
        store: Retrying::wrap(Arc::new(store), Limits::default()),
        abort_unknown_ok: false,
    })
    .await;
    let server_side = common::s3::s3_server().open_uploads();
    let listed: Vec<String> = S3Storage::connect(s3_config(&prefix))
        .await
        .unwrap()
        .list_incomplete("")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.handle)
        .collect();
    for h in &listed {
        assert!(
            server_side.contains(h),
            "{h} listed, not open on the server"
        );
    }
    // Everything went under the prefix, nothing at the bucket's top level
    // besides it.
    let top = S3Storage::connect(s3_config("")).await.unwrap();
    assert_eq!(top.location(), format!("s3://{}", srv.bucket));
    let all = top.list("").await.unwrap();
    assert!(
        all.iter().all(|m| m.key.starts_with("conformance-")),
        "{all:?}"
    );
    let small = format!("{prefix}/rt/small");
    assert!(all.iter().any(|m| m.key == small), "{all:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_missing_bucket_is_a_permanent_error_naming_it() {
    let mut cfg = s3_config("p");
    cfg.bucket = "strata-no-such-bucket".into();
    let err = S3Storage::connect(cfg).await.unwrap_err();
    assert!(matches!(err, StorageError::Permanent { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("missing bucket: {msg}");
    assert!(msg.contains("strata-no-such-bucket"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_unreachable_endpoint_fails_fast_naming_it() {
    // Credentials must be there so the failure is the connection's.
    common::s3::s3_server();
    let port = common::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut cfg = s3_config("p");
    cfg.endpoint = Some(endpoint.clone());
    let started = Instant::now();
    let err = S3Storage::connect(cfg).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(matches!(err, StorageError::Transient { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("unreachable endpoint, after {took:?}: {msg}");
    assert!(msg.contains(&endpoint), "{msg}");
}

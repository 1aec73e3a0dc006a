//! TLS on loopback for tests of strata's https clients: a test CA and a
//! server certificate for `127.0.0.1` / `localhost` (made once per test
//! binary with the `openssl` CLI), an https webhook receiver that records
//! every request, and a TLS-terminating TCP proxy that puts https in
//! front of a plain server (s3s-fs speaks only http).
//!
//! The servers run on a small tokio runtime of their own (rustls through
//! tokio-rustls, the stack strata's clients use), so synchronous tests
//! can start them; they stop when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::at_exit;

/// A CA and a server certificate it signed.
pub struct TestCa {
    /// The CA certificate (PEM): what a client must trust.
    pub ca_pem: PathBuf,
    /// The server's certificate (PEM), for `127.0.0.1` and `localhost`.
    pub cert_pem: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key_pem: PathBuf,
    /// Another CA, which signed nothing here: trusting it is not enough.
    pub other_ca_pem: PathBuf,
}

static CA: OnceLock<TestCa> = OnceLock::new();

/// The test CA, made on first use.
pub fn test_ca() -> &'static TestCa {
    CA.get_or_init(make_ca)
}

fn make_ca() -> TestCa {
    let dir = tempfile::Builder::new()
        .prefix("strata-test-ca-")
        .tempdir()
        .expect("temp dir for the test CA")
        .keep();
    {
        let dir = dir.clone();
        at_exit(move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
    for name in ["ca", "other-ca"] {
        super::pki::make_ca(&dir, name, &format!("strata test {name}"));
    }
    super::pki::make_leaf(
        &dir,
        "server",
        "ca",
        "localhost",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    TestCa {
        ca_pem: dir.join("ca.crt"),
        cert_pem: dir.join("server.crt"),
        key_pem: dir.join("server.key"),
        other_ca_pem: dir.join("other-ca.crt"),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-tls")
            .enable_all()
            .build()
            .expect("tokio runtime for the TLS test servers")
    })
}

fn acceptor() -> TlsAcceptor {
    let ca = test_ca();
    let certs = CertificateDer::pem_file_iter(&ca.cert_pem)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&ca.key_pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
    TlsAcceptor::from(Arc::new(config))
}

/// Accepts on a loopback port and runs `serve` for every connection
/// until `stop` is set. Returns the port.
fn listen<F, Fut>(stop: Arc<AtomicBool>, serve: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let rt = runtime();
    rt.spawn(async move {
        let listener = TcpListener::from_std(std_listener).unwrap();
        let serve = Arc::new(serve);
        while !stop.load(Ordering::SeqCst) {
            if let Ok(Ok((conn, _))) =
                tokio::time::timeout(Duration::from_millis(200), listener.accept()).await
            {
                tokio::spawn(serve(conn));
            }
        }
    });
    port
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request line and headers.
    pub head: String,
    pub body: String,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {self:?}"))
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// An https webhook receiver: answers every POST `202 Accepted` and keeps
/// it; a client that refuses its certificate leaves nothing.
pub struct HttpsReceiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HttpsReceiver {
    pub fn start() -> HttpsReceiver {
        let acceptor = acceptor();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let kept = requests.clone();
        let port = listen(stop.clone(), move |conn| {
            let (acceptor, kept) = (acceptor.clone(), kept.clone());
            async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                if let Some(r) = read_request(&mut tls).await {
                    kept.lock().unwrap().push(r);
                    let _ = tls
                        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        HttpsReceiver {
            port,
            requests,
            stop,
        }
    }

    /// `https://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (up to 60 s) until `n` requests came; returns them all.
    pub fn wait_for(&self, n: usize) -> Vec<Request> {
        let started = Instant::now();
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} of {n} webhook requests within 60 s: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let r = Request {
                    head: head.to_string(),
                    body: body.to_string(),
                };
                let len: usize = r
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return Some(r);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .ok()
        .flatten()
}

/// https in front of a plain TCP server: TLS is ended here with the test
/// CA's server certificate and the bytes pass on to `upstream`.
pub struct TlsProxy {
    /// `https://127.0.0.1:PORT`
    pub endpoint: String,
    stop: Arc<AtomicBool>,
}

impl TlsProxy {
    /// `upstream`: `http://host:port` or `host:port`.
    pub fn start(upstream: &str) -> TlsProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let acceptor = acceptor();
        let stop = Arc::new(AtomicBool::new(false));
        let port = listen(stop.clone(), move |conn| {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            }
        });
        TlsProxy {
            endpoint: format!("https://127.0.0.1:{port}"),
            stop,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

//! The S3-protocol test server: `s3s-fs` (a real S3 HTTP server storing
//! objects as files), started once per test binary on a free loopback port
//! with a temporary root, and stopped when the binary exits.
//!
//! Install it with `scripts/test.sh` (it runs
//! `cargo install s3s-fs@0.14.1 --locked --features binary`). Tests never
//! skip silently when it is missing: they fail with that instruction.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{at_exit, free_port, kill_at_exit};

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// s3s-fs's data directory: one subdirectory per bucket.
    pub root: PathBuf,
}

impl S3Server {
    /// Credentials and region for a child process (the `strata` binary)
    /// talking to this server through the standard AWS chain.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Ids of the multipart uploads open on the server, sorted. s3s-fs
    /// does not implement ListMultipartUploads; it keeps one
    /// `.upload-<id>.json` record per open upload in its root.
    pub fn open_uploads(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .expect("read s3s-fs root")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                Some(
                    name.strip_prefix(".upload-")?
                        .strip_suffix(".json")?
                        .to_string(),
                )
            })
            .collect();
        ids.sort();
        ids
    }
}

static SERVER: OnceLock<S3Server> = OnceLock::new();

/// The shared server, started on first use.
pub fn s3_server() -> &'static S3Server {
    SERVER.get_or_init(start)
}

fn find_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("s3s-fs"))
        .find(|p| p.is_file())
}

fn start() -> S3Server {
    let bin = find_binary().unwrap_or_else(|| {
        panic!(
            "s3s-fs (the S3 test server) is not on PATH nor in ~/.cargo/bin: \
             run scripts/test.sh, which installs it \
             (cargo install s3s-fs@0.14.1 --locked --features binary)"
        )
    });
    let root = tempfile::Builder::new()
        .prefix("strata-s3s-root-")
        .tempdir()
        .expect("temp dir for s3s-fs")
        .keep();
    // The log lives outside the root: anything in the root is a bucket.
    let log_path = std::env::temp_dir().join(format!("strata-s3s-{}.log", std::process::id()));
    {
        let (root, log_path) = (root.clone(), log_path.clone());
        at_exit(move || {
            let _ = fs::remove_dir_all(&root);
            let _ = fs::remove_file(&log_path);
        });
    }
    let bucket = "strata-test".to_string();
    fs::create_dir(root.join(&bucket)).expect("create bucket directory");
    let access_key = "strata-test-access".to_string();
    let secret_key = "strata-test-secret-key".to_string();
    let port = free_port();
    let log = fs::File::create(&log_path).expect("s3s-fs log file");
    let mut child: Child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", &access_key, "--secret-key", &secret_key])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    kill_at_exit(child.id());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "s3s-fs exited ({status}) before listening on port {port}:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "s3s-fs did not listen on port {port} within 30 s:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket,
        access_key,
        secret_key,
        root,
    };
    // The test process connects through the standard AWS chain too. Set
    // once, before any client exists; nothing else in the tests writes
    // these variables.
    for (k, v) in server.env_vars() {
        unsafe { std::env::set_var(k, v) };
    }
    server
}

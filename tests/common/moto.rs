//! An S3 server that implements Object Lock: moto's server mode (`moto[server]`
//! from PyPI), started once per test binary on a free loopback port.
//! s3s-fs, the main S3 test server, has no Object Lock.
//!
//! scripts/test.sh installs it into a venv outside the clone
//! (`$STRATA_MOTO_VENV`, default /var/tmp/strata-moto-venv). Tests fail,
//! never skip, when it is missing. Buckets are created, and objects
//! inspected, with the venv's boto3 (a dependency of moto).
//!
//! What moto does and does not do (checked with moto 5.2): it stores
//! `ObjectLockMode`/`ObjectLockRetainUntilDate` given on PutObject and
//! returns them on HEAD; it ignores them on CreateMultipartUpload; its
//! GetObjectRetention answer is unreadable, so strata reads the retention
//! from HEAD (`x-amz-object-lock-retain-until-date`), as AWS also allows.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, kill_at_exit};

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    venv: PathBuf,
}

impl Moto {
    /// Credentials and region for strata (moto accepts any).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "strata-test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "strata-test-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Runs a Python snippet with `s3`, a boto3 client for this server;
    /// returns its stdout.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3, datetime, json\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1',\n\
                 aws_access_key_id='strata-test', aws_secret_access_key='strata-test-secret')\n{code}",
            self.endpoint
        );
        let out = Command::new(self.venv.join("bin/python"))
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run the moto venv's python");
        assert!(
            out.status.success(),
            "python failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates a bucket, with Object Lock enabled or not.
    pub fn create_bucket(&self, name: &str, object_lock: bool) {
        self.python(&format!(
            "s3.create_bucket(Bucket='{name}', ObjectLockEnabledForBucket={})",
            if object_lock { "True" } else { "False" }
        ));
    }

    /// Every key under `prefix` with its lock mode and retain-until date
    /// (RFC 3339), `-` when unlocked: `key mode until` lines, sorted.
    pub fn locks(&self, bucket: &str, prefix: &str) -> Vec<(String, String, String)> {
        let out = self.python(&format!(
            "r = s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}')\n\
             for o in r.get('Contents', []):\n\
             \x20   h = s3.head_object(Bucket='{bucket}', Key=o['Key'])\n\
             \x20   u = h.get('ObjectLockRetainUntilDate')\n\
             \x20   print(o['Key'], h.get('ObjectLockMode', '-'), u.isoformat() if u else '-')\n"
        ));
        let mut v: Vec<(String, String, String)> = out
            .lines()
            .map(|l| {
                let mut p = l.split(' ');
                (
                    p.next().unwrap().to_string(),
                    p.next().unwrap().to_string(),
                    p.next().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

static SERVER: OnceLock<Moto> = OnceLock::new();

/// The shared moto server, started on first use.
pub fn moto() -> &'static Moto {
    SERVER.get_or_init(start)
}

fn start() -> Moto {
    let venv = std::env::var_os("STRATA_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/strata-moto-venv"));
    let bin = venv.join("bin/moto_server");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/test.sh, which installs moto[server] into {} \
         (python3 -m venv {0}; {0}/bin/pip install 'moto[server]')",
        bin.display(),
        venv.display()
    );
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("strata-moto-{}.log", std::process::id()));
    let log = fs::File::create(&log_path).expect("moto log file");
    let mut child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    kill_at_exit(child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "moto_server exited ({status}) before listening on port {port}:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on port {port} within 60 s:\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        venv,
    }
}

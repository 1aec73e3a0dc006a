//! Running the built `strata` binary the way an operator does: a config
//! file, an age key made by `strata key generate`, and a runner that
//! returns the exit code and output (with a time limit, so a hung command
//! fails the test instead of the CI job).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::s3::s3_server;
use super::strata_process;

/// Longest any single strata command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Environment variables that would change what a strata child does.
const SCRUBBED_ENV: &[&str] = &[
    "AWS_CA_BUNDLE",
    "STRATA_CONFIG",
    "STRATA_IDENTITY_FILE",
    "STRATA_LOG",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
];

/// What one strata run did.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Panics (showing everything) unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Output {
        if self.code != Some(code) {
            panic!("expected exit code {code}, got {:?}\n{self}", self.code);
        }
        self
    }

    /// Panics (showing everything) unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Output {
        self.expect_code(0)
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{self}"))
    }

    /// stdout and stderr together, for "the message mentions X" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A `strata` command with a clean environment plus `env`; stdout and
/// stderr piped, stdin closed.
pub fn strata_command<I, S>(args: I, env: &[(String, String)]) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = strata_process();
    c.args(args);
    for v in SCRUBBED_ENV {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Waits for a spawned strata (stdout and stderr piped) and collects its
/// output; kills it and panics after `timeout`.
pub fn wait_output(
    mut child: Child,
    cmdline: String,
    started: Instant,
    timeout: Duration,
) -> Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for strata") {
            break st;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{cmdline}` did not finish within {timeout:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let o = Output {
        cmdline,
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    };
    // Shown with the output of a failed test (or with --nocapture).
    eprintln!("$ {}  => exit {:?} in {:.1?}", o.cmdline, o.code, o.elapsed);
    o
}

/// Runs strata with `args` and extra `env`; never panics on a non-zero
/// exit (check [`Output::code`]), only on a hang.
pub fn run_strata<I, S>(args: I, env: &[(String, String)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = strata_command(args, env);
    let cmdline = describe(&c);
    let started = Instant::now();
    let child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
    wait_output(child, cmdline, started, COMMAND_TIMEOUT)
}

/// `strata key generate --out PATH`; returns the public key (`age1…`).
pub fn generate_key(out: &Path) -> String {
    let o = run_strata(
        [
            OsStr::new("key"),
            "generate".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &[],
    )
    .ok();
    let recipient = o.stdout.trim().to_string();
    assert!(
        recipient.starts_with("age1") && !recipient.contains(char::is_whitespace),
        "key generate printed no recipient\n{o}"
    );
    recipient
}

/// Where a test repository lives.
#[derive(Debug, Clone)]
pub enum RepoSpec {
    /// A directory (`file:///…`).
    Local(PathBuf),
    /// An S3 repository; `env` holds the credentials strata gets.
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        env: Vec<(String, String)>,
    },
}

impl RepoSpec {
    /// A prefix on the shared s3s-fs server.
    pub fn shared_s3(prefix: &str) -> RepoSpec {
        let s = s3_server();
        RepoSpec::S3 {
            endpoint: s.endpoint.clone(),
            bucket: s.bucket.clone(),
            prefix: prefix.to_string(),
            env: s.env_vars(),
        }
    }
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The text of a `strata.toml`. `sources` are `(name, postgres URL)`.
pub fn config_text(
    repo: &RepoSpec,
    recipient: &str,
    identity_file: Option<&Path>,
    sources: &[(&str, String)],
) -> String {
    let mut t = String::from("[repository]\n");
    match repo {
        RepoSpec::Local(dir) => {
            t += &format!("url = {}\n", q(&format!("file://{}", dir.display())));
        }
        RepoSpec::S3 {
            endpoint,
            bucket,
            prefix,
            ..
        } => {
            t += &format!("url = {}\n", q(&format!("s3://{bucket}/{prefix}")));
            t += &format!("endpoint = {}\n", q(endpoint));
            t += "path_style = true\nregion = \"us-east-1\"\n";
        }
    }
    t += &format!("\n[encryption]\nrecipients = [{}]\n", q(recipient));
    if let Some(id) = identity_file {
        t += &format!("identity_file = {}\n", q(&id.to_string_lossy()));
    }
    t += "\n[compression]\nlevel = 1\n";
    for (name, url) in sources {
        t += &format!(
            "\n[sources.{name}]\nkind = \"postgres\"\nurl = {}\n",
            q(url)
        );
    }
    t
}

/// Writes a config file (see [`config_text`]).
pub fn write_config(
    path: &Path,
    repo: &RepoSpec,
    recipient: &str,
    identity_file: Option<&Path>,
    sources: &[(&str, String)],
) {
    fs::write(path, config_text(repo, recipient, identity_file, sources))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// One operator's setup: a temp dir holding a generated key and a config
/// for `repo` and `sources`; runs strata with `--config` and the S3
/// credentials when the repository is on S3.
pub struct Strata {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub key: PathBuf,
    pub recipient: String,
    pub repo: RepoSpec,
    pub env: Vec<(String, String)>,
    _temp: Option<tempfile::TempDir>,
}

impl Strata {
    /// A setup whose repository is `repo` (an S3 prefix, or a directory
    /// chosen by the test).
    pub fn with_repo(name: &str, repo: RepoSpec, sources: &[(&str, String)]) -> Strata {
        Self::build(name, |_| repo, sources)
    }

    /// A setup with a local repository at `<dir>/repo` (not created:
    /// `strata init` does that).
    pub fn local(name: &str, sources: &[(&str, String)]) -> Strata {
        Self::build(name, |dir| RepoSpec::Local(dir.join("repo")), sources)
    }

    fn build(
        name: &str,
        repo: impl FnOnce(&Path) -> RepoSpec,
        sources: &[(&str, String)],
    ) -> Strata {
        let temp = tempfile::Builder::new()
            .prefix(&format!("strata-cli-{name}-"))
            .tempdir()
            .expect("temp dir");
        let dir = temp.path().to_path_buf();
        let repo = repo(&dir);
        let key = dir.join("key.txt");
        let recipient = generate_key(&key);
        let config = dir.join("strata.toml");
        write_config(&config, &repo, &recipient, Some(&key), sources);
        let env = match &repo {
            RepoSpec::S3 { env, .. } => env.clone(),
            RepoSpec::Local(_) => Vec::new(),
        };
        let keep = std::env::var("STRATA_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
        Strata {
            dir,
            config,
            key,
            recipient,
            repo,
            env,
            _temp: if keep {
                let _ = temp.keep();
                None
            } else {
                Some(temp)
            },
        }
    }

    /// The local repository's directory.
    pub fn repo_dir(&self) -> &Path {
        match &self.repo {
            RepoSpec::Local(d) => d,
            RepoSpec::S3 { .. } => panic!("not a local repository"),
        }
    }

    /// `strata --config CONFIG ARGS…`
    pub fn command(&self, args: &[&str]) -> Command {
        let mut all: Vec<&OsStr> = vec!["--config".as_ref(), self.config.as_os_str()];
        all.extend(args.iter().map(|a| OsStr::new(*a)));
        strata_command(all, &self.env)
    }

    /// Runs `strata --config CONFIG ARGS…`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        let cmdline = describe(&c);
        let started = Instant::now();
        let child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        wait_output(child, cmdline, started, COMMAND_TIMEOUT)
    }

    /// `strata init`, which must succeed.
    pub fn init(&self) {
        self.run(&["init"]).ok();
    }

    /// `strata --json backup SOURCE`, which must succeed; the parsed report.
    pub fn backup(&self, source: &str) -> serde_json::Value {
        let o = self.run(&["--json", "backup", source]).ok();
        let v = o.json();
        for field in ["id", "plain_bytes", "stored_bytes"] {
            assert!(v.get(field).is_some(), "backup report lacks {field}\n{o}");
        }
        v
    }

    /// Ids from `strata --json list`.
    pub fn list_ids(&self) -> Vec<String> {
        let o = self.run(&["--json", "list"]).ok();
        o.json()
            .as_array()
            .unwrap_or_else(|| panic!("list --json is not an array\n{o}"))
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    }
}

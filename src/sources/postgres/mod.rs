//! PostgreSQL: connecting (password never printed), server facts, and
//! finding client binaries that match the server's major version.

pub mod base;
pub mod delta;
pub mod dump;
pub mod pgpass;
pub mod pitr;
pub mod precheck;
pub mod server;
pub mod tls;
pub mod verify_queries;
pub mod wal;

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::Client;
use url::Url;

use crate::catalog::manifest::{PostgresInfo, TableInfo};
use crate::error::{Error, Result};
use crate::util::redact_url;

/// A connection target: the URL as configured plus the password resolved
/// from the URL, `PGPASSWORD` or the password file.
#[derive(Clone)]
pub struct Target {
    pub url: Url,
    password: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", redact_url(&self.url))
    }
}

impl Target {
    pub fn new(url: &Url) -> Target {
        let password = match url.password() {
            Some(p) => Some(percent_decode(p)),
            None => std::env::var("PGPASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .or_else(|| {
                    pgpass::lookup(
                        url.host_str().unwrap_or("localhost"),
                        url.port().unwrap_or(5432),
                        &Self::db_of(url),
                        &Self::user_of(url),
                    )
                }),
        };
        Target {
            url: url.clone(),
            password,
        }
    }

    fn db_of(url: &Url) -> String {
        percent_decode(url.path().trim_start_matches('/'))
    }

    fn user_of(url: &Url) -> String {
        match url.username() {
            "" => std::env::var("PGUSER").unwrap_or_else(|_| whoami()),
            u => percent_decode(u),
        }
    }

    pub fn database(&self) -> String {
        Self::db_of(&self.url)
    }

    /// The same server, another database.
    pub fn with_database(&self, db: &str) -> Target {
        let mut url = self.url.clone();
        url.set_path(&format!("/{}", utf8_percent_encode(db)));
        Target {
            url,
            password: self.password.clone(),
        }
    }

    /// The URL safe to print.
    pub fn display(&self) -> String {
        redact_url(&self.url)
    }

    /// The URL for child processes: no password (it goes in the
    /// environment, never on a command line that `ps` shows).
    pub fn child_url(&self) -> String {
        let mut u = self.url.clone();
        let _ = u.set_password(None);
        u.to_string()
    }

    /// Prepares a client binary's command with the password in its
    /// environment and prompts disabled.
    pub fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Connects with the URL's (or `PGSSL*`) TLS settings, as libpq
    /// would (see [`tls`]).
    pub async fn connect(&self) -> Result<Client> {
        let (tls, driver_url) = tls::Tls::for_url(&self.url)?;
        let mut cfg: tokio_postgres::Config = driver_url
            .as_str()
            .parse()
            .map_err(|e| Error::usage(format!("invalid PostgreSQL URL {}: {e}", self.display())))?;
        if cfg.get_user().is_none() {
            cfg.user(Self::user_of(&self.url));
        }
        if let (None, Some(p)) = (cfg.get_password(), &self.password) {
            cfg.password(p.as_bytes());
        }
        cfg.connect_timeout(std::time::Duration::from_secs(10));
        cfg.application_name("strata");
        tls.connect(&mut cfg, &self.display()).await
    }

    /// The TLS connector for a cancel request on a connection made by
    /// [`connect`](Self::connect) (a cancel speaks TLS when it did).
    pub fn cancel_tls(&self) -> tls::MakeRustlsConnect {
        tls::Tls::for_url(&self.url)
            .map(|(t, _)| t.connector())
            .unwrap_or_else(|_| tls::refusing_connector())
    }
}

/// The most useful text of a tokio-postgres error (the server's message
/// when there is one, the I/O cause otherwise).
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text = format!("{text}: {s}");
        src = s.source();
    }
    text
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "postgres".into())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn utf8_percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Server facts recorded in the manifest.
pub async fn server_info(client: &Client) -> Result<PostgresInfo> {
    let q = |e: tokio_postgres::Error| {
        Error::source(format!("querying server facts: {}", pg_error_text(&e)))
    };
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             (SELECT system_identifier::text FROM pg_control_system()), current_database()",
            &[],
        )
        .await
        .map_err(q)?;
    let tables = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.reltuples::bigint, pg_total_relation_size(c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(q)?
        .into_iter()
        .map(|r| {
            let est: i64 = r.get(2);
            TableInfo {
                schema: r.get(0),
                name: r.get(1),
                row_estimate: (est >= 0).then_some(est),
                total_bytes: r.get(3),
                rows: None,
            }
        })
        .collect();
    Ok(PostgresInfo {
        server_version: row.get(0),
        server_version_num: row.get(1),
        system_identifier: row.get(2),
        database: row.get(3),
        globals_with_passwords: false,
        tables,
        dump_tool_major: None,
    })
}

/// The oldest PostgreSQL major version strata supports (issue 16 item 5).
pub const MIN_MAJOR: u32 = 15;
/// The newest PostgreSQL major version strata is tested with.
pub const MAX_TESTED_MAJOR: u32 = 18;

/// Refuses a server older than [`MIN_MAJOR`] (exit 5): its WAL, backup
/// and catalog interfaces differ from what strata drives.
pub fn check_server_version(display: &str, version_num: i32) -> Result<()> {
    let major = major_of(version_num);
    if major < MIN_MAJOR {
        return Err(Error::source(format!(
            "{display} runs PostgreSQL {major} (server_version_num {version_num}), older than strata supports (PostgreSQL {MIN_MAJOR} to {MAX_TESTED_MAJOR})"
        ))
        .hint(format!(
            "upgrade the server to PostgreSQL {MIN_MAJOR} or newer (pg_upgrade), or back it up with the tools of its own version"
        )));
    }
    Ok(())
}

/// Finds a PostgreSQL client binary able to work with a server of major
/// version `major` (that major or newer): the configured `bin_dir`, else
/// `/usr/lib/postgresql/<major>/bin`, else `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin` that fits. A binary too old is an error
/// naming it and its version (exit 5), not a failure of the child later
/// (`pg_dump` refuses a newer server: "aborting because of server
/// version mismatch").
pub fn find_binary(bin_dir: Option<&Path>, name: &str, major: u32) -> Result<PathBuf> {
    find(bin_dir, name, major, false)
}

/// Like [`find_binary`], for a server program (`pg_ctl`, `initdb`) that
/// must run a data directory of major `major`: exactly that version, not
/// merely as new (`pg_ctl` of 18 starts the `postgres` of 18, which
/// refuses a 16 data directory).
pub fn find_server_binary(bin_dir: Option<&Path>, name: &str, major: u32) -> Result<PathBuf> {
    find(bin_dir, name, major, true)
}

fn find(bin_dir: Option<&Path>, name: &str, major: u32, exact: bool) -> Result<PathBuf> {
    let fits = |v: u32| if exact { v == major } else { v >= major };
    let wanted = if exact {
        format!("PostgreSQL {major}")
    } else {
        format!("PostgreSQL {major} or newer")
    };
    if let Some(dir) = bin_dir {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(
                Error::usage(format!("{} does not exist (from bin_dir)", p.display()))
                    .hint("set bin_dir to the directory holding pg_dump and pg_restore"),
            );
        }
        return match binary_major(&p) {
            Some(v) if fits(v) => Ok(p),
            Some(v) => Err(Error::source(format!(
                "{} (from bin_dir) is PostgreSQL {v}; needed: {name} of {wanted} (the server's major version{})",
                p.display(),
                if exact { ", a data directory's must match" } else { ", or the tools' that wrote the backup if newer" }
            ))
            .hint(format!(
                "set bin_dir for the source to the bin directory of the PostgreSQL {major} installation (e.g. /usr/lib/postgresql/{major}/bin)"
            ))),
            None => Err(Error::source(format!(
                "{} (from bin_dir) does not run or does not say its version (`{name} --version`)",
                p.display()
            ))
            .hint("set bin_dir to the bin directory of a working PostgreSQL installation")),
        };
    }
    let mut candidates = vec![PathBuf::from(format!(
        "/usr/lib/postgresql/{major}/bin/{name}"
    ))];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse().ok()?,
                e.path().join("bin").join(name),
            ))
        })
        .collect();
    versioned.sort();
    candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
    let mut unfit: Vec<(PathBuf, u32)> = Vec::new();
    for c in candidates {
        if !c.is_file() || unfit.iter().any(|(p, _)| *p == c) {
            continue;
        }
        match binary_major(&c) {
            Some(v) if fits(v) => return Ok(c),
            Some(v) => unfit.push((c, v)),
            None => {}
        }
    }
    let hint = format!(
        "install PostgreSQL {major}'s {} (e.g. postgresql-{}{major}) or set bin_dir for the source to the bin directory holding {name} of {wanted}",
        if exact { "server" } else { "client" },
        if exact { "" } else { "client-" },
    );
    if unfit.is_empty() {
        return Err(Error::usage(format!("no {name} for {wanted} found")).hint(hint));
    }
    let found: Vec<String> = unfit
        .iter()
        .map(|(p, v)| format!("{} is PostgreSQL {v}", p.display()))
        .collect();
    Err(Error::source(format!(
        "no {name} for {wanted} found (only: {})",
        found.join(", ")
    ))
    .hint(hint))
}

/// Major version printed by `BIN --version` ("pg_dump (PostgreSQL) 15.18").
pub fn binary_major(bin: &Path) -> Option<u32> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    parse_major(&String::from_utf8_lossy(&out.stdout))
}

fn parse_major(version_line: &str) -> Option<u32> {
    let v = version_line
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Major version from `server_version_num` (150018 → 15).
pub fn major_of(version_num: i32) -> u32 {
    (version_num / 10000) as u32
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_restore (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
        assert_eq!(major_of(150018), 15);
    }

    #[test]
    fn child_url_has_no_password() {
        let t = Target::new(&Url::parse("postgres://app:p%40ss@db:5432/app").unwrap());
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert!(!t.child_url().contains("ss@"), "{}", t.child_url());
        assert!(!format!("{t:?}").contains("p%40ss"));
        assert_eq!(t.with_database("other db").database(), "other db");
    }

    /// Issue 16 item 5: a server older than supported is refused with
    /// exit 5 and a hint, before any child runs.
    #[test]
    fn servers_older_than_15_are_refused() {
        let e = check_server_version("postgres://db/app", 140011).unwrap_err();
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("PostgreSQL 14"), "{e}");
        assert!(e.to_string().contains("15 to 18"), "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains("upgrade"), "{e:?}");
        for ok in [150000, 160004, 170006, 180001, 190000] {
            check_server_version("x", ok).unwrap();
        }
    }

    /// A directory holding a `name` that says it is PostgreSQL `version`.
    fn fake_bin(dir: &Path, name: &str, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Issue 16 items 3 and 5: a bin_dir client older than the server is
    /// named with its version and the hint says to set bin_dir (pg_dump
    /// would refuse "server version mismatch" later); a newer one is fine.
    /// Server programs must be of the data directory's major exactly:
    /// `pg_ctl` 18 cannot start a 16 cluster.
    #[test]
    fn bin_dir_versions_are_checked() {
        let d = tempfile::tempdir().unwrap();
        fake_bin(d.path(), "pg_dump", "15.18");
        fake_bin(d.path(), "pg_ctl", "18.6");
        let e = find_binary(Some(d.path()), "pg_dump", 18).unwrap_err();
        assert_eq!(e.exit_code(), 5, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&d.path().join("pg_dump").display().to_string()),
            "{text}"
        );
        assert!(
            text.contains("PostgreSQL 15") && text.contains("PostgreSQL 18"),
            "{text}"
        );
        assert!(e.hint.as_deref().unwrap_or("").contains("bin_dir"), "{e:?}");
        assert_eq!(
            find_binary(Some(d.path()), "pg_dump", 15).unwrap(),
            d.path().join("pg_dump")
        );
        assert!(find_binary(Some(d.path()), "pg_dump", 14).is_ok());
        assert!(
            find_binary(Some(d.path()), "pg_ctl", 16).is_ok(),
            "a client may be newer"
        );
        let e = find_server_binary(Some(d.path()), "pg_ctl", 16).unwrap_err();
        assert_eq!(e.exit_code(), 5, "{e}");
        assert!(e.to_string().contains("PostgreSQL 18"), "{e}");
        assert!(find_server_binary(Some(d.path()), "pg_ctl", 18).is_ok());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

//! Redis sources: RDB snapshots taken remotely over the replication
//! protocol, the way `redis-cli --rdb` does, so strata needs no access to
//! the server's disk and never changes its configuration.
//!
//! Where a managed service refuses `SYNC`/`PSYNC` (ElastiCache, MemoryDB,
//! Azure Cache), [`logical`] takes a logical snapshot instead: `SCAN`,
//! `DUMP` and `PTTL` per key, restored with `RESTORE … ABSTTL REPLACE`.
//!
//! [`client`] speaks just enough RESP (AUTH, INFO, REPLCONF, SYNC), over
//! TCP or TLS ([`tls`], for `rediss://`); [`rdb`] checks a snapshot as it
//! streams; [`snapshot`] backs up and restores.

pub mod client;
pub mod cluster;
pub mod dispatch;
pub mod load;
pub mod logical;
pub mod rdb;
pub mod rdb_keys;
pub mod snapshot;
pub mod tls;

use url::Url;

/// How a redis source is snapshotted (`[sources.NAME] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The replication protocol, falling back to a logical snapshot (with
    /// a notice, recorded in the manifest) when the server refuses it.
    #[default]
    Auto,
    /// The replication protocol only (`SYNC`): an RDB, point in time.
    Replication,
    /// `SCAN` + `DUMP` + `PTTL` ([`logical`]): works where `SYNC` is
    /// refused; not a point-in-time image.
    Logical,
}

impl Mode {
    /// Parses the `mode` setting; the reason when it is unknown.
    pub fn parse(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "replication" => Ok(Mode::Replication),
            "logical" => Ok(Mode::Logical),
            other => Err(format!(
                "unknown mode {other:?}: use \"auto\" (the default), \"replication\" or \"logical\""
            )),
        }
    }
}

/// Connection settings from a `redis://[user:pass@]host:port` or
/// `rediss://[user:pass@]host:port[?cacert=…&cert=…&key=…&sni=…]` URL.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// An ACL user (Redis 6+: `AUTH user password`); `None`: `default`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS settings for `rediss://`; `None`: plain TCP.
    pub tls: Option<tls::TlsSettings>,
    /// The URL with the password redacted, for messages.
    display: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.display)
    }
}

impl Target {
    pub fn new(url: &Url) -> Target {
        let user = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
        Target {
            host: url
                .host_str()
                .unwrap_or("127.0.0.1")
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port().unwrap_or(6379),
            user,
            password: url.password().map(percent_decode),
            tls: tls::TlsSettings::from_url(url),
            display: crate::util::redact_url(url),
        }
    }

    /// The URL, password redacted.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// Decodes `%XX` escapes (URL user info); invalid escapes stay as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a source URL for `[sources.NAME] kind = "redis"` (also a
/// `restore_to` or `--into` URL); the reason when it is unusable.
pub fn check_url(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(
            "a redis source needs redis://[user:pass@]host:port (or rediss:// for TLS)".into(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host (redis://[user:pass@]HOST:port)".into());
    }
    if !matches!(url.path(), "" | "/") {
        return Err(
            "a snapshot covers every database: leave the database number out of the URL (redis://host:port)"
                .into(),
        );
    }
    tls::check(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = |u: &str| check_url(&Url::parse(u).unwrap());
        assert!(ok("redis://127.0.0.1:6379").is_ok());
        assert!(ok("redis://:pw@cache").is_ok());
        assert!(ok("redis://h:1/").is_ok());
        assert!(ok("redis://h:1/2").unwrap_err().contains("every database"));
        assert!(ok("rediss://h:1").is_ok());
        assert!(ok("rediss://u:p@h:1/?cacert=/ca.pem").is_ok());
        assert!(
            ok("redis://h:1?cacert=/ca.pem")
                .unwrap_err()
                .contains("rediss://")
        );
        assert!(
            Target::new(&Url::parse("rediss://h:1?sni=db").unwrap())
                .tls
                .is_some_and(|t| t.server_name.as_deref() == Some("db"))
        );
        assert!(ok("http://h:1").unwrap_err().contains("redis://"));
        let t = Target::new(&Url::parse("redis://bob:p%40ss@cache:7000").unwrap());
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref(), t.port),
            (Some("bob"), Some("p@ss"), 7000)
        );
        assert!(!t.display().contains("p%40ss") && !format!("{t:?}").contains("p%40ss"));
        let t = Target::new(&Url::parse("redis://:secret@cache").unwrap());
        assert_eq!((t.user, t.port), (None, 6379));
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("logical"), Ok(Mode::Logical));
        assert_eq!(Mode::parse("replication"), Ok(Mode::Replication));
        assert_eq!(Mode::parse("auto"), Ok(Mode::default()));
        assert!(Mode::parse("rdb").unwrap_err().contains("\"logical\""));
    }
}

//! `strata.toml`: where the repository is, who can read it, what to back up.
//!
//! Found by `--config PATH`, else `$STRATA_CONFIG`, else `./strata.toml`.
//! Unknown keys, missing keys and bad values are errors naming the file,
//! the line and the key. Values are checked here, once, and handed on as
//! typed settings (a parsed URL, decoded recipients), so no later code
//! validates them again. `[tiers.*]` and `include`d plan files are parsed
//! by [`crate::tier`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::error::{Error, Result};

pub const DEFAULT_FILE: &str = "strata.toml";
pub const ENV_VAR: &str = "STRATA_CONFIG";

/// zstd level used when `[compression] level` is not set. Level 1: on
/// realistic (poorly compressible) PostgreSQL data level 3 took 1.34× the
/// wall time and twice the CPU and stored no less; on highly compressible
/// data both run at pg_dump's own speed. See docs/performance.md.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: RawRepository,
    encryption: RawEncryption,
    #[serde(default)]
    compression: RawCompression,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    /// Plan files defining `[tiers.*]`, relative to this file.
    include: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    tiers: BTreeMap<String, Spanned<crate::tier::RawTier>>,
    notify: Option<RawNotify>,
    /// `[drill]`: targets for sources that set none.
    drill: Option<RawDrill>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    rto_target: Option<Spanned<String>>,
    rpo_target: Option<Spanned<String>>,
}

/// `[drill]`: RTO and RPO targets for sources without their own.
#[derive(Debug, Clone, Default)]
pub struct DrillSettings {
    pub rto_target: Option<chrono::Duration>,
    pub rpo_target: Option<chrono::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook: Spanned<String>,
    #[serde(default)]
    on_success: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    endpoint: Option<Spanned<String>>,
    region: Option<String>,
    #[serde(default)]
    path_style: bool,
    /// Store call limits (see [`crate::storage::retry::Limits`]).
    connect_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    stall_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    recipients: Spanned<Vec<Spanned<String>>>,
    identity_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompression {
    level: Option<Spanned<i32>>,
    threads: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: SourceKind,
    url: Spanned<String>,
    bin_dir: Option<PathBuf>,
    /// Chroma: tenant and database (defaults: default_tenant, default_database).
    tenant: Option<String>,
    database: Option<String>,
    /// Chroma: auth token (sent as `x-chroma-token`); never printed.
    token: Option<String>,
    /// SQL queries whose results are recorded at backup time and compared
    /// after a restore or drill (postgres sources).
    #[serde(default)]
    verify_queries: Option<Spanned<Vec<String>>>,
    /// Postgres dumps: record each table's exact row count (default true).
    count_rows: Option<bool>,
    /// Where `restore --all` puts this source without --target-dir.
    restore_to: Option<Spanned<String>>,
    /// Drill targets for this source (durations like "15m", "1h").
    rto_target: Option<Spanned<String>>,
    rpo_target: Option<Spanned<String>>,
    /// Postgres: push WAL asynchronously (spool + background pusher).
    #[serde(default)]
    archive_async: bool,
    archive_push_processes: Option<Spanned<u32>>,
    archive_push_queue_max: Option<Spanned<String>>,
    archive_spool_path: Option<PathBuf>,
    archive_push_timeout: Option<Spanned<String>>,
}

/// A source's `restore_to`: a PostgreSQL data directory, or the Redis or
/// Chroma server to load the snapshot into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTo {
    Dir(PathBuf),
    Server(Url),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    Redis,
    Chroma,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Redis => "redis",
            SourceKind::Chroma => "chroma",
        }
    }
}

pub use crate::storage::location::RepositoryLocation;

#[derive(Debug, Clone)]
pub struct Compression {
    pub level: i32,
    /// zstd worker threads; 0 means one per core.
    pub threads: u32,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// Connection URL, password included when the user wrote one: never
    /// print it; use [`crate::util::redact_url`].
    pub url: Url,
    pub bin_dir: Option<PathBuf>,
    /// Chroma: tenant (default `default_tenant`).
    pub tenant: String,
    /// Chroma: database (default `default_database`).
    pub database: String,
    /// Chroma: auth token; never print it.
    pub token: Option<String>,
    /// SQL whose results are recorded at backup time and compared after a
    /// restore or drill.
    pub verify_queries: Vec<String>,
    /// Postgres dumps: count every table's rows in the dumped snapshot, for
    /// drills to compare exactly (costs one extra read of each table).
    pub count_rows: bool,
    /// Where `restore --all` brings this source back when no --target-dir
    /// is given.
    pub restore_to: Option<RestoreTo>,
    /// Drill targets for this source, overriding the global ones.
    pub rto_target: Option<chrono::Duration>,
    pub rpo_target: Option<chrono::Duration>,
    /// Postgres: asynchronous `wal push` settings (`archive_async`, …).
    pub archive_push: crate::sources::postgres::wal::push_async::AsyncSettings,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub repository: RepositoryLocation,
    /// `[repository]` deadlines and retries for every store call.
    pub store_limits: crate::storage::retry::Limits,
    /// age recipients (public keys) as written; parsed by [`crate::keys`].
    pub recipients: Vec<String>,
    pub identity_file: Option<PathBuf>,
    pub compression: Compression,
    pub sources: BTreeMap<String, Source>,
    /// Tiers by name, from `[tiers.*]` and included plans (see [`crate::tier`]).
    pub tiers: BTreeMap<String, crate::tier::Tier>,
    /// `[notify]`: where backup outcomes are posted (see [`crate::notify`]).
    pub notify: Option<crate::notify::Notify>,
    /// `[drill]` (see docs/drills.md).
    pub drill: DrillSettings,
}

impl Config {
    /// The config file path by precedence: flag, environment, default.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_path_buf();
        }
        match std::env::var_os(ENV_VAR) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_FILE),
        }
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!("cannot read config file {}: {e}", path.display())).hint(
                format!(
                    "pass --config PATH, set ${ENV_VAR}, or create ./{DEFAULT_FILE} (see docs/configuration.md)"
                ),
            )
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let mut msg = format!("invalid config {}", path.display());
            if let Some(span) = e.span() {
                let line = line_of(text, span.start);
                msg.push_str(&format!(", line {line}"));
                // the line itself names the key
                if let Some(l) = text.lines().nth(line - 1).map(str::trim)
                    && !l.is_empty()
                    && l.len() <= 120
                {
                    msg.push_str(&format!(" (`{l}`)"));
                }
            }
            let why = plain_type_names(e.message().trim());
            let err = Error::usage(format!("{msg}: {why}"));
            if why.contains("unknown field `include`") {
                return err.hint(
                    "`include` is a top-level key: put it before the first [table] header (in TOML, every key after a [header] belongs to that table)",
                );
            }
            err
        })?;
        let bad = |span: std::ops::Range<usize>, key: &str, why: String| {
            Error::usage(format!(
                "invalid config {}, line {}: {key}: {why}",
                path.display(),
                line_of(text, span.start)
            ))
        };
        let base_dir = path.parent().unwrap_or(Path::new("."));

        let repository = parse_repository(&raw.repository)
            .map_err(|why| bad(raw.repository.url.span(), "repository.url", why))?;
        if let (RepositoryLocation::Local(_), Some(ep)) = (&repository, &raw.repository.endpoint) {
            return Err(bad(
                ep.span(),
                "repository.endpoint",
                "only meaningful for an s3:// repository url".into(),
            ));
        }

        let recipients_span = raw.encryption.recipients.span();
        let recipients: Vec<String> = raw
            .encryption
            .recipients
            .into_inner()
            .into_iter()
            .map(|r| {
                let span = r.span();
                let value = r.into_inner();
                crate::keys::parse_recipient(&value)
                    .map(|_| value)
                    .map_err(|why| bad(span, "encryption.recipients", why))
            })
            .collect::<Result<_>>()?;
        if recipients.is_empty() {
            return Err(bad(
                recipients_span,
                "encryption.recipients",
                "at least one age recipient (age1…) is required; create one with `strata key generate --out FILE`".into(),
            ));
        }

        let level = match &raw.compression.level {
            Some(l) if !(1..=19).contains(l.get_ref()) => {
                return Err(bad(
                    l.span(),
                    "compression.level",
                    format!("{} is outside 1..=19", l.get_ref()),
                ));
            }
            Some(l) => *l.get_ref(),
            None => DEFAULT_ZSTD_LEVEL,
        };

        let mut sources = BTreeMap::new();
        for (name, s) in raw.sources {
            if !valid_name(&name) {
                return Err(Error::usage(format!(
                    "invalid config {}: sources.{name}: a source name may use only letters, digits, '-' and '_'",
                    path.display()
                )));
            }
            let key = format!("sources.{name}.url");
            let url = Url::parse(s.url.get_ref())
                .map_err(|e| bad(s.url.span(), &key, format!("not a URL: {e}")))?;
            match s.kind {
                SourceKind::Postgres => {
                    if !matches!(url.scheme(), "postgres" | "postgresql") {
                        return Err(bad(
                            s.url.span(),
                            &key,
                            "a postgres source needs postgres://user@host:port/database".into(),
                        ));
                    }
                    if url.path().trim_start_matches('/').is_empty() {
                        return Err(bad(
                            s.url.span(),
                            &key,
                            "the URL names no database (postgres://user@host:port/DATABASE)".into(),
                        ));
                    }
                }
                SourceKind::Redis => {
                    crate::sources::redis::check_url(&url)
                        .map_err(|why| bad(s.url.span(), &key, why))?;
                }
                SourceKind::Chroma => {
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(bad(
                            s.url.span(),
                            &key,
                            "a chroma source needs the server's http://host:port URL".into(),
                        ));
                    }
                }
            }
            // verify_queries are SQL: a snapshot source would silently
            // never run them.
            if let Some(q) = &s.verify_queries
                && s.kind != SourceKind::Postgres
                && !q.get_ref().is_empty()
            {
                return Err(bad(
                    q.span(),
                    &format!("sources.{name}.verify_queries"),
                    format!(
                        "verify_queries are SQL, run by postgres sources; a {} source cannot run them (docs/pgvector.md)",
                        s.kind.as_str()
                    ),
                ));
            }
            let duration = |v: &Option<Spanned<String>>, what: &str| {
                v.as_ref()
                    .map(|d| {
                        crate::util::parse_duration(d.get_ref()).map_err(|why| {
                            bad(d.span(), &format!("sources.{name}.{what}"), why.to_string())
                        })
                    })
                    .transpose()
            };
            let rto_target = duration(&s.rto_target, "rto_target")?;
            let rpo_target = duration(&s.rpo_target, "rpo_target")?;
            let restore_to = match &s.restore_to {
                None => None,
                Some(r) => Some(
                    restore_to(s.kind, r.get_ref(), base_dir)
                        .map_err(|why| bad(r.span(), &format!("sources.{name}.restore_to"), why))?,
                ),
            };
            let archive_push = {
                use crate::sources::postgres::wal::push_async::{self as pa, AsyncSettings};
                let d = AsyncSettings::default();
                let processes = match &s.archive_push_processes {
                    Some(p) if !(1..=pa::MAX_PROCESSES).contains(p.get_ref()) => {
                        return Err(bad(
                            p.span(),
                            &format!("sources.{name}.archive_push_processes"),
                            format!("{} is not between 1 and {}", p.get_ref(), pa::MAX_PROCESSES),
                        ));
                    }
                    Some(p) => *p.get_ref(),
                    None => d.processes,
                };
                let queue_max = s
                    .archive_push_queue_max
                    .as_ref()
                    .map(|q| {
                        pa::parse_size(q.get_ref()).map_err(|why| {
                            bad(
                                q.span(),
                                &format!("sources.{name}.archive_push_queue_max"),
                                why,
                            )
                        })
                    })
                    .transpose()?;
                let timeout = duration(&s.archive_push_timeout, "archive_push_timeout")?
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or(d.timeout);
                AsyncSettings {
                    enabled: s.archive_async,
                    processes,
                    queue_max,
                    spool: s.archive_spool_path.map(|p| base_dir.join(p)),
                    timeout,
                }
            };
            sources.insert(
                name.clone(),
                Source {
                    name,
                    kind: s.kind,
                    url,
                    bin_dir: s.bin_dir.map(|p| base_dir.join(p)),
                    tenant: s.tenant.unwrap_or_else(|| "default_tenant".into()),
                    database: s.database.unwrap_or_else(|| "default_database".into()),
                    token: s.token,
                    verify_queries: s
                        .verify_queries
                        .map(Spanned::into_inner)
                        .unwrap_or_default(),
                    count_rows: s.count_rows.unwrap_or(true),
                    restore_to,
                    rto_target,
                    rpo_target,
                    archive_push,
                },
            );
        }

        let tiers = crate::tier::load(path, text, raw.include, raw.tiers, &sources)?;
        crate::tier::check_object_lock(&tiers, &repository)?;

        let notify = match raw.notify {
            Some(n) => Some(crate::notify::Notify {
                webhook: crate::notify::parse_webhook(n.webhook.get_ref())
                    .map_err(|why| bad(n.webhook.span(), "notify.webhook", why))?,
                on_success: n.on_success,
            }),
            None => None,
        };

        let drill = match &raw.drill {
            Some(d) => {
                let duration = |v: &Option<Spanned<String>>, what: &str| {
                    v.as_ref()
                        .map(|x| {
                            crate::util::parse_duration(x.get_ref())
                                .map_err(|why| bad(x.span(), &format!("drill.{what}"), why))
                        })
                        .transpose()
                };
                DrillSettings {
                    rto_target: duration(&d.rto_target, "rto_target")?,
                    rpo_target: duration(&d.rpo_target, "rpo_target")?,
                }
            }
            None => DrillSettings::default(),
        };

        let store_limits = parse_limits(&raw.repository)
            .map_err(|(span, key, why)| bad(span, &format!("repository.{key}"), why))?;

        Ok(Config {
            drill,
            path: path.to_path_buf(),
            repository,
            store_limits,
            recipients,
            identity_file: raw.encryption.identity_file.map(|p| base_dir.join(p)),
            compression: Compression {
                level,
                threads: raw.compression.threads.unwrap_or(0),
            },
            sources,
            tiers,
            notify,
        })
    }

    /// A configured tier, or a usage error listing the tiers there are.
    pub fn tier(&self, name: &str) -> Result<&crate::tier::Tier> {
        self.tiers.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.tiers.keys().map(String::as_str).collect();
            Error::usage(format!("no tier named {name:?} in {}", self.path.display())).hint(
                if known.is_empty() {
                    "define one under [tiers.NAME], or include a plan (see docs/configuration.md)"
                        .to_string()
                } else {
                    format!("configured tiers: {}", known.join(", "))
                },
            )
        })
    }

    pub fn source(&self, name: &str) -> Result<&Source> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            Error::usage(format!(
                "no source named {name:?} in {}",
                self.path.display()
            ))
            .hint(if known.is_empty() {
                "define one under [sources.NAME]".to_string()
            } else {
                format!("configured sources: {}", known.join(", "))
            })
        })
    }
}

fn parse_repository(r: &RawRepository) -> std::result::Result<RepositoryLocation, String> {
    let url = Url::parse(r.url.get_ref()).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err("a file URL needs an absolute path: file:///path/to/repo".into());
            }
            let path = url.to_file_path().map_err(|_| {
                "a file URL needs an absolute path: file:///path/to/repo".to_string()
            })?;
            Ok(RepositoryLocation::Local(path))
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or("an s3 URL names its bucket: s3://bucket/prefix")?
                .to_string();
            let prefix = url.path().trim_matches('/').to_string();
            Ok(RepositoryLocation::S3 {
                bucket,
                prefix,
                endpoint: r.endpoint.as_ref().map(|e| e.get_ref().clone()),
                region: r.region.clone(),
                path_style: r.path_style,
            })
        }
        other => Err(format!(
            "unsupported scheme {other:?}; use file:///path or s3://bucket/prefix"
        )),
    }
}

/// Longest a store timeout may be set to: beyond, a typo ("10d") would
/// hang a command in all but name.
const MAX_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `[repository]` `connect_timeout`, `request_timeout`, `stall_timeout`
/// and `retries`, over the defaults. Errors carry the value's span and key.
fn parse_limits(
    r: &RawRepository,
) -> std::result::Result<
    crate::storage::retry::Limits,
    (std::ops::Range<usize>, &'static str, String),
> {
    use crate::storage::retry::{Limits, MAX_RETRIES};
    let mut limits = Limits::default();
    let timeout =
        |v: &Option<Spanned<String>>, key: &'static str, into: &mut std::time::Duration| {
            let Some(v) = v else { return Ok(()) };
            let d = crate::util::parse_duration(v.get_ref())
                .map_err(|why| (v.span(), key, why))?
                .to_std()
                .map_err(|_| (v.span(), key, "must be positive".to_string()))?;
            if d.is_zero() {
                return Err((
                    v.span(),
                    key,
                    "must be at least 1s (0 would fail every call)".into(),
                ));
            }
            if d > MAX_STORE_TIMEOUT {
                return Err((
                    v.span(),
                    key,
                    format!("{:?} is longer than the 1h allowed", v.get_ref()),
                ));
            }
            *into = d;
            Ok(())
        };
    timeout(
        &r.connect_timeout,
        "connect_timeout",
        &mut limits.connect_timeout,
    )?;
    timeout(
        &r.request_timeout,
        "request_timeout",
        &mut limits.request_timeout,
    )?;
    timeout(&r.stall_timeout, "stall_timeout", &mut limits.stall_timeout)?;
    if limits.connect_timeout > limits.request_timeout {
        let (span, key) = match (&r.connect_timeout, &r.request_timeout) {
            (Some(c), _) => (c.span(), "connect_timeout"),
            (None, Some(q)) => (q.span(), "request_timeout"),
            (None, None) => unreachable!("the defaults are consistent"),
        };
        return Err((
            span,
            key,
            format!(
                "connect_timeout ({}s) exceeds request_timeout ({}s), which includes connecting",
                limits.connect_timeout.as_secs(),
                limits.request_timeout.as_secs()
            ),
        ));
    }
    if let Some(n) = &r.retries {
        let v = *n.get_ref();
        if !(0..=MAX_RETRIES as i64).contains(&v) {
            return Err((
                n.span(),
                "retries",
                format!("{v} is out of range: 0 to {MAX_RETRIES} retries after the first attempt"),
            ));
        }
        limits.retries = v as u32;
    }
    Ok(limits)
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 1-based line number of a byte offset.
/// serde's Rust type names in a parse error, said for people
/// (`expected i32` → `expected a whole number`).
fn plain_type_names(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, plain) in [
        ("expected usize", "expected a whole number"),
        ("expected isize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i16", "expected a whole number"),
        ("expected i8", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a source's `restore_to` for its kind.
fn restore_to(
    kind: SourceKind,
    v: &str,
    base_dir: &Path,
) -> std::result::Result<RestoreTo, String> {
    match kind {
        SourceKind::Postgres => {
            if v.contains("://") {
                return Err(
                    "a postgres source comes back as a data directory: give its path (e.g. /var/lib/postgresql/15/restored)"
                        .into(),
                );
            }
            if v.is_empty() {
                return Err("empty path".into());
            }
            Ok(RestoreTo::Dir(base_dir.join(v)))
        }
        SourceKind::Redis => {
            let url = Url::parse(v).map_err(|e| format!("not a URL: {e}"))?;
            crate::sources::redis::check_url(&url)?;
            Ok(RestoreTo::Server(url))
        }
        SourceKind::Chroma => {
            let url = Url::parse(v).map_err(|e| format!("not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("a chroma source loads into a server: http://host:port".into());
            }
            Ok(RestoreTo::Server(url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/strata/strata.toml"), text)
    }

    fn base(extra: &str) -> String {
        format!(
            "[repository]\nurl = \"file:///var/backups/strata\"\n\n[encryption]\nrecipients = [\"{KEY}\"]\n{extra}"
        )
    }

    #[test]
    fn minimal_local_config() {
        let c = parse(&base("")).unwrap();
        assert!(
            matches!(c.repository, RepositoryLocation::Local(ref p) if p == Path::new("/var/backups/strata"))
        );
        assert_eq!(c.compression.level, DEFAULT_ZSTD_LEVEL);
    }

    #[test]
    fn s3_repository() {
        let text = format!(
            "[repository]\nurl = \"s3://bkt/some/prefix/\"\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\n[encryption]\nrecipients = [\"{KEY}\"]\n"
        );
        match parse(&text).unwrap().repository {
            RepositoryLocation::S3 {
                bucket,
                prefix,
                endpoint,
                path_style,
                ..
            } => {
                assert_eq!(bucket, "bkt");
                assert_eq!(prefix, "some/prefix");
                assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9000"));
                assert!(path_style);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn store_limits_default_and_parse() {
        // issue 13 item 3: deadlines and retries on every store call, configurable.
        let c = parse(&base("")).unwrap();
        assert_eq!(c.store_limits, crate::storage::retry::Limits::default());
        let text = format!(
            "[repository]\nurl = \"s3://bkt/p\"\nconnect_timeout = \"2s\"\nrequest_timeout = \"30s\"\nstall_timeout = \"1m\"\nretries = 0\n[encryption]\nrecipients = [\"{KEY}\"]\n"
        );
        let l = parse(&text).unwrap().store_limits;
        assert_eq!(l.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(l.request_timeout, std::time::Duration::from_secs(30));
        assert_eq!(l.stall_timeout, std::time::Duration::from_secs(60));
        assert_eq!(l.retries, 0);
    }

    #[test]
    fn bad_store_limits_name_line_and_key() {
        let cases = [
            (
                "request_timeout = \"soon\"",
                "repository.request_timeout",
                "not a duration",
            ),
            (
                "connect_timeout = \"0\"",
                "repository.connect_timeout",
                "at least 1s",
            ),
            ("stall_timeout = \"2d\"", "repository.stall_timeout", "1h"),
            ("retries = -1", "repository.retries", "out of range"),
            ("retries = 11", "repository.retries", "0 to 10"),
            (
                "request_timeout = \"2s\"",
                "repository.request_timeout",
                "includes connecting",
            ),
        ];
        for (line, key, why) in cases {
            let text = format!(
                "[repository]\nurl = \"file:///x\"\n{line}\n[encryption]\nrecipients = [\"{KEY}\"]\n"
            );
            let e = parse(&text).unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Usage, "{line}");
            assert!(e.message.contains(key), "{line}: {e}");
            assert!(e.message.contains("line 3"), "{line}: {e}");
            assert!(e.message.contains(why), "{line}: {e}");
        }
        let e = parse(&format!(
            "[repository]\nurl = \"file:///x\"\nretries = \"3\"\n[encryption]\nrecipients = [\"{KEY}\"]\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("line 3"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse(&base(
            "[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nbogus = 1\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("/etc/strata/strata.toml"), "{e}");
        assert!(e.message.contains("line 9"), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
    }

    /// Issue 15 (rough edges): type errors said `expected i32` and not
    /// the key; `include` after a table gave a misleading message.
    #[test]
    fn type_errors_name_the_line_in_plain_words() {
        let e = parse(&base("[compression]\nlevel = \"high\"\n")).unwrap_err();
        assert!(e.message.contains("level = \"high\""), "{e}");
        assert!(e.message.contains("expected a whole number"), "{e}");
        assert!(
            !e.message.contains("i32") && !e.message.contains("u32"),
            "{e}"
        );
        let e = parse(&base(
            "[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\ninclude = [\"plan.toml\"]\n",
        ))
        .unwrap_err();
        assert!(
            e.hint.as_deref().is_some_and(|h| h.contains("top-level")),
            "{e}"
        );
    }

    #[test]
    fn missing_key_is_named() {
        let e = parse("[repository]\nurl = \"file:///x\"\n").unwrap_err();
        assert!(e.message.contains("encryption"), "{e}");
    }

    #[test]
    fn bad_recipient_names_line() {
        let e =
            parse("[repository]\nurl = \"file:///x\"\n[encryption]\nrecipients = [\"age1nope\"]\n")
                .unwrap_err();
        assert!(e.message.contains("line 4"), "{e}");
        assert!(e.message.contains("encryption.recipients"), "{e}");
    }

    #[test]
    fn bad_repository_scheme() {
        let e = parse(&format!(
            "[repository]\nurl = \"ftp://x/y\"\n[encryption]\nrecipients = [\"{KEY}\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.message.contains("repository.url") && e.message.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn source_without_database() {
        let e = parse(&base(
            "[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h:5432\"\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("sources.app.url"), "{e}");
    }

    #[test]
    fn bad_kind_and_level() {
        let e = parse(&base(
            "[sources.app]\nkind = \"mysql\"\nurl = \"postgres://u@h/db\"\n",
        ))
        .unwrap_err();
        assert!(
            e.message.contains("mysql") && e.message.contains("line 7"),
            "{e}"
        );
        let e = parse(&base("[compression]\nlevel = 40\n")).unwrap_err();
        assert!(e.message.contains("compression.level"), "{e}");
    }

    #[test]
    fn relative_identity_file_is_relative_to_config() {
        let c = parse(&base("identity_file = \"keys/id.txt\"\n")).unwrap();
        assert_eq!(
            c.identity_file.unwrap(),
            Path::new("/etc/strata/keys/id.txt")
        );
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;
    use crate::tier::TierKind;
    use chrono::Duration;

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    /// A config with two postgres sources, `app` and `crm`, then `extra`.
    fn text(extra: &str) -> String {
        format!(
            "[repository]\nurl = \"file:///var/backups/strata\"\n\n[encryption]\nrecipients = [\"{KEY}\"]\n\n\
             [sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/app\"\n\n\
             [sources.crm]\nkind = \"postgres\"\nurl = \"postgres://u@h/crm\"\n{extra}"
        )
    }

    /// The line `needle` is on, 1-based.
    fn line(text: &str, needle: &str) -> usize {
        text[..text.find(needle).expect(needle)]
            .matches('\n')
            .count()
            + 1
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/strata/strata.toml"), text)
    }

    #[test]
    fn tier_with_every_key() {
        let t = text(
            "\n[tiers.daily]\nkind = \"dump\"\nschedule = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n\
             sources = [\"crm\"]\nkeep_within = \"30d\"\nkeep_last = 3\nkeep_daily = 7\n",
        );
        let c = parse(&t).unwrap();
        let d = &c.tiers["daily"];
        assert_eq!(d.kind, TierKind::Dump);
        assert_eq!(d.schedule.as_ref().unwrap().as_str(), "0 2 * * *");
        assert_eq!(d.tz(), chrono_tz::Europe::Berlin);
        assert_eq!(d.sources, ["crm"]);
        assert!(d.sources_listed);
        assert_eq!(d.policy.keep_within, Some(Duration::days(30)));
        assert_eq!(d.policy.keep_last, Some(3));
        assert_eq!(d.policy.keep_daily, Some(7));
        assert_eq!(d.defined_in, Path::new("/etc/strata/strata.toml"));
        assert!(c.tier("daily").is_ok());
        let e = c.tier("weekly").unwrap_err();
        assert!(e.hint.unwrap().contains("configured tiers: daily"));
    }

    #[test]
    fn defaults_dump_utc_and_every_fitting_source() {
        let c = parse(&text("\n[tiers.daily]\nkeep_last = 2\n")).unwrap();
        let d = &c.tiers["daily"];
        assert_eq!(d.kind, TierKind::Dump);
        assert!(d.schedule.is_none());
        assert_eq!(d.tz(), chrono_tz::UTC);
        assert_eq!(d.sources, ["app", "crm"]);
        assert!(!d.sources_listed);
        // Without a Redis source, a snapshot tier covers nothing.
        let c = parse(&text("\n[tiers.hourly]\nkind = \"snapshot\"\n")).unwrap();
        assert!(c.tiers["hourly"].sources.is_empty());
        // An empty list switches a tier off.
        let c = parse(&text("\n[tiers.daily]\nsources = []\n")).unwrap();
        assert!(c.tiers["daily"].sources.is_empty());
        assert!(c.tiers["daily"].policy.is_empty());
    }

    #[test]
    fn every_kind_is_accepted() {
        for k in TierKind::ALL {
            let c = parse(&text(&format!("\n[tiers.t]\nkind = \"{}\"\n", k.as_str()))).unwrap();
            assert_eq!(c.tiers["t"].kind, k);
        }
        let t = text("\n[tiers.t]\nkind = \"incremental\"\n");
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("incremental"), "{e}");
        assert!(
            e.message
                .contains(&format!("line {}", line(&t, "kind = \"incr"))),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        for (extra, needle, key, why) in [
            (
                "\n[tiers.daily]\nschedule = \"0 2 * *\"\n",
                "schedule",
                "tiers.daily.schedule",
                "has 4 fields",
            ),
            (
                "\n[tiers.daily]\nschedule = \"0 2 L * *\"\n",
                "schedule",
                "tiers.daily.schedule",
                "day-of-month",
            ),
            (
                "\n[tiers.daily]\ntimezone = \"Mars/Olympus\"\n",
                "timezone",
                "tiers.daily.timezone",
                "not a time zone",
            ),
            (
                "\n[tiers.daily]\nsources = [\"app\",\n  \"nope\"]\n",
                "\"nope\"",
                "tiers.daily.sources",
                "configured sources: app, crm",
            ),
            (
                "\n[tiers.daily]\nsources = [\"app\", \"app\"]\n",
                "\"app\", \"app\"",
                "tiers.daily.sources",
                "listed twice",
            ),
            (
                "\n[tiers.daily]\nkeep_last = 2\nkeep_daily = -1\n",
                "keep_daily",
                "tiers.daily.keep_daily",
                "whole number",
            ),
            (
                "\n[tiers.daily]\nkeep_within = \"3y\"\n",
                "keep_within",
                "tiers.daily.keep_within",
                "not a duration",
            ),
            (
                "\n[tiers.daily]\nkeep_last = 0\n",
                "keep_last",
                "tiers.daily.keep_last",
                "all zero",
            ),
            (
                "\n[tiers.daily]\nkeep_dayly = 7\n",
                "keep_dayly",
                "keep_dayly",
                "unknown field",
            ),
            (
                "\n[tiers.\"bad name\"]\nkeep_last = 1\n",
                "keep_last",
                "tiers.bad name",
                "letters, digits",
            ),
        ] {
            let t = text(extra);
            let e = parse(&t).unwrap_err();
            let m = &e.message;
            assert!(m.contains("/etc/strata/strata.toml"), "{extra}: {m}");
            assert!(m.contains(key), "{extra}: {m}");
            assert!(m.contains(why), "{extra}: {m}");
            if needle != "keep_last" || !extra.contains("bad name") {
                assert!(
                    m.contains(&format!("line {},", line(&t, needle)))
                        || m.contains(&format!("line {}:", line(&t, needle)))
                        || m.contains(&format!("line {} (", line(&t, needle))),
                    "{extra}: {m}"
                );
            }
        }
    }

    /// Writes `files` (relative path, text) under a temp dir, then parses
    /// `strata.toml` there.
    fn with_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config>) {
        let dir = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let r = Config::load(&dir.path().join("strata.toml"));
        (dir, r)
    }

    fn with_include(includes: &str, extra: &str) -> String {
        // `include` is a top-level key: it must come before any table.
        format!("include = [{includes}]\n{}", text(extra))
    }

    #[test]
    fn include_loads_tiers_relative_to_the_config() {
        let plan = "[tiers.daily]\nkind = \"dump\"\nschedule = \"0 2 * * *\"\nkeep_within = \"30d\"\n\n\
                    [tiers.weekly]\nkind = \"base\"\nschedule = \"0 3 * * 0\"\nkeep_within = \"90d\"\n";
        let (dir, c) = with_files(&[
            ("plans/p.toml", plan),
            ("strata.toml", &with_include("\"plans/p.toml\"", "")),
        ]);
        let c = c.unwrap();
        assert_eq!(c.tiers.len(), 2);
        assert_eq!(c.tiers["daily"].sources, ["app", "crm"]);
        assert_eq!(c.tiers["weekly"].kind, TierKind::Base);
        assert_eq!(
            c.tiers["weekly"].defined_in,
            dir.path().join("plans/p.toml")
        );
    }

    #[test]
    fn inline_tier_replaces_the_included_one() {
        let plan = "[tiers.daily]\nschedule = \"0 2 * * *\"\nkeep_within = \"30d\"\n";
        let (dir, c) = with_files(&[
            ("p.toml", plan),
            (
                "strata.toml",
                &with_include(
                    "\"p.toml\"",
                    "\n[tiers.daily]\nsources = [\"app\"]\nkeep_last = 2\n",
                ),
            ),
        ]);
        let d = &c.unwrap().tiers["daily"];
        assert_eq!(d.sources, ["app"]);
        assert_eq!(d.policy.keep_last, Some(2));
        // Replaced whole: nothing of the plan's tier is left.
        assert!(d.schedule.is_none());
        assert!(d.policy.keep_within.is_none());
        assert_eq!(d.defined_in, dir.path().join("strata.toml"));
    }

    #[test]
    fn included_plan_may_define_only_tiers() {
        for (key, body) in [
            ("repository", "[repository]\nurl = \"file:///x\"\n"),
            ("encryption", "[encryption]\nrecipients = []\n"),
            (
                "sources",
                "[sources.x]\nkind = \"postgres\"\nurl = \"postgres://h/x\"\n",
            ),
            ("include", "include = [\"other.toml\"]\n"),
        ] {
            // `body` starts on line 4; a top-level key must precede tables.
            let plan = format!("# a plan\n\n\n{body}\n[tiers.daily]\nkeep_last = 1\n");
            let (dir, c) = with_files(&[
                ("p.toml", &plan),
                ("strata.toml", &with_include("\"p.toml\"", "")),
            ]);
            let e = c.unwrap_err();
            let m = &e.message;
            assert!(
                m.contains(&dir.path().join("p.toml").display().to_string()),
                "{m}"
            );
            assert!(
                m.contains(&format!("line 4: {key}: an included plan may define only")),
                "{m}"
            );
        }
    }

    #[test]
    fn include_errors() {
        // Missing file: the config's line and key.
        let (_d, c) = with_files(&[("strata.toml", &with_include("\"nope.toml\"", ""))]);
        let e = c.unwrap_err();
        assert!(
            e.message
                .contains("strata.toml, line 1: include: cannot read")
                && e.message.contains("nope.toml"),
            "{e}"
        );
        // A bad key in the plan: the plan's file and line.
        let (_d, c) = with_files(&[
            (
                "p.toml",
                "# plan\n[tiers.daily]\nkeep_last = 1\nschedule = \"0 25 * * *\"\n",
            ),
            ("strata.toml", &with_include("\"p.toml\"", "")),
        ]);
        let e = c.unwrap_err();
        assert!(
            e.message.contains("p.toml, line 4: tiers.daily.schedule"),
            "{e}"
        );
        // A plan naming an unknown source.
        let (_d, c) = with_files(&[
            ("p.toml", "[tiers.daily]\nsources = [\"redis\"]\n"),
            ("strata.toml", &with_include("\"p.toml\"", "")),
        ]);
        let e = c.unwrap_err();
        assert!(
            e.message
                .contains("p.toml, line 2: tiers.daily.sources: no source named \"redis\""),
            "{e}"
        );
        // The same tier in two plans is ambiguous.
        let (_d, c) = with_files(&[
            ("a.toml", "[tiers.daily]\nkeep_last = 1\n"),
            ("b.toml", "\n[tiers.daily]\nkeep_last = 2\n"),
            ("strata.toml", &with_include("\"a.toml\", \"b.toml\"", "")),
        ]);
        let e = c.unwrap_err();
        assert!(
            e.message
                .contains("b.toml, line 2: tiers.daily: already defined by"),
            "{e}"
        );
        assert!(e.message.contains("a.toml"), "{e}");
    }

    #[test]
    fn redis_sources_fit_snapshot_tiers() {
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://:pw@h:6379\"\n\n[tiers.hourly]\nkind = \"snapshot\"\n\n[tiers.daily]\n",
        );
        let c = parse(&t).unwrap();
        assert_eq!(c.sources["cache"].kind, SourceKind::Redis);
        assert_eq!(c.tiers["hourly"].sources, ["cache"]);
        assert_eq!(c.tiers["daily"].sources, ["app", "crm"]);
        let t = text("\n[sources.cache]\nkind = \"redis\"\nurl = \"postgres://h/db\"\n");
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.cache.url: a redis source needs redis://",
                line(&t, "url = \"postgres://h/db")
            )),
            "{e}"
        );
        let t = text("\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h:6379/2\"\n");
        assert!(parse(&t).unwrap_err().message.contains("every database"));
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\n[tiers.d]\nkind = \"dump\"\nsources = [\"cache\"]\n",
        );
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("cache is a redis source"), "{e}");
    }

    #[test]
    fn verify_queries_are_for_postgres_sources() {
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\nverify_queries = [\"SELECT 1\"]\n",
        );
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.cache.verify_queries: verify_queries are SQL",
                line(&t, "verify_queries = ")
            )),
            "{e}"
        );
        let t = text(
            "\n[sources.vec]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nverify_queries = [\"SELECT 1\", \"SELECT 2\"]\n",
        );
        assert_eq!(parse(&t).unwrap().sources["vec"].verify_queries.len(), 2);
    }

    #[test]
    fn restore_to_fits_the_source_kind() {
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\nrestore_to = \"redis://standby:6380\"\n\
             [sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nrestore_to = \"restored/db\"\n",
        );
        let c = parse(&t).unwrap();
        assert_eq!(
            c.sources["cache"].restore_to,
            Some(RestoreTo::Server(
                Url::parse("redis://standby:6380").unwrap()
            ))
        );
        match &c.sources["db"].restore_to {
            Some(RestoreTo::Dir(d)) => {
                assert!(d.ends_with("restored/db") && d.is_absolute(), "{d:?}")
            }
            other => panic!("{other:?}"),
        }
        let t = text(
            "\n[sources.db]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nrestore_to = \"postgres://other/db\"\n",
        );
        let e = parse(&t).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "line {}: sources.db.restore_to: a postgres source comes back as a data directory",
                line(&t, "restore_to = ")
            )),
            "{e}"
        );
        let t = text(
            "\n[sources.cache]\nkind = \"redis\"\nurl = \"redis://h\"\nrestore_to = \"/var/lib/redis\"\n",
        );
        assert!(
            parse(&t)
                .unwrap_err()
                .message
                .contains("sources.cache.restore_to: not a URL")
        );
    }

    #[test]
    fn source_must_fit_the_tier_kind() {
        let t = text("\n[tiers.hourly]\nkind = \"snapshot\"\nsources = [\"app\"]\n");
        let e = parse(&t).unwrap_err();
        assert!(
            e.message
                .contains("tiers.hourly.sources: a snapshot tier backs up redis sources")
                && e.message.contains("app is a postgres source"),
            "{e}"
        );
    }

    #[test]
    fn the_standard_plan_loads() {
        let plan = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schedules/standard.toml"
        ))
        .unwrap();
        let (_d, c) = with_files(&[
            ("schedules/standard.toml", &plan),
            (
                "strata.toml",
                &with_include("\"schedules/standard.toml\"", ""),
            ),
        ]);
        let c = c.unwrap();
        let kinds: Vec<(&str, TierKind)> =
            c.tiers.iter().map(|(n, t)| (n.as_str(), t.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("daily", TierKind::Dump),
                ("drill", TierKind::Drill),
                ("hourly", TierKind::Snapshot),
                ("wal", TierKind::Wal),
                ("weekly", TierKind::Base),
            ]
        );
        let within = |n: &str| c.tiers[n].policy.keep_within;
        assert_eq!(within("wal"), Some(Duration::days(7)));
        assert_eq!(within("hourly"), Some(Duration::hours(24)));
        assert_eq!(within("daily"), Some(Duration::days(30)));
        assert_eq!(within("weekly"), Some(Duration::days(90)));
        assert!(c.tiers["wal"].schedule.is_none());
        assert_eq!(c.tiers["daily"].sources, ["app", "crm"]);
        assert!(c.tiers["hourly"].sources.is_empty());
        assert_eq!(
            c.tiers["drill"].schedule.as_ref().unwrap().as_str(),
            "0 4 1 * *"
        );
    }
}

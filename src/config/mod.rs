//! `strata.toml`: where the repositories are, who can read them, what to
//! back up.
//!
//! Found by `--config PATH`, else `$STRATA_CONFIG`, else `./strata.toml`.
//! Unknown keys, missing keys and bad values are errors naming the file,
//! the line and the key. Values are checked here, once, and handed on as
//! typed settings (a parsed URL, decoded recipients), so no later code
//! validates them again. `[tiers.*]` and `include`d plan files are parsed
//! by [`crate::tier`]; `[repository]` and `[repositories.*]` by
//! [`repositories`], which also gives the config as one repository sees
//! it ([`Config::select`], `--repo`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::error::{Error, Result};

pub mod repositories;
mod sections;
mod tiers;

pub use repositories::{RepoLock, RepositoryConfig};

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
    /// The repository named `default` (see [`repositories`]).
    repository: Option<Spanned<RawRepository>>,
    /// `[repositories.NAME]`: further repositories (`--repo NAME`).
    #[serde(default)]
    repositories: BTreeMap<String, Spanned<RawRepository>>,
    encryption: RawEncryption,
    #[serde(default)]
    compression: RawCompression,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    /// Plan files defining `[tiers.*]`, relative to this file.
    include: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    tiers: BTreeMap<String, Spanned<tiers::RawTier>>,
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
    /// Required but for `format = "pagerduty"` (default: PagerDuty's endpoint).
    webhook: Option<Spanned<String>>,
    #[serde(default)]
    on_success: bool,
    /// `json` (default), `slack` or `pagerduty`.
    format: Option<Spanned<String>>,
    /// PagerDuty's integration key; a secret, never printed.
    routing_key: Option<Spanned<String>>,
    /// A PEM file of CA certificates trusted besides the system's.
    ca_file: Option<Spanned<String>>,
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
    /// S3: a PEM file of CA certificates trusted besides the system's
    /// (a private CA's MinIO); relative to the config file.
    ca_bundle: Option<Spanned<String>>,
    /// S3: the AWS shared-config profile holding this repository's
    /// credentials (else the standard chain).
    profile: Option<Spanned<String>>,
    /// "tiers" (default), "off", "governance" or "compliance".
    object_lock: Option<Spanned<String>>,
    /// `[….retention.TIER]`: the tier's keep_* rules in this repository.
    #[serde(default)]
    retention: BTreeMap<String, Spanned<crate::retention::RawPolicy>>,
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
    /// Redis: "auto" (default), "replication" or "logical".
    mode: Option<Spanned<String>>,
    /// Postgres: base backups read from this streaming standby.
    backup_from: Option<Spanned<String>>,
    /// Postgres: the most replay lag `backup_from` may have (a size).
    backup_from_max_lag: Option<Spanned<String>>,
    /// Postgres: how long a base backup waits for its WAL to be archived
    /// while archiving makes no progress (a duration).
    archive_wait: Option<Spanned<String>>,
}

/// A source's `restore_to`: a PostgreSQL data directory, or the Redis or
/// Chroma server to load the snapshot into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTo {
    Dir(PathBuf),
    Server(Url),
}

pub use crate::catalog::manifest::SourceKind;

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
    /// Redis: how snapshots are taken (`mode`).
    pub redis_mode: crate::sources::redis::Mode,
    /// Postgres: base backups read from this streaming standby of `url`'s
    /// cluster (the primary carries no read load); `None`: from `url`.
    pub backup_from: Option<Url>,
    /// The most replay lag `backup_from` may have, in bytes of WAL.
    pub backup_from_max_lag: u64,
    /// Postgres: how long a base backup waits for the WAL it needs to be
    /// archived while the server archives nothing (`archive_wait`).
    pub archive_wait: std::time::Duration,
}

/// `archive_wait` when not set.
pub const DEFAULT_ARCHIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The selected repository (`--repo`, else the default; see
    /// [`Config::select`]).
    pub repository: RepositoryLocation,
    /// Its deadlines and retries for every store call.
    pub store_limits: crate::storage::retry::Limits,
    /// Its name (`default` for `[repository]`).
    pub repo_name: String,
    /// Every configured repository, the default first.
    pub repositories: Vec<RepositoryConfig>,
    /// The tiers as defined, before a repository's overrides (`tiers` is
    /// them as they apply in the selected repository).
    defined_tiers: BTreeMap<String, crate::tier::Tier>,
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
                // (unless the line may hold a secret: a webhook, a key, a
                // token, a URL with a password)
                if let Some(l) = text.lines().nth(line - 1).map(str::trim)
                    && !l.is_empty()
                    && l.len() <= 120
                    && !may_hold_secret(l)
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

        let repositories = repositories::parse_all(
            path,
            raw.repository.as_ref(),
            &raw.repositories,
            base_dir,
            &|span, key, why| bad(span, key, why),
        )?;

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
            let redis_mode = match &s.mode {
                None => crate::sources::redis::Mode::default(),
                Some(m) if s.kind != SourceKind::Redis => {
                    return Err(bad(
                        m.span(),
                        &format!("sources.{name}.mode"),
                        format!(
                            "mode chooses how a redis source is snapshotted; a {} source has none",
                            s.kind.as_str()
                        ),
                    ));
                }
                Some(m) => crate::sources::redis::Mode::parse(m.get_ref())
                    .map_err(|why| bad(m.span(), &format!("sources.{name}.mode"), why))?,
            };
            let (backup_from, backup_from_max_lag) = standby(&name, s.kind, &s, &bad)?;
            let archive_wait = match &s.archive_wait {
                Some(v) if s.kind != SourceKind::Postgres => {
                    return Err(bad(
                        v.span(),
                        &format!("sources.{name}.archive_wait"),
                        format!(
                            "archive_wait bounds a base backup's wait for archived WAL; a {} source has none",
                            s.kind.as_str()
                        ),
                    ));
                }
                Some(v) => {
                    match duration(&s.archive_wait, "archive_wait")?.and_then(|d| d.to_std().ok()) {
                        Some(d) if d >= std::time::Duration::from_secs(1) => d,
                        _ => {
                            return Err(bad(
                                v.span(),
                                &format!("sources.{name}.archive_wait"),
                                "at least 1s".into(),
                            ));
                        }
                    }
                }
                None => DEFAULT_ARCHIVE_WAIT,
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
                    redis_mode,
                    backup_from,
                    backup_from_max_lag,
                    archive_wait,
                },
            );
        }

        let tiers = tiers::load(path, text, raw.include, raw.tiers, &sources)?;
        for t in tiers.values() {
            for to in &t.copy_to {
                if !repositories.iter().any(|r| &r.name == to) {
                    let known: Vec<&str> = repositories.iter().map(|r| r.name.as_str()).collect();
                    return Err(Error::usage(format!(
                        "invalid config {}: tiers.{}.copy_to: no repository named {to:?} (configured repositories: {})",
                        t.defined_in.display(),
                        t.name,
                        known.join(", ")
                    )));
                }
            }
        }

        let notify = match raw.notify {
            Some(n) => Some(
                sections::parse_notify(n, base_dir)
                    .map_err(|(span, key, why)| bad(span, &format!("notify.{key}"), why))?,
            ),
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

        let first = repositories[0].clone();
        let config = Config {
            drill,
            path: path.to_path_buf(),
            repository: first.location.clone(),
            store_limits: first.limits,
            repo_name: first.name.clone(),
            defined_tiers: tiers.clone(),
            repositories,
            recipients,
            identity_file: raw.encryption.identity_file.map(|p| base_dir.join(p)),
            compression: Compression {
                level,
                threads: raw.compression.threads.unwrap_or(0),
            },
            sources,
            tiers,
            notify,
        };
        // every repository's tiers are checked now (a lock on a local
        // directory, a retention override of no tier), not when first used
        for r in &config.repositories {
            repositories::tiers_for(path, r, &config.defined_tiers)?;
        }
        config.select(None)
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

/// Whether a config line may hold a secret, so it is not quoted in a
/// parse error: a webhook URL, PagerDuty's routing key, a token, a URL
/// with a user or password.
fn may_hold_secret(line: &str) -> bool {
    let key = line.split('=').next().unwrap_or("").trim();
    matches!(key, "webhook" | "routing_key" | "token")
        || line
            .split_once("://")
            .is_some_and(|(_, rest)| rest.split(['/', '"']).next().unwrap_or("").contains('@'))
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

/// A postgres source's `backup_from` (a `postgres://` URL) and
/// `backup_from_max_lag` (a size; default
/// [`DEFAULT_MAX_LAG`](crate::sources::postgres::base::DEFAULT_MAX_LAG)).
fn standby(
    name: &str,
    kind: SourceKind,
    s: &RawSource,
    bad: &dyn Fn(std::ops::Range<usize>, &str, String) -> Error,
) -> Result<(Option<Url>, u64)> {
    let key = |k: &str| format!("sources.{name}.{k}");
    if kind != SourceKind::Postgres
        && let Some(v) = s.backup_from.as_ref().or(s.backup_from_max_lag.as_ref())
    {
        return Err(bad(
            v.span(),
            &key("backup_from"),
            format!(
                "base backups from a standby are for postgres sources; this is a {} source",
                kind.as_str()
            ),
        ));
    }
    let from = match &s.backup_from {
        None => None,
        Some(v) => {
            let url = Url::parse(v.get_ref())
                .map_err(|e| bad(v.span(), &key("backup_from"), format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "postgres" | "postgresql") {
                return Err(bad(
                    v.span(),
                    &key("backup_from"),
                    "the standby's postgres://user@host:port/database".into(),
                ));
            }
            Some(url)
        }
    };
    let lag = match &s.backup_from_max_lag {
        None => crate::sources::postgres::base::DEFAULT_MAX_LAG,
        Some(_) if from.is_none() => {
            let v = s.backup_from_max_lag.as_ref().expect("matched");
            return Err(bad(
                v.span(),
                &key("backup_from_max_lag"),
                "it limits the lag of backup_from, which is not set".into(),
            ));
        }
        Some(v) => crate::sources::postgres::wal::push_async::parse_size(v.get_ref())
            .map_err(|why| bad(v.span(), &key("backup_from_max_lag"), why))?,
    };
    Ok((from, lag))
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
    fn ca_bundle_is_for_s3_and_checked_at_load() {
        // issue 17 item 5
        let e = parse(&base("").replace("[encryption]", "ca_bundle = \"ca.pem\"\n[encryption]"))
            .unwrap_err();
        assert!(
            e.message.contains("repository.ca_bundle") && e.message.contains("s3://"),
            "{e}"
        );
        let text = format!(
            "[repository]\nurl = \"s3://bkt/p\"\nca_bundle = \"missing-ca.pem\"\n[encryption]\nrecipients = [\"{KEY}\"]\n"
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("repository.ca_bundle"), "{e}");
        assert!(e.message.contains("/etc/strata/missing-ca.pem"), "{e}");
    }

    #[test]
    fn notify_formats() {
        // issue 17 item 4: https webhooks, slack and pagerduty formats
        let c = parse(&base(
            "[notify]\nwebhook = \"https://hooks.slack.com/services/T/B/SECRET\"\nformat = \"slack\"\n",
        ))
        .unwrap();
        let n = c.notify.unwrap();
        assert!(n.format == crate::notify::Format::Slack);
        assert!(!format!("{c:?}", c = n).contains("SECRET"));
        let n = parse(&base(
            "[notify]\nformat = \"pagerduty\"\nrouting_key = \"R0UTING\"\n",
        ))
        .unwrap()
        .notify
        .unwrap();
        assert_eq!(n.webhook.as_str(), crate::notify::PAGERDUTY_URL);
        let e = parse(&base("[notify]\nformat = \"pagerduty\"\n")).unwrap_err();
        assert!(e.message.contains("notify.routing_key"), "{e}");
        let e = parse(&base(
            "[notify]\nwebhook = \"https://h/\"\nrouting_key = \"R0UTING\"\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("notify.routing_key"), "{e}");
        assert!(!e.message.contains("R0UTING"), "{e}");
        let e = parse(&base(
            "[notify]\nwebhook = \"https://h/\"\nformat = \"teams\"\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("notify.format"), "{e}");
        let e = parse(&base(
            "[notify]\nwebhook = \"https://h/\"\nca_file = \"/nonexistent/ca.pem\"\n",
        ))
        .unwrap_err();
        assert!(
            e.message.contains("notify.ca_file") && e.message.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        // A TOML error on a line holding a secret does not quote the line.
        let e = parse(&base(
            "[notify]\nwebhook = https://hooks.slack.com/services/T/B/SECRET\n",
        ))
        .unwrap_err();
        assert!(!e.message.contains("SECRET"), "{e}");
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

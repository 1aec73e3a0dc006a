//! `strata.toml`: where the repository is, who can read it, what to back up.
//!
//! Found by `--config PATH`, else `$STRATA_CONFIG`, else `./strata.toml`.
//! Unknown keys, missing keys and bad values are errors naming the file,
//! the line and the key. Values are checked here, once, and handed on as
//! typed settings (a parsed URL, decoded recipients), so no later code
//! validates them again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::error::{Error, Result};

pub const DEFAULT_FILE: &str = "strata.toml";
pub const ENV_VAR: &str = "STRATA_CONFIG";

/// zstd level used when `[compression] level` is not set. Level 1: on
/// realistic (poorly compressible) PostgreSQL data it runs about 4× faster
/// than level 3 for nearly the same ratio; see docs/performance.md.
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    endpoint: Option<Spanned<String>>,
    region: Option<String>,
    #[serde(default)]
    path_style: bool,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
        }
    }
}

/// Where the repository lives.
#[derive(Debug, Clone)]
pub enum RepositoryLocation {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        path_style: bool,
    },
}

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
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub repository: RepositoryLocation,
    /// age recipients (public keys) as written; parsed by [`crate::keys`].
    pub recipients: Vec<String>,
    pub identity_file: Option<PathBuf>,
    pub compression: Compression,
    pub sources: BTreeMap<String, Source>,
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
                msg.push_str(&format!(", line {}", line_of(text, span.start)));
            }
            Error::usage(format!("{msg}: {}", e.message().trim()))
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
            }
            sources.insert(
                name.clone(),
                Source {
                    name,
                    kind: s.kind,
                    url,
                    bin_dir: s.bin_dir.map(|p| base_dir.join(p)),
                },
            );
        }

        Ok(Config {
            path: path.to_path_buf(),
            repository,
            recipients,
            identity_file: raw.encryption.identity_file.map(|p| base_dir.join(p)),
            compression: Compression {
                level,
                threads: raw.compression.threads.unwrap_or(0),
            },
            sources,
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
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
    fn unknown_key_names_file_line_and_key() {
        let e = parse(&base(
            "[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nbogus = 1\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("/etc/strata/strata.toml"), "{e}");
        assert!(e.message.contains("line 9"), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
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

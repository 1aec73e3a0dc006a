//! `[repository]` and `[repositories.NAME]`: every repository strata may
//! write to or read from, and what each one changes about the tiers.
//!
//! `[repository]` is the repository named `default`; `[repositories.NAME]`
//! add others (a copy in another region, another account). Both forms may
//! be used together as long as no `[repositories.default]` clashes with
//! `[repository]`. The default repository — the one used without `--repo`
//! — is `[repository]`, else the first `[repositories.*]` in the file.
//!
//! Each repository has its own URL, endpoint, region, credentials
//! (`profile`), CA bundle and store limits, and may override for itself
//! what the tiers say about keeping: `object_lock` (the tiers' own locks,
//! none, or one mode for every tier) and `[repositories.NAME.retention.TIER]`
//! (that tier's keep_* rules in this repository). [`Config::select`]
//! turns the config into the one of a repository: its location and limits
//! in `repository`/`store_limits`, its tiers in `tiers`, so nothing below
//! the CLI knows there are several. Each table's url and store limits
//! (deadlines and retries, see `storage::retry`) are checked here too.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use url::Url;

use super::{Config, RawRepository, RepositoryLocation};
use crate::error::{Error, Result};
use crate::retention::Policy;
use crate::storage::LockMode;
use crate::storage::retry::Limits;
use crate::tier::{Tier, TierLock, lock_period};

/// The name `[repository]` goes by.
pub const DEFAULT_NAME: &str = "default";

/// One configured repository.
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    pub name: String,
    pub location: RepositoryLocation,
    /// Deadlines and retries of every call to its store.
    pub limits: Limits,
    /// `object_lock`: what locks objects written here.
    pub object_lock: RepoLock,
    /// `[repositories.NAME.retention.TIER]`: tier policies replaced here.
    pub retention: BTreeMap<String, Policy>,
}

/// A repository's `object_lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoLock {
    /// `"tiers"` (the default): each tier's own `object_lock`.
    Tiers,
    /// `"off"`: nothing is locked here, whatever the tiers say.
    Off,
    /// `"governance"`/`"compliance"`: every tier's objects are locked in
    /// this mode for the tier's retention period in this repository.
    Mode(LockMode),
}

type Bad<'a> = &'a dyn Fn(std::ops::Range<usize>, &str, String) -> Error;

/// One repository table, checked; `key` is how messages name it
/// (`repository` or `repositories.NAME`).
fn parse_one(
    name: &str,
    key: &str,
    raw: &RawRepository,
    base_dir: &Path,
    bad: Bad<'_>,
) -> Result<RepositoryConfig> {
    let location = parse_repository(raw, base_dir)
        .map_err(|why| bad(raw.url.span(), &format!("{key}.url"), why))?;
    let local = matches!(location, RepositoryLocation::Local(_));
    if let Some(c) = &raw.ca_bundle {
        let why = match &location {
            RepositoryLocation::Local(_) => {
                Some("only meaningful for an s3:// repository url".to_string())
            }
            RepositoryLocation::S3 { ca_bundle, .. } => ca_bundle
                .as_deref()
                .and_then(|p| crate::util::read_ca_file(p).err()),
        };
        if let Some(why) = why {
            return Err(bad(c.span(), &format!("{key}.ca_bundle"), why));
        }
    }
    for (v, what) in [(&raw.endpoint, "endpoint"), (&raw.profile, "profile")] {
        if let (true, Some(v)) = (local, v) {
            return Err(bad(
                v.span(),
                &format!("{key}.{what}"),
                "only meaningful for an s3:// repository url".into(),
            ));
        }
    }
    let limits =
        parse_limits(raw).map_err(|(span, k, why)| bad(span, &format!("{key}.{k}"), why))?;
    let object_lock = match raw.object_lock.as_ref() {
        None => RepoLock::Tiers,
        Some(v) => match v.get_ref().as_str() {
            "tiers" => RepoLock::Tiers,
            "off" => RepoLock::Off,
            m => match LockMode::parse(m) {
                Some(mode) if !local => RepoLock::Mode(mode),
                Some(_) => {
                    return Err(bad(
                        v.span(),
                        &format!("{key}.object_lock"),
                        "object lock needs an S3 repository; this url is a local directory".into(),
                    ));
                }
                None => {
                    return Err(bad(
                        v.span(),
                        &format!("{key}.object_lock"),
                        format!(
                            "{m:?} is not a choice: \"tiers\" (each tier's own object_lock), \"off\", \"governance\" or \"compliance\""
                        ),
                    ));
                }
            },
        },
    };
    let mut retention = BTreeMap::new();
    for (tier, p) in &raw.retention {
        let policy = Policy::parse(p.get_ref())
            .map_err(|why| bad(p.span(), &format!("{key}.retention.{tier}"), why))?;
        retention.insert(tier.clone(), policy);
    }
    Ok(RepositoryConfig {
        name: name.to_string(),
        location,
        limits,
        object_lock,
        retention,
    })
}

/// Every repository of a config, the default first, then the others in
/// the order the file has them.
pub(super) fn parse_all(
    path: &Path,
    default: Option<&Spanned<RawRepository>>,
    named: &BTreeMap<String, Spanned<RawRepository>>,
    base_dir: &Path,
    bad: Bad<'_>,
) -> Result<Vec<RepositoryConfig>> {
    let mut out = Vec::new();
    if let Some(d) = default {
        if let Some(clash) = named.get(DEFAULT_NAME) {
            return Err(bad(
                clash.span(),
                "repositories.default",
                "[repository] is the repository named default: rename this one, or move [repository] here".into(),
            ));
        }
        out.push(parse_one(
            DEFAULT_NAME,
            "repository",
            d.get_ref(),
            base_dir,
            bad,
        )?);
    }
    let mut rest: Vec<(&String, &Spanned<RawRepository>)> = named.iter().collect();
    rest.sort_by_key(|(_, r)| r.span().start);
    for (name, r) in rest {
        if !super::valid_name(name) {
            return Err(bad(
                r.span(),
                &format!("repositories.{name}"),
                "a repository name may use only letters, digits, '-' and '_'".into(),
            ));
        }
        out.push(parse_one(
            name,
            &format!("repositories.{name}"),
            r.get_ref(),
            base_dir,
            bad,
        )?);
    }
    if out.is_empty() {
        return Err(Error::usage(format!(
            "invalid config {}: no repository: add [repository] with its url (file:///path or s3://bucket/prefix)",
            path.display()
        ))
        .hint("see docs/configuration.md, [repository]"));
    }
    // the same place twice would make `copy` copy into itself
    for (i, a) in out.iter().enumerate() {
        if let Some(b) = out[..i].iter().find(|b| b.location.same_place(&a.location)) {
            return Err(Error::usage(format!(
                "invalid config {}: repositories {} and {} are the same place ({})",
                path.display(),
                b.name,
                a.name,
                a.location.display()
            )));
        }
    }
    Ok(out)
}

/// The tiers as they apply in `repo`: its retention overrides, then its
/// `object_lock` (a lock lasts the tier's retention period here).
pub(super) fn tiers_for(
    path: &Path,
    repo: &RepositoryConfig,
    defined: &BTreeMap<String, Tier>,
) -> Result<BTreeMap<String, Tier>> {
    let bad = |tier: &str, key: &str, why: String| {
        Error::usage(format!(
            "invalid config {}: {}.{key}: {why}",
            path.display(),
            if repo.name == DEFAULT_NAME {
                "repository".to_string()
            } else {
                format!("repositories.{}", repo.name)
            },
        ))
        .hint(format!("tier {tier}"))
    };
    if let Some(t) = repo.retention.keys().find(|t| !defined.contains_key(*t)) {
        let known: Vec<&str> = defined.keys().map(String::as_str).collect();
        return Err(bad(
            t,
            &format!("retention.{t}"),
            format!(
                "no tier named {t:?} (configured tiers: {})",
                known.join(", ")
            ),
        ));
    }
    let mut out = defined.clone();
    for (name, t) in out.iter_mut() {
        if let Some(p) = repo.retention.get(name) {
            t.policy = p.clone();
        }
        let mode = match repo.object_lock {
            RepoLock::Off => None,
            RepoLock::Tiers => t.object_lock.map(|l| l.mode),
            RepoLock::Mode(m) => Some(m),
        };
        t.object_lock = match mode {
            None => None,
            Some(mode) => {
                let period = lock_period(&t.policy).filter(|p| *p != chrono::TimeDelta::MAX);
                let Some(period) = period else {
                    return Err(bad(
                        name,
                        "object_lock",
                        format!(
                            "tier {name} is locked here for its retention period, and its keep_* rules give none (or one too long to count): add keep_within or a keep_hourly/daily/weekly/monthly/yearly rule to it or to this repository's retention.{name}"
                        ),
                    ));
                };
                Some(TierLock { mode, period })
            }
        };
        if t.object_lock.is_some() && matches!(repo.location, RepositoryLocation::Local(_)) {
            return Err(Error::usage(format!(
                "invalid config {}: tiers.{name}.object_lock: object lock needs an S3 repository; repository {} ({}) is a local directory",
                t.defined_in.display(),
                repo.name,
                repo.location.display()
            ))
            .hint(format!(
                "remove object_lock, set object_lock = \"off\" on repository {}, or store it in an S3 bucket created with Object Lock enabled",
                repo.name
            )));
        }
    }
    Ok(out)
}

impl Config {
    /// The repository named `name`, or a usage error (exit 2) naming the
    /// configured ones.
    pub fn repository_named(&self, name: &str) -> Result<&RepositoryConfig> {
        self.repositories
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.repositories.iter().map(|r| r.name.as_str()).collect();
                Error::usage(format!(
                    "no repository named {name:?} in {}",
                    self.path.display()
                ))
                .hint(format!("configured repositories: {}", known.join(", ")))
            })
    }

    /// This config as seen from repository `name` (`None`: the default):
    /// its location and store limits, its tiers with the repository's
    /// overrides. Every command that opens a repository works on the
    /// config `--repo` selected.
    pub fn select(&self, name: Option<&str>) -> Result<Config> {
        let repo = match name {
            Some(n) => self.repository_named(n)?,
            None => &self.repositories[0],
        };
        let mut c = self.clone();
        c.tiers = tiers_for(&self.path, repo, &self.defined_tiers)?;
        c.repository = repo.location.clone();
        c.store_limits = repo.limits;
        c.repo_name = repo.name.clone();
        Ok(c)
    }

    /// Whether the selected repository is the default one.
    pub fn is_default_repository(&self) -> bool {
        self.repositories
            .first()
            .is_some_and(|r| r.name == self.repo_name)
    }
}

/// Where a repository table's url says the repository is.
fn parse_repository(
    r: &RawRepository,
    base_dir: &Path,
) -> std::result::Result<RepositoryLocation, String> {
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
                ca_bundle: r.ca_bundle.as_ref().map(|c| base_dir.join(c.get_ref())),
                profile: r.profile.as_ref().map(|p| p.get_ref().clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(repos: &str, extra: &str) -> Result<Config> {
        Config::parse(
            Path::new("/etc/strata/strata.toml"),
            &format!(
                "{repos}\n[encryption]\nrecipients = [\"{KEY}\"]\n\n[sources.app]\nkind = \"postgres\"\nurl = \"postgres://u@h/app\"\n{extra}"
            ),
        )
    }

    /// Issue 19 item 1: `[repository]` is `default` and stays the default
    /// beside `[repositories.*]`; `--repo` selects another; an unknown
    /// name is a usage error naming the configured ones.
    #[test]
    fn repository_is_default_beside_named_ones() {
        let c = parse(
            "[repository]\nurl = \"file:///var/backups/strata\"\n\n[repositories.dr]\nurl = \"s3://dr-bucket/strata\"\nregion = \"eu-west-1\"\nprofile = \"dr\"\n",
            "",
        )
        .unwrap();
        let names: Vec<&str> = c.repositories.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["default", "dr"]);
        assert_eq!(c.repo_name, "default");
        assert!(matches!(c.repository, RepositoryLocation::Local(_)));
        let dr = c.select(Some("dr")).unwrap();
        assert_eq!(dr.repo_name, "dr");
        match &dr.repository {
            RepositoryLocation::S3 {
                bucket, profile, ..
            } => {
                assert_eq!(bucket, "dr-bucket");
                assert_eq!(profile.as_deref(), Some("dr"));
            }
            other => panic!("{other:?}"),
        }
        let e = c.select(Some("west")).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Usage);
        assert!(e.message.contains("\"west\""), "{e}");
        assert!(e.hint.unwrap().contains("default, dr"));
    }

    #[test]
    fn without_repository_the_first_named_one_in_the_file_is_the_default() {
        let c = parse(
            "[repositories.zeta]\nurl = \"file:///a\"\n[repositories.alpha]\nurl = \"file:///b\"\n",
            "",
        )
        .unwrap();
        assert_eq!(c.repo_name, "zeta");
        let e = parse("", "").unwrap_err();
        assert!(e.message.contains("no repository"), "{e}");
        let e = parse(
            "[repository]\nurl = \"file:///a\"\n[repositories.default]\nurl = \"file:///b\"\n",
            "",
        )
        .unwrap_err();
        assert!(e.message.contains("repositories.default"), "{e}");
        let e = parse(
            "[repository]\nurl = \"file:///a\"\n[repositories.dr]\nurl = \"file:///a/\"\n",
            "",
        )
        .unwrap_err();
        assert!(e.message.contains("same place"), "{e}");
        let e = parse(
            "[repository]\nurl = \"file:///a\"\n[repositories.dr]\nurl = \"file:///b\"\nprofile = \"x\"\n",
            "",
        )
        .unwrap_err();
        assert!(e.message.contains("repositories.dr.profile"), "{e}");
    }

    #[test]
    fn object_lock_and_retention_per_repository() {
        let tier =
            "\n[tiers.daily]\nkeep_daily = 7\nobject_lock = \"governance\"\ncopy_to = [\"dr\"]\n";
        // a tier lock with a local default repository: refused, naming it
        let e = parse(
            "[repository]\nurl = \"file:///a\"\n[repositories.dr]\nurl = \"s3://b/p\"\n",
            tier,
        )
        .unwrap_err();
        assert!(
            e.message.contains("repository default") && e.message.contains("local directory"),
            "{e}"
        );
        // off there, compliance for 30 days in the copy
        let c = parse(
            "[repository]\nurl = \"file:///a\"\nobject_lock = \"off\"\n[repositories.dr]\nurl = \"s3://b/p\"\nobject_lock = \"compliance\"\n[repositories.dr.retention.daily]\nkeep_daily = 30\n",
            tier,
        )
        .unwrap();
        assert!(c.tiers["daily"].object_lock.is_none());
        assert_eq!(c.tiers["daily"].copy_to, ["dr"]);
        let dr = c.select(Some("dr")).unwrap();
        let l = dr.tiers["daily"].object_lock.unwrap();
        assert_eq!(l.mode, LockMode::Compliance);
        assert_eq!(l.period, chrono::Duration::days(30));
        assert_eq!(dr.tiers["daily"].policy.keep_daily, Some(30));
        let e = parse(
            "[repository]\nurl = \"file:///a\"\n[repositories.dr]\nurl = \"s3://b/p\"\n[repositories.dr.retention.weekly]\nkeep_daily = 30\n",
            "",
        )
        .unwrap_err();
        assert!(e.message.contains("retention.weekly"), "{e}");
        let e = parse(
            "[repository]\nurl = \"file:///a\"\n",
            "\n[tiers.daily]\nkeep_daily = 7\ncopy_to = [\"dr\"]\n",
        )
        .unwrap_err();
        assert!(
            e.message.contains("tiers.daily.copy_to") && e.message.contains("\"dr\""),
            "{e}"
        );
    }
}

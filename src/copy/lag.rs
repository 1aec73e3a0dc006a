//! What `status` and `metrics` say about several repositories: per
//! repository the newest backup and the newest archived WAL of each
//! source, and how far each lags behind the selected repository (the
//! primary, usually): backups the primary has and it lacks, and by how
//! much its newest backup and WAL are older. Also the secondary `wal push`
//! failures the primary recorded ([`super::wal::PushFailure`]).
//!
//! Each repository is opened with a deadline: one that does not answer
//! is reported as unreachable, never hangs `status`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::wal::PushFailure;
use crate::catalog::Repository;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sources::postgres::wal::archive::{WAL_PREFIX, WalArchive};

/// How long one repository may take to be listed.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct RepoStatus {
    pub name: String,
    pub location: String,
    /// The repository this status is about (`--repo`, else the default):
    /// the others' lag is counted against it.
    pub selected: bool,
    /// Why it could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub sources: Vec<RepoSource>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RepoSource {
    pub source: String,
    pub newest_backup: Option<String>,
    pub newest_backup_time: Option<DateTime<Utc>>,
    pub newest_wal: Option<String>,
    pub newest_wal_time: Option<DateTime<Utc>>,
    /// Backups of the selected repository this one lacks.
    pub backups_missing: usize,
    /// How much older this repository's newest backup is than the
    /// selected one's (0: as new).
    pub backup_lag_seconds: Option<i64>,
    /// The same for the newest archived WAL segment.
    pub wal_lag_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CopiesStatus {
    pub repositories: Vec<RepoStatus>,
    /// Secondary `wal push` failures not yet caught up by `strata copy`.
    pub wal_push_failures: Vec<PushFailure>,
}

struct Seen {
    ids: BTreeMap<String, BTreeSet<String>>,
    sources: BTreeMap<String, RepoSource>,
}

async fn read(repo: &Repository) -> Result<Seen> {
    let (entries, _) = repo.backups(None).await?;
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sources: BTreeMap<String, RepoSource> = BTreeMap::new();
    // newest first
    for e in &entries {
        let s = e.summary();
        ids.entry(s.source.clone())
            .or_default()
            .insert(s.id.to_string());
        let r = sources
            .entry(s.source.clone())
            .or_insert_with(|| RepoSource {
                source: s.source.clone(),
                ..Default::default()
            });
        if r.newest_backup.is_none() {
            r.newest_backup = Some(s.id.to_string());
            r.newest_backup_time = Some(s.started);
        }
    }
    let wal_sources: BTreeSet<String> = repo
        .storage()
        .list(WAL_PREFIX)
        .await?
        .into_iter()
        .filter_map(|m| {
            m.key
                .strip_prefix(WAL_PREFIX)?
                .split('/')
                .next()
                .map(String::from)
        })
        .collect();
    for source in wal_sources {
        let archive = WalArchive::new(repo, &source);
        let listing = archive.listing(None).await?;
        let Some((seg, _)) = listing.newest else {
            continue;
        };
        let time = archive.archived_until(&listing).await?;
        let r = sources.entry(source.clone()).or_insert_with(|| RepoSource {
            source: source.clone(),
            ..Default::default()
        });
        r.newest_wal = Some(seg.to_string());
        r.newest_wal_time = time;
    }
    Ok(Seen { ids, sources })
}

/// Every configured repository, read (when there are several).
pub async fn gather(cfg: &Config) -> CopiesStatus {
    let mut out = CopiesStatus::default();
    if cfg.repositories.len() < 2 {
        return out;
    }
    let mut seen: Vec<(RepoStatus, Option<Seen>)> = Vec::new();
    for r in &cfg.repositories {
        let status = RepoStatus {
            name: r.name.clone(),
            location: r.location.display(),
            selected: r.name == cfg.repo_name,
            error: None,
            sources: Vec::new(),
        };
        let read = async {
            let c = cfg.select(Some(&r.name))?;
            let repo = crate::context::open_repository(&c).await?;
            let s = read(&repo).await?;
            let failures = if status.selected {
                super::wal::push_failures(&repo).await?
            } else {
                Vec::new()
            };
            Ok::<_, Error>((s, failures))
        };
        match tokio::time::timeout(DEADLINE, read).await {
            Ok(Ok((s, failures))) => {
                out.wal_push_failures.extend(failures);
                seen.push((status, Some(s)));
            }
            Ok(Err(e)) => seen.push((
                RepoStatus {
                    error: Some(e.message),
                    ..status
                },
                None,
            )),
            Err(_) => seen.push((
                RepoStatus {
                    error: Some(format!("no answer within {}s", DEADLINE.as_secs())),
                    ..status
                },
                None,
            )),
        }
    }
    let primary = seen
        .iter()
        .find(|(s, _)| s.selected)
        .and_then(|(_, v)| v.as_ref())
        .map(|p| (p.ids.clone(), p.sources.clone()));
    for (mut status, s) in seen {
        if let Some(s) = s {
            let mut sources = s.sources;
            if let (false, Some((ids, prim))) = (status.selected, &primary) {
                for (name, p) in prim {
                    let r = sources.entry(name.clone()).or_insert_with(|| RepoSource {
                        source: name.clone(),
                        ..Default::default()
                    });
                    let have = s.ids.get(name).cloned().unwrap_or_default();
                    r.backups_missing = ids
                        .get(name)
                        .map_or(0, |all| all.iter().filter(|i| !have.contains(*i)).count());
                    // none when either side has none (the copy lacking
                    // everything shows in backups_missing and newest_*)
                    let lag = |mine: Option<DateTime<Utc>>, theirs: Option<DateTime<Utc>>| {
                        Some((theirs? - mine?).num_seconds().max(0))
                    };
                    r.backup_lag_seconds = lag(r.newest_backup_time, p.newest_backup_time);
                    r.wal_lag_seconds = lag(r.newest_wal_time, p.newest_wal_time);
                }
            }
            status.sources = sources.into_values().collect();
        }
        out.repositories.push(status);
    }
    out
}

/// The copies as Prometheus metrics.
pub fn prometheus(c: &CopiesStatus) -> String {
    use crate::status::escape_label;
    let mut out = String::new();
    if c.repositories.is_empty() {
        return out;
    }
    out.push_str("# HELP strata_repository_up Whether the repository could be read (1) or not (0).\n# TYPE strata_repository_up gauge\n");
    for r in &c.repositories {
        out.push_str(&format!(
            "strata_repository_up{{repository=\"{}\"}} {}\n",
            escape_label(&r.name),
            u8::from(r.error.is_none())
        ));
    }
    out.push_str("# HELP strata_copy_backups_missing Backups of the selected repository that this one lacks.\n# TYPE strata_copy_backups_missing gauge\n");
    for r in c.repositories.iter().filter(|r| !r.selected) {
        for s in &r.sources {
            out.push_str(&format!(
                "strata_copy_backups_missing{{repository=\"{}\",source=\"{}\"}} {}\n",
                escape_label(&r.name),
                escape_label(&s.source),
                s.backups_missing
            ));
        }
    }
    out.push_str("# HELP strata_copy_wal_lag_seconds How much older this repository's newest WAL is than the selected one's.\n# TYPE strata_copy_wal_lag_seconds gauge\n");
    for r in c.repositories.iter().filter(|r| !r.selected) {
        for s in r.sources.iter().filter(|s| s.wal_lag_seconds.is_some()) {
            out.push_str(&format!(
                "strata_copy_wal_lag_seconds{{repository=\"{}\",source=\"{}\"}} {}\n",
                escape_label(&r.name),
                escape_label(&s.source),
                s.wal_lag_seconds.unwrap_or(0)
            ));
        }
    }
    out.push_str("# HELP strata_wal_push_secondary_failures Secondary wal push failures since the last catching-up copy.\n# TYPE strata_wal_push_secondary_failures gauge\n");
    for f in &c.wal_push_failures {
        out.push_str(&format!(
            "strata_wal_push_secondary_failures{{repository=\"{}\",source=\"{}\"}} {}\n",
            escape_label(&f.repository),
            escape_label(&f.source),
            f.failures
        ));
    }
    out
}

//! `strata restore --all`'s work, apart from its arguments and output:
//! every configured source brought back to one point, each through the
//! per-source path a drill takes ([`super::plan`], [`super::recover`])
//! without starting servers — into `DIR/<source>` (`--target-dir`), else
//! into the source's configured `restore_to`: a directory, or a Redis or
//! Chroma server loaded and verified ([`super::into`]). A marker beside
//! each directory lets a rerun after a partial failure skip what is done
//! and redo only what was left half-way. One source's failure does not
//! stop the others.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::Point;
use crate::catalog::Repository;
use crate::config::{Config, RestoreTo, SourceKind};
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::progress::Reporter;
use crate::util::redact_url;

/// What to restore every source to, and where.
pub struct Options {
    pub point: Point,
    pub now: DateTime<Utc>,
    /// `--target-dir` (absolute): each source into a directory under it;
    /// else into its configured `restore_to`.
    pub target_dir: Option<PathBuf>,
    /// Loading into configured servers: overwrite what they hold.
    pub replace: bool,
    /// OS user owning PostgreSQL data dirs (root only).
    pub owner: Option<String>,
    /// `--backup label:L`: each source to its backup of the set labelled
    /// L instead of to `point` (issue 19 item 4).
    pub label: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceResult {
    pub source: String,
    pub kind: String,
    pub ok: bool,
    pub method: Option<String>,
    pub backup: Option<String>,
    /// An incremental base backup's chain, the full backup first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The directory restored into (PostgreSQL data directory, dump files,
    /// `dump.rdb`, export files).
    pub dir: Option<String>,
    /// The server loaded (`restore_to` of a Redis or Chroma source).
    pub into: Option<String>,
    /// The newest point restored.
    pub restored_to: Option<chrono::DateTime<Utc>>,
    /// T minus that point, seconds.
    pub skew_seconds: Option<f64>,
    pub bytes: u64,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub exit_code: u8,
    /// Restored by an earlier run of the same `restore --all` (same target
    /// and backup) and left as it was.
    pub kept: bool,
}

/// Beside each directory `restore --all` restores into
/// (`<parent>/.<name>.strata-restore-all.json`): which restore made it and
/// whether it finished, so a rerun after a partial failure skips what is
/// done and redoes only what it left half-way. A directory without one is
/// never touched.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Marker {
    source: String,
    /// RFC 3339 time, or `latest`.
    target: String,
    backup: String,
    done: bool,
}

impl Marker {
    fn path(dir: &std::path::Path) -> Option<PathBuf> {
        let name = dir.file_name()?.to_string_lossy().into_owned();
        Some(dir.with_file_name(format!(".{name}.strata-restore-all.json")))
    }

    fn read(dir: &std::path::Path) -> Option<Marker> {
        serde_json::from_slice(&std::fs::read(Self::path(dir)?).ok()?).ok()
    }

    fn write(&self, dir: &std::path::Path) -> Result<()> {
        let path = Self::path(dir)
            .ok_or_else(|| Error::usage(format!("{} names no directory", dir.display())))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(self).expect("marker serialises"),
        )
        .map_err(|e| Error::failed(format!("writing {}: {e}", path.display())))
    }

    fn same_as(&self, other: &Marker) -> bool {
        (&self.source, &self.target, &self.backup) == (&other.source, &other.target, &other.backup)
    }
}

/// Restores every source of `cfg` as `opts` says, one after another;
/// `on_done` hears of each as it finishes (failed or not).
pub async fn restore_all(
    cfg: &Config,
    repo: &Repository,
    identities: &Arc<Vec<Identity>>,
    restore_command: &(dyn Fn(&str) -> Result<String> + Send + Sync),
    opts: &Options,
    reporter: &Reporter,
    on_done: &mut dyn FnMut(&SourceResult),
) -> Vec<SourceResult> {
    let Options {
        point,
        now,
        target_dir,
        replace,
        owner,
        label,
    } = opts;
    let point = *point;
    let now = *now;
    let mut results = Vec::new();
    for src in cfg.sources.values() {
        let dest = match (&target_dir, &src.restore_to) {
            (Some(d), _) => Some(RestoreTo::Dir(d.join(&src.name))),
            (None, to) => to.clone(),
        };
        let mut r = SourceResult {
            source: src.name.clone(),
            kind: src.kind.as_str().into(),
            ok: false,
            method: None,
            backup: None,
            chain: vec![],
            dir: match &dest {
                Some(RestoreTo::Dir(d)) => Some(d.display().to_string()),
                _ => None,
            },
            into: match &dest {
                Some(RestoreTo::Server(u)) => Some(redact_url(u)),
                _ => None,
            },
            restored_to: None,
            skew_seconds: None,
            bytes: 0,
            error: None,
            hint: None,
            exit_code: 0,
            kept: false,
        };
        let done = async {
            let Some(dest) = &dest else {
                return Err(Error::usage(format!(
                    "source {} has nowhere to go: it has no restore_to",
                    src.name
                ))
                .hint(format!(
                    "set [sources.{}] restore_to ({}) in {}, or pass --target-dir DIR",
                    src.name,
                    match src.kind {
                        SourceKind::Postgres => "a data directory",
                        SourceKind::Redis => "redis://host:port",
                        SourceKind::Chroma => "http://host:port",
                    },
                    cfg.path.display()
                )));
            };
            let plan = match label {
                Some(l) => super::plan::labelled(repo, src, l, identities).await?,
                None => super::plan::plan(repo, src, point, identities, now).await?,
            };
            r.method = Some(plan.method.as_str().into());
            r.backup = Some(plan.backup_id());
            r.chain = plan.chain();
            r.restored_to = Some(plan.restorable_point);
            r.skew_seconds = Some(plan.skew_seconds());
            r.bytes = plan.bytes;
            match dest {
                RestoreTo::Dir(dir) => {
                    let marker = Marker {
                        source: src.name.clone(),
                        target: match (label, point) {
                            (Some(l), _) => format!("label:{l}"),
                            (None, Point::Time(t)) => t.to_rfc3339(),
                            (None, Point::Latest) => "latest".into(),
                        },
                        backup: plan.backup_id(),
                        done: false,
                    };
                    match Marker::read(dir) {
                        // this run's source, finished by an earlier run
                        Some(m) if m.done && m.same_as(&marker) => {
                            r.kept = true;
                            return Ok(());
                        }
                        // an earlier run of this very restore stopped
                        // half-way: its directory is ours to redo
                        Some(m) if !m.done && m.same_as(&marker) => {
                            reporter.note(format!(
                                "{}: an earlier run stopped half-way in {}; restoring it again",
                                src.name,
                                dir.display()
                            ));
                            std::fs::remove_dir_all(dir).or_else(|e| {
                                if e.kind() == std::io::ErrorKind::NotFound {
                                    Ok(())
                                } else {
                                    Err(e)
                                }
                            })?;
                        }
                        _ => {}
                    }
                    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
                        return Err(Error::usage(format!(
                            "{} is not empty; restore --all never overwrites a directory",
                            dir.display()
                        ))
                        .hint(match target_dir {
                            Some(_) => "give a new or empty --target-dir".to_string(),
                            None => format!(
                                "empty it, or point [sources.{}] restore_to at a new directory",
                                src.name
                            ),
                        }));
                    }
                    let ctx = super::recover::Context {
                        repo,
                        identities: identities.clone(),
                        restore_command: restore_command(&src.name)?,
                        owner: owner.clone(),
                        reporter,
                    };
                    marker.write(dir)?;
                    super::recover::recover(&ctx, &plan, dir, None).await?;
                    Marker {
                        done: true,
                        ..marker
                    }
                    .write(dir)?;
                }
                RestoreTo::Server(url) => {
                    super::into::load_into(repo, identities, src, &plan, url, *replace, reporter)
                        .await?
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        match done {
            Ok(()) => r.ok = true,
            Err(e) => {
                r.exit_code = e.exit_code();
                r.error = Some(e.message);
                r.hint = e.hint;
            }
        }
        on_done(&r);
        results.push(r);
    }
    results
}

/// The exit code of a `restore --all`: 0, the failed sources' own code
/// when they agree, else 1.
pub fn exit_code(results: &[SourceResult]) -> u8 {
    let failed: Vec<&SourceResult> = results.iter().filter(|r| !r.ok).collect();
    match failed.first() {
        None => 0,
        Some(f) if failed.iter().all(|x| x.exit_code == f.exit_code) => f.exit_code,
        Some(_) => Kind::Failed.exit_code(),
    }
}

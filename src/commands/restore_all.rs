//! `strata restore --all (--to-time T | --latest) [--target-dir DIR]
//! [--replace]`: the one-command incident restore. Every configured source
//! comes back to T, into `DIR/<source>` with --target-dir, else into the
//! source's configured `restore_to`: PostgreSQL with base backups exactly
//! to T (a data directory that replays WAL to T when started; just past
//! the archive's end when the archive stops before T), dump-only
//! PostgreSQL sources, Redis and Chroma as their newest backup taken at or
//! before T — as files in a directory, or loaded into the configured Redis
//! or Chroma server (which must be empty unless --replace; the load is
//! verified as `restore --into` verifies it). Prints each source's skew
//! from T.
//!
//! It goes through the same per-source path a drill does
//! ([`crate::restore::plan`], [`crate::restore::recover`]), without
//! starting servers. One source's failure does not stop the others; the
//! exit code is non-zero if any failed.

use std::path::PathBuf;

use chrono::Utc;
use serde::Serialize;

use super::Globals;
use crate::config::{RestoreTo, SourceKind};
use crate::error::{Error, Kind, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::plan::Point;
use crate::restore::recover;
use crate::util::{human_bytes, redact_url};

#[derive(Debug, Clone)]
pub struct AllArgs {
    pub to_time: Option<String>,
    pub latest: bool,
    pub target_dir: Option<PathBuf>,
    /// Loading into configured servers: overwrite what they hold.
    pub replace: bool,
    pub run_as: Option<String>,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct SourceResult {
    source: String,
    kind: String,
    ok: bool,
    method: Option<String>,
    backup: Option<String>,
    /// The directory restored into (PostgreSQL data directory, dump files,
    /// `dump.rdb`, export files).
    dir: Option<String>,
    /// The server loaded (`restore_to` of a Redis or Chroma source).
    into: Option<String>,
    /// The newest point restored.
    restored_to: Option<chrono::DateTime<Utc>>,
    /// T minus that point, seconds.
    skew_seconds: Option<f64>,
    bytes: u64,
    error: Option<String>,
    hint: Option<String>,
    exit_code: u8,
    /// Restored by an earlier run of the same `restore --all` (same target
    /// and backup) and left as it was.
    kept: bool,
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

pub async fn run(g: &Globals, a: &AllArgs) -> Result<u8> {
    let cfg = g.config()?;
    let now = Utc::now();
    let point = match (&a.to_time, a.latest) {
        (Some(t), false) => Point::Time(
            crate::timeparse::parse_time(t, now)
                .map_err(|e| Error::usage(format!("--to-time: {e}")))?,
        ),
        (None, true) => Point::Latest,
        _ => {
            return Err(Error::usage(
                "restore --all needs where to stop: --to-time T or --latest",
            ));
        }
    };
    let owner = super::server_owner(a.run_as.as_deref())?;
    if cfg.sources.is_empty() {
        return Err(Error::usage(format!(
            "no sources in {}",
            cfg.path.display()
        )));
    }
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let target_dir = a
        .target_dir
        .as_deref()
        .map(crate::restore::pitr::absolute)
        .transpose()?;
    let reporter = Reporter::new(Mode::detect(a.json));
    let at = point.time(now);
    reporter.note(format!(
        "restoring {} source(s) to {} into {}",
        cfg.sources.len(),
        point.describe(),
        match &target_dir {
            Some(d) => d.display().to_string(),
            None => "their configured restore_to".into(),
        }
    ));
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
            let plan = crate::restore::plan::plan(&repo, src, point, &identities, now).await?;
            r.method = Some(plan.method.as_str().into());
            r.backup = Some(plan.backup_id());
            r.restored_to = Some(plan.restorable_point);
            r.skew_seconds = Some(plan.skew_seconds());
            r.bytes = plan.bytes;
            match dest {
                RestoreTo::Dir(dir) => {
                    let marker = Marker {
                        source: src.name.clone(),
                        target: match point {
                            Point::Time(t) => t.to_rfc3339(),
                            Point::Latest => "latest".into(),
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
                    let ctx = recover::Context {
                        repo: &repo,
                        identities: identities.clone(),
                        restore_command: super::restore::restore_command(g, &cfg.path, &src.name)?,
                        owner: owner.clone(),
                        reporter: &reporter,
                    };
                    marker.write(dir)?;
                    recover::recover(&ctx, &plan, dir, None).await?;
                    Marker {
                        done: true,
                        ..marker
                    }
                    .write(dir)?;
                }
                RestoreTo::Server(url) => {
                    crate::restore::into::load_into(
                        &repo,
                        &identities,
                        src,
                        &plan,
                        url,
                        a.replace,
                        &reporter,
                    )
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
        if !a.json {
            print_line(&r, at);
        }
        results.push(r);
    }
    let failed: Vec<&SourceResult> = results.iter().filter(|r| !r.ok).collect();
    let code = match failed.first() {
        None => 0,
        Some(f) if failed.iter().all(|x| x.exit_code == f.exit_code) => f.exit_code,
        Some(_) => Kind::Failed.exit_code(),
    };
    if a.json {
        super::print_json(&results);
    } else if !failed.is_empty() {
        eprintln!(
            "strata: restore --all: {} of {} sources failed",
            failed.len(),
            results.len()
        );
    } else if results.iter().any(|r| r.dir.is_some()) {
        println!(
            "PostgreSQL data directories are NOT recovered yet: started (`pg_ctl -D DIR start`), each replays WAL to the target, promotes, and only then accepts connections (hot_standby is off, so nobody reads a partial past while it replays; archive_mode is off until you remove that line from postgresql.auto.conf, so a copy never archives into the repository by accident); Redis: start redis-server with --dir DIR --dbfilename dump.rdb"
        );
    }
    Ok(code)
}

fn print_line(r: &SourceResult, at: chrono::DateTime<Utc>) {
    if !r.ok {
        println!(
            "{}: FAILED: {}",
            r.source,
            r.error.as_deref().unwrap_or("unknown error")
        );
        if let Some(h) = &r.hint {
            eprintln!("HINT ({}): {h}", r.source);
        }
        return;
    }
    let skew = r.skew_seconds.unwrap_or_default();
    println!(
        "{}{}: {} {} → {} ({}); {}",
        r.source,
        if r.kept {
            " (kept: an earlier run restored it)"
        } else {
            ""
        },
        r.method.as_deref().unwrap_or("-"),
        r.backup.as_deref().unwrap_or("-"),
        r.dir.as_deref().or(r.into.as_deref()).unwrap_or("-"),
        human_bytes(r.bytes),
        if skew == 0.0 {
            format!(
                "exactly at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        } else {
            format!(
                "skew {skew:.0}s: restored to {} ({} before T)",
                r.restored_to
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                crate::util::human_duration(chrono::Duration::milliseconds((skew * 1000.0) as i64))
            )
        }
    );
}

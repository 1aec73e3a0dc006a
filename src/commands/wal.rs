//! `strata wal push PATH` (PostgreSQL's `archive_command`) and
//! `strata wal fetch NAME DEST` (`restore_command`).
//!
//! Both are run by the server, once per file: quiet on success (the server
//! log is their output), a clear message on failure. `fetch` exits 1
//! without a word when the file is not archived: PostgreSQL asks for
//! history files and segments that do not exist as part of normal recovery.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use super::Globals;
use crate::config::{Config, Source, SourceKind};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::sources::postgres::wal::archive::{
    Located, MacKey, PushContext, PushStatus, WalArchive, tmp_beside,
};
use crate::sources::postgres::wal::spool::{self, Spool};
use crate::sources::postgres::wal::{SegmentName, SegmentSize, WalFile};

/// Exit code of `wal fetch` when the file is not archived.
pub const NOT_ARCHIVED: u8 = 1;
/// Upper bound of `--prefetch`.
pub const MAX_PREFETCH: u32 = 64;

/// The source named by `--source`, else the only postgres source.
pub fn pick_source<'c>(cfg: &'c Config, flag: Option<&str>) -> Result<&'c Source> {
    if let Some(name) = flag {
        let s = cfg.source(name)?;
        if s.kind != SourceKind::Postgres {
            return Err(Error::usage(format!(
                "source {name:?} is not a postgres source"
            )));
        }
        return Ok(s);
    }
    let pg: Vec<&Source> = cfg
        .sources
        .values()
        .filter(|s| s.kind == SourceKind::Postgres)
        .collect();
    match pg.as_slice() {
        [one] => Ok(one),
        [] => Err(
            Error::usage(format!("no postgres source in {}", cfg.path.display()))
                .hint("define one under [sources.NAME] (kind = \"postgres\")"),
        ),
        many => Err(Error::usage(format!(
            "{} has several postgres sources ({}); which one is this WAL from?",
            cfg.path.display(),
            many.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("pass --source NAME")),
    }
}

fn parse_name(what: &str, name: &str) -> Result<WalFile> {
    name.parse()
        .map_err(|e: String| Error::usage(format!("{what}: {e}")))
}

pub async fn push(g: &Globals, path: &Path, source: Option<&str>, json: bool) -> Result<u8> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::usage(format!("{} names no WAL file", path.display())))?;
    let name = parse_name(&path.display().to_string(), file_name)?;
    let cfg = g.config()?;
    let src = pick_source(&cfg, source)?;
    let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
    let encoder = super::encoder(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let archive = WalArchive::new(&repo, &src.name);
    let identities = || g.identities(&cfg);
    let ctx = PushContext {
        encoder,
        recipients: &recipients,
        mac_key: MacKey::derive(&repo.id, &cfg.recipients),
        identities: &identities,
    };
    let report = archive.push(&ctx, path, name).await?;
    match report.status {
        PushStatus::AlreadyArchived => eprintln!(
            "strata: notice: {name} is already archived with the same content ({}); nothing to do",
            report.key
        ),
        PushStatus::Completed => eprintln!(
            "strata: notice: {name} was recorded by an earlier, interrupted push; its data is stored now"
        ),
        PushStatus::Stored => {
            tracing::debug!("archived {name} as {}", report.key)
        }
    }
    if json {
        super::print_json(&report);
    }
    Ok(0)
}

#[derive(Debug, Clone)]
pub struct FetchArgs {
    pub name: String,
    pub dest: PathBuf,
    pub source: Option<String>,
    pub prefetch: u32,
    pub spool: Option<PathBuf>,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct FetchReport {
    name: String,
    source: String,
    /// `spool` (prefetched earlier) or `repository`.
    from: &'static str,
    prefetched: Vec<String>,
}

pub async fn fetch(g: &Globals, a: &FetchArgs) -> Result<u8> {
    let name = parse_name("wal fetch", &a.name)?;
    if a.prefetch > MAX_PREFETCH {
        return Err(Error::usage(format!(
            "--prefetch {} is more than {MAX_PREFETCH}",
            a.prefetch
        )));
    }
    let cfg = g.config()?;
    let src = pick_source(&cfg, a.source.as_deref())?;
    let identities = g.identities(&cfg)?;
    let repo = super::open_repository(&cfg).await?;
    let archive = WalArchive::new(&repo, &src.name);
    let report = |from, prefetched: Vec<SegmentName>| {
        if a.json {
            super::print_json(&FetchReport {
                name: name.to_string(),
                source: src.name.clone(),
                from,
                prefetched: prefetched.iter().map(|s| s.to_string()).collect(),
            });
        }
    };

    let spool = match name {
        WalFile::Segment(_) if a.prefetch > 0 => Some(spool_of(a, &repo.id, &src.name)),
        _ => None,
    };
    if let (Some(sp), WalFile::Segment(seg)) = (&spool, name) {
        match sp.take(seg, &a.dest) {
            Ok(true) => {
                tracing::debug!(
                    "{name}: served from the prefetch spool {}",
                    sp.dir().display()
                );
                sp.clean(seg);
                report("spool", Vec::new());
                return Ok(0);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("prefetch spool {}: {e}", sp.dir().display()),
        }
    }

    let Some(found) = archive.locate(name, &identities).await? else {
        tracing::debug!("{name} is not archived in {}", archive.prefix());
        return Ok(NOT_ARCHIVED);
    };
    let tmp = tmp_beside(&a.dest, ".tmp");
    let main = archive.download(&found, &a.dest, &tmp, identities.clone(), false);
    let spool = spool.filter(|sp| match sp.create() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "prefetch off: cannot use spool directory {}: {e}",
                sp.dir().display()
            );
            false
        }
    });
    let (Some(sp), WalFile::Segment(seg)) = (&spool, name) else {
        main.await?;
        report("repository", Vec::new());
        return Ok(0);
    };
    // Fetch the next segments while this one downloads.
    let ahead = SegmentSize::new(found.record.plain_size)
        .map(|size| {
            let mut v = Vec::new();
            let mut s = seg;
            for _ in 0..a.prefetch {
                s = s.next(size);
                v.push(s);
            }
            v
        })
        .unwrap_or_default();
    let wanted: Vec<SegmentName> = ahead.into_iter().filter(|s| !sp.contains(*s)).collect();
    let prefetch = prefetch_into(&archive, sp, wanted, &identities);
    let (main, fetched) = tokio::join!(main, prefetch);
    main?;
    sp.clean(seg);
    report("repository", fetched);
    Ok(0)
}

fn spool_of(a: &FetchArgs, repo_id: &str, source: &str) -> Spool {
    let (root, shared) = match &a.spool {
        Some(d) => (d.clone(), false),
        None => spool::default_root(&a.dest),
    };
    Spool::new(&root, shared, repo_id, source)
}

/// Downloads `segments` into the spool in parallel; returns those stored.
/// A missing segment ends nothing but itself; errors are logged, never
/// fatal (the segment is fetched again when PostgreSQL asks for it).
async fn prefetch_into(
    archive: &WalArchive,
    sp: &Spool,
    segments: Vec<SegmentName>,
    identities: &Arc<Vec<Identity>>,
) -> Vec<SegmentName> {
    let n = segments.len().max(1);
    let results: Vec<Option<SegmentName>> = futures::stream::iter(segments)
        .map(|seg| async move {
            let found: Located = match archive.locate(WalFile::Segment(seg), identities).await {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("prefetching {seg}: {e}");
                    return None;
                }
            };
            let dest = sp.path(seg);
            match archive
                .download(&found, &dest, &sp.tmp_path(seg), identities.clone(), true)
                .await
            {
                Ok(()) => {
                    tracing::debug!("prefetched {seg}");
                    Some(seg)
                }
                Err(e) => {
                    tracing::warn!("prefetching {seg}: {e}");
                    None
                }
            }
        })
        .buffer_unordered(n)
        .collect()
        .await;
    let mut v: Vec<SegmentName> = results.into_iter().flatten().collect();
    v.sort();
    v
}

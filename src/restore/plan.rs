//! Which backup restores a source: the choice every restore makes first.
//!
//! [`choose`] finds the backup a restore names on the command line —
//! `--backup latest` (the newest of the kind the restore takes),
//! `--backup ID`, or `--at T` (the newest taken at or before T) — for
//! `strata restore` of a dump, a Redis snapshot or a Chroma export.
//!
//! [`plan`] chooses for a point in time, the choice `strata restore --all
//! --to-time T`, `strata restore --table --to-time T` and `strata drill`
//! share: for PostgreSQL with base backups, the newest base backup ending
//! before T and the WAL after it (replay stops exactly at T when the
//! archive reaches past T, else at the end of the archive); for dump-only
//! PostgreSQL sources, Redis and Chroma, the newest backup taken at or
//! before T — and says how far from T that lands (the skew, which a drill
//! reports as RPO).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Entry, Repository, pick};
use crate::config::{Source, SourceKind};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::sources::postgres::base::chain;
use crate::sources::postgres::pitr::{self, Candidate, RecoveryTarget};
use crate::sources::postgres::wal::archive::{WalArchive, WalListing};
use crate::sources::postgres::wal::{Lsn, SegmentName, SegmentSize, Timeline};

/// Which backup a restore names: `--backup latest`, `--backup ID` or
/// `--at T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Latest,
    Id(String),
    At(DateTime<Utc>),
}

impl Wanted {
    /// From `--backup ID|latest` and `--at T` (not both).
    pub fn from_flags(backup: &str, at: Option<&str>, now: DateTime<Utc>) -> Result<Wanted> {
        match at {
            Some(t) => {
                if backup != "latest" {
                    return Err(Error::usage("give --backup ID or --at TIME, not both"));
                }
                Ok(Wanted::At(pick::parse_at(t, now)?))
            }
            None if backup == "latest" => Ok(Wanted::Latest),
            None => Ok(Wanted::Id(backup.to_string())),
        }
    }
}

/// The backup [`choose`] found.
pub struct Chosen {
    pub entry: Entry,
    /// With `--at`: which backup was chosen and how long before T it was
    /// taken (worth saying even with `--json`, on stderr).
    pub note: Option<String>,
}

/// The backup of `src` that `wanted` names, among those a restore of
/// `src` takes (outside point-in-time recovery): a PostgreSQL source's
/// logical dumps (base backups restore with --target-dir), a Redis
/// source's snapshots, a Chroma source's exports.
pub async fn choose(repo: &Repository, src: &Source, wanted: &Wanted) -> Result<Chosen> {
    let source = src.name.as_str();
    let kind = match src.kind {
        SourceKind::Postgres | SourceKind::Chroma => "dump",
        SourceKind::Redis => "snapshot",
    };
    let entry = match wanted {
        Wanted::At(at) => {
            let picked = repo.pick_at(source, Some(kind), *at).await?;
            return Ok(Chosen {
                note: Some(picked.describe()),
                entry: picked.entry,
            });
        }
        Wanted::Id(id) => repo.find(source, id).await?,
        // a Chroma source keeps exports only: its newest backup
        Wanted::Latest if src.kind == SourceKind::Chroma => repo.find(source, "latest").await?,
        Wanted::Latest => {
            // newest first
            let (entries, unreadable) = repo.backups(Some(source)).await?;
            let newest = entries.into_iter().find(|e| e.summary().kind == kind);
            crate::catalog::refuse_unreadable(
                source,
                "latest",
                &unreadable,
                newest.as_ref().map(|e| &e.summary().id),
                None,
            )?;
            newest.ok_or_else(|| match src.kind {
                SourceKind::Redis => Error::integrity(format!("source {source} has no snapshot"))
                    .hint(format!(
                        "take one with `strata backup {source}`; `strata list {source}` shows what exists"
                    )),
                _ => Error::integrity(format!("source {source} has no logical (dump) backup"))
                    .hint(format!(
                        "take one with `strata backup {source}`; base backups restore with --target-dir"
                    )),
            })?
        }
    };
    Ok(Chosen { entry, note: None })
}

/// Where to recover to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Time(DateTime<Utc>),
    /// Everything there is (RPO is measured against now).
    Latest,
}

impl Point {
    pub fn time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Point::Time(t) => *t,
            Point::Latest => now,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Point::Time(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Point::Latest => "latest".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A base backup and WAL replay.
    BaseWal,
    /// A logical dump (pg_restore).
    Dump,
    /// A Redis RDB snapshot.
    Snapshot,
    /// A Chroma export (JSON Lines per collection).
    Export,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::BaseWal => "base+wal",
            Method::Dump => "dump",
            Method::Snapshot => "snapshot",
            Method::Export => "export",
        }
    }
}

/// The WAL a point-in-time restore replays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalRange {
    pub first: String,
    pub last: Option<String>,
    pub segments: usize,
    pub bytes: u64,
}

/// What will be restored for one source.
pub struct Plan {
    pub source: Source,
    pub method: Method,
    pub entry: Entry,
    pub base: Option<Candidate>,
    pub target: Option<RecoveryTarget>,
    /// The newest point the restore brings back.
    pub restorable_point: DateTime<Utc>,
    /// The time asked for (now for `latest`).
    pub at: DateTime<Utc>,
    /// Plain bytes: the backup's objects plus the WAL to replay.
    pub bytes: u64,
    pub wal: Option<WalRange>,
}

impl Plan {
    /// How far before the asked time the restore lands (never negative).
    pub fn skew_seconds(&self) -> f64 {
        ((self.at - self.restorable_point).num_milliseconds().max(0)) as f64 / 1000.0
    }

    pub fn backup_id(&self) -> String {
        self.entry.summary().id.to_string()
    }

    /// An incremental base backup's chain, the full backup first and the
    /// plan's backup last; empty for any other backup.
    pub fn chain(&self) -> Vec<String> {
        self.base
            .as_ref()
            .map(|c| chain::steps(c).into_iter().map(|s| s.backup).collect())
            .unwrap_or_default()
    }
}

/// Chooses what to restore for `src` at `point`.
pub async fn plan(
    repo: &Repository,
    src: &Source,
    point: Point,
    identities: &Arc<Vec<Identity>>,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let at = point.time(now);
    let (entries, unreadable) = repo.backups(Some(&src.name)).await?;
    let planned = plan_from(repo, src, point, entries, identities, at).await;
    let upto = match point {
        Point::Time(t) => Some(t),
        Point::Latest => None,
    };
    let chosen = planned.as_ref().ok().map(|p| &p.entry.summary().id);
    crate::catalog::refuse_unreadable(&src.name, "newest", &unreadable, chosen, upto)?;
    planned
}

async fn plan_from(
    repo: &Repository,
    src: &Source,
    point: Point,
    entries: Vec<crate::catalog::Entry>,
    identities: &Arc<Vec<Identity>>,
    at: DateTime<Utc>,
) -> Result<Plan> {
    if entries.is_empty() {
        return Err(Error::integrity(format!(
            "source {} has no {} in the repository",
            src.name,
            match src.kind {
                SourceKind::Postgres => "backup (base backup or dump)",
                SourceKind::Redis => "snapshot",
                SourceKind::Chroma => "export",
            }
        ))
        .hint(format!(
            "take one with `strata backup {}`{}; `strata list` shows what exists",
            src.name,
            if src.kind == SourceKind::Postgres {
                " (or `--kind base` with WAL archiving, for point-in-time recovery)"
            } else {
                ""
            }
        )));
    }
    match src.kind {
        SourceKind::Postgres => {
            let cands = pitr::candidates(&entries, identities)?;
            if cands.is_empty() {
                let picked = pick::at_or_before(&entries, &src.name, Some("dump"), at)?;
                return Ok(simple(src, Method::Dump, picked, at));
            }
            plan_base(repo, src, point, cands, identities, at).await
        }
        SourceKind::Redis => {
            let picked = pick::at_or_before(&entries, &src.name, Some("snapshot"), at)?;
            Ok(simple(src, Method::Snapshot, picked, at))
        }
        SourceKind::Chroma => {
            let picked = pick::at_or_before(&entries, &src.name, Some("dump"), at)?;
            Ok(simple(src, Method::Export, picked, at))
        }
    }
}

fn simple(src: &Source, method: Method, p: pick::Picked, at: DateTime<Utc>) -> Plan {
    Plan {
        source: src.clone(),
        method,
        bytes: p.entry.summary().plain_size,
        restorable_point: p.taken,
        entry: p.entry,
        base: None,
        target: None,
        at,
        wal: None,
    }
}

async fn plan_base(
    repo: &Repository,
    src: &Source,
    point: Point,
    cands: Vec<Candidate>,
    identities: &Arc<Vec<Identity>>,
    at: DateTime<Utc>,
) -> Result<Plan> {
    let archive = WalArchive::new(repo, &src.name);
    let listing = archive.listing(Some(identities.clone())).await?;
    // When the newest archived segment was pushed: WAL up to about then
    // can be replayed. The time is the one its record keeps (a copied
    // repository keeps it too); the object's storage time only for records
    // written before strata kept it.
    let archived_until = archive.archived_until(&listing).await?;
    let wanted = match point {
        Point::Time(t) => RecoveryTarget::Time(t),
        Point::Latest => RecoveryTarget::Latest,
    };
    let mut chosen = pitr::choose(
        cands,
        &wanted,
        pitr::TimelineTarget::Latest,
        &listing.switches,
    )?;
    chain::resolve(repo, &mut chosen, identities).await?;
    let (target, restorable) = match point {
        Point::Time(t) if archived_until.is_some_and(|a| a >= t) => (RecoveryTarget::Time(t), t),
        // The archive ends before T: replay all of it, and say how far
        // short of T that is.
        _ => (
            RecoveryTarget::Latest,
            archived_until
                .unwrap_or(chosen.base.stop_time)
                .max(chosen.base.stop_time)
                .min(at),
        ),
    };
    pitr::check_live_timelines(&chosen, pitr::TimelineTarget::Latest, &listing)?;
    super::pitr::check_wal(&listing, &chosen, &target, pitr::TimelineTarget::Latest)?;
    let wal = wal_range(&listing, &chosen);
    Ok(Plan {
        source: src.clone(),
        method: Method::BaseWal,
        bytes: chain::bytes(&chosen) + wal.as_ref().map_or(0, |w| w.bytes),
        entry: chosen.entry.clone(),
        restorable_point: restorable,
        base: Some(chosen),
        target: Some(target),
        at,
        wal,
    })
}

/// What restores `src` to its backup of the set labelled `label`
/// (`strata restore --all --backup label:L`, issue 19 item 4): that backup
/// as it is — a dump, snapshot or export as taken; a base backup replayed
/// just to its end (`recovery_target_lsn` = its stop LSN), the state it
/// was taken in, with the WAL that needs checked as for any restore.
pub async fn labelled(
    repo: &Repository,
    src: &Source,
    label: &str,
    identities: &Arc<Vec<Identity>>,
) -> Result<Plan> {
    let entry = repo.find(&src.name, &format!("label:{label}")).await?;
    let s = entry.summary().clone();
    let simple = |method| Plan {
        source: src.clone(),
        method,
        bytes: s.plain_size,
        restorable_point: s.started,
        entry: entry.clone(),
        base: None,
        target: None,
        at: s.started,
        wal: None,
    };
    match (src.kind, s.kind.as_str()) {
        (SourceKind::Redis, _) => Ok(simple(Method::Snapshot)),
        (SourceKind::Chroma, _) => Ok(simple(Method::Export)),
        (SourceKind::Postgres, "base") => {
            let mut chosen = pitr::candidates(std::slice::from_ref(&entry), identities)?
                .pop()
                .expect("a base backup is a candidate");
            chain::resolve(repo, &mut chosen, identities).await?;
            let stop: Lsn = chosen.base.stop_lsn.parse().map_err(|_| {
                Error::integrity(format!(
                    "base backup {} records a bad stop LSN {:?}",
                    s.id, chosen.base.stop_lsn
                ))
            })?;
            let target = RecoveryTarget::Lsn(stop);
            let archive = WalArchive::new(repo, &src.name);
            let listing = archive.listing(Some(identities.clone())).await?;
            super::pitr::check_wal(&listing, &chosen, &target, pitr::TimelineTarget::Latest)?;
            let wal = wal_range(&listing, &chosen);
            let end = chosen.base.stop_time;
            Ok(Plan {
                source: src.clone(),
                method: Method::BaseWal,
                bytes: chain::bytes(&chosen) + wal.as_ref().map_or(0, |w| w.bytes),
                entry: chosen.entry.clone(),
                restorable_point: end,
                base: Some(chosen),
                target: Some(target),
                at: end,
                wal,
            })
        }
        (SourceKind::Postgres, _) => Ok(simple(Method::Dump)),
    }
}

/// The archived segments from the base backup's start on.
fn wal_range(listing: &WalListing, c: &Candidate) -> Option<WalRange> {
    let (Ok(start), Some(size)) = (
        c.base.start_lsn.parse::<Lsn>(),
        SegmentSize::new(c.base.wal_segment_size),
    ) else {
        return None;
    };
    let first = SegmentName::containing(Timeline(c.base.timeline), start, size);
    let segs: Vec<&SegmentName> = listing.segments.iter().filter(|s| **s >= first).collect();
    Some(WalRange {
        first: first.to_string(),
        last: segs.last().map(|s| s.to_string()),
        segments: segs.len(),
        bytes: segs.len() as u64 * size.bytes(),
    })
}

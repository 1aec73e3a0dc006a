//! `strata copy`: backups, and the WAL they need, from one repository into
//! another, byte for byte: a second copy in another region or account
//! without running any backup twice (docs/deployment.md).
//!
//! What is copied (a closure: nothing copied needs anything the target
//! lacks):
//! - every selected backup the target lacks: its data objects, then — for
//!   a base backup — the WAL from its start to its stop segment (from the
//!   plain part of its manifest, so no identity is needed), then its
//!   manifest, last, as a backup writes it: a backup exists in the target
//!   only once everything it needs is there;
//! - per PostgreSQL source with a selected base backup, every archived
//!   WAL file from the oldest selected base backup's start segment on
//!   (history files always): point-in-time recovery to any time the source
//!   repository covers from that backup on, and the restore points strata
//!   recorded (`restore --to-name`). That is also how WAL a secondary
//!   `wal push` missed is caught up.
//!
//! Objects are copied as they are: the encrypted bytes, no identity
//! needed (both repositories share the recipients). Each data object is
//! checked against the SHA-256 of its stored bytes recorded in the plain
//! manifest (size alone for objects written before strata recorded it):
//! a damaged object is refused, its backup not copied, the command exits
//! 4 naming it. WAL objects have no stored digest (their record is
//! written before them); with an identity at hand each is read back from
//! the source against its record first, without one its size is checked.
//! Every object is read back from the target after its upload and
//! compared with what was sent ([`object`]).
//!
//! Resumable: a rerun skips every object the target holds (a store's
//! create-only put is atomic, so an object there is whole) and finishes a
//! backup whose manifest is missing. The target's own `object_lock`
//! applies (its tiers as the config selects them for it): a backup's
//! objects are locked until its start plus the tier's retention period
//! there, and so is the WAL range a locked base backup needs (locks of
//! files already there are extended); other WAL for the `wal` tier's
//! period from now. WAL files go four at a time; backups one object at a
//! time.
//!
//! The copy holds the source lock of each source it writes in the target,
//! so a `prune` or `cleanup` there never takes a copy's objects for
//! leftovers.

pub mod lag;
pub mod object;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::lock::{self, LockKind};
use crate::catalog::{Entry, Repository};
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::sources::postgres::base::basis;
use crate::storage::Storage;
use crate::tier::Tier;

/// What to copy.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only these sources' backups (none: every source in the source
    /// repository).
    pub sources: Vec<String>,
    /// Only backups started at or after this time (and WAL from the
    /// oldest such base backup on).
    pub since: Option<DateTime<Utc>>,
    /// Only these backups (`copy_to`: the backup just taken).
    pub only: Option<Vec<crate::catalog::BackupId>>,
}

/// The repository copied into, as the config sees it.
pub struct Target<'a> {
    pub name: &'a str,
    pub repo: &'a Repository,
    /// Its tiers (their `object_lock` as they apply there).
    pub tiers: &'a BTreeMap<String, Tier>,
}

/// One backup's copy.
#[derive(Debug, Clone, Serialize)]
pub struct BackupCopy {
    pub source: String,
    pub id: String,
    pub kind: String,
    /// `copied`, `present` (the target had it) or `refused` (see problems).
    pub status: &'static str,
    pub objects_copied: usize,
    /// Objects an earlier, interrupted copy had stored already.
    pub objects_present: usize,
    pub bytes_copied: u64,
}

impl BackupCopy {
    /// Backup `e` with `status`, nothing copied (yet).
    fn of(e: &Entry, status: &'static str) -> BackupCopy {
        let s = e.summary();
        BackupCopy {
            source: s.source.clone(),
            id: s.id.to_string(),
            kind: s.kind.clone(),
            status,
            objects_copied: 0,
            objects_present: 0,
            bytes_copied: 0,
        }
    }
}

/// A source's WAL copy.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WalCopy {
    pub source: String,
    /// The first segment position copied from (the oldest selected base
    /// backup's start).
    pub from_segment: Option<String>,
    pub files_copied: usize,
    pub files_present: usize,
    pub bytes_copied: u64,
    /// Restore points (`backup --kind point`) copied.
    pub points_copied: usize,
    /// Whether each file was read back from the source against its record
    /// first (an identity was at hand); else only sizes are checked.
    pub content_checked: bool,
}

/// What went wrong with one object or backup; the copy went on with the
/// rest.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub source: String,
    pub what: String,
    pub message: String,
    pub exit_code: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub backups: Vec<BackupCopy>,
    pub wal: Vec<WalCopy>,
    pub problems: Vec<Problem>,
    pub objects_copied: usize,
    pub bytes_copied: u64,
    pub ok: bool,
}

impl Report {
    /// The exit code: 0, or the most telling problem's (integrity first).
    pub fn exit_code(&self) -> u8 {
        let codes: Vec<u8> = self.problems.iter().map(|p| p.exit_code).collect();
        [4u8, 8, 3, 6, 7, 1]
            .into_iter()
            .find(|c| codes.contains(c))
            .or(codes.first().copied())
            .unwrap_or(0)
    }
}

fn problem(source: &str, what: impl Into<String>, e: &Error) -> Problem {
    Problem {
        source: source.to_string(),
        what: what.into(),
        message: match &e.hint {
            Some(h) => format!("{} (hint: {h})", e.message),
            None => e.message.clone(),
        },
        exit_code: e.exit_code(),
    }
}

/// Whether a failure stops the whole copy (the store failing, a
/// misconfiguration) rather than one backup (damage, a conflict, a
/// manifest of a newer format).
fn fatal(e: &Error) -> bool {
    !matches!(e.kind, Kind::Integrity | Kind::Conflict | Kind::Repository)
}

/// Copies what `req` selects from `from` into `to`. `identities`, when at
/// hand, let WAL be checked against its records before it is copied.
pub async fn copy(
    from: &Repository,
    from_name: &str,
    to: &Target<'_>,
    req: &Request,
    identities: Option<Arc<Vec<Identity>>>,
) -> Result<Report> {
    let started = Utc::now();
    let (entries, unreadable) = from.backups(None).await?;
    let mut report = Report {
        from: from_name.to_string(),
        to: to.name.to_string(),
        backups: Vec::new(),
        wal: Vec::new(),
        problems: Vec::new(),
        objects_copied: 0,
        bytes_copied: 0,
        ok: true,
    };
    let wanted = |source: &str| req.sources.is_empty() || req.sources.iter().any(|s| s == source);
    for u in &unreadable {
        let source = u.key.split('/').nth(1).unwrap_or("");
        if wanted(source) {
            report.problems.push(problem(
                source,
                &u.key,
                &Error::new(
                    u.error.kind,
                    format!(
                        "manifest {} cannot be read, its backup is not copied: {}",
                        u.key, u.error.message
                    ),
                ),
            ));
        }
    }
    let selected: Vec<&Entry> = entries
        .iter()
        .filter(|e| wanted(&e.summary().source))
        .filter(|e| req.since.is_none_or(|t| e.summary().started >= t))
        .filter(|e| {
            req.only
                .as_ref()
                .is_none_or(|ids| ids.contains(&e.summary().id))
        })
        .collect();
    // an incremental base backup is copied with its chain, whatever
    // --since says: nothing copied is unrestorable on its own (issue 18)
    let mut ids: BTreeSet<(String, String)> = selected
        .iter()
        .map(|e| (e.summary().source.clone(), e.summary().id.to_string()))
        .collect();
    let mut closed: Vec<&Entry> = Vec::new();
    for e in &selected {
        let s = e.summary();
        let mut members = Vec::new();
        let mut missing = None;
        for id in chain_of(e) {
            match entries
                .iter()
                .find(|m| m.summary().source == s.source && m.summary().id.as_str() == id)
            {
                Some(m) => members.push(m),
                None => {
                    missing = Some(id.clone());
                    break;
                }
            }
        }
        if let Some(id) = missing {
            report.problems.push(problem(
                &s.source,
                s.id.to_string(),
                &Error::integrity(format!(
                    "incremental base backup {} needs backup {id} of its chain, which repository {from_name} does not hold; it is not copied",
                    s.id
                ))
                .hint(format!("`strata --repo {from_name} verify {}` names what is missing", s.source)),
            ));
            continue;
        }
        for m in members {
            if ids.insert((m.summary().source.clone(), m.summary().id.to_string())) {
                closed.push(m);
            }
        }
        closed.push(e);
    }
    let mut selected = closed;
    // oldest first: an interrupted copy leaves the older backups whole,
    // and a chain's members come before the incrementals that need them
    selected.sort_by_key(|e| (e.summary().started, e.summary().id.to_string()));
    let present: BTreeSet<String> = to
        .repo
        .storage()
        .list("manifests/")
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    let mut by_source: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
    for e in selected {
        by_source
            .entry(e.summary().source.clone())
            .or_default()
            .push(e);
    }
    for (source, backups) in by_source {
        let work = copy_source(
            from,
            to,
            &source,
            &backups,
            &present,
            identities.clone(),
            started,
            &mut report,
        );
        let what = format!("copy {source} from repository {from_name}");
        lock::with_lock(to.repo, LockKind::Source(source.clone()), &what, work).await?;
    }
    report.objects_copied = report
        .backups
        .iter()
        .map(|b| b.objects_copied)
        .sum::<usize>()
        + report.wal.iter().map(|w| w.files_copied).sum::<usize>();
    report.bytes_copied = report.backups.iter().map(|b| b.bytes_copied).sum::<u64>()
        + report.wal.iter().map(|w| w.bytes_copied).sum::<u64>();
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// An incremental base backup's chain (the backups it needs, the full
/// first) from the plain part of its manifest; empty for any other.
fn chain_of(e: &Entry) -> &[String] {
    e.file.wal.as_ref().map_or(&[], |w| w.chain.as_slice())
}

/// One source's backups (oldest first), then its WAL.
#[allow(clippy::too_many_arguments)]
async fn copy_source(
    from: &Repository,
    to: &Target<'_>,
    source: &str,
    backups: &[&Entry],
    present: &BTreeSet<String>,
    identities: Option<Arc<Vec<Identity>>>,
    started: DateTime<Utc>,
    report: &mut Report,
) -> Result<()> {
    let mut wal = wal::WalCopier::new(from, to, source, identities).await?;
    let mut from_pos: Option<wal::Position> = None;
    // backups not copied: an incremental needing one is not copied either
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for e in backups {
        let s = e.summary();
        if let Some(id) = chain_of(e).iter().find(|id| failed.contains(*id)) {
            failed.insert(s.id.to_string());
            report.problems.push(problem(
                source,
                s.id.to_string(),
                &Error::integrity(format!(
                    "incremental base backup {} is not copied: backup {id} of its chain was not",
                    s.id
                )),
            ));
            report.backups.push(BackupCopy::of(e, "refused"));
            continue;
        }
        if let Some(range) = &e.file.wal {
            let start = wal::Position::of(&range.start_lsn, range.wal_segment_size)?;
            from_pos = Some(from_pos.map_or(start, |p| p.min(start)));
        }
        if present.contains(&e.manifest_key) {
            report.backups.push(BackupCopy::of(e, "present"));
            continue;
        }
        match copy_backup(from, to, e, &mut wal).await {
            Ok(c) => report.backups.push(c),
            Err(err) if !fatal(&err) => {
                failed.insert(s.id.to_string());
                report
                    .problems
                    .push(problem(source, s.id.to_string(), &err));
                report.backups.push(BackupCopy::of(e, "refused"));
            }
            Err(err) => return Err(err.context(format!("copying backup {} of {source}", s.id))),
        }
    }
    if let Some(pos) = from_pos {
        wal.copy_from(pos).await?;
        wal.copy_points(to.repo.storage()).await?;
        let (stats, problems) = wal.finish();
        let clean = problems.is_empty();
        report.wal.push(stats);
        report.problems.extend(problems);
        if clean {
            // caught up: a secondary `wal push` failure recorded before
            // this copy started is mended
            wal::clear_push_failures(from, to.name, source, started).await;
        }
    }
    Ok(())
}

/// The lock a backup's objects get in the target: its tier's there,
/// counted from the backup's start (`None`: not locked, or the period is
/// over).
async fn backup_storage(to: &Target<'_>, e: &Entry) -> Result<Arc<dyn Storage>> {
    let s = e.summary();
    let lock = s
        .tier
        .as_ref()
        .and_then(|t| to.tiers.get(t))
        .and_then(|t| t.object_lock.map(|l| (t, l)));
    match lock {
        Some((t, l)) => {
            let lock = l.at(s.started);
            if lock.retain_until <= Utc::now() {
                return Ok(to.repo.storage().clone());
            }
            Ok(to
                .repo
                .with_object_lock(lock, &t.name)
                .await?
                .storage()
                .clone())
        }
        None => Ok(to.repo.storage().clone()),
    }
}

/// One backup: data objects, its WAL range (base backups), the manifest.
async fn copy_backup(
    from: &Repository,
    to: &Target<'_>,
    e: &Entry,
    wal: &mut wal::WalCopier,
) -> Result<BackupCopy> {
    let s = e.summary();
    let store = backup_storage(to, e).await?;
    let mut out = BackupCopy::of(e, "copied");
    let there: BTreeMap<String, u64> = to
        .repo
        .storage()
        .list(&Repository::data_prefix(&s.source, &s.id))
        .await?
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    for o in &s.objects {
        match there.get(&o.key) {
            Some(size) if *size == o.stored_size => {
                out.objects_present += 1;
                continue;
            }
            Some(size) => {
                return Err(Error::conflict(format!(
                    "object {} already exists in the target repository with {size} bytes, not the {} its manifest records; the backup is not copied",
                    o.key, o.stored_size
                )));
            }
            None => {}
        }
        let expect = object::Expect {
            size: Some(o.stored_size),
            sha256: o.stored_sha256.clone(),
        };
        match object::copy(from.storage(), &store, &o.key, &expect).await? {
            object::Copied::Stored(n) => {
                out.objects_copied += 1;
                out.bytes_copied += n;
            }
            object::Copied::Present => out.objects_present += 1,
        }
    }
    // a base backup's basis (plain, checked by its own checksum): the
    // next incremental taken into the target applies on it
    if s.kind == "base"
        && let Some(basis) = basis::load(from, &s.source, &s.id).await?
    {
        let key = Repository::data_key(&s.source, &s.id, basis::BASIS_OBJECT);
        let want = basis.clone();
        if let object::Copied::Stored(n) =
            object::put_small(&store, &key, basis.into(), |have| have == want.as_slice()).await?
        {
            out.objects_copied += 1;
            out.bytes_copied += n;
        }
    }
    if let Some(range) = &e.file.wal {
        let locked = (!Arc::ptr_eq(&store, to.repo.storage())).then(|| store.clone());
        if let Some(p) = wal.copy_range(range, locked).await?.first() {
            return Err(Error::new(
                Kind::Integrity,
                format!(
                    "the WAL base backup {} needs was not copied whole ({}); its manifest is not written",
                    s.id, p.message
                ),
            ));
        }
    }
    // the manifest last: the backup exists in the target from now on
    let bytes = from.storage().get_bytes(&e.manifest_key).await?;
    crate::catalog::ManifestFile::parse(&e.manifest_key, &bytes)?;
    let want = bytes.clone();
    object::put_small(&store, &e.manifest_key, bytes, |have| have == want.as_ref()).await?;
    Ok(out)
}

/// Copies from `cfg`'s selected repository into the one named `to`. The
/// target must exist (`strata --repo NAME init`) and, like the source,
/// hold the configured recipients: a copy is readable with the same
/// identities as its original.
pub async fn between(
    cfg: &crate::config::Config,
    to: &str,
    req: &Request,
    identities: Option<Arc<Vec<Identity>>>,
) -> Result<Report> {
    if to == cfg.repo_name {
        return Err(
            Error::usage(format!("cannot copy repository {to} into itself"))
                .hint("name the source with --from (or --repo) and the target with --to"),
        );
    }
    let to_cfg = cfg.select(Some(to))?;
    let from = crate::context::open_repository(cfg).await?;
    let target = crate::context::open_repository(&to_cfg)
        .await
        .map_err(|e| {
            if e.kind == Kind::Repository {
                e.hint(format!("create it with `strata --repo {to} init`"))
            } else {
                e
            }
        })?;
    from.check_recipients(&cfg.recipients).await?;
    target.check_recipients(&cfg.recipients).await?;
    let t = Target {
        name: to,
        repo: &target,
        tiers: &to_cfg.tiers,
    };
    copy(&from, &cfg.repo_name, &t, req, identities).await
}

/// One repository's copy after a backup (`copy_to`).
#[derive(Debug, Clone, Serialize)]
pub struct CopyOutcome {
    pub repository: String,
    pub ok: bool,
    pub objects_copied: usize,
    pub bytes_copied: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub exit_code: u8,
}

/// A tier's `copy_to`: the backup `id` of `source` just committed, copied
/// into each repository the tier names (but the one it was taken in),
/// with the WAL it needs. A failure does not undo the backup: it is
/// returned, and posted to `[notify]`; the next `strata copy` catches up.
pub async fn after_backup(
    cfg: &crate::config::Config,
    tier: &Tier,
    source: &str,
    id: &str,
) -> Vec<CopyOutcome> {
    let mut out = Vec::new();
    let Ok(id) = id.parse::<crate::catalog::BackupId>() else {
        return out;
    };
    for to in tier.copy_to.iter().filter(|r| **r != cfg.repo_name) {
        let req = Request {
            sources: vec![source.to_string()],
            since: None,
            only: Some(vec![id.clone()]),
        };
        let r = between(cfg, to, &req, None).await.and_then(|r| {
            if r.ok {
                Ok(r)
            } else {
                let p = &r.problems[0];
                Err(Error::new(
                    crate::error::Kind::from_exit_code(p.exit_code),
                    p.message.clone(),
                ))
            }
        });
        if let Some(n) = &cfg.notify {
            let e = crate::notify::Event::copy(
                if r.is_ok() {
                    "copy_succeeded"
                } else {
                    "copy_failed"
                },
                source,
                Some(&tier.name),
                to,
                r.as_ref().err(),
            );
            n.send(&e).await;
        }
        out.push(match r {
            Ok(r) => CopyOutcome {
                repository: to.clone(),
                ok: true,
                objects_copied: r.objects_copied,
                bytes_copied: r.bytes_copied,
                error: None,
                hint: None,
                exit_code: 0,
            },
            Err(e) => CopyOutcome {
                repository: to.clone(),
                ok: false,
                objects_copied: 0,
                bytes_copied: 0,
                exit_code: e.exit_code(),
                error: Some(e.message),
                hint: Some(e.hint.unwrap_or_else(|| {
                    format!("the backup stands; `strata copy --to {to} {source}` copies it once the repository answers")
                })),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(codes: &[u8]) -> Report {
        Report {
            from: "default".into(),
            to: "dr".into(),
            backups: vec![],
            wal: vec![],
            problems: codes
                .iter()
                .map(|c| Problem {
                    source: "s".into(),
                    what: "x".into(),
                    message: "m".into(),
                    exit_code: *c,
                })
                .collect(),
            objects_copied: 0,
            bytes_copied: 0,
            ok: codes.is_empty(),
        }
    }

    /// A damaged source object is the most telling problem (exit 4),
    /// then a conflict in the target (8).
    #[test]
    fn exit_code_prefers_integrity_then_conflict() {
        assert_eq!(report(&[]).exit_code(), 0);
        assert_eq!(report(&[8, 4]).exit_code(), 4);
        assert_eq!(report(&[6, 8]).exit_code(), 8);
        assert_eq!(report(&[5]).exit_code(), 5);
    }
}

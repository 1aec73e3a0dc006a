//! Choosing the parent of an incremental base backup, from plain data only
//! (backup hosts hold no identity): the newest committed base backup of
//! the source on the same timeline and of the same cluster (system
//! identifier, plain beside the WAL range), whose chain is whole, not at
//! `max_chain`, and which stores a basis. When there is none, the backup is
//! taken full and says why: an incremental is never taken on a parent that
//! could not be restored.
//!
//! Under a tier's object lock, every backup of the chain is then locked as
//! long as the new one (as the WAL a base backup needs is, `lock_wal`): an
//! incremental that cannot be deleted is worthless if its parent can be.

use crate::catalog::{BackupId, Entry, Repository};
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::storage::StorageError;

use super::super::wal::Lsn;
use super::basis::{self, BASIS_OBJECT};

/// The most backups a restore applies when `max_chain` is not set: a
/// weekly full and six daily incrementals.
pub const DEFAULT_MAX_CHAIN: u32 = 7;

/// The parent an incremental applies on.
pub struct Parent {
    pub id: BackupId,
    pub start_lsn: Lsn,
    /// The new backup's chain: the parent's, then the parent.
    pub chain: Vec<String>,
    /// The parent's basis (a valid backup manifest).
    pub basis: Vec<u8>,
    /// The chain's backups (for the lock extension).
    pub members: Vec<Entry>,
}

/// What to take.
pub enum Choice {
    Incremental(Box<Parent>),
    /// A full backup, and why.
    Full(String),
}

/// The parent for an incremental of `source` on `timeline` of cluster
/// `system_identifier`, restores applying at most `max_chain` backups.
pub async fn choose(
    repo: &Repository,
    source: &str,
    system_identifier: &str,
    timeline: u32,
    max_chain: u32,
) -> Result<Choice> {
    let (entries, _) = repo.backups(Some(source)).await?;
    let bases: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.summary().kind == "base" && e.file.wal.is_some())
        .collect();
    let same_timeline: Vec<&Entry> = bases
        .iter()
        .copied()
        .filter(|e| e.file.wal.as_ref().is_some_and(|w| w.timeline == timeline))
        .collect();
    let Some(newest) = same_timeline.first() else {
        return Ok(Choice::Full(if bases.is_empty() {
            format!("{source} has no base backup yet to be incremental on")
        } else {
            format!("{source} has no base backup on timeline {timeline} yet")
        }));
    };
    let wal = newest.file.wal.as_ref().expect("filtered");
    let id = &newest.summary().id;
    match wal.system_identifier.as_deref() {
        None => {
            return Ok(Choice::Full(format!(
                "the newest base backup {id} was taken before incremental backups (it stores no basis)"
            )));
        }
        Some(s) if s != system_identifier => {
            return Ok(Choice::Full(format!(
                "the newest base backup {id} is of another cluster (system identifier {s}, the server's is {system_identifier})"
            )));
        }
        Some(_) => {}
    }
    let mut chain = wal.chain.clone();
    chain.push(id.to_string());
    if chain.len() as u64 + 1 > u64::from(max_chain) {
        return Ok(Choice::Full(format!(
            "an incremental on {id} would make a chain of {} backups (max_chain = {max_chain})",
            chain.len() + 1
        )));
    }
    let mut members = Vec::with_capacity(chain.len());
    for c in &chain {
        match entries.iter().find(|e| e.summary().id.as_str() == c) {
            Some(e) => members.push(e.clone()),
            None => {
                return Ok(Choice::Full(format!(
                    "backup {c}, which the newest base backup {id} needs, is gone"
                )));
            }
        }
    }
    let basis = match basis::load(repo, source, id).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Ok(Choice::Full(format!(
                "the newest base backup {id} stores no basis ({BASIS_OBJECT})"
            )));
        }
        // a damaged basis costs this backup its increment, not its run
        Err(e) if e.kind == crate::error::Kind::Integrity => return Ok(Choice::Full(e.message)),
        Err(e) => return Err(e),
    };
    let start_lsn: Lsn = wal.start_lsn.parse().map_err(|e| {
        Error::integrity(format!(
            "manifest {}: start LSN {:?}: {e}",
            newest.manifest_key, wal.start_lsn
        ))
    })?;
    Ok(Choice::Incremental(Box::new(Parent {
        id: id.clone(),
        start_lsn,
        chain,
        basis,
        members,
    })))
}

/// Puts the repository handle's object lock (a tier's) on every object
/// and manifest of the chain's backups, so none expires before the new
/// backup. Does nothing without a lock.
pub async fn lock_chain(
    repo: &Repository,
    source: &str,
    members: &[Entry],
    reporter: &Reporter,
) -> Result<()> {
    let storage = repo.storage();
    let mut extended = 0;
    for m in members {
        let s = m.summary();
        let basis = Repository::data_key(source, &s.id, BASIS_OBJECT);
        let keys = s
            .objects
            .iter()
            .map(|o| o.key.clone())
            .chain([basis.clone(), m.manifest_key.clone()]);
        for key in keys {
            match storage.extend_lock(&key).await {
                Ok(true) => extended += 1,
                Ok(false) => {}
                Err(StorageError::NotFound { .. }) if key == basis => {}
                Err(e) => {
                    return Err(Error::from(e).context(format!(
                        "locking {key} of backup {}, which the incremental needs, as long as the incremental",
                        s.id
                    )));
                }
            }
        }
    }
    if extended > 0 {
        reporter.note(format!(
            "{source}: object lock of {extended} objects of the chain extended to the backup's"
        ));
    }
    Ok(())
}

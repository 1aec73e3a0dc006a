//! An incremental base backup's chain: the full backup and the earlier
//! incrementals it applies on, opened and checked before a restore reads
//! a byte (issue 18 item 2). A backup is only as complete as its chain:
//! a member that is missing or damaged is refused by name (exit 4),
//! never silently replaced by an older backup — that would restore an
//! earlier state than the one asked for, or a corrupt one.
//!
//! The links checked: the first member is a full backup; each later one
//! names the one before it as its parent, with the parent's start LSN,
//! timeline and system identifier; each member's own chain is the prefix
//! before it; every member's data object exists with its recorded size
//! (its digest is checked as it streams, and `verify --read-data` reads
//! it whole).

use std::sync::Arc;

use serde::Serialize;

use super::BASE_OBJECT;
use super::apply::ApplyStats;
use crate::catalog::manifest::BaseInfo;
use crate::catalog::{Entry, Repository};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::sources::postgres::pitr::{self, Candidate};
use crate::storage::Storage;

/// One backup of a chain as a restore report shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChainStep {
    pub backup: String,
    /// `full`, or the incremental's method (`server`, `blocks`).
    pub method: String,
    /// Plain bytes of its tar.
    pub bytes: u64,
    /// What applying it did (incrementals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<ApplyStats>,
}

/// The chain of `c` (empty for a full backup) followed by `c` itself, as
/// steps of a report.
pub fn steps(c: &Candidate) -> Vec<ChainStep> {
    if c.chain.is_empty() {
        return Vec::new();
    }
    c.chain
        .iter()
        .chain(std::iter::once(c))
        .map(|m| ChainStep {
            backup: m.entry.summary().id.to_string(),
            method: method(&m.base).to_string(),
            bytes: m.record.plain_size,
            applied: None,
        })
        .collect()
}

/// Plain bytes a restore of `c` reads: its chain's and its own.
pub fn bytes(c: &Candidate) -> u64 {
    c.chain.iter().map(|m| m.record.plain_size).sum::<u64>() + c.record.plain_size
}

/// `full`, `server` or `blocks`.
pub fn method(b: &BaseInfo) -> &'static str {
    b.incremental.as_ref().map_or("full", |i| i.method.as_str())
}

/// The error for a chain member that cannot be used.
fn broken(what: &str, member: &str, of: &str, detail: &str, before: Option<&str>) -> Error {
    Error::integrity(format!(
        "backup {member} of the chain of {of} is {what}{detail}: {of} cannot be restored without it"
    ))
    .hint(match before {
        Some(prev) => format!(
            "restore an earlier state from the backup before it in the chain: --backup {prev}; or from an older full base backup (`strata list` shows them); `strata verify` checks every chain"
        ),
        None => "restore from an older full base backup with --backup ID (`strata list` shows them), or take a new full base backup; `strata verify` checks every chain".to_string(),
    })
}

/// Opens the chain of `cand` (a no-op for a full backup) into
/// `cand.chain`, refusing a missing or damaged member by name, or links
/// that do not hold.
pub async fn resolve(
    repo: &Repository,
    cand: &mut Candidate,
    identities: &Arc<Vec<Identity>>,
) -> Result<()> {
    let Some(inc) = cand.base.incremental.clone() else {
        return Ok(());
    };
    let source = cand.entry.summary().source.clone();
    let of = cand.entry.summary().id.to_string();
    let (entries, unreadable) = repo.backups(Some(&source)).await?;
    let mut members = Vec::new();
    for (i, id) in inc.chain.iter().enumerate() {
        let before = i.checked_sub(1).map(|j| inc.chain[j].as_str());
        let Some(entry) = entries.iter().find(|e| e.summary().id.as_str() == id) else {
            return Err(
                match unreadable
                    .iter()
                    .find(|u| u.id().is_some_and(|u| u.as_str() == id))
                {
                    Some(u) => broken(
                        "damaged",
                        id,
                        &of,
                        &format!(" (its manifest cannot be read: {})", u.error.message),
                        before,
                    ),
                    None => broken("missing", id, &of, " (no manifest)", before),
                },
            );
        };
        let opened = open_member(entry, identities)
            .map_err(|e| broken("damaged", id, &of, &format!(" ({})", e.message), before))?;
        members.push(opened);
    }
    let links: Vec<(&str, &BaseInfo)> = members
        .iter()
        .map(|m| (m.entry.summary().id.as_str(), &m.base))
        .chain(std::iter::once((of.as_str(), &cand.base)))
        .collect();
    check_links(&links)?;
    for (i, m) in members.iter().chain(std::iter::once(&*cand)).enumerate() {
        let id = m.entry.summary().id.to_string();
        let before = i.checked_sub(1).map(|j| inc.chain[j].as_str());
        check_object(repo.storage(), m)
            .await
            .map_err(|(what, detail)| broken(what, &id, &of, &detail, before))?;
    }
    cand.chain = members;
    Ok(())
}

fn open_member(entry: &Entry, identities: &[Identity]) -> Result<Candidate> {
    if entry.summary().kind != "base" {
        return Err(Error::integrity(format!(
            "it is a {} backup, not a base backup",
            entry.summary().kind
        )));
    }
    pitr::candidates(std::slice::from_ref(entry), identities)?
        .pop()
        .ok_or_else(|| Error::integrity("no base backup information"))
}

/// That the member's data object is there, with its recorded size.
async fn check_object(
    storage: &Arc<dyn Storage>,
    m: &Candidate,
) -> std::result::Result<(), (&'static str, String)> {
    match storage.head(&m.record.key).await {
        Ok(Some(meta)) if meta.size == m.record.stored_size => Ok(()),
        Ok(Some(meta)) => Err((
            "damaged",
            format!(
                " (its {BASE_OBJECT} holds {} bytes, the manifest records {})",
                meta.size, m.record.stored_size
            ),
        )),
        Ok(None) => Err((
            "missing",
            format!(" (its data object {} is gone)", m.record.key),
        )),
        Err(e) => Err(("unreadable", format!(" (checking {}: {e})", m.record.key))),
    }
}

/// The links of a chain (see the module docs): `links` are the backups
/// (id, base information) of an incremental's chain, in order, ending
/// with the incremental itself.
pub fn check_links(links: &[(&str, &BaseInfo)]) -> Result<()> {
    let Some(&(of, _)) = links.last() else {
        return Ok(());
    };
    let bad = |member: &str, why: String| {
        Error::integrity(format!(
            "the chain of {of} does not hold together at backup {member}: {why}"
        ))
        .hint("restore from an older full base backup with --backup ID (`strata list` shows them), or take a new full base backup; `strata verify` checks every chain")
    };
    if let Some(i) = &links[0].1.incremental {
        return Err(bad(
            links[0].0,
            format!(
                "the first backup of a chain must be full, this one is incremental on {}",
                i.parent
            ),
        ));
    }
    for (i, w) in links.windows(2).enumerate() {
        let ((pid, parent), (id, child)) = (w[0], w[1]);
        let Some(ci) = &child.incremental else {
            return Err(bad(id, "a full backup in the middle of a chain".into()));
        };
        if ci.parent != pid {
            return Err(bad(
                id,
                format!("its parent is {}, the chain names {pid}", ci.parent),
            ));
        }
        let names: Vec<&str> = ci.chain.iter().map(String::as_str).collect();
        let want: Vec<&str> = links[..=i].iter().map(|l| l.0).collect();
        if names != want {
            return Err(bad(
                id,
                format!(
                    "its own chain is [{}], not [{}]",
                    names.join(", "),
                    want.join(", ")
                ),
            ));
        }
        if ci.parent_start_lsn != parent.start_lsn {
            return Err(bad(
                id,
                format!(
                    "it applies on the state at LSN {}, but its parent {pid} starts at LSN {}",
                    ci.parent_start_lsn, parent.start_lsn
                ),
            ));
        }
        if child.timeline != parent.timeline {
            return Err(bad(
                id,
                format!(
                    "it is on timeline {}, its parent {pid} on timeline {}",
                    child.timeline, parent.timeline
                ),
            ));
        }
        if child.system_identifier != parent.system_identifier {
            return Err(bad(
                id,
                format!(
                    "it is of the cluster with system identifier {}, its parent {pid} of {}",
                    child.system_identifier, parent.system_identifier
                ),
            ));
        }
    }
    Ok(())
}

/// `strata verify`'s check of the chain of backup `of` (issue 18 item
/// 1): `chain` is its plain chain; `problem(id)` says what is wrong with
/// a member (`None`: listed, and its own checks passed); `links`, with
/// the identity, the opened base information of the chain and of `of`
/// last (then the links are checked too).
pub fn verify(
    chain: &[String],
    problem: impl Fn(&str) -> Option<String>,
    links: Option<&[(&str, &BaseInfo)]>,
) -> Vec<String> {
    let mut out: Vec<String> = chain
        .iter()
        .filter_map(|id| {
            problem(id).map(|p| format!("backup {id} of its chain, which it needs, {p}"))
        })
        .collect();
    if out.is_empty()
        && let Some(links) = links
        && let Err(e) = check_links(links)
    {
        out.push(e.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::catalog::manifest::{Incremental, IncrementalMethod};

    fn base(start: &str, parent: Option<(&str, &str, &[&str])>) -> BaseInfo {
        BaseInfo {
            start_lsn: start.into(),
            stop_lsn: start.into(),
            timeline: 1,
            start_time: Utc::now(),
            stop_time: Utc::now(),
            system_identifier: "7".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            wal_segment_size: 16 << 20,
            backup_label: String::new(),
            basis_sha256: None,
            incremental: parent.map(|(p, lsn, chain)| Incremental {
                method: IncrementalMethod::Blocks,
                parent: p.into(),
                parent_start_lsn: lsn.into(),
                chain: chain.iter().map(|c| c.to_string()).collect(),
            }),
        }
    }

    #[test]
    fn links_of_a_chain() {
        let full = base("0/2000028", None);
        let i1 = base("0/4000028", Some(("F", "0/2000028", &["F"])));
        let i2 = base("0/6000028", Some(("I1", "0/4000028", &["F", "I1"])));
        check_links(&[("F", &full), ("I1", &i1), ("I2", &i2)]).unwrap();
        check_links(&[("F", &full)]).unwrap();

        let says = |links: &[(&str, &BaseInfo)], what: &str| {
            let e = check_links(links).unwrap_err();
            assert_eq!(e.exit_code(), 4);
            assert!(e.message.contains(what), "{e}");
        };
        // the first must be full
        says(&[("I1", &i1), ("I2", &i2)], "must be full");
        // a parent that is not the one before
        says(
            &[("F", &full), ("I2", &i2)],
            "its parent is I1, the chain names F",
        );
        // the parent's start LSN differs (a different backup of that id)
        let moved = base("0/3000028", None);
        says(&[("F", &moved), ("I1", &i1)], "starts at LSN 0/3000028");
        // another timeline, another cluster
        let mut other = i1.clone();
        other.timeline = 2;
        says(&[("F", &full), ("I1", &other)], "timeline 2");
        let mut other = i1.clone();
        other.system_identifier = "8".into();
        says(&[("F", &full), ("I1", &other)], "system identifier 8");
        // its own chain disagrees
        let odd = base("0/6000028", Some(("I1", "0/4000028", &["I1"])));
        says(
            &[("F", &full), ("I1", &i1), ("I2", &odd)],
            "its own chain is [I1]",
        );
        // a full backup in the middle
        says(
            &[("F", &full), ("F2", &full), ("I2", &i2)],
            "a full backup in the middle",
        );
    }

    #[test]
    fn verify_names_what_breaks_a_chain() {
        let full = base("0/2000028", None);
        let i1 = base("0/4000028", Some(("F", "0/2000028", &["F"])));
        let chain = vec!["F".to_string()];
        let fine = |_: &str| None;
        assert!(verify(&chain, fine, Some(&[("F", &full), ("I1", &i1)])).is_empty());
        assert!(verify(&chain, fine, None).is_empty());
        let gone = |id: &str| (id == "F").then(|| "is missing".to_string());
        assert_eq!(
            verify(&chain, gone, None),
            ["backup F of its chain, which it needs, is missing"]
        );
        let moved = base("0/3000028", None);
        let p = verify(&chain, fine, Some(&[("F", &moved), ("I1", &i1)]));
        assert!(p[0].contains("starts at LSN 0/3000028"), "{p:?}");
    }

    #[test]
    fn broken_members_are_named_with_a_way_out() {
        let e = broken("missing", "B", "C", " (no manifest)", Some("A"));
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.message,
            "backup B of the chain of C is missing (no manifest): C cannot be restored without it"
        );
        assert!(e.hint.unwrap().contains("--backup A"));
        let e = broken("damaged", "F", "C", "", None);
        assert!(e.hint.unwrap().contains("older full base backup"));
    }
}

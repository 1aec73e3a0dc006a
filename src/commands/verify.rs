//! `strata verify [--read-data] [SOURCE]`: prove the backups are intact.
//!
//! Without `--read-data`, every object a manifest names must exist with
//! its recorded stored size (needs no identity). With it, every object is
//! downloaded, decrypted, decompressed and hashed against the sealed
//! manifest (a logical Redis snapshot also against its own format), and
//! every archived WAL file is read back and checked against its record. Leftovers of backups that never completed are reported.

use serde::Serialize;

use super::Globals;
use crate::catalog::Leftover;
use crate::error::{Kind, Result};
use crate::pipeline::fetch;
use crate::progress::Progress;
use crate::sources::postgres::wal::continuity::Gap;
use crate::util::human_bytes;

#[derive(Serialize)]
struct BackupCheck {
    id: String,
    source: String,
    objects: usize,
    ok: bool,
    problems: Vec<String>,
    /// A Redis Cluster's backup read with --read-data: each shard's keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shards: Vec<crate::sources::redis::cluster::verify::ShardCheck>,
    /// An incremental base backup's chain (the full backup first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    chain: Vec<String>,
}

/// Adds to each incremental base backup's check what is wrong with its
/// chain (issue 18): a member missing, unreadable or failing its own
/// checks fails every backup that needs it; with the identity, the links
/// (parent, its start LSN, timeline, system identifier) are checked.
/// Returns whether a chain is broken by more than its members' own
/// failures (a member missing or unreadable, links that do not hold).
fn chain_problems(
    entries: &[crate::catalog::Entry],
    unreadable: &[crate::catalog::Unreadable],
    sealed: &std::collections::HashMap<String, crate::catalog::manifest::BaseInfo>,
    checks: &mut [BackupCheck],
) -> bool {
    let mut broken = false;
    let own: std::collections::HashMap<(String, String), bool> = checks
        .iter()
        .map(|c| ((c.source.clone(), c.id.clone()), c.ok))
        .collect();
    for (e, c) in entries.iter().zip(checks.iter_mut()) {
        let chain = crate::retention::tiers::chain_of(e);
        if chain.is_empty() {
            continue;
        }
        let source = &e.summary().source;
        // without the identity, the plain WAL ranges still tell a member of
        // another timeline or cluster
        let plain_link = |id: &str| -> Option<String> {
            let m = entries
                .iter()
                .find(|m| m.summary().source == *source && m.summary().id.as_str() == id)?;
            if m.summary().kind != "base" {
                return Some(format!(
                    "is a {} backup, not a base backup",
                    m.summary().kind
                ));
            }
            // a base backup of a strata older than the plain range says nothing
            let (mine, theirs) = (e.file.wal.as_ref()?, m.file.wal.as_ref()?);
            if theirs.timeline != mine.timeline {
                return Some(format!(
                    "is on timeline {}, this backup on {}",
                    theirs.timeline, mine.timeline
                ));
            }
            match (&theirs.system_identifier, &mine.system_identifier) {
                (Some(a), Some(b)) if a != b => Some(format!(
                    "is of the cluster with system identifier {a}, this backup of {b}"
                )),
                _ => None,
            }
        };
        let problem = |id: &str| match own.get(&(source.clone(), id.to_string())) {
            Some(true) => plain_link(id),
            Some(false) => Some("fails its own checks".to_string()),
            None if unreadable
                .iter()
                .any(|u| u.id().is_some_and(|u| u.as_str() == id)) =>
            {
                Some("has a manifest that cannot be read".to_string())
            }
            None => Some("is missing".to_string()),
        };
        let links: Option<Vec<(&str, &crate::catalog::manifest::BaseInfo)>> = chain
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(c.id.as_str()))
            .map(|id| sealed.get(id).map(|b| (id, b)))
            .collect();
        let found = crate::sources::postgres::base::chain::verify(chain, problem, links.as_deref());
        c.chain = chain.to_vec();
        c.ok &= found.is_empty();
        broken |= found.iter().any(|p| !p.ends_with("fails its own checks"));
        c.problems.extend(found);
    }
    broken
}

#[derive(Serialize)]
struct Report {
    repository: String,
    read_data: bool,
    ok: bool,
    backups: Vec<BackupCheck>,
    problems: Vec<String>,
    leftovers: Vec<Leftover>,
    incomplete_uploads: Vec<String>,
    /// Per source with base backups: the WAL archive's continuity.
    wal: Vec<WalCheck>,
    /// `--read-data`: per PostgreSQL source, its WAL archive read back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    wal_data: Vec<WalData>,
}

/// `--read-data`: every archived WAL file of a source read back and
/// checked against its record (digest, size, and for segments that the
/// object holds the segment its name says).
#[derive(Serialize)]
struct WalData {
    source: String,
    files: usize,
    bytes: u64,
    problems: Vec<String>,
}

/// Reads every file of `source`'s WAL archive (segments, partial
/// segments, history and backup history files) and checks it against its
/// record: a flipped bit in a segment, or a record whose digest was
/// edited, fails here instead of stopping a restore short. A store
/// failure aborts (exit 6): it says nothing about the data.
async fn read_wal(
    repo: &crate::catalog::Repository,
    source: &str,
    identities: &std::sync::Arc<Vec<crate::keys::Identity>>,
) -> Result<WalData> {
    use crate::sources::postgres::wal::{WalFile, archive::WalArchive};
    use futures::StreamExt;
    let archive = WalArchive::new(repo, source);
    let files: Vec<WalFile> = archive
        .archived()
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let count = files.len();
    let archive = &archive;
    let results: Vec<(WalFile, Result<u64>)> = futures::stream::iter(files)
        .map(|f| async move { (f, archive.read_back(f, identities).await) })
        .buffered(4)
        .collect()
        .await;
    let mut data = WalData {
        source: source.to_string(),
        files: count,
        bytes: 0,
        problems: Vec::new(),
    };
    for (f, r) in results {
        match r {
            Ok(n) => data.bytes += n,
            Err(e) if e.kind == Kind::Storage && e.retryable => {
                return Err(e.context(format!("reading archived WAL file {f} of {source}")));
            }
            Err(e) => data.problems.push(format!("WAL file {f}: {}", e.message)),
        }
    }
    Ok(data)
}

#[derive(Serialize)]
struct WalCheck {
    source: String,
    /// Newest archived segment per timeline.
    newest: std::collections::BTreeMap<String, String>,
    /// Gaps after the start of some base backup.
    gaps: Vec<Gap>,
    /// Gaps after a base backup's stop LSN that a newer base backup starts
    /// beyond (what `strata prune` leaves by design): not failures, but no
    /// point-in-time restore can target a time inside them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gaps_between_backups: Vec<Gap>,
}

/// Checks that the archive of `source` is continuous from the start of
/// each base backup to its newest segment; returns the report and, per
/// backup id, the problems found. Uses only the listing: a base backup's
/// start is the backup history file (`<segment>.<offset>.backup`) archived
/// while it ran; timeline switches are followed only when the identity is
/// at hand (history files are sealed).
async fn check_wal(
    repo: &crate::catalog::Repository,
    source: &str,
    bases: &[&crate::catalog::Entry],
    identities: Option<std::sync::Arc<Vec<crate::keys::Identity>>>,
    window_start: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(WalCheck, Vec<(String, String)>)> {
    use crate::sources::postgres::wal::{
        Lsn, SegmentSize, Timeline, archive::WalArchive, continuity::continuity,
    };
    let listing = WalArchive::new(repo, source)
        .listing(identities.clone())
        .await?;
    let mut newest = std::collections::BTreeMap::new();
    for s in &listing.segments {
        newest.insert(s.timeline.to_string(), s.to_string());
    }
    let slack = chrono::Duration::minutes(5);
    let mut gaps: Vec<Gap> = Vec::new();
    let mut between: Vec<Gap> = Vec::new();
    let mut problems = Vec::new();
    for e in bases {
        let b = e.summary();
        // with the identity, the sealed manifest says exactly where it starts
        let sealed = identities
            .as_ref()
            .and_then(|ids| e.file.open(&e.manifest_key, ids).ok())
            .and_then(|m| m.base)
            .and_then(|bi| {
                Some((
                    bi.start_lsn.parse::<Lsn>().ok()?,
                    Timeline(bi.timeline),
                    SegmentSize::new(bi.wal_segment_size)?,
                ))
            });
        // without it, the plain WAL range of the manifest file says the same
        let sealed = sealed.or_else(|| {
            let w = e.file.wal.as_ref()?;
            Some((
                w.start_lsn.parse::<Lsn>().ok()?,
                Timeline(w.timeline),
                SegmentSize::new(w.wal_segment_size)?,
            ))
        });
        let size = sealed.map_or(SegmentSize::DEFAULT, |s| s.2);
        let start = listing
            .backup_starts
            .iter()
            .filter(|(_, _, m)| {
                m.is_some_and(|m| m >= b.started - slack && m <= b.finished + slack)
            })
            .min_by_key(|(_, _, m)| m.map(|m| (m - b.finished).num_milliseconds().abs()));
        let (lsn, timeline) = match (sealed, start) {
            (Some((lsn, tli, _)), _) => (lsn, tli),
            (None, Some(&(seg, offset, _))) => {
                (Lsn(seg.start_lsn(size).0 + u64::from(offset)), seg.timeline)
            }
            (None, None) => continue,
        };
        let c = continuity(&listing.segments, &listing.switches, timeline, lsn, size);
        // A gap after this backup's stop LSN that a newer base backup
        // starts beyond is what `strata prune` leaves by design (an old
        // base backup kept by a GFS rule keeps only the WAL of its own
        // consistency range; docs/retention.md): every point after the gap
        // is restorable from the newer one. Not a problem.
        let stop = e
            .file
            .wal
            .as_ref()
            .and_then(|w| w.stop_lsn.parse::<Lsn>().ok());
        // Prune deletes WAL only below the start of a base backup that was
        // consistent before the WAL window's start (the anchor), so only
        // such a gap can be by design; any other is lost WAL.
        let anchor_starts: Vec<Lsn> = bases
            .iter()
            .filter(|o| window_start.is_some_and(|ws| o.summary().finished <= ws))
            .filter_map(|o| o.file.wal.as_ref()?.start_lsn.parse::<Lsn>().ok())
            .collect();
        let pruned_by_design = |g: &Gap| -> bool {
            let (Ok(from), Ok(to)) = (g.from.parse::<Lsn>(), g.to.parse::<Lsn>()) else {
                return false;
            };
            stop.is_some_and(|stop| from >= stop) && anchor_starts.iter().any(|s| *s >= to)
        };
        for (_, g) in c.gaps {
            if pruned_by_design(&g) {
                if !between.contains(&g) {
                    between.push(g);
                }
                continue;
            }
            problems.push((
                b.id.to_string(),
                format!("WAL from its start {lsn}: {}", g.describe()),
            ));
            if !gaps.contains(&g) {
                gaps.push(g);
            }
        }
    }
    Ok((
        WalCheck {
            source: source.to_string(),
            newest,
            gaps,
            gaps_between_backups: between,
        },
        problems,
    ))
}

/// A base backup's plain basis against the SHA-256 its sealed manifest
/// records (the next incremental applies through it): missing or altered
/// is a problem; a store failure stops verify.
async fn check_basis(
    repo: &crate::catalog::Repository,
    s: &crate::catalog::Summary,
    base: &crate::catalog::manifest::BaseInfo,
) -> Result<Option<String>> {
    use crate::sources::postgres::base::basis::BASIS_OBJECT;
    let Some(want) = &base.basis_sha256 else {
        return Ok(None);
    };
    let key = crate::catalog::Repository::data_key(&s.source, &s.id, BASIS_OBJECT);
    let got = match repo.storage().get_bytes(&key).await {
        Ok(b) => b,
        Err(crate::storage::StorageError::NotFound { .. }) => {
            return Ok(Some(format!("basis {key} is missing")));
        }
        Err(e) => return Err(crate::error::Error::from(e).context(format!("reading {key}"))),
    };
    let have = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&got));
    Ok((have != *want).then(|| {
        format!(
            "basis {key} has SHA-256 {have}, the sealed manifest records {want} (it was altered)"
        )
    }))
}

pub async fn run(g: &Globals, source: Option<&str>, read_data: bool, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    if let Some(s) = source {
        cfg.source(s)?;
    }
    let identities = if read_data {
        Some(g.identities(&cfg)?)
    } else {
        None
    };
    let repo = super::open_repository(&cfg).await?;
    let storage = repo.storage().clone();
    let (entries, unreadable) = repo.backups(source).await?;
    let mut wal = Vec::new();
    let mut wal_problems: Vec<(String, String)> = Vec::new();
    let mut sources: Vec<&str> = entries
        .iter()
        .filter(|e| e.summary().kind == "base")
        .map(|e| e.summary().source.as_str())
        .collect();
    sources.sort();
    sources.dedup();
    for src in sources {
        let bases: Vec<_> = entries
            .iter()
            .filter(|e| e.summary().kind == "base" && e.summary().source == src)
            .collect();
        let window_start =
            crate::tier::wal_window(&cfg.tiers, src).map(|(_, w)| chrono::Utc::now() - w);
        let (check, problems) =
            check_wal(&repo, src, &bases, identities.clone(), window_start).await?;
        wal.push(check);
        wal_problems.extend(problems);
    }
    let mut checks = Vec::new();
    // A wrong identity makes every read fail without showing any damage:
    // when decryption is all that failed, exit with the crypto code so
    // the operator fixes the key instead of chasing damaged backups.
    let mut only_crypto_failed = unreadable.is_empty();
    // with the identity: each base backup's sealed facts, for the links of
    // the chains that name it
    let mut sealed_bases = std::collections::HashMap::new();
    for e in &entries {
        let s = e.summary();
        let mut problems = Vec::new();
        let mut shard_checks = Vec::new();
        for o in &s.objects {
            match storage.head(&o.key).await {
                Ok(None) => problems.push(format!("object {} is missing", o.key)),
                Ok(Some(m)) if m.size != o.stored_size => problems.push(format!(
                    "object {} has {} bytes, the manifest records {}",
                    o.key, m.size, o.stored_size
                )),
                Ok(Some(_)) => {}
                // the store failing says nothing about this backup: stop
                // with the store's exit code rather than call it damaged
                Err(err @ crate::storage::StorageError::Transient { .. }) => {
                    return Err(crate::error::Error::from(err)
                        .context(format!("checking backup {} of {}", s.id, s.source)));
                }
                // a key the store refuses (or that could not be a key at
                // all) is this manifest's problem: report it and go on
                Err(err) => problems.push(format!(
                    "manifest {} names object {:?}: {err}",
                    e.manifest_key, o.key
                )),
            }
        }
        only_crypto_failed &= problems.is_empty();
        let gap_problems: Vec<String> = wal_problems
            .iter()
            .filter(|(id, _)| *id == s.id.to_string())
            .map(|(_, p)| p.clone())
            .collect();
        only_crypto_failed &= gap_problems.is_empty();
        if let (Some(ids), true) = (&identities, problems.is_empty()) {
            match e.file.open(&e.manifest_key, ids) {
                Err(err) => {
                    only_crypto_failed &= err.kind == Kind::Crypto;
                    problems.push(err.message);
                }
                Ok(m) if m.redis.as_ref().is_some_and(|r| r.cluster.is_some()) => {
                    // a cluster's shards: read, parsed, keys counted and
                    // checked against the slot map
                    let cl = m
                        .redis
                        .as_ref()
                        .and_then(|r| r.cluster.as_ref())
                        .expect("a cluster");
                    let found = crate::sources::redis::cluster::verify::check(
                        &storage,
                        &m,
                        cl,
                        ids.clone(),
                    )
                    .await
                    .map_err(|e| e.context(format!("reading backup {} of {}", s.id, s.source)))?;
                    for c in found {
                        if !c.problems.is_empty() {
                            only_crypto_failed &= c.crypto_only;
                        }
                        problems.extend(c.problems.iter().cloned());
                        shard_checks.push(c);
                    }
                }
                Ok(m) => {
                    if let Some(b) = &m.base {
                        sealed_bases.insert(s.id.to_string(), b.clone());
                        if let Some(p) = check_basis(&repo, s, b).await? {
                            only_crypto_failed = false;
                            problems.push(p);
                        }
                    }
                    for rec in &m.objects {
                        // A logical Redis snapshot is also checked for its
                        // format (records, trailer counts and CRC).
                        let read = if m.redis.as_ref().is_some_and(|r| r.logical.is_some())
                            && rec.name == crate::sources::redis::logical::LOGICAL_OBJECT
                        {
                            crate::sources::redis::logical::check_object(&storage, rec, ids.clone())
                                .await
                                .map(|_| ())
                        } else {
                            fetch(
                                &storage,
                                rec,
                                ids.clone(),
                                std::io::sink(),
                                Progress::hidden(),
                            )
                            .await
                            .map(|_| ())
                        };
                        if let Err(err) = read {
                            if err.kind == Kind::Storage && err.retryable {
                                return Err(
                                    err.context(format!("reading backup {} of {}", s.id, s.source))
                                );
                            }
                            only_crypto_failed &= err.kind == Kind::Crypto;
                            problems.push(err.message);
                        }
                    }
                }
            }
        }
        problems.extend(gap_problems);
        checks.push(BackupCheck {
            id: s.id.to_string(),
            source: s.source.clone(),
            objects: s.objects.len(),
            ok: problems.is_empty(),
            problems,
            shards: shard_checks,
            chain: Vec::new(),
        });
    }
    // a chain failing only because a member failed its own checks adds
    // no cause of its own (a wrong key fails them all with exit 7)
    only_crypto_failed &= !chain_problems(&entries, &unreadable, &sealed_bases, &mut checks);
    if !json {
        for c in &checks {
            if c.problems.is_empty() {
                println!(
                    "ok      {} {} ({} objects{}{})",
                    c.source,
                    c.id,
                    c.objects,
                    if read_data { ", data read" } else { "" },
                    if c.chain.is_empty() {
                        String::new()
                    } else {
                        format!(", chain of {} checked", c.chain.len())
                    }
                );
            } else {
                for p in &c.problems {
                    println!("FAILED  {} {}: {p}", c.source, c.id);
                }
            }
            // a cluster's shards, as read
            for sh in &c.shards {
                for n in &sh.notes {
                    println!("note    {} {}: {n}", c.source, c.id);
                }
                if let Some(k) = sh.keys_read {
                    println!(
                        "          shard {} (master {}, slots {}): {k} keys (recorded {})",
                        sh.shard,
                        sh.address,
                        crate::sources::redis::cluster::show_ranges(&sh.slots),
                        sh.keys_recorded
                    );
                }
            }
        }
    }
    let mut wal_data = Vec::new();
    if let Some(ids) = &identities {
        let mut wal_sources: Vec<&str> = cfg
            .sources
            .values()
            .filter(|s| s.kind == crate::config::SourceKind::Postgres)
            .map(|s| s.name.as_str())
            .chain(
                entries
                    .iter()
                    .filter(|e| e.summary().kind == "base")
                    .map(|e| e.summary().source.as_str()),
            )
            .filter(|s| source.is_none_or(|want| want == *s))
            .collect();
        wal_sources.sort();
        wal_sources.dedup();
        for src in wal_sources {
            let d = read_wal(&repo, src, ids).await?;
            if d.files == 0 {
                continue;
            }
            if !json {
                if d.problems.is_empty() {
                    println!(
                        "ok      wal {src}: {} archived files ({}) read, each matches its record",
                        d.files,
                        human_bytes(d.bytes)
                    );
                } else {
                    for p in &d.problems {
                        println!("FAILED  wal {src}: {p}");
                    }
                }
            }
            wal_data.push(d);
        }
    }
    let problems: Vec<String> = unreadable.iter().map(|u| u.error.message.clone()).collect();
    let (mut leftovers, incomplete) = repo.leftovers().await?;
    if let Some(s) = source {
        leftovers.retain(|l| l.source == s);
    }
    let wal_bad = wal_data.iter().filter(|d| !d.problems.is_empty()).count();
    let ok = problems.is_empty() && checks.iter().all(|c| c.ok) && wal_bad == 0;
    only_crypto_failed &= wal_bad == 0;
    let report = Report {
        repository: repo.location(),
        read_data,
        ok,
        backups: checks,
        problems,
        leftovers,
        incomplete_uploads: incomplete.iter().map(|u| u.key.clone()).collect(),
        wal,
        wal_data,
    };
    if json {
        super::print_json(&report);
    } else {
        for p in &report.problems {
            println!("FAILED  {p}");
        }
        for l in &report.leftovers {
            println!(
                "leftover {} {}: {} objects, {} from a backup that never completed (remove with `strata cleanup`)",
                l.source,
                l.backup_id,
                l.objects.len(),
                human_bytes(l.bytes)
            );
        }
        for w in &report.wal {
            for (tli, seg) in &w.newest {
                println!("wal     {} timeline {tli}: newest segment {seg}", w.source);
            }
            for g in &w.gaps_between_backups {
                println!(
                    "note    {}: {}: no point-in-time restore into it; a newer base backup starts after it (prune leaves such gaps below its WAL window)",
                    w.source,
                    g.describe()
                );
            }
        }
        for u in &report.incomplete_uploads {
            println!("leftover incomplete upload of {u} (remove with `strata cleanup`)");
        }
        let bad = report.backups.iter().filter(|c| !c.ok).count() + report.problems.len();
        println!(
            "{} backups checked, {} failed{}{}",
            report.backups.len(),
            bad,
            if report.wal_data.is_empty() {
                String::new()
            } else {
                format!(
                    "; WAL of {} sources read, {} with damage",
                    report.wal_data.len(),
                    wal_bad
                )
            },
            if report.leftovers.is_empty() && report.incomplete_uploads.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} leftovers",
                    report.leftovers.len() + report.incomplete_uploads.len()
                )
            }
        );
    }
    Ok(if ok {
        0
    } else if only_crypto_failed {
        Kind::Crypto.exit_code()
    } else {
        Kind::Integrity.exit_code()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Entry, ManifestFile, Unreadable};
    use crate::retention::tiers::tests::{entry, incremental};

    fn check(e: &Entry) -> BackupCheck {
        BackupCheck {
            id: e.summary().id.to_string(),
            source: e.summary().source.clone(),
            objects: 1,
            ok: true,
            problems: vec![],
            shards: vec![],
            chain: vec![],
        }
    }

    fn run(entries: &[Entry], unreadable: &[Unreadable]) -> (bool, Vec<Vec<String>>) {
        let mut checks: Vec<BackupCheck> = entries.iter().map(check).collect();
        let broken = chain_problems(entries, unreadable, &Default::default(), &mut checks);
        (broken, checks.into_iter().map(|c| c.problems).collect())
    }

    /// Issue 18: verify checks chains, without the identity too.
    #[test]
    fn a_chain_fails_by_its_missing_unreadable_or_foreign_member() {
        let f = entry("app", None, "base", "2026-11-01T02:00:00Z");
        let i1 = incremental(entry("app", None, "base", "2026-11-02T02:00:00Z"), &[&f]);
        let i2 = incremental(
            entry("app", None, "base", "2026-11-03T02:00:00Z"),
            &[&f, &i1],
        );
        let (broken, p) = run(&[i2.clone(), i1.clone(), f.clone()], &[]);
        assert!(!broken && p.iter().all(Vec::is_empty), "{p:?}");

        let id1 = i1.summary().id.to_string();
        let (broken, p) = run(&[i2.clone(), f.clone()], &[]);
        assert!(broken);
        assert_eq!(
            p[0],
            [format!(
                "backup {id1} of its chain, which it needs, is missing"
            )]
        );
        let unreadable = [Unreadable {
            key: i1.manifest_key.clone(),
            error: crate::error::Error::integrity("damaged"),
        }];
        let (_, p) = run(&[i2.clone(), f.clone()], &unreadable);
        assert!(
            p[0][0].ends_with("has a manifest that cannot be read"),
            "{p:?}"
        );

        // a member of another timeline, told by the plain WAL ranges
        let mut wal = i1.file.wal.clone().unwrap();
        wal.timeline = 2;
        let moved = Entry {
            manifest_key: i1.manifest_key.clone(),
            file: std::sync::Arc::new(ManifestFile {
                summary: i1.file.summary.clone(),
                sealed: String::new(),
                wal: Some(wal),
            }),
        };
        let (broken, p) = run(&[i2.clone(), moved, f.clone()], &[]);
        assert!(broken);
        assert!(
            p[0][0].contains("is on timeline 2, this backup on 1"),
            "{p:?}"
        );
    }
}

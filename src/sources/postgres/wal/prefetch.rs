//! The background prefetcher of `strata wal fetch` (`wal
//! prefetch-worker`): keeps the segments after the one PostgreSQL asked
//! for last downloaded, verified and fsynced in the [`super::spool`], and
//! hands a fetch its segment from there ([`take_prefetched`]). See the
//! spool's docs for the model; `commands::wal` opens the repository,
//! takes the spool's lock and starts the prefetcher.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::archive::{Located, WalArchive};
use super::spool::{self, Spool};
use super::{SegmentName, WalFile};
use crate::error::Result;
use crate::keys::Identity;

/// How long a fetch waits for the prefetcher's download of its segment
/// before downloading it itself.
const PREFETCH_WAIT: Duration = Duration::from_secs(120);

/// Moves `seg` from the spool to `dest` if it is there, or once the
/// prefetcher's download of it under way has landed; `false` when it is
/// not spooled (nor coming).
pub async fn take_prefetched(sp: &Spool, seg: SegmentName, dest: &Path) -> std::io::Result<bool> {
    if sp.take(seg, dest)? {
        return Ok(true);
    }
    let deadline = Instant::now() + PREFETCH_WAIT;
    while sp.downloading(seg) && sp.prefetcher_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if sp.take(seg, dest)? {
            return Ok(true);
        }
    }
    sp.take(seg, dest)
}

/// The prefetcher's loop: keeps the `depth` segments after the one
/// PostgreSQL asked for last downloaded, verified and fsynced in `sp`,
/// `depth` downloads at a time. Returns when PostgreSQL has asked for
/// nothing new for `idle_exit` (recovery ended or stalled; the next fetch
/// starts a prefetcher again), when the spool is deleted, or when the
/// recovery of the data directory `spool_root` serves is over. The caller
/// holds the spool's lock.
pub async fn run(
    sp: &Spool,
    archive: &WalArchive,
    identities: Arc<Vec<Identity>>,
    depth: usize,
    idle_exit: Duration,
    spool_root: &Path,
) {
    let mut running = FuturesUnordered::new();
    let mut in_flight: HashSet<SegmentName> = HashSet::new();
    // not archived (yet) or failed: not asked for again before then
    let mut retry_at: HashMap<SegmentName, Instant> = HashMap::new();
    let mut last = None;
    let mut idle_since = Instant::now();
    let (mut fetched, mut failed) = (0u64, 0u64);
    let data_dir = recovering_data_dir(spool_root);
    let mut checked = Instant::now();
    loop {
        if !sp.dir().is_dir() {
            break;
        }
        // Recovery over (the server promoted): nothing more will be asked
        // for, so stop now rather than linger, and take the spool along
        // (issue 13: a prefetcher outliving its restore re-created it).
        if let Some(d) = &data_dir
            && checked.elapsed() >= Duration::from_millis(200)
        {
            checked = Instant::now();
            if !d.join("recovery.signal").exists() && !d.join("standby.signal").exists() {
                drop(running);
                let _ = std::fs::remove_dir_all(sp.dir());
                let _ = std::fs::remove_dir(spool_root);
                tracing::info!(
                    "prefetcher {} exits: recovery of {} is over; {fetched} segments prefetched, {failed} failed",
                    std::process::id(),
                    d.display()
                );
                return;
            }
        }
        let wanted = sp.wanted();
        if wanted != last {
            idle_since = Instant::now();
            last = wanted;
            if let Some((w, _)) = wanted {
                sp.clean_before(w);
                retry_at.retain(|s, _| !spool::is_stale(*s, w));
            }
        }
        if let Some((w, size)) = wanted {
            let mut s = w;
            for _ in 0..depth {
                s = s.next(size);
                if running.len() >= depth {
                    break;
                }
                if in_flight.contains(&s)
                    || sp.contains(s)
                    || retry_at.get(&s).is_some_and(|t| Instant::now() < *t)
                {
                    continue;
                }
                in_flight.insert(s);
                let (archive, sp, ids) = (&archive, &sp, identities.clone());
                running.push(async move { (s, prefetch_one(archive, sp, s, ids).await) });
            }
        }
        if running.is_empty() {
            if idle_since.elapsed() > idle_exit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        tokio::select! {
            Some((s, r)) = running.next() => {
                in_flight.remove(&s);
                match r {
                    Ok(true) => {
                        fetched += 1;
                        // PostgreSQL may have passed it meanwhile
                        if let Some((w, _)) = sp.wanted() && s != w && spool::is_stale(s, w) {
                            sp.clean_before(w);
                        }
                    }
                    Ok(false) => {
                        retry_at.insert(s, Instant::now() + Duration::from_secs(1));
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!("prefetching {s}: {e}");
                        retry_at.insert(s, Instant::now() + Duration::from_secs(2));
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    tracing::info!(
        "prefetcher {} exits: {fetched} segments prefetched, {failed} failed",
        std::process::id()
    );
}

/// The data directory whose recovery a spool serves, when the spool is
/// the default one in its `pg_wal` (`<data>/pg_wal/strata-prefetch`) and
/// the directory is recovering from the archive.
fn recovering_data_dir(spool_root: &Path) -> Option<PathBuf> {
    let pg_wal = spool_root.parent()?;
    if spool_root.file_name()? != "strata-prefetch" || pg_wal.file_name()? != "pg_wal" {
        return None;
    }
    let data = pg_wal.parent()?.to_path_buf();
    (data.join("recovery.signal").exists() || data.join("standby.signal").exists()).then_some(data)
}

/// Downloads `seg` into the spool: `false` when it is not archived.
async fn prefetch_one(
    archive: &WalArchive,
    sp: &Spool,
    seg: SegmentName,
    identities: Arc<Vec<Identity>>,
) -> Result<bool> {
    let Some(found): Option<Located> = archive.locate(WalFile::Segment(seg), &identities).await?
    else {
        return Ok(false);
    };
    archive
        .download(&found, &sp.path(seg), &sp.tmp_path(seg), identities, true)
        .await?;
    Ok(true)
}

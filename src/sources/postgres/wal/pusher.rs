//! The background pusher's loop (`strata wal push-worker`; the model is
//! in [`super::push_async`]): pushes every file PostgreSQL has queued for
//! archiving through [`WalArchive::push`], a few at a time, and leaves
//! each one's result in the push spool for the `archive_command` waiting
//! on it ([`wait`]). `commands::wal` opens the repository, takes the
//! spool's lock and starts it.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::archive::{PushContext, PushStatus, WalArchive};
use super::push_async::{self as pa, ErrorFile, Outcome, PushSpool};
use crate::error::{Error, Result};

/// How long a background pusher runs before it retires.
const PUSHER_LIFETIME: Duration = Duration::from_secs(3600);

/// How long one upload of the background pusher may take before it is
/// given up (and reported to its archive_command as an error).
const PUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// Pushes every file PostgreSQL has queued for archiving
/// (`pg_wal/archive_status/*.ready`), `processes` at a time, and writes
/// each one's result into `sp`. Returns when nothing was left to push for
/// `idle_exit`, when `archive_status` is gone, or when the pusher retires
/// after an hour (`PUSHER_LIFETIME`). The caller holds the spool's lock.
pub async fn run(
    sp: &PushSpool,
    archive: &WalArchive,
    ctx: &PushContext<'_>,
    pg_wal: &Path,
    processes: u32,
    idle_exit: Duration,
) {
    tracing::info!(
        "pusher {} started: {} uploads at a time from {}",
        std::process::id(),
        processes,
        pg_wal.display()
    );
    let (mut pushed, mut failed) = (0u64, 0u64);
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut idle_since = Instant::now();
    // candidates from the last scan of archive_status, in push order: a
    // backlog of thousands of files is scanned about once a second, not
    // once per upload
    let mut queue: VecDeque<super::WalFile> = Default::default();
    let mut last_scan: Option<Instant> = None;
    // A pusher retires after an hour (the next archive_command starts a
    // fresh one): an object lock's retain-until date is fixed when the
    // repository is opened, so it stays within an hour of each push.
    let started = Instant::now();
    loop {
        let retiring = started.elapsed() > PUSHER_LIFETIME;
        let slots = running.len() < processes as usize && !retiring;
        let scan_due = last_scan.is_none_or(|t| {
            let e = t.elapsed();
            (queue.is_empty() && e >= Duration::from_millis(50)) || e >= Duration::from_secs(1)
        });
        if slots && scan_due {
            last_scan = Some(Instant::now());
            match pa::ready_files(pg_wal) {
                Ok(ready) => {
                    let queued: HashSet<String> = ready.iter().map(|f| f.to_string()).collect();
                    sp.forget_archived(&queued);
                    queue = ready.into();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!("{}/archive_status is gone; pusher exits", pg_wal.display());
                    break;
                }
                // keep the queue and every result: a failed scan says
                // nothing about what was archived
                Err(e) => tracing::warn!("reading {}/archive_status: {e}", pg_wal.display()),
            }
        }
        while running.len() < processes as usize
            && let Some(f) = queue.pop_front()
        {
            let n = f.to_string();
            if in_flight.contains(&n) || sp.has_result(&n) {
                continue;
            }
            in_flight.insert(n.clone());
            let path = pg_wal.join(&n);
            let (archive, ctx) = (&archive, &ctx);
            running.push(async move {
                let r = match tokio::time::timeout(PUSH_TIMEOUT, archive.push(ctx, &path, f)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(Error::failed(format!(
                        "{n}: the upload did not finish within {}s",
                        PUSH_TIMEOUT.as_secs()
                    ))
                    .retryable()),
                };
                (n, r)
            });
        }
        if running.is_empty() {
            if idle_since.elapsed() > idle_exit || retiring {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        tokio::select! {
            Some((n, r)) = running.next() => {
                in_flight.remove(&n);
                idle_since = Instant::now();
                let outcome = match r {
                    Ok(rep) => {
                        pushed += 1;
                        if rep.status != PushStatus::Stored {
                            tracing::info!("{n}: {:?} (already archived with the same content)", rep.status);
                        }
                        Outcome::Ok
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::error!("{n}: {e}");
                        Outcome::Error(ErrorFile::of(&e))
                    }
                };
                if let Err(e) = sp.write(&n, &outcome) {
                    tracing::error!("writing the result of {n} into {}: {e}", sp.dir().display());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    tracing::info!(
        "pusher {} exits ({}): {pushed} pushed, {failed} failed",
        std::process::id(),
        if started.elapsed() > PUSHER_LIFETIME {
            "retired after an hour".to_string()
        } else {
            format!("{}s idle", idle_exit.as_secs())
        }
    );
}

/// The foreground of an asynchronous push: waits (at most `timeout`) for
/// the pusher's result for `name` in `sp`, calling `start_pusher` when
/// none runs (at most every two seconds). `Ok` once the file is durable
/// in the repository; the pusher's error, or a retryable one at the
/// deadline, otherwise.
pub async fn wait(
    sp: &PushSpool,
    name: &str,
    timeout: Duration,
    mut start_pusher: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_spawn: Option<Instant> = None;
    let mut nap = Duration::from_millis(5);
    loop {
        match sp.take(name)? {
            Some(Outcome::Ok) => {
                tracing::debug!("{name}: archived by the background pusher");
                return Ok(());
            }
            Some(Outcome::Error(e)) => return Err(e.into_error(name, &sp.log_path())),
            None => {}
        }
        if !sp.pusher_running() && last_spawn.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            start_pusher()?;
            last_spawn = Some(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "{name} was not archived within {}s by the background pusher",
                timeout.as_secs()
            ))
            .hint(format!(
                "PostgreSQL retries; see {} (raise archive_push_timeout if uploads are just slow)",
                sp.log_path().display()
            ))
            .retryable());
        }
        tokio::time::sleep(nap).await;
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

//! A deadline on the server's own wait for archived WAL.
//!
//! With `-X none` the server ends a base backup (`pg_backup_stop`) by
//! waiting until the archiver has stored the last WAL segment the backup
//! needs, and it waits for ever: when `archive_command` fails or hangs,
//! pg_basebackup (and strata with it) would hang too, with a warning a
//! minute on stderr. The watchdog here follows pg_basebackup's stderr; once
//! the server says it is waiting for archiving, it reads `pg_stat_archiver`
//! every second. When the archiver has stored nothing for the source's
//! `archive_wait`, it stops pg_basebackup (so nothing is stored) and its
//! walsender (found by the `application_name` strata gives pg_basebackup),
//! and says why: the archiver's failures, the segment it last failed on,
//! and what to check. A slow archiver that still makes progress is waited
//! for.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::util::TailView;

/// What the server says on the backup connection while it waits for
/// archiving (PostgreSQL 13 to 18): a NOTICE after about 5 s, a WARNING
/// every minute after that.
const WAITING: [&str; 2] = [
    "waiting for required WAL segments to be archived",
    "still waiting for all required WAL segments to be archived",
];

/// The connection to watch the archiver on (the server pg_basebackup
/// reads) and how long it may make no progress.
pub(super) struct ArchiveWatch<'a> {
    pub(super) client: &'a tokio_postgres::Client,
    pub(super) wait: Duration,
    pub(super) source: &'a str,
    /// pg_basebackup's `application_name` (`PGAPPNAME`), by which its
    /// walsender is found and ended once pg_basebackup is stopped.
    pub(super) app_name: String,
}

/// One reading of `pg_stat_archiver`.
struct Archiver {
    archived: i64,
    failed: i64,
    last_failed: String,
}

impl ArchiveWatch<'_> {
    /// Watches pg_basebackup `pid` through what it `said`; returns only
    /// once it has stopped it, with the error to report.
    pub(super) async fn watch(&self, pid: u32, said: TailView) -> Error {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // when the wait was first seen, and the last archiving progress
        let mut started: Option<Instant> = None;
        let mut progress = Instant::now();
        let mut seen: Option<Archiver> = None;
        loop {
            tick.tick().await;
            let now = Instant::now();
            if started.is_none() {
                if !WAITING.iter().any(|w| said.contains(w)) {
                    continue;
                }
                started = Some(now);
                progress = now;
            }
            if let Some(a) = self.read().await {
                if seen.as_ref().is_some_and(|s| s.archived != a.archived) {
                    progress = now;
                }
                seen = Some(a);
            }
            if now.duration_since(progress) < self.wait {
                continue;
            }
            // SAFETY: a signal to the child this backup started and has
            // not reaped yet (its owner waits for it after this).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            // the server says it waits only after about 5 s of waiting
            let waited = now.duration_since(started.unwrap_or(now)).as_secs() + 5;
            let archiver = match &seen {
                Some(a) if a.failed > 0 && !a.last_failed.is_empty() => format!(
                    "; pg_stat_archiver counts {} failed attempts, the last on {}",
                    a.failed, a.last_failed
                ),
                Some(_) => "; pg_stat_archiver shows no failed attempt, so archive_command hangs or archiving is stuck".to_string(),
                None => String::new(),
            };
            return Error::source(format!(
                "{}: the server finished the base backup but has waited about {waited}s for its WAL to be archived, and archived nothing in the last {}s{archiver}; pg_basebackup was stopped and no backup was recorded",
                self.source,
                self.wait.as_secs()
            ))
            .hint(format!(
                "check the server's archive_command (it must run `strata wal push --source {} %p`) and its log; `archive_wait` sets how long a base backup waits while archiving makes no progress",
                self.source
            ))
            .retryable();
        }
    }

    /// Ends pg_basebackup's walsender once [`Self::watch`] has stopped
    /// pg_basebackup: the walsender notices its client is gone only when
    /// it next sends, after the archiver recovers, and holds the backup
    /// open until then. It is this role's own backend.
    pub(super) async fn end_walsender(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'walsender' AND application_name = $1",
                &[&self.app_name],
            ),
        )
        .await;
    }

    async fn read(&self) -> Option<Archiver> {
        let query = self.client.query_one(
            "SELECT archived_count, failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
            &[],
        );
        match tokio::time::timeout(Duration::from_secs(10), query).await {
            Ok(Ok(row)) => Some(Archiver {
                archived: row.get(0),
                failed: row.get(1),
                last_failed: row.get(2),
            }),
            _ => None,
        }
    }
}

//! Repository locks: who may write to the repository at the same time.
//!
//! A lock is a small JSON object under `locks/`, created with
//! [`PutMode::Create`] so two writers cannot both create the same one
//! (atomic on stores whose [`crate::storage::Capabilities::atomic_create`]
//! holds: local files, S3 with `If-None-Match`).
//!
//! - `locks/source-<name>.json` (shared): a backup of one source. Two
//!   backups of the same source never run at once; different sources may.
//! - `locks/exclusive.json`: prune and cleanup. Taken only while no other
//!   lock exists; backups refuse while it exists.
//!
//! Ordering, so that a backup and a prune never both proceed: each side
//! first creates its own lock, then looks for the other's; whoever sees
//! the other removes its own lock and fails (both may fail; neither runs
//! over the other).
//!
//! A holder rewrites its lock every [`HEARTBEAT_EVERY`]. A lock whose
//! heartbeat is older than [`STALE_AFTER`] probably belongs to a process
//! that died; it is reported as stale (owner, host, pid, age) and left in
//! place: only `strata unlock` removes it, because a paused process (a
//! suspended VM, a long GC stop) may still be writing.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Repository;
use crate::error::{Error, Result};
use crate::storage::{PutMode, Storage, StorageError};

pub const LOCKS_PREFIX: &str = "locks/";
pub const EXCLUSIVE_KEY: &str = "locks/exclusive.json";
/// How often a holder rewrites its heartbeat.
pub const HEARTBEAT_EVERY: StdDuration = StdDuration::from_secs(30);
/// A lock not refreshed for this long is reported as stale.
pub const STALE_AFTER: Duration = Duration::minutes(5);

/// What a lock guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockKind {
    /// Backups of one source (shared with other sources' backups).
    Source(String),
    /// The whole repository: prune and cleanup.
    Exclusive,
}

impl LockKind {
    pub fn key(&self) -> String {
        match self {
            LockKind::Source(s) => format!("{LOCKS_PREFIX}source-{s}.json"),
            LockKind::Exclusive => EXCLUSIVE_KEY.to_string(),
        }
    }
}

/// The content of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `source` or `exclusive`.
    pub kind: String,
    pub source: Option<String>,
    /// The OS user running the command.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// The command, e.g. `backup app` or `prune`.
    pub command: String,
    pub created: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
}

impl LockInfo {
    pub fn new(kind: &LockKind, command: &str, now: DateTime<Utc>) -> LockInfo {
        LockInfo {
            kind: match kind {
                LockKind::Source(_) => "source".into(),
                LockKind::Exclusive => "exclusive".into(),
            },
            source: match kind {
                LockKind::Source(s) => Some(s.clone()),
                LockKind::Exclusive => None,
            },
            owner: current_user(),
            host: crate::util::host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            created: now,
            heartbeat: now,
        }
    }

    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        now - self.heartbeat
    }

    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.age(now) > STALE_AFTER
    }

    /// `prune by alice@db1 (pid 42), since …, heartbeat 12s ago`
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        format!(
            "`{}` by {}@{} (pid {}), since {}, heartbeat {} ago{}",
            self.command,
            self.owner,
            self.host,
            self.pid,
            self.created.format("%Y-%m-%d %H:%M:%S UTC"),
            crate::util::human_duration(self.age(now)),
            if self.is_stale(now) { " (STALE)" } else { "" }
        )
    }
}

/// A lock found in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct FoundLock {
    pub key: String,
    /// `None` when the object is not a readable lock.
    pub info: Option<LockInfo>,
    /// The object's modification time (fallback heartbeat).
    pub modified: Option<DateTime<Utc>>,
}

impl FoundLock {
    pub fn heartbeat(&self) -> Option<DateTime<Utc>> {
        self.info.as_ref().map(|i| i.heartbeat).or(self.modified)
    }
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.heartbeat().is_some_and(|h| now - h > STALE_AFTER)
    }
    /// Whether the holder is provably gone: it ran on this host and its
    /// pid is not running (`alive` says whether a pid runs).
    pub fn holder_gone_with(&self, this_host: &str, alive: impl Fn(u32) -> bool) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.host == this_host && !alive(i.pid))
    }

    /// [`holder_gone_with`](Self::holder_gone_with) for this host.
    pub fn holder_gone(&self) -> bool {
        self.holder_gone_with(&crate::util::host_name(), pid_alive)
    }

    /// Stale, or its holder is gone, or not a lock at all: `strata
    /// unlock` may remove it. strata writes and rewrites a lock object
    /// whole (create-only, then atomic replaces), so one that does not
    /// parse was never a running strata's lock.
    pub fn is_abandoned(&self, now: DateTime<Utc>) -> bool {
        self.info.is_none() || self.is_stale(now) || self.holder_gone()
    }

    /// An unreadable object not rewritten for [`STALE_AFTER`]: no holder
    /// of any version heartbeats it, so commands may take over.
    fn is_garbage(&self, now: DateTime<Utc>) -> bool {
        self.info.is_none() && self.is_stale(now)
    }

    pub fn describe(&self, now: DateTime<Utc>) -> String {
        match &self.info {
            Some(i) => format!(
                "{} ({}{})",
                self.key,
                i.describe(now),
                if self.holder_gone() {
                    "; that process is no longer running on this host"
                } else {
                    ""
                }
            ),
            None => format!(
                "{} (unreadable lock object: not a lock a running strata wrote; `strata unlock` removes it)",
                self.key
            ),
        }
    }
}

/// Whether a process with this pid runs on this host (a pid we may not
/// signal still runs).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Every lock in the repository, sorted by key.
pub async fn list(storage: &Arc<dyn Storage>) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for m in storage.list(LOCKS_PREFIX).await? {
        if !m.key.ends_with(".json") {
            continue;
        }
        let info = match storage.get_bytes(&m.key).await {
            Ok(b) => serde_json::from_slice::<LockInfo>(&b).ok(),
            // Released between list and get.
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        out.push(FoundLock {
            key: m.key,
            info,
            modified: m.modified,
        });
    }
    Ok(out)
}

/// The error for "someone else holds a lock", naming every holder.
pub fn conflict_error(what: &str, holders: &[FoundLock], now: DateTime<Utc>) -> Error {
    let names: Vec<String> = holders.iter().map(|h| h.describe(now)).collect();
    let any_stale = holders.iter().any(|h| h.is_stale(now));
    let any_gone = holders.iter().any(|h| h.holder_gone());
    let mut hint = String::from("wait for it to finish and run the command again");
    if any_gone {
        hint = "the process holding the lock ended without releasing it (killed or crashed): remove the lock with `strata unlock`, then run the command again".into();
    } else if any_stale {
        hint = format!(
            "a lock marked STALE has had no heartbeat for over {} minutes: if its process is gone, remove it with `strata unlock` (`strata unlock --force` removes any lock)",
            STALE_AFTER.num_minutes()
        );
    } else {
        hint.push_str("; if the holder is surely gone, `strata unlock --force` removes its lock");
    }
    Error::conflict(format!(
        "cannot {what}: the repository is locked by {}",
        names.join("; ")
    ))
    .hint(hint)
}

/// A held lock. Release it with [`RepoLock::release`]; dropping it stops
/// the heartbeat and leaves the object behind (to be reported as stale).
pub struct RepoLock {
    storage: Arc<dyn Storage>,
    key: String,
    stop: watch::Sender<bool>,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock").field("key", &self.key).finish()
    }
}

impl RepoLock {
    /// Takes a lock for `command` (e.g. `backup app`), or fails with a
    /// conflict (exit 8) naming the holder.
    pub async fn acquire(repo: &Repository, kind: LockKind, command: &str) -> Result<RepoLock> {
        Self::acquire_every(repo, kind, command, HEARTBEAT_EVERY).await
    }

    /// [`acquire`](Self::acquire) with another heartbeat period (tests).
    async fn acquire_every(
        repo: &Repository,
        kind: LockKind,
        command: &str,
        every: StdDuration,
    ) -> Result<RepoLock> {
        let storage = repo.storage().clone();
        let now = Utc::now();
        // A lock left by a process of this host that no longer runs (a
        // killed or crashed strata) protects nothing: remove it, loudly,
        // so the next scheduled run is not refused. Locks of other hosts,
        // or of live processes, are never taken over.
        for l in list(&storage).await? {
            if l.holder_gone() || l.is_garbage(now) {
                eprintln!("strata: removing abandoned lock {}", l.describe(now));
                storage.delete(&l.key).await?;
            }
        }
        let what = match &kind {
            LockKind::Source(s) => format!("back up {s}"),
            LockKind::Exclusive => format!("run {command}"),
        };
        if kind == LockKind::Exclusive {
            let others = list(&storage).await?;
            if !others.is_empty() {
                return Err(conflict_error(&what, &others, now));
            }
        }
        let key = kind.key();
        let info = LockInfo::new(&kind, command, now);
        let bytes = serde_json::to_vec_pretty(&info).expect("lock serialises");
        // A holder that releases between our refused create and the look
        // at who holds it leaves nobody to name: it is gone, so try again
        // (a few times) rather than refuse naming no one.
        let mut attempts = 0;
        loop {
            match storage
                .put_bytes(&key, bytes.clone().into(), PutMode::Create)
                .await
            {
                Ok(_) => break,
                Err(StorageError::AlreadyExists { .. }) => {
                    let holders: Vec<FoundLock> = list(&storage)
                        .await?
                        .into_iter()
                        .filter(|l| l.key == key)
                        .collect();
                    attempts += 1;
                    if holders.is_empty() && attempts < 3 {
                        continue;
                    }
                    return Err(conflict_error(&what, &holders, now));
                }
                Err(e) => return Err(Error::from(e).context(format!("taking lock {key}"))),
            }
        }
        // Our lock exists; now look for the other side's (see module docs).
        let others: Vec<FoundLock> = match &kind {
            LockKind::Exclusive => list(&storage)
                .await?
                .into_iter()
                .filter(|l| l.key != key)
                .collect(),
            LockKind::Source(_) => list(&storage)
                .await?
                .into_iter()
                .filter(|l| l.key == EXCLUSIVE_KEY)
                .collect(),
        };
        if !others.is_empty() {
            let _ = storage.delete(&key).await;
            return Err(conflict_error(&what, &others, now));
        }
        let (stop, stopped) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat_loop(
            storage.clone(),
            key.clone(),
            info,
            every,
            stopped,
        ));
        Ok(RepoLock {
            storage,
            key,
            stop,
            heartbeat: Some(heartbeat),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops the heartbeat (waiting for a rewrite in flight, so it cannot
    /// recreate the object afterwards) and deletes the lock.
    pub async fn release(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.await;
        }
        self.storage
            .delete(&self.key)
            .await
            .map_err(|e| Error::from(e).context(format!("releasing lock {}", self.key)))
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

async fn heartbeat_loop(
    storage: Arc<dyn Storage>,
    key: String,
    mut info: LockInfo,
    every: StdDuration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        // Removed by `strata unlock --force`: do not bring it back. The
        // record is built before the check so the gap between the check and
        // the rewrite is as short as the storage allows.
        info.heartbeat = Utc::now();
        let bytes = serde_json::to_vec_pretty(&info).expect("lock serialises");
        match storage.head(&key).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!("lock {key} was removed by someone else; no longer refreshing it");
                return;
            }
            Err(e) => {
                tracing::warn!("checking lock {key}: {e}");
                continue;
            }
        }
        if let Err(e) = storage
            .put_bytes(&key, bytes.into(), PutMode::Overwrite)
            .await
        {
            tracing::warn!("refreshing lock {key}: {e}");
        }
    }
}

/// Runs `f` holding a lock; releases it whatever `f` returns. A failed
/// release is a warning: the work is done, the lock will show as stale.
pub async fn with_lock<T, F>(repo: &Repository, kind: LockKind, command: &str, f: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let lock = RepoLock::acquire(repo, kind, command).await?;
    let r = f.await;
    if let Err(e) = lock.release().await {
        eprintln!("warning: {e}");
    }
    r
}

fn current_user() -> String {
    for v in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(v)
            && !u.is_empty()
        {
            return u;
        }
    }
    format!("uid {}", unsafe { libc::getuid() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn keys() {
        assert_eq!(
            LockKind::Source("app".into()).key(),
            "locks/source-app.json"
        );
        assert_eq!(LockKind::Exclusive.key(), "locks/exclusive.json");
    }

    #[test]
    fn staleness_follows_the_heartbeat() {
        let mut i = LockInfo::new(&LockKind::Exclusive, "prune", t("2026-01-01T00:00:00Z"));
        assert!(!i.is_stale(t("2026-01-01T00:05:00Z")));
        assert!(i.is_stale(t("2026-01-01T00:05:01Z")));
        i.heartbeat = t("2026-01-01T00:04:00Z");
        assert!(!i.is_stale(t("2026-01-01T00:06:00Z")));
    }

    #[test]
    fn conflict_names_holder_and_hints_unlock_when_stale() {
        let mut i = LockInfo::new(
            &LockKind::Source("app".into()),
            "backup app",
            t("2026-01-01T00:00:00Z"),
        );
        i.owner = "alice".into();
        i.host = "db1".into();
        i.pid = 42;
        let found = FoundLock {
            key: "locks/source-app.json".into(),
            info: Some(i),
            modified: None,
        };
        let e = conflict_error(
            "back up app",
            std::slice::from_ref(&found),
            t("2026-01-01T01:00:00Z"),
        );
        assert_eq!(e.exit_code(), 8);
        assert!(e.message.contains("alice@db1 (pid 42)"), "{e}");
        assert!(e.message.contains("STALE"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("strata unlock"), "{e}");
        let e = conflict_error("back up app", &[found], t("2026-01-01T00:00:10Z"));
        assert!(!e.message.contains("STALE"), "{e}");
    }

    #[test]
    fn holder_gone_only_on_this_host_with_a_dead_pid() {
        let mut i = LockInfo::new(&LockKind::Exclusive, "prune", t("2026-01-01T00:00:00Z"));
        i.host = "db1".into();
        i.pid = 77;
        let f = FoundLock {
            key: EXCLUSIVE_KEY.into(),
            info: Some(i),
            modified: None,
        };
        assert!(f.holder_gone_with("db1", |_| false));
        assert!(!f.holder_gone_with("db1", |_| true));
        assert!(!f.holder_gone_with("db2", |_| false));
        assert!(pid_alive(std::process::id()));
    }

    #[test]
    fn unreadable_lock_falls_back_to_modified_time() {
        let f = FoundLock {
            key: "locks/exclusive.json".into(),
            info: None,
            modified: Some(t("2026-01-01T00:00:00Z")),
        };
        assert!(f.is_stale(t("2026-01-01T00:10:00Z")));
        assert!(!f.is_stale(t("2026-01-01T00:01:00Z")));
        // issue 13 item 10: `strata unlock` removes it at once (it was
        // never a lock), commands take over once nobody could heartbeat it
        assert!(f.is_abandoned(t("2026-01-01T00:01:00Z")));
        assert!(!f.is_garbage(t("2026-01-01T00:01:00Z")));
        assert!(f.is_garbage(t("2026-01-01T00:10:00Z")));
    }

    async fn repo() -> (tempfile::TempDir, Repository) {
        let d = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::local::LocalStorage::new(
            d.path().join("repo"),
        ));
        let r = Repository::init(storage).await.unwrap();
        (d, r)
    }

    async fn read(r: &Repository, key: &str) -> Option<LockInfo> {
        match r.storage().get_bytes(key).await {
            Ok(b) => Some(serde_json::from_slice(&b).unwrap()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn source_and_exclusive_locks_exclude_each_other() {
        let (_d, r) = repo().await;
        let app = RepoLock::acquire(&r, LockKind::Source("app".into()), "backup app")
            .await
            .unwrap();
        // Another source may run; the same source and prune may not.
        let crm = RepoLock::acquire(&r, LockKind::Source("crm".into()), "backup crm")
            .await
            .unwrap();
        let e = RepoLock::acquire(&r, LockKind::Source("app".into()), "backup app")
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), 8, "{e}");
        assert!(e.message.contains("`backup app` by"), "{e}");
        let e = RepoLock::acquire(&r, LockKind::Exclusive, "prune")
            .await
            .unwrap_err();
        assert!(e.message.contains("cannot run prune"), "{e}");
        app.release().await.unwrap();
        crm.release().await.unwrap();
        assert!(list(r.storage()).await.unwrap().is_empty());

        let prune = RepoLock::acquire(&r, LockKind::Exclusive, "prune")
            .await
            .unwrap();
        let e = RepoLock::acquire(&r, LockKind::Source("app".into()), "backup app")
            .await
            .unwrap_err();
        assert!(e.message.contains("`prune` by"), "{e}");
        // The refused backup removed its own lock again.
        let keys: Vec<String> = list(r.storage())
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, [EXCLUSIVE_KEY]);
        assert!(
            RepoLock::acquire(&r, LockKind::Exclusive, "cleanup")
                .await
                .is_err()
        );
        prune.release().await.unwrap();
    }

    #[tokio::test]
    async fn heartbeat_refreshes_and_never_resurrects_a_removed_lock() {
        let (_d, r) = repo().await;
        let every = StdDuration::from_millis(30);
        let key = LockKind::Exclusive.key();
        let l = RepoLock::acquire_every(&r, LockKind::Exclusive, "prune", every)
            .await
            .unwrap();
        let first = read(&r, &key).await.unwrap();
        tokio::time::sleep(every * 6).await;
        let later = read(&r, &key).await.unwrap();
        assert!(later.heartbeat > first.heartbeat, "{first:?} {later:?}");
        assert_eq!(later.created, first.created);
        l.release().await.unwrap();

        // `unlock --force` removes it: the heartbeat must not bring it back.
        // Delete right after a refresh has landed, so the removal does not
        // race a rewrite already in flight (a window the loop narrows but
        // cannot close on storage without compare-and-swap).
        let slow = StdDuration::from_millis(300);
        let l = RepoLock::acquire_every(&r, LockKind::Exclusive, "prune", slow)
            .await
            .unwrap();
        let first = read(&r, &key).await.unwrap();
        loop {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
            let now = read(&r, &key).await.unwrap();
            if now.heartbeat > first.heartbeat {
                break;
            }
        }
        r.storage().delete(&key).await.unwrap();
        tokio::time::sleep(slow * 3).await;
        assert!(read(&r, &key).await.is_none());
        l.release().await.unwrap();

        let l = RepoLock::acquire_every(&r, LockKind::Exclusive, "prune", every)
            .await
            .unwrap();
        tokio::time::sleep(every * 3).await;
        l.release().await.unwrap();
        tokio::time::sleep(every * 3).await;
        assert!(read(&r, &key).await.is_none(), "released lock came back");
    }
}

//! What every source's backup shares, whatever the source: the context a
//! backup runs in ([`BackupContext`]: repository, encoder, recipients,
//! reporter), its commit point and report ([`BackupReport`]), and
//! streaming a client program's stdout (pg_dump, pg_basebackup, …) into an
//! object that is committed only if the program exits 0.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::catalog::{Manifest, Pin, Repository};
use crate::error::{Error, Result};
use crate::keys::Recipient;
use crate::pipeline::{Encoder, ObjectRecord};
use crate::progress::Reporter;
use crate::util::{StderrTail, kill_child};

/// How much of a child's stderr is kept for error messages.
pub(crate) const STDERR_TAIL: usize = 16 * 1024;

/// What one backup did, for people and for `--json`.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub source: String,
    pub kind: String,
    pub tier: Option<String>,
    pub started: chrono::DateTime<Utc>,
    pub finished: chrono::DateTime<Utc>,
    pub duration_seconds: f64,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    pub manifest: String,
    /// `--label`: the set's label, recorded in the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_until: Option<chrono::DateTime<Utc>>,
    /// An incremental base backup: how, on which parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Box<IncrementalReport>>,
    /// An incremental was asked for and a full backup taken: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_because: Option<String>,
}

/// An incremental base backup in [`BackupReport`].
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalReport {
    /// `server` or `blocks`.
    pub method: String,
    pub parent: String,
    /// Every backup it needs, the full first, ending with the parent.
    pub chain: Vec<String>,
    /// Method `blocks`: pages of relation files read and stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_read: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_stored: Option<u64>,
    /// Method `server` from a primary (`-X fetch`): bytes of WAL the
    /// server sent at the end, read and dropped (the archive holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_dropped_bytes: Option<u64>,
}

/// Everything a backup needs besides the source.
pub struct BackupContext<'a> {
    pub repo: &'a Repository,
    pub encoder: Encoder,
    pub recipients: &'a [Recipient],
    pub reporter: &'a Reporter,
    /// `strata backup --label`: recorded in the manifest at the commit,
    /// whatever the source (issue 19 item 4).
    pub pin: Option<&'a Pin>,
    /// Base backups: `Some(max_chain)` takes an incremental when a parent
    /// fits (`--incremental`, a tier's `incremental = true`), a full one
    /// otherwise; `None` always a full one. Other kinds ignore it.
    pub incremental: Option<u32>,
}

impl BackupContext<'_> {
    /// Writes `manifest`, last: the backup exists from now on. Its report,
    /// timed from `clock`.
    pub async fn commit(&self, manifest: &Manifest, clock: Instant) -> Result<BackupReport> {
        let pinned;
        let manifest = match self.pin {
            Some(pin) => {
                let mut m = manifest.clone();
                m.summary.pin(pin);
                pinned = m;
                &pinned
            }
            None => manifest,
        };
        let key = self.repo.commit(manifest, self.recipients).await?;
        let s = &manifest.summary;
        Ok(BackupReport {
            id: s.id.to_string(),
            source: s.source.clone(),
            kind: s.kind.clone(),
            tier: s.tier.clone(),
            started: s.started,
            finished: s.finished,
            duration_seconds: clock.elapsed().as_secs_f64(),
            plain_bytes: s.plain_size,
            stored_bytes: s.stored_size,
            manifest: key,
            label: s.label.clone(),
            note: s.note.clone(),
            keep_until: s.keep_until,
            incremental: None,
            full_because: None,
        })
    }
}

/// Spawns a client program with stdout piped and stderr drained on its own
/// thread.
pub(crate) fn spawn_piped(
    mut cmd: std::process::Command,
    what: &str,
) -> Result<(Child, StderrTail)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::source(format!("cannot start {what}: {e}")))?;
    if let Some(out) = &child.stdout {
        crate::util::grow_pipe(out);
    }
    let tail = StderrTail::spawn(child.stderr.take().expect("piped"), STDERR_TAIL);
    Ok((child, tail))
}

/// Streams one child's stdout into a new object; the object is committed
/// only if the child exits 0.
pub(crate) async fn store_child(
    ctx: &BackupContext<'_>,
    mut child: Child,
    tail: StderrTail,
    what: &str,
    key: &str,
    name: &str,
) -> Result<ObjectRecord> {
    let stdout = child.stdout.take().expect("piped");
    store_child_output(ctx, child, tail, stdout, what, key, name).await
}

/// [`store_child`] reading the child's output through `stdout` (the raw
/// pipe, or an adapter that inspects the stream on its way).
pub(crate) async fn store_child_output<R: std::io::Read + Send + 'static>(
    ctx: &BackupContext<'_>,
    child: Child,
    tail: StderrTail,
    stdout: R,
    what: &str,
    key: &str,
    name: &str,
) -> Result<ObjectRecord> {
    let pid = child.id();
    let child = Arc::new(std::sync::Mutex::new(Some((child, tail))));
    let c2 = child.clone();
    let what2 = what.to_string();
    let step = ctx.reporter.step(what.to_string(), None);
    let result = ctx
        .encoder
        .store(
            ctx.repo.storage().clone(),
            key,
            name,
            stdout,
            step.progress.clone(),
            move |_| {
                let (mut ch, tail) = c2.lock().unwrap().take().expect("checked once");
                let status = ch
                    .wait()
                    .map_err(|e| Error::source(format!("{what2}: {e}")))?;
                let stderr = tail.finish();
                if status.success() {
                    Ok(())
                } else {
                    Err(Error::source(format!(
                        "{what2} failed ({status}): {stderr}"
                    )))
                }
            },
        )
        .await;
    match result {
        Ok(rec) => {
            step.done(&format!(
                "stored {}",
                crate::util::human_bytes(rec.stored_size)
            ));
            Ok(rec)
        }
        Err(e) => {
            step.abandon();
            // The pipeline failed before the exit check: stop the child.
            if let Some((mut ch, tail)) = child.lock().unwrap().take() {
                kill_child(&mut ch);
                let stderr = tail.finish();
                tracing::debug!(pid, %stderr, "stopped {what} after a pipeline failure");
            }
            Err(e)
        }
    }
}

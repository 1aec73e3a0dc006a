//! Restoring a base backup: its tar is decoded into a pipe and unpacked
//! into an empty directory (or, with `--delta`, over a stopped copy of
//! the cluster, writing only what differs), then `recovery.signal` and
//! the recovery settings are written so that PostgreSQL replays WAL
//! through `strata wal fetch` (its `restore_command`) up to the recovery
//! target. With `--start` the copy is started
//! ([`crate::sources::postgres::server`]) and, for a restore to the end
//! of the archive, checked to have replayed all of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::fetch;
use crate::progress::Reporter;
use crate::sources::postgres::pg_error_text;
use crate::sources::postgres::pitr::{
    Candidate, RecoveryTarget, TimelineTarget, conf_quote, replay_end,
};
use crate::sources::postgres::server::{
    StartOptions, chown_recursive, pg_ctl_start, pg_ctl_stop, server_log, wait_promoted,
};
use crate::sources::postgres::wal::Lsn;
use crate::storage::Storage;

/// How to restore a base backup.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub target_dir: PathBuf,
    pub target: RecoveryTarget,
    /// `recovery_target_timeline`.
    pub timeline: TimelineTarget,
    pub force: bool,
    /// The `restore_command` PostgreSQL runs.
    pub restore_command: String,
    /// Write `archive_mode = 'off'`: the restored server never archives
    /// (else it keeps the backup's setting and, once promoted, archives
    /// its new timeline).
    pub archive_off: bool,
    /// Start the server and wait for it to promote.
    pub start: Option<StartOptions>,
    /// Give the directory to this OS user (when running as root).
    pub owner: Option<String>,
    /// Write `hot_standby = 'off'`: a copy the operator starts accepts
    /// connections only once recovered and promoted.
    pub hot_standby_off: bool,
    /// With `start`: recovery must end at or after this LSN (the start of
    /// the newest archived segment, for a restore to the end of the
    /// archive). A server that promoted before it (WAL PostgreSQL could
    /// not read, a segment missing) is stopped and the restore fails.
    pub must_reach: Option<Lsn>,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub source: String,
    pub target_dir: String,
    /// What recovery aims for, e.g. `time 2026-11-23T10:00:00.000000Z`.
    pub recovery_target: String,
    pub backup_stop_lsn: String,
    pub backup_stop_time: DateTime<Utc>,
    pub bytes: u64,
    pub started: bool,
    pub port: Option<u16>,
    /// The server's WAL position after promotion, when started.
    pub promoted_at_lsn: Option<String>,
    pub timeline: Option<u32>,
    pub duration_seconds: f64,
    pub phases: Vec<(String, f64)>,
    /// Where the base backup starts: the oldest point it can reach.
    pub backup_start_lsn: String,
    /// The timeline the base backup was taken on.
    pub backup_timeline: u32,
    /// `--delta`: what was kept, written and removed (of the full backup,
    /// for a chain: its incrementals are applied as they are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<crate::sources::postgres::delta::DeltaStats>,
    /// An incremental's chain, the full backup first, as restored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<super::chain::ChainStep>,
}

/// Restores `cand` into `opts.target_dir` and configures recovery.
pub async fn restore(
    storage: &Arc<dyn Storage>,
    cand: &Candidate,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    restore_into(storage, cand, identities, opts, false, reporter).await
}

/// [`restore`] over a stopped copy of the cluster in `opts.target_dir`,
/// writing only what differs (`restore --delta`, see
/// [`crate::sources::postgres::delta`]).
pub async fn restore_delta(
    storage: &Arc<dyn Storage>,
    cand: &Candidate,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    restore_into(storage, cand, identities, opts, true, reporter).await
}

async fn restore_into(
    storage: &Arc<dyn Storage>,
    cand: &Candidate,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    delta: bool,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let dir = &opts.target_dir;
    if delta {
        check_delta_dir(dir)?;
    } else {
        prepare_dir(dir, opts.force)?;
    }
    let mut phases = Vec::new();

    // download + extract: decode into a pipe, untar from the other end;
    // an incremental's chain: its full backup so, then each incremental
    // applied in turn as it streams (nothing staged)
    let t = Instant::now();
    let (first, rest): (&Candidate, Vec<&Candidate>) = match cand.chain.first() {
        None => (cand, vec![]),
        Some(full) => (
            full,
            cand.chain[1..]
                .iter()
                .chain(std::iter::once(cand))
                .collect(),
        ),
    };
    let of = cand.entry.summary().id.to_string();
    let in_chain = |id: &str, e: Error| match (rest.is_empty(), e.kind) {
        (true, _) => e,
        (false, crate::error::Kind::Integrity) => {
            e.context(format!("backup {id} of the chain of {of} is damaged"))
        }
        (false, _) => e.context(format!("restoring backup {id} of the chain of {of}")),
    };
    let mut chain = super::chain::steps(cand);
    let delta_stats = if rest.is_empty() || delta {
        forward(
            storage,
            first,
            &rest,
            &of,
            &identities,
            dir,
            delta,
            reporter,
            &mut chain,
            &in_chain,
        )
        .await?
    } else {
        // newest first, each block written once (`combine`)
        let mut combine = super::combine::Combine::new(dir);
        let levels: Vec<&Candidate> = std::iter::once(first).chain(rest.iter().copied()).collect();
        let n = levels.len();
        for (k, m) in levels.iter().enumerate().rev() {
            let id = m.entry.summary().id.to_string();
            let label = if k + 1 == n {
                format!("extract {id} (the newest of {of}'s chain of {n})")
            } else if k == 0 {
                format!("fill from {id} (the chain's full backup)")
            } else {
                format!("fill from {id} (incremental {k} of {})", n - 1)
            };
            let (back, stats) = stream(
                storage,
                m,
                identities.clone(),
                dir,
                label,
                reporter,
                move |reader, _| {
                    let stats = combine.add(reader)?;
                    Ok((combine, stats))
                },
            )
            .await
            .map_err(|e| in_chain(&id, e))?;
            combine = back;
            chain[k].applied = Some(stats);
        }
        combine.finish().map_err(|e| {
            Error::integrity(format!(
                "restoring the chain of {of} into {}: {e}",
                dir.display()
            ))
        })?;
        None
    };
    std::fs::create_dir_all(dir.join("pg_wal/archive_status"))?;
    write_recovery_conf(dir, opts)?;
    set_mode(dir, 0o700)?;
    if let Some(user) = &opts.owner {
        chown_recursive(dir, user)?;
    }
    phases.push(("download+extract".to_string(), t.elapsed().as_secs_f64()));

    let mut report = RestoreReport {
        backup: cand.entry.summary().id.to_string(),
        source: cand.entry.summary().source.clone(),
        target_dir: dir.display().to_string(),
        recovery_target: opts.target.describe(),
        backup_stop_lsn: cand.base.stop_lsn.clone(),
        backup_stop_time: cand.base.stop_time,
        bytes: chain
            .iter()
            .map(|c| c.bytes)
            .sum::<u64>()
            .max(cand.record.plain_size),
        started: false,
        port: None,
        promoted_at_lsn: None,
        timeline: None,
        duration_seconds: 0.0,
        phases: vec![],
        backup_start_lsn: cand.base.start_lsn.clone(),
        backup_timeline: cand.base.timeline,
        delta: delta_stats,
        chain,
    };
    if let Some(start) = &opts.start {
        let t = Instant::now();
        reporter.note(format!(
            "starting PostgreSQL on 127.0.0.1:{} to replay WAL to {}",
            start.port,
            opts.target.describe()
        ));
        pg_ctl_start(dir, start, opts.owner.as_deref()).await?;
        let client = wait_promoted(dir, start, opts.owner.as_deref()).await?;
        phases.push(("recovery".to_string(), t.elapsed().as_secs_f64()));
        let t = Instant::now();
        let row = client
            .query_one(
                "SELECT 1, pg_current_wal_lsn()::text, \
                 (SELECT timeline_id FROM pg_control_checkpoint())",
                &[],
            )
            .await
            .map_err(|e| {
                Error::source(format!(
                    "checking the restored server: {}",
                    pg_error_text(&e)
                ))
            })?;
        let lsn: String = row.get(1);
        let tli: i32 = row.get(2);
        if let (Some(want), Some(ended)) = (opts.must_reach, replay_end(dir))
            && ended < want
        {
            drop(client);
            let stopped = pg_ctl_stop(dir, start, opts.owner.as_deref()).await;
            return Err(Error::integrity(format!(
                "recovery ended at LSN {ended}, before the end of the archived WAL (the newest segment starts at LSN {want}): the WAL after {ended} could not be replayed, so {} holds a copy that misses everything written after that point{}",
                dir.display(),
                if stopped {
                    "; the server was stopped"
                } else {
                    "; the server could not be stopped and still runs"
                }
            ))
            .hint(format!(
                "`strata verify --read-data {}` checks every archived segment; the server log is {}",
                cand.entry.summary().source,
                server_log(dir).display()
            )));
        }
        phases.push(("checks".to_string(), t.elapsed().as_secs_f64()));
        report.started = true;
        report.port = Some(start.port);
        report.promoted_at_lsn = Some(lsn);
        report.timeline = Some(tli as u32);
    }
    report.duration_seconds = clock.elapsed().as_secs_f64();
    report.phases = phases;
    Ok(report)
}

/// A single backup, or a chain with `--delta`: the full one unpacked (or
/// compared with what `dir` holds), then each incremental applied in turn
/// ([`super::apply`]); the full one's delta statistics.
#[allow(clippy::too_many_arguments)]
async fn forward(
    storage: &Arc<dyn Storage>,
    first: &Candidate,
    rest: &[&Candidate],
    of: &str,
    identities: &Arc<Vec<Identity>>,
    dir: &Path,
    delta: bool,
    reporter: &Reporter,
    chain: &mut [super::chain::ChainStep],
    in_chain: &dyn Fn(&str, Error) -> Error,
) -> Result<Option<crate::sources::postgres::delta::DeltaStats>> {
    let first_id = first.entry.summary().id.to_string();
    let delta_stats = stream(
        storage,
        first,
        identities.clone(),
        dir,
        if rest.is_empty() {
            format!("extract {first_id}")
        } else {
            format!("extract {first_id} (the full backup of {of}'s chain)")
        },
        reporter,
        move |reader, d2| {
            if delta {
                return crate::sources::postgres::delta::unpack(reader, &d2).map(Some);
            }
            crate::sources::postgres::delta::unpack_new(reader, &d2)?;
            Ok(None)
        },
    )
    .await
    .map_err(|e| in_chain(&first_id, e))?;
    for (i, m) in rest.iter().enumerate() {
        let id = m.entry.summary().id.to_string();
        let applied = stream(
            storage,
            m,
            identities.clone(),
            dir,
            format!("apply {id} (incremental {} of {})", i + 1, rest.len()),
            reporter,
            |reader, d2| super::apply::apply(reader, &d2),
        )
        .await
        .map_err(|e| in_chain(&id, e))?;
        chain[i + 1].applied = Some(applied);
    }
    Ok(delta_stats)
}

/// Streams `c`'s tar from the repository into `work`, which reads it (over
/// a [`crate::util::chunk_pipe`]) on a thread of its own (files are written with blocking I/O) in `dir`.
async fn stream<T: Send + 'static>(
    storage: &Arc<dyn Storage>,
    c: &Candidate,
    identities: Arc<Vec<Identity>>,
    dir: &Path,
    label: String,
    reporter: &Reporter,
    work: impl FnOnce(crate::util::ChunkReader, PathBuf) -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let step = reporter.step(label, Some(c.record.plain_size));
    let (writer, reader) = crate::util::chunk_pipe(8);
    let d2 = dir.to_path_buf();
    let worker = std::thread::spawn(move || work(reader, d2));
    let fetched = fetch(
        storage,
        &c.record,
        identities,
        writer,
        step.progress.clone(),
    )
    .await;
    // drop the writer (end of stream) before joining the reader
    let fetched = fetched.map(drop);
    match (fetched, worker.join().expect("untar thread panicked")) {
        (Ok(()), Ok(v)) => {
            step.done("verified");
            Ok(v)
        }
        // the data was bad, or the store failed: that is the cause
        (Err(e), _) if e.kind != crate::error::Kind::Failed => {
            step.abandon();
            Err(e.context(format!("{} is incomplete", dir.display())))
        }
        (Err(e), Ok(_)) => {
            step.abandon();
            Err(e.context(format!("{} is incomplete", dir.display())))
        }
        // the reader stopped first (a bad member, a full disk): its error,
        // not the broken pipe the decoder then met
        (_, Err(e)) => {
            step.abandon();
            let text = format!("unpacking {} into {}: {e}", c.record.key, dir.display());
            Err(if e.kind() == std::io::ErrorKind::InvalidData {
                Error::integrity(text)
            } else {
                Error::failed(text).with_disk_full_hint()
            })
        }
    }
}

/// `--delta` needs a stopped data directory (or an empty or missing one):
/// everything the backup does not hold is deleted from it.
fn check_delta_dir(dir: &Path) -> Result<()> {
    let empty = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::usage(format!("--target-dir {}: {e}", dir.display()))),
        Ok(mut it) => it.next().is_none(),
    };
    if empty {
        return Ok(());
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::conflict(format!(
            "{} holds postmaster.pid: a server may be running there",
            dir.display()
        ))
        .hint(
            "stop that server (pg_ctl -D DIR stop) first; --delta never rewrites a running cluster",
        ));
    }
    if !dir.join("PG_VERSION").exists() {
        return Err(Error::usage(format!(
            "{} is not empty and holds no PG_VERSION: not a PostgreSQL data directory",
            dir.display()
        ))
        .hint("--delta rewrites a data directory and deletes everything the backup does not hold; point it at one, or use an empty directory"));
    }
    Ok(())
}

/// Refuses a non-empty directory unless `force` (then empties it, but
/// never one a server may be running in).
fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            return Ok(());
        }
        Err(e) => return Err(Error::usage(format!("--target-dir {}: {e}", dir.display()))),
        Ok(mut it) => {
            if it.next().is_none() {
                return Ok(());
            }
        }
    }
    if !force {
        return Err(Error::conflict(format!("{} is not empty", dir.display()))
            .hint("restore into an empty directory, add --delta to rewrite only the files that differ, or --force to delete what it holds"));
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::conflict(format!(
            "{} holds postmaster.pid: a server may be running there",
            dir.display()
        ))
        .hint(
            "stop that server (pg_ctl -D DIR stop) first; --force never deletes a running cluster",
        ));
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// A cluster that keeps its configuration outside the data directory (as
/// Debian's and Ubuntu's packages do, in /etc/postgresql/VER/NAME) has a
/// base backup without postgresql.conf and pg_hba.conf, and the restored
/// copy would not start: minimal ones are written, and the operator told.
fn write_missing_config(dir: &Path) -> Result<()> {
    let files: [(&str, &str); 3] = [
        (
            "postgresql.conf",
            "# written by strata restore: the backup holds no postgresql.conf (the source keeps
             # its configuration outside the data directory); copy its settings in here
",
        ),
        (
            "pg_hba.conf",
            "# written by strata restore: the backup holds no pg_hba.conf; loopback only
             local all all peer
             host all all 127.0.0.1/32 scram-sha-256
             host all all ::1/128 scram-sha-256
",
        ),
        (
            "pg_ident.conf",
            "# written by strata restore
",
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text)?;
            eprintln!(
                "strata: note: the backup holds no {name} (the source keeps its configuration outside its data directory): wrote a minimal {}",
                path.display()
            );
        }
    }
    Ok(())
}

/// `recovery.signal`, and the restore command and target appended to
/// `postgresql.auto.conf` (later lines win over earlier ones).
///
/// A backup read from a standby (`backup_from`) holds the standby's
/// `standby.signal` and, in `postgresql.auto.conf`, its `primary_conninfo`:
/// the copy would start as a replica of the production primary, stream
/// from it and never promote. Both are neutralised.
fn write_recovery_conf(dir: &Path, opts: &RestoreOptions) -> Result<()> {
    write_missing_config(dir)?;
    match std::fs::remove_file(dir.join("standby.signal")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::write(dir.join("recovery.signal"), "")?;
    let mut text = String::from("\n# added by strata restore\n");
    text.push_str("primary_conninfo = ''  # a copy never streams from the source\n");
    text.push_str(&format!(
        "restore_command = {}\n",
        conf_quote(&opts.restore_command)
    ));
    if let Some(s) = opts.target.setting() {
        text.push_str(&s);
        text.push('\n');
    }
    text.push_str("recovery_target_action = 'promote'\n");
    text.push_str(&format!(
        "recovery_target_timeline = {}\n",
        conf_quote(&opts.timeline.to_string())
    ));
    if opts.archive_off {
        text.push_str("archive_mode = 'off'  # strata restore --archive-mode off\n");
    }
    if opts.hot_standby_off {
        // started by the operator: connections only once recovery reached
        // the target and promoted, so nobody reads a partial past while
        // it replays (`pg_ctl -w` returned while the copy still recovered)
        text.push_str(
            "hot_standby = 'off'  # strata restore: no connections before promotion; remove to watch recovery\n",
        );
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("postgresql.auto.conf"))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn set_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

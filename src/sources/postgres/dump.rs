//! Logical backups: `pg_dump` (custom format, its compression off so zstd
//! does it once) and `pg_dumpall --globals-only` streamed through the
//! pipeline; restores through `pg_restore` and `psql`.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

/// Moved to [`crate::sources::backup`] (issue 14); kept here for callers
/// outside sources/.
use crate::sources::backup::{BackupContext, BackupReport};

use super::{Target, find_binary, major_of, pg_error_text, quote_ident, server_info};
use crate::catalog::manifest::Summary;
use crate::catalog::{BackupId, Entry, Manifest, Repository};
use crate::config::Source;
use crate::error::{Error, Kind, Result};
use crate::keys::Identity;
use crate::pipeline::{ObjectRecord, fetch};
use crate::progress::Reporter;
use crate::sources::backup::{STDERR_TAIL, spawn_piped, store_child};
use crate::storage::Storage;
use crate::util::{StderrTail, kill_child};

/// Object names inside a dump backup.
pub const DUMP_OBJECT: &str = "database.pgdump";
pub const GLOBALS_OBJECT: &str = "globals.sql";

/// Takes a logical backup of `source`.
pub async fn backup(
    ctx: &BackupContext<'_>,
    source: &Source,
    tier: Option<String>,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let target = Target::new(&source.url);
    let client = target.connect().await?;
    let mut info = server_info(&client).await?;
    super::check_server_version(&target.display(), info.server_version_num)?;
    let major = major_of(info.server_version_num);
    let pg_dump = find_binary(source.bin_dir.as_deref(), "pg_dump", major)?;
    let pg_dumpall = find_binary(source.bin_dir.as_deref(), "pg_dumpall", major)?;
    info.dump_tool_major = [&pg_dump, &pg_dumpall]
        .into_iter()
        .filter_map(|b| super::binary_major(b))
        .max();
    let id = BackupId::new(started);
    ctx.reporter.note(format!(
        "backup {}: {} (PostgreSQL {}, database {}) as {id}",
        source.name,
        target.display(),
        info.server_version,
        info.database
    ));

    // verify_queries and exact row counts run in the snapshot pg_dump
    // then dumps (their own connection: the transaction stays open until
    // pg_dump is done), so they describe exactly the data dumped.
    let snapshot_conn = match source.verify_queries.is_empty() && !source.count_rows {
        true => None,
        false => Some(target.connect().await?),
    };
    let (snapshot, verify_results) = match &snapshot_conn {
        Some(c) => {
            super::verify_queries::record_for_dump(c, &source.name, &source.verify_queries).await?
        }
        None => (None, Vec::new()),
    };
    let mut cmd = target.command(&pg_dump);
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--dbname={}", target.child_url()));
    if let Some(s) = &snapshot {
        cmd.arg(format!("--snapshot={s}"));
    }
    let (child, tail) = spawn_piped(cmd, "pg_dump")?;
    let (step, key) = (
        format!("{}: pg_dump", source.name),
        Repository::data_key(&source.name, &id, DUMP_OBJECT),
    );
    let dumping = store_child(ctx, child, tail, &step, &key, DUMP_OBJECT);
    // Counted while pg_dump reads the same snapshot: an exact count needs
    // no second pass over the dump.
    let names: Vec<(String, String)> = info
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let counting = async {
        match (&snapshot_conn, &snapshot) {
            (Some(c), Some(_)) if source.count_rows => {
                Some(super::verify_queries::count_rows(c, &names).await)
            }
            _ => None,
        }
    };
    // A failed dump does not wait for the counting: the running count is
    // cancelled on the server, and the backup fails at once.
    let (dump, counts) = {
        let (mut dumping, mut counting) = (std::pin::pin!(dumping), std::pin::pin!(counting));
        tokio::select! {
            d = &mut dumping => match d {
                Err(e) => {
                    if let Some(c) = &snapshot_conn {
                        let _ = c.cancel_token().cancel_query(target.cancel_tls()).await;
                    }
                    (Err(e), None)
                }
                ok => (ok, counting.await),
            },
            n = &mut counting => (dumping.await, n),
        }
    };
    if let Some(c) = &snapshot_conn {
        super::verify_queries::end(c).await;
    }
    if let Some(counts) = counts {
        for (t, n) in info.tables.iter_mut().zip(counts) {
            t.rows = n;
        }
    }
    let dump = dump?;

    // Roles with passwords need a superuser; without one, roles are still
    // saved (no passwords) rather than the whole backup failing.
    let globals_key = Repository::data_key(&source.name, &id, GLOBALS_OBJECT);
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| Error::source(pg_error_text(&e)))?;
    let mut cmd = target.command(&pg_dumpall);
    cmd.args(["--globals-only", "--no-password"])
        .arg(format!("--dbname={}", target.child_url()))
        .arg(format!("--database={}", info.database));
    if !superuser {
        cmd.arg("--no-role-passwords");
        ctx.reporter.note(format!(
            "{}: not a superuser, roles are saved without passwords",
            source.name
        ));
    }
    info.globals_with_passwords = superuser;
    let (child, tail) = spawn_piped(cmd, "pg_dumpall")?;
    let globals = store_child(
        ctx,
        child,
        tail,
        &format!("{}: globals", source.name),
        &globals_key,
        GLOBALS_OBJECT,
    )
    .await?;

    let finished = Utc::now();
    let mut manifest = Manifest::new(
        Summary::of(
            &id,
            &source.name,
            source.kind,
            "dump",
            tier.clone(),
            started,
            finished,
        ),
        vec![dump, globals],
        Some(info),
    );
    manifest.verify_queries = verify_results;
    ctx.commit(&manifest, clock).await
}

/// How to restore a logical backup.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub to_database: String,
    pub create: bool,
    pub tables: Vec<String>,
    pub jobs: u32,
    /// Server to restore into; default the source's server.
    pub target: Target,
    /// Apply the saved roles and tablespaces first.
    pub globals: bool,
    pub no_owner: bool,
    /// Where a parallel restore keeps its temporary copy of the dump.
    pub scratch_dir: PathBuf,
    /// The source's `bin_dir`: pg_restore and psql come from there too
    /// (a PostgreSQL newer than the host's packages).
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub source: String,
    pub database: String,
    pub target: String,
    pub created: bool,
    pub tables: Vec<String>,
    pub jobs: u32,
    pub bytes: u64,
    pub duration_seconds: f64,
    pub phases: Vec<(String, f64)>,
    pub warnings: Vec<String>,
    /// How many recorded verify_queries gave the same results (0: none
    /// recorded, or a --table restore).
    pub verify_queries_checked: usize,
}

/// Restores a logical backup into a database.
pub async fn restore(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let summary = entry.summary();
    let manifest = entry.file.open(&entry.manifest_key, &identities)?;
    let dump = manifest
        .object(DUMP_OBJECT)
        .ok_or_else(|| Error::integrity(format!("backup {} has no {DUMP_OBJECT}", summary.id)))?
        .clone();
    let target_db = opts.target.with_database(&opts.to_database);
    let maintenance = opts.target.connect().await?;
    let server_num: i32 = maintenance
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| Error::source(pg_error_text(&e)))?
        .get(0);
    super::check_server_version(&opts.target.display(), server_num)?;
    // pg_restore and psql as new as the server and as what wrote the dump
    let major = major_of(server_num).max(
        manifest
            .postgres
            .as_ref()
            .and_then(|p| p.dump_tool_major)
            .unwrap_or(0),
    );
    let mut phases = Vec::new();
    let mut warnings = Vec::new();

    // Refuse before touching anything.
    let exists = check_database(&maintenance, &opts.target, &opts.to_database, opts.create).await?;
    if exists {
        check_target_empty(&target_db, &opts.to_database, &opts.tables).await?;
    }

    if opts.globals {
        let t = Instant::now();
        let rec = manifest.object(GLOBALS_OBJECT).ok_or_else(|| {
            Error::integrity(format!("backup {} has no {GLOBALS_OBJECT}", summary.id))
        })?;
        warnings.extend(
            apply_globals(
                storage,
                rec,
                identities.clone(),
                &opts.target,
                opts.bin_dir.as_deref(),
                major,
            )
            .await?,
        );
        phases.push(("globals".to_string(), t.elapsed().as_secs_f64()));
    }

    if opts.create {
        maintenance
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                quote_ident(&opts.to_database)
            ))
            .await
            .map_err(|e| {
                Error::source(format!(
                    "creating database {}: {}",
                    opts.to_database,
                    pg_error_text(&e)
                ))
            })?;
    }
    let result = run_pg_restore(
        storage,
        &dump,
        identities,
        opts,
        &target_db,
        (major, major_of(server_num)),
        reporter,
        &mut phases,
    )
    .await;
    if let Err(e) = result {
        let e = hint_missing_roles(e, opts.globals, opts.no_owner);
        if opts.create {
            // Leave nothing half-restored behind a failed restore. FORCE
            // (PostgreSQL 13+) ends a pg_restore connection still lingering.
            let force = if server_num >= 130000 {
                " WITH (FORCE)"
            } else {
                ""
            };
            let dropped = maintenance
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {}{force}",
                    quote_ident(&opts.to_database)
                ))
                .await;
            let what = match dropped {
                Ok(()) => "the database it created was dropped".to_string(),
                Err(d) => format!(
                    "the half-restored database it created could not be dropped ({}); drop it by hand",
                    pg_error_text(&d)
                ),
            };
            return Err(e.context(format!(
                "restore of {} into {} failed; {what}",
                summary.id, opts.to_database
            )));
        }
        return Err(e.context(format!(
            "restore of {} into {} failed",
            summary.id, opts.to_database
        )));
    }
    // The recorded verify_queries, run on the whole restored database
    // (a --table restore holds only part of what they read).
    let mut verify_queries_checked = 0;
    if !manifest.verify_queries.is_empty() {
        if opts.tables.is_empty() {
            let t = Instant::now();
            let client = target_db.connect().await?;
            verify_queries_checked = super::verify_queries::check_restored(
                &client,
                &format!("database {} restored from {}", opts.to_database, summary.id),
                &manifest.verify_queries,
            )
            .await?;
            phases.push(("verify queries".to_string(), t.elapsed().as_secs_f64()));
        } else {
            warnings.push(format!(
                "the backup's {} verify queries were not run: --table restores only part of the database",
                manifest.verify_queries.len()
            ));
        }
    }
    Ok(RestoreReport {
        verify_queries_checked,
        backup: summary.id.to_string(),
        source: summary.source.clone(),
        database: opts.to_database.clone(),
        target: opts.target.display(),
        created: opts.create,
        tables: opts.tables.clone(),
        jobs: opts.jobs,
        bytes: dump.plain_size,
        duration_seconds: clock.elapsed().as_secs_f64(),
        phases,
        warnings,
    })
}

/// A restore onto a server that lacks the roles owning the dumped objects
/// fails with pg_restore's `role "…" does not exist`: say how to fix it.
fn hint_missing_roles(e: Error, globals: bool, no_owner: bool) -> Error {
    let missing = e.message.contains("role \"") && e.message.contains("does not exist");
    if !missing || e.hint.is_some() {
        return e;
    }
    match (globals, no_owner) {
        (false, _) => e.hint(
            "the target server lacks roles the backup's objects belong to (a fresh server): add --globals to create the backup's roles and tablespaces first, or --no-owner to give every object to the restoring user",
        ),
        (true, false) => e.hint(
            "a role is still missing after --globals (its creation failed: see the warnings above); --no-owner gives every object to the restoring user",
        ),
        (true, true) => e,
    }
}

/// Whether database `db` exists on `target`, refusing what `create`
/// cannot honour: `--create` of an existing database (exit 8), a missing
/// one without `--create` (exit 2).
pub(crate) async fn check_database(
    maintenance: &tokio_postgres::Client,
    target: &Target,
    db: &str,
    create: bool,
) -> Result<bool> {
    let exists = maintenance
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .map_err(|e| Error::source(pg_error_text(&e)))?
        .is_some();
    if create && exists {
        return Err(Error::conflict(format!(
            "database {db} already exists on {}",
            target.display()
        ))
        .hint("restore into a new name with --create, or without --create into the existing (empty) database"));
    }
    if !create && !exists {
        return Err(Error::usage(format!(
            "database {db} does not exist on {}",
            target.display()
        ))
        .hint("add --create to create it"));
    }
    Ok(exists)
}

/// A full restore needs an empty database; a table restore needs the
/// tables to be absent (the incident case: a dropped table restored into
/// the live database).
pub(crate) async fn check_target_empty(
    target_db: &Target,
    db: &str,
    tables: &[String],
) -> Result<()> {
    let client = target_db.connect().await?;
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%'",
            &[],
        )
        .await
        .map_err(|e| Error::source(pg_error_text(&e)))?;
    let existing: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if tables.is_empty() {
        if let Some((s, t)) = existing.first() {
            return Err(Error::conflict(format!(
                "database {db} is not empty (it has {s}.{t} and {} more relations); refusing to restore over it",
                existing.len() - 1
            ))
            .hint("restore into a new database with --to-database NEW --create, or drop the existing one first"));
        }
    } else {
        for want in tables {
            let (ws, wt) = split_table(want);
            if let Some((s, t)) = existing
                .iter()
                .find(|(s, t)| t == wt && ws.is_none_or(|ws| ws == s))
            {
                return Err(Error::conflict(format!(
                    "table {s}.{t} already exists in database {db}; refusing to overwrite it"
                ))
                .hint("rename or drop it first, or restore into another database"));
            }
        }
    }
    Ok(())
}

pub(crate) fn split_table(t: &str) -> (Option<&str>, &str) {
    match t.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, t),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pg_restore(
    storage: &Arc<dyn Storage>,
    dump: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    target_db: &Target,
    (major, server_major): (u32, u32),
    reporter: &Reporter,
    phases: &mut Vec<(String, f64)>,
) -> Result<()> {
    let pg_restore = find_binary(opts.bin_dir.as_deref(), "pg_restore", major)?;
    // pg_restore 17+ starts every session with `SET transaction_timeout`,
    // which a server before 17 rejects: with --exit-on-error no dump ever
    // restored into 15 or 16 through newer tools. There the restore runs
    // on past errors and only that one is forgiven (issue 16 item 3).
    let lenient = restore_is_lenient(&pg_restore, server_major);
    let mut cmd = target_db.command(&pg_restore);
    cmd.arg("--no-password")
        .arg(format!("--dbname={}", target_db.child_url()));
    if !lenient {
        cmd.arg("--exit-on-error");
    }
    if opts.no_owner {
        cmd.arg("--no-owner");
    }
    for t in &opts.tables {
        let (schema, name) = split_table(t);
        if let Some(s) = schema {
            cmd.arg(format!("--schema={s}"));
        }
        cmd.arg(format!("--table={name}"));
    }
    if opts.jobs > 1 {
        // pg_restore runs parallel jobs only from a seekable file: decode
        // (and verify) into a scratch file first, then restore from it.
        let scratch = tempfile::Builder::new()
            .prefix("strata-restore-")
            .tempfile_in(&opts.scratch_dir)
            .map_err(|e| Error::failed(format!("cannot create a scratch file in {}: {e}", opts.scratch_dir.display()))
                .hint("parallel restore (--jobs > 1) needs free space for one plain copy of the dump; set --scratch-dir"))?;
        let step = reporter.step(
            format!("download+decrypt {}", dump.key),
            Some(dump.plain_size),
        );
        let t = Instant::now();
        let file = scratch.reopen()?;
        fetch(
            storage,
            dump,
            identities,
            std::io::BufWriter::with_capacity(1 << 20, file),
            step.progress.clone(),
        )
        .await?;
        step.done("verified");
        phases.push(("download".into(), t.elapsed().as_secs_f64()));
        let t = Instant::now();
        cmd.arg(format!("--jobs={}", opts.jobs)).arg(scratch.path());
        let (mut child, tail) = spawn_piped(cmd, "pg_restore")?;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("wait task")?;
        let stderr = tail.finish();
        phases.push(("pg_restore".into(), t.elapsed().as_secs_f64()));
        let forgiven = lenient && only_transaction_timeout_errors(&stderr);
        if !status.success() && !forgiven {
            return Err(Error::source(format!(
                "pg_restore failed ({status}): {stderr}"
            )));
        }
        return Ok(());
    }
    // One job: stream straight into pg_restore's stdin, no temporary copy.
    let step = reporter.step(format!("restore {}", dump.key), Some(dump.plain_size));
    let t = Instant::now();
    match feed_child(
        storage,
        dump,
        identities.clone(),
        cmd,
        "pg_restore",
        step.progress.clone(),
    )
    .await
    {
        Ok(_) => {
            step.done("verified");
            phases.push(("restore".into(), t.elapsed().as_secs_f64()));
            Ok(())
        }
        // pg_restore ran to its end (it printed its closing count), on
        // all the input or as much as --table wanted; in that case the
        // rest of the object is still read and verified, as when
        // pg_restore stops reading with success
        Err(e)
            if lenient
                && e.message.starts_with("pg_restore failed")
                && only_transaction_timeout_errors(&e.message) =>
        {
            if !e.message.starts_with("pg_restore failed (") {
                fetch(
                    storage,
                    dump,
                    identities,
                    std::io::sink(),
                    step.progress.clone(),
                )
                .await?;
            }
            step.done("verified");
            phases.push(("restore".into(), t.elapsed().as_secs_f64()));
            Ok(())
        }
        Err(e) => {
            step.abandon();
            Err(e)
        }
    }
}

/// Whether `pg_restore` must run without `--exit-on-error` into a server
/// of major `server_major`: it is 17 or newer and the server older, so
/// its `SET transaction_timeout` fails (see
/// [`only_transaction_timeout_errors`]).
pub(crate) fn restore_is_lenient(pg_restore: &std::path::Path, server_major: u32) -> bool {
    server_major < 17 && super::binary_major(pg_restore).is_some_and(|v| v >= 17)
}

/// Whether pg_restore's errors (run without --exit-on-error) were only
/// a server before 17 rejecting `SET transaction_timeout = 0` (once per
/// connection, so once per parallel job too): what it said (after
/// strata's own prefix) is only those errors and its closing "errors
/// ignored on restore" count, which it prints once done. Short enough
/// never to have been cut (the tail keeps 16 KiB), so no earlier error
/// can hide.
pub(crate) fn only_transaction_timeout_errors(text: &str) -> bool {
    let Some(at) = text.find("pg_restore: ") else {
        return false;
    };
    let said = &text[at..];
    let (mut errors, mut ignored) = (0, false);
    for line in said.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("pg_restore: error: ")
            && line.ends_with("unrecognized configuration parameter \"transaction_timeout\"")
        {
            errors += 1;
        } else if line == "Command was: SET transaction_timeout = 0;" {
        } else if let Some(n) =
            line.strip_prefix("pg_restore: warning: errors ignored on restore: ")
        {
            ignored = n.parse::<usize>().is_ok_and(|n| n >= 1);
        } else {
            return false;
        }
    }
    said.len() < 8 * 1024 && errors > 0 && ignored
}

/// Streams a stored object, verified on the way, into a child's stdin and
/// waits for the child; returns its stderr. If the object cannot be read
/// the child is killed before it sees the end of its input, so it never
/// commits a truncated restore.
///
/// A child may stop reading before the end and still succeed: pg_restore
/// of a custom-format dump from a pipe exits once the entries it was asked
/// for (`--table`) are done. Its status decides then, and the rest of the
/// object is still read and checked against its digest, and discarded.
async fn feed_child(
    storage: &Arc<dyn Storage>,
    rec: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
    mut cmd: std::process::Command,
    what: &str,
    progress: crate::progress::Progress,
) -> Result<String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::source(format!("cannot start {what}: {e}")))?;
    let tail = StderrTail::spawn(child.stderr.take().expect("piped"), STDERR_TAIL);
    let stdin = child.stdin.take().expect("piped");
    let child = Arc::new(std::sync::Mutex::new(child));
    let input = ChildInput {
        stdin: Some(stdin),
        child: child.clone(),
        finished: None,
    };
    let input = match fetch(storage, rec, identities, input, progress).await {
        Ok(input) => input,
        Err(e) => {
            kill_child(&mut child.lock().expect("child lock"));
            let stderr = tail.finish();
            if e.kind == Kind::Failed && !stderr.is_empty() {
                // The child stopped reading: its own error explains why.
                return Err(Error::source(format!("{what} failed: {stderr}")));
            }
            return Err(e);
        }
    };
    let status = match input.finished {
        Some(status) => status,
        None => {
            drop(input.stdin); // end of input
            tokio::task::spawn_blocking(move || child.lock().expect("child lock").wait())
                .await
                .expect("wait task")?
        }
    };
    let stderr = tail.finish();
    if !status.success() {
        return Err(Error::source(format!("{what} failed ({status}): {stderr}")));
    }
    Ok(stderr)
}

/// A child's stdin as the sink of a verified fetch. When the child closes
/// its end early, its exit status is taken: a failure stops the fetch (the
/// child's error is reported), a success lets the rest of the object be
/// read, verified and discarded.
struct ChildInput {
    stdin: Option<std::process::ChildStdin>,
    child: Arc<std::sync::Mutex<Child>>,
    /// The child's status, once it stopped reading early and exited.
    finished: Option<std::process::ExitStatus>,
}

impl std::io::Write for ChildInput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(buf.len()); // the child is done: verify, discard
        };
        match stdin.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed_early()?;
                Ok(buf.len())
            }
            r => r,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut().map(std::io::Write::flush) {
            Some(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed_early(),
            Some(r) => r,
            None => Ok(()),
        }
    }
}

impl ChildInput {
    /// The child closed its stdin: it is done (or dying); its status
    /// decides whether the rest of the input is still wanted.
    fn closed_early(&mut self) -> std::io::Result<()> {
        self.stdin = None;
        let status = self.child.lock().expect("child lock").wait()?;
        if !status.success() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("the child stopped reading and exited ({status})"),
            ));
        }
        self.finished = Some(status);
        Ok(())
    }
}

/// Runs the saved roles/tablespaces script through psql. Objects that
/// already exist (the restoring user's own role, at least) are expected;
/// other errors come back as warnings, since the data restore may still
/// be what the operator needs.
async fn apply_globals(
    storage: &Arc<dyn Storage>,
    rec: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
    target: &Target,
    bin_dir: Option<&std::path::Path>,
    major: u32,
) -> Result<Vec<String>> {
    let psql = find_binary(bin_dir, "psql", major)?;
    let mut cmd = target.command(&psql);
    cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0"])
        .arg(format!("--dbname={}", target.child_url()));
    let progress = crate::progress::Progress::hidden();
    let stderr = feed_child(
        storage,
        rec,
        identities,
        cmd,
        "applying roles (psql)",
        progress,
    )
    .await?;
    Ok(stderr
        .lines()
        .filter(|l| l.contains("ERROR") && !l.contains("already exists"))
        .map(|l| format!("roles: {l}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 item 8: `role "…" does not exist` came with no hint.
    /// Issue 16 item 3: pg_restore 17+ into a server before 17.
    #[test]
    fn only_the_transaction_timeout_error_is_forgiven() {
        let tt = "pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter \"transaction_timeout\"\nCommand was: SET transaction_timeout = 0;\n";
        let one = format!(
            "pg_restore failed (exit status: 1): {tt}pg_restore: warning: errors ignored on restore: 1\n"
        );
        assert!(only_transaction_timeout_errors(&one));
        // --jobs: one per connection, counted by the leader only
        let jobs = format!(
            "pg_restore failed: {tt}{tt}{tt}pg_restore: warning: errors ignored on restore: 2"
        );
        assert!(only_transaction_timeout_errors(&jobs));
        let other = format!(
            "{tt}pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\npg_restore: warning: errors ignored on restore: 2"
        );
        assert!(!only_transaction_timeout_errors(&other));
        // not done (no closing count), or nothing but the count
        assert!(!only_transaction_timeout_errors(tt));
        assert!(!only_transaction_timeout_errors(
            "pg_restore: warning: errors ignored on restore: 1"
        ));
        // long enough to have been cut: an earlier error could be gone
        let long = format!(
            "{}pg_restore: warning: errors ignored on restore: 1",
            tt.repeat(80)
        );
        assert!(!only_transaction_timeout_errors(&long));
    }

    #[test]
    fn a_missing_role_hints_globals() {
        let e = Error::source(
            "pg_restore failed (exit status: 1): pg_restore: error: could not execute query: ERROR:  role \"app_owner\" does not exist",
        );
        let h = hint_missing_roles(e, false, false).hint.unwrap();
        assert!(h.contains("--globals") && h.contains("--no-owner"), "{h}");
        let other = hint_missing_roles(Error::source("pg_restore failed: disk full"), false, false);
        assert!(other.hint.is_none());
    }
}

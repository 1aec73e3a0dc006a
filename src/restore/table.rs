//! One table (or schema, or the whole database) of a PostgreSQL source
//! back from a point in time (`strata restore SOURCE --to-time T --table
//! NAME… --to-database DB`). With a base backup that reaches T, the
//! cluster is recovered to T in a sandbox (as a drill does: base backup
//! and WAL, a throwaway server on a free loopback port), the table's
//! definition and data are piped from it with `pg_dump` into `pg_restore`
//! on the target database, and the sandbox is removed; without one, the
//! newest dump taken at or before T is restored (tables only). An
//! existing table in the target is refused unless `replace` (then
//! pg_restore drops it first).

use std::process::Stdio;

use super::plan::{Method, Plan};
use super::recover::{self, Serve};
use super::sandbox::Sandbox;
use crate::catalog::BackupId;
use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::sources::postgres::{Target, dump, find_binary, pitr};
use crate::util::StderrTail;

/// What to restore, where, and how.
pub struct Options {
    pub to_database: String,
    /// Create the target database when it does not exist.
    pub create: bool,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    /// Have pg_restore drop what exists first.
    pub replace: bool,
    pub no_owner: bool,
    /// Where the sandbox cluster goes [default: $TMPDIR].
    pub scratch_dir: Option<std::path::PathBuf>,
    /// OS user owning the sandbox cluster (root only).
    pub owner: Option<String>,
}

/// Restores what `a` names from `plan` (a point-in-time plan of a
/// PostgreSQL source) into `target_db`; says how: `base+wal` (recovered to
/// exactly the plan's time) or `dump`, and how far before that time the
/// data is.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    repo: &crate::catalog::Repository,
    src: &crate::config::Source,
    plan: &Plan,
    identities: std::sync::Arc<Vec<crate::keys::Identity>>,
    target: &Target,
    target_db: &Target,
    a: &Options,
    restore_command: &(dyn Fn(&str) -> Result<String> + Send + Sync),
    reporter: &Reporter,
) -> Result<(&'static str, f64)> {
    let what = describe(&a.tables, &a.schemas);
    let at = plan.at;
    let (method, skew) = match plan.method {
        Method::BaseWal => {
            reporter.note(format!(
                "recovering {} to {} in a sandbox (base backup {} and WAL) to take {what} from it",
                src.name,
                at.to_rfc3339(),
                plan.backup_id()
            ));
            from_sandbox(
                restore_command,
                src,
                plan,
                repo,
                identities,
                target_db,
                a,
                reporter,
            )
            .await?;
            ("base+wal", 0.0)
        }
        _ => {
            // no base backup reaches T: the newest dump before it
            reporter.note(format!(
                "no base backup reaches {}: {what} comes from dump {}, taken {:.0} s before",
                at.to_rfc3339(),
                plan.backup_id(),
                plan.skew_seconds()
            ));
            if !a.schemas.is_empty() {
                return Err(Error::usage(
                    "--schema from a dump: restore the dump into a new database (--to-database NEW --create --at T) and copy the schema from there",
                ));
            }
            let opts = dump::RestoreOptions {
                to_database: a.to_database.clone(),
                create: false,
                tables: a.tables.clone(),
                jobs: 1,
                target: target.clone(),
                globals: false,
                no_owner: a.no_owner,
                scratch_dir: std::env::temp_dir(),
                bin_dir: src.bin_dir.clone(),
            };
            dump::restore(repo.storage(), &plan.entry, identities, &opts, reporter).await?;
            ("dump", plan.skew_seconds())
        }
    };
    Ok((method, skew))
}

/// What a table restore takes, in words ("table a, schema s", or "the
/// database").
pub fn describe(tables: &[String], schemas: &[String]) -> String {
    if tables.is_empty() && schemas.is_empty() {
        return "the database".into();
    }
    let mut parts: Vec<String> = tables.iter().map(|t| format!("table {t}")).collect();
    parts.extend(schemas.iter().map(|s| format!("schema {s}")));
    parts.join(", ")
}

/// The target database exists (or `--create`), and what is restored is
/// not there yet (unless `--replace`).
pub async fn check_target(target: &Target, target_db: &Target, a: &Options) -> Result<()> {
    let client = target.connect().await?;
    if !dump::check_database(&client, target, &a.to_database, a.create).await? {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                crate::sources::postgres::quote_ident(&a.to_database)
            ))
            .await
            .map_err(|e| Error::source(crate::sources::postgres::pg_error_text(&e)))?;
        return Ok(());
    }
    if a.replace {
        return Ok(());
    }
    // tables: they must be absent; the whole database: it must be empty
    if !a.tables.is_empty() || a.schemas.is_empty() {
        dump::check_target_empty(target_db, &a.to_database, &a.tables).await?;
    }
    if !a.schemas.is_empty() {
        let db = target_db.connect().await?;
        for s in &a.schemas {
            let there = db
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[s])
                .await
                .map_err(|e| Error::source(crate::sources::postgres::pg_error_text(&e)))?
                .is_some();
            if there {
                return Err(Error::conflict(format!(
                    "schema {s} already exists in database {}; refusing to overwrite it",
                    a.to_database
                ))
                .hint("rename or drop it first, restore into another database, or pass --replace to have pg_restore drop and recreate what the dump holds"));
            }
        }
    }
    Ok(())
}

/// Recovers the cluster to the plan's time in a sandbox, pipes the
/// selected tables from it into the target, removes the sandbox.
#[allow(clippy::too_many_arguments)]
async fn from_sandbox(
    restore_command: &(dyn Fn(&str) -> Result<String> + Send + Sync),
    src: &crate::config::Source,
    plan: &Plan,
    repo: &crate::catalog::Repository,
    identities: std::sync::Arc<Vec<crate::keys::Identity>>,
    target_db: &Target,
    a: &Options,
    reporter: &Reporter,
) -> Result<()> {
    let owner = a.owner.clone();
    let work_dir = a.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let sb = Sandbox::create(&work_dir, &BackupId::new(chrono::Utc::now()).to_string())?;
    let result = async {
        let port = crate::util::free_port()?;
        let ctx = recover::Context {
            repo,
            identities,
            restore_command: restore_command(&src.name)?,
            owner,
            reporter,
        };
        let rec = recover::recover(
            &ctx,
            plan,
            &sb.dir(&src.name),
            Some(&Serve { sandbox: &sb, port }),
        )
        .await?;
        let from = rec
            .pg
            .as_ref()
            .expect("a served base restore has a server")
            .with_database(&Target::new(&src.url).database());
        let major = pitr::backup_major(plan.base.as_ref().expect("a base plan has its backup"));
        pipe_tables(&from, target_db, src.bin_dir.as_deref(), major, a).await
    }
    .await;
    sb.teardown();
    result
}

/// `pg_dump -Fc --table … | pg_restore --dbname TARGET`.
async fn pipe_tables(
    from: &Target,
    to: &Target,
    bin_dir: Option<&std::path::Path>,
    major: u32,
    a: &Options,
) -> Result<()> {
    let pg_dump = find_binary(bin_dir, "pg_dump", major)?;
    let pg_restore = find_binary(bin_dir, "pg_restore", major)?;
    let mut dump_cmd = from.command(&pg_dump);
    dump_cmd
        .args(["--format=custom", "--no-password"])
        .arg(format!("--dbname={}", from.child_url()));
    for t in &a.tables {
        dump_cmd.arg(format!("--table={t}"));
    }
    for s in &a.schemas {
        dump_cmd.arg(format!("--schema={s}"));
    }
    dump_cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut dumper = dump_cmd
        .spawn()
        .map_err(|e| Error::source(format!("cannot start pg_dump: {e}")))?;
    let dump_err = StderrTail::spawn(dumper.stderr.take().expect("piped"), 64 * 1024);
    // pg_restore 17+ into a server before 17 (issue 16 item 3)
    let lenient = dump::restore_is_lenient(&pg_restore, major);
    let mut restore_cmd = to.command(&pg_restore);
    restore_cmd
        .arg("--no-password")
        .arg(format!("--dbname={}", to.child_url()));
    if !lenient {
        restore_cmd.arg("--exit-on-error");
    }
    if a.no_owner {
        restore_cmd.arg("--no-owner");
    }
    if a.replace {
        restore_cmd.args(["--clean", "--if-exists"]);
    }
    restore_cmd
        .stdin(Stdio::from(dumper.stdout.take().expect("piped")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut restorer = restore_cmd
        .spawn()
        .map_err(|e| Error::source(format!("cannot start pg_restore: {e}")))?;
    let restore_err = StderrTail::spawn(restorer.stderr.take().expect("piped"), 64 * 1024);
    let (ds, rs) = tokio::task::spawn_blocking(move || (dumper.wait(), restorer.wait()))
        .await
        .expect("wait task");
    let (ds, rs) = (ds?, rs?);
    let (dump_err, restore_err) = (dump_err.finish(), restore_err.finish());
    if !ds.success() {
        return Err(Error::source(format!(
            "pg_dump of the recovered copy failed ({ds}): {dump_err}"
        ))
        .hint("check the table and schema names: they are looked up in the copy as of the time asked for"));
    }
    let forgiven = lenient && dump::only_transaction_timeout_errors(&restore_err);
    if !rs.success() && !forgiven {
        return Err(Error::source(format!(
            "pg_restore into the target failed ({rs}): {restore_err}"
        )));
    }
    if dump_err.contains("no matching") {
        return Err(Error::usage(format!(
            "nothing matched in the recovered copy: {dump_err}"
        )));
    }
    Ok(())
}

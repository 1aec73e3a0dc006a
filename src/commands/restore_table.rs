//! `strata restore SOURCE --to-time T [--table NAME… | --schema S…]
//! --to-database DB`: one table (or schema, or the whole database) back
//! from a point in time, when no dump is recent enough. The cluster is recovered to T in a
//! sandbox (as a drill does: base backup and WAL, a throwaway server on a
//! free loopback port), the table's definition and data are piped from it
//! with `pg_dump` into `pg_restore` on the target database, and the
//! sandbox is removed. An existing table in the target is refused unless
//! `--replace` (then pg_restore drops it first). Without a base backup
//! that reaches T, the newest dump taken at or before T is used, and its
//! distance from T is said.

use std::path::PathBuf;
use std::process::Stdio;

use url::Url;

use super::Globals;
use crate::catalog::BackupId;
use crate::config::SourceKind;
use crate::drill::sandbox::Sandbox;
use crate::error::{Error, Result};
use crate::progress::{Mode, Reporter};
use crate::restore::plan::{Method, Plan, Point};
use crate::restore::recover::{self, Serve};
use crate::sources::postgres::{Target, base, dump, find_binary};
use crate::util::StderrTail;

#[derive(Debug, Clone)]
pub struct TableAtArgs {
    pub source: String,
    pub to_time: String,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    pub to_database: String,
    pub create: bool,
    pub target_url: Option<String>,
    pub replace: bool,
    pub no_owner: bool,
    /// Where the sandbox cluster goes [default: $TMPDIR].
    pub scratch_dir: Option<PathBuf>,
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    source: String,
    /// The instant the table was taken from.
    at: chrono::DateTime<chrono::Utc>,
    /// `base+wal` (recovered to exactly `at`) or `dump` (the newest dump
    /// taken at or before it).
    method: &'static str,
    backup: String,
    /// How far before `at` the data is (0 for base+wal).
    skew_seconds: f64,
    tables: Vec<String>,
    schemas: Vec<String>,
    database: String,
    target: String,
    duration_seconds: f64,
}

pub async fn run(g: &Globals, a: &TableAtArgs) -> Result<u8> {
    let clock = std::time::Instant::now();
    let cfg = g.config()?;
    let src = cfg.source(&a.source)?;
    if src.kind != SourceKind::Postgres {
        return Err(Error::usage(format!(
            "--table/--schema with --to-time restores PostgreSQL tables; {} is a {} source",
            src.name,
            src.kind.as_str()
        )));
    }
    let now = chrono::Utc::now();
    let at = crate::timeparse::parse_time(&a.to_time, now)
        .map_err(|e| Error::usage(format!("--to-time: {e}")))?;
    if at > now {
        return Err(Error::usage(format!(
            "--to-time {}: that is in the future",
            at.to_rfc3339()
        )));
    }
    let identities = g.identities(&cfg)?;
    let target = match &a.target_url {
        Some(u) => {
            let url =
                Url::parse(u).map_err(|e| Error::usage(format!("--target-url: not a URL: {e}")))?;
            Target::new(&url)
        }
        None => Target::new(&src.url),
    };
    let target_db = target.with_database(&a.to_database);
    // the target first: a refusal here costs nothing
    check_target(&target, &target_db, a).await?;

    let repo = super::open_repository(&cfg).await?;
    let plan = crate::restore::plan::plan(&repo, src, Point::Time(at), &identities, now).await?;
    let reporter = Reporter::new(Mode::detect(a.json));
    let what = describe(&a.tables, &a.schemas);
    let (method, skew) = match plan.method {
        Method::BaseWal => {
            reporter.note(format!(
                "recovering {} to {} in a sandbox (base backup {} and WAL) to take {what} from it",
                src.name,
                at.to_rfc3339(),
                plan.backup_id()
            ));
            from_sandbox(
                g, &cfg, src, &plan, &repo, identities, &target_db, a, &reporter,
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
            dump::restore(repo.storage(), &plan.entry, identities, &opts, &reporter).await?;
            ("dump", plan.skew_seconds())
        }
    };
    let report = Report {
        source: src.name.clone(),
        at,
        method,
        backup: plan.backup_id(),
        skew_seconds: skew,
        tables: a.tables.clone(),
        schemas: a.schemas.clone(),
        database: a.to_database.clone(),
        target: target.display(),
        duration_seconds: clock.elapsed().as_secs_f64(),
    };
    if a.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {what} of {} as of {} ({}, {}) into database {} on {} in {:.1}s",
            report.source,
            report.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            report.backup,
            if method == "dump" {
                format!("dump taken {:.0} s before", skew)
            } else {
                "recovered to that instant".to_string()
            },
            report.database,
            report.target,
            report.duration_seconds
        );
    }
    Ok(0)
}

fn describe(tables: &[String], schemas: &[String]) -> String {
    if tables.is_empty() && schemas.is_empty() {
        return "the database".into();
    }
    let mut parts: Vec<String> = tables.iter().map(|t| format!("table {t}")).collect();
    parts.extend(schemas.iter().map(|s| format!("schema {s}")));
    parts.join(", ")
}

/// The target database exists (or `--create`), and what is restored is
/// not there yet (unless `--replace`).
async fn check_target(target: &Target, target_db: &Target, a: &TableAtArgs) -> Result<()> {
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
    g: &Globals,
    cfg: &crate::config::Config,
    src: &crate::config::Source,
    plan: &Plan,
    repo: &crate::catalog::Repository,
    identities: std::sync::Arc<Vec<crate::keys::Identity>>,
    target_db: &Target,
    a: &TableAtArgs,
    reporter: &Reporter,
) -> Result<()> {
    let owner = super::server_owner(None)?;
    let work_dir = a.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let sb = Sandbox::create(&work_dir, &BackupId::new(chrono::Utc::now()).to_string())?;
    let result = async {
        let port = crate::util::free_port()?;
        let ctx = recover::Context {
            repo,
            identities,
            restore_command: super::restore::restore_command(g, &cfg.path, &src.name)?,
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
        let major = base::backup_major(plan.base.as_ref().expect("a base plan has its backup"));
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
    a: &TableAtArgs,
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
    let mut restore_cmd = to.command(&pg_restore);
    restore_cmd
        .args(["--no-password", "--exit-on-error"])
        .arg(format!("--dbname={}", to.child_url()));
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
    if !rs.success() {
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

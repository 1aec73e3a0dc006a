//! `strata restore`'s flags, and the one place that decides from them which
//! restore is meant: [`RestoreArgs::request`] turns the flags clap parsed
//! into a [`RestoreRequest`], one variant per restore mode, refusing the
//! combinations clap's declarations cannot express (usage errors, exit 2).
//! It is pure (no I/O, no clock), so every mode and every refusal is
//! unit-tested below through the real clap parser.

use std::path::PathBuf;

use clap::Args;

use crate::commands::{restore, restore_all, restore_table};
use crate::error::{Error, Result};

// The flags of `strata restore` (its help text, groups and examples are on
// `Command::Restore` in cli/mod.rs). Which of them go together is declared
// here for clap; what clap cannot say is checked in `request`.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// Source name, as in [sources.NAME] (not with --all)
    #[arg(
        required_unless_present = "all",
        default_value = "",
        hide_default_value = true
    )]
    pub source: String,
    /// Every configured source to one point: --to-time T (or --latest) into
    /// --target-dir DIR/<source>, or without it into each source's
    /// configured restore_to; prints each source's skew from T
    #[arg(long, conflicts_with_all = [
        "start", "to_lsn", "to_name", "to_xid", "into", "to_file", "to_dir", "to_database",
        // flags --all would otherwise ignore
        "backup", "collections", "tables", "schemas", "create", "globals", "no_owner",
        "target_url", "jobs", "scratch_dir", "at", "delta", "timeline",
    ])]
    pub all: bool,
    /// Backup id, or `latest`
    #[arg(long, default_value = "latest", value_name = "ID|latest")]
    pub backup: String,
    /// Database to restore into
    #[arg(long, value_name = "NAME", required_unless_present_any = ["target_dir", "to_file", "to_dir", "into", "all"])]
    pub to_database: Option<String>,
    /// Point-in-time recovery: unpack the base backup into this (empty) data directory
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "to_database",
        group = "restore_output"
    )]
    pub target_dir: Option<PathBuf>,
    /// Redis: write the snapshot's RDB file here (verified, never half-written)
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "to_database",
        group = "restore_output"
    )]
    pub to_file: Option<PathBuf>,
    /// Redis: write DIR/dump.rdb (with --start, also run redis-server on it)
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "to_database",
        group = "restore_output"
    )]
    pub to_dir: Option<PathBuf>,
    /// The state at this time (RFC 3339, `YYYY-MM-DD HH:MM:SS[+TZ]` (UTC if no zone), `15 minutes ago`, `-15m`):
    /// with --target-dir, point-in-time recovery; with --to-database, the database
    /// (or its --table/--schema) recovered to T in a sandbox; for snapshots, as --at
    // hyphen values: `-15m` is a time, not a flag (issue 13 item 10)
    #[arg(
        long,
        value_name = "TIME",
        group = "pitr_target",
        allow_hyphen_values = true
    )]
    pub to_time: Option<String>,
    /// Recover up to this WAL location (e.g. 0/3000060)
    #[arg(
        long,
        value_name = "LSN",
        requires = "pitr_dest",
        group = "pitr_target"
    )]
    pub to_lsn: Option<String>,
    /// Recover up to this restore point (`strata backup --kind point`, or pg_create_restore_point with --unrecorded-name)
    #[arg(
        long,
        value_name = "NAME",
        requires = "pitr_dest",
        group = "pitr_target"
    )]
    pub to_name: Option<String>,
    /// --to-name names a point strata did not record (made by hand with
    /// pg_create_restore_point): replay the archive looking for it
    #[arg(long, requires = "to_name")]
    pub unrecorded_name: bool,
    /// Recover up to and including this transaction's commit (recovery_target_xid)
    #[arg(
        long,
        value_name = "XID",
        requires = "target_dir",
        group = "pitr_target"
    )]
    pub to_xid: Option<String>,
    /// Recover everything archived
    #[arg(long, requires = "pitr_dest", group = "pitr_target")]
    pub latest: bool,
    /// recovery_target_timeline
    #[arg(
        long,
        default_value = "latest",
        value_name = "TLI|latest",
        requires = "target_dir"
    )]
    pub timeline: String,
    /// Start the restored server and wait until it has recovered and promoted
    /// (Redis, with --to-dir: until it has loaded the snapshot)
    #[arg(long, requires = "restore_output")]
    pub start: bool,
    /// Port for --start (it listens on 127.0.0.1 only)
    #[arg(long, default_value_t = 5433, value_name = "N", requires = "start")]
    pub port: u16,
    /// OS user that owns the data directory and runs the server, when strata runs as root
    #[arg(long, value_name = "USER", requires = "pitr_dest")]
    pub run_as: Option<String>,
    /// Delete what --target-dir holds first (Redis: replace an existing dump file)
    #[arg(long, requires = "restore_output")]
    pub force: bool,
    /// Create the database (it must not exist)
    #[arg(long)]
    pub create: bool,
    /// Restore only this table (repeatable; `schema.table` or `table`)
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// With --to-time and --to-database: restore only this schema (repeatable)
    #[arg(long = "schema", value_name = "S", requires = "to_time")]
    pub schemas: Vec<String>,
    /// pg_restore parallel jobs; more than 1 needs scratch space for one plain copy of the dump
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: u32,
    /// Server to restore into [default: the source's server]
    #[arg(long, value_name = "URL")]
    pub target_url: Option<String>,
    /// Also restore roles and tablespaces (pg_dumpall --globals-only) first
    #[arg(long)]
    pub globals: bool,
    /// Do not restore object ownership
    #[arg(long)]
    pub no_owner: bool,
    /// Where --jobs > 1 keeps its temporary copy [default: $TMPDIR]
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Load into this running server: redis://… (it must be empty unless
    /// --replace) or a Chroma server's http://HOST:PORT
    #[arg(long, value_name = "URL", group = "restore_output")]
    pub into: Option<String>,
    /// With --into (or --all into configured servers): overwrite what the
    /// target holds (Redis keys, Chroma collections)
    #[arg(long)]
    pub replace: bool,
    /// Chroma: restore only this collection (repeatable)
    #[arg(long = "collection", value_name = "NAME")]
    pub collections: Vec<String>,
    /// The newest backup taken at or before this time (snapshots, dumps); with
    /// --target-dir the same as --to-time
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "pitr_target",
        allow_hyphen_values = true
    )]
    pub at: Option<String>,
    /// Redis --into: address strata serves the snapshot on, which the target
    /// connects to [default: 127.0.0.1:0 for a loopback target, else 0.0.0.0:0]
    #[arg(long, value_name = "ADDR", requires = "into")]
    pub listen: Option<String>,
    /// With --target-dir: rewrite only files whose checksum differs (keeps the rest)
    #[arg(long, requires = "target_dir", conflicts_with = "force")]
    pub delta: bool,
    /// With --target-dir: `off` (the default) keeps the restored copy from
    /// archiving (a copy to look at the past must not push a new timeline
    /// into the repository); `preserve` keeps the backup's setting: for a
    /// copy that becomes the new primary (--all: its copies never archive)
    #[arg(
        long,
        default_value = "off",
        value_name = "MODE",
        value_parser = ["preserve", "off"],
        requires = "target_dir",
        conflicts_with = "all"
    )]
    pub archive_mode: String,
}

/// What `strata restore` was asked to do: one variant per mode, each
/// carrying the arguments of the command function that carries it out.
// Built once per process and matched right away: the size of its largest
// variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RestoreRequest {
    /// `--to-database DB`: a logical (dump) backup into a database
    /// (`--backup ID`, or the newest taken at or before `--at T`).
    Logical(restore::Args),
    /// `--to-database DB --to-time T`: the database (or its `--table`s,
    /// `--schema`s) as it was at T, recovered in a sandbox.
    TableAt(restore_table::TableAtArgs),
    /// `--target-dir DIR`: a base backup and WAL into a data directory,
    /// point-in-time recovery to `--to-time` (or `--at`), `--to-lsn`,
    /// `--to-name`, `--to-xid` or `--latest`.
    Physical(restore::PhysicalArgs),
    /// `--to-file PATH` or `--to-dir DIR`: a Redis snapshot written as an
    /// RDB file (with `--start`, a redis-server run on it).
    Snapshot(restore::RedisArgs),
    /// `--into URL`: a Redis or Chroma snapshot loaded into a running server.
    Into(restore::IntoArgs),
    /// `--all`: every configured source to one point.
    All(restore_all::AllArgs),
}

impl RestoreArgs {
    /// Which restore the flags ask for. clap has already refused what its
    /// declarations on [`RestoreArgs`] forbid; this refuses the rest with
    /// usage errors (exit 2). `json` is carried into the request.
    pub fn request(self, json: bool) -> Result<RestoreRequest> {
        let a = self;
        if a.replace
            && !a.all
            && a.into.is_none()
            && (a.to_time.is_none() || a.to_database.is_none())
        {
            return Err(Error::usage(
                "--replace goes with --into URL (or --all, for sources restored into their configured servers)",
            ));
        }
        if a.all {
            if !a.source.is_empty() {
                let source = a.source;
                return Err(Error::usage(format!(
                    "--all restores every source; drop {source:?}, or drop --all to restore only it"
                )));
            }
            if a.force {
                return Err(Error::usage(
                    "restore --all never overwrites a directory: give an empty or new --target-dir (or empty the restore_to directories)",
                ));
            }
            if a.replace && a.target_dir.is_some() {
                return Err(Error::usage(
                    "--replace is for sources loaded into their configured servers (restore_to); with --target-dir everything goes into new directories",
                ));
            }
            return Ok(RestoreRequest::All(restore_all::AllArgs {
                to_time: a.to_time,
                latest: a.latest,
                target_dir: a.target_dir,
                replace: a.replace,
                run_as: a.run_as,
                json,
            }));
        }
        if let Some(into) = a.into {
            return Ok(RestoreRequest::Into(restore::IntoArgs {
                source: a.source,
                backup: a.backup,
                // one spelling for every kind: --to-time means --at here
                at: a.at.or(a.to_time),
                into,
                replace: a.replace,
                collections: a.collections,
                listen: a.listen,
                json,
            }));
        }
        if a.to_file.is_some() || a.to_dir.is_some() {
            return Ok(RestoreRequest::Snapshot(restore::RedisArgs {
                source: a.source,
                backup: a.backup,
                at: a.at.or(a.to_time),
                to_file: a.to_file,
                to_dir: a.to_dir,
                start: a.start,
                port: a.port,
                force: a.force,
                json,
            }));
        }
        if let Some(target_dir) = a.target_dir {
            return Ok(RestoreRequest::Physical(restore::PhysicalArgs {
                source: a.source,
                backup: a.backup,
                target_dir,
                // one spelling for every kind: --at means --to-time here
                to_time: a.to_time.or(a.at),
                to_lsn: a.to_lsn,
                to_name: a.to_name,
                unrecorded_name: a.unrecorded_name,
                to_xid: a.to_xid,
                latest: a.latest,
                timeline: a.timeline,
                start: a.start,
                port: a.port,
                run_as: a.run_as,
                force: a.force,
                delta: a.delta,
                archive_off: a.archive_mode == "off",
                json,
            }));
        }
        let to_database = a
            .to_database
            .expect("clap requires --to-database without --target-dir");
        let Some(to_time) = a.to_time else {
            return Ok(RestoreRequest::Logical(restore::Args {
                source: a.source,
                backup: a.backup,
                at: a.at,
                to_database,
                create: a.create,
                tables: a.tables,
                jobs: a.jobs,
                target_url: a.target_url,
                globals: a.globals,
                no_owner: a.no_owner,
                scratch_dir: a.scratch_dir,
                json,
            }));
        };
        if a.backup != "latest" || a.jobs != 1 || a.globals {
            return Err(Error::usage(
                "--to-time with --to-database recovers the cluster to that time in a sandbox: --backup, --jobs and --globals do not apply",
            ));
        }
        Ok(RestoreRequest::TableAt(restore_table::TableAtArgs {
            source: a.source,
            to_time,
            tables: a.tables,
            schemas: a.schemas,
            to_database,
            create: a.create,
            target_url: a.target_url,
            replace: a.replace,
            no_owner: a.no_owner,
            scratch_dir: a.scratch_dir,
            json,
        }))
    }
}

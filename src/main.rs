//! The `strata` binary: parse arguments, dispatch to the library's
//! commands, map the outcome to an exit code (documented in docs/cli.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::commands::{self, Globals};
use strata::error::Error;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Backup and point-in-time recovery for PostgreSQL, Redis and vector stores"
)]
struct Cli {
    /// Configuration file [default: $STRATA_CONFIG, else ./strata.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// age identity file to decrypt with (overrides [encryption] identity_file and $STRATA_IDENTITY_FILE)
    #[arg(long, global = true, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Print results as JSON on stdout (errors too)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process and matched right away: the size of its
// largest variant (restore's many flags) costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create the repository named by [repository] url
    Init {
        /// Local repository, as root: give it to this OS user (e.g. postgres, whose
        /// archive_command writes WAL into it); root-run commands keep that owner
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
    },
    /// Manage age keys
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Back up a source now, or every source of a tier
    Backup {
        /// Source name, as in [sources.NAME] [default with --tier: every source of the tier]
        source: Option<String>,
        /// Tier to record the backup under, as in [tiers.NAME]
        #[arg(long, value_name = "NAME")]
        tier: Option<String>,
        /// dump (logical, pg_dump), base (physical, pg_basebackup; needs WAL archiving)
        /// or point (a named restore point, --label; needs WAL archiving)
        /// [default: the tier's kind, else dump]
        #[arg(long, value_name = "KIND", value_parser = ["dump", "base", "point"])]
        kind: Option<String>,
        /// --kind point: the restore point's name (restore it with --to-name)
        #[arg(long, value_name = "NAME")]
        label: Option<String>,
    },
    /// List backups, newest first
    List {
        /// Only this source's backups
        source: Option<String>,
    },
    /// Restore a logical backup into a database, or a base backup and WAL
    /// into a data directory (point-in-time recovery, with --target-dir),
    /// or a Redis snapshot (--to-file, --to-dir)
    #[command(
        group(clap::ArgGroup::new("pitr_dest").args(["target_dir", "all"]).multiple(true)),
        after_help = "During an incident (docs/cli.md, \"During an incident\"):\n  \
            the whole cluster at a time, beside production:\n    \
            strata restore main --target-dir /srv/pg-at-0915 --to-time '2026-12-06 09:15:00' --start --port 5440\n  \
            one table back from a time (recovered in a sandbox, refused if it exists unless --replace):\n    \
            strata restore main --to-time '10 minutes ago' --table public.orders --to-database app\n  \
            every source to one time (rerunnable after a partial failure):\n    \
            strata restore --all --to-time '2026-12-06 09:15:00' --target-dir /srv/restore-0915"
    )]
    Restore {
        /// Source name, as in [sources.NAME] (not with --all)
        #[arg(
            required_unless_present = "all",
            default_value = "",
            hide_default_value = true
        )]
        source: String,
        /// Every configured source to one point: --to-time T (or --latest) into
        /// --target-dir DIR/<source>, or without it into each source's
        /// configured restore_to; prints each source's skew from T
        #[arg(long, conflicts_with_all = [
            "start", "to_lsn", "to_name", "to_xid", "into", "to_file", "to_dir", "to_database",
            // flags --all would otherwise ignore
            "backup", "collections", "tables", "schemas", "create", "globals", "no_owner",
            "target_url", "jobs", "scratch_dir", "at", "delta", "timeline",
        ])]
        all: bool,
        /// Backup id, or `latest`
        #[arg(long, default_value = "latest", value_name = "ID|latest")]
        backup: String,
        /// Database to restore into
        #[arg(long, value_name = "NAME", required_unless_present_any = ["target_dir", "to_file", "to_dir", "into", "all"])]
        to_database: Option<String>,
        /// Point-in-time recovery: unpack the base backup into this (empty) data directory
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "to_database",
            group = "restore_output"
        )]
        target_dir: Option<PathBuf>,
        /// Redis: write the snapshot's RDB file here (verified, never half-written)
        #[arg(
            long,
            value_name = "PATH",
            conflicts_with = "to_database",
            group = "restore_output"
        )]
        to_file: Option<PathBuf>,
        /// Redis: write DIR/dump.rdb (with --start, also run redis-server on it)
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "to_database",
            group = "restore_output"
        )]
        to_dir: Option<PathBuf>,
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
        to_time: Option<String>,
        /// Recover up to this WAL location (e.g. 0/3000060)
        #[arg(
            long,
            value_name = "LSN",
            requires = "pitr_dest",
            group = "pitr_target"
        )]
        to_lsn: Option<String>,
        /// Recover up to this restore point (`strata backup --kind point`, or pg_create_restore_point with --unrecorded-name)
        #[arg(
            long,
            value_name = "NAME",
            requires = "pitr_dest",
            group = "pitr_target"
        )]
        to_name: Option<String>,
        /// --to-name names a point strata did not record (made by hand with
        /// pg_create_restore_point): replay the archive looking for it
        #[arg(long, requires = "to_name")]
        unrecorded_name: bool,
        /// Recover up to and including this transaction's commit (recovery_target_xid)
        #[arg(
            long,
            value_name = "XID",
            requires = "target_dir",
            group = "pitr_target"
        )]
        to_xid: Option<String>,
        /// Recover everything archived
        #[arg(long, requires = "pitr_dest", group = "pitr_target")]
        latest: bool,
        /// recovery_target_timeline
        #[arg(
            long,
            default_value = "latest",
            value_name = "TLI|latest",
            requires = "target_dir"
        )]
        timeline: String,
        /// Start the restored server and wait until it has recovered and promoted
        /// (Redis, with --to-dir: until it has loaded the snapshot)
        #[arg(long, requires = "restore_output")]
        start: bool,
        /// Port for --start (it listens on 127.0.0.1 only)
        #[arg(long, default_value_t = 5433, value_name = "N", requires = "start")]
        port: u16,
        /// OS user that owns the data directory and runs the server, when strata runs as root
        #[arg(long, value_name = "USER", requires = "pitr_dest")]
        run_as: Option<String>,
        /// Delete what --target-dir holds first (Redis: replace an existing dump file)
        #[arg(long, requires = "restore_output")]
        force: bool,
        /// Create the database (it must not exist)
        #[arg(long)]
        create: bool,
        /// Restore only this table (repeatable; `schema.table` or `table`)
        #[arg(long = "table", value_name = "T")]
        tables: Vec<String>,
        /// With --to-time and --to-database: restore only this schema (repeatable)
        #[arg(long = "schema", value_name = "S", requires = "to_time")]
        schemas: Vec<String>,
        /// pg_restore parallel jobs; more than 1 needs scratch space for one plain copy of the dump
        #[arg(long, default_value_t = 1, value_name = "N")]
        jobs: u32,
        /// Server to restore into [default: the source's server]
        #[arg(long, value_name = "URL")]
        target_url: Option<String>,
        /// Also restore roles and tablespaces (pg_dumpall --globals-only) first
        #[arg(long)]
        globals: bool,
        /// Do not restore object ownership
        #[arg(long)]
        no_owner: bool,
        /// Where --jobs > 1 keeps its temporary copy [default: $TMPDIR]
        #[arg(long, value_name = "DIR")]
        scratch_dir: Option<PathBuf>,
        /// Load into this running server: redis://… (it must be empty unless
        /// --replace) or a Chroma server's http://HOST:PORT
        #[arg(long, value_name = "URL", group = "restore_output")]
        into: Option<String>,
        /// With --into (or --all into configured servers): overwrite what the
        /// target holds (Redis keys, Chroma collections)
        #[arg(long)]
        replace: bool,
        /// Chroma: restore only this collection (repeatable)
        #[arg(long = "collection", value_name = "NAME")]
        collections: Vec<String>,
        /// The newest backup taken at or before this time (snapshots, dumps); with
        /// --target-dir the same as --to-time
        #[arg(
            long,
            value_name = "TIME",
            conflicts_with = "pitr_target",
            allow_hyphen_values = true
        )]
        at: Option<String>,
        /// Redis --into: address strata serves the snapshot on, which the target
        /// connects to [default: 127.0.0.1:0 for a loopback target, else 0.0.0.0:0]
        #[arg(long, value_name = "ADDR", requires = "into")]
        listen: Option<String>,
        /// With --target-dir: rewrite only files whose checksum differs (keeps the rest)
        #[arg(long, requires = "target_dir", conflicts_with = "force")]
        delta: bool,
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
        archive_mode: String,
    },
    /// Recovery drill: restore every source into a throwaway sandbox, check
    /// it, measure RTO and RPO, store the report (docs/drills.md)
    #[command(args_conflicts_with_subcommands = true)]
    Drill {
        #[command(subcommand)]
        action: Option<DrillAction>,
        /// Recover to this time (as for restore --to-time) [default: --latest]
        #[arg(
            long,
            value_name = "TIME",
            conflicts_with = "latest",
            allow_hyphen_values = true
        )]
        to_time: Option<String>,
        /// Recover everything there is; RPO is measured against now
        #[arg(long)]
        latest: bool,
        /// Only this source (repeatable) [default: every source, or the tier's]
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// The sources of this tier (of kind drill), recorded in the report
        #[arg(long, value_name = "NAME")]
        tier: Option<String>,
        /// Also write the report as DIR/<id>.json and DIR/<id>.html
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Plan only: which backups, which WAL, how many bytes, where each sandbox would run
        #[arg(long)]
        dry_run: bool,
        /// Where the sandbox directory is created [default: $TMPDIR]
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
    },
    /// Check that backups are intact
    Verify {
        /// Only this source's backups
        source: Option<String>,
        /// Download, decrypt and hash every object (needs the identity)
        #[arg(long)]
        read_data: bool,
    },
    /// Remove leftovers of backups that never completed
    Cleanup {
        /// Only leftovers older than this (e.g. 30m, 24h, 0)
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        older_than: String,
        /// Show what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply each tier's retention policy, then remove leftovers
    Prune {
        /// Show the plan, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Plan as of this time instead of now (RFC 3339, e.g. 2026-11-20T12:00:00Z)
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Let a real (not --dry-run) prune run with --at in the future:
        /// it deletes what is due only then, WAL inside today's window too
        #[arg(long)]
        allow_future_at: bool,
        /// Remove leftovers older than this (e.g. 30m, 24h, 0)
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        grace: String,
    },
    /// Remove stale repository locks (left by processes that died)
    Unlock {
        /// Remove every lock, live ones too (only when their holders are surely gone)
        #[arg(long)]
        force: bool,
    },
    /// Last backup of each source per tier, staleness, sizes, WAL lag
    Status {
        /// Exit 4 when a backup is stale or a source of a tier has none
        #[arg(long)]
        check: bool,
    },
    /// Write Prometheus metrics for node_exporter's textfile collector
    Metrics {
        /// File to write (atomically), e.g. /var/lib/node_exporter/textfile/strata.prom
        #[arg(long, value_name = "PATH")]
        textfile: PathBuf,
    },
    /// When the configured tiers run
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Archive and fetch PostgreSQL WAL (archive_command, restore_command)
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
}

#[derive(Subcommand)]
enum DrillAction {
    /// Past drills, oldest first (plain summaries; --id shows one whole report, needs the identity)
    History {
        /// Show this drill's whole report
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum WalAction {
    /// Archive one WAL file: archive_command = 'strata --config C wal push %p'
    Push {
        /// The file PostgreSQL names in %p
        path: PathBuf,
        /// Source the WAL belongs to [default: the only postgres source]
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Push through a background pusher with parallel uploads; exit 0
        /// once this file is durable (also: archive_async = true)
        #[arg(long = "async")]
        asynchronous: bool,
        /// --async: uploads in flight [default: archive_push_processes, 4]
        #[arg(long, value_name = "N")]
        processes: Option<u32>,
        /// --async: spool directory [default: archive_spool_path, else pg_wal/strata-push]
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// The background pusher of `wal push --async` (started by it)
    #[command(hide = true)]
    PushWorker {
        #[arg(long)]
        source: String,
        #[arg(long)]
        pg_wal: PathBuf,
        #[arg(long)]
        spool: PathBuf,
        #[arg(long, default_value_t = 4)]
        processes: u32,
        /// Seconds with nothing to push before it exits
        #[arg(long, default_value_t = 10)]
        idle_exit: u64,
    },
    /// The background prefetcher of `wal fetch` (started by it)
    #[command(hide = true)]
    PrefetchWorker {
        #[arg(long)]
        source: String,
        #[arg(long)]
        spool: PathBuf,
        #[arg(long)]
        shared_root: bool,
        #[arg(long, default_value_t = 4)]
        depth: u32,
        /// Seconds without a new request from PostgreSQL before it exits
        #[arg(long, default_value_t = 10)]
        idle_exit: u64,
    },
    /// Fetch one archived WAL file: restore_command = 'strata --config C wal fetch %f %p'.
    /// Exits 1, silently, when the file is not archived
    Fetch {
        /// WAL file name (%f)
        name: String,
        /// Where to write it (%p)
        dest: PathBuf,
        /// Source the WAL belongs to [default: the only postgres source]
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Segments a background prefetcher keeps ready ahead, downloading them in parallel into the spool (0: off)
        #[arg(long, default_value_t = 4, value_name = "K")]
        prefetch: u32,
        /// Prefetch spool [default: pg_wal/strata-prefetch when DEST is in pg_wal, else a temp dir]
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ScheduleAction {
    /// The next runs of every tier, in the tier's time zone and in UTC
    Next {
        /// Runs to show per tier
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: usize,
    },
    /// crontab lines that run the tiers
    Crontab,
    /// Run the tiers as they come due: a long-running daemon (systemd unit
    /// in docs/deployment.md). One log line per event on stdout
    Run {
        /// text (key=value) or json (one object per line; also with --json)
        #[arg(long, default_value = "text", value_name = "FORMAT", value_parser = ["text", "json"])]
        log_format: String,
        /// Run what is due now (slots missed since the last recorded run), wait for it, exit
        #[arg(long)]
        once: bool,
        /// Where each tier's last run is kept [default: $STATE_DIRECTORY, else
        /// $XDG_STATE_HOME/strata, else ~/.local/state/strata]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// On SIGTERM/SIGINT, how long running jobs may take to finish before they are abandoned
        #[arg(long, default_value = "5m", value_name = "DURATION")]
        shutdown_grace: String,
        /// Jobs running at once (never two on the same source)
        #[arg(long, default_value_t = 2, value_name = "N")]
        max_jobs: usize,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Write a new age identity and print its public key
    Generate {
        /// Where to write the identity (mode 0600; never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Show the recipients recorded for the repository beside the configured ones; --set records the configured ones (a deliberate key change)
    Recipients {
        /// Record the configured [encryption] recipients as the repository's
        #[arg(long)]
        set: bool,
    },
}

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let g = Globals {
        config: cli.config,
        identity: cli.identity,
    };
    let json = cli.json;
    match cli.command {
        Command::Init { owner } => commands::init::run(&g, owner.as_deref(), json).await,
        Command::Key {
            action: KeyAction::Generate { out },
        } => commands::key::generate(&out, json),
        Command::Key {
            action: KeyAction::Recipients { set },
        } => commands::key::recipients(&g, set, json).await,
        Command::Backup {
            source,
            kind: Some(kind),
            label,
            tier,
        } if kind == "point" => {
            let (Some(source), Some(label), None) = (source, label, tier) else {
                return Err(Error::usage(
                    "--kind point records a named restore point: strata backup SOURCE --kind point --label NAME (no --tier)",
                ));
            };
            commands::backup::point(&g, &source, &label, json).await
        }
        Command::Backup { label: Some(_), .. } => Err(Error::usage(
            "--label names a restore point: use it with --kind point",
        )),
        Command::Backup {
            source, tier, kind, ..
        } => {
            let kind = kind.map(|k| match k.as_str() {
                "base" => strata::tier::TierKind::Base,
                _ => strata::tier::TierKind::Dump,
            });
            commands::backup::run_kind(&g, source.as_deref(), tier, kind, json).await
        }
        Command::List { source } => commands::list::run(&g, source.as_deref(), json).await,
        Command::Drill {
            action: Some(DrillAction::History { id }),
            ..
        } => commands::drill::history(&g, id.as_deref(), json).await,
        Command::Drill {
            action: None,
            to_time,
            latest,
            sources,
            tier,
            report,
            dry_run,
            work_dir,
        } => {
            let args = commands::drill::DrillArgs {
                to_time,
                latest,
                sources,
                tier,
                report,
                dry_run,
                work_dir,
                json,
            };
            commands::drill::run(&g, &args).await
        }
        Command::Restore {
            replace: true,
            all: false,
            into: None,
            to_time,
            to_database,
            ..
        } if to_time.is_none() || to_database.is_none() => Err(Error::usage(
            "--replace goes with --into URL (or --all, for sources restored into their configured servers)",
        )),
        Command::Restore {
            all: true,
            source,
            target_dir,
            to_time,
            latest,
            run_as,
            replace,
            force,
            ..
        } => {
            if !source.is_empty() {
                return Err(Error::usage(format!(
                    "--all restores every source; drop {source:?}, or drop --all to restore only it"
                )));
            }
            if force {
                return Err(Error::usage(
                    "restore --all never overwrites a directory: give an empty or new --target-dir (or empty the restore_to directories)",
                ));
            }
            if replace && target_dir.is_some() {
                return Err(Error::usage(
                    "--replace is for sources loaded into their configured servers (restore_to); with --target-dir everything goes into new directories",
                ));
            }
            let args = commands::restore_all::AllArgs {
                to_time,
                latest,
                target_dir,
                replace,
                run_as,
                json,
            };
            commands::restore_all::run(&g, &args).await
        }
        Command::Restore {
            source,
            backup,
            into: Some(into),
            replace,
            collections,
            at,
            to_time,
            listen,
            ..
        } => {
            let args = commands::restore::IntoArgs {
                source,
                backup,
                // one spelling for every kind: --to-time means --at here
                at: at.or(to_time),
                into,
                replace,
                collections,
                listen,
                json,
            };
            commands::restore::run_into(&g, &args).await
        }
        Command::Restore {
            source,
            backup,
            to_file,
            to_dir,
            start,
            port,
            force,
            at,
            to_time,
            ..
        } if to_file.is_some() || to_dir.is_some() => {
            let args = commands::restore::RedisArgs {
                source,
                backup,
                at: at.or(to_time),
                to_file,
                to_dir,
                start,
                port,
                force,
                json,
            };
            commands::restore::run_redis(&g, &args).await
        }
        Command::Restore {
            source,
            backup,
            target_dir: Some(target_dir),
            to_time,
            to_lsn,
            to_name,
            unrecorded_name,
            to_xid,
            latest,
            timeline,
            start,
            port,
            run_as,
            force,
            delta,
            archive_mode,
            at,
            ..
        } => {
            let args = commands::restore::PhysicalArgs {
                source,
                backup,
                target_dir,
                // one spelling for every kind: --at means --to-time here
                to_time: to_time.or(at),
                to_lsn,
                to_name,
                unrecorded_name,
                to_xid,
                latest,
                timeline,
                start,
                port,
                run_as,
                force,
                delta,
                archive_off: archive_mode == "off",
                json,
            };
            commands::restore::run_physical(&g, &args).await
        }
        Command::Restore {
            source,
            to_database: Some(to_database),
            to_time: Some(to_time),
            create,
            tables,
            schemas,
            target_url,
            replace,
            no_owner,
            scratch_dir,
            backup,
            jobs,
            globals,
            ..
        } => {
            if backup != "latest" || jobs != 1 || globals {
                return Err(Error::usage(
                    "--to-time with --to-database recovers the cluster to that time in a sandbox: --backup, --jobs and --globals do not apply",
                ));
            }
            let args = commands::restore_table::TableAtArgs {
                source,
                to_time,
                tables,
                schemas,
                to_database,
                create,
                target_url,
                replace,
                no_owner,
                scratch_dir,
                json,
            };
            commands::restore_table::run(&g, &args).await
        }
        Command::Restore {
            source,
            backup,
            to_database,
            create,
            tables,
            jobs,
            target_url,
            globals,
            no_owner,
            scratch_dir,
            at,
            ..
        } => {
            let args = commands::restore::Args {
                source,
                backup,
                at,
                to_database: to_database.expect("clap requires --to-database without --target-dir"),
                create,
                tables,
                jobs,
                target_url,
                globals,
                no_owner,
                scratch_dir,
                json,
            };
            commands::restore::run(&g, &args).await
        }
        Command::Verify { source, read_data } => {
            commands::verify::run(&g, source.as_deref(), read_data, json).await
        }
        Command::Cleanup {
            older_than,
            dry_run,
        } => {
            let d = strata::util::parse_duration(&older_than)
                .map_err(|e| Error::usage(format!("--older-than: {e}")))?;
            commands::cleanup::run(&g, d, dry_run, json).await
        }
        Command::Prune {
            dry_run,
            at,
            allow_future_at,
            grace,
        } => {
            let grace = strata::util::parse_duration(&grace)
                .map_err(|e| Error::usage(format!("--grace: {e}")))?;
            let at = at
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| {
                            Error::usage(format!(
                                "--at {t:?}: {e}; give an RFC 3339 time like 2026-11-20T12:00:00Z"
                            ))
                        })
                })
                .transpose()?;
            if let Some(t) = at
                && !dry_run
                && !allow_future_at
                && t > chrono::Utc::now() + chrono::Duration::minutes(1)
            {
                return Err(Error::usage(format!(
                    "--at {}: that is in the future, and prune would delete now what is due only then (WAL inside today's window too)",
                    t.to_rfc3339()
                ))
                .hint("preview with --dry-run; to delete anyway add --allow-future-at"));
            }
            commands::prune::run(&g, dry_run, at, grace, json).await
        }
        Command::Unlock { force } => commands::unlock::run(&g, force, json).await,
        Command::Status { check } => commands::status::run(&g, check, json).await,
        Command::Metrics { textfile } => commands::metrics::run(&g, &textfile, json).await,
        Command::Schedule {
            action: ScheduleAction::Next { count },
        } => commands::schedule::next(&g, count, json),
        Command::Schedule {
            action: ScheduleAction::Crontab,
        } => commands::schedule::crontab(&g, json),
        Command::Schedule {
            action:
                ScheduleAction::Run {
                    log_format,
                    once,
                    state_dir,
                    shutdown_grace,
                    max_jobs,
                },
        } => {
            let args = commands::schedule::RunArgs {
                log_format,
                once,
                state_dir,
                shutdown_grace,
                max_jobs,
            };
            commands::schedule::run(&g, &args, json).await
        }
        Command::Wal {
            action:
                WalAction::Push {
                    path,
                    source,
                    asynchronous,
                    processes,
                    spool,
                },
        } => {
            let args = commands::wal::PushArgs {
                path,
                source,
                asynchronous,
                processes,
                spool,
                json,
            };
            commands::wal::push_cmd(&g, &args).await
        }
        Command::Wal {
            action:
                WalAction::PushWorker {
                    source,
                    pg_wal,
                    spool,
                    processes,
                    idle_exit,
                },
        } => {
            let args = commands::wal::WorkerArgs {
                source,
                pg_wal,
                spool,
                processes,
                idle_exit: std::time::Duration::from_secs(idle_exit),
            };
            commands::wal::push_worker(&g, &args).await
        }
        Command::Wal {
            action:
                WalAction::PrefetchWorker {
                    source,
                    spool,
                    shared_root,
                    depth,
                    idle_exit,
                },
        } => {
            let args = commands::wal::PrefetchArgs {
                source,
                spool,
                shared_root,
                depth,
                idle_exit: std::time::Duration::from_secs(idle_exit),
            };
            commands::wal::prefetch_worker(&g, &args).await
        }
        Command::Wal {
            action:
                WalAction::Fetch {
                    name,
                    dest,
                    source,
                    prefetch,
                    spool,
                },
        } => {
            let args = commands::wal::FetchArgs {
                name,
                dest,
                source,
                prefetch,
                spool,
                json,
            };
            commands::wal::fetch_cmd(&g, &args).await
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // the AWS SDK warns at length while probing for a region or
            // credentials it then finds elsewhere (IMDS on a non-EC2 host):
            // its own errors still reach the operator through strata's
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| {
                "warn,aws_config=error,aws_smithy_runtime=error,aws_smithy_http_client=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        // background workers log into files: no colour codes there
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // `--json` users get a usage error as JSON too (help and
            // version stay text)
            let json = std::env::args().any(|a| a == "--json");
            let usage = !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                && e.kind() != ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
            if json && usage {
                commands::print_json(&serde_json::json!({
                    "error": e.render().to_string().trim(),
                    "hint": null,
                    "exit_code": 2,
                    "retryable": false,
                }));
            }
            e.exit();
        }
    };
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let e = e.with_disk_full_hint();
            if json {
                commands::print_json(&serde_json::json!({
                    "error": e.message,
                    "hint": e.hint,
                    "exit_code": e.exit_code(),
                    "retryable": e.retryable,
                }));
            }
            eprintln!("strata: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

//! The command line: clap's types for `strata`'s global flags, its
//! commands (one `Args` struct per command) and their subcommands, and the
//! pure functions that turn what clap parsed into what a command function
//! takes: the checks clap's declarations cannot express (usage errors, exit
//! 2, with the messages docs/cli.md shows) and the field-by-field copy into
//! `commands::X::Args`. Restore, which decides among many modes from which
//! flags were given, has its own file: [`restore`] ([`RestoreRequest`]).
//!
//! It lives in the library, not the binary, so that these functions are
//! unit-tested with the rest (`cargo test --lib`) through the real parser
//! (`Cli::try_parse_from`), and `main.rs` keeps only parsing, dispatch and
//! the exit code. It sits at the top: it calls into [`crate::commands`];
//! nothing in the library calls it.

// The `///` comments on clap's types are `strata --help`'s text, byte for
// byte: `[encryption]` there is a config section and `<id>` a placeholder,
// not rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

pub mod restore;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::error::{Error, Result};

pub use restore::{RestoreArgs, RestoreRequest};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "strata",
    version,
    about = "Backup and point-in-time recovery for PostgreSQL, Redis and vector stores"
)]
pub struct Cli {
    /// Configuration file [default: $STRATA_CONFIG, else ./strata.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// age identity file to decrypt with (overrides [encryption] identity_file and $STRATA_IDENTITY_FILE)
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Repository to work on, as in [repositories.NAME] ("default" is [repository])
    /// [default: [repository], else the first [repositories.NAME]]
    #[arg(long, global = true, value_name = "NAME")]
    pub repo: Option<String>,
    /// Print results as JSON on stdout (errors too)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process and matched right away: the size of its
// largest variant (restore's many flags) costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Create the repository named by [repository] url (--repo NAME: [repositories.NAME])
    Init(InitArgs),
    /// Manage age keys
    Key(KeyArgs),
    /// Back up a source now, every source of a tier, or a labelled set (--label)
    Backup(BackupArgs),
    /// List backups, newest first
    List(ListArgs),
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
    Restore(RestoreArgs),
    /// Recovery drill: restore every source into a throwaway sandbox, check
    /// it, measure RTO and RPO, store the report (docs/drills.md)
    #[command(args_conflicts_with_subcommands = true)]
    Drill(DrillArgs),
    /// Check that backups are intact
    Verify(VerifyArgs),
    /// Copy backups and the WAL they need into another repository (--to), byte for byte
    Copy(CopyArgs),
    /// Remove leftovers of backups that never completed
    Cleanup(CleanupArgs),
    /// Apply each tier's retention policy, then remove leftovers
    Prune(PruneArgs),
    /// Remove stale repository locks (left by processes that died)
    Unlock(UnlockArgs),
    /// Last backup of each source per tier, staleness, sizes, WAL lag
    Status(StatusArgs),
    /// Write Prometheus metrics for node_exporter's textfile collector
    Metrics(MetricsArgs),
    /// When the configured tiers run
    Schedule(ScheduleArgs),
    /// Archive and fetch PostgreSQL WAL (archive_command, restore_command)
    Wal(WalArgs),
}

// `strata init`
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// Local repository, as root: give it to this OS user (e.g. postgres, whose
    /// archive_command writes WAL into it); root-run commands keep that owner
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
}

// `strata key`
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub action: KeyAction,
}

// `strata backup`
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "--label has two uses (docs/cli.md, \"Before a deployment\"):\n  \
    a labelled set: one backup of each source named (every source when none is), each\n  \
    recorded with the label, the note and the keep date; restore it with --backup label:L:\n    \
    strata backup --label deploy-v3.2.0 --note 'before the orders migration' --keep-for 7d\n  \
    a named restore point of a PostgreSQL source (free; needs WAL archiving), restored with --to-name:\n    \
    strata backup main --kind point --label deploy-v3.2.0"
)]
pub struct BackupArgs {
    /// Source name, as in [sources.NAME] [default with --tier: every source of
    /// the tier; with --label: every source]. Several only with --label
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Tier to record the backup under, as in [tiers.NAME]
    #[arg(long, value_name = "NAME")]
    pub tier: Option<String>,
    /// dump (logical, pg_dump), base (physical, pg_basebackup; needs WAL archiving)
    /// or point (a named restore point, --label; needs WAL archiving)
    /// [default: the tier's kind, else dump]
    #[arg(long, value_name = "KIND", value_parser = ["dump", "base", "point"])]
    pub kind: Option<String>,
    /// With --kind base: store only what changed since the newest base backup
    /// of the cluster (full when there is none, or its chain is at max_chain)
    #[arg(long)]
    pub incremental: bool,
    /// Label the backups as one set (1 to 63 letters, digits, '.', '_', '-'; once per
    /// source), restorable with --backup label:NAME; with --kind point, the restore
    /// point's name (restore it with --to-name)
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// With --label: why the set was taken (shown by list)
    #[arg(long, value_name = "TEXT", requires = "label")]
    pub note: Option<String>,
    /// With --label: prune keeps the set this long (e.g. 7d), whatever the tier
    /// says, and deletes it after [default: as the tier says; without a tier,
    /// kept]
    #[arg(
        long,
        value_name = "DURATION",
        requires = "label",
        conflicts_with = "keep_until"
    )]
    pub keep_for: Option<String>,
    /// With --label: prune keeps the set until this time, then deletes it
    #[arg(
        long,
        value_name = "TIME",
        requires = "label",
        allow_hyphen_values = true
    )]
    pub keep_until: Option<String>,
}

// `strata list`
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Only this source's backups
    pub source: Option<String>,
    /// Only the backups of the set labelled NAME (`strata backup --label NAME`)
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
}

// `strata drill`
#[derive(Args, Debug, Clone)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub action: Option<DrillAction>,
    /// Recover to this time (as for restore --to-time) [default: --latest]
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "latest",
        allow_hyphen_values = true
    )]
    pub to_time: Option<String>,
    /// Recover everything there is; RPO is measured against now
    #[arg(long)]
    pub latest: bool,
    /// Only this source (repeatable) [default: every source, or the tier's]
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// The sources of this tier (of kind drill), recorded in the report
    #[arg(long, value_name = "NAME")]
    pub tier: Option<String>,
    /// Also write the report as DIR/<id>.json and DIR/<id>.html
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Plan only: which backups, which WAL, how many bytes, where each sandbox would run
    #[arg(long)]
    pub dry_run: bool,
    /// Where the sandbox directory is created [default: $TMPDIR]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

// `strata verify`
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Only this source's backups
    pub source: Option<String>,
    /// Download, decrypt and hash every object (needs the identity)
    #[arg(long)]
    pub read_data: bool,
}

// `strata copy`
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Copies what the target lacks (rerun it to resume or catch up): each backup's \
    objects, a base backup's WAL, then its manifest; WAL from the oldest copied base backup on. \
    A damaged source object is refused (exit 4). See docs/cli.md, \"strata copy\"."
)]
pub struct CopyArgs {
    /// Repository to copy into, as in [repositories.NAME]
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Repository to copy from [default: --repo, else the default repository]
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// Only these sources' backups [default: every source]
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Only backups started at or after this time (as for restore --to-time),
    /// and WAL from the oldest such base backup on
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
}

impl CopyArgs {
    pub fn into_args(
        self,
        now: chrono::DateTime<chrono::Utc>,
        json: bool,
    ) -> Result<commands::copy::Args> {
        let since = self
            .since
            .as_deref()
            .map(|t| {
                crate::timeparse::parse_time(t, now)
                    .map_err(|why| Error::usage(format!("--since {t:?}: {why}")))
            })
            .transpose()?;
        Ok(commands::copy::Args {
            to: self.to,
            from: self.from,
            sources: self.sources,
            since,
            json,
        })
    }
}

// `strata cleanup`
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// Only leftovers older than this (e.g. 30m, 24h, 0)
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub older_than: String,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

// `strata prune`
#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Show the plan, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Plan as of this time instead of now (RFC 3339, e.g. 2026-11-20T12:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Let a real (not --dry-run) prune run with --at in the future:
    /// it deletes what is due only then, WAL inside today's window too
    #[arg(long)]
    pub allow_future_at: bool,
    /// Remove leftovers older than this (e.g. 30m, 24h, 0)
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub grace: String,
}

// `strata unlock`
#[derive(Args, Debug, Clone)]
pub struct UnlockArgs {
    /// Remove every lock, live ones too (only when their holders are surely gone)
    #[arg(long)]
    pub force: bool,
}

// `strata status`
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Exit 4 when a backup is stale or a source of a tier has none
    #[arg(long)]
    pub check: bool,
}

// `strata metrics`
#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// File to write (atomically), e.g. /var/lib/node_exporter/textfile/strata.prom
    #[arg(long, value_name = "PATH")]
    pub textfile: PathBuf,
}

// `strata schedule`
#[derive(Args, Debug, Clone)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub action: ScheduleAction,
}

// `strata wal`
#[derive(Args, Debug, Clone)]
pub struct WalArgs {
    #[command(subcommand)]
    pub action: WalAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum DrillAction {
    /// Past drills, oldest first (plain summaries; --id shows one whole report, needs the identity)
    History {
        /// Show this drill's whole report
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum WalAction {
    /// Archive one WAL file: archive_command = 'strata --config C wal push %p'
    Push(WalPushArgs),
    /// The background pusher of `wal push --async` (started by it)
    #[command(hide = true)]
    PushWorker(PushWorkerArgs),
    /// The background prefetcher of `wal fetch` (started by it)
    #[command(hide = true)]
    PrefetchWorker(PrefetchWorkerArgs),
    /// Fetch one archived WAL file: restore_command = 'strata --config C wal fetch %f %p'.
    /// Exits 1, silently, when the file is not archived
    Fetch(WalFetchArgs),
}

// `strata wal push`
#[derive(Args, Debug, Clone)]
pub struct WalPushArgs {
    /// The file PostgreSQL names in %p
    pub path: PathBuf,
    /// Source the WAL belongs to [default: the only postgres source]
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Push through a background pusher with parallel uploads; exit 0
    /// once this file is durable (also: archive_async = true)
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// --async: uploads in flight [default: archive_push_processes, 4]
    #[arg(long, value_name = "N")]
    pub processes: Option<u32>,
    /// --async: spool directory [default: archive_spool_path, else pg_wal/strata-push]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

// `strata wal push-worker`
#[derive(Args, Debug, Clone)]
pub struct PushWorkerArgs {
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub pg_wal: PathBuf,
    #[arg(long)]
    pub spool: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub processes: u32,
    /// Seconds with nothing to push before it exits
    #[arg(long, default_value_t = 10)]
    pub idle_exit: u64,
}

// `strata wal prefetch-worker`
#[derive(Args, Debug, Clone)]
pub struct PrefetchWorkerArgs {
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub spool: PathBuf,
    #[arg(long)]
    pub shared_root: bool,
    #[arg(long, default_value_t = 4)]
    pub depth: u32,
    /// Seconds without a new request from PostgreSQL before it exits
    #[arg(long, default_value_t = 10)]
    pub idle_exit: u64,
}

// `strata wal fetch`
#[derive(Args, Debug, Clone)]
pub struct WalFetchArgs {
    /// WAL file name (%f)
    pub name: String,
    /// Where to write it (%p)
    pub dest: PathBuf,
    /// Source the WAL belongs to [default: the only postgres source]
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Segments a background prefetcher keeps ready ahead, downloading them in parallel into the spool (0: off)
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub prefetch: u32,
    /// Prefetch spool [default: pg_wal/strata-prefetch when DEST is in pg_wal, else a temp dir]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ScheduleAction {
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
    Run(ScheduleRunArgs),
}

// `strata schedule run`
#[derive(Args, Debug, Clone)]
pub struct ScheduleRunArgs {
    /// text (key=value) or json (one object per line; also with --json)
    #[arg(long, default_value = "text", value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Run what is due now (slots missed since the last recorded run), wait for it, exit
    #[arg(long)]
    pub once: bool,
    /// Where each tier's last run is kept [default: $STATE_DIRECTORY, else
    /// $XDG_STATE_HOME/strata, else ~/.local/state/strata]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long running jobs may take to finish before they are abandoned
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub shutdown_grace: String,
    /// Jobs running at once (never two on the same source)
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_jobs: usize,
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeyAction {
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

/// What `strata backup` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupRequest {
    /// `--kind point --label NAME`: record a named restore point.
    Point { source: String, label: String },
    /// A backup of one source, or of every source of `--tier`, of `kind`
    /// [default: the tier's kind, else dump].
    Backup {
        source: Option<String>,
        tier: Option<String>,
        kind: Option<crate::tier::TierKind>,
        /// `--incremental` (base backups).
        incremental: bool,
    },
    /// `--label L`: one backup of each of `sources` (every source when
    /// empty), each recorded with `pin` (issue 19 item 4).
    Labelled {
        sources: Vec<String>,
        tier: Option<String>,
        kind: Option<crate::tier::TierKind>,
        incremental: bool,
        pin: crate::catalog::Pin,
    },
}

/// The longest `--note`, in characters.
pub const NOTE_MAX: usize = 500;

impl BackupArgs {
    /// Refuses `--kind point` without one source and `--label` (or with
    /// `--tier`, `--note`, `--keep-*`), several sources without `--label`,
    /// a bad label, note or keep date. `now` dates `--keep-for`.
    pub fn request(self, now: chrono::DateTime<chrono::Utc>) -> Result<BackupRequest> {
        let BackupArgs {
            mut sources,
            tier,
            kind,
            incremental,
            label,
            note,
            keep_for,
            keep_until,
        } = self;
        if incremental && matches!(kind.as_deref(), Some("dump" | "point")) {
            return Err(Error::usage(format!(
                "--incremental is for base backups, not --kind {}",
                kind.unwrap_or_default()
            ))
            .hint("strata backup SOURCE --kind base --incremental"));
        }
        if kind.as_deref() == Some("point") {
            let pin_flags = note.is_some() || keep_for.is_some() || keep_until.is_some();
            return match (sources.len(), label, tier, pin_flags) {
                (1, Some(label), None, false) => Ok(BackupRequest::Point {
                    source: sources.remove(0),
                    label,
                }),
                (_, _, _, true) => Err(Error::usage(
                    "--note, --keep-for and --keep-until label a backup set; a restore point (--kind point) is only named",
                )
                .hint("drop them, or drop --kind point to take a labelled backup set")),
                _ => Err(Error::usage(
                    "--kind point records a named restore point: strata backup SOURCE --kind point --label NAME (no --tier)",
                )),
            };
        }
        let kind = kind.map(|k| match k.as_str() {
            "base" => crate::tier::TierKind::Base,
            _ => crate::tier::TierKind::Dump,
        });
        let Some(label) = label else {
            if sources.len() > 1 {
                return Err(Error::usage(format!(
                    "several sources ({}) make a set: give it a --label",
                    sources.join(", ")
                ))
                .hint("`strata backup A B --label NAME`, or one source at a time"));
            }
            return Ok(BackupRequest::Backup {
                source: sources.pop(),
                tier,
                kind,
                incremental,
            });
        };
        crate::catalog::points::check_label(&label)?;
        if let Some(n) = &note
            && (n.chars().count() > NOTE_MAX || n.chars().any(char::is_control))
        {
            return Err(Error::usage(format!(
                "--note: at most {NOTE_MAX} characters on one line (no control characters)"
            )));
        }
        let keep_until = match (keep_for, keep_until) {
            (Some(d), _) => {
                let d = crate::util::parse_duration(&d)
                    .map_err(|e| Error::usage(format!("--keep-for: {e}")))?;
                if d <= chrono::Duration::zero() {
                    return Err(Error::usage(
                        "--keep-for: give a positive duration, like 7d",
                    ));
                }
                Some(now + d)
            }
            (None, Some(t)) => {
                let t = crate::timeparse::parse_time(&t, now)
                    .map_err(|e| Error::usage(format!("--keep-until: {e}")))?;
                if t <= now {
                    return Err(Error::usage(format!(
                        "--keep-until {}: that is in the past; prune would delete the set at once",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )));
                }
                Some(t)
            }
            (None, None) => None,
        };
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = sources.iter().find(|s| !seen.insert(s.as_str())) {
            return Err(Error::usage(format!("source {dup} is named twice")));
        }
        Ok(BackupRequest::Labelled {
            sources,
            tier,
            kind,
            incremental,
            pin: crate::catalog::Pin {
                label,
                note,
                keep_until,
            },
        })
    }
}

impl DrillArgs {
    /// The arguments of a drill run (the `history` subcommand aside).
    pub fn into_args(self, json: bool) -> commands::drill::DrillArgs {
        commands::drill::DrillArgs {
            to_time: self.to_time,
            latest: self.latest,
            sources: self.sources,
            tier: self.tier,
            report: self.report,
            dry_run: self.dry_run,
            work_dir: self.work_dir,
            json,
        }
    }
}

impl CleanupArgs {
    /// `--older-than`, parsed.
    pub fn older_than(&self) -> Result<chrono::Duration> {
        crate::util::parse_duration(&self.older_than)
            .map_err(|e| Error::usage(format!("--older-than: {e}")))
    }
}

/// What `strata prune` was asked for, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRequest {
    pub dry_run: bool,
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub grace: chrono::Duration,
}

impl PruneArgs {
    /// Parses `--grace` and `--at`, and refuses a real prune with `--at`
    /// more than a minute after `now` unless `--allow-future-at`.
    pub fn request(self, now: chrono::DateTime<chrono::Utc>) -> Result<PruneRequest> {
        let PruneArgs {
            dry_run,
            at,
            allow_future_at,
            grace,
        } = self;
        let grace = crate::util::parse_duration(&grace)
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
            && t > now + chrono::Duration::minutes(1)
        {
            return Err(Error::usage(format!(
                "--at {}: that is in the future, and prune would delete now what is due only then (WAL inside today's window too)",
                t.to_rfc3339()
            ))
            .hint("preview with --dry-run; to delete anyway add --allow-future-at"));
        }
        Ok(PruneRequest { dry_run, at, grace })
    }
}

impl ScheduleRunArgs {
    pub fn into_args(self) -> commands::schedule::RunArgs {
        commands::schedule::RunArgs {
            log_format: self.log_format,
            once: self.once,
            state_dir: self.state_dir,
            shutdown_grace: self.shutdown_grace,
            max_jobs: self.max_jobs,
        }
    }
}

impl WalPushArgs {
    pub fn into_args(self, json: bool) -> commands::wal::PushArgs {
        commands::wal::PushArgs {
            path: self.path,
            source: self.source,
            asynchronous: self.asynchronous,
            processes: self.processes,
            spool: self.spool,
            json,
        }
    }
}

impl PushWorkerArgs {
    pub fn into_args(self) -> commands::wal::WorkerArgs {
        commands::wal::WorkerArgs {
            source: self.source,
            pg_wal: self.pg_wal,
            spool: self.spool,
            processes: self.processes,
            idle_exit: std::time::Duration::from_secs(self.idle_exit),
        }
    }
}

impl PrefetchWorkerArgs {
    pub fn into_args(self) -> commands::wal::PrefetchArgs {
        commands::wal::PrefetchArgs {
            source: self.source,
            spool: self.spool,
            shared_root: self.shared_root,
            depth: self.depth,
            idle_exit: std::time::Duration::from_secs(self.idle_exit),
        }
    }
}

impl WalFetchArgs {
    pub fn into_args(self, json: bool) -> commands::wal::FetchArgs {
        commands::wal::FetchArgs {
            name: self.name,
            dest: self.dest,
            source: self.source,
            prefetch: self.prefetch,
            spool: self.spool,
            json,
        }
    }
}

/// A parse error as `--json` users get it on stdout (help and version
/// are not errors: `None`).
pub fn usage_error_json(e: &clap::Error) -> Option<serde_json::Value> {
    use clap::error::ErrorKind;
    let usage = !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        && e.kind() != ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
    usage.then(|| {
        serde_json::json!({
            "error": e.render().to_string().trim(),
            "hint": null,
            "exit_code": 2,
            "retryable": false,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::{TimeZone, Utc};
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::error::Kind;
    use crate::tier::TierKind;

    fn parse(args: &[&str]) -> Command {
        let argv = std::iter::once(&"strata").chain(args);
        Cli::try_parse_from(argv).expect("clap accepts it").command
    }

    fn usage(e: Error) -> String {
        assert_eq!(e.kind, Kind::Usage, "{e}");
        assert_eq!(e.exit_code(), 2);
        e.message
    }

    #[test]
    fn clap_declarations_are_consistent() {
        Cli::command().debug_assert();
    }

    fn backup(args: &[&str]) -> Result<BackupRequest> {
        let mut all = vec!["backup"];
        all.extend(args);
        match parse(&all) {
            Command::Backup(a) => a.request(Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap()),
            other => panic!("not backup: {other:?}"),
        }
    }

    #[test]
    fn backup_requests() {
        assert_eq!(
            backup(&["main"]).unwrap(),
            BackupRequest::Backup {
                source: Some("main".into()),
                tier: None,
                kind: None,
                incremental: false
            }
        );
        assert_eq!(
            backup(&["--tier", "daily", "--kind", "base"]).unwrap(),
            BackupRequest::Backup {
                source: None,
                tier: Some("daily".into()),
                kind: Some(TierKind::Base),
                incremental: false
            }
        );
        assert_eq!(
            backup(&["main", "--kind", "dump"]).unwrap(),
            BackupRequest::Backup {
                source: Some("main".into()),
                tier: None,
                kind: Some(TierKind::Dump),
                incremental: false
            }
        );
        assert_eq!(
            backup(&["main", "--kind", "point", "--label", "before-upgrade"]).unwrap(),
            BackupRequest::Point {
                source: "main".into(),
                label: "before-upgrade".into()
            }
        );
        assert_eq!(
            backup(&["main", "--kind", "base", "--incremental"]).unwrap(),
            BackupRequest::Backup {
                source: Some("main".into()),
                tier: None,
                kind: Some(TierKind::Base),
                incremental: true
            }
        );
        for kind in ["dump", "point"] {
            let e = backup(&["main", "--kind", kind, "--incremental", "--label", "l"]).unwrap_err();
            assert_eq!(
                usage(e),
                format!("--incremental is for base backups, not --kind {kind}")
            );
        }
    }

    #[test]
    fn backup_refusals() {
        let point = "--kind point records a named restore point: strata backup SOURCE --kind point --label NAME (no --tier)";
        for args in [
            &["main", "--kind", "point"][..],
            &["--kind", "point", "--label", "l"],
            &["main", "--kind", "point", "--label", "l", "--tier", "t"],
        ] {
            assert_eq!(usage(backup(args).unwrap_err()), point, "{args:?}");
        }
        // issue 19 item 4: a set's flags do not name a restore point
        assert_eq!(
            usage(backup(&["main", "--kind", "point", "--label", "l", "--note", "n"]).unwrap_err()),
            "--note, --keep-for and --keep-until label a backup set; a restore point (--kind point) is only named"
        );
        assert_eq!(
            usage(backup(&["a", "b"]).unwrap_err()),
            "several sources (a, b) make a set: give it a --label"
        );
    }

    fn pin(label: &str, note: Option<&str>, keep_until: Option<&str>) -> crate::catalog::Pin {
        crate::catalog::Pin {
            label: label.into(),
            note: note.map(Into::into),
            keep_until: keep_until.map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .unwrap()
                    .with_timezone(&Utc)
            }),
        }
    }

    #[test]
    fn labelled_sets() {
        // issue 19 item 4: every source when none is named
        assert_eq!(
            backup(&[
                "--label",
                "deploy-v3.2.0",
                "--note",
                "before the orders migration",
                "--keep-for",
                "7d"
            ])
            .unwrap(),
            BackupRequest::Labelled {
                sources: vec![],
                tier: None,
                kind: None,
                incremental: false,
                pin: pin(
                    "deploy-v3.2.0",
                    Some("before the orders migration"),
                    Some("2026-11-27T12:00:00Z")
                ),
            }
        );
        assert_eq!(
            backup(&[
                "main",
                "cache",
                "--label",
                "l",
                "--keep-until",
                "2026-12-01T00:00:00Z"
            ])
            .unwrap(),
            BackupRequest::Labelled {
                sources: vec!["main".into(), "cache".into()],
                tier: None,
                kind: None,
                incremental: false,
                pin: pin("l", None, Some("2026-12-01T00:00:00Z")),
            }
        );
        // without a keep date: kept as its tier says (untiered: forever)
        assert_eq!(
            backup(&["main", "--label", "l", "--kind", "base"]).unwrap(),
            BackupRequest::Labelled {
                sources: vec!["main".into()],
                tier: None,
                kind: Some(TierKind::Base),
                incremental: false,
                pin: pin("l", None, None),
            }
        );
    }

    #[test]
    fn bad_labels_and_keep_dates_are_refused() {
        // issue 19 item 4: spaces, too long, characters outside [A-Za-z0-9._-]
        let too_long = "x".repeat(64);
        for label in [
            "deploy v3",
            too_long.as_str(),
            "deploy/v3",
            ".lead",
            "",
            "é",
        ] {
            let msg = usage(backup(&["--label", label]).unwrap_err());
            assert_eq!(
                msg,
                format!(
                    "label {label:?}: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
            );
        }
        assert!(backup(&["--label", &"x".repeat(63)]).is_ok());
        assert_eq!(
            usage(backup(&["--label", "l", "--keep-until", "2026-11-01T00:00:00Z"]).unwrap_err()),
            "--keep-until 2026-11-01T00:00:00Z: that is in the past; prune would delete the set at once"
        );
        assert!(
            usage(backup(&["--label", "l", "--keep-for", "soon"]).unwrap_err())
                .starts_with("--keep-for: ")
        );
        assert_eq!(
            usage(backup(&["--label", "l", "--keep-for", "0"]).unwrap_err()),
            "--keep-for: give a positive duration, like 7d"
        );
        assert_eq!(
            usage(backup(&["a", "a", "--label", "l"]).unwrap_err()),
            "source a is named twice"
        );
        let long_note = "n".repeat(NOTE_MAX + 1);
        for note in [long_note.as_str(), "two\nlines"] {
            assert!(
                usage(backup(&["--label", "l", "--note", note]).unwrap_err())
                    .starts_with("--note: ")
            );
        }
        // clap: --note and --keep-* need --label; --keep-for and --keep-until exclude each other
        for args in [
            &["backup", "main", "--note", "n"][..],
            &["backup", "main", "--keep-for", "7d"],
            &[
                "backup",
                "--label",
                "l",
                "--keep-for",
                "7d",
                "--keep-until",
                "2027-01-01T00:00:00Z",
            ],
        ] {
            let argv = std::iter::once(&"strata").chain(args);
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn cleanup_older_than() {
        let Command::Cleanup(a) = parse(&["cleanup"]) else {
            panic!("not cleanup")
        };
        assert_eq!(a.older_than().unwrap(), chrono::Duration::hours(24));
        let Command::Cleanup(a) = parse(&["cleanup", "--older-than", "bogus"]) else {
            panic!("not cleanup")
        };
        assert!(usage(a.older_than().unwrap_err()).starts_with("--older-than: "));
    }

    fn prune(args: &[&str]) -> Result<PruneRequest> {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
        let mut all = vec!["prune"];
        all.extend(args);
        match parse(&all) {
            Command::Prune(a) => a.request(now),
            other => panic!("not prune: {other:?}"),
        }
    }

    #[test]
    fn prune_requests() {
        let p = prune(&[]).unwrap();
        assert_eq!((p.dry_run, p.at), (false, None));
        assert_eq!(p.grace, chrono::Duration::hours(24));
        let p = prune(&["--at", "2026-11-01T00:00:00+02:00", "--grace", "30m"]).unwrap();
        assert_eq!(
            p.at,
            Some(Utc.with_ymd_and_hms(2026, 10, 31, 22, 0, 0).unwrap())
        );
        assert_eq!(p.grace, chrono::Duration::minutes(30));
        // within a minute of now is not the future
        assert!(prune(&["--at", "2026-11-20T12:00:59Z"]).is_ok());
        // the future: a dry run, or a deliberate --allow-future-at
        assert!(prune(&["--at", "2026-12-01T00:00:00Z", "--dry-run"]).is_ok());
        assert!(prune(&["--at", "2026-12-01T00:00:00Z", "--allow-future-at"]).is_ok());
    }

    #[test]
    fn prune_refusals() {
        assert!(usage(prune(&["--grace", "bogus"]).unwrap_err()).starts_with("--grace: "));
        let at = usage(prune(&["--at", "bogus"]).unwrap_err());
        assert!(at.starts_with(r#"--at "bogus": "#), "{at}");
        assert!(
            at.ends_with("; give an RFC 3339 time like 2026-11-20T12:00:00Z"),
            "{at}"
        );
        let e = prune(&["--at", "2026-12-01T00:00:00Z"]).unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("preview with --dry-run; to delete anyway add --allow-future-at")
        );
        assert_eq!(
            usage(e),
            "--at 2026-12-01T00:00:00+00:00: that is in the future, and prune would delete now what is due only then (WAL inside today's window too)"
        );
    }

    #[test]
    fn drill_schedule_and_wal_arguments_are_copied_whole() {
        let Command::Drill(a) = parse(&[
            "drill",
            "--to-time",
            "-15m",
            "--source",
            "a",
            "--source",
            "b",
            "--tier",
            "t",
            "--report",
            "/r",
            "--dry-run",
            "--work-dir",
            "/w",
        ]) else {
            panic!("not drill")
        };
        let d = a.into_args(true);
        assert_eq!((d.to_time.as_deref(), d.latest), (Some("-15m"), false));
        assert_eq!(
            (d.sources, d.tier.as_deref()),
            (vec!["a".into(), "b".into()], Some("t"))
        );
        assert_eq!(
            (d.report, d.work_dir),
            (Some("/r".into()), Some("/w".into()))
        );
        assert!(d.dry_run && d.json);

        let Command::Schedule(ScheduleArgs {
            action: ScheduleAction::Run(a),
        }) = parse(&["schedule", "run", "--once", "--max-jobs", "3"])
        else {
            panic!("not schedule run")
        };
        let r = a.into_args();
        assert_eq!(
            (r.log_format.as_str(), r.shutdown_grace.as_str()),
            ("text", "5m")
        );
        assert!(r.once && r.state_dir.is_none());
        assert_eq!(r.max_jobs, 3);

        let Command::Wal(WalArgs {
            action: WalAction::PushWorker(a),
        }) = parse(&[
            "wal",
            "push-worker",
            "--source",
            "s",
            "--pg-wal",
            "/p",
            "--spool",
            "/s",
            "--idle-exit",
            "3",
        ])
        else {
            panic!("not push-worker")
        };
        let w = a.into_args();
        assert_eq!(
            (w.processes, w.idle_exit),
            (4, std::time::Duration::from_secs(3))
        );
        assert_eq!(
            (w.pg_wal, w.spool),
            (PathBuf::from("/p"), PathBuf::from("/s"))
        );

        let Command::Wal(WalArgs {
            action: WalAction::Fetch(a),
        }) = parse(&[
            "wal",
            "fetch",
            "000000010000000000000001",
            "pg_wal/RECOVERYXLOG",
        ])
        else {
            panic!("not fetch")
        };
        let f = a.into_args(false);
        assert_eq!((f.prefetch, f.source, f.spool), (4, None, None));
        assert_eq!(f.dest, PathBuf::from("pg_wal/RECOVERYXLOG"));
    }

    #[test]
    fn usage_errors_render_as_json_but_help_and_version_do_not() {
        let e = Cli::try_parse_from(["strata", "restore", "--no-such-flag"]).unwrap_err();
        let v = usage_error_json(&e).expect("a usage error");
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["hint"], serde_json::Value::Null);
        assert_eq!(v["retryable"], false);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("error: unexpected argument '--no-such-flag'")
        );
        for args in [
            &["strata", "--help"][..],
            &["strata", "--version"],
            &["strata"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert!(usage_error_json(&e).is_none(), "{args:?}");
        }
    }
}

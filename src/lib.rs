//! strata: backup and point-in-time recovery for PostgreSQL, Redis and
//! vector stores.
//!
//! The library holds all behaviour; `main.rs` only parses arguments
//! ([`cli`]: the flags, and what each command was asked to do), dispatches
//! to [`commands`] (one module per verb: arguments → library call →
//! printing) and maps errors to exit codes.
//!
//! The crate, top to bottom (docs/design.md, "Module map", draws it; imports
//! point down):
//! - [`drill`] and [`scheduler`]: recovery drills; the daemon, its planner,
//!   cron expressions and crontab;
//! - [`restore`]: which backup brings a source back to a point, and
//!   restoring it, per kind (shared by restore, `restore --all`, drills);
//! - [`retention`]: every keep-or-delete decision `strata prune` makes;
//! - [`backup`] and [`context`]: backing up one source of a tier, opening the
//!   repository (shared by the CLI and the scheduler); [`status`]; [`copy`]:
//!   backups and their WAL from one repository into another;
//! - [`sources`]: what is backed up (PostgreSQL, Redis, Chroma) and how each
//!   is read into the pipeline and restored;
//! - [`config`] (`strata.toml`, tiers parsed) and [`tier`] (the tier model);
//! - [`catalog`]: the repository format, manifests, locks, choosing backups;
//! - [`pipeline`] (hash → zstd → age streaming stages), [`keys`],
//!   [`notify`], [`progress`];
//! - [`storage`]: the object-store trait and its backends;
//! - leaves: [`error`], [`util`], [`timeparse`], [`crashpoint`].
//!
//! [`fuzzing`] holds the entry points of the fuzz targets in `fuzz/`.

pub mod backup;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod copy;
pub mod crashpoint;
pub mod drill;
pub mod error;
pub mod fuzzing;
pub mod keys;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod scheduler;
pub mod sources;
pub mod status;
pub mod storage;
pub mod tier;
pub mod timeparse;
pub mod util;

pub use error::{Error, Result};

/// strata's own version, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

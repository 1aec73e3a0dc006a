//! strata: backup and point-in-time recovery for PostgreSQL, Redis and
//! vector stores.
//!
//! The library holds all behaviour; `main.rs` only parses arguments
//! (with [`cli`]: the flags, and what each command was asked to do),
//! dispatches to [`commands`] and maps errors to exit codes.
//!
//! Layout: [`storage`] (object-store trait and backends), [`pipeline`]
//! (hash → zstd → age streaming stages), [`catalog`] (repository format,
//! manifests), [`sources`] (what is backed up: PostgreSQL, Redis),
//! [`restore`] (which backup brings a source back, and restoring it),
//! [`tier`], [`scheduler`] and [`retention`] (what runs when, kept how long),
//! [`context`] and [`backup`] (what the CLI and the scheduler share),
//! [`commands`] (one module per CLI command), [`config`], [`keys`];
//! [`fuzzing`] holds the entry points of the fuzz targets in `fuzz/`.

pub mod backup;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
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
/// The schedule model's old path (`crate::schedule::Schedule`).
pub use scheduler::cron as schedule;

/// strata's own version, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! Restoring backups, apart from the command line: *planning* — which
//! backup (and WAL) brings a source back, whether named (`--backup ID`,
//! `latest`) or found for a point in time (`--at T`, `--to-time T`) — and
//! *carrying the plan out* per kind of source (PostgreSQL logical and
//! point-in-time, Redis, Chroma), into files, a directory or a running
//! server. `strata restore` in all its modes, `strata restore --all` and
//! `strata drill` all choose and restore through here; the commands only
//! turn arguments into a call and print the result.
//!
//! [`plan`] chooses for a source and a point in time, [`recover`] carries
//! such a plan out; [`pitr`] holds what only point-in-time recovery of
//! PostgreSQL needs, [`into`] what loading into a running Redis or Chroma
//! server needs, [`all`] restoring every source at once (`strata
//! restore --all`), [`table`] one table of a PostgreSQL source as of a
//! point in time; [`sandbox`] is the throwaway place where a drill's (or
//! a table restore's) servers run.

pub mod all;
pub mod into;
pub mod pitr;
pub mod plan;
pub mod recover;
pub mod sandbox;
pub mod table;

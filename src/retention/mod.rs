//! Retention: every keep-or-delete decision `strata prune` makes, and
//! the applying of them.
//!
//! - [`policy`]: which backups a policy keeps, and why (pure).
//! - [`wal_cut`]: which archived WAL files a source still needs (pure).
//! - [`wal`]: the WAL half of a prune: gathers [`wal_cut`]'s inputs from
//!   the repository and deletes what it cuts.

pub mod policy;
pub mod wal;
pub mod wal_cut;

pub use policy::{Candidate, Plan, Policy, RawPolicy, Reason, plan};

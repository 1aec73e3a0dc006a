//! Retention: every keep-or-delete decision `strata prune` makes, and
//! the applying of them.
//!
//! - [`policy`]: which backups a policy keeps, and why (pure).
//! - [`wal_cut`]: which archived WAL files a source still needs (pure).

pub mod policy;
pub mod wal_cut;

pub use policy::{Candidate, Plan, Policy, RawPolicy, Reason, plan};

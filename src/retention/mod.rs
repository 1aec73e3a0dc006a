//! Retention: every keep-or-delete decision `strata prune` makes, and
//! the applying of them.
//!
//! - [`policy`]: which backups a policy keeps, and why (pure).

pub mod policy;

pub use policy::{Candidate, Plan, Policy, RawPolicy, Reason, plan};

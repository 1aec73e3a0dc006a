//! Retention: every keep-or-delete decision `strata prune` makes, and
//! the applying of them. Nothing outside this module decides what a
//! prune deletes; the tier configuration ([`crate::tier`]) only says
//! which kinds of tier prune handles and which WAL window applies.
//!
//! [`prune::run`] runs a prune's steps in order:
//! - [`tiers`] plans, for each tier, which of its backups its policy
//!   keeps and which it deletes ([`policy`] applies one policy to one
//!   tier's backups; both are pure, so a dry run and the real run see the
//!   same plan, and tests pin the clock);
//! - [`apply`] marks the backups S3 Object Lock retention forbids
//!   deleting, then deletes the rest of the plan, never a source's newest
//!   backup;
//! - [`wal`] cuts each PostgreSQL source's WAL archive to what the kept
//!   base backups and the WAL tier's window need ([`wal_cut`] decides,
//!   pure) and deletes the rest. WAL goes only after the base backups, so
//!   an interrupted prune never leaves a listed base backup without its
//!   WAL.
//!
//! If any manifest cannot be read, nothing is deleted: the unreadable one
//! might be a source's newest backup.
//!
//! This file re-exports only [`policy`], which the tier configuration
//! parses: the other parts read the configured tiers, and re-exporting
//! them here would make `tier` and them import each other in a ring
//! (`scripts/module_graph.py` refuses rings of more than two files).

pub mod apply;
pub mod policy;
pub mod prune;
pub mod tiers;
pub mod wal;
pub mod wal_cut;

pub use policy::{Candidate, Plan, Policy, RawPolicy, Reason, plan};

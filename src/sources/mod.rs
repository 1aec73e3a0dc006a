//! What strata backs up. Each source kind knows how to read itself into the
//! pipeline and how to restore from it; [`backup`] holds what every kind's
//! backup shares (its context, its commit and report, streaming a client
//! program's output into an object).

pub mod backup;
pub mod chroma;
pub mod postgres;
pub mod redis;

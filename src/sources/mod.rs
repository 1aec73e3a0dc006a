//! What strata backs up. Each source kind knows how to read itself into the
//! pipeline and how to restore from it.

pub mod backup;
pub mod chroma;
pub mod postgres;
pub mod redis;

//! ChromaDB sources: every collection of one tenant/database exported
//! through Chroma's v2 HTTP API into a portable JSON Lines file per
//! collection ([`format`]), and restored into the same or another server.
//!
//! - [`export::backup`]: `strata backup SOURCE` for `kind = "chroma"`.
//! - [`import::restore_and_verify`]: `strata restore SOURCE --into URL`,
//!   and what a drill calls:
//!
//!   ```ignore
//!   pub async fn restore_and_verify(
//!       storage: &Arc<dyn Storage>,      // repo.storage()
//!       entry: &Entry,                   // the backup (repo.find / pick_at)
//!       identities: Arc<Vec<Identity>>,
//!       opts: &import::RestoreOptions,   // into URL, tenant, database, token,
//!                                        // collections (empty: all), replace
//!       reporter: &Reporter,
//!   ) -> Result<import::ChromaRestoreReport>
//!   ```
//!
//!   The report has per-collection counts and probe results and the
//!   phases' durations (`transfer_seconds`: download, decrypt, decode and
//!   add, streamed together; `import_seconds`: the part of it spent in
//!   Chroma's add calls; `verify_seconds`). It fails (exit 4) when a count
//!   or a probe does not match.
//!
//! Consistency: Chroma has no snapshot API. The export reads each
//! collection page by page; writes during the export are not isolated (a
//! record added or deleted meanwhile may or may not be in the backup). The
//! manifest records each collection's count before and after its export,
//! and the backup warns when they differ.

pub mod client;
pub mod export;
pub mod format;
pub mod import;

use serde::{Deserialize, Serialize};

/// Chroma facts recorded with an export (sealed in the manifest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChromaInfo {
    /// What `/api/v2/version` answers: the API version (`1.0.0` for
    /// chromadb 1.5.9), not the package's.
    pub server_version: String,
    pub tenant: String,
    pub database: String,
    pub collections: Vec<CollectionInfo>,
}

// Distances are floats, compared bit for bit here (the manifest's summary
// check needs `Eq`); a NaN never comes from Chroma's distance functions.
impl Eq for ChromaInfo {}

/// One exported collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    /// Its id on the source server.
    pub id: String,
    /// The object holding it (its name in the manifest's objects).
    pub object: String,
    /// Distance function: `l2`, `cosine` or `ip`.
    pub space: String,
    pub dimension: Option<u32>,
    /// Records written to the export.
    pub records: u64,
    /// `count` just before and just after the export (writes in between
    /// are not isolated).
    pub count_before: u64,
    pub count_after: u64,
    /// Nearest-neighbour probes run right after the export.
    pub probes: Vec<Probe>,
}

/// A nearest-neighbour query and what it returned at backup time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// The query vector (base64 of little-endian f32, as in the export):
    /// the embedding of a stored record.
    pub vector: String,
    /// The record whose embedding it is.
    pub from_id: String,
    /// Result ids, nearest first.
    pub ids: Vec<String>,
    pub distances: Vec<f32>,
}

/// Nearest neighbours asked for by a probe.
pub const PROBE_RESULTS: usize = 10;

/// The object name of a collection's export.
pub fn object_name(collection: &str) -> String {
    format!("chroma-{collection}.jsonl")
}

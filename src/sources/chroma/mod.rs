//! ChromaDB sources: every collection of one tenant/database exported
//! through Chroma's v2 HTTP API into a portable JSON Lines file per
//! collection ([`format`](mod@format)), and restored into the same or another server.
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

pub use crate::catalog::manifest::{ChromaInfo, CollectionInfo, Probe};

/// Nearest neighbours asked for by a probe.
pub const PROBE_RESULTS: usize = 10;

/// The object name of a collection's export.
pub fn object_name(collection: &str) -> String {
    format!("chroma-{collection}.jsonl")
}

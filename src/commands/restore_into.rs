//! The arguments of `strata restore SOURCE --into URL`, apart from the
//! code that reads them: [`super::restore::run_into`] hands them to the
//! Redis ([`super::restore_redis`]) or Chroma ([`super::restore_chroma`])
//! loader, and each loader reads them here without importing the
//! dispatcher back.

/// `strata restore SOURCE --into URL [--replace] [--collection NAME]...`:
/// load a snapshot into a running server (Redis or Chroma).
#[derive(Debug, Clone)]
pub struct IntoArgs {
    pub source: String,
    pub backup: String,
    /// `--at T`: the newest snapshot taken at or before T (instead of --backup).
    pub at: Option<String>,
    pub into: String,
    pub replace: bool,
    pub collections: Vec<String>,
    /// Redis: the address strata serves the snapshot on (`--listen`).
    pub listen: Option<String>,
    pub json: bool,
}

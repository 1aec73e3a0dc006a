//! Issue 18 items 2 and 3: restoring from a chain of incremental base
//! backups, on the PostgreSQL under test (15 by default: strata's method
//! `blocks`; with `STRATA_PG_BIN` on 17 or newer, `summarize_wal = on`
//! makes it PostgreSQL's own method `server`; tests/incremental_restore_server.rs
//! runs it on PostgreSQL 18 always).
//! The scenario is in tests/common/incremental.rs.
mod common;

#[test]
fn a_chain_restores_row_exact_and_breaks_loudly() {
    common::incremental::chain_scenario();
}

//! Issue 18 items 2 and 3 on PostgreSQL 18 (`use_newest_pg`), whatever
//! the run's PostgreSQL: the chain scenario of tests/common/incremental.rs
//! with `summarize_wal = on`, so every incremental is PostgreSQL's own
//! (`pg_basebackup --incremental`, `INCREMENTAL.` members).
mod common;

#[test]
fn a_server_chain_restores_row_exact_and_breaks_loudly() {
    common::pg::use_newest_pg();
    common::incremental::chain_scenario();
}

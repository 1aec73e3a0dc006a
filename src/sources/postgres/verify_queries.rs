//! `verify_queries`: SQL whose results are recorded with a backup and
//! compared after a restore, so a restore is checked by what the
//! application sees, not only by checksums (for pgvector: a
//! nearest-neighbour query; docs/pgvector.md).
//!
//! Results are taken in PostgreSQL's text form (the simple query
//! protocol), with the session settings that shape that text pinned
//! ([`SESSION_SETTINGS`]), so the same data gives the same text on the
//! source and on a restored copy. Each result keeps its column names, its
//! first [`KEPT_ROWS`] rows (to show a difference) and a SHA-256 over all
//! rows in a canonical form ([`canonical_line`]): memory and manifest size
//! stay bounded however many rows a query returns. Rows are compared in
//! the order the query returns them: give every query an `ORDER BY` that
//! makes the order unique (a nearest-neighbour query: `ORDER BY distance,
//! id`).

use futures::{StreamExt, pin_mut};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::pg_error_text;
use crate::error::{Error, Kind, Result};

/// Rows of each result kept in the manifest (all rows are digested).
pub const KEPT_ROWS: usize = 20;

/// Settings that change how values print, pinned for both runs.
pub const SESSION_SETTINGS: &str = "SET extra_float_digits = 1; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; \
     SET statement_timeout = '5min'";

pub use crate::catalog::manifest::QueryResult;

/// A difference between a recorded result and a new one.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    /// 1-based position of the query in `verify_queries`.
    pub query: usize,
    pub sql: String,
    /// What differs, in words.
    pub difference: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify query {} ({}): {}",
            self.query,
            one_line(&self.sql),
            self.difference
        )
    }
}

/// One line of canonical text: a JSON array of the fields, `null` for
/// NULL. JSON escapes make it unambiguous whatever the values hold.
pub fn canonical_line(fields: &[Option<&str>]) -> String {
    serde_json::to_string(fields).expect("strings serialise")
}

/// Accumulates one result as its rows stream by.
struct Collector {
    sql: String,
    columns: Option<Vec<String>>,
    rows: Vec<Vec<Option<String>>>,
    row_count: u64,
    hash: Sha256,
}

impl Collector {
    fn new(sql: &str) -> Collector {
        Collector {
            sql: sql.to_string(),
            columns: None,
            rows: Vec::new(),
            row_count: 0,
            hash: Sha256::new(),
        }
    }

    fn columns(&mut self, names: Vec<String>) {
        if self.columns.is_none() {
            let line = canonical_line(&names.iter().map(|n| Some(n.as_str())).collect::<Vec<_>>());
            self.hash.update(line.as_bytes());
            self.hash.update(b"\n");
            self.columns = Some(names);
        }
    }

    fn row(&mut self, fields: Vec<Option<&str>>) {
        self.hash.update(canonical_line(&fields).as_bytes());
        self.hash.update(b"\n");
        if self.rows.len() < KEPT_ROWS {
            self.rows
                .push(fields.into_iter().map(|f| f.map(str::to_string)).collect());
        }
        self.row_count += 1;
    }

    fn finish(mut self) -> QueryResult {
        if self.columns.is_none() {
            self.columns(Vec::new());
        }
        QueryResult {
            sql: self.sql,
            columns: self.columns.unwrap_or_default(),
            rows: self.rows,
            row_count: self.row_count,
            digest: hex::encode(self.hash.finalize()),
        }
    }
}

/// Runs `queries` on `client`, in order, and returns their results. Pins
/// the output settings first; the caller decides the transaction (a
/// read-only one, or the backup's exported snapshot). A failing query is
/// an error naming it.
pub async fn run_in(client: &Client, source: &str, queries: &[String]) -> Result<Vec<QueryResult>> {
    client.simple_query(SESSION_SETTINGS).await.map_err(|e| {
        Error::source(format!(
            "{source}: setting up verify queries: {}",
            pg_error_text(&e)
        ))
    })?;
    let mut out = Vec::with_capacity(queries.len());
    for (i, sql) in queries.iter().enumerate() {
        // An error from the server about the query is the query's fault;
        // a lost connection is the source's.
        let failed = |e: &tokio_postgres::Error| {
            Error::new(
                if e.as_db_error().is_some() {
                    Kind::Usage
                } else {
                    Kind::Source
                },
                format!(
                    "{source}: verify query {} ({}) failed: {}",
                    i + 1,
                    one_line(sql),
                    pg_error_text(e)
                ),
            )
            .hint(format!(
                "fix or remove it in [sources.{source}] verify_queries (each must be one read-only SELECT)"
            ))
        };
        // One statement only: the server refuses to prepare several, so
        // "SELECT 1; COMMIT; DROP …" cannot leave the read-only transaction
        // (the text protocol below would run them all).
        client.prepare(sql).await.map_err(|e| failed(&e))?;
        let mut c = Collector::new(sql);
        let stream = client.simple_query_raw(sql).await.map_err(|e| failed(&e))?;
        pin_mut!(stream);
        while let Some(m) = stream.next().await {
            match m.map_err(|e| failed(&e))? {
                SimpleQueryMessage::RowDescription(cols) => {
                    c.columns(cols.iter().map(|c| c.name().to_string()).collect())
                }
                SimpleQueryMessage::Row(r) => {
                    c.columns(r.columns().iter().map(|c| c.name().to_string()).collect());
                    c.row((0..r.len()).map(|i| r.get(i)).collect());
                }
                _ => {}
            }
        }
        out.push(c.finish());
    }
    Ok(out)
}

/// Runs `queries` in a read-only transaction of their own on `client`.
pub async fn run(client: &Client, source: &str, queries: &[String]) -> Result<Vec<QueryResult>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    client
        .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| Error::source(format!("{source}: {}", pg_error_text(&e))))?;
    let r = run_in(client, source, queries).await;
    let _ = client.simple_query("ROLLBACK").await;
    r
}

/// For a logical backup: opens a read-only repeatable-read transaction
/// on `client`, exports its snapshot and runs `queries` in it, so the
/// results describe exactly the data `pg_dump --snapshot=NAME` dumps.
/// Returns the snapshot name (keep the transaction open, i.e. do not use
/// `client` otherwise, until pg_dump has started; then [`end`]) and the
/// results. A server that cannot export snapshots (a standby before
/// PostgreSQL 10 …) gets the queries run just before the dump, `None`.
pub async fn record_for_dump(
    client: &Client,
    source: &str,
    queries: &[String],
) -> Result<(Option<String>, Vec<QueryResult>)> {
    client
        .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| Error::source(format!("{source}: {}", pg_error_text(&e))))?;
    let snapshot = match client.query_one("SELECT pg_export_snapshot()", &[]).await {
        Ok(row) => row.get::<_, String>(0),
        Err(e) => {
            tracing::warn!(source, error = %pg_error_text(&e), "cannot export a snapshot; verify queries run just before pg_dump");
            let _ = client.simple_query("ROLLBACK").await;
            return Ok((None, run(client, source, queries).await?));
        }
    };
    match run_in(client, source, queries).await {
        Ok(r) => Ok((Some(snapshot), r)),
        Err(e) => {
            end(client).await;
            Err(e)
        }
    }
}

/// Exact row counts of `tables` (schema, name) in the transaction
/// [`record_for_dump`] opened, i.e. in the snapshot pg_dump dumps. Only
/// ordinary tables whose rows pg_dump copies are counted: `None` for
/// partitioned parents (their rows are in their partitions), materialized
/// views (a restore recomputes them), extension members (`CREATE
/// EXTENSION` refills them), and any table that cannot be counted (locked
/// by DDL for longer than `lock_timeout`, dropped meanwhile). Each count
/// runs in a subtransaction that is rolled back, which releases its lock at
/// once: strata never holds a table while DDL and pg_dump queue behind it.
/// A lost connection ends the counting.
pub async fn count_rows(client: &Client, tables: &[(String, String)]) -> Vec<Option<i64>> {
    let mut out = vec![None; tables.len()];
    // a big table takes as long as pg_dump takes to read it; a table
    // locked by DDL is left uncounted rather than waited for
    if client
        .simple_query("SET statement_timeout = 0; SET lock_timeout = '5s'")
        .await
        .is_err()
    {
        return out;
    }
    let countable: std::collections::BTreeSet<(String, String)> = match client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_depend d \
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e) => {
            tracing::warn!(error = %pg_error_text(&e), "cannot list the tables to count");
            return out;
        }
    };
    for (i, (schema, name)) in tables.iter().enumerate() {
        if !countable.contains(&(schema.clone(), name.clone())) {
            continue;
        }
        let sql = format!(
            "SAVEPOINT strata_count; SELECT count(*) FROM ONLY {}.{}",
            super::quote_ident(schema),
            super::quote_ident(name)
        );
        let counted = client.simple_query(&sql).await;
        // rolled back, not released: the subtransaction's lock goes with it
        let released = client
            .simple_query("ROLLBACK TO SAVEPOINT strata_count; RELEASE SAVEPOINT strata_count")
            .await;
        match counted {
            Ok(msgs) => {
                out[i] = msgs.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                    _ => None,
                })
            }
            Err(e) => {
                tracing::warn!(schema, table = name, error = %pg_error_text(&e), "cannot count rows");
            }
        }
        if released.is_err() {
            return out;
        }
    }
    out
}

/// Ends the transaction [`record_for_dump`] opened.
pub async fn end(client: &Client) {
    let _ = client.simple_query("ROLLBACK").await;
}

/// Compares recorded results with new ones; empty when they agree.
pub fn compare(recorded: &[QueryResult], now: &[QueryResult]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (i, r) in recorded.iter().enumerate() {
        let mismatch = |difference: String| Mismatch {
            query: i + 1,
            sql: r.sql.clone(),
            difference,
        };
        let Some(n) = now.iter().find(|n| n.sql == r.sql) else {
            out.push(mismatch("it was not run on the restored data".into()));
            continue;
        };
        if let Some(d) = difference(r, n) {
            out.push(mismatch(d));
        }
    }
    out
}

/// How `now` differs from `rec`, in words; `None` when they agree.
fn difference(rec: &QueryResult, now: &QueryResult) -> Option<String> {
    if rec.columns != now.columns {
        return Some(format!(
            "columns were {:?}, are {:?}",
            rec.columns, now.columns
        ));
    }
    if rec.digest == now.digest && rec.row_count == now.row_count {
        return None;
    }
    let mut parts = Vec::new();
    if rec.row_count != now.row_count {
        parts.push(format!(
            "{} rows recorded, {} now",
            rec.row_count, now.row_count
        ));
    }
    // The first differing row among those both kept.
    let shown = rec
        .rows
        .iter()
        .zip(&now.rows)
        .enumerate()
        .find(|(_, (a, b))| a != b);
    match shown {
        Some((i, (a, b))) => parts.push(format!(
            "row {} was {} and is {}",
            i + 1,
            show_row(a),
            show_row(b)
        )),
        None if rec.row_count == now.row_count => parts.push(format!(
            "a row after the first {} differs (digest {} recorded, {} now)",
            rec.rows.len().min(now.rows.len()),
            short(&rec.digest),
            short(&now.digest)
        )),
        None => {}
    }
    Some(parts.join("; "))
}

fn show_row(r: &[Option<String>]) -> String {
    let fields: Vec<Option<&str>> = r.iter().map(|f| f.as_deref()).collect();
    let s = canonical_line(&fields);
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(12)]
}

fn one_line(sql: &str) -> String {
    let s = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Runs the recorded queries against a restored database and compares;
/// an integrity error listing every mismatch when they differ. Returns how
/// many queries were checked.
pub async fn check_restored(
    client: &Client,
    what: &str,
    recorded: &[QueryResult],
) -> Result<usize> {
    if recorded.is_empty() {
        return Ok(0);
    }
    let queries: Vec<String> = recorded.iter().map(|r| r.sql.clone()).collect();
    // A query that no longer runs (a table missing) is a difference too.
    let now =
        run(client, what, &queries).await.map_err(|e| {
            match e.kind {
        Kind::Usage => Error::integrity(e.message).hint(
            "the restored data lacks what the query reads: check what was restored (tables, roles)",
        ),
        _ => e,
    }
        })?;
    let mismatches = compare(recorded, &now);
    if mismatches.is_empty() {
        return Ok(recorded.len());
    }
    Err(Error::integrity(format!(
        "{what}: {} of {} verify queries give other results than at backup time:\n  {}",
        mismatches.len(),
        recorded.len(),
        mismatches
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    ))
    .hint("the restored data differs from the backup's: check what was restored (tables, roles) and that nothing wrote to it since"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(sql: &str, cols: &[&str], rows: &[&[Option<&str>]]) -> QueryResult {
        let mut c = Collector::new(sql);
        c.columns(cols.iter().map(|s| s.to_string()).collect());
        for r in rows {
            c.row(r.to_vec());
        }
        c.finish()
    }

    #[test]
    fn canonical_text_is_unambiguous() {
        assert_eq!(
            canonical_line(&[Some("a\tb"), None, Some("")]),
            r#"["a\tb",null,""]"#
        );
        assert_ne!(
            canonical_line(&[Some("a,b")]),
            canonical_line(&[Some("a"), Some("b")])
        );
        let a = result("q", &["x"], &[&[Some("null")]]);
        let b = result("q", &["x"], &[&[None]]);
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn equal_results_agree() {
        let a = result(
            "SELECT 1",
            &["id", "d"],
            &[&[Some("1"), Some("0.5")], &[Some("2"), None]],
        );
        let b = result(
            "SELECT 1",
            &["id", "d"],
            &[&[Some("1"), Some("0.5")], &[Some("2"), None]],
        );
        assert_eq!(a, b);
        assert!(compare(&[a], &[b]).is_empty());
    }

    #[test]
    fn differences_are_described() {
        let rec = result("q1", &["id"], &[&[Some("1")], &[Some("2")]]);
        let changed = result("q1", &["id"], &[&[Some("1")], &[Some("3")]]);
        let m = compare(std::slice::from_ref(&rec), &[changed]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].query, 1);
        assert!(
            m[0].difference.contains(r#"row 2 was ["2"] and is ["3"]"#),
            "{}",
            m[0].difference
        );

        let fewer = result("q1", &["id"], &[&[Some("1")]]);
        let m = compare(std::slice::from_ref(&rec), &[fewer]);
        assert!(
            m[0].difference.contains("2 rows recorded, 1 now"),
            "{}",
            m[0].difference
        );

        let cols = result("q1", &["other"], &[&[Some("1")], &[Some("2")]]);
        assert!(
            compare(std::slice::from_ref(&rec), &[cols])[0]
                .difference
                .contains("columns")
        );

        assert!(
            compare(std::slice::from_ref(&rec), &[])[0]
                .difference
                .contains("not run")
        );

        // a difference beyond the kept rows shows as a digest difference
        let many: Vec<Vec<Option<String>>> = (0..50).map(|i| vec![Some(i.to_string())]).collect();
        let mk = |rows: &[Vec<Option<String>>]| {
            let refs: Vec<Vec<Option<&str>>> = rows
                .iter()
                .map(|r| r.iter().map(|f| f.as_deref()).collect())
                .collect();
            let refs2: Vec<&[Option<&str>]> = refs.iter().map(|r| r.as_slice()).collect();
            result("q", &["n"], &refs2)
        };
        let a = mk(&many);
        let mut other = many.clone();
        other[40] = vec![Some("x".into())];
        let b = mk(&other);
        assert_eq!(a.rows.len(), KEPT_ROWS);
        let m = compare(&[a], &[b]);
        assert!(
            m[0].difference.contains("after the first 20"),
            "{}",
            m[0].difference
        );
        assert!(m[0].to_string().starts_with("verify query 1 (q): "));
    }
}

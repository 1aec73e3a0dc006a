//! What a drill checks on a restored source.
//!
//! PostgreSQL: the server left recovery (promoted) where it should; every
//! table of every database reads in full (a forced sequential scan, which
//! reads every heap page and so every page checksum); every btree index
//! verifies with amcheck's `bt_index_check` where the extension is
//! available; for a dump, every table recorded in the manifest exists and
//! its row count is compared with the one recorded. Redis: keys per
//! database equal those recorded.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::report::Check;
use crate::catalog::manifest::{RedisDb, TableInfo};
use crate::sources::postgres::{Target, pg_error_text, quote_ident};

/// Rows per `(database, schema, table)`.
/// Rows per (database, schema, table) read by [`read_tables`]; `None` for
/// a partitioned parent (present; its rows are counted in its partitions).
pub type Counts = BTreeMap<(String, String, String), Option<i64>>;

/// The recovered server is out of recovery; for a time target, it did not
/// replay past the target.
pub async fn promoted(client: &Client, target_time: Option<DateTime<Utc>>) -> Vec<Check> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
             (SELECT timeline_id FROM pg_control_checkpoint())::int, \
             extract(epoch FROM pg_last_xact_replay_timestamp())::float8, pg_current_wal_lsn()::text",
            &[],
        )
        .await;
    let row = match row {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::new(
                "promoted",
                false,
                format!("cannot query the restored server: {}", pg_error_text(&e)),
            )];
        }
    };
    let in_recovery: bool = row.get(0);
    let tli: i32 = row.get(1);
    let last: Option<f64> = row.get(2);
    let last = last.and_then(|e| DateTime::from_timestamp_micros((e * 1e6).round() as i64));
    let lsn: String = row.get(3);
    let show = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut out = vec![Check::new(
        "promoted",
        !in_recovery,
        format!(
            "{} at LSN {lsn} on timeline {tli}; last transaction replayed: {}",
            if in_recovery {
                "still in recovery"
            } else {
                "promoted"
            },
            last.map_or("none".to_string(), show)
        ),
    )];
    if let Some(t) = target_time {
        let ok = last.is_none_or(|l| l <= t);
        out.push(Check::new(
            "stopped at the target",
            ok,
            match last {
                Some(l) if ok => format!("last replayed commit {} ≤ target {}", show(l), show(t)),
                Some(l) => format!(
                    "replayed a commit at {}, after the target {}",
                    show(l),
                    show(t)
                ),
                None => "no transaction replayed after the base backup".into(),
            },
        ));
    }
    out
}

/// Connects as the cluster's bootstrap superuser (the role with OID 10):
/// the sandbox trusts loopback connections, and reading every table and
/// creating amcheck need a superuser, which the source's (backup) user
/// often is not.
pub async fn as_superuser(server: &Target) -> Result<(Target, Client), String> {
    let c = server.connect().await.map_err(|e| e.message)?;
    let name: String = c
        .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
        .await
        .map_err(|e| pg_error_text(&e))?
        .get(0);
    let mut url = server.url.clone();
    let _ = url.set_username(&name);
    let _ = url.set_password(None);
    let su = Target::new(&url);
    let client = su.connect().await.map_err(|e| e.message)?;
    Ok((su, client))
}

/// WAL replay was complete: no `strata wal fetch` failed during it (a
/// damaged segment makes fetch fail, and PostgreSQL then ends recovery
/// there as if the archive ended), and a replay to the end of the archive
/// got into the newest archived segment (the switch point of the new
/// timeline, in its history file, is not before that segment's start).
pub fn replay_complete(
    dir: &std::path::Path,
    newest: Option<crate::sources::postgres::wal::SegmentName>,
    size: Option<crate::sources::postgres::wal::SegmentSize>,
    to_end: bool,
) -> Check {
    let name = "WAL replayed completely";
    let log = std::fs::read_to_string(crate::sources::postgres::server::server_log(dir))
        .unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("strata: error:"))
        .take(3)
        .collect();
    if !errors.is_empty() {
        return Check::new(
            name,
            false,
            format!(
                "strata wal fetch failed during replay: {}",
                errors.join(" | ")
            ),
        );
    }
    let (true, Some(newest), Some(size)) = (to_end, newest, size) else {
        return Check::new(name, true, "no WAL fetch failed");
    };
    let switch = crate::sources::postgres::pitr::replay_end(dir);
    let start = newest.start_lsn(size);
    match switch {
        Some(s) if s < start => Check::new(
            name,
            false,
            format!(
                "replay ended at LSN {s}, before the newest archived segment {newest} (from LSN {start}): WAL after {s} could not be replayed"
            ),
        ),
        Some(s) => Check::new(
            name,
            true,
            format!("replay reached LSN {s}, in or past the newest archived segment {newest}"),
        ),
        None => Check::new(
            name,
            true,
            "no WAL fetch failed (no timeline history to compare the end of replay with)",
        ),
    }
}

/// The databases a check visits: every one that accepts connections
/// (template0 does not), or only `only`.
pub async fn databases(client: &Client, only: Option<&str>) -> Result<Vec<String>, String> {
    if let Some(db) = only {
        return Ok(vec![db.to_string()]);
    }
    let rows = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error_text(&e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Reads every table of `db` in full — catalogs and TOAST tables too
/// (`count(*)` does not detoast, so TOAST tables are scanned themselves);
/// one check per database, naming the tables that could not be read.
/// Needs a superuser (the sandbox's checks connect as one).
pub async fn read_tables(server: &Target, db: &str, counts: &mut Counts) -> Check {
    let name = format!("tables read in full ({db})");
    let client = match server.with_database(db).connect().await {
        Ok(c) => c,
        Err(e) => return Check::new(name, false, format!("cannot connect: {}", e.message)),
    };
    // A sequential scan reads (and checksums) every heap page; an index-only
    // scan would not.
    if let Err(e) = client
        .batch_execute(
            "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off",
        )
        .await
    {
        return Check::new(name, false, pg_error_text(&e));
    }
    let tables = match client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relkind = 'p' FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm', 't', 'p') AND c.relpersistence = 'p' \
             AND n.nspname <> 'information_schema' \
             ORDER BY 1, 2",
            &[],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return Check::new(name, false, pg_error_text(&e)),
    };
    let mut failed = Vec::new();
    let mut rows_total: i64 = 0;
    let mut user_tables = 0;
    for t in &tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        if t.get::<_, bool>(2) {
            // a partitioned parent holds no rows itself: its partitions
            // are read (and counted) one by one
            counts.insert((db.to_string(), schema, table), None);
            continue;
        }
        let q = format!(
            "SELECT count(*) FROM ONLY {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        match client.query_one(&q, &[]).await {
            Ok(r) => {
                let n: i64 = r.get(0);
                rows_total += n;
                if schema != "pg_catalog" && schema != "pg_toast" {
                    user_tables += 1;
                }
                counts.insert((db.to_string(), schema, table), Some(n));
            }
            Err(e) => failed.push(format!("{schema}.{table}: {}", pg_error_text(&e))),
        }
    }
    if failed.is_empty() {
        Check::new(
            name,
            true,
            format!(
                "{} tables ({user_tables} user tables), {rows_total} rows",
                tables.len()
            ),
        )
    } else {
        Check::new(name, false, failed.join("; "))
    }
}

/// `bt_index_check` on every btree index of `db`; skipped when amcheck
/// cannot be installed.
pub async fn amcheck(server: &Target, db: &str) -> Check {
    let name = format!("btree indexes (amcheck, {db})");
    let client = match server.with_database(db).connect().await {
        Ok(c) => c,
        Err(e) => return Check::new(name, false, format!("cannot connect: {}", e.message)),
    };
    if let Err(e) = client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .await
    {
        return Check::skipped(
            name,
            format!(
                "amcheck is not available: {} (it ships with PostgreSQL's contrib package)",
                pg_error_text(&e)
            ),
        );
    }
    let idx = match client
        .query(
            "SELECT c.oid, n.nspname::text || '.' || c.relname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_am a ON a.oid = c.relam \
             WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready \
             AND c.relpersistence = 'p' ORDER BY 2",
            &[],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return Check::new(name, false, pg_error_text(&e)),
    };
    let mut failed = Vec::new();
    for r in &idx {
        let oid: u32 = r.get(0);
        let iname: String = r.get(1);
        if let Err(e) = client
            .query_one("SELECT bt_index_check($1::oid::regclass)", &[&oid])
            .await
        {
            failed.push(format!("{iname}: {}", pg_error_text(&e)));
        }
    }
    if failed.is_empty() {
        Check::new(name, true, format!("{} btree indexes verified", idx.len()))
    } else {
        Check::new(name, false, failed.join("; "))
    }
}

/// Every table recorded at backup time exists in the restored database,
/// with the recorded number of rows. Backups taken with `count_rows` (the
/// default) record the exact `count(*)` in the snapshot pg_dump dumped,
/// and those must match exactly. Older backups, or sources with
/// `count_rows = false`, have only PostgreSQL's estimate (`reltuples`,
/// exact after ANALYZE or VACUUM, stale after writes autovacuum has not
/// caught up with): a count more than 10% (and 10 rows) away from it fails.
/// A missing table always fails.
pub fn dump_rows(db: &str, recorded: &[TableInfo], counts: &Counts) -> Check {
    let name = "row counts as recorded";
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    let (mut exact, mut estimated, mut near) = (0, 0, 0);
    // A backup with exact counts leaves out, on purpose, what a restore
    // recomputes (materialized views, extension tables): those are checked
    // for presence only, never against an estimate.
    let has_exact = recorded.iter().any(|t| t.rows.is_some());
    for t in recorded {
        let k = (db.to_string(), t.schema.clone(), t.name.clone());
        let Some(now) = counts.get(&k) else {
            missing.push(format!("{}.{}", t.schema, t.name));
            continue;
        };
        match (*now, t.rows, t.row_estimate) {
            (Some(n), Some(r), _) => {
                exact += 1;
                if n != r {
                    differ.push(format!(
                        "{}.{}: {n} rows, {r} at backup time",
                        t.schema, t.name
                    ));
                }
            }
            (Some(n), None, Some(e)) if !has_exact => {
                estimated += 1;
                // an estimate: allow 10% (and 10 rows) of drift
                let slack = (e.abs() / 10).max(10);
                if (n - e).abs() > slack {
                    differ.push(format!(
                        "{}.{}: {n} rows, estimated {e} at backup time",
                        t.schema, t.name
                    ));
                } else if n != e {
                    near += 1;
                }
            }
            _ => {}
        }
    }
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("missing tables: {}", missing.join(", ")));
    }
    if !differ.is_empty() {
        why.push(differ.join("; "));
    }
    if !why.is_empty() {
        return Check::new(name, false, why.join("; "));
    }
    let mut detail = format!(
        "{} tables present, {exact} row counts equal the exact counts at backup time",
        recorded.len()
    );
    if estimated > 0 {
        detail.push_str(&format!(
            ", {estimated} match the recorded estimates ({near} within 10%; this backup has no exact counts)"
        ));
    }
    Check::new(name, true, detail)
}

/// Keys per database equal those the manifest recorded.
pub fn redis_keys(loaded: &[RedisDb], recorded: &[RedisDb]) -> Check {
    let show = crate::sources::redis::snapshot::show_keyspace;
    let ok = loaded
        .iter()
        .map(|d| (d.db, d.keys))
        .eq(recorded.iter().map(|d| (d.db, d.keys)));
    Check::new(
        "keys per database",
        ok,
        format!("loaded {}, recorded {}", show(loaded), show(recorded)),
    )
}

/// A Redis Cluster's backup: each shard's keys, as loaded into the
/// sandbox, equal those the slot map recorded, and their total.
pub fn redis_shards(shards: &[crate::sources::redis::snapshot::ShardRestored]) -> Check {
    let ok = shards
        .iter()
        .all(|s| s.keys_loaded == Some(s.keys_recorded));
    let total: u64 = shards.iter().filter_map(|s| s.keys_loaded).sum();
    let recorded: u64 = shards.iter().map(|s| s.keys_recorded).sum();
    let each: Vec<String> = shards
        .iter()
        .map(|s| {
            format!(
                "shard {} ({}, slots {}): {} of {}",
                s.shard,
                s.address,
                crate::sources::redis::cluster::show_ranges(&s.slots),
                s.keys_loaded.map_or("-".into(), |k| k.to_string()),
                s.keys_recorded
            )
        })
        .collect();
    Check::new(
        "keys per shard",
        ok,
        format!(
            "{} shards, {total} keys loaded of {recorded} recorded: {}",
            shards.len(),
            each.join("; ")
        ),
    )
}

/// The source's `verify_queries` (as configured now) run on a server
/// recovered to a point in time. Their results are not compared: those
/// recorded with the base backup describe the data at its start, and WAL
/// replay moved the data on; a query that fails on the restored data
/// (a table or function missing) fails the check.
pub async fn verify_queries_run(client: &Client, source: &str, queries: &[String]) -> Check {
    let name = "verify queries";
    if queries.is_empty() {
        return Check::skipped(name, "the source has no verify_queries");
    }
    match crate::sources::postgres::verify_queries::run(client, source, queries).await {
        Ok(r) => Check::new(
            name,
            true,
            format!(
                "{} quer{} ran on the recovered data ({} rows); results not compared: the data moved on since the base backup recorded them",
                r.len(),
                if r.len() == 1 { "y" } else { "ies" },
                r.iter().map(|q| q.row_count).sum::<u64>()
            ),
        ),
        Err(e) => Check::new(name, false, e.message),
    }
}

/// Per collection: records and probe queries as recorded (the import
/// itself fails on a mismatch; this shows what was compared).
pub fn chroma_collections(r: &crate::sources::chroma::import::ChromaRestoreReport) -> Vec<Check> {
    if r.collections.is_empty() {
        return vec![Check::skipped(
            "collections",
            "the export holds no collection",
        )];
    }
    r.collections
        .iter()
        .map(|c| {
            Check::new(
                format!("collection {}", c.name),
                c.records == c.expected && c.probes_matched == c.probes,
                format!(
                    "{} of {} records; {} of {} probe queries matched (recall of the rebuilt index ≥ {:.2})",
                    c.records, c.expected, c.probes_matched, c.probes, c.min_recall
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, est: Option<i64>) -> TableInfo {
        TableInfo {
            schema: "public".into(),
            name: name.into(),
            row_estimate: est,
            total_bytes: 0,
            rows: None,
        }
    }

    fn counted(name: &str, rows: i64) -> TableInfo {
        TableInfo {
            rows: Some(rows),
            ..table(name, Some(rows + 5))
        }
    }

    #[test]
    fn dump_rows_exact_counts_must_be_equal() {
        let mut c = Counts::new();
        c.insert(("app".into(), "public".into(), "a".into()), Some(10));
        c.insert(("app".into(), "public".into(), "parted".into()), None);
        let ok = dump_rows("app", &[counted("a", 10), table("parted", None)], &c);
        assert_eq!(ok.outcome, super::super::report::Outcome::Pass, "{ok:?}");
        assert!(
            ok.detail.contains("1 row counts equal the exact counts"),
            "{ok:?}"
        );
        // one row off is a failure for an exact count (an estimate allows it)
        // a table without an exact count in a backup with exact counts (a
        // materialized view) is checked for presence only
        c.insert(("app".into(), "public".into(), "mv".into()), Some(1000));
        let mv = dump_rows("app", &[counted("a", 10), table("mv", Some(5))], &c);
        assert_eq!(mv.outcome, super::super::report::Outcome::Pass, "{mv:?}");
        let bad = dump_rows("app", &[counted("a", 11)], &c);
        assert_eq!(bad.outcome, super::super::report::Outcome::Fail);
        assert_eq!(bad.detail, "public.a: 10 rows, 11 at backup time");
    }

    #[test]
    fn dump_rows_names_missing_and_different_tables() {
        let mut c = Counts::new();
        c.insert(("app".into(), "public".into(), "a".into()), Some(10));
        c.insert(("app".into(), "public".into(), "b".into()), Some(3));
        let ok = dump_rows("app", &[table("a", Some(10)), table("b", None)], &c);
        assert_eq!(ok.outcome, super::super::report::Outcome::Pass, "{ok:?}");
        let near = dump_rows("app", &[table("a", Some(11))], &c);
        assert_eq!(near.outcome, super::super::report::Outcome::Pass);
        let bad = dump_rows("app", &[table("a", Some(100)), table("z", Some(1))], &c);
        assert_eq!(bad.outcome, super::super::report::Outcome::Fail);
        assert_eq!(
            bad.detail,
            "missing tables: public.z; public.a: 10 rows, estimated 100 at backup time"
        );
    }

    #[test]
    fn replay_completeness_from_log_and_history() {
        use crate::sources::postgres::wal::{SegmentName, SegmentSize};
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pg_wal")).unwrap();
        let newest: SegmentName = "000000010000000000000006".parse().unwrap();
        let size = SegmentSize::new(16 << 20);
        let outcome = |c: Check| c.outcome;
        // no history: only the log is looked at
        assert_eq!(
            outcome(replay_complete(d.path(), Some(newest), size, true)),
            super::super::report::Outcome::Pass
        );
        std::fs::write(
            d.path().join("pg_wal/00000002.history"),
            "1\t0/5000000\tno recovery target specified\n",
        )
        .unwrap();
        let c = replay_complete(d.path(), Some(newest), size, true);
        assert_eq!(c.outcome, super::super::report::Outcome::Fail, "{c:?}");
        assert!(
            c.detail.contains("before the newest archived segment"),
            "{c:?}"
        );
        // to a time: stopping early is the point
        assert_eq!(
            outcome(replay_complete(d.path(), Some(newest), size, false)),
            super::super::report::Outcome::Pass
        );
        std::fs::write(
            d.path().join("pg_wal/00000002.history"),
            "1\t0/6000100\tno recovery target specified\n",
        )
        .unwrap();
        assert_eq!(
            outcome(replay_complete(d.path(), Some(newest), size, true)),
            super::super::report::Outcome::Pass
        );
        std::fs::write(
            crate::sources::postgres::server::server_log(d.path()),
            "LOG: x\nstrata: error: object wal/m/1/0001 is damaged: decryption error\n",
        )
        .unwrap();
        let c = replay_complete(d.path(), Some(newest), size, false);
        assert_eq!(c.outcome, super::super::report::Outcome::Fail);
        assert!(c.detail.contains("is damaged"), "{c:?}");
    }

    #[test]
    fn redis_counts() {
        let db = |db, keys| RedisDb {
            db,
            keys,
            expires: 0,
        };
        assert_eq!(
            redis_keys(&[db(0, 3)], &[db(0, 3)]).outcome,
            super::super::report::Outcome::Pass
        );
        let c = redis_keys(&[db(0, 3)], &[db(0, 3), db(1, 1)]);
        assert_eq!(c.outcome, super::super::report::Outcome::Fail);
        assert_eq!(c.detail, "loaded db0=3, recorded db0=3 db1=1");
    }
}

//! PITR exactness as a property (issue 13, "PITR exactness as a
//! property"): a workload commits numbered rows into `ledger`, one small
//! transaction at a time, across base backups, WAL segment switches and
//! restore points, and keeps on the client side, for every transaction,
//! its rows, its exact commit timestamp and the WAL positions around it.
//! Then random targets (times, LSNs, restore points) are each restored with
//! `strata restore … --start` into a fresh directory, and the restored
//! `ledger` must be exactly the rows of transactions 1..k for the gap k the
//! target lies in: nothing missing, nothing extra, no torn transaction.
//!
//! How many targets: `STRATA_PITR_PROPERTY_N` time targets (default 4,
//! small enough for CI) plus N/2 LSNs and N/2 restore points (at least
//! one each); `scripts/pitr_property.sh [N]` runs a big one (N = 20). The
//! RNG seed is printed; `STRATA_PITR_PROPERTY_SEED` replays the same choice
//! of gaps and of positions inside them (the times and LSNs themselves
//! differ from run to run).
//!
//! Why each kind of target is unambiguous (strata writes no
//! `recovery_target_inclusive`, so PostgreSQL's default `on` holds):
//! - time T: recovery stops *before* the first commit whose timestamp is
//!   later than T, so exactly the commits with timestamp <= T are
//!   replayed. The commit timestamps are exact (`track_commit_timestamp`,
//!   the same value the commit record carries, in microseconds, which is
//!   also what strata writes into `recovery_target_time`), and T is drawn
//!   strictly between commit k's and commit k+1's, so a clock's rounding
//!   cannot move a commit across T. Autovacuum is off: its commits take
//!   their timestamp before they are written, so one could be written
//!   before commit k with a timestamp after T and stop recovery early
//!   (PostgreSQL's semantics, not strata's doing); with it off, this test's
//!   session makes the only commits.
//! - LSN L: recovery stops *after* the first record that starts at or
//!   after L. L is drawn from [insert position read after commit k, insert
//!   position read inside transaction k+1 before its first row]: commit k
//!   starts below L, and everything of transaction k+1 starts at or above
//!   L, so its commit record comes after the stop. A segment switch or a
//!   base backup in that gap puts L into the switched segment's unused
//!   tail or among the backup's records, which must not matter. Besides
//!   the random ones, the end LSN of each base backup taken during the
//!   workload is a target, which strata must restore from that backup.
//! - restore point `p-k`: created between commit k and transaction k+1;
//!   recovery stops right after it. strata restores the newest base
//!   backup for a name, so a point older than that backup is restored
//!   with `--backup` naming the newest one taken before the point.
//!
//! Not among the targets: xids (strata has no `--to-xid`).
mod common;

use std::fs;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::archiving::{Repo, text};
use common::at_exit;
use common::free_port;
use common::pg::{PgCluster, PgOptions, pg_ctl_at, pg_scratch_dir, psql_at};

/// One committed transaction of the workload, as the client saw it.
struct Txn {
    /// Its rows as the check query prints them: `n:committed_at_us:lsn`.
    rows: Vec<String>,
    /// Last `n` it inserted.
    last_n: u64,
    /// Exact commit timestamp, microseconds since the Unix epoch.
    commit_us: i64,
    /// WAL insert position read right after the commit.
    after: u64,
    /// WAL insert position read inside the transaction before its first
    /// row (filled in for all but the last transaction once the next one
    /// ran: it is the `lsn` of the next transaction's first row).
    next_first: Option<u64>,
}

/// What the workload left behind.
struct Workload {
    pg: PgCluster,
    repo: Repo,
    /// Transaction k is `txns[k - 1]`.
    txns: Vec<Txn>,
    backups: Vec<Backup>,
    /// `(k, name)`: a restore point created between k and k+1.
    points: Vec<(usize, String)>,
}

/// A base backup taken between transactions `gap` and `gap + 1` (after
/// that gap's restore point, if it has one).
struct Backup {
    gap: usize,
    id: String,
    /// Its end LSN (`STOP WAL LOCATION` of its backup history file).
    stop: u64,
}

#[derive(Debug)]
enum Target {
    Time(String),
    Lsn(String),
    Name {
        name: String,
        backup: Option<String>,
    },
}

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn fmt_lsn(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)
}

fn fmt_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `extract(epoch …)` is numeric since PostgreSQL 14: exact microseconds.
const US: &str = "(extract(epoch FROM {}) * 1000000)::bigint";

fn us_of(expr: &str) -> String {
    US.replace("{}", expr)
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn base_backup(w: &Repo, pg: &PgCluster, gap: usize) -> Backup {
    let out = w.strata(&["--json", "backup", "main", "--kind", "base"]);
    assert!(
        out.status.success(),
        "base backup: {}\n{}",
        text(&out),
        pg.log_tail(30)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stop = pg.psql(
        "postgres",
        "SELECT substring(pg_read_file('pg_wal/' || name) FROM 'STOP WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)') \
         FROM pg_ls_waldir() WHERE name LIKE '%.backup' ORDER BY name DESC LIMIT 1",
    );
    assert!(!stop.is_empty(), "no backup history file in pg_wal: {v}");
    Backup {
        gap,
        id: v["id"].as_str().expect("backup id").to_string(),
        stop: parse_lsn(&stop),
    }
}

/// Commits `txns` transactions of 1–3 rows; `points` restore points and
/// two base backups land in random gaps, a segment switch in about every
/// fifth gap. Ends with everything archived.
fn workload(rng: &mut StdRng, txns: usize, points: usize) -> Workload {
    let repo = Repo::new("pitr-prop");
    let mut conf = repo.archive_conf();
    conf.push("track_commit_timestamp = on".into());
    conf.push("autovacuum = off".into());
    // a checkpoint removes archived backup history files, which
    // `base_backup` reads right after each backup: only the backups'
    // own checkpoints (at their start) may run
    conf.push("checkpoint_timeout = '1d'".into());
    conf.push("max_wal_size = '8GB'".into());
    let pg = PgCluster::start(PgOptions {
        extra_conf: conf,
        name: "pitr-prop",
        ..Default::default()
    });
    repo.write_config(&pg.url("postgres"));
    pg.psql(
        "postgres",
        "CREATE TABLE ledger (n bigint PRIMARY KEY, committed_at timestamptz NOT NULL, lsn pg_lsn NOT NULL)",
    );
    let mut w = Workload {
        backups: vec![base_backup(&repo, &pg, 0)],
        pg,
        repo,
        txns: Vec::with_capacity(txns),
        points: Vec::new(),
    };
    // gaps 1..txns-1 lie between two transactions
    let mut point_gaps = rand::seq::index::sample(rng, txns - 1, points).into_vec();
    point_gaps.iter_mut().for_each(|g| *g += 1);
    let backup_gaps = [txns / 3, 2 * txns / 3].map(|g| g + rng.random_range(0..txns / 6));
    let mut n = 0u64;
    for k in 1..=txns {
        let (a, b) = (n + 1, n + rng.random_range(1..=3u64));
        n = b;
        // one psql: `-c`s run one after the other, each in its own
        // transaction; only the SELECT prints
        let out = w
            .pg
            .psql_cmd("postgres")
            .args([
                "-c",
                &format!(
                    "INSERT INTO ledger SELECT n, clock_timestamp(), pg_current_wal_insert_lsn() \
                     FROM generate_series({a}, {b}) n"
                ),
                "-c",
                &format!(
                    "SELECT n || ':' || {} || ':' || lsn, {}, pg_current_wal_insert_lsn() \
                     FROM ledger WHERE n BETWEEN {a} AND {b} ORDER BY n",
                    us_of("committed_at"),
                    us_of("pg_xact_commit_timestamp(xmin)")
                ),
            ])
            .output()
            .expect("spawn psql");
        assert!(out.status.success(), "transaction {k}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<Vec<&str>> = stdout
            .lines()
            .map(|l| l.split('|').collect::<Vec<_>>())
            .collect();
        assert_eq!(lines.len() as u64, b - a + 1, "{stdout}");
        let first_lsn = parse_lsn(lines[0][0].splitn(3, ':').nth(2).unwrap());
        if let Some(prev) = w.txns.last_mut() {
            prev.next_first = Some(first_lsn);
            assert!(prev.after <= first_lsn, "WAL positions go forward");
        }
        let txn = Txn {
            rows: lines.iter().map(|l| l[0].to_string()).collect(),
            last_n: b,
            commit_us: lines[0][1].parse().unwrap(),
            after: parse_lsn(lines[0][2]),
            next_first: None,
        };
        if let Some(prev) = w.txns.last() {
            assert!(
                prev.commit_us < txn.commit_us,
                "commit timestamps go forward"
            );
        }
        w.txns.push(txn);
        if k == txns {
            break;
        }
        // the gap between transaction k and k+1
        if point_gaps.contains(&k) {
            let name = format!("p-{k}");
            w.pg.psql(
                "postgres",
                &format!("SELECT pg_create_restore_point('{name}')"),
            );
            w.points.push((k, name));
        }
        if backup_gaps.contains(&k) {
            let b = base_backup(&w.repo, &w.pg, k);
            w.backups.push(b);
        }
        if rng.random_ratio(1, 5) {
            w.pg.psql("postgres", "SELECT pg_switch_wal()");
        }
    }
    let last = w.pg.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    w.pg.psql("postgres", "SELECT pg_switch_wal()");
    w.pg.wait_for(
        "postgres",
        &format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver"),
        "t",
        Duration::from_secs(120),
    );
    assert_eq!(
        w.pg.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "{}",
        w.pg.log_tail(40)
    );
    w
}

/// Restores `target` with `--start` into a fresh directory; returns what
/// the check query printed (`count|max(n)|rows`) and the id of the base
/// backup strata chose, then stops the server and removes the directory.
fn restore(w: &Workload, label: &str, target: &Target) -> (String, String) {
    let scratch = pg_scratch_dir(label);
    let dir = scratch.join("data");
    let dir_s = dir.display().to_string();
    let port = free_port().to_string();
    let stop_dir = dir.clone();
    at_exit(move || {
        let _ = pg_ctl_at(&stop_dir, &["stop", "-m", "immediate"]);
    });
    let mut args = vec!["--json", "restore", "main", "--target-dir", dir_s.as_str()];
    match target {
        Target::Time(t) => args.extend(["--to-time", t.as_str()]),
        Target::Lsn(l) => args.extend(["--to-lsn", l.as_str()]),
        Target::Name { name, backup } => {
            // points made with pg_create_restore_point, not recorded by
            // strata: looked for in the WAL
            args.extend(["--to-name", name.as_str(), "--unrecorded-name"]);
            if let Some(id) = backup {
                args.extend(["--backup", id.as_str()]);
            }
        }
    }
    // the copy must not archive a new timeline into the repository the
    // next restores read
    args.extend(["--archive-mode", "off", "--start", "--port", port.as_str()]);
    let out = w.repo.strata(&args);
    let log = fs::read_to_string(dir.join("strata-restore.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "restore {target:?}: {}\n{log}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["started"], true, "{report}");
    let q = psql_at(port.parse().unwrap(), "postgres")
        .args([
            "-c",
            &format!(
                "SELECT count(*) || '|' || coalesce(max(n), 0) || '|' || \
                 coalesce(string_agg(n || ':' || {} || ':' || lsn, ',' ORDER BY n), '') FROM ledger",
                us_of("committed_at")
            ),
        ])
        .output()
        .expect("spawn psql");
    let stop = pg_ctl_at(&dir, &["stop", "-m", "fast", "-w"]);
    assert!(
        q.status.success(),
        "query the restored copy: {}\n{log}",
        text(&q)
    );
    assert!(stop.status.success(), "pg_ctl stop: {}", text(&stop));
    let _ = fs::remove_dir_all(&scratch);
    (
        String::from_utf8_lossy(&q.stdout).trim().to_string(),
        report["backup"].as_str().unwrap_or("?").to_string(),
    )
}

#[test]
fn restores_to_random_times_lsns_and_restore_points_hold_exactly_the_rows_committed_before() {
    let n_time = env_num("STRATA_PITR_PROPERTY_N").unwrap_or(4).max(1) as usize;
    let n_lsn = (n_time / 2).max(1);
    let n_name = (n_time / 2).max(1);
    let seed = env_num("STRATA_PITR_PROPERTY_SEED").unwrap_or_else(rand::random);
    eprintln!(
        "pitr_property: seed {seed} (STRATA_PITR_PROPERTY_SEED={seed} replays the choice), \
         {n_time} times, {n_lsn} LSNs, {n_name} restore points"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let txn_count = 30 + 3 * n_time;
    let w = workload(&mut rng, txn_count, n_name);
    eprintln!(
        "pitr_property: {} transactions, {} rows, base backups after transactions {:?}",
        w.txns.len(),
        w.txns.last().unwrap().last_n,
        w.backups.iter().map(|b| b.gap).collect::<Vec<_>>()
    );

    // (gap k, target, the base backup strata must choose, if one is
    // certain): the restored ledger must be transactions 1..k
    let mut targets: Vec<(usize, Target, Option<&str>)> = Vec::new();
    for _ in 0..n_time {
        let k = rng.random_range(1..txn_count);
        let (lo, hi) = (w.txns[k - 1].commit_us, w.txns[k].commit_us);
        assert!(hi - lo >= 2, "commits {k} and {} 1 µs apart", k + 1);
        // strictly between the two commits
        targets.push((k, Target::Time(fmt_us(rng.random_range(lo + 1..hi))), None));
    }
    for _ in 0..n_lsn {
        let k = rng.random_range(1..txn_count);
        let t = &w.txns[k - 1];
        let hi = t.next_first.expect("not the last transaction");
        targets.push((
            k,
            Target::Lsn(fmt_lsn(rng.random_range(t.after..=hi))),
            None,
        ));
    }
    // the edge of a backup: an LSN exactly at its end is in the gap it
    // was taken in, and the backup itself fits it (its end is at or
    // below the target), so strata restores that one
    for b in w.backups.iter().filter(|b| b.gap > 0) {
        let t = &w.txns[b.gap - 1];
        assert!(t.after <= b.stop && Some(b.stop) <= t.next_first);
        targets.push((b.gap, Target::Lsn(fmt_lsn(b.stop)), Some(b.id.as_str())));
    }
    for (k, name) in &w.points {
        // the newest backup taken before the point, unless it is the
        // newest of all (strata's default for a name); in the same gap
        // the point comes first
        let before = w.backups.iter().rev().find(|b| b.gap < *k).unwrap();
        let newest = w.backups.last().unwrap();
        targets.push((
            *k,
            Target::Name {
                name: name.clone(),
                backup: (before.id != newest.id).then(|| before.id.clone()),
            },
            Some(before.id.as_str()),
        ));
    }

    let mut failures = Vec::new();
    for (i, (k, target, want_backup)) in targets.iter().enumerate() {
        let (got, backup) = restore(&w, &format!("pitr-prop-{i}"), target);
        let want_rows: Vec<&str> = w.txns[..*k]
            .iter()
            .flat_map(|t| t.rows.iter().map(String::as_str))
            .collect();
        let last = w.txns[k - 1].last_n;
        let want = format!("{last}|{last}|{}", want_rows.join(","));
        let verdict = if got == want { "exact" } else { "WRONG" };
        eprintln!(
            "pitr_property: {target:?} (after transaction {k}, rows 1..{last}) from {backup}: {verdict}"
        );
        if let Some(b) = want_backup
            && backup != *b
        {
            failures.push(format!("{target:?}: restored from {backup}, not {b}"));
        }
        if got != want {
            let f: Vec<&str> = got.splitn(3, '|').collect();
            let restored: Vec<&str> = f.get(2).map_or(Vec::new(), |r| r.split(',').collect());
            let first_diff = (0..want_rows.len().max(restored.len()))
                .find(|&i| want_rows.get(i) != restored.get(i))
                .map(|i| {
                    format!(
                        "first difference at row {}: expected {:?}, restored {:?}",
                        i + 1,
                        want_rows.get(i),
                        restored.get(i)
                    )
                })
                .unwrap_or_default();
            failures.push(format!(
                "{target:?}: expected rows 1..{last} (through transaction {k}), restored count {}, max {}; {first_diff}",
                f.first().unwrap_or(&"?"),
                f.get(1).unwrap_or(&"?"),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {} restores were not exact:\n{}",
        failures.len(),
        targets.len(),
        failures.join("\n")
    );
}

//! Recovery drills: restore every source into a throwaway sandbox on this
//! host, prove the result works, measure how long it took (RTO) and how
//! much it would have lost (RPO), and keep the evidence.
//!
//! Per source, in turn (two cores do not restore three sources faster in
//! parallel, and one at a time keeps each phase's timing honest):
//! [`crate::restore::plan::plan`] chooses the backup (and WAL) — the same choice
//! `strata restore --all` makes — [`recover::recover`] restores it into a
//! server on a free loopback port, [`checks`] run against that server, and
//! the sandbox's servers are stopped before the next source starts. The
//! sandbox ([`crate::restore::sandbox`]) is torn down at the end whatever
//! happened.
//!
//! Measures: a source's RTO runs from the start of its restore until its
//! server answers (promoted, loaded), checks excluded; the drill's RTO is
//! the sum (sources are restored one after another). RPO is the target
//! time (now, for `--latest`) minus the newest point the restore brings
//! back. Targets (`rto_target`, `rpo_target` per source, else `[drill]`)
//! turn them into pass/fail.

pub mod checks;
pub mod html;
pub mod report;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::config::Source;
use crate::error::Result;
use crate::keys::Identity;
use crate::progress::Reporter;
use crate::restore::plan::{Method, Plan, Point};
use crate::restore::recover::{self, Serve};
use crate::restore::sandbox::Sandbox;
use report::{Check, Phase, SourceReport};

/// What to drill.
pub struct Options {
    pub point: Point,
    pub now: DateTime<Utc>,
    pub sources: Vec<Source>,
    pub dry_run: bool,
    /// `[drill]` targets, for sources without their own.
    pub rto_target: Option<chrono::Duration>,
    pub rpo_target: Option<chrono::Duration>,
}

/// Drills every source of `opts` in turn, appending to `out` as it goes.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    repo: &crate::catalog::Repository,
    identities: &Arc<Vec<Identity>>,
    restore_command: &(dyn Fn(&str) -> Result<String> + Send + Sync),
    owner: Option<String>,
    opts: &Options,
    sandbox: Option<&Sandbox>,
    reporter: &Reporter,
    out: &mut Vec<SourceReport>,
) {
    crate::pipeline::track_verified();
    for src in &opts.sources {
        let r = drill_source(
            repo,
            identities,
            restore_command,
            owner.clone(),
            opts,
            sandbox,
            reporter,
            src,
        )
        .await;
        if let Some(sb) = sandbox {
            sb.stop_servers();
            // one source's copy at a time: the host need not hold them all
            let _ = std::fs::remove_dir_all(sb.dir(&src.name));
        }
        out.push(r);
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
async fn drill_source(
    repo: &crate::catalog::Repository,
    identities: &Arc<Vec<Identity>>,
    restore_command: &(dyn Fn(&str) -> Result<String> + Send + Sync),
    owner: Option<String>,
    opts: &Options,
    sandbox: Option<&Sandbox>,
    reporter: &Reporter,
    src: &Source,
) -> SourceReport {
    let mut sr = SourceReport::new(&src.name, src.kind.as_str());
    sr.rto_target_seconds = src.rto_target.or(opts.rto_target).map(seconds);
    sr.rpo_target_seconds = src.rpo_target.or(opts.rpo_target).map(seconds);
    let plan = match crate::restore::plan::plan(repo, src, opts.point, identities, opts.now).await {
        Ok(p) => p,
        Err(e) => {
            sr.error = Some(e.message);
            sr.hint = e.hint;
            return sr;
        }
    };
    sr.method = Some(plan.method.as_str().into());
    sr.backup = Some(plan.backup_id());
    sr.chain = plan.chain();
    sr.restorable_point = Some(plan.restorable_point);
    sr.rpo_seconds = Some(plan.skew_seconds());
    sr.bytes = plan.bytes;
    sr.wal = plan.wal.clone();
    let Some(sandbox) = sandbox.filter(|_| !opts.dry_run) else {
        sr.sandbox = Some(format!(
            "a free port on 127.0.0.1, in the sandbox under the work dir ({})",
            match plan.method {
                Method::BaseWal => "postgres from the base backup, WAL replayed",
                Method::Dump => "a scratch postgres cluster, pg_restore",
                Method::Snapshot => "redis-server loading the snapshot",
                Method::Export => "a scratch chroma server importing the export",
            }
        ));
        return sr;
    };
    let port = match crate::util::free_port() {
        Ok(p) => p,
        Err(e) => {
            sr.error = Some(e.message);
            return sr;
        }
    };
    let dir = sandbox.dir(&src.name);
    sr.sandbox = Some(format!("127.0.0.1:{port} in {}", dir.display()));
    let ctx = recover::Context {
        repo,
        identities: identities.clone(),
        restore_command: match restore_command(&src.name) {
            Ok(c) => c,
            Err(e) => {
                sr.error = Some(e.message);
                return sr;
            }
        },
        owner,
        reporter,
    };
    reporter.note(format!(
        "drill {}: {} {} into {}",
        src.name,
        plan.method.as_str(),
        plan.backup_id(),
        sr.sandbox.as_deref().unwrap_or_default()
    ));
    let serve = Serve { sandbox, port };
    // A restore that hangs must not hang a scheduled drill forever: past
    // twice its RTO target the source has failed anyway.
    let limit = sr
        .rto_target_seconds
        .map(|t| std::time::Duration::from_secs_f64((2.0 * t).max(60.0)));
    let restored = match limit {
        Some(l) => match tokio::time::timeout(l, recover::recover(&ctx, &plan, &dir, Some(&serve)))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(crate::error::Error::failed(format!(
                "the restore did not answer within {:.0}s, twice its RTO target; it was stopped",
                l.as_secs_f64()
            ))
            .hint(format!("the sandbox logs were in {}", dir.display()))),
        },
        None => recover::recover(&ctx, &plan, &dir, Some(&serve)).await,
    };
    let rec = match restored {
        Ok(r) => r,
        // `wal fetch` refused a file and PostgreSQL stopped recovery
        // rather than promote early: the replay was not complete
        Err(e)
            if plan.method == Method::BaseWal
                && e.message
                    .starts_with(crate::sources::postgres::server::RECOVERY_STOPPED) =>
        {
            sr.checks = vec![Check::new("WAL replayed completely", false, e.message)];
            sr.hint = e.hint;
            return sr;
        }
        Err(e) => {
            sr.error = Some(e.message);
            sr.hint = e.hint;
            return sr;
        }
    };
    let answered = rec.answered_after.as_secs_f64();
    sr.rto_seconds = Some(answered);
    sr.throughput_bytes_per_second = Some(sr.bytes as f64 / answered.max(0.001));
    sr.phases = rec.phases.clone();
    let t = Instant::now();
    sr.checks = run_checks(&plan, &rec, identities, src).await;
    for w in &rec.warnings {
        sr.checks.push(Check::skipped("restore warning", w.clone()));
    }
    sr.phases.push(Phase {
        name: "checks".into(),
        start_seconds: answered,
        seconds: t.elapsed().as_secs_f64(),
    });
    sr
}

/// Every object the backup's manifest lists was read and verified in full
/// by this restore (age authentication, stored size, plain size, SHA-256;
/// see [`crate::pipeline::verified`]): fails naming any object the restore
/// did not read.
fn objects_verified(plan: &Plan, identities: &Arc<Vec<Identity>>, more: &str) -> Check {
    let name = "object checksums";
    let manifest = match plan.entry.file.open(&plan.entry.manifest_key, identities) {
        Ok(m) => m,
        Err(e) => return Check::new(name, false, e.message),
    };
    let keys: Vec<&str> = manifest.objects.iter().map(|o| o.key.as_str()).collect();
    let missed: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !crate::pipeline::verified(k))
        .collect();
    if missed.is_empty() {
        Check::new(
            name,
            true,
            format!(
                "{} of {} objects of backup {} read and verified in full (age authentication, size, SHA-256 against the manifest){more}",
                keys.len(),
                keys.len(),
                plan.backup_id()
            ),
        )
    } else {
        Check::new(
            name,
            false,
            format!(
                "{} of {} objects of backup {} were not read by the restore: {}",
                missed.len(),
                keys.len(),
                plan.backup_id(),
                missed.join(", ")
            ),
        )
    }
}

async fn run_checks(
    plan: &Plan,
    rec: &recover::Recovered,
    identities: &Arc<Vec<Identity>>,
    src: &Source,
) -> Vec<Check> {
    let mut out = Vec::new();
    match plan.method {
        Method::BaseWal => {
            out.push(objects_verified(
                plan,
                identities,
                &format!(
                    "; the {} WAL segment(s) are verified by `wal fetch` as PostgreSQL replays them (a failure fails \"WAL replayed completely\")",
                    plan.wal.as_ref().map_or(0, |w| w.segments)
                ),
            ));
            let source_user = rec.pg.as_ref().expect("a served base restore has a server");
            let (server, client) = match checks::as_superuser(source_user).await {
                Ok(s) => s,
                Err(e) => {
                    out.push(Check::new("connect", false, e));
                    return out;
                }
            };
            let server = &server;
            let target_time = match plan.target {
                Some(crate::sources::postgres::pitr::RecoveryTarget::Time(t)) => Some(t),
                _ => None,
            };
            out.extend(checks::promoted(&client, target_time).await);
            let size = plan.base.as_ref().and_then(|b| {
                crate::sources::postgres::wal::SegmentSize::new(b.base.wal_segment_size)
            });
            let newest = plan
                .wal
                .as_ref()
                .and_then(|w| w.last.as_deref())
                .and_then(|s| s.parse().ok());
            out.push(checks::replay_complete(
                &rec.dir,
                newest,
                size,
                target_time.is_none(),
            ));
            let dbs = match checks::databases(&client, None).await {
                Ok(d) => d,
                Err(e) => {
                    out.push(Check::new("list databases", false, e));
                    return out;
                }
            };
            let mut counts = checks::Counts::new();
            for db in &dbs {
                out.push(checks::read_tables(server, db, &mut counts).await);
                out.push(checks::amcheck(server, db).await);
            }
            out.push(checks::verify_queries_run(&client, &src.name, &src.verify_queries).await);
        }
        Method::Dump => {
            out.push(objects_verified(plan, identities, ""));
            let server = rec.pg.as_ref().expect("a served dump restore has a server");
            let db = rec.database.clone().unwrap_or_default();
            let mut counts = checks::Counts::new();
            out.push(checks::read_tables(server, &db, &mut counts).await);
            out.push(checks::amcheck(server, &db).await);
            out.push(match rec.verify_queries_checked {
                Some(n) if n > 0 => Check::new(
                    "verify queries",
                    true,
                    format!("{n} recorded result(s) equal those of the restored database"),
                ),
                _ => Check::skipped("verify queries", "none recorded with this backup"),
            });
            match plan
                .entry
                .file
                .open(&plan.entry.manifest_key, identities)
                .map(|m| m.postgres)
            {
                Ok(Some(info)) => out.push(checks::dump_rows(&db, &info.tables, &counts)),
                Ok(None) => {}
                Err(e) => out.push(Check::new("row counts as recorded", false, e.message)),
            }
        }
        Method::Snapshot => {
            out.push(objects_verified(
                plan,
                identities,
                " (and the RDB's own checksum)",
            ));
            if !rec.redis_shards.is_empty() {
                out.push(checks::redis_shards(&rec.redis_shards));
            }
            match &rec.redis {
                Some(s) => out.push(checks::redis_keys(&s.keyspace, &s.expected)),
                None => out.push(Check::new(
                    "keys per database",
                    false,
                    "no server was started",
                )),
            }
        }
        Method::Export => {
            out.push(objects_verified(plan, identities, ""));
            match &rec.chroma {
                Some(r) => out.extend(checks::chroma_collections(r)),
                None => out.push(Check::new("collections", false, "nothing was imported")),
            }
        }
    }
    out
}

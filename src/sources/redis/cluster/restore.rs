//! Restoring a Redis Cluster's backup, and restoring into a cluster:
//!
//! - `--to-dir DIR`: one RDB file per shard, named by shard number and
//!   slots (`shard-00-slots-0-5460.rdb`), and `cluster-slots.json` beside
//!   them saying which node served which slots: for a cluster of the same
//!   shape, each file goes to the master serving those slots.
//! - `--to-dir DIR --start` and drills: one standalone `redis-server` in
//!   DIR, every shard's keys loaded into it (a cluster's keys all live in
//!   database 0), keys counted per shard and in total.
//! - `--into URL` of a cluster node: every key to the master owning its
//!   slot ([`super::route`]), whatever the shape of either cluster; also a
//!   single server's backup (database 0 only). `--into` a standalone
//!   server: every shard's keys into it.
//!
//! A target holding keys is refused unless `--replace` (then each master
//! is emptied first with `FLUSHALL`), as for a single server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::route::{Framing, Replayed, Router, Sink, replay};
use super::{connect_all, show_ranges, topology, unsettled};
use crate::catalog::manifest::{ClusterInfo, ClusterShard, RedisDb, RedisInfo};
use crate::catalog::{Entry, Manifest};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::ObjectRecord;
use crate::progress::Reporter;
use crate::sources::redis::Target;
use crate::sources::redis::client::{Client, Reply, parse_keyspace};
use crate::sources::redis::load::IntoReport;
use crate::sources::redis::logical::LOGICAL_OBJECT;
use crate::sources::redis::snapshot::{
    RDB_OBJECT, RestoreOptions, RestoreReport, RestoreTo, ShardRestored, show_keyspace,
    start_server, write_rdb,
};
use crate::storage::Storage;

/// The slot map written beside per-shard files.
pub const SLOT_MAP_FILE: &str = "cluster-slots.json";

/// The file name of shard `i`: its number and first slot range (and how
/// many more ranges it had).
pub fn shard_file(i: usize, s: &ClusterShard) -> String {
    let first = s
        .slots
        .first()
        .map(|[a, b]| format!("{a}-{b}"))
        .unwrap_or_else(|| "none".into());
    let more = if s.slots.len() > 1 {
        format!("+{}", s.slots.len() - 1)
    } else {
        String::new()
    };
    format!("shard-{i:02}-slots-{first}{more}.rdb")
}

fn framing(s: &ClusterShard) -> Framing {
    if s.logical.is_some() {
        Framing::Logical
    } else {
        Framing::Rdb
    }
}

/// The objects to replay: each shard's, or a single server's one.
fn objects(manifest: &Manifest) -> Result<Vec<(ObjectRecord, Framing)>> {
    let id = &manifest.summary.id;
    let info = manifest
        .redis
        .as_ref()
        .ok_or_else(|| Error::integrity(format!("backup {id} is not a Redis snapshot")))?;
    let find = |name: &str| {
        manifest
            .object(name)
            .cloned()
            .ok_or_else(|| Error::integrity(format!("backup {id} has no object {name}")))
    };
    match &info.cluster {
        Some(c) => c
            .shards
            .iter()
            .map(|s| Ok((find(&s.object)?, framing(s))))
            .collect(),
        None if info.logical.is_some() => Ok(vec![(find(LOGICAL_OBJECT)?, Framing::Logical)]),
        None => Ok(vec![(find(RDB_OBJECT)?, Framing::Rdb)]),
    }
}

fn cluster_of(manifest: &Manifest) -> (&RedisInfo, &ClusterInfo) {
    let info = manifest.redis.as_ref().expect("a cluster backup");
    (info, info.cluster.as_ref().expect("a cluster backup"))
}

/// `snapshot::restore` for a cluster's backup.
pub async fn restore(
    storage: &Arc<dyn Storage>,
    entry: &Entry,
    manifest: Manifest,
    identities: Arc<Vec<Identity>>,
    opts: &RestoreOptions,
    reporter: &Reporter,
) -> Result<RestoreReport> {
    let clock = Instant::now();
    let summary = entry.summary();
    let (info, cluster) = cluster_of(&manifest);
    let (dir, start) = match &opts.to {
        RestoreTo::File(p) => {
            return Err(Error::usage(format!(
                "backup {} of {} is of a Redis Cluster ({} shards): it restores to one file per shard, not to {}",
                summary.id,
                summary.source,
                cluster.shards.len(),
                p.display()
            ))
            .hint("use --to-dir DIR (one RDB file per shard and the slot map), or --into redis://NODE of a cluster"));
        }
        RestoreTo::Dir { dir, start } => (dir.clone(), *start),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::failed(format!("cannot create directory {}: {e}", dir.display())))?;
    let mut shards = Vec::new();
    let mut warnings = Vec::new();
    let mut bytes = 0;
    let server = match start {
        None => {
            // refused before any file is written: a name taken
            let taken: Vec<PathBuf> = cluster
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| dir.join(shard_file(i, s)))
                .chain([dir.join(SLOT_MAP_FILE)])
                .filter(|p| p.exists())
                .collect();
            if !opts.force && !taken.is_empty() {
                return Err(
                    Error::conflict(format!("{} already exists", taken[0].display()))
                        .hint("choose another directory, or pass --force to replace the files"),
                );
            }
            for (i, s) in cluster.shards.iter().enumerate() {
                let rec = manifest.object(&s.object).cloned().ok_or_else(|| {
                    Error::integrity(format!("backup {} has no object {}", summary.id, s.object))
                })?;
                let path = dir.join(shard_file(i, s));
                match framing(s) {
                    Framing::Rdb => {
                        write_rdb(
                            storage,
                            &rec,
                            identities.clone(),
                            &path,
                            opts.force,
                            &summary.id.to_string(),
                            reporter,
                        )
                        .await?;
                    }
                    Framing::Logical => {
                        // a logical shard becomes an RDB file through a
                        // private redis-server, as a single server's does
                        let shard_info = RedisInfo {
                            keyspace: vec![RedisDb {
                                db: 0,
                                keys: s.keys,
                                expires: s.expires,
                            }],
                            logical: s.logical.clone(),
                            cluster: None,
                            ..info.clone()
                        };
                        let o = RestoreOptions {
                            to: RestoreTo::File(path.clone()),
                            force: opts.force,
                            bin_dir: opts.bin_dir.clone(),
                        };
                        let r = crate::sources::redis::logical::restore::restore(
                            storage,
                            entry,
                            rec.clone(),
                            shard_info,
                            identities.clone(),
                            &o,
                            reporter,
                        )
                        .await?;
                        warnings.extend(r.warnings);
                    }
                }
                bytes += rec.plain_size;
                shards.push(restored(i, s, None, Some(path)));
            }
            write_slot_map(
                &dir,
                &summary.id.to_string(),
                &summary.source,
                cluster,
                &shards,
                opts.force,
            )?;
            None
        }
        Some(port) => {
            if !opts.force && dir.join(RDB_OBJECT).exists() {
                return Err(Error::conflict(format!(
                    "{} already exists",
                    dir.join(RDB_OBJECT).display()
                ))
                .hint("choose another directory, or pass --force to replace it"));
            }
            let _ = std::fs::remove_file(dir.join(RDB_OBJECT));
            reporter.note(format!(
                "backup {} is of a cluster of {} shards: loading every shard into one redis-server on 127.0.0.1:{port}",
                summary.id,
                cluster.shards.len()
            ));
            let mut server = start_server(
                &dir,
                port,
                opts.bin_dir.as_deref(),
                &info.keyspace,
                reporter,
            )
            .await?;
            let t = Target::new(
                &url::Url::parse(&format!("redis://127.0.0.1:{port}")).expect("valid URL"),
            );
            let loaded = async {
                let mut c = Client::connect(&t).await?;
                let mut router = Router::single(t.clone(), Client::connect(&t).await?);
                for (i, s) in cluster.shards.iter().enumerate() {
                    let rec = manifest.object(&s.object).cloned().ok_or_else(|| {
                        Error::integrity(format!(
                            "backup {} has no object {}",
                            summary.id, s.object
                        ))
                    })?;
                    let r = replay(
                        storage,
                        &rec,
                        framing(s),
                        identities.clone(),
                        Sink::Load(&mut router),
                        reporter,
                    )
                    .await?;
                    note_functions(&r, &mut warnings);
                    shards.push(restored(i, s, Some(&r), None));
                    bytes += rec.plain_size;
                }
                crate::sources::redis::logical::restore::save(&mut c, &t).await?;
                Ok::<_, Error>(parse_keyspace(&c.info("keyspace").await?))
            }
            .await;
            let keyspace = match loaded {
                Ok(k) => k,
                Err(e) => {
                    unsafe {
                        libc::kill(server.pid as i32, libc::SIGTERM);
                    }
                    return Err(e);
                }
            };
            server.counts_match = keyspace
                .iter()
                .map(|d| (d.db, d.keys))
                .eq(info.keyspace.iter().map(|d| (d.db, d.keys)));
            if !server.counts_match {
                warnings.push(format!(
                    "key counts differ from the manifest's (taken by INFO just before each shard's snapshot): loaded {}, recorded {}",
                    show_keyspace(&keyspace),
                    show_keyspace(&info.keyspace)
                ));
            }
            server.keyspace = keyspace;
            Some(server)
        }
    };
    shard_warnings(&shards, &mut warnings);
    Ok(RestoreReport {
        backup: summary.id.to_string(),
        source: summary.source.clone(),
        path: match start {
            Some(_) => dir.join(RDB_OBJECT),
            None => dir.clone(),
        },
        bytes,
        redis_version: info.redis_version.clone(),
        rdb_version: info.rdb_version,
        server,
        duration_seconds: clock.elapsed().as_secs_f64(),
        warnings,
        shards,
    })
}

fn restored(
    i: usize,
    s: &ClusterShard,
    r: Option<&Replayed>,
    file: Option<PathBuf>,
) -> ShardRestored {
    ShardRestored {
        shard: i,
        node_id: s.node_id.clone(),
        address: s.address.clone(),
        slots: s.slots.clone(),
        keys_recorded: s.keys,
        keys_loaded: r.map(|r| r.totals.keys),
        file,
    }
}

fn note_functions(r: &Replayed, warnings: &mut Vec<String>) {
    if r.functions > 0 {
        warnings.push(format!(
            "the snapshot holds {} function librar{} (FUNCTION LOAD): keys are restored one by one, functions are not; load them by hand",
            r.functions,
            if r.functions == 1 { "y" } else { "ies" }
        ));
    }
}

fn shard_warnings(shards: &[ShardRestored], warnings: &mut Vec<String>) {
    for s in shards {
        if let Some(k) = s.keys_loaded
            && k != s.keys_recorded
        {
            warnings.push(format!(
                "shard {} ({}, slots {}): {k} keys in its snapshot, {} recorded by INFO just before it",
                s.shard,
                s.address,
                show_ranges(&s.slots),
                s.keys_recorded
            ));
        }
    }
}

/// Writes `cluster-slots.json`: which file holds which node's slots.
fn write_slot_map(
    dir: &std::path::Path,
    backup: &str,
    source: &str,
    cluster: &ClusterInfo,
    shards: &[ShardRestored],
    force: bool,
) -> Result<()> {
    let path = dir.join(SLOT_MAP_FILE);
    if !force && path.exists() {
        return Err(
            Error::conflict(format!("{} already exists", path.display()))
                .hint("choose another directory, or pass --force to replace it"),
        );
    }
    let files: Vec<serde_json::Value> = shards
        .iter()
        .map(|s| {
            serde_json::json!({
                "shard": s.shard,
                "file": s.file.as_ref().and_then(|f| f.file_name()).map(|f| f.to_string_lossy().into_owned()),
                "node_id": s.node_id,
                "address": s.address,
                "slots": s.slots,
                "keys": s.keys_recorded,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "backup": backup,
        "source": source,
        "skew_ms": cluster.skew_ms,
        "read_with": cluster.read_with,
        "shards": files,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("json"))
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}

/// Empties `client`'s server (`--replace`).
async fn flushall(client: &mut Client, t: &Target) -> Result<()> {
    match client.command(&[b"FLUSHALL"]).await? {
        Reply::Status(_) => Ok(()),
        Reply::Error(e) => Err(Error::source(format!("{}: FLUSHALL refused: {e}", t.display()))
            .hint("--replace empties the target first: the user needs FLUSHALL (ACL: +flushall), or empty it by hand")),
        other => Err(Error::source(format!("{}: FLUSHALL answered {other:?}", t.display()))),
    }
}

/// Loads the backup of `manifest` (a cluster's or a single server's) into
/// the cluster `url` names a node of; `client` is connected to it.
#[allow(clippy::too_many_arguments)]
pub async fn into_cluster(
    storage: &Arc<dyn Storage>,
    manifest: &Manifest,
    identities: Arc<Vec<Identity>>,
    url: &url::Url,
    mut client: Client,
    target_version: String,
    replace: bool,
    reporter: &Reporter,
) -> Result<IntoReport> {
    let clock = Instant::now();
    let t = Target::new(url);
    let summary = &manifest.summary;
    let info = manifest.redis.as_ref().ok_or_else(|| {
        Error::integrity(format!("backup {} is not a Redis snapshot", summary.id))
    })?;
    if info.keyspace.iter().any(|d| d.db != 0 && d.keys > 0) {
        return Err(Error::usage(format!(
            "backup {} of {} holds keys in databases other than 0 ({}); a Redis Cluster has only database 0",
            summary.id,
            summary.source,
            show_keyspace(&info.keyspace)
        ))
        .hint("restore it into a standalone server (--into redis://…, --to-dir)"));
    }
    let topo = topology(&mut client, &t, url).await?;
    let mut clients = connect_all(&topo, url).await?;
    if let Some(why) = unsettled(&topo, url, &mut clients).await? {
        return Err(Error::conflict(format!(
            "the target cluster at {} is not ready for a restore: {why}",
            t.display()
        ))
        .hint("restore into a cluster whose slots are all assigned and settled (redis-cli --cluster check HOST:PORT)"));
    }
    let mut before = 0u64;
    for c in &mut clients {
        before += parse_keyspace(&c.info("keyspace").await?)
            .iter()
            .map(|d| d.keys)
            .sum::<u64>();
    }
    if before > 0 && !replace {
        return Err(Error::conflict(format!(
            "the target cluster at {} is not empty ({before} keys); refusing to load the snapshot over it",
            t.display()
        ))
        .hint("restore into an empty cluster, or pass --replace to replace everything it holds"));
    }
    if before > 0 {
        for (m, c) in topo.masters.iter().zip(clients.iter_mut()) {
            flushall(c, &super::node_target(url, &m.host, m.port)).await?;
        }
    }
    reporter.note(format!(
        "restore {} of {} into the cluster at {} ({} masters, Redis {target_version}): each key to the master owning its slot",
        summary.id,
        summary.source,
        t.display(),
        topo.masters.len()
    ));
    let mut router = Router::cluster(url, &topo, clients);
    let (report, loaded) = replay_all(storage, manifest, identities, &mut router, reporter).await?;
    let sizes = router.sizes().await?;
    let total: u64 = sizes.iter().map(|(_, k)| k).sum();
    reporter.note(format!(
        "keys per master: {}",
        sizes
            .iter()
            .map(|(a, k)| format!("{a}={k}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    finish_into(
        manifest,
        t.display(),
        target_version,
        format!("RESTORE to {} masters by slot", topo.masters.len()),
        vec![RedisDb {
            db: 0,
            keys: total,
            expires: 0,
        }],
        before,
        report,
        loaded,
        router.redirected,
        clock,
    )
}

/// Loads a cluster's backup into the standalone server `client` is
/// connected to, once it passed the checks of `load::check_target`.
#[allow(clippy::too_many_arguments)]
pub async fn into_standalone(
    storage: &Arc<dyn Storage>,
    manifest: &Manifest,
    identities: Arc<Vec<Identity>>,
    t: &Target,
    mut client: Client,
    target_version: String,
    replaced_keys: u64,
    reporter: &Reporter,
) -> Result<IntoReport> {
    let clock = Instant::now();
    if replaced_keys > 0 {
        flushall(&mut client, t).await?;
    }
    reporter.note(format!(
        "restore {} of {} (a cluster's backup) into {} (Redis {target_version}): every shard's keys into database 0",
        manifest.summary.id,
        manifest.summary.source,
        t.display()
    ));
    let mut router = Router::single(t.clone(), client);
    let (report, loaded) = replay_all(storage, manifest, identities, &mut router, reporter).await?;
    let mut c = Client::connect(t).await?;
    let keyspace = parse_keyspace(&c.info("keyspace").await?);
    finish_into(
        manifest,
        t.display(),
        target_version,
        "RESTORE commands (a cluster's shards)".into(),
        keyspace,
        replaced_keys,
        report,
        loaded,
        router.redirected,
        clock,
    )
}

/// Replays every object of the backup through `router`.
async fn replay_all(
    storage: &Arc<dyn Storage>,
    manifest: &Manifest,
    identities: Arc<Vec<Identity>>,
    router: &mut Router,
    reporter: &Reporter,
) -> Result<(Vec<ShardRestored>, Vec<String>)> {
    let mut shards = Vec::new();
    let mut warnings = Vec::new();
    let objs = objects(manifest)?;
    let cluster = manifest.redis.as_ref().and_then(|r| r.cluster.as_ref());
    for (i, (rec, framing)) in objs.iter().enumerate() {
        let r = replay(
            storage,
            rec,
            *framing,
            identities.clone(),
            Sink::Load(router),
            reporter,
        )
        .await?;
        note_functions(&r, &mut warnings);
        if let Some(s) = cluster.and_then(|c| c.shards.get(i)) {
            shards.push(restored(i, s, Some(&r), None));
        }
    }
    if router.expired > 0 {
        warnings.push(format!(
            "{} keys had expired by the time they were restored (Redis drops them)",
            router.expired
        ));
    }
    shard_warnings(&shards, &mut warnings);
    Ok((shards, warnings))
}

#[allow(clippy::too_many_arguments)]
fn finish_into(
    manifest: &Manifest,
    target: &str,
    target_version: String,
    served_from: String,
    keyspace: Vec<RedisDb>,
    replaced_keys: u64,
    shards: Vec<ShardRestored>,
    mut warnings: Vec<String>,
    redirected: u64,
    clock: Instant,
) -> Result<IntoReport> {
    let info = manifest.redis.as_ref().expect("checked");
    let want: u64 = info.keyspace.iter().map(|d| d.keys).sum();
    let got: u64 = keyspace.iter().map(|d| d.keys).sum();
    if want != got {
        warnings.push(format!(
            "{got} keys loaded, {want} recorded by the manifest (INFO just before each snapshot; writes or expiries in between explain small differences)"
        ));
    }
    if redirected > 0 {
        warnings.push(format!(
            "{redirected} keys followed a MOVED/ASK redirection"
        ));
    }
    Ok(IntoReport {
        backup: manifest.summary.id.to_string(),
        source: manifest.summary.source.clone(),
        target: target.to_string(),
        target_version,
        served_from,
        bytes: manifest.objects.iter().map(|o| o.plain_size).sum(),
        rdb_version: info.rdb_version,
        keyspace,
        expected: info.keyspace.clone(),
        counts_match: want == got,
        replaced_keys,
        duration_seconds: clock.elapsed().as_secs_f64(),
        warnings,
        shards,
    })
}

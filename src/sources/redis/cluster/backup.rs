//! Backing up a Redis Cluster: read the slot map, make sure the cluster is
//! settled (state ok, every slot served, nothing migrating or importing —
//! checked a few times before giving up, since a resharding step is often
//! short), then take every master's snapshot concurrently, each exactly
//! as a single server's ([`crate::sources::redis::snapshot::take_node`]:
//! replication, or logical per `mode`), one object per shard. The slot map
//! is read and checked again afterwards: if it changed, or a migration
//! began, the backup is refused (no manifest), since a key that moved
//! could be in two shards or none.
//!
//! The cuts are concurrent, not one instant: the manifest records each
//! shard's cut and the skew between the first and the last.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{
    SETTLE_ATTEMPTS, SETTLE_PAUSE, Topology, connect_all, node_target, topology, unsettled,
};
use crate::catalog::manifest::{ClusterInfo, ClusterShard, RedisDb, RedisInfo, Summary};
use crate::catalog::{BackupId, Manifest};
use crate::config::Source;
use crate::error::{Error, Result};
use crate::sources::backup::{BackupContext, BackupReport};
use crate::sources::redis::Target;
use crate::sources::redis::client::Client;
use crate::sources::redis::snapshot::{NodeSnapshot, take_node};

/// The object names of shard `i`: replication, logical.
pub fn shard_objects(i: usize) -> (String, String) {
    (format!("shard-{i:02}.rdb"), format!("shard-{i:02}.rlog"))
}

/// Reads the slot map until the cluster is settled, at most
/// [`SETTLE_ATTEMPTS`] times.
async fn settled(
    ctx: &BackupContext<'_>,
    source: &Source,
    client: &mut Client,
) -> Result<Topology> {
    let url = &source.url;
    let t = Target::new(url);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let topo = topology(client, &t, url).await?;
        if topo.masters.is_empty() {
            return Err(Error::source(format!(
                "{}: the cluster at {} has no master serving slots",
                source.name,
                t.display()
            ))
            .hint("assign slots to the cluster (redis-cli --cluster create / fix) first"));
        }
        let mut clients = connect_all(&topo, url).await?;
        let why = match unsettled(&topo, url, &mut clients).await? {
            None => return Ok(topo),
            Some(why) => why,
        };
        if attempt >= SETTLE_ATTEMPTS {
            return Err(Error::source(format!(
                "{}: the cluster is not settled, no backup was taken: {why} (checked {attempt} times, {}s apart)",
                source.name,
                SETTLE_PAUSE.as_secs()
            ))
            .hint("a backup during a resharding could miss or double keys that move: let it finish (redis-cli --cluster check HOST:PORT; a slot left MIGRATING/IMPORTING needs redis-cli --cluster fix) and run the backup again")
            .retryable());
        }
        ctx.reporter.note(format!(
            "{}: the cluster is not settled ({why}); checking again in {}s",
            source.name,
            SETTLE_PAUSE.as_secs()
        ));
        tokio::time::sleep(SETTLE_PAUSE).await;
    }
}

/// Backs up the cluster `client` (connected to the source URL's node) is a
/// node of.
pub async fn backup(
    ctx: &BackupContext<'_>,
    source: &Source,
    tier: Option<String>,
    mut client: Client,
    started: DateTime<Utc>,
    clock: Instant,
) -> Result<BackupReport> {
    let url = &source.url;
    let topo = settled(ctx, source, &mut client).await?;
    let id = BackupId::new(started);
    ctx.reporter.note(format!(
        "backup {}: a cluster of {} masters (slot map from {}), their snapshots taken together",
        source.name,
        topo.masters.len(),
        topo.read_with
    ));
    let names: Vec<(String, String)> = (0..topo.masters.len()).map(shard_objects).collect();
    let targets: Vec<Target> = topo
        .masters
        .iter()
        .map(|m| node_target(url, &m.host, m.port))
        .collect();
    // Concurrently: the cuts as close together as the servers allow. The
    // first failure stops the others; nothing is committed then.
    let snaps: Vec<NodeSnapshot> = futures::future::try_join_all(
        targets
            .iter()
            .zip(&names)
            .map(|(t, (rdb, rlog))| take_node(ctx, source, t, None, &id, rdb, rlog)),
    )
    .await
    .map_err(|e| {
        e.context(format!(
            "backup of cluster {}: a shard failed, no backup was taken",
            source.name
        ))
    })?;
    // The slot map must not have changed while the snapshots ran.
    let t = Target::new(url);
    let mut client = match client.info("server").await {
        Ok(_) => client,
        Err(_) => Client::connect(&t).await?,
    };
    let after = topology(&mut client, &t, url).await?;
    let mut clients = connect_all(&after, url).await?;
    let changed = if !after.same_map(&topo) {
        Some("its slot map changed (a failover or a resharding)".to_string())
    } else {
        // a migration begun meanwhile moves keys one by one while the
        // slot keeps its owner: a moved key could be in no shard or two
        unsettled(&after, url, &mut clients).await?
    };
    if let Some(why) = changed {
        return Err(Error::source(format!(
            "{}: the cluster did not stay settled during the backup, no backup was taken: {why}",
            source.name
        ))
        .hint("run the backup again once the cluster is settled (redis-cli --cluster check HOST:PORT)")
        .retryable());
    }
    let cuts: Vec<DateTime<Utc>> = snaps.iter().filter_map(|s| s.captured).collect();
    let skew_ms = match (cuts.iter().min(), cuts.iter().max()) {
        (Some(a), Some(b)) => (*b - *a).num_milliseconds().max(0) as u64,
        _ => 0,
    };
    let mut keyspace: Vec<RedisDb> = Vec::new();
    for s in &snaps {
        for d in &s.keyspace {
            match keyspace.iter_mut().find(|k| k.db == d.db) {
                Some(k) => {
                    k.keys += d.keys;
                    k.expires += d.expires;
                }
                None => keyspace.push(d.clone()),
            }
        }
    }
    keyspace.sort_by_key(|d| d.db);
    let shards: Vec<ClusterShard> = topo
        .masters
        .iter()
        .zip(&snaps)
        .map(|(m, s)| ClusterShard {
            node_id: m.id.clone(),
            address: m.address(),
            slots: m.slots.clone(),
            keys: s.keyspace.iter().map(|d| d.keys).sum(),
            expires: s.keyspace.iter().map(|d| d.expires).sum(),
            object: s.record.name.clone(),
            redis_version: s.redis_version.clone(),
            rdb_version: s.rdb_version,
            transfer: s.transfer.clone(),
            captured: s.captured,
            logical: s.logical.clone(),
        })
        .collect();
    let finished = Utc::now();
    let info = RedisInfo {
        redis_version: snaps[0].redis_version.clone(),
        rdb_version: snaps.iter().map(|s| s.rdb_version).max().unwrap_or(0),
        keyspace,
        used_memory: snaps.iter().map(|s| s.used_memory).sum(),
        transfer: "cluster".into(),
        captured: cuts.iter().min().copied(),
        logical: None,
        cluster: Some(ClusterInfo {
            read_with: topo.read_with.to_string(),
            skew_ms,
            shards,
        }),
    };
    let mut manifest = Manifest::new(
        Summary::of(
            &id,
            &source.name,
            source.kind,
            "snapshot",
            tier,
            started,
            finished,
        ),
        snaps.into_iter().map(|s| s.record).collect(),
        None,
    );
    manifest.redis = Some(info);
    let r = ctx.commit(&manifest, clock).await?;
    ctx.reporter.note(format!(
        "{}: {} shards, the cuts {skew_ms} ms apart",
        source.name,
        topo.masters.len()
    ));
    Ok(r)
}

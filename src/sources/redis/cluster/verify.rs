//! `verify --read-data` of a cluster's backup: every shard's object is read
//! back (size and SHA-256 against the manifest, as for every object) and
//! parsed (the RDB's framing and CRC-64, or the logical format's records
//! and trailer); its keys are counted and compared with the slot map, and
//! every key must hash to a slot its master served — a key in the wrong
//! shard would be restored to the wrong place by a per-shard restore.

use std::sync::Arc;

use serde::Serialize;

use super::route::{Framing, Sink, replay};
use super::show_ranges;
use crate::catalog::Manifest;
use crate::catalog::manifest::ClusterInfo;
use crate::error::Result;
use crate::keys::Identity;
use crate::progress::{Mode, Reporter};
use crate::storage::Storage;

/// What verify found in one shard.
#[derive(Debug, Clone, Serialize)]
pub struct ShardCheck {
    pub shard: usize,
    pub address: String,
    pub slots: Vec<[u16; 2]>,
    pub keys_recorded: u64,
    /// Keys in the object; `None` when it could not be read.
    pub keys_read: Option<u64>,
    /// What is wrong with the shard (damage, keys outside its slots, a
    /// logical snapshot's count differing from its own record).
    pub problems: Vec<String>,
    /// What is worth saying but not wrong (a replication snapshot's count
    /// differing from `INFO keyspace` read just before it).
    pub notes: Vec<String>,
    /// Whether every problem was a decryption failure (a wrong key rather
    /// than damage: verify's exit code).
    #[serde(skip)]
    pub crypto_only: bool,
}

/// Reads and checks every shard of `manifest` (a cluster's backup). An
/// error is returned only for a failure that says nothing about the
/// backup (the store unreachable); damage lands in the shards' problems.
pub async fn check(
    storage: &Arc<dyn Storage>,
    manifest: &Manifest,
    cluster: &ClusterInfo,
    identities: Arc<Vec<Identity>>,
) -> Result<Vec<ShardCheck>> {
    let hidden = Reporter::new(Mode::Quiet);
    let mut out = Vec::new();
    for (i, s) in cluster.shards.iter().enumerate() {
        let mut c = ShardCheck {
            shard: i,
            address: s.address.clone(),
            slots: s.slots.clone(),
            keys_recorded: s.keys,
            keys_read: None,
            problems: Vec::new(),
            notes: Vec::new(),
            crypto_only: false,
        };
        let Some(rec) = manifest.object(&s.object) else {
            c.problems.push(format!(
                "shard {i}: the manifest lists no object {}",
                s.object
            ));
            out.push(c);
            continue;
        };
        let framing = if s.logical.is_some() {
            Framing::Logical
        } else {
            Framing::Rdb
        };
        match replay(
            storage,
            rec,
            framing,
            identities.clone(),
            Sink::Check(&s.slots),
            &hidden,
        )
        .await
        {
            Err(e) if e.kind == crate::error::Kind::Storage && e.retryable => return Err(e),
            Err(e) => c
                .problems
                .push(format!("shard {i} ({}): {}", s.object, e.message)),
            Ok(r) => {
                let keys = r.totals.keys;
                c.keys_read = Some(keys);
                if r.outside > 0 {
                    c.problems.push(format!(
                        "shard {i} ({}): {} keys hash to slots its master ({}, slots {}) did not serve (first: {:?})",
                        s.object,
                        r.outside,
                        s.address,
                        show_ranges(&s.slots),
                        String::from_utf8_lossy(r.first_outside.as_deref().unwrap_or_default())
                    ));
                }
                if keys != s.keys {
                    let m = format!(
                        "shard {i} ({}): {keys} keys in the object, {} recorded",
                        s.object, s.keys
                    );
                    if s.logical.is_some() {
                        c.problems.push(m);
                    } else {
                        c.notes.push(format!(
                            "{m} (by INFO just before the snapshot: writes in between explain it)"
                        ));
                    }
                }
            }
        }
        out.push(c);
    }
    Ok(out)
}

//! `strata unlock [--force]`: remove locks left by processes that died.
//!
//! Without `--force` only abandoned locks are removed: stale ones (no
//! heartbeat for [`lock::STALE_AFTER`]) and ones whose holder ran on this
//! host and is no longer running. Live ones are listed and kept. With
//! `--force` every lock is removed, each printed first: use it only when
//! the holder is known to be gone (a live backup or prune whose lock is
//! removed keeps running unprotected).

use chrono::Utc;
use serde::Serialize;

use super::Globals;
use crate::catalog::lock;
use crate::error::Result;

#[derive(Debug, Serialize)]
struct Outcome {
    key: String,
    info: Option<lock::LockInfo>,
    stale: bool,
    removed: bool,
}

pub async fn run(g: &Globals, force: bool, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let repo = super::open_repository(&cfg).await?;
    let storage = repo.storage().clone();
    let now = Utc::now();
    let mut out = Vec::new();
    for l in lock::list(&storage).await? {
        let stale = l.is_stale(now);
        let remove = force || l.is_abandoned(now);
        if remove {
            if !json {
                println!("removing {}", l.describe(now));
            }
            storage.delete(&l.key).await?;
        } else if !json {
            println!("keeping live lock {}", l.describe(now));
        }
        out.push(Outcome {
            key: l.key,
            info: l.info,
            stale,
            removed: remove,
        });
    }
    if json {
        super::print_json(&out);
    } else {
        let removed = out.iter().filter(|o| o.removed).count();
        let kept = out.len() - removed;
        println!("removed {removed} lock(s), kept {kept}");
        if kept > 0 {
            eprintln!(
                "HINT: live locks belong to running commands; `strata unlock --force` removes them too, only if their holder is surely gone"
            );
        }
    }
    Ok(0)
}

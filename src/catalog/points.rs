//! Named restore points strata created (`strata backup SOURCE --kind point
//! --label NAME`): `points/<source>/<name>.json`, plain JSON, create-only.
//!
//! PostgreSQL's own restore points are only found by replaying WAL: a
//! mistyped `--to-name` replayed the whole archive and then failed. With
//! the names strata created, `restore --to-name` checks the name before
//! it starts, and chooses the newest base backup that ends before the
//! point (a point older than the newest base backup cannot be reached from
//! it). A point costs one WAL record and this small object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::error::{Error, Result};
use crate::storage::{PutMode, StorageError};

const POINTS: &str = "points/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestorePoint {
    pub format: u32,
    pub source: String,
    pub name: String,
    /// Where `pg_create_restore_point` wrote it.
    pub lsn: String,
    pub timeline: u32,
    pub created: DateTime<Utc>,
}

/// A label PostgreSQL and a file name both take: 1 to 63 characters of
/// letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label.as_bytes()[0].is_ascii_alphanumeric()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    Err(Error::usage(format!(
        "label {label:?}: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    ))
    .hint("e.g. --label deploy-v3.2.0"))
}

impl Repository {
    fn point_key(source: &str, name: &str) -> String {
        format!("{POINTS}{source}/{name}.json")
    }

    /// Records a restore point; a name used before is refused (exit 8).
    pub async fn record_point(&self, p: &RestorePoint) -> Result<()> {
        let key = Self::point_key(&p.source, &p.name);
        let bytes = serde_json::to_vec_pretty(p).expect("point serialises");
        match self
            .storage()
            .put_bytes(&key, bytes.into(), PutMode::Create)
            .await
        {
            Ok(_) => Ok(()),
            Err(StorageError::AlreadyExists { .. }) => Err(Error::conflict(format!(
                "source {} already has a restore point named {}",
                p.source, p.name
            ))
            .hint("choose another --label (restore points are named once)")),
            Err(e) => Err(Error::from(e).context(format!("recording {key}"))),
        }
    }

    /// The restore points strata recorded for `source`, newest first.
    pub async fn points(&self, source: &str) -> Result<Vec<RestorePoint>> {
        let mut out = Vec::new();
        for o in self.storage().list(&format!("{POINTS}{source}/")).await? {
            let bytes = self.storage().get_bytes(&o.key).await?;
            let p: RestorePoint = serde_json::from_slice(&bytes).map_err(|e| {
                Error::integrity(format!("restore point record {} is unreadable: {e}", o.key))
            })?;
            out.push(p);
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.created));
        Ok(out)
    }

    /// Where the restore point `name` of `source` lies, for choosing the
    /// base backup of a `--to-name` restore. A name strata did not record
    /// is refused (exit 2), listing the recorded ones, unless `unrecorded`
    /// (a point made by hand): then `None`, and replay looks for it.
    pub async fn point_lsn(
        &self,
        source: &str,
        name: &str,
        unrecorded: bool,
    ) -> Result<Option<crate::sources::postgres::wal::Lsn>> {
        if let Some(p) = self.point(source, name).await? {
            let lsn = p.lsn.parse().map_err(|e| {
                Error::integrity(format!("restore point record of {name}: bad LSN: {e}"))
            })?;
            return Ok(Some(lsn));
        }
        if unrecorded {
            return Ok(None);
        }
        let known = self.points(source).await?;
        let list = if known.is_empty() {
            "none".to_string()
        } else {
            known
                .iter()
                .take(10)
                .map(|p| {
                    format!(
                        "{} ({})",
                        p.name,
                        p.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::usage(format!(
            "{source} has no restore point named {name:?} recorded by strata (recorded, newest first: {list})"
        ))
        .hint("check the name; a point made by hand with pg_create_restore_point is not recorded: add --unrecorded-name to replay the archive looking for it (PostgreSQL fails at the end of the archive if it is not there)"))
    }

    /// The restore point `name` of `source`, if strata recorded it.
    pub async fn point(&self, source: &str, name: &str) -> Result<Option<RestorePoint>> {
        if check_label(name).is_err() {
            return Ok(None);
        }
        match self
            .storage()
            .get_bytes(&Self::point_key(source, name))
            .await
        {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::integrity(format!("restore point record of {name} is unreadable: {e}"))
            }),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["deploy-v3.2.0", "before_drop", "p1", &"a".repeat(63)] {
            check_label(ok).unwrap();
        }
        for bad in [
            "",
            "has space",
            "-lead",
            "x/y",
            "../up",
            &"a".repeat(64),
            "naïve",
        ] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}

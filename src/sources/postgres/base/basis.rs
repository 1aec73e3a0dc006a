//! A base backup's *basis*: what the next incremental backup needs to know
//! of it, stored in plain beside its data (`basis.json`).
//!
//! Backup hosts hold only public keys (principle 3): the sealed manifest
//! and every data object are unreadable there, yet the next incremental
//! must know which files the parent held and how long they were. The
//! basis is PostgreSQL's own `backup_manifest` of the backup, as
//! pg_basebackup emitted it, with the per-file `Checksum-Algorithm` and
//! `Checksum` removed and `Manifest-Checksum` recomputed: a valid manifest
//! (`pg_basebackup --incremental=FILE` takes it as it is) that reveals the
//! data directory's file names, sizes and modification times, never
//! contents or checksums of contents (docs/design.md, "What a base backup
//! stores in plain"). Its SHA-256 is sealed in the manifest
//! (`BaseInfo::basis_sha256`).
//!
//! `Manifest-Checksum` is the SHA-256 of the manifest's text up to and
//! including the newline before the `"Manifest-Checksum"` line (PostgreSQL's
//! `verify_manifest_checksum`). Every base backup checks pg_basebackup's
//! own manifest against that rule before deriving its basis, so the
//! recomputation is proven against what PostgreSQL computed on each real
//! backup.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::catalog::{BackupId, Repository};
use crate::error::{Error, Result};
use crate::storage::{PutMode, StorageError};

/// The basis object's name beside the backup's data.
pub const BASIS_OBJECT: &str = "basis.json";

const CHECKSUM_KEY: &str = "\"Manifest-Checksum\"";

/// Splits a manifest into the checksummed body (through the newline before
/// `"Manifest-Checksum"`) and the checksum it records.
fn split(manifest: &[u8]) -> std::result::Result<(&[u8], String), String> {
    let text = std::str::from_utf8(manifest).map_err(|_| "not UTF-8 text".to_string())?;
    let at = text
        .rfind(&format!("\n{CHECKSUM_KEY}"))
        .ok_or("no Manifest-Checksum line")?;
    let rest = &text[at + 1 + CHECKSUM_KEY.len()..];
    let value = rest
        .split('"')
        .nth(1)
        .ok_or("the Manifest-Checksum line holds no value")?;
    Ok((&manifest[..at + 1], value.to_string()))
}

/// SHA-256 (hex) of a manifest's checksummed body, as PostgreSQL computes
/// `Manifest-Checksum`.
pub fn manifest_checksum(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Checks a manifest's own `Manifest-Checksum`.
pub fn check(manifest: &[u8]) -> std::result::Result<(), String> {
    let (body, recorded) = split(manifest)?;
    let computed = manifest_checksum(body);
    if computed != recorded {
        return Err(format!(
            "its Manifest-Checksum is {recorded}, its text hashes to {computed}"
        ));
    }
    Ok(())
}

/// The basis of a backup from its `backup_manifest`: the manifest's own
/// checksum checked, every file's checksum removed, `Manifest-Checksum`
/// recomputed.
pub fn from_manifest(manifest: &[u8]) -> std::result::Result<Vec<u8>, String> {
    check(manifest)?;
    let (body, _) = split(manifest)?;
    let body = std::str::from_utf8(body).expect("checked");
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        out.push_str(&strip_line(line));
    }
    let sum = manifest_checksum(out.as_bytes());
    out.push_str(&format!("{CHECKSUM_KEY}: \"{sum}\"}}\n"));
    Ok(out.into_bytes())
}

/// One `Files` line without `, "Checksum-Algorithm": "…", "Checksum": "…"`.
/// Paths are JSON strings, whose quotes are escaped: the unescaped key
/// cannot occur inside one.
fn strip_line(line: &str) -> std::borrow::Cow<'_, str> {
    let Some(i) = line.find(", \"Checksum-Algorithm\": \"") else {
        return line.into();
    };
    match line[i..].find(" }") {
        Some(end) => format!("{}{}", &line[..i], &line[i + end..]).into(),
        None => line.into(),
    }
}

#[derive(Deserialize)]
struct ManifestFiles {
    #[serde(rename = "Files")]
    files: Vec<FileEntry>,
}

#[derive(Deserialize)]
struct FileEntry {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
}

/// What the blocks method needs of a parent's basis: each file's size by
/// path (files named by `Encoded-Path`, not UTF-8, are left out: they are
/// never relation files).
#[derive(Debug, Default)]
pub struct Sizes(HashMap<String, u64>);

impl Sizes {
    pub fn parse(basis: &[u8]) -> std::result::Result<Sizes, String> {
        let m: ManifestFiles =
            serde_json::from_slice(basis).map_err(|e| format!("not a backup manifest: {e}"))?;
        Ok(Sizes(
            m.files
                .into_iter()
                .filter_map(|f| Some((f.path?, f.size)))
                .collect(),
        ))
    }

    pub fn get(&self, path: &str) -> Option<u64> {
        self.0.get(path).copied()
    }

    #[cfg(test)]
    pub fn of(entries: &[(&str, u64)]) -> Sizes {
        Sizes(entries.iter().map(|(p, s)| (p.to_string(), *s)).collect())
    }
}

/// Stores `basis` as backup `id`'s basis object; its SHA-256 (hex).
pub async fn store(repo: &Repository, source: &str, id: &BackupId, basis: &[u8]) -> Result<String> {
    let key = Repository::data_key(source, id, BASIS_OBJECT);
    repo.storage()
        .put_bytes(&key, basis.to_vec().into(), PutMode::Create)
        .await
        .map_err(|e| Error::from(e).context(format!("storing the basis {key}")))?;
    Ok(hex::encode(Sha256::digest(basis)))
}

/// Backup `id`'s basis, checked (its own checksum); `None` when it has
/// none (taken before incremental backups).
pub async fn load(repo: &Repository, source: &str, id: &BackupId) -> Result<Option<Vec<u8>>> {
    let key = Repository::data_key(source, id, BASIS_OBJECT);
    let bytes = match repo.storage().get_bytes(&key).await {
        Ok(b) => b.to_vec(),
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::from(e).context(format!("reading the basis {key}"))),
    };
    check(&bytes).map_err(|why| {
        Error::integrity(format!("basis {key} is damaged: {why}")).hint(
            "take a full base backup (without --incremental): the next incrementals apply on it",
        )
    })?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n\
{ \"Path\": \"backup_label\", \"Size\": 225, \"Last-Modified\": \"2026-12-06 20:21:01 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"135d13fb\" },\n\
{ \"Path\": \"base/5/16384\", \"Size\": 450560, \"Last-Modified\": \"2026-12-06 20:21:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"536f950b\" },\n\
{ \"Path\": \"odd \\\", \\\"Checksum-Algorithm\\\": \\\"x\", \"Size\": 3, \"Last-Modified\": \"2026-12-06 20:21:00 GMT\" },\n\
{ \"Encoded-Path\": \"ff00\", \"Size\": 1, \"Last-Modified\": \"2026-12-06 20:21:00 GMT\", \"Checksum-Algorithm\": \"SHA256\", \"Checksum\": \"00ab\" }\n\
],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000120\" }\n],\n";

    fn manifest(body: &str) -> Vec<u8> {
        let sum = manifest_checksum(body.as_bytes());
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
    }

    #[test]
    fn a_basis_has_no_file_checksums_and_a_valid_manifest_checksum() {
        let m = manifest(BODY);
        check(&m).unwrap();
        let basis = from_manifest(&m).unwrap();
        check(&basis).unwrap();
        let text = String::from_utf8(basis.clone()).unwrap();
        assert!(
            !text.contains("CRC32C") && !text.contains("SHA256"),
            "{text}"
        );
        assert!(!text.contains("135d13fb"), "{text}");
        // a path that looks like the key inside its (escaped) string stays
        assert!(text.contains("odd \\\", \\\"Checksum-Algorithm\\\": \\\"x\""));
        assert!(text.contains(
            "{ \"Path\": \"base/5/16384\", \"Size\": 450560, \"Last-Modified\": \"2026-12-06 20:21:00 GMT\" },\n"
        ));
        let v: serde_json::Value = serde_json::from_slice(&basis).unwrap();
        assert_eq!(v["Files"].as_array().unwrap().len(), 4);
        let sizes = Sizes::parse(&basis).unwrap();
        assert_eq!(sizes.get("base/5/16384"), Some(450560));
        assert_eq!(sizes.get("nope"), None);
        // a basis is its own basis: stripping nothing recomputes the same
        assert_eq!(from_manifest(&basis).unwrap(), basis);
    }

    #[test]
    fn damaged_manifests_are_refused() {
        let mut m = manifest(BODY);
        let i = m.iter().position(|b| *b == b'4').unwrap();
        m[i] = b'5';
        assert!(check(&m).unwrap_err().contains("hashes to"));
        assert!(
            from_manifest(b"{}")
                .unwrap_err()
                .contains("no Manifest-Checksum")
        );
    }
}

//! `strata wal push`'s side of the WAL archive (see [`super`] for the
//! layout): looking at the file before it is sent (a segment's long page
//! header, a short file's digest and HMAC), claiming its name with a
//! create-only record while the object uploads in the same pass,
//! comparing with a record already there (same content succeeds, other
//! content is refused, nothing is overwritten), and refusing WAL of
//! another database system than the archive's first. The HMAC key for
//! short files' records is derived here too.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::{LONG_HEADER_LEN, LongPageHeader, WalFile};
use super::{FileRecord, RECORD_FORMAT, WalArchive};
use crate::error::{Error, Kind, Result};
use crate::keys::{Identity, Recipient};
use crate::pipeline::{self, Encoder};
use crate::progress::Progress;
use crate::storage::{PutMode, StorageError};

const INFO_FORMAT: u32 = 1;

/// `wal/<source>/archive.json`: which database system the archive holds.
#[derive(Debug, Serialize, Deserialize)]
struct ArchiveInfo {
    format: u32,
    created: DateTime<Utc>,
    /// SHA-256 of `strata-wal-system-identifier\n<repository id>\n<id>`.
    system_identifier_sha256: String,
    /// The system identifier, age-encrypted to the recipients.
    system_identifier_sealed: String,
}

/// What push needs besides the file: how to encode, whom to seal to, the
/// MAC key, and (only after the recipients changed) a way to get the
/// identity.
pub struct PushContext<'a> {
    pub encoder: Encoder,
    pub recipients: &'a [Recipient],
    pub mac_key: MacKey,
    pub identities: &'a (dyn Fn() -> Result<Arc<Vec<Identity>>> + Send + Sync),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    /// Stored now.
    Stored,
    /// Already archived with the same content; nothing written.
    AlreadyArchived,
    /// The record existed with the same content but the object did not (an
    /// earlier push stopped between the two); the object was stored now.
    Completed,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub name: String,
    pub key: String,
    pub status: PushStatus,
    pub plain_size: u64,
    pub stored_size: Option<u64>,
}

/// HMAC key for the records of short files, derived from the repository id
/// and the recipient list: the store sees neither the recipients nor the
/// plain text, so it cannot test guesses of a history file's content.
#[derive(Clone)]
pub struct MacKey {
    key: [u8; 32],
}

impl MacKey {
    pub fn derive(repository_id: &str, recipients: &[String]) -> MacKey {
        let mut list: Vec<&str> = recipients.iter().map(|r| r.trim()).collect();
        list.sort_unstable();
        list.dedup();
        let mut h = Sha256::new();
        h.update(b"strata-wal-hmac-v1\n");
        h.update(repository_id.as_bytes());
        for r in list {
            h.update(b"\n");
            h.update(r.as_bytes());
        }
        MacKey {
            key: h.finalize().into(),
        }
    }

    /// Short public name of the key: tells whether a record's HMAC was made
    /// with the same recipient list.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"strata-wal-hmac-key-id\n");
        h.update(self.key);
        hex::encode(&h.finalize()[..8])
    }

    fn hasher(&self) -> Hmac {
        Hmac::new(&self.key)
    }
}

/// HMAC-SHA256 (RFC 2104) over a stream.
struct Hmac {
    inner: Sha256,
    outer_key: [u8; 64],
}

impl Hmac {
    fn new(key: &[u8; 32]) -> Hmac {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = Sha256::new();
        inner.update(ipad);
        Hmac {
            inner,
            outer_key: opad,
        }
    }
    fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }
    fn finish(self) -> [u8; 32] {
        let mut outer = Sha256::new();
        outer.update(self.outer_key);
        outer.update(self.inner.finalize());
        outer.finalize().into()
    }
}

/// The SHA-256 of a whole file.
fn sha256_of(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut sha = Sha256::new();
    io::copy(&mut f, &mut sha)?;
    Ok(sha.finalize().into())
}

/// What reading a file to push found.
struct Scanned {
    size: u64,
    /// Short files only: a segment's digest comes from the one pass that
    /// encodes it.
    sha256: Option<[u8; 32]>,
    hmac: Option<[u8; 32]>,
    header: Option<LongPageHeader>,
    /// A segment's long page header as read (see [`still_the_same`]).
    first: Vec<u8>,
}

/// Whether `f` (the segment being pushed) still starts with the header
/// first read from it. PostgreSQL reuses a segment file only once it
/// counts it archived (after `wal push --async` dropped it past
/// archive_push_queue_max, say), and writes a reused file from its first
/// page on: a header that still matches once the whole file has been read
/// proves no page of it was overwritten while it was.
fn still_the_same(f: &std::fs::File, first: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let mut now = vec![0u8; first.len()];
    f.read_exact_at(&mut now, 0).is_ok() && now == first
}

/// Looks at `path` before it is pushed. A segment (or partial segment):
/// its long page header, checked against the name and the file's size,
/// without reading the rest. A short file (history, backup history): read
/// whole for its SHA-256 and HMAC.
fn scan(path: &Path, name: WalFile, mac: Option<&MacKey>) -> Result<Scanned> {
    let unreadable =
        |e: io::Error| Error::source(format!("cannot read WAL file {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(unreadable)?;
    if let Some(seg) = name.segment_data() {
        let size = f.metadata().map_err(unreadable)?.len();
        let invalid = |why: String| {
            Error::integrity(format!(
                "{} is not a valid WAL segment {name}: {why}",
                path.display()
            ))
            .hint("archive_command must be given the file PostgreSQL names in %p")
        };
        let mut first = Vec::with_capacity(LONG_HEADER_LEN);
        (&mut f)
            .take(LONG_HEADER_LEN as u64)
            .read_to_end(&mut first)
            .map_err(unreadable)?;
        let h = LongPageHeader::parse(&first).map_err(invalid)?;
        h.check_name(seg).map_err(invalid)?;
        if size != h.segment_size.bytes() {
            return Err(invalid(format!(
                "it holds {size} bytes, its header says segments have {}",
                h.segment_size.bytes()
            )));
        }
        return Ok(Scanned {
            size,
            sha256: None,
            hmac: None,
            header: Some(h),
            first,
        });
    }
    let mut sha = Sha256::new();
    let mut hmac = mac.map(MacKey::hasher);
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        sha.update(&buf[..n]);
        if let Some(h) = hmac.as_mut() {
            h.update(&buf[..n]);
        }
        size += n as u64;
    }
    Ok(Scanned {
        size,
        sha256: Some(sha.finalize().into()),
        hmac: hmac.map(Hmac::finish),
        header: None,
        first: Vec::new(),
    })
}

/// How [`WalArchive::claim`] found the name.
enum Claim {
    /// The record was created now.
    Now,
    /// A record of the same content was there.
    Matched,
}

/// Does `existing` describe the same content as the file being pushed?
enum Verdict {
    Same,
    Different,
    /// The record cannot be compared without the identity.
    NeedsIdentity,
}

impl WalArchive {
    fn info_key(&self) -> String {
        format!("{}archive.json", self.prefix())
    }

    fn sysid_hash(&self, sysid: u64) -> String {
        let mut h = Sha256::new();
        h.update(format!("strata-wal-system-identifier\n{}\n{sysid}", self.repo.id).as_bytes());
        hex::encode(h.finalize())
    }

    /// Archives the file at `path` as `name`. Returns once the file is
    /// durable in the repository (or was already there, identical).
    pub async fn push(
        &self,
        ctx: &PushContext<'_>,
        path: &Path,
        name: WalFile,
    ) -> Result<PushReport> {
        self.push_digest(ctx, path, name, None).await
    }

    /// [`push`](Self::push), with a segment's digest already known (see
    /// where the store refuses an existing object below).
    async fn push_digest(
        &self,
        ctx: &PushContext<'_>,
        path: &Path,
        name: WalFile,
        digest: Option<[u8; 32]>,
    ) -> Result<PushReport> {
        let storage = self.repo.storage().clone();
        let short = name.segment_data().is_none();
        let mac = short.then(|| ctx.mac_key.clone());
        let (p, m) = (path.to_path_buf(), mac.clone());
        let mut scanned = tokio::task::spawn_blocking(move || scan(&p, name, m.as_ref()))
            .await
            .expect("scan task panicked")?;
        if digest.is_some() {
            scanned.sha256 = digest;
        }
        if let Some(h) = &scanned.header {
            self.check_system(ctx, name, h.system_identifier).await?;
        }

        let record_of = |sha_hex: &str| -> Result<FileRecord> {
            Ok(FileRecord {
                format: RECORD_FORMAT,
                name: name.to_string(),
                plain_size: scanned.size,
                sha256: (!short).then(|| sha_hex.to_string()),
                hmac_sha256: scanned.hmac.map(hex::encode),
                hmac_key: mac.as_ref().map(MacKey::id),
                sealed_sha256: if short {
                    Some(pipeline::seal(ctx.recipients, sha_hex.as_bytes())?)
                } else {
                    None
                },
                pushed: Some(Utc::now()),
            })
        };
        let key = self.object_key(name);
        let record_key = self.record_key(name);
        let report = |status, stored_size| PushReport {
            name: name.to_string(),
            key: key.clone(),
            status,
            plain_size: scanned.size,
            stored_size,
        };

        // One pass reads the file: it is hashed, compressed, encrypted and
        // uploaded, but committed only once its record (which needs the
        // digest) has claimed the name: the record is still durable first.
        // The existing record, if any, is read meanwhile.
        let file = std::fs::File::open(path)
            .map_err(|e| Error::source(format!("cannot read WAL file {}: {e}", path.display())))?;
        let (known, plain_size) = (scanned.sha256, scanned.size);
        let shown = path.display().to_string();
        let first = scanned.first.clone();
        let reread = file
            .try_clone()
            .map_err(|e| Error::source(format!("cannot read WAL file {}: {e}", path.display())))?;
        let (sha_tx, sha_rx) = tokio::sync::oneshot::channel::<[u8; 32]>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
        let object_name = name.to_string();
        let store = ctx.encoder.store(
            storage.clone(),
            &key,
            &object_name,
            file,
            Progress::hidden(),
            move |encoded| {
                if encoded.plain_size != plain_size
                    || known.is_some_and(|k| k != encoded.sha256)
                    || !still_the_same(&reread, &first)
                {
                    return Err(Error::source(format!(
                        "WAL file {shown} changed while it was being archived"
                    )));
                }
                let _ = sha_tx.send(encoded.sha256);
                match go_rx.recv() {
                    Ok(true) => Ok(()),
                    _ => Err(Error::failed("not committed: the name was not claimed")),
                }
            },
        );
        let claim = async {
            let existing = self.read_record(name).await;
            // no digest: the encoder stopped, and its error says why
            let sha = match known {
                Some(s) => s,
                None => sha_rx.await.ok()?,
            };
            let sha_hex = hex::encode(sha);
            let claimed = match record_of(&sha_hex) {
                Ok(mine) => {
                    self.claim(ctx, name, &mine, &sha_hex, &record_key, existing)
                        .await
                }
                Err(e) => Err(e),
            };
            let upload = match &claimed {
                Ok(Claim::Now) => Ok(true),
                Ok(Claim::Matched) => storage.head(&key).await.map(|h| h.is_none()),
                Err(_) => Ok(false),
            };
            let _ = go_tx.send(matches!(upload, Ok(true)));
            Some((claimed, upload))
        };
        let (stored, claim_out) = tokio::join!(store, claim);
        let Some((claimed, upload)) = claim_out else {
            return match stored {
                // The object exists, and the store said so before the one
                // pass had the digest (the upload of a file that does not
                // compress to almost nothing starts before its end is
                // read): hash the file, then claim and compare with that.
                // A segment pushed again (PostgreSQL retries one it has
                // no .done for) is no conflict (seen on PostgreSQL 18's
                // denser segments: tests/pitr_load.rs).
                Err(e) if e.kind == Kind::Conflict && known.is_none() => {
                    let p = path.to_path_buf();
                    let sha = tokio::task::spawn_blocking(move || sha256_of(&p))
                        .await
                        .expect("hash task panicked")
                        .map_err(|e| {
                            Error::source(format!("cannot read WAL file {}: {e}", path.display()))
                        })?;
                    Box::pin(self.push_digest(ctx, path, name, Some(sha))).await
                }
                Err(e) => Err(e.context(format!("archiving {name}"))),
                Ok(_) => Err(Error::failed(format!(
                    "archiving {name}: stored without a digest"
                ))),
            };
        };
        let claimed_now = match claimed? {
            Claim::Now => true,
            Claim::Matched if !upload? => return Ok(report(PushStatus::AlreadyArchived, None)),
            Claim::Matched => false,
        };
        match stored {
            Ok(rec) => Ok(report(
                if claimed_now {
                    PushStatus::Stored
                } else {
                    PushStatus::Completed
                },
                Some(rec.stored_size),
            )),
            // A concurrent push of the same content finished first.
            Err(e) if e.kind == Kind::Conflict && !claimed_now => {
                Ok(report(PushStatus::AlreadyArchived, None))
            }
            Err(e) if e.kind == Kind::Conflict => Err(Error::conflict(format!(
                "WAL file {name}: {key} exists although its record did not; refusing to overwrite it"
            ))
            .hint("the archive was changed by something other than strata; inspect the object")),
            Err(e) => Err(e.context(format!("archiving {name}"))),
        }
    }

    /// Claims `name` for this content by creating its record, or finds it
    /// claimed for the same content; an error when it is claimed for other
    /// content (nothing is overwritten).
    async fn claim(
        &self,
        ctx: &PushContext<'_>,
        name: WalFile,
        mine: &FileRecord,
        sha_hex: &str,
        record_key: &str,
        read_first: Result<Option<FileRecord>>,
    ) -> Result<Claim> {
        let storage = self.repo.storage();
        let mut read_first = Some(read_first);
        for _ in 0..3 {
            let existing = match read_first.take() {
                Some(r) => r?,
                None => self.read_record(name).await?,
            };
            if let Some(existing) = existing {
                match self.compare(ctx, &existing, mine, sha_hex)? {
                    Verdict::Same => return Ok(Claim::Matched),
                    Verdict::Different => {
                        let how = if existing.plain_size == mine.plain_size {
                            "same size, different digest".to_string()
                        } else {
                            format!(
                                "{} bytes archived, {} bytes now",
                                existing.plain_size, mine.plain_size
                            )
                        };
                        return Err(Error::conflict(format!(
                            "WAL file {name} is already archived in {} with different content ({how}); refusing to overwrite it",
                            self.repo.location()
                        ))
                        .hint(format!(
                            "two clusters may be archiving into source {:?} (split brain, or a restored copy still archiving), or the file was damaged; \
                             find out which is right before anything else — nothing was changed ({record_key})",
                            self.source
                        )));
                    }
                    Verdict::NeedsIdentity => {
                        return Err(Error::conflict(format!(
                            "WAL file {name} is already archived in {}, recorded under other recipients; cannot tell whether its content is the same",
                            self.repo.location()
                        ))
                        .hint("pass --identity (or set $STRATA_IDENTITY_FILE) so strata can decrypt the archived digest and compare"));
                    }
                }
            }
            let bytes = serde_json::to_vec_pretty(mine).expect("record serialises");
            match storage
                .put_bytes(record_key, bytes.into(), PutMode::Create)
                .await
            {
                Ok(_) => return Ok(Claim::Now),
                // Another push claimed it in between: compare with that one.
                Err(StorageError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(Error::from(e).context(format!("archiving {name}"))),
            }
        }
        Err(Error::failed(format!(
            "the record of {name} ({record_key}) keeps appearing and disappearing; try again"
        ))
        .retryable())
    }

    fn compare(
        &self,
        ctx: &PushContext<'_>,
        existing: &FileRecord,
        mine: &FileRecord,
        my_sha: &str,
    ) -> Result<Verdict> {
        let same = |b: bool| if b { Verdict::Same } else { Verdict::Different };
        if existing.plain_size != mine.plain_size {
            return Ok(Verdict::Different);
        }
        if let (Some(a), Some(b)) = (&existing.sha256, &mine.sha256) {
            return Ok(same(a == b));
        }
        if let (Some(a), Some(b), Some(ka), Some(kb)) = (
            &existing.hmac_sha256,
            &mine.hmac_sha256,
            &existing.hmac_key,
            &mine.hmac_key,
        ) && ka == kb
        {
            return Ok(same(a == b));
        }
        let Some(sealed) = &existing.sealed_sha256 else {
            return Err(Error::integrity(format!(
                "the record of {} holds no digest strata can compare",
                existing.name
            )));
        };
        let Ok(ids) = (ctx.identities)() else {
            return Ok(Verdict::NeedsIdentity);
        };
        let sha = pipeline::unseal(&format!("record of {}", existing.name), &ids, sealed)?;
        Ok(same(sha == my_sha.as_bytes()))
    }

    /// Records the system identifier on first push; refuses another one.
    async fn check_system(&self, ctx: &PushContext<'_>, name: WalFile, sysid: u64) -> Result<()> {
        let storage = self.repo.storage();
        let key = self.info_key();
        let want = self.sysid_hash(sysid);
        for _ in 0..2 {
            match storage.get_bytes(&key).await {
                Ok(b) => {
                    let info: ArchiveInfo = serde_json::from_slice(&b).map_err(|e| {
                        Error::integrity(format!("{key} is not a strata WAL archive record: {e}"))
                    })?;
                    if info.format != INFO_FORMAT {
                        return Err(Error::new(
                            Kind::Repository,
                            format!(
                                "{key} has format {}, this strata knows {INFO_FORMAT}",
                                info.format
                            ),
                        ));
                    }
                    if info.system_identifier_sha256 == want {
                        return Ok(());
                    }
                    return Err(Error::conflict(format!(
                        "WAL file {name} belongs to database system {sysid}, but the WAL archive of source {:?} ({}) holds another system's WAL; refusing it",
                        self.source,
                        self.prefix()
                    ))
                    .hint("a new cluster (initdb, pg_upgrade, a clone) needs its own source name in [sources.NAME] and archive_command --source NAME"));
                }
                Err(StorageError::NotFound { .. }) => {
                    let info = ArchiveInfo {
                        format: INFO_FORMAT,
                        created: Utc::now(),
                        system_identifier_sha256: want.clone(),
                        system_identifier_sealed: pipeline::seal(
                            ctx.recipients,
                            sysid.to_string().as_bytes(),
                        )?,
                    };
                    let bytes = serde_json::to_vec_pretty(&info).expect("info serialises");
                    match storage.put_bytes(&key, bytes.into(), PutMode::Create).await {
                        Ok(_) => return Ok(()),
                        Err(StorageError::AlreadyExists { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::failed(format!("{key} keeps changing; try again")).retryable())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_segment_reused_while_it_is_read_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000003");
        let mut seg = vec![7u8; 64 << 10];
        seg[..LONG_HEADER_LEN].copy_from_slice(&[1u8; LONG_HEADER_LEN]);
        std::fs::write(&path, &seg).unwrap();
        let reading = std::fs::File::open(&path).unwrap();
        let first = seg[..LONG_HEADER_LEN].to_vec();
        assert!(still_the_same(&reading, &first));
        // PostgreSQL renames a reused file and rewrites it from page 0
        let reused = dir.path().join("000000010000000000000009");
        std::fs::rename(&path, &reused).unwrap();
        assert!(
            still_the_same(&reading, &first),
            "a rename alone changes nothing"
        );
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&reused)
            .unwrap();
        w.write_all(&[2u8; 8192]).unwrap();
        assert!(!still_the_same(&reading, &first));
        // a short file has no header to compare
        assert!(still_the_same(&reading, &[]));
    }

    #[test]
    fn hmac_rfc4231_vector() {
        // RFC 4231 test case 2 ("Jefe"), key zero-padded to 32 bytes gives
        // the same HMAC as the 4-byte key (keys shorter than the block are
        // zero-padded by definition).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut h = Hmac::new(&key);
        h.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(h.finish()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn mac_key_ignores_order_and_whitespace() {
        let a = MacKey::derive("r1", &["age1b".into(), " age1a ".into()]);
        let b = MacKey::derive("r1", &["age1a".into(), "age1b".into(), "age1a".into()]);
        let c = MacKey::derive("r2", &["age1a".into(), "age1b".into()]);
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id().len(), 16);
    }
}

//! age keys: generating identities, parsing recipients, loading identity
//! files.
//!
//! Backup hosts need only recipients (public keys); the identity (secret)
//! is needed to restore, to verify data and to drill.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use age::secrecy::ExposeSecret;

use crate::error::{Error, Result};

pub type Recipient = Box<dyn age::Recipient + Send + Sync>;
pub type Identity = Box<dyn age::Identity + Send + Sync>;

/// Parses one recipient string (an `age1…` X25519 public key).
pub fn parse_recipient(s: &str) -> std::result::Result<Recipient, String> {
    let s = s.trim();
    s.parse::<age::x25519::Recipient>()
        .map(|r| Box::new(r) as Recipient)
        .map_err(|e| format!("{s:?} is not an age recipient (age1…): {e}"))
}

pub fn parse_recipients(list: &[String]) -> Result<Vec<Recipient>> {
    list.iter()
        .map(|s| parse_recipient(s).map_err(Error::usage))
        .collect()
}

/// Writes a new X25519 identity to `out` (mode 0600, never overwriting) and
/// returns its public recipient.
pub fn generate(out: &Path) -> Result<String> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::conflict(format!("{} already exists; refusing to overwrite a key", out.display()))
                    .hint("choose another --out path, or move the old key away first (without it, backups made for it cannot be restored)")
            } else {
                Error::failed(format!("cannot create {}: {e}", out.display()))
            }
        })?;
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", out.display())))?;
    Ok(recipient)
}

/// Loads the identities in an age identity file (as written by
/// `strata key generate` or `age-keygen`).
pub fn load_identities(path: &Path) -> Result<Vec<Identity>> {
    let file = age::IdentityFile::from_file(path.to_string_lossy().into_owned()).map_err(|e| {
        Error::crypto(format!("cannot read identity file {}: {e}", path.display()))
            .hint("set [encryption] identity_file or pass --identity FILE (the key printed by `strata key generate`)")
    })?;
    let ids = file.into_identities().map_err(|e| {
        Error::crypto(format!(
            "identity file {} holds no usable identity: {e}",
            path.display()
        ))
    })?;
    if ids.is_empty() {
        return Err(Error::crypto(format!(
            "identity file {} holds no identity",
            path.display()
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.txt");
        let r = generate(&p).unwrap();
        assert!(r.starts_with("age1"));
        assert!(parse_recipient(&r).is_ok());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_identities(&p).unwrap().len(), 1);
        let e = generate(&p).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Conflict);
    }

    #[test]
    fn bad_recipient() {
        assert!(parse_recipient("age1xyz").is_err());
        assert!(parse_recipient("").is_err());
    }
}

//! Backup identifiers: `20261123T101502Z-3f9a1c`, the start time in UTC and
//! a random suffix. They sort by time and are unique without coordination.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

const TIME_FMT: &str = "%Y%m%dT%H%M%SZ";

impl BackupId {
    pub fn new(started: DateTime<Utc>) -> BackupId {
        BackupId(format!(
            "{}-{}",
            started.format(TIME_FMT),
            hex::encode(rand::random::<[u8; 3]>())
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The start time encoded in the id.
    pub fn time(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0[..16], TIME_FMT)
            .expect("validated on construction")
            .and_utc()
    }
}

impl FromStr for BackupId {
    type Err = String;
    fn from_str(s: &str) -> Result<BackupId, String> {
        // ASCII first: slicing at byte 16 inside a multi-byte character
        // panicked (found by fuzzing manifests, issue 13)
        let ok = s.len() == 23
            && s.is_ascii()
            && NaiveDateTime::parse_from_str(&s[..16], TIME_FMT).is_ok()
            && s.as_bytes()[16] == b'-'
            && s[17..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if ok {
            Ok(BackupId(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a backup id (like 20261123T101502Z-3f9a1c; see `strata list`)"
            ))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = String;
    fn try_from(s: String) -> Result<BackupId, String> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn round_trip_and_order() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 15, 2).unwrap();
        let id = BackupId::new(t);
        assert!(id.as_str().starts_with("20261123T101502Z-"));
        assert_eq!(id.as_str().parse::<BackupId>().unwrap(), id);
        assert_eq!(id.time(), t);
        let later = BackupId::new(t + chrono::Duration::seconds(1));
        assert!(later > id);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "latest",
            "20261123T101502Z",
            "20261123T101502Z-XYZ123",
            "2026112XT101502Z-abcdef",
        ] {
            assert!(s.parse::<BackupId>().is_err(), "{s}");
        }
    }

    /// issue 13 (fuzzing, fuzz/corpus/manifest/crash-non-ascii-id): an id
    /// of 23 bytes with a multi-byte character across byte 16 — in a
    /// manifest summary or `--backup` — panicked instead of being refused.
    #[test]
    fn non_ascii_ids_are_refused() {
        for s in [
            "20261206T144209\u{62d}21d158",
            "20261206T144209Zé1d158",
            "2026120é6T14420Z-21d15",
        ] {
            assert_eq!(s.len(), 23, "{s}");
            assert!(s.parse::<BackupId>().is_err(), "{s}");
            assert!(serde_json::from_str::<BackupId>(&format!("{s:?}")).is_err());
        }
    }
}

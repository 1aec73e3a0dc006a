//! Which archived WAL files `strata prune` may delete: a pure function
//! from the archive's file names and the kept base backups to a plan that
//! says, for every file, keep or delete and why.
//!
//! The rule (docs/retention.md): prune must never break a point-in-time
//! restore to any instant inside the WAL tier's window
//! (`keep_within`), nor the restore of any kept base backup.
//!
//! - The *anchor* is the base backup a restore to the window's start
//!   would use: the newest kept base backup that was consistent (its
//!   manifest's `finished` time, after its stop LSN) at or before the
//!   window start; if none was, the oldest kept one. We use the time the
//!   backup *finished* rather than started: a restore cannot stop before
//!   the backup's stop LSN, so a backup that started before the window
//!   but ended inside it cannot reach the window's first instant.
//! - Every segment from the anchor's start LSN on is kept, on the anchor's
//!   timeline and every later one (a descendant timeline always has a
//!   higher number; a later timeline that is not a descendant is kept too:
//!   over-keeping is safe). The same holds for every kept base backup
//!   newer than the anchor.
//! - Every kept base backup older than the anchor (one a GFS rule keeps)
//!   keeps its own consistency range, start to stop LSN.
//! - Everything else is deleted. A restore replays forward from a base
//!   backup's start LSN, and LSNs only grow along a timeline path, so a
//!   segment below every kept range is never read by any restore the
//!   policy promises.
//! - Backup history files (`.backup`) follow the segment they name;
//!   partial segments follow their segment.
//! - A timeline history file `N.history` is kept while any WAL of timeline
//!   N or later is kept, and also while no WAL of timeline N or later
//!   exists at all (a freshly promoted timeline has its history before its
//!   first segment).
//!
//! The caller deletes in [`WalPlan::deletions`] order: oldest LSN first,
//! history files last, so an interrupted prune only ever shortens the
//! archive from its old end and never leaves a hole inside a kept range.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::sources::postgres::wal::{Lsn, SegmentName, SegmentSize, Timeline, WalFile};

/// A kept base backup, as the plain part of its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBase {
    pub id: String,
    pub timeline: Timeline,
    pub start: Lsn,
    pub stop: Lsn,
    /// When the backup was complete (manifest `finished`).
    pub finished: DateTime<Utc>,
}

/// One archived file: its name and when it was stored (for the reason
/// text only; decisions are made on LSNs, never on storage times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub file: WalFile,
    pub modified: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalAction {
    Keep,
    Delete,
}

/// The decision about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDecision {
    pub file: WalFile,
    pub action: WalAction,
    pub reason: String,
}

/// Consecutive files (in name order) with the same decision and reason,
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRange {
    pub action: WalAction,
    pub first: String,
    pub last: String,
    pub files: usize,
    pub reason: String,
}

impl WalRange {
    pub fn describe(&self) -> String {
        let files = if self.files == 1 {
            "1 file".to_string()
        } else {
            format!("{} files", self.files)
        };
        if self.first == self.last {
            format!("{} ({files})  ({})", self.first, self.reason)
        } else {
            format!("{}..{} ({files})  ({})", self.first, self.last, self.reason)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPlan {
    /// The base backup a restore to the window's start would use.
    pub anchor: Option<String>,
    /// Every file, in name order (segments by timeline and position,
    /// history files last).
    pub files: Vec<FileDecision>,
}

impl WalPlan {
    /// Keeps every file, for one reason (no cut can be made safely).
    pub fn keep_all(files: &[Archived], reason: &str) -> WalPlan {
        let mut files: Vec<FileDecision> = files
            .iter()
            .map(|a| FileDecision {
                file: a.file,
                action: WalAction::Keep,
                reason: reason.to_string(),
            })
            .collect();
        files.sort_by_key(|d| name_order(d.file));
        WalPlan {
            anchor: None,
            files,
        }
    }

    /// The files to delete, in the order to delete them: oldest position
    /// first (then timeline), history files last.
    pub fn deletions(&self, size: SegmentSize) -> Vec<WalFile> {
        let mut out: Vec<WalFile> = self
            .files
            .iter()
            .filter(|d| d.action == WalAction::Delete)
            .map(|d| d.file)
            .collect();
        out.sort_by_key(|f| match f {
            WalFile::History(t) => (1, u64::MAX, *t, 0),
            WalFile::Segment(s) => (0, s.segno(size), s.timeline, 0),
            WalFile::Partial(s) => (0, s.segno(size), s.timeline, 1),
            WalFile::BackupHistory { segment, .. } => (0, segment.segno(size), segment.timeline, 2),
        });
        out
    }

    /// The decisions grouped into runs of consecutive files with the same
    /// action and reason.
    pub fn ranges(&self) -> Vec<WalRange> {
        let mut out: Vec<WalRange> = Vec::new();
        let mut last_tl: Option<(Timeline, bool)> = None;
        for d in &self.files {
            let key = (d.file.timeline(), matches!(d.file, WalFile::History(_)));
            let name = d.file.to_string();
            match out.last_mut() {
                Some(r) if r.action == d.action && r.reason == d.reason && last_tl == Some(key) => {
                    r.last = name;
                    r.files += 1;
                }
                _ => out.push(WalRange {
                    action: d.action,
                    first: name.clone(),
                    last: name,
                    files: 1,
                    reason: d.reason.clone(),
                }),
            }
            last_tl = Some(key);
        }
        out
    }

    pub fn count(&self, action: WalAction) -> usize {
        self.files.iter().filter(|d| d.action == action).count()
    }
}

/// Name order: data files by timeline, then name; history files last.
fn name_order(f: WalFile) -> (u8, String) {
    match f {
        WalFile::History(_) => (1, f.to_string()),
        _ => (0, f.to_string()),
    }
}

/// A range of segments a kept base backup needs: positions `from..=to`
/// (`to` open when `None`) on `timeline` and every later timeline.
struct Need<'a> {
    timeline: Timeline,
    from: u64,
    to: Option<u64>,
    base: &'a KeptBase,
    /// The anchor's open range (as opposed to a consistency range or a
    /// newer base's own open range).
    anchor: bool,
}

impl Need<'_> {
    fn covers(&self, s: SegmentName, size: SegmentSize) -> bool {
        let n = s.segno(size);
        s.timeline >= self.timeline && n >= self.from && self.to.is_none_or(|t| n <= t)
    }
}

/// Plans which of `files` to keep. `bases` are the base backups of the
/// source that stay in the repository; `window_start` is `now - keep_within`
/// of the WAL tier, `window` its text (`7d`) for reasons.
pub fn plan(
    files: &[Archived],
    bases: &[KeptBase],
    window_start: DateTime<Utc>,
    window: &str,
    size: SegmentSize,
) -> WalPlan {
    if bases.is_empty() {
        return WalPlan::keep_all(
            files,
            "no kept base backup of this source: WAL is kept (a cut needs a base backup to start from)",
        );
    }
    let anchor = bases
        .iter()
        .filter(|b| b.finished <= window_start)
        .max_by_key(|b| (b.finished, b.start))
        .or_else(|| bases.iter().min_by_key(|b| (b.finished, b.start)))
        .expect("bases is not empty");
    let seg = |l: Lsn| l.0 / size.bytes();
    let mut needs: Vec<Need> = Vec::new();
    for b in bases {
        // Consistency ranges first: they name the base that needs them.
        let stop = Lsn(b.stop.0.max(b.start.0 + 1) - 1);
        needs.push(Need {
            timeline: b.timeline,
            from: seg(b.start),
            to: Some(seg(stop)),
            base: b,
            anchor: false,
        });
    }
    for b in bases {
        if b.id == anchor.id || (b.finished, b.start) > (anchor.finished, anchor.start) {
            needs.push(Need {
                timeline: b.timeline,
                from: seg(b.start),
                to: None,
                base: b,
                anchor: b.id == anchor.id,
            });
        }
    }
    // Put the anchor's open range before newer bases' open ranges, so the
    // reason names the base a restore to the window start would use.
    needs.sort_by_key(|n| (n.to.is_none(), !n.anchor));
    let oldest_start = bases.iter().map(|b| seg(b.start)).min().unwrap_or(0);

    let decide_segment = |s: SegmentName, modified: Option<DateTime<Utc>>| -> (WalAction, String) {
        match needs.iter().find(|n| n.covers(s, size)) {
            Some(n) if n.to.is_some() => (
                WalAction::Keep,
                format!(
                    "needed by base {} (its WAL {}..{})",
                    n.base.id, n.base.start, n.base.stop
                ),
            ),
            Some(n) => {
                if modified.is_some_and(|m| m >= window_start) {
                    (WalAction::Keep, format!("inside the {window} window"))
                } else if n.anchor {
                    (
                        WalAction::Keep,
                        format!(
                            "needed by base {} to reach the start of the {window} window",
                            n.base.id
                        ),
                    )
                } else {
                    (
                        WalAction::Keep,
                        format!("needed by base {}", n.base.id),
                    )
                }
            }
            None if s.segno(size) < oldest_start => (
                WalAction::Delete,
                "older than every kept base backup".to_string(),
            ),
            None => (
                WalAction::Delete,
                "needed by no kept base backup (before the window, or on a timeline they do not follow)"
                    .to_string(),
            ),
        }
    };

    let mut decisions: Vec<FileDecision> = Vec::new();
    let mut kept_timelines: BTreeSet<Timeline> = BTreeSet::new();
    let mut data_timelines: BTreeSet<Timeline> = BTreeSet::new();
    for a in files {
        let s = match a.file {
            WalFile::Segment(s) | WalFile::Partial(s) => s,
            WalFile::BackupHistory { segment, .. } => segment,
            WalFile::History(_) => continue,
        };
        let (action, reason) = decide_segment(s, a.modified);
        data_timelines.insert(s.timeline);
        if action == WalAction::Keep {
            kept_timelines.insert(s.timeline);
        }
        decisions.push(FileDecision {
            file: a.file,
            action,
            reason,
        });
    }
    for a in files {
        let WalFile::History(t) = a.file else {
            continue;
        };
        let (action, reason) = if kept_timelines.range(t..).next().is_some() {
            (
                WalAction::Keep,
                format!("timeline history: WAL of timeline {t} or later is kept"),
            )
        } else if data_timelines.range(t..).next().is_none() {
            (
                WalAction::Keep,
                format!("timeline history: no WAL of timeline {t} or later is archived yet"),
            )
        } else {
            (
                WalAction::Delete,
                format!("timeline history: no WAL of timeline {t} or later is kept"),
            )
        };
        decisions.push(FileDecision {
            file: a.file,
            action,
            reason,
        });
    }
    decisions.sort_by_key(|d| name_order(d.file));
    WalPlan {
        anchor: Some(anchor.id.clone()),
        files: decisions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SegmentSize = SegmentSize::DEFAULT;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn segs(tl: u32, range: std::ops::RangeInclusive<u32>) -> Vec<Archived> {
        range
            .map(|n| Archived {
                file: WalFile::Segment(SegmentName {
                    timeline: Timeline(tl),
                    log: 0,
                    seg: n,
                }),
                modified: None,
            })
            .collect()
    }

    fn file(name: &str) -> Archived {
        Archived {
            file: name.parse().unwrap(),
            modified: None,
        }
    }

    /// A base on `tl` from segment `start` (offset 0x28) to `stop`.
    fn base(id: &str, tl: u32, start: u64, stop: u64, finished: &str) -> KeptBase {
        KeptBase {
            id: id.into(),
            timeline: Timeline(tl),
            start: Lsn(start * S.bytes() + 0x28),
            stop: Lsn(stop * S.bytes() + 0x100),
            finished: at(finished),
        }
    }

    /// `(name, action)` of every file, `K`/`D`.
    fn show(p: &WalPlan) -> Vec<(String, char)> {
        p.files
            .iter()
            .map(|d| {
                (
                    d.file.to_string(),
                    if d.action == WalAction::Keep {
                        'K'
                    } else {
                        'D'
                    },
                )
            })
            .collect()
    }

    fn kept(p: &WalPlan) -> Vec<String> {
        p.files
            .iter()
            .filter(|d| d.action == WalAction::Keep)
            .map(|d| d.file.to_string())
            .collect()
    }

    fn reason(p: &WalPlan, name: &str) -> String {
        p.files
            .iter()
            .find(|d| d.file.to_string() == name)
            .unwrap()
            .reason
            .clone()
    }

    #[test]
    fn keeps_from_the_base_that_reaches_the_window_start() {
        let files = segs(1, 1..=12);
        let bases = [
            base("b1", 1, 2, 3, "2026-11-01T00:00:00Z"),
            base("b2", 1, 5, 5, "2026-11-08T00:00:00Z"),
            base("b3", 1, 9, 10, "2026-11-15T00:00:00Z"),
        ];
        // window starts between b2 and b3: b2 is the anchor; b1 keeps its
        // consistency range; 1, 4 go.
        let p = plan(&files, &bases, at("2026-11-10T00:00:00Z"), "7d", S);
        assert_eq!(p.anchor.as_deref(), Some("b2"));
        let k: Vec<u32> = p
            .files
            .iter()
            .filter(|d| d.action == WalAction::Keep)
            .map(|d| d.file.segment_data().unwrap().seg)
            .collect();
        assert_eq!(k, [2, 3, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            reason(&p, "000000010000000000000001"),
            "older than every kept base backup"
        );
        assert!(
            reason(&p, "000000010000000000000004").starts_with("needed by no kept base backup"),
            "{}",
            reason(&p, "000000010000000000000004")
        );
        assert!(
            reason(&p, "000000010000000000000002")
                .starts_with("needed by base b1 (its WAL 0/2000028..")
        );
        assert_eq!(
            reason(&p, "000000010000000000000007"),
            "needed by base b2 to reach the start of the 7d window"
        );
        let dels: Vec<String> = p.deletions(S).iter().map(ToString::to_string).collect();
        assert_eq!(
            dels,
            ["000000010000000000000001", "000000010000000000000004"]
        );
        let r = p.ranges();
        assert_eq!(r.len(), 7, "{r:#?}");
        assert_eq!(r[0].action, WalAction::Delete);
        assert_eq!(
            (r[1].first.as_str(), r[1].last.as_str(), r[1].files),
            ("000000010000000000000002", "000000010000000000000003", 2)
        );
    }

    #[test]
    fn window_start_edges() {
        let files = segs(1, 1..=8);
        let bases = [
            base("b1", 1, 2, 2, "2026-11-01T00:00:00Z"),
            base("b2", 1, 5, 5, "2026-11-08T00:00:00Z"),
        ];
        // A base finished exactly at the window start reaches it.
        let p = plan(&files, &bases, at("2026-11-08T00:00:00Z"), "7d", S);
        assert_eq!(p.anchor.as_deref(), Some("b2"));
        // One second earlier it does not: b1 anchors, nothing between goes.
        let p = plan(&files, &bases, at("2026-11-07T23:59:59Z"), "7d", S);
        assert_eq!(p.anchor.as_deref(), Some("b1"));
        assert_eq!(kept(&p).len(), 7);
        // Window before every base: the oldest kept base anchors.
        let p = plan(&files, &bases, at("2026-10-01T00:00:00Z"), "7d", S);
        assert_eq!(p.anchor.as_deref(), Some("b1"));
        // Window after every base (prune --at far ahead): the newest
        // anchors, and its WAL up to the newest segment stays; the older
        // base keeps only its consistency range.
        let p = plan(&files, &bases, at("2027-01-01T00:00:00Z"), "7d", S);
        assert_eq!(p.anchor.as_deref(), Some("b2"));
        assert_eq!(
            kept(&p),
            [
                "000000010000000000000002",
                "000000010000000000000005",
                "000000010000000000000006",
                "000000010000000000000007",
                "000000010000000000000008",
            ]
        );
    }

    #[test]
    fn no_base_keeps_everything() {
        let files = segs(1, 1..=3);
        let p = plan(&files, &[], at("2026-11-08T00:00:00Z"), "7d", S);
        assert_eq!(p.count(WalAction::Delete), 0);
        assert!(p.files[0].reason.starts_with("no kept base backup"));
        assert!(p.deletions(S).is_empty());
    }

    #[test]
    fn base_start_in_the_middle_of_a_segment_keeps_that_segment() {
        // The start LSN is inside segment 5 (offset 0x28): 5 stays, and the
        // stop LSN inside segment 6 keeps 6 for consistency.
        let files = segs(1, 4..=7);
        let bases = [base("b", 1, 5, 6, "2026-11-01T00:00:00Z")];
        let p = plan(&files, &bases, at("2026-11-02T00:00:00Z"), "1d", S);
        assert_eq!(
            show(&p),
            [
                ("000000010000000000000004".into(), 'D'),
                ("000000010000000000000005".into(), 'K'),
                ("000000010000000000000006".into(), 'K'),
                ("000000010000000000000007".into(), 'K'),
            ]
        );
        // A stop LSN exactly at a segment boundary does not need the next
        // segment for consistency.
        let b = KeptBase {
            stop: Lsn(6 * S.bytes()),
            ..bases[0].clone()
        };
        let old = base("new", 1, 7, 7, "2026-11-05T00:00:00Z");
        let p = plan(&files, &[b, old], at("2026-11-06T00:00:00Z"), "1d", S);
        assert_eq!(p.anchor.as_deref(), Some("new"));
        assert_eq!(
            kept(&p),
            ["000000010000000000000005", "000000010000000000000007"]
        );
    }

    #[test]
    fn timelines_are_followed_and_history_files_kept_while_needed() {
        // Timeline 1: segments 1..=9; promoted to timeline 2 at segment 8
        // (2 holds 8..=12); then to 3 at 11 (3 holds 11..=13).
        let mut files = segs(1, 1..=9);
        files.extend(segs(2, 8..=12));
        files.extend(segs(3, 11..=13));
        files.push(file("00000002.history"));
        files.push(file("00000003.history"));
        files.push(file("00000004.history")); // promoted, no segment yet
        files.push(file("000000010000000000000002.00000028.backup"));
        files.push(file("000000020000000000000009.00000028.backup"));
        files.push(file("000000010000000000000009.partial"));
        let bases = [
            base("b1", 1, 2, 2, "2026-11-01T00:00:00Z"),
            base("b2", 2, 9, 9, "2026-11-08T00:00:00Z"),
        ];
        let p = plan(&files, &bases, at("2026-11-09T00:00:00Z"), "1d", S);
        assert_eq!(p.anchor.as_deref(), Some("b2"));
        let k = kept(&p);
        // b1 keeps segment 2 (and its .backup file) on timeline 1 and on
        // every later timeline; b2 everything from 9 on timelines 2 and 3.
        assert_eq!(
            k,
            [
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000020000000000000009",
                "000000020000000000000009.00000028.backup",
                "00000002000000000000000A",
                "00000002000000000000000B",
                "00000002000000000000000C",
                "00000003000000000000000B",
                "00000003000000000000000C",
                "00000003000000000000000D",
                "00000002.history",
                "00000003.history",
                "00000004.history",
            ]
        );
        // Timeline 1 from 9 on (the partial too) and timeline 2's 8 are
        // not on b2's path.
        assert_eq!(
            reason(&p, "000000010000000000000009.partial"),
            "needed by no kept base backup (before the window, or on a timeline they do not follow)"
        );
        // Deletions go oldest position first, whatever the timeline.
        let dels: Vec<String> = p.deletions(S).iter().map(ToString::to_string).collect();
        assert_eq!(
            dels,
            [
                "000000010000000000000001",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000010000000000000006",
                "000000010000000000000007",
                "000000010000000000000008",
                "000000020000000000000008",
                "000000010000000000000009",
                "000000010000000000000009.partial",
            ]
        );
        // Once only timeline 3's WAL is kept, 2.history still is (3 and
        // later kept), but with no WAL of timeline 2 or later kept at all
        // it would go.
        let only_tl1 = segs(1, 1..=3);
        let mut f = only_tl1.clone();
        f.extend(segs(2, 2..=2));
        f.push(file("00000002.history"));
        let bs = [base("b", 1, 3, 3, "2026-11-01T00:00:00Z")];
        let p = plan(&f, &bs, at("2026-11-09T00:00:00Z"), "1d", S);
        assert_eq!(
            kept(&p),
            ["000000010000000000000003"],
            "timeline 2 branched before the base's start: its segment 2 and its history go"
        );
        assert_eq!(
            p.deletions(S).last().unwrap().to_string(),
            "00000002.history"
        );
    }

    #[test]
    fn inside_the_window_is_said_by_storage_time() {
        let mut files = segs(1, 1..=3);
        files[2].modified = Some(at("2026-11-09T12:00:00Z"));
        let bases = [base("b", 1, 1, 1, "2026-11-01T00:00:00Z")];
        let p = plan(&files, &bases, at("2026-11-09T00:00:00Z"), "7d", S);
        assert_eq!(
            reason(&p, "000000010000000000000003"),
            "inside the 7d window"
        );
        assert_eq!(
            reason(&p, "000000010000000000000002"),
            "needed by base b to reach the start of the 7d window"
        );
    }
}

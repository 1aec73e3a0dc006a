//! Point-in-time recovery's choices, made before anything is restored:
//! the recovery target (a time, an LSN, a transaction, a restore point or
//! the end of the archived WAL) and the timeline recovery follows; the
//! base backup to start from (the newest that ends before the target and
//! lies on that timeline's history); refusing `--timeline latest` when it
//! would silently leave a parent timeline that kept receiving WAL. And,
//! once a copy promoted, where its replay ended (a restore to the end of
//! the archive checks it reached the newest segment).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::base::BASE_OBJECT;
use super::major_of;
use super::wal::continuity::TimelineSwitch;
use super::wal::{Lsn, SegmentName, SegmentSize, Timeline};
use crate::catalog::Entry;
use crate::catalog::manifest::BaseInfo;
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::ObjectRecord;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Name(String),
    /// Up to and including this transaction's commit (or abort).
    Xid(u64),
    /// Replay everything archived.
    Latest,
}

/// Parses `--to-xid`: a transaction id as `txid_current()`, `pg_current_xact_id()`
/// or a server log print it (32-bit, or 64-bit with the epoch).
pub fn parse_xid(s: &str) -> Result<u64> {
    match s.trim().parse::<u64>() {
        // 0-2 are reserved (invalid, bootstrap, frozen): never a commit
        Ok(x) if x >= 3 => Ok(x),
        _ => Err(Error::usage(format!(
            "--to-xid {s:?}: give a transaction id (a number of 3 or more, as `SELECT pg_current_xact_id()` shows)"
        ))),
    }
}

impl RecoveryTarget {
    /// The `recovery_target_*` setting, if any.
    pub(super) fn setting(&self) -> Option<String> {
        match self {
            RecoveryTarget::Time(t) => Some(format!(
                "recovery_target_time = '{}'",
                t.format("%Y-%m-%d %H:%M:%S%.6f+00")
            )),
            RecoveryTarget::Lsn(l) => Some(format!("recovery_target_lsn = '{l}'")),
            RecoveryTarget::Name(n) => Some(format!("recovery_target_name = {}", conf_quote(n))),
            RecoveryTarget::Xid(x) => Some(format!("recovery_target_xid = '{x}'")),
            RecoveryTarget::Latest => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(t) => format!(
                "time {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            RecoveryTarget::Lsn(l) => format!("LSN {l}"),
            RecoveryTarget::Name(n) => format!("restore point {n:?}"),
            RecoveryTarget::Xid(x) => format!("transaction {x}"),
            RecoveryTarget::Latest => "the end of the archived WAL".into(),
        }
    }
}

/// Quotes a value for postgresql.conf.
pub(super) fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A base backup with its opened manifest.
pub struct Candidate {
    pub entry: Entry,
    pub base: BaseInfo,
    pub record: ObjectRecord,
    /// An incremental's chain once resolved (`base::chain::resolve`): the
    /// backups it applies on, the full one first. Empty for a full backup.
    pub chain: Vec<Candidate>,
}

/// Opens the manifests of every base backup among `entries` (newest first).
pub fn candidates(entries: &[Entry], identities: &[Identity]) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.summary().kind == "base") {
        let m = e.file.open(&e.manifest_key, identities)?;
        let (Some(base), Some(record)) = (m.base.clone(), m.object(BASE_OBJECT).cloned()) else {
            return Err(Error::integrity(format!(
                "base backup {} has no base information or no {BASE_OBJECT}",
                e.summary().id
            )));
        };
        out.push(Candidate {
            entry: e.clone(),
            base,
            record,
            chain: Vec::new(),
        });
    }
    Ok(out)
}

/// The major version a base backup was taken with.
pub fn backup_major(c: &Candidate) -> u32 {
    major_of(c.base.server_version_num)
}

/// The timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineTarget {
    /// The base backup's own timeline.
    Current,
    /// The newest timeline, as PostgreSQL finds it: history files counted
    /// upward from the base backup's timeline without a hole.
    Latest,
    Number(u32),
}

impl std::fmt::Display for TimelineTarget {
    /// As `--timeline` and `recovery_target_timeline` spell it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimelineTarget::Current => f.write_str("current"),
            TimelineTarget::Latest => f.write_str("latest"),
            TimelineTarget::Number(n) => write!(f, "{n}"),
        }
    }
}

impl TimelineTarget {
    /// `latest`, `current` or a number (`--timeline`).
    pub fn parse(s: &str) -> Result<TimelineTarget> {
        match s {
            "latest" => Ok(TimelineTarget::Latest),
            "current" => Ok(TimelineTarget::Current),
            n => n.parse().map(TimelineTarget::Number).map_err(|_| {
                Error::usage(format!(
                    "--timeline {s:?}: give a timeline number, `latest` or `current`"
                ))
            }),
        }
    }

    /// The timeline recovery from a base backup on `base` ends on.
    pub fn resolve(self, base: Timeline, switches: &[TimelineSwitch]) -> Timeline {
        match self {
            TimelineTarget::Current => base,
            TimelineTarget::Number(n) => Timeline(n),
            TimelineTarget::Latest => {
                let have: std::collections::BTreeSet<u32> =
                    switches.iter().map(|s| s.timeline.0).collect();
                let mut t = base.0;
                while have.contains(&(t + 1)) {
                    t += 1;
                }
                Timeline(t)
            }
        }
    }
}

/// A parent timeline that kept receiving WAL after a child branched off
/// it: two servers wrote (an old primary that ran on after a failover, a
/// restored copy promoted while production went on). Following the child
/// silently drops what the parent wrote after the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveParent {
    pub child: Timeline,
    pub parent: Timeline,
    /// Where the child branched off.
    pub branch: Lsn,
    /// The parent's newest archived segment, past the branch.
    pub parent_newest: SegmentName,
}

/// The parents on the way from `base` to `target` (each child's direct
/// parent, the last line of its history file) that hold archived
/// segments after the segment their child branched off in. The segment
/// holding the branch point itself proves nothing: an old primary that
/// died may have archived it whole.
pub fn live_parents(
    base: Timeline,
    target: Timeline,
    segments: &[SegmentName],
    switches: &[TimelineSwitch],
    size: SegmentSize,
) -> Vec<LiveParent> {
    let mut out = Vec::new();
    let mut child = target;
    while child > base {
        // the direct parent: the switch of `child` at the highest LSN
        let Some(direct) = switches
            .iter()
            .filter(|s| s.timeline == child)
            .max_by_key(|s| s.switch)
        else {
            break;
        };
        let branch_segno = SegmentName::containing(direct.parent, direct.switch, size).segno(size);
        if let Some(newest) = segments
            .iter()
            .filter(|s| s.timeline == direct.parent && s.segno(size) > branch_segno)
            .max()
        {
            out.push(LiveParent {
                child,
                parent: direct.parent,
                branch: direct.switch,
                parent_newest: *newest,
            });
        }
        child = direct.parent;
    }
    out
}

/// Refuses to follow `--timeline latest` from `chosen` when the path
/// it takes leaves a parent that kept receiving WAL (see [`LiveParent`]).
/// An explicit timeline is the operator's choice and is not checked.
pub fn check_live_timelines(
    chosen: &Candidate,
    timeline: TimelineTarget,
    listing: &super::wal::archive::WalListing,
) -> Result<()> {
    let (TimelineTarget::Latest, Some(size)) =
        (timeline, SegmentSize::new(chosen.base.wal_segment_size))
    else {
        return Ok(());
    };
    let from = Timeline(chosen.base.timeline);
    let to = timeline.resolve(from, &listing.switches);
    refuse_live_parents(&live_parents(
        from,
        to,
        &listing.segments,
        &listing.switches,
        size,
    ))
}

/// The error for the first of `live`, if any.
pub fn refuse_live_parents(live: &[LiveParent]) -> Result<()> {
    let Some(l) = live.first() else {
        return Ok(());
    };
    Err(Error::usage(format!(
        "two timelines are live: timeline {} branched off timeline {} at LSN {}, and timeline {} kept receiving WAL after that (its newest archived segment is {}); --timeline latest would follow timeline {} and miss what timeline {} wrote since",
        l.child.0, l.parent.0, l.branch, l.parent.0, l.parent_newest, l.child.0, l.parent.0
    ))
    .hint(format!(
        "pick one: --timeline {} (or `current` when the base backup is on it) follows the server that kept running on timeline {}; --timeline {} follows the branch (a failover's new primary, or a restored copy that archived); a restored copy archives only with --archive-mode preserve",
        l.parent.0, l.parent.0, l.child.0
    )))
}

/// Whether recovery can follow timeline `target` from the base backup
/// `c`: it is on that timeline, or wholly (start to stop) on an ancestor
/// before the point where `target`'s history leaves it. PostgreSQL refuses
/// anything else ("requested timeline is not a child of this server's
/// history"), or never reaches the backup's end.
pub fn reaches(c: &BaseInfo, target: Timeline, switches: &[TimelineSwitch]) -> bool {
    let base = Timeline(c.timeline);
    if base == target {
        return true;
    }
    let Ok(stop) = c.stop_lsn.parse::<Lsn>() else {
        return false;
    };
    switches
        .iter()
        .any(|s| s.timeline == target && s.parent == base && stop <= s.switch)
}

/// The newest base backup among `cands` from which recovery can reach
/// `target` on the timeline `timeline` names (`switches`: the archive's
/// timeline history).
/// Refuses a target before the oldest one (exit 2).
pub fn choose(
    cands: Vec<Candidate>,
    target: &RecoveryTarget,
    timeline: TimelineTarget,
    switches: &[TimelineSwitch],
) -> Result<Candidate> {
    let oldest = cands
        .iter()
        .min_by_key(|c| c.base.stop_time)
        .map(|c| (c.base.stop_time, c.base.stop_lsn.clone()));
    let Some((oldest_time, oldest_lsn)) = oldest else {
        return Err(Error::integrity("no base backup of this source")
            .hint("take one with `strata backup SOURCE --kind base`"));
    };
    let newest = cands
        .iter()
        .max_by_key(|c| c.base.stop_time)
        .map(|c| {
            let tli = timeline.resolve(Timeline(c.base.timeline), switches);
            format!(
                "the newest, {}, is on timeline {} and ends at LSN {}; timeline {} {}",
                c.entry.summary().id,
                c.base.timeline,
                c.base.stop_lsn,
                tli.0,
                match switches
                    .iter()
                    .find(|s| s.timeline == tli && s.parent == Timeline(c.base.timeline))
                {
                    Some(s) => format!("branched off it at LSN {}", s.switch),
                    None => "does not descend from it".to_string(),
                }
            )
        })
        .unwrap_or_default();
    let on_timeline: Vec<Candidate> = cands
        .into_iter()
        .filter(|c| {
            let tli = timeline.resolve(Timeline(c.base.timeline), switches);
            reaches(&c.base, tli, switches)
        })
        .collect();
    if on_timeline.is_empty() {
        return Err(Error::usage(format!(
            "no base backup lies on the history of the timeline recovery would follow: {newest}"
        ))
        .hint("choose the timeline with --timeline N (or `current`), or take a base backup on the new timeline"));
    }
    let fits = |c: &Candidate| match target {
        RecoveryTarget::Time(t) => c.base.stop_time < *t,
        RecoveryTarget::Lsn(l) => c.base.stop_lsn.parse::<Lsn>().is_ok_and(|s| s <= *l),
        // where a restore point lies is not known before replay
        RecoveryTarget::Name(_) | RecoveryTarget::Xid(_) | RecoveryTarget::Latest => true,
    };
    let mut fitting: Vec<Candidate> = on_timeline.into_iter().filter(fits).collect();
    fitting.sort_by_key(|c| std::cmp::Reverse(c.base.stop_time));
    fitting.into_iter().next().ok_or_else(|| {
        Error::usage(format!(
            "{} is before the oldest base backup: the earliest possible point is {} (LSN {oldest_lsn})",
            target.describe(),
            oldest_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .hint("choose a later target; WAL alone cannot go back before a base backup")
    })
}

/// Where recovery ended in a promoted copy: the switch point its new
/// timeline's history file records (`None` before promotion).
pub fn replay_end(dir: &Path) -> Option<Lsn> {
    let history = std::fs::read_dir(dir.join("pg_wal"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "history"))
        .max()?;
    let text = std::fs::read_to_string(history).ok()?;
    text.lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|lsn| lsn.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 item 2: a copy restored to look at the past archived
    /// timeline 2 while production went on on timeline 1; `--timeline
    /// latest` followed the copy and silently returned its data.
    #[test]
    fn a_parent_that_kept_receiving_wal_is_live() {
        let size = SegmentSize::DEFAULT;
        let seg = |tli: u32, n: u64| SegmentName::from_segno(Timeline(tli), n, size);
        let switch = |tli: u32, parent: u32, segno: u64| TimelineSwitch {
            timeline: Timeline(tli),
            parent: Timeline(parent),
            switch: Lsn(segno * size.bytes() + 0x100),
        };
        // timeline 2 branched off 1 in segment 5
        let switches = [switch(2, 1, 5)];
        // a failover: the old primary archived the branch's segment whole
        let failover = [seg(1, 4), seg(1, 5), seg(2, 5), seg(2, 6)];
        assert!(live_parents(Timeline(1), Timeline(2), &failover, &switches, size).is_empty());
        // the old primary went on: segments 6 and 7 on timeline 1
        let split = [seg(1, 4), seg(1, 5), seg(1, 6), seg(1, 7), seg(2, 5)];
        let live = live_parents(Timeline(1), Timeline(2), &split, &switches, size);
        assert_eq!(live.len(), 1);
        assert_eq!(
            (live[0].parent, live[0].parent_newest),
            (Timeline(1), seg(1, 7))
        );
        let e = refuse_live_parents(&live).unwrap_err();
        assert!(e.message.contains("two timelines are live"), "{e}");
        assert!(e.hint.unwrap().contains("--timeline 1"));
        // a base backup on timeline 2 does not look at timeline 1
        assert!(live_parents(Timeline(2), Timeline(2), &split, &switches, size).is_empty());
        // timeline 3 off 2 off 1: the grandparent is checked too; only the
        // direct parent (the history file's last line) counts per step
        let switches = [switch(2, 1, 5), switch(3, 1, 5), switch(3, 2, 8)];
        let segs = [seg(1, 5), seg(1, 9), seg(2, 5), seg(2, 8), seg(3, 8)];
        let live = live_parents(Timeline(1), Timeline(3), &segs, &switches, size);
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].child, live[0].parent), (Timeline(2), Timeline(1)));
    }

    #[test]
    fn timelines_a_base_backup_reaches() {
        let sw = |t: u32, p: u32, lsn: &str| TimelineSwitch {
            timeline: Timeline(t),
            parent: Timeline(p),
            switch: lsn.parse().unwrap(),
        };
        // 2 branched off 1 at 0/5000000; 3 off 2 at 0/9000000 (its history
        // names both ancestors)
        let switches = [
            sw(2, 1, "0/5000000"),
            sw(3, 1, "0/5000000"),
            sw(3, 2, "0/9000000"),
        ];
        let base = |tli: u32, stop: &str| BaseInfo {
            start_lsn: "0/1000028".into(),
            stop_lsn: stop.into(),
            timeline: tli,
            start_time: Utc::now(),
            stop_time: Utc::now(),
            system_identifier: "1".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            wal_segment_size: 16 << 20,
            backup_label: String::new(),
            incremental: None,
            basis_sha256: None,
        };
        let latest = TimelineTarget::Latest;
        assert_eq!(latest.resolve(Timeline(1), &switches), Timeline(3));
        assert_eq!(latest.resolve(Timeline(4), &switches), Timeline(4));
        assert_eq!(
            TimelineTarget::Current.resolve(Timeline(2), &switches),
            Timeline(2)
        );
        // a hole stops PostgreSQL's probe
        assert_eq!(latest.resolve(Timeline(1), &[sw(3, 1, "0/1")]), Timeline(1));

        let early = base(1, "0/4000000");
        assert!(reaches(&early, Timeline(1), &switches));
        assert!(reaches(&early, Timeline(2), &switches));
        assert!(reaches(&early, Timeline(3), &switches));
        // on timeline 1 after the branch: only timeline 1
        let late = base(1, "0/6000000");
        assert!(reaches(&late, Timeline(1), &switches));
        assert!(!reaches(&late, Timeline(2), &switches));
        assert!(!reaches(&late, Timeline(3), &switches));
        // ends exactly at the branch point: fine
        assert!(reaches(&base(1, "0/5000000"), Timeline(2), &switches));
        // on timeline 2 before 3 branched off; never back to 1
        let on2 = base(2, "0/8000000");
        assert!(reaches(&on2, Timeline(3), &switches));
        assert!(!reaches(&on2, Timeline(1), &switches));
        assert!(!reaches(&base(2, "0/A000000"), Timeline(3), &switches));

        assert_eq!(
            TimelineTarget::parse("7").unwrap(),
            TimelineTarget::Number(7)
        );
        assert!(TimelineTarget::parse("newest").is_err());
    }

    #[test]
    fn target_settings() {
        let t = RecoveryTarget::Time("2026-11-23T10:00:00.5Z".parse().unwrap());
        assert_eq!(
            t.setting().unwrap(),
            "recovery_target_time = '2026-11-23 10:00:00.500000+00'"
        );
        assert_eq!(
            RecoveryTarget::Name("it's".into()).setting().unwrap(),
            "recovery_target_name = 'it''s'"
        );
        assert_eq!(RecoveryTarget::Latest.setting(), None);
        assert_eq!(
            RecoveryTarget::Xid(parse_xid("4711").unwrap())
                .setting()
                .unwrap(),
            "recovery_target_xid = '4711'"
        );
        for bad in ["", "0", "2", "-5", "12x", "0/3000060"] {
            assert!(parse_xid(bad).is_err(), "{bad}");
        }
    }
}

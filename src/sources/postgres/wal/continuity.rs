//! Is the archived WAL continuous? Given the archived segment names, the
//! timeline switches (from `.history` files) and a starting point (a base
//! backup's start LSN and timeline), [`continuity`] follows the timelines
//! the way recovery with `recovery_target_timeline = 'latest'` would and
//! reports how far replay can go and every gap on the way.
//!
//! Recovery reads the segment holding a switch point from the child
//! timeline (its file starts with the parent's WAL up to the switch), so
//! the parent must hold the segments before that one and the child the
//! segments from it on.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Lsn, SegmentName, SegmentSize, Timeline};

/// One line of a timeline history file: `timeline` branched off `parent`
/// at `switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub timeline: Timeline,
    pub parent: Timeline,
    pub switch: Lsn,
}

/// Parses the content of `<timeline>.history`: lines
/// `<parent tli>\t<switch lsn>\t<reason>`; comments and blank lines are
/// skipped. Each line names an ancestor; the last one is the direct parent.
pub fn parse_history(timeline: Timeline, text: &str) -> Result<Vec<TimelineSwitch>, String> {
    let mut out: Vec<TimelineSwitch> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (f.next(), f.next()) else {
            return Err(format!("history of {timeline}: bad line {line:?}"));
        };
        let parent: u32 = tli
            .parse()
            .map_err(|_| format!("history of {timeline}: bad timeline in {line:?}"))?;
        let switch: Lsn = lsn.parse()?;
        out.push(TimelineSwitch {
            timeline,
            parent: Timeline(parent),
            switch,
        });
    }
    // every line is an ancestor's switch; the direct parent is the last
    Ok(out.pop().into_iter().collect())
}

/// A stretch of missing WAL on `timeline`: `from` (inclusive) to `to`
/// (exclusive), the segments that are not archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub timeline: String,
    pub from: String,
    pub to: String,
    pub missing: Vec<String>,
}

impl Gap {
    pub fn describe(&self) -> String {
        format!(
            "WAL {}–{} on timeline {} is not archived ({} missing segment{}, first {})",
            self.from,
            self.to,
            self.timeline,
            self.missing.len(),
            if self.missing.len() == 1 { "" } else { "s" },
            self.missing.first().map(String::as_str).unwrap_or("?")
        )
    }
}

/// What [`continuity`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuity {
    /// The timelines followed, oldest first.
    pub path: Vec<Timeline>,
    /// Where continuous replay from the start ends: the start of the first
    /// gap, or the end of the newest segment (the start if nothing is
    /// archived from there on).
    pub reachable: Lsn,
    /// The newest archived segment on the path.
    pub newest: Option<SegmentName>,
    pub gaps: Vec<(Lsn, Gap)>,
}

/// Follows the archive from `start` on `timeline` to the newest segment of
/// its newest descendant timeline; see the module documentation.
pub fn continuity(
    segments: &[SegmentName],
    switches: &[TimelineSwitch],
    timeline: Timeline,
    start: Lsn,
    size: SegmentSize,
) -> Continuity {
    let have: BTreeSet<(Timeline, u64)> = segments
        .iter()
        .filter(|s| s.fits(size))
        .map(|s| (s.timeline, s.segno(size)))
        .collect();
    // the path: (timeline, first segno, last segno inclusive or None = open)
    let mut legs: Vec<(Timeline, u64, Option<u64>)> = Vec::new();
    let mut tli = timeline;
    let mut from = start.0 / size.bytes();
    let mut seen = BTreeSet::new();
    while seen.insert(tli) {
        // the newest child that branched off at or after where we are
        let child = switches
            .iter()
            .filter(|s| s.parent == tli && s.switch.0 / size.bytes() >= from)
            .max_by_key(|s| s.timeline);
        match child {
            Some(c) => {
                let switch_seg = c.switch.0 / size.bytes();
                legs.push((tli, from, switch_seg.checked_sub(1)));
                tli = c.timeline;
                from = switch_seg;
            }
            None => {
                legs.push((tli, from, None));
                break;
            }
        }
    }
    let mut gaps = Vec::new();
    let mut newest = None;
    for &(tli, lo, hi) in &legs {
        let hi = match hi {
            Some(h) => h,
            None => match have.range((tli, lo)..=(tli, u64::MAX)).next_back() {
                Some(&(_, h)) => h,
                None => continue,
            },
        };
        if hi < lo {
            continue;
        }
        let mut run: Vec<u64> = Vec::new();
        let mut flush = |run: &mut Vec<u64>| {
            if let (Some(&a), Some(&b)) = (run.first(), run.last()) {
                let first = SegmentName::from_segno(tli, a, size);
                gaps.push((
                    first.start_lsn(size),
                    Gap {
                        timeline: tli.to_string(),
                        from: first.start_lsn(size).to_string(),
                        to: SegmentName::from_segno(tli, b + 1, size)
                            .start_lsn(size)
                            .to_string(),
                        missing: run
                            .iter()
                            .map(|&n| SegmentName::from_segno(tli, n, size).to_string())
                            .collect(),
                    },
                ));
            }
            run.clear();
        };
        for n in lo..=hi {
            if have.contains(&(tli, n)) {
                flush(&mut run);
                newest = Some(SegmentName::from_segno(tli, n, size));
            } else {
                run.push(n);
            }
        }
        flush(&mut run);
    }
    let reachable = match (gaps.first(), newest) {
        (Some((l, _)), _) => (*l).max(start),
        (None, Some(n)) => n.next(size).start_lsn(size),
        (None, None) => start,
    };
    Continuity {
        path: legs.iter().map(|l| l.0).collect(),
        reachable,
        newest,
        gaps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SegmentSize = SegmentSize::DEFAULT;

    fn segs(names: &[&str]) -> Vec<SegmentName> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    #[test]
    fn continuous_archive_has_no_gap() {
        let s = segs(&[
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
        ]);
        let c = continuity(&s, &[], Timeline(1), lsn("0/2000028"), S);
        assert!(c.gaps.is_empty());
        assert_eq!(c.newest, Some(s[2]));
        assert_eq!(c.reachable, lsn("0/4000000"));
        assert_eq!(c.path, vec![Timeline(1)]);
    }

    #[test]
    fn gaps_are_ranges_of_missing_segments() {
        let s = segs(&[
            "000000010000000000000002",
            "000000010000000000000004",
            "000000010000000000000008",
        ]);
        let c = continuity(&s, &[], Timeline(1), lsn("0/2000028"), S);
        assert_eq!(c.gaps.len(), 2);
        let g = &c.gaps[0].1;
        assert_eq!((g.from.as_str(), g.to.as_str()), ("0/3000000", "0/4000000"));
        assert_eq!(g.missing, vec!["000000010000000000000003"]);
        let g = &c.gaps[1].1;
        assert_eq!((g.from.as_str(), g.to.as_str()), ("0/5000000", "0/8000000"));
        assert_eq!(g.missing.len(), 3);
        assert_eq!(g.missing[0], "000000010000000000000005");
        assert!(
            g.describe().contains("0/5000000–0/8000000"),
            "{}",
            g.describe()
        );
        assert_eq!(c.reachable, lsn("0/3000000"));
        assert_eq!(c.newest, Some(s[2]));
    }

    #[test]
    fn missing_start_segment_is_a_gap_and_older_segments_do_not_count() {
        let s = segs(&["000000010000000000000001", "000000010000000000000003"]);
        let c = continuity(&s, &[], Timeline(1), lsn("0/2000028"), S);
        assert_eq!(c.gaps.len(), 1);
        assert_eq!(c.gaps[0].1.missing, vec!["000000010000000000000002"]);
        assert_eq!(c.reachable, lsn("0/2000028"));
        // nothing archived from the start on: no newest, no gap
        let c = continuity(&s[..1], &[], Timeline(1), lsn("0/2000028"), S);
        assert_eq!((c.newest, c.gaps.len()), (None, 0));
        assert_eq!(c.reachable, lsn("0/2000028"));
    }

    #[test]
    fn follows_timeline_switches() {
        // timeline 2 branched off 1 at 0/3000100; timeline 3 off 2 at 0/5000000
        let sw = vec![
            TimelineSwitch {
                timeline: Timeline(2),
                parent: Timeline(1),
                switch: lsn("0/3000100"),
            },
            TimelineSwitch {
                timeline: Timeline(3),
                parent: Timeline(2),
                switch: lsn("0/5000000"),
            },
        ];
        let s = segs(&[
            "000000010000000000000002",
            "000000010000000000000003", // superseded by 2's copy
            "000000010000000000000004", // timeline 1 went on; not followed
            "000000020000000000000003",
            "000000020000000000000004",
            "000000030000000000000005",
            "000000030000000000000007",
        ]);
        let c = continuity(&s, &sw, Timeline(1), lsn("0/2000028"), S);
        assert_eq!(c.path, vec![Timeline(1), Timeline(2), Timeline(3)]);
        assert_eq!(c.gaps.len(), 1);
        assert_eq!(c.gaps[0].1.missing, vec!["000000030000000000000006"]);
        assert_eq!(c.gaps[0].1.timeline, "00000003");
        assert_eq!(c.newest.unwrap().to_string(), "000000030000000000000007");

        // the switch segment missing on the child is a gap on the child
        let s2: Vec<SegmentName> = s
            .iter()
            .copied()
            .filter(|n| n.to_string() != "000000020000000000000003")
            .collect();
        let c = continuity(&s2, &sw, Timeline(1), lsn("0/2000028"), S);
        assert_eq!(c.gaps[0].1.missing, vec!["000000020000000000000003"]);
        assert_eq!(c.gaps[0].1.from, "0/3000000");

        // a backup taken after the switch on timeline 1 stays on 1
        let c = continuity(&s, &sw, Timeline(1), lsn("0/4000028"), S);
        assert_eq!(c.path, vec![Timeline(1)]);
        assert!(c.gaps.is_empty());
    }

    #[test]
    fn history_file_parsing() {
        let text = "1\t0/3000100\tno recovery target specified\n\n\
                    2\t0/5000000\tbefore 2026-01-01 00:00:00+00\n";
        let sw = parse_history(Timeline(3), text).unwrap();
        assert_eq!(
            sw,
            vec![TimelineSwitch {
                timeline: Timeline(3),
                parent: Timeline(2),
                switch: lsn("0/5000000"),
            }]
        );
        assert!(parse_history(Timeline(2), "x y z\n").is_err());
    }
}

//! The drill report as one self-contained HTML page: inline CSS, inline
//! SVG charts, no scripts, no external assets (it must open from a mail
//! attachment or an air-gapped host). Pure: report and history in, text
//! out.

use std::fmt::Write;

use super::report::{DrillReport, Outcome, SourceReport};
use super::store::DrillSummary;
use crate::util::human_bytes;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1d2329;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde3;padding-bottom:4px}\
.meta{color:#5b6773}\
#verdict{font-size:34px;font-weight:700;letter-spacing:2px;padding:18px 24px;border-radius:8px;margin:16px 0;color:#fff}\
#verdict.pass{background:#1f8a4c}#verdict.fail{background:#c62828}#verdict.plan{background:#5b6773}\
#verdict small{display:block;font-size:14px;font-weight:400;letter-spacing:0}\
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e8ec;vertical-align:top}\
th{background:#f3f5f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.pass{color:#1f8a4c;font-weight:600}.fail{color:#c62828;font-weight:600}.skipped{color:#8a6d00;font-weight:600}\
ul.faults li{color:#c62828}.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}\
code{background:#f3f5f7;padding:1px 4px;border-radius:3px}";

/// Phase colours, by the start of the phase name.
fn colour(phase: &str) -> &'static str {
    if phase.starts_with("download") {
        "#3b7dd8"
    } else if phase.starts_with("WAL") {
        "#e08a1e"
    } else if phase.starts_with("server") {
        "#8e63c7"
    } else if phase.starts_with("checks") {
        "#2e9e6a"
    } else {
        "#7a8793"
    }
}

fn secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s >= 120.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{s:.1} s"),
        None => "–".into(),
    }
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => " <span class=\"pass\">✓</span>",
        Some(false) => " <span class=\"fail\">✗ missed</span>",
        None => "",
    }
}

/// Renders the page. `history` holds earlier drills (oldest first); the
/// current one is added to the chart.
pub fn render(r: &DrillReport, history: &[DrillSummary]) -> String {
    let mut h = String::new();
    let (class, word) = if r.dry_run {
        ("plan", "PLAN")
    } else if r.passed {
        ("pass", "PASS")
    } else {
        ("fail", "FAIL")
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>strata drill {id}: {word}</title><style>{CSS}</style></head><body>\
<h1>Recovery drill {id}</h1>\
<div class=\"meta\">target <b>{target}</b> · started {start} · finished {end} · host {host} · strata {ver}{tier}</div>\
<div id=\"verdict\" class=\"{class}\">{word}<small>{sub}</small></div>",
        id = esc(&r.id),
        target = esc(&r.target),
        start = r.started.format("%Y-%m-%d %H:%M:%S UTC"),
        end = r.finished.format("%H:%M:%S UTC"),
        host = esc(&r.host),
        ver = esc(&r.strata_version),
        tier = r
            .tier
            .as_ref()
            .map(|t| format!(" · tier {}", esc(t)))
            .unwrap_or_default(),
        sub = esc(&if r.dry_run {
            format!(
                "dry run: {} source(s) planned, nothing restored",
                r.sources.len()
            )
        } else {
            let ok = r.sources.iter().filter(|s| s.passed).count();
            format!(
                "{ok} of {} source(s) passed · total RTO {}",
                r.sources.len(),
                secs(Some(r.rto_seconds))
            )
        }),
    );
    if !r.faults.is_empty() {
        h.push_str("<h2>Faults</h2><ul class=\"faults\">");
        for f in &r.faults {
            let _ = write!(h, "<li>{}</li>", esc(f));
        }
        h.push_str("</ul>");
    }
    h.push_str(
        "<h2>Sources</h2><table><tr><th>source</th><th>method</th><th>backup</th>\
<th>RTO (target)</th><th>RPO (target)</th><th>restorable point</th><th>bytes</th><th>throughput</th><th>result</th></tr>",
    );
    for s in &r.sources {
        let result = if s.skipped {
            "<span class=\"skipped\">skipped</span>"
        } else if s.passed {
            "<span class=\"pass\">pass</span>"
        } else {
            "<span class=\"fail\">FAIL</span>"
        };
        let _ = write!(
            h,
            "<tr><td><b>{}</b> <span class=\"meta\">{}</span></td><td>{}</td><td><code>{}</code></td>\
<td class=\"num\">{} ({}){}</td><td class=\"num\">{} ({}){}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{result}</td></tr>",
            esc(&s.source),
            esc(&s.kind),
            esc(s.method.as_deref().unwrap_or("–")),
            esc(&crate::util::with_chain(
                s.backup.as_deref().unwrap_or("–"),
                &s.chain
            )),
            secs(s.rto_seconds),
            secs(s.rto_target_seconds),
            met(s.rto_met()),
            secs(s.rpo_seconds),
            secs(s.rpo_target_seconds),
            met(s.rpo_met()),
            s.restorable_point
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "–".into()),
            human_bytes(s.bytes),
            s.throughput_bytes_per_second
                .map(|b| format!("{}/s", human_bytes(b as u64)))
                .unwrap_or_else(|| "–".into()),
        );
    }
    h.push_str("</table>");
    h.push_str(
        "<h2>Timeline</h2><div class=\"meta\">seconds from the start of each source's restore (sources ran one after another)</div>",
    );
    h.push_str(&timeline(&r.sources));
    h.push_str("<h2>RTO and RPO over the drill history</h2>");
    h.push_str(&history_chart(history, r));
    h.push_str("<h2>Checks</h2>");
    for s in &r.sources {
        let _ = write!(h, "<h3>{}</h3>", esc(&s.source));
        if let Some(sb) = &s.sandbox {
            let _ = write!(h, "<div class=\"meta\">sandbox {}</div>", esc(sb));
        }
        if let Some(w) = &s.wal {
            let _ = write!(
                h,
                "<div class=\"meta\">WAL {} … {} ({} segments, {})</div>",
                esc(&w.first),
                esc(w.last.as_deref().unwrap_or("none")),
                w.segments,
                human_bytes(w.bytes)
            );
        }
        if let Some(e) = &s.error {
            let _ = write!(h, "<p class=\"fail\">{}</p>", esc(e));
            if let Some(hint) = &s.hint {
                let _ = write!(h, "<p>HINT: {}</p>", esc(hint));
            }
        }
        if s.checks.is_empty() {
            continue;
        }
        h.push_str("<table><tr><th>check</th><th>result</th><th>detail</th></tr>");
        for c in &s.checks {
            let (cls, w) = match c.outcome {
                Outcome::Pass => ("pass", "pass"),
                Outcome::Fail => ("fail", "FAIL"),
                Outcome::Skipped => ("skipped", "skipped"),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{cls}\">{w}</td><td>{}</td></tr>",
                esc(&c.name),
                esc(&c.detail)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

/// One row per source, one bar per phase, on a common seconds axis.
fn timeline(sources: &[SourceReport]) -> String {
    let rows: Vec<&SourceReport> = sources.iter().filter(|s| !s.phases.is_empty()).collect();
    if rows.is_empty() {
        return "<p class=\"meta\">no phases recorded</p>".into();
    }
    let max = rows
        .iter()
        .flat_map(|s| s.phases.iter().map(|p| p.start_seconds + p.seconds))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let (left, width, row_h) = (140.0, 900.0, 30.0);
    let height = rows.len() as f64 * row_h + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"phase timeline\">",
        w = left + width + 20.0
    );
    for (i, src) in rows.iter().enumerate() {
        let y = 10.0 + i as f64 * row_h;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 17.0,
            esc(&src.source)
        );
        for p in &src.phases {
            let x = left + p.start_seconds / max * width;
            let w = (p.seconds / max * width).max(1.0);
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"22\" fill=\"{}\"><title>{}: {:.2} s</title></rect>",
                colour(&p.name),
                esc(&p.name),
                p.seconds
            );
            if w > 60.0 {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#fff\">{:.1}s</text>",
                    x + 4.0,
                    y + 15.0,
                    p.seconds
                );
            }
        }
    }
    let axis_y = 10.0 + rows.len() as f64 * row_h + 6.0;
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let x = left + width * k as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"6\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\" stroke=\"#e4e8ec\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#5b6773\">{v:.1}s</text>",
            axis_y + 14.0
        );
    }
    s.push_str("</svg><div class=\"legend meta\">");
    let mut seen: Vec<&str> = Vec::new();
    for p in rows.iter().flat_map(|s| &s.phases) {
        if !seen.contains(&p.name.as_str()) {
            seen.push(&p.name);
            let _ = write!(
                s,
                "<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>",
                colour(&p.name),
                esc(&p.name)
            );
        }
    }
    s.push_str("</div>");
    s
}

/// Total RTO and worst RPO of each drill, oldest to newest, the current
/// drill last; failed drills are marked red.
fn history_chart(history: &[DrillSummary], current: &DrillReport) -> String {
    let mut points: Vec<DrillSummary> = history
        .iter()
        .filter(|d| d.id != current.id)
        .cloned()
        .collect();
    if !current.dry_run {
        points.push(DrillSummary::of(current));
    }
    if points.is_empty() {
        return "<p class=\"meta\">no drills yet</p>".into();
    }
    let rto: Vec<f64> = points.iter().map(|d| d.rto_seconds).collect();
    let rpo: Vec<f64> = points
        .iter()
        .map(|d| d.rpo_seconds().unwrap_or(0.0))
        .collect();
    let max = rto
        .iter()
        .chain(&rpo)
        .fold(0.0_f64, |a, b| a.max(*b))
        .max(1.0);
    let (left, top, width, height) = (60.0, 10.0, 880.0, 200.0);
    let n = points.len();
    let x = |i: usize| {
        if n == 1 {
            left + width / 2.0
        } else {
            left + width * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| top + height - v / max * height;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"RTO and RPO history\">",
        left + width + 30.0,
        top + height + 50.0
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e4e8ec\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5b6773\">{}</text>",
            left + width,
            left - 6.0,
            y(v) + 4.0,
            secs(Some(v)),
            yy = y(v)
        );
    }
    for (vals, col, name) in [(&rto, "#3b7dd8", "RTO"), (&rpo, "#e08a1e", "RPO")] {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for (i, v) in vals.iter().enumerate() {
            let dot = if points[i].passed { col } else { "#c62828" };
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{dot}\"><title>{} {name} {}</title></circle>",
                x(i),
                y(*v),
                esc(&points[i].id),
                secs(Some(*v))
            );
        }
    }
    for (i, d) in points.iter().enumerate() {
        if n <= 12 || i % n.div_ceil(12) == 0 || i == n - 1 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#5b6773\">{}</text>",
                x(i),
                top + height + 18.0,
                d.started.format("%Y-%m-%d")
            );
        }
    }
    s.push_str(
        "</svg><div class=\"legend meta\"><span><i class=\"sw\" style=\"background:#3b7dd8\"></i>total RTO</span>\
<span><i class=\"sw\" style=\"background:#e08a1e\"></i>worst RPO</span><span><i class=\"sw\" style=\"background:#c62828\"></i>failed drill</span></div>",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::super::report::{Check, Phase};
    use super::*;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let mut src = SourceReport::new("db<1>", "postgres");
        src.phases.push(Phase {
            name: "download+decrypt+decompress".into(),
            start_seconds: 0.0,
            seconds: 2.0,
        });
        src.checks.push(Check::new("x", true, "a & b"));
        src.rto_seconds = Some(2.0);
        let mut r = DrillReport {
            id: "20261123T101502Z-3f9a1c".into(),
            started: chrono::Utc::now(),
            finished: chrono::Utc::now(),
            target: "latest".into(),
            target_time: chrono::Utc::now(),
            tier: None,
            host: "h".into(),
            strata_version: "t".into(),
            dry_run: false,
            passed: false,
            rto_seconds: 0.0,
            sources: vec![src],
            faults: vec![],
            report_files: vec![],
            stored_as: None,
        };
        r.decide();
        let page = render(&r, &[]);
        assert!(page.contains("<div id=\"verdict\" class=\"pass\">PASS"));
        assert!(page.contains("db&lt;1&gt;") && page.contains("a &amp; b"));
        assert!(!page.contains("db<1>"));
        assert!(!page.contains("src=") && !page.contains("href=") && !page.contains("<script"));
        assert_eq!(page.matches("<svg").count(), 2);
    }
}

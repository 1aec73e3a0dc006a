//! `strata backup SOURCE`: take one backup of a source.

use super::Globals;
use crate::error::Result;
use crate::progress::{Mode, Reporter};
use crate::sources::postgres::dump::{self, BackupContext};
use crate::util::human_bytes;

pub async fn run(g: &Globals, source: &str, tier: Option<String>, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let src = cfg.source(source)?;
    let encoder = super::encoder(&cfg)?;
    let recipients = crate::keys::parse_recipients(&cfg.recipients)?;
    let repo = super::open_repository(&cfg).await?;
    let reporter = Reporter::new(Mode::detect(json));
    let ctx = BackupContext {
        repo: &repo,
        encoder,
        recipients: &recipients,
        reporter: &reporter,
    };
    let report = dump::backup(&ctx, src, tier).await?;
    if json {
        super::print_json(&report);
    } else {
        println!(
            "backup {} of {} done in {:.1}s: {} read, {} stored ({:.1}:1)",
            report.id,
            report.source,
            report.duration_seconds,
            human_bytes(report.plain_bytes),
            human_bytes(report.stored_bytes),
            report.plain_bytes as f64 / report.stored_bytes.max(1) as f64
        );
    }
    Ok(0)
}

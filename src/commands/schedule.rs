//! `strata schedule next|crontab`: when the configured tiers run, and the
//! crontab that runs them (see [`crate::scheduler`]).

use std::path::PathBuf;

use chrono::Utc;

use super::Globals;
use crate::error::{Error, Result};
use crate::scheduler::crontab::crontab as render_crontab;
use crate::scheduler::upcoming;

/// `strata schedule next [--count N]`: each tier's next runs, in its own
/// zone and in UTC.
pub fn next(g: &Globals, count: usize, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    if count == 0 {
        return Err(Error::usage("--count must be at least 1"));
    }
    let up = upcoming(cfg.tiers.values(), Utc::now(), count);
    if json {
        super::print_json(&up);
        return Ok(0);
    }
    if up.is_empty() {
        println!("no tiers in {}", cfg.path.display());
        eprintln!(
            "HINT: define [tiers.NAME] or add include = [\"schedules/standard.toml\"] (see docs/configuration.md)"
        );
        return Ok(0);
    }
    let zone_width = up
        .iter()
        .map(|u| u.timezone.len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<10} {:<8} {:<14} {:<zone_width$} {:<23} {:<17} NOTE",
        "TIER", "KIND", "SCHEDULE", "ZONE", "NEXT (TIER ZONE)", "NEXT (UTC)"
    );
    for u in &up {
        let note = if u.kind == "wal" {
            "archived continuously by archive_command (`strata wal push`)".to_string()
        } else if u.kind == "drill" {
            format!(
                "`strata drill --tier {}` (needs the identity); sources: {}",
                u.tier,
                if u.sources.is_empty() {
                    "none".to_string()
                } else {
                    u.sources.join(", ")
                }
            )
        } else if !u.runnable {
            format!("kind {} not implemented yet", u.kind)
        } else if u.sources.is_empty() {
            "no sources".to_string()
        } else {
            format!("sources: {}", u.sources.join(", "))
        };
        let schedule = u.schedule.as_deref().unwrap_or("-");
        if u.runs.is_empty() {
            let what = if u.schedule.is_none() {
                if u.kind == "wal" {
                    "continuous"
                } else {
                    "not scheduled"
                }
            } else {
                "never matches"
            };
            println!(
                "{:<10} {:<8} {:<14} {:<zone_width$} {:<23} {:<17} {note}",
                u.tier, u.kind, schedule, u.timezone, what, "-"
            );
            continue;
        }
        for (i, r) in u.runs.iter().enumerate() {
            let local = chrono::DateTime::parse_from_rfc3339(&r.local)
                .map(|t| t.format("%Y-%m-%d %H:%M %:z").to_string())
                .unwrap_or_else(|_| r.local.clone());
            let utc = r.utc.format("%Y-%m-%d %H:%M").to_string() + "Z";
            if i == 0 {
                println!(
                    "{:<10} {:<8} {:<14} {:<zone_width$} {:<23} {:<17} {note}",
                    u.tier, u.kind, schedule, u.timezone, local, utc
                );
            } else {
                println!(
                    "{:<10} {:<8} {:<14} {:<zone_width$} {:<23} {utc}",
                    "", "", "", "", local
                );
            }
        }
    }
    Ok(0)
}

/// `strata schedule crontab`: crontab lines that run the tiers.
pub fn crontab(g: &Globals, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let config = absolute(&cfg.path);
    // Cron's PATH rarely holds strata: name this binary by its full path.
    let strata = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from("strata"));
    let text = render_crontab(&cfg, &strata, &config);
    if json {
        super::print_json(&serde_json::json!({ "crontab": text }));
    } else {
        print!("{text}");
    }
    Ok(0)
}

fn absolute(p: &std::path::Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// `strata schedule run`'s options, as parsed.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// `text` or `json`.
    pub log_format: String,
    pub once: bool,
    pub state_dir: Option<PathBuf>,
    /// e.g. `5m`.
    pub shutdown_grace: String,
    pub max_jobs: usize,
}

/// `strata schedule run`: the scheduler daemon (see
/// [`crate::scheduler::daemon`]).
pub async fn run(g: &Globals, args: &RunArgs, json: bool) -> Result<u8> {
    use crate::scheduler::{clock::Clock, daemon, default_state_dir, events};
    let cfg = g.config()?;
    let format = if json {
        events::LogFormat::Json
    } else {
        events::LogFormat::parse(&args.log_format).ok_or_else(|| {
            Error::usage(format!(
                "--log-format {:?}: use text or json",
                args.log_format
            ))
        })?
    };
    let grace = crate::util::parse_duration(&args.shutdown_grace)
        .map_err(|e| Error::usage(format!("--shutdown-grace: {e}")))?
        .to_std()
        .map_err(|_| Error::usage("--shutdown-grace must not be negative"))?;
    if args.max_jobs == 0 {
        return Err(Error::usage("--max-jobs must be at least 1"));
    }
    let state_dir = args.state_dir.clone().or_else(default_state_dir).ok_or_else(|| {
        Error::usage("no state directory: $STATE_DIRECTORY, $XDG_STATE_HOME and $HOME are unset")
            .hint("pass --state-dir DIR (e.g. /var/lib/strata), or StateDirectory=strata in the systemd unit")
    })?;
    let opts = daemon::Options {
        state_dir,
        log: events::Log { format },
        once: args.once,
        shutdown_grace: grace,
        max_jobs: args.max_jobs,
        clock: Clock::from_env()?,
        identity: g.identity.clone(),
    };
    daemon::run(cfg, opts).await
}

//! `strata key generate`: a new age identity for encrypting backups;
//! `strata key recipients [--set]`: the public keys the repository's
//! backups are encrypted to, and the one deliberate way to change them.

use std::path::Path;

use crate::error::Result;

pub fn generate(out: &Path, json: bool) -> Result<u8> {
    let recipient = crate::keys::generate(out)?;
    if json {
        super::print_json(&serde_json::json!({ "identity_file": out, "recipient": recipient }));
    } else {
        println!("{recipient}");
        eprintln!(
            "wrote the identity (secret key) to {}; put the public key above in [encryption] recipients.\n\
             Keep the identity off backup hosts, somewhere you can reach during an incident: without it no backup can be restored.",
            out.display()
        );
    }
    Ok(0)
}

/// Shows the recorded and configured recipients; with `set`, records the
/// configured ones (every later backup and WAL push checks against them).
pub async fn recipients(g: &super::Globals, set: bool, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    crate::keys::parse_recipients(&cfg.recipients)?;
    let repo = super::open_repository(&cfg).await?;
    let before = repo.recorded_recipients().await?;
    if set {
        repo.record_recipients(&cfg.recipients, true).await?;
    }
    let recorded = if set {
        Some(cfg.recipients.clone())
    } else {
        before.clone()
    };
    let matches = recorded.as_ref().is_some_and(|r| {
        let mut a: Vec<&str> = r.iter().map(|s| s.trim()).collect();
        let mut b: Vec<&str> = cfg.recipients.iter().map(|s| s.trim()).collect();
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        a == b
    });
    if json {
        super::print_json(&serde_json::json!({
            "repository": repo.location(),
            "recorded": recorded,
            "configured": cfg.recipients,
            "previously_recorded": if set { before } else { None },
            "match": matches,
        }));
    } else {
        if set {
            println!(
                "recorded {} recipients for {}{}",
                cfg.recipients.len(),
                repo.location(),
                match &before {
                    Some(b) => format!(" (before: {})", b.join(", ")),
                    None => String::new(),
                }
            );
        }
        match &recorded {
            Some(r) => println!("recorded:   {}", r.join(", ")),
            None => println!(
                "recorded:   none yet (the next backup or WAL push records the configured ones)"
            ),
        }
        println!("configured: {}", cfg.recipients.join(", "));
        if recorded.is_some() && !matches {
            println!(
                "they differ: backups and WAL pushes are refused until they match (`strata key recipients --set` records the configured ones)"
            );
        }
    }
    Ok(if recorded.is_none() || matches {
        0
    } else {
        crate::error::Kind::Conflict.exit_code()
    })
}

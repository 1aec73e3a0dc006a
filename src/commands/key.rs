//! `strata key generate`: a new age identity for encrypting backups.

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

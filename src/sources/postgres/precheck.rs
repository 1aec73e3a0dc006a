//! What a point-in-time restore checks before it reads a single object:
//! that the OS user the server will run as exists, can reach the target
//! directory, and can read what its `restore_command` needs (the config,
//! the identity, a local repository). (That a port is free is
//! `util::port_free`.)
//! Each of these used to be found only after the whole base backup was
//! downloaded, or after a full replay: on 1 TB, hours.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Whether `user` exists on this host.
pub fn user_exists(user: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(user) else {
        return false;
    };
    // SAFETY: getpwnam reads the passwd database; the pointer is only
    // compared with null.
    !unsafe { libc::getpwnam(name.as_ptr()) }.is_null()
}

/// Whether `user` passes `test FLAG PATH` (run through `runuser`, so the
/// answer includes groups, ACLs and every parent directory's search bit).
fn user_can(user: &str, flag: &str, path: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", user, "--", "test", flag])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The nearest existing directory at or above `dir`.
fn existing_ancestor(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|a| a.is_dir())
}

/// Checks that `user` (the server's OS user, when strata runs as root)
/// exists and can use everything the restored server needs: enter the
/// target directory, and read the files its `restore_command` reads.
pub fn server_user(user: &str, target_dir: &Path, reads: &[(&str, &Path)]) -> Result<()> {
    if !user_exists(user) {
        return Err(Error::usage(format!(
            "the restored server would run as OS user {user}, which does not exist on this host"
        ))
        .hint("name the user the server runs as with --run-as USER (as root, the default is postgres)"));
    }
    if let Some(dir) = existing_ancestor(target_dir)
        && !user_can(user, "-x", dir)
    {
        return Err(Error::usage(format!(
            "OS user {user} cannot reach {} (no search permission on {} or a directory above it): the restored server could not start there",
            target_dir.display(),
            dir.display()
        ))
        .hint(format!(
            "choose a --target-dir below a directory {user} can enter, or grant it (e.g. chmod o+x on each directory above)"
        )));
    }
    for (what, path) in reads {
        let flag = if path.is_dir() { "-x" } else { "-r" };
        if !user_can(user, flag, path) {
            return Err(Error::usage(format!(
                "OS user {user} cannot read {what} {}: the restored server's restore_command runs as {user} and needs it",
                path.display()
            ))
            .hint(format!(
                "make it readable by {user} (e.g. chgrp {user} and chmod g+r), or pass --run-as with a user that can read it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert!(user_exists("root"));
        assert!(!user_exists("no-such-user-strata"));
        assert!(!user_exists("nul\0byte"));
    }
}

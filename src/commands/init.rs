//! `strata init`: create the repository named by the config.

use super::Globals;
use crate::catalog::Repository;
use crate::error::Result;

pub async fn run(g: &Globals, owner: Option<&str>, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    // checked before anything is created
    let owner = match owner {
        None => None,
        Some(user) => Some(owner_ids(&cfg, user)?),
    };
    let storage = crate::storage::location::open(&cfg.repository, &cfg.store_limits).await?;
    let repo = Repository::init(storage).await?;
    // which keys every later write must use (`check_recipients`)
    repo.record_recipients(&cfg.recipients, false).await?;
    if let (Some((uid, gid)), crate::config::RepositoryLocation::Local(dir)) =
        (owner, &cfg.repository)
    {
        chown_tree(dir, uid, gid).map_err(|e| {
            crate::error::Error::failed(format!("giving {} to --owner: {e}", dir.display()))
        })?;
    }
    if json {
        super::print_json(&serde_json::json!({
            "repository": repo.location(),
            "repository_id": repo.id,
            "format_version": crate::catalog::FORMAT_VERSION,
        }));
    } else {
        println!(
            "created strata repository {} (id {})",
            repo.location(),
            repo.id
        );
    }
    Ok(0)
}

/// The uid and gid of `user`, for `init --owner` (root, local repository).
fn owner_ids(cfg: &crate::config::Config, user: &str) -> Result<(u32, u32)> {
    use crate::error::Error;
    if !matches!(cfg.repository, crate::config::RepositoryLocation::Local(_)) {
        return Err(Error::usage(
            "--owner applies to a local repository (file://…) only",
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::usage("--owner needs strata to run as root")
            .hint("without root, the repository belongs to you"));
    }
    let name = std::ffi::CString::new(user)
        .map_err(|_| Error::usage(format!("--owner {user:?} is not a user name")))?;
    // SAFETY: getpwnam returns null or a pointer to a static passwd entry,
    // read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(Error::usage(format!(
            "--owner {user}: no such OS user on this host"
        )));
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

/// `chown -R uid:gid dir`.
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

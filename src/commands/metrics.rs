//! `strata metrics --textfile PATH`: the status as Prometheus metrics for
//! node_exporter's textfile collector. Written to a temporary file beside
//! PATH and renamed over it, so the collector never reads half a file.

use std::io::Write;
use std::path::Path;

use chrono::Utc;

use super::Globals;
use crate::error::{Error, Result};
use crate::status;

pub async fn run(g: &Globals, textfile: &Path, json: bool) -> Result<u8> {
    let cfg = g.config()?;
    let repo = super::open_repository(&cfg).await?;
    let s = status::gather(&cfg, &repo, Utc::now()).await?;
    let mut text = status::prometheus(&s);
    let drills = crate::drill::store::history(&repo)
        .await
        .unwrap_or_default();
    text.push_str(&crate::drill::store::prometheus(&drills));
    text.push_str(&crate::copy::lag::prometheus(
        &crate::copy::lag::gather(&cfg).await,
    ));
    if textfile == Path::new("-") {
        // `--textfile -`: stdout, for a scrape wrapper or a pipe
        use std::io::Write;
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| Error::failed(format!("writing the metrics to stdout: {e}")))?;
        return Ok(0);
    }
    write_atomic(textfile, text.as_bytes())?;
    if json {
        super::print_json(
            &serde_json::json!({ "textfile": textfile, "series": text.lines().filter(|l| !l.starts_with('#')).count() }),
        );
    }
    Ok(0)
}

/// Writes `data` to a temporary file in `path`'s directory, then renames.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |e: std::io::Error| {
        Error::failed(format!("writing {}: {e}", path.display()))
            .hint("the directory must exist and be writable (node_exporter's --collector.textfile.directory)")
    };
    // A name the collector ignores (it reads only *.prom).
    let mut tmp = tempfile::Builder::new()
        .prefix(".strata-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(data).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    // Readable by node_exporter, which often runs as another user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("strata.prom");
        write_atomic(&p, b"a 1\n").unwrap();
        write_atomic(&p, b"a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}

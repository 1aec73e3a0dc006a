//! Test certificates for the TLS tests (PostgreSQL, Redis, https webhooks,
//! S3 behind a TLS proxy), made with the `openssl` CLI (scripts/test.sh
//! installs it): CAs and leaves they sign, EC P-256, `NAME.crt` and
//! `NAME.key` in a directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with its output when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (install the openssl package; scripts/test.sh does)");
    assert!(
        out.status.success(),
        "openssl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA: `NAME.crt`, `NAME.key`, subject `CN=cn`.
pub fn make_ca(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate `NAME.crt` / `NAME.key` (mode 0600) signed by the
/// CA `ca`, subject `CN=cn`, with `ext` as its extensions file.
pub fn make_leaf(dir: &Path, name: &str, ca: &str, cn: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3650",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    fs::set_permissions(
        dir.join(format!("{name}.key")),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

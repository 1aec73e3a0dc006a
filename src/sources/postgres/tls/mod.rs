//! TLS for strata's own connections to PostgreSQL, with libpq's meaning
//! of the connection parameters, so that a URL that works with `psql`
//! works with strata (issue 16 item 1).
//!
//! The client binaries strata runs (pg_dump, pg_basebackup, psql, …) get
//! the URL unchanged and the environment inherited, so libpq does their
//! TLS. strata's own connections (server facts, snapshots, verify
//! queries, cancels) go through tokio-postgres, whose `Config` knows only
//! `sslmode=disable|prefer|require` and refuses every other TLS parameter.
//! This module therefore takes the TLS parameters out of the URL
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslpassword`,
//! `sslsni`, `sslcompression`, `ssl_min_protocol_version`,
//! `ssl_max_protocol_version`; URL parameters win over `PGSSLMODE`,
//! `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), hands tokio-postgres the
//! rest, and does what libpq does with them over rustls:
//!
//! - `disable`: no TLS; `allow`: plain first, TLS if the server refuses;
//!   `prefer` (the default): TLS if the server offers it, plain if it does
//!   not or refuses the TLS connection; `require`: TLS, certificate not
//!   checked; `verify-ca`: the chain is checked against the root
//!   certificates, the host name is not; `verify-full`: chain and host name.
//! - A root certificate file that exists (`sslrootcert`, else
//!   `~/.postgresql/root.crt`) makes `allow` / `prefer` / `require` check
//!   the chain too, as libpq does. `sslrootcert=system` uses the system's
//!   trusted roots, makes `verify-full` the default and refuses any weaker
//!   `sslmode`.
//! - A client certificate (`sslcert`, else `~/.postgresql/postgresql.crt`)
//!   is sent when its file exists, with its key (`sslkey`, else
//!   `~/.postgresql/postgresql.key`), which must not be readable by group
//!   or others.
//! - Unix-socket connections never use TLS.
//!
//! A failure says what failed (no TLS offered, certificate not trusted,
//! host name mismatch, client certificate refused, TLS required by the
//! server) and which parameter to set, as a source error (exit 5).

mod client;

use std::path::PathBuf;

use tokio_postgres::config::SslMode as DriverMode;
use url::Url;

pub use client::{Tls, refusing_connector};
pub use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The URL parameters this module handles and tokio-postgres must not see.
const TLS_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
];

/// libpq parameters strata's own connections cannot honour: refused
/// rather than ignored (ignoring a revocation list would trust what the
/// user meant to distrust).
const UNSUPPORTED: &[&str] = &["sslcrl", "sslcrldir", "sslcertmode"];

/// libpq's `sslmode`, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// A PEM file (`sslrootcert`, or libpq's default
    /// `~/.postgresql/root.crt`); `given` tells which.
    File { path: PathBuf, given: bool },
    /// `sslrootcert=system`: the system's trusted roots.
    System,
}

/// A TLS protocol version bound (`ssl_min_protocol_version` and
/// `ssl_max_protocol_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

impl TlsVersion {
    fn parse(s: &str) -> Option<TlsVersion> {
        Some(match s {
            "TLSv1" => TlsVersion::V1_0,
            "TLSv1.1" => TlsVersion::V1_1,
            "TLSv1.2" => TlsVersion::V1_2,
            "TLSv1.3" => TlsVersion::V1_3,
            _ => return None,
        })
    }
}

/// The TLS parameters of one connection, resolved from the URL, the
/// environment and libpq's defaults. Reading no file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: Roots,
    /// Client certificate and key files (given or libpq's defaults); the
    /// certificate is sent only if its file exists.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `sslcert` was given (a missing file is then worth a warning).
    pub cert_given: bool,
    pub sni: bool,
    pub min_version: TlsVersion,
    pub max_version: Option<TlsVersion>,
}

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, nothing checked (libpq's `require` without root file).
    Nothing,
    /// The chain up to a trusted root, not the host name.
    Chain,
    /// Chain and host name.
    Full,
}

impl TlsSettings {
    /// Resolves the TLS settings of `url` (its parameters win over the
    /// `PGSSL*` variables read through `env`; `HOME` through `env` too,
    /// for libpq's default files) and returns the URL without them, for
    /// tokio-postgres. Pure: reads neither files nor the process
    /// environment.
    pub fn resolve(url: &Url, env: &dyn Fn(&str) -> Option<String>) -> Result<(TlsSettings, Url)> {
        let mut kept = Vec::new();
        let mut given = std::collections::HashMap::new();
        for part in url
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_encoding_decode(k);
            if UNSUPPORTED.contains(&key.as_str()) {
                return Err(Error::usage(format!(
                    "the URL parameter {key} is not supported by strata's own connections"
                ))
                .hint(match key.as_str() {
                    "sslcertmode" => "remove sslcertmode: strata sends the client certificate when sslcert (or ~/.postgresql/postgresql.crt) exists, as libpq's default sslcertmode=allow does".to_string(),
                    _ => format!("remove {key} from the URL (certificate revocation lists are not checked by strata's own connections)"),
                }));
            }
            if TLS_PARAMS.contains(&key.as_str()) {
                given.insert(key, percent_encoding_decode(v));
            } else {
                kept.push(part);
            }
        }
        let mut driver_url = url.clone();
        driver_url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());

        let param = |name: &str, var: Option<&str>| -> Option<String> {
            given
                .get(name)
                .cloned()
                .or_else(|| var.and_then(env))
                .filter(|v| !v.is_empty())
        };
        let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let default_file = |name: &str| home.as_ref().map(|h| h.join(".postgresql").join(name));

        let roots = match param("sslrootcert", Some("PGSSLROOTCERT")) {
            Some(s) if s == "system" => Roots::System,
            Some(s) => Roots::File {
                path: PathBuf::from(s),
                given: true,
            },
            None => Roots::File {
                path: default_file("root.crt").unwrap_or_default(),
                given: false,
            },
        };
        let mode = match param("sslmode", Some("PGSSLMODE")) {
            Some(s) => SslMode::parse(&s).ok_or_else(|| {
                Error::usage(format!("invalid sslmode \"{s}\"")).hint(
                    "sslmode is one of disable, allow, prefer, require, verify-ca, verify-full",
                )
            })?,
            // libpq 16: the system's roots make sense only with host name checks
            None if roots == Roots::System => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if roots == Roots::System && mode != SslMode::VerifyFull {
            return Err(Error::usage(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system",
                mode.name()
            ))
            .hint("use sslmode=verify-full with sslrootcert=system (any public CA could vouch for a certificate whose name is not checked)"));
        }
        let cert_given = param("sslcert", Some("PGSSLCERT"));
        let cert = cert_given
            .clone()
            .map(PathBuf::from)
            .or_else(|| default_file("postgresql.crt"));
        let key = param("sslkey", Some("PGSSLKEY"))
            .map(PathBuf::from)
            .or_else(|| default_file("postgresql.key"));
        let sni = match param("sslsni", None).as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(v) => {
                return Err(
                    Error::usage(format!("invalid sslsni \"{v}\"")).hint("sslsni is 0 or 1")
                );
            }
        };
        let version = |name: &str| -> Result<Option<TlsVersion>> {
            match param(name, None) {
                None => Ok(None),
                Some(v) => TlsVersion::parse(&v).map(Some).ok_or_else(|| {
                    Error::usage(format!("invalid {name} \"{v}\""))
                        .hint(format!("{name} is one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"))
                }),
            }
        };
        let min_version = version("ssl_min_protocol_version")?.unwrap_or(TlsVersion::V1_2);
        let max_version = version("ssl_max_protocol_version")?;
        if let Some(max) = max_version {
            if max < min_version {
                return Err(Error::usage(
                    "ssl_max_protocol_version is below ssl_min_protocol_version",
                )
                .hint("raise ssl_max_protocol_version or remove it"));
            }
            if max < TlsVersion::V1_2 {
                return Err(Error::usage(
                    "ssl_max_protocol_version below TLSv1.2: strata's own connections speak TLS 1.2 and 1.3 only",
                )
                .hint("set ssl_max_protocol_version=TLSv1.2 or higher (and upgrade the server's TLS if it offers nothing newer)"));
            }
        }
        Ok((
            TlsSettings {
                mode,
                roots,
                cert,
                key,
                cert_given: cert_given.is_some(),
                sni,
                min_version,
                max_version,
            },
            driver_url,
        ))
    }

    /// How the server's certificate is checked, given whether the root
    /// certificate file exists (libpq: a root file present makes even
    /// `require` check the chain; `verify-*` without one is an error).
    pub fn verify(&self, root_file_exists: bool) -> Result<Verify> {
        Ok(match (self.mode, &self.roots) {
            (SslMode::VerifyFull, Roots::System) => Verify::Full,
            (SslMode::VerifyFull | SslMode::VerifyCa, Roots::File { path, given }) => {
                if !root_file_exists {
                    let shown = if path.as_os_str().is_empty() {
                        "~/.postgresql/root.crt".to_string()
                    } else {
                        path.display().to_string()
                    };
                    let why = if *given {
                        "sslrootcert"
                    } else {
                        "the default root certificate file"
                    };
                    return Err(Error::source(format!(
                        "root certificate file \"{shown}\" does not exist ({why}; sslmode={} checks the server's certificate)",
                        self.mode.name()
                    ))
                    .hint(format!(
                        "set sslrootcert to the CA certificate that signed the server's certificate (PEM), or sslrootcert=system for a public CA; sslmode={} needs one",
                        self.mode.name()
                    )));
                }
                if self.mode == SslMode::VerifyFull {
                    Verify::Full
                } else {
                    Verify::Chain
                }
            }
            (_, Roots::File { .. }) if root_file_exists => Verify::Chain,
            _ => Verify::Nothing,
        })
    }

    /// The tokio-postgres modes to try in turn (libpq's order) and whether
    /// a later one is tried after any failure (`allow`) or only after the
    /// server refused the connection (`prefer`).
    fn attempts(&self, unix_socket: bool) -> &'static [DriverMode] {
        if unix_socket {
            return &[DriverMode::Disable];
        }
        match self.mode {
            SslMode::Disable => &[DriverMode::Disable],
            SslMode::Allow => &[DriverMode::Disable, DriverMode::Require],
            SslMode::Prefer => &[DriverMode::Prefer, DriverMode::Disable],
            _ => &[DriverMode::Require],
        }
    }
}

/// Percent-decoding as libpq does for URI parameters (`+` stays `+`).
fn percent_encoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL for a server strata itself started on this host (a drill's
/// sandbox, `restore --start`): `sslmode=prefer`, whatever the source's
/// URL or `PGSSLMODE` say, and no `sslrootcert`. Such a server answers on
/// 127.0.0.1 with the source's configuration: TLS on loopback protects
/// nothing, its certificate (if it has one) names the source's host, and
/// its pg_hba.conf may still accept only TLS (hence `prefer`, not
/// `disable`). A client certificate is kept: its pg_hba.conf may ask for
/// one.
pub fn loopback_url(url: &Url) -> Url {
    let kept: Vec<&str> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| {
            let key = percent_encoding_decode(p.split_once('=').map_or(*p, |(k, _)| k));
            !p.is_empty() && key != "sslmode" && key != "sslrootcert"
        })
        .collect();
    let mut out = url.clone();
    let query = kept
        .into_iter()
        .chain(["sslmode=prefer"])
        .collect::<Vec<_>>()
        .join("&");
    out.set_query(Some(&query));
    out
}

/// libpq refuses a private key file readable by group or others (root
/// owned: group read allowed, for files shared with a server group).
pub fn key_mode_problem(mode: u32, owned_by_root: bool) -> bool {
    if owned_by_root {
        mode & 0o137 != 0
    } else {
        mode & 0o077 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn resolve(
        url: &str,
        vars: &'static [(&'static str, &'static str)],
    ) -> Result<(TlsSettings, Url)> {
        TlsSettings::resolve(&Url::parse(url).unwrap(), &env_of(vars))
    }

    #[test]
    fn defaults_are_libpqs() {
        let (s, u) = resolve("postgres://u@db/app", &[("HOME", "/home/u")]).unwrap();
        assert_eq!(s.mode, SslMode::Prefer);
        assert_eq!(
            s.roots,
            Roots::File {
                path: "/home/u/.postgresql/root.crt".into(),
                given: false
            }
        );
        assert_eq!(
            s.cert.as_deref(),
            Some(Path::new("/home/u/.postgresql/postgresql.crt"))
        );
        assert_eq!(
            s.key.as_deref(),
            Some(Path::new("/home/u/.postgresql/postgresql.key"))
        );
        assert!(s.sni && !s.cert_given);
        assert_eq!((s.min_version, s.max_version), (TlsVersion::V1_2, None));
        assert_eq!(u.as_str(), "postgres://u@db/app");
    }

    #[test]
    fn tls_parameters_leave_the_driver_url_and_others_stay_encoded() {
        let (s, u) = resolve(
            "postgres://u@db/app?sslmode=verify-full&options=-c%20statement_timeout%3D0&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5&sslcert=c.pem&sslkey=k.pem&sslsni=0&sslcompression=0",
            &[],
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(
            s.roots,
            Roots::File {
                path: "/etc/ca.pem".into(),
                given: true
            }
        );
        assert_eq!(s.cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(s.key.as_deref(), Some(Path::new("k.pem")));
        assert!(s.cert_given && !s.sni);
        // tokio-postgres decodes %20 but not '+': the rest is kept as written
        assert_eq!(
            u.as_str(),
            "postgres://u@db/app?options=-c%20statement_timeout%3D0&connect_timeout=5"
        );
    }

    #[test]
    fn url_wins_over_environment() {
        let env = &[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/env/ca.pem"),
            ("PGSSLCERT", "/env/c.pem"),
            ("PGSSLKEY", "/env/k.pem"),
        ];
        let (s, _) = resolve("postgres://db/app", env).unwrap();
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(
            s.roots,
            Roots::File {
                path: "/env/ca.pem".into(),
                given: true
            }
        );
        assert_eq!(s.cert.as_deref(), Some(Path::new("/env/c.pem")));
        assert_eq!(s.key.as_deref(), Some(Path::new("/env/k.pem")));
        let (s, _) = resolve("postgres://db/app?sslmode=require&sslkey=/url/k.pem", env).unwrap();
        assert_eq!(s.mode, SslMode::Require);
        assert_eq!(s.key.as_deref(), Some(Path::new("/url/k.pem")));
        assert_eq!(s.cert.as_deref(), Some(Path::new("/env/c.pem")));
        // an empty variable counts as unset
        let (s, _) = resolve("postgres://db/app", &[("PGSSLMODE", "")]).unwrap();
        assert_eq!(s.mode, SslMode::Prefer);
    }

    #[test]
    fn system_roots_mean_verify_full() {
        let (s, _) = resolve("postgres://db/app?sslrootcert=system", &[]).unwrap();
        assert_eq!((s.mode, &s.roots), (SslMode::VerifyFull, &Roots::System));
        assert_eq!(s.verify(true).unwrap(), Verify::Full);
        for weak in ["disable", "prefer", "require", "verify-ca"] {
            let e = resolve(
                &format!("postgres://db/app?sslrootcert=system&sslmode={weak}"),
                &[],
            )
            .unwrap_err();
            assert!(
                e.message.contains(&format!("weak sslmode \"{weak}\"")),
                "{e}"
            );
            assert_eq!(e.exit_code(), 2);
        }
        // the environment's sslmode counts as given
        assert!(
            resolve(
                "postgres://db/app?sslrootcert=system",
                &[("PGSSLMODE", "require")]
            )
            .is_err()
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for url in [
            "postgres://db/app?sslmode=verify",
            "postgres://db/app?sslsni=yes",
            "postgres://db/app?ssl_min_protocol_version=TLSv2",
            "postgres://db/app?ssl_max_protocol_version=TLSv1.1",
            "postgres://db/app?ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2",
            "postgres://db/app?sslcrl=/etc/crl.pem",
            "postgres://db/app?sslcertmode=require",
        ] {
            let e = resolve(url, &[]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{url}: {e}");
            assert!(e.hint.is_some(), "{url}");
        }
        let e = resolve("postgres://db/app", &[("PGSSLMODE", "strict")]).unwrap_err();
        assert!(e.message.contains("invalid sslmode \"strict\""), "{e}");
    }

    #[test]
    fn verification_follows_libpq() {
        let mode = |m: &str| {
            resolve(&format!("postgres://db/app?sslmode={m}"), &[("HOME", "/h")])
                .unwrap()
                .0
        };
        // no root file: require (and weaker) check nothing
        for m in ["allow", "prefer", "require"] {
            assert_eq!(mode(m).verify(false).unwrap(), Verify::Nothing, "{m}");
            // a root file present: the chain is checked, as libpq does
            assert_eq!(mode(m).verify(true).unwrap(), Verify::Chain, "{m}");
        }
        assert_eq!(mode("verify-ca").verify(true).unwrap(), Verify::Chain);
        assert_eq!(mode("verify-full").verify(true).unwrap(), Verify::Full);
        let e = mode("verify-full").verify(false).unwrap_err();
        assert!(
            e.message.contains("/h/.postgresql/root.crt") && e.message.contains("does not exist"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 5);
        assert!(e.hint.unwrap().contains("sslrootcert"));
    }

    #[test]
    fn attempts_follow_libpq() {
        let s = |m: &str| {
            resolve(&format!("postgres://db/app?sslmode={m}"), &[])
                .unwrap()
                .0
        };
        assert_eq!(s("disable").attempts(false), &[DriverMode::Disable]);
        assert_eq!(
            s("allow").attempts(false),
            &[DriverMode::Disable, DriverMode::Require]
        );
        assert_eq!(
            s("prefer").attempts(false),
            &[DriverMode::Prefer, DriverMode::Disable]
        );
        for m in ["require", "verify-ca", "verify-full"] {
            assert_eq!(s(m).attempts(false), &[DriverMode::Require]);
            // libpq never uses TLS over a Unix socket
            assert_eq!(s(m).attempts(true), &[DriverMode::Disable]);
        }
    }

    #[test]
    fn key_permissions_as_libpq() {
        assert!(!key_mode_problem(0o100600, false));
        assert!(!key_mode_problem(0o100400, false));
        assert!(key_mode_problem(0o100640, false));
        assert!(key_mode_problem(0o100604, false));
        assert!(!key_mode_problem(0o100640, true));
        assert!(key_mode_problem(0o100660, true));
        assert!(key_mode_problem(0o100644, true));
    }

    #[test]
    fn loopback_servers_are_reached_with_prefer() {
        let u = Url::parse(
            "postgres://b@127.0.0.1:5999/app?sslmode=verify-full&sslrootcert=system&sslcert=%2Fc.pem&options=-c%20x%3D1",
        )
        .unwrap();
        let l = loopback_url(&u);
        assert_eq!(
            l.as_str(),
            "postgres://b@127.0.0.1:5999/app?sslcert=%2Fc.pem&options=-c%20x%3D1&sslmode=prefer"
        );
        // the URL wins over PGSSLMODE, so the environment cannot undo it
        let (s, _) = TlsSettings::resolve(&l, &env_of(&[("PGSSLMODE", "verify-full")])).unwrap();
        assert_eq!(s.mode, SslMode::Prefer);
        assert_eq!(
            loopback_url(&Url::parse("postgres://127.0.0.1:1/p").unwrap()).as_str(),
            "postgres://127.0.0.1:1/p?sslmode=prefer"
        );
    }

    #[test]
    fn percent_decoding_keeps_plus() {
        assert_eq!(percent_encoding_decode("a%2Fb+c%2"), "a/b+c%2");
    }
}

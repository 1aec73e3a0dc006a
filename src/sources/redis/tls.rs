//! TLS for Redis (`rediss://`): the settings a URL carries, the rustls
//! client they build, and TLS failures turned into errors that say which
//! check failed and what to change.
//!
//! The settings are URL query parameters named after redis-cli's flags
//! (`cacert`, `cert`, `key`, `sni` for `--cacert`, `--cert`, `--key`,
//! `--sni`), so one URL says how to reach a server wherever a URL is given:
//! a source's `url`, its `restore_to`, and `restore --into` on the command
//! line. Without `cacert` the system's trusted roots are used.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, AlertDescription, CertificateError, ClientConfig, RootCertStore};
use url::Url;

use crate::error::{Error, Result};

/// The query parameters a `rediss://` URL takes.
pub const PARAMS: [&str; 4] = ["cacert", "cert", "key", "sni"];

/// How to secure a connection, from a `rediss://` URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CAs to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for servers that ask for one.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name to ask for and to check the certificate against, when it
    /// is not the URL's host.
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// The settings of a `rediss://` URL; `None` for any other scheme.
    /// Unknown parameters are ignored here ([`check`] refuses them).
    pub fn from_url(url: &Url) -> Option<TlsSettings> {
        if url.scheme() != "rediss" {
            return None;
        }
        let mut s = TlsSettings::default();
        for (k, v) in url.query_pairs() {
            let v = v.into_owned();
            match k.as_ref() {
                "cacert" => s.ca_file = Some(v.into()),
                "cert" => s.cert_file = Some(v.into()),
                "key" => s.key_file = Some(v.into()),
                "sni" => s.server_name = Some(v),
                _ => {}
            }
        }
        Some(s)
    }

    /// Where the trusted CAs come from, for messages.
    pub fn trust(&self) -> String {
        match &self.ca_file {
            Some(p) => format!("cacert {}", p.display()),
            None => "the system's trusted roots".into(),
        }
    }

    /// Builds the connector: reads the CA file (or the system roots) and
    /// the client certificate and key. Unreadable or malformed files are
    /// usage errors: the configuration names them.
    pub fn connector(&self) -> Result<TlsConnector> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let mut n = 0;
                for c in
                    CertificateDer::pem_file_iter(path).map_err(|e| pem_error("cacert", path, e))?
                {
                    let c = c.map_err(|e| pem_error("cacert", path, e))?;
                    roots.add(c).map_err(|e| {
                        Error::usage(format!(
                            "cacert {}: a certificate in it is not usable as a CA: {e}",
                            path.display()
                        ))
                    })?;
                    n += 1;
                }
                if n == 0 {
                    return Err(Error::usage(format!(
                        "cacert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                        path.display()
                    ))
                    .hint("give the CA certificate that signed the server's certificate, in PEM"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::usage(
                        "rediss://: no trusted root certificates found on this system",
                    )
                    .hint("install the system's CA certificates (ca-certificates), or give the server's CA with ?cacert=/path/ca.crt in the URL"));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::failed(format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| pem_error("cert", cert, e))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| pem_error("cert", cert, e))?;
                if chain.is_empty() {
                    return Err(Error::usage(format!(
                        "cert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                        cert.display()
                    )));
                }
                let pk = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("key", key, e))?;
                builder.with_client_auth_cert(chain, pk).map_err(|e| {
                    Error::usage(format!(
                        "cert {} and key {} do not make a usable client identity: {e}",
                        cert.display(),
                        key.display()
                    ))
                    .hint("the key must be the private key of the certificate's public key")
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// The name the certificate must carry: `sni`, else the URL's host.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string()).map_err(|_| {
            Error::usage(format!(
                "rediss://: {name:?} is not a host name or IP address a certificate can be checked against"
            ))
        })
    }
}

fn pem_error(param: &str, path: &Path, e: rustls::pki_types::pem::Error) -> Error {
    let why = match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the right kind in it".into(),
        other => format!("not valid PEM ({other:?})"),
    };
    Error::usage(format!("{param} {}: {why}", path.display()))
        .hint("the files of ?cacert=, ?cert= and ?key= in a rediss:// URL are PEM files, given by absolute path")
}

/// Checks the query of a source URL: `rediss://` takes [`PARAMS`] (each
/// once, files by absolute path, `cert` with `key`); `redis://` none.
pub fn check(url: &Url) -> std::result::Result<(), String> {
    let tls = url.scheme() == "rediss";
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in url.query_pairs() {
        if !PARAMS.contains(&k.as_ref()) {
            return Err(if tls {
                format!("unknown URL parameter {k:?} (rediss:// takes cacert, cert, key and sni)")
            } else {
                "the URL takes no query parameters (redis://[user:pass@]host:port)".into()
            });
        }
        if !tls {
            return Err(format!(
                "{k}= is a TLS setting: use rediss://[user:pass@]host:port?{k}=…"
            ));
        }
        if seen.iter().any(|s| *s == k) {
            return Err(format!("the URL gives {k}= twice"));
        }
        if k != "sni" && !Path::new(v.as_ref()).is_absolute() {
            return Err(format!(
                "{k}={v}: give the file by absolute path (the URL is read from other directories too, e.g. by the scheduler)"
            ));
        }
        if v.is_empty() {
            return Err(format!("{k}= is empty"));
        }
        seen.push(k.into_owned());
    }
    let has = |p: &str| seen.iter().any(|s| s == p);
    if has("cert") != has("key") {
        return Err(
            "a client certificate needs both cert= and key= (PEM files of the certificate and its private key)"
                .into(),
        );
    }
    Ok(())
}

/// A TLS failure in `e` explained: what failed and what to do. `None`
/// when `e` carries no TLS error. `who` names the server (`redis URL`).
pub fn explain(e: &io::Error, who: &str, s: &TlsSettings, host: &str) -> Option<Error> {
    let err = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let name = s.server_name.as_deref().unwrap_or(host);
    let sni_hint = if s.server_name.is_some() {
        "connect with a name the certificate lists (change sni= in the URL)"
    } else {
        "connect by a name the certificate lists, or give that name with ?sni=NAME in the URL"
    };
    let (what, hint): (String, String) = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => (
                format!(
                    "the server's TLS certificate is not trusted: no CA in {} signed it",
                    s.trust()
                ),
                "give the CA certificate that signed the server's certificate with ?cacert=/path/ca.crt in the URL (as redis-cli --cacert)".into(),
            ),
            CertificateError::NotValidForName => (
                format!("the server's TLS certificate is not valid for the host name {name}"),
                sni_hint.into(),
            ),
            CertificateError::NotValidForNameContext { presented, .. } => (
                format!(
                    "the server's TLS certificate is not valid for the host name {name} (it names {})",
                    presented
                        .iter()
                        .map(|p| shown_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                sni_hint.into(),
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => (
                format!("the server's TLS certificate is outside its validity period: {c}"),
                "renew the server's certificate, or check this machine's clock".into(),
            ),
            other => (
                format!("the server's TLS certificate was refused: {other}"),
                format!("the certificate is checked against {}", s.trust()),
            ),
        },
        rustls::Error::AlertReceived(a) => {
            let cert_given = s.cert_file.is_some();
            match a {
                AlertDescription::CertificateRequired => (
                    "the server requires a client certificate (tls-auth-clients) and none was given".into(),
                    "give one with ?cert=/path/client.crt&key=/path/client.key in the URL".into(),
                ),
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied
                    if cert_given =>
                {
                    (
                        format!("the server refused the client certificate ({a:?})"),
                        "the server accepts client certificates signed by the CA of its tls-ca-cert-file".into(),
                    )
                }
                AlertDescription::HandshakeFailure if !cert_given => (
                    "the server refused the TLS handshake (handshake failure)".into(),
                    "a server with tls-auth-clients yes needs a client certificate: give ?cert=…&key=… in the URL; else the TLS versions or ciphers do not match".into(),
                ),
                other => (
                    format!("the server ended the TLS handshake ({other:?})"),
                    "see the server's log for why".into(),
                ),
            }
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => (
            format!("the server does not speak TLS on that port ({err})"),
            "give its tls-port in a rediss:// URL, or use redis:// for a plain port".into(),
        ),
        other => (
            format!("TLS failed: {other}"),
            format!("the certificate is checked against {}", s.trust()),
        ),
    };
    Some(Error::source(format!("{who}: {what}")).hint(hint))
}

/// A name rustls presents (`DnsName("db.internal")`) as written in the
/// certificate (`db.internal`).
fn shown_name(p: &str) -> &str {
    match (p.find('"'), p.rfind('"')) {
        (Some(a), Some(b)) if b > a => &p[a + 1..b],
        _ => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let u = |s: &str| Url::parse(s).unwrap();
        let s = TlsSettings::from_url(&u(
            "rediss://h:1?cacert=/etc/ca.pem&cert=/c%20d.pem&key=/k.pem&sni=db.internal",
        ))
        .unwrap();
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(s.cert_file.as_deref(), Some(Path::new("/c d.pem")));
        assert_eq!(s.server_name.as_deref(), Some("db.internal"));
        assert_eq!(TlsSettings::from_url(&u("redis://h:1")), None);
        assert_eq!(shown_name("DnsName(\"db.internal\")"), "db.internal");
        assert_eq!(shown_name("10.0.0.1"), "10.0.0.1");
        assert_eq!(
            TlsSettings::from_url(&u("rediss://h:1")),
            Some(TlsSettings::default())
        );
        let c = |s: &str| check(&u(s));
        assert!(c("rediss://h:1?cacert=/ca.pem&sni=x").is_ok());
        assert!(
            c("rediss://h:1?cacert=ca.pem")
                .unwrap_err()
                .contains("absolute path")
        );
        assert!(
            c("rediss://h:1?cert=/c.pem")
                .unwrap_err()
                .contains("both cert= and key=")
        );
        assert!(
            c("rediss://h:1?insecure=1")
                .unwrap_err()
                .contains("unknown URL parameter")
        );
        assert!(c("rediss://h:1?sni=a&sni=b").unwrap_err().contains("twice"));
        assert!(
            c("redis://h:1?cacert=/ca.pem")
                .unwrap_err()
                .contains("use rediss://")
        );
        assert!(
            c("redis://h:1?db=2")
                .unwrap_err()
                .contains("no query parameters")
        );
    }

    #[test]
    fn missing_files_are_usage_errors() {
        let s = TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = s.connector().err().unwrap();
        assert_eq!(e.kind, crate::error::Kind::Usage);
        assert!(e.message.contains("cacert /nonexistent/ca.pem"), "{e}");
    }
}

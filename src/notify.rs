//! `[notify]`: tell someone when a backup fails (or succeeds).
//!
//! A webhook gets one JSON POST per event. Notifying is best effort: a
//! webhook that is down or slow (10 s limit) is a warning on stderr and
//! never changes the backup's exit code.
//!
//! Only `http://` URLs are supported: a minimal HTTP/1.1 client over a
//! TCP stream keeps a TLS stack and an HTTP client out of the binary.
//! Point it at a local relay (or an internal endpoint) for now; `https://`
//! is refused when the config is loaded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// How long one notification may take, connect to response.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `[notify]`, checked.
#[derive(Debug, Clone)]
pub struct Notify {
    /// An `http://` URL.
    pub webhook: Url,
    /// Also notify when a backup succeeds.
    pub on_success: bool,
}

/// Checks a `[notify] webhook` value.
pub fn parse_webhook(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "https webhooks are not supported yet; use an http:// URL (e.g. a local relay)"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?}; use http://host:port/path"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    Ok(url)
}

/// One notification, as posted.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `backup_failed` or `backup_succeeded`; `drill_failed` (a recovery drill).
    pub event: &'static str,
    pub source: String,
    pub tier: Option<String>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub time: DateTime<Utc>,
    pub host: String,
}

impl Event {
    pub fn backup(source: &str, tier: Option<&str>, outcome: Result<(), &crate::Error>) -> Event {
        Event {
            event: if outcome.is_ok() {
                "backup_succeeded"
            } else {
                "backup_failed"
            },
            source: source.to_string(),
            tier: tier.map(String::from),
            error: outcome.err().map(|e| e.message.clone()),
            hint: outcome.err().and_then(|e| e.hint.clone()),
            time: Utc::now(),
            host: crate::util::host_name(),
        }
    }
}

impl Notify {
    /// Whether this event should be sent.
    pub fn wants(&self, e: &Event) -> bool {
        e.event.ends_with("_failed") || self.on_success
    }

    /// Sends `e` if wanted; a failure is printed as a warning, never returned.
    pub async fn send(&self, e: &Event) {
        if !self.wants(e) {
            return;
        }
        let body = serde_json::to_vec(e).expect("event serialises");
        match tokio::time::timeout(TIMEOUT, post(&self.webhook, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => eprintln!(
                "warning: notifying {} of {} for {}: {why}",
                crate::util::redact_url(&self.webhook),
                e.event,
                e.source
            ),
            Err(_) => eprintln!(
                "warning: notifying {} of {} for {}: no answer within {}s",
                crate::util::redact_url(&self.webhook),
                e.event,
                e.source,
                TIMEOUT.as_secs()
            ),
        }
    }
}

/// The request bytes for a JSON POST (pure, for tests).
pub fn request_bytes(url: &Url, body: &[u8]) -> Vec<u8> {
    let host = url.host_str().unwrap_or_default();
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: strata/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        crate::VERSION,
        body.len()
    );
    if !url.username().is_empty() {
        use base64_lite::encode;
        let cred = format!("{}:{}", url.username(), url.password().unwrap_or(""));
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            encode(cred.as_bytes())
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// POSTs `body` and checks for a 2xx status.
async fn post(url: &Url, body: &[u8]) -> Result<(), String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&request_bytes(url, body))
        .await
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need; read until it is complete.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.contains(&b'\n') && buf.len() < 8192 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", line.trim()))
    }
}

/// Just enough base64 for a Basic authorization header.
mod base64_lite {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert!(parse_webhook("http://127.0.0.1:9/hook").is_ok());
        assert!(
            parse_webhook("https://example.com/hook")
                .unwrap_err()
                .contains("not supported yet")
        );
        assert!(parse_webhook("ftp://x/").is_err());
        assert!(parse_webhook("nonsense").is_err());
    }

    #[test]
    fn request_has_headers_and_body() {
        let url = Url::parse("http://u:p@hooks.local:8080/a/b?x=1").unwrap();
        let r = String::from_utf8(request_bytes(&url, b"{\"a\":1}")).unwrap();
        assert!(r.starts_with("POST /a/b?x=1 HTTP/1.1\r\n"), "{r}");
        assert!(r.contains("Host: hooks.local:8080\r\n"), "{r}");
        assert!(r.contains("Content-Length: 7\r\n"), "{r}");
        assert!(r.contains("Authorization: Basic dTpw\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n{\"a\":1}"), "{r}");
    }

    #[test]
    fn base64() {
        assert_eq!(base64_lite::encode(b"Man"), "TWFu");
        assert_eq!(base64_lite::encode(b"Ma"), "TWE=");
        assert_eq!(base64_lite::encode(b"M"), "TQ==");
    }

    #[test]
    fn success_only_when_asked() {
        let n = Notify {
            webhook: Url::parse("http://h/").unwrap(),
            on_success: false,
        };
        let ok = Event::backup("app", None, Ok(()));
        let e = crate::Error::source("boom");
        let bad = Event::backup("app", Some("daily"), Err(&e));
        assert!(!n.wants(&ok));
        assert!(n.wants(&bad));
        assert_eq!(bad.error.as_deref(), Some("boom"));
    }
}

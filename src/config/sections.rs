//! The `[repository]` and `[notify]` sections, checked: where the
//! repository is and how long a store call may take (its deadlines and
//! retries, see `storage::retry`), and who is told when a backup fails
//! (webhook URL, format, routing key, CA file; never quoted in an error).

use std::path::Path;

use toml::Spanned;
use url::Url;

use super::{RawNotify, RawRepository, RepositoryLocation};

pub(super) fn parse_repository(
    r: &RawRepository,
    base_dir: &Path,
) -> std::result::Result<RepositoryLocation, String> {
    let url = Url::parse(r.url.get_ref()).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err("a file URL needs an absolute path: file:///path/to/repo".into());
            }
            let path = url.to_file_path().map_err(|_| {
                "a file URL needs an absolute path: file:///path/to/repo".to_string()
            })?;
            Ok(RepositoryLocation::Local(path))
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or("an s3 URL names its bucket: s3://bucket/prefix")?
                .to_string();
            let prefix = url.path().trim_matches('/').to_string();
            Ok(RepositoryLocation::S3 {
                bucket,
                prefix,
                endpoint: r.endpoint.as_ref().map(|e| e.get_ref().clone()),
                region: r.region.clone(),
                path_style: r.path_style,
                ca_bundle: r.ca_bundle.as_ref().map(|c| base_dir.join(c.get_ref())),
            })
        }
        other => Err(format!(
            "unsupported scheme {other:?}; use file:///path or s3://bucket/prefix"
        )),
    }
}

/// Longest a store timeout may be set to: beyond, a typo ("10d") would
/// hang a command in all but name.
const MAX_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `[notify]`, checked: the URL, the format and its routing key, the CA
/// file (read now, so a wrong path is an error at load, not a warning at
/// the first failure). Errors never quote the URL or the key.
pub(super) fn parse_notify(
    n: RawNotify,
    base_dir: &Path,
) -> std::result::Result<crate::notify::Notify, (std::ops::Range<usize>, &'static str, String)> {
    use crate::notify::{Format, PAGERDUTY_URL, parse_webhook};
    let format = match n.format.as_ref().map(|f| (f.span(), f.get_ref().as_str())) {
        None | Some((_, "json")) => Format::Json,
        Some((_, "slack")) => Format::Slack,
        Some((span, "pagerduty")) => match &n.routing_key {
            Some(k) if !k.get_ref().trim().is_empty() => Format::PagerDuty {
                routing_key: k.get_ref().trim().to_string(),
            },
            _ => {
                return Err((
                    span,
                    "routing_key",
                    "format = \"pagerduty\" needs routing_key, the integration key of a PagerDuty service (Events API v2)".into(),
                ));
            }
        },
        Some((span, other)) => {
            return Err((
                span,
                "format",
                format!("{other:?} is not a format: json, slack or pagerduty"),
            ));
        }
    };
    if let (Some(k), false) = (&n.routing_key, matches!(format, Format::PagerDuty { .. })) {
        return Err((
            k.span(),
            "routing_key",
            "only used with format = \"pagerduty\"".into(),
        ));
    }
    let webhook = match (&n.webhook, &format) {
        (Some(w), _) => parse_webhook(w.get_ref()).map_err(|why| (w.span(), "webhook", why))?,
        (None, Format::PagerDuty { .. }) => url::Url::parse(PAGERDUTY_URL).expect("valid URL"),
        (None, _) => {
            let span = n.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
            return Err((
                span,
                "webhook",
                "missing: the URL to post to (https://…)".into(),
            ));
        }
    };
    let ca_file = match &n.ca_file {
        Some(f) => {
            let path = base_dir.join(f.get_ref());
            crate::util::read_ca_file(&path).map_err(|why| (f.span(), "ca_file", why))?;
            Some(path)
        }
        None => None,
    };
    Ok(crate::notify::Notify {
        webhook,
        on_success: n.on_success,
        format,
        ca_file,
    })
}

/// `[repository]` `connect_timeout`, `request_timeout`, `stall_timeout`
/// and `retries`, over the defaults. Errors carry the value's span and key.
pub(super) fn parse_limits(
    r: &RawRepository,
) -> std::result::Result<
    crate::storage::retry::Limits,
    (std::ops::Range<usize>, &'static str, String),
> {
    use crate::storage::retry::{Limits, MAX_RETRIES};
    let mut limits = Limits::default();
    let timeout =
        |v: &Option<Spanned<String>>, key: &'static str, into: &mut std::time::Duration| {
            let Some(v) = v else { return Ok(()) };
            let d = crate::util::parse_duration(v.get_ref())
                .map_err(|why| (v.span(), key, why))?
                .to_std()
                .map_err(|_| (v.span(), key, "must be positive".to_string()))?;
            if d.is_zero() {
                return Err((
                    v.span(),
                    key,
                    "must be at least 1s (0 would fail every call)".into(),
                ));
            }
            if d > MAX_STORE_TIMEOUT {
                return Err((
                    v.span(),
                    key,
                    format!("{:?} is longer than the 1h allowed", v.get_ref()),
                ));
            }
            *into = d;
            Ok(())
        };
    timeout(
        &r.connect_timeout,
        "connect_timeout",
        &mut limits.connect_timeout,
    )?;
    timeout(
        &r.request_timeout,
        "request_timeout",
        &mut limits.request_timeout,
    )?;
    timeout(&r.stall_timeout, "stall_timeout", &mut limits.stall_timeout)?;
    if limits.connect_timeout > limits.request_timeout {
        let (span, key) = match (&r.connect_timeout, &r.request_timeout) {
            (Some(c), _) => (c.span(), "connect_timeout"),
            (None, Some(q)) => (q.span(), "request_timeout"),
            (None, None) => unreachable!("the defaults are consistent"),
        };
        return Err((
            span,
            key,
            format!(
                "connect_timeout ({}s) exceeds request_timeout ({}s), which includes connecting",
                limits.connect_timeout.as_secs(),
                limits.request_timeout.as_secs()
            ),
        ));
    }
    if let Some(n) = &r.retries {
        let v = *n.get_ref();
        if !(0..=MAX_RETRIES as i64).contains(&v) {
            return Err((
                n.span(),
                "retries",
                format!("{v} is out of range: 0 to {MAX_RETRIES} retries after the first attempt"),
            ));
        }
        limits.retries = v as u32;
    }
    Ok(limits)
}

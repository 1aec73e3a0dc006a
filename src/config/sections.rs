//! The `[notify]` section, checked: who is told when a backup fails
//! (webhook URL, format, routing key, CA file; never quoted in an error).
//! The repository tables are [`super::repositories`]'.

use std::path::Path;

use super::RawNotify;

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

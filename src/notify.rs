//! `[notify]`: tell someone when a backup fails (or succeeds).
//!
//! A webhook gets one POST per event, over http or https (the system's
//! roots, plus `ca_file` for a private CA). What is posted depends on
//! `format`: strata's own JSON event (the default), a Slack
//! incoming-webhook message, or a PagerDuty Events API v2 event that
//! triggers an incident on a failure and resolves it on the next success
//! of the same source (a stable `dedup_key` per source and tier).
//!
//! Notifying is best effort: a webhook that is down, slow (10 s limit,
//! connect to answer) or untrusted is a warning on stderr and never
//! changes the backup's exit code. The URL often is the secret (Slack's
//! path, a token in the query, a password), as is PagerDuty's routing key:
//! neither is ever printed — messages show [`Notify::display`].

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use url::Url;

/// How long one notification may take, connect to response.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// PagerDuty's Events API v2 endpoint, the default webhook of
/// `format = "pagerduty"`.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// What is posted (`[notify] format`).
#[derive(Clone, PartialEq, Eq)]
pub enum Format {
    /// strata's [`Event`] as JSON.
    Json,
    /// A Slack incoming-webhook message: `{"text": …}`.
    Slack,
    /// A PagerDuty Events API v2 event; the routing key is a secret.
    PagerDuty { routing_key: String },
}

impl Format {
    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::PagerDuty { .. } => "pagerduty",
        }
    }
}

/// `[notify]`, checked.
#[derive(Clone)]
pub struct Notify {
    /// An `http://` or `https://` URL; may hold secrets: never print it
    /// (use [`Notify::display`]).
    pub webhook: Url,
    /// Also notify when a backup succeeds (PagerDuty's resolve is sent
    /// whatever this says).
    pub on_success: bool,
    pub format: Format,
    /// A PEM file of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("webhook", &self.display())
            .field("on_success", &self.on_success)
            .field("format", &self.format.name())
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Checks a `[notify] webhook` value.
pub fn parse_webhook(text: &str) -> Result<Url, String> {
    // The URL's text may hold a token: the parser's message never quotes it.
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported scheme {other:?}; use https://host/path (or http://)"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    Ok(url)
}

/// A webhook URL as it may be printed: scheme, host and port only. The
/// user, password, path (Slack's token lives there) and query are
/// secrets as often as not.
pub fn display_url(url: &Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(p) = url.port() {
        s.push_str(&format!(":{p}"));
    }
    if url.path() != "/" || url.query().is_some() {
        s.push_str("/…");
    }
    s
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

    /// A copy into another repository (`copy_to`): `copy_failed` or
    /// `copy_succeeded`; a secondary `wal push` that failed:
    /// `wal_push_failed` (`event`). The message names the repository.
    pub fn copy(
        event: &'static str,
        source: &str,
        tier: Option<&str>,
        repository: &str,
        error: Option<&crate::Error>,
    ) -> Event {
        let mut e = Event::backup(source, tier, error.map_or(Ok(()), Err));
        e.event = event;
        e.error = error.map(|x| format!("into repository {repository}: {}", x.message));
        e
    }

    fn failed(&self) -> bool {
        self.event.ends_with("_failed")
    }

    /// `backup` or `drill`.
    fn what(&self) -> &str {
        self.event.split('_').next().unwrap_or(self.event)
    }

    /// PagerDuty's `dedup_key`: the same for every event of one source
    /// and tier, so a success resolves what a failure triggered. A
    /// drill's `source` lists the sources that failed, so its key is the
    /// tier's alone.
    pub fn dedup_key(&self) -> String {
        let tier = self.tier.as_deref().unwrap_or("-");
        match self.what() {
            "drill" => format!("strata/drill/{tier}"),
            what => format!("strata/{what}/{}/{tier}", self.source),
        }
    }

    /// One line for people: what happened to which source, where.
    pub fn summary(&self) -> String {
        let tier = self
            .tier
            .as_deref()
            .map(|t| format!(" (tier {t})"))
            .unwrap_or_default();
        let outcome = if self.failed() { "failed" } else { "succeeded" };
        match self.what() {
            "drill" => format!(
                "strata: recovery drill{tier} on {} {outcome}: {}",
                self.host, self.source
            ),
            what => format!(
                "strata: {what} of {}{tier} on {} {outcome}",
                self.source, self.host
            ),
        }
    }

    /// The request body in `format`.
    pub fn body(&self, format: &Format) -> serde_json::Value {
        match format {
            Format::Json => serde_json::to_value(self).expect("event serialises"),
            Format::Slack => {
                let mut text = self.summary();
                if let Some(e) = &self.error {
                    text.push_str(&format!("\nerror: {e}"));
                }
                if let Some(h) = &self.hint {
                    text.push_str(&format!("\nhint: {h}"));
                }
                json!({ "text": text })
            }
            Format::PagerDuty { routing_key } if !self.failed() => json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": self.dedup_key(),
            }),
            Format::PagerDuty { routing_key } => {
                let mut summary = self.summary();
                if let Some(e) = &self.error {
                    summary.push_str(&format!(": {e}"));
                }
                // PagerDuty refuses a summary over 1024 characters.
                if summary.chars().count() > 1024 {
                    summary = summary.chars().take(1021).collect::<String>() + "...";
                }
                let mut payload = json!({
                    "summary": summary,
                    "source": self.host,
                    "severity": "error",
                    "timestamp": self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "component": self.source,
                    "class": self.event,
                    "custom_details": self,
                });
                // Optional fields are left out, never null.
                if let Some(t) = &self.tier {
                    payload["group"] = json!(t);
                }
                json!({
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": self.dedup_key(),
                    "client": "strata",
                    "payload": payload,
                })
            }
        }
    }
}

impl Notify {
    /// The webhook as it may be printed (see [`display_url`]).
    pub fn display(&self) -> String {
        display_url(&self.webhook)
    }

    /// Whether this event should be sent: every failure; a backup's
    /// success when `on_success` is set, and always to PagerDuty (its
    /// resolve; PagerDuty ignores one with nothing open).
    pub fn wants(&self, e: &Event) -> bool {
        if e.failed() {
            return true;
        }
        match self.format {
            Format::PagerDuty { .. } => true,
            _ => self.on_success && e.event == "backup_succeeded",
        }
    }

    /// Sends `e` if wanted; a failure is printed as a warning, never returned.
    pub async fn send(&self, e: &Event) {
        if !self.wants(e) {
            return;
        }
        let body = e.body(&self.format);
        // The client's timeout covers connect to answer; the outer one
        // also the setup (reading ca_file).
        let outcome =
            match tokio::time::timeout(TIMEOUT + Duration::from_secs(1), self.post(&body)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
            };
        if let Err(why) = outcome {
            eprintln!(
                "warning: notifying {} of {} for {}: {why}",
                self.display(),
                e.event,
                e.source
            );
        }
    }

    /// POSTs `body` and checks for a 2xx status. Errors never hold the URL.
    async fn post(&self, body: &serde_json::Value) -> Result<(), String> {
        let mut http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            // A redirect would carry the request (and its secrets) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .http1_title_case_headers()
            .user_agent(format!("strata/{}", crate::VERSION));
        if let Some(path) = &self.ca_file {
            for c in crate::util::read_ca_file(path)? {
                let cert = reqwest::Certificate::from_der(&c)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot set up an HTTP client: {}", chain(e)))?;
        let mut url = self.webhook.clone();
        let user = url.username().to_string();
        let password = url.password().map(str::to_string);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut req = http.post(url).json(body);
        if !user.is_empty() || password.is_some() {
            req = req.basic_auth(user, password);
        }
        let resp = req.send().await.map_err(|e| self.why(e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            // The answer's first words say why (PagerDuty: "Invalid routing key").
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.trim().chars().take(200).collect();
            Err(format!("the webhook answered {status} {text}")
                .trim()
                .to_string())
        }
    }

    /// What went wrong sending, without the URL; an untrusted
    /// certificate says which setting fixes it.
    fn why(&self, e: reqwest::Error) -> String {
        let timeout = e.is_timeout();
        let text = chain(e);
        if timeout {
            format!("no answer within {}s ({text})", TIMEOUT.as_secs())
        } else if text.contains("certificate") || text.contains("UnknownIssuer") {
            format!(
                "the webhook's TLS certificate is not trusted ({text}); set [notify] ca_file to the PEM file of the CA that signed it"
            )
        } else {
            text
        }
    }
}

/// A reqwest error and its causes, without the URL (it may hold secrets).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(format: Format, on_success: bool) -> Notify {
        Notify {
            webhook: Url::parse("https://u:p@hooks.example/services/T0/B0/SECRET?x=TOKEN").unwrap(),
            on_success,
            format,
            ca_file: None,
        }
    }

    #[test]
    fn webhook_urls() {
        assert!(parse_webhook("http://127.0.0.1:9/hook").is_ok());
        // issue 17 item 4: https was refused ("not supported yet")
        assert!(parse_webhook("https://example.com/hook").is_ok());
        assert!(parse_webhook("ftp://x/").is_err());
        assert!(parse_webhook("nonsense").is_err());
    }

    #[test]
    fn shown_url_holds_no_secret() {
        let n = notify(Format::Json, false);
        assert_eq!(n.display(), "https://hooks.example/…");
        let dbg = format!("{n:?}");
        for secret in ["SECRET", "TOKEN", "u:p", "T0"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        let n = notify(
            Format::PagerDuty {
                routing_key: "RKEY".into(),
            },
            false,
        );
        assert!(!format!("{n:?}").contains("RKEY"));
        assert_eq!(
            display_url(&Url::parse("http://127.0.0.1:8080/").unwrap()),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn success_only_when_asked_but_always_to_pagerduty() {
        let ok = Event::backup("app", None, Ok(()));
        let e = crate::Error::source("boom");
        let bad = Event::backup("app", Some("daily"), Err(&e));
        let n = notify(Format::Json, false);
        assert!(!n.wants(&ok));
        assert!(n.wants(&bad));
        assert!(notify(Format::Slack, true).wants(&ok));
        let pd = notify(
            Format::PagerDuty {
                routing_key: "k".into(),
            },
            false,
        );
        assert!(pd.wants(&ok) && pd.wants(&bad));
        assert_eq!(bad.error.as_deref(), Some("boom"));
    }

    #[test]
    fn bodies() {
        let e = crate::Error::source("boom").hint("look");
        let bad = Event::backup("app", Some("daily"), Err(&e));
        let ok = Event::backup("app", Some("daily"), Ok(()));
        let j = bad.body(&Format::Json);
        assert_eq!(j["event"], "backup_failed");
        assert_eq!(j["hint"], "look");
        let s = bad.body(&Format::Slack);
        let text = s["text"].as_str().unwrap();
        assert!(text.contains("backup of app (tier daily)"), "{text}");
        assert!(
            text.contains("failed") && text.contains("error: boom"),
            "{text}"
        );
        assert!(
            text.contains("hint: look") && text.contains(&bad.host),
            "{text}"
        );
        let pd = Format::PagerDuty {
            routing_key: "RK".into(),
        };
        let t = bad.body(&pd);
        let r = ok.body(&pd);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["dedup_key"], "strata/backup/app/daily");
        assert_eq!(t["routing_key"], "RK");
        assert_eq!(t["payload"]["severity"], "error");
        assert_eq!(t["payload"]["source"], bad.host.as_str());
        assert_eq!(t["payload"]["custom_details"]["error"], "boom");
        assert_eq!(t["payload"]["group"], "daily");
        let untiered = Event::backup("app", None, Err(&e)).body(&pd);
        assert!(untiered["payload"].get("group").is_none(), "{untiered}");
        let other_tier = Event::backup("app", Some("hourly"), Ok(()));
        assert_ne!(other_tier.dedup_key(), bad.dedup_key());
    }

    #[test]
    fn a_passed_drill_only_resolves_pagerduty() {
        let drill = |event, source: &str| Event {
            event,
            source: source.into(),
            tier: Some("weekly".into()),
            error: None,
            hint: None,
            time: Utc::now(),
            host: "h".into(),
        };
        let failed = drill("drill_failed", "a,b");
        let passed = drill("drill_succeeded", "");
        assert_eq!(failed.dedup_key(), passed.dedup_key());
        assert_eq!(failed.dedup_key(), "strata/drill/weekly");
        assert!(!notify(Format::Json, true).wants(&passed));
        assert!(!notify(Format::Slack, true).wants(&passed));
        let pd = Format::PagerDuty {
            routing_key: "k".into(),
        };
        assert!(notify(pd.clone(), false).wants(&passed));
        assert_eq!(passed.body(&pd)["event_action"], "resolve");
    }
}

//! The Discord webhook client: one `execute` call, its answer classified the
//! way `../shared/reference/discord.md` says a client must act on it.
//!
//! A webhook URL is a credential (its token is the password), so `Webhook`
//! never shows it: not in Debug, not in errors (reqwest errors are stripped
//! of their URL before they go anywhere).

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};

use super::embed::{EditPayload, Payload};

/// A webhook URL, rewritten to API v10 with `wait=true`.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    url: Url,
    /// `id/token`: the identity Discord's rate limits are keyed by.
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "is not a Discord webhook URL: expected https://discord.com/api/webhooks/ID/TOKEN (copy it from the channel's Integrations > Webhooks)"
)]
pub struct NotAWebhook;

impl Webhook {
    /// Parses a webhook URL as Discord's UI shows it (`/api/webhooks/ID/TOKEN`)
    /// or with any API version, and pins it to v10: an unversioned URL would
    /// use API v6, where `retry_after` is in milliseconds, not seconds.
    pub fn parse(raw: &str) -> Result<Webhook, NotAWebhook> {
        let mut url = Url::parse(raw.trim()).map_err(|_| NotAWebhook)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(NotAWebhook);
        }
        let segments: Vec<String> = url.path_segments().ok_or(NotAWebhook)?.map(str::to_string).collect();
        let at = segments.iter().position(|s| s == "webhooks").ok_or(NotAWebhook)?;
        let (id, token) = match &segments[at + 1..] {
            [id, token] | [id, token, _] if !id.is_empty() && !token.is_empty() => (id.clone(), token.clone()),
            _ => return Err(NotAWebhook),
        };
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotAWebhook);
        }
        // Everything before `api` stays (a proxy prefix, a test server's path).
        let api = segments[..at].iter().rposition(|s| s == "api").ok_or(NotAWebhook)?;
        let mut path: Vec<&str> = segments[..=api].iter().map(String::as_str).collect();
        path.extend(["v10", "webhooks", &id, &token]);
        url.set_path(&path.join("/"));
        let kept: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != "wait").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.query_pairs_mut().clear().extend_pairs(kept).append_pair("wait", "true");
        Ok(Webhook { url, key: format!("{id}/{token}") })
    }

    /// The key rate-limit state is shared under: two routes posting to the
    /// same webhook share its bucket.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The URL to post to. Only the client should need this.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Webhook(<redacted>)")
    }
}

/// Rate-limit headers of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateHeaders {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
    pub bucket: Option<String>,
    pub scope: Option<String>,
    pub global: bool,
    pub retry_after: Option<Duration>,
}

fn seconds(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(86_400.0)))
}

impl RateHeaders {
    pub fn parse(h: &HeaderMap) -> RateHeaders {
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        RateHeaders {
            limit: get("x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: get("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_after: get("x-ratelimit-reset-after").and_then(seconds),
            bucket: get("x-ratelimit-bucket").map(str::to_string),
            scope: get("x-ratelimit-scope").map(str::to_string),
            global: get("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            retry_after: get("retry-after").and_then(seconds),
        }
    }
}

/// What Discord's answer means for the messages that were sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 (or 204): posted. `message_id` with `wait=true`.
    Delivered { message_id: Option<String> },
    /// 429: send the same request again after `retry_after`. `json` is false
    /// for a body that is not Discord's (a Cloudflare ban page).
    RateLimited { retry_after: Duration, global: bool, shared: bool, json: bool },
    /// 401, 403, 404: the webhook is gone or refused; using it again only
    /// counts towards an IP ban.
    Gone { status: u16, code: Option<u64>, message: String },
    /// Another 4xx: this payload will never be accepted.
    Rejected { status: u16, code: Option<u64>, message: String },
    /// 5xx, a reset, a timeout: try again later.
    Retry { reason: String },
}

/// An answer's meaning and its rate-limit headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: Outcome,
    pub headers: RateHeaders,
}

/// How long to back off after a 429 whose body is not Discord's JSON:
/// that is what a Cloudflare ban looks like, and it lasts minutes.
const BAN_BACKOFF: Duration = Duration::from_secs(120);
/// A 429 with no usable wait at all.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Discord's error text is kept short in errors, events and the dead list.
const MAX_ERROR_TEXT: usize = 600;

fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Classifies a response from its status, headers and body.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Answer {
    let rate = RateHeaders::parse(headers);
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k));
    let code = field("code").and_then(|c| c.as_u64());
    let message = field("message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| short(&String::from_utf8_lossy(body)));
    let outcome = match status.as_u16() {
        200..=299 => Outcome::Delivered { message_id: field("id").and_then(|v| v.as_str()).map(str::to_string) },
        429 => {
            let body_wait = field("retry_after").and_then(|v| v.as_f64()).and_then(|v| seconds(&v.to_string()));
            let is_json = json.as_ref().is_some_and(|j| j.is_object());
            // The header overrides the bucket's reset (hidden per-channel
            // limits); take the longer of header and body.
            let wait = match (rate.retry_after, body_wait) {
                (Some(a), Some(b)) => a.max(b),
                (a, b) => a.or(b).unwrap_or(if is_json { DEFAULT_RETRY_AFTER } else { BAN_BACKOFF }),
            };
            let wait = if is_json { wait } else { wait.max(BAN_BACKOFF) };
            Outcome::RateLimited {
                retry_after: wait,
                global: rate.global || field("global").and_then(|g| g.as_bool()).unwrap_or(false),
                shared: rate.scope.as_deref() == Some("shared"),
                json: is_json,
            }
        }
        401 | 403 | 404 => Outcome::Gone { status: status.as_u16(), code, message },
        400..=499 => {
            let errors = field("errors").map(|e| format!(": {}", short(&e.to_string()))).unwrap_or_default();
            Outcome::Rejected { status: status.as_u16(), code, message: format!("{message}{errors}") }
        }
        _ if message.is_empty() => Outcome::Retry { reason: format!("Discord answered {status} with no body") },
        _ => Outcome::Retry { reason: format!("Discord answered {status}: {}", short(&message)) },
    };
    Answer { outcome, headers: rate }
}

/// Why Discord refused a webhook, in words an admin can act on.
pub fn explain_gone(status: u16, code: Option<u64>, message: &str) -> String {
    // An empty body (a proxy's answer, not Discord's) would read as "(404, )".
    let message = if message.is_empty() { "no body" } else { message };
    match (status, code) {
        (404, Some(10015)) => "Discord says the webhook no longer exists (404, code 10015 Unknown Webhook): it was deleted or the URL is wrong".into(),
        (404, _) => format!("Discord answered 404 ({message}): the webhook URL's path is wrong"),
        (401, _) => format!("Discord refused the webhook's token (401, {message}): it was regenerated or mistyped"),
        _ => format!("Discord refused the request ({status}, {message}): the webhook is not usable from here"),
    }
}

/// The HTTP side of posting to webhooks.
#[derive(Clone)]
pub struct Discord {
    http: reqwest::Client,
}

impl Discord {
    pub fn new(timeout: Duration) -> Result<Discord, reqwest::Error> {
        let http = reqwest::Client::builder()
            // Discord documents this form; Cloudflare may block others.
            .user_agent(concat!("DiscordBot (https://github.com/pipwatch/pipwatch, ", env!("CARGO_PKG_VERSION"), ")"))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Discord { http })
    }

    /// Posts one message. Never fails: a transport error is an `Outcome::Retry`.
    pub async fn execute(&self, webhook: &Webhook, payload: &Payload<'_>) -> Answer {
        self.send(self.http.post(webhook.url().clone()).json(payload)).await
    }

    /// Edits a message this webhook posted
    /// (`PATCH /webhooks/{id}/{token}/messages/{message_id}`); Discord
    /// answers with the message, as for a post.
    pub async fn edit(&self, webhook: &Webhook, message_id: &str, payload: &EditPayload<'_>) -> Answer {
        let mut url = webhook.url().clone();
        // `wait` is for posts; an edit always answers with the message.
        let kept: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != "wait").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        if let Ok(mut path) = url.path_segments_mut() {
            path.push("messages").push(message_id);
        }
        self.send(self.http.patch(url).json(payload)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let sent = request.send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => classify(status, &headers, &body),
            // Discord answered but the body was cut off: for a success, the
            // message was posted; without its id it is still delivered.
            Err(_) if status.is_success() => {
                Answer { outcome: Outcome::Delivered { message_id: None }, headers: RateHeaders::parse(&headers) }
            }
            Err(e) => transport_error(e),
        }
    }
}

fn transport_error(e: reqwest::Error) -> Answer {
    Answer { outcome: Outcome::Retry { reason: short(&crate::net::describe(e)) }, headers: RateHeaders::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn webhook_urls_are_pinned_to_v10_with_wait() {
        let w = Webhook::parse("https://discord.com/api/webhooks/123/abc-DEF_ghi").unwrap();
        assert_eq!(w.url().as_str(), "https://discord.com/api/v10/webhooks/123/abc-DEF_ghi?wait=true");
        assert_eq!(w.key(), "123/abc-DEF_ghi");
        let w = Webhook::parse("https://discordapp.com/api/v6/webhooks/123/tok?thread_id=9&wait=false").unwrap();
        assert_eq!(w.url().as_str(), "https://discordapp.com/api/v10/webhooks/123/tok?thread_id=9&wait=true");
        let w = Webhook::parse("http://127.0.0.1:9/prefix/api/webhooks/1/t").unwrap();
        assert_eq!(w.url().as_str(), "http://127.0.0.1:9/prefix/api/v10/webhooks/1/t?wait=true");
        for bad in [
            "https://discord.com/channels/1/2",
            "https://discord.com/api/webhooks/123",
            "https://discord.com/api/webhooks/abc/tok",
            "ftp://discord.com/api/webhooks/1/t",
            "not a url",
        ] {
            assert_eq!(Webhook::parse(bad), Err(NotAWebhook), "{bad}");
        }
        assert_eq!(format!("{w:?}"), "Webhook(<redacted>)");
    }

    #[test]
    fn answers_are_classified_like_discord_means_them() {
        let ok = classify(StatusCode::OK, &HeaderMap::new(), br#"{"id":"42","channel_id":"1"}"#);
        assert_eq!(ok.outcome, Outcome::Delivered { message_id: Some("42".into()) });

        let h = headers(&[("retry-after", "65"), ("x-ratelimit-scope", "shared")]);
        let limited = classify(StatusCode::TOO_MANY_REQUESTS, &h, br#"{"retry_after": 64.57, "global": false}"#);
        assert_eq!(
            limited.outcome,
            Outcome::RateLimited { retry_after: Duration::from_secs(65), global: false, shared: true, json: true }
        );
        let h = headers(&[("x-ratelimit-global", "true")]);
        let global = classify(StatusCode::TOO_MANY_REQUESTS, &h, br#"{"retry_after": 1.5, "global": true}"#);
        assert_eq!(
            global.outcome,
            Outcome::RateLimited { retry_after: Duration::from_millis(1500), global: true, shared: false, json: true }
        );
        // A Cloudflare ban: not JSON, no headers. Never parsed as Discord's.
        let ban = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"error code: 1015");
        assert!(
            matches!(ban.outcome, Outcome::RateLimited { json: false, retry_after, .. } if retry_after >= BAN_BACKOFF)
        );

        let gone = classify(StatusCode::NOT_FOUND, &HeaderMap::new(), br#"{"message":"Unknown Webhook","code":10015}"#);
        assert_eq!(gone.outcome, Outcome::Gone { status: 404, code: Some(10015), message: "Unknown Webhook".into() });
        let bad = classify(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"code":50035,"message":"Invalid Form Body","errors":{"embeds":{}}}"#,
        );
        assert!(
            matches!(&bad.outcome, Outcome::Rejected { code: Some(50035), message, .. } if message.contains("Invalid Form Body") && message.contains("embeds"))
        );
        let down = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>bad gateway</html>");
        assert_eq!(
            down.outcome,
            Outcome::Retry { reason: "Discord answered 502 Bad Gateway: <html>bad gateway</html>".into() }
        );
        let empty = classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert_eq!(
            empty.outcome,
            Outcome::Retry { reason: "Discord answered 503 Service Unavailable with no body".into() }
        );
        let Outcome::Gone { status, code, message } = classify(StatusCode::NOT_FOUND, &HeaderMap::new(), b" ").outcome
        else {
            panic!("a 404 is gone");
        };
        assert_eq!(
            explain_gone(status, code, &message),
            "Discord answered 404 (no body): the webhook URL's path is wrong"
        );
    }

    #[test]
    fn rate_headers_are_read() {
        let h = headers(&[
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "1.25"),
            ("x-ratelimit-bucket", "abcd"),
        ]);
        let r = RateHeaders::parse(&h);
        assert_eq!(
            (r.limit, r.remaining, r.reset_after, r.bucket.as_deref()),
            (Some(5), Some(0), Some(Duration::from_millis(1250)), Some("abcd"))
        );
        assert_eq!(RateHeaders::parse(&headers(&[("x-ratelimit-reset-after", "-1")])).reset_after, None);
    }
}

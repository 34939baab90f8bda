//! `pipwatch tail`: a running instance's events as JSON lines, following
//! across dropped connections (reconnecting with `?since=` so nothing is
//! missed while the server still holds it).

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub url: String,
    pub token: Option<String>,
    pub topics: Vec<String>,
    pub instruments: Vec<String>,
}

/// Why `tail` or `attach` could not follow an instance. Both say it the same way.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("'{0}' is not a WebSocket URL: write e.g. ws://127.0.0.1:8787/ws")]
    Url(String),
    #[error("cannot connect to {url}: {message}. Is `pipwatch headless` (or the console) running there?")]
    Connect { url: String, message: String },
    #[error("{url} answered 404 Not Found: pipwatch serves its events at /ws, e.g. ws://127.0.0.1:8787/ws")]
    NotFound { url: String },
    #[error("{url}: the TLS connection failed: {message}. {TLS_HINT}")]
    Tls { url: String, message: String },
    #[error("{url} wants a token: pass --token TOKEN or set PIPWATCH_SERVER_TOKEN")]
    Unauthorized { url: String },
    #[error("{url} refused the token (401): it must be the server's `server.token` exactly")]
    TokenRefused { url: String },
    #[error("the server refused the subscription: {0}")]
    Refused(String),
    #[error("cannot write the events: {0}")]
    Output(#[from] std::io::Error),
}

/// What to do about a certificate that is not trusted, the usual TLS failure.
pub const TLS_HINT: &str = "A certificate from a CA of your own is trusted when SSL_CERT_FILE names a PEM file with it";

/// Whether a failed connection failed in the TLS handshake. rustls reports a
/// rejected certificate through tokio-rustls as an I/O error of kind
/// `InvalidData`, which plain TCP never returns while connecting.
pub fn is_tls_failure(e: &tungstenite::Error) -> bool {
    match e {
        tungstenite::Error::Tls(_) => true,
        tungstenite::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub reconnects: u64,
    pub last_seq: Option<u64>,
}

/// The URL as a user would write it, made whole: `127.0.0.1:8787`,
/// `http://host:8787` and `ws://host:8787` all mean that instance's `/ws`
/// (`https` means `wss`). Without this the last two reached the server and
/// got a bare 404, which read as if nothing was running there.
fn parse(raw: &str) -> Result<reqwest::Url, TailError> {
    let bad = || TailError::Url(raw.to_string());
    let text = raw.trim();
    let text = if text.contains("://") { text.to_string() } else { format!("ws://{text}") };
    let mut u = reqwest::Url::parse(&text).map_err(|_| bad())?;
    let scheme = match u.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad()),
    };
    // `Url` refuses some scheme changes in place; rebuilding from text does not.
    if u.scheme() != scheme {
        u = reqwest::Url::parse(&format!("{scheme}{}", &text[text.find("://").unwrap_or(0)..])).map_err(|_| bad())?;
    }
    if u.host().is_none() {
        return Err(bad());
    }
    if u.path().is_empty() || u.path() == "/" {
        u.set_path("/ws");
    }
    Ok(u)
}

/// `raw` as the URL `tail` and `attach` connect to (see `parse`), for
/// messages that name it.
pub fn normalize(raw: &str) -> Result<String, TailError> {
    parse(raw).map(String::from)
}

/// A failed handshake in a user's words. `Connect` is the only one worth
/// retrying: a refused token or a wrong path does not fix itself.
pub fn connect_error(url: &str, has_token: bool, e: tungstenite::Error) -> TailError {
    let url = url.to_string();
    match e {
        tungstenite::Error::Http(r) if r.status() == 401 => {
            if has_token {
                TailError::TokenRefused { url }
            } else {
                TailError::Unauthorized { url }
            }
        }
        tungstenite::Error::Http(r) if r.status() == 400 => {
            TailError::Refused(r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().trim().to_string())
        }
        tungstenite::Error::Http(r) if r.status() == 404 => TailError::NotFound { url },
        e if is_tls_failure(&e) => TailError::Tls { url, message: e.to_string() },
        e => TailError::Connect { url, message: reason(&e) },
    }
}

/// A connection error as a user reads it: the OS's words for an I/O error,
/// without tungstenite's "IO error: " before them.
pub fn reason(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

/// The URL with the subscription and the resume point in its query, so they
/// apply from the first frame (a `since` replay is filtered too).
fn url_for(opts: &Options, since: Option<u64>) -> Result<reqwest::Url, TailError> {
    let mut u = parse(&opts.url)?;
    let mut pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !matches!(k.as_ref(), "since" | "topics" | "instruments"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(s) = since {
        pairs.push(("since".into(), s.to_string()));
    }
    if !opts.topics.is_empty() {
        pairs.push(("topics".into(), opts.topics.join(",")));
    }
    if !opts.instruments.is_empty() {
        pairs.push(("instruments".into(), opts.instruments.join(",")));
    }
    if pairs.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(u)
}

/// The handshake request: subscription and resume point in the query, the
/// token as a bearer header. `attach` connects the same way.
pub fn request(opts: &Options, since: Option<u64>) -> Result<tungstenite::handshake::client::Request, TailError> {
    let url = url_for(opts, since)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| TailError::Connect { url: opts.url.clone(), message: reason(&e) })?;
    if let Some(t) = &opts.token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        request.headers_mut().insert("authorization", v);
    }
    Ok(request)
}

enum Ended {
    Stopped,
    Dropped(String),
}

/// Follows the event stream until `shutdown`. Fails only if the first
/// connection cannot be made (or is refused); later drops are reconnected.
pub async fn run(
    opts: &Options,
    out: &mut (dyn Write + Send),
    shutdown: CancellationToken,
) -> Result<Stats, TailError> {
    let opts = &Options { url: normalize(&opts.url)?, ..opts.clone() };
    let mut stats = Stats::default();
    let mut attempt = 0u32;
    loop {
        let request = request(opts, stats.last_seq)?;
        let connected = tokio::select! {
            r = tokio_tungstenite::connect_async(request) => r,
            _ = shutdown.cancelled() => return Ok(stats),
        };
        let ws = match connected {
            Ok((ws, _)) => ws,
            Err(e) => {
                let err = connect_error(&opts.url, opts.token.is_some(), e);
                // Only a connection that could not be made is worth waiting
                // for, and only once tail has been connected: at the start
                // the user wants to know that nothing is there.
                let TailError::Connect { message, .. } = &err else { return Err(err) };
                if stats.reconnects == 0 && stats.last_seq.is_none() && attempt == 0 {
                    return Err(err);
                }
                attempt += 1;
                let wait = crate::net::backoff(attempt, Duration::from_millis(250), Duration::from_secs(5));
                tracing::warn!(error = %message, retry_in = %format!("{:.1}s", wait.as_secs_f64()), "reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.cancelled() => return Ok(stats),
                }
            }
        };
        attempt = 0;
        match follow(ws, out, &mut stats, &shutdown).await? {
            Ended::Stopped => return Ok(stats),
            Ended::Dropped(why) => {
                stats.reconnects += 1;
                tracing::warn!(reason = %why, since = ?stats.last_seq, "connection lost; reconnecting");
            }
        }
    }
}

async fn follow(
    mut ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    out: &mut (dyn Write + Send),
    stats: &mut Stats,
    shutdown: &CancellationToken,
) -> Result<Ended, TailError> {
    loop {
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(Ended::Stopped);
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                return Ok(Ended::Dropped(c.map(|c| c.reason.to_string()).unwrap_or_else(|| "closed".into())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ok(Ended::Dropped(e.to_string())),
            None => return Ok(Ended::Dropped("closed".into())),
        };
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => continue,
        };
        match v["type"].as_str().unwrap_or("") {
            "hello" => tracing::info!(source = %v["source"], version = %v["version"], "connected"),
            "lagged" => tracing::warn!(missed = %v["missed"], "events were missed (the server no longer had them)"),
            "error" => tracing::warn!(error = %v["message"], "the server reported an error"),
            "snapshot" | "subscribed" | "pong" | "ok" => {}
            _ => {
                if let Some(seq) = v["seq"].as_u64() {
                    out.write_all(text.as_bytes())?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                    stats.events += 1;
                    stats.last_seq = Some(seq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_taken_as_a_user_writes_it() {
        for (typed, url) in [
            ("127.0.0.1:8787", "ws://127.0.0.1:8787/ws"),
            ("ws://127.0.0.1:8787", "ws://127.0.0.1:8787/ws"),
            ("ws://127.0.0.1:8787/", "ws://127.0.0.1:8787/ws"),
            ("http://box.lan:8787", "ws://box.lan:8787/ws"),
            ("https://box.lan/pipwatch/ws?x=1", "wss://box.lan/pipwatch/ws?x=1"),
            ("wss://box.lan:9000/ws", "wss://box.lan:9000/ws"),
            (" localhost:8787 ", "ws://localhost:8787/ws"),
        ] {
            assert_eq!(normalize(typed).ok().as_deref(), Some(url), "{typed}");
        }
        for bad in ["ftp://box/ws", "ws://", "", "http://[::1"] {
            assert!(matches!(normalize(bad), Err(TailError::Url(_))), "{bad}");
        }
    }
}

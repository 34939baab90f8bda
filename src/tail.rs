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

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("'{0}' is not a WebSocket URL: write e.g. ws://127.0.0.1:8787/ws")]
    Url(String),
    #[error("cannot connect to {url}: {message}. Is `pipwatch headless` (or the console) running there?")]
    Connect { url: String, message: String },
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

/// The URL with the subscription and the resume point in its query, so they
/// apply from the first frame (a `since` replay is filtered too).
fn url_for(opts: &Options, since: Option<u64>) -> Result<reqwest::Url, TailError> {
    let url = &opts.url;
    let mut u = reqwest::Url::parse(url).map_err(|_| TailError::Url(url.to_string()))?;
    if !matches!(u.scheme(), "ws" | "wss") || u.host().is_none() {
        return Err(TailError::Url(url.to_string()));
    }
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
        .map_err(|e| TailError::Connect { url: opts.url.clone(), message: e.to_string() })?;
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
    url_for(opts, None)?;
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
            Err(tungstenite::Error::Http(r)) if r.status() == 401 => {
                let url = opts.url.clone();
                return Err(if opts.token.is_some() {
                    TailError::TokenRefused { url }
                } else {
                    TailError::Unauthorized { url }
                });
            }
            Err(tungstenite::Error::Http(r)) if r.status() == 400 => {
                let body = r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().trim().to_string();
                return Err(TailError::Refused(body));
            }
            Err(e) if is_tls_failure(&e) => {
                // A certificate does not fix itself: retrying would only hide it.
                return Err(TailError::Tls { url: opts.url.clone(), message: e.to_string() });
            }
            Err(e) if stats.reconnects == 0 && stats.last_seq.is_none() && attempt == 0 => {
                return Err(TailError::Connect { url: opts.url.clone(), message: e.to_string() });
            }
            Err(e) => {
                attempt += 1;
                let wait = crate::market::backoff(attempt, Duration::from_millis(250), Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = %format!("{:.1}s", wait.as_secs_f64()), "reconnecting");
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
            "error" => tracing::warn!(message = %v["message"], "the server reported an error"),
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

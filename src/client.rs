//! The one WebSocket client of a running instance, shared by `tail` and
//! `attach`: connect (with the subscription and the token), read the
//! server's frames as [`protocol`] types, send commands, and after a drop
//! reconnect with backoff and `?since=` the last seq it holds, so nothing the
//! server still has is missed. What it reads goes to the caller as
//! [`Update`]s through a bounded channel: a caller that falls behind stops
//! the reading, the server sees a slow client, and answers with `lagged` and
//! a fresh snapshot.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::event::Envelope;
use crate::protocol::{ClientFrame, Frame, ServerFrame};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub url: String,
    pub token: Option<String>,
    pub topics: Vec<String>,
    pub instruments: Vec<String>,
}

/// Why `tail` or `attach` could not follow an instance. Both say it the same way.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("'{0}' is not a WebSocket URL: write e.g. ws://127.0.0.1:8787/ws")]
    Url(String),
    #[error("cannot connect to {url}: {message}. Is `pipwatch headless` (or the console) running there?")]
    Connect { url: String, message: String },
    #[error("{url} answered 404 Not Found: pipwatch serves its events at /ws, e.g. ws://127.0.0.1:8787/ws")]
    NotFound { url: String },
    #[error("{url}: the TLS connection failed: {message}")]
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

/// The URL as a user would write it, made whole: `127.0.0.1:8787`,
/// `http://host:8787` and `ws://host:8787` all mean that instance's `/ws`
/// (`https` means `wss`). Without this the last two reached the server and
/// got a bare 404, which read as if nothing was running there.
fn parse(raw: &str) -> Result<reqwest::Url, ClientError> {
    let bad = || ClientError::Url(raw.to_string());
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
pub fn normalize(raw: &str) -> Result<String, ClientError> {
    parse(raw).map(String::from)
}

/// A failed handshake in a user's words. `Connect` is the only one worth
/// retrying: a refused token or a wrong path does not fix itself.
pub fn connect_error(url: &str, has_token: bool, e: tungstenite::Error) -> ClientError {
    let url = url.to_string();
    match e {
        tungstenite::Error::Http(r) if r.status() == 401 => {
            if has_token {
                ClientError::TokenRefused { url }
            } else {
                ClientError::Unauthorized { url }
            }
        }
        tungstenite::Error::Http(r) if r.status() == 400 => ClientError::Refused(
            r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().trim().to_string(),
        ),
        tungstenite::Error::Http(r) if r.status() == 404 => ClientError::NotFound { url },
        // A server without TLS answers the TLS hello in plain HTTP, which
        // rustls reads as a record of no valid type: certificate advice
        // would send the user the wrong way.
        e if is_tls_failure(&e) && e.to_string().contains("InvalidContentType") => {
            let plain = url.replacen("wss://", "ws://", 1);
            let message = format!(
                "the server does not speak TLS: use {plain}, or put a TLS-terminating proxy (nginx, Caddy) in front of it"
            );
            ClientError::Tls { url, message }
        }
        e if is_tls_failure(&e) => ClientError::Tls { url, message: format!("{e}. {TLS_HINT}") },
        e => ClientError::Connect { url, message: reason(&e) },
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
fn url_for(opts: &Options, since: Option<u64>) -> Result<reqwest::Url, ClientError> {
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
pub fn request(opts: &Options, since: Option<u64>) -> Result<tungstenite::handshake::client::Request, ClientError> {
    let url = url_for(opts, since)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Connect { url: opts.url.clone(), message: reason(&e) })?;
    if let Some(t) = &opts.token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        request.headers_mut().insert("authorization", v);
    }
    Ok(request)
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects once. `opts.url` as the user wrote it (see [`normalize`]).
pub async fn connect(opts: &Options, since: Option<u64>) -> Result<Ws, ClientError> {
    let url = normalize(&opts.url)?;
    let opts = Options { url, ..opts.clone() };
    match tokio_tungstenite::connect_async(request(&opts, since)?).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(connect_error(&opts.url, opts.token.is_some(), e)),
    }
}

/// What the client tells its caller.
#[derive(Debug)]
pub enum Update {
    /// A connection is up (the first, or again after a drop).
    Connected,
    /// A frame of the conversation: hello, snapshot, lagged, error...
    Frame(Frame),
    /// An event, with its text as the server sent it.
    Event { env: Arc<Envelope>, text: String },
    /// The connection dropped, for this reason; reconnecting.
    Dropped { reason: String },
    /// A reconnect failed; the next try is in `wait`.
    Retrying { reason: String, wait: Duration },
}

enum Ended {
    Stopped,
    /// The caller is gone.
    Gone,
    Dropped(String),
}

/// Follows the instance until `stop` (or until the caller drops `updates`),
/// reconnecting after drops. `first`: a connection already made (attach
/// makes one to fail before its screen opens); without one, the first
/// connection is made here, and its failure is the error returned: at the
/// start the user wants to know that nothing is there. Later, only a
/// connection that could not be made is retried; a refused token or a wrong
/// path does not fix itself.
pub async fn follow(
    opts: &Options,
    first: Option<Ws>,
    updates: mpsc::Sender<Update>,
    mut commands: Option<mpsc::Receiver<ClientFrame>>,
    stop: CancellationToken,
) -> Result<(), ClientError> {
    let opts = &Options { url: normalize(&opts.url)?, ..opts.clone() };
    let mut first = first;
    let mut ever = first.is_some();
    let mut since: Option<u64> = None;
    let mut attempt = 0u32;
    loop {
        let ws = match first.take() {
            Some(ws) => ws,
            None => {
                let connected = tokio::select! {
                    r = tokio_tungstenite::connect_async(request(opts, since)?) => r,
                    _ = stop.cancelled() => return Ok(()),
                };
                match connected {
                    Ok((ws, _)) => ws,
                    Err(e) => {
                        let err = connect_error(&opts.url, opts.token.is_some(), e);
                        let ClientError::Connect { message, .. } = &err else { return Err(err) };
                        if !ever {
                            return Err(err);
                        }
                        attempt += 1;
                        let wait = crate::net::backoff(attempt, Duration::from_millis(250), Duration::from_secs(5));
                        if updates.send(Update::Retrying { reason: message.clone(), wait }).await.is_err() {
                            return Ok(());
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = stop.cancelled() => return Ok(()),
                        }
                    }
                }
            }
        };
        ever = true;
        attempt = 0;
        if updates.send(Update::Connected).await.is_err() {
            return Ok(());
        }
        match read(ws, &updates, &mut commands, &mut since, &stop).await {
            Ended::Stopped | Ended::Gone => return Ok(()),
            Ended::Dropped(reason) => {
                if updates.send(Update::Dropped { reason }).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// One connection's frames until it drops; `since` follows what the caller holds.
async fn read(
    mut ws: Ws,
    updates: &mpsc::Sender<Update>,
    commands: &mut Option<mpsc::Receiver<ClientFrame>>,
    since: &mut Option<u64>,
    stop: &CancellationToken,
) -> Ended {
    loop {
        let command = async {
            match commands.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            f = ws.next() => f,
            c = command => {
                let Some(c) = c else {
                    // Nobody sends commands any more; reading goes on.
                    *commands = None;
                    continue;
                };
                if let Err(e) = ws.send(Message::Text(c.to_json().into())).await {
                    return Ended::Dropped(reason(&e));
                }
                continue;
            }
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return Ended::Stopped;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                let why = c.map(|c| c.reason.to_string()).filter(|r| !r.is_empty());
                return Ended::Dropped(why.unwrap_or_else(|| "closed by the server".into()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ended::Dropped(reason(&e)),
            None => return Ended::Dropped("connection closed".into()),
        };
        let update = match ServerFrame::parse(&text) {
            Ok(ServerFrame::Event(env)) => {
                *since = Some(env.seq);
                Update::Event { env: Arc::new(env), text: text.to_string() }
            }
            Ok(ServerFrame::Frame(frame)) => {
                if let Frame::Snapshot(view) = &frame {
                    *since = Some(view.seq);
                }
                Update::Frame(frame)
            }
            Err(e) => {
                // A newer server may send kinds this one does not know.
                tracing::debug!(error = %e, "a frame from the server was not understood; skipped");
                continue;
            }
        };
        if updates.send(update).await.is_err() {
            return Ended::Gone;
        }
    }
}

/// Sends one command frame and returns the server's answer to it: `Ok(message)`
/// for an `ok` frame (its message, or ""), `Err(Refused)` for an `error`.
/// What else the server sends meanwhile (hello, snapshot, events) is skipped.
pub async fn command(opts: &Options, frame: &ClientFrame) -> Result<String, ClientError> {
    use futures_util::{SinkExt, StreamExt};
    let url = opts.url.clone();
    let mut ws = connect(opts, None).await?;
    let lost = |message: String| ClientError::Connect { url: url.clone(), message };
    ws.send(tungstenite::Message::text(frame.to_json())).await.map_err(|e| lost(reason(&e)))?;
    let answer = async {
        while let Some(msg) = ws.next().await {
            let msg = msg.map_err(|e| lost(reason(&e)))?;
            let Ok(text) = msg.to_text() else { continue };
            match ServerFrame::parse(text) {
                Ok(ServerFrame::Frame(Frame::Ok { message, .. })) => return Ok(message.unwrap_or_default()),
                Ok(ServerFrame::Frame(Frame::Error { message })) => return Err(ClientError::Refused(message)),
                _ => {}
            }
        }
        Err(lost("the connection closed before an answer".into()))
    };
    let result = tokio::time::timeout(std::time::Duration::from_secs(30), answer)
        .await
        .unwrap_or_else(|_| Err(lost("no answer within 30 s".into())));
    let _ = ws.close(None).await;
    result
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
            assert!(matches!(normalize(bad), Err(ClientError::Url(_))), "{bad}");
        }
    }
}

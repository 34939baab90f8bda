//! `pipwatch attach`: the console's input from a running instance's
//! WebSocket. The snapshot becomes the view, then events are folded into it
//! by the same `View::apply` the in-process console uses. After a drop it
//! reconnects with `?since=` the last seq it applied.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::app::LinkState;
use crate::event::Envelope;
use crate::tail::TailError;
use crate::view::View;

/// What the console receives, from either side.
#[derive(Debug)]
pub enum Incoming {
    Snapshot(Box<View>),
    Event(Arc<Envelope>),
    /// The connection's state, and why it is down.
    Link(LinkState, Option<String>),
    /// The server answered a command.
    Notice(String),
}

/// What the console asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Pause(bool),
    Ack(crate::event::Alert),
}

fn request(
    url: &str,
    token: Option<&str>,
    since: Option<u64>,
) -> Result<tungstenite::handshake::client::Request, TailError> {
    let opts = crate::tail::Options { url: url.to_string(), token: token.map(str::to_string), ..Default::default() };
    crate::tail::request(&opts, since)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects once, to fail early (before the screen opens) if nothing is
/// there. `url` as the user wrote it: `crate::tail::normalize` makes it whole.
pub async fn connect(url: &str, token: Option<&str>) -> Result<Ws, TailError> {
    let url = crate::tail::normalize(url)?;
    match tokio_tungstenite::connect_async(request(&url, token, None)?).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(crate::tail::connect_error(&url, token.is_some(), e)),
    }
}

/// Follows the server until `stop`, reconnecting after drops.
pub async fn follow(
    first: Ws,
    url: String,
    token: Option<String>,
    tx: mpsc::Sender<Incoming>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut ws = Some(first);
    let mut last_seq: Option<u64> = None;
    let mut attempt = 0u32;
    loop {
        let mut conn = match ws.take() {
            Some(c) => c,
            None => {
                let connected = tokio::select! {
                    r = tokio_tungstenite::connect_async(match request(&url, token.as_deref(), last_seq) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Incoming::Link(LinkState::Failed, Some(e.to_string()))).await;
                            return;
                        }
                    }) => r,
                    _ = stop.cancelled() => return,
                };
                match connected {
                    Ok((c, _)) => c,
                    Err(e) => {
                        attempt += 1;
                        let wait = crate::net::backoff(attempt, Duration::from_millis(250), Duration::from_secs(5));
                        let _ = tx.send(Incoming::Link(LinkState::Reconnecting, Some(crate::tail::reason(&e)))).await;
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = stop.cancelled() => return,
                        }
                    }
                }
            }
        };
        attempt = 0;
        let _ = tx.send(Incoming::Link(LinkState::Connected, None)).await;
        let why = loop {
            tokio::select! {
                frame = conn.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => {
                            break c
                                .map(|c| c.reason.to_string())
                                .filter(|r| !r.is_empty())
                                .unwrap_or_else(|| "closed by the server".into());
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => break crate::tail::reason(&e),
                        None => break "connection closed".into(),
                    };
                    let Ok(mut v) = serde_json::from_str::<Value>(&text) else { continue };
                    let kind = v["type"].as_str().unwrap_or("").to_string();
                    let msg = match kind.as_str() {
                        "snapshot" => {
                            if let Some(o) = v.as_object_mut() {
                                o.remove("type");
                            }
                            match serde_json::from_value::<View>(v) {
                                Ok(view) => {
                                    last_seq = Some(view.seq);
                                    Incoming::Snapshot(Box::new(view))
                                }
                                Err(e) => Incoming::Notice(format!("a snapshot could not be read: {e}")),
                            }
                        }
                        "hello" => {
                            if v["commands"] == false {
                                Incoming::Link(LinkState::ReadOnly, None)
                            } else {
                                continue;
                            }
                        }
                        "error" => Incoming::Notice(v["message"].as_str().unwrap_or("error").to_string()),
                        "ok" | "pong" | "subscribed" | "lagged" => continue,
                        _ => match serde_json::from_value::<Envelope>(v) {
                            Ok(env) => {
                                last_seq = Some(env.seq);
                                Incoming::Event(Arc::new(env))
                            }
                            Err(_) => continue,
                        },
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                c = commands.recv() => {
                    let frame = match c {
                        Some(Command::Pause(true)) => serde_json::json!({"op": "pause"}),
                        Some(Command::Pause(false)) => serde_json::json!({"op": "resume"}),
                        Some(Command::Ack(a)) => serde_json::json!({"op": "ack", "alert": a.id}),
                        None => return,
                    };
                    if let Err(e) = conn.send(Message::Text(frame.to_string().into())).await {
                        break crate::tail::reason(&e);
                    }
                }
                _ = stop.cancelled() => {
                    let _ = conn.close(None).await;
                    return;
                }
            }
        };
        let _ = tx.send(Incoming::Link(LinkState::Reconnecting, Some(why))).await;
    }
}

//! One WebSocket connection: the handshake, the opening frames (hello, then
//! a snapshot or a `since` replay), the client's subscription and commands,
//! and its send loop.
//!
//! NOTE: the invariant every client keeps: it holds a view as of some seq
//! (`after`: the snapshot it was sent, or the last event it was sent), and it
//! is sent exactly the events after it, in order. A lag (its buffer, or the
//! framing task's, overflowed) breaks the chain, so it is answered with
//! `lagged`, a fresh snapshot from the hub (seq S), and then only frames
//! with seq > S: the queued ones up to S are already in the snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Out, Shared, wire};
use crate::control::Command;
use crate::protocol::{self, ClientFrame, Frame, Hello, PROTOCOL, TOPICS};
use crate::types::Instrument;
use crate::view::View;

#[derive(Debug, Deserialize)]
pub(super) struct WsQuery {
    since: Option<u64>,
    /// Comma-separated: the subscription from the first frame on, so a
    /// `since` replay is filtered too.
    topics: Option<String>,
    instruments: Option<String>,
}

fn split(list: &Option<String>) -> Vec<String> {
    list.iter().flat_map(|l| l.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

pub(super) async fn handler(State(shared): State<Arc<Shared>>, Query(q): Query<WsQuery>, mut req: Request) -> Response {
    let mut filter = Filter::default();
    if let Err(message) = filter.set(&split(&q.topics), &split(&q.instruments)) {
        return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    }
    let (accept, on_upgrade) = match handshake(&mut req) {
        Ok(h) => h,
        Err(refusal) => return refusal.into_response(),
    };
    let permit = shared.clients.clone().try_acquire_owned();
    let max = shared.opts.max_frame;
    // A small read buffer: tungstenite zeroes it before every read, that is
    // on every wake-up of the client's task, and client frames are small
    // (a 64 KiB one still arrives, in several reads).
    let config = WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max)).read_buffer_size(512);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "a WebSocket upgrade did not complete");
                return;
            }
        };
        let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        match permit {
            Ok(permit) => {
                shared.metrics.client_connected();
                client(socket, &shared, q.since, filter).await;
                shared.metrics.client_disconnected();
                drop(permit);
            }
            Err(_) => {
                let reason = format!("server full: {} clients connected; try again later", shared.opts.max_clients);
                close(&mut socket, &mut Vec::new(), false, wire::AGAIN, &reason).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response())
}

/// Why a request to `/ws` is not taken over.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    NotWebSocket,
    Version,
    NoKey,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NotWebSocket => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "/ws is a WebSocket endpoint: connect with a WebSocket client, e.g. `pipwatch tail ws://HOST:PORT/ws`\n",
            )
                .into_response(),
            Refusal::Version => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "only WebSocket version 13 (RFC 6455) is spoken here\n",
            )
                .into_response(),
            Refusal::NoKey => (StatusCode::BAD_REQUEST, "the WebSocket request has no Sec-WebSocket-Key\n").into_response(),
        }
    }
}

/// The server's side of the opening handshake (RFC 6455 §4.2.1): the
/// `Sec-WebSocket-Accept` value and the connection to take over once the
/// 101 has gone out.
fn handshake(req: &mut Request) -> Result<(String, hyper::upgrade::OnUpgrade), Refusal> {
    let headers = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(Refusal::NotWebSocket);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(Refusal::Version);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(Refusal::NoKey)?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    // Absent when the connection cannot be upgraded (not HTTP/1.1).
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>().ok_or(Refusal::NotWebSocket)?;
    Ok((accept, on_upgrade))
}

/// A topic as a bit of [`Filter::topics`]: its position in [`TOPICS`].
pub(super) fn topic_bit(name: &str) -> Option<u16> {
    TOPICS.iter().position(|t| *t == name).map(|i| 1 << i)
}

/// What one client wants to see. Checked for every event and every client,
/// so topics are a bit set rather than a set of strings.
#[derive(Default)]
struct Filter {
    /// 0: every topic.
    topics: u16,
    instruments: Option<HashSet<Instrument>>,
}

impl Filter {
    /// Replaces the subscription; empty lists mean everything.
    fn set(&mut self, topics: &[String], instruments: &[String]) -> Result<(), String> {
        let mut t = 0;
        for name in topics {
            match topic_bit(name) {
                Some(bit) => t |= bit,
                None => return Err(format!("unknown topic '{name}': topics are {}", TOPICS.join(", "))),
            }
        }
        let mut set = HashSet::new();
        for name in instruments {
            set.insert(Instrument::new(name).map_err(|e| e.to_string())?);
        }
        self.topics = t;
        self.instruments = (!set.is_empty()).then_some(set);
        Ok(())
    }

    fn passes(&self, topic: u16, instrument: Option<Instrument>) -> bool {
        (self.topics == 0 || self.topics & topic != 0)
            && match (&self.instruments, instrument) {
                (Some(set), Some(i)) => set.contains(&i),
                _ => true,
            }
    }
}

fn put_frame(out: &mut Vec<u8>, frame: &Frame) {
    wire::put(out, wire::TEXT, frame.to_json().as_bytes());
}

fn put_snapshot(out: &mut Vec<u8>, view: &View) {
    wire::put(out, wire::TEXT, &protocol::snapshot_json(view));
}

/// `lagged`, then the hub's view: returns its seq, the new `after`.
fn put_resync(out: &mut Vec<u8>, missed: u64, message: Option<String>, view: &View) -> u64 {
    put_frame(out, &Frame::Lagged { missed, message });
    put_snapshot(out, view);
    view.seq
}

/// The first frames of a connection (into `out`), its subscription, and the
/// seq it then holds (see the module's NOTE).
fn opening(
    shared: &Shared,
    since: Option<u64>,
    filter: &Filter,
    out: &mut Vec<u8>,
) -> (broadcast::Receiver<Arc<Out>>, u64) {
    let history = shared.history();
    let rx = shared.tx.subscribe();
    let Some(s) = since else {
        // Subscribed first: every frame after the snapshot's seq is still to come.
        let view = shared.hub.snapshot();
        put_snapshot(out, &view);
        return (rx, view.seq);
    };
    // The seq before this instance's first event.
    let start = shared.hub.start();
    // A seq from before a restart: the client has everything of the last
    // instance that it could have, and all of this one is new to it. It is
    // sent the view this instance began from (which drops whatever of the
    // last instance this one did not keep: its alerts, say), then every
    // event of this one.
    let (asked, restarted) = (s, s < start);
    let s = s.max(start);
    let seq_of = |o: &Out| match o {
        Out::Event { seq, .. } => Some(*seq),
        Out::Resync { .. } | Out::Ping | Out::Stop => None,
    };
    let oldest = history.frames.front().and_then(|o| seq_of(o));
    let newest = history.frames.back().and_then(|o| seq_of(o));
    // Framed so far (the hub may be further on: those frames are still to come).
    let current = newest.unwrap_or(start);
    let covered = match oldest {
        Some(oldest) => s + 1 >= oldest,
        None => s >= current,
    };
    let base = history.base.as_ref().filter(|b| b.seq == start);
    if covered && s <= current && (!restarted || base.is_some()) {
        if let Some(base) = base.filter(|_| restarted) {
            put_snapshot(out, base);
        }
        let mut after = s;
        for o in history.frames.iter() {
            if let Out::Event { seq, frame, topic, instrument } = &**o
                && *seq > s
            {
                if filter.passes(*topic, *instrument) {
                    out.extend_from_slice(frame);
                }
                after = *seq;
            }
        }
        (rx, after)
    } else {
        let missed = oldest.map_or(0, |o| o.saturating_sub(s + 1));
        let message = format!("seq {asked} is not in the server's history; a fresh snapshot follows");
        let after = put_resync(out, missed, Some(message), &shared.hub.snapshot());
        (rx, after)
    }
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Writes `out` (whole frames) to the client and empties it; `false` if the
/// client is gone. `owed`: tungstenite holds a frame of its own (the pong to
/// a client's ping), which goes first so that frames never interleave.
///
/// A client that stops reading fills its socket; it is dropped after
/// `patience` rather than held forever. Most bursts fit the socket at once,
/// and those need no timer (one per burst per client showed in the profile).
async fn send(ws: &mut Socket, out: &mut Vec<u8>, owed: bool, patience: Duration) -> bool {
    let sent = {
        let burst = async {
            if owed {
                ws.flush().await.map_err(std::io::Error::other)?;
            }
            ws.get_mut().write_all(out).await
        };
        let mut burst = std::pin::pin!(burst);
        match burst.as_mut().now_or_never() {
            Some(r) => r.is_ok(),
            None => matches!(tokio::time::timeout(patience, burst).await, Ok(Ok(()))),
        }
    };
    out.clear();
    // One large snapshot should not pin its buffer for the connection's life.
    if out.capacity() > 256 * 1024 {
        *out = Vec::with_capacity(16 * 1024);
    }
    sent
}

/// Sends what is queued, then the close frame. At a stop, what is queued
/// are the last events of the run, in the same burst as the `Stop`: a
/// follower that resumes on the next instance would never see them (its
/// `since` is past this instance). A stuck client holds it up for a second.
async fn close(ws: &mut Socket, out: &mut Vec<u8>, owed: bool, code: u16, reason: &str) {
    wire::close(out, code, reason);
    send(ws, out, owed, Duration::from_secs(1)).await;
}

/// How a client's burst ends, if it is the last.
type Closing = Option<(u16, String)>;

/// Adds one queued item to the client's burst; `Some` if the connection
/// is to close with it.
fn take(
    shared: &Shared,
    filter: &Filter,
    after: &mut u64,
    out: &mut Vec<u8>,
    heard: tokio::time::Instant,
    r: Result<Arc<Out>, broadcast::error::RecvError>,
) -> Result<Closing, ()> {
    match r {
        Ok(o) => match &*o {
            Out::Event { seq, topic, instrument, frame } => {
                // Already in the snapshot this client was sent.
                if *seq > *after {
                    *after = *seq;
                    if filter.passes(*topic, *instrument) {
                        out.extend_from_slice(frame);
                    }
                }
            }
            Out::Resync { missed, view } => *after = put_resync(out, *missed, None, view),
            Out::Ping if heard.elapsed() > shared.opts.idle_timeout => {
                return Ok(Some((wire::POLICY, "no answer to pings".into())));
            }
            Out::Ping => wire::put(out, wire::PING, b""),
            Out::Stop => return Ok(Some((wire::AWAY, "pipwatch is stopping".into()))),
        },
        // This client fell behind its own buffer.
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            *after = put_resync(out, missed, None, &shared.hub.snapshot());
        }
        Err(broadcast::error::RecvError::Closed) => return Err(()),
    }
    Ok(None)
}

async fn client(mut ws: Socket, shared: &Shared, since: Option<u64>, mut filter: Filter) {
    let hello = Frame::Hello(Hello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").to_string(),
        source: shared.opts.source.clone(),
        commands: shared.control.active(),
        topics: TOPICS.iter().map(|t| t.to_string()).collect(),
    });
    let mut out = Vec::with_capacity(16 * 1024);
    put_frame(&mut out, &hello);
    let (mut rx, mut after) = opening(shared, since, &filter, &mut out);
    let idle = shared.opts.idle_timeout;
    if !send(&mut ws, &mut out, false, idle).await {
        return;
    }
    // A client that subscribed after the framing task's `Stop` went out is told here.
    if shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
        return close(&mut ws, &mut out, false, wire::AWAY, "pipwatch is stopping").await;
    }
    let mut heard = tokio::time::Instant::now();
    let mut owed = false;
    // The reason for closing, if this burst is the last.
    let mut last: Closing = None;
    loop {
        tokio::select! {
            r = rx.recv() => {
                // Let the other clients' tasks run first: whatever arrives
                // meanwhile joins this burst, one write for all of it.
                tokio::task::yield_now().await;
                let mut next = Some(r);
                let mut items = 0;
                // Everything already waiting goes in one burst with one write.
                while let Some(r) = next.take() {
                    match take(shared, &filter, &mut after, &mut out, heard, r) {
                        Ok(None) => {}
                        Ok(closing) => {
                            last = closing;
                            break;
                        }
                        Err(()) => return,
                    }
                    items += 1;
                    if items < 512 {
                        next = match rx.try_recv() {
                            Ok(o) => Some(Ok(o)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(broadcast::error::RecvError::Lagged(n))),
                            Err(_) => None,
                        };
                    }
                }
            }
            frame = ws.next() => {
                heard = tokio::time::Instant::now();
                match frame {
                    Some(Ok(Message::Text(t))) => put_frame(&mut out, &answer(shared, &mut filter, &t)),
                    Some(Ok(Message::Binary(_))) => {
                        put_frame(&mut out, &Frame::error("binary frames are not understood: send JSON text frames"));
                    }
                    // tungstenite has queued the pong.
                    Some(Ok(Message::Ping(_))) => owed = true,
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite has queued the closing reply.
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                        return;
                    }
                    None => return,
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        last = Some((wire::SIZE, format!("frame too large: at most {} bytes", shared.opts.max_frame)));
                        // What tungstenite holds would not be sent after its error.
                        owed = false;
                    }
                    Some(Err(_)) => return,
                }
            }
        }
        if let Some((code, reason)) = last {
            return close(&mut ws, &mut out, owed, code, &reason).await;
        }
        if out.is_empty() {
            continue;
        }
        if !send(&mut ws, &mut out, std::mem::take(&mut owed), idle).await {
            return;
        }
    }
}

/// The reply to one client frame. A bad frame gets an `error` and the
/// connection stays.
fn answer(shared: &Shared, filter: &mut Filter, raw: &str) -> Frame {
    let frame: ClientFrame = match serde_json::from_str(raw) {
        Ok(f) => f,
        Err(e) => {
            return Frame::error(format!(
                "not understood ({e}); send e.g. {{\"op\":\"subscribe\",\"topics\":[\"signal\"]}} or {{\"op\":\"ping\"}}"
            ));
        }
    };
    let command = match frame {
        ClientFrame::Ping => return Frame::Pong,
        ClientFrame::Subscribe { topics, instruments } => {
            return match filter.set(&topics, &instruments) {
                Ok(()) => Frame::Subscribed { topics, instruments },
                Err(message) => Frame::error(message),
            };
        }
        ClientFrame::Pause => Command::Pause,
        ClientFrame::Resume => Command::Resume,
        ClientFrame::Ack { alert } => Command::Ack { alert },
        ClientFrame::Reload => Command::Reload,
        ClientFrame::Dead { action, route, ids, all, json } => {
            let filter = crate::dead::DeadFilter { route, ids };
            return match shared.control.dead(action, &filter, all, json) {
                Ok(message) => Frame::Ok { op: "dead".into(), alert: None, message: Some(message) },
                Err(e) => Frame::error(e.to_string()),
            };
        }
    };
    match shared.control.apply(&command) {
        Ok(()) => {
            let alert = match &command {
                Command::Ack { alert } => Some(alert.clone()),
                _ => None,
            };
            Frame::Ok { op: command.op().to_string(), alert, message: None }
        }
        Err(e) => Frame::error(e.to_string()),
    }
}

//! The local server: `/ws` (the event stream), `/health`, `/metrics` on one
//! port (axum; its WebSocket is tokio-tungstenite).
//!
//! One task folds the hub's events into the view and a bounded history, and
//! re-broadcasts each event already serialised, under the same lock. A
//! client's snapshot (or `since` replay) and its subscription are therefore
//! taken at one point: it misses nothing and sees nothing twice. Each client
//! then has its own task and its own bounded buffer (a broadcast receiver),
//! so a slow client only ever lags itself.
//!
//! axum routes and serves the port, but the WebSocket handshake is done here
//! and the connection kept as a tokio-tungstenite stream: tungstenite reads
//! the clients' frames, and the server's frames are written to the socket as
//! bytes ([`wire`]). An event is then framed once for all its clients, and a
//! client's burst is one copy and one write; through tungstenite, each frame
//! was encoded again for each client, which at 1,000 clients was a tenth of
//! the machine.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, broadcast};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::event::{AlertState, Event};
use crate::health::{self, Status};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::notify::NotifierHandle;
use crate::time::Ts;
use crate::types::Instrument;
use crate::view::View;

/// The protocol version in `hello`.
pub const PROTOCOL: u32 = 1;
pub const TOPICS: [&str; 9] = ["candle", "signal", "quote", "rejected", "feed", "alert", "delivery", "queue", "health"];

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source}. Is another pipwatch running? Set server.listen (e.g. PIPWATCH_SERVER__LISTEN='\"127.0.0.1:8788\"') or use --no-server"
    )]
    Bind { addr: String, source: std::io::Error },
    #[error("server.listen '{0}' is not an address (IP:PORT)")]
    Address(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    pub token: Option<String>,
    pub max_clients: usize,
    /// Events kept for `?since=`.
    pub history: usize,
    /// Events a client may fall behind before it is told it lagged.
    pub client_buffer: usize,
    /// The largest frame a client may send.
    pub max_frame: usize,
    pub ping_every: Duration,
    /// A client that neither answers pings nor reads for this long is dropped.
    pub idle_timeout: Duration,
    /// The market source's name, for `hello`.
    pub source: String,
}

impl Options {
    pub fn from_config(c: &crate::config::Config) -> Options {
        let token = c.server.token.expose();
        Options {
            listen: c.server.listen.clone(),
            token: (!token.is_empty()).then(|| token.to_string()),
            max_clients: c.server.max_clients,
            history: c.server.history,
            client_buffer: 1024,
            max_frame: 64 * 1024,
            ping_every: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            source: c.market.source.to_string(),
        }
    }
}

/// An event ready to send: serialised once for every client.
#[derive(Debug)]
enum Out {
    Event {
        seq: u64,
        /// The topic's bit (see [`topic_bit`]).
        topic: u16,
        instrument: Option<Instrument>,
        /// The whole WebSocket frame, header and JSON.
        frame: Box<[u8]>,
    },
    /// The fold itself fell behind the hub: every client needs a fresh snapshot.
    Resync { missed: u64 },
    /// Time to ping: one timer for all clients, not one polled by each
    /// client's task on every wake-up.
    Ping,
    /// The server is stopping: the last thing each client is sent.
    Stop,
}

struct Folded {
    view: View,
    history: VecDeque<Arc<Out>>,
}

struct Shared {
    opts: Options,
    folded: Mutex<Folded>,
    tx: broadcast::Sender<Arc<Out>>,
    clients: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    notifier: Option<NotifierHandle>,
    hub: Arc<Hub>,
    /// Set just before the fold sends `Stop`: a client that subscribes
    /// after that sees this instead.
    stopped: std::sync::atomic::AtomicBool,
}

pub struct Handle {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

fn topic(e: &Event) -> (&'static str, Option<Instrument>) {
    match e {
        Event::Candle(c) => ("candle", Some(c.instrument)),
        Event::Signal(s) => ("signal", Some(s.instrument)),
        Event::Quote(q) => ("quote", Some(q.instrument)),
        Event::Rejected(r) => ("rejected", Some(r.instrument)),
        Event::Feed(_) => ("feed", None),
        Event::Alert(_) => ("alert", None),
        Event::Delivery(_) => ("delivery", None),
        Event::Queue(_) => ("queue", None),
        Event::Health(_) => ("health", None),
    }
}

/// Binds and serves until `shutdown`. The hub is subscribed before this
/// returns, so no event published afterwards is missed.
pub async fn start(
    opts: Options,
    hub: Arc<Hub>,
    notifier: Option<NotifierHandle>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Handle, ServerError> {
    let addr: SocketAddr = opts.listen.parse().map_err(|_| ServerError::Address(opts.listen.clone()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr: opts.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: opts.listen.clone(), source })?;
    let (tx, _) = broadcast::channel(opts.client_buffer.max(16));
    let shared = Arc::new(Shared {
        clients: Arc::new(Semaphore::new(opts.max_clients)),
        // A snapshot before any event is as of the seq before this instance's first.
        folded: Mutex::new(Folded { view: View::default(), history: VecDeque::with_capacity(opts.history) }),
        opts,
        tx,
        metrics,
        notifier,
        hub: hub.clone(),
        stopped: Default::default(),
    });
    let (view, rx) = hub.subscribe_with_view();
    shared.folded.lock().unwrap_or_else(|p| p.into_inner()).view = view;
    let fold = tokio::spawn(fold_task(shared.clone(), rx, shutdown.clone()));
    let app = axum::Router::new()
        .route("/ws", get(ws_handler))
        .route("/health", get(health_handler))
        .route("/metrics", get(metrics_handler))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        // Small frames must not wait for Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the server stopped");
        }
        // The fold tells the clients to close as it stops.
        let _ = fold.await;
    });
    tracing::info!(%addr, "server listening: /ws, /health, /metrics");
    Ok(Handle { addr, task })
}

async fn fold_task(shared: Arc<Shared>, mut rx: crate::hub::Subscription, shutdown: CancellationToken) {
    let mut ping = tokio::time::interval(shared.opts.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        let env = tokio::select! {
            r = rx.recv() => r,
            _ = ping.tick() => {
                let _ = shared.tx.send(Arc::new(Out::Ping));
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        match env {
            Some(crate::hub::Received::Event(env)) => {
                let (topic, instrument) = topic(&env.event);
                let json = match serde_json::to_vec(&*env) {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::error!(error = %e, "an event could not be serialised");
                        continue;
                    }
                };
                let mut frame = Vec::with_capacity(json.len() + 10);
                wire::put(&mut frame, wire::TEXT, &json);
                let topic = topic_bit(topic).unwrap_or_default();
                let out = Arc::new(Out::Event { seq: env.seq, topic, instrument, frame: frame.into() });
                let mut f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                f.view.apply(&env);
                if f.history.len() == shared.opts.history {
                    f.history.pop_front();
                }
                f.history.push_back(out.clone());
                // Under the lock: a client subscribing now sees this exactly once.
                let _ = shared.tx.send(out);
            }
            Some(crate::hub::Received::Resync { missed, view }) => {
                tracing::warn!(missed, "the server's view fell behind the engine; clients get a fresh snapshot");
                let mut f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                f.view = *view;
                let _ = shared.tx.send(Arc::new(Out::Resync { missed }));
                drop(f);
            }
            None => break,
        }
    }
    // However the fold ends, the clients are told; nothing more will come.
    shared.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = shared.tx.send(Arc::new(Out::Stop));
}

fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    let query = query?;
    url_pairs(query).find(|(k, _)| k == "token").map(|(_, v)| v)
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(want) = &shared.opts.token {
        let given = token_of(req.headers(), req.uri().query()).unwrap_or_default();
        // Constant time, so the comparison does not leak how much matched.
        let ok: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), want.as_bytes()).into();
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a token is required: send `Authorization: Bearer TOKEN` or `?token=TOKEN`\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn health_handler(State(shared): State<Arc<Shared>>) -> Response {
    let report = {
        let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
        health::evaluate(&f.view)
    };
    let code = if report.status == Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, axum::Json(report)).into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        shared.metrics.render(Ts::now()),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    since: Option<u64>,
    /// Comma-separated: the subscription from the first frame on, so a
    /// `since` replay is filtered too.
    topics: Option<String>,
    instruments: Option<String>,
}

fn split(list: &Option<String>) -> Vec<String> {
    list.iter().flat_map(|l| l.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

async fn ws_handler(State(shared): State<Arc<Shared>>, Query(q): Query<WsQuery>, mut req: Request) -> Response {
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

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Subscribe {
        #[serde(default)]
        topics: Vec<String>,
        #[serde(default)]
        instruments: Vec<String>,
    },
    Ping,
    Pause,
    Resume,
    Ack {
        alert: String,
    },
}

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    view: &'a View,
}

/// A topic as a bit of [`Filter::topics`]: its position in [`TOPICS`].
fn topic_bit(name: &str) -> Option<u16> {
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

/// The server's frames as bytes (RFC 6455 §5.2): final, unmasked, as a
/// server sends them. Public for the fan-out bench, whose bare writer sends
/// the same bytes.
pub mod wire {
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;

    // Close codes (RFC 6455 §7.4.1).
    pub const AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const SIZE: u16 = 1009;
    pub const AGAIN: u16 = 1013;

    /// Appends one frame to `out`.
    pub fn put(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n => match u16::try_from(n) {
                Ok(n) => {
                    out.push(126);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Err(_) => {
                    out.push(127);
                    out.extend_from_slice(&(n as u64).to_be_bytes());
                }
            },
        }
        out.extend_from_slice(payload);
    }

    /// A close frame. A control frame carries at most 125 bytes: the code
    /// and 123 of the reason, cut at a character boundary.
    pub fn close(out: &mut Vec<u8>, code: u16, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        put(out, CLOSE, &payload);
    }
}

fn put_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    wire::put(out, wire::TEXT, v.to_string().as_bytes());
}

fn put_snapshot(out: &mut Vec<u8>, view: &View) {
    let s = serde_json::to_vec(&Snapshot { kind: "snapshot", view }).unwrap_or_default();
    wire::put(out, wire::TEXT, &s);
}

/// The first frames of a connection (into `out`) and its subscription,
/// taken at one point.
fn opening(shared: &Shared, since: Option<u64>, filter: &Filter, out: &mut Vec<u8>) -> broadcast::Receiver<Arc<Out>> {
    let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
    let rx = shared.tx.subscribe();
    // The seq before this instance's first event, and its last one so far.
    let start = shared.hub.start();
    let current = f.view.seq;
    match since {
        None => put_snapshot(out, &f.view),
        Some(s) => {
            // A seq from before a restart: the client has everything of the
            // last instance that it could have, and all of this one is new
            // to it. The snapshot after the replay then drops whatever of the
            // last instance this one did not keep (its alerts, say).
            let (asked, restarted) = (s, s < start);
            let s = s.max(start);
            let oldest = f.history.front().and_then(|o| match &**o {
                Out::Event { seq, .. } => Some(*seq),
                Out::Resync { .. } | Out::Ping | Out::Stop => None,
            });
            let covered = match oldest {
                Some(oldest) => s + 1 >= oldest,
                None => s >= current,
            };
            if covered && s <= current {
                for o in &f.history {
                    if let Out::Event { seq, frame, topic, instrument } = &**o
                        && *seq > s
                        && filter.passes(*topic, *instrument)
                    {
                        out.extend_from_slice(frame);
                    }
                }
                if restarted {
                    put_snapshot(out, &f.view);
                }
            } else {
                let missed = oldest.map_or(0, |o| o.saturating_sub(s + 1));
                put_json(
                    out,
                    &json!({"type": "lagged", "missed": missed,
                    "message": format!("seq {asked} is not in the server's history; a fresh snapshot follows")}),
                );
                put_snapshot(out, &f.view);
            }
        }
    }
    rx
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

/// Sends only the close frame: a client being dropped gets nothing more.
async fn close(ws: &mut Socket, out: &mut Vec<u8>, owed: bool, code: u16, reason: &str) {
    out.clear();
    wire::close(out, code, reason);
    send(ws, out, owed, Duration::from_secs(1)).await;
}

async fn client(mut ws: Socket, shared: &Shared, since: Option<u64>, mut filter: Filter) {
    let hello = json!({
        "type": "hello",
        "protocol": PROTOCOL,
        "version": env!("CARGO_PKG_VERSION"),
        "source": shared.opts.source,
        "commands": shared.notifier.is_some(),
        "topics": TOPICS,
    });
    let mut out = Vec::with_capacity(16 * 1024);
    put_json(&mut out, &hello);
    let mut rx = opening(shared, since, &filter, &mut out);
    let idle = shared.opts.idle_timeout;
    if !send(&mut ws, &mut out, false, idle).await {
        return;
    }
    // A client that subscribed after the fold's `Stop` went out is told here.
    if shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
        return close(&mut ws, &mut out, false, wire::AWAY, "pipwatch is stopping").await;
    }
    let mut heard = tokio::time::Instant::now();
    let mut owed = false;
    // The reason for closing, if this burst is the last.
    let mut last: Option<(u16, String)> = None;
    loop {
        tokio::select! {
            r = rx.recv() => {
                // Let the other clients' tasks run first: whatever arrives
                // meanwhile joins this burst, one write for all of it.
                tokio::task::yield_now().await;
                let mut next = Some(r);
                let mut frames = 0;
                // Everything already waiting goes in one burst with one write.
                while let Some(r) = next.take() {
                    match r {
                        Ok(o) => match &*o {
                            Out::Event { topic, instrument, frame, .. } => {
                                if filter.passes(*topic, *instrument) {
                                    out.extend_from_slice(frame);
                                    frames += 1;
                                }
                            }
                            Out::Resync { missed } => {
                                put_json(&mut out, &json!({"type": "lagged", "missed": missed}));
                                let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                                put_snapshot(&mut out, &f.view);
                            }
                            Out::Ping if heard.elapsed() > idle => {
                                last = Some((wire::POLICY, "no answer to pings".into()));
                                break;
                            }
                            Out::Ping => wire::put(&mut out, wire::PING, b""),
                            Out::Stop => {
                                last = Some((wire::AWAY, "pipwatch is stopping".into()));
                                break;
                            }
                        },
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            put_json(&mut out, &json!({"type": "lagged", "missed": missed}));
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    if frames < 512 {
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
                    Some(Ok(Message::Text(t))) => put_json(&mut out, &answer(shared, &mut filter, &t)),
                    Some(Ok(Message::Binary(_))) => put_json(&mut out, &json!({"type": "error",
                        "message": "binary frames are not understood: send JSON text frames"})),
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
fn answer(shared: &Shared, filter: &mut Filter, raw: &str) -> serde_json::Value {
    let error = |message: String| json!({"type": "error", "message": message});
    let frame: ClientFrame = match serde_json::from_str(raw) {
        Ok(f) => f,
        Err(e) => {
            return error(format!(
                "not understood ({e}); send e.g. {{\"op\":\"subscribe\",\"topics\":[\"signal\"]}} or {{\"op\":\"ping\"}}"
            ));
        }
    };
    match frame {
        ClientFrame::Ping => json!({"type": "pong"}),
        ClientFrame::Subscribe { topics, instruments } => match filter.set(&topics, &instruments) {
            Ok(()) => json!({"type": "subscribed", "topics": topics, "instruments": instruments}),
            Err(message) => error(message),
        },
        ClientFrame::Pause | ClientFrame::Resume => {
            let pause = matches!(frame, ClientFrame::Pause);
            match &shared.notifier {
                Some(n) => {
                    n.set_paused(pause);
                    json!({"type": "ok", "op": if pause { "pause" } else { "resume" }})
                }
                None => error("this instance has no notifier to pause".into()),
            }
        }
        ClientFrame::Ack { alert } => {
            let found = {
                let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                f.view.alert(&alert).cloned()
            };
            match found {
                Some(mut a) => {
                    a.state = AlertState::Acknowledged;
                    shared.hub.publish(Event::Alert(a));
                    json!({"type": "ok", "op": "ack", "alert": alert})
                }
                None => error(format!("no active alert '{alert}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    /// Our frames against tungstenite's own encoder, across the three
    /// length encodings and their edges.
    #[test]
    fn frames_are_encoded_as_tungstenite_encodes_them() {
        for len in [0usize, 1, 125, 126, 127, 300, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut ours = Vec::new();
            wire::put(&mut ours, wire::TEXT, &payload);
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Text), true).format(&mut theirs).expect("format");
            assert_eq!(ours, theirs, "a {len}-byte text frame");
        }
    }

    #[test]
    fn a_close_reason_is_cut_to_fit_a_control_frame_at_a_character_boundary() {
        // 'é' is two bytes: 61 of them are 122 bytes, the 62nd would end at 124.
        let reason = "é".repeat(80);
        let mut out = Vec::new();
        wire::close(&mut out, wire::AGAIN, &reason);
        assert_eq!(out[0], 0x88, "a final close frame");
        let len = usize::from(out[1]);
        assert!(len <= 125, "control frames carry at most 125 bytes, got {len}");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 1013);
        let text = std::str::from_utf8(&out[4..]).expect("the reason stays UTF-8");
        assert_eq!(text, "é".repeat(61));
        assert_eq!(out.len(), 2 + len);
    }
}

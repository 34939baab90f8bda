//! The local server: `/ws` (the event stream), `/health`, `/metrics` on one
//! port (axum; its WebSocket is tokio-tungstenite).
//!
//! One task folds the hub's events into the view and a bounded history, and
//! re-broadcasts each event already serialised, under the same lock. A
//! client's snapshot (or `since` replay) and its subscription are therefore
//! taken at one point: it misses nothing and sees nothing twice. Each client
//! then has its own task and its own bounded buffer (a broadcast receiver),
//! so a slow client only ever lags itself.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::event::{AlertState, Envelope, Event, Hub};
use crate::health::{self, Status};
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
        text: Utf8Bytes,
    },
    /// The fold itself fell behind the hub: every client needs a fresh snapshot.
    Resync { missed: u64 },
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
    shutdown: CancellationToken,
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
        folded: Mutex::new(Folded { view: View::default(), history: VecDeque::with_capacity(opts.history) }),
        opts,
        tx,
        metrics,
        notifier,
        hub: hub.clone(),
        shutdown: shutdown.clone(),
    });
    let fold = tokio::spawn(fold_task(shared.clone(), hub.subscribe(), shutdown.clone()));
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
        fold.abort();
    });
    tracing::info!(%addr, "server listening: /ws, /health, /metrics");
    Ok(Handle { addr, task })
}

async fn fold_task(shared: Arc<Shared>, mut rx: broadcast::Receiver<Arc<Envelope>>, shutdown: CancellationToken) {
    loop {
        let env = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.cancelled() => return,
        };
        match env {
            Ok(env) => {
                shared.metrics.observe(&env.event);
                let (topic, instrument) = topic(&env.event);
                let text = match serde_json::to_string(&*env) {
                    Ok(t) => Utf8Bytes::from(t),
                    Err(e) => {
                        tracing::error!(error = %e, "an event could not be serialised");
                        continue;
                    }
                };
                let topic = topic_bit(topic).unwrap_or_default();
                let out = Arc::new(Out::Event { seq: env.seq, topic, instrument, text });
                let mut f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                f.view.apply(&env);
                if f.history.len() == shared.opts.history {
                    f.history.pop_front();
                }
                f.history.push_back(out.clone());
                // Under the lock: a client subscribing now sees this exactly once.
                let _ = shared.tx.send(out);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "the server's view fell behind the engine; clients get a fresh snapshot");
                let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                let _ = shared.tx.send(Arc::new(Out::Resync { missed }));
                drop(f);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
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

async fn ws_handler(State(shared): State<Arc<Shared>>, Query(q): Query<WsQuery>, ws: WebSocketUpgrade) -> Response {
    let mut filter = Filter::default();
    if let Err(message) = filter.set(&split(&q.topics), &split(&q.instruments)) {
        return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    }
    let permit = shared.clients.clone().try_acquire_owned();
    let max = shared.opts.max_frame;
    // A small read buffer: tungstenite zeroes it before each read, and
    // client frames are small (64 KiB ones still arrive in several reads).
    ws.max_message_size(max).max_frame_size(max).read_buffer_size(4096).on_upgrade(move |mut socket| async move {
        match permit {
            Ok(permit) => {
                shared.metrics.client_connected();
                client(socket, &shared, q.since, filter).await;
                shared.metrics.client_disconnected();
                drop(permit);
            }
            Err(_) => {
                let reason = format!("server full: {} clients connected; try again later", shared.opts.max_clients);
                let frame = CloseFrame { code: close_code::AGAIN, reason: reason.into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
            }
        }
    })
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

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

fn snapshot(view: &View) -> Message {
    let s = serde_json::to_string(&Snapshot { kind: "snapshot", view }).unwrap_or_default();
    Message::Text(s.into())
}

/// The first frames of a connection and its subscription, taken at one point.
fn opening(shared: &Shared, since: Option<u64>, filter: &Filter) -> (Vec<Message>, broadcast::Receiver<Arc<Out>>) {
    let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
    let rx = shared.tx.subscribe();
    let mut first = Vec::new();
    match since {
        None => first.push(snapshot(&f.view)),
        Some(s) => {
            let oldest = f.history.front().and_then(|o| match &**o {
                Out::Event { seq, .. } => Some(*seq),
                Out::Resync { .. } => None,
            });
            let covered = match oldest {
                Some(oldest) => s + 1 >= oldest,
                None => s >= f.view.seq,
            };
            if covered && s <= f.view.seq {
                for o in &f.history {
                    if let Out::Event { seq, text, topic, instrument } = &**o
                        && *seq > s
                        && filter.passes(*topic, *instrument)
                    {
                        first.push(Message::Text(text.clone()));
                    }
                }
            } else {
                let missed = oldest.map_or(0, |o| o.saturating_sub(s + 1));
                first.push(text(json!({"type": "lagged", "missed": missed,
                    "message": format!("seq {s} is not in the server's history; a fresh snapshot follows")})));
                first.push(snapshot(&f.view));
            }
        }
    }
    (first, rx)
}

async fn client(mut ws: WebSocket, shared: &Shared, since: Option<u64>, mut filter: Filter) {
    // Not split into halves: the halves share a lock taken on every frame,
    // and this task never reads and writes at once anyway.
    let hello = json!({
        "type": "hello",
        "protocol": PROTOCOL,
        "version": env!("CARGO_PKG_VERSION"),
        "source": shared.opts.source,
        "commands": shared.notifier.is_some(),
        "topics": TOPICS,
    });
    let (first, mut rx) = opening(shared, since, &filter);
    let idle = shared.opts.idle_timeout;
    let mut ok = ws.feed(text(hello)).await.is_ok();
    for m in first {
        ok = ok && ws.feed(m).await.is_ok();
    }
    ok = ok && tokio::time::timeout(idle, ws.flush()).await.is_ok_and(|r| r.is_ok());
    if !ok {
        return;
    }
    let mut ping = tokio::time::interval(shared.opts.ping_every);
    ping.tick().await;
    // Made once: each one made registers with (and, dropped, leaves) the
    // token's waiter list, under a lock every client task shares.
    let stopping = shared.shutdown.cancelled();
    tokio::pin!(stopping);
    let mut heard = tokio::time::Instant::now();
    loop {
        let mut out: Vec<Message> = Vec::new();
        tokio::select! {
            r = rx.recv() => {
                // Let the other clients' tasks run first: whatever arrives
                // meanwhile joins this burst, one flush for all of it.
                tokio::task::yield_now().await;
                let mut next = Some(r);
                // Everything already waiting goes in one burst with one flush.
                while let Some(r) = next.take() {
                    match r {
                        Ok(o) => match &*o {
                            Out::Event { topic, instrument, text, .. } => {
                                if filter.passes(*topic, *instrument) {
                                    out.push(Message::Text(text.clone()));
                                }
                            }
                            Out::Resync { missed } => {
                                out.push(text(json!({"type": "lagged", "missed": missed})));
                                let f = shared.folded.lock().unwrap_or_else(|p| p.into_inner());
                                out.push(snapshot(&f.view));
                            }
                        },
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            out.push(text(json!({"type": "lagged", "missed": missed})));
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    if out.len() < 512 {
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
                    Some(Ok(Message::Text(t))) => out.push(answer(shared, &mut filter, &t)),
                    Some(Ok(Message::Binary(_))) => out.push(text(json!({"type": "error",
                        "message": "binary frames are not understood: send JSON text frames"}))),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(e)) => {
                        let too_big = matches!(
                            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
                            Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
                        ) || e.to_string().contains("too long");
                        if too_big {
                            let reason = format!("frame too large: at most {} bytes", shared.opts.max_frame);
                            let _ = ws.send(Message::Close(Some(CloseFrame { code: close_code::SIZE, reason: reason.into() }))).await;
                        }
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > idle {
                    let frame = CloseFrame { code: close_code::POLICY, reason: "no answer to pings".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
                    return;
                }
                out.push(Message::Ping(Default::default()));
            }
            _ = &mut stopping => {
                let frame = CloseFrame { code: close_code::AWAY, reason: "pipwatch is stopping".into() };
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
                return;
            }
        }
        if out.is_empty() {
            continue;
        }
        let burst = async {
            for m in out {
                ws.feed(m).await?;
            }
            ws.flush().await
        };
        // A client that stops reading fills its socket; it is dropped rather
        // than held forever. Most bursts fit the socket at once, and those
        // need no timer (one per burst per client showed in the profile).
        let mut burst = std::pin::pin!(burst);
        let sent = match burst.as_mut().now_or_never() {
            Some(r) => r.is_ok(),
            None => matches!(tokio::time::timeout(idle, burst).await, Ok(Ok(()))),
        };
        if !sent {
            return;
        }
    }
}

/// The reply to one client frame. A bad frame gets an `error` and the
/// connection stays.
fn answer(shared: &Shared, filter: &mut Filter, raw: &str) -> Message {
    let error = |message: String| text(json!({"type": "error", "message": message}));
    let frame: ClientFrame = match serde_json::from_str(raw) {
        Ok(f) => f,
        Err(e) => {
            return error(format!(
                "not understood ({e}); send e.g. {{\"op\":\"subscribe\",\"topics\":[\"signal\"]}} or {{\"op\":\"ping\"}}"
            ));
        }
    };
    match frame {
        ClientFrame::Ping => text(json!({"type": "pong"})),
        ClientFrame::Subscribe { topics, instruments } => match filter.set(&topics, &instruments) {
            Ok(()) => text(json!({"type": "subscribed", "topics": topics, "instruments": instruments})),
            Err(message) => error(message),
        },
        ClientFrame::Pause | ClientFrame::Resume => {
            let pause = matches!(frame, ClientFrame::Pause);
            match &shared.notifier {
                Some(n) => {
                    n.set_paused(pause);
                    text(json!({"type": "ok", "op": if pause { "pause" } else { "resume" }}))
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
                    text(json!({"type": "ok", "op": "ack", "alert": alert}))
                }
                None => error(format!("no active alert '{alert}'")),
            }
        }
    }
}

//! The local server: `/ws` (the event stream), `/health`, `/metrics` on one
//! port (axum; its WebSocket is tokio-tungstenite).
//!
//! The hub holds the one fold of events (see `crate::hub`): every snapshot
//! the server sends is the hub's. One task here frames each event once for
//! every client, keeps a bounded history of frames for `?since=`, and
//! re-broadcasts the frames, under the history's lock. Each client then has
//! its own task and its own bounded buffer (a broadcast receiver), so a slow
//! client only ever lags itself, and a lag is always followed by a fresh
//! snapshot (`ws.rs`).
//!
//! axum routes and serves the port, but the WebSocket handshake is done in
//! `ws.rs` and the connection kept as a tokio-tungstenite stream: tungstenite
//! reads the clients' frames, and the server's frames are written to the
//! socket as bytes ([`wire`]). An event is then framed once for all its
//! clients, and a client's burst is one copy and one write; through
//! tungstenite, each frame was encoded again for each client, which at 1,000
//! clients was a tenth of the machine.

pub mod wire;
mod ws;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::event::Event;
use crate::health::{self, Status};
use crate::hub::{Hub, Received, Subscription};
use crate::metrics::Metrics;
use crate::time::Ts;
use crate::types::Instrument;
use crate::view::View;

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

/// What the framing task hands the clients.
#[derive(Debug)]
enum Out {
    /// An event ready to send: serialised once for every client.
    Event {
        seq: u64,
        /// The topic's bit (see [`ws::topic_bit`]).
        topic: u16,
        instrument: Option<Instrument>,
        /// The whole WebSocket frame, header and JSON.
        frame: Box<[u8]>,
    },
    /// The framing task itself fell behind the hub: every client is sent
    /// `lagged` and this view, and the events after it.
    Resync { missed: u64, view: Arc<View> },
    /// Time to ping: one timer for all clients, not one polled by each
    /// client's task on every wake-up.
    Ping,
    /// The server is stopping: the last thing each client is sent.
    Stop,
}

/// The frames of the last events, for `?since=`.
struct History {
    /// Oldest first.
    frames: VecDeque<Arc<Out>>,
    /// The hub's view as of the seq before the first frame, for as long as
    /// that frame is kept: what a client resuming from the last instance
    /// is sent before this instance's events. The hub's current view would
    /// not do: it is ahead of what is framed, and the events between were
    /// then skipped as "in the snapshot", which a follower like `tail`,
    /// printing events, never saw.
    base: Option<Arc<View>>,
}

struct Shared {
    opts: Options,
    /// The lock is also held while a frame is broadcast, so that a client
    /// that reads the history and subscribes under it misses nothing and
    /// sees nothing twice.
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Out>>,
    clients: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    control: Control,
    hub: Arc<Hub>,
    /// Set just before the framing task sends `Stop`: a client that
    /// subscribes after that sees this instead.
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
        Event::Outcome(t) => ("outcome", Some(t.instrument)),
    }
}

/// Binds and serves until `shutdown`. The hub is subscribed before this
/// returns, so no event published afterwards is missed. `control` carries
/// out the clients' commands (pause, resume, ack).
pub async fn start(
    opts: Options,
    hub: Arc<Hub>,
    control: Control,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Handle, ServerError> {
    let addr: SocketAddr = opts.listen.parse().map_err(|_| ServerError::Address(opts.listen.clone()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr: opts.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: opts.listen.clone(), source })?;
    let (tx, _) = broadcast::channel(opts.client_buffer.max(16));
    let (base, events) = hub.subscribe_with_view();
    let history = History { frames: VecDeque::with_capacity(opts.history), base: Some(Arc::new(base)) };
    let shared = Arc::new(Shared {
        clients: Arc::new(Semaphore::new(opts.max_clients)),
        history: Mutex::new(history),
        opts,
        tx,
        metrics,
        control,
        hub: hub.clone(),
        stopped: Default::default(),
    });
    let framing = tokio::spawn(frame_task(shared.clone(), events, shutdown.clone()));
    let (clients, max_clients) = (shared.clients.clone(), shared.opts.max_clients);
    let app = axum::Router::new()
        .route("/ws", get(ws::handler))
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
        // The framing task tells the clients to close as it stops.
        let _ = framing.await;
        // Each client writes what it was sent before the close: wait for
        // them (a while, not for a stuck one), or the process could end
        // with the last events of a run unwritten, and a follower resuming
        // on the next instance would never see them.
        let all = u32::try_from(max_clients).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), clients.acquire_many(all)).await;
    });
    tracing::info!(%addr, "server listening: /ws, /health, /metrics");
    Ok(Handle { addr, task })
}

impl Shared {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Frames each event once, keeps it in the history and hands it to every
/// client; pings on one timer for all.
async fn frame_task(shared: Arc<Shared>, mut rx: Subscription, shutdown: CancellationToken) {
    let mut ping = tokio::time::interval(shared.opts.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        let received = tokio::select! {
            // Events first: at a stop, the engine has ended, and every event
            // it published is framed before the clients are told to close.
            biased;
            r = rx.recv() => r,
            _ = ping.tick() => {
                let _ = shared.tx.send(Arc::new(Out::Ping));
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        match received {
            Some(Received::Event(env)) => {
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
                let topic = ws::topic_bit(topic).unwrap_or_default();
                let out = Arc::new(Out::Event { seq: env.seq, topic, instrument, frame: frame.into() });
                let mut history = shared.history();
                if history.frames.len() == shared.opts.history {
                    history.frames.pop_front();
                    history.base = None;
                }
                history.frames.push_back(out.clone());
                // Under the lock: a client subscribing now sees this exactly once.
                let _ = shared.tx.send(out);
            }
            Some(Received::Resync { missed, view }) => {
                tracing::warn!(missed, "the server fell behind the engine; clients get a fresh snapshot");
                let mut history = shared.history();
                // The history cannot replay across the gap: a `since` from
                // before it is answered with `lagged` and a snapshot.
                history.frames.clear();
                history.base = None;
                let _ = shared.tx.send(Arc::new(Out::Resync { missed, view: Arc::from(view) }));
            }
            None => break,
        }
    }
    // However the framing ends, the clients are told; nothing more will come.
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
    let report = shared.hub.read(health::evaluate);
    let code = if report.status == Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, axum::Json(report)).into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    // The status as /health would answer now, so the two never disagree.
    shared.metrics.set_health(shared.hub.read(health::evaluate).status.as_str());
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        shared.metrics.render(Ts::now()),
    )
        .into_response()
}

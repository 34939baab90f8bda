//! The live engine task: market events in, committed and published events out.
//!
//! For each batch of market events: apply candles to the engine, commit each
//! accepted candle (state + signal + outbox entries) in one transaction, flush
//! once for the batch, and only then publish. Nothing is shown or sent as a
//! signal before it is durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use std::collections::HashMap;

use crate::engine::trade::{Book, Rules};
use crate::engine::{Engine, Phase, StrategySet};
use crate::event::{Delivery, DeliveryState, Event, Signal};
use crate::hub::Hub;
use crate::market::{self, MarketEvent, SourceCtx, SourceError};
use crate::metrics::Metrics;
use crate::notify::{NotifierHandle, SignalRoutes};
use crate::store::{
    CandleCommit, Message, OutboxEntry, Prepared, Priority, SIGNALS_KEPT_PER_SERIES, Store, StoreError,
};
use crate::time::Ts;
use crate::types::{Candle, SeriesKey};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}; pipwatch stopped without applying the candle, so nothing is lost: free the problem and start again")]
    Store(#[from] StoreError),
    #[error("the market source crashed: {0}")]
    Crashed(String),
    /// Another part of the instance (the notifier, the health task) met the
    /// store's I/O error first.
    #[error("{0}")]
    StoreFailed(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineStats {
    pub candles: u64,
    pub signals: u64,
    pub rejected: u64,
    pub restored: usize,
    /// Whether the source ran out (end of a CSV) rather than being stopped.
    pub source_finished: bool,
}

/// A committed candle's signal id and the routes it is queued for.
type Queued = (String, Vec<String>);

/// How long the source gets to stop after shutdown before it is cut off.
const SOURCE_GRACE: Duration = Duration::from_secs(3);

/// Bounds the `signals` tree (see `store::SIGNALS_KEPT_PER_SERIES`) on the
/// blocking pool: a pass reads every stored id (about 30 ms for 28 series
/// here), which the engine should not wait for. One pass at a time; a
/// failure only postpones it, as the next commit would meet the same cause.
fn spawn_prune(store: &Arc<Store>, running: &mut Option<tokio::task::JoinHandle<()>>) {
    if running.as_ref().is_some_and(|r| !r.is_finished()) {
        return;
    }
    let store = store.clone();
    *running = Some(tokio::task::spawn_blocking(move || prune_signals(&store)));
}

fn prune_signals(store: &Store) {
    if let Err(e) = store.prune_outcomes(crate::store::OUTCOMES_KEPT_PER_SERIES) {
        tracing::warn!(error = %e, "could not prune old stored outcomes; trying again later");
    }
    let start = std::time::Instant::now();
    match store.prune_signals(SIGNALS_KEPT_PER_SERIES) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deleted = n,
            kept_per_series = SIGNALS_KEPT_PER_SERIES,
            took_ms = start.elapsed().as_millis() as u64,
            "old stored signals pruned"
        ),
        Err(e) => tracing::warn!(error = %e, "could not prune old stored signals; trying again later"),
    }
}

/// Signal routing, as the notifier decides it: which routes take a signal,
/// with their delays in seconds.
fn takers(routes: &SignalRoutes, signal: Option<&Signal>) -> Vec<(String, i64)> {
    signal.map(|s| routes.for_signal(s)).unwrap_or_default()
}

/// The engine, restored from the store: every stored series resumes after
/// its last candle.
fn restore(store: &Store, strategies: &StrategySet, stats: &mut EngineStats) -> Result<Engine, EngineError> {
    let mut engine = Engine::new(strategies.clone());
    let (stored, unreadable) = store.load_series()?;
    for problem in unreadable {
        tracing::warn!(%problem, "a stored series could not be read; it starts over");
    }
    for (key, state) in stored {
        let last = state.last_time();
        if let Some(old) = engine.restore(key, state) {
            tracing::warn!(series = %key, from = %old.label(), to = %strategies.for_instrument(key.instrument).label(),
                "the strategy changed since this series was stored; its indicators start over");
        }
        tracing::debug!(series = %key, last = ?last.map(|t| t.to_string()), "series restored");
        stats.restored += 1;
    }
    Ok(engine)
}

/// What the closed trades owe the routes: an edit of the signal's message on
/// every route that takes its signals, and a message of its own on every
/// route that takes outcomes; queued with the candle that closed them.
fn outcome_messages(routes: &SignalRoutes, closed: &[crate::event::Trade], now: Ts) -> Vec<(Priority, OutboxEntry)> {
    let mut out = Vec::new();
    for t in closed {
        let (edits, news) = routes.for_outcome(t);
        let kinds = edits.into_iter().map(|r| (r, Message::Edit(t.clone())));
        for ((route, delay), message) in kinds.chain(news.into_iter().map(|r| (r, Message::Outcome(t.clone())))) {
            let priority = crate::notify::priority(&message);
            let not_before = Ts(now.0.saturating_add(delay));
            out.push((
                priority,
                OutboxEntry { route, message, created: now, not_before, attempts: 0, last_error: None },
            ));
        }
    }
    out
}

/// Each series' open paper trade, as committed with its last candle.
fn restore_books(store: &Store) -> Result<HashMap<SeriesKey, Book>, EngineError> {
    let (books, unreadable) = store.load_books()?;
    for problem in unreadable {
        tracing::warn!(%problem, "a series' open paper trade could not be read; it is not tracked");
    }
    Ok(books.into_iter().collect())
}

/// The source's channel, its stop token and its task.
struct Source {
    name: &'static str,
    rx: mpsc::Receiver<MarketEvent>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
}

fn start_source(config: &Config, engine: &Engine, shutdown: &CancellationToken) -> Result<Source, EngineError> {
    let series: Vec<SeriesKey> = config
        .market
        .instruments
        .iter()
        .flat_map(|&i| config.market.timeframes.iter().map(move |&tf| SeriesKey::new(i, tf)))
        .collect();
    // Every stored series resumes after its last candle: also one whose
    // strategy changed, and one that is not in the config (a CSV file names
    // its own instrument and timeframe). Re-reading older candles would only
    // be rejected.
    let resume = engine.series().filter_map(|(k, s)| s.last().map(|l| (k, l))).collect();
    let source = market::from_config(config)?;
    let name = source.name();
    let (tx, rx) = mpsc::channel(1024);
    let stop = shutdown.child_token();
    let ctx = SourceCtx { tx, shutdown: stop.clone(), series, resume, strategies: config.strategy.set() };
    Ok(Source { name, rx, stop, task: tokio::spawn(source.run(ctx)) })
}

/// The engine task's state between batches.
struct Task {
    engine: Engine,
    store: Arc<Store>,
    hub: Arc<Hub>,
    notifier: Option<NotifierHandle>,
    metrics: Option<Arc<Metrics>>,
    /// As the notifier had them at the start of this batch (a reload may change them).
    routes: Arc<SignalRoutes>,
    stats: EngineStats,
    pruning: Option<tokio::task::JoinHandle<()>>,
    since_prune: usize,
    /// What this batch publishes, in order.
    events: Vec<Event>,
    /// Each series' paper trading (`engine::trade`), as last committed.
    books: HashMap<SeriesKey, Book>,
    /// Live trades are entered at the signal's close, with no spread: the
    /// signal's own figures, as sent.
    rules: Rules,
    /// This batch queued notifications of closed trades: the routes are woken.
    outcomes_queued: bool,
}

impl Task {
    /// Applies one batch of market events: candles are committed together,
    /// flushed once, and only then published with everything else.
    async fn batch(&mut self, batch: &mut Vec<MarketEvent>) -> Result<(), EngineError> {
        let received = std::time::Instant::now();
        if let Some(n) = &self.notifier {
            self.routes = n.signal_routes();
        }
        let mut pending: Vec<(Prepared, Option<Queued>)> = Vec::new();
        for me in batch.drain(..) {
            match me {
                MarketEvent::Candle { candle, phase } => {
                    if let Some(p) = self.candle(&candle, phase)? {
                        pending.push(p);
                    }
                }
                MarketEvent::Quote(q) => self.events.push(Event::Quote(q)),
                MarketEvent::Rejected(r) => {
                    self.stats.rejected += 1;
                    self.events.push(Event::Rejected(r));
                }
                MarketEvent::Status(s) => {
                    log_feed(&s);
                    self.events.push(Event::Feed(s));
                }
            }
        }
        let queued = if pending.is_empty() { Vec::new() } else { self.commit(pending, received).await? };
        // Each signal first, then where it is queued: a view sees the
        // signal before its delivery states.
        for e in self.events.drain(..) {
            self.hub.publish(e);
        }
        for (id, route) in queued {
            self.hub.publish(Event::Delivery(Delivery {
                id,
                route,
                state: DeliveryState::Queued,
                attempts: 0,
                message_id: None,
                error: None,
                latency_secs: None,
            }));
        }
        Ok(())
    }

    /// One candle through the engine, prepared for its commit; `None` if it
    /// was rejected or its series has no state.
    fn candle(&mut self, candle: &Candle, phase: Phase) -> Result<Option<(Prepared, Option<Queued>)>, EngineError> {
        let start = self.events.len();
        let outcome = self.engine.apply_into(candle, phase, &mut self.events);
        if !outcome.accepted {
            self.stats.rejected += 1;
            if let (true, Some(Event::Rejected(r))) = (outcome.first_rejection, self.events.last()) {
                tracing::warn!(series = %candle.key(), time = %r.time, reason = %r.reason,
                    "bad candle rejected (further rejections for this series are counted, not logged)");
            }
            return Ok(None);
        }
        self.stats.candles += 1;
        let signal = self.events[start..].iter().find_map(|e| if let Event::Signal(s) = e { Some(s) } else { None });
        let book = self.books.entry(candle.key()).or_default();
        let closed = book.on_candle(candle, signal, &self.rules, candle.instrument.pip());
        let takers = takers(&self.routes, signal);
        let Some(state) = self.engine.state(&candle.key()) else { return Ok(None) };
        let commit = CandleCommit {
            key: candle.key(),
            state,
            candle: Some(candle),
            signal,
            routes: &takers,
            now: Ts::now(),
            priority: crate::notify::SIGNAL_PRIORITY,
        };
        let mut prepared = self.store.prepare(&commit)?;
        let messages = outcome_messages(&self.routes, &closed, commit.now);
        self.outcomes_queued |= !messages.is_empty();
        self.store.prepare_trades(&mut prepared, &candle.key(), book, &closed, &messages)?;
        let queued = signal.map(|s| (s.id.clone(), takers.into_iter().map(|t| t.0).collect()));
        // Published with the candle, once the batch is durable.
        for t in closed {
            tracing::info!(id = %t.id, exit = t.exit_reason.as_str(), r = t.r, "trade closed");
            self.events.push(Event::Outcome(t));
        }
        Ok(Some((prepared, queued)))
    }

    /// Commits and flushes the batch's candles; returns the (signal id,
    /// route) pairs newly queued.
    async fn commit(
        &mut self,
        pending: Vec<(Prepared, Option<Queued>)>,
        received: std::time::Instant,
    ) -> Result<Vec<(String, String)>, EngineError> {
        let (prepared, signals): (Vec<Prepared>, Vec<_>) = pending.into_iter().unzip();
        // Not retried: sled keeps its first I/O error (a full disk, a
        // failed write) and fails every later operation on this handle.
        // Nothing of this batch has been published yet, and a restart
        // resumes after the last flushed candle.
        let new = self.store.commit_all(&prepared)?;
        let mut queued = Vec::new();
        for (signal, new) in signals.into_iter().zip(new) {
            let Some((id, routes)) = signal else { continue };
            if new {
                self.stats.signals += 1;
                self.since_prune += 1;
                tracing::info!(%id, routes = routes.len(), "signal committed");
                queued.extend(routes.into_iter().map(|route| (id.clone(), route)));
            } else {
                // Already stored (e.g. a replayed candle): not published twice.
                self.events.retain(|e| !matches!(e, Event::Signal(x) if x.id == id));
            }
        }
        if self.since_prune >= SIGNALS_KEPT_PER_SERIES {
            self.since_prune = 0;
            spawn_prune(&self.store, &mut self.pruning);
        }
        self.store.flush().await?;
        if let Some(m) = &self.metrics {
            // Candle in to signal durable; the same for every signal of the batch.
            let latency = received.elapsed().as_secs_f64();
            for _ in 0..self.events.iter().filter(|e| matches!(e, Event::Signal(_))).count() {
                m.signal_latency(latency);
            }
        }
        if let Some(m) = &self.metrics {
            m.open_trades(self.books.values().filter(|b| b.open.is_some()).count());
        }
        if let (Some(n), false) = (&self.notifier, queued.is_empty()) {
            n.queued(&queued);
        }
        if let (Some(n), true) = (&self.notifier, std::mem::take(&mut self.outcomes_queued)) {
            n.wake();
        }
        Ok(queued)
    }
}

fn log_feed(s: &crate::event::FeedStatus) {
    // The state as the JSON records name it. The feed's text is `detail`:
    // a `message` field would be a second "message" key in the JSON log
    // line, beside the event's own.
    let state = serde_json::to_value(s.state).ok();
    let state = state.as_ref().and_then(|v| v.as_str()).unwrap_or("");
    match s.message.as_deref() {
        Some(detail) => tracing::info!(source = %s.source, state, detail, "feed"),
        None => tracing::info!(source = %s.source, state, "feed"),
    }
}

/// What the engine task is handed by the instance.
pub struct Parts {
    /// Touched on every turn of the loop (see `health::liveness`).
    pub liveness: crate::health::liveness::Liveness,
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub notifier: Option<NotifierHandle>,
    pub metrics: Option<Arc<Metrics>>,
}

/// Runs the configured source into the engine until `shutdown` or until the
/// source ends. The store must be open; the hub receives every event; the
/// notifier, if any, is woken when new signals are queued for it.
pub async fn run(config: &Config, parts: Parts, shutdown: CancellationToken) -> Result<EngineStats, EngineError> {
    let Parts { liveness, store, hub, notifier, metrics } = parts;
    liveness.touch();
    let result = turn(config, &liveness, store, hub, notifier, metrics, shutdown).await;
    match &result {
        // The input ran out: the rest of the instance goes on serving.
        Ok(stats) if stats.source_finished => liveness.finish(),
        // Stopped or failed: nothing to feed a watchdog with any more.
        _ => liveness.end(),
    }
    result
}

async fn turn(
    config: &Config,
    liveness: &crate::health::liveness::Liveness,
    store: Arc<Store>,
    hub: Arc<Hub>,
    notifier: Option<NotifierHandle>,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
) -> Result<EngineStats, EngineError> {
    let mut stats = EngineStats::default();
    let engine = restore(&store, &config.strategy.set(), &mut stats)?;
    let mut source = start_source(config, &engine, &shutdown)?;
    tracing::info!(source = source.name, restored = stats.restored, "engine started");
    let routes =
        notifier.as_ref().map_or_else(|| Arc::new(SignalRoutes::new(&config.notify.routes)), |n| n.signal_routes());
    let mut task = Task {
        engine,
        store: store.clone(),
        hub,
        notifier,
        metrics,
        routes,
        stats,
        pruning: None,
        since_prune: 0,
        events: Vec::with_capacity(256),
        books: restore_books(&store)?,
        rules: Rules::default(),
        outcomes_queued: false,
    };
    spawn_prune(&store, &mut task.pruning);
    let mut batch = Vec::with_capacity(256);
    let mut stopping: Option<tokio::time::Instant> = None;
    let mut idle = tokio::time::interval(crate::health::liveness::IDLE_TICK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        liveness.touch();
        let n = tokio::select! {
            n = source.rx.recv_many(&mut batch, 256) => n,
            // Candles may be hours apart: the loop still proves it turns.
            _ = idle.tick() => continue,
            _ = shutdown.cancelled(), if stopping.is_none() => {
                // Stop the input first; what it already sent is still applied.
                source.stop.cancel();
                stopping = Some(tokio::time::Instant::now() + SOURCE_GRACE);
                continue;
            }
            message = store.failed() => {
                source.stop.cancel();
                return Err(EngineError::StoreFailed(message));
            }
            _ = tokio::time::sleep_until(stopping.unwrap_or_else(tokio::time::Instant::now)), if stopping.is_some() => {
                tracing::warn!("the market source did not stop in time; cutting it off");
                source.task.abort();
                break;
            }
        };
        if n == 0 {
            break;
        }
        task.batch(&mut batch).await?;
    }
    // A pass under way finishes, so that the last flush covers it.
    if let Some(p) = task.pruning.take() {
        let _ = p.await;
    }
    store.flush().await?;
    match (&mut source.task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(EngineError::Crashed(e.to_string())),
    }
    let mut stats = task.stats;
    stats.source_finished = !shutdown.is_cancelled();
    tracing::info!(candles = stats.candles, signals = stats.signals, rejected = stats.rejected, "engine stopped");
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine has nothing to write for an hour; another user of the store
    /// (here standing in for the notifier) meets a full disk. The engine
    /// stops with that error instead of running on a store that can no
    /// longer write.
    #[tokio::test]
    async fn an_idle_engine_stops_when_another_part_meets_a_failed_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let mut config = Config::default();
        config.market.demo.candle_every = crate::config::Dur(Duration::from_secs(3600));
        let hub = Arc::new(Hub::new(1024));
        let mut events = hub.subscribe();
        let shutdown = CancellationToken::new();
        let engine = tokio::spawn({
            let (store, hub, shutdown) = (store.clone(), hub.clone(), shutdown.clone());
            async move {
                let liveness = crate::health::liveness::Liveness::new();
                run(&config, Parts { liveness, store, hub, notifier: None, metrics: None }, shutdown).await
            }
        });
        // Live: the warm-up is committed and the next candle is an hour away.
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(crate::hub::Received::Event(env)) = events.recv().await
                    && matches!(&env.event, Event::Feed(f) if f.state == crate::event::FeedState::Live)
                {
                    break;
                }
            }
        })
        .await
        .expect("the demo went live");

        let refused = store.refuse_a_write(std::io::Error::from_raw_os_error(28)).to_string();
        let result = tokio::time::timeout(Duration::from_secs(5), engine).await.expect("the engine stopped").unwrap();
        match result {
            Err(EngineError::StoreFailed(message)) => {
                assert_eq!(message, refused);
                assert!(message.contains("the disk is full"), "{message}");
            }
            other => panic!("expected the store's failure, got {other:?}"),
        }
        assert!(!shutdown.is_cancelled(), "stopped by the failure, not by a shutdown");
    }

    #[tokio::test]
    async fn a_store_failure_reaches_waiters_before_and_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let early = tokio::spawn({
            let store = store.clone();
            async move { store.failed().await }
        });
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), store.failed()).await.is_err(),
            "nothing has failed yet"
        );
        let refused = store.refuse_a_write(std::io::Error::from(std::io::ErrorKind::QuotaExceeded)).to_string();
        // A second error does not replace the first: that one is the cause.
        store.refuse_a_write(std::io::Error::from_raw_os_error(5));
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), early).await.unwrap().unwrap(), refused);
        assert_eq!(store.failed().await, refused);
    }
}

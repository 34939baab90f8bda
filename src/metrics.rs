//! Prometheus metrics, fed by the same events as everything else plus the
//! few measurements that are not events (signal latency, WebSocket clients).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::event::{DeliveryState, Event};
use crate::time::Ts;
use crate::types::{Instrument, Timeframe};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    instrument: String,
    timeframe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    instrument: String,
    side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TradeLabels {
    instrument: String,
    exit_reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: String,
}

pub struct Metrics {
    registry: Registry,
    candles: Family<SeriesLabels, Counter>,
    /// Each series' candle counter and last close, so the per-candle path is
    /// one lock and one lookup, without building label strings.
    series: Mutex<rustc_hash::FxHashMap<(Instrument, Timeframe), (Counter, Ts)>>,
    /// Signal latency in microseconds since the window began, for p50/p95/p99.
    recent_latency: Mutex<hdrhistogram::Histogram<u64>>,
    signals: Family<SignalLabels, Counter>,
    rejected: Family<SeriesLabels, Counter>,
    notifications: Family<OutcomeLabels, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    queue_depth: Family<PriorityLabels, Gauge>,
    route_depth: Family<RouteLabels, Gauge>,
    oldest_pending: Family<RouteLabels, Gauge>,
    feed_lag: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    ws_clients: Gauge,
    trades: Family<TradeLabels, Counter>,
    open_trades: Gauge,
    signal_latency: Histogram,
    delivery_latency: Family<RouteLabels, Histogram>,
    /// The notifier's 429 counts are totals; the counter takes the increase.
    seen_429: Mutex<HashMap<String, u64>>,
}

fn new_latency_histogram() -> hdrhistogram::Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits; these bounds are valid, so this cannot fail.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Metrics {
    /// The hub observer that feeds these metrics with every event published
    /// (see `crate::hub`): counted as they happen, whoever else keeps up.
    pub fn observer(self: &std::sync::Arc<Self>) -> crate::hub::Observer {
        let metrics = self.clone();
        Box::new(move |env: &crate::event::Envelope| metrics.observe(&env.event))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pipwatch");
        let m = Metrics {
            candles: Family::default(),
            series: Mutex::default(),
            recent_latency: Mutex::new(new_latency_histogram()),
            signals: Family::default(),
            rejected: Family::default(),
            notifications: Family::default(),
            rate_limited: Family::default(),
            queue_depth: Family::default(),
            route_depth: Family::default(),
            oldest_pending: Family::default(),
            feed_lag: Family::default(),
            ws_clients: Gauge::default(),
            trades: Family::default(),
            open_trades: Gauge::default(),
            // 50 µs to ~26 s.
            signal_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            // 10 ms to ~82 s: Discord round trips, waits for rate limits, outages.
            delivery_latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 14))),
            seen_429: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register("candles", "Closed candles applied", m.candles.clone());
        registry.register("signals", "Signals committed", m.signals.clone());
        registry.register("rejected_candles", "Candles rejected as bad data", m.rejected.clone());
        registry.register(
            "notifications",
            "Notification outcomes per route (delivered, failed, dead)",
            m.notifications.clone(),
        );
        registry.register("discord_rate_limited", "429 answers from Discord per route", m.rate_limited.clone());
        registry.register("queue_depth", "Pending notifications by priority", m.queue_depth.clone());
        registry.register("route_queue_depth", "Pending notifications by route", m.route_depth.clone());
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest due notification by route",
            m.oldest_pending.clone(),
        );
        registry.register(
            "feed_lag_seconds",
            "Time since the last candle of a series closed, minus one timeframe",
            m.feed_lag.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From a notification being due to Discord confirming it, by route",
            m.delivery_latency.clone(),
        );
        registry.register("websocket_clients", "Connected WebSocket clients", m.ws_clients.clone());
        registry.register("trades", "Paper trades closed, by exit reason (target, stop, reversed)", m.trades.clone());
        registry.register("open_trades", "Paper trades open now", m.open_trades.clone());
        registry.register(
            "signal_latency_seconds",
            "From a candle's arrival to its signal being committed",
            m.signal_latency.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Creates every series, signal side, route and priority the config
    /// names at zero, so each is exposed from the first scrape: a series that
    /// appears only at its first increment hides that increment from
    /// `rate()` and `increase()`, and an alert on it fires late or never.
    pub fn prepare<'a>(
        &self,
        series: impl IntoIterator<Item = (Instrument, Timeframe)>,
        routes: impl IntoIterator<Item = &'a str>,
    ) {
        for (i, tf) in series {
            let l = SeriesLabels { instrument: i.to_string(), timeframe: tf.to_string() };
            drop(self.candles.get_or_create(&l));
            drop(self.rejected.get_or_create(&l));
            for side in [crate::types::Side::Buy, crate::types::Side::Sell] {
                drop(self.signals.get_or_create(&SignalLabels { instrument: i.to_string(), side: side.to_string() }));
            }
            for reason in ["target", "stop", "reversed"] {
                let l = TradeLabels { instrument: i.to_string(), exit_reason: reason.into() };
                drop(self.trades.get_or_create(&l));
            }
        }
        for p in ["urgent", "high", "normal", "low"] {
            drop(self.queue_depth.get_or_create(&PriorityLabels { priority: p.into() }));
        }
        for route in routes {
            let l = RouteLabels { route: route.to_string() };
            drop(self.rate_limited.get_or_create(&l));
            drop(self.route_depth.get_or_create(&l));
            drop(self.oldest_pending.get_or_create(&l));
            for outcome in ["delivered", "failed", "dead"] {
                drop(
                    self.notifications
                        .get_or_create(&OutcomeLabels { route: route.to_string(), outcome: outcome.into() }),
                );
            }
        }
    }

    pub fn observe(&self, event: &Event) {
        match event {
            Event::Candle(c) => {
                let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
                let (counter, last) = series.entry((c.instrument, c.timeframe)).or_insert_with(|| {
                    let l = SeriesLabels { instrument: c.instrument.to_string(), timeframe: c.timeframe.to_string() };
                    (self.candles.get_or_create(&l).clone(), Ts(0))
                });
                counter.inc();
                *last = Ts(c.time.0 + c.timeframe.seconds());
            }
            Event::Signal(s) => {
                let l = SignalLabels { instrument: s.instrument.to_string(), side: s.side.to_string() };
                self.signals.get_or_create(&l).inc();
            }
            Event::Rejected(r) => {
                let l = SeriesLabels { instrument: r.instrument.to_string(), timeframe: r.timeframe.to_string() };
                self.rejected.get_or_create(&l).inc();
            }
            Event::Delivery(d) => {
                let outcome = match d.state {
                    DeliveryState::Queued => return,
                    DeliveryState::Delivered => "delivered",
                    DeliveryState::Failed => "failed",
                    DeliveryState::Dead => "dead",
                };
                self.notifications
                    .get_or_create(&OutcomeLabels { route: d.route.clone(), outcome: outcome.into() })
                    .inc();
                if let (DeliveryState::Delivered, Some(l)) = (d.state, d.latency_secs) {
                    self.delivery_latency.get_or_create(&RouteLabels { route: d.route.clone() }).observe(l);
                }
            }
            Event::Queue(q) => {
                for (p, v) in [
                    ("urgent", q.depth.urgent),
                    ("high", q.depth.high),
                    ("normal", q.depth.normal),
                    ("low", q.depth.low),
                ] {
                    self.queue_depth.get_or_create(&PriorityLabels { priority: p.into() }).set(v as i64);
                }
                let mut seen = self.seen_429.lock().unwrap_or_else(|p| p.into_inner());
                for r in &q.routes {
                    let l = RouteLabels { route: r.name.clone() };
                    self.route_depth.get_or_create(&l).set(r.depth as i64);
                    self.oldest_pending.get_or_create(&l).set(r.oldest_pending_secs.unwrap_or(0) as i64);
                    let before = seen.insert(r.name.clone(), r.rate_limited).unwrap_or(0);
                    self.rate_limited.get_or_create(&l).inc_by(r.rate_limited.saturating_sub(before));
                }
            }
            Event::Outcome(t) => {
                let l =
                    TradeLabels { instrument: t.instrument.to_string(), exit_reason: t.exit_reason.as_str().into() };
                self.trades.get_or_create(&l).inc();
            }
            Event::Quote(_) | Event::Feed(_) | Event::Alert(_) | Event::Health(_) => {}
        }
    }

    /// How many paper trades are open (the engine counts its books).
    pub fn open_trades(&self, n: usize) {
        self.open_trades.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn signal_latency(&self, seconds: f64) {
        self.signal_latency.observe(seconds);
        let micros = (seconds * 1e6).clamp(1.0, 3.6e9) as u64;
        let mut h = self.recent_latency.lock().unwrap_or_else(|p| p.into_inner());
        // Out of range is clamped above, so recording cannot fail.
        let _ = h.record(micros);
    }

    /// p50/p95/p99 in ms since the last call with `reset`.
    pub fn latency(&self, reset: bool) -> crate::event::Latency {
        let mut h = self.recent_latency.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let l = crate::event::Latency { p50: ms(0.5), p95: ms(0.95), p99: ms(0.99), count: h.len() };
        if reset {
            h.reset();
        }
        l
    }

    pub fn ws_clients(&self) -> u64 {
        self.ws_clients.get().max(0) as u64
    }

    pub fn client_connected(&self) {
        self.ws_clients.inc();
    }

    pub fn client_disconnected(&self) {
        self.ws_clients.dec();
    }

    /// The Prometheus text exposition.
    pub fn render(&self, now: Ts) -> String {
        {
            let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
            for ((i, tf), (_, closed)) in series.iter() {
                let l = SeriesLabels { instrument: i.to_string(), timeframe: tf.to_string() };
                // The next candle is due one timeframe after the last close.
                let lag = (now.0 - closed.0 - tf.seconds()).max(0);
                self.feed_lag.get_or_create(&l).set(lag as f64);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

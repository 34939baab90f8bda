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

use crate::event::{AlertState, DeliveryState, Event, FeedState, SystemSample};
use crate::time::Ts;
use crate::types::Severity;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    source: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadLabels {
    period: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The host and this process, set from each health sample.
#[derive(Default)]
struct SystemGauges {
    cpu: FloatGauge,
    memory_used: Gauge,
    memory_total: Gauge,
    swap_used: Gauge,
    swap_total: Gauge,
    disk_used: Gauge,
    disk_total: Gauge,
    load: Family<LoadLabels, FloatGauge>,
    net_rx: Gauge,
    net_tx: Gauge,
    market_open: Gauge,
    process_rss: Gauge,
    process_virtual: Gauge,
    process_cpu: Counter<f64, AtomicU64>,
    process_open_fds: Gauge,
    process_max_fds: Gauge,
    process_start: Gauge,
}

const FEED_STATES: [FeedState; 5] =
    [FeedState::WarmingUp, FeedState::Live, FeedState::Retrying, FeedState::Finished, FeedState::Failed];

fn feed_state_name(s: FeedState) -> &'static str {
    match s {
        FeedState::WarmingUp => "warming_up",
        FeedState::Live => "live",
        FeedState::Retrying => "retrying",
        FeedState::Finished => "finished",
        FeedState::Failed => "failed",
    }
}

const HEALTH_STATES: [&str; 3] = ["healthy", "degraded", "unhealthy"];

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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
    system: SystemGauges,
    last_candle: Family<SeriesLabels, Gauge>,
    /// Active alerts by id, so a resolution or an acknowledgement that
    /// arrives twice never counts an alert twice.
    alerts: Mutex<HashMap<String, Severity>>,
    active_alerts: Family<SeverityLabels, Gauge>,
    health: Family<StatusLabels, Gauge>,
    feed_state: Family<FeedLabels, Gauge>,
    /// The last feed's labels, set back to 0 when its state changes.
    feed_last: Mutex<Option<FeedLabels>>,
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
        let mut root = Registry::default();
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
            system: SystemGauges::default(),
            last_candle: Family::default(),
            alerts: Mutex::default(),
            active_alerts: Family::default(),
            health: Family::default(),
            feed_state: Family::default(),
            feed_last: Mutex::default(),
            registry: Registry::default(),
        };
        register_process(&mut root, &m.system);
        let registry = root.sub_registry_with_prefix("pipwatch");
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
        let build: Family<BuildLabels, Gauge> = Family::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        registry.register("build_info", "The running version (always 1)", build);
        registry.register(
            "last_candle_timestamp_seconds",
            "Unix time at which the last applied candle of a series closed",
            m.last_candle.clone(),
        );
        registry.register("active_alerts", "Alerts raised and not yet resolved, by severity", m.active_alerts.clone());
        registry.register(
            "health_status",
            "The overall status of /health: 1 for the current one of healthy, degraded, unhealthy",
            m.health.clone(),
        );
        registry.register(
            "feed_state",
            "The market feed's state: 1 for the current one of warming_up, live, retrying, finished, failed",
            m.feed_state.clone(),
        );
        register_host(registry, &m.system);
        for period in ["1m", "5m", "15m"] {
            drop(m.system.load.get_or_create(&LoadLabels { period: period.into() }));
        }
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            drop(m.active_alerts.get_or_create(&SeverityLabels { severity: s.as_str().into() }));
        }
        m.set_health("healthy");
        Metrics { registry: root, ..m }
    }

    /// The overall status, one-hot, as `/health` judged it at this scrape
    /// (`healthy`, `degraded` or `unhealthy`; metrics sit below health, so
    /// they take its name).
    pub fn set_health(&self, status: &str) {
        for name in HEALTH_STATES {
            self.health.get_or_create(&StatusLabels { status: name.into() }).set(i64::from(name == status));
        }
    }

    fn observe_system(&self, s: &SystemSample, market_open: bool) {
        let g = &self.system;
        g.cpu.set(f64::from(s.cpu) / 100.0);
        g.memory_used.set(to_i64(s.memory_used));
        g.memory_total.set(to_i64(s.memory_total));
        g.swap_used.set(to_i64(s.swap_used));
        g.swap_total.set(to_i64(s.swap_total));
        g.disk_used.set(to_i64(s.disk_used));
        g.disk_total.set(to_i64(s.disk_total));
        for (period, v) in [("1m", s.load[0]), ("5m", s.load[1]), ("15m", s.load[2])] {
            g.load.get_or_create(&LoadLabels { period: period.into() }).set(v);
        }
        g.net_rx.set(to_i64(s.net_rx_per_s));
        g.net_tx.set(to_i64(s.net_tx_per_s));
        g.market_open.set(i64::from(market_open));
        g.process_rss.set(to_i64(s.process_rss));
        g.process_virtual.set(to_i64(s.process.virtual_memory));
        // A counter only rises: it takes the increase since the last sample.
        let delta = s.process.cpu_seconds - g.process_cpu.get();
        if delta > 0.0 {
            g.process_cpu.inc_by(delta);
        }
        g.process_open_fds.set(to_i64(s.process.open_fds));
        g.process_max_fds.set(to_i64(s.process.max_fds));
        g.process_start.set(s.process.start_time);
    }

    fn observe_alert(&self, a: &crate::event::Alert) {
        let mut alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        match a.state {
            AlertState::Raised | AlertState::Acknowledged => alerts.insert(a.id.clone(), a.severity),
            AlertState::Resolved => alerts.remove(&a.id),
        };
        for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
            let n = alerts.values().filter(|s| **s == sev).count();
            self.active_alerts.get_or_create(&SeverityLabels { severity: sev.as_str().into() }).set(n as i64);
        }
    }

    fn observe_feed(&self, f: &crate::event::FeedStatus) {
        let mut last = self.feed_last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_none_or(|l| l.source != f.source) {
            // Every state of a new source at 0, so a rule on one state sees it from the start.
            for st in FEED_STATES {
                let l = FeedLabels { source: f.source.clone(), state: feed_state_name(st).into() };
                self.feed_state.get_or_create(&l).set(0);
            }
        }
        if let Some(old) = last.take() {
            self.feed_state.get_or_create(&old).set(0);
        }
        let l = FeedLabels { source: f.source.clone(), state: feed_state_name(f.state).into() };
        self.feed_state.get_or_create(&l).set(1);
        *last = Some(l);
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
            drop(self.delivery_latency.get_or_create(&l));
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
                    // Smaller than last seen: the route's count began again
                    // (removed by a reload, then back), so all of it is new.
                    let new = r.rate_limited.checked_sub(before).unwrap_or(r.rate_limited);
                    self.rate_limited.get_or_create(&l).inc_by(new);
                }
            }
            Event::Outcome(t) => {
                let l =
                    TradeLabels { instrument: t.instrument.to_string(), exit_reason: t.exit_reason.as_str().into() };
                self.trades.get_or_create(&l).inc();
            }
            Event::Health(h) => self.observe_system(&h.system, h.market_open),
            Event::Alert(a) => self.observe_alert(a),
            Event::Feed(f) => self.observe_feed(f),
            Event::Quote(_) => {}
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
                self.last_candle.get_or_create(&l).set(closed.0);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The standard process family, unprefixed: what the client libraries of
/// Prometheus export, so existing dashboards and rules find them.
fn register_process(root: &mut Registry, g: &SystemGauges) {
    root.register("process_resident_memory_bytes", "Resident memory size in bytes", g.process_rss.clone());
    root.register("process_virtual_memory_bytes", "Virtual memory size in bytes", g.process_virtual.clone());
    root.register("process_cpu_seconds", "Total user and system CPU time spent in seconds", g.process_cpu.clone());
    root.register("process_open_fds", "Number of open file descriptors", g.process_open_fds.clone());
    root.register("process_max_fds", "Maximum number of open file descriptors", g.process_max_fds.clone());
    root.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        g.process_start.clone(),
    );
}

fn register_host(registry: &mut Registry, g: &SystemGauges) {
    registry.register("host_cpu_ratio", "CPU in use on the host, all cores, 0 to 1", g.cpu.clone());
    registry.register("host_memory_used_bytes", "Host memory in use", g.memory_used.clone());
    registry.register("host_memory_total_bytes", "Host memory in all", g.memory_total.clone());
    registry.register("host_swap_used_bytes", "Host swap in use", g.swap_used.clone());
    registry.register("host_swap_total_bytes", "Host swap in all", g.swap_total.clone());
    registry.register(
        "data_disk_used_bytes",
        "Used bytes of the data directory's filesystem (as df counts them)",
        g.disk_used.clone(),
    );
    registry.register(
        "data_disk_total_bytes",
        "Used plus available bytes of the data directory's filesystem (as df counts them)",
        g.disk_total.clone(),
    );
    registry.register("host_load", "Host load average by period (1m, 5m, 15m)", g.load.clone());
    registry.register(
        "host_network_receive_bytes_per_second",
        "Bytes received on all interfaces, per second over the last sample",
        g.net_rx.clone(),
    );
    registry.register(
        "host_network_transmit_bytes_per_second",
        "Bytes sent on all interfaces, per second over the last sample",
        g.net_tx.clone(),
    );
    registry.register(
        "market_open",
        "1 while the FX market's week is open (always for the demo market)",
        g.market_open.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Alert, FeedStatus};

    fn line(m: &Metrics, key: &str) -> Option<String> {
        m.render(Ts(0)).lines().find(|l| l.starts_with(key)).map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    }

    fn alert(id: &str, severity: Severity, state: AlertState) -> Event {
        Event::Alert(Alert {
            id: id.into(),
            check: "disk".into(),
            severity,
            state,
            title: "t".into(),
            message: "m".into(),
            time: Ts(1),
        })
    }

    #[test]
    fn active_alerts_count_each_alert_once_until_it_resolves() {
        let m = Metrics::new();
        m.observe(&alert("disk:1", Severity::Critical, AlertState::Raised));
        m.observe(&alert("disk:1", Severity::Critical, AlertState::Acknowledged));
        m.observe(&alert("cpu:1", Severity::Warning, AlertState::Raised));
        assert_eq!(line(&m, "pipwatch_active_alerts{severity=\"critical\"}").as_deref(), Some("1"));
        assert_eq!(line(&m, "pipwatch_active_alerts{severity=\"warning\"}").as_deref(), Some("1"));
        m.observe(&alert("disk:1", Severity::Critical, AlertState::Resolved));
        m.observe(&alert("disk:1", Severity::Critical, AlertState::Resolved));
        assert_eq!(line(&m, "pipwatch_active_alerts{severity=\"critical\"}").as_deref(), Some("0"));
        assert_eq!(line(&m, "pipwatch_active_alerts{severity=\"warning\"}").as_deref(), Some("1"));
    }

    /// The 429 counter follows the route's count as it grows, and all of a
    /// count that began again (a route removed by a reload, then back).
    #[test]
    fn the_429_counter_follows_the_routes_count_through_a_restart_of_it() {
        let m = Metrics::new();
        let queue = |rate_limited| {
            let route = crate::event::RouteStatus {
                name: "signals".into(),
                circuit: crate::event::Circuit::Closed,
                depth: 0,
                oldest_pending_secs: None,
                sent: 0,
                failed: 0,
                dead: 0,
                rate_limited,
                waiting: false,
                last_error: None,
            };
            Event::Queue(crate::event::QueueStatus { routes: vec![route], ..Default::default() })
        };
        for (count, total) in [(3, "3"), (5, "5"), (5, "5"), (1, "6"), (2, "7")] {
            m.observe(&queue(count));
            let got = line(&m, "pipwatch_discord_rate_limited_total{route=\"signals\"}");
            assert_eq!(got.as_deref(), Some(total), "after a count of {count}");
        }
    }

    #[test]
    fn the_feed_state_and_the_health_status_are_one_hot() {
        let m = Metrics::new();
        for state in [FeedState::WarmingUp, FeedState::Live, FeedState::Retrying] {
            m.observe(&Event::Feed(FeedStatus::new("oanda", state, None)));
        }
        assert_eq!(line(&m, "pipwatch_feed_state{source=\"oanda\",state=\"retrying\"}").as_deref(), Some("1"));
        assert_eq!(line(&m, "pipwatch_feed_state{source=\"oanda\",state=\"live\"}").as_deref(), Some("0"));
        assert_eq!(line(&m, "pipwatch_feed_state{source=\"oanda\",state=\"failed\"}").as_deref(), Some("0"));
        m.set_health("degraded");
        assert_eq!(line(&m, "pipwatch_health_status{status=\"degraded\"}").as_deref(), Some("1"));
        assert_eq!(line(&m, "pipwatch_health_status{status=\"healthy\"}").as_deref(), Some("0"));
    }

    #[test]
    fn process_cpu_seconds_only_rise() {
        let m = Metrics::new();
        let mut s = SystemSample::default();
        s.process.cpu_seconds = 2.5;
        m.observe_system(&s, true);
        s.process.cpu_seconds = 1.0;
        m.observe_system(&s, true);
        assert_eq!(line(&m, "process_cpu_seconds_total").as_deref(), Some("2.5"));
        assert_eq!(line(&m, "pipwatch_market_open").as_deref(), Some("1"));
    }
}

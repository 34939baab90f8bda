//! The health task: samples the system on its own interval (the blocking
//! part on a blocking thread), judges feed staleness with the FX week in
//! mind, runs every threshold through the alert engine, publishes a `health`
//! event, pings the heartbeat URL and systemd's watchdog while healthy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::alerts::{AlertEngine, Describe, Limits, Rules};
use super::fxweek;
use super::sampler::Sampler;
use crate::config;
use crate::event::{Alert, AlertState, Event, FeedState, HealthSample, Stale};
use crate::hub::{Hub, Received};
use crate::metrics::Metrics;
use crate::notify::NotifierHandle;
use crate::store::Store;
use crate::time::Ts;
use crate::types::{SeriesKey, Severity};
use crate::view::View;

/// How candles are expected to arrive, for staleness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// A real market: one candle per timeframe, none while the FX week is closed.
    Market,
    /// A synthetic or replayed feed: one candle per this, around the clock.
    Every(Duration),
    /// As fast as possible (an unpaced CSV): no staleness.
    Unpaced,
}

impl Pace {
    pub fn from_config(c: &config::Config) -> Pace {
        match c.market.source {
            config::SourceKind::Oanda => Pace::Market,
            config::SourceKind::Demo => Pace::Every(c.market.demo.candle_every.0),
            config::SourceKind::Csv if c.market.csv.candle_every.0.is_zero() => Pace::Unpaced,
            config::SourceKind::Csv => Pace::Every(c.market.csv.candle_every.0),
        }
    }
}

pub struct Ctx {
    pub health: config::Health,
    pub data_dir: PathBuf,
    pub hub: Arc<Hub>,
    pub notifier: Option<NotifierHandle>,
    pub metrics: Arc<Metrics>,
    pub series: Vec<SeriesKey>,
    pub pace: Pace,
    /// Where raised alerts are kept across restarts; none in tests that do
    /// not need it.
    pub store: Option<Arc<Store>>,
    /// The engine loop's proof of life: what feeds the watchdog and the
    /// heartbeat. None where no engine runs (tests of the checks alone).
    pub liveness: Option<super::liveness::Liveness>,
}

/// The latency window: p95 is judged over roughly this much recent history.
const LATENCY_WINDOW: Duration = Duration::from_secs(600);
/// Failure rate is judged over this much history, and only with enough requests.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
const FAILURE_MIN_REQUESTS: u64 = 5;

/// How overdue a series' next candle is at `now`, in seconds (negative: not
/// due yet), or `None` while the market is closed.
pub fn overdue(pace: Pace, key: SeriesKey, last: Ts, now: Ts) -> Option<i64> {
    let interval = match pace {
        Pace::Unpaced => return Some(i64::MIN),
        Pace::Market => key.timeframe.seconds(),
        Pace::Every(d) => i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX),
    };
    let mut due = Ts(last.0.saturating_add(interval));
    if pace == Pace::Market {
        if !fxweek::is_open(now) {
            return None;
        }
        if !fxweek::is_open(due) {
            // Due in the weekend: the first candle after the reopen is what to wait for.
            due = Ts(fxweek::next_open(due).0 + interval);
        } else if let Some(gap) = weekend_between(due, now) {
            due = Ts(gap.0 + interval);
        }
    }
    Some(now.0 - due.0)
}

/// The reopen of a weekend that lies between two open moments, if any.
fn weekend_between(from: Ts, to: Ts) -> Option<Ts> {
    // Step 6 h at a time: a weekend closure lasts 48 h, so no step can jump over one.
    let mut t = from.0;
    while t < to.0 {
        if !fxweek::is_open(Ts(t)) {
            return Some(fxweek::next_open(Ts(t)));
        }
        t += 6 * 3600;
    }
    None
}

struct Failures {
    window: VecDeque<(Instant, u64, u64)>,
}

impl Failures {
    /// Failed share of requests over the window, from the routes' running totals.
    fn rate(&mut self, now: Instant, sent: u64, failed: u64) -> f64 {
        self.window.push_back((now, sent, failed));
        while self.window.front().is_some_and(|(t, _, _)| now.duration_since(*t) > FAILURE_WINDOW) {
            self.window.pop_front();
        }
        let Some(&(_, s0, f0)) = self.window.front() else { return 0.0 };
        let (ds, df) = (sent.saturating_sub(s0), failed.saturating_sub(f0));
        if ds + df < FAILURE_MIN_REQUESTS { 0.0 } else { df as f64 / (ds + df) as f64 }
    }
}

async fn raise(ctx: &Ctx, alert: Alert) {
    match alert.severity {
        Severity::Critical => tracing::error!(check = %alert.check, state = ?alert.state, "{}", alert.message),
        _ => tracing::warn!(check = %alert.check, state = ?alert.state, "{}", alert.message),
    }
    match &ctx.notifier {
        Some(n) => {
            if let Err(e) = n.raise(alert.clone()).await {
                tracing::error!(error = %e, "an alert could not be queued for delivery; it is still shown");
                ctx.hub.publish(Event::Alert(alert));
            }
        }
        None => {
            ctx.hub.publish(Event::Alert(alert));
        }
    }
}

fn keep(ctx: &Ctx, lasting: &HashSet<&str>, alert: &Alert) {
    if let Some(store) = &ctx.store
        && lasting.contains(alert.check.as_str())
        && let Err(e) = store.keep_alert(alert)
    {
        tracing::warn!(error = %e, check = %alert.check, "an alert's state could not be kept for a restart");
    }
}

/// The checks whose value a restart does not change: an episode of these
/// goes on after one. The others start over with the process (feed
/// staleness counts from the start, failure rate and latency from fresh
/// counters), so they would read as back to normal for a while and resolve
/// an episode that is not over; theirs are dropped and raised anew if still
/// true. A check this run does not make at all (no routes now) is dropped too.
fn lasting_checks(ctx: &Ctx) -> HashSet<&'static str> {
    let mut checks: HashSet<&'static str> = ["cpu", "memory", "disk"].into();
    if let Some(n) = &ctx.notifier
        && n.status().is_ok_and(|q| !q.routes.is_empty())
    {
        checks.extend(["queue", "oldest_pending"]);
    }
    checks
}

/// Goes on with the alerts raised before a restart: shown at once (the
/// console and `/health` see them before the first sample), not sent again.
fn restore_alerts(ctx: &Ctx, store: &Store, lasting: &HashSet<&str>, engine: &mut AlertEngine) {
    let (kept, unreadable) = match store.raised_alerts() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the alerts raised before the restart could not be read; they are raised again if still true");
            return;
        }
    };
    for problem in unreadable {
        tracing::warn!(%problem, "a kept alert could not be read; it is raised again if still true");
    }
    let (now, inst) = (Ts::now(), Instant::now());
    for alert in kept {
        if !lasting.contains(alert.check.as_str()) {
            let gone = Alert { state: AlertState::Resolved, ..alert };
            if let Err(e) = store.keep_alert(&gone) {
                tracing::warn!(error = %e, check = %gone.check, "a kept alert that starts over could not be dropped");
            }
            continue;
        }
        // The cooldown runs from when it was last sent, in wall-clock time.
        let age = Duration::from_secs(u64::try_from(now.0 - alert.time.0).unwrap_or(0));
        let sent = inst.checked_sub(age).or_else(|| inst.checked_sub(ctx.health.cooldown.0)).unwrap_or(inst);
        engine.restore(&alert, sent);
        tracing::info!(check = %alert.check, id = %alert.id, "an alert raised before the restart is still open");
        ctx.hub.publish(Event::Alert(alert));
    }
}

fn pct_shown(v: f64) -> String {
    format!("{v:.1}%")
}

/// An alert seen in the console is kept so, across a restart too.
fn acknowledged(ctx: &Ctx, lasting: &HashSet<&str>, engine: &AlertEngine, a: &Alert) {
    if a.state == AlertState::Acknowledged && engine.holds(&a.check, &a.id) {
        keep(ctx, lasting, a);
    }
}

/// Subscribes to the hub at once (so no event published after this call is
/// missed) and returns the task to spawn.
pub fn run(ctx: Ctx, shutdown: CancellationToken) -> impl std::future::Future<Output = ()> + Send {
    let rx = ctx.hub.subscribe();
    run_with(ctx, rx, shutdown)
}

/// The checks' state between samples.
struct Checks<'a> {
    ctx: &'a Ctx,
    engine: AlertEngine,
    lasting: HashSet<&'static str>,
    failures: Failures,
    latency_since: Instant,
    started: Ts,
    /// When each series' last candle arrived, by the wall clock.
    last_candle: HashMap<SeriesKey, Ts>,
    /// The hub's events folded, for the feed's state and the watchdog.
    view: View,
}

impl Checks<'_> {
    fn take(&mut self, r: Received) {
        match r {
            Received::Event(env) => {
                match &env.event {
                    Event::Candle(c) => {
                        self.last_candle.insert(SeriesKey::new(c.instrument, c.timeframe), Ts::now());
                    }
                    Event::Alert(a) => acknowledged(self.ctx, &self.lasting, &self.engine, a),
                    _ => {}
                }
                self.view.apply(&env);
            }
            Received::Resync { missed, view: fresh } => {
                tracing::debug!(missed, "the health checks fell behind the hub; resynced");
                // What the missed events would have told: which series had a
                // candle, and which alerts were acknowledged.
                for p in &fresh.pairs {
                    let before = self.view.pairs.iter().find(|q| q.key() == p.key()).and_then(|q| q.candle);
                    if p.candle.map(|c| c.time) != before.map(|c| c.time) {
                        self.last_candle.insert(p.key(), Ts::now());
                    }
                }
                for a in &fresh.alerts {
                    acknowledged(self.ctx, &self.lasting, &self.engine, a);
                }
                self.view = *fresh;
            }
        }
    }

    /// Every threshold against one system sample: the alerts to raise, and
    /// the health event.
    fn sample(&mut self, sys: crate::event::SystemSample) -> (Vec<Alert>, HealthSample) {
        let h = &self.ctx.health;
        let now = Ts::now();
        let inst = Instant::now();
        let reset = inst.duration_since(self.latency_since) >= LATENCY_WINDOW;
        if reset {
            self.latency_since = inst;
        }
        let latency = self.ctx.metrics.latency(reset);
        let mut alerts = Vec::new();
        let engine = &mut self.engine;
        let mut check = |d: &Describe<'_>, value: f64, limits: Limits| {
            if let Some(a) = engine.check(d, value, limits, inst, now) {
                alerts.push(a);
            }
        };
        let pct = |s: Severity, l: Limits| pct_shown(if s == Severity::Critical { l.critical } else { l.warning });
        for (name, title, value, limits) in [
            ("cpu", "CPU use", f64::from(sys.cpu), Limits { warning: h.cpu_warning, critical: h.cpu_critical }),
            (
                "memory",
                "memory use",
                sys.memory_pct(),
                Limits { warning: h.memory_warning, critical: h.memory_critical },
            ),
            (
                "disk",
                "the data directory's disk",
                sys.disk_pct(),
                Limits { warning: h.disk_warning, critical: h.disk_critical },
            ),
        ] {
            let d = Describe { check: name, title, shown: pct_shown(value), limit_shown: &|s| pct(s, limits) };
            check(&d, value, limits);
        }
        let (stale, market_open) = feed_checks(self.ctx, &self.view, &self.last_candle, self.started, now, &mut check);
        if let Some(n) = &self.ctx.notifier
            && let Ok(q) = n.status()
            && !q.routes.is_empty()
        {
            let (sent, failed) = sent_failed(&q);
            queue_checks(h, &q, self.failures.rate(inst, sent, failed), &mut check);
        }
        let limits = Limits {
            warning: h.latency_p95_warning.0.as_secs_f64() * 1000.0,
            critical: h.latency_p95_critical.0.as_secs_f64() * 1000.0,
        };
        let lim =
            |s: Severity| format!("{} ms", if s == Severity::Critical { limits.critical } else { limits.warning });
        let shown = format!("{:.1} ms", latency.p95);
        check(
            &Describe { check: "latency_p95", title: "signal latency (p95)", shown, limit_shown: &lim },
            latency.p95,
            limits,
        );
        let ws_clients = self.ctx.metrics.ws_clients();
        let engine_stalled_secs = self.ctx.liveness.as_ref().and_then(|l| match l.since() {
            Some(d) if d < super::liveness::STALLED_AFTER => None,
            Some(d) => Some(d.as_secs()),
            // Ended: as stalled as it gets.
            None => Some(u64::MAX),
        });
        let demo_clock = self.view.demo_clock();
        let sample = HealthSample {
            time: now,
            system: sys,
            latency,
            ws_clients,
            market_open,
            stale,
            engine_stalled_secs,
            demo_clock,
        };
        (alerts, sample)
    }
}

fn sent_failed(q: &crate::event::QueueStatus) -> (u64, u64) {
    q.routes.iter().fold((0, 0), |(s, f), r| (s + r.sent, f + r.failed))
}

/// Feed staleness, per series, knowing the FX week: the stale series, and
/// whether the market is open.
fn feed_checks(
    ctx: &Ctx,
    view: &View,
    last_candle: &HashMap<SeriesKey, Ts>,
    started: Ts,
    now: Ts,
    check: &mut impl FnMut(&Describe<'_>, f64, Limits),
) -> (Vec<Stale>, bool) {
    let h = &ctx.health;
    let feed_active = matches!(view.feed.as_ref().map(|f| f.state), Some(FeedState::Live | FeedState::Retrying));
    let limits = Limits {
        warning: h.stale_warning.0.as_secs_f64().max(1.0),
        critical: h.stale_critical.0.as_secs_f64().max(1.0),
    };
    let lim = |s: Severity| format!("{}s", if s == Severity::Critical { limits.critical } else { limits.warning });
    let mut stale = Vec::new();
    let mut market_open = true;
    for key in &ctx.series {
        let last = last_candle.get(key).copied().unwrap_or(started);
        let over = if feed_active { overdue(ctx.pace, *key, last, now) } else { Some(i64::MIN) };
        if over.is_none() {
            market_open = false;
        }
        let secs = over.unwrap_or(i64::MIN).max(0) as f64;
        if secs >= limits.warning {
            stale.push(Stale { instrument: key.instrument, timeframe: key.timeframe, overdue_secs: secs as u64 });
        }
        let name = format!("feed:{}:{}", key.instrument, key.timeframe);
        let title = format!("{} {} candles", key.instrument, key.timeframe);
        let shown = format!("{}s overdue", secs as u64);
        check(&Describe { check: &name, title: &title, shown, limit_shown: &lim }, secs, limits);
    }
    (stale, market_open)
}

/// The notification queue: its depth, its oldest entry, its failure rate.
fn queue_checks(
    h: &config::Health,
    q: &crate::event::QueueStatus,
    rate: f64,
    check: &mut impl FnMut(&Describe<'_>, f64, Limits),
) {
    let depth = q.depth.total() as f64;
    let limits = Limits { warning: h.queue_warning as f64, critical: h.queue_critical as f64 };
    let lim = |s: Severity| format!("{}", if s == Severity::Critical { limits.critical } else { limits.warning });
    let d = Describe { check: "queue", title: "notifications waiting", shown: format!("{depth}"), limit_shown: &lim };
    check(&d, depth, limits);
    let oldest = q.routes.iter().filter_map(|r| r.oldest_pending_secs).max().unwrap_or(0) as f64;
    let limits = Limits {
        warning: h.oldest_pending_warning.0.as_secs_f64(),
        critical: h.oldest_pending_critical.0.as_secs_f64(),
    };
    let lim = |s: Severity| format!("{}s", if s == Severity::Critical { limits.critical } else { limits.warning });
    let title = "the oldest waiting notification";
    check(
        &Describe { check: "oldest_pending", title, shown: format!("{oldest}s old"), limit_shown: &lim },
        oldest,
        limits,
    );
    let limits = Limits { warning: h.failure_rate_warning, critical: h.failure_rate_critical };
    let lim = |s: Severity| pct_shown(100.0 * if s == Severity::Critical { limits.critical } else { limits.warning });
    let d = Describe {
        check: "failure_rate",
        title: "notification failures",
        shown: pct_shown(rate * 100.0),
        limit_shown: &lim,
    };
    check(&d, rate, limits);
}

/// The heartbeat URL: a dead-man's switch, so silence is the alarm.
struct Heartbeat {
    url: String,
    http: reqwest::Client,
    failing: bool,
}

impl Heartbeat {
    fn new(h: &config::Health) -> Option<Heartbeat> {
        if h.heartbeat_url.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
        Some(Heartbeat { url: h.heartbeat_url.expose().to_string(), http, failing: false })
    }

    async fn beat(&mut self) {
        match self.http.get(self.url.as_str()).send().await.and_then(|r| r.error_for_status()) {
            Ok(_) => {
                if self.failing {
                    tracing::info!("the heartbeat URL answers again");
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    // The URL may carry a secret: never log it.
                    tracing::warn!(error = %crate::net::describe(e), "the heartbeat ping failed; retrying at the next beat");
                }
                self.failing = true;
            }
        }
    }
}

async fn run_with(ctx: Ctx, mut rx: crate::hub::Subscription, shutdown: CancellationToken) {
    let h = &ctx.health;
    let mut checks = Checks {
        ctx: &ctx,
        engine: AlertEngine::new(Rules { sustain: h.sustain.0, cooldown: h.cooldown.0, hysteresis: 0.05 }),
        lasting: lasting_checks(&ctx),
        failures: Failures { window: VecDeque::new() },
        latency_since: Instant::now(),
        started: Ts::now(),
        last_candle: HashMap::new(),
        view: View::default(),
    };
    let sampler = Arc::new(Mutex::new(Sampler::new(&ctx.data_dir)));
    // The first sample after one interval: CPU use is a difference of two readings.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + h.sample_every.0, h.sample_every.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(h.heartbeat_every.0);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = Heartbeat::new(h);
    if let Some(store) = &ctx.store {
        restore_alerts(&ctx, store, &checks.lasting, &mut checks.engine);
    }
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);

    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => checks.take(r),
                None => return,
            },
            _ = tick.tick() => {
                let s = sampler.clone();
                let sys = match tokio::task::spawn_blocking(move || s.lock().unwrap_or_else(|p| p.into_inner()).sample()).await {
                    Ok(sys) => sys,
                    Err(e) => {
                        tracing::warn!(error = %e, "the system sampler failed");
                        continue;
                    }
                };
                let (alerts, sample) = checks.sample(sys);
                for a in alerts {
                    // Written before the raise, whose flush makes it durable.
                    keep(&ctx, &checks.lasting, &a);
                    raise(&ctx, a).await;
                }
                ctx.hub.publish(Event::Health(sample));
                // Fed from the engine loop's own progress, never from the
                // outside world's state: an outage is not a reason to restart.
                if watchdog && ctx.liveness.as_ref().is_none_or(|l| l.alive()) {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = beat.tick(), if heartbeat.is_some() => {
                // Only a healthy pipwatch pings.
                if let Some(hb) = heartbeat.as_mut()
                    && ctx.liveness.as_ref().is_none_or(|l| l.alive())
                {
                    hb.beat().await;
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Instrument, Timeframe};

    fn utc(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> Ts {
        Ts::from_ymd_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn h1() -> SeriesKey {
        SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H1)
    }

    #[test]
    fn a_source_that_stops_goes_stale() {
        // Wednesday: the next H1 candle was due an hour after the last arrived.
        let last = utc(2024, 7, 10, 12, 0);
        assert_eq!(overdue(Pace::Market, h1(), last, utc(2024, 7, 10, 12, 30)), Some(-1800));
        assert_eq!(overdue(Pace::Market, h1(), last, utc(2024, 7, 10, 14, 0)), Some(3600));
        let demo = Pace::Every(Duration::from_secs(1));
        assert_eq!(overdue(demo, h1(), Ts(100), Ts(131)), Some(30));
        assert_eq!(overdue(Pace::Unpaced, h1(), Ts(100), Ts(1_000_000)), Some(i64::MIN));
    }

    #[test]
    fn no_staleness_across_a_weekend_close() {
        // Last candle Friday 20:00 UTC (16:00 NY, summer); the market closes at 21:00 UTC.
        let last = utc(2024, 7, 12, 20, 0);
        // During the weekend: market closed, not stale.
        assert_eq!(overdue(Pace::Market, h1(), last, utc(2024, 7, 13, 12, 0)), None);
        // Sunday 21:30 UTC, half an hour after the reopen: the first candle is not due yet.
        assert_eq!(overdue(Pace::Market, h1(), last, utc(2024, 7, 14, 21, 30)), Some(-1800));
        // Sunday 23:00 UTC: one hour after it was due.
        assert_eq!(overdue(Pace::Market, h1(), last, utc(2024, 7, 14, 23, 0)), Some(3600));
        // A synthetic feed has no weekend.
        assert!(overdue(Pace::Every(Duration::from_secs(60)), h1(), last, utc(2024, 7, 13, 12, 0)).unwrap() > 0);
    }

    #[test]
    fn failure_rate_needs_enough_requests() {
        let mut f = Failures { window: VecDeque::new() };
        let t = Instant::now();
        assert_eq!(f.rate(t, 0, 0), 0.0);
        assert_eq!(f.rate(t + Duration::from_secs(10), 1, 2), 0.0, "3 requests are too few to judge");
        assert_eq!(f.rate(t + Duration::from_secs(20), 5, 5), 0.5);
        // Old history leaves the window.
        assert_eq!(f.rate(t + Duration::from_secs(400), 10, 5), 0.0);
    }
}

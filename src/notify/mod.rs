//! The notifier: drains the durable outbox to Discord webhooks.
//!
//! The engine only writes the outbox (in the same transaction as the signal)
//! and wakes the notifier. Each route has its own task, so a slow or broken
//! webhook holds up nobody else. An entry leaves the outbox only when
//! Discord has confirmed it (`wait=true`) or when it is given up on and moved
//! to the dead list with why. A crash therefore loses nothing; the only
//! duplicates possible are requests that were in flight at the crash.

pub mod discord;
pub mod embed;
pub mod limits;
mod routing;
pub mod test_message;

pub use routing::{SIGNAL_PRIORITY, SignalRoutes, config_problems, priority};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Route, SourceKind};
use crate::event::{Alert, AlertState, Circuit, Delivery, DeliveryState, Depths, Event, QueueStatus, RouteStatus};
use crate::hub::Hub;
use crate::store::{Message, OutboxEntry, OutboxKey, Priority, Store, StoreError};
use crate::time::Ts;
use crate::types::Severity;
use discord::{Discord, Outcome, Webhook};
use embed::Payload;
use limits::{Breaker, Limits};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.routes[{index}] ('{name}'): the webhook {source}")]
    Webhook { index: usize, name: String, source: discord::NotAWebhook },
    #[error("cannot set up the HTTP client for Discord: {0}")]
    Client(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Delivery settings (`[notify]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub username: String,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Titles start with `[DEMO]`.
    pub demo: bool,
}

struct RouteRt {
    cfg: Route,
    webhook: Webhook,
    wake: Notify,
}

#[derive(Debug, Clone)]
struct RouteStats {
    circuit: Circuit,
    sent: u64,
    failed: u64,
    dead: u64,
    rate_limited: u64,
    waiting: bool,
    last_error: Option<String>,
}

struct Shared {
    store: Arc<Store>,
    hub: Arc<Hub>,
    discord: Discord,
    limits: Limits,
    routes: Vec<RouteRt>,
    signal_routes: Arc<SignalRoutes>,
    stats: Mutex<Vec<RouteStats>>,
    paused: watch::Sender<bool>,
    settings: Settings,
    /// Something changed that the queue status shows.
    changed: Notify,
    /// When each (message id, route) now in the outbox was committed, to the
    /// millisecond: the entries store whole seconds, which made a delivery's
    /// latency up to a second too long. Entries from before a restart are
    /// not here and fall back to the stored second.
    queued_at: Mutex<HashMap<(String, String), f64>>,
}

/// Wall-clock now as fractional unix seconds.
fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// What the rest of pipwatch holds to talk to the notifier. A reload
/// replaces the notifier behind it (`replace`): every clone then talks to
/// the new one.
#[derive(Clone)]
pub struct NotifierHandle {
    current: Arc<std::sync::RwLock<Arc<Shared>>>,
}

/// The notifier, configured and not yet running.
pub struct Notifier {
    shared: Arc<Shared>,
}

/// How long a worker waits before trying again after its store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// The queue status is published at most this often...
const STATUS_MIN_GAP: Duration = Duration::from_millis(250);
/// ...and at least this often while anything is pending (ages grow).
const STATUS_EVERY: Duration = Duration::from_secs(1);

impl Notifier {
    pub fn new(config: &Config, store: Arc<Store>, hub: Arc<Hub>) -> Result<Notifier, NotifyError> {
        let n = &config.notify;
        let mut routes = Vec::with_capacity(n.routes.len());
        for (index, r) in n.routes.iter().enumerate() {
            let webhook = Webhook::parse(r.webhook.expose()).map_err(|source| NotifyError::Webhook {
                index,
                name: r.name.clone(),
                source,
            })?;
            routes.push(RouteRt { cfg: r.clone(), webhook, wake: Notify::new() });
        }
        let discord = Discord::new(n.timeout.0).map_err(|e| NotifyError::Client(crate::net::describe(e)))?;
        let settings = Settings {
            username: n.username.clone(),
            retry_min: n.retry_min.0,
            retry_max: n.retry_max.0,
            max_attempts: n.max_attempts,
            max_age: n.max_age.0,
            breaker_failures: n.breaker_failures,
            breaker_cooldown: n.breaker_cooldown.0,
            demo: config.market.source == SourceKind::Demo,
        };
        let stats = routes
            .iter()
            .map(|_| RouteStats {
                circuit: Circuit::Closed,
                sent: 0,
                failed: 0,
                dead: 0,
                rate_limited: 0,
                waiting: false,
                last_error: None,
            })
            .collect();
        let paused = store.notifications_paused()?;
        Ok(Notifier {
            shared: Arc::new(Shared {
                store,
                hub,
                discord,
                limits: Limits::default(),
                signal_routes: Arc::new(SignalRoutes::new(&n.routes)),
                routes,
                stats: Mutex::new(stats),
                // A pause is the user's and outlives a restart: a crash
                // loop must not flood the channels someone silenced.
                paused: watch::channel(paused).0,
                settings,
                changed: Notify::new(),
                queued_at: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn handle(&self) -> NotifierHandle {
        NotifierHandle { current: Arc::new(std::sync::RwLock::new(self.shared.clone())) }
    }

    /// Runs one task per route and the status publisher until `shutdown`.
    /// A request in flight is finished (its own timeout bounds it), so that
    /// what Discord accepted is also taken off the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        let pending = self.shared.store.outbox().map(|(pending, _)| pending);
        if let Ok(pending) = &pending {
            self.shared.name_waiting_for_absent_routes(pending);
        }
        if self.shared.routes.is_empty() {
            tracing::info!("no notification routes configured ([[notify.routes]]): signals are not sent anywhere");
            return;
        }
        let mut tasks = JoinSet::new();
        for index in 0..self.shared.routes.len() {
            tasks.spawn(worker(self.shared.clone(), index, shutdown.clone()));
        }
        tasks.spawn(status_task(self.shared.clone(), shutdown.clone()));
        match pending {
            Ok(pending) => {
                tracing::info!(routes = self.shared.routes.len(), pending = pending.len(), "notifier started");
                if *self.shared.paused.borrow() {
                    tracing::warn!(
                        "notifications are paused, as they were when pipwatch last stopped: `p` in the console or {{\"op\":\"resume\"}} on /ws resumes them"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "notifier started, but the outbox cannot be read"),
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r
                && e.is_panic()
            {
                tracing::error!(error = %e, "a notifier task crashed; the outbox keeps its messages for the next start");
            }
        }
    }
}

impl NotifierHandle {
    fn shared(&self) -> Arc<Shared> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on this handle and its clones talk to `next` (a reload's
    /// notifier). The old one's tasks are stopped by whoever ran them.
    ///
    /// A route that keeps its name keeps its counts: they are counters to
    /// whoever scrapes them (`pipwatch_discord_rate_limited` is fed by their
    /// growth), and a reload that zeroed them hid the next 429s from it.
    pub fn replace(&self, next: &Notifier) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        next.shared.carry_from(&current);
        *current = next.shared.clone();
    }

    /// Which routes take signals and outcomes, as the current config says:
    /// the engine asks before each batch it commits.
    pub fn signal_routes(&self) -> Arc<SignalRoutes> {
        self.shared().signal_routes.clone()
    }

    /// These (message id, route) entries were just committed and flushed:
    /// noted for their delivery latency, and the routes woken.
    pub fn queued(&self, entries: &[(String, String)]) {
        self.shared().note_queued(entries.iter().cloned());
        self.wake();
    }

    /// New outbox entries were committed: look now rather than at the next timer.
    pub fn wake(&self) {
        let shared = self.shared();
        for r in &shared.routes {
            r.wake.notify_one();
        }
        shared.changed.notify_one();
    }

    /// Pausing keeps everything queued and sends nothing until resumed.
    /// Kept in the store (durable with its next flush), so a restart keeps it.
    pub fn set_paused(&self, paused: bool) {
        let shared = self.shared();
        shared.paused.send_replace(paused);
        tracing::info!(paused, "notifications {}", if paused { "paused" } else { "resumed" });
        if let Err(e) = shared.store.set_notifications_paused(paused) {
            tracing::warn!(error = %e, "the pause holds until pipwatch stops, but could not be kept for the next start");
        }
        shared.changed.notify_one();
    }

    pub fn paused(&self) -> bool {
        *self.shared().paused.borrow()
    }

    /// The queue status as of now (read from the outbox, not a cached copy).
    pub fn status(&self) -> Result<QueueStatus, StoreError> {
        self.shared().status()
    }

    /// Publishes an alert and queues it durably for every route that takes it.
    pub async fn raise(&self, alert: Alert) -> Result<(), StoreError> {
        self.shared().raise(alert, None).await
    }
}

fn route_names_for_alert(shared: &Shared, severity: Severity, except: Option<usize>) -> Vec<usize> {
    let stats = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
    (0..shared.routes.len())
        .filter(|&i| Some(i) != except && stats[i].circuit != Circuit::Disabled)
        .filter(|&i| shared.routes[i].cfg.takes_alert(severity))
        .collect()
}

impl Shared {
    async fn raise(&self, alert: Alert, except: Option<usize>) -> Result<(), StoreError> {
        let takers = route_names_for_alert(self, alert.severity, except);
        let now = Ts::now();
        let message = Message::Alert(alert.clone());
        let priority = priority(&message);
        let entries: Vec<(Priority, OutboxEntry)> = takers
            .iter()
            .map(|&i| {
                let route = self.routes[i].cfg.name.clone();
                let e = OutboxEntry {
                    route,
                    message: message.clone(),
                    created: now,
                    not_before: now,
                    attempts: 0,
                    last_error: None,
                };
                (priority, e)
            })
            .collect();
        if !entries.is_empty() {
            self.store.enqueue(&entries)?;
            self.store.flush().await?;
            self.note_queued(entries.into_iter().map(|(_, e)| (alert.id.clone(), e.route)));
        }
        self.hub.publish(Event::Alert(alert.clone()));
        for &i in &takers {
            self.delivery(&alert.id, i, DeliveryState::Queued, 0, None, None);
            self.routes[i].wake.notify_one();
        }
        Ok(())
    }

    fn note_queued(&self, entries: impl Iterator<Item = (String, String)>) {
        let now = unix_now();
        let mut at = self.queued_at.lock().unwrap_or_else(|p| p.into_inner());
        at.extend(entries.map(|k| (k, now)));
        // Delivery or burial takes each time out again; one delivered between
        // its commit and this note would stay. Past max_age nothing is sent.
        if at.len() > 10_000 {
            let max_age = self.settings.max_age.as_secs_f64();
            at.retain(|_, t| now - *t <= max_age);
        }
    }

    /// When `e` became due, in fractional unix seconds; forgets its commit time.
    fn take_due(&self, e: &OutboxEntry) -> f64 {
        let key = (e.message.id().to_string(), e.route.clone());
        let committed = self.queued_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        // A route's delay is whole seconds from the same clock reading as `created`.
        committed.map_or(e.not_before.0 as f64, |t| t + (e.not_before.0 - e.created.0) as f64)
    }

    fn delivery(
        &self,
        id: &str,
        route: usize,
        state: DeliveryState,
        attempts: u32,
        message_id: Option<String>,
        error: Option<String>,
    ) {
        self.publish_delivery(Delivery {
            id: id.to_string(),
            route: self.routes[route].cfg.name.clone(),
            state,
            attempts,
            message_id,
            error,
            latency_secs: None,
        });
    }

    fn publish_delivery(&self, d: Delivery) {
        self.hub.publish(Event::Delivery(d));
    }

    fn stats(&self, route: usize, f: impl FnOnce(&mut RouteStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut stats[route]);
        drop(stats);
        self.changed.notify_one();
    }

    /// Moves entries to the dead list, durably, and says so.
    async fn bury(&self, route: usize, entries: Vec<(OutboxKey, OutboxEntry)>, error: &str) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.store.bury(&entries, error, Ts::now())?;
        self.store.flush().await?;
        tracing::error!(route = %self.routes[route].cfg.name, count = entries.len(), %error,
            "notifications moved to the dead list (`pipwatch dead list` shows them, `pipwatch dead retry` sends them again)");
        self.stats(route, |s| s.dead += entries.len() as u64);
        for (_, e) in &entries {
            let _ = self.take_due(e);
            self.delivery(e.message.id(), route, DeliveryState::Dead, e.attempts, None, Some(error.to_string()));
        }
        Ok(())
    }

    /// Messages queued for a route the config no longer has stay in the
    /// outbox for when it is back (nothing is dropped behind the user's
    /// back); the log says how many wait, and for which names.
    fn name_waiting_for_absent_routes(&self, pending: &[(OutboxKey, OutboxEntry)]) {
        let mut absent = std::collections::BTreeMap::<&str, usize>::new();
        for (_, e) in pending {
            if !self.routes.iter().any(|r| r.cfg.name == e.route) {
                *absent.entry(e.route.as_str()).or_default() += 1;
            }
        }
        for (route, count) in absent {
            tracing::warn!(
                route,
                count,
                "notifications wait in the outbox for a route that is not in the config ([[notify.routes]]): they are sent once a route of that name is back"
            );
        }
    }

    /// Takes over `old`'s counts for the routes of the same name, and when
    /// each entry still queued was committed. The circuit is not taken over:
    /// a reload is someone's word to try a route again.
    fn carry_from(&self, old: &Shared) {
        let before = old.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        for (route, s) in self.routes.iter().zip(stats.iter_mut()) {
            if let Some(b) =
                old.routes.iter().zip(&before).find_map(|(r, b)| (r.cfg.name == route.cfg.name).then_some(b))
            {
                s.sent = b.sent;
                s.failed = b.failed;
                s.dead = b.dead;
                s.rate_limited = b.rate_limited;
                s.last_error.clone_from(&b.last_error);
            }
        }
        drop(stats);
        let queued = old.queued_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.queued_at.lock().unwrap_or_else(|p| p.into_inner()).extend(queued);
    }

    fn status(&self) -> Result<QueueStatus, StoreError> {
        let (pending, _) = self.store.outbox()?;
        let now = Ts::now();
        let mut depth = Depths::default();
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut routes: Vec<RouteStatus> = self
            .routes
            .iter()
            .zip(stats)
            .map(|(r, s)| RouteStatus {
                name: r.cfg.name.clone(),
                circuit: s.circuit,
                depth: 0,
                oldest_pending_secs: None,
                sent: s.sent,
                failed: s.failed,
                dead: s.dead,
                rate_limited: s.rate_limited,
                waiting: s.waiting,
                last_error: s.last_error,
            })
            .collect();
        for (key, e) in &pending {
            match key.priority() {
                Priority::Urgent => depth.urgent += 1,
                Priority::High => depth.high += 1,
                Priority::Normal => depth.normal += 1,
                Priority::Low => depth.low += 1,
            }
            if let Some(r) = routes.iter_mut().find(|r| r.name == e.route) {
                r.depth += 1;
                if e.not_before <= now {
                    let age = u64::try_from(now.0 - e.not_before.0).unwrap_or(0);
                    r.oldest_pending_secs = Some(r.oldest_pending_secs.map_or(age, |o| o.max(age)));
                }
            }
        }
        Ok(QueueStatus { paused: *self.paused.borrow(), depth, routes })
    }
}

async fn status_task(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut last = None;
    loop {
        match shared.status() {
            Ok(status) => {
                if last.as_ref() != Some(&status) {
                    shared.hub.publish(Event::Queue(status.clone()));
                    last = Some(status);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the outbox for the queue status"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep(STATUS_EVERY) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STATUS_MIN_GAP) => {}
        }
    }
}

/// Sleeps until `until`, or returns false if shut down first.
async fn sleep_until(until: Instant, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// What one route's worker keeps between requests.
struct Worker {
    shared: Arc<Shared>,
    index: usize,
    breaker: Breaker,
    /// After a failed request: nothing before this.
    retry_at: Option<Instant>,
    /// Entries that were in a batch Discord rejected: sent one by one, so the
    /// bad one is found and the others still go.
    solo: HashSet<OutboxKey>,
    disabled: Option<String>,
    unreadable_reported: bool,
}

async fn worker(shared: Arc<Shared>, index: usize, shutdown: CancellationToken) {
    let s = &shared.settings;
    let mut w = Worker {
        breaker: Breaker::new(s.breaker_failures, s.breaker_cooldown),
        shared: shared.clone(),
        index,
        retry_at: None,
        solo: HashSet::new(),
        disabled: None,
        unreadable_reported: false,
    };
    let mut paused = shared.paused.subscribe();
    while !shutdown.is_cancelled() {
        if *paused.borrow_and_update() {
            tokio::select! {
                _ = paused.changed() => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        match w.step(&shutdown).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::error!(route = %shared.routes[index].cfg.name, error = %e,
                    "the notifier cannot use the store; messages stay queued, retrying");
                if !sleep_until(Instant::now() + STORE_RETRY, &shutdown).await {
                    break;
                }
            }
        }
    }
}

impl Worker {
    fn route(&self) -> &RouteRt {
        &self.shared.routes[self.index]
    }

    fn my_entries(&mut self) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let name = &self.route().cfg.name;
        let (mine, bad) = self.shared.store.outbox_for(name)?;
        if !bad.is_empty() && !self.unreadable_reported {
            self.unreadable_reported = true;
            tracing::error!(problems = ?bad, "outbox entries that cannot be read are left in place");
        }
        Ok(mine)
    }

    /// One turn: wait for what blocks this route, or send one request.
    /// Returns false when shut down.
    async fn step(&mut self, shutdown: &CancellationToken) -> Result<bool, StoreError> {
        let shared = self.shared.clone();
        let route = &shared.routes[self.index];
        let now = Instant::now();
        if let Some(t) = self.retry_at.filter(|&t| t > now) {
            return Ok(sleep_until(t, shutdown).await);
        }
        if let Err(until) = self.breaker.allow(now) {
            return Ok(sleep_until(until, shutdown).await);
        }
        let circuit = self.breaker.state();
        shared.stats(self.index, |s| {
            if s.circuit != Circuit::Disabled {
                s.circuit = circuit;
            }
        });

        let mine = self.my_entries()?;
        if let Some(reason) = self.disabled.clone() {
            // An edit rewrites a message on a webhook that no longer exists:
            // there is nothing to keep it for (its signal is in the dead list).
            let (edits, mine): (Vec<_>, Vec<_>) =
                mine.into_iter().partition(|(_, e)| matches!(e.message, Message::Edit(_)));
            if !edits.is_empty() {
                shared.store.remove_entries(&edits.iter().map(|(k, _)| *k).collect::<Vec<_>>())?;
            }
            shared.bury(self.index, mine, &format!("route disabled: {reason}")).await?;
            tokio::select! {
                _ = route.wake.notified() => return Ok(true),
                _ = shutdown.cancelled() => return Ok(false),
            }
        }
        let now_ts = Ts::now();
        let max_age = i64::try_from(shared.settings.max_age.as_secs()).unwrap_or(i64::MAX);
        let (expired, live): (Vec<_>, Vec<_>) = mine.into_iter().partition(|(_, e)| {
            e.attempts >= shared.settings.max_attempts || now_ts.0.saturating_sub(e.created.0) > max_age
        });
        for (k, e) in expired {
            let why = if e.attempts >= shared.settings.max_attempts {
                format!("gave up after {} failed attempts", e.attempts)
            } else {
                format!("older than notify.max_age ({})", humantime::format_duration(shared.settings.max_age))
            };
            let error = match &e.last_error {
                Some(last) => format!("{why}; last error: {last}"),
                None => why,
            };
            shared.bury(self.index, vec![(k, e)], &error).await?;
        }
        let (due, later): (Vec<_>, Vec<_>) = live.into_iter().partition(|(_, e)| e.not_before <= now_ts);
        self.solo.retain(|k| due.iter().any(|(d, _)| d == k));
        if due.is_empty() {
            let next = later.iter().map(|(_, e)| e.not_before.0 - now_ts.0).min();
            let nap = next.map_or(Duration::from_secs(3600), |s| Duration::from_secs(s.max(0) as u64 + 1));
            tokio::select! {
                _ = route.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.cancelled() => return Ok(false),
            }
            return Ok(true);
        }

        // One request in flight per webhook; wait for its bucket to have room.
        let key = route.webhook.key();
        let lane = shared.limits.lane(key);
        let _in_flight = tokio::select! {
            g = lane.lock() => g,
            _ = shutdown.cancelled() => return Ok(false),
        };
        if let Some(t) = shared.limits.ready_at(key, Instant::now()) {
            shared.stats(self.index, |s| s.waiting = true);
            let go_on = sleep_until(t, shutdown).await;
            shared.stats(self.index, |s| s.waiting = false);
            // Look again after the wait: more urgent messages may have come.
            return Ok(go_on);
        }

        // An edit rewrites a message already sent: on its own, as a PATCH.
        if matches!(due.first().map(|(_, e)| &e.message), Some(Message::Edit(_))) {
            shared.limits.sent(key);
            let edited = self.edit(due, key).await;
            drop(_in_flight);
            edited?;
            return Ok(true);
        }
        let batch = self.batch(due);
        let embeds: Vec<_> = batch.iter().map(|(_, e)| embed::for_message(&e.message, shared.settings.demo)).collect();
        let quiet = embeds.iter().all(|(_, q)| *q);
        let embeds: Vec<_> = embeds.into_iter().map(|(e, _)| e).collect();
        let n = embed::pack(&embeds);
        let (batch, embeds) = (&batch[..n], &embeds[..n]);
        shared.limits.sent(key);
        let answer =
            shared.discord.execute(&route.webhook, &Payload::new(&shared.settings.username, embeds, quiet)).await;
        shared.limits.update(key, Instant::now(), &answer.headers);
        drop(_in_flight);
        self.handle(answer.outcome, batch).await?;
        Ok(true)
    }

    /// Due entries in delivery order, cut before any entry that must go alone.
    fn batch(&self, due: Vec<(OutboxKey, OutboxEntry)>) -> Vec<(OutboxKey, OutboxEntry)> {
        let mut out = Vec::new();
        for (k, e) in due.into_iter().take(embed::MAX_EMBEDS) {
            // Edits go on their own (see `edit`).
            if matches!(e.message, Message::Edit(_)) {
                break;
            }
            if self.solo.contains(&k) {
                if out.is_empty() {
                    out.push((k, e));
                }
                break;
            }
            out.push((k, e));
        }
        out
    }

    /// Edits the message of the first due entry's signal on this route with
    /// its trade's outcome: the whole message (every signal a batch put in
    /// it, each with what is known of its outcome), and every edit waiting
    /// for the same message goes in this one PATCH. A signal not sent yet
    /// takes its outcome with it instead; a message Discord no longer has
    /// (deleted by a moderator) loses the edit, not the route.
    async fn edit(&mut self, due: Vec<(OutboxKey, OutboxEntry)>, limit_key: &str) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let route = &shared.routes[self.index];
        let name = route.cfg.name.clone();
        let demo = shared.settings.demo;
        let Some((key, Message::Edit(trade))) = due.first().map(|(k, e)| (*k, &e.message)) else { return Ok(()) };
        let stored = shared.store.signal(&trade.id)?;
        let receipt = stored.as_ref().and_then(|s| s.receipts.iter().find(|r| r.route == name));
        let Some(message_id) = receipt.and_then(|r| r.message_id.clone()) else {
            let pending = shared.store.outbox_for(&name)?.0.into_iter().find_map(|(k, e)| match &e.message {
                Message::Signal(s) if s.id == trade.id => Some((k, s.clone(), e)),
                _ => None,
            });
            match (receipt, pending) {
                (None, Some((k, s, mut e))) => {
                    e.message = Message::Closed(s, trade.clone());
                    shared.store.update(k, &e)?;
                    tracing::info!(route = %name, id = %trade.id, "the signal was not sent yet: it goes out with its outcome");
                }
                (Some(_), _) => tracing::info!(route = %name, id = %trade.id,
                    "Discord gave no id for the signal's message, so it cannot be edited: the outcome edit is dropped"),
                (None, None) => tracing::info!(route = %name, id = %trade.id,
                    "the signal's message is not there to edit (given up on, or no longer kept): the outcome edit is dropped"),
            }
            shared.store.remove_entries(&[key])?;
            shared.store.flush().await?;
            return Ok(());
        };
        let mut covered = vec![key];
        let mut embeds = Vec::new();
        for m in shared.store.signals_in_message(&name, &message_id)? {
            let waiting = due.iter().find_map(|(k, e)| match &e.message {
                Message::Edit(t) if t.id == m.signal.id => Some((*k, t.clone())),
                _ => None,
            });
            let outcome = match waiting {
                Some((k, t)) => {
                    if !covered.contains(&k) {
                        covered.push(k);
                    }
                    Some(t)
                }
                None => shared.store.outcome_of(&m.signal)?,
            };
            embeds.push(match &outcome {
                Some(t) => embed::signal_closed(&m.signal, t, demo),
                None => embed::signal(&m.signal, demo),
            });
        }
        if embeds.is_empty()
            && let Some(s) = &stored
        {
            embeds.push(embed::signal_closed(&s.signal, trade, demo));
        }
        let answer = shared.discord.edit(&route.webhook, &message_id, &embed::EditPayload::new(&embeds)).await;
        shared.limits.update(limit_key, Instant::now(), &answer.headers);
        match answer.outcome {
            Outcome::Delivered { .. } => {
                shared.store.remove_entries(&covered)?;
                shared.store.flush().await?;
                self.breaker.success();
                self.retry_at = None;
                shared.stats(self.index, |s| s.sent += 1);
                tracing::debug!(route = %name, %message_id, edits = covered.len(), "message edited with its outcome");
                Ok(())
            }
            Outcome::Gone { status, code, message } => {
                tracing::warn!(route = %name, %message_id, status, code = ?code, %message,
                    "the signal's message cannot be edited (deleted?): the outcome edit is dropped; the route goes on");
                shared.store.remove_entries(&covered)?;
                shared.store.flush().await?;
                Ok(())
            }
            other => {
                let batch: Vec<_> = due.into_iter().filter(|(k, _)| covered.contains(k)).collect();
                self.handle(other, &batch).await
            }
        }
    }

    /// Acts on Discord's answer to one request for `batch`.
    async fn handle(&mut self, outcome: Outcome, batch: &[(OutboxKey, OutboxEntry)]) -> Result<(), StoreError> {
        match outcome {
            Outcome::Delivered { message_id } => self.delivered(batch, message_id).await,
            Outcome::RateLimited { retry_after, global, shared, json } => {
                self.rate_limited(retry_after, global, shared, json);
                Ok(())
            }
            Outcome::Gone { status, code, message } => self.gone(status, code, &message).await,
            Outcome::Rejected { status, code, message } => self.rejected(batch, status, code, &message).await,
            Outcome::Retry { reason } => self.retry(batch, reason).await,
        }
    }

    async fn delivered(
        &mut self,
        batch: &[(OutboxKey, OutboxEntry)],
        message_id: Option<String>,
    ) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let name = &shared.routes[self.index].cfg.name;
        let index = self.index;
        let done: Vec<_> = batch.iter().map(|(k, e)| (*k, e)).collect();
        shared.store.delivered(&done, message_id.as_deref(), Ts::now())?;
        shared.store.flush().await?;
        self.breaker.success();
        self.retry_at = None;
        shared.stats(index, |s| {
            s.sent += batch.len() as u64;
            s.circuit = Circuit::Closed;
            s.last_error = None;
        });
        tracing::debug!(route = %name, count = batch.len(), message_id = message_id.as_deref().unwrap_or(""), "delivered");
        // From when each message was due (a delayed route's delay is not latency).
        let now = unix_now();
        for (_, e) in batch {
            let due = shared.take_due(e);
            shared.publish_delivery(Delivery {
                id: e.message.id().to_string(),
                route: name.clone(),
                state: DeliveryState::Delivered,
                attempts: e.attempts + 1,
                message_id: message_id.clone(),
                error: None,
                latency_secs: Some((now - due).max(0.0)),
            });
        }
        Ok(())
    }

    fn rate_limited(&mut self, retry_after: Duration, global: bool, shared_scope: bool, json: bool) {
        let shared = self.shared.clone();
        let name = &shared.routes[self.index].cfg.name;
        let index = self.index;
        shared.limits.rate_limited(self.route().webhook.key(), Instant::now(), retry_after, global);
        shared.stats(index, |s| s.rate_limited += 1);
        let wait = format!("{:.1}s", retry_after.as_secs_f64());
        if !json {
            tracing::error!(route = %name, %wait, "Discord answered 429 without its JSON body: this looks like a Cloudflare ban of this IP; backing off");
        } else if global {
            tracing::warn!(route = %name, %wait, "global rate limit: all webhooks wait");
        } else if shared_scope {
            tracing::info!(route = %name, %wait, "the channel's shared rate limit was hit; waiting as Discord asks");
        } else {
            tracing::warn!(route = %name, %wait, "rate limited although the bucket had room; waiting as Discord asks");
        }
    }

    async fn gone(&mut self, status: u16, code: Option<u64>, message: &str) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let name = &shared.routes[self.index].cfg.name;
        let index = self.index;
        let reason = discord::explain_gone(status, code, message);
        tracing::error!(route = %name, %reason, "route disabled: no more requests go to this webhook");
        self.disabled = Some(reason.clone());
        shared.stats(index, |s| {
            s.circuit = Circuit::Disabled;
            s.last_error = Some(reason.clone());
        });
        let now = Ts::now();
        let alert = Alert {
            id: format!("route:{name}:{now}"),
            check: format!("route:{name}"),
            severity: Severity::Critical,
            state: AlertState::Raised,
            title: format!("notification route '{name}' disabled"),
            message: format!(
                "{reason}. Its messages are kept in the dead list: fix the webhook of route '{name}', restart, then run `pipwatch dead retry --route {name}`."
            ),
            time: now,
        };
        shared.raise(alert, Some(index)).await?;
        // Everything still queued for this route follows on the next turn.
        Ok(())
    }

    async fn rejected(
        &mut self,
        batch: &[(OutboxKey, OutboxEntry)],
        status: u16,
        code: Option<u64>,
        message: &str,
    ) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let name = &shared.routes[self.index].cfg.name;
        let index = self.index;
        let error = format!(
            "Discord rejected the message ({status}{}): {message}",
            code.map(|c| format!(", code {c}")).unwrap_or_default()
        );
        if batch.len() > 1 {
            tracing::warn!(route = %name, count = batch.len(), %error, "a batch was rejected; sending its messages one by one");
            self.solo.extend(batch.iter().map(|(k, _)| *k));
        } else {
            shared.stats(index, |s| s.last_error = Some(error.clone()));
            shared.bury(index, batch.to_vec(), &error).await?;
        }
        Ok(())
    }

    async fn retry(&mut self, batch: &[(OutboxKey, OutboxEntry)], reason: String) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let name = &shared.routes[self.index].cfg.name;
        let index = self.index;
        let now = Instant::now();
        let opened = self.breaker.failure(now);
        let failures = self.breaker.failures();
        let wait = crate::net::backoff(failures, shared.settings.retry_min, shared.settings.retry_max);
        self.retry_at = Some(now + wait);
        for (k, e) in batch {
            let mut e = e.clone();
            e.attempts += 1;
            e.last_error = Some(reason.clone());
            shared.store.update(*k, &e)?;
            // An edit's failure is not its signal's: the signal was delivered.
            if !matches!(e.message, Message::Edit(_)) {
                shared.delivery(e.message.id(), index, DeliveryState::Failed, e.attempts, None, Some(reason.clone()));
            }
        }
        shared.store.flush().await?;
        let circuit = self.breaker.state();
        shared.stats(index, |s| {
            s.failed += batch.len() as u64;
            s.circuit = circuit;
            s.last_error = Some(reason.clone());
        });
        if opened {
            tracing::warn!(route = %name, failures, %reason,
                cooldown = %humantime::format_duration(shared.settings.breaker_cooldown),
                "circuit open: this route pauses, then probes with one request");
        } else {
            tracing::warn!(route = %name, failures, %reason, retry_in = %format!("{:.1}s", wait.as_secs_f64()),
                "delivery failed; the messages stay queued");
        }
        Ok(())
    }
}

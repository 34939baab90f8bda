//! The notifier against a Discord-like server on 127.0.0.1:0, with a real
//! sled store in a temp dir: limits, outages, deleted webhooks, rejections.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::discord;
use pipwatch::config::{Config, Dur, Route, RouteEvent, Secret, Severity};
use pipwatch::engine::{SeriesState, StrategyParams};
use pipwatch::event::{Alert, AlertState, Circuit, Event, Signal};
use pipwatch::hub::Hub;
use pipwatch::notify::{Notifier, NotifierHandle};
use pipwatch::store::{CandleCommit, Priority, Store};
use pipwatch::time::Ts;
use pipwatch::types::{Instrument, SeriesKey, Side, Timeframe};
use tokio_util::sync::CancellationToken;

fn route(name: &str, webhook: String, events: &[RouteEvent]) -> Route {
    Route { name: name.into(), webhook: Secret::new(webhook), events: events.to_vec(), ..Route::default() }
}

/// Short waits so the tests finish in seconds; the logic is the same.
fn config(routes: Vec<Route>) -> Config {
    let mut c = Config::default();
    c.notify.routes = routes;
    c.notify.timeout = Dur(Duration::from_secs(2));
    c.notify.retry_min = Dur(Duration::from_millis(200));
    c.notify.retry_max = Dur(Duration::from_secs(2));
    c.notify.breaker_failures = 3;
    c.notify.breaker_cooldown = Dur(Duration::from_secs(2));
    c
}

fn signal(n: i64) -> Signal {
    let i = Instrument::new("EUR_USD").unwrap();
    let time = Ts(1_704_067_200 + n * 3600);
    let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
    Signal {
        id: Signal::make_id(i, Timeframe::H1, time, side),
        instrument: i,
        timeframe: Timeframe::H1,
        time,
        side,
        price: 1.1,
        fast: 1.1001,
        slow: 1.1,
        atr: 0.0012,
        stop_loss: 1.0982,
        take_profit: 1.1036,
        strategy: "sma 10/20".into(),
    }
}

struct Rig {
    store: Arc<Store>,
    hub: Arc<Hub>,
    handle: NotifierHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(config: &Config) -> Rig {
        Rig::start_with(config, false)
    }

    /// Paused before the notifier's task starts: paused later, its first
    /// pass may already be under way and send whatever is queued by then
    /// (under load, a batch of one before the rest).
    fn start_paused(config: &Config) -> Rig {
        Rig::start_with(config, true)
    }

    fn start_with(config: &Config, paused: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let hub = Arc::new(Hub::new(100_000));
        let notifier = Notifier::new(config, store.clone(), hub.clone()).unwrap();
        let handle = notifier.handle();
        handle.set_paused(paused);
        let stop = CancellationToken::new();
        let task = tokio::spawn(notifier.run(stop.clone()));
        Rig { store, hub, handle, stop, task, _dir: dir }
    }

    /// Commits signals the way the engine does (with their outbox entries).
    async fn signals(&self, range: std::ops::Range<i64>, routes: &[&str]) -> Vec<String> {
        let state = SeriesState::new(StrategyParams::default());
        let key = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H1);
        let routes: Vec<(String, i64)> = routes.iter().map(|r| (r.to_string(), 0)).collect();
        let mut ids = Vec::new();
        let mut queued = Vec::new();
        for n in range {
            let s = signal(n);
            let c = CandleCommit {
                key,
                candle: None,
                state: &state,
                signal: Some(&s),
                routes: &routes,
                now: Ts::now(),
                priority: Priority::High,
            };
            assert!(self.store.commit(&c).unwrap());
            queued.extend(routes.iter().map(|(r, _)| (s.id.clone(), r.clone())));
            ids.push(s.id);
        }
        self.store.flush().await.unwrap();
        self.handle.queued(&queued);
        ids
    }

    fn pending(&self) -> usize {
        self.store.outbox().unwrap().0.len()
    }

    /// The status of the route named `name`.
    fn route(&self, name: &str) -> pipwatch::event::RouteStatus {
        self.handle.status().unwrap().routes.into_iter().find(|r| r.name == name).unwrap()
    }

    /// A reload as the instance does it: the running notifier stops, and a
    /// new one from `config` takes over the handle and runs.
    async fn reload(self, config: &Config) -> Rig {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
        let next = Notifier::new(config, self.store.clone(), self.hub.clone()).unwrap();
        self.handle.replace(&next);
        let stop = CancellationToken::new();
        let task = tokio::spawn(next.run(stop.clone()));
        Rig { stop, task, ..self }
    }

    async fn stop(self) -> Arc<Store> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
        self.store
    }
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_signals_is_delivered_completely_without_a_single_429() {
    let server = discord::start().await;
    // Queued while paused so that the batches are full regardless of timing.
    let rig = Rig::start_paused(&config(vec![route("signals", server.webhook(1, "tok-a"), &[RouteEvent::Signal])]));
    let ids = rig.signals(0..100, &["signals"]).await;
    rig.handle.set_paused(false);
    until(Duration::from_secs(30), "the outbox drains", || rig.pending() == 0).await;
    let store = rig.stop().await;

    let w = server.world.lock().unwrap();
    assert_eq!(w.count_status(429), 0, "steady state must cause no 429");
    assert_eq!(sorted(w.delivered_ids()), sorted(ids.clone()), "each signal exactly once");
    // Batched: 10 embeds a request, so 10 requests instead of 100.
    assert_eq!(w.requests.len(), 10);
    assert!(w.requests.iter().all(|r| r.path == "/api/v10/webhooks/1/tok-a" && r.query == "wait=true"));
    let first = &w.requests[0].body;
    assert_eq!(first["allowed_mentions"], serde_json::json!({"parse": []}));
    assert_eq!(first["username"], "pipwatch");
    assert!(first["embeds"][0]["title"].as_str().unwrap().starts_with("[DEMO] "), "demo titles are marked");
    // Oldest first within a priority.
    assert_eq!(w.requests[0].ids(), ids[..10].to_vec());
    // Discord's message id is stored with each signal.
    for id in &ids {
        let stored = store.signal(id).unwrap().unwrap();
        assert_eq!(stored.receipts.len(), 1);
        assert!(stored.receipts[0].message_id.as_deref().is_some_and(|m| m.parse::<u64>().is_ok()));
    }
}

/// A delivery's latency counts from its commit, to the millisecond. Counted
/// from the start of the commit's second (all the stored entry knows), it
/// was up to a second too long: here more than the whole test takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_latency_counts_from_the_commit_not_from_its_second() {
    use pipwatch::event::DeliveryState;
    let server = discord::start().await;
    let rig = Rig::start(&config(vec![route("signals", server.webhook(1, "t"), &[RouteEvent::Signal])]));
    let mut events = rig.hub.subscribe();
    // Late in a second, so that the start of the second is over half a second back.
    while chrono::Utc::now().timestamp_subsec_millis() < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = Instant::now();
    let ids = rig.signals(0..1, &["signals"]).await;
    let latency = loop {
        let e =
            tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap().into_event().unwrap();
        if let Event::Delivery(d) = &e.event
            && d.id == ids[0]
            && d.state == DeliveryState::Delivered
        {
            break d.latency_secs.unwrap();
        }
    };
    let whole = before.elapsed().as_secs_f64();
    // The latency is stamped on the wall clock, `whole` on the monotonic one:
    // they may differ by a millisecond. Counting from the second's start
    // would add over half a second.
    assert!(latency <= whole + 0.01, "latency {latency:.3}s, but commit to delivery event took {whole:.3}s");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_alerts_never_wait_behind_signals_or_status() {
    let server = discord::start().await;
    let mut r = route("ops", server.webhook(1, "t"), &[RouteEvent::Signal, RouteEvent::Alert]);
    r.min_severity = Severity::Info;
    let cfg = config(vec![r]);
    let rig = Rig::start_paused(&cfg);
    let alert = |sev: Severity, id: &str| Alert {
        id: id.into(),
        check: "test".into(),
        severity: sev,
        state: AlertState::Raised,
        title: id.into(),
        message: "m".into(),
        time: Ts::now(),
    };
    rig.handle.raise(alert(Severity::Info, "status-1")).await.unwrap();
    let sigs = rig.signals(0..3, &["ops"]).await;
    rig.handle.raise(alert(Severity::Warning, "warn-1")).await.unwrap();
    rig.handle.raise(alert(Severity::Critical, "crit-1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.world.lock().unwrap().requests.is_empty(), "paused: nothing may be sent");
    rig.handle.set_paused(false);
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    rig.stop().await;
    let w = server.world.lock().unwrap();
    let mut want = vec!["crit-1".to_string()];
    want.extend(sigs);
    want.extend(["warn-1".to_string(), "status-1".to_string()]);
    assert_eq!(w.delivered_ids(), want, "one batch, most urgent first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_30s_loses_nothing_and_recovers_by_itself() {
    let server = discord::start().await;
    {
        let mut w = server.world.lock().unwrap();
        w.reset_next = 1;
        w.hang_next = 1;
        w.outage_until = Some(Instant::now() + Duration::from_secs(30));
    }
    let rig = Rig::start(&config(vec![route("signals", server.webhook(7, "t"), &[RouteEvent::Signal])]));
    let mut events = rig.hub.subscribe();
    let mut ids = rig.signals(0..20, &["signals"]).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(rig.pending(), 20, "nothing may leave the outbox during the outage");
    ids.extend(rig.signals(20..40, &["signals"]).await);
    until(Duration::from_secs(45), "delivery after the outage", || rig.pending() == 0).await;
    // The breaker opened during the outage and closed after it, as the
    // published queue status shows.
    let mut circuits = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while circuits.last() != Some(&Circuit::Closed) || !circuits.contains(&Circuit::Open) {
        match tokio::time::timeout_at(deadline, events.recv()).await.map(|r| r.and_then(|r| r.into_event())) {
            Ok(Some(e)) => {
                if let Event::Queue(q) = &e.event {
                    circuits.push(q.routes[0].circuit);
                }
            }
            _ => panic!("the queue status never showed the breaker open, then closed: {circuits:?}"),
        }
    }
    let store = rig.stop().await;

    let w = server.world.lock().unwrap();
    assert!(w.count_status(503) >= 3, "the outage was not exercised: {} 503s", w.count_status(503));
    let delivered = w.delivered_ids();
    for id in &ids {
        assert!(delivered.contains(id), "{id} was lost");
    }
    assert_eq!(w.count_status(429), 0);
    // Failures were paced by the breaker, not a retry storm: 30 s at a 2 s
    // cool-down is at most about 15 probes plus the first few tries.
    assert!(w.count_status(503) <= 30, "{} requests during the outage", w.count_status(503));
    assert!(store.dead().unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_webhook_disables_only_its_route_with_a_critical_alert() {
    let server = discord::start().await;
    server.world.lock().unwrap().deleted.insert("1".into());
    let mut ops = route("ops", server.webhook(2, "t2"), &[RouteEvent::Signal, RouteEvent::Alert]);
    ops.min_severity = Severity::Warning;
    let rig = Rig::start(&config(vec![route("gone", server.webhook(1, "t1"), &[RouteEvent::Signal]), ops]));
    let ids = rig.signals(0..5, &["gone", "ops"]).await;
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    // Signals that arrive after the route was disabled are not sent either.
    let later = rig.signals(5..7, &["gone"]).await;
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    // The counters follow the store's writes by a moment.
    let gone_dead = || rig.handle.status().unwrap().routes.iter().find(|r| r.name == "gone").map_or(0, |r| r.dead);
    until(Duration::from_secs(5), "the dead count", || gone_dead() == 7).await;
    let status = rig.handle.status().unwrap();
    let store = rig.stop().await;

    let w = server.world.lock().unwrap();
    let to_gone: Vec<_> = w.requests.iter().filter(|r| r.webhook == "1").collect();
    assert_eq!(to_gone.len(), 1, "a deleted webhook must not be asked again");
    let to_ops: Vec<_> = w.requests.iter().filter(|r| r.webhook == "2" && r.status == 200).collect();
    let delivered: Vec<String> = to_ops.iter().flat_map(|r| r.ids()).collect();
    for id in &ids {
        assert!(delivered.contains(id), "{id} did not reach the healthy route");
    }
    let alert = to_ops
        .iter()
        .flat_map(|r| r.body["embeds"].as_array().unwrap().clone())
        .find(|e| e["title"].as_str().unwrap().contains("CRITICAL"))
        .expect("no critical alert reached the other route");
    assert!(alert["title"].as_str().unwrap().contains("'gone' disabled"), "{alert}");
    assert!(alert["description"].as_str().unwrap().contains("10015"), "{alert}");
    let (dead, _) = store.dead().unwrap();
    assert_eq!(dead.len(), ids.len() + later.len());
    assert!(dead.iter().all(|(_, d)| d.entry.route == "gone" && d.error.contains("10015")));
    let gone = status.routes.iter().find(|r| r.name == "gone").unwrap();
    assert_eq!((gone.circuit, gone.dead), (Circuit::Disabled, 7));
    assert_eq!(status.routes.iter().find(|r| r.name == "ops").unwrap().circuit, Circuit::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_goes_to_dead_and_its_batch_mates_still_go() {
    let server = discord::start().await;
    let rig = Rig::start_paused(&config(vec![route("signals", server.webhook(3, "t"), &[RouteEvent::Signal])]));
    let ids = rig.signals(0..3, &["signals"]).await;
    server.world.lock().unwrap().reject_ids.insert(ids[1].clone());
    rig.handle.set_paused(false);
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    let store = rig.stop().await;
    let w = server.world.lock().unwrap();
    assert_eq!(sorted(w.delivered_ids()), sorted(vec![ids[0].clone(), ids[2].clone()]));
    let (dead, _) = store.dead().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.entry.message.id(), ids[1]);
    assert!(dead[0].1.error.contains("240000") && dead[0].1.error.contains("harmful links"), "{}", dead[0].1.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_429_is_waited_out_as_discord_asks() {
    let server = discord::start().await;
    server.world.lock().unwrap().shared_429_next = Some(1.5);
    let rig = Rig::start(&config(vec![route("signals", server.webhook(4, "t"), &[RouteEvent::Signal])]));
    let ids = rig.signals(0..2, &["signals"]).await;
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    let status = rig.handle.status().unwrap();
    rig.stop().await;
    let w = server.world.lock().unwrap();
    assert_eq!(w.requests.len(), 2, "one 429, then one retry");
    assert_eq!(w.requests[0].status, 429);
    let waited = w.requests[1].at.duration_since(w.requests[0].at);
    assert!(waited >= Duration::from_millis(1500), "retried after {waited:?}, before retry_after");
    assert_eq!(sorted(w.delivered_ids()), sorted(ids));
    assert_eq!(status.routes[0].rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_route_gets_signals_late() {
    let server = discord::start().await;
    let mut free = route("free", server.webhook(6, "t"), &[RouteEvent::Signal]);
    free.delay = Dur(Duration::from_secs(2));
    let rig = Rig::start(&config(vec![route("paid", server.webhook(5, "t"), &[RouteEvent::Signal]), free]));
    let state = SeriesState::new(StrategyParams::default());
    let s = signal(0);
    let routes = vec![("paid".to_string(), 0), ("free".to_string(), 2)];
    let key = SeriesKey::new(s.instrument, s.timeframe);
    rig.store
        .commit(&CandleCommit {
            key,
            candle: None,
            state: &state,
            signal: Some(&s),
            routes: &routes,
            now: Ts::now(),
            priority: Priority::High,
        })
        .unwrap();
    rig.store.flush().await.unwrap();
    rig.handle.wake();
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    rig.stop().await;
    let w = server.world.lock().unwrap();
    let at = |hook: &str| w.requests.iter().find(|r| r.webhook == hook).map(|r| r.at).unwrap();
    assert!(at("6").duration_since(at("5")) >= Duration::from_secs(1), "the free channel was not delayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_with_5000_character_fields_is_truncated_and_accepted() {
    let server = discord::start().await;
    let mut ops = route("ops", server.webhook(8, "t"), &[RouteEvent::Alert]);
    ops.min_severity = Severity::Info;
    let rig = Rig::start(&config(vec![ops]));
    let long = "ä".repeat(5000);
    rig.handle
        .raise(Alert {
            id: "long-1".into(),
            check: long.clone(),
            severity: Severity::Warning,
            state: AlertState::Raised,
            title: long.clone(),
            message: long,
            time: Ts::now(),
        })
        .await
        .unwrap();
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    let store = rig.stop().await;
    let w = server.world.lock().unwrap();
    assert_eq!(w.count_status(400), 0);
    assert_eq!(w.delivered_ids(), vec!["long-1".to_string()]);
    let e = &w.requests[0].body["embeds"][0];
    assert!(e["title"].as_str().unwrap().ends_with('…'));
    assert!(store.dead().unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_their_attempts_go_to_dead_with_the_last_error() {
    let server = discord::start().await;
    server.world.lock().unwrap().outage_until = Some(Instant::now() + Duration::from_secs(600));
    let mut cfg = config(vec![route("signals", server.webhook(9, "t"), &[RouteEvent::Signal])]);
    cfg.notify.max_attempts = 2;
    cfg.notify.breaker_failures = 10;
    let rig = Rig::start(&cfg);
    let ids = rig.signals(0..1, &["signals"]).await;
    until(Duration::from_secs(10), "the outbox drains", || rig.pending() == 0).await;
    let store = rig.stop().await;
    let (dead, _) = store.dead().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.entry.message.id(), ids[0]);
    assert!(
        dead[0].1.error.starts_with("gave up after 2 failed attempts; last error: Discord answered 503"),
        "{}",
        dead[0].1.error
    );
    assert_eq!(server.world.lock().unwrap().count_status(503), 2);
}

fn closed(s: &Signal, reason: pipwatch::event::ExitReason, r: f64) -> pipwatch::event::Trade {
    pipwatch::event::Trade {
        id: s.id.clone(),
        instrument: s.instrument,
        timeframe: s.timeframe,
        side: s.side,
        entry_time: s.time,
        entry: s.price,
        stop_loss: s.stop_loss,
        take_profit: s.take_profit,
        exit_time: Ts(s.time.0 + 7200),
        exit: s.take_profit,
        exit_reason: reason,
        gap: false,
        pips: r * 18.0,
        r,
        bars: 2,
        mae_r: -0.1,
        mfe_r: r,
    }
}

fn edit(route: &str, t: pipwatch::event::Trade) -> (Priority, pipwatch::store::OutboxEntry) {
    let now = Ts::now();
    let entry = pipwatch::store::OutboxEntry {
        route: route.into(),
        message: pipwatch::store::Message::Edit(t),
        created: now,
        not_before: now,
        attempts: 0,
        last_error: None,
    };
    (Priority::Normal, entry)
}

/// A signal's message, one of a batch, is edited whole when its trade
/// closes: one PATCH to that message with every signal's embed, the closed
/// one showing its outcome. The edits of two signals of one message go out
/// as that one PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_trade_edits_its_signals_message_in_place() {
    let server = discord::start().await;
    let rig = Rig::start_paused(&config(vec![route("signals", server.webhook(1, "t"), &[RouteEvent::Signal])]));
    let ids = rig.signals(0..3, &["signals"]).await;
    rig.handle.set_paused(false);
    until(Duration::from_secs(10), "the batch delivered", || rig.pending() == 0).await;
    let message = {
        let w = server.world.lock().unwrap();
        let posts: Vec<_> = w.requests.iter().filter(|r| r.status == 200).collect();
        assert_eq!(posts.len(), 1, "one batch of three: {posts:?}");
        w.messages.keys().next().cloned().unwrap()
    };
    let s0 = signal(0);
    let s2 = signal(2);
    let stored = rig.store.signal(&s0.id).unwrap().unwrap();
    assert_eq!(stored.receipts.first().and_then(|r| r.message_id.clone()), Some(message.clone()), "{stored:?}");
    // Queued together (one write): two separate writes could each be taken
    // up by a notifier that is running, and then go as two PATCHes.
    rig.store
        .enqueue(&[
            edit("signals", closed(&s0, pipwatch::event::ExitReason::Target, 2.0)),
            edit("signals", closed(&s2, pipwatch::event::ExitReason::Stop, -1.0)),
        ])
        .unwrap();
    rig.store.flush().await.unwrap();
    rig.handle.wake();
    until(Duration::from_secs(10), "the edits sent", || rig.pending() == 0).await;
    {
        let w = server.world.lock().unwrap();
        let patches: Vec<_> = w.requests.iter().filter(|r| r.method == "PATCH").collect();
        assert_eq!(patches.len(), 1, "both edits in one PATCH: {patches:?}");
        assert_eq!(patches[0].message.as_deref(), Some(message.as_str()));
        assert_eq!(patches[0].ids(), ids, "the whole message, every signal in it");
        let embeds = w.messages[&message].as_array().unwrap().clone();
        let title = |n: usize| embeds[n]["title"].as_str().unwrap().to_string();
        assert!(title(0).ends_with("✓ +2.0R"), "{}", title(0));
        assert_eq!(title(1), "[DEMO] SELL EUR/USD H1", "still open");
        assert!(title(2).ends_with("✗ -1.0R"), "{}", title(2));
        assert_eq!(embeds[0]["fields"][0]["name"], "Outcome");
    }
    rig.stop().await;
}

/// A message a moderator deleted cannot be edited: the edit is dropped
/// with a log line, and the route goes on delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_a_deleted_message_is_dropped_not_the_route() {
    let server = discord::start().await;
    let rig = Rig::start(&config(vec![route("signals", server.webhook(1, "t"), &[RouteEvent::Signal])]));
    rig.signals(0..1, &["signals"]).await;
    until(Duration::from_secs(10), "delivered", || rig.pending() == 0).await;
    {
        let mut w = server.world.lock().unwrap();
        let ids: Vec<String> = w.messages.keys().cloned().collect();
        w.deleted_messages.extend(ids);
    }
    let stored = rig.store.signal(&signal(0).id).unwrap().unwrap();
    assert!(stored.receipts.first().is_some_and(|r| r.message_id.is_some()), "{stored:?}");
    rig.store.enqueue(&[edit("signals", closed(&signal(0), pipwatch::event::ExitReason::Stop, -1.0))]).unwrap();
    rig.store.flush().await.unwrap();
    rig.handle.wake();
    until(Duration::from_secs(10), "the edit dropped", || rig.pending() == 0).await;
    assert_eq!(server.world.lock().unwrap().count_status(404), 1);
    assert!(rig.store.dead().unwrap().0.is_empty(), "dropped, not given up on");
    // The route is not disabled: the next signal goes out.
    let next = rig.signals(1..2, &["signals"]).await;
    until(Duration::from_secs(10), "the next signal delivered", || {
        server.world.lock().unwrap().delivered_ids().contains(&next[0])
    })
    .await;
    rig.stop().await;
}

/// A signal still waiting for a delayed route when its trade closes goes
/// out once, with its outcome, instead of being sent and edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_not_sent_yet_takes_its_outcome_with_it() {
    let server = discord::start().await;
    let rig = Rig::start(&config(vec![route("free", server.webhook(1, "t"), &[RouteEvent::Signal])]));
    // Queued for a free channel an hour late, as the engine queues it.
    let s = signal(0);
    let key = SeriesKey::new(s.instrument, s.timeframe);
    let state = SeriesState::new(StrategyParams::default());
    let routes = vec![("free".to_string(), 3600)];
    let c = CandleCommit {
        key,
        candle: None,
        state: &state,
        signal: Some(&s),
        routes: &routes,
        now: Ts::now(),
        priority: Priority::High,
    };
    assert!(rig.store.commit(&c).unwrap());
    rig.store.enqueue(&[edit("free", closed(&s, pipwatch::event::ExitReason::Target, 2.0))]).unwrap();
    rig.store.flush().await.unwrap();
    rig.handle.wake();
    until(Duration::from_secs(10), "the edit folded in", || rig.pending() == 1).await;
    let (left, _) = rig.store.outbox().unwrap();
    match &left[0].1.message {
        pipwatch::store::Message::Closed(signal, trade) => {
            assert_eq!((signal.id.as_str(), trade.r), (s.id.as_str(), 2.0));
        }
        other => panic!("the pending signal should carry its outcome: {other:?}"),
    }
    assert!(server.world.lock().unwrap().requests.is_empty(), "nothing sent: the signal is not due, nothing to edit");
    // When it goes out, its embed shows the outcome.
    let (embed, quiet) = pipwatch::notify::embed::for_message(&left[0].1.message, false);
    assert!(embed.title.ends_with("✓ +2.0R") && quiet, "{}", embed.title);
    rig.stop().await;
}

/// A reload's notifier takes over the counts of the routes it keeps: a
/// scrape of `pipwatch_discord_rate_limited` follows their growth, and
/// counts that went back to zero hid the next 429s from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counts_of_the_routes_it_keeps() {
    let server = discord::start().await;
    server.world.lock().unwrap().shared_429_next = Some(0.2);
    let kept = route("signals", server.webhook(4, "t"), &[RouteEvent::Signal]);
    let rig = Rig::start(&config(vec![kept.clone()]));
    rig.signals(0..2, &["signals"]).await;
    // Counted once sent: an entry leaves the outbox a moment before.
    until(Duration::from_secs(10), "both are sent", || rig.pending() == 0 && rig.route("signals").sent == 2).await;
    let before = rig.route("signals");
    assert_eq!(before.rate_limited, 1);

    let added = route("added", server.webhook(5, "u"), &[RouteEvent::Signal]);
    let rig = rig.reload(&config(vec![added, kept])).await;
    let carried = rig.route("signals");
    assert_eq!(
        (carried.sent, carried.failed, carried.dead, carried.rate_limited),
        (before.sent, before.failed, before.dead, before.rate_limited)
    );
    let new = rig.route("added");
    assert_eq!((new.sent, new.rate_limited), (0, 0));

    // And they go on from there.
    server.world.lock().unwrap().shared_429_next = Some(0.2);
    rig.signals(10..12, &["signals"]).await;
    until(Duration::from_secs(10), "two more are sent", || rig.pending() == 0 && rig.route("signals").sent == 4).await;
    let after = rig.route("signals");
    rig.stop().await;
    assert_eq!(after.rate_limited, 2, "{after:?} after {before:?}");
}

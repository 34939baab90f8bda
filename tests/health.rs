//! Health alerts end to end: a feed that stops goes stale, the alert goes
//! through the outbox to a Discord-like server once, and its resolution once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::discord;
use pipwatch::config::{Config, Dur, Route, RouteEvent, Secret, Severity};
use pipwatch::event::{CandleRecord, Event, FeedState, FeedStatus};
use pipwatch::health::task::{self, Ctx, Pace};
use pipwatch::hub::{Hub, Received, Subscription};
use pipwatch::metrics::Metrics;
use pipwatch::notify::Notifier;
use pipwatch::store::Store;
use pipwatch::time::Ts;
use pipwatch::types::{Instrument, SeriesKey, Timeframe};
use tokio_util::sync::CancellationToken;

fn candle(i: Instrument) -> Event {
    Event::Candle(CandleRecord {
        instrument: i,
        timeframe: Timeframe::H1,
        time: Ts::now(),
        open: 1.0,
        high: 1.0,
        low: 1.0,
        close: 1.0,
        fast: None,
        slow: None,
        atr: None,
    })
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alerts to a Discord-like server, sampled fast, raised after 300 ms, never
/// repeated; staleness after 1 s. CPU, memory and disk thresholds no reading
/// can reach, so only what a test lowers speaks. (At 100 a busy machine's CPU
/// crossed them: a test then saw a CPU alert first.)
fn alerting(server: &discord::DiscordServer) -> Config {
    let mut config = Config::default();
    config.notify.routes = vec![Route {
        name: "ops".into(),
        webhook: Secret::new(server.webhook(1, "t")),
        events: vec![RouteEvent::Alert],
        min_severity: Severity::Warning,
        ..Route::default()
    }];
    let h = &mut config.health;
    h.sample_every = Dur(Duration::from_millis(100));
    h.sustain = Dur(Duration::from_millis(300));
    h.cooldown = Dur(Duration::from_secs(3600));
    h.stale_warning = Dur(Duration::from_secs(1));
    h.stale_critical = Dur(Duration::from_secs(3600));
    (h.cpu_warning, h.cpu_critical, h.memory_warning, h.memory_critical) = (101.0, 101.0, 101.0, 101.0);
    (h.disk_warning, h.disk_critical) = (101.0, 101.0);
    config
}

/// The embeds the server accepted, in order.
fn sent(server: &discord::DiscordServer) -> Vec<serde_json::Value> {
    let w = server.world.lock().unwrap();
    w.requests.iter().filter(|r| r.status == 200).flat_map(|r| r.body["embeds"].as_array().unwrap().clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_feed_alerts_once_through_the_outbox_and_resolves_once() {
    let server = discord::start().await;
    let config = alerting(&server);
    let h = config.health.clone();

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let store = Arc::new(store);
    let hub = Arc::new(Hub::new(1 << 16));
    let mut events = hub.subscribe();
    let notifier = Notifier::new(&config, store.clone(), hub.clone()).unwrap();
    let handle = notifier.handle();
    let stop = CancellationToken::new();
    tokio::spawn(notifier.run(stop.clone()));
    let i = Instrument::new("EUR_USD").unwrap();
    tokio::spawn(task::run(
        Ctx {
            health: h,
            data_dir: dir.path().to_path_buf(),
            hub: hub.clone(),
            notifier: Some(handle),
            metrics: Arc::new(Metrics::new()),
            series: vec![SeriesKey::new(i, Timeframe::H1)],
            pace: Pace::Every(Duration::from_millis(200)),
            store: None,
            liveness: None,
        },
        stop.clone(),
    ));
    hub.publish(Event::Feed(FeedStatus::new("test", FeedState::Live, None)));
    hub.publish(candle(i));

    // No candles: stale after 200 ms + 1 s, alerted after another 300 ms.
    until(Duration::from_secs(10), "the stale alert", || !sent(&server).is_empty()).await;
    // Candles again, every 100 ms: back to normal, resolved after the sustain.
    let feeding = {
        let hub = hub.clone();
        tokio::spawn(async move {
            loop {
                hub.publish(candle(i));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    until(Duration::from_secs(10), "the resolution", || sent(&server).len() >= 2).await;
    // Keep going a while: nothing more may be sent for this episode.
    tokio::time::sleep(Duration::from_secs(2)).await;
    feeding.abort();
    stop.cancel();

    let sent = sent(&server);
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let (raised, resolved) = (&sent[0], &sent[1]);
    assert!(raised["title"].as_str().unwrap().starts_with("[DEMO] WARNING: EUR_USD H1 candles"), "{raised}");
    assert!(raised["description"].as_str().unwrap().contains("overdue"), "{raised}");
    assert!(resolved["title"].as_str().unwrap().starts_with("[DEMO] RESOLVED: EUR_USD H1 candles"), "{resolved}");
    assert_eq!(raised["footer"]["text"], resolved["footer"]["text"], "one episode, one id");

    // The health events showed the stale series while it was stale.
    let mut saw_stale = false;
    while let Some(e) = events.try_recv().and_then(Received::into_event) {
        if let Event::Health(h) = &e.event {
            saw_stale |= h.stale.iter().any(|s| s.instrument == i && s.overdue_secs >= 1);
            assert!(h.system.memory_total > 0);
        }
    }
    assert!(saw_stale);
}

/// The heartbeat (a dead-man's switch) proves the engine loop turns: an
/// outside failure (here the feed failing, as with OANDA refusing the token)
/// does not stop it, and a stuck or dead loop does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_pings_while_the_engine_loop_turns() {
    let server = discord::start().await;
    let mut h = Config::default().health;
    h.heartbeat_url = Secret::new(format!("http://{}/ping/abc", server.addr));
    h.heartbeat_every = Dur(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(Hub::new(1024));
    let stop = CancellationToken::new();
    let liveness = pipwatch::health::liveness::Liveness::new();
    liveness.touch();
    tokio::spawn(task::run(
        Ctx {
            health: h,
            data_dir: dir.path().to_path_buf(),
            hub: hub.clone(),
            notifier: None,
            metrics: Arc::new(Metrics::new()),
            series: Vec::new(),
            pace: Pace::Unpaced,
            store: None,
            liveness: Some(liveness.clone()),
        },
        stop.clone(),
    ));
    let pings = |server: &discord::DiscordServer| {
        server.world.lock().unwrap().requests.iter().filter(|r| r.path == "/ping/abc").count()
    };
    until(Duration::from_secs(5), "three pings", || pings(&server) >= 3).await;
    // The world outside fails: still pinging, as a restart would not help.
    hub.publish(Event::Feed(FeedStatus::new("test", FeedState::Failed, None)));
    let before = pings(&server);
    until(Duration::from_secs(5), "pings after the outside failure", || pings(&server) >= before + 3).await;
    // The engine loop is gone: the pings stop, which is the alarm.
    liveness.end();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_end = pings(&server);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pings(&server), after_end, "pinged with the engine loop gone");
    stop.cancel();
}

/// An alert still open when pipwatch stops goes on after the restart: shown
/// at once with its acknowledgement, not sent again, and resolved under the
/// same id when the value comes back. The disk check stands in for the
/// checks whose value a restart does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_alert_goes_on_across_a_restart_without_being_sent_again() {
    use pipwatch::event::{Alert, AlertState};

    let server = discord::start().await;
    let mut config = alerting(&server);
    // No staleness here; any disk in use is past 1%: the disk alert is
    // raised and stays raised.
    config.health.stale_warning = Dur(Duration::from_secs(3600));
    config.health.stale_critical = Dur(Duration::from_secs(7200));
    config.health.disk_warning = 1.0;

    let dir = tempfile::tempdir().unwrap();
    let i = Instrument::new("EUR_USD").unwrap();
    // One run of the instance's parts that matter here, on the same data directory.
    let start = |config: &Config| {
        let (store, _) = Store::open(dir.path()).unwrap();
        let store = Arc::new(store);
        let hub = Arc::new(Hub::new(1 << 16));
        let events = hub.subscribe();
        let notifier = Notifier::new(config, store.clone(), hub.clone()).unwrap();
        let stop = CancellationToken::new();
        let ctx = Ctx {
            health: config.health.clone(),
            data_dir: dir.path().to_path_buf(),
            hub: hub.clone(),
            notifier: Some(notifier.handle()),
            metrics: Arc::new(Metrics::new()),
            series: vec![SeriesKey::new(i, Timeframe::H1)],
            pace: Pace::Every(Duration::from_millis(200)),
            store: Some(store.clone()),
            liveness: None,
        };
        let tasks = [tokio::spawn(notifier.run(stop.clone())), tokio::spawn(task::run(ctx, stop.clone()))];
        hub.publish(Event::Feed(FeedStatus::new("test", FeedState::Live, None)));
        (store, hub, events, stop, tasks)
    };
    let alerts = |events: &mut Subscription| -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some(e) = events.try_recv().and_then(Received::into_event) {
            if let Event::Alert(a) = &e.event {
                out.push(a.clone());
            }
        }
        out
    };

    // First run: the disk alert is raised and sent; then someone
    // acknowledges it, as `a` in the console does.
    let (store, hub, mut events, stop, tasks) = start(&config);
    until(Duration::from_secs(10), "the disk alert sent", || sent(&server).len() == 1).await;
    let raised = alerts(&mut events).into_iter().find(|a| a.state == AlertState::Raised).expect("raised on the hub");
    assert_eq!(raised.check, "disk");
    hub.publish(Event::Alert(Alert { state: AlertState::Acknowledged, ..raised.clone() }));
    until(Duration::from_secs(5), "the acknowledgement kept", || {
        store.raised_alerts().unwrap().0.iter().any(|a| a.id == raised.id && a.state == AlertState::Acknowledged)
    })
    .await;
    store.flush().await.unwrap();
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    drop((store, hub, events));

    // Second run, the disk as full: the episode is shown at once, as it was
    // left, and neither raised nor sent again.
    let (store, hub, mut events, stop, tasks) = start(&config);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = alerts(&mut events);
    assert_eq!(seen.iter().map(|a| (&a.id, a.state)).collect::<Vec<_>>(), [(&raised.id, AlertState::Acknowledged)]);
    assert_eq!(sent(&server).len(), 1, "sent again after the restart: {:#?}", sent(&server));
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    drop((store, hub, events));

    // Third run, the threshold raised past the disk's use: the same episode
    // resolves, is sent as resolved, and is no longer kept.
    config.health.disk_warning = 101.0;
    let (store, _hub, _events, stop, tasks) = start(&config);
    // Generous: a loaded machine runs the sampler late.
    until(Duration::from_secs(30), "the resolution sent", || sent(&server).len() == 2).await;
    let both = sent(&server);
    assert!(both[1]["title"].as_str().unwrap().contains("RESOLVED"), "{both:#?}");
    assert_eq!(both[0]["footer"]["text"], both[1]["footer"]["text"], "one episode, one id, across the restarts");
    until(Duration::from_secs(5), "the resolved alert dropped", || store.raised_alerts().unwrap().0.is_empty()).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

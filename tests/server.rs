//! The server on 127.0.0.1:0 with real tokio-tungstenite clients and real
//! HTTP requests: ordering, slow clients, since-replay, bad frames, limits,
//! the token, /metrics and /health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use pipwatch::control::Control;
use pipwatch::event::{Alert, AlertState, CandleRecord, Delivery, DeliveryState, Event, FeedState, FeedStatus, Signal};
use pipwatch::hub::Hub;
use pipwatch::metrics::Metrics;
use pipwatch::server::{self, Options};
use pipwatch::time::Ts;
use pipwatch::types::{Instrument, Quote, Severity, Side, Timeframe};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn options() -> Options {
    Options {
        listen: "127.0.0.1:0".into(),
        token: None,
        max_clients: 1024,
        history: 4096,
        client_buffer: 1024,
        max_frame: 64 * 1024,
        ping_every: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        source: "test".into(),
    }
}

struct Rig {
    hub: Arc<Hub>,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    notifier: Option<pipwatch::notify::NotifierHandle>,
}

impl Rig {
    async fn start(opts: Options) -> Rig {
        Rig::start_after(opts, 0).await
    }

    /// As an instance that resumed a data directory: its first seq is `start + 1`.
    async fn start_after(opts: Options, start: u64) -> Rig {
        Rig::resumed(opts, start, pipwatch::view::View::default()).await
    }

    /// As `start_after`, with the view the last instance left.
    async fn resumed(opts: Options, start: u64, restored: pipwatch::view::View) -> Rig {
        let metrics = Arc::new(Metrics::new());
        let hub =
            Arc::new(Hub::starting_after(1 << 16, start).with_observer(metrics.observer()).with_restored(restored));
        let stop = CancellationToken::new();
        // A notifier without routes: enough for pause/resume.
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = pipwatch::store::Store::open(dir.path()).unwrap();
        let notifier =
            pipwatch::notify::Notifier::new(&pipwatch::config::Config::default(), Arc::new(store), hub.clone())
                .unwrap();
        let handle = notifier.handle();
        std::mem::forget(dir);
        let h =
            server::start(opts, hub.clone(), Control::new(hub.clone(), Some(handle.clone())), metrics, stop.clone())
                .await
                .unwrap();
        Rig { hub, addr: h.addr, stop, notifier: Some(handle) }
    }

    fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    async fn connect(&self, query: &str) -> Ws {
        tokio_tungstenite::connect_async(self.url(query)).await.unwrap().0
    }

    fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Signals `range` of EUR_USD, one event each.
fn publish_signals(rig: &Rig, range: std::ops::Range<i64>) {
    for n in range {
        rig.hub.publish(signal(n, "EUR_USD"));
    }
}

fn signal(n: i64, instrument: &str) -> Event {
    let i = Instrument::new(instrument).unwrap();
    let time = Ts(1_704_067_200 + n * 3600);
    Event::Signal(Signal {
        id: Signal::make_id(i, Timeframe::H1, time, Side::Buy),
        instrument: i,
        timeframe: Timeframe::H1,
        time,
        side: Side::Buy,
        price: 1.1,
        fast: 1.1,
        slow: 1.09,
        atr: 0.001,
        stop_loss: 1.0985,
        take_profit: 1.103,
        strategy: "sma 10/20".into(),
    })
}

fn feed(state: FeedState, message: &str) -> Event {
    Event::Feed(FeedStatus::new("test", state, Some(message.into())))
}

/// The next text frame as JSON (pings are answered by tungstenite).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame within 10 s")
            .expect("connection ended")
            .expect("websocket error");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

async fn opening(ws: &mut Ws) -> Value {
    let hello = next(ws).await;
    assert_eq!((hello["type"].as_str(), hello["protocol"].as_u64()), (Some("hello"), Some(1)));
    let snap = next(ws).await;
    assert_eq!(snap["type"], "snapshot");
    snap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_receive_every_signal_in_order() {
    let rig = Rig::start(options()).await;
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut ws = rig.connect("").await;
        opening(&mut ws).await;
        clients.push(ws);
    }
    let want: Vec<String> = (0..50)
        .map(|n| {
            let e = signal(n, "EUR_USD");
            let id = match &e {
                Event::Signal(s) => s.id.clone(),
                _ => unreachable!(),
            };
            rig.hub.publish(e);
            id
        })
        .collect();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut last = 0;
                while got.len() < 50 {
                    let v = next(&mut ws).await;
                    assert_eq!(v["type"], "signal", "{v}");
                    let seq = v["seq"].as_u64().unwrap();
                    assert!(seq > last, "out of order");
                    last = seq;
                    got.push(v["id"].as_str().unwrap().to_string());
                }
                got
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_delays_nobody() {
    let mut opts = options();
    opts.client_buffer = 256;
    opts.idle_timeout = Duration::from_secs(2);
    let rig = Rig::start(opts).await;
    let mut stuck = rig.connect("").await;
    opening(&mut stuck).await;
    let mut reader = rig.connect("").await;
    opening(&mut reader).await;
    let big = "x".repeat(2000);
    let reading = tokio::spawn(async move {
        let mut last = 0;
        for _ in 0..3000 {
            let v = next(&mut reader).await;
            assert_eq!(v["type"], "feed", "the reading client fell behind: {v}");
            let seq = v["seq"].as_u64().unwrap();
            assert_eq!(seq, last + 1, "a gap");
            last = seq;
        }
        last
    });
    // 3000 events of 2 kB over about 1.5 s: 6 MB, far more than the stuck
    // client's socket buffers hold.
    for n in 0..3000 {
        rig.hub.publish(feed(FeedState::Live, &format!("{n} {big}")));
        if n % 30 == 29 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    assert_eq!(reading.await.unwrap(), 3000);
    // The stuck client was told it lagged, then given a fresh snapshot and
    // the events after it, or dropped for not reading; never both blocked.
    let mut lagged_or_closed = false;
    let (mut lagged, mut snapshot) = (false, None);
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), stuck.next()).await {
        match m {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match (v["type"].as_str(), lagged, snapshot) {
                    (Some("lagged"), _, _) => lagged = true,
                    (Some(kind), true, None) => {
                        assert_eq!(kind, "snapshot", "lagged must be followed by a snapshot: {v}");
                        snapshot = v["seq"].as_u64();
                        // Everything was published already: the snapshot may be the last frame.
                        if snapshot == Some(3000) {
                            lagged_or_closed = true;
                            break;
                        }
                    }
                    (Some("feed"), true, Some(s)) => {
                        assert_eq!(v["seq"].as_u64().unwrap(), s + 1, "the events after the snapshot's seq {s}");
                        lagged_or_closed = true;
                        break;
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(_)) | Err(_) => {
                lagged_or_closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(lagged_or_closed);
}

/// The lag contract: a client that stops reading until it falls behind is
/// sent `lagged`, then a fresh snapshot, then every event after it in order,
/// so what it folds ends equal to the server's view (before, it got `lagged`
/// and live events, and whatever changed meanwhile stayed wrong on its screen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_resynced_and_ends_equal_to_the_hub() {
    use pipwatch::protocol::{Frame, ServerFrame};
    let mut opts = options();
    opts.client_buffer = 16;
    let rig = Rig::start(opts).await;
    let mut ws = rig.connect("").await;
    let mut view = pipwatch::view::View::default();
    for _ in 0..2 {
        let v = next(&mut ws).await;
        if v["type"] == "snapshot" {
            view = serde_json::from_value(v).unwrap();
        }
    }
    // The client reads nothing while 3,000 events of 2 kB (6 MB, more than
    // the socket buffers hold) and some signals are published.
    let big = "x".repeat(2000);
    for n in 0..3000 {
        if n % 100 == 0 {
            rig.hub.publish(signal(n / 100, "EUR_USD"));
        }
        rig.hub.publish(feed(FeedState::Live, &format!("{n} {big}")));
        if n % 30 == 29 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let last = rig.hub.last();
    let mut lags = 0;
    let mut expect_snapshot = false;
    while view.seq < last {
        let text = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) => t,
            other => panic!("unexpected {other:?}"),
        };
        match ServerFrame::parse(&text).unwrap() {
            ServerFrame::Frame(Frame::Lagged { missed, .. }) => {
                assert!(missed > 0);
                lags += 1;
                expect_snapshot = true;
            }
            ServerFrame::Frame(Frame::Snapshot(v)) => {
                assert!(expect_snapshot, "a snapshot only after lagged");
                expect_snapshot = false;
                view = *v;
            }
            ServerFrame::Event(env) => {
                assert!(!expect_snapshot, "lagged must be followed by a snapshot, not seq {}", env.seq);
                assert_eq!(env.seq, view.seq + 1, "events follow the view without a gap");
                view.apply(&env);
            }
            ServerFrame::Frame(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(lags > 0, "the client must have fallen behind for this test to mean anything");
    assert_eq!(view, rig.hub.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_since_misses_nothing() {
    let mut opts = options();
    opts.history = 50;
    let rig = Rig::start(opts).await;
    let mut ws = rig.connect("").await;
    opening(&mut ws).await;
    publish_signals(&rig, 0..10);
    let mut last = 0;
    for _ in 0..10 {
        last = next(&mut ws).await["seq"].as_u64().unwrap();
    }
    drop(ws);
    publish_signals(&rig, 10..30);
    let mut ws = rig.connect(&format!("?since={last}")).await;
    assert_eq!(next(&mut ws).await["type"], "hello");
    for want in last + 1..=last + 20 {
        assert_eq!(next(&mut ws).await["seq"].as_u64(), Some(want));
    }
    rig.hub.publish(signal(30, "EUR_USD"));
    assert_eq!(next(&mut ws).await["seq"].as_u64(), Some(last + 21), "then live");

    // Older than the history: told so, with a fresh snapshot.
    publish_signals(&rig, 31..100);
    // Once the open connection has seen the last event, the server's history has moved on.
    while next(&mut ws).await["seq"].as_u64() != Some(100) {}
    let mut ws = rig.connect("?since=3").await;
    assert_eq!(next(&mut ws).await["type"], "hello");
    let lagged = next(&mut ws).await;
    assert_eq!(lagged["type"], "lagged");
    assert!(lagged["missed"].as_u64().unwrap() > 0);
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    // The snapshot is as of some seq; what came after it follows, without a gap.
    let mut seq = snap["seq"].as_u64().unwrap();
    assert_eq!(snap["signals"].as_array().unwrap().len() as u64, seq);
    while seq < 100 {
        let v = next(&mut ws).await;
        assert_eq!(v["seq"].as_u64(), Some(seq + 1));
        seq += 1;
    }
}

/// After a restart the new instance's seqs go on after the last one's, so
/// a client that reconnects with a seq from before it gets the view the new
/// instance began from (which drops what the old instance had and this one
/// has not), then every event of the new instance. If the history no
/// longer reaches back to the new instance's start, the client is told how
/// many it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_from_before_a_restart_gets_all_of_the_new_instance() {
    let mut opts = options();
    opts.history = 50;
    let mut restored = pipwatch::view::View::default();
    restored.apply(&pipwatch::event::Envelope { seq: 990, event: signal(-1, "GBP_USD") });
    let rig = Rig::resumed(opts, 1000, restored).await;
    let mut watcher = rig.connect("").await;
    assert_eq!(opening(&mut watcher).await["seq"].as_u64(), Some(1000), "nothing published yet");
    // Connected before any event of this instance: nothing to replay.
    let mut early = rig.connect("?since=990").await;
    assert_eq!(next(&mut early).await["type"], "hello");
    assert_eq!(next(&mut early).await["type"], "snapshot");
    publish_signals(&rig, 0..20);
    while next(&mut watcher).await["seq"].as_u64() != Some(1020) {}
    assert_eq!(next(&mut early).await["seq"].as_u64(), Some(1001), "then live");

    let mut ws = rig.connect("?since=990").await;
    assert_eq!(next(&mut ws).await["type"], "hello");
    let snap = next(&mut ws).await;
    assert_eq!((snap["type"].as_str(), snap["seq"].as_u64()), (Some("snapshot"), Some(1000)), "{snap}");
    let kept: Vec<&str> =
        snap["signals"].as_array().unwrap().iter().map(|s| s["signal"]["instrument"].as_str().unwrap()).collect();
    assert_eq!(kept, ["GBP_USD"], "the view the instance began from: {snap}");
    for want in 1001..=1020 {
        let v = next(&mut ws).await;
        assert_eq!((v["type"].as_str(), v["seq"].as_u64()), (Some("signal"), Some(want)));
    }
    rig.hub.publish(signal(20, "EUR_USD"));
    assert_eq!(next(&mut ws).await["seq"].as_u64(), Some(1021), "then live");

    // 81 events, 50 kept: 1032..=1081.
    publish_signals(&rig, 21..81);
    while next(&mut watcher).await["seq"].as_u64() != Some(1081) {}
    let mut ws = rig.connect("?since=990").await;
    assert_eq!(next(&mut ws).await["type"], "hello");
    let lagged = next(&mut ws).await;
    assert_eq!((lagged["type"].as_str(), lagged["missed"].as_u64()), (Some("lagged"), Some(31)), "{lagged}");
    assert_eq!(next(&mut ws).await["type"], "snapshot");
}

/// Clients resuming from before a restart while the engine publishes: the
/// hub runs ahead of what the server has framed, and each client still gets
/// every event of the instance, in order. Sending the hub's newest view at
/// the end of the replay lost the events between (seen by `tail`, which
/// prints events and not snapshots, as a gap after a deploy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_before_a_restart_during_a_burst_misses_nothing() {
    let mut opts = options();
    opts.history = 4096;
    let rig = Rig::start_after(opts, 1000).await;
    let hub = rig.hub.clone();
    let burst = std::thread::spawn(move || {
        for n in 0..3000 {
            hub.publish(signal(n, "EUR_USD"));
            if n % 64 == 0 {
                std::thread::yield_now();
            }
        }
    });
    // Each reads as it comes, so that none lags its own buffer.
    let mut clients = Vec::new();
    for c in 0..20 {
        let mut ws = rig.connect("?since=990&topics=signal").await;
        clients.push(tokio::spawn(async move {
            assert_eq!(next(&mut ws).await["type"], "hello");
            let snap = next(&mut ws).await;
            assert_eq!((snap["type"].as_str(), snap["seq"].as_u64()), (Some("snapshot"), Some(1000)), "client {c}");
            for want in 1001..=4000 {
                let v = next(&mut ws).await;
                assert_eq!(v["seq"].as_u64(), Some(want), "client {c}: {v}");
            }
        }));
    }
    burst.join().unwrap();
    for c in clients {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_frames_never_crash_it() {
    let rig = Rig::start(options()).await;
    let mut ws = rig.connect("").await;
    opening(&mut ws).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let samples = [
        "{",
        "null",
        "[]",
        "42",
        "{\"op\":\"dance\"}",
        "{\"op\":\"subscribe\",\"topics\":\"signal\"}",
        "{\"op\":\"subscribe\",\"topics\":[\"nope\"]}",
        "{\"op\":\"ack\"}",
        "{\"op\":\"subscribe\",\"x\":1}",
        "{\"op\":\"subscribe\",\"instruments\":[\"eurusd\"]}",
        "{\"op\":\"ack\",\"alert\":\"none\"}",
    ];
    for n in 0..1000 {
        let frame = match n % 4 {
            0 => Message::Text(samples[rng.random_range(0..samples.len())].into()),
            1 => {
                let s: String = (0..rng.random_range(0..200)).map(|_| rng.random::<char>()).collect();
                Message::Text(s.into())
            }
            2 => {
                let b: Vec<u8> = (0..rng.random_range(0..200)).map(|_| rng.random::<u8>()).collect();
                Message::Binary(b.into())
            }
            _ => {
                let junk: String = (0..rng.random_range(1..30)).map(|_| rng.random_range(b' '..b'~') as char).collect();
                Message::Text(format!("{{\"op\":\"{junk}\"}}").into())
            }
        };
        ws.send(frame).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "frame {n}: {reply}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    ws.send(Message::Text("{\"op\":\"ping\"}".into())).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "pong", "the connection stayed");
    let mut other = rig.connect("").await;
    opening(&mut other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_1009() {
    let rig = Rig::start(options()).await;
    let mut ws = rig.connect("").await;
    opening(&mut ws).await;
    ws.send(Message::Text("y".repeat(100_000).into())).await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(c))) => break c.unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1009);
    assert!(close.reason.contains("frame too large"), "{}", close.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_with_a_reason() {
    let mut opts = options();
    opts.max_clients = 2;
    let rig = Rig::start(opts).await;
    let mut a = rig.connect("").await;
    opening(&mut a).await;
    let mut b = rig.connect("").await;
    opening(&mut b).await;
    let mut c = rig.connect("").await;
    match tokio::time::timeout(Duration::from_secs(10), c.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1013);
            assert!(f.reason.contains("server full: 2 clients"), "{}", f.reason);
        }
        other => panic!("expected a close: {other:?}"),
    }
    drop(a);
    // A slot frees when a client leaves.
    let mut d = None;
    for _ in 0..50 {
        let mut ws = rig.connect("").await;
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await
            && t.contains("hello")
        {
            d = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.is_some(), "the freed slot was never given out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_connections_are_reaped() {
    let mut opts = options();
    opts.ping_every = Duration::from_millis(200);
    opts.idle_timeout = Duration::from_millis(700);
    let rig = Rig::start(opts).await;
    // A raw TCP peer that completes the upgrade and then goes silent.
    let mut silent = rig.connect("").await;
    opening(&mut silent).await;
    let metric = |body: &str| {
        body.lines().find(|l| l.starts_with("pipwatch_websocket_clients ")).map(|l| l.to_string()).unwrap_or_default()
    };
    let body = reqwest::get(rig.http("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&body), "pipwatch_websocket_clients 1");
    // Not reading means not answering pings: the server drops it, after
    // its 700 ms idle timeout (asked for up to 10 s: a loaded machine is late).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = reqwest::get(rig.http("/metrics")).await.unwrap().text().await.unwrap();
        if metric(&body) == "pipwatch_websocket_clients 0" {
            break;
        }
        assert!(Instant::now() < deadline, "the silent client was never dropped: {}", metric(&body));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_and_its_own_pings_are_answered_between_events() {
    let mut opts = options();
    opts.ping_every = Duration::from_millis(100);
    opts.idle_timeout = Duration::from_millis(400);
    let rig = Rig::start(opts).await;
    let mut ws = rig.connect("?topics=signal").await;
    opening(&mut ws).await;
    // Three times the idle timeout, reading (tungstenite answers the pings).
    let (mut pings, mut signals, mut pongs) = (0, 0, 0);
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        // A ping of the client's own among the events: its pong is written
        // by tungstenite, the events by the server, and neither may cut into
        // the other.
        ws.send(Message::Ping(format!("p{n}").into_bytes().into())).await.unwrap();
        rig.hub.publish(signal(n, "EUR_USD"));
        n += 1;
        let deadline = tokio::time::sleep(Duration::from_millis(30));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                m = ws.next() => match m.expect("connection ended").expect("websocket error") {
                    Message::Ping(_) => pings += 1,
                    Message::Pong(p) => {
                        assert_eq!(p.as_ref(), format!("p{pongs}").as_bytes(), "pongs in order, whole");
                        pongs += 1;
                    }
                    Message::Text(t) => {
                        let v: Value = serde_json::from_str(&t).expect("whole JSON frames");
                        assert_eq!(v["type"], "signal");
                        signals += 1;
                    }
                    Message::Close(c) => panic!("dropped while answering pings: {c:?}"),
                    _ => {}
                },
                _ = &mut deadline => break,
            }
        }
    }
    assert!(pings >= 5, "the server pinged {pings} times in 1.2 s at one per 100 ms");
    assert!(signals >= n - 1 && pongs >= n - 1, "{signals} signals and {pongs} pongs of {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_every_client_with_1001_after_what_was_published() {
    let rig = Rig::start(options()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = rig.connect("?topics=signal").await;
        opening(&mut ws).await;
        clients.push(ws);
    }
    // Stopped right after: the last events and the stop reach a client's
    // task together, and the events still go out before the close.
    publish_signals(&rig, 0..300);
    rig.stop.cancel();
    for mut ws in clients {
        let mut got = 0;
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("no close within 10 s") {
                Some(Ok(Message::Text(_))) => got += 1,
                Some(Ok(Message::Close(c))) => break c.expect("a close code"),
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        };
        assert_eq!(got, 300, "every signal before the close");
        assert_eq!(u16::from(close.code), 1001);
        assert_eq!(close.reason.as_str(), "pipwatch is stopping");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_ws_is_told_it_is_a_websocket_endpoint() {
    let rig = Rig::start(options()).await;
    let r = reqwest::get(rig.http("/ws")).await.unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(r.headers()["upgrade"], "websocket");
    assert!(r.text().await.unwrap().contains("WebSocket client"));
    // A WebSocket request of another version is told which one is spoken.
    let r = reqwest::Client::new()
        .get(rig.http("/ws"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(r.headers()["sec-websocket-version"], "13");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_enforced_everywhere() {
    let mut opts = options();
    opts.token = Some("s3cret".into());
    let rig = Rig::start(opts).await;
    let http = reqwest::Client::new();
    for path in ["/health", "/metrics", "/ws"] {
        let r = http.get(rig.http(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http.get(rig.http(path)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = http.get(rig.http("/health")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(rig.http("/metrics?token=s3cret")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(tokio_tungstenite::connect_async(rig.url("")).await.is_err());
    let mut ws = rig.connect("?token=s3cret").await;
    opening(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_attach_tell_a_missing_token_from_a_wrong_one() {
    let mut opts = options();
    opts.token = Some("s3cret".into());
    let rig = Rig::start(opts).await;
    let url = rig.url("");
    let tail = |token: Option<&str>| pipwatch::tail::Options {
        url: url.clone(),
        token: token.map(str::to_string),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (token, said) in [(None, "wants a token: pass --token"), (Some("wrong"), "refused the token (401)")] {
        let err = pipwatch::tail::run(&tail(token), &mut out, CancellationToken::new()).await.unwrap_err().to_string();
        assert!(err.starts_with(&url) && err.contains(said), "{err}");
        let err = pipwatch::tui::remote::connect(&url, token).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with(&url) && err.contains(said), "{err}");
    }
    assert!(out.is_empty());
    // The right token gets the stream.
    assert!(pipwatch::tui::remote::connect(&url, Some("s3cret")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let rig = Rig::start(options()).await;
    let i = Instrument::new("EUR_USD").unwrap();
    rig.hub.publish(Event::Candle(CandleRecord {
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
    }));
    rig.hub.publish(signal(1, "EUR_USD"));
    rig.hub.publish(signal(2, "EUR_USD"));
    rig.hub.publish(Event::Outcome(pipwatch::event::Trade {
        id: "x".into(),
        instrument: i,
        timeframe: Timeframe::H1,
        side: pipwatch::types::Side::Buy,
        entry_time: Ts(0),
        entry: 1.0,
        stop_loss: 0.99,
        take_profit: 1.02,
        exit_time: Ts(3600),
        exit: 1.02,
        exit_reason: pipwatch::event::ExitReason::Target,
        gap: false,
        pips: 200.0,
        r: 2.0,
        bars: 1,
        mae_r: 0.0,
        mfe_r: 2.0,
    }));
    for state in [DeliveryState::Queued, DeliveryState::Delivered, DeliveryState::Failed] {
        rig.hub.publish(Event::Delivery(Delivery {
            id: "x".into(),
            route: "signals".into(),
            state,
            attempts: 1,
            message_id: None,
            error: None,
            latency_secs: Some(0.25),
        }));
    }
    // The server folds events in order on its own task: once the last one
    // published (the failed delivery) counts, all of them do. Waiting for the
    // first signal only (as this test once did) raced with the second.
    let mut body = String::new();
    for _ in 0..100 {
        body = reqwest::get(rig.http("/metrics")).await.unwrap().text().await.unwrap();
        if body.lines().any(|l| l.starts_with("pipwatch_notifications_total{") && l.contains("\"failed\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, label: (&str, &str)| {
        scrape.samples.iter().find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1)).map(|s| {
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            }
        })
    };
    assert_eq!(value("pipwatch_signals_total", ("side", "buy")), Some(2.0), "{body}");
    assert_eq!(value("pipwatch_candles_total", ("instrument", "EUR_USD")), Some(1.0), "{body}");
    assert_eq!(value("pipwatch_trades_total", ("exit_reason", "target")), Some(1.0), "{body}");
    assert!(body.contains("pipwatch_open_trades"), "{body}");
    assert_eq!(value("pipwatch_notifications_total", ("outcome", "delivered")), Some(1.0), "{body}");
    assert_eq!(value("pipwatch_notifications_total", ("outcome", "failed")), Some(1.0), "{body}");
    assert!(value("pipwatch_feed_lag_seconds", ("timeframe", "H1")).is_some(), "{body}");
    assert!(body.contains("pipwatch_signal_latency_seconds_bucket"), "{body}");
    assert!(body.contains("pipwatch_delivery_latency_seconds_count{route=\"signals\"} 1"), "{body}");
    assert!(body.contains("pipwatch_websocket_clients 0"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_when_unhealthy() {
    let rig = Rig::start(options()).await;
    let get = || async {
        let r = reqwest::get(rig.http("/health")).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (code, body) = get().await;
    assert_eq!((code, body["status"].as_str()), (200, Some("healthy")));
    rig.hub.publish(feed(FeedState::Failed, "OANDA refused the API token"));
    let mut last = (0, Value::Null);
    for _ in 0..50 {
        last = get().await;
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert_eq!(last.1["status"], "unhealthy");
    assert_eq!(last.1["reasons"][0], "the test feed failed: OANDA refused the API token");
    rig.hub.publish(feed(FeedState::Live, "back"));
    for _ in 0..50 {
        last = get().await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_filter_and_commands_reach_the_notifier() {
    let rig = Rig::start(options()).await;
    let mut ws = rig.connect("").await;
    opening(&mut ws).await;
    ws.send(Message::Text(r#"{"op":"subscribe","topics":["signal","alert"],"instruments":["GBP_USD"]}"#.into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "subscribed");
    rig.hub.publish(signal(1, "EUR_USD"));
    rig.hub.publish(Event::Quote(Quote {
        instrument: Instrument::new("GBP_USD").unwrap(),
        time: Ts(1),
        bid: 1.2,
        ask: 1.3,
    }));
    rig.hub.publish(signal(2, "GBP_USD"));
    let v = next(&mut ws).await;
    assert_eq!((v["type"].as_str(), v["instrument"].as_str()), (Some("signal"), Some("GBP_USD")));

    ws.send(Message::Text(r#"{"op":"pause"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await["op"], "pause");
    assert!(rig.notifier.as_ref().unwrap().paused());
    ws.send(Message::Text(r#"{"op":"resume"}"#.into())).await.unwrap();
    assert_eq!(next(&mut ws).await["op"], "resume");
    assert!(!rig.notifier.as_ref().unwrap().paused());

    rig.hub.publish(Event::Alert(Alert {
        id: "a1".into(),
        check: "feed".into(),
        severity: Severity::Warning,
        state: AlertState::Raised,
        title: "stale".into(),
        message: "m".into(),
        time: Ts(1),
    }));
    assert_eq!(next(&mut ws).await["state"], "raised");
    ws.send(Message::Text(r#"{"op":"ack","alert":"a1"}"#.into())).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let v = next(&mut ws).await;
        seen.push(format!("{}:{}", v["type"].as_str().unwrap(), v["state"].as_str().or(v["op"].as_str()).unwrap()));
    }
    seen.sort();
    assert_eq!(seen, ["alert:acknowledged", "ok:ack"]);

    // The subscription can also come with the URL; a bad one is refused before the upgrade.
    match tokio_tungstenite::connect_async(rig.url("?topics=signal,nope")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 400);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.starts_with("unknown topic 'nope'"), "{body}");
        }
        other => panic!("a bad topic was accepted: {:?}", other.map(|_| ())),
    }
    let mut ws = rig.connect("?topics=quote&instruments=USD_JPY").await;
    opening(&mut ws).await;
    rig.hub.publish(signal(3, "USD_JPY"));
    rig.hub.publish(Event::Quote(Quote {
        instrument: Instrument::new("USD_JPY").unwrap(),
        time: Ts(2),
        bid: 150.0,
        ask: 150.1,
    }));
    let v = next(&mut ws).await;
    assert_eq!((v["type"].as_str(), v["instrument"].as_str()), (Some("quote"), Some("USD_JPY")));
}

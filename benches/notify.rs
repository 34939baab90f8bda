//! Outbox write to HTTP request sent (issue 3): a signal committed with its
//! outbox entry and flushed, the notifier woken, until a local webhook server
//! (answering like Discord, with plenty of rate-limit room) has the request.
//! Each message is delivered before the next is written, so every sample is
//! one message with tokens available, not a batch. Criterion gives the median;
//! 2,000 timed messages with hdrhistogram give the tail. Figures: BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pipwatch::config::{Config, Route, RouteEvent, Secret};
use pipwatch::engine::{SeriesState, StrategyParams};
use pipwatch::event::{DeliveryState, Event, Signal};
use pipwatch::hub::Hub;
use pipwatch::notify::{Notifier, NotifierHandle};
use pipwatch::store::{CandleCommit, Store};
use pipwatch::time::Ts;
use pipwatch::types::{Instrument, SeriesKey, Side, Timeframe};
use tokio::sync::mpsc;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A webhook endpoint that reports when each request arrived.
async fn server(arrived: mpsc::UnboundedSender<Instant>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    // Headers are in: the request has been sent.
                    let _ = arrived.send(Instant::now());
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    let body = format!(r#"{{"id":"{id}","channel_id":"1"}}"#);
                    async move {
                        let _ = req.into_body().collect().await;
                        Response::builder()
                            .header("x-ratelimit-limit", "1000")
                            .header("x-ratelimit-remaining", "999")
                            .header("x-ratelimit-reset-after", "1.0")
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    format!("http://{addr}/api/webhooks/1/bench")
}

struct Rig {
    rt: tokio::runtime::Runtime,
    store: Arc<Store>,
    handle: NotifierHandle,
    arrived: mpsc::UnboundedReceiver<Instant>,
    events: pipwatch::hub::Subscription,
    state: SeriesState,
    n: i64,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(dir.path()).expect("open");
        let store = Arc::new(store);
        let hub = Arc::new(Hub::new(1 << 16));
        let (tx, arrived) = mpsc::unbounded_channel();
        let url = rt.block_on(server(tx));
        let mut config = Config::default();
        config.notify.routes = vec![Route {
            name: "signals".into(),
            webhook: Secret::new(url),
            events: vec![RouteEvent::Signal],
            ..Route::default()
        }];
        let notifier = Notifier::new(&config, store.clone(), hub.clone()).expect("notifier");
        let handle = notifier.handle();
        let events = hub.subscribe();
        rt.spawn(notifier.run(tokio_util::sync::CancellationToken::new()));
        Rig { rt, store, handle, arrived, events, state: SeriesState::new(StrategyParams::default()), n: 0, _dir: dir }
    }

    /// One signal through the outbox; returns the outbox-write-to-request time.
    fn one(&mut self) -> Duration {
        self.n += 1;
        let i = Instrument::new("EUR_USD").expect("valid");
        let time = Ts(1_600_000_000 + self.n * 3600);
        let s = Signal {
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
        };
        let routes = [("signals".to_string(), 0)];
        let key = SeriesKey::new(i, Timeframe::H1);
        let rt = &self.rt;
        let start = Instant::now();
        self.store
            .commit(&CandleCommit {
                key,
                candle: None,
                state: &self.state,
                signal: Some(&s),
                routes: &routes,
                now: Ts::now(),
                priority: pipwatch::store::Priority::High,
            })
            .expect("commit");
        rt.block_on(self.store.flush()).expect("flush");
        self.handle.wake();
        let at = rt.block_on(self.arrived.recv()).expect("server alive");
        // Wait for the delivery to be recorded before the next message.
        rt.block_on(async {
            loop {
                match self.events.recv().await.and_then(|r| r.into_event()) {
                    Some(e) => {
                        if let Event::Delivery(d) = &e.event
                            && d.id == s.id
                            && d.state == DeliveryState::Delivered
                        {
                            break;
                        }
                    }
                    None => panic!("hub closed"),
                }
            }
        });
        at.duration_since(start)
    }
}

fn main() {
    let mut rig = Rig::new();
    for _ in 0..50 {
        rig.one();
    }
    let mut c = Criterion::default().configure_from_args().sample_size(30);
    c.bench_function("notify/outbox_write_to_request", |b| b.iter_custom(|iters| (0..iters).map(|_| rig.one()).sum()));
    c.final_summary();

    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    for _ in 0..2000 {
        let _ = h.record(rig.one().as_micros() as u64);
    }
    println!(
        "notify/outbox_write_to_request over 2000 messages: p50 {} us, p90 {} us, p99 {} us, max {} us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    );
}

//! WebSocket fan-out (issue 4): a ~300-byte event published on the hub at
//! 1,000 events/s for 3 s, delivered by the server to N local
//! tokio-tungstenite clients on 127.0.0.1. Each event carries its publish
//! time; each client records publish-to-receipt latency. Server and clients
//! share this machine's 2 cores, so the figures include the clients' own
//! cost. Bounded: 3,000 events, at most 15 s of draining.
//!
//! `cargo bench --bench fanout` (100 and 1,000 clients); figures: BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use pipwatch::event::{Event, FeedState, FeedStatus, Hub};
use pipwatch::metrics::Metrics;
use pipwatch::server;
use tokio_tungstenite::tungstenite::Message;

const RATE: u64 = 1000;
const EVENTS: u64 = 3000;

async fn run(clients: usize) {
    let hub = Arc::new(Hub::new(1 << 16));
    let stop = tokio_util::sync::CancellationToken::new();
    let opts = server::Options {
        listen: "127.0.0.1:0".into(),
        token: None,
        max_clients: clients + 10,
        history: 4096,
        client_buffer: 4096,
        max_frame: 64 * 1024,
        ping_every: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        source: "bench".into(),
    };
    let h = server::start(opts, hub.clone(), None, Arc::new(Metrics::new()), stop.clone()).await.expect("server");
    let url = format!("ws://{}/ws?topics=feed", h.addr);
    let base = Instant::now();

    let mut readers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await.expect("connect");
        // hello + snapshot
        for _ in 0..2 {
            let _ = ws.next().await;
        }
        readers.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut got = 0u64;
            let mut lagged = 0u64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3 + 15);
            while got + lagged < EVENTS {
                let m = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                let Message::Text(t) = m else { continue };
                let now = base.elapsed().as_micros() as u64;
                // The publish time is the first number after "t=".
                if let Some(at) = t.find("t=") {
                    let digits: String = t[at + 2..].chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(sent) = digits.parse::<u64>() {
                        let _ = h.record(now.saturating_sub(sent).max(1));
                        got += 1;
                    }
                } else if t.contains("\"lagged\"") {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    lagged += v["missed"].as_u64().unwrap_or(0);
                }
            }
            (h, got, lagged)
        }));
    }

    let pad = "x".repeat(200);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let started = Instant::now();
    for _ in 0..EVENTS {
        tick.tick().await;
        let message = format!("t={} {pad}", base.elapsed().as_micros());
        hub.publish(Event::Feed(FeedStatus { source: "bench".into(), state: FeedState::Live, message: Some(message) }));
    }
    let published_in = started.elapsed();

    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut got, mut lagged) = (0u64, 0u64);
    for r in readers {
        let (h, g, l) = r.await.expect("reader");
        all.add(&h).expect("merge");
        got += g;
        lagged += l;
    }
    let frame = serde_json::to_string(&pipwatch::event::Envelope {
        seq: 1,
        event: Event::Feed(FeedStatus {
            source: "bench".into(),
            state: FeedState::Live,
            message: Some(format!("t=0 {pad}")),
        }),
    })
    .map(|s| s.len())
    .unwrap_or(0);
    println!(
        "fanout/{clients}_clients: {EVENTS} events of ~{frame} bytes at {RATE}/s (published in {:.2}s); delivered {got} of {} ({lagged} reported lagged); latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        published_in.as_secs_f64(),
        EVENTS * clients as u64,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.9) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
    );
    stop.cancel();
}

fn main() {
    // `cargo test --benches` runs bench binaries with no `--bench`: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("fanout: run with `cargo bench --bench fanout`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for clients in [100, 1000] {
        rt.block_on(run(clients));
    }
}

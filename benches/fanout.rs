//! WebSocket fan-out (issue 4): a ~300-byte event published on the hub at
//! 1,000 events/s for 3 s, delivered by the server to N local clients on
//! 127.0.0.1. Each event carries its publish time; each client records
//! publish-to-receipt latency. Server and clients share this machine's 2
//! cores, so the figures include the clients' own cost.
//!
//! Two kinds of client: `raw` does the WebSocket upgrade and reads frames
//! straight off its socket (server frames are unmasked: a 2-10 byte header,
//! then the payload), the least a real client can do; `tungstenite` is a
//! tokio-tungstenite client, as a program would use. Bounded: 3,000 events,
//! at most 15 s of draining.
//!
//! A third kind, `bare`, leaves pipwatch out: the same raw clients, fed by
//! one loop per core that writes each prebuilt frame straight into the
//! sockets (no WebSocket library, no task per client). It is the thinnest
//! server design, measured against the real one.
//!
//! `cargo bench --bench fanout` (100 and 1,000 clients of each kind);
//! `FANOUT_CLIENTS=1000 FANOUT_KIND=raw` picks one. Figures: BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use pipwatch::event::{Event, FeedState, FeedStatus};
use pipwatch::hub::Hub;
use pipwatch::metrics::Metrics;
use pipwatch::server;
use tokio_tungstenite::tungstenite::Message;

const RATE: u64 = 1000;
const EVENTS: u64 = 3000;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Raw,
    Tungstenite,
    Bare,
}

/// Latencies in µs, into one histogram at the end: 1,000 clients' own
/// histograms would not fit in cache, and the clients' cost is part of what
/// this machine measures. `now` is when the read that brought the frame
/// returned (one clock read per read, not per frame). Returns `true` while
/// more are expected.
fn record(payload: &[u8], now: u64, latencies: &mut Vec<u32>, lagged: &mut u64) -> bool {
    // The publish time is the first number after "t=".
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"t="));
    if let Some(at) = FINDER.find(payload) {
        let sent =
            payload[at + 2..].iter().take_while(|b| b.is_ascii_digit()).fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        latencies.push(now.saturating_sub(sent).max(1) as u32);
    } else if payload.windows(8).any(|w| w == b"\"lagged\"") {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        *lagged += v["missed"].as_u64().unwrap_or(0);
    }
    (latencies.len() as u64 + *lagged) < EVENTS
}

/// Connects (the opening frames read) and returns the reading task.
async fn raw_client(
    addr: std::net::SocketAddr,
    base: Instant,
) -> impl std::future::Future<Output = (Vec<u32>, u64)> + Send + 'static {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET /ws?topics=feed HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("upgrade request");
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let head = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        assert!(tcp.read_buf(&mut buf).await.expect("upgrade response") > 0, "closed during the upgrade");
    };
    assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade refused: {}", String::from_utf8_lossy(&buf[..head]));
    buf.drain(..head);
    // One complete server frame at the front of `buf`: (header length, payload length).
    fn frame(buf: &[u8]) -> Option<(usize, usize)> {
        let (&b1, rest) = buf.get(1).map(|b| (b, &buf[2..]))?;
        let (hl, len) = match b1 & 0x7f {
            126 => (4, usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?))),
            127 => (10, u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize),
            n => (2, usize::from(n)),
        };
        (buf.len() >= hl + len).then_some((hl, len))
    }
    let mut opening = 0;
    while opening < 2 {
        match frame(&buf) {
            Some((hl, len)) => {
                buf.drain(..hl + len);
                opening += 1;
            }
            None => assert!(tcp.read_buf(&mut buf).await.expect("opening frames") > 0, "closed"),
        }
    }
    async move {
        let mut latencies = Vec::with_capacity(EVENTS as usize);
        let mut lagged = 0u64;
        let mut now = base.elapsed().as_micros() as u64;
        let reading = async {
            let mut start = 0;
            loop {
                while let Some((hl, len)) = frame(&buf[start..]) {
                    let payload = &buf[start + hl..start + hl + len];
                    start += hl + len;
                    // Text frames only (opcode 1); pings and the like are not events.
                    if buf[start - hl - len] & 0x0f == 1 && !record(payload, now, &mut latencies, &mut lagged) {
                        return;
                    }
                }
                buf.drain(..start);
                start = 0;
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                if !matches!(tcp.read_buf(&mut buf).await, Ok(n) if n > 0) {
                    return;
                }
                now = base.elapsed().as_micros() as u64;
            }
        };
        // No timer here (polling one on every wake-up showed in the profile):
        // the run's watchdog closes the connections if events stop coming.
        reading.await;
        (latencies, lagged)
    }
}

async fn tungstenite_client(
    url: &str,
    base: Instant,
) -> impl std::future::Future<Output = (Vec<u32>, u64)> + Send + 'static {
    // Small, like the server's: tungstenite zeroes its read buffer before every read.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.expect("connect");
    // hello + snapshot
    for _ in 0..2 {
        let _ = ws.next().await;
    }
    async move {
        let mut latencies = Vec::with_capacity(EVENTS as usize);
        let mut lagged = 0u64;
        // No timer per frame or per wake-up: the run's watchdog closes the
        // connections if events stop coming.
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && !record(t.as_bytes(), base.elapsed().as_micros() as u64, &mut latencies, &mut lagged)
            {
                break;
            }
        }
        (latencies, lagged)
    }
}

/// The bare server's side of the upgrade: a canned 101 and two opening frames for
/// each of `clients` connections, in the order the clients connect.
async fn bare_accept(listener: tokio::net::TcpListener, clients: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let _ = tcp.set_nodelay(true);
        let mut request = Vec::new();
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(tcp.read_buf(&mut request).await.expect("upgrade request") > 0, "closed during the upgrade");
        }
        let mut answer =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
        answer.extend_from_slice(&text_frame(br#"{"type":"hello"}"#));
        answer.extend_from_slice(&text_frame(br#"{"type":"snapshot"}"#));
        tcp.write_all(&answer).await.expect("upgrade answer");
        sockets.push(tcp);
    }
    sockets
}

/// A server text frame, as the server encodes it.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    server::wire::put(&mut f, server::wire::TEXT, payload);
    f
}

/// Frames waiting for one bare writer, and its wake-up.
type BareQueue = Arc<(std::sync::Mutex<Vec<u8>>, tokio::sync::Notify)>;

/// One bare writer: each wake-up, everything queued goes to each socket in
/// one `try_write`; what a full socket does not take waits for the next turn.
async fn bare_writer(sockets: Vec<tokio::net::TcpStream>, queue: BareQueue) {
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); sockets.len()];
    loop {
        let backlog = pending.iter().any(|p| !p.is_empty());
        tokio::select! {
            _ = queue.1.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(1)), if backlog => {}
        }
        let batch = std::mem::take(&mut *queue.0.lock().expect("queue"));
        for (socket, pending) in sockets.iter().zip(&mut pending) {
            if pending.is_empty() {
                match socket.try_write(&batch) {
                    Ok(n) => pending.extend_from_slice(&batch[n..]),
                    Err(_) => pending.extend_from_slice(&batch),
                }
            } else {
                pending.extend_from_slice(&batch);
                if let Ok(n) = socket.try_write(pending) {
                    pending.drain(..n);
                }
            }
        }
    }
}

async fn run(clients: usize, kind: Kind) {
    // As an instance wires it: the hub feeds the metrics as it publishes.
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new(1 << 16).with_observer(metrics.observer()));
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
    let (addr, bare) = match kind {
        Kind::Bare => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            (addr, Some(tokio::spawn(bare_accept(listener, clients))))
        }
        _ => (
            server::start(
                opts,
                hub.clone(),
                pipwatch::control::Control::new(hub.clone(), None),
                metrics.clone(),
                stop.clone(),
            )
            .await
            .expect("server")
            .addr,
            None,
        ),
    };
    let url = format!("ws://{addr}/ws?topics=feed");
    let base = Instant::now();

    let mut readers = Vec::with_capacity(clients);
    for _ in 0..clients {
        readers.push(match kind {
            Kind::Raw | Kind::Bare => tokio::spawn(raw_client(addr, base).await),
            Kind::Tungstenite => tokio::spawn(tungstenite_client(&url, base).await),
        });
    }
    // Bare: one writer per core, each with half the sockets.
    let mut writers = Vec::new();
    let mut queues: Vec<BareQueue> = Vec::new();
    if let Some(accepting) = bare {
        let mut sockets = accepting.await.expect("accepted");
        let half = sockets.len().div_ceil(2);
        for part in [sockets.split_off(half), sockets] {
            let queue: BareQueue = Arc::default();
            queues.push(queue.clone());
            writers.push(tokio::spawn(bare_writer(part, queue)));
        }
    }

    // Padded so that an event, as JSON on the wire, is the issue's 300 bytes
    // (its seq has 4 digits and its publish time in µs 7 during the run).
    let size = |message: &str| {
        serde_json::to_vec(&pipwatch::event::Envelope {
            seq: 1000,
            event: Event::Feed(FeedStatus::new("bench", FeedState::Live, Some(message.to_string()))),
        })
        .map(|v| v.len())
        .unwrap_or(0)
    };
    let pad = "x".repeat(300usize.saturating_sub(size("t=1000000 ")));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let started = Instant::now();
    for _ in 0..EVENTS {
        tick.tick().await;
        let message = format!("t={} {pad}", base.elapsed().as_micros());
        let event = Event::Feed(FeedStatus::new("bench", FeedState::Live, Some(message)));
        if queues.is_empty() {
            hub.publish(event);
        } else {
            // The bytes the server would send: the same envelope, serialised once.
            let envelope = pipwatch::event::Envelope { seq: 1, event };
            let frame = text_frame(&serde_json::to_vec(&envelope).expect("json"));
            for queue in &queues {
                queue.0.lock().expect("queue").extend_from_slice(&frame);
                queue.1.notify_one();
            }
        }
    }
    let published_in = started.elapsed();
    // Bounded: what has not arrived 15 s after the last event never will.
    // Closing the connections ends every reader (the server's on stopping,
    // the bare writers' when their sockets drop).
    let watchdog = {
        let stop = stop.clone();
        let writers: Vec<_> = writers.iter().map(|w| w.abort_handle()).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(15)).await;
            stop.cancel();
            writers.iter().for_each(|w| w.abort());
        })
    };

    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut got, mut lagged) = (0u64, 0u64);
    for r in readers {
        let (latencies, l) = r.await.expect("reader");
        for us in &latencies {
            all.record(u64::from(*us)).expect("in range");
        }
        got += latencies.len() as u64;
        lagged += l;
    }
    writers.iter().for_each(|w| w.abort());
    watchdog.abort();
    let frame = size(&format!("t=1000000 {pad}"));
    println!(
        "fanout/{clients}_clients/{kind:?}: {EVENTS} events of ~{frame} bytes at {RATE}/s (published in {:.2}s); delivered {got} of {} ({lagged} reported lagged); latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
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
    let wanted = |var: &str, v: String| std::env::var(var).map_or(true, |w| w.eq_ignore_ascii_case(&v));
    for kind in [Kind::Raw, Kind::Tungstenite, Kind::Bare] {
        for clients in [100, 1000] {
            if wanted("FANOUT_KIND", format!("{kind:?}")) && wanted("FANOUT_CLIENTS", clients.to_string()) {
                rt.block_on(run(clients, kind));
            }
        }
    }
}

//! The OANDA source against a local server that answers like OANDA v20.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{json_lines, of_type, pipwatch};
use pipwatch::engine::{Engine, Phase, StrategySet};
use pipwatch::event::Event;
use pipwatch::time::Ts;
use pipwatch::types::{Candle, Instrument, Timeframe};

const TOKEN: &str = "test-token";
const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

#[derive(Default)]
struct Market {
    /// Complete candles, oldest first; one more is always "forming".
    candles: Vec<Candle>,
    requests: Vec<String>,
    /// Statuses to answer the next candle requests with, first first.
    failures: Vec<u16>,
    /// Hang (never answer in time) on the next candle request.
    hang_next: bool,
    /// Send one heartbeat, then nothing, on the price stream.
    silent_stream: bool,
    stream_connections: usize,
}

type Shared = Arc<Mutex<Market>>;

fn price(i: usize) -> f64 {
    1.1 + 0.004 * (i as f64 / 6.0).sin() + 0.0005 * (i as f64 * 1.7).cos()
}

fn make_candle(i: usize) -> Candle {
    let (o, c) = (price(i.saturating_sub(1)), price(i));
    Candle {
        instrument: Instrument::new("EUR_USD").unwrap(),
        timeframe: Timeframe::H1,
        time: Ts(START + i as i64 * 3600),
        open: (o * 1e5).round() / 1e5,
        high: ((o.max(c) + 0.0004) * 1e5).round() / 1e5,
        low: ((o.min(c) - 0.0004) * 1e5).round() / 1e5,
        close: (c * 1e5).round() / 1e5,
        volume: 100.0,
    }
}

fn grow(m: &mut Market, n: usize) {
    let start = m.candles.len();
    m.candles.extend((start..start + n).map(make_candle));
}

fn to_json(c: &Candle, complete: bool) -> serde_json::Value {
    let f = |v: f64| format!("{v:.5}");
    serde_json::json!({
        "complete": complete, "volume": 100,
        "time": format!("{}", c.time).replace('Z', ".000000000Z"),
        "mid": {"o": f(c.open), "h": f(c.high), "l": f(c.low), "c": f(c.close)}
    })
}

async fn candles(
    State(m): State<Shared>,
    Path(instrument): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let hang = std::mem::take(&mut m.lock().unwrap().hang_next);
    if hang {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let mut m = m.lock().unwrap();
    m.requests.push(format!("{instrument}?{}", raw.unwrap_or_default()));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, r#"{"errorMessage":"Insufficient authorization to perform request."}"#)
            .into_response();
    }
    if !m.failures.is_empty() {
        let status = m.failures.remove(0);
        // Like real outages: not JSON, and a Retry-After only on 429.
        // A 502 with no body at all, as some proxies send it.
        let body = if status == 502 { "" } else { "<html>busy</html>" };
        let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if status == 429 {
            resp.headers_mut().insert("retry-after", "0.3".parse().unwrap());
        }
        return resp;
    }
    assert_eq!(q.get("price").map(String::as_str), Some("M"));
    assert_eq!(q.get("granularity").map(String::as_str), Some("H1"));
    let forming = make_candle(m.candles.len());
    let mut all: Vec<serde_json::Value> = m.candles.iter().map(|c| to_json(c, true)).collect();
    all.push(to_json(&forming, false));
    let body = if let Some(n) = q.get("count") {
        let n: usize = n.parse().unwrap();
        all[all.len().saturating_sub(n)..].to_vec()
    } else {
        let from = Ts::parse_rfc3339(q.get("from").expect("from or count")).unwrap();
        assert_eq!(q.get("includeFirst").map(String::as_str), Some("false"));
        let first = m.candles.iter().position(|c| c.time > from).unwrap_or(m.candles.len());
        all[first..].iter().take(500).cloned().collect()
    };
    axum::Json(serde_json::json!({"instrument": instrument, "granularity": "H1", "candles": body})).into_response()
}

async fn stream(State(m): State<Shared>, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let silent = {
        let mut m = m.lock().unwrap();
        m.stream_connections += 1;
        m.silent_stream
    };
    if silent {
        use futures_util::StreamExt;
        let heartbeat =
            axum::body::Bytes::from_static(b"{\"type\":\"HEARTBEAT\",\"time\":\"2024-01-05T10:00:02.000000000Z\"}\n");
        let body = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(heartbeat) })
            .chain(futures_util::stream::pending());
        return axum::body::Body::from_stream(body).into_response();
    }
    let lines = concat!(
        r#"{"type":"PRICE","time":"2024-01-05T10:00:01.000000000Z","instrument":"EUR_USD","tradeable":true,"bids":[{"price":"1.10010","liquidity":1000000}],"asks":[{"price":"1.10022","liquidity":1000000}],"closeoutBid":"1.1","closeoutAsk":"1.1"}"#,
        "\n",
        r#"{"type":"HEARTBEAT","time":"2024-01-05T10:00:02.000000000Z"}"#,
        "\n"
    );
    lines.into_response()
}

async fn serve(market: Shared) -> String {
    let app = axum::Router::new()
        .route("/v3/instruments/{instrument}/candles", get(candles))
        .route("/v3/accounts/{account}/pricing/stream", get(stream))
        .with_state(market);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let p = dir.join("oanda.toml");
    std::fs::write(
        &p,
        format!(
            "[market]\nsource = \"oanda\"\ninstruments = [\"EUR_USD\"]\ntimeframes = [\"H1\"]\n[market.oanda]\nrest_url = \"{url}\"\nstream_url = \"{url}\"\n"
        ),
    )
    .unwrap();
    p
}

/// Runs headless against the server from a blocking thread so the server keeps serving.
async fn headless(
    cfg: &std::path::Path,
    data: &std::path::Path,
    token: &str,
    run_for: Option<&str>,
) -> std::process::Output {
    let (cfg, data, token, run_for) =
        (cfg.to_path_buf(), data.to_path_buf(), token.to_string(), run_for.map(str::to_string));
    tokio::task::spawn_blocking(move || {
        let mut cmd = pipwatch();
        cmd.args(["headless", "--candles", "-c"]).arg(cfg).arg("--data-dir").arg(data);
        if let Some(d) = run_for {
            cmd.args(["--for", &d]);
        }
        cmd.env("PIPWATCH_OANDA_ACCOUNT", "101-004-1-001")
            .env("PIPWATCH_OANDA_TOKEN", token)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn ids(records: &[serde_json::Value]) -> Vec<String> {
    of_type(records, "signal").iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_then_restart_resumes_without_refetching_history() {
    let market: Shared = Arc::default();
    grow(&mut market.lock().unwrap(), 100);
    let url = serve(market.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data) = (config(dir.path(), &url), dir.path().join("data"));

    let out = headless(&cfg, &data, TOKEN, Some("2500ms")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = json_lines(&out.stdout);
    let requests = std::mem::take(&mut market.lock().unwrap().requests);
    // Warm-up: just enough history for sma 10/20 and atr 14 (21 complete + the forming one).
    assert!(requests[0].contains("count=22"), "{requests:?}");
    assert!(requests.len() >= 2, "{requests:?}");
    assert!(
        requests[1..].iter().all(|r| r.contains("from=2024-01-05T03%3A00%3A00Z") && r.contains("includeFirst=false")),
        "{requests:?}"
    );
    let candles = of_type(&first, "candle");
    assert_eq!(candles.len(), 21);
    assert_eq!(candles.last().unwrap()["time"], "2024-01-05T03:00:00Z");
    assert!(ids(&first).is_empty(), "history before the first start must not be signalled");

    // pipwatch is down while 40 candles close.
    grow(&mut market.lock().unwrap(), 40);
    let out = headless(&cfg, &data, TOKEN, Some("2s")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = json_lines(&out.stdout);
    let requests = market.lock().unwrap().requests.clone();
    assert!(requests.iter().all(|r| !r.contains("count=")), "history was fetched again: {requests:?}");
    assert!(requests[0].contains("from=2024-01-05T03%3A00%3A00Z"), "{requests:?}");
    let times: Vec<&str> = of_type(&second, "candle").iter().map(|c| c["time"].as_str().unwrap()).collect();
    assert_eq!(times.len(), 40);
    assert_eq!(times[0], "2024-01-05T04:00:00Z");

    // The crossovers that happened while it was down are signalled, in order,
    // exactly as an engine that never stopped would have signalled them.
    let all: Vec<Candle> = market.lock().unwrap().candles.clone();
    let mut engine = Engine::new(StrategySet::default());
    let mut events = Vec::new();
    for c in &all[79..100] {
        engine.apply_into(c, Phase::Warmup, &mut events);
    }
    for c in &all[100..] {
        engine.apply_into(c, Phase::Live, &mut events);
    }
    let want: Vec<String> =
        events.iter().filter_map(|e| if let Event::Signal(s) = e { Some(s.id.clone()) } else { None }).collect();
    assert!(!want.is_empty(), "the test data has no crossover in the missed candles");
    assert_eq!(ids(&second), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_stops_with_a_clear_message() {
    let market: Shared = Arc::default();
    grow(&mut market.lock().unwrap(), 50);
    let url = serve(market.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = headless(&config(dir.path(), &url), &dir.path().join("data"), "wrong-token", None).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "error: OANDA refused the API token (HTTP 401: Insufficient authorization to perform request.)"
        ),
        "{stderr}"
    );
    assert!(last.contains("Check PIPWATCH_OANDA_TOKEN"), "{last}");
    assert!(!stderr.contains("wrong-token"), "the token leaked: {stderr}");
    // One refused request, not a retry storm.
    assert_eq!(market.lock().unwrap().requests.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_outages_back_off_and_recover() {
    let market: Shared = Arc::default();
    {
        let mut m = market.lock().unwrap();
        grow(&mut m, 60);
        m.failures = vec![429, 503, 502];
    }
    let url = serve(market.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // Worst case of the jittered waits: 0.3 s (Retry-After) + 2 s + 4 s.
    let out = headless(&config(dir.path(), &url), &dir.path().join("data"), TOKEN, Some("8s")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    let retrying: Vec<_> = of_type(&records, "feed").into_iter().filter(|f| f["state"] == "retrying").collect();
    assert_eq!(retrying.len(), 3, "{records:?}");
    assert!(retrying[0]["message"].as_str().unwrap().contains("rate limiting"));
    assert!(retrying[1]["message"].as_str().unwrap().contains("OANDA answered HTTP 503: <html>busy</html>;"));
    assert!(retrying[2]["message"].as_str().unwrap().contains("OANDA answered HTTP 502: no body;"), "{retrying:?}");
    assert!(
        of_type(&records, "feed")
            .iter()
            .any(|f| f["state"] == "live" && f["message"].as_str().is_some_and(|m| m.contains("recovered")))
    );
    assert_eq!(of_type(&records, "candle").len(), 21, "the warm-up did not complete after the failures");
    let requests = market.lock().unwrap().requests.len();
    assert!((4..=8).contains(&requests), "{requests} requests: backoff too eager or too slow");
}

/// A host nobody answers on: the feed says why, not just "error sending request".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_is_named_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("http://127.0.0.1:{port}"));
    let out = headless(&cfg, &dir.path().join("data"), TOKEN, Some("1500ms")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    let retrying = of_type(&records, "feed").into_iter().find(|f| f["state"] == "retrying").expect("a retrying feed");
    let message = retrying["message"].as_str().unwrap();
    assert!(message.starts_with("EUR_USD:H1: cannot reach OANDA: could not connect: Connection refused"), "{message}");
}

/// OANDA down for every series is one outage: reported as the count of
/// series failing grows, not once per series and retry (18 reports in this
/// run when each retry was one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_every_series_is_reported_once_not_per_retry() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("http://127.0.0.1:{port}"));
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "instruments = [\"EUR_USD\"]\ntimeframes = [\"H1\"]",
        "instruments = [\"EUR_USD\", \"GBP_USD\", \"USD_JPY\"]\ntimeframes = [\"H1\", \"H4\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    // Backoff 1, 2 s: each series tries two or three times.
    let out = headless(&cfg, &dir.path().join("data"), TOKEN, Some("3500ms")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tries = stderr.matches("OANDA candles request failed").count();
    assert!(tries >= 12, "{tries} failed requests: every series should have retried");
    let records = json_lines(&out.stdout);
    let retrying: Vec<String> = of_type(&records, "feed")
        .into_iter()
        .filter(|f| f["state"] == "retrying")
        .map(|f| f["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(retrying.len() <= 6, "{} reports for {tries} failures: {retrying:#?}", retrying.len());
    assert!(
        retrying[0].ends_with("cannot reach OANDA: could not connect: Connection refused (os error 111); retrying")
    );
    assert_eq!(
        retrying.last().map(String::as_str),
        Some("6 of 6 series: cannot reach OANDA: could not connect: Connection refused (os error 111); retrying")
    );
}

/// The pricing stream, through the library: quotes arrive, and a stream that
/// ends is reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pricing_stream_delivers_quotes_and_reconnects() {
    use pipwatch::market::{MarketEvent, MarketSource, oanda::OandaSource};
    let market: Shared = Arc::default();
    grow(&mut market.lock().unwrap(), 30);
    let url = serve(market.clone()).await;
    let source = Box::new(OandaSource::new(&test_oanda_config(&url)).unwrap());
    let (ctx, mut rx, shutdown) = resumed_ctx(&market);
    let task = tokio::spawn(source.run(ctx));
    let mut quotes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while quotes < 2 {
        match tokio::time::timeout_at(deadline, rx.recv()).await.expect("no quotes within 10s") {
            Some(MarketEvent::Quote(q)) => {
                assert_eq!((q.bid, q.ask), (1.1001, 1.10022));
                quotes += 1;
            }
            Some(MarketEvent::Candle { .. }) => panic!("no new candle was served"),
            Some(_) => {}
            None => panic!("the source ended"),
        }
    }
    shutdown.cancel();
    assert!(task.await.unwrap().is_ok());
}

/// A source context for EUR_USD:H1 resuming after the server's last candle,
/// so only the stream (not candle polls) produces events.
fn resumed_ctx(
    market: &Shared,
) -> (
    pipwatch::market::SourceCtx,
    tokio::sync::mpsc::Receiver<pipwatch::market::MarketEvent>,
    tokio_util::sync::CancellationToken,
) {
    let key = pipwatch::types::SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H1);
    let c = *market.lock().unwrap().candles.last().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let resume = [(key, pipwatch::engine::Last { time: c.time, close: c.close })].into();
    let ctx = pipwatch::market::SourceCtx {
        tx,
        shutdown: shutdown.clone(),
        series: vec![key],
        resume,
        strategies: StrategySet::default(),
    };
    (ctx, rx, shutdown)
}

fn test_oanda_config(url: &str) -> pipwatch::config::Oanda {
    let mut cfg = pipwatch::config::Config::default().market.oanda;
    cfg.rest_url = url.to_string();
    cfg.stream_url = url.to_string();
    cfg.token = pipwatch::config::Secret::new(TOKEN);
    cfg.account_id = pipwatch::config::Secret::new("101-004-1-001");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_times_out_and_the_retry_succeeds() {
    use pipwatch::market::oanda::{OandaClient, OandaError, Query};
    let market: Shared = Arc::default();
    {
        let mut m = market.lock().unwrap();
        grow(&mut m, 30);
        m.hang_next = true;
    }
    let url = serve(market.clone()).await;
    let client = OandaClient::new(&test_oanda_config(&url))
        .unwrap()
        .with_timeouts(Duration::from_millis(300), Duration::from_secs(10));
    let key = pipwatch::types::SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H1);
    let started = std::time::Instant::now();
    let err = client.candles(key, &Query::Latest(5)).await.unwrap_err();
    assert!(matches!(err, OandaError::Network(_)) && err.retryable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the timeout did not cut the hung request");
    let (candles, _) = client.candles(key, &Query::Latest(5)).await.unwrap();
    assert_eq!(candles.len(), 4, "4 complete candles and the forming one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_price_stream_is_reconnected() {
    use pipwatch::market::MarketSource;
    use pipwatch::market::oanda::{OandaClient, OandaSource};
    let market: Shared = Arc::default();
    {
        let mut m = market.lock().unwrap();
        grow(&mut m, 30);
        m.silent_stream = true;
    }
    let url = serve(market.clone()).await;
    let client = OandaClient::new(&test_oanda_config(&url))
        .unwrap()
        .with_timeouts(Duration::from_secs(5), Duration::from_millis(300));
    let (ctx, mut rx, shutdown) = resumed_ctx(&market);
    let task = tokio::spawn(Box::new(OandaSource::with_client(client)).run(ctx));
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    assert!(task.await.unwrap().is_ok());
    // 300 ms of silence ends a connection; reconnects back off from 0.5-1 s.
    let connections = market.lock().unwrap().stream_connections;
    assert!((2..=6).contains(&connections), "{connections} stream connections in 3 s");
}

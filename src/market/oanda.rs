//! OANDA v20: REST candles and the pricing stream. Facts: shared/reference/oanda.md.
//!
//! Per series: with no stored state, a warm-up of just enough complete
//! candles (`count`); then incremental polls `from=<last complete>` with
//! `includeFirst=false`, scheduled just after the next expected close and
//! backing off while the candle is still forming (or the market is shut).
//! A restart resumes from the stored cursor, so missed candles arrive, in
//! order, as live candles: their crossovers are still signalled.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use super::{MarketEvent, MarketSource, SourceCtx, SourceError, SourceFuture};
use crate::config::{Oanda, Secret};
use crate::engine::Phase;
use crate::event::FeedState;
use crate::net::backoff;
use crate::time::Ts;
use crate::types::{Candle, Instrument, Quote, SeriesKey};

/// OANDA's default page size for `from` queries without `count`.
const PAGE: usize = 500;
/// The official client's stream read timeout: heartbeats come every 5 s.
const STREAM_SILENCE: Duration = Duration::from_secs(10);
/// A candles request that takes longer than this has hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OandaError {
    #[error(
        "OANDA refused the API token (HTTP 401: {message}). Check {var}: a practice token works only with the practice hosts (api-fxpractice / stream-fxpractice), a live token only with the live ones"
    )]
    Unauthorized { message: String, var: String },
    #[error(
        "OANDA refused the request (HTTP 403: {message}). Check market.oanda.account_id: it must be an account of this token"
    )]
    Forbidden { message: String },
    #[error("OANDA rejected {what} (HTTP {status}: {message})")]
    Rejected { what: String, status: u16, message: String },
    #[error("OANDA is rate limiting (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("OANDA answered HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("cannot reach OANDA: {0}")]
    Network(String),
    #[error("OANDA sent something unreadable: {0}")]
    Decode(String),
}

impl OandaError {
    /// 429, 5xx and network trouble pass; anything else needs the user.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            OandaError::RateLimited { .. } | OandaError::Server { .. } | OandaError::Network(_) | OandaError::Decode(_)
        )
    }
}

#[derive(Deserialize)]
struct CandlesResponse {
    candles: Vec<OCandle>,
}

#[derive(Deserialize)]
struct OCandle {
    complete: bool,
    #[serde(default)]
    volume: f64,
    time: String,
    mid: Option<Ohlc>,
}

#[derive(Deserialize)]
struct Ohlc {
    o: String,
    h: String,
    l: String,
    c: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorMessage")]
    error_message: Option<String>,
}

#[derive(Deserialize)]
struct StreamLine {
    #[serde(rename = "type")]
    kind: Option<String>,
    instrument: Option<String>,
    time: Option<String>,
    #[serde(default)]
    bids: Vec<PriceBucket>,
    #[serde(default)]
    asks: Vec<PriceBucket>,
}

#[derive(Deserialize)]
struct PriceBucket {
    price: String,
}

pub enum Query {
    /// The latest `n` candles (warm-up).
    Latest(u32),
    /// Everything after this candle time.
    After(Ts),
}

#[derive(Clone)]
pub struct OandaClient {
    http: reqwest::Client,
    rest: String,
    stream: String,
    account: String,
    token: Secret,
    request_timeout: Duration,
    stream_silence: Duration,
}

impl OandaClient {
    pub fn new(cfg: &Oanda) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pipwatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OandaClient {
            http,
            rest: cfg.rest_url.trim_end_matches('/').to_string(),
            stream: cfg.stream_url.trim_end_matches('/').to_string(),
            account: cfg.account_id.expose().to_string(),
            token: cfg.token.clone(),
            request_timeout: REQUEST_TIMEOUT,
            stream_silence: STREAM_SILENCE,
        })
    }

    /// Shorter limits than OANDA's real cadence, for tests.
    pub fn with_timeouts(mut self, request: Duration, stream_silence: Duration) -> Self {
        self.request_timeout = request;
        self.stream_silence = stream_silence;
        self
    }

    fn token_var(&self) -> String {
        self.token.var().map_or_else(|| "market.oanda.token".to_string(), str::to_string)
    }

    async fn classify(&self, resp: reqwest::Response, what: &str) -> Result<reqwest::Response, OandaError> {
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = resp.text().await.unwrap_or_default();
        // The body is JSON by the spec, but proxies and outages send HTML.
        let message = serde_json::from_str::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.error_message)
            .unwrap_or_else(|| body.chars().take(200).collect::<String>().trim().to_string());
        // An empty body would leave "HTTP 503: " hanging.
        let message = if message.is_empty() { "no body".to_string() } else { message };
        Err(match status {
            401 => OandaError::Unauthorized { message, var: self.token_var() },
            403 => OandaError::Forbidden { message },
            429 => OandaError::RateLimited { retry_after },
            500..=599 => OandaError::Server { status, message },
            _ => OandaError::Rejected { what: what.to_string(), status, message },
        })
    }

    /// Complete candles only, oldest first, and whether the page was full.
    pub async fn candles(&self, key: SeriesKey, q: &Query) -> Result<(Vec<Candle>, bool), OandaError> {
        let url = format!("{}/v3/instruments/{}/candles", self.rest, key.instrument);
        let mut req = self
            .http
            .get(&url)
            .bearer_auth(self.token.expose())
            .header("Accept-Datetime-Format", "RFC3339")
            .timeout(self.request_timeout)
            .query(&[("price", "M"), ("granularity", key.timeframe.as_str())]);
        req = match q {
            Query::Latest(n) => req.query(&[("count", n.to_string())]),
            Query::After(t) => req.query(&[("from", t.to_string()), ("includeFirst", "false".to_string())]),
        };
        let resp = req.send().await.map_err(|e| OandaError::Network(crate::net::describe(e)))?;
        let resp = self.classify(resp, &format!("the candles request for {key}")).await?;
        let body: CandlesResponse = resp.json().await.map_err(|e| OandaError::Decode(crate::net::describe(e)))?;
        let full = body.candles.len() >= PAGE;
        let mut out = Vec::with_capacity(body.candles.len());
        for c in body.candles.into_iter().filter(|c| c.complete) {
            match parse_candle(key, &c) {
                Some(candle) => out.push(candle),
                None => tracing::warn!(series = %key, time = %c.time, "unreadable OANDA candle skipped"),
            }
        }
        Ok((out, full))
    }

    /// Streams prices until the stream ends, goes silent, or shutdown.
    /// Returns whether anything arrived (to reset the reconnect backoff).
    async fn stream_prices(&self, instruments: &[Instrument], ctx: &SourceCtx) -> Result<bool, OandaError> {
        let url = format!("{}/v3/accounts/{}/pricing/stream", self.stream, self.account);
        let list = instruments.iter().map(Instrument::as_str).collect::<Vec<_>>().join(",");
        let resp = self
            .http
            .get(&url)
            .bearer_auth(self.token.expose())
            .header("Accept-Datetime-Format", "RFC3339")
            .query(&[("instruments", list.as_str()), ("snapshot", "true")])
            .send()
            .await
            .map_err(|e| OandaError::Network(crate::net::describe(e)))?;
        let resp = self.classify(resp, "the pricing stream request").await?;
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut got_any = false;
        loop {
            let chunk = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(got_any),
                c = tokio::time::timeout(self.stream_silence, body.next()) => c,
            };
            let bytes = match chunk {
                Err(_) => {
                    return Err(OandaError::Network(format!("no data or heartbeat for {}s", STREAM_SILENCE.as_secs())));
                }
                Ok(None) => return Err(OandaError::Network("the stream ended".into())),
                Ok(Some(Err(e))) => return Err(OandaError::Network(crate::net::describe(e))),
                Ok(Some(Ok(b))) => b,
            };
            buf.extend_from_slice(&bytes);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                got_any = true;
                if let Some(q) = parse_price_line(&line)
                    && !ctx.send(MarketEvent::Quote(q)).await
                {
                    return Ok(got_any);
                }
            }
        }
    }
}

fn parse_candle(key: SeriesKey, c: &OCandle) -> Option<Candle> {
    let m = c.mid.as_ref()?;
    let p = |s: &str| s.trim().parse::<f64>().ok();
    Some(Candle {
        instrument: key.instrument,
        timeframe: key.timeframe,
        time: Ts::parse_rfc3339(&c.time)?,
        open: p(&m.o)?,
        high: p(&m.h)?,
        low: p(&m.l)?,
        close: p(&m.c)?,
        volume: c.volume,
    })
}

fn parse_price_line(line: &[u8]) -> Option<Quote> {
    let l: StreamLine = serde_json::from_slice(line.trim_ascii()).ok()?;
    // The official parser: HEARTBEAT is a heartbeat, anything else a price.
    if l.kind.as_deref() == Some("HEARTBEAT") {
        return None;
    }
    Some(Quote {
        instrument: Instrument::new(l.instrument.as_deref()?).ok()?,
        time: Ts::parse_rfc3339(l.time.as_deref()?)?,
        bid: l.bids.first()?.price.parse().ok()?,
        ask: l.asks.first()?.price.parse().ok()?,
    })
}

pub struct OandaSource {
    client: OandaClient,
}

impl OandaSource {
    pub fn new(cfg: &Oanda) -> Result<Self, reqwest::Error> {
        Ok(OandaSource { client: OandaClient::new(cfg)? })
    }

    pub fn with_client(client: OandaClient) -> Self {
        OandaSource { client }
    }
}

async fn sleep_or_stop(ctx: &SourceCtx, d: Duration) -> bool {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The candle feed's state across its series. An outage of OANDA fails every
/// series at once, and each retries on its own clock: reported per series and
/// retry, that is a storm of `feed` events (7 a round for the majors, 28 on
/// four timeframes) saying one thing. Here it is one report per change of
/// what is wrong: how many series fail, and with which error.
struct FeedReport {
    total: usize,
    /// The series failing, and the latest error.
    failing: std::sync::Mutex<(std::collections::BTreeSet<SeriesKey>, Option<String>)>,
}

impl FeedReport {
    fn new(total: usize) -> Self {
        FeedReport { total, failing: std::sync::Mutex::default() }
    }

    /// What is wrong, while some series fail.
    fn retrying(&self, failing: &std::collections::BTreeSet<SeriesKey>, error: &str) -> String {
        match (failing.len(), failing.first()) {
            (1, Some(key)) => format!("{key}: {error}; retrying"),
            (n, _) => format!("{n} of {} series: {error}; retrying", self.total),
        }
    }

    async fn failed(&self, ctx: &SourceCtx, key: SeriesKey, error: &OandaError) {
        let error = error.to_string();
        let message = {
            let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            let new_series = f.0.insert(key);
            if !new_series && f.1.as_deref() == Some(error.as_str()) {
                return;
            }
            f.1 = Some(error.clone());
            self.retrying(&f.0, &error)
        };
        ctx.status("oanda", FeedState::Retrying, Some(message)).await;
    }

    async fn ok(&self, ctx: &SourceCtx, key: SeriesKey) {
        let (state, message) = {
            let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            if !f.0.remove(&key) {
                return;
            }
            if f.0.is_empty() {
                f.1 = None;
                (FeedState::Live, format!("{key} recovered"))
            } else {
                (FeedState::Retrying, self.retrying(&f.0, f.1.as_deref().unwrap_or("failing")))
            }
        };
        ctx.status("oanda", state, Some(message)).await;
    }
}

async fn run_series(
    client: &OandaClient,
    key: SeriesKey,
    ctx: &SourceCtx,
    report: &FeedReport,
) -> Result<(), SourceError> {
    let tf = key.timeframe.seconds();
    let warmup = ctx.strategies.for_instrument(key.instrument).warmup_candles().min(4999);
    let mut cursor = ctx.resume.get(&key).map(|c| c.time);
    let (mut idle, mut errors) = (0u32, 0u32);
    loop {
        let query = cursor.map_or(Query::Latest(warmup + 1), Query::After);
        let wait = match client.candles(key, &query).await {
            Ok((candles, full)) => {
                if errors > 0 {
                    report.ok(ctx, key).await;
                }
                errors = 0;
                let phase = if cursor.is_none() { Phase::Warmup } else { Phase::Live };
                let mut got = false;
                let after = cursor;
                for candle in candles.into_iter().filter(|c| after.is_none_or(|t| c.time > t)) {
                    cursor = Some(candle.time);
                    got = true;
                    if !ctx.send(MarketEvent::Candle { candle, phase }).await {
                        return Ok(());
                    }
                }
                if got && full {
                    continue; // More missed candles than one page: keep reading.
                }
                if got {
                    idle = 0;
                    // The next candle closes one timeframe after the one still
                    // forming; ask just after that.
                    let next_close = cursor.map_or(0, |t| t.0 + 2 * tf + 2);
                    Duration::from_secs(u64::try_from(next_close - Ts::now().0).unwrap_or(0))
                        .max(Duration::from_secs(1))
                } else {
                    idle += 1;
                    backoff(idle, Duration::from_secs(2), Duration::from_secs(60))
                }
            }
            Err(e) if !e.retryable() => {
                ctx.status("oanda", FeedState::Failed, Some(e.to_string())).await;
                return Err(match e {
                    OandaError::Unauthorized { .. } => SourceError::Auth(e.to_string()),
                    _ => SourceError::Fatal(e.to_string()),
                });
            }
            Err(e) => {
                errors += 1;
                let wait = match &e {
                    OandaError::RateLimited { retry_after: Some(d) } => *d,
                    _ => backoff(errors, Duration::from_secs(1), Duration::from_secs(60)),
                };
                tracing::warn!(series = %key, error = %e, retry_in_ms = wait.as_millis() as u64, "OANDA candles request failed; retrying");
                report.failed(ctx, key, &e).await;
                wait
            }
        };
        if !sleep_or_stop(ctx, wait).await {
            return Ok(());
        }
    }
}

async fn run_stream(client: &OandaClient, ctx: &SourceCtx) -> Result<(), SourceError> {
    let mut instruments: Vec<Instrument> = ctx.series.iter().map(|k| k.instrument).collect();
    instruments.dedup();
    let mut attempt = 0u32;
    loop {
        match client.stream_prices(&instruments, ctx).await {
            Ok(_) if ctx.shutdown.is_cancelled() => return Ok(()),
            Ok(true) => attempt = 0,
            Ok(false) => {}
            Err(e @ OandaError::Unauthorized { .. }) => return Err(SourceError::Auth(e.to_string())),
            Err(e) if !e.retryable() => {
                // Quotes are a nicety: candles and signals go on without them.
                tracing::warn!(error = %e, "OANDA pricing stream unavailable; live quotes are off");
                return Ok(());
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, "OANDA pricing stream dropped; reconnecting");
            }
        }
        if !sleep_or_stop(ctx, backoff(attempt, Duration::from_secs(1), Duration::from_secs(30))).await {
            return Ok(());
        }
    }
}

impl MarketSource for OandaSource {
    fn name(&self) -> &'static str {
        "oanda"
    }

    fn run(self: Box<Self>, ctx: SourceCtx) -> SourceFuture {
        Box::pin(async move {
            let client = self.client;
            let warming = ctx.series.iter().any(|k| !ctx.resume.contains_key(k));
            let state = if warming { FeedState::WarmingUp } else { FeedState::Live };
            ctx.status("oanda", state, None).await;
            let report = FeedReport::new(ctx.series.len());
            let series =
                futures_util::future::try_join_all(ctx.series.iter().map(|&k| run_series(&client, k, &ctx, &report)));
            let (candles, stream) = futures_util::future::join(
                async {
                    let r = series.await.map(|_| ());
                    if r.is_err() {
                        // Stop the stream too: the whole source has failed.
                        ctx.shutdown.cancel();
                    }
                    r
                },
                run_stream(&client, &ctx),
            )
            .await;
            candles.and(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_lines() {
        let line = br#"{"type":"PRICE","time":"2016-10-27T08:38:45.664613867Z","instrument":"EUR_USD","status":"tradeable","tradeable":true,"bids":[{"price":"1.09177","liquidity":10000000}],"asks":[{"price":"1.09188","liquidity":10000000}],"closeoutBid":"1.09173","closeoutAsk":"1.09192"}"#;
        let q = parse_price_line(line).unwrap();
        assert_eq!((q.bid, q.ask, q.time.to_string().as_str()), (1.09177, 1.09188, "2016-10-27T08:38:45Z"));
        assert_eq!(parse_price_line(br#"{"type":"HEARTBEAT","time":"2016-10-27T08:38:44.327443673Z"}"#), None);
        // Old recorded lines have no type: still a price.
        assert!(parse_price_line(br#"{"time":"2016-10-27T08:38:45Z","instrument":"EUR_USD","bids":[{"price":"1.1"}],"asks":[{"price":"1.2"}]}"#).is_some());
        assert_eq!(parse_price_line(b"not json"), None);
    }
}

//! The one event type everything publishes: the vocabulary every producer,
//! fold and front end shares. It imports no producer.

use serde::{Deserialize, Serialize};

use crate::time::Ts;
use crate::types::{Instrument, Quote, Severity, Side, Timeframe};

/// Everything a user can see. Internally tagged by `type`, one JSON object a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Candle(CandleRecord),
    Signal(Signal),
    Quote(Quote),
    Rejected(Rejected),
    Feed(FeedStatus),
    Alert(Alert),
    /// A notification's progress to one route.
    Delivery(Delivery),
    /// The notifier's queues, routes and counters.
    Queue(QueueStatus),
    /// A system and engine health sample (every `health.sample_every`).
    Health(HealthSample),
    /// A signal's paper trade closed (live): its stop, its target, or a reversal.
    Outcome(Trade),
}

/// A closed candle with the indicator values after it (null until defined).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandleRecord {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    pub time: Ts,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub fast: Option<f64>,
    pub slow: Option<f64>,
    pub atr: Option<f64>,
}

impl CandleRecord {
    /// Writes this record as the `candle` JSON line's object, byte for byte
    /// what serde writes for `Event::Candle` (a property test holds it), for
    /// `replay --indicators`, which writes one per candle: serde's tagged
    /// enum goes through a generic map, escaping every key. Names of
    /// instruments and timeframes and the time are plain ASCII (validated),
    /// so they need no escaping; numbers use serde_json's own formatter.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut time = [0u8; 20];
        out.write_all(b"{\"type\":\"candle\",\"instrument\":\"")?;
        out.write_all(self.instrument.as_str().as_bytes())?;
        out.write_all(b"\",\"timeframe\":\"")?;
        out.write_all(self.timeframe.as_str().as_bytes())?;
        out.write_all(b"\",\"time\":\"")?;
        out.write_all(self.time.format_into(&mut time).as_bytes())?;
        out.write_all(b"\",\"open\":")?;
        json_f64(out, self.open)?;
        out.write_all(b",\"high\":")?;
        json_f64(out, self.high)?;
        out.write_all(b",\"low\":")?;
        json_f64(out, self.low)?;
        out.write_all(b",\"close\":")?;
        json_f64(out, self.close)?;
        out.write_all(b",\"fast\":")?;
        json_opt(out, self.fast)?;
        out.write_all(b",\"slow\":")?;
        json_opt(out, self.slow)?;
        out.write_all(b",\"atr\":")?;
        json_opt(out, self.atr)?;
        out.write_all(b"}")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// `INSTRUMENT:TIMEFRAME:CANDLE_TIME:SIDE`: one candle can never yield two.
    pub id: String,
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    pub time: Ts,
    pub side: Side,
    pub price: f64,
    pub fast: f64,
    pub slow: f64,
    pub atr: f64,
    pub stop_loss: f64,
    pub take_profit: f64,
    pub strategy: String,
}

impl Signal {
    /// Writes this signal as the `signal` JSON line's object, byte for byte
    /// what serde writes for `Event::Signal` (a property test holds it): a
    /// replay of years of candles writes tens of thousands.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut time = [0u8; 20];
        out.write_all(b"{\"type\":\"signal\",\"id\":")?;
        json_str(out, &self.id)?;
        out.write_all(b",\"instrument\":\"")?;
        out.write_all(self.instrument.as_str().as_bytes())?;
        out.write_all(b"\",\"timeframe\":\"")?;
        out.write_all(self.timeframe.as_str().as_bytes())?;
        out.write_all(b"\",\"time\":\"")?;
        out.write_all(self.time.format_into(&mut time).as_bytes())?;
        out.write_all(b"\",\"side\":\"")?;
        out.write_all(self.side.as_str().as_bytes())?;
        out.write_all(b"\",\"price\":")?;
        json_f64(out, self.price)?;
        out.write_all(b",\"fast\":")?;
        json_f64(out, self.fast)?;
        out.write_all(b",\"slow\":")?;
        json_f64(out, self.slow)?;
        out.write_all(b",\"atr\":")?;
        json_f64(out, self.atr)?;
        out.write_all(b",\"stop_loss\":")?;
        json_f64(out, self.stop_loss)?;
        out.write_all(b",\"take_profit\":")?;
        json_f64(out, self.take_profit)?;
        out.write_all(b",\"strategy\":")?;
        json_str(out, &self.strategy)?;
        out.write_all(b"}")
    }

    pub fn make_id(instrument: Instrument, timeframe: Timeframe, time: Ts, side: Side) -> String {
        format!("{instrument}:{timeframe}:{time}:{side}")
    }
}

/// Why a paper trade ended (`open`: it had not, when the data ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    Target,
    Stop,
    Reversed,
    Open,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Target => "target",
            ExitReason::Stop => "stop",
            ExitReason::Reversed => "reversed",
            ExitReason::Open => "open",
        }
    }
}

/// A signal's paper trade, closed (or `open` at the end of the data): the
/// `trade` record of `backtest` and the `outcome` of a live trade share it.
/// The rules are `engine::trade`'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    /// The signal's id.
    pub id: String,
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    pub side: Side,
    pub entry_time: Ts,
    pub entry: f64,
    pub stop_loss: f64,
    pub take_profit: f64,
    pub exit_time: Ts,
    pub exit: f64,
    pub exit_reason: ExitReason,
    /// Exited at a candle's open beyond its level.
    pub gap: bool,
    pub pips: f64,
    pub r: f64,
    /// Candles the trade was open through.
    pub bars: u32,
    pub mae_r: f64,
    pub mfe_r: f64,
}

impl Trade {
    /// Writes this trade as a JSON object tagged `"type":"<kind>"`, byte for
    /// byte what serde writes for the same tagged record (a property test
    /// holds it): a backtest of years writes tens of thousands.
    pub fn write_json(&self, kind: &str, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut time = [0u8; 20];
        out.write_all(b"{\"type\":")?;
        json_str(out, kind)?;
        out.write_all(b",\"id\":")?;
        json_str(out, &self.id)?;
        out.write_all(b",\"instrument\":\"")?;
        out.write_all(self.instrument.as_str().as_bytes())?;
        out.write_all(b"\",\"timeframe\":\"")?;
        out.write_all(self.timeframe.as_str().as_bytes())?;
        out.write_all(b"\",\"side\":\"")?;
        out.write_all(self.side.as_str().as_bytes())?;
        out.write_all(b"\",\"entry_time\":\"")?;
        out.write_all(self.entry_time.format_into(&mut time).as_bytes())?;
        out.write_all(b"\",\"entry\":")?;
        json_f64(out, self.entry)?;
        out.write_all(b",\"stop_loss\":")?;
        json_f64(out, self.stop_loss)?;
        out.write_all(b",\"take_profit\":")?;
        json_f64(out, self.take_profit)?;
        out.write_all(b",\"exit_time\":\"")?;
        out.write_all(self.exit_time.format_into(&mut time).as_bytes())?;
        out.write_all(b"\",\"exit\":")?;
        json_f64(out, self.exit)?;
        out.write_all(b",\"exit_reason\":\"")?;
        out.write_all(self.exit_reason.as_str().as_bytes())?;
        out.write_all(if self.gap { b"\",\"gap\":true,\"pips\":" } else { b"\",\"gap\":false,\"pips\":" })?;
        json_f64(out, self.pips)?;
        out.write_all(b",\"r\":")?;
        json_f64(out, self.r)?;
        out.write_all(b",\"bars\":")?;
        out.write_all(itoa_u32(self.bars, &mut [0u8; 10]))?;
        out.write_all(b",\"mae_r\":")?;
        json_f64(out, self.mae_r)?;
        out.write_all(b",\"mfe_r\":")?;
        json_f64(out, self.mfe_r)?;
        out.write_all(b"}")
    }
}

/// A number as serde_json writes it (null when not finite). Generic, not
/// `dyn`: the hand-written records call it per field on their hot path.
#[inline]
fn json_f64<W: std::io::Write + ?Sized>(out: &mut W, v: f64) -> std::io::Result<()> {
    use serde_json::ser::{CompactFormatter, Formatter};
    match v.is_finite() {
        true => CompactFormatter.write_f64(out, v),
        false => out.write_all(b"null"),
    }
}

#[inline]
fn json_opt<W: std::io::Write + ?Sized>(out: &mut W, v: Option<f64>) -> std::io::Result<()> {
    match v {
        Some(v) => json_f64(out, v),
        None => out.write_all(b"null"),
    }
}

fn json_str<W: std::io::Write + ?Sized>(out: &mut W, v: &str) -> std::io::Result<()> {
    serde_json::to_writer(out, v).map_err(std::io::Error::other)
}

/// `n` in decimal, in `buf`.
fn itoa_u32(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// A candle the engine refused, with why. `count` is the series' running total.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    pub time: Ts,
    pub reason: String,
    pub count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedState {
    /// Loading history before live candles.
    WarmingUp,
    Live,
    /// A request failed and will be retried.
    Retrying,
    /// The source has no more candles (end of a CSV file).
    Finished,
    /// Stopped for good: the message says why.
    Failed,
}

/// The market source's state, for the header and for /health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedStatus {
    pub source: String,
    pub state: FeedState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A demo's pairs that play recorded history; the others are simulated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Instrument>,
}

impl FeedStatus {
    pub fn new(source: impl Into<String>, state: FeedState, message: Option<String>) -> Self {
        FeedStatus { source: source.into(), state, message, history: Vec::new() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    /// Seen by someone (`a` in the console): still active, no longer new.
    Acknowledged,
    Resolved,
}

/// Something an admin should know about. `check` names what raised it; one
/// episode (raised, then resolved) of a check shares one `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub check: String,
    pub severity: Severity,
    pub state: AlertState,
    pub title: String,
    pub message: String,
    pub time: Ts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Written to the outbox, not yet sent.
    Queued,
    /// Discord confirmed it (`message_id`).
    Delivered,
    /// A request failed; it stays queued and will be retried.
    Failed,
    /// Given up on: in the dead list with its error.
    Dead,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The signal's or alert's id.
    pub id: String,
    pub route: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `delivered`: seconds from when it was due to Discord's confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_secs: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    Closed,
    /// Failing: no requests until the cool-down ends.
    Open,
    /// One probe request decides between closed and open.
    HalfOpen,
    /// Discord said the webhook is gone or refused (404/401/403): never retried.
    Disabled,
}

/// Pending notifications by priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depths {
    pub urgent: u64,
    pub high: u64,
    pub normal: u64,
    pub low: u64,
}

impl Depths {
    pub fn total(&self) -> u64 {
        self.urgent + self.high + self.normal + self.low
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    pub circuit: Circuit,
    pub depth: u64,
    /// Age of the oldest entry that is due, in seconds.
    pub oldest_pending_secs: Option<u64>,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Whether the route is waiting for a rate-limit reset right now.
    pub waiting: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub paused: bool,
    pub depth: Depths,
    pub routes: Vec<RouteStatus>,
}

/// Signal latency percentiles, in milliseconds, over the recent window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub count: u64,
}

/// A series whose next candle is overdue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stale {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    pub overdue_secs: u64,
}

/// The host and this process, as sysinfo saw them at one sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemSample {
    /// Percent of all cores.
    pub cpu: f32,
    pub cpus: Vec<f32>,
    pub memory_used: u64,
    pub memory_total: u64,
    pub swap_used: u64,
    pub swap_total: u64,
    /// The filesystem holding the data directory, counted as `df` does for
    /// its Use%: used, and used plus what this user can still write (space
    /// reserved for root is in neither).
    pub disk_used: u64,
    pub disk_total: u64,
    pub net_rx_per_s: u64,
    pub net_tx_per_s: u64,
    /// This process: percent of one core, and resident memory.
    pub process_cpu: f32,
    pub process_rss: u64,
    pub uptime_secs: u64,
    pub load: [f64; 3],
    /// This process for `/metrics`, in the names Prometheus users know
    /// (`process_cpu_seconds_total`, `process_open_fds`, ...). Absent from
    /// the records of older versions, hence the defaults.
    #[serde(default)]
    pub process: ProcessFigures,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub virtual_memory: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    /// Unix seconds.
    pub start_time: i64,
}

impl SystemSample {
    pub fn memory_pct(&self) -> f64 {
        pct(self.memory_used, self.memory_total)
    }

    pub fn disk_pct(&self) -> f64 {
        pct(self.disk_used, self.disk_total)
    }
}

fn pct(used: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { used as f64 * 100.0 / total as f64 }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSample {
    pub time: Ts,
    pub system: SystemSample,
    pub latency: Latency,
    pub ws_clients: u64,
    /// The FX market's week (always true for the demo market).
    pub market_open: bool,
    pub stale: Vec<Stale>,
    /// Seconds since the engine loop last turned, when that is past the
    /// stall limit (a stuck loop); absent while it turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_stalled_secs: Option<u64>,
    /// A demo's clock (its newest candle), so `tail` and an attached
    /// console see the time-lapse's date beside the sample's real time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_clock: Option<Ts>,
}

/// An event with its place in the hub's order. Clients resume with `?since=seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn price() -> impl Strategy<Value = f64> {
        // Prices as they come (5 and 3 decimals), and any double: tiny,
        // huge (exponent notation) and negative ones are formatted too.
        prop_oneof![
            (1u64..10_000_000).prop_map(|t| t as f64 / 1e5),
            (1u64..1_000_000).prop_map(|t| t as f64 / 1e3),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ]
    }

    proptest! {
        #[test]
        fn candle_json_is_what_serde_writes(
            name in prop::sample::select(vec!["EUR_USD", "USD_JPY", "XAU_USD", "DE30_EUR"]),
            tf in prop::sample::select(Timeframe::ALL.to_vec()),
            time in -2_000_000_000i64..4_000_000_000,
            (open, high, low, close) in (price(), price(), price(), price()),
            fast in prop::option::of(price()),
            slow in prop::option::of(price()),
            atr in prop::option::of(prop_oneof![price(), Just(f64::NAN), Just(f64::INFINITY)]),
        ) {
            let c = CandleRecord {
                instrument: Instrument::new(name).unwrap(),
                timeframe: tf,
                time: Ts(time),
                open, high, low, close, fast, slow, atr,
            };
            let mut ours = Vec::new();
            c.write_json(&mut ours).unwrap();
            let want = serde_json::to_string(&Event::Candle(c)).unwrap();
            prop_assert_eq!(String::from_utf8(ours).unwrap(), want);
        }

        #[test]
        fn trade_json_is_what_serde_writes(
            tf in prop::sample::select(Timeframe::ALL.to_vec()),
            (entry_time, exit_time) in (-2_000_000_000i64..4_000_000_000, -2_000_000_000i64..4_000_000_000),
            buy: bool,
            gap: bool,
            reason in prop::sample::select(vec![ExitReason::Target, ExitReason::Stop, ExitReason::Reversed, ExitReason::Open]),
            (entry, stop_loss, take_profit, exit) in (price(), price(), price(), price()),
            (pips, r) in (prop_oneof![price(), Just(f64::NAN)], prop_oneof![price(), Just(-1.0)]),
            bars: u32,
            (mae_r, mfe_r) in (price(), price()),
            id in "\\PC{0,30}",
        ) {
            let t = Trade {
                id, instrument: Instrument::new("EUR_USD").unwrap(), timeframe: tf,
                side: if buy { Side::Buy } else { Side::Sell },
                entry_time: Ts(entry_time), entry, stop_loss, take_profit, exit_time: Ts(exit_time), exit,
                exit_reason: reason, gap, pips, r, bars, mae_r, mfe_r,
            };
            let mut ours = Vec::new();
            t.write_json("trade", &mut ours).unwrap();
            let want = serde_json::to_string(&Event::Outcome(t.clone())).unwrap().replacen("\"outcome\"", "\"trade\"", 1);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), want);
        }

        #[test]
        fn signal_json_is_what_serde_writes(
            name in prop::sample::select(vec!["EUR_USD", "USD_JPY", "XAU_USD"]),
            tf in prop::sample::select(Timeframe::ALL.to_vec()),
            time in -2_000_000_000i64..4_000_000_000,
            buy: bool,
            (price_, fast, slow) in (price(), price(), price()),
            atr in prop_oneof![price(), Just(f64::NAN), Just(f64::NEG_INFINITY)],
            (stop_loss, take_profit) in (price(), price()),
            strategy in prop_oneof![Just("sma 10/20".to_string()), "\\PC{0,12}"],
        ) {
            let side = if buy { Side::Buy } else { Side::Sell };
            let instrument = Instrument::new(name).unwrap();
            let s = Signal {
                id: Signal::make_id(instrument, tf, Ts(time), side),
                instrument, timeframe: tf, time: Ts(time), side,
                price: price_, fast, slow, atr, stop_loss, take_profit, strategy,
            };
            let mut ours = Vec::new();
            s.write_json(&mut ours).unwrap();
            let want = serde_json::to_string(&Event::Signal(s)).unwrap();
            prop_assert_eq!(String::from_utf8(ours).unwrap(), want);
        }
    }

    #[test]
    fn records_match_the_design() {
        let i = Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}"));
        let t = Ts::from_ymd_hms(2024, 1, 2, 8, 0, 0).unwrap_or_default();
        let c = Event::Candle(CandleRecord {
            instrument: i,
            timeframe: Timeframe::H1,
            time: t,
            open: 1.1,
            high: 1.2,
            low: 1.0,
            close: 1.15,
            fast: Some(1.12),
            slow: None,
            atr: None,
        });
        assert_eq!(
            serde_json::to_string(&c).unwrap_or_default(),
            r#"{"type":"candle","instrument":"EUR_USD","timeframe":"H1","time":"2024-01-02T08:00:00Z","open":1.1,"high":1.2,"low":1.0,"close":1.15,"fast":1.12,"slow":null,"atr":null}"#
        );
        let s = Event::Signal(Signal {
            id: Signal::make_id(i, Timeframe::H1, t, Side::Buy),
            instrument: i,
            timeframe: Timeframe::H1,
            time: t,
            side: Side::Buy,
            price: 1.15,
            fast: 1.12,
            slow: 1.11,
            atr: 0.004,
            stop_loss: 1.144,
            take_profit: 1.162,
            strategy: "sma 10/20".into(),
        });
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"type":"signal","id":"EUR_USD:H1:2024-01-02T08:00:00Z:buy","instrument":"EUR_USD","timeframe":"H1","time":"2024-01-02T08:00:00Z","side":"buy","price":1.15,"fast":1.12,"slow":1.11,"atr":0.004,"stop_loss":1.144,"take_profit":1.162,"strategy":"sma 10/20"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).ok(), Some(s));
    }
}

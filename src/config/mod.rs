//! Typed configuration with layered sources: built-in defaults (the demo
//! market), then a TOML file, then `PIPWATCH_SECTION__KEY` environment
//! variables, then command-line flags. Any string may be `${ENV_NAME}`.
//! Unknown keys are errors. Every error names where the value came from
//! (file and line, or the environment variable), the dotted key, the value
//! and what is allowed.

mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::{MaKind, StrategyParams, StrategySet};
pub use crate::types::Severity;
use crate::types::{Instrument, Timeframe};
pub use secret::Secret;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub market: Market,
    pub strategy: Strategy,
    pub notify: Notify,
    pub server: Server,
    pub health: Health,
    pub console: Console,
    pub log: Log,
}

/// `[log]`: what the long-running modes (the console's log file, headless's
/// stderr) write. `PIPWATCH_LOG` / `RUST_LOG` win over it, so an operator's
/// one-off `PIPWATCH_LOG=debug` is never undone by the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A tracing filter: `info`, `debug`, `info,pipwatch::notify=debug`.
    /// Unset: the mode's own default (`info,sled=warn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl Config {
    /// The `${NAME}` variables the config names that are not set: their
    /// keys read as empty.
    pub fn unset_variables(&self) -> Vec<&str> {
        let m = &self.market.oanda;
        let secrets = [&m.account_id, &m.token, &self.server.token, &self.health.heartbeat_url]
            .into_iter()
            .chain(self.notify.routes.iter().map(|r| &r.webhook));
        let mut names: Vec<&str> = Vec::new();
        for name in secrets.filter(|s| s.is_empty()).filter_map(Secret::var) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// `[console]`: the full-screen console.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// dark | light | high-contrast | mono (`--theme` overrides; NO_COLOR selects mono).
    pub theme: String,
    pub keys: Keys,
}

impl Default for Console {
    fn default() -> Self {
        Console { theme: "dark".into(), keys: Keys::default() }
    }
}

/// `[console.keys]`: one character each. Arrows, j/k, Tab, Enter and Esc
/// are fixed; none of the defaults is a Ctrl combination, so tmux's prefix
/// is never taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Keys {
    pub quit: String,
    pub help: String,
    pub pause: String,
    pub ack: String,
    pub filter: String,
    pub logs: String,
    pub theme: String,
    /// Re-read the config (the console's own instance: routes, thresholds,
    /// log level, these keys).
    pub reload: String,
}

impl Default for Keys {
    fn default() -> Self {
        let k = |c: &str| c.to_string();
        Keys {
            quit: k("q"),
            help: k("?"),
            pause: k("p"),
            ack: k("a"),
            filter: k("f"),
            logs: k("l"),
            theme: k("t"),
            reload: k("r"),
        }
    }
}

impl Keys {
    /// (name, key) for each configurable action.
    pub fn all(&self) -> [(&'static str, &str); 8] {
        [
            ("quit", &self.quit),
            ("help", &self.help),
            ("pause", &self.pause),
            ("ack", &self.ack),
            ("filter", &self.filter),
            ("logs", &self.logs),
            ("theme", &self.theme),
            ("reload", &self.reload),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Demo,
    Oanda,
    Csv,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Demo => "demo",
            SourceKind::Oanda => "oanda",
            SourceKind::Csv => "csv",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Market {
    pub source: SourceKind,
    pub instruments: Vec<Instrument>,
    pub timeframes: Vec<Timeframe>,
    pub demo: Demo,
    pub csv: CsvSource,
    pub oanda: Oanda,
}

impl Default for Market {
    fn default() -> Self {
        let instruments = ["EUR_USD", "GBP_USD", "USD_JPY", "USD_CHF", "AUD_USD", "USD_CAD", "NZD_USD"]
            .into_iter()
            .filter_map(|s| Instrument::new(s).ok())
            .collect();
        Market {
            source: SourceKind::Demo,
            instruments,
            timeframes: vec![Timeframe::H4],
            demo: Demo::default(),
            csv: CsvSource::default(),
            oanda: Oanda::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Demo {
    pub seed: u64,
    pub candle_every: Dur,
    /// What the demo plays: `synthetic` (a seeded random walk), `bundled`
    /// (the EUR/USD history shipped in the binary), or a directory of
    /// `INSTRUMENT.csv` files (with the bundled EUR/USD where it has none).
    pub history: String,
}

impl Default for Demo {
    fn default() -> Self {
        Demo { seed: 7, candle_every: Dur(Duration::from_secs(1)), history: "synthetic".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CsvSource {
    pub path: String,
    pub candle_every: Dur,
}

impl Default for CsvSource {
    fn default() -> Self {
        CsvSource { path: "history.csv".into(), candle_every: Dur(Duration::ZERO) }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Oanda {
    pub rest_url: String,
    pub stream_url: String,
    pub account_id: Secret,
    pub token: Secret,
}

impl Default for Oanda {
    fn default() -> Self {
        Oanda {
            rest_url: "https://api-fxpractice.oanda.com".into(),
            stream_url: "https://stream-fxpractice.oanda.com".into(),
            account_id: Secret::template("PIPWATCH_OANDA_ACCOUNT"),
            token: Secret::template("PIPWATCH_OANDA_TOKEN"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Strategy {
    pub ma: MaKind,
    pub fast: u32,
    pub slow: u32,
    pub atr: u32,
    pub sl_mult: f64,
    pub tp_mult: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, StrategyOverride>,
}

impl Default for Strategy {
    fn default() -> Self {
        let p = StrategyParams::default();
        Strategy {
            ma: p.ma,
            fast: p.fast,
            slow: p.slow,
            atr: p.atr,
            sl_mult: p.sl_mult,
            tp_mult: p.tp_mult,
            overrides: BTreeMap::new(),
        }
    }
}

/// `[strategy.overrides.EUR_USD]`: any subset of the strategy keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ma: Option<MaKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub atr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sl_mult: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tp_mult: Option<f64>,
}

impl Strategy {
    pub fn params(&self) -> StrategyParams {
        StrategyParams {
            ma: self.ma,
            fast: self.fast,
            slow: self.slow,
            atr: self.atr,
            sl_mult: self.sl_mult,
            tp_mult: self.tp_mult,
        }
    }

    /// The default parameters plus each override applied over them. Names were
    /// validated at load, so an unparsable one cannot occur here.
    pub fn set(&self) -> StrategySet {
        let default = self.params();
        let overrides = self
            .overrides
            .iter()
            .filter_map(|(name, o)| {
                let i = Instrument::new(name).ok()?;
                Some((
                    i,
                    StrategyParams {
                        ma: o.ma.unwrap_or(default.ma),
                        fast: o.fast.unwrap_or(default.fast),
                        slow: o.slow.unwrap_or(default.slow),
                        atr: o.atr.unwrap_or(default.atr),
                        sl_mult: o.sl_mult.unwrap_or(default.sl_mult),
                        tp_mult: o.tp_mult.unwrap_or(default.tp_mult),
                    },
                ))
            })
            .collect();
        StrategySet { default, overrides }
    }
}

/// `[notify]`: how notifications are delivered; `[[notify.routes]]`: where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notify {
    /// The name messages are posted under.
    pub username: String,
    /// One request's time limit.
    pub timeout: Dur,
    /// First wait after a failed request; doubles (with jitter) up to `retry_max`.
    pub retry_min: Dur,
    pub retry_max: Dur,
    /// Failed requests before a message goes to the dead list.
    pub max_attempts: u32,
    /// Age after which an undelivered message goes to the dead list.
    pub max_age: Dur,
    /// Failures in a row that open a route's circuit breaker...
    pub breaker_failures: u32,
    /// ...and how long it stays open before one probe request.
    pub breaker_cooldown: Dur,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            username: "pipwatch".into(),
            timeout: Dur(Duration::from_secs(10)),
            retry_min: Dur(Duration::from_secs(1)),
            retry_max: Dur(Duration::from_secs(300)),
            max_attempts: 50,
            max_age: Dur(Duration::from_secs(24 * 3600)),
            breaker_failures: 5,
            breaker_cooldown: Dur(Duration::from_secs(60)),
            routes: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteEvent {
    Signal,
    Alert,
    /// A closed paper trade, as a new message (the signal's own message is
    /// edited with its outcome on every route that took the signal).
    Outcome,
}

/// `[[notify.routes]]`: which events go to which Discord webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub webhook: Secret,
    pub events: Vec<RouteEvent>,
    pub instruments: Vec<Instrument>,
    pub min_severity: Severity,
    pub delay: Dur,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            name: String::new(),
            webhook: Secret::default(),
            events: vec![RouteEvent::Signal],
            instruments: Vec::new(),
            min_severity: Severity::Info,
            delay: Dur(Duration::ZERO),
        }
    }
}

impl Route {
    /// Whether this route takes alerts of this severity.
    pub fn takes_alert(&self, severity: Severity) -> bool {
        self.events.contains(&RouteEvent::Alert) && severity >= self.min_severity
    }

    /// Whether this route takes closed trades of `instrument` as messages.
    pub fn takes_outcome(&self, instrument: Instrument) -> bool {
        self.events.contains(&RouteEvent::Outcome)
            && (self.instruments.is_empty() || self.instruments.contains(&instrument))
    }

    /// Whether this route takes signals for `instrument`.
    pub fn takes_signal(&self, instrument: Instrument) -> bool {
        self.events.contains(&RouteEvent::Signal)
            && (self.instruments.is_empty() || self.instruments.contains(&instrument))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub token: Secret,
    /// WebSocket connections at once; more are closed with a reason.
    pub max_clients: usize,
    /// Events kept so a reconnecting client (`?since=SEQ`) misses nothing.
    pub history: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server { listen: "127.0.0.1:8787".into(), token: Secret::default(), max_clients: 1024, history: 4096 }
    }
}

/// `[health]`: the sampler, thresholds (warning and critical), alerting and
/// the dead-man's switch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    pub sample_every: Dur,
    /// A threshold must stay crossed (or back) this long to raise (or resolve).
    pub sustain: Dur,
    /// A raised alert is repeated at most this often while it lasts.
    pub cooldown: Dur,
    /// Percent of all cores.
    pub cpu_warning: f64,
    pub cpu_critical: f64,
    /// Percent of memory used.
    pub memory_warning: f64,
    pub memory_critical: f64,
    /// Percent used of the data directory's filesystem.
    pub disk_warning: f64,
    pub disk_critical: f64,
    /// Notifications waiting in the outbox.
    pub queue_warning: u64,
    pub queue_critical: u64,
    /// Age of the oldest notification that is due.
    pub oldest_pending_warning: Dur,
    pub oldest_pending_critical: Dur,
    /// Failed / attempted notification requests over the last five minutes.
    pub failure_rate_warning: f64,
    pub failure_rate_critical: f64,
    /// A series is stale when its next candle is later than one interval plus
    /// this (never while the FX market is closed)...
    pub stale_warning: Dur,
    /// ...and critically so past this.
    pub stale_critical: Dur,
    /// Candle in to signal durable, 95th percentile over ten minutes.
    pub latency_p95_warning: Dur,
    pub latency_p95_critical: Dur,
    /// Pinged (GET) every `heartbeat_every` while pipwatch is not unhealthy,
    /// e.g. a healthchecks.io URL. Empty: off.
    pub heartbeat_url: Secret,
    pub heartbeat_every: Dur,
}

impl Default for Health {
    fn default() -> Self {
        let secs = |s| Dur(Duration::from_secs(s));
        Health {
            sample_every: secs(2),
            sustain: secs(30),
            cooldown: secs(15 * 60),
            cpu_warning: 85.0,
            cpu_critical: 95.0,
            memory_warning: 85.0,
            memory_critical: 95.0,
            disk_warning: 85.0,
            disk_critical: 95.0,
            queue_warning: 100,
            queue_critical: 1000,
            oldest_pending_warning: secs(5 * 60),
            oldest_pending_critical: secs(30 * 60),
            failure_rate_warning: 0.2,
            failure_rate_critical: 0.5,
            stale_warning: secs(2 * 60),
            stale_critical: secs(30 * 60),
            latency_p95_warning: Dur(Duration::from_millis(250)),
            latency_p95_critical: secs(1),
            heartbeat_url: Secret::default(),
            heartbeat_every: secs(60),
        }
    }
}

/// A duration written like `1s`, `15m`, `2h`, `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_zero() {
            return s.serialize_str("0s");
        }
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|_| {
            serde::de::Error::custom(format!("'{s}' is not a duration: write e.g. \"1s\", \"15m\", \"2h\" or \"0s\""))
        })
    }
}

/// Where a config came from, for messages.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Defaults,
    File(PathBuf),
}

/// One thing wrong with a config, located.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// `file:line:col`, `environment variable NAME`, `--flag`, or `built-in defaults`.
    pub location: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: {}: {}", self.location, self.key, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    fn one(location: String, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { problems: vec![Problem { location, key: key.into(), message: message.into() }] }
    }
}

mod load;
pub use load::{Check, LoadOptions, Loaded, load};

/// The platform data directory, e.g. `~/.local/share/pipwatch`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().map(|d| d.join("pipwatch")).unwrap_or_else(|| Path::new(".pipwatch").to_path_buf())
}

//! The command line (a contract: scripts and tests rely on it, see DESIGN.md).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::MaKind;
use crate::types::{Instrument, Timeframe};

/// The options every command takes, apart from its own in `--help`: a reader
/// of `tail --help` sees first what `tail` itself takes.
const GLOBAL: &str = "Global options";

#[derive(Debug, Parser)]
#[command(name = "pipwatch", version, about = "Forex moving-average-crossover signals: console, server and replay", long_about = None)]
pub struct Cli {
    /// Config file (TOML). Without one, built-in defaults run the demo market.
    #[arg(short, long, global = true, env = "PIPWATCH_CONFIG", value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Where the sled database lives (default: the platform data dir, e.g. ~/.local/share/pipwatch).
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub data_dir: Option<PathBuf>,
    /// Market source, overriding the config: demo | demo:bundled (real EUR/USD history) | demo:DIR | oanda | csv:PATH.
    #[arg(long, global = true, value_name = "SOURCE", help_heading = GLOBAL)]
    pub source: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Full-screen console running the engine in-process (the default).
    Tui(TuiArgs),
    /// Engine, notifier and server without a terminal: events as JSON lines on stdout.
    Headless(HeadlessArgs),
    /// Run the engine over CSV candles as fast as possible: signals as JSON lines on stdout.
    Replay(ReplayArgs),
    /// Every signal over CSV candles as a paper trade: a report, or the trades and summaries as records.
    Backtest(BacktestArgs),
    /// The console, fed by a running instance.
    Attach(AttachArgs),
    /// A running instance's events as JSON lines.
    Tail(TailArgs),
    /// Validate or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Notifications given up on.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// One look at a running instance's health: exit 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable.
    Status(StatusArgs),
    /// Check notification routes.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Shell completions on stdout, e.g. `pipwatch completions bash > ~/.local/share/bash-completion/completions/pipwatch`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout, e.g. `pipwatch man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The instance: host:port, http://host:port or its ws:// URL (default: the config's server.listen).
    pub url: Option<String>,
    /// Print /health's JSON instead of the lines.
    #[arg(long)]
    pub json: bool,
    /// Server token, when the server has one.
    #[arg(long, env = "PIPWATCH_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test message to a route (each route when none is named) and
    /// say what Discord answered. Exit 0 when every one was delivered.
    Test {
        /// A `[[notify.routes]]` name.
        #[arg(value_name = "ROUTE")]
        route: Option<String>,
    },
}

#[derive(Debug, Args, Default)]
pub struct TuiArgs {
    /// Colour theme: dark, light, high-contrast, mono.
    #[arg(long)]
    pub theme: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|_| format!("'{s}' is not a duration: write e.g. 30s, 5m, 2h"))
}

#[derive(Debug, Args, Default)]
pub struct HeadlessArgs {
    /// Stop cleanly after this long, e.g. 30s, 5m.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    /// Also print a `candle` record per closed candle.
    #[arg(long)]
    pub candles: bool,
    /// Do not open the HTTP/WebSocket port.
    #[arg(long)]
    pub no_server: bool,
}

/// What `replay` and `backtest` read, and the strategy they run.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// CSV files or directories of INSTRUMENT.csv files.
    #[arg(required = true, value_name = "CSV")]
    pub csv: Vec<PathBuf>,
    /// Instrument of a single file (default: from its name, e.g. EUR_USD_H1.csv).
    #[arg(long)]
    pub instrument: Option<Instrument>,
    /// Timeframe (default: from the file name, else inferred from the data).
    #[arg(long)]
    pub timeframe: Option<Timeframe>,
    /// Moving-average kind: sma or ema (backtest: a list, `sma,ema`, sweeps both).
    #[arg(long, value_name = "MA")]
    pub ma: Option<Values<MaKind>>,
    /// Fast MA period (backtest: a range `5..50:5` or a list `5,10,20` sweeps).
    #[arg(long, value_name = "N")]
    pub fast: Option<Values<u32>>,
    /// Slow MA period (backtest: a range or a list sweeps; only fast < slow is run).
    #[arg(long, value_name = "N")]
    pub slow: Option<Values<u32>>,
    /// ATR period (backtest: a range or a list sweeps).
    #[arg(long, value_name = "N")]
    pub atr: Option<Values<u32>>,
}

/// A parameter's values: one (`10`), a list (`5,10,20`), or an inclusive
/// range with a step (`5..50:5`). More than one makes `backtest` a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Values<T>(pub Vec<T>);

impl<T: Copy> Values<T> {
    /// The only value, when there is one.
    pub fn single(&self) -> Option<T> {
        match self.0.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// Most values a parameter may take in one sweep.
const MOST_VALUES: usize = 1000;

fn list<T>(s: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Values<T>, String> {
    let values = s.split(',').map(|v| one(v.trim())).collect::<Result<Vec<T>, String>>()?;
    Ok(Values(values))
}

/// `START..END:STEP` as its parts, when `s` is one.
fn range_parts(s: &str) -> Option<(&str, &str, &str)> {
    let (start, rest) = s.split_once("..")?;
    let (end, step) = rest.split_once(':').unwrap_or((rest, "1"));
    Some((start.trim(), end.trim(), step.trim()))
}

impl std::str::FromStr for Values<u32> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let period = |v: &str| -> Result<u32, String> {
            match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(format!("'{v}' is not a period: a whole number of candles, 1 to 1000")),
            }
        };
        let Some((start, end, step)) = range_parts(s) else { return list(s, period) };
        let (start, end) = (period(start)?, period(end)?);
        let step = step
            .parse::<u32>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| format!("'{step}' is not a step: a whole number above 0"))?;
        if start > end {
            return Err(format!("{start}..{end}: the range runs backwards; write the smaller first"));
        }
        Ok(Values((start..=end).step_by(step as usize).collect()))
    }
}

impl std::str::FromStr for Values<f64> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let multiple = |v: &str| -> Result<f64, String> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(format!("'{v}' is not a multiple of the ATR: a number above 0, e.g. 1.5")),
            }
        };
        let Some((start, end, step)) = range_parts(s) else { return list(s, multiple) };
        let (start, end) = (multiple(start)?, multiple(end)?);
        let step = step
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| format!("'{step}' is not a step: a number above 0"))?;
        if start > end {
            return Err(format!("{start}..{end}: the range runs backwards; write the smaller first"));
        }
        let mut values = Vec::new();
        // By count, not by adding the step up: 0.1 added ten times is not 1.0.
        // Rounded to 10 decimals so 1.5..3:0.5 gives 1.5, 2, 2.5, 3 exactly.
        let n = ((end - start) / step + 1e-9).floor() as usize;
        if n >= MOST_VALUES {
            return Err(format!("{s}: more than {MOST_VALUES} values; use a larger step"));
        }
        for i in 0..=n {
            values.push(((start + i as f64 * step) * 1e10).round() / 1e10);
        }
        Ok(Values(values))
    }
}

impl std::str::FromStr for Values<MaKind> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        list(s, |v| match v.to_ascii_lowercase().as_str() {
            "sma" => Ok(MaKind::Sma),
            "ema" => Ok(MaKind::Ema),
            _ => Err(format!("'{v}' is not a moving average: sma or ema")),
        })
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Also print a `candle` record (with indicator values) per candle.
    #[arg(long)]
    pub indicators: bool,
}

fn parse_day(s: &str) -> Result<crate::time::Ts, String> {
    crate::time::Ts::parse_rfc3339(s)
        .or_else(|| crate::time::Ts::parse_rfc3339(&format!("{s}T00:00:00Z")))
        .ok_or_else(|| format!("'{s}' is not a date: write e.g. 2024-01-31 or 2024-01-31T12:00:00Z"))
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Stop loss in ATRs (strategy.sl_mult); a range `1..3:0.5` or a list sweeps.
    #[arg(long, value_name = "ATRS")]
    pub sl: Option<Values<f64>>,
    /// Take profit in ATRs (strategy.tp_mult); a range or a list sweeps.
    #[arg(long, value_name = "ATRS")]
    pub tp: Option<Values<f64>>,
    /// A sweep's measure for ranking its combinations.
    #[arg(long, value_enum, default_value = "expectancy-r")]
    pub rank: crate::sweep::Rank,
    /// A sweep ranks only combinations with at least this many closed trades.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub min_trades: u64,
    /// How many of a sweep's best combinations the table lists.
    #[arg(long, default_value_t = 15, value_name = "N")]
    pub top: usize,
    /// Where a signal's trade is entered: its candle's close, or the next candle's open.
    #[arg(long, value_enum, default_value = "close")]
    pub fill: FillArg,
    /// Spread in pips, charged half at entry and half at exit.
    #[arg(long, default_value_t = 0.0)]
    pub spread: f64,
    /// Trade signals from this date on (earlier candles warm the indicators up).
    #[arg(long, value_parser = parse_day)]
    pub from: Option<crate::time::Ts>,
    /// Read no candle after this date.
    #[arg(long, value_parser = parse_day)]
    pub to: Option<crate::time::Ts>,
    /// table (the report; the default on a terminal), json (trades then
    /// summaries, the default when piped) or csv (the trades).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FillArg {
    Close,
    NextOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// WebSocket URL of a running instance.
    #[arg(default_value = "ws://127.0.0.1:8787/ws")]
    pub url: String,
    /// Colour theme: dark, light, high-contrast, mono.
    #[arg(long)]
    pub theme: Option<String>,
    /// Server token, when the server has one (every request needs it then).
    #[arg(long, env = "PIPWATCH_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// WebSocket URL of a running instance.
    #[arg(default_value = "ws://127.0.0.1:8787/ws")]
    pub url: String,
    /// Only these event types (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::protocol::TOPICS))]
    pub topics: Vec<String>,
    /// Only events of these instruments, e.g. EUR_USD,USD_JPY (events of no instrument always pass).
    #[arg(long, value_delimiter = ',')]
    pub instruments: Vec<Instrument>,
    /// Server token, when the server has one.
    #[arg(long, env = "PIPWATCH_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (default: the one in use); errors name file, line and key.
    Check { file: Option<PathBuf> },
    /// Print the effective config (defaults, file, environment, flags), secrets redacted.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List notifications given up on, with their last error.
    List {
        #[command(flatten)]
        filter: DeadFilter,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put them back in the outbox: the next `pipwatch` run delivers them.
    Retry {
        #[command(flatten)]
        filter: DeadFilter,
    },
    /// Delete them for good: name ids, a --route, or say --all.
    // Deleting is the one step here that cannot be undone, so "everything"
    // has to be said, not implied by leaving the filter out.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["ids", "route", "all"])))]
    Purge {
        #[command(flatten)]
        filter: DeadFilter,
        /// Every notification on the dead list.
        #[arg(long, conflicts_with_all = ["ids", "route"])]
        all: bool,
    },
}

pub use crate::dead::DeadFilter;

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
    /// Market source, overriding the config: demo | oanda | csv:PATH.
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
    /// Moving-average kind.
    #[arg(long, value_enum)]
    pub ma: Option<MaArg>,
    /// Fast MA period.
    #[arg(long)]
    pub fast: Option<u32>,
    /// Slow MA period.
    #[arg(long)]
    pub slow: Option<u32>,
    /// ATR period.
    #[arg(long)]
    pub atr: Option<u32>,
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
    /// Stop loss in ATRs (strategy.sl_mult).
    #[arg(long)]
    pub sl: Option<f64>,
    /// Take profit in ATRs (strategy.tp_mult).
    #[arg(long)]
    pub tp: Option<f64>,
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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MaArg {
    Sma,
    Ema,
}

impl From<MaArg> for MaKind {
    fn from(m: MaArg) -> Self {
        match m {
            MaArg::Sma => MaKind::Sma,
            MaArg::Ema => MaKind::Ema,
        }
    }
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

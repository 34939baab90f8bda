//! pipwatch: a moving-average-crossover signal engine for forex candles, with
//! durable state, notifications and a terminal console. The binary is a thin
//! shell over this library so tests and benches drive the same code.
//!
//! The engine is pure: candles in, events out.
//!
//! ```
//! use pipwatch::engine::{Engine, MaKind, StrategyParams, StrategySet};
//! use pipwatch::event::Event;
//! use pipwatch::time::Ts;
//! use pipwatch::types::{Candle, Instrument, Timeframe};
//!
//! let params = StrategyParams { ma: MaKind::Sma, fast: 2, slow: 3, atr: 2, sl_mult: 1.5, tp_mult: 3.0 };
//! let mut engine = Engine::new(StrategySet { default: params, overrides: Default::default() });
//! let eur_usd = Instrument::new("EUR_USD").unwrap();
//! let mut signals = Vec::new();
//! for (i, close) in [1.15, 1.14, 1.13, 1.12, 1.11, 1.14].into_iter().enumerate() {
//!     let candle = Candle {
//!         instrument: eur_usd, timeframe: Timeframe::H1, time: Ts(1_704_067_200 + 3600 * i as i64),
//!         open: close, high: close + 0.001, low: close - 0.001, close, volume: 0.0,
//!     };
//!     for event in engine.apply(&candle) {
//!         if let Event::Signal(s) = event {
//!             signals.push(s.id);
//!         }
//!     }
//! }
//! assert_eq!(signals, ["EUR_USD:H1:2024-01-01T05:00:00Z:buy"]);
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backtest;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod control;
pub mod dead;
pub mod engine;
pub mod event;
pub mod headless;
pub mod health;
pub mod hub;
pub mod instance;
pub mod logging;
pub mod market;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod protocol;
pub mod replay;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod sweep;
pub mod tail;
pub mod time;
pub mod tui;
pub mod types;
pub mod view;

/// The config rules that modules above `config` own, for `config::load`:
/// the binary passes these so that a bad webhook or theme is caught with the
/// rest, located in the file.
pub fn config_checks() -> Vec<config::Check> {
    vec![notify::config_problems, tui::theme::config_problems]
}

/// mimalloc for everything linked with this library: the binary, and the
/// tests and benches, so that they measure what ships. sled copies a leaf
/// node per insert, so a durable 28-pair close is mostly allocation after
/// its disk writes: against glibc's malloc, interleaved runs here read it
/// 17-20% faster at the median and lower at p99 in three runs of four
/// (BENCHMARKS.md). `no_thp`: with transparent huge pages the console's RSS
/// was 72 MB instead of 15 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

//! pipwatch: a moving-average-crossover signal engine for forex candles, with
//! durable state, notifications and a terminal console. The binary is a thin
//! shell over this library so tests and benches drive the same code.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod config;
pub mod engine;
pub mod event;
pub mod headless;
pub mod live;
pub mod logging;
pub mod market;
pub mod replay;
pub mod store;
pub mod time;
pub mod types;

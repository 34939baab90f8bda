//! One tracing registry per process; the layers depend on the mode so that
//! nothing ever writes over a console and headless logs are machine-readable.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Plain lines appended to a file: the console owns the terminal.
    File(std::path::PathBuf),
    /// JSON objects on stderr (headless: stdout carries the events).
    Json,
    /// Human-readable lines on stderr (replay, config, one-shot commands).
    Plain,
}

/// `PIPWATCH_LOG` (or `RUST_LOG`) overrides the default filter, e.g. `debug,sled=warn`.
pub fn init(mode: LogMode, default_filter: &str) {
    let filter = std::env::var("PIPWATCH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let json =
        (mode == LogMode::Json).then(|| fmt::layer().json().with_writer(std::io::stderr).with_current_span(false));
    // Colour only for a person at a terminal: redirected, escape codes would
    // litter the log file or the next program's input.
    let ansi = std::io::stderr().is_terminal() && !no_color();
    let plain = (mode == LogMode::Plain)
        .then(|| fmt::layer().with_writer(std::io::stderr).with_target(false).without_time().with_ansi(ansi));
    let file = match &mode {
        LogMode::File(path) => {
            let opened = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::OpenOptions::new().create(true).append(true).open(path));
            // Without a log file the console still runs; logs are dropped
            // rather than written over the screen.
            opened.ok().map(|f| fmt::layer().with_writer(std::sync::Mutex::new(f)).with_ansi(false))
        }
        _ => None,
    };
    // The console also shows logs in its panel (`l`).
    let is_console = matches!(mode, LogMode::File(_));
    let console = is_console.then_some(tui_logger::TuiTracingSubscriberLayer);
    // try_init: a second call (tests) keeps the first registry instead of panicking.
    let installed =
        tracing_subscriber::registry().with(filter).with(json).with(plain).with(file).with(console).try_init();
    if is_console && installed.is_ok() {
        // Not `init_logger`: its thread wakes every 10 ms, which was 40% of an
        // idle console's CPU. The console moves the records itself
        // (`tui_logger::move_events`) once a second and before it draws the panel.
        tui_logger::set_default_level(tui_logger::LevelFilter::Trace);
    }
}

/// Whether the user asked for no colour (<https://no-color.org>: `NO_COLOR`
/// set and not empty). The logs and the console both honour it.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

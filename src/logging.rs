//! One tracing registry per process; the layers depend on the mode so that
//! nothing ever writes over a console and headless logs are machine-readable.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// The installed filter and the mode's default, so `[log] level` can be
/// applied after the config is read, and again on every reload.
struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    default: String,
    /// `PIPWATCH_LOG` / `RUST_LOG` was set: it wins over the config.
    from_env: Option<String>,
}

static INSTALLED: std::sync::OnceLock<Installed> = std::sync::OnceLock::new();

/// What [`set_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The filter now in force.
    Set(String),
    /// The environment's filter stays (it wins over the config).
    KeptEnv(String),
    /// No registry of ours is installed (a second registry in tests).
    NotInstalled,
}

/// Applies `[log] level` (`None`: the mode's default) to the running
/// process, unless `PIPWATCH_LOG`/`RUST_LOG` set the filter.
pub fn set_level(level: Option<&str>) -> Result<LevelChange, String> {
    let Some(installed) = INSTALLED.get() else { return Ok(LevelChange::NotInstalled) };
    if let Some(env) = &installed.from_env {
        return Ok(LevelChange::KeptEnv(env.clone()));
    }
    let wanted = level.unwrap_or(&installed.default);
    let filter = EnvFilter::try_new(wanted).map_err(|e| format!("log.level '{wanted}': {e}"))?;
    installed.handle.reload(filter).map_err(|e| format!("the log filter could not be changed: {e}"))?;
    Ok(LevelChange::Set(wanted.to_string()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Plain lines in a file the console owns the terminal: `PATH.YYYY-MM-DD`,
    /// a new one each day (UTC), the last [`KEPT_LOG_FILES`] kept.
    File(std::path::PathBuf),
    /// JSON objects on stderr (headless: stdout carries the events).
    Json,
    /// Human-readable lines on stderr (replay, config, one-shot commands).
    Plain,
}

/// `PIPWATCH_LOG` (or `RUST_LOG`) overrides the default filter, e.g. `debug,sled=warn`.
pub fn init(mode: LogMode, default_filter: &str) {
    let from_env = std::env::var("PIPWATCH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok());
    let filter = EnvFilter::new(from_env.as_deref().unwrap_or(default_filter));
    let (filter, handle) = reload::Layer::new(filter);
    let json =
        (mode == LogMode::Json).then(|| fmt::layer().json().with_writer(std::io::stderr).with_current_span(false));
    // Colour only for a person at a terminal: redirected, escape codes would
    // litter the log file or the next program's input.
    let ansi = std::io::stderr().is_terminal() && !no_color();
    let plain = (mode == LogMode::Plain)
        .then(|| fmt::layer().with_writer(std::io::stderr).with_target(false).without_time().with_ansi(ansi));
    let file = match &mode {
        // Without a log file the console still runs; logs are dropped
        // rather than written over the screen.
        LogMode::File(path) => rolling(path).ok().map(|w| fmt::layer().with_writer(w).with_ansi(false)),
        _ => None,
    };
    // The console also shows logs in its panel (`l`).
    let is_console = matches!(mode, LogMode::File(_));
    let console = is_console.then_some(tui_logger::TuiTracingSubscriberLayer);
    // try_init: a second call (tests) keeps the first registry instead of panicking.
    let installed =
        tracing_subscriber::registry().with(filter).with(json).with(plain).with(file).with(console).try_init();
    if installed.is_ok() {
        let _ = INSTALLED.set(Installed { handle, default: default_filter.to_string(), from_env });
    }
    if is_console && installed.is_ok() {
        // Not `init_logger`: its thread wakes every 10 ms, which was 40% of an
        // idle console's CPU. The console moves the records itself
        // (`tui_logger::move_events`) once a second and before it draws the panel.
        tui_logger::set_default_level(tui_logger::LevelFilter::Trace);
    }
}

/// Days of console logs kept: a console left running for months must not
/// fill the data directory's disk with one file that only grows.
pub const KEPT_LOG_FILES: usize = 7;

/// The daily log files of `path` (`pipwatch.log` → `pipwatch.log.2026-12-05`
/// in the same directory), the oldest beyond [`KEPT_LOG_FILES`] deleted.
pub fn rolling(path: &std::path::Path) -> Result<tracing_appender::rolling::RollingFileAppender, String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{} names no file", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(name)
        .max_log_files(KEPT_LOG_FILES)
        .build(dir)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the user asked for no colour (<https://no-color.org>: `NO_COLOR`
/// set and not empty). The logs and the console both honour it.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

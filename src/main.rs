//! The pipwatch binary: parse the command line, load the config, set up
//! logging for the mode, run it. All the work lives in the library.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use pipwatch::cli::{Cli, Command, ConfigCommand, DeadCommand, ReplayArgs};
use pipwatch::config::{self, Config, LoadOptions, Loaded};
use pipwatch::logging::{self, LogMode};
use pipwatch::market::csv;
use pipwatch::{dead, headless, replay};

/// Exit codes: 0 done, 1 failed while running, 2 bad input (config, flags, files).
const FAILED: u8 = 1;
const BAD_INPUT: u8 = 2;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn load_config(
    cli: &Cli,
    file: Option<PathBuf>,
    flags: Vec<(String, toml::Value, String)>,
) -> Result<Loaded, ExitCode> {
    let mut opts = LoadOptions::from_process(file.or_else(|| cli.config.clone()), cli.source.clone());
    opts.flags = flags;
    let loaded = config::load(&opts).map_err(|e| match e {
        config::ConfigError::Invalid { .. } => fail(BAD_INPUT, format!("the configuration is not valid:\n{e}")),
        other => fail(BAD_INPUT, other),
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().thread_name("pipwatch").build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => run_tui(&cli, None),
        Some(Command::Tui(args)) => run_tui(&cli, args.theme.clone()),
        Some(Command::Attach(args)) => run_attach(&cli, args),
        Some(Command::Tail(args)) => run_tail(args),
        Some(Command::Dead(cmd)) => run_dead(&cli, cmd),
        Some(Command::Headless(args)) => {
            logging::init(LogMode::Json, "info,sled=warn");
            let loaded = match load_config(&cli, None, Vec::new()) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let data_dir = cli.data_dir.clone().unwrap_or_else(config::default_data_dir);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(FAILED, format!("cannot start the async runtime: {e}")),
            };
            let opts = headless::Options::headless(args.run_for, args.candles, !args.no_server);
            match rt.block_on(headless::run(&loaded.config, &data_dir, opts)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(if e.is_bad_input() { BAD_INPUT } else { FAILED }, e),
            }
        }
        Some(Command::Replay(args)) => run_replay(&cli, args),
        Some(Command::Config(ConfigCommand::Show)) => {
            let loaded = match load_config(&cli, None, Vec::new()) {
                Ok(l) => l,
                Err(code) => return code,
            };
            match toml::to_string_pretty(&loaded.config) {
                Ok(text) => {
                    let from = match &loaded.origin {
                        config::Origin::File(p) => format!("{} over the built-in defaults", p.display()),
                        config::Origin::Defaults => "built-in defaults".to_string(),
                    };
                    println!("# effective config: {from}, then PIPWATCH_* variables and flags. Secrets are redacted.");
                    let unset = loaded.config.unset_variables();
                    if !unset.is_empty() {
                        println!("# not set in the environment, so empty: {}", unset.join(", "));
                    }
                    println!();
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(FAILED, format!("cannot print the config: {e}")),
            }
        }
        Some(Command::Config(ConfigCommand::Check { file })) => {
            let loaded = match load_config(&cli, file.clone(), Vec::new()) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let c: &Config = &loaded.config;
            let name = match &loaded.origin {
                config::Origin::File(p) => p.display().to_string(),
                config::Origin::Defaults => "built-in defaults".to_string(),
            };
            println!(
                "{name}: ok ({} source, {} instrument(s) x {} timeframe(s), {} strategy {}/{}, {} notification route(s))",
                c.market.source,
                c.market.instruments.len(),
                c.market.timeframes.len(),
                c.strategy.ma,
                c.strategy.fast,
                c.strategy.slow,
                c.notify.routes.len()
            );
            ExitCode::SUCCESS
        }
    }
}

fn run_tui(cli: &Cli, theme: Option<String>) -> ExitCode {
    let data_dir = cli.data_dir.clone().unwrap_or_else(config::default_data_dir);
    // The console owns the terminal: logs go to a file, never over the screen.
    logging::init(LogMode::File(data_dir.join("pipwatch.log")), "info,sled=warn");
    let loaded = match load_config(cli, None, Vec::new()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(FAILED, format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(pipwatch::tui::run(&loaded.config, &data_dir, theme)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(if e.is_bad_input() { BAD_INPUT } else { FAILED }, e),
    }
}

fn run_attach(cli: &Cli, args: &pipwatch::cli::AttachArgs) -> ExitCode {
    // The console owns the terminal: the few logs of attach go to a file.
    logging::init(LogMode::File(config::default_data_dir().join("attach.log")), "warn");
    // For the console's theme and keys.
    let loaded = match load_config(cli, None, Vec::new()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(FAILED, format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(pipwatch::tui::attach(&args.url, args.token.clone(), args.theme.clone(), &loaded.config.console))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ pipwatch::tui::TuiError::Attach(pipwatch::tail::TailError::Url(_))) => fail(BAD_INPUT, e),
        Err(e) => fail(FAILED, e),
    }
}

fn run_tail(args: &pipwatch::cli::TailArgs) -> ExitCode {
    logging::init(LogMode::Plain, "info,sled=warn");
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(FAILED, format!("cannot start the async runtime: {e}")),
    };
    let opts = pipwatch::tail::Options {
        url: args.url.clone(),
        token: args.token.clone(),
        topics: args.topics.clone(),
        instruments: args.instruments.iter().map(|i| i.to_string()).collect(),
    };
    let result = rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        headless::stop_on_signals(stop.clone(), None);
        let mut out = std::io::stdout();
        pipwatch::tail::run(&opts, &mut out, stop).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ pipwatch::tail::TailError::Url(_)) => fail(BAD_INPUT, e),
        Err(pipwatch::tail::TailError::Output(_)) => ExitCode::SUCCESS, // e.g. piped into `head`
        Err(e) => fail(FAILED, e),
    }
}

fn run_dead(cli: &Cli, cmd: &DeadCommand) -> ExitCode {
    logging::init(LogMode::Plain, "warn,sled=warn");
    let data_dir = cli.data_dir.clone().unwrap_or_else(config::default_data_dir);
    if !data_dir.join("db").exists() {
        println!("no pipwatch data in {}: the dead list is empty", data_dir.display());
        return ExitCode::SUCCESS;
    }
    let store = match pipwatch::store::Store::open(&data_dir) {
        Ok((store, _)) => store,
        // The generic advice (attach, or another --data-dir) is no help
        // here: the dead list lives in that very directory.
        Err(pipwatch::store::StoreError::Locked { dir }) => {
            return fail(
                FAILED,
                format!(
                    "the data directory {dir} is in use by a running pipwatch, and `pipwatch dead` needs it to itself. \
                     Stop that instance (Ctrl-C, SIGTERM or `systemctl stop`), run this again, then start it: \
                     nothing queued is lost while it is stopped"
                ),
            );
        }
        Err(e) => return fail(FAILED, e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(FAILED, format!("cannot start the async runtime: {e}")),
    };
    let mut out = std::io::stdout().lock();
    let result = match cmd {
        DeadCommand::List { filter, json } => dead::list(&store, filter, *json, &mut out),
        DeadCommand::Retry { filter } => rt.block_on(dead::retry(&store, filter, &mut out)),
        DeadCommand::Purge { filter, .. } => rt.block_on(dead::purge(&store, filter, &mut out)),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(FAILED, e),
    }
}

fn run_replay(cli: &Cli, args: &ReplayArgs) -> ExitCode {
    logging::init(LogMode::Plain, "warn,sled=warn");
    let mut flags = Vec::new();
    if let Some(ma) = args.ma {
        let kind: pipwatch::engine::MaKind = ma.into();
        flags.push(("strategy.ma".to_string(), toml::Value::String(kind.to_string()), format!("--ma {kind}")));
    }
    for (key, v) in [("fast", args.fast), ("slow", args.slow), ("atr", args.atr)] {
        if let Some(v) = v {
            flags.push((format!("strategy.{key}"), toml::Value::Integer(i64::from(v)), format!("--{key} {v}")));
        }
    }
    let loaded = match load_config(cli, None, flags) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let m = &loaded.config.market;
    let fallback =
        (m.instruments.first().copied(), m.timeframes.first().copied().unwrap_or(pipwatch::types::Timeframe::H4));
    let mut inputs = Vec::new();
    for path in &args.csv {
        match csv::resolve(path, args.instrument, args.timeframe, fallback) {
            Ok(found) => inputs.extend(found),
            Err(e) => return fail(BAD_INPUT, e),
        }
    }
    let stderr_tty = std::io::stderr().is_terminal();
    for i in &inputs {
        if stderr_tty || inputs.len() > 1 {
            eprintln!("{}: {} {}", i.path.display(), i.instrument, i.timeframe);
        }
    }
    let mut shown = 0u64;
    let mut on_bad = |bad: &csv::BadRow| {
        shown += 1;
        if shown <= 20 {
            eprintln!("warning: {bad}");
        } else if shown == 21 {
            eprintln!("warning: more rejected rows are counted in the summary, not listed");
        }
    };
    let run = replay::Replay {
        inputs: &inputs,
        strategies: loaded.config.strategy.set(),
        indicators: args.indicators,
        progress: stderr_tty,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    match run.run(&mut out, &mut on_bad) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e @ replay::ReplayError::Csv(_)) => fail(BAD_INPUT, e),
        Err(e) => fail(FAILED, e),
    }
}

//! The pipwatch binary: parse the command line, load the config, set up
//! logging for the mode, run it. All the work lives in the library.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use pipwatch::cli::{BacktestArgs, Cli, Command, ConfigCommand, DeadCommand, HistoryArgs, NotifyCommand, ReplayArgs};
use pipwatch::config::{self, Config, LoadOptions, Loaded};
use pipwatch::logging::{self, LogMode};
use pipwatch::market::csv;
use pipwatch::{backtest, dead, headless, replay};

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
    load_config_with(cli, file, flags, |_| {})
}

/// `load_config`, with what a command changes in how it loads (`adjust`).
fn load_config_with(
    cli: &Cli,
    file: Option<PathBuf>,
    flags: Vec<(String, toml::Value, String)>,
    adjust: impl FnOnce(&mut LoadOptions),
) -> Result<Loaded, ExitCode> {
    let mut opts = LoadOptions::from_process(file.or_else(|| cli.config.clone()), cli.source.clone());
    opts.flags = flags;
    opts.checks = pipwatch::config_checks();
    adjust(&mut opts);
    let loaded = config::load(&opts).map_err(|e| match e {
        config::ConfigError::Invalid { .. } => fail(BAD_INPUT, format!("the configuration is not valid:\n{e}")),
        other => fail(BAD_INPUT, other),
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded)
}

/// Reads the config again as this process first read it (the same file,
/// environment and flags), for a reload; warnings go to the log.
fn reloader(cli: &Cli) -> pipwatch::instance::reload::Reloader {
    let file = cli.config.clone();
    let source = cli.source.clone();
    std::sync::Arc::new(move || {
        let mut opts = LoadOptions::from_process(file.clone(), source.clone());
        opts.checks = pipwatch::config_checks();
        let loaded = config::load(&opts).map_err(|e| e.to_string())?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        Ok(loaded.config)
    })
}

/// The async runtime every long-running mode shares: two workers, as the
/// machines this runs on (and the engine) need no more.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("pipwatch")
        .build()
        .map_err(|e| fail(FAILED, format!("cannot start the async runtime: {e}")))
}

/// An error's exit code: 2 for bad input, 1 for a failure while running.
fn finish<T, E: std::fmt::Display>(result: Result<T, E>, bad_input: impl Fn(&E) -> bool) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(if bad_input(&e) { BAD_INPUT } else { FAILED }, e),
    }
}

/// `[log] level`, once the config is read (the logs before it use the mode's default).
fn apply_log_level(config: &config::Config) {
    let Some(level) = config.log.level.as_deref() else { return };
    match logging::set_level(Some(level)) {
        Ok(logging::LevelChange::KeptEnv(env)) => {
            tracing::info!(filter = %env, "PIPWATCH_LOG/RUST_LOG sets the log filter; log.level is not used")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(code) | Err(code) => code,
    }
}

/// Each mode: its logging (the console's must never reach the screen), its
/// config, its runtime, then the library call. `Err` is an exit already reported.
fn dispatch(cli: &Cli) -> Result<ExitCode, ExitCode> {
    let data_dir = || cli.data_dir.clone().unwrap_or_else(config::default_data_dir);
    Ok(match &cli.command {
        None | Some(Command::Tui(_)) => {
            need_terminal("pipwatch", "`ssh -t host pipwatch`")?;
            let theme = match &cli.command {
                Some(Command::Tui(args)) => args.theme.clone(),
                _ => None,
            };
            let data_dir = data_dir();
            // The console owns the terminal: logs go to a file, never over the screen.
            logging::init(LogMode::File(data_dir.join("pipwatch.log")), "info,sled=warn");
            let loaded = load_config(cli, None, Vec::new())?;
            // Said before the screen opens, so it is there when it closes (and in the `l` panel).
            if let Some(welcome) = first_run(&data_dir, &loaded.config) {
                eprintln!("{welcome}");
                tracing::info!("{welcome}");
            }
            apply_log_level(&loaded.config);
            let reloader = Some(reloader(cli));
            let result = runtime()?.block_on(pipwatch::console::local(&loaded.config, &data_dir, theme, reloader));
            finish(result, |e| e.is_bad_input())
        }
        Some(Command::Attach(args)) => {
            need_terminal("pipwatch attach", "`ssh -t host pipwatch attach`")?;
            // The console owns the terminal: the few logs of attach go to a file.
            logging::init(LogMode::File(config::default_data_dir().join("attach.log")), "warn");
            // For the console's theme and keys.
            let loaded = load_config(cli, None, Vec::new())?;
            let console = &loaded.config.console;
            let attach = pipwatch::console::attach(&args.url, args.token.clone(), args.theme.clone(), console);
            finish(runtime()?.block_on(attach), |e| e.is_bad_input())
        }
        Some(Command::Tail(args)) => run_tail(args)?,
        Some(Command::Dead(cmd)) => run_dead(cli, cmd),
        Some(Command::Headless(args)) => {
            logging::init(LogMode::Json, "info,sled=warn");
            let loaded = load_config(cli, None, Vec::new())?;
            apply_log_level(&loaded.config);
            if let Some(welcome) = first_run(&data_dir(), &loaded.config) {
                tracing::info!("{welcome}");
            }
            let reloader = reloader(cli);
            let opts = headless::Options {
                run_for: args.run_for,
                candles: args.candles,
                server: !args.no_server,
                reloader: Some(reloader),
            };
            let result = runtime()?.block_on(headless::run(&loaded.config, &data_dir(), opts));
            finish(result, |e| e.is_bad_input())
        }
        Some(Command::Replay(args)) => run_replay(cli, args)?,
        Some(Command::Backtest(args)) => run_backtest(cli, args)?,
        Some(Command::Status(args)) => {
            // No logging: the lines (or the JSON) are the output.
            let url = match &args.url {
                Some(u) => u.clone(),
                None => load_config(cli, None, Vec::new())?.config.server.listen,
            };
            let url = match pipwatch::status::health_url(&url) {
                Ok(u) => u,
                Err(e) => return Err(fail(pipwatch::status::UNKNOWN, e)),
            };
            let look = runtime()?.block_on(pipwatch::status::look(&url, args.token.as_deref(), args.json));
            println!("{}", look.text);
            ExitCode::from(look.code)
        }
        Some(Command::Config(ConfigCommand::Show)) => config_show(&load_config(cli, None, Vec::new())?, &data_dir()),
        Some(Command::Notify(NotifyCommand::Test { route })) => run_notify_test(cli, route.as_deref())?,
        Some(Command::Completions { shell }) => {
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "pipwatch", &mut text);
            print_out(&String::from_utf8_lossy(&text))
        }
        Some(Command::Man) => {
            let mut text = Vec::new();
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut text) {
                Ok(()) => print_out(&String::from_utf8_lossy(&text)),
                Err(e) => fail(FAILED, format!("cannot write the man page: {e}")),
            }
        }
        Some(Command::Config(ConfigCommand::Check { file })) => {
            // Also whether a CSV source's files can be read: what a run
            // would find out only when it starts.
            let with_files = |o: &mut LoadOptions| o.checks.push(csv::config_problems);
            config_check(&load_config_with(cli, file.clone(), Vec::new(), with_files)?)
        }
    })
}

/// The console draws on stdout and reads keys from stdin, or from the
/// controlling terminal when stdin is redirected (as crossterm does). With
/// neither (cron, a pipe, `ssh host pipwatch` without -t) it would start the
/// engine and then fail on "No such device or address": said before
/// anything starts, with what to run instead.
fn need_terminal(what: &str, ssh: &str) -> Result<(), ExitCode> {
    let screen = std::io::stdout().is_terminal();
    let keys = std::io::stdin().is_terminal() || controlling_terminal();
    let missing = match (screen, keys) {
        (true, true) => return Ok(()),
        (false, true) => "its output (stdout) is not one",
        (true, false) => "it has none to read keys from",
        (false, false) => "this has none",
    };
    Err(fail(
        BAD_INPUT,
        format!(
            "the console needs a terminal, and {missing} (a pipe or a redirect, cron, or ssh without -t), so \
             `{what}` did not start. For the engine without a screen run `pipwatch headless` (events as JSON \
             lines); to watch a running instance run `pipwatch attach` (or `pipwatch tail`) from a terminal; over \
             SSH give it one: {ssh}"
        ),
    ))
}

#[cfg(unix)]
fn controlling_terminal() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
}

#[cfg(not(unix))]
fn controlling_terminal() -> bool {
    false
}

fn origin_name(loaded: &Loaded) -> String {
    match &loaded.origin {
        config::Origin::File(p) => p.display().to_string(),
        config::Origin::Defaults => "built-in defaults".to_string(),
    }
}

/// How to go on from the demo: where the data lives, how to get signals on
/// Discord and live prices from OANDA. What a newcomer needs after the
/// first start (and `config show` says it too).
fn next_steps(data_dir: &std::path::Path, c: &Config) -> Vec<String> {
    let mut steps = vec![format!("data directory: {} (--data-dir sets another)", data_dir.display())];
    if c.notify.routes.is_empty() {
        steps.push(
            "signals on Discord: add a [[notify.routes]] with name = \"signals\" and webhook = \"${PIPWATCH_DISCORD_SIGNALS}\" \
             to a config file (config/pipwatch.toml shows every key), run with -c FILE, and check it with \
             `pipwatch notify test`"
                .to_string(),
        );
    }
    if c.market.source != config::SourceKind::Oanda {
        steps.push(
            "live prices: export PIPWATCH_OANDA_ACCOUNT and PIPWATCH_OANDA_TOKEN (an OANDA practice account's) \
             and run with --source oanda"
                .to_string(),
        );
    }
    steps
}

/// On a data directory that has never been used: where it is and what to
/// do next, once.
fn first_run(data_dir: &std::path::Path, c: &Config) -> Option<String> {
    if data_dir.join("db").exists() {
        return None;
    }
    Some(format!("first run of pipwatch. {}.", next_steps(data_dir, c).join(". ")))
}

fn config_show(loaded: &Loaded, data_dir: &std::path::Path) -> ExitCode {
    match toml::to_string_pretty(&loaded.config) {
        Ok(text) => {
            let from = match &loaded.origin {
                config::Origin::File(p) => format!("{} over the built-in defaults", p.display()),
                config::Origin::Defaults => "built-in defaults".to_string(),
            };
            let mut shown =
                format!("# effective config: {from}, then PIPWATCH_* variables and flags. Secrets are redacted.\n");
            let unset = loaded.config.unset_variables();
            if !unset.is_empty() {
                shown.push_str(&format!("# not set in the environment, so empty: {}\n", unset.join(", ")));
            }
            for step in next_steps(data_dir, &loaded.config) {
                shown.push_str(&format!("# {step}\n"));
            }
            shown.push('\n');
            shown.push_str(&text);
            // `println!` would panic on a closed pipe (`config show | head`).
            print_out(&shown)
        }
        Err(e) => fail(FAILED, format!("cannot print the config: {e}")),
    }
}

fn config_check(loaded: &Loaded) -> ExitCode {
    let c: &Config = &loaded.config;
    print_out(&format!(
        "{}: ok ({} source, {} instrument(s) x {} timeframe(s), {} strategy {}/{}, {} notification route(s))\n",
        origin_name(loaded),
        c.market.source,
        c.market.instruments.len(),
        c.market.timeframes.len(),
        c.strategy.ma,
        c.strategy.fast,
        c.strategy.slow,
        c.notify.routes.len()
    ))
}

fn run_tail(args: &pipwatch::cli::TailArgs) -> Result<ExitCode, ExitCode> {
    logging::init(LogMode::Plain, "info,sled=warn");
    let opts = pipwatch::tail::Options {
        url: args.url.clone(),
        token: args.token.clone(),
        topics: args.topics.clone(),
        instruments: args.instruments.iter().map(|i| i.to_string()).collect(),
    };
    let result = runtime()?.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        pipwatch::shutdown::on_signals(stop.clone(), None, pipwatch::shutdown::Hangup::Stop);
        let mut out = std::io::stdout();
        pipwatch::tail::run(&opts, &mut out, stop).await
    });
    Ok(match result {
        // A closed stdout (piped into `head`) is a normal end.
        Err(pipwatch::client::ClientError::Output(_)) => ExitCode::SUCCESS,
        other => finish(other, |e| matches!(e, pipwatch::client::ClientError::Url(_))),
    })
}

/// `pipwatch notify test [ROUTE]`: exit 0 when Discord took every test
/// message, 1 when one was not delivered (the lines say why), 2 for a
/// route that does not exist or a config without routes.
fn run_notify_test(cli: &Cli, route: Option<&str>) -> Result<ExitCode, ExitCode> {
    logging::init(LogMode::Plain, "warn,sled=warn");
    let loaded = load_config(cli, None, Vec::new())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(FAILED, format!("cannot start the async runtime: {e}")))?;
    let mut out = std::io::stdout();
    let result = rt.block_on(pipwatch::notify::test_message::run(&loaded.config, route, &mut out));
    Ok(match result {
        Ok(tried) if tried.iter().all(|t| t.delivered) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(FAILED),
        Err(pipwatch::notify::test_message::TestError::Output(e)) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(if e.is_bad_input() { BAD_INPUT } else { FAILED }, e),
    })
}

/// `pipwatch dead` while an instance holds the data directory: the same
/// command, carried out by that instance through its server (the config's
/// `server.listen`, with its token).
fn dead_remote(cli: &Cli, cmd: &DeadCommand, dir: &str) -> ExitCode {
    use pipwatch::protocol::{ClientFrame, DeadAction};
    let config = match load_config(cli, None, Vec::new()) {
        Ok(l) => l.config,
        Err(code) => return code,
    };
    let frame = match cmd {
        DeadCommand::List { filter, json } => ClientFrame::Dead {
            action: DeadAction::List,
            route: filter.route.clone(),
            ids: filter.ids.clone(),
            all: false,
            json: *json,
        },
        DeadCommand::Retry { filter } => ClientFrame::Dead {
            action: DeadAction::Retry,
            route: filter.route.clone(),
            ids: filter.ids.clone(),
            all: false,
            json: false,
        },
        DeadCommand::Purge { filter, all } => ClientFrame::Dead {
            action: DeadAction::Purge,
            route: filter.route.clone(),
            ids: filter.ids.clone(),
            all: *all,
            json: false,
        },
    };
    let token = Some(config.server.token.expose().to_string()).filter(|t| !t.is_empty());
    let opts = pipwatch::client::Options { url: config.server.listen.clone(), token, ..Default::default() };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(FAILED, format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(pipwatch::client::command(&opts, &frame)) {
        Ok(text) => match std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()) {
            Err(e) if !closed_pipe(&e) => fail(FAILED, format!("cannot write the list: {e}")),
            _ => ExitCode::SUCCESS,
        },
        Err(pipwatch::client::ClientError::Refused(why)) => {
            fail(FAILED, format!("the running instance refused: {why}"))
        }
        Err(e) => fail(
            FAILED,
            format!(
                "the data directory {dir} is in use by a running pipwatch, and it could not be asked through its server ({e}). \
                 Run this where that instance's config is (-c), or stop it (Ctrl-C, SIGTERM or `systemctl stop`), \
                 run this again, then start it: nothing queued is lost while it is stopped"
            ),
        ),
    }
}

fn run_dead(cli: &Cli, cmd: &DeadCommand) -> ExitCode {
    logging::init(LogMode::Plain, "warn,sled=warn");
    let data_dir = cli.data_dir.clone().unwrap_or_else(config::default_data_dir);
    if !data_dir.join("db").exists() {
        let said = format!("no pipwatch data in {}: the dead list is empty\n", data_dir.display());
        return match std::io::Write::write_all(&mut std::io::stdout(), said.as_bytes()) {
            Err(e) if !closed_pipe(&e) => fail(FAILED, format!("cannot write the list: {e}")),
            _ => ExitCode::SUCCESS,
        };
    }
    let store = match pipwatch::store::Store::open(&data_dir) {
        Ok((store, _)) => store,
        // The generic advice (attach, or another --data-dir) is no help
        // here: the dead list lives in that very directory.
        // A running instance holds it: ask that instance (same command path
        // as the console's commands), through its server.
        Err(pipwatch::store::StoreError::Locked { dir }) => return dead_remote(cli, cmd, &dir),
        Err(e) => return fail(FAILED, e),
    };
    let mut out = std::io::stdout().lock();
    let result = match cmd {
        DeadCommand::List { filter, json } => dead::list(&store, filter, *json, &mut out),
        DeadCommand::Retry { filter } => dead::retry(&store, filter, &mut out),
        DeadCommand::Purge { filter, .. } => dead::purge(&store, filter, &mut out),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // `dead list | head -1`: whoever reads has all they wanted.
        Err(dead::DeadError::Io(e)) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(FAILED, e),
    }
}

/// A closed pipe (`| head`) is a normal end for a command's output: the
/// reader has what it wanted, so it is neither an error nor worth a word.
fn closed_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Writes a command's whole output to stdout; a closed pipe ends it quietly.
fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match std::io::Write::write_all(&mut out, text.as_bytes()).and_then(|()| std::io::Write::flush(&mut out)) {
        Err(e) if !closed_pipe(&e) => fail(FAILED, format!("cannot write to stdout: {e}")),
        _ => ExitCode::SUCCESS,
    }
}

/// The config with `replay`'s and `backtest`'s strategy flags over it, and
/// the CSV inputs they name (said on stderr when there are several, or on a
/// terminal).
fn history(
    cli: &Cli,
    args: &HistoryArgs,
    mut flags: Vec<(String, toml::Value, String)>,
) -> Result<(Loaded, Vec<csv::CsvInput>), ExitCode> {
    // One value is the strategy's, checked with the config; several are a
    // sweep's axis (each value was checked when the flag was read).
    if let Some(kind) = args.ma.as_ref().and_then(|v| v.single()) {
        flags.push(("strategy.ma".to_string(), toml::Value::String(kind.to_string()), format!("--ma {kind}")));
    }
    for (key, v) in [("fast", &args.fast), ("slow", &args.slow), ("atr", &args.atr)] {
        if let Some(v) = v.as_ref().and_then(|v| v.single()) {
            flags.push((format!("strategy.{key}"), toml::Value::Integer(i64::from(v)), format!("--{key} {v}")));
        }
    }
    // Only the strategy is used: Discord, OANDA and server secrets need not be set.
    let loaded = load_config_with(cli, None, flags, |o| o.offline = true)?;
    let m = &loaded.config.market;
    let default_timeframe = m.timeframes.first().copied().unwrap_or(pipwatch::types::Timeframe::H4);
    let mut inputs = Vec::new();
    for path in &args.csv {
        match csv::resolve_history(path, args.instrument, args.timeframe, default_timeframe) {
            Ok(found) => inputs.extend(found),
            Err(e) => return Err(fail(BAD_INPUT, e)),
        }
    }
    let stderr_tty = std::io::stderr().is_terminal();
    for i in &inputs {
        if stderr_tty || inputs.len() > 1 {
            eprintln!("{}: {} {}", i.path.display(), i.instrument, i.timeframe);
        }
        // Said, not refused: a file with gaps of its own can mislead the count.
        if let Some(said) = csv::spacing_contradiction(i) {
            eprintln!("warning: {said}: pass --timeframe to say which they are, or check the file");
        }
    }
    Ok((loaded, inputs))
}

/// Says each bad row (the first 20) on stderr.
fn bad_rows() -> impl FnMut(&csv::BadRow) {
    let mut shown = 0u64;
    move |bad: &csv::BadRow| {
        shown += 1;
        if shown <= 20 {
            eprintln!("warning: {bad}");
        } else if shown == 21 {
            eprintln!("warning: more rejected rows are counted in the summary, not listed");
        }
    }
}

/// Says each file that gave no candle: exit 0 and "0 candles" alone reads
/// like a quiet success.
fn warn_empty(summary: &replay::Summary) {
    for path in &summary.empty {
        eprintln!("warning: {path}: no candles read (the file has a header only, or every row was rejected)");
    }
}

fn run_replay(cli: &Cli, args: &ReplayArgs) -> Result<ExitCode, ExitCode> {
    logging::init(LogMode::Plain, "warn,sled=warn");
    let h = &args.history;
    let several = [h.fast.as_ref(), h.slow.as_ref(), h.atr.as_ref()].into_iter().flatten().any(|v| v.0.len() > 1)
        || h.ma.as_ref().is_some_and(|v| v.0.len() > 1);
    if several {
        return Err(fail(
            BAD_INPUT,
            "replay runs one strategy: give one value per parameter (a range or a list sweeps in `pipwatch backtest`)",
        ));
    }
    let (loaded, inputs) = history(cli, &args.history, Vec::new())?;
    let run = replay::Replay {
        inputs: &inputs,
        strategies: loaded.config.strategy.set(),
        indicators: args.indicators,
        progress: std::io::stderr().is_terminal(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = run.run(&mut out, &mut bad_rows()).map(|summary| {
        warn_empty(&summary);
        eprintln!("{summary}");
    });
    Ok(finish(result, |e| matches!(e, replay::ReplayError::Csv(_))))
}

/// A history run's result: a file that cannot be read is bad input, anything else a failure.
fn ran<T>(result: Result<T, replay::ReplayError>) -> Result<T, ExitCode> {
    result.map_err(|e| match e {
        e @ replay::ReplayError::Csv(_) => fail(BAD_INPUT, e),
        e => fail(FAILED, e),
    })
}

/// Where a backtest's trades are filled, as its report says it.
fn fill_label(fill: pipwatch::engine::trade::Fill) -> &'static str {
    match fill {
        pipwatch::engine::trade::Fill::Close => "the signal's close",
        pipwatch::engine::trade::Fill::NextOpen => "the next open",
    }
}

/// The end of writing `what` to stdout: a closed pipe (`| head`) is a
/// normal end; any other error is said.
fn written_out(written: std::io::Result<()>, what: &str) -> Result<(), ExitCode> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(fail(FAILED, format!("cannot write {what}: {e}"))),
        _ => Ok(()),
    }
}

/// `backtest` with a range or a list on a parameter: every combination.
fn run_sweep(
    args: &BacktestArgs,
    inputs: &[csv::CsvInput],
    axes: pipwatch::sweep::Axes,
    fill: pipwatch::engine::trade::Fill,
) -> Result<ExitCode, ExitCode> {
    use pipwatch::cli::FormatArg;
    let combinations = axes.combinations().len();
    if combinations == 0 {
        return Err(fail(BAD_INPUT, "no combination has fast below slow: widen --fast or --slow"));
    }
    let progress = std::io::stderr().is_terminal();
    if progress {
        eprintln!("sweeping {combinations} combinations");
    }
    let sweep =
        pipwatch::sweep::Sweep { inputs, axes, fill, spread_pips: args.spread, from: args.from, to: args.to, progress };
    let results = ran(sweep.run(&mut bad_rows()))?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let rank = args.rank;
    let written = match args.format.unwrap_or(if tty { FormatArg::Table } else { FormatArg::Json }) {
        FormatArg::Json => results.write_json(&mut out),
        FormatArg::Csv => results.write_csv(&mut out),
        FormatArg::Table => {
            let fill = fill_label(fill);
            let options = pipwatch::sweep::table::Options {
                rank,
                min_trades: args.min_trades,
                top: args.top,
                width: if tty { crossterm::terminal::size().map(|(w, _)| usize::from(w)).unwrap_or(80) } else { 80 },
                colour: tty && !logging::no_color(),
                assumptions: format!("entries at {fill}, spread {} pips", args.spread),
            };
            pipwatch::sweep::table::write(&results, &options, &mut out)
        }
    };
    written_out(written.and_then(|()| std::io::Write::flush(&mut out)), "the sweep")?;
    let r = &results.read;
    warn_empty(r);
    let secs = r.elapsed.as_secs_f64();
    let work = combinations as f64 * r.candles as f64;
    eprintln!(
        "swept {combinations} combinations over {} candles from {} file(s) in {secs:.3}s ({:.1} M combination-candles/s), {} rejected rows",
        r.candles,
        r.files,
        if secs > 0.0 { work / secs / 1e6 } else { 0.0 },
        r.bad_rows
    );
    Ok(ExitCode::SUCCESS)
}

fn run_backtest(cli: &Cli, args: &BacktestArgs) -> Result<ExitCode, ExitCode> {
    use pipwatch::cli::{FillArg, FormatArg};
    logging::init(LogMode::Plain, "warn,sled=warn");
    let mut flags = Vec::new();
    for (key, v, flag) in [("sl_mult", &args.sl, "--sl"), ("tp_mult", &args.tp, "--tp")] {
        if let Some(v) = v.as_ref().and_then(|v| v.single()) {
            flags.push((format!("strategy.{key}"), toml::Value::Float(v), format!("{flag} {v}")));
        }
    }
    if !(args.spread.is_finite() && args.spread >= 0.0) {
        return Err(fail(BAD_INPUT, format!("--spread {}: give the spread in pips, 0 or more", args.spread)));
    }
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        return Err(fail(BAD_INPUT, format!("--from {from} is after --to {to}")));
    }
    let (loaded, inputs) = history(cli, &args.history, flags)?;
    let strategies = loaded.config.strategy.set();
    let fill = match args.fill {
        FillArg::Close => pipwatch::engine::trade::Fill::Close,
        FillArg::NextOpen => pipwatch::engine::trade::Fill::NextOpen,
    };
    let base = strategies.default;
    let h = &args.history;
    let axes = pipwatch::sweep::Axes {
        ma: h.ma.as_ref().map_or(vec![base.ma], |v| v.0.clone()),
        fast: h.fast.as_ref().map_or(vec![base.fast], |v| v.0.clone()),
        slow: h.slow.as_ref().map_or(vec![base.slow], |v| v.0.clone()),
        atr: h.atr.as_ref().map_or(vec![base.atr], |v| v.0.clone()),
        sl: args.sl.as_ref().map_or(vec![base.sl_mult], |v| v.0.clone()),
        tp: args.tp.as_ref().map_or(vec![base.tp_mult], |v| v.0.clone()),
    };
    if axes.is_sweep() {
        return run_sweep(args, &inputs, axes, fill);
    }
    let run = backtest::Backtest {
        inputs: &inputs,
        strategies: strategies.clone(),
        fill,
        spread_pips: args.spread,
        from: args.from,
        to: args.to,
        progress: std::io::stderr().is_terminal(),
    };
    let report = ran(run.run(&mut bad_rows()))?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let format = args.format.unwrap_or(if tty { FormatArg::Table } else { FormatArg::Json });
    let written = match format {
        FormatArg::Json => report.write_json(&mut out),
        FormatArg::Csv => report.write_csv(&mut out),
        FormatArg::Table => {
            let p = strategies.default;
            let range = match (args.from, args.to) {
                (None, None) => "all candles".to_string(),
                (f, t) => format!(
                    "{} to {}",
                    f.map_or("the start".to_string(), |f| f.to_string()),
                    t.map_or("the end".to_string(), |t| t.to_string())
                ),
            };
            let assumptions = backtest::table::Assumptions {
                strategy: format!("{}, ATR {}, stop {} ATR, target {} ATR", p.label(), p.atr, p.sl_mult, p.tp_mult),
                fill: fill_label(fill),
                spread_pips: args.spread,
                range,
            };
            let width = crossterm::terminal::size().map(|(w, _)| usize::from(w)).unwrap_or(80);
            backtest::table::write(&report, &assumptions, if tty { width } else { 80 }, &mut out)
        }
    };
    // A closed pipe (`| head`) is a normal end.
    written_out(written.and_then(|()| std::io::Write::flush(&mut out)), "the report")?;
    let r = &report.read;
    warn_empty(r);
    eprintln!(
        "backtested {} candles from {} file(s) in {:.3}s: {} signals, {} closed trades, {} rejected rows",
        r.candles,
        r.files,
        r.elapsed.as_secs_f64(),
        r.signals,
        report.total.trades,
        r.bad_rows
    );
    Ok(ExitCode::SUCCESS)
}

//! Headless mode: an instance with no terminal. Events go to stdout as JSON
//! lines, logs to stderr as JSON; SIGINT, SIGTERM or `--for` stop it cleanly.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::Event;
use crate::hub::{Received, Subscription};
use crate::instance::{EngineStats, Instance, InstanceError};

pub struct Options {
    pub run_for: Option<Duration>,
    pub candles: bool,
    /// Open the HTTP/WebSocket port (`--no-server` turns it off).
    pub server: bool,
    /// Reads the config again on SIGHUP or `{"op":"reload"}`.
    pub reloader: Option<crate::instance::reload::Reloader>,
}

pub async fn run(config: &Config, data_dir: &Path, opts: Options) -> Result<EngineStats, InstanceError> {
    // First: a signal while the instance starts stops it cleanly.
    let shutdown = CancellationToken::new();
    let reload = opts.reloader.map(crate::instance::Reloading::new);
    // In a terminal a hangup is that terminal closing (a dropped SSH
    // session): stop, or the process outlives the session it belongs to.
    // As a service (systemd, nohup with a log file, docker), SIGHUP is the
    // convention for "read your config again".
    let in_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let hangup = match &reload {
        Some(r) if !in_terminal => crate::shutdown::Hangup::Reload(r.requests.clone()),
        _ => crate::shutdown::Hangup::Stop,
    };
    crate::shutdown::on_signals(shutdown.clone(), opts.run_for, hangup);
    let instance_opts = crate::instance::Options { server: opts.server, server_optional: false, reload };
    let mut instance = Instance::start(config, data_dir, instance_opts).await?;
    let printer_stop = CancellationToken::new();
    let printer =
        instance.take_feed().map(|(_, events)| tokio::spawn(print_events(events, opts.candles, printer_stop.clone())));
    let result = instance.run(shutdown).await;
    // Everything has stopped: the printer empties what is queued and ends.
    printer_stop.cancel();
    if let Some(p) = printer {
        let _ = p.await;
    }
    result
}

/// Which events headless prints. Quotes are for consoles: several a second
/// per pair would drown the records a script wants.
fn wanted(e: &Event, candles: bool) -> bool {
    match e {
        Event::Candle(_) => candles,
        Event::Quote(_) => false,
        _ => true,
    }
}

async fn print_events(mut rx: Subscription, candles: bool, stop: CancellationToken) {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    loop {
        let next = tokio::select! {
            biased;
            r = rx.recv() => r,
            // Everything is stopped: what is still queued was printed above.
            _ = stop.cancelled() => rx.try_recv(),
        };
        let env = match next {
            Some(Received::Event(env)) => env,
            // Records are lines a script reads, not a view: a gap is said, not papered over.
            Some(Received::Resync { missed, .. }) => {
                tracing::warn!(missed, "stdout is not keeping up; events were dropped");
                continue;
            }
            None => break,
        };
        if wanted(&env.event, candles) {
            let ok = serde_json::to_writer(&mut out, &env.event).is_ok() && out.write_all(b"\n").is_ok();
            if !ok {
                return stdout_closed();
            }
        }
        // Flush once per burst, not per line.
        if rx.is_empty() && out.flush().is_err() {
            return stdout_closed();
        }
    }
    let _ = out.flush();
}

/// Whoever read stdout has gone (a pipe into `head`, a restarted log
/// collector). A service goes on: the store, the notifier and the server do
/// not depend on stdout. Said once, on stderr.
fn stdout_closed() {
    tracing::warn!(
        "stdout was closed: records are no longer printed; the engine, the notifier and the server go on (SIGINT or SIGTERM stops them)"
    );
}

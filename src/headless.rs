//! Headless mode: the engine with no terminal. Events go to stdout as JSON
//! lines, logs to stderr as JSON; SIGINT, SIGTERM or `--for` stop it cleanly.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::{Envelope, Event};
use crate::hub::{Hub, Received};
use crate::live::{self, LiveError, LiveStats};
use crate::market::SourceError;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyError};
use crate::server::{self, ServerError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl HeadlessError {
    /// The input was at fault (a CSV feed that cannot be read), not the run:
    /// exit code 2, as for a bad config or flag.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, HeadlessError::Live(LiveError::Source(SourceError::Csv(_) | SourceError::CsvPath(_))))
    }
}

pub struct Options {
    pub run_for: Option<Duration>,
    pub candles: bool,
    /// Open the HTTP/WebSocket port (`--no-server` turns it off).
    pub server: bool,
    /// Print events as JSON lines on stdout (headless); off under the console.
    pub print: bool,
    /// Stops everything when cancelled; without one, SIGINT/SIGTERM/`--for` do.
    pub shutdown: Option<CancellationToken>,
    /// Told the hub and the notifier once everything is running.
    pub ready: Option<tokio::sync::oneshot::Sender<Ready>>,
}

impl Options {
    pub fn headless(run_for: Option<Duration>, candles: bool, server: bool) -> Options {
        Options { run_for, candles, server, print: true, shutdown: None, ready: None }
    }
}

/// What a front end (the console) needs from the running services.
pub struct Ready {
    pub hub: Arc<Hub>,
    /// Subscribed before any part started, so that nothing published at
    /// start (the alerts still open from before a restart, the first queue
    /// status) is missed by a console that subscribed later.
    pub events: (crate::view::View, crate::hub::Subscription),
    pub notifier: crate::notify::NotifierHandle,
    /// Where the server listens, if it does.
    pub server: Option<std::net::SocketAddr>,
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

async fn print_events(mut rx: crate::hub::Subscription, candles: bool, stop: CancellationToken) {
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

/// Cancels `token` on SIGINT, SIGTERM or after `run_for`.
/// Whether SIGHUP is ignored (`nohup`), read from /proc so that no
/// `unsafe` is needed. Where there is no /proc, it is taken as ignored: the
/// OS's own handling is left as it was.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return true };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        // Signal n is bit n - 1; SIGHUP is 1.
        .is_none_or(|mask| mask & 1 != 0)
}

pub fn stop_on_signals(token: CancellationToken, run_for: Option<Duration>) {
    tokio::spawn(async move {
        let timer = async {
            match run_for {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        // A dropped SSH session hangs up the terminal: stop as cleanly as on
        // SIGTERM (the seq mark, the last deliveries recorded) instead of
        // dying mid-write. Under `nohup` the hangup is ignored, and stays so.
        #[cfg(unix)]
        let hangup = async {
            match hangup_ignored() {
                false => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                },
                true => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
            _ = term => tracing::info!("terminated; stopping"),
            _ = hangup => tracing::info!("the terminal hung up (SIGHUP); stopping"),
            _ = timer => tracing::info!("--for elapsed; stopping"),
        }
        token.cancel();
    });
}

pub async fn run(config: &Config, data_dir: &Path, opts: Options) -> Result<LiveStats, HeadlessError> {
    let (store, report) = Store::open(data_dir)?;
    if let Some(aside) = &report.moved_aside {
        tracing::error!(dir = %data_dir.display(), moved_to = %aside.display(),
            "the database was corrupt: it was moved aside and a fresh one started (history will be fetched again)");
    }
    tracing::info!(dir = %data_dir.display(), new = report.created, "data directory open");
    let store = Arc::new(store);
    // A CSV's series are its files'; the others' are the config's.
    let m = &config.market;
    let configured = |k: &crate::types::SeriesKey| {
        m.source == crate::config::SourceKind::Csv
            || (m.instruments.contains(&k.instrument) && m.timeframes.contains(&k.timeframe))
    };
    let metrics = Arc::new(Metrics::new());
    let observed = metrics.clone();
    let hub = Hub::starting_after(4096, store.seq_start(SEQ_GAP)?)
        .with_observer(Box::new(move |env: &Envelope| observed.observe(&env.event)));
    let hub = Arc::new(hub.with_restored(
        // A view that cannot be read is not worth refusing to start over.
        store.restored_view(crate::view::SIGNALS_KEPT, configured).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the last view could not be read; the console starts empty");
            crate::view::View::default()
        }),
    ));
    // Subscribed before anything is published: every candle of this run.
    let bars_stop = CancellationToken::new();
    let bars = tokio::spawn(keep_bars(hub.clone(), store.clone(), bars_stop.clone()));
    // From here a crash leaves an unclean mark, and the next start skips ahead.
    store.mark_seq(hub.start(), false)?;
    let marker_stop = CancellationToken::new();
    let marker = tokio::spawn(mark_seq(hub.clone(), store.clone(), marker_stop.clone()));
    let early = opts.ready.is_some().then(|| hub.subscribe_with_view());
    let printer_stop = CancellationToken::new();
    let printer = opts.print.then(|| tokio::spawn(print_events(hub.subscribe(), opts.candles, printer_stop.clone())));
    let shutdown = match opts.shutdown.clone() {
        Some(s) => s,
        None => {
            let s = CancellationToken::new();
            stop_on_signals(s.clone(), opts.run_for);
            s
        }
    };

    let notifier = Notifier::new(config, store.clone(), hub.clone())?;
    let handle = notifier.handle();

    // A CSV's series are known only as its files are read.
    let series: Vec<_> = match m.source {
        crate::config::SourceKind::Csv => Vec::new(),
        _ => m.instruments.iter().flat_map(|&i| m.timeframes.iter().map(move |&tf| (i, tf))).collect(),
    };
    metrics.prepare(series, config.notify.routes.iter().map(|r| r.name.as_str()));
    let server_stop = CancellationToken::new();
    let server = if opts.server {
        let options = server::Options::from_config(config);
        match server::start(options, hub.clone(), Some(handle.clone()), metrics.clone(), server_stop.clone()).await {
            Ok(s) => Some(s),
            // The console is still useful without its port (another instance
            // may hold it); headless exists to serve, so there it is an error.
            Err(e) if !opts.print => {
                tracing::warn!(error = %e, "running without the server");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };

    // Started once the server's fold listens: the queue status it publishes
    // at start is repeated only when it changes, and a fold that missed it
    // would show clients no queue at all.
    let notifier_stop = CancellationToken::new();
    let notifier_task = tokio::spawn(notifier.run(notifier_stop.clone()));

    let health_stop = CancellationToken::new();
    let series = config
        .market
        .instruments
        .iter()
        .flat_map(|&i| config.market.timeframes.iter().map(move |&tf| crate::types::SeriesKey::new(i, tf)))
        .collect();
    let health_task = tokio::spawn(crate::health::task::run(
        crate::health::task::Ctx {
            health: config.health.clone(),
            data_dir: data_dir.to_path_buf(),
            hub: hub.clone(),
            notifier: Some(handle.clone()),
            metrics: metrics.clone(),
            series,
            pace: crate::health::task::Pace::from_config(config),
            store: Some(store.clone()),
        },
        health_stop.clone(),
    ));
    // Under systemd (Type=notify): the store is open and the port bound.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if let (Some(ready), Some(events)) = (opts.ready, early) {
        let server = server.as_ref().map(|s| s.addr);
        let _ = ready.send(Ready { hub: hub.clone(), events, notifier: handle.clone(), server });
    }

    let result = live::run(config, store.clone(), hub.clone(), Some(handle), Some(metrics), shutdown.clone()).await;
    // A feed that ran out (a CSV) leaves the rest running: the console, the
    // server, the notifier's queue and the health checks all still serve.
    if let Ok(stats) = &result
        && stats.source_finished
    {
        tracing::info!("the market feed has no more candles; still running until stopped");
        shutdown.cancelled().await;
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    health_stop.cancel();
    let _ = health_task.await;
    // The engine has stopped: the notifier finishes a request in flight (what
    // it has not sent stays in the outbox for the next start).
    notifier_stop.cancel();
    let grace = config.notify.timeout.0 + Duration::from_secs(1);
    if tokio::time::timeout(grace, notifier_task).await.is_err() {
        tracing::warn!("the notifier did not stop in time; its queued messages are kept for the next start");
    }
    server_stop.cancel();
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(3), server.task).await;
    }
    printer_stop.cancel();
    if let Some(p) = printer {
        let _ = p.await;
    }
    marker_stop.cancel();
    let _ = marker.await;
    bars_stop.cancel();
    let _ = bars.await;
    let marked = store.mark_seq(hub.last(), true);
    let flushed = store.flush().await;
    // The engine's own error first: a refused write it met says more than
    // the same refusal met again here.
    let stats = result?;
    marked?;
    flushed?;
    Ok(stats)
}

/// Seqs an unclean stop may have published past its last mark: the mark is
/// written every second and made durable by the next flush (sled's own
/// every 5 s, or the engine's on each candle), and even a 10 ms demo of 28
/// series publishes a few thousand events a second.
const SEQ_GAP: u64 = 1_000_000;

/// How often the pairs' recent closes are kept while they change, so that
/// after a crash a pair's sparkline and chart come back with at most this
/// much missing. (About 100 KB for 28 series: not with every candle.)
const BARS_KEPT_EVERY: Duration = Duration::from_secs(15);

/// The pairs' recent closes, read from the hub's view: kept every
/// `BARS_KEPT_EVERY` while they change, and once more at the end.
async fn keep_bars(hub: Arc<Hub>, store: Arc<Store>, stop: CancellationToken) {
    // The last candle time of each pair: cheap to compare, and it moves
    // whenever a bar was added.
    let ends = |hub: &Hub| hub.read(|v| v.pairs.iter().map(|p| p.candle.map(|c| c.time)).collect::<Vec<_>>());
    let mut kept = ends(&hub);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BARS_KEPT_EVERY, BARS_KEPT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = ends(&hub);
        if now == kept {
            continue;
        }
        kept = now;
        if let Err(e) = store.keep_bars(&hub.snapshot())
            && !std::mem::replace(&mut warned, true)
        {
            // Display only; a store that cannot write stops the instance through the engine.
            tracing::warn!(error = %e, "the pairs' recent closes could not be kept");
        }
    }
    // Display only: a failure to keep them costs the next start its charts.
    if let Err(e) = store.keep_bars(&hub.snapshot()) {
        tracing::warn!(error = %e, "the pairs' recent closes were not kept; the next start shows only their last candle");
    }
}

/// Notes the last seq published once a second, so that the next instance's
/// seqs start after this one's even after a crash.
async fn mark_seq(hub: Arc<Hub>, store: Arc<Store>, stop: CancellationToken) {
    let mut marked = hub.start();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let last = hub.last();
        if last != marked {
            // A refused write is the store's failure, which stops the instance on its own.
            if store.mark_seq(last, false).is_err() {
                return;
            }
            marked = last;
        }
    }
}

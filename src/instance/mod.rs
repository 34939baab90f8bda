//! The instance: starts, owns and stops the parts of a running pipwatch —
//! the store, the hub, the notifier, the server, the health checks and the
//! engine task — whichever front end shows it (headless's JSON lines or the
//! console). Front ends are handed a feed of events and a command path; they
//! never reach into the parts.
//!
//! Order matters both ways. Starting: the store, then the hub (with the view
//! a restart resumes from), then the front end's subscription, then the
//! server (so its clients can see the notifier's first report), the
//! notifier, the health checks, and last the engine. Stopping: the input
//! first (the engine stops its source and applies what it already sent),
//! then the health checks, the notifier (a request in flight finishes), the
//! server, the keepers, and a final seq mark and flush.

pub mod engine;
mod keep;
pub mod reload;
pub mod restore;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceKind};
use crate::control::Control;
use crate::hub::{Hub, Subscription};
use crate::market::SourceError;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifierHandle, NotifyError};
use crate::server::{self, ServerError};
use crate::store::{Store, StoreError};
use crate::types::SeriesKey;
use crate::view::View;
pub use engine::{EngineError, EngineStats};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("the engine task crashed: {0}")]
    Crashed(String),
}

impl InstanceError {
    /// The input was at fault (a CSV feed that cannot be read), not the run:
    /// exit code 2, as for a bad config or flag.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, InstanceError::Engine(EngineError::Source(SourceError::Csv(_) | SourceError::CsvPath(_))))
    }
}

pub struct Options {
    /// Open the HTTP/WebSocket port (`--no-server` turns it off).
    pub server: bool,
    /// Go on without the port if it cannot be had (the console: another
    /// instance may hold it). Headless exists to serve, so there it is an error.
    pub server_optional: bool,
    /// How to read the config again on SIGHUP or `{"op":"reload"}`, and the
    /// channel those requests come by (made before the instance, so a SIGHUP
    /// while it starts waits for it). None: this instance does not reload.
    pub reload: Option<Reloading>,
}

pub struct Reloading {
    pub reloader: reload::Reloader,
    pub requests: tokio::sync::mpsc::Sender<()>,
    pub received: tokio::sync::mpsc::Receiver<()>,
}

impl Reloading {
    pub fn new(reloader: reload::Reloader) -> Reloading {
        // A few requests in a row are one reload: the config is read when it is done.
        let (requests, received) = tokio::sync::mpsc::channel(1);
        Reloading { reloader, requests, received }
    }
}

/// Seqs an unclean stop may have published past its last mark: the mark is
/// written every second and made durable by the next flush (sled's own
/// every 5 s, or the engine's on each candle), and even a 10 ms demo of 28
/// series publishes a few thousand events a second.
const SEQ_GAP: u64 = 1_000_000;

/// Events the hub holds for a consumer that is behind, before it is resynced.
const HUB_CAPACITY: usize = 4096;

/// A started instance: every part runs but the engine, which `run` drives.
pub struct Instance {
    config: Config,
    data_dir: PathBuf,
    store: Arc<Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    notifier: NotifierHandle,
    liveness: crate::health::liveness::Liveness,
    server: Option<server::Handle>,
    /// Subscribed before any part started; handed to the front end once.
    feed: Option<(View, Subscription)>,
    tasks: Tasks,
    /// How to reread the config, and the sender commands use; the receiver
    /// is `run`'s (taken there).
    reload: Option<(reload::Reloader, tokio::sync::mpsc::Sender<()>)>,
    reload_requests: Option<tokio::sync::mpsc::Receiver<()>>,
    /// The alert of the last refused reload, resolved by the next good one.
    refused: Option<crate::event::Alert>,
    /// `[console]` as last reloaded, for a console in this process.
    console: tokio::sync::watch::Sender<crate::config::Console>,
}

/// The parts' tasks, each with the token that stops it.
struct Tasks {
    health: (tokio::task::JoinHandle<()>, CancellationToken),
    notifier: (tokio::task::JoinHandle<()>, CancellationToken),
    server: CancellationToken,
    bars: (tokio::task::JoinHandle<()>, CancellationToken),
    marker: (tokio::task::JoinHandle<()>, CancellationToken),
}

fn stoppable<F>(f: impl FnOnce(CancellationToken) -> F) -> (tokio::task::JoinHandle<()>, CancellationToken)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    (tokio::spawn(f(stop.clone())), stop)
}

/// The series the config names (a CSV's are known only as its files are read).
fn configured_series(config: &Config) -> Vec<SeriesKey> {
    let m = &config.market;
    m.instruments.iter().flat_map(|&i| m.timeframes.iter().map(move |&tf| SeriesKey::new(i, tf))).collect()
}

impl Instance {
    /// Opens the data directory and starts every part but the engine.
    /// Errors here (a locked data directory, a taken port) come before any
    /// screen opens.
    pub async fn start(config: &Config, data_dir: &Path, opts: Options) -> Result<Instance, InstanceError> {
        let store = Arc::new(open_store(data_dir)?);
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(new_hub(config, &store, &metrics)?);
        // Before anything is published: the front end misses nothing of this
        // run (the alerts still open from before a restart, the first queue status).
        let feed = Some(hub.subscribe_with_view());
        let bars = stoppable(|stop| keep::bars(hub.clone(), store.clone(), stop));
        // From here a crash leaves an unclean mark, and the next start skips ahead.
        store.mark_seq(hub.start(), false)?;
        let marker = stoppable(|stop| keep::seq_mark(hub.clone(), store.clone(), stop));

        let notifier = Notifier::new(config, store.clone(), hub.clone())?;
        let handle = notifier.handle();
        let csv = config.market.source == SourceKind::Csv;
        metrics.prepare(
            if csv {
                Vec::new()
            } else {
                configured_series(config).iter().map(|k| (k.instrument, k.timeframe)).collect()
            },
            config.notify.routes.iter().map(|r| r.name.as_str()),
        );
        let server_stop = CancellationToken::new();
        let mut control = Control::new(hub.clone(), Some(handle.clone())).with_store(store.clone());
        if let Some(r) = &opts.reload {
            control = control.with_reload(r.requests.clone());
        }
        let server = match opts.server {
            true => start_server(config, &hub, control, &metrics, &server_stop, opts.server_optional).await?,
            false => None,
        };
        // Started once the server listens: the queue status it publishes at
        // start is repeated only when it changes, and a client that missed
        // it would be shown no queue at all.
        let notifier_task = stoppable(|stop| notifier.run(stop));
        let liveness = crate::health::liveness::Liveness::new();
        let health = spawn_health(config, data_dir, &hub, &handle, &metrics, &store, &liveness);
        // Under systemd (Type=notify): the store is open and the port bound.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        Ok(Instance {
            config: config.clone(),
            data_dir: data_dir.to_path_buf(),
            store,
            hub,
            metrics,
            notifier: handle,
            liveness,
            server,
            feed,
            tasks: Tasks { health, notifier: notifier_task, server: server_stop, bars, marker },
            reload: opts.reload.as_ref().map(|r| (r.reloader.clone(), r.requests.clone())),
            reload_requests: opts.reload.map(|r| r.received),
            refused: None,
            console: tokio::sync::watch::Sender::new(config.console.clone()),
        })
    }

    /// The view so far and every event after it, subscribed before any part
    /// started. There is one: the first call takes it.
    pub fn take_feed(&mut self) -> Option<(View, Subscription)> {
        self.feed.take()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The command path for a front end in this process.
    pub fn control(&self) -> Control {
        let control = Control::new(self.hub.clone(), Some(self.notifier.clone())).with_store(self.store.clone());
        match &self.reload {
            Some((_, requests)) => control.with_reload(requests.clone()),
            None => control,
        }
    }

    /// `[console]` now and after each reload that changes it.
    pub fn console_settings(&self) -> tokio::sync::watch::Receiver<crate::config::Console> {
        self.console.subscribe()
    }

    /// Where the server listens, if it does.
    pub fn server_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(|s| s.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs the engine until `shutdown` (or until it fails), then stops
    /// every part in order. A feed that runs out (the end of a CSV) leaves
    /// the rest serving until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<EngineStats, InstanceError> {
        let parts = engine::Parts {
            liveness: self.liveness.clone(),
            store: self.store.clone(),
            hub: self.hub.clone(),
            notifier: Some(self.notifier.clone()),
            metrics: Some(self.metrics.clone()),
        };
        // The engine keeps the config it started with; a reload changes the rest.
        let engine_config = self.config.clone();
        let engine = engine::run(&engine_config, parts, shutdown.clone());
        tokio::pin!(engine);
        let mut requests = self.reload_requests.take();
        let result = loop {
            tokio::select! {
                r = &mut engine => break r,
                Some(()) = next_request(&mut requests) => self.reload().await,
            }
        };
        // The console, the server, the notifier's queue and the health checks all still serve.
        if let Ok(stats) = &result
            && stats.source_finished
        {
            tracing::info!("the market feed has no more candles; still running until stopped");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(()) = next_request(&mut requests) => self.reload().await,
                }
            }
        }
        let stopped = self.stop().await;
        // The engine's own error first: a refused write it met says more than
        // the same refusal met again while stopping.
        let stats = result?;
        stopped?;
        Ok(stats)
    }

    /// Reads the config again and takes up what may change while running
    /// (see `reload`). A config that does not validate is refused: its
    /// problems go to the log and an alert, and the running one stays.
    async fn reload(&mut self) {
        let Some(reloader) = self.reload.as_ref().map(|(r, _)| r.clone()) else { return };
        tracing::info!("reloading the config");
        let new = match reloader() {
            Ok(c) => c,
            Err(problems) => return self.refuse(problems).await,
        };
        let plan = reload::plan(&self.config, &new);
        for key in &plan.needs_restart {
            tracing::warn!(key, "{key} changed: it takes effect at the next start; the running value stays");
        }
        if plan.notify {
            let next = match Notifier::new(&plan.merged, self.store.clone(), self.hub.clone()) {
                Ok(n) => n,
                Err(e) => return self.refuse(e.to_string()).await,
            };
            // The old notifier finishes a request in flight; what it has not
            // sent is in the outbox, where the new one finds it.
            self.tasks.notifier.1.cancel();
            let grace = self.config.notify.timeout.0 + Duration::from_secs(1);
            if tokio::time::timeout(grace, &mut self.tasks.notifier.0).await.is_err() {
                tracing::warn!("the old notifier did not stop in time; it was left to finish");
            }
            self.notifier.replace(&next);
            self.metrics.prepare(Vec::new(), plan.merged.notify.routes.iter().map(|r| r.name.as_str()));
            self.tasks.notifier = stoppable(|stop| next.run(stop));
        }
        if plan.health {
            self.tasks.health.1.cancel();
            let _ = (&mut self.tasks.health.0).await;
            self.tasks.health = spawn_health(
                &plan.merged,
                &self.data_dir,
                &self.hub,
                &self.notifier,
                &self.metrics,
                &self.store,
                &self.liveness,
            );
        }
        if plan.log {
            match crate::logging::set_level(plan.merged.log.level.as_deref()) {
                Ok(crate::logging::LevelChange::KeptEnv(env)) => {
                    tracing::warn!(filter = %env, "log.level changed, but PIPWATCH_LOG/RUST_LOG set the filter and wins")
                }
                Ok(_) => {}
                Err(e) => return self.refuse(e).await,
            }
        }
        if plan.console {
            self.console.send_replace(plan.merged.console.clone());
        }
        if let Some(mut alert) = self.refused.take() {
            alert.state = crate::event::AlertState::Resolved;
            alert.time = crate::time::Ts::now();
            alert.message = "the config was reloaded".into();
            if let Err(e) = self.notifier.raise(alert).await {
                tracing::warn!(error = %e, "the refused reload's alert could not be resolved");
            }
        }
        let applied = plan.applied();
        self.config = plan.merged;
        let restart = plan.needs_restart.join(", ");
        match applied.is_empty() {
            true => {
                tracing::info!(needs_restart = %restart, "config reloaded: nothing that can change while running changed")
            }
            false => tracing::info!(applied = %applied.join(", "), needs_restart = %restart, "config reloaded"),
        }
    }

    async fn refuse(&mut self, problems: String) {
        tracing::error!(problems = %problems, "the config was not reloaded: it is not valid; the running one stays");
        let now = crate::time::Ts::now();
        let alert = crate::event::Alert {
            // One episode until a reload succeeds: a second refusal updates it.
            id: self.refused.as_ref().map_or_else(|| format!("config:{}", now.0), |a| a.id.clone()),
            check: "config".into(),
            severity: crate::types::Severity::Warning,
            state: crate::event::AlertState::Raised,
            title: "config reload refused".into(),
            message: format!("the running config stays: {problems}"),
            time: now,
        };
        self.refused = Some(alert.clone());
        if let Err(e) = self.notifier.raise(alert).await {
            tracing::warn!(error = %e, "the refused reload's alert could not be queued");
        }
    }

    async fn stop(self) -> Result<(), InstanceError> {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let Tasks { health, notifier, server: server_stop, bars, marker } = self.tasks;
        health.1.cancel();
        let _ = health.0.await;
        // The engine has stopped: the notifier finishes a request in flight
        // (what it has not sent stays in the outbox for the next start).
        notifier.1.cancel();
        let grace = self.config.notify.timeout.0 + Duration::from_secs(1);
        if tokio::time::timeout(grace, notifier.0).await.is_err() {
            tracing::warn!("the notifier did not stop in time; its queued messages are kept for the next start");
        }
        server_stop.cancel();
        if let Some(server) = self.server {
            let _ = tokio::time::timeout(Duration::from_secs(3), server.task).await;
        }
        marker.1.cancel();
        let _ = marker.0.await;
        bars.1.cancel();
        let _ = bars.0.await;
        let marked = self.store.mark_seq(self.hub.last(), true);
        let flushed = self.store.flush().await;
        marked?;
        flushed?;
        Ok(())
    }
}

fn open_store(data_dir: &Path) -> Result<Store, InstanceError> {
    let (store, report) = Store::open(data_dir)?;
    if let Some(aside) = &report.moved_aside {
        tracing::error!(dir = %data_dir.display(), moved_to = %aside.display(),
            "the database was corrupt: it was moved aside and a fresh one started (history will be fetched again)");
    }
    tracing::info!(dir = %data_dir.display(), new = report.created, "data directory open");
    Ok(store)
}

/// The hub, going on after the last instance's seqs, from the view it left,
/// with the metrics fed by every event it publishes.
fn new_hub(config: &Config, store: &Store, metrics: &Arc<Metrics>) -> Result<Hub, InstanceError> {
    // A CSV's series are its files'; the others' are the config's.
    let m = &config.market;
    let configured = |k: &SeriesKey| {
        m.source == SourceKind::Csv || (m.instruments.contains(&k.instrument) && m.timeframes.contains(&k.timeframe))
    };
    let restored = restore::restored_view(store, crate::view::SIGNALS_KEPT, configured).unwrap_or_else(|e| {
        // A view that cannot be read is not worth refusing to start over.
        tracing::warn!(error = %e, "the last view could not be read; the console starts empty");
        View::default()
    });
    Ok(Hub::starting_after(HUB_CAPACITY, store.seq_start(SEQ_GAP)?)
        .with_observer(metrics.observer())
        .with_restored(restored))
}

/// The next reload request; never, for an instance that does not reload.
async fn next_request(requests: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match requests {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn_health(
    config: &Config,
    data_dir: &Path,
    hub: &Arc<Hub>,
    notifier: &NotifierHandle,
    metrics: &Arc<Metrics>,
    store: &Arc<Store>,
    liveness: &crate::health::liveness::Liveness,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let ctx = crate::health::task::Ctx {
        health: config.health.clone(),
        data_dir: data_dir.to_path_buf(),
        hub: hub.clone(),
        notifier: Some(notifier.clone()),
        metrics: metrics.clone(),
        series: configured_series(config),
        pace: crate::health::task::Pace::from_config(config),
        store: Some(store.clone()),
        liveness: Some(liveness.clone()),
    };
    stoppable(|stop| crate::health::task::run(ctx, stop))
}

async fn start_server(
    config: &Config,
    hub: &Arc<Hub>,
    control: Control,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
    optional: bool,
) -> Result<Option<server::Handle>, InstanceError> {
    let options = server::Options::from_config(config);
    match server::start(options, hub.clone(), control, metrics.clone(), stop.clone()).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if optional => {
            tracing::warn!(error = %e, "running without the server");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

//! The console's two feeds: an instance in this process (`pipwatch`,
//! `pipwatch tui`) or a running one over its WebSocket (`pipwatch attach`).
//! Each fills a `tui::Session`; the console itself cannot tell them apart.

use std::path::Path;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{Command, Control};
use crate::hub::Received;
use crate::instance::{Instance, InstanceError};
use crate::tui::remote::{self, Incoming};
use crate::tui::{self, Session, TuiError};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Tui(#[from] TuiError),
    #[error(transparent)]
    Attach(#[from] crate::client::ClientError),
}

impl ConsoleError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            ConsoleError::Instance(e) => e.is_bad_input(),
            ConsoleError::Attach(crate::client::ClientError::Url(_)) => true,
            _ => false,
        }
    }
}

/// The console over an instance running in this process.
pub async fn local(
    config: &Config,
    data_dir: &Path,
    theme: Option<String>,
    reloader: Option<crate::instance::reload::Reloader>,
) -> Result<(), ConsoleError> {
    // Errors before the screen opens (a locked data directory, a taken port)
    // are printed normally.
    // First: a signal while the instance starts stops it cleanly.
    let shutdown = CancellationToken::new();
    crate::shutdown::on_signals(shutdown.clone(), None, crate::shutdown::Hangup::Stop);
    // The console's own instance reloads by its key or `{"op":"reload"}`, not
    // by SIGHUP: that is a closing terminal here, and it stops the console.
    let reload = reloader.map(crate::instance::Reloading::new);
    let opts = crate::instance::Options { server: true, server_optional: true, reload };
    let mut instance = Instance::start(config, data_dir, opts).await?;
    let Some((view, events)) = instance.take_feed() else {
        // A fresh instance always has its feed; nothing to show without it.
        return Ok(instance.run(shutdown).await.map(|_| ())?);
    };
    let server = instance.server_addr().map(|a| a.to_string());
    let control = instance.control();
    let settings = instance.console_settings();

    let (incoming, forward) = forward(events, 4096);
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let commands = tokio::spawn(carry_out(control, cmd_rx));
    let mut engine = tokio::spawn(instance.run(shutdown.clone()));
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let session = Session {
        label: tui::mode_label(config),
        view,
        incoming,
        commands: cmd_tx,
        server,
        link: None,
        settings: Some(settings),
        done: Some(Box::pin(async move {
            let _ = ended_rx.await;
        })),
    };
    // The console closes when the engine ends on its own (an error).
    let watch = async {
        let r = (&mut engine).await;
        let _ = ended_tx.send(());
        r
    };
    let console = tui::run(session, theme, &config.console, &shutdown);
    let (shown, ended) = tokio::join!(
        async {
            let r = console.await;
            shutdown.cancel();
            r
        },
        watch
    );
    forward.abort();
    commands.abort();
    let stats = ended.map_err(|e| InstanceError::Crashed(e.to_string()))?;
    shown?;
    stats?;
    Ok(())
}

/// The hub's events as the console's input, through a channel of
/// `capacity`: a console that falls behind makes the hub subscription lag,
/// and is then handed the hub's view (`Incoming::Snapshot`) and what follows.
pub fn forward(
    mut events: crate::hub::Subscription,
    capacity: usize,
) -> (mpsc::Receiver<Incoming>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity);
    let task = tokio::spawn(async move {
        while let Some(r) = events.recv().await {
            let m = match r {
                Received::Event(env) => Incoming::Event(env),
                Received::Resync { view, .. } => Incoming::Snapshot(view),
            };
            if tx.send(m).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

async fn carry_out(control: Control, mut commands: mpsc::Receiver<Command>) {
    while let Some(c) = commands.recv().await {
        if let Err(e) = control.apply(&c) {
            tracing::warn!(op = c.op(), error = %e, "a console command was refused");
        }
    }
}

/// `pipwatch attach`: the same console, fed by a running instance.
pub async fn attach(
    url: &str,
    token: Option<String>,
    theme: Option<String>,
    console: &crate::config::Console,
) -> Result<(), ConsoleError> {
    let url = &crate::client::normalize(url)?;
    let first = remote::connect(url, token.as_deref()).await?;
    let shutdown = CancellationToken::new();
    crate::shutdown::on_signals(shutdown.clone(), None, crate::shutdown::Hangup::Stop);
    let (tx, incoming) = mpsc::channel(4096);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let follower = tokio::spawn(remote::follow(first, url.to_string(), token, tx, cmd_rx, shutdown.clone()));
    let session = Session {
        label: tui::attach_label(url),
        view: Default::default(),
        incoming,
        commands: cmd_tx,
        server: None,
        link: Some(tui::app::LinkState::Connecting),
        // The keys are this terminal's own config, read at start; `r` reloads the server's.
        settings: None,
        done: None,
    };
    let result = tui::run(session, theme, console, &shutdown).await;
    shutdown.cancel();
    let _ = follower.await;
    Ok(result?)
}

//! The console: the engine, notifier, server and health task run in-process
//! exactly as in headless (without printing); the screen is a fold of the
//! hub's events, drawn at most once per frame and only when something changed.

pub mod app;
pub mod theme;
pub mod ui;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceKind};
use crate::headless::{self, HeadlessError};
use crate::time::Ts;
use app::{Action, App};
use theme::Theme;

/// At most this often: a burst of events becomes one frame.
const FRAME: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Engine(#[from] HeadlessError),
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("the engine stopped unexpectedly: {0}")]
    Crashed(String),
}

pub fn mode_label(c: &Config) -> String {
    match c.market.source {
        SourceKind::Demo => "DEMO".into(),
        SourceKind::Oanda => "LIVE OANDA".into(),
        SourceKind::Csv => "CSV".into(),
    }
}

pub async fn run(config: &Config, data_dir: &Path, theme: Option<String>) -> Result<(), TuiError> {
    let shutdown = CancellationToken::new();
    headless::stop_on_signals(shutdown.clone(), None);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let opts = headless::Options {
        run_for: None,
        candles: false,
        server: true,
        print: false,
        shutdown: Some(shutdown.clone()),
        ready: Some(ready_tx),
    };
    let (cfg, dir) = (config.clone(), data_dir.to_path_buf());
    let mut engine = tokio::spawn(async move { headless::run(&cfg, &dir, opts).await });
    // Errors before the screen opens (a locked data directory, a taken port)
    // are printed normally.
    let ready = match ready_rx.await {
        Ok(r) => r,
        Err(_) => {
            return match engine.await {
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(_)) => Ok(()),
                Err(e) => Err(TuiError::Crashed(e.to_string())),
            };
        }
    };
    let mut rx = ready.hub.subscribe();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let (theme, warning) = Theme::choose(theme.as_deref(), no_color);
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    let mut app = App::new(mode_label(config), theme, Ts::now());
    app.notice = warning;
    app.server = ready.server.map(|a| a.to_string());

    // A panic anywhere (also in a spawned task) must not leave the terminal
    // raw: ratatui's hook restores it, then ours ends the process.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        std::process::exit(1);
    }));
    let mut terminal = ratatui::try_init()?;
    let result = ui_loop(&mut terminal, &mut app, &mut rx, &ready.notifier, &shutdown, &mut engine).await;
    ratatui::restore();
    shutdown.cancel();
    let engine_result = if engine.is_finished() { None } else { Some(engine.await) };
    result?;
    match engine_result {
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(TuiError::Crashed(e.to_string())),
        _ => Ok(()),
    }
}

async fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::event::Envelope>>,
    notifier: &crate::notify::NotifierHandle,
    shutdown: &CancellationToken,
    engine: &mut tokio::task::JoinHandle<Result<crate::live::LiveStats, HeadlessError>>,
) -> Result<(), TuiError> {
    let mut keys = crossterm::event::EventStream::new();
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    loop {
        if dirty && last_draw.elapsed() >= FRAME {
            terminal.draw(|f| ui::draw(f, app))?;
            dirty = false;
            last_draw = Instant::now();
        }
        let next_frame = tokio::time::Instant::from_std(last_draw + FRAME);
        tokio::select! {
            r = rx.recv() => match r {
                Ok(env) => {
                    app.apply(&env);
                    // Drain the burst before drawing once.
                    for _ in 0..10_000 {
                        match rx.try_recv() {
                            Ok(env) => app.apply(&env),
                            Err(TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                    dirty = true;
                }
                Err(RecvError::Lagged(_)) => dirty = true,
                Err(RecvError::Closed) => return Ok(()),
            },
            ev = keys.next() => match ev {
                Some(Ok(crossterm::event::Event::Key(k))) if k.kind == crossterm::event::KeyEventKind::Press => {
                    let ctrl = k.modifiers.contains(crossterm::event::KeyModifiers::CONTROL);
                    match app.key(k.code, ctrl) {
                        Action::Quit => return Ok(()),
                        Action::Redraw => dirty = true,
                        Action::Pause(p) => {
                            notifier.set_paused(p);
                            dirty = true;
                        }
                        Action::None => {}
                    }
                }
                Some(Ok(crossterm::event::Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            _ = clock.tick() => {
                app.now = Ts::now();
                dirty = true;
            }
            _ = tokio::time::sleep_until(next_frame), if dirty => {}
            _ = shutdown.cancelled() => return Ok(()),
            r = &mut *engine => {
                return match r {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(TuiError::Crashed(e.to_string())),
                };
            }
        }
    }
}

//! The console: a fold of events drawn at most once per frame and only when
//! something changed. It is handed a [`Session`] (a feed of events and a
//! command sender) and never sees what fills it: an instance in this process
//! or a running one over its WebSocket (see `crate::console`).

pub mod app;
pub mod candles;
pub mod grid;
pub mod remote;
pub mod theme;
pub mod ui;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceKind};
use crate::control::Command;
use crate::time::Ts;
use app::{Action, App};
use remote::Incoming;
use theme::Theme;

/// Data changes are drawn at most this often: a burst of events becomes one
/// frame. Keys are drawn at once.
const FRAME: Duration = Duration::from_millis(100);
/// At most this often when only live quotes changed.
const QUOTE_FRAME: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// "ATTACHED 10.0.0.5:8787": the scheme and path of the usual URL add
/// nothing to a header that is short of room; `wss://` is kept, as it says
/// the link is encrypted.
pub fn attach_label(url: &str) -> String {
    let rest = url.strip_prefix("ws://").unwrap_or(url);
    format!("ATTACHED {}", rest.strip_suffix("/ws").unwrap_or(rest))
}

pub fn mode_label(c: &Config) -> String {
    match c.market.source {
        SourceKind::Demo => match demo_speed(c) {
            Some(x) => format!("DEMO ×{}", thousands(x)),
            None => "DEMO".into(),
        },
        SourceKind::Oanda => "LIVE OANDA".into(),
        SourceKind::Csv => "CSV".into(),
    }
}

/// How many times faster than real time the demo's candles come: one candle
/// of the finest timeframe per `market.demo.candle_every` (H4 every second:
/// 14,400). None when it is not paced.
pub fn demo_speed(c: &Config) -> Option<u64> {
    let finest = c.market.timeframes.iter().map(|t| t.seconds()).min()?;
    let every = c.market.demo.candle_every.0.as_secs_f64();
    (every > 0.0).then(|| (finest as f64 / every).round() as u64)
}

/// `14400` as `14,400`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Resolves when what feeds the console has stopped for good (the
/// in-process engine); the console then closes.
pub type Done = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Everything a console needs, from either side: where its events come
/// from and where its commands go. An in-process console and an attached
/// one differ only in who fills these.
pub struct Session {
    /// The header's mode: "DEMO", "ATTACHED host:port"...
    pub label: String,
    /// Where to start from until the first events arrive.
    pub view: crate::view::View,
    pub incoming: tokio::sync::mpsc::Receiver<Incoming>,
    pub commands: tokio::sync::mpsc::Sender<Command>,
    /// Where this instance's server listens, for the footer.
    pub server: Option<String>,
    /// The link's state at start (attached consoles).
    pub link: Option<app::LinkState>,
    /// `[console]` after each reload of the instance's config.
    pub settings: Option<tokio::sync::watch::Receiver<crate::config::Console>>,
    pub done: Option<Done>,
}

/// Runs the console on the terminal until the user quits, `shutdown`, or
/// `session.done`.
pub async fn run(
    mut session: Session,
    theme: Option<String>,
    console: &crate::config::Console,
    shutdown: &CancellationToken,
) -> Result<(), TuiError> {
    // `--theme` is for this session: a reload does not undo it.
    let fixed_theme = theme.is_some();
    let (theme, warning) = choose_theme(theme.or_else(|| Some(console.theme.clone())));
    let mut app = App::new(session.label.clone(), theme, Ts::now());
    app.keys = app::KeyMap::from_config(&console.keys);
    if let Some(w) = warning {
        app.note(w);
    }
    app.server = session.server.take();
    app.view = std::mem::take(&mut session.view);
    if let Some(link) = session.link {
        app.set_link(link, None);
    }
    let mut settings = Settings { updates: session.settings.take(), fixed_theme };
    with_terminal(&mut app, &mut session.incoming, &session.commands, &mut settings, shutdown, session.done.take())
        .await
}

/// Where reloaded `[console]` settings come from.
struct Settings {
    updates: Option<tokio::sync::watch::Receiver<crate::config::Console>>,
    fixed_theme: bool,
}

impl Settings {
    async fn changed(&mut self) -> Option<crate::config::Console> {
        match self.updates.as_mut() {
            Some(rx) => match rx.changed().await {
                Ok(()) => Some(rx.borrow_and_update().clone()),
                Err(_) => {
                    self.updates = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }
}

/// Takes up a reloaded `[console]`: the keys, and the theme unless `--theme` chose one.
fn apply_settings(app: &mut App, console: &crate::config::Console, fixed_theme: bool) {
    app.keys = app::KeyMap::from_config(&console.keys);
    if !fixed_theme {
        let (theme, warning) = choose_theme(Some(console.theme.clone()));
        app.theme = theme;
        if let Some(w) = warning {
            app.note(w);
            return;
        }
    }
    app.note("console settings reloaded (keys, theme)".to_string());
}

fn choose_theme(theme: Option<String>) -> (Theme, Option<String>) {
    let (theme, warning) = Theme::choose(theme.as_deref(), crate::logging::no_color());
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    (theme, warning)
}

async fn with_terminal(
    app: &mut App,
    incoming: &mut tokio::sync::mpsc::Receiver<Incoming>,
    commands: &tokio::sync::mpsc::Sender<Command>,
    settings: &mut Settings,
    shutdown: &CancellationToken,
    done: Option<Done>,
) -> Result<(), TuiError> {
    // A panic anywhere (also in a spawned task) must not leave the terminal
    // raw: ratatui's hook restores it, then ours ends the process.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        mouse(false);
        previous(info);
        std::process::exit(1);
    }));
    let mut terminal = ratatui::try_init()?;
    mouse(true);
    let result = ui_loop(&mut terminal, app, incoming, commands, settings, shutdown, done).await;
    mouse(false);
    ratatui::restore();
    result
}

async fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    incoming: &mut tokio::sync::mpsc::Receiver<Incoming>,
    commands: &tokio::sync::mpsc::Sender<Command>,
    settings: &mut Settings,
    shutdown: &CancellationToken,
    mut done: Option<Done>,
) -> Result<(), TuiError> {
    let mut keys = crossterm::event::EventStream::new();
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let mut dirty = true;
    // Only live quotes changed: they tick several times a second per pair,
    // so they are drawn at a calmer pace than anything a user acts on.
    let mut quotes_only = false;
    // A key or a resize: the user is waiting for this frame.
    let mut urgent = false;
    let mut last_draw = Instant::now() - FRAME;
    let mut job = JobSignals::new();
    loop {
        let budget = if urgent {
            Duration::ZERO
        } else if quotes_only {
            QUOTE_FRAME
        } else {
            FRAME
        };
        if dirty && last_draw.elapsed() >= budget {
            if app.logs {
                tui_logger::move_events();
            }
            terminal.draw(|f| ui::draw(f, app))?;
            dirty = false;
            quotes_only = false;
            urgent = false;
            last_draw = Instant::now();
        }
        let next_frame = tokio::time::Instant::from_std(last_draw + budget);
        let feed_done = async {
            match done.as_mut() {
                Some(d) => d.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = incoming.recv() => {
                let Some(m) = m else { return Ok(()) };
                let mut only_quotes = take(app, m);
                // Drain the burst before drawing once.
                for _ in 0..10_000 {
                    match incoming.try_recv() {
                        Ok(m) => only_quotes &= take(app, m),
                        Err(_) => break,
                    }
                }
                quotes_only = if dirty { quotes_only && only_quotes } else { only_quotes };
                dirty = true;
            }
            ev = keys.next() => match ev {
                Some(Ok(crossterm::event::Event::Key(k))) if k.kind == crossterm::event::KeyEventKind::Press => {
                    match on_key(terminal, app, k, commands).await? {
                        Flow::Quit => return Ok(()),
                        Flow::Draw { now } => {
                            dirty = true;
                            urgent |= now;
                        }
                        Flow::Nothing => {}
                    }
                }
                Some(Ok(crossterm::event::Event::Mouse(m))) => {
                    if app.mouse(m.kind, m.column, m.row) != Action::None {
                        dirty = true;
                        urgent = true;
                    }
                }
                Some(Ok(crossterm::event::Event::Resize(..))) => {
                    dirty = true;
                    urgent = true;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            _ = clock.tick() => {
                app.tick(Ts::now());
                // tui-logger's hot buffer holds 1000 records: empty it in time.
                tui_logger::move_events();
                dirty = true;
            }
            sig = job.next() => {
                match sig {
                    // From outside (`kill -TSTP`): as for Ctrl-Z.
                    JobSignal::Stop => suspend(terminal)?,
                    // Continued after a stop that gave us no chance to leave
                    // the screen (SIGSTOP), or after our own suspend: taking
                    // the screen again is harmless either way.
                    JobSignal::Continue => take_screen(terminal)?,
                }
                dirty = true;
                urgent = true;
            }
            Some(console) = settings.changed() => {
                apply_settings(app, &console, settings.fixed_theme);
                dirty = true;
            }
            _ = tokio::time::sleep_until(next_frame), if dirty => {}
            _ = shutdown.cancelled() => return Ok(()),
            _ = feed_done => return Ok(()),
        }
    }
}

/// What the loop does after a key.
enum Flow {
    Quit,
    /// Draw again; `now`: the user is waiting for this frame.
    Draw {
        now: bool,
    },
    Nothing,
}

async fn on_key(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    k: crossterm::event::KeyEvent,
    commands: &tokio::sync::mpsc::Sender<Command>,
) -> Result<Flow, TuiError> {
    let ctrl = k.modifiers.contains(crossterm::event::KeyModifiers::CONTROL);
    Ok(match app.key(k.code, ctrl) {
        Action::Quit => Flow::Quit,
        Action::Redraw => Flow::Draw { now: true },
        // Not queued for later: a pause or an ack that lands minutes after
        // the key would surprise.
        Action::Pause(_) | Action::Ack(_) | Action::Reload if app.link_down() => {
            app.note(app::NOT_CONNECTED);
            Flow::Draw { now: true }
        }
        Action::Pause(p) => {
            let _ = commands.send(if p { Command::Pause } else { Command::Resume }).await;
            Flow::Draw { now: true }
        }
        Action::Reload => {
            let _ = commands.send(Command::Reload).await;
            Flow::Draw { now: true }
        }
        Action::Ack(alerts) => {
            for a in alerts {
                let _ = commands.send(Command::Ack { alert: a.id }).await;
            }
            Flow::Nothing
        }
        Action::Suspend => {
            suspend(terminal)?;
            Flow::Draw { now: true }
        }
        Action::None => Flow::Nothing,
    })
}

/// Ctrl-Z, or SIGTSTP from outside: do what the shell expects: give the
/// terminal back, stop this process, and take the screen again on `fg`.
fn suspend(terminal: &mut ratatui::DefaultTerminal) -> Result<(), TuiError> {
    mouse(false);
    ratatui::restore();
    #[cfg(unix)]
    {
        // SIGTSTP is handled here (to get this far), so only SIGSTOP stops
        // us, until SIGCONT. A failure leaves us running, on the screen taken
        // again below: nothing is lost.
        if let Err(e) = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP) {
            tracing::warn!(error = %e, "could not stop for Ctrl-Z");
        }
    }
    take_screen(terminal)
}

fn take_screen(terminal: &mut ratatui::DefaultTerminal) -> Result<(), TuiError> {
    use crossterm::terminal::{Clear, ClearType, EnterAlternateScreen, enable_raw_mode};
    enable_raw_mode()?;
    crossterm::execute!(std::io::stdout(), EnterAlternateScreen, Clear(ClearType::All))?;
    mouse(true);
    // Not `terminal.clear()`: it asks the terminal where the cursor is, and
    // the answer can be lost to the key reader right after SIGCONT. An empty
    // frame makes ratatui forget what the screen showed, so the next frame
    // is drawn whole.
    terminal.draw(|_| {})?;
    Ok(())
}

/// Mouse clicks and the wheel reported (true), or given back to the terminal.
/// Only presses and the wheel (mode 1000, SGR coordinates), not motion
/// (crossterm's `EnableMouseCapture` asks for every move: a stream of events
/// while the pointer crosses the screen). Terminals keep their own text
/// selection on Shift-drag.
fn mouse(on: bool) {
    use std::io::Write;
    let codes: &[u8] = if on { b"\x1b[?1000h\x1b[?1006h" } else { b"\x1b[?1006l\x1b[?1000l" };
    let mut out = std::io::stdout();
    // The terminal may be gone (a closed SSH session): nothing to give back then.
    let _ = out.write_all(codes).and_then(|()| out.flush());
}

enum JobSignal {
    Stop,
    Continue,
}

/// SIGTSTP and SIGCONT as a stream. Where they cannot be listened to (not
/// unix, or the registration failed), nothing ever arrives and the
/// defaults apply.
struct JobSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl JobSignals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let stop = signal(SignalKind::from_raw(libc::SIGTSTP));
            let cont = signal(SignalKind::from_raw(libc::SIGCONT));
            match (stop, cont) {
                (Ok(s), Ok(c)) => JobSignals { signals: Some((s, c)) },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen to SIGTSTP/SIGCONT: `kill -TSTP` will leave the screen as it is");
                    JobSignals { signals: None }
                }
            }
        }
        #[cfg(not(unix))]
        JobSignals {}
    }

    async fn next(&mut self) -> JobSignal {
        #[cfg(unix)]
        if let Some((stop, cont)) = &mut self.signals {
            return tokio::select! {
                Some(()) = stop.recv() => JobSignal::Stop,
                Some(()) = cont.recv() => JobSignal::Continue,
                else => std::future::pending().await,
            };
        }
        std::future::pending().await
    }
}

/// Folds one input into the app; true if it was only a live quote.
fn take(app: &mut App, m: Incoming) -> bool {
    match m {
        Incoming::Event(env) => {
            app.apply(&env);
            matches!(env.event, crate::event::Event::Quote(_))
        }
        Incoming::Snapshot(v) => {
            app.view = *v;
            false
        }
        Incoming::Link(state, reason) => {
            app.set_link(state, reason);
            false
        }
        Incoming::Notice(n) => {
            app.note(n);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_label_says_how_fast_its_time_runs() {
        let mut c = Config::default();
        assert_eq!(mode_label(&c), "DEMO ×14,400", "the default: one H4 candle a second");
        c.market.timeframes = vec![crate::types::Timeframe::H4, crate::types::Timeframe::M15];
        c.market.demo.candle_every = crate::config::Dur(std::time::Duration::from_millis(100));
        assert_eq!(mode_label(&c), "DEMO ×9,000", "the finest timeframe sets the pace");
        c.market.demo.candle_every = crate::config::Dur(std::time::Duration::ZERO);
        assert_eq!(mode_label(&c), "DEMO");
        assert_eq!(
            (thousands(7), thousands(1000), thousands(1234567)),
            ("7".into(), "1,000".into(), "1,234,567".into())
        );
    }
}

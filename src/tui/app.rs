//! The console's state: the view (a fold of events, the same one the server
//! keeps) plus what the user did (focus, selection, overlays, theme).

use crate::event::Envelope;
use crate::time::Ts;
use crate::view::View;

use super::theme::{self, Theme};

/// Which signals the feed shows (`f` cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedFilter {
    All,
    Pair(crate::types::Instrument),
    Side(crate::types::Side),
}

impl FeedFilter {
    pub fn passes(&self, s: &crate::event::Signal) -> bool {
        match self {
            FeedFilter::All => true,
            FeedFilter::Pair(i) => s.instrument == *i,
            FeedFilter::Side(side) => s.side == *side,
        }
    }

    pub fn label(&self) -> Option<String> {
        match self {
            FeedFilter::All => None,
            FeedFilter::Pair(i) => Some(i.to_string()),
            FeedFilter::Side(s) => Some(format!("{s} only")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Pairs,
    Signals,
}

/// An attached console's connection to the instance it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub state: LinkState,
    /// Why the link is down, as the connection reported it.
    pub reason: Option<String>,
    /// When the link entered this state: while it is down, what the screen
    /// shows is the instance as it was then.
    pub since: Ts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    /// Connected, but the server takes no commands from this client.
    ReadOnly,
    Reconnecting,
    /// Given up: the console cannot reach the instance again.
    Failed,
}

impl LinkState {
    pub fn label(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::ReadOnly => "read-only",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Failed => "link failed",
        }
    }

    pub fn is_down(self) -> bool {
        matches!(self, LinkState::Reconnecting | LinkState::Failed)
    }
}

/// The footer's answer to a command given while the link is down.
pub const NOT_CONNECTED: &str = "not connected: nothing was sent; try again once the link is back";

/// The footer's answer to `p` on an instance with no notification routes.
pub const NO_ROUTES: &str = "nothing to pause: no notification routes ([[notify.routes]] in the config)";

/// The footer's answer to `a` when no alert is active.
pub const NO_ALERTS: &str = "no alerts to acknowledge";

/// How long a footer note stays: long enough to read, short enough that the
/// footer's own contents (the theme's name) come back. A key clears it sooner.
pub const NOTICE_SECS: i64 = 5;

/// What a key did, for the loop to act on.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    Redraw,
    Quit,
    /// Pause (true) or resume notifications.
    Pause(bool),
    /// Acknowledge these alerts.
    Ack(Vec<crate::event::Alert>),
    /// Ctrl-Z: give the terminal back and stop until `fg`.
    Suspend,
    /// Re-read the instance's config.
    Reload,
}

pub struct App {
    pub view: View,
    /// DEMO, LIVE OANDA, CSV.
    pub mode: String,
    pub focus: Focus,
    pub selected: usize,
    pub signal_selected: usize,
    pub help: bool,
    /// The selected pair's detail view (Enter) instead of the dashboard.
    pub detail: bool,
    pub filter: FeedFilter,
    /// The log panel (`l`).
    pub logs: bool,
    pub theme: Theme,
    pub now: Ts,
    /// Where the server listens, shown in the footer.
    pub server: Option<String>,
    /// A message for the footer (e.g. a theme that failed to load); see
    /// [`App::note`] and [`App::tick`] for how long it stays.
    pub notice: Option<String>,
    /// When `notice` was first on screen (stamped at the next tick when it
    /// was set directly).
    pub notice_since: Option<Ts>,
    /// Attached: the connection to the instance on screen.
    pub link: Option<Link>,
    pub keys: KeyMap,
    /// (CPU %, network bytes/s) of recent health samples, oldest first.
    pub history: std::collections::VecDeque<(f32, u64)>,
    /// How the candle chart is zoomed and scrolled.
    pub chart: ChartView,
    /// `/`: the text the pairs and the signal feed are filtered by (every
    /// word must match), and whether it is being typed.
    pub search: String,
    pub typing: bool,
    /// Lines the help overlay is scrolled down (on a terminal too short for all of it).
    pub help_scroll: u16,
    /// Where the last frame put the panels, for mouse clicks and the wheel.
    pub areas: std::cell::Cell<Areas>,
}

/// The screen places a click or a wheel turn can land on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Areas {
    /// The pairs table's rows, and the index (among the pairs shown) of its first.
    pub pairs: ratatui::layout::Rect,
    pub pairs_first: usize,
    pub signals: ratatui::layout::Rect,
    pub signals_first: usize,
    pub chart: ratatui::layout::Rect,
    /// Candles the chart had room for: it scrolls back no further than its oldest.
    pub chart_capacity: usize,
}

/// What the `/` filter matches a pair against: "EUR_USD EURUSD H4".
fn pair_text(p: &crate::view::PairView) -> String {
    format!("{} {} {}", p.instrument, p.instrument.as_str().replace('_', ""), p.timeframe)
}

/// Whether `text` has every word of `query`, ignoring case.
pub fn matches(query: &str, text: &str) -> bool {
    let text = text.to_lowercase();
    query.split_whitespace().all(|w| text.contains(&w.to_lowercase()))
}

/// The candle chart's zoom (columns per candle) and how far back it is scrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChartView {
    pub zoom: u16,
    /// Candles back from the newest.
    pub offset: usize,
}

impl Default for ChartView {
    fn default() -> Self {
        ChartView { zoom: 1, offset: 0 }
    }
}

/// Candles one press of a scroll key moves the chart.
pub const SCROLL_STEP: usize = 8;

/// Health samples kept for the sparklines.
pub const HISTORY: usize = 120;

/// The configurable keys, as characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMap {
    pub quit: char,
    pub help: char,
    pub pause: char,
    pub ack: char,
    pub filter: char,
    pub logs: char,
    pub theme: char,
    pub reload: char,
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap::from_config(&crate::config::Keys::default())
    }
}

impl KeyMap {
    /// Keys were validated at load (one character each).
    pub fn from_config(k: &crate::config::Keys) -> KeyMap {
        let c = |s: &str, d: char| s.chars().next().unwrap_or(d);
        KeyMap {
            quit: c(&k.quit, 'q'),
            help: c(&k.help, '?'),
            pause: c(&k.pause, 'p'),
            ack: c(&k.ack, 'a'),
            filter: c(&k.filter, 'f'),
            logs: c(&k.logs, 'l'),
            theme: c(&k.theme, 't'),
            reload: c(&k.reload, 'r'),
        }
    }

    /// (keys, what they do): the help overlay is drawn from this.
    pub fn help(&self) -> Vec<(String, &'static str)> {
        vec![
            (self.quit.to_string(), "quit"),
            (self.help.to_string(), "this help (Esc closes)"),
            ("Tab / Shift-Tab".into(), "move focus: pairs, signals"),
            ("↑ ↓ / j k".into(), "select a row"),
            ("Enter".into(), "the selected pair's chart and values"),
            (self.filter.to_string(), "filter signals: pair/buys/sells/all"),
            (self.pause.to_string(), "pause or resume notifications"),
            (self.ack.to_string(), "acknowledge the active alerts"),
            (self.theme.to_string(), "next colour theme"),
            (self.reload.to_string(), "reload the config (routes, keys, log level)"),
            ("/".into(), "filter pairs and signals by text (Esc clears)"),
            ("+ -  ← → h l".into(), "chart: zoom, scroll (l in the detail view)"),
            ("Home End  [ ]".into(), "chart: oldest, newest; the next timeframe"),
            ("Esc".into(), "close an overlay or a detail view"),
            ("Ctrl-C / Ctrl-Z".into(), "quit / suspend (fg resumes)"),
            (self.logs.to_string(), "log panel (also in pipwatch.log)"),
        ]
    }
}

impl App {
    pub fn new(mode: String, theme: Theme, now: Ts) -> App {
        App {
            view: View::default(),
            mode,
            focus: Focus::Pairs,
            selected: 0,
            signal_selected: 0,
            help: false,
            detail: false,
            filter: FeedFilter::All,
            logs: false,
            theme,
            now,
            server: None,
            notice: None,
            notice_since: None,
            link: None,
            keys: KeyMap::default(),
            history: std::collections::VecDeque::new(),
            chart: ChartView::default(),
            search: String::new(),
            typing: false,
            help_scroll: 0,
            areas: Default::default(),
        }
    }

    /// The pairs the panel shows: all, or those the `/` filter matches.
    pub fn pairs_shown(&self) -> impl Iterator<Item = &crate::view::PairView> {
        self.view.pairs.iter().filter(|p| self.search.is_empty() || matches(&self.search, &pair_text(p)))
    }

    /// The pair selected in the pairs panel.
    pub fn selected_pair(&self) -> Option<&crate::view::PairView> {
        self.pairs_shown().nth(self.selected)
    }

    /// Whether the feed shows `v`: its `f` filter, then the `/` text
    /// (the pair, the side, the trade's outcome).
    pub fn signal_shown(&self, v: &crate::view::SignalView) -> bool {
        if !self.filter.passes(&v.signal) {
            return false;
        }
        if self.search.is_empty() {
            return true;
        }
        let s = &v.signal;
        let outcome = v.outcome.as_ref().map_or("open", |o| o.exit_reason.as_str());
        let text =
            format!("{} {} {} {} {outcome}", s.instrument, s.instrument.as_str().replace('_', ""), s.timeframe, s.side);
        matches(&self.search, &text)
    }

    /// Scrolls the chart `by` candles back (negative: forward), within its bars.
    fn scroll(&mut self, by: isize) {
        let len = self.selected_pair().map_or(0, |p| p.bars.len());
        let max = len.saturating_sub(self.areas.get().chart_capacity.max(1));
        self.chart.offset = (self.chart.offset as isize + by).clamp(0, max as isize) as usize;
    }

    /// Selects the same instrument's next (`by` 1) or previous timeframe.
    fn switch_timeframe(&mut self, by: isize) {
        let Some(p) = self.selected_pair() else { return };
        let shown: Vec<&crate::view::PairView> = self.pairs_shown().collect();
        let same: Vec<usize> = (0..shown.len()).filter(|&n| shown[n].instrument == p.instrument).collect();
        let Some(at) = same.iter().position(|&n| n == self.selected) else { return };
        if same.len() < 2 {
            self.note(format!("{} runs one timeframe ({})", p.instrument, p.timeframe));
            return;
        }
        self.selected = same[(at as isize + by).rem_euclid(same.len() as isize) as usize];
    }

    pub fn apply(&mut self, env: &Envelope) {
        if let crate::event::Event::Health(h) = &env.event {
            // Recent samples for the health sparklines (one per sample).
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((h.system.cpu, h.system.net_rx_per_s + h.system.net_tx_per_s));
        }
        self.view.apply(env);
    }

    /// Shows `text` in the footer for [`NOTICE_SECS`] or until the next key.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notice = Some(text.into());
        self.notice_since = Some(self.now);
    }

    /// The clock moved on: a note that has been read long enough goes.
    pub fn tick(&mut self, now: Ts) {
        self.now = now;
        match (&self.notice, self.notice_since) {
            (None, _) => self.notice_since = None,
            (Some(_), None) => self.notice_since = Some(now),
            (Some(_), Some(since)) if now.0 - since.0 >= NOTICE_SECS => {
                self.notice = None;
                self.notice_since = None;
            }
            (Some(_), Some(_)) => {}
        }
    }

    /// The signal selected in the feed (as filtered), if any.
    pub fn selected_signal(&self) -> Option<&crate::event::Signal> {
        self.view.signals.iter().filter(|v| self.signal_shown(v)).map(|v| &v.signal).nth(self.signal_selected)
    }

    /// A new state of the link to the instance. A link that stays down
    /// keeps the time it went down; every attempt brings a new reason.
    pub fn set_link(&mut self, state: LinkState, reason: Option<String>) {
        let since = match &self.link {
            Some(l) if l.state.is_down() == state.is_down() && (state.is_down() || l.state == state) => l.since,
            _ => self.now,
        };
        if !state.is_down() && self.notice.as_deref() == Some(NOT_CONNECTED) {
            self.notice = None;
        }
        self.link = Some(Link { state, reason, since });
    }

    /// Attached, and the instance cannot be reached: the screen is as it was.
    pub fn link_down(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.state.is_down())
    }

    pub fn paused(&self) -> bool {
        self.view.queue.as_ref().is_some_and(|q| q.paused)
    }

    pub fn key(&mut self, code: crossterm::event::KeyCode, ctrl: bool) -> Action {
        let keys = self.keys.clone();
        // A key means the note was seen: it gives the footer back (a key
        // that has news of its own sets a new one below).
        let noted = self.notice.take().is_some();
        self.notice_since = None;
        let action = self.act(code, ctrl, &keys);
        match action {
            Action::None if noted => Action::Redraw,
            action => action,
        }
    }

    fn act(&mut self, code: crossterm::event::KeyCode, ctrl: bool, keys: &KeyMap) -> Action {
        use crossterm::event::KeyCode as K;
        if self.typing && !ctrl {
            // Typing the `/` filter: every key is text but these.
            match code {
                K::Char(c) => self.search.push(c),
                K::Backspace => {
                    self.search.pop();
                }
                K::Enter => self.typing = false,
                K::Esc => {
                    self.search.clear();
                    self.typing = false;
                }
                _ => return Action::None,
            }
            // The rows shown change: selections start again at the top.
            self.selected = 0;
            self.signal_selected = 0;
            return Action::Redraw;
        }
        match code {
            K::Char('c') if ctrl => Action::Quit,
            K::Char('z') if ctrl => Action::Suspend,
            K::Char(c) if c == keys.quit => Action::Quit,
            K::Char(c) if c == keys.reload => {
                self.note("reloading the config…");
                Action::Reload
            }
            K::Char(c) if c == keys.help => {
                self.help = !self.help;
                self.help_scroll = 0;
                Action::Redraw
            }
            // The help overlay open: j/k scroll it where it does not fit.
            K::Down | K::Char('j') if self.help => {
                self.help_scroll = self.help_scroll.saturating_add(1);
                Action::Redraw
            }
            K::Up | K::Char('k') if self.help => {
                self.help_scroll = self.help_scroll.saturating_sub(1);
                Action::Redraw
            }
            K::Esc => {
                if self.help {
                    self.help = false;
                } else if !self.search.is_empty() && !self.detail {
                    self.search.clear();
                    self.selected = 0;
                    self.signal_selected = 0;
                } else {
                    self.detail = false;
                }
                Action::Redraw
            }
            K::Char('/') => {
                self.typing = true;
                Action::Redraw
            }
            K::Enter if self.focus == Focus::Pairs && self.selected_pair().is_some() => {
                self.detail = true;
                Action::Redraw
            }
            K::Tab | K::BackTab => {
                self.focus = if self.focus == Focus::Pairs { Focus::Signals } else { Focus::Pairs };
                Action::Redraw
            }
            K::Down | K::Char('j') => {
                self.step(1);
                Action::Redraw
            }
            K::Up | K::Char('k') => {
                self.step(-1);
                Action::Redraw
            }
            // Without routes there is no queue to pause, and a pause would
            // show nowhere: said rather than seeming to do nothing.
            K::Char(c) if c == keys.pause && self.view.queue.is_none() => {
                self.note(NO_ROUTES);
                Action::Redraw
            }
            K::Char(c) if c == keys.pause => Action::Pause(!self.paused()),
            K::Char(c) if c == keys.ack => {
                let new: Vec<_> =
                    self.view.alerts.iter().filter(|a| a.state == crate::event::AlertState::Raised).cloned().collect();
                if !new.is_empty() {
                    return Action::Ack(new);
                }
                // Said, or the key would seem to do nothing.
                match self.view.alerts.len() {
                    0 => self.note(NO_ALERTS),
                    n => self.note(format!("no new alerts: the {n} active already acknowledged")),
                }
                Action::Redraw
            }
            K::Char(c) if c == keys.logs && !self.detail => {
                self.logs = !self.logs;
                Action::Redraw
            }
            K::Char(c) if c == keys.filter => {
                // The pair is the one selected in the focused panel: the
                // Pairs row, or the signal's pair when the feed has focus.
                let pair = match self.focus {
                    Focus::Pairs => self.selected_pair().map(|p| p.instrument),
                    Focus::Signals => self.selected_signal().map(|s| s.instrument),
                };
                self.filter = match self.filter {
                    FeedFilter::All => match pair {
                        Some(i) => FeedFilter::Pair(i),
                        None => FeedFilter::Side(crate::types::Side::Buy),
                    },
                    FeedFilter::Pair(_) => FeedFilter::Side(crate::types::Side::Buy),
                    FeedFilter::Side(crate::types::Side::Buy) => FeedFilter::Side(crate::types::Side::Sell),
                    FeedFilter::Side(crate::types::Side::Sell) => FeedFilter::All,
                };
                self.signal_selected = 0;
                Action::Redraw
            }
            K::Char(c) if c == keys.theme => {
                let names = theme::names();
                let at = names.iter().position(|n| *n == self.theme.name).unwrap_or(0);
                let next = names[(at + 1) % names.len()];
                match Theme::load(next) {
                    Ok(t) => self.theme = t,
                    Err(e) => self.note(e),
                }
                Action::Redraw
            }
            // The chart's keys, after the configurable ones so a user's binding wins.
            K::Char('+' | '=') => {
                self.chart.zoom = (self.chart.zoom + 1).min(super::candles::MAX_ZOOM);
                Action::Redraw
            }
            K::Char('-') => {
                self.chart.zoom = self.chart.zoom.saturating_sub(1).max(1);
                Action::Redraw
            }
            K::Left | K::Char('h') => {
                self.scroll(SCROLL_STEP as isize);
                Action::Redraw
            }
            // `l` is the log panel's key; in the detail view it scrolls, as in a pager.
            K::Right | K::Char('l') => {
                self.scroll(-(SCROLL_STEP as isize));
                Action::Redraw
            }
            K::Home => {
                self.scroll(isize::MAX / 2);
                Action::Redraw
            }
            K::End => {
                self.chart.offset = 0;
                Action::Redraw
            }
            K::Char(']') => {
                self.switch_timeframe(1);
                Action::Redraw
            }
            K::Char('[') => {
                self.switch_timeframe(-1);
                Action::Redraw
            }
            _ => Action::None,
        }
    }

    /// A mouse button or wheel at (column, row): a click selects the row
    /// under it (and focuses its panel), the wheel moves the selection of
    /// the panel under it, or scrolls the chart.
    pub fn mouse(&mut self, kind: crossterm::event::MouseEventKind, column: u16, row: u16) -> Action {
        use crossterm::event::{MouseButton, MouseEventKind as M};
        let a = self.areas.get();
        let inside = |r: ratatui::layout::Rect| r.contains(ratatui::layout::Position { x: column, y: row });
        match kind {
            M::Down(MouseButton::Left) if inside(a.pairs) => {
                let n = a.pairs_first + usize::from(row - a.pairs.y);
                if n < self.pairs_shown().count() {
                    self.focus = Focus::Pairs;
                    if self.selected != n {
                        self.chart.offset = 0;
                    }
                    self.selected = n;
                }
                Action::Redraw
            }
            M::Down(MouseButton::Left) if inside(a.signals) => {
                let n = a.signals_first + usize::from(row - a.signals.y);
                if n < self.view.signals.iter().filter(|v| self.signal_shown(v)).count() {
                    self.focus = Focus::Signals;
                    self.signal_selected = n;
                    self.chart.offset = 0;
                }
                Action::Redraw
            }
            M::ScrollUp | M::ScrollDown if inside(a.chart) => {
                self.scroll(if kind == M::ScrollUp { 2 } else { -2 });
                Action::Redraw
            }
            M::ScrollUp | M::ScrollDown => {
                let panel = if inside(a.signals) {
                    Focus::Signals
                } else if inside(a.pairs) {
                    Focus::Pairs
                } else {
                    self.focus
                };
                self.focus = panel;
                self.step(if kind == M::ScrollUp { -1 } else { 1 });
                Action::Redraw
            }
            _ => Action::None,
        }
    }

    fn step(&mut self, by: isize) {
        let (sel, len) = match self.focus {
            Focus::Pairs => {
                let len = self.pairs_shown().count();
                (&mut self.selected, len)
            }
            Focus::Signals => {
                let len = self.view.signals.iter().filter(|v| self.signal_shown(v)).count();
                (&mut self.signal_selected, len)
            }
        };
        if len == 0 {
            *sel = 0;
            return;
        }
        *sel = (*sel as isize + by).clamp(0, len as isize - 1) as usize;
        // Another pair's chart starts at its newest candles (or, for a
        // signal, where the signal is).
        self.chart.offset = 0;
    }
}

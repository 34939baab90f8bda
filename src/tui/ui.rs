//! Drawing: a pure function of the app state and its clock, so tests can
//! render any screen with TestBackend.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::app::{App, Focus};
use super::grid::{Grid, GridRow};
use crate::event::{AlertState, Circuit, DeliveryState, FeedState};
use crate::health::{self, Status};
use crate::time::Ts;
use crate::types::{Instrument, Severity, Side};
use crate::view::PairView;

pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;
/// From this width the main screen shows the selected pair's chart beside the tables.
pub const WIDE: u16 = 160;

fn price(i: Instrument, p: f64) -> String {
    format!("{:.*}", i.decimals() as usize, p)
}

fn age(now: Ts, then: Ts) -> String {
    let s = (now.0 - then.0).max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// "2026-11-24 12:00Z": a candle's time, short enough for the narrowest values panel.
fn day_minute(t: Ts) -> String {
    let mut buf = [0u8; 20];
    let full = t.format_into(&mut buf);
    format!("{} {}Z", &full[..10], &full[11..16])
}

fn hms(t: Ts) -> String {
    let s = t.0.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// A sparkline of the last `width` closes, scaled to their range; written
/// straight into the row's text.
struct Spark<'a>(&'a std::collections::VecDeque<crate::view::Bar>, usize);

impl std::fmt::Display for Spark<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let Spark(bars, width) = *self;
        let tail = || bars.iter().skip(bars.len() - bars.len().min(width)).map(|b| b.close);
        let (lo, hi) = tail().fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        for v in tail() {
            let bar =
                if hi - lo <= f64::EPSILON { BARS[3] } else { BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize] };
            std::fmt::Write::write_char(f, bar)?;
        }
        Ok(())
    }
}

/// A sparkline of the last `width` values, scaled to `max` (or their own maximum).
fn spark_values(values: &[f64], width: usize, max: Option<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let top = max.unwrap_or_else(|| tail.iter().copied().fold(0.0, f64::max)).max(f64::EPSILON);
    tail.iter().map(|v| BARS[((v / top).clamp(0.0, 1.0) * 7.0).round() as usize]).collect()
}

pub fn draw(f: &mut Frame<'_>, app: &App) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        // Wrapped: on a narrow terminal the sizes are the part worth seeing.
        let msg = format!(
            "terminal too small: need {MIN_WIDTH}x{MIN_HEIGHT}, have {}x{}. {} quits",
            area.width, area.height, app.keys.quit
        );
        f.render_widget(Paragraph::new(msg).style(app.theme.warning).wrap(Wrap { trim: true }), area);
        return;
    }
    // What this frame draws is what clicks can land on.
    app.areas.set(Default::default());
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    draw_header(f, app, header);
    let logs_fit = body.height > LOGS_NEED_BODY;
    let body = if app.logs && logs_fit {
        let [main, logs] = Layout::vertical([Constraint::Min(0), Constraint::Length(8)]).areas(body);
        let widget = tui_logger::TuiLoggerWidget::default()
            .block(
                Block::bordered()
                    .title(Span::styled(" Logs (l closes) ", app.theme.title))
                    .border_style(app.theme.border),
            )
            .style(app.theme.text)
            .style_error(app.theme.critical)
            .style_warn(app.theme.warning)
            .style_info(app.theme.text)
            .style_debug(app.theme.muted)
            .style_trace(app.theme.muted)
            .output_separator(' ')
            .output_timestamp(Some("%H:%M:%S".to_string()));
        f.render_widget(widget, logs);
        main
    } else {
        body
    };
    match app.selected_pair().filter(|_| app.detail) {
        Some(p) => draw_detail(f, app, p, body),
        None if area.width >= WIDE => draw_wide(f, app, body),
        None => draw_main(f, app, body),
    }
    draw_footer(f, app, footer, logs_fit);
    if app.help {
        draw_help(f, app, area);
    }
}

/// The pairs table's height: its rows and borders, at most half the body.
fn pairs_height(app: &App, body: Rect) -> u16 {
    (app.view.pairs.len() as u16 + 3).clamp(5, body.height / 2 + 2)
}

/// The main screen: the pairs over the signals beside the queue and the health.
fn draw_main(f: &mut Frame<'_>, app: &App, body: Rect) {
    let [pairs, lower] =
        Layout::vertical([Constraint::Length(pairs_height(app, body)), Constraint::Min(0)]).areas(body);
    draw_pairs(f, app, pairs, false);
    let [signals, side] = Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(lower);
    draw_signals(f, app, signals);
    let [queue, health] = Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(side);
    draw_queue(f, app, queue);
    draw_health(f, app, health);
}

/// From [`WIDE`] columns: the tables on the left; the selected pair's
/// candles beside them, over the queue and the health.
fn draw_wide(f: &mut Frame<'_>, app: &App, body: Rect) {
    let chart_width = (body.width * 3 / 8).max(58);
    let [left, right] = Layout::horizontal([Constraint::Min(0), Constraint::Length(chart_width)]).areas(body);
    let [pairs, signals] =
        Layout::vertical([Constraint::Length(pairs_height(app, body)), Constraint::Min(0)]).areas(left);
    draw_pairs(f, app, pairs, true);
    draw_signals(f, app, signals);
    let [chart, queue, health] =
        Layout::vertical([Constraint::Min(12), Constraint::Length(7), Constraint::Length(11)]).areas(right);
    match chart_subject(app) {
        Some((p, chosen)) => draw_chart(f, app, p, chart, false, chosen),
        None => f.render_widget(Block::bordered().title(Span::styled(" Chart ", app.theme.title)), chart),
    }
    draw_queue(f, app, queue);
    draw_health(f, app, health);
}

/// One piece of the header; `keep` orders what stays when the line is too
/// long (the lowest goes first).
struct Seg<'a> {
    spans: Vec<Span<'a>>,
    keep: u8,
}

fn draw_header(f: &mut Frame<'_>, app: &App, area: Rect) {
    let t = &app.theme;
    let feed = app.view.feed.as_ref().map_or("starting", |f| match f.state {
        FeedState::WarmingUp => "warming up",
        FeedState::Live => "live",
        FeedState::Retrying => "retrying",
        FeedState::Finished => "finished",
        FeedState::Failed => "FAILED",
    });
    let narrow = area.width < 100;
    let market_open = app.view.health.as_ref().is_none_or(|h| h.market_open);
    let market = match (market_open, narrow) {
        (false, true) => "closed",
        (false, false) => "market closed",
        (true, true) => "open",
        (true, false) => "market open",
    };
    let report = health::evaluate(&app.view);
    let link_down = app.link_down();
    let (status, status_style) = match report.status {
        Status::Healthy => ("healthy", t.up),
        Status::Degraded => ("DEGRADED", t.warning),
        Status::Unhealthy => ("UNHEALTHY", t.critical),
    };
    // With the link down the screen shows the instance as it was: its status
    // is what it was then, not what it is.
    let (status, status_style) =
        if link_down { (format!("was {status}"), t.muted) } else { (status.to_string(), status_style) };
    let notify = match &app.view.queue {
        Some(q) if q.paused => ("notify PAUSED", t.warning),
        Some(_) => ("notify on", t.header),
        // Nothing is sent anywhere: "on" would promise what does not happen.
        None => ("notify none", t.header),
    };
    let clock = if narrow { format!("{}Z", hms(app.now)) } else { format!("{} UTC", hms(app.now)) };
    let feed = if narrow { feed.to_string() } else { format!("feed {feed}") };
    let one = |text: String, style: Style, keep: u8| Seg { spans: vec![Span::styled(text, style)], keep };
    // The link to a remote instance; why it is down goes in the footer,
    // where there is room for it.
    let mut mode = vec![Span::styled(app.mode.clone(), t.header)];
    // A demo is a time-lapse: its own clock (the newest candle's time) next
    // to the label, so dates in the feed that run ahead of today make sense.
    let demo_clock = app.view.demo_clock().map(|newest| {
        let mut buf = [0u8; 20];
        let at = newest.format_into(&mut buf);
        // An attached console's label names the server, not the demo.
        let prefix = if app.mode.starts_with("DEMO") { "" } else { "demo " };
        format!("{prefix}{} {}", &at[..10], &at[11..16])
    });
    if let Some(link) = &app.link {
        let style = if link_down { t.warning } else { t.header };
        mode.push(Span::styled(format!(" ({})", link.state.label()), style));
    }
    // The status, the notification state and a broken link matter most to
    // someone glancing at the screen; the title and an open market least.
    let mut segs = vec![
        one(" pipwatch ".into(), t.header.add_modifier(ratatui::style::Modifier::BOLD), 0),
        Seg { spans: mode, keep: if link_down { 8 } else { 4 } },
    ];
    // A demo's market is always open: its clock says more, and stays longer.
    let demo = demo_clock.is_some();
    if let Some(clock) = demo_clock {
        segs.push(one(clock, t.header, 2));
    }
    // The feed and the market of an instance out of reach are not known.
    if !link_down {
        segs.push(one(feed, t.header, 5));
    }
    // Today's market hours say nothing about candles from a CSV history.
    let history = app.view.feed.as_ref().is_some_and(|f| f.source == "csv");
    if !link_down && !history {
        let keep = match (market_open, demo) {
            (false, _) => 6,
            (true, true) => 1,
            (true, false) => 2,
        };
        segs.push(one(market.into(), t.header, keep));
    }
    segs.extend([
        one(clock, t.header, 3),
        one(status, status_style, 9),
        one(notify.0.into(), notify.1, if app.paused() { 9 } else { 7 }),
    ]);
    const SEP: usize = 3;
    let width = |segs: &[Seg<'_>]| {
        segs.iter().map(|s| s.spans.iter().map(Span::width).sum::<usize>()).sum::<usize>()
            + SEP * segs.len().saturating_sub(1)
            // The line starts one cell in when the title is gone.
            + usize::from(segs.first().is_some_and(|s| s.keep > 0))
    };
    while width(&segs) > usize::from(area.width) && segs.len() > 1 {
        let Some((lowest, _)) = segs.iter().enumerate().min_by_key(|(_, s)| s.keep) else { break };
        segs.remove(lowest);
    }
    let mut spans = Vec::with_capacity(segs.len() * 3);
    for (n, seg) in segs.into_iter().enumerate() {
        if n > 0 {
            spans.push(Span::styled(" │ ", t.header));
        } else if seg.keep > 0 {
            // Without the title the line still starts one cell in.
            spans.push(Span::styled(" ", t.header));
        }
        spans.extend(seg.spans);
    }
    f.render_widget(Paragraph::new(Line::from(spans)).style(t.header), area);
}

/// Pair table columns in the order they are dropped when space runs out
/// (last first): (slow MA, ATR, last signal), each shown where it fits, and
/// the room left for the sparkline of closes, if it has its minimum.
fn pair_columns(width: u16, chart_beside: bool) -> ((bool, bool, bool, bool), Option<usize>) {
    // Pair, TF, Price, Chg, Fast, Trend, inside the borders; each column
    // with the grid's one-cell gap.
    let mut used =
        2 + [W_PAIR, W_TF, W_PRICE, W_CHG, W_PRICE, W_TREND].iter().map(|&w| usize::from(w) + 1).sum::<usize>();
    let mut fits = |w: u16| {
        let w = usize::from(w);
        let fit = used + w < usize::from(width);
        if fit {
            used += w + 1;
        }
        fit
    };
    let slow = fits(W_PRICE);
    let atr = slow && fits(W_ATR);
    let last = atr && fits(W_LAST);
    // One cell short of the border, as the other columns keep one apart.
    let mut rest = usize::from(width).saturating_sub(used + 1);
    // The track record is dropped first, even before the sparkline: it
    // shows only where the sparkline keeps its least room beside it. With
    // the chart beside the table, the closes are there: the record goes first.
    let spark_room = if chart_beside { 0 } else { SPARK_MIN };
    let record = last && rest > spark_room + usize::from(W_RECORD);
    if record {
        rest -= usize::from(W_RECORD) + 1;
    }
    // Dropped next: never shown in place of a column above.
    ((slow, atr, last, record), (last && rest >= SPARK_MIN).then_some(rest.min(SPARK_MAX)))
}

/// The pair table's fixed column widths (prices and MAs share one).
const W_PAIR: u16 = 8;
const W_TF: u16 = 3;
const W_PRICE: u16 = 9;
const W_CHG: u16 = 7;
const W_TREND: u16 = 10;
const W_ATR: u16 = 6;
const W_LAST: u16 = 12;
/// "100% -123.4R": win rate and total R of the pair's closed paper trades.
const W_RECORD: u16 = 12;

/// The sparkline of closes: in fewer cells it says too little to be shown.
const SPARK_MIN: usize = 10;
/// At most this many closes: a quarter of those kept, the chart has them all.
const SPARK_MAX: usize = 60;

fn draw_pairs(f: &mut Frame<'_>, app: &App, area: Rect, chart_beside: bool) {
    let t = &app.theme;
    let focused = app.focus == Focus::Pairs;
    let ((show_slow, show_atr, show_last, show_record), spark) = pair_columns(area.width, chart_beside);
    let show_spark = spark.is_some();
    let stale: Vec<(Instrument, crate::types::Timeframe)> = app
        .view
        .health
        .as_ref()
        .map(|h| h.stale.iter().map(|s| (s.instrument, s.timeframe)).collect())
        .unwrap_or_default();
    let mut header: Vec<&str> = vec!["Pair", "TF", "Price", "Chg", "Fast"];
    let mut widths = vec![
        Constraint::Length(W_PAIR),
        Constraint::Length(W_TF),
        Constraint::Length(W_PRICE),
        Constraint::Length(W_CHG),
        Constraint::Length(W_PRICE),
    ];
    if show_slow {
        header.push("Slow");
        widths.push(Constraint::Length(W_PRICE));
    }
    header.push("Trend");
    widths.push(Constraint::Length(W_TREND));
    if show_atr {
        header.push("ATR");
        widths.push(Constraint::Length(W_ATR));
    }
    if show_last {
        header.push("Last signal");
        widths.push(Constraint::Length(W_LAST));
    }
    if show_record {
        header.push("Record");
        widths.push(Constraint::Length(W_RECORD));
    }
    if show_spark {
        header.push("Closes");
        widths.push(Constraint::Min(SPARK_MIN as u16));
    }
    let spark_width = spark.unwrap_or(SPARK_MIN);
    let visible = area.height.saturating_sub(3) as usize;
    let first = app.selected.saturating_sub(visible.saturating_sub(1));
    let shown = app.pairs_shown().count();
    let mut areas = app.areas.get();
    areas.pairs = rows_area(area);
    areas.pairs_first = first;
    app.areas.set(areas);
    let rows: Vec<GridRow> = app
        .pairs_shown()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(n, p)| {
            let stale = stale.contains(&(p.instrument, p.timeframe));
            let show = (show_slow, show_atr, show_last, show_record, show_spark);
            let row = pair_row(app, p, stale, show, spark_width);
            if focused && n == app.selected { row.style(t.selection) } else { row }
        })
        .collect();
    if shown == 0 && !app.view.pairs.is_empty() {
        let block = Block::bordered().title(Span::styled(pairs_title(app), t.title)).border_style(t.border);
        f.render_widget(
            Paragraph::new(format!("no pair matches /{} (Esc clears)", app.search)).style(t.muted).block(block),
            area,
        );
        return;
    }
    if app.view.pairs.is_empty() {
        f.render_widget(
            Paragraph::new("waiting for the first candles…")
                .style(t.muted)
                .block(Block::bordered().title(Span::styled(" Pairs ", t.title)).border_style(t.border)),
            area,
        );
        return;
    }
    let title = pairs_title(app);
    let mut block =
        Block::bordered().title(Span::styled(title, t.title)).border_style(if focused { t.accent } else { t.border });
    // Rows the panel has no room for are said on its lower border, or a
    // small terminal would hide a pair without a trace.
    if let Some(more) = more_rows(first, visible, shown) {
        block = block.title_bottom(Line::from(Span::styled(more, t.muted)).right_aligned());
    }
    f.render_widget(Grid { header: &header, header_style: t.muted, rows, widths: &widths, style: t.text, block }, area);
}

/// What the chart beside the tables shows: the selected pair, or with the
/// signal feed focused the selected signal's pair and that signal's trade.
fn chart_subject(app: &App) -> Option<(&PairView, Option<&crate::view::SignalView>)> {
    if app.focus == Focus::Signals
        && let Some(v) = app.view.signals.iter().filter(|v| app.signal_shown(v)).nth(app.signal_selected)
    {
        let s = &v.signal;
        if let Some(p) = app.view.pairs.iter().find(|p| p.instrument == s.instrument && p.timeframe == s.timeframe) {
            return Some((p, Some(v)));
        }
    }
    app.selected_pair().map(|p| (p, None))
}

/// The rows of a bordered table: inside its borders, below its header.
fn rows_area(area: Rect) -> Rect {
    Rect { x: area.x + 1, y: area.y + 2, width: area.width.saturating_sub(2), height: area.height.saturating_sub(3) }
}

/// " Pairs (7) ", and in a demo which pairs are simulated and which play
/// recorded history: a random walk must not pass for a market's past.
fn pairs_title(app: &App) -> String {
    let n = app.view.pairs.len();
    if !app.search.is_empty() {
        return format!(" Pairs ({} of {n}) · /{} ", app.pairs_shown().count(), app.search);
    }
    let Some(feed) = app.view.feed.as_ref().filter(|f| f.source == "demo") else {
        return format!(" Pairs ({n}) ");
    };
    if feed.history.is_empty() {
        return format!(" Pairs ({n}, simulated) ");
    }
    let played = app.view.pairs.iter().filter(|p| feed.history.contains(&p.instrument)).count();
    let names: Vec<&str> = feed.history.iter().map(|i| i.as_str()).collect();
    match n - played {
        0 => format!(" Pairs ({n}) · history: {} ", names.join(" ")),
        rest => format!(" Pairs ({n}) · history: {} · {rest} simulated ", names.join(" ")),
    }
}

/// The candles of the pair `p` with its averages, its latest trade's
/// levels and its signals, in a bordered panel whose title says what is
/// shown and how to move it.
fn draw_chart(
    f: &mut Frame<'_>,
    app: &App,
    p: &PairView,
    area: Rect,
    focused: bool,
    chosen: Option<&crate::view::SignalView>,
) {
    use super::candles::{CandleChart, Palette, TradeLines};
    let t = &app.theme;
    let bars: Vec<crate::view::Bar> = p.bars.iter().copied().collect();
    let mine = |s: &crate::event::Signal| s.instrument == p.instrument && s.timeframe == p.timeframe;
    let signals: Vec<(Ts, Side)> =
        app.view.signals.iter().map(|v| &v.signal).filter(|s| mine(s)).map(|s| (s.time, s.side)).collect();
    // The chosen signal's trade, else the newest: its levels from its entry
    // to its exit, or on to now while open.
    let trade = chosen.or_else(|| app.view.signals.iter().find(|v| mine(&v.signal))).map(|v| TradeLines {
        entry_time: v.signal.time,
        exit_time: v.outcome.as_ref().map(|o| o.exit_time),
        entry: v.signal.price,
        stop: v.signal.stop_loss,
        target: v.signal.take_profit,
    });
    let palette = Palette {
        up: t.up,
        down: t.down,
        text: t.text,
        muted: t.muted,
        fast: t.accent,
        slow: t.warning,
        last: t.selection,
        mono: t.name == "mono",
    };
    let inner_width = area.width.saturating_sub(2);
    let mut chart = CandleChart {
        instrument: p.instrument,
        bars: &bars,
        signals: &signals,
        trade,
        last: p.quote.map(|q| (q.bid + q.ask) / 2.0),
        zoom: app.chart.zoom,
        offset: 0,
        palette,
    };
    chart.offset = app.chart.offset.min(chart.max_offset(inner_width));
    // A chosen signal older than the candles in view: scrolled back to it,
    // unless the user has scrolled.
    if let Some(v) = chosen
        && app.chart.offset == 0
        && let Some(at) = bars.iter().position(|b| b.time == v.signal.time)
    {
        let capacity = chart.capacity(inner_width);
        if at + capacity < bars.len() {
            chart.offset = (bars.len() - at - capacity / 2).min(chart.max_offset(inner_width));
        }
    }
    let shown = chart.capacity(inner_width).min(bars.len());
    let back = if chart.offset > 0 { format!(", {} back", chart.offset) } else { String::new() };
    let title = format!(" {} {} — {shown} of {} candles{back} ", p.instrument, p.timeframe, bars.len());
    // The legend and the keys on the lower border: inside the plot they hide candles.
    let legend = Line::from(vec![
        Span::raw(" "),
        Span::styled("• fast", t.accent),
        Span::raw("  "),
        Span::styled("· slow", t.warning),
        Span::raw("  "),
        Span::styled("▲ buy", t.up),
        Span::raw("  "),
        Span::styled("▼ sell", t.down),
        Span::styled("  ┄ trade   +/- zoom  ←/→ scroll  [ ] timeframe ", t.muted),
    ]);
    let block = Block::bordered().title(Span::styled(title, t.title)).title_bottom(legend).border_style(if focused {
        t.accent
    } else {
        t.border
    });
    let inner = block.inner(area);
    let mut areas = app.areas.get();
    areas.chart = inner;
    areas.chart_capacity = chart.capacity(inner.width);
    app.areas.set(areas);
    f.render_widget(block, area);
    f.render_widget(chart, inner);
}

/// " 2 more ↓ (j/k) ": the rows of a list of `len` that a panel showing
/// `visible` from `first` leaves out, above and below, if any.
fn more_rows(first: usize, visible: usize, len: usize) -> Option<String> {
    let below = len.saturating_sub(first + visible);
    match (first, below) {
        (0, 0) => None,
        (0, b) => Some(format!(" +{b} more ↓ (j/k) ")),
        (a, 0) => Some(format!(" +{a} more ↑ (j/k) ")),
        (a, b) => Some(format!(" +{a} ↑ +{b} ↓ (j/k) ")),
    }
}

/// One pair's row; `show` is (slow MA, ATR, last signal, record, sparkline).
fn pair_row(app: &App, p: &PairView, stale: bool, show: (bool, bool, bool, bool, bool), spark_width: usize) -> GridRow {
    let (show_slow, show_atr, show_last, show_record, show_spark) = show;
    let t = &app.theme;
    let i = p.instrument;
    let d = i.decimals() as usize;
    let mut row = GridRow::new();
    let mut col = 0u16;
    let mut next = || {
        col += 1;
        col - 1
    };
    let dash = |row: &mut GridRow, c: u16| row.push_str(c, t.muted, "—");
    let c = next();
    if stale {
        row.push(c, t.warning, format_args!("{i}!"));
    } else {
        row.push(c, Style::default(), format_args!("{i}"));
    }
    row.push(next(), Style::default(), format_args!("{}", p.timeframe));
    let last = p.quote.map(|q| (q.bid + q.ask) / 2.0).or(p.candle.map(|c| c.close));
    let price = |row: &mut GridRow, c: u16, v: Option<f64>| match v {
        Some(v) => row.push(c, Style::default(), format_args!("{v:.d$}")),
        None => dash(row, c),
    };
    price(&mut row, next(), last);
    let prev = p.bars.len().checked_sub(2).and_then(|n| p.bars.get(n)).map(|b| b.close);
    let c = next();
    match (last, prev) {
        (Some(l), Some(pv)) => {
            let pips = (l - pv) / i.pip();
            row.push(c, if pips >= 0.0 { t.up } else { t.down }, format_args!("{pips:+.1}"));
        }
        _ => dash(&mut row, c),
    }
    let (fast, slow) = p.candle.map_or((None, None), |c| (c.fast, c.slow));
    price(&mut row, next(), fast);
    if show_slow {
        price(&mut row, next(), slow);
    }
    let c = next();
    match (fast, slow) {
        (Some(a), Some(b)) => {
            let pips = (a - b) / i.pip();
            if a >= b {
                row.push(c, t.up, format_args!("▲ {pips:+.1}"));
            } else {
                row.push(c, t.down, format_args!("▼ {pips:+.1}"));
            }
        }
        _ => dash(&mut row, c),
    }
    if show_atr {
        let c = next();
        match p.candle.and_then(|c| c.atr) {
            Some(v) => row.push(c, Style::default(), format_args!("{:.1}", v / i.pip())),
            None => dash(&mut row, c),
        }
    }
    if show_last {
        let c = next();
        match &p.last_signal {
            Some(s) => {
                let (label, style) = if s.side == Side::Buy { ("BUY", t.up) } else { ("SELL", t.down) };
                let when = p.candle.map_or(s.time, |c| c.time);
                row.push_str(c, style, label);
                row.push(c, Style::default(), format_args!(" {} ago", age(when, s.time)));
            }
            None => dash(&mut row, c),
        }
    }
    if show_record {
        let c = next();
        match p.record.win_rate() {
            Some(w) => {
                let style = if p.record.r >= 0.0 { t.up } else { t.down };
                row.push(c, style, format_args!("{:.0}% {:+.1}R", w * 100.0, p.record.r));
            }
            None => dash(&mut row, c),
        }
    }
    if show_spark {
        row.push(next(), t.accent, format_args!("{}", Spark(&p.bars, spark_width)));
    }
    row
}

/// What the "Sent" column takes of a signals panel: its least width, the
/// cell before it, and room for a route's name beside its mark.
const SENT_ROOM: u16 = 16;

fn draw_signals(f: &mut Frame<'_>, app: &App, area: Rect) {
    let t = &app.theme;
    let focused = app.focus == Focus::Signals;
    // Without notification routes "Sent" would stay empty (the default demo
    // has none): its room goes to the stop and target, which a trader needs.
    let sent = app.view.queue.is_some() || app.view.signals.iter().any(|v| !v.deliveries.is_empty());
    let room = area.width + if sent { 0 } else { SENT_ROOM };
    let wide = room >= 70;
    // Each signal's paper trade: dropped before the stop and target.
    let outcomes = room >= 92;
    // How long ago, on the clock the signals' times are on.
    let ages = room >= 112;
    let clock = feed_clock(app);
    // A signal's date matters as much as its hour (an H4 feed spans days, a
    // CSV years): "12-29 08:00" where there is room for it, else the hour
    // for the newest signal's day and the date for older ones, as a mail
    // client does.
    let dated = if wide { room >= 76 } else { room >= 54 };
    let newest_day = app.view.signals.iter().map(|v| v.signal.time.0.div_euclid(86_400)).max();
    // Only the rows that fit are built: formatting is most of a frame's cost.
    let visible = area.height.saturating_sub(3) as usize;
    let first = app.signal_selected.saturating_sub(visible.saturating_sub(1));
    let shown = app.view.signals.iter().filter(|v| app.signal_shown(v)).count();
    let mut areas = app.areas.get();
    areas.signals = rows_area(area);
    areas.signals_first = first;
    app.areas.set(areas);
    let rows: Vec<GridRow> = app
        .view
        .signals
        .iter()
        .filter(|v| app.signal_shown(v))
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(n, v)| {
            let s = &v.signal;
            let i = s.instrument;
            let d = i.decimals() as usize;
            let plain = Style::default();
            let mut row = GridRow::new();
            let (side, style) = if s.side == Side::Buy { ("BUY", t.up) } else { ("SELL", t.down) };
            let mut buf = [0u8; 20];
            let full = s.time.format_into(&mut buf);
            let (date, hour) = (&full[5..10], &full[11..16]);
            if dated {
                row.push(0, plain, format_args!("{date} {hour}"));
            } else if Some(s.time.0.div_euclid(86_400)) == newest_day {
                row.push_str(0, plain, hour);
            } else {
                row.push_str(0, plain, date);
            }
            row.push_str(1, style, side);
            row.push(2, plain, format_args!("{i} {}", s.timeframe));
            row.push(3, plain, format_args!("{:.d$}", s.price));
            let mut col = 4;
            if wide {
                row.push(4, plain, format_args!("{:.d$}", s.stop_loss));
                row.push(5, plain, format_args!("{:.d$}", s.take_profit));
                col = 6;
            }
            if outcomes {
                match outcome(app, v) {
                    Some((text, style)) => row.push_str(col, style, &text),
                    None => row.push_str(col, t.muted, ""),
                }
                col += 1;
            }
            if ages {
                row.push(col, t.muted, format_args!("{} ago", age(clock, s.time)));
                col += 1;
            }
            for delivery in &v.deliveries {
                let (mark, st) = match delivery.state {
                    DeliveryState::Queued => ("…", t.muted),
                    DeliveryState::Delivered => ("✓", t.up),
                    DeliveryState::Failed => ("✗", t.warning),
                    DeliveryState::Dead => ("dead", t.critical),
                };
                // Narrow: the marks alone, in route order.
                if wide {
                    row.push(col, st, format_args!("{}{mark} ", delivery.route));
                } else {
                    row.push(col, st, format_args!("{mark} "));
                }
            }
            if focused && n == app.signal_selected { row.style(t.selection) } else { row }
        })
        .collect();
    // Where the panel is narrower than the columns, the pair and the price
    // give way first (to "EUR_USD" and 7 digits): left to the layout, the
    // time lost a digit.
    // Time, side, pair, entry; then "Sent" (at least 6), a cell between
    // columns and the two borders.
    let [time, side, pair, entry] = [if dated { 11 } else { 5u16 }, 4, 11, 9];
    let short = (time + side + pair + entry + if sent { 6 + 4 } else { 3 } + 2).saturating_sub(area.width);
    let pair_cut = short.min(4);
    let entry_cut = (short - pair_cut).min(2);
    let mut widths = vec![
        Constraint::Length(time),
        Constraint::Length(side),
        Constraint::Length(pair - pair_cut),
        Constraint::Length(entry - entry_cut),
    ];
    let mut header = vec!["Time", "Side", "Pair", "Entry"];
    if wide {
        widths.extend([Constraint::Length(9), Constraint::Length(9)]);
        header.extend(["Stop", "Target"]);
    }
    if outcomes {
        widths.push(Constraint::Length(17));
        header.push("Trade");
    }
    if ages {
        widths.push(Constraint::Length(8));
        header.push("Age");
    }
    if sent {
        widths.push(Constraint::Min(6));
        header.push("Sent");
    }
    let block = Block::bordered()
        .title(Span::styled(
            {
                let mut said: Vec<String> = app.filter.label().into_iter().collect();
                if !app.search.is_empty() {
                    said.push(format!("/{}", app.search));
                }
                match said.is_empty() {
                    true => format!(" Signals ({}) ", app.view.signals.len()),
                    false => format!(" Signals ({shown} of {}) · {} ", app.view.signals.len(), said.join(" · ")),
                }
            },
            t.title,
        ))
        .border_style(if focused { t.accent } else { t.border });
    if shown == 0 {
        let empty = match (app.view.signals.is_empty(), app.search.is_empty()) {
            (true, _) => "no signal yet",
            (false, true) => "no signal matches the filter (f)",
            (false, false) => "no signal matches the filter (/ edits, Esc clears)",
        };
        f.render_widget(Paragraph::new(empty).style(t.muted).block(block), area);
    } else {
        f.render_widget(
            Grid { header: &header, header_style: t.muted, rows, widths: &widths, style: t.text, block },
            area,
        );
    }
}

/// The time signals' ages are reckoned from: a demo's or a history's own
/// clock (its newest candle), the wall clock for a live market.
fn feed_clock(app: &App) -> Ts {
    let live = app.view.feed.as_ref().is_some_and(|f| f.source == "oanda");
    match app.view.newest_candle() {
        Some(t) if !live => t,
        _ => app.now,
    }
}

/// A signal's paper trade as the feed shows it: "✓ target +2.0R",
/// "✗ stop -1.0R", "↺ reversed +0.4R", or "open +5.2p +0.3R" at the pair's
/// last price while it is the pair's newest signal. None for an older signal
/// whose outcome this view does not have.
fn outcome(app: &App, v: &crate::view::SignalView) -> Option<(String, Style)> {
    let t = &app.theme;
    if let Some(o) = &v.outcome {
        let (mark, style) = match o.exit_reason {
            crate::event::ExitReason::Target => ("✓", t.up),
            crate::event::ExitReason::Stop => ("✗", t.down),
            crate::event::ExitReason::Reversed | crate::event::ExitReason::Open => ("↺", t.text),
        };
        return Some((format!("{mark} {} {:+.1}R", o.exit_reason.as_str(), o.r), style));
    }
    let s = &v.signal;
    let pair = app.view.pairs.iter().find(|p| p.instrument == s.instrument && p.timeframe == s.timeframe)?;
    if pair.last_signal.as_ref().map(|l| &l.id) != Some(&s.id) {
        return None;
    }
    let price = pair.quote.map(|q| (q.bid + q.ask) / 2.0).or(pair.candle.map(|c| c.close))?;
    let risk = (s.price - s.stop_loss).abs();
    let gain = if s.side == Side::Buy { price - s.price } else { s.price - price };
    let r = if risk > 0.0 { gain / risk } else { 0.0 };
    let pips = gain / s.instrument.pip();
    Some((format!("open {pips:+.1}p {r:+.1}R"), if r >= 0.0 { t.up } else { t.down }))
}

fn draw_queue(f: &mut Frame<'_>, app: &App, area: Rect) {
    let t = &app.theme;
    let mut lines = Vec::new();
    match &app.view.queue {
        None => lines.push(Line::styled("no notification routes", t.muted)),
        Some(q) => {
            let d = q.depth;
            // Narrower than the full lines: the same figures, abbreviated, and
            // each route's state moved to its second line.
            let narrow = area.width < 32;
            let depth = if narrow {
                format!("{} queued: u{} h{} n{} l{}", d.total(), d.urgent, d.high, d.normal, d.low)
            } else {
                format!("urgent {} high {} normal {} low {}", d.urgent, d.high, d.normal, d.low)
            };
            lines.push(Line::from(vec![
                Span::raw(depth),
                Span::styled(if q.paused { "  PAUSED" } else { "" }, t.warning),
            ]));
            for r in &q.routes {
                let (circuit, st) = match r.circuit {
                    Circuit::Closed => ("ok", t.up),
                    Circuit::HalfOpen => ("probing", t.warning),
                    Circuit::Open => ("failing", t.warning),
                    Circuit::Disabled => ("DISABLED", t.critical),
                };
                let oldest = r.oldest_pending_secs.map(|s| format!(", oldest {s}s")).unwrap_or_default();
                let wait = if r.waiting { " rate-limited" } else { "" };
                let stats = format!(
                    "✓{} ✗{} dead {}{}",
                    r.sent,
                    r.failed,
                    r.dead,
                    if r.rate_limited > 0 { format!(" 429s {}", r.rate_limited) } else { String::new() }
                );
                if narrow {
                    lines.push(Line::from(vec![
                        Span::styled(format!("{:<9}", r.name), t.text),
                        Span::raw(format!("{} queued{}", r.depth, if r.waiting { ", waiting" } else { "" })),
                    ]));
                    lines.push(Line::from(vec![
                        Span::raw("  "),
                        Span::styled(format!("{circuit} "), st),
                        Span::styled(stats, t.muted),
                    ]));
                    continue;
                }
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<9}", r.name), t.text),
                    Span::styled(format!("{circuit:<9}"), st),
                    Span::raw(format!("{} queued{wait}", r.depth)),
                ]));
                lines.push(Line::styled(format!("  {stats}{oldest}"), t.muted));
            }
        }
    }
    let block = Block::bordered().title(Span::styled(" Notifications ", t.title)).border_style(t.border);
    f.render_widget(Paragraph::new(lines).block(block).style(t.text), area);
}

fn gauge_text(label: &str, pct: f64, width: usize) -> String {
    let filled = ((pct / 100.0) * width as f64).round().clamp(0.0, width as f64) as usize;
    format!("{label:<5}{}{} {pct:>5.1}%", "█".repeat(filled), "░".repeat(width - filled))
}

fn draw_health(f: &mut Frame<'_>, app: &App, area: Rect) {
    let t = &app.theme;
    let mut lines = Vec::new();
    let bar = (area.width as usize).saturating_sub(18).clamp(4, 30);
    match &app.view.health {
        None => lines.push(Line::styled("first sample in a moment…", t.muted)),
        Some(h) => {
            let level = |pct: f64| {
                if pct >= 95.0 {
                    t.critical
                } else if pct >= 85.0 {
                    t.warning
                } else {
                    t.up
                }
            };
            let s = &h.system;
            for (label, pct) in [("CPU", f64::from(s.cpu)), ("Mem", s.memory_pct()), ("Disk", s.disk_pct())] {
                lines.push(Line::styled(gauge_text(label, pct, bar), level(pct)));
            }
            let width = (area.width as usize).saturating_sub(10).clamp(4, 60);
            let cpu: Vec<f64> = app.history.iter().map(|(c, _)| f64::from(*c)).collect();
            let net: Vec<f64> = app.history.iter().map(|(_, n)| *n as f64).collect();
            if cpu.len() > 1 {
                lines.push(Line::from(vec![
                    Span::styled("cpu  ", t.muted),
                    Span::styled(spark_values(&cpu, width, Some(100.0)), t.accent),
                ]));
                lines.push(Line::from(vec![
                    Span::styled("net  ", t.muted),
                    Span::styled(spark_values(&net, width, None), t.accent),
                ]));
            }
            lines.push(Line::from(format!(
                "net ↓{}/s ↑{}/s  rss {} MB  ws {}",
                bytes(s.net_rx_per_s),
                bytes(s.net_tx_per_s),
                s.process_rss / (1024 * 1024),
                h.ws_clients
            )));
            // The figures cover the signals of a window (10 minutes, then
            // it starts over): none is not a latency of 0.
            lines.push(Line::from(match h.latency.count {
                0 => "latency — no signal in this 10 min window".to_string(),
                n => format!(
                    "latency p50 {:.1} p95 {:.1} p99 {:.1} ms ({n})",
                    h.latency.p50, h.latency.p95, h.latency.p99
                ),
            }));
        }
    }
    for a in &app.view.alerts {
        let st = match a.severity {
            Severity::Critical => t.critical,
            Severity::Warning => t.warning,
            Severity::Info => t.muted,
        };
        let ack = if a.state == AlertState::Acknowledged { " (ack)" } else { "" };
        lines.push(Line::styled(format!("{} {}{ack}", a.severity, a.title), st));
    }
    let block = Block::bordered().title(Span::styled(" Health ", t.title)).border_style(t.border);
    f.render_widget(Paragraph::new(lines).block(block).style(t.text), area);
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n}B"),
        1024..1_048_576 => format!("{:.1}K", n as f64 / 1024.0),
        _ => format!("{:.1}M", n as f64 / 1_048_576.0),
    }
}

/// The log panel takes 8 rows, and opens only where the rest keeps more than
/// this many.
const LOGS_NEED_BODY: u16 = 16;

fn draw_footer(f: &mut Frame<'_>, app: &App, area: Rect, logs_fit: bool) {
    let t = &app.theme;
    let keys = if area.width < 100 {
        " ? help  q quit  p pause  t theme"
    } else {
        " ? help  q quit  Tab focus  j/k select  p pause  t theme"
    };
    let mut spans = Vec::with_capacity(6);
    if app.typing {
        spans.push(Span::styled(format!(" /{}▏", app.search), t.accent));
        spans.push(Span::styled("  Enter keeps the filter, Esc clears it", t.muted));
        f.render_widget(Paragraph::new(Line::from(spans)), area);
        return;
    }
    // News (a notice, why the screen has stopped moving) comes before the
    // key hints, which `?` also shows: on a narrow terminal the news is
    // what the footer is for.
    if let Some(n) = &app.notice {
        spans.push(Span::styled(format!(" {n}  │"), t.warning));
    }
    if let Some(link) = app.link.as_ref().filter(|l| l.state.is_down()) {
        let why = link.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        spans.push(Span::styled(format!(" link down since {}Z{why}  │", hms(link.since)), t.warning));
    }
    spans.push(Span::styled(keys, t.muted));
    match (app.logs, logs_fit) {
        (true, true) => spans.push(Span::styled("  │ logs also in pipwatch.log", t.muted)),
        // Said, or `l` would seem to do nothing.
        (true, false) => {
            spans.push(Span::styled(format!("  │ logs need {}+ rows: see pipwatch.log", LOGS_NEED_BODY + 3), t.warning))
        }
        (false, _) => {}
    }
    match (&app.server, app.link.is_some()) {
        (Some(addr), _) => spans.push(Span::styled(format!("  │ server {addr}"), t.muted)),
        (None, false) => spans.push(Span::styled("  │ no server (port taken?)", t.warning)),
        (None, true) => {}
    }
    spans.push(Span::styled(format!("  │ theme {}", app.theme.name), t.muted));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(f: &mut Frame<'_>, app: &App, area: Rect) {
    let t = &app.theme;
    let w = 64.min(area.width.saturating_sub(4));
    let keys = app.keys.help();
    let h = (keys.len() as u16 + 2).min(area.height.saturating_sub(2));
    let rect = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    let total = keys.len() as u16;
    let lines: Vec<Line<'_>> = keys
        .into_iter()
        .map(|(k, what)| Line::from(vec![Span::styled(format!(" {k:<16}"), t.accent), Span::styled(what, t.text)]))
        .collect();
    // Too short for every key: it scrolls, and its border says how much is below.
    let visible = h.saturating_sub(2);
    let scroll = app.help_scroll.min(total.saturating_sub(visible));
    let below = total.saturating_sub(visible + scroll);
    let mut block = Block::bordered().title(Span::styled(" Keys ", t.title)).border_style(t.accent);
    if below > 0 || scroll > 0 {
        let said = if below > 0 { format!(" +{below} more ↓ (j/k) ") } else { format!(" +{scroll} ↑ (j/k) ") };
        block = block.title_bottom(Line::from(Span::styled(said, t.muted)).right_aligned());
    }
    f.render_widget(Clear, rect);
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)).block(block).style(Style::default()), rect);
}

/// One pair: closes with both MAs and the pair's signals marked, and its values.
fn draw_detail(f: &mut Frame<'_>, app: &App, p: &PairView, area: Rect) {
    let t = &app.theme;
    let i = p.instrument;
    let [chart_area, values] = Layout::horizontal([Constraint::Min(30), Constraint::Length(34)]).areas(area);
    draw_chart(f, app, p, chart_area, true, None);

    let row = |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<9}"), t.muted), Span::raw(v)]);
    let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| price(i, v));
    let c = p.candle;
    let mut lines = vec![
        row("candle", c.map_or("—".into(), |c| day_minute(c.time))),
        row("close", opt(c.map(|c| c.close))),
        row("fast MA", opt(c.and_then(|c| c.fast))),
        row("slow MA", opt(c.and_then(|c| c.slow))),
        row("ATR", c.and_then(|c| c.atr).map_or("—".into(), |a| format!("{} ({:.1} pips)", price(i, a), a / i.pip()))),
        row("quote", p.quote.map_or("—".into(), |q| format!("{} / {}", price(i, q.bid), price(i, q.ask)))),
        row("rejected", p.rejected.to_string()),
        Line::raw(""),
    ];
    match &p.last_signal {
        Some(s) => {
            let (label, style) = if s.side == Side::Buy { ("BUY", t.up) } else { ("SELL", t.down) };
            lines.push(Line::from(vec![Span::styled(format!("{label:<9}"), style), Span::raw(day_minute(s.time))]));
            lines.push(row("entry", price(i, s.price)));
            lines.push(row("stop", format!("{} ({:+.1})", price(i, s.stop_loss), (s.stop_loss - s.price) / i.pip())));
            lines.push(row(
                "target",
                format!("{} ({:+.1})", price(i, s.take_profit), (s.take_profit - s.price) / i.pip()),
            ));
            lines.push(row("strategy", s.strategy.clone()));
            // Its paper trade: open at the last price, or how it ended.
            if let Some(v) = app.view.signals.iter().find(|v| v.signal.id == s.id)
                && let Some((text, style)) = outcome(app, v)
            {
                lines.push(Line::from(vec![Span::raw(format!("{:<9}", "trade")), Span::styled(text, style)]));
            }
        }
        None => lines.push(Line::styled("no signal yet", t.muted)),
    }
    if p.record.trades > 0 {
        let w = p.record.win_rate().unwrap_or(0.0) * 100.0;
        lines.push(row("record", format!("{} trades, {w:.0}% won, {:+.1}R", p.record.trades, p.record.r)));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Esc: back", t.muted));
    let block = Block::bordered().title(Span::styled(" Values ", t.title)).border_style(t.border);
    f.render_widget(Paragraph::new(lines).block(block).style(t.text), values);
}

//! A candlestick chart: one column per candle (more when zoomed in), bodies
//! of block elements at half-cell precision, wicks of line elements, the
//! moving averages over them, a trade's entry, stop and target as labelled
//! lines, signal markers on their candles, the price axis on the right and
//! times below.
//!
//! Drawn straight into the buffer: a cell is a glyph chosen from what
//! covers its two halves, which ratatui's canvas (braille or half blocks
//! of one colour per cell) cannot say.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::Widget;

use crate::time::Ts;
use crate::types::{Instrument, Side};
use crate::view::Bar;

/// A trade's levels, drawn from its entry candle to its exit (or the right edge).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TradeLines {
    pub entry_time: Ts,
    pub exit_time: Option<Ts>,
    pub entry: f64,
    pub stop: f64,
    pub target: f64,
}

/// The chart's colours, from the theme's roles.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    pub up: Style,
    pub down: Style,
    pub text: Style,
    pub muted: Style,
    pub fast: Style,
    pub slow: Style,
    pub last: Style,
    /// No colours (the mono theme): up bodies are hollow, down bodies filled.
    pub mono: bool,
}

pub struct CandleChart<'a> {
    pub instrument: Instrument,
    /// Oldest first.
    pub bars: &'a [Bar],
    pub signals: &'a [(Ts, Side)],
    pub trade: Option<TradeLines>,
    /// The price now (a quote's mid), else the last close is marked.
    pub last: Option<f64>,
    /// Columns per candle: 1, 2 or 3.
    pub zoom: u16,
    /// Candles back from the newest: 0 shows the newest at the right edge.
    pub offset: usize,
    pub palette: Palette,
}

/// The glyphs of a candle's body: the averages do not draw over them.
const BODIES: [&str; 8] = ["█", "▀", "▄", "┃", "╻", "╹", "─", "┼"];
/// A candle's wicks, and the signal markers on it: a label keeps off them.
const WICKS: [&str; 5] = ["│", "╷", "╵", "▲", "▼"];

/// The columns a candle gets at a zoom level, and the largest zoom.
pub const MAX_ZOOM: u16 = 3;

impl CandleChart<'_> {
    /// How many candles fit in `width` columns beside the axis.
    pub fn capacity(&self, width: u16) -> usize {
        let axis = self.axis_width();
        usize::from(width.saturating_sub(axis) / self.zoom.clamp(1, MAX_ZOOM))
    }

    /// The largest useful `offset` for `width`: the oldest candle at the left edge.
    pub fn max_offset(&self, width: u16) -> usize {
        self.bars.len().saturating_sub(self.capacity(width).max(1))
    }

    fn axis_width(&self) -> u16 {
        let hi = self.bars.iter().map(high).fold(0.0, f64::max);
        // " 1.08221" / " 149.629": a space, the integer digits, the point, the decimals.
        let int_digits = format!("{:.0}", hi.abs().max(1.0)).len();
        (1 + int_digits + 1 + self.instrument.decimals() as usize) as u16
    }
}

fn open(b: &Bar) -> f64 {
    if b.high > 0.0 { b.open } else { b.close }
}
fn high(b: &Bar) -> f64 {
    if b.high > 0.0 { b.high } else { b.close }
}
fn low(b: &Bar) -> f64 {
    if b.high > 0.0 { b.low } else { b.close }
}

/// Prices to half-cell units from the bottom of a plot `rows` high.
struct Scale {
    lo: f64,
    hi: f64,
    units: i64,
}

impl Scale {
    fn unit(&self, p: f64) -> i64 {
        let f = if self.hi > self.lo { (p - self.lo) / (self.hi - self.lo) } else { 0.5 };
        (f * (self.units - 1) as f64).round() as i64
    }

    /// The price at the middle of a row (0 = the bottom one).
    fn price_of_row(&self, row: i64) -> f64 {
        let u = row as f64 * 2.0 + 0.5;
        self.lo + (self.hi - self.lo) * u / (self.units - 1).max(1) as f64
    }
}

impl Widget for CandleChart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < 12 || area.height < 4 || self.bars.is_empty() {
            return;
        }
        let zoom = self.zoom.clamp(1, MAX_ZOOM);
        let axis = self.axis_width();
        let plot = Rect { width: area.width.saturating_sub(axis), height: area.height - 1, ..area };
        let n = usize::from(plot.width / zoom).max(1);
        let end = self.bars.len().saturating_sub(self.offset.min(self.bars.len().saturating_sub(1)));
        let start = end.saturating_sub(n);
        let shown = &self.bars[start..end];
        // Fewer candles than room: they sit against the axis, so the newest
        // is beside its price and the gap is in the past, where nothing was.
        let lead = (n - shown.len()) as u16 * zoom;
        let slot = |k: usize| lead + k as u16 * zoom;

        // The range: every visible high and low, the averages, and the trade's levels.
        let mut lo = f64::MAX;
        let mut hi = f64::MIN;
        let mut take = |v: f64| {
            if v.is_finite() && v > 0.0 {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        };
        for b in shown {
            take(low(b));
            take(high(b));
            b.fast.map(&mut take);
            b.slow.map(&mut take);
        }
        if let Some(t) = self.trade {
            [t.entry, t.stop, t.target].into_iter().for_each(&mut take);
        }
        if lo > hi {
            return;
        }
        let pad = ((hi - lo) * 0.02).max(self.instrument.pip() * 0.5);
        let scale = Scale { lo: lo - pad, hi: hi + pad, units: i64::from(plot.height) * 2 };
        let rows = i64::from(plot.height);
        // (column, row from the bottom) to a buffer position, if inside the plot.
        let at = |col: u16, row: i64| -> Option<(u16, u16)> {
            (col < plot.width && (0..rows).contains(&row)).then(|| (plot.x + col, plot.y + (rows - 1 - row) as u16))
        };
        let p = self.palette;

        // The trade's levels first: candles and averages draw over them,
        // and their labels over everything.
        let mut labels: Vec<(u16, u16, i64, String, Style)> = Vec::new();
        if let Some(t) = self.trade {
            let col_of = |time: Ts| shown.iter().position(|b| b.time >= time);
            // Entered after the newest candle in view (scrolled back): not drawn.
            let from = col_of(t.entry_time).map(slot);
            let to = match t.exit_time {
                Some(x) => col_of(x).map_or(plot.width, |c| (slot(c) + zoom).min(plot.width)),
                None => plot.width,
            };
            // A trade that ended before the visible candles is not drawn.
            let ended_before = t.exit_time.is_some_and(|x| shown.first().is_some_and(|b| x < b.time));
            if let Some(from) = from.filter(|&f| f < to && !ended_before) {
                for (price, label, style) in
                    [(t.stop, "stop", p.down), (t.target, "target", p.up), (t.entry, "entry", p.text)]
                {
                    let row = scale.unit(price) / 2;
                    for col in from..to {
                        if let Some((x, y)) = at(col, row) {
                            buf[(x, y)].set_char('┄').set_style(style);
                        }
                    }
                    labels.push((from, to, row, format!("{label} "), style));
                }
            }
        }

        for (k, b) in shown.iter().enumerate() {
            let col = slot(k);
            let (o, h, l, c) = (open(b), high(b), low(b), b.close);
            let style = if c > o {
                p.up
            } else if c < o {
                p.down
            } else {
                p.text
            };
            let (body_lo, body_hi) = (scale.unit(o.min(c)), scale.unit(o.max(c)));
            let (wick_lo, wick_hi) = (scale.unit(l), scale.unit(h));
            // The body's column: the middle of a zoomed slot, leaving a gap.
            let body_col = col + (zoom - 1) / 2;
            for row in wick_lo / 2..=wick_hi / 2 {
                let covers = |u0: i64, u1: i64, u: i64| u0 <= u && u <= u1;
                let (lower, upper) = (row * 2, row * 2 + 1);
                let body = (covers(body_lo, body_hi, lower), covers(body_lo, body_hi, upper));
                let wick = (covers(wick_lo, wick_hi, lower), covers(wick_lo, wick_hi, upper));
                let glyph = if o == c && (body.0 || body.1) {
                    // A doji: the open and the close are one line, across its wick.
                    if wick_lo < body_lo && wick_hi > body_hi { '┼' } else { '─' }
                } else {
                    match (body, c > o && p.mono) {
                        // Hollow (mono, up): heavy lines instead of blocks.
                        ((true, true), true) => '┃',
                        ((true, false), true) => '╻',
                        ((false, true), true) => '╹',
                        ((true, true), false) => '█',
                        ((true, false), false) => '▄',
                        ((false, true), false) => '▀',
                        _ => match wick {
                            (true, true) => '│',
                            (true, false) => '╷',
                            (false, true) => '╵',
                            (false, false) => continue,
                        },
                    }
                };
                if let Some((x, y)) = at(body_col, row) {
                    buf[(x, y)].set_char(glyph).set_style(style);
                }
            }
            // The averages over the whole slot, so they read as lines when
            // zoomed; over wicks and trade lines, under bodies.
            for (v, glyph, style) in [(b.slow, '·', p.slow), (b.fast, '•', p.fast)] {
                let Some(v) = v else { continue };
                let row = scale.unit(v) / 2;
                for c in col..col + zoom {
                    if let Some((x, y)) = at(c, row)
                        && !BODIES.contains(&buf[(x, y)].symbol())
                    {
                        buf[(x, y)].set_char(glyph).set_style(style);
                    }
                }
            }
            // A signal's marker: under a buy's low, over a sell's high.
            if let Some(&(_, side)) = self.signals.iter().find(|(t, _)| *t == b.time) {
                let (row, glyph, style) = match side {
                    Side::Buy => (wick_lo / 2 - 1, '▲', p.up),
                    Side::Sell => (wick_hi / 2 + 1, '▼', p.down),
                };
                if let Some((x, y)) = at(body_col, row) {
                    buf[(x, y)].set_char(glyph).set_style(style);
                }
            }
        }

        // A label goes where it covers the fewest candles (at the line's
        // start it covered the entry candle's own body), on its line if it
        // can, else just before it: an open trade's lines are short when it
        // was entered on the newest candles.
        for (from, to, row, text, style) in labels {
            let len = text.chars().count() as u16;
            let covered = |col: u16| {
                (col..col + len)
                    .filter(|&c| {
                        at(c, row).is_some_and(|(x, y)| {
                            let s = buf[(x, y)].symbol();
                            BODIES.contains(&s) || WICKS.contains(&s)
                        })
                    })
                    .count()
            };
            let first = from.saturating_sub(len);
            let last = to.saturating_sub(len).max(first);
            let Some(col) = (first..=last).min_by_key(|&c| (covered(c), c < from + 1, c.abs_diff(from + 1))) else {
                continue;
            };
            for (k, ch) in text.chars().enumerate() {
                if let Some((x, y)) = at(col + k as u16, row) {
                    buf[(x, y)].set_char(ch).set_style(style);
                }
            }
        }

        // The price axis: labels every few rows, the last price highlighted on its row.
        let decimals = self.instrument.decimals() as usize;
        let axis_x = plot.x + plot.width;
        let label = |buf: &mut Buffer, row: i64, price: f64, style: Style| {
            let y = plot.y + (rows - 1 - row) as u16;
            let text = format!(" {price:.decimals$}");
            buf.set_stringn(axis_x, y, &text, usize::from(axis), style);
        };
        let every = (rows / 4).clamp(2, 6);
        let mut row = rows - 1;
        while row >= 0 {
            label(buf, row, scale.price_of_row(row), p.muted);
            row -= every;
        }
        let now = self.last.or_else(|| shown.last().map(|b| b.close));
        if let Some(now) = now {
            let row = (scale.unit(now) / 2).clamp(0, rows - 1);
            label(buf, row, now, p.last);
        }

        // Times below: the first visible candle's, then one every 16 or so columns.
        let y = area.y + area.height - 1;
        let mut next_free = 0u16;
        for (k, b) in shown.iter().enumerate() {
            let col = slot(k);
            if col < next_free {
                continue;
            }
            let mut buf20 = [0u8; 20];
            let t = b.time.format_into(&mut buf20);
            // "12-06 08:00"
            let text = format!("{} {}", &t[5..10], &t[11..16]);
            if col + text.len() as u16 > plot.width {
                break;
            }
            buf.set_string(plot.x + col, y, &text, p.muted);
            next_free = col + text.len() as u16 + 5;
        }
    }
}

//! The candlestick chart widget at fixed sizes: an up day, a down day, a
//! gap, a doji, a trade hit by its stop, and the mono theme.

use pipwatch::time::Ts;
use pipwatch::tui::candles::{CandleChart, Palette, TradeLines};
use pipwatch::types::{Instrument, Side};
use pipwatch::view::Bar;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Widget;

const T0: i64 = 1_704_196_800; // 2024-01-02T12:00:00Z

fn palette(mono: bool) -> Palette {
    if mono {
        let plain = Style::default();
        return Palette {
            up: plain.add_modifier(Modifier::BOLD),
            down: plain.add_modifier(Modifier::UNDERLINED),
            text: plain,
            muted: plain.add_modifier(Modifier::DIM),
            fast: plain.add_modifier(Modifier::BOLD),
            slow: plain.add_modifier(Modifier::BOLD),
            last: plain.add_modifier(Modifier::REVERSED),
            mono: true,
        };
    }
    Palette {
        up: Style::default().fg(Color::Green),
        down: Style::default().fg(Color::Red),
        text: Style::default().fg(Color::White),
        muted: Style::default().fg(Color::DarkGray),
        fast: Style::default().fg(Color::Cyan),
        slow: Style::default().fg(Color::Yellow),
        last: Style::default().add_modifier(Modifier::REVERSED),
        mono: false,
    }
}

/// Hourly bars from (open, high, low, close), averages left out.
fn bars(ohlc: &[(f64, f64, f64, f64)]) -> Vec<Bar> {
    ohlc.iter()
        .enumerate()
        .map(|(n, &(open, high, low, close))| Bar {
            time: Ts(T0 + n as i64 * 3600),
            open,
            high,
            low,
            close,
            fast: None,
            slow: None,
        })
        .collect()
}

fn draw(chart: CandleChart<'_>, w: u16, h: u16) -> Buffer {
    let area = Rect::new(0, 0, w, h);
    let mut buf = Buffer::empty(area);
    chart.render(area, &mut buf);
    buf
}

fn text(buf: &Buffer) -> String {
    let area = buf.area;
    (0..area.height)
        .map(|y| (0..area.width).map(|x| buf[(x, y)].symbol()).collect::<String>().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn chart<'a>(bars: &'a [Bar], signals: &'a [(Ts, Side)], trade: Option<TradeLines>, mono: bool) -> CandleChart<'a> {
    CandleChart {
        instrument: Instrument::new("EUR_USD").unwrap(),
        bars,
        signals,
        trade,
        last: None,
        zoom: 2,
        offset: 0,
        palette: palette(mono),
    }
}

/// Cells holding `glyph`, with their style.
fn cells(buf: &Buffer, glyph: &str) -> Vec<Style> {
    buf.content.iter().filter(|c| c.symbol() == glyph).map(|c| c.style()).collect()
}

fn up_day() -> Vec<Bar> {
    let mut p = 1.1000;
    let mut out = Vec::new();
    for n in 0..12 {
        let (o, c) = (p, p + 0.0008 + 0.0001 * (n % 3) as f64);
        out.push((o, c + 0.0003, o - 0.0002, c));
        p = c;
    }
    bars(&out)
}

#[test]
fn an_up_day_climbs_in_up_bodies_with_the_newest_close_on_the_axis() {
    let b = up_day();
    let buf = draw(chart(&b, &[], None, false), 40, 12);
    insta::assert_snapshot!("chart_up_day", text(&buf));
    let bodies = cells(&buf, "█");
    assert!(!bodies.is_empty() && bodies.iter().all(|s| s.fg == Some(Color::Green)), "{bodies:?}");
    // The last close, highlighted on its row of the axis.
    let last = format!("{:.5}", b[b.len() - 1].close);
    assert!(text(&buf).lines().take(3).any(|l| l.ends_with(&last)), "{}", text(&buf));
    let reversed = buf.content.iter().filter(|c| c.style().add_modifier.contains(Modifier::REVERSED)).count();
    assert_eq!(reversed, last.len() + 1, "the last price's label is highlighted");
    // The newest candle is at the top right, the oldest at the bottom left.
    let rows: Vec<String> = text(&buf).lines().map(str::to_string).collect();
    let is_body = |c: char| "█▀▄".contains(c);
    let body_cols: Vec<usize> =
        rows.iter().flat_map(|r| r.chars().enumerate().filter(|&(_, c)| is_body(c)).map(|(i, _)| i)).collect();
    let (oldest, newest) = (*body_cols.iter().min().unwrap(), *body_cols.iter().max().unwrap());
    let first_body_row = |col: usize| rows.iter().position(|r| r.chars().nth(col).is_some_and(is_body));
    assert!(first_body_row(oldest) > first_body_row(newest), "{}", text(&buf));
    // Twelve candles in room for sixteen: they sit against the axis (40
    // columns, 8 of them the axis), the newest in the last slot.
    assert_eq!((oldest, newest), (32 - 12 * 2, 30), "{}", text(&buf));
}

#[test]
fn a_down_day_falls_in_down_bodies() {
    let mut p = 1.1100;
    let mut out = Vec::new();
    for _ in 0..12 {
        let c = p - 0.0009;
        out.push((p, p + 0.0002, c - 0.0003, c));
        p = c;
    }
    let b = bars(&out);
    let buf = draw(chart(&b, &[], None, false), 40, 12);
    insta::assert_snapshot!("chart_down_day", text(&buf));
    let bodies = cells(&buf, "█");
    assert!(!bodies.is_empty() && bodies.iter().all(|s| s.fg == Some(Color::Red)), "{bodies:?}");
    // Times below: the first candle's, as "MM-DD HH:MM".
    assert!(text(&buf).lines().last().unwrap().trim_start().starts_with("01-02 12:00"), "{}", text(&buf));
}

/// A weekend gap: the Monday candles open far above Friday's close, and
/// the empty rows between them stay empty.
#[test]
fn a_gap_leaves_the_price_between_empty() {
    let mut out = vec![(1.1000, 1.1004, 1.0998, 1.1002); 6];
    out.extend(vec![(1.1060, 1.1064, 1.1058, 1.1062); 6]);
    let b = bars(&out);
    let buf = draw(chart(&b, &[], None, false), 40, 12);
    insta::assert_snapshot!("chart_gap", text(&buf));
    let rows: Vec<String> = text(&buf).lines().map(str::to_string).collect();
    let plot: Vec<&str> = rows[..rows.len() - 1].iter().map(|r| &r[..r.len().min(24)]).collect();
    let empty_between = plot.iter().filter(|r| r.trim().is_empty()).count();
    assert!(empty_between >= 4, "{}", text(&buf));
}

#[test]
fn a_doji_is_a_cross_on_its_wick() {
    let mut out = vec![(1.1000, 1.1010, 1.0990, 1.1005); 3];
    out.push((1.1000, 1.1020, 1.0980, 1.1000));
    out.extend(vec![(1.1000, 1.1010, 1.0990, 1.0995); 3]);
    let b = bars(&out);
    let buf = draw(chart(&b, &[], None, false), 30, 12);
    insta::assert_snapshot!("chart_doji", text(&buf));
    assert_eq!(cells(&buf, "┼").len(), 1, "{}", text(&buf));
    assert!(cells(&buf, "│").len() >= 4, "the doji's wick above and below: {}", text(&buf));
}

/// A sell whose stop was hit: its marker over its candle, its levels from
/// its entry to its exit candle, labelled.
#[test]
fn a_trade_hit_by_its_stop_shows_its_levels_up_to_the_exit() {
    let mut out = Vec::new();
    let mut p: f64 = 1.1000;
    for n in 0..14 {
        // Down for six candles, then up through the stop.
        let c = if n < 6 { p - 0.0004 } else { p + 0.0006 };
        out.push((p, p.max(c) + 0.0002, p.min(c) - 0.0002, c));
        p = c;
    }
    let b = bars(&out);
    let entry = b[3];
    let exit = b[10];
    let trade = TradeLines {
        entry_time: entry.time,
        exit_time: Some(exit.time),
        entry: entry.close,
        stop: entry.close + 0.0012,
        target: entry.close - 0.0024,
    };
    let signals = [(entry.time, Side::Sell)];
    let buf = draw(chart(&b, &signals, Some(trade), false), 44, 14);
    insta::assert_snapshot!("chart_stop_hit", text(&buf));
    let t = text(&buf);
    assert!(t.contains("stop") && t.contains("target") && t.contains("entry"), "{t}");
    assert_eq!(cells(&buf, "▼").len(), 1, "{t}");
    // The lines end at the exit candle: seven candles after the entry's
    // marker, at zoom 2, its slot two wide.
    let column = |line: &str, glyph: char| line.chars().position(|c| c == glyph);
    let marker = t.lines().find_map(|l| column(l, '▼')).unwrap();
    let stop_row = t.lines().find(|l| l.contains("stop")).unwrap();
    let last_dash = stop_row.chars().enumerate().filter(|(_, c)| *c == '┄').map(|(i, _)| i).max().unwrap();
    assert!(last_dash <= marker + 7 * 2 + 1, "the stop line runs past the exit: {t}");
    // The labels cover no candle: every body and wick drawn without the
    // trade's lines is there with them. (The same levels, of a trade over
    // before the first candle: not drawn, but in the price range.)
    let before = b[0].time.0;
    let gone = TradeLines { entry_time: Ts(before - 7200), exit_time: Some(Ts(before - 3600)), ..trade };
    let bare = draw(chart(&b, &signals, Some(gone), false), 44, 14);
    assert!(!text(&bare).contains('┄'), "{}", text(&bare));
    for (with, without) in buf.content.iter().zip(&bare.content) {
        if "█▀▄│╷╵".contains(without.symbol()) {
            assert_eq!(with.symbol(), without.symbol(), "a label covers a candle:\n{t}");
        }
    }
}

/// Without colours, up and down candles still differ: up bodies are
/// hollow (heavy lines), down bodies filled.
#[test]
fn mono_tells_up_from_down_by_shape() {
    let mut out = Vec::new();
    for n in 0..12 {
        let base = 1.1000 + 0.0002 * n as f64;
        if n % 2 == 0 {
            out.push((base, base + 0.0012, base - 0.0002, base + 0.0010));
        } else {
            out.push((base + 0.0010, base + 0.0012, base - 0.0002, base));
        }
    }
    let b = bars(&out);
    let buf = draw(chart(&b, &[], None, true), 40, 12);
    insta::assert_snapshot!("chart_mono", text(&buf));
    assert!(buf.content.iter().all(|c| c.fg == Color::Reset && c.bg == Color::Reset), "no colour in mono");
    assert!(!cells(&buf, "┃").is_empty(), "hollow up bodies: {}", text(&buf));
    assert!(!cells(&buf, "█").is_empty(), "filled down bodies: {}", text(&buf));
}

/// Scrolled back, the chart shows older candles and no more than it has.
#[test]
fn scrolling_back_shows_older_candles_within_the_history() {
    let b = up_day();
    let mut c = chart(&b, &[], None, false);
    c.zoom = 1;
    assert_eq!(c.capacity(16), 8);
    assert_eq!(c.max_offset(16), 4);
    let newest = text(&draw(chart(&b, &[], None, false), 24, 10));
    let mut back = chart(&b, &[], None, false);
    back.offset = 6;
    let older = text(&draw(back, 24, 10));
    assert_ne!(newest, older);
    // Scrolled back to the oldest, the first time label is the first candle's.
    assert!(older.lines().last().unwrap().trim_start().starts_with("01-02 12:00"), "{older}");
    // A trade opened on the newest candle is not in the older ones' picture.
    let newest = b[b.len() - 1];
    let open = TradeLines {
        entry_time: newest.time,
        exit_time: None,
        entry: newest.close,
        stop: newest.close - 0.0010,
        target: newest.close + 0.0020,
    };
    let mut back = chart(&b, &[], Some(open), false);
    back.offset = 6;
    let older = text(&draw(back, 24, 10));
    assert!(!older.contains('┄'), "a trade entered after the candles in view is drawn:\n{older}");
    assert!(text(&draw(chart(&b, &[], Some(open), false), 24, 10)).contains('┄'));
}

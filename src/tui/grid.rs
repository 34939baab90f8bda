//! A table widget for the console's two long tables (pairs and signals).
//!
//! It draws what `ratatui::widgets::Table` draws for our use (a header row,
//! one-line rows, left-aligned cells truncated to their column, columns laid
//! out by the same `Layout`), but a row's text lives in one `String` written
//! with `write!` instead of a `String` per cell, and text made of characters
//! that are one cell wide each (ASCII and the few symbols the console uses)
//! goes straight to the buffer, without grapheme segmentation. Anything else
//! is drawn by ratatui's own `set_stringn`. The tests in `tests/tui.rs` pin
//! the screens this draws, and the unit tests here compare it with `Table`.

use std::fmt::{self, Write};

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Block, Widget};

/// One row: its text, and the styled pieces of it in column order.
#[derive(Clone, Default)]
pub struct GridRow {
    text: String,
    /// (column, start, end, style) into `text`.
    segs: Vec<(u16, u32, u32, Style)>,
    style: Style,
}

impl GridRow {
    pub fn new() -> Self {
        GridRow { text: String::with_capacity(96), segs: Vec::with_capacity(12), style: Style::default() }
    }

    /// The style under the whole row (e.g. the selection).
    pub fn style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// Appends text to column `col`, after what the column already holds.
    pub fn push(&mut self, col: u16, style: Style, args: fmt::Arguments<'_>) {
        let start = self.text.len();
        // Writing into a String cannot fail.
        let _ = self.text.write_fmt(args);
        self.mark(col, start, style);
    }

    pub fn push_str(&mut self, col: u16, style: Style, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        self.mark(col, start, style);
    }

    /// Records `text[start..]` as a piece of column `col`.
    fn mark(&mut self, col: u16, start: usize, style: Style) {
        self.segs.push((col, start as u32, self.text.len() as u32, style));
    }
}

pub struct Grid<'a> {
    pub header: &'a [&'a str],
    pub header_style: Style,
    pub rows: Vec<GridRow>,
    pub widths: &'a [Constraint],
    pub style: Style,
    pub block: Block<'a>,
}

/// Characters drawn without grapheme segmentation: one char, one cell, no
/// combining. ratatui measures each of these one cell wide too (a unit test
/// checks).
fn simple(c: char) -> bool {
    matches!(c, ' '..='~' | '·' | '—' | '…' | '▁'..='█' | '▲' | '▼' | '✓' | '✗')
}

/// Draws `s` at (x, y), at most `max` cells; returns the cells used.
fn put(buf: &mut Buffer, x: u16, y: u16, s: &str, max: u16, style: Style) -> u16 {
    if s.chars().all(simple) {
        let mut used = 0;
        for c in s.chars().take(usize::from(max)) {
            if let Some(cell) = buf.cell_mut((x + used, y)) {
                cell.set_char(c).set_style(style);
            }
            used += 1;
        }
        used
    } else {
        let (end, _) = buf.set_stringn(x, y, s, usize::from(max), style);
        end.saturating_sub(x)
    }
}

impl Widget for Grid<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        buf.set_style(area, self.style);
        let inner = self.block.inner(area);
        self.block.render(area, buf);
        if inner.is_empty() {
            return;
        }
        // The same column layout as `Table` (Flex::Start, one cell between).
        let columns = Layout::horizontal(self.widths.iter().copied()).flex(Flex::Start).spacing(1).split(Rect::new(
            inner.x,
            inner.y,
            inner.width,
            1,
        ));
        let line = |buf: &mut Buffer, y: u16, pieces: &mut dyn Iterator<Item = (u16, &str, Style)>| {
            // Cells used so far in the current column.
            let mut at: (u16, u16) = (u16::MAX, 0);
            for (col, s, style) in pieces {
                let Some(c) = columns.get(usize::from(col)) else { continue };
                if at.0 != col {
                    at = (col, 0);
                }
                let room = c.width.saturating_sub(at.1);
                if room > 0 {
                    at.1 += put(buf, c.x + at.1, y, s, room, style);
                }
            }
        };
        let header_area = Rect { height: 1, ..inner };
        buf.set_style(header_area, self.header_style);
        line(buf, inner.y, &mut self.header.iter().enumerate().map(|(i, h)| (i as u16, *h, Style::default())));
        for (n, row) in self.rows.iter().enumerate() {
            let y = inner.y + 1 + n as u16;
            if y >= inner.bottom() {
                break;
            }
            // Patching in the default style changes nothing: skip the pass.
            if row.style != Style::default() {
                buf.set_style(Rect { y, height: 1, ..inner }, row.style);
            }
            line(
                buf,
                y,
                &mut row.segs.iter().map(|&(col, a, b, style)| (col, &row.text[a as usize..b as usize], style)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::style::{Color, Modifier};
    use ratatui::text::{Line, Span};
    use ratatui::widgets::{Cell, Row, Table};

    use super::*;

    #[test]
    fn simple_chars_are_one_cell_wide_for_ratatui_too() {
        let all = (' '..='~').chain(['·', '—', '…', '▲', '▼', '✓', '✗']).chain('▁'..='█');
        for c in all {
            assert!(simple(c));
            assert_eq!(Span::raw(c.to_string()).width(), 1, "{c:?}");
        }
        assert!(!simple('\u{301}') && !simple('界') && !simple('\t'));
    }

    /// Draws the same rows with `Table` and with `Grid`: the buffers must match.
    #[test]
    fn draws_what_table_draws() {
        let widths = [Constraint::Length(4), Constraint::Length(6), Constraint::Min(3)];
        let header = ["Pair", "Price", "Sent"];
        let (up, sel, muted) =
            (Style::new().fg(Color::Green), Style::new().bg(Color::Blue), Style::new().add_modifier(Modifier::DIM));
        // Text longer than its column, several pieces in one column,
        // non-simple text (wide and combining characters), a selected row.
        let cells: [[Vec<(&str, Style)>; 3]; 3] = [
            [vec![("EUR_USD", Style::default())], vec![("1.08234", up)], vec![("a✓ ", up), ("b✗ ", muted)]],
            [vec![("GBP", Style::default())], vec![("▲ +3.2", up)], vec![("界e\u{301}x", Style::default())]],
            [vec![("—", muted)], vec![("—", muted)], vec![("▁▂▃▄▅▆▇█▁▂", up)]],
        ];
        let table_rows: Vec<Row<'_>> = cells
            .iter()
            .enumerate()
            .map(|(n, row)| {
                let r = Row::new(row.iter().map(|pieces| {
                    Cell::from(Line::from(pieces.iter().map(|(s, st)| Span::styled(*s, *st)).collect::<Vec<_>>()))
                }));
                if n == 1 { r.style(sel) } else { r }
            })
            .collect();
        let grid_rows: Vec<GridRow> = cells
            .iter()
            .enumerate()
            .map(|(n, row)| {
                let mut r = GridRow::new();
                for (col, pieces) in row.iter().enumerate() {
                    for (s, st) in pieces {
                        r.push_str(col as u16, *st, s);
                    }
                }
                if n == 1 { r.style(sel) } else { r }
            })
            .collect();
        for width in [12, 17, 30] {
            let area = Rect::new(0, 0, width, 6);
            let block = || Block::bordered().title(" T ");
            let mut want = Buffer::empty(area);
            Table::new(table_rows.clone(), widths)
                .header(Row::new(header).style(muted))
                .block(block())
                .style(Style::new().fg(Color::White))
                .render(area, &mut want);
            let mut got = Buffer::empty(area);
            Grid {
                header: &header,
                header_style: muted,
                rows: grid_rows.clone(),
                widths: &widths,
                style: Style::new().fg(Color::White),
                block: block(),
            }
            .render(area, &mut got);
            assert_eq!(got, want, "width {width}");
        }
    }
}

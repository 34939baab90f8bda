//! The report `backtest` prints on a terminal: the assumptions in one line,
//! a table per series with a TOTAL row, the trades by exit reason, the trades
//! left open, the R of each month, and the cumulative R drawn as a chart.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::Report;
use crate::engine::trade::Summary as Figures;
use crate::event::ExitReason;

/// What the report says it assumed.
pub struct Assumptions {
    /// "sma 10/20, ATR 14, stop 1.5 ATR, target 3 ATR".
    pub strategy: String,
    pub fill: &'static str,
    pub spread_pips: f64,
    pub range: String,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.decimals$}"))
}

fn figures_row(out: &mut impl Write, name: &str, f: &Figures) -> io::Result<()> {
    writeln!(
        out,
        "{name:<14} {:>6} {:>6.1} {:>9.1} {:>7.2} {:>7.3} {:>6} {:>6} {:>8.2} {:>10} {:>8.1}",
        f.trades,
        f.win_rate * 100.0,
        f.pips,
        f.r,
        f.expectancy_r,
        opt(f.profit_factor, 2),
        opt(f.sqn, 2),
        f.max_drawdown_r,
        f.max_consecutive_losses,
        f.avg_bars
    )
}

/// The report for a terminal `width` columns wide.
pub fn write(report: &Report, a: &Assumptions, width: usize, out: &mut impl Write) -> io::Result<()> {
    let read = &report.read;
    writeln!(
        out,
        "{}; fill at {}; spread {} pips; {}; {} candles from {} file{}",
        a.strategy,
        a.fill,
        a.spread_pips,
        a.range,
        read.candles,
        read.files,
        if read.files == 1 { "" } else { "s" }
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<14} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>6} {:>8} {:>10} {:>8}",
        "series", "trades", "win %", "pips", "R", "exp R", "PF", "SQN", "max DD R", "max losses", "avg bars"
    )?;
    for (k, f) in &report.series {
        figures_row(out, &format!("{} {}", k.instrument, k.timeframe), f)?;
    }
    figures_row(out, "TOTAL", &report.total)?;

    writeln!(out)?;
    writeln!(out, "{:<10} {:>6} {:>5} {:>9}", "exit", "trades", "gaps", "R")?;
    let mut by: BTreeMap<ExitReason, (u64, u64, f64)> = BTreeMap::new();
    for t in &report.trades {
        let e = by.entry(t.exit_reason).or_default();
        e.0 += 1;
        e.1 += u64::from(t.gap);
        e.2 += t.r;
    }
    for reason in [ExitReason::Target, ExitReason::Stop, ExitReason::Reversed] {
        let (n, gaps, r) = by.get(&reason).copied().unwrap_or_default();
        writeln!(out, "{:<10} {n:>6} {gaps:>5} {r:>9.2}", reason.as_str())?;
    }

    let open: Vec<_> = report.trades.iter().filter(|t| t.exit_reason == ExitReason::Open).collect();
    writeln!(out)?;
    if open.is_empty() {
        writeln!(out, "no trade left open")?;
    } else {
        writeln!(out, "left open at the end of the data (listed, not counted):")?;
        for t in open {
            writeln!(
                out,
                "  {} {} {} entry {} at {}, last close {}: {:+.1} pips, {:+.2} R",
                t.instrument,
                t.timeframe,
                t.side.as_str(),
                t.entry,
                t.entry_time,
                t.exit,
                t.pips,
                t.r
            )?;
        }
    }

    let mut months: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut closed: Vec<_> = report.trades.iter().filter(|t| t.exit_reason != ExitReason::Open).collect();
    closed.sort_by_key(|t| (t.exit_time, t.entry_time));
    for t in &closed {
        let e = months.entry(t.exit_time.to_string()[..7].to_string()).or_default();
        e.0 += 1;
        e.1 += t.r;
    }
    if !months.is_empty() {
        writeln!(out)?;
        writeln!(out, "{:<8} {:>6} {:>8}", "month", "trades", "R")?;
        for (m, (n, r)) in &months {
            writeln!(out, "{m:<8} {n:>6} {r:>+8.2}")?;
        }
    }
    if closed.len() >= 2 {
        let mut cum = 0.0;
        let curve: Vec<f64> = closed
            .iter()
            .map(|t| {
                cum += t.r;
                cum
            })
            .collect();
        writeln!(out)?;
        writeln!(out, "cumulative R over {} closed trades:", closed.len())?;
        for line in chart(&curve, width.saturating_sub(10).clamp(20, 200), 8) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// A column chart of `values` (sampled to `width` columns) `height` rows
/// high, with eighth blocks, its top and bottom values labelled on the left.
pub fn chart(values: &[f64], width: usize, height: usize) -> Vec<String> {
    const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let cols: Vec<f64> = (0..width.min(values.len()))
        .map(|c| {
            // The value at the end of each column's share of the trades.
            let end = ((c + 1) * values.len()).div_ceil(width.min(values.len())) - 1;
            values[end.min(values.len() - 1)]
        })
        .collect();
    let lo = cols.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let hi = cols.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(0.0);
    let span = (hi - lo).max(f64::EPSILON);
    let eighths: Vec<usize> = cols.iter().map(|v| (((v - lo) / span) * (height * 8) as f64).round() as usize).collect();
    (0..height)
        .map(|row| {
            let floor = (height - 1 - row) * 8;
            let bars: String = eighths.iter().map(|&e| BLOCKS[e.saturating_sub(floor).min(8)]).collect();
            let label = match row {
                0 => format!("{hi:>+8.1} "),
                r if r == height - 1 => format!("{lo:>+8.1} "),
                _ => " ".repeat(9),
            };
            format!("{label}{bars}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_rises_with_the_curve_and_is_labelled() {
        let lines = chart(&[1.0, 2.0, 3.0, 4.0], 4, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("    +4.0 ") && lines[1].starts_with("    +0.0 "), "{lines:?}");
        // The last column is full in both rows; the first reaches a quarter.
        assert!(lines[0].ends_with('█') && lines[1].ends_with('█'), "{lines:?}");
        assert_eq!(lines[1].chars().nth(9), Some('▄'), "{lines:?}");
        // More trades than columns: each column is the end of its share.
        let many: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(chart(&many, 10, 3)[0].chars().count(), 19);
    }
}

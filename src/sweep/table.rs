//! What a sweep prints on a terminal: the best combinations by the chosen
//! measure, then a heatmap of fast × slow for that measure (each cell the
//! best over the other parameters), in colour when the terminal has it and
//! in shades of a block when it does not.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::{Rank, Results};

pub struct Options {
    pub rank: Rank,
    pub min_trades: u64,
    pub top: usize,
    /// The terminal's columns.
    pub width: usize,
    /// ANSI colours (a terminal without NO_COLOR).
    pub colour: bool,
    /// What was held fixed, in one line (fill, spread, range).
    pub assumptions: String,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.decimals$}"))
}

pub fn write(results: &Results, o: &Options, out: &mut impl Write) -> io::Result<()> {
    let ranked = results.ranked(o.rank, o.min_trades);
    writeln!(out, "{} combinations over {} candles; {}", results.outcomes.len(), results.read.candles, o.assumptions)?;
    writeln!(out)?;
    if ranked.is_empty() {
        writeln!(out, "No combination has {} closed trades or more (--min-trades): nothing to rank.", o.min_trades)?;
        return Ok(());
    }
    writeln!(
        out,
        "Best {} by {} (at least {} closed trades; {} of {} qualify):",
        o.top.min(ranked.len()),
        o.rank.name(),
        o.min_trades,
        ranked.len(),
        results.outcomes.len()
    )?;
    writeln!(
        out,
        "{:<4} {:>4} {:>4} {:>4} {:>5} {:>5} {:>7} {:>6} {:>8} {:>7} {:>6} {:>6} {:>7}",
        "ma", "fast", "slow", "atr", "sl", "tp", "trades", "win%", "R", "exp R", "PF", "SQN", "max DD"
    )?;
    for outcome in ranked.iter().take(o.top) {
        let (p, f) = (&outcome.params, &outcome.figures);
        writeln!(
            out,
            "{:<4} {:>4} {:>4} {:>4} {:>5} {:>5} {:>7} {:>6.1} {:>8.2} {:>7.3} {:>6} {:>6} {:>7.2}",
            p.ma.to_string(),
            p.fast,
            p.slow,
            p.atr,
            p.sl_mult,
            p.tp_mult,
            f.trades,
            f.win_rate * 100.0,
            f.r,
            f.expectancy_r,
            opt(f.profit_factor, 2),
            opt(f.sqn, 2),
            f.max_drawdown_r
        )?;
    }
    writeln!(out)?;
    heatmap(results, o, out)
}

/// The best value of the measure for each (fast, slow), over the other axes.
fn cells(results: &Results, o: &Options) -> BTreeMap<(u32, u32), f64> {
    let mut best: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    for outcome in &results.outcomes {
        if outcome.figures.trades < o.min_trades {
            continue;
        }
        let Some(v) = o.rank.of(&outcome.figures) else { continue };
        let cell = best.entry((outcome.params.fast, outcome.params.slow)).or_insert(f64::NEG_INFINITY);
        *cell = cell.max(v);
    }
    best
}

const SHADES: [char; 5] = ['·', '░', '▒', '▓', '█'];

fn heatmap(results: &Results, o: &Options, out: &mut impl Write) -> io::Result<()> {
    let best = cells(results, o);
    let mut fasts: Vec<u32> = results.outcomes.iter().map(|x| x.params.fast).collect();
    let mut slows: Vec<u32> = results.outcomes.iter().map(|x| x.params.slow).collect();
    fasts.sort_unstable();
    fasts.dedup();
    slows.sort_unstable();
    slows.dedup();
    if fasts.len() < 2 && slows.len() < 2 {
        return Ok(());
    }
    // Finite values only set the scale (an infinite profit factor is simply the top).
    let finite: Vec<f64> = best.values().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let level = |v: f64| -> f64 {
        if !v.is_finite() || hi <= lo {
            return if v < lo { 0.0 } else { 1.0 };
        }
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    };
    // Values when they fit the terminal, shades when they do not.
    let label = 5;
    let wide = label + slows.len() * 7 <= o.width;
    let cell_width = if wide { 7 } else { 3 };
    writeln!(
        out,
        "{} by fast (rows) and slow (columns), the best over the other parameters{}:",
        o.rank.name(),
        if o.colour { "" } else { "; █ best fifth … · lowest fifth" }
    )?;
    write!(out, "{:>label$}", "")?;
    for s in &slows {
        if wide {
            write!(out, "{s:>7}")?;
        } else {
            write!(out, "{s:>3}")?;
        }
    }
    writeln!(out)?;
    for f in &fasts {
        write!(out, "{f:>4} ")?;
        for s in &slows {
            let text = match best.get(&(*f, *s)) {
                None => " ".repeat(cell_width),
                Some(v) if wide => {
                    let shown = if v.is_finite() { format!("{v:.2}") } else { "∞".to_string() };
                    match o.colour {
                        true => format!("{shown:>7}"),
                        false => format!("{shown:>6}{}", SHADES[((level(*v) * 4.0).round()) as usize]),
                    }
                }
                Some(v) => {
                    let shade = SHADES[((level(*v) * 4.0).round()) as usize];
                    format!(" {shade}{shade}")
                }
            };
            match (o.colour, best.get(&(*f, *s))) {
                (true, Some(v)) => {
                    // Red through yellow to green, on the 256-colour cube.
                    let t = level(*v);
                    let (r, g) =
                        if t < 0.5 { (5, (t * 10.0).round() as u8) } else { (((1.0 - t) * 10.0).round() as u8, 5) };
                    let colour = 16 + 36 * u16::from(r) + 6 * u16::from(g);
                    write!(out, "\x1b[48;5;{colour}m\x1b[30m{text}\x1b[0m")?;
                }
                _ => write!(out, "{text}")?,
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "A blank cell: no combination there has {} closed trades.", o.min_trades)
}

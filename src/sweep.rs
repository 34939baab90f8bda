//! `pipwatch backtest --fast 5..50:5 --slow 10..200:10 ...`: every
//! combination of the strategy's parameters over the same candles, read and
//! parsed once, each combination on whichever core is free.
//!
//! Each combination's figures are the ones a single `backtest` with those
//! parameters prints (tests hold it). An SMA combination on one series runs
//! in the sweep's own loop (`kernel`: prefix sums of the closes shared by
//! every window length, the engine's ATR and trade book), which decides
//! every crossover as the engine does; the others are a backtest through the
//! same code as `backtest` (`backtest::Tester`). What stays in memory is the
//! candles (and for each group of the kernel's, one block's sums and ATRs),
//! and per combination in flight its state and its running figures (over
//! several series, its trades until they are added up in exit order).

use std::io::{self, Write};

use rayon::prelude::*;
use serde::Serialize;

use crate::backtest::Tester;
use crate::engine::trade::{Fill, Summary as Figures};
use crate::engine::{MaKind, StrategyParams, StrategySet};
use crate::market::csv::{BadRow, CsvInput};
use crate::replay::{Flow, ReplayError, Summary, drive};
use crate::time::Ts;
use crate::types::Candle;

/// The values each parameter takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axes {
    pub ma: Vec<MaKind>,
    pub fast: Vec<u32>,
    pub slow: Vec<u32>,
    pub atr: Vec<u32>,
    pub sl: Vec<f64>,
    pub tp: Vec<f64>,
}

impl Axes {
    /// Every combination with fast < slow, in the order of the axes
    /// (ma, fast, slow, atr, sl, tp).
    pub fn combinations(&self) -> Vec<StrategyParams> {
        let mut all = Vec::new();
        for &ma in &self.ma {
            for &fast in &self.fast {
                for &slow in self.slow.iter().filter(|s| **s > fast) {
                    for &atr in &self.atr {
                        for &sl_mult in &self.sl {
                            for &tp_mult in &self.tp {
                                all.push(StrategyParams { ma, fast, slow, atr, sl_mult, tp_mult });
                            }
                        }
                    }
                }
            }
        }
        all
    }

    /// More than one value somewhere: a sweep, not a single backtest.
    pub fn is_sweep(&self) -> bool {
        [self.ma.len(), self.fast.len(), self.slow.len(), self.atr.len(), self.sl.len(), self.tp.len()]
            .iter()
            .any(|n| *n > 1)
    }
}

/// Candles a group of combinations goes through together: with their
/// prefix sums and ATRs, a few hundred KiB, within a core's L2 cache.
const KERNEL_BLOCK: usize = 2048;

pub struct Sweep<'a> {
    pub inputs: &'a [CsvInput],
    pub axes: Axes,
    pub fill: Fill,
    pub spread_pips: f64,
    pub from: Option<Ts>,
    pub to: Option<Ts>,
    pub progress: bool,
}

/// One combination and its figures over every input.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub params: StrategyParams,
    pub figures: Figures,
}

/// What a sweep found, in the order of [`Axes::combinations`].
#[derive(Debug)]
pub struct Results {
    pub outcomes: Vec<Outcome>,
    pub read: Summary,
}

impl Sweep<'_> {
    pub fn run(&self, on_bad_row: &mut dyn FnMut(&BadRow)) -> Result<Results, ReplayError> {
        let started = std::time::Instant::now();
        let combinations = self.axes.combinations();
        // One series: each combination adds its trades up as they close.
        let one_series =
            self.inputs.windows(2).all(|w| (w[0].instrument, w[0].timeframe) == (w[1].instrument, w[1].timeframe));
        // The candles, once, in the order a backtest reads them: one series'
        // files in one vector (the kernel reads it whole), else one per file.
        let size = |i: &CsvInput| std::fs::metadata(&i.path).map_or(0, |m| m.len());
        let sizes: Vec<u64> = match one_series {
            true => vec![self.inputs.iter().map(size).sum()],
            false => self.inputs.iter().map(size).collect(),
        };
        let mut files: Vec<Vec<Candle>> = sizes
            .iter()
            // Sized from the files up front: doubling as it filled held the
            // old copy and the new at once, 1.8x the candles at the peak. A
            // row is rarely under 40 bytes; pages reserved and never filled
            // cost no memory.
            .map(|bytes| Vec::with_capacity(usize::try_from(bytes / 40).unwrap_or(0)))
            .collect();
        let mut read = Summary::default();
        for (n, input) in self.inputs.iter().enumerate() {
            let Some(candles) = files.get_mut(if one_series { 0 } else { n }) else { break };
            drive(std::slice::from_ref(input), self.progress, 0, on_bad_row, &mut read, &mut |c, _| {
                candles.push(*c);
                Ok(Flow::Next)
            })?;
        }
        read.files = self.inputs.len();
        let bar = self.progress.then(|| {
            let bar = indicatif::ProgressBar::new(combinations.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} combinations ({eta} left)")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let counted = std::sync::Mutex::new(None::<Summary>);
        let max_slow = self.axes.slow.iter().copied().max().unwrap_or(1);
        let kernel = match files.as_slice() {
            [one] if one_series => kernel::Series::prepare(one, self.to.unwrap_or(Ts(i64::MAX)), max_slow),
            _ => None,
        };
        if let Some(k) = &kernel {
            read.candles = k.len() as u64;
        }
        let from = self.from.unwrap_or(Ts(i64::MIN));
        // The kernel's combinations, a group at a time through each block of
        // candles (see `kernel::Group`); enough groups to keep every core busy
        // and the progress bar moving.
        let mut figures: Vec<Option<Figures>> = vec![None; combinations.len()];
        if let Some(k) = &kernel {
            let mut taken: Vec<usize> = (0..combinations.len()).filter(|&i| k.takes(&combinations[i])).collect();
            // A group computes each of its ATR periods: one each, mostly.
            taken.sort_by_key(|&i| combinations[i].atr);
            let groups = (rayon::current_num_threads() * 4).max(1);
            let per_group = taken.len().div_ceil(groups).clamp(1, 32);
            let done: Vec<(usize, Figures)> = taken
                .par_chunks(per_group)
                .flat_map_iter(|group| {
                    let params: Vec<StrategyParams> = group.iter().map(|&i| combinations[i]).collect();
                    let mut runs = k.group(&params, self.fill, self.spread_pips);
                    while runs.step(KERNEL_BLOCK, from) {}
                    if let Some(bar) = &bar {
                        bar.inc(group.len() as u64);
                    }
                    group.iter().copied().zip(runs.figures()).collect::<Vec<_>>()
                })
                .collect();
            for (i, f) in done {
                figures[i] = Some(f);
            }
        }
        let outcomes: Vec<Outcome> = combinations
            .par_iter()
            .zip(figures.into_par_iter())
            .map(|(&params, figures)| {
                if let Some(figures) = figures {
                    return Outcome { params, figures };
                }
                let strategies = StrategySet { default: params, overrides: Default::default() };
                // Figures only: no signal or trade here is ever shown.
                let engine = crate::engine::Engine::bare(strategies);
                let mut tester = Tester::new(engine, self.fill, self.spread_pips, self.from, self.to);
                if one_series {
                    tester = tester.tallying();
                }
                let mut seen = Summary::default();
                for c in files.iter().flatten() {
                    tester.on_candle(c, &mut seen);
                }
                let figures = tester.figures();
                if let Ok(mut first) = counted.lock()
                    && first.is_none()
                {
                    *first = Some(seen);
                }
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                Outcome { params, figures }
            })
            .collect();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        // Candles the engine took (the same for every combination).
        if let Some(seen) = counted.into_inner().ok().flatten() {
            read.candles = seen.candles;
        }
        read.elapsed = started.elapsed();
        Ok(Results { outcomes, read })
    }
}

/// What a sweep ranks by (`--rank`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rank {
    /// The mean R per trade.
    #[value(name = "expectancy-r", alias = "expectancy_r")]
    ExpectancyR,
    /// The sum of R.
    R,
    /// R won over R lost.
    #[value(name = "profit-factor", alias = "profit_factor")]
    ProfitFactor,
    /// Van Tharp's system quality number.
    Sqn,
}

impl Rank {
    pub fn name(self) -> &'static str {
        match self {
            Rank::ExpectancyR => "expectancy_r",
            Rank::R => "r",
            Rank::ProfitFactor => "profit_factor",
            Rank::Sqn => "sqn",
        }
    }

    /// The measure of `f`; None when it has none (no trades; no spread in R).
    /// A profit factor with no losing trade is infinite: nothing beats it.
    pub fn of(self, f: &Figures) -> Option<f64> {
        if f.trades == 0 {
            return None;
        }
        match self {
            Rank::ExpectancyR => Some(f.expectancy_r),
            Rank::R => Some(f.r),
            Rank::ProfitFactor => Some(f.profit_factor.unwrap_or(f64::INFINITY)),
            Rank::Sqn => f.sqn,
        }
    }
}

impl Results {
    /// The combinations with at least `min_trades` closed trades, best
    /// first by `rank` (ties in the order of the axes).
    pub fn ranked(&self, rank: Rank, min_trades: u64) -> Vec<&Outcome> {
        let mut kept: Vec<(&Outcome, f64)> = self
            .outcomes
            .iter()
            .filter(|o| o.figures.trades >= min_trades)
            .filter_map(|o| rank.of(&o.figures).map(|v| (o, v)))
            .collect();
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        kept.into_iter().map(|(o, _)| o).collect()
    }

    /// One `sweep` record per combination, as JSON lines.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        for o in &self.outcomes {
            serde_json::to_writer(&mut *out, &Record::new(o)).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// One row per combination.
    pub fn write_csv(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "ma,fast,slow,atr,sl,tp,trades,wins,win_rate,pips,r,expectancy_r,profit_factor,sqn,max_drawdown_r"
        )?;
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for o in &self.outcomes {
            let (p, f) = (&o.params, &o.figures);
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                p.ma,
                p.fast,
                p.slow,
                p.atr,
                p.sl_mult,
                p.tp_mult,
                f.trades,
                f.wins,
                f.win_rate,
                f.pips,
                f.r,
                f.expectancy_r,
                opt(f.profit_factor),
                opt(f.sqn),
                f.max_drawdown_r
            )?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct Record {
    #[serde(rename = "type")]
    kind: &'static str,
    ma: MaKind,
    fast: u32,
    slow: u32,
    atr: u32,
    sl: f64,
    tp: f64,
    trades: u64,
    wins: u64,
    win_rate: f64,
    pips: f64,
    r: f64,
    expectancy_r: f64,
    profit_factor: Option<f64>,
    sqn: Option<f64>,
    max_drawdown_r: f64,
}

impl Record {
    fn new(o: &Outcome) -> Record {
        let (p, f) = (&o.params, &o.figures);
        Record {
            kind: "sweep",
            ma: p.ma,
            fast: p.fast,
            slow: p.slow,
            atr: p.atr,
            sl: p.sl_mult,
            tp: p.tp_mult,
            trades: f.trades,
            wins: f.wins,
            win_rate: f.win_rate,
            pips: f.pips,
            r: f.r,
            expectancy_r: f.expectancy_r,
            profit_factor: f.profit_factor,
            sqn: f.sqn,
            max_drawdown_r: f.max_drawdown_r,
        }
    }
}

mod kernel;
pub mod table;

#[cfg(test)]
mod tests {
    use super::*;

    fn axes() -> Axes {
        Axes {
            ma: vec![MaKind::Sma],
            fast: vec![5, 10, 20],
            slow: vec![10, 20],
            atr: vec![14],
            sl: vec![1.5],
            tp: vec![3.0],
        }
    }

    #[test]
    fn only_fast_below_slow_is_combined() {
        let pairs: Vec<(u32, u32)> = axes().combinations().iter().map(|p| (p.fast, p.slow)).collect();
        assert_eq!(pairs, vec![(5, 10), (5, 20), (10, 20)]);
        assert!(axes().is_sweep());
        let one = Axes { fast: vec![5], slow: vec![10], ..axes() };
        assert!(!one.is_sweep());
    }

    #[test]
    fn ranking_skips_thin_and_undefined_combinations() {
        let f =
            |trades, expectancy_r, profit_factor| Figures { trades, expectancy_r, profit_factor, ..Figures::default() };
        let p = StrategyParams::default();
        let results = Results {
            outcomes: vec![
                Outcome { params: p, figures: f(50, 0.1, Some(1.2)) },
                Outcome { params: p, figures: f(5, 9.0, None) },
                Outcome { params: p, figures: f(40, 0.3, Some(1.1)) },
                Outcome { params: p, figures: f(0, 0.0, None) },
            ],
            read: Summary::default(),
        };
        let e: Vec<f64> = results.ranked(Rank::ExpectancyR, 30).iter().map(|o| o.figures.expectancy_r).collect();
        assert_eq!(e, vec![0.3, 0.1]);
        let pf: Vec<u64> = results.ranked(Rank::ProfitFactor, 1).iter().map(|o| o.figures.trades).collect();
        assert_eq!(pf, vec![5, 50, 40], "no losing trade is the best profit factor; no trade has none");
    }
}

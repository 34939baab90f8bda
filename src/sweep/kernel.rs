//! The sweep's own loop for SMA combinations on one series: the same
//! signals and trades as the engine (`backtest::Tester`), at a fraction of
//! the work per candle.
//!
//! The engine keeps each combination's windows in a ring with running sums
//! and decides a crossover by the sign of `fast - slow`, exactly: on a near
//! tie it sums the window again in integer ticks (`DualSma::exact_sign`),
//! and elsewhere the running sums' error (a few ulps of the window's sum) is
//! far inside the margin it checks first. So the side of every crossover is
//! the exact sign of `sum_fast * slow - sum_slow * fast` over the closes in
//! ticks of 1e-8. Here those sums come from prefix sums of the ticks,
//! shared by every window length, and the sign is taken in integers: the
//! same decisions, a few integer operations per candle. The ATR is the
//! engine's own `Atr`. The trades are the engine's `Book`, called only while
//! a trade is open or a signal comes.
//!
//! Where that equality cannot be promised, [`Series::prepare`] declines and
//! the sweep runs the engine: a close off the 1e-8 grid, sums that could
//! overflow, or candles the engine would refuse (out of order, bad prices).

use crate::engine::StrategyParams;
use crate::engine::indicators::Atr;
use crate::engine::strategy::{crossing, stops};
use crate::engine::trade::{Book, Fill, Rules, Summary as Figures, Tally};
use crate::event::Signal;
use crate::event::Trade;
use crate::time::Ts;
use crate::types::Candle;

/// Ticks per unit of price: the grid `DualSma::exact_sign` sums on.
const TICKS: f64 = 1e8;

/// A close in ticks (`Series::prepare` checked that it is exact).
#[inline(always)]
fn ticks(close: f64) -> i64 {
    (close * TICKS).round() as i64
}

/// One series' candles, checked once for every SMA combination.
pub(super) struct Series<'a> {
    candles: &'a [Candle],
    max_slow: u32,
}

impl<'a> Series<'a> {
    /// `candles`: one series, in the order a backtest reads them. `to`: the
    /// last time a backtest applies. `max_slow`: the longest window to be
    /// run. None where the engine must decide (see the module's note).
    pub(super) fn prepare(candles: &'a [Candle], to: Ts, max_slow: u32) -> Option<Series<'a>> {
        let first = candles.first()?;
        if !candles.windows(2).all(|w| w[0].time < w[1].time) {
            return None;
        }
        // A backtest applies nothing after `to`: in order, that is a tail.
        let candles = &candles[..candles.partition_point(|c| c.time <= to)];
        if !candles.iter().all(|c| c.prices_ok() && c.key() == first.key()) {
            return None;
        }
        let mut sum = 0i64;
        let mut largest = 0i64;
        for c in candles {
            let t = (c.close * TICKS).round();
            // As `exact_sign` takes a close: the double nearest its ticks.
            if !(t.abs() < 9e15 && t / TICKS == c.close) {
                return None;
            }
            let t = t as i64;
            largest = largest.max(t.abs());
            // Every prefix sum fits an i64...
            sum = sum.checked_add(t)?;
        }
        // ...and so do `sum_fast * slow` and `sum_slow * fast`.
        let slow = i64::from(max_slow.max(1));
        largest.checked_mul(slow)?.checked_mul(slow)?.checked_mul(2)?;
        Some(Series { candles, max_slow })
    }

    /// The candles a backtest applies.
    pub(super) fn len(&self) -> usize {
        self.candles.len()
    }

    /// Whether the kernel takes `p` (else the engine must).
    pub(super) fn takes(&self, p: &StrategyParams) -> bool {
        p.ma == crate::engine::MaKind::Sma && p.fast >= 1 && p.fast < p.slow && p.slow <= self.max_slow
    }

    /// Combinations `params` (each one [`Series::takes`]) at the first candle.
    pub(super) fn group(&self, params: &[StrategyParams], fill: Fill, spread_pips: f64) -> Group<'_, 'a> {
        let pip = self.candles.first().map_or(1.0, |c| c.instrument.pip());
        let mut periods: Vec<u32> = params.iter().map(|p| p.atr).collect();
        periods.sort_unstable();
        periods.dedup();
        let runs = params
            .iter()
            .map(|&p| Run {
                p,
                atr: periods.iter().position(|&a| a == p.atr).unwrap_or(0),
                rules: Rules { fill, spread: spread_pips * pip },
                pip,
                book: Book::default(),
                tally: Tally::default(),
                closed: Vec::with_capacity(2),
                prev: 0,
            })
            .collect();
        Group {
            series: self,
            runs,
            lookback: params.iter().map(|p| p.slow as usize).max().unwrap_or(1),
            sums: vec![0],
            base: 0,
            total: 0,
            atrs: periods.into_iter().map(|p| (Atr::new(p), Vec::new())).collect(),
            at: 0,
        }
    }

    /// The figures of `p` over the series in one go.
    #[cfg(test)]
    fn run(&self, p: &StrategyParams, fill: Fill, spread_pips: f64, from: Ts) -> Figures {
        let mut group = self.group(std::slice::from_ref(p), fill, spread_pips);
        while group.step(self.len(), from) {}
        group.figures().remove(0)
    }
}

/// Combinations going through a [`Series`] together, a block of candles at
/// a time: the block stays in the cache while each takes it (one at a time
/// through all of a large file read every candle from memory once per
/// combination), and what they share is computed once per block. Memory:
/// the block's prefix sums and ATRs, and a small state per combination.
pub(super) struct Group<'s, 'a> {
    series: &'s Series<'a>,
    runs: Vec<Run>,
    /// The longest window of the runs: how far back the prefix sums reach.
    lookback: usize,
    /// `sums[k]`: the first `base + k` closes, in ticks; from `lookback`
    /// before the block to its end.
    sums: Vec<i64>,
    base: usize,
    /// All the closes so far, in ticks.
    total: i64,
    /// Per ATR period of the runs: the engine's ATR, and its value at each
    /// candle of the block (NaN while undefined).
    atrs: Vec<(Atr, Vec<f64>)>,
    /// The first candle of the next block.
    at: usize,
}

impl Group<'_, '_> {
    /// Takes every combination through the next `block` candles; false
    /// once there are none.
    pub(super) fn step(&mut self, block: usize, from: Ts) -> bool {
        let candles = self.series.candles;
        let (at, end) = (self.at, (self.at + block.max(1)).min(candles.len()));
        if at >= end {
            return false;
        }
        // The oldest sum the block reads is that of `at + 1 - lookback` closes.
        let keep = (at + 1).saturating_sub(self.lookback).max(self.base);
        self.sums.drain(..keep - self.base);
        self.base = keep;
        for c in &candles[at..end] {
            self.total += ticks(c.close);
            self.sums.push(self.total);
        }
        for (atr, values) in &mut self.atrs {
            values.clear();
            values.extend(candles[at..end].iter().map(|c| atr.update(c.high, c.low, c.close).unwrap_or(f64::NAN)));
        }
        let window = Window { candles, at, sums: &self.sums, base: self.base };
        for run in &mut self.runs {
            window.advance(run, end, &self.atrs[run.atr].1, from);
        }
        self.at = end;
        true
    }

    /// Each combination's figures so far (a tallying `Tester`'s), in the
    /// order they were given.
    pub(super) fn figures(&self) -> Vec<Figures> {
        self.runs.iter().map(|r| r.tally.summary()).collect()
    }
}

/// What a block's combinations read.
struct Window<'w> {
    candles: &'w [Candle],
    /// The block's first candle.
    at: usize,
    sums: &'w [i64],
    base: usize,
}

impl Window<'_> {
    /// Takes `run` through the block's candles up to `end`; `atr` holds the
    /// run's ATR at each of them.
    #[inline]
    fn advance(&self, run: &mut Run, end: usize, atr: &[f64], from: Ts) {
        let p = run.p;
        let (fast, slow) = (p.fast as usize, p.slow as usize);
        let (fast_n, slow_n) = (i64::from(p.fast), i64::from(p.slow));
        // `sum(n)` at candle i: the first n closes, i.e. `sums[n - base]`.
        let (sums, base) = (self.sums, self.base);
        // In registers through the loop, not in `run`.
        let mut prev = run.prev;
        let mut open = run.book.open.is_some();
        // Both means are defined from candle `slow - 1`, the sign before them from `slow`.
        for i in self.at.max(slow - 1)..end {
            let (in_fast, in_slow) = (in_window(sums, base, i, fast), in_window(sums, base, i, slow));
            let d = (in_fast * slow_n - in_slow * fast_n).signum();
            let a = atr[i - self.at];
            // No signal before the ATR can place its stops.
            let side = if i >= slow && !a.is_nan() { crossing(prev, d) } else { None };
            prev = d;
            if !open && side.is_none() {
                continue;
            }
            let c = &self.candles[i];
            let signal = side.filter(|_| c.time >= from).map(|side| {
                let (stop_loss, take_profit) = stops(side, c.close, a, &p);
                let mean = |n: usize| in_window(sums, base, i, n) as f64 / TICKS / n as f64;
                Signal {
                    id: String::new(),
                    instrument: c.instrument,
                    timeframe: c.timeframe,
                    time: c.time,
                    side,
                    price: c.close,
                    // Not the engine's running means to the last bit; no figure reads them.
                    fast: mean(fast),
                    slow: mean(slow),
                    atr: a,
                    stop_loss,
                    take_profit,
                    strategy: String::new(),
                }
            });
            run.book.on_candle_into(c, signal.as_ref(), &run.rules, run.pip, &mut run.closed);
            for t in run.closed.drain(..) {
                run.tally.add(&t);
            }
            open = run.book.open.is_some();
        }
        run.prev = prev;
    }
}

/// The last `n` closes up to candle `i`, in ticks.
#[inline(always)]
fn in_window(sums: &[i64], base: usize, i: usize, n: usize) -> i64 {
    sums[i + 1 - base] - sums[i + 1 - n - base]
}

/// One combination on its way through a [`Series`].
struct Run {
    p: StrategyParams,
    /// Its ATR among the group's.
    atr: usize,
    rules: Rules,
    pip: f64,
    book: Book,
    tally: Tally,
    closed: Vec<Trade>,
    /// The sign of `fast - slow` at the last candle seen (read from candle `slow` on).
    prev: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::Tester;
    use crate::engine::{Engine, MaKind, StrategySet};
    use crate::replay::Summary;
    use crate::types::{Instrument, Timeframe};

    /// A random walk on the 1e-5 grid with steps of a few ticks: windows
    /// often tie exactly, which is where a float comparison and an exact one
    /// part.
    fn walk(n: usize, seed: u64, step: i64) -> Vec<Candle> {
        let instrument = Instrument::new("EUR_USD").unwrap();
        let mut s = seed;
        let mut rnd = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as i64
        };
        let mut close = 110_000i64;
        (0..n)
            .map(|i| {
                let open = close;
                close = (close + rnd() % (2 * step + 1) - step).max(1_000);
                let high = open.max(close) + rnd() % (step + 1);
                let low = open.min(close) - rnd() % (step + 1);
                let px = |t: i64| t as f64 / 1e5;
                Candle {
                    instrument,
                    timeframe: Timeframe::H1,
                    time: Ts(1_500_000_000 + i as i64 * 3600),
                    open: px(open),
                    high: px(high),
                    low: px(low),
                    close: px(close),
                    volume: 0.0,
                }
            })
            .collect()
    }

    fn engine_figures(candles: &[Candle], p: StrategyParams, fill: Fill, spread: f64, from: Ts, to: Ts) -> Figures {
        let engine = Engine::bare(StrategySet { default: p, overrides: Default::default() });
        let mut tester = Tester::new(engine, fill, spread, Some(from), Some(to)).tallying();
        let mut seen = Summary::default();
        for c in candles {
            tester.on_candle(c, &mut seen);
        }
        tester.figures()
    }

    #[test]
    fn every_sma_combination_is_the_engines() {
        let mut compared = 0;
        let mut traded = 0;
        for (seed, step, n) in [(1, 1, 3000), (2, 3, 3000), (3, 40, 2000)] {
            let candles = walk(n, seed, step);
            let (start, end) = (candles[0].time, candles[n - 1].time);
            for (fill, spread, from, to) in [
                (Fill::Close, 0.0, Ts(i64::MIN), Ts(i64::MAX)),
                (Fill::NextOpen, 0.8, Ts(start.0 + 300 * 3600), Ts(end.0 - 500 * 3600)),
            ] {
                let series = Series::prepare(&candles, to, 60).expect("on the grid");
                let mut grid = Vec::new();
                for (fast, slow) in [(1, 2), (2, 3), (3, 7), (5, 20), (10, 60), (20, 21)] {
                    for (atr, sl, tp) in [(3, 1.0, 2.0), (14, 1.5, 3.0)] {
                        grid.push(StrategyParams { ma: MaKind::Sma, fast, slow, atr, sl_mult: sl, tp_mult: tp });
                    }
                }
                // All of them together a few candles at a time, as a sweep
                // runs them (the windows reach back across blocks), and each alone.
                let mut group = series.group(&grid, fill, spread);
                while group.step(7, from) {}
                for (p, together) in grid.iter().zip(group.figures()) {
                    assert!(series.takes(p));
                    let engine = engine_figures(&candles, *p, fill, spread, from, to);
                    assert_eq!(together, engine, "seed {seed} step {step} {p:?} {fill:?} from {from:?} to {to:?}");
                    assert_eq!(series.run(p, fill, spread, from), engine, "alone: {p:?}");
                    compared += 1;
                    traded += usize::from(engine.trades > 0);
                }
            }
        }
        assert_eq!(compared, 3 * 2 * 6 * 2);
        assert!(traded > compared * 9 / 10, "{traded} of {compared} traded");
    }

    #[test]
    fn it_declines_what_only_the_engine_can_say() {
        let candles = walk(500, 9, 3);
        let all = Ts(i64::MAX);
        assert!(Series::prepare(&candles, all, 50).is_some());
        // A close off the 1e-8 grid.
        let mut off = candles.clone();
        off[100].close += 1e-10;
        off[100].high += 1e-9;
        assert!(Series::prepare(&off, all, 50).is_none());
        // A candle the engine refuses: out of order, or bad prices.
        let mut late = candles.clone();
        late[200].time = late[199].time;
        assert!(Series::prepare(&late, all, 50).is_none());
        let mut bad = candles.clone();
        bad[300].low = bad[300].high + 0.1;
        assert!(Series::prepare(&bad, all, 50).is_none());
        // ...unless it is past `to`, where a backtest never looks.
        assert!(Series::prepare(&bad, bad[250].time, 50).is_some());
        // Two series.
        let mut two = candles.clone();
        two[10].instrument = Instrument::new("GBP_USD").unwrap();
        assert!(Series::prepare(&two, all, 50).is_none());
        // Not for an EMA, a fast not below slow, or a slow longer than prepared for.
        let series = Series::prepare(&candles, all, 50).unwrap();
        let p = StrategyParams { ma: MaKind::Sma, fast: 5, slow: 20, atr: 14, sl_mult: 1.5, tp_mult: 3.0 };
        assert!(series.takes(&p));
        assert!(!series.takes(&StrategyParams { ma: MaKind::Ema, ..p }));
        assert!(!series.takes(&StrategyParams { fast: 20, ..p }));
        assert!(!series.takes(&StrategyParams { slow: 60, ..p }));
    }
}

//! The trade rules: every signal as a paper trade, its outcome decided by the
//! candles after it. Pure (no I/O, no clock), one per series, so that live
//! tracking and `pipwatch backtest` are one code path.
//!
//! A signal opens a trade at its candle's close (or, with [`Fill::NextOpen`],
//! at the next candle's open), with its stop loss and take profit. On each
//! later closed candle of the series, in order:
//! 1. A long exits at `min(open, stop)` when `low <= stop`, else at
//!    `max(open, target)` when `high >= target`; a short mirrored. The stop
//!    wins when both levels are inside one candle (the pessimistic rule of
//!    backtesting.py and freqtrade). An exit at the open beyond the level is
//!    a gap: the loss can be worse than 1R.
//! 2. Then, if this candle gives a new signal while a trade is still open,
//!    that trade exits (`reversed`) where the new one is entered: at this
//!    candle's close, or with a next-open fill at the next candle's open
//!    (backtesting.py's `exclusive_orders`, either way).
//!
//! Data that ends with a trade open reports it `open`, marked at the last close.
//! R is the signed move from entry to exit over the planned risk
//! |entry − stop|; pips are by the instrument's pip. MAE and MFE are the worst
//! and best excursions in R while the trade was open: every candle it was open
//! through counts whole (its low and high), except the candle it exited on,
//! which counts only its exit price (which of the candle's extremes came first
//! is unknown: the pessimistic reading again). The entry candle does not
//! count with a fill at the close (the trade opens at its end).

use serde::{Deserialize, Serialize};

use crate::event::{ExitReason, Signal, Trade};
use crate::time::Ts;
use crate::types::{Candle, Side};

/// Where a signal's trade is entered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fill {
    /// At the signal candle's close: the signal's price.
    #[default]
    Close,
    /// At the next candle's open, with the signal's stop and target (so the
    /// risk in R is measured from the price actually paid).
    NextOpen,
}

/// What every trade of a run is charged and how it is entered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub fill: Fill,
    /// The spread in price units (pips × the instrument's pip): half is
    /// charged at entry and half at exit. Candles are read as mid or bid
    /// prices; stops and targets trigger on them as they are.
    pub spread: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { fill: Fill::Close, spread: 0.0 }
    }
}

/// A trade open on a series: small and serialisable, so a live instance can
/// keep it with the series' state and resume it after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenTrade {
    pub signal: Signal,
    /// Entered (false while a next-open fill waits for its candle).
    pub entered: bool,
    pub entry_time: Ts,
    /// The price paid, spread included.
    pub entry: f64,
    /// Candles the trade has been open through.
    pub bars: u32,
    /// Worst and best prices seen while open.
    pub worst: f64,
    pub best: f64,
}

impl OpenTrade {
    fn long(&self) -> bool {
        self.signal.side == Side::Buy
    }

    /// The planned risk in price: from entry to stop.
    fn risk(&self) -> f64 {
        (self.entry - self.signal.stop_loss).abs()
    }

    /// The signed move from entry to `price`, in the trade's favour.
    fn gain(&self, price: f64) -> f64 {
        if self.long() { price - self.entry } else { self.entry - price }
    }

    fn r(&self, gain: f64) -> f64 {
        let risk = self.risk();
        if risk > 0.0 { gain / risk } else { 0.0 }
    }

    fn see(&mut self, low: f64, high: f64) {
        let (worse, better) = if self.long() { (low, high) } else { (high, low) };
        if self.gain(worse) < self.gain(self.worst) {
            self.worst = worse;
        }
        if self.gain(better) > self.gain(self.best) {
            self.best = better;
        }
    }

    /// The running result at `price` (pips, R), for a console showing an open trade.
    pub fn mark(&self, price: f64, pip: f64) -> (f64, f64) {
        let gain = self.gain(price);
        (gain / pip, self.r(gain))
    }

    /// The closed trade, exiting at `price` (spread not yet charged).
    fn close(&self, time: Ts, price: f64, reason: ExitReason, gap: bool, rules: &Rules, pip: f64) -> Trade {
        let half = rules.spread / 2.0;
        // The exit pays the other half of the spread (not for a mark of an open trade).
        let exit = match (reason, self.long()) {
            (ExitReason::Open, _) => price,
            (_, true) => price - half,
            (_, false) => price + half,
        };
        let gain = self.gain(exit);
        let s = &self.signal;
        Trade {
            id: s.id.clone(),
            instrument: s.instrument,
            timeframe: s.timeframe,
            side: s.side,
            entry_time: self.entry_time,
            entry: self.entry,
            stop_loss: s.stop_loss,
            take_profit: s.take_profit,
            exit_time: time,
            exit,
            exit_reason: reason,
            gap,
            pips: gain / pip,
            r: self.r(gain),
            bars: self.bars,
            mae_r: self.r(self.gain(self.worst)).min(0.0),
            mfe_r: self.r(self.gain(self.best)).max(0.0),
        }
    }
}

/// One series' paper trading: at most one trade open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub open: Option<OpenTrade>,
    /// With a next-open fill, the trade an opposite signal reversed: it
    /// exits at the next candle's open, where the new one enters. Never set
    /// with a fill at the close, so a live instance (which fills at the
    /// close) has nothing here to keep: skipped, the stored form is as before.
    #[serde(skip)]
    reversing: Option<OpenTrade>,
}

impl Book {
    /// One closed candle of the series, with the signal it gave, if any.
    /// Returns the trades it closed (at most two: one at a stop or target,
    /// or one reversed, and never both for one trade).
    pub fn on_candle(&mut self, candle: &Candle, signal: Option<&Signal>, rules: &Rules, pip: f64) -> Vec<Trade> {
        let mut closed = Vec::new();
        self.on_candle_into(candle, signal, rules, pip, &mut closed);
        closed
    }

    /// [`Book::on_candle`], appending what closed to `closed`: a backtest
    /// calls this once per candle per combination.
    #[inline]
    pub fn on_candle_into(
        &mut self,
        candle: &Candle,
        signal: Option<&Signal>,
        rules: &Rules,
        pip: f64,
        closed: &mut Vec<Trade>,
    ) {
        if let Some(mut t) = self.reversing.take() {
            t.bars += 1;
            t.see(candle.open, candle.open);
            closed.push(t.close(candle.time, candle.open, ExitReason::Reversed, false, rules, pip));
        }
        if let Some(t) = self.open.as_mut() {
            if !t.entered {
                let half = rules.spread / 2.0;
                t.entry = if t.long() { candle.open + half } else { candle.open - half };
                t.entry_time = candle.time;
                t.entered = true;
                t.worst = candle.open;
                t.best = candle.open;
            }
            t.bars += 1;
            if let Some((price, reason, gap)) = exit(t, candle) {
                t.see(price, price);
                closed.push(t.close(candle.time, price, reason, gap, rules, pip));
                self.open = None;
            } else {
                t.see(candle.low, candle.high);
            }
        }
        if let Some(s) = signal {
            if let Some(t) = self.open.take() {
                match rules.fill {
                    Fill::Close => {
                        closed.push(t.close(candle.time, candle.close, ExitReason::Reversed, false, rules, pip))
                    }
                    // Acted on when the new one is: at the next open.
                    Fill::NextOpen => self.reversing = Some(t),
                }
            }
            self.open = Some(open(s, rules));
        }
    }

    /// The trade still open at the end of the data, marked at `last`'s close
    /// (not closed: it stays open). A next-open trade never entered has no mark.
    pub fn mark_open(&self, last: &Candle, rules: &Rules, pip: f64) -> Option<Trade> {
        // A reversal the data ended before: the old trade is still the open one.
        let t = self.reversing.as_ref().or(self.open.as_ref().filter(|t| t.entered))?;
        Some(t.close(last.time, last.close, ExitReason::Open, false, rules, pip))
    }
}

fn open(s: &Signal, rules: &Rules) -> OpenTrade {
    let half = rules.spread / 2.0;
    let entered = rules.fill == Fill::Close;
    let entry = if s.side == Side::Buy { s.price + half } else { s.price - half };
    OpenTrade { signal: s.clone(), entered, entry_time: s.time, entry, bars: 0, worst: s.price, best: s.price }
}

/// Whether `candle` takes the trade out, at what price, why, and whether
/// through a gap at the open.
fn exit(t: &OpenTrade, c: &Candle) -> Option<(f64, ExitReason, bool)> {
    let (stop, target) = (t.signal.stop_loss, t.signal.take_profit);
    if t.long() {
        if c.low <= stop {
            return Some((c.open.min(stop), ExitReason::Stop, c.open < stop));
        }
        if c.high >= target {
            return Some((c.open.max(target), ExitReason::Target, c.open > target));
        }
    } else {
        if c.high >= stop {
            return Some((c.open.max(stop), ExitReason::Stop, c.open > stop));
        }
        if c.low <= target {
            return Some((c.open.min(target), ExitReason::Target, c.open < target));
        }
    }
    None
}

/// The figures of a set of closed trades. A trade with R exactly 0 is
/// neither a win nor a loss (it counts in `trades`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub trades: u64,
    pub wins: u64,
    pub losses: u64,
    /// wins / trades.
    pub win_rate: f64,
    pub pips: f64,
    /// The sum of R.
    pub r: f64,
    /// The mean R per trade.
    pub expectancy_r: f64,
    /// The R won over the R lost; null with no losing trade.
    pub profit_factor: Option<f64>,
    /// Van Tharp's system quality number: √n × mean R / standard deviation
    /// of R (n − 1); null below two trades or with no spread in R.
    pub sqn: Option<f64>,
    /// The largest fall of cumulative R from a peak (starting at 0), in R.
    pub max_drawdown_r: f64,
    pub max_consecutive_losses: u64,
    pub avg_bars: f64,
}

/// Adds up closed trades, in order, into a [`Summary`].
#[derive(Clone, Debug, Default)]
pub struct Tally {
    s: Summary,
    won: f64,
    lost: f64,
    sum_sq: f64,
    bars: u64,
    cum: f64,
    peak: f64,
    streak: u64,
}

impl Tally {
    pub fn add(&mut self, t: &Trade) {
        if t.exit_reason == ExitReason::Open {
            return;
        }
        let s = &mut self.s;
        s.trades += 1;
        s.pips += t.pips;
        s.r += t.r;
        self.sum_sq += t.r * t.r;
        self.bars += u64::from(t.bars);
        if t.r > 0.0 {
            s.wins += 1;
            self.won += t.r;
            self.streak = 0;
        } else if t.r < 0.0 {
            s.losses += 1;
            self.lost -= t.r;
            self.streak += 1;
            s.max_consecutive_losses = s.max_consecutive_losses.max(self.streak);
        }
        self.cum += t.r;
        self.peak = self.peak.max(self.cum);
        s.max_drawdown_r = s.max_drawdown_r.max(self.peak - self.cum);
    }

    pub fn summary(&self) -> Summary {
        let mut s = self.s.clone();
        let n = s.trades as f64;
        if s.trades > 0 {
            s.win_rate = s.wins as f64 / n;
            s.expectancy_r = s.r / n;
            s.avg_bars = self.bars as f64 / n;
        }
        s.profit_factor = (self.lost > 0.0).then(|| self.won / self.lost);
        if s.trades >= 2 {
            let var = (self.sum_sq - n * s.expectancy_r * s.expectancy_r) / (n - 1.0);
            s.sqn = (var > 0.0).then(|| n.sqrt() * s.expectancy_r / var.sqrt());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Instrument, Timeframe};

    const H: i64 = 3600;

    fn candle(n: i64, open: f64, high: f64, low: f64, close: f64) -> Candle {
        Candle {
            instrument: Instrument::new("EUR_USD").unwrap(),
            timeframe: Timeframe::H1,
            time: Ts(1_709_546_400 + n * H),
            open,
            high,
            low,
            close,
            volume: 0.0,
        }
    }

    fn signal_on(c: &Candle, side: Side, stop: f64, target: f64) -> Signal {
        Signal {
            id: Signal::make_id(c.instrument, c.timeframe, c.time, side),
            instrument: c.instrument,
            timeframe: c.timeframe,
            time: c.time,
            side,
            price: c.close,
            fast: 0.0,
            slow: 0.0,
            atr: 0.0,
            stop_loss: stop,
            take_profit: target,
            strategy: "test".into(),
        }
    }

    const PIP: f64 = 0.0001;

    /// Runs a book over candles with signals on the given ones; returns every
    /// closed trade and the open one marked at the end.
    fn run(candles: &[Candle], signals: &[(usize, Signal)], rules: Rules) -> Vec<Trade> {
        let mut book = Book::default();
        let mut out = Vec::new();
        for (i, c) in candles.iter().enumerate() {
            let s = signals.iter().find(|(at, _)| *at == i).map(|(_, s)| s);
            out.extend(book.on_candle(c, s, &rules, PIP));
        }
        out.extend(candles.last().and_then(|l| book.mark_open(l, &rules, PIP)));
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// The DESIGN example: a short stopped out, 9 candles later.
    #[test]
    fn a_short_hit_by_its_stop() {
        let mut c = vec![candle(0, 1.0860, 1.0862, 1.0848, 1.0850)];
        for n in 1..9 {
            c.push(candle(n, 1.0850, 1.0860, 1.0838, 1.0850));
        }
        c.push(candle(9, 1.0850, 1.0885, 1.0845, 1.0870));
        let s = signal_on(&c[0], Side::Sell, 1.0880, 1.0790);
        let t = run(&c, &[(0, s)], Rules::default());
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!((t.exit_reason, t.gap, t.bars), (ExitReason::Stop, false, 9));
        assert!(close(t.exit, 1.0880) && close(t.pips, -30.0) && close(t.r, -1.0), "{t:?}");
        assert!(close(t.mae_r, -1.0) && close(t.mfe_r, 0.4), "{t:?}");
        assert_eq!(t.exit_time, c[9].time);
    }

    #[test]
    fn the_stop_wins_when_both_levels_are_inside_one_candle() {
        let c = [candle(0, 1.0, 1.0, 1.0, 1.1000), candle(1, 1.1000, 1.1100, 1.0900, 1.1050)];
        let s = signal_on(&c[0], Side::Buy, 1.0950, 1.1080);
        let t = run(&c, &[(0, s)], Rules::default());
        assert_eq!((t[0].exit_reason, t[0].gap), (ExitReason::Stop, false));
        assert!(close(t[0].r, -1.0));
    }

    #[test]
    fn a_gap_through_the_stop_loses_more_than_1r_and_through_the_target_wins_more() {
        let c = [candle(0, 1.0, 1.0, 1.0, 1.1000), candle(1, 1.0900, 1.0920, 1.0880, 1.0900)];
        let s = signal_on(&c[0], Side::Buy, 1.0950, 1.1100);
        let t = run(&c, &[(0, s)], Rules::default());
        assert_eq!((t[0].exit_reason, t[0].gap), (ExitReason::Stop, true));
        assert!(close(t[0].exit, 1.0900) && close(t[0].r, -2.0), "{:?}", t[0]);

        let c = [candle(0, 1.0, 1.0, 1.0, 1.1000), candle(1, 1.1200, 1.1250, 1.1190, 1.1210)];
        let s = signal_on(&c[0], Side::Buy, 1.0950, 1.1100);
        let t = run(&c, &[(0, s)], Rules::default());
        assert_eq!((t[0].exit_reason, t[0].gap), (ExitReason::Target, true));
        assert!(close(t[0].exit, 1.1200) && close(t[0].r, 4.0), "{:?}", t[0]);
    }

    /// A candle that hits the stop and gives the opposite signal: the stop
    /// first, then the new trade opens at the close (nothing is reversed).
    #[test]
    fn a_reversal_on_the_candle_that_hits_the_stop() {
        let c = [
            candle(0, 1.0, 1.0, 1.0, 1.1000),
            candle(1, 1.1000, 1.1010, 1.0990, 1.1000),
            candle(2, 1.1000, 1.1005, 1.0940, 1.0960),
            candle(3, 1.0960, 1.0970, 1.0950, 1.0955),
        ];
        let buy = signal_on(&c[0], Side::Buy, 1.0950, 1.1100);
        let sell = signal_on(&c[2], Side::Sell, 1.1010, 1.0860);
        let t = run(&c, &[(0, buy), (2, sell.clone())], Rules::default());
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].exit_reason, t[0].bars), (ExitReason::Stop, 2));
        assert_eq!((t[1].id.as_str(), t[1].exit_reason), (sell.id.as_str(), ExitReason::Open));
        assert!(close(t[1].entry, 1.0960) && close(t[1].exit, 1.0955));

        // A signal on a candle that leaves the trade open reverses it at the close.
        let c = [
            candle(0, 1.0, 1.0, 1.0, 1.1000),
            candle(1, 1.1000, 1.1040, 1.0990, 1.1030),
            candle(2, 1.1030, 1.1035, 1.1020, 1.1025),
        ];
        let buy = signal_on(&c[0], Side::Buy, 1.0950, 1.1100);
        let sell = signal_on(&c[1], Side::Sell, 1.1080, 1.0900);
        let t = run(&c, &[(0, buy), (1, sell)], Rules::default());
        assert_eq!((t[0].exit_reason, t[0].bars), (ExitReason::Reversed, 1));
        assert!(close(t[0].exit, 1.1030) && close(t[0].r, 0.6), "{:?}", t[0]);
    }

    #[test]
    fn a_usd_jpy_trade_counts_pips_of_a_hundredth() {
        let pip = Instrument::new("USD_JPY").unwrap().pip();
        assert_eq!(pip, 0.01);
        let c = [candle(0, 150.0, 150.0, 150.0, 150.00), candle(1, 150.00, 150.65, 149.90, 150.60)];
        let s = signal_on(&c[0], Side::Buy, 149.70, 150.60);
        let mut book = Book::default();
        book.on_candle(&c[0], Some(&s), &Rules::default(), pip);
        let t = book.on_candle(&c[1], None, &Rules::default(), pip);
        assert_eq!(t[0].exit_reason, ExitReason::Target);
        assert!(close(t[0].pips, 60.0) && close(t[0].r, 2.0), "{:?}", t[0]);
    }

    /// Entered at the next candle's open, with the signal's levels: the risk
    /// is measured from there, and that candle can already take it out.
    #[test]
    fn next_open_enters_at_the_following_open() {
        let c = [
            candle(0, 1.0, 1.0, 1.0, 1.1000),
            candle(1, 1.1010, 1.1020, 1.1000, 1.1015),
            candle(2, 1.1015, 1.1110, 1.1010, 1.1100),
        ];
        let s = signal_on(&c[0], Side::Buy, 1.0960, 1.1100);
        let t = run(&c, &[(0, s)], Rules { fill: Fill::NextOpen, spread: 0.0 });
        assert_eq!((t[0].entry_time, t[0].exit_reason, t[0].bars), (c[1].time, ExitReason::Target, 2));
        assert!(close(t[0].entry, 1.1010) && close(t[0].r, 90.0 / 50.0), "{:?}", t[0]);
        // A next-open trade whose candle never came has no mark.
        let t = run(
            &c[..1],
            &[(0, signal_on(&c[0], Side::Buy, 1.0960, 1.1100))],
            Rules { fill: Fill::NextOpen, spread: 0.0 },
        );
        assert!(t.is_empty());
    }

    /// With a next-open fill, a reversed trade exits at the next open,
    /// where the new one enters: not at the close of the signal's candle,
    /// a price nobody acting on the signal could have had.
    #[test]
    fn next_open_reverses_at_the_following_open() {
        let c = [
            candle(0, 1.0, 1.0, 1.0, 1.1000),
            candle(1, 1.1005, 1.1020, 1.1000, 1.1010),
            candle(2, 1.1010, 1.1030, 1.1000, 1.1020),
            candle(3, 1.1030, 1.1040, 1.1010, 1.1015),
        ];
        let buy = signal_on(&c[0], Side::Buy, 1.0900, 1.1200);
        let sell = signal_on(&c[2], Side::Sell, 1.1120, 1.0820);
        let rules = Rules { fill: Fill::NextOpen, spread: 0.0 };
        let t = run(&c, &[(0, buy.clone()), (2, sell.clone())], rules);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(
            (t[0].id.as_str(), t[0].exit_reason, t[0].exit_time),
            (buy.id.as_str(), ExitReason::Reversed, c[3].time)
        );
        assert!(close(t[0].entry, 1.1005) && close(t[0].exit, 1.1030), "{:?}", t[0]);
        assert_eq!(t[0].bars, 3, "candles 1 and 2, and the one it exits at the open of");
        assert_eq!(
            (t[1].id.as_str(), t[1].entry_time, t[1].exit_reason),
            (sell.id.as_str(), c[3].time, ExitReason::Open)
        );
        assert!(close(t[1].entry, 1.1030));

        // The data ends on the signal's candle: the old trade is still the open one.
        let t = run(&c[..3], &[(0, buy.clone()), (2, sell)], rules);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!((t[0].id.as_str(), t[0].exit_reason), (buy.id.as_str(), ExitReason::Open));
        assert!(close(t[0].exit, 1.1020));
    }

    /// Half the spread at entry, half at exit: a 2-pip spread costs 2 pips.
    #[test]
    fn the_spread_is_charged_half_at_entry_and_half_at_exit() {
        let c = [candle(0, 1.0, 1.0, 1.0, 1.1000), candle(1, 1.1000, 1.1060, 1.0990, 1.1050)];
        let s = signal_on(&c[0], Side::Buy, 1.0950, 1.1050);
        let plain = run(&c, &[(0, s.clone())], Rules::default());
        let spread = run(&c, &[(0, s)], Rules { fill: Fill::Close, spread: 2.0 * PIP });
        assert!(close(plain[0].pips, 50.0));
        assert!(close(spread[0].pips, 48.0), "{:?}", spread[0]);
        assert!(close(spread[0].entry, 1.1001) && close(spread[0].exit, 1.1049));
    }

    #[test]
    fn a_summary_of_closed_trades() {
        let mut tally = Tally::default();
        let trade = |r: f64, bars: u32, reason: ExitReason| Trade {
            id: String::new(),
            instrument: Instrument::new("EUR_USD").unwrap(),
            timeframe: Timeframe::H1,
            side: Side::Buy,
            entry_time: Ts(0),
            entry: 1.0,
            stop_loss: 0.99,
            take_profit: 1.02,
            exit_time: Ts(1),
            exit: 1.0,
            exit_reason: reason,
            gap: false,
            pips: r * 100.0,
            r,
            bars,
            mae_r: 0.0,
            mfe_r: 0.0,
        };
        for (r, bars) in [(2.0, 4), (-1.0, 2), (-1.0, 3), (0.0, 1), (2.0, 5), (-1.0, 1)] {
            tally.add(&trade(r, bars, ExitReason::Target));
        }
        tally.add(&trade(5.0, 9, ExitReason::Open));
        let s = tally.summary();
        assert_eq!((s.trades, s.wins, s.losses, s.max_consecutive_losses), (6, 2, 3, 2));
        assert!(close(s.r, 1.0) && close(s.pips, 100.0) && close(s.expectancy_r, 1.0 / 6.0));
        assert!(close(s.win_rate, 2.0 / 6.0) && close(s.avg_bars, 16.0 / 6.0));
        assert!(close(s.profit_factor.unwrap(), 4.0 / 3.0));
        // Cumulative R: 2, 1, 0, 0, 2, 1: from the peak of 2 down to 0.
        assert!(close(s.max_drawdown_r, 2.0));
        // R: mean 1/6; sample variance (sum of squares 11 - 6 * (1/6)^2) / 5.
        let sd = ((11.0 - 6.0 / 36.0) / 5.0f64).sqrt();
        assert!(close(s.sqn.unwrap(), 6f64.sqrt() * (1.0 / 6.0) / sd));
        assert_eq!(Tally::default().summary().profit_factor, None);
    }
}

//! The crossover rule and ATR stops, per series.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::indicators::{Atr, DualSma, Ema};
use crate::time::Ts;
use crate::types::{BadCandle, Candle, Side};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaKind {
    Sma,
    Ema,
}

impl fmt::Display for MaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaKind::Sma => "sma",
            MaKind::Ema => "ema",
        })
    }
}

/// The parameters of one series' strategy, after per-instrument overrides.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyParams {
    pub ma: MaKind,
    pub fast: u32,
    pub slow: u32,
    pub atr: u32,
    pub sl_mult: f64,
    pub tp_mult: f64,
}

impl Default for StrategyParams {
    fn default() -> Self {
        StrategyParams { ma: MaKind::Sma, fast: 10, slow: 20, atr: 14, sl_mult: 1.5, tp_mult: 3.0 }
    }
}

impl StrategyParams {
    /// How signals name their strategy, e.g. `sma 10/20`.
    pub fn label(&self) -> String {
        format!("{} {}/{}", self.ma, self.fast, self.slow)
    }

    /// Candles of history that make every indicator defined and, for an EMA,
    /// let the seed's weight decay below 1e-3 (`(1-k)^(4N)` ≈ e^-8).
    pub fn warmup_candles(&self) -> u32 {
        let ma = match self.ma {
            MaKind::Sma => self.slow + 1,
            MaKind::Ema => self.slow.saturating_mul(4),
        };
        ma.max(self.atr + 2)
    }
}

/// The two moving averages. SMAs share one window; EMAs need none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Mas {
    Sma(DualSma),
    Ema(Ema, Ema),
}

impl Mas {
    fn new(p: &StrategyParams) -> Self {
        match p.ma {
            MaKind::Sma => Mas::Sma(DualSma::new(p.fast, p.slow)),
            MaKind::Ema => Mas::Ema(Ema::new(p.fast), Ema::new(p.slow)),
        }
    }

    #[inline(always)]
    fn update(&mut self, x: f64) -> (Option<f64>, Option<f64>) {
        match self {
            Mas::Sma(d) => d.update(x),
            Mas::Ema(f, s) => (f.update(x), s.update(x)),
        }
    }

    /// The exact sign of fast - slow where it can be known exactly (SMAs).
    fn exact_sign(&self) -> Option<f64> {
        match self {
            Mas::Sma(d) => d.exact_sign(),
            Mas::Ema(..) => None,
        }
    }

    fn values(&self) -> (Option<f64>, Option<f64>) {
        match self {
            Mas::Sma(d) => d.values(),
            Mas::Ema(f, s) => (f.value(), s.value()),
        }
    }
}

/// The last accepted candle of a series: where a restart resumes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Last {
    pub time: Ts,
    pub close: f64,
}

/// A stored difference that compares by bits, so that two states with an
/// undefined (NaN) difference are equal.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Diff(f64);

impl PartialEq for Diff {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// A candle the series refused; [`SeriesState::explain`] says why. Kept to
/// one byte so the hot path returns in a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Everything a series needs to go on after a restart: indicator state, the
/// previous MA values for the crossover test, the last accepted candle and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub params: StrategyParams,
    mas: Mas,
    atr: Atr,
    /// fast - slow after the previous candle; NaN until both are defined.
    /// For finite doubles the difference has the exact sign of the comparison
    /// (gradual underflow makes it 0 only when they are equal), and every
    /// comparison with NaN is false, so no Option is needed on the hot path.
    prev_diff: Diff,
    // NOTE: only the last candle's time and close are kept, not the candle:
    // copying 72 bytes per step was a measurable share of the hot path.
    last: Option<Last>,
    pub candles: u64,
    pub rejected: u64,
    pub signals: u64,
}

impl SeriesState {
    pub fn new(params: StrategyParams) -> Self {
        SeriesState {
            params,
            mas: Mas::new(&params),
            atr: Atr::new(params.atr),
            prev_diff: Diff(f64::NAN),
            last: None,
            candles: 0,
            rejected: 0,
            signals: 0,
        }
    }

    /// Fresh indicators for new parameters, keeping the last candle so that
    /// nothing already applied is applied (and signalled) again.
    pub fn reset_indicators(&mut self, params: StrategyParams) {
        let keep = (self.last, self.candles, self.rejected, self.signals);
        *self = SeriesState::new(params);
        (self.last, self.candles, self.rejected, self.signals) = keep;
    }

    pub fn last_time(&self) -> Option<Ts> {
        self.last.map(|c| c.time)
    }

    pub fn last(&self) -> Option<Last> {
        self.last
    }

    pub fn values(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let (fast, slow) = self.mas.values();
        (fast, slow, self.atr.value())
    }

    /// Validates and applies one closed candle, returning the crossover it
    /// made, if any; the indicator values are then in [`values`](Self::values).
    /// A refused candle leaves the state untouched except for the rejection
    /// counter.
    // Inlined into its one caller per path (the engine's apply): a call per
    // candle on the hottest path buys nothing.
    #[inline(always)]
    pub fn step(&mut self, c: &Candle) -> Result<Option<Side>, Refused> {
        let after_last = self.last.is_none_or(|last| c.time > last.time);
        if !(after_last && c.prices_ok()) {
            self.rejected += 1;
            return Err(Refused);
        }
        let (fast, slow) = self.mas.update(c.close);
        let atr = self.atr.update(c.high, c.low, c.close);
        let diff = match (fast, slow) {
            // Within the running sums' error of a tie, only an exact sign can
            // say whether the MAs crossed (ties do happen on a 1e-5 price grid).
            (Some(f), Some(s)) if (f - s).abs() <= 1e-12 * s.abs() => self.mas.exact_sign().unwrap_or(f - s),
            (Some(f), Some(s)) => f - s,
            _ => f64::NAN,
        };
        let pd = if atr.is_some() { self.prev_diff.0 } else { f64::NAN };
        let cross = if diff > 0.0 && pd <= 0.0 {
            Some(Side::Buy)
        } else if diff < 0.0 && pd >= 0.0 {
            Some(Side::Sell)
        } else {
            None
        };
        self.prev_diff = Diff(diff);
        self.last = Some(Last { time: c.time, close: c.close });
        self.candles += 1;
        self.signals += u64::from(cross.is_some());
        Ok(cross)
    }

    /// Why `c` was refused (it must have been: the state did not move).
    #[cold]
    pub fn explain(&self, c: &Candle) -> BadCandle {
        match (c.check_prices(), self.last) {
            (Err(e), _) => e,
            (Ok(()), Some(last)) => BadCandle::NotAfter { time: c.time, last: last.time },
            (Ok(()), None) => BadCandle::NotAfter { time: c.time, last: c.time },
        }
    }
}

/// Stop loss and take profit for an entry at `price`.
pub fn stops(side: Side, price: f64, atr: f64, p: &StrategyParams) -> (f64, f64) {
    match side {
        Side::Buy => (price - atr * p.sl_mult, price + atr * p.tp_mult),
        Side::Sell => (price + atr * p.sl_mult, price - atr * p.tp_mult),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Instrument, Timeframe};

    fn candles(closes: &[f64]) -> Vec<Candle> {
        let instrument = Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}"));
        closes
            .iter()
            .enumerate()
            .map(|(i, &c)| Candle {
                instrument,
                timeframe: Timeframe::H1,
                time: Ts(i as i64 * 3600),
                open: c,
                high: c + 0.001,
                low: c - 0.001,
                close: c,
                volume: 0.0,
            })
            .collect()
    }

    #[test]
    fn crossover_fires_once_at_the_crossing_candle() {
        let p = StrategyParams { ma: MaKind::Sma, fast: 2, slow: 3, atr: 2, sl_mult: 1.5, tp_mult: 3.0 };
        let mut s = SeriesState::new(p);
        // Falling, then rising: fast crosses above slow at index 5 only.
        let cs = candles(&[1.5, 1.4, 1.3, 1.2, 1.1, 1.4, 1.6, 1.7]);
        let crosses: Vec<_> = cs.iter().map(|c| s.step(c)).collect();
        let expected: Vec<Result<Option<Side>, Refused>> =
            vec![Ok(None), Ok(None), Ok(None), Ok(None), Ok(None), Ok(Some(Side::Buy)), Ok(None), Ok(None)];
        assert_eq!(crosses, expected);
        assert_eq!(s.signals, 1);
    }

    #[test]
    fn sell_and_stops() {
        let p = StrategyParams { ma: MaKind::Sma, fast: 2, slow: 3, atr: 2, sl_mult: 1.5, tp_mult: 3.0 };
        let mut s = SeriesState::new(p);
        let cs = candles(&[1.1, 1.2, 1.3, 1.4, 1.5, 1.2, 1.0]);
        let steps: Vec<_> = cs.iter().filter_map(|c| s.step(c).ok()).collect();
        let sell = steps.iter().position(|st| *st == Some(Side::Sell));
        assert_eq!(sell, Some(5));
        let (sl, tp) = stops(Side::Sell, 1.2, 0.01, &p);
        assert!((sl - 1.215).abs() < 1e-12 && (tp - 1.17).abs() < 1e-12);
        let (sl, tp) = stops(Side::Buy, 1.2, 0.01, &p);
        assert!((sl - 1.185).abs() < 1e-12 && (tp - 1.23).abs() < 1e-12);
    }

    #[test]
    fn no_signal_while_atr_undefined() {
        // ATR(10) needs 11 bars; the crossing at index 5 comes before it is defined.
        let p = StrategyParams { ma: MaKind::Sma, fast: 2, slow: 3, atr: 10, sl_mult: 1.5, tp_mult: 3.0 };
        let mut s = SeriesState::new(p);
        let crosses = candles(&[1.5, 1.4, 1.3, 1.2, 1.1, 1.4, 1.6, 1.7]).iter().filter_map(|c| s.step(c).ok()?).count();
        assert_eq!(crosses, 0);
    }

    #[test]
    fn equal_mas_then_apart_is_a_cross() {
        // fast[t-1] == slow[t-1] counts as "not above" (<=), per the rule.
        let p = StrategyParams { ma: MaKind::Sma, fast: 1, slow: 2, atr: 1, sl_mult: 1.0, tp_mult: 1.0 };
        let mut s = SeriesState::new(p);
        let cs = candles(&[1.0, 1.0, 1.0, 1.1]);
        let got: Vec<_> = cs.iter().map(|c| s.step(c).ok().flatten()).collect();
        assert_eq!(got, vec![None, None, None, Some(Side::Buy)]);
    }

    #[test]
    fn rejects_time_not_after_last_and_keeps_state() {
        let mut s = SeriesState::new(StrategyParams::default());
        let cs = candles(&[1.0, 1.1]);
        assert!(s.step(&cs[1]).is_ok());
        let before = s.clone();
        assert_eq!(s.step(&cs[0]), Err(Refused));
        assert_eq!(s.explain(&cs[0]), BadCandle::NotAfter { time: cs[0].time, last: cs[1].time });
        assert_eq!(s.rejected, 1);
        assert_eq!(s.candles, before.candles);
        assert_eq!(s.values(), before.values());
    }
}

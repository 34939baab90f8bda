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

    /// `fast - slow`, whose sign decides crossovers. Within the running
    /// sums' error of a tie, only an exact sign can say whether the MAs
    /// crossed (ties do happen on a 1e-5 price grid).
    #[inline(always)]
    fn diff(&self, fast: f64, slow: f64) -> f64 {
        let diff = fast - slow;
        if diff.abs() <= 1e-12 * slow.abs() { self.exact_sign().unwrap_or(diff) } else { diff }
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
#[serde(from = "StoredSeries")]
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
    #[serde(with = "no_time_as_none")]
    last: Last,
    pub candles: u64,
    pub rejected: u64,
    pub signals: u64,
    /// Every indicator is defined: `step` takes the path with no
    /// definedness checks. Derived from the rest, so never stored.
    #[serde(skip)]
    warm: bool,
}

/// `Last::time` before any candle: every real time is after it.
const NO_TIME: Ts = Ts(i64::MIN);
/// `last` before any candle (a close of 0.0, not NaN, so that it compares equal).
const NO_LAST: Last = Last { time: NO_TIME, close: 0.0 };

/// The stored layout of `last` is `Option<Last>`; in memory a sentinel time
/// saves the discriminant test on every candle.
mod no_time_as_none {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Last, NO_LAST, NO_TIME};

    pub fn serialize<S: Serializer>(v: &Last, s: S) -> Result<S::Ok, S::Error> {
        (v.time != NO_TIME).then_some(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Last, D::Error> {
        Ok(Option::<Last>::deserialize(d)?.unwrap_or(NO_LAST))
    }
}

/// [`SeriesState`] as stored: the same fields, less the derived flag.
#[derive(Deserialize)]
struct StoredSeries {
    params: StrategyParams,
    mas: Mas,
    atr: Atr,
    prev_diff: Diff,
    #[serde(with = "no_time_as_none")]
    last: Last,
    candles: u64,
    rejected: u64,
    signals: u64,
}

impl From<StoredSeries> for SeriesState {
    fn from(s: StoredSeries) -> Self {
        let mut state = SeriesState {
            params: s.params,
            mas: s.mas,
            atr: s.atr,
            prev_diff: s.prev_diff,
            last: s.last,
            candles: s.candles,
            rejected: s.rejected,
            signals: s.signals,
            warm: false,
        };
        state.warm = state.all_defined();
        state
    }
}

impl SeriesState {
    pub fn new(params: StrategyParams) -> Self {
        SeriesState {
            params,
            mas: Mas::new(&params),
            atr: Atr::new(params.atr),
            prev_diff: Diff(f64::NAN),
            last: NO_LAST,
            candles: 0,
            rejected: 0,
            signals: 0,
            warm: false,
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
        self.last().map(|c| c.time)
    }

    pub fn last(&self) -> Option<Last> {
        (self.last.time != NO_TIME).then_some(self.last)
    }

    pub fn values(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let (fast, slow) = self.mas.values();
        (fast, slow, self.atr.value())
    }

    fn all_defined(&self) -> bool {
        matches!(self.values(), (Some(_), Some(_), Some(_)))
    }

    /// Validates and applies one closed candle, returning the crossover it
    /// made, if any; the indicator values are then in [`values`](Self::values).
    /// A refused candle leaves the state untouched except for the rejection
    /// counter.
    // Inlined into its one caller per path (the engine's apply): a call per
    // candle on the hottest path buys nothing.
    #[inline(always)]
    pub fn step(&mut self, c: &Candle) -> Result<Option<Side>, Refused> {
        // Non-short-circuit `&`: one well-predicted branch instead of seven.
        if !((c.time > self.last.time) & c.prices_ok()) {
            self.rejected += 1;
            return Err(Refused);
        }
        self.last = Last { time: c.time, close: c.close };
        self.candles += 1;
        let cross = if self.warm {
            let (fast, slow) = match &mut self.mas {
                Mas::Sma(d) => d.update_full(c.close),
                Mas::Ema(f, s) => (f.update_full(c.close), s.update_full(c.close)),
            };
            self.atr.update_full(c.high, c.low, c.close);
            let diff = self.mas.diff(fast, slow);
            crossing(std::mem::replace(&mut self.prev_diff, Diff(diff)).0, diff)
        } else {
            self.step_warming(c.high, c.low, c.close)
        };
        self.signals += u64::from(cross.is_some());
        Ok(cross)
    }

    /// `step` while some indicator is still undefined: the first candles of
    /// a series, and the first after new parameters.
    #[inline(never)]
    fn step_warming(&mut self, high: f64, low: f64, close: f64) -> Option<Side> {
        let (fast, slow) = self.mas.update(close);
        let atr = self.atr.update(high, low, close);
        let diff = match (fast, slow) {
            (Some(f), Some(s)) => self.mas.diff(f, s),
            _ => f64::NAN,
        };
        let prev = std::mem::replace(&mut self.prev_diff, Diff(diff)).0;
        self.warm = self.all_defined();
        // No signal before the ATR can place its stops.
        if atr.is_some() { crossing(prev, diff) } else { None }
    }

    /// Why `c` was refused (it must have been: the state did not move).
    #[cold]
    pub fn explain(&self, c: &Candle) -> BadCandle {
        match (c.check_prices(), self.last()) {
            (Err(e), _) => e,
            (Ok(()), Some(last)) => BadCandle::NotAfter { time: c.time, last: last.time },
            (Ok(()), None) => BadCandle::NotAfter { time: c.time, last: c.time },
        }
    }
}

/// The crossover between the previous and this candle's `fast - slow`
/// (or their signs: the sweep's kernel decides on integers). A NaN on either
/// side (MAs not yet defined) compares false: no signal.
#[inline(always)]
pub(crate) fn crossing<T: PartialOrd + Default>(prev: T, diff: T) -> Option<Side> {
    let zero = T::default();
    if diff > zero && prev <= zero {
        Some(Side::Buy)
    } else if diff < zero && prev >= zero {
        Some(Side::Sell)
    } else {
        None
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

    /// A state written by the first release (fields then `Option`s, window
    /// sums checkpointed by counters): sma 3/5, atr 2, after the first eight
    /// closes below, mid-lap. It must read back and go on exactly as a
    /// series that never stopped.
    const FIRST_RELEASE_STATE: &str = "00030502000000000000f83f00000000000008400005333333333333f33f9a9999999999f13fcdccccccccccf03fcdccccccccccf43f000000000000f43f030503555555555555d53f9a9999999999c93fcccccccccccc0a40343333333333014002039a99999999991740cccccccccccc0a40030502000000000000e03f000000000000e03f01cdccccccccccf03f02c0f5285c8fc2c53f0190c2f5285c8fb33f50d069039d36b0bf01e08903cdccccccccccf03f080001";

    #[test]
    fn state_of_the_first_release_resumes() {
        let bytes: Vec<u8> = (0..FIRST_RELEASE_STATE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&FIRST_RELEASE_STATE[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let closes = [1.1, 1.2, 1.15, 1.3, 1.25, 1.2, 1.1, 1.05, 1.0, 1.1, 1.3, 1.35, 1.2, 1.15, 1.1, 1.3, 1.4];
        let cs: Vec<Candle> =
            candles(&closes).into_iter().map(|c| Candle { high: c.close + 0.01, low: c.close - 0.01, ..c }).collect();
        let p = StrategyParams { ma: MaKind::Sma, fast: 3, slow: 5, atr: 2, sl_mult: 1.5, tp_mult: 3.0 };
        let mut whole = SeriesState::new(p);
        let all: Vec<_> = cs.iter().map(|c| (whole.step(c), whole.values())).collect();

        let mut resumed: SeriesState = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((resumed.candles, resumed.signals, resumed.last_time()), (8, 1, Some(cs[7].time)));
        assert!(resumed.warm, "a stored warmed-up series resumes on the fast path");
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs(),
            _ => false,
        };
        for (c, (want_step, want)) in cs[8..].iter().zip(&all[8..]) {
            let step = resumed.step(c);
            let got = resumed.values();
            assert_eq!(step, *want_step, "at {:?}", c.time);
            assert!(close(got.0, want.0) && close(got.1, want.1) && close(got.2, want.2), "{got:?} vs {want:?}");
        }
        assert_eq!((resumed.candles, resumed.signals), (whole.candles, whole.signals));
        assert!(whole.signals > 1, "the continuation must cross at least once to test anything");
        // And what this version writes reads back equal.
        let again: SeriesState =
            postcard::from_bytes(&postcard::to_stdvec(&resumed).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, resumed);
    }
}

//! O(1) incremental indicators with TA-Lib's definitions.
//!
//! Each `update` does constant work and the state is plain data (serde), so a
//! series can be stored after any candle and resumed exactly. `reference`
//! holds the textbook full recomputations the tests and benches compare with.

use serde::{Deserialize, Serialize};

/// Simple moving average: the plain mean of the last `period` closes. The
/// one-window case of [`DualSma`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sma(DualSma);

impl Sma {
    pub fn new(period: u32) -> Self {
        Sma(DualSma::new(period, period))
    }

    #[inline(always)]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.0.update(x).1
    }

    #[inline(always)]
    pub fn value(&self) -> Option<f64> {
        self.0.values().1
    }
}

/// A fast and a slow SMA over the same closes, sharing one ring buffer: the
/// fast window is the newest `fast` slots of the slow one. Requires
/// `fast <= slow` (validated in the config; a larger `fast` is clamped).
///
/// The window sums never drift, at the cost of plain running sums. `*_run`
/// are the usual running sums (add the new close, subtract the evicted one),
/// whose rounding errors would accumulate over millions of candles.
/// `*_fresh` sum, in order, the closes written since the ring last wrapped
/// (slow) or since the fast window's first slot of this lap (fast). When the
/// ring wraps they hold exactly the windows' sums, computed the way a full
/// recomputation computes them, and replace the running sums. Errors
/// therefore live for at most `slow` updates, and every update is O(1):
/// the checkpoint rides on the ring's own wrap, so it costs no counter.
#[derive(Clone, Debug, PartialEq)]
pub struct DualSma {
    ring: Box<[f64]>,
    /// The slot the next close goes to.
    head: usize,
    /// The slot of the close leaving the fast window: `fast` behind `head`.
    back: usize,
    /// The fast window's first slot in a lap: `len - fast`.
    start: usize,
    filled: usize,
    fast: usize,
    inv_fast: f64,
    inv_slow: f64,
    fast_run: f64,
    slow_run: f64,
    fast_fresh: f64,
    slow_fresh: f64,
}

impl DualSma {
    pub fn new(fast: u32, slow: u32) -> Self {
        let slow = slow.max(1) as usize;
        let fast = (fast.max(1) as usize).min(slow);
        DualSma {
            ring: vec![0.0; slow].into_boxed_slice(),
            head: 0,
            back: slow - fast,
            start: slow - fast,
            filled: 0,
            fast,
            inv_fast: 1.0 / fast as f64,
            inv_slow: 1.0 / slow as f64,
            fast_run: 0.0,
            slow_run: 0.0,
            fast_fresh: 0.0,
            slow_fresh: 0.0,
        }
    }

    #[inline(always)]
    pub fn update(&mut self, x: f64) -> (Option<f64>, Option<f64>) {
        self.push(x);
        self.filled += usize::from(self.filled < self.ring.len());
        self.values()
    }

    /// Both means, for a window already full (`values` says when). The hot
    /// path of a warmed-up series: no definedness bookkeeping at all.
    #[inline(always)]
    pub fn update_full(&mut self, x: f64) -> (f64, f64) {
        self.push(x);
        (self.fast_run * self.inv_fast, self.slow_run * self.inv_slow)
    }

    #[inline(always)]
    fn push(&mut self, x: f64) {
        // Slots not yet written hold 0.0, and `back` only reaches a written
        // slot once `fast` closes are in, so both are 0.0 while filling.
        let leaving_fast = self.ring[self.back];
        let leaving_slow = std::mem::replace(&mut self.ring[self.head], x);
        // Closes in one window are close in value, so these differences are
        // usually exact (Sterbenz) and the add is the only rounding.
        self.fast_run += x - leaving_fast;
        self.slow_run += x - leaving_slow;
        // Zero until the lap reaches the fast window's first slot, so that
        // equal states compare equal.
        self.fast_fresh = if self.head >= self.start { self.fast_fresh + x } else { 0.0 };
        self.slow_fresh += x;
        self.back = if self.back + 1 == self.ring.len() { 0 } else { self.back + 1 };
        self.head += 1;
        if self.head == self.ring.len() {
            self.head = 0;
            self.fast_run = self.fast_fresh;
            self.slow_run = self.slow_fresh;
            self.fast_fresh = 0.0;
            self.slow_fresh = 0.0;
        }
    }

    /// The exact sign (-1, 0 or 1) of `fast - slow`, for near-ties where the
    /// running sums' rounding could decide a crossover. Cold: O(slow).
    ///
    /// Prices are decimals. When every close in the window is the double
    /// nearest to a multiple of 1e-8 (any price with up to 8 decimals), the
    /// sums are exact integers and the comparison `sum_f * slow` vs
    /// `sum_s * fast` is exact, so a true tie is 0, not a coin toss. Otherwise
    /// compensated sums decide.
    #[cold]
    pub fn exact_sign(&self) -> Option<f64> {
        let len = self.ring.len();
        if self.filled < len {
            return None;
        }
        // The newest `fast` closes are the slots just before `head`.
        let in_fast = |i: usize| (i + len - self.head) % len >= len - self.fast;
        let ticks = |c: f64| {
            let t = (c * 1e8).round();
            (t.abs() < 9e15 && t / 1e8 == c).then_some(t as i64)
        };
        let sign = |x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        };
        let exact: Option<(i128, i128)> = self.ring.iter().enumerate().try_fold((0i128, 0i128), |(f, s), (i, &c)| {
            let t = i128::from(ticks(c)?);
            Some((if in_fast(i) { f + t } else { f }, s + t))
        });
        if let Some((f, s)) = exact {
            let d = f * len as i128 - s * self.fast as i128;
            return Some(sign(d as f64));
        }
        // Off the decimal grid: TwoSum-compensated sums.
        let two_sum = |(hi, lo): (f64, f64), x: f64| {
            let t = hi + x;
            let bp = t - hi;
            (t, lo + ((hi - (t - bp)) + (x - bp)))
        };
        let (mut f, mut s) = ((0.0, 0.0), (0.0, 0.0));
        for (i, &c) in self.ring.iter().enumerate() {
            if in_fast(i) {
                f = two_sum(f, c);
            }
            s = two_sum(s, c);
        }
        Some(sign((f.0 + f.1) * len as f64 - (s.0 + s.1) * self.fast as f64))
    }

    #[inline(always)]
    pub fn values(&self) -> (Option<f64>, Option<f64>) {
        (
            (self.filled >= self.fast).then_some(self.fast_run * self.inv_fast),
            (self.filled == self.ring.len()).then_some(self.slow_run * self.inv_slow),
        )
    }
}

/// The stored layout of [`DualSma`], unchanged since the first release:
/// series state written by any version resumes. Window sums were then kept
/// as `{run, fresh, since, period}`, checkpointed every `period` pushes.
#[derive(Serialize, Deserialize)]
struct DualSmaWire<R> {
    ring: R,
    head: usize,
    filled: usize,
    fast: usize,
    inv_fast: f64,
    inv_slow: f64,
    fast_sum: WindowSumWire,
    slow_sum: WindowSumWire,
}

#[derive(Serialize, Deserialize)]
struct WindowSumWire {
    run: f64,
    fresh: f64,
    since: usize,
    period: usize,
}

impl Serialize for DualSma {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `fresh` and `since` are written so that the layout's first reader
        // (which checkpoints when `since` reaches `period`) would also land
        // on exact sums; this reader recomputes them from the ring instead.
        let fast_since = self.head.saturating_sub(self.start);
        DualSmaWire {
            ring: &self.ring[..],
            head: self.head,
            filled: self.filled,
            fast: self.fast,
            inv_fast: self.inv_fast,
            inv_slow: self.inv_slow,
            fast_sum: WindowSumWire {
                run: self.fast_run,
                fresh: if fast_since > 0 { self.fast_fresh } else { 0.0 },
                since: fast_since,
                period: self.fast,
            },
            slow_sum: WindowSumWire {
                run: self.slow_run,
                fresh: self.slow_fresh,
                since: self.head,
                period: self.ring.len(),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for DualSma {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = DualSmaWire::<Box<[f64]>>::deserialize(d)?;
        let len = w.ring.len();
        if len == 0 || w.fast == 0 || w.fast > len || w.head >= len || w.filled > len {
            return Err(D::Error::custom(format!(
                "moving-average window out of shape: {len} slots, fast {}, head {}, filled {}",
                w.fast, w.head, w.filled
            )));
        }
        let start = len - w.fast;
        // The sums of this lap so far, in order: what pushes since the last
        // wrap would have accumulated.
        let slow_fresh = w.ring[..w.head].iter().fold(0.0, |s, x| s + x);
        let fast_fresh = if w.head > start { w.ring[start..w.head].iter().fold(0.0, |s, x| s + x) } else { 0.0 };
        Ok(DualSma {
            back: (w.head + start) % len,
            start,
            head: w.head,
            filled: w.filled,
            fast: w.fast,
            inv_fast: w.inv_fast,
            inv_slow: w.inv_slow,
            fast_run: w.fast_sum.run,
            slow_run: w.slow_sum.run,
            fast_fresh,
            slow_fresh,
            ring: w.ring,
        })
    }
}

/// Stores an `f64` whose NaN means "not yet defined" as an `Option<f64>`,
/// the layout these fields had when they were `Option`s: stored state reads
/// back unchanged, and the hot path tests no discriminant. NaN is free as a
/// marker because every input is validated finite.
mod nan_as_none {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        (!v.is_nan()).then_some(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[inline(always)]
fn defined(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

/// Exponential moving average, TA-Lib's classic form: seeded with the SMA of
/// the first `period` closes, then `ema += (close - ema) * k` with `k = 2/(N+1)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ema {
    period: u32,
    k: f64,
    seen: u32,
    seed_sum: f64,
    /// NaN until seeded.
    #[serde(with = "nan_as_none")]
    value: f64,
}

impl PartialEq for Ema {
    fn eq(&self, o: &Self) -> bool {
        (self.period, self.k, self.seen, self.seed_sum) == (o.period, o.k, o.seen, o.seed_sum)
            && self.value.to_bits() == o.value.to_bits()
    }
}

impl Ema {
    pub fn new(period: u32) -> Self {
        let period = period.max(1);
        Ema { period, k: 2.0 / (f64::from(period) + 1.0), seen: 0, seed_sum: 0.0, value: f64::NAN }
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.value.is_nan() {
            self.seed_sum += x;
            self.seen += 1;
            if self.seen == self.period {
                self.value = self.seed_sum / f64::from(self.period);
            }
        } else {
            self.update_full(x);
        }
        self.value()
    }

    /// The next value of a seeded EMA (`value` is defined).
    #[inline(always)]
    pub fn update_full(&mut self, x: f64) -> f64 {
        // Same expression order as TA-Lib's `((x - prev) * k) + prev`.
        self.value += (x - self.value) * self.k;
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        defined(self.value)
    }
}

/// Average true range, Wilder's smoothing as TA-Lib defines it: the first
/// bar has no true range, the first ATR is the mean of the first `period`
/// true ranges, then `(prev * (N - 1) + tr) / N`.
///
/// NOTE: the smoothing step is computed as `prev * a + tr * b` with
/// `a = (N-1)/N`, `b = 1/N` precomputed. It is the same value to within an
/// ulp or two, but it keeps a divide off the loop-carried dependency chain,
/// which made the divide 70% of the engine's time per candle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Atr {
    period: u32,
    keep: f64,
    weight: f64,
    /// NaN before the first bar.
    #[serde(with = "nan_as_none")]
    prev_close: f64,
    seen: u32,
    tr_sum: f64,
    /// NaN until `period` true ranges are in.
    #[serde(with = "nan_as_none")]
    value: f64,
}

impl PartialEq for Atr {
    fn eq(&self, o: &Self) -> bool {
        (self.period, self.keep, self.weight, self.seen, self.tr_sum) == (o.period, o.keep, o.weight, o.seen, o.tr_sum)
            && self.prev_close.to_bits() == o.prev_close.to_bits()
            && self.value.to_bits() == o.value.to_bits()
    }
}

/// Wilder's true range. Inputs are validated finite, so plain comparisons
/// replace `f64::max`'s NaN handling.
#[inline(always)]
pub fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let max = |a: f64, b: f64| if a > b { a } else { b };
    // With high >= low: |high - pc| and |low - pc| reduce to these two.
    max(high - low, max(high - prev_close, prev_close - low))
}

impl Atr {
    pub fn new(period: u32) -> Self {
        let period = period.max(1);
        let n = f64::from(period);
        Atr {
            period,
            keep: (n - 1.0) / n,
            weight: 1.0 / n,
            prev_close: f64::NAN,
            seen: 0,
            tr_sum: 0.0,
            value: f64::NAN,
        }
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        if !self.value.is_nan() {
            return Some(self.update_full(high, low, close));
        }
        let pc = std::mem::replace(&mut self.prev_close, close);
        if !pc.is_nan() {
            self.tr_sum += true_range(high, low, pc);
            self.seen += 1;
            if self.seen == self.period {
                self.value = self.tr_sum / f64::from(self.period);
            }
        }
        self.value()
    }

    /// The next value of a defined ATR (`value` is defined).
    #[inline(always)]
    pub fn update_full(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let tr = true_range(high, low, std::mem::replace(&mut self.prev_close, close));
        self.value = self.value * self.keep + tr * self.weight;
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        defined(self.value)
    }
}

/// Full recomputations straight from the definitions, for tests and benches.
pub mod reference {
    use super::true_range;

    /// SMA at every index, each computed afresh from its window.
    pub fn sma(closes: &[f64], n: usize) -> Vec<Option<f64>> {
        (0..closes.len()).map(|t| (t + 1 >= n).then(|| closes[t + 1 - n..=t].iter().sum::<f64>() / n as f64)).collect()
    }

    pub fn ema(closes: &[f64], n: usize) -> Vec<Option<f64>> {
        let k = 2.0 / (n as f64 + 1.0);
        let mut out = vec![None; closes.len()];
        if closes.len() < n {
            return out;
        }
        let mut prev = closes[..n].iter().sum::<f64>() / n as f64;
        out[n - 1] = Some(prev);
        for t in n..closes.len() {
            prev = (closes[t] - prev) * k + prev;
            out[t] = Some(prev);
        }
        out
    }

    /// `bars` are (high, low, close).
    pub fn atr(bars: &[(f64, f64, f64)], n: usize) -> Vec<Option<f64>> {
        let mut out = vec![None; bars.len()];
        if bars.len() <= n {
            return out;
        }
        let trs: Vec<f64> = (1..bars.len()).map(|t| true_range(bars[t].0, bars[t].1, bars[t - 1].2)).collect();
        let mut prev = trs[..n].iter().sum::<f64>() / n as f64;
        out[n] = Some(prev);
        for t in n + 1..bars.len() {
            prev = (prev * (n as f64 - 1.0) + trs[t - 1]) / n as f64;
            out[t] = Some(prev);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close_enough(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(f64::MIN_POSITIVE),
            _ => false,
        }
    }

    /// A random walk that stays positive, like prices do.
    fn walk() -> impl Strategy<Value = Vec<(f64, f64, f64)>> {
        (0.001f64..2000.0, prop::collection::vec((-0.02f64..0.02, 0.0f64..0.01, 0.0f64..0.01), 1..600)).prop_map(
            |(start, steps)| {
                let mut p = start;
                steps
                    .into_iter()
                    .map(|(r, up, down)| {
                        p *= 1.0 + r;
                        (p * (1.0 + up), p * (1.0 - down), p)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Incremental equals full recomputation, also across a serialise/resume
        /// at an arbitrary candle (what a restart does).
        #[test]
        fn incremental_equals_full(bars in walk(), fast in 1usize..30, slow in 1usize..60, n_atr in 1usize..30, split in 0usize..600) {
            let closes: Vec<f64> = bars.iter().map(|b| b.2).collect();
            let (want_sma, want_ema, want_atr) = (reference::sma(&closes, slow), reference::ema(&closes, fast), reference::atr(&bars, n_atr));
            let (mut sma, mut ema, mut atr) = (Sma::new(slow as u32), Ema::new(fast as u32), Atr::new(n_atr as u32));
            let fast_sma = fast.min(slow);
            let want_fast_sma = reference::sma(&closes, fast_sma);
            let mut dual = DualSma::new(fast_sma as u32, slow as u32);
            for (t, &(h, l, c)) in bars.iter().enumerate() {
                if t == split {
                    sma = postcard::from_bytes(&postcard::to_stdvec(&sma).unwrap()).unwrap();
                    ema = postcard::from_bytes(&postcard::to_stdvec(&ema).unwrap()).unwrap();
                    atr = postcard::from_bytes(&postcard::to_stdvec(&atr).unwrap()).unwrap();
                    dual = postcard::from_bytes(&postcard::to_stdvec(&dual).unwrap()).unwrap();
                }
                let (s, e, a) = (sma.update(c), ema.update(c), atr.update(h, l, c));
                let (df, ds) = dual.update(c);
                prop_assert!(close_enough(df, want_fast_sma[t]), "dual fast t={} {:?} vs {:?}", t, df, want_fast_sma[t]);
                prop_assert!(close_enough(ds, want_sma[t]), "dual slow t={} {:?} vs {:?}", t, ds, want_sma[t]);
                prop_assert!(close_enough(s, want_sma[t]), "sma t={} {:?} vs {:?}", t, s, want_sma[t]);
                prop_assert!(close_enough(e, want_ema[t]), "ema t={} {:?} vs {:?}", t, e, want_ema[t]);
                prop_assert!(close_enough(a, want_atr[t]), "atr t={} {:?} vs {:?}", t, a, want_atr[t]);
            }
        }
    }

    #[test]
    fn sma_does_not_drift_over_millions_of_candles() {
        // Alternating regimes of large and tiny prices are the worst case for a
        // running sum: the rounding left by 100k large values stays in the sum
        // when the window later holds only tiny ones.
        let n = 20usize;
        let mut sma = Sma::new(n as u32);
        let mut naive_sum = 0.0f64;
        let mut window = std::collections::VecDeque::new();
        let mut x = 0.123456789f64;
        let mut worst_naive = 0.0f64;
        let mut checks = 0;
        for i in 0..3_000_000u64 {
            // Deterministic chaotic noise in (0, 1).
            x = (x * 3.999 * (1.0 - x)).clamp(1e-9, 1.0 - 1e-9);
            let price = if (i / 100_000) % 2 == 0 { 1000.0 + x } else { 0.001 + x * 1e-6 };
            let got = sma.update(price);
            window.push_back(price);
            naive_sum += price;
            if window.len() > n {
                naive_sum -= window.pop_front().unwrap_or_default();
            }
            // The end of each block: the window holds one regime only.
            if i % 100_000 == 99_999 {
                let exact = window.iter().sum::<f64>() / n as f64;
                let got = got.unwrap_or(f64::NAN);
                assert!((got - exact).abs() <= 1e-12 * exact, "candle {i}: {got} vs {exact}");
                worst_naive = worst_naive.max(((naive_sum / n as f64) - exact).abs() / exact);
                checks += 1;
            }
        }
        assert_eq!(checks, 30);
        // The check above must be able to tell: the naive running sum does drift here.
        assert!(worst_naive > 1e-10, "naive sum stayed at {worst_naive}: the input does not stress drift");
    }

    #[test]
    fn exact_sign_sees_true_ties() {
        // fast(2) of [.., 1.1, 1.3] = 1.2 and slow(4) of [1.0, 1.4, 1.1, 1.3] = 1.2:
        // a true tie in decimals, which float sums may round either way.
        let mut d = DualSma::new(2, 4);
        for c in [1.0, 1.4, 1.1, 1.3] {
            d.update(c);
        }
        assert_eq!(d.exact_sign(), Some(0.0));
        d.update(1.30001);
        assert_eq!(d.exact_sign(), Some(1.0));
        // Off the 1e-8 grid the compensated path decides.
        let mut d = DualSma::new(1, 2);
        d.update(1.0 / 3.0);
        d.update(1.0 / 3.0 + 1e-15);
        assert_eq!(d.exact_sign(), Some(1.0));
    }

    #[test]
    fn definitions_on_a_hand_computed_series() {
        let closes = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(reference::sma(&closes, 3), vec![None, None, Some(2.0), Some(3.0), Some(4.0)]);
        // EMA(3): seed 2.0, k = 0.5 → 3.0, 4.0
        assert_eq!(reference::ema(&closes, 3), vec![None, None, Some(2.0), Some(3.0), Some(4.0)]);
        let bars = [(2.0, 1.0, 1.5), (2.5, 1.5, 2.0), (3.0, 2.0, 2.9), (2.8, 2.2, 2.4)];
        // TRs: 1.0, 1.0, 0.7 → ATR(2) at bar 2 = 1.0, bar 3 = (1.0 + 0.7) / 2
        let atr = reference::atr(&bars, 2);
        assert_eq!(atr[..2], [None, None]);
        assert_eq!(atr[2], Some(1.0));
        assert!((atr[3].unwrap_or_default() - 0.85).abs() < 1e-15);
        let mut inc = Atr::new(2);
        let got: Vec<_> = bars.iter().map(|b| inc.update(b.0, b.1, b.2)).collect();
        assert!(got.iter().zip(&atr).all(|(g, w)| close_enough(*g, *w)), "{got:?} vs {atr:?}");
    }
}

//! The signal engine: synchronous and pure. `apply(candle) -> events`, no I/O,
//! no clock. The tasks around it (replay, live) decide what to store and publish,
//! so replay, live and tests share this one code path.

pub mod indicators;
pub mod strategy;
pub mod trade;

use std::collections::HashMap;

use crate::event::{CandleRecord, Event, Rejected, Signal};
use crate::types::{Candle, Instrument, SeriesKey};
pub use strategy::{Last, MaKind, SeriesState, StrategyParams};

/// The default parameters and the per-instrument ones that replace them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StrategySet {
    pub default: StrategyParams,
    pub overrides: HashMap<Instrument, StrategyParams>,
}

impl StrategySet {
    pub fn for_instrument(&self, i: Instrument) -> StrategyParams {
        self.overrides.get(&i).copied().unwrap_or(self.default)
    }
}

/// Warm-up candles only build indicator state: crossovers inside history the
/// user never saw live are not signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Live,
}

/// What one `apply` did, for counters and commit decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    pub accepted: bool,
    pub signal: bool,
    /// The series' first rejection: the caller logs it (once per series).
    pub first_rejection: bool,
}

pub struct Engine {
    strategies: StrategySet,
    keys: Vec<SeriesKey>,
    states: Vec<SeriesState>,
    index: HashMap<SeriesKey, usize>,
    labels: Vec<String>,
    // Replay feeds long runs of one series: skip the hash lookup for them.
    last_slot: usize,
    /// Signals without their id and strategy label (no allocation): for a
    /// sweep, which adds up its trades and never shows a signal.
    bare: bool,
}

impl Engine {
    pub fn new(strategies: StrategySet) -> Self {
        Engine {
            strategies,
            keys: Vec::new(),
            states: Vec::new(),
            index: HashMap::new(),
            labels: Vec::new(),
            last_slot: usize::MAX,
            bare: false,
        }
    }

    /// An engine whose signals carry no id and no strategy label.
    pub fn bare(strategies: StrategySet) -> Self {
        Engine { bare: true, ..Engine::new(strategies) }
    }

    #[inline(always)]
    fn slot(&mut self, key: SeriesKey) -> usize {
        if let Some(k) = self.keys.get(self.last_slot)
            && *k == key
        {
            return self.last_slot;
        }
        self.find_slot(key)
    }

    #[inline(never)]
    fn find_slot(&mut self, key: SeriesKey) -> usize {
        let slot = match self.index.get(&key) {
            Some(&s) => s,
            None => {
                let params = self.strategies.for_instrument(key.instrument);
                self.insert(key, SeriesState::new(params))
            }
        };
        self.last_slot = slot;
        slot
    }

    fn insert(&mut self, key: SeriesKey, state: SeriesState) -> usize {
        if let Some(&s) = self.index.get(&key) {
            self.labels[s] = state.params.label();
            self.states[s] = state;
            return s;
        }
        self.keys.push(key);
        self.labels.push(state.params.label());
        self.states.push(state);
        self.index.insert(key, self.keys.len() - 1);
        self.keys.len() - 1
    }

    /// Puts back a stored series. When the configured strategy changed since
    /// it was stored, the indicators restart (the old ones measured something
    /// else) but the last candle is kept, so nothing is applied twice.
    /// Returns the old parameters in that case.
    pub fn restore(&mut self, key: SeriesKey, mut state: SeriesState) -> Option<StrategyParams> {
        let want = self.strategies.for_instrument(key.instrument);
        let changed = (state.params != want).then_some(state.params);
        if changed.is_some() {
            state.reset_indicators(want);
        }
        self.insert(key, state);
        changed
    }

    pub fn state(&self, key: &SeriesKey) -> Option<&SeriesState> {
        self.index.get(key).map(|&s| &self.states[s])
    }

    pub fn series(&self) -> impl Iterator<Item = (SeriesKey, &SeriesState)> {
        self.keys.iter().copied().zip(self.states.iter())
    }

    /// Applies one closed candle as live data.
    pub fn apply(&mut self, candle: &Candle) -> Vec<Event> {
        let mut out = Vec::with_capacity(2);
        self.apply_into(candle, Phase::Live, &mut out);
        out
    }

    /// Applies one closed candle, appending its events to `out`: a `candle`
    /// record when accepted, plus a `signal` on a crossover (not in warm-up),
    /// or a `rejected` record when the candle is refused.
    #[inline]
    pub fn apply_into(&mut self, candle: &Candle, phase: Phase, out: &mut Vec<Event>) -> Outcome {
        self.step(candle, phase, out, true)
    }

    /// As [`Engine::apply_into`], without the `candle` record: for history
    /// read for its signals alone, where a record a candle would be built
    /// only to be dropped.
    #[inline]
    pub fn apply_signals_into(&mut self, candle: &Candle, phase: Phase, out: &mut Vec<Event>) -> Outcome {
        self.step(candle, phase, out, false)
    }

    #[inline(always)]
    fn step(&mut self, candle: &Candle, phase: Phase, out: &mut Vec<Event>, records: bool) -> Outcome {
        let slot = self.slot(candle.key());
        let state = &mut self.states[slot];
        match state.step(candle) {
            Ok(cross) => {
                let (fast, slow, atr) = state.values();
                if records {
                    out.push(Event::Candle(CandleRecord {
                        instrument: candle.instrument,
                        timeframe: candle.timeframe,
                        time: candle.time,
                        open: candle.open,
                        high: candle.high,
                        low: candle.low,
                        close: candle.close,
                        fast,
                        slow,
                        atr,
                    }));
                }
                let mut signal = false;
                if let (Some(side), Phase::Live, Some(fast), Some(slow), Some(atr)) = (cross, phase, fast, slow, atr) {
                    let (stop_loss, take_profit) = strategy::stops(side, candle.close, atr, &state.params);
                    let (id, strategy) = match self.bare {
                        true => (String::new(), String::new()),
                        false => (
                            Signal::make_id(candle.instrument, candle.timeframe, candle.time, side),
                            self.labels[slot].clone(),
                        ),
                    };
                    out.push(Event::Signal(Signal {
                        id,
                        instrument: candle.instrument,
                        timeframe: candle.timeframe,
                        time: candle.time,
                        side,
                        price: candle.close,
                        fast,
                        slow,
                        atr,
                        stop_loss,
                        take_profit,
                        strategy,
                    }));
                    signal = true;
                }
                Outcome { accepted: true, signal, first_rejection: false }
            }
            Err(_) => {
                let why = state.explain(candle);
                out.push(Event::Rejected(Rejected {
                    instrument: candle.instrument,
                    timeframe: candle.timeframe,
                    time: candle.time,
                    reason: why.to_string(),
                    count: state.rejected,
                }));
                Outcome { accepted: false, signal: false, first_rejection: state.rejected == 1 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Ts;
    use crate::types::Timeframe;

    fn eur() -> Instrument {
        Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}"))
    }

    fn series(closes: &[f64]) -> Vec<Candle> {
        closes
            .iter()
            .enumerate()
            .map(|(i, &c)| Candle {
                instrument: eur(),
                timeframe: Timeframe::H4,
                time: Ts(1_704_067_200 + i as i64 * 14_400),
                open: c,
                high: c * 1.001,
                low: c * 0.999,
                close: c,
                volume: 0.0,
            })
            .collect()
    }

    fn small() -> StrategySet {
        StrategySet {
            default: StrategyParams { ma: MaKind::Sma, fast: 2, slow: 3, atr: 2, sl_mult: 1.5, tp_mult: 3.0 },
            overrides: HashMap::new(),
        }
    }

    #[test]
    fn signal_record_is_complete() {
        let mut e = Engine::new(small());
        let events: Vec<Event> = series(&[1.5, 1.4, 1.3, 1.2, 1.1, 1.4]).iter().flat_map(|c| e.apply(c)).collect();
        let signals: Vec<&Signal> =
            events.iter().filter_map(|ev| if let Event::Signal(s) = ev { Some(s) } else { None }).collect();
        assert_eq!(signals.len(), 1);
        let s = signals[0];
        assert_eq!(s.id, "EUR_USD:H4:2024-01-01T20:00:00Z:buy");
        assert_eq!(s.strategy, "sma 2/3");
        assert!((s.stop_loss - (1.4 - 1.5 * s.atr)).abs() < 1e-15);
        assert!((s.take_profit - (1.4 + 3.0 * s.atr)).abs() < 1e-15);
    }

    #[test]
    fn warmup_builds_state_without_signals() {
        let mut e = Engine::new(small());
        let mut out = Vec::new();
        let cs = series(&[1.5, 1.4, 1.3, 1.2, 1.1, 1.4]);
        for c in &cs {
            e.apply_into(c, Phase::Warmup, &mut out);
        }
        assert!(out.iter().all(|ev| matches!(ev, Event::Candle(_))));
        assert_eq!(out.len(), cs.len());
    }

    #[test]
    fn overrides_apply_per_instrument() {
        let mut set = small();
        let gbp = Instrument::new("GBP_USD").unwrap_or_else(|e| panic!("{e}"));
        set.overrides.insert(gbp, StrategyParams { ma: MaKind::Ema, fast: 3, slow: 5, ..set.default });
        assert_eq!(set.for_instrument(gbp).label(), "ema 3/5");
        assert_eq!(set.for_instrument(eur()).label(), "sma 2/3");
    }

    #[test]
    fn restore_resumes_exactly_and_resets_on_new_params() {
        let cs = series(&[1.5, 1.4, 1.3, 1.2, 1.1, 1.4, 1.6, 1.2, 1.0, 1.3]);
        let mut whole = Engine::new(small());
        let all: Vec<Event> = cs.iter().flat_map(|c| whole.apply(c)).collect();

        let mut first = Engine::new(small());
        let mut resumed: Vec<Event> = cs[..4].iter().flat_map(|c| first.apply(c)).collect();
        let key = cs[0].key();
        let stored: SeriesState = postcard::from_bytes(
            &postcard::to_stdvec(first.state(&key).unwrap_or_else(|| panic!("no state"))).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut second = Engine::new(small());
        assert_eq!(second.restore(key, stored.clone()), None);
        resumed.extend(cs[4..].iter().flat_map(|c| second.apply(c)));
        assert_eq!(resumed, all);

        let mut other = small();
        other.default.fast = 1;
        let mut third = Engine::new(other);
        assert_eq!(third.restore(key, stored), Some(small().default));
        let st = third.state(&key).unwrap_or_else(|| panic!("no state"));
        assert_eq!(st.values(), (None, None, None));
        // The stored last candle still guards against re-applying old candles.
        assert!(matches!(third.apply(&cs[3])[0], Event::Rejected(_)));
    }

    #[test]
    fn rejections_are_counted_and_first_is_flagged() {
        let mut e = Engine::new(small());
        let mut bad = series(&[1.0])[0];
        bad.high = f64::NAN;
        let mut out = Vec::new();
        let first = e.apply_into(&bad, Phase::Live, &mut out);
        let second = e.apply_into(&bad, Phase::Live, &mut out);
        assert!(first.first_rejection && !second.first_rejection && !first.accepted);
        match &out[1] {
            Event::Rejected(r) => assert_eq!((r.count, r.reason.as_str()), (2, "high is not a finite number")),
            other => panic!("{other:?}"),
        }
        // The engine goes on after bad data.
        assert!(e.apply_into(&series(&[1.0])[0], Phase::Live, &mut out).accepted);
    }
}

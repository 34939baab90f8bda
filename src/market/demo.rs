//! The demo market: a seeded, realistic FX random walk. No account, no network.
//!
//! Each candle's randomness comes from a generator seeded by (seed, series,
//! candle time), and the trend is a smooth function of time. So the same seed
//! gives the same candles, and a restart that resumes from a stored candle
//! produces exactly the candles an uninterrupted run would have.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{MarketEvent, MarketSource, SourceCtx, SourceFuture};
use crate::engine::{Last, Phase};
use crate::event::FeedState;
use crate::time::Ts;
use crate::types::{Candle, Instrument, Quote, SeriesKey, round_price};

/// Price path steps inside one candle; quotes are drawn from the same path.
const STEPS: usize = 24;
const QUOTES_PER_CANDLE: usize = 4;

pub struct DemoSource {
    seed: u64,
    candle_every: Duration,
    /// Time of the first warm-up candle for series without stored state;
    /// `None` = aligned to now, so the live candles end near the present.
    start: Option<Ts>,
}

/// A typical price and daily volatility for the majors; others get a neutral walk.
fn profile(i: Instrument) -> (f64, f64) {
    match i.as_str() {
        "EUR_USD" => (1.0850, 0.0050),
        "GBP_USD" => (1.2650, 0.0060),
        "USD_JPY" => (149.50, 0.0065),
        "USD_CHF" => (0.8800, 0.0055),
        "AUD_USD" => (0.6550, 0.0070),
        "USD_CAD" => (1.3600, 0.0045),
        "NZD_USD" => (0.6050, 0.0075),
        _ => (if i.decimals() == 3 { 100.0 } else { 1.0 }, 0.0060),
    }
}

fn series_hash(seed: u64, key: SeriesKey) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, key.instrument.as_str(), key.timeframe.as_str()).hash(&mut h);
    h.finish()
}

/// Standard normal by Box–Muller.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One candle after `prev_close`, and the intra-candle path its quotes follow.
pub fn next_candle(seed: u64, key: SeriesKey, time: Ts, prev_close: f64) -> (Candle, [f64; STEPS]) {
    let h = series_hash(seed, key);
    let mut rng = ChaCha8Rng::seed_from_u64(h ^ (time.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (base, daily_vol) = profile(key.instrument);
    let tf = key.timeframe.seconds() as f64;
    let sigma = daily_vol * (tf / 86_400.0).sqrt();
    // Trend regimes: a slow sine per series (periods of ~40-90 candles) so the
    // MAs cross now and then, plus a pull back towards the typical price so a
    // long demo never wanders off to absurd levels.
    let n = time.0 as f64 / tf;
    let period = 40.0 + (h % 50) as f64;
    let phase = (h >> 8) as f64 / u64::MAX as f64 * std::f64::consts::TAU * 256.0;
    let trend = 0.35 * sigma * (std::f64::consts::TAU * n / period + phase).sin();
    let pull = -0.02 * (prev_close / base).ln();
    let step_sigma = sigma / (STEPS as f64).sqrt();
    let mut path = [0.0; STEPS];
    let mut p = prev_close;
    for slot in path.iter_mut() {
        p *= (trend / STEPS as f64 + pull / STEPS as f64 + step_sigma * normal(&mut rng)).exp();
        *slot = p;
    }
    let i = key.instrument;
    let open = round_price(i, prev_close);
    let close = round_price(i, p);
    let hi = path.iter().copied().fold(prev_close, f64::max);
    let lo = path.iter().copied().fold(prev_close, f64::min);
    let high = round_price(i, hi).max(open).max(close);
    let low = round_price(i, lo).min(open).min(close);
    let volume = (rng.random_range(200.0..2000.0) * (tf / 3600.0).sqrt()).round();
    (Candle { instrument: i, timeframe: key.timeframe, time, open, high, low, close, volume }, path)
}

impl DemoSource {
    pub fn new(seed: u64, candle_every: Duration, start: Option<Ts>) -> Self {
        DemoSource { seed, candle_every, start }
    }
}

struct Walk {
    key: SeriesKey,
    last: Last,
}

impl MarketSource for DemoSource {
    fn name(&self) -> &'static str {
        "demo"
    }

    fn run(self: Box<Self>, ctx: SourceCtx) -> SourceFuture {
        Box::pin(async move {
            let me = *self;
            ctx.status("demo", FeedState::WarmingUp, None).await;
            let mut walks = Vec::new();
            let now = Ts::now();
            for &key in &ctx.series {
                let tf = key.timeframe.seconds();
                let last = match ctx.resume.get(&key) {
                    Some(c) => *c,
                    None => {
                        // Warm up on history ending at the present, so the
                        // console shows defined indicators from the first frame.
                        let warm = i64::from(ctx.strategies.for_instrument(key.instrument).warmup_candles()).max(60);
                        let first = me.start.map_or_else(|| Ts((now.0 / tf - warm) * tf), |s| Ts(s.0 / tf * tf));
                        let (base, _) = profile(key.instrument);
                        let (mut c, _) = next_candle(me.seed, key, first, base);
                        let mut candles = vec![c];
                        for _ in 1..warm {
                            c = next_candle(me.seed, key, Ts(c.time.0 + tf), c.close).0;
                            candles.push(c);
                        }
                        for candle in candles {
                            if !ctx.send(MarketEvent::Candle { candle, phase: Phase::Warmup }).await {
                                return Ok(());
                            }
                        }
                        Last { time: c.time, close: c.close }
                    }
                };
                walks.push(Walk { key, last });
            }
            ctx.status(
                "demo",
                FeedState::Live,
                Some(format!("one candle every {}", humantime::format_duration(me.candle_every))),
            )
            .await;
            let quote_every = me.candle_every / QUOTES_PER_CANDLE as u32;
            let mut tick = tokio::time::interval(quote_every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pending: HashMap<SeriesKey, (Candle, [f64; STEPS])> = HashMap::new();
            let mut phase = 0usize;
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                phase += 1;
                for w in &mut walks {
                    let tf = w.key.timeframe.seconds();
                    let (next, path) = *pending
                        .entry(w.key)
                        .or_insert_with(|| next_candle(me.seed, w.key, Ts(w.last.time.0 + tf), w.last.close));
                    if !phase.is_multiple_of(QUOTES_PER_CANDLE) {
                        // A live quote from the forming candle's path, with a realistic spread.
                        let at = path[(phase % QUOTES_PER_CANDLE) * STEPS / QUOTES_PER_CANDLE];
                        let half_spread = 0.6 * w.key.instrument.pip();
                        let q = Quote {
                            instrument: w.key.instrument,
                            time: Ts(next.time.0 + tf * (phase % QUOTES_PER_CANDLE) as i64 / QUOTES_PER_CANDLE as i64),
                            bid: round_price(w.key.instrument, at - half_spread),
                            ask: round_price(w.key.instrument, at + half_spread),
                        };
                        if !ctx.send(MarketEvent::Quote(q)).await {
                            return Ok(());
                        }
                        continue;
                    }
                    pending.remove(&w.key);
                    w.last = Last { time: next.time, close: next.close };
                    if !ctx.send(MarketEvent::Candle { candle: next, phase: Phase::Live }).await {
                        return Ok(());
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timeframe;

    fn key(i: &str) -> SeriesKey {
        SeriesKey::new(Instrument::new(i).unwrap(), Timeframe::H1)
    }

    #[test]
    fn same_seed_same_candles_and_valid_prices() {
        let k = key("USD_JPY");
        let walk = |seed| {
            let mut c = next_candle(seed, k, Ts(3600 * 1000), 149.5).0;
            let mut out = vec![c];
            for _ in 0..2000 {
                c = next_candle(seed, k, Ts(c.time.0 + 3600), c.close).0;
                out.push(c);
            }
            out
        };
        let (a, b, other) = (walk(7), walk(7), walk(8));
        assert_eq!(a, b);
        assert_ne!(a, other);
        for c in &a {
            assert_eq!(c.check_prices(), Ok(()), "{c:?}");
            // 3 decimals for a JPY pair.
            assert!(((c.close * 1000.0).round() - c.close * 1000.0).abs() < 1e-6);
        }
        // Realistic: an hourly USD/JPY walk stays within a few percent over 2000 hours.
        let (lo, hi) = a.iter().fold((f64::MAX, 0.0f64), |(lo, hi), c| (lo.min(c.low), hi.max(c.high)));
        assert!(lo > 149.5 * 0.8 && hi < 149.5 * 1.2, "{lo}..{hi}");
    }

    #[test]
    fn the_walk_produces_crossovers() {
        let k = key("EUR_USD");
        let mut engine = crate::engine::Engine::new(Default::default());
        let mut c = next_candle(7, k, Ts(0), 1.085).0;
        let mut signals = 0;
        for _ in 0..1000 {
            signals += engine.apply(&c).iter().filter(|e| matches!(e, crate::event::Event::Signal(_))).count();
            c = next_candle(7, k, Ts(c.time.0 + 3600), c.close).0;
        }
        assert!((10..200).contains(&signals), "{signals} signals in 1000 candles");
    }
}

//! The demo market: a seeded, realistic FX random walk. No account, no network.
//!
//! Each step's randomness comes from a generator seeded by (seed, the pair's
//! walk, step time), and the trend is a smooth function of time. So the same
//! seed gives the same candles, and a restart that resumes from a stored
//! candle produces exactly the candles an uninterrupted run would have. A
//! pair's timeframes share its walk: the longer ones are built from the
//! steps of the finest.
//!
//! A pair with recorded history (`[market.demo] history`) plays its candles
//! instead, at the same pace and with quotes between them, and goes on with
//! the walk from its last close when they run out.

pub mod history;

use std::hash::{Hash, Hasher};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{MarketEvent, MarketSource, SourceCtx, SourceFuture};
use crate::engine::{Last, Phase};
use crate::event::{FeedState, FeedStatus};
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
    histories: Vec<history::History>,
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
        DemoSource { seed, candle_every, start, histories: Vec::new() }
    }

    /// Plays `histories` for their pairs. The simulated pairs start where
    /// the earliest history does, so every pair of the demo is in one era.
    pub fn with_histories(mut self, histories: Vec<history::History>) -> Self {
        let first = histories.iter().filter_map(|h| h.candles.first().map(|c| c.time)).min();
        self.start = self.start.or(first);
        self.histories = histories;
        self
    }
}

/// One timeframe of a pair, built from its pair's walk.
struct Series {
    key: SeriesKey,
    /// The first candle to send: after the stored one, or the warm-up's first.
    from: Ts,
    /// Candles before this are warm-up (no signals); `from` when resuming.
    warm_until: Ts,
    /// The candle being built from the walk's steps.
    forming: Option<Candle>,
}

impl Series {
    /// After its stored candle, without a warm-up, if it has one.
    fn resumed(ctx: &SourceCtx, key: SeriesKey) -> Option<Series> {
        let from = Ts(ctx.resume.get(&key)?.time.0 + key.timeframe.seconds());
        Some(Series { key, from, warm_until: from, forming: None })
    }

    /// New, on recorded times (a history's candles, or their calendar):
    /// from the first one's period, warmed up on `warm` periods that have any.
    fn on_times(key: SeriesKey, times: impl Iterator<Item = Ts> + Clone, warm: i64, none: Ts) -> Series {
        let s = key.timeframe.seconds();
        let first = times.clone().next().unwrap_or(none);
        let from = Ts(first.0 - first.0.rem_euclid(s));
        Series { key, from, warm_until: nth_period(times, s, warm), forming: None }
    }

    /// Adds one step of the walk; returns this series' candles the step
    /// completes. `recorded` steps have gaps (weekends, missing hours): a
    /// candle starts at any of its steps and ends at the first step of a
    /// later one, as the market's own did.
    fn push(&mut self, step: &Candle, recorded: bool) -> [Option<Candle>; 2] {
        let (s, base) = (self.key.timeframe.seconds(), step.timeframe.seconds());
        let time = Ts(step.time.0 - step.time.0.rem_euclid(s));
        if time < self.from {
            return [None, None];
        }
        let mut ended = None;
        match &mut self.forming {
            Some(c) if c.time == time => {
                c.high = c.high.max(step.high);
                c.low = c.low.min(step.low);
                c.close = step.close;
                c.volume += step.volume;
            }
            // A walk's candle only from its first step: a part of one is never sent.
            _ if recorded || step.time == time => {
                if recorded {
                    ended = self.forming.take();
                }
                self.forming = Some(Candle { timeframe: self.key.timeframe, time, ..*step });
            }
            _ => return [None, None],
        }
        let complete = step.time.0 + base == time.0 + s;
        [ended, if complete { self.forming.take() } else { None }]
    }
}

/// A pair's walk and the timeframes built from it. The walk steps by the
/// largest period every one of them divides (H1 for H1 and H4), so H1 and
/// H4 of one pair show one market, one price and one quote; a single
/// timeframe is its own walk.
struct Pair {
    /// The walk's key: its candles are those a run of that timeframe alone
    /// would make.
    walk: SeriesKey,
    last: Last,
    /// The walk's step being formed live, and the path its quotes follow.
    forming: Option<(Candle, [f64; STEPS])>,
    series: Vec<Series>,
    /// Recorded candles played instead of the walk, until they run out.
    play: Option<Play>,
    /// The periods a walk beside recorded history steps on (see `DemoSource::calendar`).
    calendar: Option<std::sync::Arc<[Ts]>>,
}

impl Pair {
    fn next_time(&self) -> Ts {
        next_time(self.calendar.as_deref(), self.last.time, self.walk.timeframe.seconds())
    }
}

/// A pair's recorded candles and how far they have been played.
struct Play {
    candles: std::sync::Arc<[Candle]>,
    next: usize,
    /// The pair's pacing: its finest timeframe, one per `candle_every`.
    pace: i64,
}

impl Play {
    /// The candles the next tick plays: those of the next `pace` period
    /// that has any, so a weekend or a gap in the file is not waited out.
    fn period(&self) -> Option<(Ts, std::ops::Range<usize>)> {
        let first = self.candles.get(self.next)?;
        let start = first.time.0 - first.time.0.rem_euclid(self.pace);
        let len = self.candles[self.next..].partition_point(|c| c.time.0 < start + self.pace);
        Some((Ts(start), self.next..self.next + len))
    }

    /// The price `k` quarters into a period: a path through each candle's
    /// open, its extremes (the nearer one first) and its close.
    fn quote_at(&self, candles: std::ops::Range<usize>, k: usize) -> Option<f64> {
        let path: Vec<f64> = self.candles[candles]
            .iter()
            .flat_map(|c| if c.close >= c.open { [c.low, c.high, c.close] } else { [c.high, c.low, c.close] })
            .collect();
        path.get(k * path.len() / QUOTES_PER_CANDLE).copied()
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The timeframe a walk for `keys` steps by: the largest all of them divide.
fn walk_timeframe(keys: &[SeriesKey]) -> Option<crate::types::Timeframe> {
    let step = keys.iter().map(|k| k.timeframe.seconds()).fold(0, gcd);
    crate::types::Timeframe::ALL.iter().copied().find(|t| t.seconds() == step)
}

impl DemoSource {
    /// The pairs' walks and where each starts: the earliest candle any of
    /// its series still needs (its warm-up, or the one after its stored
    /// candle), so a restart makes again, from the stored close, the steps
    /// a series further along has already had.
    fn pairs(&self, ctx: &SourceCtx, now: Ts) -> Vec<Pair> {
        let mut by_instrument: Vec<(Instrument, Vec<SeriesKey>)> = Vec::new();
        for &key in &ctx.series {
            match by_instrument.iter_mut().find(|(i, _)| *i == key.instrument) {
                Some((_, keys)) => keys.push(key),
                None => by_instrument.push((key.instrument, vec![key])),
            }
        }
        let mut pairs = Vec::new();
        for (instrument, keys) in by_instrument {
            // Never skipped: every set of granularities has a walk (tested).
            let Some(tf) = walk_timeframe(&keys) else { continue };
            let step = tf.seconds();
            let calendar = self.calendar(step);
            if let Some(h) = self.histories.iter().find(|h| h.instrument == instrument) {
                match recorded(ctx, h, &keys, step, calendar.clone()) {
                    Ok(pair) => {
                        pairs.push(pair);
                        continue;
                    }
                    Err(why) => tracing::warn!("{instrument} is simulated: {why}"),
                }
            }
            // A pair with stored candles is where its walk got to, not at
            // the wall clock (the demo runs ahead of it): a timeframe
            // added since warms up to there, and does not catch up on
            // months of walk at once, signalling all the way.
            let here = keys
                .iter()
                .filter_map(|k| ctx.resume.get(k).map(|l| l.time.0 + k.timeframe.seconds()))
                .min()
                .map_or(now, Ts);
            let series: Vec<Series> = keys
                .iter()
                .map(|&key| {
                    let warm = warmup(ctx, instrument);
                    Series::resumed(ctx, key).unwrap_or_else(|| match calendar.as_deref() {
                        // Beside recorded history, on its calendar: every pair
                        // goes live at one time and keeps step with it.
                        Some(days) => Series::on_times(key, days.iter().copied(), warm, now),
                        None => {
                            // Warm up on history ending at the present, so the
                            // console shows defined indicators from the first frame.
                            let s = key.timeframe.seconds();
                            let from = self.start.map_or_else(|| Ts((here.0 / s - warm) * s), |t| Ts(t.0 / s * s));
                            Series { key, from, warm_until: Ts(from.0 + warm * s), forming: None }
                        }
                    })
                })
                .collect();
            let start = series.iter().map(|s| s.from).min().unwrap_or(now);
            // From the stored close that ends where the walk starts, else
            // the pair's typical price.
            let close = series
                .iter()
                .find_map(|s| ctx.resume.get(&s.key).filter(|l| l.time.0 + s.key.timeframe.seconds() == start.0))
                .map_or(profile(instrument).0, |l| l.close);
            let last = Last { time: Ts(start.0 - step), close };
            pairs.push(Pair {
                walk: SeriesKey::new(instrument, tf),
                last,
                forming: None,
                series,
                play: None,
                calendar,
            });
        }
        pairs
    }

    /// The periods of `step` seconds the histories have candles in, for a
    /// walk beside them to step on: it then skips their weekends too and
    /// keeps the same date. None without history, or for a walk finer than
    /// a history (its hours say nothing of the quarters between them).
    fn calendar(&self, step: i64) -> Option<std::sync::Arc<[Ts]>> {
        if self.histories.is_empty() || self.histories.iter().any(|h| step % h.timeframe.seconds() != 0) {
            return None;
        }
        let mut days: Vec<Ts> =
            self.histories.iter().flat_map(|h| &h.candles).map(|c| Ts(c.time.0 - c.time.0.rem_euclid(step))).collect();
        days.sort_unstable();
        days.dedup();
        Some(days.into())
    }
}

/// The walk's next step after `last`: the calendar's next period while
/// there is one, else the next `step`.
fn next_time(calendar: Option<&[Ts]>, last: Ts, step: i64) -> Ts {
    calendar.and_then(|days| days.get(days.partition_point(|t| *t <= last)).copied()).unwrap_or(Ts(last.0 + step))
}

/// The warm-up candles of a series: as many as the strategy needs, at least 60.
fn warmup(ctx: &SourceCtx, instrument: Instrument) -> i64 {
    i64::from(ctx.strategies.for_instrument(instrument).warmup_candles()).max(60)
}

/// A pair that plays its history from where its series are (its start,
/// or after their stored candles), paced by its finest timeframe `pace`.
/// An error says why it cannot, and the pair is simulated instead.
fn recorded(
    ctx: &SourceCtx,
    h: &history::History,
    keys: &[SeriesKey],
    pace: i64,
    calendar: Option<std::sync::Arc<[Ts]>>,
) -> Result<Pair, String> {
    let data = h.timeframe.seconds();
    if let Some(k) = keys.iter().find(|k| k.timeframe.seconds() % data != 0) {
        return Err(format!("{} cannot be built from {}", k.timeframe, h.describe()));
    }
    let first = h.candles.first().ok_or_else(|| format!("{} has no candles", h.origin))?.time;
    let warm = warmup(ctx, h.instrument);
    let series: Vec<Series> = keys
        .iter()
        .map(|&key| {
            Series::resumed(ctx, key)
                .unwrap_or_else(|| Series::on_times(key, h.candles.iter().map(|c| c.time), warm, first))
        })
        .collect();
    let start = series.iter().map(|s| s.from).min().unwrap_or(first);
    let next = h.candles.partition_point(|c| c.time < start);
    if next == h.candles.len() {
        let mut buf = [0u8; 20];
        return Err(format!(
            "its stored candles reach {}, past the end of {} (a new --data-dir plays it from the start)",
            start.format_into(&mut buf),
            h.describe()
        ));
    }
    let close = next.checked_sub(1).map_or(h.candles[next].open, |i| h.candles[i].close);
    Ok(Pair {
        walk: SeriesKey::new(h.instrument, h.timeframe),
        last: Last { time: Ts(start.0 - data), close },
        forming: None,
        series,
        play: Some(Play { candles: h.candles.as_slice().into(), next, pace }),
        calendar,
    })
}

/// The start of the `n`th period of `s` seconds (from 0) that has candles;
/// past the last one when there are fewer.
fn nth_period(times: impl Iterator<Item = Ts>, s: i64, n: i64) -> Ts {
    let mut seen = 0;
    let mut last = None;
    for t in times {
        let period = t.0 - t.0.rem_euclid(s);
        if last != Some(period) {
            if seen == n {
                return Ts(period);
            }
            seen += 1;
            last = Some(period);
        }
    }
    Ts(last.map_or(i64::MAX, |p| p + s))
}

/// The walk's next step to every series of the pair; false when the engine has gone.
async fn step(ctx: &SourceCtx, pair: &mut Pair, candle: &Candle) -> bool {
    pair.last = Last { time: candle.time, close: candle.close };
    // A walk on a calendar has gaps, as recorded candles do.
    let recorded = pair.play.is_some() || pair.calendar.is_some();
    for s in &mut pair.series {
        for c in s.push(candle, recorded).into_iter().flatten() {
            if !send_candle(ctx, s, c).await {
                return false;
            }
        }
    }
    true
}

async fn send_candle(ctx: &SourceCtx, s: &Series, c: Candle) -> bool {
    let phase = if c.time < s.warm_until { Phase::Warmup } else { Phase::Live };
    ctx.send(MarketEvent::Candle { candle: c, phase }).await
}

/// Plays the pair's next recorded candles: the next period's, or (`until`)
/// all before a time. At their end the candles being built end with them,
/// and the pair goes on with the walk from the last close. False when the
/// engine has gone.
async fn play(ctx: &SourceCtx, pair: &mut Pair, until: Option<Ts>) -> bool {
    let Some(p) = &pair.play else { return true };
    let candles = p.candles.clone();
    let range = match until {
        Some(t) => p.next..p.next + candles[p.next..].partition_point(|c| c.time < t),
        None => match p.period() {
            Some((_, r)) => r,
            None => p.next..p.next,
        },
    };
    for c in &candles[range.clone()] {
        if !step(ctx, pair, c).await {
            return false;
        }
    }
    let Some(p) = &mut pair.play else { return true };
    p.next = range.end;
    if p.next < candles.len() {
        return true;
    }
    let pace = p.pace;
    for s in &mut pair.series {
        if let Some(c) = s.forming.take()
            && !send_candle(ctx, s, c).await
        {
            return false;
        }
    }
    let tf = crate::types::Timeframe::ALL.iter().copied().find(|t| t.seconds() == pace).unwrap_or(pair.walk.timeframe);
    pair.walk = SeriesKey::new(pair.walk.instrument, tf);
    let at = pair.last.time.0;
    pair.last = Last { time: Ts(at - at.rem_euclid(pace)), close: pair.last.close };
    pair.play = None;
    let mut buf = [0u8; 20];
    tracing::info!(
        "{}: the history ends at {}; the pair goes on simulated",
        pair.walk.instrument,
        pair.last.time.format_into(&mut buf)
    );
    true
}

/// The feed's state, naming the pairs that play history.
async fn status(ctx: &SourceCtx, pairs: &[Pair], state: FeedState, message: Option<String>) -> bool {
    let mut status = FeedStatus::new("demo", state, message);
    status.history = pairs.iter().filter(|p| p.play.is_some()).map(|p| p.walk.instrument).collect();
    ctx.send(MarketEvent::Status(status)).await
}

impl MarketSource for DemoSource {
    fn name(&self) -> &'static str {
        "demo"
    }

    fn run(self: Box<Self>, ctx: SourceCtx) -> SourceFuture {
        Box::pin(async move {
            let me = *self;
            let mut pairs = me.pairs(&ctx, Ts::now());
            status(&ctx, &pairs, FeedState::WarmingUp, None).await;
            // Warm-up, and the steps a series behind the others missed, at once.
            for pair in &mut pairs {
                let caught_up = pair.series.iter().map(|s| s.warm_until).max().unwrap_or(pair.last.time);
                if pair.play.is_some() && !play(&ctx, pair, Some(caught_up)).await {
                    return Ok(());
                }
                // A pair still in its history has played it up to there; a
                // walk (or a history that ended) steps on.
                while pair.play.is_none() && pair.next_time() < caught_up {
                    let (c, _) = next_candle(me.seed, pair.walk, pair.next_time(), pair.last.close);
                    if !step(&ctx, pair, &c).await {
                        return Ok(());
                    }
                }
            }
            let every = humantime::format_duration(me.candle_every);
            let built = pairs.iter().find(|p| p.series.iter().any(|s| s.key != p.walk));
            let pace = match built {
                None => format!("one candle every {every}"),
                Some(p) => {
                    format!("one {} candle every {every}, the longer timeframes built from it", p.walk.timeframe)
                }
            };
            let message = |pairs: &[Pair]| {
                let played: Vec<String> = me
                    .histories
                    .iter()
                    .filter(|h| pairs.iter().any(|p| p.play.is_some() && p.walk.instrument == h.instrument))
                    .map(history::History::describe)
                    .collect();
                match played.is_empty() {
                    true => pace.clone(),
                    false => format!("{pace}; playing {}; the other pairs are simulated", played.join(", ")),
                }
            };
            if !status(&ctx, &pairs, FeedState::Live, Some(message(&pairs))).await {
                return Ok(());
            }
            let quote_every = me.candle_every / QUOTES_PER_CANDLE as u32;
            let mut tick = tokio::time::interval(quote_every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut phase = 0usize;
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                phase += 1;
                let mut ended = false;
                for pair in &mut pairs {
                    let i = pair.walk.instrument;
                    let half_spread = 0.6 * i.pip();
                    if let Some(p) = &pair.play {
                        let k = phase % QUOTES_PER_CANDLE;
                        if k != 0 {
                            let Some((start, range)) = p.period() else { continue };
                            let Some(at) = p.quote_at(range, k) else { continue };
                            let q = Quote {
                                instrument: i,
                                time: Ts(start.0 + p.pace * k as i64 / QUOTES_PER_CANDLE as i64),
                                bid: round_price(i, at - half_spread),
                                ask: round_price(i, at + half_spread),
                            };
                            if !ctx.send(MarketEvent::Quote(q)).await {
                                return Ok(());
                            }
                            continue;
                        }
                        if !play(&ctx, pair, None).await {
                            return Ok(());
                        }
                        ended |= pair.play.is_none();
                        continue;
                    }
                    let tf = pair.walk.timeframe.seconds();
                    let at = pair.next_time();
                    let (next, path) =
                        *pair.forming.get_or_insert_with(|| next_candle(me.seed, pair.walk, at, pair.last.close));
                    if !phase.is_multiple_of(QUOTES_PER_CANDLE) {
                        // A live quote from the forming candle's path, with a realistic spread.
                        let at = path[(phase % QUOTES_PER_CANDLE) * STEPS / QUOTES_PER_CANDLE];
                        let q = Quote {
                            instrument: i,
                            time: Ts(next.time.0 + tf * (phase % QUOTES_PER_CANDLE) as i64 / QUOTES_PER_CANDLE as i64),
                            bid: round_price(i, at - half_spread),
                            ask: round_price(i, at + half_spread),
                        };
                        if !ctx.send(MarketEvent::Quote(q)).await {
                            return Ok(());
                        }
                        continue;
                    }
                    pair.forming = None;
                    if !step(&ctx, pair, &next).await {
                        return Ok(());
                    }
                }
                if ended && !status(&ctx, &pairs, FeedState::Live, Some(message(&pairs))).await {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timeframe;
    use std::collections::HashMap;

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

    /// Runs the demo on `series` until each has `live` live candles after
    /// the warm-up; returns every candle and quote sent.
    async fn run(
        series: &[SeriesKey],
        resume: HashMap<SeriesKey, Last>,
        live: usize,
    ) -> (Vec<(Candle, Phase)>, Vec<Quote>) {
        run_from(series, resume, live, Some(Ts(1_700_006_400))).await
    }

    async fn run_from(
        series: &[SeriesKey],
        resume: HashMap<SeriesKey, Last>,
        live: usize,
        start: Option<Ts>,
    ) -> (Vec<(Candle, Phase)>, Vec<Quote>) {
        run_source(DemoSource::new(7, Duration::from_millis(4), start), series, resume, live).await
    }

    async fn run_source(
        source: DemoSource,
        series: &[SeriesKey],
        resume: HashMap<SeriesKey, Last>,
        live: usize,
    ) -> (Vec<(Candle, Phase)>, Vec<Quote>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let ctx = SourceCtx {
            tx,
            shutdown: shutdown.clone(),
            series: series.to_vec(),
            resume,
            strategies: Default::default(),
        };
        let task = tokio::spawn(Box::new(source).run(ctx));
        let (mut candles, mut quotes) = (Vec::new(), Vec::new());
        let mut counts: HashMap<SeriesKey, usize> = HashMap::new();
        while series.iter().any(|k| counts.get(k).copied().unwrap_or(0) < live) {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the demo stalled") {
                Some(MarketEvent::Candle { candle, phase }) => {
                    if phase == Phase::Live {
                        *counts.entry(candle.key()).or_default() += 1;
                    }
                    candles.push((candle, phase));
                }
                Some(MarketEvent::Quote(q)) => quotes.push(q),
                Some(MarketEvent::Status(_) | MarketEvent::Rejected(_)) => {}
                None => break,
            }
        }
        shutdown.cancel();
        let _ = task.await;
        (candles, quotes)
    }

    fn eur_h1_h4() -> (SeriesKey, SeriesKey) {
        let eur = Instrument::new("EUR_USD").unwrap();
        (SeriesKey::new(eur, Timeframe::H1), SeriesKey::new(eur, Timeframe::H4))
    }

    fn of(candles: &[(Candle, Phase)], key: SeriesKey) -> Vec<Candle> {
        candles.iter().filter(|(c, _)| c.key() == key).map(|(c, _)| *c).collect()
    }

    /// H1 and H4 of one pair are one market: each H4 candle is its four H1
    /// candles (first open, highest high, lowest low, last close, summed
    /// volume), and the pair has one stream of quotes. (Each timeframe used to
    /// walk on its own: EUR_USD H1 at 1.07, H4 at 1.09, quotes from both.)
    // The walk is paced by tokio timers: a paused clock runs it without
    // waiting and without depending on how loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn the_timeframes_of_a_pair_are_built_from_one_walk() {
        let (h1, h4) = eur_h1_h4();
        let (candles, quotes) = run(&[h4, h1], HashMap::new(), 8).await;
        let (ones, fours) = (of(&candles, h1), of(&candles, h4));
        assert!(fours.len() >= 60 + 8, "{} H4 candles", fours.len());
        let mut checked = 0;
        for f in &fours {
            let inside: Vec<&Candle> =
                ones.iter().filter(|c| c.time >= f.time && c.time.0 < f.time.0 + 4 * 3600).collect();
            if inside.len() < 4 {
                continue; // Before H1's own warm-up began.
            }
            assert_eq!(inside.len(), 4);
            assert_eq!(f.open, inside[0].open, "{f:?}");
            assert_eq!(f.close, inside[3].close, "{f:?}");
            assert_eq!(f.high, inside.iter().map(|c| c.high).fold(f64::MIN, f64::max));
            assert_eq!(f.low, inside.iter().map(|c| c.low).fold(f64::MAX, f64::min));
            assert!((f.volume - inside.iter().map(|c| c.volume).sum::<f64>()).abs() < 1e-9);
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} H4 candles had their H1 candles");
        // H1 has its own warm-up, from the same start.
        assert_eq!(ones.first().map(|c| c.time), Some(Ts(1_700_006_400 / 3600 * 3600)));
        // One quote stream per pair: consecutive quotes stay within the path's moves.
        assert!(!quotes.is_empty());
        for q in &quotes {
            let near = ones.iter().any(|c| (q.bid - c.close).abs() < 0.01);
            assert!(near, "a quote off the pair's walk: {q:?}");
        }
        // The warm-up shows defined indicators from the first frame, without signalling it.
        assert!(candles.iter().filter(|(c, p)| c.key() == h4 && *p == Phase::Warmup).count() >= 60);
    }

    /// Stopped with H1 ahead of H4 (mid-way through an H4 candle), the walk
    /// starts again from H4's stored close: the candles after the restart
    /// are those an uninterrupted run makes, for both.
    // The walk is paced by tokio timers: a paused clock runs it without
    // waiting and without depending on how loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn a_restart_mid_way_through_a_longer_candle_goes_on_with_the_same_walk() {
        let (h1, h4) = eur_h1_h4();
        let (whole, _) = run(&[h1, h4], HashMap::new(), 12).await;
        let (ones, fours) = (of(&whole, h1), of(&whole, h4));
        // Cut after the H4 candle that ends a few live candles in, with H1 two hours further.
        let cut4 = fours[fours.len() - 2];
        let cut1 = ones.iter().find(|c| c.time.0 == cut4.time.0 + 4 * 3600 + 3600).copied().unwrap();
        let resume: HashMap<SeriesKey, Last> =
            [(h1, Last { time: cut1.time, close: cut1.close }), (h4, Last { time: cut4.time, close: cut4.close })]
                .into();
        let (again, _) = run(&[h1, h4], resume, 1).await;
        let next4 = of(&again, h4);
        let next1 = of(&again, h1);
        assert_eq!(next1.first().map(|c| c.time), Some(Ts(cut1.time.0 + 3600)), "H1 goes on after its stored candle");
        let after1: Vec<Candle> = ones.iter().filter(|c| c.time > cut1.time).copied().collect();
        assert_eq!(next1[..next1.len().min(after1.len())], after1[..next1.len().min(after1.len())]);
        let after4: Vec<Candle> = fours.iter().filter(|c| c.time > cut4.time).copied().collect();
        assert!(!next4.is_empty() && !after4.is_empty());
        assert_eq!(next4[0], after4[0], "the H4 candle H1 was half-way through when it stopped");
        assert!(again.iter().all(|(_, p)| *p == Phase::Live), "no warm-up again");
    }

    /// A timeframe added to a pair whose walk has run far ahead of the wall
    /// clock (as the demo does) warms up to where the walk is, instead of
    /// catching up on years of candles at once, signalling all the way.
    // The walk is paced by tokio timers: a paused clock runs it without
    // waiting and without depending on how loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn a_timeframe_added_later_warms_up_where_the_pair_is() {
        let (h1, h4) = eur_h1_h4();
        let ahead = Ts((Ts::now().0 / 14_400 + 6 * 365 * 6) * 14_400); // three years on
        let resume: HashMap<SeriesKey, Last> = [(h4, Last { time: ahead, close: 1.1 })].into();
        let (candles, _) = run_from(&[h1, h4], resume, 1, None).await;
        let live1 = candles.iter().filter(|(c, p)| c.key() == h1 && *p == Phase::Live).count();
        assert!(live1 <= 8, "{live1} H1 candles sent live at once");
        let warm1: Vec<&Candle> =
            candles.iter().filter(|(c, p)| c.key() == h1 && *p == Phase::Warmup).map(|(c, _)| c).collect();
        assert!(warm1.len() >= 60, "{} warm-up candles", warm1.len());
        assert_eq!(warm1.last().map(|c| c.time.0 + 3600), Some(ahead.0 + 4 * 3600), "warmed up to the walk's position");
    }

    /// Any set of timeframes shares one walk: the largest period they all
    /// divide is always itself a granularity (M4 and M10: M2).
    #[test]
    fn every_set_of_timeframes_has_a_walk() {
        let eur = Instrument::new("EUR_USD").unwrap();
        for a in Timeframe::ALL {
            for b in Timeframe::ALL {
                let keys = [SeriesKey::new(eur, a), SeriesKey::new(eur, b)];
                let tf = walk_timeframe(&keys).unwrap_or_else(|| panic!("no walk for {a} and {b}"));
                assert!(a.seconds() % tf.seconds() == 0 && b.seconds() % tf.seconds() == 0);
            }
        }
        let keys = [Timeframe::M4, Timeframe::M10].map(|t| SeriesKey::new(eur, t));
        assert_eq!(walk_timeframe(&keys), Some(Timeframe::M2));
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

    fn bundled() -> (DemoSource, Vec<Candle>) {
        let h = history::bundled().unwrap();
        let candles = h.candles.clone();
        (DemoSource::new(7, Duration::from_millis(4), None).with_histories(vec![h]), candles)
    }

    /// A pair with history plays the file's candles exactly, in order: the
    /// first 60 as the warm-up, the rest live; then the walk goes on from
    /// the last close, an hour later.
    // Paced by tokio timers: a paused clock plays the year at once.
    #[tokio::test(start_paused = true)]
    async fn a_history_plays_its_candles_exactly_then_the_walk_goes_on() {
        let (source, file) = bundled();
        let h1 = key("EUR_USD");
        let (sent, quotes) = run_source(source, &[h1], HashMap::new(), file.len() - 60 + 2).await;
        let played: Vec<Candle> = sent.iter().take(file.len()).map(|(c, _)| *c).collect();
        assert_eq!(played, file);
        assert!(sent[..60].iter().all(|(_, p)| *p == Phase::Warmup));
        assert!(sent[60..].iter().all(|(_, p)| *p == Phase::Live));
        let last = file[file.len() - 1];
        let after = sent[file.len()].0;
        assert_eq!((after.time, after.open), (Ts(last.time.0 + 3600), last.close), "the walk goes on from the history");
        // Quotes come from inside the candles they precede.
        let quote = quotes[quotes.len() / 2];
        let candle = file.iter().find(|c| c.time.0 + 3600 > quote.time.0).unwrap();
        let mid = (quote.bid + quote.ask) / 2.0;
        assert!(mid >= candle.low - 1e-9 && mid <= candle.high + 1e-9, "{quote:?} outside {candle:?}");
    }

    /// H4 from recorded H1: each candle is its hours of the file, and a
    /// candle cut short by the weekend ends with the market's last hour.
    #[tokio::test(start_paused = true)]
    async fn longer_timeframes_are_built_from_the_history_across_its_gaps() {
        let (source, file) = bundled();
        let h4 = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H4);
        let mut expected: Vec<Candle> = Vec::new();
        for c in &file {
            let time = Ts(c.time.0 - c.time.0.rem_euclid(14_400));
            match expected.last_mut() {
                Some(e) if e.time == time => {
                    e.high = e.high.max(c.high);
                    e.low = e.low.min(c.low);
                    e.close = c.close;
                    e.volume += c.volume;
                }
                _ => expected.push(Candle { timeframe: Timeframe::H4, time, ..*c }),
            }
        }
        let (sent, _) = run_source(source, &[h4], HashMap::new(), expected.len() - 60).await;
        let built: Vec<Candle> = sent.iter().take(expected.len()).map(|(c, _)| *c).collect();
        assert_eq!(built.len(), expected.len());
        for (b, e) in built.iter().zip(&expected) {
            assert_eq!((b.time, b.open, b.high, b.low, b.close), (e.time, e.open, e.high, e.low, e.close));
            assert!((b.volume - e.volume).abs() <= 1e-6 * e.volume, "{b:?} vs {e:?}");
        }
        // The weekend cut the Friday candle short: it is there all the same.
        let friday = built.iter().filter(|c| c.time.weekday() == 4).count();
        assert!(friday > 40, "{friday} Friday H4 candles");
    }

    /// A restart part way through the history goes on after the stored
    /// candle; stored candles past its end (a data directory of the
    /// simulated demo) go on with the walk instead.
    #[tokio::test(start_paused = true)]
    async fn a_restart_goes_on_in_the_history_or_past_it_with_the_walk() {
        let h1 = key("EUR_USD");
        let (source, file) = bundled();
        let at = file[1000];
        let resume: HashMap<SeriesKey, Last> = [(h1, Last { time: at.time, close: at.close })].into();
        let (sent, _) = run_source(source, &[h1], resume, 5).await;
        let next: Vec<Candle> = sent.iter().map(|(c, _)| *c).collect();
        assert_eq!(next, file[1001..1006]);
        assert!(sent.iter().all(|(_, p)| *p == Phase::Live));

        let (source, _) = bundled();
        let later = Ts(1_800_000_000);
        let resume: HashMap<SeriesKey, Last> = [(h1, Last { time: later, close: 1.1 })].into();
        let (sent, _) = run_source(source, &[h1], resume, 2).await;
        assert_eq!(sent[0].0.time, Ts(later.0 + 3600));
        assert_eq!(sent[0].0.open, 1.1);
    }

    /// A new demo's warm-up lies in the past and its time-lapse starts at
    /// the wall clock: the first screen shows today's date.
    #[tokio::test(start_paused = true)]
    async fn a_new_demo_warms_up_on_the_past_and_starts_now() {
        let h4 = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H4);
        let before = Ts::now();
        let (sent, _) = run_from(&[h4], HashMap::new(), 1, None).await;
        let first_live = sent.iter().find(|(_, p)| *p == Phase::Live).map(|(c, _)| c.time).unwrap();
        assert!(sent.iter().filter(|(_, p)| *p == Phase::Warmup).all(|(c, _)| c.time < first_live));
        assert!(sent[0].0.time <= before, "the first candle {:?} is after the wall clock {before:?}", sent[0].0.time);
        assert!(first_live <= Ts::now() && first_live.0 > before.0 - 14_400, "{first_live:?} vs {before:?}");
    }

    /// A simulated pair beside recorded history walks on the history's
    /// calendar: the same hours (no weekend candles), live from the same
    /// candle, so the demo has one date.
    #[tokio::test(start_paused = true)]
    async fn a_simulated_pair_beside_history_keeps_its_dates() {
        let (source, file) = bundled();
        let (eur, gbp) = (key("EUR_USD"), key("GBP_USD"));
        let (sent, _) = run_source(source, &[eur, gbp], HashMap::new(), 500).await;
        let times = |k: SeriesKey| -> Vec<Ts> { of(&sent, k).iter().map(|c| c.time).take(560).collect() };
        assert_eq!(times(gbp), times(eur));
        assert_eq!(times(eur), file.iter().map(|c| c.time).take(560).collect::<Vec<_>>());
        let first_live =
            |k: SeriesKey| sent.iter().find(|(c, p)| c.key() == k && *p == Phase::Live).map(|(c, _)| c.time);
        assert_eq!(first_live(gbp), first_live(eur));
        assert!(of(&sent, gbp).iter().all(|c| c.instrument == gbp.instrument && c.check_prices().is_ok()));
    }

    /// Two histories over different hours: each pair plays its own file's
    /// candles and nothing else (the calendar the walks step on is every
    /// file's, but a pair in its history takes no step of it).
    #[tokio::test(start_paused = true)]
    async fn two_histories_each_play_their_own_candles() {
        let file = history::bundled().unwrap().candles;
        let gbp_i = Instrument::new("GBP_USD").unwrap();
        let eur = history::History {
            instrument: Instrument::new("EUR_USD").unwrap(),
            timeframe: Timeframe::H1,
            // Every other hour: the other file's hours fall between.
            candles: file[..600].iter().step_by(2).copied().collect(),
            origin: "a".into(),
        };
        let gbp_candles: Vec<Candle> = file[100..400].iter().map(|c| Candle { instrument: gbp_i, ..*c }).collect();
        let gbp = history::History {
            instrument: gbp_i,
            timeframe: Timeframe::H1,
            candles: gbp_candles.clone(),
            origin: "b".into(),
        };
        let source = DemoSource::new(7, Duration::from_millis(4), None).with_histories(vec![eur.clone(), gbp]);
        let (ke, kg) = (key("EUR_USD"), key("GBP_USD"));
        let (sent, _) = run_source(source, &[ke, kg], HashMap::new(), 200).await;
        assert_eq!(of(&sent, ke)[..240], eur.candles[..240]);
        assert_eq!(of(&sent, kg)[..240], gbp_candles[..240]);
    }
}

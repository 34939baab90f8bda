//! The engine's hot path: one closed candle through fast MA, slow MA, ATR and
//! the crossover test, with no I/O. Side by side with the `ta` and `yata`
//! crates doing the same work, and with recomputing a 200-candle window per
//! candle (what the original system did). Figures: BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pipwatch::engine::indicators::true_range;
use pipwatch::engine::{Engine, Phase, SeriesState, StrategyParams, StrategySet};
use pipwatch::time::Ts;
use pipwatch::types::{Candle, Instrument, Timeframe};

const N: usize = 10_000;

pub fn candles(n: usize) -> Vec<Candle> {
    let i = Instrument::new("EUR_USD").expect("valid");
    let mut p = 1.1f64;
    let mut x = 0.37f64;
    (0..n)
        .map(|k| {
            x = 3.97 * x * (1.0 - x);
            let o = p;
            // A bounded walk: the logistic map's mean is not 0.5, so pull back to 1.1.
            p *= 1.0 + (x - 0.5) * 0.004;
            p += (1.1 - p) * 0.01;
            Candle {
                instrument: i,
                timeframe: Timeframe::H1,
                time: Ts(1_500_000_000 + k as i64 * 3600),
                open: o,
                high: o.max(p) * 1.0007,
                low: o.min(p) * 0.9993,
                close: p,
                volume: 100.0,
            }
        })
        .collect()
}

/// Writes `n` of these candles as a CSV in the Dukascopy format of the
/// shipped data (the replay and backtest benches read it).
pub fn write_dukascopy_csv(path: &std::path::Path, n: usize) {
    write_csv(path, n, "Gmt time,Open,High,Low,Close,Volume", "%d.%m.%Y %H:%M:%S%.3f");
}

/// `n` candles as CSV with this header and time format (chrono's).
pub fn write_csv(path: &std::path::Path, n: usize, header: &str, time_format: &str) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    writeln!(f, "{header}").expect("write");
    for c in candles(n) {
        let t = chrono::DateTime::from_timestamp(c.time.0, 0).expect("time");
        writeln!(
            f,
            "{},{:.5},{:.5},{:.5},{:.5},{:.1}",
            t.format(time_format),
            c.open,
            c.high.max(c.open),
            c.low.min(c.open),
            c.close,
            c.volume
        )
        .expect("write");
    }
}

fn crossover(prev: &mut Option<(f64, f64)>, f: f64, s: f64) -> u32 {
    let mut out = 0;
    if let Some((pf, ps)) = *prev {
        out = u32::from(f > s && pf <= ps) + 2 * u32::from(f < s && pf >= ps);
    }
    *prev = Some((f, s));
    out
}

fn bench_per_candle(c: &mut Criterion) {
    let data = candles(N);
    let mut g = c.benchmark_group("per_candle");
    g.throughput(Throughput::Elements(N as u64));

    g.bench_function("pipwatch", |b| {
        b.iter_batched_ref(
            || SeriesState::new(StrategyParams::default()),
            |s| {
                for c in &data {
                    let _ = black_box(s.step(black_box(c)));
                }
            },
            BatchSize::SmallInput,
        )
    });

    g.bench_function("pipwatch_engine_apply", |b| {
        b.iter_batched_ref(
            || (Engine::new(StrategySet::default()), Vec::with_capacity(4)),
            |(e, out)| {
                for c in &data {
                    out.clear();
                    black_box(e.apply_into(black_box(c), Phase::Live, out));
                }
            },
            BatchSize::SmallInput,
        )
    });

    g.bench_function("ta", |b| {
        use ta::Next;
        use ta::indicators::{AverageTrueRange, SimpleMovingAverage};
        let items: Vec<ta::DataItem> = data
            .iter()
            .map(|c| {
                ta::DataItem::builder()
                    .open(c.open)
                    .high(c.high)
                    .low(c.low)
                    .close(c.close)
                    .volume(c.volume)
                    .build()
                    .expect("valid")
            })
            .collect();
        b.iter_batched_ref(
            || {
                let (f, s, a) = (SimpleMovingAverage::new(10), SimpleMovingAverage::new(20), AverageTrueRange::new(14));
                (f.expect("period"), s.expect("period"), a.expect("period"), None)
            },
            |(f, s, a, prev)| {
                for it in &items {
                    let (fv, sv, av) = (f.next(ta::Close::close(it)), s.next(ta::Close::close(it)), a.next(it));
                    black_box((crossover(prev, fv, sv), av));
                }
            },
            BatchSize::SmallInput,
        )
    });

    g.bench_function("yata", |b| {
        use yata::core::Method;
        use yata::methods::{RMA, SMA, TR};
        let bars: Vec<[f64; 5]> = data.iter().map(|c| [c.open, c.high, c.low, c.close, c.volume]).collect();
        b.iter_batched_ref(
            || {
                let first = &bars[0];
                (
                    SMA::new(10, &first[3]).expect("period"),
                    SMA::new(20, &first[3]).expect("period"),
                    TR::new(first as &dyn yata::core::OHLCV).expect("tr"),
                    RMA::new(14, &(first[1] - first[2])).expect("period"),
                    None,
                )
            },
            |(f, s, tr, rma, prev)| {
                for bar in &bars {
                    let (fv, sv) = (f.next(&bar[3]), s.next(&bar[3]));
                    let atr = rma.next(&tr.next(bar as &dyn yata::core::OHLCV));
                    black_box((crossover(prev, fv, sv), atr));
                }
            },
            BatchSize::SmallInput,
        )
    });

    g.bench_function("window_recompute_200", |b| {
        let closes: Vec<f64> = data.iter().map(|c| c.close).collect();
        b.iter_batched_ref(
            || None,
            |prev| {
                for t in 200..data.len() {
                    // Everything from the last 200 candles, every candle.
                    let w = &closes[t - 199..=t];
                    let fast = w[190..].iter().sum::<f64>() / 10.0;
                    let slow = w[180..].iter().sum::<f64>() / 20.0;
                    let mut atr = 0.0;
                    for k in t - 198..=t {
                        let tr = true_range(data[k].high, data[k].low, data[k - 1].close);
                        atr = if k < t - 198 + 14 { atr + tr / 14.0 } else { (atr * 13.0 + tr) / 14.0 };
                    }
                    black_box((crossover(prev, fast, slow), atr));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_per_candle);
criterion_main!(benches);

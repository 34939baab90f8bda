//! The hot metric-record paths (issue 5): what the engine's task and the
//! server's fold do per event. Target: under 50 ns per record.
//! Figures: BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pipwatch::event::{CandleRecord, Event};
use pipwatch::metrics::Metrics;
use pipwatch::time::Ts;
use pipwatch::types::{Instrument, Timeframe};

fn bench(c: &mut Criterion) {
    let m = Metrics::new();
    let candles: Vec<Event> = ["EUR_USD", "GBP_USD", "USD_JPY", "USD_CHF", "AUD_USD", "USD_CAD", "NZD_USD"]
        .iter()
        .flat_map(|i| {
            [Timeframe::M15, Timeframe::H1, Timeframe::H4, Timeframe::D].map(|tf| {
                Event::Candle(CandleRecord {
                    instrument: Instrument::new(i).unwrap_or_else(|e| panic!("{e}")),
                    timeframe: tf,
                    time: Ts(1_700_000_000),
                    open: 1.0,
                    high: 1.0,
                    low: 1.0,
                    close: 1.0,
                    fast: None,
                    slow: None,
                    atr: None,
                })
            })
        })
        .collect();
    let mut n = 0usize;
    c.bench_function("metrics/candle_record", |b| {
        b.iter(|| {
            n = (n + 1) % candles.len();
            m.observe(black_box(&candles[n]));
        })
    });
    let mut x = 0.0001f64;
    c.bench_function("metrics/signal_latency_record", |b| {
        b.iter(|| {
            x = if x > 0.5 { 0.0001 } else { x * 1.01 };
            m.signal_latency(black_box(x));
        })
    });
}

/// One full system sample (CPU, memory, process, disks, networks): at the
/// default 2 s interval its share of one core is this time / 2 s.
fn sample(c: &mut Criterion) {
    let dir = std::env::temp_dir();
    let mut s = pipwatch::health::sampler::Sampler::new(&dir);
    c.bench_function("health/system_sample", |b| b.iter(|| black_box(s.sample())));
}

criterion_group!(benches, bench, sample);
criterion_main!(benches);

//! The sweep a user would run (issue 22): 175 SMA combinations (fast
//! 5..50:5, slow 10..200:10) over 100,000 hourly candles with ATR(14) stops,
//! candles read once, every core. Throughput in combination-candles.
//! Figures: BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipwatch::engine::MaKind;
use pipwatch::engine::trade::Fill;
use pipwatch::market::csv::CsvInput;
use pipwatch::sweep::{Axes, Sweep};
use pipwatch::types::{Instrument, Timeframe};

#[path = "engine.rs"]
#[allow(dead_code)]
mod engine;

fn bench_sweep(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("EUR_USD_H1.csv");
    engine::write_dukascopy_csv(&path, 100_000);
    let inputs =
        vec![CsvInput { path, instrument: Instrument::new("EUR_USD").expect("valid"), timeframe: Timeframe::H1 }];
    let axes = Axes {
        ma: vec![MaKind::Sma],
        fast: (5..=50).step_by(5).collect(),
        slow: (10..=200).step_by(10).collect(),
        atr: vec![14],
        sl: vec![1.5],
        tp: vec![3.0],
    };
    let combinations = axes.combinations().len();
    assert_eq!(combinations, 175);
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    g.throughput(Throughput::Elements((combinations * 100_000) as u64));
    g.bench_function("175_sma_x_100k", |b| {
        b.iter(|| {
            let sweep = Sweep {
                inputs: &inputs,
                axes: axes.clone(),
                fill: Fill::Close,
                spread_pips: 0.0,
                from: None,
                to: None,
                progress: false,
            };
            let results = sweep.run(&mut |_| {}).expect("sweep");
            assert_eq!(results.outcomes.len(), 175);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_sweep);
criterion_main!(benches);

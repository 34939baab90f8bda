//! `pipwatch replay` end to end over a 1,000,000-row CSV (Dukascopy format,
//! like the shipped data): read, parse, validate, engine, JSON out.
//! Figures: BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipwatch::engine::StrategySet;
use pipwatch::market::csv::CsvInput;
use pipwatch::replay::Replay;
use pipwatch::types::{Instrument, Timeframe};

#[path = "engine.rs"]
#[allow(dead_code)]
mod engine;

fn bench_replay(c: &mut Criterion) {
    // A million rows in the Dukascopy format of the shipped data.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("EUR_USD_H1.csv");
    engine::write_dukascopy_csv(&path, 1_000_000);
    let inputs = vec![CsvInput {
        path: path.clone(),
        instrument: Instrument::new("EUR_USD").expect("valid"),
        timeframe: Timeframe::H1,
    }];
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    for indicators in [false, true] {
        let name = if indicators { "1m_rows_indicators" } else { "1m_rows_signals" };
        g.bench_function(name, |b| {
            b.iter(|| {
                let run = Replay { inputs: &inputs, strategies: StrategySet::default(), indicators, progress: false };
                let mut sink = std::io::BufWriter::with_capacity(1 << 16, std::io::sink());
                let summary = run.run(&mut sink, &mut |_| {}).expect("replay");
                assert_eq!(summary.candles, 1_000_000);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);

//! `pipwatch replay` end to end over a 1,000,000-row CSV (Dukascopy format,
//! like the shipped data): read, parse, validate, engine, JSON out.
//! Figures: BENCHMARKS.md.

use std::io::Write;

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
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    writeln!(f, "Gmt time,Open,High,Low,Close,Volume").expect("write");
    for c in engine::candles(1_000_000) {
        let t = chrono::DateTime::from_timestamp(c.time.0, 0).expect("time");
        writeln!(
            f,
            "{},{:.5},{:.5},{:.5},{:.5},{:.1}",
            t.format("%d.%m.%Y %H:%M:%S%.3f"),
            c.open,
            c.high.max(c.open),
            c.low.min(c.open),
            c.close,
            c.volume
        )
        .expect("write");
    }
    drop(f);
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

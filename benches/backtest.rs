//! `pipwatch backtest` end to end over a 1,000,000-row CSV (Dukascopy
//! format, like the shipped data): read, parse, engine, the trade rules and
//! the summaries. Figures: BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipwatch::backtest::Backtest;
use pipwatch::engine::StrategySet;
use pipwatch::engine::trade::Fill;
use pipwatch::market::csv::CsvInput;
use pipwatch::types::{Instrument, Timeframe};

#[path = "engine.rs"]
#[allow(dead_code)]
mod engine;

fn bench_backtest(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("EUR_USD_H1.csv");
    engine::write_dukascopy_csv(&path, 1_000_000);
    let inputs = vec![CsvInput {
        path: path.clone(),
        instrument: Instrument::new("EUR_USD").expect("valid"),
        timeframe: Timeframe::H1,
    }];
    let mut g = c.benchmark_group("backtest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("1m_rows_json", |b| {
        b.iter(|| {
            let run = Backtest {
                inputs: &inputs,
                strategies: StrategySet::default(),
                fill: Fill::Close,
                spread_pips: 0.0,
                from: None,
                to: None,
                progress: false,
            };
            let report = run.run(&mut |_| {}).expect("backtest");
            assert_eq!(report.read.candles, 1_000_000);
            let mut sink = std::io::BufWriter::with_capacity(1 << 16, std::io::sink());
            report.write_json(&mut sink).expect("write");
        })
    });
    g.finish();
}

criterion_group!(benches, bench_backtest);
criterion_main!(benches);

//! `pipwatch backtest` end to end over a 1,000,000-row CSV (Dukascopy
//! format, like the shipped data): read, parse, engine, the trade rules and
//! the summaries. Figures: BENCHMARKS.md.

use std::io::Write;

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

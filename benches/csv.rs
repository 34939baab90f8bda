//! The CSV reader alone over a 1,000,000-row file in the common
//! `time,open,high,low,close,volume` shape (MB/s): the fast reader on one
//! thread, on every core, and the csv crate's reader it replaced.
//! Figures: BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipwatch::market::csv::CsvCandles;
use pipwatch::types::{Instrument, Timeframe};

#[path = "engine.rs"]
#[allow(dead_code)]
mod engine;

fn bench_csv(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("EUR_USD_H1.csv");
    engine::write_csv(&path, 1_000_000, "time,open,high,low,close,volume", "%Y-%m-%d %H:%M:%S");
    let bytes = std::fs::metadata(&path).expect("size").len();
    let i = Instrument::new("EUR_USD").expect("valid");
    let mut g = c.benchmark_group("csv");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for (name, threads) in [("fast_1_thread", 1), ("fast_every_core", cores)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let rows = CsvCandles::open_with(&path, i, Timeframe::H1, threads).expect("open");
                assert_eq!(rows.filter(Result::is_ok).count(), 1_000_000);
            })
        });
    }
    g.bench_function("csv_crate", |b| {
        b.iter(|| {
            let file = std::fs::File::open(&path).expect("open");
            let reader = Box::new(std::io::BufReader::with_capacity(1 << 16, file));
            let rows = CsvCandles::from_reader(reader, "x".into(), i, Timeframe::H1).expect("open");
            assert_eq!(rows.filter(Result::is_ok).count(), 1_000_000);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_csv);
criterion_main!(benches);

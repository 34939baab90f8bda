//! What sled's log cleaner gives back on a busy database: the data file's
//! size after a demo-like churn, with the cleaner off and on. Not a timing
//! (it measures bytes, and waits for sled's background thread), so it lives
//! here and not in `cargo test`. Run: `cargo bench --bench cleaner`.
//! An earlier build had the cleaner off, and about half of such a database
//! was dead log that was never given back (5.2 MB against 2.6 MB).

use std::path::Path;

use pipwatch::engine::{Engine, Phase, StrategySet};
use pipwatch::event::Event;
use pipwatch::store::{CandleCommit, Priority, Store};
use pipwatch::time::Ts;
use pipwatch::types::{Candle, Instrument, SeriesKey, Timeframe};

/// A busy demo's writes through the live path's calls: 28 series whose
/// states are rewritten every close, and their signals, which pile up
/// in leaves that nothing rewrites once they are full. Returns the data
/// file's size at the end: once it is under `wait_for`, if given, or
/// after 10 s of giving the cleaner time (a loaded machine runs it late).
fn churn(dir: &Path, clean_every_ms: Option<u64>, wait_for: Option<u64>) -> u64 {
    let store = Store::open_cleaning_every(dir, clean_every_ms).unwrap();
    let mut engine = Engine::new(StrategySet::default());
    let mut keys = Vec::new();
    for i in ["EUR_USD", "GBP_USD", "USD_JPY", "USD_CHF", "AUD_USD", "USD_CAD", "NZD_USD"] {
        for tf in [Timeframe::M15, Timeframe::H1, Timeframe::H4, Timeframe::D] {
            keys.push(SeriesKey::new(Instrument::new(i).unwrap(), tf));
        }
    }
    let mut events = Vec::new();
    for close in 0..2_000i64 {
        let mut batch = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            // A wave whose period differs per series, so crossovers come often.
            let p = 1.0 + ((close as f64) / (5.0 + n as f64 / 4.0)).sin() * 0.01;
            let time = Ts(1_600_000_000 + close * key.timeframe.seconds());
            let candle = Candle {
                instrument: key.instrument,
                timeframe: key.timeframe,
                time,
                open: p,
                high: p * 1.001,
                low: p * 0.999,
                close: p,
                volume: 1.0,
            };
            events.clear();
            engine.apply_into(&candle, Phase::Live, &mut events);
            let signal = events.iter().find_map(|e| if let Event::Signal(s) = e { Some(s) } else { None });
            let state = engine.state(key).unwrap();
            batch.push(
                store
                    .prepare(&CandleCommit {
                        key: *key,
                        candle: None,
                        state,
                        signal,
                        routes: &[],
                        now: time,
                        priority: Priority::High,
                    })
                    .unwrap(),
            );
        }
        store.commit_all(&batch).unwrap();
        store.flush_blocking().unwrap();
    }
    let size = || std::fs::metadata(dir.join("db")).unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wait_for.is_some_and(|limit| size() >= limit) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        store.flush_blocking().unwrap();
    }
    size()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let (a, b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let without = churn(a.path(), None, None);
    // Faster than in production (5 s), so that this does not write for minutes.
    let with = churn(b.path(), Some(20), Some(without * 3 / 4));
    println!("data file after 2,000 closes of 28 series: cleaner off {without} bytes, every 20 ms {with} bytes");
    println!("given back: {:.0}%", 100.0 * (without as f64 - with as f64) / without as f64);
}

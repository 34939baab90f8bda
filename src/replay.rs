//! `pipwatch replay`: the engine over CSV history, no clock, no network, no store.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{Engine, Phase, StrategySet};
use crate::event::Event;
use crate::market::csv::{BadRow, CsvCandles, CsvError, CsvInput};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub files: usize,
    pub candles: u64,
    pub signals: u64,
    pub bad_rows: u64,
    pub elapsed: Duration,
    /// Files read to the end without a single candle (a header only, or
    /// every row rejected): a run that "succeeds" on them has done nothing.
    pub empty: Vec<String>,
}

/// "1 candle", "2 candles", "0 candles".
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.candles as f64 / secs } else { 0.0 };
        write!(
            f,
            "replayed {} from {} in {:.3}s ({:.0} candles/s): {}, {}",
            count(self.candles, "candle"),
            count(self.files as u64, "file"),
            secs,
            rate,
            count(self.signals, "signal"),
            count(self.bad_rows, "rejected row"),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

pub struct Replay<'a> {
    pub inputs: &'a [CsvInput],
    pub strategies: StrategySet,
    pub indicators: bool,
    /// Shown on stderr when it is a terminal.
    pub progress: bool,
}

fn write_event(out: &mut impl Write, e: &Event) -> io::Result<()> {
    match e {
        // One per candle with --indicators: the hot path.
        Event::Candle(c) => c.write_json(out)?,
        Event::Signal(s) => s.write_json(out)?,
        e => serde_json::to_writer(&mut *out, e).map_err(io::Error::other)?,
    }
    out.write_all(b"\n")
}

/// What a candle's handler tells the driver.
pub(crate) enum Flow {
    Next,
    /// Stop reading, quietly (a closed stdout, the end of a range).
    Stop,
}

/// Reads every input in order, candle by candle, with the progress bar, and
/// hands each good candle to `each` (which returns whether it was accepted
/// and gave a signal, for the bar's counts). Shared by `replay` and `backtest`.
pub(crate) fn drive(
    inputs: &[CsvInput],
    progress: bool,
    on_bad_row: &mut dyn FnMut(&BadRow),
    summary: &mut Summary,
    each: &mut dyn FnMut(&crate::types::Candle, &mut Summary) -> Result<Flow, ReplayError>,
) -> Result<(), ReplayError> {
    // Every file's header first: a file that cannot be read fails the run
    // before it prints anything, not after the files before it.
    for input in inputs {
        CsvCandles::open_with(&input.path, input.instrument, input.timeframe, 1)?;
    }
    summary.files = inputs.len();
    let total: u64 = inputs.iter().filter_map(|i| std::fs::metadata(&i.path).ok()).map(|m| m.len()).sum();
    let bar = progress.then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {bar:40} {bytes}/{total_bytes} {msg} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut done_bytes = 0u64;
    'files: for input in inputs {
        let mut rows = CsvCandles::open(&input.path, input.instrument, input.timeframe)?;
        let mut candles = 0u64;
        while let Some(row) = rows.next() {
            let candle = match row {
                Ok(c) => c,
                Err(bad) => {
                    summary.bad_rows += 1;
                    on_bad_row(&bad);
                    continue;
                }
            };
            candles += 1;
            if let Flow::Stop = each(&candle, summary)? {
                break 'files;
            }
            if let Some(bar) = &bar
                && candles % 65_536 == 0
            {
                bar.set_position(done_bytes + rows.byte_position());
                bar.set_message(format!("{} candles, {} signals", summary.candles, summary.signals));
            }
        }
        done_bytes += rows.byte_position();
        if candles == 0 {
            summary.empty.push(rows.path().to_string());
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

impl Replay<'_> {
    /// Runs every input in order; `on_bad_row` hears each skipped row.
    /// A closed stdout (e.g. `| head`) ends the replay quietly.
    pub fn run(self, out: &mut impl Write, on_bad_row: &mut dyn FnMut(&BadRow)) -> Result<Summary, ReplayError> {
        let started = Instant::now();
        let mut engine = Engine::new(self.strategies);
        let mut summary = Summary::default();
        let mut events = Vec::with_capacity(4);
        let indicators = self.indicators;
        drive(self.inputs, self.progress, on_bad_row, &mut summary, &mut |candle, summary| {
            events.clear();
            let outcome = match indicators {
                true => engine.apply_into(candle, Phase::Live, &mut events),
                false => engine.apply_signals_into(candle, Phase::Live, &mut events),
            };
            summary.candles += u64::from(outcome.accepted);
            summary.signals += u64::from(outcome.signal);
            for e in &events {
                let wanted = match e {
                    Event::Signal(_) => true,
                    Event::Candle(_) => indicators,
                    _ => false,
                };
                if wanted {
                    match write_event(out, e) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Flow::Stop),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok(Flow::Next)
        })?;
        match out.flush() {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_in_words() {
        let one = Summary {
            files: 1,
            candles: 1,
            signals: 1,
            bad_rows: 1,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(one.to_string(), "replayed 1 candle from 1 file in 2.000s (0 candles/s): 1 signal, 1 rejected row");
        let many = Summary {
            files: 2,
            candles: 4000,
            signals: 0,
            bad_rows: 3,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(
            many.to_string(),
            "replayed 4000 candles from 2 files in 2.000s (2000 candles/s): 0 signals, 3 rejected rows"
        );
    }
}

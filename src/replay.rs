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

/// A record's bytes on the stack: its many short pieces are copied with
/// their lengths known where they are written (fixed moves, not a call to
/// memmove each), and the output sees one write per record.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    #[inline(always)]
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.write_all(b)?;
        Ok(b.len())
    }

    #[inline(always)]
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        let end = self.len + b.len();
        let Some(to) = self.buf.get_mut(self.len..end) else {
            return Err(io::Error::other("a record longer than 512 bytes"));
        };
        to.copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_event(out: &mut impl Write, e: &Event) -> io::Result<()> {
    match e {
        // One per candle with --indicators: the hot path.
        Event::Candle(c) => {
            let mut line = Line { buf: [0; 512], len: 0 };
            c.write_json(&mut line)?;
            line.write_all(b"\n")?;
            return out.write_all(&line.buf[..line.len]);
        }
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
    // 1 on a worker that is one of several (every core is busy already); 0: a large file uses every core.
    threads: usize,
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
        let mut rows = match threads {
            0 => CsvCandles::open(&input.path, input.instrument, input.timeframe)?,
            n => CsvCandles::open_with(&input.path, input.instrument, input.timeframe, n)?,
        };
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
                && candles.is_multiple_of(65_536)
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

/// The inputs by series, in the order each series first appears: a
/// series' files are one history (read in turn, through one engine state),
/// different series are independent work.
pub(crate) fn by_series(inputs: &[CsvInput]) -> Vec<Vec<CsvInput>> {
    let mut groups: Vec<Vec<CsvInput>> = Vec::new();
    for input in inputs {
        match groups.iter_mut().find(|g| g[0].instrument == input.instrument && g[0].timeframe == input.timeframe) {
            Some(g) => g.push(input.clone()),
            None => groups.push(vec![input.clone()]),
        }
    }
    groups
}

/// Workers for independent series: every core, when there is more than one series.
pub(crate) fn workers_for(groups: usize) -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).min(groups)
}

/// One series' files, read by a worker until done or told to stop.
pub(crate) type Work<'a, T> =
    dyn Fn(&[CsvInput], &std::sync::atomic::AtomicBool) -> Result<Done<T>, ReplayError> + Sync + 'a;

/// What a worker made of one series.
pub(crate) struct Done<T> {
    pub made: T,
    pub read: Summary,
    pub bad: Vec<BadRow>,
}

/// Runs `work` on each series on its own worker (one file at a time each,
/// `workers` at once), and hands the results to `take` in the series'
/// order, with their bad rows to `on_bad_row` first: the output is the same
/// whatever finishes first. `take` may stop the run (a closed stdout);
/// the workers then stop at their next candle.
pub(crate) fn in_parallel<T: Send>(
    groups: &[Vec<CsvInput>],
    workers: usize,
    progress: bool,
    on_bad_row: &mut dyn FnMut(&BadRow),
    summary: &mut Summary,
    work: &Work<'_, T>,
    take: &mut dyn FnMut(T) -> Result<Flow, ReplayError>,
) -> Result<(), ReplayError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    for input in groups.iter().flatten() {
        CsvCandles::open_with(&input.path, input.instrument, input.timeframe, 1)?;
    }
    summary.files = groups.iter().map(Vec::len).sum();
    let size =
        |g: &[CsvInput]| -> u64 { g.iter().filter_map(|i| std::fs::metadata(&i.path).ok()).map(|m| m.len()).sum() };
    let bar = progress.then(|| {
        let bar = ProgressBar::new(groups.iter().map(|g| size(g)).sum());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {bar:40} {bytes}/{total_bytes} {msg} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Done<T>, ReplayError>)>();
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                loop {
                    let g = next.fetch_add(1, Ordering::Relaxed);
                    if g >= groups.len() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if tx.send((g, work(&groups[g], stop))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting = std::collections::BTreeMap::new();
        let mut wanted = 0;
        let mut result = Ok(());
        for (g, done) in rx.iter() {
            waiting.insert(g, done);
            while let Some(done) = waiting.remove(&wanted) {
                if let Some(bar) = &bar {
                    bar.inc(size(&groups[wanted]));
                }
                wanted += 1;
                if result.is_err() || stop.load(Ordering::Relaxed) {
                    continue;
                }
                let step = done.and_then(|d| {
                    for b in &d.bad {
                        on_bad_row(b);
                    }
                    summary.candles += d.read.candles;
                    summary.signals += d.read.signals;
                    summary.bad_rows += d.read.bad_rows;
                    summary.empty.extend(d.read.empty);
                    take(d.made)
                });
                match step {
                    Ok(Flow::Next) => {}
                    Ok(Flow::Stop) => stop.store(true, Ordering::Relaxed),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        result = Err(e);
                    }
                }
                if let Some(bar) = &bar {
                    bar.set_message(format!("{} candles, {} signals", summary.candles, summary.signals));
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        result
    })
}

impl Replay<'_> {
    /// Runs every input in order; `on_bad_row` hears each skipped row.
    /// A closed stdout (e.g. `| head`) ends the replay quietly. Several
    /// series are replayed on every core, their records written series by
    /// series in the order of the inputs.
    pub fn run(self, out: &mut impl Write, on_bad_row: &mut dyn FnMut(&BadRow)) -> Result<Summary, ReplayError> {
        let groups = by_series(self.inputs);
        let workers = workers_for(groups.len());
        if workers > 1 {
            return self.run_parallel(&groups, workers, out, on_bad_row);
        }
        self.run_in_turn(out, on_bad_row)
    }

    fn run_parallel(
        &self,
        groups: &[Vec<CsvInput>],
        workers: usize,
        out: &mut impl Write,
        on_bad_row: &mut dyn FnMut(&BadRow),
    ) -> Result<Summary, ReplayError> {
        let started = Instant::now();
        let mut summary = Summary::default();
        let indicators = self.indicators;
        let work = |files: &[CsvInput], stop: &std::sync::atomic::AtomicBool| {
            let mut bytes = Vec::new();
            let mut bad = Vec::new();
            let mut read = Summary::default();
            let one = Replay { inputs: files, strategies: self.strategies.clone(), indicators, progress: false };
            one.each_candle(&mut bytes, &mut |b| bad.push(b.clone()), &mut read, Some(stop))?;
            Ok(Done { made: bytes, read, bad })
        };
        in_parallel(groups, workers, self.progress, on_bad_row, &mut summary, &work, &mut |bytes: Vec<u8>| match out
            .write_all(&bytes)
        {
            Ok(()) => Ok(Flow::Next),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            Err(e) => Err(e.into()),
        })?;
        match out.flush() {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    fn run_in_turn(self, out: &mut impl Write, on_bad_row: &mut dyn FnMut(&BadRow)) -> Result<Summary, ReplayError> {
        let started = Instant::now();
        let mut summary = Summary::default();
        self.each_candle(out, on_bad_row, &mut summary, None)?;
        match out.flush() {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// The engine over every input in turn, its records written to `out`.
    /// With `--indicators` (every candle a line) and the file on every
    /// core, formatter threads write the lines while the engine goes on:
    /// formatting seven numbers a candle cost more than all else on the
    /// engine's thread, which was then the one every other waited for.
    fn each_candle(
        &self,
        out: &mut impl Write,
        on_bad_row: &mut dyn FnMut(&BadRow),
        summary: &mut Summary,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<(), ReplayError> {
        let formatters = match (self.indicators, stop) {
            (true, None) => std::thread::available_parallelism().map_or(1, usize::from).min(4),
            _ => 0,
        };
        if formatters < 2 {
            return self.run_engine(on_bad_row, summary, stop, &mut |e| write_event(out, &e));
        }
        std::thread::scope(|scope| {
            let mut pool = Formatters::start(scope, formatters);
            let ran = self.run_engine(on_bad_row, summary, stop, &mut |e| pool.push(e, out));
            let finished = pool.finish(out);
            ran?;
            match finished {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    /// The engine over every input in turn; each record it gives goes to `emit`.
    fn run_engine(
        &self,
        on_bad_row: &mut dyn FnMut(&BadRow),
        summary: &mut Summary,
        stop: Option<&std::sync::atomic::AtomicBool>,
        emit: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> Result<(), ReplayError> {
        let mut engine = Engine::new(self.strategies.clone());
        let mut events = Vec::with_capacity(4);
        let indicators = self.indicators;
        let threads = if stop.is_some() { 1 } else { 0 };
        let progress = self.progress && stop.is_none();
        drive(self.inputs, progress, threads, on_bad_row, summary, &mut |candle, summary| {
            events.clear();
            let outcome = match indicators {
                true => engine.apply_into(candle, Phase::Live, &mut events),
                false => engine.apply_signals_into(candle, Phase::Live, &mut events),
            };
            summary.candles += u64::from(outcome.accepted);
            summary.signals += u64::from(outcome.signal);
            for e in events.drain(..) {
                let wanted = match e {
                    Event::Signal(_) => true,
                    Event::Candle(_) => indicators,
                    _ => false,
                };
                if wanted {
                    match emit(e) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Flow::Stop),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
                return Ok(Flow::Stop);
            }
            Ok(Flow::Next)
        })
    }
}

/// Records per batch a formatter thread takes: its lines are a few hundred
/// KiB, written with one call.
const BATCH: usize = 2048;

/// A batch of records to format, and the buffer to format it into.
type Job = (Vec<Event>, Vec<u8>);

/// Formatter threads, dealt batches round robin and read back in the same
/// order, so the lines come out as the engine gave them. At most two
/// batches wait per thread: memory stays bounded however far the engine
/// runs ahead.
struct Formatters {
    jobs: Vec<std::sync::mpsc::SyncSender<Job>>,
    done: Vec<std::sync::mpsc::Receiver<Job>>,
    batch: Vec<Event>,
    /// Emptied batches and buffers, to be filled again.
    spare: Vec<Job>,
    sent: usize,
    written: usize,
}

impl Formatters {
    fn start<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, threads: usize) -> Formatters {
        let (mut jobs, mut done) = (Vec::with_capacity(threads), Vec::with_capacity(threads));
        for _ in 0..threads {
            let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(2);
            let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Job>(2);
            scope.spawn(move || {
                for (mut events, mut bytes) in job_rx {
                    for e in events.drain(..) {
                        // Into memory: nothing to fail.
                        let _ = write_event(&mut bytes, &e);
                    }
                    if done_tx.send((events, bytes)).is_err() {
                        return;
                    }
                }
            });
            jobs.push(job_tx);
            done.push(done_rx);
        }
        Formatters { jobs, done, batch: Vec::with_capacity(BATCH), spare: Vec::new(), sent: 0, written: 0 }
    }

    fn push(&mut self, e: Event, out: &mut impl Write) -> io::Result<()> {
        self.batch.push(e);
        if self.batch.len() < BATCH {
            return Ok(());
        }
        self.send(out)
    }

    fn send(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.sent - self.written == 2 * self.jobs.len() {
            self.write_one(out)?;
        }
        let (events, bytes) = self.spare.pop().unwrap_or_else(|| (Vec::with_capacity(BATCH), Vec::new()));
        let batch = std::mem::replace(&mut self.batch, events);
        self.jobs[self.sent % self.jobs.len()]
            .send((batch, bytes))
            .map_err(|_| io::Error::other("a formatter thread stopped"))?;
        self.sent += 1;
        Ok(())
    }

    /// Writes the oldest batch's lines.
    fn write_one(&mut self, out: &mut impl Write) -> io::Result<()> {
        let (events, mut bytes) = self.done[self.written % self.done.len()]
            .recv()
            .map_err(|_| io::Error::other("a formatter thread stopped"))?;
        self.written += 1;
        let wrote = out.write_all(&bytes);
        bytes.clear();
        self.spare.push((events, bytes));
        wrote
    }

    /// The last batch, then every line still being formatted; the threads end.
    fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.batch.is_empty() {
            self.send(out)?;
        }
        while self.written < self.sent {
            self.write_one(out)?;
        }
        Ok(())
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

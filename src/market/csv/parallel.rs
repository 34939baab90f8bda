//! One large file read by every core: a reader thread cuts the rows into
//! chunks at line feeds, workers parse the chunks, and the rows come back
//! in the file's order (round robin: chunk k is worker k mod n's, and is
//! taken from it in turn). What needs the row before it (a time that must
//! be after the last one) is the consumer's, in `CsvCandles`.
//!
//! Memory stays bounded: each worker holds at most two chunks waiting and
//! two parsed. A chunk with a quote in it ends the fast reading: from that
//! line on, the bytes and the file go to the csv crate's reader.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::blocks::{Blocks, Next};
use super::{BadRow, Columns, parse_fields};
use crate::types::{Candle, Instrument, Timeframe};

/// Bytes a chunk is cut at (the next line feed after): big enough that the
/// hand-offs cost nothing, small enough that all cores start at once.
pub(super) const CHUNK: usize = 256 << 10;

enum Job {
    Rows(Vec<u8>),
    /// The line with the first quote, and everything after it.
    Quoted(Vec<u8>, Box<dyn Read + Send>),
    Failed(std::io::Error),
}

pub(super) enum Chunk {
    Rows(Rows),
    Quoted(Vec<u8>, Box<dyn Read + Send>),
    Failed(std::io::Error),
}

/// A chunk parsed: its good candles, and its bad rows with the index of the
/// candle they came before. Lines are the chunk's own, from 1.
pub(super) struct Rows {
    pub candles: Vec<Candle>,
    /// Each candle's line.
    pub lines_of: Vec<u32>,
    pub bad: Vec<(usize, BadRow)>,
    /// Non-empty rows, and the line feeds and bytes of the chunk.
    pub rows: u64,
    pub lines: u64,
    pub bytes: u64,
}

/// What the workers need of the file.
#[derive(Clone)]
pub(super) struct Shape {
    pub path: Arc<str>,
    pub cols: Columns,
    pub instrument: Instrument,
    pub timeframe: Timeframe,
}

pub(super) struct Parallel {
    results: Vec<Receiver<Chunk>>,
    /// Parsed chunks' vectors on their way back to the worker that filled
    /// them: fresh memory for every chunk cost more in page faults than
    /// the parsing (a quarter of a replay's time here).
    spent: Vec<SyncSender<Rows>>,
    next: usize,
}

impl Parallel {
    /// Starts the reader and `workers` parsers on `src` (the file after its header).
    pub(super) fn start(src: Box<dyn Read + Send>, shape: Shape, workers: usize, chunk: usize) -> Parallel {
        let workers = workers.max(1);
        let mut jobs = Vec::with_capacity(workers);
        let mut results = Vec::with_capacity(workers);
        let mut spent = Vec::with_capacity(workers);
        // Each worker's chunk buffers go back to the reader.
        let (buf_tx, buf_rx) = sync_channel::<Vec<u8>>(4 * workers + 4);
        for _ in 0..workers {
            let (job_tx, job_rx) = sync_channel::<Job>(2);
            let (result_tx, result_rx) = sync_channel::<Chunk>(2);
            let (spent_tx, spent_rx) = sync_channel::<Rows>(4);
            let shape = shape.clone();
            let buf_tx = buf_tx.clone();
            std::thread::spawn(move || work(job_rx, result_tx, spent_rx, buf_tx, &shape));
            jobs.push(job_tx);
            results.push(result_rx);
            spent.push(spent_tx);
        }
        std::thread::spawn(move || cut(src, &jobs, buf_rx, chunk.max(1)));
        Parallel { results, spent, next: 0 }
    }

    /// A chunk's rows, read: their vectors go back to be filled again.
    pub(super) fn give_back(&mut self, rows: Rows) {
        let from = (self.next + self.results.len() - 1) % self.results.len();
        let _ = self.spent[from].try_send(rows);
    }

    /// The next chunk in the file's order; None after the last.
    pub(super) fn next_chunk(&mut self) -> Option<Chunk> {
        let chunk = self.results[self.next].recv().ok()?;
        self.next = (self.next + 1) % self.results.len();
        Some(chunk)
    }
}

/// The reader: chunks of whole lines, dealt round robin. Ends when the
/// file does, or when the consumer has gone (a send fails).
fn cut(mut src: Box<dyn Read + Send>, jobs: &[SyncSender<Job>], spare: Receiver<Vec<u8>>, chunk: usize) {
    let mut carry = Vec::new();
    let mut k = 0usize;
    let mut send = |job: Job| {
        let ok = jobs[k % jobs.len()].send(job).is_ok();
        k += 1;
        ok
    };
    loop {
        let mut buf = match spare.try_recv() {
            Ok(mut b) => {
                b.clear();
                b.extend_from_slice(&carry);
                carry.clear();
                b
            }
            Err(_) => std::mem::take(&mut carry),
        };
        buf.reserve(chunk);
        let want = buf.len() + chunk;
        let mut eof = false;
        while buf.len() < want {
            match (&mut src).take((want - buf.len()) as u64).read_to_end(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = send(Job::Failed(e));
                    return;
                }
            }
        }
        if let Some(q) = memchr::memchr(b'"', &buf) {
            let cut = memchr::memrchr(b'\n', &buf[..q]).map_or(0, |p| p + 1);
            let tail = buf.split_off(cut);
            if !buf.is_empty() && !send(Job::Rows(buf)) {
                return;
            }
            let _ = send(Job::Quoted(tail, src));
            return;
        }
        if eof {
            if !buf.is_empty() {
                let _ = send(Job::Rows(buf));
            }
            return;
        }
        // A line longer than a chunk: read on until it ends.
        let Some(end) = memchr::memrchr(b'\n', &buf) else {
            carry = buf;
            continue;
        };
        carry = buf.split_off(end + 1);
        if !send(Job::Rows(buf)) {
            return;
        }
    }
}

fn work(
    jobs: Receiver<Job>,
    results: SyncSender<Chunk>,
    spent: Receiver<Rows>,
    spare: SyncSender<Vec<u8>>,
    shape: &Shape,
) {
    for job in jobs {
        let chunk = match job {
            Job::Rows(bytes) => {
                let (rows, buf) = parse(bytes, shape, spent.try_recv().ok());
                let _ = spare.try_send(buf);
                Chunk::Rows(rows)
            }
            Job::Quoted(bytes, rest) => Chunk::Quoted(bytes, rest),
            Job::Failed(e) => Chunk::Failed(e),
        };
        if results.send(chunk).is_err() {
            return;
        }
    }
}

/// Parses a chunk into `reuse`'s vectors (or new ones); the rows, and the
/// chunk's buffer for the next.
fn parse(bytes: Vec<u8>, shape: &Shape, reuse: Option<Rows>) -> (Rows, Vec<u8>) {
    let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
    let len = bytes.len() as u64;
    let (mut candles, mut lines_of, mut bad) = match reuse {
        Some(r) => (r.candles, r.lines_of, r.bad),
        // About one candle per 60 bytes in the usual shape.
        None => (Vec::with_capacity(bytes.len() / 48), Vec::with_capacity(bytes.len() / 48), Vec::new()),
    };
    candles.clear();
    lines_of.clear();
    bad.clear();
    let mut rows = 0;
    let mut blocks = Blocks::from_bytes(bytes, 1);
    let mut days = super::DayCache::default();
    // From bytes in memory there is nothing to fail and no quote (cut before).
    while let Ok(Next::Line(line)) = blocks.next_line() {
        if (0..blocks.field_count()).all(|i| blocks.field(i).is_none_or(<[u8]>::is_empty)) {
            continue;
        }
        rows += 1;
        let parsed = parse_fields(
            shape.cols,
            shape.instrument,
            shape.timeframe,
            &mut days,
            |i| blocks.field(i),
            |i| blocks.tail(i),
        )
        .and_then(|c| c.check_prices().map(|()| c).map_err(|e| e.to_string()));
        match parsed {
            Ok(c) => {
                candles.push(c);
                // A chunk is a few MiB: its lines fit.
                lines_of.push(line as u32);
            }
            Err(message) => {
                let time = super::row_time(shape.cols, |i| blocks.field(i));
                bad.push((candles.len(), BadRow { path: shape.path.to_string(), line, message, time }));
            }
        }
    }
    (Rows { candles, lines_of, bad, rows, lines, bytes: len }, blocks.into_buf())
}

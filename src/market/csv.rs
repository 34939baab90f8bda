//! Candles from CSV history: one file, or a directory of `INSTRUMENT.csv` files.
//!
//! Columns are found by name (any case): open/high/low/close, optional volume,
//! time in `time`/`date`/`datetime`/`timestamp`/`gmt time` or an unnamed first
//! column (or separate `date` + `time` columns). Times are read as UTC in RFC
//! 3339, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD`, Dukascopy's
//! `DD.MM.YYYY HH:MM:SS[.fff]`, or unix seconds. A bad row is reported with its
//! line number and skipped; it never stops the reader.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use csv::ByteRecord;

mod blocks;
mod parallel;
use blocks::{Blocks, Next};
use parallel::{Chunk, Parallel};

use crate::time::Ts;
use crate::types::{BadCandle, Candle, Instrument, Timeframe};

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Header { path: String, message: String },
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("{path}: no *.csv files in this directory")]
    EmptyDir { path: String },
    #[error("{path}: the file name does not start with an instrument (e.g. EUR_USD.csv): {fix}")]
    NoInstrument { path: String, fix: &'static str },
}

/// A row that was skipped, with where and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub path: String,
    pub line: u64,
    pub message: String,
    /// The row's time, when that much of it could be read.
    pub time: Option<Ts>,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {} (row skipped)", self.path, self.line, self.message)
    }
}

#[derive(Clone, Copy, Debug)]
enum TimeCols {
    One(usize),
    DateAndTime(usize, usize),
}

#[derive(Clone, Copy, Debug)]
struct Columns {
    time: TimeCols,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
}

fn find_columns(header: &ByteRecord, path: &str) -> Result<Columns, CsvError> {
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let find = |want: &[&str]| names.iter().position(|n| want.contains(&n.as_str()));
    let need = |name: &str| {
        find(&[name]).ok_or_else(|| CsvError::Header {
            path: path.to_string(),
            message: format!("no '{name}' column in the header (found: {})", names.join(", ")),
        })
    };
    let time = match (find(&["date"]), find(&["time"])) {
        (Some(d), Some(t)) => TimeCols::DateAndTime(d, t),
        _ => match find(&["time", "date", "datetime", "timestamp", "gmt time", "local time", "time (utc)"]) {
            Some(c) => TimeCols::One(c),
            None if names.first().is_some_and(|n| n.is_empty()) => TimeCols::One(0),
            None => {
                return Err(CsvError::Header {
                    path: path.to_string(),
                    message: format!(
                        "no time column: name it time, date, datetime, timestamp or gmt time, or leave the first column unnamed (found: {})",
                        names.join(", ")
                    ),
                });
            }
        },
    };
    Ok(Columns {
        time,
        open: need("open")?,
        high: need("high")?,
        low: need("low")?,
        close: need("close")?,
        volume: find(&["volume", "vol", "tick volume", "tickvol"]),
    })
}

fn digits<const N: usize>(b: &[u8]) -> Option<u32> {
    if b.len() != N {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

/// What [`parse_time`] reads, for the message when it cannot.
const TIME_FORMATS: &str =
    "expected e.g. 2024-01-02T08:00:00Z, 2024-01-02 08:00:00, 02.01.2024 08:00:00.000 or Unix seconds";

/// Parses the time formats of the module docs, as UTC. Fast paths cover the
/// fixed-width formats; anything with an offset or fraction goes to chrono.
pub fn parse_time(s: &[u8]) -> Option<Ts> {
    let s = s.trim_ascii();
    let n = s.len();
    if n >= 10 && s[4] == b'-' && s[7] == b'-' {
        let (y, mo, d) = (digits::<4>(&s[0..4])?, digits::<2>(&s[5..7])?, digits::<2>(&s[8..10])?);
        if n == 10 {
            return Ts::from_ymd_hms(i64::from(y), mo, d, 0, 0, 0);
        }
        let sep = s[10];
        if (n == 19 || (n == 20 && s[19] == b'Z')) && (sep == b' ' || sep == b'T') && s[13] == b':' && s[16] == b':' {
            let (h, mi, se) = (digits::<2>(&s[11..13])?, digits::<2>(&s[14..16])?, digits::<2>(&s[17..19])?);
            return Ts::from_ymd_hms(i64::from(y), mo, d, h, mi, se);
        }
        return Ts::parse_rfc3339(std::str::from_utf8(s).ok()?);
    }
    if n >= 19 && s[2] == b'.' && s[5] == b'.' && s[10] == b' ' && s[13] == b':' && s[16] == b':' {
        let (d, mo, y) = (digits::<2>(&s[0..2])?, digits::<2>(&s[3..5])?, digits::<4>(&s[6..10])?);
        let (h, mi, se) = (digits::<2>(&s[11..13])?, digits::<2>(&s[14..16])?, digits::<2>(&s[17..19])?);
        if n > 19 && !(s[19] == b'.' && s[20..].iter().all(u8::is_ascii_digit)) {
            return None;
        }
        return Ts::from_ymd_hms(i64::from(y), mo, d, h, mi, se);
    }
    if n > 0 && n <= 12 && s.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(s).ok()?.parse::<i64>().ok().map(Ts);
    }
    None
}

/// The day of the last time parsed: rows of hourly candles share their
/// date 24 at a time, and the calendar arithmetic was a tenth of a replay.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DayCache {
    /// The ten bytes of the date, as one number (see `date_key`); 0, which
    /// no date's bytes make, before the first.
    date: u128,
    /// Days since the epoch of `date`.
    days: i64,
}

/// A row's ten date bytes as one number: compared in two loads, not a call
/// to memcmp.
#[inline(always)]
fn date_key(s: &[u8; 10]) -> u128 {
    let (low, high) = s.split_at(8);
    let low = u64::from_le_bytes(low.try_into().unwrap_or_default());
    let high = u16::from_le_bytes(high.try_into().unwrap_or_default());
    u128::from(low) | (u128::from(high) << 64)
}

/// `HH:MM:SS` (eight bytes, the first lowest) as seconds of the day, or
/// None if it is not two digits, a colon, two digits, a colon, two digits
/// within a day (a leap second allowed).
#[inline(always)]
fn clock(w: u64) -> Option<i64> {
    const COLONS: u64 = 0x0000_3a00_003a_0000;
    const COLON_BYTES: u64 = 0x0000_ff00_00ff_0000;
    if w & COLON_BYTES != COLONS {
        return None;
    }
    // The colons as '0's, then every byte must be a digit.
    let v = (w & !COLON_BYTES) | 0x0000_3000_0030_0000;
    let below = v.wrapping_sub(0x3030_3030_3030_3030);
    let above = v.wrapping_add(0x4646_4646_4646_4646);
    if (below | above) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    let byte = |k: u32| ((below >> (8 * k)) & 0xff) as i64;
    let (h, mi, se) = (byte(0) * 10 + byte(1), byte(3) * 10 + byte(4), byte(6) * 10 + byte(7));
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(h * 3600 + mi * 60 + se)
}

/// [`parse_time`] with the day of `cache` for a row of the same date in the
/// fixed-width formats (`YYYY-MM-DD HH:MM:SS[Z]`, `DD.MM.YYYY HH:MM:SS[.fff]`);
/// the same result for every input.
#[inline]
pub(crate) fn parse_time_cached(s: &[u8], cache: &mut DayCache) -> Option<Ts> {
    let s = s.trim_ascii();
    let n = s.len();
    let iso = n >= 19 && s[4] == b'-' && s[7] == b'-' && (s[10] == b' ' || s[10] == b'T');
    let dukascopy = n >= 19 && s[2] == b'.' && s[5] == b'.' && s[10] == b' ';
    let fixed = (iso && (n == 19 || (n == 20 && s[19] == b'Z')))
        || (dukascopy && (n == 19 || (s[19] == b'.' && s[20..].iter().all(u8::is_ascii_digit))));
    let (Some(date), Some(time)) = (s.first_chunk::<10>(), s.get(11..19)) else { return parse_time(s) };
    let secs = match time.try_into() {
        Ok(t) if fixed => clock(u64::from_le_bytes(t)),
        _ => None,
    };
    let Some(secs) = secs else { return parse_time(s) };
    let key = date_key(date);
    if key == cache.date {
        return Some(Ts(cache.days * 86_400 + secs));
    }
    let t = parse_time(s)?;
    cache.date = key;
    cache.days = (t.0 - secs).div_euclid(86_400);
    Some(t)
}

fn parse_f64(field: &[u8]) -> Option<f64> {
    blocks::decimal(field).or_else(|| std::str::from_utf8(field).ok()?.trim().parse::<f64>().ok())
}

/// The instrument a file name starts with: `EUR_USD.csv`, `EUR_USD_H1_2017_ask.csv`, `EURUSD.csv`.
pub fn instrument_from_path(path: &Path) -> Option<Instrument> {
    let stem = path.file_stem()?.to_str()?;
    let b = stem.as_bytes();
    let is_ccy = |s: &[u8]| s.len() == 3 && s.iter().all(u8::is_ascii_uppercase);
    if b.len() >= 7 && is_ccy(&b[0..3]) && b[3] == b'_' && is_ccy(&b[4..7]) {
        return Instrument::new(&stem[..7]).ok();
    }
    if b.len() >= 6 && is_ccy(&b[0..3]) && is_ccy(&b[3..6]) && b.get(6).is_none_or(|c| !c.is_ascii_alphabetic()) {
        return Instrument::new(&format!("{}_{}", &stem[0..3], &stem[3..6])).ok();
    }
    None
}

/// A granularity token in the file name, e.g. `_H1_` in `EUR_USD_H1_2017.csv`.
pub fn timeframe_from_path(path: &Path) -> Option<Timeframe> {
    let stem = path.file_stem()?.to_str()?;
    stem.split(['_', '-', '.', ' ']).find_map(|tok| tok.parse::<Timeframe>().ok())
}

/// The file's bytes on their way to the CSV parser, noting where its empty
/// lines are. The parser skips an empty line while it looks for the next
/// record, after it has noted where that record starts, so its line number
/// for the record is short by one per empty line before it; these offsets
/// put them back (see `CsvCandles::line_of`).
struct Lines<R> {
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// The last byte read was a line feed (or nothing was read yet).
    after_newline: bool,
    /// Offsets of the line feeds of empty lines, not yet counted.
    blank: VecDeque<u64>,
}

impl<R: Read> Lines<R> {
    fn new(inner: R) -> Self {
        Lines { inner, offset: 0, after_newline: true, blank: VecDeque::new() }
    }

    /// The empty lines between two byte offsets of the parser, forgetting
    /// those before `end`.
    fn blank_between(&mut self, start: u64, end: u64) -> u64 {
        let mut n = 0;
        while let Some(&at) = self.blank.front().filter(|&&at| at < end) {
            n += u64::from(at >= start);
            self.blank.pop_front();
        }
        n
    }
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        // Only empty lines are looked for (two line feeds in a row), not
        // every line: this is on replay's hot path, and files rarely have any.
        if self.after_newline && chunk.first() == Some(&b'\n') {
            self.blank.push_back(self.offset);
        }
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&chunk[from..], b"\n\n") {
            // The second line feed ends the empty line; it may start the next pair.
            self.blank.push_back(self.offset + (from + i + 1) as u64);
            from += i + 1;
        }
        if let Some(&last) = chunk.last() {
            self.after_newline = last == b'\n';
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Where the rows come from: the fast reader while the file has no quotes,
/// the csv crate's from the first quote on (or for a reader that is not a
/// file).
enum Reader {
    Fast(Blocks),
    Parallel(Box<InParallel>),
    Csv {
        rdr: Box<csv::Reader<Lines<Box<dyn Read + Send>>>>,
        /// Lines and bytes of the file before the csv reader's first byte.
        lines_before: u64,
        bytes_before: u64,
    },
}

/// A large file's rows, parsed by several threads.
struct InParallel {
    chunks: Parallel,
    current: Option<parallel::Rows>,
    /// The next candle and bad row of `current`.
    candle: usize,
    bad: usize,
    /// Lines of the file before `current`, and its bytes through `current`.
    lines_before: u64,
    bytes: u64,
}

/// Files from this size on are parsed by every core.
pub const PARALLEL_FROM: u64 = 16 << 20;

/// Reads one CSV file as candles of one series.
pub struct CsvCandles {
    path: String,
    reader: Reader,
    cols: Columns,
    record: ByteRecord,
    instrument: Instrument,
    timeframe: Timeframe,
    last: Option<Ts>,
    days: DayCache,
    done: bool,
    pub rows: u64,
    pub bad_rows: u64,
}

/// One item per data row: a candle, or the bad row that was skipped.
pub type Row = Result<Candle, BadRow>;

fn csv_reader(reader: Box<dyn Read + Send>, has_headers: bool) -> csv::Reader<Lines<Box<dyn Read + Send>>> {
    // Records end at a line feed only: with the default (CR, LF or CRLF), a
    // CRLF file's records end at the CR, and the parser counts the LF as the
    // start of the next record, after noting its line: one line short. The
    // CR is then a field's trailing space, which `trim` removes.
    csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .flexible(true)
        .trim(csv::Trim::All)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(Lines::new(reader))
}

impl CsvCandles {
    /// A file, read by the fast reader after its header; by every core
    /// when it is large ([`PARALLEL_FROM`]).
    pub fn open(path: &Path, instrument: Instrument, timeframe: Timeframe) -> Result<Self, CsvError> {
        let large = std::fs::metadata(path).is_ok_and(|m| m.len() >= PARALLEL_FROM);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::open_with(path, instrument, timeframe, if large { cores } else { 1 })
    }

    /// A file, read after its header by the fast reader (`threads` 1) or by
    /// that many parsing threads.
    pub fn open_with(
        path: &Path,
        instrument: Instrument,
        timeframe: Timeframe,
        threads: usize,
    ) -> Result<Self, CsvError> {
        Self::open_chunked(path, instrument, timeframe, threads, parallel::CHUNK)
    }

    /// As [`CsvCandles::open_with`], cutting the file into chunks of about
    /// `chunk` bytes for the threads (tests cut small files small).
    #[doc(hidden)]
    pub fn open_chunked(
        path: &Path,
        instrument: Instrument,
        timeframe: Timeframe,
        threads: usize,
        chunk: usize,
    ) -> Result<Self, CsvError> {
        let shown = path.display().to_string();
        let io = |source| CsvError::Io { path: shown.clone(), source };
        let file = File::open(path).map_err(io)?;
        let mut candles = Self::from_reader(
            Box::new(std::io::BufReader::with_capacity(1 << 12, file)),
            shown.clone(),
            instrument,
            timeframe,
        )?;
        // The header is the csv crate's (its rules for a first line are
        // the reference); the rows after it are read again, from where it ended.
        let header_end = candles.byte_position();
        let mut file = File::open(path).map_err(io)?;
        let mut head = vec![0; usize::try_from(header_end).unwrap_or(usize::MAX)];
        file.read_exact(&mut head).map_err(io)?;
        let line = 1 + memchr::memchr_iter(b'\n', &head).count() as u64;
        candles.reader = match threads {
            0 | 1 => Reader::Fast(Blocks::new(Box::new(file), header_end, line)),
            n => {
                let shape =
                    parallel::Shape { path: candles.path.as_str().into(), cols: candles.cols, instrument, timeframe };
                Reader::Parallel(Box::new(InParallel {
                    chunks: Parallel::start(Box::new(file), shape, n, chunk),
                    current: None,
                    candle: 0,
                    bad: 0,
                    lines_before: line - 1,
                    bytes: header_end,
                }))
            }
        };
        Ok(candles)
    }

    /// Any reader, read by the csv crate.
    pub fn from_reader(
        reader: Box<dyn Read + Send>,
        path: String,
        instrument: Instrument,
        timeframe: Timeframe,
    ) -> Result<Self, CsvError> {
        let mut rdr = csv_reader(reader, true);
        let header = rdr.byte_headers().map_err(|source| CsvError::Csv { path: path.clone(), source })?.clone();
        if header.iter().all(<[u8]>::is_empty) && header.len() <= 1 {
            // Nothing but empty lines (or nothing at all) is an empty file;
            // an empty first line before data is a misplaced header.
            let only_blank = rdr.byte_records().all(|r| r.is_ok_and(|r| r.iter().all(<[u8]>::is_empty)));
            let message = if only_blank {
                "the file is empty: expected a header row (e.g. time,open,high,low,close) and a candle a row"
            } else {
                "the first line is empty: the header row (e.g. time,open,high,low,close) must be the first line"
            };
            return Err(CsvError::Header { path, message: message.into() });
        }
        let cols = find_columns(&header, &path)?;
        Ok(CsvCandles {
            path,
            reader: Reader::Csv { rdr: Box::new(rdr), lines_before: 0, bytes_before: 0 },
            cols,
            record: ByteRecord::new(),
            instrument,
            timeframe,
            last: None,
            days: DayCache::default(),
            done: false,
            rows: 0,
            bad_rows: 0,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Bytes consumed so far, for progress bars.
    pub fn byte_position(&self) -> u64 {
        match &self.reader {
            Reader::Fast(b) => b.position(),
            Reader::Parallel(p) => p.bytes,
            Reader::Csv { rdr, bytes_before, .. } => bytes_before + rdr.position().byte(),
        }
    }

    /// The time of the last good candle, if there was one.
    pub fn last_time(&self) -> Option<Ts> {
        self.last
    }

    /// The next record: its line, with its fields in `self.record` (the
    /// csv crate) or the fast reader; None at the end; a broken record
    /// (the csv crate's error) as a bad row.
    fn next_record(&mut self) -> Option<Result<(u64, bool), BadRow>> {
        loop {
            match &mut self.reader {
                Reader::Parallel(_) => unreachable!("rows of a parallel reader come from next_parallel"),
                Reader::Fast(blocks) => match blocks.next_line() {
                    Ok(Next::Line(line)) => return Some(Ok((line, true))),
                    Ok(Next::End) => return None,
                    Ok(Next::Quoted(line, bytes)) => {
                        let bytes_before = blocks.position();
                        let Reader::Fast(blocks) = std::mem::replace(
                            &mut self.reader,
                            Reader::Fast(Blocks::new(Box::new(std::io::empty()), 0, 0)),
                        ) else {
                            unreachable!("matched above")
                        };
                        let (_, rest) = blocks.into_rest();
                        let src: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes).chain(rest));
                        self.reader =
                            Reader::Csv { rdr: Box::new(csv_reader(src, false)), lines_before: line - 1, bytes_before };
                    }
                    Err(e) => {
                        self.done = true;
                        let line = blocks.line();
                        return Some(Err(BadRow { path: self.path.clone(), line, message: e.to_string(), time: None }));
                    }
                },
                Reader::Csv { rdr, lines_before, .. } => {
                    let lines_before = *lines_before;
                    match rdr.read_byte_record(&mut self.record) {
                        Ok(false) => return None,
                        Ok(true) => {
                            let line = self.record.position().map_or(0, |p| {
                                let (start, end) = (p.byte(), rdr.position().byte());
                                p.line() + rdr.get_mut().blank_between(start, end)
                            });
                            // The empty lines it passed are in its line count now.
                            if !rdr.get_ref().blank.is_empty() {
                                let end = rdr.position().byte();
                                rdr.get_mut().blank_between(end, end);
                            }
                            return Some(Ok((line + lines_before, false)));
                        }
                        Err(e) => {
                            // A broken row (e.g. bad UTF-8 or quoting): skip it, say where.
                            let line = match e.position().cloned() {
                                Some(p) => {
                                    let end = rdr.position().byte();
                                    p.line() + rdr.get_mut().blank_between(p.byte(), end) + lines_before
                                }
                                None => 0,
                            };
                            // A read error ends the file: report it once, then stop.
                            self.done = matches!(e.kind(), csv::ErrorKind::Io(_));
                            return Some(Err(BadRow {
                                path: self.path.clone(),
                                line,
                                message: e.to_string(),
                                time: None,
                            }));
                        }
                    }
                }
            }
        }
    }

    fn is_blank(&self, fast: bool) -> bool {
        match (&self.reader, fast) {
            (Reader::Fast(b), true) => (0..b.field_count()).all(|i| b.field(i).is_none_or(<[u8]>::is_empty)),
            _ => self.record.iter().all(<[u8]>::is_empty),
        }
    }

    /// The current record's time, if it can be read (for a bad row's report).
    fn row_time(&self, fast: bool) -> Option<Ts> {
        match (&self.reader, fast) {
            (Reader::Fast(b), true) => row_time(self.cols, |i| b.field(i)),
            _ => row_time(self.cols, |i| self.record.get(i)),
        }
    }

    #[inline]
    fn parse_record(&mut self, fast: bool) -> Result<Candle, String> {
        let days = &mut self.days;
        match (&self.reader, fast) {
            (Reader::Fast(b), true) => {
                parse_fields(self.cols, self.instrument, self.timeframe, days, |i| b.field(i), |i| b.tail(i))
            }
            _ => parse_fields(self.cols, self.instrument, self.timeframe, days, |i| self.record.get(i), |_| None),
        }
    }
}

impl CsvCandles {
    /// The next row of a parallel reader: the workers' rows in order, with
    /// the check that needs the row before (time after the last).
    fn next_parallel(&mut self) -> Option<Row> {
        loop {
            let Reader::Parallel(p) = &mut self.reader else { return self.next() };
            if let Some(rows) = &mut p.current {
                if let Some((at, _)) = rows.bad.get(p.bad)
                    && *at == p.candle
                {
                    let mut bad = rows.bad[p.bad].1.clone();
                    p.bad += 1;
                    bad.line += p.lines_before;
                    self.bad_rows += 1;
                    return Some(Err(bad));
                }
                if let Some(c) = rows.candles.get(p.candle) {
                    let line = u64::from(rows.lines_of[p.candle]) + p.lines_before;
                    p.candle += 1;
                    if let Some(last) = self.last
                        && c.time <= last
                    {
                        self.bad_rows += 1;
                        let message = BadCandle::NotAfter { time: c.time, last }.to_string();
                        return Some(Err(BadRow { path: self.path.clone(), line, message, time: Some(c.time) }));
                    }
                    self.last = Some(c.time);
                    return Some(Ok(*c));
                }
                p.lines_before += rows.lines;
                if let Some(rows) = p.current.take() {
                    p.chunks.give_back(rows);
                }
            }
            match p.chunks.next_chunk() {
                Some(Chunk::Rows(rows)) => {
                    self.rows += rows.rows;
                    p.bytes += rows.bytes;
                    p.candle = 0;
                    p.bad = 0;
                    p.current = Some(rows);
                }
                Some(Chunk::Quoted(bytes, rest)) => {
                    let src: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes).chain(rest));
                    let (lines_before, bytes_before) = (p.lines_before, p.bytes);
                    self.reader = Reader::Csv { rdr: Box::new(csv_reader(src, false)), lines_before, bytes_before };
                    return self.next();
                }
                Some(Chunk::Failed(e)) => {
                    self.done = true;
                    self.bad_rows += 1;
                    let line = p.lines_before + 1;
                    return Some(Err(BadRow { path: self.path.clone(), line, message: e.to_string(), time: None }));
                }
                None => return None,
            }
        }
    }
}

fn row_time<'a>(cols: Columns, field: impl Fn(usize) -> Option<&'a [u8]>) -> Option<Ts> {
    match cols.time {
        TimeCols::One(c) => parse_time(field(c)?),
        TimeCols::DateAndTime(d, t) => parse_time(&[field(d)?, b" ", field(t)?].concat()),
    }
}

/// A row's fields as a candle (generic over where the fields are, so each
/// reader gets its own inlined copy).
#[inline(always)]
fn parse_fields<'a>(
    cols: Columns,
    instrument: Instrument,
    timeframe: Timeframe,
    days: &mut DayCache,
    get: impl Fn(usize) -> Option<&'a [u8]>,
    tail: impl Fn(usize) -> Option<&'a [u8]>,
) -> Result<Candle, String> {
    let field = |i: usize, name: &str| get(i).ok_or_else(|| format!("the row has no '{name}' field"));
    let time = match cols.time {
        TimeCols::One(c) => {
            let raw = field(c, "time")?;
            parse_time_cached(raw, days)
                .ok_or_else(|| format!("'{}' is not a time ({TIME_FORMATS})", String::from_utf8_lossy(raw)))?
        }
        TimeCols::DateAndTime(d, t) => {
            let joined = [field(d, "date")?, b" ", field(t, "time")?].concat();
            parse_time(&joined)
                .ok_or_else(|| format!("'{}' is not a time ({TIME_FORMATS})", String::from_utf8_lossy(&joined)))?
        }
    };
    let num = |i: usize, name: &str| -> Result<f64, String> {
        let raw = field(i, name)?;
        tail(i)
            .and_then(|t| blocks::decimal_wide(raw, t))
            .or_else(|| parse_f64(raw))
            .ok_or_else(|| format!("{name} '{}' is not a number", String::from_utf8_lossy(raw)))
    };
    let volume = match cols.volume {
        Some(v) => num(v, "volume")?,
        None => 0.0,
    };
    Ok(Candle {
        instrument,
        timeframe,
        time,
        open: num(cols.open, "open")?,
        high: num(cols.high, "high")?,
        low: num(cols.low, "low")?,
        close: num(cols.close, "close")?,
        volume,
    })
}

impl Iterator for CsvCandles {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        if self.done {
            return None;
        }
        if let Reader::Parallel(_) = self.reader {
            return self.next_parallel();
        }
        loop {
            let (line, fast) = match self.next_record()? {
                Ok(at) => at,
                Err(bad) => {
                    self.bad_rows += 1;
                    return Some(Err(bad));
                }
            };
            if self.is_blank(fast) {
                continue;
            }
            self.rows += 1;
            let checked = self.parse_record(fast).and_then(|c| {
                c.check_prices().map_err(|e| e.to_string())?;
                match self.last {
                    Some(last) if c.time <= last => Err(BadCandle::NotAfter { time: c.time, last }.to_string()),
                    _ => Ok(c),
                }
            });
            return Some(match checked {
                Ok(c) => {
                    self.last = Some(c.time);
                    Ok(c)
                }
                Err(message) => {
                    self.bad_rows += 1;
                    Err(BadRow { path: self.path.clone(), line, message, time: self.row_time(fast) })
                }
            });
        }
    }
}

/// The most common gap in seconds between the candles of the first rows.
fn usual_gap(path: &Path) -> Option<i64> {
    let instrument = Instrument::new("XXX_YYY").ok()?;
    let rows = CsvCandles::open_with(path, instrument, Timeframe::H1, 1).ok()?;
    let times: Vec<i64> = rows.filter_map(Result::ok).take(200).map(|c| c.time.0).collect();
    let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).collect();
    gaps.sort_unstable();
    let mut best = (0usize, None);
    for chunk in gaps.chunk_by(|a, b| a == b) {
        if chunk.len() > best.0 {
            best = (chunk.len(), Some(chunk[0]));
        }
    }
    best.1
}

/// Infers the timeframe from the most common gap between the first rows.
pub fn infer_timeframe(path: &Path) -> Option<Timeframe> {
    usual_gap(path).and_then(Timeframe::from_seconds)
}

/// When the candles of `input` are mostly spaced otherwise than its
/// timeframe (a `--timeframe`, a name or a default the data contradicts),
/// what to tell the user, without the fix (the caller knows which applies):
/// every indicator period and signal would silently mean something else.
pub fn spacing_contradiction(input: &CsvInput) -> Option<String> {
    let gap = usual_gap(&input.path)?;
    if gap == input.timeframe.seconds() {
        return None;
    }
    let spacing = humantime::format_duration(std::time::Duration::from_secs(gap.unsigned_abs()));
    let known = Timeframe::from_seconds(gap).map(|t| format!(" ({t})")).unwrap_or_default();
    Some(format!(
        "{}: its candles are mostly {spacing}{known} apart, but they are read as {} candles",
        input.path.display(),
        input.timeframe
    ))
}

/// A CSV input resolved to files with their series.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvInput {
    pub path: PathBuf,
    pub instrument: Instrument,
    pub timeframe: Timeframe,
}

/// How a CSV feed's file with no pair in its name gets one.
const FEED_FIX: &str = "rename it, or make its pair the only one in market.instruments";
/// How `replay`'s or `backtest`'s file with no pair in its name gets one.
const HISTORY_FIX: &str = "give its pair with --instrument (e.g. --instrument EUR_USD), or rename it";

/// Resolves a CSV feed's file or directory of `INSTRUMENT.csv` files.
/// `instrument` and `timeframe` are explicit choices; otherwise they come
/// from the file name, then (timeframe only) from the data, then from
/// `fallback`. `fallback`'s instrument is for a single file whose name has
/// none: a choice the user made (the config's only instrument), never a
/// guess among several.
pub fn resolve(
    path: &Path,
    instrument: Option<Instrument>,
    timeframe: Option<Timeframe>,
    fallback: (Option<Instrument>, Timeframe),
) -> Result<Vec<CsvInput>, CsvError> {
    resolve_with(path, instrument, timeframe, fallback, FEED_FIX)
}

/// Resolves `replay`'s and `backtest`'s inputs: a file's pair comes from
/// its name or `--instrument`, never from the config's list.
pub fn resolve_history(
    path: &Path,
    instrument: Option<Instrument>,
    timeframe: Option<Timeframe>,
    default_timeframe: Timeframe,
) -> Result<Vec<CsvInput>, CsvError> {
    resolve_with(path, instrument, timeframe, (None, default_timeframe), HISTORY_FIX)
}

fn resolve_with(
    path: &Path,
    instrument: Option<Instrument>,
    timeframe: Option<Timeframe>,
    fallback: (Option<Instrument>, Timeframe),
    fix: &'static str,
) -> Result<Vec<CsvInput>, CsvError> {
    let shown = path.display().to_string();
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| CsvError::Io { path: shown.clone(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CsvError::EmptyDir { path: shown });
        }
        files
    } else {
        // Opening here turns a missing file into an error that names it.
        File::open(path).map_err(|source| CsvError::Io { path: shown.clone(), source })?;
        vec![path.to_path_buf()]
    };
    let in_dir = path.is_dir();
    files
        .into_iter()
        .map(|f| {
            let instrument = match (instrument, instrument_from_path(&f)) {
                (Some(i), _) if !in_dir => i,
                (_, Some(i)) => i,
                (Some(i), None) => i,
                (None, None) => match fallback.0 {
                    Some(i) if !in_dir => i,
                    // In a directory a name is the only way (a flag or the
                    // config's one pair would be one pair for every file).
                    _ if in_dir && fix == FEED_FIX => {
                        let fix = "rename it: in a directory, each file's name gives its pair";
                        return Err(CsvError::NoInstrument { path: f.display().to_string(), fix });
                    }
                    _ => return Err(CsvError::NoInstrument { path: f.display().to_string(), fix }),
                },
            };
            let timeframe =
                timeframe.or_else(|| timeframe_from_path(&f)).or_else(|| infer_timeframe(&f)).unwrap_or(fallback.1);
            Ok(CsvInput { path: f, instrument, timeframe })
        })
        .collect()
}

/// The config's CSV source checked the way the feed will open it (a
/// `config::Check` for `config check`): the path exists, names a pair, and
/// each file has the columns. A run finds the same when its feed starts.
pub fn config_problems(c: &crate::config::Config) -> Vec<(String, String)> {
    let m = &c.market;
    if m.source != crate::config::SourceKind::Csv || m.csv.path.trim().is_empty() {
        return Vec::new();
    }
    let key = "market.csv.path".to_string();
    let inputs = match CsvFeed::new(c) {
        Ok(feed) => feed.inputs,
        Err(CsvError::Io { path, source }) => {
            let message = format!(
                "cannot read {path}: {source}: name an existing CSV file, or a directory of INSTRUMENT.csv files (a relative path is read from the directory pipwatch runs in)"
            );
            return vec![(key, message)];
        }
        Err(e) => return vec![(key, e.to_string())],
    };
    inputs
        .iter()
        .filter_map(|i| CsvCandles::open_with(&i.path, i.instrument, i.timeframe, 1).err())
        .map(|e| (key.clone(), e.to_string()))
        .collect()
}

/// CSV history as a live feed: files merged by time, already-applied candles
/// skipped, optionally paced.
pub struct CsvFeed {
    inputs: Vec<CsvInput>,
    candle_every: std::time::Duration,
}

impl CsvFeed {
    pub fn new(config: &crate::config::Config) -> Result<Self, CsvError> {
        let m = &config.market;
        // A file named for no pair is the configured pair's only when the
        // config names one: the first of several (the defaults' EUR_USD)
        // would be a guess.
        let only = match m.instruments.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let fallback = (only, m.timeframes.first().copied().unwrap_or(Timeframe::H4));
        let inputs = resolve(Path::new(&m.csv.path), None, None, fallback)?;
        for input in &inputs {
            if let Some(said) = spacing_contradiction(input) {
                tracing::warn!(
                    "{said}: a timeframe token in the file name (e.g. EUR_USD_H1.csv) says which they are, or check the file"
                );
            }
        }
        Ok(CsvFeed { inputs, candle_every: m.csv.candle_every.0 })
    }

    fn run_blocking(self, ctx: super::SourceCtx) -> Result<(), CsvError> {
        use super::MarketEvent;
        use crate::engine::Phase;
        use crate::event::{FeedState, FeedStatus};

        let status = |state, message: String| MarketEvent::Status(FeedStatus::new("csv", state, Some(message)));
        let mut readers = Vec::new();
        let mut bad = Vec::new();
        for input in &self.inputs {
            let mut r = CsvCandles::open_with(&input.path, input.instrument, input.timeframe, 1)?;
            let head = next_good(&mut r, &mut bad);
            readers.push((head, r));
        }
        let _ = ctx.tx.blocking_send(status(FeedState::Live, format!("{} file(s)", readers.len())));
        let mut rejected = Rejections::default();
        if !rejected.send(&ctx, &mut bad) {
            return Ok(());
        }
        let (mut sent, mut skipped) = (0u64, 0u64);
        // NOTE: a k-way merge by time keeps the feed chronological across files.
        while let Some(idx) =
            readers.iter().enumerate().filter_map(|(i, (h, _))| h.map(|c| (c.time, i))).min().map(|(_, i)| i)
        {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            let (head, reader) = &mut readers[idx];
            let Some(candle) = head.take() else { break };
            *head = next_good(reader, &mut bad);
            if !rejected.send(&ctx, &mut bad) {
                return Ok(());
            }
            if ctx.resume.get(&candle.key()).is_some_and(|last| candle.time <= last.time) {
                skipped += 1;
                continue;
            }
            if ctx.tx.blocking_send(MarketEvent::Candle { candle, phase: Phase::Live }).is_err() {
                return Ok(());
            }
            sent += 1;
            if !self.candle_every.is_zero() {
                std::thread::sleep(self.candle_every);
            }
        }
        for (_, r) in &readers {
            if r.rows == r.bad_rows {
                tracing::warn!(file = %r.path(), "no candles read (the file has a header only, or every row was rejected)");
            }
        }
        let bad: u64 = readers.iter().map(|(_, r)| r.bad_rows).sum();
        let message = format!("end of history: {sent} candles sent, {skipped} already applied, {bad} bad rows skipped");
        tracing::info!(sent, skipped, bad_rows = bad, "csv feed finished");
        let _ = ctx.tx.blocking_send(status(FeedState::Finished, message));
        Ok(())
    }
}

/// A bad row on its way to the engine task as a `rejected` event.
struct BadFeedRow {
    key: crate::types::SeriesKey,
    row: BadRow,
}

/// The next good candle of a reader. Bad rows are logged (the first few in
/// full, then a count), skipped, and put in `bad` for their `rejected`
/// events; a row whose time cannot be read takes the time of the good
/// candle before it (or after it, at the start of a file), which is where
/// it sits in the series.
fn next_good(r: &mut CsvCandles, bad: &mut Vec<BadFeedRow>) -> Option<Candle> {
    let key = crate::types::SeriesKey { instrument: r.instrument, timeframe: r.timeframe };
    let before = bad.len();
    let previous = r.last_time();
    let mut next = None;
    for row in r.by_ref() {
        match row {
            Ok(c) => {
                next = Some(c);
                break;
            }
            Err(row) => {
                if bad_rows_logged() {
                    tracing::warn!(file = %row.path, line = row.line, problem = %row.message, "bad CSV row skipped");
                }
                bad.push(BadFeedRow { key, row });
            }
        }
    }
    for b in &mut bad[before..] {
        b.row.time = b.row.time.or(previous).or(next.map(|c| c.time));
    }
    next
}

/// Each series' count of rows rejected so far (a `rejected` record carries
/// the series' running total, as the engine's do).
#[derive(Default)]
struct Rejections {
    counts: std::collections::HashMap<crate::types::SeriesKey, u64>,
}

impl Rejections {
    /// Sends `bad` as `rejected` events, emptying it; false when the engine
    /// has gone. A row at or before where the series resumes was reported
    /// by the run that applied the candles around it, and is not again.
    fn send(&mut self, ctx: &super::SourceCtx, bad: &mut Vec<BadFeedRow>) -> bool {
        for BadFeedRow { key, row } in bad.drain(..) {
            let time = row.time.unwrap_or(Ts(0));
            if ctx.resume.get(&key).is_some_and(|last| time <= last.time) {
                continue;
            }
            let count = self.counts.entry(key).or_default();
            *count += 1;
            let event = crate::event::Rejected {
                instrument: key.instrument,
                timeframe: key.timeframe,
                time,
                // Where the row is, so it can be found and fixed.
                reason: format!("{}:{}: {}", row.path, row.line, row.message),
                count: *count,
            };
            if ctx.tx.blocking_send(super::MarketEvent::Rejected(event)).is_err() {
                return false;
            }
        }
        true
    }
}

fn bad_rows_logged() -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    static LOGGED: AtomicU32 = AtomicU32::new(0);
    let n = LOGGED.fetch_add(1, Ordering::Relaxed);
    if n == 20 {
        tracing::warn!("more bad CSV rows: no longer logged one by one; the feed's final status counts them");
    }
    n < 20
}

impl super::MarketSource for CsvFeed {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn run(self: Box<Self>, ctx: super::SourceCtx) -> super::SourceFuture {
        Box::pin(async move {
            // Reading files is blocking work: keep it off the async workers.
            tokio::task::spawn_blocking(move || self.run_blocking(ctx))
                .await
                .map_err(|e| super::SourceError::Fatal(format!("the CSV reader stopped: {e}")))?
                .map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<String> {
        parse_time(s.as_bytes()).map(|t| t.to_string())
    }

    #[test]
    fn the_day_cache_changes_no_time() {
        let mut cache = DayCache::default();
        let inputs = [
            "2017-01-02 22:00:00",
            "2017-01-02 23:00:00",
            "2017-01-02 23:59:60",
            "2017-01-02 24:00:00",
            "2017-01-02T01:00:00Z",
            "2017-01-02 01:00:0x",
            "2017-01-03 00:00:00",
            "02.01.2017 22:00:00.000",
            "02.01.2017 23:00:00",
            "02.01.2017 23:00:00.x",
            "2017-01-02",
            "1483394400",
            "2017-01-03 00:00:00",
            "2017-01-03T00:00:00+02:00",
            "2017-02-30 00:00:00",
            "2017-02-30 01:00:00",
            "2017-01-03 23:60:00",
            "2017-01-03 23:00:61",
            "2017-01-03 2a:00:00",
            "2017-01-03 23-00:00",
            "2017-01-03 23:00;00",
            "2017-01-03 9:00:00",
            " 2017-01-03 09:00:00 ",
            "2017-01-03 09:00:00Z",
            "2017-01-03 /9:00:00",
        ];
        for round in 0..2 {
            for s in inputs {
                assert_eq!(
                    parse_time_cached(s.as_bytes(), &mut cache),
                    parse_time(s.as_bytes()),
                    "{s} (round {round})"
                );
            }
        }
    }

    #[test]
    fn time_formats() {
        let want = Some("2017-01-02T22:00:00Z".to_string());
        assert_eq!(ts("2017-01-02T22:00:00Z"), want);
        assert_eq!(ts("2017-01-02 22:00:00"), want);
        assert_eq!(ts("2017-01-02T22:00:00.000000000Z"), want);
        assert_eq!(ts("2017-01-03T00:00:00+02:00"), want);
        assert_eq!(ts("02.01.2017 22:00:00.000"), want);
        assert_eq!(ts("02.01.2017 22:00:00"), want);
        assert_eq!(ts("1483394400"), want);
        assert_eq!(ts("2017-01-02"), Some("2017-01-02T00:00:00Z".to_string()));
        for bad in
            ["", "yesterday", "2017-13-01", "32.01.2017 00:00:00", "2017-01-02 25:00:00", "02.01.2017 22:00:00.x"]
        {
            assert_eq!(ts(bad), None, "{bad}");
        }
    }

    fn rows(text: &str) -> Vec<Row> {
        let i = Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}"));
        CsvCandles::from_reader(Box::new(std::io::Cursor::new(text.to_string())), "t.csv".into(), i, Timeframe::H1)
            .unwrap_or_else(|e| panic!("{e}"))
            .collect()
    }

    #[test]
    fn bad_rows_are_named_by_line_and_skipped() {
        let got = rows(
            "Gmt time,Open,High,Low,Close,Volume\n\
             01.01.2017 22:00:00.000,1.05,1.06,1.04,1.05,10\n\
             01.01.2017 23:00:00.000,1.05,1.04,1.06,1.05,10\n\
             02.01.2017 00:00:00.000,abc,1.06,1.04,1.05,10\n\
             01.01.2017 21:00:00.000,1.05,1.06,1.04,1.05,10\n\
             not a time,1.05,1.06,1.04,1.05,10\n\
             02.01.2017 01:00:00.000,1.05,1.06,1.04,1.05,10\n",
        );
        let errs: Vec<String> = got.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
        assert_eq!(
            errs,
            vec![
                "t.csv:3: high 1.04 is below low 1.06 (row skipped)",
                "t.csv:4: open 'abc' is not a number (row skipped)",
                "t.csv:5: time 2017-01-01T21:00:00Z is not after the series' last candle 2017-01-01T22:00:00Z (row skipped)",
                "t.csv:6: 'not a time' is not a time (expected e.g. 2024-01-02T08:00:00Z, 2024-01-02 08:00:00, 02.01.2024 08:00:00.000 or Unix seconds) (row skipped)",
            ]
        );
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 2);
    }

    fn bad_lines(text: &str) -> Vec<u64> {
        rows(text).iter().filter_map(|r| r.as_ref().err().map(|e| e.line)).collect()
    }

    /// The line of a bad row is the line it is on, whatever ends the lines
    /// and however many empty lines come before it.
    #[test]
    fn bad_rows_are_named_by_their_own_line() {
        let good = |h: u32| format!("2024-01-01 {h:02}:00:00,1.1,1.2,1.0,1.1");
        let bad = |h: u32| format!("2024-01-01 {h:02}:00:00,1.1,1.0,1.2,1.1");
        // Line 1 the header, 2 good, 3 bad, 4 bad, 5 good, 6 bad.
        let lines = ["time,open,high,low,close".to_string(), good(0), bad(1), bad(2), good(3), bad(4)];
        for end in ["\n", "\r\n"] {
            assert_eq!(bad_lines(&(lines.join(end) + end)), vec![3, 4, 6], "lines ending {end:?}");
            // No line end after the last row.
            assert_eq!(bad_lines(&lines.join(end)), vec![3, 4, 6], "lines ending {end:?}, none at the end");
        }
        // Empty lines (skipped, but they are lines): 1 header, 2 good,
        // 3 empty, 4 bad, 5 and 6 empty, 7 good, 8 bad.
        let text = format!("time,open,high,low,close\n{}\n\n{}\n\n\n{}\n{}\n", good(0), bad(1), good(3), bad(4));
        assert_eq!(bad_lines(&text), vec![4, 8]);
        assert_eq!(bad_lines(&text.replace('\n', "\r\n")), vec![4, 8]);
        // Spaces only, and an empty line right after the header.
        let text = format!("time,open,high,low,close\n\n  \n{}\n{}\n", good(0), bad(1));
        assert_eq!(bad_lines(&text), vec![5]);
    }

    #[test]
    fn an_empty_file_is_said_to_be_empty() {
        let i = Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}"));
        for text in ["", "\n", "\r\n\r\n", " \n\n"] {
            let err = CsvCandles::from_reader(Box::new(std::io::Cursor::new(text)), "x.csv".into(), i, Timeframe::H1)
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some(
                    "x.csv: the file is empty: expected a header row (e.g. time,open,high,low,close) and a candle a row"
                ),
                "{text:?}"
            );
        }
        let err = CsvCandles::from_reader(
            Box::new(std::io::Cursor::new("  \ntime,open,high,low,close\n")),
            "x.csv".into(),
            i,
            Timeframe::H1,
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "x.csv: the first line is empty: the header row (e.g. time,open,high,low,close) must be the first line"
            )
        );
    }

    #[test]
    fn columns_by_name_any_case_and_unnamed_time() {
        let got = rows(",CLOSE,low,High,open\n2024-01-02 08:00:00,1.15,1.0,1.2,1.1\n");
        let c = got[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.open, c.high, c.low, c.close, c.volume), (1.1, 1.2, 1.0, 1.15, 0.0));
        let got = rows("Date,Time,Open,High,Low,Close\n2024-01-02,08:00:00,1.1,1.2,1.0,1.15\n");
        assert_eq!(got[0].as_ref().map(|c| c.time.to_string()).ok(), Some("2024-01-02T08:00:00Z".to_string()));
    }

    #[test]
    fn header_errors_name_the_missing_column() {
        let i = Instrument::new("EUR_USD").unwrap_or_else(|e| panic!("{e}"));
        let err = CsvCandles::from_reader(
            Box::new(std::io::Cursor::new("time,open,high,close\n")),
            "x.csv".into(),
            i,
            Timeframe::H1,
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("x.csv: no 'low' column in the header (found: time, open, high, close)"));
    }

    #[test]
    fn names_from_paths() {
        let p = Path::new("/x/EUR_USD_H1_2017_ask.csv");
        assert_eq!(instrument_from_path(p).map(|i| i.to_string()).as_deref(), Some("EUR_USD"));
        assert_eq!(timeframe_from_path(p), Some(Timeframe::H1));
        assert_eq!(instrument_from_path(Path::new("GBPJPY.csv")).map(|i| i.to_string()).as_deref(), Some("GBP_JPY"));
        assert_eq!(instrument_from_path(Path::new("history.csv")), None);
    }
}

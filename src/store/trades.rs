//! `trades`: each series' paper trading — its open trade, kept in the same
//! transaction as the candle that moved it, so a restart resumes it — and
//! its recent closed trades (outcomes), bounded like signals.

use super::records::*;
use super::series::Prepared;
use super::{Store, StoreError};
use crate::engine::trade::Book;
use crate::event::Trade;
use crate::types::SeriesKey;

/// How many closed trades `trades` keeps per series (the console's record
/// column and the snapshot read the newest).
pub const OUTCOMES_KEPT_PER_SERIES: usize = 1000;

/// Books that could be read, and a description of each that could not.
pub type LoadedBooks = (Vec<(SeriesKey, Book)>, Vec<String>);

const BOOK_PREFIX: &str = "book:";
const DONE_PREFIX: &str = "done:";

/// `done:SERIES:EXIT_TIME:ID`: a series' outcomes are one run of keys in the
/// order they closed (the time is fixed-width RFC 3339).
fn done_key(t: &Trade) -> Vec<u8> {
    let series = series_key(&SeriesKey::new(t.instrument, t.timeframe));
    format!("{DONE_PREFIX}{series}:{}:{}", t.exit_time, t.id).into_bytes()
}

fn book_key(key: &SeriesKey) -> Vec<u8> {
    format!("{BOOK_PREFIX}{}", series_key(key)).into_bytes()
}

impl Store {
    /// Adds a series' paper trading after the candle (`book`) and the trades
    /// it closed to the candle's writes: committed with it, or not at all.
    pub fn prepare_trades(
        &self,
        prepared: &mut Prepared,
        key: &SeriesKey,
        book: &Book,
        closed: &[Trade],
        messages: &[(Priority, OutboxEntry)],
    ) -> Result<(), StoreError> {
        let encoded = encode_as(VALUE_V2, book).map_err(|e| self.encode_err(e))?;
        prepared.trades.push((book_key(key), encoded));
        for t in closed {
            prepared.trades.push((done_key(t), encode_as(VALUE_V2, t).map_err(|e| self.encode_err(e))?));
        }
        for (priority, e) in messages {
            let v = encode_as(VALUE_V2, e).map_err(|e| self.encode_err(e))?;
            prepared.trade_entries.push((e.route.clone(), *priority, v));
        }
        Ok(())
    }

    /// The closed trade of `signal`, if it is still kept.
    pub fn outcome_of(&self, signal: &crate::event::Signal) -> Result<Option<Trade>, StoreError> {
        let prefix = format!("{DONE_PREFIX}{}:", series_key(&SeriesKey::new(signal.instrument, signal.timeframe)));
        let suffix = format!(":{}", signal.id);
        // Newest first: a signal's trade closes soon after it, usually.
        for item in self.trades.scan_prefix(prefix).rev() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if k.ends_with(suffix.as_bytes()) {
                return Ok(decode_versioned(&v, |t: Trade| t).ok());
            }
        }
        Ok(None)
    }

    /// Every series' paper trading as last committed. One that cannot be
    /// read starts with no trade open, and is named in the second list.
    pub fn load_books(&self) -> Result<LoadedBooks, StoreError> {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for item in self.trades.scan_prefix(BOOK_PREFIX) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let name = String::from_utf8_lossy(&k[BOOK_PREFIX.len()..]).to_string();
            match (parse_series_key(&k[BOOK_PREFIX.len()..]), decode_versioned(&v, |b: Book| b)) {
                (Some(key), Ok(book)) => ok.push((key, book)),
                (None, _) => bad.push(format!("trades '{name}': not a series key")),
                (_, Err(e)) => bad.push(format!("trades '{name}': {e}")),
            }
        }
        Ok((ok, bad))
    }

    /// A series' newest `n` closed trades, newest first.
    pub fn outcomes(&self, key: &SeriesKey, n: usize) -> Result<Vec<Trade>, StoreError> {
        let prefix = format!("{DONE_PREFIX}{}:", series_key(key));
        let mut out = Vec::new();
        for item in self.trades.scan_prefix(prefix).rev().take(n) {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.extend(decode_versioned(&v, |t: Trade| t).ok());
        }
        Ok(out)
    }

    /// Deletes all but the newest `keep` outcomes of each series; returns
    /// how many went. Not durable until `flush`.
    pub fn prune_outcomes(&self, keep: usize) -> Result<usize, StoreError> {
        let mut runs: Vec<(Vec<u8>, Vec<sled::IVec>)> = Vec::new();
        for item in self.trades.scan_prefix(DONE_PREFIX).keys() {
            let k = item.map_err(|e| self.err(e))?;
            // The series is the key up to the time: `done:EUR_USD:H1:`.
            let series: Vec<u8> = k.splitn(4, |b| *b == b':').take(3).flatten().copied().collect();
            match runs.last_mut() {
                Some((s, keys)) if *s == series => keys.push(k),
                _ => runs.push((series, vec![k])),
            }
        }
        let mut deleted = 0;
        for (_, keys) in runs {
            for k in keys.iter().take(keys.len().saturating_sub(keep)) {
                self.trades.remove(k).map_err(|e| self.err(e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

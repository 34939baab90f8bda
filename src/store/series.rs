//! The commit path: one candle's series state, its signal and the signal's
//! outbox entries in one transaction; the stored signals and their pruning.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::records::*;
use super::{Store, StoreError};
use crate::engine::SeriesState;
use crate::event::{CandleRecord, Signal};
use crate::time::Ts;
use crate::types::{Candle, SeriesKey};

/// How many signals `signals` keeps per series. The tree is there so that a
/// candle can never be notified twice; what is older than the newest
/// thousand stays covered by the series' pruning mark (`prune_signals`).
pub const SIGNALS_KEPT_PER_SERIES: usize = 1000;

pub(super) const PRUNED_PREFIX: &str = "pruned:";

/// What one candle changed: written together or not at all.
pub struct CandleCommit<'a> {
    pub key: SeriesKey,
    pub state: &'a SeriesState,
    /// The candle that made `state`, whose open, high and low are kept with
    /// it (the state holds its time and close): after a restart the console
    /// shows each pair's last candle without fetching it again.
    pub candle: Option<&'a Candle>,
    pub signal: Option<&'a Signal>,
    /// Routes (name, delay in seconds) that take this signal.
    pub routes: &'a [(String, i64)],
    /// The signal's place in each route's queue (the notifier's policy).
    pub priority: Priority,
    pub now: Ts,
}

/// Stored series that could be read, and a description of each that could not.
pub type LoadedSeries = (Vec<(SeriesKey, SeriesState)>, Vec<String>);

/// One candle's writes, encoded and ready to commit.
#[derive(Debug, Clone)]
pub struct Prepared {
    key: String,
    state: Vec<u8>,
    signal: Option<PreparedSignal>,
    /// The series' paper trading after the candle, and the trades it closed
    /// (keys and values in `trades`): see `Store::prepare_trades`.
    pub(super) trades: Vec<(Vec<u8>, Vec<u8>)>,
    /// The closed trades' notifications (route, priority, entry).
    pub(super) trade_entries: Vec<(String, Priority, Vec<u8>)>,
}

#[derive(Debug, Clone)]
struct PreparedSignal {
    id: String,
    /// At or before its series' pruning mark: signalled before, so not again.
    seen: bool,
    stored: Vec<u8>,
    /// Each route's outbox key (without its id, made at commit) and entry.
    entries: Vec<(String, Vec<u8>)>,
    priority: Priority,
}

impl Store {
    pub(super) fn pruned_through(&self, key: &SeriesKey) -> Option<Ts> {
        self.pruned.read().unwrap_or_else(|p| p.into_inner()).get(key).copied()
    }

    /// Keeps the newest `keep` signals of each series and deletes the rest,
    /// raising the series' pruning mark to the newest deleted signal's candle
    /// time in the same transaction, so a deleted signal still counts as
    /// signalled (a series that starts over cannot notify its old candles
    /// again). Returns how many were deleted. Not durable until `flush`.
    pub fn prune_signals(&self, keep: usize) -> Result<usize, StoreError> {
        // Ids are `INSTRUMENT:TF:TIME:SIDE` with a fixed-width time, so a
        // series' signals are one run of keys, oldest first.
        let mut runs: Vec<(SeriesKey, Vec<sled::IVec>)> = Vec::new();
        for item in self.signals.iter().keys() {
            let k = item.map_err(|e| self.err(e))?;
            let Some(series) = signal_series(&k) else { continue };
            match runs.last_mut() {
                Some((s, keys)) if *s == series => keys.push(k),
                _ => runs.push((series, vec![k])),
            }
        }
        let mut deleted = 0;
        for (series, keys) in runs {
            let Some(old) = keys.len().checked_sub(keep).filter(|&n| n > 0) else { continue };
            let doomed = &keys[..old];
            let Some(mark) = doomed.last().and_then(|k| signal_time(k)) else { continue };
            let mark = self.pruned_through(&series).map_or(mark, |m| m.max(mark));
            let mark_key = format!("{PRUNED_PREFIX}{}", series_key(&series));
            let r = (&self.signals, &self.meta).transaction(|(signals, meta)| {
                for k in doomed {
                    signals.remove(k)?;
                }
                meta.insert(mark_key.as_bytes(), &mark.0.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<String>>(())
            });
            self.tx_result(r)?;
            self.pruned.write().unwrap_or_else(|p| p.into_inner()).insert(series, mark);
            deleted += old;
        }
        Ok(deleted)
    }

    /// Every stored series. A value that cannot be read is skipped and named
    /// in the second list (that series starts over; nothing else is lost).
    pub fn load_series(&self) -> Result<LoadedSeries, StoreError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in self.series.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let name = String::from_utf8_lossy(&k).to_string();
            match (parse_series_key(&k), decode_series(&v)) {
                (Some(key), Ok((state, _))) => ok.push((key, state)),
                (None, _) => bad.push(format!("series '{name}': not a series key")),
                (_, Err(e)) => bad.push(format!("series '{name}': {e}")),
            }
        }
        Ok((ok, bad))
    }

    /// The newest `n` signals of one series, newest first. Ids sort by series, then candle time,
    /// so they are the end of the series' range: no more than `n` are read.
    pub fn newest_signals(&self, series: &SeriesKey, n: usize) -> Result<Vec<StoredSignal>, StoreError> {
        let mut prefix = series_key(series).into_bytes();
        prefix.push(b':');
        let mut out = Vec::new();
        for item in self.signals.scan_prefix(&prefix).rev().take(n) {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.extend(decode_stored_signal(&v).ok());
        }
        Ok(out)
    }

    /// Encodes one candle's writes, so the engine can move on to the next
    /// candle while the batch waits to be committed.
    pub fn prepare(&self, c: &CandleCommit<'_>) -> Result<Prepared, StoreError> {
        let enc_err =
            |e: postcard::Error| StoreError::Encode { dir: self.dir.display().to_string(), message: e.to_string() };
        let state = match c.candle {
            Some(k) => encode_as(VALUE_V2, &(c.state, [k.open, k.high, k.low])),
            None => encode(c.state),
        }
        .map_err(enc_err)?;
        let signal = match c.signal {
            Some(s) => {
                let stored = StoredSignal {
                    signal: s.clone(),
                    routes: c.routes.iter().map(|r| r.0.clone()).collect(),
                    committed: c.now,
                    receipts: Vec::new(),
                };
                let entries = c
                    .routes
                    .iter()
                    .map(|(route, delay)| {
                        let e = OutboxEntry {
                            route: route.clone(),
                            message: Message::Signal(s.clone()),
                            created: c.now,
                            not_before: Ts(c.now.0 + delay),
                            attempts: 0,
                            last_error: None,
                        };
                        encode_as(VALUE_V2, &e).map(|v| (route.clone(), v))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(enc_err)?;
                Some(PreparedSignal {
                    id: s.id.clone(),
                    seen: self.pruned_through(&c.key).is_some_and(|mark| s.time <= mark),
                    stored: encode_as(VALUE_V2, &stored).map_err(enc_err)?,
                    entries,
                    priority: c.priority,
                })
            }
            None => None,
        };
        Ok(Prepared { key: series_key(&c.key), state, signal, trades: Vec::new(), trade_entries: Vec::new() })
    }

    /// Writes one candle's series state, its signal and the signal's outbox
    /// entries in one transaction. Returns whether the signal was new: a
    /// signal id already stored is never queued again.
    pub fn commit(&self, c: &CandleCommit<'_>) -> Result<bool, StoreError> {
        let p = self.prepare(c)?;
        Ok(self.commit_all(std::slice::from_ref(&p))?.first().copied().unwrap_or(false))
    }

    /// Commits a batch of prepared candles in one transaction: each candle's
    /// writes are atomic because the whole batch is. One transaction per
    /// batch instead of per candle is what keeps a 28-pair close cheap.
    /// Returns, per candle, whether its signal was new.
    pub fn commit_all(&self, batch: &[Prepared]) -> Result<Vec<bool>, StoreError> {
        let trees = (&self.series, &self.signals, &self.outbox, &self.trades);
        let result = trees.transaction(|(series, signals, outbox, trades)| {
            let mut new = Vec::with_capacity(batch.len());
            for p in batch {
                series.insert(p.key.as_bytes(), p.state.as_slice())?;
                // An outcome's key is its signal's id: written twice (a
                // replayed candle), it is still one outcome.
                for (k, v) in &p.trades {
                    trades.insert(k.as_slice(), v.as_slice())?;
                }
                for (route, priority, e) in &p.trade_entries {
                    let k = OutboxKey::new(route, *priority, outbox.generate_id()?);
                    outbox.insert(&k.0, e.as_slice())?;
                }
                let Some(sig) = &p.signal else {
                    new.push(false);
                    continue;
                };
                if sig.seen || signals.get(sig.id.as_bytes())?.is_some() {
                    new.push(false);
                    continue;
                }
                signals.insert(sig.id.as_bytes(), sig.stored.as_slice())?;
                for (route, e) in &sig.entries {
                    let k = OutboxKey::new(route, sig.priority, outbox.generate_id()?);
                    outbox.insert(&k.0, e.as_slice())?;
                }
                new.push(true);
            }
            Ok::<_, ConflictableTransactionError<()>>(new)
        });
        match result {
            Ok(new) => Ok(new),
            Err(TransactionError::Storage(e)) => Err(self.err(e)),
            Err(TransactionError::Abort(())) => Ok(vec![false; batch.len()]),
        }
    }

    pub fn signal(&self, id: &str) -> Result<Option<StoredSignal>, StoreError> {
        let v = self.signals.get(id).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_stored_signal(&v).ok()))
    }

    /// Each stored series' last candle with its indicator values, for the
    /// view a restart resumes from. Values that cannot be read, or from
    /// before candles were kept whole (version 1), are left out; `load_series`
    /// names the unreadable ones.
    pub fn last_candles(&self) -> Result<Vec<CandleRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.series.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let Some(key) = parse_series_key(&k) else { continue };
            if let Ok((state, Some([open, high, low]))) = decode_series(&v)
                && let Some(last) = state.last()
            {
                let (fast, slow, atr) = state.values();
                let (instrument, timeframe, time, close) = (key.instrument, key.timeframe, last.time, last.close);
                out.push(CandleRecord { instrument, timeframe, time, open, high, low, close, fast, slow, atr });
            }
        }
        Ok(out)
    }

    /// Every stored series.
    pub fn series_keys(&self) -> Result<Vec<SeriesKey>, StoreError> {
        let mut out = Vec::new();
        for item in self.series.iter().keys() {
            out.extend(parse_series_key(&item.map_err(|e| self.err(e))?));
        }
        Ok(out)
    }
}

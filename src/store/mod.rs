//! The sled store. Only this module imports sled, so a later switch to another
//! embedded database touches one file.
//!
//! Trees: `series` (indicator state and last candle per series), `signals`
//! (signals by id), `outbox` (notifications not yet delivered), `dead` (given
//! up), `meta` (schema version). Every value starts with a format version byte.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::engine::SeriesState;
use crate::event::{Alert, AlertState, CandleRecord, DeliveryState, Event, Signal};
use crate::time::Ts;
use crate::types::{Candle, Instrument, SeriesKey, Timeframe};
use crate::view::{Bar, CLOSES_KEPT, RouteDelivery, View};

/// The on-disk layout this build writes and reads.
pub const SCHEMA: u32 = 1;
const VALUE_V1: u8 = 1;
/// Outbox entries that carry alerts as well as signals, stored signals with
/// their delivery receipts, and series states with their last candle's open,
/// high and low. Version 1 values of all three are still read.
const VALUE_V2: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {dir} is in use by another pipwatch. Watch that instance with `pipwatch attach`, or give this one its own --data-dir"
    )]
    Locked { dir: String },
    #[error(
        "the data directory {dir} was written by a newer pipwatch (schema {found}; this build reads {SCHEMA}). Upgrade pipwatch, or use another --data-dir"
    )]
    NewerSchema { dir: String, found: u32 },
    #[error("data directory {dir}: {source}")]
    Db { dir: String, source: sled::Error },
    #[error(
        "data directory {dir}: {what}. {fix} and start pipwatch again: what was committed before is kept, and every series resumes after its last stored candle"
    )]
    Full { dir: String, what: &'static str, fix: &'static str, source: sled::Error },
    #[error("cannot create the data directory {dir}: {source}")]
    Create { dir: String, source: std::io::Error },
    #[error("data directory {dir}: the database is corrupt and could not be moved aside: {message}")]
    Unrecoverable { dir: String, message: String },
    #[error("data directory {dir}: cannot encode a value: {message}")]
    Encode { dir: String, message: String },
}

/// Delivery order: urgent never waits behind low. Stored as the first byte
/// of the outbox key, so a scan of the tree is already in delivery order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Critical alerts.
    Urgent = 0,
    /// Signals.
    High = 1,
    /// Warnings.
    Normal = 2,
    /// Status: info alerts and resolved notices.
    Low = 3,
}

impl Priority {
    fn from_byte(b: u8) -> Priority {
        match b {
            0 => Priority::Urgent,
            1 => Priority::High,
            2 => Priority::Normal,
            _ => Priority::Low,
        }
    }
}

/// What a notification carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Signal(Signal),
    Alert(Alert),
}

impl Message {
    pub fn id(&self) -> &str {
        match self {
            Message::Signal(s) => &s.id,
            Message::Alert(a) => &a.id,
        }
    }

    pub fn priority(&self) -> Priority {
        use crate::types::Severity;
        match self {
            Message::Signal(_) => Priority::High,
            Message::Alert(a) => match (a.state, a.severity) {
                (AlertState::Raised, Severity::Critical) => Priority::Urgent,
                (AlertState::Raised, Severity::Warning) => Priority::Normal,
                _ => Priority::Low,
            },
        }
    }
}

/// One delivery owed to a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub route: String,
    pub message: Message,
    pub created: Ts,
    /// A route's delay: not to be sent before this time.
    pub not_before: Ts,
    /// Failed requests so far.
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The outbox entry layout of value version 1 (signals only).
#[derive(Deserialize)]
struct OutboxEntryV1 {
    route: String,
    signal: Signal,
    created: Ts,
    not_before: Ts,
    attempts: u32,
}

/// An outbox (or dead) key: priority, then a sled-generated id, so keys sort
/// by priority and then by age.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxKey([u8; 9]);

impl OutboxKey {
    fn new(priority: Priority, id: u64) -> Self {
        let mut k = [0u8; 9];
        k[0] = priority as u8;
        k[1..].copy_from_slice(&id.to_be_bytes());
        OutboxKey(k)
    }

    fn from_raw(raw: &[u8]) -> Option<Self> {
        Some(OutboxKey(raw.try_into().ok()?))
    }

    pub fn priority(&self) -> Priority {
        Priority::from_byte(self.0[0])
    }
}

impl AsRef<[u8]> for OutboxKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A notification given up on, with why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadEntry {
    pub entry: OutboxEntry,
    pub error: String,
    pub died: Ts,
}

/// Discord's receipt for one route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub route: String,
    pub message_id: Option<String>,
    pub at: Ts,
}

/// A stored signal, the routes it was queued for and their receipts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSignal {
    pub signal: Signal,
    pub routes: Vec<String>,
    pub committed: Ts,
    pub receipts: Vec<Receipt>,
}

#[derive(Deserialize)]
struct StoredSignalV1 {
    signal: Signal,
    routes: Vec<String>,
    committed: Ts,
}

fn decode_entry(bytes: &[u8]) -> Result<OutboxEntry, String> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => {
            let v1: OutboxEntryV1 = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            Ok(OutboxEntry {
                route: v1.route,
                message: Message::Signal(v1.signal),
                created: v1.created,
                not_before: v1.not_before,
                attempts: v1.attempts,
                last_error: None,
            })
        }
        Some((&VALUE_V2, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

/// A series value: its state, and from version 2 on the open, high and low
/// of the candle that made it.
fn decode_series(bytes: &[u8]) -> Result<(SeriesState, Option<[f64; 3]>), String> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => Ok((postcard::from_bytes(rest).map_err(|e| e.to_string())?, None)),
        Some((&VALUE_V2, rest)) => {
            let (state, ohl) = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            Ok((state, Some(ohl)))
        }
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

fn decode_stored_signal(bytes: &[u8]) -> Result<StoredSignal, String> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => {
            let v1: StoredSignalV1 = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            Ok(StoredSignal { signal: v1.signal, routes: v1.routes, committed: v1.committed, receipts: Vec::new() })
        }
        Some((&VALUE_V2, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

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
    pub now: Ts,
}

/// Stored series that could be read, and a description of each that could not.
pub type LoadedSeries = (Vec<(SeriesKey, SeriesState)>, Vec<String>);
/// Readable entries in key order, and a description of each unreadable one.
pub type Entries<T> = (Vec<(OutboxKey, T)>, Vec<String>);

/// One candle's writes, encoded and ready to commit.
#[derive(Debug, Clone)]
pub struct Prepared {
    key: String,
    state: Vec<u8>,
    signal: Option<PreparedSignal>,
}

#[derive(Debug, Clone)]
struct PreparedSignal {
    id: String,
    /// At or before its series' pruning mark: signalled before, so not again.
    seen: bool,
    stored: Vec<u8>,
    entries: Vec<Vec<u8>>,
}

/// What `open` had to do.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Where a corrupt database was moved before starting fresh.
    pub moved_aside: Option<PathBuf>,
    pub created: bool,
}

pub struct Store {
    db: sled::Db,
    series: sled::Tree,
    signals: sled::Tree,
    outbox: sled::Tree,
    dead: sled::Tree,
    meta: sled::Tree,
    dir: PathBuf,
    /// Per series, the candle time up to which stored signals were pruned
    /// (`meta` holds it too): a signal at or before it counts as already
    /// signalled, as it would have if it were still stored.
    pruned: std::sync::RwLock<std::collections::HashMap<SeriesKey, Ts>>,
    failed: Failed,
}

/// The first I/O error sled reported on this handle. sled keeps that error
/// and fails every later write until the database is opened again, so the
/// first part of pipwatch to meet it (the engine, the notifier, the health
/// task) tells the rest, and the instance stops instead of retrying what
/// cannot succeed.
#[derive(Default)]
struct Failed {
    first: std::sync::OnceLock<String>,
    notify: tokio::sync::Notify,
}

/// How many signals `signals` keeps per series. The tree is there so that a
/// candle can never be notified twice; what is older than the newest
/// thousand stays covered by the series' pruning mark (`prune_signals`).
pub const SIGNALS_KEPT_PER_SERIES: usize = 1000;

const PRUNED_PREFIX: &str = "pruned:";
/// `meta` keys of alerts raised and not yet resolved, by check.
const ALERT_PREFIX: &str = "alert:";
/// In `meta`: the last seq published, and whether the instance stopped cleanly.
const SEQ_KEY: &str = "seq";
/// In `meta`: notifications paused (1) or not.
const PAUSED_KEY: &str = "paused";
/// In `meta`: each series' recent closes as the console last showed them
/// (see `keep_bars`).
const BARS_KEY: &str = "bars";

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, postcard::Error> {
    encode_as(VALUE_V1, v)
}

fn encode_as<T: Serialize>(version: u8, v: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![version];
    out.extend(postcard::to_stdvec(v)?);
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

fn series_key(k: &SeriesKey) -> String {
    format!("{}:{}", k.instrument, k.timeframe)
}

fn parse_series_key(raw: &[u8]) -> Option<SeriesKey> {
    let s = std::str::from_utf8(raw).ok()?;
    let (i, tf) = s.split_once(':')?;
    Some(SeriesKey::new(Instrument::new(i).ok()?, tf.parse::<Timeframe>().ok()?))
}

/// The series of a signal id (`EUR_USD:H4:2024-01-02T08:00:00Z:buy`).
fn signal_series(id: &[u8]) -> Option<SeriesKey> {
    let mut colons = id.iter().enumerate().filter(|(_, b)| **b == b':').map(|(i, _)| i);
    let _ = colons.next()?;
    parse_series_key(&id[..colons.next()?])
}

/// The candle time of a signal id.
fn signal_time(id: &[u8]) -> Option<Ts> {
    let s = std::str::from_utf8(id).ok()?;
    let (rest, _side) = s.rsplit_once(':')?;
    let mut parts = rest.splitn(3, ':');
    let (_, _, time) = (parts.next()?, parts.next()?, parts.next()?);
    Ts::parse_rfc3339(time)
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"),
        _ => false,
    }
}

/// How often sled's background thread cleans the log. The cleaner frees at
/// most one log segment (512 KiB) per run, and it runs only on that thread.
/// Each run also ends in an `fsync` of the whole file, which is what a 28-pair
/// close's tail pays for it (BENCHMARKS.md): every 500 ms (sled's default) it
/// cost p99 and max; every 5 s it is lost in the noise and can still free
/// 100 KiB of log a second, some 20 times what the demo market writes.
const CLEAN_EVERY_MS: u64 = 5_000;

fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    open_db_cleaning_every(dir, Some(CLEAN_EVERY_MS))
}

fn open_db_cleaning_every(dir: &Path, clean_every_ms: Option<u64>) -> Result<sled::Db, sled::Error> {
    let config = sled::Config::new()
        .path(dir)
        // sled's default 1 GiB cache makes RSS balloon; our working set is tiny.
        .cache_capacity(32 * 1024 * 1024)
        // NOTE: every write path must end in an explicit `flush` before it
        // acknowledges anything (dropping the Db flushes too): this thread's
        // flushes are not what makes our writes durable. Turning it off
        // entirely (as an earlier version did) also turns off the cleaner,
        // and then every segment that holds the last copy of a page nobody
        // rewrites (a full leaf of old signals) stays on disk for good: a
        // busy demo's database grew twice as fast.
        .flush_every_ms(clean_every_ms);
    // sled 0.34 panics on some corrupt files instead of returning an error
    // (upstream #1387); treat such a panic as corruption.
    match std::panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(r) => r,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(sled::Error::Corruption { at: None, bt: () }).inspect_err(|_| {
                tracing::error!(
                    panic = msg.as_deref().unwrap_or("unknown"),
                    "sled panicked while opening the database"
                );
            })
        }
    }
}

/// `open_db`, tried again for a moment while the directory is locked: a
/// sled database closed in this process lets go of its lock only when its
/// last background I/O and deferred frees are done, a little after the
/// handle is dropped. Another process's lock outlasts the wait.
fn open_db_waiting_for_release(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match open_db(dir) {
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

impl StoreError {
    /// A sled error in `dir`, named for what the user can do about it.
    fn db(dir: String, source: sled::Error) -> StoreError {
        use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
        // sled wraps the OS error in one of its own, whose text is a debug
        // dump: the kind is what is worth saying.
        let (what, fix) = match &source {
            sled::Error::Io(e) if e.kind() == StorageFull => {
                ("the disk is full (no space left on the device)", "Free some space")
            }
            sled::Error::Io(e) if e.kind() == QuotaExceeded => {
                ("the disk quota is used up", "Free some space or have the quota raised")
            }
            sled::Error::Io(e) if e.kind() == FileTooLarge => (
                "the database file has reached the largest size allowed (a file size limit: `ulimit -f`, systemd's LimitFSIZE, or the filesystem's own)",
                "Raise the limit",
            ),
            _ => return StoreError::Db { dir, source },
        };
        StoreError::Full { dir, what, fix, source }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. A corrupt database is moved aside
    /// to `DIR.corrupt-TIMESTAMP` and a fresh one started; the report says so.
    pub fn open(dir: &Path) -> Result<(Store, OpenReport), StoreError> {
        let shown = dir.display().to_string();
        let existed = dir.join("db").exists() || dir.join("conf").exists();
        let mut report = OpenReport { created: !existed, ..OpenReport::default() };
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Create { dir: shown.clone(), source })?;
        match open_db_waiting_for_release(dir) {
            Ok(db) => {
                let store = Store::with_trees(db, dir)?;
                // sled writes while it opens, and reports a refused write only
                // to the next flush. Asked here, a full disk is named as one
                // instead of a log that reads empty being taken for a lost
                // database and moved aside.
                store.flush_blocking()?;
                // sled reads a scribbled log as an empty database instead of
                // failing. A database that existed must at least hold its schema
                // record; without it the contents are gone, so say so.
                let lost = existed && store.meta.get("schema").map_err(|e| store.err(e))?.is_none();
                if !lost {
                    store.check_schema()?;
                    return Ok((store, report));
                }
                // The handle must be closed before the directory can move.
                drop(store);
            }
            Err(e) if is_lock_error(&e) => return Err(StoreError::Locked { dir: shown }),
            Err(sled::Error::Corruption { .. }) | Err(sled::Error::ReportableBug(_)) => {}
            Err(source) => return Err(StoreError::db(shown, source)),
        }
        let aside = PathBuf::from(format!("{}.corrupt-{}", dir.display(), chrono::Utc::now().format("%Y%m%dT%H%M%SZ")));
        std::fs::rename(dir, &aside)
            .map_err(|e| StoreError::Unrecoverable { dir: shown.clone(), message: e.to_string() })?;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Create { dir: shown.clone(), source })?;
        report.moved_aside = Some(aside);
        report.created = true;
        let db = open_db(dir).map_err(|source| StoreError::db(shown.clone(), source))?;
        let store = Store::with_trees(db, dir)?;
        store.check_schema()?;
        Ok((store, report))
    }

    fn with_trees(db: sled::Db, dir: &Path) -> Result<Store, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(|source| StoreError::db(dir.display().to_string(), source));
        let meta = tree("meta")?;
        let mut pruned = std::collections::HashMap::new();
        for item in meta.scan_prefix(PRUNED_PREFIX) {
            let (k, v) = item.map_err(|source| StoreError::db(dir.display().to_string(), source))?;
            // A mark that cannot be read is dropped: the signals still stored
            // keep deduplicating, as they did before there were marks.
            let key = parse_series_key(&k[PRUNED_PREFIX.len()..]);
            let time = <[u8; 8]>::try_from(v.as_ref()).ok().map(|b| Ts(i64::from_be_bytes(b)));
            if let (Some(key), Some(time)) = (key, time) {
                pruned.insert(key, time);
            }
        }
        Ok(Store {
            series: tree("series")?,
            signals: tree("signals")?,
            outbox: tree("outbox")?,
            dead: tree("dead")?,
            meta,
            db,
            dir: dir.to_path_buf(),
            pruned: std::sync::RwLock::new(pruned),
            failed: Failed::default(),
        })
    }

    fn pruned_through(&self, key: &SeriesKey) -> Option<Ts> {
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

    fn err(&self, source: sled::Error) -> StoreError {
        let io = matches!(source, sled::Error::Io(_));
        let e = StoreError::db(self.dir.display().to_string(), source);
        if io && self.failed.first.set(e.to_string()).is_ok() {
            self.failed.notify.notify_waiters();
        }
        e
    }

    /// What sled returns when a write is refused, for tests of whoever
    /// must notice it.
    #[cfg(test)]
    pub(crate) fn refuse_a_write(&self, e: std::io::Error) -> StoreError {
        self.err(sled::Error::Io(e))
    }

    /// Resolves, with the error's message, once any use of the store has
    /// met an I/O error (a full disk, a refused write).
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.failed.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a failure between the two is not missed.
            notified.as_mut().enable();
            if let Some(message) = self.failed.first.get() {
                return message.clone();
            }
            notified.await;
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.meta.get("schema").map_err(|e| self.err(e))? {
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
                if found > SCHEMA {
                    return Err(StoreError::NewerSchema { dir: self.dir.display().to_string(), found });
                }
            }
            None => {
                self.meta.insert("schema", &SCHEMA.to_be_bytes()).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Whether notifications were left paused.
    pub fn notifications_paused(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(PAUSED_KEY).map_err(|e| self.err(e))?.is_some_and(|v| v.as_ref() == [1]))
    }

    /// Not durable until `flush`.
    pub fn set_notifications_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.meta.insert(PAUSED_KEY, &[u8::from(paused)]).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Keeps each series' recent closes (the console's sparklines and
    /// charts), every few seconds while they change and at a clean stop.
    /// Writing them with every candle would add kilobytes to each durable
    /// close; kept here, they come back after a restart, and after a crash
    /// as last kept, ended by the series' last stored candle.
    pub fn keep_bars(&self, view: &View) -> Result<(), StoreError> {
        let named: Vec<(String, &std::collections::VecDeque<Bar>)> =
            view.pairs.iter().map(|p| (series_key(&p.key()), &p.bars)).collect();
        let value = encode(&named).map_err(|e| self.encode_err(e))?;
        self.meta.insert(BARS_KEY, value).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Notes the seq of the last event published, and whether the instance
    /// stopped cleanly after it. Not durable until `flush`.
    pub fn mark_seq(&self, seq: u64, clean: bool) -> Result<(), StoreError> {
        let mut value = seq.to_be_bytes().to_vec();
        value.push(u8::from(clean));
        self.meta.insert(SEQ_KEY, value).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Where the next instance's seqs start: after the last one's. A mark
    /// left by an instance that did not stop cleanly may be behind what it
    /// published (up to the last flush, about 5 s), so `unclean_gap` more
    /// are skipped. A mark that cannot be read counts as unclean.
    pub fn seq_start(&self, unclean_gap: u64) -> Result<u64, StoreError> {
        let v = self.meta.get(SEQ_KEY).map_err(|e| self.err(e))?;
        Ok(match v.as_deref() {
            None => 0,
            Some(&[a, b, c, d, e, f, g, h, clean]) => {
                let seq = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
                if clean == 1 { seq } else { seq.saturating_add(unclean_gap) }
            }
            Some(_) => unclean_gap,
        })
    }

    /// Keeps a raised or acknowledged alert (its episode: id, severity, when
    /// it was last sent) or, once resolved, drops it, so that a restart goes on with the
    /// episode instead of raising and sending it again. Not durable until
    /// `flush`.
    pub fn keep_alert(&self, alert: &Alert) -> Result<(), StoreError> {
        let key = format!("{ALERT_PREFIX}{}", alert.check);
        match alert.state {
            AlertState::Raised | AlertState::Acknowledged => {
                let value = encode(alert).map_err(|e| self.encode_err(e))?;
                self.meta.insert(key, value).map_err(|e| self.err(e))?;
            }
            AlertState::Resolved => {
                self.meta.remove(key).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Alerts raised (or acknowledged) and not resolved when the store was last used. One
    /// that cannot be read is dropped and named in the second list.
    pub fn raised_alerts(&self) -> Result<(Vec<Alert>, Vec<String>), StoreError> {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for item in self.meta.scan_prefix(ALERT_PREFIX) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            match decode::<Alert>(&v) {
                Ok(a) => ok.push(a),
                Err(e) => {
                    bad.push(format!("{}: {e}", String::from_utf8_lossy(&k)));
                    self.meta.remove(k).map_err(|e| self.err(e))?;
                }
            }
        }
        Ok((ok, bad))
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

    /// What the console showed when this data directory was last used: each
    /// series' last candle with its indicators, and the newest `signals`
    /// signals with their deliveries. A restarted instance starts its view
    /// from this, so a console or an `attach` does not show blank pairs until
    /// the next candle closes (hours away on H4) and no signals at all.
    /// Unreadable values are left out; `load_series` names them. Only the
    /// series `wanted` are shown: one taken out of the config would
    /// otherwise stay on the console, frozen, for good.
    pub fn restored_view(&self, signals: usize, wanted: impl Fn(&SeriesKey) -> bool) -> Result<View, StoreError> {
        let mut view = View::default();
        // Bars kept at the last stop, or (after a crash) a few seconds
        // before it: the store may have gone further, and its last candle
        // then ends them. Bars from past the stored candle do not fit.
        let mut kept: std::collections::HashMap<String, Vec<Bar>> = match self.meta.get(BARS_KEY) {
            Ok(Some(v)) => decode::<Vec<(String, Vec<Bar>)>>(&v).unwrap_or_default().into_iter().collect(),
            _ => Default::default(),
        };
        // Each series' newest signal is its pair's "last signal", also when
        // the newest `signals` of all series (the feed) leave it out.
        let (mut recent, mut newest) = (Vec::new(), Vec::new());
        for item in self.series.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let Some(key) = parse_series_key(&k).filter(|k| wanted(k)) else { continue };
            if let Ok((state, Some([open, high, low]))) = decode_series(&v)
                && let Some(last) = state.last()
            {
                let (fast, slow, atr) = state.values();
                let (instrument, timeframe, time, close) = (key.instrument, key.timeframe, last.time, last.close);
                let record = CandleRecord { instrument, timeframe, time, open, high, low, close, fast, slow, atr };
                if let Some(mut bars) =
                    kept.remove(&series_key(&key)).filter(|b| b.last().is_some_and(|b| b.time <= time))
                {
                    // The stored candle ends them: applied below, as any candle.
                    bars.retain(|b| b.time < time);
                    view.pair_mut(instrument, timeframe).bars =
                        bars.into_iter().rev().take(CLOSES_KEPT - 1).rev().collect();
                }
                view.apply_event(&Event::Candle(record));
            }
            let mine = self.newest_signals(&k, signals)?;
            newest.extend(mine.first().map(|s| s.signal.clone()));
            recent.extend(mine);
        }
        recent.sort_by(|a, b| (b.signal.time, &b.signal.id).cmp(&(a.signal.time, &a.signal.id)));
        recent.truncate(signals);
        let mut unconfirmed = self.unconfirmed()?;
        // Oldest first, as the events came: the view keeps the newest first.
        for s in recent.into_iter().rev() {
            view.apply_event(&Event::Signal(s.signal.clone()));
            let deliveries = s
                .routes
                .iter()
                .filter_map(|route| match s.receipts.iter().find(|r| &r.route == route) {
                    Some(r) => Some(RouteDelivery {
                        route: route.clone(),
                        state: DeliveryState::Delivered,
                        // Not kept with the receipt: at least the one that delivered it.
                        attempts: 1,
                        message_id: r.message_id.clone(),
                        error: None,
                    }),
                    None => unconfirmed.remove(&(s.signal.id.clone(), route.clone())),
                })
                .collect();
            if let Some(v) = view.signals.front_mut() {
                v.deliveries = deliveries;
            }
        }
        for s in newest {
            let (instrument, timeframe) = (s.instrument, s.timeframe);
            view.pair_mut(instrument, timeframe).last_signal = Some(s);
        }
        Ok(view)
    }

    /// The newest `n` signals of one series (`series` as its key in the
    /// `series` tree), newest first. Ids sort by series, then candle time,
    /// so they are the end of the series' range: no more than `n` are read.
    fn newest_signals(&self, series: &[u8], n: usize) -> Result<Vec<StoredSignal>, StoreError> {
        let mut prefix = series.to_vec();
        prefix.push(b':');
        let mut out = Vec::new();
        for item in self.signals.scan_prefix(&prefix).rev().take(n) {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.extend(decode_stored_signal(&v).ok());
        }
        Ok(out)
    }

    /// Deliveries not confirmed, by (message id, route): waiting in the
    /// outbox (failed once they have been tried) or given up on.
    fn unconfirmed(&self) -> Result<std::collections::HashMap<(String, String), RouteDelivery>, StoreError> {
        let mut found = std::collections::HashMap::new();
        for item in self.outbox.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            let Ok(e) = decode_entry(&v) else { continue };
            let state = if e.attempts > 0 { DeliveryState::Failed } else { DeliveryState::Queued };
            let d = RouteDelivery {
                route: e.route.clone(),
                state,
                attempts: e.attempts,
                message_id: None,
                error: e.last_error.clone(),
            };
            found.insert((e.message.id().to_string(), e.route), d);
        }
        for (_, d) in self.dead()?.0 {
            let r = RouteDelivery {
                route: d.entry.route.clone(),
                state: DeliveryState::Dead,
                attempts: d.entry.attempts,
                message_id: None,
                error: Some(d.error),
            };
            found.insert((d.entry.message.id().to_string(), d.entry.route), r);
        }
        Ok(found)
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
                        encode_as(VALUE_V2, &e)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(enc_err)?;
                Some(PreparedSignal {
                    id: s.id.clone(),
                    seen: self.pruned_through(&c.key).is_some_and(|mark| s.time <= mark),
                    stored: encode_as(VALUE_V2, &stored).map_err(enc_err)?,
                    entries,
                })
            }
            None => None,
        };
        Ok(Prepared { key: series_key(&c.key), state, signal })
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
        let result = (&self.series, &self.signals, &self.outbox).transaction(|(series, signals, outbox)| {
            let mut new = Vec::with_capacity(batch.len());
            for p in batch {
                series.insert(p.key.as_bytes(), p.state.as_slice())?;
                let Some(sig) = &p.signal else {
                    new.push(false);
                    continue;
                };
                if sig.seen || signals.get(sig.id.as_bytes())?.is_some() {
                    new.push(false);
                    continue;
                }
                signals.insert(sig.id.as_bytes(), sig.stored.as_slice())?;
                for e in &sig.entries {
                    let k = OutboxKey::new(Priority::High, outbox.generate_id()?);
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

    /// Makes every write so far durable. Anything that must survive a crash
    /// (a committed signal, a queued notification) is acknowledged only after this.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.db.flush_async().await.map_err(|e| self.err(e))
    }

    /// The blocking flush, for threads outside the async runtime.
    pub fn flush_blocking(&self) -> Result<usize, StoreError> {
        self.db.flush().map_err(|e| self.err(e))
    }

    pub fn signal(&self, id: &str) -> Result<Option<StoredSignal>, StoreError> {
        let v = self.signals.get(id).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_stored_signal(&v).ok()))
    }

    fn encode_err(&self, e: postcard::Error) -> StoreError {
        StoreError::Encode { dir: self.dir.display().to_string(), message: e.to_string() }
    }

    fn tx_result<T>(&self, r: Result<T, TransactionError<String>>) -> Result<T, StoreError> {
        r.map_err(|e| match e {
            TransactionError::Storage(e) => self.err(e),
            TransactionError::Abort(message) => StoreError::Encode { dir: self.dir.display().to_string(), message },
        })
    }

    /// Queues notifications (alerts; signals are queued by `commit_all`) in
    /// one transaction. Not durable until `flush`.
    pub fn enqueue(&self, entries: &[OutboxEntry]) -> Result<Vec<OutboxKey>, StoreError> {
        let encoded = entries
            .iter()
            .map(|e| encode_as(VALUE_V2, e).map(|v| (e.message.priority(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.encode_err(e))?;
        let r = self.outbox.transaction(|outbox| {
            let mut keys = Vec::with_capacity(encoded.len());
            for (priority, value) in &encoded {
                let k = OutboxKey::new(*priority, outbox.generate_id()?);
                outbox.insert(&k.0, value.as_slice())?;
                keys.push(k);
            }
            Ok(keys)
        });
        self.tx_result(r)
    }

    /// Outbox entries in delivery order (priority, then age), and a
    /// description of each value that could not be read.
    pub fn outbox(&self) -> Result<Entries<OutboxEntry>, StoreError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in self.outbox.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            match (OutboxKey::from_raw(&k), decode_entry(&v)) {
                (Some(key), Ok(e)) => ok.push((key, e)),
                (None, _) => bad.push(format!("outbox key {k:?}: not an outbox key")),
                (_, Err(e)) => bad.push(format!("outbox key {k:?}: {e}")),
            }
        }
        Ok((ok, bad))
    }

    /// Rewrites an entry in place (its attempt count and last error).
    pub fn update(&self, key: OutboxKey, entry: &OutboxEntry) -> Result<(), StoreError> {
        let v = encode_as(VALUE_V2, entry).map_err(|e| self.encode_err(e))?;
        self.outbox.insert(key.0, v).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Discord confirmed these entries: they leave the outbox and each
    /// signal's receipt for the route is recorded, in one transaction.
    pub fn delivered(
        &self,
        done: &[(OutboxKey, &OutboxEntry)],
        message_id: Option<&str>,
        at: Ts,
    ) -> Result<(), StoreError> {
        let r = (&self.outbox, &self.signals).transaction(|(outbox, signals)| {
            for (key, entry) in done {
                outbox.remove(&key.0)?;
                let Message::Signal(s) = &entry.message else { continue };
                let Some(raw) = signals.get(s.id.as_bytes())? else { continue };
                let Ok(mut stored) = decode_stored_signal(&raw) else { continue };
                stored.receipts.retain(|r| r.route != entry.route);
                stored.receipts.push(Receipt {
                    route: entry.route.clone(),
                    message_id: message_id.map(str::to_string),
                    at,
                });
                let v = encode_as(VALUE_V2, &stored)
                    .map_err(|e| ConflictableTransactionError::Abort(format!("cannot encode a signal: {e}")))?;
                signals.insert(s.id.as_bytes(), v)?;
            }
            Ok(())
        });
        self.tx_result(r)
    }

    /// Moves entries from the outbox to the dead list with why, in one transaction.
    pub fn bury(&self, entries: &[(OutboxKey, OutboxEntry)], error: &str, died: Ts) -> Result<(), StoreError> {
        let encoded = entries
            .iter()
            .map(|(k, e)| {
                let d = DeadEntry { entry: e.clone(), error: error.to_string(), died };
                encode_as(VALUE_V2, &d).map(|v| (*k, v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.encode_err(e))?;
        let r = (&self.outbox, &self.dead).transaction(|(outbox, dead)| {
            for (k, v) in &encoded {
                outbox.remove(&k.0)?;
                dead.insert(&k.0, v.as_slice())?;
            }
            Ok(())
        });
        self.tx_result(r)
    }

    /// The dead list in priority and age order, and the values that could not be read.
    pub fn dead(&self) -> Result<Entries<DeadEntry>, StoreError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in self.dead.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let decoded = match v.split_first() {
                Some((&VALUE_V2, rest)) => postcard::from_bytes::<DeadEntry>(rest).map_err(|e| e.to_string()),
                Some((v, _)) => Err(format!("unknown value version {v}")),
                None => Err("empty value".into()),
            };
            match (OutboxKey::from_raw(&k), decoded) {
                (Some(key), Ok(d)) => ok.push((key, d)),
                (None, _) => bad.push(format!("dead key {k:?}: not an outbox key")),
                (_, Err(e)) => bad.push(format!("dead key {k:?}: {e}")),
            }
        }
        Ok((ok, bad))
    }

    /// Puts dead entries back in the outbox under their old keys (so they keep
    /// their place), with a fresh attempt count, due now.
    pub fn revive(&self, keys: &[OutboxKey], now: Ts) -> Result<usize, StoreError> {
        let (dead, _) = self.dead()?;
        let mut moves = Vec::new();
        for (k, d) in dead.into_iter().filter(|(k, _)| keys.contains(k)) {
            let mut e = d.entry;
            e.attempts = 0;
            e.not_before = now;
            e.last_error = Some(d.error);
            moves.push((k, encode_as(VALUE_V2, &e).map_err(|e| self.encode_err(e))?));
        }
        let r = (&self.outbox, &self.dead).transaction(|(outbox, dead)| {
            for (k, v) in &moves {
                dead.remove(&k.0)?;
                outbox.insert(&k.0, v.as_slice())?;
            }
            Ok(())
        });
        self.tx_result(r)?;
        Ok(moves.len())
    }

    /// Deletes dead entries for good.
    pub fn purge(&self, keys: &[OutboxKey]) -> Result<usize, StoreError> {
        let mut n = 0;
        for k in keys {
            if self.dead.remove(k.0).map_err(|e| self.err(e))?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StrategyParams;
    use crate::types::Side;

    /// The `n`th candle of `instrument` at `tf` from 2024-01-01 00:00 UTC,
    /// a buy on even candles and a sell on odd ones.
    pub(super) fn signal_at(instrument: &str, tf: Timeframe, n: i64) -> Signal {
        let i = Instrument::new(instrument).unwrap();
        let time = Ts(1_704_067_200 + n * tf.seconds());
        let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
        Signal {
            id: Signal::make_id(i, tf, time, side),
            instrument: i,
            timeframe: tf,
            time,
            side,
            price: 1.1,
            fast: 1.1,
            slow: 1.09,
            atr: 0.001,
            stop_loss: 1.0985,
            take_profit: 1.103,
            strategy: "sma 10/20".into(),
        }
    }

    /// EUR_USD:H4:2024-01-02T08:00:00Z:buy
    fn signal() -> Signal {
        signal_at("EUR_USD", Timeframe::H4, 8)
    }

    #[test]
    fn commit_is_idempotent_per_signal_id_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H4);
        let state = SeriesState::new(StrategyParams::default());
        let routes = vec![("signals".to_string(), 0), ("free".to_string(), 900)];
        {
            let (store, report) = Store::open(dir.path()).unwrap();
            assert!(report.created && report.moved_aside.is_none());
            let sig = signal();
            let c =
                CandleCommit { key, candle: None, state: &state, signal: Some(&sig), routes: &routes, now: Ts(100) };
            assert!(store.commit(&c).unwrap());
            assert!(!store.commit(&c).unwrap(), "the same signal id was queued twice");
            store.flush_blocking().unwrap();
        }
        let (store, report) = Store::open(dir.path()).unwrap();
        assert!(!report.created);
        let (series, bad) = store.load_series().unwrap();
        assert_eq!((series.len(), bad.len()), (1, 0));
        assert_eq!(series[0], (key, state));
        let (outbox, bad) = store.outbox().unwrap();
        assert!(bad.is_empty());
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox[1].1.not_before, Ts(1000));
        assert_eq!(store.signal(&signal().id).unwrap().map(|s| s.routes.len()), Some(2));
    }

    #[test]
    fn version_1_values_are_still_read() {
        #[derive(Serialize)]
        struct V1Entry {
            route: String,
            signal: Signal,
            created: Ts,
            not_before: Ts,
            attempts: u32,
        }
        #[derive(Serialize)]
        struct V1Signal {
            signal: Signal,
            routes: Vec<String>,
            committed: Ts,
        }
        let v1 = V1Entry { route: "r".into(), signal: signal(), created: Ts(5), not_before: Ts(6), attempts: 2 };
        let e = decode_entry(&encode(&v1).unwrap()).unwrap();
        assert_eq!(
            e,
            OutboxEntry {
                route: "r".into(),
                message: Message::Signal(signal()),
                created: Ts(5),
                not_before: Ts(6),
                attempts: 2,
                last_error: None
            }
        );
        let v1 = V1Signal { signal: signal(), routes: vec!["r".into()], committed: Ts(5) };
        let s = decode_stored_signal(&encode(&v1).unwrap()).unwrap();
        assert_eq!((s.routes, s.receipts), (vec!["r".to_string()], vec![]));
    }

    #[test]
    fn a_restart_starts_from_the_last_candles_and_the_newest_signals_with_their_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let eur = Instrument::new("EUR_USD").unwrap();
        let key = SeriesKey::new(eur, Timeframe::H1);
        // Signals first: the candles after them leave each series' last state.
        let routes = vec![("a".to_string(), 0), ("b".to_string(), 0)];
        let signals = [
            signal_at("EUR_USD", Timeframe::H1, 1),
            signal_at("EUR_USD", Timeframe::H1, 2),
            signal_at("EUR_USD", Timeframe::H1, 3),
            signal_at("GBP_USD", Timeframe::H4, 0),
            signal_at("GBP_USD", Timeframe::H4, 1),
            // Older than the newest three of all series.
            signal_at("USD_JPY", Timeframe::H1, 0),
        ];
        for s in &signals {
            let k = SeriesKey::new(s.instrument, s.timeframe);
            let c = CandleCommit {
                key: k,
                candle: None,
                state: &SeriesState::new(StrategyParams::default()),
                signal: Some(s),
                routes: &routes,
                now: Ts(2),
            };
            assert!(store.commit(&c).unwrap());
        }
        let mut state = SeriesState::new(StrategyParams::default());
        let mut last = None;
        for n in 0..3 {
            let close = 1.1 + n as f64 * 0.001;
            let candle = Candle {
                instrument: eur,
                timeframe: Timeframe::H1,
                time: Ts(1_704_067_200 + n * 3600),
                open: close - 0.0005,
                high: close + 0.001,
                low: close - 0.001,
                close,
                volume: 0.0,
            };
            state.step(&candle).unwrap();
            let c = CandleCommit { key, candle: Some(&candle), state: &state, signal: None, routes: &[], now: Ts(1) };
            store.commit(&c).unwrap();
            last = Some(candle);
        }
        // Written before the last candle was kept: resumed, but not shown.
        let gbp = SeriesKey::new(Instrument::new("GBP_USD").unwrap(), Timeframe::H4);
        store
            .commit(&CandleCommit { key: gbp, candle: None, state: &state, signal: None, routes: &[], now: Ts(1) })
            .unwrap();

        let (entries, _) = store.outbox().unwrap();
        let of = |id: &str, route: &str| {
            entries.iter().find(|(_, e)| e.message.id() == id && e.route == route).cloned().unwrap()
        };
        // The newest (GBP H4 at 04:00): a delivered, b given up on.
        let (ka, ea) = of(&signals[4].id, "a");
        store.delivered(&[(ka, &ea)], Some("m1"), Ts(3)).unwrap();
        store.bury(&[of(&signals[4].id, "b")], "404 Unknown Webhook", Ts(3)).unwrap();
        // EUR H1 at 03:00: b failed once, a still waiting.
        let (kb, mut eb) = of(&signals[2].id, "b");
        eb.attempts = 1;
        eb.last_error = Some("timed out".into());
        store.update(kb, &eb).unwrap();

        let view = store.restored_view(3, |_| true).unwrap();
        let only_eur = store.restored_view(3, |k| *k == key).unwrap();
        assert_eq!(only_eur.pairs.iter().map(|p| p.instrument).collect::<Vec<_>>(), [eur]);
        assert!(only_eur.signals.iter().all(|v| v.signal.instrument == eur));
        assert_eq!(only_eur.signals.len(), 3);
        let last = last.unwrap();
        let pair =
            |k: SeriesKey| view.pairs.iter().find(|p| p.instrument == k.instrument && p.timeframe == k.timeframe);
        // GBP_USD's state has no candle with it: its pair has only its last signal.
        assert_eq!(
            pair(gbp).map(|p| (p.candle, p.last_signal.as_ref().map(|s| &s.id))),
            Some((None, Some(&signals[4].id)))
        );
        let c = pair(key).and_then(|p| p.candle).expect("EUR_USD's last candle");
        assert_eq!((c.instrument, c.timeframe, c.time), (eur, Timeframe::H1, last.time));
        assert_eq!([c.open, c.high, c.low, c.close], [last.open, last.high, last.low, last.close]);
        assert_eq!((c.fast, c.slow, c.atr), state.values());

        let ids: Vec<&str> = view.signals.iter().map(|v| v.signal.id.as_str()).collect();
        assert_eq!(ids, [&signals[4].id, &signals[2].id, &signals[1].id], "the newest three, newest first");
        let states = |n: usize| -> Vec<(String, DeliveryState, Option<String>)> {
            view.signals[n].deliveries.iter().map(|d| (d.route.clone(), d.state, d.error.clone())).collect()
        };
        assert_eq!(
            states(0),
            [
                ("a".into(), DeliveryState::Delivered, None),
                ("b".into(), DeliveryState::Dead, Some("404 Unknown Webhook".into()))
            ]
        );
        assert_eq!(view.signals[0].deliveries[0].message_id.as_deref(), Some("m1"));
        assert_eq!(
            states(1),
            [("a".into(), DeliveryState::Queued, None), ("b".into(), DeliveryState::Failed, Some("timed out".into()))]
        );
        assert_eq!(pair(key).and_then(|p| p.last_signal.as_ref()).map(|s| &s.id), Some(&signals[2].id));
        // Out of the feed, still its pair's last signal.
        let jpy = SeriesKey::new(Instrument::new("USD_JPY").unwrap(), Timeframe::H1);
        assert_eq!(pair(jpy).and_then(|p| p.last_signal.as_ref()).map(|s| &s.id), Some(&signals[5].id));
        assert_eq!(pair(key).map(|p| p.bars.len()), Some(1), "no bars kept: the last candle's alone");

        // Bars kept at a stop come back when they end at the stored candle.
        let bar = |t: i64, close| Bar { time: Ts(t), close, fast: None, slow: None };
        let kept = vec![bar(last.time.0 - 3600, 1.0), bar(last.time.0, last.close)];
        let keep = |bars: Vec<Bar>| {
            let mut v = View::default();
            v.pair_mut(key.instrument, key.timeframe).bars = bars.into();
            store.keep_bars(&v).unwrap();
        };
        keep(kept.clone());
        let view = store.restored_view(3, |_| true).unwrap();
        let bars = view.pairs.iter().find(|p| p.key() == key).map(|p| Vec::from(p.bars.clone()));
        assert_eq!(bars.as_ref(), Some(&kept));
        // A later run that crashed went further than its last kept bars:
        // its last candle ends them.
        let next = Candle { time: Ts(last.time.0 + 3600), ..last };
        state.step(&next).unwrap();
        let c = CandleCommit { key, candle: Some(&next), state: &state, signal: None, routes: &[], now: Ts(1) };
        store.commit(&c).unwrap();
        let view = store.restored_view(3, |_| true).unwrap();
        let times = |view: &View| {
            view.pairs.iter().find(|p| p.key() == key).map(|p| p.bars.iter().map(|b| b.time).collect::<Vec<_>>())
        };
        assert_eq!(times(&view), Some(vec![kept[0].time, kept[1].time, next.time]));
        // Bars from past the stored candle (another data directory's) do not fit.
        keep(vec![bar(next.time.0 + 3600, 1.0)]);
        let view = store.restored_view(3, |_| true).unwrap();
        assert_eq!(times(&view), Some(vec![next.time]));
    }

    #[test]
    fn delivered_buried_revived_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let key = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H4);
        let state = SeriesState::new(StrategyParams::default());
        let routes = vec![("a".to_string(), 0), ("b".to_string(), 0)];
        let sig = signal();
        store
            .commit(&CandleCommit { key, candle: None, state: &state, signal: Some(&sig), routes: &routes, now: Ts(1) })
            .unwrap();
        let (entries, _) = store.outbox().unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|(k, _)| k.priority() == Priority::High));

        let (ka, ea) = &entries[0];
        store.delivered(&[(*ka, ea)], Some("99"), Ts(2)).unwrap();
        let stored = store.signal(&sig.id).unwrap().unwrap();
        assert_eq!(stored.receipts, vec![Receipt { route: "a".into(), message_id: Some("99".into()), at: Ts(2) }]);

        let (kb, eb) = entries[1].clone();
        store.bury(&[(kb, eb.clone())], "404 Unknown Webhook", Ts(3)).unwrap();
        assert!(store.outbox().unwrap().0.is_empty());
        let (dead, _) = store.dead().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].1.error.as_str(), dead[0].1.died), ("404 Unknown Webhook", Ts(3)));

        assert_eq!(store.revive(&[kb], Ts(10)).unwrap(), 1);
        let (back, _) = store.outbox().unwrap();
        assert_eq!(back[0].0, kb, "a revived entry keeps its place");
        assert_eq!((back[0].1.attempts, back[0].1.not_before), (0, Ts(10)));
        assert_eq!(back[0].1.last_error.as_deref(), Some("404 Unknown Webhook"));

        store.bury(&back, "again", Ts(11)).unwrap();
        assert_eq!(store.purge(&[kb]).unwrap(), 1);
        assert!(store.dead().unwrap().0.is_empty() && store.outbox().unwrap().0.is_empty());

        // Alerts are queued by priority: urgent sorts before signals.
        let alert = |severity| crate::event::Alert {
            id: format!("{severity}"),
            check: "c".into(),
            severity,
            state: crate::event::AlertState::Raised,
            title: "t".into(),
            message: "m".into(),
            time: Ts(1),
        };
        let entry = |m| OutboxEntry {
            route: "a".into(),
            message: m,
            created: Ts(1),
            not_before: Ts(1),
            attempts: 0,
            last_error: None,
        };
        use crate::types::Severity;
        store
            .enqueue(&[
                entry(Message::Alert(alert(Severity::Info))),
                entry(Message::Signal(sig.clone())),
                entry(Message::Alert(alert(Severity::Critical))),
                entry(Message::Alert(alert(Severity::Warning))),
            ])
            .unwrap();
        let order: Vec<String> = store.outbox().unwrap().0.iter().map(|(_, e)| e.message.id().to_string()).collect();
        assert_eq!(order, vec!["critical".to_string(), sig.id.clone(), "warning".into(), "info".into()]);
    }

    #[test]
    fn a_second_open_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _) = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&dir.path().display().to_string()) && err.contains("pipwatch attach"), "{err}");
    }

    #[test]
    fn a_full_disk_is_named_with_what_to_do() {
        // ENOSPC and EFBIG as the kernel reports them, and a quota as a filesystem may.
        let cases = [
            (std::io::Error::from_raw_os_error(28), "the disk is full (no space left", "Free some space and start"),
            (
                std::io::Error::from(std::io::ErrorKind::QuotaExceeded),
                "quota is used up",
                "have the quota raised and start",
            ),
            (
                std::io::Error::from_raw_os_error(27),
                "largest size allowed (a file size limit: `ulimit -f`",
                "Raise the limit and start",
            ),
        ];
        for (e, what, fix) in cases {
            let err = StoreError::db("/data/pw".into(), sled::Error::Io(e)).to_string();
            assert!(err.starts_with("data directory /data/pw: "), "{err}");
            assert!(err.contains(what) && err.contains(fix), "{err}");
            assert!(err.ends_with("every series resumes after its last stored candle"), "{err}");
        }
        let other =
            StoreError::db("/data/pw".into(), sled::Error::Io(std::io::Error::from_raw_os_error(5))).to_string();
        assert!(!other.contains("Free some space") && other.starts_with("data directory /data/pw: "), "{other}");
    }

    /// A device that refuses every write, as a full disk does: the open
    /// says so and leaves the directory where it is.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_disk_that_refuses_writes_at_open_is_named_and_nothing_is_moved() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink("/dev/full", data.join("db")).unwrap();
        let err = Store::open(&data).err().expect("a refused write is an error");
        assert!(matches!(err, StoreError::Full { .. }), "{err}");
        assert!(err.to_string().contains("the disk is full"), "{err}");
        assert!(std::fs::symlink_metadata(data.join("db")).unwrap().file_type().is_symlink(), "moved aside");
        let aside =
            std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name() != "data").count();
        assert_eq!(aside, 0, "nothing moved aside next to the directory");
    }

    /// Seqs go on across restarts: from the mark after a clean stop, past
    /// the gap after an unclean one.
    #[test]
    fn the_next_instance_starts_after_the_last_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            assert_eq!(store.seq_start(1000).unwrap(), 0, "a new database starts at 0");
            store.mark_seq(42, false).unwrap();
            store.flush_blocking().unwrap();
        }
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            assert_eq!(store.seq_start(1000).unwrap(), 1042, "after a crash, past the gap");
            store.mark_seq(1077, true).unwrap();
            store.flush_blocking().unwrap();
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(store.seq_start(1000).unwrap(), 1077, "after a clean stop, from the mark");
        store.meta.insert(SEQ_KEY, &b"bad"[..]).unwrap();
        assert_eq!(store.seq_start(1000).unwrap(), 1000);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            store.meta.insert("schema", &99u32.to_be_bytes()).unwrap();
            store.flush_blocking().unwrap();
        }
        let err = Store::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("schema 99"), "{err}");
    }

    #[test]
    fn unreadable_series_values_are_named_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        store.series.insert("EUR_USD:H4", &[7u8, 1, 2][..]).unwrap();
        let (ok, bad) = store.load_series().unwrap();
        assert!(ok.is_empty());
        assert_eq!(bad, vec!["series 'EUR_USD:H4': unknown value version 7".to_string()]);
    }
}

#[cfg(test)]
mod corruption {
    use super::*;

    #[test]
    fn a_corrupt_database_is_moved_aside_not_a_panic() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        {
            let (store, _) = Store::open(&dir).unwrap();
            for i in 0..200u32 {
                store.series.insert(format!("k{i}"), vec![1u8; 100]).unwrap();
            }
            store.flush_blocking().unwrap();
        }
        // Scribble over the whole data file, as a torn write or bad disk would.
        let db_file = dir.join("db");
        let len = std::fs::metadata(&db_file).unwrap().len() as usize;
        std::fs::write(&db_file, vec![0xA5u8; len]).unwrap();
        std::fs::write(dir.join("conf"), b"garbage").unwrap();
        let (store, report) = Store::open(&dir).unwrap();
        let aside = report.moved_aside.expect("the corrupt database was not moved aside");
        assert!(aside.exists() && aside.join("db").exists());
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with("data.corrupt-"));
        assert_eq!(store.series.len(), 0);
    }
}

#[cfg(test)]
mod cleaning {
    use super::*;
    use crate::engine::{Engine, Phase, StrategySet};
    use crate::event::Event;
    use crate::types::Candle;

    /// A busy demo's writes through the live path's calls: 28 series whose
    /// states are rewritten every close, and their signals, which pile up
    /// in leaves that nothing rewrites once they are full. Returns the data
    /// file's size at the end: once it is under `wait_for`, if given, or
    /// after 10 s of giving the cleaner time (a loaded machine runs it late).
    fn churn(dir: &Path, clean_every_ms: Option<u64>, wait_for: Option<u64>) -> u64 {
        let store = Store::with_trees(open_db_cleaning_every(dir, clean_every_ms).unwrap(), dir).unwrap();
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
                        .prepare(&CandleCommit { key: *key, candle: None, state, signal, routes: &[], now: time })
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

    /// With sled's cleaner off (as an earlier build had it), about half of
    /// this database is dead log that is never given back (5.2 MB against
    /// 2.6 MB here). The cleaner runs faster than in production so that the
    /// test does not have to write for minutes.
    #[test]
    fn a_busy_database_gets_its_dead_log_space_back() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let without = churn(a.path(), None, None);
        let with = churn(b.path(), Some(20), Some(without * 3 / 4));
        assert!(
            with * 4 < without * 3,
            "with the cleaner the file is {with} bytes, without it {without}: the cleaner freed too little"
        );
    }
}

#[cfg(test)]
mod retention {
    use super::tests::signal_at;
    use super::*;
    use crate::engine::StrategyParams;

    /// Commits `s` the way the live path does; true when it was new.
    fn commit(store: &Store, s: &Signal) -> bool {
        let state = SeriesState::new(StrategyParams::default());
        let routes = vec![("signals".to_string(), 0)];
        let c = CandleCommit {
            key: SeriesKey::new(s.instrument, s.timeframe),
            state: &state,
            candle: None,
            signal: Some(s),
            routes: &routes,
            now: s.time,
        };
        store.commit(&c).unwrap()
    }

    #[test]
    fn ids_name_their_series_and_candle_time() {
        let s = signal_at("USD_JPY", Timeframe::H12, 3);
        let key = SeriesKey::new(Instrument::new("USD_JPY").unwrap(), Timeframe::H12);
        assert_eq!(signal_series(s.id.as_bytes()), Some(key));
        assert_eq!(signal_time(s.id.as_bytes()), Some(s.time));
        assert_eq!(signal_at("EUR_USD", Timeframe::H4, 8).id, "EUR_USD:H4:2024-01-02T08:00:00Z:buy");
        assert_eq!(signal_series(b"not-an-id"), None);
        assert_eq!(signal_time(b"EUR_USD:H4:yesterday:buy"), None);
    }

    #[test]
    fn pruning_keeps_the_newest_per_series_and_pruned_signals_are_never_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let eur: Vec<_> = (0..30).map(|n| signal_at("EUR_USD", Timeframe::H1, n)).collect();
        // H1 and H12 ids sort next to each other: the runs must not mix.
        let eur12: Vec<_> = (0..12).map(|n| signal_at("EUR_USD", Timeframe::H12, n)).collect();
        let gbp: Vec<_> = (0..5).map(|n| signal_at("GBP_USD", Timeframe::H1, n)).collect();
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            for s in eur.iter().chain(&eur12).chain(&gbp) {
                assert!(commit(&store, s));
            }
            assert_eq!(store.prune_signals(10).unwrap(), 20 + 2);
            assert_eq!(store.signals.len(), 10 + 10 + 5);
            assert!(store.signal(&eur[19].id).unwrap().is_none(), "the oldest go");
            assert!(store.signal(&eur[20].id).unwrap().is_some(), "the newest ten stay");
            assert!(store.signal(&eur12[2].id).unwrap().is_some());
            assert!(store.signal(&gbp[0].id).unwrap().is_some(), "a short series is untouched");
            assert_eq!(store.prune_signals(10).unwrap(), 0, "nothing more to do");
            store.flush_blocking().unwrap();
        }
        // After a restart, as after a series that lost its state and starts
        // over: a pruned signal is not queued again, a kept one neither, and
        // a signal newer than the mark still is.
        let (store, _) = Store::open(dir.path()).unwrap();
        let queued = store.outbox().unwrap().0.len();
        assert!(!commit(&store, &eur[0]), "pruned long ago");
        assert!(!commit(&store, &eur[19]), "the newest pruned one");
        assert!(!commit(&store, &eur[25]), "still stored");
        assert_eq!(store.outbox().unwrap().0.len(), queued, "nothing queued twice");
        assert!(commit(&store, &signal_at("EUR_USD", Timeframe::H1, 30)), "a new candle's signal");
        assert!(commit(&store, &signal_at("GBP_USD", Timeframe::H1, -1)), "an unpruned series has no mark");
    }
}

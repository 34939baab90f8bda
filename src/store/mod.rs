//! The sled store. Only this module imports sled, so a later switch to another
//! embedded database touches one module.
//!
//! Trees: `series` (indicator state and last candle per series), `signals`
//! (signals by id, with their delivery receipts), `outbox` (notifications not
//! yet delivered, keyed by route), `dead` (given up), `meta` (schema version
//! and small kept facts). Its rooms: this file opens, locks, migrates and
//! flushes; `records` holds the value layouts and their one decode path;
//! `series` the commit path and stored signals; `outbox` the outbox and dead
//! list; `meta` the kept facts.

mod meta;
mod outbox;
mod records;
mod series;
mod trades;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use sled::transaction::TransactionError;

use crate::time::Ts;
use crate::types::SeriesKey;
pub use outbox::{Entries, Unconfirmed};
use records::parse_series_key;
pub use records::{DeadEntry, KeptBar, Message, OutboxEntry, OutboxKey, Priority, Receipt, StoredSignal};
use series::PRUNED_PREFIX;
pub use series::{CandleCommit, LoadedSeries, Prepared, SIGNALS_KEPT_PER_SERIES};
pub use trades::OUTCOMES_KEPT_PER_SERIES;

/// The on-disk layout this build writes and reads. 2: outbox and dead keys
/// begin with their route's tag (schema 1 is migrated on open).
pub const SCHEMA: u32 = 2;

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
    /// Each series' paper trading (its open trade) and its closed trades.
    trades: sled::Tree,
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
    /// A store with sled's log cleaner run every `clean_every_ms` (or never),
    /// for `benches/cleaner.rs`, which measures what the cleaner gives back.
    #[doc(hidden)]
    pub fn open_cleaning_every(dir: &Path, clean_every_ms: Option<u64>) -> Result<Store, StoreError> {
        let db =
            open_db_cleaning_every(dir, clean_every_ms).map_err(|e| StoreError::db(dir.display().to_string(), e))?;
        Store::with_trees(db, dir)
    }

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
            trades: tree("trades")?,
            outbox: tree("outbox")?,
            dead: tree("dead")?,
            meta,
            db,
            dir: dir.to_path_buf(),
            pruned: std::sync::RwLock::new(pruned),
            failed: Failed::default(),
        })
    }

    pub(super) fn err(&self, source: sled::Error) -> StoreError {
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
                if found < 2 {
                    let moved = self.migrate_outbox_keys(2)?;
                    self.flush_blocking()?;
                    tracing::info!(dir = %self.dir.display(), from = found, to = SCHEMA, entries = moved,
                        "data directory migrated: outbox and dead keys are now by route");
                }
            }
            None => {
                self.meta.insert("schema", &SCHEMA.to_be_bytes()).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
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

    pub(super) fn encode_err(&self, e: postcard::Error) -> StoreError {
        StoreError::Encode { dir: self.dir.display().to_string(), message: e.to_string() }
    }

    pub(super) fn tx_result<T>(&self, r: Result<T, TransactionError<String>>) -> Result<T, StoreError> {
        r.map_err(|e| match e {
            TransactionError::Storage(e) => self.err(e),
            TransactionError::Abort(message) => StoreError::Encode { dir: self.dir.display().to_string(), message },
        })
    }
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::records::*;
    use super::*;
    #[allow(unused_imports)]
    use crate::engine::SeriesState;
    use crate::engine::StrategyParams;
    #[allow(unused_imports)]
    use crate::event::{Alert, AlertState, DeliveryState, Signal};
    use crate::types::Side;
    #[allow(unused_imports)]
    use crate::types::{Candle, Instrument, Timeframe};
    #[allow(unused_imports)]
    use serde::Serialize;

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
            let c = CandleCommit {
                key,
                candle: None,
                state: &state,
                signal: Some(&sig),
                routes: &routes,
                now: Ts(100),
                priority: Priority::High,
            };
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
        // In route order now: the free channel's entry waits out its delay.
        let free = outbox.iter().find(|(_, e)| e.route == "free").map(|(_, e)| e.not_before);
        assert_eq!(free, Some(Ts(1000)));
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
    fn delivered_buried_revived_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let key = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H4);
        let state = SeriesState::new(StrategyParams::default());
        let routes = vec![("a".to_string(), 0), ("b".to_string(), 0)];
        let sig = signal();
        store
            .commit(&CandleCommit {
                key,
                candle: None,
                state: &state,
                signal: Some(&sig),
                routes: &routes,
                now: Ts(1),
                priority: Priority::High,
            })
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
                (Priority::Low, entry(Message::Alert(alert(Severity::Info)))),
                (Priority::High, entry(Message::Signal(sig.clone()))),
                (Priority::Urgent, entry(Message::Alert(alert(Severity::Critical)))),
                (Priority::Normal, entry(Message::Alert(alert(Severity::Warning)))),
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
        store.meta.insert("seq", &b"bad"[..]).unwrap();
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
    #[allow(unused_imports)]
    use super::records::*;
    use super::*;
    #[allow(unused_imports)]
    use crate::engine::SeriesState;
    #[allow(unused_imports)]
    use crate::event::{Alert, AlertState, DeliveryState, Signal};
    #[allow(unused_imports)]
    use crate::types::{Candle, Instrument, Timeframe};
    #[allow(unused_imports)]
    use serde::Serialize;

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
mod retention {
    #[allow(unused_imports)]
    use super::records::*;
    use super::tests::signal_at;
    use super::*;
    #[allow(unused_imports)]
    use crate::engine::SeriesState;
    use crate::engine::StrategyParams;
    #[allow(unused_imports)]
    use crate::event::{Alert, AlertState, DeliveryState, Signal};
    #[allow(unused_imports)]
    use crate::types::{Candle, Instrument, Timeframe};
    #[allow(unused_imports)]
    use serde::Serialize;

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
            priority: Priority::High,
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

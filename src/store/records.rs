//! The store's records: what each tree holds, and how values are encoded.
//! Every value starts with a format version byte; older versions are still
//! read, through one decode path ([`decode_versioned`]).

use serde::{Deserialize, Serialize};

use crate::engine::SeriesState;
use crate::event::{Alert, Signal, Trade};
use crate::time::Ts;
use crate::types::{Instrument, SeriesKey, Timeframe};

pub(super) const VALUE_V1: u8 = 1;
/// Outbox entries that carry alerts as well as signals, stored signals with
/// their delivery receipts, and series states with their last candle's open,
/// high and low. Version 1 values of all three are still read.
pub(super) const VALUE_V2: u8 = 2;

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
    pub(super) fn from_byte(b: u8) -> Priority {
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
    /// A closed paper trade, as a message of its own (routes taking `outcome`).
    Outcome(Trade),
    /// The signal's message on this route, edited to show how its trade
    /// ended (the signal's id is the trade's).
    Edit(Trade),
    /// A signal not yet sent whose trade closed meanwhile (a delayed
    /// route): sent once, with its outcome.
    Closed(Signal, Trade),
}

impl Message {
    pub fn id(&self) -> &str {
        match self {
            Message::Signal(s) | Message::Closed(s, _) => &s.id,
            Message::Alert(a) => &a.id,
            Message::Outcome(t) | Message::Edit(t) => &t.id,
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

/// An outbox (or dead) key: the route's tag, then priority, then a
/// sled-generated id. A route's entries are one run of keys (its worker
/// reads only those, however much other routes have queued), in delivery
/// order: by priority, then by age.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxKey(pub(super) [u8; 13]);

/// A route's tag in outbox keys: FNV-1a of its name. Stable across builds
/// and platforms (it is on disk). Two names with one tag only share a run
/// of keys; readers still check each entry's route.
pub(super) fn route_tag(route: &str) -> [u8; 4] {
    let mut h: u32 = 0x811c_9dc5;
    for b in route.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_be_bytes()
}

impl OutboxKey {
    pub(super) fn new(route: &str, priority: Priority, id: u64) -> Self {
        let mut k = [0u8; 13];
        k[..4].copy_from_slice(&route_tag(route));
        k[4] = priority as u8;
        k[5..].copy_from_slice(&id.to_be_bytes());
        OutboxKey(k)
    }

    pub(super) fn from_raw(raw: &[u8]) -> Option<Self> {
        Some(OutboxKey(raw.try_into().ok()?))
    }

    pub fn priority(&self) -> Priority {
        Priority::from_byte(self.0[4])
    }
}

impl AsRef<[u8]> for OutboxKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A schema-1 outbox key: priority, then id (no route).
pub(super) fn key_v1_parts(raw: &[u8]) -> Option<(Priority, u64)> {
    let (&p, id) = raw.split_first()?;
    Some((Priority::from_byte(p), u64::from_be_bytes(id.try_into().ok()?)))
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

/// One recent close of a series, as the console's sparkline and chart keep it
/// (the layout `meta`'s kept bars are stored in).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptBar {
    pub time: Ts,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub fast: Option<f64>,
    pub slow: Option<f64>,
}

/// A kept bar as versions before the candlestick chart stored it: the close only.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptClose {
    pub time: Ts,
    pub close: f64,
    pub fast: Option<f64>,
    pub slow: Option<f64>,
}

impl From<KeptClose> for KeptBar {
    fn from(b: KeptClose) -> Self {
        KeptBar { time: b.time, open: b.close, high: b.close, low: b.close, close: b.close, fast: b.fast, slow: b.slow }
    }
}

/// The one way a stored value is read: version 2 as itself, version 1 in its
/// old layout made new by `upgrade`, anything else named.
pub(super) fn decode_versioned<T, Old>(bytes: &[u8], upgrade: impl FnOnce(Old) -> T) -> Result<T, String>
where
    T: for<'de> Deserialize<'de>,
    Old: for<'de> Deserialize<'de>,
{
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => postcard::from_bytes::<Old>(rest).map(upgrade).map_err(|e| e.to_string()),
        Some((&VALUE_V2, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

pub(super) fn decode_entry(bytes: &[u8]) -> Result<OutboxEntry, String> {
    decode_versioned(bytes, |v1: OutboxEntryV1| OutboxEntry {
        route: v1.route,
        message: Message::Signal(v1.signal),
        created: v1.created,
        not_before: v1.not_before,
        attempts: v1.attempts,
        last_error: None,
    })
}

/// A series value: its state, and from version 2 on the open, high and low
/// of the candle that made it.
pub(super) fn decode_series(bytes: &[u8]) -> Result<(SeriesState, Option<[f64; 3]>), String> {
    // Version 1 had no open, high and low: NaN stands for them, and is never a price.
    let (state, ohl): (SeriesState, [f64; 3]) = decode_versioned(bytes, |state: SeriesState| (state, [f64::NAN; 3]))?;
    Ok((state, (!ohl[0].is_nan()).then_some(ohl)))
}

pub(super) fn decode_stored_signal(bytes: &[u8]) -> Result<StoredSignal, String> {
    decode_versioned(bytes, |v1: StoredSignalV1| StoredSignal {
        signal: v1.signal,
        routes: v1.routes,
        committed: v1.committed,
        receipts: Vec::new(),
    })
}

/// A dead entry (version 2 only: the dead list came with it).
pub(super) fn decode_dead(bytes: &[u8]) -> Result<DeadEntry, String> {
    decode_versioned(bytes, |never: DeadEntry| never)
}

/// An alert kept in `meta` (version 1 layout, the only one).
pub(super) fn decode_alert(bytes: &[u8]) -> Result<Alert, String> {
    decode(bytes)
}

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, postcard::Error> {
    encode_as(VALUE_V1, v)
}

pub(super) fn encode_as<T: Serialize>(version: u8, v: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![version];
    out.extend(postcard::to_stdvec(v)?);
    Ok(out)
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VALUE_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown value version {v}")),
        None => Err("empty value".into()),
    }
}

pub(super) fn series_key(k: &SeriesKey) -> String {
    format!("{}:{}", k.instrument, k.timeframe)
}

pub(super) fn parse_series_key(raw: &[u8]) -> Option<SeriesKey> {
    let s = std::str::from_utf8(raw).ok()?;
    let (i, tf) = s.split_once(':')?;
    Some(SeriesKey::new(Instrument::new(i).ok()?, tf.parse::<Timeframe>().ok()?))
}

/// The series of a signal id (`EUR_USD:H4:2024-01-02T08:00:00Z:buy`).
pub(super) fn signal_series(id: &[u8]) -> Option<SeriesKey> {
    let mut colons = id.iter().enumerate().filter(|(_, b)| **b == b':').map(|(i, _)| i);
    let _ = colons.next()?;
    parse_series_key(&id[..colons.next()?])
}

/// The candle time of a signal id.
pub(super) fn signal_time(id: &[u8]) -> Option<Ts> {
    let s = std::str::from_utf8(id).ok()?;
    let (rest, _side) = s.rsplit_once(':')?;
    let mut parts = rest.splitn(3, ':');
    let (_, _, time) = (parts.next()?, parts.next()?, parts.next()?);
    Ts::parse_rfc3339(time)
}

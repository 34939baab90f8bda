//! `meta`: small kept facts — the schema, the notifier's pause, the last
//! seq published, alerts still open, and the pairs' recent closes.

use super::records::*;
use super::{Store, StoreError};
use crate::event::{Alert, AlertState};
use crate::types::SeriesKey;

/// `meta` keys of alerts raised and not yet resolved, by check.
const ALERT_PREFIX: &str = "alert:";
/// In `meta`: the last seq published, and whether the instance stopped cleanly.
const SEQ_KEY: &str = "seq";
/// In `meta`: notifications paused (1) or not.
const PAUSED_KEY: &str = "paused";
/// In `meta`: each series' recent closes as the console last showed them
/// (see `keep_bars`).
/// Kept bars with their candles (open, high, low, close).
const BARS_KEY: &str = "candles";
/// Kept closes, as versions before the candlestick chart wrote them.
const CLOSES_KEY: &str = "bars";

impl Store {
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
    pub fn keep_bars<'a>(&self, bars: impl Iterator<Item = (SeriesKey, &'a [KeptBar])>) -> Result<(), StoreError> {
        let named: Vec<(String, &[KeptBar])> = bars.map(|(k, b)| (series_key(&k), b)).collect();
        let value = encode(&named).map_err(|e| self.encode_err(e))?;
        self.meta.insert(BARS_KEY, value).map_err(|e| self.err(e))?;
        self.meta.remove(CLOSES_KEY).map_err(|e| self.err(e))?;
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
            match decode_alert(&v) {
                Ok(a) => ok.push(a),
                Err(e) => {
                    bad.push(format!("{}: {e}", String::from_utf8_lossy(&k)));
                    self.meta.remove(k).map_err(|e| self.err(e))?;
                }
            }
        }
        Ok((ok, bad))
    }

    /// The recent closes `keep_bars` kept, by series (none if unreadable:
    /// they are for display only).
    pub fn kept_bars(&self) -> Result<std::collections::HashMap<SeriesKey, Vec<KeptBar>>, StoreError> {
        let named = match self.meta.get(BARS_KEY).map_err(|e| self.err(e))? {
            Some(v) => decode::<Vec<(String, Vec<KeptBar>)>>(&v).unwrap_or_default(),
            None => match self.meta.get(CLOSES_KEY).map_err(|e| self.err(e))? {
                Some(v) => decode::<Vec<(String, Vec<super::records::KeptClose>)>>(&v)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, bars)| (k, bars.into_iter().map(KeptBar::from).collect()))
                    .collect(),
                None => return Ok(Default::default()),
            },
        };
        Ok(named.into_iter().filter_map(|(k, b)| Some((parse_series_key(k.as_bytes())?, b))).collect())
    }
}

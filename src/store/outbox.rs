//! The outbox (notifications not yet delivered) and the dead list (given
//! up, with why), both keyed by route, priority and age ([`OutboxKey`]).

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::records::*;
use super::{Store, StoreError};
use crate::event::DeliveryState;
use crate::time::Ts;

/// Readable entries in key order, and a description of each unreadable one.
pub type Entries<T> = (Vec<(OutboxKey, T)>, Vec<String>);

/// A delivery not confirmed by Discord: waiting in the outbox, or given up on.
#[derive(Clone, Debug, PartialEq)]
pub struct Unconfirmed {
    pub route: String,
    /// `Queued` (never tried), `Failed` (tried, waiting) or `Dead`.
    pub state: DeliveryState,
    pub attempts: u32,
    pub error: Option<String>,
}

impl Store {
    /// Queues notifications (alerts; signals are queued by `commit_all`) in
    /// one transaction. Not durable until `flush`.
    pub fn enqueue(&self, entries: &[(Priority, OutboxEntry)]) -> Result<Vec<OutboxKey>, StoreError> {
        let encoded = entries
            .iter()
            .map(|(p, e)| encode_as(VALUE_V2, e).map(|v| (*p, e.route.as_str(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.encode_err(e))?;
        let r = self.outbox.transaction(|outbox| {
            let mut keys = Vec::with_capacity(encoded.len());
            for (priority, route, value) in &encoded {
                let k = OutboxKey::new(route, *priority, outbox.generate_id()?);
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

    /// One route's entries in delivery order: a scan of its own keys only,
    /// however much other routes have queued.
    pub fn outbox_for(&self, route: &str) -> Result<Entries<OutboxEntry>, StoreError> {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in self.outbox.scan_prefix(route_tag(route)) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            match (OutboxKey::from_raw(&k), decode_entry(&v)) {
                // Another route whose name shares the tag.
                (Some(_), Ok(e)) if e.route != route => {}
                (Some(key), Ok(e)) => ok.push((key, e)),
                (None, _) => bad.push(format!("outbox key {k:?}: not an outbox key")),
                (_, Err(e)) => bad.push(format!("outbox key {k:?}: {e}")),
            }
        }
        Ok((ok, bad))
    }

    /// Signals delivered to `route` in Discord's message `message_id` (a
    /// batch carries several), oldest first: what an edit of that message
    /// must show again. A scan of the kept signals: edits are rare.
    pub fn signals_in_message(&self, route: &str, message_id: &str) -> Result<Vec<StoredSignal>, StoreError> {
        let mut out = Vec::new();
        for item in self.signals.iter().values() {
            let v = item.map_err(|e| self.err(e))?;
            let Ok(s) = decode_stored_signal(&v) else { continue };
            if s.receipts.iter().any(|r| r.route == route && r.message_id.as_deref() == Some(message_id)) {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.signal.time);
        Ok(out)
    }

    /// Takes entries off the outbox (an edit done, or dropped). Not durable until `flush`.
    pub fn remove_entries(&self, keys: &[OutboxKey]) -> Result<(), StoreError> {
        for k in keys {
            self.outbox.remove(k.0).map_err(|e| self.err(e))?;
        }
        Ok(())
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
                let (Message::Signal(s) | Message::Closed(s, _)) = &entry.message else { continue };
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
            match (OutboxKey::from_raw(&k), decode_dead(&v)) {
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

    /// Deliveries not confirmed, by (message id, route): waiting in the
    /// outbox (failed once they have been tried) or given up on.
    pub fn unconfirmed(&self) -> Result<std::collections::HashMap<(String, String), Unconfirmed>, StoreError> {
        let mut found = std::collections::HashMap::new();
        for (_, e) in self.outbox()?.0 {
            let state = if e.attempts > 0 { DeliveryState::Failed } else { DeliveryState::Queued };
            let u = Unconfirmed { route: e.route.clone(), state, attempts: e.attempts, error: e.last_error.clone() };
            found.insert((e.message.id().to_string(), e.route), u);
        }
        for (_, d) in self.dead()?.0 {
            let route = d.entry.route.clone();
            let u = Unconfirmed { route, state: DeliveryState::Dead, attempts: d.entry.attempts, error: Some(d.error) };
            found.insert((d.entry.message.id().to_string(), d.entry.route), u);
        }
        Ok(found)
    }

    /// Schema 1 to 2: outbox and dead keys gain their route's tag (see
    /// [`OutboxKey`]), keeping their priority and id, so each entry keeps its
    /// place in its route's queue. Read first, then rewritten in one
    /// transaction with the schema mark, so a crash leaves either the old
    /// layout with schema 1 or the new one with schema 2. An entry whose
    /// route cannot be read keeps its value under the tag of no route: still
    /// listed as unreadable, never lost.
    pub(super) fn migrate_outbox_keys(&self, to_schema: u32) -> Result<usize, StoreError> {
        let mut moves: Vec<(bool, sled::IVec, Vec<u8>, sled::IVec)> = Vec::new();
        for (dead, tree) in [(false, &self.outbox), (true, &self.dead)] {
            for item in tree.iter() {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let Some((priority, id)) = key_v1_parts(&k) else { continue };
                let route =
                    if dead { decode_dead(&v).map(|d| d.entry.route) } else { decode_entry(&v).map(|e| e.route) };
                let mut new = OutboxKey::new("", priority, id);
                new.0[..4].copy_from_slice(&route.as_deref().map_or([0xff; 4], route_tag));
                moves.push((dead, k, new.0.to_vec(), v));
            }
        }
        let r = (&self.outbox, &self.dead, &self.meta).transaction(|(outbox, dead, meta)| {
            for (is_dead, old, new, v) in &moves {
                let tree = if *is_dead { dead } else { outbox };
                tree.remove(old)?;
                tree.insert(new.as_slice(), v)?;
            }
            meta.insert("schema", &to_schema.to_be_bytes())?;
            Ok::<_, ConflictableTransactionError<String>>(())
        });
        self.tx_result(r)?;
        Ok(moves.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Alert, AlertState};
    use crate::types::Severity;

    fn entry(route: &str, id: &str) -> (Priority, OutboxEntry) {
        let alert = Alert {
            id: id.into(),
            check: "disk".into(),
            severity: Severity::Warning,
            state: AlertState::Raised,
            title: "t".into(),
            message: "m".into(),
            time: Ts(1),
        };
        let e = OutboxEntry {
            route: route.into(),
            message: Message::Alert(alert),
            created: Ts(1),
            not_before: Ts(1),
            attempts: 0,
            last_error: None,
        };
        (Priority::Normal, e)
    }

    /// A route's worker reads its own run of keys, in order, and nothing of
    /// the others' however many they have.
    #[test]
    fn a_route_reads_only_its_own_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let mut all = Vec::new();
        for n in 0..50 {
            all.push(entry("busy", &format!("b{n}")));
        }
        all.push(entry("quiet", "q1"));
        all.push(entry("quiet2", "q2"));
        all.push(entry("quiet", "q3"));
        store.enqueue(&all).unwrap();
        let ids = |route: &str| -> Vec<String> {
            store.outbox_for(route).unwrap().0.iter().map(|(_, e)| e.message.id().to_string()).collect()
        };
        assert_eq!(ids("quiet"), ["q1", "q3"]);
        assert_eq!(ids("quiet2"), ["q2"]);
        assert_eq!(ids("busy").len(), 50);
        assert!(ids("nobody").is_empty());
        assert_eq!(store.outbox().unwrap().0.len(), 53);
        // The scan is by the route's own key prefix.
        let (keys, _) = store.outbox_for("quiet").unwrap();
        assert!(keys.iter().all(|(k, _)| k.0[..4] == route_tag("quiet")));
    }
}

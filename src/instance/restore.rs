//! The view a restarted instance starts from: what the console showed when
//! its data directory was last used, read back from the store's records.

use crate::event::Event;
use crate::store::{KeptBar, OUTCOMES_KEPT_PER_SERIES, Store, StoreError, Unconfirmed};
use crate::types::SeriesKey;
use crate::view::{Bar, CLOSES_KEPT, RouteDelivery, View};

/// Each series' last candle with its indicators, its recent closes, and the
/// newest `signals` signals with their deliveries. A restarted instance
/// starts its view from this, so a console or an `attach` does not show
/// blank pairs until the next candle closes (hours away on H4) and no
/// signals at all. Only the series `wanted` are shown: one taken out of the
/// config would otherwise stay on the console, frozen, for good.
pub fn restored_view(store: &Store, signals: usize, wanted: impl Fn(&SeriesKey) -> bool) -> Result<View, StoreError> {
    let mut view = View::default();
    // Bars kept at the last stop, or (after a crash) a few seconds before
    // it: the store may have gone further, and its last candle then ends
    // them. Bars from past the stored candle do not fit.
    let mut kept = store.kept_bars()?;
    for record in store.last_candles()? {
        let key = SeriesKey::new(record.instrument, record.timeframe);
        if !wanted(&key) {
            continue;
        }
        if let Some(mut bars) = kept.remove(&key).filter(|b| b.last().is_some_and(|b| b.time <= record.time)) {
            // The stored candle ends them: applied below, as any candle.
            bars.retain(|b| b.time < record.time);
            let skip = bars.len().saturating_sub(CLOSES_KEPT - 1);
            view.pair_mut(key.instrument, key.timeframe).bars = bars.into_iter().skip(skip).map(bar).collect();
        }
        view.apply_event(&Event::Candle(record));
    }
    // Each series' newest signal is its pair's "last signal", also when the
    // newest `signals` of all series (the feed) leave it out.
    let (mut recent, mut newest) = (Vec::new(), Vec::new());
    for key in store.series_keys()?.into_iter().filter(|k| wanted(k)) {
        let mine = store.newest_signals(&key, signals)?;
        newest.extend(mine.first().map(|s| s.signal.clone()));
        recent.extend(mine);
    }
    recent.sort_by(|a, b| (b.signal.time, &b.signal.id).cmp(&(a.signal.time, &a.signal.id)));
    recent.truncate(signals);
    let mut unconfirmed = store.unconfirmed()?;
    // Oldest first, as the events came: the view keeps the newest first.
    for s in recent.into_iter().rev() {
        view.apply_event(&Event::Signal(s.signal.clone()));
        let deliveries = s
            .routes
            .iter()
            .filter_map(|route| match s.receipts.iter().find(|r| &r.route == route) {
                Some(r) => Some(RouteDelivery {
                    route: route.clone(),
                    state: crate::event::DeliveryState::Delivered,
                    // Not kept with the receipt: at least the one that delivered it.
                    attempts: 1,
                    message_id: r.message_id.clone(),
                    error: None,
                }),
                None => unconfirmed.remove(&(s.signal.id.clone(), route.clone())).map(delivery),
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
    // Each series' record over its kept closed trades, and the feed's
    // signals with their outcomes.
    for key in store.series_keys()?.into_iter().filter(|k| wanted(k)) {
        let outcomes = store.outcomes(&key, OUTCOMES_KEPT_PER_SERIES)?;
        if outcomes.is_empty() {
            continue;
        }
        let pair = view.pair_mut(key.instrument, key.timeframe);
        for t in &outcomes {
            pair.record.add(t.r);
        }
        for t in outcomes {
            if let Some(v) = view.signals.iter_mut().find(|v| v.signal.id == t.id) {
                v.outcome = Some(t);
            }
        }
    }
    Ok(view)
}

/// Keeps the view's recent closes in the store (see `Store::keep_bars`).
pub fn keep_bars(store: &Store, view: &View) -> Result<(), StoreError> {
    let bars: Vec<(SeriesKey, Vec<KeptBar>)> = view
        .pairs
        .iter()
        .map(|p| {
            let kept = p.bars.iter().map(|b| KeptBar {
                time: b.time,
                open: b.open,
                high: b.high,
                low: b.low,
                close: b.close,
                fast: b.fast,
                slow: b.slow,
            });
            (p.key(), kept.collect())
        })
        .collect();
    store.keep_bars(bars.iter().map(|(k, b)| (*k, b.as_slice())))
}

fn bar(b: KeptBar) -> Bar {
    Bar { time: b.time, open: b.open, high: b.high, low: b.low, close: b.close, fast: b.fast, slow: b.slow }
}

fn delivery(u: Unconfirmed) -> RouteDelivery {
    RouteDelivery { route: u.route, state: u.state, attempts: u.attempts, message_id: None, error: u.error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SeriesState, StrategyParams};
    use crate::event::{DeliveryState, Signal};
    use crate::store::{CandleCommit, Priority};
    use crate::time::Ts;
    use crate::types::{Candle, Instrument, Side, Timeframe};

    fn signal_at(instrument: &str, tf: Timeframe, n: i64) -> Signal {
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
                priority: Priority::High,
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
            let c = CandleCommit {
                key,
                candle: Some(&candle),
                state: &state,
                signal: None,
                routes: &[],
                now: Ts(1),
                priority: Priority::High,
            };
            store.commit(&c).unwrap();
            last = Some(candle);
        }
        // Written before the last candle was kept: resumed, but not shown.
        let gbp = SeriesKey::new(Instrument::new("GBP_USD").unwrap(), Timeframe::H4);
        store
            .commit(&CandleCommit {
                key: gbp,
                candle: None,
                state: &state,
                signal: None,
                routes: &[],
                now: Ts(1),
                priority: Priority::High,
            })
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

        let view = restored_view(&store, 3, |_| true).unwrap();
        let only_eur = restored_view(&store, 3, |k| *k == key).unwrap();
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
        let bar =
            |t: i64, close| Bar { time: Ts(t), open: close, high: close, low: close, close, fast: None, slow: None };
        // The stored candle ends them, with its open, high and low.
        let stored = Bar { open: last.open, high: last.high, low: last.low, ..bar(last.time.0, last.close) };
        let kept = vec![bar(last.time.0 - 3600, 1.0), stored];
        let keep = |bars: Vec<Bar>| {
            let mut v = View::default();
            v.pair_mut(key.instrument, key.timeframe).bars = bars.into();
            keep_bars(&store, &v).unwrap();
        };
        keep(kept.clone());
        let view = restored_view(&store, 3, |_| true).unwrap();
        let bars = view.pairs.iter().find(|p| p.key() == key).map(|p| Vec::from(p.bars.clone()));
        assert_eq!(bars.as_ref(), Some(&kept));
        // A later run that crashed went further than its last kept bars:
        // its last candle ends them.
        let next = Candle { time: Ts(last.time.0 + 3600), ..last };
        state.step(&next).unwrap();
        let c = CandleCommit {
            key,
            candle: Some(&next),
            state: &state,
            signal: None,
            routes: &[],
            now: Ts(1),
            priority: Priority::High,
        };
        store.commit(&c).unwrap();
        let view = restored_view(&store, 3, |_| true).unwrap();
        let times = |view: &View| {
            view.pairs.iter().find(|p| p.key() == key).map(|p| p.bars.iter().map(|b| b.time).collect::<Vec<_>>())
        };
        assert_eq!(times(&view), Some(vec![kept[0].time, kept[1].time, next.time]));
        // Bars from past the stored candle (another data directory's) do not fit.
        keep(vec![bar(next.time.0 + 3600, 1.0)]);
        let view = restored_view(&store, 3, |_| true).unwrap();
        assert_eq!(times(&view), Some(vec![next.time]));
    }
}

//! The view: everything a console shows, as a fold of events.
//!
//! The server keeps one to answer a WebSocket client's `snapshot`; the
//! console (in-process or attached) folds the same events into its own. Since
//! both sides run this one function, a local and a remote console cannot
//! differ.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::event::{
    Alert, AlertState, CandleRecord, DeliveryState, Envelope, Event, FeedStatus, HealthSample, QueueStatus, Signal,
};
use crate::types::{Instrument, Quote, Timeframe};

/// Recent closes kept per pair, for sparklines and the detail chart.
pub const CLOSES_KEPT: usize = 240;
/// Recent signals kept, newest first.
pub const SIGNALS_KEPT: usize = 100;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairView {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    /// The latest closed candle with its indicator values.
    pub candle: Option<CandleRecord>,
    pub quote: Option<Quote>,
    pub last_signal: Option<Signal>,
    /// Recent closed candles with their MAs, oldest first (sparkline, detail chart).
    pub bars: VecDeque<Bar>,
    pub rejected: u64,
    /// The series' closed paper trades (live, and kept across restarts).
    #[serde(default)]
    pub record: Record,
}

/// A series' track record: its closed paper trades, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub trades: u64,
    pub wins: u64,
    /// The sum of R.
    pub r: f64,
}

impl Record {
    pub fn add(&mut self, r: f64) {
        self.trades += 1;
        self.wins += u64::from(r > 0.0);
        self.r += r;
    }

    /// wins / trades, if there were any.
    pub fn win_rate(&self) -> Option<f64> {
        (self.trades > 0).then(|| self.wins as f64 / self.trades as f64)
    }
}

impl PairView {
    pub fn key(&self) -> crate::types::SeriesKey {
        crate::types::SeriesKey::new(self.instrument, self.timeframe)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub time: crate::time::Ts,
    /// The candle's open, high and low, for the candlestick chart (0 in a
    /// bar kept by a version that had closes only: drawn as its close).
    #[serde(default)]
    pub open: f64,
    #[serde(default)]
    pub high: f64,
    #[serde(default)]
    pub low: f64,
    pub close: f64,
    pub fast: Option<f64>,
    pub slow: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteDelivery {
    pub route: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalView {
    pub signal: Signal,
    pub deliveries: Vec<RouteDelivery>,
    /// Its paper trade, once closed; until then the trade is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::event::Trade>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The seq of the last event folded in.
    pub seq: u64,
    pub feed: Option<FeedStatus>,
    /// Sorted by instrument, then timeframe.
    pub pairs: Vec<PairView>,
    /// Newest first.
    pub signals: VecDeque<SignalView>,
    pub queue: Option<QueueStatus>,
    /// Raised or acknowledged, newest first; a resolved alert leaves.
    pub alerts: Vec<Alert>,
    pub health: Option<HealthSample>,
}

impl View {
    /// A demo's clock: its newest candle's time. A demo is a time-lapse, so
    /// its dates run ahead of the wall clock (or, playing history, behind it).
    pub fn demo_clock(&self) -> Option<crate::time::Ts> {
        if self.feed.as_ref().is_none_or(|f| f.source != "demo") {
            return None;
        }
        self.newest_candle()
    }

    /// The time of the newest candle of any pair.
    pub fn newest_candle(&self) -> Option<crate::time::Ts> {
        self.pairs.iter().filter_map(|p| p.candle.map(|c| c.time)).max()
    }

    /// The pair's entry, made if it has none yet.
    pub fn pair_mut(&mut self, instrument: Instrument, timeframe: Timeframe) -> &mut PairView {
        let at = match self
            .pairs
            .binary_search_by(|p| (p.instrument.as_str(), p.timeframe).cmp(&(instrument.as_str(), timeframe)))
        {
            Ok(i) => i,
            Err(i) => {
                self.pairs.insert(
                    i,
                    PairView {
                        instrument,
                        timeframe,
                        candle: None,
                        quote: None,
                        last_signal: None,
                        bars: VecDeque::new(),
                        rejected: 0,
                        record: Record::default(),
                    },
                );
                i
            }
        };
        &mut self.pairs[at]
    }

    pub fn apply(&mut self, env: &Envelope) {
        self.seq = self.seq.max(env.seq);
        self.apply_event(&env.event);
    }

    pub fn apply_event(&mut self, event: &Event) {
        match event {
            Event::Candle(c) => {
                let p = self.pair_mut(c.instrument, c.timeframe);
                p.candle = Some(*c);
                if p.bars.len() == CLOSES_KEPT {
                    p.bars.pop_front();
                }
                p.bars.push_back(Bar {
                    time: c.time,
                    open: c.open,
                    high: c.high,
                    low: c.low,
                    close: c.close,
                    fast: c.fast,
                    slow: c.slow,
                });
            }
            Event::Quote(q) => {
                for p in self.pairs.iter_mut().filter(|p| p.instrument == q.instrument) {
                    p.quote = Some(*q);
                }
            }
            Event::Signal(s) => {
                self.pair_mut(s.instrument, s.timeframe).last_signal = Some(s.clone());
                if self.signals.iter().any(|v| v.signal.id == s.id) {
                    return;
                }
                if self.signals.len() == SIGNALS_KEPT {
                    self.signals.pop_back();
                }
                self.signals.push_front(SignalView { signal: s.clone(), deliveries: Vec::new(), outcome: None });
            }
            Event::Rejected(r) => self.pair_mut(r.instrument, r.timeframe).rejected = r.count,
            Event::Feed(f) => self.feed = Some(f.clone()),
            Event::Alert(a) => {
                self.alerts.retain(|x| x.id != a.id);
                if a.state != AlertState::Resolved {
                    self.alerts.insert(0, a.clone());
                }
            }
            Event::Delivery(d) => {
                let Some(v) = self.signals.iter_mut().find(|v| v.signal.id == d.id) else { return };
                let r = RouteDelivery {
                    route: d.route.clone(),
                    state: d.state,
                    attempts: d.attempts,
                    message_id: d.message_id.clone(),
                    error: d.error.clone(),
                };
                match v.deliveries.iter_mut().find(|x| x.route == d.route) {
                    Some(x) => *x = r,
                    None => v.deliveries.push(r),
                }
            }
            Event::Queue(q) => self.queue = Some(q.clone()),
            Event::Health(h) => self.health = Some(h.clone()),
            Event::Outcome(t) => {
                let p = self.pair_mut(t.instrument, t.timeframe);
                p.record.add(t.r);
                if let Some(v) = self.signals.iter_mut().find(|v| v.signal.id == t.id) {
                    v.outcome = Some(t.clone());
                }
            }
        }
    }

    pub fn alert(&self, id: &str) -> Option<&Alert> {
        self.alerts.iter().find(|a| a.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Delivery;
    use crate::time::Ts;
    use crate::types::{Severity, Side};

    fn candle(i: &str, tf: Timeframe, t: i64, close: f64) -> Event {
        Event::Candle(CandleRecord {
            instrument: Instrument::new(i).unwrap(),
            timeframe: tf,
            time: Ts(t),
            open: close,
            high: close,
            low: close,
            close,
            fast: None,
            slow: None,
            atr: None,
        })
    }

    #[test]
    fn the_fold_keeps_what_a_console_needs() {
        let mut v = View::default();
        for (n, e) in [
            candle("USD_JPY", Timeframe::H1, 0, 150.0),
            candle("EUR_USD", Timeframe::H4, 0, 1.1),
            candle("EUR_USD", Timeframe::H1, 0, 1.2),
        ]
        .iter()
        .enumerate()
        {
            v.apply(&Envelope { seq: n as u64 + 1, event: e.clone() });
        }
        let names: Vec<String> = v.pairs.iter().map(|p| format!("{}:{}", p.instrument, p.timeframe)).collect();
        assert_eq!(names, ["EUR_USD:H1", "EUR_USD:H4", "USD_JPY:H1"]);
        assert_eq!(v.seq, 3);

        let i = Instrument::new("EUR_USD").unwrap();
        v.apply_event(&Event::Quote(Quote { instrument: i, time: Ts(1), bid: 1.0, ask: 1.1 }));
        assert!(v.pairs[..2].iter().all(|p| p.quote.is_some()) && v.pairs[2].quote.is_none());

        let s = Signal {
            id: "EUR_USD:H1:1970-01-01T00:00:00Z:buy".into(),
            instrument: i,
            timeframe: Timeframe::H1,
            time: Ts(0),
            side: Side::Buy,
            price: 1.2,
            fast: 1.2,
            slow: 1.1,
            atr: 0.01,
            stop_loss: 1.185,
            take_profit: 1.23,
            strategy: "sma 10/20".into(),
        };
        v.apply_event(&Event::Signal(s.clone()));
        v.apply_event(&Event::Signal(s.clone()));
        assert_eq!(v.signals.len(), 1, "a signal is listed once");
        for state in [DeliveryState::Queued, DeliveryState::Delivered] {
            v.apply_event(&Event::Delivery(Delivery {
                id: s.id.clone(),
                route: "r".into(),
                state,
                attempts: 1,
                message_id: None,
                error: None,
                latency_secs: None,
            }));
        }
        assert_eq!(v.signals[0].deliveries.len(), 1);
        assert_eq!(v.signals[0].deliveries[0].state, DeliveryState::Delivered);
        assert_eq!(v.pairs[0].last_signal.as_ref(), Some(&s));

        let mut a = Alert {
            id: "a1".into(),
            check: "feed".into(),
            severity: Severity::Warning,
            state: AlertState::Raised,
            title: "t".into(),
            message: "m".into(),
            time: Ts(0),
        };
        v.apply_event(&Event::Alert(a.clone()));
        a.state = AlertState::Acknowledged;
        v.apply_event(&Event::Alert(a.clone()));
        assert_eq!(v.alerts, vec![a.clone()]);
        a.state = AlertState::Resolved;
        v.apply_event(&Event::Alert(a));
        assert!(v.alerts.is_empty());
    }

    #[test]
    fn closes_are_bounded() {
        let mut v = View::default();
        for t in 0..(CLOSES_KEPT as i64 + 10) {
            v.apply_event(&candle("EUR_USD", Timeframe::H1, t, t as f64));
        }
        let p = &v.pairs[0];
        assert_eq!(p.bars.len(), CLOSES_KEPT);
        assert_eq!(p.bars.front().map(|b| b.close), Some(10.0));
    }
}

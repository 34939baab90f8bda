//! The hub: a bounded broadcast of events with their seq numbers, and the
//! one fold of them that every snapshot is taken from.
//!
//! Who folds: the hub, as it publishes. `View::apply` runs under the same
//! lock that assigns the seq, so the hub's view is always exactly "every
//! event up to `last()`". A consumer that keeps a view of its own (the
//! console, in-process or attached) folds the events it receives into it,
//! and when it falls behind it is handed the hub's view instead of a gap:
//! [`Subscription::recv`] turns a lag into [`Received::Resync`] and then
//! skips what the snapshot already holds. That is the lag contract of the
//! WebSocket too (`lagged`, then a `snapshot`, then live events).
//!
//! Who feeds metrics: the observers given to [`Hub::with_observer`], called
//! for every event as it is published, so what `/metrics` counts does not
//! depend on any consumer keeping up, nor on whether the server runs.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::event::{Envelope, Event};
use crate::view::View;

/// Called with every event as it is published, in seq order.
pub type Observer = Box<dyn Fn(&Envelope) + Send + Sync>;

struct State {
    /// The seq of the last event published.
    seq: u64,
    /// Every event up to `seq`, folded onto the restored view.
    view: View,
}

/// A bounded broadcast of events. Publishing never waits for a consumer: one
/// that falls more than `capacity` behind is given a fresh view instead, so
/// a slow console or client cannot slow the engine.
pub struct Hub {
    tx: broadcast::Sender<Arc<Envelope>>,
    // NOTE: seq assignment, the fold and the send happen under this one lock,
    // so the order of `seq` is the order of the channel even with several
    // publishers, and a snapshot is never between an event's fold and its send.
    state: Arc<Mutex<State>>,
    /// The seq before this hub's first event: an instance that resumes a
    /// data directory goes on after the last one's seqs, so that a client's
    /// `?since=` from before a restart still means something.
    start: u64,
    observers: Vec<Observer>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while folding leaves the view as it was half-way: still the
    // best there is, and every later event goes on correcting it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Hub::starting_after(capacity, 0)
    }

    /// A hub whose first event is `start + 1`.
    pub fn starting_after(capacity: usize, start: u64) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let view = View { seq: start, ..Default::default() };
        Hub { tx, state: Arc::new(Mutex::new(State { seq: start, view })), start, observers: Vec::new() }
    }

    /// This hub, starting from the view that a restart resumes from (see
    /// `restore::restored_view`). Its seq is the hub's start.
    pub fn with_restored(self, view: View) -> Self {
        lock(&self.state).view = View { seq: self.start, ..view };
        self
    }

    /// Adds an observer (see the module's note on metrics). Observers run
    /// under the hub's lock: they must be quick and must not publish.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observers.push(observer);
        self
    }

    /// The seq before this hub's first event.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The seq of the last event published (`start` before any).
    pub fn last(&self) -> u64 {
        lock(&self.state).seq
    }

    /// Publishes and returns the event's seq.
    pub fn publish(&self, event: Event) -> u64 {
        let mut state = lock(&self.state);
        state.seq += 1;
        let env = Arc::new(Envelope { seq: state.seq, event });
        state.view.apply(&env);
        for observe in &self.observers {
            observe(&env);
        }
        // An error only means nobody is subscribed right now, which is fine.
        let _ = self.tx.send(env);
        state.seq
    }

    /// Every event so far, folded: what a new client or a lagging one is sent.
    pub fn snapshot(&self) -> View {
        lock(&self.state).view.clone()
    }

    /// Reads the view in place, without a copy. `f` runs under the hub's
    /// lock, so the engine waits for it: keep it short.
    pub fn read<R>(&self, f: impl FnOnce(&View) -> R) -> R {
        f(&lock(&self.state).view)
    }

    /// The events published from now on.
    pub fn subscribe(&self) -> Subscription {
        let state = lock(&self.state);
        Subscription { rx: self.tx.subscribe(), state: self.state.clone(), after: state.seq }
    }

    /// The view so far and the events after it, taken at one point: a
    /// consumer that starts from the view and folds what follows misses
    /// nothing and sees nothing twice.
    pub fn subscribe_with_view(&self) -> (View, Subscription) {
        let state = lock(&self.state);
        let sub = Subscription { rx: self.tx.subscribe(), state: self.state.clone(), after: state.seq };
        (state.view.clone(), sub)
    }
}

/// What a [`Subscription`] hands on.
#[derive(Debug)]
pub enum Received {
    Event(Arc<Envelope>),
    /// The subscriber fell behind by `missed` events; `view` is the hub's
    /// fold as of `view.seq`, and what follows is every event after it.
    Resync {
        missed: u64,
        view: Box<View>,
    },
}

impl Received {
    /// The event, if this is one (tests and consumers that only count).
    pub fn into_event(self) -> Option<Arc<Envelope>> {
        match self {
            Received::Event(env) => Some(env),
            Received::Resync { .. } => None,
        }
    }
}

/// A hub subscription that turns a lag into a fresh view (see the module's note).
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Envelope>>,
    state: Arc<Mutex<State>>,
    /// Events up to this seq are already in what the subscriber holds.
    after: u64,
}

impl Subscription {
    /// The next event, or a resync after a lag; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            match self.rx.recv().await {
                Ok(env) if env.seq <= self.after => continue,
                Ok(env) => return Some(Received::Event(env)),
                Err(RecvError::Lagged(missed)) => return Some(self.resync(missed)),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// What is already waiting, without waiting; `None` if nothing is (or
    /// the hub is gone).
    pub fn try_recv(&mut self) -> Option<Received> {
        loop {
            match self.rx.try_recv() {
                Ok(env) if env.seq <= self.after => continue,
                Ok(env) => return Some(Received::Event(env)),
                Err(TryRecvError::Lagged(missed)) => return Some(self.resync(missed)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn resync(&mut self, missed: u64) -> Received {
        let view = lock(&self.state).view.clone();
        // What is still in the channel up to here is in the view already.
        self.after = view.seq;
        Received::Resync { missed, view: Box::new(view) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FeedState, FeedStatus, Signal};
    use crate::time::Ts;
    use crate::types::{Instrument, Side, Timeframe};

    fn feed(n: u64) -> Event {
        Event::Feed(FeedStatus::new("demo", FeedState::Live, Some(n.to_string())))
    }

    fn signal(n: i64) -> Event {
        let i = Instrument::new("EUR_USD").unwrap();
        let time = Ts(1_704_067_200 + 3600 * n);
        Event::Signal(Signal {
            id: Signal::make_id(i, Timeframe::H1, time, Side::Buy),
            instrument: i,
            timeframe: Timeframe::H1,
            time,
            side: Side::Buy,
            price: 1.1,
            fast: 1.1,
            slow: 1.0,
            atr: 0.001,
            stop_loss: 1.09,
            take_profit: 1.12,
            strategy: "sma 2/3".into(),
        })
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_resynced_and_sees_nothing_twice() {
        let hub = Hub::new(2);
        let mut sub = hub.subscribe();
        for n in 0..5 {
            hub.publish(feed(n));
        }
        match sub.recv().await {
            Some(Received::Resync { missed, view }) => {
                assert_eq!(missed, 3);
                assert_eq!(view.seq, 5);
                assert_eq!(*view, hub.snapshot());
            }
            other => panic!("expected a resync, got {other:?}"),
        }
        // Seqs 4 and 5 are still in the channel, but in the view already.
        assert!(sub.try_recv().is_none());
        hub.publish(feed(5));
        match sub.recv().await {
            Some(Received::Event(env)) => assert_eq!(env.seq, 6),
            other => panic!("expected seq 6, got {other:?}"),
        }
        let json = serde_json::to_string(&Envelope { seq: 9, event: feed(1) }).unwrap();
        assert!(json.starts_with(r#"{"seq":9,"type":"feed""#), "{json}");
    }

    /// A subscriber that folds what it is handed, resyncs included, ends
    /// with the hub's own view, however far behind it fell.
    #[tokio::test]
    async fn a_fold_that_lags_ends_equal_to_the_hub() {
        let hub = Hub::starting_after(8, 100);
        let (mut view, mut sub) = hub.subscribe_with_view();
        assert_eq!(view.seq, 100);
        let mut resyncs = 0;
        for n in 0..200 {
            hub.publish(if n % 7 == 0 { signal(n) } else { feed(n as u64) });
            // Reads one event in three: it falls behind again and again.
            if n % 3 == 0 {
                match sub.try_recv() {
                    Some(Received::Event(env)) => view.apply(&env),
                    Some(Received::Resync { view: v, .. }) => {
                        resyncs += 1;
                        view = *v;
                    }
                    None => {}
                }
            }
        }
        while let Some(r) = sub.try_recv() {
            match r {
                Received::Event(env) => view.apply(&env),
                Received::Resync { view: v, .. } => view = *v,
            }
        }
        assert!(resyncs > 0, "the test must make the subscriber lag");
        assert_eq!(view, hub.snapshot());
        assert_eq!(view.seq, 300);
        assert_eq!(view.signals.len(), 29);
    }

    #[test]
    fn observers_see_every_event_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub = Hub::new(1).with_observer({
            let seen = seen.clone();
            Box::new(move |env: &Envelope| seen.lock().unwrap().push(env.seq))
        });
        for n in 0..10 {
            hub.publish(feed(n));
        }
        assert_eq!(*seen.lock().unwrap(), (1..=10).collect::<Vec<_>>());
    }
}

//! Proof that the engine loop is turning: the loop touches it on every turn
//! (and on an idle tick while it waits for candles hours apart), and the
//! health task reads how long ago that was. The systemd watchdog and the
//! heartbeat URL are fed from this alone, never from the outside world's
//! state, so an outage (a webhook down, OANDA unreachable) cannot turn into
//! a restart loop: only a stuck or dead loop stops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the engine loop touches its liveness while idle.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

/// How long without a turn before the loop counts as stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Liveness {
    start: Instant,
    /// Milliseconds from `start` at the last turn; `ENDED` once the loop
    /// has failed, `FINISHED` once its input ran out (the end of a CSV: the
    /// instance goes on serving, and nothing is stuck).
    last: Arc<AtomicU64>,
}

const ENDED: u64 = u64::MAX;
const FINISHED: u64 = u64::MAX - 1;

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness { start: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    /// The loop turned.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(FINISHED - 1).min(FINISHED - 1);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// The loop has failed: no longer alive.
    pub fn end(&self) {
        self.last.store(ENDED, Ordering::Relaxed);
    }

    /// The loop's input ran out: it has nothing more to do, and is not stuck.
    pub fn finish(&self) {
        self.last.store(FINISHED, Ordering::Relaxed);
    }

    /// How long since the loop last turned (zero once finished); `None`
    /// once it has failed.
    pub fn since(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            ENDED => None,
            FINISHED => Some(Duration::ZERO),
            ms => Some(self.start.elapsed().saturating_sub(Duration::from_millis(ms))),
        }
    }

    /// Turning recently enough to be fed to a watchdog.
    pub fn alive(&self) -> bool {
        self.since().is_some_and(|d| d < STALLED_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_while_touched_and_not_after_the_end() {
        let l = Liveness::new();
        l.touch();
        assert!(l.alive() && l.since().unwrap() < Duration::from_secs(1));
        l.finish();
        assert!(l.alive(), "a finished feed is not a stuck loop");
        l.end();
        assert!(!l.alive() && l.since().is_none());
        let stale = Liveness { start: Instant::now() - Duration::from_secs(60), last: Arc::new(AtomicU64::new(0)) };
        assert!(!stale.alive(), "untouched for a minute");
    }
}

//! Discord's rate limits, kept pre-emptively from the response headers so a
//! 429 is the exception, and each route's circuit breaker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::discord::RateHeaders;
use crate::event::Circuit;

/// Slack on top of a reset time: the server's clock and ours tick apart.
const RESET_SLACK: Duration = Duration::from_millis(30);

#[derive(Debug, Default)]
struct Bucket {
    name: Option<String>,
    remaining: Option<u32>,
    reset_at: Option<Instant>,
    /// From a 429: nothing goes before this.
    blocked_until: Option<Instant>,
}

/// Rate-limit state per webhook (Discord keys webhook buckets by the webhook's
/// id and token, so the webhook identifies the bucket), plus the global
/// back-off that a global 429 imposes on every request.
#[derive(Default)]
pub struct Limits {
    buckets: Mutex<HashMap<String, Bucket>>,
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    global_until: Mutex<Option<Instant>>,
}

impl Limits {
    /// The lock that keeps one request in flight per webhook, also when
    /// several routes post to the same one.
    pub fn lane(&self, webhook: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.entry(webhook.to_string()).or_default().clone()
    }

    /// When a request to `webhook` may go: `None` means now.
    pub fn ready_at(&self, webhook: &str, now: Instant) -> Option<Instant> {
        let global = *self.global_until.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.get(webhook);
        let blocked = b.and_then(|b| b.blocked_until);
        let exhausted = b.and_then(|b| match (b.remaining, b.reset_at) {
            (Some(0), Some(at)) => Some(at + RESET_SLACK),
            _ => None,
        });
        [global, blocked, exhausted].into_iter().flatten().filter(|&t| t > now).max()
    }

    /// A request is going out: count it before the answer says so, in case
    /// the answer carries no headers.
    pub fn sent(&self, webhook: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = buckets.get_mut(webhook).and_then(|b| b.remaining.as_mut()) {
            *r = r.saturating_sub(1);
        }
    }

    /// Takes in an answer's headers.
    pub fn update(&self, webhook: &str, now: Instant, h: &RateHeaders) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(webhook.to_string()).or_default();
        if h.bucket.is_some() {
            b.name.clone_from(&h.bucket);
        }
        if let Some(r) = h.remaining {
            b.remaining = Some(r);
            b.reset_at = h.reset_after.map(|d| now + d);
        }
        if b.blocked_until.is_some_and(|t| t <= now) {
            b.blocked_until = None;
        }
    }

    /// A 429: hold this webhook (or everything, for a global one) for `wait`.
    pub fn rate_limited(&self, webhook: &str, now: Instant, wait: Duration, global: bool) {
        let until = now + wait;
        if global {
            let mut g = self.global_until.lock().unwrap_or_else(|p| p.into_inner());
            *g = Some(g.map_or(until, |t| t.max(until)));
        } else {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let b = buckets.entry(webhook.to_string()).or_default();
            b.blocked_until = Some(b.blocked_until.map_or(until, |t| t.max(until)));
        }
    }
}

/// A route's circuit breaker: after `threshold` failures in a row it opens
/// for `cooldown`, then lets one probe through (half-open); the probe's
/// success closes it, its failure opens it again.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: Circuit,
    failures: u32,
    open_until: Option<Instant>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { state: Circuit::Closed, failures: 0, open_until: None, threshold: threshold.max(1), cooldown }
    }

    pub fn state(&self) -> Circuit {
        self.state
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a request may go now; if not, when to ask again.
    pub fn allow(&mut self, now: Instant) -> Result<(), Instant> {
        match (self.state, self.open_until) {
            (Circuit::Open, Some(until)) if now < until => Err(until),
            (Circuit::Open, _) => {
                self.state = Circuit::HalfOpen;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub fn success(&mut self) {
        self.state = Circuit::Closed;
        self.failures = 0;
        self.open_until = None;
    }

    /// Records a failure; returns true when this one opened the circuit.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.failures += 1;
        let open = self.state == Circuit::HalfOpen || self.failures >= self.threshold;
        if open {
            let was_open = self.state == Circuit::Open;
            self.state = Circuit::Open;
            self.open_until = Some(now + self.cooldown);
            return !was_open;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_bucket_waits_for_its_reset() {
        let l = Limits::default();
        let now = Instant::now();
        assert_eq!(l.ready_at("w", now), None);
        let h = |remaining| RateHeaders {
            limit: Some(5),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_secs(2)),
            ..RateHeaders::default()
        };
        l.update("w", now, &h(1));
        assert_eq!(l.ready_at("w", now), None);
        l.sent("w");
        assert_eq!(l.ready_at("w", now), Some(now + Duration::from_secs(2) + RESET_SLACK));
        l.update("w", now, &h(0));
        assert_eq!(l.ready_at("other", now), None, "buckets are per webhook");
        assert_eq!(l.ready_at("w", now + Duration::from_secs(3)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_its_webhook_and_a_global_one_holds_all() {
        let l = Limits::default();
        let now = Instant::now();
        l.rate_limited("w", now, Duration::from_secs(40), false);
        assert_eq!(l.ready_at("w", now), Some(now + Duration::from_secs(40)));
        assert_eq!(l.ready_at("x", now), None);
        // A later, shorter reset from the headers does not shorten a 429's wait.
        l.update("w", now, &RateHeaders { remaining: Some(5), ..RateHeaders::default() });
        assert_eq!(l.ready_at("w", now), Some(now + Duration::from_secs(40)));
        l.rate_limited("w", now, Duration::from_secs(1), true);
        assert_eq!(l.ready_at("x", now), Some(now + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_probes_and_closes() {
        let mut b = Breaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(!b.failure(t0) && !b.failure(t0));
        assert_eq!(b.state(), Circuit::Closed);
        assert!(b.failure(t0), "the third failure in a row opens it");
        assert_eq!(b.allow(t0 + Duration::from_secs(10)), Err(t0 + Duration::from_secs(30)));
        assert_eq!(b.allow(t0 + Duration::from_secs(30)), Ok(()));
        assert_eq!(b.state(), Circuit::HalfOpen);
        let t1 = t0 + Duration::from_secs(31);
        assert!(b.failure(t1), "a failed probe opens it again");
        assert_eq!(b.allow(t1 + Duration::from_secs(29)), Err(t1 + Duration::from_secs(30)));
        assert_eq!(b.allow(t1 + Duration::from_secs(30)), Ok(()));
        b.success();
        assert_eq!((b.state(), b.failures()), (Circuit::Closed, 0));
    }
}

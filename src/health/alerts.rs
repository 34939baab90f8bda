//! Threshold alerts: raised once a value has stayed past a threshold for
//! `sustain`, repeated only after `cooldown`, resolved once it has stayed back
//! (below the threshold less a hysteresis margin) for `sustain`. That is what
//! keeps a value hovering at a threshold from flapping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::{Alert, AlertState};
use crate::time::Ts;
use crate::types::Severity;

/// Warning and critical thresholds; a value at or above one crosses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub warning: f64,
    pub critical: f64,
}

impl Limits {
    fn threshold(&self, s: Severity) -> f64 {
        match s {
            Severity::Critical => self.critical,
            _ => self.warning,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub sustain: Duration,
    pub cooldown: Duration,
    /// A raised alert resolves only below `threshold * (1 - hysteresis)`.
    pub hysteresis: f64,
}

#[derive(Debug, Default)]
struct State {
    /// The episode: its id, severity and when it was last sent.
    raised: Option<(String, Severity, Instant)>,
    /// A level seen, and since when, before it has lasted `sustain`.
    pending: Option<(Severity, Instant)>,
    /// Back to normal since.
    clear_since: Option<Instant>,
}

/// What one check reads like to a person.
pub struct Describe<'a> {
    pub check: &'a str,
    pub title: &'a str,
    /// The value as a person reads it, e.g. "92.5%".
    pub shown: String,
    /// The threshold as a person reads it, per severity.
    pub limit_shown: &'a dyn Fn(Severity) -> String,
}

#[derive(Debug)]
pub struct AlertEngine {
    rules: Rules,
    states: HashMap<String, State>,
}

impl AlertEngine {
    pub fn new(rules: Rules) -> Self {
        AlertEngine { rules, states: HashMap::new() }
    }

    /// Feeds one reading; returns an alert to raise or resolve, if any.
    pub fn check(&mut self, d: &Describe<'_>, value: f64, limits: Limits, now: Instant, ts: Ts) -> Option<Alert> {
        let st = self.states.entry(d.check.to_string()).or_default();
        let raw = if value >= limits.critical {
            Some(Severity::Critical)
        } else if value >= limits.warning {
            Some(Severity::Warning)
        } else {
            None
        };
        // Hysteresis: a raised level holds until the value is clearly back.
        let held = st
            .raised
            .as_ref()
            .and_then(|(_, s, _)| (value >= limits.threshold(*s) * (1.0 - self.rules.hysteresis)).then_some(*s));
        let level = raw.max(held);
        let raised = st.raised.as_ref().map(|(_, s, _)| *s);
        let alert = |id: String, severity, state, message: String| Alert {
            id,
            check: d.check.to_string(),
            severity,
            state,
            title: d.title.to_string(),
            message,
            time: ts,
        };
        match (level, raised) {
            (Some(l), r) if r.is_none_or(|r| l > r) => {
                st.clear_since = None;
                // The level that has lasted: the lowest seen since the streak began.
                let (l, since) = match st.pending {
                    Some((p, since)) if l >= p && r.is_none_or(|r| p > r) => (p, since),
                    _ => {
                        st.pending = Some((l, now));
                        (l, now)
                    }
                };
                if now.duration_since(since) < self.rules.sustain {
                    return None;
                }
                st.pending = None;
                let id = st.raised.as_ref().map_or_else(|| format!("{}:{ts}", d.check), |(id, _, _)| id.clone());
                st.raised = Some((id.clone(), l, now));
                let message = format!(
                    "{} is {} (the {} threshold is {}) and has been for {}",
                    d.title,
                    d.shown,
                    l,
                    (d.limit_shown)(l),
                    humantime::format_duration(Duration::from_secs(self.rules.sustain.as_secs()))
                );
                Some(alert(id, l, AlertState::Raised, message))
            }
            (Some(_), Some(r)) => {
                st.pending = None;
                st.clear_since = None;
                let (id, _, last) = st.raised.as_mut()?;
                if now.duration_since(*last) < self.rules.cooldown {
                    return None;
                }
                *last = now;
                let message =
                    format!("{} is still {} (the {} threshold is {})", d.title, d.shown, r, (d.limit_shown)(r));
                Some(alert(id.clone(), r, AlertState::Raised, message))
            }
            (None, Some(r)) => {
                st.pending = None;
                let since = *st.clear_since.get_or_insert(now);
                if now.duration_since(since) < self.rules.sustain {
                    return None;
                }
                st.clear_since = None;
                let (id, _, _) = st.raised.take()?;
                let message = format!("{} is back to {}", d.title, d.shown);
                Some(alert(id, r, AlertState::Resolved, message))
            }
            (None, None) => {
                st.pending = None;
                st.clear_since = None;
                None
            }
            // Covered by the first arm's guard: a level at or below the raised one.
            (Some(_), None) => None,
        }
    }

    /// Goes on with an episode raised before a restart: it is not raised
    /// (and sent) again, repeats wait out the cooldown from `sent`, and it
    /// resolves as any other once the value is back.
    pub fn restore(&mut self, alert: &Alert, sent: Instant) {
        let st = self.states.entry(alert.check.clone()).or_default();
        *st = State { raised: Some((alert.id.clone(), alert.severity, sent)), ..State::default() };
    }

    /// Whether `check`'s current episode is `id`.
    pub fn holds(&self, check: &str, id: &str) -> bool {
        self.states.get(check).and_then(|s| s.raised.as_ref()).is_some_and(|(i, _, _)| i == id)
    }

    /// Checks that were raised and are no longer fed (a series that went
    /// away): resolve them so nothing stays raised forever.
    pub fn forget(&mut self, check: &str) {
        self.states.remove(check);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { warning: 80.0, critical: 95.0 };

    fn rules() -> Rules {
        Rules { sustain: Duration::from_secs(30), cooldown: Duration::from_secs(600), hysteresis: 0.05 }
    }

    struct Clock {
        start: Instant,
        engine: AlertEngine,
    }

    impl Clock {
        fn feed(&mut self, at_secs: u64, value: f64) -> Option<(Severity, AlertState, String)> {
            let shown = |s: Severity| format!("{}%", LIMITS.threshold(s));
            let d = Describe { check: "cpu", title: "CPU", shown: format!("{value}%"), limit_shown: &shown };
            let now = self.start + Duration::from_secs(at_secs);
            self.engine.check(&d, value, LIMITS, now, Ts(at_secs as i64)).map(|a| (a.severity, a.state, a.id))
        }
    }

    fn clock() -> Clock {
        Clock { start: Instant::now(), engine: AlertEngine::new(rules()) }
    }

    #[test]
    fn raised_only_when_sustained_then_once_then_resolved() {
        let mut c = clock();
        assert_eq!(c.feed(0, 85.0), None, "not yet sustained");
        assert_eq!(c.feed(10, 50.0), None);
        assert_eq!(c.feed(20, 85.0), None, "the dip restarted the wait");
        assert_eq!(c.feed(40, 85.0), None);
        let raised = c.feed(50, 85.0).unwrap();
        assert_eq!((raised.0, raised.1), (Severity::Warning, AlertState::Raised));
        for t in (52..600).step_by(2) {
            assert_eq!(c.feed(t, 86.0), None, "raised twice within the cooldown at {t}s");
        }
        let again = c.feed(650, 86.0).unwrap();
        assert_eq!((again.1, &again.2), (AlertState::Raised, &raised.2), "repeated after the cooldown, same episode");
        assert_eq!(c.feed(660, 10.0), None, "not resolved until it stays back");
        let resolved = c.feed(700, 10.0).unwrap();
        assert_eq!((resolved.1, &resolved.2), (AlertState::Resolved, &raised.2));
        assert_eq!(c.feed(800, 10.0), None);
    }

    /// An episode from before a restart: no second raise, the cooldown runs
    /// from when it was last sent, and it resolves under its own id.
    #[test]
    fn a_restored_episode_goes_on() {
        let mut c = clock();
        let before = Alert {
            id: "cpu:earlier".into(),
            check: "cpu".into(),
            severity: Severity::Warning,
            state: AlertState::Acknowledged,
            title: "CPU".into(),
            message: "m".into(),
            time: Ts(0),
        };
        // Last sent 500 s before this run's clock starts.
        let start = c.start;
        c.start = start + Duration::from_secs(500);
        c.engine.restore(&before, start);
        assert!(c.engine.holds("cpu", "cpu:earlier"));
        for t in (0..100).step_by(2) {
            assert_eq!(c.feed(t, 86.0), None, "raised again at {t}s after the restart");
        }
        let again = c.feed(100, 86.0).unwrap();
        assert_eq!(
            (again.1, again.2.as_str()),
            (AlertState::Raised, "cpu:earlier"),
            "repeated 600 s after it was sent"
        );
        c.feed(110, 10.0);
        let resolved = c.feed(140, 10.0).unwrap();
        assert_eq!((resolved.1, resolved.2.as_str()), (AlertState::Resolved, "cpu:earlier"));
        assert!(!c.engine.holds("cpu", "cpu:earlier"));
    }

    #[test]
    fn hysteresis_stops_flapping_at_the_threshold() {
        let mut c = clock();
        c.feed(0, 81.0);
        assert!(c.feed(30, 81.0).is_some());
        // 79 is below 80 but above 80 * 0.95 = 76: still raised, no resolve, no re-raise.
        for t in (31..500).step_by(1) {
            let v = if t % 2 == 0 { 79.0 } else { 81.0 };
            assert_eq!(c.feed(t, v), None, "flapped at {t}s");
        }
    }

    #[test]
    fn escalation_to_critical_keeps_the_episode() {
        let mut c = clock();
        c.feed(0, 85.0);
        let w = c.feed(30, 85.0).unwrap();
        c.feed(40, 97.0);
        let crit = c.feed(70, 97.0).unwrap();
        assert_eq!((crit.0, &crit.2), (Severity::Critical, &w.2));
        assert_eq!(c.feed(200, 1.0), None);
        let resolved = c.feed(230, 1.0).unwrap();
        assert_eq!((resolved.0, resolved.1), (Severity::Critical, AlertState::Resolved));
    }
}

//! Which routes take which signal: the notifier's policy, asked by the
//! engine task when it queues a signal in the same transaction as its candle.

use crate::config::Route;
use crate::event::{AlertState, Signal};
use crate::store::{Message, Priority};
use crate::types::Severity;

/// Where a signal waits in its routes' queues.
pub const SIGNAL_PRIORITY: Priority = Priority::High;

/// Where a message waits in its route's queue: critical alerts urgent,
/// signals high, warnings normal, the rest (info, resolved notices) low.
pub fn priority(message: &Message) -> Priority {
    match message {
        Message::Signal(_) | Message::Closed(..) => SIGNAL_PRIORITY,
        // A track record: after anything a trader acts on.
        Message::Outcome(_) | Message::Edit(_) => Priority::Normal,
        Message::Alert(a) => match (a.state, a.severity) {
            (AlertState::Raised, Severity::Critical) => Priority::Urgent,
            (AlertState::Raised, Severity::Warning) => Priority::Normal,
            _ => Priority::Low,
        },
    }
}

/// The notifier's rules for its part of a config (see `config::Check`):
/// webhook URLs it can post to, and a username Discord accepts.
pub fn config_problems(c: &crate::config::Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (i, r) in c.notify.routes.iter().enumerate() {
        // An empty one is the config's own problem ("is empty").
        if !r.webhook.is_empty()
            && let Err(e) = super::discord::Webhook::parse(r.webhook.expose())
        {
            // The value is a secret: the message never repeats it.
            problems.push((format!("notify.routes[{i}].webhook"), format!("the value {e}")));
        }
    }
    if let Some(why) = super::embed::username_problem(&c.notify.username) {
        problems.push(("notify.username".into(), why));
    }
    problems
}

/// A route's name and its delay in seconds.
pub type Taker = (String, i64);

/// The configured routes that take signals, with their delays.
pub struct SignalRoutes {
    routes: Vec<(Route, i64)>,
}

impl SignalRoutes {
    pub fn new(routes: &[Route]) -> SignalRoutes {
        let routes = routes
            .iter()
            // A delay past i64 seconds is "never", and stays so.
            .map(|r| (r.clone(), i64::try_from(r.delay.0.as_secs()).unwrap_or(i64::MAX)))
            .collect();
        SignalRoutes { routes }
    }

    /// For a closed trade: the routes whose signal message is edited with
    /// it (those that take its signals) and those that take it as a message
    /// of its own; each with its delay in seconds.
    pub fn for_outcome(&self, t: &crate::event::Trade) -> (Vec<Taker>, Vec<Taker>) {
        let pick = |f: &dyn Fn(&Route) -> bool| {
            self.routes.iter().filter(|(r, _)| f(r)).map(|(r, d)| (r.name.clone(), *d)).collect::<Vec<_>>()
        };
        (pick(&|r| r.takes_signal(t.instrument)), pick(&|r| r.takes_outcome(t.instrument)))
    }

    /// The routes (name, delay in seconds) that take this signal.
    pub fn for_signal(&self, s: &Signal) -> Vec<(String, i64)> {
        self.routes.iter().filter(|(r, _)| r.takes_signal(s.instrument)).map(|(r, d)| (r.name.clone(), *d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Alert;
    use crate::time::Ts;

    #[test]
    fn critical_alerts_go_first_and_status_last() {
        let alert = |severity, state| {
            Message::Alert(Alert {
                id: "a".into(),
                check: "c".into(),
                severity,
                state,
                title: String::new(),
                message: String::new(),
                time: Ts(0),
            })
        };
        assert_eq!(priority(&alert(Severity::Critical, AlertState::Raised)), Priority::Urgent);
        assert_eq!(priority(&alert(Severity::Warning, AlertState::Raised)), Priority::Normal);
        assert_eq!(priority(&alert(Severity::Critical, AlertState::Resolved)), Priority::Low);
        assert_eq!(priority(&alert(Severity::Info, AlertState::Raised)), Priority::Low);
        assert!(Priority::Urgent < SIGNAL_PRIORITY && SIGNAL_PRIORITY < Priority::Normal);
    }
}

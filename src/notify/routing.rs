//! Which routes take which signal: the notifier's policy, asked by the
//! engine task when it queues a signal in the same transaction as its candle.

use crate::config::Route;
use crate::event::Signal;

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

    /// The routes (name, delay in seconds) that take this signal.
    pub fn for_signal(&self, s: &Signal) -> Vec<(String, i64)> {
        self.routes.iter().filter(|(r, _)| r.takes_signal(s.instrument)).map(|(r, d)| (r.name.clone(), *d)).collect()
    }
}

//! Reloading the config of a running instance (SIGHUP, `{"op":"reload"}`):
//! what may change while running, and what waits for the next start.
//!
//! Routes and the rest of `[notify]`, the health thresholds, the log level
//! and the console's keys and theme take effect at once: the notifier and the health checks are replaced
//! (the outbox is durable, so nothing queued is lost; alert episodes live in
//! the view and the store, so none is raised twice). The market, the
//! strategy and the server are what the engine's state and the clients'
//! connections are made of: a change there is named and left for the next
//! start, and the running values stay.

use std::sync::Arc;

use crate::config::Config;

/// Reads the config again the way the process first read it (the same
/// file, environment and flags): the new config, or its problems in words.
pub type Reloader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What a new config changes, and the config the instance runs with after it.
#[derive(Debug)]
pub struct Plan {
    /// The running config with the sections that may change replaced.
    pub merged: Config,
    pub notify: bool,
    pub health: bool,
    pub console: bool,
    pub log: bool,
    /// The sections that changed but wait for a restart, by their keys.
    pub needs_restart: Vec<&'static str>,
}

impl Plan {
    pub fn changed(&self) -> bool {
        self.notify || self.health || self.console || self.log
    }

    /// The sections taken up, for the log and the reply.
    pub fn applied(&self) -> Vec<&'static str> {
        [(self.notify, "notify"), (self.health, "health"), (self.console, "console"), (self.log, "log")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
    }
}

/// Compares by value: a section is changed when any of its keys differ.
pub fn plan(running: &Config, new: &Config) -> Plan {
    let m = (&running.market, &new.market);
    let mut needs_restart = Vec::new();
    let mut note = |changed: bool, key: &'static str| {
        if changed {
            needs_restart.push(key);
        }
    };
    note(m.0.source != m.1.source, "market.source");
    note(m.0.instruments != m.1.instruments, "market.instruments");
    note(m.0.timeframes != m.1.timeframes, "market.timeframes");
    note(m.0.demo != m.1.demo, "market.demo");
    note(m.0.csv != m.1.csv, "market.csv");
    note(m.0.oanda != m.1.oanda, "market.oanda");
    note(running.strategy != new.strategy, "strategy");
    note(running.server != new.server, "server");
    let mut merged = running.clone();
    merged.notify = new.notify.clone();
    merged.health = new.health.clone();
    merged.console = new.console.clone();
    merged.log = new.log.clone();
    Plan {
        log: running.log != new.log,
        notify: running.notify != new.notify,
        health: running.health != new.health,
        console: running.console != new.console,
        needs_restart,
        merged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let mut opts = crate::config::LoadOptions::from_process(Some(path), None);
        opts.env.clear();
        crate::config::load(&opts).unwrap_or_else(|e| panic!("{e}")).config
    }

    #[test]
    fn routes_and_thresholds_apply_and_the_market_waits_for_a_restart() {
        let running = config("[market]\ninstruments = [\"EUR_USD\"]\n");
        let new = config(
            "[market]\ninstruments = [\"EUR_USD\", \"GBP_USD\"]\n[strategy]\nfast = 5\n\
             [health]\ncpu_warning = 50.0\n[log]\nlevel = \"debug\"\n\
             [[notify.routes]]\nname = \"a\"\nwebhook = \"https://discord.com/api/webhooks/1/x\"\n",
        );
        let p = plan(&running, &new);
        assert_eq!(p.applied(), vec!["notify", "health", "log"]);
        assert_eq!(p.needs_restart, vec!["market.instruments", "strategy"]);
        // The running market and strategy stay; the new routes and thresholds are taken.
        assert_eq!(p.merged.market, running.market);
        assert_eq!(p.merged.strategy, running.strategy);
        assert_eq!(p.merged.notify.routes.len(), 1);
        assert_eq!(p.merged.health.cpu_warning, 50.0);
        assert_eq!(p.merged.log.level.as_deref(), Some("debug"));
        assert!(p.changed());
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let c = config("[[notify.routes]]\nname = \"a\"\nwebhook = \"https://discord.com/api/webhooks/1/x\"\n");
        let p = plan(&c, &c.clone());
        assert!(!p.changed() && p.needs_restart.is_empty(), "{p:?}");
    }
}

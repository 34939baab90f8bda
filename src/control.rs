//! The one command path into a running instance: the in-process console
//! calls it directly, and the server calls it for a WebSocket client's
//! `{"op":...}` frame, so a pause or an acknowledgement means the same
//! thing whichever way it arrives.

use std::sync::Arc;

use crate::event::{AlertState, Event};
use crate::hub::Hub;
use crate::notify::NotifierHandle;

/// What a console or an authorised client can ask of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop sending notifications; everything stays queued.
    Pause,
    Resume,
    /// Mark an active alert as seen: it stays active, no longer new.
    Ack {
        alert: String,
    },
    /// Read the config again (as SIGHUP does for headless).
    Reload,
}

impl Command {
    /// The `op` of its WebSocket frame.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Ack { .. } => "ack",
            Command::Reload => "reload",
        }
    }
}

/// Why a command was refused, in words for the one who sent it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this instance has no notifier to pause")]
    NoNotifier,
    #[error("no active alert '{0}'")]
    NoSuchAlert(String),
    #[error("this instance does not reload its config (a console's: restart it to take up a new config)")]
    NoReload,
    #[error("this instance has no store to read the dead list from")]
    NoStore,
    #[error("purge needs ids, --route, or --all")]
    PurgeWhat,
    #[error("{0}")]
    Dead(String),
}

/// Carries out commands against the instance's hub and notifier.
#[derive(Clone)]
pub struct Control {
    hub: Arc<Hub>,
    notifier: Option<NotifierHandle>,
    reload: Option<tokio::sync::mpsc::Sender<()>>,
    store: Option<Arc<crate::store::Store>>,
}

impl Control {
    pub fn new(hub: Arc<Hub>, notifier: Option<NotifierHandle>) -> Control {
        Control { hub, notifier, reload: None, store: None }
    }

    /// The dead list is read and changed in `store` (the instance's own).
    pub fn with_store(self, store: Arc<crate::store::Store>) -> Control {
        Control { store: Some(store), ..self }
    }

    /// `pipwatch dead` through the instance that holds the data directory:
    /// the same words as the command line prints. A retry wakes the notifier,
    /// so what is queued again goes out now.
    pub fn dead(
        &self,
        action: crate::protocol::DeadAction,
        filter: &crate::dead::DeadFilter,
        all: bool,
        json: bool,
    ) -> Result<String, Refused> {
        use crate::protocol::DeadAction;
        let store = self.store.as_ref().ok_or(Refused::NoStore)?;
        if action == DeadAction::Purge && !all && filter.route.is_none() && filter.ids.is_empty() {
            return Err(Refused::PurgeWhat);
        }
        let mut out = Vec::new();
        let done = match action {
            DeadAction::List => crate::dead::list(store, filter, json, &mut out).map(drop),
            DeadAction::Retry => crate::dead::retry(store, filter, &mut out).map(drop),
            DeadAction::Purge => crate::dead::purge(store, filter, &mut out).map(drop),
        };
        done.map_err(|e| Refused::Dead(e.to_string()))?;
        if action == DeadAction::Retry
            && let Some(n) = &self.notifier
        {
            n.wake();
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Reload requests go to the instance by `requests`.
    pub fn with_reload(self, requests: tokio::sync::mpsc::Sender<()>) -> Control {
        Control { reload: Some(requests), ..self }
    }

    /// Whether commands can change anything here (a server without a
    /// notifier, in tests, is read-only).
    pub fn active(&self) -> bool {
        self.notifier.is_some()
    }

    pub fn apply(&self, command: &Command) -> Result<(), Refused> {
        match command {
            Command::Pause | Command::Resume => {
                let notifier = self.notifier.as_ref().ok_or(Refused::NoNotifier)?;
                notifier.set_paused(*command == Command::Pause);
                Ok(())
            }
            Command::Ack { alert } => {
                // The hub's view is the truth about which alerts are active.
                let found = self.hub.read(|v| v.alert(alert).cloned());
                let mut a = found.ok_or_else(|| Refused::NoSuchAlert(alert.clone()))?;
                a.state = AlertState::Acknowledged;
                self.hub.publish(Event::Alert(a));
                Ok(())
            }
            Command::Reload => {
                let requests = self.reload.as_ref().ok_or(Refused::NoReload)?;
                // Full: a reload is already waiting, and it will read the newest file.
                match requests.try_send(()) {
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => Ok(()),
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => Err(Refused::NoReload),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Alert;
    use crate::time::Ts;
    use crate::types::Severity;

    #[test]
    fn an_ack_marks_the_active_alert_and_only_that() {
        let hub = Arc::new(Hub::new(16));
        let control = Control::new(hub.clone(), None);
        hub.publish(Event::Alert(Alert {
            id: "disk:1".into(),
            check: "disk".into(),
            severity: Severity::Warning,
            state: AlertState::Raised,
            title: "disk".into(),
            message: "91% used".into(),
            time: Ts(1),
        }));
        assert_eq!(control.apply(&Command::Ack { alert: "disk:1".into() }), Ok(()));
        assert_eq!(hub.read(|v| v.alert("disk:1").map(|a| a.state)), Some(AlertState::Acknowledged));
        assert_eq!(control.apply(&Command::Ack { alert: "cpu:9".into() }), Err(Refused::NoSuchAlert("cpu:9".into())));
        assert_eq!(control.apply(&Command::Pause), Err(Refused::NoNotifier));
        assert_eq!(control.apply(&Command::Reload), Err(Refused::NoReload));
        assert!(!control.active());
    }

    #[test]
    fn a_reload_is_handed_to_the_instance_and_a_burst_is_one() {
        let hub = Arc::new(Hub::new(16));
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let control = Control::new(hub, None).with_reload(tx);
        assert_eq!(control.apply(&Command::Reload), Ok(()));
        assert_eq!(control.apply(&Command::Reload), Ok(()));
        assert_eq!(rx.try_recv(), Ok(()));
        assert!(rx.try_recv().is_err(), "two requests before a reload make one");
        drop(rx);
        assert_eq!(control.apply(&Command::Reload), Err(Refused::NoReload));
    }
}

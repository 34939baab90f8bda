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
}

impl Command {
    /// The `op` of its WebSocket frame.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Ack { .. } => "ack",
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
}

/// Carries out commands against the instance's hub and notifier.
#[derive(Clone)]
pub struct Control {
    hub: Arc<Hub>,
    notifier: Option<NotifierHandle>,
}

impl Control {
    pub fn new(hub: Arc<Hub>, notifier: Option<NotifierHandle>) -> Control {
        Control { hub, notifier }
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
        assert!(!control.active());
    }
}

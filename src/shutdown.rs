//! Stopping on the signals a user or a service manager sends: SIGINT,
//! SIGTERM, a terminal's hangup, or the end of `--for`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Whether SIGHUP is ignored (`nohup`), read from /proc so that no
/// `unsafe` is needed. Where there is no /proc, it is taken as ignored: the
/// OS's own handling is left as it was.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return true };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        // Signal n is bit n - 1; SIGHUP is 1.
        .is_none_or(|mask| mask & 1 != 0)
}

/// What SIGHUP means to a front end.
pub enum Hangup {
    /// The terminal hung up (the console; headless in a terminal): stop.
    Stop,
    /// A service's "read your config again" (headless without a terminal:
    /// systemd's `ExecReload`, `kill -HUP`): each one is sent here.
    Reload(tokio::sync::mpsc::Sender<()>),
}

/// Cancels `token` on SIGINT, SIGTERM, a hangup (unless ignored) or after `run_for`.
/// The handlers are installed before this returns (not in the task it
/// spawns): a signal that arrives right after, while the instance starts,
/// stops it cleanly instead of killing it with the signal's default action.
pub fn on_signals(token: CancellationToken, run_for: Option<Duration>, on_hangup: Hangup) {
    #[cfg(unix)]
    let installed = {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        // A dropped SSH session hangs up the terminal: stop as cleanly as on
        // SIGTERM (the seq mark, the last deliveries recorded) instead of
        // dying mid-write. Under `nohup` the hangup is ignored, and stays so.
        let hangup = if hangup_ignored() { None } else { signal(SignalKind::hangup()).ok() };
        (interrupt, term, hangup)
    };
    tokio::spawn(async move {
        let timer = async {
            match run_for {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let (interrupt, term, hangup) = {
            let (interrupt, term, hangup) = installed;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let hangup = async move {
                let Some(mut s) = hangup else { return std::future::pending().await };
                match on_hangup {
                    Hangup::Stop => {
                        s.recv().await;
                    }
                    Hangup::Reload(requests) => loop {
                        s.recv().await;
                        tracing::info!("SIGHUP: reloading the config");
                        // Full: a reload is already waiting and will read the newest file.
                        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = requests.try_send(()) {
                            return std::future::pending().await;
                        }
                    },
                }
            };
            (wait(interrupt), wait(term), hangup)
        };
        #[cfg(not(unix))]
        let (interrupt, term, hangup) = (
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            std::future::pending::<()>(),
            std::future::pending::<()>(),
        );
        tokio::select! {
            _ = interrupt => tracing::info!("interrupted; stopping"),
            _ = term => tracing::info!("terminated; stopping"),
            _ = hangup => tracing::info!("the terminal hung up (SIGHUP); stopping"),
            _ = timer => tracing::info!("--for elapsed; stopping"),
        }
        token.cancel();
    });
}

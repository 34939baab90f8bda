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

/// Cancels `token` on SIGINT, SIGTERM, a hangup (unless ignored) or after `run_for`.
pub fn on_signals(token: CancellationToken, run_for: Option<Duration>) {
    tokio::spawn(async move {
        let timer = async {
            match run_for {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        // A dropped SSH session hangs up the terminal: stop as cleanly as on
        // SIGTERM (the seq mark, the last deliveries recorded) instead of
        // dying mid-write. Under `nohup` the hangup is ignored, and stays so.
        #[cfg(unix)]
        let hangup = async {
            match hangup_ignored() {
                false => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                },
                true => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
            _ = term => tracing::info!("terminated; stopping"),
            _ = hangup => tracing::info!("the terminal hung up (SIGHUP); stopping"),
            _ = timer => tracing::info!("--for elapsed; stopping"),
        }
        token.cancel();
    });
}

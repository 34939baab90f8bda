//! `pipwatch tail`: a running instance's events as JSON lines, following
//! across dropped connections (the client reconnects with `?since=`, so
//! nothing is missed while the server still holds it).

use std::io::Write;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::client::Options;
use crate::client::{self, ClientError, Update};
use crate::protocol::Frame;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub reconnects: u64,
    pub last_seq: Option<u64>,
}

/// Follows the event stream until `shutdown`. Fails only if the first
/// connection cannot be made (or is refused), or the output cannot be
/// written; later drops are reconnected.
pub async fn run(
    opts: &Options,
    out: &mut (dyn Write + Send),
    shutdown: CancellationToken,
) -> Result<Stats, ClientError> {
    let stop = shutdown.child_token();
    let (tx, mut rx) = mpsc::channel(256);
    let follower = client::follow(opts, None, tx, None, stop.clone());
    let mut stats = Stats::default();
    let printer = async {
        while let Some(update) = rx.recv().await {
            if let Err(e) = print(update, out, &mut stats) {
                // Nothing more can be written: stop following.
                stop.cancel();
                return Err(ClientError::Output(e));
            }
        }
        Ok(())
    };
    let (followed, printed) = tokio::join!(follower, printer);
    printed?;
    followed?;
    Ok(stats)
}

fn print(update: Update, out: &mut (dyn Write + Send), stats: &mut Stats) -> std::io::Result<()> {
    match update {
        Update::Event { env, text } => {
            out.write_all(text.as_bytes())?;
            out.write_all(b"\n")?;
            out.flush()?;
            stats.events += 1;
            stats.last_seq = Some(env.seq);
        }
        Update::Frame(Frame::Hello(h)) => tracing::info!(source = %h.source, version = %h.version, "connected"),
        Update::Frame(Frame::Lagged { missed, .. }) => {
            tracing::warn!(missed, "events were missed (the server no longer had them); going on from now")
        }
        Update::Frame(Frame::Error { message }) => tracing::warn!(error = %message, "the server reported an error"),
        // Records are events: a snapshot is for consoles.
        Update::Frame(_) | Update::Connected => {}
        Update::Dropped { reason } => {
            stats.reconnects += 1;
            tracing::warn!(reason = %reason, since = ?stats.last_seq, "connection lost; reconnecting");
        }
        Update::Retrying { reason, wait } => {
            tracing::warn!(error = %reason, retry_in = %format!("{:.1}s", wait.as_secs_f64()), "reconnecting")
        }
    }
    Ok(())
}

//! `pipwatch attach`: the console's input from a running instance, through
//! the shared client (`crate::client`). A snapshot becomes the view (also
//! the one after a `lagged`), then events are folded into it by the same
//! `View::apply` the in-process console uses.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::app::LinkState;
use crate::client::{self, ClientError, Update, Ws};
use crate::control::Command;
use crate::event::Envelope;
use crate::protocol::{ClientFrame, Frame};
use crate::view::View;

/// What the console receives, from either side.
#[derive(Debug)]
pub enum Incoming {
    Snapshot(Box<View>),
    Event(Arc<Envelope>),
    /// The connection's state, and why it is down.
    Link(LinkState, Option<String>),
    /// The server answered a command.
    Notice(String),
}

/// A console command as the frame that asks a server for it.
pub fn frame_of(c: Command) -> ClientFrame {
    match c {
        Command::Pause => ClientFrame::Pause,
        Command::Resume => ClientFrame::Resume,
        Command::Ack { alert } => ClientFrame::Ack { alert },
        Command::Reload => ClientFrame::Reload,
    }
}

/// Connects once, to fail early (before the screen opens) if nothing is
/// there. `url` as the user wrote it.
pub async fn connect(url: &str, token: Option<&str>) -> Result<Ws, ClientError> {
    client::connect(&options(url, token), None).await
}

fn options(url: &str, token: Option<&str>) -> client::Options {
    client::Options { url: url.to_string(), token: token.map(str::to_string), ..Default::default() }
}

/// What the console makes of the client's news; `None` for what it ignores.
fn incoming(update: Update) -> Option<Incoming> {
    Some(match update {
        Update::Connected => Incoming::Link(LinkState::Connected, None),
        Update::Frame(Frame::Snapshot(view)) => Incoming::Snapshot(view),
        Update::Frame(Frame::Hello(h)) if !h.commands => Incoming::Link(LinkState::ReadOnly, None),
        Update::Frame(Frame::Error { message }) => Incoming::Notice(message),
        // `lagged` is always followed by the snapshot that corrects the view.
        Update::Frame(_) => return None,
        Update::Event { env, .. } => Incoming::Event(env),
        Update::Dropped { reason } | Update::Retrying { reason, .. } => {
            Incoming::Link(LinkState::Reconnecting, Some(reason))
        }
    })
}

/// Follows the server until `stop`, reconnecting after drops.
pub async fn follow(
    first: Ws,
    url: String,
    token: Option<String>,
    tx: mpsc::Sender<Incoming>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let (updates_tx, mut updates) = mpsc::channel(256);
    let (frames_tx, frames) = mpsc::channel(64);
    let opts = options(&url, token.as_deref());
    let follower = client::follow(&opts, Some(first), updates_tx, Some(frames), stop.clone());
    let forward = async {
        let mut open = true;
        loop {
            tokio::select! {
                u = updates.recv() => {
                    let Some(u) = u else { return };
                    if let Some(m) = incoming(u)
                        && tx.send(m).await.is_err()
                    {
                        // The console is gone.
                        stop.cancel();
                        return;
                    }
                }
                c = commands.recv(), if open => match c {
                    Some(c) => {
                        let _ = frames_tx.send(frame_of(c)).await;
                    }
                    None => open = false,
                },
            }
        }
    };
    let (followed, ()) = tokio::join!(follower, forward);
    if let Err(e) = followed {
        let _ = tx.send(Incoming::Link(LinkState::Failed, Some(e.to_string()))).await;
    }
}

//! The WebSocket protocol's frames, as types: what the server sends, what a
//! client may send, the version and the topics. The server, `tail`, `attach`
//! and the tests all speak through these, so a frame's shape lives in one
//! place.
//!
//! Events travel as an [`Envelope`] (`{"seq":N,"type":"signal",...}`); every
//! other server frame is a [`Frame`]. Their `type`s never clash: events are
//! the market's and the instance's kinds, frames are the conversation's.

use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::view::View;

/// The protocol version in `hello`.
pub const PROTOCOL: u32 = 1;

/// The topics a client can subscribe to: the event kinds.
pub const TOPICS: [&str; 10] =
    ["candle", "signal", "quote", "rejected", "feed", "alert", "delivery", "queue", "health", "outcome"];

/// A server frame other than an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// The first frame of every connection.
    Hello(Hello),
    /// Every pair's latest view, the last signals, queue, health and active
    /// alerts, as of `seq`; the events after it follow.
    Snapshot(Box<View>),
    /// The client fell behind (or asked for a seq the server no longer has):
    /// a fresh `snapshot` always follows, then live events.
    Lagged {
        missed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A frame the server did not understand or refused; the connection stays.
    Error {
        message: String,
    },
    /// A command was carried out.
    Ok {
        op: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alert: Option<String>,
        /// What the command has to say (`dead`: the list, or what it did).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Pong,
    Subscribed {
        topics: Vec<String>,
        instruments: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    pub source: String,
    /// Whether this server takes commands (pause, resume, ack).
    pub commands: bool,
    pub topics: Vec<String>,
}

impl Frame {
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error { message: message.into() }
    }

    /// The frame as the JSON text sent on the wire.
    pub fn to_json(&self) -> String {
        // Every field is a plain string, number, list or the view, all of
        // which serialise: this cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `snapshot` frame of `view`, as `Frame::Snapshot` writes it, without
/// a copy of the view (a server sends the same view to many clients).
pub fn snapshot_json(view: &View) -> Vec<u8> {
    #[derive(Serialize)]
    struct Snapshot<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        view: &'a View,
    }
    serde_json::to_vec(&Snapshot { kind: "snapshot", view }).unwrap_or_default()
}

/// Anything the server sends, as a client reads it.
// Events are nearly every frame a client reads: boxing them would allocate
// for each, to save room in the rare other frames.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ServerFrame {
    Frame(Frame),
    Event(Envelope),
}

impl ServerFrame {
    /// Reads one text frame. An unknown `type` is an error, not a guess.
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        // Both are tagged by `type`; events are far more frequent.
        match serde_json::from_str::<Envelope>(text) {
            Ok(env) => Ok(ServerFrame::Event(env)),
            Err(as_event) => serde_json::from_str::<Frame>(text).map(ServerFrame::Frame).map_err(|_| as_event),
        }
    }
}

/// A client's frame, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Replaces the subscription; empty lists mean everything.
    Subscribe {
        #[serde(default)]
        topics: Vec<String>,
        #[serde(default)]
        instruments: Vec<String>,
    },
    Ping,
    Pause,
    Resume,
    Ack {
        alert: String,
    },
    /// Read the config again (headless instances; needs the token when one is set).
    Reload,
    /// `pipwatch dead list|retry|purge` against a running instance, which
    /// holds the data directory.
    Dead {
        action: DeadAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ids: Vec<String>,
        /// `purge` with neither ids nor a route needs this, as on the command line.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadAction {
    List,
    Retry,
    Purge,
}

impl ClientFrame {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, FeedState, FeedStatus};

    #[test]
    fn command_frames_keep_their_wire_shape() {
        let dead = ClientFrame::Dead {
            action: DeadAction::Purge,
            route: None,
            ids: vec!["x".into()],
            all: false,
            json: false,
        };
        assert_eq!(dead.to_json(), r#"{"op":"dead","action":"purge","ids":["x"]}"#);
        let parsed: ClientFrame = serde_json::from_str(r#"{"op":"dead","action":"list","json":true}"#).unwrap();
        assert_eq!(
            parsed,
            ClientFrame::Dead { action: DeadAction::List, route: None, ids: vec![], all: false, json: true }
        );
        assert_eq!(ClientFrame::Reload.to_json(), r#"{"op":"reload"}"#);
    }

    /// The wire shapes as DESIGN.md and the clients in the field know them.
    #[test]
    fn frames_keep_their_wire_shape() {
        let hello = Frame::Hello(Hello {
            protocol: PROTOCOL,
            version: "0.1.0".into(),
            source: "demo".into(),
            commands: true,
            topics: TOPICS.iter().map(|t| t.to_string()).collect(),
        });
        assert!(hello.to_json().starts_with(
            r#"{"type":"hello","protocol":1,"version":"0.1.0","source":"demo","commands":true,"topics":["candle","#
        ));
        assert_eq!(Frame::Lagged { missed: 3, message: None }.to_json(), r#"{"type":"lagged","missed":3}"#);
        assert_eq!(Frame::Pong.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(Frame::error("no").to_json(), r#"{"type":"error","message":"no"}"#);
        assert_eq!(
            Frame::Ok { op: "ack".into(), alert: Some("a".into()), message: None }.to_json(),
            r#"{"type":"ok","op":"ack","alert":"a"}"#
        );
        let view = View { seq: 7, ..Default::default() };
        let snap = Frame::Snapshot(Box::new(view.clone())).to_json();
        assert!(snap.starts_with(r#"{"type":"snapshot","seq":7,"#), "{snap}");
        assert_eq!(String::from_utf8(snapshot_json(&view)).unwrap(), snap);
        assert_eq!(ClientFrame::Pause.to_json(), r#"{"op":"pause"}"#);
        assert_eq!(ClientFrame::Ack { alert: "x".into() }.to_json(), r#"{"op":"ack","alert":"x"}"#);
    }

    #[test]
    fn a_client_reads_events_and_frames_apart() {
        let env = Envelope { seq: 9, event: Event::Feed(FeedStatus::new("demo", FeedState::Live, None)) };
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(ServerFrame::parse(&text).unwrap(), ServerFrame::Event(env));
        for frame in [
            Frame::Lagged { missed: 1, message: Some("m".into()) },
            Frame::Snapshot(Box::new(View { seq: 3, ..Default::default() })),
            Frame::Pong,
        ] {
            assert_eq!(ServerFrame::parse(&frame.to_json()).unwrap(), ServerFrame::Frame(frame));
        }
        assert!(ServerFrame::parse(r#"{"type":"nonsense"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"ack","alert":"a","extra":1}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"jump"}"#).is_err());
    }
}

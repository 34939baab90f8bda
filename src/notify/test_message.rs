//! `pipwatch notify test [ROUTE]`: one message to a route's webhook, now, and
//! what Discord answered, so a new route can be checked before a signal
//! depends on it. It goes straight to Discord, not through the outbox: a
//! test that waited behind real messages (or was retried for a day) would
//! not answer the question "does this webhook work?".

use std::io::Write;

use super::discord::{Discord, Outcome, Webhook, explain_gone};
use super::embed::{Embed, Footer, Payload};
use crate::config::{Config, SourceKind};
use crate::time::Ts;

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// Nothing to test, or no route of that name: the config or the
    /// command line is wrong.
    #[error("{0}")]
    Setup(String),
    #[error("cannot set up the HTTP client for Discord: {0}")]
    Client(String),
    #[error("cannot write the result: {0}")]
    Output(#[from] std::io::Error),
}

impl TestError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, TestError::Setup(_))
    }
}

/// What a route's test came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Tried {
    pub route: String,
    pub delivered: bool,
    /// Discord's answer in words, e.g. "delivered: Discord message 1234".
    pub said: String,
}

/// The test message: plainly a test, with where it came from, so nobody in
/// the channel takes it for a signal.
fn message(route: &str, demo: bool, now: Ts) -> Embed {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty());
    let from = host.map(|h| format!(" on {h}")).unwrap_or_default();
    Embed {
        title: format!("{}pipwatch test message", if demo { "[DEMO] " } else { "" }),
        description: format!(
            "Route '{route}' reaches this channel. Sent by `pipwatch notify test`{from} at {now}; signals and alerts for this route will arrive here."
        ),
        color: 0x3498DB,
        timestamp: Some(now.to_string()),
        fields: Vec::new(),
        footer: Footer { text: format!("test:{route}:{now}") },
    }
    .fit()
}

/// Sends one test message to `route` (every route when None) and writes a
/// line per route to `out`. Ok with each route's result; a route that did
/// not deliver is not an `Err` (the caller decides the exit code).
pub async fn run(config: &Config, route: Option<&str>, out: &mut impl Write) -> Result<Vec<Tried>, TestError> {
    let routes = &config.notify.routes;
    if routes.is_empty() {
        return Err(TestError::Setup(
            "there are no notification routes to test: add a [[notify.routes]] with a name and \
             webhook = \"${PIPWATCH_DISCORD_SIGNALS}\" to the config (see config/pipwatch.toml) and pass it with -c"
                .into(),
        ));
    }
    let chosen: Vec<_> = match route {
        None => routes.iter().collect(),
        Some(name) => match routes.iter().find(|r| r.name == name) {
            Some(r) => vec![r],
            None => {
                let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
                return Err(TestError::Setup(format!(
                    "no route is named '{name}': the config's routes are {}",
                    names.join(", ")
                )));
            }
        },
    };
    let discord = Discord::new(config.notify.timeout.0).map_err(|e| TestError::Client(e.to_string()))?;
    let demo = config.market.source == SourceKind::Demo;
    let mut tried = Vec::new();
    for r in chosen {
        // Validated at load; said again (without the URL, a secret) if not.
        let webhook = Webhook::parse(r.webhook.expose())
            .map_err(|e| TestError::Setup(format!("route '{}': the webhook {e}", r.name)))?;
        let embeds = [message(&r.name, demo, Ts::now())];
        let answer = discord.execute(&webhook, &Payload::new(&config.notify.username, &embeds, false)).await;
        let (delivered, said) = match answer.outcome {
            Outcome::Delivered { message_id: Some(id) } => (true, format!("delivered: Discord message {id}")),
            Outcome::Delivered { message_id: None } => (true, "delivered".to_string()),
            Outcome::RateLimited { retry_after, .. } => (
                false,
                format!(
                    "Discord is rate limiting this webhook (429): try again in {}",
                    humantime::format_duration(std::time::Duration::from_secs(retry_after.as_secs().max(1)))
                ),
            ),
            Outcome::Gone { status, code, message } => (false, explain_gone(status, code, &message)),
            Outcome::Rejected { status, code, message } => {
                let code = code.map(|c| format!(", code {c}")).unwrap_or_default();
                (false, format!("Discord refused the message ({status}{code}): {message}"))
            }
            Outcome::Retry { reason } => (false, format!("not delivered: {reason}")),
        };
        writeln!(out, "route '{}': {said}", r.name)?;
        tried.push(Tried { route: r.name.clone(), delivered, said });
    }
    Ok(tried)
}

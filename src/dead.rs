//! `pipwatch dead list|retry|purge`: the notifications given up on. The
//! command line runs these on a store it opens; a running instance runs them
//! for a client (`control::Control::dead`), so they sit below both.

use std::io::Write;

use serde::Serialize;

use crate::store::{DeadEntry, Message, OutboxKey, Priority, Store, StoreError};
use crate::time::Ts;

/// Which dead notifications a command applies to (for list and retry, no filter means all).
#[derive(Debug, clap::Args, Default, Clone)]
pub struct DeadFilter {
    /// Only the notifications of this route (a `[[notify.routes]]` name).
    #[arg(long, value_name = "NAME")]
    pub route: Option<String>,
    /// Only these signal or alert ids, e.g. EUR_USD:H4:2024-01-02T08:00:00Z:buy.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the list: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize)]
struct Row<'a> {
    route: &'a str,
    id: &'a str,
    kind: &'static str,
    priority: &'static str,
    attempts: u32,
    created: Ts,
    died: Ts,
    error: &'a str,
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "urgent",
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

fn selected(store: &Store, filter: &DeadFilter) -> Result<Vec<(OutboxKey, DeadEntry)>, StoreError> {
    let (dead, bad) = store.dead()?;
    for b in bad {
        tracing::warn!(problem = %b, "a dead-list entry cannot be read; it is left in place");
    }
    Ok(dead
        .into_iter()
        .filter(|(_, d)| filter.route.as_ref().is_none_or(|r| &d.entry.route == r))
        .filter(|(_, d)| filter.ids.is_empty() || filter.ids.iter().any(|id| id == d.entry.message.id()))
        .collect())
}

fn describe(filter: &DeadFilter) -> String {
    match (&filter.route, filter.ids.len()) {
        (None, 0) => String::new(),
        (Some(r), 0) => format!(" for route '{r}'"),
        (None, n) => format!(" matching {n} id(s)"),
        (Some(r), n) => format!(" for route '{r}' matching {n} id(s)"),
    }
}

pub fn list(store: &Store, filter: &DeadFilter, json: bool, out: &mut impl Write) -> Result<usize, DeadError> {
    let rows = selected(store, filter)?;
    if !json {
        if rows.is_empty() {
            writeln!(out, "the dead list is empty{}", describe(filter))?;
            return Ok(0);
        }
        writeln!(out, "{} notification(s) given up on{}:", rows.len(), describe(filter))?;
    }
    for (k, d) in &rows {
        let e = &d.entry;
        let kind = match e.message {
            Message::Signal(_) => "signal",
            Message::Alert(_) => "alert",
            Message::Outcome(_) => "outcome",
            Message::Edit(_) => "edit",
            Message::Closed(..) => "signal",
        };
        if json {
            let row = Row {
                route: &e.route,
                id: e.message.id(),
                kind,
                priority: priority_name(k.priority()),
                attempts: e.attempts,
                created: e.created,
                died: d.died,
                error: &d.error,
            };
            serde_json::to_writer(&mut *out, &row).map_err(std::io::Error::other)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "\n  {kind} {}\n    route {}, {} priority, {} attempt(s), queued {}, given up {}\n    error: {}",
                e.message.id(),
                e.route,
                priority_name(k.priority()),
                e.attempts,
                e.created,
                d.died,
                d.error
            )?;
        }
    }
    if !json {
        writeln!(
            out,
            "\n`pipwatch dead retry` queues them again; `pipwatch dead purge --all` (or ids, or --route) deletes them."
        )?;
    }
    Ok(rows.len())
}

// Retry and purge flush before they answer, so what they say is durable. The
// flush blocks (an fsync, about a millisecond): these are an admin's rare
// commands, run from the command line or from a server's client task.

pub fn retry(store: &Store, filter: &DeadFilter, out: &mut impl Write) -> Result<usize, DeadError> {
    let keys: Vec<OutboxKey> = selected(store, filter)?.into_iter().map(|(k, _)| k).collect();
    let n = store.revive(&keys, Ts::now())?;
    store.flush_blocking()?;
    if n == 0 {
        writeln!(out, "no notification on the dead list{}: nothing queued again", describe(filter))?;
        return Ok(0);
    }
    writeln!(
        out,
        "{n} notification(s){} queued again; a running `pipwatch` (console or headless) delivers them now",
        describe(filter)
    )?;
    Ok(n)
}

pub fn purge(store: &Store, filter: &DeadFilter, out: &mut impl Write) -> Result<usize, DeadError> {
    let keys: Vec<OutboxKey> = selected(store, filter)?.into_iter().map(|(k, _)| k).collect();
    let n = store.purge(&keys)?;
    store.flush_blocking()?;
    if n == 0 {
        writeln!(out, "no notification on the dead list{}: nothing deleted", describe(filter))?;
        return Ok(0);
    }
    writeln!(out, "{n} notification(s){} deleted", describe(filter))?;
    Ok(n)
}

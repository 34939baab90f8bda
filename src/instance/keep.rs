//! What the instance keeps in the store while it runs, for the next start:
//! the pairs' recent closes (the console's sparklines and charts) and the
//! last seq published (so the next instance's seqs go on after it).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::store::Store;

/// How often the pairs' recent closes are kept while they change, so that
/// after a crash a pair's sparkline and chart come back with at most this
/// much missing. (About 100 KB for 28 series: not with every candle.)
const BARS_KEPT_EVERY: Duration = Duration::from_secs(15);

/// The pairs' recent closes, read from the hub's view: kept every
/// `BARS_KEPT_EVERY` while they change, and once more at the end.
pub(super) async fn bars(hub: Arc<Hub>, store: Arc<Store>, stop: CancellationToken) {
    // The last candle time of each pair: cheap to compare, and it moves
    // whenever a bar was added.
    let ends = |hub: &Hub| hub.read(|v| v.pairs.iter().map(|p| p.candle.map(|c| c.time)).collect::<Vec<_>>());
    let mut kept = ends(&hub);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BARS_KEPT_EVERY, BARS_KEPT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = ends(&hub);
        if now == kept {
            continue;
        }
        kept = now;
        match super::restore::keep_bars(&store, &hub.snapshot()) {
            Ok(()) => tracing::debug!("the pairs' recent closes kept"),
            // Display only; a store that cannot write stops the instance through the engine.
            Err(e) if !std::mem::replace(&mut warned, true) => {
                tracing::warn!(error = %e, "the pairs' recent closes could not be kept")
            }
            Err(_) => {}
        }
    }
    // Display only: a failure to keep them costs the next start its charts.
    if let Err(e) = super::restore::keep_bars(&store, &hub.snapshot()) {
        tracing::warn!(error = %e, "the pairs' recent closes were not kept; the next start shows only their last candle");
    }
}

/// Notes the last seq published once a second, so that the next instance's
/// seqs start after this one's even after a crash.
pub(super) async fn seq_mark(hub: Arc<Hub>, store: Arc<Store>, stop: CancellationToken) {
    let mut marked = hub.start();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let last = hub.last();
        if last != marked {
            // A refused write is the store's failure, which stops the instance on its own.
            if store.mark_seq(last, false).is_err() {
                return;
            }
            marked = last;
        }
    }
}

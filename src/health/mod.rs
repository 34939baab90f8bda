//! The overall status (`/health`), judged from the view: the market feed,
//! the notification routes and the active alerts.
//!
//! `unhealthy` is reserved for "pipwatch is not doing its job" (the feed has
//! failed), since load balancers and k8s act on it by replacing the process.
//! Trouble a restart would not fix (a disabled route, an open circuit) is
//! `degraded`.

pub mod alerts;
pub mod fxweek;
pub mod sampler;
pub mod task;

use serde::{Deserialize, Serialize};

use crate::event::{Circuit, FeedState};
use crate::types::Severity;
use crate::view::View;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub status: Status,
    /// The messages of the checks that are not healthy.
    pub reasons: Vec<String>,
    pub checks: Vec<Check>,
}

fn check(name: impl Into<String>, status: Status, message: impl Into<String>) -> Check {
    Check { name: name.into(), status, message: message.into() }
}

pub fn evaluate(view: &View) -> Report {
    let mut checks = Vec::new();
    checks.push(match &view.feed {
        None => check("feed", Status::Healthy, "starting"),
        Some(f) => {
            let detail = f.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            match f.state {
                FeedState::Failed => check("feed", Status::Unhealthy, format!("the {} feed failed{detail}", f.source)),
                FeedState::Retrying => {
                    check("feed", Status::Degraded, format!("the {} feed is retrying{detail}", f.source))
                }
                FeedState::WarmingUp => check("feed", Status::Healthy, format!("{} warming up", f.source)),
                FeedState::Live => check("feed", Status::Healthy, format!("{} live", f.source)),
                FeedState::Finished => check("feed", Status::Healthy, format!("{} finished{detail}", f.source)),
            }
        }
    });
    if let Some(q) = &view.queue {
        for r in &q.routes {
            let error = r.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            let c = match r.circuit {
                Circuit::Closed => check(format!("route:{}", r.name), Status::Healthy, format!("{} pending", r.depth)),
                Circuit::HalfOpen | Circuit::Open => check(
                    format!("route:{}", r.name),
                    Status::Degraded,
                    format!("route '{}' is failing ({} pending){error}", r.name, r.depth),
                ),
                Circuit::Disabled => check(
                    format!("route:{}", r.name),
                    Status::Degraded,
                    format!("route '{}' is disabled{error}", r.name),
                ),
            };
            checks.push(c);
        }
    }
    if let Some(h) = &view.health {
        if !h.market_open {
            checks.push(check("market", Status::Healthy, "the FX market is closed for the weekend"));
        }
        for s in &h.stale {
            checks.push(check(
                format!("stale:{}:{}", s.instrument, s.timeframe),
                Status::Degraded,
                format!("{} {} is stale: its next candle is {}s overdue", s.instrument, s.timeframe, s.overdue_secs),
            ));
        }
    }
    for a in &view.alerts {
        // A failing route is a delivery problem a restart would not fix:
        // degraded, so a load balancer does not replace the process for it.
        let status = match a.severity {
            Severity::Critical if !a.check.starts_with("route:") => Status::Unhealthy,
            Severity::Critical | Severity::Warning => Status::Degraded,
            Severity::Info => Status::Healthy,
        };
        checks.push(check(format!("alert:{}", a.check), status, format!("{}: {}", a.severity, a.title)));
    }
    let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Healthy);
    let reasons = checks.iter().filter(|c| c.status != Status::Healthy).map(|c| c.message.clone()).collect();
    Report { status, reasons, checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FeedStatus, QueueStatus, RouteStatus};

    #[test]
    fn a_failed_feed_is_unhealthy_and_a_disabled_route_degraded() {
        let mut v = View::default();
        assert_eq!(evaluate(&v).status, Status::Healthy);
        v.queue = Some(QueueStatus {
            routes: vec![RouteStatus {
                name: "signals".into(),
                circuit: Circuit::Disabled,
                depth: 0,
                oldest_pending_secs: None,
                sent: 0,
                failed: 0,
                dead: 3,
                rate_limited: 0,
                waiting: false,
                last_error: Some("404".into()),
            }],
            ..QueueStatus::default()
        });
        let r = evaluate(&v);
        assert_eq!((r.status, r.reasons.clone()), (Status::Degraded, vec!["route 'signals' is disabled: 404".into()]));
        v.feed = Some(FeedStatus { source: "oanda".into(), state: FeedState::Failed, message: Some("401".into()) });
        let r = evaluate(&v);
        assert_eq!(r.status, Status::Unhealthy);
        assert_eq!(r.reasons[0], "the oanda feed failed: 401");
    }
}

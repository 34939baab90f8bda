//! The overall status (`/health`), judged from the view: the market feed,
//! the notification routes, the engine loop and the active alerts.
//!
//! The rule: the world outside pipwatch failing (a webhook down or deleted,
//! OANDA unreachable, a stale feed in market hours, a queue growing because
//! Discord is down) makes it `degraded`, with the reason and an alert.
//! `unhealthy` (503) is kept for what a restart could fix or what makes the
//! instance useless: the engine loop stalled or dead, or the feed stopped for
//! good. Load balancers, k8s and systemd act on `unhealthy` by replacing the
//! process, and replacing it never brings a webhook back. (A store that
//! refuses writes stops the instance outright.) The systemd watchdog and the
//! heartbeat URL are fed from the engine loop's own progress
//! (`liveness`), never from this status.

pub mod alerts;
pub mod fxweek;
pub mod liveness;
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

impl Status {
    /// As it is written in `/health` and in `pipwatch_health_status{status}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
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
    /// The market source (`demo`, `csv`, `oanda`) once the feed has said:
    /// a demo must never pass for a live instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A demo's clock: the newest candle's time in the time-lapse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_clock: Option<crate::time::Ts>,
    /// A demo's pairs that play recorded history (the others are simulated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::types::Instrument>,
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
        // What was sampled, so that `curl /health` shows the checks behind a
        // "healthy", not only the feed. A check with an active alert is the
        // alert's line below, with its threshold.
        let sys = &h.system;
        let measured = [
            ("cpu", f64::from(sys.cpu), "of all cores"),
            ("memory", sys.memory_pct(), "of memory used"),
            ("disk", sys.disk_pct(), "of the data directory's disk used"),
        ];
        for (name, value, what) in measured {
            if !view.alerts.iter().any(|a| a.check == name) {
                checks.push(check(name, Status::Healthy, format!("{value:.1}% {what}")));
            }
        }
        if h.latency.count > 0 {
            let l = &h.latency;
            let text =
                format!("candle to durable signal p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms", l.p50, l.p95, l.p99);
            if !view.alerts.iter().any(|a| a.check == "latency_p95") {
                checks.push(check("latency", Status::Healthy, text));
            }
        }
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
    if let Some(secs) = view.health.as_ref().and_then(|h| h.engine_stalled_secs) {
        let message = match secs {
            u64::MAX => "the engine loop has stopped".to_string(),
            s => format!("the engine loop has not turned for {s}s"),
        };
        checks.push(check("engine", Status::Unhealthy, message));
    }
    for a in &view.alerts {
        // Alerts are about the world around the engine (load, disk, the
        // queue, a route, a feed): a restart fixes none of them.
        let status = match a.severity {
            Severity::Critical | Severity::Warning => Status::Degraded,
            Severity::Info => Status::Healthy,
        };
        checks.push(check(format!("alert:{}", a.check), status, format!("{}: {}", a.severity, a.title)));
    }
    let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Healthy);
    let reasons = checks.iter().filter(|c| c.status != Status::Healthy).map(|c| c.message.clone()).collect();
    let source = view.feed.as_ref().map(|f| f.source.clone());
    let history = view.feed.as_ref().map(|f| f.history.clone()).unwrap_or_default();
    Report { status, source, demo_clock: view.demo_clock(), history, reasons, checks }
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
        v.feed = Some(FeedStatus::new("oanda", FeedState::Failed, Some("401".into())));
        let r = evaluate(&v);
        assert_eq!(r.status, Status::Unhealthy);
        assert_eq!(r.reasons[0], "the oanda feed failed: 401");
    }

    /// The sampled values are checks of their own, so `/health` shows what
    /// stands behind "healthy"; an alert on one takes its place.
    #[test]
    fn the_sampled_values_are_checks_and_an_alert_takes_their_place() {
        use crate::event::{Alert, AlertState, HealthSample, Latency};
        use crate::health::sampler::SystemSample;
        use crate::time::Ts;
        let system = SystemSample {
            cpu: 12.5,
            memory_used: 1 << 30,
            memory_total: 4 << 30,
            disk_used: 91,
            disk_total: 100,
            ..SystemSample::default()
        };
        let latency = Latency { p50: 0.4, p95: 0.9, p99: 1.2, count: 10 };
        let sample = HealthSample {
            time: Ts(0),
            system,
            latency,
            ws_clients: 0,
            market_open: true,
            stale: Vec::new(),
            engine_stalled_secs: None,
            demo_clock: None,
        };
        let mut v = View { health: Some(sample), ..View::default() };
        let named = |r: &Report, n: &str| r.checks.iter().find(|c| c.name == n).map(|c| (c.status, c.message.clone()));
        let r = evaluate(&v);
        assert_eq!(r.status, Status::Healthy);
        assert_eq!(named(&r, "cpu"), Some((Status::Healthy, "12.5% of all cores".into())));
        assert_eq!(named(&r, "memory"), Some((Status::Healthy, "25.0% of memory used".into())));
        assert_eq!(named(&r, "disk"), Some((Status::Healthy, "91.0% of the data directory's disk used".into())));
        let latency = named(&r, "latency").map(|c| c.1).unwrap_or_default();
        assert_eq!(latency, "candle to durable signal p50 0.4 ms, p95 0.9 ms, p99 1.2 ms");

        v.alerts.push(Alert {
            id: "disk:1".into(),
            check: "disk".into(),
            severity: Severity::Warning,
            state: AlertState::Raised,
            title: "the data directory's disk".into(),
            message: "91% (the warning threshold is 90%)".into(),
            time: Ts(0),
        });
        let r = evaluate(&v);
        assert_eq!(named(&r, "disk"), None, "the alert says it, with its threshold");
        assert_eq!(named(&r, "alert:disk").map(|c| c.0), Some(Status::Degraded));
        assert_eq!(r.reasons, ["warning: the data directory's disk"]);
    }
}

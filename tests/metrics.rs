//! `/metrics` as an admin scrapes it: every metric the shipped Prometheus
//! rules and Grafana dashboard name is exposed by a running instance, with
//! values that mean what their help says.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::config_file;

/// The metric names a PromQL text uses (ours and the process family).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["pipwatch_", "process_"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| start + e);
            // Not the tail of a longer word (`my_pipwatch_x`).
            let whole = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if whole && end > start + prefix.len() {
                names.insert(text[start..end].to_string());
            }
            from = end;
        }
    }
    names
}

/// The sample names of a text exposition, and each sample's value by its whole line key.
fn exposed(body: &str) -> (BTreeSet<String>, Vec<(String, f64)>) {
    let mut names = BTreeSet::new();
    let mut samples = Vec::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        names.insert(line[..name_end].to_string());
        if let Some((key, value)) = line.rsplit_once(' ') {
            samples.push((key.to_string(), value.parse().unwrap_or(f64::NAN)));
        }
    }
    (names, samples)
}

fn value(samples: &[(String, f64)], key: &str) -> Option<f64> {
    samples.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// The demo's feed, live.
const LIVE: &str = "pipwatch_feed_state{source=\"demo\",state=\"live\"}";

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_a_running_instance_exposes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("assets/prometheus/pipwatch.rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("assets/grafana/pipwatch.json")).unwrap();
    // The dashboard is valid JSON and its queries are where Grafana reads them.
    let d: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap()))
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut wanted = names_in(&rules);
    for e in &exprs {
        wanted.extend(names_in(e));
    }
    // The families the issue asks an admin can scrape, used by one or the other.
    for must in [
        "pipwatch_build_info",
        "pipwatch_health_status",
        "pipwatch_feed_state",
        "pipwatch_last_candle_timestamp_seconds",
        "pipwatch_active_alerts",
        "pipwatch_notifications_total",
        "pipwatch_delivery_latency_seconds_bucket",
        "pipwatch_host_cpu_ratio",
        "pipwatch_data_disk_used_bytes",
        "pipwatch_host_load",
        "pipwatch_host_network_receive_bytes_per_second",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(wanted.contains(must), "{must} is in neither the rules nor the dashboard");
    }

    let dir = tempfile::tempdir().unwrap();
    // A route and a fast sample, so the route and host families are there
    // without waiting; a candle a second so a series has a last candle.
    let cfg = config_file(
        dir.path(),
        "c.toml",
        "[market.demo]\ncandle_every = \"200ms\"\n[health]\nsample_every = \"300ms\"\n\
         [[notify.routes]]\nname = \"signals\"\nwebhook = \"http://127.0.0.1:9/api/webhooks/1/x\"\n",
    );
    let (run, addr, _logs) = common::headless(&cfg, &dir.path().join("data"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (names, samples) = loop {
        let body = rt.block_on(async { reqwest::get(format!("http://{addr}/metrics")).await?.text().await }).unwrap();
        let (names, samples) = exposed(&body);
        // The first health sample has been taken, and a candle applied, and
        // the demo is live (a candle of its warm-up comes before that).
        let ready = value(&samples, "process_open_fds").is_some_and(|v| v > 0.0)
            && names.contains("pipwatch_last_candle_timestamp_seconds")
            && value(&samples, LIVE) == Some(1.0);
        if ready || Instant::now() > deadline {
            break (names, samples);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(run);
    let missing: Vec<_> = wanted.iter().filter(|n| !names.contains(*n)).collect();
    assert!(missing.is_empty(), "named by the rules or the dashboard, not exposed: {missing:?}\nexposed: {names:?}");

    let version = format!("pipwatch_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&samples, &version), Some(1.0));
    let one_hot = |prefix: &str| samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum::<f64>();
    assert_eq!(one_hot("pipwatch_health_status{"), 1.0, "exactly one status is current");
    assert_eq!(one_hot("pipwatch_feed_state{"), 1.0, "exactly one feed state is current");
    let states: Vec<_> = samples.iter().filter(|(k, _)| k.starts_with("pipwatch_feed_state{")).collect();
    assert_eq!(value(&samples, LIVE), Some(1.0), "{states:?}");
    let fds = value(&samples, "process_open_fds").unwrap();
    let max = value(&samples, "process_max_fds").unwrap();
    assert!(fds >= 3.0 && max >= fds, "open fds {fds}, max {max}");
    assert!(value(&samples, "process_resident_memory_bytes").unwrap() > 1e6);
    let started = value(&samples, "process_start_time_seconds").unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 120.0..=now + 1.0).contains(&started), "started at {started}, now {now}");
    let used = value(&samples, "pipwatch_data_disk_used_bytes").unwrap();
    let total = value(&samples, "pipwatch_data_disk_total_bytes").unwrap();
    assert!(used > 0.0 && total >= used, "disk {used} of {total}");
    for severity in ["info", "warning", "critical"] {
        let key = format!("pipwatch_active_alerts{{severity=\"{severity}\"}}");
        assert!(value(&samples, &key).is_some(), "{key} missing");
    }
}

#[test]
fn names_are_found_whole_in_promql() {
    let found = names_in("rate(process_cpu_seconds_total{job=\"x\"}[5m]) / my_pipwatch_x + pipwatch_a_b");
    assert_eq!(found, BTreeSet::from(["process_cpu_seconds_total".to_string(), "pipwatch_a_b".to_string()]));
}

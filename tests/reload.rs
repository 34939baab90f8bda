//! Reloading a running headless instance: SIGHUP (as systemd's
//! `ExecReload` sends it) and `{"op":"reload"}` take up new routes and
//! thresholds at once, name what waits for a restart, and refuse a config
//! that does not validate with an alert, keeping the running one.

mod common;

use std::time::{Duration, Instant};

use common::config_file;

const START: &str = "[market.demo]\ncandle_every = \"100ms\"\n";
const ROUTE: &str = "[[notify.routes]]\nname = \"late\"\nwebhook = \"http://127.0.0.1:9/api/webhooks/1/x\"\n";

/// Waits for a log line containing `text`, at most 15 s; the lines seen.
fn wait_for(logs: &std::sync::mpsc::Receiver<String>, text: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    while let Ok(line) = logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(text) {
            return Ok(line);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    Err(format!("no log line with {text:?}; saw:\n{seen}"))
}

fn get(rt: &tokio::runtime::Runtime, url: &str) -> String {
    rt.block_on(async { reqwest::get(url).await?.text().await }).unwrap()
}

fn hup(pid: u32) {
    assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn sighup_takes_up_new_routes_names_restart_changes_and_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), "c.toml", START);
    let (mut run, addr, logs) = common::headless(&cfg, &dir.path().join("data"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    wait_for(&logs, "engine started").unwrap();
    assert!(!get(&rt, &format!("http://{addr}/metrics")).contains("route=\"late\""));

    // A new route and a new strategy: the route at once, the strategy named.
    std::fs::write(&cfg, format!("{START}{ROUTE}[strategy]\nfast = 5\n")).unwrap();
    hup(run.0.id());
    let line = wait_for(&logs, "config reloaded").unwrap();
    assert!(line.contains("\"applied\":\"notify\"") && line.contains("\"needs_restart\":\"strategy\""), "{line}");
    let metrics = get(&rt, &format!("http://{addr}/metrics"));
    assert!(metrics.contains("pipwatch_route_queue_depth{route=\"late\"}"), "{metrics}");
    // Signals from now on are queued for it (the route takes them at once).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health: serde_json::Value = serde_json::from_str(&get(&rt, &format!("http://{addr}/health"))).unwrap();
        let checks = health["checks"].as_array().unwrap();
        if checks.iter().any(|c| c["name"] == "route:late") {
            break;
        }
        assert!(Instant::now() < deadline, "the new route never showed in /health: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A config that does not validate: refused, with an alert; still running.
    std::fs::write(&cfg, format!("{START}{ROUTE}[strategy]\nfats = 5\n")).unwrap();
    hup(run.0.id());
    let line = wait_for(&logs, "the config was not reloaded").unwrap();
    assert!(line.contains("fats"), "the problem is named: {line}");
    // The alert is raised after the log line: asked until it is there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let health = get(&rt, &format!("http://{addr}/health"));
        if health.contains("config reload refused") || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.contains("config reload refused"), "{health}");
    assert!(health.contains("route:late"), "the running routes stay: {health}");
    assert!(run.0.try_wait().unwrap().is_none(), "a refused reload stopped it");

    // Fixed: the next reload resolves the alert.
    std::fs::write(&cfg, format!("{START}{ROUTE}")).unwrap();
    hup(run.0.id());
    wait_for(&logs, "config reloaded").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&rt, &format!("http://{addr}/health")).contains("config reload refused") {
        assert!(Instant::now() < deadline, "the refused reload's alert did not resolve");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(run);
}

/// A route taken out of the config keeps its queued messages in the outbox
/// for when it is back, and the log says how many wait, and for which name.
#[test]
fn a_removed_routes_waiting_messages_are_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), "c.toml", &format!("{START}{ROUTE}"));
    let (run, addr, logs) = common::headless(&cfg, &dir.path().join("data"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Nothing listens at the route's port: its signals stay queued.
    let depth = || {
        let metrics = get(&rt, &format!("http://{addr}/metrics"));
        let line = metrics.lines().find(|l| l.starts_with("pipwatch_route_queue_depth{route=\"late\"}"));
        line.and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok()).unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while depth() == 0 {
        assert!(Instant::now() < deadline, "nothing was queued for the route");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&cfg, START).unwrap();
    hup(run.0.id());
    let line = wait_for(&logs, "for a route that is not in the config").unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["fields"]["route"], "late", "{line}");
    assert!(v["fields"]["count"].as_u64().is_some_and(|n| n > 0), "{line}");
    drop(run);
}

#[test]
fn a_reload_frame_reloads_and_needs_the_token() {
    use futures_util::{SinkExt, StreamExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), "c.toml", &format!("{START}[server]\ntoken = \"s3cret\"\n"));
    let (run, addr, logs) = common::headless(&cfg, &dir.path().join("data"));
    std::fs::write(&cfg, format!("{START}{ROUTE}[server]\ntoken = \"s3cret\"\n")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let replies = rt.block_on(async {
        let mut replies = Vec::new();
        for token in ["wrong", "s3cret"] {
            let url = format!("ws://{addr}/ws?token={token}");
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                replies.push("refused".to_string());
                continue;
            };
            ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"op":"reload"}"#)).await.unwrap();
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
                let Ok(text) = frame.to_text() else { continue };
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                if v["type"] == "ok" || v["type"] == "error" {
                    replies.push(v.to_string());
                    break;
                }
            }
        }
        replies
    });
    assert_eq!(replies[0], "refused", "a wrong token is turned away");
    assert!(replies[1].contains(r#""op":"reload""#) && replies[1].contains(r#""type":"ok""#), "{replies:?}");
    let line = wait_for(&logs, "config reloaded").unwrap();
    assert!(line.contains("\"applied\":\"notify\""), "{line}");
    drop(run);
}

/// `pipwatch dead list|retry|purge` while headless holds the data
/// directory: carried out by that instance through its server.
#[test]
fn dead_commands_work_against_a_running_instance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Every delivery fails at once and is given up after one attempt.
    let cfg = config_file(dir.path(), "c.toml", &format!("{START}[notify]\nmax_attempts = 1\n{ROUTE}"));
    let (run, addr, _logs) = common::headless(&cfg, &data);
    // The CLI finds the instance at server.listen: point it at the one running.
    let dead = |args: &[&str]| {
        let out = common::pipwatch_std()
            .env("PIPWATCH_SERVER__LISTEN", format!("\"{addr}\""))
            .args(["dead"])
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let dead_rows = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, text) = dead(&["list", "--json"]);
            assert!(ok, "{text}");
            let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if !rows.is_empty() {
                return rows;
            }
            assert!(Instant::now() < deadline, "nothing reached the dead list {what}: {text}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let listed = dead_rows("at first");
    assert!(listed.iter().all(|r| r["route"] == "late"), "{listed:?}");

    let (ok, text) = dead(&["retry", "--route", "late"]);
    assert!(ok && text.contains("queued again"), "{text}");
    let (ok, text) = dead(&["purge", "--route", "nosuch"]);
    assert!(ok && text.contains("nothing deleted"), "{text}");
    // Queued again with one attempt left, they are given up again.
    dead_rows("after the retry");
    let (ok, text) = dead(&["purge", "--all"]);
    let n: usize = text.split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or(0);
    assert!(ok && n > 0 && text.contains("deleted"), "{text}");
    drop(run);

    // Stopped: the same commands open the store themselves.
    let (ok, text) = dead(&["list"]);
    assert!(ok, "{text}");
}

/// Which of `texts` each line that holds one of them holds, in order, until
/// `last` is seen (at most 15 s).
fn sequence(logs: &std::sync::mpsc::Receiver<String>, texts: &[&str], last: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while let Ok(line) = logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(t) = texts.iter().find(|t| line.contains(*t)) {
            seen.push(if line.contains(last) { line.clone() } else { t.to_string() });
        }
        if line.contains(last) {
            break;
        }
    }
    seen
}

/// The instance's own line (the signal handler's says "SIGHUP: reloading the config").
const RELOADING: &str = r#""message":"reloading the config""#;

#[test]
fn a_reload_changes_the_log_level_and_the_environment_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let level = |l: &str| format!("{START}[log]\nlevel = \"{l}\"\n");
    let cfg = config_file(dir.path(), "c.toml", &level("info"));
    let mut cmd = common::pipwatch_std();
    cmd.env_remove("PIPWATCH_LOG").args(["headless", "-c"]).arg(&cfg).arg("--data-dir").arg(dir.path().join("data"));
    let (run, logs, _) = common::logged(cmd);
    wait_for(&logs, "engine started").unwrap();

    // To warn: the reload starts at info (seen), and its end is at warn (not seen).
    std::fs::write(&cfg, level("warn")).unwrap();
    hup(run.0.id());
    wait_for(&logs, RELOADING).unwrap();
    // The reload has read the file long before this; the next SIGHUP waits for it to end.
    std::thread::sleep(Duration::from_secs(1));
    // Back to info, with a route so this reload's line is told from the last one's.
    std::fs::write(&cfg, format!("{}{ROUTE}", level("info"))).unwrap();
    hup(run.0.id());
    let seen = sequence(&logs, &[RELOADING, "config reloaded"], "config reloaded");
    assert_eq!(seen.len(), 1, "at warn, neither the start of this reload nor the end of the last is logged: {seen:?}");
    assert!(seen[0].contains("\"applied\":\"notify, log\""), "{seen:?}");
    drop(run);

    // PIPWATCH_LOG is the operator's word: log.level = "error" does not hide info.
    let data = dir.path().join("data2");
    std::fs::write(&cfg, level("error")).unwrap();
    let (run, _addr, logs) = common::headless(&cfg, &data);
    let line = wait_for(&logs, "log.level is not used").unwrap();
    assert!(line.contains("info,sled=warn"), "{line}");
    wait_for(&logs, "engine started").unwrap();
    drop(run);
}

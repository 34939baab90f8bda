//! An outside outage never turns into a restart loop: with every webhook
//! unreachable, `/health` stays 200 `degraded`, the systemd watchdog keeps
//! being fed (from the engine loop's progress), and the outage is one alert
//! episode, also across a restart.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{config_file, json_lines, pipwatch_std};

/// A headless instance killed if the test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts headless with a fake systemd notify socket; returns it, its
/// server's address and the stderr reader thread.
fn start(cfg: &std::path::Path, data: &std::path::Path, socket: &std::path::Path) -> (Running, String) {
    // systemd names the process it watches: WATCHDOG_PID must be pipwatch's
    // own pid, which the shell knows as $$ just before it becomes pipwatch.
    let bin = pipwatch_std().get_program().to_owned();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(bin)
        .args(["headless", "-c"])
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPWATCH_LOG", "info,sled=warn")
        .env(common::ANY_PORT.0, common::ANY_PORT.1)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let run = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("server listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server did not start");
    (run, addr)
}

/// Stops it with SIGTERM and returns its stdout records.
fn stop(mut run: Running) -> Vec<serde_json::Value> {
    assert!(std::process::Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status().unwrap().success());
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut run.0.stdout.take().unwrap(), &mut out).unwrap();
    assert!(run.0.wait().unwrap().success());
    json_lines(&out)
}

/// Polls /health for `how_long`: every answer's status code and status.
fn watch_health(addr: &str, how_long: Duration) -> Vec<(u16, String)> {
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < how_long {
        let resp = std::process::Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", &format!("http://{addr}/health")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&resp.stdout).to_string();
        if let Some((body, code)) = text.rsplit_once('\n') {
            let status = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_string))
                .unwrap_or_default();
            seen.push((code.parse().unwrap_or(0), status));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

#[test]
fn a_webhook_outage_is_degraded_not_a_restart_loop() {
    let dir = tempfile::tempdir().unwrap();
    // Short thresholds: the behaviour of a long outage, in seconds.
    let cfg = config_file(
        dir.path(),
        "outage.toml",
        "[market]\ninstruments = [\"EUR_USD\", \"GBP_USD\"]\ntimeframes = [\"H1\"]\n\
         [market.demo]\ncandle_every = \"20ms\"\n\
         [health]\nsample_every = \"200ms\"\nsustain = \"200ms\"\n\
         oldest_pending_warning = \"1s\"\noldest_pending_critical = \"2s\"\n\
         [[notify.routes]]\nname = \"signals\"\nwebhook = \"http://127.0.0.1:9/api/webhooks/1/closed\"\n",
    );
    let data = dir.path().join("data");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let notes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let notes = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let until = Instant::now() + Duration::from_secs(40);
            while Instant::now() < until {
                if let Ok(n) = socket.recv(&mut buf) {
                    notes.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).to_string());
                }
            }
        })
    };

    let (run, addr) = start(&cfg, &data, &socket_path);
    let first_health = watch_health(&addr, Duration::from_secs(6));
    // `status` says the same, with the plugin exit code for degraded.
    let status = common::pipwatch().args(["status", &addr]).output().unwrap();
    let lines = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{lines}");
    assert!(
        lines.contains("DEGRADED")
            && lines.contains("pipwatch (DEMO market: simulated prices, demo clock ")
            && lines.contains("; not a live instance) is degraded:"),
        "{lines}"
    );
    let json = common::pipwatch().args(["status", "--json", &format!("ws://{addr}/ws")]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((json.status.code(), v["status"].as_str()), (Some(1), Some("degraded")));
    let first = stop(run);
    let (run, addr) = start(&cfg, &data, &socket_path);
    let second_health = watch_health(&addr, Duration::from_secs(4));
    let second = stop(run);
    drop(reader);

    let all_health: Vec<_> = first_health.iter().chain(&second_health).collect();
    assert!(all_health.iter().all(|(code, _)| *code == 200), "a 503 during an outside outage: {all_health:?}");
    assert!(
        first_health.iter().any(|(_, s)| s == "degraded") && second_health.iter().any(|(_, s)| s == "degraded"),
        "the outage shows as degraded: {all_health:?}"
    );
    let watchdog = notes.lock().unwrap().iter().filter(|n| n.contains("WATCHDOG=1")).count();
    assert!(watchdog >= 20, "the watchdog was fed {watchdog} times in 10 s of outage");
    // One episode of the oldest-pending alert across both runs.
    let episodes: BTreeSet<String> = first
        .iter()
        .chain(&second)
        .filter(|r| r["type"] == "alert" && r["check"] == "oldest_pending")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    // It went critical: before, that alone made /health 503.
    assert!(
        first.iter().any(|r| r["type"] == "alert" && r["check"] == "oldest_pending" && r["severity"] == "critical"),
        "the outage must have gone critical for this test to mean anything"
    );
}

#[test]
fn status_says_healthy_and_unreachable_with_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), "quiet.toml", "[market.demo]\ncandle_every = \"1h\"\n");
    let socket_path = dir.path().join("notify.sock");
    let _socket = UnixDatagram::bind(&socket_path).unwrap();
    let (run, addr) = start(&cfg, &dir.path().join("data"), &socket_path);
    // Asked until the feed has said what it is (a moment after the start).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (status, lines) = loop {
        let status = common::pipwatch().args(["status", &addr]).output().unwrap();
        let lines = String::from_utf8_lossy(&status.stdout).to_string();
        if lines.contains("demo") || std::time::Instant::now() > deadline {
            break (status, lines);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let json = common::pipwatch().args(["status", "--json", &addr]).output().unwrap();
    stop(run);
    assert_eq!(status.status.code(), Some(0), "{lines}");
    assert!(lines.lines().any(|l| l.starts_with("ok") && l.contains("feed")), "{lines}");
    // A demo never passes for a live instance.
    let last = lines.lines().last().unwrap_or_default();
    assert!(last.starts_with("pipwatch (DEMO market: simulated prices"), "{lines}");
    assert!(last.ends_with("; not a live instance) is healthy"), "{lines}");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["source"], "demo", "{v}");

    let gone = common::pipwatch().args(["status", "127.0.0.1:9"]).output().unwrap();
    assert_eq!(gone.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&gone.stdout).starts_with("UNREACHABLE: http://127.0.0.1:9/health"));
}

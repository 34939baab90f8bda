//! The server from the binary: headless serves it, `pipwatch tail` follows it
//! through a dropped connection, and bad setups fail with clear messages.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Running, config_file, json_lines, pipwatch, pipwatch_std};

fn fast_demo(dir: &std::path::Path) -> std::path::PathBuf {
    config_file(
        dir,
        "pipwatch.toml",
        "[market]\ninstruments = [\"EUR_USD\", \"GBP_USD\", \"USD_JPY\"]\ntimeframes = [\"M1\"]\n[market.demo]\ncandle_every = \"20ms\"\n[strategy]\nfast = 3\nslow = 5\natr = 3\n",
    )
}

/// Starts headless and returns it with the address its server listens on.
fn headless(dir: &std::path::Path) -> (Running, String, std::thread::JoinHandle<String>) {
    headless_with(dir, &fast_demo(dir))
}

fn headless_with(
    dir: &std::path::Path,
    config: &std::path::Path,
) -> (Running, String, std::thread::JoinHandle<String>) {
    headless_on(dir, config, "127.0.0.1:0")
}

fn headless_on(
    dir: &std::path::Path,
    config: &std::path::Path,
    listen: &str,
) -> (Running, String, std::thread::JoinHandle<String>) {
    // Killed when dropped: a failing assertion must not leave it running.
    let mut child = pipwatch_std()
        .env("PIPWATCH_SERVER__LISTEN", format!("\"{listen}\""))
        .args(["headless", "-c"])
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stderr so the child never blocks on it.
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("server listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let child = Running(child);
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server never said where it listens");
    (child, addr, logs)
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

/// Stops headless (SIGTERM) and returns the ids of the signals it printed.
fn stop_and_read_signals(mut child: Running, logs: std::thread::JoinHandle<String>) -> Vec<String> {
    signal(&child, "-TERM");
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success(), "{}", logs.join().unwrap());
    json_lines(&out).iter().filter(|r| r["type"] == "signal").map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// `pipwatch tail URL --topics signal`, its stdout collected as it comes.
struct Tail {
    child: Child,
    lines: std::thread::JoinHandle<Vec<String>>,
    /// A message per line as it comes.
    seen: std::sync::mpsc::Receiver<()>,
}

impl Tail {
    fn start(url: &str) -> Tail {
        let mut child = pipwatch_std()
            .args(["tail", url, "--topics", "signal"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, seen) = std::sync::mpsc::channel();
        let lines = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .inspect(|_| {
                    let _ = tx.send(());
                })
                .collect()
        });
        Tail { child, lines, seen }
    }

    /// Waits for its first record, at most `limit`.
    fn first_record(&self, limit: Duration) {
        let _ = self.seen.recv_timeout(limit);
    }

    /// Waits for a record after those printed so far, at most `limit`.
    fn next_record(&self, limit: Duration) {
        while self.seen.try_recv().is_ok() {}
        let _ = self.seen.recv_timeout(limit);
    }

    /// Ctrl-C: it must exit 0. Returns its records and its stderr.
    fn stop(mut self) -> (Vec<serde_json::Value>, String) {
        signal(&self.child, "-INT");
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "tail exit {status:?}: {err}");
        let records = self.lines.join().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        (records, err)
    }
}

/// A TCP relay the test can cut, as a network drop would.
struct Relay {
    addr: String,
    refuse: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let refuse = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (r, c) = (refuse.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if r.load(Ordering::SeqCst) {
                    continue; // dropped at once
                }
                let target = target.clone();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Relay { addr, refuse, conns }
    }

    fn cut(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A TLS-terminating proxy in front of the server, as nginx or Caddy would
/// be: a certificate of its own CA, for 127.0.0.1 and localhost.
struct TlsProxy {
    addr: String,
    /// The certificate, PEM: what a client that trusts this proxy points SSL_CERT_FILE at.
    cert_pem: String,
}

impl TlsProxy {
    async fn start(target: String) -> TlsProxy {
        use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let (acceptor, target) = (acceptor.clone(), target.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(inbound).await else { return };
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut out).await;
                    }
                });
            }
        });
        TlsProxy { addr, cert_pem: cert.pem() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_attach_connect_over_wss_and_name_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr, logs) = headless(dir.path());
    let proxy = TlsProxy::start(addr).await;
    let url = format!("wss://{}/ws", proxy.addr);
    let trusted = dir.path().join("proxy-ca.pem");
    std::fs::write(&trusted, &proxy.cert_pem).unwrap();
    // A certificate of another key: valid PEM, but it did not sign the proxy's.
    let other = dir.path().join("other-ca.pem");
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&other, stranger.cert.pem()).unwrap();

    // Trusting the proxy's certificate: events arrive over TLS.
    let mut tail = Running(
        pipwatch_std()
            .args(["tail", &url, "--topics", "signal"])
            .env("SSL_CERT_FILE", &trusted)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut signals = Vec::new();
    while signals.len() < 3 {
        let line = lines.next().expect("tail ended before 3 signals").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "signal", "{line}");
        signals.push(v);
    }
    signal(&tail, "-INT");
    assert!(tail.wait().unwrap().success());

    // Not trusting it: both say so at once, with the URL and what to do, and
    // neither blames a missing server.
    for cmd in [vec!["tail", url.as_str()], vec!["attach", url.as_str()]] {
        let out = if cmd[0] == "attach" {
            // A console: without a terminal it would stop before connecting.
            // `script` gives it one; what it says arrives on script's stdout.
            let line = format!("{} {}", assert_cmd::cargo::cargo_bin("pipwatch").display(), cmd.join(" "));
            let mut out = assert_cmd::Command::new("script")
                .args(["-qefc", &line, "/dev/null"])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap())
                .env("TERM", "xterm-256color")
                .env("HOME", dir.path())
                .env("SSL_CERT_FILE", &other)
                .timeout(Duration::from_secs(20))
                .output()
                .unwrap();
            out.stderr = std::mem::take(&mut out.stdout);
            out
        } else {
            pipwatch().args(&cmd).env("SSL_CERT_FILE", &other).timeout(Duration::from_secs(20)).output().unwrap()
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
        assert!(err.contains(&format!("{url}: the TLS connection failed")), "{cmd:?}: {err}");
        assert!(err.contains("certificate") && err.contains("SSL_CERT_FILE"), "{cmd:?}: {err}");
        assert!(!err.contains("Is `pipwatch headless`"), "{cmd:?}: {err}");
    }

    signal(&server, "-TERM");
    assert!(server.wait().unwrap().success(), "{}", logs.join().unwrap());
}

/// `wss://` to a server without TLS (pipwatch's own serves none) says so,
/// not that a certificate is untrusted.
#[test]
fn wss_to_a_server_without_tls_says_to_use_ws() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, logs) = headless(dir.path());
    let out = pipwatch().args(["tail", &format!("wss://{addr}/ws")]).timeout(Duration::from_secs(20)).output();
    // Stopped before any assertion, so a failure leaves no server running.
    stop_and_read_signals(server, logs);
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "wss://{addr}/ws: the TLS connection failed: the server does not speak TLS: use ws://{addr}/ws"
        )),
        "{err}"
    );
    assert!(!err.contains("certificate") && !err.contains("SSL_CERT_FILE"), "{err}");
}

/// A config with one route (to a port where nothing listens) and a market
/// too slow to change the queue during a test.
fn one_route(dir: &std::path::Path) -> std::path::PathBuf {
    config_file(
        dir,
        "route.toml",
        "[market.demo]\ncandle_every = \"1h\"\n[[notify.routes]]\nname = \"signals\"\nwebhook = \"http://127.0.0.1:9/api/webhooks/1/x\"\n",
    )
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame of `type`, as JSON.
async fn next_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        let Ok(text) = frame.to_text() else { continue };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        if v["type"] == kind {
            return v;
        }
    }
}

/// The notification queue as a new client learns it: in its snapshot, or
/// in the event right after it when the client came in before the server
/// had folded the notifier's first report.
async fn first_queue(ws: &mut Ws) -> serde_json::Value {
    let snapshot = next_of(ws, "snapshot").await;
    if !snapshot["queue"].is_null() {
        return snapshot["queue"].clone();
    }
    tokio::time::timeout(Duration::from_secs(3), next_of(ws, "queue")).await.expect("no queue after the snapshot")
}

/// The notifier reports the queue once at start and then only on changes:
/// a new client learns it even when nothing has changed since. (The server
/// used to start listening after that first report, so its clients saw no
/// queue until a message was queued or sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_snapshot_has_the_notification_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, logs) = headless_with(dir.path(), &one_route(dir.path()));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let queue = first_queue(&mut ws).await;
    stop_and_read_signals(server, logs);
    assert_eq!(queue["routes"][0]["name"], "signals", "{queue}");
    assert_eq!(queue["paused"], false);
}

/// Every configured series, side, route and priority is on /metrics at zero
/// from the first scrape: a series that first appears at 1 hides that
/// increment from `rate()` and `increase()`, and an alert on it misses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_start_at_zero_for_what_the_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, logs) = headless_with(dir.path(), &one_route(dir.path()));
    let body = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    stop_and_read_signals(server, logs);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
            |s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            },
        )
    };
    // The demo's defaults: the 7 majors on H4; no candle yet at one an hour.
    for i in ["EUR_USD", "USD_JPY", "NZD_USD"] {
        let series = [("instrument", i), ("timeframe", "H4")];
        assert_eq!(value("pipwatch_rejected_candles_total", &series), Some(0.0), "{i}\n{body}");
        for side in ["buy", "sell"] {
            assert_eq!(value("pipwatch_signals_total", &[("instrument", i), ("side", side)]), Some(0.0), "{body}");
        }
    }
    for outcome in ["delivered", "failed", "dead"] {
        let labels = [("route", "signals"), ("outcome", outcome)];
        assert_eq!(value("pipwatch_notifications_total", &labels), Some(0.0), "{body}");
    }
    assert_eq!(value("pipwatch_discord_rate_limited_total", &[("route", "signals")]), Some(0.0), "{body}");
    assert_eq!(value("pipwatch_queue_depth", &[("priority", "urgent")]), Some(0.0), "{body}");
}

/// Killed (a crash: no clean stop), an instance's pairs still come back
/// with their recent closes, as kept every 15 s and ended by the last stored
/// candle, not with one candle each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_recent_closes_come_back_up_to_the_last_candle() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = pipwatch_std();
    cmd.env("PIPWATCH_LOG", "info,sled=warn,pipwatch::instance::keep=debug")
        .args(["headless", "-c"])
        .arg(fast_demo(dir.path()))
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (mut first, logs, _) = common::logged(cmd);
    // Past the first keep (15 s after the start: waited for, as a loaded
    // machine can be later), then a few more candles.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = logs.recv_timeout(left).expect("the recent closes were never kept");
        if line.contains("the pairs' recent closes kept") {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.kill().unwrap();
    first.wait().unwrap();

    let (second, addr, logs) = headless(dir.path());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let snapshot = next_of(&mut ws, "snapshot").await;
    stop_and_read_signals(second, logs);
    let pairs = snapshot["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3, "{snapshot}");
    for pair in pairs {
        let bars = pair["bars"].as_array().unwrap();
        let times: Vec<&str> = bars.iter().map(|b| b["time"].as_str().unwrap()).collect();
        assert!(bars.len() >= 60, "{} closes after the crash: {pair}", bars.len());
        assert_eq!(times.last().copied(), pair["candle"]["time"].as_str(), "ended by the stored candle: {pair}");
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }
}

/// Notifications paused stay paused across a restart (a crash loop must not
/// flood the channels someone silenced), and resumed stay resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_restart() {
    use futures_util::SinkExt;
    let dir = tempfile::tempdir().unwrap();
    let config = one_route(dir.path());
    let paused_after_restart = |op: &'static str| {
        let (dir, config) = (dir.path().to_path_buf(), config.clone());
        async move {
            let (server, addr, logs) = headless_with(&dir, &config);
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
            next_of(&mut ws, "snapshot").await;
            ws.send(format!("{{\"op\":\"{op}\"}}").into()).await.unwrap();
            assert_eq!(next_of(&mut ws, "ok").await["op"], op);
            stop_and_read_signals(server, logs);

            let (mut server, addr, logs) = headless_with(&dir, &config);
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
            let queue = first_queue(&mut ws).await;
            signal(&server, "-TERM");
            assert!(server.wait().unwrap().success());
            let logs = logs.join().unwrap();
            (queue["paused"].as_bool(), logs)
        }
    };
    let (paused, logs) = paused_after_restart("pause").await;
    assert_eq!(paused, Some(true), "{logs}");
    assert!(logs.contains("notifications are paused, as they were when pipwatch last stopped"), "{logs}");
    let (paused, logs) = paused_after_restart("resume").await;
    assert_eq!(paused, Some(false), "{logs}");
    assert!(!logs.contains("notifications are paused"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_headless_across_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, logs) = headless(dir.path());
    let relay = Relay::start(addr.clone()).await;
    let tail = Tail::start(&format!("ws://{}/ws", relay.addr));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.cut(true);
    // Signals keep coming while tail cannot connect.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    relay.cut(false);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (tailed, tail_err) = tail.stop();
    assert!(tail_err.contains("reconnecting"), "{tail_err}");
    // Redirected to a file or a pipe, log lines carry no colour codes.
    assert!(!tail_err.contains('\x1b'), "escape codes in piped stderr: {tail_err:?}");
    let published = stop_and_read_signals(server, logs);

    assert!(tailed.iter().all(|r| r["type"] == "signal" && r["seq"].as_u64().is_some()));
    let ids: Vec<String> = tailed.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.len() >= 10, "tail saw only {} signals", ids.len());
    let start = published.iter().position(|p| *p == ids[0]).expect("tail printed a signal headless did not");
    assert_eq!(ids, published[start..start + ids.len()].to_vec(), "tail missed or reordered signals across the drop");
}

/// A script following `pipwatch tail` through a restart of the instance (a
/// deploy): the new instance's seqs go on after the old one's, so tail's
/// `?since=` still means something, and it prints every signal of both in
/// order, with those the new instance published before tail got back in
/// (a restart's catch-up signals come first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_misses_nothing_across_a_restart_of_the_instance() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_demo(dir.path());
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (first, addr, logs) = headless_on(dir.path(), &config, &listen);
    let tail = Tail::start(&format!("ws://{addr}/ws"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = stop_and_read_signals(first, logs);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (second, _, logs) = headless_on(dir.path(), &config, &listen);
    // Tail back in before the second stops (its retry can take seconds on a
    // loaded machine): what it has not caught up with is then in its stream.
    tail.next_record(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = stop_and_read_signals(second, logs);

    let (tailed, tail_err) = tail.stop();
    assert!(!tail_err.contains("missed"), "{tail_err}");
    let seqs: Vec<u64> = tailed.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing across the restart: {seqs:?}");
    let ids: Vec<String> = tailed.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert!(!after.is_empty(), "the second instance published no signal");
    let start = before.iter().position(|p| *p == ids[0]).expect("tail printed a signal the first instance did not");
    let mut published = before[start..].to_vec();
    let restart_at = published.len();
    published.extend(after);
    assert_eq!(
        ids, published,
        "tail missed or reordered signals across the restart (the second instance's begin at {restart_at}); tail said: {tail_err}"
    );
}

/// `tail --help` shows what tail takes first; the options every command
/// takes (--config, --data-dir, --source) come after, under their own heading.
#[test]
fn tail_help_puts_its_own_options_before_the_global_ones() {
    let out = pipwatch().args(["tail", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let at = |s: &str| help.find(s).unwrap_or_else(|| panic!("no {s} in\n{help}"));
    assert!(at("--topics") < at("Global options:") && at("--token") < at("Global options:"), "{help}");
    assert!(at("Global options:") < at("--data-dir") && at("Global options:") < at("--source"), "{help}");
}

#[test]
fn a_reachable_listen_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipwatch()
        .args(["headless", "--for", "1s", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("PIPWATCH_SERVER__LISTEN", "\"0.0.0.0:8787\"")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen") && err.contains("server.token must be set"), "{err}");
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = pipwatch()
        .args(["headless", "--for", "5s", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("PIPWATCH_SERVER__LISTEN", format!("\"{port}\""))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(5), "it ran instead of failing");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {port}")) && err.contains("--no-server"), "{err}");
}

#[test]
fn tail_explains_what_is_wrong() {
    let out = pipwatch().args(["tail", "ftp://127.0.0.1:1/ws"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'ftp://127.0.0.1:1/ws' is not a WebSocket URL"));
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = pipwatch().args(["tail", &format!("ws://{free}/ws")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to ws://{free}/ws")) && err.contains("pipwatch headless"), "{err}");
    // A misspelt topic is caught before any connection, with the ones there are.
    let out = pipwatch().args(["tail", &format!("ws://{free}/ws"), "--topics", "signal,signals"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'signals' for '--topics") && !err.contains("cannot connect"), "{err}");
    assert!(pipwatch::protocol::TOPICS.iter().all(|t| err.contains(t)), "{err}");
    let out =
        pipwatch().args(["tail", &format!("ws://{free}/ws"), "--instruments", "EUR_USD,eurusd"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'eurusd' for '--instruments") && err.contains("EUR_USD"), "{err}");
}

/// The forms a user types for an instance all reach its `/ws`; a path that
/// is not pipwatch's says where it is, instead of "is pipwatch running?".
#[test]
fn tail_takes_an_address_as_a_user_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, logs) = headless(dir.path());
    for url in [addr.clone(), format!("http://{addr}"), format!("ws://{addr}/"), format!("ws://{addr}/ws")] {
        let tail = Tail::start(&url);
        let started = Instant::now();
        // A signal every few candles of 20 ms: one comes within seconds (a
        // loaded machine may take longer; no wait is a fixed guess).
        tail.first_record(Duration::from_secs(20));
        let (records, err) = tail.stop();
        assert!(!records.is_empty(), "{url}: nothing in {:?}: {err}", started.elapsed());
        assert!(records.iter().all(|r| r["type"] == "signal"), "{url}: {records:?}");
    }
    let out = pipwatch().args(["tail", &format!("ws://{addr}/events")]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("ws://{addr}/events answered 404 Not Found: pipwatch serves its events at /ws")),
        "{err}"
    );
    stop_and_read_signals(child, logs);
}

/// A restarted instance shows where the last one left off: each pair's last
/// candle and the recent signals with their deliveries, in the console's
/// snapshot, before any new candle. (A restart used to start blank: on H4
/// the pairs stayed empty for hours and the signals feed until a new one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_shows_where_the_last_run_left_off() {
    let dir = tempfile::tempdir().unwrap();
    // The first 400 hours of 2017: a handful of signals, all delivered quickly.
    let history = std::fs::read_to_string(common::data_file()).unwrap();
    let rows: Vec<&str> = history.lines().take(401).collect();
    let csv = dir.path().join("EUR_USD_H1_2017_ask.csv");
    std::fs::write(&csv, rows.join("\n")).unwrap();
    let discord = common::discord::start().await;
    let config = config_file(
        dir.path(),
        "restart.toml",
        &format!(
            "[market]\nsource = \"csv\"\n[market.csv]\npath = \"{}\"\n\
             [[notify.routes]]\nname = \"signals\"\nwebhook = \"{}\"\n\
             [[notify.routes]]\nname = \"down\"\nwebhook = \"http://127.0.0.1:9/api/webhooks/2/y\"\n",
            csv.display(),
            discord.webhook(1, "t"),
        ),
    );
    let (first, _, logs) = headless_with(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Every signal of the history delivered to the live route.
    let expected = pipwatch().args(["replay"]).arg(&csv).output().unwrap();
    let expected: Vec<String> =
        json_lines(&expected.stdout).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert!(expected.len() >= 3, "too few signals to test with: {expected:?}");
    while discord.world.lock().unwrap().delivered_ids().len() < expected.len() {
        assert!(Instant::now() < deadline, "not delivered: {:?}", discord.world.lock().unwrap().delivered_ids());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stop_and_read_signals(first, logs), expected);

    let (second, addr, logs) = headless_with(dir.path(), &config);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let snapshot = next_of(&mut ws, "snapshot").await;
    let printed = stop_and_read_signals(second, logs);
    assert!(printed.is_empty(), "the second run signalled again: {printed:?}");

    let view = &snapshot;
    let last_row: Vec<f64> = rows[400].split(',').skip(1).take(4).map(|v| v.trim().parse().unwrap()).collect();
    let pair = &view["pairs"][0];
    assert_eq!((pair["instrument"].as_str(), pair["timeframe"].as_str()), (Some("EUR_USD"), Some("H1")), "{view}");
    let candle = &pair["candle"];
    let ohlc: Vec<f64> = ["open", "high", "low", "close"].iter().map(|k| candle[k].as_f64().unwrap()).collect();
    assert_eq!(ohlc, last_row, "{candle}");
    assert!(candle["fast"].is_f64() && candle["slow"].is_f64() && candle["atr"].is_f64(), "{candle}");
    assert_eq!(pair["last_signal"]["id"].as_str(), expected.last().map(String::as_str));
    // The recent candles (sparkline, chart) kept at the clean stop: the last CLOSES_KEPT.
    let kept = pipwatch::view::CLOSES_KEPT;
    let bars = pair["bars"].as_array().unwrap();
    let ohlc_of = |b: &serde_json::Value| -> Vec<f64> {
        ["open", "high", "low", "close"].iter().map(|k| b[k].as_f64().unwrap()).collect()
    };
    let csv_ohlc: Vec<Vec<f64>> = rows[401 - kept..401]
        .iter()
        .map(|r| r.split(',').skip(1).take(4).map(|v| v.trim().parse().unwrap()).collect())
        .collect();
    assert_eq!(bars.iter().map(ohlc_of).collect::<Vec<_>>(), csv_ohlc);
    assert_eq!(bars[kept - 1]["time"], candle["time"]);

    let shown: Vec<&str> =
        view["signals"].as_array().unwrap().iter().map(|s| s["signal"]["id"].as_str().unwrap()).collect();
    let newest_first: Vec<&str> = expected.iter().rev().map(String::as_str).collect();
    assert_eq!(shown, newest_first);
    for s in view["signals"].as_array().unwrap() {
        let routes: Vec<(&str, &str)> = s["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["route"].as_str().unwrap(), d["state"].as_str().unwrap()))
            .collect();
        assert_eq!(routes.len(), 2, "{s}");
        assert!(routes.contains(&("signals", "delivered")), "{s}");
        assert!(routes.contains(&("down", "queued")) || routes.contains(&("down", "failed")), "{s}");
    }
}

/// A pair taken out of the config does not come back, frozen, from the
/// last run's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_shows_only_the_pairs_still_configured() {
    let dir = tempfile::tempdir().unwrap();
    // The first run stores signals of EUR_USD and of another pair (run
    // until both came: `records_until` fails the test if they never do).
    let mut cmd = pipwatch_std();
    cmd.args(["headless", "-c"]).arg(fast_demo(dir.path())).arg("--data-dir").arg(dir.path().join("data"));
    let (mut eur, mut other) = (false, false);
    common::records_until(cmd, |r| {
        if r["type"] == "signal"
            && let Some(id) = r["id"].as_str()
        {
            *(if id.starts_with("EUR_USD:") { &mut eur } else { &mut other }) = true;
        }
        eur && other
    });
    let fewer = config_file(
        dir.path(),
        "fewer.toml",
        "[market]\ninstruments = [\"EUR_USD\"]\ntimeframes = [\"M1\"]\n[market.demo]\ncandle_every = \"1h\"\n[strategy]\nfast = 3\nslow = 5\natr = 3\n",
    );
    let (second, addr, logs) = headless_with(dir.path(), &fewer);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
    let snapshot = next_of(&mut ws, "snapshot").await;
    stop_and_read_signals(second, logs);
    let pairs: Vec<&str> =
        snapshot["pairs"].as_array().unwrap().iter().map(|p| p["instrument"].as_str().unwrap()).collect();
    assert_eq!(pairs, ["EUR_USD"], "{snapshot}");
    let signals: Vec<&str> =
        snapshot["signals"].as_array().unwrap().iter().map(|s| s["signal"]["id"].as_str().unwrap()).collect();
    assert!(!signals.is_empty() && signals.iter().all(|id| id.starts_with("EUR_USD:M1:")), "{signals:?}");
}

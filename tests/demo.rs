//! The demo with recorded history, through the binary: `--source demo:DIR`
//! and `[market.demo] history`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Running, config_file, data_file, json_lines, of_type, pipwatch, pipwatch_std};

/// The first `rows` candles of the shipped history as `dir/hist/EUR_USD.csv`.
fn short_history(dir: &std::path::Path, rows: usize) -> std::path::PathBuf {
    let hist = dir.join("hist");
    std::fs::create_dir_all(&hist).unwrap();
    let text = std::fs::read_to_string(data_file()).unwrap();
    let cut: String = text.lines().take(rows + 1).map(|l| format!("{l}\n")).collect();
    std::fs::write(hist.join("EUR_USD.csv"), cut).unwrap();
    hist
}

/// Runs headless until the history has been played (the feed says no pair
/// plays history any more); returns its records.
fn play_headless(dir: &std::path::Path, config: &std::path::Path, source: &str) -> Vec<serde_json::Value> {
    let mut child = pipwatch_std()
        .args(["headless", "-c"])
        .arg(config)
        .args(["--source", source, "--data-dir"])
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _run = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut played = false;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let was_playing = played;
        if v["type"] == "feed" {
            played = v["history"].as_array().is_some_and(|h| !h.is_empty());
        }
        lines.push(v);
        if was_playing && !played {
            return lines;
        }
    }
    panic!("the history did not end within 90 s: {} records", lines.len());
}

/// The demo plays a history exactly as a replay and a backtest of the file
/// see it: after its 60 warm-up candles, the same signals and the same
/// trade outcomes, record for record.
#[test]
fn a_demo_of_a_history_signals_and_trades_as_a_backtest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 500;
    let hist = short_history(dir.path(), rows);
    let config = config_file(
        dir.path(),
        "pipwatch.toml",
        "[market]\ninstruments = [\"EUR_USD\"]\ntimeframes = [\"H1\"]\n[market.demo]\ncandle_every = \"10ms\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
    );
    let records = play_headless(dir.path(), &config, &format!("demo:{}", hist.display()));
    let file = hist.join("EUR_USD.csv");
    let text = std::fs::read_to_string(&file).unwrap();
    let candle_times: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(candle_times.len(), rows);
    // dd.mm.yyyy HH:MM:SS.mmm → the RFC 3339 the records carry.
    let rfc = |t: &str| format!("{}-{}-{}T{}Z", &t[6..10], &t[3..5], &t[0..2], &t[11..19]);
    let (warm_end, last) = (rfc(candle_times[60]), rfc(candle_times[rows - 1]));

    let replay = pipwatch().args(["replay", "--instrument", "EUR_USD"]).arg(&file).output().unwrap();
    assert!(replay.status.success());
    let replayed = json_lines(&replay.stdout);
    let live = |r: &&serde_json::Value, at: &str| r[at].as_str().unwrap() >= warm_end.as_str();
    let expected: Vec<&serde_json::Value> =
        of_type(&replayed, "signal").into_iter().filter(|r| live(r, "time")).collect();
    let signals: Vec<&serde_json::Value> =
        of_type(&records, "signal").into_iter().filter(|r| r["time"].as_str().unwrap() <= last.as_str()).collect();
    assert!(expected.len() >= 10, "{} signals", expected.len());
    assert_eq!(signals, expected);

    let backtest =
        pipwatch().args(["backtest", "--instrument", "EUR_USD", "--format", "json"]).arg(&file).output().unwrap();
    assert!(backtest.status.success());
    let tested = json_lines(&backtest.stdout);
    let closed_in_file = |r: &&serde_json::Value| r["exit_time"].as_str().is_some_and(|t| t <= last.as_str());
    let without_type = |r: &serde_json::Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("type");
        r
    };
    let trades: Vec<serde_json::Value> = of_type(&tested, "trade")
        .into_iter()
        .filter(|r| live(r, "entry_time"))
        .filter(closed_in_file)
        .map(without_type)
        .collect();
    let outcomes: Vec<serde_json::Value> =
        of_type(&records, "outcome").into_iter().filter(closed_in_file).map(without_type).collect();
    assert!(trades.len() >= 5, "{} trades", trades.len());
    assert_eq!(outcomes, trades);
    // Past the history the pair goes on simulated, and the feed says so.
    let last_feed = of_type(&records, "feed").pop().unwrap();
    assert!(last_feed.get("history").is_none(), "{last_feed}");
}

#[test]
fn a_history_that_is_not_there_is_an_error_naming_the_key() {
    let out = pipwatch().args(["headless", "--source", "demo:/no/such/dir"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("market.demo.history") && stderr.contains("/no/such/dir"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "c.toml", "[market.demo]\nhistory = \"\"\n");
    let out = pipwatch().args(["config", "check", "-c"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("market.demo.history") && stderr.contains("bundled"), "{stderr}");
}

/// `status` and `/health` say the demo plays history, and carry its clock.
#[test]
fn status_names_the_history_and_the_demo_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "pipwatch.toml",
        "[market]\ninstruments = [\"EUR_USD\", \"GBP_USD\"]\n[market.demo]\ncandle_every = \"50ms\"\nhistory = \"bundled\"\n[health]\nsample_every = \"200ms\"\n",
    );
    let (_run, addr, _logs) = common::headless(&config, &dir.path().join("data"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = pipwatch().args(["status", "--json", &addr]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(clock) = v["demo_clock"].as_str() {
            assert_eq!(v["source"], "demo");
            assert_eq!(v["history"], serde_json::json!(["EUR_USD"]));
            // Both pairs start where the history does.
            assert!(clock.starts_with("2017-"), "{clock}");
            let text = pipwatch().args(["status", &addr]).output().unwrap();
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(
                text.contains("DEMO market: recorded history for EUR_USD") && text.contains("demo clock 2017-"),
                "{text}"
            );
            // `tail` carries the clock in every health record, beside the sample's real time.
            let mut tail = Running(
                pipwatch_std()
                    .args(["tail", &format!("ws://{addr}/ws"), "--topics", "health"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let stdout = tail.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                if let Some(Ok(line)) = BufReader::new(stdout).lines().next() {
                    let _ = tx.send(line);
                }
            });
            let line = rx.recv_timeout(Duration::from_secs(20)).expect("no health record from tail");
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(record["type"], "health");
            assert!(record["demo_clock"].as_str().is_some_and(|c| c.starts_with("2017-")), "{record}");
            assert!(record["time"].as_str().is_some_and(|t| !t.starts_with("2017-")), "{record}");
            return;
        }
        assert!(Instant::now() < deadline, "no demo clock in status: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

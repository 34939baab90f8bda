//! Live trade tracking: a running instance closes each signal's paper trade
//! by the same rules as `backtest`, commits the outcome with the candle that
//! closed it, and resumes open trades after a crash.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::{data_file, json_lines, of_type, pipwatch, pipwatch_std};
use pipwatch::store::Store;
use pipwatch::types::{Instrument, SeriesKey, Timeframe};

/// The closed trades `backtest` finds on the shipped data, by id, without
/// the record's `type`.
fn backtested() -> BTreeMap<String, serde_json::Value> {
    let out = pipwatch().arg("backtest").arg(data_file()).args(["--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    of_type(&records, "trade")
        .into_iter()
        .filter(|t| t["exit_reason"] != "open")
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().unwrap().remove("type");
            (t["id"].as_str().unwrap().to_string(), t)
        })
        .collect()
}

fn without_type(records: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    of_type(records, kind)
        .into_iter()
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().unwrap().remove("type");
            t
        })
        .collect()
}

/// Headless on a CSV source emits `outcome` records identical to the
/// backtest's closed trades on the same file.
#[test]
fn live_outcomes_equal_the_backtests_closed_trades() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("csv:{}", data_file().display());
    let mut cmd = common::pipwatch_std();
    cmd.args(["headless", "--no-server", "--source", &source, "--data-dir"]).arg(dir.path().join("data"));
    let outcomes = without_type(&common::records_until(cmd, common::feed_finished), "outcome");
    let want = backtested();
    assert_eq!(outcomes.len(), want.len(), "one outcome per closed trade");
    for o in &outcomes {
        let id = o["id"].as_str().unwrap();
        assert_eq!(Some(o), want.get(id), "outcome {id}");
    }
}

/// Killed mid-way with trades open, then restarted on the same data
/// directory: every trade closes exactly once, as the backtest closes it.
#[test]
fn after_a_kill_every_trade_closes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let source = format!("csv:{}", data_file().display());
    // Paced, so the kill lands in the middle of the file.
    let mut child = pipwatch_std()
        .args(["headless", "--no-server", "--source", &source, "--data-dir"])
        .arg(&data)
        .env("PIPWATCH_MARKET__CSV__CANDLE_EVERY", "\"1ms\"")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Guarded: a failing test must not leave it running.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    // About a third of the file (6,225 candles at 1 ms each); the
    // assertion below checks the kill did land mid-way.
    std::thread::sleep(Duration::from_secs(2));
    assert!(Store::open(&data).is_err(), "the running instance holds the store");
    // SIGKILL: no clean stop, no final flush.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let first: Vec<serde_json::Value> =
        lines.join().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first = without_type(&first, "outcome");
    let want = backtested();
    assert!(!first.is_empty() && first.len() < want.len(), "{} of {} closed before the kill", first.len(), want.len());

    let mut cmd = common::pipwatch_std();
    cmd.args(["headless", "--no-server", "--source", &source, "--data-dir"]).arg(&data);
    let second = without_type(&common::records_until(cmd, common::feed_finished), "outcome");

    // Nothing reported twice across the two runs.
    let mut seen = BTreeMap::new();
    for o in first.iter().chain(&second) {
        let id = o["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone(), o.clone()).is_none(), "outcome {id} reported twice");
        assert_eq!(Some(o), want.get(&id), "outcome {id}");
    }
    // And every trade is stored closed exactly as the backtest closes it (an
    // outcome committed just before the kill, never printed, is still there).
    let (store, _) = Store::open(&data).unwrap();
    let key = SeriesKey::new(Instrument::new("EUR_USD").unwrap(), Timeframe::H1);
    let stored = store.outcomes(&key, 100_000).unwrap();
    assert_eq!(stored.len(), want.len());
    for t in stored {
        let mut v = serde_json::to_value(&t).unwrap();
        v.as_object_mut().unwrap().remove("type");
        assert_eq!(Some(&v), want.get(&t.id), "stored outcome {}", t.id);
    }
}

/// On Discord: a route that takes `outcome` gets one message per closed
/// trade, and every signal message ends showing how its trade ended (edited
/// in place, or sent with it when the trade closed before it went out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_closed_trade_reaches_discord() {
    let server = common::discord::start().await;
    server.world.lock().unwrap().limit = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config_file(
        dir.path(),
        "routes.toml",
        &format!(
            "[notify]\nmax_attempts = 100\n\
             [[notify.routes]]\nname = \"signals\"\nwebhook = \"{}\"\nevents = [\"signal\"]\n\
             [[notify.routes]]\nname = \"outcomes\"\nwebhook = \"{}\"\nevents = [\"outcome\"]\n",
            server.webhook(1, "s"),
            server.webhook(2, "o"),
        ),
    );
    let source = format!("csv:{}", data_file().display());
    let data = dir.path().join("data");
    let out = tokio::task::spawn_blocking(move || {
        pipwatch()
            .args(["headless", "--no-server", "--for", "8s", "--source", &source, "-c"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = backtested();
    let w = server.world.lock().unwrap();
    // The outcomes route: one embed per closed trade, nothing else.
    let mut outcome_ids: Vec<String> =
        w.requests.iter().filter(|r| r.webhook == "2" && r.status == 200).flat_map(|r| r.ids()).collect();
    outcome_ids.sort();
    assert_eq!(outcome_ids, want.keys().cloned().collect::<Vec<_>>());
    // The signals route: each signal's message, as it stands now.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for r in w.requests.iter().filter(|r| r.webhook == "1" && r.method == "POST" && r.status == 200) {
        let id = r.ids();
        let message = w.messages.values().find(|m| {
            m.as_array().is_some_and(|e| {
                e.iter().map(|e| e["footer"]["text"].as_str().unwrap_or("")).eq(id.iter().map(String::as_str))
            })
        });
        let Some(embeds) = message.and_then(|m| m.as_array()) else { continue };
        for e in embeds {
            shown.insert(e["footer"]["text"].as_str().unwrap().to_string(), e["title"].as_str().unwrap().to_string());
        }
    }
    for (id, trade) in &want {
        let title = shown.get(id).unwrap_or_else(|| panic!("signal {id} never reached the signals route"));
        let r = trade["r"].as_f64().unwrap();
        assert!(title.ends_with(&format!("{r:+.1}R")), "{id}: {title} (r {r})");
    }
    assert!(w.requests.iter().all(|r| r.status == 200), "every request accepted");
}

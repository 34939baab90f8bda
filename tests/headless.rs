//! `pipwatch headless` on the demo market through the binary: JSON lines,
//! --for, SIGTERM, restart resume from sled, the data-directory lock.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{config_file, exit_within, json_lines, of_type, pipwatch, pipwatch_std};

/// Two pairs, fast candles, so a couple of seconds hold many of them.
fn fast_demo(dir: &std::path::Path) -> std::path::PathBuf {
    config_file(
        dir,
        "fast.toml",
        "[market]\ninstruments = [\"EUR_USD\", \"USD_JPY\"]\ntimeframes = [\"H1\"]\n[market.demo]\ncandle_every = \"40ms\"\n[strategy]\nfast = 3\nslow = 6\natr = 3\n",
    )
}

fn candles_by_series(records: &[serde_json::Value]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for c in of_type(records, "candle") {
        out.entry(format!("{}:{}", c["instrument"], c["timeframe"]))
            .or_default()
            .push(c["time"].as_str().unwrap().to_string());
    }
    out
}

/// `pipwatch headless ARGS --data-dir DATA -c CFG`, run to its end.
fn headless(args: &[&str], data: &std::path::Path, cfg: &std::path::Path) -> std::process::Output {
    pipwatch().arg("headless").args(args).arg("--data-dir").arg(data).arg("-c").arg(cfg).output().unwrap()
}

#[test]
fn runs_for_a_while_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let out = pipwatch()
        .args(["headless", "--for", "2s", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    // No candle records without --candles, no quotes ever.
    assert!(of_type(&records, "candle").is_empty() && of_type(&records, "quote").is_empty());
    assert_eq!(records[0]["type"], "feed");
    let signals = of_type(&records, "signal");
    assert!(!signals.is_empty(), "no signal in 2s of a fast demo");
    for s in &signals {
        assert!(s["id"].as_str().unwrap().ends_with(s["side"].as_str().unwrap()));
        assert_eq!(s["strategy"], "sma 3/6");
    }
    // Logs are JSON on stderr, stdout is only records.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{stderr}");
    assert!(stderr.contains("--for elapsed; stopping") && stderr.contains("engine stopped"), "{stderr}");
    // One "message" per line: a field of that name would be a second key,
    // and a JSON reader keeps only one of them.
    let twice: Vec<&str> = stderr.lines().filter(|l| l.matches("\"message\":").count() > 1).collect();
    assert!(twice.is_empty(), "{twice:#?}");
    let feed = stderr.lines().find(|l| l.contains("\"message\":\"feed\"") && l.contains("\"state\":\"live\""));
    assert!(feed.is_some_and(|l| l.contains("\"detail\":\"one candle every 40ms\"")), "{stderr}");
}

#[test]
fn a_restart_resumes_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let data = dir.path().join("data");
    let run = || {
        let out = headless(&["--candles", "--for", "1500ms"], &data, &cfg);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (json_lines(&out.stdout), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (first, _) = run();
    let (second, stderr) = run();
    assert!(stderr.contains("\"restored\":2"), "{stderr}");
    let (a, b) = (candles_by_series(&first), candles_by_series(&second));
    assert_eq!(a.len(), 2);
    for (series, times) in &a {
        let last = times.last().unwrap();
        let next = &b[series][0];
        let expected = chrono::DateTime::parse_from_rfc3339(last).unwrap() + chrono::Duration::hours(1);
        // No warm-up again and no gap: the walk continues with the next candle.
        assert_eq!(next, &expected.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "{series}");
    }
    let mut ids = HashSet::new();
    for s in of_type(&first, "signal").into_iter().chain(of_type(&second, "signal")) {
        assert!(ids.insert(s["id"].as_str().unwrap().to_string()), "signal {} sent twice", s["id"]);
    }
}

/// A data directory with more stored signals for one series than are kept:
/// the instance prunes the oldest when it starts, says so, and the rest of
/// the directory is untouched.
#[test]
fn a_long_signal_history_is_pruned_when_the_instance_starts() {
    use pipwatch::engine::{SeriesState, StrategyParams};
    use pipwatch::event::Signal;
    use pipwatch::store::{CandleCommit, SIGNALS_KEPT_PER_SERIES, Store};
    use pipwatch::time::Ts;
    use pipwatch::types::{Instrument, SeriesKey, Side, Timeframe};

    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let data = dir.path().join("data");
    // A series the demo does not run, so its signals are only the old ones.
    let aud = Instrument::new("AUD_USD").unwrap();
    let extra = 50;
    let ids: Vec<String> = {
        let (store, _) = Store::open(&data).unwrap();
        let state = SeriesState::new(StrategyParams::default());
        let ids = (0..(SIGNALS_KEPT_PER_SERIES + extra) as i64)
            .map(|n| {
                let time = Ts(1_500_000_000 + n * 3600);
                let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
                let s = Signal {
                    id: Signal::make_id(aud, Timeframe::H1, time, side),
                    instrument: aud,
                    timeframe: Timeframe::H1,
                    time,
                    side,
                    price: 0.75,
                    fast: 0.75,
                    slow: 0.75,
                    atr: 0.001,
                    stop_loss: 0.7485,
                    take_profit: 0.753,
                    strategy: "sma 10/20".into(),
                };
                let c = CandleCommit {
                    key: SeriesKey::new(aud, Timeframe::H1),
                    state: &state,
                    candle: None,
                    signal: Some(&s),
                    routes: &[],
                    now: time,
                    priority: pipwatch::store::Priority::High,
                };
                assert!(store.commit(&c).unwrap());
                s.id
            })
            .collect();
        store.flush_blocking().unwrap();
        ids
    };
    let out = headless(&["--for", "1s", "--no-server"], &data, &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("old stored signals pruned") && stderr.contains(&format!("\"deleted\":{extra}")),
        "{stderr}"
    );
    let (store, _) = Store::open(&data).unwrap();
    assert!(store.signal(&ids[extra - 1]).unwrap().is_none(), "the oldest are gone");
    assert!(ids[extra..].iter().all(|id| store.signal(id).unwrap().is_some()), "the newest are all kept");
}

/// A write the disk refuses stops the instance with the reason and what to
/// do, and loses nothing: everything it published had been made durable, so
/// a restart resumes with the next candle of every series. The refusal here
/// is a file size limit (EFBIG), which any user can set; a full disk
/// (ENOSPC) takes the same path through sled and the live task.
#[cfg(target_os = "linux")]
#[test]
fn a_refused_write_stops_the_instance_and_loses_nothing_published() {
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 28 series at 10 ms: sled's log reaches the limit within seconds.
    let cfg = dir.path().join("busy.toml");
    std::fs::write(
        &cfg,
        "[market]\ntimeframes = [\"M1\", \"M5\", \"M15\", \"H1\"]\n[market.demo]\ncandle_every = \"10ms\"\n",
    )
    .unwrap();
    let limit: libc::rlim_t = 1 << 20;
    let mut limited = pipwatch_std();
    limited.args(["headless", "--candles", "--no-server", "--for", "60s", "--data-dir"]).arg(&data).arg("-c").arg(&cfg);
    // SAFETY: between fork and exec only async-signal-safe calls, on the
    // child's own limits and signal dispositions. Without SIG_IGN the
    // kernel's SIGXFSZ would kill the child instead of failing the write.
    unsafe {
        limited.pre_exec(move || {
            let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = limited.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("--for elapsed"), "stopped by --for, not by the refused write: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: data directory {}: the database file has reached the largest size allowed",
            data.display()
        )) && last.contains("Raise the limit and start pipwatch again")
            && !last.contains("Os {"),
        "{last}"
    );
    let before = candles_by_series(&json_lines(&out.stdout));
    assert_eq!(before.len(), 28, "every series published candles before the limit");

    // H1 is built from 60 M1 steps of 10 ms: long enough for each series' next candle.
    let out = headless(&["--candles", "--no-server", "--for", "1500ms"], &data, &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("\"restored\":28"), "{stderr}");
    let after = candles_by_series(&json_lines(&out.stdout));
    for (series, times) in &before {
        let last = chrono::DateTime::parse_from_rfc3339(times.last().unwrap()).unwrap();
        let next = chrono::DateTime::parse_from_rfc3339(&after[series][0]).unwrap();
        let step = chrono::DateTime::parse_from_rfc3339(&times[1]).unwrap()
            - chrono::DateTime::parse_from_rfc3339(&times[0]).unwrap();
        assert_eq!(next, last + step, "{series}: the restart goes on from the last published candle");
    }
}

#[test]
fn the_same_seed_gives_the_same_candles() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let run = |data: &str| {
        let out = pipwatch()
            .args(["headless", "--candles", "--for", "700ms", "--data-dir"])
            .arg(dir.path().join(data))
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        of_type(&json_lines(&out.stdout), "candle").into_iter().take(60).cloned().collect::<Vec<_>>()
    };
    let (mut a, mut b) = (run("a"), run("b"));
    if a.first().map(|c| &c["time"]) != b.first().map(|c| &c["time"]) {
        // The two runs straddled an hour boundary, so their warm-ups start at
        // different times: run both again.
        (a, b) = (run("c"), run("d"));
    }
    assert_eq!(a.len(), 60);
    assert_eq!(a, b);
}

#[test]
fn sigterm_stops_cleanly_and_a_second_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let data = dir.path().join("data");
    let mut cmd = pipwatch_std();
    cmd.args(["headless", "--data-dir"]).arg(&data).arg("-c").arg(&cfg);
    let mut run = started(cmd);

    let second = pipwatch().args(["headless", "--for", "1s", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains(&format!("the data directory {} is in use by another pipwatch", data.display())), "{msg}");
    assert!(msg.contains("pipwatch attach"), "{msg}");
    // The dead list lives in that directory: pointing elsewhere would not help.
    let dead = pipwatch().args(["dead", "list", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(dead.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&dead.stderr);
    assert!(msg.contains(&format!("the data directory {} is in use by a running pipwatch", data.display())), "{msg}");
    assert!(msg.contains("could not be asked through its server") && msg.contains("stop it (Ctrl-C"), "{msg}");

    let status = std::process::Command::new("kill").args(["-TERM", &run.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = exit_within(&mut run.child, Duration::from_secs(10)).expect("SIGTERM did not stop headless");
    assert!(exit.success(), "{exit:?}");
    let rest = run.rest();
    assert!(rest.contains("terminated; stopping") && rest.contains("engine stopped"), "{rest}");
}

#[test]
fn a_closed_stdout_is_said_once_and_the_instance_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let mut child = pipwatch_std()
        .args(["headless", "--for", "3s", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one record, then go away, as `head -1` would.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    assert!(stdout.read_line(&mut first).unwrap() > 0, "no record before stdout closed");
    assert!(serde_json::from_str::<serde_json::Value>(&first).is_ok(), "{first}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr.lines().filter(|l| l.contains("stdout was closed")).count();
    assert_eq!(said, 1, "{stderr}");
    // It went on to the end of --for and stopped the way it always does.
    assert!(stderr.contains("--for elapsed; stopping") && stderr.contains("engine stopped"), "{stderr}");
}

#[test]
fn an_invalid_config_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[market]\ninstruments = []\n").unwrap();
    let out = pipwatch().args(["headless", "--for", "1s", "-c"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("market.instruments = '[]': is empty"));
}

/// A CSV feed that cannot be used is bad input, like a bad config: exit
/// code 2, and the message names the file and what to do.
#[test]
fn an_unusable_csv_feed_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let named_for_nothing = dir.path().join("feed");
    std::fs::create_dir(&named_for_nothing).unwrap();
    std::fs::write(named_for_nothing.join("history.csv"), "time,open,high,low,close\n").unwrap();
    let cases = [
        // The key is named: the path may be the built-in default.
        (
            dir.path().join("missing.csv"),
            format!(
                "market.csv.path: cannot read {}: No such file or directory (os error 2). Set it in the config or with --source csv:PATH",
                dir.path().join("missing.csv").display()
            ),
        ),
        (
            named_for_nothing.clone(),
            format!(
                "{}: the file name does not start with an instrument (e.g. EUR_USD.csv): rename it: in a directory, each file's name gives its pair",
                named_for_nothing.join("history.csv").display()
            ),
        ),
    ];
    for (path, said) in cases {
        let out = pipwatch()
            .args(["headless", "--for", "5s", "--no-server", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--source")
            .arg(format!("csv:{}", path.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: ") && last.contains(&said), "{last}");
    }
}

/// A feed's file named for no pair is the config's pair only when the
/// config names just one; among several (the defaults' seven) it is not
/// silently the first.
#[test]
fn a_csv_feed_file_named_for_no_pair_takes_the_only_configured_pair() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.csv");
    let text = std::fs::read_to_string(common::data_file()).unwrap();
    std::fs::write(&path, text.lines().take(50).collect::<Vec<_>>().join("\n")).unwrap();
    let source = format!("csv:{}", path.display());
    let run = |instruments: Option<&str>| {
        let mut cmd = pipwatch();
        cmd.args(["headless", "--for", "1s", "--candles", "--no-server", "--source", &source, "--data-dir"])
            .arg(dir.path().join("data"));
        if let Some(i) = instruments {
            cmd.env("PIPWATCH_MARKET__INSTRUMENTS", i);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let said = format!(
        "{}: the file name does not start with an instrument (e.g. EUR_USD.csv): rename it, or make its pair the only one in market.instruments",
        path.display()
    );
    assert!(stderr.contains(&said), "{stderr}");

    let out = run(Some("GBP_USD"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let candles = of_type(&json_lines(&out.stdout), "candle").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(candles.len(), 49);
    assert!(candles.iter().all(|c| c["instrument"] == "GBP_USD" && c["timeframe"] == "H1"));
}

/// The CSV feed's bad rows are `rejected` records, as the engine's bad
/// candles are: where the row is and what is wrong, with the series'
/// running count. A restart that skips the rows already applied does not
/// report their bad rows again.
#[test]
fn a_csv_feeds_bad_rows_are_rejected_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("GBP_USD_H1.csv");
    let mut text = String::from("time,open,high,low,close\r\n");
    for h in 0..6 {
        text.push_str(&format!("2024-01-01 {h:02}:00:00,1.25,1.26,1.24,1.25\r\n"));
    }
    text.push_str("2024-01-01 06:00:00,1.25,1.24,1.26,1.25\r\n"); // line 8: high < low
    text.push_str("yesterday,1.25,1.26,1.24,1.25\r\n"); // line 9: no time
    text.push_str("2024-01-01 07:00:00,1.25,1.26,1.24,1.25\r\n");
    std::fs::write(&path, text).unwrap();
    let data = dir.path().join("data");
    let source = format!("csv:{}", path.display());
    let run = || {
        let out = pipwatch()
            .args(["headless", "--for", "1s", "--no-server", "--source", &source, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out.stdout)
    };
    let first = run();
    let rejected = of_type(&first, "rejected");
    let shown = path.display();
    let got: Vec<(&str, &str, u64)> = rejected
        .iter()
        .map(|r| (r["time"].as_str().unwrap(), r["reason"].as_str().unwrap(), r["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(got.len(), 2, "{rejected:?}");
    assert_eq!((got[0].0, got[0].2), ("2024-01-01T06:00:00Z", 1));
    assert_eq!(got[0].1, format!("{shown}:8: high 1.24 is below low 1.26"));
    // A row whose time cannot be read sits after the last good candle.
    assert_eq!((got[1].0, got[1].2), ("2024-01-01T05:00:00Z", 2));
    assert!(got[1].1.starts_with(&format!("{shown}:9: 'yesterday' is not a time")), "{}", got[1].1);
    assert!(rejected.iter().all(|r| r["instrument"] == "GBP_USD" && r["timeframe"] == "H1"));

    let second = run();
    assert!(of_type(&second, "rejected").is_empty(), "{second:?}");
}

#[test]
fn a_csv_feed_gives_replays_signals_and_skips_what_was_applied() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let source = format!("csv:{}", common::data_file().display());
    // Until the file has run out and three health samples came after it:
    // the instance still serves, health checks included, until it is
    // stopped (`records_until` fails the test if they never come).
    let run = || {
        let mut cmd = pipwatch_std();
        cmd.args(["headless", "--source", &source, "--data-dir"])
            .arg(&data)
            .env("PIPWATCH_HEALTH__SAMPLE_EVERY", "\"200ms\"");
        let mut health_after_finish = None;
        common::records_until(cmd, |r| {
            if common::feed_finished(r) {
                health_after_finish = Some(0);
            }
            if r["type"] == "health"
                && let Some(n) = health_after_finish.as_mut()
            {
                *n += 1;
            }
            health_after_finish.is_some_and(|n| n >= 3)
        })
    };
    let first = run();
    let replayed = pipwatch().arg("replay").arg(common::data_file()).output().unwrap();
    let want: Vec<String> =
        json_lines(&replayed.stdout).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let got: Vec<String> = of_type(&first, "signal").iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got.len(), 326);
    assert_eq!(got, want, "live CSV feed and replay disagree");
    let done =
        of_type(&first, "feed").into_iter().find(|f| f["state"] == "finished").cloned().expect("no finished status");
    assert!(done["message"].as_str().unwrap().contains("6225 candles sent, 0 already applied"), "{done}");

    // Restarted on the same data directory: everything was applied, nothing is signalled again.
    let second = run();
    assert!(of_type(&second, "signal").is_empty());
    let done =
        of_type(&second, "feed").into_iter().find(|f| f["state"] == "finished").cloned().expect("no finished status");
    assert!(done["message"].as_str().unwrap().contains("0 candles sent, 6225 already applied"), "{done}");
}

/// Starts headless from `cmd` and returns it once its engine runs, with its stderr.
/// A headless child that is killed if the test fails before it stops it:
/// a failing test must never leave a process running. Its stderr lines
/// arrive on a channel, so that waiting for one has a real deadline.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Everything it wrote to stderr after what was read, once it has exited.
    fn rest(&mut self) -> String {
        let mut rest = String::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            rest.push_str(&line);
        }
        rest
    }
}

/// Spawns `cmd` with SIGHUP at its default (whatever the test runner's is:
/// under `nohup` it is ignored, and a child would inherit that) and waits,
/// at most 20 s, until its engine has started.
fn started(mut cmd: std::process::Command) -> Running {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line + "\n").is_err() {
                return;
            }
        }
    });
    let run = Running { child, lines };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match run.lines.recv_timeout(left) {
            Ok(line) if line.contains("engine started") => return run,
            Ok(_) => {}
            // The guard kills it on the way out.
            Err(e) => panic!("headless did not start within 20 s: {e}"),
        }
    }
}

/// A dropped SSH session hangs up the terminal: headless in a terminal stops
/// as cleanly as on SIGTERM. Without a terminal (a service) SIGHUP reloads
/// the config and it goes on; under `nohup` the hangup is ignored, as nohup
/// promises.
#[test]
fn a_hangup_stops_it_in_a_terminal_reloads_a_service_and_nohup_ignores_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast_demo(dir.path());
    let kill = |pid: u32, sig: &str| {
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    };

    // In a terminal: `script` gives it a pty for stdin, stdout and stderr,
    // and copies what it writes to our pipe.
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    let inner = format!(
        "exec '{}' headless --data-dir '{}' -c '{}'",
        bin.display(),
        dir.path().join("t").display(),
        cfg.display()
    );
    // script copies the terminal to its stdout; `started` reads stderr.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "exec script -qefc \"$1\" /dev/null >&2", "sh", &inner])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPWATCH_LOG", "info,sled=warn")
        .env(common::ANY_PORT.0, common::ANY_PORT.1)
        .stdin(Stdio::null());
    let mut run = started(cmd);
    // pipwatch is script's child (the shell exec'd it).
    let out = std::process::Command::new("pgrep").args(["-P", &run.child.id().to_string()]).output().unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("pipwatch under script");
    kill(pid, "-HUP");
    let exit =
        exit_within(&mut run.child, Duration::from_secs(10)).expect("SIGHUP did not stop headless in a terminal");
    let rest = run.rest();
    assert!(exit.success(), "{exit:?}: {rest}");
    assert!(rest.contains("the terminal hung up (SIGHUP); stopping") && rest.contains("engine stopped"), "{rest}");

    // A service (stderr is a pipe): reloads, and goes on.
    let mut cmd = pipwatch_std();
    cmd.args(["headless", "--data-dir"]).arg(dir.path().join("a")).arg("-c").arg(&cfg);
    let mut run = started(cmd);
    kill(run.child.id(), "-HUP");
    assert_eq!(exit_within(&mut run.child, Duration::from_secs(2)), None, "SIGHUP stopped a service");
    kill(run.child.id(), "-TERM");
    let exit = exit_within(&mut run.child, Duration::from_secs(10)).expect("SIGTERM did not stop headless");
    let rest = run.rest();
    assert!(exit.success(), "{exit:?}");
    assert!(rest.contains("SIGHUP: reloading the config") && rest.contains("config reloaded"), "{rest}");

    let mut cmd = std::process::Command::new("nohup");
    cmd.arg(assert_cmd::cargo::cargo_bin("pipwatch"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPWATCH_LOG", "info,sled=warn")
        .env(common::ANY_PORT.0, common::ANY_PORT.1)
        .args(["headless", "--data-dir"])
        .arg(dir.path().join("b"))
        .arg("-c")
        .arg(&cfg);
    let mut run = started(cmd);
    kill(run.child.id(), "-HUP");
    assert_eq!(exit_within(&mut run.child, Duration::from_secs(2)), None, "nohup's ignored hangup stopped it");
    kill(run.child.id(), "-TERM");
    let exit = exit_within(&mut run.child, Duration::from_secs(10)).expect("SIGTERM did not stop headless");
    assert!(exit.success(), "{exit:?}");
}

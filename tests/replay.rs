//! `pipwatch replay` through the binary.

mod common;

use common::{data_file, json_lines, of_type, pipwatch};
use pipwatch::engine::indicators::reference;

#[test]
fn real_history_signals_are_pinned() {
    let out = pipwatch().arg("replay").arg(data_file()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replayed 6225 candles from 1 file"), "{stderr}");
    assert!(stderr.contains("0 rejected rows"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.lines().all(|l| l.starts_with(r#"{"type":"signal","id":"EUR_USD:H1:2017-"#)));
    insta::assert_snapshot!("eur_usd_h1_2017_signals", stdout);
}

/// An independent check of the snapshot: the crossovers recomputed over the
/// raw file in exact integer arithmetic (prices have 5 decimals) must be
/// exactly the replayed ones. Exactness matters: on 2017-04-06 11:00 the
/// fast and slow SMAs are exactly equal, and a naive float recomputation
/// rounds that tie into a spurious crossing one candle early.
#[test]
fn replayed_signals_match_an_exact_recomputation() {
    let text = std::fs::read_to_string(data_file()).unwrap();
    let mut times = Vec::new();
    let mut hlc = Vec::new();
    let mut units = Vec::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        let close: f64 = f[4].parse().unwrap();
        let scaled = close * 1e5;
        assert!((scaled - scaled.round()).abs() < 1e-6, "more than 5 decimals: {l}");
        units.push(scaled.round() as i64);
        hlc.push((f[2].parse::<f64>().unwrap(), f[3].parse::<f64>().unwrap(), close));
        let d = f[0];
        times.push(format!("{}-{}-{}T{}Z", &d[6..10], &d[3..5], &d[0..2], &d[11..19]));
    }
    let atr = reference::atr(&hlc, 14);
    // sign(fast - slow) = sign(2 * sum10 - sum20), exactly.
    let diff = |t: usize| -> Option<i64> {
        (t >= 19).then(|| 2 * units[t - 9..=t].iter().sum::<i64>() - units[t - 19..=t].iter().sum::<i64>())
    };
    let mut want = Vec::new();
    for t in 1..units.len() {
        if let (Some(d), Some(pd), Some(_)) = (diff(t), diff(t - 1), atr[t]) {
            if d > 0 && pd <= 0 {
                want.push(format!("EUR_USD:H1:{}:buy", times[t]));
            } else if d < 0 && pd >= 0 {
                want.push(format!("EUR_USD:H1:{}:sell", times[t]));
            }
        }
    }
    let out = pipwatch().arg("replay").arg(data_file()).output().unwrap();
    let got: Vec<String> = json_lines(&out.stdout).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got.len(), want.len());
    let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "got {:?}", first_difference.map(|i| (&got[i], &want[i])));
    assert!(got.contains(&"EUR_USD:H1:2017-04-06T12:00:00Z:sell".to_string()));
}

#[test]
fn indicators_add_one_record_per_candle() {
    let out = pipwatch().args(["replay", "--indicators"]).arg(data_file()).output().unwrap();
    assert!(out.status.success());
    let records = json_lines(&out.stdout);
    let candles = of_type(&records, "candle");
    assert_eq!(candles.len(), 6225);
    assert_eq!(of_type(&records, "signal").len(), 326);
    assert!(candles[8]["fast"].is_null());
    let first10: f64 = candles[..10].iter().map(|c| c["close"].as_f64().unwrap()).sum::<f64>() / 10.0;
    assert!((candles[9]["fast"].as_f64().unwrap() - first10).abs() < 1e-12);
    assert!(candles[13]["atr"].is_null() && candles[14]["atr"].is_number());
    assert_eq!(candles[0]["time"], "2017-01-01T22:00:00Z");
}

#[test]
fn flags_override_the_strategy_and_are_validated() {
    let out = pipwatch()
        .args(["replay", "--ma", "ema", "--fast", "5", "--slow", "12", "--atr", "7"])
        .arg(data_file())
        .output()
        .unwrap();
    assert!(out.status.success());
    let records = json_lines(&out.stdout);
    assert!(!records.is_empty() && records.iter().all(|r| r["strategy"] == "ema 5/12"));

    let out = pipwatch().args(["replay", "--fast", "30"]).arg(data_file()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fast 30: strategy.fast: fast (30) must be smaller than slow (20)"), "{stderr}");
}

#[test]
fn bad_rows_are_reported_with_line_numbers_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("GBP_USD.csv");
    let mut text = String::from("time,open,high,low,close\n");
    for i in 0..40 {
        let p = 1.25 + (i as f64 / 5.0).sin() * 0.01;
        text.push_str(&format!("2024-01-01 {:02}:00:00,{p},{},{},{p}\n", i % 24, p + 0.001, p - 0.001));
        if i == 23 {
            break;
        }
    }
    text.push_str("2024-01-02 00:00:00,1.25,1.24,1.26,1.25\n"); // line 26: high < low
    text.push_str("2024-01-02 01:00:00,1.25,NaN,1.24,1.25\n"); // line 27: NaN
    text.push_str("2024-01-02 02:00:00,1.25,1.26,1.24\n"); // line 28: short row
    text.push_str("2024-01-02 03:00:00,1.25,1.26,1.24,1.25\n");
    std::fs::write(&path, text).unwrap();
    let out = pipwatch().args(["replay", "--indicators"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = path.display().to_string();
    assert!(stderr.contains(&format!("{shown}:26: high 1.24 is below low 1.26 (row skipped)")), "{stderr}");
    assert!(stderr.contains(&format!("{shown}:27: high is not a finite number (row skipped)")), "{stderr}");
    assert!(stderr.contains(&format!("{shown}:28: the row has no 'close' field (row skipped)")), "{stderr}");
    assert!(stderr.contains("replayed 25 candles") && stderr.contains("3 rejected rows"), "{stderr}");
    // The instrument comes from the file name, the timeframe from the data.
    let records = json_lines(&out.stdout);
    assert!(records.iter().all(|r| r["instrument"] == "GBP_USD" && r["timeframe"] == "H1"));
}

#[test]
fn missing_files_and_headers_are_clear_errors() {
    let out = pipwatch().args(["replay", "/nonexistent/EUR_USD.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: cannot read /nonexistent/EUR_USD.csv"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("EUR_USD.csv");
    std::fs::write(&path, "when,o,h,l,c\n1,2,3,4,5\n").unwrap();
    let out = pipwatch().arg("replay").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no time column: name it time, date, datetime, timestamp or gmt time"), "{stderr}");
    std::fs::write(&path, "time,o,h,l,c\n1,2,3,4,5\n").unwrap();
    let out = pipwatch().arg("replay").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no 'open' column in the header (found: time, o, h, l, c)"), "{stderr}");
}

#[test]
fn a_directory_of_instrument_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data_file()).unwrap();
    let head: String = text.lines().take(500).collect::<Vec<_>>().join("\n");
    std::fs::write(dir.path().join("EUR_USD.csv"), &head).unwrap();
    std::fs::write(dir.path().join("EUR_GBP.csv"), &head).unwrap();
    let out = pipwatch().args(["replay", "--indicators"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    let per = |i: &str| records.iter().filter(|r| r["type"] == "candle" && r["instrument"] == i).count();
    assert_eq!((per("EUR_USD"), per("EUR_GBP")), (499, 499));

    // A file that cannot be read fails the replay before anything is
    // printed, not after the files that sort before it.
    std::fs::write(dir.path().join("USD_JPY.csv"), "a,b\n1,2\n").unwrap();
    let out = pipwatch().args(["replay"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("USD_JPY.csv: no time column"));
}

/// On a terminal, replay shows a progress bar on stderr (and clears it before
/// the summary); in a pipe it does not. `script` gives the process a real pty.
#[test]
fn a_progress_bar_on_a_terminal_only() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed for this test (apt-get install bsdutils)");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("EUR_USD_H1.csv");
    let mut text = String::from("time,open,high,low,close\n");
    for i in 0..400_000i64 {
        let p = 1.1 + ((i as f64) / 50.0).sin() * 0.01;
        text.push_str(&format!("{},{p:.5},{:.5},{:.5},{p:.5}\n", 1_500_000_000 + i * 3600, p + 0.001, p - 0.001));
    }
    std::fs::write(&path, text).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("pipwatch");
    let cmd = format!("{} replay {} > /dev/null", bin.display(), path.display());
    let out = std::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains(" left)") && tty.contains("candles, "), "no progress bar drawn: {tty:?}");
    assert!(tty.contains("replayed 400000 candles"), "{tty:?}");

    // Not a terminal: only the summary.
    let out = common::pipwatch().arg("replay").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(" left)") && stderr.contains("replayed 400000 candles"), "{stderr}");
}

/// A bad row is named by the line it is on: right after a good row, in a
/// file with CRLF line ends (Dukascopy's, Excel's), and after empty lines.
#[test]
fn a_bad_row_is_named_by_its_own_line_whatever_ends_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("EUR_USD_H1.csv");
    let rows = [
        "time,open,high,low,close",                // 1
        "2024-01-01 00:00:00,1.10,1.11,1.09,1.10", // 2
        "2024-01-01 01:00:00,1.10,1.09,1.11,1.10", // 3: high < low
        "2024-01-01 02:00:00,1.10,1.11,1.09,1.10", // 4
        "",                                        // 5: empty
        "2024-01-01 03:00:00,1.10,1.11,1.09,abc",  // 6: not a number
    ];
    for end in ["\n", "\r\n"] {
        std::fs::write(&path, rows.join(end) + end).unwrap();
        let out = pipwatch().arg("replay").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown = path.display();
        assert!(stderr.contains(&format!("{shown}:3: high 1.09 is below low 1.11 (row skipped)")), "{end:?}: {stderr}");
        assert!(stderr.contains(&format!("{shown}:6: close 'abc' is not a number (row skipped)")), "{end:?}: {stderr}");
    }
}

/// An empty file says it is empty, not that it lacks a time column.
#[test]
fn an_empty_file_is_said_to_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("EUR_USD.csv");
    std::fs::write(&path, "").unwrap();
    let out = pipwatch().arg("replay").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("error: {}: the file is empty", path.display())), "{stderr}");
    assert!(!stderr.contains("no time column"), "{stderr}");
}

/// A file whose name says nothing about its pair is not labelled with the
/// config's first instrument: replay asks for --instrument, naming the file.
#[test]
fn a_file_named_for_no_pair_needs_an_instrument() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.csv");
    let text = std::fs::read_to_string(data_file()).unwrap();
    std::fs::write(&path, text.lines().take(300).collect::<Vec<_>>().join("\n")).unwrap();
    let out = pipwatch().arg("replay").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: {}: the file name does not start with an instrument (e.g. EUR_USD.csv): give its pair with --instrument (e.g. --instrument EUR_USD), or rename it",
            path.display()
        )),
        "{stderr}"
    );

    let out = pipwatch().args(["replay", "--instrument", "GBP_USD"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    assert!(!records.is_empty() && records.iter().all(|r| r["instrument"] == "GBP_USD"));
}

/// A --timeframe (or a name) the candles' spacing contradicts is said once
/// per file; one that agrees, or one taken from the data, is not.
#[test]
fn a_timeframe_the_data_contradicts_is_warned_about_once_per_file() {
    let out = pipwatch().args(["replay", "--timeframe", "H4"]).arg(data_file()).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!(
        "warning: {}: its candles are mostly 1h (H1) apart, but they are read as H4 candles: pass --timeframe to say which they are, or check the file",
        data_file().display()
    );
    assert_eq!(stderr.matches(&said).count(), 1, "{stderr}");

    for agreeing in [&["--timeframe", "H1"][..], &[]] {
        let out = pipwatch().arg("replay").args(agreeing).arg(data_file()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("warning"), "{agreeing:?}: {stderr}");
    }
}

/// replay runs no notifier, source or server: a config whose Discord,
/// OANDA and server secrets are unset still replays (a `config check` or a
/// live run would refuse it).
#[test]
fn replay_needs_no_secrets_it_does_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config_file(
        dir.path(),
        "live.toml",
        r#"[market]
source = "oanda"
[strategy]
fast = 8
[[notify.routes]]
name = "signals"
webhook = "${PIPWATCH_DISCORD_SIGNALS}"
[server]
listen = "0.0.0.0:8787"
token = "${PIPWATCH_SERVER_TOKEN}"
"#,
    );
    let out = pipwatch().args(["config", "check"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "the live run does need them");
    let out = pipwatch().arg("-c").arg(&cfg).arg("replay").arg(data_file()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = json_lines(&out.stdout);
    assert!(!records.is_empty() && records.iter().all(|r| r["strategy"] == "sma 8/20"));
}

/// A file that gives no candle (a header only, every row rejected) is said,
/// not passed over as a replay of 0 candles.
#[test]
fn a_file_without_candles_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let header_only = dir.path().join("EUR_USD_H1.csv");
    std::fs::write(&header_only, "time,open,high,low,close\n").unwrap();
    let all_nan = dir.path().join("GBP_USD_H1.csv");
    std::fs::write(&all_nan, "time,open,high,low,close\n2024-01-01 00:00:00,NaN,NaN,NaN,NaN\n").unwrap();
    let good = dir.path().join("USD_JPY_H1.csv");
    std::fs::write(&good, "time,open,high,low,close\n2024-01-01 00:00:00,141.1,141.2,141.0,141.1\n").unwrap();
    for path in [&header_only, &all_nan] {
        for cmd in [&["replay"][..], &["backtest", "--format", "json"]] {
            let out = pipwatch().args(cmd).arg(path).arg(&good).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let said = format!(
                "warning: {}: no candles read (the file has a header only, or every row was rejected)",
                path.display()
            );
            assert!(stderr.contains(&said), "{cmd:?}: {stderr}");
            assert!(!stderr.contains(&format!("{}: no candles", good.display())), "{cmd:?}: {stderr}");
        }
    }
}

/// A directory of several pairs is replayed on every core; what it prints
/// is each file's own replay, file after file, and its bad rows keep their
/// files' lines. Two years of one pair are one history (read in turn).
#[test]
fn a_directory_replays_in_parallel_as_each_file_alone_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data_file()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let part = |from: usize, to: usize| format!("{}\n{}\n", lines[0], lines[from..to].join("\n"));
    let files = [
        ("AUD_USD.csv", part(1, 3000)),
        ("EUR_GBP.csv", format!("{}bad row\n{}", part(1, 2000), &part(2000, 4000)[lines[0].len() + 1..])),
        ("EUR_USD_H1_1.csv", part(1, 3000)),
        ("EUR_USD_H1_2.csv", part(3000, 6225)),
        ("USD_JPY.csv", part(100, 6225)),
    ];
    for (name, body) in &files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    for args in [vec!["replay"], vec!["replay", "--indicators"]] {
        let all = pipwatch().args(&args).arg("--timeframe").arg("H1").arg(dir.path()).output().unwrap();
        assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
        let mut alone = Vec::new();
        let mut warnings = String::new();
        // The two EUR_USD files in turn, as one history: a directory of just them.
        let eur = tempfile::tempdir().unwrap();
        for (name, body) in &files[2..4] {
            std::fs::write(eur.path().join(name), body).unwrap();
        }
        let singles: Vec<std::path::PathBuf> = vec![
            dir.path().join("AUD_USD.csv"),
            dir.path().join("EUR_GBP.csv"),
            eur.path().to_path_buf(),
            dir.path().join("USD_JPY.csv"),
        ];
        for path in singles {
            let one = pipwatch().args(&args).arg("--timeframe").arg("H1").arg(&path).output().unwrap();
            assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
            alone.extend(one.stdout);
            warnings.push_str(&String::from_utf8_lossy(&one.stderr));
        }
        assert!(!alone.is_empty());
        assert!(all.stdout == alone, "{args:?}: the directory's output is not each file's in order");
        let stderr = String::from_utf8_lossy(&all.stderr);
        assert!(stderr.contains("EUR_GBP.csv:2001: ") && warnings.contains("EUR_GBP.csv:2001: "), "{stderr}");
        assert!(stderr.contains("from 5 files") && stderr.contains("1 rejected row"), "{stderr}");
    }
}

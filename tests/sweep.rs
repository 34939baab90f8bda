//! `pipwatch backtest` with ranges and lists: a sweep, through the binary,
//! on the shipped EUR/USD history.

mod common;

use common::{data_file, json_lines, of_type, pipwatch};

fn run(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    run_on(&data_file(), args)
}

/// `pipwatch backtest PATH ARGS`: its records and its stderr, the run checked.
fn run_on(path: &std::path::Path, args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let out = pipwatch().arg("backtest").arg(path).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (json_lines(&out.stdout), stderr)
}

/// The figures of a single backtest of PATH ARGS: its `ALL` summary.
fn total_of(path: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (single, _) = run_on(path, &[&["--format", "json"], args].concat());
    of_type(&single, "summary").into_iter().find(|r| r["instrument"] == "ALL").unwrap().clone()
}

/// A sweep record's figures are `total`'s, a single backtest's.
fn assert_same_figures(rec: &serde_json::Value, total: &serde_json::Value, what: &str) {
    for k in ["trades", "wins", "win_rate", "pips", "r", "expectancy_r", "profit_factor", "sqn", "max_drawdown_r"] {
        assert_eq!(rec[k], total[k], "{what} ({rec}): {k}");
    }
}

/// Each combination's record holds the figures a single backtest of that
/// combination prints as its total: the sweep is not a second engine.
#[test]
fn every_combination_is_what_a_single_backtest_of_it_says() {
    let (records, stderr) = run(&[
        "--format",
        "json",
        "--ma",
        "sma,ema",
        "--fast",
        "5..15:5",
        "--slow",
        "10,20,40",
        "--atr",
        "10,14",
        "--sl",
        "1..2:1",
        "--tp",
        "3",
        "--fill",
        "next-open",
        "--spread",
        "0.8",
    ]);
    // fast < slow: (5,10) (5,20) (5,40) (10,20) (10,40) (15,20) (15,40), × 2 MAs × 2 ATRs × 2 stops.
    assert_eq!(records.len(), 7 * 2 * 2 * 2, "{stderr}");
    assert!(stderr.contains("swept 56 combinations over 6225 candles"), "{stderr}");
    // Every fifth, to keep the test short; the first and last among them.
    for (n, rec) in records.iter().enumerate().filter(|(n, _)| n % 5 == 0 || *n == records.len() - 1) {
        assert_eq!(rec["type"], "sweep");
        let s = |k: &str| rec[k].to_string();
        let total = total_of(
            &data_file(),
            &[
                "--ma",
                rec["ma"].as_str().unwrap(),
                "--fast",
                &s("fast"),
                "--slow",
                &s("slow"),
                "--atr",
                &s("atr"),
                "--sl",
                &s("sl"),
                "--tp",
                &s("tp"),
                "--fill",
                "next-open",
                "--spread",
                "0.8",
            ],
        );
        assert_same_figures(rec, &total, &format!("combination {n}"));
        assert!(rec["trades"].as_u64().unwrap() > 0, "{rec}");
    }
}

#[test]
fn the_table_ranks_and_draws_a_heatmap_and_csv_has_a_row_each() {
    let out = pipwatch()
        .arg("backtest")
        .arg(data_file())
        .args([
            "--format",
            "table",
            "--fast",
            "5..20:5",
            "--slow",
            "10..60:10",
            "--rank",
            "sqn",
            "--min-trades",
            "10",
            "--top",
            "3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Best 3 by sqn (at least 10 closed trades"), "{text}");
    assert!(text.contains("sqn by fast (rows) and slow (columns)"), "{text}");
    // Ranked: the SQN column of the three rows falls.
    let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("ma ")).skip(1).take(3).collect();
    let sqn: Vec<f64> = rows.iter().map(|l| l.split_whitespace().nth(11).unwrap().parse().unwrap()).collect();
    assert!(sqn.windows(2).all(|w| w[0] >= w[1]), "{rows:?}");
    // No colour when not a terminal: the shades say the levels.
    assert!(!text.contains('\x1b') && text.contains('█'), "{text}");

    let out = pipwatch().arg("backtest").arg(data_file()).args(["--format", "csv", "--tp", "2,3,4"]).output().unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("ma,fast,slow,atr,sl,tp,trades,"), "{csv}");
}

#[test]
fn bad_ranges_are_named_and_replay_does_not_sweep() {
    for (args, said) in [
        (vec!["--fast", "50..5:5"], "the range runs backwards"),
        (vec!["--fast", "5..50:0"], "'0' is not a step"),
        (vec!["--slow", "0,10"], "'0' is not a period"),
        (vec!["--sl", "0.5..x"], "'x' is not a multiple of the ATR"),
        (vec!["--ma", "sma,wma"], "'wma' is not a moving average"),
    ] {
        let out = pipwatch().arg("backtest").arg(data_file()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
    let out =
        pipwatch().arg("backtest").arg(data_file()).args(["--fast", "30,40", "--slow", "10,20"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no combination has fast below slow"));
    let out = pipwatch().arg("replay").arg(data_file()).args(["--fast", "5..10:5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replay runs one strategy"));
}

/// Over a directory of two pairs a combination's figures are the total of a
/// single backtest of the directory (its trades added up in exit order
/// across the pairs).
#[test]
fn a_sweep_over_several_pairs_is_the_single_backtests_total() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data_file()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(dir.path().join("EUR_USD.csv"), lines[..4000].join("\n")).unwrap();
    let mut second = vec![lines[0]];
    second.extend(&lines[2000..]);
    std::fs::write(dir.path().join("GBP_USD.csv"), second.join("\n")).unwrap();
    let (records, _) = run_on(dir.path(), &["--format", "json", "--timeframe", "H1", "--fast", "5,10", "--slow", "20"]);
    assert_eq!(records.len(), 2);
    for rec in &records {
        let total = total_of(dir.path(), &["--timeframe", "H1", "--fast", &rec["fast"].to_string(), "--slow", "20"]);
        assert_same_figures(rec, &total, "several pairs");
        assert!(total["trades"].as_u64().unwrap() > 100, "{total}");
    }
}

/// One pair's history in two files, back to back (the sweep's own loop
/// reads them as one) and overlapping by 500 rows (the engine refuses those
/// as not after the last, and runs every combination): the sweep is the
/// single backtests', SMA and EMA.
#[test]
fn a_sweep_over_one_pair_in_several_files_is_the_single_backtests() {
    let text = std::fs::read_to_string(data_file()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for overlap in [0, 500] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("EUR_USD_H1_1.csv"), lines[..3500].join("\n")).unwrap();
        let mut second = vec![lines[0]];
        second.extend(&lines[3500 - overlap..]);
        std::fs::write(dir.path().join("EUR_USD_H1_2.csv"), second.join("\n")).unwrap();
        let (records, _) =
            run_on(dir.path(), &["--format", "json", "--ma", "sma,ema", "--fast", "5,10", "--slow", "20,40"]);
        assert_eq!(records.len(), 8);
        for rec in &records {
            let s = |k: &str| rec[k].to_string();
            let args = ["--ma", rec["ma"].as_str().unwrap(), "--fast", &s("fast"), "--slow", &s("slow")];
            let total = total_of(dir.path(), &args);
            assert_same_figures(rec, &total, &format!("overlap {overlap}"));
            assert!(total["trades"].as_u64().unwrap() > 50, "{total}");
        }
    }
}

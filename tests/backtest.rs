//! `pipwatch backtest` through the binary, on the shipped EUR/USD history.

mod common;

use std::collections::HashMap;

use common::{config_file, data_file, json_lines, of_type, pipwatch};

fn backtest(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let out = pipwatch().arg("backtest").arg(data_file()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (json_lines(&out.stdout), stderr)
}

fn signals() -> Vec<serde_json::Value> {
    let out = pipwatch().arg("replay").arg(data_file()).output().unwrap();
    assert!(out.status.success());
    json_lines(&out.stdout)
}

/// Every signal becomes exactly one trade, entered at its price, and the
/// summaries add the closed ones up.
#[test]
fn every_signal_is_one_trade_and_the_summaries_count_the_closed_ones() {
    let (records, stderr) = backtest(&["--format", "json"]);
    assert!(stderr.contains("backtested 6225 candles"), "{stderr}");
    let trades = of_type(&records, "trade");
    let signals = signals();
    assert_eq!(trades.len(), signals.len());
    let by_id: HashMap<&str, &serde_json::Value> = signals.iter().map(|s| (s["id"].as_str().unwrap(), s)).collect();
    for t in &trades {
        let s = by_id.get(t["id"].as_str().unwrap()).unwrap_or_else(|| panic!("a trade with no signal: {t}"));
        assert_eq!((&t["entry"], &t["entry_time"], &t["side"]), (&s["price"], &s["time"], &s["side"]));
        assert_eq!((&t["stop_loss"], &t["take_profit"]), (&s["stop_loss"], &s["take_profit"]));
        let reason = t["exit_reason"].as_str().unwrap();
        assert!(["target", "stop", "reversed", "open"].contains(&reason), "{t}");
        assert!(t["exit_time"].as_str() >= t["entry_time"].as_str(), "{t}");
        // A stop without a gap is exactly -1R.
        if reason == "stop" && t["gap"] == false {
            assert!((t["r"].as_f64().unwrap() + 1.0).abs() < 1e-9, "{t}");
        }
    }
    let summaries = of_type(&records, "summary");
    assert_eq!(summaries.len(), 2, "EUR_USD H1 and ALL");
    let closed = trades.iter().filter(|t| t["exit_reason"] != "open").count() as u64;
    let total_r: f64 = trades.iter().filter(|t| t["exit_reason"] != "open").map(|t| t["r"].as_f64().unwrap()).sum();
    for s in &summaries {
        assert_eq!(s["trades"].as_u64(), Some(closed));
        assert!((s["r"].as_f64().unwrap() - total_r).abs() < 1e-6, "{s}");
    }
    assert_eq!(summaries[1]["instrument"], "ALL");
    // Records keep the order: trades, then summaries.
    assert_eq!(records.last().unwrap()["type"], "summary");
}

#[test]
fn csv_lists_the_trades_and_the_table_reports_them() {
    let (json, _) = backtest(&["--format", "json"]);
    let out = pipwatch().arg("backtest").arg(data_file()).args(["--format", "csv"]).output().unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("id,instrument,timeframe,side,entry_time,entry,"));
    assert_eq!(lines.count(), of_type(&json, "trade").len());

    let out = pipwatch().arg("backtest").arg(data_file()).args(["--format", "table"]).output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    for part in
        ["sma 10/20, ATR 14, stop 1.5 ATR, target 3 ATR", "EUR_USD H1", "TOTAL", "target", "2017-06", "cumulative R"]
    {
        assert!(table.contains(part), "{part} missing from:\n{table}");
    }
}

/// A 2-pip spread costs every closed trade exactly 2 pips (the exits
/// trigger on the same candles) and an open one the entry's half.
#[test]
fn a_spread_costs_each_trade_its_pips() {
    let (plain, _) = backtest(&["--format", "json"]);
    let (spread, _) = backtest(&["--format", "json", "--spread", "2"]);
    let (plain, spread) = (of_type(&plain, "trade"), of_type(&spread, "trade"));
    assert_eq!(plain.len(), spread.len());
    for (p, s) in plain.iter().zip(&spread) {
        assert_eq!((&p["id"], &p["exit_reason"]), (&s["id"], &s["exit_reason"]));
        let cost = if p["exit_reason"] == "open" { 1.0 } else { 2.0 };
        let d = p["pips"].as_f64().unwrap() - s["pips"].as_f64().unwrap();
        assert!((d - cost).abs() < 1e-6, "{p} vs {s}");
    }
}

#[test]
fn next_open_enters_a_candle_later_and_the_range_bounds_the_trades() {
    let (records, _) = backtest(&["--format", "json", "--fill", "next-open"]);
    for t in of_type(&records, "trade") {
        // The id carries the signal's candle time.
        let id = t["id"].as_str().unwrap();
        let signal_time = &id[id.find(':').unwrap() + 4..id.rfind(':').unwrap()];
        assert!(t["entry_time"].as_str().unwrap() > signal_time, "{t}");
    }
    let (records, _) = backtest(&["--format", "json", "--from", "2017-06-01", "--to", "2017-06-30"]);
    let trades = of_type(&records, "trade");
    assert!(!trades.is_empty());
    for t in trades {
        assert!(t["entry_time"].as_str().unwrap() >= "2017-06-01", "{t}");
        assert!(t["exit_time"].as_str().unwrap() <= "2017-06-30T00:00:00Z", "{t}");
    }
}

#[test]
fn bad_rows_are_named_with_their_line_and_bad_arguments_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("time,open,high,low,close\n");
    for n in 0..60 {
        let p = 1.1 + (n as f64 / 5.0).sin() * 0.01;
        text.push_str(&format!("2024-01-{:02} {:02}:00:00,{p},{},{},{p}\n", 1 + n / 24, n % 24, p + 0.001, p - 0.001));
    }
    text.push_str("2024-01-03 12:00:00,1.1,not-a-price,1.0,1.1\n");
    let csv = config_file(dir.path(), "EUR_USD_H1.csv", &text);
    let out = pipwatch().arg("backtest").arg(&csv).args(["--format", "json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("EUR_USD_H1.csv:62: high 'not-a-price' is not a number"), "{stderr}");
    assert!(stderr.contains("1 rejected rows"), "{stderr}");

    let out = pipwatch().args(["backtest", "/nonexistent/EUR_USD.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = pipwatch().arg("backtest").arg(data_file()).args(["--spread=-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spread"));
    let out = pipwatch().arg("backtest").arg(data_file()).args(["--from", "yesterday"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a date"));
}

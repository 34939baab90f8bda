//! `pipwatch config check|show` through the binary.

mod common;

use common::pipwatch;

#[test]
fn check_accepts_the_example_and_names_problems() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipwatch.toml");
    let out = pipwatch().args(["config", "check"]).arg(&example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (demo source, 7 instrument(s) x 1 timeframe(s)"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[market]\ntimeframes = [\"H4\"]\n\n[strategy]\nfast = 30\nslwo = 5\n").unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:6:8: strategy.slwo = '5': unknown field `slwo`", bad.display())), "{stderr}");

    // Every key of the wrong type or name at once, not one per run.
    std::fs::write(&bad, "[market]\nsource = \"demoo\"\n[strategy]\nfast = \"ten\"\nslwo = 5\n").unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in ["2:10: market.source = 'demoo'", "4:8: strategy.fast = 'ten'", "5:8: strategy.slwo = '5'"] {
        assert!(stderr.contains(&format!("{}:{want}", bad.display())), "{want} missing from: {stderr}");
    }

    std::fs::write(&bad, "[strategy]\nfast = 30\n").unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:8: strategy.fast = '30': fast (30) must be smaller than slow (20)",
            bad.display()
        )),
        "{stderr}"
    );
}

#[test]
fn show_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[market]\nsource = \"oanda\"\n[market.oanda]\naccount_id = \"101-004-1-001\"\ntoken = \"${TOK}\"\n\n[[notify.routes]]\nname = \"signals\"\nwebhook = \"https://discord.com/api/webhooks/123/hook-secret\"\n",
    )
    .unwrap();
    let out = pipwatch()
        .args(["config", "show", "-c"])
        .arg(&file)
        .env("TOK", "tok-secret")
        .env("PIPWATCH_STRATEGY__FAST", "7")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("tok-secret") && !shown.contains("hook-secret") && !shown.contains("101-004"), "{shown}");
    assert!(shown.contains("token = \"${TOK}\""), "{shown}");
    assert!(shown.contains("webhook = \"<redacted>\""), "{shown}");
    assert!(shown.contains("fast = 7"), "{shown}");
    assert!(!shown.contains("not set in the environment"), "{shown}");
    // An unset variable (here of a source not in use) is named where it is
    // used, and in the header.
    let demo = dir.path().join("demo.toml");
    std::fs::write(&demo, "[market.oanda]\naccount_id = \"101-004-1-001\"\ntoken = \"${TOK}\"\n").unwrap();
    let out = pipwatch().args(["config", "show", "-c"]).arg(&demo).env_remove("TOK").output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains("token = \"${TOK}\""), "{shown}");
    assert_eq!(shown.lines().nth(1), Some("# not set in the environment, so empty: TOK"), "{shown}");
    // What show prints is itself a valid config.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, shown.as_bytes()).unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&again).env("TOK", "x").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The warning reaches the user of the binary, on stderr, and the command
/// still runs.
#[test]
fn an_environment_variable_with_one_underscore_is_warned_about() {
    let out = pipwatch().args(["config", "check"]).env("PIPWATCH_STRATEGY_FAST", "5").output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: environment variable PIPWATCH_STRATEGY_FAST is not one pipwatch reads, so it changes nothing: did you mean PIPWATCH_STRATEGY__FAST?"),
        "{stderr}"
    );
}

/// `config check` opens a CSV source the way a run would: a file that does
/// not exist is an error naming the key, where it was set, and the path.
#[test]
fn check_finds_a_csv_source_that_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("EUR_USD_H1.csv");
    let cfg = dir.path().join("csv.toml");
    std::fs::write(&cfg, format!("[market]\nsource = \"csv\"\n\n[market.csv]\npath = \"{}\"\n", missing.display()))
        .unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!(
        "{}:5:8: market.csv.path = '{}': cannot read {}: No such file or directory",
        cfg.display(),
        missing.display(),
        missing.display()
    );
    assert!(stderr.contains(&said), "{stderr}");

    // Once it exists (and has the columns), the same config passes.
    std::fs::write(&missing, "time,open,high,low,close\n2024-01-01 00:00:00,1.1,1.2,1.0,1.1\n").unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (csv source"));
    // A file without the columns is found too.
    std::fs::write(&missing, "when,o,h,l,c\n").unwrap();
    let out = pipwatch().args(["config", "check"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no time column"));
}

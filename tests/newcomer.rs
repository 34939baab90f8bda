//! Rough edges a newcomer met, each through the binary.

mod common;

use std::path::Path;

use common::pipwatch;

/// `ssh host pipwatch` without `-t`, cron, a redirect: no terminal. Said at
/// once, with what to run instead, as bad input.
#[test]
fn the_console_without_a_terminal_says_what_to_run_instead() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["--data-dir", dir.path().to_str().unwrap()], vec!["attach"]] {
        let out = pipwatch().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("the console needs a terminal"), "{stderr}");
        assert!(stderr.contains("pipwatch headless") && stderr.contains("ssh -t"), "{stderr}");
    }
    // Nothing was started: no data directory made.
    assert!(!dir.path().join("db").exists());
}

/// `dead list | head -1`: a reader that has gone is a normal end, not an error.
#[test]
fn a_closed_pipe_ends_dead_list_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1/data");
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
        }
    }
    // A pipe whose reader is already gone: the first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = common::pipwatch_std()
        .args(["dead", "list", "--data-dir"])
        .arg(&data)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

/// `config check` does not pass a CSV source whose file is not there.
#[test]
fn config_check_names_a_csv_file_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("EUR_USD.csv");
    let out = pipwatch().args(["--source", &format!("csv:{}", missing.display()), "config", "check"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // Located where the path was set (here the flag), with the path and why.
    let said = format!("--source 'csv:{0}': market.csv.path: cannot read {0}: No such file", missing.display());
    assert!(stderr.contains(&said), "{stderr}");
    std::fs::write(&missing, "time,open,high,low,close\n").unwrap();
    let out = pipwatch().args(["--source", &format!("csv:{}", missing.display()), "config", "check"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `replay` and `backtest` need no network: a config whose Discord webhook
/// variable is unset does not stop them (the console and headless still ask).
#[test]
fn replay_and_backtest_do_not_need_the_configs_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config_file(
        dir.path(),
        "routes.toml",
        "[[notify.routes]]\nname = \"signals\"\nwebhook = \"${PIPWATCH_DISCORD_UNSET}\"\n",
    );
    for cmd in ["replay", "backtest"] {
        let out = pipwatch().arg("-c").arg(&cfg).arg(cmd).arg(common::data_file()).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = pipwatch().arg("-c").arg(&cfg).args(["headless", "--for", "1s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PIPWATCH_DISCORD_UNSET is not set"));
}

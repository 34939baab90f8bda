//! Shell completions and the man page, generated from the CLI definition by
//! the binary itself (so they always match it).

mod common;

use common::pipwatch;

#[test]
fn completions_for_each_shell_come_from_the_cli() {
    for (shell, marker) in [("bash", "_pipwatch()"), ("zsh", "#compdef pipwatch"), ("fish", "complete -c pipwatch")] {
        let out = pipwatch().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text}");
        // Every command and a command's own flags are in it.
        // (fish writes a long flag as `-l indicators`.)
        for word in ["replay", "headless", "attach", "notify", "indicators", "data-dir"] {
            assert!(text.contains(word), "{shell}: no {word}");
        }
    }
    let out = pipwatch().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_comes_from_the_cli() {
    let out = pipwatch().arg("man").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(".TH pipwatch 1"), "{text}");
    assert!(text.contains(".SH NAME") && text.contains(".SH SUBCOMMANDS"), "{text}");
    for word in ["replay", "headless", "completions", "data\\-dir"] {
        assert!(text.contains(word), "no {word}: {text}");
    }
}

/// `config show` and a first start say where the data is and how to go on
/// from the demo (Discord, OANDA); the next start does not repeat it.
#[test]
fn a_first_run_says_where_its_data_is_and_what_next() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = pipwatch().arg("--data-dir").arg(&data).args(["config", "show"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("# data directory: {}", data.display())), "{shown}");
    assert!(shown.contains("# signals on Discord: add a [[notify.routes]]"), "{shown}");
    assert!(shown.contains("# live prices: export PIPWATCH_OANDA_ACCOUNT and PIPWATCH_OANDA_TOKEN"), "{shown}");

    let run = || {
        let out =
            pipwatch().args(["headless", "--for", "1s", "--no-server", "--data-dir"]).arg(&data).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = run();
    let said: Vec<&str> = first.lines().filter(|l| l.contains("first run of pipwatch")).collect();
    assert_eq!(said.len(), 1, "{first}");
    assert!(said[0].contains(&format!("data directory: {}", data.display())), "{}", said[0]);
    assert!(said[0].contains("[[notify.routes]]") && said[0].contains("--source oanda"), "{}", said[0]);
    assert!(!run().contains("first run"), "said again on the second start");
}

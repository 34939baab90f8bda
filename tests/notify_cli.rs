//! The notifier from the binary: a crash with a full outbox, secrets kept out
//! of every output, and `pipwatch dead list|retry|purge`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{discord, json_lines, of_type, pipwatch, pipwatch_std};
use pipwatch::store::Store;

/// A fast demo market that signals often, and one route per webhook env var.
fn config(dir: &std::path::Path, routes: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::from(
        r#"[market]
instruments = ["EUR_USD", "GBP_USD", "USD_JPY"]
timeframes = ["M1"]
[market.demo]
candle_every = "20ms"
[strategy]
fast = 3
slow = 5
atr = 3
[notify]
timeout = "1s"
retry_min = "200ms"
retry_max = "1s"
breaker_cooldown = "1s"
"#,
    );
    for (name, var) in routes {
        text.push_str(&format!(
            "[[notify.routes]]\nname = \"{name}\"\nwebhook = \"${{{var}}}\"\nevents = [\"signal\", \"alert\"]\n"
        ));
    }
    let p = dir.join("pipwatch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_a_full_outbox_it_redelivers_everything_on_restart() {
    let server = discord::start().await;
    server.world.lock().unwrap().outage_until = Some(Instant::now() + Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("signals", "HOOK")]);
    let data = dir.path().join("data");
    let hook = server.webhook(1, "tok");

    let (cfg2, data2, hook2) = (cfg.clone(), data.clone(), hook.clone());
    let seen = tokio::task::spawn_blocking(move || {
        // Killed when dropped, also when an assertion below fails.
        let mut child = common::Running(
            pipwatch_std()
                .args(["headless", "-c"])
                .arg(&cfg2)
                .arg("--data-dir")
                .arg(&data2)
                .env("HOOK", &hook2)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let start = Instant::now();
        for line in BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["type"] == "signal" {
                seen.push(v["id"].as_str().unwrap().to_string());
            }
            if seen.len() >= 15 || start.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        // No shutdown at all: what was printed must already be on disk.
        child.kill().unwrap();
        child.wait().unwrap();
        seen
    })
    .await
    .unwrap();
    assert!(seen.len() >= 15, "the demo gave only {} signals", seen.len());
    assert_eq!(server.world.lock().unwrap().count_status(200), 0, "the outage let something through");
    {
        let (store, _) = Store::open(&data).unwrap();
        let (pending, bad) = store.outbox().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        for id in &seen {
            assert!(pending.iter().any(|(_, e)| e.message.id() == id), "{id} was printed but is not in the outbox");
        }
    }

    // Discord is back; pipwatch starts again.
    server.world.lock().unwrap().outage_until = None;
    // Until each signal printed before the kill is reported delivered.
    let mut waiting: std::collections::HashSet<String> = seen.iter().cloned().collect();
    let records = tokio::task::spawn_blocking(move || {
        let mut cmd = pipwatch_std();
        cmd.args(["headless", "-c"]).arg(&cfg).arg("--data-dir").arg(&data).env("HOOK", &hook);
        common::records_until(cmd, move |r| {
            if r["type"] == "delivery"
                && r["state"] == "delivered"
                && let Some(id) = r["id"].as_str()
            {
                waiting.remove(id);
            }
            waiting.is_empty()
        })
    })
    .await
    .unwrap();
    let delivered = server.world.lock().unwrap().delivered_ids();
    for id in &seen {
        assert!(delivered.contains(id), "{id} was never delivered after the restart");
    }
    assert_eq!(server.world.lock().unwrap().count_status(429), 0);
    // The console's feed learns each delivery from `delivery` events.
    let deliveries = of_type(&records, "delivery");
    assert!(
        deliveries.iter().any(|d| d["state"] == "delivered"
            && d["id"] == seen[0].as_str()
            && d["latency_secs"].as_f64().is_some_and(|l| l >= 0.0)),
        "{deliveries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_never_show_and_the_dead_list_can_be_managed() {
    let server = discord::start().await;
    server.world.lock().unwrap().deleted.insert("1".into());
    {
        let mut w = server.world.lock().unwrap();
        w.reset_next = 1;
        w.hang_next = 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("gone", "HOOK_GONE"), ("flaky", "HOOK_FLAKY")]);
    let data = dir.path().join("data");
    let (gone, flaky) = (server.webhook(1, "SECRETTOKENgone"), server.webhook(2, "SECRETTOKENflaky"));
    let run = |args: Vec<String>| {
        let (cfg, data, gone, flaky) = (cfg.clone(), data.clone(), gone.clone(), flaky.clone());
        tokio::task::spawn_blocking(move || {
            pipwatch()
                .args(&args)
                .arg("-c")
                .arg(&cfg)
                .arg("--data-dir")
                .arg(&data)
                .env("HOOK_GONE", gone)
                .env("HOOK_FLAKY", flaky)
                .env("PIPWATCH_LOG", "debug,sled=warn")
                .timeout(Duration::from_secs(30))
                .output()
                .unwrap()
        })
    };
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let headless = run(vec!["headless".into(), "--for".into(), "4s".into()]).await.unwrap();
    assert!(headless.status.success(), "{}", text(&headless));
    let show = run(vec!["config".into(), "show".into()]).await.unwrap();
    let list = run(vec!["dead".into(), "list".into()]).await.unwrap();
    for o in [&headless, &show, &list] {
        let t = text(o);
        assert!(!t.contains("SECRETTOKEN") && !t.contains("/webhooks/"), "a webhook URL leaked:\n{t}");
    }
    assert!(text(&headless).contains("route disabled"), "{}", text(&headless));
    assert!(text(&show).contains("${HOOK_GONE}"));

    // The disabled route's signals are in the dead list, with Discord's reason.
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.contains("given up on") && list.contains("route gone") && list.contains("10015"), "{list}");
    let json = run(vec!["dead".into(), "list".into(), "--json".into()]).await.unwrap();
    let rows = json_lines(&json.stdout);
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["route"] == "gone" && r["kind"] == "signal"), "{rows:?}");

    // Deleting everything has to be said: a bare purge deletes nothing.
    let bare = run(vec!["dead".into(), "purge".into()]).await.unwrap();
    assert_eq!(bare.status.code(), Some(2), "{}", text(&bare));
    assert!(text(&bare).contains("<ID|--route <NAME>|--all>"), "{}", text(&bare));
    let after = run(vec!["dead".into(), "list".into(), "--json".into()]).await.unwrap();
    assert_eq!(json_lines(&after.stdout).len(), rows.len());

    let first = rows[0]["id"].as_str().unwrap().to_string();
    let purge = run(vec!["dead".into(), "purge".into(), first.clone()]).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&purge.stdout).trim(), "1 notification(s) matching 1 id(s) deleted");
    let retry = run(vec!["dead".into(), "retry".into(), "--route".into(), "gone".into()]).await.unwrap();
    let n = rows.len() - 1;
    assert!(
        String::from_utf8_lossy(&retry.stdout)
            .starts_with(&format!("{n} notification(s) for route 'gone' queued again")),
        "{}",
        text(&retry)
    );
    // Nothing left: said so, not "0 notification(s) queued again".
    let again = run(vec!["dead".into(), "retry".into(), "--route".into(), "gone".into()]).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "no notification on the dead list for route 'gone': nothing queued again"
    );
    let none = run(vec!["dead".into(), "purge".into(), "--all".into()]).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "no notification on the dead list: nothing deleted");
    let (store, _) = Store::open(&data).unwrap();
    assert!(store.dead().unwrap().0.is_empty());
    let (pending, _) = store.outbox().unwrap();
    let revived: Vec<_> = pending.iter().filter(|(_, e)| e.route == "gone").collect();
    assert_eq!(revived.len(), n);
    assert!(revived.iter().all(|(_, e)| e.attempts == 0 && e.message.id() != first));
}

/// A closed pipe (`pipwatch dead list | head -1`) is a normal end: exit 0,
/// nothing on stderr. The pipe's reader is gone before the command starts,
/// so its very first write meets it.
#[test]
fn a_closed_pipe_ends_listing_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("nothing-here");
    let data = dir.path().join("data");
    drop(Store::open(&data).unwrap());
    let cases: [Vec<std::ffi::OsString>; 4] = [
        vec!["dead".into(), "list".into(), "--data-dir".into(), empty.into()],
        vec!["dead".into(), "list".into(), "--data-dir".into(), data.clone().into()],
        vec!["dead".into(), "list".into(), "--json".into(), "--data-dir".into(), data.into()],
        vec!["config".into(), "show".into()],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = pipwatch_std().args(&args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe") && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `pipwatch notify test [ROUTE]` sends one message now and says what
/// Discord answered: delivered with its message id, or why not (a deleted
/// webhook), without ever printing the webhook URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_one_message_and_reports_discords_answer() {
    let server = discord::start().await;
    server.world.lock().unwrap().deleted.insert("2".into());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("ok", "HOOK_OK"), ("gone", "HOOK_GONE")]);
    let (ok, gone) = (server.webhook(1, "SECRETTOKENok"), server.webhook(2, "SECRETTOKENgone"));
    let run = |args: &[&str]| {
        let (cfg, ok, gone) = (cfg.clone(), ok.clone(), gone.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            pipwatch()
                .args(["-c"])
                .arg(&cfg)
                .args(["notify", "test"])
                .args(&args)
                .env("HOOK_OK", ok)
                .env("HOOK_GONE", gone)
                .timeout(Duration::from_secs(30))
                .output()
                .unwrap()
        })
    };
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };

    // Everything said, to check that no webhook URL was.
    let mut all = String::new();
    let out = run(&["ok"]).await.unwrap();
    all.push_str(&text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.starts_with("route 'ok': delivered: Discord message "), "{said}");
    {
        let w = server.world.lock().unwrap();
        assert_eq!(w.requests.len(), 1, "one message, one request");
        let body = &w.requests[0].body;
        assert_eq!(w.requests[0].status, 200);
        assert!(body["embeds"][0]["title"].as_str().unwrap().contains("pipwatch test message"), "{body}");
        // The id Discord gave is the one reported.
        assert!(said.trim_end().ends_with(&format!("message {}", 1001)), "{said}");
    }

    // Every route when none is named: the deleted one is explained, exit 1.
    let out = run(&[]).await.unwrap();
    all.push_str(&text(&out));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("route 'ok': delivered"), "{said}");
    assert!(
        said.contains("route 'gone': Discord says the webhook no longer exists (404, code 10015 Unknown Webhook)"),
        "{said}"
    );
    // A name that is not a route, and a config without routes, are bad input.
    let out = run(&["signals"]).await.unwrap();
    all.push_str(&text(&out));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no route is named 'signals': the config's routes are ok, gone"), "{}", text(&out));
    assert!(!all.contains("SECRETTOKEN") && !all.contains("/webhooks/"), "a webhook URL leaked:\n{all}");
    let bare = pipwatch().args(["notify", "test"]).output().unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("there are no notification routes to test"));
    assert_eq!(server.world.lock().unwrap().requests.len(), 3, "1 + 2 test messages, no retries");
}

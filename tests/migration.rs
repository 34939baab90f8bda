//! A data directory written by schema 1 (tests/fixtures/datadir-v1, made by
//! the release before the per-route outbox; its README says how) is migrated
//! on open: everything it had queued is delivered to its routes, and its dead
//! list is intact.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{config_file, pipwatch};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn pairs(file: &str) -> BTreeSet<(String, String)> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1");
    std::fs::read_to_string(fixture.join(file))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(route, id)| (route.to_string(), id.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_directory_is_migrated_and_delivers_what_it_had_queued() {
    let server = common::discord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1/data"), &data);
    let queued = pairs("queued.txt");
    let dead = pairs("dead.txt");
    assert_eq!((queued.len(), dead.len()), (50, 25), "the fixture's lists");

    // The same routes, now pointing at a Discord that answers.
    let cfg = config_file(
        dir.path(),
        "now.toml",
        &format!(
            "[market]\ninstruments = [\"EUR_USD\", \"USD_JPY\"]\ntimeframes = [\"H1\"]\n[market.demo]\ncandle_every = \"1h\"\n\
             [[notify.routes]]\nname = \"signals\"\nwebhook = \"{}\"\n\
             [[notify.routes]]\nname = \"backup\"\nwebhook = \"{}\"\n\
             [[notify.routes]]\nname = \"gone\"\nwebhook = \"{}\"\n",
            server.webhook(1, "aaa"),
            server.webhook(2, "bbb"),
            server.webhook(3, "ccc"),
        ),
    );
    let run = {
        let (cfg, data) = (cfg.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            pipwatch()
                .args(["headless", "--no-server", "--for", "8s", "-c"])
                .arg(&cfg)
                .arg("--data-dir")
                .arg(&data)
                .timeout(Duration::from_secs(60))
                .output()
                .unwrap()
        })
    };
    let out = run.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("data directory migrated"), "{stderr}");

    let delivered: BTreeSet<(String, String)> = {
        let w = server.world.lock().unwrap();
        w.requests
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                // The test server names a webhook by its id.
                let route = match r.webhook.as_str() {
                    "1" => "signals",
                    "2" => "backup",
                    _ => "gone",
                };
                r.ids().into_iter().map(move |id| (route.to_string(), id))
            })
            .collect()
    };
    let missing: Vec<_> = queued.difference(&delivered).collect();
    let seen: Vec<(String, u16, Vec<String>)> = {
        let w = server.world.lock().unwrap();
        w.requests.iter().map(|r| (r.webhook.clone(), r.status, r.ids())).collect()
    };
    assert!(
        missing.is_empty(),
        "queued before the migration, never delivered: {missing:?}\nrequests: {seen:?}\n{stderr}"
    );
    // What had been given up on stays given up on: not sent by the migration.
    assert!(dead.is_disjoint(&delivered), "dead entries were sent");

    let listed = pipwatch().args(["dead", "list", "--json", "--data-dir"]).arg(&data).output().unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let still: BTreeSet<(String, String)> = common::json_lines(&listed.stdout)
        .iter()
        .map(|d| (d["route"].as_str().unwrap().to_string(), d["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(still, dead);
}

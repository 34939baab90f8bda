//! Helpers shared by the binary-level tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn data_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/EUR_USD_H1_2017_ask.csv")
}

/// The server's port for tests: any free one, so tests can run in parallel.
pub const ANY_PORT: (&str, &str) = ("PIPWATCH_SERVER__LISTEN", "\"127.0.0.1:0\"");

/// The binary with a clean environment: no PIPWATCH_* from the developer's
/// shell, logs at info so tests can read them, the server on a free port.
pub fn pipwatch() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("pipwatch").expect("binary built");
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPWATCH_LOG", "info,sled=warn")
        .env(ANY_PORT.0, ANY_PORT.1);
    c
}

/// The same, as a std Command for processes the test signals or runs in the background.
pub fn pipwatch_std() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipwatch"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIPWATCH_LOG", "info,sled=warn")
        .env(ANY_PORT.0, ANY_PORT.1);
    c
}

/// Writes `text` to `dir/name` and returns its path: a test's config file.
pub fn config_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    path
}

pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

pub fn of_type<'a>(records: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    records.iter().filter(|r| r["type"] == t).collect()
}
pub mod discord;

/// A child process killed and reaped when dropped, so a failing test never
/// leaves it running.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// `pipwatch headless` on a free port with `config` and `data`: the guard,
/// the server's address, and its log lines as they come.
pub fn headless(config: &Path, data: &Path) -> (Running, String, std::sync::mpsc::Receiver<String>) {
    let mut cmd = pipwatch_std();
    cmd.args(["headless", "-c"]).arg(config).arg("--data-dir").arg(data);
    let (run, log_rx, addr_rx) = logged(cmd);
    let addr = addr_rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the server did not start");
    (run, addr, log_rx)
}

/// Starts `cmd` with stdout dropped: the guard, its stderr lines as they
/// come, and the server's address once it logs one.
pub fn logged(
    mut cmd: std::process::Command,
) -> (Running, std::sync::mpsc::Receiver<String>, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child =
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("start pipwatch");
    let stderr = child.stderr.take().expect("piped stderr");
    let run = Running(child);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("server listening")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(a) = v["fields"]["addr"].as_str()
            {
                let _ = addr_tx.send(a.to_string());
            }
            let _ = log_tx.send(line);
        }
    });
    (run, log_rx, addr_rx)
}

/// Runs `cmd` (a `headless` run that prints records) until `done` has said
/// yes to a record, then stops it with SIGTERM, as an operator would, and
/// returns every record it printed. A fixed `--for` was sometimes over
/// before a CSV file was on a loaded machine. At most 60 s for `done`.
pub fn records_until(
    mut cmd: std::process::Command,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut child = Running(cmd.spawn().expect("start pipwatch"));
    let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let parse = |l: String| -> serde_json::Value {
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
    };
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|e| panic!("{e}: still waiting after {records:?}"));
        let r = parse(line);
        let enough = done(&r);
        records.push(r);
        if enough {
            break;
        }
    }
    let sent = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(sent.is_ok_and(|s| s.success()), "SIGTERM could not be sent");
    let status = exit_within(&mut child, std::time::Duration::from_secs(20)).expect("SIGTERM did not stop it");
    assert!(status.success(), "{status:?}");
    records.extend(lines.iter().map(parse));
    records
}

/// How `child` exited, if it did within `limit`.
pub fn exit_within(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// Whether `r` says the market feed has no more candles.
pub fn feed_finished(r: &serde_json::Value) -> bool {
    r["type"] == "feed" && r["state"] == "finished"
}

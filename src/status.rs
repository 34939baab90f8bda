//! `pipwatch status`: one look at a running instance's `/health`, as lines a
//! person reads or as its JSON, with the monitoring-plugin exit codes
//! (Nagios, Icinga, cron, a shell prompt): 0 healthy, 1 degraded,
//! 2 unhealthy, 3 unreachable or unknown.

use std::time::Duration;

use crate::health::{Report, Status};

pub const UNKNOWN: u8 = 3;

/// What `status` found: the exit code and what to print.
pub struct Look {
    pub code: u8,
    pub text: String,
}

/// `/health` of the instance `target` names: `host:port`, an http(s) URL or
/// the instance's ws(s) URL.
pub fn health_url(target: &str) -> Result<reqwest::Url, String> {
    let t = target.trim();
    let with_scheme = if t.contains("://") { t.to_string() } else { format!("http://{t}") };
    let mut url =
        reqwest::Url::parse(&with_scheme).map_err(|_| format!("'{target}' is not an address: write HOST:PORT"))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return Err(format!("'{target}' is not an http or ws URL")),
    };
    if url.host().is_none() {
        return Err(format!("'{target}' names no host"));
    }
    url = reqwest::Url::parse(&format!("{scheme}{}", &with_scheme[with_scheme.find("://").unwrap_or(0)..]))
        .map_err(|_| format!("'{target}' is not an address"))?;
    url.set_path("/health");
    url.set_query(None);
    Ok(url)
}

pub fn code(status: Status) -> u8 {
    match status {
        Status::Healthy => 0,
        Status::Degraded => 1,
        Status::Unhealthy => 2,
    }
}

/// Asks the instance. Never fails: what could not be learnt is code 3 with why.
pub async fn look(url: &reqwest::Url, token: Option<&str>, json: bool) -> Look {
    let unknown = |text: String| Look { code: UNKNOWN, text };
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => return unknown(format!("UNKNOWN: {}", crate::net::describe(e))),
    };
    let mut request = client.get(url.clone());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return unknown(format!(
                "UNREACHABLE: {url}: {}. Is `pipwatch headless` (or the console) running there?",
                crate::net::describe(e)
            ));
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        let why = if token.is_some() {
            "refused the token"
        } else {
            "wants a token: pass --token or set PIPWATCH_SERVER_TOKEN"
        };
        return unknown(format!("UNKNOWN: {url} {why}"));
    }
    let report: Report = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(_) => return unknown(format!("UNKNOWN: {url} answered {status} with no health report")),
    };
    let text = if json { body.trim().to_string() } else { lines(&report) };
    Look { code: code(report.status), text }
}

fn word(s: Status) -> &'static str {
    match s {
        Status::Healthy => "ok",
        Status::Degraded => "DEGRADED",
        Status::Unhealthy => "UNHEALTHY",
    }
}

/// One line per check, then the overall state, as a plugin's first line would read.
pub fn lines(r: &Report) -> String {
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in &r.checks {
        out.push_str(&format!("{:<9} {:<width$}  {}\n", word(c.status), c.name, c.message));
    }
    let name = match r.source.as_deref() {
        Some("demo") => {
            let prices = match r.history.as_slice() {
                [] => "simulated prices".to_string(),
                pairs => {
                    let names: Vec<&str> = pairs.iter().map(|i| i.as_str()).collect();
                    format!("recorded history for {}, simulated prices otherwise", names.join(", "))
                }
            };
            let clock = r.demo_clock.map_or(String::new(), |t| {
                let mut buf = [0u8; 20];
                let at = t.format_into(&mut buf);
                format!(", demo clock {} {}", &at[..10], &at[11..16])
            });
            format!("pipwatch (DEMO market: {prices}{clock}; not a live instance)")
        }
        _ => "pipwatch".to_string(),
    };
    let overall = match r.status {
        Status::Healthy => format!("{name} is healthy"),
        s => format!("{name} is {}: {}", word(s).to_lowercase(), r.reasons.join("; ")),
    };
    out.push_str(&overall);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_named_as_a_user_writes_it() {
        for (typed, want) in [
            ("127.0.0.1:8787", "http://127.0.0.1:8787/health"),
            ("http://box:9000", "http://box:9000/health"),
            ("ws://box:8787/ws", "http://box:8787/health"),
            ("wss://box/pipwatch/ws?token=x", "https://box/health"),
        ] {
            assert_eq!(health_url(typed).map(String::from).as_deref(), Ok(want), "{typed}");
        }
        assert!(health_url("ftp://box").is_err());
        assert_eq!((code(Status::Healthy), code(Status::Degraded), code(Status::Unhealthy)), (0, 1, 2));
    }
}

//! What went wrong with an HTTP request, in words an admin can act on.

/// Describes a failed request without its URL (webhook and API URLs can hold
/// tokens). reqwest's own message is "error sending request", and the cause
/// that says what happened ("Connection refused", a DNS or certificate
/// failure) is at the bottom of the chain under hyper's wrappers, so the
/// message is the kind of failure and that root cause.
pub fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        ""
    };
    let e = e.without_url();
    let top = e.to_string();
    let mut root = None;
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    let head = if kind.is_empty() { top.as_str() } else { kind };
    match root {
        // "timed out: operation timed out" says it twice.
        Some(r) if !r.is_empty() && !head.contains(r.as_str()) && !r.contains(head) => format!("{head}: {r}"),
        _ => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = reqwest::get(format!("http://127.0.0.1:{port}/secret-token")).await.unwrap_err();
        let text = describe(e);
        assert!(text.starts_with("could not connect: "), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("secret-token"), "the URL is left out: {text}");
    }

    #[tokio::test]
    async fn a_timeout_says_so() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
        let text = describe(client.get(format!("http://{addr}/")).send().await.unwrap_err());
        held.abort();
        assert_eq!(text, "timed out");
    }

    #[tokio::test]
    async fn an_unreadable_body_names_what_the_parser_found() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello")
                .await;
        });
        let resp = reqwest::get(format!("http://{addr}/")).await.unwrap();
        let text = describe(resp.json::<serde_json::Value>().await.unwrap_err());
        assert!(text.starts_with("error decoding response body: "), "{text}");
        assert!(text.contains("line 1 column 1"), "{text}");
    }
}

/// Capped exponential backoff with jitter: a random wait in [base/2, base]
/// where base is `first` for attempt 1 and doubles per attempt up to `cap`.
/// The jitter keeps many clients (or series) from retrying in lockstep.
pub fn backoff(attempt: u32, first: std::time::Duration, cap: std::time::Duration) -> std::time::Duration {
    use rand::Rng;
    let base = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(cap);
    let lo = base / 2;
    lo + base.saturating_sub(lo).mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod backoff_tests {
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (first, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..12u32 {
            let base = Duration::from_secs(1u64 << (attempt - 1)).min(cap);
            for _ in 0..50 {
                let d = super::backoff(attempt, first, cap);
                assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
            }
        }
    }
}

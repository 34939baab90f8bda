//! A Discord-like webhook server on 127.0.0.1:0 for the notifier tests.
//!
//! It answers the way `../shared/reference/discord.md` says Discord does:
//! only `/api/v10/webhooks/{id}/{token}?wait=true`, rate-limit headers on
//! every answer, 5 requests per 2 s per webhook with a JSON 429 beyond that,
//! 400 50035 for any payload outside Discord's limits, 404 10015 for a
//! deleted webhook. A test can also script outages (503), connection resets,
//! hangs and a hidden shared-scope 429.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Received {
    /// POST, or PATCH for an edit.
    pub method: String,
    /// The message edited (PATCH).
    pub message: Option<String>,
    pub webhook: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

impl Received {
    /// The footers of the embeds: pipwatch puts the signal or alert id there.
    pub fn ids(&self) -> Vec<String> {
        self.body["embeds"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["footer"]["text"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
}

pub struct World {
    pub limit: u32,
    pub window: Duration,
    windows: HashMap<String, (Instant, u32)>,
    pub deleted: HashSet<String>,
    pub outage_until: Option<Instant>,
    /// The next N requests: the connection is dropped without an answer.
    pub reset_next: u32,
    /// The next N requests: no answer for a minute.
    pub hang_next: u32,
    /// The next request: a hidden per-channel 429 with this retry_after.
    pub shared_429_next: Option<f64>,
    /// Messages carrying these ids are refused like a harmful link (400, 240000).
    pub reject_ids: HashSet<String>,
    pub requests: Vec<Received>,
    /// Messages posted, by id: what they show now.
    pub messages: HashMap<String, Value>,
    /// Messages a moderator deleted: an edit of one is a 404.
    pub deleted_messages: HashSet<String>,
    next_id: u64,
}

impl Default for World {
    fn default() -> Self {
        World {
            limit: 5,
            window: Duration::from_secs(2),
            windows: HashMap::new(),
            deleted: HashSet::new(),
            outage_until: None,
            reset_next: 0,
            hang_next: 0,
            shared_429_next: None,
            reject_ids: HashSet::new(),
            requests: Vec::new(),
            messages: HashMap::new(),
            deleted_messages: HashSet::new(),
            next_id: 1_000,
        }
    }
}

impl World {
    /// Ids Discord accepted (200), in order, with repeats.
    pub fn delivered_ids(&self) -> Vec<String> {
        self.requests.iter().filter(|r| r.status == 200 && r.method == "POST").flat_map(|r| r.ids()).collect()
    }

    pub fn count_status(&self, status: u16) -> usize {
        self.requests.iter().filter(|r| r.status == status).count()
    }
}

pub struct DiscordServer {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<World>>,
}

impl DiscordServer {
    /// A webhook URL as Discord's UI shows it (no API version).
    pub fn webhook(&self, id: u64, token: &str) -> String {
        format!("http://{}/api/webhooks/{id}/{token}", self.addr)
    }
}

pub async fn start() -> DiscordServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let world: Arc<Mutex<World>> = Arc::default();
    let w = world.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let w = w.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(w.clone(), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    DiscordServer { addr, world }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, headers: &[(&str, String)], body: &Value) -> Answer {
    let mut r = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.header("content-type", "application/json").body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.trim().chars().count()).unwrap_or(0)
}

/// Discord's payload rules; `Err` is the `errors` object of a 50035.
/// Discord's checks of a body; `edit`: a PATCH, which takes no username
/// (Discord refuses fields its edit endpoint does not have).
fn validate(body: &Value, edit: bool) -> Result<(), Value> {
    let name = body["username"].as_str().unwrap_or("");
    let lower = name.to_lowercase();
    if edit && !body["username"].is_null() {
        return Err(json!({"username": {"_errors": [{"code": "UNKNOWN_FIELD"}]}}));
    }
    if !edit
        && (name.trim().is_empty() || name.chars().count() > 80 || lower.contains("discord") || lower.contains("clyde"))
    {
        return Err(json!({"username": {"_errors": [{"code": "USERNAME_INVALID"}]}}));
    }
    if body["allowed_mentions"] != json!({"parse": []}) {
        return Err(json!({"allowed_mentions": "pipwatch must not ping anyone"}));
    }
    let embeds = body["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.is_empty() || embeds.len() > 10 {
        return Err(json!({"embeds": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}}));
    }
    let mut total = 0;
    for e in &embeds {
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        let too_long = chars(&e["title"]) > 256
            || chars(&e["description"]) > 4096
            || chars(&e["footer"]["text"]) > 2048
            || fields.len() > 25
            || e["color"].as_u64().is_none_or(|c| c > 0xFF_FF_FF);
        let bad_field = fields.iter().any(|f| {
            chars(&f["name"]) == 0 || chars(&f["value"]) == 0 || chars(&f["name"]) > 256 || chars(&f["value"]) > 1024
        });
        if too_long || bad_field {
            return Err(json!({"embeds": {"0": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}}}));
        }
        total += chars(&e["title"])
            + chars(&e["description"])
            + chars(&e["footer"]["text"])
            + fields.iter().map(|f| chars(&f["name"]) + chars(&f["value"])).sum::<usize>();
    }
    if total > 6000 {
        return Err(json!({"embeds": {"_errors": [{"code": "MAX_EMBED_SIZE_EXCEEDED"}]}}));
    }
    Ok(())
}

async fn handle(world: Arc<Mutex<World>>, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let now = Instant::now();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (webhook, edited) = match (method.as_str(), parts.as_slice()) {
        ("POST", ["api", "v10", "webhooks", id, _token]) => (id.to_string(), None),
        ("PATCH", ["api", "v10", "webhooks", id, _token, "messages", message]) => {
            (id.to_string(), Some(message.to_string()))
        }
        _ => (String::new(), None),
    };

    // Scripted failures come before any bookkeeping, as a proxy in front of Discord would.
    let (reset, hang, outage) = {
        let mut w = world.lock().unwrap();
        let reset = w.reset_next > 0;
        w.reset_next = w.reset_next.saturating_sub(u32::from(reset));
        let hang = !reset && w.hang_next > 0;
        w.hang_next = w.hang_next.saturating_sub(u32::from(hang));
        let outage = w.outage_until.is_some_and(|t| now < t);
        (reset, hang, outage)
    };
    let record = |status: u16| {
        world.lock().unwrap().requests.push(Received {
            method: method.clone(),
            message: edited.clone(),
            webhook: webhook.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
            status,
            at: now,
        })
    };
    if reset {
        record(0);
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted reset"));
    }
    if hang {
        record(0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Err(std::io::Error::other("hung"));
    }
    if outage {
        record(503);
        return Ok(answer(503, &[], &json!({"message": "upstream connect error", "code": 0})));
    }
    if webhook.is_empty() || (edited.is_none() && !query.split('&').any(|p| p == "wait=true")) {
        record(404);
        return Ok(answer(404, &[], &json!({"message": "404: Not Found", "code": 0})));
    }

    let mut w = world.lock().unwrap();
    if let Some(retry) = w.shared_429_next.take() {
        drop(w);
        record(429);
        let headers = [("retry-after", format!("{}", retry.ceil())), ("x-ratelimit-scope", "shared".into())];
        return Ok(answer(
            429,
            &headers,
            &json!({"message": "You are being rate limited.", "retry_after": retry, "global": false}),
        ));
    }
    let (limit, window) = (w.limit, w.window);
    let entry = w.windows.entry(webhook.clone()).or_insert((now, 0));
    if now.duration_since(entry.0) >= window {
        *entry = (now, 0);
    }
    let reset_after = window.saturating_sub(now.duration_since(entry.0)).as_secs_f64();
    if entry.1 >= limit {
        drop(w);
        record(429);
        let headers = [
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
            ("x-ratelimit-bucket", "webhookbucket".into()),
            ("x-ratelimit-scope", "user".into()),
            ("retry-after", format!("{}", reset_after.ceil())),
        ];
        return Ok(answer(
            429,
            &headers,
            &json!({"message": "You are being rate limited.", "retry_after": reset_after, "global": false}),
        ));
    }
    entry.1 += 1;
    let remaining = limit - entry.1;
    let headers = [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
        ("x-ratelimit-bucket", "webhookbucket".into()),
        ("x-ratelimit-scope", "user".into()),
    ];
    if w.deleted.contains(&webhook) {
        drop(w);
        record(404);
        return Ok(answer(404, &headers, &json!({"message": "Unknown Webhook", "code": 10015})));
    }
    let ids = Received {
        method: String::new(),
        message: None,
        webhook: String::new(),
        path: String::new(),
        query: String::new(),
        body: body.clone(),
        status: 0,
        at: now,
    }
    .ids();
    if ids.iter().any(|id| w.reject_ids.contains(id)) {
        drop(w);
        record(400);
        return Ok(answer(
            400,
            &headers,
            &json!({"code": 240000, "message": "Message blocked by harmful links filter"}),
        ));
    }
    if let Err(errors) = validate(&body, edited.is_some()) {
        drop(w);
        record(400);
        return Ok(answer(400, &headers, &json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})));
    }
    if let Some(message) = &edited {
        if w.deleted_messages.contains(message) || !w.messages.contains_key(message) {
            drop(w);
            record(404);
            return Ok(answer(404, &headers, &json!({"message": "Unknown Message", "code": 10008})));
        }
        w.messages.insert(message.clone(), body["embeds"].clone());
        drop(w);
        record(200);
        return Ok(answer(200, &headers, &json!({"id": message, "channel_id": "1", "embeds": body["embeds"]})));
    }
    w.next_id += 1;
    let id = w.next_id.to_string();
    w.messages.insert(id.clone(), body["embeds"].clone());
    drop(w);
    record(200);
    Ok(answer(200, &headers, &json!({"id": id, "channel_id": "1", "webhook_id": webhook, "embeds": body["embeds"]})))
}

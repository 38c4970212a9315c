//! Discord's REST API, with rate limits honoured and delivery retried a
//! bounded number of times.
//!
//! Why not serenity's `Http`: its base-URL override (`proxy`) only works
//! with its rate limiter disabled, and without the rate limiter a 429 comes
//! back as an error that has lost its `Retry-After`. So gatekeep sends REST
//! calls itself: one reqwest client, built with `no_proxy()` so a system
//! `HTTP_PROXY` can never hijack loopback, reading Discord's rate-limit
//! headers to pace itself and retrying 429s after `Retry-After`.
//!
//! Only *delivery* is retried (posting or editing a message, acknowledging
//! a click); a decision is never retried here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;

use super::render::Attachment;

/// Connect timeout and whole-request timeout of one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A REST failure. Never contains the token; the interaction token is
/// kept out of it too (`what` names the call instead of the path).
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("{what}: {detail}")]
    Transport { what: &'static str, detail: String },
    #[error("{what}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        what: &'static str,
        attempts: u32,
        last: String,
    },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// `GET /gateway/bot`: where to connect, and how many session starts
/// (IDENTIFYs) the bot has left.
#[derive(Debug, Clone)]
pub struct GatewayBot {
    pub url: String,
    pub budget: Option<SessionBudget>,
}

/// Discord's daily budget of session starts for one bot: when it runs out,
/// Discord resets the bot's token (every process using it is cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBudget {
    pub remaining: u64,
    pub total: u64,
    /// Until the budget is full again.
    pub reset_after: Duration,
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// Give up rather than wait past this much time in total.
    pub budget: Duration,
    /// First backoff after a 5xx or transport error; doubled each time.
    pub backoff: Duration,
}

impl Retry {
    /// Posting and editing messages.
    pub const DELIVERY: Retry = Retry {
        attempts: 5,
        budget: Duration::from_secs(30),
        backoff: Duration::from_millis(250),
    };
    /// Interaction callbacks: Discord's 3 s window leaves no room for more.
    pub const ACK: Retry = Retry {
        attempts: 2,
        budget: Duration::from_millis(2500),
        backoff: Duration::from_millis(100),
    };
}

/// The body of a request.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// `payload_json` plus `files[i]` parts.
    Multipart(&'a Value, &'a [Attachment]),
}

/// One attempt's failure, classified for the retry loop.
enum Attempt {
    /// Worth retrying after this long (`None`: use the backoff).
    Retry(Option<Duration>, String),
    Fatal(RestError),
}

/// The REST client of one run.
pub struct Rest {
    client: reqwest::Client,
    /// Scheme and host, e.g. `https://discord.com`, without trailing slash.
    base: String,
    /// `Bot <token>`, marked sensitive so reqwest never logs it.
    auth: HeaderValue,
    /// Per bucket (see [`Rest::send`]), when it may be used again. Held only
    /// for a lookup or an update, never across an await.
    blocked_until: Mutex<HashMap<String, Instant>>,
}

impl Rest {
    pub fn new(base: &str, token: &SecretString) -> Result<Self, RestError> {
        let client = http_client()?;
        let mut auth =
            HeaderValue::from_str(&format!("Bot {}", token.expose_secret())).map_err(|_| {
                RestError::Client(
                    "the Discord token contains characters not allowed in a header".into(),
                )
            })?;
        auth.set_sensitive(true);
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            blocked_until: Mutex::new(HashMap::new()),
        })
    }

    /// `GET /api/v10/gateway/bot`: the websocket URL and the bot's session
    /// start budget. No retries: at start-up a failure must surface at once.
    pub async fn gateway_bot(&self) -> Result<GatewayBot, RestError> {
        let what = "gateway lookup";
        let v = self.get(what, "/gateway/bot").await?;
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| RestError::Status {
                what,
                status: 200,
                message: "the response has no `url`".into(),
            })?;
        // Read leniently: without it, nothing is known and nothing refused.
        let limit = &v["session_start_limit"];
        let budget = limit["remaining"].as_u64().map(|remaining| SessionBudget {
            remaining,
            total: limit["total"].as_u64().unwrap_or(0),
            reset_after: Duration::from_millis(limit["reset_after"].as_u64().unwrap_or(0)),
        });
        Ok(GatewayBot { url, budget })
    }

    /// `GET /api/v10/oauth2/applications/@me`: the bot's application id.
    /// No retries, as for the gateway lookup.
    pub async fn application_id(&self) -> Result<u64, RestError> {
        let what = "application lookup";
        let v = self.get(what, "/oauth2/applications/@me").await?;
        v.get("id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| RestError::Status {
                what,
                status: 200,
                message: "the response has no application `id`".into(),
            })
    }

    /// `GET /api/v10{path}`, once: for checks that report a failure rather
    /// than wait it out (`gatekeep doctor`).
    pub async fn get(&self, what: &'static str, path: &str) -> Result<Value, RestError> {
        let once = Retry {
            attempts: 1,
            ..Retry::ACK
        };
        self.send(what, what, Method::GET, path, Body::Empty, once)
            .await
    }

    /// Sends `body` to `/api/v10{path}`, honouring rate limits and retrying
    /// 429s, 5xx and transport errors within `retry`. `bucket` groups
    /// requests that share a Discord rate limit. Returns the JSON response
    /// (`Null` for an empty body).
    pub async fn send(
        &self,
        what: &'static str,
        bucket: &str,
        method: Method,
        path: &str,
        body: Body<'_>,
        retry: Retry,
    ) -> Result<Value, RestError> {
        let started = Instant::now();
        let mut backoff = retry.backoff;
        let mut last = String::new();
        for attempt in 1..=retry.attempts {
            self.wait_for_bucket(bucket, started, retry.budget).await;
            match self
                .attempt(what, bucket, method.clone(), path, &body)
                .await
            {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(after, msg)) => {
                    last = msg;
                    if attempt == retry.attempts {
                        break;
                    }
                    let wait = after.unwrap_or(backoff);
                    backoff *= 2;
                    if started.elapsed() + wait > retry.budget {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(RestError::GaveUp {
            what,
            attempts: retry.attempts,
            last,
        })
    }

    /// Waits until `bucket` (and the global limit) may be used, but never
    /// past the retry budget.
    async fn wait_for_bucket(&self, bucket: &str, started: Instant, budget: Duration) {
        let until = {
            let map = self
                .blocked_until
                .lock()
                .expect("the bucket map is never poisoned: no panics while held");
            [map.get(bucket), map.get("global")]
                .into_iter()
                .flatten()
                .max()
                .copied()
        };
        if let Some(until) = until {
            let limit = started + budget;
            tokio::time::sleep_until(until.min(limit)).await;
        }
    }

    fn block(&self, bucket: &str, for_: Duration) {
        let until = Instant::now() + for_;
        let mut map = self
            .blocked_until
            .lock()
            .expect("the bucket map is never poisoned: no panics while held");
        let entry = map.entry(bucket.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    async fn attempt(
        &self,
        what: &'static str,
        bucket: &str,
        method: Method,
        path: &str,
        body: &Body<'_>,
    ) -> Result<Value, Attempt> {
        let url = format!("{}/api/v10{path}", self.base);
        let mut req = self
            .client
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        req = match body {
            Body::Empty => req,
            Body::Json(v) => req.json(v),
            Body::Multipart(payload, files) => {
                let mut form =
                    reqwest::multipart::Form::new().text("payload_json", payload.to_string());
                for (i, f) in files.iter().enumerate() {
                    let part = reqwest::multipart::Part::bytes(f.content.clone())
                        .file_name(f.filename.clone())
                        .mime_str("text/plain")
                        .map_err(|e| {
                            Attempt::Fatal(RestError::Transport {
                                what,
                                detail: e.to_string(),
                            })
                        })?;
                    form = form.part(format!("files[{i}]"), part);
                }
                req.multipart(form)
            }
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(Attempt::Retry(None, transport_detail(e))),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        self.track_limits(bucket, &headers);
        let text = resp.text().await.unwrap_or_default();
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(json);
        }
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| truncate_chars(&text, 200), str::to_owned);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let after = retry_after(&headers, &json).unwrap_or(Duration::from_secs(1));
            let global = json.get("global").and_then(Value::as_bool).unwrap_or(false)
                || headers.get("x-ratelimit-global").is_some();
            self.block(if global { "global" } else { bucket }, after);
            return Err(Attempt::Retry(Some(after), format!("HTTP 429: {message}")));
        }
        if status.is_server_error() {
            return Err(Attempt::Retry(
                None,
                format!("HTTP {}: {message}", status.as_u16()),
            ));
        }
        Err(Attempt::Fatal(RestError::Status {
            what,
            status: status.as_u16(),
            message,
        }))
    }

    /// Reads `X-RateLimit-Remaining` / `X-RateLimit-Reset-After`: when the
    /// bucket is empty, the next request waits for its reset instead of
    /// provoking a 429.
    fn track_limits(&self, bucket: &str, headers: &HeaderMap) {
        let remaining = header_f64(headers, "x-ratelimit-remaining");
        let reset_after = header_f64(headers, "x-ratelimit-reset-after");
        if let (Some(remaining), Some(reset_after)) = (remaining, reset_after) {
            if remaining < 1.0 && reset_after > 0.0 {
                self.block(bucket, Duration::from_secs_f64(reset_after.min(60.0)));
            }
        }
    }
}

/// One reqwest client for everything: no system proxy (loopback must stay
/// loopback), bounded connect and request times.
pub fn http_client() -> Result<reqwest::Client, RestError> {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!(
            "DiscordBot (gatekeep, ",
            env!("CARGO_PKG_VERSION"),
            ")"
        ))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| RestError::Client(e.to_string()))
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The wait Discord asks for: the body's `retry_after` (fractional seconds)
/// or the `Retry-After` header; capped so a bogus value cannot stall a run.
fn retry_after(headers: &HeaderMap, body: &Value) -> Option<Duration> {
    let secs = body
        .get("retry_after")
        .and_then(Value::as_f64)
        .or_else(|| header_f64(headers, "retry-after"))?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(60.0)))
}

/// A reqwest error without its URL (which may hold an interaction token).
fn transport_detail(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let source = std::error::Error::source(&e)
        .map(ToString::to_string)
        .unwrap_or_default();
    let e = e.without_url();
    if source.is_empty() {
        format!("{kind}: {e}")
    } else {
        format!("{kind}: {source}")
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_body_and_caps() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(
            retry_after(&headers, &serde_json::json!({"retry_after": 0.25})),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers, &Value::Null),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&HeaderMap::new(), &serde_json::json!({"retry_after": 1e9})),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after(&HeaderMap::new(), &Value::Null), None);
    }
}

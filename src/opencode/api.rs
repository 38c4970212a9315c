//! OpenCode's HTTP API, the calls gatekeep makes (docs/design.md, "Start-up" and "OpenCode facts relied on").
//!
//! Every call carries Basic auth (user `opencode`, the server's random
//! password), the absolute workspace as `?directory=` (without it OpenCode
//! routes the call to another instance, where it silently does nothing) and
//! a timeout. The event stream is opened by [`super::events::subscribe`]
//! through [`Api::event_request`], the one call without a body timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::wire::{self, LastMessage, PermissionRequest, SessionInfo, SessionStatus};

/// The Basic-auth user `opencode serve` expects.
const USER: &str = "opencode";
/// How much of an error body is kept in an error message.
const BODY_LIMIT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid OpenCode base URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("workspace directory {0} is not absolute (this is a bug)")]
    RelativeDirectory(PathBuf),
    #[error("workspace directory {0} is not valid UTF-8")]
    NonUtf8Directory(PathBuf),
    #[error("refusing to use {0:?} as an OpenCode id")]
    BadId(String),
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{op}: OpenCode did not answer within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("{op}: request to OpenCode failed: {source}")]
    Transport {
        op: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// `POST /permission/{id}/reply` on an unknown or already answered
    /// request: a late answer that lost cleanly.
    #[error("permission request {0} is unknown or already answered")]
    PermissionNotFound(String),
    /// `POST /question/{id}/reject` on an unknown or already answered one.
    #[error("question {0} is unknown or already answered")]
    QuestionNotFound(String),
    #[error("{op}: OpenCode answered HTTP {status}: {body}")]
    Status {
        op: &'static str,
        status: u16,
        body: String,
    },
    #[error("{op}: unexpected response from OpenCode: {reason}")]
    Decode { op: &'static str, reason: String },
}

impl ApiError {
    /// Whether OpenCode answered at all (as opposed to a network failure or
    /// timeout), for callers deciding between "retry" and "give up".
    #[must_use]
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            ApiError::PermissionNotFound(_)
                | ApiError::QuestionNotFound(_)
                | ApiError::Status { .. }
                | ApiError::Decode { .. }
        )
    }
}

/// A client for one `opencode serve` instance and one workspace.
///
/// `Debug` shows the URL and directory; the password is a [`SecretString`]
/// and prints as redacted.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: reqwest::Url,
    directory: String,
    password: SecretString,
    timeout: Duration,
}

/// A reply to a permission request. There is deliberately no `Always`:
/// it would allow the pattern for every session of the directory until the
/// server restarts (docs/design.md, "OpenCode facts relied on"), which no single human click should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Allow this one call.
    Once,
    /// Deny it. Without a message OpenCode also stops the agent loop and
    /// rejects every other pending request of the session; with one, the
    /// model gets the text as feedback and continues.
    Reject { message: Option<String> },
}

impl Reply {
    fn body(&self) -> Value {
        match self {
            Reply::Once => serde_json::json!({ "reply": "once" }),
            Reply::Reject { message: None } => serde_json::json!({ "reply": "reject" }),
            Reply::Reject {
                message: Some(message),
            } => serde_json::json!({ "reply": "reject", "message": message }),
        }
    }
}

/// One entry of a per-session permission ruleset (`POST /session`
/// `permission`), e.g. `{bash, "*", ask}` to force asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub permission: String,
    pub pattern: String,
    pub action: Action,
}

impl Rule {
    /// A rule that makes `permission` ask for every pattern.
    #[must_use]
    pub fn ask(permission: impl Into<String>) -> Self {
        Rule {
            permission: permission.into(),
            pattern: "*".to_owned(),
            action: Action::Ask,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    Ask,
}

/// The body of `POST /session/{id}/prompt_async`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Prompt {
    pub parts: Vec<PromptPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Prompt {
    /// A prompt of one text part.
    #[must_use]
    pub fn text(text: impl Into<String>) -> Self {
        Prompt {
            parts: vec![PromptPart::Text { text: text.into() }],
            ..Prompt::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelRef {
    #[serde(rename = "providerID")]
    pub provider_id: String,
    #[serde(rename = "modelID")]
    pub model_id: String,
}

impl ModelRef {
    /// Parse `provider/model` as `opencode run -m` takes it (the model id may
    /// itself contain `/`).
    #[must_use]
    pub fn parse(spec: &str) -> Option<Self> {
        let (provider, model) = spec.split_once('/')?;
        (!provider.is_empty() && !model.is_empty()).then(|| ModelRef {
            provider_id: provider.to_owned(),
            model_id: model.to_owned(),
        })
    }
}

/// A prompt part (`TextPartInput` / `FilePartInput` in the OpenAPI document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PromptPart {
    Text {
        text: String,
    },
    File {
        mime: String,
        url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
}

impl PromptPart {
    /// A file attachment as `opencode run -f` sends it: a `file://` URL of
    /// the absolute path, a MIME type from the extension (text otherwise),
    /// and `application/x-directory` for directories.
    #[must_use]
    pub fn file(path: &Path) -> Self {
        let mime = if path.is_dir() {
            "application/x-directory"
        } else {
            match path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("gif") => "image/gif",
                Some("webp") => "image/webp",
                Some("pdf") => "application/pdf",
                _ => "text/plain",
            }
        };
        let url = reqwest::Url::from_file_path(path)
            .map_or_else(|()| format!("file://{}", path.display()), String::from);
        PromptPart::File {
            mime: mime.to_owned(),
            url,
            filename: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

/// The body of `POST /session/{id}/command`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Command {
    pub command: String,
    pub arguments: String,
    /// `provider/model`, as a single string in this endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// File parts only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PromptPart>,
}

/// An agent as `GET /agent` lists it, with its merged permission ruleset
/// (built-in defaults, config, agent config; last matching rule wins).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct AgentInfo {
    pub name: String,
    #[serde(default)]
    pub permission: Vec<RuleInfo>,
}

/// One rule of an agent's ruleset, as OpenCode reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RuleInfo {
    pub permission: String,
    pub pattern: String,
    /// `allow`, `ask` or `deny`.
    pub action: String,
}

/// A pending `question` tool request (`GET /question`). Kept loose: gatekeep
/// only lists and rejects them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct QuestionRequest {
    pub id: String,
    #[serde(rename = "sessionID")]
    pub session_id: String,
    #[serde(default)]
    pub questions: Vec<Value>,
}

impl Api {
    /// `base_url` as printed by `opencode serve` (`http://127.0.0.1:PORT`);
    /// `directory` must be absolute (it names the OpenCode instance);
    /// `timeout` bounds every call except the event stream's body.
    pub fn new(
        base_url: &str,
        directory: &Path,
        password: SecretString,
        timeout: Duration,
    ) -> Result<Api, ApiError> {
        let bad = |reason: &str| ApiError::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = reqwest::Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("expected http://host:port"));
        }
        // Url::join treats the last segment without a slash as a file.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        if !directory.is_absolute() {
            return Err(ApiError::RelativeDirectory(directory.to_owned()));
        }
        let directory = directory
            .to_str()
            .ok_or_else(|| ApiError::NonUtf8Directory(directory.to_owned()))?
            .to_owned();
        let http = reqwest::Client::builder()
            // A system HTTP(S)_PROXY must never see loopback traffic carrying
            // the password (docs/design.md, "Discord facts relied on").
            .no_proxy()
            .connect_timeout(timeout)
            .build()
            .map_err(ApiError::Client)?;
        Ok(Api {
            http,
            base,
            directory,
            password,
            timeout,
        })
    }

    /// The per-request timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The workspace directory sent with every call.
    #[must_use]
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// The server's base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `POST /session`: a new root session; `rules` (may be empty) become its
    /// permission ruleset, which OpenCode applies over the config.
    pub async fn create_session(
        &self,
        title: Option<&str>,
        rules: &[Rule],
    ) -> Result<SessionInfo, ApiError> {
        const OP: &str = "create session";
        let mut body = serde_json::Map::new();
        if let Some(title) = title {
            body.insert("title".into(), Value::from(title));
        }
        if !rules.is_empty() {
            body.insert(
                "permission".into(),
                serde_json::to_value(rules).map_err(|e| ApiError::Decode {
                    op: OP,
                    reason: e.to_string(),
                })?,
            );
        }
        let resp = self
            .send(OP, self.request(Method::POST, "session")?.json(&body))
            .await?;
        json_body(OP, resp).await
    }

    /// `DELETE /session/{id}`: takes back a session gatekeep made for a run
    /// that then did not begin (the server was refused).
    pub async fn delete_session(&self, session_id: &str) -> Result<(), ApiError> {
        const OP: &str = "delete session";
        let path = format!("session/{}", seg(session_id)?);
        self.send(OP, self.request(Method::DELETE, &path)?).await?;
        Ok(())
    }

    /// `POST /session/{id}/prompt_async`: starts the run; OpenCode answers
    /// 204 at once and the run proceeds on the event stream.
    pub async fn prompt_async(&self, session_id: &str, prompt: &Prompt) -> Result<(), ApiError> {
        const OP: &str = "send prompt";
        let path = format!("session/{}/prompt_async", seg(session_id)?);
        self.send(OP, self.request(Method::POST, &path)?.json(prompt))
            .await?;
        Ok(())
    }

    /// `GET /permission`: every pending request of the directory (all
    /// sessions; filter by session yourself).
    pub async fn list_permissions(&self) -> Result<Vec<PermissionRequest>, ApiError> {
        const OP: &str = "list permissions";
        let resp = self
            .send(OP, self.request(Method::GET, "permission")?)
            .await?;
        json_body(OP, resp).await
    }

    /// `GET /global/health`: the release the server reports, if it does.
    pub async fn version(&self) -> Result<Option<String>, ApiError> {
        const OP: &str = "read the server's version";
        let resp = self
            .send(OP, self.request(Method::GET, "global/health")?)
            .await?;
        let health: Value = json_body(OP, resp).await?;
        Ok(health
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// How many saved (persistent) approvals OpenCode keeps for the project
    /// (`GET /api/permission/saved`, OpenCode 1.18's newer API). `None`
    /// when the server has no such route or answers in another shape.
    pub async fn saved_approvals(&self) -> Option<usize> {
        const OP: &str = "list saved approvals";
        let resp = self
            .send(OP, self.request(Method::GET, "api/permission/saved").ok()?)
            .await
            .ok()?;
        let saved: Value = json_body(OP, resp).await.ok()?;
        saved.get("data").and_then(Value::as_array).map(Vec::len)
    }

    /// The HTTP status of `GET /permission` (the route gatekeep lists
    /// pending requests with): how a release that dropped it is told
    /// apart. `None` when the call failed in transport.
    pub async fn permission_route_status(&self) -> Option<u16> {
        match self.list_permissions().await {
            Ok(_) => Some(200),
            Err(ApiError::Status { status, .. }) => Some(status),
            Err(_) => None,
        }
    }

    /// `GET /session/status`, for one session (absent when idle). Read
    /// leniently: what does not read is `None`, never an error.
    pub async fn session_status(
        &self,
        session_id: &str,
    ) -> Result<Option<SessionStatus>, ApiError> {
        const OP: &str = "read session statuses";
        let resp = self
            .send(OP, self.request(Method::GET, "session/status")?)
            .await?;
        let all: Value = json_body(OP, resp).await?;
        Ok(wire::status_of(&all, session_id))
    }

    /// How the last message of a session left it (`GET
    /// /session/{id}/message?limit=1`), leniently.
    pub async fn last_message(&self, session_id: &str) -> Result<LastMessage, ApiError> {
        const OP: &str = "read the last message";
        let path = format!("session/{}/message", seg(session_id)?);
        let resp = self
            .send(
                OP,
                self.request(Method::GET, &path)?.query(&[("limit", "1")]),
            )
            .await?;
        let messages: Value = json_body(OP, resp).await?;
        Ok(wire::last_message(&messages))
    }

    /// `POST /permission/{id}/reply`. A 404 (unknown or already answered) is
    /// [`ApiError::PermissionNotFound`].
    pub async fn reply_permission(&self, request_id: &str, reply: &Reply) -> Result<(), ApiError> {
        const OP: &str = "reply to permission";
        let path = format!("permission/{}/reply", seg(request_id)?);
        let result = self
            .send(OP, self.request(Method::POST, &path)?.json(&reply.body()))
            .await;
        match result {
            Err(ApiError::Status { status: 404, .. }) => {
                Err(ApiError::PermissionNotFound(request_id.to_owned()))
            }
            other => other.map(drop),
        }
    }

    /// `POST /session/{id}/abort`. Does not clear pending permissions: reject
    /// them first (docs/design.md, "OpenCode facts relied on").
    pub async fn abort(&self, session_id: &str) -> Result<(), ApiError> {
        const OP: &str = "abort session";
        let path = format!("session/{}/abort", seg(session_id)?);
        self.send(OP, self.request(Method::POST, &path)?).await?;
        Ok(())
    }

    /// `POST /instance/dispose`: OpenCode ends the instance; the event stream
    /// ends after `server.instance.disposed`.
    pub async fn dispose(&self) -> Result<(), ApiError> {
        const OP: &str = "dispose instance";
        self.send(OP, self.request(Method::POST, "instance/dispose")?)
            .await?;
        Ok(())
    }

    /// `GET /question`: pending `question` tool requests.
    pub async fn list_questions(&self) -> Result<Vec<QuestionRequest>, ApiError> {
        const OP: &str = "list questions";
        let resp = self
            .send(OP, self.request(Method::GET, "question")?)
            .await?;
        json_body(OP, resp).await
    }

    /// `POST /question/{id}/reply`: one answer (the chosen labels, or free
    /// text) per question, in order.
    pub async fn reply_question(
        &self,
        question_id: &str,
        answers: &[Vec<String>],
    ) -> Result<(), ApiError> {
        const OP: &str = "answer question";
        let path = format!("question/{}/reply", seg(question_id)?);
        let body = serde_json::json!({ "answers": answers });
        let result = self
            .send(OP, self.request(Method::POST, &path)?.json(&body))
            .await;
        match result {
            Err(ApiError::Status { status: 404, .. }) => {
                Err(ApiError::QuestionNotFound(question_id.to_owned()))
            }
            other => other.map(drop),
        }
    }

    /// `POST /question/{id}/reject`.
    pub async fn reject_question(&self, question_id: &str) -> Result<(), ApiError> {
        const OP: &str = "reject question";
        let path = format!("question/{}/reject", seg(question_id)?);
        let result = self.send(OP, self.request(Method::POST, &path)?).await;
        match result {
            Err(ApiError::Status { status: 404, .. }) => {
                Err(ApiError::QuestionNotFound(question_id.to_owned()))
            }
            other => other.map(drop),
        }
    }

    /// `GET /agent`: every agent with its merged permission ruleset, to
    /// check that `--gate` kinds really ask.
    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>, ApiError> {
        const OP: &str = "list agents";
        let resp = self.send(OP, self.request(Method::GET, "agent")?).await?;
        json_body(OP, resp).await
    }

    /// `GET /session`: every session of the directory, children included
    /// (so a child created while the event stream was down can be found).
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ApiError> {
        const OP: &str = "list sessions";
        let resp = self.send(OP, self.request(Method::GET, "session")?).await?;
        json_body(OP, resp).await
    }

    /// `POST /session/{id}/fork`: a copy of the session to continue from,
    /// leaving the original untouched (`opencode run --fork`).
    pub async fn fork_session(&self, session_id: &str) -> Result<SessionInfo, ApiError> {
        const OP: &str = "fork session";
        let path = format!("session/{}/fork", seg(session_id)?);
        let resp = self
            .send(
                OP,
                self.request(Method::POST, &path)?
                    .json(&serde_json::json!({})),
            )
            .await?;
        json_body(OP, resp).await
    }

    /// `POST /session/{id}/command`: runs a slash command (`opencode run
    /// --command`). OpenCode answers only when the command's turn is over,
    /// so this call is bounded by `within` (the run's time), not by the
    /// per-request timeout; the run itself is followed on the event stream.
    pub async fn command(
        &self,
        session_id: &str,
        command: &Command,
        within: Duration,
    ) -> Result<(), ApiError> {
        const OP: &str = "run command";
        let path = format!("session/{}/command", seg(session_id)?);
        let req = self
            .authed(Method::POST, &path)?
            .timeout(within)
            .json(command);
        self.send(OP, req).await?;
        Ok(())
    }

    /// `GET /event` with auth and directory but *no* timeout: the body is the
    /// run-long event stream. The caller bounds the connection setup.
    pub(crate) fn event_request(&self) -> Result<RequestBuilder, ApiError> {
        Ok(self
            .authed(Method::GET, "event")?
            .header(reqwest::header::ACCEPT, "text/event-stream"))
    }

    /// Every call but the event stream: authed and time-bounded.
    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, ApiError> {
        Ok(self.authed(method, path)?.timeout(self.timeout))
    }

    /// The one place the password leaves its secret wrapper on the client
    /// side.
    fn authed(&self, method: Method, path: &str) -> Result<RequestBuilder, ApiError> {
        let mut url = self.base.join(path).map_err(|e| ApiError::BadUrl {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })?;
        url.query_pairs_mut()
            .append_pair("directory", &self.directory);
        Ok(self
            .http
            .request(method, url)
            .basic_auth(USER, Some(self.password.expose_secret())))
    }

    /// Send, map timeouts and non-2xx answers to errors.
    async fn send(
        &self,
        op: &'static str,
        req: RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let resp = req.send().await.map_err(|e| self.transport(op, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(ApiError::Status {
            op,
            status: status.as_u16(),
            body: truncate(body.trim(), BODY_LIMIT),
        })
    }

    fn transport(&self, op: &'static str, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout {
                op,
                timeout: self.timeout,
            }
        } else {
            // Drop the URL: it is ours and only adds noise to the message.
            ApiError::Transport {
                op,
                source: e.without_url(),
            }
        }
    }
}

async fn json_body<T: DeserializeOwned>(
    op: &'static str,
    resp: reqwest::Response,
) -> Result<T, ApiError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| ApiError::Decode {
        op,
        reason: e.to_string(),
    })?;
    if status == StatusCode::NO_CONTENT {
        return Err(ApiError::Decode {
            op,
            reason: "empty response".to_owned(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
        op,
        reason: format!(
            "{e} in {}",
            truncate(&String::from_utf8_lossy(&bytes), BODY_LIMIT)
        ),
    })
}

/// An id as one URL path segment. OpenCode ids are `per_…`, `ses_…`,
/// `que_…` of ASCII letters and digits; anything else is refused so an id
/// taken from an event can never add or climb path segments.
fn seg(id: &str) -> Result<&str, ApiError> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id)
    } else {
        Err(ApiError::BadId(id.chars().take(80).collect()))
    }
}

fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Api {
        Api::new(
            "http://127.0.0.1:4096",
            Path::new("/work/space"),
            SecretString::from("hunter2-very-secret"),
            Duration::from_secs(1),
        )
        .expect("valid")
    }

    #[test]
    fn debug_never_prints_the_password() {
        let shown = format!("{:?}", api());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("/work/space"), "{shown}");
    }

    #[test]
    fn every_request_carries_directory_and_auth() {
        let req = api()
            .request(
                Method::POST,
                &format!("permission/{}/reply", seg("per_1").expect("valid id")),
            )
            .expect("builds")
            .build()
            .expect("valid request");
        assert_eq!(
            req.url().as_str(),
            "http://127.0.0.1:4096/permission/per_1/reply?directory=%2Fwork%2Fspace"
        );
        let auth = req
            .headers()
            .get(reqwest::header::AUTHORIZATION)
            .expect("auth header")
            .to_str()
            .expect("ascii");
        // base64("opencode:hunter2-very-secret")
        assert_eq!(auth, "Basic b3BlbmNvZGU6aHVudGVyMi12ZXJ5LXNlY3JldA==");
        assert_eq!(req.timeout(), Some(&Duration::from_secs(1)));
        let ev = api()
            .event_request()
            .expect("builds")
            .build()
            .expect("valid");
        assert_eq!(ev.timeout(), None, "the stream body must not time out");
        assert!(ev
            .url()
            .as_str()
            .ends_with("/event?directory=%2Fwork%2Fspace"));
    }

    #[test]
    fn ids_cannot_escape_their_segment() {
        assert_eq!(seg("per_abc123").expect("valid"), "per_abc123");
        for bad in ["../x", "..", "a?b", "a/b", "", "per_1%2F"] {
            assert!(matches!(seg(bad), Err(ApiError::BadId(_))), "{bad:?}");
        }
    }

    #[test]
    fn reply_bodies() {
        assert_eq!(Reply::Once.body(), serde_json::json!({"reply": "once"}));
        assert_eq!(
            Reply::Reject { message: None }.body(),
            serde_json::json!({"reply": "reject"})
        );
        assert_eq!(
            Reply::Reject {
                message: Some("no".into())
            }
            .body(),
            serde_json::json!({"reply": "reject", "message": "no"})
        );
    }

    #[test]
    fn prompt_body_matches_openapi() {
        let prompt = Prompt {
            parts: vec![
                PromptPart::Text {
                    text: "fix it".into(),
                },
                PromptPart::file(Path::new("/w/a.png")),
            ],
            model: ModelRef::parse("openrouter/anthropic/claude"),
            agent: Some("build".into()),
            variant: None,
        };
        assert_eq!(
            serde_json::to_value(&prompt).expect("serializes"),
            serde_json::json!({
                "parts": [
                    {"type": "text", "text": "fix it"},
                    {"type": "file", "mime": "image/png", "url": "file:///w/a.png", "filename": "a.png"}
                ],
                "model": {"providerID": "openrouter", "modelID": "anthropic/claude"},
                "agent": "build"
            })
        );
        assert_eq!(ModelRef::parse("nomodel"), None);
        assert_eq!(ModelRef::parse("/m"), None);
    }

    #[test]
    fn rules_serialize_as_ruleset() {
        assert_eq!(
            serde_json::to_value([Rule::ask("bash")]).expect("serializes"),
            serde_json::json!([{"permission": "bash", "pattern": "*", "action": "ask"}])
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let pw = || SecretString::from("x");
        let t = Duration::from_secs(1);
        assert!(matches!(
            Api::new("127.0.0.1:1", Path::new("/w"), pw(), t),
            Err(ApiError::BadUrl { .. })
        ));
        assert!(matches!(
            Api::new("http://127.0.0.1:1", Path::new("rel"), pw(), t),
            Err(ApiError::RelativeDirectory(_))
        ));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}

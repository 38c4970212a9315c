//! OpenCode's JSON shapes, and nothing else: pure parsing, no I/O.
//!
//! Every `data:` frame of `GET /event` is `{"id","type","properties"}`;
//! `GET /global/event` wraps the same frame as `{"directory","project",
//! "payload"}`. [`Event::parse`] accepts both. Event types gatekeep does not
//! use become [`Event::Other`]: OpenCode adds event types in minor releases
//! and an unknown one must never stop a run.
//!
//! The one frame that must never be lost is `permission.asked`: a request we
//! cannot parse is still a request OpenCode is waiting on, so it comes back
//! as [`Event::PermissionMalformed`] carrying whatever ids could be found, and
//! the caller denies it (fail closed).
//!
//! Shapes were measured on OpenCode 1.18.33; see
//! `tests/fixtures/opencode-1.18.33/` (copied from the shared reference).

use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A frame that is not an event at all (not JSON, no `type`). A frame that
/// *is* a `permission.asked` never ends up here; see
/// [`Event::PermissionMalformed`].
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("event frame is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("event frame has no \"type\"")]
    NoType,
    #[error("malformed {kind} event: {reason}")]
    Malformed { kind: String, reason: String },
}

/// One event from OpenCode's stream, reduced to what gatekeep uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `server.connected`: always the first frame of a stream; proves the
    /// subscription is live before we prompt.
    ServerConnected,
    /// `server.heartbeat`, every 10 s.
    Heartbeat,
    /// `session.created`; child sessions (subagents) have a `parent_id`.
    SessionCreated(SessionInfo),
    /// `session.updated`: same shape; carries the title and agent once known.
    SessionUpdated(SessionInfo),
    /// `message.updated`: only the role, so the caller can tell the user's
    /// prompt (echoed back as a text part) from the agent's text.
    MessageUpdated {
        session_id: String,
        message_id: String,
        role: String,
    },
    PermissionAsked(PermissionRequest),
    /// A `permission.asked` whose properties do not parse. OpenCode is still
    /// waiting on it: deny it by id if one was found.
    PermissionMalformed(MalformedPermission),
    /// `permission.replied`: the authoritative settlement of a request, also
    /// for replies gatekeep did not send (reject cascades, other clients).
    PermissionReplied {
        session_id: String,
        request_id: String,
        reply: ReplyKind,
    },
    SessionStatus {
        session_id: String,
        status: SessionStatus,
    },
    SessionIdle {
        session_id: String,
    },
    SessionError {
        session_id: Option<String>,
        /// `MessageAbortedError`, `ProviderAuthError`, `APIError`, …
        name: String,
        message: Option<String>,
    },
    PartUpdated(Part),
    /// `message.part.delta`: streamed text of a part.
    PartDelta {
        session_id: String,
        message_id: String,
        part_id: String,
        /// Which field grows; `text` for text parts.
        field: String,
        delta: String,
    },
    /// `question.asked` (the `question` tool). Read leniently: a question
    /// whose parts cannot be read is still dismissed by its id.
    QuestionAsked {
        id: Option<String>,
        session_id: Option<String>,
        /// `None` when the questions cannot be read (then the question is
        /// dismissed: OpenCode would wait on it forever).
        questions: Option<Vec<QuestionInfo>>,
    },
    /// `question.replied`: a question was answered (the authoritative
    /// settlement, like `permission.replied`).
    QuestionReplied {
        session_id: String,
        request_id: String,
    },
    /// `question.rejected`: a question was dismissed.
    QuestionRejected {
        session_id: String,
        request_id: String,
    },
    /// `server.instance.disposed`: the stream ends after it.
    InstanceDisposed {
        directory: Option<String>,
    },
    /// Every event type gatekeep ignores, by name.
    Other {
        kind: String,
    },
    /// An event gatekeep only reads for display (message and part updates)
    /// in a shape it did not expect: skipped, never a reason to reconnect
    /// (older and newer OpenCode releases shape them differently).
    Unreadable {
        kind: String,
        reason: String,
    },
}

/// Session identity as carried by `session.created` / `session.updated` and
/// returned by `POST /session`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    #[serde(rename = "parentID", default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    /// Set on `session.updated` once the agent runs (`build`, `general`, …).
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub directory: Option<String>,
    /// Tokens used so far (`session.updated`), for the run summary. Read
    /// leniently: a changed shape must not cost the session event.
    #[serde(default, deserialize_with = "lenient")]
    pub tokens: Option<Tokens>,
    /// Cost so far, in the provider's currency unit as OpenCode reports it.
    #[serde(default, deserialize_with = "lenient")]
    pub cost: Option<f64>,
    /// The model the session runs (`{id, providerID}`).
    #[serde(default, deserialize_with = "lenient")]
    pub model: Option<SessionModel>,
    /// Creation and last-update times (ms since the epoch), to pick the most
    /// recent session for `--continue`.
    #[serde(default, deserialize_with = "lenient")]
    pub time: Option<SessionTime>,
}

/// `info.time` of a session.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct SessionTime {
    #[serde(default)]
    pub created: Option<f64>,
    #[serde(default)]
    pub updated: Option<f64>,
}

/// `info.tokens` of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Tokens {
    #[serde(default)]
    pub input: u64,
    #[serde(default)]
    pub output: u64,
    #[serde(default)]
    pub reasoning: u64,
    #[serde(default)]
    pub cache: TokenCache,
}

/// `info.tokens.cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TokenCache {
    #[serde(default)]
    pub read: u64,
    #[serde(default)]
    pub write: u64,
}

/// `info.model` of a session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionModel {
    pub id: String,
    #[serde(rename = "providerID")]
    pub provider_id: String,
}

/// Any value that does not deserialize as `T` is read as absent.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(d)?).ok())
}

/// A pending permission request: the `permission.asked` properties and an
/// item of `GET /permission` (the same `PermissionRequest` schema).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PermissionRequest {
    /// `per_…`: what a reply is sent to.
    pub id: String,
    #[serde(rename = "sessionID")]
    pub session_id: String,
    /// `bash`, `edit`, `external_directory`, `doom_loop`, `webfetch`, …
    pub permission: String,
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub metadata: PermissionMetadata,
    /// Patterns an `always` reply would allow. Shown only; gatekeep never
    /// sends `always`.
    #[serde(default)]
    pub always: Vec<String>,
    #[serde(default)]
    pub tool: Option<ToolRef>,
}

/// The metadata fields gatekeep shows. OpenCode puts arbitrary JSON here
/// per tool; a field of an unexpected type reads as absent rather than
/// failing the whole request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PermissionMetadata {
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub command: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub filepath: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub diff: Option<String>,
}

/// Which tool call asked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ToolRef {
    #[serde(rename = "messageID")]
    pub message_id: String,
    #[serde(rename = "callID")]
    pub call_id: String,
}

/// A `permission.asked` that could not be parsed, with whatever could be
/// recovered so the caller can still reject it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedPermission {
    pub request_id: Option<String>,
    pub session_id: Option<String>,
    pub reason: String,
}

/// The `reply` of a `permission.replied` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    Once,
    /// Seen only when another client answered; gatekeep never sends it.
    Always,
    Reject,
    Unknown(String),
}

impl ReplyKind {
    fn from_wire(s: &str) -> Self {
        match s {
            "once" => ReplyKind::Once,
            "always" => ReplyKind::Always,
            "reject" => ReplyKind::Reject,
            other => ReplyKind::Unknown(other.to_owned()),
        }
    }

    /// Whether the request was allowed to run.
    #[must_use]
    pub fn is_approval(&self) -> bool {
        matches!(self, ReplyKind::Once | ReplyKind::Always)
    }
}

/// `session.status` `status.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    Busy,
    Idle,
    /// The provider call failed and OpenCode retries it.
    Retry {
        attempt: Option<u64>,
        message: Option<String>,
    },
    Unknown(String),
}

/// A message part, enough to print the agent's text and tool activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text {
        session_id: String,
        message_id: String,
        part_id: String,
        /// The whole text so far (not a delta).
        text: String,
        /// Set once the part is complete.
        ended: bool,
    },
    Tool {
        session_id: String,
        message_id: String,
        part_id: String,
        tool: String,
        call_id: String,
        status: ToolStatus,
        /// Set on `completed`: OpenCode's one-line summary of the call.
        title: Option<String>,
        /// Set on `error`.
        error: Option<String>,
        /// A `bash` call's command (its `state.input.command`), if any.
        command: Option<String>,
    },
    /// `step-start`, `step-finish`, `reasoning`, `file`, …
    Other { session_id: String, kind: String },
}

/// A tool part's `state.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolStatus {
    Pending,
    Running,
    Completed,
    Error,
    Unknown(String),
}

impl ToolStatus {
    fn from_wire(s: &str) -> Self {
        match s {
            "pending" => ToolStatus::Pending,
            "running" => ToolStatus::Running,
            "completed" => ToolStatus::Completed,
            "error" => ToolStatus::Error,
            other => ToolStatus::Unknown(other.to_owned()),
        }
    }
}

impl Event {
    /// Parse one SSE `data:` payload.
    ///
    /// `Err` only for frames that are not events at all or for a known
    /// event whose properties are broken (except `permission.asked`, which
    /// is always an `Ok` so it cannot be dropped by error handling).
    pub fn parse(data: &str) -> Result<Event, WireError> {
        let value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return salvage_permission(data).ok_or(WireError::NotJson(e)),
        };
        Self::from_value(value)
    }

    /// Parse an already-decoded frame (either shape).
    pub fn from_value(mut value: Value) -> Result<Event, WireError> {
        // /global/event wraps the frame: {"directory","project","payload"}.
        if value.get("type").is_none() {
            if let Some(payload) = value.get_mut("payload") {
                value = payload.take();
            }
        }
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or(WireError::NoType)?
            .to_owned();
        let props = value.get_mut("properties").map_or(Value::Null, Value::take);
        parse_kind(&kind, props)
    }

    /// The event's type name, as on the wire (for logs).
    #[must_use]
    pub fn kind(&self) -> &str {
        match self {
            Event::ServerConnected => "server.connected",
            Event::Heartbeat => "server.heartbeat",
            Event::SessionCreated(_) => "session.created",
            Event::SessionUpdated(_) => "session.updated",
            Event::MessageUpdated { .. } => "message.updated",
            Event::PermissionAsked(_) | Event::PermissionMalformed(_) => "permission.asked",
            Event::PermissionReplied { .. } => "permission.replied",
            Event::SessionStatus { .. } => "session.status",
            Event::SessionIdle { .. } => "session.idle",
            Event::SessionError { .. } => "session.error",
            Event::PartUpdated(_) => "message.part.updated",
            Event::PartDelta { .. } => "message.part.delta",
            Event::QuestionAsked { .. } => "question.asked",
            Event::QuestionReplied { .. } => "question.replied",
            Event::QuestionRejected { .. } => "question.rejected",
            Event::InstanceDisposed { .. } => "server.instance.disposed",
            Event::Other { kind } | Event::Unreadable { kind, .. } => kind,
        }
    }
}

#[derive(Deserialize)]
struct QuestionSettledProps {
    #[serde(rename = "sessionID")]
    session_id: String,
    #[serde(rename = "requestID")]
    request_id: String,
}

/// One question of a `question.asked` (OpenAPI `QuestionInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QuestionInfo {
    pub question: String,
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub options: Vec<QuestionOption>,
    #[serde(default)]
    pub multiple: bool,
    /// Whether a free-text answer is accepted besides the options.
    #[serde(default = "yes")]
    pub custom: bool,
}

fn yes() -> bool {
    true
}

/// One choice of a question.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QuestionOption {
    pub label: String,
    #[serde(default)]
    pub description: String,
}

/// The questions of a `question.asked` event's raw properties; `None` when
/// they cannot be read (the caller then dismisses the question).
fn questions_of(raw: &Value) -> Option<Vec<QuestionInfo>> {
    let list: Vec<QuestionInfo> = serde_json::from_value(raw.get("questions")?.clone()).ok()?;
    (!list.is_empty()).then_some(list)
}

fn parse_kind(kind: &str, props: Value) -> Result<Event, WireError> {
    let malformed = |e: serde_json::Error| WireError::Malformed {
        kind: kind.to_owned(),
        reason: e.to_string(),
    };
    Ok(match kind {
        "server.connected" => Event::ServerConnected,
        "server.heartbeat" => Event::Heartbeat,
        "session.created" | "session.updated" => {
            let p: SessionProps = from_props(props).map_err(malformed)?;
            if kind == "session.created" {
                Event::SessionCreated(p.info)
            } else {
                Event::SessionUpdated(p.info)
            }
        }
        "message.updated" => match from_props::<MessageProps>(props) {
            Ok(p) => Event::MessageUpdated {
                // Older releases (1.1, 1.3) carry it only inside `info`.
                session_id: p.session_id.or(p.info.session_id).unwrap_or_default(),
                message_id: p.info.id,
                role: p.info.role,
            },
            Err(e) => unreadable(kind, &e),
        },
        "permission.asked" => parse_permission(props),
        "permission.replied" => {
            let p: RepliedProps = from_props(props).map_err(malformed)?;
            Event::PermissionReplied {
                session_id: p.session_id,
                request_id: p.request_id,
                reply: ReplyKind::from_wire(&p.reply),
            }
        }
        "session.status" => parse_status(from_props(props).map_err(malformed)?),
        "session.idle" => {
            let p: SessionIdProps = from_props(props).map_err(malformed)?;
            Event::SessionIdle {
                session_id: p.session_id,
            }
        }
        "session.error" => parse_error(from_props(props).map_err(malformed)?),
        "message.part.updated" => match from_props::<PartProps>(props) {
            Ok(p) => Event::PartUpdated(p.part.into_part()),
            Err(e) => unreadable(kind, &e),
        },
        "message.part.delta" => match from_props::<DeltaProps>(props) {
            Ok(p) => Event::PartDelta {
                session_id: p.session_id,
                message_id: p.message_id,
                part_id: p.part_id,
                field: p.field,
                delta: p.delta,
            },
            Err(e) => unreadable(kind, &e),
        },
        "question.asked" => Event::QuestionAsked {
            id: props.get("id").and_then(Value::as_str).map(str::to_owned),
            session_id: props
                .get("sessionID")
                .and_then(Value::as_str)
                .map(str::to_owned),
            questions: questions_of(&props),
        },
        "question.replied" | "question.rejected" => {
            let p: QuestionSettledProps = from_props(props).map_err(malformed)?;
            if kind == "question.replied" {
                Event::QuestionReplied {
                    session_id: p.session_id,
                    request_id: p.request_id,
                }
            } else {
                Event::QuestionRejected {
                    session_id: p.session_id,
                    request_id: p.request_id,
                }
            }
        }
        "server.instance.disposed" => Event::InstanceDisposed {
            directory: props
                .get("directory")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        other => Event::Other {
            kind: other.to_owned(),
        },
    })
}

fn parse_status(p: StatusProps) -> Event {
    Event::SessionStatus {
        session_id: p.session_id,
        status: p.status.into_status(),
    }
}

impl RawStatus {
    fn into_status(self) -> SessionStatus {
        match self.kind.as_str() {
            "busy" => SessionStatus::Busy,
            "idle" => SessionStatus::Idle,
            "retry" => SessionStatus::Retry {
                attempt: self.attempt,
                message: self.message,
            },
            other => SessionStatus::Unknown(other.to_owned()),
        }
    }
}

/// One session's entry of `GET /session/status` (a map of session id to
/// status; OpenCode drops idle sessions from it). `None` when the session
/// is absent or its entry unreadable.
#[must_use]
pub fn status_of(statuses: &Value, session_id: &str) -> Option<SessionStatus> {
    let entry = statuses.get(session_id)?.clone();
    serde_json::from_value::<RawStatus>(entry)
        .ok()
        .map(RawStatus::into_status)
}

/// How a session's last message left it, as far as a finished run is
/// concerned: read from `GET /session/{id}/message?limit=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastMessage {
    /// An assistant message that is complete: the turn is over.
    Completed,
    /// An assistant message that ended in an error (`name`, `message`).
    Failed {
        name: String,
        message: Option<String>,
    },
    /// Anything else: the prompt not answered yet, a reply still being
    /// written, or a shape gatekeep does not know.
    Open,
}

/// The last of `messages` (an array of `{info, parts}`), leniently.
#[must_use]
pub fn last_message(messages: &Value) -> LastMessage {
    let Some(info) = messages
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m.get("info"))
    else {
        return LastMessage::Open;
    };
    if info.get("role").and_then(Value::as_str) != Some("assistant") {
        return LastMessage::Open;
    }
    if let Some(error) = info.get("error").filter(|e| e.is_object()) {
        return LastMessage::Failed {
            name: error
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("UnknownError")
                .to_owned(),
            message: error
                .pointer("/data/message")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
    }
    if info.pointer("/time/completed").is_some_and(Value::is_u64) {
        LastMessage::Completed
    } else {
        LastMessage::Open
    }
}

/// `error` is one of several error shapes, all `{name, data:{message?}}`.
fn parse_error(p: ErrorProps) -> Event {
    let (name, message) = match p.error {
        Some(e) => (
            e.name.unwrap_or_else(|| "UnknownError".to_owned()),
            e.data
                .as_ref()
                .and_then(|d| d.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        None => ("UnknownError".to_owned(), None),
    };
    Event::SessionError {
        session_id: p.session_id,
        name,
        message,
    }
}

/// `permission.asked` never fails: a request that does not parse is still
/// pending in OpenCode, so the caller gets its ids to deny it.
fn parse_permission(props: Value) -> Event {
    let ids = (
        props.get("id").and_then(Value::as_str).map(str::to_owned),
        props
            .get("sessionID")
            .and_then(Value::as_str)
            .map(str::to_owned),
    );
    match serde_json::from_value::<PermissionRequest>(props) {
        Ok(req) => Event::PermissionAsked(req),
        Err(e) => Event::PermissionMalformed(MalformedPermission {
            request_id: ids.0,
            session_id: ids.1,
            reason: e.to_string(),
        }),
    }
}

/// A frame that is not even JSON may still be a truncated or mangled
/// `permission.asked`; dig its ids out of the text so it can be denied.
fn salvage_permission(data: &str) -> Option<Event> {
    static IDS: OnceLock<(regex::Regex, regex::Regex)> = OnceLock::new();
    if !data.contains("permission.asked") {
        return None;
    }
    let (per, ses) = IDS.get_or_init(|| {
        (
            regex::Regex::new(r#""id"\s*:\s*"(per_[^"\\]+)""#).expect("static regex is valid"),
            regex::Regex::new(r#""sessionID"\s*:\s*"(ses_[^"\\]+)""#)
                .expect("static regex is valid"),
        )
    });
    let grab = |re: &regex::Regex| re.captures(data).map(|c| c[1].to_owned());
    Some(Event::PermissionMalformed(MalformedPermission {
        request_id: grab(per),
        session_id: grab(ses),
        reason: "permission.asked frame is not valid JSON".to_owned(),
    }))
}

fn from_props<T: DeserializeOwned>(props: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(props)
}

/// Accept a string; read any other JSON type as absent.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

#[derive(Deserialize)]
struct SessionProps {
    info: SessionInfo,
}

#[derive(Deserialize)]
struct MessageProps {
    #[serde(rename = "sessionID", default)]
    session_id: Option<String>,
    info: MessageInfo,
}

#[derive(Deserialize)]
struct MessageInfo {
    id: String,
    role: String,
    #[serde(rename = "sessionID", default)]
    session_id: Option<String>,
}

/// A display-only event that did not parse: skipped.
fn unreadable(kind: &str, err: &serde_json::Error) -> Event {
    Event::Unreadable {
        kind: kind.to_owned(),
        reason: err.to_string(),
    }
}

#[derive(Deserialize)]
struct RepliedProps {
    #[serde(rename = "sessionID")]
    session_id: String,
    #[serde(rename = "requestID")]
    request_id: String,
    reply: String,
}

#[derive(Deserialize)]
struct StatusProps {
    #[serde(rename = "sessionID")]
    session_id: String,
    status: RawStatus,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    attempt: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct SessionIdProps {
    #[serde(rename = "sessionID")]
    session_id: String,
}

#[derive(Deserialize)]
struct ErrorProps {
    #[serde(rename = "sessionID", default)]
    session_id: Option<String>,
    #[serde(default)]
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct DeltaProps {
    #[serde(rename = "sessionID")]
    session_id: String,
    #[serde(rename = "messageID")]
    message_id: String,
    #[serde(rename = "partID")]
    part_id: String,
    field: String,
    delta: String,
}

#[derive(Deserialize)]
struct PartProps {
    part: RawPart,
}

#[derive(Deserialize)]
struct RawPart {
    id: String,
    #[serde(rename = "sessionID")]
    session_id: String,
    #[serde(rename = "messageID")]
    message_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(rename = "callID", default)]
    call_id: Option<String>,
    #[serde(default)]
    state: Option<RawToolState>,
    #[serde(default)]
    time: Option<RawTime>,
}

#[derive(Deserialize)]
struct RawToolState {
    status: String,
    #[serde(default, deserialize_with = "lenient_string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    error: Option<String>,
    /// Any shape: only a string `command` is read from it.
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawTime {
    #[serde(default)]
    end: Option<u64>,
}

impl RawPart {
    fn into_part(self) -> Part {
        match (self.kind.as_str(), self.tool, self.state) {
            ("text", ..) => Part::Text {
                session_id: self.session_id,
                message_id: self.message_id,
                part_id: self.id,
                text: self.text.unwrap_or_default(),
                ended: self.time.and_then(|t| t.end).is_some(),
            },
            ("tool", Some(tool), Some(state)) => Part::Tool {
                session_id: self.session_id,
                message_id: self.message_id,
                part_id: self.id,
                tool,
                call_id: self.call_id.unwrap_or_default(),
                status: ToolStatus::from_wire(&state.status),
                command: state
                    .input
                    .as_ref()
                    .and_then(|i| i.get("command"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
                title: state.title,
                error: state.error,
            },
            _ => Part::Other {
                session_id: self.session_id,
                kind: self.kind,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// OpenCode 1.18's newer `/api/event` frames (`data` instead of
    /// `properties`, a `durable` sequence): were gatekeep ever pointed at
    /// that stream, they would be skipped, never taken for requests.
    #[test]
    fn frames_of_the_newer_api_are_never_mistaken_for_requests() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/opencode-1.18.33/api/events.jsonl");
        let text = std::fs::read_to_string(path).expect("the capture is readable");
        let frames: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(frames.len() >= 3);
        for frame in frames {
            let parsed = Event::parse(frame);
            assert!(
                !matches!(
                    parsed,
                    Ok(Event::PermissionAsked(_) | Event::PermissionMalformed(_))
                ),
                "taken for a request: {frame}"
            );
        }
    }

    /// A whole approve-less run captured from OpenCode 1.3.2 (its
    /// `message.updated` has no top-level `sessionID`, which once tore the
    /// stream down): every frame reads, none as an error, and what a
    /// decision depends on reads as such.
    #[test]
    fn an_old_release_reads_frame_by_frame() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/opencode-1.3.2/events.jsonl");
        let text = std::fs::read_to_string(path).expect("the capture is readable");
        let mut kinds = Vec::new();
        for frame in text.lines().filter(|l| !l.trim().is_empty()) {
            let event = Event::parse(frame).unwrap_or_else(|e| panic!("{e}: {frame}"));
            assert!(!matches!(event, Event::Unreadable { .. }), "{frame}");
            kinds.push(event.kind().to_owned());
        }
        for needed in [
            "permission.asked",
            "permission.replied",
            "session.status",
            "session.idle",
        ] {
            assert!(
                kinds.iter().any(|k| k == needed),
                "{needed} missing: {kinds:?}"
            );
        }
        let asked = text
            .lines()
            .find_map(|l| match Event::parse(l) {
                Ok(Event::PermissionAsked(request)) => Some(request),
                _ => None,
            })
            .expect("a request");
        assert_eq!(asked.patterns, vec!["touch old.txt".to_owned()]);
    }

    fn reference_dir() -> PathBuf {
        // Copies of /work/shared/reference/opencode-1.18.33, recorded from
        // the real server.
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencode-1.18.33")
    }

    /// Every frame of a capture, as the JSON text `data:` would carry.
    fn frames(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).expect("capture is readable");
        if path.extension().is_some_and(|e| e == "sse") {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
                .collect();
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("capture line is JSON");
                v["ev"].to_string()
            })
            .collect()
    }

    fn captures() -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(reference_dir())
            .expect("reference captures exist")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl" || e == "sse"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_frame_of_every_capture_parses() {
        let files = captures();
        assert_eq!(files.len(), 7, "expected the 7 captures, got {files:?}");
        let mut total = 0;
        for file in files {
            let frames = frames(&file);
            assert!(!frames.is_empty(), "{} has no frames", file.display());
            for frame in frames {
                let ev = Event::parse(&frame)
                    .unwrap_or_else(|e| panic!("{}: {e}: {frame}", file.display()));
                assert!(
                    !matches!(ev, Event::PermissionMalformed(_)),
                    "{}: permission did not parse: {frame}",
                    file.display()
                );
                // Every type gatekeep models must be recognised, not Other.
                let raw: Value = serde_json::from_str(&frame).expect("json");
                let raw = raw.get("payload").cloned().unwrap_or(raw);
                let kind = raw["type"].as_str().expect("type");
                assert_eq!(ev.kind(), kind, "{}: {frame}", file.display());
                total += 1;
            }
        }
        assert_eq!(total, 294, "frames in the 7 captures");
    }

    fn parse_capture(name: &str) -> Vec<Event> {
        frames(&reference_dir().join(name))
            .iter()
            .map(|f| Event::parse(f).expect("parses"))
            .collect()
    }

    #[test]
    fn once_capture_fields() {
        let evs = parse_capture("events_once.jsonl");
        assert_eq!(evs[0], Event::ServerConnected);
        let created = evs
            .iter()
            .find_map(|e| match e {
                Event::SessionCreated(s) => Some(s.clone()),
                _ => None,
            })
            .expect("session.created");
        assert_eq!(created.id, "ses_e009b293dffeHlo5q9sYMzBEhP");
        assert_eq!(created.parent_id, None);

        let asked = evs
            .iter()
            .find_map(|e| match e {
                Event::PermissionAsked(p) => Some(p.clone()),
                _ => None,
            })
            .expect("permission.asked");
        assert_eq!(
            asked,
            PermissionRequest {
                id: "per_1ff64da60001VP2VoRpYCMh3Kl".into(),
                session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
                permission: "bash".into(),
                patterns: vec!["echo hi > out.txt".into()],
                metadata: PermissionMetadata {
                    command: Some("echo hi > out.txt".into()),
                    ..PermissionMetadata::default()
                },
                always: vec!["echo *".into()],
                tool: Some(ToolRef {
                    message_id: "msg_1ff64d719001u0ntqu78mkXLAF".into(),
                    call_id: "call_1_0".into(),
                }),
            }
        );
        assert!(evs.contains(&Event::PermissionReplied {
            session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
            request_id: "per_1ff64da60001VP2VoRpYCMh3Kl".into(),
            reply: ReplyKind::Once,
        }));
        assert!(evs.contains(&Event::PartDelta {
            session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
            message_id: "msg_1ff64daa4001OrQaYZbeXBJ7hc".into(),
            part_id: "prt_1ff64daf4001puDPtID8bYAtJV".into(),
            field: "text".into(),
            delta: "done: (no output)".into(),
        }));
        assert_eq!(
            evs.last(),
            Some(&Event::SessionIdle {
                session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into()
            })
        );
        assert!(evs.contains(&Event::SessionStatus {
            session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
            status: SessionStatus::Busy,
        }));
        // The user's prompt is echoed as a text part of a user message.
        assert!(evs.contains(&Event::MessageUpdated {
            session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
            message_id: "msg_1ff64d6f6001qxwRxjVlz6yK4X".into(),
            role: "user".into(),
        }));
        assert!(evs
            .iter()
            .any(|e| matches!(e, Event::Other { kind } if kind == "plugin.added")));
    }

    #[test]
    fn tool_parts_carry_name_status_and_call_id() {
        let evs = parse_capture("events_once.jsonl");
        let tools: Vec<(String, ToolStatus, Option<String>)> = evs
            .iter()
            .filter_map(|e| match e {
                Event::PartUpdated(Part::Tool {
                    tool,
                    call_id,
                    status,
                    title,
                    ..
                }) if call_id == "call_1_0" => Some((tool.clone(), status.clone(), title.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            tools,
            vec![
                ("bash".into(), ToolStatus::Pending, None),
                ("bash".into(), ToolStatus::Running, None),
                ("bash".into(), ToolStatus::Running, None),
                (
                    "bash".into(),
                    ToolStatus::Completed,
                    Some("echo hi > out.txt".into())
                ),
            ]
        );
        assert!(evs.iter().any(|e| matches!(
            e,
            Event::PartUpdated(Part::Text { text, .. }) if text == "please write the file"
        )));
        assert!(evs.iter().any(|e| matches!(
            e,
            Event::PartUpdated(Part::Other { kind, .. }) if kind == "step-start"
        )));
    }

    #[test]
    fn reject_cascade_capture_has_two_replies() {
        let evs = parse_capture("events_multi_reject.jsonl");
        let replied: Vec<(&str, &ReplyKind)> = evs
            .iter()
            .filter_map(|e| match e {
                Event::PermissionReplied {
                    request_id, reply, ..
                } => Some((request_id.as_str(), reply)),
                _ => None,
            })
            .collect();
        assert_eq!(
            replied,
            vec![
                ("per_1ff650a03001Ldql6QW5vDZZ3l", &ReplyKind::Reject),
                ("per_1ff650a10001612NZ7dRZgL24K", &ReplyKind::Reject),
            ]
        );
        let always = parse_capture("events_multi_always.jsonl");
        assert!(always.iter().any(|e| matches!(
            e,
            Event::PermissionReplied {
                reply: ReplyKind::Always,
                ..
            }
        )));
    }

    #[test]
    fn abort_capture_has_session_error_and_heartbeats() {
        let evs = parse_capture("events_noreply_abort.jsonl");
        assert_eq!(evs.iter().filter(|e| **e == Event::Heartbeat).count(), 2);
        assert!(evs.contains(&Event::SessionError {
            session_id: Some("ses_e009adf47ffe5DuCFAz4ktsMe8".into()),
            name: "MessageAbortedError".into(),
            message: Some("Aborted".into()),
        }));
    }

    #[test]
    fn dispose_capture_ends_with_instance_disposed() {
        let evs = parse_capture("events_dispose.sse");
        assert_eq!(
            evs.last(),
            Some(&Event::InstanceDisposed {
                directory: Some("/workspace/proj".into())
            })
        );
        let updated = evs
            .iter()
            .find_map(|e| match e {
                Event::SessionUpdated(s) => Some(s.clone()),
                _ => None,
            })
            .expect("session.updated");
        assert_eq!(updated.title.as_deref(), Some("dispose"));
        assert_eq!(updated.agent.as_deref(), Some("build"));
    }

    #[test]
    fn global_event_wrapper_is_unwrapped() {
        let evs = parse_capture("events_legacy_global.jsonl");
        assert_eq!(evs[0], Event::ServerConnected);
        assert!(evs.iter().any(|e| matches!(
            e,
            Event::PermissionAsked(p) if p.id == "per_1ff65a848001fJtsXmssLJUjxL"
        )));
        assert!(evs
            .iter()
            .any(|e| matches!(e, Event::Other { kind } if kind == "sync")));
    }

    #[test]
    fn child_session_has_parent() {
        let frame = r#"{"id":"evt_1","type":"session.created","properties":{"sessionID":"ses_child","info":{"id":"ses_child","parentID":"ses_root","title":"explore (@general subagent)"}}}"#;
        let Event::SessionCreated(info) = Event::parse(frame).expect("parses") else {
            panic!("not session.created")
        };
        assert_eq!(info.parent_id.as_deref(), Some("ses_root"));
        assert_eq!(info.title.as_deref(), Some("explore (@general subagent)"));
    }

    #[test]
    fn unknown_types_are_other() {
        let ev = Event::parse(r#"{"id":"evt_x","type":"brand.new.thing","properties":{"x":[1]}}"#)
            .expect("unknown type is fine");
        assert_eq!(
            ev,
            Event::Other {
                kind: "brand.new.thing".into()
            }
        );
        // No properties at all is fine for types we ignore.
        assert!(matches!(
            Event::parse(r#"{"type":"x.y"}"#),
            Ok(Event::Other { .. })
        ));
    }

    #[test]
    fn malformed_permission_keeps_ids() {
        // `patterns` of the wrong type.
        let frame = r#"{"id":"evt_1","type":"permission.asked","properties":{"id":"per_abc","sessionID":"ses_def","permission":"bash","patterns":"oops"}}"#;
        assert_eq!(
            Event::parse(frame).expect("never an error"),
            Event::PermissionMalformed(MalformedPermission {
                request_id: Some("per_abc".into()),
                session_id: Some("ses_def".into()),
                reason: "invalid type: string \"oops\", expected a sequence".into(),
            })
        );
        // Missing the permission kind.
        let frame =
            r#"{"type":"permission.asked","properties":{"id":"per_abc","sessionID":"ses_def"}}"#;
        assert!(matches!(
            Event::parse(frame),
            Ok(Event::PermissionMalformed(MalformedPermission { request_id: Some(ref r), .. })) if r == "per_abc"
        ));
    }

    #[test]
    fn truncated_permission_frame_is_salvaged() {
        let frame = r#"{"id":"evt_1","type":"permission.asked","properties":{"id":"per_abc","sessionID":"ses_def","permission":"ba"#;
        let Ok(Event::PermissionMalformed(m)) = Event::parse(frame) else {
            panic!("truncated permission must not be an error")
        };
        assert_eq!(m.request_id.as_deref(), Some("per_abc"));
        assert_eq!(m.session_id.as_deref(), Some("ses_def"));
    }

    #[test]
    fn metadata_of_unexpected_type_is_absent_not_fatal() {
        let frame = r#"{"type":"permission.asked","properties":{"id":"per_1","sessionID":"ses_1","permission":"edit","patterns":["a.rs"],"metadata":{"filepath":"/w/a.rs","diff":{"not":"a string"},"extra":1},"always":[]}}"#;
        let Ok(Event::PermissionAsked(p)) = Event::parse(frame) else {
            panic!("should parse")
        };
        assert_eq!(p.metadata.filepath.as_deref(), Some("/w/a.rs"));
        assert_eq!(p.metadata.diff, None);
        assert_eq!(p.tool, None);
    }

    #[test]
    fn a_display_event_of_another_shape_is_skipped_not_an_error() {
        // OpenCode 1.1.65 / 1.3.2: `message.updated` without a top-level
        // `sessionID` (it is inside `info`).
        let old = r#"{"type":"message.updated","properties":{"info":{"id":"msg_1","role":"user","sessionID":"ses_1"}}}"#;
        assert_eq!(
            Event::parse(old).expect("parses"),
            Event::MessageUpdated {
                session_id: "ses_1".into(),
                message_id: "msg_1".into(),
                role: "user".into()
            }
        );
        for frame in [
            r#"{"type":"message.updated","properties":{"info":{"role":3}}}"#,
            r#"{"type":"message.part.updated","properties":{"part":"a string"}}"#,
            r#"{"type":"message.part.delta","properties":{"delta":{}}}"#,
        ] {
            assert!(
                matches!(Event::parse(frame), Ok(Event::Unreadable { .. })),
                "{frame}"
            );
        }
    }

    #[test]
    fn other_garbage_is_an_error() {
        assert!(matches!(
            Event::parse("not json"),
            Err(WireError::NotJson(_))
        ));
        assert!(matches!(Event::parse(r#"{"x":1}"#), Err(WireError::NoType)));
        assert!(matches!(
            Event::parse(r#"{"type":"session.idle","properties":{}}"#),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn permission_list_items_parse() {
        // GET /permission returns PermissionRequest[]: the asked properties.
        let body = r#"[{"id":"per_1","sessionID":"ses_1","permission":"bash","patterns":["ls"],"metadata":{"command":"ls"},"always":["ls *"],"tool":{"messageID":"msg_1","callID":"c1"}}]"#;
        let list: Vec<PermissionRequest> = serde_json::from_str(body).expect("parses");
        assert_eq!(list[0].metadata.command.as_deref(), Some("ls"));
        assert_eq!(
            list[0].tool.as_ref().map(|t| t.call_id.as_str()),
            Some("c1")
        );
    }

    #[test]
    fn retry_status_and_error_without_data() {
        let ev = Event::parse(r#"{"type":"session.status","properties":{"sessionID":"ses_1","status":{"type":"retry","attempt":2,"message":"rate limited","next":5}}}"#)
            .expect("parses");
        assert_eq!(
            ev,
            Event::SessionStatus {
                session_id: "ses_1".into(),
                status: SessionStatus::Retry {
                    attempt: Some(2),
                    message: Some("rate limited".into())
                }
            }
        );
        let ev = Event::parse(r#"{"type":"session.error","properties":{}}"#).expect("parses");
        assert_eq!(
            ev,
            Event::SessionError {
                session_id: None,
                name: "UnknownError".into(),
                message: None
            }
        );
    }
}

/// Hostile input: whatever OpenCode (or something impersonating it on the
/// stream) sends, parsing never panics, and a `permission.asked` is never
/// lost — it parses, or it comes back as the fail-closed variant with its id.
#[cfg(test)]
mod prop_tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    /// Names the parser looks at, so random objects hit the real code paths.
    const KEYS: &[&str] = &[
        "id",
        "sessionID",
        "permission",
        "patterns",
        "metadata",
        "command",
        "filepath",
        "diff",
        "always",
        "tool",
        "messageID",
        "callID",
        "type",
        "properties",
        "payload",
        "info",
        "parentID",
        "part",
        "status",
        "error",
        "requestID",
        "reply",
        "delta",
        "field",
        "partID",
        "state",
        "time",
        "end",
        "tokens",
        "cost",
        "model",
    ];

    const KINDS: &[&str] = &[
        "server.connected",
        "server.heartbeat",
        "session.created",
        "session.updated",
        "message.updated",
        "permission.asked",
        "permission.replied",
        "session.status",
        "session.idle",
        "session.error",
        "message.part.updated",
        "message.part.delta",
        "question.asked",
        "server.instance.disposed",
    ];

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => ".{0,6}",
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => ".{0,24}",
            1 => (1usize..4).prop_map(|n| "x\u{202e}\u{1b}[2J\"\\".repeat(n * 700)),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn kind() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(KINDS).prop_map(str::to_owned),
            1 => ".{0,20}",
        ]
    }

    /// A well-formed `permission.asked` properties object.
    fn permission_props(id: &str) -> Value {
        json!({
            "id": id,
            "sessionID": "ses_1",
            "permission": "bash",
            "patterns": ["ls"],
            "metadata": { "command": "ls" },
            "always": ["ls *"],
            "tool": { "messageID": "msg_1", "callID": "c1" },
        })
    }

    #[test]
    fn session_statuses_are_read_leniently_and_idle_ones_are_absent() {
        let all = json!({
            "ses_busy": { "type": "busy" },
            "ses_retry": { "type": "retry", "attempt": 2, "message": "overloaded", "next": 1 },
            "ses_odd": { "kind": "busy" },
            "ses_new": { "type": "thinking" },
        });
        assert_eq!(status_of(&all, "ses_busy"), Some(SessionStatus::Busy));
        assert!(matches!(
            status_of(&all, "ses_retry"),
            Some(SessionStatus::Retry {
                attempt: Some(2),
                ..
            })
        ));
        assert_eq!(status_of(&all, "ses_odd"), None);
        assert_eq!(
            status_of(&all, "ses_new"),
            Some(SessionStatus::Unknown("thinking".into()))
        );
        assert_eq!(status_of(&all, "ses_idle"), None);
        assert_eq!(status_of(&json!([1, 2]), "ses_busy"), None);
    }

    #[test]
    fn the_last_message_says_whether_the_turn_is_over() {
        let one = |info: Value| json!([{ "info": info, "parts": [] }]);
        assert_eq!(
            last_message(&one(
                json!({ "role": "assistant", "time": { "created": 1, "completed": 2 } })
            )),
            LastMessage::Completed
        );
        assert_eq!(
            last_message(&one(
                json!({ "role": "assistant", "time": { "created": 1 } })
            )),
            LastMessage::Open
        );
        assert_eq!(
            last_message(&one(json!({ "role": "user", "time": { "created": 1 } }))),
            LastMessage::Open
        );
        assert_eq!(
            last_message(&one(
                json!({ "role": "assistant", "time": { "created": 1, "completed": 2 },
                "error": { "name": "APIError", "data": { "message": "down" } } })
            )),
            LastMessage::Failed {
                name: "APIError".into(),
                message: Some("down".into())
            }
        );
        for odd in [json!([]), json!({}), json!([{ "info": 3 }]), json!(null)] {
            assert_eq!(last_message(&odd), LastMessage::Open, "{odd}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any text at all: an error at worst, never a panic; text that
        /// names `permission.asked` is never an error (it may be one).
        #[test]
        fn any_text_parses_or_errs(data in prop_oneof![".{0,200}", "\\PC{0,50}permission\\.asked\\PC{0,80}"]) {
            let parsed = Event::parse(&data);
            if data.contains("permission.asked") {
                prop_assert!(parsed.is_ok(), "{data:?} -> {parsed:?}");
            }
        }

        /// Any JSON in a frame of any kind, in either envelope: never a
        /// panic, and a `permission.asked` is always an `Ok` request.
        #[test]
        fn any_properties_of_any_kind(kind in kind(), props in json_value(), global in any::<bool>()) {
            let frame = json!({ "id": "evt_1", "type": kind, "properties": props });
            let frame = if global {
                json!({ "directory": "/w", "payload": frame })
            } else {
                frame
            };
            let parsed = Event::parse(&frame.to_string());
            if kind == "permission.asked" {
                prop_assert!(
                    matches!(parsed, Ok(Event::PermissionAsked(_) | Event::PermissionMalformed(_))),
                    "{parsed:?}"
                );
            }
        }

        /// A request with a readable id keeps it, whatever else is wrong
        /// with it: it is shown, or it is denied by that id.
        #[test]
        fn a_permission_keeps_its_id_whatever_else_breaks(
            id in "per_[A-Za-z0-9]{1,30}",
            breaks in prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..4),
            removed in prop::collection::vec(prop::sample::select(&["sessionID", "permission", "patterns", "metadata", "always", "tool"][..]), 0..3),
        ) {
            let mut props = permission_props(&id);
            for (key, value) in breaks {
                if key != "id" {
                    props[key] = value;
                }
            }
            for key in removed {
                if let Some(map) = props.as_object_mut() {
                    map.remove(key);
                }
            }
            let frame = json!({ "type": "permission.asked", "properties": props });
            match Event::parse(&frame.to_string()) {
                Ok(Event::PermissionAsked(p)) => prop_assert_eq!(p.id, id),
                Ok(Event::PermissionMalformed(m)) => prop_assert_eq!(m.request_id, Some(id)),
                other => prop_assert!(false, "lost the request: {:?}", other),
            }
        }

        /// A `permission.asked` frame cut anywhere after its type (a
        /// truncated write) is never an error, and once the request's id
        /// is complete it is recovered for the denial.
        #[test]
        fn a_truncated_permission_frame_is_never_dropped(
            id in "per_[A-Za-z0-9]{1,30}",
            cut in 0usize..400,
        ) {
            // OpenCode's key order: id, type, properties.
            let frame = format!(
                r#"{{"id":"evt_1","type":"permission.asked","properties":{}}}"#,
                permission_props(&id)
            );
            let type_end = frame.find("permission.asked").map_or(0, |i| i + "permission.asked".len());
            let cut = (type_end + cut).min(frame.len() - 1);
            let parsed = Event::parse(&frame[..cut]);
            let Ok(Event::PermissionMalformed(m)) = parsed else {
                return Err(TestCaseError::fail(format!("{parsed:?}")));
            };
            let id_end = frame.find(&format!("\"{id}\"")).map_or(usize::MAX, |i| i + id.len() + 2);
            if cut >= id_end {
                prop_assert_eq!(m.request_id, Some(id));
            }
        }

        /// Mistyped fields of the other events the run depends on are an
        /// error for that one frame (the stream goes on), never a panic or
        /// a made-up event.
        #[test]
        fn mistyped_session_events_are_errors_not_guesses(
            kind in prop::sample::select(&["session.idle", "permission.replied", "session.status"][..]),
            session in json_value().prop_filter("not a string", |v| !v.is_string()),
        ) {
            let frame = json!({ "type": kind, "properties": {
                "sessionID": session, "requestID": "per_1", "reply": "once", "status": { "type": "idle" } } });
            let parsed = Event::parse(&frame.to_string());
            prop_assert!(matches!(parsed, Err(WireError::Malformed { .. })), "{parsed:?}");
        }
    }
}

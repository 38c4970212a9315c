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
mod tests;

#[cfg(test)]
mod prop_tests;

//! A scriptable fake of `opencode serve` (OpenCode 1.18.33 semantics).
//!
//! gatekeep spawns `<OPENCODE> serve …` itself, so the fake has two halves:
//!
//! - an HTTP server (axum) on `127.0.0.1:0`, running on **its own thread and
//!   runtime** so a test that blocks (e.g. `assert_cmd`'s `output()`) cannot
//!   starve it;
//! - a generated shell script, [`FakeOpenCode::program`], that gatekeep runs
//!   as its OpenCode executable. It records its argv, pid, process group,
//!   cwd, environment and `OPENCODE_SERVER_PASSWORD` into the fake's
//!   tempdir, prints `opencode server listening on http://127.0.0.1:<the
//!   fake's port>` (not the port it was asked for, like a real server that
//!   picked another one) and then `exec`s `sleep`, so the recorded pid is
//!   the process that must die with its group.
//!
//! The HTTP side checks Basic auth against the recorded password and the
//! `directory` query parameter on every request, and implements the
//! endpoints gatekeep uses with the real semantics measured on OpenCode 1.18.33 (docs/design.md):
//! `once` settles one request, `reject` also rejects every other pending
//! request of the session, unknown ids get 404, abort does *not* clear
//! pending permissions, dispose ends the streams. A prompt that arrives
//! while no event stream is open is refused and recorded as a violation.
//!
//! Event shapes are the ones in `tests/fixtures/opencode-1.18.33`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

/// Default bound of every wait in the control API.
pub const WAIT: Duration = Duration::from_secs(10);

/// How the generated script behaves when gatekeep starts it.
#[derive(Debug, Clone)]
pub enum Startup {
    /// Print the listening line (after `delay`) and stay alive.
    Ready { delay: Duration },
    /// Print `stderr` lines and exit with `code` before being ready.
    ExitBeforeReady { code: i32, stderr: Vec<String> },
    /// Never print the listening line; stay alive.
    Silent,
}

/// Options for [`FakeOpenCode::start_with`].
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub startup: Startup,
    /// Lines printed on stdout before the listening line (OpenCode's own log
    /// noise).
    pub preamble: Vec<String>,
    /// The script ignores SIGTERM (`trap '' TERM`), so only SIGKILL stops
    /// it: exercises the grace-then-kill path.
    pub ignore_sigterm: bool,
    /// Hold `server.connected` on new streams until
    /// [`FakeOpenCode::release_connected`]: proves a client waits for it.
    pub hold_connected: bool,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            startup: Startup::Ready {
                delay: Duration::ZERO,
            },
            preamble: vec!["INFO  fake opencode 1.18.33 starting".to_owned()],
            ignore_sigterm: false,
            hold_connected: false,
        }
    }
}

/// One HTTP request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub directory: Option<String>,
    pub authorized: bool,
}

/// A `prompt_async` call.
#[derive(Debug, Clone)]
pub struct PromptRecord {
    pub at: Instant,
    pub session_id: String,
    pub body: Value,
    /// Event streams open when it arrived; 0 means it was refused.
    pub streams_open: usize,
}

/// A `POST /permission/{id}/reply` call, whatever its outcome.
#[derive(Debug, Clone)]
pub struct ReplyRecord {
    pub at: Instant,
    pub request_id: String,
    pub body: Value,
    /// HTTP status the fake answered: 200, 404 or 400.
    pub status: u16,
}

impl ReplyRecord {
    /// `"once"`, `"reject"`, … as sent.
    #[must_use]
    pub fn reply(&self) -> &str {
        self.body.get("reply").and_then(Value::as_str).unwrap_or("")
    }

    #[must_use]
    pub fn message(&self) -> Option<&str> {
        self.body.get("message").and_then(Value::as_str)
    }
}

/// A session known to the fake.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub parent_id: Option<String>,
    /// The `POST /session` body (null for sessions made by the test).
    pub body: Value,
}

enum StreamMsg {
    Bytes(Vec<u8>),
    /// Abort the response body mid-stream (the connection breaks).
    Break,
}

#[derive(Default)]
struct State_ {
    requests: Vec<RequestRecord>,
    sessions: Vec<SessionRecord>,
    prompts: Vec<PromptRecord>,
    /// `permission.asked` properties, in ask order.
    pending: Vec<Value>,
    replies: Vec<ReplyRecord>,
    aborted: Vec<String>,
    disposed: bool,
    questions: Vec<Value>,
    rejected_questions: Vec<String>,
    /// `(question id, answers)` of every question reply.
    question_answers: Vec<(String, Value)>,
    violations: Vec<String>,
    subscribers: Vec<mpsc::UnboundedSender<StreamMsg>>,
    held: Vec<mpsc::UnboundedSender<StreamMsg>>,
    streams_open: usize,
    streams_opened: usize,
    /// Every event emitted, in order.
    emitted: Vec<Value>,
    seq: u64,
    /// `GET /session/status`: every session that is not idle (OpenCode
    /// drops idle ones), as the emitted `session.status` events left it.
    statuses: serde_json::Map<String, Value>,
    /// The last message of each session (`GET /session/{id}/message`).
    last_messages: HashMap<String, Value>,
    /// What `GET /global/health` reports (`None`: the route is missing).
    version: Option<String>,
    /// How long `GET /global/health` takes to answer.
    health_delay: Duration,
    /// `GET /permission` answers 404, as a release that dropped the
    /// routes gatekeep uses would.
    permission_route_gone: bool,
    /// `GET /api/permission/saved`.
    saved: Vec<Value>,
}

struct Shared {
    state: Mutex<State_>,
    /// Bumped on every state change; waits watch it.
    changed: watch::Sender<u64>,
    record_dir: PathBuf,
    workspace: String,
    hold_connected: bool,
}

impl Shared {
    /// Never held across an await: every user is a short synchronous
    /// section, and the HTTP thread and the test share it.
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn next_id(st: &mut State_, prefix: &str) -> String {
        st.seq += 1;
        format!("{prefix}_fake{:06}{}", st.seq, "Zz9")
    }

    /// Send an event to every open stream and remember it.
    fn emit_locked(st: &mut State_, mut event: Value) {
        if event.get("id").is_none() {
            let id = Self::next_id(st, "evt");
            event["id"] = Value::from(id);
        }
        let frame = format!("data: {event}\n\n").into_bytes();
        st.subscribers
            .retain(|tx| tx.send(StreamMsg::Bytes(frame.clone())).is_ok());
        if event["type"] == "session.status" {
            if let Some(id) = event["properties"]["sessionID"].as_str() {
                let status = event["properties"]["status"].clone();
                if status["type"] == "idle" {
                    st.statuses.remove(id);
                } else {
                    st.statuses.insert(id.to_owned(), status);
                }
            }
        }
        st.emitted.push(event);
    }

    fn emit(&self, event: Value) {
        Self::emit_locked(&mut self.lock(), event);
        self.bump();
    }

    /// Read fresh on every request: a second run against the same fake gets
    /// a new password.
    fn password(&self) -> Option<String> {
        std::fs::read_to_string(self.record_dir.join("password")).ok()
    }
}

/// The fake. Dropping it stops the HTTP server and SIGKILLs the script's
/// process group if it is still running.
pub struct FakeOpenCode {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    program: PathBuf,
    workspace: PathBuf,
    port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeOpenCode {
    /// A fake that starts ready and behaves.
    #[must_use]
    pub fn start() -> FakeOpenCode {
        Self::start_with(FakeOptions::default())
    }

    /// By value so call sites read `start_with(FakeOptions { .. })`.
    #[must_use]
    #[allow(clippy::needless_pass_by_value)]
    pub fn start_with(opts: FakeOptions) -> FakeOpenCode {
        let dir = tempfile::tempdir().expect("tempdir");
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace).expect("workspace dir");
        let workspace = workspace.canonicalize().expect("canonical workspace");
        let record_dir = dir.path().join("records");
        std::fs::create_dir(&record_dir).expect("records dir");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();

        let program = dir.path().join("bin").join("opencode");
        std::fs::create_dir(dir.path().join("bin")).expect("bin dir");
        std::fs::write(&program, script(&opts, &record_dir, port)).expect("write script");
        let hold_connected = opts.hold_connected;
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod script");

        let shared = Arc::new(Shared {
            state: Mutex::new(State_ {
                version: Some("1.18.33".to_owned()),
                ..State_::default()
            }),
            changed: watch::channel(0).0,
            record_dir,
            workspace: workspace.to_str().expect("utf-8 tempdir").to_owned(),
            hold_connected,
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let app = router(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("fake-opencode".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = shutdown_rx.await;
                        })
                        .await
                        .expect("fake server");
                });
            })
            .expect("spawn fake thread");

        FakeOpenCode {
            shared,
            dir,
            program,
            workspace,
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The executable to give gatekeep as `<OPENCODE>`.
    #[must_use]
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The workspace the fake expects as `?directory=` (canonical).
    #[must_use]
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The fake's base URL, as the script prints it.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A scratch directory that lives as long as the fake.
    #[must_use]
    pub fn tempdir(&self) -> &Path {
        self.dir.path()
    }

    // ---- what the script recorded -------------------------------------

    fn record(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.shared.record_dir.join(name)).ok()
    }

    /// The script's pid (after `exec`, the `sleep` that stands for OpenCode).
    #[must_use]
    pub fn script_pid(&self) -> Option<i32> {
        self.record("pid")?.trim().parse().ok()
    }

    /// Wait until the script has started and recorded itself.
    pub async fn wait_for_script_pid(&self) -> i32 {
        self.wait_until("the fake opencode script to start", WAIT, |_| {
            self.script_pid()
        })
        .await
    }

    /// The process group the script ran in.
    #[must_use]
    pub fn script_pgid(&self) -> Option<i32> {
        self.record("pgid")?.trim().parse().ok()
    }

    /// The script's arguments (without argv\[0\]).
    #[must_use]
    pub fn recorded_argv(&self) -> Option<Vec<String>> {
        let raw = self.record("argv")?;
        Some(
            raw.split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The script's environment.
    #[must_use]
    pub fn recorded_env(&self) -> Option<HashMap<String, String>> {
        let raw = self.record("env")?;
        Some(
            raw.split('\0')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// The script's working directory (physical).
    #[must_use]
    pub fn recorded_cwd(&self) -> Option<PathBuf> {
        self.record("cwd").map(|s| PathBuf::from(s.trim_end()))
    }

    /// The `OPENCODE_SERVER_PASSWORD` the script was given. Test-only
    /// visibility: gatekeep itself must never print it.
    #[must_use]
    pub fn recorded_password(&self) -> Option<String> {
        self.record("password")
    }

    /// SIGKILL the script (OpenCode "dies") and break every event stream,
    /// as a dead server's connections would.
    pub fn kill_server_process(&self) {
        if let Some(pid) = self.script_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.break_stream();
    }

    // ---- scripting the server ------------------------------------------

    /// Emit any event (an `id` is added when missing).
    pub fn emit(&self, event: Value) {
        self.shared.emit(event);
    }

    /// Send raw bytes on every open stream (malformed frames, comments,
    /// `retry:`, invalid UTF-8, frames split mid-way).
    pub fn emit_raw(&self, bytes: &[u8]) {
        let mut st = self.shared.lock();
        st.subscribers
            .retain(|tx| tx.send(StreamMsg::Bytes(bytes.to_vec())).is_ok());
    }

    /// Raise a permission request the way OpenCode does; returns its id.
    /// `subject` is the command for `bash`, the path for `edit`/`read`/
    /// `external_directory`, else just the pattern.
    pub fn ask_permission(&self, session: &str, kind: &str, subject: &str) -> String {
        let metadata = match kind {
            "bash" => json!({ "command": subject }),
            "edit" | "write" | "read" | "external_directory" => json!({ "filepath": subject }),
            _ => json!({}),
        };
        let first = subject.split_whitespace().next().unwrap_or(subject);
        self.ask(Ask {
            session: session.to_owned(),
            kind: kind.to_owned(),
            patterns: vec![subject.to_owned()],
            metadata,
            always: vec![format!("{first} *")],
            id: None,
        })
    }

    /// Raise a fully specified permission request; returns its id.
    pub fn ask(&self, ask: Ask) -> String {
        let Ask {
            session,
            kind,
            patterns,
            metadata,
            always,
            id,
        } = ask;
        let mut st = self.shared.lock();
        let id = id.unwrap_or_else(|| Shared::next_id(&mut st, "per"));
        let call = Shared::next_id(&mut st, "call");
        let props = json!({
            "id": id,
            "sessionID": session,
            "permission": kind,
            "patterns": patterns,
            "metadata": metadata,
            "always": always,
            "tool": { "messageID": "msg_fake0001", "callID": call },
        });
        // A re-ask of the same id replaces the pending entry.
        st.pending.retain(|p| p["id"] != props["id"]);
        st.pending.push(props.clone());
        Shared::emit_locked(
            &mut st,
            json!({ "type": "permission.asked", "properties": props }),
        );
        drop(st);
        self.shared.bump();
        id
    }

    /// Raise a `permission.asked` with exactly these properties (malformed
    /// ones included); it is pending under `props.id` like any other.
    pub fn ask_raw(&self, props: &Value) {
        let mut st = self.shared.lock();
        st.pending.retain(|p| p["id"] != props["id"]);
        st.pending.push(props.clone());
        Shared::emit_locked(
            &mut st,
            json!({ "type": "permission.asked", "properties": props }),
        );
        drop(st);
        self.shared.bump();
    }

    /// Make a request pending without emitting its event (the event is
    /// sent separately, e.g. mangled with [`FakeOpenCode::emit_raw`]).
    pub fn pend_silently(&self, props: &Value) {
        let mut st = self.shared.lock();
        st.pending.retain(|p| p["id"] != props["id"]);
        st.pending.push(props.clone());
        drop(st);
        self.shared.bump();
    }

    /// Raise a `question.asked`; returns its id.
    pub fn ask_question(&self, session: &str, question: &str) -> String {
        let mut st = self.shared.lock();
        let id = Shared::next_id(&mut st, "que");
        let props = json!({
            "id": id,
            "sessionID": session,
            "questions": [{ "question": question, "header": "Question", "options": [
                { "label": "Yes", "description": "go ahead" },
                { "label": "No", "description": "stop" },
            ] }],
        });
        st.questions.push(props.clone());
        Shared::emit_locked(
            &mut st,
            json!({ "type": "question.asked", "properties": props }),
        );
        drop(st);
        self.shared.bump();
        id
    }

    /// A root session that exists before gatekeep starts (for `--session`,
    /// `--continue`). Emits nothing: no stream is open yet.
    pub fn create_root_session(&self) -> String {
        let mut st = self.shared.lock();
        let id = Shared::next_id(&mut st, "ses");
        st.sessions.push(SessionRecord {
            id: id.clone(),
            parent_id: None,
            body: Value::Null,
        });
        drop(st);
        self.shared.bump();
        id
    }

    /// A subagent session under `parent`; returns its id.
    pub fn create_child_session(&self, parent: &str) -> String {
        let mut st = self.shared.lock();
        let id = Shared::next_id(&mut st, "ses");
        st.sessions.push(SessionRecord {
            id: id.clone(),
            parent_id: Some(parent.to_owned()),
            body: Value::Null,
        });
        let info = session_info(
            &id,
            Some(parent),
            "explore (@general subagent)",
            &self.shared.workspace,
        );
        Shared::emit_locked(
            &mut st,
            json!({ "type": "session.created", "properties": { "sessionID": id, "info": info } }),
        );
        drop(st);
        self.shared.bump();
        id
    }

    /// The agent's text, as a complete text part of an assistant message.
    pub fn agent_text(&self, session: &str, text: &str) {
        let part_id = {
            let mut st = self.shared.lock();
            Shared::next_id(&mut st, "prt")
        };
        self.emit(json!({
            "type": "message.part.updated",
            "properties": { "sessionID": session, "part": {
                "id": part_id, "messageID": "msg_fake0002", "sessionID": session,
                "type": "text", "text": text, "time": { "start": 1, "end": 2 } } }
        }));
    }

    /// The run of `session` ends well: `session.status` idle, `session.idle`.
    pub fn finish_session(&self, session: &str) {
        self.answered(session, None);
        self.emit(json!({ "type": "session.status",
            "properties": { "sessionID": session, "status": { "type": "idle" } } }));
        self.emit(json!({ "type": "session.idle", "properties": { "sessionID": session } }));
    }

    /// `session.error` with `name` (`APIError`, `ProviderAuthError`, …).
    pub fn session_error(&self, session: &str, name: &str, message: &str) {
        self.answered(
            session,
            Some(json!({ "name": name, "data": { "message": message } })),
        );
        self.emit(json!({ "type": "session.error", "properties": {
            "sessionID": session, "error": { "name": name, "data": { "message": message } } } }));
    }

    /// The session's last message becomes a complete assistant reply (with
    /// `error`, a failed one), as `GET /session/{id}/message` shows it.
    fn answered(&self, session: &str, error: Option<Value>) {
        let mut info = json!({ "id": format!("msg_last_{session}"), "sessionID": session,
            "role": "assistant", "time": { "created": 1_795_286_161_000_u64, "completed": 1_795_286_162_000_u64 } });
        if let Some(error) = error {
            info["error"] = error;
        }
        self.shared
            .lock()
            .last_messages
            .insert(session.to_owned(), json!({ "info": info, "parts": [] }));
    }

    /// Only the idle status, without touching the last message (after
    /// [`FakeOpenCode::session_error`]).
    pub fn finish_session_status_only(&self, session: &str) {
        self.emit(json!({ "type": "session.status",
            "properties": { "sessionID": session, "status": { "type": "idle" } } }));
    }

    /// The session becomes busy (`session.status`).
    pub fn start_working(&self, session: &str) {
        self.emit(json!({ "type": "session.status",
            "properties": { "sessionID": session, "status": { "type": "busy" } } }));
    }

    /// What the server reports as its release (`None`: no health route).
    pub fn report_version(&self, version: Option<&str>) {
        self.shared.lock().version = version.map(str::to_owned);
    }

    /// `GET /global/health` answers only after `delay` (a server still busy
    /// starting up).
    pub fn delay_health(&self, delay: Duration) {
        self.shared.lock().health_delay = delay;
    }

    /// A saved (persistent) approval, as OpenCode 1.18's newer API keeps.
    pub fn save_approval(&self, saved: Value) {
        self.shared.lock().saved.push(saved);
    }

    /// Serve only the newer `/api/...` protocol: `GET /permission` is 404.
    pub fn drop_permission_route(&self) {
        self.shared.lock().permission_route_gone = true;
    }

    /// Every open stream stays open but receives nothing more (a hung
    /// server or proxy); new streams are served normally.
    pub fn mute_streams(&self) {
        let mut st = self.shared.lock();
        let muted: Vec<_> = st.subscribers.drain(..).collect();
        st.held.extend(muted);
    }

    /// End every event stream cleanly (the response body completes).
    pub fn end_stream(&self) {
        let mut st = self.shared.lock();
        st.subscribers.clear();
        st.held.clear();
        drop(st);
        self.shared.bump();
    }

    /// Break every event stream (the body aborts mid-way, like a crash).
    pub fn break_stream(&self) {
        let mut st = self.shared.lock();
        let mut all: Vec<_> = st.subscribers.drain(..).collect();
        all.append(&mut st.held);
        for tx in all {
            let _ = tx.send(StreamMsg::Break);
        }
        drop(st);
        self.shared.bump();
    }

    /// With [`FakeOptions::hold_connected`]: send `server.connected` to the
    /// held streams now.
    pub fn release_connected(&self) {
        let mut st = self.shared.lock();
        let held: Vec<_> = st.held.drain(..).collect();
        let frame = connected_frame(&mut st);
        for tx in held {
            if tx.send(StreamMsg::Bytes(frame.clone())).is_ok() {
                st.subscribers.push(tx);
            }
        }
        drop(st);
        self.shared.bump();
    }

    // ---- observing ------------------------------------------------------

    #[must_use]
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Protocol violations seen (prompt before stream, bad auth, wrong
    /// directory, `always` replies, …). A correct client leaves this empty.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    #[must_use]
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.shared.lock().sessions.clone()
    }

    #[must_use]
    pub fn prompts(&self) -> Vec<PromptRecord> {
        self.shared.lock().prompts.clone()
    }

    #[must_use]
    pub fn replies(&self) -> Vec<ReplyRecord> {
        self.shared.lock().replies.clone()
    }

    /// The replies from index `start` on (the benchmark polls without
    /// cloning the whole history each time).
    #[must_use]
    pub fn replies_from(&self, start: usize) -> Vec<ReplyRecord> {
        let st = self.shared.lock();
        st.replies.get(start..).unwrap_or_default().to_vec()
    }

    /// How many permission requests are pending.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Ids of the permission requests still pending, in ask order.
    #[must_use]
    pub fn pending(&self) -> Vec<String> {
        self.shared
            .lock()
            .pending
            .iter()
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect()
    }

    #[must_use]
    pub fn aborted(&self) -> Vec<String> {
        self.shared.lock().aborted.clone()
    }

    #[must_use]
    pub fn disposed(&self) -> bool {
        self.shared.lock().disposed
    }

    #[must_use]
    pub fn rejected_questions(&self) -> Vec<String> {
        self.shared.lock().rejected_questions.clone()
    }

    /// `(question id, answers)` of every question answered.
    #[must_use]
    pub fn question_answers(&self) -> Vec<(String, Value)> {
        self.shared.lock().question_answers.clone()
    }

    /// Every event emitted so far.
    #[must_use]
    pub fn emitted(&self) -> Vec<Value> {
        self.shared.lock().emitted.clone()
    }

    /// Event streams opened so far (a reconnect opens another).
    #[must_use]
    pub fn streams_opened(&self) -> usize {
        self.shared.lock().streams_opened
    }

    /// Event streams open right now.
    #[must_use]
    pub fn streams_open(&self) -> usize {
        self.shared.lock().streams_open
    }

    /// Whether the first `GET /event` reached the fake before the first
    /// `prompt_async`, and that prompt found a stream open.
    #[must_use]
    pub fn stream_opened_before_prompt(&self) -> bool {
        let st = self.shared.lock();
        let first = |pred: &dyn Fn(&RequestRecord) -> bool| st.requests.iter().position(pred);
        let event = first(&|r| r.method == "GET" && r.path == "/event");
        let prompt = first(&|r| r.path.ends_with("/prompt_async"));
        matches!((event, prompt), (Some(e), Some(p)) if e < p)
            && st.prompts.first().is_some_and(|p| p.streams_open > 0)
    }

    // ---- waiting ----------------------------------------------------------

    /// Wait until `check` returns `Some`, re-checking on every state change;
    /// panics with `what` after `timeout`.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&FakeOpenCode) -> Option<T>,
    ) -> T {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            // Files written by the script do not bump the counter; poll
            // those at a short interval too.
            let tick = tokio::time::Instant::now() + Duration::from_millis(20);
            match tokio::time::timeout_at(deadline.min(tick), rx.changed()).await {
                Ok(Ok(())) | Err(_) if tokio::time::Instant::now() < deadline => {}
                _ => {
                    if let Some(v) = check(self) {
                        return v;
                    }
                    panic!(
                        "fake opencode: timed out after {timeout:?} waiting for {what}; \
                         requests: {:?}; violations: {:?}",
                        self.requests()
                            .iter()
                            .map(|r| format!("{} {}", r.method, r.path))
                            .collect::<Vec<_>>(),
                        self.violations()
                    )
                }
            }
        }
    }

    /// The first root session gatekeep created.
    pub async fn wait_for_session(&self) -> SessionRecord {
        self.wait_until("POST /session", WAIT, |f| {
            f.sessions().into_iter().find(|s| s.parent_id.is_none())
        })
        .await
    }

    /// The first accepted prompt.
    pub async fn wait_for_prompt(&self) -> PromptRecord {
        self.wait_until("prompt_async", WAIT, |f| {
            f.prompts().into_iter().find(|p| p.streams_open > 0)
        })
        .await
    }

    /// At least `n` replies; returns them all.
    pub async fn wait_for_replies(&self, n: usize) -> Vec<ReplyRecord> {
        self.wait_until(&format!("{n} permission replies"), WAIT, |f| {
            let r = f.replies();
            (r.len() >= n).then_some(r)
        })
        .await
    }

    /// At least `n` event streams opened since the start.
    pub async fn wait_for_streams(&self, n: usize) {
        self.wait_until(&format!("{n} event streams"), WAIT, |f| {
            (f.shared.lock().streams_opened >= n).then_some(())
        })
        .await;
    }

    /// Until no permission request is pending.
    pub async fn wait_for_no_pending(&self) {
        self.wait_until("no pending permissions", WAIT, |f| {
            f.pending().is_empty().then_some(())
        })
        .await;
    }

    /// Until the script's process is gone (or a zombie).
    pub async fn wait_for_script_exit(&self) {
        let pid = self.script_pid().expect("the script never ran");
        self.wait_until(&format!("pid {pid} to exit"), WAIT, |_| {
            (!process_alive(pid)).then_some(())
        })
        .await;
    }
}

impl Drop for FakeOpenCode {
    fn drop(&mut self) {
        // A failed test must not leave the "server" behind.
        if let Some(pgid) = self.script_pgid() {
            if pgid > 1 && self.script_pid() == Some(pgid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.end_stream();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A permission request for [`FakeOpenCode::ask`].
#[derive(Debug, Clone)]
pub struct Ask {
    pub session: String,
    pub kind: String,
    pub patterns: Vec<String>,
    pub metadata: Value,
    pub always: Vec<String>,
    /// Reuse an id to re-ask the same request.
    pub id: Option<String>,
}

/// Running and not a zombie. A zombie has exited; it only waits for its
/// parent to reap it.
#[must_use]
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// Every live process in process group `pgid`.
#[must_use]
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(") ")?.1.to_owned();
                    let mut fields = rest.split(' ');
                    let state = fields.next()?;
                    let _ppid = fields.next()?;
                    let pgrp: i32 = fields.next()?.parse().ok()?;
                    Some(pgrp == pgid && state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn script(opts: &FakeOptions, record_dir: &Path, port: u16) -> String {
    let d = shell_quote(record_dir.to_str().expect("utf-8 tempdir"));
    let mut s = format!(
        "#!/bin/sh\n\
         # Generated by tests/it/support/fake_opencode.rs: stands in for `opencode`.\n\
         d={d}\n\
         printf '%s\\0' \"$@\" > \"$d/argv\"\n\
         env -0 > \"$d/env\"\n\
         printf '%s' \"$OPENCODE_SERVER_PASSWORD\" > \"$d/password\"\n\
         pwd -P > \"$d/cwd\"\n\
         cut -d' ' -f5 /proc/$$/stat > \"$d/pgid\"\n\
         echo $$ > \"$d/pid.tmp\" && mv \"$d/pid.tmp\" \"$d/pid\"\n\
         # Like OpenCode, load gatekeep's guard plugin: it reports that it ran.\n\
         g=$(printf '%s' \"$OPENCODE_CONFIG_CONTENT\" | grep -o 'file://[^\"]*gatekeep-guard.js' | head -n 1)\n\
         [ -n \"$g\" ] && echo '{{\"wiped\":true}}' > \"$(dirname \"${{g#file://}}\")/loaded\"\n"
    );
    for line in &opts.preamble {
        let _ = writeln!(s, "echo {}", shell_quote(line));
    }
    if opts.ignore_sigterm {
        s.push_str("trap '' TERM\n");
    }
    match &opts.startup {
        Startup::Ready { delay } => {
            if !delay.is_zero() {
                let _ = writeln!(s, "sleep {}", delay.as_secs_f64());
            }
            let _ = writeln!(
                s,
                "echo 'opencode server listening on http://127.0.0.1:{port}'\nexec sleep 600"
            );
        }
        Startup::ExitBeforeReady { code, stderr } => {
            for line in stderr {
                let _ = writeln!(s, "echo {} >&2", shell_quote(line));
            }
            let _ = writeln!(s, "exit {code}");
        }
        Startup::Silent => s.push_str("exec sleep 600\n"),
    }
    s
}

fn session_info(id: &str, parent: Option<&str>, title: &str, directory: &str) -> Value {
    let mut info = json!({
        "id": id, "slug": "fake-session", "version": "1.18.33", "projectID": "global",
        "directory": directory, "path": directory.trim_start_matches('/'), "title": title,
        "cost": 0, "tokens": { "input": 0, "output": 0, "reasoning": 0, "cache": { "read": 0, "write": 0 } },
        "time": { "created": 1_795_286_161_000_u64, "updated": 1_795_286_161_000_u64 }
    });
    if let Some(parent) = parent {
        info["parentID"] = Value::from(parent);
    }
    info
}

fn connected_frame(st: &mut State_) -> Vec<u8> {
    let event =
        json!({ "id": Shared::next_id(st, "evt"), "type": "server.connected", "properties": {} });
    let frame = format!("data: {event}\n\n").into_bytes();
    st.emitted.push(event);
    frame
}

// ---- the HTTP side ----------------------------------------------------------

type Ctx = State<Arc<Shared>>;

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/event", get(events))
        .route("/agent", get(list_agents))
        .route("/session", post(create_session).get(list_sessions))
        .route("/session/{id}", delete(delete_session))
        .route("/session/{id}/fork", post(fork_session))
        .route("/session/{id}/command", post(command))
        .route("/session/{id}/prompt_async", post(prompt_async))
        .route("/session/{id}/message", post(message).get(last_message))
        .route("/session/status", get(session_statuses))
        .route("/global/health", get(health))
        .route(
            "/api/permission/saved",
            get(|State(shared): Ctx| async move {
                Json(json!({ "data": shared.lock().saved.clone() }))
            }),
        )
        .route("/config", get(|| async { Json(json!({})) }))
        .route("/session/{id}/abort", post(abort))
        .route("/permission", get(list_permissions))
        .route("/permission/{id}/reply", post(reply))
        .route("/question", get(list_questions))
        .route("/question/{id}/reject", post(reject_question))
        .route("/question/{id}/reply", post(reply_question))
        .route("/instance/dispose", post(dispose))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such route in the fake") })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Log every request, then check auth and `directory` like the real server
/// would (a wrong directory there silently hits another instance; here it is
/// a loud violation).
async fn gate(State(shared): Ctx, req: Request, next: Next) -> Response {
    // The OpenCode client (`opencode run --attach`) sends the directory as
    // the `x-opencode-directory` header, which the real server accepts too.
    let directory = req
        .uri()
        .query()
        .and_then(|q| {
            url_query(q)
                .into_iter()
                .find(|(k, _)| k == "directory")
                .map(|(_, v)| v)
        })
        .or_else(|| {
            req.headers()
                .get("x-opencode-directory")
                .and_then(|v| v.to_str().ok())
                .map(percent_decode)
        });
    let authorized = authorized(&shared, req.headers());
    let path = req.uri().path().to_owned();
    {
        let mut st = shared.lock();
        st.requests.push(RequestRecord {
            at: Instant::now(),
            method: req.method().to_string(),
            path: path.clone(),
            directory: directory.clone(),
            authorized,
        });
        if !authorized {
            st.violations
                .push(format!("{} {path}: bad or missing auth", req.method()));
        }
        if authorized && directory.as_deref() != Some(shared.workspace.as_str()) {
            st.violations.push(format!(
                "{} {path}: directory {directory:?}, expected {:?}",
                req.method(),
                shared.workspace
            ));
        }
    }
    shared.bump();
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    if directory.as_deref() != Some(shared.workspace.as_str()) {
        return (StatusCode::BAD_REQUEST, "wrong directory").into_response();
    }
    next.run(req).await
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(password) = shared.password() else {
        return false;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value.strip_prefix("Basic ") else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|cred| cred == format!("opencode:{password}"))
}

fn url_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decrements the open-stream count when the response body is dropped.
struct StreamGuard(Arc<Shared>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.lock().streams_open -= 1;
        self.0.bump();
    }
}

async fn events(State(shared): Ctx) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let mut st = shared.lock();
        st.streams_open += 1;
        st.streams_opened += 1;
        if shared.hold_connected {
            st.held.push(tx);
        } else {
            let frame = connected_frame(&mut st);
            let _ = tx.send(StreamMsg::Bytes(frame));
            st.subscribers.push(tx);
        }
    }
    shared.bump();
    let guard = StreamGuard(Arc::clone(&shared));
    let body = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        match rx.recv().await? {
            StreamMsg::Bytes(b) => Some((Ok::<_, std::io::Error>(Bytes::from(b)), (rx, guard))),
            StreamMsg::Break => Some((
                Err(std::io::Error::other("fake opencode: stream broken")),
                (rx, guard),
            )),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn create_session(State(shared): Ctx, body: Option<Json<Value>>) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    let mut st = shared.lock();
    let id = Shared::next_id(&mut st, "ses");
    let parent = body
        .get("parentID")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let title = body
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("New session");
    let info = session_info(&id, parent.as_deref(), title, &shared.workspace);
    st.sessions.push(SessionRecord {
        id: id.clone(),
        parent_id: parent,
        body: body.clone(),
    });
    Shared::emit_locked(
        &mut st,
        json!({ "type": "session.created", "properties": { "sessionID": id, "info": info } }),
    );
    drop(st);
    shared.bump();
    Json(info).into_response()
}

/// `GET /agent`: one `build` agent whose ruleset is "allow everything",
/// then the kinds the server was started with in `OPENCODE_PERMISSION` —
/// what the real server reports for a workspace without agent overrides.
async fn list_agents(State(shared): Ctx) -> Response {
    let env = std::fs::read_to_string(shared.record_dir.join("env")).unwrap_or_default();
    let var = |name: &str| {
        env.split('\0')
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
    };
    let mut rules = vec![json!({ "permission": "*", "pattern": "*", "action": "allow" })];
    if let Some(Value::Object(kinds)) = var("OPENCODE_PERMISSION") {
        for (kind, action) in kinds {
            rules.push(json!({ "permission": kind, "pattern": "*", "action": action }));
        }
    }
    Json(json!([{ "name": "build", "mode": "primary", "options": {}, "permission": rules }]))
        .into_response()
}

/// `GET /session`: every session, newest last-updated first; the record's
/// position stands in for its update time.
async fn list_sessions(State(shared): Ctx) -> Response {
    let st = shared.lock();
    let list: Vec<Value> = st
        .sessions
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| {
            let mut info = session_info(&s.id, s.parent_id.as_deref(), "listed", &shared.workspace);
            info["time"]["updated"] = Value::from(1_795_286_161_000_u64 + i as u64);
            info
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

/// `POST /session/{id}/fork`: a new root session copied from `id`.
async fn delete_session(State(shared): Ctx, UrlPath(id): UrlPath<String>) -> Response {
    let mut st = shared.lock();
    let before = st.sessions.len();
    st.sessions.retain(|s| s.id != id);
    let found = st.sessions.len() < before;
    drop(st);
    shared.bump();
    if found {
        Json(json!(true)).into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session").into_response()
    }
}

async fn fork_session(State(shared): Ctx, UrlPath(id): UrlPath<String>) -> Response {
    let mut st = shared.lock();
    if !st.sessions.iter().any(|s| s.id == id) {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    }
    let new = Shared::next_id(&mut st, "ses");
    st.sessions.push(SessionRecord {
        id: new.clone(),
        parent_id: None,
        body: json!({ "forkedFrom": id }),
    });
    let info = session_info(&new, None, "fork", &shared.workspace);
    Shared::emit_locked(
        &mut st,
        json!({ "type": "session.created", "properties": { "sessionID": new, "info": info } }),
    );
    drop(st);
    shared.bump();
    Json(info).into_response()
}

/// `POST /session/{id}/command`: recorded like a prompt (the body has
/// `command` and `arguments` instead of `parts`); answers at once.
async fn command(
    State(shared): Ctx,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    let mut st = shared.lock();
    let streams_open = st.streams_open;
    st.prompts.push(PromptRecord {
        at: Instant::now(),
        session_id: id.clone(),
        body,
        streams_open,
    });
    // Same rule as prompt_async: the run must be observable from its start.
    let response = if streams_open == 0 {
        st.violations
            .push(format!("command for {id} while no event stream was open"));
        (
            StatusCode::CONFLICT,
            "fake opencode: command before any event stream was open",
        )
            .into_response()
    } else {
        Json(json!({ "info": {}, "parts": [] })).into_response()
    };
    drop(st);
    shared.bump();
    response
}

async fn prompt_async(
    State(shared): Ctx,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    let mut st = shared.lock();
    let streams_open = st.streams_open;
    st.prompts.push(PromptRecord {
        at: Instant::now(),
        session_id: id.clone(),
        body: body.clone(),
        streams_open,
    });
    let response = if streams_open == 0 {
        st.violations.push(format!(
            "prompt_async for {id} while no event stream was open"
        ));
        (
            StatusCode::CONFLICT,
            "fake opencode: prompt before any event stream was open",
        )
            .into_response()
    } else if !st.sessions.iter().any(|s| s.id == id) {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "name": "NotFoundError", "data": { "message": format!("Session not found: {id}") } })),
        )
            .into_response()
    } else if body.get("parts").and_then(Value::as_array).is_none() {
        st.violations
            .push(format!("prompt_async for {id} without parts"));
        (StatusCode::BAD_REQUEST, "parts is required").into_response()
    } else {
        echo_user_prompt(&mut st, &id, &body);
        Shared::emit_locked(
            &mut st,
            json!({ "type": "session.status", "properties": { "sessionID": id, "status": { "type": "busy" } } }),
        );
        StatusCode::NO_CONTENT.into_response()
    };
    drop(st);
    shared.bump();
    response
}

/// `POST /session/{id}/message` (what `opencode run --attach` sends): a
/// prompt that answers only when the session goes idle, like the real one.
async fn message(
    State(shared): Ctx,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let mut changed = shared.changed.subscribe();
    let mut seen = {
        let mut st = shared.lock();
        let streams_open = st.streams_open;
        let body = body.map_or(Value::Null, |Json(v)| v);
        st.prompts.push(PromptRecord {
            at: Instant::now(),
            session_id: id.clone(),
            body: body.clone(),
            streams_open,
        });
        echo_user_prompt(&mut st, &id, &body);
        st.emitted.len()
    };
    shared.bump();
    loop {
        {
            let st = shared.lock();
            let idle = st.emitted[seen..].iter().any(|e| {
                e["type"] == "session.idle" && e["properties"]["sessionID"] == id.as_str()
            });
            if idle || st.disposed {
                break;
            }
            seen = st.emitted.len();
        }
        if changed.changed().await.is_err() {
            break;
        }
    }
    Json(json!({ "info": { "id": "msg_fake_reply", "sessionID": id, "role": "assistant" }, "parts": [] }))
        .into_response()
}

/// Like the real server, echo the prompt back as a user message whose text
/// part has no `time` (captures: `events_once.jsonl`): a client must not
/// print it as the agent's words.
fn echo_user_prompt(st: &mut State_, session: &str, body: &Value) {
    let message = Shared::next_id(st, "msg");
    let part = Shared::next_id(st, "prt");
    let text: Vec<&str> = body["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect();
    Shared::emit_locked(
        st,
        json!({ "type": "message.updated", "properties": { "sessionID": session, "info": {
            "id": message, "role": "user", "sessionID": session,
            "time": { "created": 1_795_286_161_157_u64 }, "agent": "build" } } }),
    );
    Shared::emit_locked(
        st,
        json!({ "type": "message.part.updated", "properties": { "sessionID": session, "part": {
            "type": "text", "text": text.join("\n"), "messageID": message,
            "sessionID": session, "id": part }, "time": 1_795_286_161_157_u64 } }),
    );
}

async fn session_statuses(State(shared): Ctx) -> Response {
    Json(Value::Object(shared.lock().statuses.clone())).into_response()
}

/// `GET /session/{id}/message?limit=1`: the last message, if any.
async fn last_message(State(shared): Ctx, UrlPath(id): UrlPath<String>) -> Response {
    let last = shared.lock().last_messages.get(&id).cloned();
    Json(Value::from(last.into_iter().collect::<Vec<_>>())).into_response()
}

async fn list_permissions(State(shared): Ctx) -> Response {
    let st = shared.lock();
    if st.permission_route_gone {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    Json(Value::from(st.pending.clone())).into_response()
}

async fn health(State(shared): Ctx) -> Response {
    let delay = shared.lock().health_delay;
    tokio::time::sleep(delay).await;
    match shared.lock().version.clone() {
        Some(version) => Json(json!({ "healthy": true, "version": version })).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

async fn reply(
    State(shared): Ctx,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    let mut st = shared.lock();
    let kind = body.get("reply").and_then(Value::as_str).map(str::to_owned);
    let position = st.pending.iter().position(|p| p["id"] == id.as_str());
    let status = match (kind.as_deref(), position) {
        (Some("once" | "always" | "reject"), None) => StatusCode::NOT_FOUND,
        (Some(kind @ ("once" | "always" | "reject")), Some(i)) => {
            if kind == "always" {
                st.violations.push(format!(
                    "reply \"always\" to {id}: gatekeep must never send it"
                ));
            }
            let asked = st.pending.remove(i);
            let session = asked["sessionID"].clone();
            let mut settled = vec![(asked["id"].clone(), kind.to_owned())];
            if kind == "reject" {
                // Real semantics: every other pending request of the
                // session is rejected too, each with its own event.
                let (same, rest): (Vec<Value>, Vec<Value>) = std::mem::take(&mut st.pending)
                    .into_iter()
                    .partition(|p| p["sessionID"] == session);
                st.pending = rest;
                settled.extend(
                    same.into_iter()
                        .map(|p| (p["id"].clone(), "reject".to_owned())),
                );
            }
            for (request_id, reply) in settled {
                Shared::emit_locked(
                    &mut st,
                    json!({ "type": "permission.replied", "properties": {
                        "sessionID": session, "requestID": request_id, "reply": reply } }),
                );
            }
            StatusCode::OK
        }
        _ => {
            st.violations
                .push(format!("reply to {id} with body {body}"));
            StatusCode::BAD_REQUEST
        }
    };
    st.replies.push(ReplyRecord {
        at: Instant::now(),
        request_id: id.clone(),
        body,
        status: status.as_u16(),
    });
    drop(st);
    shared.bump();
    match status {
        StatusCode::OK => Json(true).into_response(),
        StatusCode::NOT_FOUND => (
            status,
            Json(json!({ "_tag": "PermissionNotFoundError", "requestID": id,
                "message": format!("Permission request not found: {id}") })),
        )
            .into_response(),
        _ => (status, "invalid reply").into_response(),
    }
}

async fn abort(State(shared): Ctx, UrlPath(id): UrlPath<String>) -> Response {
    let mut st = shared.lock();
    st.aborted.push(id.clone());
    // Pending permissions stay pending: abort does not clear them (docs/design.md, "OpenCode facts relied on").
    Shared::emit_locked(
        &mut st,
        json!({ "type": "session.error", "properties": { "sessionID": id,
            "error": { "name": "MessageAbortedError", "data": { "message": "Aborted" } } } }),
    );
    Shared::emit_locked(
        &mut st,
        json!({ "type": "session.idle", "properties": { "sessionID": id } }),
    );
    drop(st);
    shared.bump();
    Json(true).into_response()
}

async fn list_questions(State(shared): Ctx) -> Response {
    Json(Value::from(shared.lock().questions.clone())).into_response()
}

/// `POST /question/{id}/reply`: records the answers, settles the question.
async fn reply_question(
    State(shared): Ctx,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(v)| v);
    let mut st = shared.lock();
    let Some(i) = st.questions.iter().position(|q| q["id"] == id.as_str()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "_tag": "QuestionNotFoundError" })),
        )
            .into_response();
    };
    let q = st.questions.remove(i);
    st.question_answers
        .push((id.clone(), body["answers"].clone()));
    Shared::emit_locked(
        &mut st,
        json!({ "type": "question.replied", "properties": { "sessionID": q["sessionID"], "requestID": id, "answers": body["answers"] } }),
    );
    drop(st);
    shared.bump();
    Json(true).into_response()
}

async fn reject_question(State(shared): Ctx, UrlPath(id): UrlPath<String>) -> Response {
    let mut st = shared.lock();
    let Some(i) = st.questions.iter().position(|q| q["id"] == id.as_str()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "_tag": "QuestionNotFoundError", "requestID": id })),
        )
            .into_response();
    };
    let q = st.questions.remove(i);
    st.rejected_questions.push(id.clone());
    Shared::emit_locked(
        &mut st,
        json!({ "type": "question.rejected", "properties": { "sessionID": q["sessionID"], "requestID": id } }),
    );
    drop(st);
    shared.bump();
    Json(true).into_response()
}

async fn dispose(State(shared): Ctx) -> Response {
    let mut st = shared.lock();
    st.disposed = true;
    st.pending.clear();
    let directory = shared.workspace.clone();
    Shared::emit_locked(
        &mut st,
        json!({ "type": "server.instance.disposed", "properties": { "directory": directory } }),
    );
    // The stream ends after server.instance.disposed.
    st.subscribers.clear();
    st.held.clear();
    drop(st);
    shared.bump();
    Json(true).into_response()
}

/// The library's OpenCode side (`gatekeep::opencode`) against this fake, and
/// the fake's own semantics.
mod tests {
    use super::*;
    use gatekeep::opencode::api::{Api, ApiError, Prompt, Reply, Rule};
    use gatekeep::opencode::events::{subscribe, EventStream, EventsError};
    use gatekeep::opencode::server::{Server, ServerError, ServerOptions};
    use gatekeep::opencode::wire::{Event, Part, ReplyKind};
    use secrecy::{ExposeSecret, SecretString};

    const T: Duration = Duration::from_secs(5);

    fn options(fake: &FakeOpenCode) -> ServerOptions {
        ServerOptions {
            program: fake.program().to_owned(),
            workspace: fake.workspace().to_owned(),
            env: vec![("OPENCODE_PERMISSION".into(), r#"{"bash":"ask"}"#.into())],
            ready_timeout: T,
            sandbox: None,
        }
    }

    async fn start(fake: &FakeOpenCode) -> (Server, Api) {
        let server = Server::start(options(fake)).await.expect("server starts");
        let api = Api::new(
            server.base_url(),
            fake.workspace(),
            server.password().clone(),
            T,
        )
        .expect("api");
        (server, api)
    }

    /// Next event that is not a heartbeat, bounded.
    async fn next(stream: &mut EventStream) -> Event {
        tokio::time::timeout(T, stream.next())
            .await
            .expect("an event in time")
            .expect("stream still open")
            .expect("event parses")
    }

    #[tokio::test]
    async fn server_start_reads_url_from_the_line_and_stop_leaves_no_process() {
        let fake = FakeOpenCode::start();
        let (server, _api) = start(&fake).await;
        // The fake prints its own port, not the one gatekeep asked for.
        assert_eq!(server.base_url(), fake.url());
        let argv = fake.recorded_argv().expect("argv recorded");
        assert_eq!(argv[..4], ["serve", "--hostname", "127.0.0.1", "--port"]);
        assert!(argv[4].parse::<u16>().is_ok(), "{argv:?}");
        let env = fake.recorded_env().expect("env recorded");
        assert_eq!(
            env.get("OPENCODE_SERVER_PASSWORD").map(String::as_str),
            Some(server.password().expose_secret())
        );
        assert!(server.password().expose_secret().len() >= 32);
        assert_eq!(
            env.get("OPENCODE_PERMISSION").map(String::as_str),
            Some(r#"{"bash":"ask"}"#)
        );
        assert_eq!(fake.recorded_cwd().as_deref(), Some(fake.workspace()));
        // Its own process group, not ours.
        let pid = fake.script_pid().expect("pid");
        assert_eq!(u32::try_from(pid).ok(), Some(server.pid()));
        assert_eq!(fake.script_pgid(), Some(pid));
        assert_ne!(nix::unistd::getpgrp().as_raw(), pid);
        assert!(process_alive(pid));
        // Debug of the server never shows the password.
        let shown = format!("{server:?}");
        assert!(!shown.contains(server.password().expose_secret()));

        let stopped = server.stop(Duration::from_secs(2)).await;
        assert!(!stopped.killed, "sleep exits on SIGTERM");
        assert!(stopped.status.is_some());
        assert!(!process_alive(pid));
        assert!(group_members(pid).is_empty());
    }

    #[tokio::test]
    async fn stop_kills_after_grace_when_sigterm_is_ignored() {
        let fake = FakeOpenCode::start_with(FakeOptions {
            ignore_sigterm: true,
            ..FakeOptions::default()
        });
        let (server, _api) = start(&fake).await;
        let pid = fake.script_pid().expect("pid");
        let began = Instant::now();
        let stopped = server.stop(Duration::from_millis(300)).await;
        assert!(stopped.killed);
        assert!(began.elapsed() >= Duration::from_millis(300));
        assert!(!process_alive(pid));
    }

    #[tokio::test]
    async fn dropping_a_server_kills_its_group() {
        let fake = FakeOpenCode::start();
        let (server, _api) = start(&fake).await;
        let pid = fake.script_pid().expect("pid");
        drop(server);
        fake.wait_for_script_exit().await;
        assert!(group_members(pid).is_empty());
    }

    #[test]
    fn the_server_dies_with_the_thread_that_spawned_it() {
        let fake = FakeOpenCode::start();
        let opts = options(&fake);
        // A thread with its own runtime starts the server and exits without
        // stopping or dropping it: only PR_SET_PDEATHSIG can kill it now.
        let pid = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let server = rt.block_on(Server::start(opts)).expect("starts");
            let pid = server.pid();
            std::mem::forget(server);
            pid
        })
        .join()
        .expect("thread");
        let pid = i32::try_from(pid).expect("pid");
        let deadline = Instant::now() + T;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_alive(pid), "pid {pid} outlived its parent thread");
    }

    #[tokio::test]
    async fn start_failures_carry_opencode_output() {
        let fake = FakeOpenCode::start_with(FakeOptions {
            startup: Startup::ExitBeforeReady {
                code: 7,
                stderr: vec!["Error: no providers configured".into()],
            },
            ..FakeOptions::default()
        });
        let err = Server::start(options(&fake)).await.expect_err("fails");
        assert!(matches!(err, ServerError::ExitedEarly { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("exit code 7"), "{msg}");
        assert!(msg.contains("Error: no providers configured"), "{msg}");
        assert!(msg.contains("fake opencode 1.18.33 starting"), "{msg}");

        let fake = FakeOpenCode::start_with(FakeOptions {
            startup: Startup::Silent,
            ..FakeOptions::default()
        });
        let mut opts = options(&fake);
        opts.ready_timeout = Duration::from_millis(300);
        let err = Server::start(opts).await.expect_err("times out");
        assert!(matches!(err, ServerError::NotReady { .. }), "{err}");
        let pid = fake.script_pid().expect("it ran");
        assert!(
            !process_alive(pid),
            "a server that never got ready is killed"
        );
    }

    #[tokio::test]
    async fn subscribe_returns_only_after_server_connected() {
        let fake = FakeOpenCode::start_with(FakeOptions {
            hold_connected: true,
            ..FakeOptions::default()
        });
        let (server, api) = start(&fake).await;
        let sub = tokio::spawn({
            let api = api.clone();
            async move { subscribe(&api).await }
        });
        fake.wait_for_streams(1).await;
        // HTTP 200 is out, server.connected is not: still waiting.
        let still_waiting = tokio::time::timeout(Duration::from_millis(200), async {
            while !sub.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_err();
        assert!(still_waiting, "subscribe returned before server.connected");
        fake.release_connected();
        let mut stream = tokio::time::timeout(T, sub)
            .await
            .expect("subscribe returns")
            .expect("task")
            .expect("subscribed");

        let session = api
            .create_session(Some("t"), &[Rule::ask("bash")])
            .await
            .expect("session");
        api.prompt_async(&session.id, &Prompt::text("go"))
            .await
            .expect("prompt accepted");
        assert!(fake.stream_opened_before_prompt());
        assert_eq!(
            next(&mut stream).await,
            Event::SessionCreated(session.clone())
        );
        assert!(matches!(
            next(&mut stream).await,
            Event::MessageUpdated { ref role, .. } if role == "user"
        ));
        assert!(matches!(
            next(&mut stream).await,
            Event::PartUpdated(Part::Text { ref text, ended: false, .. }) if text == "go"
        ));
        assert!(matches!(
            next(&mut stream).await,
            Event::SessionStatus { .. }
        ));
        let recorded = fake.wait_for_session().await;
        assert_eq!(
            recorded.body["permission"],
            json!([{ "permission": "bash", "pattern": "*", "action": "ask" }])
        );
        assert_eq!(fake.wait_for_prompt().await.body["parts"][0]["text"], "go");
        assert!(fake.violations().is_empty(), "{:?}", fake.violations());
        server.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn subscribe_times_out_when_server_connected_never_comes() {
        let fake = FakeOpenCode::start_with(FakeOptions {
            hold_connected: true,
            ..FakeOptions::default()
        });
        let server = Server::start(options(&fake)).await.expect("starts");
        let api = Api::new(
            server.base_url(),
            fake.workspace(),
            server.password().clone(),
            Duration::from_millis(300),
        )
        .expect("api");
        let err = subscribe(&api).await.expect_err("times out");
        assert!(matches!(err, EventsError::SetupTimeout(_)), "{err}");
        server.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn prompt_without_a_stream_is_refused_and_recorded() {
        let fake = FakeOpenCode::start();
        let (server, api) = start(&fake).await;
        let session = api.create_session(None, &[]).await.expect("session");
        let err = api
            .prompt_async(&session.id, &Prompt::text("go"))
            .await
            .expect_err("refused");
        assert!(matches!(err, ApiError::Status { status: 409, .. }), "{err}");
        assert!(!fake.stream_opened_before_prompt());
        assert_eq!(fake.violations().len(), 1, "{:?}", fake.violations());
        server.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn wrong_password_and_wrong_directory_are_refused() {
        let fake = FakeOpenCode::start();
        let (server, _api) = start(&fake).await;
        let wrong = Api::new(
            server.base_url(),
            fake.workspace(),
            SecretString::from("nope"),
            T,
        )
        .expect("api");
        let err = wrong.list_permissions().await.expect_err("401");
        assert!(matches!(err, ApiError::Status { status: 401, .. }), "{err}");
        let elsewhere = Api::new(
            server.base_url(),
            Path::new("/somewhere/else"),
            server.password().clone(),
            T,
        )
        .expect("api");
        let err = elsewhere.list_permissions().await.expect_err("400");
        assert!(matches!(err, ApiError::Status { status: 400, .. }), "{err}");
        assert_eq!(fake.violations().len(), 2, "{:?}", fake.violations());
        server.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    #[allow(clippy::too_many_lines)] // one scenario, read top to bottom
    async fn once_reject_cascade_and_late_reply_404() {
        let fake = FakeOpenCode::start();
        let (server, api) = start(&fake).await;
        let mut stream = subscribe(&api).await.expect("subscribed");
        let a = api.create_session(None, &[]).await.expect("session").id;
        let b = fake.create_child_session(&a);
        assert!(matches!(next(&mut stream).await, Event::SessionCreated(_)));
        let Event::SessionCreated(child) = next(&mut stream).await else {
            panic!("child session.created")
        };
        assert_eq!(child.parent_id.as_deref(), Some(a.as_str()));

        let p1 = fake.ask_permission(&a, "bash", "echo one");
        let p2 = fake.ask_permission(&a, "bash", "echo two");
        let p3 = fake.ask_permission(&a, "edit", "/w/src/x.rs");
        let q1 = fake.ask_permission(&b, "bash", "echo child");
        for id in [&p1, &p2, &p3, &q1] {
            let Event::PermissionAsked(req) = next(&mut stream).await else {
                panic!("permission.asked")
            };
            assert_eq!(&req.id, id);
        }
        let listed: Vec<String> = api
            .list_permissions()
            .await
            .expect("list")
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(listed, [p1.clone(), p2.clone(), p3.clone(), q1.clone()]);

        api.reply_permission(&p1, &Reply::Once).await.expect("once");
        assert_eq!(
            next(&mut stream).await,
            Event::PermissionReplied {
                session_id: a.clone(),
                request_id: p1.clone(),
                reply: ReplyKind::Once
            }
        );
        // A second answer to the same request loses cleanly.
        let err = api
            .reply_permission(&p1, &Reply::Reject { message: None })
            .await
            .expect_err("404");
        assert!(
            matches!(err, ApiError::PermissionNotFound(ref id) if *id == p1),
            "{err}"
        );

        // Reject p2: p3 (same session) goes with it; the child's q1 stays.
        api.reply_permission(
            &p2,
            &Reply::Reject {
                message: Some("denied by gatekeep".into()),
            },
        )
        .await
        .expect("reject");
        for id in [&p2, &p3] {
            assert_eq!(
                next(&mut stream).await,
                Event::PermissionReplied {
                    session_id: a.clone(),
                    request_id: id.clone(),
                    reply: ReplyKind::Reject
                }
            );
        }
        assert_eq!(fake.pending(), std::slice::from_ref(&q1));
        let replies = fake.replies();
        assert_eq!(
            replies
                .iter()
                .map(|r| (r.request_id.as_str(), r.reply(), r.status))
                .collect::<Vec<_>>(),
            [
                (p1.as_str(), "once", 200),
                (p1.as_str(), "reject", 404),
                (p2.as_str(), "reject", 200)
            ]
        );
        assert_eq!(replies[2].message(), Some("denied by gatekeep"));

        // Abort does not clear a pending permission (docs/design.md, "OpenCode facts relied on").
        api.abort(&b).await.expect("abort");
        assert_eq!(
            next(&mut stream).await,
            Event::SessionError {
                session_id: Some(b.clone()),
                name: "MessageAbortedError".into(),
                message: Some("Aborted".into())
            }
        );
        assert_eq!(
            next(&mut stream).await,
            Event::SessionIdle {
                session_id: b.clone()
            }
        );
        assert_eq!(fake.pending(), std::slice::from_ref(&q1));
        assert_eq!(fake.aborted(), std::slice::from_ref(&b));

        // Dispose: the event, then the stream ends.
        api.dispose().await.expect("dispose");
        assert!(matches!(
            next(&mut stream).await,
            Event::InstanceDisposed { .. }
        ));
        assert!(tokio::time::timeout(T, stream.next())
            .await
            .expect("ends in time")
            .is_none());
        assert!(fake.disposed());
        assert!(fake.violations().is_empty(), "{:?}", fake.violations());
        server.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn broken_stream_is_a_fatal_error_then_the_end() {
        let fake = FakeOpenCode::start();
        let (server, api) = start(&fake).await;
        let mut stream = subscribe(&api).await.expect("subscribed");
        // Garbage, a comment, a retry field, a split frame, then a break.
        fake.emit_raw(b"data: {not json\n\n: comment\nretry: 5\n\ndata: {\"type\":\"server.heart");
        fake.emit_raw(b"beat\",\"properties\":{}}\n\n");
        let err = tokio::time::timeout(T, stream.next())
            .await
            .expect("in time")
            .expect("an item")
            .expect_err("bad frame");
        assert!(!err.is_fatal());
        assert_eq!(next(&mut stream).await, Event::Heartbeat);
        fake.break_stream();
        let err = tokio::time::timeout(T, stream.next())
            .await
            .expect("in time")
            .expect("an item")
            .expect_err("broken");
        assert!(err.is_fatal(), "{err}");
        assert!(stream.next().await.is_none());
        server.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn killed_server_is_seen_by_exited() {
        let fake = FakeOpenCode::start();
        let (mut server, api) = start(&fake).await;
        let mut stream = subscribe(&api).await.expect("subscribed");
        fake.kill_server_process();
        let status = tokio::time::timeout(T, server.exited())
            .await
            .expect("exit noticed");
        assert!(!status.success());
        assert!(server.has_exited());
        let item = tokio::time::timeout(T, stream.next())
            .await
            .expect("in time");
        assert!(matches!(item, Some(Err(ref e)) if e.is_fatal()), "{item:?}");
        let stopped = server.stop(Duration::from_secs(1)).await;
        assert!(!stopped.killed);
    }

    #[tokio::test]
    async fn questions_can_be_listed_and_rejected() {
        let fake = FakeOpenCode::start();
        let (server, api) = start(&fake).await;
        let mut stream = subscribe(&api).await.expect("subscribed");
        let s = api.create_session(None, &[]).await.expect("session").id;
        let q = fake.ask_question(&s, "Which file?");
        assert!(matches!(next(&mut stream).await, Event::SessionCreated(_)));
        let Event::QuestionAsked { id, session_id, .. } = next(&mut stream).await else {
            panic!("question.asked")
        };
        assert_eq!(
            (id.as_deref(), session_id.as_deref()),
            (Some(q.as_str()), Some(s.as_str()))
        );
        let listed = api.list_questions().await.expect("list");
        assert_eq!(listed.len(), 1);
        api.reject_question(&q).await.expect("reject");
        let err = api.reject_question(&q).await.expect_err("404");
        assert!(matches!(err, ApiError::QuestionNotFound(_)), "{err}");
        assert_eq!(fake.rejected_questions(), [q]);
        server.stop(Duration::from_secs(1)).await;
    }
}

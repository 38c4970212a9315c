//! One supervised run, from start to teardown.
//!
//! The supervisor owns the `opencode serve` child, the approval task, the
//! transport task and the one shutdown sequence ([`teardown`]). It reads
//! OpenCode's events itself and turns them into approval inputs, terminal
//! output, or a reason to end the run.
//!
//! Start-up order matters (DESIGN §1): the event stream is open and has
//! delivered `server.connected` before the session is prompted, and the
//! approval channel is ready before anything reaches the agent.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::approval::registry::Reply;
use crate::approval::task::{
    ApprovalTask, Deadlines, Input, Ledger, Notifier, Replier, ReplyError,
};
use crate::approval::{EndReason, Request};
use crate::audit;
use crate::config::{ApprovalChannel, RunConfig};
use crate::console::Console;
use crate::exit::Code;
use crate::opencode::api::{self, Api, ApiError, ModelRef, Prompt, PromptPart, Rule};
use crate::opencode::events::{self, EventStream};
use crate::opencode::server::{Server, ServerOptions};
use crate::opencode::wire::{Event, Part, PermissionRequest, ReplyKind, SessionStatus, ToolStatus};
use crate::redact::Redactor;
use crate::signals::Signals;
use crate::summary::Usage;
use crate::transport::{discord, terminal, Decider, Notice, RunReport};

/// How long `opencode serve` may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on every OpenCode API call.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on opening the event stream and receiving `server.connected`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Time kept back from the run's end for the teardown: a request's deadline
/// never runs into it. A quarter of very short runs.
const TEARDOWN_MARGIN: Duration = Duration::from_secs(5);
/// Bound on each polite teardown step (deny, sweep, abort, dispose).
const STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// SIGTERM → SIGKILL grace for the server's process group.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a transport may take to show the final state after the run.
const TRANSPORT_DRAIN: Duration = Duration::from_secs(25);
/// After the event stream ends, how long to wait for the server's exit to
/// tell "OpenCode died" from "the stream ended early".
const DEATH_GRACE: Duration = Duration::from_millis(750);
/// How long the audit log may take to write its last lines after the run.
const AUDIT_DRAIN: Duration = Duration::from_secs(5);

/// How the run ended, with the detail shown to the user.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: Code,
    pub reason: EndReason,
    pub detail: Option<String>,
    pub ledger: Ledger,
    pub duration: Duration,
    /// Model, tokens and cost of the root session, as OpenCode reported them.
    pub usage: Usage,
    /// Knows this run's secrets, for reports written after it (the summary).
    pub redactor: Redactor,
}

/// Why the run ends, as found by the event loop.
#[derive(Debug, Clone)]
struct End {
    reason: EndReason,
    detail: Option<String>,
}

impl End {
    fn new(reason: EndReason, detail: impl Into<Option<String>>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Run one supervised OpenCode run. `message` is the full prompt (words and
/// stdin). Never panics on bad input; every path ends in [`teardown`].
pub async fn run(config: RunConfig, message: String, mut signals: Signals) -> Outcome {
    let console = Console::new(config.verbosity);
    let started = Instant::now();
    let run_deadline = started + config.timeout;
    let early = |code: Code, reason: EndReason, detail: String| Outcome {
        code,
        reason,
        detail: Some(detail),
        ledger: Ledger::default(),
        duration: started.elapsed(),
        usage: Usage::default(),
        redactor: Redactor::default(),
    };

    // Start OpenCode and the approval channel at once: their start-ups
    // overlap, and neither waits for the other.
    console.status(&format!(
        "starting OpenCode in {}",
        config.workspace.display()
    ));
    let server_options = ServerOptions {
        program: config.spec.opencode.clone(),
        workspace: config.workspace.clone(),
        env: server_env(&config.gates),
        ready_timeout: READY_TIMEOUT,
    };
    let startup = async {
        tokio::join!(
            Server::start(server_options),
            connect_channel(&config, &console)
        )
    };
    let (server, channel) = tokio::select! {
        both = startup => both,
        reason = signals.recv() => return early(Code::for_end(reason), reason, "stopped during start-up".to_owned()),
        () = sleep_until(run_deadline) => {
            return early(Code::TimedOut, EndReason::TimedOut, "timed out during start-up".to_owned());
        }
    };
    let mut server = match server {
        Ok(server) => server,
        Err(err) => {
            return early(
                Code::OpenCodeFailed,
                EndReason::OpenCodeDied,
                format!("OpenCode failed to start: {err}"),
            )
        }
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(detail) => {
            server.stop(STOP_GRACE).await;
            return early(Code::ChannelUnavailable, EndReason::Failed, detail);
        }
    };
    console.detail(&format!("OpenCode is listening on {}", server.base_url()));

    let api = match Api::new(
        server.base_url(),
        &config.workspace,
        server.password().clone(),
        API_TIMEOUT,
    ) {
        Ok(api) => api,
        Err(err) => {
            server.stop(STOP_GRACE).await;
            return early(
                Code::OpenCodeFailed,
                EndReason::OpenCodeDied,
                err.to_string(),
            );
        }
    };
    // The password must never reach a channel, even if the agent echoes it.
    let redactor = Redactor::new(vec![server.password().expose_secret().to_owned()]);

    // Subscribe first, then create and prompt: a permission asked before the
    // stream is open would otherwise be missed.
    let begun = tokio::select! {
        begun = begin(&api, &config, &message) => begun,
        reason = signals.recv() => Err(End::new(reason, "stopped during start-up".to_owned())),
        () = sleep_until(run_deadline) => Err(End::new(EndReason::TimedOut, "timed out during start-up".to_owned())),
    };
    let (stream, root) = match begun {
        Ok(begun) => begun,
        Err(end) => {
            // Nothing reached the agent, or its session is aborted below.
            let sessions = Sessions::default();
            let ledger = teardown(&end, None, &api, &sessions, server, &console).await;
            return finish(end, ledger, started, None);
        }
    };
    console.status("run started; waiting for the agent");

    // The approval task and the channel's task.
    let mut notifier = Notifier::default();
    let notices = notifier.subscribe();
    let audit_notices = config.audit_log.as_ref().map(|_| notifier.subscribe());
    let status_notices = notifier.subscribe();
    let transport_notifier = notifier.clone();
    let (inputs_tx, inputs_rx) = mpsc::channel(256);
    let deadlines = Deadlines {
        approval_timeout: config.approval_timeout,
        run_deadline,
        teardown_margin: TEARDOWN_MARGIN.min(config.timeout / 4),
    };
    let approvals = tokio::spawn(
        ApprovalTask::new(OpenCodeReplier(api.clone()), notifier, deadlines).run(inputs_rx),
    );
    let transport = spawn_transport(
        channel,
        notices,
        Decider::new(inputs_tx.clone()),
        redactor.clone(),
        &console,
    );
    let audit = config.audit_log.clone().zip(audit_notices).map(|(path, notices)| {
        tokio::spawn(audit::record(path, notices, redactor.clone(), console.clone()))
    });
    let status = console.follow(status_notices);

    let mut run = Run {
        console: console.clone(),
        usage: Usage::default(),
        api: api.clone(),
        sessions: Sessions::new(root),
        approvals: inputs_tx.clone(),
        printed_parts: HashSet::new(),
        tool_states: HashMap::new(),
        user_messages: HashSet::new(),
    };
    let end = run
        .until_end(stream, &mut server, &mut signals, run_deadline)
        .await;

    let ledger = teardown(
        &end,
        Some(Approvals {
            inputs: inputs_tx,
            task: approvals,
        }),
        &api,
        &run.sessions,
        server,
        &console,
    )
    .await;
    let mut outcome = finish(end, ledger, started, None);
    outcome.usage = std::mem::take(&mut run.usage);
    outcome.usage.session_id.clone_from(&run.sessions.root);
    outcome.redactor = redactor;
    transport_notifier.send(&Notice::RunEnded(RunReport {
        outcome: describe(&outcome),
        exit_code: outcome.code.as_i32(),
        duration: outcome.duration,
        approved: outcome.ledger.approved(),
        denied: outcome.ledger.denied(),
    }));
    if tokio::time::timeout(TRANSPORT_DRAIN, transport)
        .await
        .is_err()
    {
        console.error("the approval channel did not finish its final messages in time");
    }
    // Every line of the audit log is on disk before the process exits.
    if let Some(audit) = audit {
        if tokio::time::timeout(AUDIT_DRAIN, audit).await.is_err() {
            console.error("the audit log could not be written in time");
        }
    }
    status.abort();
    console.finish();
    outcome
}

fn finish(end: End, ledger: Ledger, started: Instant, code: Option<Code>) -> Outcome {
    Outcome {
        code: code.unwrap_or_else(|| Code::for_end(end.reason)),
        reason: end.reason,
        detail: end.detail,
        ledger,
        duration: started.elapsed(),
        usage: Usage::default(),
        redactor: Redactor::default(),
    }
}

/// One line saying how the run ended.
#[must_use]
pub fn describe(outcome: &Outcome) -> String {
    match &outcome.detail {
        Some(detail) => format!("{}: {detail}", outcome.reason.phrase()),
        None => outcome.reason.phrase().to_owned(),
    }
}

/// Environment for `opencode serve`: `--gate` kinds forced to `ask` for
/// every session of the server, child sessions included.
fn server_env(gates: &[String]) -> Vec<(OsString, OsString)> {
    if gates.is_empty() {
        return Vec::new();
    }
    let rules: serde_json::Map<String, serde_json::Value> = gates
        .iter()
        .map(|g| (g.clone(), serde_json::Value::from("ask")))
        .collect();
    vec![(
        "OPENCODE_PERMISSION".into(),
        serde_json::Value::Object(rules).to_string().into(),
    )]
}

/// The approval channel, connected.
enum ConnectedChannel {
    Terminal,
    Discord(Box<discord::Discord>),
}

async fn connect_channel(
    config: &RunConfig,
    console: &Console,
) -> Result<ConnectedChannel, String> {
    match &config.approval {
        ApprovalChannel::Terminal => Ok(ConnectedChannel::Terminal),
        ApprovalChannel::Discord(d) => {
            console.status("connecting to Discord");
            let settings = discord::Settings {
                token: d.token.clone(),
                api_base: d.api_base.clone(),
                channel_id: d.channel_id,
                approvers: d.approvers.clone(),
                approver_roles: d.approver_roles.clone(),
                redactor: Redactor::new(Vec::new()),
            };
            discord::connect(settings, run_info(config))
                .await
                .map(|d| ConnectedChannel::Discord(Box::new(d)))
                .map_err(|e| format!("approval channel unavailable: {e}"))
        }
    }
}

fn run_info(config: &RunConfig) -> discord::RunInfo {
    let spec = &config.spec;
    let title = spec.title.clone().unwrap_or_else(|| {
        let mut t: String = spec.message.chars().take(80).collect();
        if spec.message.chars().count() > 80 {
            t.push('…');
        }
        t
    });
    let ci = match (
        std::env::var("GITHUB_SERVER_URL"),
        std::env::var("GITHUB_REPOSITORY"),
        std::env::var("GITHUB_RUN_ID"),
    ) {
        (Ok(server), Ok(repo), Ok(run)) => Some(format!("{server}/{repo}/actions/runs/{run}")),
        _ => std::env::var("CI_JOB_URL").ok(),
    };
    discord::RunInfo {
        title,
        workspace: config.workspace.file_name().map_or_else(
            || config.workspace.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown host".to_owned()),
        model: spec.model.as_ref().map(ToString::to_string),
        opencode_version: None,
        ci,
    }
}

fn spawn_transport(
    channel: ConnectedChannel,
    notices: mpsc::UnboundedReceiver<Notice>,
    decider: Decider,
    redactor: Redactor,
    console: &Console,
) -> JoinHandle<()> {
    match channel {
        ConnectedChannel::Terminal => tokio::spawn(terminal::serve(
            notices,
            terminal::stdin_lines(),
            decider,
            redactor,
            terminal::local_actor(),
            console.clone(),
        )),
        ConnectedChannel::Discord(discord) => tokio::spawn(async move {
            if let Err(err) = discord.serve(notices, decider).await {
                eprintln!("gatekeep: Discord: {err}");
            }
        }),
    }
}

/// Subscribe, create (or pick) the session, prompt. Returns the open stream
/// and the root session id.
async fn begin(api: &Api, config: &RunConfig, message: &str) -> Result<(EventStream, String), End> {
    let opencode_failed = |what: &str, e: &dyn std::fmt::Display| {
        End::new(EndReason::OpenCodeDied, format!("{what}: {e}"))
    };
    let stream = events::subscribe_within(api, SUBSCRIBE_TIMEOUT)
        .await
        .map_err(|e| opencode_failed("could not open OpenCode's event stream", &e))?;
    let spec = &config.spec;
    let root = if let Some(session) = &spec.session {
        session.clone()
    } else {
        let rules: Vec<Rule> = config.gates.iter().map(Rule::ask).collect();
        api.create_session(spec.title.as_deref(), &rules)
            .await
            .map_err(|e| opencode_failed("could not create the session", &e))?
            .id
    };
    let mut parts = vec![PromptPart::Text {
        text: message.to_owned(),
    }];
    for file in &spec.files {
        parts.push(PromptPart::file(&config.workspace.join(file)));
    }
    let prompt = Prompt {
        parts,
        model: spec.model.as_ref().map(|m| ModelRef {
            provider_id: m.provider.clone(),
            model_id: m.model.clone(),
        }),
        agent: spec.agent.clone(),
        variant: spec.variant.clone(),
    };
    api.prompt_async(&root, &prompt)
        .await
        .map_err(|e| opencode_failed("could not send the prompt", &e))?;
    Ok((stream, root))
}

/// The sessions of this run: the root and every child (subagent) session,
/// with a label for each child.
#[derive(Debug, Default)]
struct Sessions {
    root: Option<String>,
    /// Child session id → label (title or agent).
    children: HashMap<String, String>,
}

impl Sessions {
    fn new(root: String) -> Self {
        Self {
            root: Some(root),
            children: HashMap::new(),
        }
    }

    fn is_root(&self, id: &str) -> bool {
        self.root.as_deref() == Some(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.is_root(id) || self.children.contains_key(id)
    }

    /// `None` for the root session, the child's label otherwise.
    fn label(&self, id: &str) -> Option<String> {
        self.children.get(id).cloned()
    }
}

/// The event loop's state.
struct Run {
    console: Console,
    api: Api,
    sessions: Sessions,
    /// The approval task's input; the task holds the other end.
    approvals: mpsc::Sender<Input>,
    /// Text parts already printed, so an update does not print twice.
    printed_parts: HashSet<String>,
    /// Last shown status of each tool part.
    tool_states: HashMap<String, ToolStatus>,
    /// Messages written by the user (the prompt), whose text is not echoed.
    user_messages: HashSet<String>,
    /// The root session's latest model, tokens and cost.
    usage: Usage,
}

impl Run {
    /// Read events until something ends the run.
    async fn until_end(
        &mut self,
        mut stream: EventStream,
        server: &mut Server,
        signals: &mut Signals,
        run_deadline: Instant,
    ) -> End {
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                reason = signals.recv() => return End::new(reason, None),
                () = sleep_until(run_deadline) => return End::new(EndReason::TimedOut, None),
                status = server.exited() => {
                    return End::new(EndReason::OpenCodeDied, format!("OpenCode exited during the run ({status})"));
                }
            };
            let end = match event {
                Some(Ok(event)) => self.on_event(event).await,
                Some(Err(err)) => Some(
                    stream_ended(server, format!("OpenCode's event stream failed: {err}")).await,
                ),
                None => Some(
                    stream_ended(
                        server,
                        "OpenCode's event stream ended before the run finished".to_owned(),
                    )
                    .await,
                ),
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Option<End> {
        match event {
            Event::SessionCreated(info) | Event::SessionUpdated(info) => {
                if self.sessions.is_root(&info.id) {
                    self.usage.update(&info);
                }
                if let Some(parent) = &info.parent_id {
                    if self.sessions.contains(parent) && !self.sessions.is_root(&info.id) {
                        let label = info
                            .agent
                            .clone()
                            .or(info.title.clone())
                            .unwrap_or_else(|| "subagent".to_owned());
                        if !self.sessions.children.contains_key(&info.id) {
                            self.console
                                .detail(&format!("subagent session started: {label}"));
                        }
                        self.sessions.children.insert(info.id.clone(), label);
                    }
                }
            }
            Event::PermissionAsked(request) => {
                if self.sessions.contains(&request.session_id) {
                    let request = self.request_of(request);
                    // The task only ends after close, which happens after
                    // this loop; a send error means it died: end the run.
                    if self.approvals.send(Input::Asked(request)).await.is_err() {
                        return Some(End::new(
                            EndReason::InternalError,
                            "the approval task stopped (this is a bug)".to_owned(),
                        ));
                    }
                }
            }
            Event::PermissionMalformed(bad) => {
                // Fail closed: OpenCode waits on it, so deny it by id.
                let ours = bad
                    .session_id
                    .as_deref()
                    .is_none_or(|s| self.sessions.contains(s));
                if let (Some(id), true) = (&bad.request_id, ours) {
                    self.console.error(&format!(
                        "denying a malformed permission request: {}",
                        bad.reason
                    ));
                    let reply = api::Reply::Reject {
                        message: Some(
                            "denied by gatekeep: the request could not be read".to_owned(),
                        ),
                    };
                    let _ = self.api.reply_permission(id, &reply).await;
                }
            }
            Event::PermissionReplied {
                session_id,
                request_id,
                reply,
            } => {
                if self.sessions.contains(&session_id) {
                    let reply = match reply {
                        ReplyKind::Once => "once".to_owned(),
                        ReplyKind::Always => "always".to_owned(),
                        ReplyKind::Reject => "reject".to_owned(),
                        ReplyKind::Unknown(other) => other,
                    };
                    let _ = self
                        .approvals
                        .send(Input::Replied {
                            session_id,
                            request_id,
                            reply,
                        })
                        .await;
                }
            }
            Event::QuestionAsked { id, session_id, .. } => {
                // Questions wait forever; until they can be relayed, deny them.
                if let Some(id) = id {
                    if session_id
                        .as_deref()
                        .is_none_or(|s| self.sessions.contains(s))
                    {
                        self.console.status(
                            "the agent asked a question; denying it (questions are not relayed)",
                        );
                        let _ = self.api.reject_question(&id).await;
                    }
                }
            }
            Event::SessionIdle { session_id } if self.sessions.is_root(&session_id) => {
                return Some(End::new(EndReason::Finished, None));
            }
            Event::SessionStatus { session_id, status } => match status {
                SessionStatus::Idle if self.sessions.is_root(&session_id) => {
                    return Some(End::new(EndReason::Finished, None));
                }
                SessionStatus::Retry { message, .. } if self.sessions.contains(&session_id) => {
                    self.console.status(&format!(
                        "OpenCode is retrying the model call: {}",
                        message.unwrap_or_default()
                    ));
                }
                _ => {}
            },
            Event::SessionError {
                session_id,
                name,
                message,
            } => {
                let detail = match message {
                    Some(m) => format!("{name}: {m}"),
                    None => name,
                };
                match session_id.as_deref() {
                    Some(id) if self.sessions.is_root(id) => {
                        return Some(End::new(EndReason::Failed, detail));
                    }
                    Some(id) if self.sessions.contains(id) => {
                        self.console.status(&format!("subagent error: {detail}"));
                    }
                    _ => self.console.detail(&format!("OpenCode error: {detail}")),
                }
            }
            Event::MessageUpdated {
                message_id, role, ..
            } if role == "user" => {
                self.user_messages.insert(message_id);
            }
            Event::PartUpdated(part) => self.on_part(part),
            Event::InstanceDisposed { .. } => {
                return Some(End::new(
                    EndReason::Failed,
                    "OpenCode shut its instance down before the run finished".to_owned(),
                ));
            }
            _ => {}
        }
        None
    }

    fn on_part(&mut self, part: Part) {
        match part {
            Part::Text {
                session_id,
                message_id,
                part_id,
                text,
                ended,
            } => {
                if ended
                    && self.sessions.is_root(&session_id)
                    && !self.user_messages.contains(&message_id)
                    && self.printed_parts.insert(part_id)
                {
                    self.console.agent_text(&text);
                }
            }
            Part::Tool {
                session_id,
                part_id,
                tool,
                status,
                title,
                error,
                ..
            } => {
                if !self.sessions.contains(&session_id)
                    || self.tool_states.get(&part_id) == Some(&status)
                {
                    return;
                }
                let who = self
                    .sessions
                    .label(&session_id)
                    .map(|l| format!("[{l}] "))
                    .unwrap_or_default();
                match &status {
                    ToolStatus::Running => self.console.tool(&format!("{who}→ {tool}")),
                    ToolStatus::Completed => {
                        self.console
                            .tool(&format!("{who}✓ {tool}: {}", title.unwrap_or_default()));
                    }
                    ToolStatus::Error => {
                        self.console
                            .tool(&format!("{who}✗ {tool}: {}", error.unwrap_or_default()));
                    }
                    ToolStatus::Pending | ToolStatus::Unknown(_) => {}
                }
                self.tool_states.insert(part_id, status);
            }
            Part::Other { .. } => {}
        }
    }

    fn request_of(&self, p: PermissionRequest) -> Request {
        Request {
            agent: self.sessions.label(&p.session_id),
            id: p.id,
            number: 0,
            session_id: p.session_id,
            kind: p.permission,
            command: p.metadata.command,
            path: p.metadata.filepath,
            diff: p.metadata.diff,
            description: p.metadata.description,
            patterns: p.patterns,
            deadline_wall: SystemTime::now(),
            time_left: Duration::ZERO,
        }
    }
}

/// The event stream ended or failed: if the server died too, say so.
async fn stream_ended(server: &mut Server, detail: String) -> End {
    match tokio::time::timeout(DEATH_GRACE, server.exited()).await {
        Ok(status) => End::new(
            EndReason::OpenCodeDied,
            format!("OpenCode exited during the run ({status})"),
        ),
        Err(_) => End::new(EndReason::Failed, detail),
    }
}

/// The approval task and its input, handed to the teardown.
struct Approvals {
    inputs: mpsc::Sender<Input>,
    task: JoinHandle<Ledger>,
}

/// The one shutdown sequence, every step bounded (DESIGN §3):
/// 1. close the registry: every request it knows is denied and nothing more
///    is forwarded;
/// 2. `GET /permission`: reject every request of our sessions still pending
///    (also ones the registry never saw);
/// 3. reject pending questions of our sessions;
/// 4. abort the root session, then sweep once more (a request asked while
///    the first sweep ran);
/// 5. dispose the instance;
/// 6. stop the server's process group (SIGTERM, then SIGKILL).
async fn teardown(
    end: &End,
    approvals: Option<Approvals>,
    api: &Api,
    sessions: &Sessions,
    server: Server,
    console: &Console,
) -> Ledger {
    let reason = end.reason;
    if reason != EndReason::Finished {
        console.status(&format!(
            "run {}: denying what is pending and stopping OpenCode",
            reason.phrase()
        ));
    }

    // 1.
    let mut ledger = Ledger::default();
    if let Some(approvals) = approvals {
        let (done, ledger_rx) = oneshot::channel();
        let closed = approvals
            .inputs
            .send(Input::Close { reason, done })
            .await
            .is_ok();
        if closed {
            match tokio::time::timeout(STEP_TIMEOUT * 2, ledger_rx).await {
                Ok(Ok(l)) => ledger = l,
                _ => console
                    .error("the approval task did not close in time; sweeping OpenCode directly"),
            }
        }
        drop(approvals.inputs);
        approvals.task.abort();
    }

    if !server.has_exited() {
        // 2. and 3.
        sweep(api, sessions, reason).await;
        // 4.
        if let Some(root) = &sessions.root {
            if reason != EndReason::Finished {
                let _ = tokio::time::timeout(STEP_TIMEOUT, api.abort(root)).await;
            }
            sweep(api, sessions, reason).await;
        }
        // 5.
        let _ = tokio::time::timeout(STEP_TIMEOUT, api.dispose()).await;
    }
    // 6.
    let stopped = server.stop(STOP_GRACE).await;
    if stopped.killed {
        console.detail("OpenCode did not stop on SIGTERM; killed its process group");
    }
    ledger
}

/// Reject every pending permission and question of our sessions.
async fn sweep(api: &Api, sessions: &Sessions, reason: EndReason) {
    let ours = |s: &str| sessions.contains(s) || sessions.root.is_none();
    if let Ok(Ok(pending)) = tokio::time::timeout(STEP_TIMEOUT, api.list_permissions()).await {
        for request in pending.into_iter().filter(|r| ours(&r.session_id)) {
            let reply = api::Reply::Reject {
                message: Some(reason.deny_message().to_owned()),
            };
            let _ =
                tokio::time::timeout(STEP_TIMEOUT, api.reply_permission(&request.id, &reply)).await;
        }
    }
    if let Ok(Ok(questions)) = tokio::time::timeout(STEP_TIMEOUT, api.list_questions()).await {
        for question in questions.into_iter().filter(|q| ours(&q.session_id)) {
            let _ = tokio::time::timeout(STEP_TIMEOUT, api.reject_question(&question.id)).await;
        }
    }
}

/// The approval task's way to OpenCode.
struct OpenCodeReplier(Api);

impl Replier for OpenCodeReplier {
    async fn reply(&self, request_id: &str, reply: &Reply) -> Result<(), ReplyError> {
        let reply = match reply {
            Reply::Once => api::Reply::Once,
            Reply::Reject { message } => api::Reply::Reject {
                message: Some(message.clone()),
            },
        };
        self.0
            .reply_permission(request_id, &reply)
            .await
            .map_err(|e| match e {
                ApiError::PermissionNotFound(_) => ReplyError::NotFound,
                other => ReplyError::Failed(other.to_string()),
            })
    }
}

async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await;
}

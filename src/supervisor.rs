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
//!
//! The server is private to this run (fresh random password), so every
//! permission request on it was caused by this run. Requests of sessions
//! outside the run's session tree are therefore never left waiting: the tree
//! is refreshed from `GET /session`, and what still does not belong to it is
//! denied.

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
use crate::approval::{EndReason, Question, Request};
use crate::audit;
use crate::config::{ApprovalChannel, RunConfig};
use crate::console::Console;
use crate::control;
use crate::exit::Code;
use crate::gate;
use crate::opencode::api::{self, Api, ApiError, Command, ModelRef, Prompt, PromptPart, Rule};
use crate::opencode::events::{self, EventStream, EventsError};
use crate::opencode::server::{Server, ServerOptions};
use crate::opencode::wire::{
    questions_of, Event, MalformedPermission, Part, PermissionRequest, ReplyKind, SessionInfo,
    SessionStatus, ToolStatus,
};
use crate::redact::Redactor;
use crate::signals::Signals;
use crate::summary::Usage;
use crate::tail::RunSpec;
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
/// Reconnection attempts after the event stream broke while OpenCode lives.
const RECONNECT_ATTEMPTS: u32 = 5;
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
    pub started_at: SystemTime,
    /// The root OpenCode session, once there was one.
    pub session_id: Option<String>,
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

    fn opencode(what: &str, err: &dyn std::fmt::Display) -> Self {
        End::new(EndReason::OpenCodeDied, format!("{what}: {err}"))
    }
}

/// One line saying how the run ended.
#[must_use]
pub fn describe(outcome: &Outcome) -> String {
    let text = match &outcome.detail {
        Some(detail) => format!("{}: {detail}", outcome.reason.phrase()),
        None => outcome.reason.phrase().to_owned(),
    };
    // The detail may quote the agent or its provider (`session.error`).
    crate::redact::terminal_safe(&outcome.redactor.redact(&text))
}

/// The run's own secrets, the OpenCode password and the bot token: never
/// shown anywhere (a channel, the terminal, the summary, the audit log),
/// even if the agent read and echoes them.
fn secrets_of(config: &RunConfig, server: &Server) -> Redactor {
    let mut secrets = vec![server.password().expose_secret().to_owned()];
    if let ApprovalChannel::Discord(discord) = &config.approval {
        secrets.push(discord.token.expose_secret().to_owned());
    }
    Redactor::new(secrets)
}

/// Run one supervised OpenCode run. `message` is the full prompt (words and
/// stdin). Every path after OpenCode started ends in [`teardown`].
pub async fn run(config: RunConfig, message: String, mut signals: Signals) -> Outcome {
    let console = Console::new(config.verbosity);
    let clock = Clock::start(config.timeout);

    let (server, channel) = match start_up(&config, &console, &mut signals, &clock).await {
        Ok(started) => started,
        Err((code, end)) => return clock.outcome(end, Ledger::default(), None, Some(code)),
    };
    let (mut server, api) = match enforce_gates(&config, server, &console).await {
        Ok(checked) => checked,
        Err((code, end)) => return clock.outcome(end, Ledger::default(), None, Some(code)),
    };

    let begun = tokio::select! {
        begun = begin(&api, &config.spec, &config.gates, &config.workspace, &message, config.timeout) => begun,
        reason = signals.recv() => Err(End::new(reason, "stopped during start-up".to_owned())),
        () = clock.expired() => Err(End::new(EndReason::TimedOut, "timed out during start-up".to_owned())),
    };
    let (stream, root) = match begun {
        Ok(begun) => begun,
        Err(end) => {
            let ledger = teardown(&end, None, &api, &Sessions::default(), server, &console).await;
            return clock.outcome(end, ledger, None, None);
        }
    };
    console.status("run started; waiting for the agent");

    // The approval task, and the tasks that follow its notices.
    let mut notifier = Notifier::default();
    let (inputs, inputs_rx) = mpsc::channel(256);
    let redactor = secrets_of(&config, &server);
    console.redact_with(redactor.clone());
    let followers = Followers::spawn(
        &mut notifier,
        channel,
        &inputs,
        &redactor,
        &console,
        &config,
    );
    let report_to = notifier.clone();
    let deadlines = Deadlines {
        approval_timeout: config.approval_timeout,
        run_deadline: clock.deadline,
        teardown_margin: TEARDOWN_MARGIN.min(config.timeout / 4),
    };
    let approvals = tokio::spawn(
        ApprovalTask::new(OpenCodeReplier(api.clone()), notifier, deadlines)
            .with_deny_rules(config.deny.clone())
            .run(inputs_rx),
    );

    let mut run = Run::new(console.clone(), api.clone(), root, inputs.clone());
    run.relay_questions = !config.no_questions;
    let end = run
        .until_end(stream, &mut server, &mut signals, &clock)
        .await;

    let approvals = Approvals {
        inputs,
        task: approvals,
    };
    let ledger = teardown(&end, Some(approvals), &api, &run.sessions, server, &console).await;
    let mut outcome = clock.outcome(end, ledger, run.sessions.root.clone(), None);
    outcome.usage = std::mem::take(&mut run.usage);
    outcome.usage.session_id.clone_from(&run.sessions.root);
    outcome.redactor = redactor;
    report_to.send(&Notice::RunEnded(RunReport {
        outcome: describe(&outcome),
        exit_code: outcome.code.as_i32(),
        duration: outcome.duration,
        approved: outcome.ledger.approved(),
        denied: outcome.ledger.denied(),
    }));
    followers.finish(&console).await;
    console.finish();
    outcome
}

/// The tasks that follow the approval task's notices, spawned in one place:
/// the approval channel, the audit log, the local control socket and the
/// live status line.
struct Followers {
    transport: JoinHandle<()>,
    audit: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    status: JoinHandle<()>,
}

impl Followers {
    /// Subscribe each to `notifier` (before the approval task owns it) and
    /// spawn it.
    fn spawn(
        notifier: &mut Notifier,
        channel: ConnectedChannel,
        inputs: &mpsc::Sender<Input>,
        redactor: &Redactor,
        console: &Console,
        config: &RunConfig,
    ) -> Self {
        let transport = spawn_transport(
            channel,
            notifier.subscribe(),
            Decider::new(inputs.clone()),
            redactor.clone(),
            console,
        );
        let audit = config.audit_log.clone().map(|path| {
            tokio::spawn(audit::record(
                path,
                notifier.subscribe(),
                redactor.clone(),
                console.clone(),
            ))
        });
        let control = open_control(
            notifier.subscribe(),
            Decider::new(inputs.clone()),
            redactor.clone(),
            console,
        );
        let status = console.follow(notifier.subscribe());
        Self {
            transport,
            audit,
            control,
            status,
        }
    }

    /// After `RunEnded` was sent: let each finish what it must, bounded.
    async fn finish(self, console: &Console) {
        if tokio::time::timeout(TRANSPORT_DRAIN, self.transport)
            .await
            .is_err()
        {
            console.error("the approval channel did not finish its final messages in time");
        }
        // Every line of the audit log is on disk before the process exits.
        if let Some(audit) = self.audit {
            if tokio::time::timeout(AUDIT_DRAIN, audit).await.is_err() {
                console.error("the audit log could not be written in time");
            }
        }
        // The control socket is removed as its task ends on RunEnded.
        if let Some(control) = self.control {
            let _ = tokio::time::timeout(STEP_TIMEOUT, control).await;
        }
        self.status.abort();
    }
}

/// The run's time: when it started and when it must end.
struct Clock {
    started: Instant,
    started_at: SystemTime,
    deadline: Instant,
}

impl Clock {
    fn start(timeout: Duration) -> Self {
        let started = Instant::now();
        Self {
            started,
            started_at: SystemTime::now(),
            deadline: started + timeout,
        }
    }

    async fn expired(&self) {
        tokio::time::sleep_until(self.deadline.into()).await;
    }

    fn outcome(
        &self,
        end: End,
        ledger: Ledger,
        session_id: Option<String>,
        code: Option<Code>,
    ) -> Outcome {
        Outcome {
            code: code.unwrap_or_else(|| Code::for_end(end.reason)),
            reason: end.reason,
            detail: end.detail,
            ledger,
            duration: self.started.elapsed(),
            started_at: self.started_at,
            session_id,
            usage: Usage::default(),
            redactor: Redactor::default(),
        }
    }
}

/// Start OpenCode and the approval channel at once, so their start-ups
/// overlap. Nothing has reached the agent if this fails.
async fn start_up(
    config: &RunConfig,
    console: &Console,
    signals: &mut Signals,
    clock: &Clock,
) -> Result<(Server, ConnectedChannel), (Code, End)> {
    console.status(&format!(
        "starting OpenCode in {}",
        config.workspace.display()
    ));
    let env = gate::server_env(
        &config.gates,
        std::env::var("OPENCODE_CONFIG_CONTENT").ok().as_deref(),
        &[],
    )
    .map_err(|e| (Code::Usage, End::new(EndReason::Failed, e.to_string())))?;
    let both = async {
        tokio::join!(
            Server::start(server_options(config, env)),
            connect_channel(config, console)
        )
    };
    let (server, channel) = tokio::select! {
        both = both => both,
        reason = signals.recv() => return Err((Code::for_end(reason), End::new(reason, "stopped during start-up".to_owned()))),
        () = clock.expired() => return Err((Code::TimedOut, End::new(EndReason::TimedOut, "timed out during start-up".to_owned()))),
    };
    let server = server.map_err(|e| {
        (
            Code::OpenCodeFailed,
            End::opencode("OpenCode failed to start", &e),
        )
    })?;
    match channel {
        Ok(channel) => {
            console.detail(&format!("OpenCode is listening on {}", server.base_url()));
            Ok((server, channel))
        }
        Err(detail) => {
            server.stop(STOP_GRACE).await;
            Err((
                Code::ChannelUnavailable,
                End::new(EndReason::Failed, detail),
            ))
        }
    }
}

fn server_options(config: &RunConfig, env: Vec<(OsString, OsString)>) -> ServerOptions {
    ServerOptions {
        program: config.spec.opencode.clone(),
        workspace: config.workspace.clone(),
        env,
        ready_timeout: READY_TIMEOUT,
    }
}

fn client(config: &RunConfig, server: &Server) -> Result<Api, End> {
    Api::new(
        server.base_url(),
        &config.workspace,
        server.password().clone(),
        API_TIMEOUT,
    )
    .map_err(|e| End::opencode("could not talk to OpenCode", &e))
}

/// Make sure every `--gate` kind really asks, for every agent (see
/// [`gate`]). Agents of the workspace that still allow a gated kind get an
/// override too, which needs one restart of the server; if even that does
/// not make them ask, the run does not start. Nothing has reached the agent
/// yet on any path out of here.
async fn enforce_gates(
    config: &RunConfig,
    mut server: Server,
    console: &Console,
) -> Result<(Server, Api), (Code, End)> {
    let mut overridden: Vec<String> = Vec::new();
    loop {
        let api = match client(config, &server) {
            Ok(api) => api,
            Err(end) => {
                server.stop(STOP_GRACE).await;
                return Err((Code::OpenCodeFailed, end));
            }
        };
        if config.gates.is_empty() {
            return Ok((server, api));
        }
        let agents = match api.list_agents().await {
            Ok(agents) => agents,
            Err(e) => {
                server.stop(STOP_GRACE).await;
                return Err((
                    Code::OpenCodeFailed,
                    End::opencode("could not check the agents' permissions for --gate", &e),
                ));
            }
        };
        let open = gate::still_allowed(&config.gates, &agents);
        if open.is_empty() {
            return Ok((server, api));
        }
        server.stop(STOP_GRACE).await;
        let fresh: Vec<String> = open
            .iter()
            .map(|(a, _)| a.clone())
            .filter(|a| !overridden.contains(a))
            .collect();
        if fresh.is_empty() {
            let (agent, kind) = open.into_iter().next().expect("not empty");
            return Err((
                Code::Usage,
                End::new(
                    EndReason::Failed,
                    gate::GateError::StillAllowed { agent, kind }.to_string(),
                ),
            ));
        }
        overridden.extend(fresh);
        console.status(&format!(
            "restarting OpenCode so that --gate also covers agents: {}",
            overridden.join(", ")
        ));
        let existing = std::env::var("OPENCODE_CONFIG_CONTENT").ok();
        let env = gate::server_env(&config.gates, existing.as_deref(), &overridden)
            .map_err(|e| (Code::Usage, End::new(EndReason::Failed, e.to_string())))?;
        server = Server::start(server_options(config, env))
            .await
            .map_err(|e| {
                (
                    Code::OpenCodeFailed,
                    End::opencode("OpenCode failed to start", &e),
                )
            })?;
    }
}

/// The local control socket (`gatekeep pending|approve|deny` from another
/// terminal). A run without it still works; it only loses that convenience.
fn open_control(
    notices: mpsc::UnboundedReceiver<Notice>,
    decider: Decider,
    redactor: Redactor,
    console: &Console,
) -> Option<JoinHandle<()>> {
    let run_id = control::new_run_id();
    match control::Endpoint::open(&control::state_dir(), &run_id) {
        Ok(endpoint) => {
            console.detail(&format!(
                "run {run_id}: answer from another terminal with `gatekeep pending` and `gatekeep approve|deny N --run {run_id}`"
            ));
            Some(tokio::spawn(endpoint.serve(notices, decider, redactor)))
        }
        Err(err) => {
            console.error(&format!("no local control socket: {err}"));
            None
        }
    }
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

/// What the Discord run-start message says about the run.
fn run_info(config: &RunConfig) -> discord::RunInfo {
    let spec = &config.spec;
    let title = spec.title.clone().unwrap_or_else(|| {
        let mut t: String = spec.message.chars().take(80).collect();
        if spec.message.chars().count() > 80 {
            t.push('…');
        }
        t
    });
    let github =
        ["GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"].map(|k| std::env::var(k).ok());
    let ci = match github {
        [Some(server), Some(repo), Some(run)] => {
            Some(format!("{server}/{repo}/actions/runs/{run}"))
        }
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
        ConnectedChannel::Discord(mut discord) => tokio::spawn(async move {
            // Connected before OpenCode started: it learns the password now.
            discord.redact_also(&redactor);
            if let Err(err) = discord.serve(notices, decider).await {
                eprintln!("gatekeep: Discord: {err}");
            }
        }),
    }
}

/// Subscribe, pick the session (new, given, most recent, or a fork), then
/// prompt. Returns the open stream and the root session id.
async fn begin(
    api: &Api,
    spec: &RunSpec,
    gates: &[String],
    workspace: &std::path::Path,
    message: &str,
    run_time: Duration,
) -> Result<(EventStream, String), End> {
    // The session can be picked while the stream opens: nothing is asked
    // before the prompt, and only the prompt must wait for `server.connected`.
    let (stream, root) = tokio::join!(
        events::subscribe_within(api, SUBSCRIBE_TIMEOUT),
        pick_session(api, spec, gates)
    );
    let stream = stream.map_err(|e| End::opencode("could not open OpenCode's event stream", &e))?;
    let root = root?;
    let files: Vec<PromptPart> = spec
        .files
        .iter()
        .map(|f| PromptPart::file(&workspace.join(f)))
        .collect();

    if let Some(command) = &spec.command {
        // The command call only returns when the turn is over; the run is
        // followed on the event stream, so it runs on its own.
        let command = Command {
            command: command.clone(),
            arguments: message.to_owned(),
            model: spec.model.as_ref().map(ToString::to_string),
            agent: spec.agent.clone(),
            variant: spec.variant.clone(),
            parts: files,
        };
        let (api, session) = (api.clone(), root.clone());
        tokio::spawn(async move { api.command(&session, &command, run_time).await });
        return Ok((stream, root));
    }

    let mut parts = vec![PromptPart::Text {
        text: message.to_owned(),
    }];
    parts.extend(files);
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
        .map_err(|e| End::opencode("could not send the prompt", &e))?;
    Ok((stream, root))
}

/// The root session: `--session`, the most recent root for `--continue`
/// (either forked with `--fork`), or a new one with the `--gate` ruleset.
async fn pick_session(api: &Api, spec: &RunSpec, gates: &[String]) -> Result<String, End> {
    let existing = if let Some(id) = &spec.session {
        Some(id.clone())
    } else if spec.continue_last {
        let sessions = api
            .list_sessions()
            .await
            .map_err(|e| End::opencode("could not list sessions", &e))?;
        let latest = sessions
            .into_iter()
            .filter(|s| s.parent_id.is_none())
            .max_by(|a, b| updated(a).total_cmp(&updated(b)))
            .ok_or_else(|| {
                End::new(
                    EndReason::Failed,
                    "--continue: there is no session to continue".to_owned(),
                )
            })?;
        Some(latest.id)
    } else {
        None
    };
    match existing {
        Some(id) if spec.fork => Ok(api
            .fork_session(&id)
            .await
            .map_err(|e| End::opencode("could not fork the session", &e))?
            .id),
        Some(id) => Ok(id),
        None => {
            let rules: Vec<Rule> = gates.iter().map(Rule::ask).collect();
            Ok(api
                .create_session(spec.title.as_deref(), &rules)
                .await
                .map_err(|e| End::opencode("could not create the session", &e))?
                .id)
        }
    }
}

fn updated(s: &SessionInfo) -> f64 {
    s.time.and_then(|t| t.updated.or(t.created)).unwrap_or(0.0)
}

/// The sessions of this run: the root and every child (subagent) session,
/// with a label for each child.
#[derive(Debug, Default)]
struct Sessions {
    root: Option<String>,
    /// Child session id → label (agent or title).
    children: HashMap<String, String>,
}

impl Sessions {
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

    /// Learn a session if its parent is ours. Returns whether it is new.
    fn learn(&mut self, info: &SessionInfo) -> bool {
        let Some(parent) = &info.parent_id else {
            return false;
        };
        if !self.contains(parent) || self.is_root(&info.id) {
            return false;
        }
        let label = info
            .agent
            .clone()
            .or_else(|| info.title.clone())
            .unwrap_or_else(|| "subagent".to_owned());
        self.children.insert(info.id.clone(), label).is_none()
    }

    /// Learn every descendant of the root from a full session list (parents
    /// may be listed after their children).
    fn learn_all(&mut self, all: &[SessionInfo]) {
        loop {
            let mut grew = false;
            for s in all {
                grew |= self.learn(s);
            }
            if !grew {
                return;
            }
        }
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
    /// Relay the agent's questions to the approval channel (else dismiss
    /// them: `--no-questions`).
    relay_questions: bool,
}

impl Run {
    fn new(console: Console, api: Api, root: String, approvals: mpsc::Sender<Input>) -> Self {
        Self {
            console,
            api,
            sessions: Sessions {
                root: Some(root),
                children: HashMap::new(),
            },
            approvals,
            printed_parts: HashSet::new(),
            tool_states: HashMap::new(),
            user_messages: HashSet::new(),
            usage: Usage::default(),
            relay_questions: true,
        }
    }

    /// Read events until something ends the run.
    async fn until_end(
        &mut self,
        mut stream: EventStream,
        server: &mut Server,
        signals: &mut Signals,
        clock: &Clock,
    ) -> End {
        loop {
            let next = tokio::select! {
                event = stream.next() => event,
                reason = signals.recv() => return End::new(reason, None),
                () = clock.expired() => return End::new(EndReason::TimedOut, None),
                status = server.exited() => {
                    return End::new(EndReason::OpenCodeDied, format!("OpenCode exited during the run ({status})"));
                }
            };
            let end = match next {
                Some(Ok(event)) => self.on_event(event).await,
                Some(Err(err)) => match self.reconnect(server, err).await {
                    Ok(fresh) => {
                        stream = fresh;
                        None
                    }
                    Err(end) => Some(end),
                },
                None => Some(
                    stream_lost(
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

    /// The stream broke while OpenCode may still live: subscribe again, then
    /// catch up with what happened during the gap.
    async fn reconnect(
        &mut self,
        server: &mut Server,
        err: EventsError,
    ) -> Result<EventStream, End> {
        if server.has_exited() {
            return Err(
                stream_lost(server, format!("OpenCode's event stream failed: {err}")).await,
            );
        }
        self.console
            .status(&format!("event stream lost ({err}); reconnecting"));
        let mut last = err.to_string();
        for attempt in 0..RECONNECT_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt)).await;
            match events::subscribe_within(&self.api, SUBSCRIBE_TIMEOUT).await {
                Ok(stream) => {
                    self.resync().await?;
                    self.console.status("event stream back");
                    return Ok(stream);
                }
                Err(e) => last = e.to_string(),
            }
            if server.has_exited() {
                break;
            }
        }
        Err(stream_lost(
            server,
            format!("could not reconnect to OpenCode's event stream: {last}"),
        )
        .await)
    }

    /// After a gap: learn child sessions created meanwhile, then hand the
    /// approval task everything OpenCode waits on now.
    async fn resync(&mut self) -> Result<(), End> {
        if let Ok(all) = self.api.list_sessions().await {
            self.sessions.learn_all(&all);
        }
        let pending = self
            .api
            .list_permissions()
            .await
            .map_err(|e| End::opencode("could not list pending permissions", &e))?;
        let mut ours = Vec::new();
        for request in pending {
            if self.sessions.contains(&request.session_id) {
                ours.push(self.request_of(request));
            } else {
                self.deny_stranger(&request.id).await;
            }
        }
        self.send(Input::Resync(ours)).await
    }

    async fn send(&self, input: Input) -> Result<(), End> {
        // The task only ends after close, which happens after this loop.
        self.approvals.send(input).await.map_err(|_| {
            End::new(
                EndReason::InternalError,
                "the approval task stopped (this is a bug)".to_owned(),
            )
        })
    }

    async fn on_event(&mut self, event: Event) -> Option<End> {
        let result = match event {
            Event::SessionCreated(info) | Event::SessionUpdated(info) => {
                if self.sessions.is_root(&info.id) {
                    self.usage.update(&info);
                }
                if self.sessions.learn(&info) {
                    self.console.detail(&format!(
                        "subagent session started: {}",
                        self.sessions.label(&info.id).unwrap_or_default()
                    ));
                }
                Ok(())
            }
            Event::PermissionAsked(request) => self.on_permission(request).await,
            Event::PermissionMalformed(bad) => self.on_malformed(&bad).await,
            Event::PermissionReplied {
                session_id,
                request_id,
                reply,
            } => {
                let reply = match reply {
                    ReplyKind::Once => "once".to_owned(),
                    ReplyKind::Always => "always".to_owned(),
                    ReplyKind::Reject => "reject".to_owned(),
                    ReplyKind::Unknown(other) => other,
                };
                self.send(Input::Replied {
                    session_id,
                    request_id,
                    reply,
                })
                .await
            }
            Event::QuestionAsked {
                id: Some(id),
                session_id,
                raw,
            } => self.on_question(id, session_id, &raw).await,
            Event::QuestionReplied {
                session_id,
                request_id,
            } => {
                let reply = "answered".to_owned();
                self.send(Input::Replied {
                    session_id,
                    request_id,
                    reply,
                })
                .await
            }
            Event::QuestionRejected {
                session_id,
                request_id,
            } => {
                let reply = "rejected".to_owned();
                self.send(Input::Replied {
                    session_id,
                    request_id,
                    reply,
                })
                .await
            }
            Event::SessionIdle { session_id } if self.sessions.is_root(&session_id) => {
                return Some(End::new(EndReason::Finished, None));
            }
            Event::SessionStatus { session_id, status } => {
                return self.on_status(&session_id, status)
            }
            Event::SessionError {
                session_id,
                name,
                message,
            } => {
                return self.on_error(session_id.as_deref(), name, message);
            }
            Event::MessageUpdated {
                message_id, role, ..
            } if role == "user" => {
                self.user_messages.insert(message_id);
                Ok(())
            }
            Event::PartUpdated(part) => {
                self.on_part(part);
                Ok(())
            }
            Event::InstanceDisposed { .. } => Err(End::new(
                EndReason::Failed,
                "OpenCode shut its instance down before the run finished".to_owned(),
            )),
            _ => Ok(()),
        };
        result.err()
    }

    /// A `permission.asked` that could not be read: OpenCode waits on it
    /// all the same, so it must not be lost.
    async fn on_malformed(&mut self, bad: &MalformedPermission) -> Result<(), End> {
        self.console.error(&format!(
            "a permission request could not be read: {}",
            bad.reason
        ));
        match &bad.request_id {
            // Fail closed: deny it by id.
            Some(id) => {
                self.reject(id, "denied by gatekeep: the request could not be read")
                    .await;
                Ok(())
            }
            // No id to deny it by: OpenCode's own list of what waits shows
            // it (or, if that cannot be read either, the run ends and the
            // teardown denies everything).
            None => self.resync().await,
        }
    }

    /// A permission request: ours goes to the approval task; one of a session
    /// outside the run's tree is looked up once more, then denied.
    async fn on_permission(&mut self, request: PermissionRequest) -> Result<(), End> {
        if !self.sessions.contains(&request.session_id) {
            if let Ok(all) = self.api.list_sessions().await {
                self.sessions.learn_all(&all);
            }
        }
        if self.sessions.contains(&request.session_id) {
            let request = self.request_of(request);
            return self.send(Input::Asked(request)).await;
        }
        self.deny_stranger(&request.id).await;
        Ok(())
    }

    async fn deny_stranger(&self, request_id: &str) {
        self.console.detail(&format!(
            "denying {request_id}: its session is not part of this run"
        ));
        self.reject(
            request_id,
            "denied by gatekeep: not part of the supervised run",
        )
        .await;
    }

    async fn reject(&self, request_id: &str, message: &str) {
        let reply = api::Reply::Reject {
            message: Some(message.to_owned()),
        };
        let _ = self.api.reply_permission(request_id, &reply).await;
    }

    fn on_status(&self, session_id: &str, status: SessionStatus) -> Option<End> {
        match status {
            SessionStatus::Idle if self.sessions.is_root(session_id) => {
                Some(End::new(EndReason::Finished, None))
            }
            SessionStatus::Retry { message, .. } if self.sessions.contains(session_id) => {
                self.console.status(&format!(
                    "OpenCode is retrying the model call: {}",
                    message.unwrap_or_default()
                ));
                None
            }
            _ => None,
        }
    }

    fn on_error(
        &self,
        session_id: Option<&str>,
        name: String,
        message: Option<String>,
    ) -> Option<End> {
        let detail = match message {
            Some(m) => format!("{name}: {m}"),
            None => name,
        };
        match session_id {
            Some(id) if self.sessions.is_root(id) => {
                return Some(End::new(EndReason::Failed, detail))
            }
            Some(id) if self.sessions.contains(id) => {
                self.console.status(&format!("subagent error: {detail}"));
            }
            _ => self.console.detail(&format!("OpenCode error: {detail}")),
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
                    ToolStatus::Completed => self
                        .console
                        .tool(&format!("{who}✓ {tool}: {}", title.unwrap_or_default())),
                    ToolStatus::Error => self
                        .console
                        .tool(&format!("{who}✗ {tool}: {}", error.unwrap_or_default())),
                    ToolStatus::Pending | ToolStatus::Unknown(_) => {}
                }
                self.tool_states.insert(part_id, status);
            }
            Part::Other { .. } => {}
        }
    }

    /// A question of the agent's `question` tool: OpenCode waits for it
    /// forever, so it is relayed like a permission request (same deadlines,
    /// same teardown), or dismissed at once with `--no-questions`, when it
    /// cannot be read, or when it is not the run's.
    async fn on_question(
        &mut self,
        id: String,
        session_id: Option<String>,
        raw: &serde_json::Value,
    ) -> Result<(), End> {
        let session_id = session_id.unwrap_or_default();
        let questions = questions_of(raw);
        match questions {
            Some(questions) if self.relay_questions && self.sessions.contains(&session_id) => {
                let questions = questions
                    .into_iter()
                    .map(|q| Question {
                        header: q.header,
                        text: q.question,
                        options: q
                            .options
                            .into_iter()
                            .map(|o| (o.label, o.description))
                            .collect(),
                        multiple: q.multiple,
                        custom: q.custom,
                    })
                    .collect();
                let request = Request {
                    agent: self.sessions.label(&session_id),
                    id,
                    number: 0,
                    session_id,
                    kind: "question".to_owned(),
                    patterns: Vec::new(),
                    command: None,
                    path: None,
                    diff: None,
                    description: None,
                    deadline_wall: SystemTime::now(),
                    time_left: Duration::ZERO,
                    questions,
                };
                self.send(Input::Asked(request)).await
            }
            _ => {
                self.console
                    .status("the agent asked a question; dismissing it");
                let _ = self.api.reject_question(&id).await;
                Ok(())
            }
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
            questions: Vec::new(),
        }
    }
}

/// The event stream is gone for good: if the server died too, say so.
async fn stream_lost(server: &mut Server, detail: String) -> End {
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
/// 2. `GET /permission`: reject everything still pending on the server (it
///    is private to this run), also requests the registry never saw, and
///    reject pending questions;
/// 3. abort the root session, then sweep once more (a request asked while
///    the first sweep ran);
/// 4. dispose the instance;
/// 5. stop the server's process group (SIGTERM, then SIGKILL).
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
    let ledger = match approvals {
        Some(approvals) => close_approvals(approvals, reason, console).await,
        None => Ledger::default(),
    };
    if !server.has_exited() {
        // 2.
        sweep(api, reason).await;
        // 3.
        if let Some(root) = &sessions.root {
            if reason != EndReason::Finished {
                let _ = tokio::time::timeout(STEP_TIMEOUT, api.abort(root)).await;
            }
            sweep(api, reason).await;
        }
        // 4.
        let _ = tokio::time::timeout(STEP_TIMEOUT, api.dispose()).await;
    }
    // 5.
    if server.stop(STOP_GRACE).await.killed {
        console.detail("OpenCode did not stop on SIGTERM; killed its process group");
    }
    ledger
}

/// Close the registry and collect the ledger. Bounded: if the task does not
/// answer, the sweep that follows still denies everything on the server.
async fn close_approvals(approvals: Approvals, reason: EndReason, console: &Console) -> Ledger {
    let (done, ledger) = oneshot::channel();
    let mut result = Ledger::default();
    if approvals
        .inputs
        .send(Input::Close { reason, done })
        .await
        .is_ok()
    {
        match tokio::time::timeout(STEP_TIMEOUT * 2, ledger).await {
            Ok(Ok(ledger)) => result = ledger,
            _ => console
                .error("the approval task did not close in time; denying on the server directly"),
        }
    }
    approvals.task.abort();
    result
}

/// Reject every pending permission and question on the server.
async fn sweep(api: &Api, reason: EndReason) {
    if let Ok(Ok(pending)) = tokio::time::timeout(STEP_TIMEOUT, api.list_permissions()).await {
        for request in pending {
            let reply = api::Reply::Reject {
                message: Some(reason.deny_message().to_owned()),
            };
            let _ =
                tokio::time::timeout(STEP_TIMEOUT, api.reply_permission(&request.id, &reply)).await;
        }
    }
    if let Ok(Ok(questions)) = tokio::time::timeout(STEP_TIMEOUT, api.list_questions()).await {
        for question in questions {
            let _ = tokio::time::timeout(STEP_TIMEOUT, api.reject_question(&question.id)).await;
        }
    }
}

/// The approval task's way to OpenCode.
struct OpenCodeReplier(Api);

impl Replier for OpenCodeReplier {
    async fn reply(&self, request_id: &str, reply: &Reply) -> Result<(), ReplyError> {
        let result = match reply {
            Reply::Once => self.0.reply_permission(request_id, &api::Reply::Once).await,
            Reply::Reject { message } => {
                let reply = api::Reply::Reject {
                    message: Some(message.clone()),
                };
                self.0.reply_permission(request_id, &reply).await
            }
            Reply::Answer { answers } => self.0.reply_question(request_id, answers).await,
            Reply::Dismiss => self.0.reject_question(request_id).await,
        };
        result.map_err(|e| match e {
            ApiError::PermissionNotFound(_) | ApiError::QuestionNotFound(_) => ReplyError::NotFound,
            other => ReplyError::Failed(other.to_string()),
        })
    }
}

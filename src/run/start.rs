//! Start-up: everything before the first event of the run is read.
//!
//! OpenCode and the approval channel start at the same time so their
//! start-ups overlap; `--gate` is verified against every agent's merged
//! rules; then the event stream is opened while the session is picked (and,
//! with no `--gate`, while the server is judged), and only the prompt waits
//! for all of them and `server.connected`. Nothing has reached the agent on
//! any error path out of here before [`begin`] prompts.

use std::ffi::OsString;
use std::time::Duration;

use super::{Clock, End, API_TIMEOUT, READY_TIMEOUT, STOP_GRACE, SUBSCRIBE_TIMEOUT};

/// How long the guard plugin may take to report after the session exists.
const GUARD_WAIT: Duration = Duration::from_secs(2);
use crate::approval::EndReason;
use crate::config::{ApprovalChannel, Isolation, RunConfig};
use crate::console::Console;
use crate::exit::Code;
use crate::opencode::api::{Api, Command, ModelRef, Prompt, PromptPart, Rule};
use crate::opencode::compat::{self, Support};
use crate::opencode::events::{self, EventStream};
use crate::opencode::gate;
use crate::opencode::guard::Guard;
use crate::opencode::server::{Sandbox, Server, ServerError, ServerOptions};
use crate::opencode::wire::SessionInfo;
use crate::sandbox::{copy_config_dirs, Layout, Places};
use crate::signals::Signals;
use crate::surface::Snapshot;
use crate::tail::RunSpec;
use crate::transport::discord;

/// Start OpenCode and the approval channel at once, so their start-ups
/// overlap. Nothing has reached the agent if this fails.
pub(super) async fn start_up(
    config: &RunConfig,
    guard: &Guard,
    console: &Console,
    signals: &mut Signals,
    clock: &Clock,
) -> Result<(Server, ConnectedChannel), (Code, End)> {
    if let (true, Some(policy)) = (config.policy_uncommitted, &config.policy_file) {
        console.error(&format!(
            "WARNING: the policy file {} has changes not committed to git: this run's rules \
             are not the reviewed ones",
            policy.display()
        ));
    }
    for caveat in config.caveats() {
        console.error(&format!("WARNING: {caveat}"));
    }
    console.status(&format!(
        "starting OpenCode in {}",
        config.workspace.display()
    ));
    let env = server_env(config, guard, &[])?;
    let options = server_options(config, env, guard)?;
    let both = async { tokio::join!(Server::start(options), connect_channel(config, console)) };
    let (server, channel) = tokio::select! {
        both = both => both,
        reason = signals.recv() => return Err((Code::for_end(reason), End::new(reason, "stopped during start-up".to_owned()))),
        () = clock.expired() => return Err((Code::TimedOut, End::new(EndReason::TimedOut, "timed out during start-up".to_owned()))),
    };
    let server = server.map_err(|e| not_started(&e))?;
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

/// Why OpenCode did not start, with its exit code: a box the host does not
/// allow is a set-up the user fixes (exit 2), anything else is OpenCode's.
fn not_started(err: &ServerError) -> (Code, End) {
    let code = match err {
        ServerError::NoBox { .. } => Code::Usage,
        _ => Code::OpenCodeFailed,
    };
    (code, End::opencode("OpenCode failed to start", err))
}

/// The server's environment: `--gate` for every agent (and `overridden`
/// ones of the workspace), and the guard plugin.
fn server_env(
    config: &RunConfig,
    guard: &Guard,
    overridden: &[String],
) -> Result<Vec<(OsString, OsString)>, (Code, End)> {
    let plugins = [guard.plugin_spec()];
    let existing = std::env::var("OPENCODE_CONFIG_CONTENT").ok();
    gate::server_env(&config.gates, existing.as_deref(), overridden, &plugins)
        .map_err(|e| (Code::Usage, End::new(EndReason::Failed, e.to_string())))
}

fn server_options(
    config: &RunConfig,
    env: Vec<(OsString, OsString)>,
    guard: &Guard,
) -> Result<ServerOptions, (Code, End)> {
    guard.reset();
    let sandbox = match &config.isolation {
        Isolation::Boxed { program, share } => {
            let mut places = Places::from_env(&config.workspace, &config.spec.opencode);
            places.run_dirs = vec![guard.dir().to_owned()];
            places.share.clone_from(share);
            if let Some(path) = places.unsafe_share() {
                let detail = format!(
                    "{} contains what the agent's box hides or keeps read-only (your home, \
                     config, /tmp, /run, gatekeep's state): share something narrower, or move \
                     the workspace out of it",
                    path.display()
                );
                return Err((Code::Usage, End::new(EndReason::Failed, detail)));
            }
            copy_config_dirs(&mut places, guard.dir()).map_err(|e| {
                let detail = format!("could not prepare the agent's box: {e}");
                (Code::Usage, End::new(EndReason::Failed, detail))
            })?;
            Some(Sandbox {
                program: program.clone(),
                layout: Layout::of(&places),
            })
        }
        Isolation::Off => None,
    };
    Ok(ServerOptions {
        program: config.spec.opencode.clone(),
        workspace: config.workspace.clone(),
        env,
        ready_timeout: READY_TIMEOUT,
        sandbox,
    })
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

/// Whether the server was judged yet (see `check_compat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compat {
    /// Judged, and it is one gatekeep drives.
    Judged,
    /// To be judged by [`begin`], alongside its first calls: with no
    /// `--gate`, no restart can follow the verdict, and each round trip
    /// before the prompt waits behind OpenCode's own start-up work (issue
    /// 16).
    AtBegin,
}

/// Make sure that every `--gate` kind really asks, for every agent (see
/// [`gate`]), on a server gatekeep drives (see `check_compat`). Agents of
/// the workspace that still allow a gated kind get an override too, which
/// needs one restart of the server; if even that does not make them ask,
/// the run does not start. With no `--gate` nothing is asked here, and the
/// server is judged by [`begin`]. Nothing has reached the agent yet on any
/// path out of here.
pub(super) async fn enforce_gates(
    config: &RunConfig,
    guard: &Guard,
    mut server: Server,
    console: &Console,
) -> Result<(Server, Api, Compat), (Code, End)> {
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
            return Ok((server, api, Compat::AtBegin));
        }
        if let Err(refused) = check_compat(&api, console).await {
            server.stop(STOP_GRACE).await;
            return Err(refused);
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
            return Ok((server, api, Compat::Judged));
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
        let env = server_env(config, guard, &overridden)?;
        server = Server::start(server_options(config, env, guard)?)
            .await
            .map_err(|e| not_started(&e))?;
    }
}

/// The release OpenCode reports is inside the supported range, and it
/// still serves the routes gatekeep drives (docs/design.md, "OpenCode
/// versions"). Both asked at once; nothing has reached the agent yet.
async fn check_compat(api: &Api, console: &Console) -> Result<(), (Code, End)> {
    let (version, routes) = tokio::join!(api.version(), api.permission_route_status());
    let support = compat::judge(version.ok().flatten().as_deref(), routes).map_err(|e| {
        (
            Code::OpenCodeFailed,
            End::new(EndReason::Failed, e.to_string()),
        )
    })?;
    match &support {
        Support::Tested(v) => console.detail(&format!("OpenCode {v}")),
        Support::Newer(v) => console.status(&format!(
            "OpenCode {v} is newer than any release gatekeep was tested with ({}); going on",
            compat::NEWEST_TESTED
        )),
        Support::Unknown => console.detail("OpenCode did not say which release it is"),
    }
    if !matches!(support, Support::Tested(_)) {
        warn_of_saved_approvals(api, console).await;
    }
    Ok(())
}

/// Saved approvals of the project (the newer `/api` protocol), said loudly.
/// Measured on the tested releases: the agent's requests do not go through
/// that protocol, so they are never applied to what gatekeep answers — and
/// reading them there costs OpenCode about a second of CPU per run (the
/// newer stack starts on first use; docs/benchmarks.md), so only a release
/// gatekeep was not tested with, which may apply them without asking
/// anyone, is asked.
async fn warn_of_saved_approvals(api: &Api, console: &Console) {
    if let Some(n @ 1..) = api.saved_approvals().await {
        console.error(&format!(
            "OpenCode keeps {n} saved approval(s) for this project (GET /api/permission/saved); \
             this release may apply them without asking anyone: review and remove them \
             (DELETE /api/permission/saved/{{id}})"
        ));
    }
}

/// The guard plugin ran when the instance started (the session exists by
/// now). If it did not (`OPENCODE_PURE`, a plugin error, an OpenCode that
/// loads no plugin from a file), the agent's commands could read OpenCode's
/// password and answer their own requests: the run is refused before the
/// prompt.
async fn check_guard(guard: &Guard) -> Result<(), (Code, End)> {
    if guard.loaded_within(GUARD_WAIT).await {
        return Ok(());
    }
    let pure = std::env::var_os("OPENCODE_PURE").is_some_and(|v| !v.is_empty());
    let fix = if pure {
        "OPENCODE_PURE is set: unset it for gatekeep runs"
    } else {
        "run `gatekeep doctor`, and look at OpenCode's log for a plugin error"
    };
    Err((
        Code::Usage,
        End::new(
            EndReason::Failed,
            format!(
                "OpenCode did not load gatekeep's guard plugin within {}s, so the agent's \
                 commands could read OpenCode's password and answer their own requests; \
                 nothing was prompted ({fix})",
                GUARD_WAIT.as_secs()
            ),
        ),
    ))
}

/// The approval channel, connected.
pub(super) enum ConnectedChannel {
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
            discord::connect(d.clone(), run_info(config), console)
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
        policy: config.policy_file.as_ref().map(|p| {
            let name = p.strip_prefix(&config.workspace).unwrap_or(p);
            (name.display().to_string(), config.policy_uncommitted)
        }),
        caveats: config.caveats(),
    }
}

/// Why [`begin`] did not prompt.
pub(super) enum NotBegun {
    /// The server is not one gatekeep drives: nothing was prompted, and a
    /// session made for the run was deleted again. The server is to be
    /// stopped, with this exit code.
    Refused(Code, End),
    /// Anything else: the ordinary teardown follows.
    Failed(End),
}

impl From<End> for NotBegun {
    fn from(end: End) -> Self {
        NotBegun::Failed(end)
    }
}

/// Subscribe, pick the session (new, given, most recent, or a fork) and,
/// if not done yet, judge the server, all at once; then prompt. Returns the
/// open stream and the root session id.
pub(super) async fn begin(
    api: &Api,
    config: &RunConfig,
    message: &str,
    compat: Compat,
    guard: &Guard,
    console: &Console,
) -> Result<(EventStream, String, Snapshot), NotBegun> {
    let spec = &config.spec;
    // Nothing is asked before the prompt, so the session can be picked and
    // the server judged while the stream opens: only the prompt must wait
    // for the verdict, the guard and `server.connected`.
    let judged = async {
        match compat {
            Compat::Judged => Ok(()),
            Compat::AtBegin => check_compat(api, console).await,
        }?;
        check_guard(guard).await
    };
    let (stream, picked, judged) = tokio::join!(
        events::subscribe_within(api, SUBSCRIBE_TIMEOUT),
        pick_session(api, spec, &config.gates),
        judged
    );
    if let Err((code, end)) = judged {
        if let Ok(Picked { id, made: true }) = &picked {
            let _ = tokio::time::timeout(api.timeout(), api.delete_session(id)).await;
        }
        return Err(NotBegun::Refused(code, end));
    }
    let stream = stream.map_err(|e| End::opencode("could not open OpenCode's event stream", &e))?;
    let root = picked?.id;
    // The policy surface as the agent finds it: OpenCode has loaded its
    // configuration (and written what it writes at start) by now, and the
    // agent has not been prompted yet.
    let baseline = config.surface.snapshot();
    let files: Vec<PromptPart> = spec
        .files
        .iter()
        .map(|f| PromptPart::file(&config.workspace.join(f)))
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
        let run_time = config.timeout;
        tokio::spawn(async move { api.command(&session, &command, run_time).await });
        return Ok((stream, root, baseline));
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
    Ok((stream, root, baseline))
}

/// The run's root session, and whether gatekeep made it (a new one or a
/// fork) rather than found it.
struct Picked {
    id: String,
    made: bool,
}

/// The root session: `--session`, the most recent root for `--continue`
/// (either forked with `--fork`), or a new one with the `--gate` ruleset.
async fn pick_session(api: &Api, spec: &RunSpec, gates: &[String]) -> Result<Picked, End> {
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
    let (id, made) = match existing {
        Some(id) if spec.fork => (
            api.fork_session(&id)
                .await
                .map_err(|e| End::opencode("could not fork the session", &e))?
                .id,
            true,
        ),
        Some(id) => (id, false),
        None => {
            let rules: Vec<Rule> = gates.iter().map(Rule::ask).collect();
            (
                api.create_session(spec.title.as_deref(), &rules)
                    .await
                    .map_err(|e| End::opencode("could not create the session", &e))?
                    .id,
                true,
            )
        }
    };
    Ok(Picked { id, made })
}

fn updated(s: &SessionInfo) -> f64 {
    s.time.and_then(|t| t.updated.or(t.created)).unwrap_or(0.0)
}

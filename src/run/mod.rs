//! One supervised run, from start to teardown, one file per step:
//!
//! 1. [`start`]: `opencode serve` and the approval channel start at once;
//!    `--gate` is checked against every agent; the event stream is opened
//!    (and has delivered `server.connected`) before the session is prompted.
//! 2. [`followers`]: the tasks that follow the approval task's notices (the
//!    approval channel, the audit log, the local socket, the status line),
//!    spawned in one place.
//! 3. [`events`]: the event loop. It reads OpenCode's events, hands what
//!    OpenCode asks to the approval task through the bridge
//!    ([`crate::opencode::bridge`]), prints the agent's progress, and finds
//!    the reason the run ends. [`sessions`] is the run's session tree.
//! 4. [`teardown`]: the one shutdown sequence, every step bounded; the
//!    run's last messages go out as soon as its outcome is final.
//!
//! Start-up order matters (docs/design.md, "Start-up"): the approval channel
//! is ready before anything reaches the agent, and nothing is prompted
//! before the event stream is live.

mod events;
mod followers;
mod sessions;
mod start;
mod teardown;
mod watch;

use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tokio::sync::mpsc;

use crate::approval::ledger::Ledger;
use crate::approval::messages::{Notice, Notifier, RunReport};
use crate::approval::rules::PolicyFiles;
use crate::approval::task::{ApprovalTask, Deadlines};
use crate::approval::EndReason;
use crate::config::{ApprovalChannel, RunConfig};
use crate::console::Console;
use crate::exit::Code;
use crate::opencode::api::Api;
use crate::opencode::bridge::OpenCodeReplier;
use crate::opencode::guard::Guard;
use crate::opencode::server::Server;
use crate::records::summary::Usage;
use crate::redact::Redactor;
use crate::signals::Signals;

use events::EventLoop;
use followers::Followers;
use teardown::{Approvals, Closed};

/// How long `opencode serve` may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on every OpenCode API call. Generous: the first calls for a
/// workspace set OpenCode's instance up, which on a busy host (several runs
/// starting at once) was measured to take over 10 s.
const API_TIMEOUT: Duration = Duration::from_secs(30);
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
/// OpenCode sends `server.heartbeat` every 10 s: this long without any
/// event means the stream is dead even if the connection is not
/// (docs/design.md, "OpenCode facts relied on").
const STREAM_SILENCE: Duration = Duration::from_secs(30);
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
pub(crate) struct End {
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
    console.ring_on_requests(config.bell);
    let clock = Clock::start(config.timeout);
    // Keeps OpenCode's password from the agent's tools; lives as long as
    // the run (docs/design.md, "Nothing but gatekeep answers"). Not
    // optional: without it the agent could answer its own requests.
    let guard = match Guard::install() {
        Ok(guard) => guard,
        Err(err) => {
            let end = End::new(
                EndReason::Failed,
                format!(
                    "could not write gatekeep's guard plugin into {}: {err} (make the \
                     temporary directory writable, or point TMPDIR at one that is)",
                    std::env::temp_dir().display()
                ),
            );
            return clock.outcome(end, Ledger::default(), None, Some(Code::Usage));
        }
    };

    let (server, channel) =
        match start::start_up(&config, &guard, &console, &mut signals, &clock).await {
            Ok(started) => started,
            Err((code, end)) => return clock.outcome(end, Ledger::default(), None, Some(code)),
        };
    let (mut server, api, compat) =
        match start::enforce_gates(&config, &guard, server, &console).await {
            Ok(checked) => checked,
            Err((code, end)) => return clock.outcome(end, Ledger::default(), None, Some(code)),
        };

    let begun = tokio::select! {
        begun = start::begin(&api, &config, &message, compat, &guard, &console) => begun,
        reason = signals.recv() => Err(End::new(reason, "stopped during start-up".to_owned()).into()),
        () = clock.expired() => Err(End::new(EndReason::TimedOut, "timed out during start-up".to_owned()).into()),
    };
    let (stream, root, baseline) = match begun {
        Ok(begun) => begun,
        Err(why) => return not_begun(why, &api, server, &console, &clock).await,
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
    // The event loop hears of an intrusion the moment the task sees it.
    let mut alarms = notifier.subscribe();
    let deadlines = Deadlines {
        approval_timeout: config.approval_timeout,
        run_deadline: clock.deadline,
        teardown_margin: TEARDOWN_MARGIN.min(config.timeout / 4),
    };
    let approvals = tokio::spawn(
        ApprovalTask::new(OpenCodeReplier::new(api.clone()), notifier, deadlines)
            .with_deny_rules(config.deny.clone())
            .with_policy(
                config.require.clone(),
                PolicyFiles::new(&config.workspace, &config.protected),
            )
            .run(inputs_rx),
    );

    let watch = watch::Watch::of_run(&config, baseline);
    let mut run = EventLoop::new(console.clone(), api.clone(), root, inputs.clone(), watch);
    run.relay_questions = !config.no_questions;
    let end = run
        .until_end(stream, &mut server, &mut signals, &clock, &mut alarms)
        .await;
    run.report_skipped();

    let approvals = Approvals {
        inputs,
        task: approvals,
    };
    let Closed { ledger, remaining } =
        teardown::close(&end, Some(approvals), server, &console).await;
    let root = run.sessions.root().to_owned();
    let mut outcome = clock.outcome(end, ledger, Some(root.clone()), None);
    outcome.usage = std::mem::take(&mut run.usage);
    outcome.usage.session_id = Some(root.clone());
    outcome.redactor = redactor;
    report_to.send(&Notice::RunEnded(RunReport {
        outcome: describe(&outcome),
        exit_code: outcome.code.as_i32(),
        duration: outcome.duration,
        approved: outcome.ledger.approved(),
        denied: outcome.ledger.denied(),
    }));
    // How the run ended is final once the registry is closed: its last
    // messages overlap OpenCode's stop (see `teardown::close`).
    tokio::join!(
        remaining.stop(&api, Some(&root), &console),
        followers.finish(&console)
    );
    run.last_check();
    console.detail(&cpu_used());
    console.finish();
    outcome
}

/// The run ended before it began: a refused server is stopped at once (it
/// is not one gatekeep drives), any other through the teardown.
async fn not_begun(
    why: start::NotBegun,
    api: &Api,
    server: Server,
    console: &Console,
    clock: &Clock,
) -> Outcome {
    match why {
        start::NotBegun::Refused(code, end) => {
            server.stop(STOP_GRACE).await;
            clock.outcome(end, Ledger::default(), None, Some(code))
        }
        start::NotBegun::Failed(end) => {
            let Closed { ledger, remaining } = teardown::close(&end, None, server, console).await;
            remaining.stop(api, None, console).await;
            clock.outcome(end, ledger, None, None)
        }
    }
}

/// What the run cost in CPU, gatekeep's share apart from OpenCode's (every
/// child is waited for by now): the overhead a user pays for supervision,
/// measured where it is paid (docs/benchmarks.md).
fn cpu_used() -> String {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike as _;
    let ms =
        |who| getrusage(who).map_or(0, |u| (u.user_time() + u.system_time()).num_milliseconds());
    format!(
        "CPU used: gatekeep {} ms, OpenCode and its tools {} ms",
        ms(UsageWho::RUSAGE_SELF),
        ms(UsageWho::RUSAGE_CHILDREN)
    )
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

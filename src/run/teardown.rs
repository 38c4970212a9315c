//! The one shutdown sequence, read top to bottom, every step bounded.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{End, STEP_TIMEOUT, STOP_GRACE};
use crate::approval::ledger::Ledger;
use crate::approval::messages::Input;
use crate::approval::EndReason;
use crate::console::Console;
use crate::opencode::api::{self, Api};
use crate::opencode::server::Server;
use crate::platform;

/// The approval task and its input, handed to the teardown.
pub(super) struct Approvals {
    pub(super) inputs: mpsc::Sender<Input>,
    pub(super) task: JoinHandle<Ledger>,
}

/// The one shutdown sequence, every step bounded (docs/design.md, "Teardown"):
/// 1. close the registry: every request it knows is denied and nothing more
///    is forwarded ([`close`]);
/// 2. `GET /permission`: reject everything still pending on the server (it
///    is private to this run), also requests the registry never saw, and
///    reject pending questions;
/// 3. abort the root session, then sweep once more (a request asked while
///    the first sweep ran);
/// 4. dispose the instance;
/// 5. stop the server's process group (SIGTERM, then SIGKILL);
/// 6. kill whatever the agent daemonised out of that group (it stayed below
///    gatekeep, see `platform::harden`).
///
/// Steps 2–6 are [`Remaining::stop`]. Nothing they do can change how the run
/// ended, so the run's last messages go out as soon as step 1 is done and
/// overlap them: the exit waits for the longer of the two, not their sum
/// (over Discord, one round trip to its API).
///
/// A run that finished with nothing open in the registry goes from 1 to 5:
/// nothing waits for an answer, and every call to OpenCode right after a
/// turn waits behind its background work (0.2–0.9 s of CPU, which `opencode
/// run` never pays because it exits at once). Stopping the group is itself
/// the strictest denial: nothing still pending on the server can run once
/// OpenCode is gone (docs/design.md, "Teardown").
pub(super) async fn close(
    end: &End,
    approvals: Option<Approvals>,
    server: Server,
    console: &Console,
) -> Closed {
    let reason = end.reason;
    if reason == EndReason::Intruded {
        return Closed {
            ledger: cut_off(approvals, server, console).await,
            remaining: Remaining(None),
        };
    }
    if reason != EndReason::Finished {
        console.status(&format!(
            "run {}: denying what is pending and stopping OpenCode",
            reason.phrase()
        ));
    }
    // 1.
    let closed = match approvals {
        Some(approvals) => close_approvals(approvals, reason, console).await,
        None => None,
    };
    let nothing_waits = reason == EndReason::Finished
        && closed
            .as_ref()
            .is_some_and(|ledger| !ledger.had_open_at_end());
    Closed {
        ledger: closed.unwrap_or_default(),
        remaining: Remaining(Some(Stopping {
            server,
            reason,
            sweep: !nothing_waits,
        })),
    }
}

/// The registry is closed: how every request of the run ended is final.
pub(super) struct Closed {
    pub(super) ledger: Ledger,
    /// What is left, on the server's side.
    pub(super) remaining: Remaining,
}

/// Steps 2–6; nothing once the server is stopped already (after an
/// intrusion).
pub(super) struct Remaining(Option<Stopping>);

struct Stopping {
    server: Server,
    reason: EndReason,
    /// Whether steps 2–4 run (see [`close`]).
    sweep: bool,
}

impl Remaining {
    /// Steps 2–6 (see [`close`]).
    pub(super) async fn stop(self, api: &Api, root: Option<&str>, console: &Console) {
        let Some(Stopping {
            server,
            reason,
            sweep: needed,
        }) = self.0
        else {
            return;
        };
        if needed && !server.has_exited() {
            // 2.
            sweep(api, reason).await;
            // 3.
            if let Some(root) = root {
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
        // 6.
        kill_leftovers(console).await;
    }
}

/// Something other than gatekeep answers OpenCode's requests: it holds the
/// password, so nothing sent to the server can be trusted to hold. The
/// server's process group is killed first, before anything else can run;
/// then the registry is closed (the replies it owes go nowhere, and nothing
/// is left to approve).
async fn cut_off(approvals: Option<Approvals>, server: Server, console: &Console) -> Ledger {
    let seen = std::time::Instant::now();
    server.stop(std::time::Duration::ZERO).await;
    kill_leftovers(console).await;
    console.error(&format!(
        "OpenCode's processes were killed {} ms after the intrusion was seen",
        seen.elapsed().as_millis()
    ));
    match approvals {
        Some(approvals) => close_approvals(approvals, EndReason::Intruded, console)
            .await
            .unwrap_or_default(),
        None => Ledger::default(),
    }
}

/// Close the registry and collect the ledger; `None` if the task did not
/// close. Bounded: if the task does not answer, the sweep that follows still
/// denies everything on the server.
async fn close_approvals(
    approvals: Approvals,
    reason: EndReason,
    console: &Console,
) -> Option<Ledger> {
    let (done, ledger) = oneshot::channel();
    let mut result = None;
    if approvals
        .inputs
        .send(Input::Close { reason, done })
        .await
        .is_ok()
    {
        match tokio::time::timeout(STEP_TIMEOUT * 2, ledger).await {
            Ok(Ok(ledger)) => result = Some(ledger),
            _ => console
                .error("the approval task did not close in time; denying on the server directly"),
        }
    }
    approvals.task.abort();
    result
}

/// Reject every pending permission and question on the server. Both lists
/// are read at once: right after a turn OpenCode is often busy (a title, a
/// summary), and every round trip then waits its turn.
async fn sweep(api: &Api, reason: EndReason) {
    let (permissions, questions) = tokio::join!(
        tokio::time::timeout(STEP_TIMEOUT, api.list_permissions()),
        tokio::time::timeout(STEP_TIMEOUT, api.list_questions()),
    );
    let reply = api::Reply::Reject {
        message: Some(reason.deny_message().to_owned()),
    };
    for request in permissions.ok().and_then(Result::ok).unwrap_or_default() {
        let _ = tokio::time::timeout(STEP_TIMEOUT, api.reply_permission(&request.id, &reply)).await;
    }
    for question in questions.ok().and_then(Result::ok).unwrap_or_default() {
        let _ = tokio::time::timeout(STEP_TIMEOUT, api.reject_question(&question.id)).await;
    }
}

/// Step 6, also after an intrusion.
async fn kill_leftovers(console: &Console) {
    let killed = platform::kill_leftovers().await;
    if killed > 0 {
        console.detail(&format!(
            "killed {killed} process(es) the agent left running outside OpenCode's process group"
        ));
    }
}

//! The tasks that follow the approval task's notices, spawned in one
//! place: the approval channel (terminal or Discord), the audit log, the
//! local socket (`gatekeep pending|approve|deny`) and the live status line.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::start::ConnectedChannel;
use super::{AUDIT_DRAIN, STEP_TIMEOUT, TRANSPORT_DRAIN};
use crate::approval::messages::{Decider, Input, Notice, Notifier};
use crate::config::RunConfig;
use crate::console::Console;
use crate::records::audit;
use crate::redact::Redactor;
use crate::transport::{local, terminal};

/// The tasks that follow the approval task's notices, spawned in one place:
/// the approval channel, the audit log, the local control socket and the
/// live status line.
pub(super) struct Followers {
    transport: JoinHandle<()>,
    audit: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    status: JoinHandle<()>,
}

impl Followers {
    /// Subscribe each to `notifier` (before the approval task owns it) and
    /// spawn it.
    pub(super) fn spawn(
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
    pub(super) async fn finish(self, console: &Console) {
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

/// The local control socket (`gatekeep pending|approve|deny` from another
/// terminal). A run without it still works; it only loses that convenience.
fn open_control(
    notices: mpsc::UnboundedReceiver<Notice>,
    decider: Decider,
    redactor: Redactor,
    console: &Console,
) -> Option<JoinHandle<()>> {
    let run_id = local::new_run_id();
    match local::Endpoint::open(&local::state_dir(), &run_id) {
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
            crate::transport::local_user(crate::approval::Channel::Terminal),
            console.clone(),
        )),
        ConnectedChannel::Discord(mut discord) => {
            let console = console.clone();
            tokio::spawn(async move {
                // Connected before OpenCode started: it learns the password now.
                discord.redact_also(&redactor);
                if let Err(err) = discord.serve(notices, decider, console.clone()).await {
                    console.error(&format!("Discord: {err}"));
                }
            })
        }
    }
}

//! The messages into and out of the approval task, beside the task that
//! reads them: [`Input`] is everything that can change a request,
//! [`Notice`] is what every follower (transports, audit log, status line)
//! is told, and [`Decider`] is a transport's handle for deciding.
//!
//! They live here, in `approval/`, so that the arrows point one way: the
//! OpenCode bridge and the transports import these types; nothing in
//! `approval/` imports them back.

use tokio::sync::{mpsc, oneshot};

use super::ledger::Ledger;
use super::registry::Intrusion;
use super::{Actor, Ask, Echo, EndReason, Progress, Settlement, Shown, Verdict};

/// Messages into the approval task.
#[derive(Debug)]
pub enum Input {
    /// OpenCode asked (a permission or a question); the registry numbers
    /// it and gives it a deadline.
    Asked(Ask),
    /// OpenCode's echo of a reply, whoever sent it.
    Replied {
        session_id: String,
        request_id: String,
        echo: Echo,
    },
    /// The event stream was down and is back: every request OpenCode waits
    /// on now. Unknown ones are registered; known open ones missing from it
    /// were answered during the gap.
    Resync(Vec<Ask>),
    /// A human decided, through some transport.
    Decide {
        number: u32,
        verdict: Verdict,
        actor: Actor,
        ack: oneshot::Sender<DecideOutcome>,
    },
    /// A transport could not show or relay the request.
    ChannelFailed { number: u32, detail: String },
    /// A decision attempt refused by a transport (unauthorized, wrong
    /// channel); passed on to every subscriber for the record.
    Refused {
        number: Option<u32>,
        actor: Actor,
        why: String,
    },
    /// The run is ending: deny everything pending, then stop.
    Close {
        reason: EndReason,
        done: oneshot::Sender<Ledger>,
    },
}

/// What the approval task tells every transport.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A new request to show. It is already registered, so a decision on
    /// its number is accepted from now on.
    Show(Shown),
    /// The request reached its final state; update what was shown.
    Settled {
        number: u32,
        request_id: String,
        settlement: Settlement,
    },
    /// A request that was decided at once without asking anyone (a
    /// `--deny` or trust rule, or the run was already closing): shown in
    /// its final state, for the record.
    Decided {
        request: Shown,
        settlement: Settlement,
    },
    /// A decision attempt was refused before it reached the registry (not
    /// authorized, wrong channel, …): for the audit log.
    Refused {
        number: Option<u32>,
        actor: Actor,
        why: String,
    },
    /// A request was approved or answered by something other than gatekeep:
    /// the run stops at once, and every follower says so loudly.
    Intruded(Intrusion),
    /// A request that needs several approvers got one more (not the last).
    Progress(Progress),
    /// The run is closing: every open request is being denied, and no new
    /// decision will be forwarded. `RunEnded` follows once the teardown is
    /// done.
    Closing(EndReason),
    /// A reply gatekeep owed OpenCode could not be delivered (the
    /// teardown's sweep denies it all the same): for the console.
    Undelivered { number: u32, detail: String },
    /// The run is over: no more requests will come. Transports finish their
    /// outbox and end.
    RunEnded(RunReport),
}

/// What a transport needs to say how the run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Human phrase: "finished", "failed: …", "timed out", …
    pub outcome: String,
    pub exit_code: i32,
    pub duration: std::time::Duration,
    pub approved: u32,
    pub denied: u32,
}

/// The answer to a decision: did it win?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideOutcome {
    /// The decision was sent to OpenCode and the request is settled with it.
    Accepted(Settlement),
    /// Someone or something settled it first.
    AlreadyDecided(Settlement),
    /// Another decision for it is being sent right now.
    InProgress,
    /// No such request in this run.
    Unknown,
    /// The run is ending; nothing more is forwarded.
    RunEnded,
    /// An approval for a question, or an answer for a permission request:
    /// refused; the request is still pending.
    WrongKind,
    /// Counted; more approvers are needed before OpenCode hears anything.
    Counted(Progress),
    /// This person approved it already: another person must.
    SameApprover(Progress),
    /// The reply could not be delivered to OpenCode; the request is still
    /// open (or was denied because its deadline had passed).
    Failed(String),
}

/// A transport's handle for sending decisions to the approval task.
#[derive(Debug, Clone)]
pub struct Decider {
    tx: mpsc::Sender<Input>,
}

impl Decider {
    #[must_use]
    pub fn new(tx: mpsc::Sender<Input>) -> Self {
        Self { tx }
    }

    /// Ask the approval task to settle request `number` with `verdict`.
    /// Returns once the decision won or lost; `RunEnded` if the task is gone.
    pub async fn decide(&self, number: u32, verdict: Verdict, actor: Actor) -> DecideOutcome {
        let (ack, rx) = oneshot::channel();
        let input = Input::Decide {
            number,
            verdict,
            actor,
            ack,
        };
        if self.tx.send(input).await.is_err() {
            return DecideOutcome::RunEnded;
        }
        rx.await.unwrap_or(DecideOutcome::RunEnded)
    }

    /// Report a refused attempt to decide (e.g. an unauthorized click), so
    /// it is recorded with everything else. Changes no request.
    pub async fn refused(&self, number: Option<u32>, actor: Actor, why: String) {
        let _ = self.tx.send(Input::Refused { number, actor, why }).await;
    }

    /// Report that request `number` could not be shown or answered through
    /// this channel: it is denied (fail closed).
    pub async fn channel_failed(&self, number: u32, detail: String) {
        // If the task is gone the run is already tearing down and the
        // request is denied by the teardown; nothing more to do.
        let _ = self.tx.send(Input::ChannelFailed { number, detail }).await;
    }
}

/// Sends notices to every transport. A transport that has gone away is
/// simply skipped: the registry, not the transport, is the source of truth.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// The other ends are held by each transport's task.
    senders: Vec<mpsc::UnboundedSender<Notice>>,
}

impl Notifier {
    /// Add a transport; returns the receiver it reads from.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Notice> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders.push(tx);
        rx
    }

    pub fn send(&self, notice: &Notice) {
        for tx in &self.senders {
            let _ = tx.send(notice.clone());
        }
    }
}

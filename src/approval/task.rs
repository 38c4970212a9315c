//! The approval task: the one owner of the [`Registry`], its deadlines and
//! the replies to OpenCode.
//!
//! Everything that can settle a request arrives here as an [`Input`]
//! message: requests and `permission.replied` echoes from the event stream,
//! decisions from the transports, the close from the supervisor. The task
//! sends a claim's reply to OpenCode *before* it reads the next message, so
//! no decision can be in flight when the run closes: after `Close` nothing is
//! ever forwarded but rejects.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::ledger::{Ledger, LedgerEntry};
use super::messages::{DecideOutcome, Input, Notice, Notifier};
use super::registry::{Asked, Claim, ClaimFailed, Refusal, Registry, Reply, Settled};
use super::{Actor, Ask, Deadline, EndReason, Settlement, Verdict};

/// Why a reply could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// OpenCode no longer waits for this request (already answered).
    #[error("OpenCode no longer waits for this request")]
    NotFound,
    #[error("{0}")]
    Failed(String),
}

/// Sends replies to OpenCode. Implemented by the OpenCode API client; a
/// trait so the approval logic never depends on HTTP.
pub trait Replier: Send + Sync + 'static {
    fn reply(
        &self,
        request_id: &str,
        reply: &Reply,
    ) -> impl Future<Output = Result<(), ReplyError>> + Send;
}

/// Limits the task applies to every request's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// `--approval-timeout`.
    pub approval_timeout: Duration,
    /// When the whole run times out.
    pub run_deadline: Instant,
    /// Time kept back from the run's end for the teardown itself.
    pub teardown_margin: Duration,
}

impl Deadlines {
    /// Deadline per request = min(approval timeout, time left in the run
    /// minus the teardown margin), never in the past.
    #[must_use]
    pub fn for_request(&self, now: Instant) -> Instant {
        let by_approval = now + self.approval_timeout;
        let by_run = self
            .run_deadline
            .checked_sub(self.teardown_margin)
            .unwrap_or(now)
            .max(now);
        by_approval.min(by_run)
    }
}

/// The approval task's state. Built by the supervisor, run with [`ApprovalTask::run`].
pub struct ApprovalTask<R> {
    registry: Registry,
    replier: R,
    notifier: Notifier,
    deadlines: Deadlines,
    /// When each open request was asked, for the ledger.
    asked_at: std::collections::HashMap<u32, (Instant, SystemTime)>,
    ledger: Ledger,
}

impl<R: Replier> ApprovalTask<R> {
    #[must_use]
    pub fn new(replier: R, notifier: Notifier, deadlines: Deadlines) -> Self {
        Self {
            registry: Registry::new(),
            replier,
            notifier,
            deadlines,
            asked_at: std::collections::HashMap::new(),
            ledger: Ledger::default(),
        }
    }

    /// Deny requests matching any of `rules` at once (`--deny`).
    #[must_use]
    pub fn with_deny_rules(mut self, rules: Vec<super::rules::DenyRule>) -> Self {
        self.registry = Registry::with_deny_rules(rules);
        self
    }

    /// Requests matching `require` need several approvers; edits of
    /// `policy_files` are always asked (docs/design.md, "Policy as code").
    /// After [`Self::with_deny_rules`].
    #[must_use]
    pub fn with_policy(
        mut self,
        require: Vec<super::rules::RequireRule>,
        policy_files: super::rules::PolicyFiles,
    ) -> Self {
        self.registry = std::mem::take(&mut self.registry).with_policy(require, policy_files);
        self
    }

    /// Run until `Close` (or until every sender is gone, which is treated as
    /// an internal error and closes the same way). Returns the ledger.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>) -> Ledger {
        loop {
            let next_deadline = self.registry.next_deadline();
            let input = tokio::select! {
                input = inputs.recv() => input,
                () = sleep_until(next_deadline) => {
                    self.expire().await;
                    continue;
                }
            };
            match input {
                Some(Input::Close { reason, done }) => {
                    self.close(reason).await;
                    let _ = done.send(self.ledger.clone());
                    break;
                }
                Some(input) => self.handle(input).await,
                None => {
                    self.close(EndReason::InternalError).await;
                    break;
                }
            }
        }
        // Anything still queued after close is answered "run ended" by
        // dropping `inputs`; requests asked after close are denied here.
        inputs.close();
        while let Some(input) = inputs.recv().await {
            match input {
                Input::Asked(request) => self.asked(request).await,
                Input::Decide { ack, .. } => {
                    let _ = ack.send(DecideOutcome::RunEnded);
                }
                Input::Close { done, .. } => {
                    let _ = done.send(self.ledger.clone());
                }
                Input::Replied { .. }
                | Input::ChannelFailed { .. }
                | Input::Refused { .. }
                | Input::Resync(_) => {}
            }
        }
        self.ledger
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Asked(request) => self.asked(request).await,
            Input::Replied {
                session_id,
                request_id,
                echo,
            } => {
                let replied = self.registry.replied(&session_id, &request_id, &echo);
                self.settled_all(replied.settled).await;
                if let Some(intrusion) = replied.intrusion {
                    // Everyone is told; the run stops on it (docs/design.md,
                    // "Nothing but gatekeep answers").
                    self.notifier.send(&Notice::Intruded(intrusion));
                }
            }
            Input::Decide {
                number,
                verdict,
                actor,
                ack,
            } => {
                let outcome = self.decide(number, verdict, actor).await;
                let _ = ack.send(outcome);
            }
            Input::ChannelFailed { number, detail } => {
                let settled = self.registry.channel_failed(number, detail);
                self.settled_all(settled).await;
            }
            Input::Resync(pending) => {
                let ids: std::collections::HashSet<String> =
                    pending.iter().map(|r| r.id.clone()).collect();
                for request in pending {
                    if !self.registry.knows(&request.id) {
                        self.asked(request).await;
                    }
                }
                let settled = self.registry.resync(&ids);
                self.settled_all(settled).await;
            }
            Input::Refused { number, actor, why } => {
                self.notifier.send(&Notice::Refused { number, actor, why });
            }
            Input::Close { .. } => unreachable!("close is handled by run"),
        }
    }

    async fn asked(&mut self, ask: Ask) {
        let asked = now();
        let deadline = Deadline::from_now(asked, self.deadlines.for_request(asked));
        match self.registry.ask(ask, deadline) {
            Asked::Open { shown, superseded } => {
                self.asked_at
                    .insert(shown.number, (asked, SystemTime::now()));
                self.settled_all(superseded).await;
                self.notifier.send(&Notice::Show(shown));
            }
            Asked::Refused(settled) => {
                self.asked_at
                    .insert(settled.number, (asked, SystemTime::now()));
                // Decided by a rule (or the closing run) without asking: still
                // shown, so every approval and denial is visible where humans
                // look, with how it was decided.
                self.deliver(&settled).await;
                self.record(&settled);
                if let Some(request) = self.registry.request(settled.number) {
                    self.notifier.send(&Notice::Decided {
                        request: request.clone(),
                        settlement: settled.settlement,
                    });
                }
            }
        }
    }

    async fn decide(&mut self, number: u32, verdict: Verdict, actor: Actor) -> DecideOutcome {
        let claim = match self.registry.claim(number, verdict, actor, now()) {
            Ok(claim) => claim,
            Err(refusal) => return self.refused(refusal).await,
        };
        let Claim {
            number,
            request_id,
            reply,
        } = claim;
        match self.replier.reply(&request_id, &reply).await {
            Ok(()) => match self.registry.claim_succeeded(number) {
                Some(settled) => {
                    let settlement = settled.settlement.clone();
                    self.settled_all([settled]).await;
                    DecideOutcome::Accepted(settlement)
                }
                None => DecideOutcome::RunEnded,
            },
            Err(err) => match self.registry.claim_failed(number, now()) {
                ClaimFailed::Denied(settled) => {
                    let settlement = settled.settlement.clone();
                    self.settled_all([settled]).await;
                    DecideOutcome::AlreadyDecided(settlement)
                }
                ClaimFailed::Reopened | ClaimFailed::AlreadySettled => {
                    DecideOutcome::Failed(err.to_string())
                }
            },
        }
    }

    async fn refused(&mut self, refusal: Refusal) -> DecideOutcome {
        match refusal {
            Refusal::Unknown => DecideOutcome::Unknown,
            Refusal::AlreadyDecided(s) => DecideOutcome::AlreadyDecided(s),
            Refusal::InProgress => DecideOutcome::InProgress,
            Refusal::RunEnded => DecideOutcome::RunEnded,
            Refusal::WrongKind => DecideOutcome::WrongKind,
            Refusal::Counted(progress) => {
                // Every channel shows the count; nothing reaches OpenCode.
                self.notifier.send(&Notice::Progress(progress.clone()));
                DecideOutcome::Counted(progress)
            }
            Refusal::SameApprover(progress) => DecideOutcome::SameApprover(progress),
            Refusal::PastDeadline => {
                // The timer has not fired yet; settle now so the human sees
                // the same answer the deadline gives.
                self.expire().await;
                DecideOutcome::AlreadyDecided(Settlement::Expired)
            }
        }
    }

    async fn expire(&mut self) {
        let settled = self.registry.expire_due(now());
        self.settled_all(settled).await;
    }

    async fn close(&mut self, reason: EndReason) {
        // Followers may start winding down (the Discord gateway's close
        // takes half a second) while the teardown runs.
        self.notifier.send(&Notice::Closing(reason));
        let settled = self.registry.close(reason);
        self.settled_all(settled).await;
    }

    /// Send each settlement's reply (if OpenCode must be told), record it,
    /// and tell the transports.
    async fn settled_all(&mut self, settled: impl IntoIterator<Item = Settled>) {
        for s in settled {
            self.deliver(&s).await;
            self.record(&s);
            self.notifier.send(&Notice::Settled {
                number: s.number,
                request_id: s.request_id,
                settlement: s.settlement,
            });
        }
    }

    /// Send the settlement's reply, if OpenCode must be told.
    async fn deliver(&self, s: &Settled) {
        if let Some(reply) = &s.reply {
            // NotFound means OpenCode already let go of it: a deny holds
            // either way. Other failures are swept up by the teardown's
            // `GET /permission` pass.
            if let Err(ReplyError::Failed(detail)) = self.replier.reply(&s.request_id, reply).await
            {
                self.notifier.send(&Notice::Undelivered {
                    number: s.number,
                    detail,
                });
            }
        }
    }

    fn record(&mut self, s: &Settled) {
        let Some(request) = self.registry.request(s.number) else {
            return;
        };
        let (asked, asked_wall) = self
            .asked_at
            .remove(&s.number)
            .unwrap_or((now(), SystemTime::now()));
        self.ledger.entries.push(LedgerEntry {
            request: request.clone(),
            settlement: s.settlement.clone(),
            asked_at: asked_wall,
            settled_at: SystemTime::now(),
            time_to_decision: asked.elapsed(),
        });
    }
}

/// The current instant on tokio's clock, so paused-time tests drive deadlines.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::approval::{Channel, Echo, Shown};

    /// Records every reply; answers `NotFound` for ids listed in `gone`.
    #[derive(Clone, Default)]
    struct Recorder {
        replies: Arc<Mutex<Vec<(String, Reply)>>>,
        gone: Arc<Mutex<Vec<String>>>,
    }

    impl Replier for Recorder {
        async fn reply(&self, request_id: &str, reply: &Reply) -> Result<(), ReplyError> {
            self.replies
                .lock()
                .expect("test lock")
                .push((request_id.to_owned(), reply.clone()));
            if self
                .gone
                .lock()
                .expect("test lock")
                .iter()
                .any(|g| g == request_id)
            {
                return Err(ReplyError::NotFound);
            }
            Ok(())
        }
    }

    fn request(id: &str) -> Ask {
        Ask::bash(id, "ses_1", "touch x")
    }

    struct Harness {
        tx: mpsc::Sender<Input>,
        notices: mpsc::UnboundedReceiver<Notice>,
        recorder: Recorder,
        task: tokio::task::JoinHandle<Ledger>,
    }

    fn start(approval_timeout: Duration, run_left: Duration) -> Harness {
        let recorder = Recorder::default();
        let mut notifier = Notifier::default();
        let notices = notifier.subscribe();
        let deadlines = Deadlines {
            approval_timeout,
            run_deadline: now() + run_left,
            teardown_margin: Duration::from_secs(5),
        };
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(ApprovalTask::new(recorder.clone(), notifier, deadlines).run(rx));
        Harness {
            tx,
            notices,
            recorder,
            task,
        }
    }

    fn bob() -> Actor {
        Actor {
            channel: Channel::Terminal,
            id: "bob".to_owned(),
            name: "bob".to_owned(),
        }
    }

    async fn shown(h: &mut Harness) -> Shown {
        match h.notices.recv().await {
            Some(Notice::Show(r)) => r,
            other => panic!("expected a request to show, got {other:?}"),
        }
    }

    async fn decide(h: &Harness, number: u32, verdict: Verdict) -> DecideOutcome {
        crate::approval::messages::Decider::new(h.tx.clone())
            .decide(number, verdict, bob())
            .await
    }

    #[tokio::test]
    async fn approval_is_forwarded_once_and_a_second_click_loses() {
        let mut h = start(Duration::from_secs(60), Duration::from_secs(600));
        h.tx.send(Input::Asked(request("per_a")))
            .await
            .expect("send");
        let shown = shown(&mut h).await;
        assert_eq!(shown.number, 1);
        assert!(matches!(
            decide(&h, 1, Verdict::Approve).await,
            DecideOutcome::Accepted(Settlement::Approved { .. })
        ));
        assert!(matches!(
            decide(&h, 1, Verdict::Deny { reason: None }).await,
            DecideOutcome::AlreadyDecided(Settlement::Approved { .. })
        ));
        assert_eq!(
            *h.recorder.replies.lock().expect("lock"),
            vec![("per_a".to_owned(), Reply::Once)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_denies_an_unanswered_request() {
        let mut h = start(Duration::from_secs(30), Duration::from_secs(600));
        h.tx.send(Input::Asked(request("per_a")))
            .await
            .expect("send");
        let shown = shown(&mut h).await;
        assert_eq!(shown.deadline.left, Duration::from_secs(30));
        match h.notices.recv().await {
            Some(Notice::Settled { settlement, .. }) => assert_eq!(settlement, Settlement::Expired),
            other => panic!("expected expiry, got {other:?}"),
        }
        let replies = h.recorder.replies.lock().expect("lock").clone();
        assert!(matches!(&replies[..], [(id, Reply::Reject { .. })] if id == "per_a"));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_capped_by_the_time_left_in_the_run() {
        let mut h = start(Duration::from_secs(600), Duration::from_secs(65));
        h.tx.send(Input::Asked(request("per_a")))
            .await
            .expect("send");
        assert_eq!(shown(&mut h).await.deadline.left, Duration::from_secs(60));
    }

    #[tokio::test]
    async fn close_denies_pending_and_later_decisions_see_run_ended() {
        let mut h = start(Duration::from_secs(60), Duration::from_secs(600));
        h.tx.send(Input::Asked(request("per_a")))
            .await
            .expect("send");
        let _ = shown(&mut h).await;
        let (done, ledger) = tokio::sync::oneshot::channel();
        h.tx.send(Input::Close {
            reason: EndReason::Interrupted,
            done,
        })
        .await
        .expect("send");
        let ledger = ledger.await.expect("ledger");
        assert_eq!(ledger.entries.len(), 1);
        assert_eq!(
            ledger.entries[0].settlement,
            Settlement::RunEnded(EndReason::Interrupted)
        );
        let replies = h.recorder.replies.lock().expect("lock").clone();
        assert_eq!(
            replies,
            vec![(
                "per_a".to_owned(),
                Reply::Reject {
                    message: "denied by gatekeep: interrupted".to_owned()
                }
            )]
        );
        assert_eq!(
            decide(&h, 1, Verdict::Approve).await,
            DecideOutcome::RunEnded
        );
        drop(h.tx);
        let _ = h.task.await.expect("task ends");
    }

    #[tokio::test]
    async fn a_claim_whose_request_is_gone_reopens_and_reports_failure() {
        let mut h = start(Duration::from_secs(60), Duration::from_secs(600));
        h.recorder
            .gone
            .lock()
            .expect("lock")
            .push("per_a".to_owned());
        h.tx.send(Input::Asked(request("per_a")))
            .await
            .expect("send");
        let _ = shown(&mut h).await;
        assert!(matches!(
            decide(&h, 1, Verdict::Approve).await,
            DecideOutcome::Failed(_)
        ));
        // The echo of whoever answered settles it.
        h.tx.send(Input::Replied {
            session_id: "ses_1".to_owned(),
            request_id: "per_a".to_owned(),
            echo: Echo::Rejected,
        })
        .await
        .expect("send");
        assert!(matches!(
            h.notices.recv().await,
            Some(Notice::Settled {
                settlement: Settlement::RepliedElsewhere { .. },
                ..
            })
        ));
    }
}

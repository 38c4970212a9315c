//! The approval registry: a pure state machine that settles each permission
//! request exactly once.
//!
//! Nothing here does I/O or reads a clock: the caller passes `now`, and every
//! transition returns what must happen next ([`Settled`] values carry the
//! reject that OpenCode must receive, if any). That keeps every race in
//! docs/design.md, "The approval registry" — click vs. deadline vs. `permission.replied` vs. re-ask vs. the
//! run ending — testable as a plain sequence of calls.
//!
//! States: `Open` → `Claimed` (a human's decision is being sent) → `Settled`.
//! Settled entries stay as tombstones for the whole run, so a late click or a
//! replayed event finds "already decided" instead of nothing.

use std::collections::HashMap;
use std::time::Instant;

use super::rules::{DenyRule, PolicyFiles, RequireRule, TrustRule};
use super::{Actor, Ask, Deadline, Echo, EndReason, Needs, Progress, Settlement, Shown, Verdict};

/// One request's place in the registry.
#[derive(Debug)]
struct Entry {
    shown: Shown,
    state: State,
    /// Distinct approvers so far of a request that needs several; the one
    /// whose approval completes it is in `Claimed` until OpenCode accepts.
    approvals: Vec<Actor>,
}

#[derive(Debug, Clone)]
enum State {
    Open,
    Claimed { verdict: Verdict, by: Actor },
    Settled(Settlement),
}

/// What OpenCode must be told about a request that gatekeep settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Approve this request only. gatekeep never sends `always`.
    Once,
    /// Reject, with the message the model receives as feedback.
    Reject { message: String },
    /// Answer a question: one answer per question, in order.
    Answer { answers: Vec<Vec<String>> },
    /// Dismiss a question (OpenCode's question reject takes no message).
    Dismiss,
}

/// A request reached its final state.
#[must_use = "a settlement may carry a reply that OpenCode must receive"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub number: u32,
    pub request_id: String,
    pub session_id: String,
    pub settlement: Settlement,
    /// The reply gatekeep must send, when OpenCode does not already know:
    /// a reject for every automatic denial, `once` for a trust rule.
    pub reply: Option<Reply>,
}

/// What an echo changed.
#[must_use = "an intrusion must stop the run"]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replied {
    pub settled: Vec<Settled>,
    /// The echo approved or answered something gatekeep did not.
    pub intrusion: Option<Intrusion>,
}

/// A request approved or answered by something other than gatekeep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intrusion {
    /// The registry's number, when gatekeep knew the request.
    pub number: Option<u32>,
    pub request_id: String,
    pub echo: Echo,
}

/// The result of registering a request.
#[must_use]
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived: consumed right away by the task
pub enum Asked {
    /// Registered and open: show it.
    Open {
        shown: Shown,
        /// A previous entry with the same OpenCode id that this one replaced.
        superseded: Option<Settled>,
    },
    /// Decided at once without asking anyone: the run is closing, or a
    /// `--deny` or trust rule matched.
    Refused(Settled),
}

/// A decision that won: send this reply to OpenCode, then report the result
/// with [`Registry::claim_succeeded`] or [`Registry::claim_failed`].
#[must_use = "a claim must be sent and then reported back"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub number: u32,
    pub request_id: String,
    pub reply: Reply,
}

/// Why a decision did not win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    AlreadyDecided(Settlement),
    InProgress,
    PastDeadline,
    RunEnded,
    /// The approval was counted; the request needs more approvers before
    /// anything is sent to OpenCode.
    Counted(Progress),
    /// This person already approved it; a request that needs several
    /// approvers needs several people.
    SameApprover(Progress),
    /// An approval for a question, or an answer for a permission request:
    /// refused, and the entry stays pending.
    WrongKind,
}

/// What became of a claim whose reply could not be delivered.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimFailed {
    /// Still before the deadline: the request is open again.
    Reopened,
    /// The deadline passed while the reply was in flight: deny at once.
    Denied(Settled),
    /// Settled meanwhile (echo, cascade, close): nothing more to do.
    AlreadySettled,
}

/// All requests of one run, keyed by their short number.
#[derive(Debug, Default)]
pub struct Registry {
    entries: HashMap<u32, Entry>,
    /// OpenCode request id → number of the entry that currently stands for it.
    by_id: HashMap<String, u32>,
    last_number: u32,
    closed: Option<EndReason>,
    /// `--deny` rules; they win over trust rules.
    deny_rules: Vec<DenyRule>,
    trust_rules: Vec<TrustRule>,
    /// `[[require]]` rules: requests that need several approvers.
    require: Vec<RequireRule>,
    policy_files: PolicyFiles,
}

impl Registry {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that denies requests matching any of `rules` at once.
    #[must_use]
    pub fn with_deny_rules(rules: Vec<DenyRule>) -> Self {
        Self {
            deny_rules: rules,
            ..Self::default()
        }
    }

    /// With the policy file's `[[require]]` rules, and the files whose edit
    /// is a change to the policy.
    #[must_use]
    pub fn with_policy(mut self, require: Vec<RequireRule>, policy_files: PolicyFiles) -> Self {
        self.require = require;
        self.policy_files = policy_files;
        self
    }

    /// What approving `ask` takes: the most any matching `[[require]]` rule
    /// asks; an edit of the policy is never approved by one person when the
    /// policy asks for two anywhere.
    fn needs(&self, ask: &Ask) -> Needs {
        if ask.is_question() {
            return Needs::default();
        }
        let mut approvals = self
            .require
            .iter()
            .filter(|r| r.matches(ask))
            .map(RequireRule::approvals)
            .max()
            .unwrap_or(1);
        let policy_change = self.policy_files.touched_by(ask);
        if policy_change {
            let most = self.require.iter().map(RequireRule::approvals).max();
            approvals = approvals.max(most.map_or(1, |n| n.max(2)));
        }
        Needs {
            approvals,
            policy_change,
        }
    }

    /// Register a request before anyone is shown it, so that a fast click
    /// already finds it. The request's number is assigned here.
    pub fn ask(&mut self, ask: Ask, deadline: Deadline) -> Asked {
        self.last_number += 1;
        let number = self.last_number;
        let needs = self.needs(&ask);

        // Decided without asking anyone: the run is closing, a --deny rule
        // matches (it always wins), or a trust rule does.
        let automatic = if let Some(reason) = self.closed {
            Some(Settlement::RunEnded(reason))
        } else if let Some(rule) = self.deny_rules.iter().find(|r| r.matches(&ask)) {
            Some(Settlement::DeniedByRule {
                rule: rule.text.clone(),
            })
        } else if !needs.trustable() {
            // A trust rule is one person's word: never enough here.
            None
        } else {
            self.trust_rules
                .iter()
                .find(|r| r.matches(&ask))
                .map(|r| Settlement::ApprovedByRule {
                    rule_of: r.made_on,
                    by: r.by.clone(),
                })
        };
        let shown = Shown {
            number,
            needs,
            deadline,
            ask,
        };
        if let Some(settlement) = automatic {
            self.by_id.insert(shown.ask.id.clone(), number);
            self.entries.insert(
                number,
                Entry {
                    shown,
                    state: State::Open,
                    approvals: Vec::new(),
                },
            );
            let settled = self
                .settle(number, settlement, true)
                .expect("a fresh entry is open");
            return Asked::Refused(settled);
        }

        // A re-ask of the same OpenCode id replaces the old message; the new
        // entry answers for the id from now on, so the old one needs no reply.
        let superseded = self
            .by_id
            .insert(shown.ask.id.clone(), number)
            .and_then(|old| self.settle(old, Settlement::Superseded { by_number: number }, false));

        self.entries.insert(
            number,
            Entry {
                shown: shown.clone(),
                state: State::Open,
                approvals: Vec::new(),
            },
        );
        Asked::Open { shown, superseded }
    }

    /// A human decided. The first decision claims the entry synchronously;
    /// every later one is refused.
    pub fn claim(
        &mut self,
        number: u32,
        verdict: Verdict,
        by: Actor,
        now: Instant,
    ) -> Result<Claim, Refusal> {
        if self.closed.is_some() {
            return Err(match self.entries.get(&number).map(|e| &e.state) {
                Some(State::Settled(s)) => Refusal::AlreadyDecided(s.clone()),
                _ => Refusal::RunEnded,
            });
        }
        let entry = self.entries.get_mut(&number).ok_or(Refusal::Unknown)?;
        match &entry.state {
            State::Settled(s) => return Err(Refusal::AlreadyDecided(s.clone())),
            State::Claimed { .. } => return Err(Refusal::InProgress),
            State::Open if now >= entry.shown.deadline.at => return Err(Refusal::PastDeadline),
            State::Open => {}
        }
        // Each kind of pending entry takes only its own kind of answer.
        let question = entry.shown.ask.is_question();
        let reply = match &verdict {
            Verdict::Approve | Verdict::ApproveAndTrust if question => {
                return Err(Refusal::WrongKind)
            }
            Verdict::Answer { .. } if !question => return Err(Refusal::WrongKind),
            Verdict::Approve | Verdict::ApproveAndTrust => Reply::Once,
            Verdict::Answer { answers } => Reply::Answer {
                answers: answers.clone(),
            },
            Verdict::Deny { .. } if question => Reply::Dismiss,
            Verdict::Deny { reason } => Reply::Reject {
                message: reason
                    .clone()
                    .unwrap_or_else(|| "denied by a human approver".to_owned()),
            },
        };
        // Several approvers needed: count this one, and send nothing to
        // OpenCode until the last of them approves. A trust rule is never
        // made from such a request.
        let needed = entry.shown.needs.approvals;
        let verdict = match verdict {
            Verdict::Approve | Verdict::ApproveAndTrust if !entry.shown.needs.trustable() => {
                if entry.approvals.iter().any(|a| a.person() == by.person()) {
                    return Err(Refusal::SameApprover(progress(number, entry)));
                }
                if entry.approvals.len() + 1 < usize::from(needed) {
                    entry.approvals.push(by);
                    return Err(Refusal::Counted(progress(number, entry)));
                }
                Verdict::Approve
            }
            other => other,
        };
        entry.state = State::Claimed { verdict, by };
        Ok(Claim {
            number,
            request_id: entry.shown.ask.id.clone(),
            reply,
        })
    }

    /// OpenCode accepted the claim's reply.
    pub fn claim_succeeded(&mut self, number: u32) -> Option<Settled> {
        let entry = self.entries.get(&number)?;
        let State::Claimed { verdict, by } = &entry.state else {
            return None;
        };
        if *verdict == Verdict::ApproveAndTrust {
            self.trust_rules
                .push(TrustRule::made_from(number, &entry.shown.ask, by.clone()));
        }
        let mut settlement = settlement_of(verdict.clone(), by.clone());
        if let Settlement::Approved { also, .. } = &mut settlement {
            also.clone_from(&entry.approvals);
        }
        self.settle(number, settlement, false)
    }

    /// The claim's reply could not be delivered. A claimed entry beats its
    /// deadline while the reply is in flight, but not after it failed.
    pub fn claim_failed(&mut self, number: u32, now: Instant) -> ClaimFailed {
        let Some(entry) = self.entries.get_mut(&number) else {
            return ClaimFailed::AlreadySettled;
        };
        if !matches!(entry.state, State::Claimed { .. }) {
            return ClaimFailed::AlreadySettled;
        }
        if now >= entry.shown.deadline.at {
            return match self.settle(number, Settlement::Expired, true) {
                Some(settled) => ClaimFailed::Denied(settled),
                None => ClaimFailed::AlreadySettled,
            };
        }
        entry.state = State::Open;
        ClaimFailed::Reopened
    }

    /// OpenCode's echo of a reply (`permission.replied`, `question.replied`,
    /// `question.rejected`): the authoritative settlement signal.
    ///
    /// gatekeep is the only legitimate replier of its private server, so an
    /// echo that lets the agent go ahead is checked against what gatekeep
    /// itself sent: only the echo of its own claimed (or settled) approval or
    /// answer is. Anything else — an approval of an open request, of one
    /// gatekeep denied, of one it never saw, or an `always` (never sent by
    /// gatekeep) — is an intrusion, returned so the run can be stopped.
    ///
    /// A `reject` makes OpenCode reject every other pending request of the
    /// same session, so those open entries settle as "denied with the related
    /// request" (and get a reject of their own, which is harmless if OpenCode
    /// already dropped them). Claimed entries are left to their own echo.
    pub fn replied(&mut self, session_id: &str, request_id: &str, echo: &Echo) -> Replied {
        let mut out = Replied::default();
        let number = self.by_id.get(request_id).copied();
        let state = number.and_then(|n| self.entries.get(&n)).map(|e| &e.state);
        if echo.lets_agent_proceed() && !is_own(state, echo) {
            out.intrusion = Some(Intrusion {
                number,
                request_id: request_id.to_owned(),
                echo: echo.clone(),
            });
        }
        if let Some(number) = number {
            let settlement = match state {
                _ if out.intrusion.is_some() => Some(Settlement::Intruded { echo: echo.clone() }),
                Some(State::Claimed { verdict, by }) if echo_matches(verdict, echo) => {
                    Some(settlement_of(verdict.clone(), by.clone()))
                }
                Some(State::Open | State::Claimed { .. }) => Some(Settlement::RepliedElsewhere {
                    echo: Some(echo.clone()),
                }),
                Some(State::Settled(_)) | None => None,
            };
            // An intrusion overrides even a settled entry's final state: what
            // it shows must be what happened.
            if let Some(settlement) = settlement {
                if matches!(settlement, Settlement::Intruded { .. }) {
                    out.settled.extend(self.resettle(number, settlement));
                } else {
                    out.settled.extend(self.settle(number, settlement, false));
                }
            }
        }
        if *echo == Echo::Rejected {
            let related: Vec<u32> = self
                .entries
                .iter()
                .filter(|(n, e)| {
                    Some(**n) != number
                        && e.shown.ask.session_id == session_id
                        && matches!(e.state, State::Open)
                })
                .map(|(n, _)| *n)
                .collect();
            for n in sorted(related) {
                let settlement = match number {
                    Some(related) => Settlement::DeniedWithRelated { related },
                    None => Settlement::RepliedElsewhere {
                        echo: Some(echo.clone()),
                    },
                };
                out.settled.extend(self.settle(n, settlement, true));
            }
        }
        out
    }

    /// After the event stream was down: `pending` are the ids OpenCode still
    /// waits on. Open entries missing from it were answered during the gap
    /// (by a cascade or another client) and settle as such; claimed ones are
    /// left to their reply.
    pub fn resync(&mut self, pending: &std::collections::HashSet<String>) -> Vec<Settled> {
        let gone: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(id, _)| !pending.contains(*id))
            .map(|(_, n)| *n)
            .filter(|n| matches!(self.entries.get(n).map(|e| &e.state), Some(State::Open)))
            .collect();
        sorted(gone)
            .into_iter()
            .filter_map(|n| {
                let settlement = Settlement::RepliedElsewhere { echo: None };
                self.settle(n, settlement, false)
            })
            .collect()
    }

    /// The request could not be shown or answered through the approval
    /// channel: deny it.
    pub fn channel_failed(&mut self, number: u32, detail: String) -> Option<Settled> {
        match self.entries.get(&number).map(|e| &e.state) {
            Some(State::Open) => self.settle(number, Settlement::ChannelFailed { detail }, true),
            _ => None,
        }
    }

    /// Settle every open entry whose deadline has passed. Claimed entries are
    /// not expired: their reply is in flight and wins.
    pub fn expire_due(&mut self, now: Instant) -> Vec<Settled> {
        let due: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Open) && now >= e.shown.deadline.at)
            .map(|(n, _)| *n)
            .collect();
        sorted(due)
            .into_iter()
            .filter_map(|n| self.settle(n, Settlement::Expired, true))
            .collect()
    }

    /// The earliest deadline among open entries: when to call
    /// [`Registry::expire_due`] next.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| matches!(e.state, State::Open))
            .map(|e| e.shown.deadline.at)
            .min()
    }

    /// The run is ending: deny everything open or claimed, and deny every
    /// request that arrives from now on. Idempotent; the first reason wins.
    pub fn close(&mut self, reason: EndReason) -> Vec<Settled> {
        let reason = *self.closed.get_or_insert(reason);
        let pending: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| !matches!(e.state, State::Settled(_)))
            .map(|(n, _)| *n)
            .collect();
        sorted(pending)
            .into_iter()
            .filter_map(|n| self.settle(n, Settlement::RunEnded(reason), true))
            .collect()
    }

    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Requests not yet settled, oldest first.
    #[must_use]
    pub fn pending(&self) -> Vec<&Shown> {
        let mut out: Vec<&Shown> = self
            .entries
            .values()
            .filter(|e| !matches!(e.state, State::Settled(_)))
            .map(|e| &e.shown)
            .collect();
        out.sort_by_key(|r| r.number);
        out
    }

    #[must_use]
    pub fn request(&self, number: u32) -> Option<&Shown> {
        self.entries.get(&number).map(|e| &e.shown)
    }

    /// Whether OpenCode's request id belongs to this run (a known entry).
    #[must_use]
    pub fn knows(&self, request_id: &str) -> bool {
        self.by_id.contains_key(request_id)
    }

    /// An intrusion on an entry gatekeep already settled: its final state is
    /// corrected to what happened. Nothing is sent to OpenCode.
    fn resettle(&mut self, number: u32, settlement: Settlement) -> Option<Settled> {
        let entry = self.entries.get_mut(&number)?;
        if !matches!(entry.state, State::Settled(_)) {
            return self.settle(number, settlement, false);
        }
        entry.state = State::Settled(settlement.clone());
        Some(Settled {
            number,
            request_id: entry.shown.ask.id.clone(),
            session_id: entry.shown.ask.session_id.clone(),
            settlement,
            reply: None,
        })
    }

    /// The one transition into `Settled`. Returns `None` if the entry was
    /// already settled (or does not exist), so nothing is settled twice.
    fn settle(&mut self, number: u32, settlement: Settlement, send_reply: bool) -> Option<Settled> {
        let entry = self.entries.get_mut(&number)?;
        if matches!(entry.state, State::Settled(_)) {
            return None;
        }
        entry.state = State::Settled(settlement.clone());
        let question = entry.shown.ask.is_question();
        let reply = send_reply.then(|| {
            if question {
                // A question is never approved by a rule; every automatic
                // settlement of one dismisses it.
                Reply::Dismiss
            } else if settlement.is_approved() {
                Reply::Once
            } else {
                Reply::Reject {
                    message: settlement
                        .deny_message()
                        .unwrap_or_else(|| "denied by gatekeep".to_owned()),
                }
            }
        });
        Some(Settled {
            number,
            request_id: entry.shown.ask.id.clone(),
            session_id: entry.shown.ask.session_id.clone(),
            settlement,
            reply,
        })
    }
}

fn progress(number: u32, entry: &Entry) -> Progress {
    Progress {
        number,
        needed: entry.shown.needs.approvals,
        by: entry.approvals.clone(),
    }
}

fn settlement_of(verdict: Verdict, by: Actor) -> Settlement {
    match verdict {
        Verdict::Approve => Settlement::Approved {
            by,
            also: Vec::new(),
        },
        Verdict::ApproveAndTrust => Settlement::ApprovedAndTrusted { by },
        Verdict::Deny { reason } => Settlement::Denied { by, reason },
        Verdict::Answer { answers } => Settlement::Answered { by, answers },
    }
}

/// Whether an echo that lets the agent go ahead is the echo of gatekeep's
/// own reply: a claimed approval or answer being sent, or one that already
/// settled the entry. gatekeep never sends `always`.
fn is_own(state: Option<&State>, echo: &Echo) -> bool {
    if *echo == (Echo::Approved { always: true }) {
        return false;
    }
    match state {
        Some(State::Claimed { verdict, .. }) => echo_matches(verdict, echo),
        Some(State::Settled(s)) => match echo {
            Echo::Approved { .. } => s.is_approved(),
            Echo::Answered => matches!(s, Settlement::Answered { .. }),
            _ => false,
        },
        Some(State::Open) | None => false,
    }
}

/// Whether OpenCode's echo is the one gatekeep's own claimed reply causes.
/// A denied question echoes as dismissed.
fn echo_matches(verdict: &Verdict, echo: &Echo) -> bool {
    match verdict {
        Verdict::Approve | Verdict::ApproveAndTrust => *echo == Echo::Approved { always: false },
        Verdict::Deny { .. } => matches!(echo, Echo::Rejected | Echo::Dismissed),
        Verdict::Answer { .. } => *echo == Echo::Answered,
    }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::approval::rules::DenyRuleError;
    use crate::approval::{Channel, Permission, Subject};

    fn request(id: &str, session: &str) -> Ask {
        Ask::bash(id, session, "echo hi")
    }

    /// A deadline at `at`; the wall clock is only for display.
    fn due(at: Instant) -> Deadline {
        Deadline {
            at,
            wall: SystemTime::UNIX_EPOCH,
            left: Duration::from_secs(60),
        }
    }

    fn alice() -> Actor {
        Actor {
            channel: Channel::Discord,
            id: "1".to_owned(),
            name: "alice".to_owned(),
        }
    }

    fn open(reg: &mut Registry, id: &str, session: &str, deadline: Instant) -> u32 {
        match reg.ask(request(id, session), due(deadline)) {
            Asked::Open {
                shown: request,
                superseded,
            } => {
                assert!(superseded.is_none());
                request.number
            }
            Asked::Refused(s) => panic!("refused: {s:?}"),
        }
    }

    #[test]
    fn approve_claims_then_settles_on_success() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
        let claim = reg
            .claim(n, Verdict::Approve, alice(), now)
            .expect("first click wins");
        assert_eq!(claim.reply, Reply::Once);
        let settled = reg.claim_succeeded(n).expect("settles");
        assert_eq!(
            settled.settlement,
            Settlement::Approved {
                by: alice(),
                also: vec![]
            }
        );
        assert_eq!(settled.reply, None);
        // The echo of our own reply changes nothing.
        let echo = reg.replied("ses_1", "per_a", &Echo::Approved { always: false });
        assert_eq!(echo, Replied::default(), "nothing changes, no intrusion");
    }

    #[test]
    fn second_click_is_refused_while_in_progress_and_after() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
        let _claim = reg.claim(n, Verdict::Approve, alice(), now).expect("first");
        assert_eq!(
            reg.claim(n, Verdict::Deny { reason: None }, alice(), now),
            Err(Refusal::InProgress)
        );
        let _ = reg.claim_succeeded(n);
        assert!(matches!(
            reg.claim(n, Verdict::Approve, alice(), now),
            Err(Refusal::AlreadyDecided(Settlement::Approved { .. }))
        ));
    }

    #[test]
    fn deadline_expires_open_entries_but_not_claimed_ones() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let mut reg = Registry::new();
        let a = open(&mut reg, "per_a", "ses_1", deadline);
        let b = open(&mut reg, "per_b", "ses_2", deadline);
        let _claim = reg
            .claim(b, Verdict::Approve, alice(), now)
            .expect("claim b");
        assert_eq!(reg.next_deadline(), Some(deadline));
        let expired = reg.expire_due(deadline);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].number, a);
        assert_eq!(expired[0].settlement, Settlement::Expired);
        assert!(expired[0].reply.is_some(), "an expired request is rejected");
        assert_eq!(reg.next_deadline(), None);
        // The claim still wins after the deadline.
        assert!(reg
            .claim_succeeded(b)
            .is_some_and(|s| s.settlement.is_approved()));
    }

    #[test]
    fn click_after_deadline_is_refused() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", now);
        assert_eq!(
            reg.claim(n, Verdict::Approve, alice(), now),
            Err(Refusal::PastDeadline)
        );
    }

    #[test]
    fn failed_claim_reopens_before_deadline_and_denies_after() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", deadline);
        let _c = reg.claim(n, Verdict::Approve, alice(), now).expect("claim");
        assert_eq!(reg.claim_failed(n, now), ClaimFailed::Reopened);
        let _c = reg
            .claim(n, Verdict::Approve, alice(), now)
            .expect("claim again");
        match reg.claim_failed(n, deadline) {
            ClaimFailed::Denied(s) => {
                assert_eq!(s.settlement, Settlement::Expired);
                assert!(matches!(s.reply, Some(Reply::Reject { .. })));
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn reject_echo_cascades_to_open_entries_of_the_same_session_only() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut reg = Registry::new();
        let a = open(&mut reg, "per_a", "ses_1", later);
        let b = open(&mut reg, "per_b", "ses_1", later);
        let c = open(&mut reg, "per_c", "ses_1", later);
        let other = open(&mut reg, "per_d", "ses_2", later);
        let _claim_c = reg
            .claim(c, Verdict::Approve, alice(), now)
            .expect("claim c");
        let _claim_a = reg
            .claim(a, Verdict::Deny { reason: None }, alice(), now)
            .expect("claim a");

        let settled = reg.replied("ses_1", "per_a", &Echo::Rejected).settled;
        let numbers: Vec<u32> = settled.iter().map(|s| s.number).collect();
        assert_eq!(
            numbers,
            vec![a, b],
            "c is claimed and waits for its own echo"
        );
        assert!(matches!(settled[0].settlement, Settlement::Denied { .. }));
        assert_eq!(
            settled[1].settlement,
            Settlement::DeniedWithRelated { related: a }
        );
        // The cascaded entries' own echoes are then no-ops.
        assert_eq!(
            reg.replied("ses_1", "per_b", &Echo::Rejected),
            Replied::default()
        );
        // c's echo says reject (OpenCode cascaded it): it was not approved.
        let c_settled = reg.replied("ses_1", "per_c", &Echo::Rejected).settled;
        assert_eq!(
            c_settled[0].settlement,
            Settlement::RepliedElsewhere {
                echo: Some(Echo::Rejected)
            }
        );
        assert_eq!(
            reg.pending().iter().map(|r| r.number).collect::<Vec<_>>(),
            vec![other]
        );
    }

    #[test]
    fn reask_supersedes_the_old_entry() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut reg = Registry::new();
        let first = open(&mut reg, "per_a", "ses_1", later);
        let Asked::Open {
            shown: request,
            superseded,
        } = reg.ask(request("per_a", "ses_1"), due(later))
        else {
            panic!("refused")
        };
        let old = superseded.expect("old entry superseded");
        assert_eq!(old.number, first);
        assert_eq!(
            old.settlement,
            Settlement::Superseded {
                by_number: request.number
            }
        );
        assert_eq!(old.reply, None);
        assert!(matches!(
            reg.claim(first, Verdict::Approve, alice(), now),
            Err(Refusal::AlreadyDecided(Settlement::Superseded { .. }))
        ));
        assert!(reg
            .claim(request.number, Verdict::Approve, alice(), now)
            .is_ok());
    }

    #[test]
    fn close_denies_open_and_claimed_and_everything_after() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut reg = Registry::new();
        let a = open(&mut reg, "per_a", "ses_1", later);
        let b = open(&mut reg, "per_b", "ses_1", later);
        let _claim = reg.claim(b, Verdict::Approve, alice(), now).expect("claim");
        let closed = reg.close(EndReason::TimedOut);
        assert_eq!(
            closed.iter().map(|s| s.number).collect::<Vec<_>>(),
            vec![a, b]
        );
        assert!(closed.iter().all(|s| s.reply
            == Some(Reply::Reject {
                message: "denied by gatekeep: run timed out".to_owned()
            })));
        // A claim that completes after close must not turn into an approval.
        assert!(reg.claim_succeeded(b).is_none());
        assert_eq!(
            reg.claim(a, Verdict::Approve, alice(), now),
            Err(Refusal::AlreadyDecided(Settlement::RunEnded(
                EndReason::TimedOut
            )))
        );
        match reg.ask(request("per_late", "ses_1"), due(later)) {
            Asked::Refused(s) => assert!(matches!(s.reply, Some(Reply::Reject { .. }))),
            Asked::Open { .. } => panic!("a request after close must be denied"),
        }
        assert!(reg.close(EndReason::Interrupted).is_empty());
    }

    #[test]
    fn reply_from_another_client_settles_without_a_reply_of_ours() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
        let echo = reg.replied("ses_1", "per_a", &Echo::Approved { always: false });
        assert_eq!(echo.settled[0].number, n);
        assert_eq!(echo.settled[0].reply, None);
        assert!(reg.pending().is_empty());
        // gatekeep is the only legitimate replier: that approval is an intrusion.
        assert_eq!(echo.intrusion.map(|i| i.number), Some(Some(n)));
    }

    #[test]
    fn a_foreign_reject_is_harmless_and_only_replied_elsewhere() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
        let echo = reg.replied("ses_1", "per_a", &Echo::Rejected);
        assert_eq!(echo.intrusion, None);
        assert_eq!(
            echo.settled[0].settlement,
            Settlement::RepliedElsewhere {
                echo: Some(Echo::Rejected)
            }
        );
        assert_eq!(echo.settled[0].number, n);
    }

    #[test]
    fn every_approval_gatekeep_did_not_send_is_an_intrusion() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let once = Echo::Approved { always: false };
        let mut reg = Registry::new();

        // A request gatekeep never saw.
        let unknown = reg.replied("ses_1", "per_unknown", &once);
        assert_eq!(unknown.intrusion.map(|i| i.number), Some(None));

        // One gatekeep denied: its final state is corrected.
        let denied = open(&mut reg, "per_denied", "ses_1", later);
        let _ = reg.claim(denied, Verdict::Deny { reason: None }, alice(), now);
        let _ = reg.claim_succeeded(denied);
        let echo = reg.replied("ses_1", "per_denied", &once);
        assert!(echo.intrusion.is_some());
        assert_eq!(
            echo.settled[0].settlement,
            Settlement::Intruded { echo: once.clone() }
        );

        // One being denied right now: the approval won the race.
        let racing = open(&mut reg, "per_racing", "ses_1", later);
        let _ = reg.claim(racing, Verdict::Deny { reason: None }, alice(), now);
        assert!(reg
            .replied("ses_1", "per_racing", &once)
            .intrusion
            .is_some());

        // `always` is never gatekeep's, even on a request it approved.
        let approved = open(&mut reg, "per_approved", "ses_1", later);
        let _ = reg.claim(approved, Verdict::Approve, alice(), now);
        let always = Echo::Approved { always: true };
        assert!(reg
            .replied("ses_1", "per_approved", &always)
            .intrusion
            .is_some());

        // An answer to a question nobody here answered.
        let question = match reg.ask(a_question("que_a"), due(later)) {
            Asked::Open { shown, .. } => shown.number,
            Asked::Refused(s) => panic!("refused: {s:?}"),
        };
        let echo = reg.replied("ses_1", "que_a", &Echo::Answered);
        assert_eq!(echo.intrusion.map(|i| i.number), Some(Some(question)));
    }

    #[test]
    fn resync_settles_open_entries_that_opencode_no_longer_waits_on() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut reg = Registry::new();
        let a = open(&mut reg, "per_a", "ses_1", later);
        let b = open(&mut reg, "per_b", "ses_1", later);
        let still: std::collections::HashSet<String> = ["per_b".to_owned()].into();
        let settled = reg.resync(&still);
        assert_eq!(
            settled.iter().map(|s| s.number).collect::<Vec<_>>(),
            vec![a]
        );
        assert_eq!(settled[0].reply, None);
        assert_eq!(
            reg.pending().iter().map(|r| r.number).collect::<Vec<_>>(),
            vec![b]
        );
    }

    fn request_for(id: &str, kind: &str, command: &str) -> Ask {
        Ask::permission_request(
            id,
            "ses_1",
            Permission {
                kind: kind.to_owned(),
                patterns: vec!["echo hi".to_owned()],
                command: Some(command.to_owned()),
                ..Permission::default()
            },
        )
    }

    #[test]
    fn a_trust_rule_approves_the_same_exact_request_again_and_nothing_else() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut reg = Registry::new();
        let Asked::Open { shown: first, .. } =
            reg.ask(request_for("per_a", "bash", "cargo test"), due(later))
        else {
            panic!("refused")
        };
        let _c = reg
            .claim(first.number, Verdict::ApproveAndTrust, alice(), now)
            .expect("claim");
        let s = reg.claim_succeeded(first.number).expect("settled");
        assert_eq!(s.settlement, Settlement::ApprovedAndTrusted { by: alice() });

        match reg.ask(request_for("per_b", "bash", "cargo test"), due(later)) {
            Asked::Refused(s) => {
                assert_eq!(
                    s.settlement,
                    Settlement::ApprovedByRule {
                        rule_of: first.number,
                        by: alice()
                    }
                );
                assert_eq!(s.reply, Some(Reply::Once));
            }
            Asked::Open { .. } => panic!("the trust rule should approve the same request"),
        }
        // A different command, or the same text under another kind, is asked.
        assert!(matches!(
            reg.ask(
                request_for("per_c", "bash", "cargo test --release"),
                due(later)
            ),
            Asked::Open { .. }
        ));
        assert!(matches!(
            reg.ask(request_for("per_d", "edit", "cargo test"), due(later)),
            Asked::Open { .. }
        ));
    }

    #[test]
    fn a_deny_rule_wins_over_a_trust_rule() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let rule = DenyRule::parse("bash:rm -rf *").expect("valid rule");
        let mut reg = Registry::with_deny_rules(vec![rule]);
        let Asked::Open { shown: first, .. } =
            reg.ask(request_for("per_a", "bash", "rm -rf"), due(later))
        else {
            panic!("`rm -rf` alone does not match `rm -rf *`")
        };
        let _c = reg
            .claim(first.number, Verdict::ApproveAndTrust, alice(), now)
            .expect("claim");
        let _s = reg.claim_succeeded(first.number);
        match reg.ask(request_for("per_b", "bash", "rm -rf /"), due(later)) {
            Asked::Refused(s) => {
                assert_eq!(
                    s.settlement,
                    Settlement::DeniedByRule {
                        rule: "bash:rm -rf *".to_owned()
                    }
                );
                assert!(
                    matches!(s.reply, Some(Reply::Reject { message }) if message.contains("bash:rm -rf *"))
                );
            }
            Asked::Open { .. } => panic!("--deny must deny at once"),
        }
    }

    #[test]
    fn deny_rules_are_checked_when_read() {
        assert!(matches!(
            DenyRule::parse("rm -rf *"),
            Err(DenyRuleError::Shape(_))
        ));
        assert!(matches!(
            DenyRule::parse("bash:"),
            Err(DenyRuleError::Shape(_))
        ));
        assert!(matches!(
            DenyRule::parse("bash:[unclosed"),
            Err(DenyRuleError::Glob { .. })
        ));
        let any_kind = DenyRule::parse("*:*secret*").expect("valid");
        assert!(any_kind.matches(&request_for("per_x", "read", "cat secret.txt")));
    }

    fn a_question(id: &str) -> Ask {
        Ask {
            subject: Subject::Question(vec![crate::approval::Question {
                header: "Q".to_owned(),
                text: "Which?".to_owned(),
                options: vec![("A".to_owned(), String::new())],
                multiple: false,
                custom: true,
            }]),
            ..request(id, "ses_1")
        }
    }

    #[test]
    fn an_approval_never_settles_a_question_and_an_answer_never_settles_a_permission() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut reg = Registry::new();
        let Asked::Open { shown: request, .. } = reg.ask(a_question("que_a"), due(later)) else {
            panic!("refused")
        };
        let question = request.number;
        let permission = open(&mut reg, "per_c", "ses_1", later);
        let answer = Verdict::Answer {
            answers: vec![vec!["A".to_owned()]],
        };
        for verdict in [Verdict::Approve, Verdict::ApproveAndTrust] {
            assert_eq!(
                reg.claim(question, verdict, alice(), now),
                Err(Refusal::WrongKind)
            );
        }
        assert_eq!(
            reg.claim(permission, answer.clone(), alice(), now),
            Err(Refusal::WrongKind)
        );
        // Neither entry was consumed: the right answer still wins.
        let claim = reg
            .claim(question, answer, alice(), now)
            .expect("an answer fits");
        assert_eq!(
            claim.reply,
            Reply::Answer {
                answers: vec![vec!["A".to_owned()]]
            }
        );
        assert!(reg
            .claim(permission, Verdict::Approve, alice(), now)
            .is_ok());
    }

    #[test]
    fn an_unanswered_question_is_dismissed_not_rejected_like_a_permission() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let Asked::Open { shown: request, .. } = reg.ask(a_question("que_a"), due(now)) else {
            panic!("refused")
        };
        let expired = reg.expire_due(now);
        assert_eq!(expired[0].number, request.number);
        assert_eq!(expired[0].reply, Some(Reply::Dismiss));
    }

    #[test]
    fn channel_failure_denies() {
        let now = Instant::now();
        let mut reg = Registry::new();
        let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
        let s = reg.channel_failed(n, "429".to_owned()).expect("denied");
        assert!(matches!(s.reply, Some(Reply::Reject { .. })));
        assert!(reg.channel_failed(n, "again".to_owned()).is_none());
    }

    /// The two-person rule: `[[require]] match = "bash:git push*"`,
    /// `approvals = 2`; the policy file is `/repo/gatekeep.toml`.
    mod two_person {
        use std::path::PathBuf;

        use super::*;
        use crate::approval::rules::{PolicyFiles, RequireRule};

        fn person(id: &str) -> Actor {
            Actor {
                channel: Channel::Discord,
                id: id.to_owned(),
                name: format!("user{id}"),
            }
        }

        fn at_the_terminal() -> Actor {
            Actor {
                channel: Channel::Terminal,
                id: "me".to_owned(),
                name: "me".to_owned(),
            }
        }

        fn from_another_terminal() -> Actor {
            Actor {
                channel: Channel::Local,
                id: "me".to_owned(),
                name: "me".to_owned(),
            }
        }

        fn policy(require: bool) -> Registry {
            let rules = if require {
                vec![RequireRule::new(
                    DenyRule::parse("bash:git push*").expect("rule"),
                    2,
                )]
            } else {
                vec![]
            };
            Registry::new().with_policy(
                rules,
                PolicyFiles::new(
                    std::path::Path::new("/repo"),
                    &[
                        PathBuf::from("/repo/gatekeep.toml"),
                        PathBuf::from("/repo/opencode.json"),
                    ],
                ),
            )
        }

        fn ask(reg: &mut Registry, ask: Ask, deadline: Instant) -> Shown {
            match reg.ask(ask, due(deadline)) {
                Asked::Open { shown, .. } => shown,
                Asked::Refused(s) => panic!("refused: {s:?}"),
            }
        }

        /// A `git push`, which the rule says needs two, due in a minute.
        fn a_push(reg: &mut Registry, id: &str, now: Instant) -> Shown {
            ask(
                reg,
                Ask::bash(id, "ses_1", "git push"),
                now + Duration::from_secs(60),
            )
        }

        fn edit_of(path: &str) -> Ask {
            Ask::permission_request(
                "per_edit",
                "ses_1",
                Permission {
                    kind: "edit".to_owned(),
                    patterns: vec![path.to_owned()],
                    path: Some(format!("/repo/{path}")),
                    ..Permission::default()
                },
            )
        }

        #[test]
        fn a_matching_request_runs_only_after_a_second_person_approves() {
            let now = Instant::now();
            let mut reg = policy(true);
            let shown = ask(
                &mut reg,
                Ask::bash("per_a", "ses_1", "git push origin main"),
                now + Duration::from_secs(60),
            );
            assert_eq!(shown.needs.approvals, 2);
            let first = reg.claim(shown.number, Verdict::Approve, person("1"), now);
            let Err(Refusal::Counted(progress)) = first else {
                panic!("the first approval must not reach OpenCode: {first:?}")
            };
            assert_eq!(progress.to_string(), "1 of 2 approvals — approved by user1");
            let again = reg.claim(shown.number, Verdict::Approve, person("1"), now);
            assert!(matches!(again, Err(Refusal::SameApprover(_))), "{again:?}");
            let claim = reg
                .claim(shown.number, Verdict::Approve, person("2"), now)
                .expect("the second person's approval is sent");
            assert_eq!(claim.reply, Reply::Once);
            let settled = reg.claim_succeeded(shown.number).expect("settles");
            assert_eq!(
                settled.settlement,
                Settlement::Approved {
                    by: person("2"),
                    also: vec![person("1")]
                }
            );
        }

        #[test]
        fn a_request_the_rule_does_not_match_needs_one() {
            let now = Instant::now();
            let mut reg = policy(true);
            let shown = ask(
                &mut reg,
                Ask::bash("per_a", "ses_1", "git status"),
                now + Duration::from_secs(60),
            );
            assert_eq!(shown.needs.approvals, 1);
            assert!(reg
                .claim(shown.number, Verdict::Approve, person("1"), now)
                .is_ok());
        }

        #[test]
        fn the_terminal_and_another_terminal_are_one_person() {
            let now = Instant::now();
            let mut reg = policy(true);
            let shown = a_push(&mut reg, "per_a", now);
            assert!(matches!(
                reg.claim(shown.number, Verdict::Approve, at_the_terminal(), now),
                Err(Refusal::Counted(_))
            ));
            assert!(matches!(
                reg.claim(shown.number, Verdict::Approve, from_another_terminal(), now),
                Err(Refusal::SameApprover(_))
            ));
            assert!(reg
                .claim(shown.number, Verdict::Approve, person("9"), now)
                .is_ok());
        }

        #[test]
        fn a_deny_after_one_approval_denies_at_once() {
            let now = Instant::now();
            let mut reg = policy(true);
            let shown = a_push(&mut reg, "per_a", now);
            let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
            let claim = reg
                .claim(
                    shown.number,
                    Verdict::Deny { reason: None },
                    person("2"),
                    now,
                )
                .expect("a deny wins");
            assert!(matches!(claim.reply, Reply::Reject { .. }));
            // Even the first approver may change their mind.
            let mut reg = policy(true);
            let shown = a_push(&mut reg, "per_b", now);
            let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
            assert!(reg
                .claim(
                    shown.number,
                    Verdict::Deny { reason: None },
                    person("1"),
                    now
                )
                .is_ok());
        }

        #[test]
        fn the_deadline_after_one_approval_denies() {
            let now = Instant::now();
            let mut reg = policy(true);
            let shown = a_push(&mut reg, "per_a", now);
            let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
            let expired = reg.expire_due(now + Duration::from_secs(61));
            assert_eq!(expired.len(), 1);
            assert_eq!(expired[0].settlement, Settlement::Expired);
            assert!(matches!(expired[0].reply, Some(Reply::Reject { .. })));
        }

        #[test]
        fn the_run_ending_after_one_approval_denies() {
            let now = Instant::now();
            let mut reg = policy(true);
            let shown = a_push(&mut reg, "per_a", now);
            let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
            let closed = reg.close(EndReason::Terminated);
            assert_eq!(closed.len(), 1);
            assert!(matches!(closed[0].reply, Some(Reply::Reject { .. })));
            assert!(matches!(
                reg.claim(shown.number, Verdict::Approve, person("2"), now),
                Err(Refusal::AlreadyDecided(_))
            ));
        }

        #[test]
        fn a_trust_rule_never_satisfies_a_require_rule() {
            let now = Instant::now();
            let mut reg = policy(true);
            // Two people approve and "trust" the push.
            let shown = a_push(&mut reg, "per_a", now);
            let _ = reg.claim(shown.number, Verdict::ApproveAndTrust, person("1"), now);
            let _ = reg
                .claim(shown.number, Verdict::ApproveAndTrust, person("2"), now)
                .expect("sent");
            let settled = reg.claim_succeeded(shown.number).expect("settles");
            assert!(
                matches!(settled.settlement, Settlement::Approved { .. }),
                "no trust rule was made: {settled:?}"
            );
            // The same push again is asked again, of two people.
            let again = a_push(&mut reg, "per_b", now);
            assert_eq!(again.needs.approvals, 2);
        }

        #[test]
        fn an_edit_of_the_policy_is_always_asked_and_needs_two_when_any_rule_does() {
            let now = Instant::now();
            for path in ["gatekeep.toml", "./opencode.json", "sub/../gatekeep.toml"] {
                let mut reg = policy(true);
                let shown = ask(&mut reg, edit_of(path), now + Duration::from_secs(60));
                assert!(shown.needs.policy_change, "{path}");
                assert_eq!(shown.needs.approvals, 2, "{path}");
            }
            // Without any `[[require]]`: one person, but never a trust rule.
            let mut reg = policy(false);
            let shown = ask(
                &mut reg,
                edit_of("gatekeep.toml"),
                now + Duration::from_secs(60),
            );
            assert_eq!(shown.needs.approvals, 1);
            let _ = reg
                .claim(shown.number, Verdict::ApproveAndTrust, person("1"), now)
                .expect("sent");
            let settled = reg.claim_succeeded(shown.number).expect("settles");
            assert!(matches!(settled.settlement, Settlement::Approved { .. }));
            let mut again = edit_of("gatekeep.toml");
            again.id = "per_edit2".to_owned();
            assert!(matches!(
                reg.ask(again, due(now + Duration::from_secs(60))),
                Asked::Open { .. }
            ));
            // Another file of the workspace is an ordinary edit.
            let mut reg = policy(true);
            let shown = ask(
                &mut reg,
                edit_of("src/main.rs"),
                now + Duration::from_secs(60),
            );
            assert!(!shown.needs.policy_change);
            assert_eq!(shown.needs.approvals, 1);
        }
    }
}

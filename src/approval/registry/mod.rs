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
mod tests;

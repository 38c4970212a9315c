//! The approval side: who may answer a permission request, and how each
//! request is settled exactly once.
//!
//! [`registry`] is a pure state machine (no tokio, no I/O) so every race in
//! docs/design.md ("The approval registry") can be tested by calling it in order. [`task`] is the one task
//! that owns a registry, its deadlines and the replies to OpenCode.

pub mod ledger;
pub mod messages;
pub mod registry;
pub mod rules;
pub mod task;

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// What OpenCode asks, as the approval side sees it: already translated from
/// OpenCode's event by the bridge (`opencode::bridge`), not yet sanitized
/// for any transport (each transport renders untrusted text its own way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// OpenCode's request id (`per_…`, `que_…`): what a reply is sent to.
    pub id: String,
    pub session_id: String,
    /// Which agent asked: `None` for the root session, else a label for the
    /// subagent (its session title or agent name).
    pub agent: Option<String>,
    pub subject: Subject,
}

/// What is asked: a permission for one tool call, or the agent's questions.
/// Each is settled only by its own kind of answer (an approval never settles
/// a question, an answer never settles a permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Permission(Permission),
    /// The agent's `question` tool: never empty.
    Question(Vec<Question>),
}

/// A permission request for one tool call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permission {
    /// Permission kind: `bash`, `edit`, `external_directory`, …
    pub kind: String,
    pub patterns: Vec<String>,
    /// The command for `bash`, if any.
    pub command: Option<String>,
    /// The file path for edits and external directories, if any.
    pub path: Option<String>,
    /// The unified diff of an edit, if any.
    pub diff: Option<String>,
    /// The agent's own description of what it wants to do.
    pub description: Option<String>,
}

impl Ask {
    /// A permission request.
    #[must_use]
    pub fn permission_request(
        id: impl Into<String>,
        session_id: impl Into<String>,
        permission: Permission,
    ) -> Self {
        Self {
            id: id.into(),
            session_id: session_id.into(),
            agent: None,
            subject: Subject::Permission(permission),
        }
    }

    /// A `bash` permission request for `command`, as OpenCode asks it: the
    /// command is also its pattern.
    #[must_use]
    pub fn bash(id: impl Into<String>, session_id: impl Into<String>, command: &str) -> Self {
        Self::permission_request(
            id,
            session_id,
            Permission {
                kind: "bash".to_owned(),
                patterns: vec![command.to_owned()],
                command: Some(command.to_owned()),
                ..Permission::default()
            },
        )
    }

    /// The agent's questions.
    #[must_use]
    pub fn question(
        id: impl Into<String>,
        session_id: impl Into<String>,
        questions: Vec<Question>,
    ) -> Self {
        Self {
            id: id.into(),
            session_id: session_id.into(),
            agent: None,
            subject: Subject::Question(questions),
        }
    }

    /// The permission kind, or `question`.
    #[must_use]
    pub fn kind(&self) -> &str {
        match &self.subject {
            Subject::Permission(p) => &p.kind,
            Subject::Question(_) => "question",
        }
    }

    /// The one line that says what would happen if approved (for a
    /// question: the first question).
    #[must_use]
    pub fn summary(&self) -> &str {
        match &self.subject {
            Subject::Permission(p) => p
                .command
                .as_deref()
                .or(p.path.as_deref())
                .or(p.patterns.first().map(String::as_str))
                .unwrap_or(""),
            Subject::Question(q) => q.first().map_or("", |q| q.text.as_str()),
        }
    }

    /// A question of the agent, not a permission request.
    #[must_use]
    pub fn is_question(&self) -> bool {
        matches!(self.subject, Subject::Question(_))
    }

    /// The permission asked for, if this is a permission request.
    #[must_use]
    pub fn permission(&self) -> Option<&Permission> {
        match &self.subject {
            Subject::Permission(p) => Some(p),
            Subject::Question(_) => None,
        }
    }

    /// The questions asked, empty for a permission request.
    #[must_use]
    pub fn questions(&self) -> &[Question] {
        match &self.subject {
            Subject::Permission(_) => &[],
            Subject::Question(q) => q,
        }
    }

    /// The command of a `bash` permission request.
    #[must_use]
    pub fn command(&self) -> Option<&str> {
        self.permission().and_then(|p| p.command.as_deref())
    }

    /// The file path of an edit or an external directory.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        self.permission().and_then(|p| p.path.as_deref())
    }

    /// The unified diff of an edit.
    #[must_use]
    pub fn diff(&self) -> Option<&str> {
        self.permission().and_then(|p| p.diff.as_deref())
    }

    /// The agent's own description of the tool call.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.permission().and_then(|p| p.description.as_deref())
    }

    /// OpenCode's patterns for the permission (what `always` would cover).
    #[must_use]
    pub fn patterns(&self) -> &[String] {
        self.permission().map_or(&[], |p| p.patterns.as_slice())
    }
}

/// A registered request, as every channel shows it: the registry's output,
/// so nothing outside it makes up a number or a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// Short number shown to humans and carried in button ids; assigned by
    /// the registry, unique within a run.
    pub number: u32,
    /// What approving it takes (the registry decides, from the policy).
    pub needs: Needs,
    pub deadline: Deadline,
    pub ask: Ask,
}

/// What approving one request takes. Most need one human; a request that
/// matches a `[[require]]` rule needs that many distinct ones, and an edit
/// of gatekeep's own policy is always asked (docs/design.md, "Policy as
/// code").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Distinct approvers (at least 1).
    pub approvals: u8,
    /// An edit of the policy file or the workspace's OpenCode config: a
    /// change to the rules of this run or the next.
    pub policy_change: bool,
}

impl Default for Needs {
    fn default() -> Self {
        Self {
            approvals: 1,
            policy_change: false,
        }
    }
}

impl Needs {
    /// A trust rule may approve it: one approver, and not a policy change.
    #[must_use]
    pub fn trustable(&self) -> bool {
        self.approvals <= 1 && !self.policy_change
    }
}

/// The approvals a request that needs several has so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub number: u32,
    pub needed: u8,
    /// Distinct approvers so far, in order.
    pub by: Vec<Actor>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.by.iter().map(|a| a.name.as_str()).collect();
        write!(
            f,
            "{} of {} approvals — approved by {}",
            self.by.len(),
            self.needed,
            names.join(", ")
        )
    }
}

/// When a request is denied for want of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// What the registry expires by.
    pub at: Instant,
    /// The same moment on the wall clock, for display (Discord relative
    /// timestamps).
    pub wall: SystemTime,
    /// Time left when the request was registered, for terminal display.
    pub left: Duration,
}

impl Deadline {
    /// A deadline `left` from now that is shown as `wall`: for rendering
    /// where the wall clock is fixed (snapshots, reports).
    #[must_use]
    pub fn shown_as(wall: SystemTime, left: Duration) -> Self {
        Self {
            at: Instant::now() + left,
            wall,
            left,
        }
    }

    /// The deadline `at`, seen from `now` (and the wall clock's now).
    #[must_use]
    pub fn from_now(now: Instant, at: Instant) -> Self {
        let left = at.saturating_duration_since(now);
        Self {
            at,
            wall: SystemTime::now() + left,
            left,
        }
    }
}

/// One question the agent asks (its `question` tool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub header: String,
    pub text: String,
    /// `(label, description)` of each choice.
    pub options: Vec<(String, String)>,
    /// Several options may be chosen.
    pub multiple: bool,
    /// A free-text answer is accepted besides the options.
    pub custom: bool,
}

/// The one reading of an answer to a question, shared by every channel:
/// whatever the channel's input looks like, the answer sent to OpenCode is
/// a list of option labels or one free text.
impl Question {
    /// The labels of the options at `indexes` (0-based; order and repeats
    /// do not matter). `None` when an index does not exist, nothing was
    /// chosen, or several were for a single choice.
    #[must_use]
    pub fn pick(&self, indexes: &[usize]) -> Option<Vec<String>> {
        let mut indexes = indexes.to_vec();
        indexes.sort_unstable();
        indexes.dedup();
        if indexes.is_empty() || (indexes.len() > 1 && !self.multiple) {
            return None;
        }
        indexes
            .iter()
            .map(|i| self.options.get(*i).map(|(label, _)| label.clone()))
            .collect()
    }

    /// Option numbers as a person types them: `2` or `1,3` (1-based).
    #[must_use]
    pub fn pick_numbers(&self, text: &str) -> Option<Vec<String>> {
        let picks = text
            .split(',')
            .map(|n| {
                let n: usize = n.trim().parse().ok()?;
                self.options
                    .get(n.checked_sub(1)?)
                    .map(|(label, _)| label.clone())
            })
            .collect::<Option<Vec<_>>>()?;
        (!picks.is_empty() && (self.multiple || picks.len() == 1)).then_some(picks)
    }

    /// A free-text answer, where the question accepts one.
    #[must_use]
    pub fn free_text(&self, text: &str) -> Option<Vec<String>> {
        let text = text.trim();
        (self.custom && !text.is_empty()).then(|| vec![text.to_owned()])
    }
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Terminal,
    Discord,
    /// `gatekeep approve|deny` from another terminal of the same user.
    Local,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Terminal => "terminal",
            Channel::Discord => "discord",
            Channel::Local => "local",
        })
    }
}

/// Who decided: a human identified by the channel they used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub channel: Channel,
    /// Stable id in that channel (Discord user id; the local user name).
    pub id: String,
    /// Display name, for messages.
    pub name: String,
}

impl Actor {
    /// Who this is, for counting distinct approvers: a Discord user, or
    /// the local user (the terminal and `gatekeep approve` count once).
    #[must_use]
    pub fn person(&self) -> (bool, &str) {
        match self.channel {
            Channel::Discord => (true, &self.id),
            Channel::Terminal | Channel::Local => (false, ""),
        }
    }
}

/// A human's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    /// Approve, and approve the same exact request (same permission kind,
    /// same command or path) again for the rest of this run. Never sent to
    /// OpenCode as `always`: the rule lives and dies with the run.
    ApproveAndTrust,
    Deny {
        reason: Option<String>,
    },
    /// The answer to a question: for each question, the chosen option labels
    /// or one free text. Only a question accepts it.
    Answer {
        answers: Vec<Vec<String>>,
    },
}

/// What OpenCode says became of a request, whoever answered it: its
/// `permission.replied` / `question.replied` / `question.rejected` echo,
/// translated from OpenCode's words by the bridge. A word gatekeep does not
/// know is kept as it is and never taken for a rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// `once`, or `always` (which gatekeep never sends).
    Approved {
        always: bool,
    },
    /// `reject`: OpenCode also rejects the session's other pending requests.
    Rejected,
    /// A question was answered.
    Answered,
    /// A question was dismissed.
    Dismissed,
    Unknown(String),
}

impl Echo {
    /// Whether this echo lets the agent go ahead (an approval or an answer).
    #[must_use]
    pub fn lets_agent_proceed(&self) -> bool {
        matches!(self, Echo::Approved { .. } | Echo::Answered)
    }
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Echo::Approved { always: false } => "approved once",
            Echo::Approved { always: true } => "approved always",
            Echo::Rejected => "rejected",
            Echo::Answered => "answered",
            Echo::Dismissed => "dismissed",
            Echo::Unknown(word) => word,
        })
    }
}

/// Why the run is ending; every request still pending is denied with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Finished,
    Failed,
    TimedOut,
    Interrupted,
    Terminated,
    HungUp,
    OpenCodeDied,
    InternalError,
    /// A request was approved or answered by something other than gatekeep
    /// (an intruder holding OpenCode's password): the run is stopped at once.
    Intruded,
}

impl EndReason {
    /// The reject message OpenCode (and so the model) receives.
    #[must_use]
    pub fn deny_message(self) -> &'static str {
        match self {
            EndReason::Finished => "denied by gatekeep: run finished",
            EndReason::Failed => "denied by gatekeep: run failed",
            EndReason::TimedOut => "denied by gatekeep: run timed out",
            EndReason::Interrupted => "denied by gatekeep: interrupted",
            EndReason::Terminated => "denied by gatekeep: terminated",
            EndReason::HungUp => "denied by gatekeep: terminal hung up",
            EndReason::OpenCodeDied => "denied by gatekeep: OpenCode died",
            EndReason::InternalError => "denied by gatekeep: internal error",
            EndReason::Intruded => {
                "denied by gatekeep: a request was answered by something other than gatekeep"
            }
        }
    }

    /// Short human phrase: "timed out", "interrupted", …
    #[must_use]
    pub fn phrase(self) -> &'static str {
        match self {
            EndReason::Finished => "finished",
            EndReason::Failed => "failed",
            EndReason::TimedOut => "timed out",
            EndReason::Interrupted => "interrupted",
            EndReason::Terminated => "terminated",
            EndReason::HungUp => "hung up",
            EndReason::OpenCodeDied => "OpenCode died",
            EndReason::InternalError => "internal error",
            EndReason::Intruded => {
                "stopped: a request was answered by something other than gatekeep"
            }
        }
    }
}

/// The final state of a request. Every path out of `open` ends in one of
/// these, and every one but `Approved` means OpenCode was (or will be) told
/// `reject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Approved {
        by: Actor,
        /// The approvers before `by`, when the request needed several.
        also: Vec<Actor>,
    },
    /// Approved, and a run-scoped trust rule was made from it.
    ApprovedAndTrusted {
        by: Actor,
    },
    /// Approved without asking by the trust rule made on request `rule_of`.
    ApprovedByRule {
        rule_of: u32,
        by: Actor,
    },
    /// Denied without asking by a `--deny` rule.
    DeniedByRule {
        rule: String,
    },
    /// A question answered by a human.
    Answered {
        by: Actor,
        answers: Vec<Vec<String>>,
    },
    Denied {
        by: Actor,
        reason: Option<String>,
    },
    /// No answer before the request's deadline.
    Expired,
    /// A reject of another request in the same session rejected this one too.
    DeniedWithRelated {
        related: u32,
    },
    /// OpenCode asked again with the same id; a new entry replaced this one.
    Superseded {
        by_number: u32,
    },
    /// The run ended before anyone answered.
    RunEnded(EndReason),
    /// The approval channel could not show or answer the request.
    ChannelFailed {
        detail: String,
    },
    /// Approved or answered by something other than gatekeep: the run is
    /// stopped at once (a foreign *reject* is harmless: `RepliedElsewhere`).
    Intruded {
        echo: Echo,
    },
    /// OpenCode reported a reply gatekeep did not send (another client), or
    /// stopped waiting on it while the event stream was down (`None`: how it
    /// was answered is not known).
    RepliedElsewhere {
        echo: Option<Echo>,
    },
}

impl Settlement {
    /// The settlement's stable name in the summary and the audit log.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Settlement::Approved { .. } => "approved",
            Settlement::ApprovedAndTrusted { .. } => "approved_and_trusted",
            Settlement::ApprovedByRule { .. } => "approved_by_trust_rule",
            Settlement::DeniedByRule { .. } => "denied_by_rule",
            Settlement::Answered { .. } => "answered",
            Settlement::Denied { .. } => "denied",
            Settlement::Expired => "expired",
            Settlement::DeniedWithRelated { .. } => "denied_with_related",
            Settlement::Superseded { .. } => "superseded",
            Settlement::RunEnded(_) => "run_ended",
            Settlement::ChannelFailed { .. } => "channel_failed",
            Settlement::RepliedElsewhere { .. } => "replied_elsewhere",
            Settlement::Intruded { .. } => "intruded",
        }
    }

    #[must_use]
    pub fn is_approved(&self) -> bool {
        matches!(
            self,
            Settlement::Approved { .. }
                | Settlement::ApprovedAndTrusted { .. }
                | Settlement::ApprovedByRule { .. }
        )
    }

    /// The reject message to send OpenCode when gatekeep itself must deny,
    /// or `None` when nothing needs to be sent.
    #[must_use]
    pub fn deny_message(&self) -> Option<String> {
        match self {
            Settlement::Denied { reason, .. } => Some(
                reason
                    .clone()
                    .unwrap_or_else(|| "denied by a human approver".to_owned()),
            ),
            Settlement::Expired => {
                Some("denied by gatekeep: no answer before the approval deadline".to_owned())
            }
            Settlement::RunEnded(r) => Some(r.deny_message().to_owned()),
            Settlement::DeniedByRule { rule } => Some(format!(
                "denied by gatekeep: matches the --deny rule `{rule}`"
            )),
            Settlement::ChannelFailed { .. } => {
                Some("denied by gatekeep: the approval channel failed".to_owned())
            }
            Settlement::Approved { .. }
            | Settlement::ApprovedAndTrusted { .. }
            | Settlement::ApprovedByRule { .. }
            | Settlement::Answered { .. }
            | Settlement::DeniedWithRelated { .. }
            | Settlement::Superseded { .. }
            | Settlement::RepliedElsewhere { .. }
            | Settlement::Intruded { .. } => None,
        }
    }
}

impl fmt::Display for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Settlement::Approved { by, also } => {
                for earlier in also {
                    write!(f, "approved by {} ({}), ", earlier.name, earlier.channel)?;
                }
                write!(f, "approved by {} ({})", by.name, by.channel)
            }
            Settlement::ApprovedAndTrusted { by } => write!(
                f,
                "approved by {} ({}), and trusted again for the rest of this run",
                by.name, by.channel
            ),
            Settlement::ApprovedByRule { rule_of, by } => {
                write!(
                    f,
                    "approved by the trust rule {} made on request #{rule_of}",
                    by.name
                )
            }
            Settlement::DeniedByRule { rule } => write!(f, "denied by the --deny rule `{rule}`"),
            Settlement::Answered { by, answers } => write!(
                f,
                "answered by {} ({}): {}",
                by.name,
                by.channel,
                answers
                    .iter()
                    .map(|a| a.join(", "))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Settlement::Denied { by, reason: None } => {
                write!(f, "denied by {} ({})", by.name, by.channel)
            }
            Settlement::Denied {
                by,
                reason: Some(r),
            } => {
                write!(f, "denied by {} ({}): {r}", by.name, by.channel)
            }
            Settlement::Expired => f.write_str("expired: no answer before the deadline"),
            Settlement::DeniedWithRelated { related } => {
                write!(f, "denied with related request #{related}")
            }
            Settlement::Superseded { by_number } => write!(f, "superseded by request #{by_number}"),
            Settlement::RunEnded(r) => write!(f, "cancelled: run {}", r.phrase()),
            Settlement::ChannelFailed { detail } => {
                write!(f, "denied: approval channel failure ({detail})")
            }
            Settlement::RepliedElsewhere { echo: Some(echo) } => {
                write!(f, "answered outside gatekeep: {echo}")
            }
            Settlement::Intruded { echo } => write!(
                f,
                "{echo} by something other than gatekeep: the run was stopped"
            ),
            Settlement::RepliedElsewhere { echo: None } => {
                f.write_str("answered outside gatekeep while the event stream was down")
            }
        }
    }
}

/// Requests for the unit tests of every module, written once.
#[cfg(test)]
pub(crate) mod test_requests {
    use std::time::{Duration, SystemTime};

    use super::{Ask, Deadline, Permission, Shown};

    /// Request `number`: `bash` running `command`, in session `ses_1`, with
    /// OpenCode id `per_<number>`, shown at the epoch with no time left.
    pub(crate) fn bash(number: u32, command: &str) -> Shown {
        Shown {
            needs: crate::approval::Needs::default(),
            number,
            deadline: Deadline::shown_as(SystemTime::UNIX_EPOCH, Duration::ZERO),
            ask: Ask::permission_request(
                format!("per_{number}"),
                "ses_1",
                Permission {
                    kind: "bash".to_owned(),
                    command: Some(command.to_owned()),
                    ..Permission::default()
                },
            ),
        }
    }
}

//! The approval side: who may answer a permission request, and how each
//! request is settled exactly once.
//!
//! [`registry`] is a pure state machine (no tokio, no I/O) so every race in
//! DESIGN §5 can be tested by calling it in order. [`task`] is the one task
//! that owns a registry, its deadlines and the replies to OpenCode.

pub mod registry;
pub mod task;

use std::fmt;
use std::time::{Duration, SystemTime};

/// A permission request as the approval side sees it: already parsed from the
/// OpenCode event, not yet sanitized for any transport (each transport renders
/// untrusted text its own way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// OpenCode's request id (`per_…`): what a reply is sent to.
    pub id: String,
    /// Short number shown to humans and carried in button ids; assigned by
    /// the registry, unique within a run.
    pub number: u32,
    pub session_id: String,
    /// Which agent asked: `None` for the root session, else a label for the
    /// subagent (its session title or agent name).
    pub agent: Option<String>,
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
    /// Wall-clock deadline, for display (Discord relative timestamps).
    pub deadline_wall: SystemTime,
    /// Time left when the request was registered, for terminal display.
    pub time_left: Duration,
    /// Non-empty when this is a question of the agent's `question` tool
    /// rather than a permission request: it is settled only by an answer
    /// (or dismissed), never by an approval.
    pub questions: Vec<Question>,
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

impl Request {
    /// The one line that says what would happen if approved (for a
    /// question: the first question).
    #[must_use]
    pub fn subject(&self) -> &str {
        self.command
            .as_deref()
            .or(self.path.as_deref())
            .or(self.patterns.first().map(String::as_str))
            .or(self.questions.first().map(|q| q.text.as_str()))
            .unwrap_or("")
    }

    /// A question of the agent, not a permission request.
    #[must_use]
    pub fn is_question(&self) -> bool {
        !self.questions.is_empty()
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
    /// OpenCode reported a reply gatekeep did not send (another client).
    RepliedElsewhere {
        reply: String,
    },
}

impl Settlement {
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
            | Settlement::RepliedElsewhere { .. } => None,
        }
    }
}

impl fmt::Display for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Settlement::Approved { by } => write!(f, "approved by {} ({})", by.name, by.channel),
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
            Settlement::RepliedElsewhere { reply } => {
                write!(f, "answered outside gatekeep: {reply}")
            }
        }
    }
}

//! The documented exit codes, and how each way a run can end maps to one.

use crate::approval::EndReason;

/// gatekeep's exit codes. They are part of the interface: CI jobs and cron
/// wrappers branch on them, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// The run finished: the root session went idle without an error.
    Finished = 0,
    /// The agent run failed (`session.error`, the event stream ended early).
    RunFailed = 1,
    /// Bad command line, a workspace configuration that would bypass
    /// `--gate`, a policy surface with changes no human has looked at, a
    /// plugin or custom tool the policy does not allow, no guard plugin, or
    /// no agent's box; nothing reached the agent.
    Usage = 2,
    /// No approval channel could be set up; nothing was sent to the agent.
    ChannelUnavailable = 3,
    /// OpenCode failed to start, died during the run, or is a release
    /// gatekeep does not support (refused before anything reached the agent).
    OpenCodeFailed = 4,
    /// An intrusion: a request approved or answered by something other
    /// than gatekeep, the policy surface changed without an approved edit,
    /// or a `--gate` call ran without asking; the run was stopped at once.
    Intruded = 5,
    /// `--timeout` elapsed.
    TimedOut = 124,
    /// SIGHUP.
    HungUp = 129,
    /// SIGINT (Ctrl-C).
    Interrupted = 130,
    /// SIGTERM.
    Terminated = 143,
}

impl Code {
    #[must_use]
    pub fn as_i32(self) -> i32 {
        i32::from(self as u8)
    }

    /// The exit code for a run that ended for `reason`.
    #[must_use]
    pub fn for_end(reason: EndReason) -> Self {
        match reason {
            EndReason::Finished => Code::Finished,
            EndReason::Failed | EndReason::InternalError => Code::RunFailed,
            EndReason::TimedOut => Code::TimedOut,
            EndReason::Interrupted => Code::Interrupted,
            EndReason::Terminated => Code::Terminated,
            EndReason::HungUp => Code::HungUp,
            EndReason::OpenCodeDied => Code::OpenCodeFailed,
            EndReason::Intruded => Code::Intruded,
        }
    }
}

/// The table printed in `--help` and the README.
pub const HELP_TABLE: &str = "\
Exit codes:
  0    run finished
  1    agent run failed (session error, event stream ended early)
  2    usage error, a config that would bypass --gate, unreviewed policy changes,
       an unallowed plugin or tool, no guard, no agent's box (nothing reached the agent)
  3    approval channel unavailable (nothing sent to the agent)
  4    OpenCode failed to start or died, or is an unsupported release (OpenCode 2)
  5    an intrusion: a request answered by something other than gatekeep, the policy
       surface changed, or a gated call ran unasked (run stopped at once)
  124  run timed out (--timeout)
  129  SIGHUP
  130  SIGINT (Ctrl-C)
  143  SIGTERM";

//! The run summary: `--summary-json <FILE>`, and the short human summary
//! printed at the end of every run.
//!
//! CI jobs and cron wrappers read the JSON to learn what happened without
//! parsing terminal output, so it is written on every path out of a run —
//! also when the run never started (OpenCode missing, no channel) — and
//! atomically (a temporary file renamed into place), so a reader never sees
//! half a summary. A summary that cannot be written is reported but changes
//! neither the run's safety nor its exit code: the approvals were already
//! settled and the agent stopped by the time it is written.
//!
//! Everything that came from the agent passes through the run's
//! [`Redactor`] first.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::approval::ledger::{Ledger, LedgerEntry};
use crate::approval::{EndReason, Settlement};
use crate::exit::Code;
use crate::redact::Redactor;

/// Longest request summary kept in the JSON; a diff or a pasted script
/// does not belong in a run summary.
const MAX_SUMMARY_CHARS: usize = 300;

/// The summary format's version, bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// What OpenCode reported about the root session: model, tokens and cost.
/// Kept up to date by the supervisor from `session.updated`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub session_id: Option<String>,
    /// `provider/model`.
    pub model: Option<String>,
    pub tokens: Option<Tokens>,
    pub cost: Option<f64>,
}

/// Tokens as the summary reports them (`--summary-json`'s schema, kept
/// apart from OpenCode's wire shape, which the bridge reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache: TokenCache,
}

/// Cached tokens read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenCache {
    pub read: u64,
    pub write: u64,
}

/// What is known about the run before it starts, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub workspace: Option<PathBuf>,
    /// The `-m` of the run description, if given.
    pub model: Option<String>,
    /// `discord` or `terminal`.
    pub channel: Option<&'static str>,
    /// The policy file in use, if any.
    pub policy_file: Option<PathBuf>,
    /// It had changes not committed to git when the run started: the rules
    /// were not the reviewed ones.
    pub policy_uncommitted: bool,
    /// What this run gives up of gatekeep's protections, by the user's
    /// choice (`--no-isolate`, …): said wherever the run is described.
    pub caveats: Vec<String>,
}

/// How the run ended, as the summary reports it.
#[derive(Debug, Clone)]
pub enum Ending<'a> {
    /// The supervisor ran (started or tried to): its outcome.
    Run {
        code: Code,
        reason: EndReason,
        detail: Option<&'a str>,
        ledger: &'a Ledger,
        usage: &'a Usage,
        redactor: &'a Redactor,
    },
    /// gatekeep stopped before the supervisor ran (bad input, no runtime).
    NotStarted { code: Code, detail: &'a str },
    /// The supervisor stopped on a bug (a panic): an internal error, exit 1.
    Crashed { detail: &'a str },
}

/// The JSON document of `--summary-json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub format_version: u32,
    pub gatekeep_version: &'static str,
    /// `finished`, `failed`, `timed_out`, `interrupted`, `terminated`,
    /// `hung_up`, `opencode_died`, `internal_error`, `not_started`.
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub exit_code: i32,
    pub started_at: String,
    pub ended_at: String,
    pub duration_seconds: f64,
    pub workspace: Option<String>,
    pub channel: Option<&'static str>,
    pub policy_file: Option<String>,
    pub policy_uncommitted: bool,
    /// What the run gave up of gatekeep's protections by the user's choice
    /// (e.g. "isolation off (--no-isolate): …"); empty when nothing.
    pub caveats: Vec<String>,
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub tokens: Option<Tokens>,
    pub cost: Option<f64>,
    pub approved: u32,
    pub denied: u32,
    pub requests: Vec<RequestSummary>,
}

/// One permission request and how it was settled.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    pub number: u32,
    pub id: String,
    pub kind: String,
    /// `None` for the root session, the subagent's label otherwise.
    pub agent: Option<String>,
    /// What would have run or changed (command, path or pattern), redacted
    /// and shortened.
    pub summary: String,
    /// See [`Settlement::name`].
    pub decision: &'static str,
    pub approved: bool,
    pub by: Option<Person>,
    /// Every approver, in order, when the request needed several.
    pub approvers: Vec<Person>,
    pub channel: Option<String>,
    /// Deny reason, or why gatekeep denied without a human.
    pub reason: Option<String>,
    pub asked_at: String,
    pub decided_at: String,
    pub time_to_decision_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub id: String,
    pub name: String,
}

impl Person {
    fn of(actor: &crate::approval::Actor) -> Self {
        Self {
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

/// Why the summary could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(
        "could not write the run summary (--summary-json) to {path}: {source}; \
         point --summary-json at a writable location (the run's exit code is unchanged)"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not encode the run summary (this is a bug): {0}")]
    Encode(#[from] serde_json::Error),
}

impl RunSummary {
    #[must_use]
    pub fn new(
        ending: &Ending<'_>,
        context: &Context,
        started: SystemTime,
        ended: SystemTime,
    ) -> Self {
        let duration = ended.duration_since(started).unwrap_or_default();
        let mut summary = RunSummary {
            format_version: FORMAT_VERSION,
            gatekeep_version: env!("CARGO_PKG_VERSION"),
            outcome: "not_started",
            detail: None,
            exit_code: 0,
            started_at: rfc3339(started),
            ended_at: rfc3339(ended),
            duration_seconds: seconds(duration),
            workspace: context.workspace.as_ref().map(|p| p.display().to_string()),
            channel: context.channel,
            policy_file: context
                .policy_file
                .as_ref()
                .map(|p| p.display().to_string()),
            policy_uncommitted: context.policy_uncommitted,
            caveats: context.caveats.clone(),
            session_id: None,
            model: context.model.clone(),
            tokens: None,
            cost: None,
            approved: 0,
            denied: 0,
            requests: Vec::new(),
        };
        match ending {
            Ending::NotStarted { code, detail } => {
                summary.exit_code = code.as_i32();
                summary.detail = Some((*detail).to_owned());
            }
            Ending::Crashed { detail } => {
                summary.outcome = outcome_name(EndReason::InternalError);
                summary.exit_code = Code::RunFailed.as_i32();
                summary.detail = Some((*detail).to_owned());
            }
            Ending::Run {
                code,
                reason,
                detail,
                ledger,
                usage,
                redactor,
            } => {
                summary.outcome = outcome_name(*reason);
                summary.exit_code = code.as_i32();
                summary.detail = detail.map(|d| redactor.redact(d).into_owned());
                summary.session_id.clone_from(&usage.session_id);
                if usage.model.is_some() {
                    summary.model.clone_from(&usage.model);
                }
                summary.tokens = usage.tokens;
                summary.cost = usage.cost;
                summary.approved = ledger.approved();
                summary.denied = ledger.denied();
                summary.requests = ledger
                    .entries
                    .iter()
                    .map(|e| request_summary(e, redactor))
                    .collect();
            }
        }
        summary
    }

    /// Write the summary to `path` atomically: a temporary file beside it,
    /// flushed to disk, then renamed over `path`.
    pub fn write(&self, path: &Path) -> Result<(), SummaryError> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        let fail = |source| SummaryError::Write {
            path: path.to_owned(),
            source,
        };
        let name = path
            .file_name()
            .ok_or_else(|| fail(std::io::Error::other("not a file name")))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(fail(err));
        }
        Ok(())
    }
}

impl RunSummary {
    /// The Markdown report (`--summary-md`, a GitHub step summary): the
    /// outcome and a table of the requests. Every cell that came from the
    /// agent or a person is neutralised: no table breaks, no links, no
    /// mentions, no HTML.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let icon = if self.exit_code == 0 { "✅" } else { "❌" };
        let _ = writeln!(
            md,
            "### {icon} gatekeep: run {}\n",
            self.outcome.replace('_', " ")
        );
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| exit code | {} |", self.exit_code);
        let _ = writeln!(md, "| duration | {:.1} s |", self.duration_seconds);
        if let Some(model) = &self.model {
            let _ = writeln!(md, "| model | {} |", cell(model));
        }
        let _ = writeln!(
            md,
            "| approved / denied | {} / {} |",
            self.approved, self.denied
        );
        if let Some(detail) = &self.detail {
            let _ = writeln!(md, "| detail | {} |", cell(detail));
        }
        if let Some(policy) = &self.policy_file {
            let note = if self.policy_uncommitted {
                " ⚠️ **had uncommitted changes: not the reviewed rules**"
            } else {
                ""
            };
            let _ = writeln!(md, "| policy | {}{note} |", cell(policy));
        }
        for caveat in &self.caveats {
            let _ = writeln!(md, "| ⚠️ caveat | {} |", cell(caveat));
        }
        if self.requests.is_empty() {
            md.push_str("\nNo permission requests.\n");
            return md;
        }
        md.push_str(
            "\n| # | kind | request | decision | who | channel | time to decision |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for r in &self.requests {
            let who = if r.approvers.is_empty() {
                r.by.as_ref().map(|p| cell(&p.name)).unwrap_or_default()
            } else {
                r.approvers
                    .iter()
                    .map(|p| cell(&p.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {who} | {} | {:.1} s |",
                r.number,
                cell(&r.kind),
                cell(&r.summary),
                r.decision.replace('_', " "),
                r.channel.as_deref().unwrap_or(""),
                r.time_to_decision_seconds
            );
        }
        md
    }

    /// Write the Markdown report to `path`, or append it (a GitHub step
    /// summary collects every step's).
    pub fn write_markdown(&self, path: &Path, append: bool) -> Result<(), SummaryError> {
        let fail = |source| SummaryError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(fail)?;
        file.write_all(self.markdown().as_bytes()).map_err(fail)
    }
}

/// One table cell of untrusted text: one line, bounded, and nothing
/// Markdown or HTML would act on.
fn cell(text: &str) -> String {
    let mut out = String::new();
    for c in shorten(text, 120).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{200b}"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn request_summary(entry: &LedgerEntry, redactor: &Redactor) -> RequestSummary {
    let request = &entry.request;
    let (by, channel, reason) = match &entry.settlement {
        Settlement::Approved { by, also } if also.is_empty() => {
            (Some(by), Some(by.channel.to_string()), None)
        }
        Settlement::ApprovedAndTrusted { by } => (Some(by), Some(by.channel.to_string()), None),
        // Several approvers, every one named in the reason; approved
        // without asking, on the strength of `by`'s earlier trust; or a
        // question answered by `by` (the answers are the reason).
        Settlement::Approved { by, .. }
        | Settlement::ApprovedByRule { by, .. }
        | Settlement::Answered { by, .. } => (
            Some(by),
            Some(by.channel.to_string()),
            Some(entry.settlement.to_string()),
        ),
        Settlement::Denied { by, reason } => {
            (Some(by), Some(by.channel.to_string()), reason.clone())
        }
        other => (None, None, Some(other.to_string())),
    };
    RequestSummary {
        number: request.number,
        id: request.ask.id.clone(),
        kind: request.ask.kind().to_owned(),
        agent: request
            .ask
            .agent
            .as_ref()
            .map(|a| redactor.redact(a).into_owned()),
        summary: shorten(&redactor.redact(request.ask.summary()), MAX_SUMMARY_CHARS),
        decision: entry.settlement.name(),
        approved: entry.settlement.is_approved(),
        by: by.map(Person::of),
        approvers: match &entry.settlement {
            Settlement::Approved { by, also } if !also.is_empty() => {
                also.iter().chain([by]).map(Person::of).collect()
            }
            _ => Vec::new(),
        },
        channel,
        reason: reason.map(|r| redactor.redact(&r).into_owned()),
        asked_at: rfc3339(entry.asked_at),
        decided_at: rfc3339(entry.settled_at),
        time_to_decision_seconds: seconds(entry.time_to_decision),
    }
}

/// The machine name of an end reason.
#[must_use]
pub fn outcome_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Finished => "finished",
        EndReason::Failed => "failed",
        EndReason::TimedOut => "timed_out",
        EndReason::Interrupted => "interrupted",
        EndReason::Terminated => "terminated",
        EndReason::HungUp => "hung_up",
        EndReason::OpenCodeDied => "opencode_died",
        EndReason::InternalError => "internal_error",
        EndReason::Intruded => "intruded",
    }
}

/// A timestamp as RFC 3339 in UTC with milliseconds.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `text` on one line, at most `max` characters, with `…` when cut.
#[must_use]
pub fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The human lines printed at the end of a run, after the one-line outcome:
/// one per request, oldest first.
#[must_use]
pub fn human_requests(ledger: &Ledger, redactor: &Redactor) -> String {
    let mut out = String::new();
    for entry in &ledger.entries {
        // Stripped before redacting (see `Redactor::shown`), bounded after.
        let subject = shorten(&redactor.shown(entry.request.ask.summary(), usize::MAX), 80);
        let settlement = redactor.shown(&entry.settlement.to_string(), usize::MAX);
        let _ = writeln!(
            out,
            "  #{} {} {} — {} after {}",
            entry.request.number,
            crate::redact::terminal_safe(entry.request.ask.kind()),
            if subject.is_empty() {
                String::new()
            } else {
                format!("`{subject}`")
            },
            settlement,
            humantime::format_duration(Duration::from_secs(entry.time_to_decision.as_secs()))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Actor, Channel};

    fn entry(number: u32, command: &str, settlement: Settlement) -> LedgerEntry {
        LedgerEntry {
            request: crate::approval::test_requests::bash(number, command),
            settlement,
            asked_at: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
            settled_at: SystemTime::UNIX_EPOCH + Duration::from_millis(12_500),
            time_to_decision: Duration::from_millis(2500),
        }
    }

    fn alice() -> Actor {
        Actor {
            channel: Channel::Discord,
            id: "42".to_owned(),
            name: "alice".to_owned(),
        }
    }

    #[test]
    fn a_run_summary_reports_usage_requests_and_redacts() {
        let ledger = Ledger {
            entries: vec![
                entry(
                    1,
                    "echo hunter2-password-value",
                    Settlement::Approved {
                        by: alice(),
                        also: vec![],
                    },
                ),
                entry(2, "rm -rf /", Settlement::Expired),
            ],
        };
        let usage = Usage {
            session_id: Some("ses_1".to_owned()),
            model: Some("anthropic/claude".to_owned()),
            tokens: Some(Tokens {
                input: 10,
                output: 5,
                ..Tokens::default()
            }),
            cost: Some(0.25),
        };
        let redactor = Redactor::new(vec!["hunter2-password-value".to_owned()]);
        let ending = Ending::Run {
            code: Code::TimedOut,
            reason: EndReason::TimedOut,
            detail: None,
            ledger: &ledger,
            usage: &usage,
            redactor: &redactor,
        };
        let context = Context {
            model: Some("p/m".to_owned()),
            ..Context::default()
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let s = RunSummary::new(&ending, &context, start, start + Duration::from_secs(61));
        let json = serde_json::to_value(&s).expect("encodes");
        assert_eq!(json["outcome"], "timed_out");
        assert_eq!(json["exit_code"], 124);
        assert_eq!(json["started_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(json["duration_seconds"], 61.0);
        assert_eq!(json["model"], "anthropic/claude", "OpenCode's report wins");
        assert_eq!(json["tokens"]["input"], 10);
        assert_eq!(json["cost"], 0.25);
        assert_eq!(json["approved"], 1);
        assert_eq!(json["denied"], 1);
        let first = &json["requests"][0];
        assert_eq!(first["decision"], "approved");
        assert_eq!(first["by"]["name"], "alice");
        assert_eq!(first["channel"], "discord");
        assert_eq!(first["time_to_decision_seconds"], 2.5);
        assert_eq!(first["summary"], "echo [redacted]");
        assert_eq!(json["requests"][1]["decision"], "expired");
        assert!(json["requests"][1]["by"].is_null());
        assert!(!json.to_string().contains("hunter2"));
    }

    #[test]
    fn writing_is_atomic_and_an_unwritable_path_names_the_option() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("summary.json");
        let ending = Ending::NotStarted {
            code: Code::Usage,
            detail: "no message",
        };
        let s = RunSummary::new(
            &ending,
            &Context::default(),
            SystemTime::now(),
            SystemTime::now(),
        );
        s.write(&path).expect("written");
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(back["outcome"], "not_started");
        assert_eq!(back["exit_code"], 2);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "summary.json")
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary file left behind: {leftovers:?}"
        );

        let err = s
            .write(&dir.path().join("missing/dir/summary.json"))
            .expect_err("unwritable");
        assert!(err.to_string().contains("--summary-json"), "{err}");
    }

    #[test]
    fn the_markdown_report_cannot_be_steered_by_the_agent() {
        let mut summary = RunSummary::new(
            &Ending::NotStarted {
                code: Code::Usage,
                detail: "x",
            },
            &Context::default(),
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH,
        );
        summary.requests.push(RequestSummary {
            number: 1,
            id: "per_1".into(),
            kind: "bash".into(),
            agent: None,
            summary: "echo |x| `y` <img src=1> [link](http://e) @everyone\nrow".into(),
            decision: "approved",
            approved: true,
            by: None,
            approvers: vec![],
            channel: Some("discord".into()),
            reason: None,
            asked_at: String::new(),
            decided_at: String::new(),
            time_to_decision_seconds: 1.0,
        });
        let md = summary.markdown();
        let row = md.lines().find(|l| l.starts_with("| 1 |")).expect("a row");
        assert_eq!(
            row.matches(" | ").count(),
            6,
            "the cell stays one cell: {row}"
        );
        assert!(!row.contains("<img"), "{row}");
        assert!(!row.contains("[link]("), "{row}");
        assert!(!row.contains("@everyone"), "{row}");
        assert!(md.lines().all(|l| !l.starts_with("row")), "{md}");
    }
}

//! The rules that settle a request without asking anyone: `--deny KIND:GLOB`
//! rules (given at start, they always win) and run-scoped trust rules (made
//! by a human from one pending request, "approve this exact request again").

use std::path::{Component, Path, PathBuf};

use super::{Actor, Ask};

/// A `--deny KIND:GLOB` rule: matching requests are denied without asking.
#[derive(Debug, Clone)]
pub struct DenyRule {
    kind: String,
    glob: globset::GlobMatcher,
    /// As the user wrote it, for messages.
    pub(super) text: String,
}

/// Why a `--deny` rule could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DenyRuleError {
    #[error("invalid --deny `{0}`: expected KIND:GLOB, e.g. `bash:rm -rf *`")]
    Shape(String),
    #[error("invalid --deny `{rule}`: {reason}")]
    Glob { rule: String, reason: String },
}

impl DenyRule {
    pub fn parse(text: &str) -> Result<Self, DenyRuleError> {
        let (kind, glob) = text
            .split_once(':')
            .filter(|(k, g)| !k.trim().is_empty() && !g.is_empty())
            .ok_or_else(|| DenyRuleError::Shape(text.to_owned()))?;
        // `*` must also match `/`: commands and paths are matched whole.
        let glob = globset::GlobBuilder::new(glob)
            .literal_separator(false)
            .build()
            .map_err(|e| DenyRuleError::Glob {
                rule: text.to_owned(),
                reason: e.kind().to_string(),
            })?
            .compile_matcher();
        Ok(Self {
            kind: kind.trim().to_owned(),
            glob,
            text: text.to_owned(),
        })
    }

    /// As the user wrote it.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The permission kind it is about (`*`: every kind).
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Matches the request's kind and its command, path or any pattern.
    pub(super) fn matches(&self, ask: &Ask) -> bool {
        (self.kind == ask.kind() || self.kind == "*")
            && ask
                .command()
                .into_iter()
                .chain(ask.path())
                .chain(ask.patterns().iter().map(String::as_str))
                .any(|s| self.glob.is_match(s))
    }
}

/// A `[[require]]` rule of the policy file: requests matching its
/// `KIND:GLOB` (the same shape as `--deny`) need this many distinct human
/// approvers, and a trust rule never stands in for them.
#[derive(Debug, Clone)]
pub struct RequireRule {
    pattern: DenyRule,
    approvals: u8,
}

impl RequireRule {
    #[must_use]
    pub fn new(pattern: DenyRule, approvals: u8) -> Self {
        Self { pattern, approvals }
    }

    #[must_use]
    pub fn approvals(&self) -> u8 {
        self.approvals
    }

    /// As written in the file.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.pattern.text
    }

    pub(super) fn matches(&self, ask: &Ask) -> bool {
        self.pattern.matches(ask)
    }
}

/// A run-scoped trust rule: made from one pending request by a human, it
/// approves the same exact request (kind and command or path) again.
#[derive(Debug, Clone)]
pub(super) struct TrustRule {
    pub(super) made_on: u32,
    kind: String,
    subject: String,
    pub(super) by: Actor,
}

impl TrustRule {
    /// A rule made by `by` from the pending request `made_on`.
    pub(super) fn made_from(made_on: u32, ask: &Ask, by: Actor) -> Self {
        Self {
            made_on,
            kind: ask.kind().to_owned(),
            subject: ask.summary().to_owned(),
            by,
        }
    }

    /// Never a question: a trust rule only ever approves a permission.
    pub(super) fn matches(&self, ask: &Ask) -> bool {
        !ask.is_question()
            && self.kind == ask.kind()
            && !self.subject.is_empty()
            && ask.summary() == self.subject
    }
}

/// The files whose edit is a change to gatekeep's own policy: the run's
/// policy surface (the policy file, the workspace's OpenCode config, its
/// `.opencode/` and OpenCode's config directories outside it), which
/// decides what is gated and what code OpenCode loads. An agent that edits
/// them would loosen the rules of its own run or the next one (cron), so
/// such an edit is always asked of humans. A directory covers everything
/// below it.
#[derive(Debug, Clone, Default)]
pub struct PolicyFiles {
    workspace: PathBuf,
    files: Vec<PathBuf>,
}

impl PolicyFiles {
    /// `files` are absolute; relative paths in requests are taken from
    /// `workspace`.
    #[must_use]
    pub fn new(workspace: &Path, files: &[PathBuf]) -> Self {
        Self {
            workspace: workspace.to_path_buf(),
            files: files.iter().map(|f| lexical(f)).collect(),
        }
    }

    /// An `edit` (OpenCode's kind for edit, write and patch) of one of them.
    pub(super) fn touched_by(&self, ask: &Ask) -> bool {
        if !matches!(ask.kind(), "edit" | "write") || self.files.is_empty() {
            return false;
        }
        ask.path()
            .into_iter()
            .chain(ask.patterns().iter().map(String::as_str))
            .any(|p| {
                let p = lexical(&self.workspace.join(p));
                self.files.iter().any(|f| p.starts_with(f))
            })
    }
}

/// `a/./b/../c` as `a/c`, without touching the disk (the file may not
/// exist yet, and a request's path is compared, never opened).
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

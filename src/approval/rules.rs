//! The rules that settle a request without asking anyone: `--deny KIND:GLOB`
//! rules (given at start, they always win) and run-scoped trust rules (made
//! by a human from one pending request, "approve this exact request again").

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

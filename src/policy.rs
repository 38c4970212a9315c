//! `gatekeep.toml`: a run's policy kept in the repository and reviewed like
//! code (docs/design.md, "Policy as code").
//!
//! The file is one layer of the configuration: flags and `GATEKEEP_*`
//! variables override it, and it overrides the defaults. It is read before
//! anything starts, and every refusal names the file, the line and the key,
//! because whoever fixes it reads a CI log, not gatekeep's source.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::approval::rules::{DenyRule, RequireRule};
pub use crate::cli::Origin;
use crate::cli::{Given, WhoArgs};

/// The file's name at the workspace root.
pub const FILE_NAME: &str = "gatekeep.toml";

/// Permission kinds OpenCode knows (its `PermissionConfig`, measured on
/// 1.18.33). A kind outside it is a typo that would gate nothing.
pub const KNOWN_KINDS: &[&str] = &[
    "bash",
    "edit",
    "read",
    "glob",
    "grep",
    "list",
    "task",
    "external_directory",
    "todowrite",
    "question",
    "webfetch",
    "websearch",
    "lsp",
    "doom_loop",
    "skill",
];

/// What the file says. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub channel: Option<String>,
    pub approvers: Option<Vec<String>>,
    pub approver_roles: Option<Vec<String>>,
    pub mention: Option<Vec<String>>,
    pub timeout: Option<Spanned<String>>,
    pub approval_timeout: Option<Spanned<String>>,
    pub gate: Option<Vec<Spanned<String>>>,
    pub deny: Option<Vec<Spanned<String>>>,
    /// Custom tools (by id) that may replace a built-in of the same name.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Plugin files (by file name) OpenCode may load in a run.
    #[serde(default)]
    pub allow_plugins: Vec<String>,
    #[serde(default)]
    pub require: Vec<Require>,
}

/// One `[[require]]` table: requests matching `match` need `approvals`
/// distinct approvers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Require {
    #[serde(rename = "match")]
    pub matches: Spanned<String>,
    pub approvals: Spanned<u8>,
}

/// A policy file that was read and checked.
#[derive(Debug)]
pub struct Policy {
    pub path: PathBuf,
    pub file: PolicyFile,
    /// The `[[require]]` rules, parsed.
    pub require: Vec<RequireRule>,
    /// The `timeout` and `approval_timeout` values, parsed.
    pub timeout: Option<std::time::Duration>,
    pub approval_timeout: Option<std::time::Duration>,
    pub deny: Vec<DenyRule>,
}

/// Why the policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}, line {line}, key `{key}`: {message}")]
    Value {
        path: PathBuf,
        line: usize,
        key: &'static str,
        message: String,
    },
}

/// One setting as a run uses it, and where it came from (`doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub value: String,
    pub origin: Origin,
}

/// The policy file of a run: `explicit` (`--config`, `GATEKEEP_CONFIG`),
/// else `gatekeep.toml` at the workspace root when there is one.
#[must_use]
pub fn locate(explicit: Option<&Path>, workspace: &Path) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let candidate = workspace.join(FILE_NAME);
    candidate.is_file().then_some(candidate)
}

impl Policy {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Check `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let at =
            |span: std::ops::Range<usize>, key: &'static str, message: String| PolicyError::Value {
                path: path.to_path_buf(),
                line: text[..span.start.min(text.len())].matches('\n').count() + 1,
                key,
                message,
            };
        let duration = |value: &Option<Spanned<String>>, key: &'static str| {
            value
                .as_ref()
                .map(|v| {
                    humantime::parse_duration(v.get_ref())
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            at(
                                v.span(),
                                key,
                                format!(
                                    "`{}` is not a duration; write one such as 90s, 10m or 1h30m",
                                    v.get_ref()
                                ),
                            )
                        })
                })
                .transpose()
        };
        let timeout = duration(&file.timeout, "timeout")?;
        let approval_timeout = duration(&file.approval_timeout, "approval_timeout")?;
        for gate in file.gate.iter().flatten() {
            known_kind(gate.get_ref()).map_err(|m| at(gate.span(), "gate", m))?;
        }
        let mut deny = Vec::new();
        for rule in file.deny.iter().flatten() {
            let parsed = DenyRule::parse(rule.get_ref())
                .map_err(|e| at(rule.span(), "deny", e.to_string()))?;
            known_kind_or_any(parsed.kind()).map_err(|m| at(rule.span(), "deny", m))?;
            deny.push(parsed);
        }
        let mut require = Vec::new();
        for entry in &file.require {
            let rule = DenyRule::parse(entry.matches.get_ref())
                .map_err(|e| at(entry.matches.span(), "require.match", e.to_string()))?;
            known_kind_or_any(rule.kind())
                .map_err(|m| at(entry.matches.span(), "require.match", m))?;
            let approvals = *entry.approvals.get_ref();
            if approvals == 0 {
                return Err(at(
                    entry.approvals.span(),
                    "require.approvals",
                    "must be at least 1".to_owned(),
                ));
            }
            require.push(RequireRule::new(rule, approvals));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            require,
            timeout,
            approval_timeout,
            deny,
        })
    }
}

impl Policy {
    /// Fill in from the file what neither a flag nor a variable gave: the
    /// channel, who may decide and whom to ping. The file's `gate` list
    /// adds to the flags': a flag can make a run stricter than the reviewed
    /// policy, never looser (`deny` and `[[require]]` likewise, see
    /// `config`). Returns every such setting with its origin.
    pub fn fill(
        &self,
        given: &Given,
        channel: &mut Option<String>,
        who: &mut WhoArgs,
        gates: &mut Vec<String>,
    ) -> Vec<Setting> {
        let file = &self.file;
        let mut settings = Vec::new();
        let mut take =
            |key: &'static str, id: &str, slot: &mut Vec<String>, value: &Option<Vec<String>>| {
                let origin = match (given.has(id), value) {
                    (false, Some(value)) => {
                        slot.clone_from(value);
                        Origin::File
                    }
                    _ => given.origin(id),
                };
                settings.push(Setting {
                    key,
                    value: slot.join(", "),
                    origin,
                });
            };
        let mut channels: Vec<String> = channel.iter().cloned().collect();
        take(
            "channel",
            "channel",
            &mut channels,
            &file.channel.clone().map(|c| vec![c]),
        );
        *channel = channels.pop();
        take(
            "approvers",
            "approvers",
            &mut who.approvers,
            &file.approvers,
        );
        take(
            "approver_roles",
            "approver_roles",
            &mut who.approver_roles,
            &file.approver_roles,
        );
        take("mention", "mention", &mut who.mention, &file.mention);
        let from_file: Vec<String> = file
            .gate
            .iter()
            .flatten()
            .map(|g| g.get_ref().clone())
            .collect();
        let origin = match (given.has("gates"), from_file.is_empty()) {
            (true, false) => Origin::Both,
            (false, false) => Origin::File,
            _ => given.origin("gates"),
        };
        gates.extend(from_file);
        settings.push(Setting {
            key: "gate",
            value: gates.join(", "),
            origin,
        });
        settings
    }
}

/// A permission kind OpenCode knows, or a refusal naming the closest one.
pub fn known_kind(kind: &str) -> Result<(), String> {
    if KNOWN_KINDS.contains(&kind) {
        return Ok(());
    }
    let closest = KNOWN_KINDS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(k, kind), *k))
        .min()
        .filter(|(distance, _)| *distance <= 3);
    let hint = closest.map_or_else(String::new, |(_, k)| format!("; did you mean `{k}`?"));
    Err(format!(
        "`{kind}` is not a permission kind OpenCode knows ({}){hint}",
        KNOWN_KINDS.join(", ")
    ))
}

/// As [`known_kind`], and `*` (every kind) for rules.
pub fn known_kind_or_any(kind: &str) -> Result<(), String> {
    if kind == "*" {
        Ok(())
    } else {
        known_kind(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, String> {
        Policy::parse(Path::new("repo/gatekeep.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_reads() {
        let policy = parse(
            r#"
channel = "123456789012345678"
approvers = ["111111111111111111"]
approver_roles = ["222222222222222222"]
mention = ["role:222222222222222222"]
timeout = "45m"
approval_timeout = "10m"
gate = ["bash", "edit"]
deny = ["bash:rm -rf *", "edit:.github/workflows/*"]

[[require]]
match = "bash:git push*"
approvals = 2
"#,
        )
        .expect("reads");
        assert_eq!(
            policy.timeout,
            Some(std::time::Duration::from_secs(45 * 60))
        );
        assert_eq!(policy.deny.len(), 2);
        assert_eq!(policy.require.len(), 1);
        assert_eq!(policy.require[0].approvals(), 2);
    }

    #[test]
    fn an_unknown_key_is_refused_with_file_line_and_key() {
        let err = parse("channel = \"1\"\nchanel = \"2\"\n").expect_err("refused");
        assert!(err.contains("repo/gatekeep.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("chanel"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_refused_with_file_line_and_key() {
        let err = parse("\n\ntimeout = 45\n").expect_err("refused");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("timeout"), "{err}");
    }

    #[test]
    fn a_bad_duration_names_its_line_and_key() {
        let err = parse("channel = \"1\"\napproval_timeout = \"soon\"\n").expect_err("refused");
        assert!(
            err.contains("repo/gatekeep.toml, line 2, key `approval_timeout`"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_glob_names_its_line_and_key() {
        let err =
            parse("deny = [\n  \"bash:ok\",\n  \"bash:[unclosed\",\n]\n").expect_err("refused");
        assert!(err.contains("line 3, key `deny`"), "{err}");
    }

    #[test]
    fn a_misspelt_kind_is_refused_with_the_closest_one() {
        let err = parse("gate = [\"bsah\"]\n").expect_err("refused");
        assert!(err.contains("line 1, key `gate`"), "{err}");
        assert!(err.contains("did you mean `bash`?"), "{err}");
        let err = parse("deny = [\"bahs:*\"]\n").expect_err("refused");
        assert!(err.contains("did you mean `bash`?"), "{err}");
        let err = parse("[[require]]\nmatch = \"edti:*\"\napprovals = 2\n").expect_err("refused");
        assert!(err.contains("line 2, key `require.match`"), "{err}");
        assert!(err.contains("did you mean `edit`?"), "{err}");
    }

    #[test]
    fn a_require_rule_needs_a_count_of_at_least_one() {
        let err = parse("[[require]]\nmatch = \"bash:*\"\napprovals = 0\n").expect_err("refused");
        assert!(err.contains("line 3, key `require.approvals`"), "{err}");
        let err = parse("[[require]]\nmatch = \"bash:*\"\n").expect_err("refused");
        assert!(err.contains("approvals"), "{err}");
        let err = parse("[[require]]\nmatch = \"bash:*\"\napprovals = 2\nwho = 1\n")
            .expect_err("refused");
        assert!(err.contains("who"), "{err}");
    }
}

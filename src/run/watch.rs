//! What the run watches besides the requests (docs/design.md, "Every tool
//! run accounted for"): the policy surface, and every call of a gated kind.
//!
//! gatekeep hears what OpenCode *asks*; a tool that never asks (a custom
//! tool or plugin standing in for a built-in) would go unnoticed. So the
//! event loop also hands every tool part and every change of the policy
//! surface here, and a [`Breach`] ends the run as an intrusion:
//!
//! - a call of a kind `--gate` makes ask completes, and no request was ever
//!   asked for it;
//! - a file of the policy surface changes, and it was not the file of an
//!   edit a human approved (while that edit's call runs).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::approval::rules::lexical;
use crate::config::RunConfig;
use crate::opencode::wire::{PermissionRequest, ReplyKind, ToolStatus};
use crate::surface::{Record, Snapshot, Surface};

/// Why the run must end at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Breach {
    pub detail: String,
}

/// The permission kind a built-in tool asks for, where every call of it
/// asks when that kind is gated (measured on 1.18.33).
fn kind_of(tool: &str) -> Option<&'static str> {
    Some(match tool {
        "bash" => "bash",
        "edit" | "write" | "patch" | "apply_patch" | "multiedit" => "edit",
        "webfetch" => "webfetch",
        "websearch" => "websearch",
        "codesearch" => "codesearch",
        "read" => "read",
        "glob" => "glob",
        "grep" => "grep",
        "list" => "list",
        "skill" => "skill",
        "todowrite" => "todowrite",
        "lsp" => "lsp",
        _ => return None,
    })
}

/// OpenCode's bash tool asks only for the command nodes of what it runs,
/// and not for directory changes: a command made only of `cd`, `pushd`, …,
/// variable assignments, declarations (`export`, `local`, …), tests (`[`,
/// `[[`) and comments asks nothing, and is not a breach. Anything that can
/// hide a command (`$(…)`, backticks, `<(…)`) must have asked.
fn asks_nothing(command: &str) -> bool {
    const SILENT: &[&str] = &[
        "cd",
        "chdir",
        "popd",
        "pushd",
        "push-location",
        "set-location",
        "export",
        "declare",
        "local",
        "readonly",
        "typeset",
        "unset",
        "[",
        "[[",
    ];
    let assignment = |word: &str| {
        word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    if ["$(", "`", "<(", ">("].iter().any(|s| command.contains(s)) {
        return false;
    }
    command
        .split(['\n', ';', '&', '|'])
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with('#'))
        .all(|c| {
            let mut words = c.split_whitespace();
            let first = words.next().unwrap_or_default();
            SILENT.contains(&first) || (assignment(first) && words.next().is_none())
        })
}

/// An approved edit of a policy-surface file, while its call runs.
#[derive(Debug)]
struct ApprovedEdit {
    call: Option<String>,
    paths: Vec<PathBuf>,
}

pub(super) struct Watch {
    workspace: PathBuf,
    surface: Surface,
    baseline: Snapshot,
    /// Kinds every call of which asks (`--gate`).
    must_ask: Vec<String>,
    /// Tool calls that asked, by call id.
    asked: HashSet<String>,
    /// Edit requests of surface files, by request id, until replied.
    edits: HashMap<String, ApprovedEdit>,
    approved: Vec<ApprovedEdit>,
    /// gatekeep's lasting state: where a breach is written down for the
    /// next run. `None`: nowhere to write (no HOME).
    state: Option<PathBuf>,
}

impl Watch {
    /// Watch `surface` from its state `baseline` (taken before the
    /// prompt).
    pub(super) fn new(
        workspace: &Path,
        surface: Surface,
        baseline: Snapshot,
        must_ask: &[String],
        state: Option<PathBuf>,
    ) -> Self {
        Self {
            workspace: workspace.to_owned(),
            surface,
            baseline,
            must_ask: must_ask.to_vec(),
            asked: HashSet::new(),
            edits: HashMap::new(),
            approved: Vec::new(),
            state,
        }
    }

    /// The run's watch: its surface, its `--gate` kinds, its state.
    pub(super) fn of_run(config: &RunConfig, baseline: Snapshot) -> Self {
        Self::new(
            &config.workspace,
            config.surface.clone(),
            baseline,
            &config.gates,
            config.state_dir.clone(),
        )
    }

    /// A permission request of the run: its call asked; an edit of the
    /// surface is remembered until it is replied to.
    pub(super) fn asked(&mut self, request: &PermissionRequest) {
        let call = request.tool.as_ref().map(|t| t.call_id.clone());
        if let Some(call) = &call {
            self.asked.insert(call.clone());
        }
        if request.permission != "edit" {
            return;
        }
        let paths: Vec<PathBuf> = request
            .metadata
            .filepath
            .iter()
            .chain(&request.patterns)
            .map(|p| lexical(&self.workspace.join(p)))
            .filter(|p| self.surface.contains(p))
            .collect();
        if !paths.is_empty() {
            self.edits
                .insert(request.id.clone(), ApprovedEdit { call, paths });
        }
    }

    /// A reply OpenCode echoed: an approved edit of the surface may change
    /// its files until its call has run.
    pub(super) fn replied(&mut self, request_id: &str, reply: &ReplyKind) {
        if let Some(edit) = self.edits.remove(request_id) {
            if matches!(reply, ReplyKind::Once | ReplyKind::Always) {
                self.approved.push(edit);
            }
        }
    }

    /// A tool part of the run's sessions changed state.
    pub(super) fn tool(
        &mut self,
        tool: &str,
        call_id: &str,
        status: &ToolStatus,
        command: Option<&str>,
    ) -> Option<Breach> {
        if !matches!(status, ToolStatus::Completed | ToolStatus::Error) {
            return None;
        }
        // The approved edit has run: what it wrote is the new baseline.
        if let Some(i) = self
            .approved
            .iter()
            .position(|e| e.call.as_deref() == Some(call_id))
        {
            let edit = self.approved.remove(i);
            let now = self.surface.snapshot();
            for path in &edit.paths {
                self.baseline.adopt(&now, path);
            }
        }
        let gated = kind_of(tool).is_some_and(|k| self.must_ask.iter().any(|g| g == k));
        let exempt = tool == "bash" && command.is_some_and(asks_nothing);
        let changed = self.check();
        if *status == ToolStatus::Completed && gated && !exempt && !self.asked.contains(call_id) {
            // What answers for the built-in is not known: the record names
            // no file, and the next run still waits for a human.
            let saved = self.record(&[]);
            let mut detail = format!(
                "a `{tool}` call ran without asking, though --gate makes every one ask: \
                 something in OpenCode answers for its built-in (a custom tool or plugin); {saved}"
            );
            if let Some(changed) = changed {
                detail = format!("{detail}; and {}", changed.detail);
            }
            return Some(Breach { detail });
        }
        changed
    }

    /// Compare the surface with the baseline; a change outside an approved
    /// edit is a breach, written down for the next run.
    pub(super) fn check(&mut self) -> Option<Breach> {
        let now = self.surface.snapshot();
        let expected: Vec<&PathBuf> = self.approved.iter().flat_map(|e| &e.paths).collect();
        let changed: Vec<PathBuf> = now
            .changed_since(&self.baseline)
            .into_iter()
            .filter(|p| !expected.contains(&p))
            .collect();
        if changed.is_empty() {
            return None;
        }
        let saved = self.record(&changed);
        let shown: Vec<String> = changed
            .iter()
            .map(|p| {
                p.strip_prefix(&self.workspace)
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
        // Once said, a change is not said again by a later check.
        self.baseline = now;
        Some(Breach {
            detail: format!(
                "the policy surface changed without an approved edit: {}; {saved}",
                shown.join(", ")
            ),
        })
    }

    fn record(&self, files: &[PathBuf]) -> String {
        let Some(state) = &self.state else {
            return "gatekeep has no state directory to record it in (no HOME)".to_owned();
        };
        let record = Record {
            workspace: self.workspace.clone(),
            files: files.to_vec(),
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        match record.save(state) {
            Ok(()) => "the next run in this workspace refuses to start until a human has looked \
                       (`gatekeep doctor` shows it)"
                .to_owned(),
            Err(e) => format!("recording it for the next run failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opencode::wire::{PermissionMetadata, ToolRef};

    fn setup(gates: &[&str]) -> (tempfile::TempDir, Watch) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().to_owned();
        std::fs::write(ws.join("opencode.json"), "{}").expect("config");
        let surface = Surface::of(&ws, None, &[]);
        let baseline = surface.snapshot();
        let gates: Vec<String> = gates.iter().map(|g| (*g).to_owned()).collect();
        let state = ws.join(".state");
        let watch = Watch::new(&ws, surface, baseline, &gates, Some(state));
        (dir, watch)
    }

    fn request(id: &str, kind: &str, call: &str, path: Option<&str>) -> PermissionRequest {
        PermissionRequest {
            id: id.to_owned(),
            session_id: "ses_1".to_owned(),
            permission: kind.to_owned(),
            patterns: path.into_iter().map(str::to_owned).collect(),
            metadata: PermissionMetadata {
                filepath: path.map(str::to_owned),
                ..PermissionMetadata::default()
            },
            always: Vec::new(),
            tool: Some(ToolRef {
                message_id: "msg_1".to_owned(),
                call_id: call.to_owned(),
            }),
        }
    }

    #[test]
    fn a_gated_call_that_never_asked_is_a_breach_one_that_asked_is_not() {
        let (_dir, mut watch) = setup(&["bash"]);
        watch.asked(&request("per_1", "bash", "call_1", None));
        let done = ToolStatus::Completed;
        assert_eq!(watch.tool("bash", "call_1", &done, Some("ls")), None);
        assert!(watch
            .tool("bash", "call_2", &done, Some("echo pwned > x"))
            .is_some());
        assert_eq!(
            watch.tool("bash", "call_3", &done, Some("cd src && cd ..")),
            None
        );
        assert_eq!(watch.tool("read", "call_4", &done, None), None, "not gated");
        assert_eq!(
            watch.tool("bash", "call_5", &done, Some("export X=1; Y=2")),
            None
        );
        assert!(
            watch
                .tool("bash", "call_6", &done, Some("X=$(touch pwned)"))
                .is_some(),
            "a command substitution asks"
        );
        assert!(watch
            .tool("bash", "call_7", &done, Some("X=1 touch pwned"))
            .is_some());
    }

    #[test]
    fn a_change_of_the_surface_is_a_breach_and_is_recorded_for_the_next_run() {
        let (dir, mut watch) = setup(&[]);
        assert_eq!(watch.check(), None);
        std::fs::write(
            dir.path().join("opencode.json"),
            "{\"permission\":\"allow\"}",
        )
        .expect("rewrite");
        let breach = watch.check().expect("a breach");
        assert!(breach.detail.contains("opencode.json"), "{}", breach.detail);
        let record = Record::load(&dir.path().join(".state"), dir.path()).expect("recorded");
        assert_eq!(record.files, vec![dir.path().join("opencode.json")]);
        assert_eq!(watch.check(), None, "said once");
    }

    #[test]
    fn an_approved_edit_of_a_surface_file_may_change_it_while_its_call_runs() {
        let (dir, mut watch) = setup(&["edit"]);
        let config = dir.path().join("opencode.json");
        watch.asked(&request("per_1", "edit", "call_1", Some("opencode.json")));
        watch.replied("per_1", &ReplyKind::Once);
        std::fs::write(&config, "{\"x\":1}").expect("edit");
        assert_eq!(watch.check(), None, "the approved edit");
        assert_eq!(
            watch.tool("edit", "call_1", &ToolStatus::Completed, None),
            None
        );
        std::fs::write(&config, "{\"x\":2}").expect("again, by something else");
        assert!(
            watch.check().is_some(),
            "after the call, a change is a breach again"
        );
    }

    #[test]
    fn a_denied_edit_of_a_surface_file_grants_nothing() {
        let (dir, mut watch) = setup(&[]);
        watch.asked(&request("per_1", "edit", "call_1", Some("opencode.json")));
        watch.replied("per_1", &ReplyKind::Reject);
        std::fs::write(dir.path().join("opencode.json"), "{\"x\":1}").expect("write");
        assert!(watch.check().is_some());
    }
}

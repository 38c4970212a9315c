//! The run's policy surface: every file that decides what the agent may do,
//! in this run or a later one (docs/design.md, "The policy surface").
//!
//! - the policy file (`gatekeep.toml`);
//! - the workspace's `opencode.json[c]`;
//! - the workspace's `.opencode/` (tools, plugins, agents, commands,
//!   config);
//! - OpenCode's config directories outside the workspace (the global one,
//!   `~/.opencode`, `$OPENCODE_CONFIG_DIR`, a `.opencode` above the
//!   workspace).
//!
//! A [`Snapshot`] is the content of all of it at one moment; the run takes
//! one before the prompt and compares later ones with it. What OpenCode
//! itself writes into a config directory on every start (its `.gitignore`,
//! its plugin package and `node_modules`) is not part of it: those files
//! only matter through a tool or plugin file, which is.
//!
//! A change the run did not approve is written down as a [`Record`] in
//! gatekeep's state, so that the next run in that workspace refuses to
//! start until a human has looked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Files OpenCode writes into each config directory itself.
const OPENCODE_OWN: &[&str] = &[
    ".gitignore",
    "package.json",
    "package-lock.json",
    "bun.lock",
    "bun.lockb",
];

/// Bound on the files read per directory: a surface larger than this is
/// not one a human reviews, and reading it must not stall a run.
const MAX_FILES: usize = 5_000;

/// Built-in tool ids of OpenCode 1.x (1.14.41–1.18.33): a custom tool or
/// plugin tool of one of these names replaces the built-in, and runs
/// without the permission the built-in asks for (measured on 1.18.33).
pub const BUILT_IN_TOOLS: &[&str] = &[
    "invalid",
    "question",
    "bash",
    "read",
    "glob",
    "grep",
    "list",
    "edit",
    "multiedit",
    "write",
    "patch",
    "apply_patch",
    "task",
    "webfetch",
    "websearch",
    "codesearch",
    "todowrite",
    "todoread",
    "skill",
    "batch",
    "lsp",
    "execute",
    "plan_exit",
];

/// The paths that make up one run's policy surface.
#[derive(Debug, Clone, Default)]
pub struct Surface {
    workspace: PathBuf,
    files: Vec<PathBuf>,
    /// Config directories: the workspace's `.opencode` first.
    dirs: Vec<PathBuf>,
}

impl Surface {
    /// `outer` are OpenCode's config directories outside the workspace
    /// (`sandbox::Places::outer_config_dirs`).
    #[must_use]
    pub fn of(workspace: &Path, policy_file: Option<&Path>, outer: &[PathBuf]) -> Self {
        let mut files: Vec<PathBuf> = ["opencode.json", "opencode.jsonc"]
            .iter()
            .map(|f| workspace.join(f))
            .collect();
        files.extend(policy_file.map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf())));
        let mut dirs = vec![workspace.join(".opencode")];
        dirs.extend(outer.iter().cloned());
        Self {
            workspace: workspace.to_owned(),
            files,
            dirs,
        }
    }

    /// The files and directories whose edit is a change to gatekeep's own
    /// policy (`approval::rules::PolicyFiles`).
    #[must_use]
    pub fn protected(&self) -> Vec<PathBuf> {
        self.files.iter().chain(&self.dirs).cloned().collect()
    }

    /// Whether `path` (absolute) is part of the surface.
    #[must_use]
    pub fn contains(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path)
            || self
                .dirs
                .iter()
                .any(|d| path.strip_prefix(d).is_ok_and(|rel| !is_opencode_own(rel)))
    }

    /// The surface's content now. A file that cannot be read counts as
    /// changed content, never as absent.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let mut out = BTreeMap::new();
        for file in &self.files {
            if let Some(state) = read(file) {
                out.insert(file.clone(), state);
            }
        }
        for dir in &self.dirs {
            let mut budget = MAX_FILES;
            walk(dir, dir, &mut out, &mut budget);
        }
        Snapshot(out)
    }

    /// The surface's paths inside the workspace, relative to it, for `git
    /// status` (outer directories are not in the workspace's repository).
    #[must_use]
    pub fn in_workspace(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .chain(self.dirs.iter().take(1))
            .filter_map(|p| p.strip_prefix(&self.workspace).ok())
            .map(Path::to_owned)
            .collect()
    }

    /// Custom tools and plugins in the surface's config directories: the
    /// code OpenCode loads besides its own.
    #[must_use]
    pub fn extensions(&self) -> Vec<Extension> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            for (sub, kind) in [
                ("tool", ExtensionKind::Tool),
                ("tools", ExtensionKind::Tool),
                ("plugin", ExtensionKind::Plugin),
                ("plugins", ExtensionKind::Plugin),
            ] {
                let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                    continue;
                };
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "js" || e == "ts" || e == "mjs")
                    })
                    .collect();
                found.sort();
                out.extend(found.into_iter().map(|path| Extension { kind, path }));
            }
        }
        out
    }
}

/// Whether `rel` (relative to a config directory) is a file OpenCode writes
/// there itself.
fn is_opencode_own(rel: &Path) -> bool {
    let top_level_own = rel.components().count() == 1
        && rel
            .to_str()
            .is_some_and(|name| OPENCODE_OWN.contains(&name));
    top_level_own || rel.components().any(|c| c.as_os_str() == "node_modules")
}

/// One file's state: its content's digest, or that it could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Content([u8; 32]),
    Unreadable,
}

fn read(path: &Path) -> Option<State> {
    match std::fs::read(path) {
        Ok(bytes) => Some(State::Content(Sha256::digest(&bytes).into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(State::Unreadable),
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, State>, budget: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.strip_prefix(root).is_ok_and(is_opencode_own) {
            continue;
        }
        if *budget == 0 {
            out.insert(
                root.join("…more files than gatekeep reads"),
                State::Unreadable,
            );
            return;
        }
        *budget -= 1;
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, out, budget),
            Ok(t) if t.is_symlink() => {
                // Where a link points is what OpenCode would load.
                let target = std::fs::read_link(&path).unwrap_or_default();
                let digest = Sha256::digest(target.as_os_str().as_encoded_bytes());
                out.insert(path, State::Content(digest.into()));
            }
            Ok(_) => {
                if let Some(state) = read(&path) {
                    out.insert(path, state);
                }
            }
            Err(_) => {
                out.insert(path, State::Unreadable);
            }
        }
    }
}

/// The policy surface's content at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, State>);

impl Snapshot {
    /// The paths whose content differs from `before`: added, removed or
    /// changed, in order.
    #[must_use]
    pub fn changed_since(&self, before: &Snapshot) -> Vec<PathBuf> {
        let mut changed: Vec<PathBuf> = self
            .0
            .iter()
            .filter(|(p, s)| before.0.get(*p) != Some(s))
            .map(|(p, _)| p.clone())
            .collect();
        changed.extend(
            before
                .0
                .keys()
                .filter(|p| !self.0.contains_key(*p))
                .cloned(),
        );
        changed.sort();
        changed
    }

    /// Take `now`'s state of `path` (a change a human approved).
    pub fn adopt(&mut self, now: &Snapshot, path: &Path) {
        match now.0.get(path) {
            Some(state) => self.0.insert(path.to_owned(), *state),
            None => self.0.remove(path),
        };
    }
}

/// A custom tool or plugin file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub kind: ExtensionKind,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionKind {
    Tool,
    Plugin,
}

impl Extension {
    /// The name the policy file allows it by: a tool's id (its file name
    /// without extension: the id of its default export), a plugin's file
    /// name.
    #[must_use]
    pub fn name(&self) -> String {
        let of = |p: Option<&std::ffi::OsStr>| p.map(|s| s.to_string_lossy().into_owned());
        match self.kind {
            ExtensionKind::Tool => of(self.path.file_stem()),
            ExtensionKind::Plugin => of(self.path.file_name()),
        }
        .unwrap_or_default()
    }

    /// Why it keeps a run from starting unless the policy file names it:
    /// a plugin runs inside OpenCode with its password in reach; a tool
    /// named like a built-in replaces it and is never asked about.
    #[must_use]
    pub fn danger(&self) -> Option<&'static str> {
        match self.kind {
            ExtensionKind::Plugin => Some(
                "a plugin runs inside OpenCode, before gatekeep's guard can hide its password, \
                 and can answer the agent's requests itself",
            ),
            ExtensionKind::Tool if BUILT_IN_TOOLS.contains(&self.name().as_str()) => Some(
                "a custom tool named like a built-in replaces it, and OpenCode never asks about \
                 its calls",
            ),
            ExtensionKind::Tool => None,
        }
    }
}

/// What a run wrote down for the next one in the same workspace: its
/// policy surface changed without an approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub workspace: PathBuf,
    pub files: Vec<PathBuf>,
    /// RFC 3339.
    pub at: String,
}

impl Record {
    /// Where the record of `workspace` lives under `state` (gatekeep's
    /// lasting state directory).
    #[must_use]
    pub fn path(state: &Path, workspace: &Path) -> PathBuf {
        let digest = Sha256::digest(workspace.as_os_str().as_encoded_bytes());
        let name = digest.iter().take(12).fold(String::new(), |mut s, b| {
            let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
            s
        });
        state.join("tampered").join(format!("{name}.json"))
    }

    /// The record of `workspace`, if a run left one.
    #[must_use]
    pub fn load(state: &Path, workspace: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(state, workspace)).ok()?;
        // One that cannot be read still says that something happened.
        Some(serde_json::from_str(&text).unwrap_or_else(|_| Self {
            workspace: workspace.to_owned(),
            files: Vec::new(),
            at: "unknown".to_owned(),
        }))
    }

    /// Write it (private directory, atomically).
    pub fn save(&self, state: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path = Self::path(state, &self.workspace);
        let dir = path.parent().unwrap_or(state);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    /// A human looked: remove the record of `workspace`. Whether there was
    /// one.
    pub fn acknowledge(state: &Path, workspace: &Path) -> std::io::Result<bool> {
        match std::fs::remove_file(Self::path(state, workspace)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The surface's files inside the workspace with changes git has not
/// committed (untracked ones included), relative to the workspace; empty
/// outside a git repository (nothing to compare with).
#[must_use]
pub fn uncommitted(surface: &Surface) -> Vec<PathBuf> {
    let paths = surface.in_workspace();
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&surface.workspace)
        .args(["status", "--porcelain", "-z", "--untracked-files=all", "--"])
        .args(&paths)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        return Vec::new();
    };
    // `XY path\0`, and a rename's old path as a second entry.
    out.stdout
        .split(|b| *b == 0)
        .filter(|e| e.len() > 3)
        .map(|e| PathBuf::from(String::from_utf8_lossy(&e[3..]).into_owned()))
        .filter(|rel| surface.contains(&surface.workspace.join(rel)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Surface) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().to_owned();
        std::fs::write(ws.join("opencode.json"), "{}").expect("config");
        std::fs::create_dir_all(ws.join(".opencode/agent")).expect("agents");
        std::fs::write(ws.join(".opencode/agent/review.md"), "review").expect("agent");
        std::fs::write(ws.join("gatekeep.toml"), "timeout = \"5m\"\n").expect("policy");
        let surface = Surface::of(&ws, Some(&ws.join("gatekeep.toml")), &[]);
        (dir, surface)
    }

    #[test]
    fn a_tool_written_into_dot_opencode_is_a_change_and_opencodes_own_files_are_not() {
        let (dir, surface) = workspace();
        let before = surface.snapshot();
        let ws = dir.path();
        std::fs::create_dir_all(ws.join(".opencode/node_modules/x")).expect("modules");
        std::fs::write(ws.join(".opencode/node_modules/x/index.js"), "x").expect("module");
        std::fs::write(ws.join(".opencode/.gitignore"), "node_modules").expect("gitignore");
        std::fs::write(ws.join(".opencode/package.json"), "{}").expect("package");
        assert_eq!(
            surface.snapshot().changed_since(&before),
            Vec::<PathBuf>::new()
        );
        std::fs::create_dir_all(ws.join(".opencode/tools")).expect("tools");
        std::fs::write(ws.join(".opencode/tools/bash.js"), "export default {}").expect("tool");
        std::fs::write(ws.join("gatekeep.toml"), "approvers = [\"1\"]\n").expect("policy");
        std::fs::remove_file(ws.join(".opencode/agent/review.md")).expect("rm");
        assert_eq!(
            surface.snapshot().changed_since(&before),
            vec![
                ws.join(".opencode/agent/review.md"),
                ws.join(".opencode/tools/bash.js"),
                ws.join("gatekeep.toml"),
            ]
        );
    }

    #[test]
    fn an_adopted_change_is_no_longer_one() {
        let (dir, surface) = workspace();
        let mut baseline = surface.snapshot();
        let config = dir.path().join("opencode.json");
        std::fs::write(&config, "{\"permission\":{}}").expect("edit");
        let now = surface.snapshot();
        assert_eq!(now.changed_since(&baseline), vec![config.clone()]);
        baseline.adopt(&now, &config);
        assert!(now.changed_since(&baseline).is_empty());
    }

    #[test]
    fn plugins_and_tools_named_like_built_ins_are_dangerous_others_are_listed() {
        let (dir, surface) = workspace();
        let ws = dir.path();
        for (sub, file) in [
            ("tools", "bash.js"),
            ("tool", "deploy.ts"),
            ("plugins", "x.js"),
        ] {
            std::fs::create_dir_all(ws.join(".opencode").join(sub)).expect("dir");
            std::fs::write(ws.join(".opencode").join(sub).join(file), "").expect("file");
        }
        let found: Vec<(String, bool)> = surface
            .extensions()
            .iter()
            .map(|e| (e.name(), e.danger().is_some()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("deploy".to_owned(), false),
                ("bash".to_owned(), true),
                ("x.js".to_owned(), true),
            ]
        );
    }

    #[test]
    fn a_record_is_kept_per_workspace_until_acknowledged() {
        let state = tempfile::tempdir().expect("state");
        let (dir, _) = workspace();
        let record = Record {
            workspace: dir.path().to_owned(),
            files: vec![dir.path().join("opencode.json")],
            at: "2026-12-08T00:00:00Z".to_owned(),
        };
        record.save(state.path()).expect("saved");
        assert_eq!(Record::load(state.path(), dir.path()), Some(record));
        assert_eq!(Record::load(state.path(), Path::new("/elsewhere")), None);
        assert!(Record::acknowledge(state.path(), dir.path()).expect("removed"));
        assert_eq!(Record::load(state.path(), dir.path()), None);
    }

    #[test]
    fn uncommitted_and_untracked_surface_files_are_found_in_git() {
        let (dir, surface) = workspace();
        let ws = dir.path();
        assert!(uncommitted(&surface).is_empty(), "not a repository");
        for args in [
            &["init", "-q"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "x",
            ],
        ] {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(ws)
                .args(args)
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}");
        }
        assert!(uncommitted(&surface).is_empty(), "all committed");
        std::fs::write(ws.join(".opencode/.gitignore"), "node_modules").expect("own");
        std::fs::create_dir_all(ws.join(".opencode/plugins")).expect("plugins");
        std::fs::write(ws.join(".opencode/plugins/x.js"), "").expect("plugin");
        std::fs::write(ws.join("opencode.json"), "{\"x\":1}").expect("edit");
        std::fs::write(ws.join("README.md"), "not policy").expect("readme");
        assert_eq!(
            uncommitted(&surface),
            vec![
                PathBuf::from(".opencode/plugins/x.js"),
                PathBuf::from("opencode.json")
            ]
        );
    }
}

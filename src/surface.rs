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
//! Of a config directory, what OpenCode loads is watched: its config files
//! and its `tool(s)`, `plugin(s)`, `agent(s)`, `command(s)`, `mode(s)` and
//! `skill(s)` directories. What OpenCode itself writes there on every start
//! (its `.gitignore`, its plugin package, `node_modules`) and what it keeps
//! there that configures nothing (the plan agent's `plans/`) is not: a
//! package only runs through a tool or plugin file, which is watched.
//!
//! A [`Snapshot`] is the state of all of it at one moment; the run takes
//! one before the prompt and compares later ones with it. A file's state is
//! its metadata, never its content: the files are the agent's to write, and
//! reading one (a FIFO, a link to `/dev/zero`) could hang or flood the event
//! loop. The change time (`ctime`) moves on every write, and no process can
//! set it back.
//!
//! A change the run did not approve is written down as a [`Record`] in
//! gatekeep's state, so that the next run in that workspace refuses to
//! start until a human has looked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Files at the top of a config directory that OpenCode loads.
const LOADED_FILES: &[&str] = &["opencode.json", "opencode.jsonc", "config.json"];

/// Directories of a config directory whose files OpenCode loads.
const LOADED_DIRS: &[&str] = &[
    "tool", "tools", "plugin", "plugins", "agent", "agents", "command", "commands", "mode",
    "modes", "skill", "skills",
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
        // `gatekeep.toml` at the root is watched even when it does not
        // exist yet: the next run would read one the agent created.
        let mut files: Vec<PathBuf> = ["opencode.json", "opencode.jsonc", crate::policy::FILE_NAME]
            .iter()
            .map(|f| workspace.join(f))
            .collect();
        if let Some(policy) = policy_file {
            let policy = policy
                .canonicalize()
                .unwrap_or_else(|_| policy.to_path_buf());
            if !files.contains(&policy) {
                files.push(policy);
            }
        }
        let mut dirs = vec![workspace.join(".opencode")];
        dirs.extend(outer.iter().cloned());
        Self {
            workspace: workspace.to_owned(),
            files,
            dirs,
        }
    }

    /// The workspace it belongs to.
    #[must_use]
    pub fn workspace(&self) -> &Path {
        &self.workspace
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
                .any(|d| path.strip_prefix(d).is_ok_and(is_loaded))
    }

    /// The surface's state now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let mut out = BTreeMap::new();
        for file in &self.files {
            if let Some(state) = state_of(file) {
                out.insert(file.clone(), state);
            }
        }
        for dir in &self.dirs {
            for name in LOADED_FILES {
                let file = dir.join(name);
                if let Some(state) = state_of(&file) {
                    out.insert(file, state);
                }
            }
            let mut budget = MAX_FILES;
            for sub in LOADED_DIRS {
                walk(&dir.join(sub), &mut out, &mut budget);
            }
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

/// Whether `rel` (relative to a config directory) is something OpenCode
/// loads.
fn is_loaded(rel: &Path) -> bool {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [file] => LOADED_FILES.contains(&file.as_str()),
        [dir, rest @ ..] => {
            LOADED_DIRS.contains(&dir.as_str()) && !rest.iter().any(|p| p == "node_modules")
        }
        [] => false,
    }
}

/// One path's state, from its metadata alone (see the module docs); for a
/// symbolic link, the link's and that of what it points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    own: Meta,
    target: Option<Meta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// `None` when nothing is there. Never opens the file.
fn state_of(path: &Path) -> Option<State> {
    let own = std::fs::symlink_metadata(path).ok()?;
    let target = if own.file_type().is_symlink() {
        std::fs::metadata(path).ok().map(|m| Meta::of(&m))
    } else {
        None
    };
    Some(State {
        own: Meta::of(&own),
        target,
    })
}

/// Every path below `dir` (links not followed, `node_modules` left out),
/// within `budget`.
fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, State>, budget: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() == "node_modules" {
            continue;
        }
        let path = entry.path();
        if *budget == 0 {
            // Past the budget a change must still show: the directory's
            // own state moves with every entry added or removed.
            if let Some(state) = state_of(dir) {
                out.insert(dir.join("…more files than gatekeep reads"), state);
            }
            return;
        }
        *budget -= 1;
        if let Some(state) = state_of(&path) {
            out.insert(path.clone(), state);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, out, budget);
        }
    }
}

/// The policy surface's state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, State>);

impl Snapshot {
    /// The paths whose state differs from `before`: added, removed or
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

    /// Whether the policy file names it, in the list for its kind
    /// (`allow_tools`, `allow_plugins`).
    #[must_use]
    pub fn allowed_by(&self, policy: &crate::policy::PolicyFile) -> bool {
        let list = match self.kind {
            ExtensionKind::Tool => &policy.allow_tools,
            ExtensionKind::Plugin => &policy.allow_plugins,
        };
        list.contains(&self.name())
    }

    /// The policy key that allows it.
    #[must_use]
    pub fn policy_key(&self) -> &'static str {
        match self.kind {
            ExtensionKind::Tool => "allow_tools",
            ExtensionKind::Plugin => "allow_plugins",
        }
    }

    /// Why it keeps a run from starting unless the policy file names it.
    /// Both are code that runs inside OpenCode, with its password in reach
    /// until gatekeep's guard has hidden it; a tool named like a built-in
    /// also replaces it, and is never asked about.
    #[must_use]
    pub fn danger(&self) -> &'static str {
        match self.kind {
            ExtensionKind::Plugin => {
                "a plugin runs inside OpenCode, before gatekeep's guard can hide its password, \
                 and can answer the agent's requests itself"
            }
            ExtensionKind::Tool if BUILT_IN_TOOLS.contains(&self.name().as_str()) => {
                "a custom tool named like a built-in replaces it, and OpenCode never asks about \
                 its calls"
            }
            ExtensionKind::Tool => {
                "a custom tool is code that runs inside OpenCode, where gatekeep cannot see \
                 what it does"
            }
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
///
/// git runs outside the box, on a repository the agent may have written:
/// its hooks, `core.fsmonitor` and the like are switched off for these
/// calls, and in the box the repository's config, hooks and info are
/// read-only (`sandbox`). An OpenCode config file whose only change is the
/// `$schema` key OpenCode inserts on start is not a change.
#[must_use]
pub fn uncommitted(surface: &Surface) -> Vec<PathBuf> {
    let Some(top) = git(&surface.workspace, &["rev-parse", "--show-toplevel"])
        .and_then(|out| String::from_utf8(out).ok())
        .map(|t| PathBuf::from(t.trim_end()))
    else {
        return Vec::new();
    };
    let paths: Vec<String> = surface
        .in_workspace()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec![
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--",
    ];
    args.extend(paths.iter().map(String::as_str));
    let Some(out) = git(&surface.workspace, &args) else {
        return Vec::new();
    };
    // `XY path\0`, paths from the repository's top; a rename or copy is
    // followed by its old path alone.
    let mut changed = std::collections::BTreeSet::new();
    let mut entries = out.split(|b| *b == 0).filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        let (Some(xy), Some(path)) = (entry.get(..2), entry.get(3..)) else {
            continue;
        };
        if matches!(xy[0], b'R' | b'C') {
            let _ = entries.next();
        }
        let absolute = top.join(String::from_utf8_lossy(path).as_ref());
        let Ok(rel) = absolute.strip_prefix(&surface.workspace) else {
            continue;
        };
        let modified_only = matches!(xy, b" M" | b"M " | b"MM");
        if surface.contains(&absolute) && !(modified_only && only_schema_added(surface, rel)) {
            changed.insert(rel.to_owned());
        }
    }
    changed.into_iter().collect()
}

/// `git` in `dir`, with what would run code from the repository switched
/// off; its output when it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.untrackedCache=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// Whether `rel`, an OpenCode config file, differs from its committed
/// version only by a `$schema` key (OpenCode inserts one on start).
fn only_schema_added(surface: &Surface, rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !matches!(name, "opencode.json" | "opencode.jsonc" | "config.json") {
        return false;
    }
    let spec = format!("HEAD:./{}", rel.display());
    let Some(before) = git(&surface.workspace, &["show", &spec]) else {
        return false;
    };
    let Ok(now) = std::fs::read_to_string(surface.workspace.join(rel)) else {
        return false;
    };
    let without_schema = |text: &str| {
        crate::opencode::config::parse(text).ok().map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("$schema");
            }
            v
        })
    };
    let before = without_schema(&String::from_utf8_lossy(&before));
    before.is_some() && before == without_schema(&now)
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
    fn tools_and_plugins_are_found_and_a_tool_named_like_a_built_in_replaces_it() {
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
            .map(|e| (e.name(), e.danger().contains("replaces")))
            .collect();
        assert_eq!(
            found,
            vec![
                ("deploy".to_owned(), false),
                ("bash".to_owned(), true),
                ("x.js".to_owned(), false),
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

    #[test]
    fn a_policy_file_git_has_not_committed_is_noticed() {
        let repo = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(ok, "git {args:?}");
        };
        let file = repo.path().join(crate::policy::FILE_NAME);
        let uncommitted =
            |file: &Path, ws: &Path| !uncommitted(&Surface::of(ws, Some(file), &[])).is_empty();
        std::fs::write(&file, "timeout = \"45m\"\n").expect("write");
        assert!(
            !uncommitted(&file, repo.path()),
            "not a repository: nothing to compare"
        );
        git(&["init", "-q"]);
        assert!(uncommitted(&file, repo.path()), "new, never committed");
        git(&["add", crate::policy::FILE_NAME]);
        git(&["commit", "-q", "-m", "policy"]);
        assert!(!uncommitted(&file, repo.path()), "committed");
        std::fs::write(&file, "timeout = \"5h\"\n").expect("write");
        assert!(uncommitted(&file, repo.path()), "changed since");
    }
}

//! The agent's box: what `opencode serve` and every tool it runs can see,
//! write and reach (docs/design.md, "The agent's box").
//!
//! The agent runs as the same user as gatekeep, so anything that user can
//! reach it can use: a tmux server, `at`, the session bus, the terminal
//! gatekeep prompts on, gatekeep's own socket, and every file that decides
//! what a later run may do. The box (bubblewrap, Linux) takes those away and
//! keeps what an agent needs:
//!
//! | | in the box |
//! |---|---|
//! | the workspace, OpenCode's data, state and cache, the usual caches, `--share` | read-write |
//! | the rest of the file system, OpenCode's and gatekeep's config | read-only |
//! | OpenCode's config directories outside the workspace | the run's private copy |
//! | `/tmp`, `/var/tmp`, `/run` (the runtime directory, D-Bus, docker, screen), `$TMUX_TMPDIR` | private and empty: no daemon's socket, no gatekeep socket (the resolver's directory comes back) |
//! | gatekeep's state | hidden |
//! | processes | their own PID namespace: nothing outside is visible, everything dies with the run |
//! | the terminal | none (a new session): nothing to type into |
//! | setuid helpers (`at`, `crontab`) | no new privileges |
//! | the network | shared (the model, package registries) |
//!
//! [`Layout::of`] takes the places as [`Places`], so tests can check what a
//! given machine's box would be without starting one; it only reads which
//! paths exist (and creates OpenCode's own directories, to share them).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Variables that name a way out of the box (a multiplexer, a bus, an
/// agent socket, a display): removed from the server's environment. The
/// sockets they name are hidden anyway; without the names nothing points
/// the agent at them.
pub const REMOVED_ENV: &[&str] = &[
    "TMUX",
    "TMUX_PANE",
    "STY",
    "WINDOW",
    "DBUS_SESSION_BUS_ADDRESS",
    "SSH_AUTH_SOCK",
    "GPG_AGENT_INFO",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "SESSION_MANAGER",
    "TMUX_TMPDIR",
    "SCREENDIR",
];

/// What to do where bubblewrap cannot make a box: the host forbids
/// unprivileged user namespaces (Debian's `kernel.unprivileged_userns_clone`,
/// Ubuntu 24.04's `AppArmor` restriction, a container without them).
pub const NO_BOX_FIX: &str = "Allow unprivileged user namespaces for bubblewrap: on Ubuntu \
    24.04 and GitHub's ubuntu-latest, `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` \
    (or load the `bwrap-userns-restrict` AppArmor profile); on Debian, \
    `sudo sysctl -w kernel.unprivileged_userns_clone=1`; in a container, run it with user \
    namespaces allowed. `gatekeep doctor` checks it. Or opt out with --no-isolate, which leaves \
    the terminal prompt and `gatekeep approve` unprotected from the agent";

/// Caches below HOME an agent's toolchains write to, shared read-write
/// when they exist. `$XDG_CACHE_HOME` is always shared.
const HOME_CACHES: &[&str] = &[
    ".npm",
    ".bun/install/cache",
    ".cargo/registry",
    ".cargo/git",
    "go/pkg/mod",
    ".m2/repository",
    ".gradle/caches",
];

/// Where things are on this machine, for one run.
#[derive(Debug, Clone, Default)]
pub struct Places {
    pub workspace: PathBuf,
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME` or `~/.config`.
    pub config_home: Option<PathBuf>,
    /// `$XDG_DATA_HOME` or `~/.local/share`.
    pub data_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME` or `~/.local/state`.
    pub state_home: Option<PathBuf>,
    /// `$XDG_CACHE_HOME` or `~/.cache`.
    pub cache_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub runtime_dir: Option<PathBuf>,
    pub uid: u32,
    /// The temporary directory (`$TMPDIR`, else `/tmp`).
    pub temp_dir: PathBuf,
    /// The OpenCode executable, resolved.
    pub program: Option<PathBuf>,
    /// Directories gatekeep itself needs shared read-write for the run
    /// (the guard plugin's).
    pub run_dirs: Vec<PathBuf>,
    /// `--share`.
    pub share: Vec<PathBuf>,
    /// Where the user's multiplexers keep their sockets when not in `/tmp`
    /// (`$TMUX_TMPDIR`, `$SCREENDIR`): private in the box.
    pub socket_dirs: Vec<PathBuf>,
    /// `$XAUTHORITY`: X's cookie, hidden in the box.
    pub xauthority: Option<PathBuf>,
    /// OpenCode config directories outside the workspace, each with the
    /// run's private copy that stands in for it inside the box (see
    /// [`copy_config_dirs`]).
    pub config_copies: Vec<(PathBuf, PathBuf)>,
}

impl Places {
    /// This process's environment.
    #[must_use]
    pub fn from_env(workspace: &Path, program: &Path) -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let home = var("HOME");
        let under_home = |sub: &str| home.as_ref().map(|h| h.join(sub));
        Self {
            workspace: workspace.to_owned(),
            config_home: var("XDG_CONFIG_HOME").or_else(|| under_home(".config")),
            data_home: var("XDG_DATA_HOME").or_else(|| under_home(".local/share")),
            state_home: var("XDG_STATE_HOME").or_else(|| under_home(".local/state")),
            cache_home: var("XDG_CACHE_HOME").or_else(|| under_home(".cache")),
            runtime_dir: var("XDG_RUNTIME_DIR"),
            home,
            uid: nix::unistd::getuid().as_raw(),
            temp_dir: std::env::temp_dir(),
            program: resolve_program(program),
            run_dirs: Vec::new(),
            share: Vec::new(),
            socket_dirs: ["TMUX_TMPDIR", "SCREENDIR"]
                .iter()
                .filter_map(|k| var(k))
                .collect(),
            xauthority: var("XAUTHORITY"),
            config_copies: Vec::new(),
        }
    }

    /// Every directory OpenCode reads configuration, tools and plugins from
    /// that lies outside the workspace: the global config directory,
    /// `~/.opencode`, `$OPENCODE_CONFIG_DIR`, and a `.opencode` in any
    /// directory above the workspace (OpenCode walks up to the git root,
    /// or to `/` outside git). Only those that exist.
    #[must_use]
    pub fn outer_config_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.opencode_config().into_iter().collect();
        dirs.extend(self.home.as_ref().map(|h| h.join(".opencode")));
        dirs.extend(
            std::env::var_os("OPENCODE_CONFIG_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        );
        dirs.extend(
            self.workspace
                .ancestors()
                .skip(1)
                .map(|a| a.join(".opencode")),
        );
        dirs.retain(|d| d.is_dir() && !d.starts_with(&self.workspace));
        dedup(&mut dirs);
        dirs
    }

    /// Why the box could not keep its promises with `share` (and this
    /// workspace): a path that would reopen what the box hides or protects
    /// (HOME, a config or state directory, `/tmp`, `/run`, the runtime
    /// directory, or one that contains them).
    #[must_use]
    pub fn unsafe_share(&self) -> Option<PathBuf> {
        let guarded: Vec<PathBuf> = [
            self.home.clone(),
            self.config_home.clone(),
            self.gatekeep_state(),
            self.runtime_dir.clone(),
            Some(PathBuf::from("/tmp")),
            Some(PathBuf::from("/var/tmp")),
            Some(PathBuf::from("/run")),
            Some(self.temp_dir.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.share
            .iter()
            .chain(std::iter::once(&self.workspace))
            .find(|path| guarded.iter().any(|g| g.starts_with(path)))
            .cloned()
    }

    /// OpenCode's global config directory: the agent must not write it
    /// (what is there applies to every later run of the user).
    #[must_use]
    pub fn opencode_config(&self) -> Option<PathBuf> {
        self.config_home.as_ref().map(|c| c.join("opencode"))
    }

    /// gatekeep's own lasting state (what a run recorded for the next one).
    #[must_use]
    pub fn gatekeep_state(&self) -> Option<PathBuf> {
        self.state_home.as_ref().map(|s| s.join("gatekeep"))
    }
}

/// `program` as a path: as given when it has a slash, else looked up on
/// `PATH`; symlinks resolved.
fn resolve_program(program: &Path) -> Option<PathBuf> {
    let found = if program.components().count() > 1 {
        Some(program.to_owned())
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    };
    found.and_then(|p| p.canonicalize().ok())
}

/// One box, as bubblewrap arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    args: Vec<OsString>,
    /// The OpenCode executable as a full path: the box's `PATH` may not
    /// lead to it (a directory of `PATH` under `/tmp` is private inside).
    program: Option<PathBuf>,
    /// Read-write, as shared (for `doctor` and the README's table).
    pub writable: Vec<PathBuf>,
    /// Private and empty inside.
    pub private: Vec<PathBuf>,
}

impl Layout {
    /// The box for `places`. Paths that do not exist are left out (a
    /// mount needs its source), except OpenCode's own directories, which
    /// are created so that they can be shared.
    #[must_use]
    pub fn of(places: &Places) -> Self {
        let mut b = Builder::default();
        b.flags(&[
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--new-session",
        ]);
        b.mount("--ro-bind", Path::new("/"));
        b.flags(&["--dev", "/dev", "--proc", "/proc"]);

        let private = private_dirs(places);
        for dir in &private {
            b.mount("--tmpfs", dir);
        }

        // What the private directories covered but the run needs to read:
        // name resolution (`/etc/resolv.conf` often points into `/run`),
        // HOME, or the OpenCode executable, when they live strictly inside
        // one of them (never a private directory itself: a read-only mount
        // does not stop `connect()` on the sockets in it).
        let covered = |p: &Path| private.iter().any(|d| p.starts_with(d) && p != d);
        let resolver = std::fs::canonicalize("/etc/resolv.conf")
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned));
        for path in resolver.iter().chain(&places.home).chain(&places.program) {
            let dir = if path.is_dir() {
                path.clone()
            } else {
                path.parent().map(Path::to_owned).unwrap_or_default()
            };
            if covered(&dir) && dir.is_dir() {
                b.mount("--ro-bind", &dir);
                // What is private inside what came back stays private.
                for inner in private.iter().filter(|p| p.starts_with(&dir) && **p != dir) {
                    b.mount("--tmpfs", inner);
                }
            }
        }

        let writable = writable_dirs(places);
        for path in &writable {
            b.mount("--bind", path);
        }

        // OpenCode writes into every config directory it loads (a
        // `.gitignore`, its plugin package) and fails on a read-only one;
        // what it and the agent write there must not reach a later run.
        // So each one outside the workspace is the run's private copy,
        // thrown away after it; installed packages stay read-only.
        let copied: Vec<&PathBuf> = places.config_copies.iter().map(|(o, _)| o).collect();
        for (original, copy) in &places.config_copies {
            b.mount_at("--bind", copy, original);
            let modules = original.join("node_modules");
            if modules.is_dir() {
                b.mount("--ro-bind", &modules);
            }
        }

        // Last, so that no shared path above reopens them: the config that
        // decides later runs is read-only, and so is what git runs from the
        // workspace's repository (its config — `core.fsmonitor`, filters —,
        // hooks and info: gatekeep's own `git status` and the user's next
        // commit run outside the box); X's cookie is gone; gatekeep's state
        // stays hidden.
        let git = places.workspace.join(".git");
        for dir in ["config", "hooks", "info"].map(|p| git.join(p)) {
            if git.is_dir() && dir.exists() {
                b.mount("--ro-bind", &dir);
            }
        }
        for cookie in places
            .home
            .iter()
            .map(|h| h.join(".Xauthority"))
            .chain(places.xauthority.clone())
        {
            if cookie.is_file() {
                b.mount_at("--ro-bind", Path::new("/dev/null"), &cookie);
            }
        }
        let config_homes = places
            .config_home
            .iter()
            .flat_map(|c| [c.join("opencode"), c.join("gatekeep")]);
        for dir in config_homes.filter(|d| d.exists() && !copied.contains(&d)) {
            b.mount("--ro-bind", &dir);
        }
        if let Some(state) = places.gatekeep_state().filter(|d| d.is_dir()) {
            b.mount("--tmpfs", &state);
        }
        Self {
            args: b.args,
            program: places.program.clone(),
            writable,
            private,
        }
    }

    /// The arguments to put before `-- <program> …`.
    #[must_use]
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// What to run inside: `program`, by its full path when known.
    #[must_use]
    pub fn program<'a>(&'a self, program: &'a Path) -> &'a Path {
        self.program.as_deref().unwrap_or(program)
    }
}

#[derive(Default)]
struct Builder {
    args: Vec<OsString>,
}

impl Builder {
    fn flags(&mut self, flags: &[&str]) {
        self.args.extend(flags.iter().map(OsString::from));
    }

    /// `--tmpfs DIR`, or `--bind`/`--ro-bind PATH PATH` (the same path
    /// inside as outside).
    fn mount(&mut self, how: &str, path: &Path) {
        if how == "--tmpfs" {
            self.args.extend([how.into(), path.into()]);
        } else {
            self.mount_at(how, path, path);
        }
    }

    /// `--bind`/`--ro-bind SOURCE DEST`: `source` seen at `dest` inside.
    fn mount_at(&mut self, how: &str, source: &Path, dest: &Path) {
        self.args.extend([how.into(), source.into(), dest.into()]);
    }
}

/// Every shared temporary and runtime directory, so that no socket of the
/// user's daemons (tmux, screen, D-Bus, ssh-agent, docker, gatekeep's own)
/// can be found in the box: each is an empty tmpfs there.
fn private_dirs(places: &Places) -> Vec<PathBuf> {
    // `/run` holds the sockets of system daemons too (docker, D-Bus,
    // screen, the user's runtime directory): all of it, and only the
    // resolver's directory comes back (`Layout::of`).
    let mut private: Vec<PathBuf> = vec![
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/run"),
        PathBuf::from("/var/run"),
        places.temp_dir.clone(),
    ];
    private.extend(places.runtime_dir.clone());
    private.extend(places.socket_dirs.iter().cloned());
    // Daemons that let their group start root containers keep sockets
    // elsewhere too: Docker Desktop in `~/.docker`, LXD under `/var/snap`.
    private.extend(places.home.as_ref().map(|h| h.join(".docker")));
    private.push(PathBuf::from("/var/snap/lxd/common/lxd"));
    private.push(PathBuf::from("/var/lib/lxd"));
    private.extend(places.gatekeep_state());
    // As the kernel sees them: `/var/run` is mostly a link to `/run`.
    let mut private: Vec<PathBuf> = private
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .filter(|p| p.is_dir())
        .collect();
    dedup(&mut private);
    private
}

/// What the box shares read-write: the workspace, OpenCode's own
/// directories (created, so that they can be shared), caches, the run's own
/// directories and `--share`; those that exist.
fn writable_dirs(places: &Places) -> Vec<PathBuf> {
    let mut writable = vec![places.workspace.clone()];
    for home in [&places.data_home, &places.state_home, &places.cache_home]
        .into_iter()
        .flatten()
    {
        let dir = home.join("opencode");
        let _ = std::fs::create_dir_all(&dir);
        writable.push(dir);
    }
    writable.extend(places.cache_home.clone());
    if let Some(home) = &places.home {
        writable.extend(HOME_CACHES.iter().map(|c| home.join(c)));
    }
    writable.extend(places.run_dirs.iter().cloned());
    writable.extend(places.share.iter().cloned());
    writable.retain(|p| p.exists());
    dedup(&mut writable);
    writable
}

/// Copy each of `places`' outer config directories into `into` (the run's
/// private directory) and record the pairs in `places.config_copies`.
/// `node_modules` is not copied: the box shows the original, read-only;
/// nor is a `.git` (a config directory kept in a repository).
pub fn copy_config_dirs(places: &mut Places, into: &Path) -> std::io::Result<()> {
    // OpenCode creates its global config directory when it is missing,
    // which it could not do inside the box: it is made here, empty.
    if let Some(global) = places.opencode_config() {
        std::fs::create_dir_all(global)?;
    }
    for (n, original) in places.outer_config_dirs().into_iter().enumerate() {
        let copy = into.join(format!("config-{n}"));
        // Fresh for every start of the server (a restart for `--gate`).
        if copy.exists() {
            std::fs::remove_dir_all(&copy)?;
        }
        copy_tree(&original, &copy, &mut 0)?;
        places.config_copies.push((original, copy));
    }
    Ok(())
}

/// Bound on what one config directory may hold, besides `node_modules`.
const MAX_COPIED: usize = 10_000;

fn copy_tree(from: &Path, to: &Path, copied: &mut usize) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        *copied += 1;
        if *copied > MAX_COPIED {
            return Err(std::io::Error::other(format!(
                "{} holds more than {MAX_COPIED} files",
                from.display()
            )));
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &dest)?;
        } else if kind.is_dir() {
            if entry.file_name() != "node_modules" && entry.file_name() != ".git" {
                copy_tree(&source, &dest, copied)?;
            }
        } else if kind.is_file() {
            std::fs::copy(&source, &dest)?;
        }
    }
    Ok(())
}

fn dedup(paths: &mut Vec<PathBuf>) {
    let mut seen = Vec::new();
    paths.retain(|p| {
        let new = !seen.contains(p);
        seen.push(p.clone());
        new
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine laid out like the test environment: HOME and the
    /// workspace under /tmp.
    fn places(root: &Path) -> Places {
        let home = root.join("home");
        let ws = root.join("ws");
        for d in [
            home.join(".config/opencode"),
            home.join(".cache"),
            home.join(".npm"),
            ws.clone(),
        ] {
            std::fs::create_dir_all(d).expect("dirs");
        }
        Places {
            workspace: ws,
            config_home: Some(home.join(".config")),
            data_home: Some(home.join(".local/share")),
            state_home: Some(home.join(".local/state")),
            cache_home: Some(home.join(".cache")),
            home: Some(home),
            uid: 4242,
            temp_dir: PathBuf::from("/tmp"),
            ..Places::default()
        }
    }

    /// (how, path) for every mount, in order.
    fn mounts(layout: &Layout) -> Vec<(String, PathBuf)> {
        let args: Vec<String> = layout
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--tmpfs" => {
                    out.push((args[i].clone(), PathBuf::from(&args[i + 1])));
                    i += 2;
                }
                "--bind" | "--ro-bind" => {
                    out.push((args[i].clone(), PathBuf::from(&args[i + 2])));
                    i += 3;
                }
                _ => i += 1,
            }
        }
        out
    }

    /// The last mount that covers `path` decides what the box makes of it.
    fn fate(layout: &Layout, path: &Path) -> Option<String> {
        mounts(layout)
            .into_iter()
            .rfind(|(_, p)| path.starts_with(p))
            .map(|(how, _)| how)
    }

    #[test]
    fn the_workspace_and_caches_are_writable_and_config_and_home_are_not() {
        let root = tempfile::tempdir().expect("tempdir");
        let p = places(root.path());
        let home = p.home.clone().expect("home");
        let layout = Layout::of(&p);
        assert_eq!(
            fate(&layout, &p.workspace.join("src/main.rs")).as_deref(),
            Some("--bind")
        );
        assert_eq!(
            fate(&layout, &home.join(".cache/x")).as_deref(),
            Some("--bind")
        );
        assert_eq!(
            fate(&layout, &home.join(".npm/_cacache")).as_deref(),
            Some("--bind")
        );
        assert_eq!(
            fate(&layout, &home.join(".local/share/opencode/opencode.db")).as_deref(),
            Some("--bind"),
            "OpenCode's data is created and shared"
        );
        for ro in [
            ".config/opencode/tools/bash.js",
            ".bashrc",
            ".local/bin/opencode",
        ] {
            assert_eq!(
                fate(&layout, &home.join(ro)).as_deref(),
                Some("--ro-bind"),
                "{ro}"
            );
        }
        assert_eq!(
            fate(&layout, Path::new("/tmp/tmux-0/default")).as_deref(),
            Some("--tmpfs")
        );
    }

    #[test]
    fn a_share_can_not_reopen_the_opencode_config_or_gatekeeps_state() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut p = places(root.path());
        let home = p.home.clone().expect("home");
        std::fs::create_dir_all(home.join(".local/state/gatekeep")).expect("state");
        p.share = vec![home.clone()];
        let layout = Layout::of(&p);
        assert_eq!(
            fate(&layout, &home.join(".bashrc")).as_deref(),
            Some("--bind")
        );
        assert_eq!(
            fate(&layout, &home.join(".config/opencode/plugins/x.js")).as_deref(),
            Some("--ro-bind")
        );
        assert_eq!(
            fate(&layout, &home.join(".local/state/gatekeep/x")).as_deref(),
            Some("--tmpfs")
        );
    }

    #[test]
    fn outer_config_directories_are_throwaway_copies_and_git_is_read_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut p = places(root.path());
        let home = p.home.clone().expect("home");
        std::fs::write(home.join(".config/opencode/opencode.json"), "{}").expect("config");
        std::fs::create_dir_all(home.join(".config/opencode/node_modules/x")).expect("modules");
        std::fs::create_dir_all(p.workspace.join(".git/hooks")).expect("git");
        std::fs::write(p.workspace.join(".git/config"), "").expect("git config");
        let run = root.path().join("run");
        copy_config_dirs(&mut p, &run).expect("copied");
        let (original, copy) = p.config_copies.first().cloned().expect("one copy");
        assert_eq!(original, home.join(".config/opencode"));
        assert!(copy.join("opencode.json").is_file());
        assert!(
            !copy.join("node_modules").exists(),
            "packages are not copied"
        );
        let layout = Layout::of(&p);
        let args: Vec<String> = layout
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let bound = args.windows(3).any(|w| {
            w[0] == "--bind" && w[1] == copy.to_string_lossy() && w[2] == original.to_string_lossy()
        });
        assert!(bound, "{args:?}");
        assert_eq!(
            fate(&layout, &original.join("tools/bash.js")).as_deref(),
            Some("--bind")
        );
        assert_eq!(
            fate(&layout, &original.join("node_modules/x/index.js")).as_deref(),
            Some("--ro-bind")
        );
        assert_eq!(
            fate(&layout, &p.workspace.join(".git/hooks/pre-commit")).as_deref(),
            Some("--ro-bind")
        );
        assert_eq!(
            fate(&layout, &p.workspace.join(".git/config")).as_deref(),
            Some("--ro-bind")
        );
        assert_eq!(
            fate(&layout, &p.workspace.join(".git/objects/x")).as_deref(),
            Some("--bind")
        );
    }

    #[test]
    fn a_share_or_workspace_that_holds_home_or_tmp_is_unsafe() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut p = places(root.path());
        assert_eq!(p.unsafe_share(), None);
        p.share = vec![root.path().join("ws/cache")];
        assert_eq!(p.unsafe_share(), None);
        p.share = vec![PathBuf::from("/tmp")];
        assert_eq!(p.unsafe_share(), Some(PathBuf::from("/tmp")));
        p.share = Vec::new();
        p.workspace = root.path().to_owned();
        assert_eq!(
            p.unsafe_share(),
            Some(root.path().to_owned()),
            "the workspace holds HOME"
        );
    }

    #[test]
    fn the_runtime_directory_is_private_and_the_box_dies_with_gatekeep() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut p = places(root.path());
        let runtime = root.path().join("run-user");
        std::fs::create_dir_all(&runtime).expect("runtime");
        p.runtime_dir = Some(runtime.clone());
        let layout = Layout::of(&p);
        assert_eq!(
            fate(&layout, &runtime.join("bus")).as_deref(),
            Some("--tmpfs")
        );
        let flags: Vec<&std::ffi::OsStr> = layout.args().iter().map(OsString::as_os_str).collect();
        for flag in ["--die-with-parent", "--unshare-pid", "--new-session"] {
            assert!(flags.contains(&std::ffi::OsStr::new(flag)), "{flag}");
        }
    }
}

//! Linux: `prctl` and `/proc`.

use nix::sys::signal::Signal;

use super::Hardening;

pub(super) fn harden() -> Hardening {
    Hardening {
        // Not dumpable: `/proc/<gatekeep>/environ` and `mem` become
        // unreadable to the same user, and ptrace is refused.
        secrets_unreadable: nix::sys::prctl::set_dumpable(false).is_ok(),
        keeps_daemons_below: nix::sys::prctl::set_child_subreaper(true).is_ok(),
    }
}

/// Nothing to hold after the spawn: the kernel's parent-death signal does it.
pub(super) struct Tether;

/// The parent-death signal: the kernel SIGKILLs the child when the thread
/// that spawned it dies.
pub(super) fn tether(cmd: &mut tokio::process::Command) -> Tether {
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes
    // two async-signal-safe system calls (prctl, getppid); it allocates
    // nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died between fork and prctl; then the
            // signal will never come, so give up now.
            if nix::unistd::getppid().as_raw() != i32::try_from(parent).unwrap_or(-1) {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    Tether
}

pub(super) fn hold(_: Tether, _pid: u32) {}

/// `/proc/<pid>/stat`: `pid (comm) state ppid …`; `comm` may contain
/// spaces and parentheses, so the fields after it are found from the last
/// `)`. A zombie has no parent worth following.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    Some((comm, state, parent))
}

pub(super) fn process(pid: u32) -> Option<super::Proc> {
    let (_, state, parent) = stat(pid)?;
    Some(super::Proc {
        parent,
        zombie: matches!(state, 'Z' | 'X'),
    })
}

pub(super) fn command_name(pid: u32) -> Option<String> {
    stat(pid).map(|(comm, _, _)| comm)
}

/// bubblewrap, from a directory on `PATH`, and only a copy the agent could
/// not have put there: owned by root and writable by no one else. A
/// `bwrap` planted earlier in `~/.local/bin` would otherwise run OpenCode
/// in no box at all.
pub(super) fn sandbox() -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::MetadataExt as _;
    let trusted = |path: &std::path::Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0)
    };
    let found: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join("bwrap"))
        .filter(|bwrap| bwrap.is_file())
        .collect();
    if let Some(bwrap) = found.iter().find(|b| trusted(b)) {
        return Ok(bwrap.clone());
    }
    Err(match found.first() {
        Some(untrusted) => format!(
            "the agent's box needs bubblewrap, and the `bwrap` found ({}) is not owned by root \
             or is writable by others: install it from the system's packages",
            untrusted.display()
        ),
        None => "the agent's box needs bubblewrap (`bwrap`) on PATH: install it (Debian/Ubuntu: \
                 apt install bubblewrap; Fedora: dnf install bubblewrap)"
            .to_owned(),
    })
}

pub(super) fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc").map_or_else(
        |_| Vec::new(),
        |dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        },
    )
}

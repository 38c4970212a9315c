//! What gatekeep needs from the operating system, behind one interface,
//! with the Linux and macOS implementations side by side. Nothing else in
//! the crate uses `cfg(target_os)`.
//!
//! - [`harden`]: keep the run's secrets out of reach of same-user processes
//!   (the agent's tools) and keep the agent's daemons below gatekeep.
//! - [`tether`]: OpenCode dies with gatekeep, even on `kill -9`.
//! - [`parent_of`], [`command_name`], [`descendants_of`]: process ancestry,
//!   for refusing the agent at the local socket and for leaving no orphan.
//!
//! What each platform protects is in docs/design.md ("Nothing but gatekeep
//! answers").

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

/// What [`harden`] achieved here, for `doctor` and the verbose log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hardening {
    /// Same-user processes can read neither gatekeep's environment nor its
    /// memory (Linux: not dumpable; macOS: `PT_DENY_ATTACH` does not cover
    /// the environment, so false there).
    pub secrets_unreadable: bool,
    /// Processes daemonised by the agent (`setsid`, double fork) are
    /// reparented to gatekeep, not to init, so they stay its descendants.
    pub keeps_daemons_below: bool,
}

/// Make this process as hard to reach from its own children as the
/// platform allows. Call before reading any secret. Failures leave the
/// field false; the run goes on (the detection of intrusions does not
/// depend on it).
#[must_use]
pub fn harden() -> Hardening {
    imp::harden()
}

/// The sandbox program for `--isolate` (bubblewrap), or why there is none
/// here.
pub fn sandbox() -> Result<std::path::PathBuf, String> {
    imp::sandbox()
}

/// Ties the child that `cmd` is about to spawn to gatekeep's life: it is
/// killed (its whole process group) when gatekeep dies, however it dies.
/// Call [`Tether::hold`] with the child's pid once it is spawned.
#[must_use = "hold the tether once the child is spawned"]
pub fn tether(cmd: &mut tokio::process::Command) -> Tether {
    Tether(imp::tether(cmd))
}

/// See [`tether`].
pub struct Tether(imp::Tether);

impl Tether {
    /// The child was spawned as `pid`, leading its own process group.
    pub fn hold(self, pid: u32) {
        imp::hold(self.0, pid);
    }
}

/// The parent of `pid`, if it is alive and readable.
#[must_use]
pub fn parent_of(pid: u32) -> Option<u32> {
    imp::parent_of(pid)
}

/// The short command name of `pid` (what `ps -o comm` shows), if readable.
#[must_use]
pub fn command_name(pid: u32) -> Option<String> {
    imp::command_name(pid)
}

/// Every live process below `pid` (children, their children, …).
#[must_use]
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = imp::all_pids()
        .into_iter()
        .filter_map(|p| parent_of(p).map(|parent| (p, parent)))
        .collect();
    let mut out: Vec<u32> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, parent)| *parent == p) {
            if !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

/// SIGKILL every process left below gatekeep (what the agent daemonised
/// escapes OpenCode's process group, not gatekeep: see [`harden`]), and reap
/// those that were reparented to it. Returns how many there were.
pub async fn kill_leftovers() -> usize {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;

    let me = std::process::id();
    let left = descendants_of(me);
    let pids: Vec<Pid> = left
        .iter()
        .filter_map(|p| i32::try_from(*p).ok())
        .map(Pid::from_raw)
        .collect();
    for pid in &pids {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    // Our own children (reparented daemons) would stay zombies: reap them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut mine: Vec<Pid> = pids
        .into_iter()
        .filter(|p| parent_of(p.as_raw().unsigned_abs()) == Some(me))
        .collect();
    while !mine.is_empty() && std::time::Instant::now() < deadline {
        mine.retain(|pid| {
            !matches!(
                waitpid(*pid, Some(WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::Signaled(..)
                    | nix::sys::wait::WaitStatus::Exited(..))
                    | Err(_)
            )
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    left.len()
}

/// Read the secret `name` from the environment and wipe it out of this
/// process: the value is overwritten in place in the environment block
/// that `/proc/<pid>/environ` (or `ps eww` on macOS) shows — even to a
/// reader that could get past [`harden`] — and the variable is removed so
/// no child inherits it. Call at the start of `main`, while the process has
/// one thread.
#[must_use]
pub fn take_env_secret(name: &str) -> Option<secrecy::SecretString> {
    let value = std::env::var(name).ok();
    let key = std::ffi::CString::new(name).ok()?;
    #[allow(unsafe_code)]
    // SAFETY: single-threaded at this point (start of main), so no other
    // thread reads or changes the environment. getenv returns a pointer to
    // the NUL-terminated value inside the environment block, or null; the
    // bytes up to the NUL are overwritten, never past it.
    unsafe {
        let at = libc::getenv(key.as_ptr());
        if !at.is_null() {
            let len = libc::strlen(at);
            std::ptr::write_bytes(at, 0, len);
        }
        std::env::remove_var(name);
    }
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| secrecy::SecretString::from(v.trim().to_owned()))
}

/// The ancestors of `pid`, nearest first, up to (not including) init. The
/// walk is bounded: a cycle or a very deep tree cannot hang it.
#[must_use]
pub fn ancestors_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut current = pid;
    while let Some(parent) = parent_of(current) {
        if parent <= 1 || out.contains(&parent) || out.len() >= 1024 {
            break;
        }
        out.push(parent);
        current = parent;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_ancestry_is_readable_and_ends_before_init() {
        let me = std::process::id();
        let parent = parent_of(me).expect("our parent is readable");
        let ancestors = ancestors_of(me);
        assert_eq!(ancestors.first(), Some(&parent));
        assert!(!ancestors.contains(&1), "init is not listed");
        assert!(command_name(me).is_some());
    }

    #[test]
    fn a_child_and_its_grandchild_are_descendants_and_know_their_ancestry() {
        // sh → sleep: both below us.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("the grandchild's pid");
        let grandchild: u32 = line.trim().parse().expect("a pid");
        let below = descendants_of(std::process::id());
        assert!(below.contains(&child.id()), "{below:?}");
        assert!(below.contains(&grandchild), "{below:?}");
        assert!(ancestors_of(grandchild).contains(&std::process::id()));
        // `$!` is printed once the shell forked; the fork shows as `sh`
        // until it has exec'd `sleep`.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while command_name(grandchild).as_deref() == Some("sh") && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(command_name(grandchild).as_deref(), Some("sleep"));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(grandchild).expect("pid")),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    }

    #[test]
    fn a_dead_process_has_no_parent() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = child.id();
        child.wait().expect("reaped");
        assert_eq!(parent_of(pid), None);
    }
}

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

/// The sandbox program for the agent's box (bubblewrap), or why there is none
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

/// One process as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proc {
    pub parent: u32,
    /// Its thread-group leader has exited. Other threads of it may still
    /// run (a "zombie leader"): such a process is still there to kill, but
    /// its ancestry is no longer evidence of anything.
    pub zombie: bool,
}

/// The parent of `pid`, if it is alive (not a zombie) and readable.
#[must_use]
pub fn parent_of(pid: u32) -> Option<u32> {
    imp::process(pid).filter(|p| !p.zombie).map(|p| p.parent)
}

/// The short command name of `pid` (what `ps -o comm` shows), if readable.
#[must_use]
pub fn command_name(pid: u32) -> Option<String> {
    imp::command_name(pid)
}

/// Every process below `pid` (children, their children, …), zombie
/// leaders included: a process whose main thread exited while another
/// thread lives on shows as a zombie, and must still be found and killed.
#[must_use]
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = imp::all_pids()
        .into_iter()
        .filter_map(|p| imp::process(p).map(|proc| (p, proc.parent)))
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
        .filter(|p| imp::process(p.as_raw().unsigned_abs()).map(|p| p.parent) == Some(me))
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

/// How deep an ancestry is followed before it counts as unreadable.
const MAX_ANCESTRY: usize = 1024;

/// The ancestors of `pid`, nearest first, up to (not including) init or the
/// edge of its PID namespace (parent 0) — or `None` when the ancestry
/// cannot be read to that end: `pid` or an ancestor is gone or a zombie
/// (its ancestry no longer says where it came from), the chain is deeper
/// than [`MAX_ANCESTRY`], or it loops. Callers that decide on an ancestry
/// must treat `None` as the worst case (docs/design.md, "Nothing but
/// gatekeep answers").
#[must_use]
pub fn ancestors_of(pid: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut current = pid;
    loop {
        let parent = parent_of(current)?;
        if parent <= 1 {
            return Some(out);
        }
        if out.contains(&parent) || out.len() >= MAX_ANCESTRY {
            return None;
        }
        out.push(parent);
        current = parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_ancestry_is_readable_and_ends_before_init() {
        let me = std::process::id();
        let parent = parent_of(me).expect("our parent is readable");
        let ancestors = ancestors_of(me).expect("our ancestry reads to the end");
        assert_eq!(ancestors.first(), Some(&parent));
        assert!(!ancestors.contains(&1), "init is not listed");
        assert!(command_name(me).is_some());
    }

    /// Spawn `cmd` with its stdout piped, and read the pid it prints first
    /// (of itself or of a process it started).
    fn spawn_reporting_pid(mut cmd: std::process::Command) -> (std::process::Child, u32) {
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawned");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
            &mut line,
        )
        .expect("a pid line");
        (child, line.trim().parse().expect("a pid"))
    }

    fn kill(pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn a_child_and_its_grandchild_are_descendants_and_know_their_ancestry() {
        // sh → sleep: both below us.
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", "sleep 5 & echo $!; wait"]);
        let (mut child, grandchild) = spawn_reporting_pid(sh);
        let below = descendants_of(std::process::id());
        assert!(below.contains(&child.id()), "{below:?}");
        assert!(below.contains(&grandchild), "{below:?}");
        assert!(ancestors_of(grandchild)
            .expect("readable")
            .contains(&std::process::id()));
        // `$!` is printed once the shell forked; the fork shows as `sh`
        // until it has exec'd `sleep`.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while command_name(grandchild).as_deref() == Some("sh") && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(command_name(grandchild).as_deref(), Some("sleep"));
        kill(grandchild);
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
        assert_eq!(ancestors_of(pid), None, "a gone process has no ancestry");
    }

    /// A chain of shells deeper than the walk follows: its ancestry is not
    /// "empty" (which would read as a person), it is unreadable.
    #[test]
    fn an_ancestry_deeper_than_the_limit_is_unreadable_not_empty() {
        let depth = MAX_ANCESTRY + 20;
        // Each level runs the next and waits for it, so the chain is
        // `depth` shells deep; the last prints its pid and sleeps.
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = dir.path().join("chain.sh");
        std::fs::write(
            &chain,
            "n=$1; if [ \"$n\" -gt 0 ]; then sh \"$0\" $((n-1)); exit $?; \
             else echo $$; exec sleep 30; fi\n",
        )
        .expect("script");
        let mut sh = std::process::Command::new("sh");
        sh.arg(&chain).arg(depth.to_string());
        let (mut child, deepest) = spawn_reporting_pid(sh);
        let ancestry = ancestors_of(deepest);
        kill(deepest);
        for pid in descendants_of(child.id()) {
            kill(pid);
        }
        let _ = child.wait();
        assert_eq!(ancestry, None);
    }

    /// A helper whose main thread exits while another thread lives on:
    /// it shows as a zombie, but it still runs. Its ancestry proves
    /// nothing, and it is still found below us to be killed.
    #[test]
    fn a_zombie_leader_with_a_live_thread_has_no_ancestry_but_is_found() {
        let script = "import ctypes, os, sys, threading, time\n\
            threading.Thread(target=time.sleep, args=(30,)).start()\n\
            print(os.getpid(), flush=True)\n\
            ctypes.CDLL(None).pthread_exit(None)\n";
        let mut python = std::process::Command::new("python3");
        python.args(["-c", script]);
        let (mut child, pid) = spawn_reporting_pid(python);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while imp::process(pid).is_some_and(|p| !p.zombie) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let zombie = imp::process(pid);
        let ancestry = ancestors_of(pid);
        let found = descendants_of(std::process::id()).contains(&pid);
        // SIGKILL to a zombie leader ends its whole thread group.
        kill(pid);
        let _ = child.wait();
        assert_eq!(
            zombie.map(|p| p.zombie),
            Some(true),
            "the leader did not exit"
        );
        assert_eq!(ancestry, None);
        assert!(found, "a zombie leader is not found below us");
    }
}

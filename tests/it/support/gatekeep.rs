//! Runs the real `gatekeep` binary as a user would: at a pseudo-terminal
//! (for terminal approvals) or detached from any terminal (CI, cron).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Default bound on every wait here.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running gatekeep.
pub struct Gatekeep {
    child: Child,
    /// What gatekeep wrote to the terminal (stderr, and the echo of input).
    screen: Arc<Mutex<String>>,
    /// stdout (the agent's text).
    stdout: Arc<Mutex<String>>,
    /// The pty's controlling side, for typing; `None` when not at a terminal.
    master: Option<std::fs::File>,
}

/// Every environment variable of the test process that could change
/// gatekeep's behaviour is removed, so the developer's own settings never
/// leak into a scenario.
///
/// The real OpenCode runs in the agent's box, as it does for users. A fake
/// OpenCode (a script beside its `records` directory) reports its pid,
/// process group and arguments as the host sees them, so it runs outside
/// the box (`--no-isolate`), unless the scenario chose the box explicitly.
fn base_command(args: &[&str], program: &Path, tail: &[&str]) -> Command {
    let mut cmd = clean_command();
    cmd.arg("run").args(args);
    let fake = program
        .parent()
        .and_then(Path::parent)
        .is_some_and(|dir| dir.join("records").is_dir());
    if fake
        && !args
            .iter()
            .any(|a| *a == "--isolate" || *a == "--no-isolate")
    {
        cmd.arg("--no-isolate");
    }
    cmd.arg("--").arg(program).args(tail);
    cmd
}

fn clean_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatekeep"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GATEKEEP_") || key == "DISCORD_TOKEN" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn pump(mut source: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .expect("screen lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
}

impl Gatekeep {
    /// gatekeep at a terminal: stdin and stderr are a pty, stdout a pipe.
    pub fn at_terminal(
        args: &[&str],
        program: &Path,
        tail: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave_in: OwnedFd = pty.slave.try_clone().expect("dup slave");
        let slave_err: OwnedFd = pty.slave;
        let mut cmd = base_command(args, program, tail);
        cmd.stdin(Stdio::from(slave_in))
            .stderr(Stdio::from(slave_err))
            .stdout(Stdio::piped())
            .envs(envs.iter().copied());
        let mut child = cmd.spawn().expect("spawn gatekeep");
        // Drop our copies of the slave (moved into Stdio), so reading the
        // master ends when gatekeep exits.
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        pump(master.try_clone().expect("dup master"), Arc::clone(&screen));
        pump(child.stdout.take().expect("stdout"), Arc::clone(&stdout));
        Self {
            child,
            screen,
            stdout,
            master: Some(master),
        }
    }

    /// gatekeep with no terminal at all, stdin empty (CI, cron).
    pub fn detached(args: &[&str], program: &Path, tail: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::spawn_detached(base_command(args, program, tail), envs)
    }

    /// Any other gatekeep command (`gatekeep hub …`), detached.
    pub fn command(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = clean_command();
        cmd.args(args);
        Self::spawn_detached(cmd, envs)
    }

    fn spawn_detached(mut cmd: Command, envs: &[(&str, &str)]) -> Self {
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .envs(envs.iter().copied());
        let mut child = cmd.spawn().expect("spawn gatekeep");
        let screen = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        pump(child.stderr.take().expect("stderr"), Arc::clone(&screen));
        pump(child.stdout.take().expect("stdout"), Arc::clone(&stdout));
        Self {
            child,
            screen,
            stdout,
            master: None,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Everything gatekeep showed on the terminal / stderr so far.
    pub fn screen(&self) -> String {
        self.screen.lock().expect("screen lock").clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Wait until the screen shows `text`.
    pub async fn expect(&self, text: &str) {
        let start = Instant::now();
        while !self.screen().contains(text) {
            assert!(
                start.elapsed() < WAIT,
                "gatekeep never showed {text:?}; screen so far:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Type a line at the terminal.
    pub fn type_line(&mut self, line: &str) {
        let master = self.master.as_mut().expect("gatekeep runs at a terminal");
        master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type at the pty");
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal gatekeep");
    }

    /// Wait for gatekeep to exit; its exit code (signals as 128+n).
    pub async fn exit_code(&mut self) -> i32 {
        self.exit_code_within(WAIT).await
    }

    /// As [`Gatekeep::exit_code`], waiting at most `bound`.
    pub async fn exit_code_within(&mut self, bound: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            if start.elapsed() > bound {
                let _ = self.child.kill();
                panic!("gatekeep did not exit in time; screen:\n{}", self.screen());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gatekeep {
    fn drop(&mut self) {
        // A failed test must not leave gatekeep (and its OpenCode) behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

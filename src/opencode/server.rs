//! The `opencode serve` child process (docs/design.md, "Start-up").
//!
//! One [`Server`] is one child in its own process group, dying with
//! gatekeep, with a fresh random `OPENCODE_SERVER_PASSWORD` so no other local
//! process can answer a permission. [`Server::start`] returns only after the
//! child printed its listening line, and takes the base URL from that line.
//! Its output is drained for the child's whole life into a small ring of
//! recent lines, so a full pipe can never block OpenCode and a failure can
//! show what OpenCode said.
//!
//! Ownership: a waiter task owns the child handle and publishes its exit
//! status on a watch channel; two reader tasks own stdout and stderr.
//! `Server` keeps the process group id, which is all that signalling needs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use process_wrap::tokio::{CommandWrap, ProcessGroup};

use crate::platform;
use rand::distributions::{Alphanumeric, DistString};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{oneshot, watch};

/// Lines of OpenCode output kept for error messages.
const KEPT_LINES: usize = 20;
/// Longest kept line, so one huge line cannot hold much memory.
const MAX_LINE: usize = 1000;
/// What OpenCode prints once it accepts connections.
const READY_PREFIX: &str = "opencode server listening on ";
/// How long to wait for the output readers to reach EOF after the child
/// exited, so its last words make it into the error.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// After SIGKILL of the group, how long to wait for the leader to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not find a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    #[error("workspace {0} is not a directory")]
    Workspace(PathBuf),
    #[error("could not start {program:?}: {source}{}", spawn_hint(.source))]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OpenCode exited before it was ready ({status}){}", output_block(.output))]
    ExitedEarly { status: String, output: Vec<String> },
    #[error(
        "OpenCode announced `{line}`, which gatekeep cannot drive: it supervises OpenCode {}, \
         which announces `opencode server listening on …`; OpenCode 2 (`server listening on \
         …`) is not supported yet. Nothing was started; for gatekeep runs install \
         `npm install -g opencode-ai@{}` and give its path after `--`",
        super::compat::range(),
        super::compat::NEWEST_TESTED
    )]
    Unreadable { line: String },
    #[error(
        "the agent's box could not be set up here ({why}); nothing was started. {}",
        crate::sandbox::NO_BOX_FIX
    )]
    NoBox { why: String },
    #[error("OpenCode did not report ready within {timeout:?}{}", output_block(.output))]
    NotReady {
        timeout: Duration,
        output: Vec<String>,
    },
}

/// How often a start that lost the database race is tried.
const START_ATTEMPTS: u32 = 4;

impl ServerError {
    /// OpenCode exited at start because another server of the same user
    /// was migrating its database at that moment.
    fn is_database_race(&self) -> bool {
        match self {
            ServerError::ExitedEarly { output, .. } => output
                .iter()
                .any(|l| l.contains("database is locked") || l.contains("Failed query")),
            _ => false,
        }
    }
}

fn spawn_hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            " (is OpenCode installed? `npm install -g opencode-ai`, or give its path after `--`)"
        }
        std::io::ErrorKind::PermissionDenied => " (is it executable?)",
        _ => "",
    }
}

fn output_block(lines: &[String]) -> String {
    if lines.is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; its last output:\n  {}", lines.join("\n  "))
    }
}

/// How to start `opencode serve`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The OpenCode executable (any path, or a name looked up on `PATH`).
    pub program: PathBuf,
    /// The workspace: the child's working directory.
    pub workspace: PathBuf,
    /// Extra environment, e.g. `OPENCODE_PERMISSION`.
    pub env: Vec<(OsString, OsString)>,
    /// Bound on the wait for the listening line.
    pub ready_timeout: Duration,
    /// The agent's box; `None` with `--no-isolate`.
    pub sandbox: Option<Sandbox>,
}

/// The agent's box around `opencode serve` (see [`crate::sandbox`]): the
/// sandbox program and its arguments.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub program: PathBuf,
    pub layout: crate::sandbox::Layout,
}

impl Sandbox {
    /// `cmd` runs the sandbox program; make it run `opencode` inside.
    fn wrap(&self, cmd: &mut tokio::process::Command, opencode: &Path) {
        cmd.args(self.layout.args())
            .arg("--")
            .arg(self.layout.program(opencode));
        for name in crate::sandbox::REMOVED_ENV {
            cmd.env_remove(name);
        }
    }
}

/// A running `opencode serve`. Dropping it without [`Server::stop`] SIGKILLs
/// the process group (best effort, no reaping).
#[derive(Debug)]
pub struct Server {
    pid: u32,
    pgid: Pid,
    base_url: String,
    password: SecretString,
    /// `None` until the child exited; set by the waiter task.
    exit: watch::Receiver<Option<ExitStatus>>,
    output: Arc<Mutex<Ring>>,
    /// Set once the group was killed and reaped, so `Drop` leaves a possibly
    /// reused process group id alone.
    stopped: bool,
}

/// How [`Server::stop`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The leader's exit status, if it was reaped in time.
    pub status: Option<ExitStatus>,
    /// Whether SIGTERM was not enough within the grace period.
    pub killed: bool,
}

impl Server {
    /// Spawn `<program> serve --hostname 127.0.0.1 --port <free port>` and
    /// wait for its listening line.
    ///
    /// Call this from a task on a long-lived runtime thread, never inside
    /// `spawn_blocking`: Linux delivers the parent-death signal when the
    /// *thread* that spawned the child exits, and blocking-pool threads exit
    /// after a short idle time, which would kill OpenCode mid-run.
    ///
    /// Several servers starting at once under one HOME race on OpenCode's
    /// database migration (the first start after installing or upgrading
    /// OpenCode): the losers exit with `database is locked` or a failed
    /// `CREATE TABLE`. Such a start is tried again, a few times, after a
    /// short random pause (docs/design.md, "Many runs, one bot").
    pub async fn start(opts: ServerOptions) -> Result<Server, ServerError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&opts).await {
                Err(e) if e.is_database_race() && attempt < START_ATTEMPTS => {
                    attempt += 1;
                    let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 100..600);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    async fn start_once(opts: &ServerOptions) -> Result<Server, ServerError> {
        // Checked here because a missing cwd makes spawn fail with ENOENT,
        // which would read as "OpenCode not found".
        if !opts.workspace.is_dir() {
            return Err(ServerError::Workspace(opts.workspace.clone()));
        }
        let port = free_port().map_err(ServerError::Port)?;
        let password = SecretString::from(Alphanumeric.sample_string(&mut rand::thread_rng(), 40));
        // The one place the password leaves its wrapper on the server side:
        // OpenCode reads it from its environment, and its output is scrubbed
        // of it before anyone can show that output.
        let plain = password.expose_secret();
        let output = Arc::new(Mutex::new(Ring::new(plain.to_owned())));

        let mut tether = None;
        let launcher = opts.sandbox.as_ref().map_or(&opts.program, |s| &s.program);
        let mut cmd = CommandWrap::with_new(launcher, |cmd| {
            if let Some(sandbox) = &opts.sandbox {
                sandbox.wrap(cmd, &opts.program);
            }
            cmd.arg("serve")
                .arg("--hostname")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .current_dir(&opts.workspace)
                // The agent must never see the bot token: with it, it could
                // post or edit messages in the approvals channel.
                .env_remove("DISCORD_TOKEN")
                .envs(opts.env.iter().map(|(k, v)| (k, v)))
                .env("OPENCODE_SERVER_PASSWORD", plain)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            tether = Some(platform::tether(cmd));
        });
        cmd.wrap(ProcessGroup::leader());
        let mut child = spawn(&mut cmd).await.map_err(|source| ServerError::Spawn {
            program: opts.program.clone(),
            source,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        if let Some(tether) = tether {
            tether.hold(pid);
        }
        let group = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));

        let (ready_tx, ready_rx) = oneshot::channel();
        let readers = [
            child
                .stdout()
                .take()
                .map(|out| tokio::spawn(drain(out, Arc::clone(&output), Some(ready_tx)))),
            child
                .stderr()
                .take()
                .map(|err| tokio::spawn(drain(err, Arc::clone(&output), None))),
        ];

        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            // Waits for the leader, then reaps what is left of our children
            // in its group. Holding `child` here keeps the pipes' handles
            // with the readers and the status on the channel.
            let status = child.wait().await;
            // Nobody listening only means the Server is gone already.
            let _ = exit_tx.send(Some(status.unwrap_or_else(|_| failed_status())));
        });

        let mut server = Server {
            pid,
            pgid: group,
            base_url: String::new(),
            password,
            exit: exit_rx,
            output,
            stopped: false,
        };

        let outcome = tokio::time::timeout(opts.ready_timeout, async {
            tokio::select! {
                url = ready_rx => url.ok(),
                _ = server.exited() => None,
            }
        })
        .await;
        match outcome {
            Ok(Some(Ok(url))) => {
                server.base_url = url;
                Ok(server)
            }
            // A server gatekeep cannot read is not waited on.
            Ok(Some(Err(line))) => {
                server.stop(Duration::ZERO).await;
                Err(ServerError::Unreadable { line })
            }
            Ok(None) => Err(server.exited_early(readers, opts.sandbox.is_some()).await),
            Err(_) => {
                let output = server.recent_output();
                server.stop(Duration::ZERO).await;
                Err(ServerError::NotReady {
                    timeout: opts.ready_timeout,
                    output,
                })
            }
        }
    }

    /// `http://127.0.0.1:PORT`, as OpenCode printed it.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The server password, for [`super::api::Api::new`].
    #[must_use]
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// The child's pid, which is also its process group id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines OpenCode printed (stdout and stderr interleaved),
    /// with the password redacted.
    #[must_use]
    pub fn recent_output(&self) -> Vec<String> {
        self.output
            .lock()
            .map(|ring| ring.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Resolves when the child exited, with its status. Cancel-safe: use it
    /// in `select!` as the "OpenCode died" arm.
    pub async fn exited(&mut self) -> ExitStatus {
        match self.exit.wait_for(Option::is_some).await {
            Ok(status) => status.unwrap_or_else(failed_status),
            // The waiter task is gone without a status: the runtime is
            // shutting down; the child is as good as gone for us.
            Err(_) => failed_status(),
        }
    }

    /// Whether the child has exited (non-blocking).
    #[must_use]
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// SIGTERM the whole process group, wait up to `grace` for the leader,
    /// then SIGKILL the group (also any stragglers after a clean exit) and
    /// reap the leader.
    pub async fn stop(mut self, grace: Duration) -> Stopped {
        let mut killed = false;
        if !self.has_exited() && !grace.is_zero() {
            self.signal(Signal::SIGTERM);
            killed = tokio::time::timeout(grace, self.exited()).await.is_err();
        } else if !self.has_exited() {
            killed = true;
        }
        // Also after a clean exit: the leader's children may linger in the
        // group.
        self.signal(Signal::SIGKILL);
        let status = tokio::time::timeout(KILL_WAIT, self.exited()).await.ok();
        self.stopped = true;
        Stopped { status, killed }
    }

    /// The child exited, or closed its output without the listening line
    /// (then the exit follows: the same short grace): why, with its last
    /// words. bubblewrap says why it could not set the box up on a line of
    /// its own; OpenCode never started then.
    async fn exited_early(
        mut self,
        readers: impl IntoIterator<Item = Option<tokio::task::JoinHandle<()>>>,
        boxed: bool,
    ) -> ServerError {
        let _ = tokio::time::timeout(DRAIN_GRACE, self.exited()).await;
        let status = self
            .exit
            .borrow()
            .map_or_else(|| "closed its output".to_owned(), describe);
        for reader in readers.into_iter().flatten() {
            let _ = tokio::time::timeout(DRAIN_GRACE, reader).await;
        }
        let output = self.recent_output();
        self.stop(Duration::ZERO).await;
        match output.iter().find(|l| l.starts_with("bwrap:")) {
            Some(line) if boxed => ServerError::NoBox { why: line.clone() },
            _ => ServerError::ExitedEarly { status, output },
        }
    }

    fn signal(&self, sig: Signal) {
        // ESRCH: the group is empty already, which is what we want.
        let _ = killpg(self.pgid, sig);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Spawn, retrying briefly on ETXTBSY: an executable that was just written
/// (an install, a test's script) stays "busy" while any process forked in
/// that moment still holds the write descriptor, until it execs.
async fn spawn(
    cmd: &mut CommandWrap,
) -> std::io::Result<Box<dyn process_wrap::tokio::ChildWrapper>> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            other => return other,
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    // The port is free now; OpenCode binds it a moment later. The race is
    // acceptable because OpenCode reports the port it really bound, and we
    // take the URL from that line.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(1 << 8)
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => Signal::try_from(sig)
            .map_or_else(|_| format!("signal {sig}"), |s| format!("killed by {s}")),
        _ => status.to_string(),
    }
}

/// Recent output lines, password redacted.
struct Ring {
    lines: VecDeque<String>,
    /// The password, to redact it from OpenCode's output. Never printed:
    /// `Debug` below leaves it out.
    secret: String,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("lines", &self.lines.len())
            .finish_non_exhaustive()
    }
}

impl Ring {
    fn new(secret: String) -> Self {
        Ring {
            lines: VecDeque::with_capacity(KEPT_LINES),
            secret,
        }
    }

    fn push(&mut self, line: &str) {
        // OpenCode 2 prints a password it generated itself.
        let line = if line.starts_with("server password ") {
            "server password [redacted]"
        } else {
            line
        };
        let mut line = line.trim_end().replace(&self.secret, "[redacted]");
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push('…');
        }
        if self.lines.len() == KEPT_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// Read lines until EOF, keep the recent ones, and report the listening URL
/// once. Lines are read as bytes: OpenCode output that is not UTF-8 must not
/// stop the draining.
async fn drain<R: AsyncRead + Unpin>(
    pipe: R,
    ring: Arc<Mutex<Ring>>,
    mut ready: Option<oneshot::Sender<Result<String, String>>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        if let Some(heard) = ready.as_ref().and_then(|_| listening(&line)) {
            if let Some(tx) = ready.take() {
                let _ = tx.send(heard);
            }
        }
        if let Ok(mut ring) = ring.lock() {
            ring.push(&line);
        }
    }
}

/// A line announcing that a server listens: the URL in OpenCode 1.x's
/// words, or (`Err`) the line, when a server announces itself in words
/// gatekeep does not drive — OpenCode 2's `server listening on …` among
/// them — so that it is refused at once instead of waited on.
fn listening(line: &str) -> Option<Result<String, String>> {
    if let Some(url) = listening_url(line) {
        return Some(Ok(url));
    }
    line.contains("listening on http")
        .then(|| Err(crate::redact::terminal_safe(line.trim())))
}

/// `opencode server listening on http://127.0.0.1:4096` → the URL.
fn listening_url(line: &str) -> Option<String> {
    let rest = &line[line.find(READY_PREFIX)? + READY_PREFIX.len()..];
    let url = rest.split_whitespace().next()?;
    let parsed = reqwest::Url::parse(url).ok()?;
    (parsed.scheme() == "http" && parsed.port().is_some())
        .then(|| url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed() {
        assert_eq!(
            listening_url("opencode server listening on http://127.0.0.1:4096\n").as_deref(),
            Some("http://127.0.0.1:4096")
        );
        assert_eq!(
            listening_url("INFO  opencode server listening on http://127.0.0.1:39123/ (ready)")
                .as_deref(),
            Some("http://127.0.0.1:39123")
        );
        assert_eq!(listening_url("opencode server listening on soon"), None);
        assert_eq!(listening_url("listening on http://127.0.0.1:1"), None);
        assert_eq!(
            listening("server listening on http://127.0.0.1:40249\n"),
            Some(Err("server listening on http://127.0.0.1:40249".to_owned())),
            "OpenCode 2's words"
        );
        assert_eq!(listening("Performing one time database migration"), None);
    }

    #[test]
    fn ring_keeps_recent_lines_and_redacts() {
        let mut ring = Ring::new("s3cret".into());
        for i in 0..30 {
            ring.push(&format!("line {i} s3cret\n"));
        }
        assert_eq!(ring.lines.len(), KEPT_LINES);
        assert_eq!(
            ring.lines.front().map(String::as_str),
            Some("line 10 [redacted]")
        );
        ring.push(&"x".repeat(5000));
        assert!(ring
            .lines
            .back()
            .is_some_and(|l| l.chars().count() == MAX_LINE + 1));
    }

    fn sh(script: &str) -> ServerOptions {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "gk-server-test-{}-{}.sh",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write script");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        ServerOptions {
            program: path,
            workspace: dir,
            env: vec![("GK_TEST".into(), "1".into())],
            ready_timeout: Duration::from_secs(5),
            sandbox: None,
        }
    }

    #[tokio::test]
    async fn exit_before_ready_reports_output() {
        let opts = sh("echo starting; echo 'boom: no provider' >&2; exit 3");
        let program = opts.program.clone();
        let err = Server::start(opts).await.expect_err("must fail");
        let _ = std::fs::remove_file(program);
        let ServerError::ExitedEarly { status, output } = &err else {
            panic!("{err}")
        };
        assert_eq!(status, "exit code 3");
        assert!(
            output.contains(&"boom: no provider".to_owned()),
            "{output:?}"
        );
        assert!(err.to_string().contains("boom: no provider"));
    }

    #[tokio::test]
    async fn a_start_that_lost_the_database_race_is_tried_again() {
        let tries = std::env::temp_dir().join(format!("gk-db-race-{}", rand::random::<u32>()));
        // Twice the loser of OpenCode's migration race, then a server.
        let opts = sh(&format!(
            "echo x >> {tries}; if [ $(wc -l < {tries}) -le 2 ]; then echo 'Error: database is locked' >&2; exit 1; fi; \
             echo \"opencode server listening on http://127.0.0.1:5\"; exec sleep 30",
            tries = tries.display()
        ));
        let program = opts.program.clone();
        let server = Server::start(opts).await.expect("started on the third try");
        let attempts = std::fs::read_to_string(&tries)
            .expect("tries")
            .lines()
            .count();
        let _ = std::fs::remove_file(&tries);
        let _ = std::fs::remove_file(&program);
        server.stop(Duration::from_secs(1)).await;
        assert_eq!(attempts, 3);
    }

    #[tokio::test]
    async fn any_other_early_exit_is_not_tried_again() {
        let tries = std::env::temp_dir().join(format!("gk-no-race-{}", rand::random::<u32>()));
        let opts = sh(&format!(
            "echo x >> {}; echo 'Error: bad config' >&2; exit 1",
            tries.display()
        ));
        let program = opts.program.clone();
        let err = Server::start(opts).await.expect_err("fails");
        let attempts = std::fs::read_to_string(&tries)
            .expect("tries")
            .lines()
            .count();
        let _ = std::fs::remove_file(&tries);
        let _ = std::fs::remove_file(&program);
        assert!(err.to_string().contains("bad config"), "{err}");
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn spawn_failures_say_what_to_fix() {
        let mut opts = sh("exit 0");
        let _ = std::fs::remove_file(&opts.program);
        opts.program = PathBuf::from("/nonexistent/opencode");
        let err = Server::start(opts.clone()).await.expect_err("no binary");
        assert!(err.to_string().contains("is OpenCode installed?"), "{err}");
        opts.workspace = PathBuf::from("/nonexistent/workspace");
        let err = Server::start(opts).await.expect_err("no workspace");
        assert!(matches!(err, ServerError::Workspace(_)), "{err}");
    }

    #[tokio::test]
    async fn not_ready_in_time_is_killed() {
        let mut opts = sh("echo warming up; exec sleep 30");
        opts.ready_timeout = Duration::from_millis(300);
        let program = opts.program.clone();
        let err = Server::start(opts).await.expect_err("must time out");
        let _ = std::fs::remove_file(&program);
        let ServerError::NotReady { output, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(output, &vec!["warming up".to_owned()]);
    }

    #[tokio::test]
    async fn ready_then_stop_kills_the_group() {
        // The server forks a grandchild in its group; stop must take both.
        let opts = sh(
            "sleep 30 & echo \"child $!\"; echo \"opencode server listening on http://127.0.0.1:5\"; exec sleep 30",
        );
        let program = opts.program.clone();
        let server = Server::start(opts).await.expect("ready");
        let _ = std::fs::remove_file(&program);
        assert_eq!(server.base_url(), "http://127.0.0.1:5");
        let grandchild: i32 = server
            .recent_output()
            .iter()
            .find_map(|l| l.strip_prefix("child ").map(|p| p.parse().expect("pid")))
            .expect("grandchild pid printed");
        let leader = i32::try_from(server.pid()).expect("pid");
        let stopped = server.stop(Duration::from_secs(2)).await;
        assert!(!stopped.killed, "sleep dies on SIGTERM");
        assert!(stopped.status.is_some());
        // The leader was reaped by us; the grandchild is reparented and
        // reaped by init (or is a zombie until then): not running either way.
        assert!(!running(leader));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while running(grandchild) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!running(grandchild), "grandchild {grandchild} survived");
    }

    /// Alive and not a zombie.
    fn running(pid: i32) -> bool {
        u32::try_from(pid).is_ok_and(|pid| crate::platform::parent_of(pid).is_some())
    }
}

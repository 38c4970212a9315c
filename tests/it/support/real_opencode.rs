//! The real OpenCode (`opencode-ai@1.18.33`), isolated and offline.
//!
//! Where it is: `OPENCODE_BIN`, else `target/opencode/bin/opencode` (what
//! `scripts/install-opencode` installs). When it is missing, e2e tests fail
//! under `CI=true` and otherwise print a loud skip naming the fix.
//!
//! Isolation (measured, see `docs/opencode-facts.md`): every test gets its
//! own HOME and XDG directories, a workspace with its own `opencode.json`
//! (a custom provider pointing at the [`FakeLlm`]), the switches that stop
//! auto-update, the models.dev fetch, LSP downloads, sharing and default
//! plugins (not `OPENCODE_PURE`: gatekeep's guard plugin must load),
//! no proxy variables (Bun sends even loopback traffic through
//! `HTTP_PROXY`), and a pre-seeded global config directory so OpenCode does
//! not `npm install @opencode-ai/plugin` from the registry on start-up (no
//! switch exists for that one).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fake_llm::FakeLlm;

/// The pinned version.
pub const VERSION: &str = "1.18.33";

/// The provider and model ids the workspace config declares.
pub const PROVIDER: &str = "fake";
pub const MODEL: &str = "fake-model";

/// Bound on `opencode serve` becoming ready (it takes 2–5 s on a loaded
/// 2-core machine).
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// Environment switches that keep OpenCode offline and away from the
/// user's configuration (besides HOME/XDG).
const SWITCHES: &[(&str, &str)] = &[
    ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
    ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
    ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
    ("OPENCODE_DISABLE_SHARE", "1"),
    ("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1"),
    ("OPENCODE_DISABLE_EXTERNAL_SKILLS", "1"),
    ("OPENCODE_DISABLE_CLAUDE_CODE", "1"),
    ("OPENCODE_DISABLE_EMBEDDED_WEB_UI", "1"),
];

/// Proxy variables, set to empty (which both OpenCode and reqwest treat as
/// unset): a proxy would capture the loopback fake LLM.
const PROXIES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Where the real OpenCode is, or `None` after printing a loud skip.
/// Panics under `CI=true`: CI must run the e2e tests, never skip them.
#[must_use]
pub fn opencode_bin() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/opencode/bin/opencode");
    match lookup(
        std::env::var_os("OPENCODE_BIN"),
        &local,
        std::env::var("CI").as_deref() == Ok("true"),
    ) {
        Lookup::Found(bin) => Some(bin),
        Lookup::Fail(why) => panic!("{why}"),
        Lookup::Skip => {
            eprintln!(
                "\n\
                 ************************************************************************\n\
                 SKIPPED: end-to-end test against the real OpenCode {VERSION}: not installed.\n\
                 Run `scripts/install-opencode` (or `scripts/test`, which does it), or set\n\
                 OPENCODE_BIN to an opencode {VERSION} binary.\n\
                 ************************************************************************\n"
            );
            None
        }
    }
}

/// The outcome of looking for OpenCode.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(PathBuf),
    /// Not installed, not under CI: skip loudly.
    Skip,
    /// Misconfigured, or not installed under CI: the test fails with this.
    Fail(String),
}

/// `OPENCODE_BIN` wins (and must exist: a typo must not turn into a skip);
/// else `local`; else skip, or fail under CI.
#[must_use]
pub fn lookup(env_bin: Option<std::ffi::OsString>, local: &Path, ci: bool) -> Lookup {
    if let Some(bin) = env_bin.filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Lookup::Found(bin)
        } else {
            Lookup::Fail(format!(
                "OPENCODE_BIN={} does not exist; run scripts/install-opencode",
                bin.display()
            ))
        };
    }
    if local.is_file() {
        return Lookup::Found(local.to_owned());
    }
    if ci {
        return Lookup::Fail(format!(
            "the real OpenCode {VERSION} is not installed (no OPENCODE_BIN, no {}); \
             CI must run the end-to-end tests: run scripts/install-opencode first (scripts/test does)",
            local.display()
        ));
    }
    Lookup::Skip
}

/// Options for [`RealOpencode::with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The workspace config's `permission` value.
    pub permission: Value,
    /// The workspace config's `agent` value, if any.
    pub agent: Option<Value>,
    /// Extra environment for OpenCode (e.g. `OPENCODE_PERMISSION`).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            permission: json!({ "bash": "ask", "edit": "ask" }),
            agent: None,
            env: Vec::new(),
        }
    }
}

/// One isolated OpenCode set-up: the binary, a workspace and the
/// environment to run `opencode serve` (or gatekeep, which passes its
/// environment through) with. Its directories are removed on drop.
pub struct RealOpencode {
    bin: PathBuf,
    workspace: tempfile::TempDir,
    home: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl RealOpencode {
    /// A workspace whose config asks for `bash` and `edit`; `None` (after a
    /// loud skip) when OpenCode is not installed.
    #[must_use]
    pub fn workspace(llm: &FakeLlm) -> Option<Self> {
        Self::with(llm, Options::default())
    }

    #[must_use]
    pub fn with(llm: &FakeLlm, options: Options) -> Option<Self> {
        let bin = opencode_bin()?;
        let workspace = tempfile::Builder::new()
            .prefix("gk-e2e-ws-")
            .tempdir()
            .expect("workspace tempdir");
        let home = tempfile::Builder::new()
            .prefix("gk-e2e-home-")
            .tempdir()
            .expect("home tempdir");

        let mut config = json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                PROVIDER: {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Fake LLM",
                    "options": { "baseURL": llm.base_url(), "apiKey": "fake-key" },
                    "models": { MODEL: { "name": "Fake model", "tool_call": true } },
                },
            },
            "model": format!("{PROVIDER}/{MODEL}"),
            "small_model": format!("{PROVIDER}/{MODEL}"),
            "autoupdate": false,
            "share": "disabled",
            "permission": options.permission,
        });
        if let Some(agent) = options.agent {
            config["agent"] = agent;
        }
        std::fs::write(
            workspace.path().join("opencode.json"),
            serde_json::to_string_pretty(&config).expect("config json"),
        )
        .expect("write opencode.json");

        let h = home.path();
        let xdg = |sub: &str| h.join(sub).to_string_lossy().into_owned();
        // Seed the global config directory so OpenCode's background
        // `npm install @opencode-ai/plugin` finds nothing to do (it installs
        // when node_modules is missing or the lock file lacks the package).
        let config_dir = h.join(".config/opencode");
        std::fs::create_dir_all(config_dir.join("node_modules")).expect("seed config dir");
        std::fs::write(
            config_dir.join("package-lock.json"),
            json!({ "packages": { "": { "dependencies": { "@opencode-ai/plugin": VERSION } } } })
                .to_string(),
        )
        .expect("seed package-lock.json");

        let mut env = BTreeMap::new();
        // The developer's own OpenCode settings must not leak in: blank them
        // (OpenCode treats an empty value as unset).
        for (key, _) in std::env::vars() {
            if key.starts_with("OPENCODE_") {
                env.insert(key, String::new());
            }
        }
        for key in PROXIES {
            env.insert((*key).to_owned(), String::new());
        }
        env.insert("HOME".to_owned(), h.to_string_lossy().into_owned());
        env.insert("XDG_CONFIG_HOME".to_owned(), xdg(".config"));
        env.insert("XDG_DATA_HOME".to_owned(), xdg(".local/share"));
        env.insert("XDG_STATE_HOME".to_owned(), xdg(".local/state"));
        env.insert("XDG_CACHE_HOME".to_owned(), xdg(".cache"));
        for (key, value) in SWITCHES {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        for (key, value) in options.env {
            env.insert(key, value);
        }
        Some(Self {
            bin,
            workspace,
            home,
            env,
        })
    }

    /// The OpenCode executable.
    #[must_use]
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The workspace directory (holds `opencode.json`).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.workspace.path()
    }

    /// The isolated HOME.
    #[must_use]
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The environment to add to OpenCode's (or gatekeep's) process.
    #[must_use]
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The environment as `(key, value)` pairs for the gatekeep harness.
    #[must_use]
    pub fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// `-m provider/model` for an `opencode run` tail.
    #[must_use]
    pub fn model() -> String {
        format!("{PROVIDER}/{MODEL}")
    }

    /// Start `opencode serve` directly (without gatekeep) on a free port,
    /// with `password`, and wait for its listening line.
    #[must_use]
    pub fn serve(&self, password: &str) -> Serve {
        use std::os::unix::process::CommandExt as _;
        let port = free_port();
        let mut child = Command::new(&self.bin)
            .args([
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(self.dir())
            .envs(&self.env)
            .env("OPENCODE_SERVER_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn opencode serve");
        let pgid = i32::try_from(child.id()).expect("pid fits");
        let stdout = child.stdout.take().expect("serve stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("server listening on") {
                    let _ = tx.send(line);
                }
            }
        });
        let mut serve = Serve {
            child,
            pgid,
            base: format!("http://127.0.0.1:{port}"),
            started: Instant::now(),
            ready_after: Duration::ZERO,
        };
        let line = rx
            .recv_timeout(READY_WAIT)
            .expect("opencode serve printed its listening line");
        assert!(
            line.contains(&format!("127.0.0.1:{port}")),
            "listening on another port: {line}"
        );
        serve.ready_after = serve.started.elapsed();
        serve
    }
}

/// A free loopback port (bound then released; fine for tests).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running `opencode serve` in its own process group; the whole group is
/// killed on drop.
pub struct Serve {
    child: Child,
    pgid: i32,
    pub base: String,
    started: Instant,
    /// How long it took to print the listening line.
    pub ready_after: Duration,
}

impl Serve {
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pgid
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let group = Pid::from_raw(self.pgid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Every live process whose command line mentions `needle` (e.g. a
/// workspace path): used to prove no OpenCode survived gatekeep.
#[must_use]
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let alive = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
            .unwrap_or(false);
        if alive && (cmdline.contains(needle) || cwd.to_string_lossy().contains(needle)) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// How many real OpenCode servers the e2e tests run at once: each start
/// costs seconds of CPU, and the CI machine has 2 cores.
const MAX_PARALLEL: usize = 2;

static RUNNING: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

/// A slot to run one real OpenCode; held for the test's duration.
pub struct Slot(());

/// Wait for a free slot (blocking: call it first in a test, before
/// anything runs on the test's runtime).
#[must_use]
pub fn slot() -> Slot {
    let mut running = RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while *running >= MAX_PARALLEL {
        running = FREED
            .wait(running)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    *running += 1;
    Slot(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = RUNNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running -= 1;
        FREED.notify_one();
    }
}

//! The GitHub Action's shell steps (`scripts/action`), run as the runner
//! would: a fake `GITHUB_*` environment, `gatekeep` and `opencode` on PATH
//! (the real gatekeep binary, the fake OpenCode), the fake Discord.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fake_discord::FakeDiscord;
use crate::support::fake_opencode::FakeOpenCode;

const TOKEN: &str = "action-test-token";

/// A runner's directories: `bin` (on PATH first), `temp`, the output file
/// and the step summary.
struct Runner {
    dir: tempfile::TempDir,
}

impl Runner {
    fn new(opencode: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(dir.path().join("temp")).expect("temp");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gatekeep"), bin.join("gatekeep"))
            .expect("gatekeep on PATH");
        std::os::unix::fs::symlink(opencode, bin.join("opencode")).expect("opencode on PATH");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, step: &str, inputs: &[(&str, &str)]) -> tokio::process::Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/action");
        let mut cmd = tokio::process::Command::new(script);
        cmd.arg(step);
        for (key, _) in std::env::vars() {
            if key.starts_with("GATEKEEP_")
                || key.starts_with("GITHUB_")
                || key.starts_with("INPUT_")
            {
                cmd.env_remove(key);
            }
        }
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("RUNNER_TEMP", self.path("temp"))
            .env("GITHUB_OUTPUT", self.path("output"))
            .env("GITHUB_STEP_SUMMARY", self.path("step-summary.md"))
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_JOB", "agent")
            .envs(inputs.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    fn outputs(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.path("output"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn output(&self, key: &str) -> String {
        self.outputs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map_or_else(
                || panic!("no output {key}: {:?}", self.outputs()),
                |(_, v)| v,
            )
    }
}

#[tokio::test]
async fn the_action_runs_the_agent_and_keeps_its_summary_and_audit_log() {
    let oc = FakeOpenCode::start();
    let discord = FakeDiscord::start().await;
    let runner = Runner::new(oc.program());
    let channel = "500".to_owned();
    let args = format!(
        // The fake OpenCode reports host pids: it runs outside the box.
        "--discord-api-url {} --dir {} --no-hub --no-isolate",
        discord.base(),
        oc.workspace().display()
    );
    let mut step = runner
        .command(
            "run",
            &[
                ("INPUT_CHANNEL", &channel),
                (
                    "INPUT_PROMPT",
                    "fix the flaky test; don't `rm -rf` | anything",
                ),
                ("INPUT_ARGS", &args),
                ("DISCORD_TOKEN", TOKEN),
            ],
        )
        .spawn()
        .expect("run step");
    let prompt = oc.wait_for_prompt().await;
    assert!(
        prompt
            .body
            .to_string()
            .contains("don't `rm -rf` | anything"),
        "the prompt arrives as one argument, untouched: {prompt:?}"
    );
    oc.finish_session(&prompt.session_id);
    let status = tokio::time::timeout(Duration::from_secs(30), step.wait())
        .await
        .expect("the step ends")
        .expect("waited");
    assert_eq!(status.code(), Some(0));
    assert_eq!(runner.output("exit-code"), "0");
    let summary = runner.output("summary-json");
    assert!(summary.starts_with(runner.path("temp").to_str().expect("utf-8")));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary kept"))
            .expect("summary json");
    assert_eq!(json["outcome"], "finished");
    assert!(
        Path::new(&runner.output("audit-log")).exists(),
        "audit log kept"
    );
    let report = std::fs::read_to_string(runner.path("step-summary.md")).expect("step summary");
    assert!(report.contains("gatekeep: run finished"), "{report}");
}

#[tokio::test]
async fn the_action_keeps_its_outputs_when_the_run_is_refused() {
    let oc = FakeOpenCode::start();
    let runner = Runner::new(oc.program());
    // No token: gatekeep refuses before starting anything (exit 3).
    let status = runner
        .command(
            "run",
            &[("INPUT_CHANNEL", "123"), ("INPUT_PROMPT", "do it")],
        )
        .env_remove("DISCORD_TOKEN")
        .status()
        .await
        .expect("run step");
    assert_eq!(status.code(), Some(3));
    assert_eq!(runner.output("exit-code"), "3");
    let summary = std::fs::read_to_string(runner.output("summary-json")).expect("summary kept");
    assert!(summary.contains("not_started"), "{summary}");
}

#[tokio::test]
async fn the_install_step_keeps_what_is_already_there() {
    let oc = FakeOpenCode::start();
    let runner = Runner::new(oc.program());
    let out = runner
        .command("install", &[("INPUT_OPENCODE_VERSION", "")])
        .output()
        .await
        .expect("install step");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("already installed"), "{stdout}");
    // A version that is not one is refused before npm is asked.
    let out = runner
        .command("install", &[("INPUT_OPENCODE_VERSION", "latest; rm -rf /")])
        .output()
        .await
        .expect("install step");
    assert_eq!(out.status.code(), Some(2));
}

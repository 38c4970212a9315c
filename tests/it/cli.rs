//! Command-line scenarios: every refusal exits before anything is started.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

/// A stand-in OpenCode that records that it was started. None of these
/// scenarios may get that far.
struct Tripwire {
    dir: tempfile::TempDir,
}

impl Tripwire {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("opencode");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ntouch '{}'\nexit 1\n",
                dir.path().join("started").display()
            ),
        )
        .expect("write script");
        make_executable(&script);
        Self { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("opencode")
    }

    fn was_started(&self) -> bool {
        self.dir.path().join("started").exists()
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path).expect("metadata").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms).expect("chmod");
}

fn gatekeep() -> Command {
    let mut cmd = Command::cargo_bin("gatekeep").expect("binary built");
    cmd.env_remove("GATEKEEP_CHANNEL")
        .env_remove("DISCORD_TOKEN")
        .env_remove("GATEKEEP_TIMEOUT")
        .timeout(std::time::Duration::from_secs(20));
    cmd
}

#[test]
fn flags_that_bypass_approvals_are_refused_with_exit_2() {
    for flag in ["--auto", "--yolo", "--dangerously-skip-permissions"] {
        let oc = Tripwire::new();
        gatekeep()
            .args(["run", "--channel", "1", "--"])
            .arg(oc.program())
            .args(["run", flag, "do it"])
            .env("DISCORD_TOKEN", "x")
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains(flag).and(predicate::str::contains("without approval")),
            );
        assert!(!oc.was_started(), "{flag}: OpenCode must not be started");
    }
}

#[test]
fn flags_that_change_how_the_run_is_driven_are_refused_with_what_to_do_instead() {
    for (flag, hint) in [
        ("--attach", "drop `--attach`"),
        ("--port", "free loopback port"),
        ("--format", "--summary-json"),
        ("-i", "interactive"),
        ("--interactive", "interactive"),
    ] {
        let oc = Tripwire::new();
        gatekeep()
            .args(["run", "--channel", "1", "--"])
            .arg(oc.program())
            .args(["run", flag, "x", "do it"])
            .env("DISCORD_TOKEN", "x")
            .assert()
            .code(2)
            .stderr(predicate::str::contains(flag).and(predicate::str::contains(hint)));
        assert!(!oc.was_started());
    }
}

#[test]
fn an_unknown_flag_is_refused_by_name() {
    let oc = Tripwire::new();
    gatekeep()
        .args(["run", "--channel", "1", "--"])
        .arg(oc.program())
        .args(["run", "--share", "do it"])
        .env("DISCORD_TOKEN", "x")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "unknown `opencode run` flag `--share`",
        ));
    assert!(!oc.was_started());
}

#[test]
fn the_tail_must_be_opencode_run() {
    let oc = Tripwire::new();
    gatekeep()
        .args(["run", "--channel", "1", "--"])
        .arg(oc.program())
        .args(["serve"])
        .env("DISCORD_TOKEN", "x")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("only supervises `opencode run`"));
    assert!(!oc.was_started());
}

#[test]
fn without_a_terminal_or_a_channel_it_refuses_with_exit_3_and_says_how_to_fix_it() {
    let oc = Tripwire::new();
    gatekeep()
        .args(["run", "--"])
        .arg(oc.program())
        .args(["run", "do it"])
        .write_stdin("")
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("--channel").and(predicate::str::contains("DISCORD_TOKEN")),
        );
    assert!(!oc.was_started());
}

#[test]
fn a_channel_without_a_token_exits_3() {
    let oc = Tripwire::new();
    gatekeep()
        .args(["run", "--channel", "123", "--"])
        .arg(oc.program())
        .args(["run", "do it"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("DISCORD_TOKEN"));
    assert!(!oc.was_started());
}

#[test]
fn bad_values_name_the_option_and_exit_2() {
    let oc = Tripwire::new();
    gatekeep()
        .args(["run", "--timeout", "soon", "--"])
        .arg(oc.program())
        .args(["run", "do it"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--timeout").and(predicate::str::contains("10m")));
    gatekeep()
        .args(["run", "--channel", "general", "--"])
        .arg(oc.program())
        .args(["run", "do it"])
        .env("DISCORD_TOKEN", "x")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--channel `general`"));
    gatekeep()
        .args(["run", "--channel", "1", "--"])
        .arg(oc.program())
        .arg("run")
        .env("DISCORD_TOKEN", "x")
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no message"));
    assert!(!oc.was_started());
}

#[test]
fn help_documents_the_exit_codes() {
    gatekeep()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("124").and(predicate::str::contains("GATEKEEP_CHANNEL")));
}

#[test]
fn a_policy_file_with_a_typo_is_refused_with_exit_2_naming_file_line_and_key() {
    for (text, line, key, hint) in [
        (
            "channel = \"1\"\nchanel = \"2\"\n",
            "line 2",
            "chanel",
            "unknown field",
        ),
        (
            "gate = [\"bash\",\n  \"bsah\"]\n",
            "line 2",
            "gate",
            "did you mean `bash`?",
        ),
        ("deny = [\"bash:[x\"]\n", "line 1", "deny", "invalid"),
        ("timeout = 45\n", "line 1", "timeout", "invalid type"),
    ] {
        let oc = Tripwire::new();
        let ws = tempfile::tempdir().expect("workspace");
        std::fs::write(ws.path().join("gatekeep.toml"), text).expect("policy");
        gatekeep()
            .args(["run", "--channel", "1", "--dir"])
            .arg(ws.path())
            .arg("--")
            .arg(oc.program())
            .args(["run", "do it"])
            .env("DISCORD_TOKEN", "x")
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains("gatekeep.toml")
                    .and(predicate::str::contains(line))
                    .and(predicate::str::contains(key))
                    .and(predicate::str::contains(hint)),
            );
        assert!(!oc.was_started(), "{text}: OpenCode must not be started");
    }
}

#[test]
fn a_misspelt_gate_flag_is_refused_with_the_closest_kind() {
    let oc = Tripwire::new();
    gatekeep()
        .args(["run", "--channel", "1", "--gate", "bsah", "--"])
        .arg(oc.program())
        .args(["run", "do it"])
        .env("DISCORD_TOKEN", "x")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `bash`?"));
    assert!(!oc.was_started());
}

#[test]
fn config_names_a_policy_file_that_must_exist() {
    let oc = Tripwire::new();
    gatekeep()
        .args([
            "run",
            "--channel",
            "1",
            "--config",
            "/nonexistent/gatekeep.toml",
            "--",
        ])
        .arg(oc.program())
        .args(["run", "do it"])
        .env("DISCORD_TOKEN", "x")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/gatekeep.toml"));
    assert!(!oc.was_started());
}

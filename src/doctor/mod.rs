//! `gatekeep doctor`: everything an unattended run relies on, checked
//! before you rely on it.
//!
//! 1. The OpenCode binary runs and says its version (bounded).
//! 2. [`permissions`]: which permission kinds the workspace's configuration
//!    makes OpenCode ask for (global and workspace `opencode.json[c]`,
//!    `OPENCODE_CONFIG_CONTENT`, `OPENCODE_PERMISSION`, `--gate`), with a
//!    warning when nothing is gated or the configuration allows everything.
//! 3. [`discord`], with `--channel`: the bot token, the gateway, access to
//!    the channel and the bot's permissions there.
//!
//! Each failure comes with a fix. Exit 0 when ready, 3 otherwise; warnings
//! do not fail. The token is never printed.

mod discord;
mod permissions;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::cli::DoctorArgs;
use crate::exit::Code;
use crate::opencode::compat;
use crate::policy::{self, Policy};

/// Bound on `opencode --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(15);

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// The report, printed as it is built so a hanging check shows where.
#[derive(Debug, Default)]
pub(super) struct Report {
    failures: u32,
    warnings: u32,
}

impl Report {
    fn line(&mut self, status: Status, what: &str, fix: Option<&str>) {
        match status {
            Status::Ok => {}
            Status::Warn => self.warnings += 1,
            Status::Fail => self.failures += 1,
        }
        println!("{status} {what}");
        if let Some(fix) = fix {
            println!("     fix: {fix}");
        }
    }

    pub(super) fn ok(&mut self, what: &str) {
        self.line(Status::Ok, what, None);
    }

    pub(super) fn warn(&mut self, what: &str, fix: &str) {
        self.line(Status::Warn, what, Some(fix));
    }

    pub(super) fn fail(&mut self, what: &str, fix: &str) {
        self.line(Status::Fail, what, Some(fix));
    }
}

/// Run every check; 0 when ready, 3 otherwise.
#[must_use]
pub fn run(args: &DoctorArgs, discord_token: Option<&SecretString>) -> Code {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gatekeep: error: could not start the async runtime: {err}");
            return Code::RunFailed;
        }
    };
    let mut report = Report::default();
    runtime.block_on(check_all(args, discord_token, &mut report));
    if report.failures == 0 {
        println!(
            "ready{}",
            if report.warnings > 0 {
                format!(" ({} warning(s))", report.warnings)
            } else {
                String::new()
            }
        );
        Code::Finished
    } else {
        println!("not ready: {} problem(s) to fix", report.failures);
        Code::ChannelUnavailable
    }
}

async fn check_all(args: &DoctorArgs, discord_token: Option<&SecretString>, report: &mut Report) {
    let program = args
        .opencode
        .first()
        .map_or_else(|| PathBuf::from("opencode"), PathBuf::from);
    check_opencode(&program, report).await;

    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let workspace = cwd.join(args.dir.as_deref().unwrap_or(Path::new(".")));
    // What a run here would use: the flags, then the policy file.
    let (mut channel, mut who, mut gates) =
        (args.channel.clone(), args.who.clone(), args.gates.clone());
    if workspace.is_dir() {
        let config = args.config.as_deref().map(|p| cwd.join(p));
        check_policy(
            config.as_deref(),
            &workspace,
            args,
            (&mut channel, &mut who, &mut gates),
            report,
        );
        permissions::check(&workspace, &gates, report);
        check_surface(&workspace, &program, config.as_deref(), report);
    } else {
        report.fail(
            &format!("workspace {} is not a directory", workspace.display()),
            "pass the repository to work on with --dir <PATH> (or run doctor from it)",
        );
    }

    check_isolation(&workspace, &program, args.no_isolate, report).await;

    match channel.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(channel) => {
            discord::check(channel, &args.api.discord_api_url, discord_token, report).await;
            check_ping(&who, report);
        }
        None => println!(
            "     (no --channel: Discord not checked; approvals would be asked at a terminal)"
        ),
    }
}

/// The run's policy surface (docs/design.md, "The policy surface"): what
/// a run here would refuse for, and the code OpenCode loads besides its own.
fn check_surface(workspace: &Path, program: &Path, explicit: Option<&Path>, report: &mut Report) {
    use crate::surface::{self, Record, Surface};
    let places = crate::sandbox::Places::from_env(workspace, program);
    let policy_path = policy::locate(explicit, workspace);
    let policy_file = policy_path
        .as_deref()
        .and_then(|p| Policy::load(p).ok())
        .map(|p| p.file)
        .unwrap_or_default();
    let surface = Surface::of(
        workspace,
        policy_path.as_deref(),
        &places.outer_config_dirs(),
    );
    let state = places.gatekeep_state();
    if let Some(record) = state.as_deref().and_then(|s| Record::load(s, workspace)) {
        let files: Vec<String> = record
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        report.fail(
            &format!(
                "a run at {} changed the policy surface without an approval: {}",
                record.at,
                files.join(", ")
            ),
            "look at those files (git diff, or OpenCode's config directory); when they are as \
             they should be, run once with --accept-policy-changes, which clears this record",
        );
    }
    let uncommitted = surface::uncommitted(&surface);
    if !uncommitted.is_empty() {
        let files: Vec<String> = uncommitted
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        report.fail(
            &format!(
                "the policy surface has uncommitted changes: {}",
                files.join(", ")
            ),
            "review and commit them (a run refuses them, exit 2), or run with \
             --accept-policy-changes",
        );
    }
    for extension in surface.extensions() {
        if extension.allowed_by(&policy_file) {
            report.ok(&format!(
                "OpenCode loads {}, allowed by the policy file (said at the start of every run)",
                extension.path.display()
            ));
        } else {
            report.fail(
                &format!("{}: {}", extension.path.display(), extension.danger()),
                &format!(
                    "remove it, or allow it by name in gatekeep.toml ({})",
                    extension.policy_key()
                ),
            );
        }
    }
}

/// The policy file a run here would read, and the effective policy with
/// where each value comes from (default, file, env, flag).
fn check_policy(
    explicit: Option<&Path>,
    workspace: &Path,
    args: &DoctorArgs,
    (channel, who, gates): (
        &mut Option<String>,
        &mut crate::cli::WhoArgs,
        &mut Vec<String>,
    ),
    report: &mut Report,
) {
    let Some(path) = policy::locate(explicit, workspace) else {
        println!(
            "     (no {}: the policy is the flags, GATEKEEP_* variables and defaults)",
            policy::FILE_NAME
        );
        return;
    };
    let loaded = match Policy::load(&path) {
        Ok(loaded) => loaded,
        Err(err) => {
            report.fail(
                &err.to_string(),
                "fix the policy file: a run refuses it (exit 2)",
            );
            return;
        }
    };
    report.ok(&format!("policy file {}", path.display()));
    let mut settings = loaded.fill(&args.given, channel, who, gates);
    let duration = |d: Option<Duration>, default: &str| match d {
        Some(d) => (
            humantime::format_duration(d).to_string(),
            policy::Origin::File,
        ),
        None => (default.to_owned(), policy::Origin::Default),
    };
    for (key, (value, origin)) in [
        ("timeout", duration(loaded.timeout, "30m")),
        ("approval_timeout", duration(loaded.approval_timeout, "10m")),
    ] {
        settings.push(policy::Setting { key, value, origin });
    }
    let rules = |texts: Vec<String>| {
        if texts.is_empty() {
            (String::new(), policy::Origin::Default)
        } else {
            (texts.join("; "), policy::Origin::File)
        }
    };
    let (value, origin) = rules(loaded.deny.iter().map(|r| r.text().to_owned()).collect());
    settings.push(policy::Setting {
        key: "deny",
        value,
        origin,
    });
    let (value, origin) = rules(
        loaded
            .require
            .iter()
            .map(|r| format!("{} needs {}", r.text(), r.approvals()))
            .collect(),
    );
    settings.push(policy::Setting {
        key: "require",
        value,
        origin,
    });
    println!("     effective policy (where each value comes from):");
    for s in settings {
        let value = if s.value.is_empty() {
            "(none)"
        } else {
            &s.value
        };
        println!("       {:<16} {value}  [{}]", s.key, s.origin);
    }
}

/// Whom a run with these options would notify for each request.
fn check_ping(who: &crate::cli::WhoArgs, report: &mut Report) {
    match crate::config::Ping::of(who) {
        Ok(ping) if ping.is_empty() => report.warn(
            "a run would ping nobody: a request waits unseen until someone looks at the channel",
            "set --mention USER_ID or --mention role:ROLE_ID (or --approver / --approver-role)",
        ),
        Ok(ping) => report.ok(&format!(
            "each request pings {ping}, who also join the run's thread"
        )),
        Err(err) => report.fail(&err.to_string(), "use numeric Discord ids"),
    }
}

/// What keeps the agent from answering its own requests here, and whether
/// the agent's box can be set up (docs/design.md, "The agent's box").
async fn check_isolation(workspace: &Path, program: &Path, off: bool, report: &mut Report) {
    let hardening = crate::platform::harden();
    if hardening.secrets_unreadable && hardening.keeps_daemons_below {
        report.ok("the agent's commands cannot read gatekeep's environment or memory, nor escape below it");
    } else {
        println!(
            "     this platform cannot hide gatekeep's environment from the agent's commands \
             (an approval they send is still detected and stops the run)"
        );
    }
    if off {
        report.warn(
            crate::config::Isolation::Off.caveat().unwrap_or_default(),
            "unprotected then: `gatekeep approve`/`deny` from any of the user's daemons (tmux, \
             screen, at, cron, systemd user units), keystrokes into the terminal gatekeep \
             prompts on, and writes to OpenCode's global config and your shell's files; drop \
             --no-isolate to protect them",
        );
        return;
    }
    let sandbox = match crate::platform::sandbox() {
        Ok(sandbox) => sandbox,
        Err(why) => {
            report.fail(
                &format!("the agent's box cannot be set up: {why}"),
                "install bubblewrap, or run with --no-isolate (see above what it leaves open)",
            );
            return;
        }
    };
    // User namespaces may be switched off (sysctl, AppArmor): try the very
    // box a run here would use.
    let layout = crate::sandbox::Layout::of(&crate::sandbox::Places::from_env(workspace, program));
    let mut trial = tokio::process::Command::new(&sandbox);
    trial
        .args(layout.args())
        .args(["--", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let failed = match tokio::time::timeout(VERSION_TIMEOUT, trial.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            report.ok(&format!(
                "the agent's box works here ({}): the agent cannot reach your tmux, screen, at, \
                 D-Bus, terminal or gatekeep's socket, nor write outside the workspace, caches \
                 and OpenCode's data",
                sandbox.display()
            ));
            return;
        }
        Ok(Ok(out)) => crate::redact::terminal_safe(String::from_utf8_lossy(&out.stderr).trim()),
        Ok(Err(err)) => err.to_string(),
        Err(_) => "bwrap did not answer".to_owned(),
    };
    report.fail(
        &format!("the agent's box cannot be set up here: {failed}"),
        crate::sandbox::NO_BOX_FIX,
    );
}

async fn check_opencode(program: &Path, report: &mut Report) {
    let mut command = tokio::process::Command::new(program);
    command
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = program.display();
    let install = "install OpenCode (`npm i -g opencode-ai`) or give its path: gatekeep doctor -- /path/to/opencode";
    match tokio::time::timeout(VERSION_TIMEOUT, command.output()).await {
        Err(_) => report.fail(
            &format!(
                "`{shown} --version` did not answer within {}s",
                VERSION_TIMEOUT.as_secs()
            ),
            "check that this is the OpenCode executable and that it starts on its own",
        ),
        Ok(Err(err)) => report.fail(&format!("cannot run OpenCode `{shown}`: {err}"), install),
        Ok(Ok(out)) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            report.fail(
                &format!(
                    "`{shown} --version` failed ({}): {}",
                    out.status,
                    crate::records::summary::shorten(&crate::redact::terminal_safe(&stderr), 200)
                ),
                install,
            );
        }
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let version = crate::redact::terminal_safe(text.trim())
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let upgrade = "npm install -g opencode-ai@latest (or give another OpenCode after --)";
            match compat::judge(Some(&version), None) {
                Ok(compat::Support::Tested(_)) => {
                    report.ok(&format!(
                        "OpenCode {version} ({shown}), supported: {}",
                        compat::range()
                    ));
                }
                Ok(compat::Support::Newer(_)) => report.warn(
                    &format!(
                        "OpenCode {version} ({shown}) is newer than any release gatekeep was \
                         tested with ({}); runs go on while it serves the routes gatekeep drives",
                        compat::NEWEST_TESTED
                    ),
                    &format!(
                        "if approvals misbehave, try `npm i -g opencode-ai@{}`",
                        compat::NEWEST_TESTED
                    ),
                ),
                Ok(compat::Support::Unknown) => report.warn(
                    &format!(
                        "OpenCode `{version}` ({shown}): not a release number gatekeep can check"
                    ),
                    &format!("gatekeep supports {}", compat::range()),
                ),
                Err(err) => report.fail(&err.to_string(), upgrade),
            }
        }
    }
}

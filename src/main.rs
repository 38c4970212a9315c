//! The `gatekeep` binary: parse the command line, run, exit with a
//! documented code. Everything else lives in the library.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::CommandFactory;
use gatekeep::cli::{AuditCommand, Cli, Command, RunArgs};
use gatekeep::config::{ApprovalChannel, RunConfig, Surroundings, Verbosity};
use gatekeep::exit::Code;
use gatekeep::records::{audit, summary};
use gatekeep::run;
use gatekeep::signals::Signals;
use gatekeep::transport::local;
use secrecy::SecretString;

fn main() -> ExitCode {
    // Before any secret is read: the agent's tools run as this user and
    // must not read gatekeep's environment or memory (docs/design.md).
    let _ = gatekeep::platform::harden();
    let discord_token = gatekeep::platform::take_env_secret("DISCORD_TOKEN");
    let cli = match Cli::parse_words(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                exit(Code::Usage)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "gatekeep",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Run(args) => exit(run(args, discord_token)),
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => verify_audit(&file),
        Command::Hub(args) => exit(gatekeep::hub::run(&args, discord_token)),
        Command::Doctor(args) => exit(gatekeep::doctor::run(&args, discord_token.as_ref())),
        Command::Pending { run } => control_client(run.id, &local::ClientRequest::Pending),
        Command::Approve { number, run } => control_client(
            run.id,
            &local::ClientRequest::Decide {
                number,
                approve: true,
                reason: None,
            },
        ),
        Command::Deny {
            number,
            reason,
            run,
        } => control_client(
            run.id,
            &local::ClientRequest::Decide {
                number,
                approve: false,
                reason,
            },
        ),
    }
}

/// `gatekeep pending|approve|deny`: 0 done, 1 the decision did not win,
/// 3 no (such) live run.
fn control_client(run: Option<String>, request: &local::ClientRequest) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("gatekeep: error: could not start the async runtime");
        return ExitCode::from(1);
    };
    runtime.block_on(async {
        let dir = local::state_dir();
        // `pending` without --run lists every live run; a decision needs
        // exactly one.
        let runs = match (request, run) {
            (local::ClientRequest::Pending, None) => local::live_runs(&dir).await,
            (_, run) => match local::pick_run(&dir, run.as_deref()).await {
                Ok(run) => vec![run],
                Err(err) => {
                    eprintln!("gatekeep: error: {err}");
                    return exit(Code::ChannelUnavailable);
                }
            },
        };
        if runs.is_empty() {
            eprintln!("gatekeep: error: {}", local::ControlError::NoRun(dir));
            return exit(Code::ChannelUnavailable);
        }
        let mut code = ExitCode::SUCCESS;
        for run in runs {
            let answered = control_answer(&run, local::ask(&dir, &run, request).await);
            if answered != ExitCode::SUCCESS {
                code = answered;
            }
        }
        code
    })
}

/// Print one run's answer; its exit code.
fn control_answer(
    run: &str,
    answer: Result<local::ClientResponse, local::ControlError>,
) -> ExitCode {
    {
        match answer {
            Ok(local::ClientResponse::Pending { pending }) => {
                if pending.is_empty() {
                    println!("run {run}: nothing is waiting for an answer");
                }
                for p in pending {
                    let agent = p
                        .agent
                        .map(|a| format!(" (subagent: {a})"))
                        .unwrap_or_default();
                    let subject = gatekeep::redact::terminal_safe_bounded(&p.subject, 500);
                    let kind = gatekeep::redact::terminal_safe_bounded(&p.kind, 64);
                    println!(
                        "run {run} #{}: {kind}{agent}: {subject} ({}s left)",
                        p.number, p.time_left
                    );
                }
                ExitCode::SUCCESS
            }
            Ok(local::ClientResponse::Accepted { settlement }) => {
                println!("run {run}: {settlement}");
                ExitCode::SUCCESS
            }
            Ok(local::ClientResponse::Refused { why }) => {
                eprintln!("gatekeep: run {run}: {why}");
                ExitCode::from(1)
            }
            Ok(local::ClientResponse::Error { message }) => {
                eprintln!("gatekeep: error: run {run}: {message}");
                ExitCode::from(1)
            }
            Err(err) => {
                eprintln!("gatekeep: error: {err}");
                ExitCode::from(1)
            }
        }
    }
}

/// `gatekeep audit verify`: 0 intact, 1 broken, 2 unreadable.
fn verify_audit(file: &std::path::Path) -> ExitCode {
    match audit::verify(file) {
        Ok(audit::Verdict::Intact { lines, last }) => {
            println!(
                "{}: intact, {lines} lines; last line's SHA-256 {last}",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Ok(audit::Verdict::Broken { line, why }) => {
            println!("{}: BROKEN at line {line}: {why}", file.display());
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("gatekeep: error: {err}");
            exit(Code::Usage)
        }
    }
}

/// One run, and its summary (`--summary-json`) whatever happened. The
/// summary never changes the exit code: it is written after the run's safety
/// was settled.
fn run(args: RunArgs, discord_token: Option<SecretString>) -> Code {
    let started = SystemTime::now();
    let summary_path = args.summary_json.clone();
    // `--summary-md` is written; a GitHub step summary is appended to.
    let markdown = args.summary_md.clone().map(|p| (p, false)).or_else(|| {
        std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|v| !v.is_empty())
            .map(|p| (PathBuf::from(p), true))
    });
    let mut context = summary::Context::default();
    let ended = supervise(args, discord_token, &mut context);
    let code = match &ended {
        Ended::Run(outcome) => outcome.code,
        Ended::NotStarted { code, .. } => *code,
        Ended::Crashed { .. } => Code::RunFailed,
    };
    if summary_path.is_some() || markdown.is_some() {
        let ending = match &ended {
            Ended::Run(o) => summary::Ending::Run {
                code: o.code,
                reason: o.reason,
                detail: o.detail.as_deref(),
                ledger: &o.ledger,
                usage: &o.usage,
                redactor: &o.redactor,
            },
            Ended::NotStarted { code, detail } => summary::Ending::NotStarted {
                code: *code,
                detail,
            },
            Ended::Crashed { detail } => summary::Ending::Crashed { detail },
        };
        let report = summary::RunSummary::new(&ending, &context, started, SystemTime::now());
        let written = summary_path.map(|path| report.write(&path));
        let appended = markdown.map(|(path, append)| report.write_markdown(&path, append));
        for err in [written, appended]
            .into_iter()
            .flatten()
            .filter_map(Result::err)
        {
            eprintln!("gatekeep: error: {err}");
        }
    }
    code
}

/// How far a run got.
enum Ended {
    /// The supervisor ran.
    Run(Box<run::Outcome>),
    /// gatekeep stopped before the supervisor ran; the error was printed.
    NotStarted { code: Code, detail: String },
    /// The supervisor panicked (a bug); exit 1.
    Crashed { detail: String },
}

fn not_started(code: Code, detail: String) -> Ended {
    eprintln!("gatekeep: error: {detail}");
    Ended::NotStarted { code, detail }
}

fn supervise(
    args: RunArgs,
    discord_token: Option<SecretString>,
    context: &mut summary::Context,
) -> Ended {
    let surroundings = Surroundings {
        cwd: std::env::current_dir().unwrap_or_else(|_| ".".into()),
        discord_token,
        stdin_is_terminal: std::io::stdin().is_terminal(),
        stderr_is_terminal: std::io::stderr().is_terminal(),
    };
    let config = match RunConfig::from_args(args, &surroundings) {
        Ok(config) => config,
        Err(err) => {
            let code = if err.is_channel_unavailable() {
                Code::ChannelUnavailable
            } else {
                Code::Usage
            };
            return not_started(code, err.to_string());
        }
    };
    context.workspace = Some(config.workspace.clone());
    context.policy_file.clone_from(&config.policy_file);
    context.policy_uncommitted = config.policy_uncommitted;
    context.caveats = config.caveats();
    context.model = config.spec.model.as_ref().map(ToString::to_string);
    context.channel = Some(match config.approval {
        ApprovalChannel::Terminal => "terminal",
        ApprovalChannel::Discord(_) => "discord",
    });
    // A log that cannot be written fails the run before anything starts:
    // decisions must not go unrecorded.
    if let Some(path) = &config.audit_log {
        if let Err(err) = gatekeep::records::audit::check_writable(path) {
            return not_started(Code::Usage, err.to_string());
        }
    }

    // Like `opencode run`: stdin that is not a terminal is part of the message.
    let mut message = config.spec.message.clone();
    if !surroundings.stdin_is_terminal {
        let mut piped = String::new();
        if let Err(err) = std::io::stdin().read_to_string(&mut piped) {
            return not_started(
                Code::Usage,
                format!("could not read the message from stdin: {err}"),
            );
        }
        let piped = piped.trim_end();
        if !piped.is_empty() {
            if !message.is_empty() {
                message.push('\n');
            }
            message.push_str(piped);
        }
    }
    if message.trim().is_empty() && config.spec.command.is_none() {
        return not_started(
            Code::Usage,
            "no message for the agent: add it after `opencode run` or pipe it on stdin".to_owned(),
        );
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            return not_started(
                Code::RunFailed,
                format!("could not start the async runtime: {err}"),
            );
        }
    };
    let quiet = config.verbosity == Verbosity::Quiet;
    // A panic is a bug, but the summary is still owed: OpenCode dies with
    // gatekeep (its process group and parent-death signal), and the run is
    // reported as an internal error.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            // Installed before anything starts, so no signal is lost.
            let signals = Signals::install()
                .map_err(|err| format!("could not install signal handlers: {err}"))?;
            Ok::<_, String>(run::run(config, message, signals).await)
        })
    }));
    // The stdin reader thread may be blocked in a read that cannot be
    // cancelled; do not wait for it.
    runtime.shutdown_background();
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(detail)) => return not_started(Code::RunFailed, detail),
        Err(_) => {
            let detail = "gatekeep stopped on an internal error (this is a bug)".to_owned();
            eprintln!("gatekeep: error: {detail}");
            return Ended::Crashed { detail };
        }
    };
    eprintln!(
        "gatekeep: run {} after {} — {} approved, {} denied (exit {})",
        run::describe(&outcome),
        humantime::format_duration(std::time::Duration::from_secs(outcome.duration.as_secs())),
        outcome.ledger.approved(),
        outcome.ledger.denied(),
        outcome.code.as_i32()
    );
    if !quiet {
        eprint!(
            "{}",
            summary::human_requests(&outcome.ledger, &outcome.redactor)
        );
    }
    Ended::Run(Box::new(outcome))
}

fn exit(code: Code) -> ExitCode {
    ExitCode::from(code as u8)
}

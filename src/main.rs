//! The `gatekeep` binary: parse the command line, run, exit with a
//! documented code. Everything else lives in the library.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use gatekeep::cli::{Cli, Command, RunArgs};
use gatekeep::config::{RunConfig, Surroundings};
use gatekeep::exit::Code;
use gatekeep::signals::Signals;
use gatekeep::supervisor;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
            clap_complete::generate(shell, &mut Cli::command(), "gatekeep", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Run(args) => exit(run(args)),
    }
}

fn run(args: RunArgs) -> Code {
    let surroundings = Surroundings {
        cwd: std::env::current_dir().unwrap_or_else(|_| ".".into()),
        discord_token: std::env::var("DISCORD_TOKEN").ok(),
        stdin_is_terminal: std::io::stdin().is_terminal(),
        stderr_is_terminal: std::io::stderr().is_terminal(),
    };
    let config = match RunConfig::from_args(args, &surroundings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gatekeep: error: {err}");
            return if err.is_channel_unavailable() {
                Code::ChannelUnavailable
            } else {
                Code::Usage
            };
        }
    };

    // Like `opencode run`: stdin that is not a terminal is part of the message.
    let mut message = config.spec.message.clone();
    if !surroundings.stdin_is_terminal {
        let mut piped = String::new();
        if let Err(err) = std::io::stdin().read_to_string(&mut piped) {
            eprintln!("gatekeep: error: could not read the message from stdin: {err}");
            return Code::Usage;
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
        eprintln!("gatekeep: error: no message for the agent: add it after `opencode run` or pipe it on stdin");
        return Code::Usage;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gatekeep: error: could not start the async runtime: {err}");
            return Code::RunFailed;
        }
    };
    let outcome = runtime.block_on(async {
        // Installed before anything starts, so no signal is lost.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(err) => {
                eprintln!("gatekeep: error: could not install signal handlers: {err}");
                return None;
            }
        };
        Some(supervisor::run(config, message, signals).await)
    });
    let Some(outcome) = outcome else {
        return Code::RunFailed;
    };
    eprintln!(
        "gatekeep: run {} after {} — {} approved, {} denied (exit {})",
        supervisor::describe(&outcome),
        humantime::format_duration(std::time::Duration::from_secs(outcome.duration.as_secs())),
        outcome.ledger.approved(),
        outcome.ledger.denied(),
        outcome.code.as_i32()
    );
    // The stdin reader thread may be blocked in a read that cannot be
    // cancelled; do not wait for it.
    runtime.shutdown_background();
    outcome.code
}

fn exit(code: Code) -> ExitCode {
    ExitCode::from(code as u8)
}

//! The raw command line, as clap reads it. Validation into a usable
//! configuration happens in [`crate::config`], so this stays declarative.

use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;
use std::fmt;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::HELP_TABLE;

#[derive(Debug, Parser)]
#[command(
    name = "gatekeep",
    version,
    about = "Supervise an unattended OpenCode run: every gated tool call needs a human's yes; everything else is denied.",
    after_help = HELP_TABLE,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one OpenCode agent under supervision.
    ///
    /// gatekeep starts its own `opencode serve`, performs the run described
    /// after `--` through OpenCode's API, sends every permission request to
    /// the approval channel (Discord with --channel, else this terminal) and
    /// denies whatever is pending when the run ends, however it ends.
    #[command(
        after_help = HELP_TABLE,
        override_usage = "gatekeep run [OPTIONS] -- <OPENCODE> run [OPENCODE-RUN-FLAGS] <MESSAGE>..."
    )]
    Run(RunArgs),
    /// Check that OpenCode, the workspace's permission config and Discord
    /// are ready for an unattended run.
    ///
    /// Exits 0 when everything needed is in place, 3 otherwise, with a fix
    /// printed for each failure.
    #[command(override_usage = "gatekeep doctor [OPTIONS] [-- <OPENCODE>]")]
    Doctor(DoctorArgs),
    /// Keep one Discord gateway session for every run on this host.
    ///
    /// Runs started while a hub of the same bot listens use it instead of
    /// starting a session each (Discord allows about 1,000 a day). Needs
    /// `DISCORD_TOKEN`; prints a line with `ready` once connected; stops on
    /// Ctrl-C or SIGTERM. Exits 3 when no session can be had.
    Hub(HubArgs),
    /// List the pending requests of a live run, from another terminal.
    Pending {
        #[command(flatten)]
        run: RunSelector,
    },
    /// Approve pending request N of a live run, from another terminal.
    Approve {
        /// The request's number, as `gatekeep pending` shows it.
        number: u32,
        #[command(flatten)]
        run: RunSelector,
    },
    /// Deny pending request N of a live run, from another terminal.
    Deny {
        /// The request's number, as `gatekeep pending` shows it.
        number: u32,
        /// Feedback the model receives with the denial.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        run: RunSelector,
    },
    /// Work with an audit log written by `gatekeep run --audit-log`.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell to generate for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Parse `words` (the program name first), and note which settings the
    /// command line or the environment gave: the rest may come from
    /// `gatekeep.toml` (see [`crate::policy`]).
    pub fn parse_words<I, T>(words: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(words)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        match (&mut cli.command, matches.subcommand()) {
            (Command::Run(args), Some((_, m))) => args.given = Given::of(m),
            (Command::Doctor(args), Some((_, m))) => args.given = Given::of(m),
            _ => {}
        }
        Ok(cli)
    }
}

/// Where each setting that `gatekeep.toml` may also hold was given: on the
/// command line, in a `GATEKEEP_*` variable, or not at all (its default).
/// Keyed by clap's argument id (the field name).
#[derive(Debug, Clone, Default)]
pub struct Given(HashMap<&'static str, Origin>);

impl Given {
    /// The arguments a policy file can also set.
    const IDS: [&'static str; 8] = [
        "channel",
        "approvers",
        "approver_roles",
        "mention",
        "timeout",
        "approval_timeout",
        "gates",
        "deny",
    ];

    fn of(matches: &ArgMatches) -> Self {
        let mut given = HashMap::new();
        for id in Self::IDS {
            let origin = match matches
                .try_contains_id(id)
                .ok()
                .and_then(|_| matches.value_source(id))
            {
                Some(ValueSource::CommandLine) => Origin::Flag,
                Some(ValueSource::EnvVariable) => Origin::Env,
                _ => Origin::Default,
            };
            given.insert(id, origin);
        }
        Self(given)
    }

    /// Where `id` came from (`Default` when nobody gave it).
    #[must_use]
    pub fn origin(&self, id: &str) -> Origin {
        self.0.get(id).copied().unwrap_or(Origin::Default)
    }

    /// Whether the command line or the environment gave `id`.
    #[must_use]
    pub fn has(&self, id: &str) -> bool {
        self.origin(id) != Origin::Default
    }
}

/// Which live run `pending`, `approve` and `deny` talk to.
#[derive(Debug, Args)]
pub struct RunSelector {
    /// The run's id (needed when several runs are live).
    #[arg(long = "run", value_name = "ID")]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain; say where it breaks.
    ///
    /// Exits 0 when every line is intact, 1 when a line was changed,
    /// removed or inserted, 2 when the file cannot be read.
    Verify {
        /// The audit log (JSON lines).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Where Discord is (run, doctor and hub).
#[derive(Debug, Args)]
pub struct DiscordApiArgs {
    /// Discord API base URL (for testing against a local fake).
    #[arg(
        long,
        env = "GATEKEEP_DISCORD_API_URL",
        value_name = "URL",
        default_value = "https://discord.com",
        hide_default_value = true
    )]
    pub discord_api_url: String,
}

/// How a Discord gateway session is started (by a run or the hub).
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Discord session starts never spent: below this many left for the
    /// day, no session is started (Discord resets the bot's token when
    /// none are left).
    #[arg(
        long,
        env = "GATEKEEP_IDENTIFY_RESERVE",
        value_name = "N",
        default_value_t = 50
    )]
    pub identify_reserve: u32,

    /// How long connecting to Discord may take, waiting for this host's
    /// turn to start a session included.
    #[arg(long, env = "GATEKEEP_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// `gatekeep hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    #[command(flatten)]
    pub api: DiscordApiArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Print more about what the hub is doing.
    #[arg(short, long, env = "GATEKEEP_VERBOSE", action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Discord channel id to check (needs `DISCORD_TOKEN`).
    #[arg(long, env = "GATEKEEP_CHANNEL", value_name = "ID")]
    pub channel: Option<String>,

    /// Workspace directory whose OpenCode config is checked (default: the current directory).
    #[arg(long, env = "GATEKEEP_DIR", value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Permission kind the run will force to `ask` with --gate (repeatable).
    #[arg(
        long = "gate",
        env = "GATEKEEP_GATE",
        value_name = "PERMISSION",
        value_delimiter = ','
    )]
    pub gates: Vec<String>,

    #[command(flatten)]
    pub api: DiscordApiArgs,

    #[command(flatten)]
    pub who: WhoArgs,

    /// The policy file (default: gatekeep.toml at the workspace root, if any).
    #[arg(long, env = "GATEKEEP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check a run with --no-isolate: say what is then unprotected.
    #[arg(long)]
    pub no_isolate: bool,

    /// The OpenCode executable to check (default: `opencode` on PATH).
    #[arg(last = true, value_name = "OPENCODE")]
    pub opencode: Vec<String>,

    #[arg(skip)]
    pub given: Given,
}

/// Who may decide, and whom each request pings (run and doctor).
// Doc comments here are `--help` text, where backticks would show.
#[allow(clippy::doc_markdown)]
#[derive(Debug, Clone, Args, Default)]
pub struct WhoArgs {
    /// Discord user id allowed to decide (repeatable).
    #[arg(
        long = "approver",
        env = "GATEKEEP_APPROVERS",
        value_name = "USER_ID",
        value_delimiter = ','
    )]
    pub approvers: Vec<String>,

    /// Discord role id whose members may decide (repeatable).
    #[arg(
        long = "approver-role",
        env = "GATEKEEP_APPROVER_ROLES",
        value_name = "ROLE_ID",
        value_delimiter = ','
    )]
    pub approver_roles: Vec<String>,

    /// Whom to ping for each request, when that differs from who may
    /// approve (repeatable): a user id, or role:ROLE_ID. Default: the
    /// approvers and approver roles.
    #[arg(
        long = "mention",
        env = "GATEKEEP_MENTION",
        value_name = "USER_ID|role:ROLE_ID",
        value_delimiter = ','
    )]
    pub mention: Vec<String>,

    /// Ping nobody.
    #[arg(long, env = "GATEKEEP_NO_MENTION", conflicts_with = "mention")]
    pub no_mention: bool,
}

// Doc comments here are `--help` text, where backticks would show. The
// flags are clap's: one bool per switch is what the command line is.
#[allow(clippy::doc_markdown, clippy::struct_excessive_bools)]
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The policy file: channel, approvers, timeouts, gates, deny and
    /// two-person rules kept in the repository (default: gatekeep.toml at
    /// the workspace root, if any). Flags and GATEKEEP_* variables override it.
    #[arg(long, env = "GATEKEEP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Discord channel id for approvals (needs DISCORD_TOKEN).
    #[arg(long, env = "GATEKEEP_CHANNEL", value_name = "ID")]
    pub channel: Option<String>,

    #[command(flatten)]
    pub who: WhoArgs,

    /// Time limit for the whole run, e.g. 90s, 10m, 1h30m.
    #[arg(long, env = "GATEKEEP_TIMEOUT", value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Time limit for each approval request; unanswered requests are denied.
    #[arg(long, env = "GATEKEEP_APPROVAL_TIMEOUT", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub approval_timeout: Duration,

    /// Workspace directory (default: the current directory).
    #[arg(long, env = "GATEKEEP_DIR", value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Permission kind forced to `ask` for this run, e.g. bash, edit, webfetch (repeatable).
    #[arg(
        long = "gate",
        env = "GATEKEEP_GATE",
        value_name = "PERMISSION",
        value_delimiter = ','
    )]
    pub gates: Vec<String>,

    /// Deny requests matching KIND:GLOB at once, without asking anyone, e.g.
    /// `bash:rm -rf *` (repeatable; `*` as KIND matches every kind). Wins over
    /// any approval rule.
    #[arg(long = "deny", env = "GATEKEEP_DENY", value_name = "KIND:GLOB")]
    pub deny: Vec<String>,

    /// Dismiss the agent's questions (its `question` tool) at once instead
    /// of relaying them to the approval channel.
    #[arg(long, env = "GATEKEEP_NO_QUESTIONS")]
    pub no_questions: bool,

    /// The default, kept for old command lines: OpenCode and the agent's
    /// tools run in a box (bubblewrap, Linux) where they reach nothing that
    /// approves, persists or escapes (README, "The agent's box").
    #[arg(
        long,
        env = "GATEKEEP_ISOLATE",
        hide = true,
        conflicts_with = "no_isolate"
    )]
    pub isolate: bool,

    /// Run OpenCode outside the agent's box. The terminal prompt and
    /// `gatekeep approve` are then not protected from a hostile agent
    /// (Discord approvals still are); announced in the run-start message,
    /// the summary and `doctor`. A flag only, never a variable or a policy
    /// key, so nothing the agent can write turns the box off.
    #[arg(long)]
    pub no_isolate: bool,

    /// Run although the policy surface (gatekeep.toml, opencode.json[c],
    /// .opencode/, OpenCode's global config) has uncommitted changes, or a
    /// run before changed it without an approval: your word that you looked.
    /// Clears that record; announced in the run-start message and summary.
    #[arg(long)]
    pub accept_policy_changes: bool,

    /// Share PATH read-write with the agent's box, besides the workspace,
    /// OpenCode's own directories and the usual caches (repeatable).
    #[arg(long = "share", value_name = "PATH")]
    pub share: Vec<PathBuf>,

    /// Remind the pinged people of a waiting request after this long
    /// (default: at half of its deadline, when that is at least 2 minutes).
    #[arg(long, env = "GATEKEEP_REMIND", value_name = "DURATION", value_parser = parse_duration)]
    pub remind: Option<Duration>,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Never use this host's `gatekeep hub`: open a gateway session of the
    /// run's own.
    #[arg(long, env = "GATEKEEP_NO_HUB")]
    pub no_hub: bool,

    /// Do not ring the terminal bell when a request starts waiting.
    #[arg(long, env = "GATEKEEP_NO_BELL")]
    pub no_bell: bool,

    #[command(flatten)]
    pub api: DiscordApiArgs,

    /// Print only the agent's text and errors.
    #[arg(short, long, env = "GATEKEEP_QUIET", conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more about what gatekeep is doing (repeat for more).
    #[arg(short, long, env = "GATEKEEP_VERBOSE", action = ArgAction::Count)]
    pub verbose: u8,

    /// Write a JSON summary of the run to FILE when it ends, however it ends
    /// (written atomically; relative to the current directory).
    #[arg(long, env = "GATEKEEP_SUMMARY_JSON", value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    /// Append one hash-chained JSON line per decision, refused click and
    /// automatic denial to FILE; check it with `gatekeep audit verify FILE`.
    #[arg(long, env = "GATEKEEP_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,

    /// Write a Markdown report of the run to FILE when it ends (default:
    /// appended to $GITHUB_STEP_SUMMARY when that is set).
    #[arg(long, env = "GATEKEEP_SUMMARY_MD", value_name = "FILE")]
    pub summary_md: Option<PathBuf>,

    /// The run to supervise: `<OPENCODE> run [FLAGS] <MESSAGE>...`
    #[arg(last = true, required = true, value_name = "OPENCODE RUN ...")]
    pub opencode: Vec<String>,

    #[arg(skip)]
    pub given: Given,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; use a duration such as 90s, 10m or 1h30m"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}

/// Where a setting's value came from (`gatekeep doctor` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    Env,
    Flag,
    /// A list from the file and the command line together.
    Both,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Default => "default",
            Origin::File => "file",
            Origin::Env => "env",
            Origin::Flag => "flag",
            Origin::Both => "file + flag or env",
        })
    }
}

//! The validated configuration of one run: everything in it has been checked,
//! so the supervisor never has to second-guess a value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::approval::rules::{DenyRule, DenyRuleError, RequireRule};
use crate::cli::{RunArgs, WhoArgs};
use crate::policy::{self, Policy, PolicyError};
use crate::sandbox::Places;
use crate::surface::{self, Extension, ExtensionKind, Record, Surface};
use crate::tail::{self, RunSpec, TailError};

/// Where approval requests go.
#[derive(Debug)]
pub enum ApprovalChannel {
    /// This terminal: stdin and stderr are both terminals.
    Terminal,
    Discord(DiscordConfig),
}

/// How to reach Discord and who may answer: the one set of Discord
/// settings, validated here and read by `transport::discord::connect`.
#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// Bot token (`DISCORD_TOKEN`). Exposed only to build the
    /// `Authorization` header and the gateway's IDENTIFY.
    pub token: SecretString,
    /// Scheme and host of the API, `https://discord.com` unless overridden
    /// (`--discord-api-url`, for tests). REST goes to `{api_base}/api/v10`.
    pub api_base: String,
    pub channel_id: u64,
    pub approvers: Vec<u64>,
    pub approver_roles: Vec<u64>,
    /// Whom each waiting request pings.
    pub ping: Ping,
    /// `--remind`: when to ping again (default: half the request's deadline).
    pub remind: Option<std::time::Duration>,
    /// `--identify-reserve`.
    pub identify_reserve: u32,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// Not `--no-hub`.
    pub use_hub: bool,
}

/// The people a waiting request notifies in Discord: exactly these, never
/// anyone named by the agent's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ping {
    pub users: Vec<u64>,
    pub roles: Vec<u64>,
}

impl Ping {
    /// `--mention` when given (`--no-mention`: nobody), else the approvers.
    pub fn of(who: &WhoArgs) -> Result<Self, ConfigError> {
        if who.no_mention {
            return Ok(Self::default());
        }
        if who.mention.is_empty() {
            return Ok(Self {
                users: ids("--approver", &who.approvers)?,
                roles: ids("--approver-role", &who.approver_roles)?,
            });
        }
        let mut ping = Self::default();
        for m in &who.mention {
            match m.trim().strip_prefix("role:") {
                Some(role) => ping.roles.push(id("--mention", role)?),
                None => ping.users.push(id("--mention", m)?),
            }
        }
        ping.users.dedup();
        ping.roles.dedup();
        Ok(ping)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.roles.is_empty()
    }
}

impl std::fmt::Display for Ping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("nobody");
        }
        let users = self.users.iter().map(|u| format!("user {u}"));
        let roles = self.roles.iter().map(|r| format!("role {r}"));
        f.write_str(&users.chain(roles).collect::<Vec<_>>().join(", "))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug)]
pub struct RunConfig {
    pub spec: RunSpec,
    /// Absolute, canonical workspace directory: sent as `directory` on every
    /// OpenCode call (a call without it silently goes to another instance).
    pub workspace: PathBuf,
    pub timeout: Duration,
    pub approval_timeout: Duration,
    /// Permission kinds forced to `ask`.
    pub gates: Vec<String>,
    /// `--deny` rules: matching requests are denied without asking.
    pub deny: Vec<DenyRule>,
    /// `--no-questions`: dismiss the agent's questions instead of relaying.
    pub no_questions: bool,
    /// Ring the terminal bell when a request starts waiting (`--no-bell`).
    pub bell: bool,
    /// Whether OpenCode runs in the agent's box (the default) or not.
    pub isolation: Isolation,
    pub approval: ApprovalChannel,
    pub verbosity: Verbosity,
    /// `--summary-json`: where the run summary goes.
    pub summary_json: Option<PathBuf>,
    /// `--audit-log`: the hash-chained decision log.
    pub audit_log: Option<PathBuf>,
    /// The policy file in use, if any.
    pub policy_file: Option<PathBuf>,
    /// It has changes git has not committed: not the reviewed rules.
    pub policy_uncommitted: bool,
    /// `[[require]]` rules: requests that need several approvers.
    pub require: Vec<RequireRule>,
    /// Files whose edit would change the rules of this run or the next
    /// (the policy file, the workspace's OpenCode config): always asked of
    /// humans (docs/design.md, "Policy as code").
    pub protected: Vec<PathBuf>,
    /// Everything that decides what the agent may do: watched during the
    /// run (docs/design.md, "The policy surface").
    pub surface: Surface,
    /// Custom tools and plugins OpenCode will load: said at start.
    pub extensions: Vec<Extension>,
    /// `--accept-policy-changes`: the changes a human said they looked at.
    pub accepted_changes: Vec<PathBuf>,
    /// gatekeep's lasting state (`$XDG_STATE_HOME/gatekeep`): where a run
    /// records a change of the policy surface for the next one.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Tail(#[from] TailError),
    #[error(transparent)]
    Deny(#[from] DenyRuleError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("invalid {option}: {message}")]
    UnknownKind {
        option: &'static str,
        message: String,
    },
    #[error(
        "invalid {option} `{value}`: expected a Discord id (a number such as 123456789012345678)"
    )]
    BadId { option: &'static str, value: String },
    #[error("invalid --gate `{0}`: expected a permission kind such as bash, edit, webfetch or external_directory")]
    BadGate(String),
    #[error(
        "workspace `{path}` is not a directory ({detail}): pass the repository to work on \
         with --dir <PATH> (or GATEKEEP_DIR), or run gatekeep from inside it"
    )]
    BadWorkspace { path: PathBuf, detail: String },
    #[error(
        "{0}; nothing was started. Install it, or opt out of the agent's box with --no-isolate \
         (the terminal prompt and `gatekeep approve` are then not protected from the agent)"
    )]
    Isolation(String),
    #[error("--share `{path}`: {detail}")]
    BadShare { path: PathBuf, detail: String },
    #[error(
        "the run's policy surface has changes no human has looked at{}: {}. Review them \
         (`git diff`, `gatekeep doctor`), commit or remove them, or run with \
         --accept-policy-changes",
        .recorded.as_ref().map(|at| format!(" (a run at {at} changed it without an approval)")).unwrap_or_default(),
        show_paths(.files)
    )]
    PolicyChanged {
        files: Vec<PathBuf>,
        recorded: Option<String>,
    },
    #[error("{}: {why}; {fix}", .path.display())]
    Extension {
        path: PathBuf,
        why: &'static str,
        fix: String,
    },
    #[error("gatekeep's state directory: {0}")]
    StateDir(String),
    #[error("--dir `{0}` and the run's --dir `{1}` disagree; give the workspace once")]
    DirConflict(PathBuf, PathBuf),
    #[error("--approver, --approver-role and --mention only apply to Discord approvals; add --channel <ID>")]
    ApproversWithoutChannel,
    #[error("--channel is set but DISCORD_TOKEN is not: export the bot token as DISCORD_TOKEN")]
    MissingToken,
    #[error(
        "no approval channel: stdin and stderr are not both terminals and no --channel was given.\n\
         An unattended run needs somewhere to ask: pass --channel <DISCORD_CHANNEL_ID> (or set \
         GATEKEEP_CHANNEL) and export DISCORD_TOKEN, or run gatekeep from a terminal"
    )]
    NoApprovalChannel,
}

impl ConfigError {
    /// Channel problems exit 3 ("approval channel unavailable"), the rest 2.
    #[must_use]
    pub fn is_channel_unavailable(&self) -> bool {
        matches!(
            self,
            ConfigError::MissingToken | ConfigError::NoApprovalChannel
        )
    }
}

fn show_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(files not recorded)".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the agent runs (docs/design.md, "The agent's box").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// In the box made by this sandbox program, with these paths shared
    /// read-write besides the defaults (`--share`).
    Boxed {
        program: PathBuf,
        share: Vec<PathBuf>,
    },
    /// `--no-isolate`: announced everywhere the run is described.
    Off,
}

impl Isolation {
    fn of(off: bool, share: &[PathBuf], cwd: &Path) -> Result<Self, ConfigError> {
        if off {
            return Ok(Self::Off);
        }
        let program = crate::platform::sandbox().map_err(ConfigError::Isolation)?;
        let share = share
            .iter()
            .map(|p| {
                cwd.join(p)
                    .canonicalize()
                    .map_err(|e| ConfigError::BadShare {
                        path: p.clone(),
                        detail: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::Boxed { program, share })
    }

    /// What the run-start message, the summary and `doctor` say when the
    /// box is off.
    #[must_use]
    pub fn caveat(&self) -> Option<&'static str> {
        match self {
            Self::Boxed { .. } => None,
            Self::Off => Some(
                "isolation off (--no-isolate): the agent runs outside its box, so the terminal \
                 prompt and `gatekeep approve` are not protected from it, and what it writes \
                 can reach later runs; Discord approvals still are",
            ),
        }
    }
}

/// What the environment around gatekeep looks like, passed in so tests can
/// vary it.
#[derive(Debug, Clone)]
pub struct Surroundings {
    pub cwd: PathBuf,
    /// Read once at start and wiped from the environment (`platform`).
    pub discord_token: Option<SecretString>,
    pub stdin_is_terminal: bool,
    pub stderr_is_terminal: bool,
}

impl RunConfig {
    pub fn from_args(mut args: RunArgs, env: &Surroundings) -> Result<Self, ConfigError> {
        let spec = tail::parse(&args.opencode)?;
        let workspace = workspace(args.dir.as_deref(), spec.dir.as_deref(), &env.cwd)?;
        let policy_file = policy::locate(
            args.config.as_deref().map(|p| env.cwd.join(p)).as_deref(),
            &workspace,
        );
        let policy = policy_file.as_deref().map(Policy::load).transpose()?;
        let mut deny = Vec::new();
        if let Some(policy) = &policy {
            deny.extend(policy.deny.iter().cloned());
            apply(&mut args, policy);
        }
        let mut gates = Vec::new();
        for gate in &args.gates {
            let gate = valid_gate(gate)?;
            policy::known_kind(&gate).map_err(|message| ConfigError::UnknownKind {
                option: "--gate",
                message,
            })?;
            if !gates.contains(&gate) {
                gates.push(gate);
            }
        }
        for text in &args.deny {
            let rule = DenyRule::parse(text)?;
            policy::known_kind_or_any(rule.kind()).map_err(|message| ConfigError::UnknownKind {
                option: "--deny",
                message,
            })?;
            deny.push(rule);
        }
        let guarded = Guarded::check(
            &workspace,
            &spec,
            policy.as_ref(),
            args.accept_policy_changes,
        )?;
        let protected = guarded.surface.protected();
        let approvers = ids("--approver", &args.who.approvers)?;
        let approver_roles = ids("--approver-role", &args.who.approver_roles)?;
        let ping = Ping::of(&args.who)?;

        let approval = match args.channel.as_deref().filter(|c| !c.is_empty()) {
            Some(channel) => {
                let channel_id = id("--channel", channel)?;
                let token = env.discord_token.clone().ok_or(ConfigError::MissingToken)?;
                ApprovalChannel::Discord(DiscordConfig {
                    token,
                    api_base: args.api.discord_api_url.trim_end_matches('/').to_owned(),
                    channel_id,
                    approvers,
                    approver_roles,
                    ping,
                    remind: args.remind,
                    identify_reserve: args.session.identify_reserve,
                    connect_timeout: args.session.connect_timeout,
                    use_hub: !args.no_hub,
                })
            }
            None if !approvers.is_empty()
                || !approver_roles.is_empty()
                || !args.who.mention.is_empty() =>
            {
                return Err(ConfigError::ApproversWithoutChannel)
            }
            None if env.stdin_is_terminal && env.stderr_is_terminal => ApprovalChannel::Terminal,
            None => return Err(ConfigError::NoApprovalChannel),
        };

        let verbosity = if args.quiet {
            Verbosity::Quiet
        } else if args.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };

        Ok(Self {
            spec,
            workspace,
            timeout: args.timeout,
            approval_timeout: args.approval_timeout,
            gates,
            deny,
            no_questions: args.no_questions,
            bell: !args.no_bell,
            isolation: Isolation::of(args.no_isolate, &args.share, &env.cwd)?,
            approval,
            verbosity,
            summary_json: args.summary_json,
            audit_log: args.audit_log,
            require: policy.map(|p| p.require).unwrap_or_default(),
            policy_uncommitted: guarded.policy_changed(policy_file.as_deref()),
            policy_file,
            protected,
            surface: guarded.surface,
            extensions: guarded.extensions,
            accepted_changes: guarded.accepted_changes,
            state_dir: guarded.state_dir,
        })
    }
}

/// The run's policy surface, checked before anything starts.
struct Guarded {
    surface: Surface,
    extensions: Vec<Extension>,
    accepted_changes: Vec<PathBuf>,
    state_dir: Option<PathBuf>,
}

impl Guarded {
    /// Whether the policy file is among the accepted changes: the rules in
    /// use are then not the reviewed ones (said wherever the run is). Read
    /// from the one `git status` of the surface, not asked again.
    fn policy_changed(&self, policy_file: Option<&Path>) -> bool {
        let workspace = self.surface.workspace();
        policy_file.is_some_and(|p| self.accepted_changes.iter().any(|c| workspace.join(c) == p))
    }

    fn check(
        workspace: &Path,
        spec: &RunSpec,
        policy: Option<&Policy>,
        accept: bool,
    ) -> Result<Self, ConfigError> {
        let places = Places::from_env(workspace, &spec.opencode);
        let surface = Surface::of(
            workspace,
            policy.map(|p| p.path.as_path()),
            &places.outer_config_dirs(),
        );
        let state_dir = places.gatekeep_state();
        let accepted_changes = check_changes(&surface, workspace, state_dir.as_deref(), accept)?;
        let extensions = surface.extensions();
        match policy {
            Some(policy) => check_extensions(&extensions, &policy.file, Some(&policy.path))?,
            None => check_extensions(&extensions, &policy::PolicyFile::default(), None)?,
        }
        Ok(Self {
            surface,
            extensions,
            accepted_changes,
            state_dir,
        })
    }
}

/// Changes of the policy surface a human has not looked at refuse the run:
/// uncommitted or untracked ones in the workspace's repository, and those a
/// run before recorded. `--accept-policy-changes` is the human's word that
/// they looked: it clears the record, and the run says so.
fn check_changes(
    surface: &Surface,
    workspace: &Path,
    state: Option<&Path>,
    accept: bool,
) -> Result<Vec<PathBuf>, ConfigError> {
    let mut changed = surface::uncommitted(surface);
    let recorded = state.and_then(|s| Record::load(s, workspace));
    if let Some(record) = &recorded {
        changed.extend(
            record
                .files
                .iter()
                .map(|f| f.strip_prefix(workspace).unwrap_or(f).to_owned()),
        );
    }
    changed.sort();
    changed.dedup();
    if changed.is_empty() && recorded.is_none() {
        return Ok(Vec::new());
    }
    if !accept {
        return Err(ConfigError::PolicyChanged {
            files: changed,
            recorded: recorded.map(|r| r.at),
        });
    }
    if let (Some(state), Some(_)) = (state, &recorded) {
        Record::acknowledge(state, workspace).map_err(|e| ConfigError::StateDir(e.to_string()))?;
    }
    Ok(changed)
}

/// A plugin or a custom tool refuses the run unless the policy file names
/// it (`allow_plugins`, `allow_tools`): either is code inside OpenCode.
fn check_extensions(
    found: &[Extension],
    policy: &policy::PolicyFile,
    policy_path: Option<&Path>,
) -> Result<(), ConfigError> {
    if let Some(extension) = found.iter().find(|e| !e.allowed_by(policy)) {
        let file =
            policy_path.map_or_else(|| policy::FILE_NAME.to_owned(), |p| p.display().to_string());
        return Err(ConfigError::Extension {
            path: extension.path.clone(),
            why: extension.danger(),
            fix: format!(
                "remove it, or allow it by name in the reviewed policy file ({file}: \
                 {} = [\"{}\"])",
                extension.policy_key(),
                extension.name()
            ),
        });
    }
    Ok(())
}

impl RunConfig {
    /// What this run gives up of gatekeep's protections, by the user's
    /// choice: announced at the terminal, in the run-start message, the
    /// summary and `doctor`.
    #[must_use]
    pub fn caveats(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .isolation
            .caveat()
            .map(str::to_owned)
            .into_iter()
            .collect();
        if !self.accepted_changes.is_empty() {
            out.push(format!(
                "policy changes accepted (--accept-policy-changes): {}",
                show_paths(&self.accepted_changes)
            ));
        }
        if !self.extensions.is_empty() {
            let names: Vec<String> = self
                .extensions
                .iter()
                .map(|e| {
                    let what = match e.kind {
                        ExtensionKind::Tool => "tool",
                        ExtensionKind::Plugin => "plugin",
                    };
                    let at = e.path.strip_prefix(&self.workspace).unwrap_or(&e.path);
                    format!("{what} {} ({})", e.name(), at.display())
                })
                .collect();
            out.push(format!(
                "OpenCode loads code besides its own: {}",
                names.join(", ")
            ));
        }
        out
    }
}

/// The policy file fills in what neither a flag nor a variable gave. Its
/// `gate` and `deny` lists add to those of the command line: a flag can
/// make a run stricter than the reviewed policy, never looser.
fn apply(args: &mut RunArgs, policy: &Policy) {
    let given = &args.given;
    let _ = policy.fill(given, &mut args.channel, &mut args.who, &mut args.gates);
    if let (false, Some(t)) = (given.has("timeout"), policy.timeout) {
        args.timeout = t;
    }
    if let (false, Some(t)) = (given.has("approval_timeout"), policy.approval_timeout) {
        args.approval_timeout = t;
    }
}

fn workspace(flag: Option<&Path>, tail: Option<&Path>, cwd: &Path) -> Result<PathBuf, ConfigError> {
    let resolve = |p: &Path| -> Result<PathBuf, ConfigError> {
        let p = cwd.join(p);
        let canonical = p.canonicalize().map_err(|e| ConfigError::BadWorkspace {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        if canonical.is_dir() {
            Ok(canonical)
        } else {
            Err(ConfigError::BadWorkspace {
                path: p,
                detail: "not a directory".to_owned(),
            })
        }
    };
    match (flag, tail) {
        (Some(a), Some(b)) => {
            let (ra, rb) = (resolve(a)?, resolve(b)?);
            if ra == rb {
                Ok(ra)
            } else {
                Err(ConfigError::DirConflict(a.to_owned(), b.to_owned()))
            }
        }
        (Some(p), None) | (None, Some(p)) => resolve(p),
        (None, None) => resolve(Path::new(".")),
    }
}

fn valid_gate(gate: &str) -> Result<String, ConfigError> {
    let ok = !gate.is_empty()
        && gate.len() <= 64
        && gate.starts_with(|c: char| c.is_ascii_lowercase())
        && gate
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(gate.to_owned())
    } else {
        Err(ConfigError::BadGate(gate.to_owned()))
    }
}

fn id(option: &'static str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ConfigError::BadId {
            option,
            value: value.to_owned(),
        })
}

fn ids(option: &'static str, values: &[String]) -> Result<Vec<u64>, ConfigError> {
    values.iter().map(|v| id(option, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn args(line: &str) -> RunArgs {
        let words = ["gatekeep", "run"].into_iter().chain(line.split(' '));
        match Cli::parse_words(words).expect("parses").command {
            Command::Run(a) => a,
            _ => panic!("not a run"),
        }
    }

    fn env(terminal: bool, token: Option<&str>) -> Surroundings {
        Surroundings {
            cwd: std::env::temp_dir(),
            discord_token: token
                .filter(|t| !t.trim().is_empty())
                .map(|t| SecretString::from(t.trim().to_owned())),
            stdin_is_terminal: terminal,
            stderr_is_terminal: terminal,
        }
    }

    #[test]
    fn terminal_is_the_default_channel_at_a_terminal() {
        let c = RunConfig::from_args(args("-- opencode run hi"), &env(true, None)).expect("valid");
        assert!(matches!(c.approval, ApprovalChannel::Terminal));
        assert_eq!(c.timeout, Duration::from_secs(1800));
        assert_eq!(c.approval_timeout, Duration::from_secs(600));
    }

    #[test]
    fn without_a_terminal_or_channel_it_refuses_with_exit_3() {
        let err = RunConfig::from_args(args("-- opencode run hi"), &env(false, None))
            .expect_err("refused");
        assert!(err.is_channel_unavailable());
        assert!(err.to_string().contains("--channel"));
    }

    #[test]
    fn channel_needs_a_token_and_numeric_ids() {
        let err = RunConfig::from_args(args("--channel 42 -- opencode run hi"), &env(false, None))
            .expect_err("no token");
        assert!(err.is_channel_unavailable());
        let err = RunConfig::from_args(
            args("--channel general -- opencode run hi"),
            &env(false, Some("t")),
        )
        .expect_err("bad id");
        assert!(matches!(
            err,
            ConfigError::BadId {
                option: "--channel",
                ..
            }
        ));
        let c = RunConfig::from_args(
            args("--channel 42 --approver 7 --approver-role 8 --gate bash --gate edit -- opencode run hi"),
            &env(false, Some("t")),
        )
        .expect("valid");
        let ApprovalChannel::Discord(d) = c.approval else {
            panic!("discord expected")
        };
        assert_eq!(
            (d.channel_id, d.approvers, d.approver_roles),
            (42, vec![7], vec![8])
        );
        assert_eq!(c.gates, vec!["bash", "edit"]);
    }

    #[test]
    fn rejects_bad_gates_and_missing_workspaces() {
        assert!(matches!(
            RunConfig::from_args(args("--gate Bash! -- opencode run hi"), &env(true, None)),
            Err(ConfigError::BadGate(_))
        ));
        assert!(matches!(
            RunConfig::from_args(
                args("--dir /nonexistent/x -- opencode run hi"),
                &env(true, None)
            ),
            Err(ConfigError::BadWorkspace { .. })
        ));
    }

    /// A workspace holding `gatekeep.toml` with `text`.
    fn workspace_with_policy(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gatekeep.toml"), text).expect("write policy");
        dir
    }

    fn run_in(dir: &Path, flags: &str) -> Result<RunConfig, ConfigError> {
        let line = format!("--dir {} {flags}-- opencode run hi", dir.display());
        RunConfig::from_args(args(&line), &env(false, Some("t")))
    }

    #[test]
    fn the_workspace_policy_file_fills_in_what_no_flag_gave() {
        let dir = workspace_with_policy(
            "channel = \"42\"\napprovers = [\"7\"]\ntimeout = \"45m\"\ngate = [\"bash\"]\n\
             deny = [\"bash:rm -rf *\"]\n[[require]]\nmatch = \"bash:git push*\"\napprovals = 2\n",
        );
        let c = run_in(dir.path(), "").expect("valid");
        let ApprovalChannel::Discord(d) = &c.approval else {
            panic!("the file's channel is used")
        };
        assert_eq!((d.channel_id, d.approvers.clone()), (42, vec![7]));
        assert_eq!(c.timeout, Duration::from_secs(45 * 60));
        assert_eq!(
            c.approval_timeout,
            Duration::from_secs(600),
            "the default stays"
        );
        assert_eq!(c.gates, vec!["bash"]);
        assert_eq!(c.deny.len(), 1);
        assert_eq!(c.require.len(), 1);
        assert!(c.policy_file.is_some());
        assert!(c.protected.iter().any(|p| p.ends_with("gatekeep.toml")));
    }

    #[test]
    fn flags_override_the_file_but_gate_and_deny_only_add_to_it() {
        let dir = workspace_with_policy(
            "channel = \"42\"\ntimeout = \"45m\"\ngate = [\"bash\"]\ndeny = [\"bash:rm *\"]\n",
        );
        let c = run_in(
            dir.path(),
            "--channel 43 --timeout 5m --gate edit --deny edit:secrets/* ",
        )
        .expect("valid");
        let ApprovalChannel::Discord(d) = &c.approval else {
            panic!("discord")
        };
        assert_eq!(d.channel_id, 43);
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.gates, vec!["edit", "bash"]);
        assert_eq!(c.deny.len(), 2, "the file's deny rule stays");
    }

    #[test]
    fn config_names_another_file() {
        let dir = workspace_with_policy("channel = \"42\"\n");
        let other = dir.path().join("ci.toml");
        std::fs::write(&other, "channel = \"44\"\n").expect("write");
        let c = run_in(dir.path(), &format!("--config {} ", other.display())).expect("valid");
        let ApprovalChannel::Discord(d) = &c.approval else {
            panic!("discord")
        };
        assert_eq!(d.channel_id, 44);
    }

    #[test]
    fn a_bad_policy_file_is_a_usage_error_naming_it() {
        let dir = workspace_with_policy("gate = [\"bsah\"]\n");
        let err = run_in(dir.path(), "").expect_err("refused");
        assert!(!err.is_channel_unavailable());
        let text = err.to_string();
        assert!(text.contains("gatekeep.toml, line 1, key `gate`"), "{text}");
        assert!(text.contains("did you mean `bash`?"), "{text}");
    }

    #[test]
    fn a_misspelt_gate_or_deny_flag_is_refused_with_the_closest_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = run_in(dir.path(), "--channel 1 --gate bsah ").expect_err("refused");
        assert!(err.to_string().contains("did you mean `bash`?"), "{err}");
        let err = run_in(dir.path(), "--channel 1 --deny bahs:* ").expect_err("refused");
        assert!(err.to_string().contains("did you mean `bash`?"), "{err}");
        assert!(run_in(dir.path(), "--channel 1 --deny *:rm* ").is_ok());
    }

    use std::fmt::Write as _;

    proptest::proptest! {
        /// For every key: the flag if given, else the file if it says,
        /// else the default.
        #[test]
        fn flag_over_file_over_default(
            file_timeout in proptest::option::of(1u64..100),
            flag_timeout in proptest::option::of(1u64..100),
            file_approval in proptest::option::of(1u64..100),
            flag_approval in proptest::option::of(1u64..100),
            file_channel in proptest::option::of(1u64..100),
            flag_channel in proptest::option::of(1u64..100),
        ) {
            let mut text = String::new();
            let mut flags = String::new();
            if let Some(t) = file_timeout { let _ = writeln!(text, "timeout = \"{t}m\""); }
            if let Some(t) = flag_timeout { let _ = write!(flags, "--timeout {t}m "); }
            if let Some(t) = file_approval { let _ = writeln!(text, "approval_timeout = \"{t}s\""); }
            if let Some(t) = flag_approval { let _ = write!(flags, "--approval-timeout {t}s "); }
            if let Some(c) = file_channel { let _ = writeln!(text, "channel = \"{c}\""); }
            if let Some(c) = flag_channel { let _ = write!(flags, "--channel {c} "); }
            let dir = workspace_with_policy(&text);
            let result = run_in(dir.path(), &flags);
            let channel = flag_channel.or(file_channel);
            let Some(channel) = channel else {
                proptest::prop_assert!(result.is_err(), "no channel and no terminal");
                return Ok(());
            };
            let c = result.expect("valid");
            let ApprovalChannel::Discord(d) = &c.approval else { panic!("discord") };
            proptest::prop_assert_eq!(d.channel_id, channel);
            proptest::prop_assert_eq!(
                c.timeout,
                Duration::from_secs(60 * flag_timeout.or(file_timeout).unwrap_or(30))
            );
            proptest::prop_assert_eq!(
                c.approval_timeout,
                Duration::from_secs(flag_approval.or(file_approval).unwrap_or(600))
            );
        }
    }
}

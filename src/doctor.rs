//! `gatekeep doctor`: everything an unattended run relies on, checked
//! before you rely on it.
//!
//! 1. The OpenCode binary runs and says its version (bounded).
//! 2. Which permission kinds the workspace's configuration makes OpenCode
//!    ask for (global and workspace `opencode.json`/`opencode.jsonc`,
//!    `OPENCODE_CONFIG_CONTENT`, `OPENCODE_PERMISSION`, `--gate`), with a
//!    warning when nothing is gated or the configuration allows everything.
//! 3. With `--channel`: the bot token, the gateway, access to the channel
//!    and the bot's permissions there, computed from the guild's roles and
//!    the channel's overwrites the way Discord does.
//!
//! Each failure comes with a fix. Exit 0 when ready, 3 otherwise; warnings
//! do not fail. The token is never printed.
//!
//! The Discord checks talk to `--discord-api-url` only: when it is
//! overridden nothing ever goes to the real Discord, and the HTTP client
//! ignores proxy variables (`HTTP_PROXY` can hijack loopback traffic).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cli::DoctorArgs;
use crate::exit::Code;

/// Bound on `opencode --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on each Discord request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The OpenCode version gatekeep's protocol facts were measured against.
const TESTED_OPENCODE: &str = "1.18.33";

/// Permission kinds OpenCode allows unless configured otherwise (its
/// `build` agent asks only for `external_directory` and `doom_loop`).
const DANGEROUS_KINDS: &[&str] = &["bash", "edit", "webfetch"];
const DEFAULT_ASK: &[&str] = &["external_directory", "doom_loop"];

/// Discord permission bits gatekeep needs in the approval channel.
const NEEDED: &[(u64, &str)] = &[
    (1 << 10, "View Channel"),
    (1 << 11, "Send Messages"),
    (1 << 14, "Embed Links"),
    (1 << 35, "Create Public Threads"),
    (1 << 38, "Send Messages in Threads"),
];
const ADMINISTRATOR: u64 = 1 << 3;

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
struct Report {
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

    fn ok(&mut self, what: &str) {
        self.line(Status::Ok, what, None);
    }

    fn warn(&mut self, what: &str, fix: &str) {
        self.line(Status::Warn, what, Some(fix));
    }

    fn fail(&mut self, what: &str, fix: &str) {
        self.line(Status::Fail, what, Some(fix));
    }
}

/// Run every check; 0 when ready, 3 otherwise.
#[must_use]
pub fn run(args: &DoctorArgs) -> Code {
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
    runtime.block_on(check_all(args, &mut report));
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

async fn check_all(args: &DoctorArgs, report: &mut Report) {
    let program = args
        .opencode
        .first()
        .map_or_else(|| PathBuf::from("opencode"), PathBuf::from);
    check_opencode(&program, report).await;

    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let workspace = cwd.join(args.dir.as_deref().unwrap_or(Path::new(".")));
    if workspace.is_dir() {
        check_permissions(&workspace, &args.gates, report);
    } else {
        report.fail(
            &format!("workspace {} is not a directory", workspace.display()),
            "pass the repository to work on with --dir <PATH> (or run doctor from it)",
        );
    }

    match args.channel.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(channel) => check_discord(channel, &args.discord_api_url, report).await,
        None => println!(
            "     (no --channel: Discord not checked; approvals would be asked at a terminal)"
        ),
    }
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
                    crate::summary::shorten(&crate::redact::terminal_safe(&stderr), 200)
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
            if version.contains(TESTED_OPENCODE) {
                report.ok(&format!("OpenCode {version} ({shown})"));
            } else {
                report.warn(
                    &format!(
                        "OpenCode {version} ({shown}); gatekeep was tested with {TESTED_OPENCODE}"
                    ),
                    &format!(
                        "if approvals misbehave, try `npm i -g opencode-ai@{TESTED_OPENCODE}`"
                    ),
                );
            }
        }
    }
}

/// What the configuration layers say about one permission kind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `ask`, `allow` or `deny`; `mixed` when patterns differ.
    action: String,
    /// Which layer set it last.
    source: String,
}

/// The permission rules of every layer, later layers winning.
#[derive(Debug, Default)]
struct Permissions {
    /// Kind → rule; `*` for "every kind".
    kinds: BTreeMap<String, Rule>,
    /// (agent, kind) → rule, from `agent.<name>.permission`. These beat the
    /// top-level `permission` and `OPENCODE_PERMISSION` for that agent
    /// (docs/opencode-facts.md), so they can undo `--gate`.
    agents: BTreeMap<(String, String), Rule>,
    notes: Vec<String>,
}

impl Permissions {
    /// Merge a `permission` value from `source`.
    fn merge(&mut self, value: &Value, source: &str) {
        match value {
            Value::String(action) => {
                // One action for everything: it replaces every rule.
                self.kinds.clear();
                self.kinds.insert(
                    "*".to_owned(),
                    Rule {
                        action: action.clone(),
                        source: source.to_owned(),
                    },
                );
            }
            Value::Object(map) => {
                for (kind, rule) in map {
                    let action = match rule {
                        Value::String(a) => a.clone(),
                        Value::Object(patterns) => {
                            let mut actions: Vec<&str> =
                                patterns.values().filter_map(Value::as_str).collect();
                            actions.sort_unstable();
                            actions.dedup();
                            match actions.as_slice() {
                                [one] => (*one).to_owned(),
                                [] => continue,
                                _ if actions.contains(&"ask") => "ask (some patterns)".to_owned(),
                                _ => "mixed".to_owned(),
                            }
                        }
                        _ => continue,
                    };
                    self.kinds.insert(
                        kind.clone(),
                        Rule {
                            action,
                            source: source.to_owned(),
                        },
                    );
                }
            }
            _ => self.notes.push(format!(
                "{source}: `permission` is neither a string nor an object"
            )),
        }
    }

    /// Merge the `agent.<name>.permission` rules of a config from `source`.
    fn merge_agents(&mut self, config: &Value, source: &str) {
        let Some(agents) = config.get("agent").and_then(Value::as_object) else {
            return;
        };
        for (name, agent) in agents {
            let Some(permission) = agent.get("permission") else {
                continue;
            };
            let mut one = Permissions::default();
            one.merge(permission, source);
            self.notes.append(&mut one.notes);
            for (kind, rule) in one.kinds {
                self.agents.insert((name.clone(), kind), rule);
            }
        }
    }

    /// The action for `kind` after every layer.
    fn action(&self, kind: &str) -> Option<&Rule> {
        self.kinds.get(kind).or_else(|| self.kinds.get("*"))
    }
}

/// Remove `//` and `/* */` comments and trailing commas outside strings,
/// so `opencode.jsonc` parses as JSON.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas: `,` followed by whitespace and a closing bracket.
    let trailing = regex::Regex::new(r",(\s*[}\]])").expect("a valid regex");
    trailing.replace_all(&out, "$1").into_owned()
}

fn read_config(path: &Path, layers: &mut Permissions, report: &mut Report) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let shown = path.display().to_string();
    match serde_json::from_str::<Value>(&strip_jsonc(&text)) {
        Ok(config) => {
            if let Some(permission) = config.get("permission") {
                layers.merge(permission, &shown);
            }
            layers.merge_agents(&config, &shown);
        }
        Err(err) => report.fail(
            &format!("{shown} is not valid JSON: {err}"),
            "fix the file: OpenCode refuses to start with a broken config",
        ),
    }
}

/// Every configuration layer OpenCode reads, in its order: global and
/// workspace config files, then `OPENCODE_CONFIG_CONTENT` and
/// `OPENCODE_PERMISSION`.
fn load_layers(workspace: &Path, report: &mut Report) -> Permissions {
    let mut layers = Permissions::default();
    let global = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("opencode"));
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(global) = global {
        files.push(global.join("opencode.json"));
        files.push(global.join("opencode.jsonc"));
    }
    files.push(workspace.join("opencode.json"));
    files.push(workspace.join("opencode.jsonc"));
    for file in &files {
        read_config(file, &mut layers, report);
    }
    for var in ["OPENCODE_CONFIG_CONTENT", "OPENCODE_PERMISSION"] {
        let Ok(text) = std::env::var(var) else {
            continue;
        };
        match serde_json::from_str::<Value>(&strip_jsonc(&text)) {
            Ok(value) if var == "OPENCODE_PERMISSION" => layers.merge(&value, var),
            Ok(value) => {
                if let Some(permission) = value.get("permission") {
                    layers.merge(permission, var);
                }
                layers.merge_agents(&value, var);
            }
            Err(err) => report.fail(
                &format!("{var} is not valid JSON: {err}"),
                &format!("fix or unset {var}"),
            ),
        }
    }
    for note in std::mem::take(&mut layers.notes) {
        report.warn(&note, "see https://opencode.ai/docs/permissions");
    }
    layers
}

fn check_permissions(workspace: &Path, gates: &[String], report: &mut Report) {
    let layers = load_layers(workspace, report);

    let mut asks: Vec<String> = Vec::new();
    let mut allowed: Vec<String> = Vec::new();
    let mut kinds: Vec<String> = DANGEROUS_KINDS
        .iter()
        .chain(DEFAULT_ASK)
        .map(|k| (*k).to_owned())
        .collect();
    kinds.extend(layers.kinds.keys().filter(|k| *k != "*").cloned());
    kinds.extend(gates.iter().cloned());
    kinds.sort();
    kinds.dedup();
    for kind in &kinds {
        let forced = gates.contains(kind);
        let rule = layers.action(kind);
        let (action, source) = match (forced, rule) {
            (true, _) => ("ask".to_owned(), "--gate".to_owned()),
            (false, Some(rule)) => (rule.action.clone(), rule.source.clone()),
            (false, None) if DEFAULT_ASK.contains(&kind.as_str()) => {
                ("ask".to_owned(), "OpenCode default".to_owned())
            }
            (false, None) => ("allow".to_owned(), "OpenCode default".to_owned()),
        };
        let entry = format!("{kind} ({source})");
        if action.starts_with("ask") {
            asks.push(if action == "ask" {
                entry
            } else {
                format!("{kind}: {action} ({source})")
            });
        } else if action == "allow" {
            allowed.push(entry);
        }
    }
    report.ok(&format!(
        "workspace {}: OpenCode will ask for {}",
        workspace.display(),
        if asks.is_empty() {
            "nothing".to_owned()
        } else {
            asks.join(", ")
        }
    ));
    if !allowed.is_empty() {
        println!("     runs without asking: {}", allowed.join(", "));
    }
    check_agent_rules(&layers, gates, report);
    let everything_allowed =
        layers.kinds.get("*").is_some_and(|r| r.action == "allow") && gates.is_empty();
    let dangerous_gated = DANGEROUS_KINDS.iter().any(|k| {
        gates.iter().any(|g| g == k)
            || layers
                .action(k)
                .is_some_and(|r| r.action.starts_with("ask"))
    });
    if everything_allowed {
        report.warn(
            "the configuration allows everything: no tool call will reach a human",
            "run with --gate bash --gate edit (forced to ask for this run), or set \
             \"permission\": {\"bash\": \"ask\", \"edit\": \"ask\"} in opencode.json",
        );
    } else if !dangerous_gated {
        report.warn(
            "nothing dangerous is gated: bash, edit and webfetch run without asking",
            "run with --gate bash --gate edit, or set \"permission\": {\"bash\": \"ask\"} in opencode.json",
        );
    }
}

/// Agent-level rules beat the top-level `permission` and
/// `OPENCODE_PERMISSION`: an agent that allows a kind the config asks for
/// runs it unasked. `--gate` overrides agent rules for the run (and refuses
/// to start when an agent still allows a gated kind), so those are notes.
fn check_agent_rules(layers: &Permissions, gates: &[String], report: &mut Report) {
    for ((agent, kind), rule) in &layers.agents {
        let forced = gates.iter().any(|g| g == kind) || (kind == "*" && !gates.is_empty());
        let configured_ask = layers
            .action(kind)
            .is_some_and(|r| r.action.starts_with("ask"));
        let allows = !(rule.action.starts_with("ask") || rule.action == "deny");
        if !allows {
            println!(
                "     agent `{agent}`: {kind} is {} ({})",
                rule.action, rule.source
            );
        } else if forced {
            println!(
                "     agent `{agent}` allows {kind} ({}); --gate overrides it for the run",
                rule.source
            );
        } else if configured_ask || kind == "*" {
            report.warn(
                &format!(
                    "agent `{agent}` allows {kind} ({}): agent rules beat `permission` and \
                     OPENCODE_PERMISSION, so `{agent}` runs {kind} without asking",
                    rule.source
                ),
                &format!(
                    "run with --gate {kind}, or set agent.{agent}.permission.{kind} to \"ask\" \
                     (or remove it)"
                ),
            );
        }
    }
}

/// Why a Discord request failed, phrased for the report.
#[derive(Debug, thiserror::Error)]
enum DiscordError {
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered something that is not the expected JSON: {detail}")]
    Shape { url: String, detail: String },
}

struct Discord {
    client: reqwest::Client,
    api: String,
    /// The `Authorization` header value; never printed.
    authorization: String,
}

impl Discord {
    async fn get(&self, path: &str) -> Result<Value, DiscordError> {
        let url = format!("{}/api/v10{path}", self.api);
        let response = self
            .client
            .get(&url)
            .header("Authorization", &self.authorization)
            .send()
            .await
            .map_err(|e| DiscordError::Unreachable {
                url: url.clone(),
                detail: e.without_url().to_string(),
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(DiscordError::Status {
                url,
                status: status.as_u16(),
                message: body
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| "no message".to_owned(), crate::redact::terminal_safe),
            });
        }
        Ok(body)
    }
}

fn string_field<'a>(value: &'a Value, key: &str, url: &str) -> Result<&'a str, DiscordError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| DiscordError::Shape {
            url: url.to_owned(),
            detail: format!("no `{key}`"),
        })
}

/// One check after the other, each stopping the rest when later ones
/// could only fail the same way: long, but it reads top to bottom.
#[allow(clippy::too_many_lines)]
async fn check_discord(channel: &str, api: &str, report: &mut Report) {
    let Some(channel_id) = channel.trim().parse::<u64>().ok().filter(|c| *c > 0) else {
        report.fail(
            &format!("--channel `{channel}` is not a Discord channel id"),
            "use the channel's numeric id (Discord: Settings → Advanced → Developer Mode, then \
             right-click the channel → Copy Channel ID)",
        );
        return;
    };
    let token = std::env::var("DISCORD_TOKEN").unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        report.fail(
            "DISCORD_TOKEN is not set",
            "export the bot's token as DISCORD_TOKEN (Discord developer portal → your \
             application → Bot → Reset Token); in CI, from a secret",
        );
        return;
    }
    report.ok("DISCORD_TOKEN is set");
    let api = api.trim_end_matches('/').to_owned();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!(
            "DiscordBot (gatekeep, ",
            env!("CARGO_PKG_VERSION"),
            ")"
        ))
        .build()
    {
        Ok(c) => c,
        Err(err) => {
            report.fail(
                &format!("cannot build an HTTP client: {err}"),
                "this is a bug",
            );
            return;
        }
    };
    let discord = Discord {
        client,
        api: api.clone(),
        authorization: format!("Bot {token}"),
    };

    match discord.get("/gateway").await {
        Ok(g) if g.get("url").and_then(Value::as_str).is_some() => {
            report.ok(&format!("Discord gateway known to {api}"));
        }
        Ok(_) => report.fail(
            &format!("{api}/api/v10/gateway did not name a gateway"),
            "check --discord-api-url (leave it unset for the real Discord)",
        ),
        Err(err) => {
            report.fail(
                &format!("gateway lookup failed: {err}"),
                "check the network (and --discord-api-url, which must be unset for the real Discord)",
            );
            return;
        }
    }

    let me = match discord.get("/users/@me").await {
        Ok(me) => me,
        Err(DiscordError::Status { status: 401, .. }) => {
            report.fail(
                "Discord rejected DISCORD_TOKEN (401)",
                "the token is wrong or was reset: copy a fresh one from the developer portal \
                 (Bot → Reset Token)",
            );
            return;
        }
        Err(err) => {
            report.fail(
                &format!("cannot identify the bot: {err}"),
                "check the token and the network",
            );
            return;
        }
    };
    let bot_id = match string_field(&me, "id", "/users/@me") {
        Ok(id) => id.to_owned(),
        Err(err) => {
            report.fail(&err.to_string(), "check --discord-api-url");
            return;
        }
    };
    let bot_name = me
        .get("username")
        .and_then(Value::as_str)
        .map_or_else(|| "?".to_owned(), crate::redact::terminal_safe);
    report.ok(&format!("token belongs to bot {bot_name} ({bot_id})"));

    let channel = match discord.get(&format!("/channels/{channel_id}")).await {
        Ok(c) => c,
        Err(DiscordError::Status { status: 403, .. }) => {
            report.fail(
                &format!("the bot cannot see channel {channel_id} (403 Missing Access)"),
                "invite the bot to the server (OAuth2 URL with the `bot` scope) and give it \
                 View Channel in that channel",
            );
            return;
        }
        Err(DiscordError::Status { status: 404, .. }) => {
            report.fail(
                &format!("channel {channel_id} does not exist (404)"),
                "check the id: right-click the channel → Copy Channel ID (Developer Mode)",
            );
            return;
        }
        Err(err) => {
            report.fail(
                &format!("cannot read channel {channel_id}: {err}"),
                "check the network",
            );
            return;
        }
    };
    let name = channel
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| "?".to_owned(), crate::redact::terminal_safe);
    let Some(guild_id) = channel
        .get("guild_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        report.fail(
            &format!("channel {channel_id} is not in a server (a DM?)"),
            "use a text channel of a server the bot is in",
        );
        return;
    };
    report.ok(&format!(
        "channel #{name} ({channel_id}) is visible to the bot"
    ));

    check_bot_permissions(&discord, &channel, &guild_id, &bot_id, &name, report).await;
}

/// The bot's permissions in the channel, against what gatekeep needs.
async fn check_bot_permissions(
    discord: &Discord,
    channel: &Value,
    guild_id: &str,
    bot_id: &str,
    name: &str,
    report: &mut Report,
) {
    let member = discord
        .get(&format!("/guilds/{guild_id}/members/{bot_id}"))
        .await;
    let roles = discord.get(&format!("/guilds/{guild_id}/roles")).await;
    let (member, roles) = match (member, roles) {
        (Ok(m), Ok(r)) => (m, r),
        (Err(err), _) | (_, Err(err)) => {
            report.fail(
                &format!("cannot read the bot's roles: {err}"),
                "check that the bot is a member of the server",
            );
            return;
        }
    };
    let member_roles: Vec<&str> = member
        .get("roles")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let permissions = channel_permissions(
        guild_id,
        bot_id,
        &member_roles,
        roles.as_array().map_or(&[][..], Vec::as_slice),
        channel
            .get("permission_overwrites")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice),
    );
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| permissions & bit == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        report.ok(&format!(
            "the bot may {} in #{name}",
            NEEDED
                .iter()
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    } else {
        report.fail(
            &format!("the bot lacks in #{name}: {}", missing.join(", ")),
            &format!(
                "channel settings → Permissions → the bot's role: allow {} (or grant it to the \
                 role in Server Settings → Roles)",
                missing.join(", ")
            ),
        );
    }
}

fn bits(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The bot's permissions in a channel, as Discord computes them: the
/// `@everyone` role and the member's roles, then the channel's overwrites
/// for `@everyone`, for the member's roles (together) and for the member.
fn channel_permissions(
    guild_id: &str,
    member_id: &str,
    member_roles: &[&str],
    roles: &[Value],
    overwrites: &[Value],
) -> u64 {
    let role_id = |r: &Value| r.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut base = 0u64;
    for role in roles {
        let id = role_id(role);
        if id == guild_id || member_roles.contains(&id.as_str()) {
            base |= bits(role.get("permissions"));
        }
    }
    if base & ADMINISTRATOR != 0 {
        return u64::MAX;
    }
    let overwrite = |id: &str| {
        overwrites
            .iter()
            .find(|o| o.get("id").and_then(Value::as_str) == Some(id))
            .map(|o| (bits(o.get("allow")), bits(o.get("deny"))))
    };
    if let Some((allow, deny)) = overwrite(guild_id) {
        base = (base & !deny) | allow;
    }
    let (mut allow, mut deny) = (0, 0);
    for role in member_roles {
        if let Some((a, d)) = overwrite(role) {
            allow |= a;
            deny |= d;
        }
    }
    base = (base & !deny) | allow;
    if let Some((allow, deny)) = overwrite(member_id) {
        base = (base & !deny) | allow;
    }
    base
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const VIEW: u64 = 1 << 10;
    const SEND: u64 = 1 << 11;

    #[test]
    fn permissions_follow_discords_overwrite_order() {
        let roles = [
            json!({"id": "1", "permissions": (VIEW | SEND).to_string()}),
            json!({"id": "5", "permissions": "0"}),
        ];
        let base = channel_permissions("1", "9", &["5"], &roles, &[]);
        assert_eq!(base, VIEW | SEND);
        // @everyone denied sending, the bot's role allowed it again.
        let overwrites = [
            json!({"id": "1", "type": 0, "allow": "0", "deny": SEND.to_string()}),
            json!({"id": "5", "type": 0, "allow": SEND.to_string(), "deny": "0"}),
        ];
        assert_eq!(
            channel_permissions("1", "9", &["5"], &roles, &overwrites),
            VIEW | SEND
        );
        // …and a member overwrite beats both.
        let member = json!({"id": "9", "type": 1, "allow": "0", "deny": VIEW.to_string()});
        let all = [overwrites[0].clone(), overwrites[1].clone(), member];
        assert_eq!(channel_permissions("1", "9", &["5"], &roles, &all), SEND);
        let admin = [json!({"id": "1", "permissions": ADMINISTRATOR.to_string()})];
        assert_eq!(channel_permissions("1", "9", &[], &admin, &all), u64::MAX);
    }

    #[test]
    fn jsonc_comments_and_trailing_commas_are_ignored_outside_strings() {
        let text = "{\n // a comment\n \"permission\": { \"bash\": \"ask\", /* x */ },\n \"url\": \"http://a//b\",\n}";
        let value: Value = serde_json::from_str(&strip_jsonc(text)).expect("parses");
        assert_eq!(value["permission"]["bash"], "ask");
        assert_eq!(value["url"], "http://a//b");
    }

    #[test]
    fn agent_rules_are_kept_per_agent() {
        let mut p = Permissions::default();
        p.merge_agents(
            &json!({"agent": {"general": {"permission": {"bash": "allow"}}, "plan": {}}}),
            "opencode.json",
        );
        let rule = p
            .agents
            .get(&("general".to_owned(), "bash".to_owned()))
            .expect("the general agent's rule");
        assert_eq!(
            (rule.action.as_str(), rule.source.as_str()),
            ("allow", "opencode.json")
        );
        assert_eq!(p.agents.len(), 1);
    }

    #[test]
    fn later_layers_win_and_a_string_applies_to_every_kind() {
        let mut p = Permissions::default();
        p.merge(&json!({"bash": "ask", "edit": "allow"}), "opencode.json");
        p.merge(
            &json!({"bash": {"*": "ask", "git status": "allow"}}),
            "OPENCODE_PERMISSION",
        );
        assert_eq!(
            p.action("bash").map(|r| r.action.as_str()),
            Some("ask (some patterns)")
        );
        assert_eq!(
            p.action("edit").map(|r| r.source.as_str()),
            Some("opencode.json")
        );
        p.merge(&json!("allow"), "OPENCODE_CONFIG_CONTENT");
        assert_eq!(p.action("bash").map(|r| r.action.as_str()), Some("allow"));
    }
}

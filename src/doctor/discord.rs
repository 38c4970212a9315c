//! The Discord checks: the bot token, the gateway, access to the channel and
//! the bot's permissions there, computed from the guild's roles and the
//! channel's overwrites the way Discord does.
//!
//! They use the run's own REST client ([`Rest`]): they talk to
//! `--discord-api-url` only (when it is overridden nothing ever goes to the
//! real Discord), ignore proxy variables (`HTTP_PROXY` can hijack loopback
//! traffic), and never print the token.

use secrecy::SecretString;
use serde_json::Value;

use super::Report;
use crate::transport::discord::hub;
use crate::transport::discord::rest::{Rest, RestError};
use crate::transport::local;

/// Discord permission bits gatekeep needs in the approval channel.
const NEEDED: &[(u64, &str)] = &[
    (1 << 10, "View Channel"),
    (1 << 11, "Send Messages"),
    (1 << 14, "Embed Links"),
    (1 << 35, "Create Public Threads"),
    (1 << 38, "Send Messages in Threads"),
];
const ADMINISTRATOR: u64 = 1 << 3;

/// A REST error as the report shows it: Discord's message may be anything.
fn shown(err: &RestError) -> String {
    crate::redact::terminal_safe(&err.to_string())
}

fn string_field<'a>(value: &'a Value, key: &str) -> Result<&'a str, String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the answer has no `{key}`"))
}

/// One check after the other, each stopping the rest when later ones
/// could only fail the same way: long, but it reads top to bottom.
#[allow(clippy::too_many_lines)]
pub(super) async fn check(
    channel: &str,
    api: &str,
    token: Option<&SecretString>,
    report: &mut Report,
) {
    let Some(channel_id) = channel.trim().parse::<u64>().ok().filter(|c| *c > 0) else {
        report.fail(
            &format!("--channel `{channel}` is not a Discord channel id"),
            "use the channel's numeric id (Discord: Settings → Advanced → Developer Mode, then \
             right-click the channel → Copy Channel ID)",
        );
        return;
    };
    let Some(token) = token else {
        report.fail(
            "DISCORD_TOKEN is not set",
            "export the bot's token as DISCORD_TOKEN (Discord developer portal → your \
             application → Bot → Reset Token); in CI, from a secret",
        );
        return;
    };
    report.ok("DISCORD_TOKEN is set");
    let api = api.trim_end_matches('/').to_owned();
    let discord = match Rest::new(&api, token) {
        Ok(rest) => rest,
        Err(err) => {
            report.fail(
                &format!("cannot build an HTTP client: {err}"),
                "this is a bug",
            );
            return;
        }
    };

    let bot = match discord.gateway_bot().await {
        Ok(bot) => bot,
        Err(err) => {
            report.fail(
                &format!("gateway lookup failed: {}", shown(&err)),
                "check the network (and --discord-api-url, which must be unset for the real Discord)",
            );
            return;
        }
    };
    report.ok(&format!("Discord gateway known to {api}"));
    match bot.budget {
        Some(b) if b.remaining <= 50 => report.warn(
            &format!(
                "only {} of {} session starts left today for this bot (full again in {}): runs \
                 refuse to connect below --identify-reserve (default 50)",
                b.remaining,
                b.total,
                humantime::format_duration(std::time::Duration::from_secs(b.reset_after.as_secs()))
            ),
            "space the runs out; Discord resets the bot's token when none are left",
        ),
        Some(b) => report.ok(&format!(
            "{} of {} session starts left today for this bot",
            b.remaining, b.total
        )),
        None => println!("     Discord did not say how many session starts are left"),
    }
    // Whether runs on this host will share one session.
    if let Ok(application_id) = discord.application_id().await {
        let socket = hub::socket_path(&local::state_dir(), application_id);
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            report.ok(&format!(
                "a gatekeep hub of this bot listens on {}: runs here use it",
                socket.display()
            ));
        } else {
            println!(
                "     no gatekeep hub of this bot on this host: each run starts a session \
                 (`gatekeep hub` for many runs per host)"
            );
        }
    }

    let me = match discord.get("bot lookup", "/users/@me").await {
        Ok(me) => me,
        Err(RestError::Status { status: 401, .. }) => {
            report.fail(
                "Discord rejected DISCORD_TOKEN (401)",
                "the token is wrong or was reset: copy a fresh one from the developer portal \
                 (Bot → Reset Token)",
            );
            return;
        }
        Err(err) => {
            report.fail(
                &format!("cannot identify the bot: {}", shown(&err)),
                "check the token and the network",
            );
            return;
        }
    };
    let bot_id = match string_field(&me, "id") {
        Ok(id) => id.to_owned(),
        Err(err) => {
            report.fail(&err.clone(), "check --discord-api-url");
            return;
        }
    };
    let bot_name = me
        .get("username")
        .and_then(Value::as_str)
        .map_or_else(|| "?".to_owned(), crate::redact::terminal_safe);
    report.ok(&format!("token belongs to bot {bot_name} ({bot_id})"));

    let channel = match discord
        .get("channel lookup", &format!("/channels/{channel_id}"))
        .await
    {
        Ok(c) => c,
        Err(RestError::Status { status: 403, .. }) => {
            report.fail(
                &format!("the bot cannot see channel {channel_id} (403 Missing Access)"),
                "invite the bot to the server (OAuth2 URL with the `bot` scope) and give it \
                 View Channel in that channel",
            );
            return;
        }
        Err(RestError::Status { status: 404, .. }) => {
            report.fail(
                &format!("channel {channel_id} does not exist (404)"),
                "check the id: right-click the channel → Copy Channel ID (Developer Mode)",
            );
            return;
        }
        Err(err) => {
            report.fail(
                &format!("cannot read channel {channel_id}: {}", shown(&err)),
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
    discord: &Rest,
    channel: &Value,
    guild_id: &str,
    bot_id: &str,
    name: &str,
    report: &mut Report,
) {
    let member = discord
        .get(
            "member lookup",
            &format!("/guilds/{guild_id}/members/{bot_id}"),
        )
        .await;
    let roles = discord
        .get("roles lookup", &format!("/guilds/{guild_id}/roles"))
        .await;
    let (member, roles) = match (member, roles) {
        (Ok(m), Ok(r)) => (m, r),
        (Err(err), _) | (_, Err(err)) => {
            report.fail(
                &format!("cannot read the bot's roles: {}", shown(&err)),
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
}

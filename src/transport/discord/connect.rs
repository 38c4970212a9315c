//! Connecting: the bot's application, where its clicks will come from
//! (this host's hub, else a gateway session of the run's own, spent
//! knowingly: see `session`), then the run-start message and its thread,
//! all within `--connect-timeout`. Nothing reaches the agent before this
//! succeeded.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;

use super::clicks::{Approvers, Nonce};
use super::gateway;
use super::hub;
use super::outbox::id_of;
use super::render;
use super::rest::{Body, Rest, RestError, Retry};
use super::session::Starter;
use super::{Discord, Error, Link, RunInfo};
use crate::config::DiscordConfig;
use crate::console::Console;
use crate::redact::Redactor;
use crate::transport::local;

/// Beyond `--connect-timeout`, for a gateway that is slow to close after
/// a failed connect.
const CONNECT_SLACK: Duration = Duration::from_secs(5);

pub async fn connect(
    settings: DiscordConfig,
    info: RunInfo,
    console: &Console,
) -> Result<Discord, Error> {
    let within = settings.connect_timeout;
    tokio::time::timeout(
        within + CONNECT_SLACK,
        connect_inner(settings, info, console),
    )
    .await
    .map_err(|_| Error::ConnectTimeout(within))?
}

async fn connect_inner(
    settings: DiscordConfig,
    info: RunInfo,
    console: &Console,
) -> Result<Discord, Error> {
    // The bot token itself never reaches Discord in a message (the agent
    // may have read it from somewhere); the run adds its other secrets
    // later.
    let redactor = Redactor::default().with_secrets([settings.token.expose_secret().to_owned()]);
    let starter = Starter::prepare(
        &settings.api_base,
        &settings.token,
        settings.identify_reserve,
        settings.connect_timeout,
        redactor.clone(),
    )
    .await?;
    let nonce = Nonce::random();
    let link = open_link(&starter, settings.use_hub, &nonce, console).await?;
    match post_start(&starter.rest, &settings, &redactor, &info).await {
        Ok((start_message_id, thread_id, guild_id)) => Ok(Discord {
            starter,
            link,
            redactor,
            info,
            approvers: Approvers {
                users: settings.approvers,
                roles: settings.approver_roles,
            },
            nonce,
            ping: settings.ping,
            remind: settings.remind,
            channel_id: settings.channel_id,
            start_message_id,
            thread_id,
            guild_id,
        }),
        Err(e) => {
            link.shutdown(gateway::SHUTDOWN_GRACE).await;
            Err(e)
        }
    }
}

/// This host's hub when one is listening (and `--no-hub` was not given),
/// else a session of the run's own.
async fn open_link(
    starter: &Starter,
    use_hub: bool,
    nonce: &Nonce,
    console: &Console,
) -> Result<Link, Error> {
    if use_hub {
        match hub::attach(&local::state_dir(), starter.application_id, nonce).await {
            Ok(Some(attachment)) => {
                console.status("using this host's gatekeep hub for Discord clicks");
                return Ok(Link::Hub(attachment));
            }
            Ok(None) => {}
            Err(why) => console.error(&format!(
                "discord: not using the gatekeep hub ({why}); opening a gateway session of this run's own"
            )),
        }
    }
    Ok(Link::Own(starter.start(console).await?))
}

/// Posts the run-start message and creates the thread from it.
async fn post_start(
    rest: &Rest,
    settings: &DiscordConfig,
    redactor: &Redactor,
    info: &RunInfo,
) -> Result<(u64, u64, Option<u64>), Error> {
    let channel = settings.channel_id;
    let payload = render::run_start(info, redactor, SystemTime::now(), &settings.ping);
    let message = rest
        .send(
            "post the run-start message",
            &format!("post:{channel}"),
            Method::POST,
            &format!("/channels/{channel}/messages"),
            Body::Json(&payload),
            Retry::DELIVERY,
        )
        .await
        .map_err(|source| Error::StartMessage { channel, source })?;
    let message_id = id_of(&message).ok_or_else(|| Error::StartMessage {
        channel,
        source: RestError::Status {
            what: "post the run-start message",
            status: 200,
            message: "no message id in the response".into(),
        },
    })?;
    let thread_body =
        json!({ "name": render::thread_name(info, redactor), "auto_archive_duration": 1440 });
    let thread = rest
        .send(
            "create the run's thread",
            &format!("thread:{channel}"),
            Method::POST,
            &format!("/channels/{channel}/messages/{message_id}/threads"),
            Body::Json(&thread_body),
            Retry::DELIVERY,
        )
        .await
        .map_err(|source| Error::Thread { channel, source })?;
    let thread_id = id_of(&thread).ok_or_else(|| Error::Thread {
        channel,
        source: RestError::Status {
            what: "create the run's thread",
            status: 200,
            message: "no channel id in the response".into(),
        },
    })?;
    // The thread's guild: for links to request messages (reminders).
    let guild_id = thread["guild_id"].as_str().and_then(|g| g.parse().ok());
    Ok((message_id, thread_id, guild_id))
}

//! Connecting: our own gateway lookup (serenity never falls back to the real
//! gateway), the gateway's READY, then the run-start message and its
//! thread, all within one bound. Nothing reaches the agent before this
//! succeeded.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;

use super::clicks::{Approvers, Nonce};
use super::gateway;
use super::outbox::id_of;
use super::render;
use super::rest::{Body, Rest, RestError, Retry};
use super::{Discord, Error, RunInfo, Settings};
use crate::redact::Redactor;

/// Everything `connect` may take, at most: gateway lookup, READY, start
/// message and thread.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// READY must come within this after the websocket is opened.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn connect(settings: Settings, info: RunInfo) -> Result<Discord, Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(settings, info))
        .await
        .map_err(|_| Error::ConnectTimeout(CONNECT_TIMEOUT))?
}

async fn connect_inner(mut settings: Settings, info: RunInfo) -> Result<Discord, Error> {
    // Whatever the caller configured, the bot token itself never reaches
    // Discord in a message (the agent may have read it from somewhere).
    settings.redactor = settings
        .redactor
        .with_secrets([settings.token.expose_secret().to_owned()]);
    let base = settings.api_base.trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&base).map_err(|e| Error::ApiUrl {
        url: base.clone(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::ApiUrl {
            url: base,
            reason: "expected http(s)://host[:port]".into(),
        });
    }
    let rest = Arc::new(Rest::new(&base, &settings.token).map_err(Error::Rest)?);
    let bot = rest
        .gateway_bot()
        .await
        .map_err(|source| Error::GatewayLookup {
            base: base.clone(),
            source,
        })?;
    // Never be the session start that makes Discord reset the token.
    if let Some(budget) = bot.budget {
        if budget.remaining <= u64::from(settings.identify_reserve) {
            return Err(Error::SessionBudget {
                budget,
                reserve: settings.identify_reserve,
            });
        }
    }
    let ws_url = bot.url;
    if !(ws_url.starts_with("ws://") || ws_url.starts_with("wss://")) {
        return Err(Error::GatewayUrl { base, url: ws_url });
    }
    let gateway = gateway::start(&base, &settings.token, ws_url, READY_TIMEOUT)
        .await
        .map_err(|e| redact_error(&settings.redactor, e))?;
    match post_start(&rest, &settings, &info).await {
        Ok((start_message_id, thread_id, guild_id)) => Ok(Discord {
            rest,
            gateway,
            redactor: settings.redactor,
            info,
            approvers: Approvers {
                users: settings.approvers,
                roles: settings.approver_roles,
            },
            nonce: Nonce::random(),
            ping: settings.ping,
            remind: settings.remind,
            channel_id: settings.channel_id,
            start_message_id,
            thread_id,
            guild_id,
        }),
        Err(e) => {
            gateway.shutdown().await;
            Err(e)
        }
    }
}

/// Gateway errors come from serenity's text; make sure no secret rides
/// along in them.
fn redact_error(redactor: &Redactor, e: Error) -> Error {
    match e {
        Error::Gateway(msg) => Error::Gateway(redactor.redact(&msg).into_owned()),
        other => other,
    }
}

/// Posts the run-start message and creates the thread from it.
async fn post_start(
    rest: &Rest,
    settings: &Settings,
    info: &RunInfo,
) -> Result<(u64, u64, Option<u64>), Error> {
    let channel = settings.channel_id;
    let payload = render::run_start(info, &settings.redactor, SystemTime::now(), &settings.ping);
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
    let thread_body = json!({ "name": render::thread_name(info, &settings.redactor), "auto_archive_duration": 1440 });
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

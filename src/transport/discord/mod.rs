//! The Discord approval channel: a run-start message with a thread, one
//! message per request with Approve / Deny / Deny-with-reason buttons, and
//! the clicks relayed to the approval task.
//!
//! ```text
//!   connect: GET /gateway (ours, no fallback) → gateway READY → start message → thread
//!   serve:   Notice ─► Outbox task ─POST/PATCH (rate limited, bounded retries)─► Discord
//!            gateway ─interaction─► click dispatcher ─ack (≤3 s)─► authorize ─► Decider
//! ```
//!
//! - [`render`]: every payload, as pure functions (snapshot-tested).
//! - [`clicks`]: the `custom_id` codec (per-run nonce) and authorization.
//! - [`rest`]: REST calls with rate limits and bounded retries.
//! - [`outbox`]: the one task that posts and edits messages, in order.
//! - [`gateway`]: serenity's gateway connection, guarded against its
//!   fallbacks.

pub mod clicks;
mod gateway;
mod outbox;
pub mod render;
pub mod rest;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use serenity::all::{ActionRowComponent, ComponentInteractionDataKind, Interaction};
use tokio::sync::mpsc;

use self::clicks::{Action, Approvers, Clicker, Nonce, Refusal};
use self::outbox::{id_of, Groups, Job, Outbox};
use self::rest::{Body, Rest, RestError, Retry};
use crate::approval::messages::{DecideOutcome, Decider, Notice};
use crate::approval::{Actor, Channel, Settlement, Shown, Verdict};
use crate::console::Console;
use crate::redact::Redactor;

/// Everything `connect` may take, at most: gateway lookup, READY, start
/// message and thread.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// READY must come within this after the websocket is opened.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// After the run ended, how long the outbox may take to deliver what is
/// still queued (final states, summary, start-message edit).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How to reach Discord and who may answer.
pub struct Settings {
    /// Bot token (`DISCORD_TOKEN`). Exposed only to build the
    /// `Authorization` header and serenity's IDENTIFY.
    pub token: SecretString,
    /// Scheme and host of the API, `https://discord.com` unless overridden
    /// (`--discord-api-url`, for tests). REST goes to `{api_base}/api/v10`.
    pub api_base: String,
    pub channel_id: u64,
    pub approvers: Vec<u64>,
    pub approver_roles: Vec<u64>,
    pub redactor: Redactor,
}

/// What the run-start message says about the run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub title: String,
    pub workspace: String,
    pub host: String,
    pub model: Option<String>,
    pub opencode_version: Option<String>,
    /// E.g. the GitHub Actions job URL.
    pub ci: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Discord API URL {url:?}: {reason}")]
    ApiUrl { url: String, reason: String },
    #[error("Discord gateway lookup at {base}/api/v10/gateway failed ({source}); refusing to fall back to another gateway")]
    GatewayLookup { base: String, source: RestError },
    #[error("Discord gateway lookup at {base} returned an unusable URL {url:?}")]
    GatewayUrl { base: String, url: String },
    #[error("Discord gateway connection failed: {0}")]
    Gateway(String),
    #[error("the Discord gateway did not become ready within {}", humantime::format_duration(*.0))]
    ReadyTimeout(Duration),
    #[error("could not post the run-start message in channel {channel}: {source}")]
    StartMessage { channel: u64, source: RestError },
    #[error("could not create the run's thread in channel {channel}: {source}")]
    Thread { channel: u64, source: RestError },
    #[error("connecting to Discord took longer than {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    #[error("Discord: {0}")]
    Rest(RestError),
}

/// A connected Discord channel, ready to [`serve`](Discord::serve).
pub struct Discord {
    rest: Arc<Rest>,
    gateway: gateway::Gateway,
    redactor: Redactor,
    info: RunInfo,
    approvers: Approvers,
    nonce: Nonce,
    channel_id: u64,
    start_message_id: u64,
    thread_id: u64,
}

impl std::fmt::Debug for Discord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discord")
            .field("channel_id", &self.channel_id)
            .field("thread_id", &self.thread_id)
            .finish_non_exhaustive()
    }
}

/// Connects: gateway lookup (never falling back), gateway READY, the
/// run-start message and its thread. Bounded by [`CONNECT_TIMEOUT`].
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
    let ws_url = rest
        .gateway_url()
        .await
        .map_err(|source| Error::GatewayLookup {
            base: base.clone(),
            source,
        })?;
    if !(ws_url.starts_with("ws://") || ws_url.starts_with("wss://")) {
        return Err(Error::GatewayUrl { base, url: ws_url });
    }
    let gateway = gateway::start(&base, &settings.token, ws_url, READY_TIMEOUT)
        .await
        .map_err(|e| redact_error(&settings.redactor, e))?;
    match post_start(&rest, &settings, &info).await {
        Ok((start_message_id, thread_id)) => Ok(Discord {
            rest,
            gateway,
            redactor: settings.redactor,
            info,
            approvers: Approvers {
                users: settings.approvers,
                roles: settings.approver_roles,
            },
            nonce: Nonce::random(),
            channel_id: settings.channel_id,
            start_message_id,
            thread_id,
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
async fn post_start(rest: &Rest, settings: &Settings, info: &RunInfo) -> Result<(u64, u64), Error> {
    let channel = settings.channel_id;
    let payload = render::run_start(info, &settings.redactor, SystemTime::now());
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
    Ok((message_id, thread_id))
}

impl Discord {
    /// Also redact `more`'s secrets: the OpenCode password only exists once
    /// the server started, after [`connect`].
    pub fn redact_also(&mut self, more: &Redactor) {
        self.redactor = self.redactor.merged(more);
    }

    /// The run's thread (where requests are posted and clicks must come from).
    #[must_use]
    pub fn thread_id(&self) -> u64 {
        self.thread_id
    }

    /// Shows requests and relays clicks until [`Notice::RunEnded`] was
    /// processed (summary posted, start message edited) or `notices`
    /// closes. Every wait is bounded.
    pub async fn serve(
        self,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        decider: Decider,
        console: Console,
    ) -> Result<(), Error> {
        let Discord {
            rest,
            mut gateway,
            redactor,
            info,
            approvers,
            nonce,
            channel_id,
            start_message_id,
            thread_id,
        } = self;
        let clicks = Arc::new(ClickContext {
            rest: Arc::clone(&rest),
            nonce: nonce.clone(),
            thread_id,
            approvers,
            application_id: gateway.application_id,
            decider: decider.clone(),
            settled: Mutex::new(HashMap::new()),
            groups: Groups::default(),
            questions: Mutex::new(HashMap::new()),
            redactor: redactor.clone(),
            console: console.clone(),
        });
        let interactions =
            std::mem::replace(&mut gateway.interactions, mpsc::unbounded_channel().1);
        let dispatcher = tokio::spawn(dispatch_clicks(Arc::clone(&clicks), interactions));

        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            rest,
            redactor,
            nonce,
            info,
            channel_id,
            start_message_id,
            thread_id,
            decider,
            groups: Arc::clone(&clicks.groups),
            console: console.clone(),
        };
        let outbox = tokio::spawn(outbox.run(jobs_rx));

        let mut state = ServeState {
            jobs: jobs.clone(),
            clicks: Arc::clone(&clicks),
            open: HashSet::new(),
            gateway_lost: None,
        };
        let mut ended = gateway.ended.clone();
        let report = loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(Notice::RunEnded(report)) => break Some(report),
                    Some(notice) => state.on_notice(notice).await,
                    None => break None,
                },
                _ = ended.changed(), if state.gateway_lost.is_none() => {
                    let why = ended.borrow().clone();
                    state.on_gateway_lost(why).await;
                }
            }
        };
        let _ = jobs.send(Job::Finish(report));
        drop((jobs, state));
        if tokio::time::timeout(DRAIN_TIMEOUT, outbox).await.is_err() {
            console.error(&format!(
                "discord: gave up updating messages after {}",
                humantime::format_duration(DRAIN_TIMEOUT)
            ));
        }
        dispatcher.abort();
        gateway.shutdown().await;
        Ok(())
    }
}

/// What `serve` tracks between notices.
struct ServeState {
    /// To the outbox task.
    jobs: mpsc::UnboundedSender<Job>,
    clicks: Arc<ClickContext>,
    /// Shown and not yet settled.
    open: HashSet<u32>,
    /// Why the gateway is gone for good, once it is: no click can arrive
    /// any more, so nothing may wait for one.
    gateway_lost: Option<String>,
}

impl ServeState {
    async fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Show(request) => {
                let number = request.number;
                if request.ask.is_question() {
                    // Before posting, so a fast click finds its labels.
                    self.clicks.remember_question(&request);
                }
                let _ = self.jobs.send(Job::Show(request));
                match &self.gateway_lost {
                    Some(why) => {
                        self.clicks
                            .decider
                            .channel_failed(number, why.clone())
                            .await;
                    }
                    None => {
                        self.open.insert(number);
                    }
                }
            }
            Notice::Settled {
                number, settlement, ..
            } => {
                self.open.remove(&number);
                self.clicks.mark_settled(number, &settlement);
                self.clicks.forget_question(number);
                let _ = self.jobs.send(Job::Settled {
                    number,
                    settlement,
                    at: SystemTime::now(),
                });
            }
            Notice::Decided {
                request,
                settlement,
            } => {
                // Posted and settled in one go: nothing to click.
                let number = request.number;
                self.clicks.mark_settled(number, &settlement);
                let _ = self.jobs.send(Job::Show(request));
                let _ = self.jobs.send(Job::Settled {
                    number,
                    settlement,
                    at: SystemTime::now(),
                });
            }
            Notice::Refused { .. } | Notice::Undelivered { .. } | Notice::RunEnded(_) => {}
        }
    }

    /// Fail closed: every open request is denied as a channel failure
    /// rather than left to wait for a click that cannot come.
    async fn on_gateway_lost(&mut self, why: Option<String>) {
        let why = format!(
            "the Discord gateway connection ended: {}",
            why.unwrap_or_else(|| "the gateway task stopped".into())
        );
        self.clicks
            .console
            .error(&format!("discord: {why}; open requests are denied"));
        for number in std::mem::take(&mut self.open) {
            self.clicks
                .decider
                .channel_failed(number, why.clone())
                .await;
        }
        self.gateway_lost = Some(why);
    }
}

/// What the click handlers share. `settled` is written by `serve` (on
/// `Notice::Settled`) and read by handlers; the lock is only held for a
/// lookup or insert, never across an await.
struct ClickContext {
    rest: Arc<Rest>,
    nonce: Nonce,
    thread_id: u64,
    approvers: Approvers,
    application_id: u64,
    decider: Decider,
    settled: Mutex<HashMap<u32, Settlement>>,
    /// Group messages: group id → request numbers (written by the outbox).
    groups: Groups,
    /// Open questions, by number: where an answer's labels come from
    /// (never from the click payload).
    questions: Mutex<HashMap<u32, Shown>>,
    /// For the answer modal, which repeats agent text.
    redactor: Redactor,
    /// Where failures to answer a click are reported.
    console: Console,
}

impl ClickContext {
    fn mark_settled(&self, number: u32, settlement: &Settlement) {
        if let Ok(mut map) = self.settled.lock() {
            map.insert(number, settlement.clone());
        }
    }

    fn group_members(&self, group: u32) -> Vec<u32> {
        self.groups
            .lock()
            .ok()
            .and_then(|map| map.get(&group).cloned())
            .unwrap_or_default()
    }

    fn remember_question(&self, request: &Shown) {
        if let Ok(mut map) = self.questions.lock() {
            map.insert(request.number, request.clone());
        }
    }

    fn forget_question(&self, number: u32) {
        if let Ok(mut map) = self.questions.lock() {
            map.remove(&number);
        }
    }

    fn question(&self, number: u32) -> Option<Shown> {
        self.questions
            .lock()
            .ok()
            .and_then(|map| map.get(&number).cloned())
    }

    fn settlement_of(&self, number: u32) -> Option<Settlement> {
        self.settled
            .lock()
            .ok()
            .and_then(|map| map.get(&number).cloned())
    }
}

/// One of this run's clicks (or modal submissions), taken from the payload.
#[derive(Debug)]
struct Click {
    interaction_id: u64,
    token: String,
    number: u32,
    action: Action,
    clicker: Clicker,
    actor: Actor,
    reason: Option<String>,
    /// The values chosen in a select menu: request numbers in a group
    /// message, option indexes in a question.
    selected: Vec<u32>,
    /// A submitted modal's `(input id, value)` pairs.
    texts: Vec<(String, String)>,
}

/// Receives every interaction the bot gets, drops those of other runs
/// without answering, and handles each of ours in its own task so a slow
/// decision never delays another click's acknowledgement.
async fn dispatch_clicks(
    ctx: Arc<ClickContext>,
    mut interactions: mpsc::UnboundedReceiver<Interaction>,
) {
    while let Some(interaction) = interactions.recv().await {
        if let Some(click) = parse_click(&ctx.nonce, &interaction) {
            tokio::spawn(handle_click(Arc::clone(&ctx), click));
        }
    }
}

fn parse_click(nonce: &Nonce, interaction: &Interaction) -> Option<Click> {
    let mut selected = Vec::new();
    let mut texts = Vec::new();
    let (id, token, custom_id, member, user, channel_id, reason) = match interaction {
        Interaction::Component(c) => {
            if let ComponentInteractionDataKind::StringSelect { values } = &c.data.kind {
                selected = values.iter().filter_map(|v| v.parse().ok()).collect();
            }
            (
                c.id,
                &c.token,
                &c.data.custom_id,
                c.member.as_ref(),
                &c.user,
                c.channel_id,
                None,
            )
        }
        Interaction::Modal(m) => {
            texts = m
                .data
                .components
                .iter()
                .flat_map(|row| row.components.iter())
                .filter_map(|c| match c {
                    ActionRowComponent::InputText(t) => {
                        Some((t.custom_id.clone(), t.value.clone()?))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>();
            let reason = texts
                .iter()
                .find(|(id, _)| id == "reason")
                .map(|(_, v)| v.clone());
            (
                m.id,
                &m.token,
                &m.data.custom_id,
                m.member.as_ref(),
                &m.user,
                m.channel_id,
                reason,
            )
        }
        _ => return None,
    };
    let (number, action) = clicks::decode(nonce, custom_id)?;
    let is_modal = matches!(interaction, Interaction::Modal(_));
    if is_modal != action.is_modal_submission() {
        return None;
    }
    let name = member
        .and_then(|m| m.nick.clone())
        .or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone());
    Some(Click {
        interaction_id: id.get(),
        token: token.clone(),
        number,
        action,
        clicker: Clicker {
            user_id: user.id.get(),
            roles: member.map(|m| m.roles.iter().map(|r| r.get()).collect()),
            permissions: member.and_then(|m| m.permissions).map(|p| p.bits()),
            channel_id: channel_id.get(),
        },
        actor: Actor {
            channel: Channel::Discord,
            id: user.id.get().to_string(),
            name,
        },
        reason,
        selected,
        texts,
    })
}

/// Acknowledges first (Discord's 3 s), then acts. Authorization needs only
/// the payload, so the acknowledgement already carries the answer for
/// refused and settled clicks.
async fn handle_click(ctx: Arc<ClickContext>, click: Click) {
    let callback = format!(
        "/interactions/{}/{}/callback",
        click.interaction_id, click.token
    );
    // Interaction callbacks are not limited per bot: one bucket each, so a
    // 429 on one click never delays another's acknowledgement.
    let bucket = format!("interaction:{}", click.interaction_id);
    let ack = |payload: serde_json::Value| {
        let ctx = Arc::clone(&ctx);
        let callback = callback.clone();
        let bucket = bucket.clone();
        async move {
            ctx.rest
                .send(
                    "acknowledge a click",
                    &bucket,
                    Method::POST,
                    &callback,
                    Body::Json(&payload),
                    Retry::ACK,
                )
                .await
        }
    };
    if let Err(refusal) = clicks::authorize(&ctx.approvers, ctx.thread_id, &click.clicker) {
        let text = match refusal {
            Refusal::WrongChannel => "Not authorized: this button is not in this run's thread.",
            Refusal::NotApprover => "Not authorized: you are not an approver for this run.",
        };
        report_ack(&ctx.console, ack(render::ephemeral(text)).await);
        // Recorded for the audit log; changes nothing.
        let number = match click.action {
            Action::ApproveSelected
            | Action::DenySelected
            | Action::ApproveAll
            | Action::DenyAll => None,
            _ => Some(click.number),
        };
        ctx.decider
            .refused(number, click.actor.clone(), text.to_owned())
            .await;
        return;
    }
    if click.action.is_for_question() {
        answer_question(&ctx, &click, ack).await;
        return;
    }
    let single = match click.action {
        Action::ApproveSelected | Action::ApproveAll => Some((Verdict::Approve, true)),
        Action::DenySelected | Action::DenyAll => Some((Verdict::Deny { reason: None }, true)),
        Action::Approve => Some((Verdict::Approve, false)),
        Action::ApproveAndTrust => Some((Verdict::ApproveAndTrust, false)),
        Action::Deny => Some((Verdict::Deny { reason: None }, false)),
        Action::ReasonSubmitted => Some((
            Verdict::Deny {
                reason: click
                    .reason
                    .clone()
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty()),
            },
            false,
        )),
        Action::DenyWithReason
        | Action::Pick(_)
        | Action::PickSelected
        | Action::AnswerInWords
        | Action::AnswerSubmitted
        | Action::Dismiss => None,
    };
    let Some((verdict, is_group)) = single else {
        // "Deny with reason…": the modal is the acknowledgement.
        let answer = match ctx.settlement_of(click.number) {
            Some(settlement) => render::ephemeral(&already_decided(&settlement)),
            None => render::reason_modal(&ctx.nonce, click.number),
        };
        report_ack(&ctx.console, ack(answer).await);
        return;
    };
    if is_group {
        report_ack(&ctx.console, ack(render::deferred_ephemeral()).await);
        let text = decide_group(&ctx, &click, verdict).await;
        followup(&ctx, &click, &text).await;
        return;
    }
    if let Some(settlement) = ctx.settlement_of(click.number) {
        report_ack(
            &ctx.console,
            ack(render::ephemeral(&already_decided(&settlement))).await,
        );
        return;
    }
    // A failed acknowledgement does not void the human's decision: the
    // approval message shows the outcome either way.
    report_ack(&ctx.console, ack(render::deferred_ephemeral()).await);
    let outcome = ctx
        .decider
        .decide(click.number, verdict, click.actor.clone())
        .await;
    if let DecideOutcome::Accepted(settlement) = &outcome {
        ctx.mark_settled(click.number, settlement);
    }
    followup(&ctx, &click, &outcome_text(&outcome)).await;
}

/// A click on a question (an option, the select menu, the answer modal,
/// Dismiss), already authorized. The answer's labels come from the pending
/// request; one that does not fit is refused privately and consumes
/// nothing.
async fn answer_question<F, Fut>(ctx: &ClickContext, click: &Click, ack: F)
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, RestError>>,
{
    if let Some(settlement) = ctx.settlement_of(click.number) {
        report_ack(
            &ctx.console,
            ack(render::ephemeral(&already_decided(&settlement))).await,
        );
        return;
    }
    let Some(request) = ctx.question(click.number) else {
        // Not an open question of this run: a permission request (whose
        // decision a question's answer can never be), or unknown.
        report_ack(
            &ctx.console,
            ack(render::ephemeral(&outcome_text(&DecideOutcome::WrongKind))).await,
        );
        return;
    };
    let verdict = match click.action {
        Action::AnswerInWords => {
            // The modal is the acknowledgement.
            report_ack(
                &ctx.console,
                ack(render::answer_modal(&request, &ctx.redactor, &ctx.nonce)).await,
            );
            return;
        }
        Action::Dismiss => Verdict::Deny { reason: None },
        action => {
            let Some(answers) = clicks::answer_of(&request, action, &click.selected, &click.texts)
            else {
                let text = "That answer does not fit the question: nothing was sent. Choose one of its options, or type an answer it accepts.";
                report_ack(&ctx.console, ack(render::ephemeral(text)).await);
                return;
            };
            Verdict::Answer { answers }
        }
    };
    report_ack(&ctx.console, ack(render::deferred_ephemeral()).await);
    let outcome = ctx
        .decider
        .decide(click.number, verdict, click.actor.clone())
        .await;
    let text = match &outcome {
        DecideOutcome::Accepted(settlement) => {
            ctx.mark_settled(click.number, settlement);
            if click.action == Action::Dismiss {
                "Dismissed: the agent was told no answer is coming.".to_owned()
            } else {
                outcome_text(&outcome)
            }
        }
        _ => outcome_text(&outcome),
    };
    followup(ctx, click, &text).await;
}

/// Replaces the deferred private answer with `text`.
async fn followup(ctx: &ClickContext, click: &Click, text: &str) {
    let path = format!(
        "/webhooks/{}/{}/messages/@original",
        ctx.application_id, click.token
    );
    // Webhook limits are per interaction token; the bucket is named by the
    // interaction id so no token is kept around.
    let bucket = format!("webhook:{}", click.interaction_id);
    if let Err(e) = ctx
        .rest
        .send(
            "answer a click",
            &bucket,
            Method::PATCH,
            &path,
            Body::Json(&render::followup_edit(text)),
            Retry::DELIVERY,
        )
        .await
    {
        ctx.console.error(&format!("discord: {e}"));
    }
}

/// Decides the chosen (or all open) requests of a group, one after the
/// other; returns the clicker's private summary.
async fn decide_group(ctx: &ClickContext, click: &Click, verdict: Verdict) -> String {
    let members = ctx.group_members(click.number);
    let numbers: Vec<u32> = match click.action {
        Action::ApproveAll | Action::DenyAll => members
            .iter()
            .copied()
            .filter(|n| ctx.settlement_of(*n).is_none())
            .collect(),
        _ => click
            .selected
            .iter()
            .copied()
            .filter(|n| members.contains(n))
            .collect(),
    };
    if numbers.is_empty() {
        return "Nothing left to decide in this group.".into();
    }
    let mut lines = Vec::new();
    for number in numbers {
        let outcome = match ctx.settlement_of(number) {
            Some(settlement) => DecideOutcome::AlreadyDecided(settlement),
            None => {
                ctx.decider
                    .decide(number, verdict.clone(), click.actor.clone())
                    .await
            }
        };
        if let DecideOutcome::Accepted(settlement) = &outcome {
            ctx.mark_settled(number, settlement);
        }
        lines.push(format!("#{number}: {}", outcome_text(&outcome)));
    }
    lines.join("\n")
}

fn report_ack(console: &Console, result: Result<serde_json::Value, RestError>) {
    if let Err(e) = result {
        console.error(&format!("discord: {e}"));
    }
}

fn already_decided(settlement: &Settlement) -> String {
    format!(
        "Already decided: {}",
        render::escape_markdown(&settlement.to_string())
    )
}

/// The clicker's private answer after a decision was sent.
fn outcome_text(outcome: &DecideOutcome) -> String {
    match outcome {
        DecideOutcome::Accepted(Settlement::ApprovedAndTrusted { .. }) => {
            "Approved, and trusted for the rest of this run: OpenCode was told to go ahead.".into()
        }
        DecideOutcome::Accepted(Settlement::Answered { .. }) => {
            "Answered: the agent received your answer.".into()
        }
        DecideOutcome::Accepted(s) if s.is_approved() => {
            "Approved: OpenCode was told to go ahead.".into()
        }
        DecideOutcome::Accepted(_) => "Denied: OpenCode was told no.".into(),
        DecideOutcome::AlreadyDecided(s) => already_decided(s),
        DecideOutcome::InProgress => {
            "Another decision on this request is being sent right now.".into()
        }
        DecideOutcome::Unknown => "This request is not known to this run.".into(),
        DecideOutcome::RunEnded => {
            "The run is ending: nothing more is forwarded to OpenCode.".into()
        }
        DecideOutcome::WrongKind => {
            "That answer does not fit this request (a question is answered, a permission approved or denied).".into()
        }
        DecideOutcome::Failed(e) => format!(
            "Could not deliver the decision to OpenCode: {}",
            render::escape_markdown(e)
        ),
    }
}

//! The Discord approval channel: a run-start message with a thread, one
//! message per request with Approve / Deny / Deny-with-reason buttons, and
//! the clicks relayed to the approval task.
//!
//! ```text
//!   connect: application id → the host's hub, or a session of our own (host slot →
//!            GET /gateway/bot budget → IDENTIFY → READY) → start message → thread
//!   serve:   Notice ─► Outbox task ─POST/PATCH (rate limited, bounded retries)─► Discord
//!            gateway or hub ─interaction─► click dispatcher ─ack (≤3 s)─► authorize ─► Decider
//! ```
//!
//! - [`render`]: every payload, as pure functions (snapshot-tested).
//! - [`connect`]: the gateway, the run-start message and its thread.
//! - [`clicks`]: the `custom_id` codec (per-run nonce), authorization and
//!   the reading of answers, as pure functions.
//! - `interactions`: the click dispatcher: acknowledge, authorize, decide.
//! - [`rest`]: REST calls with rate limits and bounded retries.
//! - [`outbox`]: the one task that posts and edits messages, in order.
//! - [`gateway`]: the gateway connection (IDENTIFY or RESUME, heartbeats,
//!   a normal close the moment it is asked for).
//! - [`session`]: when a gateway session may start (the host's slot, the
//!   daily budget).
//! - [`hub`]: `gatekeep hub`, one session for every run on a host, and a
//!   run's attachment to it.

pub mod clicks;
mod connect;
mod gateway;
pub mod hub;
mod interactions;
mod outbox;
pub mod render;
pub mod rest;
pub mod session;

pub use connect::connect;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serenity::all::Interaction;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::clicks::{Approvers, Nonce};
use self::interactions::{dispatch_clicks, ClickContext};
use self::outbox::{Groups, Job, Outbox};
use self::rest::RestError;
use crate::approval::messages::{Decider, Notice};
use crate::config::Ping;
use crate::console::Console;
use crate::redact::Redactor;

/// After the run ended, how long the outbox may take to deliver what is
/// still queued (final states, summary, start-message edit).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the run's exit waits for Discord's answer to the gateway's
/// normal close. The close frame itself went out when the run started
/// closing (`Notice::Closing`), so the session is ended properly either
/// way; the answer normally came during the teardown, and waiting longer
/// for it would only delay the exit (issue 16).
const CLOSE_AFTER_RUN: Duration = Duration::from_millis(50);

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
    /// The policy file in use, and whether it had uncommitted changes.
    pub policy: Option<(String, bool)>,
    /// What the run gives up of gatekeep's protections (`--no-isolate`, …).
    pub caveats: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Discord API URL {url:?}: {reason}")]
    ApiUrl { url: String, reason: String },
    #[error("Discord gateway lookup at {base}/api/v10/gateway/bot failed ({source}); refusing to fall back to another gateway")]
    GatewayLookup { base: String, source: RestError },
    #[error("Discord gateway lookup at {base} returned an unusable URL {url:?}")]
    GatewayUrl { base: String, url: String },
    #[error(
        "only {} of the bot's {} daily session starts are left (reserve: {reserve}); a run \
         never spends the last ones, since Discord resets the bot's token when none are left. \
         The budget is full again in {}: space the runs out, or lower --identify-reserve",
        .budget.remaining,
        .budget.total,
        humantime::format_duration(std::time::Duration::from_secs(.budget.reset_after.as_secs()))
    )]
    SessionBudget {
        budget: rest::SessionBudget,
        reserve: u32,
    },
    #[error(
        "could not read the bot's application at {base}/api/v10/oauth2/applications/@me ({source})"
    )]
    Application { base: String, source: RestError },
    #[error("could not take this host's Discord connection slot {}: {source}", .path.display())]
    Slot {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("gatekeep hub: {0}")]
    Hub(String),
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

/// Where a run's clicks come from.
enum Link {
    /// A gateway session of its own.
    Own(gateway::Gateway),
    /// This host's `gatekeep hub`.
    Hub(hub::Attachment),
}

impl Link {
    fn take_interactions(&mut self) -> mpsc::UnboundedReceiver<Interaction> {
        let slot = match self {
            Link::Own(gateway) => &mut gateway.interactions,
            Link::Hub(attachment) => &mut attachment.interactions,
        };
        std::mem::replace(slot, mpsc::unbounded_channel().1)
    }

    /// Becomes `Some(why)` when no more clicks can come this way.
    fn ended(&self) -> watch::Receiver<Option<String>> {
        match self {
            Link::Own(gateway) => gateway.ended.clone(),
            Link::Hub(attachment) => attachment.ended.clone(),
        }
    }

    fn begin_shutdown(&mut self) {
        if let Link::Own(gateway) = self {
            gateway.begin_shutdown();
        }
    }

    async fn shutdown(self, within: Duration) {
        if let Link::Own(gateway) = self {
            gateway.shutdown(within).await;
        }
    }
}

/// A connected Discord channel, ready to [`serve`](Discord::serve).
pub struct Discord {
    /// REST, and a session of the run's own if the hub goes away.
    starter: session::Starter,
    link: Link,
    redactor: Redactor,
    info: RunInfo,
    approvers: Approvers,
    nonce: Nonce,
    ping: Ping,
    remind: Option<Duration>,
    channel_id: u64,
    start_message_id: u64,
    thread_id: u64,
    guild_id: Option<u64>,
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
            starter,
            link,
            redactor,
            info,
            approvers,
            nonce,
            ping,
            remind,
            channel_id,
            start_message_id,
            thread_id,
            guild_id,
        } = self;
        let rest = Arc::clone(&starter.rest);
        let clicks = Arc::new(ClickContext {
            rest: Arc::clone(&rest),
            nonce: nonce.clone(),
            thread_id,
            approvers,
            application_id: starter.application_id,
            decider: decider.clone(),
            settled: Mutex::new(HashMap::new()),
            groups: Groups::default(),
            questions: Mutex::new(HashMap::new()),
            redactor: redactor.clone(),
            console: console.clone(),
        });
        let mut source = Source::new(link, &clicks);

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
            ping,
            guild_id,
        };
        let outbox = tokio::spawn(outbox.run(jobs_rx));

        let mut state = ServeState {
            jobs: jobs.clone(),
            clicks: Arc::clone(&clicks),
            open: HashSet::new(),
            gateway_lost: None,
            remind,
            reminders: BTreeMap::new(),
        };
        let report = loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(Notice::RunEnded(report)) => break Some(report),
                    // Nothing more will be decided: the gateway's normal
                    // close overlaps the teardown instead of following it.
                    Some(Notice::Closing(_)) => {
                        // Gone by our own choice: its end is no channel
                        // failure to report.
                        state.gateway_lost = Some("the run is closing".to_owned());
                        source.begin_shutdown();
                    }
                    Some(notice) => state.on_notice(notice).await,
                    None => break None,
                },
                () = reminder_due(&state.reminders), if !state.reminders.is_empty() => {
                    state.remind_due();
                }
                _ = source.ended.changed(), if state.gateway_lost.is_none() && source.reopening.is_none() => {
                    if let Some(lost) = source.on_ended(&starter, &console) {
                        state.on_gateway_lost(&lost).await;
                    }
                }
                opened = async { source.reopening.as_mut().expect("guarded").await }, if source.reopening.is_some() => {
                    if let Some(lost) = source.on_reopened(opened, &clicks, &console) {
                        state.on_gateway_lost(&lost).await;
                    }
                }
            }
        };
        let _ = jobs.send(Job::Finish(report));
        drop((jobs, state));
        let drained = async {
            if tokio::time::timeout(DRAIN_TIMEOUT, outbox).await.is_err() {
                console.error(&format!(
                    "discord: gave up updating messages after {}",
                    humantime::format_duration(DRAIN_TIMEOUT)
                ));
            }
        };
        // The bounded wait for the gateway's close overlaps the last
        // messages instead of following them: the exit waits for the longer
        // of the two, not their sum.
        tokio::join!(drained, source.shutdown(CLOSE_AFTER_RUN));
        Ok(())
    }
}

/// Where the clicks come from (the link), and the dispatcher reading them.
struct Source {
    link: Link,
    /// The link's end (see [`Link::ended`]).
    ended: watch::Receiver<Option<String>>,
    dispatcher: JoinHandle<()>,
    /// The hub went away: a session of the run's own, being opened.
    reopening: Option<JoinHandle<Result<gateway::Gateway, Error>>>,
}

impl Source {
    fn new(mut link: Link, clicks: &Arc<ClickContext>) -> Self {
        let dispatcher = tokio::spawn(dispatch_clicks(
            Arc::clone(clicks),
            link.take_interactions(),
        ));
        Self {
            ended: link.ended(),
            link,
            dispatcher,
            reopening: None,
        }
    }

    fn begin_shutdown(&mut self) {
        self.link.begin_shutdown();
        if let Some(task) = self.reopening.take() {
            task.abort();
        }
    }

    /// The link ended. A hub's end starts opening a session of our own
    /// (requests stay open meanwhile; a click made in the gap goes
    /// unanswered and can be made again); a session's end is the channel
    /// lost: `Some(why)`.
    fn on_ended(&mut self, starter: &session::Starter, console: &Console) -> Option<String> {
        let why = self.ended.borrow().clone();
        if !matches!(self.link, Link::Hub(_)) {
            return Some(why.unwrap_or_else(|| "the gateway task stopped".into()));
        }
        console.error(&format!(
            "discord: {}; opening a gateway session of this run's own",
            why.as_deref().unwrap_or("the gatekeep hub went away")
        ));
        let (starter, console) = (starter.clone(), console.clone());
        self.reopening = Some(tokio::spawn(async move { starter.start(&console).await }));
        None
    }

    /// The session of our own is open (clicks are read from it now), or
    /// could not be had: why the channel is lost.
    fn on_reopened(
        &mut self,
        opened: Result<Result<gateway::Gateway, Error>, tokio::task::JoinError>,
        clicks: &Arc<ClickContext>,
        console: &Console,
    ) -> Option<String> {
        self.reopening = None;
        match opened {
            Ok(Ok(gateway)) => {
                self.dispatcher.abort();
                *self = Source::new(Link::Own(gateway), clicks);
                console.status("connected to Discord with this run's own gateway session");
                None
            }
            Ok(Err(e)) => Some(format!(
                "the gatekeep hub went away and no session of this run's own could be opened: {e}"
            )),
            Err(_) => Some("the gatekeep hub went away".into()),
        }
    }

    /// Clicks are still acknowledged while the link closes (the run's
    /// last messages are being sent meanwhile).
    async fn shutdown(mut self, within: Duration) {
        if let Some(task) = self.reopening.take() {
            task.abort();
        }
        self.link.shutdown(within).await;
        self.dispatcher.abort();
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
    /// `--remind`, else half of each request's deadline.
    remind: Option<Duration>,
    /// Open requests not yet reminded of: when, and their deadline.
    reminders: BTreeMap<u32, (tokio::time::Instant, SystemTime)>,
}

/// When the earliest reminder is due.
async fn reminder_due(reminders: &BTreeMap<u32, (tokio::time::Instant, SystemTime)>) {
    match reminders.values().map(|(due, _)| *due).min() {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// How long after it starts waiting a request is reminded of: `--remind`,
/// else half its deadline when that is at least 2 minutes; never at or
/// after the deadline itself.
fn remind_after(remind: Option<Duration>, left: Duration) -> Option<Duration> {
    let after = match remind {
        Some(after) => after,
        None if left >= Duration::from_secs(120) => left / 2,
        None => return None,
    };
    (after < left).then_some(after)
}

impl ServeState {
    /// A reminder is due: it names every request still waiting that was
    /// not reminded of yet, so several waiting requests share one reply.
    fn remind_due(&mut self) {
        let waiting: Vec<(u32, SystemTime)> = std::mem::take(&mut self.reminders)
            .into_iter()
            .map(|(n, (_, deadline))| (n, deadline))
            .collect();
        if !waiting.is_empty() {
            let _ = self.jobs.send(Job::Remind(waiting));
        }
    }
}

impl ServeState {
    async fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Show(request) => {
                let number = request.number;
                let (left, deadline) = (request.deadline.left, request.deadline.wall);
                if request.ask.is_question() {
                    // Before posting, so a fast click finds its labels.
                    self.clicks.remember_question(&request);
                }
                let _ = self.jobs.send(Job::Show(request));
                if let Some(why) = &self.gateway_lost {
                    self.clicks
                        .decider
                        .channel_failed(number, why.clone())
                        .await;
                } else {
                    self.open.insert(number);
                    if let Some(after) = remind_after(self.remind, left) {
                        let due = tokio::time::Instant::now() + after;
                        self.reminders.insert(number, (due, deadline));
                    }
                }
            }
            Notice::Settled {
                number, settlement, ..
            } => {
                self.open.remove(&number);
                // No reminder once settled.
                self.reminders.remove(&number);
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
            Notice::Progress(progress) => {
                let _ = self.jobs.send(Job::Progress(progress));
            }
            Notice::Refused { .. }
            | Notice::Closing(_)
            | Notice::Intruded(_)
            | Notice::Undelivered { .. }
            | Notice::RunEnded(_) => {}
        }
    }

    /// Fail closed: every open request is denied as a channel failure
    /// rather than left to wait for a click that cannot come.
    async fn on_gateway_lost(&mut self, why: &str) {
        let why = format!("the Discord gateway connection ended: {why}");
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

//! A fake Discord on loopback: REST under `/api/v10` and a gateway
//! websocket (HELLO, IDENTIFY → READY, RESUME → RESUMED, heartbeats,
//! opcodes 7 and 9, close codes), complete enough for gatekeep.
//!
//! gatekeep reads interactions with serenity's model types and skips one
//! whose payload lacks a field they require, so every `READY` and
//! `INTERACTION_CREATE` this fake sends is first deserialized into
//! serenity's own type here (a test panics instead of waiting for an event
//! that was never delivered), and tests prove each dispatched click was
//! received by waiting for its acknowledgement.
//!
//! Control surface: [`FakeDiscord::click`], [`FakeDiscord::submit_modal`],
//! the recorded REST requests, injected failures (5xx, 429 with
//! Retry-After), an optional rate limit, closing the gateway, and wait
//! helpers that all take a timeout.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

pub const BOT_USER_ID: u64 = 1000;
pub const GUILD_ID: u64 = 3000;
/// The bot member's own role (`GET /guilds/{id}/members/{bot}`).
pub const BOT_ROLE_ID: u64 = 3100;
/// What the `@everyone` role grants unless a test changes it: exactly the
/// permissions gatekeep needs (view, send, embed links, create public
/// threads, send in threads).
pub const NEEDED_PERMISSIONS: u64 = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 35) | (1 << 38);

/// One REST request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The JSON body, or the `payload_json` part of a multipart body.
    pub body: Value,
    /// Files of a multipart body: (part name, filename, content).
    pub files: Vec<(String, String, Vec<u8>)>,
    pub at: Instant,
    /// The status the fake answered with.
    pub status: u16,
    pub authorization: Option<String>,
}

/// A message as it stands now (after edits).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: u64,
    pub channel_id: u64,
    pub payload: Value,
    pub edits: u32,
}

/// Who clicks.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: u64,
    pub name: String,
    pub roles: Vec<u64>,
    pub permissions: u64,
}

impl Member {
    pub fn new(user_id: u64) -> Self {
        Self {
            user_id,
            name: format!("user{user_id}"),
            roles: Vec::new(),
            permissions: 0,
        }
    }
    pub fn roles(mut self, roles: &[u64]) -> Self {
        self.roles = roles.to_vec();
        self
    }
    pub fn permissions(mut self, permissions: u64) -> Self {
        self.permissions = permissions;
        self
    }
}

struct Fault {
    status: u16,
    retry_after: Option<f64>,
    /// Only requests whose path contains this are affected.
    path_contains: String,
    remaining: u32,
}

struct RateLimit {
    path_contains: String,
    limit: u32,
    window: Duration,
    window_start: Instant,
    used: u32,
}

/// Everything the fake knows; its switches are independent test knobs.
#[derive(Default)]
#[allow(clippy::struct_excessive_bools)]
struct Inner {
    requests: Vec<Recorded>,
    messages: HashMap<u64, StoredMessage>,
    next_id: u64,
    faults: VecDeque<Fault>,
    rate_limit: Option<RateLimit>,
    gateway_lookup_status: Option<u16>,
    /// Injected slowness: (requests left, delay, path substring).
    delays: VecDeque<(u32, Duration, String)>,
    /// The gateway is gone for good: upgrades are refused.
    gateway_refused: bool,
    /// Every identified (or resumed) gateway connection: Discord sends each
    /// of a bot's sessions every interaction.
    gateways: Vec<Session>,
    identifies: u32,
    /// IDENTIFYs refused with opcode 9 (too early, see
    /// [`FakeDiscord::enforce_identify_spacing`]).
    invalid_sessions: u32,
    enforce_identify_spacing: bool,
    last_identify: Option<Instant>,
    /// An IDENTIFY came with no session starts left: Discord reset the
    /// token, so every REST call is refused from then on.
    token_reset: bool,
    resumes: u32,
    heartbeats: u32,
    /// The interval HELLO announces; `None` is Discord's usual 41.25 s.
    heartbeat_interval: Option<Duration>,
    /// Heartbeats are received but no longer acknowledged (a zombied
    /// connection, as a client sees one).
    heartbeats_unacked: bool,
    /// The close code of every close frame a client sent.
    client_closes: Vec<u16>,
    /// Interaction id → when it was dispatched.
    dispatched: HashMap<u64, Instant>,
    /// Interactions Discord never issued (made up by a test): their
    /// callbacks answer 404 "Unknown interaction".
    forged: std::collections::HashSet<u64>,
    /// The next interaction created is a forged one.
    forge_next: bool,
    /// Threads created, in order.
    threads: Vec<u64>,
    /// `@everyone`'s permissions; `None` means [`NEEDED_PERMISSIONS`].
    everyone_permissions: Option<u64>,
    /// `permission_overwrites` of every channel.
    overwrites: Vec<Value>,
    /// Who each posted message notified, as Discord computes it.
    pings: Vec<Ping>,
    /// `(thread, user)` added with `PUT /channels/{thread}/thread-members/{user}`.
    thread_members: Vec<(u64, u64)>,
    /// The bot's session starts left today; every IDENTIFY spends one.
    session_starts_left: u64,
}

/// Who one posted message notified: Discord notifies the users, roles and
/// `@everyone`/`@here` mentioned in its `content` (never in embeds) that
/// its `allowed_mentions` allows; editing a message notifies nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub message_id: u64,
    pub channel_id: u64,
    pub users: Vec<u64>,
    pub roles: Vec<u64>,
    pub everyone: bool,
}

/// Discord's rule for who a message's content pings.
fn pinged(body: &Value) -> (Vec<u64>, Vec<u64>, bool) {
    let content = body["content"].as_str().unwrap_or("");
    let mention = regex::Regex::new(r"<@(!|&)?(\d+)>").expect("regex");
    let allowed = body.get("allowed_mentions");
    let parse_allows = |kind: &str| match allowed {
        None => true,
        Some(a) => a["parse"]
            .as_array()
            .is_some_and(|p| p.iter().any(|v| v == kind)),
    };
    let listed = |kind: &str, id: u64| {
        allowed.is_some_and(|a| {
            a[kind]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(&id.to_string())))
        })
    };
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    for cap in mention.captures_iter(content) {
        let id: u64 = cap[2].parse().unwrap_or(0);
        let role = cap.get(1).is_some_and(|m| m.as_str() == "&");
        if role && (parse_allows("roles") || listed("roles", id)) && !roles.contains(&id) {
            roles.push(id);
        }
        if !role && (parse_allows("users") || listed("users", id)) && !users.contains(&id) {
            users.push(id);
        }
    }
    let everyone =
        (content.contains("@everyone") || content.contains("@here")) && parse_allows("everyone");
    (users, roles, everyone)
}

/// One live gateway connection and its own sequence number.
struct Session {
    tx: mpsc::UnboundedSender<Message>,
    seq: u64,
}

impl Session {
    fn frame(&mut self, t: &str, d: &Value) -> Message {
        self.seq += 1;
        Message::Text(
            json!({ "op": 0, "s": self.seq, "t": t, "d": d })
                .to_string()
                .into(),
        )
    }
}

/// Discord's rule: one IDENTIFY per 5 seconds per bucket; every gatekeep
/// session is shard 0 of 1, so bucket 0.
pub const IDENTIFY_INTERVAL: Duration = Duration::from_secs(5);

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    addr: SocketAddr,
    /// Each fake is another bot: a fresh application id, so runs against
    /// different fakes never share a host's identify lock or hub.
    application_id: u64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake discord state poisoned")
    }
    fn bump(&self) {
        self.changed.notify_waiters();
    }
}

/// A running fake Discord; stops when dropped.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

impl FakeDiscord {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake discord");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_id: 900_000,
                session_starts_left: 1000,
                ..Inner::default()
            }),
            changed: Notify::new(),
            addr,
            application_id: rand::random::<u64>() % 1_000_000_000_000 + 1_000_000_000_000,
        });
        let app = Router::new()
            .route("/gateway", get(gateway_upgrade))
            .fallback(rest)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake discord server");
        });
        Self { shared, server }
    }

    /// What gatekeep's `--discord-api-url` should be.
    /// The bot's application id (what the host's identify lock and hub
    /// are named after).
    pub fn application_id(&self) -> u64 {
        self.shared.application_id
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn gateway_url(&self) -> String {
        format!("ws://{}/gateway", self.shared.addr)
    }

    /// Permissions of the guild's `@everyone` role (`GET /guilds/{id}/roles`).
    pub fn set_everyone_permissions(&self, bits: u64) {
        self.shared.lock().everyone_permissions = Some(bits);
    }

    /// `permission_overwrites` answered with every channel.
    pub fn set_channel_overwrites(&self, overwrites: Vec<Value>) {
        self.shared.lock().overwrites = overwrites;
    }

    /// Make `GET /api/v10/gateway` (and `/gateway/bot`) answer `status`.
    pub fn fail_gateway_lookup(&self, status: u16) {
        self.shared.lock().gateway_lookup_status = Some(status);
    }

    /// The next `count` REST requests whose path contains `path_contains`
    /// get `status` (with `Retry-After` when given, for 429).
    pub fn fail_next(
        &self,
        count: u32,
        status: u16,
        retry_after: Option<f64>,
        path_contains: &str,
    ) {
        self.shared.lock().faults.push_back(Fault {
            status,
            retry_after,
            path_contains: path_contains.to_owned(),
            remaining: count,
        });
    }

    /// Emulates a Discord bucket: at most `limit` requests (path containing
    /// `path_contains`) per `window`, with rate-limit headers and 429s.
    pub fn rate_limit(&self, path_contains: &str, limit: u32, window: Duration) {
        self.shared.lock().rate_limit = Some(RateLimit {
            path_contains: path_contains.to_owned(),
            limit,
            window,
            window_start: Instant::now(),
            used: 0,
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests from index `start` on (the benchmark polls without
    /// cloning the whole history each time).
    pub fn requests_from(&self, start: usize) -> Vec<Recorded> {
        let inner = self.shared.lock();
        inner.requests.get(start..).unwrap_or_default().to_vec()
    }

    pub fn messages_in(&self, channel_id: u64) -> Vec<StoredMessage> {
        let mut v: Vec<_> = self
            .shared
            .lock()
            .messages
            .values()
            .filter(|m| m.channel_id == channel_id)
            .cloned()
            .collect();
        v.sort_by_key(|m| m.id);
        v
    }

    /// The id of the newest message in `channel_id` (no payload cloned).
    pub fn newest_message_id(&self, channel_id: u64) -> Option<u64> {
        let inner = self.shared.lock();
        inner
            .messages
            .values()
            .filter(|m| m.channel_id == channel_id)
            .map(|m| m.id)
            .max()
    }

    pub fn message(&self, id: u64) -> Option<StoredMessage> {
        self.shared.lock().messages.get(&id).cloned()
    }

    /// The threads created so far.
    /// How many session starts the bot has left today (default 1,000).
    pub fn set_session_starts_left(&self, left: u64) {
        self.shared.lock().session_starts_left = left;
    }

    /// Every notification a posted message caused, in order.
    pub fn pings(&self) -> Vec<Ping> {
        self.shared.lock().pings.clone()
    }

    /// Users added to threads, in order.
    pub fn thread_members(&self) -> Vec<(u64, u64)> {
        self.shared.lock().thread_members.clone()
    }

    pub fn threads(&self) -> Vec<u64> {
        self.shared.lock().threads.clone()
    }

    /// Waits for the first thread (a run's) to be created.
    pub async fn wait_thread(&self, timeout: Duration) -> u64 {
        self.wait_until("a thread", timeout, |f| f.threads().first().copied())
            .await
    }

    pub fn identifies(&self) -> u32 {
        self.shared.lock().identifies
    }

    pub fn resumes(&self) -> u32 {
        self.shared.lock().resumes
    }

    /// The next `count` REST requests whose path contains `path_contains`
    /// are answered only after `delay` (a slow Discord).
    pub fn delay_next(&self, count: u32, delay: Duration, path_contains: &str) {
        self.shared
            .lock()
            .delays
            .push_back((count, delay, path_contains.to_owned()));
    }

    /// The gateway goes away for good: the connection is closed and every
    /// reconnection attempt is refused (HTTP 503).
    pub fn kill_gateway(&self) {
        self.shared.lock().gateway_refused = true;
        self.close_gateway();
    }

    /// Closes the gateway connection with a resumable close code.
    pub fn close_gateway(&self) {
        self.close_gateway_with(4000);
    }

    /// Closes the gateway connection with close `code` (4004: authentication
    /// failed, which no client may resume).
    pub fn close_gateway_with(&self, code: u16) {
        let mut inner = self.shared.lock();
        close_all(&mut inner, code);
    }

    /// HELLO announces `interval` on every connection from now on.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.shared.lock().heartbeat_interval = Some(interval);
    }

    /// Heartbeats stop being acknowledged (`false`) or start again.
    pub fn acknowledge_heartbeats(&self, yes: bool) {
        self.shared.lock().heartbeats_unacked = !yes;
    }

    /// Heartbeats received on every connection so far.
    pub fn heartbeats(&self) -> u32 {
        self.shared.lock().heartbeats
    }

    /// Opcode 7 on every live session: Discord asks the client to
    /// reconnect and resume.
    pub fn ask_to_reconnect(&self) {
        let inner = self.shared.lock();
        for session in &inner.gateways {
            let _ = session.tx.send(Message::Text(
                json!({ "op": 7, "d": null }).to_string().into(),
            ));
        }
    }

    /// The close code of every close frame a client sent, in order.
    pub fn client_closes(&self) -> Vec<u16> {
        self.shared.lock().client_closes.clone()
    }

    /// From now on an IDENTIFY less than [`IDENTIFY_INTERVAL`] after the
    /// last accepted one gets opcode 9 (invalid session), as on Discord.
    pub fn enforce_identify_spacing(&self) {
        self.shared.lock().enforce_identify_spacing = true;
    }

    /// IDENTIFYs refused with opcode 9.
    pub fn invalid_sessions(&self) -> u32 {
        self.shared.lock().invalid_sessions
    }

    /// Whether Discord reset the bot's token (an IDENTIFY with no session
    /// starts left).
    pub fn token_was_reset(&self) -> bool {
        self.shared.lock().token_reset
    }

    /// Gateway connections identified or resumed and still open.
    pub fn live_sessions(&self) -> usize {
        self.shared.lock().gateways.len()
    }

    /// Waits until `check` holds, at most `timeout`; panics with `what`.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&FakeDiscord) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(v) = check(self) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if let Some(v) = check(self) {
                    return v;
                }
                panic!("fake discord: timed out after {timeout:?} waiting for {what}");
            }
        }
    }

    /// Waits for a message in `channel_id` whose JSON contains `needle`.
    pub async fn wait_message(
        &self,
        channel_id: u64,
        needle: &str,
        timeout: Duration,
    ) -> StoredMessage {
        self.wait_until(
            &format!("a message containing {needle:?} in {channel_id}"),
            timeout,
            |f| {
                f.messages_in(channel_id)
                    .into_iter()
                    .find(|m| m.payload.to_string().contains(needle))
            },
        )
        .await
    }

    /// Waits for the acknowledgement (interaction callback) of
    /// `interaction_id`; returns its body and how long after the dispatch it
    /// came.
    pub async fn wait_ack(&self, interaction_id: u64, timeout: Duration) -> (Value, Duration) {
        let needle = format!("/interactions/{interaction_id}/");
        let (body, at) = self
            .wait_until(
                &format!("the acknowledgement of interaction {interaction_id}"),
                timeout,
                |f| {
                    f.requests()
                        .into_iter()
                        .find(|r| r.path.contains(&needle))
                        .map(|r| (r.body, r.at))
                },
            )
            .await;
        let dispatched = self
            .shared
            .lock()
            .dispatched
            .get(&interaction_id)
            .copied()
            .expect("dispatched");
        (body, at.duration_since(dispatched))
    }

    /// When interaction `interaction_id` was dispatched on the gateway.
    pub fn dispatched_at(&self, interaction_id: u64) -> Option<Instant> {
        self.shared.lock().dispatched.get(&interaction_id).copied()
    }

    /// Whether an interaction was acknowledged (right now).
    pub fn acked(&self, interaction_id: u64) -> bool {
        let needle = format!("/interactions/{interaction_id}/");
        self.requests().iter().any(|r| r.path.contains(&needle))
    }

    /// Waits for the private answer (edit of the deferred response) of
    /// interaction `token`.
    pub async fn wait_followup(&self, token: &str, timeout: Duration) -> String {
        let needle = format!(
            "/webhooks/{}/{token}/messages/@original",
            self.shared.application_id
        );
        self.wait_until(&format!("the follow-up for {token}"), timeout, |f| {
            f.requests()
                .into_iter()
                .find(|r| r.path.contains(&needle))
                .map(|r| r.body["content"].as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    /// Waits until the gateway is connected and identified (or resumed).
    pub async fn wait_gateway(&self, timeout: Duration) {
        self.wait_until("a live gateway connection", timeout, |f| {
            (!f.shared.lock().gateways.is_empty()).then_some(())
        })
        .await;
    }

    /// Clicks button `custom_id` of message `message_id` as `member`, in
    /// `channel_id`. Returns (interaction id, interaction token).
    pub fn click(
        &self,
        message_id: u64,
        custom_id: &str,
        member: &Member,
        channel_id: u64,
    ) -> (u64, String) {
        self.component(
            message_id,
            &json!({ "custom_id": custom_id, "component_type": 2 }),
            member,
            channel_id,
        )
    }

    /// A click Discord never issued, delivered as if it had (as a process
    /// posing as `gatekeep hub` could): its acknowledgement is refused.
    pub fn forge_click(
        &self,
        message_id: u64,
        custom_id: &str,
        member: &Member,
        channel_id: u64,
    ) -> (u64, String) {
        self.shared.lock().forge_next = true;
        self.click(message_id, custom_id, member, channel_id)
    }

    /// Chooses `values` in the string select `custom_id` of message
    /// `message_id`.
    pub fn select(
        &self,
        message_id: u64,
        custom_id: &str,
        values: &[&str],
        member: &Member,
        channel_id: u64,
    ) -> (u64, String) {
        let data = json!({ "custom_id": custom_id, "component_type": 3, "values": values });
        self.component(message_id, &data, member, channel_id)
    }

    fn component(
        &self,
        message_id: u64,
        data: &Value,
        member: &Member,
        channel_id: u64,
    ) -> (u64, String) {
        let (id, token) = self.new_interaction();
        let message = json!({
            "id": message_id.to_string(),
            "channel_id": channel_id.to_string(),
            "author": user_json(BOT_USER_ID, "gatekeep", true),
            "content": "",
            "timestamp": now_iso(),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
            "type": 0,
            "flags": 0,
        });
        let d = json!({
            "id": id.to_string(),
            "application_id": self.shared.application_id.to_string(),
            "type": 3,
            "data": data,
            "guild_id": GUILD_ID.to_string(),
            "channel_id": channel_id.to_string(),
            "member": member_json(member),
            "token": token,
            "version": 1,
            "message": message,
            "app_permissions": "2251799813685247",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": { "0": GUILD_ID.to_string() },
            "context": 0,
            "attachment_size_limit": 10_485_760,
        });
        self.dispatch_interaction(id, &d);
        (id, token)
    }

    /// Submits the modal `custom_id` with `reason` as `member`.
    pub fn submit_modal(
        &self,
        custom_id: &str,
        reason: &str,
        member: &Member,
        channel_id: u64,
    ) -> (u64, String) {
        self.submit_modal_inputs(custom_id, &[("reason", reason)], member, channel_id)
    }

    /// Submits the modal `custom_id` with text inputs `(input id, value)`.
    pub fn submit_modal_inputs(
        &self,
        custom_id: &str,
        inputs: &[(&str, &str)],
        member: &Member,
        channel_id: u64,
    ) -> (u64, String) {
        let rows: Vec<Value> = inputs
            .iter()
            .map(|(input, value)| {
                json!({ "type": 1, "components": [{ "type": 4, "custom_id": input, "value": value }] })
            })
            .collect();
        let (id, token) = self.new_interaction();
        let d = json!({
            "id": id.to_string(),
            "application_id": self.shared.application_id.to_string(),
            "type": 5,
            "data": {
                "custom_id": custom_id,
                "components": rows,
            },
            "guild_id": GUILD_ID.to_string(),
            "channel_id": channel_id.to_string(),
            "member": member_json(member),
            "token": token,
            "version": 1,
            "app_permissions": "2251799813685247",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": { "0": GUILD_ID.to_string() },
            "context": 0,
            "attachment_size_limit": 10_485_760,
        });
        self.dispatch_interaction(id, &d);
        (id, token)
    }

    fn new_interaction(&self) -> (u64, String) {
        let mut inner = self.shared.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        if std::mem::take(&mut inner.forge_next) {
            inner.forged.insert(id);
        }
        (id, format!("itoken{id}"))
    }

    fn dispatch_interaction(&self, id: u64, d: &Value) {
        // Proves the payload is complete: serenity would drop it silently.
        if let Err(e) = serde_json::from_value::<serenity::all::Interaction>(d.clone()) {
            panic!("fake discord: serenity cannot read this interaction: {e}\n{d:#}");
        }
        let mut inner = self.shared.lock();
        inner.dispatched.insert(id, Instant::now());
        assert!(
            !inner.gateways.is_empty(),
            "fake discord: no gateway connection to dispatch on"
        );
        for session in &mut inner.gateways {
            let frame = session.frame("INTERACTION_CREATE", d);
            let _ = session.tx.send(frame);
        }
    }
}

fn member_json(member: &Member) -> Value {
    json!({
        "user": user_json(member.user_id, &member.name, false),
        "nick": null,
        "avatar": null,
        "roles": member.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "joined_at": now_iso(),
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "permissions": member.permissions.to_string(),
        "communication_disabled_until": null,
    })
}

/// Closes every session with `code`.
fn close_all(inner: &mut Inner, code: u16) {
    for session in inner.gateways.drain(..) {
        let _ = session.tx.send(Message::Close(Some(CloseFrame {
            code,
            reason: "fake: closed".into(),
        })));
    }
}

fn ready_payload(addr: SocketAddr, application_id: u64) -> Value {
    let d = json!({
        "v": 10,
        "user": user_json(BOT_USER_ID, "gatekeep", true),
        "guilds": [{ "id": GUILD_ID.to_string(), "unavailable": true }],
        "session_id": "fake-session",
        "resume_gateway_url": format!("ws://{addr}/gateway"),
        "shard": [0, 1],
        "application": { "id": application_id.to_string(), "flags": 0 },
    });
    if let Err(e) = serde_json::from_value::<serenity::all::Ready>(d.clone()) {
        panic!("fake discord: serenity cannot read READY: {e}");
    }
    d
}

async fn gateway_upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    if shared.lock().gateway_refused {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.on_upgrade(move |socket| gateway_session(shared, socket))
}

/// One gateway connection: HELLO, then IDENTIFY → READY or RESUME →
/// RESUMED, heartbeats acknowledged, dispatches from the control surface.
async fn gateway_session(shared: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let interval = shared
        .lock()
        .heartbeat_interval
        .map_or(41_250, |d| d.as_millis() as u64);
    let hello = json!({ "op": 10, "d": { "heartbeat_interval": interval } }).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(msg) = out else { break };
                let closing = matches!(msg, Message::Close(_));
                if socket.send(msg).await.is_err() || closing {
                    break;
                }
            }
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { break };
                if let Message::Close(frame) = &msg {
                    // 1005 ("no status") for a close frame without a code.
                    shared.lock().client_closes.push(frame.as_ref().map_or(1005, |f| f.code));
                    shared.bump();
                }
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let reply = {
                    let mut inner = shared.lock();
                    match v["op"].as_u64() {
                        Some(1) => {
                            inner.heartbeats += 1;
                            (!inner.heartbeats_unacked)
                                .then(|| Message::Text(json!({ "op": 11 }).to_string().into()))
                        }
                        Some(2) if inner.session_starts_left == 0 || inner.token_reset => {
                            // Discord resets the token: every session ends,
                            // and nothing can be resumed.
                            inner.token_reset = true;
                            close_all(&mut inner, 4004);
                            Some(Message::Close(Some(CloseFrame {
                                code: 4004,
                                reason: "Authentication failed.".into(),
                            })))
                        }
                        Some(2) if inner.enforce_identify_spacing
                            && inner.last_identify.is_some_and(|t| t.elapsed() < IDENTIFY_INTERVAL) =>
                        {
                            inner.invalid_sessions += 1;
                            Some(Message::Text(json!({ "op": 9, "d": false }).to_string().into()))
                        }
                        Some(2) => {
                            inner.identifies += 1;
                            inner.last_identify = Some(Instant::now());
                            inner.session_starts_left = inner.session_starts_left.saturating_sub(1);
                            let mut session = Session { tx: tx.clone(), seq: 0 };
                            let ready = session.frame("READY", &ready_payload(shared.addr, shared.application_id));
                            inner.gateways.push(session);
                            Some(ready)
                        }
                        Some(6) => {
                            inner.resumes += 1;
                            let mut session = Session { tx: tx.clone(), seq: v["d"]["seq"].as_u64().unwrap_or(0) };
                            let resumed = session.frame("RESUMED", &json!({}));
                            inner.gateways.push(session);
                            Some(resumed)
                        }
                        _ => None,
                    }
                };
                shared.bump();
                if let Some(reply) = reply {
                    let closing = matches!(reply, Message::Close(_));
                    if socket.send(reply).await.is_err() || closing {
                        break;
                    }
                }
            }
        }
    }
    let mut inner = shared.lock();
    inner.gateways.retain(|g| !g.tx.same_channel(&tx));
    drop(inner);
    shared.bump();
}

/// Splits a multipart body into (name, filename, content) parts.
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<(String, Option<String>, Vec<u8>)> {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return Vec::new();
    };
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let mut parts = Vec::new();
    let text = body;
    let mut positions = Vec::new();
    let d = delimiter.as_bytes();
    let mut i = 0;
    while i + d.len() <= text.len() {
        if &text[i..i + d.len()] == d {
            positions.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    for w in positions.windows(2) {
        let part = &text[w[0] + d.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(split) = part.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        let mut content = part[split + 4..].to_vec();
        if content.ends_with(b"\r\n") {
            content.truncate(content.len() - 2);
        }
        let field = |key: &str| {
            headers
                .split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_owned())
        };
        parts.push((
            field("name").unwrap_or_default(),
            field("filename"),
            content,
        ));
    }
    parts
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every REST call: recorded, faults applied, then answered.
async fn rest(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let delay = {
        let mut inner = shared.lock();
        let pos = inner
            .delays
            .iter()
            .position(|(left, _, p)| *left > 0 && path.contains(p.as_str()));
        pos.map(|i| {
            let entry = &mut inner.delays[i];
            entry.0 -= 1;
            entry.1
        })
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (body_json, files) = if content_type.starts_with("multipart/") {
        let mut payload = Value::Null;
        let mut files = Vec::new();
        for (name, filename, content) in parse_multipart(&content_type, &body) {
            if name == "payload_json" {
                payload = serde_json::from_slice(&content).unwrap_or(Value::Null);
            } else {
                files.push((name, filename.unwrap_or_default(), content));
            }
        }
        (payload, files)
    } else {
        (
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            Vec::new(),
        )
    };
    let mut inner = shared.lock();
    let (status, response, extra_headers) = answer(&mut inner, &shared, &method, &path, &body_json);
    inner.requests.push(Recorded {
        method: method.to_string(),
        path,
        body: body_json,
        files,
        at: Instant::now(),
        status: status.as_u16(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    drop(inner);
    shared.bump();
    let mut resp = if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        json_response(status, &response)
    };
    for (k, v) in extra_headers {
        resp.headers_mut()
            .insert(k, HeaderValue::from_str(&v).expect("header value"));
    }
    resp
}

type Answer = (StatusCode, Value, Vec<(&'static str, String)>);

/// The route table of the fake: long, but one flat match reads best.
#[allow(clippy::too_many_lines)]
fn answer(inner: &mut Inner, shared: &Shared, method: &Method, path: &str, body: &Value) -> Answer {
    let (addr, application_id) = (shared.addr, shared.application_id);
    // Injected faults first.
    if let Some(pos) = inner
        .faults
        .iter()
        .position(|f| path.contains(&f.path_contains) && f.remaining > 0)
    {
        let fault = &mut inner.faults[pos];
        fault.remaining -= 1;
        let status = StatusCode::from_u16(fault.status).expect("status");
        let retry_after = fault.retry_after;
        if fault.remaining == 0 {
            inner.faults.remove(pos);
        }
        let mut headers = Vec::new();
        let body = if status == StatusCode::TOO_MANY_REQUESTS {
            let after = retry_after.unwrap_or(1.0);
            headers.push(("retry-after", format!("{}", after.ceil())));
            json!({ "message": "You are being rate limited.", "retry_after": after, "global": false })
        } else {
            json!({ "message": "fake: injected failure", "code": 0 })
        };
        return (status, body, headers);
    }
    if inner.token_reset {
        return (
            StatusCode::UNAUTHORIZED,
            json!({ "message": "401: Unauthorized", "code": 0 }),
            Vec::new(),
        );
    }
    let mut headers = Vec::new();
    if let Some(rl) = &mut inner.rate_limit {
        if path.contains(&rl.path_contains) {
            let now = Instant::now();
            if now.duration_since(rl.window_start) >= rl.window {
                rl.window_start = now;
                rl.used = 0;
            }
            let reset_after = rl
                .window
                .saturating_sub(now.duration_since(rl.window_start))
                .as_secs_f64();
            if rl.used >= rl.limit {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "message": "You are being rate limited.", "retry_after": reset_after, "global": false }),
                    vec![
                        ("retry-after", format!("{}", reset_after.ceil())),
                        ("x-ratelimit-remaining", "0".into()),
                        ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
                    ],
                );
            }
            rl.used += 1;
            headers.push(("x-ratelimit-limit", rl.limit.to_string()));
            headers.push(("x-ratelimit-remaining", (rl.limit - rl.used).to_string()));
            headers.push(("x-ratelimit-reset-after", format!("{reset_after:.3}")));
        }
    }
    let segments: Vec<&str> = path.trim_start_matches("/api/v10/").split('/').collect();
    let ok = |v: Value| -> Answer { (StatusCode::OK, v, Vec::new()) };
    let (status, value, _) = match (method.as_str(), segments.as_slice()) {
        ("GET", ["gateway"] | ["gateway", "bot"]) => {
            if let Some(status) = inner.gateway_lookup_status {
                (
                    StatusCode::from_u16(status).expect("status"),
                    json!({ "message": "fake: gateway lookup fails", "code": 0 }),
                    Vec::new(),
                )
            } else {
                ok(json!({
                    "url": format!("ws://{addr}/gateway"),
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": inner.session_starts_left,
                        "reset_after": 3_600_000,
                        "max_concurrency": 1,
                    },
                }))
            }
        }
        ("GET", ["oauth2", "applications", "@me"]) => ok(json!({
            "id": application_id.to_string(), "name": "gatekeep", "bot_public": false,
        })),
        ("GET", ["users", "@me"]) => ok(user_json(BOT_USER_ID, "gatekeep", true)),
        ("GET", ["channels", id]) => ok(json!({
            "id": id, "type": 0, "guild_id": GUILD_ID.to_string(), "name": "approvals",
            "permission_overwrites": inner.overwrites,
        })),
        ("GET", ["guilds", _guild, "members", user]) => ok(json!({
            "user": user_json(user.parse().unwrap_or(0), "gatekeep", true),
            "roles": [BOT_ROLE_ID.to_string()],
            "joined_at": now_iso(), "deaf": false, "mute": false, "flags": 0,
        })),
        ("GET", ["guilds", _guild, "roles"]) => {
            let everyone = inner.everyone_permissions.unwrap_or(NEEDED_PERMISSIONS);
            let role = |id: u64, name: &str, permissions: u64, position: u32| {
                json!({ "id": id.to_string(), "name": name, "permissions": permissions.to_string(),
                        "position": position, "color": 0, "hoist": false, "managed": false,
                        "mentionable": false, "flags": 0 })
            };
            ok(json!([
                role(GUILD_ID, "@everyone", everyone, 0),
                role(BOT_ROLE_ID, "gatekeep", 0, 1),
            ]))
        }
        ("PUT", ["channels", thread, "thread-members", user]) => {
            let member = (thread.parse().unwrap_or(0), user.parse().unwrap_or(0));
            inner.thread_members.push(member);
            (StatusCode::NO_CONTENT, Value::Null, Vec::new())
        }
        ("POST", ["channels", channel, "messages"]) => {
            let channel_id: u64 = channel.parse().unwrap_or(0);
            inner.next_id += 1;
            let id = inner.next_id;
            let (users, roles, everyone) = pinged(body);
            if !users.is_empty() || !roles.is_empty() || everyone {
                inner.pings.push(Ping {
                    message_id: id,
                    channel_id,
                    users,
                    roles,
                    everyone,
                });
            }
            inner.messages.insert(
                id,
                StoredMessage {
                    id,
                    channel_id,
                    payload: body.clone(),
                    edits: 0,
                },
            );
            ok(message_json(id, channel_id, body))
        }
        ("PATCH", ["channels", channel, "messages", mid]) => {
            let channel_id: u64 = channel.parse().unwrap_or(0);
            let id: u64 = mid.parse().unwrap_or(0);
            match inner.messages.get_mut(&id) {
                Some(m) if m.channel_id == channel_id => {
                    if let (Some(stored), Some(update)) =
                        (m.payload.as_object_mut(), body.as_object())
                    {
                        for (k, v) in update {
                            stored.insert(k.clone(), v.clone());
                        }
                    }
                    m.edits += 1;
                    let payload = m.payload.clone();
                    ok(message_json(id, channel_id, &payload))
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    json!({ "message": "Unknown Message", "code": 10008 }),
                    Vec::new(),
                ),
            }
        }
        ("POST", ["channels", channel, "messages", _mid, "threads"]) => {
            inner.next_id += 1;
            let id = inner.next_id;
            inner.threads.push(id);
            ok(json!({
                "id": id.to_string(),
                "type": 11,
                "guild_id": GUILD_ID.to_string(),
                "parent_id": channel,
                "name": body["name"],
                "owner_id": BOT_USER_ID.to_string(),
            }))
        }
        ("POST", ["interactions", id, _token, "callback"])
            if id.parse().is_ok_and(|id: u64| inner.forged.contains(&id)) =>
        {
            (
                StatusCode::NOT_FOUND,
                json!({ "message": "Unknown interaction", "code": 10062 }),
                Vec::new(),
            )
        }
        ("POST", ["interactions", _id, _token, "callback"]) => {
            (StatusCode::NO_CONTENT, Value::Null, Vec::new())
        }
        ("PATCH", ["webhooks", _app, _token, "messages", "@original"])
        | ("POST", ["webhooks", _app, _token]) => {
            inner.next_id += 1;
            let id = inner.next_id;
            ok(message_json(id, 0, body))
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({ "message": "fake: no such route", "code": 0 }),
            Vec::new(),
        ),
    };
    (status, value, headers)
}

fn message_json(id: u64, channel_id: u64, body: &Value) -> Value {
    json!({
        "id": id.to_string(),
        "channel_id": channel_id.to_string(),
        "author": user_json(BOT_USER_ID, "gatekeep", true),
        "content": body.get("content").cloned().unwrap_or(json!("")),
        "timestamp": now_iso(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": body.get("embeds").cloned().unwrap_or(json!([])),
        "components": body.get("components").cloned().unwrap_or(json!([])),
        "pinned": false,
        "type": 0,
    })
}

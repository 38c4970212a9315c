//! The gateway connection: HELLO, IDENTIFY, READY, then button clicks and
//! modal submissions (`INTERACTION_CREATE`), kept alive by heartbeats and
//! resumed after a drop (docs/design.md, "The gateway").
//!
//! gatekeep speaks the gateway itself, over tokio-tungstenite, and reads
//! what arrives with serenity's model types. It used to run serenity's
//! client, whose shard runner looks at a shutdown request only between its
//! 500 ms websocket reads; gatekeep asks for no intents, so nothing wakes
//! those reads early, and every run either waited up to half a second for
//! a proper close or dropped the connection without one (issue 16). Here
//! the close is one branch of the same `select!` as the read: a normal
//! close (1000) is sent the moment it is asked for, and Discord ends the
//! session at once instead of keeping it open for a resume nobody makes.
//!
//! The URL is the one `session` looked up (failing loudly); there is no
//! fallback to another gateway anywhere.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use serenity::all::Interaction;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Error;

/// Between two session starts on this host: Discord's 5 seconds per
/// bucket, plus a margin for the clocks of two processes.
pub const IDENTIFY_SPACING: Duration = Duration::from_millis(5_250);

/// How long a clean gateway shutdown may take before the task is aborted.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Gateway version and encoding, appended to every URL connected to.
const QUERY: &str = "v=10&encoding=json";
/// Discord sends HELLO right after the upgrade; a connection that does not
/// is given up and made again.
const HELLO_WITHIN: Duration = Duration::from_secs(15);
/// Between connection attempts that did not get as far as READY or
/// RESUMED: doubling from the first, up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// A close code of our own that is not 1000 or 1001, so the session stays
/// resumable (a zombied connection, or Discord asking us to reconnect).
const CLOSE_TO_RESUME: u16 = 4000;
/// What `ended` says after a shutdown we asked for.
const CLOSED: &str = "the gateway connection was closed";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running gateway connection.
pub struct Gateway {
    pub application_id: u64,
    /// Every interaction the bot receives (also other runs' clicks: the
    /// click handler filters by nonce). The sender is held by the
    /// connection task.
    pub interactions: mpsc::UnboundedReceiver<Interaction>,
    /// Becomes `Some(why)` when the connection ends for good (transient
    /// drops are resumed inside the task and never show here). The sender
    /// is held by the connection task.
    pub ended: watch::Receiver<Option<String>>,
    /// Asks the task for a normal close; taken by the first request.
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Start closing the connection (a normal close, sent at once),
    /// without waiting for Discord's answer.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Close the connection (or finish closing it), waiting at most
    /// `within` for Discord's closing answer; past that the connection is
    /// dropped.
    pub async fn shutdown(mut self, within: Duration) {
        self.begin_shutdown();
        let _ = tokio::time::timeout(within, &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] (a connect that ran
    /// out of time) must not keep its task alive.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `ws_url` (already looked up from the API) and waits for
/// READY, at most `ready_within`.
pub async fn start(
    token: &SecretString,
    ws_url: String,
    ready_within: Duration,
) -> Result<Gateway, Error> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (interactions_tx, interactions) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ended_tx, mut ended_rx) = watch::channel(None);
    let link = Link {
        url: ws_url,
        token: token.clone(),
        resume: None,
        seq: None,
        ready: Some(ready_tx),
        interactions: interactions_tx,
    };
    let task = tokio::spawn(async move {
        let why = link.run(stop_rx).await;
        let _ = ended_tx.send(Some(why));
    });
    let mut gw = Gateway {
        application_id: 0,
        interactions,
        ended: ended_rx.clone(),
        stop: Some(stop_tx),
        task,
    };
    let failed = tokio::select! {
        ready = ready_rx => match ready {
            Ok(application_id) => {
                gw.application_id = application_id;
                return Ok(gw);
            }
            Err(_) => Error::Gateway("the gateway connection stopped before READY".into()),
        },
        _ = ended_rx.changed() => Error::Gateway(
            ended_rx
                .borrow()
                .clone()
                .unwrap_or_else(|| "the gateway connection ended before READY".into()),
        ),
        () = tokio::time::sleep(ready_within) => Error::ReadyTimeout(ready_within),
    };
    gw.shutdown(SHUTDOWN_GRACE).await;
    Err(failed)
}

/// One gateway payload as Discord sends it. A payload of another shape is
/// skipped, never a reason to drop the connection.
#[derive(Deserialize)]
struct Payload {
    op: u8,
    #[serde(default)]
    d: Value,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    t: Option<String>,
}

/// Where a session can be resumed, from READY.
struct Resume {
    session_id: String,
    url: String,
}

/// What to do when a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Connect again and RESUME (or IDENTIFY if there is nothing to resume).
    Resume,
    /// Connect again, after `after`, and IDENTIFY: a new session.
    Identify { after: Duration },
    /// Stop for good, saying why.
    End(String),
}

/// The session across connections, owned by the connection task.
struct Link {
    /// The looked-up gateway URL, for every new session.
    url: String,
    token: SecretString,
    resume: Option<Resume>,
    /// The last dispatch's sequence number: heartbeats and RESUME carry it.
    seq: Option<u64>,
    /// Told the application id at the first READY.
    ready: Option<oneshot::Sender<u64>>,
    interactions: mpsc::UnboundedSender<Interaction>,
}

impl Link {
    /// Connects, converses, reconnects, until stopped or told to stop by
    /// Discord; returns why it ended.
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> String {
        let mut next = Next::Identify {
            after: Duration::ZERO,
        };
        let mut failures = 0u32;
        loop {
            let mut wait = backoff(failures);
            match next {
                Next::End(why) => return why,
                Next::Resume => {}
                Next::Identify { after } => {
                    self.resume = None;
                    self.seq = None;
                    wait = wait.max(after);
                }
            }
            let url = self.resume.as_ref().map_or(&self.url, |r| &r.url);
            let url = format!("{}?{QUERY}", url.trim_end_matches(['/', '?']));
            let connected = tokio::select! {
                biased;
                _ = &mut stop => return CLOSED.to_owned(),
                connected = async {
                    tokio::time::sleep(wait).await;
                    tokio_tungstenite::connect_async(url.as_str()).await
                } => connected,
            };
            let (outcome, live) = match connected {
                Ok((mut ws, _)) => self.converse(&mut ws, &mut stop).await,
                Err(_) => (Next::Resume, false),
            };
            failures = if live { 0 } else { failures.saturating_add(1) };
            next = outcome;
        }
    }

    /// One websocket connection, from HELLO until it ends. Also says
    /// whether the session was live on it (READY or RESUMED came).
    async fn converse(&mut self, ws: &mut Ws, stop: &mut oneshot::Receiver<()>) -> (Next, bool) {
        let hello = tokio::select! {
            biased;
            _ = &mut *stop => {
                close_normally(ws).await;
                return (Next::End(CLOSED.to_owned()), false);
            }
            hello = tokio::time::timeout(HELLO_WITHIN, read_hello(ws)) => hello,
        };
        let Ok(Some(interval)) = hello else {
            return (Next::Resume, false);
        };
        let opening = match &self.resume {
            Some(resume) => json!({ "op": 6, "d": {
                "token": self.token.expose_secret(),
                "session_id": resume.session_id,
                "seq": self.seq,
            }}),
            None => json!({ "op": 2, "d": {
                "token": self.token.expose_secret(),
                "intents": 0,
                "shard": [0, 1],
                "properties": {
                    "os": std::env::consts::OS,
                    "browser": "gatekeep",
                    "device": "gatekeep",
                },
            }}),
        };
        if send(ws, &opening).await.is_err() {
            return (Next::Resume, false);
        }
        // Discord's rule: the first heartbeat after a random part of the
        // interval, then one per interval; a heartbeat not acknowledged by
        // the next one means the connection is a zombie.
        let first = Instant::now() + interval.mul_f64(rand::random::<f64>());
        let mut beats = tokio::time::interval_at(first, interval);
        beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut acked = true;
        let mut live = false;
        loop {
            let action = tokio::select! {
                biased;
                _ = &mut *stop => {
                    close_normally(ws).await;
                    return (Next::End(CLOSED.to_owned()), live);
                }
                _ = beats.tick() => if acked { Step::Beat } else { Step::Reconnect(Next::Resume) },
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Payload>(&text) {
                        Ok(payload) => self.on_payload(payload, &mut acked, &mut live),
                        Err(_) => Step::Continue,
                    },
                    Some(Ok(Message::Close(frame))) => {
                        Step::Gone(after_close(frame.map(|f| u16::from(f.code))))
                    }
                    Some(Ok(_)) => Step::Continue,
                    Some(Err(_)) | None => Step::Gone(Next::Resume),
                },
            };
            match action {
                Step::Continue => {}
                Step::Beat => {
                    if send(ws, &json!({ "op": 1, "d": self.seq })).await.is_err() {
                        return (Next::Resume, live);
                    }
                    acked = false;
                }
                Step::Reconnect(next) => {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(CLOSE_TO_RESUME),
                            reason: "".into(),
                        }))
                        .await;
                    return (next, live);
                }
                Step::Gone(next) => return (next, live),
            }
        }
    }

    /// What one payload asks for.
    fn on_payload(&mut self, payload: Payload, acked: &mut bool, live: &mut bool) -> Step {
        match payload.op {
            0 => {
                if let Some(s) = payload.s {
                    self.seq = Some(s);
                }
                match payload.t.as_deref() {
                    Some("INTERACTION_CREATE") => {
                        if let Ok(interaction) = serde_json::from_value(payload.d) {
                            // The receiver is gone only when the run is over.
                            let _ = self.interactions.send(interaction);
                        }
                    }
                    Some("READY") => {
                        *live = true;
                        let d = &payload.d;
                        if let (Some(session_id), Some(url)) =
                            (d["session_id"].as_str(), d["resume_gateway_url"].as_str())
                        {
                            self.resume = Some(Resume {
                                session_id: session_id.to_owned(),
                                url: url.to_owned(),
                            });
                        }
                        let application = d["application"]["id"].as_str();
                        if let Some(id) = application.and_then(|id| id.parse().ok()) {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(id);
                            }
                        }
                    }
                    Some("RESUMED") => *live = true,
                    _ => {}
                }
                Step::Continue
            }
            // Discord asks for a heartbeat now.
            1 => Step::Beat,
            // Discord asks us to reconnect and resume.
            7 => Step::Reconnect(Next::Resume),
            // Invalid session: resumable or not. A new IDENTIFY keeps the
            // host's spacing, since a too-early one is a cause of this.
            9 => Step::Reconnect(if payload.d.as_bool() == Some(true) {
                Next::Resume
            } else {
                Next::Identify {
                    after: IDENTIFY_SPACING,
                }
            }),
            11 => {
                *acked = true;
                Step::Continue
            }
            _ => Step::Continue,
        }
    }
}

/// What the conversation does after one wake-up.
enum Step {
    Continue,
    /// Send a heartbeat now.
    Beat,
    /// Close this connection ourselves (resumably), then go on with `Next`.
    Reconnect(Next),
    /// The connection is gone; go on with `Next`.
    Gone(Next),
}

/// Discord closed the connection with `code`: some codes say reconnecting
/// cannot help, some that the session is over, the rest allow a resume.
fn after_close(code: Option<u16>) -> Next {
    let fatal = |what: &str, code: u16| {
        Next::End(format!(
            "Discord closed the gateway connection: {what} ({code})"
        ))
    };
    match code {
        Some(code @ 4004) => fatal("authentication failed, the bot token was refused", code),
        Some(code @ 4010) => fatal("invalid shard", code),
        Some(code @ 4011) => fatal("sharding required", code),
        Some(code @ 4012) => fatal("invalid API version", code),
        Some(code @ 4013) => fatal("invalid intents", code),
        Some(code @ 4014) => fatal("disallowed intents", code),
        // Invalid sequence, session timed out: only a new session helps.
        Some(4007 | 4009) => Next::Identify {
            after: Duration::ZERO,
        },
        _ => Next::Resume,
    }
}

/// Reads until HELLO; `None` if the connection ended first.
async fn read_hello(ws: &mut Ws) -> Option<Duration> {
    while let Some(message) = ws.next().await {
        let Ok(Message::Text(text)) = message else {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                return None;
            }
            continue;
        };
        if let Ok(Payload { op: 10, d, .. }) = serde_json::from_str(&text) {
            if let Some(ms) = d["heartbeat_interval"].as_u64().filter(|ms| *ms > 0) {
                return Some(Duration::from_millis(ms));
            }
        }
    }
    None
}

async fn send(ws: &mut Ws, payload: &Value) -> Result<(), ()> {
    ws.send(Message::Text(payload.to_string()))
        .await
        .map_err(|_| ())
}

/// A normal close (1000): Discord ends the session at once. Then wait for
/// its closing answer (the caller bounds the wait).
async fn close_normally(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    }
}

/// How long to wait before the next connection attempt.
fn backoff(failures: u32) -> Duration {
    let (first, most) = BACKOFF;
    match failures {
        0 => Duration::ZERO,
        n => first.saturating_mul(1 << (n - 1).min(5)).min(most),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_that_no_reconnect_can_help_end_the_connection() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            match after_close(Some(code)) {
                Next::End(why) => assert!(why.contains(&code.to_string()), "{why}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_lost_session_identifies_anew_and_anything_else_resumes() {
        for code in [4007, 4009] {
            assert_eq!(
                after_close(Some(code)),
                Next::Identify {
                    after: Duration::ZERO
                }
            );
        }
        for code in [None, Some(1000), Some(1006), Some(4000), Some(4008)] {
            assert_eq!(after_close(code), Next::Resume, "{code:?}");
        }
    }

    /// Every test speaks plain `ws://` on loopback while Discord is
    /// `wss://`: without a TLS backend compiled in, every real run would
    /// fail to connect while every other test passed.
    #[tokio::test]
    async fn a_wss_url_is_connected_to_over_tls() {
        use tokio_tungstenite::tungstenite::error::{Error as WsError, UrlError};
        // Nothing listens on port 1: the attempt fails in the network, not
        // for want of TLS.
        let err = tokio_tungstenite::connect_async("wss://127.0.0.1:1/?v=10")
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            !matches!(err, WsError::Url(UrlError::TlsFeatureNotEnabled)),
            "{err}"
        );
        assert!(matches!(err, WsError::Io(_)), "{err}");
    }

    #[test]
    fn attempts_that_never_got_live_back_off_to_half_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
    }
}

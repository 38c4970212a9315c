//! The gateway connection (serenity): READY, then button clicks and modal
//! submissions. Resuming after a disconnect is serenity's job.
//!
//! Two serenity pitfalls are guarded here:
//! - `ClientBuilder` looks the gateway URL up itself and silently falls back
//!   to the real Discord gateway when that fails. gatekeep looks it up first
//!   (failing loudly, see `connect`) and overwrites the client's URL with
//!   that answer before any shard starts, so the fallback can never be used.
//! - serenity's `Http` honours a base-URL override (`proxy`) only with its
//!   rate limiter disabled, and it must not pick up a system `HTTP_PROXY`:
//!   it gets gatekeep's own `no_proxy()` client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serenity::all::{
    ClientBuilder, Context, EventHandler, GatewayIntents, HttpBuilder, Interaction, Ready,
    ShardManager,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{rest, Error};

/// How long a clean gateway shutdown may take before the task is aborted.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running gateway connection.
pub struct Gateway {
    pub application_id: u64,
    /// Every interaction the bot receives (also other runs' clicks: the
    /// click handler filters by nonce). The sender is held by the event
    /// handler inside serenity.
    pub interactions: mpsc::UnboundedReceiver<Interaction>,
    /// Becomes `Some(why)` when serenity gives up on the connection for
    /// good (transient drops are resumed inside serenity and never show
    /// here). The sender is held by the gateway task.
    pub ended: watch::Receiver<Option<String>>,
    shard_manager: Arc<ShardManager>,
    task: JoinHandle<()>,
    /// The graceful close, once begun.
    closing: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Start closing the connection (serenity notices between its 500 ms
    /// websocket reads), without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if self.closing.is_none() {
            let manager = Arc::clone(&self.shard_manager);
            self.closing = Some(tokio::spawn(async move { manager.shutdown_all().await }));
        }
    }

    /// Close the connection (or finish closing it), waiting at most
    /// `within`; past that the connection is dropped and Discord lets the
    /// session expire on its own.
    pub async fn shutdown(mut self, within: Duration) {
        self.begin_shutdown();
        if let Some(closing) = self.closing.take() {
            let _ = tokio::time::timeout(within, closing).await;
        }
        self.task.abort();
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] (a connect that ran
    /// out of time) must not keep serenity's task alive.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards what gatekeep needs out of serenity's callbacks.
struct Handler {
    /// Taken by the first READY; later READYs (after a full reconnect) are
    /// of no interest.
    ready: Mutex<Option<oneshot::Sender<u64>>>,
    interactions: mpsc::UnboundedSender<Interaction>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let tx = self.ready.lock().ok().and_then(|mut slot| slot.take());
        if let Some(tx) = tx {
            let _ = tx.send(ready.application.id.get());
        }
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        // The receiver is gone only when the run is over.
        let _ = self.interactions.send(interaction);
    }
}

/// Connects to `ws_url` (already looked up from `api_base`) and waits for
/// READY, at most `ready_within`.
pub async fn start(
    api_base: &str,
    token: &SecretString,
    ws_url: String,
    ready_within: Duration,
) -> Result<Gateway, Error> {
    let client = rest::http_client().map_err(Error::Rest)?;
    let http = HttpBuilder::new(token.expose_secret())
        .client(client)
        .proxy(api_base.trim_end_matches('/'))
        .ratelimiter_disabled(true)
        .build();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (interactions_tx, interactions) = mpsc::unbounded_channel();
    let handler = Handler {
        ready: Mutex::new(Some(ready_tx)),
        interactions: interactions_tx,
    };
    // No intents at all: interactions are delivered regardless, and nothing
    // privileged is ever needed.
    let mut client = ClientBuilder::new_with_http(http, GatewayIntents::empty())
        .event_handler(handler)
        .await
        .map_err(|e| Error::Gateway(e.to_string()))?;
    *client.ws_url.lock().await = ws_url;
    let shard_manager = Arc::clone(&client.shard_manager);
    let (ended_tx, mut ended_rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let why = match client.start().await {
            Ok(()) => "the gateway connection was closed".to_owned(),
            Err(e) => e.to_string(),
        };
        let _ = ended_tx.send(Some(why));
    });
    let gateway_failed = |gw: Gateway, err: Error| async move {
        gw.shutdown(SHUTDOWN_GRACE).await;
        Err(err)
    };
    let mut gw = Gateway {
        application_id: 0,
        interactions,
        ended: ended_rx.clone(),
        shard_manager,
        task,
        closing: None,
    };
    tokio::select! {
        ready = ready_rx => match ready {
            Ok(application_id) => {
                gw.application_id = application_id;
                Ok(gw)
            }
            Err(_) => gateway_failed(gw, Error::Gateway("the gateway handler stopped before READY".into())).await,
        },
        _ = ended_rx.changed() => {
            let detail = ended_rx
                .borrow()
                .clone()
                .unwrap_or_else(|| "the gateway connection ended before READY".into());
            gateway_failed(gw, Error::Gateway(detail)).await
        }
        () = tokio::time::sleep(ready_within) => gateway_failed(gw, Error::ReadyTimeout(ready_within)).await,
    }
}

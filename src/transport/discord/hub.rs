//! `gatekeep hub`: one gateway session for every run on a host
//! (docs/design.md, "Many runs, one bot").
//!
//! ```text
//!   Discord gateway ─INTERACTION_CREATE─► hub ─nonce in custom_id─► the run that attached it
//!   run ─{"type":"attach","nonce":…}─► hub socket (state directory, 0600, peer checked)
//! ```
//!
//! The hub only hands clicks over. It never acknowledges or answers one:
//! the run that owns a click does, through REST, exactly as with its own
//! session. A click that no attached run owns is dropped unanswered
//! (another host may own it). When the hub goes away, each run opens its
//! own session or fails closed (see `serve`).
//!
//! The protocol is one JSON object per line; the types below are all of it.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serenity::all::Interaction;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::clicks::{self, Nonce};
use super::gateway;
use super::session::Starter;
use super::Error;
use crate::console::Console;
use crate::transport::local;

/// How long attaching may take before the run opens its own session.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(2);
/// A client must say whom it is for within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// From a run to the hub.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToHub {
    /// Hand me the clicks whose `custom_id` carries this nonce.
    Attach { nonce: String },
}

/// From the hub to a run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromHub {
    Attached {
        application_id: u64,
    },
    Refused {
        why: String,
    },
    /// An `INTERACTION_CREATE` payload, as serenity reads it.
    Interaction {
        interaction: Value,
    },
}

/// The hub's socket for one bot on this host. Not `*.sock`: those are
/// runs' control sockets (`gatekeep pending`).
#[must_use]
pub fn socket_path(dir: &Path, application_id: u64) -> PathBuf {
    dir.join(format!("discord-hub-{application_id}"))
}

/// A run's link to the hub: the clicks it owns, and the hub's going away.
pub struct Attachment {
    pub interactions: mpsc::UnboundedReceiver<Interaction>,
    /// Becomes `Some(why)` when the hub is gone.
    pub ended: watch::Receiver<Option<String>>,
    reader: JoinHandle<()>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Attach to the hub of `application_id` on this host, if one is
/// listening. `Ok(None)`: no hub; `Err(why)`: a hub that refused or did
/// not answer in time (the run then opens its own session).
pub async fn attach(
    dir: &Path,
    application_id: u64,
    nonce: &Nonce,
) -> Result<Option<Attachment>, String> {
    let Ok(stream) = UnixStream::connect(socket_path(dir, application_id)).await else {
        return Ok(None);
    };
    tokio::time::timeout(ATTACH_TIMEOUT, attach_on(stream, application_id, nonce))
        .await
        .map_err(|_| "the hub did not answer".to_owned())?
        .map(Some)
}

async fn attach_on(
    stream: UnixStream,
    application_id: u64,
    nonce: &Nonce,
) -> Result<Attachment, String> {
    // The directory is private; a socket that is not ours is not a hub,
    // and neither is one served from inside a gatekeep run (an agent
    // posing as the hub to hand the next runs made-up clicks; those would
    // also fail at Discord, see `interactions::proven`).
    match stream.peer_cred() {
        Ok(cred)
            if cred.uid() == nix::unistd::getuid().as_raw()
                && local::peer_is_a_person(cred.pid()) => {}
        Ok(_) => return Err("the hub socket is not served by this user's own gatekeep hub".into()),
        Err(e) => return Err(format!("cannot check the hub socket's owner: {e}")),
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let hello = line_of(&ToHub::Attach {
        nonce: nonce.as_str().to_owned(),
    });
    write
        .write_all(hello.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let answer = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the hub closed the connection")?;
    match serde_json::from_str::<FromHub>(&answer) {
        Ok(FromHub::Attached { application_id: id }) if id == application_id => {}
        Ok(FromHub::Refused { why }) => return Err(format!("the hub refused: {why}")),
        _ => return Err("the hub answered something unexpected".into()),
    }
    let (tx, interactions) = mpsc::unbounded_channel();
    let (ended_tx, ended) = watch::channel(None);
    let reader = tokio::spawn(async move {
        // Kept open: the hub notices a run going away by its EOF.
        let _write = write;
        let why = loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    // A line that does not read as a click is skipped.
                    if let Ok(FromHub::Interaction { interaction }) = serde_json::from_str(&line) {
                        if let Ok(interaction) = serde_json::from_value::<Interaction>(interaction)
                        {
                            let _ = tx.send(interaction);
                        }
                    }
                }
                Ok(None) => break "the gatekeep hub went away".to_owned(),
                Err(e) => break format!("the gatekeep hub connection failed: {e}"),
            }
        };
        let _ = ended_tx.send(Some(why));
    });
    Ok(Attachment {
        interactions,
        ended,
        reader,
    })
}

fn line_of<T: Serialize>(message: &T) -> String {
    let mut line = serde_json::to_string(message).unwrap_or_default();
    line.push('\n');
    line
}

/// What a client connection tells the hub's loop, which owns the table of
/// attached runs.
enum HubInput {
    Attach {
        nonce: String,
        lines: mpsc::UnboundedSender<String>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Detach {
        nonce: String,
        lines: mpsc::UnboundedSender<String>,
    },
}

/// The hub's socket; removed from disk when dropped.
struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn listen(dir: &Path, application_id: u64) -> Result<Listener, Error> {
    let path = socket_path(dir, application_id);
    let hub_error = |what: &str, e: &dyn std::fmt::Display| {
        Error::Hub(format!("{what} {}: {e}", path.display()))
    };
    local::private_dir(dir).map_err(|e| hub_error("state directory for", &e))?;
    if UnixStream::connect(&path).await.is_ok() {
        return Err(Error::Hub(format!(
            "another hub for this bot is already listening on {}",
            path.display()
        )));
    }
    // A socket left behind by a hub that died.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| hub_error("could not listen on", &e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| hub_error("could not restrict", &e))?;
    Ok(Listener { listener, path })
}

/// What woke the hub's loop.
enum Wake {
    Stop,
    Client(UnixStream),
    Input(HubInput),
    Click(Box<Interaction>),
    GatewayEnded(String),
}

/// Runs the hub until `stop` resolves: one session (opened within the
/// budget rules, and opened again the same way if Discord ends it for
/// good), the socket, and the table of attached runs. Errors when no
/// session can be had.
pub async fn serve(
    starter: Starter,
    console: &Console,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let dir = local::state_dir();
    let application_id = starter.application_id;
    let mut gateway = starter.start(console).await?;
    let listener = listen(&dir, application_id).await?;
    console.status(&format!(
        "hub ready: handing Discord clicks of application {application_id} to runs on this host ({})",
        listener.path.display()
    ));
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel();
    let mut runs: HashMap<String, mpsc::UnboundedSender<String>> = HashMap::new();
    tokio::pin!(stop);
    loop {
        let wake = tokio::select! {
            () = &mut stop => Wake::Stop,
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => Wake::Client(stream),
                Err(_) => continue,
            },
            Some(input) = inputs.recv() => Wake::Input(input),
            Some(click) = gateway.interactions.recv() => Wake::Click(Box::new(click)),
            _ = gateway.ended.changed() => Wake::GatewayEnded(
                gateway.ended.borrow().clone().unwrap_or_default()
            ),
        };
        match wake {
            Wake::Stop => break,
            Wake::Client(stream) => {
                tokio::spawn(client(stream, inputs_tx.clone(), application_id));
            }
            Wake::Input(HubInput::Attach {
                nonce,
                lines,
                reply,
            }) => {
                let taken = runs.get(&nonce).is_some_and(|l| !l.is_closed());
                let _ = reply.send(if taken {
                    Err("that run is already attached".into())
                } else {
                    runs.insert(nonce, lines);
                    Ok(())
                });
            }
            Wake::Input(HubInput::Detach { nonce, lines }) => {
                if runs.get(&nonce).is_some_and(|l| l.same_channel(&lines)) {
                    runs.remove(&nonce);
                }
            }
            Wake::Click(interaction) => route(&runs, &interaction),
            Wake::GatewayEnded(why) => {
                console.error(&format!(
                    "hub: the Discord gateway connection ended ({why}); starting a new session"
                ));
                gateway.shutdown(gateway::SHUTDOWN_GRACE).await;
                gateway = starter.start(console).await?;
                console.status("hub ready again");
            }
        }
    }
    drop(listener);
    gateway.shutdown(gateway::SHUTDOWN_GRACE).await;
    Ok(())
}

/// Hands a click to the run whose nonce it carries; anything else is
/// dropped unanswered.
fn route(runs: &HashMap<String, mpsc::UnboundedSender<String>>, interaction: &Interaction) {
    let custom_id = match interaction {
        Interaction::Component(c) => &c.data.custom_id,
        Interaction::Modal(m) => &m.data.custom_id,
        _ => return,
    };
    let Some(lines) = clicks::nonce_of(custom_id).and_then(|nonce| runs.get(nonce)) else {
        return;
    };
    if let Some(interaction) = wire_form(interaction) {
        let _ = lines.send(line_of(&FromHub::Interaction { interaction }));
    }
}

/// A click as Discord sends it. serenity serializes an [`Interaction`]
/// without its `type` (the tag it reads it by), so the tag is put back.
fn wire_form(interaction: &Interaction) -> Option<Value> {
    let (mut value, kind) = match interaction {
        Interaction::Component(c) => (serde_json::to_value(c).ok()?, 3),
        Interaction::Modal(m) => (serde_json::to_value(m).ok()?, 5),
        _ => return None,
    };
    value.as_object_mut()?.insert("type".into(), kind.into());
    Some(value)
}

/// One attached run: checked, registered, then fed its clicks until
/// either side closes.
async fn client(stream: UnixStream, inputs: mpsc::UnboundedSender<HubInput>, application_id: u64) {
    // Same user, and not from inside a run: an agent must not be able to
    // read another run's clicks (see `local::peer_is_a_person`).
    let allowed = match stream.peer_cred() {
        Ok(cred) => {
            cred.uid() == nix::unistd::getuid().as_raw() && local::peer_is_a_person(cred.pid())
        }
        Err(_) => false,
    };
    let (read, mut write) = stream.into_split();
    if !allowed {
        let refusal = line_of(&FromHub::Refused {
            why: "only the user's own runs, started outside any gatekeep run, may attach".into(),
        });
        let _ = write.write_all(refusal.as_bytes()).await;
        return;
    }
    let mut reader = BufReader::new(read).lines();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next_line()).await;
    let Ok(Ok(Some(hello))) = hello else { return };
    let nonce = match serde_json::from_str::<ToHub>(&hello) {
        Ok(ToHub::Attach { nonce }) if Nonce::is_valid(&nonce) => nonce,
        _ => return,
    };
    let (lines, mut outgoing) = mpsc::unbounded_channel();
    let (reply, answer) = oneshot::channel();
    let attach = HubInput::Attach {
        nonce: nonce.clone(),
        lines: lines.clone(),
        reply,
    };
    if inputs.send(attach).is_err() {
        return;
    }
    let first = match answer.await {
        Ok(Ok(())) => FromHub::Attached { application_id },
        Ok(Err(why)) => FromHub::Refused { why },
        Err(_) => return,
    };
    let refused = matches!(first, FromHub::Refused { .. });
    if write.write_all(line_of(&first).as_bytes()).await.is_err() || refused {
        let _ = inputs.send(HubInput::Detach { nonce, lines });
        return;
    }
    loop {
        tokio::select! {
            line = outgoing.recv() => {
                let Some(line) = line else { break };
                if write.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            read = reader.next_line() => match read {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            },
        }
    }
    let _ = inputs.send(HubInput::Detach { nonce, lines });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A button click as Discord sends it (the fields serenity requires).
    fn click(custom_id: &str) -> Interaction {
        from_discord(3, &json!({ "custom_id": custom_id, "component_type": 2 }))
    }

    /// A submitted "deny with reason" form.
    fn modal(custom_id: &str, reason: &str) -> Interaction {
        let data = json!({ "custom_id": custom_id, "components": [
            { "type": 1, "components": [{ "type": 4, "custom_id": "reason", "value": reason }] }
        ]});
        from_discord(5, &data)
    }

    fn from_discord(kind: u8, data: &Value) -> Interaction {
        let user = json!({ "id": "4242", "username": "alice", "discriminator": "0", "global_name": "Alice", "avatar": null, "bot": false, "public_flags": 0 });
        let payload = json!({
            "id": "900001", "application_id": "2000", "type": kind,
            "data": data.clone(),
            "guild_id": "3000", "channel_id": "600",
            "member": { "user": user, "nick": null, "avatar": null, "roles": ["7"], "joined_at": "2026-01-01T00:00:00+00:00",
                        "premium_since": null, "deaf": false, "mute": false, "flags": 0, "pending": false,
                        "permissions": "16", "communication_disabled_until": null },
            "token": "itoken900001", "version": 1,
            "message": { "id": "700", "channel_id": "600", "author": user, "content": "", "timestamp": "2026-01-01T00:00:00+00:00",
                         "edited_timestamp": null, "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
                         "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0 },
            "app_permissions": "2251799813685247", "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": { "0": "3000" }, "context": 0, "attachment_size_limit": 10_485_760,
        });
        serde_json::from_value(payload).expect("serenity reads the click")
    }

    #[test]
    fn a_reason_handed_over_reads_as_the_same_reason() {
        let original = modal("gk1:00112233aabbccdd:3:r", "not on a Friday");
        let back: Interaction =
            serde_json::from_value(wire_form(&original).expect("wire form")).expect("read back");
        let (Interaction::Modal(a), Interaction::Modal(b)) = (&original, &back) else {
            panic!("not a modal submission");
        };
        assert_eq!(a.data.custom_id, b.data.custom_id);
        assert_eq!(
            format!("{:?}", a.data.components),
            format!("{:?}", b.data.components)
        );
    }

    #[test]
    fn a_click_handed_over_reads_as_the_same_click() {
        let original = click("gk1:00112233aabbccdd:3:a");
        let line = line_of(&FromHub::Interaction {
            interaction: wire_form(&original).expect("a click has a wire form"),
        });
        let Ok(FromHub::Interaction { interaction }) = serde_json::from_str(&line) else {
            panic!("not an interaction line: {line}");
        };
        let back: Interaction = serde_json::from_value(interaction).expect("read back");
        let (Interaction::Component(a), Interaction::Component(b)) = (&original, &back) else {
            panic!("not a component click");
        };
        assert_eq!(a.data.custom_id, b.data.custom_id);
        assert_eq!(a.token, b.token);
        assert_eq!(a.user.id, b.user.id);
        assert_eq!(
            a.member.as_ref().map(|m| &m.roles),
            b.member.as_ref().map(|m| &m.roles)
        );
    }
}

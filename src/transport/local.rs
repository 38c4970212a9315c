//! Approvals from another terminal: `gatekeep pending`, `gatekeep approve N`,
//! `gatekeep deny N [--reason …]` talk to the live run through a Unix socket.
//!
//! Every run owns a socket in a per-user state directory (`$XDG_RUNTIME_DIR/
//! gatekeep`, else `/tmp/gatekeep-<uid>`) that only its owner may enter
//! (0700, checked, never trusted blindly), and every connection's peer must
//! be the same user (`SO_PEERCRED`). A decision made here goes through the
//! same approval registry as Discord and the terminal: the first decision
//! wins, the other channels show who decided, the audit log records the
//! channel.
//!
//! The protocol is one JSON line each way per connection, so the client
//! needs nothing but the socket.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::approval::messages::{DecideOutcome, Decider, Notice};
use crate::approval::{Actor, Channel, Shown, Verdict};
use crate::platform;
use crate::redact::Redactor;

/// Longest request line a client may send.
const MAX_LINE: usize = 64 * 1024;
/// Bound on one client conversation.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("could not prepare the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    #[error("the state directory {0} is not private to this user (it must be owned by you with mode 0700); remove it or fix its permissions")]
    UnsafeStateDir(PathBuf),
    #[error("could not open the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("no gatekeep run is live for this user (looked in {0})")]
    NoRun(PathBuf),
    #[error("several gatekeep runs are live; pass --run with one of: {0}")]
    Ambiguous(String),
    #[error("no live gatekeep run with id `{0}`")]
    UnknownRun(String),
    #[error("talking to run {run}: {detail}")]
    Talk { run: String, detail: String },
}

/// One line from a client.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientRequest {
    Pending,
    Decide {
        number: u32,
        approve: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A pending request as another terminal sees it (already redacted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingItem {
    pub number: u32,
    pub kind: String,
    pub subject: String,
    #[serde(default)]
    pub agent: Option<String>,
    /// Seconds until the request is denied.
    pub time_left: u64,
}

/// The one line back.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClientResponse {
    Pending {
        pending: Vec<PendingItem>,
    },
    /// The decision won; `settlement` says what it became.
    Accepted {
        settlement: String,
    },
    /// It did not: why, in words.
    Refused {
        why: String,
    },
    Error {
        message: String,
    },
}

/// The per-user directory holding every live run's socket.
#[must_use]
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("gatekeep"),
        None => std::env::temp_dir().join(format!("gatekeep-{}", nix::unistd::getuid())),
    }
}

/// Create (or check) the state directory: ours, and closed to others.
pub(crate) fn private_dir(dir: &Path) -> Result<(), ControlError> {
    let err = |source| ControlError::StateDir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(err)?;
    let mine = meta.uid() == nix::unistd::getuid().as_raw();
    if !meta.is_dir() || !mine || meta.permissions().mode() & 0o077 != 0 {
        return Err(ControlError::UnsafeStateDir(dir.to_owned()));
    }
    Ok(())
}

/// A run's control socket. Removed from disk when dropped.
#[derive(Debug)]
pub struct Endpoint {
    listener: UnixListener,
    path: PathBuf,
    run_id: String,
}

impl Endpoint {
    /// Open the socket for run `run_id` in `dir` (normally [`state_dir`]).
    pub fn open(dir: &Path, run_id: &str) -> Result<Self, ControlError> {
        private_dir(dir)?;
        let path = dir.join(format!("{run_id}.sock"));
        let listener = UnixListener::bind(&path).map_err(|source| ControlError::Bind {
            path: path.clone(),
            source,
        })?;
        // The directory already keeps others out; the socket itself too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ControlError::Bind {
                path: path.clone(),
                source,
            },
        )?;
        Ok(Self {
            listener,
            path,
            run_id: run_id.to_owned(),
        })
    }

    #[must_use]
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Serve clients until the run ends (`Notice::RunEnded` or the notices
    /// close). Keeps its own view of what is pending from the notices.
    pub async fn serve(
        self,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        decider: Decider,
        redactor: Redactor,
    ) {
        let mut pending: BTreeMap<u32, Shown> = BTreeMap::new();
        let actor = super::local_user(Channel::Local);
        loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(Notice::Show(request)) => {
                        pending.insert(request.number, request);
                    }
                    Some(Notice::Settled { number, .. }) => {
                        pending.remove(&number);
                    }
                    Some(Notice::Decided { .. } | Notice::Refused { .. } | Notice::Undelivered { .. } | Notice::Intruded(_) | Notice::Closing(_) | Notice::Progress(_)) => {}
                    Some(Notice::RunEnded(_)) | None => break,
                },
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    // One conversation at a time: decisions are serialized by
                    // the approval task anyway, and each is bounded.
                    let talk = converse(stream, &pending, &decider, &redactor, &actor);
                    let _ = tokio::time::timeout(CLIENT_TIMEOUT, talk).await;
                }
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the peer is outside every gatekeep run: none of its ancestors is
/// a `gatekeep` process. Every process the agent starts descends from the
/// run's gatekeep — daemonised ones too, since gatekeep is their subreaper —
/// and no process can rename its ancestors. A peer whose ancestry cannot be
/// read to its end (a zombie leader whose other thread connects, a parent
/// that vanished, a chain deeper than the walk) is refused: an empty or cut
/// ancestry proves nothing.
pub(crate) fn peer_is_a_person(pid: Option<i32>) -> bool {
    let Some(pid) = pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0) else {
        return false;
    };
    let me = std::process::id();
    platform::ancestors_of(pid).is_some_and(|ancestors| {
        !ancestors.into_iter().any(|ancestor| {
            ancestor == me || platform::command_name(ancestor).as_deref() == Some("gatekeep")
        })
    })
}

async fn converse(
    stream: UnixStream,
    pending: &BTreeMap<u32, Shown>,
    decider: &Decider,
    redactor: &Redactor,
    actor: &Actor,
) -> io::Result<()> {
    // The directory is private already; the peer check makes a mistake in
    // its permissions not enough to approve anything. The agent's tools run
    // as the same user, so the peer must also not descend from a gatekeep
    // run (this one or another): see `peer_is_a_person`.
    let refusal = match stream.peer_cred() {
        Ok(cred) if cred.uid() != nix::unistd::getuid().as_raw() => {
            Some("not the user who started this run")
        }
        Ok(cred) if peer_is_a_person(cred.pid()) => None,
        _ => Some("a process started by a gatekeep run (the agent) cannot see or answer requests"),
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    reader.read_line(&mut line).await?;
    let response = if let Some(why) = refusal {
        // On the record: an agent trying this is worth knowing about.
        decider.refused(None, actor.clone(), why.to_owned()).await;
        ClientResponse::Error {
            message: why.to_owned(),
        }
    } else {
        match serde_json::from_str::<ClientRequest>(&line) {
            Ok(request) => answer(request, pending, decider, redactor, actor).await,
            Err(e) => ClientResponse::Error {
                message: format!("unreadable request: {e}"),
            },
        }
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "{}".to_owned());
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    write.shutdown().await
}

async fn answer(
    request: ClientRequest,
    pending: &BTreeMap<u32, Shown>,
    decider: &Decider,
    redactor: &Redactor,
    actor: &Actor,
) -> ClientResponse {
    match request {
        ClientRequest::Pending => ClientResponse::Pending {
            pending: pending.values().map(|r| item(r, redactor)).collect(),
        },
        ClientRequest::Decide {
            number,
            approve,
            reason,
        } => {
            let verdict = if approve {
                Verdict::Approve
            } else {
                Verdict::Deny { reason }
            };
            match decider.decide(number, verdict, actor.clone()).await {
                DecideOutcome::Accepted(s) => ClientResponse::Accepted {
                    settlement: s.to_string(),
                },
                DecideOutcome::AlreadyDecided(s) => ClientResponse::Refused {
                    why: format!("already decided: {s}"),
                },
                DecideOutcome::InProgress => ClientResponse::Refused {
                    why: "another decision for it is being sent".to_owned(),
                },
                DecideOutcome::Unknown => ClientResponse::Refused {
                    why: format!("there is no request #{number} in this run"),
                },
                DecideOutcome::RunEnded => ClientResponse::Refused {
                    why: "the run is ending; nothing more is forwarded".to_owned(),
                },
                DecideOutcome::WrongKind => ClientResponse::Refused {
                    why: format!("#{number} is a question: answer it, it cannot be approved"),
                },
                DecideOutcome::Counted(p) => ClientResponse::Accepted {
                    settlement: format!(
                        "{p}; OpenCode hears nothing until another approver agrees"
                    ),
                },
                DecideOutcome::SameApprover(p) => ClientResponse::Refused {
                    why: format!(
                        "you approved it already ({p}): another person must approve it too"
                    ),
                },
                DecideOutcome::Failed(e) => ClientResponse::Refused {
                    why: format!("could not deliver it to OpenCode ({e}); it is still open"),
                },
            }
        }
    }
}

fn item(request: &Shown, redactor: &Redactor) -> PendingItem {
    let left = request
        .deadline
        .wall
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    PendingItem {
        number: request.number,
        kind: request.ask.kind().to_owned(),
        subject: redactor.redact(request.ask.summary()).into_owned(),
        agent: request.ask.agent.clone(),
        time_left: left.as_secs(),
    }
}

/// A fresh id for a run: short enough to type.
#[must_use]
pub fn new_run_id() -> String {
    use rand::Rng;
    let n: u32 = rand::thread_rng().gen();
    format!("{n:08x}")
}

/// The live runs in `dir`: ids whose socket accepts a connection. Sockets
/// of runs that died without cleaning up are removed on the way.
pub async fn live_runs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sock"))
            .map(str::to_owned)
        else {
            continue;
        };
        if UnixStream::connect(&path).await.is_ok() {
            runs.push(id);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    runs.sort();
    runs
}

/// Pick the run to talk to: the one given, or the only live one.
pub async fn pick_run(dir: &Path, given: Option<&str>) -> Result<String, ControlError> {
    let runs = live_runs(dir).await;
    match given {
        Some(id) if runs.iter().any(|r| r == id) => Ok(id.to_owned()),
        Some(id) => Err(ControlError::UnknownRun(id.to_owned())),
        None => match runs.as_slice() {
            [] => Err(ControlError::NoRun(dir.to_owned())),
            [one] => Ok(one.clone()),
            many => Err(ControlError::Ambiguous(many.join(", "))),
        },
    }
}

/// Send one request to run `run_id` and read its answer.
pub async fn ask(
    dir: &Path,
    run_id: &str,
    request: &ClientRequest,
) -> Result<ClientResponse, ControlError> {
    let talk = |detail: String| ControlError::Talk {
        run: run_id.to_owned(),
        detail,
    };
    let exchange = async {
        let stream = UnixStream::connect(dir.join(format!("{run_id}.sock")))
            .await
            .map_err(|e| talk(e.to_string()))?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request).map_err(|e| talk(e.to_string()))?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| talk(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(read)
            .take(MAX_LINE as u64 * 16)
            .read_line(&mut answer)
            .await
            .map_err(|e| talk(e.to_string()))?;
        serde_json::from_str(&answer).map_err(|e| talk(format!("unreadable answer: {e}")))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| talk("no answer in time".to_owned()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_reads_as_documented() {
        let decide: ClientRequest =
            serde_json::from_str(r#"{"op":"decide","number":2,"approve":false,"reason":"no"}"#)
                .expect("valid");
        assert_eq!(
            decide,
            ClientRequest::Decide {
                number: 2,
                approve: false,
                reason: Some("no".to_owned())
            }
        );
        assert_eq!(
            serde_json::to_string(&ClientRequest::Pending).expect("json"),
            r#"{"op":"pending"}"#
        );
    }

    #[test]
    fn a_state_directory_open_to_others_is_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("gk");
        private_dir(&dir).expect("created private");
        assert_eq!(
            std::fs::metadata(&dir)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(matches!(
            private_dir(&dir),
            Err(ControlError::UnsafeStateDir(_))
        ));
    }
}

//! Gateway sessions, spent knowingly (docs/design.md, "Many runs, one bot").
//!
//! Discord lets a bot start a gateway session (IDENTIFY) once per 5 seconds
//! per bucket, and about 1,000 times a day. A too-early IDENTIFY is refused
//! with opcode 9; when the daily budget runs out, Discord resets the bot's
//! token and every process using it is cut off. Every gatekeep session is
//! shard 0 of 1, so all of them fall in bucket 0 (`0 % max_concurrency`):
//! a larger `max_concurrency` does not let two of them start together.
//!
//! So session starts on one host take turns on a lock file named after the
//! bot's application id (never the token) in the private state directory.
//! The lock is held until READY, and the file records when the last READY
//! came: the next start waits until [`IDENTIFY_SPACING`] after it. The daily
//! budget is read inside the lock, just before the IDENTIFY it is about.
//! Runs on other hosts cannot share the lock; an opcode 9 they cause is
//! retried by the gateway connection after [`IDENTIFY_SPACING`].

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use secrecy::SecretString;
use tokio::time::Instant;

use super::gateway::{self, Gateway, IDENTIFY_SPACING};
use super::rest::Rest;
use super::Error;
use crate::console::Console;
use crate::redact::Redactor;
use crate::transport::local;

/// How often a contended lock is tried again.
const POLL: Duration = Duration::from_millis(50);

/// The host's turn to start a session. Taken before the budget is read;
/// dropped once READY came (or the attempt failed), recording the time so
/// the next start keeps its distance.
pub struct Slot {
    lock: Flock<File>,
}

impl Slot {
    /// Waits for the lock and then for the spacing since the last start;
    /// `waiting` is called once if either makes us wait.
    pub async fn take(
        dir: &Path,
        application_id: u64,
        waiting: &mut (dyn FnMut() + Send),
    ) -> Result<Self, Error> {
        let path = lock_path(dir, application_id);
        let slot_error = |source: io::Error| Error::Slot {
            path: path.clone(),
            source,
        };
        local::private_dir(dir).map_err(|e| slot_error(io::Error::other(e.to_string())))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(slot_error)?;
        let mut told = false;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                    file = back;
                    if !std::mem::replace(&mut told, true) {
                        waiting();
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err((_, errno)) => return Err(slot_error(errno.into())),
            }
        };
        let slot = Self { lock };
        if let Some(wait) = slot.wait_left() {
            if !told {
                waiting();
            }
            tokio::time::sleep(wait).await;
        }
        Ok(slot)
    }

    /// How much of the spacing since the last start is still to wait.
    fn wait_left(&self) -> Option<Duration> {
        let mut buf = [0u8; 32];
        let n = self.lock.read_at(&mut buf, 0).ok()?;
        let last: u64 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
        let since = now_millis().checked_sub(last).map(Duration::from_millis)?;
        IDENTIFY_SPACING.checked_sub(since).filter(|d| !d.is_zero())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Recorded on every path: a failed attempt may have spent its
        // IDENTIFY too.
        let stamp = now_millis().to_string();
        let _ = self.lock.set_len(0);
        let _ = self.lock.write_all_at(stamp.as_bytes(), 0);
    }
}

/// The lock file of one bot on this host.
#[must_use]
pub fn lock_path(dir: &Path, application_id: u64) -> PathBuf {
    dir.join(format!("identify-{application_id}.lock"))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What starting a session needs: shared by a run (its own session, or
/// the fallback when the hub goes away) and by the hub.
#[derive(Clone)]
pub struct Starter {
    pub rest: Arc<Rest>,
    /// Scheme and host of the API.
    pub base: String,
    pub token: SecretString,
    /// `--identify-reserve`.
    pub reserve: u32,
    /// `--connect-timeout`: the host's queue included.
    pub within: Duration,
    pub application_id: u64,
    /// Serenity's error text must not carry a secret.
    pub redactor: Redactor,
}

impl Starter {
    /// Checks the API base, builds the REST client and asks Discord for
    /// the bot's application id (what the host's lock and hub are named
    /// after).
    pub async fn prepare(
        api_base: &str,
        token: &SecretString,
        reserve: u32,
        within: Duration,
        redactor: Redactor,
    ) -> Result<Self, Error> {
        let base = api_base.trim_end_matches('/').to_owned();
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
        let rest = Arc::new(Rest::new(&base, token).map_err(Error::Rest)?);
        let application_id = rest
            .application_id()
            .await
            .map_err(|source| Error::Application {
                base: base.clone(),
                source,
            })?;
        Ok(Self {
            rest,
            base,
            token: token.clone(),
            reserve,
            within,
            application_id,
            redactor,
        })
    }

    /// A new session: the host's slot, the budget, IDENTIFY, READY; all
    /// within `self.within`.
    pub async fn start(&self, console: &Console) -> Result<Gateway, Error> {
        let deadline = Instant::now() + self.within;
        let attempt = async {
            let dir = local::state_dir();
            let mut waiting = || console.status("waiting for a Discord connection slot");
            let slot = Slot::take(&dir, self.application_id, &mut waiting).await?;
            let bot = self
                .rest
                .gateway_bot()
                .await
                .map_err(|source| Error::GatewayLookup {
                    base: self.base.clone(),
                    source,
                })?;
            // Never be the session start that makes Discord reset the token.
            if let Some(budget) = bot.budget {
                if budget.remaining <= u64::from(self.reserve) {
                    return Err(Error::SessionBudget {
                        budget,
                        reserve: self.reserve,
                    });
                }
            }
            if !(bot.url.starts_with("ws://") || bot.url.starts_with("wss://")) {
                return Err(Error::GatewayUrl {
                    base: self.base.clone(),
                    url: bot.url,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let gateway = gateway::start(&self.token, bot.url, left).await;
            drop(slot);
            gateway.map_err(|e| match e {
                Error::Gateway(msg) => Error::Gateway(self.redactor.redact(&msg).into_owned()),
                other => other,
            })
        };
        // The READY wait is bounded by what is left; this bounds the queue.
        tokio::time::timeout_at(deadline, attempt)
            .await
            .map_err(|_| Error::ConnectTimeout(self.within))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_start_on_the_host_waits_its_turn_and_the_spacing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let first = Slot::take(&state, 42, &mut || panic!("nothing to wait for"))
            .await
            .expect("first slot");
        let waited = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let w = std::sync::Arc::clone(&waited);
        let state2 = state.clone();
        let second = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut told = || {
                w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            };
            let slot = Slot::take(&state2, 42, &mut told).await.expect("second");
            (started.elapsed(), slot)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(first);
        let (took, _slot) = second.await.expect("join");
        assert!(took >= IDENTIFY_SPACING, "started after {took:?}");
        assert_eq!(waited.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_bot_does_not_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let _first = Slot::take(&state, 1, &mut || {}).await.expect("bot 1");
        let started = std::time::Instant::now();
        let _other = Slot::take(&state, 2, &mut || panic!("bot 2 never waits"))
            .await
            .expect("bot 2");
        assert!(started.elapsed() < Duration::from_secs(1));
        let name = lock_path(&state, 1);
        assert!(name.ends_with("identify-1.lock"), "{}", name.display());
    }
}

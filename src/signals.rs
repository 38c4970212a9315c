//! Termination signals as reasons to end the run.
//!
//! gatekeep's OpenCode server runs in its own process group, so a Ctrl-C at
//! the terminal reaches gatekeep only; gatekeep then tears the run down in
//! order (deny pending, abort, dispose, stop the group). A second signal
//! during teardown skips the polite steps.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::approval::EndReason;

/// SIGINT, SIGTERM and SIGHUP, installed once at start so no signal that
/// arrives during start-up is lost.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Wait for the next termination signal. Cancel-safe.
    pub async fn recv(&mut self) -> EndReason {
        tokio::select! {
            _ = self.int.recv() => EndReason::Interrupted,
            _ = self.term.recv() => EndReason::Terminated,
            _ = self.hup.recv() => EndReason::HungUp,
        }
    }
}

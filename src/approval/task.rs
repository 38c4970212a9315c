//! The approval task: the one owner of the registry.
use tokio::sync::oneshot;

use super::{Actor, Verdict};
use crate::transport::DecideOutcome;

/// Messages into the approval task.
#[derive(Debug)]
pub enum Input {
    Decide {
        number: u32,
        verdict: Verdict,
        actor: Actor,
        ack: oneshot::Sender<DecideOutcome>,
    },
    ChannelFailed {
        number: u32,
        detail: String,
    },
}

//! Approval channels: where a human sees a request and answers it.
//!
//! Every transport is a task that receives [`Notice`]s from the approval task
//! and sends decisions back through a [`Decider`]. Rendering is kept in pure
//! functions inside each transport so it can be snapshot-tested; the
//! connection and the outbox are separate from it.
//!
//! A transport never settles anything itself: it asks, and the approval task
//! answers whether the decision won (first decision wins; docs/design.md, "The approval registry").

pub mod discord;
pub mod local;
pub mod terminal;

use crate::approval::{Actor, Channel};

/// The user at this machine, deciding through `channel` (the terminal, or
/// `gatekeep approve` from another terminal): named by `USER`/`LOGNAME`,
/// else by uid.
#[must_use]
pub fn local_user(channel: Channel) -> Actor {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()));
    Actor {
        channel,
        id: name.clone(),
        name,
    }
}

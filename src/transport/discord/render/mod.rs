//! Discord payloads as pure functions of what they show, so every message
//! can be snapshot-tested without a network.
//!
//! Agent text is untrusted: it is redacted, stripped of control and bidi
//! characters, escaped (markdown outside code blocks, fence breakout inside
//! them), bounded to Discord's limits (whatever does not fit goes into an
//! attached file), and every payload carries `allowed_mentions: {parse: []}`
//! so nothing the agent writes can ping anyone.
//!
//! One file per message: [`text`] holds the rules every piece of agent text
//! goes through; [`request`], [`question`], [`group`], [`run`] and [`reply`]
//! build the messages.

mod group;
mod question;
mod reply;
mod request;
mod run;
mod text;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::Ping;

pub use group::{group_edit, group_message};
pub use question::answer_modal;
pub use reply::{deferred_ephemeral, ephemeral, followup_edit, reason_modal, reminder};
pub use request::{request_final_edit, request_message, request_progress_edit, settlement_text};
pub use run::{run_start, run_start_final, run_summary, thread_name};
pub use text::escape_markdown;

/// Embed colours: pending (blurple), approved (green), denied (red), neutral.
const PENDING: u32 = 0x0058_65F2;
const APPROVED: u32 = 0x0057_F287;
const DENIED: u32 = 0x00ED_4245;
const NEUTRAL: u32 = 0x0095_A5A6;

/// A message payload and the files to attach with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub payload: Value,
    pub files: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub filename: String,
    pub content: Vec<u8>,
}

/// `allowed_mentions` with nothing allowed: on every message and edit.
#[must_use]
pub fn no_mentions() -> Value {
    json!({ "parse": [] })
}

/// `allowed_mentions` that notify exactly the people of `ping`, whatever the
/// text says (Discord takes at most 100 of each, as strings).
#[must_use]
pub fn mentions_of(ping: &Ping) -> Value {
    let ids = |v: &[u64]| v.iter().take(100).map(u64::to_string).collect::<Vec<_>>();
    json!({ "parse": [], "users": ids(&ping.users), "roles": ids(&ping.roles) })
}

/// Content that mentions `ping`: gatekeep's own mention tokens, never agent
/// text (that stays in the embed, escaped, where Discord notifies nobody).
fn ping_line(ping: &Ping) -> String {
    let users = ping.users.iter().take(100).map(|u| format!("<@{u}>"));
    let roles = ping.roles.iter().take(100).map(|r| format!("<@&{r}>"));
    users.chain(roles).collect::<Vec<_>>().join(" ")
}

/// Make a newly posted, waiting message notify `ping`. Only posts of
/// waiting requests (and reminders) ping; edits and settled states never do.
pub fn ping(payload: &mut Value, ping: &Ping) {
    if ping.is_empty() {
        return;
    }
    payload["content"] = Value::String(ping_line(ping));
    payload["allowed_mentions"] = mentions_of(ping);
}

/// Seconds since the Unix epoch, for `<t:…>` timestamps.
fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

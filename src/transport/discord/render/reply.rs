//! Answers to clicks (private, deferred, follow-ups), the deny-reason modal,
//! and the reminder that pings again about waiting requests.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::super::clicks::{encode, Action, Nonce};
use super::{mentions_of, no_mentions, ping_line, unix};
use crate::config::Ping;

/// Interaction callback: a private message only the clicker sees.
#[must_use]
pub fn ephemeral(text: &str) -> Value {
    json!({
        "type": 4,
        "data": { "content": text, "flags": 64, "allowed_mentions": no_mentions() }
    })
}

/// Interaction callback: "thinking…", privately; the result follows as an
/// edit of this response.
#[must_use]
pub fn deferred_ephemeral() -> Value {
    json!({ "type": 5, "data": { "flags": 64 } })
}

/// Edit of a deferred response.
#[must_use]
pub fn followup_edit(text: &str) -> Value {
    json!({ "content": text, "allowed_mentions": no_mentions() })
}

/// Interaction callback: the "deny with reason" modal for request `number`.
#[must_use]
pub fn reason_modal(nonce: &Nonce, number: u32) -> Value {
    json!({
        "type": 9,
        "data": {
            "custom_id": encode(nonce, number, Action::ReasonSubmitted),
            "title": format!("Deny request #{number}"),
            "components": [{
                "type": 1,
                "components": [{
                    "type": 4,
                    "custom_id": "reason",
                    "style": 2,
                    "label": "Reason (the agent receives it)",
                    "min_length": 1,
                    "max_length": 1000,
                    "required": true,
                }]
            }]
        }
    })
}

/// A reply in the thread to the first of the waiting requests: they still
/// wait, until when, and the people of `ping` once more.
#[must_use]
pub fn reminder(
    waiting: &[(u32, SystemTime, Option<String>)],
    ping: &Ping,
    reply_to: u64,
) -> Value {
    let list = waiting
        .iter()
        .map(|(n, deadline, link)| {
            let name = link
                .as_ref()
                .map_or_else(|| format!("#{n}"), |url| format!("[#{n}]({url})"));
            format!("{name} (denied <t:{}:R>)", unix(*deadline))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let s = if waiting.len() == 1 { "" } else { "s" };
    let mut content = format!("⏰ Still waiting for a decision: request{s} {list}");
    if !ping.is_empty() {
        content = format!("{} {content}", ping_line(ping));
    }
    json!({
        "content": content,
        "allowed_mentions": mentions_of(ping),
        "message_reference": { "message_id": reply_to.to_string(), "fail_if_not_exists": false },
    })
}

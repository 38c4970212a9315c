//! Many requests waiting at once, in one message with menus and
//! Approve all / Deny all, so the channel is not flooded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::super::clicks::{encode, Action, Nonce};
use super::request::settlement_text;
use super::text::{
    clean, code_block, escape_markdown, field, truncate, EMBED_TOTAL, FIELD, MAX_TEXT_BYTES,
};
use super::{no_mentions, unix, Attachment, Rendered, NEUTRAL, PENDING};
use crate::approval::{Settlement, Shown};
use crate::redact::Redactor;

/// How much of one request a group message shows inline.
pub(super) const GROUP_SUBJECT: usize = 250;

/// One message for several requests that arrived together (past the
/// outbox's threshold): a field per request, select menus to approve or
/// deny any of them, and buttons to decide all at once. `states` holds the
/// requests already settled; they leave the menus, and when none is open
/// the components are removed. `group` is the group's id (its first
/// request's number), which the component ids carry.
#[must_use]
pub fn group_message(
    group: u32,
    requests: &[Shown],
    states: &BTreeMap<u32, (Settlement, SystemTime)>,
    redactor: &Redactor,
    nonce: &Nonce,
) -> Rendered {
    let mut fields = Vec::new();
    let mut file = String::new();
    let mut open = Vec::new();
    // Discord counts every field against one 6000-character total: each
    // request gets an equal share (title and description take < 500), and
    // its preview shrinks to fit; the attached file has everything.
    let share = (EMBED_TOTAL - 500) / requests.len().max(1);
    let note = "\n*Full text in the attached file.*";
    for request in requests {
        let subject = clean(redactor, request.ask.summary(), MAX_TEXT_BYTES);
        let agent = request.ask.agent.as_deref().map_or_else(
            || "main agent".to_owned(),
            |a| format!("subagent {}", escape_markdown(&clean(redactor, a, 200))),
        );
        let name = format!(
            "#{} · {} · {agent}",
            request.number,
            escape_markdown(&clean(redactor, request.ask.kind(), 64))
        );
        let name = truncate(&name, 120).0;
        let room = share.saturating_sub(name.chars().count()).min(FIELD - 1);
        let decision = states
            .get(&request.number)
            .map(|(settlement, at)| truncate(&settlement_text(settlement, *at), room / 3).0);
        let fixed =
            12 + note.chars().count() + decision.as_ref().map_or(0, |d| d.chars().count() + 1);
        // Escaping can double the preview.
        let preview = GROUP_SUBJECT.min(room.saturating_sub(fixed) / 2);
        let (shown, cut) = truncate(&subject, preview);
        let mut value = code_block(
            if request.ask.command().is_some() {
                "sh"
            } else {
                ""
            },
            &shown,
        );
        if cut || request.ask.diff().is_some() {
            value.push_str(note);
        }
        let _ = write!(
            file,
            "#{} {}\n{subject}\n",
            request.number,
            clean(redactor, request.ask.kind(), 64)
        );
        if let Some(description) = &request.ask.description() {
            let _ = writeln!(file, "({})", clean(redactor, description, 4096));
        }
        if let Some(diff) = &request.ask.diff() {
            let _ = writeln!(file, "{}", clean(redactor, diff, MAX_TEXT_BYTES));
        }
        file.push('\n');
        match decision {
            Some(decision) => {
                value.push('\n');
                value.push_str(&decision);
            }
            None => open.push(request),
        }
        fields.push(field(&name, value, false));
    }
    let deadline = requests
        .iter()
        .map(|r| r.deadline.wall)
        .min()
        .map_or(0, unix);
    let description = if open.is_empty() {
        "All decided.".to_owned()
    } else {
        format!("{} open · first deadline <t:{deadline}:R>. Choose requests in a menu, or decide all at once.", open.len())
    };
    let components = group_components(group, &open, redactor, nonce);
    let first = requests.first().map_or(group, |r| r.number);
    let last = requests.last().map_or(group, |r| r.number);
    let colour = if open.is_empty() { NEUTRAL } else { PENDING };
    let files = vec![Attachment {
        filename: format!("requests-{first}-{last}.txt"),
        content: file.into_bytes(),
    }];
    let payload = json!({
        "embeds": [{
            "title": format!("{} requests: #{first}–#{last}", requests.len()),
            "description": description,
            "color": colour,
            "fields": fields,
        }],
        "components": components,
        "allowed_mentions": no_mentions(),
        "attachments": [{ "id": 0, "filename": files[0].filename }],
    });
    Rendered { payload, files }
}

/// The menus and buttons of a group message for its `open` requests.
pub(super) fn group_components(
    group: u32,
    open: &[&Shown],
    redactor: &Redactor,
    nonce: &Nonce,
) -> Value {
    if open.is_empty() {
        return json!([]);
    }
    let options: Vec<Value> = open
        .iter()
        .map(|r| {
            let label = truncate(
                &format!(
                    "#{} {}",
                    r.number,
                    clean(redactor, r.ask.summary(), 200).replace('\n', " ")
                ),
                95,
            )
            .0;
            json!({ "label": label, "value": r.number.to_string() })
        })
        .collect();
    let select = |action: Action, placeholder: &str| {
        json!({ "type": 1, "components": [{
            "type": 3,
            "custom_id": encode(nonce, group, action),
            "placeholder": placeholder,
            "min_values": 1,
            "max_values": options.len(),
            "options": options,
        }]})
    };
    json!([
        select(Action::ApproveSelected, "Approve…"),
        select(Action::DenySelected, "Deny…"),
        { "type": 1, "components": [
            { "type": 2, "style": 3, "label": format!("Approve all {}", open.len()), "custom_id": encode(nonce, group, Action::ApproveAll) },
            { "type": 2, "style": 4, "label": format!("Deny all {}", open.len()), "custom_id": encode(nonce, group, Action::DenyAll) },
        ]},
    ])
}

/// The edit of a group message after some of its requests settled.
#[must_use]
pub fn group_edit(
    group: u32,
    requests: &[Shown],
    states: &BTreeMap<u32, (Settlement, SystemTime)>,
    redactor: &Redactor,
    nonce: &Nonce,
) -> Value {
    let mut payload = group_message(group, requests, states, redactor, nonce).payload;
    if let Some(map) = payload.as_object_mut() {
        map.remove("attachments");
    }
    payload
}

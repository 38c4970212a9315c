//! Discord payloads as pure functions of what they show, so every message
//! can be snapshot-tested without a network.
//!
//! Agent text is untrusted: it is redacted, stripped of control and bidi
//! characters, escaped (markdown outside code blocks, fence breakout inside
//! them), bounded to Discord's limits (whatever does not fit goes into an
//! attached file), and every payload carries `allowed_mentions: {parse: []}`
//! so nothing the agent writes can ping anyone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::clicks::{answer_input_id, encode, Action, Nonce, MAX_PICK};
use super::RunInfo;
use crate::approval::messages::RunReport;
use crate::approval::{Channel, Permission, Settlement, Shown, Subject};
use crate::config::Ping;
use crate::redact::{terminal_safe_bounded, Redactor};

/// Embed colours: pending (blurple), approved (green), denied (red), neutral.
const PENDING: u32 = 0x0058_65F2;
const APPROVED: u32 = 0x0057_F287;
const DENIED: u32 = 0x00ED_4245;
const NEUTRAL: u32 = 0x0095_A5A6;

/// What fits inline in the description's code block before the content is
/// moved to an attachment (the description limit is 4096 in total).
const INLINE_SUBJECT: usize = 1500;
const INLINE_DIFF: usize = 2000;
/// Embed field value limit.
const FIELD: usize = 1024;
/// Embed field name limit.
const FIELD_NAME: usize = 256;
/// Embed description limit.
const DESCRIPTION: usize = 4096;
/// Discord's limit on all the text of one embed together (title,
/// description, field names and values).
const EMBED_TOTAL: usize = 6000;
/// Upper bound of what is kept from any single agent text at all (the
/// attachment included): a runaway diff must not become a huge upload.
const MAX_TEXT_BYTES: usize = 512 * 1024;

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

/// Seconds since the Unix epoch, for `<t:…>` timestamps.
fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Removes what can disguise text (controls, bidi, zero-width) after
/// redacting secrets; bounded.
fn clean(redactor: &Redactor, text: &str, max_bytes: usize) -> String {
    redactor.shown(text, max_bytes)
}

/// Escapes Discord markdown and neutralises mentions in text shown outside
/// a code block.
#[must_use]
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '-' | '[' | ']' | '(' | ')'
            | ':' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{200b}"),
            _ => out.push(c),
        }
    }
    out
}

/// Text inside a code block: no backtick run can close the fence.
fn fence_safe(text: &str) -> String {
    text.replace('`', "`\u{200b}")
}

/// A fenced code block with a language tag.
fn code_block(lang: &str, text: &str) -> String {
    format!("```{lang}\n{}\n```", fence_safe(text))
}

/// The first `max` characters of `text` and whether it was cut.
fn truncate(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        None => (text.to_owned(), false),
        Some((i, _)) => (format!("{}…", &text[..i]), true),
    }
}

/// `text` escaped and bounded for an embed field. Stripped first: besides
/// agent text, it shows reasons typed by people and error details.
fn field_text(text: &str) -> String {
    let (cut, _) = truncate(&terminal_safe_bounded(text, 4 * FIELD), 900);
    let escaped = escape_markdown(&cut);
    truncate(&escaped, FIELD - 1).0
}

/// An embed field within Discord's limits: a name of 1–256 and a value of
/// 1–1024 characters (Discord refuses the whole message otherwise, and a
/// request that cannot be posted is denied). Text that cleaned up to
/// nothing is shown as such.
fn field(name: &str, value: String, inline: bool) -> Value {
    let name = if name.trim().is_empty() {
        "\u{2014}"
    } else {
        name
    };
    let value = if value.trim().is_empty() {
        "*(empty)*".to_owned()
    } else if value.chars().count() <= FIELD {
        value
    } else {
        truncate(&value, FIELD - 1).0
    };
    let mut map = serde_json::Map::new();
    map.insert("name".into(), Value::from(truncate(name, FIELD_NAME - 1).0));
    map.insert("value".into(), Value::String(value));
    map.insert("inline".into(), Value::Bool(inline));
    Value::Object(map)
}

/// Who and what settled a request, in Discord markdown. Humans who decided
/// in Discord are shown as a mention (rendered, never pinged).
#[must_use]
pub fn settlement_text(settlement: &Settlement, at: SystemTime) -> String {
    settlement_line(settlement, at, false)
}

/// [`settlement_text`], where a human's denial of a question reads as a
/// dismissal (a question is not denied, it is dismissed).
fn settlement_line(settlement: &Settlement, at: SystemTime, question: bool) -> String {
    let denied = if question {
        "🚫 Dismissed by"
    } else {
        "⛔ Denied by"
    };
    let who = |by: &crate::approval::Actor| match by.channel {
        Channel::Discord if by.id.parse::<u64>().is_ok() => format!("<@{}>", by.id),
        _ => format!("{} ({})", field_text(&by.name), by.channel),
    };
    let when = format!("<t:{}:f>", unix(at));
    match settlement {
        Settlement::Approved { by, also } => {
            let mut all: Vec<String> = also.iter().map(who).collect();
            all.push(who(by));
            format!("✅ Approved by {} at {when}", all.join(" and "))
        }
        Settlement::ApprovedAndTrusted { by } => format!(
            "✅ Approved by {} at {when}, and trusted for the rest of this run",
            who(by)
        ),
        Settlement::ApprovedByRule { rule_of, by } => format!(
            "✅ Approved at {when} by the trust rule {} made on request #{rule_of}",
            who(by)
        ),
        Settlement::Answered { by, answers } => format!(
            "💬 Answered by {} at {when}: {}",
            who(by),
            field_text(
                &answers
                    .iter()
                    .map(|a| a.join(", "))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        ),
        Settlement::DeniedByRule { rule } => format!(
            "⛔ Denied at {when} by the --deny rule `{}`",
            field_text(rule).replace('`', "'")
        ),
        Settlement::Denied { by, reason: None } => format!("{denied} {} at {when}", who(by)),
        Settlement::Denied {
            by,
            reason: Some(r),
        } => format!(
            "{denied} {} at {when}, with reason:\n> {}",
            who(by),
            field_text(r).replace('\n', "\n> ")
        ),
        Settlement::Expired => {
            format!("⌛ Expired: no answer before the deadline; denied at {when}")
        }
        Settlement::DeniedWithRelated { related } => {
            format!("⛔ Denied together with related request #{related} at {when}")
        }
        Settlement::Superseded { by_number } => {
            format!("↪️ Superseded by request #{by_number}: OpenCode asked again")
        }
        Settlement::RunEnded(reason) => {
            format!(
                "⛔ Cancelled at {when}: the run {}",
                escape_markdown(reason.phrase())
            )
        }
        Settlement::ChannelFailed { detail } => format!(
            "⛔ Denied at {when}: the approval channel failed ({})",
            field_text(detail)
        ),
        Settlement::RepliedElsewhere { echo: Some(echo) } => {
            format!(
                "ℹ️ Answered outside gatekeep: {}",
                field_text(&echo.to_string())
            )
        }
        Settlement::RepliedElsewhere { echo: None } => {
            "ℹ️ Answered outside gatekeep while the event stream was down".to_owned()
        }
        Settlement::Intruded { echo } => format!(
            "🚨 {} at {when} by something other than gatekeep, not by an approver: \
             the run was stopped",
            field_text(&echo.to_string())
        ),
    }
}

fn settlement_colour(settlement: &Settlement) -> u32 {
    match settlement {
        s if s.is_approved() => APPROVED,
        Settlement::Answered { .. } => APPROVED,
        Settlement::Superseded { .. } | Settlement::RepliedElsewhere { .. } => NEUTRAL,
        _ => DENIED,
    }
}

/// The buttons of an open request. No "always": gatekeep never sends it;
/// "trust" is gatekeep's own rule and ends with the run, offered only
/// where a trust rule may approve (see `Needs::trustable`).
fn buttons(nonce: &Nonce, number: u32, trustable: bool) -> Value {
    let mut row = vec![
        json!({ "type": 2, "style": 3, "label": "Approve", "custom_id": encode(nonce, number, Action::Approve) }),
        json!({ "type": 2, "style": 4, "label": "Deny", "custom_id": encode(nonce, number, Action::Deny) }),
        json!({ "type": 2, "style": 2, "label": "Deny with reason…", "custom_id": encode(nonce, number, Action::DenyWithReason) }),
    ];
    if trustable {
        row.push(json!({ "type": 2, "style": 1, "label": "Approve & trust for this run", "custom_id": encode(nonce, number, Action::ApproveAndTrust) }));
    }
    json!([{ "type": 1, "components": row }])
}

/// The description (what would run, in code blocks) and the attachments
/// for whatever does not fit inline, in at most `budget` characters (what
/// the embed's other text leaves of Discord's limits).
fn describe(request: &Shown, redactor: &Redactor, budget: usize) -> (String, Vec<Attachment>) {
    let subject = clean(redactor, request.ask.summary(), MAX_TEXT_BYTES);
    let diff = request
        .ask
        .diff()
        .map(|d| clean(redactor, d, MAX_TEXT_BYTES));
    let texts = (subject.as_str(), diff.as_deref());
    let shown = describe_within(request, texts, (INLINE_SUBJECT, INLINE_DIFF), (400, 800));
    if shown.0.chars().count() <= budget {
        return shown;
    }
    // Hostile or huge text beside long fields: attach everything and show
    // previews small enough to fit (escaping may double them).
    let preview = budget.saturating_sub(300) / 4;
    describe_within(request, texts, (0, 0), (preview, preview))
}

/// [`describe`] of the cleaned `(subject, diff)`, with the largest text
/// shown whole (`inline`, measured after escaping) and the previews of
/// attached text (`preview`).
fn describe_within(
    request: &Shown,
    (subject, diff): (&str, Option<&str>),
    inline: (usize, usize),
    preview: (usize, usize),
) -> (String, Vec<Attachment>) {
    let mut files = Vec::new();
    let mut description = String::new();

    let subject_chars = subject.chars().count();
    if subject.is_empty() || fence_safe(subject).chars().count() <= inline.0 {
        description.push_str(&code_block(
            if request.ask.command().is_some() {
                "sh"
            } else {
                ""
            },
            subject,
        ));
    } else {
        let (shown, _) = truncate(subject, preview.0);
        description.push_str(&code_block("", &shown));
        let _ = write!(
            description,
            "\n*{subject_chars} characters: the whole text is attached.*"
        );
        files.push(Attachment {
            filename: format!("request-{}.txt", request.number),
            content: subject.as_bytes().to_vec(),
        });
    }
    if let Some(diff) = diff {
        let diff_chars = diff.chars().count();
        if fence_safe(diff).chars().count() <= inline.1 {
            description.push('\n');
            description.push_str(&code_block("diff", diff));
        } else {
            let (shown, _) = truncate(diff, preview.1);
            description.push('\n');
            description.push_str(&code_block("diff", &shown));
            let _ = write!(
                description,
                "\n*Diff of {diff_chars} characters: the whole diff is attached.*"
            );
            files.push(Attachment {
                filename: format!("request-{}.diff", request.number),
                content: diff.as_bytes().to_vec(),
            });
        }
    }
    (description, files)
}

/// Characters of an embed's fields, as Discord counts them for its total.
fn fields_chars(fields: &[Value]) -> usize {
    fields
        .iter()
        .map(|f| {
            ["name", "value"]
                .iter()
                .map(|k| f[*k].as_str().map_or(0, |s| s.chars().count()))
                .sum::<usize>()
        })
        .sum()
}

/// The message for one request: open (with its buttons) when `settled` is
/// `None`, else in its final state with the buttons removed. Files are
/// attached only when posting, never when editing (Discord keeps the
/// original attachments on an edit that does not mention them).
///
/// A permission shows its command, path or diff and Approve / Deny buttons;
/// a question shows its questions with option buttons, an answer form and
/// Dismiss. Everything else is the same for both.
#[must_use]
pub fn request_message(
    request: &Shown,
    redactor: &Redactor,
    nonce: &Nonce,
    settled: Option<(&Settlement, SystemTime)>,
) -> Rendered {
    let agent = request.ask.agent.as_deref().map_or_else(
        || "main agent".to_owned(),
        |a| format!("subagent: {}", field_text(&clean(redactor, a, 4096))),
    );
    let mut fields = vec![
        field("Asked by", agent, true),
        field("Request", format!("#{}", request.number), true),
    ];
    if let Subject::Permission(p) = &request.ask.subject {
        permission_fields(p, redactor, &mut fields);
    }
    if request.needs.policy_change {
        fields.push(field(
            "Policy",
            "⚠️ This edits gatekeep's own policy (the policy file or OpenCode's config): \
             it changes what this run and the next ones may do."
                .into(),
            false,
        ));
    }
    if request.needs.approvals > 1 && settled.is_none() {
        fields.push(field(
            "Approvals",
            format!(
                "0 of {} — needs {} different approvers",
                request.needs.approvals, request.needs.approvals
            ),
            true,
        ));
    }
    let question = request.ask.is_question();
    let (colour, components) = match settled {
        None => {
            fields.push(field(
                "Deadline",
                format!("<t:{}:R>", unix(request.deadline.wall)),
                true,
            ));
            if request.ask.questions().len() > MODAL_INPUTS {
                fields.push(field(
                    "Note",
                    "Too many questions to answer here: answer in the terminal, or dismiss.".into(),
                    false,
                ));
            }
            let components = if question {
                question_components(request, redactor, nonce)
            } else {
                buttons(nonce, request.number, request.needs.trustable())
            };
            (PENDING, components)
        }
        Some((settlement, at)) => {
            // An answer repeats agent text (option labels): redacted too.
            let text = settlement_line(&redacted_answers(settlement, redactor), at, question);
            fields.push(field("Decision", text, false));
            (settlement_colour(settlement), json!([]))
        }
    };
    let title = truncate(
        &format!(
            "Request #{}: {}",
            request.number,
            clean(redactor, request.ask.kind(), 64)
        ),
        250,
    )
    .0;
    let budget = EMBED_TOTAL
        .saturating_sub(title.chars().count() + fields_chars(&fields))
        .min(DESCRIPTION);
    let (description, files) = if question {
        question_description(request, redactor, budget)
    } else {
        describe(request, redactor, budget)
    };

    let mut payload = json!({
        "embeds": [{
            "title": title,
            "description": description,
            "color": colour,
            "fields": fields,
        }],
        "components": components,
        "allowed_mentions": no_mentions(),
    });
    if !files.is_empty() {
        let attachments: Vec<Value> = files
            .iter()
            .enumerate()
            .map(|(i, f)| json!({ "id": i, "filename": f.filename }))
            .collect();
        payload["attachments"] = Value::Array(attachments);
    }
    Rendered { payload, files }
}

/// A permission's own fields: the agent's description, and the patterns
/// when there is no command or path to show.
fn permission_fields(p: &Permission, redactor: &Redactor, fields: &mut Vec<Value>) {
    if let Some(d) = &p.description {
        fields.push(field(
            "Description",
            field_text(&clean(redactor, d, 4096)),
            false,
        ));
    }
    if !p.patterns.is_empty() && p.command.is_none() && p.path.is_none() {
        let patterns = p.patterns.join("\n");
        fields.push(field(
            "Patterns",
            field_text(&clean(redactor, &patterns, 4096)),
            false,
        ));
    }
}

/// The settlement with the labels of an answer redacted.
fn redacted_answers(settlement: &Settlement, redactor: &Redactor) -> Settlement {
    match settlement {
        Settlement::Answered { by, answers } => Settlement::Answered {
            by: by.clone(),
            answers: answers
                .iter()
                .map(|a| a.iter().map(|t| clean(redactor, t, 4096)).collect())
                .collect(),
        },
        other => other.clone(),
    }
}

/// A question's text within `budget`; the whole of it attached when longer.
fn question_description(
    request: &Shown,
    redactor: &Redactor,
    budget: usize,
) -> (String, Vec<Attachment>) {
    let (shown, plain) = questions_text(request, redactor);
    if shown.chars().count() <= budget {
        return (shown, Vec::new());
    }
    let file = Attachment {
        filename: format!("question-{}.txt", request.number),
        content: plain.into_bytes(),
    };
    let note = "\n*Cut short: the whole question is attached.*";
    let (cut, _) = truncate(&shown, budget.saturating_sub(note.chars().count() + 2));
    (format!("{cut}{note}"), vec![file])
}

/// Discord's limits on components.
const BUTTON_LABEL: usize = 80;
const SELECT_LABEL: usize = 100;
const BUTTONS_PER_ROW: usize = 5;
/// Rows of option buttons (the fifth row holds "answer" and "Dismiss").
const OPTION_ROWS: usize = 4;
/// Text inputs in one modal, and the limits on its labels.
const MODAL_INPUTS: usize = 5;
const MODAL_LABEL: usize = 45;
const PLACEHOLDER: usize = 100;
/// What a typed answer may hold.
const ANSWER_MAX: usize = 1000;

/// Agent text for a component label (labels show no markdown and ping
/// nobody): cleaned, on one line, bounded, never empty.
fn label_text(redactor: &Redactor, text: &str, max: usize, fallback: &str) -> String {
    let one_line = clean(redactor, text, 4 * max).replace(['\n', '\t'], " ");
    let shown = truncate(one_line.trim(), max - 1).0;
    if shown.trim().is_empty() {
        fallback.to_owned()
    } else {
        shown
    }
}

/// The text of every question, escaped for the embed description.
fn questions_text(request: &Shown, redactor: &Redactor) -> (String, String) {
    let several = request.ask.questions().len() > 1;
    let mut shown = String::new();
    let mut plain = String::new();
    for (i, q) in request.ask.questions().iter().enumerate() {
        let header = clean(redactor, &q.header, 4096);
        let text = clean(redactor, &q.text, MAX_TEXT_BYTES);
        if !shown.is_empty() {
            shown.push('\n');
        }
        let number = if several {
            format!("{}.", i + 1)
        } else {
            String::new()
        };
        let header = header.replace('\n', " ");
        match (header.trim().is_empty(), several) {
            (true, false) => {
                let _ = writeln!(shown, "{}", escape_markdown(&text));
            }
            (true, true) => {
                let _ = writeln!(shown, "**{number}** {}", escape_markdown(&text));
            }
            (false, _) => {
                let _ = writeln!(
                    shown,
                    "**{}**\n{}",
                    format!("{number} {}", escape_markdown(&header)).trim(),
                    escape_markdown(&text)
                );
            }
        }
        let _ = writeln!(plain, "{number} {header}\n{text}");
        for (n, (label, description)) in q.options.iter().enumerate() {
            let label = clean(redactor, label, 4096).replace('\n', " ");
            let description = clean(redactor, description, 4096).replace('\n', " ");
            let _ = write!(shown, "> **{}.** {}", n + 1, escape_markdown(&label));
            if !description.trim().is_empty() {
                let _ = write!(shown, " — {}", escape_markdown(&description));
            }
            shown.push('\n');
            let _ = writeln!(plain, "  {}) {label} — {description}", n + 1);
        }
        let how = match (q.multiple, q.options.is_empty(), q.custom) {
            (_, true, true) => "*Answer in your own words.*",
            (_, true, false) => "*No options and no free text: it can only be dismissed.*",
            (true, false, true) => "*Choose one or more, or answer in your own words.*",
            (true, false, false) => "*Choose one or more.*",
            (false, false, true) => "*Choose one, or answer in your own words.*",
            (false, false, false) => "*Choose one.*",
        };
        shown.push_str(how);
        shown.push('\n');
    }
    (shown, plain)
}

/// The components of an open question: option buttons (or a select menu
/// when they are many or several may be chosen), "answer in your own
/// words" (a modal) and "Dismiss". Several questions are answered through
/// the modal only.
fn question_components(request: &Shown, redactor: &Redactor, nonce: &Nonce) -> Value {
    let number = request.number;
    let mut rows = Vec::new();
    let mut last = Vec::new();
    match request.ask.questions() {
        [q] => {
            let count = q.options.len();
            if count > 0 && !q.multiple && count <= BUTTONS_PER_ROW * OPTION_ROWS {
                let buttons: Vec<Value> = q
                    .options
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (label, _))| {
                        let index = u8::try_from(i).ok()?;
                        Some(json!({
                            "type": 2,
                            "style": 1,
                            "label": label_text(redactor, label, BUTTON_LABEL, &format!("Option {}", i + 1)),
                            "custom_id": encode(nonce, number, Action::Pick(index)),
                        }))
                    })
                    .collect();
                for chunk in buttons.chunks(BUTTONS_PER_ROW) {
                    rows.push(json!({ "type": 1, "components": chunk }));
                }
            } else if count > 0 {
                let options: Vec<Value> = q
                    .options
                    .iter()
                    .take(usize::from(MAX_PICK))
                    .enumerate()
                    .map(|(i, (label, description))| {
                        let mut option = json!({
                            "label": label_text(redactor, label, SELECT_LABEL, &format!("Option {}", i + 1)),
                            "value": i.to_string(),
                        });
                        let description = label_text(redactor, description, SELECT_LABEL, "");
                        if !description.is_empty() {
                            option["description"] = Value::String(description);
                        }
                        option
                    })
                    .collect();
                let max = if q.multiple { options.len() } else { 1 };
                rows.push(json!({ "type": 1, "components": [{
                    "type": 3,
                    "custom_id": encode(nonce, number, Action::PickSelected),
                    "placeholder": if q.multiple { "Choose one or more…" } else { "Choose one…" },
                    "min_values": 1,
                    "max_values": max,
                    "options": options,
                }]}));
            }
            // Typing is also the way to options a menu cannot hold.
            if q.custom || count > usize::from(MAX_PICK) {
                let label = if q.custom {
                    "Answer in your own words…"
                } else {
                    "Type the answer…"
                };
                last.push(json!({ "type": 2, "style": 2, "label": label, "custom_id": encode(nonce, number, Action::AnswerInWords) }));
            }
        }
        questions if questions.len() <= MODAL_INPUTS => {
            last.push(json!({ "type": 2, "style": 1, "label": "Answer…", "custom_id": encode(nonce, number, Action::AnswerInWords) }));
        }
        _ => {}
    }
    last.push(json!({ "type": 2, "style": 4, "label": "Dismiss", "custom_id": encode(nonce, number, Action::Dismiss) }));
    rows.push(json!({ "type": 1, "components": last }));
    Value::Array(rows)
}

/// Interaction callback: the modal that answers question request
/// `request` in words, one text input per question (at most five).
#[must_use]
pub fn answer_modal(request: &Shown, redactor: &Redactor, nonce: &Nonce) -> Value {
    let several = request.ask.questions().len() > 1;
    let inputs: Vec<Value> = request
        .ask
        .questions()
        .iter()
        .take(MODAL_INPUTS)
        .enumerate()
        .map(|(i, q)| {
            let fallback = if several {
                format!("Question {}", i + 1)
            } else {
                "Your answer".to_owned()
            };
            let label = label_text(redactor, &q.header, MODAL_LABEL, &fallback);
            let placeholder = match (q.custom, q.options.is_empty()) {
                (true, _) => "Your own words (or an option's label)".to_owned(),
                (false, false) => "An option's number (1, or 1,3) or its label".to_owned(),
                (false, true) => "This question accepts no typed answer".to_owned(),
            };
            json!({ "type": 1, "components": [{
                "type": 4,
                "custom_id": answer_input_id(i),
                "style": 2,
                "label": label,
                "placeholder": truncate(&placeholder, PLACEHOLDER - 1).0,
                "min_length": 1,
                "max_length": ANSWER_MAX,
                "required": true,
            }]})
        })
        .collect();
    json!({
        "type": 9,
        "data": {
            "custom_id": encode(nonce, request.number, Action::AnswerSubmitted),
            "title": format!("Answer request #{}", request.number),
            "components": inputs,
        }
    })
}

/// An open request that needs several approvers, after one more approved:
/// the count and who, buttons kept.
#[must_use]
pub fn request_progress_edit(
    request: &Shown,
    progress: &crate::approval::Progress,
    redactor: &Redactor,
    nonce: &Nonce,
) -> Value {
    let mut payload = request_message(request, redactor, nonce, None).payload;
    let who: Vec<String> = progress
        .by
        .iter()
        .map(|by| match by.channel {
            Channel::Discord if by.id.parse::<u64>().is_ok() => format!("<@{}>", by.id),
            _ => format!("{} ({})", field_text(&by.name), by.channel),
        })
        .collect();
    let text = format!(
        "{} of {} approvals — approved by {}",
        progress.by.len(),
        progress.needed,
        who.join(", ")
    );
    if let Some(fields) = payload["embeds"][0]["fields"].as_array_mut() {
        for f in fields.iter_mut() {
            if f["name"] == "Approvals" {
                f["value"] = json!(text);
            }
        }
    }
    // The files were attached by the post; an edit keeps them.
    if let Some(map) = payload.as_object_mut() {
        map.remove("attachments");
    }
    payload
}

/// The edit that puts a posted request message into its final state.
#[must_use]
pub fn request_final_edit(
    request: &Shown,
    redactor: &Redactor,
    nonce: &Nonce,
    settlement: &Settlement,
    at: SystemTime,
) -> Value {
    let mut rendered = request_message(request, redactor, nonce, Some((settlement, at)));
    if let Some(map) = rendered.payload.as_object_mut() {
        map.remove("attachments");
    }
    rendered.payload
}

/// How much of one request a group message shows inline.
const GROUP_SUBJECT: usize = 250;

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
fn group_components(group: u32, open: &[&Shown], redactor: &Redactor, nonce: &Nonce) -> Value {
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

fn run_fields(info: &RunInfo, redactor: &Redactor) -> Vec<Value> {
    let mut fields = vec![
        field(
            "Workspace",
            field_text(&clean(redactor, &info.workspace, 1024)),
            true,
        ),
        field("Host", field_text(&clean(redactor, &info.host, 256)), true),
    ];
    if let Some(model) = &info.model {
        fields.push(field(
            "Model",
            field_text(&clean(redactor, model, 256)),
            true,
        ));
    }
    if let Some(version) = &info.opencode_version {
        fields.push(field(
            "OpenCode",
            field_text(&clean(redactor, version, 64)),
            true,
        ));
    }
    if let Some((file, uncommitted)) = &info.policy {
        let mut text = field_text(&clean(redactor, file, 256));
        if *uncommitted {
            text.push_str("\n⚠️ **uncommitted changes: these are not the reviewed rules**");
        }
        fields.push(field("Policy", text, false));
    }
    if !info.caveats.is_empty() {
        let text: Vec<String> = info
            .caveats
            .iter()
            .map(|c| format!("⚠️ {}", field_text(&clean(redactor, c, 300))))
            .collect();
        fields.push(field("Caveats", truncate(&text.join("\n"), 1000).0, false));
    }
    if let Some(ci) = &info.ci {
        // A URL stays clickable: it is not escaped, only cleaned and bounded.
        fields.push(field(
            "CI",
            truncate(&clean(redactor, ci, 1000), 1000).0,
            false,
        ));
    }
    fields
}

fn run_title(info: &RunInfo, redactor: &Redactor) -> String {
    truncate(
        &format!("gatekeep run: {}", clean(redactor, &info.title, 1024)),
        250,
    )
    .0
}

/// The run-start message in the configured channel; the run's thread hangs
/// off it.
#[must_use]
pub fn run_start(info: &RunInfo, redactor: &Redactor, started: SystemTime, ping: &Ping) -> Value {
    let mut description = format!(
        "Started <t:{}:R>. Approval requests follow in the thread.",
        unix(started)
    );
    if ping.is_empty() {
        description.push_str("\nNo one will be notified; set --mention.");
    }
    json!({
        "embeds": [{
            "title": run_title(info, redactor),
            "description": description,
            "color": PENDING,
            "fields": run_fields(info, redactor),
        }],
        "allowed_mentions": no_mentions(),
    })
}

/// Thread name from the run title (Discord allows 1–100 characters).
#[must_use]
pub fn thread_name(info: &RunInfo, redactor: &Redactor) -> String {
    let cleaned = clean(redactor, &info.title, 400).replace('\n', " ");
    let name = truncate(cleaned.trim(), 90).0;
    if name.is_empty() {
        "gatekeep run".to_owned()
    } else {
        name
    }
}

fn counts(report: &RunReport) -> String {
    format!(
        "{} approved, {} denied · exit code {} · took {}",
        report.approved,
        report.denied,
        report.exit_code,
        humantime::format_duration(Duration::from_secs(report.duration.as_secs()))
    )
}

/// The run-start message once the run is over: outcome, duration, counts.
#[must_use]
pub fn run_start_final(info: &RunInfo, redactor: &Redactor, report: &RunReport) -> Value {
    let colour = if report.exit_code == 0 {
        APPROVED
    } else {
        DENIED
    };
    json!({
        "embeds": [{
            "title": run_title(info, redactor),
            "description": format!("Run {}.\n{}", field_text(&report.outcome), counts(report)),
            "color": colour,
            "fields": run_fields(info, redactor),
        }],
        "allowed_mentions": no_mentions(),
    })
}

/// The last message in the thread.
#[must_use]
pub fn run_summary(report: &RunReport) -> Value {
    json!({
        "content": format!("**Run {}.** {}", field_text(&report.outcome), counts(report)),
        "allowed_mentions": no_mentions(),
    })
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::approval::{Actor, EndReason};
    use crate::approval::{Ask, Deadline, Permission, Subject};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn request() -> Shown {
        Shown {
            needs: crate::approval::Needs::default(),
            number: 3,
            deadline: Deadline::shown_as(at(1_800_000_600), Duration::from_secs(600)),
            ask: Ask {
                id: "per_1".into(),
                session_id: "ses_1".into(),
                agent: None,
                subject: Subject::Permission(Permission {
                    kind: "bash".into(),
                    patterns: vec!["rm -rf build".into()],
                    command: Some("rm -rf build && echo ```done``` @everyone".into()),
                    path: None,
                    diff: None,
                    description: Some("Clean the **build** dir <@123> [x](http://evil)".into()),
                }),
            },
        }
    }

    /// The permission of a test request, to change one field of it.
    fn permission(r: &mut Shown) -> &mut Permission {
        match &mut r.ask.subject {
            Subject::Permission(p) => p,
            Subject::Question(_) => unreachable!("a permission request"),
        }
    }

    /// Someone is pinged (the snapshots of the run messages do not change).
    fn pinged() -> Ping {
        Ping {
            users: vec![42],
            roles: vec![],
        }
    }

    fn nonce() -> Nonce {
        Nonce::fixed("00112233aabbccdd")
    }

    fn user() -> Actor {
        Actor {
            channel: Channel::Discord,
            id: "4242".into(),
            name: "alice".into(),
        }
    }

    #[test]
    fn open_request() {
        let r = request_message(&request(), &Redactor::default(), &nonce(), None);
        assert!(r.files.is_empty());
        insta::assert_json_snapshot!(r.payload);
    }

    #[test]
    fn subagent_edit_with_diff_and_secret() {
        let mut req = request();
        req.ask.agent = Some("general: write tests".into());
        let p = permission(&mut req);
        p.kind = "edit".into();
        p.command = None;
        p.path = Some("/w/src/main.rs".into());
        p.diff = Some("--- a\n+++ b\n-old\n+API_KEY=abc123def\n+token ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into());
        p.description = None;
        let r = request_message(&req, &Redactor::default(), &nonce(), None);
        insta::assert_json_snapshot!(r.payload);
    }

    #[test]
    fn long_command_is_attached_whole() {
        let mut req = request();
        permission(&mut req).command = Some(format!("echo {} PASSWORD=hunter22", "x".repeat(5000)));
        let r = request_message(&req, &Redactor::default(), &nonce(), None);
        assert_eq!(r.files.len(), 1);
        let file = String::from_utf8(r.files[0].content.clone()).expect("utf-8");
        assert!(
            file.ends_with("PASSWORD=[redacted]"),
            "{}",
            &file[file.len() - 40..]
        );
        assert_eq!(r.payload["attachments"][0]["filename"], "request-3.txt");
        let desc = r.payload["embeds"][0]["description"]
            .as_str()
            .expect("description");
        assert!(desc.chars().count() < 4096);
    }

    #[test]
    fn settled_states() {
        let req = request();
        let states = [
            Settlement::Approved {
                by: user(),
                also: vec![],
            },
            Settlement::Denied {
                by: user(),
                reason: Some("not in **prod** @here".into()),
            },
            Settlement::Denied {
                by: Actor {
                    channel: Channel::Terminal,
                    id: "bob".into(),
                    name: "bob".into(),
                },
                reason: None,
            },
            Settlement::Expired,
            Settlement::DeniedWithRelated { related: 2 },
            Settlement::Superseded { by_number: 4 },
            Settlement::RunEnded(EndReason::TimedOut),
            Settlement::ChannelFailed {
                detail: "HTTP 500".into(),
            },
        ];
        let rendered: Vec<Value> = states
            .iter()
            .map(|s| request_final_edit(&req, &Redactor::default(), &nonce(), s, at(1_800_000_100)))
            .collect();
        for r in &rendered {
            assert_eq!(r["components"], json!([]));
            assert_eq!(r["allowed_mentions"], no_mentions());
        }
        insta::assert_json_snapshot!(rendered
            .iter()
            .map(|r| r["embeds"][0]["fields"].clone())
            .collect::<Vec<_>>());
    }

    fn info() -> RunInfo {
        RunInfo {
            title: "fix the flaky test".into(),
            workspace: "repo_name".into(),
            host: "ci-runner-1".into(),
            model: Some("p/m".into()),
            opencode_version: Some("1.18.33".into()),
            ci: Some("https://github.com/o/r/actions/runs/1".into()),
            policy: None,
            caveats: Vec::new(),
        }
    }

    #[test]
    fn run_messages() {
        let report = RunReport {
            outcome: "finished".into(),
            exit_code: 0,
            duration: Duration::from_secs(95),
            approved: 2,
            denied: 1,
        };
        let red = Redactor::default();
        insta::assert_json_snapshot!(json!({
            "start": run_start(&info(), &red, at(1_800_000_000), &pinged()),
            "final": run_start_final(&info(), &red, &report),
            "summary": run_summary(&report),
            "thread": thread_name(&info(), &red),
            "modal": reason_modal(&nonce(), 3),
        }));
    }

    #[test]
    fn group_of_requests() {
        let requests: Vec<Shown> = (5..9)
            .map(|n| {
                let mut r = request();
                r.number = n;
                permission(&mut r).command = Some(format!("make target{n}"));
                r
            })
            .collect();
        let mut states = BTreeMap::new();
        let red = Redactor::default();
        let open = group_message(5, &requests, &states, &red, &nonce());
        assert_eq!(open.files.len(), 1);
        states.insert(
            6,
            (
                Settlement::Approved {
                    by: user(),
                    also: vec![],
                },
                at(1_800_000_100),
            ),
        );
        let partly = group_edit(5, &requests, &states, &red, &nonce());
        for n in [5, 7, 8] {
            states.insert(n, (Settlement::Expired, at(1_800_000_200)));
        }
        let done = group_edit(5, &requests, &states, &red, &nonce());
        assert_eq!(done["components"], json!([]));
        insta::assert_json_snapshot!(
            json!({ "open": open.payload, "partly": partly, "done": done })
        );
    }

    fn question_request(questions: Vec<crate::approval::Question>) -> Shown {
        let mut r = request();
        r.ask.id = "que_1".into();
        r.number = 7;
        r.ask.subject = Subject::Question(questions);
        r
    }

    fn asked(options: usize, multiple: bool, custom: bool) -> crate::approval::Question {
        crate::approval::Question {
            header: "Deploy @everyone".into(),
            text: "Ship **now**? <@123> [yes](http://evil)".into(),
            options: (1..=options)
                .map(|i| (format!("Option {i} `x`"), format!("does thing {i} @here")))
                .collect(),
            multiple,
            custom,
        }
    }

    #[test]
    fn open_question_with_option_buttons() {
        let req = question_request(vec![asked(2, false, true)]);
        let r = request_message(&req, &Redactor::default(), &nonce(), None);
        assert!(r.files.is_empty());
        assert_eq!(r.payload["allowed_mentions"], no_mentions());
        let text = r.payload["embeds"].to_string();
        assert!(
            !text.contains("@everyone") && !text.contains("**now**"),
            "{text}"
        );
        insta::assert_json_snapshot!(r.payload);
    }

    #[test]
    fn question_components_by_shape() {
        let red = Redactor::default();
        let shape = |q: Vec<crate::approval::Question>| {
            request_message(&question_request(q), &red, &nonce(), None).payload["components"]
                .clone()
        };
        // 20 single-choice options: four rows of five buttons, then the
        // answer and Dismiss buttons.
        let many = shape(vec![asked(20, false, false)]);
        assert_eq!(many.as_array().map(Vec::len), Some(5));
        assert_eq!(many[4]["components"][0]["label"], "Dismiss");
        // 21 options, or several to choose: a select menu.
        let menu = shape(vec![asked(21, false, true)]);
        assert_eq!(menu[0]["components"][0]["type"], 3);
        assert_eq!(menu[0]["components"][0]["max_values"], 1);
        let multi = shape(vec![asked(3, true, false)]);
        assert_eq!(multi[0]["components"][0]["max_values"], 3);
        // More than a menu holds: 25 shown, typing reaches the rest.
        let huge = shape(vec![asked(30, false, false)]);
        assert_eq!(
            huge[0]["components"][0]["options"].as_array().map(Vec::len),
            Some(25)
        );
        assert_eq!(huge[1]["components"][0]["label"], "Type the answer…");
        // No options, no free text: only Dismiss.
        let none = shape(vec![asked(0, false, false)]);
        assert_eq!(
            none,
            json!([{ "type": 1, "components": [{ "type": 2, "style": 4, "label": "Dismiss", "custom_id": "gk1:00112233aabbccdd:7:x" }] }])
        );
        // Six questions: too many for a modal.
        let six = shape((0..6).map(|_| asked(2, false, true)).collect());
        assert_eq!(six[0]["components"].as_array().map(Vec::len), Some(1));
        // A long label is cut to Discord's 80.
        let mut long = asked(1, false, false);
        long.options[0].0 = "y".repeat(200);
        let cut = shape(vec![long]);
        assert_eq!(
            cut[0]["components"][0]["label"]
                .as_str()
                .map(|l| l.chars().count()),
            Some(80)
        );
    }

    #[test]
    fn several_questions_and_their_modal() {
        let red = Redactor::default();
        let mut second = asked(3, true, false);
        second.header = String::new();
        second.text = "Which targets?".into();
        let req = question_request(vec![asked(2, false, true), second]);
        let open = request_message(&req, &red, &nonce(), None);
        let modal = answer_modal(&req, &red, &nonce());
        let answered = request_final_edit(
            &req,
            &red,
            &nonce(),
            &Settlement::Answered {
                by: user(),
                answers: vec![
                    vec!["Option 1 `x`".into()],
                    vec!["a **b** @everyone".into()],
                ],
            },
            at(1_800_000_100),
        );
        let dismissed = request_final_edit(
            &req,
            &red,
            &nonce(),
            &Settlement::Denied {
                by: user(),
                reason: None,
            },
            at(1_800_000_100),
        );
        for r in [&answered, &dismissed] {
            assert_eq!(r["components"], json!([]));
            assert_eq!(r["allowed_mentions"], no_mentions());
        }
        assert!(!answered.to_string().contains("@everyone"));
        insta::assert_json_snapshot!(json!({
            "open": open.payload,
            "modal": modal,
            "answered": answered,
            "dismissed_fields": dismissed["embeds"][0]["fields"],
        }));
    }

    #[test]
    fn a_huge_question_is_attached() {
        let mut q = asked(25, true, true);
        q.text = "@everyone ".repeat(2000);
        let req = question_request(vec![q]);
        let r = request_message(&req, &Redactor::default(), &nonce(), None);
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.payload["attachments"][0]["filename"], "question-7.txt");
        let description = r.payload["embeds"][0]["description"]
            .as_str()
            .expect("description");
        assert!(description.chars().count() <= 4096);
    }

    #[test]
    fn a_waiting_request_pings_exactly_the_configured_people_and_an_edit_nobody() {
        let ping_them = Ping {
            users: vec![11, 12],
            roles: vec![21],
        };
        let mut posted = request_message(&request(), &Redactor::default(), &nonce(), None).payload;
        ping(&mut posted, &ping_them);
        assert_eq!(posted["content"], "<@11> <@12> <@&21>");
        assert_eq!(
            posted["allowed_mentions"],
            json!({ "parse": [], "users": ["11", "12"], "roles": ["21"] })
        );
        let edit = request_final_edit(
            &request(),
            &Redactor::default(),
            &nonce(),
            &Settlement::Expired,
            at(1),
        );
        assert_eq!(edit["allowed_mentions"], no_mentions());
        let reminder = reminder(
            &[
                (
                    3,
                    at(1_800_000_600),
                    Some("https://discord.com/channels/1/2/99".into()),
                ),
                (4, at(1_800_000_900), None),
            ],
            &ping_them,
            99,
        );
        assert_eq!(reminder["allowed_mentions"], posted["allowed_mentions"]);
        assert_eq!(reminder["message_reference"]["message_id"], "99");
        insta::assert_json_snapshot!(reminder);
        // Nobody configured: nothing to add, nobody pinged.
        let mut quiet = request_message(&request(), &Redactor::default(), &nonce(), None).payload;
        ping(&mut quiet, &Ping::default());
        assert_eq!(quiet["allowed_mentions"], no_mentions());
        assert!(quiet.get("content").is_none());
    }

    #[test]
    fn an_intrusion_is_shown_as_one_in_red() {
        let settlement = Settlement::Intruded {
            echo: crate::approval::Echo::Approved { always: false },
        };
        let text = settlement_text(&settlement, at(1_800_000_000));
        assert!(text.starts_with("🚨 approved once"), "{text}");
        assert!(text.contains("something other than gatekeep"), "{text}");
        assert_eq!(settlement_colour(&settlement), DENIED);
    }

    #[test]
    fn fence_and_markdown_cannot_break_out() {
        let escaped = escape_markdown("**x** `y` @everyone <@1> # h");
        assert!(!escaped.contains("@everyone"));
        assert!(!escaped.contains("**"));
        let block = code_block("sh", "a ``` b");
        assert_eq!(block.matches("```").count(), 2);
    }

    #[test]
    fn every_payload_disallows_mentions() {
        let req = request();
        let red = Redactor::default();
        assert_eq!(
            request_message(&req, &red, &nonce(), None).payload["allowed_mentions"],
            no_mentions()
        );
        assert_eq!(
            run_start(&info(), &red, at(0), &pinged())["allowed_mentions"],
            no_mentions()
        );
        assert_eq!(ephemeral("x")["data"]["allowed_mentions"], no_mentions());
        assert_eq!(followup_edit("x")["allowed_mentions"], no_mentions());
    }
}

/// Hostile agent text: whatever a request carries (mentions, markdown and
/// fence breakout, ANSI, zero-width and bidi characters, megabytes), every
/// payload stays within Discord's limits, pings nobody, carries none of the
/// disguising characters, and still shows the whole subject (inline or
/// attached).
#[cfg(test)]
mod prop_tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::approval::{Actor, Ask, Deadline, Echo, EndReason, Permission, Subject};

    const TITLE: usize = 256;
    const DESCRIPTION: usize = 4096;
    const FIELDS: usize = 25;
    const FIELD_NAME: usize = 256;
    const TOTAL: usize = 6000;

    /// Pieces of hostile text.
    const PIECES: &[&str] = &[
        "@everyone",
        "@here",
        "<@123456789012345678>",
        "<@&987654321098765432>",
        "<#111>",
        "```",
        "`",
        "**",
        "__",
        "~~",
        "||",
        "> ",
        "# ",
        "[approved](https://evil.example)",
        "\\",
        "\u{1b}[31m",
        "\u{1b}]8;;https://evil.example\u{7}",
        "\u{1b}[2J",
        "\u{9b}1m",
        "\u{200b}",
        "\u{200d}",
        "\u{202e}",
        "\u{2066}",
        "\u{feff}",
        "\r",
        "\n",
        "\t",
        "\u{7}",
        "a",
        "é",
        "😀",
        "rm -rf / ",
        "✅ Approved by <@1>",
    ];

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|p| p.concat()),
            2 => (prop::sample::select(PIECES), 1usize..400).prop_map(|(p, n)| p.repeat(n)),
        ]
    }

    fn actor() -> impl Strategy<Value = Actor> {
        (any::<bool>(), hostile()).prop_map(|(discord, name)| Actor {
            channel: if discord {
                Channel::Discord
            } else {
                Channel::Terminal
            },
            id: if discord { "4242".into() } else { name.clone() },
            name,
        })
    }

    fn settlement() -> impl Strategy<Value = Settlement> {
        prop_oneof![
            actor().prop_map(|by| Settlement::Approved { by, also: vec![] }),
            // A human's reason: the modal allows 1000 characters.
            (
                actor(),
                prop::option::of(hostile().prop_map(|r| r.chars().take(1000).collect()))
            )
                .prop_map(|(by, reason)| Settlement::Denied { by, reason }),
            Just(Settlement::Expired),
            any::<u32>().prop_map(|related| Settlement::DeniedWithRelated { related }),
            any::<u32>().prop_map(|by_number| Settlement::Superseded { by_number }),
            Just(Settlement::RunEnded(EndReason::OpenCodeDied)),
            hostile().prop_map(|detail| Settlement::ChannelFailed { detail }),
            hostile().prop_map(|word| Settlement::RepliedElsewhere {
                echo: Some(Echo::Unknown(word))
            }),
        ]
    }

    prop_compose! {
        fn request()(
            number in 1u32..1_000_000,
            kind in prop_oneof![Just("bash".to_owned()), hostile()],
            agent in prop::option::of(hostile()),
            command in prop::option::of(hostile()),
            path in prop::option::of(hostile()),
            diff in prop::option::of(hostile()),
            description in prop::option::of(hostile()),
            patterns in prop::collection::vec(hostile(), 0..4),
        ) -> Shown {
            Shown {
                needs: crate::approval::Needs::default(),
                number,
                deadline: Deadline::shown_as(UNIX_EPOCH + Duration::from_secs(1_800_000_000), Duration::from_secs(600)),
                ask: Ask {
                    id: "per_1".into(),
                    session_id: "ses_1".into(),
                    agent,
                    subject: Subject::Permission(Permission {
                        kind,
                        patterns,
                        command,
                        path,
                        diff,
                        description,
                    }),
                },
            }
        }
    }

    /// Who Discord notifies for a posted `payload`: mentions in `content`
    /// (embeds never notify) that `allowed_mentions` allows.
    fn would_ping(payload: &Value) -> (Vec<u64>, Vec<u64>, bool) {
        let content = payload["content"].as_str().unwrap_or("");
        let allowed = &payload["allowed_mentions"];
        let parses = |kind: &str| {
            allowed.is_null()
                || allowed["parse"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|v| v == kind))
        };
        let listed = |kind: &str, id: u64| {
            allowed[kind].as_array().is_some_and(|l| {
                l.iter()
                    .any(|v| v.as_str() == Some(id.to_string().as_str()))
            })
        };
        let mention = regex::Regex::new(r"<@(!|&)?(\d+)>").expect("regex");
        let (mut users, mut roles) = (Vec::new(), Vec::new());
        for cap in mention.captures_iter(content) {
            let id: u64 = cap[2].parse().unwrap_or(0);
            if cap.get(1).is_some_and(|m| m.as_str() == "&") {
                if parses("roles") || listed("roles", id) {
                    roles.push(id);
                }
            } else if parses("users") || listed("users", id) {
                users.push(id);
            }
        }
        let everyone =
            (content.contains("@everyone") || content.contains("@here")) && parses("everyone");
        (users, roles, everyone)
    }

    fn chars(v: &Value) -> usize {
        v.as_str().map_or(0, |s| s.chars().count())
    }

    /// Discord's limits and gatekeep's own rules for one message payload.
    fn check_payload(payload: &Value) -> Result<(), TestCaseError> {
        prop_assert_eq!(&payload["allowed_mentions"], &no_mentions());
        let text = payload.to_string();
        for c in [
            '\u{1b}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200d}', '\u{feff}', '\u{7}', '\r',
        ] {
            prop_assert!(!text.contains(c), "{c:?} reached Discord");
        }
        for embed in payload["embeds"].as_array().into_iter().flatten() {
            let title = chars(&embed["title"]);
            let description = chars(&embed["description"]);
            prop_assert!(title <= TITLE, "title of {title}");
            prop_assert!(description <= DESCRIPTION, "description of {description}");
            let fields = embed["fields"].as_array().cloned().unwrap_or_default();
            prop_assert!(fields.len() <= FIELDS);
            let mut total = title + description;
            for f in &fields {
                let (name, value) = (chars(&f["name"]), chars(&f["value"]));
                prop_assert!((1..=FIELD_NAME).contains(&name), "field name of {name}");
                prop_assert!(
                    (1..=FIELD).contains(&value),
                    "field {} of {value}",
                    f["name"]
                );
                total += name + value;
            }
            prop_assert!(total <= TOTAL, "embed of {total} characters");
        }
        for row in payload["components"].as_array().into_iter().flatten() {
            for c in row["components"].as_array().into_iter().flatten() {
                prop_assert!((1..=100).contains(&chars(&c["custom_id"])));
                for o in c["options"].as_array().into_iter().flatten() {
                    prop_assert!(
                        (1..=100).contains(&chars(&o["label"])),
                        "option {}",
                        o["label"]
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the agent wrote, a posted request notifies exactly the
        /// configured people or a subset of them: never `@everyone`, never
        /// an id of the agent's choosing.
        #[test]
        fn agent_text_never_pings_anyone_but_the_configured_people(
            request in request(),
            users in prop::collection::vec(1u64..1_000_000, 0..3),
            roles in prop::collection::vec(1u64..1_000_000, 0..3),
        ) {
            let configured = Ping { users: users.clone(), roles: roles.clone() };
            let nonce = Nonce::fixed("00112233aabbccdd");
            let mut rendered = request_message(&request, &Redactor::default(), &nonce, None);
            ping(&mut rendered.payload, &configured);
            let (pinged_users, pinged_roles, everyone) = would_ping(&rendered.payload);
            prop_assert!(!everyone);
            prop_assert!(pinged_users.iter().all(|u| users.contains(u)), "{pinged_users:?}");
            prop_assert!(pinged_roles.iter().all(|r| roles.contains(r)), "{pinged_roles:?}");
        }

        #[test]
        fn a_request_message_fits_and_shows_the_whole_subject(request in request()) {
            let red = Redactor::default();
            let nonce = Nonce::fixed("00112233aabbccdd");
            let rendered = request_message(&request, &red, &nonce, None);
            check_payload(&rendered.payload)?;
            let subject = clean(&red, request.ask.summary(), MAX_TEXT_BYTES);
            let description = rendered.payload["embeds"][0]["description"].as_str().unwrap_or("");
            let inline = description.contains(&fence_safe(&subject));
            let attached = rendered.files.iter().any(|f| f.content == subject.as_bytes());
            prop_assert!(inline || attached, "the subject is neither shown nor attached");
        }

        #[test]
        fn every_final_state_fits(request in request(), settlement in settlement()) {
            let red = Redactor::default();
            let nonce = Nonce::fixed("00112233aabbccdd");
            let at = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
            check_payload(&request_final_edit(&request, &red, &nonce, &settlement, at))?;
        }

        #[test]
        fn a_group_message_fits(
            requests in prop::collection::vec(request(), 4..=10),
            settled in prop::collection::vec(prop::option::of(settlement()), 10),
        ) {
            let red = Redactor::default();
            let nonce = Nonce::fixed("00112233aabbccdd");
            let requests: Vec<Shown> = requests
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| {
                    r.number = 7 + u32::try_from(i).unwrap_or(0);
                    r
                })
                .collect();
            let at = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
            let states: BTreeMap<u32, (Settlement, SystemTime)> = requests
                .iter()
                .zip(settled)
                .filter_map(|(r, s)| Some((r.number, (s?, at))))
                .collect();
            check_payload(&group_message(7, &requests, &BTreeMap::new(), &red, &nonce).payload)?;
            check_payload(&group_edit(7, &requests, &states, &red, &nonce))?;
        }
    }

    prop_compose! {
        fn question()(
            header in hostile(),
            text in hostile(),
            options in prop::collection::vec((hostile(), hostile()), 0..30),
            multiple in any::<bool>(),
            custom in any::<bool>(),
        ) -> crate::approval::Question {
            crate::approval::Question { header, text, options, multiple, custom }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Hostile questions: within Discord's limits open and settled,
        /// button labels within 80, at most five rows of components.
        #[test]
        fn a_question_message_fits(
            request in request(),
            questions in prop::collection::vec(question(), 1..7),
            settlement in settlement(),
        ) {
            let mut request = request;
            request.ask.subject = Subject::Question(questions);
            let red = Redactor::default();
            let nonce = Nonce::fixed("00112233aabbccdd");
            let open = request_message(&request, &red, &nonce, None);
            check_payload(&open.payload)?;
            let rows = open.payload["components"].as_array().cloned().unwrap_or_default();
            prop_assert!((1..=5).contains(&rows.len()));
            for row in &rows {
                let components = row["components"].as_array().cloned().unwrap_or_default();
                prop_assert!((1..=5).contains(&components.len()));
                for c in &components {
                    if c["type"] == 2 {
                        prop_assert!((1..=80).contains(&chars(&c["label"])), "{}", c["label"]);
                    }
                }
            }
            let modal = answer_modal(&request, &red, &nonce);
            let inputs = modal["data"]["components"].as_array().cloned().unwrap_or_default();
            prop_assert!(inputs.len() <= 5);
            for input in &inputs {
                prop_assert!((1..=45).contains(&chars(&input["components"][0]["label"])));
            }
            let at = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
            check_payload(&request_final_edit(&request, &red, &nonce, &settlement, at))?;
        }
    }

    /// A megabyte of hostile command: shown as a preview, attached (cut
    /// to the bound, with a marker), and within every limit.
    #[test]
    fn a_one_megabyte_command_is_attached_and_fits() {
        let command = "`@everyone\u{202e}\u{1b}[0m rm -rf / ".repeat(1 << 16);
        assert!(command.len() > 1 << 20);
        let request = Shown {
            needs: crate::approval::Needs::default(),
            number: 1,
            deadline: Deadline::shown_as(UNIX_EPOCH, Duration::from_secs(600)),
            ask: Ask {
                id: "per_1".into(),
                session_id: "ses_1".into(),
                agent: Some("@here".repeat(500)),
                subject: Subject::Permission(Permission {
                    kind: "bash".into(),
                    patterns: vec![command.clone()],
                    command: Some(command),
                    path: None,
                    diff: Some("```\n".repeat(3000)),
                    description: Some("**".repeat(3000)),
                }),
            },
        };
        let nonce = Nonce::fixed("00112233aabbccdd");
        let rendered = request_message(&request, &Redactor::default(), &nonce, None);
        check_payload(&rendered.payload).expect("within Discord's limits");
        assert_eq!(rendered.files.len(), 2, "command and diff attached");
        let file = String::from_utf8(rendered.files[0].content.clone()).expect("utf-8");
        assert!(file.len() <= MAX_TEXT_BYTES + 64 && file.ends_with("more bytes)"));
        assert!(!file.contains('\u{202e}') && !file.contains('\u{1b}'));
    }
}

//! A permission request's message: its embed, its buttons, and its edits as
//! it progresses and settles.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::super::clicks::{encode, Action, Nonce};
use super::question::{question_components, question_description, redacted_answers, MODAL_INPUTS};
use super::text::{
    clean, code_block, escape_markdown, fence_safe, field, field_text, truncate, DESCRIPTION,
    EMBED_TOTAL, INLINE_DIFF, INLINE_SUBJECT, MAX_TEXT_BYTES,
};
use super::{no_mentions, unix, Attachment, Rendered, APPROVED, DENIED, NEUTRAL, PENDING};
use crate::approval::{Channel, Permission, Settlement, Shown, Subject};
use crate::redact::Redactor;

/// Who and what settled a request, in Discord markdown. Humans who decided
/// in Discord are shown as a mention (rendered, never pinged).
#[must_use]
pub fn settlement_text(settlement: &Settlement, at: SystemTime) -> String {
    settlement_line(settlement, at, false)
}

/// [`settlement_text`], where a human's denial of a question reads as a
/// dismissal (a question is not denied, it is dismissed).
pub(super) fn settlement_line(settlement: &Settlement, at: SystemTime, question: bool) -> String {
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

pub(super) fn settlement_colour(settlement: &Settlement) -> u32 {
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
pub(super) fn buttons(nonce: &Nonce, number: u32, trustable: bool) -> Value {
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
pub(super) fn describe(
    request: &Shown,
    redactor: &Redactor,
    budget: usize,
) -> (String, Vec<Attachment>) {
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
pub(super) fn describe_within(
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
pub(super) fn fields_chars(fields: &[Value]) -> usize {
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
pub(super) fn permission_fields(p: &Permission, redactor: &Redactor, fields: &mut Vec<Value>) {
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

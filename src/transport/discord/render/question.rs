//! The agent's questions: the message that asks them, the option buttons
//! and menus, and the modal that takes a typed answer.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::super::clicks::{answer_input_id, encode, Action, Nonce, MAX_PICK};
use super::text::{clean, escape_markdown, label_text, truncate, MAX_TEXT_BYTES};
use super::Attachment;
use crate::approval::{Settlement, Shown};
use crate::redact::Redactor;

/// The settlement with the labels of an answer redacted.
pub(super) fn redacted_answers(settlement: &Settlement, redactor: &Redactor) -> Settlement {
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
pub(super) fn question_description(
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
pub(super) const BUTTON_LABEL: usize = 80;
pub(super) const SELECT_LABEL: usize = 100;
pub(super) const BUTTONS_PER_ROW: usize = 5;
/// Rows of option buttons (the fifth row holds "answer" and "Dismiss").
pub(super) const OPTION_ROWS: usize = 4;
/// Text inputs in one modal, and the limits on its labels.
pub(super) const MODAL_INPUTS: usize = 5;
pub(super) const MODAL_LABEL: usize = 45;
pub(super) const PLACEHOLDER: usize = 100;
/// What a typed answer may hold.
pub(super) const ANSWER_MAX: usize = 1000;

/// The text of every question, escaped for the embed description.
pub(super) fn questions_text(request: &Shown, redactor: &Redactor) -> (String, String) {
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
pub(super) fn question_components(request: &Shown, redactor: &Redactor, nonce: &Nonce) -> Value {
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
